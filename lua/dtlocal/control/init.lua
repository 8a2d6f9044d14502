--- dtlocal.control: the control plane of the local Daytona-compatible server
-- (doc/dtlocal.md): the App that owns both listeners and the sandboxes.
--
-- Two HTTP servers on the core's loop. The API's:
--   /api/...                  the control plane (dtlocal.control.routes)
--   /api/socket.io/           sandbox events, Socket.IO over WebSocket
--                             (dtlocal.control.events)
--   /toolbox/{id}/{rest}      forwarded to the sandbox's toolbox daemon
--   /s3/{bucket}/{key}        image build contexts, S3 with SigV4
--                             (dtlocal.control.objects)
-- and, on a port of their own, the previews (a page a sandbox serves must
-- not share an origin with the API: its script could call the API with
-- whatever a browser holds for that origin, as Daytona keeps previews on
-- their own host names):
--   /preview/{id}/{port}/...  forwarded to 127.0.0.1:{port} (sandboxes share
--                             the host's network) when that port's listener
--                             is the sandbox's (dtlocal.control.ports);
--                             X-Daytona-Preview-Token, the API token, or a
--                             public sandbox
--   /preview/signed/{token}/...  the same through a signed preview token
--   Host: {port}-{id}.localhost, {port}-{signed token}.localhost
--                             the same with the path as it is: an origin per
--                             sandbox port, for browsers (which resolve
--                             *.localhost to loopback) and libcurl
--
--   local control = require "dtlocal.control"
--   local app = control.new{ host =, port =, preview_port =, token =, state_dir =,
--                        minute =, log =, info_file = }
--   app:start()         -- lock the state dir, load, listen, restart sandboxes
--   app:run()           -- serve until SIGTERM or SIGHUP (or cancellation)
--   app:close()         -- stop serving; stop sandbox processes, keep their states
--
-- app.api_url, app.toolbox_url, app.base_url, app.token are set by start(),
-- and app.cgroups (dtlocal.control.cgroups: which resources are enforced).
-- Every route needs `Authorization: Bearer <token>` (compared in constant
-- time) but /s3, signed with the credentials push-access issued; toolbox routes also take the sandbox's preview token (App:authorize,
-- the one check). Both listeners are daytona.runtime.server's, answering
-- through dtlocal.http: handlers (ctx, params), errors the structured body
-- everywhere.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local server = require "daytona.runtime.server"
local http = require "dtlocal.http"
local record = require "dtlocal.control.record"
local store_mod = require "dtlocal.control.store"
local fs = require "dtlocal.fs"
local localserver = require "daytona.localserver"
local routes = require "dtlocal.control.routes"
local sandboxes = require "dtlocal.control.sandboxes"
local snapshots = require "dtlocal.control.snapshots"
local images_store = require "dtlocal.images.store"
local sweeper_mod = require "dtlocal.control.sweeper"
local volumes = require "dtlocal.control.volumes"
local runner_mod = require "dtlocal.control.runner"
local uids_mod = require "dtlocal.control.uids"
local cgroups_mod = require "dtlocal.control.cgroups"
local proxy = require "dtlocal.control.proxy"
local events = require "dtlocal.control.events"
local ports = require "dtlocal.control.ports"
local objects = require "dtlocal.control.objects"
local network = require "dtlocal.control.network"

local type, pairs, ipairs, tostring, tonumber, setmetatable, pcall, error, io, os, string, table =
  type, pairs, ipairs, tostring, tonumber, setmetatable, pcall, error, io, os, string, table
local format = string.format
local util = core.util
local json = http.json
local raise = http.raise

local M = {}

M.MAX_API_BODY = 1024 * 1024   -- control-plane JSON bodies
M.WARM = 2                     -- sandboxes kept started ahead of time (warm_pool.lua)

local App = {}
App.__index = App
App.__name = "dtlocal.App"

