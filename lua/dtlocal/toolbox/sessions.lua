--- dtlocal.toolbox.sessions: /process/session (doc/protocol.md §4.4, §5.1–§5.3).
--
-- A session is one long-lived non-interactive shell in its own process
-- group. Commands run in it one after another: each is written to a file
-- and sourced (`. file`) by the shell, so `cd`, exported variables and
-- functions persist; a command that is still running (async or not) holds
-- the shell and later ones queue behind it.
--
-- After a command the shell prints a sentinel line on stdout (carrying the
-- exit status) and one on stderr. Both arrive after everything the command
-- wrote to the same pipe, so when the pump task has seen both, the log is
-- complete: the exit code is published only then. The sentinel begins with
-- a per-session random nonce, so output cannot fake it by accident.
--
-- The pump frames output as doc/protocol.md §5.1 requires: every line (and every switch of
-- stream) starts with 01 01 01 (stdout) or 02 02 02 (stderr); a final line
-- without a newline gets one. The log lives in a file per command in the
-- daemon's state directory, read by the logs route (JSON or text per doc/protocol.md §5.3)
-- and replayed-then-tailed by the follow WebSocket (binary frames of at
-- most 1024 bytes, close 1000 once the command has finished and its log
-- has been sent).
--
-- Async commands read stdin from a FIFO held open by a small `cat` helper
-- whose stdin the daemon writes: /input feeds it (and echoes the data into
-- the log as stdout unless suppressInputEcho). Sync commands read
-- /dev/null. If the shell dies (a command ran `exit`), the running command
-- ends with the shell's status and the next command gets a fresh shell.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local fs = require "dtlocal.fs"
local proc = require "dtlocal.toolbox.proc"

local util = core.util
local json = http.json
local raise = http.raise
local wait = scheduler.wait
local STDOUT, STDERR = common.STDOUT, common.STDERR
local setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, io, os, math, pcall, error =
  setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, io, os, math, pcall, error

local M = {}

local FRAME = 1024                 -- bytes per WebSocket frame of a followed log
local ENTRYPOINT = "entrypoint"
local TEXT = { ["Content-Type"] = "text/plain; charset=utf-8" }
local ENTRYPOINT_CMD = "entrypoint_command"

local new_id = common.uuid

local function shquote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------------------
-- Commands and their logs
---------------------------------------------------------------------------

local Command = {}
Command.__index = Command

local function new_command(session, id, text, async, suppress_echo)
  local cmd = setmetatable({
    id = id, command = text, async = async, suppress_echo = suppress_echo,
    session = session, done = false, exit_code = nil, size = 0,
    log_path = ("%s/%s.log"):format(session.dir, util.hex(util.random_bytes(8))),
    event = proc.event(),
    line_start = { out = true, err = true }, last = nil,
    pending_input = {},
  }, Command)
  local f, err = io.open(cmd.log_path, "wb")
  if not f then raise(500, "cannot create the command log: " .. tostring(err)) end
  f:setvbuf("no")   -- readers open the file themselves
  cmd.log = f
  return cmd
end

-- Append already-framed bytes to the log and wake its readers.
function Command:append(bytes)
  if bytes == "" or not self.log then return end
  self.log:write(bytes)
  self.size = self.size + #bytes
  self.event:notify()
end

