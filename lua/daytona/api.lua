--- The SDK's HTTP/JSON transport policy.
--
-- One `Transport` per client: it owns the headers every request carries
-- (§1.3 of the protocol: `Authorization`, `X-Daytona-Source`,
-- `X-Daytona-SDK-Version`, `X-Daytona-Organization-ID` with a JWT, a
-- `User-Agent`), maps failures to the classes of `daytona.errors` (§6.3) and
-- retries transient failures with exponential backoff where a retry cannot
-- run anything twice (§6.4).
--
-- The module also holds the small helpers every SDK class shares: JSON,
-- URL encoding, the conversion of wire objects to snake_case tables, argument
-- checking (bad arguments raise `DaytonaValidationError` naming the argument
-- before any request is made) and deadlines.
local cjson = require "cjson"
local core = require "daytona.core"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"

local type, pairs, ipairs, tostring, tonumber, select, setmetatable, getmetatable, error, pcall =
  type, pairs, ipairs, tostring, tonumber, select, setmetatable, getmetatable, error, pcall
local math_type, floor, random, min = math.type, math.floor, math.random, math.min
local concat, sort = table.concat, table.sort

local M = {}

--- The SDK version we speak on the wire in `X-Daytona-SDK-Version`. The
-- daemon downgrades log and exec responses for versions below 0.167.0
-- (§5.3), so this is the Daytona release we target, not our own version.
M.WIRE_VERSION = "0.190.0"
--- The value of `X-Daytona-Source`.
M.SOURCE = "sdk-lua"

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

-- a private instance: settings of other users of cjson do not leak in
local json = cjson.new()
json.encode_sparse_array(false)
json.decode_max_depth(200)
json.encode_max_depth(200)
M.null = json.null

--- Encode a Lua value as JSON.
-- @param v a table, string, number or boolean
-- @return string
function M.encode(v)
  return json.encode(v)
end

--- Decode JSON text; raises DaytonaError with the text's start on bad input.
-- @param s string
-- @return the decoded value (JSON null is `daytona.api.null`)
-- @raise DaytonaError if s is not JSON
function M.decode(s)
  local ok, v = pcall(json.decode, s)
  if not ok then
    error(errors.DaytonaError("invalid JSON from server: " .. s:sub(1, 120)), 0)
  end
  return v
end

---------------------------------------------------------------------------
-- Wire objects to Lua tables
---------------------------------------------------------------------------

local snake_cache = {}

--- camelCase -> snake_case (`toolboxProxyUrl` -> `toolbox_proxy_url`).
-- @param s string
-- @return string
function M.snake(s)
  local r = snake_cache[s]
  if r then return r end
  r = s:gsub("(%u+)(%u%l)", "%1_%2"):gsub("([%l%d])(%u)", "%1_%2"):lower()
  snake_cache[s] = r
  return r
end

-- maps whose keys are the user's own (env var names, label keys): kept verbatim
local VERBATIM = { env = true, envs = true, labels = true }

local function plain(v, verbatim)
  if v == json.null then return nil end
  local t = type(v)
  if t == "number" then
    if math_type(v) == "float" and v == floor(v) and v >= -2^53 and v <= 2^53 then
      return math.tointeger(v)
    end
    return v
  elseif t ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" and not verbatim then
      local sk = M.snake(k)
      out[sk] = plain(x, VERBATIM[sk])
    else
      out[k] = plain(x, false)
    end
  end
  return out
end

