--- dtlocal.toolbox: the in-sandbox toolbox daemon (doc/protocol.md §4, §5, §6.2).
--
-- Serves Daytona's toolbox API — files, one-shot execution, sessions, PTYs,
-- the Python code interpreter, git, language servers, computer use, ports,
-- info — over
-- our core's HTTP/WebSocket server (daytona.runtime.server). Inside a
-- sandbox it runs as the `daytona` user (home /home/daytona, also the
-- working directory) and does every file, process and git operation itself
-- with plain paths; on the host it serves its own specs from a temp dir.
--
--     require("dtlocal.toolbox").main{ listen = "127.0.0.1:0" }   -- blocks
--     local srv = require("dtlocal.toolbox").start{ listen = "127.0.0.1:0",
--                                                    home = dir }  -- in a task
--     print(srv.url); ...; srv:close()
--
-- toolbox.main(opts)
--   Runs the daemon until SIGTERM or SIGINT (then stops every session, PTY,
--   language server and child it started and returns true). Inside a
--   scheduler task it serves from that task; elsewhere it runs the
--   scheduler itself. Raises a plain error when it cannot listen. opts:
--     listen      "HOST:PORT" (default "127.0.0.1:2280"; port 0 picks one)
--     socket      path of a unix socket to listen on instead (a stale
--                 socket there is replaced; the file is removed on close)
--     home        the user's home (default $HOME, else /home/daytona)
--     workdir     where relative paths resolve and commands start
--                 (default: home)
--     state_dir   where session logs live (default: a fresh private dir
--                 under $TMPDIR or /tmp, removed on exit)
--     entrypoint  a command run as the `entrypoint` session, if any
--     version     the daemon version reported by GET /version
--     on_ready    function(srv) called once listening (srv.url, srv.port);
--                 without it a line "dtlocal toolbox: listening on ..." goes
--                 to stderr
--     own_network true when the sandbox has a network of its own (dtlocal
--                 as root): servers meant for previews (noVNC) listen on
--                 every address of it, not only its loopback
--     shell       the shell for commands and sessions (default: zsh or bash
--                 as listed in /etc/shells, else $SHELL, else /bin/sh)
--     log         function(line): one line per request, and the traceback
--                 of any unexpected error (default: tracebacks to stderr)
--
-- toolbox.start(opts) -> Server
--   The same, but returns at once (call it inside a task): srv.url and
--   srv.port (TCP) or srv.socket (unix), srv.app (the daemon state) and
--   srv:close() which stops serving and everything the daemon started.
--
-- Conventions: every handler validates its input and answers errors with
-- the structured body of dtlocal.http (statusCode, message, code, error,
-- timestamp, path, method). Unsupported features (the port proxy) answer
-- with an error that says so — never a fake success.
--
-- Handlers are dtlocal.http's: `function(ctx, params) -> status, body
-- [, headers]`, or answering through ctx (stream, file, upgrade). ctx.app
-- is the daemon's state (home, workdir, shell, state_dir, ...), and
-- ctx.subprotocol_choice the X-Daytona-SDK-Version~ subprotocol the client
-- offered, if any.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local server = require "daytona.runtime.server"
local http = require "dtlocal.http"
local router = require "dtlocal.router"
local common = require "dtlocal.toolbox.common"
local fs = require "dtlocal.fs"
local extras = require "dtlocal.toolbox.extras"

local util = core.util
local wait = scheduler.wait
local setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, os, io, pcall, error =
  setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, os, io, pcall, error

local M = {}

M.VERSION = "v0.1.0-dtlocal"

local MAX_BODY = 16 * 1024 * 1024   -- JSON bodies; uploads stream instead

---------------------------------------------------------------------------
-- Routes
---------------------------------------------------------------------------

-- The handler modules load on their first request, not at start-up: the
-- daemon's start is on the critical path of creating a sandbox, and most
-- sandboxes never use git, PTYs or the interpreter. `handlers.files.list`
-- is a function that requires dtlocal.toolbox.files when first called.
local function module(name) return require("dtlocal.toolbox." .. name) end

local handlers = setmetatable({}, { __index = function(t, name)
  local fns = setmetatable({}, { __index = function(fns, fname)
    local function handler(ctx, params) return module(name)[fname](ctx, params) end
    fns[fname] = handler
    return handler
  end })
  t[name] = fns
  return fns
end })

-- A handler module's shutdown, if the module was ever loaded.
local function shutdown(name, app)
  local mod = package.loaded["dtlocal.toolbox." .. name]
  if mod then mod.shutdown(app) end
end

local function build_router()
  local files, exec, sessions = handlers.files, handlers.exec, handlers.sessions
  local pty, interpreter, git = handlers.pty, handlers.interpreter, handlers.git
  local lsp = handlers.lsp
  local cu, rec = handlers.computeruse, handlers.recordings
  local r = router.new()
  local function add(method, pattern, fn) r:add(method, pattern, fn) end
  -- info
  add("GET", "/version", function(ctx) return 200, { version = ctx.app.version } end)
  add("GET", "/user-home-dir", function(ctx) return 200, { dir = ctx.app.home } end)
  add("GET", "/project-dir", function(ctx) return 200, { dir = ctx.app.home } end)
  add("GET", "/work-dir", function(ctx) return 200, { dir = ctx.app.workdir } end)
  -- files
  add("GET", "/files", files.list)
  add("DELETE", "/files", files.delete)
  add("GET", "/files/info", files.info)
  add("POST", "/files/folder", files.folder)
  add("POST", "/files/move", files.move)
  add("POST", "/files/permissions", files.permissions)
  add("GET", "/files/find", files.find)
  add("GET", "/files/search", files.search)
  add("POST", "/files/replace", files.replace)
  add("POST", "/files/upload", files.upload)
  add("POST", "/files/upload-v2", files.upload)
  add("POST", "/files/bulk-upload", files.bulk_upload)
  add("GET", "/files/download", files.download)
  add("POST", "/files/bulk-download", files.bulk_download)
  -- process
  add("POST", "/process/execute", exec.execute)
  add("POST", "/process/code-run", exec.code_run)
  add("POST", "/process/session", sessions.create)
  add("GET", "/process/session", sessions.list)
  add("GET", "/process/session/entrypoint", sessions.get_entrypoint)
  add("GET", "/process/session/entrypoint/logs", sessions.entrypoint_logs)
  add("GET", "/process/session/{sessionId}", sessions.get)
  add("DELETE", "/process/session/{sessionId}", sessions.delete)
  add("POST", "/process/session/{sessionId}/exec", sessions.exec)
  add("GET", "/process/session/{sessionId}/command/{commandId}", sessions.get_command)
  add("GET", "/process/session/{sessionId}/command/{commandId}/logs", sessions.logs)
  add("POST", "/process/session/{sessionId}/command/{commandId}/input", sessions.input)
  add("POST", "/process/pty", pty.create)
  add("GET", "/process/pty", pty.list)
  add("GET", "/process/pty/create-connect", pty.create_connect)
  add("GET", "/process/pty/{sessionId}", pty.get)
  add("DELETE", "/process/pty/{sessionId}", pty.delete)
  add("POST", "/process/pty/{sessionId}/resize", pty.resize)
  add("GET", "/process/pty/{sessionId}/connect", pty.connect)
  add("POST", "/process/interpreter/context", interpreter.create)
  add("GET", "/process/interpreter/context", interpreter.list)
  add("DELETE", "/process/interpreter/context/{id}", interpreter.delete)
  add("GET", "/process/interpreter/execute", interpreter.execute)
  -- git
  add("POST", "/git/clone", git.clone)
  add("GET", "/git/status", git.status)
  add("GET", "/git/branches", git.branches)
  add("POST", "/git/branches", git.create_branch)
  add("DELETE", "/git/branches", git.delete_branch)
  add("POST", "/git/checkout", git.checkout)
  add("POST", "/git/add", git.add)
  add("POST", "/git/commit", git.commit)
  add("POST", "/git/push", git.push)
  add("POST", "/git/pull", git.pull)
  add("GET", "/git/history", git.history)
  -- language servers
  add("POST", "/lsp/start", lsp.start)
  add("POST", "/lsp/stop", lsp.stop)
  add("POST", "/lsp/did-open", lsp.did_open)
  add("POST", "/lsp/did-close", lsp.did_close)
  add("POST", "/lsp/completions", lsp.completions)
  add("GET", "/lsp/document-symbols", lsp.document_symbols)
  add("GET", "/lsp/workspacesymbols", lsp.workspace_symbols)
  -- computer use (doc/dtlocal.md "Computer Use")
  local function cuadd(method, path, fn) add(method, "/computeruse" .. path, fn) end
  cuadd("POST", "/start", cu.start)
  cuadd("POST", "/stop", cu.stop)
  cuadd("GET", "/status", cu.status)
  cuadd("GET", "/process-status", cu.status)
  cuadd("GET", "/process/{name}/status", cu.process_status)
  cuadd("POST", "/process/{name}/restart", cu.process_restart)
  cuadd("GET", "/process/{name}/logs", cu.process_logs)
  cuadd("GET", "/process/{name}/errors", cu.process_errors)
  cuadd("GET", "/screenshot", cu.screenshot)
  cuadd("GET", "/screenshot/region", cu.screenshot_region)
  cuadd("GET", "/screenshot/compressed", cu.screenshot_compressed)
  cuadd("GET", "/screenshot/region/compressed", cu.screenshot_region_compressed)
  cuadd("GET", "/mouse/position", cu.mouse_position)
  cuadd("POST", "/mouse/move", cu.mouse_move)
  cuadd("POST", "/mouse/click", cu.mouse_click)
  cuadd("POST", "/mouse/drag", cu.mouse_drag)
  cuadd("POST", "/mouse/scroll", cu.mouse_scroll)
  cuadd("POST", "/keyboard/type", cu.keyboard_type)
  cuadd("POST", "/keyboard/key", cu.keyboard_key)
  cuadd("POST", "/keyboard/hotkey", cu.keyboard_hotkey)
  cuadd("GET", "/display/info", cu.display_info)
  cuadd("GET", "/display/windows", cu.display_windows)
  cuadd("GET", "/a11y/tree", cu.a11y_tree)
  cuadd("POST", "/a11y/find", cu.a11y_find)
  cuadd("POST", "/a11y/node/focus", cu.a11y_focus)
  cuadd("POST", "/a11y/node/invoke", cu.a11y_invoke)
  cuadd("POST", "/a11y/node/value", cu.a11y_value)
  cuadd("POST", "/recordings/start", rec.start)
  cuadd("POST", "/recordings/stop", rec.stop)
  cuadd("GET", "/recordings", rec.list)
  cuadd("GET", "/recordings/{id}/download", rec.download)
  cuadd("GET", "/recordings/{id}", rec.get)
  cuadd("DELETE", "/recordings/{id}", rec.delete)
  -- dtlocal's own: the env of a sandbox handed out from the warm pool,
  -- which started before its env was known (dtlocal.control.warm_pool,
  -- Pool:take). Only dtlocal sets the header: its proxy drops it from
  -- what clients send (dtlocal.control.proxy INTERNAL_HEADER).
  add("PUT", "/dtlocal/sandbox-env", function(ctx)
    if ctx.headers["x-dtlocal-internal"] ~= "sandbox-env" then
      http.raise(404, "no such route: PUT /dtlocal/sandbox-env", "NOT_FOUND")
    end
    ctx.app.sandbox_env = common.env_map(ctx:json_object(true), "env") or {}
    return 204
  end)
  -- what this daemon does not do, and ports
  extras.add_routes(r)
  return r
end

---------------------------------------------------------------------------
-- Serving
---------------------------------------------------------------------------

-- dtlocal's own: a preview of a server that listens on the sandbox's
-- loopback only, which dtlocal cannot reach at the sandbox's address (its
-- own network, doc/dtlocal.md "Preview links"): forwarded here, inside the
-- sandbox's network namespace, to 127.0.0.1:PORT, any method, WebSockets
-- too. Only dtlocal sets the header (its proxy drops it from what clients
-- send); the daemon's socket is dtlocal's alone.
local function loopback_preview(ctx, port, rest)
  local proxy = require "dtlocal.control.proxy"
  port = math.tointeger(tonumber(port))
  if not port or port < 1 or port > 65535 then http.raise(400, "port must be 1-65535", "BAD_REQUEST") end
  local target = (rest == "" and "/" or rest) .. (ctx.qs ~= "" and ("?" .. ctx.qs) or "")
  local opts = { what = ("port %d of this sandbox"):format(port),
                 headers = { ["X-Forwarded-Host"] = ctx.headers["x-forwarded-host"],
                             ["X-Forwarded-Proto"] = ctx.headers["x-forwarded-proto"] } }
  if ctx.is_websocket then
    return proxy.websocket(ctx, ("ws://127.0.0.1:%d"):format(port) .. target, opts)
  end
  return proxy.forward(ctx, ("http://127.0.0.1:%d"):format(port) .. target, opts)
end

local function dispatch(ctx)
  for _, p in ipairs(ctx.subprotocols) do
    if p:match("^X%-Daytona%-SDK%-Version~") then ctx.subprotocol_choice = p; break end
  end
  if ctx.headers["x-dtlocal-internal"] == "preview" then
    local port, rest = ctx.path:match("^/dtlocal/port/(%d+)(.*)$")
    if port then return loopback_preview(ctx, port, rest) end
  end
  return ctx.app.router:dispatch(ctx)
end

local function request_handler(app)
  local log = app.log
  return http.handler{
    app = app, dispatch = dispatch, max_body = MAX_BODY,
    log = log and function(ctx, status, seconds)
      log(("%s %s %s %.1fms"):format(ctx.method, ctx.target, tostring(status), seconds * 1000))
    end,
    -- an unexpected error is a bug: always say where, even without a request log
    on_bug = function(_, tb)
      (log or function(line) io.stderr:write("dtlocal toolbox: ", line, "\n") end)(tb)
    end,
  }
end

local function default_home()
  local h = os.getenv("HOME")
  if h and h ~= "" then return h end
  return "/home/daytona"
end

local function new_app(opts)
  local home = common.clean(opts.home or default_home())
  local workdir = common.clean(opts.workdir or home)
  local app = {
    home = home, workdir = workdir, version = opts.version or M.VERSION,
    shell = opts.shell or common.find_shell(), log = opts.log,
    tmpdir = os.getenv("TMPDIR") or "/tmp", own_network = opts.own_network and true or false,
  }
  if opts.state_dir then
    app.state_dir = opts.state_dir
  else
    app.state_dir = ("%s/dtlocal-toolbox-%d-%s"):format(app.tmpdir, util.getpid(),
                                                       util.hex(util.random_bytes(4)))
    app.own_state_dir = true
  end
  local ok, msg = fs.mkdirs(app.state_dir, 448, 493)
  if not ok then error("toolbox: cannot create the state directory: " .. tostring(msg), 0) end
  app.router = build_router()
  return app
end

local Server = {}
Server.__index = Server
Server.__name = "dtlocal.toolbox.Server"

local function parse_listen(s)
  local host, port = s:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]+):(%d+)$") end
  if not host then error(("toolbox: bad listen address %q (HOST:PORT expected)"):format(s), 0) end
  return host, tonumber(port)
end

--- Start serving in the background (call inside a task); returns a Server.
function M.start(opts)
  opts = opts or {}
  local host, port, where
  if opts.fd then
    where = "descriptor " .. opts.fd
  elseif opts.socket then
    where = opts.socket
    -- a socket left by a daemon that died (the sandbox's run/ dir outlives
    -- it) would make listen fail: it is ours to replace
    local st = util.stat(opts.socket)
    if st and st.type == "socket" then os.remove(opts.socket) end
  else
    if opts.host and opts.port then host, port = opts.host, opts.port
    else host, port = parse_listen(opts.listen or "127.0.0.1:2280") end
    where = ("%s:%d"):format(host, port)
  end
  local app = new_app(opts)
  local ok, srv = pcall(server.listen, {
    host = host, port = port, socket = opts.socket, fd = opts.fd, log = opts.log or function() end,
    handler = request_handler(app),
  })
  if not ok then
    if app.own_state_dir then fs.remove_tree(app.state_dir) end
    error(("toolbox: cannot listen on %s: %s"):format(where, tostring(srv)), 0)
  end
  local self = setmetatable({ app = app, srv = srv, port = srv.port, url = srv.url, host = host,
                              socket = opts.socket }, Server)
  if opts.entrypoint then module("sessions").start_entrypoint(app, opts.entrypoint) end
  return self
end

--- Stop serving and stop every session, PTY and child the daemon started.
function Server:close()
  if self.closed then return end
  self.closed = true
  self.srv:close()
  shutdown("sessions", self.app)
  shutdown("pty", self.app)
  shutdown("interpreter", self.app)
  shutdown("lsp", self.app)
  shutdown("recordings", self.app)   -- ffmpeg finishes its files while X still runs
  shutdown("computeruse", self.app)
  if self.app.own_state_dir then fs.remove_tree(self.app.state_dir) end
end

Server.__close = Server.close

--- Run the daemon until SIGTERM/SIGINT.
function M.main(opts)
  opts = opts or {}
  local function serve()
    local srv <close> = M.start(opts)
    if opts.on_ready then opts.on_ready(srv)
    else io.stderr:write("dtlocal toolbox: listening on ", srv.url or ("unix:" .. srv.socket), "\n") end
    local term <close> = core.signal("TERM")
    local int <close> = core.signal("INT")
    while term:take() == 0 and int:take() == 0 do wait(term, int) end
    srv:close()
    return true
  end
  if scheduler.running() then return serve() end
  local ok, res, tb = scheduler.run(serve)
  if not ok then
    if res == "interrupted" then return true end
    scheduler.shutdown()   -- the request tasks it left
    error(tostring(res) .. (tb and ("\n" .. tb) or ""), 0)
  end
  return res
end

return M
