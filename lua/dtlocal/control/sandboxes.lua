--- dtlocal.control.sandboxes: the sandbox manager -- records, lifecycle and the
-- timers that stop, archive and delete idle sandboxes.
--
-- States as the API reports them (doc/protocol.md §3.2): a create goes
-- `creating -> started`; start `starting -> started`; stop
-- `stopping -> stopped` (an ephemeral sandbox then goes on to be deleted);
-- delete `destroying -> destroyed`, after which the sandbox is gone (404);
-- archive `stopped -> archived`; a sandbox whose init dies unexpectedly
-- goes to `error` (recoverable: `recover` starts it again).
--
-- One transition runs at a time per sandbox, as a task (`rt.op`). A request
-- that needs another transition meanwhile gets 409 `Sandbox state change in
-- progress`, except a repeat of the same one, which waits for it.
--
-- Every record change is saved at once (atomically) except activity, which
-- is kept in memory and saved by the sweeper (dtlocal.control.sweeper) every
-- few seconds. The warm pool (dtlocal.control.warm_pool) hands out
-- sandboxes started ahead of time.
--
--   local mgr = sandboxes.new{ store =, uids =, runner =, log =, minute = 60 }
--   mgr:load()                         -- records from disk; restarts started ones
--   local rec = mgr:create(values)     -- values from record.check_create
--   mgr:find(id_or_name) -> rec        -- raises 404
--   mgr:start(rec) / mgr:stop(rec, force) / mgr:delete(rec) / ...
--   mgr:touch(rec)                     -- activity (toolbox traffic)
--   mgr:shutdown()                     -- kill every sandbox process, keep states
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local dtlocal_http = require "dtlocal.http"
local errors = require "daytona.errors"
local record = require "dtlocal.control.record"
local runner_mod = require "dtlocal.control.runner"
local warm_pool = require "dtlocal.control.warm_pool"
local volumes_mod = require "dtlocal.control.volumes"
local leftovers = require "dtlocal.control.leftovers"
local snapshots_mod = require "dtlocal.control.snapshots"
local buildlog = require "dtlocal.control.buildlog"
local capture = require "dtlocal.control.capture"
local fs = require "dtlocal.fs"
local localserver = require "daytona.localserver"

local type, pairs, ipairs, tostring, setmetatable, pcall, error, next, io, os, math =
  type, pairs, ipairs, tostring, setmetatable, pcall, error, next, io, os, math
local format = string.format
local raise = dtlocal_http.raise

local M = {}

-- How long a request waits for a transition before answering with the
-- state reached so far (the API waits up to 30 s, doc/protocol.md §3.3).
M.WAIT = 30
-- Graceful stop: SIGTERM, then SIGKILL after this many seconds.
M.STOP_GRACE = 10

local Manager = {}
Manager.__index = Manager
Manager.__name = "dtlocal.SandboxManager"

--- A manager. opts: store (dtlocal.control.store), runner (dtlocal.control.runner
-- instance), uids (dtlocal.control.uids pool or nil when ranges are not used),
-- log (function(fmt, ...)), minute (seconds in an interval minute; 60
-- except in specs), volumes (function(id_or_name) -> volume record or nil),
-- warm (how many sandboxes to keep started ahead of time; default 0),
-- cgroups (a dtlocal.control.cgroups manager: cpu/memory/pids limits),
-- images (a dtlocal.images.store: sandboxes whose root is an image).
function M.new(opts)
  local mgr = setmetatable({
    store = assert(opts.store, "store"),
    images = opts.images,
    runner = assert(opts.runner, "runner"),
    cgroups = opts.cgroups,   -- dtlocal.control.cgroups manager, or nil
    uids = opts.uids,
    net = opts.net,   -- dtlocal.control.network (root), or nil: the host's network
    pasta = opts.pasta,   -- unprivileged: pasta's path (own networks), or nil
    log = opts.log or function() end,
    minute = opts.minute or 60,
    volumes = opts.volumes or function() return nil end,
    -- dtlocal.control.snapshots: what `snapshot` and `buildInfo` resolve to
    snapshots = opts.snapshots,
    by_id = {},
    rt = {},           -- id -> runtime state { inst, op, op_kind, conns, dirty, stopping }
    closing = false,
    -- on_event(name, rec, old_state): "sandbox.created" / "sandbox.state.updated"
    -- (dtlocal.control.events); must not raise
    on_event = opts.on_event or function() end,
  }, Manager)
  mgr.pool = warm_pool.new(mgr, opts.warm)
  return mgr
end

---------------------------------------------------------------------------
-- Lookup
---------------------------------------------------------------------------

--- The runtime state of a sandbox (made on first use): inst, op, conns...
function Manager:rtof(rec)
  local rt = self.rt[rec.id]
  if not rt then rt = { conns = 0 }; self.rt[rec.id] = rt end
  return rt
end

--- The record of a live sandbox by id or name, or nil.
function Manager:lookup(key)
  local rec = self.by_id[key]
  if rec then return rec end
  local found
  for _, r in pairs(self.by_id) do
    if r.name == key then
      -- a destroying sandbox gives its name up to a new one
      if r.state ~= "destroying" then return r end
      found = found or r
    end
  end
  return found
end

--- Like lookup, but raises 404 with the API's message.
function Manager:find(key)
  local rec = self:lookup(key)
  if not rec then raise(404, format("Sandbox with ID or name %s not found", key)) end
  return rec
end

--- Every live record (unordered).
function Manager:all()
  local out = {}
  for _, r in pairs(self.by_id) do out[#out + 1] = r end
  return out
end

---------------------------------------------------------------------------
-- Persistence and state
---------------------------------------------------------------------------

--- The path of a sandbox's record file (also its uid slot's owner).
function Manager:record_path(rec)
  return self.store:sandbox_dir(rec.id) .. "/sandbox.json"
end

--- Save a record now (activity included).
function Manager:save(rec)
  rec.lastActivityAt = record.iso(rec.dtlocal.activity_ms)
  self.store:save(rec)
  self:rtof(rec).dirty = false
