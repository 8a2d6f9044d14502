--- dtlocal.cli: the `dtlocal` command line (the dtlua binary run under the
-- name `dtlocal` calls `main(arg)` as a scheduler task; see csrc/dtlua.c).
--
--   dtlocal serve [--host 127.0.0.1] [--port N] [--token T] [--state DIR]
--                 [--warm N] [--minute-seconds S]
--       Run the server in the foreground: prints the API URL and the token,
--       then one log line per request on stderr, until SIGTERM or Ctrl-C.
--   dtlocal start [--host H] [--port N] [--state DIR]
--       The same in the background for this user; returns once it answers.
--       Does nothing if the user's server already runs.
--   dtlocal stop      stop the user's background server
--   dtlocal status    say whether it runs (exit 0) or not (exit 3)
--   dtlocal toolbox --socket PATH | --listen HOST:PORT | --listen-fd N [--workdir DIR]
--                   [--own-network] [--entrypoint COMMAND]
--       The in-sandbox toolbox daemon (dtlocal.toolbox); --workdir: where
--       commands start (default: the home directory); --entrypoint: a shell
--       command run as the `entrypoint` session (a snapshot's entrypoint).
--
-- The user's server is described by `$XDG_STATE_HOME/dtlua/dtlocal.json`
-- (mode 0600; doc/dtlocal.md), which the SDK reads when no credentials are
-- set. `serve` writes it only when it uses the default state directory, so
-- private servers (specs, `--state DIR`) never replace the user's.
--
-- main(arg) -> exit code (0 ok, 1 failure, 2 usage error, 3 not running).
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local localserver = require "daytona.localserver"
local fs = require "dtlocal.fs"
local process = require "daytona.runtime.process"

local io, os, type, tostring, tonumber, pcall, error, string, setmetatable, getmetatable, math =
  io, os, type, tostring, tonumber, pcall, error, string, setmetatable, getmetatable, math
local format = string.format

local util = core.util

local M = {}

local USAGE = [[
usage: dtlocal <command> [options]

commands:
  serve [--host 127.0.0.1] [--port N] [--preview-port N] [--token T]
        [--state DIR] [--warm N] [--minute-seconds S]
                   run the local Daytona-compatible server in the foreground;
                   --warm N keeps N sandboxes started ahead of time (default 2)
                   so that creates answer at once; --minute-seconds makes the
                   auto-stop/archive/delete minute shorter (for tests)
  start [--host H] [--port N] [--state DIR]
                   run it in the background for this user (no-op if running)
  stop             stop the background server
  status           show whether the background server runs (exit 3 if not)
  toolbox --socket PATH | --listen HOST:PORT | --listen-fd N [--workdir DIR] [--own-network]
          [--entrypoint COMMAND]
                   run the toolbox daemon (inside a sandbox)
  help             show this text

The background server is described in $XDG_STATE_HOME/dtlua/dtlocal.json
(default ~/.local/state/dtlua/dtlocal.json); SDKs with no credentials use it.
]]

-- A usage error: raised as a table so main() can tell it from a crash.
local UsageError = { __name = "dtlocal.UsageError" }
UsageError.__index = UsageError
UsageError.__tostring = function(e) return e.message end

local function usage_error(fmt, ...)
  error(setmetatable({ message = format(fmt, ...) }, UsageError), 0)
end

---------------------------------------------------------------------------
-- Paths and the description file
---------------------------------------------------------------------------

--- $XDG_STATE_HOME/dtlua (default ~/.local/state/dtlua): daytona.localserver
-- knows where the user's server lives, for the SDK and for us.
function M.state_home()
  local ok, home = pcall(localserver.state_home)
  if not ok then error(tostring(home.message or home), 0) end
  return home
end

--- The default state dir: $XDG_STATE_HOME/dtlua/server.
function M.default_state_dir() return M.state_home() .. "/server" end
--- The user's server description: $XDG_STATE_HOME/dtlua/dtlocal.json.
function M.info_file() return localserver.state_file() end
--- The background server's log: $XDG_STATE_HOME/dtlua/dtlocal.log.
function M.log_file() return M.state_home() .. "/dtlocal.log" end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  return (fs.cwd() .. "/" .. p):gsub("/%./", "/"):gsub("/+", "/")
end

--- Whether pid is a running dtlocal (guards against a recycled pid).
M.alive = localserver.alive

--- The description of a running server in file `path`, or nil, reason
-- (worded for the command line).
function M.read_info(path)
  local info, why, code, pid = localserver.read(path)
  if info then return info end
  if code == "ENOENT" then return nil, "not running (no " .. path .. ")" end
  if code == "ESRCH" then return nil, format("not running (pid %s of %s is gone)", tostring(pid), path) end
  return nil, path .. " is not a server description (" .. tostring(why) .. ")"
end

---------------------------------------------------------------------------
-- Argument parsing
---------------------------------------------------------------------------

-- Parse `--name value` / `--name=value` options of a command against spec
-- { name = "string"|"port"|"number"|"flag" }.
local function parse_opts(args, first, spec, command)
  local opts = {}
  local i = first
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    if not name then
      usage_error("%s: unexpected argument '%s'", command, a)
    end
    local kind = spec[name]
    if not kind then usage_error("%s: unknown option --%s", command, name) end
    local value
    if kind == "flag" then
      if inline then usage_error("%s: --%s takes no value", command, name) end
      value = true
    else
      value = inline
      if value == nil then
        i = i + 1
        value = args[i]
        if value == nil then usage_error("%s: --%s needs a value", command, name) end
      end
      if kind == "port" then
        local n = math.tointeger(tonumber(value))
        if not n or n < 0 or n > 65535 or not value:match("^%d+$") then
          usage_error("%s: --%s must be a port number 0-65535, not '%s'", command, name, value)
        end
        value = n
      elseif kind == "count" then
        local n = math.tointeger(tonumber(value))
        if not n or n < 0 or n > 64 or not value:match("^%d+$") then
          usage_error("%s: --%s must be a whole number 0-64, not '%s'", command, name, value)
        end
        value = n
      elseif kind == "number" then
        local n = tonumber(value)
        if not n or n <= 0 or n ~= n or n == math.huge then
          usage_error("%s: --%s must be a positive number, not '%s'", command, name, value)
        end
        value = n
      elseif kind == "string" then
        if value == "" then usage_error("%s: --%s must not be empty", command, name) end
      end
    end
    if opts[name] ~= nil then usage_error("%s: --%s given twice", command, name) end
    opts[name] = value
    i = i + 1
  end
  return opts
end

local SERVE_OPTS = { host = "string", port = "port", ["preview-port"] = "port", token = "string", state = "string",
                     ["minute-seconds"] = "number", warm = "count" }
local START_OPTS = { host = "string", port = "port", state = "string" }

local function check_host(host)
  if not host:match("^[%w%.%-:%[%]]+$") then
    usage_error("--host must be a host name or an IP address, not '%s'", host)
  end
end

local function check_token(token)
  if #token < 8 or token:find("[%s%c]") then
    usage_error("--token must be at least 8 characters without spaces")
  end
end

local function is_loopback(host)
  return host == "127.0.0.1" or host == "localhost" or host == "::1" or host == "[::1]"
    or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

---------------------------------------------------------------------------
-- serve
---------------------------------------------------------------------------

local function stderr_log(fmt, ...)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ "), format(fmt, ...), "\n")
  io.stderr:flush()
end

local function serve(opts)
  local host = opts.host or "127.0.0.1"
  check_host(host)
  if opts.token then check_token(opts.token) end
  local default_dir = M.default_state_dir()
  local state = abspath(opts.state or default_dir)
  local announce = state == default_dir
  if not is_loopback(host) then
    io.stderr:write(format("dtlocal: WARNING: listening on %s, not on loopback: anyone who can "
      .. "reach this address and knows the token controls the sandboxes\n", host))
  end
  local control = require "dtlocal.control"
  local app = control.new{
    host = host, port = opts.port or 0, preview_port = opts["preview-port"] or 0,
    token = opts.token, state_dir = state,
    minute = opts["minute-seconds"], warm = opts.warm, log = stderr_log,
    info_file = announce and M.info_file() or nil,
  }
  app:start()
  io.stdout:write(format("dtlocal: API %s\ndtlocal: toolbox %s\ndtlocal: previews %s\n"
    .. "dtlocal: token %s\ndtlocal: state %s\n", app.api_url, app.toolbox_url, app.preview_base, app.token, state))
  -- which sandbox resources hold, and why the others do not
  io.stdout:write(format("dtlocal: resources: %s\n", app.cgroups:report()))
  io.stdout:flush()
  local ok, err = pcall(app.run, app)     -- until SIGTERM/SIGHUP, or cancelled (Ctrl-C)
  app:close()
  if not ok and not errors.is(err, errors.CancelledError) then error(err, 0) end
  return 0
end

---------------------------------------------------------------------------
-- start / stop / status
---------------------------------------------------------------------------

local function self_binary()
  local prefix = package.dtlua_prefix
  if type(prefix) == "string" and prefix ~= "" then return prefix .. "/bin/dtlocal" end
  return "dtlocal"
end

local function start(opts)
  if opts.host then check_host(opts.host) end
  local info_path = M.info_file()
  local info = M.read_info(info_path)
  if info then
    io.stdout:write(format("dtlocal: already running (pid %d): API %s\n", info.pid, info.api_url))
    return 0
  end
  local state = opts.state and abspath(opts.state) or M.default_state_dir()
  if state ~= M.default_state_dir() then
    usage_error("start: --state must be the default state directory (%s) for the background "
      .. "server; use `dtlocal serve --state DIR` for another one", M.default_state_dir())
  end
  local ok, msg = fs.mkdirs(M.state_home(), 448)
  if not ok then error("cannot create " .. M.state_home() .. ": " .. msg, 0) end
  os.remove(info_path)
  -- the log shows the token: only for this user
  local lf, why = util.open_file(M.log_file(), "ab")
  if not lf then error("cannot open " .. M.log_file() .. ": " .. tostring(why), 0) end
  util.chmod(M.log_file(), 384)
  local argv = { self_binary(), "serve" }
  if opts.host then argv[#argv + 1] = "--host"; argv[#argv + 1] = opts.host end
  if opts.port then argv[#argv + 1] = "--port"; argv[#argv + 1] = tostring(opts.port) end
  -- detached: its own session, so it outlives this command and the
  -- caller's terminal; started without a shell, so its pid is the server's
  local p <close>, msg = process.spawn(argv, { detached = true, stdin = "null", stdout = lf, stderr = "stdout" })
  lf:close()
  if not p then error("could not start `dtlocal serve` in the background: " .. tostring(msg), 0) end
  -- ready once it has announced itself (it does so after listening)
  local deadline = core.now() + 15
  while core.now() < deadline do
    local i = M.read_info(info_path)
    if i then   -- read_info checked that its pid is alive
      io.stdout:write(format("dtlocal: started (pid %d): API %s\n", math.tointeger(i.pid), i.api_url))
      return 0
    end
    if p:status() ~= nil then break end   -- it exited (reaped by us): no server came of it
    scheduler.sleep(0.02)
  end
  local log = io.open(M.log_file(), "rb")
  local tail = ""
  if log then
    local text = log:read("a") or ""
    log:close()
    tail = text:sub(-2000)
  end
  error(format("the background server did not start (see %s):\n%s", M.log_file(), tail), 0)
end

local function stop()
  local info_path = M.info_file()
  local info, why = M.read_info(info_path)
  if not info then
    io.stdout:write("dtlocal: ", why, "\n")
    os.remove(info_path)
    return 0
  end
  fs.kill(math.tointeger(info.pid), "TERM")
  local deadline = core.now() + 30
  while core.now() < deadline do
    if not M.alive(math.tointeger(info.pid)) then
      os.remove(info_path)
      io.stdout:write(format("dtlocal: stopped (pid %d)\n", info.pid))
      return 0
    end
    scheduler.sleep(0.05)
  end
  error(format("the server (pid %d) did not stop within 30 s", info.pid), 0)
end

local function status()
  local info, why = M.read_info(M.info_file())
  if not info then
    io.stdout:write("dtlocal: ", why, "\n")
    return 3
  end
  io.stdout:write(format("dtlocal: running (pid %d)\n  API      %s\n  toolbox  %s\n  state    %s\n",
    info.pid, info.api_url, info.toolbox_url or "?", info.state_dir or "?"))
  return 0
end

---------------------------------------------------------------------------
-- toolbox
---------------------------------------------------------------------------

local function toolbox(args)
  local opts = parse_opts(args, 2, { socket = "string", listen = "string", ["listen-fd"] = "string",
                                    workdir = "string", ["own-network"] = "flag",
                                    entrypoint = "string" }, "toolbox")
  opts.own_network, opts["own-network"] = opts["own-network"], nil
  if opts.workdir and opts.workdir:sub(1, 1) ~= "/" then
    usage_error("toolbox: --workdir must be an absolute path, not '%s'", opts.workdir)
  end
  local given = (opts.socket and 1 or 0) + (opts.listen and 1 or 0) + (opts["listen-fd"] and 1 or 0)
  if given ~= 1 then
    usage_error("toolbox: give exactly one of --socket PATH, --listen HOST:PORT or --listen-fd N")
  end
  if opts["listen-fd"] then
    opts.fd = math.tointeger(tonumber(opts["listen-fd"]))
    if not opts.fd or opts.fd < 3 then
      usage_error("toolbox: --listen-fd must be a descriptor number of 3 or more, not '%s'", opts["listen-fd"])
    end
    opts["listen-fd"] = nil
  end
  if opts.listen then
    local h, p = opts.listen:match("^(.*):(%d+)$")
    local port = math.tointeger(tonumber(p or ""))
    if not h or h == "" or not port or port > 65535 then
      usage_error("toolbox: --listen must be HOST:PORT, not '%s'", opts.listen)
    end
    opts.host, opts.port = h:gsub("^%[(.*)%]$", "%1"), port
  end
  -- the one line dtlocal's runner waits for (dtlocal.control.runner): the
  -- daemon listens from now on
  opts.on_ready = function(srv)
    io.stdout:write("ready ", opts.socket and ("unix:" .. opts.socket)
      or opts.fd and ("fd:" .. opts.fd) or srv.url, "\n")
    io.stdout:flush()
  end
  local rc = require("dtlocal.toolbox").main(opts)
  return type(rc) == "number" and math.tointeger(rc) or 0
end

---------------------------------------------------------------------------

--- Run the command line; returns the process exit code.
function M.main(args)
  args = args or {}
  local cmd = args[1]
  local ok, res = pcall(function()
    if cmd == nil or cmd == "help" or cmd == "--help" or cmd == "-h" then
      io.stdout:write(USAGE)
      return cmd == nil and 2 or 0
    elseif cmd == "serve" then
      return serve(parse_opts(args, 2, SERVE_OPTS, "serve"))
    elseif cmd == "start" then
      return start(parse_opts(args, 2, START_OPTS, "start"))
    elseif cmd == "stop" then
      parse_opts(args, 2, {}, "stop")
      return stop()
    elseif cmd == "status" then
      parse_opts(args, 2, {}, "status")
      return status()
    elseif cmd == "toolbox" then
      return toolbox(args)
    elseif cmd == "--version" or cmd == "version" then
      io.stdout:write("dtlocal ", require("dtlocal.control.record").DAEMON_VERSION, "\n")
      return 0
    end
    usage_error("unknown command '%s' (try `dtlocal help`)", tostring(cmd))
  end)
  if ok then return res end
  if getmetatable(res) == UsageError then
    io.stderr:write("dtlocal: ", res.message, "\n")
    return 2
  end
  if errors.is(res, errors.CancelledError) then error(res, 0) end
  io.stderr:write("dtlocal: ", tostring(type(res) == "table" and (res.message or res) or res), "\n")
  return 1
end

return M
