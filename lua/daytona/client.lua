--- The Daytona client: creates, finds, lists and removes sandboxes.
--
--     local daytona = require "daytona"
--     local client = daytona.new()      -- DAYTONA_API_KEY etc., or the local server
--     local sb <close> = client:create{ language = "python", labels = { job = "42" } }
--     for s in client:list{ labels = { job = "42" } } do print(s.id, s.state) end
--
-- Configuration (`daytona.new{...}`, every key optional): `api_key`,
-- `jwt_token`, `organization_id`, `api_url`, `target`, `retry`
-- (`{ retries = 3, base_delay = 0.25, max_delay = 8, max_retry_after = 60 }`
-- or false), `on_request` (observer `f(method, url, attempt)`),
-- `local_server` (false: never use the local server).
--
-- Settings missing from the table come from the environment, then
-- `.env.local`, then `.env` in the current directory (`DAYTONA_API_KEY`,
-- `DAYTONA_API_URL`, `DAYTONA_TARGET`, `DAYTONA_JWT_TOKEN`,
-- `DAYTONA_ORGANIZATION_ID`). The API URL travels with the credential: a
-- key from the environment, `.env.local` or `.env` is sent only to the
-- `DAYTONA_API_URL` of the same place, or to Daytona's cloud when no place
-- names a URL; when the key's place names no URL but another does, or a
-- place of higher precedence names another URL, `new` raises `DaytonaError`
-- with code `AMBIGUOUS_ENDPOINT` instead of guessing. An `api_url` in the
-- table is used with whichever key applies; an `api_key` in the table goes
-- to the environment's URL or the cloud (a dotenv file's URL steers only
-- the key beside it). See `daytona.config.resolve`.
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local config = require "daytona.config"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"
local sandbox = require "daytona.sandbox"

local type, pairs, ipairs, tostring, setmetatable, error, pcall =
  type, pairs, ipairs, tostring, setmetatable, error, pcall

local M = {}

local Client = {}
Client.__index = Client
Client.__name = "daytona.client.Client"
M.Client = Client

local LANGUAGES = { python = true, typescript = true, javascript = true }
M.LANGUAGE_LABEL = "code-toolbox-language"

--- Create a client.
-- @param cfg optional configuration table (see the module doc and
--   `daytona.config.resolve`)
-- @return Client
-- @raise DaytonaValidationError for a bad table, DaytonaAuthenticationError
--   for incomplete credentials, DaytonaConnectionError when the local server
--   is needed and cannot be started
function M.new(cfg)
  local resolved = config.resolve(cfg)
  resolved.sdk_version = resolved.sdk_version or (package.loaded.daytona and package.loaded.daytona._VERSION) or "0.1.0"
  if resolved.use_local then
    local ls = require "daytona.localserver"
    local info = ls.ensure(type(resolved.local_server) == "table" and resolved.local_server or nil)
    resolved.api_url = info.api_url:gsub("/+$", "")
    resolved.api_key = info.token
    resolved.local_info = info
  end
  local self = setmetatable({
    api_url = resolved.api_url,
    target = resolved.target,
    is_local = resolved.use_local or false,
    _config = resolved,
    _transport = transport.new(resolved),
  }, Client)
  self.snapshot = require("daytona.snapshot").new(self)
  self.volume = require("daytona.volume").new(self)
  return self
end

--- Release the client (`local client <close> = daytona.new()` calls it).
-- Sandboxes are not deleted; later calls on the client raise.
-- @return nothing
function Client:close()
  self._closed = true
end
Client.__close = Client.close

local function live(self, fname)
  if self._closed then
    error(errors.DaytonaError("'" .. fname .. "' on a closed client", { code = "ECLOSED" }), 0)
  end
end

function Client:__tostring()
  return ("daytona client (%s)"):format(self.api_url)
end

---------------------------------------------------------------------------
-- create
---------------------------------------------------------------------------

local CREATE_KEYS = check.set("name", "snapshot", "image", "language", "os_user", "user", "env_vars",
  "labels", "public", "auto_stop_interval", "auto_archive_interval", "auto_delete_interval",
  "volumes", "network_block_all", "network_allow_list", "domain_allow_list", "ephemeral",
  "linked_sandbox", "resources", "timeout", "on_snapshot_create_logs", "wait")