end

--- Move a record to a state, stamp it, save it, log it.
function Manager:set_state(rec, state, reason)
  local old = rec.state
  local state_ms, updated, reason0, recoverable, desired =
    rec.dtlocal.state_ms, rec.updatedAt, rec.errorReason, rec.recoverable, rec.desiredState
  local now = record.now_ms()
  rec.state = state
  rec.updatedAt = record.iso(now)
  rec.dtlocal.state_ms = now
  if state == "error" then
    rec.errorReason = reason
    rec.recoverable = true
  elseif state == "build_failed" then
    -- the image could not be made: starting again cannot help
    rec.errorReason = reason
    rec.recoverable = false
  elseif state ~= "destroying" and state ~= "destroyed" then
    rec.errorReason = nil
    rec.recoverable = false
  end
  if state == "started" or state == "stopped" or state == "destroyed" or state == "archived" then
    rec.desiredState = state
  end
  -- a state change counts as activity (auto-stop starts counting again)
  local old_activity = rec.dtlocal.activity_ms
  rec.dtlocal.activity_ms = now
  if state ~= "destroyed" then
    local ok, err = pcall(self.save, self, rec)
    if not ok then
      -- not saved (a full disk): the sandbox stays in the state its record
      -- on disk has, and the caller gets the error
      rec.state, rec.dtlocal.state_ms, rec.dtlocal.activity_ms = old, state_ms, old_activity
      rec.updatedAt, rec.errorReason, rec.recoverable, rec.desiredState = updated, reason0, recoverable, desired
      error(err, 0)
    end
  end
  if old ~= state then
    self.log("sandbox %s: %s -> %s%s", rec.id, old or "-", state, reason and (" (" .. reason .. ")") or "")
    self.on_event("sandbox.state.updated", rec, old)
  end
end

--- Save a record changed in place (labels, intervals, settings).
function Manager:update(rec)
  rec.updatedAt = record.iso()
  self:save(rec)
end

--- Record activity: toolbox traffic resets the auto-stop timer.
function Manager:touch(rec)
  rec.dtlocal.activity_ms = record.now_ms()
  self:rtof(rec).dirty = true
end

--- A long-lived connection (WebSocket, streamed logs) keeps the sandbox
-- active while open: call with +1 when it opens and -1 when it closes.
function Manager:connection(rec, delta)
  local rt = self:rtof(rec)
  rt.conns = rt.conns + delta
  self:touch(rec)
end

---------------------------------------------------------------------------
-- Transitions
---------------------------------------------------------------------------

-- Wait for the running transition of rec, at most `seconds`.
local function wait_op(rt, seconds)
  local op = rt.op
  if not op or op:done() then return end
  local t <close> = core.timer(math.floor(seconds * 1000))
  while not op:done() and not t:done() do scheduler.wait(op, t) end
end

--- Run fn(self, rec, ...) as rec's transition `kind`; refuse (409) while
-- another one runs, join a running one of the same kind. Waits at most
-- M.WAIT seconds for it (0: do not wait).
function Manager:transition(rec, kind, wait, fn, ...)
  local rt = self:rtof(rec)
  if rt.op and not rt.op:done() then
    if rt.op_kind ~= kind then raise(409, "Sandbox state change in progress") end
  else
    local args = table.pack(...)
    rt.op_kind = kind
    rt.op = scheduler.spawn(function()
      local ok, err = pcall(fn, self, rec, table.unpack(args, 1, args.n))
      if not ok then
        if errors.is(err, errors.CancelledError) then error(err, 0) end
        self.log("sandbox %s: %s failed: %s", rec.id, kind, tostring(err))
        if self.by_id[rec.id] and rec.state ~= "destroyed" then
          pcall(self.set_state, self, rec, "error", kind .. " failed: " .. tostring(err))
        end
      end
    end)
    rt.op.observed = true
    rt.op.name = kind .. " " .. rec.id
  end
  if wait ~= 0 then wait_op(rt, wait or M.WAIT) end
end

--- The sandbox user for an image: its USER when that is daytona (or uid
-- 1000), else root (an image without USER runs as root, as in Docker).
function M.image_user(image)
  local u = (image.config and image.config.user or ""):match("^([^:]*)")
  if u == "daytona" or u == "1000" then return "daytona" end
  return "root"
end

--- What a sandbox on an image runs as its entrypoint (Daytona's daemon runs
-- it as the `entrypoint` session): its snapshot's entrypoint; nil on the
-- host's system or without a snapshot.
function Manager:entrypoint_of(rec, image)
  local id = rec.dtlocal.snapshot_id
  local snap = image and id and self.snapshots and self.snapshots.by_id and self.snapshots.by_id[id]
  local ep = snap and snap.entrypoint
  if type(ep) == "table" and #ep > 0 then return ep end
  return nil
end

