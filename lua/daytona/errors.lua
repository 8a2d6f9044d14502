--- Error classes. Every error the SDK raises is a table of one of these
-- classes, with `message` and, where they apply, `status_code` (HTTP), `code`
-- (the server's error code, or a transport code such as "ECONNREFUSED"),
-- `headers`, `body` and `retryable`. `tostring(err)` gives one clear line.
--
--     local ok, err = pcall(sandbox.fs.download_file, sandbox.fs, "/nope")
--     if errors.is(err, errors.DaytonaNotFoundError) then ... end
local setmetatable, getmetatable, type, tostring, rawget, pairs, error =
  setmetatable, getmetatable, type, tostring, rawget, pairs, error

local M = {}

local Class = {}   -- metatable of the classes themselves: calling one makes an instance

local function instance_tostring(e)
  local parts = { e.class.name, ": ", tostring(e.message) }
  if e.status_code then parts[#parts + 1] = " (HTTP " .. tostring(e.status_code) .. ")"
  elseif e.code then parts[#parts + 1] = " (" .. tostring(e.code) .. ")" end
  return table.concat(parts)
end

--- Define a class; `parent` may be nil for a root.
function M.class(name, parent)
  local cls = setmetatable({ name = name, parent = parent }, Class)
  cls.__index = cls
  cls.__name = name
  cls.__tostring = instance_tostring
  cls.class = cls
  M[name] = cls
  return cls
end

-- Class(message, fields) -> instance; fields are copied (status_code, code, ...)
function Class.__call(cls, message, fields)
  local e = { message = message ~= nil and tostring(message) or cls.name }
  if fields then for k, v in pairs(fields) do if k ~= "message" then e[k] = v end end end
  return setmetatable(e, cls)
end

function Class.__tostring(cls) return "class " .. cls.name end

-- Class lookup of a missing field falls through to the parent class.
function Class.__index(cls, k)
  local p = rawget(cls, "parent")
  return p and p[k]
end

--- True if err is an instance of cls or one of its subclasses.
function M.is(err, cls)
  if type(err) ~= "table" then return false end
  local c = getmetatable(err)
  while c do
    if c == cls then return true end
    c = rawget(c, "parent")
  end
  return false
end

--- A one-line description of any error value.
function M.describe(err)
  return tostring(err)
end

-- The classes (the Python SDK's names).
local Base = M.class("DaytonaError")
M.class("DaytonaNotFoundError", Base)
M.class("DaytonaAuthenticationError", Base)
M.class("DaytonaAuthorizationError", Base)
M.class("DaytonaConflictError", Base)
M.class("DaytonaValidationError", Base)
M.class("DaytonaRateLimitError", Base)
M.class("DaytonaTimeoutError", Base)
M.class("DaytonaConnectionError", Base)
-- Cancellation is not a failure of Daytona: a separate root so that a
-- `catch DaytonaError` does not swallow it.
M.class("CancelledError")

-- The runtime's failure codes (luv-style, `nil, message, code`) that are
-- not the network's: files, arguments, memory.
local LOCAL = {
  EINVAL = true, ENOENT = true, EACCES = true, EISDIR = true, ENOSPC = true, EROFS = true,
  EEXIST = true, ENOTDIR = true, ENOMEM = true, ENOTSUP = true, EPERM = true, EBADF = true,
}
-- codes where nothing reached the application: worth retrying
local RETRYABLE = {
  ECONNREFUSED = true, ECONNRESET = true, ENOTFOUND = true,
  EHOSTUNREACH = true, ENETUNREACH = true, EPIPE = true,
}

--- The error for a failure the runtime returned as `nil, message, code`:
-- the one place where the runtime's mechanism meets the SDK's classes.
-- ECANCELED is a `CancelledError`, ETIMEDOUT a `DaytonaTimeoutError`, a
-- local code (ENOENT, EACCES, EINVAL, ...) a `DaytonaError`, any other a
-- `DaytonaConnectionError`; `retryable` is set for codes where nothing
-- reached the application unless `fields` says otherwise.
-- @param message the runtime's message
-- @param code the runtime's code (a string such as "ECONNREFUSED")
-- @param[opt] fields more fields for the error (copied): status_code, url,
-- stdout, ...
-- @param[opt] what the operation, prefixed to the message
-- @return the error object (not raised)
function M.from_failure(message, code, fields, what)
  local f = {}
  if fields then for k, v in pairs(fields) do f[k] = v end end
  f.code = code
  if f.retryable == nil then f.retryable = RETRYABLE[code] or false end
  local text = what and (what .. ": " .. tostring(message)) or message
  if code == "ECANCELED" then return M.CancelledError(text, f) end
  if code == "ETIMEDOUT" then return M.DaytonaTimeoutError(text, f) end
  if LOCAL[code] then return M.DaytonaError(text, f) end
  return M.DaytonaConnectionError(text, f)
end

--- Raise the error for a runtime failure, or pass a success through:
-- `errors.check(runtime_call(...))` returns what the call returned when
-- its first value is not nil, else raises `from_failure` of the rest.
-- @param v the call's first value
-- @param message its message when v is nil
-- @param code its code
-- @param fields its fields table, if any
-- @return all the call's values when v is not nil
-- @raise the mapped error when v is nil
function M.check(v, message, code, fields, ...)
  if v == nil and message ~= nil then error(M.from_failure(message, code, fields), 2) end
  return v, message, code, fields, ...
end

return M
