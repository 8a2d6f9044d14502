--- dtlocal.http: what both dtlocal servers answer with (doc/dtlocal.md).
--
-- The request context every handler of the control plane and of the
-- toolbox daemon gets, the one handler convention, JSON (bodies in and
-- out), and the one structured error body. Both servers listen with
-- `daytona.runtime.server` and hand it `http.handler{...}`; paths are
-- routed with `dtlocal.router`.
--
-- Handlers are `function(ctx, params) -> status, body [, headers]`:
-- body is a table (sent as JSON), a string (sent as it is; JSON unless the
-- headers say otherwise) or nil (an empty body). A handler that streams
-- takes the response through ctx instead (`ctx:stream`, `ctx:file`,
-- `ctx:upgrade`) and returns nothing. Errors are raised:
-- `http.raise(status, message, code)` becomes the error body below, any
-- other error a 500 whose message names it (and a traceback in the log),
-- so no input crashes a server.
--
-- The context (`http.context(req, res, opts)` over the runtime server's
-- request and response):
--   ctx.app, ctx.method, ctx.path (raw, without the query), ctx.target,
--   ctx.qs (raw query), ctx.query (name -> first value), ctx.headers
--   (lower-case names), ctx.params (route parameters), ctx.remote,
--   ctx.is_websocket, ctx.subprotocols (offered, in order), ctx.req and
--   ctx.res (daytona.runtime.server's), ctx.status once answered
--   ctx:query_all(name) -> every value of a repeated query parameter
--   ctx:body([limit]) -> string (413 beyond the limit)
--   ctx:json_object([required]) -> table: the body, a JSON object (400
--       otherwise; an empty body is {} unless required)
--   ctx:read_chunk() -> the next chunk of the body, nil at its end
--   ctx:reply(status, body, headers)  (what the handler's return does)
--   ctx:stream(status, headers) -> the response: write(s), finish(), abort()
--   ctx:file(status, headers, path)
--   ctx:upgrade(protocol) -> a daytona.runtime.server WebSocket
--
-- Error body (doc/protocol.md §6.2/doc/protocol.md §7.3, one shape everywhere, read by every SDK):
--     { "statusCode": 404, "message": "session not found", "code": "NOT_FOUND",
--       "error": "Not Found", "timestamp": "2026-06-23T13:33:38Z",
--       "path": "/process/session/x", "method": "GET" }
--
-- JSON (a JSON encoder that gets arrays right: Debian's lua-cjson has no
-- array marker, so `{}` would go out as `{}` where an SDK expects `[]`):
--     http.json.encode(v)       -- strings, numbers (integers stay integers),
--                                  booleans, http.json.null, tables
--     http.json.array(t)        -- mark t as an array (an empty one encodes as [])
--     http.json.decode(s)       -- value | nil, message (never raises)
-- A table is encoded as an array when it is marked, or when it is non-empty
-- with keys exactly 1..n; otherwise as an object with its string keys, sorted.
-- Invalid UTF-8 in strings becomes U+FFFD, as Go's encoder does.
local cjson = require "cjson.safe"
local core = require "daytona.core"
local errors = require "daytona.errors"

local type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, error, pcall =
  type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, error, pcall
local concat, sort, format, byte, char = table.concat, table.sort, string.format, string.byte, string.char
local mtype = math.type

local M = {}

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

local json = {}
M.json = json

local array_mt = { __name = "dtlocal.json.array" }
json.array_mt = array_mt
json.null = cjson.null

--- Mark a table (default: a new one) as a JSON array; returns it.
function json.array(t)
  return setmetatable(t or {}, array_mt)
end

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}
for i = 0, 31 do
  local c = char(i)
  if not escapes[c] then escapes[c] = format("\\u%04x", i) end
end
escapes["\127"] = "\\u007f"

-- Replace every byte that is not part of a valid UTF-8 sequence by U+FFFD.
local function sanitize_utf8(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = byte(s, i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2
      or (c >= 0xE0 and c <= 0xEF) and 3 or (c >= 0xF0 and c <= 0xF4) and 4 or 0
    local seq = len > 0 and s:sub(i, i + len - 1)
    if seq and #seq == len and utf8.len(seq) == 1 then
      out[#out + 1] = seq
      i = i + len
    else
      out[#out + 1] = "\u{FFFD}"
      i = i + 1
    end
  end
  return concat(out)
end

local function encode_string(s)
  return '"' .. sanitize_utf8(s):gsub('[%c"\\]', escapes) .. '"'
end

local encode_value

local function is_sequence(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if mtype(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

function encode_value(v, out, depth)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = encode_string(v)
  elseif tv == "number" then
    if mtype(v) == "integer" then
      out[#out + 1] = tostring(v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      error("cannot encode a non-finite number as JSON", 0)
    elseif v == math.floor(v) and v > -2^53 and v < 2^53 then
      out[#out + 1] = format("%d", v)
    else
      out[#out + 1] = format("%.17g", v)
    end
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif tv == "table" then
    if depth > 100 then error("JSON value nested too deeply", 0) end
    if getmetatable(v) == array_mt or is_sequence(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_value(v[i], out, depth + 1)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) == "string" then keys[#keys + 1] = k end
      end
      sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = encode_string(k)
        out[#out + 1] = ":"
        encode_value(v[k], out, depth + 1)
      end
      out[#out + 1] = "}"
    end
  else
    error("cannot encode a " .. tv .. " as JSON", 0)
  end
end

--- Encode a Lua value as JSON text; raises on values JSON cannot carry.
function json.encode(v)
  local out = {}
  encode_value(v, out, 0)
  return concat(out)
end

--- Decode JSON text; returns the value, or nil and a message. JSON null is
-- json.null (also inside objects and arrays).
function json.decode(s)
  if type(s) ~= "string" then return nil, "expected a JSON text" end
  local v, err = cjson.decode(s)
  if v == nil and err then return nil, err end
  return v
end

--- Decode a request body that must be a JSON object; returns the table, or
-- nil and a message ("malformed JSON: ..." or "a JSON object is required").
-- `[]` and `{}` decode to the same empty table, so the text itself must open
-- with `{`: else `[]` would pass for an object with no fields. Every route
-- of both servers that takes a JSON body checks it here.
function json.decode_object(s)
  local v, err = json.decode(s)
  if v == nil then return nil, "malformed JSON: " .. tostring(err) end
  if type(v) ~= "table" or not s:find("^%s*{") then return nil, "a JSON object is required" end
  return v
end

---------------------------------------------------------------------------
-- Errors
---------------------------------------------------------------------------

M.status_text = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [409] = "Conflict", [410] = "Gone", [413] = "Payload Too Large",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- The default `code` for a status (doc/protocol.md §6.2).
local default_code = {
  [400] = "BAD_REQUEST", [401] = "UNAUTHORIZED", [403] = "FORBIDDEN",
  [404] = "NOT_FOUND", [405] = "METHOD_NOT_ALLOWED", [408] = "REQUEST_TIMEOUT",
  [409] = "CONFLICT", [410] = "GONE", [422] = "UNPROCESSABLE_ENTITY",
  [500] = "INTERNAL_SERVER_ERROR", [501] = "NOT_IMPLEMENTED",
  [503] = "SERVICE_UNAVAILABLE",
}
M.default_code = default_code

local HttpError = { __name = "dtlocal.HttpError" }
HttpError.__index = HttpError
function HttpError.__tostring(e)
  return ("HTTP %d %s: %s"):format(e.status, e.code or "", e.message)
end
M.HttpError = HttpError

--- A new HttpError (not raised). `extra` fields are merged into the body.
function M.http_error(status, message, code, extra)
  return setmetatable({ status = status, message = message,
                        code = code or default_code[status], extra = extra }, HttpError)
end

--- Raise an HttpError; never returns.
function M.raise(status, message, code, extra)
  error(M.http_error(status, message, code, extra), 0)
end

function M.is_http_error(e)
  return getmetatable(e) == HttpError
end

--- The current time as RFC 3339 UTC (seconds precision).
function M.timestamp()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

--- The structured error body for a request (method, path) as a Lua table.
function M.error_body(status, message, code, path, method, extra)
  local body = {
    statusCode = status,
    message = message,
    code = code or default_code[status],
    error = M.status_text[status] or "Error",
    timestamp = M.timestamp(),
    path = path,
    method = method,
  }
  if extra then for k, v in pairs(extra) do body[k] = v end end
  return body
end

--- Call handler(...) protected. Returns true, results... on success; on
-- failure false, status, body-table, err, traceback: the HttpError's status
-- and body, or 500 with a message naming any other error (err is then the
-- raw error, e.g. a CancelledError the caller may want to re-raise, and
-- traceback its traceback for the log). `path`/`method` fill the body.
function M.call(path, method, handler, ...)
  local tb
  local res = table.pack(xpcall(handler, function(e)
    if getmetatable(e) ~= HttpError then tb = debug.traceback(tostring(e), 2) end
    return e
  end, ...))
  if res[1] then return table.unpack(res, 1, res.n) end
  local e = res[2]
  if getmetatable(e) == HttpError then
    return false, e.status, M.error_body(e.status, e.message, e.code, path, method, e.extra), e
  end
  return false, 500, M.error_body(500, "internal error: " .. tostring(e),
                                   "INTERNAL_SERVER_ERROR", path, method), e, tb
end


---------------------------------------------------------------------------
-- The request context
---------------------------------------------------------------------------

--- The token of an `Authorization: Bearer <token>` header, or nil.
function M.bearer(headers)
  local h = headers.authorization
  return h and h:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$") or nil
end

local Context = { __name = "dtlocal.http.Context" }
Context.__index = Context
M.Context = Context

M.MAX_BODY = 16 * 1024 * 1024

local function default_bad_body(why)
  return "invalid request body: " .. why, "INVALID_REQUEST_BODY"
end

--- The context of one request over daytona.runtime.server's `req` and
-- `res`. opts: app (ctx.app), max_body (the default limit of ctx:body),
-- bad_body (`function(why) -> message, code` wording the 400 of
-- ctx:json_object; why is "a JSON object is required" or "malformed
-- JSON: ...").
function M.context(req, res, opts)
  opts = opts or {}
  local target = req.target or req.path
  return setmetatable({
    app = opts.app, req = req, res = res, method = req.method,
    path = target:match("^([^?]*)"), target = target, qs = req.query, query = req.args,
    headers = req.headers, params = {}, remote = req.remote,
    is_websocket = req.websocket, subprotocols = req.protocols,
    max_body = opts.max_body or M.MAX_BODY, bad_body = opts.bad_body or default_bad_body,
  }, Context)
end

--- Every value of a query parameter, in order (an empty list if absent).
function Context:query_all(name)
  local all = self._query_all
  if not all then
    all = require("daytona.runtime.server").parse_query(self.qs, true)
    self._query_all = all
  end
  return all[name] or {}
end

local function too_large(limit)
  M.raise(413, format("the request body is larger than %d bytes", limit), "PAYLOAD_TOO_LARGE")
end

--- The whole body (read once, then kept); "" when there is none. A
-- declared Content-Length over the limit is refused before reading.
function Context:body(limit)
  if self._body then return self._body end
  limit = limit or self.max_body
  local cl = self.headers["content-length"]
  if cl and (tonumber(cl) or 0) > limit then too_large(limit) end
  local ok, body = pcall(self.req.body, self.req, limit)
  if not ok then
    if errors.is(body, errors.DaytonaValidationError) then too_large(limit) end
    error(body, 0)
  end
  self._body = body
  return body
end

--- The body as a JSON object. An empty (or blank) body is {} unless
-- `required`; anything else that is not a JSON object is a 400 worded by
-- the server's bad_body. `[]` and `{}` decode to the same empty table, so
-- the text itself must open with `{`.
function Context:json_object(required)
  local text = self:body()
  if text:match("^%s*$") then
    if required then
      local msg, code = self.bad_body("a JSON object is required")
      M.raise(400, msg, code)
    end
    return {}
  end
  local v, err = M.json.decode_object(text)
  if v == nil then
    local msg, code = self.bad_body(err)
    M.raise(400, msg, code)
  end
  return v
end

--- The next raw chunk of the body; nil at its end.
function Context:read_chunk()
  return self.req:read()
end

--- Answer with a whole response: a table body as JSON, a string as it is
-- (JSON unless headers give a Content-Type), nil as an empty body.
function Context:reply(status, body, headers)
  local h = {}
  if body ~= nil then h["Content-Type"] = "application/json; charset=utf-8" end
  for k, v in pairs(headers or {}) do h[k] = v end
  self.responded, self.status = true, status
  if body == nil then body = "" elseif type(body) ~= "string" then body = M.json.encode(body) end
  self.res:send(status, h, body)
end

--- Start a streamed answer; returns the response (write, finish, abort).
function Context:stream(status, headers)
  self.responded, self.status = true, status
  self.res:start(status, headers)
  return self.res
end

--- Answer with a file, sent from disk; raises the DaytonaError (ENOENT,
-- EISDIR, ...) of a file that cannot be sent, with nothing sent yet.
function Context:file(status, headers, path)
  self.res:file(status, headers, path)
  self.responded, self.status = true, status
end

--- Accept a WebSocket upgrade with the chosen subprotocol (one the client
-- offered, or nil); 400 when the request is not an upgrade.
function Context:upgrade(protocol)
  if not self.is_websocket then
    M.raise(400, "this route needs a WebSocket upgrade (Upgrade: websocket)", "BAD_REQUEST")
  end
  local ok, ws = pcall(self.res.websocket, self.res, { protocol = protocol })
  if not ok then
    if errors.is(ws, errors.DaytonaValidationError) then
      M.raise(400, "WebSocket upgrade failed: " .. tostring(ws.message), "BAD_REQUEST")
    end
    error(ws, 0)
  end
  self.responded, self.status, self.ws = true, 101, ws
  return ws
end

---------------------------------------------------------------------------
-- Serving
---------------------------------------------------------------------------

-- A failure of the client's connection (it went away, timed out, or the
-- server is closing): the server layer drops the connection, no body.
local function transport_error(e)
  return errors.is(e, errors.DaytonaConnectionError) or errors.is(e, errors.DaytonaTimeoutError)
    or errors.is(e, errors.CancelledError)
end

--- The `handler` for daytona.runtime.server.listen: a context per request,
-- `dispatch(ctx)` called protected (it returns status, body, headers or
-- answers through ctx), errors turned into the error body. opts: dispatch,
-- app, max_body, bad_body (see http.context), log (`function(ctx, status,
-- seconds)` once per request), on_bug (`function(ctx, traceback)` for an
-- error that is not an HttpError).
function M.handler(opts)
  local dispatch, log, on_bug = opts.dispatch, opts.log, opts.on_bug
  return function(req, res)
    local ctx = M.context(req, res, opts)
    local t0 = core.now()
    local ok, status, body, headers, tb = M.call(ctx.path, ctx.method, dispatch, ctx)
    if ok then
      if not ctx.responded then
        if status == nil then
          status, body = 500, M.error_body(500, "internal error: the handler sent no response",
                                           "INTERNAL_SERVER_ERROR", ctx.path, ctx.method)
        end
        ctx:reply(status, body, headers)
      end
    else
      local err = headers
      if transport_error(err) then
        if ctx.ws then ctx.ws:abort() end
        if log then log(ctx, "-", core.now() - t0) end
        error(err, 0)
      end
      if tb and on_bug then on_bug(ctx, tb) end
      if ctx.ws then
        ctx.ws:close(1011, tostring(body.message):sub(1, 120))
      elseif res.started then
        res:abort()   -- the head is out: all that is left is cutting the body short
      else
        ctx:reply(status, body)
      end
    end
    if log then log(ctx, ctx.status or status, core.now() - t0) end
  end
end

return M
