--- dtlocal.control.cgroups: a sandbox's cpu, memory and pids limits, with cgroups.
--
-- Every sandbox gets one cgroup (per hierarchy) nested under the server's
-- own cgroup, so nothing escapes the limits dtlocal itself runs under:
--
--   <dtlocal's cgroup>/dtlocal-<server pid>/<sandbox id>
--
-- The launcher joins the sandbox's group before it creates any namespace
-- (`dtlua-sandbox run --cgroup DIR`, doc/sandbox.md), so init, the toolbox
-- daemon and everything started inside are in it. Limits:
--   cpu     the sandbox's `cpu` cores of CPU time per period (CFS bandwidth:
--           v1 cpu.cfs_quota_us / cpu.cfs_period_us, v2 cpu.max)
--   memory  `memory` GiB (v1 memory.limit_in_bytes, and memsw the same when
--           swap accounting is on; v2 memory.max, memory.swap.max 0): no swap
--           beyond it. Page cache counts, and is reclaimed at the limit.
--   pids    M.PIDS_MAX tasks (processes and threads); and the server's
--           own group dtlocal-<pid> gets M.server_pids_max() for all its
--           sandboxes together, so that several fork bombs cannot use up
--           the host's pids
--   disk    not enforced: a sandbox writes into overlay upper dirs on the
--           state dir's file system, which would need project quotas
--
-- On v1 each sandbox is also put in a group of the freezer hierarchy (when
-- it is mounted), so that kill() can stop its processes before killing
-- them; it limits nothing and is not in the report.
--
-- Both cgroup v2 (the unified hierarchy, when cpu/memory/pids are in our
-- cgroup's cgroup.controllers) and v1 (one mount per controller) are
-- supported, per controller; what is not available or not writable is
-- reported as not enforced, with the reason.
--
--   local info = cgroups.detect()  -- { version =, enforced = {cpu=,memory=,pids=,disk=},
--                                  --   why = {...}, hier = {cpu = {version=, dir=}, ...} }
--   local cg = cgroups.new{ log = }  -- detect + create this server's group
--   cg:report()                    -- "cpu, memory, pids enforced (cgroup v1); disk not ..."
--   cg:active()                    -- whether anything is enforced
--   local dirs = cg:create(id, { cpu = 1, memory = 1 })   -- for --cgroup
--   cg:update(id, { cpu = 2 })     -- resize, live
--   cg:saturated(id)               -- whether the sandbox is at its task limit
--   cg:limit_hits(id)              -- how often it ran into it (pids.events)
--   cg:kill(id)                    -- freeze, SIGKILL everything inside, thaw
--   cg:remove(id)                  -- once the sandbox's processes are gone
--   cg:sweep()                     -- groups of dead servers (what is in them killed)
--   cg:close()                     -- at shutdown: every group of this server
--
-- create and update raise a plain error naming the file that could not be
-- written; remove and close only log (nothing to undo).
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local fs = require "dtlocal.fs"

local type, pairs, ipairs, tostring, tonumber, setmetatable, error, select, io, os, string, table, math =
  type, pairs, ipairs, tostring, tonumber, setmetatable, error, select, io, os, string, table, math
local format, concat = string.format, table.concat
local util = core.util

local M = {}

M.CONTROLLERS = { "cpu", "memory", "pids" }
M.CPU_PERIOD = 100000          -- µs: the CFS default period
M.GIB = 1024 * 1024 * 1024
-- Tasks per sandbox (threads count: a JVM or a browser has hundreds). It
-- stops a fork bomb long before the host's pid space (kernel.pid_max is
-- 32768 on many hosts) or threads-max runs out for every other sandbox and
-- the host, and no real workload of a 1..4-core sandbox comes near it.
M.PIDS_MAX = 4096
M.DISK_WHY = "no quota on the overlay upper dir"
-- How long remove() retries an rmdir that is busy: a task that has just
-- exited may still be counted in its group for a moment.
M.REMOVE_WAIT = 2
-- How long kill() goes on killing what is in a group before it gives up.
M.KILL_WAIT = 5
-- How long sweep() retries a dead server's group that is busy (its
-- processes, killed, are still exiting), with backoff.
M.SWEEP_WAIT = 10
-- The share of the host's task space (the smaller of kernel.pid_max and
-- kernel.threads-max) that all the sandboxes of one server may hold
-- together: the rest stays for the host, whatever they do.
M.SERVER_PIDS_SHARE = 0.5
-- A sandbox holding at least this share of its own task limit is treated
-- as a runaway (a fork bomb) by saturated(): it cannot be stopped
-- gracefully in any bounded time, since its daemon competes with
-- thousands of tasks for the sandbox's CPU quota.
M.SATURATED = 0.9

