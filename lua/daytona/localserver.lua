--- The no-credentials default: the local Daytona-compatible server.
--
-- A client made with no API key, no JWT and no API URL talks to `dtlocal`
-- on this machine. The running server announces itself in
-- `$XDG_STATE_HOME/dtlua/dtlocal.json` (default `~/.local/state/...`; see
-- doc/dtlocal.md): `{ api_url, toolbox_url, token, pid, state_dir }`. When
-- there is no such file, or its process is gone, `dtlocal start` starts one.
-- Either way one line on stderr says which server is used.
--
-- The one place that knows where the user's server is described and
-- whether a pid is still it: dtlocal's command line (start, stop, status),
-- its App (the state directory's lock, the description it writes) and its
-- sandbox manager (launchers left by a killed server) ask here.
local errors = require "daytona.errors"
local wire = require "daytona.wire"

local io, os, type, tostring, pcall = io, os, type, tostring, pcall

local M = {}

--- The user's dtlua state directory: `$XDG_STATE_HOME/dtlua` (default
-- `~/.local/state/dtlua`), holding the server's description (dtlocal.json),
-- its log and its state directory (server/).
-- @param getenv optional function (default os.getenv)
-- @return string
-- @raise DaytonaError (code ENOENT) when neither XDG_STATE_HOME nor HOME is set
function M.state_home(getenv)
  getenv = getenv or os.getenv
  local base = getenv("XDG_STATE_HOME")
  if not base or base == "" then
    local home = getenv("HOME")
    if not home or home == "" then
      error(errors.DaytonaError("cannot locate the local server: neither XDG_STATE_HOME nor HOME is set",
        { code = "ENOENT" }), 0)
    end
    base = home .. "/.local/state"
  end
  return base .. "/dtlua"
end

--- The path of the running server's description file.
-- @param getenv optional function (default os.getenv)
-- @return string
function M.state_file(getenv)
  return M.state_home(getenv) .. "/dtlocal.json"
end

--- The `dtlocal` program: beside dtlua when running under it
-- (`package.dtlua_prefix`), else `dtlocal` on PATH.
-- @return string
function M.binary()
  local prefix = package.dtlua_prefix
  if type(prefix) == "string" and prefix ~= "" then
    return prefix .. "/bin/dtlocal"
  end
  return "dtlocal"
end

--- The command line of a live process (its arguments NUL-separated), or
-- nil when it is gone (a zombie's is empty: gone too).
-- @param pid integer
-- @return string or nil
function M.cmdline(pid)
  if math.type(pid) ~= "integer" or pid <= 0 then return nil end
  local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
  if not f then return nil end
  local cmd = f:read("a")
  f:close()
  if cmd == nil or cmd == "" then return nil end
  return cmd
end

--- Whether pid is a running dtlocal (or dtlua): a recycled pid is not.
-- @param pid integer
-- @return boolean
function M.alive(pid)
  local cmd = M.cmdline(pid)
  return cmd ~= nil and (cmd:find("dtlocal", 1, true) ~= nil or cmd:find("dtlua", 1, true) ~= nil)
end
local alive = M.alive

--- Read the running server's description.
-- @param path optional state file path
-- @return table `{ api_url, toolbox_url, token, pid, state_dir }`; or nil,
--   the reason and its code: "ENOENT" (no file), "EINVAL" (not a
--   description), "ESRCH" (its server is gone; then also its pid)
function M.read(path)
  path = path or M.state_file()
  local f = io.open(path, "rb")
  if not f then return nil, "no " .. path, "ENOENT" end
  local text = f:read("a")
  f:close()
  local ok, info = pcall(wire.decode, text)
  if not ok or type(info) ~= "table" then return nil, path .. " is not valid JSON", "EINVAL" end
  info = wire.to_lua(info)
  if type(info.api_url) ~= "string" or type(info.token) ~= "string" then
    return nil, path .. " lacks api_url or token", "EINVAL"
  end
  if info.pid ~= nil and not alive(info.pid) then
    return nil, "the server of " .. path .. " (pid " .. tostring(info.pid) .. ") is not running", "ESRCH", info.pid
  end
  return info
end

--- Start a server in the background with `dtlocal start` and wait for
-- it to return (it returns once the server is ready). Waits through the
-- scheduler, so other tasks run meanwhile.
-- @param bin the program (default M.binary())
-- @param timeout seconds (default 60)
-- @return true
-- @raise DaytonaConnectionError if it cannot be started
function M.start(bin, timeout)
  bin = bin or M.binary()
  local rprocess = require "daytona.runtime.process"
  local errfile = os.tmpname()
  -- stdout to /dev/null and stderr to a file, not pipes: the server it
  -- leaves behind may keep inherited descriptors open
  local ok, code, failed = pcall(function()
    local ef <close> = assert(io.open(errfile, "wb"))
    local p <close>, smsg, scode = rprocess.spawn({ bin, "start" }, { stdin = "null", stdout = "null", stderr = ef })
    if not p then return scode == "ENOENT" and 127 or nil, smsg end
    local status, wmsg = p:wait(timeout or 60)
    if status == nil then return nil, wmsg end
    return status
  end)
  local f = io.open(errfile, "rb")
  local msg = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errfile)
  msg = msg:gsub("%s+$", "")
  if not ok or code == nil then
    if errors.is(code, errors.CancelledError) then error(code, 0) end
    msg = tostring(ok and failed or code) .. (msg ~= "" and (": " .. msg) or "")
  elseif code == 127 then
    msg = bin .. " not found (install dtlua, or set DAYTONA_API_KEY to use Daytona's cloud)"
  elseif code ~= 0 then
    msg = msg ~= "" and msg or ("exit status " .. tostring(code))
  else
    return true
  end
  error(errors.DaytonaConnectionError(("could not start the local server with `%s start`: %s")
    :format(bin, msg), { code = "ESTART" }), 0)
end

--- Find the running local server, starting one if needed, and say which
-- one is used in one line on stderr.
-- @param opts optional `{ state_file = path, binary = path, quiet = bool,
--   start = false }` (start = false: never start one)
-- @return the server description (see `read`)
-- @raise DaytonaConnectionError when none runs and none can be started
function M.ensure(opts)
  opts = opts or {}
  local path = opts.state_file or M.state_file()
  local info, why = M.read(path)
  local started = false
  if not info then
    if opts.start == false then
      error(errors.DaytonaConnectionError("no local server: " .. why, { code = "ENOSERVER" }), 0)
    end
    M.start(opts.binary)
    started = true
    info, why = M.read(path)
    if not info then
      error(errors.DaytonaConnectionError("the local server was started but " .. why, { code = "ENOSERVER" }), 0)
    end
  end
  if not opts.quiet then
    io.stderr:write(("daytona: no credentials set, using the local server at %s%s\n")
      :format(info.api_url, started and " (started it with `dtlocal start`)" or ""))
  end
  return info
end

return M
