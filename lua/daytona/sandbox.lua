--- A sandbox: its fields, its lifecycle, and the sub-objects that reach
-- into it (`sandbox.fs`, `sandbox.process`, `sandbox.git`,
-- `sandbox.computer_use`, and the language servers of `create_lsp_server`).
--
-- A Sandbox is a table whose fields are the API's Sandbox object in
-- snake_case (`id`, `name`, `state`, `cpu`, `memory`, `disk`, `gpu`, `env`,
-- `labels`, `user`, `target`, `snapshot`, `public`, `error_reason`,
-- `recoverable`, `auto_stop_interval`, `auto_archive_interval`,
-- `auto_delete_interval`, `volumes`, `network_block_all`,
-- `network_allow_list`, `domain_allow_list`, `created_at`, `updated_at`,
-- `last_activity_at`, `toolbox_proxy_url`, ...); `refresh_data` reloads
-- them. Lifecycle calls wait for their target state within `timeout`
-- seconds (default 60, 0 = forever) by polling.
--
--     local sb <close> = client:create{}   -- deleted when the scope ends
--     sb:stop()
--     sb:start{ timeout = 120 }
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"

local type, pairs, tostring, setmetatable, getmetatable, rawget, error, pcall, next =
  type, pairs, tostring, setmetatable, getmetatable, rawget, error, pcall, next
local concat = table.concat

local M = {}

local Sandbox = {}
M.Sandbox = Sandbox

local mt = { __index = Sandbox, __name = "daytona.sandbox.Sandbox" }
M.mt = mt

local DEFAULT_TIMEOUT = 60

-- fields the instance owns besides the wire object's
local RESERVED = { fs = true, process = true, git = true, code_interpreter = true, computer_use = true }

--- Wrap a wire Sandbox object (decoded JSON) for a client.
-- @param client the Client
-- @param dto the decoded JSON object (camelCase)
-- @return Sandbox
function M.new(client, dto)
  local sb = setmetatable({ _client = client, _t = client._transport, _fields = {} }, mt)
  sb:_apply(dto)
  sb.fs = require("daytona.filesystem").new(sb)
  sb.process = require("daytona.sandbox_process").new(sb)
  sb.git = require("daytona.git").new(sb)
  sb.code_interpreter = require("daytona.code_interpreter").new(sb)
  sb.computer_use = require("daytona.computer_use").new(sb)
  return sb
end

--- True if v is a Sandbox.
-- @param v any value
-- @return boolean
function M.is(v)
  return getmetatable(v) == mt
end

-- Replace the fields with those of a fresh wire object.
function Sandbox:_apply(dto)
  if type(dto) ~= "table" or dto.id == nil then
    error(errors.DaytonaError("unexpected sandbox object from the server"), 0)
  end
  local m = wire.to_lua(dto)
  for k in pairs(self._fields) do self[k] = nil end
  local fields = {}
  for k, v in pairs(m) do
    -- a field never shadows a method or a sub-object
    if Sandbox[k] == nil and not RESERVED[k] and k:sub(1, 1) ~= "_" then
      self[k] = v
      fields[k] = true
    end
  end
  self._fields = fields
  return self
end

function mt.__tostring(sb)
  -- the fields the server sent, printed as the models are
  local fields = {}
  for k in pairs(rawget(sb, "_fields") or {}) do fields[k] = rawget(sb, k) end
  return tostring(wire.model(fields, "Sandbox"))
end

--- Deleting on scope end: `local sb <close> = client:create{}`. When the
-- scope ends by an error, a failure to delete is reported on stderr and the
-- original error goes on.
function mt.__close(sb, err)
  if rawget(sb, "_deleted") then return end
  if err ~= nil then
    local ok, e = pcall(sb.delete, sb)
    if not ok and not errors.is(e, errors.DaytonaNotFoundError) then
      io.stderr:write("daytona: could not delete sandbox ", tostring(sb.id), ": ", tostring(e), "\n")
    end
  else
    local ok, e = pcall(sb.delete, sb)
    if not ok and not errors.is(e, errors.DaytonaNotFoundError) then error(e, 0) end
  end
end

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

local function seg(s)
  return wire.urlencode(s)
end
M.seg = seg