--- A server, not started. opts: host ("127.0.0.1"), port (0 = any),
-- preview_port (the previews' own listener, 0 = any), token
-- (default: random), state_dir (required), minute (seconds per interval
-- minute, default 60), warm (warm pool size, default M.WARM), log
-- (function(fmt, ...)), info_file (path of the user's description file to
-- write, or nil).
function M.new(opts)
  assert(type(opts.state_dir) == "string", "state_dir")
  return setmetatable({
    host = opts.host or "127.0.0.1",
    port = opts.port or 0,
    preview_port = opts.preview_port or 0,
    token = opts.token or record.token(40),
    state_dir = opts.state_dir,
    minute = opts.minute or 60,
    warm = opts.warm or M.WARM,
    log = opts.log or function() end,
    info_file = opts.info_file,
    tasks = {},
  }, App)
end

---------------------------------------------------------------------------
-- The state dir lock: one server per state dir
---------------------------------------------------------------------------

--- Take the state dir (server.lock/ with our pid); raises when another
-- live server has it. A lock left by a dead server is broken.
function App:lock()
  local dir = self.state_dir .. "/server.lock"
  for _ = 1, 2 do
    local ok, _, code = util.mkdir(dir, 448)
    if ok then
      local f = io.open(dir .. "/pid", "wb")
      if f then f:write(tostring(util.getpid())); f:close() end
      self.lock_dir = dir
      return
    end
    if code ~= "EEXIST" then error("cannot lock " .. self.state_dir .. ": " .. tostring(code), 0) end
    local f = io.open(dir .. "/pid", "rb")
    local pid = f and math.tointeger(tonumber(f:read("a") or ""))
    if f then f:close() end
    if pid and localserver.alive(pid) then
      error(format("another dtlocal (pid %d) serves the state directory %s", pid, self.state_dir), 0)
    end
    -- a server that died without cleaning up
    os.remove(dir .. "/pid")
    os.remove(dir)
  end
  error("cannot lock " .. self.state_dir, 0)
end

--- Release the state dir.
function App:unlock()
  if self.lock_dir then
    os.remove(self.lock_dir .. "/pid")
    os.remove(self.lock_dir)
    self.lock_dir = nil
  end
end

---------------------------------------------------------------------------
-- URLs and tokens used by the routes
---------------------------------------------------------------------------

--- The preview URL of a sandbox's port (on the previews' listener).
function App:preview_url(rec, port)
  return format("%s/preview/%s/%d", self.preview_base, rec.id, port)
end

--- The sandbox's preview token (made when missing).
function App:preview_token(rec)
  local t = rec.dtlocal.preview_token
  if not t then
    t = record.token(32)
    rec.dtlocal.preview_token = t
    self.mgr:save(rec)
  end
  return t
end

--- Signed preview tokens: 16 lower-case alphanumerics, per sandbox, with
-- their port and expiry; the index maps each to its sandbox.
function App:sign_preview(rec, port, seconds)
  local token = record.token(16, true)
  local now = record.now_ms()
  local signed = rec.dtlocal.signed
  for t, s in pairs(signed) do            -- drop expired ones while here
    if s.expires_ms <= now then signed[t] = nil; self.signed[t] = nil end
  end
  signed[token] = { port = port, expires_ms = now + seconds * 1000 }
  self.signed[token] = rec.id
  self.mgr:save(rec)
  return token
end

--- End a signed preview token.
function App:expire_preview(rec, token)
  rec.dtlocal.signed[token] = nil
  self.signed[token] = nil
  self.mgr:save(rec)
end

--- The URL of a signed preview token.
function App:signed_preview_url(token)
  return format("%s/preview/signed/%s", self.preview_base, token)
end

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

local bearer = http.bearer

--- Whether `given` is the API token (constant-time comparison).
function App:check_token(given)
  return type(given) == "string" and util.equal_ct(given, self.token)
end

