--- daytona.runtime.http: HTTP requests over the core's libcurl client.
--
-- The policy layer over `core.http` (mechanism): defaults, JSON, query
-- strings, turning transport failures into `daytona.errors`, progress
-- callbacks and Lua-produced request bodies. Every call reads as blocking
-- and waits with `scheduler.wait`, so it works inside a task (it yields)
-- and on a plain main thread (it runs the loop). Connections are reused
-- across calls (keep-alive, HTTP/2 multiplexing over TLS); the system CAs
-- verify TLS; `http_proxy`/`https_proxy`/`no_proxy` are honoured.
--
--     local http = require "daytona.runtime.http"
--     local resp = http.request{ url = base .. "/items", method = "POST", json = { a = 1 } }
--     print(resp.status, resp.headers["content-type"], resp:json().id)
--
--     local s <close> = http.stream{ url = base .. "/big" }
--     for chunk in s:chunks() do out:write(chunk) end
--
-- http.request(opts) -> Response
--   Performs the request and returns when it has finished. Raises
--   `DaytonaConnectionError` (code ECONNREFUSED, ECONNRESET, ENOTFOUND,
--   EHOSTUNREACH, ETLS, EPROTO, ...; `retryable` is true for refused/reset/
--   DNS/unreachable) or `DaytonaTimeoutError` (code ETIMEDOUT) on a
--   transport failure, `DaytonaError` for a local problem (a missing
--   body_file: code ENOENT; a malformed URL: code EINVAL) and
--   `CancelledError` when the calling task is cancelled (the transfer is
--   stopped). An HTTP error status is *not* raised: check `resp.status`.
--   Raises a plain error on misuse (unknown option, wrong type).
--
-- http.stream(opts) -> Stream
--   Starts the request and returns once the response headers are in (same
--   errors as `request`). The body is read with `s:read()` / `s:chunks()`;
--   at most a few hundred KiB are buffered, the transfer pausing until Lua
--   reads. Close it (`local s <close> = ...`) to stop the transfer early; an
--   abandoned stream is closed when collected.
--
-- opts (snake_case, all optional but `url`):
--   url            absolute http:// or https:// URL
--   method         "GET"
--   query          { name = value | {values...} } appended to the URL, encoded
--   headers        { Name = "value" | false } and/or { "Name: value", ... };
--                  false suppresses a header libcurl would add
--   body           string
--   json           any JSON-encodable value (sets Content-Type if not given)
--   body_file      path: the body is streamed from this file
--   body_producer  function() -> chunk | nil: the body, produced by Lua
--                  (chunked on HTTP/1.1 unless `body_size` is given); it may
--                  itself wait
--   body_size      the producer's total length, when known
--   multipart      { { name =, data = string | file = path, filename =,
--                  content_type = }, ... }; file parts stream from disk
--   response_file  path: the body is written there (resp.body is nil)
--   timeout        seconds for the whole transfer (default: none)
--   connect_timeout seconds to connect (default 30)
--   idle_timeout   seconds without any byte moving (whole seconds, >= 1)
--   follow_redirects (default true), max_redirects (default 10)
--   on_progress    function(done, total|nil, direction): called between
--                  waits (never from C) about every `progress_interval`
--                  seconds (default 0.25) and once at the end; direction is
--                  "upload" for requests with a file/producer/multipart body,
--                  else "download"
--   accept_encoding true: ask for and decode gzip/br/zstd
--   ca_file, insecure, verbose   TLS trust file, skip verification, libcurl trace
--   unix_socket      connect to this unix-domain socket path (the URL's host
--                    then only names the Host header)
--
-- Response fields: status (integer), headers ({lower-case name = value};
-- repeated fields joined with ", "), body (string, nil with response_file),
-- bytes (body size), url (after redirects), http_version ("1.1", "2", ...).
-- Methods: resp:json() -> decoded body (raises DaytonaError if not JSON).
--
-- Stream fields: status, headers. Methods: s:read() -> chunk | nil at the
-- end; s:chunks() -> iterator over the chunks; s:body() -> the rest as one
-- string; s:close() (idempotent). read/chunks/body raise like `request`.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local cjson = require "cjson"

local type, pairs, ipairs, tostring, tonumber, error, setmetatable, pcall =
  type, pairs, ipairs, tostring, tonumber, error, setmetatable, pcall
local sort, concat = table.sort, table.concat
local wait = scheduler.wait

local M = {}

M.user_agent = "dtlua (libcurl " .. core.http.info().version .. ")"

local DEFAULT_CONNECT_TIMEOUT = 30
local DEFAULT_PROGRESS_INTERVAL = 0.25

-- transport codes worth retrying: nothing reached the application
local RETRYABLE = {
  ECONNREFUSED = true, ECONNRESET = true, ENOTFOUND = true,
  EHOSTUNREACH = true, ENETUNREACH = true, EPIPE = true,
}

-- local failures (files, arguments) rather than the network
local LOCAL = {
  EINVAL = true, ENOENT = true, EACCES = true, EISDIR = true, ENOSPC = true,
  EROFS = true, EEXIST = true, ENOTDIR = true, ENOMEM = true,
}