-- control plane: /sandbox/{id}{suffix}
function Sandbox:_control(opts, suffix)
  opts.path = "/sandbox/" .. seg(self.id) .. (suffix or "")
  return self._t:request(opts)
end

--- The toolbox base URL of this sandbox (`{toolboxProxyUrl}/{id}`).
-- Older servers without `toolboxProxyUrl` in the sandbox object are asked
-- with `GET /sandbox/{id}/toolbox-proxy-url`.
-- @return string
-- @local
function Sandbox:toolbox_url()
  local base = self.toolbox_proxy_url
  if type(base) ~= "string" or base == "" then
    local r = self:_control({ method = "GET", what = "get toolbox URL" }, "/toolbox-proxy-url")
    base = type(r) == "table" and r.url
    if type(base) ~= "string" or base == "" then
      error(errors.DaytonaError("the server gave no toolbox URL for sandbox " .. tostring(self.id)), 0)
    end
    self.toolbox_proxy_url = base
  end
  return base:gsub("/+$", "") .. "/" .. seg(self.id)
end

--- Make a request to this sandbox's toolbox API (`opts.path` under the
-- toolbox base; other options as `Transport:request`; `stream = true`
-- returns the response stream of `Transport:stream` instead).
-- @param opts table
-- @return decoded body, response
-- @raise DaytonaError subclasses
-- @local
function Sandbox:toolbox(opts)
  opts.url = self:toolbox_url() .. opts.path
  opts.path = nil
  if opts.stream then
    opts.stream = nil
    return self._t:stream(opts)
  end
  return self._t:request(opts)
end

--- Open a WebSocket to a toolbox path (`ws://` / `wss://` form of the
-- toolbox URL) with the client's headers.
-- @param path string under the toolbox base
-- @param query optional table
-- @param opts optional `{ timeout = seconds to connect (default 30),
--   protocols = { ... }, what = operation name }`
-- @return the runtime's WebSocket (`daytona.runtime.websocket`)
-- @raise DaytonaError subclasses (a refused upgrade is mapped by its HTTP
--   status, e.g. 404 -> DaytonaNotFoundError)
-- @local
function Sandbox:toolbox_ws(path, query, opts)
  opts = opts or {}
  local url = wire.url(self:toolbox_url(), path, query):gsub("^http", "ws")
  return transport.ws_connect(self._t, url, opts)
end

---------------------------------------------------------------------------
-- Waiting for states (doc/protocol.md §3.6)
---------------------------------------------------------------------------

local function fail_reason(sb, verb)
  return errors.DaytonaError(("sandbox %s failed to %s: %s"):format(
    tostring(sb.id), verb, tostring(sb.error_reason or sb.state)), { code = sb.state })
end

-- Poll until accept(state); raise on a failure state or at the deadline.
-- cadence: 100 ms, then x1.1 after 5 s (x1.5 for pause), capped at 1 s.
local function wait_until(sb, what, verb, timeout, deadline, accept, failing, factor, safe)
  local start = transport.now()
  local interval = 0.1
  while true do
    local st = sb.state
    if accept(st) then return sb end
    if failing[st] then error(fail_reason(sb, verb), 0) end
    if deadline then
      local left = deadline - transport.now()
      if left <= 0 then
        error(errors.DaytonaTimeoutError(("sandbox %s did not %s within %g seconds (state: %s)")
          :format(tostring(sb.id), verb, timeout, tostring(st)), { code = "ETIMEDOUT" }), 0)
      end
      scheduler.sleep(interval < left and interval or left)
    else
      scheduler.sleep(interval)
    end
    if factor or transport.now() - start > 5 then
      interval = interval * (factor or 1.1)
      if interval > 1 then interval = 1 end
    end
    if safe then sb:_safe_refresh(deadline) else sb:_refresh(deadline, what) end
  end
end

function Sandbox:_refresh(deadline, what)
  local dto = self:_control({ method = "GET", deadline = deadline, what = what })
  return self:_apply(dto)
end

-- a refresh where 404 means the sandbox is gone (stop of an ephemeral one, delete)
function Sandbox:_safe_refresh(deadline)
  local dto = self:_control({ method = "GET", deadline = deadline, not_found = false })
  if dto == false then
    self.state = "destroyed"
    return self
  end
  return self:_apply(dto)
end