-- Frame output of stream s ("out"/"err") per doc/protocol.md §5.1 and append it.
function Command:emit(s, data)
  if data == "" or not self.log then return end
  local marker = s == "out" and STDOUT or STDERR
  local parts, pos, n = {}, 1, #data
  while pos <= n do
    if self.line_start[s] or self.last ~= s then parts[#parts + 1] = marker end
    self.last = s
    local nl = data:find("\n", pos, true)
    if nl then
      parts[#parts + 1] = data:sub(pos, nl)
      self.line_start[s] = true
      pos = nl + 1
    else
      parts[#parts + 1] = data:sub(pos)
      self.line_start[s] = false
      pos = n + 1
    end
  end
  self:append(table.concat(parts))
end

-- The command has ended: terminate unfinished lines, publish the exit code,
-- release the input helper and wake everyone waiting.
function Command:finish(code)
  if self.done then return end
  for _, s in ipairs { "out", "err" } do
    if not self.line_start[s] then
      self:append((self.last ~= s and (s == "out" and STDOUT or STDERR) or "") .. "\n")
      self.last = s
      self.line_start[s] = true
    end
  end
  if self.log then self.log:close(); self.log = nil end
  if self.helper then self.helper:close(); self.helper = nil end
  if self.fifo then os.remove(self.fifo); self.fifo = nil end
  if self.script then os.remove(self.script); self.script = nil end
  self.exit_code = code
  self.done = true
  self.event:notify()
end

-- The whole log so far.
function Command:read_log()
  local f = io.open(self.log_path, "rb")
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return s
end

function Command:to_json()
  return { id = self.id, command = self.command, exitCode = self.exit_code }
end

---------------------------------------------------------------------------
-- Sessions
---------------------------------------------------------------------------

local Session = {}
Session.__index = Session

local function hold_back(buf, sent)
  -- length of the longest suffix of buf that is a proper prefix of sent
  local max = math.min(#buf, #sent - 1)
  local from = #buf - max + 1
  local i = buf:find("\31", from, true)
  while i do
    local tail = buf:sub(i)
    if sent:sub(1, #tail) == tail then return #tail end
    i = buf:find("\31", i + 1, true)
  end
  return 0
end

function Session:start_shell()
  local env = common.child_env(self.app)
  local p, msg = proc.spawn { argv = { self.app.shell }, cwd = self.cwd, env = env,
                              stdin = "pipe", stdout = "pipe", stderr = "pipe", tag = self.tag }
  if not p then raise(500, "cannot start the session shell: " .. tostring(msg)) end
  self.shell = p
  self.bufs = { out = "", err = "" }
  self.pump = scheduler.spawn(self.pump_loop, self, p)
  self.pump.observed = true
end

-- Handle a complete sentinel line (without the prefix) seen on stream s.
function Session:sentinel(s, line)
  local cmd = self.running
  local cid, code = line:match("^([^:]*):?(%-?%d*)$")
  if not cmd or cid ~= cmd.id then return end
  if s == "out" then
    cmd.got_out = true
    cmd.sentinel_code = tonumber(code) or 1
  else
    cmd.got_err = true
  end
  if cmd.got_out and cmd.got_err then
    self.running = nil
    cmd:finish(cmd.sentinel_code)
    self:next()
  end
end

-- Feed a chunk of the shell's stream s through sentinel detection.
function Session:feed(s, chunk)
  local buf = self.bufs[s] .. chunk
  local sent = self.sent
  while true do
    local i = buf:find(sent, 1, true)
    if i then
      if self.running then self.running:emit(s, buf:sub(1, i - 1)) end
      local nl = buf:find("\n", i + #sent, true)
      if not nl then buf = buf:sub(i); break end
      local line = buf:sub(i + #sent, nl - 1)
      buf = buf:sub(nl + 1)
      self:sentinel(s, line)
    else
      local hold = hold_back(buf, sent)
      if self.running then self.running:emit(s, buf:sub(1, #buf - hold)) end
      buf = buf:sub(#buf - hold + 1)
      break
    end
  end
  self.bufs[s] = buf
end

-- The pump: one task per shell reading both of its streams.
function Session.pump_loop(self, p)
  while true do
    local progressed = false
    for _, s in ipairs { "out", "err" } do
      local data = p:read(s == "out" and "stdout" or "stderr")
      if data and data ~= "" then
        progressed = true
        if self.shell == p then self:feed(s, data) end
      end
    end
    if self.shell ~= p then p:close(); return end
    local code = p:status()
    if code and p:eof("stdout") and p:eof("stderr") then
      -- the shell has gone: end the running command with its status
      p:close()
      self.shell = nil
      local cmd = self.running
      self.running = nil
      if cmd then
        for _, s in ipairs { "out", "err" } do cmd:emit(s, self.bufs[s]) end
        cmd:finish(code)
      end
      if not self.deleted then self:next() end
      return
    end
    if not progressed then wait(p) end
  end
end

-- Start the next queued command if the shell is free.
function Session:next()
  if self.running or self.deleted then return end
  local cmd = table.remove(self.queue, 1)
  if not cmd then return end
  local ok, err = pcall(self.run_command, self, cmd)
  if not ok then
    cmd:emit("err", "dtlocal: cannot run the command: " .. tostring(http.is_http_error(err) and err.message or err) .. "\n")
    cmd:finish(1)
    return self:next()
  end
end

function Session:run_command(cmd)
  if not self.shell then self:start_shell() end
  local script = cmd.log_path:gsub("%.log$", ".sh")
  local f, err = io.open(script, "wb")
  if not f then error("cannot write the command file: " .. tostring(err), 0) end
  f:write(cmd.command, "\n")
  f:close()
  cmd.script = script
  local stdin = "/dev/null"
  if cmd.async then
    local fifo = cmd.log_path:gsub("%.log$", ".in")
    local r, msg = proc.run({ "mkfifo", "-m", "600", fifo })
    if not r or r.exit_code ~= 0 then
      error("cannot create the input FIFO: " .. tostring(r and r.output or msg), 0)
    end
    cmd.fifo = fifo
    -- the helper holds the FIFO's write end for as long as the command runs,
    -- so the command sees no EOF; the daemon writes input to its stdin
    local h, hmsg = proc.spawn { argv = { "sh", "-c", 'exec cat > "$1"', "sh", fifo },
                                 cwd = "/", stdin = "pipe", stdout = "null", stderr = "null" }
    if not h then error("cannot start the input helper: " .. tostring(hmsg), 0) end
    cmd.helper = h
    for _, data in ipairs(cmd.pending_input) do h:write(data) end
    cmd.pending_input = {}
    stdin = fifo
  end
  self.running = cmd
  local prefix = self.sent_text
  local wrapper = table.concat {
    "{ . ", shquote(script), "; } < ", shquote(stdin), "\n",
    "__dtlua_ec=$?; printf '", prefix, "%s:%s\\n' ", shquote(cmd.id), " \"$__dtlua_ec\"; ",
    "printf '", prefix, "%s\\n' ", shquote(cmd.id), " >&2\n",
  }
  local ok, werr = self.shell:write(wrapper)
  if ok == nil then
    self.running = nil
    error("cannot write to the session shell: " .. tostring(werr), 0)
  end
end

-- Queue a command; returns it.
function Session:exec(text, async, suppress_echo, id)
  local cmd = new_command(self, id or new_id(), text, async, suppress_echo)
  self.commands[cmd.id] = cmd
  self.order[#self.order + 1] = cmd.id
  self.queue[#self.queue + 1] = cmd
  self:next()
  return cmd
end

-- Feed input to a running async command.
function Session:input(cmd, data)
  if data:sub(-1) ~= "\n" then data = data .. "\n" end
  if not cmd.suppress_echo then cmd:emit("out", data) end
  if cmd.helper then
    local ok, msg = cmd.helper:write(data)
    if ok == nil then raise(410, "the command no longer accepts input: " .. tostring(msg), "GONE") end
  else
    cmd.pending_input[#cmd.pending_input + 1] = data
  end
end

-- Stop everything the session started, not only the shell's process group
-- (commands may `setsid`, double-fork or turn on job control): SIGTERM to
-- all of it, found by the session's tag (proc.lua), a second of grace to
-- exit cleanly, then SIGKILL to whatever is left or was forked meanwhile
-- (at once, without the grace, when `quick`: daemon shutdown).
function Session:delete(quick)
  self.deleted = true
  local p = self.shell
  for _, cmd in ipairs(self.queue) do cmd.cancelled = true; cmd:finish(1) end
  self.queue = {}
  if self.running then
    self.running.cancelled = true
    self.running:finish(1)
    self.running = nil
  end
  local ok, err = true, nil
  if not quick then
    -- the processes signalled now are remembered: the SIGKILL below still
    -- finds those of the shell's session after the shell has been reaped.
    -- A cancellation during the grace must not skip the SIGKILL: the
    -- session is already out of the registry, nothing could end them later.
    ok, err = pcall(function()
      if self.tag:signal("TERM", p) > 0 then
        local deadline = core.now() + 1
        while self.tag:alive() and core.now() < deadline do scheduler.sleep(0.02) end
      end
    end)
  end
  -- while the shell is unreaped its pid still names its session
  self.tag:kill(p)
  if p then
    p:close()
    self.shell = nil
  end
  for _, cmd in pairs(self.commands) do cmd:finish(cmd.exit_code or 1) end
  self.event:notify()
  fs.remove_tree(self.dir)
  if not ok then error(err, 0) end
end

function Session:to_json()
  local cmds = json.array()
  for _, id in ipairs(self.order) do cmds[#cmds + 1] = self.commands[id]:to_json() end
  return { sessionId = self.id, commands = cmds }
end

---------------------------------------------------------------------------
-- The registry (one per app)
---------------------------------------------------------------------------

local function registry(app)
  local reg = app.sessions
  if not reg then
    reg = { by_id = {} }
    app.sessions = reg
  end
  return reg
end

local function create_session(app, id, cwd)
  local reg = registry(app)
  local dir = ("%s/sessions/%s"):format(app.state_dir, util.hex(util.random_bytes(8)))
  local ok, msg = fs.mkdirs(dir, 448, 493)   -- 0700
  if not ok then raise(500, "cannot create the session directory: " .. tostring(msg)) end
  local nonce = util.hex(util.random_bytes(8))
  local s = setmetatable({
    app = app, id = id, dir = dir, cwd = cwd, commands = {}, order = {}, queue = {},
    sent = "\31DTLUA" .. nonce .. ":", sent_text = "\\037DTLUA" .. nonce .. ":",
    event = proc.event(), tag = proc.tag(),
  }, Session)
  s:start_shell()
  reg.by_id[id] = s
  return s
end

--- Start the sandbox's entrypoint as the `entrypoint` session (opts.entrypoint
-- of main); called once at start-up.
function M.start_entrypoint(app, command)
  local s = create_session(app, ENTRYPOINT, app.workdir)
  s:exec(command, true, true, ENTRYPOINT_CMD)
end

--- Stop every session (daemon shutdown).
function M.shutdown(app)
  local reg = registry(app)
  for id, s in pairs(reg.by_id) do
    reg.by_id[id] = nil
    pcall(s.delete, s, true)
  end
end

local function get_session(app, id)
  local s = registry(app).by_id[id]
  if not s or s.deleted then raise(404, "session not found: " .. id, "NOT_FOUND") end
  return s
end

local function get_command(app, sid, cid)
  local s = get_session(app, sid)
  local cmd = s.commands[cid]
  if not cmd then raise(404, "command not found: " .. cid, "NOT_FOUND") end
  return s, cmd
end

---------------------------------------------------------------------------
-- Handlers
---------------------------------------------------------------------------

function M.create(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local id = common.str(body, "sessionId", true)
  if id == ENTRYPOINT then
    raise(400, "session id 'entrypoint' is reserved", "BAD_REQUEST")
  end
  if #id > 256 or id:find("[%c/]") then
    raise(400, "invalid request body: field 'sessionId' must be at most 256 characters without '/' or control characters",
          "INVALID_REQUEST_BODY")
  end
  if registry(app).by_id[id] then raise(409, "session already exists: " .. id, "CONFLICT") end
  local version = common.sdk_version(ctx.headers)
  local cwd = common.legacy_session_home(version) and app.home or app.workdir
  create_session(app, id, cwd)
  return 201
end

function M.list(ctx)
  local app = ctx.app
  local out = json.array()
  local ids = {}
  for id in pairs(registry(app).by_id) do
    if id ~= ENTRYPOINT then ids[#ids + 1] = id end
  end
  table.sort(ids)
  for _, id in ipairs(ids) do out[#out + 1] = registry(app).by_id[id]:to_json() end
  return 200, out
end

function M.get(ctx)
  local app = ctx.app
  return 200, get_session(app, ctx.params.sessionId):to_json()
end

function M.get_entrypoint(ctx)
  local app = ctx.app
  local s = registry(app).by_id[ENTRYPOINT]
  if not s then return 200, { sessionId = ENTRYPOINT, commands = json.array() } end
  return 200, s:to_json()
end

function M.delete(ctx)
  local app = ctx.app
  local id = ctx.params.sessionId
  if id == ENTRYPOINT then raise(400, "the entrypoint session cannot be deleted", "BAD_REQUEST") end
  local s = get_session(app, id)
  registry(app).by_id[id] = nil
  s:delete()
  return 204
end

-- The exec reply for a finished command, shaped by the SDK version (doc/protocol.md §5.3).
local function exec_result(cmd, mode)
  local log = cmd:read_log()
  local body = { cmdId = cmd.id, exitCode = cmd.exit_code }
  if mode == "combined" then
    body.output = common.strip_markers(log)
    body.stdout, body.stderr = json.null, json.null
  elseif mode == "raw" then
    body.output = log
  else
    body.output = log
    body.stdout, body.stderr = common.demux(log)
  end
  return body
end

function M.exec(ctx)
  local app = ctx.app
  local sid = ctx.params.sessionId
  if sid == ENTRYPOINT then raise(400, "commands cannot be run in the entrypoint session", "BAD_REQUEST") end
  local body = ctx:json_object(true)
  local command = common.str(body, "command", true)
  if not command:find("%S") then
    raise(400, "invalid request body: field 'command' must not be blank", "INVALID_REQUEST_BODY")
  end
  local async = common.bool(body, "runAsync")
  local legacy_async = common.bool(body, "async")
  local suppress = common.bool(body, "suppressInputEcho") or false
  async = async or legacy_async or false
  local s = get_session(app, sid)
  local cmd = s:exec(command, async, suppress)
  if async then return 202, { cmdId = cmd.id } end
  while not cmd.done do cmd.event:wait() end
  if cmd.cancelled then
    raise(500, "failed to execute command: bad request: session cancelled", "INTERNAL_SERVER_ERROR")
  end
  local mode = common.output_mode(common.sdk_version(ctx.headers), ctx.headers["x-daytona-split-output"])
  return 200, exec_result(cmd, mode)
end

function M.get_command(ctx)
  local app = ctx.app
  local _, cmd = get_command(app, ctx.params.sessionId, ctx.params.commandId)
  return 200, cmd:to_json()
end

function M.input(ctx)
  local app = ctx.app
  local s, cmd = get_command(app, ctx.params.sessionId, ctx.params.commandId)
  local body = ctx:json_object(true)
  local data = body.data
  if data == nil or data == json.null then
    raise(400, "invalid request body: field 'data' is required", "INVALID_REQUEST_BODY")
  end
  if type(data) ~= "string" then
    raise(400, "invalid request body: field 'data' must be a string", "INVALID_REQUEST_BODY")
  end
  if cmd.done then raise(410, "command has already exited: " .. cmd.id, "GONE") end
  if not cmd.async then
    raise(400, "command was not started with runAsync; its stdin is closed", "BAD_REQUEST")
  end
  s:input(cmd, data)
  return 204
end

-- Strip markers from a stream of log chunks, carrying a partial marker
-- (one or two trailing 01/02 bytes) over to the next chunk.
local function marker_stripper()
  local carry = ""
  return function(chunk, final)
    local s = carry .. chunk
    carry = ""
    if not final then
      local tail = s:match("[\1\2][\1\2]?$")
      if tail then carry = tail; s = s:sub(1, #s - #tail) end
    end
    return common.strip_markers(s)
  end
end

-- Send a command's log over a WebSocket: full replay, then (follow) the
-- live tail until the command has finished; close 1000.
local function stream_log(ctx, cmd, follow, mode, owner)
  local ws = ctx:upgrade(ctx.subprotocol_choice)
  local strip = mode == "combined" and marker_stripper() or nil
  local gone = false
  -- a reader notices the client leaving and answers its pings
  local reader = scheduler.spawn(function()
    -- a broken connection raises: either way the client is gone
    pcall(function() while ws:receive() do end end)
    gone = true
    cmd.event:notify()
  end)
  reader.observed = true
  local ok, err = pcall(function()
    local f = io.open(cmd.log_path, "rb")
    local offset = 0
    while not gone do
      local data = f and f:read(64 * 1024)
      if data then
        offset = offset + #data
        if strip then data = strip(data, false) end
        for i = 1, #data, FRAME do ws:send(data:sub(i, i + FRAME - 1), "binary") end
      else
        -- at the end of what is written so far
        if not follow or cmd.done and offset >= cmd.size or (owner and owner.deleted) then break end
        cmd.event:wait(20)   -- bounded, so a silent stream still notices a close
      end
      if not f then f = io.open(cmd.log_path, "rb") end
    end
    if f then f:close() end
    if strip and not gone then
      local rest = strip("", true)
      if rest ~= "" then ws:send(rest, "binary") end
    end
  end)
  if ok then
    if not gone then ws:close(1000, "") end
  else
    ws:close(1011, "error reading the log")
  end
  reader:cancel()
  if not ok and not http.is_http_error(err) then error(err, 0) end
end

-- GET .../logs: text/JSON now, or a WebSocket stream (follow).
local function logs(app, ctx, s, cmd, entrypoint)
  local version = common.sdk_version(ctx.headers, ctx.subprotocols)
  local mode = common.output_mode(version, ctx.headers["x-daytona-split-output"])
  if entrypoint and mode == "combined" then mode = "raw" end
  if ctx.is_websocket then
    return stream_log(ctx, cmd, ctx.query.follow == "true", mode, s)
  end
  local log = cmd and cmd:read_log() or ""
  if mode == "split" then
    local out, err = common.demux(log)
    return 200, { output = log, stdout = out, stderr = err }
  elseif mode == "combined" then
    return 200, common.strip_markers(log), TEXT
  end
  return 200, log, TEXT
end

function M.logs(ctx)
  local app = ctx.app
  local s, cmd = get_command(app, ctx.params.sessionId, ctx.params.commandId)
  return logs(app, ctx, s, cmd, false)
end

function M.entrypoint_logs(ctx)
  local app = ctx.app
  local s = registry(app).by_id[ENTRYPOINT]
  local cmd = s and s.commands[ENTRYPOINT_CMD]
  if not cmd then
    -- no entrypoint configured: an empty, finished log
    if ctx.is_websocket then
      local ws = ctx:upgrade(ctx.subprotocol_choice)
      ws:close(1000, "")
      return
    end
    local mode = common.output_mode(common.sdk_version(ctx.headers), ctx.headers["x-daytona-split-output"])
    if mode == "split" then return 200, { output = "", stdout = "", stderr = "" } end
    return 200, "", TEXT
  end
  return logs(app, ctx, s, cmd, true)
end

M.ENTRYPOINT = ENTRYPOINT
return M
