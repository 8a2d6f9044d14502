--- daytona.runtime.http: HTTP requests over the core's libcurl client.
--
-- The Lua face of `core.http`: waiting, JSON bodies, query strings,
-- progress callbacks and Lua-produced request bodies. Every call reads as
-- blocking and waits with `scheduler.wait`, so it works inside a task (it
-- yields) and on a plain main thread (it runs the loop). Connections are
-- reused across calls (keep-alive, HTTP/2 multiplexing over TLS); the
-- system CAs verify TLS; `http_proxy`/`https_proxy`/`no_proxy` are honoured.
--
--     local http = require "daytona.runtime.http"
--     local resp = assert(http.request{ url = base .. "/items", method = "POST", json = { a = 1 } })
--     print(resp.status, resp.headers["content-type"], resp:json().id)
--
--     local s <close> = assert(http.stream{ url = base .. "/big" })
--     for chunk in s:chunks() do out:write(chunk) end
--
-- Conventions (as the core's, and lua-http's): a transport failure returns
-- `nil, message, code` (a stable upper-case code: ECONNREFUSED, ETIMEDOUT,
-- ENOENT, ...); an HTTP error status is a response like any other (check
-- `resp.status`); misuse (an unknown option, a wrong type) raises a plain
-- error; cancellation of the calling task raises `CancelledError` (it
-- stops the transfer and unwinds the task); errors raised by
-- `body_producer` and `on_progress` propagate. Iterators (`s:chunks()`)
-- raise the failure's message, since a `for` loop cannot return it.
-- Every call may be made inside a task or on the main thread.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local wire = require "daytona.wire"

local type, pairs, tostring, error, setmetatable, pcall =
  type, pairs, tostring, error, setmetatable, pcall
local concat = table.concat
local wait = scheduler.wait
local json = wire.json

local M = {}

--- The User-Agent header sent when a request gives none
-- ("dtlua (libcurl x.y.z)"); assign another string to change it.
M.user_agent = "dtlua (libcurl " .. core.http.info().version .. ")"

local DEFAULT_CONNECT_TIMEOUT = 30
local DEFAULT_PROGRESS_INTERVAL = 0.25

-- The failure of a transfer as `nil, message, code`; the message names the
-- request (without its query, which may carry tokens). A transfer stopped
-- because the task was cancelled raises instead.
local function failure(opts, msg, code)
  if code == "ECANCELED" then error(errors.CancelledError(msg), 0) end
  return nil, ("%s %s: %s"):format(opts.method or "GET", wire.redact(opts.url), msg), code
end

---------------------------------------------------------------------------
-- options
---------------------------------------------------------------------------

-- Options the core does not see; every other one goes to it as it is, and
-- the core checks names and types (one schema, in one place).
local LUA_ONLY = {
  query = true, json = true, body_producer = true, on_progress = true,
  progress_interval = true, body_from = true, response_to = true,
}

-- The options this layer reads, with the type it checks: name, type, in order.
local TYPED = { "on_progress", "function", "body_producer", "function", "query", "table", "headers", "table" }

-- level 5: argerror < core_options < start < request/stream < the caller
local function argerror(fname, msg, level)
  error(("bad argument #1 to '%s' (%s)"):format(fname, msg), level or 5)
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

-- A server request for body_from / response_to: core.server's, or the
-- daytona.runtime.server Request around one (the core checks its type).
local function server_request(v)
  if type(v) == "table" and v._c ~= nil then return v._c end
  return v
end

-- The core's options from ours: ours minus the Lua-only ones, plus what
-- those become (the URL with its query, the JSON body, default headers).
local function core_options(opts, fname)
  if type(opts) ~= "table" then argerror(fname, "options table expected, got " .. type(opts)) end
  local c = {}
  for k, v in pairs(opts) do
    if not LUA_ONLY[k] then c[k] = v end
  end
  if type(opts.url) ~= "string" then argerror(fname, "option 'url' must be a string") end
  for i = 1, #TYPED, 2 do
    local k, t = TYPED[i], TYPED[i + 1]
    if opts[k] ~= nil and type(opts[k]) ~= t then argerror(fname, "option '" .. k .. "' must be a " .. t) end
  end
  if opts.query then c.url = wire.with_query(opts.url, opts.query, true) end
  if c.connect_timeout == nil then c.connect_timeout = DEFAULT_CONNECT_TIMEOUT end
  c.follow_redirects = opts.follow_redirects ~= false
  if opts.body_from ~= nil then c.body_from = server_request(opts.body_from) end
  if opts.response_to ~= nil then c.response_to = server_request(opts.response_to) end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  if opts.json ~= nil then
    if opts.body ~= nil then argerror(fname, "options 'body' and 'json' are exclusive") end
    local ok, encoded = pcall(json.encode, opts.json)
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
Transfer.__name = "daytona.runtime.http.Transfer"