local START_FAIL = { error = true, build_failed = true }
local STOP_OK = { stopped = true, destroyed = true }
local function is_started(s) return s == "started" end
local function is_stopped(s) return STOP_OK[s] == true end

--- Reload the fields from the server.
-- @return self
-- @raise DaytonaNotFoundError if the sandbox is gone
function Sandbox:refresh_data()
  return self:_refresh(nil, "refresh sandbox")
end

--- Reset the sandbox's idle timer (auto-stop) without doing anything else.
-- @return nothing
function Sandbox:refresh_activity()
  self:_control({ method = "POST", idempotent = true, what = "refresh activity" }, "/last-activity")
end

local TIMEOUT_OPT = check.set("timeout")

--- Wait until the sandbox is started.
-- @param opts optional `{ timeout = 60 }` (seconds, 0 = forever)
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError if it reaches `error` or `build_failed`
function Sandbox:wait_for_sandbox_start(opts)
  opts = check.options(opts, "wait_for_sandbox_start", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "wait_for_sandbox_start", DEFAULT_TIMEOUT)
  return wait_until(self, "wait for start", "start", timeout, transport.deadline(timeout), is_started, START_FAIL)
end

--- Wait until the sandbox is stopped (or destroyed, for an ephemeral one).
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError if it reaches `error`
function Sandbox:wait_for_sandbox_stop(opts)
  opts = check.options(opts, "wait_for_sandbox_stop", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "wait_for_sandbox_stop", DEFAULT_TIMEOUT)
  return wait_until(self, "wait for stop", "stop", timeout, transport.deadline(timeout), is_stopped, START_FAIL, nil, true)
end

--- Wait until a resize has finished.
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError if it reaches `error`
function Sandbox:wait_for_resize_complete(opts)
  opts = check.options(opts, "wait_for_resize_complete", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "wait_for_resize_complete", DEFAULT_TIMEOUT)
  return wait_until(self, "wait for resize", "resize", timeout, transport.deadline(timeout),
    function(s) return s ~= "resizing" end, START_FAIL)
end

---------------------------------------------------------------------------
-- Lifecycle
---------------------------------------------------------------------------

--- Start the sandbox and wait until it runs.
-- @param opts optional `{ timeout = 60 }` (seconds for the whole call, 0 = forever)
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError on a failure state
function Sandbox:start(opts)
  opts = check.options(opts, "start", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "start", DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", deadline = deadline, what = "start sandbox" }, "/start")
  if dto then self:_apply(dto) end
  return wait_until(self, "start sandbox", "start", timeout, deadline, is_started, START_FAIL)
end

--- Stop the sandbox and wait until it is stopped.
-- @param opts optional `{ timeout = 60, force = false }` (force: SIGKILL
--   instead of SIGTERM)
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError on a failure state
function Sandbox:stop(opts)
  opts = check.options(opts, "stop", check.set("timeout", "force"))
  local timeout = check.timeout(opts.timeout, "stop", DEFAULT_TIMEOUT)
  local force = check.optboolean(opts.force, "stop", "force") or false
  local deadline = transport.deadline(timeout)
  self:_control({ method = "POST", deadline = deadline, query = { force = force }, what = "stop sandbox" }, "/stop")
  self:_safe_refresh(deadline)
  return wait_until(self, "stop sandbox", "stop", timeout, deadline, is_stopped, START_FAIL, nil, true)
end

--- Pause the sandbox (memory kept; VM runners only) and wait.
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError if it reaches `error`
function Sandbox:pause(opts)
  opts = check.options(opts, "pause", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "pause", DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", deadline = deadline, what = "pause sandbox" }, "/pause")
  if dto then self:_apply(dto) else self:_refresh(deadline) end
  return wait_until(self, "pause sandbox", "pause", timeout, deadline,
    function(s) return s ~= "pausing" end, { error = true }, 1.5)
end

--- Delete the sandbox and (unless `wait = false`) wait until it is gone.
-- @param opts optional `{ timeout = 60, wait = true }`
-- @return nothing
-- @raise DaytonaNotFoundError if it does not exist; DaytonaTimeoutError
function Sandbox:delete(opts)
  opts = check.options(opts, "delete", check.set("timeout", "wait"))
  local timeout = check.timeout(opts.timeout, "delete", DEFAULT_TIMEOUT)
  local wait = check.optboolean(opts.wait, "delete", "wait")
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "DELETE", deadline = deadline, what = "delete sandbox" })
  self._deleted = true
  if type(dto) == "table" and dto.id then self:_apply(dto) end
  if wait == false then return end
  self:_safe_refresh(deadline)
  wait_until(self, "delete sandbox", "be deleted", timeout, deadline,
    function(s) return s == "destroyed" end, {}, nil, true)
