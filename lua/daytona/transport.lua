--- daytona.transport: the SDK's one way to the server.
--
-- One `Transport` per client: it owns the headers every request carries
-- (doc/protocol.md §1.3: `Authorization`, `X-Daytona-Source`,
-- `X-Daytona-SDK-Version`, `X-Daytona-Organization-ID` with a JWT, a
-- `User-Agent`), maps HTTP error statuses (doc/protocol.md §6.3) and the runtime's
-- `nil, message, code` failures (`errors.from_failure`) to the classes of
-- `daytona.errors`, and retries transient failures with exponential backoff
-- where a retry cannot run anything twice (doc/protocol.md §6.4). `request`, `stream` and
-- `ws_connect` share one attempt loop; the options of a request are
-- `daytona.runtime.http`'s, passed through as they are (the core checks
-- them), plus the few listed at `Transport:request`.
--
-- It also carries the deadline helpers: one deadline goes through the
-- steps (and retries) of a call.
local core = require "daytona.core"
local errors = require "daytona.errors"
local wire = require "daytona.wire"
local scheduler = require "daytona.runtime.scheduler"

local type, pairs, ipairs, tostring, tonumber, setmetatable, error, pcall =
  type, pairs, ipairs, tostring, tonumber, setmetatable, error, pcall
local random, min = math.random, math.min
local concat = table.concat

local M = {}

--- The SDK version we speak on the wire in `X-Daytona-SDK-Version`. The
-- daemon downgrades log and exec responses for versions below 0.167.0
-- (doc/protocol.md §5.3), so this is the Daytona release we target, not our own version.
M.WIRE_VERSION = "0.190.0"
--- The value of `X-Daytona-Source`.
M.SOURCE = "sdk-lua"

---------------------------------------------------------------------------
-- Deadlines: one deadline carried through the steps of a call
---------------------------------------------------------------------------

--- The monotonic clock in seconds.
M.now = core.now

--- A deadline `timeout` seconds from now, or nil for 0 (= none).
-- @param timeout seconds (already validated)
-- @return absolute time or nil
function M.deadline(timeout)
  if not timeout or timeout == 0 then return nil end
  return core.now() + timeout
end

--- Seconds left until the deadline (nil: unlimited); raises
-- DaytonaTimeoutError once it has passed.
-- @param deadline absolute time or nil
-- @param what the operation, for the message
-- @param timeout the original timeout, for the message
-- @return seconds (> 0) or nil
-- @raise DaytonaTimeoutError
function M.remaining(deadline, what, timeout)
  if not deadline then return nil end
  local left = deadline - core.now()
  if left <= 0 then
    error(errors.DaytonaTimeoutError(("%s timed out after %g seconds"):format(what, timeout or 0),
      { code = "ETIMEDOUT" }), 0)
  end
  return left
end


---------------------------------------------------------------------------
-- HTTP errors (doc/protocol.md §6.3)
---------------------------------------------------------------------------

local STATUS_CLASS = {
  [400] = errors.DaytonaValidationError,
  [401] = errors.DaytonaAuthenticationError,
  [403] = errors.DaytonaAuthorizationError,
  [404] = errors.DaytonaNotFoundError,
  [408] = errors.DaytonaTimeoutError,
  [409] = errors.DaytonaConflictError,
  [429] = errors.DaytonaRateLimitError,
}

--- The error class for an HTTP status.
-- @param status integer
-- @return class
function M.status_class(status)
  return STATUS_CLASS[status] or errors.DaytonaError
end