local function start(opts, fname, stream)
  local c = core_options(opts, fname)
  -- a stream reads the body from Lua, unless it goes to a server request
  c.response_stream = (stream and c.response_to == nil) or nil
  local req, msg, code = core.http.request(c)
  if not req then return failure(opts, msg, code) end
  local upload = opts.body_file ~= nil or opts.body_producer ~= nil or opts.multipart ~= nil
    or opts.body_from ~= nil
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

--- Feed the producer's chunks until the core's buffer is full or the
-- producer is done.
-- @return true when it stopped for lack of room, else false
-- @raise a plain error when the producer returns something other than a
-- string or nil; the producer's own errors propagate
-- @local
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

--- Call `on_progress` if the byte count moved (or always when `final`).
-- @param final true for the last call, at the end of the transfer
-- @local
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

--- Wait for the next signal of the request, feeding the body meanwhile.
-- @raise `CancelledError` when the task is cancelled while waiting; the
-- producer's and `on_progress`'s errors propagate
-- @local
function Transfer:step()
  if self.producer then self:pump() end
  if self.req:done() then return end
  wait(self.req)
  self:progress(false)
end

--- The core's result of the finished transfer.
-- @return the core's result table (status, headers, body, ...), or nil,
-- message, code
-- @local
function Transfer:result()
  local res, msg, code = self.req:result()
  if not res then return failure(self.opts, msg, code) end
  return res
end

---------------------------------------------------------------------------
-- responses
---------------------------------------------------------------------------

local Response = {}
Response.__index = Response
Response.__name = "daytona.runtime.http.Response"

--- The body decoded as JSON.
-- @return the decoded value, or nil, message, "EINVAL" when the body is
-- not JSON or is not in memory (the request had a `response_file`)
function Response:json()
  if self.body == nil then return nil, "response has no body in memory", "EINVAL" end
  local ok, v = pcall(json.decode, self.body)
  if not ok then return nil, "response body is not JSON: " .. tostring(v), "EINVAL" end
  return v
end

