--- `client.volume`: shared volumes mounted into sandboxes.
--
--     local v = client.volume:get("shared-data", { create = true })
--     client.volume:wait_for_ready(v)
--     local sb <close> = client:create{ volumes = { { volume_id = v.id, mount_path = "/data" } } }
--
-- Volumes are plain tables: `{ id, name, organization_id, state, created_at,
-- updated_at, last_used_at, error_reason }`; states `creating`,
-- `pending_create`, `ready`, `pending_delete`, `deleting`, `deleted`, `error`.
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"

local type, ipairs, setmetatable, error = type, ipairs, setmetatable, error

local M = {}

local VolumeService = {}
VolumeService.__index = VolumeService
VolumeService.__name = "daytona.volume.VolumeService"
M.VolumeService = VolumeService

--- The volume service of a client (made by the Client).
-- @param client Client
-- @return VolumeService
function M.new(client)
  return setmetatable({ _client = client, _t = client._transport }, VolumeService)
end

local function volume_id(v, f) return check.id(v, f, "volume") end

--- All volumes.
-- @param opts optional `{ include_deleted = false }`
-- @return list of volumes
function VolumeService:list(opts)
  opts = check.options(opts, "volume.list", check.set("include_deleted"))
  local r = self._t:request({ method = "GET", path = "/volumes", what = "list volumes",
    query = { includeDeleted = check.optboolean(opts.include_deleted, "volume.list", "include_deleted") } }) or {}
  local out = {}
  for i, v in ipairs(r) do out[i] = wire.to_lua(v, "Volume") end
  return out
end

--- A volume by name, optionally creating it when missing.
-- @param name string
-- @param opts optional `{ create = false }`
-- @return the volume
-- @raise DaytonaNotFoundError when missing and not created
function VolumeService:get(name, opts)
  name = check.string(name, "volume.get", "name")
  opts = check.options(opts, "volume.get", check.set("create"))
  local create = check.optboolean(opts.create, "volume.get", "create")
  local not_found = nil
  if create then not_found = false end
  local v = self._t:request({ method = "GET", path = "/volumes/by-name/" .. wire.urlencode(name),
    what = "get volume", not_found = not_found })
  if v == false then return self:create(name) end
  return wire.to_lua(v, "Volume")
end

--- Create a volume (it becomes `ready` asynchronously; see wait_for_ready).
-- @param name string
-- @return the volume
-- @raise DaytonaConflictError if the name is taken
function VolumeService:create(name)
  name = check.string(name, "volume.create", "name")
  return wire.to_lua(self._t:request({ method = "POST", path = "/volumes", json = { name = name },
    what = "create volume" }))
end

--- Delete a volume.
-- @param volume a volume table or its id
-- @return nothing
-- @raise DaytonaConflictError while a sandbox uses it
function VolumeService:delete(volume)
  local id = volume_id(volume, "volume.delete")
  self._t:request({ method = "DELETE", path = "/volumes/" .. wire.urlencode(id), what = "delete volume" })
end

--- Wait until a volume is ready (sandbox creation refuses volumes that
-- are not).
-- @param volume a volume table or its id
-- @param opts optional `{ timeout = 60 }`
-- @return the volume
-- @raise DaytonaTimeoutError; DaytonaError if it reaches `error`
function VolumeService:wait_for_ready(volume, opts)
  local f = "volume.wait_for_ready"
  local id = volume_id(volume, f)
  opts = check.options(opts, f, check.set("timeout"))
  local timeout = check.timeout(opts.timeout, f, 60)
  local deadline = transport.deadline(timeout)
  local interval = 0.1
  while true do
    local v = wire.to_lua(self._t:request({ method = "GET", path = "/volumes/" .. wire.urlencode(id),
      deadline = deadline, what = "get volume" }))
    if v.state == "ready" then return v end
    if v.state == "error" then
      error(errors.DaytonaError(("volume %s failed: %s"):format(v.name or id, v.error_reason or "error"),
        { code = "error" }), 0)
    end
    transport.remaining(deadline, "wait for volume", timeout)
    scheduler.sleep(interval)
    interval = interval * 1.5
    if interval > 1 then interval = 1 end
  end
end


-- a call with '.' instead of ':' says so
check.methods(VolumeService, "volume")

return M