local function volumes_arg(v, f)
  if v == nil then return nil end
  check.table(v, f, "volumes")
  local out = {}
  for i, vol in ipairs(v) do
    local a = ("volumes[%d]"):format(i)
    check.options(check.table(vol, f, a), f, check.set("volume_id", "mount_path", "subpath"), a)
    out[i] = {
      volumeId = check.string(vol.volume_id, f, a .. ".volume_id"),
      mountPath = check.string(vol.mount_path, f, a .. ".mount_path"),
      subpath = check.optstring(vol.subpath, f, a .. ".subpath"),
    }
  end
  if #out == 0 then return nil end
  return out
end

local function resources_arg(r, f, body)
  if r == nil then return end
  check.options(check.table(r, f, "resources"), f, check.set("cpu", "memory", "disk", "gpu", "gpu_type"), "resources")
  body.cpu = check.optinteger(r.cpu, f, "resources.cpu", 1)
  body.memory = check.optinteger(r.memory, f, "resources.memory", 1)
  body.disk = check.optinteger(r.disk, f, "resources.disk", 1)
  body.gpu = check.optinteger(r.gpu, f, "resources.gpu", 0)
  if r.gpu_type ~= nil then body.gpuType = check.strlist(r.gpu_type, f, "resources.gpu_type") end
end

-- Build the CreateSandbox body from the Lua params (validated).
local function create_body(self, p)
  local f = "create"
  local body = {
    name = check.optstring(p.name, f, "name"),
    user = check.optstring(p.os_user or p.user, f, p.os_user and "os_user" or "user"),
    env = check.strmap(p.env_vars, f, "env_vars") or {},
    labels = check.strmap(p.labels, f, "labels") or {},
    public = check.optboolean(p.public, f, "public"),
    networkBlockAll = check.optboolean(p.network_block_all, f, "network_block_all"),
    networkAllowList = sandbox.cidr_list(p.network_allow_list, f, "network_allow_list"),
    domainAllowList = sandbox.cidr_list(p.domain_allow_list, f, "domain_allow_list"),
    autoStopInterval = check.optinteger(p.auto_stop_interval, f, "auto_stop_interval", 0),
    autoArchiveInterval = check.optinteger(p.auto_archive_interval, f, "auto_archive_interval", 0),
    autoDeleteInterval = check.optinteger(p.auto_delete_interval, f, "auto_delete_interval"),
    volumes = volumes_arg(p.volumes, f),
    linkedSandbox = check.optstring(p.linked_sandbox, f, "linked_sandbox"),
    target = self.target,
  }
  local language = check.optstring(p.language, f, "language") or "python"
  if not LANGUAGES[language] then
    check.argerror(f, "language", "one of python, typescript, javascript expected, got " .. language)
  end
  body.labels[M.LANGUAGE_LABEL] = language
  if check.optboolean(p.ephemeral, f, "ephemeral") then
    if body.autoDeleteInterval and body.autoDeleteInterval ~= 0 then
      io.stderr:write("daytona: 'ephemeral' overrides auto_delete_interval with 0\n")
    end
    body.autoDeleteInterval = 0
  end
  if body.linkedSandbox and body.autoDeleteInterval ~= 0 then
    check.argerror(f, "linked_sandbox", "a linked sandbox must be ephemeral (ephemeral = true)")
  end
  if p.image ~= nil then
    if p.snapshot ~= nil then check.argerror(f, "image", "give either snapshot or image, not both") end
    local image = p.image
    local dockerfile
    if type(image) == "string" then
      if image == "" then check.argerror(f, "image", "non-empty string expected") end
      dockerfile = "FROM " .. image .. "\n"
    elseif type(image) == "table" and type(image.dockerfile) == "string" then
      dockerfile = image.dockerfile         -- a declarative image object
    else
      check.argerror(f, "image", "image name or Image object expected, got " .. type(image))
    end
    body.buildInfo = { dockerfileContent = dockerfile }
    resources_arg(p.resources, f, body)
  else
    body.snapshot = check.optstring(p.snapshot, f, "snapshot")
    if p.resources ~= nil then
      check.argerror(f, "resources", "resources can only be given when creating from an image")
    end
  end
  return body