--- The body of start/create: launch the sandbox and wait until its toolbox
-- daemon answers.
function Manager:do_start(rec)
  local rt = self:rtof(rec)
  local image
  if rec.dtlocal.image then
    image = self.images and self.images:image(rec.dtlocal.image)
    if not image then error(format("the sandbox's image %s is no longer in the image store", rec.dtlocal.image), 0) end
  end
  if self.uids and not rec.dtlocal.uid_slot then
    local slot, first = self.uids:claim(self:record_path(rec))
    if not slot then error(first, 0) end
    rec.dtlocal.uid_slot = slot
    rec.dtlocal.uid_first = first
    self:save(rec)
  end
  -- its firewall exceptions (blocked, allow list, link) are in place before
  -- its interface exists: they are keyed by the interface's name
  local net_arg
  if self.net and rec.dtlocal.uid_slot then
    local parent = rec.linkedSandboxId and self.by_id[rec.linkedSandboxId]
    -- restarted together (a server's start-up): the parent first
    local prt = parent and self.rt[parent.id]
    if prt and prt.op and prt.op ~= self:rtof(rec).op then wait_op(prt, M.WAIT) end
    if rec.linkedSandboxId and not (parent and parent.state == "started") then
      error("its linked sandbox " .. rec.linkedSandboxId .. " is not started", 0)
    end
    self.net:apply(rec, parent)
    net_arg = self.net:launch_arg(rec.dtlocal.uid_slot)
  end
  local d = rec.dtlocal
  if d.seed and not d.seeded then
    -- a sandbox from a snapshot of a sandbox on the host's system: its
    -- directory is filled from the snapshot before its first start
    capture.seed(self.snapshots.images, d.seed, self.store:sandbox_dir(rec.id), d.uid_first)
    d.seeded = true
    self:save(rec)
  elseif d.seed_dir and not d.seeded then
    -- a fork of a sandbox on the host's system: its copy, taken at the fork
    capture.seed_from_dir(d.seed_dir, self.store:sandbox_dir(rec.id), d.uid_first)
    d.seeded, d.seed_dir = true, nil
    self:save(rec)
  end
  -- the preview token rotates when the sandbox (re)starts (doc/protocol.md §3.3)
  rec.dtlocal.preview_token = record.token(32)
  local vols, migrating = {}, {}
  for _, v in ipairs(rec.volumes or {}) do
    local vol = self.volumes(v.volumeId)
    if not vol then error("volume " .. v.volumeId .. " no longer exists", 0) end
    -- a subpath is the launcher's to resolve and make (owned like the
    -- volume itself): sandboxes write into the volume, so only a resolution
    -- that follows no symlink may walk it (dtlua-sandbox --volume-beneath)
    local migrate = not migrating[vol] and volumes_mod.needs_migration(vol)
    if migrate then migrating[vol] = true end
    vols[#vols + 1] = { host = vol.dtlocal.data_dir, sub = v.subpath, path = v.mountPath, migrate = migrate }
  end
  local spec = {
    id = rec.id,
    dir = self.store:sandbox_dir(rec.id),
    uid_first = rec.dtlocal.uid_first,
    user = rec.user,
    env = rec.env,
    network_block_all = rec.networkBlockAll,
    net = net_arg,
    pasta = not net_arg and not rec.networkBlockAll and self.pasta or nil,
    volumes = vols,
    image = image,
    -- the snapshot's entrypoint, run by the daemon as its `entrypoint` session
    entrypoint = self:entrypoint_of(rec, image),
    -- the limits hold from the launcher's first instruction on (it joins
    -- these groups before anything else)
    cgroups = self.cgroups and self.cgroups:create(rec.id, { cpu = rec.cpu, memory = rec.memory }),
  }
  -- a sandbox whose previous launcher was just killed may hold its lock a
  -- moment longer (its init ends after the launcher): retry "busy" briefly
  for attempt = 1, 50 do
    local inst = self.runner:launch(spec)
    rt.inst = inst
    rt.stopping = false
    self:watch(rec, inst)
    -- remembered so that a server killed without cleaning up can end this
    -- launcher at its next start (see kill_stale)
    rec.dtlocal.pid = inst.pid
    local ok, err = pcall(inst.wait_ready, inst)
    -- its pasta too (unprivileged), for the same reason
    rec.dtlocal.pasta_pid = inst.pasta_pid
    if ok then
      for vol in pairs(migrating) do
        -- the files are migrated; a data dir left as it was only means
        -- another walk at the next start
        local mok, merr = pcall(volumes_mod.migrated, vol)
        if not mok then self.log("volume %s: %s", vol.id, tostring(merr)) end
      end
      break
    end
    if inst.exit_code ~= runner_mod.EXIT_BUSY or attempt == 50 then error(err, 0) end
    scheduler.sleep(0.05)
  end
  if self.net and rec.dtlocal.uid_slot then self:point_resolver(rec) end
  if self.net and rec.linkedSandboxId then
    -- names are a convenience over the link, which holds anyway (an image
    -- without sudo cannot have its /etc/hosts written): logged, not fatal
    local ok, err = pcall(self.link_hosts, self, rec)
    if not ok then self.log("sandbox %s: cannot write the link's /etc/hosts entries: %s", rec.id, tostring(err)) end
  end
  if rec.state == "creating" or rec.state == "starting" or rec.state == "restoring" then
    self:set_state(rec, "started")
  end
end

-- Run `script` as root in a started sandbox (sudo, through its daemon);
-- raises a plain error when it fails.
local function run_as_root(inst, script)
  local r, msg = require("daytona.runtime.http").request{
    url = inst.base_url .. "/process/execute", method = "POST",
    unix_socket = inst.unix_socket, peer_uids = inst.peer_uids,
    headers = { ["Content-Type"] = "application/json" },
    body = dtlocal_http.json.encode({ command = "sudo -n sh -c '" .. script .. "'", timeout = 20 }),
    timeout = 30,
  }
  if not r then error(msg, 0) end
  local body = r.status == 200 and dtlocal_http.json.decode(r.body or "")
  if type(body) ~= "table" or body.exitCode ~= 0 then
    error(format("its daemon answered %d: %s", r.status, tostring(type(body) == "table" and body.result or r.body)), 0)
  end
end

