--- daytona.check: argument checking for the SDK's public functions.
--
-- A bad argument raises `DaytonaValidationError` (code EINVAL, field
-- `argument`) naming the function and the argument, before any request is
-- made. Every checker takes the value, the function's name and the
-- argument's name, and returns the value (normalised where said).
--
--     local check = require "daytona.check"
--     path = check.string(path, "download_file", "path")
--     opts = check.options(opts, "exec", check.set("cwd", "env", "timeout"))
local errors = require "daytona.errors"

local type, pairs, ipairs, tostring, select, getmetatable, rawget, error =
  type, pairs, ipairs, tostring, select, getmetatable, rawget, error
local math_type = math.type
local concat, sort = table.concat, table.sort

local M = {}

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

--- A required string (non-empty unless `allow_empty`).
-- @return the string
function M.string(v, fname, arg, allow_empty)
  if type(v) ~= "string" then argerror(fname, arg, "string expected, got " .. describe(v)) end
  if v == "" and not allow_empty then argerror(fname, arg, "non-empty string expected") end
  return v
end

--- The id of an object argument (a table with a string `id`, such as a
-- snapshot or a volume) or the id/name string itself.
-- @return the string
function M.id(v, fname, arg)
  if type(v) == "table" and type(v.id) == "string" then return v.id end
  return M.string(v, fname, arg)
end

--- An optional string.
-- @return the string or nil
function M.optstring(v, fname, arg, allow_empty)
  if v == nil then return nil end
  return M.string(v, fname, arg, allow_empty)
end

--- A required integer within [lo, hi] (either bound may be nil).
-- Integral floats are accepted and returned as integers.
-- @return the integer
function M.integer(v, fname, arg, lo, hi)
  local i = type(v) == "number" and math.tointeger(v) or nil
  if not i then argerror(fname, arg, "integer expected, got " .. describe(v)) end
  if (lo and i < lo) or (hi and i > hi) then
    argerror(fname, arg, ("integer in %s..%s expected, got %d"):format(lo or "", hi or "", i))
  end
  return i
end

--- An optional integer within [lo, hi].
-- @return the integer or nil
function M.optinteger(v, fname, arg, lo, hi)
  if v == nil then return nil end
  return M.integer(v, fname, arg, lo, hi)
end

--- An optional non-negative number of seconds (0 = no limit).
-- @return the number or the default
function M.timeout(v, fname, default, arg)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v then argerror(fname, arg or "timeout", "number of seconds expected, got " .. describe(v)) end
  if v < 0 then argerror(fname, arg or "timeout", "non-negative number expected (0 = no timeout)") end
  return v
end

--- An optional boolean.
-- @return the boolean or nil
function M.optboolean(v, fname, arg)
  if v ~= nil and type(v) ~= "boolean" then argerror(fname, arg, "boolean expected, got " .. describe(v)) end
  return v
end

--- An optional function (or callable table).
-- @return the value or nil
function M.optfunction(v, fname, arg)
  if v == nil then return nil end
  if type(v) == "function" then return v end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__call then return v end
  argerror(fname, arg, "function expected, got " .. describe(v))
end

--- A table (required).
-- @return the table
function M.table(v, fname, arg)
  if type(v) ~= "table" then argerror(fname, arg, "table expected, got " .. describe(v)) end
  return v
end

--- An optional table mapping strings to strings (env vars, labels).
-- Numbers and booleans as values are converted to strings.
-- @return a fresh table or nil
function M.strmap(v, fname, arg)
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
function M.strlist(v, fname, arg, allow_empty_list)
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
  for i = 1, n do out[i] = M.string(v[i], fname, ("%s[%d]"):format(arg, i)) end
  return out
end

--- An options table: nil becomes {}, a key not in `allowed` raises (so a
-- misspelt option is caught, not ignored).
-- @param v the table or nil
-- @param fname function name
-- @param allowed set of option names
-- @param arg the argument's name (default "options")
-- @return the table
function M.options(v, fname, allowed, arg)
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

--- Make every public method of a class check its `self`, so that a call
-- with '.' instead of ':' (`client.create{...}`) says so instead of failing
-- later with "attempt to index a nil value". Called once per class, after
-- its methods are defined; names starting with "_" (private methods and
-- metamethods) are left as they are. The cost per call is one metatable
-- comparison and a tail call.
-- @param class the methods table
-- @param instance how users name an instance in messages, e.g. "client"
-- @param[opt] mt the instances' metatable (default: `class` itself)
-- @return class
function M.methods(class, instance, mt)
  mt = mt or class
  local function is_instance(self)
    -- an object of a derived class: its metatable's __index chain reaches class
    local m = getmetatable(self)
    for _ = 1, 8 do
      if type(m) ~= "table" then return false end
      local idx = rawget(m, "__index")
      if idx == class or m == mt then return true end
      m = type(idx) == "table" and getmetatable(idx) or nil
    end
    return false
  end
  local names = {}
  for name, fn in pairs(class) do
    if type(name) == "string" and type(fn) == "function" and name:sub(1, 1) ~= "_" then names[#names + 1] = name end
  end
  for _, name in ipairs(names) do
    local fn = class[name]
    local function misuse(self)
      local args = type(self) == "table" and getmetatable(self) == nil and "{...}" or "(...)"
      error(errors.DaytonaValidationError(
        ("%s.%s: call it with ':' (%s:%s%s), not '.'"):format(instance, name, instance, name, args),
        { code = "EINVAL", argument = "self" }), 0)
    end
    class[name] = function(self, ...)
      if getmetatable(self) ~= mt and not is_instance(self) then misuse(self) end
      return fn(self, ...)
    end
  end
  return class
end

return M
