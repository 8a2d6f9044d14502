--- `client.snapshot`: the images sandboxes are created from.
--
--     local s = client.snapshot:create({ name = "py-tools", image = "python:3.12-slim" },
--       { on_logs = print, timeout = 600 })
--     local sb <close> = client:create{ snapshot = "py-tools" }
--     for _, s in ipairs(client.snapshot:list().items) do print(s.name, s.state) end
--
-- Snapshots are plain tables with the API's fields in snake_case (`id`,
-- `name`, `image_name`, `state`, `size`, `entrypoint`, `cpu`, `gpu`, `mem`,
-- `disk`, `error_reason`, `created_at`, `updated_at`, `last_used_at`, ...).
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"

local type, setmetatable, error, pcall = type, setmetatable, error, pcall

local M = {}

-- Seconds a create waits, once the snapshot is done, for the rest of its
-- build log (a server that keeps the stream open is cut then).
local LOG_TAIL = 5

local SnapshotService = {}
SnapshotService.__index = SnapshotService
SnapshotService.__name = "daytona.snapshot.SnapshotService"
M.SnapshotService = SnapshotService

--- The snapshot service of a client (made by the Client).
-- @param client Client
-- @return SnapshotService
function M.new(client)
  return setmetatable({ _client = client, _t = client._transport }, SnapshotService)
end

local function snapshot_id(v, f) return check.id(v, f, "snapshot") end

--- One page of snapshots.
-- @param opts optional `{ page = 1, limit = 100, name = prefix, sort =
--   "lastUsedAt", order = "desc" }`
-- @return `{ items = { snapshot, ... }, total, page, total_pages }`
function SnapshotService:list(opts)
  local f = "snapshot.list"
  opts = check.options(opts, f, check.set("page", "limit", "name", "sort", "order"))
  local r = self._t:request({ method = "GET", path = "/snapshots", what = "list snapshots", query = {
    page = check.optinteger(opts.page, f, "page", 1),
    limit = check.optinteger(opts.limit, f, "limit", 1, 200),
    name = check.optstring(opts.name, f, "name"),
    sort = check.optstring(opts.sort, f, "sort"),
    order = check.optstring(opts.order, f, "order"),
  } })
  r = wire.to_lua(r or {})
  r.items = r.items or {}
  return r
end

--- A snapshot by name or id.
-- @param name string
-- @return snapshot table
-- @raise DaytonaNotFoundError
function SnapshotService:get(name)
  name = check.string(name, "snapshot.get", "name")
  return wire.to_lua(self._t:request({ method = "GET", path = "/snapshots/" .. wire.urlencode(name),
    what = "get snapshot" }))
end

--- Delete a snapshot.
-- @param snapshot a snapshot table or its id
-- @return nothing
-- @raise DaytonaNotFoundError
function SnapshotService:delete(snapshot)
  local id = snapshot_id(snapshot, "snapshot.delete")
  self._t:request({ method = "DELETE", path = "/snapshots/" .. wire.urlencode(id), what = "delete snapshot" })
end

--- Activate an inactive snapshot.
-- @param snapshot a snapshot table or its id
-- @return the snapshot
function SnapshotService:activate(snapshot)
  local id = snapshot_id(snapshot, "snapshot.activate")
  return wire.to_lua(self._t:request({ method = "POST", path = "/snapshots/" .. wire.urlencode(id) .. "/activate",
    idempotent = true, what = "activate snapshot" }))
end

--- Deactivate an active snapshot: no sandbox can be created from it until
-- `activate` (the API's `POST /snapshots/{id}/deactivate`; not wrapped by
-- the official SDKs).
-- @param snapshot a snapshot table or its id
-- @return nothing
-- @raise DaytonaNotFoundError; DaytonaError for a snapshot in another state
function SnapshotService:deactivate(snapshot)
  local id = snapshot_id(snapshot, "snapshot.deactivate")
  self._t:request({ method = "POST", path = "/snapshots/" .. wire.urlencode(id) .. "/deactivate",
    idempotent = true, what = "deactivate snapshot" })
end

-- Stream the build log to on_logs; the log is best effort (a failing
-- stream is ignored) but an error of on_logs is kept in state.cb_error.
local function stream_logs(self, snap, on_logs, deadline, state)
  local r = self._t:request({ method = "GET", path = "/snapshots/" .. wire.urlencode(snap.id) .. "/build-logs-url",
    deadline = deadline, what = "get snapshot build logs URL", not_found = false })
  local url = type(r) == "table" and r.url
  if type(url) ~= "string" then return end
  local ok, s = pcall(self._t.stream, self._t, { method = "GET", url = url, query = { follow = true },
    deadline = deadline, what = "stream snapshot build logs" })
  if not ok then return end
  pcall(function()
    for chunk in s:chunks() do
      local text = chunk:gsub("%s+$", "")
      if text ~= "" then
        local okc, e = pcall(on_logs, text)
        if not okc then state.cb_error = e; break end
      end
    end
  end)
  s:close()
