--- Error classes. Every error the SDK raises is a table of one of these
-- classes, with `message` and, where they apply, `status_code` (HTTP), `code`
-- (the server's error code, or a transport code such as "ECONNREFUSED"),
-- `headers`, `body` and `retryable`.
--
-- Every error also records where user code made the SDK call that raised
-- it: `where` ("script.lua:12", the first stack level outside the SDK's own
-- modules at the time the error was made; nil if there is none, as for an
-- error of a task the SDK started itself) and `traceback` (the stack at that
-- time, a string). `tostring(err)` gives one line that starts with that
-- position, like Lua's own error messages:
--
--     script.lua:12: DaytonaNotFoundError: sandbox abc not found (HTTP 404)
--
-- When an SDK error ends a plain `lua5.4` (nobody caught it), lua.c prints
-- that line followed by the traceback: lua.c adds its own traceback to
-- string errors only, so `__tostring` appends `traceback` when it is asked
-- by a message handler written in C while the error is being raised.
--
--     local ok, err = pcall(sandbox.fs.download_file, sandbox.fs, "/nope")
--     if errors.is(err, errors.DaytonaNotFoundError) then ... end
local setmetatable, getmetatable, type, tostring, rawget, pairs, error =
  setmetatable, getmetatable, type, tostring, rawget, pairs, error
local getinfo, traceback = debug.getinfo, debug.traceback

local M = {}

local Class = {}   -- metatable of the classes themselves: calling one makes an instance

-- The directory the SDK's modules are loaded from ("@lua/daytona/",
-- "@/usr/share/lua/5.4/daytona/"): a stack level whose source is under it
-- is the SDK's, not the user's.
local SDK_DIR = getinfo(1, "S").source:match("^(@.*[/\\])errors%.lua$")

-- C functions that ask for an error's text to show it as a value, not as
-- the message of an error under way.
local PRINTERS = { [tostring] = true, [print] = true, [string.format] = true }

local function instance_tostring(e)
  local parts = { e.class.name, ": ", tostring(e.message) }
  if e.where then table.insert(parts, 1, e.where .. ": ") end
  if e.status_code then parts[#parts + 1] = " (HTTP " .. tostring(e.status_code) .. ")"
  elseif e.code then parts[#parts + 1] = " (" .. tostring(e.code) .. ")" end
  -- lua.c's message handler (a C function, called on top of the C function
  -- that raised) shows __tostring's result and adds no traceback to a
  -- non-string error: give it ours, or an uncaught error has none
  if e.traceback then
    local caller = getinfo(2, "Sf")
    if caller and caller.what == "C" and not PRINTERS[caller.func] then
      local raiser = getinfo(3, "S")
      if raiser and raiser.what == "C" then parts[#parts + 1] = "\n" .. e.traceback end
    end
  end
  return table.concat(parts)
end

-- The position of the first stack level, from `level` up, that is not the
-- SDK's (nor C): where user code called in. Only when an error is made.
local function user_position(level)
  while true do
    local info = getinfo(level + 1, "Sl")
    if not info then return nil end
    if info.what ~= "C" and info.currentline > 0
       and not (SDK_DIR and info.source:sub(1, #SDK_DIR) == SDK_DIR) then
      return info.short_src .. ":" .. info.currentline
    end
    level = level + 1
  end
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

-- Class(message, fields) -> instance; fields are copied (status_code, code,
-- ...; `where` and `traceback` too, else they are this call's caller's)
function Class.__call(cls, message, fields)
  local e = { message = message ~= nil and tostring(message) or cls.name }
  if fields then for k, v in pairs(fields) do if k ~= "message" then e[k] = v end end end
  if e.where == nil then e.where = user_position(2) end
  if e.traceback == nil then e.traceback = traceback(nil, 2) end
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
-- Ctrl-C (SIGINT) at a wait on the main thread of a plain `lua5.4`: a
-- cancellation, so that the SDK unwinds through its cleanup as for any
-- other, and a class of its own, so that a program can tell it apart.
M.class("InterruptedError", M.CancelledError)

-- The runtime's failure codes (luv-style, `nil, message, code`) that are
-- not the network's: files, arguments, memory.
local LOCAL = {
  EINVAL = true, ENOENT = true, EACCES = true, EISDIR = true, ENOSPC = true, EROFS = true,
  EEXIST = true, ENOTDIR = true, ENOMEM = true, ENOTSUP = true, EPERM = true, EBADF = true,
}
--- Which runtime failures (`nil, message, code`) a retry may cure, and for
-- which requests: the one table that both the transport's retry policy
-- (`transport.lua`) and an error's `retryable` field read.
--
-- * `"any"`: nothing reached the server (refused, no such host, no route):
--   sending any request again cannot run it twice.
-- * `"idempotent"`: the connection broke after the request may have reached
--   the server (reset, broken pipe, aborted, a garbled answer): only a request
--   that may run twice (`GET`, `PUT`, `DELETE`, ...) is sent again.
--
-- Any other code is not retried: a timeout (the deadline is spent), TLS and
-- certificate failures, a refused upgrade, a peer of the wrong uid, too many
-- redirects, local failures. An HTTP status is classified by the transport.
M.TRANSPORT_RETRY = {
  ECONNREFUSED = "any", ENOTFOUND = "any", EHOSTUNREACH = "any", ENETUNREACH = "any",
  EAI_NONAME = "any", EAI_AGAIN = "any", EADDRNOTAVAIL = "any",
  ECONNRESET = "idempotent", EPIPE = "idempotent", ECONNABORTED = "idempotent",
  EPROTO = "idempotent",
}

--- Whether the transport retries a request that failed with a runtime code.
-- @param code the runtime's code ("ECONNRESET")
-- @param idempotent whether the request may run twice
-- @return boolean
function M.retries_failure(code, idempotent)
  local class = M.TRANSPORT_RETRY[code]
  return class == "any" or (class == "idempotent" and idempotent == true)
end

--- The error for a failure the runtime returned as `nil, message, code`:
-- the one place where the runtime's mechanism meets the SDK's classes.
-- ECANCELED is a `CancelledError`, ETIMEDOUT a `DaytonaTimeoutError`, a
-- local code (ENOENT, EACCES, EINVAL, ...) a `DaytonaError`, any other a
-- `DaytonaConnectionError`; `retryable` is set, unless `fields` says
-- otherwise, for the codes in `TRANSPORT_RETRY` (transient failures: the
-- transport retries them for any request when nothing reached the server,
-- for idempotent requests only otherwise, as it does a 502).
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
  if f.retryable == nil then f.retryable = M.TRANSPORT_RETRY[code] ~= nil end
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
