--- daytona.wire: what goes over the wire, and nothing else.
--
-- JSON (one encoder, shared by the SDK's transport and `daytona.runtime.http`),
-- the conversion of decoded wire objects to snake_case Lua tables, and the
-- one URL codec: percent-encoding, query strings built by the clients and
-- parsed by the servers. A leaf module: it requires only cjson and
-- `daytona.errors` (and the C core, for base64), so the runtime may use it
-- without pulling in the SDK.
local cjson = require "cjson"
local errors = require "daytona.errors"

local type, pairs, ipairs, tostring, tonumber, pcall, error, next, getmetatable, setmetatable =
  type, pairs, ipairs, tostring, tonumber, pcall, error, next, getmetatable, setmetatable
local math_type, floor, char = math.type, math.floor, string.char
local concat, sort = table.concat, table.sort

local M = {}

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

-- a private instance: settings of other users of cjson do not leak in
local json = cjson.new()
json.encode_sparse_array(false)
json.decode_max_depth(200)
json.encode_max_depth(200)
--- JSON null as decoded.
M.null = json.null
--- The cjson instance itself, for callers that handle its errors
-- (`pcall(wire.json.encode, v)`).
M.json = json

--- Encode a Lua value as JSON.
-- @param v a table, string, number or boolean
-- @return string
-- @raise a plain error when v cannot be encoded (a function, a cycle)
function M.encode(v)
  return json.encode(v)
end

--- Decode JSON text; raises DaytonaError with the text's start on bad input.
-- @param s string
-- @return the decoded value (JSON null is `wire.null`)
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

-- Models print as one short line, `FileInfo{name="a.txt", is_dir=false, size=3}`;
-- the metatable holds only __tostring and __name, so indexing and pairs see
-- exactly the fields.
local FIRST = { "id", "name", "path", "destination", "state", "exit_code", "result" }
local FIRST_SET = {}
for i, k in ipairs(FIRST) do FIRST_SET[k] = i end
local MAX_LINE = 160

local function short(x)
  local t = type(x)
  if t == "string" then
    if #x > 40 then x = x:sub(1, 37) .. "..." end
    return (("%q"):format(x):gsub("\\\n", "\\n"))
  elseif t == "table" then
    local n = #x
    if n > 0 then return ("[%d]"):format(n) end
    return next(x) == nil and "{}" or "{...}"
  end
  return tostring(x)
end

local models = setmetatable({}, { __mode = "k" })   -- metatable -> true
local model_mts = {}                                 -- name -> metatable

local function model_tostring(m, name)
  local mt = getmetatable(m)
  local keys = {}
  for k in pairs(m) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ia, ib = FIRST_SET[a], FIRST_SET[b]
    if ia or ib then return (ia or 99) < (ib or 99) end
    return tostring(a) < tostring(b)
  end)
  local parts, len = {}, 0
  for _, k in ipairs(keys) do
    local item = (type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. short(k) .. "]"))
      .. "=" .. short(m[k])
    if len + #item > MAX_LINE then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = item
    len = len + #item + 2
  end
  return (name or mt and mt.model or "") .. "{" .. table.concat(parts, ", ") .. "}"
end

--- Give a table the model metatable: it prints as one line
-- (`Name{field=value, ...}`) and indexes and iterates as before.
-- @param t table
-- @param[opt] name the model's name (Python's class name), e.g. "FileInfo"
-- @return t
function M.model(t, name)
  if type(t) ~= "table" or getmetatable(t) ~= nil then return t end
  local key = name or ""
  local mt = model_mts[key]
  if not mt then
    mt = { __tostring = model_tostring, __name = "daytona.wire.Model", model = name }
    model_mts[key] = mt
    models[mt] = true
  end
  return setmetatable(t, mt)
end

--- The one-line text of a model (its `__tostring`), for classes that
-- print like models but have methods of their own.
-- @param t table
-- @param[opt] name the name shown before the fields
-- @return string
function M.model_text(t, name)
  return model_tostring(t, name)
end

--- True if t is a model (made by `to_lua` or `model`).
-- @return boolean
function M.is_model(t)
  local mt = getmetatable(t)
  return mt ~= nil and models[mt] == true
end