--- Convert a decoded wire object into a plain Lua table: keys in
-- snake_case (except inside `env`, `envs` and `labels`, which are the
-- user's), JSON null dropped, integral numbers as integers.
-- @param v decoded JSON
-- @return table or scalar
function M.model(v)
  return plain(v, false)
end

---------------------------------------------------------------------------
-- URLs
---------------------------------------------------------------------------

--- Percent-encode every byte outside the unreserved set (RFC 3986).
-- @param s string
-- @return string
function M.urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function qvalue(v)
  if type(v) == "boolean" then return v and "true" or "false" end
  if math_type(v) == "float" and v == floor(v) then v = math.tointeger(v) or v end
  return M.urlencode(tostring(v))
end

--- Build a query string (without `?`) from a table. List values become
-- repeated keys (`states=a&states=b`); booleans are lower-case; nil values
-- are skipped; keys are sorted so URLs are stable.
-- @param q table of name -> value or list of values
-- @return string (may be empty)
function M.query(q)
  if not q then return "" end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" then
      for _, x in ipairs(v) do parts[#parts + 1] = M.urlencode(k) .. "=" .. qvalue(x) end
    elseif v ~= nil then
      parts[#parts + 1] = M.urlencode(k) .. "=" .. qvalue(v)
    end
  end
  return concat(parts, "&")
end

--- Join a base URL and a path, with a query table.
-- @param base string without trailing slash
-- @param path string starting with "/"
-- @param q optional query table
-- @return string
function M.url(base, path, q)
  local u = base:gsub("/+$", "") .. path
  local qs = M.query(q)
  if qs ~= "" then u = u .. (u:find("?", 1, true) and "&" or "?") .. qs end
  return u
end

---------------------------------------------------------------------------
-- Argument checking: raised before any request, naming the argument
---------------------------------------------------------------------------

local function describe(v)
  if v == nil then return "nil" end
  local t = type(v)
  if t == "number" then return math_type(v) == "integer" and "integer" or "number" end
  return t
end

--- Raise the validation error for a bad argument.
-- @param fname the function's name, e.g. "exec"
-- @param arg the argument's name
-- @param msg what was expected
-- @raise DaytonaValidationError always
function M.argerror(fname, arg, msg)
  error(errors.DaytonaValidationError(
    ("bad argument '%s' to '%s' (%s)"):format(arg, fname, msg),
    { code = "EINVAL", argument = arg }), 0)
end
local argerror = M.argerror

local check = {}
M.check = check

--- A required string (non-empty unless `allow_empty`).
-- @return the string
function check.string(v, fname, arg, allow_empty)
  if type(v) ~= "string" then argerror(fname, arg, "string expected, got " .. describe(v)) end
  if v == "" and not allow_empty then argerror(fname, arg, "non-empty string expected") end
  return v
end

--- The id of an object argument (a table with a string `id`, such as a
-- snapshot or a volume) or the id/name string itself.
-- @return the string
function check.id(v, fname, arg)
  if type(v) == "table" and type(v.id) == "string" then return v.id end
  return check.string(v, fname, arg)
end

--- An optional string.
-- @return the string or nil
function check.optstring(v, fname, arg, allow_empty)
  if v == nil then return nil end
  return check.string(v, fname, arg, allow_empty)
end

--- A required integer within [lo, hi] (either bound may be nil).
-- Integral floats are accepted and returned as integers.
-- @return the integer
function check.integer(v, fname, arg, lo, hi)
  local i = type(v) == "number" and math.tointeger(v) or nil
  if not i then argerror(fname, arg, "integer expected, got " .. describe(v)) end
  if (lo and i < lo) or (hi and i > hi) then
    argerror(fname, arg, ("integer in %s..%s expected, got %d"):format(lo or "", hi or "", i))
  end
  return i
end

--- An optional integer within [lo, hi].
-- @return the integer or nil
function check.optinteger(v, fname, arg, lo, hi)
  if v == nil then return nil end
  return check.integer(v, fname, arg, lo, hi)
end

--- An optional non-negative number of seconds (0 = no limit).
-- @return the number or the default
function check.timeout(v, fname, default, arg)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v then argerror(fname, arg or "timeout", "number of seconds expected, got " .. describe(v)) end
  if v < 0 then argerror(fname, arg or "timeout", "non-negative number expected (0 = no timeout)") end
  return v
end

--- An optional boolean.
-- @return the boolean or nil
function check.optboolean(v, fname, arg)
  if v ~= nil and type(v) ~= "boolean" then argerror(fname, arg, "boolean expected, got " .. describe(v)) end
  return v
end

--- An optional function (or callable table).
-- @return the value or nil
function check.optfunction(v, fname, arg)
  if v == nil then return nil end
  if type(v) == "function" then return v end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__call then return v end
  argerror(fname, arg, "function expected, got " .. describe(v))
end

--- A table (required).
-- @return the table
function check.table(v, fname, arg)
  if type(v) ~= "table" then argerror(fname, arg, "table expected, got " .. describe(v)) end
  return v
end

--- An optional table mapping strings to strings (env vars, labels).
-- Numbers and booleans as values are converted to strings.
-- @return a fresh table or nil
function check.strmap(v, fname, arg)
  if v == nil then return nil end
  if type(v) ~= "table" then argerror(fname, arg, "table of strings expected, got " .. describe(v)) end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" then argerror(fname, arg, "string keys expected, got a " .. describe(k) .. " key") end
    local tx = type(x)
    if tx == "number" or tx == "boolean" then x = tostring(x)
    elseif tx ~= "string" then argerror(fname, arg .. "." .. k, "string expected, got " .. describe(x)) end
    out[k] = x
  end
  return out
end

--- A list of non-empty strings (a single string is accepted as a
-- one-element list).
-- @return a fresh list
function check.strlist(v, fname, arg, allow_empty_list)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then argerror(fname, arg, "list of strings expected, got " .. describe(v)) end
  local out = {}
  local n = 0
  for k in pairs(v) do
    n = n + 1
    if math_type(k) ~= "integer" or k < 1 then argerror(fname, arg, "list expected (a table with keys 1..n)") end
  end
  if n ~= #v then argerror(fname, arg, "list without holes expected") end
  if n == 0 and not allow_empty_list then argerror(fname, arg, "non-empty list expected") end
  for i = 1, n do out[i] = check.string(v[i], fname, ("%s[%d]"):format(arg, i)) end
  return out
end

--- An options table: nil becomes {}, a key not in `allowed` raises (so a
-- misspelt option is caught, not ignored).
-- @param v the table or nil
-- @param fname function name
-- @param allowed set of option names
-- @param arg the argument's name (default "options")
-- @return the table
function check.options(v, fname, allowed, arg)
  if v == nil then return {} end
  arg = arg or "options"
  if type(v) ~= "table" then argerror(fname, arg, "table expected, got " .. describe(v)) end
  for k in pairs(v) do
    if type(k) ~= "string" or not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      sort(names)
      argerror(fname, arg, ("unknown option '%s' (known: %s)"):format(tostring(k), concat(names, ", ")))
    end
  end
  return v
end

--- A set from a list of names, for check.options.
-- @return table name -> true
function M.set(...)
  local s = {}
  for i = 1, select("#", ...) do s[select(i, ...)] = true end
  return s
end

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
-- Errors (§6.3)
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
    local ok, v = pcall(json.decode, body)
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
    retryable = status == 429 or status == 502 or status == 503 or status == 504,
  })
end

-- transport failures raised by the runtime, by code (luv-style)
local CONNECT_CODES = {            -- nothing reached the server: safe to retry any call
  ECONNREFUSED = true, EAI_NONAME = true, EAI_AGAIN = true, ENOTFOUND = true,
  EHOSTUNREACH = true, ENETUNREACH = true, EADDRNOTAVAIL = true, ECONNECT = true,
  ERESOLVE = true,
}
local RESET_CODES = {              -- may have reached it: retry idempotent calls only
  ECONNRESET = true, EPIPE = true, ECONNABORTED = true, EPROTO = true, ERECV = true,
  ESEND = true, EEOF = true, EPARTIAL = true,
}

---------------------------------------------------------------------------
-- The transport
---------------------------------------------------------------------------

local http   -- daytona.runtime.http, loaded on first request

local function runtime_http()
  if not http then http = require "daytona.runtime.http" end
  return http
end

local Transport = {}
Transport.__index = Transport
Transport.__name = "daytona.Transport"
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
-- variant, §6.5) when given, else exponential backoff with jitter
local function parse_retry_after(lh)
  local best
  for k, v in pairs(lh) do
    if k == "retry-after" or k:match("^retry%-after%-") then
      local n = tonumber(v)
      if n and n >= 0 and (not best or n > best) then best = n end
    end
  end
  if best then return best end
  -- no Retry-After: the reset time of the exhausted throttler (§6.5)
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
    return idempotent and (s == 502 or s == 503 or s == 504)
  end
  if errors.is(err, errors.DaytonaConnectionError) then
    if CONNECT_CODES[err.code] then return true end  -- never reached the server
    return idempotent and RESET_CODES[err.code] or false
  end
  return false