---------------------------------------------------------------------------
-- Files
---------------------------------------------------------------------------

local read_file = fs.read_file

-- Write one value to a cgroup file: one write(2), whose error (EINVAL,
-- EBUSY, ...) shows at close. Returns true or nil, message, errno.
local function write_file(path, value)
  local f, msg, errno = io.open(path, "wb")
  if not f then return nil, msg, errno end
  local ok, wmsg, werr = f:write(value)
  local cok, cmsg, cerr = f:close()
  if not ok then return nil, path .. ": " .. tostring(wmsg), werr end
  if not cok then return nil, path .. ": " .. tostring(cmsg), cerr end
  return true
end

local EBUSY, ENOENT = 16, 2   -- errno values of rmdir

local function exists(path)
  return util.stat(path) ~= nil
end

-- Octal escapes of /proc/self/mountinfo ("\040" is a space).
local function unescape(s)
  return (s:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end))
end

---------------------------------------------------------------------------
-- Where the hierarchies are (pure: text in, tables out)
---------------------------------------------------------------------------

--- Parse /proc/PID/cgroup: { v2 = "/path" or nil, v1 = { controller = "/path" } }.
-- v1 lines are "ID:ctrl1,ctrl2:/path" (named hierarchies such as
-- "name=systemd" are kept under their name); the v2 line is "0::/path".
function M.parse_proc_cgroup(text)
  local out = { v1 = {} }
  for line in (text or ""):gmatch("[^\n]+") do
    local id, ctrls, path = line:match("^(%d+):([^:]*):(.*)$")
    if id then
      if id == "0" and ctrls == "" then
        out.v2 = path
      else
        for c in ctrls:gmatch("[^,]+") do out.v1[c] = path end
      end
    end
  end
  return out
end