local REASON = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [413] = "Payload Too Large", [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

-- headers with lower-case names
local function lower_headers(h)
  local out = {}
  if type(h) == "table" then
    for k, v in pairs(h) do
      if type(k) == "string" then out[k:lower()] = v end
    end
  end
  return out
end
M.lower_headers = lower_headers

--- Build the error for a non-2xx response: class by status, message from
-- the body's `message` (or `error`, or `errors`), code from `code`,
-- `error_code` or `error`; the body and headers are kept on the error.
-- @param status integer
-- @param headers table
-- @param body string or nil
-- @param what optional operation name prefixed to the message
-- @return error object (not raised)
function M.http_error(status, headers, body, what)
  local decoded
  if body and body ~= "" then
    local ok, v = pcall(wire.json.decode, body)
    if ok then decoded = v end
  end
  local message, code
  if type(decoded) == "table" then
    local m = decoded.message
    if type(m) == "string" then message = m
    elseif type(m) == "table" then
      local parts = {}
      for _, x in ipairs(m) do parts[#parts + 1] = tostring(x) end
      message = concat(parts, ", ")
    elseif type(decoded.error) == "string" then message = decoded.error
    elseif type(decoded.errors) == "table" then
      local parts = {}
      for _, x in ipairs(decoded.errors) do parts[#parts + 1] = tostring(x) end
      message = concat(parts, ", ")
    end
    for _, k in ipairs({ "code", "error_code", "errorCode", "error" }) do
      if type(decoded[k]) == "string" then code = decoded[k]; break end
    end
  elseif body and body ~= "" and #body < 512 and not body:find("[%z\1-\8]") then
    message = body:gsub("%s+$", "")
  end
  message = message or ("%d %s"):format(status, REASON[status] or "HTTP error")
  if what then message = what .. ": " .. message end
  local cls = STATUS_CLASS[status] or errors.DaytonaError
  return cls(message, {
    status_code = status, code = code, headers = headers, body = decoded or body,
    retryable = status == 429 or status == 502 or status == 504
      or (status == 503 and M.transient_503(headers, decoded)),
  })
end

--- Whether a 503 is worth asking again. A 503 says "not now" only when it
-- says when (`Retry-After`, or a throttler's reset) or when it is not the
-- service's own answer: an empty body or a page that is no JSON error object
-- is a proxy's or load balancer's whose upstream is not ready. A service
-- that answers 503 with a JSON error object has said what is wrong (the
-- toolbox's "Computer-use functionality is not available", dtlocal's
-- refusals): asking three more times would only delay that answer.
-- @param headers the response's headers
-- @param decoded the decoded body (a table for JSON), or nil
-- @return boolean
function M.transient_503(headers, decoded)
  if M._parse_retry_after(lower_headers(headers)) then return true end
  return type(decoded) ~= "table"
end

---------------------------------------------------------------------------
-- The transport
---------------------------------------------------------------------------

local http        -- daytona.runtime.http, loaded on the first request
local websocket   -- daytona.runtime.websocket, loaded on the first connect

local Transport = {}
Transport.__index = Transport
Transport.__name = "daytona.transport.Transport"
M.Transport = Transport

local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }

--- Default retry policy: up to 3 retries, 0.25 s doubling to at most 8 s,
-- with jitter; a Retry-After of at most `max_retry_after` seconds is
-- honoured.
M.DEFAULT_RETRY = { retries = 3, base_delay = 0.25, max_delay = 8, max_retry_after = 60 }

--- Create a transport.
-- @param cfg resolved configuration (`daytona.config.resolve`): `api_url`,
--   `api_key` or `jwt_token` + `organization_id`, optional `retry` table
--   (`retries`, `base_delay`, `max_delay`, `max_retry_after`) or false, and
--   `sdk_version` (our own version, for the User-Agent)
-- @return Transport
function M.new(cfg)
  local headers = {
    ["X-Daytona-Source"] = M.SOURCE,
    ["X-Daytona-SDK-Version"] = M.WIRE_VERSION,
    ["User-Agent"] = M.SOURCE .. "/" .. (cfg.sdk_version or "0"),
  }
  if cfg.api_key then
    headers["Authorization"] = "Bearer " .. cfg.api_key
  elseif cfg.jwt_token then
    headers["Authorization"] = "Bearer " .. cfg.jwt_token
    headers["X-Daytona-Organization-ID"] = cfg.organization_id
  end
  local retry = cfg.retry
  if retry == nil then retry = M.DEFAULT_RETRY end
  if retry then
    local r = {}
    for k, v in pairs(M.DEFAULT_RETRY) do r[k] = v end
    for k, v in pairs(retry) do r[k] = v end
    retry = r
  end
  return setmetatable({
    api_url = cfg.api_url:gsub("/+$", ""),
    headers = headers,
    retry = retry,
    stats = { requests = 0, retries = 0 },
    observer = cfg.on_request,
  }, Transport)
end

--- The headers every request carries (a fresh copy), plus `extra`.
-- @param extra optional table
-- @return table
function Transport:base_headers(extra)
  local h = {}
  for k, v in pairs(self.headers) do h[k] = v end
  if extra then for k, v in pairs(extra) do h[k] = v end end
  return h
end

-- seconds to wait before a retry: Retry-After (or a throttler-suffixed
-- variant, doc/protocol.md §6.5) when given, else exponential backoff with jitter
local function parse_retry_after(lh)
  local best
  for k, v in pairs(lh) do
    if k == "retry-after" or k:match("^retry%-after%-") then
      local n = tonumber(v)
      if n and n >= 0 and (not best or n > best) then best = n end
    end
  end
  if best then return best end
  -- no Retry-After: the reset time of the exhausted throttler (doc/protocol.md §6.5)
  for k, v in pairs(lh) do
    local name = k:match("^x%-ratelimit%-remaining%-(.+)$")
    if name and tonumber(v) == 0 then
      local n = tonumber(lh["x-ratelimit-reset-" .. name])
      if n and n >= 0 and (not best or n > best) then best = n end
    end
  end
  return best
end
M._parse_retry_after = parse_retry_after

local function backoff(retry, attempt)
  local d = retry.base_delay * 2 ^ (attempt - 1)
  d = min(d, retry.max_delay)
  return d * (0.75 + random() * 0.5)
end

-- a failure that a retry could not turn into running the operation twice
local function retryable(err, idempotent)
  if err.status_code then
    local s = err.status_code
    if s == 429 then return true end                 -- the throttler refused it: nothing ran
    if s == 503 then return idempotent and err.retryable == true end   -- see transient_503
    return idempotent and (s == 502 or s == 504)
  end
  if errors.is(err, errors.DaytonaConnectionError) then
    return errors.retries_failure(err.code, idempotent)   -- errors.TRANSPORT_RETRY
  end
  return false
end
M._retryable = retryable

-- Run attempt(timeout) under the retry policy until it returns a value, or
-- raise its last error. attempt returns the value, or nil and an error
-- object (an HTTP status or a runtime failure, already mapped); what it
-- raises (cancellation, misuse, the caller's callbacks) passes at once.
local function with_retries(self, what, method, url, idempotent, deadline, attempt)
  local retry = self.retry
  local n = 0
  while true do
    n = n + 1
    local timeout
    if deadline then
      timeout = deadline - core.now()
      if timeout <= 0 then
        error(errors.DaytonaTimeoutError((what or (method .. " " .. wire.redact(url))) .. ": timed out",
          { code = "ETIMEDOUT" }), 0)
      end
    end
    self.stats.requests = self.stats.requests + 1
    if self.observer then self.observer(method, url, n) end
    local v, err = attempt(timeout)
    if v ~= nil then return v end
    if not retry or n > retry.retries or not retryable(err, idempotent) then
      error(err, 0)
    end
    local delay = backoff(retry, n)
    if err.status_code == 429 or err.status_code == 503 then
      local ra = parse_retry_after(lower_headers(err.headers))
      if ra then
        if ra > retry.max_retry_after then error(err, 0) end
        delay = ra + random() * 0.1
      end
    end
    if deadline and core.now() + delay >= deadline then error(err, 0) end
    self.stats.retries = self.stats.retries + 1
    scheduler.sleep(delay)
  end
end

-- The transport's own options; every other one is the runtime's
-- (`daytona.runtime.http`) and goes to it as it is.
local OWN = {
  path = true, query = true, what = true, not_found = true, ok_status = true,
  idempotent = true, deadline = true, raw = true, replayable = true,
}

-- The body request and stream share: the runtime's options, then the
-- attempt loop around open(ropts) -> response | nil, message, code, which
-- turns a failure or an error status into the error to raise (or retry).
-- read_error(r) gives the body of an error response.
local function exchange(self, opts, open, read_error)
  local method = opts.method or "GET"
  local url = wire.with_query(opts.url or (self.api_url .. opts.path), opts.query)
  local ropts = {}
  for k, v in pairs(opts) do if not OWN[k] then ropts[k] = v end end
  ropts.method, ropts.url = method, url
  local headers = self:base_headers(opts.headers)
  if not headers["Accept"] and not opts.raw then headers["Accept"] = "application/json" end
  ropts.headers = headers
  local idempotent = opts.idempotent
  if idempotent == nil then idempotent = IDEMPOTENT[method] or false end
  -- a body produced by Lua cannot be produced twice
  if opts.body_producer and not opts.replayable then idempotent = false end
  local what = opts.what
  local not_found, ok_status = opts.not_found, opts.ok_status
  return with_retries(self, what, method, url, idempotent, opts.deadline or M.deadline(opts.timeout),
    function(timeout)
      ropts.timeout = timeout
      local r, msg, code = open(ropts)
      if r == nil then
        return nil, errors.from_failure(msg, code, { url = url }, what)
      end
      local s = r.status
      if (s < 200 or s > 299) and not (ok_status and ok_status[s]) then
        if s == 404 and not_found ~= nil then return { not_found = not_found } end
        return nil, M.http_error(s, r.headers, read_error(r), what)
      end
      return { r }
    end)
end

local function runtime_http()
  if not http then http = require "daytona.runtime.http" end
  return http
end

--- Make one HTTP request with the policy: headers, JSON, error mapping,
-- retries.
-- @param opts the options of `daytona.runtime.http.request` (`method`,
--   `url`, `headers` (extra), `json` or `body`, `body_file`,
--   `body_producer`, `body_size`, `multipart`, `response_file`,
--   `on_progress`, `idle_timeout`, `timeout` (seconds, 0/nil = none), ...)
--   and the transport's own: `path` (under the API URL, instead of `url`),
--   `query` (table, built by `daytona.wire`), `deadline` (instead of
--   `timeout`), `idempotent` (default: by method), `raw` (return the body
--   string instead of decoded JSON), `what` (operation name for messages),
--   `not_found` (value to return on 404 instead of raising), `ok_status`
--   (a set of non-2xx statuses returned like a success), `replayable` (a
--   `body_producer` may be produced again for a retry)
-- @return decoded body (or nil for an empty body), the runtime's response
-- @raise DaytonaError subclasses; CancelledError
function Transport:request(opts)
  local h = runtime_http()
  local v = exchange(self, opts, h.request, function(r) return r.body end)
  if v.not_found ~= nil then return v.not_found end
  local resp = v[1]
  if opts.raw or opts.response_file then return resp.body, resp end
  local b = resp.body
  if b == nil or b == "" then return nil, resp end
  return wire.decode(b), resp
end

-- the start of an error response's body, for its message
local function error_body(st)
  local parts, n = {}, 0
  while n <= 65536 do
    local chunk = st:read()
    if not chunk then break end
    n = n + #chunk
    parts[#parts + 1] = chunk
  end
  st:close()
  return concat(parts)
end

local Stream = {}
Stream.__index = Stream
Stream.__name = "daytona.transport.Stream"
M.Stream = Stream

--- The next chunk of a streamed response body.
-- @return a non-empty string, or nil at the end
-- @raise DaytonaError subclasses when the transfer fails; CancelledError
function Stream:read()
  local chunk, msg, code = self._s:read()
  if chunk == nil and msg ~= nil then error(errors.from_failure(msg, code, nil, self.what), 2) end
  return chunk
end

--- An iterator over the rest of the body: `for chunk in s:chunks() do ... end`.
-- @return an iterator function
-- @raise (when iterated) like `read`
function Stream:chunks()
  return function() return self:read() end
end

--- Stop the transfer; idempotent (also `local s <close> = ...`).
function Stream:close()
  self._s:close()
end
Stream.__close = Stream.close

--- Start a request whose response body is read as a stream; the retry
-- policy covers getting the response headers. A non-2xx response is read
-- (bounded) and raised.
-- @param opts as for request (no `response_file`)
-- @return a `Stream` (status 2xx): fields `status`, `headers` (lower-case
--   names), methods `read`, `chunks`, `close`
-- @raise DaytonaError subclasses; CancelledError
function Transport:stream(opts)
  local h = runtime_http()
  local v = exchange(self, opts, h.stream, error_body)
  local s = v[1]
  return setmetatable({ status = s.status, headers = s.headers, _s = s, what = opts.what }, Stream)
end

---------------------------------------------------------------------------
-- WebSockets (over daytona.runtime.websocket)
---------------------------------------------------------------------------

--- Open a WebSocket with the transport's headers; the retry policy covers
-- the handshake (an upgrade is a GET). A refused upgrade raises the error
-- class of its HTTP status.
-- @param t Transport
-- @param url ws:// or wss:// URL
-- @param opts `{ timeout = connect seconds (default 30), protocols = { },
--   what = operation name }`
-- @return the runtime's WebSocket
-- @raise DaytonaError subclasses
function M.ws_connect(t, url, opts)
  websocket = websocket or require "daytona.runtime.websocket"
  local headers = t:base_headers()
  local what = opts.what
  return with_retries(t, what, "GET", url, true, M.deadline(opts.timeout or 30), function(timeout)
    local ws, msg, code, fields = websocket.connect(url, { headers = headers, protocols = opts.protocols, timeout = timeout })
    if ws then return ws end
    if fields and fields.status then
      -- the server refused the upgrade with an HTTP status: classify by it
      return nil, M.http_error(fields.status, fields.headers, fields.body, what)
    end
    return nil, errors.from_failure(msg, code, { url = url }, what)
  end)
end

--- Receive one message or the close of a WebSocket.
-- @param ws the runtime's WebSocket
-- @param timeout optional seconds
-- @return "data", bytes, is_text | "close", code, reason
-- @raise DaytonaTimeoutError; DaytonaConnectionError when the connection breaks
function M.ws_recv(ws, timeout)
  local data, kind, code, reason = ws:receive(timeout)
  if data ~= nil then return "data", data, kind == "text" end
  if type(code) == "number" then return "close", code, reason end
  error(errors.from_failure(kind, code, { url = ws.url }), 2)
end

--- Send one message.
-- @param ws the runtime's WebSocket
-- @param data string
-- @param text true for a text frame (default binary)
-- @return nothing
-- @raise DaytonaConnectionError when the connection is closing or broken
function M.ws_send(ws, data, text)
  local ok, msg, code = ws:send(data, text and "text" or "binary")
  if not ok then error(errors.from_failure(msg, code, { url = ws.url }), 2) end
end

return M
