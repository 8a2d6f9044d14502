--- dtlocal.control.snapshots: snapshots (doc/protocol.md §3.7) -- the
-- images sandboxes are created from.
--
-- Two kinds. The *built-in* ones are the host's own system, seen read-only
-- through each sandbox's overlay (no download, the fastest start):
-- `dtlocal`, and Daytona's default snapshot names `daytona-small`,
-- `daytona-medium`, `daytona-large` (with their resources), plus any
-- `daytonaio/sandbox:<tag>` (Daytona's default image) as an alias of
-- `dtlocal`. They are `general`, always `active`, and cannot be deleted.
-- The others are *made*: from an image pulled from a registry
-- (`imageName`), from a Dockerfile (`buildInfo`), or from a sandbox's
-- files (`POST /sandbox/{id}/snapshot`); their image lives in the image
-- store (dtlocal.images.store), their record in `snapshots/<id>/snapshot.json`
-- and their build log in `snapshots/<id>/build.log`, so both survive a
-- restart.
--
-- States as Daytona reports them: `pending` (accepted) -> `pulling` (an
-- image name) or `building` (a Dockerfile, a sandbox's files) -> `active`;
-- a failure ends in `error` (pull) or `build_failed` (build) with
-- `errorReason`, and the log says what happened. `deactivate` makes an
-- active one `inactive` (sandboxes cannot be created from it), `activate`
-- brings it back. A job interrupted by a restart is run again.
--
--   local snaps = snapshots.new{ store =, log =, images =, builder =, started_at =,
--                                in_use = function(snap) -> sandbox id | nil }
--   snaps:load()
--   snaps:create(c) -> rec                 -- c from snapshots.check_create
--   snaps:find(key) -> rec | builtin       -- 404 "Snapshot X not found"
--   snaps:for_sandbox(name) -> rec | builtin   -- 400 as the API answers
--   snaps:resolve_build(build_info, log) -> image id  (pull or build)
--   snaps:wire(rec) -> SnapshotDto
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local http = require "dtlocal.http"
local fs = require "dtlocal.fs"
local record = require "dtlocal.control.record"
local store_mod = require "dtlocal.control.store"
local buildlog = require "dtlocal.control.buildlog"

local type, pairs, ipairs, tostring, setmetatable, pcall, error, next, math, table, os =
  type, pairs, ipairs, tostring, setmetatable, pcall, error, next, math, table, os
local format = string.format
local raise = http.raise
local json = http.json
local check, absent = record.check, record.absent
local util = core.util

local M = {}

---------------------------------------------------------------------------
-- Built-in snapshots: the host's system
---------------------------------------------------------------------------

-- Daytona's default snapshots (its docs, "Default Snapshots") with their
-- resources; locally each is the host's system with those limits.
M.BUILTIN = {
  { name = record.DEFAULT_SNAPSHOT, id = "00000000-0000-4000-8000-00000000d71c", cpu = 1, mem = 1, disk = 3 },
  { name = "daytona-small", id = "00000000-0000-4000-8000-00000000d701", cpu = 1, mem = 1, disk = 3 },
  { name = "daytona-medium", id = "00000000-0000-4000-8000-00000000d702", cpu = 2, mem = 4, disk = 8 },
  { name = "daytona-large", id = "00000000-0000-4000-8000-00000000d703", cpu = 4, mem = 8, disk = 10 },
}
local BUILTIN_BY = {}
for _, b in ipairs(M.BUILTIN) do
  b.builtin = true
  BUILTIN_BY[b.name], BUILTIN_BY[b.id] = b, b
end
-- Daytona's default snapshots that cannot be local: refused with a reason
-- instead of "not found", which would hide why.
local NOT_LOCAL = {
  ["daytona-gpu"] = "GPUs are not available locally",
  windows = "dtlocal runs Linux sandboxes only",
}
-- Daytona's default image, `daytonaio/sandbox:<version>`: an alias of dtlocal.
local function default_image_alias(name)
  return name:match("^daytonaio/sandbox:[%w][%w%._%-]*$") ~= nil
end

--- The built-in snapshot named (or with the id) `key`, or nil.
function M.builtin(key)
  local b = BUILTIN_BY[key]
  if b then return b end
  if type(key) == "string" and default_image_alias(key) then
    local d = BUILTIN_BY[record.DEFAULT_SNAPSHOT]
    return setmetatable({ name = key, alias = true }, { __index = d })
  end
  return nil
end

---------------------------------------------------------------------------
-- Validation (the API's rules: CreateSnapshot, snapshot.service)
---------------------------------------------------------------------------

-- A name component: letters, digits, '_', '.', '-', ':'; components are
-- separated by single slashes; an optional @sha256:<64 hex> at the end.
local function valid_ref(s)
  local body, digest = s:match("^(.-)@sha256:(.*)$")
  if body then
    if not digest:match("^" .. ("%x"):rep(64) .. "$") or digest:find("%u") then return false end
    s = body
  end
  if s == "" or s:find("//", 1, true) or s:sub(1, 1) == "/" or s:sub(-1) == "/" then return false end
  for part in s:gmatch("[^/]+") do
    if not part:match("^[%w_%.%-:]+$") then return false end
  end
  return true
end

--- An image name as the API takes it (snapshot.service validateImageName):
-- a tag or a digest, not `:latest`. Raises 400 naming `field`.
function M.check_image_name(v, field)
  check.string(v, field, { max = 512 })
  if v:find("@sha256:", 1, true) then
    local name, digest = v:match("^(.-)@sha256:(.*)$")
    if name == "" or not digest:match("^" .. ("[0-9a-f]"):rep(64) .. "$") then
      raise(400, field .. ": Invalid digest format. Must be image@sha256:64_hex_characters")
    end
  else
    local last = v:match("[^/]*$")
    if not last:find(":", 1, true) or v:match(":%s*$") then
      raise(400, field .. ": Image name must include a tag (e.g., ubuntu:22.04) or digest (@sha256:...)")
    end
    if v:match(":latest$") then raise(400, field .. ': Images with tag ":latest" are not allowed') end
  end
  if not valid_ref(v) then
    raise(400, field .. ": Invalid image name format. Must be lowercase, may contain digits, dots, "
      .. "dashes, and single slashes between components")
  end
  return v
end

--- The image of a Dockerfile that only names one (`FROM <image>`, blank
-- lines and comments aside), or nil: such a build is a pull.
function M.from_only(dockerfile)
  local ref
  for line in (dockerfile .. "\n"):gmatch("([^\n]*)\n") do
    local l = line:match("^%s*(.-)%s*$")
    if l ~= "" and l:sub(1, 1) ~= "#" then
      if ref then return nil end
      local kw, rest = l:match("^(%a+)%s+(.+)$")
      if not kw or kw:upper() ~= "FROM" then return nil end
      -- `FROM --platform=... img` or `FROM img AS name` are builds
      if rest:find("%s") or rest:sub(1, 1) == "-" then return nil end
      ref = rest
    end
  end
  return ref
end

-- A buildInfo object: { dockerfileContent, contextHashes? }.
local function check_build_info(b, field)
  if type(b) ~= "table" or b[1] ~= nil then raise(400, field .. " must be an object") end
  local out = { dockerfileContent = check.string(b.dockerfileContent, field .. ".dockerfileContent",
                                                 { max = 1024 * 1024 }) }
  out.contextHashes = {}
  if not absent(b.contextHashes) then
    local h = b.contextHashes
    if type(h) ~= "table" or (next(h) ~= nil and h[1] == nil) then
      raise(400, field .. ".contextHashes must be an array of strings")
    end
    for i, x in ipairs(h) do
      out.contextHashes[i] = check.string(x, format("%s.contextHashes[%d]", field, i - 1), { max = 256 })
    end
  end
  return out
end
M.check_build_info = check_build_info

--- A snapshot name as the API takes it; raises 400 naming `field`.
function M.check_name(v, field)
  check.string(v, field, { max = 255 })
  if not valid_ref(v) then
    raise(400, field .. ": Invalid snapshot name format. May contain letters, digits, dots, colons, and dashes")
  end
  return v
end

--- Validate a CreateSnapshot body; returns the accepted values, raises
-- 400 naming the field.
function M.check_create(body)
  local c = {}
  c.name = M.check_name(body.name, "name")
  if not absent(body.imageName) then c.imageName = M.check_image_name(body.imageName, "imageName") end
  if not absent(body.buildInfo) then c.buildInfo = check_build_info(body.buildInfo, "buildInfo") end
  if c.imageName and c.buildInfo then raise(400, "imageName and buildInfo cannot be used together: give one of them") end
  if not c.imageName and not c.buildInfo then raise(400, "imageName: Must specify an image name (or buildInfo)") end
  if not absent(body.entrypoint) then
    local e = body.entrypoint
    if type(e) == "string" then e = { e } end
    if type(e) ~= "table" or (next(e) ~= nil and e[1] == nil) then
      raise(400, "entrypoint must be an array of strings")
    end
    c.entrypoint = {}
    for i, x in ipairs(e) do
      x = check.string(x, format("entrypoint[%d]", i - 1), { empty = true })
      if x:match("%S") then c.entrypoint[#c.entrypoint + 1] = x end
    end
    if #c.entrypoint == 0 then c.entrypoint = nil end
  end
  for _, f in ipairs({ "cpu", "memory", "disk" }) do
    if not absent(body[f]) then c[f] = check.integer(body[f], f, 1, 1024) end
  end
  if not absent(body.gpu) and check.integer(body.gpu, "gpu", 0, 64) > 0 then
    raise(400, "gpu: GPUs are not available locally")
  end
  if not absent(body.gpuType) then
    local g = body.gpuType
    if type(g) ~= "table" or (next(g) ~= nil and g[1] == nil) then raise(400, "gpuType must be an array") end
    if #g > 0 then raise(400, "gpuType: GPUs are not available locally") end
  end
  if not absent(body.regionId) then c.regionId = check.string(body.regionId, "regionId", { max = 255 }) end
  if not absent(body.sandboxClass) then
    local sc = check.string(body.sandboxClass, "sandboxClass", { max = 32 })
    if sc ~= "container" then
      raise(400, format("sandboxClass: %q is not available locally (dtlocal runs container sandboxes)", sc))
    end
  end
  return c
end

---------------------------------------------------------------------------
-- The manager
---------------------------------------------------------------------------

local Snapshots = {}
Snapshots.__index = Snapshots
Snapshots.__name = "dtlocal.Snapshots"

--- The snapshots of a server. opts: store (dtlocal.control.store), log,
-- images (the image store, dtlocal.images.store, or nil: no image can be
-- pulled), builder (function(build_info, opts) -> image id: runs a
-- Dockerfile; nil: only `FROM <image>` Dockerfiles), started_at (ISO time
-- of the built-ins), in_use (function(snap) -> id of a sandbox created
-- from it, or nil), image_used (function(image_id) -> whether a sandbox
-- still runs on that image).
function M.new(opts)
  local dir = opts.store.dir .. "/snapshots"
  local ok, msg = fs.mkdirs(dir, 448)
  if not ok then error("cannot create the state directory: " .. msg, 0) end
  return setmetatable({
    dir = dir,
    log = opts.log or function() end,
    images = opts.images,
    builder = opts.builder,
    started_at = opts.started_at or record.iso(),
    in_use = opts.in_use or function() return nil end,
    image_used = opts.image_used or function() return false end,
    by_id = {},
    jobs = {},     -- id -> task of a running pull/build
    logs = {},     -- id -> live buildlog
    builds = {},   -- snapshotRef -> image id (the build cache, builds.json)
  }, Snapshots)
end

--- The directory of a made snapshot (its record and build log).
function Snapshots:snapshot_dir(id) return self.dir .. "/" .. id end
--- Where a snapshot's build log is.
function Snapshots:log_path(id) return self:snapshot_dir(id) .. "/build.log" end

--- Save a record atomically.
function Snapshots:save(rec)
  local d = self:snapshot_dir(rec.id)
  local ok, msg = util.mkdir(d, 448)
  if not ok and util.stat(d, true) == nil then error("cannot save snapshot " .. rec.id .. ": " .. tostring(msg), 0) end
  ok, msg = store_mod.write_atomic(d .. "/snapshot.json", json.encode(rec))
  if not ok then error("cannot save snapshot " .. rec.id .. ": " .. tostring(msg), 0) end
end

-- Save the build cache (snapshotRef -> image id) as builds.json.
local function save_builds(self)
  local ok, msg = store_mod.write_atomic(self.dir .. "/builds.json", json.encode(self.builds))
  if not ok then self.log("cannot save the build cache: %s", tostring(msg)) end
end

--- Move a record to a state (with a reason for error/build_failed), save.
function Snapshots:set_state(rec, state, reason)
  local old = rec.state
  rec.state = state
  rec.updatedAt = record.iso()
  if state == "error" or state == "build_failed" then
    rec.errorReason = reason
  else
    rec.errorReason = nil
  end
  self:save(rec)
  if old ~= state then
    self.log("snapshot %s (%s): %s -> %s%s", rec.id, rec.name, old or "-", state,
      reason and (" (" .. reason .. ")") or "")
  end
end

--- Load the records; jobs interrupted by a restart run again.
function Snapshots:load()
  local names = util.readdir(self.dir) or {}
  table.sort(names)
  local rerun = {}
  for _, name in ipairs(names) do
    local path = self.dir .. "/" .. name .. "/snapshot.json"
    if record.is_uuid(name) and util.stat(path) then
      local rec, err = store_mod.read_json(path)
      if type(rec) == "table" and rec.id == name then
        rec.dtlocal = type(rec.dtlocal) == "table" and rec.dtlocal or {}
        if rec.state == "removing" then
          self:finish_delete(rec)
        else
          self.by_id[rec.id] = rec
          if rec.state == "pending" or rec.state == "pulling" or rec.state == "building" then
            rerun[#rerun + 1] = rec
          end
        end
      else
        self.log("ignoring %s: %s", path, err or "not a record of " .. name)
      end
    end
  end
  local b = store_mod.read_json(self.dir .. "/builds.json")
  if type(b) == "table" then
    for k, v in pairs(b) do if type(k) == "string" and type(v) == "string" then self.builds[k] = v end end
  end
  for _, rec in ipairs(rerun) do
    -- a sandbox's snapshot cannot be made again: its files may have changed
    if rec.dtlocal.from_sandbox then
      self:set_state(rec, "build_failed", "the server stopped while the snapshot was being made; delete it and make it again")
    else
      self:start_job(rec)
    end
  end
end

---------------------------------------------------------------------------
-- Lookup
---------------------------------------------------------------------------

--- A made snapshot by id or name, or nil.
function Snapshots:lookup(key)
  local rec = self.by_id[key]
  if rec then return rec end
  for _, r in pairs(self.by_id) do
    if r.name == key then return r end
  end
  return nil
end

--- A snapshot (made or built-in) by id or name; 404 as the API answers.
function Snapshots:find(key)
  local s = self:lookup(key) or M.builtin(key)
  if not s then raise(404, format("Snapshot %s not found", key)) end
  return s
end

--- A made snapshot by id or name for the routes that change one: a
-- built-in one is refused (403, as the API refuses general snapshots).
function Snapshots:find_own(key, what)
  local s = self:find(key)
  if s.builtin then raise(403, format("You cannot %s a general snapshot (%s is the host's system)", what, s.name)) end
  return s
end

--- The snapshot a sandbox create names, as the API resolves it: 400
-- `Snapshot X not found. ...` for none, 400 `Snapshot X is <state>` for one
-- that is not active.
function Snapshots:for_sandbox(name)
  local s = self:lookup(name) or M.builtin(name)
  if not s then
    local why = NOT_LOCAL[name]
    if why then raise(400, format("snapshot: %s is not available locally: %s", name, why)) end
    raise(400, format("Snapshot %s not found. Did you add it through the Daytona Dashboard?", name))
  end
  if not s.builtin and s.state ~= "active" then raise(400, format("Snapshot %s is %s", name, s.state)) end
  if not s.builtin then
    s.lastUsedAt = record.iso()
    pcall(self.save, self, s)
  end
  return s
end

--- Every made snapshot (unordered).
function Snapshots:all()
  local out = {}
  for _, r in pairs(self.by_id) do out[#out + 1] = r end
  return out
end

---------------------------------------------------------------------------
-- Wire shape
---------------------------------------------------------------------------

--- The SnapshotDto of a made or built-in snapshot.
function Snapshots:wire(s)
  if s.builtin then
    local t = self.started_at
    return {
      id = s.id, organizationId = record.ORGANIZATION_ID, general = true, name = s.name,
      imageName = "the host's root file system", state = "active", size = json.null,
      entrypoint = json.array(), cpu = s.cpu, gpu = 0, mem = s.mem, disk = s.disk,
      errorReason = json.null, createdAt = t, updatedAt = t, lastUsedAt = json.null,
      regionIds = json.array({ record.TARGET }), sandboxClass = "container", ref = s.name,
    }
  end
  local o = {
    id = s.id, organizationId = s.organizationId, general = false, name = s.name,
    imageName = s.imageName or json.null, state = s.state, size = s.size or json.null,
    entrypoint = s.entrypoint and json.array(record.copy(s.entrypoint)) or json.null,
    cpu = s.cpu, gpu = s.gpu, mem = s.mem, disk = s.disk,
    errorReason = s.errorReason or json.null, createdAt = s.createdAt, updatedAt = s.updatedAt,
    lastUsedAt = s.lastUsedAt or json.null, regionIds = json.array({ s.regionId or record.TARGET }),
    sandboxClass = "container", ref = s.ref,
  }
  if s.buildInfo then
    o.buildInfo = record.copy(s.buildInfo)
    o.buildInfo.contextHashes = json.array(o.buildInfo.contextHashes or {})
  end
  return o
end

-- Sort keys of the list: name, state, lastUsedAt, createdAt; nil last.
local SORT = { name = true, state = true, lastUsedAt = true, createdAt = true }

--- One page of the snapshots matching `q` ({ name (substring, any case),
-- sort, order, page, limit }): { items, total, page, totalPages } with
-- `total` counting every match. Built-ins are listed last, as the API
-- lists general snapshots.
function Snapshots:list(q)
  if not SORT[q.sort] then raise(400, "sort must be one of name, state, lastUsedAt, createdAt") end
  if q.order ~= "asc" and q.order ~= "desc" then raise(400, "order must be asc or desc") end
  local needle = q.name and q.name ~= "" and q.name:lower() or nil
  local function match(name) return not needle or name:lower():find(needle, 1, true) ~= nil end
  local own = {}
  for _, r in pairs(self.by_id) do
    if r.state ~= "removing" and match(r.name) then own[#own + 1] = r end
  end
  local key, desc = q.sort, q.order == "desc"
  table.sort(own, function(a, b)
    local ka, kb = a[key], b[key]
    if ka ~= kb then
      if ka == nil then return false end
      if kb == nil then return true end
      if desc then return ka > kb end
      return ka < kb
    end
    if a.createdAt ~= b.createdAt then return a.createdAt > b.createdAt end
    return a.id < b.id
  end)
  for _, b in ipairs(M.BUILTIN) do
    if match(b.name) then own[#own + 1] = b end
  end
  local items = json.array()
  local first = (q.page - 1) * q.limit + 1
  for i = first, math.min(#own, first + q.limit - 1) do items[#items + 1] = self:wire(own[i]) end
  return { items = items, total = #own, page = q.page, totalPages = math.ceil(#own / q.limit) }
end

---------------------------------------------------------------------------
-- Images: pull and build (the image store's and the builder's)
---------------------------------------------------------------------------

--- Pull `ref` into the image store, its progress into `log`; returns the
-- image (the store's: { id, ... }). Raises a plain error saying why.
function Snapshots:pull(ref, log)
  if not self.images then
    error("this dtlocal has no image store: it cannot pull " .. ref, 0)
  end
  log:line("Pulling " .. ref)
  local img, msg = self.images:pull(ref, { on_log = function(line) log:line(line) end })
  if not img then error(msg, 0) end
  log:line(format("Pulled %s (image %s)", img.ref or ref, tostring(img.id)))
  return img
end

--- Whether a buildInfo can be built here; raises 400 naming the field when not.
function Snapshots:check_build(build_info, field)
  if M.from_only(build_info.dockerfileContent) then
    local ref = M.from_only(build_info.dockerfileContent)
    M.check_pull_ref(ref, field .. ".dockerfileContent")
    return
  end
  if not self.builder then
    raise(400, field .. ": dtlocal cannot run Dockerfile steps yet (only `FROM <image>`); "
      .. "create from an image name, or run against Daytona's cloud")
  end
end

--- An image reference a pull takes (looser than CreateSnapshot's
-- imageName: a Dockerfile's FROM may name :latest or no tag).
function M.check_pull_ref(ref, field)
  if not valid_ref(ref) then raise(400, format("%s: %q is not an image reference", field, ref)) end
  return ref
end

--- The content key of a build (Daytona's snapshotRef): the Dockerfile and
-- the context hashes.
function M.build_ref(build_info)
  local parts = { build_info.dockerfileContent }
  for _, h in ipairs(build_info.contextHashes or {}) do parts[#parts + 1] = h end
  return "dtlocal-build-" .. util.sha256(table.concat(parts, "\0")):sub(1, 32)
end

--- The image already made for a buildInfo (the build cache), or nil.
function Snapshots:cached_build(build_info)
  local id = self.builds[M.build_ref(build_info)]
  if id and self.images and self.images:image(id) then return id end
  return nil
end

--- The image of a buildInfo: a cached build, a pull (`FROM <image>`
-- only) or the builder's run; progress into `log`. Returns the image id.
function Snapshots:resolve_build(build_info, log)
  local ref = M.build_ref(build_info)
  local cached = self.builds[ref]
  if cached and self.images and self.images:image(cached) then
    log:line("Using the image built before for this definition (" .. ref .. ")")
    return cached
  end
  local from = M.from_only(build_info.dockerfileContent)
  local id
  if from then
    id = self:pull(from, log).id
  else
    if not self.builder then error("dtlocal cannot run Dockerfile steps", 0) end
    id = self.builder(build_info, { on_log = function(line) log:line(line) end })
    if type(id) == "table" then id = id.id end
  end
  self.builds[ref] = id
  save_builds(self)
  return id
end

---------------------------------------------------------------------------
-- Create, delete, activate
---------------------------------------------------------------------------

-- The API's snapshot size: GB (a float), from bytes.
local function gb(bytes) return math.floor(bytes / 2^30 * 1000 + 0.5) / 1000 end

-- The job of a snapshot: pull or build its image, then active; a failure
-- is `error` (pull) or `build_failed` (build) with the reason, in the log too.
function Snapshots:job(rec)
  local log = buildlog.open(self:log_path(rec.id))
  self.logs[rec.id] = log
  local failed = rec.buildInfo and "build_failed" or "error"
  local ok, err = pcall(function()
    local img
    if rec.buildInfo then
      self:set_state(rec, "building")
      img = self:resolve_build(rec.buildInfo, log)
    else
      self:set_state(rec, "pulling")
      img = self:pull(rec.imageName, log).id
    end
    rec.dtlocal.image = img
    local info = self.images and self.images:image(img)
    if type(info) == "table" then
      if type(info.size) == "number" then rec.size = gb(info.size) end
      local ep = type(info.config) == "table" and info.config.entrypoint
      if not rec.entrypoint and type(ep) == "table" and #ep > 0 then rec.entrypoint = ep end
    end
    rec.entrypoint = rec.entrypoint or { "sleep", "infinity" }
    log:line(format("Snapshot %s is active", rec.name))
    self:set_state(rec, "active")
  end)
  if not ok then
    if errors.is(err, errors.CancelledError) then log:finish(); error(err, 0) end
    local why = http.is_http_error(err) and err.message or tostring(err)
    log:line("ERROR: " .. why)
    if self.by_id[rec.id] then pcall(self.set_state, self, rec, failed, why) end
  end
  log:finish()
end

--- Run a snapshot's job (pull or build) in a task of its own.
function Snapshots:start_job(rec)
  local t = scheduler.spawn(function()
    local ok, err = pcall(self.job, self, rec)
    self.jobs[rec.id] = nil
    if not ok and not errors.is(err, errors.CancelledError) then
      self.log("snapshot %s: %s", rec.id, tostring(err))
    end
  end)
  t.observed = true
  t.name = "snapshot " .. rec.id
  self.jobs[rec.id] = t
end

-- A new record (state pending) for validated values c; 409 for a taken name.
function Snapshots:new_record(c)
  if self:lookup(c.name) or M.builtin(c.name) or NOT_LOCAL[c.name] then
    raise(409, format('Snapshot with name "%s" already exists for this organization', c.name))
  end
  local now = record.iso()
  local id = record.uuid()
  local rec = {
    id = id, organizationId = record.ORGANIZATION_ID, general = false, name = c.name,
    imageName = c.imageName, state = "pending", entrypoint = c.entrypoint,
    cpu = c.cpu or record.DEFAULTS.cpu, gpu = 0, mem = c.memory or record.DEFAULTS.memory,
    disk = c.disk or record.DEFAULTS.disk, createdAt = now, updatedAt = now,
    regionId = c.regionId, ref = c.imageName or nil,
    dtlocal = {},
  }
  if c.buildInfo then
    rec.buildInfo = {
      dockerfileContent = c.buildInfo.dockerfileContent,
      contextHashes = c.buildInfo.contextHashes or {},
      createdAt = now, updatedAt = now, snapshotRef = M.build_ref(c.buildInfo),
    }
    rec.ref = rec.buildInfo.snapshotRef
  end
  return rec
end

--- Create a snapshot from validated values (check_create): recorded as
-- `pending` at once, its image pulled or built in a task.
function Snapshots:create(c)
  if c.buildInfo then self:check_build(c.buildInfo, "buildInfo") end
  local rec = self:new_record(c)
  -- a definition built before: active at once, as the API makes it when
  -- a runner has the build
  local cached = c.buildInfo and self:cached_build(c.buildInfo)
  if cached then
    rec.state, rec.dtlocal.image = "active", cached
    local info = self.images:image(cached)
    if type(info.size) == "number" then rec.size = gb(info.size) end
    rec.entrypoint = rec.entrypoint or { "sleep", "infinity" }
  end
  self:save(rec)
  self.by_id[rec.id] = rec
  if cached then
    local log = buildlog.open(self:log_path(rec.id))
    log:line("Using the image built before for this definition (" .. rec.buildInfo.snapshotRef .. ")")
    log:finish()
  else
    self:start_job(rec)
  end
  return rec
end

--- Record a snapshot whose image `make(log)` produces (a sandbox's files):
-- `building` until it returns the image id (and true when that image is a
-- seed, dtlocal.control.capture), then active; `build_failed` with the
-- reason. Runs make in a task; returns the record at once.
function Snapshots:create_from(c, make, on_done)
  local rec = self:new_record(c)
  rec.dtlocal.from_sandbox = c.from_sandbox
  self:save(rec)
  self.by_id[rec.id] = rec
  local t = scheduler.spawn(function()
    local log = buildlog.open(self:log_path(rec.id))
    self.logs[rec.id] = log
    local ok, err = pcall(function()
      self:set_state(rec, "building")
      -- seed: files to fill a new sandbox's directory with, not an image to run on
      rec.dtlocal.image, rec.dtlocal.seed = make(log)
      local info = self.images and self.images:image(rec.dtlocal.image)
      if type(info) == "table" and type(info.size) == "number" then rec.size = gb(info.size) end
      rec.entrypoint = rec.entrypoint or { "sleep", "infinity" }
      log:line(format("Snapshot %s is active", rec.name))
      self:set_state(rec, "active")
    end)
    if not ok then
      local why = http.is_http_error(err) and err.message or tostring(err)
      log:line("ERROR: " .. why)
      if self.by_id[rec.id] then pcall(self.set_state, self, rec, "build_failed", why) end
    end
    log:finish()
    self.jobs[rec.id] = nil
    if on_done then on_done(ok, err) end
  end)
  t.observed = true
  t.name = "snapshot " .. rec.id
  self.jobs[rec.id] = t
  return rec
end

--- Remove an image from the store unless a snapshot, a sandbox or the
-- build cache still uses it (its layers go with it when no other image
-- has them).
function Snapshots:release_image(img)
  if not img or not self.images then return end
  if self.image_used(img) then return end
  for _, r in pairs(self.by_id) do
    if r.dtlocal.image == img then return end
  end
  for _, v in pairs(self.builds) do if v == img then return end end
  local ok, err = self.images:remove_image(img)
  if not ok then self.log("cannot remove image %s: %s", img, tostring(err)) end
end

-- Remove a snapshot's files and its image (when nothing else uses it).
function Snapshots:finish_delete(rec)
  self.by_id[rec.id] = nil
  self:release_image(rec.dtlocal and rec.dtlocal.image)
  local d = self:snapshot_dir(rec.id)
  os.remove(d .. "/build.log")
  os.remove(d .. "/snapshot.json")
  os.remove(d)
  self.logs[rec.id] = nil
  self.log("snapshot %s (%s): deleted", rec.id, rec.name)
end

--- Delete a snapshot: 409 while a sandbox created from it exists; a pull
-- or build under way is stopped.
function Snapshots:delete(rec)
  local user = self.in_use(rec)
  if user then
    raise(409, format("Snapshot %s is in use by sandbox %s; delete the sandbox first", rec.name, user))
  end
  local job = self.jobs[rec.id]
  if job and not job:done() then
    job:cancel()
    pcall(scheduler.timeout, 10, function() while not job:done() do scheduler.wait(job) end end)
  end
  rec.state = "removing"
  self:save(rec)
  self:finish_delete(rec)
end

--- Activate an inactive snapshot (400 for any other state, as the API).
function Snapshots:activate(rec)
  if rec.state == "active" then raise(400, format("Snapshot %s is already active", rec.id)) end
  if rec.state ~= "inactive" then
    raise(400, format("Snapshot %s cannot be activated - it is in %s state", rec.id, rec.state))
  end
  rec.lastUsedAt = record.iso()
  self:set_state(rec, "active")
  return rec
end

--- Deactivate a snapshot (an inactive one stays so).
function Snapshots:deactivate(rec)
  if rec.state == "inactive" then return rec end
  if rec.state ~= "active" then
    raise(400, format("Snapshot %s cannot be deactivated - it is in %s state", rec.id, rec.state))
  end
  self:set_state(rec, "inactive")
  return rec
end

--- Stop the jobs (server shutdown); their records stay as they are and
-- the jobs run again at the next start.
function Snapshots:shutdown()
  for _, t in pairs(self.jobs) do if not t:done() then t:cancel() end end
end

return M