local function url_for_message(url)
  return (url:gsub("[?#].*$", ""))   -- query strings may carry tokens
end

-- An error object for a failed transfer (msg, code from the core).
local function transport_error(opts, msg, code)
  if code == "ECANCELED" then return errors.CancelledError(msg) end
  local text = ("%s %s: %s"):format(opts.method or "GET", url_for_message(opts.url), msg)
  local fields = { code = code, retryable = RETRYABLE[code] or false, url = opts.url }
  if code == "ETIMEDOUT" then return errors.DaytonaTimeoutError(text, fields) end
  if LOCAL[code] then return errors.DaytonaError(text, fields) end
  return errors.DaytonaConnectionError(text, fields)
end

---------------------------------------------------------------------------
-- options
---------------------------------------------------------------------------

local KNOWN = {
  url = true, method = true, query = true, headers = true, body = true, json = true,
  body_file = true, body_producer = true, body_size = true, multipart = true,
  response_file = true, timeout = true, connect_timeout = true, idle_timeout = true,
  follow_redirects = true, max_redirects = true, on_progress = true,
  progress_interval = true, accept_encoding = true, ca_file = true, insecure = true,
  verbose = true, unix_socket = true,
}

-- level 5: argerror < core_options < start < request/stream < the caller
local function argerror(fname, msg, level)
  error(("bad argument #1 to '%s' (%s)"):format(fname, msg), level or 5)
end

