--- dtlocal.control.routes: the control-plane routes under /api (doc/protocol.md §3).
--
-- Handlers are dtlocal.http's: `function(ctx, params) -> status, body
-- [, headers]`, ctx.app the server (dtlocal.control: ctx.app.mgr, ctx.app.vols,
-- urls). They raise `http.raise(status, message)` for every error, which
-- becomes the structured error body (doc/protocol.md §6.1, §7.3.4).
local http = require "dtlocal.http"
local router = require "dtlocal.router"
local record = require "dtlocal.control.record"
local volumes = require "dtlocal.control.volumes"
local snapshots = require "dtlocal.control.snapshots"
local buildlog = require "dtlocal.control.buildlog"

local type, pairs, ipairs, tostring, tonumber, next, math, table =
  type, pairs, ipairs, tostring, tonumber, next, math, table
local format = string.format
local raise = http.raise
local json = http.json
local check = record.check
local absent = record.absent

local M = {}

---------------------------------------------------------------------------
-- Request helpers
---------------------------------------------------------------------------

-- The single value of a query parameter (the first), or nil.
local function q1(ctx, name)
  return ctx.query[name]
end

local function qbool(ctx, name)
  local v = q1(ctx, name)
  if v == nil or v == "" then return nil end
  if v == "true" then return true end
  if v == "false" then return false end
  raise(400, format("%s must be true or false", name))
end

local function qint(ctx, name, lo, hi)
  local v = q1(ctx, name)
  if v == nil or v == "" then return nil end
  local n = math.tointeger(tonumber(v))
  if not n or (lo and n < lo) or (hi and n > hi) then
    raise(400, format("%s must be an integer%s", name,
      lo and hi and format(" from %d to %d", lo, hi) or lo and format(" >= %d", lo) or ""))
  end
  return n
end

local function qnum(ctx, name)
  local v = q1(ctx, name)
  if v == nil or v == "" then return nil end
  local n = tonumber(v)
  if not n or n ~= n then raise(400, name .. " must be a number") end
  return n
end

local function qtime(ctx, name)
  local v = q1(ctx, name)
  if v == nil or v == "" then return nil end
  local ms = record.parse_iso(v)
  if not ms then raise(400, name .. " must be an ISO-8601 date-time") end
  return ms
end

local function path_int(v, name, lo, hi)
  local n = math.tointeger(tonumber(v))
  if not n or tostring(n) ~= v:gsub("^%+", "") or n < lo or (hi and n > hi) then
    raise(400, format("%s must be an integer%s", name, hi and format(" from %d to %d", lo, hi) or ""))
  end
  return n
end

local function path_bool(v, name)
  if v == "true" then return true end
  if v == "false" then return false end
  raise(400, name .. " must be true or false")
end

---------------------------------------------------------------------------
-- Sandbox routes
---------------------------------------------------------------------------

local function sb(ctx, rec, status)
  return status or 200, record.wire(rec, ctx.app.toolbox_url, false)
end

local function find(ctx, params)
  return ctx.app.mgr:find(params.id)
end

-- Find by id only (routes that require the id, §3.1).
local function find_id(ctx, params)
  local rec = ctx.app.mgr.by_id[params.id]
  if not rec then raise(404, format("Sandbox with ID %s not found", params.id)) end
  return rec
end

local function create(ctx)
  local c = record.check_create(ctx:json_object(true))
  local rec = ctx.app.mgr:create(c)
  return sb(ctx, rec)
end

-- Sort keys of the list (doc/protocol.md §3.5), as functions of a record.
local SORT = {
  createdAt = function(r) return r.dtlocal.created_ms end,
  lastActivityAt = function(r) return r.dtlocal.activity_ms end,
  name = function(r) return r.name end,
  cpu = function(r) return r.cpu end,
  memoryGib = function(r) return r.memory end,
  diskGib = function(r) return r.disk end,
}

local function set_of(list)
  if not list or #list == 0 then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- Filters shared by the cursor and page listings.
local function filtered(ctx)
  local labels
  local ltext = q1(ctx, "labels")
  if ltext and ltext ~= "" then
    local v = json.decode(ltext)
    if type(v) ~= "table" or (next(v) ~= nil and v[1] ~= nil) then
      raise(400, "labels must be a JSON-encoded object of strings, e.g. {\"env\":\"dev\"}")
    end
    for k, x in pairs(v) do
      if type(x) ~= "string" then raise(400, format("labels.%s must be a string", k)) end
    end
    labels = v
  end
  local idp = q1(ctx, "id"); idp = idp and idp ~= "" and idp:lower() or nil
  local namep = q1(ctx, "name"); namep = namep and namep ~= "" and namep:lower() or nil
  local states = set_of(ctx:query_all("states"))
  if states then
    for s in pairs(states) do
      if not record.STATES[s] then raise(400, format("states: %q is not a sandbox state", s)) end
    end
  end
  local snapshots = set_of(ctx:query_all("snapshots"))
  local regions = set_of(ctx:query_all("regionIds")) or set_of(ctx:query_all("regions"))
  local classes = set_of(ctx:query_all("sandboxClasses"))
  local min_cpu, max_cpu = qnum(ctx, "minCpu"), qnum(ctx, "maxCpu")
  local min_mem, max_mem = qnum(ctx, "minMemoryGiB"), qnum(ctx, "maxMemoryGiB")
  local min_disk, max_disk = qnum(ctx, "minDiskGiB"), qnum(ctx, "maxDiskGiB")
  local public = qbool(ctx, "isPublic")
  local recoverable = qbool(ctx, "isRecoverable")
  qbool(ctx, "includeErroredDeleted")   -- deleted sandboxes are gone locally
  local c_after, c_before = qtime(ctx, "createdAtAfter"), qtime(ctx, "createdAtBefore")
  local e_after, e_before = qtime(ctx, "lastEventAfter"), qtime(ctx, "lastEventBefore")
  local out = {}
  for _, r in ipairs(ctx.app.mgr:all()) do
    local d = r.dtlocal
    local ok = r.state ~= "destroyed"
      and (not idp or r.id:lower():sub(1, #idp) == idp)
      and (not namep or r.name:lower():sub(1, #namep) == namep)
      and (not states or states[r.state])
      and (not snapshots or (r.snapshot and snapshots[r.snapshot]))
      and (not regions or regions[r.target])
      and (not classes or classes[r.sandboxClass])
      and (not min_cpu or r.cpu >= min_cpu) and (not max_cpu or r.cpu <= max_cpu)
      and (not min_mem or r.memory >= min_mem) and (not max_mem or r.memory <= max_mem)
      and (not min_disk or r.disk >= min_disk) and (not max_disk or r.disk <= max_disk)
      and (public == nil or r.public == public)
      and (recoverable == nil or (r.recoverable or false) == recoverable)
      and (not c_after or d.created_ms > c_after) and (not c_before or d.created_ms < c_before)
      and (not e_after or d.activity_ms > e_after) and (not e_before or d.activity_ms < e_before)
    if ok and labels then
      for k, v in pairs(labels) do
        if r.labels[k] ~= v then ok = false; break end
      end
    end
    if ok then out[#out + 1] = r end
  end
  local sort = q1(ctx, "sort") or "createdAt"
  if sort == "" then sort = "createdAt" end
  local key = SORT[sort]
  if not key then raise(400, "sort must be one of name, cpu, memoryGib, diskGib, lastActivityAt, createdAt") end
  local order = q1(ctx, "order") or "desc"
  if order == "" then order = "desc" end
  if order ~= "asc" and order ~= "desc" then raise(400, "order must be asc or desc") end
  local desc = order == "desc"
  table.sort(out, function(a, b)
    local ka, kb = key(a), key(b)
    if ka ~= kb then
      if desc then return ka > kb end
      return ka < kb
    end
    if desc then return a.id > b.id end
    return a.id < b.id
  end)
  return out, sort, order, key
end

-- Cursors are opaque to clients: hex of the JSON [sort, order, key, id] of
-- the last item of the previous page, so that deletions between pages do
-- not shift the next one.
local function encode_cursor(sort, order, k, id)
  return (json.encode({ sort, order, k, id }):gsub(".", function(c) return format("%02x", c:byte()) end))
end

local function decode_cursor(s)
  if #s % 2 ~= 0 or s:find("[^%x]") then return nil end
  local text = s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  local v = json.decode(text)
  if type(v) ~= "table" or #v ~= 4 or type(v[4]) ~= "string" then return nil end
  return v
end

local function list(ctx)
  local limit = qint(ctx, "limit", 1, 200) or 100
  local recs, sort, order, key = filtered(ctx)
  local start = 1
  local cursor = q1(ctx, "cursor")
  if cursor and cursor ~= "" then
    local c = decode_cursor(cursor)
    if not c then raise(400, "cursor is not a cursor from a previous page") end
    if c[1] ~= sort or c[2] ~= order then
      raise(400, "cursor belongs to a listing with another sort or order")
    end
    local ck, cid = c[3], c[4]
    local desc = order == "desc"
    start = #recs + 1
    for i, r in ipairs(recs) do
      local k = key(r)
      local after
      if type(k) ~= type(ck) then
        after = false
      elseif k ~= ck then
        if desc then after = k < ck else after = k > ck end
      else
        if desc then after = r.id < cid else after = r.id > cid end
      end
      if after then start = i; break end
    end
  end
  local items = json.array()
  local last = math.min(#recs, start + limit - 1)
  for i = start, last do
    items[#items + 1] = record.wire(recs[i], ctx.app.toolbox_url, true)
  end
  local next_cursor = json.null
  if last < #recs and last >= start then
    local r = recs[last]
    next_cursor = encode_cursor(sort, order, key(r), r.id)
  end
  return 200, { items = items, nextCursor = next_cursor }
end

-- The deprecated page-number listing (GET /sandbox/paginated).
local function list_paginated(ctx)
  local page = qint(ctx, "page", 1) or 1
  local limit = qint(ctx, "limit", 1, 200) or 100
  local recs = filtered(ctx)
  local items = json.array()
  for i = (page - 1) * limit + 1, math.min(#recs, page * limit) do
    items[#items + 1] = record.wire(recs[i], ctx.app.toolbox_url, false)
  end
  return 200, { items = items, total = #recs, page = page,
                totalPages = math.max(1, (#recs + limit - 1) // limit) }
end

local function get(ctx, params)
  return sb(ctx, find(ctx, params))
end

local function delete(ctx, params)
  local rec = find(ctx, params)
  ctx.app.mgr:delete(rec)
  return sb(ctx, rec)
end

-- A start (or recover) that ended in `error` is the request's 400.
local function started(ctx, rec)
  if rec.state == "error" then
    raise(400, "Sandbox failed to start: " .. tostring(rec.errorReason))
  end
  return sb(ctx, rec)
end

local function start(ctx, params)
  local rec = find(ctx, params)
  ctx.app.mgr:start(rec)
  return started(ctx, rec)
end

local function stop(ctx, params)
  local rec = find(ctx, params)
  ctx.app.mgr:stop(rec, qbool(ctx, "force") or false)
  return sb(ctx, rec)
end

local function recover(ctx, params)
  local rec = find(ctx, params)
  ctx.app.mgr:recover(rec, qbool(ctx, "skipStart"))
  return started(ctx, rec)
end

local function archive(ctx, params)
  local rec = find(ctx, params)
  ctx.app.mgr:archive(rec)
  return sb(ctx, rec)
end

-- Resize, with the API's rules: a started sandbox may only grow CPU and
-- memory, which apply at once to its cgroup (where dtlocal enforces them,
-- doc/dtlocal.md); disk needs a stopped sandbox and may only grow (it is
-- recorded, not enforced). A stopped sandbox gets its new limits at start.
local function resize(ctx, params)
  local rec = find(ctx, params)
  local body = ctx:json_object(true)
  if not absent(body.gpu) or not absent(body.gpuType) then
    raise(400, "gpu: GPU resources cannot be resized")
  end
  local cpu = not absent(body.cpu) and check.integer(body.cpu, "cpu", 1, 1024) or nil
  local memory = not absent(body.memory) and check.integer(body.memory, "memory", 1, 1024) or nil
  local disk = not absent(body.disk) and check.integer(body.disk, "disk", 1, 1024) or nil
  if not cpu and not memory and not disk then
    raise(400, "at least one of cpu, memory or disk is required")
  end
  ctx.app.mgr:resize(rec, { cpu = cpu, memory = memory, disk = disk })
  return sb(ctx, rec)
end

local function set_labels(ctx, params)
  local rec = find(ctx, params)
  local body = ctx:json_object(true)
  if absent(body.labels) then raise(400, "labels is required") end
  local labels = record.check_labels(body.labels)
  local lang = labels[record.LANGUAGE_LABEL]
  if lang and not record.LANGUAGES[lang] then
    raise(400, format("labels.%s must be one of python, typescript, javascript", record.LANGUAGE_LABEL))
  end
  rec.labels = labels
  ctx.app.mgr:update(rec)
  return 200, { labels = rec.labels }
end

local function interval_route(field, lo, adjust)
  return function(ctx, params)
    local rec = find(ctx, params)
    local n = path_int(params.interval, "interval", lo or record.MIN_INTERVAL, record.MAX_INTERVAL)
    rec[field] = adjust and adjust(n) or n
    ctx.app.mgr:update(rec)
    return sb(ctx, rec, 201)
  end
end

local function set_public(ctx, params)
  local rec = find(ctx, params)
  rec.public = path_bool(params.isPublic, "isPublic")
  ctx.app.mgr:update(rec)
  return sb(ctx, rec, 201)
end

local function network_settings(ctx, params)
  local rec = find(ctx, params)
  local body = ctx:json_object(true)
  local block
  if not absent(body.networkBlockAll) then block = check.boolean(body.networkBlockAll, "networkBlockAll") end
  local allow = not absent(body.networkAllowList) and check.cidr_list(body.networkAllowList, "networkAllowList") or nil
  record.refuse_allow_list(allow, "networkAllowList", ctx.app.net ~= nil)
  local domains = not absent(body.domainAllowList) and check.domain_list(body.domainAllowList, "domainAllowList") or nil
  record.refuse_allow_list(domains, "domainAllowList", ctx.app.net ~= nil)
  if block == nil and allow == nil and domains == nil then
    raise(400, "at least one of networkBlockAll, networkAllowList or domainAllowList is required")
  end
  ctx.app.mgr:set_network(rec, { block_all = block, allow_list = allow, domain_allow_list = domains })
  return sb(ctx, rec)
end

local function last_activity(ctx, params)
  local rec = find_id(ctx, params)
  ctx.app.mgr:touch(rec)
  return 201, nil
end

local function port_of(params)
  return path_int(params.port, "port", 1, 65535)
end

local function preview_url(ctx, params)
  local rec = find(ctx, params)
  local port = port_of(params)
  return 200, {
    sandboxId = rec.id,
    url = ctx.app:preview_url(rec, port),
    token = ctx.app:preview_token(rec),
  }
end

local function signed_preview_url(ctx, params)
  local rec = find(ctx, params)
  local port = port_of(params)
  local expires = qint(ctx, "expiresInSeconds", 1, 86400)
  if q1(ctx, "expiresInSeconds") and not expires then expires = 60 end
  expires = expires or 60
  local token = ctx.app:sign_preview(rec, port, expires)
  return 200, {
    sandboxId = rec.id, port = port, token = token,
    url = ctx.app:signed_preview_url(token),
  }
end

local function expire_signed(ctx, params)
  local rec = find(ctx, params)
  local port = port_of(params)
  local s = rec.dtlocal.signed[params.token]
  if not s or s.port ~= port then
    raise(404, "Signed preview URL not found")
  end
  ctx.app:expire_preview(rec, params.token)
  return 201, nil
end

local function toolbox_proxy_url(ctx, params)
  find_id(ctx, params)
  return 200, { url = ctx.app.toolbox_url }
end

local function not_local(what)
  return function(ctx, params)
    if params and params.id then find(ctx, params) end
    raise(501, what .. " is not available with the local server (dtlocal)", "NOT_IMPLEMENTED")
  end
end

-- short-lived S3 credentials for the build contexts (dtlocal.control.objects)
local function push_access(ctx)
  return 200, ctx.app.objects:push_access(ctx.app.base_url)
end

-- The build log of a sandbox created from an image (doc/protocol.md §3.9).
local function build_logs_url(ctx, params)
  local rec = find(ctx, params)
  if not rec.dtlocal.build_log then
    raise(404, format("Sandbox %s has no build logs: it was not created from an image", rec.id))
  end
  return 200, { url = format("%s/sandbox/%s/build-logs", ctx.app.api_url, rec.id) }
end

local function build_logs(ctx, params)
  local rec = find(ctx, params)
  if not rec.dtlocal.build_log then
    raise(404, format("Sandbox %s has no build logs: it was not created from an image", rec.id))
  end
  local mgr = ctx.app.mgr
  buildlog.serve(ctx, mgr:build_log_path(rec), mgr:rtof(rec).build_log, qbool(ctx, "follow"))
end

-- Snapshot a sandbox (experimental in the SDKs): answers with the sandbox
-- in `snapshotting`; the snapshot is listed at once (`building`).
local function snapshot_sandbox(ctx, params)
  local rec = find(ctx, params)
  local body = ctx:json_object(true)
  local name = snapshots.check_name(body.name, "name")
  if not absent(body.includeMemory) and check.boolean(body.includeMemory, "includeMemory") then
    raise(400, "includeMemory: container sandboxes do not support memory snapshots")
  end
  ctx.app.mgr:snapshot(rec, name)
  return sb(ctx, rec)
end

-- Fork a sandbox: answers with the new sandbox.
local function fork(ctx, params)
  local rec = find(ctx, params)
  local body = ctx:json_object(false) or {}
  local name = not absent(body.name) and check.name(body.name, "name") or nil
  local child = ctx.app.mgr:fork(rec, name)
  return started(ctx, child)
end

-- The live forks of a sandbox (includeDestroyed: destroyed ones are gone locally).
local function forks(ctx, params)
  local rec = find(ctx, params)
  qbool(ctx, "includeDestroyed")
  local out = json.array()
  for _, r in ipairs(ctx.app.mgr:all()) do
    if r.dtlocal.fork_parent == rec.id and not r.dtlocal.spare then
      out[#out + 1] = record.wire(r, ctx.app.toolbox_url, false)
    end
  end
  return 200, out
end

local function parent(ctx, params)
  local rec = find(ctx, params)
  local p = rec.dtlocal.fork_parent and ctx.app.mgr.by_id[rec.dtlocal.fork_parent]
  if not p then raise(404, format("Sandbox %s has no parent", rec.id)) end
  return sb(ctx, p)
end

-- The chain of parents, nearest first.
local function ancestors(ctx, params)
  local rec = find(ctx, params)
  local out, seen = json.array(), {}
  local p = rec.dtlocal.fork_parent and ctx.app.mgr.by_id[rec.dtlocal.fork_parent]
  while p and not seen[p.id] do
    seen[p.id] = true
    out[#out + 1] = record.wire(p, ctx.app.toolbox_url, false)
    p = p.dtlocal.fork_parent and ctx.app.mgr.by_id[p.dtlocal.fork_parent]
  end
  return 200, out
end

---------------------------------------------------------------------------
-- Configuration, snapshots, volumes
---------------------------------------------------------------------------

local function config(ctx)
  local app = ctx.app
  return 200, {
    version = record.DAEMON_VERSION,
    proxyToolboxUrl = app.toolbox_url,
    proxyTemplateUrl = app.preview_base .. "/preview/{{sandboxId}}/{{PORT}}",
    defaultSnapshot = record.DEFAULT_SNAPSHOT,
    dashboardUrl = app.api_url,
    maxAutoArchiveInterval = record.MAX_AUTO_ARCHIVE,
    maintananceMode = false,
    environment = "local",
    linkedAccountsEnabled = false,
    announcements = {},
    oidc = { issuer = "", clientId = "", audience = "" },
    sshGatewayCommand = "",
  }
end

-- Snapshots (doc/protocol.md §3.7): dtlocal.control.snapshots.

local function snapshot_dto(ctx, s) return 200, ctx.app.snaps:wire(s) end

-- Paged like the API's list: `total` counts every match, `items` is the
-- page of them.
local function list_snapshots(ctx)
  local sort = q1(ctx, "sort")
  local order = q1(ctx, "order")
  return 200, ctx.app.snaps:list{
    page = qint(ctx, "page", 1) or 1,
    limit = qint(ctx, "limit", 1, 200) or 100,
    name = q1(ctx, "name"),
    sort = (sort == nil or sort == "") and "lastUsedAt" or sort,
    order = (order == nil or order == "") and "desc" or order,
  }
end

local function get_snapshot(ctx, params)
  return snapshot_dto(ctx, ctx.app.snaps:find(params.id))
end

local function create_snapshot(ctx)
  local c = snapshots.check_create(ctx:json_object(true))
  return snapshot_dto(ctx, ctx.app.snaps:create(c))
end

local function delete_snapshot(ctx, params)
  ctx.app.snaps:delete(ctx.app.snaps:find_own(params.id, "delete"))
  return 200, nil
end

local function activate_snapshot(ctx, params)
  local s = ctx.app.snaps:find(params.id)
  if s.builtin then raise(400, format("Snapshot %s is already active", s.id)) end
  return snapshot_dto(ctx, ctx.app.snaps:activate(s))
end

local function deactivate_snapshot(ctx, params)
  ctx.app.snaps:deactivate(ctx.app.snaps:find_own(params.id, "deactivate"))
  return 204, nil
end

-- the snapshot `id` names, 404 for the host's system (it was never built)
local function built_snapshot(ctx, id)
  local s = ctx.app.snaps:find(id)
  if s.builtin then raise(404, format("Snapshot %s has no build logs: it is the host's system", s.name)) end
  return s
end

local function snapshot_build_logs_url(ctx, params)
  local s = built_snapshot(ctx, params.id)
  return 200, { url = format("%s/snapshots/%s/build-logs", ctx.app.api_url, s.id) }
end

local function snapshot_build_logs(ctx, params)
  local snaps = ctx.app.snaps
  local s = built_snapshot(ctx, params.id)
  buildlog.serve(ctx, snaps:log_path(s.id), snaps.logs[s.id], qbool(ctx, "follow"))
end

local function list_volumes(ctx)
  qbool(ctx, "includeDeleted")
  local out = json.array()
  for _, v in ipairs(ctx.app.vols:all()) do out[#out + 1] = volumes.wire(v) end
  return 200, out
end

local function find_volume(ctx, key, by_name)
  local v = by_name and nil or ctx.app.vols.by_id[key]
  if not v then
    for _, x in pairs(ctx.app.vols.by_id) do
      if x.name == key then v = x; break end
    end
  end
  if not v then raise(404, format("Volume %s not found", key)) end
  return v
end

local function get_volume(ctx, params) return 200, volumes.wire(find_volume(ctx, params.id)) end
local function get_volume_by_name(ctx, params) return 200, volumes.wire(find_volume(ctx, params.name, true)) end

local function create_volume(ctx)
  local body = ctx:json_object(true)
  local name = check.string(body.name, "name", { max = 255 })
  if not name:match("^[%w][%w%._%-]*$") then
    raise(400, "name must start with a letter or digit and contain only letters, digits, '.', '_' and '-'")
  end
  return 200, volumes.wire(ctx.app.vols:create(name))
end

local function delete_volume(ctx, params)
  local v = find_volume(ctx, params.id)
  ctx.app.vols:delete(v, function(vol)
    for _, r in ipairs(ctx.app.mgr:all()) do
      for _, m in ipairs(r.volumes or {}) do
        if m.volumeId == vol.id then return r.id end
      end
    end
  end)
  return 200, nil
end

local function health()
  return 200, { status = "ok" }
end

---------------------------------------------------------------------------

--- The router of the /api routes (paths relative to /api).
function M.new()
  local r = router.new{
    not_found = function(method, path) return format("Cannot %s %s", method, path) end,
    not_allowed = function(method, path, allowed)
      return format("Cannot %s %s (allowed: %s)", method, path, allowed)
    end,
  }
  r:add("GET", "/config", config)
  r:add("GET", "/health", health)
  r:add("GET", "/health/ready", health)

  r:add("GET", "/sandbox", list)
  r:add("POST", "/sandbox", create)
  r:add("GET", "/sandbox/paginated", list_paginated)
  r:add("GET", "/sandbox/ssh-access/validate", function()
    raise(501, "SSH access is not available with the local server (dtlocal)", "NOT_IMPLEMENTED")
  end)
  r:add("GET", "/sandbox/{id}", get)
  r:add("DELETE", "/sandbox/{id}", delete)
  r:add("POST", "/sandbox/{id}/start", start)
  r:add("POST", "/sandbox/{id}/stop", stop)
  r:add("POST", "/sandbox/{id}/recover", recover)
  r:add("POST", "/sandbox/{id}/archive", archive)
  r:add("POST", "/sandbox/{id}/resize", resize)
  r:add("PUT", "/sandbox/{id}/labels", set_labels)
  r:add("POST", "/sandbox/{id}/public/{isPublic}", set_public)
  r:add("POST", "/sandbox/{id}/last-activity", last_activity)
  r:add("POST", "/sandbox/{id}/autostop/{interval}", interval_route("autoStopInterval", 0))
  r:add("POST", "/sandbox/{id}/autoarchive/{interval}", interval_route("autoArchiveInterval", 0, record.archive_interval))
  r:add("POST", "/sandbox/{id}/autodelete/{interval}", interval_route("autoDeleteInterval"))
  r:add("POST", "/sandbox/{id}/network-settings", network_settings)
  r:add("GET", "/sandbox/{id}/ports/{port}/preview-url", preview_url)
  r:add("GET", "/sandbox/{id}/ports/{port}/signed-preview-url", signed_preview_url)
  r:add("POST", "/sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire", expire_signed)
  r:add("GET", "/sandbox/{id}/toolbox-proxy-url", toolbox_proxy_url)
  r:add("GET", "/sandbox/{id}/build-logs-url", build_logs_url)
  r:add("GET", "/sandbox/{id}/build-logs", build_logs)
  r:add("POST", "/sandbox/{id}/ssh-access", not_local("SSH access"))
  r:add("DELETE", "/sandbox/{id}/ssh-access", not_local("SSH access"))
  r:add("POST", "/sandbox/{id}/pause", not_local("Pausing a sandbox"))
  r:add("POST", "/sandbox/{id}/fork", fork)
  r:add("POST", "/sandbox/{id}/snapshot", snapshot_sandbox)
  r:add("POST", "/sandbox/{id}/backup", not_local("Backing up a sandbox"))
  r:add("GET", "/sandbox/{id}/forks", forks)
  r:add("GET", "/sandbox/{id}/parent", parent)
  r:add("GET", "/sandbox/{id}/ancestors", ancestors)

  r:add("GET", "/snapshots", list_snapshots)
  r:add("POST", "/snapshots", create_snapshot)
  r:add("GET", "/snapshots/{id}", get_snapshot)
  r:add("DELETE", "/snapshots/{id}", delete_snapshot)
  r:add("POST", "/snapshots/{id}/activate", activate_snapshot)
  r:add("POST", "/snapshots/{id}/deactivate", deactivate_snapshot)
  r:add("GET", "/snapshots/{id}/build-logs-url", snapshot_build_logs_url)
  r:add("GET", "/snapshots/{id}/build-logs", snapshot_build_logs)

  r:add("GET", "/volumes", list_volumes)
  r:add("POST", "/volumes", create_volume)
  r:add("GET", "/volumes/by-name/{name}", get_volume_by_name)
  r:add("GET", "/volumes/{id}", get_volume)
  r:add("DELETE", "/volumes/{id}", delete_volume)

  r:add("GET", "/object-storage/push-access", push_access)
  return r
end

return M