--- Who sent the request: "api" for the API token; with `rec`, "preview"
-- for that sandbox's preview token (X-Daytona-Preview-Token, or the
-- DAYTONA_SANDBOX_AUTH_KEY query parameter). Else a 401: `refusal` when
-- given, or the missing/failed messages the Daytona API answers.
function App:authorize(ctx, rec, refusal)
  local given = bearer(ctx.headers)
  if self:check_token(given) then return "api" end
  local ptoken
  if rec ~= nil then
    ptoken = ctx.headers["x-daytona-preview-token"] or ctx.query.DAYTONA_SANDBOX_AUTH_KEY
    local pt = rec and rec.dtlocal.preview_token
    if pt ~= nil and ptoken ~= nil and util.equal_ct(ptoken, pt) then return "preview" end
  end
  if refusal then raise(401, refusal, "UNAUTHORIZED") end
  if given == nil and ptoken == nil then
    raise(401, "unauthorized: missing authentication: send Authorization: Bearer <token>", "UNAUTHORIZED")
  end
  raise(401, "unauthorized: authentication failed: Bearer token is invalid", "UNAUTHORIZED")
end

--- The control plane: /api/...
function App:control_plane(ctx)
  self:authorize(ctx)
  local sub = ctx.path:sub(5)                      -- below /api
  if sub == "" then sub = "/" end
  -- the deprecated toolbox routes: /api/toolbox/{id}/toolbox/{rest}
  local tid, trest = sub:match("^/toolbox/([^/]+)/toolbox(/.*)$")
  if tid then return self:toolbox(ctx, tid, trest, true) end
  return self.control_router:dispatch(ctx, sub)
end

-- The running sandbox behind a toolbox or preview request (400 if it is
-- not started, as the Daytona proxy answers).
local function running_instance(self, rec)
  local rt = self.mgr.rt[rec.id]
  local inst = rt and rt.inst
  if rec.state ~= "started" or not inst then
    raise(400, format("Sandbox %s is %s. Is the Sandbox started?", rec.id, rec.state))
  end
  return inst
end