--- With the host's resolver on its loopback (dtlocal.control.network,
-- Net:link_up): the started sandbox's resolv.conf names its gateway
-- instead (DNATed to that resolver), unless it names another nameserver
-- (the sandbox's own choice, or a host with one off loopback). Logged,
-- not fatal (an image without sudo keeps its file).
function Manager:point_resolver(rec)
  local lok, line = pcall(self.net.link_up, self.net, rec.dtlocal.uid_slot,
    rec.domainAllowList ~= nil and rec.domainAllowList ~= "" and not rec.networkBlockAll)
  if not lok then
    self.log("sandbox %s: its DNS through its gateway will not work: %s", rec.id, tostring(line))
    return
  end
  local rt = self.rt[rec.id]
  if not (line and rt and rt.inst) then return end
  local ok, err = pcall(run_as_root, rt.inst, format([=[if [ ! -e /etc/resolv.conf ] || ! grep -qvE ]=]
    .. [=["^[[:space:]]*(nameserver[[:space:]]+(127\.|::1)|#|;|search|domain|options|$)" /etc/resolv.conf; ]=]
    .. [=[then rm -f /etc/resolv.conf && echo "%s" > /etc/resolv.conf; fi]=], line))
  if not ok then self.log("sandbox %s: cannot point its resolv.conf at its gateway: %s", rec.id, tostring(err)) end
end

-- The /etc/hosts line naming sandbox `rec` at its link address (its name
-- only when it is a plain host name: it goes into a shell command).
local function hosts_line(rec)
  local a = require("dtlocal.control.network").addrs(rec.dtlocal.uid_slot)
  local names = rec.id
  if type(rec.name) == "string" and rec.name ~= rec.id and rec.name:match("^[%w][%w%-%.]*$") and #rec.name <= 253 then
    names = rec.name .. " " .. rec.id
  end
  return format("%s %s # dtlocal link %s", a.sandbox, names, rec.id)
end

-- Replace sandbox `other`'s line in the /etc/hosts of the sandbox run by
-- inst (removing it when add is false).
local function hosts_entry(inst, other, add)
  local script = format([[sed -i "/ # dtlocal link %s\$/d" /etc/hosts]], other.id)
  if add then script = script .. format([[ && echo "%s" >> /etc/hosts]], hosts_line(other)) end
  run_as_root(inst, script)
end

--- A linked sandbox and its parent resolve each other by name and id: a
-- line for each in the other's /etc/hosts (the sandboxes' own files; their
-- root may change them, as it may change its whole network).
function Manager:link_hosts(child)
  local parent = self.by_id[child.linkedSandboxId]
  local crt, prt = self.rt[child.id], parent and self.rt[parent.id]
  if not (parent and crt and crt.inst and prt and prt.inst) then
    error("its linked sandbox " .. tostring(child.linkedSandboxId) .. " is not running", 0)
  end
  hosts_entry(crt.inst, parent, true)
  hosts_entry(prt.inst, child, true)
end

--- Watch a sandbox's init: if it ends without being asked to, the sandbox
-- is in error (recoverable).
function Manager:watch(rec, inst)
  local t = scheduler.spawn(function()
    local status = inst:wait_exit()
    local rt = self.rt[rec.id]
    if rt and rt.inst == inst then rt.inst = nil end
    if self.closing then return end
    if rec.dtlocal.spare and not (rt and (rt.stopping or rt.inst ~= nil)) then
      -- a warm sandbox that died: out of the pool, and its files go
      self.pool:drop(rec, "its init exited (" .. status .. ")")
      return
    end
    if not self.by_id[rec.id] then return end
    if rt and (rt.stopping or rt.inst ~= nil) then return end
    -- a transition under way (a start waiting for "ready") reports itself
    if rt and rt.op and not rt.op:done() then return end
    if rec.state == "started" or rec.state == "creating" or rec.state == "starting" then
      if self.cgroups then self.cgroups:remove(rec.id) end
      self:set_state(rec, "error", "the sandbox's init exited unexpectedly (" .. status .. ")")
    end
  end)
  t.observed = true
  t.name = "watch " .. rec.id
end

--- Stop the init of a sandbox (SIGTERM, SIGKILL after the grace period, or
-- SIGKILL at once when forced) and wait until it is gone, then kill
-- whatever is left in its cgroup and remove the group.
--
-- A sandbox that runs into its task limit (a fork bomb) gets no grace, or
-- loses the rest of it: its daemon shares the sandbox's CPU quota with
-- thousands of tasks, so a graceful exit, and the kernel's teardown of its
-- PID namespace once init is gone, take seconds to tens of seconds. Its
-- cgroup is frozen and everything in it (the launcher too) killed instead
-- (cgroups:kill), which takes a fraction of a second. After the launcher
-- has exited the same kill ends what the namespace's teardown has not
-- yet, so the group can go at once.
function Manager:kill(rec, force)
  local rt = self:rtof(rec)
  local inst = rt.inst
  local cg = self.cgroups
  if not inst then return end
  rt.stopping = true
  local grace = force and 0 or M.STOP_GRACE
  if grace > 0 and cg and cg:saturated(rec.id) then
    self.log("sandbox %s: at its task limit, killed without a grace period", rec.id)
    grace = 0
  end
  if grace == 0 then
    if cg then cg:kill(rec.id) end
    inst:stop(0)
  else
    local hits = cg and cg:limit_hits(rec.id)
    local stopper = scheduler.spawn(inst.stop, inst, grace)
    stopper.observed = true
    stopper.name = "stop " .. rec.id
    while not stopper:done() do
      local t <close> = core.timer(50)
      while not stopper:done() and not t:done() do scheduler.wait(stopper, t) end
      if cg and not stopper:done() and (cg:saturated(rec.id) or cg:limit_hits(rec.id) > hits) then
        self.log("sandbox %s: ran into its task limit while stopping, killed", rec.id)
        cg:kill(rec.id)
        hits = math.huge
      end
    end
    stopper:wait()
  end
  rt.inst = nil
  if cg then
    cg:kill(rec.id)
    cg:remove(rec.id)
  end
end

