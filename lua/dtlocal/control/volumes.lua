--- dtlocal.control.volumes: volumes as directories on the host (doc/protocol.md §3.8).
--
-- A volume is `volumes/<id>/data` under the state dir; a sandbox created
-- with `volumes: [{volumeId, mountPath, subpath?}]` gets that directory (or
-- its subpath) bind-mounted at mountPath. Creation is immediate (state
-- `ready`); delete is refused (409) while a sandbox that mounts it exists.
--
--   local vols = volumes.new{ store =, runner =, log = }
--   vols:load(); vols:create(name) -> vol; vols:find(id_or_name) -> vol | nil
--   vols:delete(vol, in_use)         -- in_use: function(vol) -> sandbox id | nil
--   volumes.wire(vol) -> VolumeDto
--   volumes.needs_migration(vol) -> bool; volumes.migrated(vol)
--
-- Who owns a volume's files. As root, every sandbox's bind of the volume is
-- idmapped with its user namespace (dtlua-sandbox --volume): the files are
-- stored under the sandbox ids themselves (daytona = 1000, root = 0), so a
-- file one sandbox's daytona made is daytona's in every other sandbox. The
-- data dir is daytona's, 0755, as a home directory would be. Unprivileged,
-- the launcher cannot idmap: every sandbox maps the same ids (ours and our
-- subordinate range), and the data dir is 0777 so that daytona may write
-- at its top.
--
-- Volumes made before (as root: data dir root's and 0777, files owned by
-- the host range of the sandbox that made them, which others could read
-- but not change) are migrated at the first start that mounts them: the
-- launcher gives those files the sandbox ids they stood for
-- (--volume-migrate, following no link), then the data dir becomes
-- daytona's and 0755.
local core = require "daytona.core"
local http = require "dtlocal.http"
local record = require "dtlocal.control.record"

local pairs, ipairs, setmetatable, format = pairs, ipairs, setmetatable, string.format
local raise = http.raise
local json = http.json
local util = core.util

local M = {}

M.OWNER = 1000        -- daytona's sandbox uid and gid, stored as is on disk
M.MODE = 493          -- 0755
M.SHARED_MODE = 511   -- 0777: unprivileged, and volumes from before

-- Whether this server's sandboxes get idmapped volumes (the launcher is root).
local function idmapped() return util.getuid() == 0 end

-- Give a new data dir its owner and mode (above).
local function init_data_dir(dir)
  local ok, msg
  if idmapped() then
    ok, msg = util.chown(dir, M.OWNER, M.OWNER)
    if ok then ok, msg = util.chmod(dir, M.MODE) end
  else
    ok, msg = util.chmod(dir, M.SHARED_MODE)
  end
  if not ok then error("cannot prepare " .. dir .. ": " .. tostring(msg), 0) end
end

--- Whether the volume is one from before idmapped volumes whose files the
-- launcher must migrate when it mounts it: as root, a data dir still host
-- root's and 0777, as dtlocal made them then. (Sandbox root could make a
-- new one look so; the migration only rewrites ids of old host ranges, so
-- that costs a walk of the volume, nothing else.)
function M.needs_migration(vol)
  if not idmapped() then return false end
  local st = util.stat(vol.dtlocal.data_dir)
  return st ~= nil and st.type == "directory" and st.uid == 0 and st.mode & 511 == 511
end

--- After a start whose launcher migrated the volume: its data dir becomes
-- as a new one's. The name `data` is in our 0700 volume dir, which no
-- sandbox sees: nothing a sandbox wrote is followed.
function M.migrated(vol)
  if M.needs_migration(vol) then init_data_dir(vol.dtlocal.data_dir) end
end

local Volumes = {}
Volumes.__index = Volumes
Volumes.__name = "dtlocal.Volumes"

--- The volumes of a server. opts: store, runner (removes trees), log.
function M.new(opts)
  return setmetatable({ store = opts.store, runner = opts.runner, log = opts.log or function() end,
                        by_id = {} }, Volumes)
end

--- Load the volume records from disk; returns how many.
function Volumes:load()
  local recs, warnings = self.store:load_volumes()
  for _, w in ipairs(warnings) do self.log("%s", w) end
  for _, v in ipairs(recs) do
    v.dtlocal = v.dtlocal or {}
    v.dtlocal.data_dir = self.store:volume_dir(v.id) .. "/data"
    if v.state == "deleting" or v.state == "pending_delete" then
      self:finish_delete(v)
    else
      self.by_id[v.id] = v
    end
  end
  return #recs
end

--- A volume by id or name, or nil.
function Volumes:find(key)
  local v = self.by_id[key]
  if v then return v end
  for _, x in pairs(self.by_id) do
    if x.name == key then return x end
  end
  return nil
end

--- Every volume, oldest first.
function Volumes:all()
  local out = {}
  for _, v in pairs(self.by_id) do out[#out + 1] = v end
  table.sort(out, function(a, b)
    if a.createdAt ~= b.createdAt then return a.createdAt < b.createdAt end
    return a.id < b.id
  end)
  return out
end

--- Create a volume named `name` (validated by the caller); 409 if the
-- name is taken.
function Volumes:create(name)
  if self:find(name) then raise(409, format("Volume with name %s already exists", name)) end
  local id = record.uuid()
  local now = record.iso()
  local v = {
    id = id, name = name, organizationId = record.ORGANIZATION_ID, state = "ready",
    createdAt = now, updatedAt = now,
    dtlocal = { data_dir = self.store:volume_dir(id) .. "/data" },
  }
  self.store:save_volume(v)
  init_data_dir(v.dtlocal.data_dir)
  self.by_id[id] = v
  self.log("volume %s (%s): created", id, name)
  return v
end

--- Forget a volume and remove its files.
function Volumes:finish_delete(v)
  self.store:remove_volume(v.id)
  self.by_id[v.id] = nil
  self.runner:remove_tree(self.store:volume_dir(v.id))
  self.log("volume %s: deleted", v.id)
end

--- Delete a volume; 409 while the sandbox `in_use(v)` names mounts it.
function Volumes:delete(v, in_use)
  local user = in_use(v)
  if user then raise(409, format("Volume %s is in use by sandbox %s", v.name, user)) end
  v.state = "deleting"
  v.updatedAt = record.iso()
  self.store:save_volume(v)
  self:finish_delete(v)
end

--- The VolumeDto of a volume.
function M.wire(v)
  return {
    id = v.id, name = v.name, organizationId = v.organizationId, state = v.state,
    createdAt = v.createdAt, updatedAt = v.updatedAt,
    lastUsedAt = v.lastUsedAt or json.null, errorReason = v.errorReason or json.null,
  }
end

return M