end

--- Create a snapshot from an image name (or an Image object with a
-- `dockerfile` field) and wait until it is active.
-- @param params `{ name = , image = , resources = { cpu, memory, disk, gpu },
--   entrypoint = { ... }, region_id = , sandbox_class = }`
-- @param opts optional `{ on_logs = function(line), timeout = 0 }` (0 = no limit)
-- @return the snapshot
-- @raise DaytonaError with the build's error reason; DaytonaTimeoutError
function SnapshotService:create(params, opts)
  local f = "snapshot.create"
  check.options(check.table(params, f, "params"), f,
    check.set("name", "image", "resources", "entrypoint", "region_id", "sandbox_class"), "params")
  opts = check.options(opts, f, check.set("on_logs", "timeout"))
  local on_logs = check.optfunction(opts.on_logs, f, "on_logs")
  local timeout = check.timeout(opts.timeout, f, 0)
  local body = {
    name = check.string(params.name, f, "name"),
    entrypoint = params.entrypoint and check.strlist(params.entrypoint, f, "entrypoint") or nil,
    regionId = check.optstring(params.region_id, f, "region_id") or self._client.target,
    sandboxClass = check.optstring(params.sandbox_class, f, "sandbox_class"),
  }
  local image = params.image
  if type(image) == "string" and image ~= "" then
    body.imageName = image
  elseif type(image) == "table" and type(image.dockerfile) == "string" then
    body.buildInfo = { dockerfileContent = image.dockerfile }
  else
    check.argerror(f, "image", "image name or Image object expected")
  end
  if params.resources ~= nil then
    local r = params.resources
    check.options(check.table(r, f, "resources"), f, check.set("cpu", "memory", "disk", "gpu"), "resources")
    body.cpu = check.optinteger(r.cpu, f, "resources.cpu", 1)
    body.memory = check.optinteger(r.memory, f, "resources.memory", 1)
    body.disk = check.optinteger(r.disk, f, "resources.disk", 1)
    body.gpu = check.optinteger(r.gpu, f, "resources.gpu", 0)
  end
  local deadline = transport.deadline(timeout)
  -- local files of a declarative image: uploaded first, named by their hashes
  if body.buildInfo and image._contexts then
    body.buildInfo.contextHashes = require("daytona.object_storage").upload_contexts(self._t, image._contexts, deadline)
  end
  local snap = wire.to_lua(self._t:request({ method = "POST", path = "/snapshots", json = body,
    deadline = deadline, what = "create snapshot" }))
  local last_state, streamer = nil, nil
  local log_state = {}
  -- from 0.1 s up to the SDKs' 1 s (a pull from a cache is done at once)
  local interval = 0.1
  local function start_logs()
    if on_logs and not streamer then
      streamer = scheduler.spawn(function() pcall(stream_logs, self, snap, on_logs, deadline, log_state) end)
      streamer.observed = true
    end
  end
  local ok, res = pcall(function()
  while true do
    local st = snap.state
    if on_logs and st ~= last_state then on_logs(("Creating snapshot %s (%s)"):format(snap.name, st)) end
    last_state = st
    if st == "active" or st == "error" or st == "build_failed" then
      -- the rest of the log (all of it when the job was done before a
      -- poll saw it run): the server ends the stream once the job is over
      start_logs()
      if streamer then
        pcall(scheduler.timeout, LOG_TAIL, function()
          while not streamer:done() do scheduler.wait(streamer) end
        end)
      end
      if st == "active" then return snap end
      error(errors.DaytonaError(("snapshot %s failed: %s"):format(snap.name, snap.error_reason or st),
        { code = st }), 0)
    end
    -- the log of a pull too, not only of a build: dtlocal writes the pull's
    -- progress there (Daytona's cloud answers none, which is no error)
    if st ~= "pending" then start_logs() end
    transport.remaining(deadline, "create snapshot", timeout)
    scheduler.sleep(interval)
    interval = math.min(1, interval * 1.5)
    snap = wire.to_lua(self._t:request({ method = "GET", path = "/snapshots/" .. wire.urlencode(snap.id),
      deadline = deadline, what = "get snapshot" }))
  end
  end)
  if streamer and not streamer:done() then streamer:cancel() end
  if not ok then error(res, 0) end
  if log_state.cb_error ~= nil then error(log_state.cb_error, 0) end
  return res
end


-- a call with '.' instead of ':' says so
check.methods(SnapshotService, "snapshot")

return M