--- Perform a request and return when it has finished.
-- @param opts the request (snake_case keys; only `url` is required):
-- @param opts.url absolute http:// or https:// URL
-- @param[opt="GET"] opts.method the method
-- @param[opt] opts.query `{ name = value | {values...} }` appended to the
-- URL, encoded (sorted by name; a false value is left out)
-- @param[opt] opts.headers `{ Name = "value" | false }` and/or
-- `{ "Name: value", ... }`; false suppresses a header libcurl would add
-- @param[opt] opts.body the body, a string
-- @param[opt] opts.json any JSON-encodable value, sent as the body (sets
-- Content-Type if not given; excludes `body`)
-- @param[opt] opts.body_file path: the body is streamed from this file
-- @param[opt] opts.body_producer `function() -> chunk | nil`: the body,
-- produced by Lua (chunked on HTTP/1.1 unless `body_size` is given); it
-- may itself wait
-- @param[opt] opts.body_size the producer's (or `body_from`'s) total length,
-- when known
-- @param[opt] opts.body_from a server request (core.server's, or a
-- `daytona.runtime.server` Request) whose body is this request's body,
-- moved in C from the one to the other with bounded buffers on both sides
-- (no Lua string per chunk); excludes the other body options
-- @param[opt] opts.response_to a server request whose streamed response
-- gets this response's body, moved in C once that response is started
-- (`respond` without a body, or `Response:start`); with `stream`, then wait
-- with `Stream:wait_spliced`. The transfer fails (ECONNRESET, ETIMEDOUT,
-- ECONNABORTED) when that request's client goes away while it matters
-- @param[opt] opts.multipart `{ { name =, data = string | file = path,
-- filename =, content_type = }, ... }`; file parts stream from disk
-- @param[opt] opts.response_file path: the body is written there
-- (`resp.body` is then nil)
-- @param[opt] opts.timeout seconds for the whole transfer (default: none)
-- @param[opt=30] opts.connect_timeout seconds to connect
-- @param[opt] opts.idle_timeout seconds without any byte moving (whole
-- seconds, >= 1)
-- @param[opt=true] opts.follow_redirects follow 3xx redirects
-- @param[opt=10] opts.max_redirects how many redirects to follow
-- @param[opt] opts.on_progress `function(done, total | nil, direction)`:
-- called between waits (never from C) about every `progress_interval`
-- seconds and once at the end; direction is "upload" for requests with a
-- file/producer/multipart body, else "download"
-- @param[opt=0.25] opts.progress_interval seconds between `on_progress`
-- calls (only with `on_progress`)
-- @param[opt] opts.accept_encoding true: ask for and decode gzip/br/zstd
-- @param[opt] opts.ca_file PEM file of CAs to trust instead of the system's
-- @param[opt] opts.insecure true: skip TLS verification
-- @param[opt] opts.verbose true: libcurl's trace on stderr
-- @param[opt] opts.unix_socket connect to this unix-domain socket path
-- (the URL's host then only names the Host header)
-- @param[opt] opts.peer_uids `{first, last}` with `unix_socket`: every new
-- connection is refused (code EPEER) unless the process that listens on
-- the socket has a uid in that range (SO_PEERCRED)
-- @return a `Response`: `status` (integer), `headers` ({lower-case name =
-- value}; repeated fields joined with ", "), `body` (string, nil with
-- `response_file`), `bytes` (body size), `url` (after redirects),
-- `http_version` ("1.1", "2", ...), and the method `resp:json()`
-- @return on a transport failure, nil, message, code: ECONNREFUSED,
-- ECONNRESET, ENOTFOUND, EHOSTUNREACH, ETLS, EPROTO, ETIMEDOUT, ..., or
-- for a local problem ENOENT (a missing `body_file`), EINVAL (a malformed
-- URL)
-- @raise `CancelledError` when the calling task is cancelled (the
-- transfer is stopped); a plain error on misuse. Errors raised by
-- `body_producer` and `on_progress` propagate.
function M.request(opts)
  local t, msg, code = start(opts, "request", false)
  if not t then return nil, msg, code end
  local req <close> = t.req
  while not req:done() do t:step() end
  local res, rmsg, rcode = t:result()
  if not res then return nil, rmsg, rcode end
  t:progress(true)
  return setmetatable({
    status = res.status, headers = res.headers, body = res.body, bytes = res.bytes,
    url = res.effective_url, http_version = res.http_version,
  }, Response)
end

local Stream = {}
Stream.__index = Stream
Stream.__name = "daytona.runtime.http.Stream"

--- The next chunk of the body, waiting for it.
-- At most a few hundred KiB are buffered: the transfer pauses until Lua
-- reads. The stream closes itself at the end or on failure.
-- @return a non-empty string, or nil at the end (and after `close`), or
-- nil, message, code when the transfer failed
-- @raise `CancelledError`; errors of `body_producer` and `on_progress`
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
        return failure(t.opts, msg, code)
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

--- With `response_to`: wait until the whole body has gone into the server
-- request's response (in C), then close the stream. The caller then ends
-- that response (`finish`), or cuts it (`close`) when this raised.
-- @return true, or nil, message, code like `request` (ECONNRESET,
-- ECONNABORTED, EPROTO when the server request's client went away or the
-- body overran the response's Content-Length)
-- @raise `CancelledError`; a plain error when the stream is closed
function Stream:wait_spliced()
  local t = self._t
  if not t then error("stream already closed", 2) end
  local ok, res, msg, code = pcall(function()
    while not t.req:done() do t:step() end
    return t:result()
  end)
  self:close()
  if not ok then error(res, 0) end
  if not res then return nil, msg, code end
  return true
end

--- An iterator over the rest of the body: `for chunk in s:chunks() do ... end`.
-- @return an iterator function giving the chunks of `read`
-- @raise (when iterated) the failure's message, a string; like `read`
function Stream:chunks()
  return function()
    local chunk, msg = self:read()
    if chunk == nil and msg ~= nil then error(msg, 2) end
    return chunk
  end
end

--- The rest of the body as one string.
-- @return string (empty if nothing is left), or nil, message, code
-- @raise like `read`
function Stream:body()
  local parts = {}
  while true do
    local chunk, msg, code = self:read()
    if chunk == nil then
      if msg ~= nil then return nil, msg, code end
      return concat(parts)
    end
    parts[#parts + 1] = chunk
  end
end

--- Stop the transfer if it is still running; idempotent.
-- Also `local s <close> = ...`; an abandoned stream is closed when
-- collected.
function Stream:close()
  local t = self._t
  if t then
    self._t = nil
    t.req:close()
  end
end

Stream.__close = Stream.close
Stream.__gc = Stream.close   -- an abandoned stream must not hold a paused transfer

--- Start a request and return once the response headers are in.
-- The body is then read with `s:read()`, `s:chunks()` or `s:body()`.
-- Close the stream (`local s <close> = ...`) to stop the transfer early.
-- @param opts as for `request`, but without `response_file`
-- @return a `Stream`: fields `status` and `headers` (as in a `Response`),
-- methods `read`, `chunks`, `body` and `close`; or nil, message, code like
-- `request` when it failed before the response headers
-- @raise like `request`
function M.stream(opts)
  if type(opts) == "table" and opts.response_file ~= nil then
    argerror("stream", "option 'response_file' does not go with a stream", 3)
  end
  local t, smsg, scode = start(opts, "stream", true)
  if not t then return nil, smsg, scode end
  local req = t.req
  local ok, res, msg, code = pcall(function()
    while not req:status() and not req:done() do t:step() end
    if not req:status() then return t:result() end   -- failed before any response
    return true
  end)
  if not ok or not res then req:close() end
  if not ok then error(res, 0) end
  if not res then return nil, msg, code end
  return setmetatable({ status = req:status(), headers = req:headers(), _t = t }, Stream)
end

return M
