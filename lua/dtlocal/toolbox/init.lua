--- dtlocal.toolbox: the in-sandbox toolbox daemon (protocol §4, §5, §6.2).
--
-- Serves Daytona's toolbox API — files, one-shot execution, sessions, PTYs,
-- the Python code interpreter, git, ports, info — over our core's
-- HTTP/WebSocket server (daytona.runtime.server). Inside a sandbox it runs
-- as the `daytona` user (home /home/daytona, also the working directory)
-- and does every file, process and git operation itself with plain paths;
-- on the host it serves its own specs from a temp dir.
--
--     require("dtlocal.toolbox").main{ listen = "127.0.0.1:0" }   -- blocks
--     local srv = require("dtlocal.toolbox").start{ listen = "127.0.0.1:0",
--                                                    home = dir }  -- in a task
--     print(srv.url); ...; srv:close()
--
-- toolbox.main(opts)
--   Runs the daemon until SIGTERM or SIGINT (then stops every session, PTY
--   and child it started and returns true). Inside a scheduler task it
--   serves from that task; elsewhere it runs the scheduler itself. Raises a
--   plain error when it cannot listen. opts:
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
-- the structured body of dtlocal.router (statusCode, message, code, error,
-- timestamp, path, method). Unsupported features (computer use, LSP, the
-- port proxy) answer with an error that says so — never a fake success.
--
-- Handlers are functions (app, ctx). ctx:
--   ctx.method, ctx.path (raw path, no query), ctx.query (decoded table),
--   ctx.headers (lower-case names), ctx.params (route parameters),
--   ctx.is_websocket, ctx.subprotocols (offered, in order),
--   ctx.subprotocol_choice (the X-Daytona-SDK-Version~ token if offered)
--   ctx:read_body([limit]) -> string (413 beyond limit, default 16 MiB)
--   ctx:read_chunk() -> the next chunk of the body, nil at its end
--   ctx:reply_json(status, value), ctx:reply_empty(status),
--   ctx:reply_text(status, text, content_type)
--   ctx:reply_stream(status, headers) -> out: out:write(s), out:finish(),
--       out:abort() (raises: the connection is dropped, the client sees a
--       truncated body)
--   ctx:reply_file(status, headers, path)
--   ctx:upgrade(protocol) -> ws: ws:send(data, "text"|"binary"),
--       ws:receive() -> data, kind | nil (closed), ws:close(code, reason),
--       ws:abort()
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local server = require "daytona.runtime.server"
local router = require "dtlocal.router"
local common = require "dtlocal.toolbox.common"
local extras = require "dtlocal.toolbox.extras"

local util = core.util
local json = router.json
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
    local function handler(app, ctx) return module(name)[fname](app, ctx) end
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
  local r = router.new()
  local function add(method, pattern, fn) r:add(method, pattern, fn) end
  -- info
  add("GET", "/version", function(app, ctx) return ctx:reply_json(200, { version = app.version }) end)
  add("GET", "/user-home-dir", function(app, ctx) return ctx:reply_json(200, { dir = app.home }) end)
  add("GET", "/project-dir", function(app, ctx) return ctx:reply_json(200, { dir = app.home }) end)
  add("GET", "/work-dir", function(app, ctx) return ctx:reply_json(200, { dir = app.workdir }) end)
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
  -- dtlocal's own: the env of a sandbox handed out from the warm pool,
  -- which started before its env was known (dtlocal.api.sandboxes,
  -- take_spare). Only dtlocal sets the header: its proxy drops it from
  -- what clients send (dtlocal.api.proxy INTERNAL_HEADER).
  add("PUT", "/dtlocal/sandbox-env", function(app, ctx)
    if ctx.headers["x-dtlocal-internal"] ~= "sandbox-env" then
      router.raise(404, "no such route: PUT /dtlocal/sandbox-env", "NOT_FOUND")
    end
    local env = common.env_map(common.json_object(ctx:read_body()), "env") or {}
    app.sandbox_env = env
    return ctx:reply_empty(204)
  end)
  -- what this daemon does not do, and ports
  extras.add_routes(r)
  return r
end

---------------------------------------------------------------------------
-- The request context, over daytona.runtime.server's req/res
---------------------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

-- A transport failure of the client's connection (it went away): handled by
-- the server layer, which drops the connection.
local function transport_error(e)
  return errors.is(e, errors.DaytonaConnectionError) or errors.is(e, errors.DaytonaTimeoutError)
    or errors.is(e, errors.CancelledError)
end

function Ctx:read_body(limit)
  if self.body_read then return self.body end
  local ok, body = pcall(self.req.body, self.req, limit or MAX_BODY)
  if not ok then
    if errors.is(body, errors.DaytonaValidationError) then
      router.raise(413, tostring(body.message), "PAYLOAD_TOO_LARGE")
    end
    error(body, 0)
  end
  self.body_read = true
  self.body = body
  return body
end

-- The next raw chunk of the body; nil at its end.
function Ctx:read_chunk()
  return self.req:read()
end

local function respond(self, status, headers, body)
  self.responded = true
  self.status = status
  self.res:send(status, headers, body)
end

function Ctx:reply_json(status, value)
  respond(self, status, { ["Content-Type"] = "application/json; charset=utf-8" }, json.encode(value))
end

function Ctx:reply_empty(status)
  respond(self, status, {}, "")
end