end

--- Archive a stopped sandbox (its filesystem moves to object storage) and
-- wait until it is archived.
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaValidationError if it is not stopped; DaytonaTimeoutError
function Sandbox:archive(opts)
  opts = check.options(opts, "archive", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "archive", DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", deadline = deadline, what = "archive sandbox" }, "/archive")
  if dto then self:_apply(dto) else self:_refresh(deadline) end
  return wait_until(self, "archive sandbox", "archive", timeout, deadline,
    function(s) return s ~= "archiving" and s ~= "stopping" end, { error = true })
end

--- Recover a sandbox from a recoverable error state and wait until it runs.
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError on a failure state
function Sandbox:recover(opts)
  opts = check.options(opts, "recover", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "recover", DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", deadline = deadline, what = "recover sandbox" }, "/recover")
  if dto then self:_apply(dto) end
  return wait_until(self, "recover sandbox", "recover", timeout, deadline, is_started, START_FAIL)
end

--- Change the sandbox's resources and wait until the resize is done.
-- Running sandboxes can only grow CPU and memory; disk needs a stopped one.
-- @param resources `{ cpu = n, memory = GiB, disk = GiB }` (at least one)
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaValidationError for bad resources (also from the server)
function Sandbox:resize(resources, opts)
  check.table(resources, "resize", "resources")
  check.options(resources, "resize", check.set("cpu", "memory", "disk", "gpu", "gpu_type"), "resources")
  if resources.gpu ~= nil or resources.gpu_type ~= nil then
    check.argerror("resize", "resources.gpu", "GPU resources cannot be resized")
  end
  local body = {
    cpu = check.optinteger(resources.cpu, "resize", "resources.cpu", 1),
    memory = check.optinteger(resources.memory, "resize", "resources.memory", 1),
    disk = check.optinteger(resources.disk, "resize", "resources.disk", 1),
  }
  if next(body) == nil then check.argerror("resize", "resources", "at least one of cpu, memory, disk expected") end
  opts = check.options(opts, "resize", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "resize", DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", json = body, deadline = deadline, what = "resize sandbox" }, "/resize")
  if dto then self:_apply(dto) end
  return wait_until(self, "resize sandbox", "resize", timeout, deadline,
    function(s) return s ~= "resizing" end, START_FAIL)
end

--- Experimental: fork the sandbox (filesystem and memory) into a new one
-- and wait until the fork has started.
-- @param opts optional `{ name = , timeout = 60 }`
-- @return the new Sandbox
-- @raise DaytonaError where forking is not available
function Sandbox:_experimental_fork(opts)
  local f = "_experimental_fork"
  opts = check.options(opts, f, check.set("name", "timeout"))
  local timeout = check.timeout(opts.timeout, f, DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", json = { name = check.optstring(opts.name, f, "name") },
    deadline = deadline, what = "fork sandbox" }, "/fork")
  local fork = M.new(self._client, dto)
  return wait_until(fork, "fork sandbox", "start", timeout, deadline, is_started, START_FAIL)
end

--- Experimental: snapshot the sandbox under a name (usable as `snapshot`
-- in `client:create`) and wait until the capture is done.
-- @param name the snapshot's name
-- @param opts optional `{ timeout = 60 }`
-- @return self
-- @raise DaytonaError where snapshotting is not available or fails
function Sandbox:_experimental_create_snapshot(name, opts)
  local f = "_experimental_create_snapshot"
  name = check.string(name, f, "name")
  opts = check.options(opts, f, TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, f, DEFAULT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  local dto = self:_control({ method = "POST", json = { name = name }, deadline = deadline, what = "create snapshot" },
    "/snapshot")
  if type(dto) == "table" and dto.id then self:_apply(dto) else self:_refresh(deadline) end
  wait_until(self, "create snapshot", "snapshot", timeout, deadline,
    function(s) return s ~= "snapshotting" end, START_FAIL)
  -- the sandbox being done is not the snapshot being there (Daytona has
  -- reported success for snapshots that never appeared): check it
  while true do
    local ok, snap = pcall(self._client.snapshot.get, self._client.snapshot, name)
    if not ok then
      if errors.is(snap, errors.DaytonaNotFoundError) then
        error(errors.DaytonaError(("snapshot %s of sandbox %s was not made"):format(name, self.id),
          { code = "SNAPSHOT_MISSING" }), 0)
      end
      error(snap, 0)
    end
    if snap.state == "active" then break end
    if snap.state == "error" or snap.state == "build_failed" then
      error(errors.DaytonaError(("snapshot %s of sandbox %s failed: %s"):format(name, self.id,
        snap.error_reason or snap.state), { code = snap.state }), 0)
    end
    transport.remaining(deadline, "create snapshot", timeout)
    scheduler.sleep(0.1)
  end
  return self
end

---------------------------------------------------------------------------
-- Settings
---------------------------------------------------------------------------

--- Replace the sandbox's labels.
-- @param labels table of string -> string
-- @return the labels now set
function Sandbox:set_labels(labels)
  labels = check.strmap(check.table(labels, "set_labels", "labels"), "set_labels", "labels")
  local r = self:_control({ method = "PUT", json = { labels = labels }, what = "set labels" }, "/labels")
  local got = type(r) == "table" and type(r.labels) == "table" and r.labels or labels
  self.labels = wire.to_lua({ labels = got }).labels
  return self.labels
end

local function interval_setter(name, route, field, lo)
  return function(self, minutes)
    minutes = check.integer(minutes, name, "interval", lo)
    local dto = self:_control({ method = "POST", idempotent = true, what = name:gsub("_", " ") },
      "/" .. route .. "/" .. minutes)
    if type(dto) == "table" and dto.id then self:_apply(dto) else self[field] = minutes end
  end
end

--- Set the auto-stop interval in minutes (0 = never stop when idle).
-- @param interval integer >= 0
-- @return nothing
Sandbox.set_autostop_interval = interval_setter("set_autostop_interval", "autostop", "auto_stop_interval", 0)

--- Set the auto-archive interval in minutes (0 = the maximum).
-- @param interval integer >= 0
-- @return nothing
Sandbox.set_auto_archive_interval = interval_setter("set_auto_archive_interval", "autoarchive", "auto_archive_interval", 0)

--- Set the auto-delete interval in minutes (0 = delete as soon as it
-- stops, negative = never).
-- @param interval integer
-- @return nothing
Sandbox.set_auto_delete_interval = interval_setter("set_auto_delete_interval", "autodelete", "auto_delete_interval", nil)

local function cidr_list(v, fname, arg)
  if v == nil then return nil end
  if type(v) == "string" then return v end
  return concat(check.strlist(v, fname, arg, true), ",")
end
M.cidr_list = cidr_list

--- Change the network limits of a running sandbox.
-- @param opts `{ network_block_all = bool, network_allow_list = "cidr,..."
--   or { "cidr", ... }, domain_allow_list = "a.com,..." or list }` (at
--   least one)
-- @return self
function Sandbox:update_network_settings(opts)
  local f = "update_network_settings"
  opts = check.options(check.table(opts, f, "options"), f,
    check.set("network_block_all", "network_allow_list", "domain_allow_list"))
  local body = {
    networkBlockAll = check.optboolean(opts.network_block_all, f, "network_block_all"),
    networkAllowList = cidr_list(opts.network_allow_list, f, "network_allow_list"),
    domainAllowList = cidr_list(opts.domain_allow_list, f, "domain_allow_list"),
  }
  if next(body) == nil then check.argerror(f, "options", "at least one setting expected") end
  local dto = self:_control({ method = "POST", json = body, idempotent = true, what = "update network settings" },
    "/network-settings")
  if type(dto) == "table" and dto.id then self:_apply(dto) end
  return self
end

---------------------------------------------------------------------------
-- Language servers
---------------------------------------------------------------------------

--- A language server for a project in the sandbox (`daytona.lsp_server`);
-- nothing runs until its `start`, and `local lsp <close> = ...` stops it at
-- the scope's end.
-- @param language_id "python", "typescript" or "javascript"
-- @param path_to_project the project's directory (relative paths are
--   resolved against the sandbox's working directory)
-- @return LspServer
function Sandbox:create_lsp_server(language_id, path_to_project)
  return require("daytona.lsp_server").new(self, language_id, path_to_project)
end

---------------------------------------------------------------------------
-- Paths, preview links, SSH
---------------------------------------------------------------------------

--- The sandbox's working directory (its image's WORKDIR).
-- @return string
function Sandbox:get_work_dir()
  local r = self:toolbox({ method = "GET", path = "/work-dir", what = "get work dir" })
  return r and r.dir
end

--- The sandbox user's home directory.
-- @return string
function Sandbox:get_user_home_dir()
  local r = self:toolbox({ method = "GET", path = "/user-home-dir", what = "get home dir" })
  return r and r.dir
end

--- Deprecated alias of get_user_home_dir.
-- @return string
function Sandbox:get_user_root_dir()
  return self:get_user_home_dir()
end

local function port_arg(port, fname)
  return check.integer(port, fname, "port", 1, 65535)
end

--- The preview URL of a port and the token to send as
-- `X-Daytona-Preview-Token` (it changes when the sandbox restarts).
-- @param port integer 1..65535
-- @return `{ url, token, sandbox_id }`
function Sandbox:get_preview_link(port)
  port = port_arg(port, "get_preview_link")
  return wire.to_lua(self:_control({ method = "GET", what = "get preview link" }, "/ports/" .. port .. "/preview-url"))
end

--- A signed preview URL: the token is in the URL, it survives restarts and
-- expires after `expires_in_seconds` (1..86400, default 60).
-- @param port integer
-- @param opts optional `{ expires_in_seconds = 60 }`
-- @return `{ url, token, port, sandbox_id }`
function Sandbox:create_signed_preview_url(port, opts)
  local f = "create_signed_preview_url"
  port = port_arg(port, f)
  opts = check.options(opts, f, check.set("expires_in_seconds"))
  local secs = check.optinteger(opts.expires_in_seconds, f, "expires_in_seconds", 1, 86400)
  return wire.to_lua(self:_control({ method = "GET", query = { expiresInSeconds = secs }, what = "create signed preview URL" },
    "/ports/" .. port .. "/signed-preview-url"))
end

--- Revoke a signed preview URL before it expires.
-- @param port integer
-- @param token the URL's token
-- @return nothing
function Sandbox:expire_signed_preview_url(port, token)
  local f = "expire_signed_preview_url"
  port = port_arg(port, f)
  token = check.string(token, f, "token")
  self:_control({ method = "POST", idempotent = true, what = "expire signed preview URL" },
    "/ports/" .. port .. "/signed-preview-url/" .. seg(token) .. "/expire")
end

--- Create an SSH access token (`ssh <token>@host`); creating one revokes
-- the earlier ones.
-- @param opts optional `{ expires_in_minutes = 60 }`
-- @return `{ token, ssh_command, expires_at, sandbox_id, ... }`
function Sandbox:create_ssh_access(opts)
  local f = "create_ssh_access"
  opts = check.options(opts, f, check.set("expires_in_minutes"))
  local mins = check.optinteger(opts.expires_in_minutes, f, "expires_in_minutes", 1)
  return wire.to_lua(self:_control({ method = "POST", query = { expiresInMinutes = mins }, what = "create SSH access" },
    "/ssh-access"))
end

--- Revoke an SSH access token (nil: every token of the sandbox).
-- @param token optional string
-- @return nothing
function Sandbox:revoke_ssh_access(token)
  token = check.optstring(token, "revoke_ssh_access", "token")
  self:_control({ method = "DELETE", query = { token = token }, what = "revoke SSH access" }, "/ssh-access")
end

--- Check an SSH access token (needs SSH-gateway credentials on Daytona's
-- cloud).
-- @param token string
-- @return `{ valid = bool, sandbox_id = id or nil }`
function Sandbox:validate_ssh_access(token)
  token = check.string(token, "validate_ssh_access", "token")
  return wire.to_lua(self._t:request({ method = "GET", path = "/sandbox/ssh-access/validate",
    query = { token = token }, what = "validate SSH access" }))
end

M.wait_until = wait_until
M.DEFAULT_TIMEOUT = DEFAULT_TIMEOUT

-- a call with '.' instead of ':' says so
check.methods(Sandbox, "sandbox", mt)

return M