end

-- Stream the build log of a sandbox created from an image (doc/protocol.md §5.6): read
-- chunks; after 2 s without one, look at the state; stop after two idle
-- checks in a row that find it past the build.
local function stream_build_logs(sb, on_logs, deadline)
  local r = sb:_control({ method = "GET", deadline = deadline, what = "get build logs URL" }, "/build-logs-url")
  local url = type(r) == "table" and r.url
  if type(url) ~= "string" then return end
  local last_chunk = transport.now()
  local cb_error
  local reader = scheduler.spawn(function()
    -- the log is best effort: a failing stream does not fail the create,
    -- but an error of the caller's callback does
    local ok, s = pcall(sb._t.stream, sb._t, { method = "GET", url = url, query = { follow = true },
      deadline = deadline, what = "stream build logs" })
    if not ok then return end
    pcall(function()   -- an abrupt end of the body is a normal end of the log (doc/protocol.md §5.6)
      for chunk in s:chunks() do
        last_chunk = transport.now()
        local text = chunk:gsub("%s+$", "")
        if text ~= "" then
          local okc, e = pcall(on_logs, text)
          if not okc then cb_error = e; break end
        end
      end
    end)
    s:close()
  end)
  local DONE = { started = true, starting = true, error = true, build_failed = true }
  local streak = 0
  while not reader:done() do
    -- up to 2 s for the reader to finish by itself
    pcall(scheduler.timeout, 2, function() while not reader:done() do scheduler.wait(reader) end end)
    if reader:done() then break end
    if transport.now() - last_chunk >= 2 then
      sb:_refresh(deadline, "wait for build")
      if DONE[sb.state] then streak = streak + 1 else streak = 0 end
      if streak >= 2 then reader:cancel(); break end
    else
      streak = 0
    end
  end
  pcall(reader.wait, reader)
  if cb_error ~= nil then error(cb_error, 0) end
end

--- Create a sandbox from a snapshot (default) or an image and wait until it
-- has started.
-- @param params optional table: `name`, `snapshot` (name or id) or `image`
--   (image name, or an Image object with a `dockerfile` field), `language`
--   ("python" default, "typescript", "javascript"), `os_user`, `env_vars`,
--   `labels`, `public`, `auto_stop_interval`, `auto_archive_interval`,
--   `auto_delete_interval` (minutes), `ephemeral`, `volumes` (list of
--   `{ volume_id, mount_path, subpath }`), `network_block_all`,
--   `network_allow_list` (CIDR string or list), `domain_allow_list`,
--   `linked_sandbox` (needs `ephemeral`), `resources` (`{ cpu, memory,
--   disk, gpu, gpu_type }`, image only), `timeout` (seconds, default 60,
--   0 = forever), `on_snapshot_create_logs` (function(line) for the build
--   log of an image), `wait` (false: return without waiting for `started`)
-- @param opts optional `{ timeout = , on_snapshot_create_logs = }` (the
--   same keys may be given here, Python-style)
-- @return Sandbox
-- @raise DaytonaValidationError for bad params (before any request);
--   DaytonaTimeoutError; DaytonaError when the sandbox fails to start
function Client:create(params, opts)
  live(self, "create")
  params = check.options(params, "create", CREATE_KEYS, "params")
  opts = check.options(opts, "create", check.set("timeout", "on_snapshot_create_logs"))
  local timeout = check.timeout(opts.timeout or params.timeout, "create", sandbox.DEFAULT_TIMEOUT)
  local on_logs = check.optfunction(opts.on_snapshot_create_logs or params.on_snapshot_create_logs,
    "create", "on_snapshot_create_logs")
  local wait = check.optboolean(params.wait, "create", "wait")
  local body = create_body(self, params)
  local deadline = transport.deadline(timeout)
  -- local files of a declarative image: uploaded first, named by their hashes
  if body.buildInfo and type(params.image) == "table" and params.image._contexts then
    body.buildInfo.contextHashes = require("daytona.object_storage").upload_contexts(self._transport, params.image._contexts, deadline)
  end
  local dto = self._transport:request({ method = "POST", path = "/sandbox", json = body,
    deadline = deadline, what = "create sandbox" })
  local sb = sandbox.new(self, dto)
  if on_logs and (sb.state == "pending_build" or sb.state == "building_snapshot") then
    local poll = 0.1
    while sb.state == "pending_build" do
      transport.remaining(deadline, "create sandbox", timeout)
      -- from 0.1 s up to the SDKs' 1 s: a local build (or a cached one) is
      -- often done well within the first second
      scheduler.sleep(poll)
      poll = math.min(1, poll * 1.5)
      sb:_refresh(deadline, "wait for build")
    end
    stream_build_logs(sb, on_logs, deadline)
  end
  if wait == false then return sb end
  local ok, err = pcall(sandbox.wait_until, sb, "create sandbox", "start", timeout, deadline,
    function(s) return s == "started" end, { error = true, build_failed = true })
  if not ok then
    if type(err) == "table" then err.sandbox_id = sb.id end
    error(err, 0)
  end
  return sb
