--- dtlocal.control.warm_pool: sandboxes started ahead of time.
--
-- Starting a sandbox takes tens of milliseconds (namespaces, the overlay,
-- the daemon's start-up). With `warm = N` the manager keeps N sandboxes
-- started ahead of time with the settings of a plain create (user daytona,
-- no env, no volumes, the host network) and hands one out when a create
-- asks for nothing else, so such a create answers at once. A warm sandbox
-- is an ordinary started sandbox that no client has seen yet: its record
-- (marked `dtlocal.spare`) is not listed and cannot be looked up; given
-- out, it gets the create's id-independent fields (name, labels,
-- intervals, ...) and its own clocks start then. After a failure to warm a
-- sandbox, the pool waits WARM_RETRY seconds before trying again.
--
--   local pool = warm_pool.new(mgr, size)   -- mgr: the sandbox manager
--   pool:take(c) -> rec | nil   -- a started sandbox for create values c
--   pool:refill()               -- start more, in tasks, until size are ready
--   pool:drop(rec, why)         -- forget one and remove its files
local scheduler = require "daytona.runtime.scheduler"
local http = require "daytona.runtime.http"
local errors = require "daytona.errors"
local dtlocal_http = require "dtlocal.http"
local record = require "dtlocal.control.record"
local proxy = require "dtlocal.control.proxy"

local ipairs, pairs, pcall, error, tostring, next, setmetatable, table =
  ipairs, pairs, pcall, error, tostring, next, setmetatable, table
local format = string.format
local json = dtlocal_http.json

local M = {}

local Pool = { __name = "dtlocal.WarmPool" }
Pool.__index = Pool

--- A pool of `size` warm sandboxes for the manager `mgr` (none is started
-- before the first refill).
function M.new(mgr, size)
  return setmetatable({ mgr = mgr, size = size or 0, spares = {}, warming = 0 }, Pool)
end

M.RETRY = 30

-- Whether validated create values `c` can be served by a warm sandbox.
-- Its cgroup limits are those of the default resources, set when it started;
-- its env is handed to its daemon (set_env) when it is taken. An allow
-- list or a domain allow list (as root: enforced outside it, by the
-- firewall's sets and the DNS filter) is set when it is taken.
-- networkBlockAll starts a sandbox of its own (unprivileged it has no
-- network at all, and specs rely on it for a fresh sandbox).
local function plain(c)
  local d = record.DEFAULTS
  return c.image == nil and c.seed == nil and c.seed_dir == nil and c.buildInfo == nil   -- the host's system as it is
    and (c.user == nil or c.user == "daytona")
    and (c.volumes == nil or #c.volumes == 0) and not c.networkBlockAll
    and not c.linkedSandbox
    and (c.cpu == nil or c.cpu == d.cpu) and (c.memory == nil or c.memory == d.memory)
    and (c.disk == nil or c.disk == d.disk)
end

-- Give the daemon of a started sandbox process `inst` the sandbox's env:
-- every process it starts from now on has it (as a cold start's launcher
-- would have given it). Raises a plain error when the daemon refuses.
local function set_env(inst, env)
  local r, msg = http.request{
    url = inst.base_url .. "/dtlocal/sandbox-env", method = "PUT",
    unix_socket = inst.unix_socket, peer_uids = inst.peer_uids,
    headers = { ["Content-Type"] = "application/json", [proxy.INTERNAL_HEADER] = "sandbox-env" },
    body = json.encode({ env = env }), timeout = 5,
  }
  if not r then error(msg, 0) end
  if r.status ~= 204 then error(format("its daemon answered %d: %s", r.status, r.body or ""), 0) end
end

--- Take a ready warm sandbox for create values c, turned into the new
-- sandbox's record; nil when there is none (or c needs something else).
function Pool:take(c)
  local mgr = self.mgr
  if not plain(c) then return nil end
  while #self.spares > 0 do
    local spare = table.remove(self.spares, 1)
    local rt = mgr.rt[spare.id]
    local usable = rt and rt.inst and rt.inst:running()
    if usable and c.env and next(c.env) ~= nil then
      local ok, err = pcall(set_env, rt.inst, c.env)
      if not ok then
        usable = false
        self:drop(spare, "cannot hand it its env: " .. tostring(err))
      end
    end
    if usable then
      local d = spare.dtlocal
      local fresh = record.new_record(c, spare.id, record.now_ms())
      fresh.state, fresh.desiredState = "started", "started"
      fresh.linkedSandboxId = c.linkedSandboxId
      for _, k in ipairs({ "uid_slot", "uid_first", "preview_token", "pid", "pasta_pid" }) do fresh.dtlocal[k] = d[k] end
      for k in pairs(spare) do spare[k] = nil end
      for k, v in pairs(fresh) do spare[k] = v end
      if mgr.net and (spare.networkAllowList or spare.domainAllowList) then
        -- before its record says it exists: no code of the caller's has run in it yet
        local aok, aerr = pcall(mgr.net.apply, mgr.net, spare)
        if not aok then
          self:drop(spare, "cannot apply its network settings: " .. tostring(aerr))
          error(aerr, 0)
        end
      end
      mgr.by_id[spare.id] = spare
      local ok, err = pcall(mgr.save, mgr, spare)
      if not ok then
        mgr.by_id[spare.id] = nil
        error(err, 0)
      end
      mgr.log("sandbox %s: started (from the warm pool)", spare.id)
      mgr.on_event("sandbox.created", spare)
      self:refill()
      return spare
    end
  end
  self:refill()
  return nil
end

--- Forget a warm sandbox and remove its files (in the background).
function Pool:drop(rec, why)
  local mgr = self.mgr
  for i, r in ipairs(self.spares) do
    if r == rec then table.remove(self.spares, i); break end
  end
  mgr.log("warm sandbox %s dropped: %s", rec.id, why)
  local t = scheduler.spawn(function()
    mgr:kill(rec, true)
    pcall(mgr.runner.remove_tree, mgr.runner, mgr.store:sandbox_dir(rec.id))
    if mgr.uids and rec.dtlocal.uid_slot then
      mgr.uids:release(rec.dtlocal.uid_slot, mgr:record_path(rec))
    end
    mgr.rt[rec.id] = nil
  end)
  t.observed = true
end

--- Start warm sandboxes until the pool is full (in background tasks).
function Pool:refill()
  local mgr = self.mgr
  if mgr.closing or self.size <= 0 then return end
  if self.failed_at and record.now_ms() - self.failed_at < M.RETRY * 1000 then return end
  while #self.spares + self.warming < self.size do
    self.warming = self.warming + 1
    local t = scheduler.spawn(function()
      -- one loop turn first: the response that took a warm sandbox goes
      -- out before this one forks the launcher
      scheduler.sleep(0)
      local rec = record.new_record({}, record.uuid(), record.now_ms())
      rec.dtlocal.spare = true
      local ok, err = pcall(function()
        mgr:save(rec)
        mgr:do_start(rec)
      end)
      self.warming = self.warming - 1
      if ok and rec.state == "started" and not mgr.closing then
        self.spares[#self.spares + 1] = rec
      else
        if not ok and errors.is(err, errors.CancelledError) then
          self:drop(rec, "cancelled")
          error(err, 0)
        end
        self.failed_at = record.now_ms()
        self:drop(rec, ok and ("state " .. rec.state) or tostring(err))
      end
    end)
    t.observed = true
    t.name = "warm sandbox"
  end
end

return M
