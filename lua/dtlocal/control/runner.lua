--- dtlocal.control.runner: running sandboxes with the launcher.
--
-- A started sandbox is `dtlua-sandbox run` (csrc/sandbox_launcher.c,
-- doc/sandbox.md) whose one program is this installation's
-- `dtlocal toolbox --listen-fd 3`. The daemon's socket is made here, in a
-- directory only this server can write (`<socket dir>/<id>.sock`, the
-- socket dir a private mkdtemp dir), bound but not listening, and handed
-- to the launcher, which passes it to the daemon as descriptor 3; the
-- daemon calls listen(), so the kernel records it as the socket's peer.
-- Nothing on the way is a path the sandbox can write (it once was: a
-- sandbox could swap its socket for a symlink to another sandbox's), and
-- every connection checks the listener's uid (`peer_uids`: the sandbox's
-- host uid range) before a byte is sent. The installation (the prefix, and the
-- real directory of the Lua files when share/lua/5.4 is a symlink into a
-- checkout) is bind-mounted read-only at the same paths, so the daemon runs
-- from the same build.
--
-- The daemon prints one line `ready` on stdout once it listens; that line
-- is what "started" means. Everything else the launcher and the daemon
-- print goes to the server's log, prefixed with the sandbox id.
--
--   local runner = runner.new{ prefix =, log = }
--   local inst = runner:launch{ id =, dir =, uid_first =, user =, env =,
--                               network_block_all =, volumes = {{host=, sub=, path=, migrate=}},
--                               cgroups = { dir, ... }, image = <dtlocal.images.store image>,
--                               entrypoint = { word... } (run by the daemon as a session) }
--   inst:wait_ready([timeout])   -- raises a plain error with the reason
--   inst:wait_exit() -> "exit status 0" | "killed by SIGKILL" ...
--   inst:stop(grace)             -- SIGTERM, SIGKILL after grace s (0: at once)
--   inst:init_pid() -> "1234"    -- its init's host pid (read once)
--   runner:remove_tree(dir)      -- `dtlua-sandbox rm`: files of any host uid
local core = require "daytona.core"
local fs = require "dtlocal.fs"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local errors = require "daytona.errors"
local store = require "dtlocal.control.store"

local type, pairs, ipairs, tostring, setmetatable, pcall, error, io, os, table, next =
  type, pairs, ipairs, tostring, setmetatable, pcall, error, io, os, table, next
local format, concat = string.format, table.concat

local M = {}

M.LISTEN_FD = 3                          -- the daemon's socket, in the sandbox
M.ID_COUNT = 65536                        -- host uids of a sandbox (its uid range)

M.READY_TIMEOUT = 30                      -- seconds from spawn to the daemon's "ready"
M.STDERR_KEEP = 4096                      -- bytes of stderr kept for error reasons
M.EXIT_BUSY = 70                          -- the launcher's "sandbox is running"

-- Top-level host trees every sandbox sees through its overlay anyway
-- (csrc/sandbox_launcher.c `top_entries`): no bind needed below them.
local OVERLAID = { bin = true, sbin = true, lib = true, lib32 = true, lib64 = true,
                   libx32 = true, usr = true, etc = true, var = true, opt = true, srv = true }

local Runner = {}
Runner.__index = Runner
Runner.__name = "dtlocal.Runner"

--- Where the sandbox launcher of the installation at prefix is:
-- <prefix>/libexec/dtlua/ (make install, the build tree), or the rock's own
-- directory in a luarocks tree (luarocks keeps libexec files there).
function M.find_launcher(prefix)
  local path = prefix .. "/libexec/dtlua/dtlua-sandbox"
  if core.util.stat(path, true) then return path end
  local rocks = prefix .. "/lib/luarocks/rocks-5.4/dtlua"
  local versions = core.util.readdir(rocks) or {}
  table.sort(versions)
  for i = #versions, 1, -1 do
    local p = rocks .. "/" .. versions[i] .. "/libexec/dtlua/dtlua-sandbox"
    if core.util.stat(p, true) then return p end
  end
  return path