--- Create and start a sandbox from validated values (record.check_create).
-- Returns the record once started (or after M.WAIT seconds, or in error).
function Manager:create(c)
  if c.name then
    local other = self:lookup(c.name)
    if other and other.state ~= "destroying" then
      raise(409, format("Sandbox with name %s already exists", c.name))
    end
  end
  record.refuse_allow_list(c.networkAllowList, "networkAllowList", self.net ~= nil)
  record.refuse_allow_list(c.domainAllowList, "domainAllowList", self.net ~= nil)
  if c.linkedSandbox then
    -- a link network between a started parent and its children (one level)
    local parent = self:lookup(c.linkedSandbox)
    if not parent or parent.state == "destroying" then
      raise(400, format("linkedSandbox: sandbox %s not found", c.linkedSandbox))
    end
    if parent.linkedSandboxId then
      raise(400, format("linkedSandbox: chained links are not allowed (sandbox %s is linked to %s)",
        c.linkedSandbox, parent.linkedSandboxId))
    end
    if parent.state ~= "started" then
      raise(400, format("linkedSandbox: sandbox %s is %s; it must be started", c.linkedSandbox, parent.state))
    end
    c.linkedSandboxId = parent.id
  end
  for _, v in ipairs(c.volumes or {}) do
    local vol = self.volumes(v.volumeId)
    if not vol then raise(404, format("Volume with ID or name %s not found", v.volumeId)) end
    if vol.state ~= "ready" then raise(400, format("Volume %s is not ready (state %s)", v.volumeId, vol.state)) end
    v.volumeId = vol.id
  end
  self:resolve_snapshot(c)
  -- an image's USER when the caller named none (doc/dtlocal.md, "Images")
  if c.image and c.user == nil and self.images then
    local img = self.images:image(c.image)
    if img then c.user = M.image_user(img) end
  end
  local spare = self.pool:take(c)
  if spare then return spare end
  local id = record.uuid()
  local rec = record.new_record(c, id, record.now_ms())
  if c.linkedSandboxId then rec.linkedSandboxId = c.linkedSandboxId end
  local build = c.buildInfo and not c.image
  if build then
    rec.state = "pending_build"
    rec.dtlocal.user_named = c.user ~= nil
  end
  rec.dtlocal.build_log = c.buildInfo and true or nil
  self.by_id[id] = rec
  local ok, err = pcall(self.save, self, rec)
  if not ok then
    self.by_id[id] = nil
    error(err, 0)
  end
  if c.buildInfo and not build then
    -- a build made before: its log says so
    local log = buildlog.open(self:build_log_path(rec))
    log:line("Using the image built before for this definition (" .. c.buildInfo.snapshotRef .. ")")
    log:finish()
  end
  self.on_event("sandbox.created", rec)
  if build then
    -- answered at once in pending_build, as the API does, so that the SDKs
    -- stream the build log while the image is pulled or built
    self:transition(rec, "start", 0, self.do_build_start)
  else
    self:transition(rec, "start", nil, self.do_start)
  end
  return rec
end

--- What a create's `snapshot` or `buildInfo` runs on, resolved into `c`
-- (before anything is made): a built-in snapshot is the host's system
-- with its resources; a made one its image (c.image) and resources; a
-- buildInfo is checked (400 when it cannot be built here). Raises 400 as
-- the API does for a snapshot that does not exist or is not active.
function Manager:resolve_snapshot(c)
  local snaps = self.snapshots
  if not snaps then return end
  if c.buildInfo then
    snaps:check_build(c.buildInfo, "buildInfo")
    c.buildInfo.snapshotRef = snapshots_mod.build_ref(c.buildInfo)
    -- made before: created on that image at once, as the API does when a
    -- runner has the build (no pending_build)
    c.image = snaps:cached_build(c.buildInfo)
    return
  end
  -- a fork says what it runs on itself
  if not c.snapshot or c.image or c.seed or c.seed_dir then return end
  local s = snaps:for_sandbox(c.snapshot)
  -- the sandbox takes the snapshot's resources (the API's createFromSnapshot)
  c.cpu, c.memory, c.disk = s.cpu, s.mem, s.disk
  if not s.builtin then
    -- a snapshot of a sandbox on the host's system is a seed for its dir
    if s.dtlocal.seed then c.seed = s.dtlocal.image else c.image = s.dtlocal.image end
    c.snapshot_id = s.id
    c.snapshot = s.name
  end
end

--- Where a sandbox's build log is (beside its record; the sandbox cannot reach it).
function Manager:build_log_path(rec)
  return self.store:sandbox_dir(rec.id) .. "/build.log"
end