--- Parse /proc/PID/mountinfo's cgroup mounts: a list of { root =,
-- mountpoint =, fstype = "cgroup"|"cgroup2", ro = bool, options = {opt = true} }
-- (options: the super options, which name a v1 mount's controllers).
function M.parse_mountinfo(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local left, right = line:match("^(.-) %- (.*)$")
    if left then
      local f = {}
      for w in left:gmatch("%S+") do f[#f + 1] = w end
      local fstype, _, super = right:match("^(%S+) (%S+) (%S+)")
      if (fstype == "cgroup" or fstype == "cgroup2") and f[5] then
        local m = { root = unescape(f[4]), mountpoint = unescape(f[5]), fstype = fstype,
                    ro = false, options = {} }
        for o in (f[6] or ""):gmatch("[^,]+") do if o == "ro" then m.ro = true end end
        for o in (super or ""):gmatch("[^,]+") do m.options[o] = true end
        out[#out + 1] = m
      end
    end
  end
  return out
end

-- The directory of cgroup `path` in mount m, or nil when the mount does
-- not show it (its root is elsewhere in the hierarchy).
local function dir_in(m, path)
  local root = m.root
  local rel
  if root == "/" then
    rel = path
  elseif path == root then
    rel = ""
  elseif path:sub(1, #root + 1) == root .. "/" then
    rel = path:sub(#root + 1)
  else
    return nil
  end
  if rel == "/" then rel = "" end
  return m.mountpoint .. rel
end

--- Where our own cgroups are, from the texts of /proc/self/cgroup and
-- /proc/self/mountinfo: { v2 = { dir =, path =, ro = } or nil,
-- v1 = { controller = { dir =, path =, ro = } } } (controllers of
-- M.CONTROLLERS only).
function M.locate(proc_cgroup, mountinfo)
  local own = M.parse_proc_cgroup(proc_cgroup)
  local mounts = M.parse_mountinfo(mountinfo)
  local out = { v1 = {} }
  for _, m in ipairs(mounts) do
    if m.fstype == "cgroup2" and own.v2 and not out.v2 then
      local d = dir_in(m, own.v2)
      if d then out.v2 = { dir = d, path = own.v2, ro = m.ro } end
    elseif m.fstype == "cgroup" then
      for _, c in ipairs(M.CONTROLLERS) do
        if m.options[c] and own.v1[c] and not out.v1[c] then
          local d = dir_in(m, own.v1[c])
          if d then out.v1[c] = { dir = d, path = own.v1[c], ro = m.ro } end
        end
      end
    end
  end
  return out
end

---------------------------------------------------------------------------
-- Detection
---------------------------------------------------------------------------

-- The pids in a cgroup.procs.
local function procs(dir)
  local out = {}
  for p in (read_file(dir .. "/cgroup.procs") or ""):gmatch("%d+") do out[#out + 1] = p end
  return out
end

-- v2: whether the controllers `ctrls` can be enabled for the children of
-- our cgroup `base`. A non-root v2 cgroup that holds processes cannot have
-- any ("no internal processes"), so unless they are on already, or base is
-- the root (which has no cgroup.type), dtlocal must be alone in base: it
-- then moves itself into a leaf of its own first. Returns true, "move" when
-- it must; false, why when it cannot.
local function v2_delegable(base, ctrls)
  local on = {}
  for c in (read_file(base .. "/cgroup.subtree_control") or ""):gmatch("%S+") do on[c] = true end
  local all = true
  for _, c in ipairs(ctrls) do all = all and on[c] == true end
  if all or not exists(base .. "/cgroup.type") then return true end
  local inside = procs(base)
  if #inside == 1 and inside[1] == tostring(util.getpid()) then return true, "move" end
  return false, format("cgroup v2: %s holds other processes, so its controllers cannot be "
    .. "enabled below it (run dtlocal in a cgroup of its own, e.g. `systemd-run --scope "
    .. "-p Delegate=yes dtlocal serve`)", base)
end

-- Whether we may create groups in dir: not a read-only mount, and root
-- or the owner of a writable dir. (new() then really tries.)
local function writable(h)
  if h.ro then return false, h.dir .. " is on a read-only mount" end
  local st = util.stat(h.dir, true)
  if not st or st.type ~= "directory" then return false, h.dir .. " is not a directory" end
  local uid = util.getuid()
  if uid == 0 then return true end
  if st.uid == uid and st.mode & 128 ~= 0 then return true end
  return false, format("%s is not writable by dtlocal (uid %d)", h.dir, uid)
end

--- What this machine allows, without changing anything. opts (for specs of
-- the parsing): proc_cgroup, mountinfo (texts). Returns { version = 1, 2 or
-- "1+2" (nil when nothing), enforced = { cpu =, memory =, pids =, disk = false },
-- why = { resource = "reason it is not enforced" }, hier = { controller =
-- { version =, dir = } } }.
function M.detect(opts)
  opts = opts or {}
  local loc = M.locate(opts.proc_cgroup or read_file("/proc/self/cgroup"),
                       opts.mountinfo or read_file("/proc/self/mountinfo"))
  local info = { enforced = { disk = false }, why = { disk = M.DISK_WHY }, hier = {} }
  local v2_ctrls = {}
  if loc.v2 then
    for c in (read_file(loc.v2.dir .. "/cgroup.controllers") or ""):gmatch("%S+") do v2_ctrls[c] = true end
  end
  local versions = {}
  local v2_ok, v2_why = true, nil
  if loc.v2 then
    local wanted = {}
    for _, c in ipairs(M.CONTROLLERS) do if v2_ctrls[c] then wanted[#wanted + 1] = c end end
    if #wanted > 0 then v2_ok, v2_why = v2_delegable(loc.v2.dir, wanted) end
  end
  for _, c in ipairs(M.CONTROLLERS) do
    local h
    if v2_ctrls[c] then
      h = { version = 2, dir = loc.v2.dir, ro = loc.v2.ro }
    elseif loc.v1[c] then
      h = { version = 1, dir = loc.v1[c].dir, ro = loc.v1[c].ro }
    end
    if not h then
      info.enforced[c] = false
      info.why[c] = format("no cgroup hierarchy with the %s controller", c)
    else
      local ok, why = writable(h)
      if ok and h.version == 2 and not v2_ok then ok, why = false, v2_why end
      info.enforced[c] = ok
      if ok then
        info.hier[c] = { version = h.version, dir = h.dir }
        versions[h.version] = true
      else
        info.why[c] = why
      end
    end
  end
  if versions[1] and versions[2] then info.version = "1+2"
  else info.version = versions[2] and 2 or versions[1] and 1 or nil end
  return info
end

--- The one-line report of a detection (or of a manager's state):
-- "cpu, memory, pids enforced (cgroup v1); disk not enforced (why)".
function M.report(info)
  local on, off, reasons = {}, {}, {}
  for _, r in ipairs({ "cpu", "memory", "pids", "disk" }) do
    if info.enforced[r] then on[#on + 1] = r else off[#off + 1] = r end
  end
  local parts = {}
  if #on > 0 then
    parts[#parts + 1] = format("%s enforced (cgroup v%s)", concat(on, ", "), tostring(info.version))
  end
  -- resources with the same reason are named together
  for _, r in ipairs(off) do
    local why = info.why[r] or "unknown"
    local found
    for _, g in ipairs(reasons) do
      if g.why == why then g.names[#g.names + 1] = r; found = true end
    end
    if not found then reasons[#reasons + 1] = { why = why, names = { r } } end
  end
  for _, g in ipairs(reasons) do
    parts[#parts + 1] = format("%s not enforced (%s)", concat(g.names, ", "), g.why)
  end
  return concat(parts, "; ")
end

---------------------------------------------------------------------------
-- The manager
---------------------------------------------------------------------------

local Cgroups = {}
Cgroups.__index = Cgroups
Cgroups.__name = "dtlocal.Cgroups"

-- The file that must exist in a group for a controller's limit to work
-- (a v1 kernel without CFS bandwidth control has no cpu.cfs_quota_us).
local KEY_FILE = {
  [1] = { cpu = "cpu.cfs_quota_us", memory = "memory.limit_in_bytes", pids = "pids.max" },
  [2] = { cpu = "cpu.max", memory = "memory.max", pids = "pids.max" },
}

-- v2: enable `ctrls` for the children of dir (cgroup.subtree_control).
local function enable_subtree(dir, ctrls)
  local words = {}
  for _, c in ipairs(ctrls) do words[#words + 1] = "+" .. c end
  return write_file(dir .. "/cgroup.subtree_control", concat(words, " "))
end

--- Detect, then create this server's group in every usable hierarchy
-- (dtlocal-<pid> under our own cgroup). A controller whose group cannot
-- be made is not enforced, with the reason; nothing raises. opts: log,
-- detected (a detect() result to use instead of detecting).
function M.new(opts)
  opts = opts or {}
  local info = opts.detected or M.detect()
  local self = setmetatable({
    log = opts.log or function() end,
    version = info.version,
    enforced = {}, why = {},
    name = "dtlocal-" .. util.getpid(),
    groups = {},         -- { version =, base =, dir =, controllers = {...} } per hierarchy
  }, Cgroups)
  for k, v in pairs(info.enforced) do self.enforced[k] = v end
  for k, v in pairs(info.why) do self.why[k] = v end
  -- controllers sharing a hierarchy (v2, or v1 "cpu,cpuacct") share a group
  local by_dir = {}
  for _, c in ipairs(M.CONTROLLERS) do
    local h = info.hier[c]
    if h then
      local g = by_dir[h.dir]
      if not g then
        g = { version = h.version, base = h.dir, dir = h.dir .. "/" .. self.name, controllers = {} }
        by_dir[h.dir] = g
        self.groups[#self.groups + 1] = g
      end
      g.controllers[#g.controllers + 1] = c
    end
  end
  local kept = {}
  for _, g in ipairs(self.groups) do
    local ok, why = self:make_instance_group(g)
    if ok then
      -- the controllers whose limit file is there
      local have = {}
      for _, c in ipairs(g.controllers) do
        if exists(g.dir .. "/" .. KEY_FILE[g.version][c]) then
          have[#have + 1] = c
        else
          self.enforced[c] = false
          self.why[c] = format("%s has no %s", g.dir, KEY_FILE[g.version][c])
        end
      end
      g.controllers = have
      if #have > 0 then kept[#kept + 1] = g else self:remove_instance_group(g) end
    else
      for _, c in ipairs(g.controllers) do
        self.enforced[c] = false
        self.why[c] = why
      end
    end
  end
  self.groups = kept
  local versions = {}
  for _, g in ipairs(kept) do versions[g.version] = true end
  if versions[1] and versions[2] then self.version = "1+2"
  else self.version = versions[2] and 2 or versions[1] and 1 or nil end
  for _, g in ipairs(kept) do
    for _, c in ipairs(g.controllers) do
      if c == "pids" then
        local max = M.server_pids_max()
        local ok, msg = write_file(g.dir .. "/pids.max", tostring(max))
        if not ok then self.log("cgroups: cannot limit this server's tasks to %d: %s", max, tostring(msg)) end
      end
    end
  end
  -- v1: a freezer group beside the others, to stop a sandbox's processes
  -- before killing them (v2 groups have cgroup.freeze of their own). Not a
  -- resource: without it kill() only loops longer.
  if self:active() and not versions[2] then
    local fz = opts.freezer
    if fz == nil then
      local loc = M.locate_freezer(read_file("/proc/self/cgroup"), read_file("/proc/self/mountinfo"))
      fz = loc and not loc.ro and loc.dir
    end
    if fz then
      local g = { version = 1, base = fz, dir = fz .. "/" .. self.name, controllers = {}, freezer = true }
      local ok, _, code = util.mkdir(g.dir, 493)
      if ok or code == "EEXIST" then self.freezer = g end
    end
  end
  return self
end

--- The task limit of a server's group (all its sandboxes together):
-- M.SERVER_PIDS_SHARE of the smaller of kernel.pid_max and
-- kernel.threads-max, and never less than one sandbox's M.PIDS_MAX. opts
-- (for specs): pid_max, threads_max.
function M.server_pids_max(opts)
  opts = opts or {}
  local pid_max = opts.pid_max or tonumber(read_file("/proc/sys/kernel/pid_max") or "") or 32768
  local threads = opts.threads_max or tonumber(read_file("/proc/sys/kernel/threads-max") or "") or pid_max
  return math.max(M.PIDS_MAX, math.floor(math.min(pid_max, threads) * M.SERVER_PIDS_SHARE))
end

--- Where our cgroup is in the v1 freezer hierarchy: { dir =, ro = } or nil.
function M.locate_freezer(proc_cgroup, mountinfo)
  local own = M.parse_proc_cgroup(proc_cgroup)
  if not own.v1.freezer then return nil end
  for _, m in ipairs(M.parse_mountinfo(mountinfo)) do
    if m.fstype == "cgroup" and m.options.freezer then
      local d = dir_in(m, own.v1.freezer)
      if d then return { dir = d, ro = m.ro } end
    end
  end
  return nil
end

-- Every group of this server: those of the limits, and the freezer's.
function Cgroups:all_groups()
  local out = {}
  for _, g in ipairs(self.groups) do out[#out + 1] = g end
  if self.freezer then out[#out + 1] = self.freezer end
  return out
end

--- Create g.dir (the server's group). v2 also needs the controllers enabled
-- for the children of our own cgroup and of the new group; a non-root v2
-- cgroup that holds processes cannot enable them ("no internal processes"),
-- so when dtlocal is alone in its cgroup it moves itself into a leaf of its
-- own (<cgroup>/dtlocal-<pid>.server) first, as delegation expects.
function Cgroups:make_instance_group(g)
  local ok, msg, code = util.mkdir(g.dir, 493)   -- 0755
  if not ok and code ~= "EEXIST" then
    return false, format("cannot create %s: %s", g.dir, tostring(msg))
  end
  if g.version ~= 2 then return true end
  local can, how = v2_delegable(g.base, g.controllers)
  if not can then
    self:remove_instance_group(g)
    return false, how
  end
  local eok, emsg = true, nil
  if how == "move" then
    local leaf = g.base .. "/" .. self.name .. ".server"
    local lok, lmsg, lcode = util.mkdir(leaf, 493)
    if lok or lcode == "EEXIST" then
      eok, emsg = write_file(leaf .. "/cgroup.procs", tostring(util.getpid()))
      if eok then g.server_leaf = leaf end
    else
      eok, emsg = false, format("cannot create %s: %s", leaf, tostring(lmsg))
    end
  end
  if eok then eok, emsg = enable_subtree(g.base, g.controllers) end
  if eok then eok, emsg = enable_subtree(g.dir, g.controllers) end
  if not eok then
    self:remove_instance_group(g)
    return false, "cgroup v2: cannot enable " .. concat(g.controllers, ", ") .. ": " .. tostring(emsg)
  end
  return true
end

--- Remove g.dir (and, v2, go back to our own cgroup when we left it).
function Cgroups:remove_instance_group(g)
  local ok, msg = os.remove(g.dir)
  if not ok and util.stat(g.dir) then self.log("cgroups: cannot remove %s: %s", g.dir, tostring(msg)) end
  if g.server_leaf then
    -- back into our cgroup: only possible once its controllers are off
    -- again (a cgroup with controllers enabled holds no processes)
    local words = {}
    for _, c in ipairs(g.controllers) do words[#words + 1] = "-" .. c end
    write_file(g.base .. "/cgroup.subtree_control", concat(words, " "))
    if write_file(g.base .. "/cgroup.procs", tostring(util.getpid())) then
      os.remove(g.server_leaf)
      g.server_leaf = nil
    end
  end
end

--- Whether any resource is enforced.
function Cgroups:active()
  return #self.groups > 0
end

--- The report line (see M.report).
function Cgroups:report()
  return M.report(self)
end

local function check_id(id)
  if type(id) ~= "string" or not id:match("^[%w][%w%-_.]*$") or #id > 128 then
    error("cgroups: bad sandbox id " .. tostring(id), 2)
  end
end

-- Write the limits of `limits` (cpu cores, memory GiB) into group dir of
-- hierarchy g; pids always. Raises a plain error naming the file.
local function apply(g, dir, limits, what)
  local function put(file, value)
    local ok, msg = write_file(dir .. "/" .. file, value)
    if not ok then error(format("cannot set the %s limit of sandbox %s: %s", what.res, what.id, msg), 0) end
  end
  for _, c in ipairs(g.controllers) do
    what.res = c
    if c == "cpu" and limits.cpu then
      local quota = math.tointeger(limits.cpu * M.CPU_PERIOD)
      if g.version == 2 then
        put("cpu.max", format("%d %d", quota, M.CPU_PERIOD))
      else
        put("cpu.cfs_period_us", tostring(M.CPU_PERIOD))
        put("cpu.cfs_quota_us", tostring(quota))
      end
    elseif c == "memory" and limits.memory then
      local bytes = math.tointeger(limits.memory * M.GIB)
      if g.version == 2 then
        put("memory.max", tostring(bytes))
        if exists(dir .. "/memory.swap.max") then put("memory.swap.max", "0") end
      elseif exists(dir .. "/memory.memsw.limit_in_bytes") then
        -- memory+swap must stay >= memory: raise it first when growing,
        -- lower it last when shrinking
        local cur = tonumber(read_file(dir .. "/memory.limit_in_bytes") or "")
        if cur and bytes >= cur then
          put("memory.memsw.limit_in_bytes", tostring(bytes))
          put("memory.limit_in_bytes", tostring(bytes))
        else
          put("memory.limit_in_bytes", tostring(bytes))
          put("memory.memsw.limit_in_bytes", tostring(bytes))
        end
      else
        put("memory.limit_in_bytes", tostring(bytes))
      end
    elseif c == "pids" and limits.pids then
      put("pids.max", tostring(limits.pids))
    end
  end
end

--- The groups of sandbox `id`, created (or reused) with `limits` ({ cpu =
-- cores, memory = GiB }); returns the list of their directories, for the
-- launcher's --cgroup. Raises a plain error when a group cannot be made or
-- a limit cannot be set (an unenforced sandbox must not start while the
-- server reports enforcement). Empty when nothing is enforced.
function Cgroups:create(id, limits)
  check_id(id)
  local dirs = {}
  if not self:active() then return dirs end
  local l = { cpu = limits.cpu, memory = limits.memory, pids = M.PIDS_MAX }
  for _, g in ipairs(self.groups) do
    local dir = g.dir .. "/" .. id
    local ok, msg, code = util.mkdir(dir, 493)
    if not ok and code ~= "EEXIST" then
      error(format("cannot create the cgroup of sandbox %s: %s: %s", id, dir, tostring(msg)), 0)
    end
    apply(g, dir, l, { id = id })
    dirs[#dirs + 1] = dir
  end
  if self.freezer then
    local dir = self.freezer.dir .. "/" .. id
    local ok, _, code = util.mkdir(dir, 493)
    -- a group left frozen by a kill that gave up would stop the new launcher
    if ok or code == "EEXIST" then
      write_file(dir .. "/freezer.state", "THAWED")
      dirs[#dirs + 1] = dir
    end
  end
  return dirs
end

--- Change the cpu and/or memory limit of sandbox `id` (running or not):
-- limits { cpu =, memory = }. Raises a plain error when it cannot.
function Cgroups:update(id, limits)
  check_id(id)
  if not self:active() then return end
  for _, g in ipairs(self.groups) do
    local dir = g.dir .. "/" .. id
    if not util.stat(dir) then error(format("sandbox %s has no cgroup %s", id, dir), 0) end
    apply(g, dir, { cpu = limits.cpu, memory = limits.memory }, { id = id })
  end
end

-- rmdir, retried while busy (a task that just exited is still counted for
-- a moment), with backoff from 10 ms up to 0.5 s between tries; true when
-- gone. before_retry(), when given, runs before each retry (to kill again).
local function rmdir(dir, wait, before_retry)
  local deadline = core.now() + wait
  local pause = 0.01
  while true do
    local ok, msg, errno = os.remove(dir)
    if ok or errno == ENOENT then return true end   -- gone already
    if errno ~= EBUSY or core.now() > deadline then return nil, msg end
    scheduler.sleep(pause)
    pause = math.min(pause * 2, 0.5)
    if before_retry then before_retry() end
  end
end

---------------------------------------------------------------------------
-- Killing everything in a group
---------------------------------------------------------------------------
-- Stopping a sandbox's launcher ends its init, and the kernel then kills
-- the rest of its PID namespace; but a sandbox that forks as fast as it
-- can (a fork bomb at its task limit) shares its CPU quota among thousands
-- of tasks, so its daemon's graceful exit and the kernel's teardown crawl
-- (seconds to tens of seconds). Instead, with the group's processes as
-- the unit: forks are refused (pids.max 0), the group is frozen (v2
-- cgroup.freeze, or the v1 freezer group), every task gets SIGKILL
-- (frozen tasks cannot fork or exit, so the list read is complete and no
-- pid in it is reused), then the group is thawed and the killed tasks
-- exit. v2's cgroup.kill does all of that in one write where the kernel
-- has it. Without a freezer the kill repeats until the group is empty
-- (pids.max 0 still keeps anything new from appearing).

-- SIGKILL to pids (kill(1) with all of them: the core kills only its own
-- children). Waits for kill(1), not for the processes; kill(1) fails for
-- a pid that is gone already, which is what we want, so its status is not
-- looked at.
local function sigkill(pids)
  if #pids == 0 then return end
  local argv = { "kill", "-KILL" }
  for _, p in ipairs(pids) do argv[#argv + 1] = p end
  process.run(argv, { timeout = 10, stderr = "null", max_output = 1024 })
end

-- Freeze (true) or thaw (false) a group given by its per-hierarchy dirs;
-- returns whether it is frozen. v1 FREEZING becomes FROZEN once every task
-- has stopped; we wait for that at most 1 s (a killed task in
-- uninterruptible sleep may hold it back).
local FREEZERS = {
  -- the file written, its values, the file that says "frozen" and how
  { file = "cgroup.freeze", on = "1", off = "0", state = "cgroup.events", frozen = "frozen 1" },  -- v2
  { file = "freezer.state", on = "FROZEN", off = "THAWED", state = "freezer.state", frozen = "^FROZEN" },  -- v1
}

local function freeze(dirs, on)
  for _, dir in ipairs(dirs) do
    for _, fz in ipairs(FREEZERS) do
      if exists(dir .. "/" .. fz.file) then
        if not write_file(dir .. "/" .. fz.file, on and fz.on or fz.off) then return false end
        if not on then return false end
        local deadline = core.now() + 1
        repeat
          if (read_file(dir .. "/" .. fz.state) or ""):match(fz.frozen) then return true end
          scheduler.sleep(0.005)
        until core.now() > deadline
        return false
      end
    end
  end
  return false
end

--- Kill every process in the group given by its per-hierarchy dirs (the
-- same group in each hierarchy; any of them lists its processes), within
-- `wait` seconds (default M.KILL_WAIT). Returns true once no process is
-- left, or false.
function M.kill_group(dirs, wait)
  local deadline = core.now() + (wait or M.KILL_WAIT)
  local list
  for _, dir in ipairs(dirs) do
    if exists(dir .. "/cgroup.procs") then list = list or dir end
    -- no new task from now on (the group is going away; create() sets the
    -- limit again when a group is reused)
    if exists(dir .. "/pids.max") then write_file(dir .. "/pids.max", "0") end
    -- a killed task still runs its exit (unmapping its memory, closing its
    -- files) and that is charged to the group's CPU quota: thousands of
    -- them at 1 core take seconds, so the quota goes first
    if exists(dir .. "/cpu.max") then write_file(dir .. "/cpu.max", "max") end
    if exists(dir .. "/cpu.cfs_quota_us") then write_file(dir .. "/cpu.cfs_quota_us", "-1") end
  end
  if not list then return true end
  for _, dir in ipairs(dirs) do
    if exists(dir .. "/cgroup.kill") and write_file(dir .. "/cgroup.kill", "1") then break end
  end
  while true do
    local pids = procs(list)
    if #pids == 0 then return true end
    local frozen = freeze(dirs, true)
    -- frozen: the list is complete now
    if frozen then pids = procs(list) end
    sigkill(pids)
    if frozen then freeze(dirs, false) end
    if core.now() > deadline then return #procs(list) == 0 end
    scheduler.sleep(0.005)
  end
end

--- Whether sandbox `id` holds at least M.SATURATED of its task limit (a
-- fork bomb: see M.SATURATED).
function Cgroups:saturated(id)
  check_id(id)
  for _, g in ipairs(self.groups) do
    local dir = g.dir .. "/" .. id
    if exists(dir .. "/pids.current") then
      local cur = tonumber(read_file(dir .. "/pids.current") or "")
      local max = tonumber(read_file(dir .. "/pids.max") or "")
      return cur ~= nil and max ~= nil and max > 0 and cur >= max * M.SATURATED
    end
  end
  return false
end

--- How many times a task of sandbox `id` could not be created because of
-- its task limit (pids.events "max"); 0 when unknown.
function Cgroups:limit_hits(id)
  check_id(id)
  for _, g in ipairs(self.groups) do
    local dir = g.dir .. "/" .. id
    if exists(dir .. "/pids.events") then
      return tonumber((read_file(dir .. "/pids.events") or ""):match("max (%d+)")) or 0
    end
  end
  return 0
end

--- Kill every process of sandbox `id` (its launcher included): freeze,
-- SIGKILL, thaw, until none is left. Returns true when none is, else
-- false after logging.
function Cgroups:kill(id)
  check_id(id)
  local dirs = {}
  for _, g in ipairs(self:all_groups()) do
    local dir = g.dir .. "/" .. id
    if exists(dir) then dirs[#dirs + 1] = dir end
  end
  if #dirs == 0 then return true end
  if M.kill_group(dirs) then return true end
  self.log("sandbox %s: processes still in its cgroup after %g s of SIGKILL", id, M.KILL_WAIT)
  return false
end

--- Remove the groups of sandbox `id` once its processes are gone (the
-- launcher has been waited for). Returns true, or false after logging why.
function Cgroups:remove(id)
  check_id(id)
  local all = true
  for _, g in ipairs(self:all_groups()) do
    local dir = g.dir .. "/" .. id
    local ok, msg = rmdir(dir, M.REMOVE_WAIT)
    if not ok then
      all = false
      self.log("sandbox %s: cannot remove its cgroup: %s", id, tostring(msg))
    end
  end
  return all
end

-- The paths of the groups below dir, relative to it ("" for dir itself),
-- added to the set `seen` and the list `out`.
local function subgroups(dir, rel, seen, out)
  for _, sub in ipairs(util.readdir(dir .. rel) or {}) do
    if util.stat(dir .. rel .. "/" .. sub .. "/cgroup.procs") then
      subgroups(dir, rel .. "/" .. sub, seen, out)
    end
  end
  if not seen[rel] then seen[rel] = true; out[#out + 1] = rel end
  return out
end

--- Remove the groups of servers that are gone (dtlocal-<pid>, or v2's
-- dtlocal-<pid>.server, with no process <pid>), in each hierarchy we use
-- and the freezer's. Their processes belong to the dead server: what is
-- still in them is killed (M.kill_group, with all the hierarchies' dirs of
-- a group at once, so that its pids limit and freezer serve), and a group
-- that is busy (tasks still exiting) is retried with backoff for up to
-- M.SWEEP_WAIT seconds in all. Returns the list of groups that could not
-- be removed.
function Cgroups:sweep()
  local bases, dead, names = {}, {}, {}
  for _, g in ipairs(self:all_groups()) do
    bases[#bases + 1] = g.base
    for _, name in ipairs(util.readdir(g.base) or {}) do
      local pid = name:match("^dtlocal%-(%d+)$") or name:match("^dtlocal%-(%d+)%.server$")
      if pid and name ~= self.name and not dead[name] and not util.stat("/proc/" .. pid) then
        dead[name] = true
        names[#names + 1] = name
      end
    end
  end
  local left = {}
  local deadline = core.now() + M.SWEEP_WAIT
  for _, name in ipairs(names) do
    local seen, rels = {}, {}
    for _, base in ipairs(bases) do subgroups(base .. "/" .. name, "", seen, rels) end
    -- children before their parents, whichever hierarchy named them first
    table.sort(rels, function(a, b)
      local da, db = select(2, a:gsub("/", "")), select(2, b:gsub("/", ""))
      if da ~= db then return da > db end
      return a < b
    end)
    for _, rel in ipairs(rels) do
      local dirs = {}
      for _, base in ipairs(bases) do
        local dir = base .. "/" .. name .. rel
        if util.stat(dir) then dirs[#dirs + 1] = dir end
      end
      local killed = M.kill_group(dirs, math.max(0, deadline - core.now()))
      for _, dir in ipairs(dirs) do
        local ok, msg = rmdir(dir, math.max(0, deadline - core.now()),
                              function() M.kill_group(dirs, 0.1) end)
        if ok then
          self.log("cgroups: removed %s, left by a server that is gone", dir)
        else
          left[#left + 1] = dir
          self.log("cgroups: cannot remove %s, left by a server that is gone: %s%s", dir,
            tostring(msg), killed and "" or " (processes still in it)")
        end
      end
    end
  end
  return left
end

--- Remove every group of this server (at shutdown, after its sandboxes
-- were stopped): what is still in them is killed first.
function Cgroups:close()
  for _, g in ipairs(self:all_groups()) do
    for _, sub in ipairs(util.readdir(g.dir) or {}) do
      local dir = g.dir .. "/" .. sub
      if util.stat(dir .. "/cgroup.procs") then
        M.kill_group({ dir })
        local ok, msg = rmdir(dir, M.REMOVE_WAIT)
        if not ok then self.log("cgroups: cannot remove %s: %s", dir, tostring(msg)) end
      end
    end
    if g.freezer then os.remove(g.dir) else self:remove_instance_group(g) end
  end
  self.groups = {}
  self.freezer = nil
end

return M
