--- dtlocal.toolbox.interpreter: the stateful Python code interpreter
-- (doc/protocol.md §4.6, §5.5).
--
-- A context is one long-lived `python3` worker (globals persist between
-- runs), started on first use in the context's cwd. The built-in `default`
-- context is used when a run names none and is not listed. Runs are queued
-- per context (at most 128 waiting) and executed one at a time.
--
-- Worker protocol (private to this file): the daemon writes one JSON line
-- per run to the worker's stdin ({"code", "envs"}); the worker writes its
-- messages to stdout as lines "\30<json>\n" ({"type":"stdout"|"stderr",
-- "text"}, {"type":"error","name","value","traceback"}, {"type":"done",
-- "status":"completed"|"interrupted"}); any other bytes on its stdout or
-- stderr (a subprocess writing to the inherited descriptors) are passed on
-- as stdout/stderr text.
--
-- WebSocket (GET /process/interpreter/execute): the client sends one text
-- frame {"code", "contextId"?, "timeout"? (seconds; absent 600, 0 none),
-- "envs"?}; the daemon answers with text frames that always carry the five
-- keys type, text, name, value, traceback, ends with a control message
-- ("completed" or "interrupted") and closes 1000, or 4008 after a timeout
-- (the worker gets SIGINT, and SIGKILL after 2 s if it does not stop: the
-- context's state is then lost). Other closes: 1002 unreadable request,
-- 1008 invalid request / unknown or inactive context / queue full, 1001
-- worker ended, 1011 worker could not start.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local proc = require "dtlocal.toolbox.proc"

local util = core.util
local json = http.json
local raise = http.raise
local wait = scheduler.wait
local setmetatable, pairs, ipairs, tostring, type, table, math, os, io, pcall, error =
  setmetatable, pairs, ipairs, tostring, type, table, math, os, io, pcall, error

local M = {}

local DEFAULT_TIMEOUT = 600
local MAX_QUEUE = 128
local GRACE = 2
local MAX_WAIT = 86400

local WORKER = [=[
import io, json, os, sys, traceback
_out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace")
_req = sys.stdin
def _emit(msg):
    _out.write("\x1e" + json.dumps(msg) + "\n")
    _out.flush()
class _Stream(io.TextIOBase):
    def __init__(self, kind):
        self.kind = kind
    def writable(self):
        return True
    def write(self, s):
        if s:
            _emit({"type": self.kind, "text": s})
        return len(s)
    @property
    def encoding(self):
        return "utf-8"
sys.stdin = open(os.devnull)
sys.stdout = _Stream("stdout")
sys.stderr = _Stream("stderr")
_ns = {"__name__": "__main__", "__builtins__": __builtins__}
while True:
    try:
        line = _req.readline()
        if not line:
            break
        req = json.loads(line)
        envs = req.get("envs") or {}
        saved = {k: os.environ.get(k) for k in envs}
        os.environ.update(envs)
        status = "completed"
        try:
            exec(compile(req["code"], "<stdin>", "exec"), _ns)
        except KeyboardInterrupt:
            status = "interrupted"
        except SystemExit:
            pass
        except BaseException as e:
            tb = e.__traceback__.tb_next or e.__traceback__   # not this file's frame
            _emit({"type": "error", "name": type(e).__name__, "value": str(e),
                   "traceback": "".join(traceback.format_exception(type(e), e, tb))})
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _emit({"type": "done", "status": status})
    except KeyboardInterrupt:
        _emit({"type": "done", "status": "interrupted"})
]=]

local Context = {}
Context.__index = Context

function Context:info()
  return { id = self.id, cwd = self.cwd, createdAt = self.created_at,
           active = not self.deleted, language = "python" }
end

-- Deliver a message from the worker to the run in progress.
function Context:deliver(msg)
  local run = self.current
  if run then
    run.inbox[#run.inbox + 1] = msg
    run.event:notify()
  end
end

-- Split the worker's stdout into protocol messages and raw text.
function Context:feed_stdout(data)
  local buf = self.obuf .. data
  while true do
    local i = buf:find("\30", 1, true)
    if not i then
      if buf ~= "" then self:deliver { type = "stdout", text = buf } end
      buf = ""
      break
    end
    if i > 1 then self:deliver { type = "stdout", text = buf:sub(1, i - 1) } end
    local nl = buf:find("\n", i, true)
    if not nl then buf = buf:sub(i); break end
    local msg = json.decode(buf:sub(i + 1, nl - 1))
    if type(msg) == "table" then self:deliver(msg) end
    buf = buf:sub(nl + 1)
  end
  self.obuf = buf
end

function Context:start()
  local script = self.app.state_dir .. "/interpreter_worker.py"
  if not util.stat(script) then
    local f, err = io.open(script, "wb")
    if not f then error("cannot write the interpreter worker: " .. tostring(err), 0) end
    f:write(WORKER)
    f:close()
  end
  local env = common.child_env(self.app)
  env.PYTHONUNBUFFERED = "1"
  if not proc.which("python3", env.PATH) then
    error("python3 is not installed in this sandbox", 0)
  end
  local p, msg = proc.spawn { argv = { "python3", "-u", script }, cwd = self.cwd, env = env }
  if not p then error("cannot start python3: " .. tostring(msg), 0) end
  self.worker = p
  self.obuf = ""
  local pump = scheduler.spawn(function()
    while true do
      local progressed = false
      local out = p:read("stdout")
      if out and out ~= "" then progressed = true; self:feed_stdout(out) end
      local err = p:read("stderr")
      if err and err ~= "" then progressed = true; self:deliver { type = "stderr", text = err } end
      if p:status() and p:eof("stdout") and p:eof("stderr") then break end
      if not progressed then wait(p) end
    end
    p:close()
    if self.worker == p then
      self.worker = nil
      self:deliver { type = "exit" }
    end
  end)
  pump.observed = true
end

-- Stop the worker now (its state is lost; the next run starts a new one).
function Context:kill()
  local p = self.worker
  if p then
    self.worker = nil
    p:close()
    self:deliver { type = "exit" }
  end
end

local function registry(app)
  if not app.contexts then app.contexts = {} end
  return app.contexts
end

local function new_context(app, id, cwd)
  local c = setmetatable({ app = app, id = id, cwd = cwd, queue = {}, event = proc.event(),
                           created_at = common.rfc3339(os.time(), 0) }, Context)
  registry(app)[id] = c
  return c
end

local function default_context(app)
  return registry(app).default or new_context(app, "default", app.workdir)
end

function M.shutdown(app)
  for _, c in pairs(registry(app)) do
    c.deleted = true
    c:kill()
  end
end

---------------------------------------------------------------------------
-- REST
---------------------------------------------------------------------------

function M.create(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local language = common.str(body, "language")
  if language and language ~= "" and language ~= "python" then
    raise(400, ("invalid request body: field 'language' must be python (got %q)"):format(language),
          "INVALID_REQUEST_BODY")
  end
  local cwd = app.workdir
  local c = common.str(body, "cwd")
  if c and c ~= "" then
    cwd = common.resolve(app, c, "cwd")
    local st = util.stat(cwd, true)
    if not st or st.type ~= "directory" then raise(400, "cwd: no such directory: " .. cwd, "BAD_REQUEST") end
  end
  return 200, new_context(app, common.uuid(), cwd):info()
end

function M.list(ctx)
  local app = ctx.app
  local out = json.array()
  local ids = {}
  for id in pairs(registry(app)) do if id ~= "default" then ids[#ids + 1] = id end end
  table.sort(ids)
  for _, id in ipairs(ids) do out[#out + 1] = registry(app)[id]:info() end
  return 200, { contexts = out }
end

function M.delete(ctx)
  local app = ctx.app
  local id = ctx.params.id
  if id == "default" then raise(400, "the default context cannot be deleted", "BAD_REQUEST") end
  local c = registry(app)[id]
  if not c then raise(404, "context not found: " .. id, "NOT_FOUND") end
  registry(app)[id] = nil
  c.deleted = true
  c:kill()
  c.event:notify()
  return 200, { message = "Context deleted successfully" }
end

---------------------------------------------------------------------------
-- WebSocket execution
---------------------------------------------------------------------------

local function message(kind, fields)
  local m = { type = kind, text = "", name = "", value = "", traceback = "" }
  for k, v in pairs(fields or {}) do m[k] = v end
  return json.encode(m)
end

function M.execute(ctx)
  local app = ctx.app
  local ws = ctx:upgrade(ctx.subprotocol_choice)
  local data, kind = ws:receive()
  if not data then return end
  local req = kind == "text" and json.decode(data)
  if type(req) ~= "table" then ws:close(1002, "invalid request: a JSON object is expected"); return end
  if type(req.code) ~= "string" or req.code == "" then ws:close(1008, "code is required"); return end
  local timeout = req.timeout
  if timeout == nil or timeout == json.null then timeout = DEFAULT_TIMEOUT end
  if type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout then
    ws:close(1008, "timeout must be a non-negative number"); return
  end
  local envs = req.envs
  if envs == json.null then envs = nil end
  if envs ~= nil then
    local ok, res = pcall(common.env_map, { envs = envs }, "envs")
    if not ok then ws:close(1008, "invalid envs"); return end
    envs = res
  end
  local c
  if req.contextId == nil or req.contextId == json.null or req.contextId == "" then
    c = default_context(app)
  else
    c = registry(app)[tostring(req.contextId)]
    if not c then ws:close(1008, ("context not found: %s"):format(tostring(req.contextId)):sub(1, 120)); return end
  end
  if c.deleted then ws:close(1008, "context is not active"); return end
  if #c.queue >= MAX_QUEUE then ws:close(1008, "too many queued runs"); return end

  local run = { inbox = {}, event = proc.event() }
  c.queue[#c.queue + 1] = run
  -- wait for our turn
  while c.queue[1] ~= run or c.current do
    if c.deleted then ws:close(1001, "context shutdown"); return end
    c.event:wait(1)
  end
  table.remove(c.queue, 1)
  c.current = run
  local function done()
    if c.current == run then c.current = nil end
    c.event:notify()
  end
  local ok, err = pcall(function()
    if not c.worker then
      local sok, serr = pcall(c.start, c)
      if not sok then ws:close(1011, tostring(serr):sub(1, 120)); return end
    end
    local worker = c.worker
    worker:write(json.encode { code = req.code, envs = envs or json.null } .. "\n")
    local deadline = timeout > 0 and core.now() + timeout or nil
    local timed_out, killed_at = false, nil
    local client_ok = true
    local function send(m)
      if client_ok and not pcall(ws.send, ws, m, "text") then client_ok = false end
    end
    while true do
      while #run.inbox > 0 do
        local m = table.remove(run.inbox, 1)
        if m.type == "stdout" or m.type == "stderr" then
          send(message(m.type, { text = tostring(m.text or "") }))
        elseif m.type == "error" then
          send(message("error", { name = tostring(m.name or ""), value = tostring(m.value or ""),
                                  traceback = tostring(m.traceback or "") }))
        elseif m.type == "done" then
          local status = (timed_out or m.status == "interrupted") and "interrupted" or "completed"
          send(message("control", { text = status }))
          if client_ok then
            if timed_out then ws:close(4008, "execution timed out") else ws:close(1000, "") end
          end
          return
        elseif m.type == "exit" then
          if timed_out then
            send(message("control", { text = "interrupted" }))
            if client_ok then ws:close(4008, "execution timed out") end
          elseif client_ok then
            ws:close(1001, "worker process ended")
          end
          return
        end
      end
      local now = core.now()
      if deadline and not timed_out and now >= deadline then
        timed_out = true
        killed_at = now + GRACE
        worker:kill("INT", false)
      elseif killed_at and now >= killed_at then
        killed_at = nil
        c:kill()
      end
      local limit = killed_at and killed_at - now or deadline and not timed_out and deadline - now or nil
      -- at most a day per wait: a timer cannot hold 1e19 s (or inf), and
      -- the loop looks at the deadline again anyway
      run.event:wait(limit and math.min(math.max(limit, 0.001), MAX_WAIT) or nil)
    end
  end)
  done()
  if not ok then error(err, 0) end
end

return M
