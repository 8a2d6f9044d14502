--- dtlocal.router: the small HTTP helpers both dtlocal servers share.
--
-- Routing by method and path pattern, the one structured error body, and a
-- JSON encoder that gets arrays right (Debian's lua-cjson has no array
-- marker, so `{}` would go out as `{}` where an SDK expects `[]`).
--
--     local router = require "dtlocal.router"
--     local r = router.new()
--     r:add("GET", "/process/session/{sessionId}", function(ctx, params) ... end)
--     local handler, params_or_status, allowed = r:match("GET", "/process/session/s1")
--
-- Errors: a handler raises `router.raise(status, message, code)` (or returns
-- normally); `router.call` turns a raised HttpError into (status, body) and any
-- other error into a 500 whose message names it, so no input crashes a server.
--
-- Error body (protocol §6.2/§7.3, one shape everywhere, read by every SDK):
--     { "statusCode": 404, "message": "session not found", "code": "NOT_FOUND",
--       "error": "Not Found", "timestamp": "2026-06-23T13:33:38Z",
--       "path": "/process/session/x", "method": "GET" }
--
-- JSON:
--     router.json.encode(v)       -- strings, numbers (integers stay integers),
--                                    booleans, router.json.null, tables
--     router.json.array(t)        -- mark t as an array (an empty one encodes as [])
--     router.json.decode(s)       -- value | nil, message (never raises)
-- A table is encoded as an array when it is marked, or when it is non-empty
-- with keys exactly 1..n; otherwise as an object with its string keys, sorted.
-- Invalid UTF-8 in strings becomes U+FFFD, as Go's encoder does.
local cjson = require "cjson.safe"

local type, pairs, ipairs, tostring, setmetatable, getmetatable, error, select =
  type, pairs, ipairs, tostring, setmetatable, getmetatable, error, select
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

-- The default `code` for a status (protocol §6.2).
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
-- Routing
---------------------------------------------------------------------------

local Router = {}
Router.__index = Router
Router.__name = "dtlocal.Router"

--- A new, empty router.
function M.new()
  return setmetatable({ routes = {} }, Router)
end

-- Split "/a/b/c" into { "a", "b", "c" }; an empty path is { }. A trailing
-- slash is ignored ("/files/" matches "/files").
local function segments(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  return segs
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end
M.unescape = unescape

--- Register handler for method and pattern. Pattern segments are literals,
-- `{name}` (one non-empty segment, percent-decoded into params.name) or, as
-- the last segment, `{name*}` (the rest of the path, zero or more segments,
-- kept raw without a leading slash, into params.name). The
-- first matching route wins, so add literal routes before parameterised ones
-- that would also match them (e.g. /process/session/entrypoint before
-- /process/session/{sessionId}).
function Router:add(method, pattern, handler)
  if type(handler) ~= "function" then
    error("bad argument #3 to 'add' (function expected)", 2)
  end
  local segs = segments(pattern)
  local parts = {}
  for i, s in ipairs(segs) do
    local name, star = s:match("^{([%w_]+)(%*?)}$")
    if star == "*" and i ~= #segs then
      error("bad argument #2 to 'add' ({name*} must be the last segment)", 2)
    end
    parts[i] = name and { param = name, rest = star == "*" } or { lit = s }
  end
  self.routes[#self.routes + 1] = { method = method:upper(), parts = parts, handler = handler,
                                    pattern = pattern }
  return self
end

--- Find the route for method and path (without the query string).
-- Returns handler, params, pattern; or nil, 404; or nil, 405, "GET, POST"
-- when the path exists for other methods only.
function Router:match(method, path)
  local segs = segments(path)
  local allowed = {}
  for _, r in ipairs(self.routes) do
    local np = #r.parts
    local rest = np > 0 and r.parts[np].rest
    if np == #segs or (rest and #segs >= np - 1) then
      local params, ok = {}, true
      for i, p in ipairs(r.parts) do
        if p.lit then
          if p.lit ~= segs[i] then ok = false; break end
        elseif p.rest then
          params[p.param] = table.concat(segs, "/", i)
        else
          params[p.param] = unescape(segs[i])
        end
      end
      if ok then
        if r.method == method or (method == "HEAD" and r.method == "GET") then
          return r.handler, params, r.pattern
        end
        allowed[#allowed + 1] = r.method
      end
    end
  end
  if #allowed > 0 then return nil, 405, concat(allowed, ", ") end
  return nil, 404
end

---------------------------------------------------------------------------
-- Query strings
---------------------------------------------------------------------------

--- Parse "a=1&b=x%20y" into { a = "1", b = "x y" } (first value of a name
-- wins; '+' means a space, as in forms).
function M.parse_query(qs)
  local q = {}
  if not qs or qs == "" then return q end
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape((k:gsub("+", " ")))
    v = unescape((v:gsub("+", " ")))
    if q[k] == nil then q[k] = v end
  end
  return q
end

return M