local function encode_component(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function with_query(url, query)
  local keys = {}
  for k in pairs(query) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = query[k]
    if v == nil then v = query[tonumber(k)] end
    if type(v) == "table" then
      for _, x in ipairs(v) do parts[#parts + 1] = encode_component(k) .. "=" .. encode_component(x) end
    elseif v ~= false then
      parts[#parts + 1] = encode_component(k) .. "=" .. encode_component(v)
    end
  end
  if #parts == 0 then return url end
  local frag = url:match("#.*$") or ""
  url = url:gsub("#.*$", "")
  return url .. (url:find("?", 1, true) and "&" or "?") .. concat(parts, "&") .. frag
end

local function has_header(headers, lname)
  for k, v in pairs(headers) do
    if type(k) == "string" and k:lower() == lname then return true end
    if type(k) == "number" and type(v) == "string" and v:lower():sub(1, #lname + 1) == lname .. ":" then
      return true
    end
  end
  return false
end

-- The core's options from ours; validates what the core does not see.
local function core_options(opts, fname)
  if type(opts) ~= "table" then argerror(fname, "options table expected, got " .. type(opts)) end
  for k in pairs(opts) do
    if not KNOWN[k] then argerror(fname, "unknown option '" .. tostring(k) .. "'") end
  end
  if type(opts.url) ~= "string" then argerror(fname, "option 'url' must be a string") end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    argerror(fname, "option 'on_progress' must be a function")
  end
  if opts.body_producer ~= nil and type(opts.body_producer) ~= "function" then
    argerror(fname, "option 'body_producer' must be a function")
  end
  if opts.query ~= nil and type(opts.query) ~= "table" then
    argerror(fname, "option 'query' must be a table")
  end
  if opts.headers ~= nil and type(opts.headers) ~= "table" then
    argerror(fname, "option 'headers' must be a table")
  end
  local c = {
    url = opts.query and with_query(opts.url, opts.query) or opts.url,
    method = opts.method,
    body = opts.body,
    body_file = opts.body_file,
    body_size = opts.body_size,
    multipart = opts.multipart,
    response_file = opts.response_file,
    timeout = opts.timeout,
    connect_timeout = opts.connect_timeout == nil and DEFAULT_CONNECT_TIMEOUT or opts.connect_timeout,
    idle_timeout = opts.idle_timeout,
    follow_redirects = opts.follow_redirects ~= false,
    max_redirects = opts.max_redirects,
    accept_encoding = opts.accept_encoding,
    ca_file = opts.ca_file,
    insecure = opts.insecure,
    verbose = opts.verbose,
    unix_socket = opts.unix_socket,
  }
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  if opts.json ~= nil then
    if opts.body ~= nil then argerror(fname, "options 'body' and 'json' are exclusive") end
    local ok, encoded = pcall(cjson.encode, opts.json)
    if not ok then argerror(fname, "option 'json' cannot be encoded: " .. tostring(encoded)) end
    c.body = encoded
    if not has_header(headers, "content-type") then headers["Content-Type"] = "application/json" end
  end
  if not has_header(headers, "user-agent") then headers["User-Agent"] = M.user_agent end
  c.headers = headers
  if opts.body_producer then c.body_stream = true end
  if opts.on_progress then
    c.progress_interval = opts.progress_interval or DEFAULT_PROGRESS_INTERVAL
  elseif opts.progress_interval ~= nil then
    argerror(fname, "option 'progress_interval' goes with 'on_progress'")
  end
  return c
end

---------------------------------------------------------------------------
-- a running transfer: the request handle plus the Lua side of its body
---------------------------------------------------------------------------

local Transfer = {}
Transfer.__index = Transfer

local function start(opts, fname, stream)
  local c = core_options(opts, fname)
  c.response_stream = stream or nil
  local req, msg, code = core.http.request(c)
  if not req then error(transport_error(opts, msg, code), 3) end
  local upload = opts.body_file ~= nil or opts.body_producer ~= nil or opts.multipart ~= nil
  return setmetatable({
    req = req,
    opts = opts,
    producer = opts.body_producer,
    pending = nil,                    -- a produced chunk not yet accepted
    on_progress = opts.on_progress,
    direction = upload and "upload" or "download",
    last_done = -1,
  }, Transfer)
end

-- Feed the producer's chunks until the core's buffer is full or the
-- producer is done. Returns true when it stopped for lack of room.
function Transfer:pump()
  local req = self.req
  while self.producer do
    if self.pending == nil then
      local chunk = self.producer()
      if chunk == nil then
        self.producer = nil
        req:finish()
        return false
      end
      if type(chunk) ~= "string" then
        error("body_producer returned a " .. type(chunk) .. " (string or nil expected)", 0)
      end
      if #chunk > 0 then self.pending = chunk end
    else
      local ok = req:write(self.pending)
      if ok then
        self.pending = nil
      elseif ok == false then
        return true
      else
        -- the transfer ended before taking the whole body: its result says why
        self.producer, self.pending = nil, nil
        return false
      end
    end
  end
  return false
end

function Transfer:progress(final)
  local cb = self.on_progress
  if not cb then return end
  local down, down_total, up, up_total = self.req:progress()
  local done, total = down, down_total
  if self.direction == "upload" then done, total = up, up_total end
  if done ~= self.last_done or final then
    self.last_done = done
    cb(done, total, self.direction)
  end
end

-- Wait for the next signal of the request, feeding the body meanwhile.
function Transfer:step()
  if self.producer then self:pump() end
  if self.req:done() then return end
  wait(self.req)
  self:progress(false)
end

function Transfer:result()
  local res, msg, code = self.req:result()
  if not res then error(transport_error(self.opts, msg, code), 0) end
  return res
end

---------------------------------------------------------------------------
-- responses
---------------------------------------------------------------------------

local Response = {}
Response.__index = Response
Response.__name = "daytona.http.Response"

--- resp:json() -> the decoded body; raises DaytonaError if it is not JSON.
function Response:json()
  if self.body == nil then error(errors.DaytonaError("response has no body in memory"), 2) end
  local ok, v = pcall(cjson.decode, self.body)
  if not ok then
    error(errors.DaytonaError("response body is not JSON: " .. tostring(v),
      { status_code = self.status, body = self.body }), 2)
  end
  return v
end

--- http.request(opts) -> Response (see the header comment).
function M.request(opts)
  local t = start(opts, "request", false)
  local req <close> = t.req
  while not req:done() do t:step() end
  local res = t:result()
  t:progress(true)
  return setmetatable({
    status = res.status, headers = res.headers, body = res.body, bytes = res.bytes,
    url = res.effective_url, http_version = res.http_version,
  }, Response)
end

local Stream = {}
Stream.__index = Stream
Stream.__name = "daytona.http.Stream"

--- s:read() -> the next body chunk, or nil at the end; raises on failure.
function Stream:read()
  local t = self._t
  if not t then return nil end
  local req = t.req
  while true do
    if t.producer then t:pump() end
    local chunk, msg, code = req:read()
    if chunk == nil then
      if msg then
        self:close()
        error(transport_error(t.opts, msg, code), 2)
      end
      t:progress(true)
      self:close()
      return nil
    end
    if chunk ~= "" then
      t:progress(false)
      return chunk
    end
    wait(req)
  end
end

--- s:chunks() -> iterator over the remaining body chunks.
function Stream:chunks()
  return function() return self:read() end
end

--- s:body() -> the rest of the body as one string.
function Stream:body()
  local parts = {}
  for chunk in self:chunks() do parts[#parts + 1] = chunk end
  return concat(parts)
end

--- s:close(): stop the transfer if still running; idempotent.
function Stream:close()
  local t = self._t
  if t then
    self._t = nil
    t.req:close()
  end
end

Stream.__close = Stream.close
Stream.__gc = Stream.close   -- an abandoned stream must not hold a paused transfer

--- http.stream(opts) -> Stream (see the header comment).
function M.stream(opts)
  if type(opts) == "table" and opts.response_file ~= nil then
    argerror("stream", "option 'response_file' does not go with a stream", 3)
  end
  local t = start(opts, "stream", true)
  local req = t.req
  local ok, err = pcall(function()
    while not req:status() and not req:done() do t:step() end
    if not req:status() then t:result() end   -- failed before any response: raises
  end)
  if not ok then
    req:close()
    error(err, 2)
  end
  return setmetatable({ status = req:status(), headers = req:headers(), _t = t }, Stream)
end

return M