--- The body of a create from buildInfo: pull or build the image
-- (`building_snapshot`, the log in the sandbox's build log), then start it
-- as any other; a failure to make the image is `build_failed`.
function Manager:do_build_start(rec)
  if not rec.dtlocal.image then
    local rt = self:rtof(rec)
    local log = buildlog.open(self:build_log_path(rec))
    rt.build_log = log
    local ok, err = pcall(function()
      self:set_state(rec, "building_snapshot")
      local image = self.snapshots:resolve_build(rec.buildInfo, log)
      -- the image's USER when the create named none, as for a snapshot's image
      local img = self.images and self.images:image(image)
      if img and not rec.dtlocal.user_named then rec.user = M.image_user(img) end
      rec.dtlocal.image = image
      self:save(rec)
    end)
    if not ok then
      local why = dtlocal_http.is_http_error(err) and err.message or tostring(err)
      log:line("ERROR: " .. why)
      log:finish()
      if errors.is(err, errors.CancelledError) then error(err, 0) end
      self:set_state(rec, "build_failed", why)
      return
    end
    log:line("Starting the sandbox")
    log:finish()
  end
  if rec.state ~= "creating" then self:set_state(rec, "creating") end
  self:do_start(rec)
end

---------------------------------------------------------------------------
-- Snapshots of a sandbox, forks
---------------------------------------------------------------------------

-- A started or stopped sandbox with no transition under way; 409 otherwise.
local function capturable(self, rec, what)
  if rec.state ~= "started" and rec.state ~= "stopped" then
    raise(409, format("Sandbox is %s; %s needs a started or stopped sandbox", rec.state, what))
  end
  local rt = self:rtof(rec)
  if rt.op and not rt.op:done() then raise(409, "Sandbox state change in progress") end
  if not (self.snapshots and self.snapshots.images) then
    raise(400, "this dtlocal has no image store: " .. what .. " is not available")
  end
end

-- Capture rec's files into the image store (dtlocal.control.capture):
-- returns the image id and whether it is a seed (a sandbox on the host's
-- system).
function Manager:capture(rec, ref, log)
  local images = self.snapshots.images
  local dir = self.store:sandbox_dir(rec.id)
  if rec.dtlocal.image then
    local base = images:image(rec.dtlocal.image)
    if not base then error("the sandbox's image " .. rec.dtlocal.image .. " is no longer stored", 0) end
    -- the upper dir over an image's layers (doc/sandbox.md)
    return capture.image(images, rec, dir .. "/upper/image", base, ref, log).id, false
  end
  return capture.seed_image(images, rec, dir, log).id, true
end

--- Snapshot a sandbox's files under `name` (POST /sandbox/{id}/snapshot):
-- the snapshot is recorded at once (409 for a taken name), the sandbox is
-- `snapshotting` while its files are copied, then back in its state; the
-- snapshot goes `building` -> `active` (or `build_failed`).
function Manager:snapshot(rec, name)
  capturable(self, rec, "a snapshot")
  local prev = rec.state
  local done = false
  local snap = self.snapshots:create_from(
    { name = name, cpu = rec.cpu, memory = rec.memory, disk = rec.disk, from_sandbox = rec.id },
    function(log) return self:capture(rec, "dtlocal/snapshot/" .. name, log) end,
    function() done = true end)
  self:set_state(rec, "snapshotting")
  self:transition(rec, "snapshot", 0, function(mgr, r)
    local job = mgr.snapshots.jobs[snap.id]
    while not done and job and not job:done() do scheduler.wait(job) end
    if r.state == "snapshotting" then mgr:set_state(r, prev) end
  end)
  return rec
end

--- Fork a sandbox (POST /sandbox/{id}/fork): its files are captured (the
-- sandbox `forking` meanwhile), and a new sandbox with its settings starts
-- on them. Returns the new record (started, or on its way after M.WAIT).
function Manager:fork(rec, name)
  capturable(self, rec, "forking")
  if name then
    local other = self:lookup(name)
    if other and other.state ~= "destroying" then raise(409, format("Sandbox with name %s already exists", name)) end
  end
  local prev = rec.state
  self:set_state(rec, "forking")
  local image, seed_dir, failure
  local log = { line = function(_, l) self.log("sandbox %s: fork: %s", rec.id, l) end }
  self:transition(rec, "fork", 0, function(mgr, r)
    local ok, err = pcall(function()
      if r.dtlocal.image then
        image = mgr:capture(r, "dtlocal/fork/" .. r.id .. "/" .. record.uuid(), log)
      else
        -- on the host's system: one copy, moved into the fork's dir at its start
        seed_dir = capture.fork_files(mgr.snapshots.images, r, mgr.store:sandbox_dir(r.id), log)
      end
    end)
    if not ok then failure = err end
    -- the parent is as it was, whatever happened to the copy
    if r.state == "forking" then mgr:set_state(r, prev) end
  end)
  self:rtof(rec).op:wait()
  if not image and not seed_dir then raise(500, "cannot fork the sandbox: " .. tostring(failure)) end
  local c = {
    name = name, user = rec.user, env = record.copy(rec.env), labels = record.copy(rec.labels),
    public = rec.public, networkBlockAll = rec.networkBlockAll, cpu = rec.cpu, memory = rec.memory,
    disk = rec.disk, autoStopInterval = rec.autoStopInterval, autoArchiveInterval = rec.autoArchiveInterval,
    autoDeleteInterval = rec.autoDeleteInterval, volumes = record.copy(rec.volumes),
    snapshot = rec.snapshot, snapshot_id = rec.dtlocal.snapshot_id, fork_parent = rec.id,
  }
  if seed_dir then c.seed_dir = seed_dir else c.image, c.own_image = image, true end
  local ok, child = pcall(self.create, self, c)
  if not ok then
    if seed_dir then fs.remove_tree(seed_dir) else self.snapshots:release_image(image) end
    error(child, 0)
  end
  return child
end

---------------------------------------------------------------------------
-- Settings with rules of their own
---------------------------------------------------------------------------

--- Resize: `r` holds the validated new cpu, memory and/or disk. A started
-- sandbox may only grow its CPU and memory (applied to its cgroup at
-- once) and keeps its disk; a stopped one takes any size but a smaller
-- disk. Raises 409 in other states or during a transition, 400 against
-- the rules.
function Manager:resize(rec, r)
  local cpu, memory, disk = r.cpu, r.memory, r.disk
  local s = rec.state
  if s ~= "started" and s ~= "stopped" then
    raise(409, format("Sandbox is %s; resize needs a started or stopped sandbox", s))
  end
  local rt = self:rtof(rec)
  if rt.op and not rt.op:done() then raise(409, "Sandbox state change in progress") end
  if s == "started" then
    if disk then raise(400, "disk: the disk can only be resized while the sandbox is stopped") end
    if cpu and cpu < rec.cpu then raise(400, "cpu: a started sandbox can only grow its CPU") end
    if memory and memory < rec.memory then raise(400, "memory: a started sandbox can only grow its memory") end
  end
  if disk and disk < rec.disk then raise(400, "disk: the disk can only grow") end
  local cg = self.cgroups
  if s == "started" and cg and (cpu or memory) then
    local ok, err = pcall(cg.update, cg, rec.id, { cpu = cpu, memory = memory })
    if not ok then raise(500, "cannot apply the new limits: " .. tostring(err)) end
  end
  rec.cpu = cpu or rec.cpu
  rec.memory = memory or rec.memory
  rec.disk = disk or rec.disk
  self:update(rec)
end

--- Network settings: `n` holds the validated block_all (boolean),
-- allow_list and domain_allow_list ("" clears one). As root (own
-- networks) applied at once, started or not; else blocking can only
-- change while the sandbox is stopped (its network namespace is made when
-- it starts: 409 otherwise). As the docs say, blocking all or unblocking
-- clears the allow list, and an allow list unblocks.
function Manager:set_network(rec, n)
  local block, allow, domains = n.block_all, n.allow_list, n.domain_allow_list
  local old = { rec.networkBlockAll, rec.networkAllowList, rec.domainAllowList }
  if block ~= nil and block ~= rec.networkBlockAll and not self.net then
    if rec.state ~= "stopped" and rec.state ~= "archived" then
      raise(409, format("networkBlockAll can only change while the sandbox is stopped locally "
        .. "(it is %s); stop it, update, start it again", rec.state))
    end
  end
  if block ~= nil then
    rec.networkBlockAll = block
    rec.networkAllowList = nil
  end
  if allow ~= nil then
    rec.networkAllowList = allow ~= "" and allow or nil
    if allow ~= "" and block == nil then rec.networkBlockAll = false end
  end
  if domains ~= nil then rec.domainAllowList = domains ~= "" and domains or nil end
  if self.net and rec.dtlocal.uid_slot then
    -- at once, started or not (the rules are keyed by the interface name)
    local ok, err = pcall(self.net.apply, self.net, rec,
      rec.linkedSandboxId and self.by_id[rec.linkedSandboxId])
    if not ok then
      rec.networkBlockAll, rec.networkAllowList, rec.domainAllowList = old[1], old[2], old[3]
      raise(500, tostring(err))
    end
  end
  self:update(rec)
end

--- Start a stopped (or archived, or errored) sandbox; a started one is
-- returned as it is.
function Manager:start(rec)
  local s = rec.state
  if s == "started" then return rec end
  if s == "starting" or s == "creating" or s == "restoring" then
    self:transition(rec, "start", nil, self.do_start)
    return rec
  end
  if s ~= "stopped" and s ~= "archived" and s ~= "error" then
    raise(409, format("Sandbox is %s and cannot be started", s))
  end
  self:transition(rec, "start", nil, function(mgr, r)
    mgr:set_state(r, s == "archived" and "restoring" or "starting")
    mgr:do_start(r)
  end)
  return rec
end

--- Recover a sandbox in error: start it again, or (skip_start) only mark it stopped.
function Manager:recover(rec, skip_start)
  if rec.state ~= "error" then
    raise(409, format("Sandbox is %s; only a sandbox in error can be recovered", rec.state))
  end
  if skip_start then
    self:set_state(rec, "stopped")
    return rec
  end
  return self:start(rec)
end

--- The body of stop: kill, stopped, and for an ephemeral sandbox delete.
function Manager:do_stop(rec, force)
  if rec.state ~= "stopping" then self:set_state(rec, "stopping") end
  self:kill(rec, force)
  self:set_state(rec, "stopped")
  if rec.autoDeleteInterval == 0 then self:do_delete(rec) end
end

--- Stop a started sandbox (force: SIGKILL instead of SIGTERM). Waits for
-- the stop like the other transitions, at most `wait` seconds (default
-- M.WAIT; 0: not at all).
function Manager:stop(rec, force, wait)
  local s = rec.state
  if s == "stopped" then return rec end
  if s ~= "started" and s ~= "error" and s ~= "stopping" then
    raise(409, format("Sandbox is %s and cannot be stopped", s))
  end
  -- `stopping` is saved before anything happens, so that a stop that
  -- cannot be recorded (a full disk) fails with the reason and changes
  -- nothing, as delete does
  local rt = self:rtof(rec)
  if s ~= "stopping" and not (rt.op and not rt.op:done()) then self:set_state(rec, "stopping") end
  self:transition(rec, "stop", wait, self.do_stop, force)
  return rec
end

--- The body of delete: kill, remove the tree (record included), release
-- the uid slot, forget. If the files cannot be removed the sandbox ends in
-- error (its record written again), and a later delete tries again.
function Manager:do_delete(rec)
  if rec.state ~= "destroying" then self:set_state(rec, "destroying") end
  -- its linked children go with it (Daytona's linked sandboxes)
  for _, other in pairs(self.by_id) do
    if other.linkedSandboxId == rec.id and other.state ~= "destroying" then
      local ok, err = pcall(self.delete, self, other)
      if not ok then self.log("sandbox %s: cannot delete its linked sandbox %s: %s", rec.id, other.id, tostring(err)) end
    end
  end
  -- a child leaves its parent's /etc/hosts
  local parent = rec.linkedSandboxId and self.by_id[rec.linkedSandboxId]
  local prt = parent and self.rt[parent.id]
  if self.net and prt and prt.inst and rec.dtlocal.uid_slot then
    local ok, err = pcall(hosts_entry, prt.inst, rec, false)
    if not ok then self.log("sandbox %s: cannot update %s's /etc/hosts: %s", rec.id, parent.id, tostring(err)) end
  end
  self:kill(rec, true)
  self.runner:remove_tree(self.store:sandbox_dir(rec.id))
  if self.net then self.net:forget(rec) end
  if self.uids and rec.dtlocal.uid_slot then
    self.uids:release(rec.dtlocal.uid_slot, self:record_path(rec))
  end
  rec.state = "destroyed"
  -- a fork deleted before its first start: its copy goes too
  if rec.dtlocal.seed_dir then fs.remove_tree(rec.dtlocal.seed_dir) end
  if rec.dtlocal.own_image and self.snapshots then
    -- a fork's own image: gone with it, unless something else uses it
    self.by_id[rec.id] = nil
    self.snapshots:release_image(rec.dtlocal.image)
  end
  rec.desiredState = "destroyed"
  self.by_id[rec.id] = nil
  self.rt[rec.id] = nil
  self.log("sandbox %s: destroying -> destroyed", rec.id)
  self.on_event("sandbox.state.updated", rec, "destroying")
end

--- Delete a sandbox (any state but a transition in progress). Answers
-- with the record in `destroying`; it is gone (404) once the files are.
function Manager:delete(rec)
  local rt = self:rtof(rec)
  if rt.op and not rt.op:done() and rt.op_kind ~= "delete" then
    -- a start in progress may be cut short; anything else must finish first
    if rt.op_kind ~= "start" then raise(409, "Sandbox state change in progress") end
    rt.op:cancel()
    wait_op(rt, 5)
  end
  if rec.state ~= "destroying" then self:set_state(rec, "destroying") end
  self:transition(rec, "delete", 0, self.do_delete)
  return rec
end

--- Archive a stopped sandbox. Locally the files stay where they are; the
-- state is what changes (starting it again goes through `restoring`).
function Manager:archive(rec)
  if rec.state == "archived" then return rec end
  if rec.state ~= "stopped" then
    raise(409, format("Sandbox is %s; only a stopped sandbox can be archived", rec.state))
  end
  local rt = self:rtof(rec)
  if rt.op and not rt.op:done() then raise(409, "Sandbox state change in progress") end
  self:set_state(rec, "archived")
  return rec
end

--- Kill every sandbox process without changing the recorded states, so
-- that the next start-up starts the started ones again.
function Manager:shutdown()
  self.closing = true
  local tasks = {}
  for id, rt in pairs(self.rt) do
    if rt.op and not rt.op:done() then rt.op:cancel() end
    if rt.inst then
      local inst = rt.inst
      tasks[#tasks + 1] = function() inst:stop(2) end
    end
    local rec = self.by_id[id]
    if rec and rt.dirty then pcall(self.save, self, rec) end
  end
  if #tasks > 0 then pcall(scheduler.all, tasks) end
end

---------------------------------------------------------------------------
-- Start-up
---------------------------------------------------------------------------

local cmdline = localserver.cmdline

--- End the launcher a previous server left running for rec (it was killed
-- before it could stop its sandboxes): SIGKILL, which takes the whole
-- sandbox down (its init dies with the launcher), then wait until it is
-- gone. Only a process whose command line is this sandbox's launcher.
function Manager:kill_stale(rec)
  -- its pasta (unprivileged) outlives the sandbox: ended first
  if math.tointeger(rec.dtlocal.pasta_pid) then runner_mod.kill_pasta(rec.dtlocal.pasta_pid) end
  local pid = math.tointeger(rec.dtlocal.pid)
  if not pid or pid <= 1 then return end
  local cmd = cmdline(pid)
  local dir = self.store:sandbox_dir(rec.id)
  if not cmd or not cmd:find("dtlua-sandbox", 1, true) or not cmd:find(dir .. "\0", 1, true) then return end
  self.log("sandbox %s: ending launcher %d left by a previous server", rec.id, pid)
  fs.kill(pid, "KILL")
  local deadline = core.now() + 5
  while cmdline(pid) and core.now() < deadline do scheduler.sleep(0.01) end
end

--- Remove the socket link dirs of servers that are gone
-- (dtlocal.control.leftovers) in $TMPDIR and /tmp, where the runner makes them.
function Manager:sweep_leftovers()
  local seen = {}
  for _, tmp in ipairs({ os.getenv("TMPDIR") or "/tmp", "/tmp" }) do
    tmp = tmp:gsub("/+$", "")
    if tmp ~= "" and not seen[tmp] then
      seen[tmp] = true
      local ok, removed = pcall(leftovers.sweep_link_dirs, tmp,
                                { keep = self.runner.sockets or self.runner.links,
                                  state_dir = self.store.dir })
      if not ok then
        self.log("cannot sweep old socket link dirs in %s: %s", tmp, tostring(removed))
      else
        for _, d in ipairs(removed) do self.log("removed %s, left by a server that is gone", d) end
      end
    end
  end
end

--- Load the records from disk. Sandboxes recorded as started (or on their
-- way to it) are started again; interrupted stops end stopped; interrupted
-- deletes are finished. Returns the number of records and of restarts.
function Manager:load()
  local recs, warnings = self.store:load_all()
  for _, w in ipairs(warnings) do self.log("%s", w) end
  -- first, while the previous run's sandbox dirs are all there
  self:sweep_leftovers()
  local restart = {}
  for _, rec in ipairs(recs) do
    if type(rec.dtlocal) ~= "table" then rec.dtlocal = {} end
    local d = rec.dtlocal
    d.signed = type(d.signed) == "table" and d.signed or {}
    d.activity_ms = d.activity_ms or record.parse_iso(rec.lastActivityAt) or record.now_ms()
    d.state_ms = d.state_ms or record.parse_iso(rec.updatedAt) or record.now_ms()
    d.created_ms = d.created_ms or record.parse_iso(rec.createdAt) or record.now_ms()
    rec.env = rec.env or {}
    rec.labels = rec.labels or {}
    rec.volumes = rec.volumes or {}
    self:kill_stale(rec)
    if d.spare then
      -- a warm sandbox of the previous run: removed, the pool starts afresh
      self.pool:drop(rec, "left by the previous run")
      goto continue
    end
    self.by_id[rec.id] = rec
    if self.uids and d.uid_slot and not self.uids:keep(d.uid_slot, self:record_path(rec)) then
      -- another sandbox took the slot while this server was away: a new
      -- one is claimed at the next start
      self.log("sandbox %s: uid slot %d is taken by another sandbox; a new one will be used", rec.id, d.uid_slot)
      d.uid_slot, d.uid_first = nil, nil
    end
    local s = rec.state
    if s == "started" or s == "starting" or s == "creating" or s == "restoring"
      or s == "pending_build" or s == "building_snapshot" then
      restart[#restart + 1] = rec
    elseif s == "stopping" then
      self:set_state(rec, "stopped")
    elseif s == "destroying" then
      self:transition(rec, "delete", 0, self.do_delete)
    end
    ::continue::
  end
  -- the cgroups of a server killed without cleaning up (the launchers
  -- were ended above; their sandboxes' other processes may still be in
  -- them, and a busy group would hold a restarted sandbox back)
  if self.cgroups then self.cgroups:sweep() end
  for _, rec in ipairs(restart) do
    if rec.state == "started" then rec.state = "starting" end
    if rec.state == "pending_build" or rec.state == "building_snapshot" then
      self:transition(rec, "start", 0, self.do_build_start)
    else
      self:transition(rec, "start", 0, self.do_start)
    end
  end
  self.pool:refill()
  return #recs, #restart
end

return M