-- Strip one query parameter (the preview token must not reach the
-- sandbox), compared by its decoded name as ctx.query reads it:
-- `DAYTONA%5FSANDBOX%5FAUTH%5FKEY=` authenticates, so it must go too.
local function strip_param(qs, name)
  if qs == "" then return qs end
  local out = {}
  for pair in qs:gmatch("[^&]+") do
    local raw = pair:match("^([^=]*)")
    if next(server.parse_query(raw)) ~= name then out[#out + 1] = pair end
  end
  return table.concat(out, "&")
end

-- The headers forwarded with a request that may carry the preview token in
-- its URL: the Referer (a page's own URL, sent with every subresource)
-- loses the token as the query does.
local function referer_without(headers, name)
  local ref = headers.referer
  if not ref then return nil end
  local base, qs, frag = ref:match("^([^?#]*)%??([^#]*)(#?.*)$")
  if not base then return false end
  qs = strip_param(qs, name)
  return base .. (qs ~= "" and ("?" .. qs) or "") .. frag
end

--- /toolbox/{id}/{rest}: to the sandbox's daemon.
function App:toolbox(ctx, key, rest, api_checked)
  local rec = self.mgr:lookup(key)
  if not api_checked then self:authorize(ctx, rec or false) end
  if not rec then raise(404, format("Sandbox with ID %s not found", key)) end
  local inst = running_instance(self, rec)
  if ctx.headers["x-daytona-skip-last-activity-update"] ~= "true" then self.mgr:touch(rec) end
  local qs = strip_param(ctx.qs, "DAYTONA_SANDBOX_AUTH_KEY")
  local target = (rest == "" and "/" or rest) .. (qs ~= "" and ("?" .. qs) or "")
  local base = inst.base_url
  local prefix = "/toolbox/" .. rec.id
  local up_opts = {
    what = "the toolbox daemon of sandbox " .. rec.id,
    headers = { Referer = referer_without(ctx.headers, "DAYTONA_SANDBOX_AUTH_KEY") },
    unix_socket = inst.unix_socket, peer_uids = inst.peer_uids,
    rewrite_location = function(loc)
      if loc:sub(1, 1) == "/" then return prefix .. loc end
      return loc
    end,
    on_open = function() self.mgr:connection(rec, 1) end,
    on_close = function() self.mgr:connection(rec, -1) end,
  }
  if ctx.is_websocket then
    return proxy.websocket(ctx, base:gsub("^http", "ws") .. target, up_opts)
  end
  return proxy.forward(ctx, base .. target, up_opts)
end

-- The sandbox, port and path of a preview request, authenticated: from
-- the Host ({port}-{id or signed token}.localhost, the path as it is) or
-- the path (/preview/{id}/{port}/..., /preview/signed/{token}/...).
function App:preview_target(ctx)
  local p = ctx.path
  local rec, port, rest
  local hport, label = (ctx.headers.host or ""):lower():match("^(%d+)%-([%w%-]+)%.localhost%.?:?%d*$")
  local token, srest = p:match("^/preview/signed/([^/]+)(.*)$")
  if hport then
    if self.signed[label] then token, srest = label, p end
  end
  if token then
    local id = self.signed[token]
    rec = id and self.mgr.by_id[id]
    local s = rec and rec.dtlocal.signed[token]
    if not s or s.expires_ms <= record.now_ms() or (hport and tonumber(hport) ~= s.port) then
      raise(401, "unauthorized: the signed preview URL is invalid or has expired", "UNAUTHORIZED")
    end
    return rec, s.port, srest
  end
  local key, sport
  if hport then
    key, sport, rest = label, hport, p
  else
    key, sport, rest = p:match("^/preview/([^/]+)/(%d+)(.*)$")
    if not key then
      raise(404, "a preview URL is /preview/{sandboxId}/{port}/..., or http://{port}-{sandboxId}.localhost:"
        .. tostring(self.preview_port) .. "/...")
    end
  end
  rec = self.mgr:lookup(key)
  if not rec then raise(404, format("Sandbox with ID %s not found", key)) end
  port = math.tointeger(tonumber(sport))
  if not port or port < 1 or port > 65535 then raise(400, "port must be 1-65535") end
  if not rec.public then
    self:authorize(ctx, rec, "unauthorized: send X-Daytona-Preview-Token (from the preview-url route)")
  end
  return rec, port, rest
end

-- Who may serve a sandbox's ports (dtlocal.control.ports): its host uid range
-- as root, else the processes of its PID namespace (its init's: inst:init_pid()).
function App:port_owner(rec, inst)
  if rec.dtlocal.uid_first then return { uid_first = rec.dtlocal.uid_first } end
  return { init_pid = inst:init_pid() or "0" }
end

--- A preview request: to the sandbox's port, at its own address (its own
-- network, as root), else on the host's loopback.
function App:preview(ctx)
  local rec, port, rest = self:preview_target(ctx)
  local inst = running_instance(self, rec)
  local host = "127.0.0.1"
  local via_daemon = false
  if self.net and rec.dtlocal.uid_slot then
    -- the sandbox's eth0 address: the host's route to it goes through its
    -- own veth whatever the sandbox does inside, so only its servers
    -- answer; networkBlockAll drops only what the sandbox sends out, not
    -- the replies to us. A server on its loopback only is reached through
    -- its daemon instead, which forwards inside its namespace.
    host = network.addrs(rec.dtlocal.uid_slot).sandbox
    via_daemon = ports.sandbox_listener(inst:init_pid() or "0", port) == "loopback"
  elseif inst.pasta then
    -- its own namespace, reached only through its daemon inside
    via_daemon = true
  else
    if rec.networkBlockAll then
      raise(502, format("sandbox %s has networkBlockAll: its ports are not reachable from the host", rec.id),
        "BAD_GATEWAY")
    end
    -- loopback ports are the host's: forward only to the sandbox's own
    -- listener, never to another sandbox's, another service's or ours
    local mine, why = ports.owned(port, self:port_owner(rec, inst))
    if not mine then
      raise(502, format("port %d of sandbox %s: %s", port, rec.id, why), "BAD_GATEWAY")
    end
  end
  if ctx.headers["x-daytona-skip-last-activity-update"] ~= "true" then self.mgr:touch(rec) end
  local qs = strip_param(ctx.qs, "DAYTONA_SANDBOX_AUTH_KEY")
  local target = (rest == "" and "/" or rest) .. (qs ~= "" and ("?" .. qs) or "")
  local base = format("http://%s:%d", host, port)
  local opts = {
    what = format("port %d of sandbox %s", port, rec.id),
    headers = { ["X-Forwarded-Host"] = ctx.headers.host, ["X-Forwarded-Proto"] = "http",
                Referer = referer_without(ctx.headers, "DAYTONA_SANDBOX_AUTH_KEY") },
    on_open = function() self.mgr:connection(rec, 1) end,
    on_close = function() self.mgr:connection(rec, -1) end,
  }
  if via_daemon then
    base = inst.base_url .. "/dtlocal/port/" .. port
    opts.unix_socket, opts.peer_uids = inst.unix_socket, inst.peer_uids
    opts.headers[proxy.INTERNAL_HEADER] = "preview"
    if ctx.is_websocket then return proxy.websocket(ctx, base:gsub("^http", "ws") .. target, opts) end
    return proxy.forward(ctx, base .. target, opts)
  end
  if ctx.is_websocket then
    return proxy.websocket(ctx, format("ws://%s:%d", host, port) .. target, opts)
  end
  return proxy.forward(ctx, base .. target, opts)
end

--- Build a buildInfo's Dockerfile (dtlocal.images.build) with its
-- uploaded contexts; returns the image, raises a plain error saying why not.
function App:build(build_info, opts)
  local contexts = {}
  for i, h in ipairs(build_info.contextHashes or {}) do
    local path, msg = self.objects:context(h)
    if not path then error(msg, 0) end
    contexts[i] = path
  end
  local img, msg = require("dtlocal.images.build").build(self.images, {
    dockerfile = build_info.dockerfileContent, contexts = contexts,
    context_hashes = build_info.contextHashes, on_log = opts and opts.on_log,
    launcher = self.runner.launcher, uids = self.uids, cgroups = self.cgroups, net = self.net,
  })
  if not img then error(msg, 0) end
  return img
end

--- Route one request by its first path segment.
function App:dispatch(ctx)
  local p = ctx.path
  -- the event channel authenticates in its Socket.IO CONNECT, not the upgrade
  if p == "/api/socket.io" or p == "/api/socket.io/" then return self.events:serve(ctx) end
  if p == "/api" or p:sub(1, 5) == "/api/" then return self:control_plane(ctx) end
  -- S3 for build contexts: signed with push-access credentials, not the token
  if p == "/s3" or p:sub(1, 4) == "/s3/" then return self.objects:serve(ctx) end
  local id, rest = p:match("^/toolbox/([^/]+)(.*)$")
  if id then return self:toolbox(ctx, id, rest, false) end
  if p:sub(1, 9) == "/preview/" then
    raise(404, format("previews are served on their own origin, %s (the preview-url route gives "
      .. "a port's link)", self.preview_base))
  end
  if p == "/" or p == "/health" then return 200, { status = "ok", api = self.api_url } end
  raise(404, format("Cannot %s %s", ctx.method, p))
end

local function redact(target)
  return (target:gsub("(DAYTONA_SANDBOX_AUTH_KEY=)[^&]*", "%1***"))
end

-- The request handler of a listener: dispatch, structured errors, one
-- log line per request, a traceback for a bug.
local function request_handler(self, dispatch)
  return http.handler{
    app = self, max_body = M.MAX_API_BODY,
    dispatch = function(ctx) return dispatch(self, ctx) end,
    bad_body = function(why)
      if why:find("^malformed") then return "the request body is not valid JSON: " .. why end
      return "the request body must be a JSON object"
    end,
    log = function(ctx, status, seconds)
      self.log("%s %s %s %s %.1fms", ctx.remote or "-", ctx.method, redact(ctx.target),
        tostring(status or "-"), seconds * 1000)
    end,
    on_bug = function(ctx, tb) self.log("%s %s: %s", ctx.method, redact(ctx.target), tb) end,
  }
end

---------------------------------------------------------------------------
-- Life cycle
---------------------------------------------------------------------------

local function url_host(host)
  if host:find(":", 1, true) and not host:find("^%[") then return "[" .. host .. "]" end
  if host == "0.0.0.0" then return "127.0.0.1" end
  if host == "::" or host == "[::]" then return "[::1]" end
  return host
end

--- Write server.json (and the user's description file when announcing).
function App:write_info()
  local info = {
    api_url = self.api_url, toolbox_url = self.toolbox_url, token = self.token,
    pid = util.getpid(), state_dir = self.state_dir,
  }
  local text = json.encode(info)
  self.info_paths = { self.state_dir .. "/server.json" }
  if self.info_file then
    local dir = self.info_file:match("^(.*)/[^/]+$")
    if dir then fs.mkdirs(dir, 448) end
    self.info_paths[#self.info_paths + 1] = self.info_file
  end
  for _, p in ipairs(self.info_paths) do
    local ok, msg = store_mod.write_atomic(p, text)
    if not ok then error("cannot write " .. p .. ": " .. tostring(msg), 0) end
  end
end

--- Lock the state dir, load the records, listen, and start serving (in
-- tasks; call from a task). Raises a plain error when it cannot.
function App:start()
  local ok, msg = fs.mkdirs(self.state_dir, 448)
  if not ok then error("cannot create the state directory: " .. msg, 0) end
  self:lock()
  local started, err = pcall(function()
    self.started_at = record.iso()
    self.store = store_mod.new(self.state_dir)
    self.runner = runner_mod.new{ log = self.log }
    if util.getuid() == 0 then
      self.uids = uids_mod.new{}
      self.uids:sweep()
      -- every sandbox its own network namespace, linked to the host by a
      -- veth pair, filtered by a table of ours (dtlocal.control.network)
      self.net = network.new{ uids = self.uids, state_dir = self.state_dir, log = self.log }
    else
      -- unprivileged: a network namespace of its own per sandbox, linked to
      -- the outside by pasta when it is installed (else the host's network)
      self.pasta = network.find_pasta()
    end
    self.vols = volumes.new{ store = self.store, runner = self.runner, log = self.log }
    self.vols:load()
    -- build contexts (GET /api/object-storage/push-access, S3 at /s3)
    self.objects = objects.new{ dir = self.state_dir .. "/objects", ttl = 15 * self.minute, log = self.log }
    -- cpu/memory/pids limits where the machine allows (else reported)
    self.cgroups = cgroups_mod.new{ log = self.log }
    -- Socket.IO sandbox events at /api/socket.io/ (doc/protocol.md §3.6)
    self.events = events.new{
      log = self.log,
      check_token = function(t) return self:check_token(t) end,
      wire = function(rec) return record.wire(rec, self.toolbox_url, false) end,
    }
    -- container images, their layers unpacked once (dtlocal.images.store)
    self.images = images_store.open(self.state_dir .. "/images")
    -- snapshots: the host's system (built in) and images pulled or built
    self.snaps = snapshots.new{
      store = self.store, log = self.log, images = self.images, started_at = self.started_at,
      builder = function(build_info, bopts) return self:build(build_info, bopts) end,
      in_use = function(snap)
        for _, r in ipairs(self.mgr:all()) do
          if r.dtlocal.snapshot_id == snap.id then return r.id end
        end
      end,
      image_used = function(image)
        for _, r in ipairs(self.mgr:all()) do
          local d = r.dtlocal
          if d.image == image or (d.seed == image and not d.seeded) then return true end
        end
        return false
      end,
    }
    self.mgr = sandboxes.new{
      store = self.store, runner = self.runner, uids = self.uids, log = self.log,
      net = self.net, pasta = self.pasta, cgroups = self.cgroups, snapshots = self.snaps, images = self.images,
      on_event = function(name, rec, old) self.events:sandbox_event(name, rec, old) end,
      minute = self.minute, warm = self.warm, volumes = function(k) return self.vols:find(k) end,
    }
    self.control_router = routes.new()
    self.signed = {}
    local function listen(port, dispatch, what)
      local ok, srv = pcall(server.listen, {
        host = self.host, port = port, connection_timeout = 0,
        handler = request_handler(self, dispatch),
        log = function(msg) self.log("%s", msg) end,
      })
      if not ok then
        error(format("cannot listen%s on %s:%d: %s", what, self.host, port, tostring(srv.message or srv)), 0)
      end
      return srv
    end
    self.srv = listen(self.port, self.dispatch, "")
    self.port = self.srv.port
    self.base_url = format("http://%s:%d", url_host(self.host), self.port)
    self.preview_srv = listen(self.preview_port, self.preview, " for previews")
    self.preview_port = self.preview_srv.port
    self.preview_base = format("http://%s:%d", url_host(self.host), self.preview_port)
    self.api_url = self.base_url .. "/api"
    self.toolbox_url = self.base_url .. "/toolbox"
    self.snaps:load()
    local n, restarted = self.mgr:load()
    -- after load: launchers a killed server left were ended there
    self.cgroups:sweep()
    for _, rec in ipairs(self.mgr:all()) do
      for t in pairs(rec.dtlocal.signed) do self.signed[t] = rec.id end
    end
    self.log("dtlocal: %d sandbox(es) in %s, %d being started again; listening on %s, previews on %s",
      n, self.state_dir, restarted, self.base_url, self.preview_base)
    if self.net then
      self.log("dtlocal: sandbox networks: own namespaces, veth links in 10.200.0.0/16, nftables table "
        .. "inet %s; IPv4 forwarding (net.ipv4.ip_forward) is on%s; domain allow lists through "
        .. "dtlocal's DNS filter on 127.0.0.1:%d", self.net.name,
        self.net.forwarding_enabled and " (turned on by dtlocal)" or "", self.net.filter.port)
      if self.net.dns then
        self.log("dtlocal: the host's nameserver is on its loopback (%s): sandboxes reach it at their "
          .. "gateway (DNAT), their /etc/resolv.conf pointed there at start", self.net.dns)
      end
    elseif self.pasta then
      self.log("dtlocal: sandbox networks: not root: own namespaces linked to the outside by %s "
        .. "(no host port published, the host's loopback unreachable); allow lists are refused "
        .. "(nothing outside a sandbox's reach could enforce them)", self.pasta)
    else
      self.log("dtlocal: sandbox networks: not root and no pasta (passt), sandboxes share the host's "
        .. "network (networkBlockAll: none); allow lists are refused")
    end
    self:write_info()
  end)
  if not started then
    if self.srv then self.srv:close() end
    if self.preview_srv then self.preview_srv:close() end
    if self.cgroups then self.cgroups:close() end
    if self.net then self.net:close() end
    self:unlock()
    error(err, 0)
  end
  local sweeper = scheduler.spawn(sweeper_mod.run, self.mgr)
  sweeper.observed = true
  self.tasks = { sweeper }
  return self
end

--- Serve until SIGTERM or SIGHUP; raises CancelledError when the task is
-- cancelled (Ctrl-C under dtlua).
function App:run()
  local term <close> = core.signal("TERM")
  local hup <close> = core.signal("HUP")
  while term:take() == 0 and hup:take() == 0 do scheduler.wait(term, hup) end
  self.log("dtlocal: signal received, shutting down")
end

--- Stop serving, stop every sandbox process (their states stay recorded,
-- so the next start-up starts them again), remove the description files.
function App:close()
  if self.closed then return end
  self.closed = true
  if self.events then self.events:close() end
  if self.srv then self.srv:close() end
  if self.preview_srv then self.preview_srv:close() end
  for _, t in ipairs(self.tasks) do t:cancel() end
  if self.snaps then self.snaps:shutdown() end
  if self.mgr then self.mgr:shutdown() end
  -- after the shutdown: the sandboxes' processes are gone
  if self.cgroups then self.cgroups:close() end
  if self.net then self.net:close() end
  if self.runner then self.runner:close() end
  for _, p in ipairs(self.info_paths or {}) do
    -- only our own: a newer server may have replaced the user's file
    local f = io.open(p, "rb")
    local info = f and json.decode(f:read("a") or "")
    if f then f:close() end
    if type(info) == "table" and info.pid == util.getpid() then os.remove(p) end
  end
  self:unlock()
end

return M