end
M._retryable = retryable

-- Run attempt_fn(timeout) under the retry policy. It returns a result
-- (non-nil) or nil and an error object for an HTTP failure; errors it
-- raises are transport failures (classified by code) or, when they are not
-- DaytonaErrors (cancellation, a callback's error), passed on at once.
local function with_retries(self, opts, method, url, idempotent, deadline, attempt_fn)
  local retry = self.retry
  local attempt = 0
  while true do
    attempt = attempt + 1
    local timeout
    if deadline then
      timeout = deadline - core.now()
      if timeout <= 0 then
        error(errors.DaytonaTimeoutError((opts.what or (method .. " " .. url:gsub("[?#].*$", ""))) .. ": timed out",
          { code = "ETIMEDOUT" }), 0)
      end
    end
    self.stats.requests = self.stats.requests + 1
    if self.observer then self.observer(method, url, attempt) end
    local ok, a, b = pcall(attempt_fn, timeout)
    local err
    if ok then
      if a ~= nil or b == nil then return a, b end
      err = b                                   -- an HTTP error status
    else
      err = a
      -- cancellation, misuse, errors of the caller's callbacks: as they are
      if not errors.is(err, errors.DaytonaError) then error(err, 0) end
      if opts.what and type(err.message) == "string" and not err._prefixed then
        err.message = opts.what .. ": " .. err.message
        err._prefixed = true
      end
    end
    if not retry or attempt > retry.retries or not retryable(err, idempotent) then
      error(err, 0)
    end
    local delay = backoff(retry, attempt)
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

local function prepare(self, opts)
  local method = opts.method or "GET"
  local url = opts.url or (self.api_url .. opts.path)
  if opts.query then url = M.url(url, "", opts.query) end
  local headers = self:base_headers(opts.headers)
  local body = opts.body
  if opts.json ~= nil then
    body = json.encode(opts.json)
    headers["Content-Type"] = "application/json"
  end
  if not headers["Accept"] and not opts.raw then headers["Accept"] = "application/json" end
  local idempotent = opts.idempotent
  if idempotent == nil then idempotent = IDEMPOTENT[method] or false end
  -- a body produced by Lua cannot be produced twice
  if opts.body_producer and not opts.replayable then idempotent = false end
  local deadline = opts.deadline or M.deadline(opts.timeout)
  return method, url, headers, body, idempotent, deadline
end

--- Make one HTTP request with the policy: headers, JSON, error mapping,
-- retries.
-- @param opts table:
--   `method` (default "GET"), `url` (absolute) or `path` (under the API URL),
--   `query` (table), `json` (a value to send as JSON) or `body` (string),
--   `headers` (extra), `timeout` (seconds, 0/nil = none) or `deadline`,
--   `idempotent` (default: by method), `raw` (return the body string
--   instead of decoded JSON), `what` (operation name for messages),
--   `not_found` (value to return on 404 instead of raising), `ok_status`
--   (a set of non-2xx statuses returned like a success),
--   and streaming options passed to the runtime (`daytona.runtime.http`):
--   `body_file`, `body_producer`, `body_size`, `multipart`,
--   `response_file`, `on_progress`, `idle_timeout`; `replayable` says a
--   producer body may be produced again for a retry
-- @return decoded body (or nil for an empty body), the response
-- @raise DaytonaError subclasses; CancelledError
function Transport:request(opts)
  local method, url, headers, body, idempotent, deadline = prepare(self, opts)
  local h = runtime_http()
  local v, resp = with_retries(self, opts, method, url, idempotent, deadline, function(timeout)
    local r = h.request {
      method = method, url = url, headers = headers, body = body, timeout = timeout,
      body_file = opts.body_file, body_producer = opts.body_producer, body_size = opts.body_size,
      multipart = opts.multipart, response_file = opts.response_file,
      on_progress = opts.on_progress, idle_timeout = opts.idle_timeout,
    }
    if (r.status < 200 or r.status > 299) and not (opts.ok_status and opts.ok_status[r.status]) then
      if r.status == 404 and opts.not_found ~= nil then return { opts.not_found }, r end
      return nil, M.http_error(r.status, r.headers, r.body, opts.what)
    end
    return { r }, r
  end)
  if resp == nil then error(v, 0) end
  if v[1] ~= resp then return v[1], resp end         -- the not_found value
  if opts.raw or opts.response_file then return resp.body, resp end
  local b = resp.body
  if b == nil or b == "" then return nil, resp end
  return M.decode(b), resp
end

--- Start a request whose response body is read as a stream
-- (`daytona.runtime.http.stream`); the retry policy covers getting the
-- response headers. A non-2xx response is read (bounded) and raised.
-- @param opts as for request (no `response_file`)
-- @return the runtime's Stream (status 2xx): `s:read()`, `s:chunks()`,
--   `s:close()`; `s.headers` has lower-case names
-- @raise DaytonaError subclasses; CancelledError
function Transport:stream(opts)
  local method, url, headers, body, idempotent, deadline = prepare(self, opts)
  local h = runtime_http()
  local v, s = with_retries(self, opts, method, url, idempotent, deadline, function(timeout)
    local st = h.stream {
      method = method, url = url, headers = headers, body = body, timeout = timeout,
      body_file = opts.body_file, body_producer = opts.body_producer, body_size = opts.body_size,
      multipart = opts.multipart, on_progress = opts.on_progress, idle_timeout = opts.idle_timeout,
    }
    if st.status < 200 or st.status > 299 then
      local parts, n = {}, 0
      local ok = pcall(function()
        for chunk in st:chunks() do
          n = n + #chunk
          parts[#parts + 1] = chunk
          if n > 65536 then break end
        end
      end)
      st:close()
      return nil, M.http_error(st.status, st.headers, ok and concat(parts) or nil, opts.what)
    end
    return { st }, st
  end)
  if s == nil then error(v, 0) end
  return s
end

---------------------------------------------------------------------------
-- WebSockets (the adapter to daytona.runtime.websocket)
---------------------------------------------------------------------------

local websocket

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
  local deadline = M.deadline(opts.timeout or 30)
  local ws = with_retries(t, opts, "GET", url, true, deadline, function(timeout)
    local ok, w = pcall(websocket.connect, url, { headers = headers, protocols = opts.protocols, timeout = timeout })
    if ok then return w end
    local e = w
    if errors.is(e, errors.DaytonaError) and e.status_code then
      -- the server refused the upgrade with an HTTP status: classify by it
      return nil, M.http_error(e.status_code, e.headers, e.body, opts.what)
    end
    error(e, 0)
  end)
  return ws
end

--- Receive one message or the close of a WebSocket.
-- @param ws the runtime's WebSocket
-- @param timeout optional seconds
-- @return "data", bytes, is_text | "close", code, reason
-- @raise DaytonaTimeoutError; DaytonaConnectionError when the connection breaks
function M.ws_recv(ws, timeout)
  local data, kind, code, reason = ws:receive(timeout)
  if data ~= nil then return "data", data, kind == "text" end
  return "close", code, reason
end

--- Send one message.
-- @param ws the runtime's WebSocket
-- @param data string
-- @param text true for a text frame (default binary)
-- @return nothing
function M.ws_send(ws, data, text)
  ws:send(data, text and "text" or "binary")
end

return M