end

---------------------------------------------------------------------------
-- get / list
---------------------------------------------------------------------------

--- Get a sandbox by id or name.
-- @param id_or_name string
-- @return Sandbox
-- @raise DaytonaNotFoundError
function Client:get(id_or_name)
  live(self, "get")
  id_or_name = check.string(id_or_name, "get", "sandbox_id_or_name")
  local dto = self._transport:request({ method = "GET", path = "/sandbox/" .. wire.urlencode(id_or_name),
    what = "get sandbox" })
  return sandbox.new(self, dto)
end

local LIST_MAP = {
  limit = "limit", id = "id", name = "name", states = "states", snapshots = "snapshots",
  targets = "regionIds", min_cpu = "minCpu", max_cpu = "maxCpu",
  min_memory_gib = "minMemoryGiB", max_memory_gib = "maxMemoryGiB",
  min_disk_gib = "minDiskGiB", max_disk_gib = "maxDiskGiB", is_public = "isPublic",
  is_recoverable = "isRecoverable", created_at_after = "createdAtAfter",
  created_at_before = "createdAtBefore", last_activity_after = "lastEventAfter",
  last_activity_before = "lastEventBefore", sort = "sort", order = "order",
  include_errored_deleted = "includeErroredDeleted",
}
local LIST_KEYS = { labels = true }
for k in pairs(LIST_MAP) do LIST_KEYS[k] = true end
local LISTS = { states = true, snapshots = true, targets = true }
local BOOLS = { is_public = true, is_recoverable = true, include_errored_deleted = true }
local NUMS = { min_cpu = true, max_cpu = true, min_memory_gib = true, max_memory_gib = true,
  min_disk_gib = true, max_disk_gib = true }

local function list_query(q)
  local f = "list"
  q = check.options(q, f, LIST_KEYS, "query")
  local out = {}
  for k, v in pairs(q) do
    if k == "labels" then
      out.labels = wire.encode(check.strmap(v, f, "labels"))
    elseif LISTS[k] then
      out[LIST_MAP[k]] = check.strlist(v, f, k)
    elseif BOOLS[k] then
      out[LIST_MAP[k]] = check.optboolean(v, f, k)
    elseif NUMS[k] then
      out[LIST_MAP[k]] = check.integer(v, f, k, 0)
    elseif k == "limit" then
      out.limit = check.integer(v, f, "limit", 1, 200)
    elseif k == "sort" then
      local s = check.string(v, f, "sort")
      local wire = ({ name = "name", cpu = "cpu", memory_gib = "memoryGib", memoryGib = "memoryGib",
        disk_gib = "diskGib", diskGib = "diskGib", last_activity_at = "lastActivityAt",
        lastActivityAt = "lastActivityAt", created_at = "createdAt", createdAt = "createdAt" })[s]
      if not wire then check.argerror(f, "sort", "one of name, cpu, memory_gib, disk_gib, last_activity_at, created_at expected") end
      out.sort = wire
    elseif k == "order" then
      local o = check.string(v, f, "order")
      if o ~= "asc" and o ~= "desc" then check.argerror(f, "order", "\"asc\" or \"desc\" expected") end
      out.order = o
    else
      out[LIST_MAP[k]] = check.string(v, f, k)
    end
  end
  return out
