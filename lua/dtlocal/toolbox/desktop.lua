--- dtlocal.toolbox.desktop: the desktop that Computer Use drives
-- (doc/protocol.md §4.9, doc/dtlocal.md "Computer Use").
--
-- Four supervised processes, started in this order and each waited on by
-- a real readiness check before the next one starts:
--   xvfb    Xvfb :0 (1024x768x24), -nolisten tcp -nolisten local: only the
--           filesystem socket /tmp/.X11-unix/X0, in the sandbox's own /tmp
--           (no TCP port, no abstract socket another network namespace's
--           neighbour could reach). Ready: the socket exists and an X client
--           connects. -noreset: by default the server resets when its last
--           client leaves (our readiness probe), refusing connections
--           meanwhile, and xfce4-session would meet that.
--   xfce4   xfce4-session under dbus-run-session (a private session bus; the
--           session starts the AT-SPI bus, so GTK applications expose their
--           accessibility tree). Ready: a window manager owns the root
--           window (_NET_SUPPORTING_WM_CHECK).
--   x11vnc  x11vnc on the display, without password, serving RFB on a unix
--           socket in the daemon's private state directory only (no TCP
--           port: nothing but websockify can reach it). Ready: the socket
--           is listening (/proc/net/unix).
--   novnc   websockify serving /usr/share/novnc on 127.0.0.1:6080 and
--           bridging to that socket. Ready: GET /vnc.html answers 200.
--
-- Each process runs in its own process group with a tag (dtlocal.toolbox.
-- proc) so that stopping it ends everything it started (xfce4-session's
-- many children included). stdout is kept as the process's logs, stderr as
-- its errors (the last 256 KiB of each), plus the supervisor's own notes
-- (exits, restarts) in errors. A process that exits while it is wanted is
-- restarted (autoRestart), with a growing pause, and given up after 5
-- quick failures in a row. Stopping the desktop (or the daemon) ends them
-- all; so does the end of the sandbox, whose PID namespace they live in.
--
--     local desktop = require "dtlocal.toolbox.desktop"
--     local d = desktop.get(app)         -- the daemon's one desktop
--     d:start()  -> true | nil, message, status (a missing program: 503
--                   naming its Debian package)
--     d:stop(); d:restart(name); d:status() -> { name = {running, pid,
--     priority, autoRestart} }; d:overall() -> "active"|"partial"|
--     "inactive"|"error"; d:logs(name), d:errors(name)
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local rhttp = require "daytona.runtime.http"
local process = require "daytona.runtime.process"
local common = require "dtlocal.toolbox.common"
local proc = require "dtlocal.toolbox.proc"
local fs = require "dtlocal.fs"

local util = core.util
local sleep = scheduler.sleep
local setmetatable, ipairs, tostring, tonumber, type, table, os, io, pcall, math =
  setmetatable, ipairs, tostring, tonumber, type, table, os, io, pcall, math

local M = {}

M.DISPLAY = ":0"
M.GEOMETRY = "1024x768x24"
M.NOVNC_PORT = 6080
M.NOVNC_WEB = "/usr/share/novnc"
M.NAMES = { "xvfb", "xfce4", "x11vnc", "novnc" }

local LOG_MAX = 256 * 1024
local READY_TIMEOUT = { xvfb = 20, xfce4 = 40, x11vnc = 20, novnc = 20 }
local MAX_QUICK_FAILURES = 5
local QUICK = 10          -- seconds: a run shorter than this is a failure in a row
local TERM_GRACE = 3      -- seconds between SIGTERM and SIGKILL on stop

local X_SOCKET = "/tmp/.X11-unix/X" .. M.DISPLAY:sub(2)

---------------------------------------------------------------------------
-- Readiness checks
---------------------------------------------------------------------------

-- An X client connects: the core's X11 part when it is built, else xdpyinfo.
local function x_connects(env)
  local ok, x11 = pcall(require, "daytona.core.x11")
  if ok and type(x11) == "table" and x11.open then
    local d = x11.open(M.DISPLAY)
    if d then d:close(); return true end
    return false
  end
  local r = proc.run({ "xdpyinfo", "-display", M.DISPLAY }, { env = env, timeout = 5 })
  return r and r.exit_code == 0
end