end

--- A runner. opts: prefix (the installation, default package.dtlua_prefix),
-- launcher (default <prefix>/libexec/dtlua/dtlua-sandbox), log.
function M.new(opts)
  opts = opts or {}
  local prefix = opts.prefix or package.dtlua_prefix
  if type(prefix) ~= "string" or prefix == "" then
    error("cannot find the dtlua installation (run the server as `dtlocal`)", 0)
  end
  prefix = fs.realpath(prefix)
  local launcher = opts.launcher or M.find_launcher(prefix)
  local st = core.util.stat(launcher, true)
  if not st or st.type ~= "file" then
    error("the sandbox launcher " .. launcher .. " is missing (build it with `make`)", 0)
  end
  -- The daemons' sockets: a unix socket path must fit in 108 bytes, which
  -- a state dir may not leave room for, so they live in a short private
  -- dir, /tmp/dtlocal.XXXXXX/<sandbox id>.sock (0700, ours alone).
  local sockets, lmsg = core.util.mkdtemp((os.getenv("TMPDIR") or "/tmp"):gsub("/+$", "") .. "/dtlocal")
  if not sockets or #sockets + 50 > 100 then
    sockets, lmsg = core.util.mkdtemp("/tmp/dtlocal")
  end
  if not sockets then error("cannot create the socket dir in /tmp: " .. tostring(lmsg), 0) end
  -- marked as ours, so that a server started after we were killed removes it
  local claimed, cmsg = require("dtlocal.control.leftovers").claim_link_dir(sockets)
  if not claimed then error("cannot claim " .. sockets .. ": " .. tostring(cmsg), 0) end
  local self = setmetatable({
    prefix = prefix, launcher = launcher, dtlocal = prefix .. "/bin/dtlocal",
    log = opts.log or function() end, binds = {}, sockets = sockets,
  }, Runner)
  -- what the daemon needs to run from the same build, at the same paths
  local lua_tree = fs.realpath(prefix .. "/share/lua/5.4")
  for _, p in ipairs({ prefix, lua_tree }) do
    local top = p:match("^/([^/]+)")
    local covered = false
    for _, b in ipairs(self.binds) do
      if p == b or p:sub(1, #b + 1) == b .. "/" then covered = true end
    end
    if top and not OVERLAID[top] and not covered then self.binds[#self.binds + 1] = p end
  end
  return self
end

-- Where a sandbox whose root is an image finds the host's runtime of the
-- daemon (the image has no Lua, nor our libraries): read-only binds under
-- /run (a fresh tmpfs at each start, not the image's root).
M.HOST_RUNTIME = "/run/dtlua-host"

--- How the toolbox daemon runs in an image root, worked out once: the
-- directories of the host's libraries it links (where the dynamic loader
-- is too), the host's Lua module directories, the prefix and the Lua tree,
-- bound read-only under HOST_RUNTIME at their host paths (so /usr/lib/x is
-- HOST_RUNTIME/usr/lib/x), and the daemon started through the host's dynamic loader with an explicit
-- library path (`ld.so --library-path ... dtlua`), so that the daemon uses
-- the host's libraries while every process it starts uses the image's own
-- programs and libraries: no LD_LIBRARY_PATH, nothing in the environment.
-- Returns { binds = { {src, dst}... }, argv = { loader, options..., dtlua }, env = {...} };
-- raises a plain error naming what is missing.
-- The program interpreter (dynamic loader) an ELF executable names
-- (PT_INTERP), or nil, message.
local function elf_interp(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local head = f:read(64) or ""
  local function close(...) f:close(); return ... end
  if #head < 64 or head:sub(1, 4) ~= "\127ELF" or head:byte(5) ~= 2 or head:byte(6) ~= 1 then
    return close(nil, path .. " is not a 64-bit little-endian ELF file")
  end
  local phoff = string.unpack("<I8", head, 33)
  local phentsize, phnum = string.unpack("<I2I2", head, 55)
  for i = 0, phnum - 1 do
    f:seek("set", phoff + i * phentsize)
    local ph = f:read(phentsize) or ""
    if #ph >= 56 and string.unpack("<I4", ph, 1) == 3 then   -- PT_INTERP
      local off, size = string.unpack("<I8", ph, 9), string.unpack("<I8", ph, 33)
      f:seek("set", off)
      return close(((f:read(size) or ""):gsub("%z.*$", "")))
    end
  end
  return close(nil, path .. " names no dynamic loader (a static program?)")
end

function Runner:image_runtime()
  if self.runtime then return self.runtime end
  local R = M.HOST_RUNTIME
  local dtlua = self.prefix .. "/bin/dtlua"
  local objects = { dtlua }
  local parts = self.prefix .. "/lib/lua/5.4/daytona/core"
  for _, name in ipairs(core.util.readdir(parts) or {}) do
    if name:match("%.so$") then objects[#objects + 1] = parts .. "/" .. name end
  end
  local argv = { "ldd" }
  for _, o in ipairs(objects) do argv[#argv + 1] = o end
  -- ldd without a preload of ours (a sanitizer's runtime would be listed)
  local env = core.util.environ()
  env.LD_PRELOAD = nil
  local r, msg = process.run(argv, { timeout = 30, env = env })
  if not r or r.exit_code ~= 0 then
    error("cannot list the libraries of " .. dtlua .. " (ldd): " .. tostring(msg or (r and r.stderr)), 0)
  end
  local interp, ierr = elf_interp(dtlua)
  if not interp then error("cannot find the dynamic loader of " .. dtlua .. ": " .. tostring(ierr), 0) end
  local loader = fs.realpath(interp)
  local dirs, seen = {}, {}
  for line in r.stdout:gmatch("[^\n]+") do
    local lib = line:match("=>%s*(/%S+)")
    if lib then
      local dir = fs.realpath(lib):match("^(.*)/[^/]*$")
      if dir and not seen[dir] then seen[dir] = true; dirs[#dirs + 1] = dir end
    end
  end
  -- only what the daemon needs of the host, not all of /usr (where a state
  -- dir or other host files may be that a sandbox has no business seeing)
  local binds = { { self.prefix, R .. "/prefix" },
                  { fs.realpath(self.prefix .. "/share/lua/5.4"), R .. "/lua" } }
  local bound = {}
  local function inside(path)
    if path:sub(1, 5) ~= "/usr/" then error("image sandboxes need the daemon's libraries under /usr, not in " .. path, 0) end
    if not bound[path] then
      bound[path] = true
      binds[#binds + 1] = { path, R .. path }
    end
    return R .. path
  end
  local libpath = {}
  for _, d in ipairs(dirs) do libpath[#libpath + 1] = inside(d) end
  local ldir, lname = loader:match("^(.*)/([^/]*)$")
  inside(ldir)
  -- the Lua modules of the system (lua-cjson, ...): the default search path's
  -- /usr directories that exist, below the library dirs already bound
  for template in (package.path .. ";" .. package.cpath):gmatch("[^;]+") do
    local dir = template:match("^(/usr/.-)/%?")
    local st = dir and core.util.stat(dir, true)
    if st and st.type == "directory" then
      local real = fs.realpath(dir)
      local covered = false
      for b in pairs(bound) do
        if real == b or real:sub(1, #b + 1) == b .. "/" then covered = true end
      end
      if not covered and real:sub(1, 5) == "/usr/" then inside(real) end
    end
  end
  local rt = {
    binds = binds,
    argv = { inside(ldir) .. "/" .. lname, "--inhibit-cache", "--library-path", concat(libpath, ":"),
             "--argv0", "dtlocal", R .. "/prefix/bin/dtlua" },
    env = { DTLUA_PREFIX = R .. "/prefix", DTLUA_LUA_DIR = R .. "/lua", DTLUA_SYSTEM_ROOT = R },
  }
  self.runtime = rt
  return rt
end

local Instance = {}
Instance.__index = Instance
Instance.__name = "dtlocal.SandboxProcess"

--- Start a sandbox. spec: id, dir (the sandbox's root dir), uid_first
-- (host id of sandbox id 0; required as root), user ("daytona"|"root"),
-- env ({NAME = value}), net (--net value), network_block_all, volumes ({{host=, sub=, path=,
-- migrate=}}: migrate asks for --volume-migrate of host),
-- cgroups (directories the launcher joins first: dtlocal.control.cgroups).
-- Returns an Instance at once; raises DaytonaError if the launcher cannot
-- be executed at all.
function Runner:launch(spec)
  local argv = { self.launcher, "run", "--root-dir", spec.dir, "--hostname", spec.id }
  local function add(...) for _, v in ipairs({ ... }) do argv[#argv + 1] = v end end
  if spec.uid_first then add("--uid-base", tostring(spec.uid_first)) end
  -- net: the launcher's --net veth:... (dtlocal.control.network, as root);
  -- unprivileged, a namespace of its own that pasta links to the outside
  -- (spec.pasta, once it is ready), else the host's network; none for
  -- networkBlockAll
  add("--net", spec.net or ((spec.network_block_all or spec.pasta) and "none" or "host"))
  add("--user", spec.user == "root" and "root" or "daytona")
  for _, d in ipairs(spec.cgroups or {}) do add("--cgroup", d) end
  -- the sandbox's env goes through a file, not the command line (which
  -- every host user can read in /proc): a file only we can read, beside
  -- the sandbox dir (the sandbox cannot reach it), which the launcher reads
  -- at once and which is removed once the sandbox is ready
  local image = spec.image
  local runtime = image and self:image_runtime()
  local env = spec.env or {}
  if image then
    -- the image's own environment (its PATH among it), then the sandbox's,
    -- then what the daemon needs to find the host's runtime (which it
    -- takes out of its environment at once)
    env = {}
    for _, kv in ipairs(image.config.env or {}) do
      local k, v = kv:match("^([%w_]+)=(.*)$")
      if k then env[k] = v end
    end
    for k, v in pairs(spec.env or {}) do env[k] = v end
    for k, v in pairs(runtime.env) do env[k] = v end
    for _, layer in ipairs(image.layers) do add("--image-layer", layer) end
  end
  local envfile
  if next(env) ~= nil then
    local entries = {}
    for k, v in pairs(env) do entries[#entries + 1] = k .. "=" .. v .. "\0" end
    table.sort(entries)
    envfile = spec.dir .. ".env"
    local ok, msg = store.write_atomic(envfile, concat(entries))
    if not ok then error("cannot write the sandbox's environment: " .. tostring(msg), 0) end
    add("--env-file", envfile)
  end
  if image then
    for _, b in ipairs(runtime.binds) do add("--ro-bind", b[1], b[2]) end
  else
    for _, b in ipairs(self.binds) do add("--ro-bind", b, b) end
  end
  -- volumes: idmapped binds as root (shared by sandboxes of different host
  -- ranges), the installation's binds above are not; see dtlocal.control.volumes
  for _, v in ipairs(spec.volumes or {}) do
    if v.migrate then add("--volume-migrate", v.host) end
    if v.sub then add("--volume-beneath", v.host, v.sub, v.path) else add("--volume", v.host, v.path) end
  end
  -- the daemon listens only on the unix socket we bind (see the top):
  -- never a TCP port other users could reach, never a path in the sandbox
  add("--listen-fd", tostring(M.LISTEN_FD))
  if image then
    add("--")
    add(table.unpack(runtime.argv))
    add("toolbox", "--listen-fd", tostring(M.LISTEN_FD))
    -- the image's WORKDIR is where commands start (its user's home without one)
    local cwd = image.config.cwd
    if type(cwd) == "string" and cwd:sub(1, 1) == "/" then add("--workdir", cwd) end
  else
    add("--", self.dtlocal, "toolbox", "--listen-fd", tostring(M.LISTEN_FD))
  end
  -- a network of its own: the daemon's servers for previews (noVNC) then
  -- listen on the sandbox's addresses, not only its loopback
  if spec.net and spec.net:match("^veth:") then add("--own-network") end
  -- a snapshot's entrypoint, which the daemon runs as its `entrypoint`
  -- session as Daytona's does (one shell command, each word quoted)
  if type(spec.entrypoint) == "table" and #spec.entrypoint > 0 then
    local words = {}
    for i, w in ipairs(spec.entrypoint) do words[i] = "'" .. tostring(w):gsub("'", "'\\''") .. "'" end
    add("--entrypoint", concat(words, " "))
  end
  local socket = self:socket_path(spec.id)
  -- a socket left by a stopped (killed) daemon: nothing listens on it now
  os.remove(socket)
  local fd, bmsg = core.util.unix_bind(socket)
  if not fd then
    if envfile then os.remove(envfile) end
    error(format("cannot make the toolbox socket %s: %s", socket, tostring(bmsg)), 0)
  end
  local proc, perr = process.spawn(argv, { stdin = "null", stdout = "pipe", stderr = "pipe",
                                           fds = { fd } })
  core.util.close(fd)   -- the launcher has its copy (or there is none)
  if not proc then
    if envfile then os.remove(envfile) end
    os.remove(socket)
    error(perr, 0)
  end
  -- who may listen on it: the sandbox's host uids (as root), else our own
  -- uid, which an unprivileged sandbox's users map to
  local first = spec.uid_first or core.util.getuid()
  local inst = setmetatable({
    id = spec.id, dir = spec.dir, proc = proc, pid = proc:pid(), log = self.log,
    socket = socket, peer_uids = { first, spec.uid_first and first + M.ID_COUNT - 1 or first },
    stderr = {}, stderr_len = 0,
    envfile = envfile,   -- removed once the launcher has read it
    pasta = spec.pasta,  -- its network's link to the outside (unprivileged)
  }, Instance)
  -- stderr: kept (for the error reason) and logged, line by line
  inst.err_task = scheduler.spawn(function()
    for line in proc:lines("stderr") do
      inst.log("sandbox %s: %s", inst.id, line)
      inst.stderr[#inst.stderr + 1] = line
      inst.stderr_len = inst.stderr_len + #line
      while inst.stderr_len > M.STDERR_KEEP and #inst.stderr > 1 do
        inst.stderr_len = inst.stderr_len - #table.remove(inst.stderr, 1)
      end
    end
  end)
  inst.err_task.observed = true
  return inst
end

--- What the launcher or the daemon last said on stderr, for an error
-- reason: the launcher's own last message (its lines start with
-- "dtlua-sandbox: "), else the last non-empty line; at most 300 bytes.
function Instance:last_words()
  local pick
  for i = #self.stderr, 1, -1 do
    local line = self.stderr[i]
    local msg = line:match("^dtlua%-sandbox: (.*)$")
    if msg then pick = msg; break end
    if not pick and line:match("%S") then pick = line end
  end
  if not pick then return nil end
  if #pick > 300 then pick = pick:sub(1, 297) .. "..." end
  return pick
end

-- Describe an exit status like the launcher's exit codes (doc/sandbox.md).
local EXIT_NAMES = {
  [64] = "bad launcher arguments", [65] = "cannot prepare the sandbox directory",
  [66] = "cannot create the namespaces", [67] = "cannot mount the root file system",
  [68] = "cannot pivot into the root file system", [69] = "cannot switch to the sandbox user",
  [70] = "the sandbox is already running", [71] = "internal launcher failure",
  [72] = "cannot join the sandbox's cgroup",
  [126] = "the toolbox daemon cannot be executed", [127] = "the toolbox daemon was not found",
}

local function describe(code, sig)
  if sig then return "killed by " .. sig end
  local name = EXIT_NAMES[code]
  return format("exit status %d%s", code, name and (", " .. name) or "")
end

--- Wait until the toolbox daemon listens (its `ready` line); raises a plain
-- error saying why when the sandbox ends first or `timeout` passes.
function Instance:wait_ready(timeout)
  local ok, res = pcall(function()
    return scheduler.timeout(timeout or M.READY_TIMEOUT, function()
      for line in self.proc:lines("stdout") do
        local url = line:match("^ready%s+(%S+)")
        if url then
          -- "fd:3" inside: the host reaches it at the path it bound
          self.base_url, self.unix_socket = "http://localhost", self.socket
          return true
        end
        self.log("sandbox %s: %s", self.id, line)
      end
      return false
    end)
  end)
  if self.envfile then os.remove(self.envfile); self.envfile = nil end
  if ok and res and self.pasta then
    local pok, why = self:attach_pasta()
    if not pok then
      self:stop(0)
      error("cannot give the sandbox its network with pasta: " .. tostring(why), 0)
    end
  end
  if ok and res then
    -- from now on the daemon's stdout is only logged, never left to fill up
    self.out_task = scheduler.spawn(function()
      for line in self.proc:lines("stdout") do self.log("sandbox %s: %s", self.id, line) end
    end)
    self.out_task.observed = true
    return true
  end
  if not ok and errors.is(res, errors.CancelledError) then
    self:stop(0)
    error(res, 0)
  end
  local why
  if not ok and errors.is(res, errors.DaytonaTimeoutError) then
    self:stop(0)
    why = format("the toolbox daemon did not start within %g s", timeout or M.READY_TIMEOUT)
  else
    local code, sig = self.proc:wait(5)
    if not code then error(sig, 0) end   -- sig: why it did not exit
    self.exit_code = code
    if self.err_task then pcall(scheduler.timeout, 1, function() self.err_task:wait() end) end
    why = describe(code, sig)
  end
  local words = self:last_words()
  error(words and (why .. ": " .. words) or why, 0)
end

--- Unprivileged: link the sandbox's own network namespace to the outside
-- with pasta (Debian's passt), as our user, joining its user and network
-- namespaces through its init's pid. It copies the host's addresses and
-- routes into the namespace and forwards what the sandbox sends through
-- sockets of its own. No port of either side is forwarded to the other
-- (-t/-u/-T/-U none: nothing of the sandbox published on the host, the
-- host's loopback not in the sandbox), nor the gateway mapped to the
-- host's loopback (--no-map-gw). pasta goes to the background once the
-- link is up, its pid in a file of ours; this version does not quit when
-- the namespace's processes are gone (it holds the namespace), so
-- end_pasta() ends it when the sandbox ends (and a restarted server ends
-- one a killed server left: rec.dtlocal.pasta_pid, Manager:kill_stale).
-- Returns true, or nil and why.
function Instance:attach_pasta()
  local init = self:init_pid()
  if not init then return nil, "the sandbox's init pid is unknown" end
  -- init is not dumpable (its /proc/PID/ns files are root's): pasta joins
  -- through its child, the daemon, a process of ours like any other
  local pid
  for _, name in ipairs(core.util.readdir("/proc") or {}) do
    if name:match("^%d+$") then
      local st = fs.read_file("/proc/" .. name .. "/status")
      if st and st:match("\nPPid:%s*(%d+)") == init then pid = name break end
    end
  end
  if not pid then return nil, "the sandbox's daemon is not running" end
  local pidfile = self.socket .. ".pasta"
  os.remove(pidfile)
  local r, msg = process.run({ self.pasta, "--config-net", "--no-map-gw", "-t", "none", "-u", "none",
    "-T", "none", "-U", "none", "--quiet", "--pid", pidfile, pid }, { timeout = 20, stderr = "stdout" })
  local ppid = math.tointeger(tonumber((fs.read_file(pidfile) or ""):match("%d+")))
  os.remove(pidfile)
  if ppid then self.pasta_pid = ppid end
  if not r then self:end_pasta(); return nil, msg end
  if r.exit_code ~= 0 then self:end_pasta(); return nil, ((r.stdout or ""):gsub("%s+$", "")) end
  if not ppid then return nil, "pasta wrote no pid file" end
  return true
end

--- End the sandbox's pasta (a no-op without one, or when it is gone).
function Instance:end_pasta()
  local pid = self.pasta_pid
  self.pasta_pid = nil
  if pid then M.kill_pasta(pid) end
end

--- SIGKILL process pid if it is a pasta (its command line says so).
function M.kill_pasta(pid)
  local cmd = fs.read_file("/proc/" .. tostring(pid) .. "/cmdline") or ""
  if cmd:find("pasta", 1, true) and cmd:find("--no-map-gw", 1, true) then fs.kill(pid, "KILL") end
end

--- Wait until the sandbox has ended; returns a description of the status.
function Instance:wait_exit()
  local code, sig = self.proc:wait()
  self:end_pasta()
  if self.err_task then pcall(scheduler.timeout, 1, function() self.err_task:wait() end) end
  local words = self:last_words()
  local d = describe(code, sig)
  if code ~= 0 and not sig and words then d = d .. ": " .. words end
  return d
end

--- The host pid of the sandbox's init (a string), from the launcher's lock
-- file (`<dir>/.lock`: "<launcher pid> <start> <init pid> <start>",
-- doc/sandbox.md), read once: it is the same for the whole run. nil while
-- the launcher has not written it.
function Instance:init_pid()
  if not self.init_pid_ then
    self.init_pid_ = (fs.read_file(self.dir .. "/.lock") or ""):match("^%d+ %d+ (%d+) %d+")
  end
  return self.init_pid_
end

--- Whether the sandbox's launcher still runs.
function Instance:running()
  return self.proc:status() == nil
end

--- Stop the sandbox: SIGTERM to the launcher (which forwards it to init
-- and the daemon), SIGKILL after `grace` seconds (0: SIGKILL at once; the
-- kernel then kills everything in the sandbox's PID namespace).
function Instance:stop(grace)
  if self.proc:status() == nil then
    if grace and grace > 0 then
      self.proc:kill("TERM", false)
      self.proc:wait(grace)
    end
    if self.proc:status() == nil then
      self.proc:kill("KILL", false)
      self.proc:wait()
    end
  end
  self:end_pasta()
end

--- Where the host reaches a sandbox's daemon: a socket in our private dir.
function Runner:socket_path(id)
  return self.sockets .. "/" .. id .. ".sock"
end

--- Remove the socket dir (at server shutdown).
function Runner:close()
  if self.sockets then
    for _, name in ipairs(core.util.readdir(self.sockets) or {}) do os.remove(self.sockets .. "/" .. name) end
    os.remove(self.sockets)
    self.sockets = nil
  end
end

--- Remove a sandbox's (or a volume's) directory tree, whatever host ids
-- own its files. Raises a plain error if it cannot.
function Runner:remove_tree(dir)
  local r, msg = process.run({ self.launcher, "rm", "--root-dir", dir }, { timeout = 600, stderr = "stdout" })
  if not r then error(format("cannot remove %s: %s", dir, msg), 0) end
  if r.exit_code ~= 0 then
    error(format("cannot remove %s: %s", dir, (r.stdout or ""):gsub("%s+$", "")), 0)
  end
end

return M