function Ctx:reply_text(status, text, content_type)
  respond(self, status, { ["Content-Type"] = content_type or "text/plain; charset=utf-8" }, text)
end

function Ctx:reply_file(status, headers, path)
  local ok, err = pcall(self.res.file, self.res, status, headers, path)
  if not ok then
    if errors.is(err, errors.DaytonaError) and err.code and not self.res.started then
      common.fs_fail(path, err.message, err.code)
    end
    error(err, 0)
  end
  self.responded = true
  self.status = status
end

local Out = {}
Out.__index = Out

function Out:write(data) self.res:write(data) end
function Out:finish() self.res:finish() end

-- Cut the body short: the error reaches the server layer, which drops the
-- connection of a started stream, so the client sees a truncated transfer.
function Out:abort(why)
  error(errors.DaytonaConnectionError("response aborted: " .. tostring(why or "error"),
                                      { code = "ECONNABORTED" }), 0)
end

function Ctx:reply_stream(status, headers)
  self.responded = true
  self.status = status
  self.res:start(status, headers)
  return setmetatable({ res = self.res }, Out)
end

local WS = {}
WS.__index = WS

function WS:send(data, kind) return self.ws:send(data, kind or "binary") end
function WS:receive() return self.ws:receive() end
function WS:close(code, reason)
  if self.ws:state() ~= "closed" then self.ws:close(code, reason) end
end

function WS:abort() self.ws:abort() end

function Ctx:upgrade(protocol)
  if not self.is_websocket then
    router.raise(400, "this route needs a WebSocket upgrade (Upgrade: websocket)", "BAD_REQUEST")
  end
  local ok, ws = pcall(self.res.websocket, self.res, { protocol = protocol })
  if not ok then
    if errors.is(ws, errors.DaytonaValidationError) then
      router.raise(400, "WebSocket upgrade failed: " .. tostring(ws.message), "BAD_REQUEST")
    end
    error(ws, 0)
  end
  self.responded = true
  self.status = 101
  local w = setmetatable({ ws = ws }, WS)
  self.ws = w
  return w
end

local function new_ctx(app, req, res)
  local path = (req.target or req.path):match("^([^?]*)")
  local choice
  for _, p in ipairs(req.protocols) do
    if p:match("^X%-Daytona%-SDK%-Version~") then choice = p; break end
  end
  return setmetatable({
    app = app, req = req, res = res, method = req.method, path = path,
    query = router.parse_query(req.query), headers = req.headers, params = {},
    is_websocket = req.websocket, subprotocols = req.protocols, subprotocol_choice = choice,
  }, Ctx)
end

---------------------------------------------------------------------------
-- Serving
---------------------------------------------------------------------------

local function handle(app, req, res)
  local ctx = new_ctx(app, req, res)
  local t0 = core.now()
  local handler, params, allowed = app.router:match(ctx.method, ctx.path)
  local ok, status, body, err, tb
  if not handler then
    ok = false
    if params == 405 then
      status, body = 405, router.error_body(405, ("method %s not allowed on %s (allowed: %s)")
        :format(ctx.method, ctx.path, tostring(allowed)), "METHOD_NOT_ALLOWED", ctx.path, ctx.method)
    else
      status, body = 404, router.error_body(404, ("no such route: %s %s"):format(ctx.method, ctx.path),
                                             "NOT_FOUND", ctx.path, ctx.method)
    end
  else
    ctx.params = params
    ok, status, body, err, tb = router.call(ctx.path, ctx.method, handler, app, ctx)
  end
  if app.log then
    app.log(("%s %s %s %.1fms"):format(ctx.method, req.target or ctx.path,
                                       tostring(ok and ctx.status or status), (core.now() - t0) * 1000))
  end
  if ok then
    if not ctx.responded then
      ctx:reply_json(500, router.error_body(500, "internal error: the handler sent no response",
                                            "INTERNAL_SERVER_ERROR", ctx.path, ctx.method))
    end
    return
  end
  if transport_error(err) then
    if ctx.ws then ctx.ws:abort() end
    error(err, 0)   -- the server layer drops the connection (or the task is cancelled)
  end
  -- an unexpected error is a bug: always say where, even without a request log
  if tb then (app.log or function(line) io.stderr:write("dtlocal toolbox: ", line, "\n") end)(tb) end
  if ctx.ws then
    ctx.ws:close(1011, tostring(body.message):sub(1, 120))
  elseif res.started then
    -- the head is out: all that is left is to cut the body short
    error(err, 0)
  else
    ctx:reply_json(status, body)
  end
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
    tmpdir = os.getenv("TMPDIR") or "/tmp",
  }
  if opts.state_dir then
    app.state_dir = opts.state_dir
  else
    app.state_dir = ("%s/dtlocal-toolbox-%d-%s"):format(app.tmpdir, util.getpid(),
                                                       util.hex(util.random_bytes(4)))
    app.own_state_dir = true
  end
  local ok, msg = common.mkdir_p(app.state_dir, 448)
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
    handler = function(req, res) return handle(app, req, res) end,
  })
  if not ok then
    if app.own_state_dir then os.execute("rm -rf '" .. app.state_dir:gsub("'", "'\\''") .. "'") end
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
  if self.app.own_state_dir then
    os.execute("rm -rf '" .. self.app.state_dir:gsub("'", "'\\''") .. "'")
  end
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
    error(tostring(res) .. (tb and ("\n" .. tb) or ""), 0)
  end
  return res
end

return M