--- Convert a decoded wire object into a plain Lua table: keys in
-- snake_case (except inside `env`, `envs` and `labels`, which are the
-- user's), JSON null dropped, integral numbers as integers. The result is a
-- model (see `model`): it prints readably.
-- @param v decoded JSON
-- @param[opt] name the model's name, shown by tostring
-- @return table or scalar
function M.to_lua(v, name)
  return M.model(plain(v, false), name)
end

---------------------------------------------------------------------------
-- base64 (chart PNGs, screenshots)
---------------------------------------------------------------------------

local core_util   -- daytona.core's util, loaded on the first decode

--- Decode standard base64 (RFC 4648 section 4, padding optional; line
-- breaks and spaces are skipped, as MIME writes them). Done by the core
-- (`core.util.base64_decode`): a 1024x768 screenshot took about 45 ms in
-- Lua, 3 ms there.
-- @param s string
-- @return the bytes, or nil and a message when s is not base64
function M.base64_decode(s)
  if not core_util then core_util = require("daytona.core").util end
  local bytes, msg = core_util.base64_decode(s)
  return bytes, msg
end

---------------------------------------------------------------------------
-- URLs: the one codec
---------------------------------------------------------------------------

local function pct(c) return ("%%%02X"):format(c:byte()) end

--- Percent-encode every byte outside the unreserved set (RFC 3986).
-- @param s string (or a value converted with tostring)
-- @return string
function M.urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", pct))
end

local function unpct(h) return char(tonumber(h, 16)) end

--- Decode `%XX` escapes.
-- @param s string
-- @param[opt] form true for a query component (form encoding: "+" is a
-- space); a path segment keeps its "+"
-- @return string
function M.urldecode(s, form)
  if form then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", unpct))
end

local function qvalue(v)
  if type(v) == "boolean" then return v and "true" or "false" end
  if math_type(v) == "float" and v == floor(v) then v = math.tointeger(v) or v end
  return M.urlencode(v)
end

--- Build a query string (without `?`) from a table. List values become
-- repeated keys (`states=a&states=b`); booleans are lower-case; nil values
-- are skipped, and so are false values when `skip_false` is given (the
-- runtime's convention); keys are sorted so URLs are stable.
-- @param q table of name -> value or list of values
-- @param[opt] skip_false leave out false values
-- @return string (may be empty)
function M.query(q, skip_false)
  if not q then return "" end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if v == nil then v = q[tonumber(k)] end
    if type(v) == "table" then
      for _, x in ipairs(v) do parts[#parts + 1] = M.urlencode(k) .. "=" .. qvalue(x) end
    elseif v ~= nil and not (skip_false and v == false) then
      parts[#parts + 1] = M.urlencode(k) .. "=" .. qvalue(v)
    end
  end
  return concat(parts, "&")
end

--- Append a query table to a URL (before any fragment), with `?` or `&`.
-- @param url string
-- @param q query table or nil
-- @param[opt] skip_false as for `query`
-- @return string
function M.with_query(url, q, skip_false)
  local qs = M.query(q, skip_false)
  if qs == "" then return url end
  local frag = url:match("#.*$") or ""
  if frag ~= "" then url = url:sub(1, -#frag - 1) end
  return url .. (url:find("?", 1, true) and "&" or "?") .. qs .. frag
end

--- Join a base URL and a path, with a query table.
-- @param base string (a trailing slash is dropped)
-- @param path string starting with "/"
-- @param q optional query table
-- @return string
function M.url(base, path, q)
  return M.with_query(base:gsub("/+$", "") .. path, q)
end

--- Parse a raw query string (`a=1&b=x%20y`).
-- @param q the query, without `?` (nil: empty)
-- @param[opt] all true: every value, as a list per name; else the first
-- value of each name
-- @return table name -> value (or list of values)
function M.parse_query(q, all)
  local args = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    k = M.urldecode(k, true)
    if all then
      local list = args[k]
      if not list then list = {}; args[k] = list end
      list[#list + 1] = M.urldecode(v, true)
    elseif args[k] == nil then
      args[k] = M.urldecode(v, true)
    end
  end
  return args
end

--- A URL for messages: without query and fragment, which may carry tokens.
-- @param url string
-- @return string
function M.redact(url)
  return (tostring(url):gsub("[?#].*$", ""))
end

return M