end

local Iter = {}
Iter.__index = Iter
Iter.__name = "daytona.client.SandboxIterator"

--- The next sandbox, or nil at the end (one request per page).
-- @return Sandbox or nil
function Iter:next()
  while true do
    local items = self._items
    if items and self._i < #items then
      self._i = self._i + 1
      return sandbox.new(self._client, items[self._i])
    end
    if self._done then return nil end
    local q = {}
    for k, v in pairs(self._query) do q[k] = v end
    q.cursor = self._cursor
    local page = self._client._transport:request({ method = "GET", path = "/sandbox", query = q,
      what = "list sandboxes" })
    if type(page) ~= "table" then page = {} end
    -- an old server answering with a plain array: one page
    if page[1] ~= nil or next(page) == nil then page = { items = page } end
    self._items = type(page.items) == "table" and page.items or {}
    self._i = 0
    local nc = page.nextCursor
    if type(nc) ~= "string" or nc == "" then self._done = true else self._cursor = nc end
  end
end
Iter.__call = Iter.next

--- Collect the remaining sandboxes into a list.
-- @return list of Sandbox
function Iter:all()
  local out = {}
  for sb in self.next, self do out[#out + 1] = sb end
  return out
end

--- List sandboxes: an iterator for a generic `for`, fetching pages as it
-- goes (cursor pagination).
--
--     for sb in client:list{ labels = { team = "a" }, states = { "started" } } do ... end
--     local all = client:list():all()
-- @param query optional filters: `labels` (all must match), `id` / `name`
--   (prefixes), `states`, `snapshots`, `targets` (lists), `min_cpu`,
--   `max_cpu`, `min_memory_gib`, `max_memory_gib`, `min_disk_gib`,
--   `max_disk_gib`, `is_public`, `is_recoverable`, `created_at_after`,
--   `created_at_before`, `last_activity_after`, `last_activity_before`
--   (ISO-8601), `sort`, `order` ("asc"/"desc"), `limit` (page size 1..200)
-- @return iterator (callable; also `:next()` and `:all()`)
-- @raise DaytonaValidationError for bad filters (at once, before any request)
function Client:list(query)
  live(self, "list")
  local q = list_query(query)
  return setmetatable({ _client = self, _query = q, _i = 0 }, Iter)
end

--- The first sandbox matching the query, or nil.
-- @param query as for list
-- @return Sandbox or nil
function Client:find_one(query)
  return self:list(query):next()
end

---------------------------------------------------------------------------
-- start / stop / delete by client (Python's Daytona.start etc.)
---------------------------------------------------------------------------

local function as_sandbox(self, v, fname)
  if sandbox.is(v) then return v end
  if type(v) == "string" and v ~= "" then return self:get(v) end
  check.argerror(fname, "sandbox", "Sandbox or sandbox id expected, got " .. type(v))
end

--- Start a sandbox and wait until it runs.
-- @param sb Sandbox or id
-- @param opts optional `{ timeout = 60 }`
-- @return the Sandbox
function Client:start(sb, opts)
  live(self, "start")
  return as_sandbox(self, sb, "start"):start(opts)
end

--- Stop a sandbox and wait until it is stopped.
-- @param sb Sandbox or id
-- @param opts optional `{ timeout = 60, force = false }`
-- @return the Sandbox
function Client:stop(sb, opts)
  live(self, "stop")
  return as_sandbox(self, sb, "stop"):stop(opts)
end

--- Delete a sandbox and wait until it is gone.
-- @param sb Sandbox or id
-- @param opts optional `{ timeout = 60, wait = true }`
-- @return nothing
function Client:delete(sb, opts)
  live(self, "delete")
  return as_sandbox(self, sb, "delete"):delete(opts)
end


-- a call with '.' instead of ':' says so
check.methods(Client, "client")

return M