-- Whether a unix socket at `path` is listening (flag __SO_ACCEPTCON in
-- /proc/net/unix), without connecting to it.
local function unix_listening(path)
  local f = io.open("/proc/net/unix", "r")
  if not f then return false end
  local found = false
  for line in f:lines() do
    local flags, p = line:match("^%x+:%s+%x+%s+%x+%s+(%x+)%s+%x+%s+%x+%s+%d+%s+(.+)$")
    if p == path and tonumber(flags, 16) & 0x10000 ~= 0 then found = true; break end
  end
  f:close()
  return found
end
M.unix_listening = unix_listening

local function port_listening(port)
  for _, p in ipairs(require("dtlocal.toolbox.extras").listening_ports()) do
    if p == port then return true end
  end
  return false
end

---------------------------------------------------------------------------
-- The process table
---------------------------------------------------------------------------

-- name -> { priority, package (Debian), argv(desktop), ready(desktop, env) }
local SPECS = {
  xvfb = {
    priority = 100, package = "xvfb",
    argv = function() return { "Xvfb", M.DISPLAY, "-screen", "0", M.GEOMETRY,
                               "-nolisten", "tcp", "-nolisten", "local", "-noreset" } end,
    ready = function(_, env)
      local st = util.stat(X_SOCKET)
      return st and st.type == "socket" and x_connects(env)
    end,
  },
  xfce4 = {
    priority = 200, package = "xfce4 dbus-x11",
    -- the session bus's address goes to a file, so that what runs on the
    -- desktop later (exec, sessions) joins this bus instead of starting one
    -- of its own (dbus-launch --autolaunch, which would outlive a stop)
    argv = function(d) return { "dbus-run-session", "--", "/bin/sh", "-c",
      'printf %s "$DBUS_SESSION_BUS_ADDRESS" > "$1.tmp" && mv "$1.tmp" "$1"; exec xfce4-session',
      "sh", d.bus_file } end,
    ready = function(_, env)
      local ok, x11 = pcall(require, "daytona.core.x11")
      if ok and type(x11) == "table" and x11.open then
        local d = x11.open(M.DISPLAY)
        if not d then return false end
        local wm = d:window_manager()
        d:close()
        return wm and true or false
      end
      local r = proc.run({ "xprop", "-display", M.DISPLAY, "-root", "_NET_SUPPORTING_WM_CHECK" },
                         { env = env, timeout = 5 })
      return r and r.exit_code == 0 and r.output:find("window id", 1, true) ~= nil
    end,
  },
  x11vnc = {
    priority = 300, package = "x11vnc",
    -- no TCP listener at all (-rfbport 0, -rfbportv6 -1, -no6): the unix
    -- socket is the only way in. Not -localhost: x11vnc then checks every
    -- client's address against 127.0.0.1, and a unix-socket client's is
    -- "localhost", so it denied websockify ("localhost does not match
    -- 127.0.0.1") and noVNC could never connect.
    argv = function(d) return { "x11vnc", "-display", M.DISPLAY, "-forever", "-shared", "-nopw",
                                "-rfbport", "0", "-rfbportv6", "-1", "-no6", "-unixsock", d.vnc_socket } end,
    ready = function(d) return unix_listening(d.vnc_socket) end,
  },
  novnc = {
    priority = 400, package = "novnc websockify",
    -- in a network of its own the sandbox's address, which previews go to
    -- (other sandboxes cannot reach it); on the host's shared network its
    -- loopback only, which previews reach there
    argv = function(d) return { "websockify", "--web", M.NOVNC_WEB, "--unix-target=" .. d.vnc_socket,
                                (d.app.own_network and "0.0.0.0:" or "127.0.0.1:") .. M.NOVNC_PORT } end,
    ready = function()
      local r = rhttp.request { url = ("http://127.0.0.1:%d/vnc.html"):format(M.NOVNC_PORT),
                                timeout = 3, connect_timeout = 2 }
      return r and r.status == 200
    end,
  },
}
M.SPECS = SPECS

-- What each program is, for the error when it is missing.
local PROGRAMS = {
  xvfb = { "Xvfb" }, xfce4 = { "dbus-run-session", "xfce4-session", "xprop" },
  x11vnc = { "x11vnc" }, novnc = { "websockify" },
}

-- The last LOG_MAX bytes of a file ("" when there is none).
local function tail(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local size = f:seek("end")
  f:seek("set", math.max(0, size - LOG_MAX))
  local data = f:read("a") or ""
  f:close()
  return data
end

local function stamp()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

---------------------------------------------------------------------------
-- Desktop
---------------------------------------------------------------------------

local Desktop = {}
Desktop.__index = Desktop

local function new_desktop(app)
  local dir = app.state_dir .. "/computeruse"
  fs.mkdirs(dir, 448, 448)
  local d = setmetatable({ app = app, procs = {}, dir = dir, vnc_socket = dir .. "/vnc.sock",
                           bus_file = dir .. "/session-bus" }, Desktop)
  for _, name in ipairs(M.NAMES) do
    d.procs[name] = { name = name, spec = SPECS[name], failures = 0,
                      log_path = ("%s/%s.log"):format(dir, name), err_path = ("%s/%s.err"):format(dir, name) }
  end
  return d
end

--- The daemon's desktop (one per daemon), made on first use.
function M.get(app)
  local d = app.desktop
  if not d then d = new_desktop(app); app.desktop = d end
  return d
end

-- xfce4-session starts ssh-agent and gpg-agent, which leave its session
-- and make themselves undumpable (their environment, and so the tag, is
-- unreadable): they would outlive a stop. Our own copy of the session's
-- system settings turns them off, first on XDG_CONFIG_DIRS; the rest of
-- the system's settings stay as they are. Returns the value for
-- XDG_CONFIG_DIRS.
local SESSION_XML = "xfce4/xfconf/xfce-perchannel-xml/xfce4-session.xml"
local NO_AGENTS = [[
  <property name="startup" type="empty">
    <property name="ssh-agent" type="empty"><property name="enabled" type="bool" value="false"/></property>
    <property name="gpg-agent" type="empty"><property name="enabled" type="bool" value="false"/></property>
  </property>
]]

function Desktop:xdg_config_dirs(env)
  local system = env.XDG_CONFIG_DIRS
  if not system or system == "" then system = "/etc/xdg" end
  local mine = self.dir .. "/xdg"
  local text
  for d in system:gmatch("[^:]+") do
    text = fs.read_file(d .. "/" .. SESSION_XML)
    if text then break end
  end
  if not text or not text:find("</channel>", 1, true) then
    text = '<?xml version="1.0" encoding="UTF-8"?>\n<channel name="xfce4-session" version="1.0">\n</channel>\n'
  end
  text = text:gsub("</channel>", function() return NO_AGENTS .. "</channel>" end, 1)
  local path = mine .. "/" .. SESSION_XML
  fs.mkdirs(path:match("^(.*)/[^/]*$"), 448, 448)
  local f = io.open(path, "wb")
  if not f then return system end
  f:write(text)
  f:close()
  return mine .. ":" .. system
end

--- The environment of the desktop's processes (and of what runs on it).
function Desktop:env()
  local env = common.child_env(self.app, { DISPLAY = M.DISPLAY })
  -- each process gets the session bus from its session (xfce4 starts it)
  self.xdg = self.xdg or self:xdg_config_dirs(env)
  env.XDG_CONFIG_DIRS = self.xdg
  -- GTK applications only register with the accessibility bus when it is
  -- not turned off
  env.NO_AT_BRIDGE = nil
  env.XDG_SESSION_TYPE = "x11"
  env.XDG_CURRENT_DESKTOP = "XFCE"
  return env
end

local function running(p)
  return p.process ~= nil and p.process:status() == nil
end

-- A clear message for a program that is missing, or nil. `path`: the
-- PATH the process will be started with (the sandbox's, when its env sets one).
local function missing(name, path)
  for _, prog in ipairs(PROGRAMS[name]) do
    if not proc.which(prog, path) then
      return ("%s is not installed: %s needs the Debian package(s) %s (`make deps` installs them)")
        :format(prog, name, SPECS[name].package)
    end
  end
  if name == "novnc" and not util.stat(M.NOVNC_WEB .. "/vnc.html") then
    return ("%s/vnc.html is missing: novnc needs the Debian package novnc (`make deps` installs it)")
      :format(M.NOVNC_WEB)
  end
  return nil
end
M.missing = missing

-- A line of the supervisor's own in the process's errors.
function Desktop:note(p, line)
  local f = io.open(p.err_path, "ab")
  if f then f:write(("[%s dtlocal] %s\n"):format(stamp(), line)); f:close() end
end

-- Spawn one process and its watcher; no readiness wait. stdout and stderr
-- go to the process's log files (appended, through a shell that then
-- execs the program: the pid is the program's).
function Desktop:spawn(p)
  local tag = proc.tag()
  local argv = p.spec.argv(self)
  local sh = { "/bin/sh", "-c", 'exec "$@" >>"$DTLUA_CU_LOG" 2>>"$DTLUA_CU_ERR" </dev/null', "sh" }
  for _, a in ipairs(argv) do sh[#sh + 1] = a end
  local env = tag:env(self:env())
  env.DTLUA_CU_LOG, env.DTLUA_CU_ERR = p.log_path, p.err_path
  self:note(p, "starting: " .. table.concat(argv, " "))
  local child, msg = process.spawn(sh, { env = env, cwd = self.app.home, stdin = "null",
                                         stdout = "null", stderr = "null" })
  if not child then return nil, ("%s could not start: %s"):format(p.name, tostring(msg)) end
  p.process, p.tag, p.started_at, p.stopping = child, tag, core.now(), false
  local gen = (p.gen or 0) + 1
  p.gen = gen
  local watcher = scheduler.spawn(function()
    local code, sig = child:wait()
    if p.gen ~= gen then return end
    self:note(p, "exited: " .. (sig and ("signal " .. sig) or ("status " .. tostring(code))))
    tag:kill()   -- what it left behind (a session's children)
    if p.stopping or not p.wanted then return end
    -- autoRestart. What runs on the display died with it when the X server
    -- went (killed, restarted): wait until the server is back, and do not
    -- count that death as the program's failure.
    if p.name ~= "xvfb" and not self:x_ready() then
      self:note(p, "waiting for the X server")
      local deadline = core.now() + 60
      while not self:x_ready() do
        if p.gen ~= gen or p.stopping or not p.wanted then return end
        if core.now() > deadline then
          p.gave_up = true
          self:note(p, "not restarted: the X server did not come back within 60 s")
          return
        end
        sleep(0.2)
      end
      p.started_at = core.now() - QUICK
    end
    if core.now() - p.started_at < QUICK then p.failures = p.failures + 1 else p.failures = 0 end
    if p.failures >= MAX_QUICK_FAILURES then
      p.gave_up = true
      self:note(p, ("not restarted: %d quick failures in a row"):format(p.failures))
      return
    end
    sleep(math.min(5, 0.5 * (1 << p.failures)))
    if p.gen ~= gen or p.stopping or not p.wanted then return end
    self:note(p, "restarting")
    if p.name == "xfce4" then os.remove(self.bus_file) end
    local ok, err = self:spawn(p)
    if not ok then self:note(p, err); p.gave_up = true; return end
    -- a new session has a new bus: tell what starts from now on, once the
    -- session has written its address
    if p.name == "xfce4" and self.app.desktop_env then
      local deadline = core.now() + 20
      while p.gen == gen + 1 and not util.stat(self.bus_file) and core.now() < deadline do sleep(0.05) end
      if self.app.desktop_env then self:announce() end
    end
  end)
  watcher.observed = true
  p.watcher = watcher
  return true
end

-- Wait until the process is ready, or it exits, or its time is up.
function Desktop:await(p)
  local deadline = core.now() + READY_TIMEOUT[p.name]
  local env = self:env()
  while true do
    if not running(p) then
      return nil, ("%s exited while starting; its errors end with:\n%s")
        :format(p.name, tail(p.err_path):sub(-600))
    end
    local ok, ready = pcall(p.spec.ready, self, env)
    if ok and ready then return true end
    if core.now() > deadline then
      return nil, ("%s did not become ready within %d s"):format(p.name, READY_TIMEOUT[p.name])
    end
    sleep(0.1)
  end
end

-- Start one process (if it is not running) and wait until it is ready.
function Desktop:start_one(p)
  if running(p) then return true end
  local why = missing(p.name, self:env().PATH)
  if why then return nil, why, 503 end
  if p.name == "xvfb" then
    -- :0 held by an X server another program of the sandbox started, or a
    -- lock left by one that was killed (then Xvfb would refuse to start)
    local lock = "/tmp/.X" .. M.DISPLAY:sub(2) .. "-lock"
    local holder = tonumber((fs.read_file(lock) or ""):match("%d+"))
    -- /tmp outlives the sandbox's PID namespace (a stop, a restart): the
    -- pid is the holder only if it is an X server now
    local comm = holder and fs.read_file("/proc/" .. holder .. "/comm")
    if comm and comm:match("^X") then
      return nil, ("display %s is already in use in this sandbox (%s names pid %d): stop that X server first")
        :format(M.DISPLAY, lock, holder), 409
    end
    os.remove(lock)
    os.remove(X_SOCKET)
  elseif p.name == "novnc" and port_listening(M.NOVNC_PORT) then
    return nil, ("port %d is already in use (noVNC needs it)"):format(M.NOVNC_PORT), 409
  elseif p.name == "x11vnc" then
    os.remove(self.vnc_socket)
  end
  p.wanted, p.gave_up, p.failures = true, false, 0
  local ok, err = self:spawn(p)
  if not ok then return nil, err, 503 end
  ok, err = self:await(p)
  if not ok then
    self:stop_one(p)
    return nil, err, 503
  end
  return true
end

-- Stop one process and everything it started.
function Desktop:stop_one(p)
  p.wanted = false
  local child, tag = p.process, p.tag
  if not child then return end
  p.stopping = true
  if child:status() == nil then
    tag:signal("TERM", child)
    -- the watcher waits on the child: poll here instead of a second wait
    local deadline = core.now() + TERM_GRACE
    while child:status() == nil and core.now() < deadline do sleep(0.05) end
  end
  tag:kill(child)
  tag:kill()
  p.process = nil
end

--- Start every process not running, in order. Returns true, or nil,
-- message, status; on failure what this call started is stopped again.
function Desktop:start()
  while self.busy do sleep(0.05) end
  self.busy = true
  local started = {}
  local ok, err, status = true, nil, nil
  for _, name in ipairs(M.NAMES) do
    local p = self.procs[name]
    local was = running(p)
    ok, err, status = self:start_one(p)
    if not ok then break end
    if not was then started[#started + 1] = p end
  end
  if not ok then
    for i = #started, 1, -1 do self:stop_one(started[i]) end
  end
  self.busy = false
  if not ok then return nil, err, status end
  self:announce()
  return true
end

-- What programs started later (exec, sessions, PTYs) get in their
-- environment while the desktop runs (common.child_env): DISPLAY, and
-- the session bus.
function Desktop:announce()
  local bus = fs.read_file(self.bus_file)
  self.app.desktop_env = { DISPLAY = M.DISPLAY,
                           DBUS_SESSION_BUS_ADDRESS = bus and bus ~= "" and bus or nil }
end

--- Stop every process, the last started first.
function Desktop:stop()
  while self.busy do sleep(0.05) end
  self.busy = true
  for i = #M.NAMES, 1, -1 do self:stop_one(self.procs[M.NAMES[i]]) end
  self.app.desktop_env = nil
  os.remove(self.bus_file)
  self.busy = false
  return true
end

--- Restart one process (stop it, start it, wait until it is ready).
function Desktop:restart(name)
  local p = self.procs[name]
  while self.busy do sleep(0.05) end
  self.busy = true
  self:stop_one(p)
  self:note(p, "restart requested")
  local ok, err, status = self:start_one(p)
  self.busy = false
  if not ok then return nil, err, status end
  if name == "xfce4" and self.app.desktop_env then self:announce() end
  return true
end

--- Every process's state, as the protocol reports it.
function Desktop:status()
  local t = {}
  for _, name in ipairs(M.NAMES) do
    local p = self.procs[name]
    local r = running(p)
    t[name] = { running = r, pid = r and p.process:pid() or nil, priority = p.spec.priority,
                autoRestart = true }
  end
  return t
end

function Desktop:is_running(name) return running(self.procs[name]) end

--- Whether the X server runs and takes clients.
function Desktop:x_ready()
  if not running(self.procs.xvfb) then return false end
  local ok, ready = pcall(SPECS.xvfb.ready, self, self:env())
  return ok and ready and true or false
end

--- Whether the X server is stopped (SIGSTOP, state T): an X call would
-- then block the daemon until it runs again (Xlib has no timeouts).
function Desktop:x_stopped()
  local p = self.procs.xvfb
  if not running(p) then return false end
  local st = process.stat(p.process:pid())
  return st ~= nil and (st.state == "T" or st.state == "t")
end

--- "active" (all running), "partial", "inactive" (none), "error" (one was
-- given up after failing again and again).
function Desktop:overall()
  local n, failed = 0, false
  for _, name in ipairs(M.NAMES) do
    local p = self.procs[name]
    if running(p) then n = n + 1 elseif p.gave_up and p.wanted then failed = true end
  end
  if failed then return "error" end
  if n == #M.NAMES then return "active" end
  if n == 0 then return "inactive" end
  return "partial"
end

function Desktop:logs(name) return tail(self.procs[name].log_path) end
function Desktop:errors(name) return tail(self.procs[name].err_path) end

--- The daemon is closing: stop everything.
function M.shutdown(app)
  if app.desktop then
    app.desktop.busy = false
    app.desktop:stop()
  end
end

return M
