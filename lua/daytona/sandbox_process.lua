--- `sandbox.process`: commands, code, sessions, their logs, and PTYs.
--
--     local r = sb.process:exec("ls -la", { cwd = "/tmp", env = { A = "1" }, timeout = 10 })
--     print(r.exit_code, r.result)
--
--     sb.process:create_session("s1")
--     local c = sb.process:execute_session_command("s1", { command = "make", run_async = true })
--     sb.process:get_session_command_logs("s1", c.cmd_id, {
--       on_stdout = io.write, on_stderr = function(s) io.stderr:write(s) end })
--     for stream, data in sb.process:get_session_command_logs("s1", c.cmd_id, { follow = true }) do ... end
--
-- Session logs carry stdout and stderr in one byte stream where each line
-- starts with a 3-byte marker (doc/protocol.md §5.1); the SDK separates them and
-- never splits a UTF-8 character between two callbacks.
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local chart = require "daytona.chart"

local type, pairs, ipairs, tostring, setmetatable, error, pcall, select =
  type, pairs, ipairs, tostring, setmetatable, error, pcall, select
local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat

local M = {}

local Process = {}
Process.__index = Process
Process.__name = "daytona.sandbox_process.Process"
M.Process = Process

--- The process object of a sandbox (made by the Sandbox).
-- @param sb Sandbox
-- @return Process
function M.new(sb)
  return setmetatable({ _sb = sb }, Process)
end

local seg = wire.urlencode

local function call_toolbox(self, opts)
  return self._sb:toolbox(opts)
end

---------------------------------------------------------------------------
-- stdout/stderr demultiplexing (doc/protocol.md §5.1)
---------------------------------------------------------------------------

local OUT, ERR = "\1\1\1", "\2\2\2"

-- Split s into its complete UTF-8 prefix and an incomplete trailing
-- sequence (at most 3 bytes) to be completed by the next chunk.
local function utf8_split(s)
  local n = #s
  for back = 1, n < 3 and n or 3 do
    local b = byte(s, n - back + 1)
    if b < 0x80 then return s, "" end
    if b >= 0xC0 then
      local need = b >= 0xF0 and 4 or (b >= 0xE0 and 3 or 2)
      if back < need then return sub(s, 1, n - back), sub(s, n - back + 1) end
      return s, ""
    end
  end
  return s, ""
end
M.utf8_split = utf8_split

local Demux = {}
Demux.__index = Demux
M.Demux = Demux

--- A demultiplexer of the marker framing.
-- @local
-- @param emit function(stream, data) with stream "stdout" or "stderr"
-- @return Demux
function Demux.new(emit)
  return setmetatable({ buf = "", cur = nil, hold = { stdout = "", stderr = "" }, emit = emit }, Demux)
end

function Demux:_out(stream, data)
  if stream == nil or data == "" then return end
  local whole, tail = utf8_split(self.hold[stream] .. data)
  self.hold[stream] = tail
  if whole ~= "" then self.emit(stream, whole) end
end

--- Feed a chunk of framed bytes (markers may be split across chunks).
-- @local
-- @param chunk string
function Demux:feed(chunk)
  local buf = self.buf .. chunk
  local i = 1
  while true do
    local a = find(buf, OUT, i, true)
    local b = find(buf, ERR, i, true)
    local m, stream
    if a and (not b or a < b) then m, stream = a, "stdout" elseif b then m, stream = b, "stderr" end
    if not m then break end
    self:_out(self.cur, sub(buf, i, m - 1))
    self.cur = stream
    i = m + 3
  end
  -- keep back a tail that may be the start of a marker split by the chunking
  local n = #buf
  local hold = 0
  local last = n >= i and byte(buf, n)
  if last == 1 or last == 2 then
    hold = 1
    if n - 1 >= i and byte(buf, n - 1) == last then hold = 2 end
  end
  self:_out(self.cur, sub(buf, i, n - hold))
  self.buf = sub(buf, n - hold + 1)
end

--- Flush what is left at the end of the stream.
-- @local
function Demux:finish()
  if self.buf ~= "" then
    local rest = self.buf
    self.buf = ""
    if self.cur then self.hold[self.cur] = self.hold[self.cur] .. rest end
  end
  for _, s in ipairs({ "stdout", "stderr" }) do
    local h = self.hold[s]
    self.hold[s] = ""
    if h ~= "" then self.emit(s, h) end
  end
end

--- Split a whole framed log into (stdout, stderr).
-- @local
-- @param raw string
-- @return stdout, stderr
function M.demux(raw)
  local out, err = {}, {}
  local d = Demux.new(function(s, data)
    if s == "stdout" then out[#out + 1] = data else err[#err + 1] = data end
  end)
  d:feed(raw)
  d:finish()
  return concat(out), concat(err)
end

---------------------------------------------------------------------------
-- exec / code_run
---------------------------------------------------------------------------

local function env_arg(v, fname, arg)
  local env = check.strmap(v, fname, arg)
  if env then
    for k in pairs(env) do
      if not k:match("^[A-Za-z_][A-Za-z0-9_]*$") then
        check.argerror(fname, arg, ("invalid environment variable name %q"):format(k))
      end
    end
  end
  return env
end

-- the HTTP deadline of a call the daemon bounds itself: a few seconds more
local function http_timeout(t)
  if t and t > 0 then return t + 5 end
  return nil
end

local function execute_response(r)
  r = wire.to_lua(r or {})
  local result = r.result or ""
  local charts = r.artifacts and r.artifacts.charts or {}
  for i, c in ipairs(charts) do charts[i] = chart.new(c) end
  return wire.model({
    exit_code = r.exit_code or r.code or -1,
    result = result,
    artifacts = wire.model({ stdout = result, charts = charts }, "ExecutionArtifacts"),
  }, "ExecuteResponse")
end

--- Run a shell command and wait for it. stdout and stderr come back
-- merged in `result`.
-- @param command string (fed to a fresh shell; no length limit)
-- @param opts optional `{ cwd = dir, env = { NAME = value }, timeout = s }`
--   (timeout 0/nil = none; when it expires the command's process group is
--   killed and DaytonaTimeoutError raised)
-- @return `{ exit_code = n, result = "...", artifacts = { stdout, charts } }`
-- @raise DaytonaTimeoutError; DaytonaValidationError for an empty command
function Process:exec(command, opts)
  local f = "exec"
  command = check.string(command, f, "command")
  if not command:find("%S") then check.argerror(f, "command", "non-blank string expected") end
  opts = check.options(opts, f, check.set("cwd", "env", "timeout"))
  local timeout = check.timeout(opts.timeout, f, nil)
  local body = {
    command = command,
    cwd = check.optstring(opts.cwd, f, "cwd"),
    envs = env_arg(opts.env, f, "env"),
    timeout = timeout and timeout > 0 and math.ceil(timeout) or nil,
  }
  -- never retried after it was sent: the command could run twice
  local r = call_toolbox(self, { method = "POST", path = "/process/execute", json = body,
    timeout = http_timeout(timeout), what = "exec" })
  return execute_response(r)
end

--- Run a code snippet in the sandbox's language (its
-- `code-toolbox-language` label, "python" by default; `language`
-- overrides). Each figure a Python program shows with matplotlib's
-- `plt.show()` comes back in `artifacts.charts` as a chart (see
-- `daytona.chart`: type, title, elements, the PNG as base64, and
-- `chart:save_png(path)`), and not in `result`.
-- @param code string
-- @param opts optional `{ argv = { ... }, env = { ... }, timeout = s, language = }`
-- @return `{ exit_code, result, artifacts = { stdout, charts } }`
-- @raise DaytonaTimeoutError
function Process:code_run(code, opts)
  local f = "code_run"
  code = check.string(code, f, "code")
  opts = check.options(opts, f, check.set("argv", "env", "timeout", "language", "params"))
  local params = opts.params and check.options(opts.params, f, check.set("argv", "env"), "params") or {}
  local timeout = check.timeout(opts.timeout, f, nil)
  local labels = self._sb.labels or {}
  local language = check.optstring(opts.language, f, "language") or labels["code-toolbox-language"] or "python"
  local argv = opts.argv or params.argv
  local body = {
    code = code,
    language = language,
    argv = argv and #argv > 0 and check.strlist(argv, f, "argv") or nil,
    envs = env_arg(opts.env or params.env, f, "env"),
    timeout = timeout and timeout > 0 and math.ceil(timeout) or nil,
  }
  local r = call_toolbox(self, { method = "POST", path = "/process/code-run", json = body,
    timeout = http_timeout(timeout), what = "code_run" })
  return execute_response(r)
end

---------------------------------------------------------------------------
-- sessions
---------------------------------------------------------------------------

local function session_path(sid, rest)
  return "/process/session/" .. seg(sid) .. (rest or "")
end

local function command_model(c)
  c = wire.to_lua(c or {})
  return wire.model({ id = c.id, command = c.command, exit_code = c.exit_code }, "Command")
end

local function session_model(s)
  s = s or {}
  local cmds = {}
  for i, c in ipairs(s.commands or {}) do cmds[i] = command_model(c) end
  return wire.model({ session_id = s.sessionId, commands = cmds }, "Session")
end

--- Create a session: a long-lived shell whose state (cwd, variables)
-- persists between its commands, which run one after the other.
-- @param session_id string ("entrypoint" is reserved)
-- @return nothing
-- @raise DaytonaConflictError if it exists
function Process:create_session(session_id)
  session_id = check.string(session_id, "create_session", "session_id")
  call_toolbox(self, { method = "POST", path = "/process/session", json = { sessionId = session_id },
    what = "create session" })
end

--- A session and its commands.
-- @param session_id string
-- @return `{ session_id, commands = { { id, command, exit_code }, ... } }`
-- @raise DaytonaNotFoundError
function Process:get_session(session_id)
  session_id = check.string(session_id, "get_session", "session_id")
  return session_model(call_toolbox(self, { method = "GET", path = session_path(session_id), what = "get session" }))
end

--- All sessions (the entrypoint session excluded).
-- @return list of sessions as from get_session
function Process:list_sessions()
  local r = call_toolbox(self, { method = "GET", path = "/process/session", what = "list sessions" }) or {}
  local out = {}
  for i, s in ipairs(r) do out[i] = session_model(s) end
  return out
end

--- Delete a session, killing its processes.
-- @param session_id string
-- @return nothing
-- @raise DaytonaNotFoundError
function Process:delete_session(session_id)
  session_id = check.string(session_id, "delete_session", "session_id")
  call_toolbox(self, { method = "DELETE", path = session_path(session_id), what = "delete session" })
end

--- Run a command in a session. Synchronously (the default) it waits for the
-- command and returns its output and exit code; with `run_async = true` it
-- returns at once with `cmd_id` (follow it with get_session_command_logs,
-- feed it with send_session_command_input, poll get_session_command).
-- @param session_id string
-- @param req a command string, or `{ command = , run_async = false,
--   suppress_input_echo = false }`
-- @param opts optional `{ timeout = s }`: how long to wait for a
--   synchronous command (0/nil = forever; the command is not killed)
-- @return `{ cmd_id, output, stdout, stderr, exit_code }` (async: `cmd_id`,
--   `stdout` and `stderr` "" as in Python's SDK, `output` and `exit_code` nil)
-- @raise DaytonaTimeoutError; DaytonaError for an unknown session (the
--   daemon answers 500 there)
function Process:execute_session_command(session_id, req, opts)
  local f = "execute_session_command"
  session_id = check.string(session_id, f, "session_id")
  if type(req) == "string" then req = { command = req } end
  check.options(check.table(req, f, "req"), f,
    check.set("command", "run_async", "var_async", "suppress_input_echo"), "req")
  local command = check.string(req.command, f, "req.command")
  opts = check.options(opts, f, check.set("timeout"))
  local timeout = check.timeout(opts.timeout, f, nil)
  local run_async = check.optboolean(req.run_async, f, "req.run_async")
  if run_async == nil then run_async = check.optboolean(req.var_async, f, "req.var_async") end
  local body = {
    command = command,
    runAsync = run_async or nil,
    suppressInputEcho = check.optboolean(req.suppress_input_echo, f, "req.suppress_input_echo"),
  }
  local r = call_toolbox(self, { method = "POST", path = session_path(session_id, "/exec"), json = body,
    timeout = timeout and timeout > 0 and timeout or nil, what = "execute session command" }) or {}
  local output = r.output
  if output == wire.null then output = nil end
  local stdout, stderr = r.stdout, r.stderr
  if stdout == wire.null then stdout = nil end
  if stderr == wire.null then stderr = nil end
  if output and stdout == nil and stderr == nil then stdout, stderr = M.demux(output) end
  local exit_code = r.exitCode
  if exit_code == wire.null then exit_code = nil end
  return {
    cmd_id = r.cmdId,
    output = output,
    -- "" not nil even for an async command: Python reads `stdout or ""`
    stdout = stdout or "",
    stderr = stderr or "",
    exit_code = exit_code and math.tointeger(exit_code) or exit_code,
  }
end

--- A command of a session; `exit_code` is nil while it runs.
-- @param session_id string
-- @param command_id string
-- @return `{ id, command, exit_code }`
-- @raise DaytonaNotFoundError
function Process:get_session_command(session_id, command_id)
  local f = "get_session_command"
  session_id = check.string(session_id, f, "session_id")
  command_id = check.string(command_id, f, "command_id")
  return command_model(call_toolbox(self, { method = "GET",
    path = session_path(session_id, "/command/" .. seg(command_id)), what = "get session command" }))
end

--- Send a line of input to a running asynchronous command (a newline is
-- added if missing).
-- @param session_id string
-- @param command_id string
-- @param data string
-- @return nothing
-- @raise DaytonaError (410) if the command has ended
function Process:send_session_command_input(session_id, command_id, data)
  local f = "send_session_command_input"
  session_id = check.string(session_id, f, "session_id")
  command_id = check.string(command_id, f, "command_id")
  data = check.string(data, f, "data", true)
  call_toolbox(self, { method = "POST", path = session_path(session_id, "/command/" .. seg(command_id) .. "/input"),
    json = { data = data }, what = "send session command input" })
end

---------------------------------------------------------------------------
-- logs: whole (HTTP) or followed (WebSocket)
---------------------------------------------------------------------------

local function logs_snapshot(self, path, what)
  local body, resp = call_toolbox(self, { method = "GET", path = path, raw = true, what = what })
  body = body or ""
  local ctype = resp and resp.headers and resp.headers["content-type"] or ""
  if ctype:find("json", 1, true) or body:match("^%s*{") then
    local ok, v = pcall(wire.decode, body)
    if ok and type(v) == "table" then
      local output = v.output ~= wire.null and v.output or ""
      local stdout = v.stdout ~= wire.null and v.stdout or nil
      local stderr = v.stderr ~= wire.null and v.stderr or nil
      if stdout == nil and stderr == nil then stdout, stderr = M.demux(output) end
      return { output = output, stdout = stdout or "", stderr = stderr or "" }
    end
  end
  -- an older daemon: the raw framed log as text/plain
  local stdout, stderr = M.demux(body)
  return { output = body, stdout = stdout, stderr = stderr }
end

local LOG_OPTS = check.set("on_stdout", "on_stderr", "follow", "timeout")

local LogStream = {}
LogStream.__index = LogStream
LogStream.__name = "daytona.sandbox_process.LogStream"
M.LogStream = LogStream

local RECONNECTS = 3

-- (Re)open the WebSocket; after a drop the server replays the log from the
-- start, so the bytes already seen are skipped.
function LogStream:_open()
  self._skip = self._seen
  self._ws = self._sb:toolbox_ws(self._path, { follow = true }, { timeout = 30, what = self._what })
end

--- The next piece of output: `stream, data` with stream "stdout" or
-- "stderr", or nil when the command has ended and everything was read.
-- The stream is also callable, for a generic `for`.
-- @return stream, data | nil
-- @raise DaytonaTimeoutError past the stream's timeout;
--   DaytonaConnectionError when it broke and could not be resumed
function LogStream:next()
  local q = self._queue
  while self._head > #q do
    if self._done then return nil end
    if self._head > 1 then self._queue, self._head = {}, 1; q = self._queue end
    local left
    if self._deadline then
      left = self._deadline - transport.now()
      if left <= 0 then
        self:close()
        error(errors.DaytonaTimeoutError(self._what .. ": timed out", { code = "ETIMEDOUT" }), 0)
      end
    end
    local ok, kind, a, b = pcall(transport.ws_recv, self._ws, left)
    if not ok then
      if errors.is(kind, errors.CancelledError) or errors.is(kind, errors.DaytonaTimeoutError) then
        self:close()
        error(kind, 0)
      end
      kind, a, b = "close", nil, tostring(kind.message or kind)
    end
    if kind == "data" then
      local n = #a
      if self._skip > 0 then
        local drop = n < self._skip and n or self._skip
        self._skip = self._skip - drop
        a = sub(a, drop + 1)
      end
      if a ~= "" then
        self._seen = self._seen + #a
        self._demux:feed(a)
      end
    elseif a == 1000 or (a == nil and b == nil) then
      self._demux:finish()
      self._done = true
      pcall(self._ws.close, self._ws)
    else
      -- dropped (1006, 1011, a broken connection): resume from where we were
      pcall(self._ws.close, self._ws)
      self._reconnects = self._reconnects + 1
      if self._reconnects > RECONNECTS then
        self._done = true
        error(errors.DaytonaConnectionError(("%s: %s (close code %s)"):format(self._what,
          b ~= nil and b ~= "" and tostring(b) or "WebSocket closed unexpectedly", tostring(a)),
          { code = "ECONNRESET" }), 0)
      end
      require("daytona.runtime.scheduler").sleep(0.2 * 2 ^ (self._reconnects - 1))
      self:_open()
    end
  end
  local item = q[self._head]
  q[self._head] = nil
  self._head = self._head + 1
  return item[1], item[2]
end
LogStream.__call = LogStream.next

--- Stop following (closes the WebSocket). Idempotent.
-- @return nothing
function LogStream:close()
  self._done = true
  if self._ws then pcall(self._ws.close, self._ws) end
end
LogStream.__close = LogStream.close

-- the log follower over the WebSocket, as an iterator of (stream, data)
local function follow(self, path, what, timeout)
  local ls = setmetatable({
    _sb = self._sb, _path = path, _what = what, _queue = {}, _head = 1,
    _seen = 0, _skip = 0, _reconnects = 0, _done = false,
    _deadline = transport.deadline(timeout),
  }, LogStream)
  ls._demux = Demux.new(function(s, data)
    local q = ls._queue
    q[#q + 1] = { s, data }
  end)
  ls:_open()
  return ls
end

local function logs(self, path, what, f, opts)
  opts = check.options(opts, f, LOG_OPTS)
  local on_stdout = check.optfunction(opts.on_stdout, f, "on_stdout")
  local on_stderr = check.optfunction(opts.on_stderr, f, "on_stderr")
  local follow_flag = check.optboolean(opts.follow, f, "follow")
  local timeout = check.timeout(opts.timeout, f, 0)
  if not on_stdout and not on_stderr and not follow_flag then
    return logs_snapshot(self, path, what)
  end
  local stream = follow(self, path, what, timeout)
  if not on_stdout and not on_stderr then return stream end
  -- callbacks: run the stream to its end here
  local ok, err = pcall(function()
    for s, data in stream do
      if s == "stdout" then
        if on_stdout then on_stdout(data) end
      elseif on_stderr then
        on_stderr(data)
      end
    end
  end)
  stream:close()
  if not ok then error(err, 0) end
end

--- The logs of a session command.
--
-- With no options: what it has written so far, `{ output, stdout, stderr }`
-- (`output` is the raw log with the doc/protocol.md §5.1 markers). With `on_stdout` /
-- `on_stderr`: follows the live stream (from the beginning) over a
-- WebSocket, calling them with text chunks until the command ends, then
-- returns nothing. With `follow = true` and no callbacks: returns an
-- iterator of `stream, data` for a generic `for` (stream is "stdout" or
-- "stderr"); it also has `:close()`.
-- @param session_id string
-- @param command_id string
-- @param opts optional `{ on_stdout = f, on_stderr = g, follow = bool,
--   timeout = s }` (timeout bounds the followed stream, 0 = none)
-- @return table, nothing or an iterator (see above)
-- @raise DaytonaNotFoundError; DaytonaTimeoutError; DaytonaConnectionError
--   if the stream breaks and cannot be resumed
function Process:get_session_command_logs(session_id, command_id, opts)
  local f = "get_session_command_logs"
  session_id = check.string(session_id, f, "session_id")
  command_id = check.string(command_id, f, "command_id")
  return logs(self, session_path(session_id, "/command/" .. seg(command_id) .. "/logs"),
    "get session command logs", f, opts)
end

--- Python's name for following a command's logs with callbacks.
-- @param session_id string
-- @param command_id string
-- @param on_stdout function(text) or nil
-- @param on_stderr function(text) or nil
-- @return nothing
function Process:get_session_command_logs_async(session_id, command_id, on_stdout, on_stderr)
  local f = "get_session_command_logs_async"
  check.optfunction(on_stdout, f, "on_stdout")
  check.optfunction(on_stderr, f, "on_stderr")
  if not on_stdout and not on_stderr then check.argerror(f, "on_stdout", "at least one callback expected") end
  return self:get_session_command_logs(session_id, command_id, { on_stdout = on_stdout, on_stderr = on_stderr })
end

--- The entrypoint session (the sandbox image's entrypoint command).
-- @return `{ session_id = "entrypoint", commands = { ... } }`
function Process:get_entrypoint_session()
  return session_model(call_toolbox(self, { method = "GET", path = "/process/session/entrypoint",
    what = "get entrypoint session" }))
end

--- The entrypoint's logs; options as for get_session_command_logs.
-- @param opts optional `{ on_stdout, on_stderr, follow, timeout }`
-- @return table, nothing or an iterator
function Process:get_entrypoint_logs(opts)
  return logs(self, "/process/session/entrypoint/logs", "get entrypoint logs", "get_entrypoint_logs", opts)
end

--- Python's name for following the entrypoint's logs with callbacks.
-- @param on_stdout function or nil
-- @param on_stderr function or nil
-- @return nothing
function Process:get_entrypoint_logs_async(on_stdout, on_stderr)
  local f = "get_entrypoint_logs_async"
  check.optfunction(on_stdout, f, "on_stdout")
  check.optfunction(on_stderr, f, "on_stderr")
  if not on_stdout and not on_stderr then check.argerror(f, "on_stdout", "at least one callback expected") end
  return self:get_entrypoint_logs({ on_stdout = on_stdout, on_stderr = on_stderr })
end

---------------------------------------------------------------------------
-- PTY (see daytona.pty)
---------------------------------------------------------------------------

--- Create an interactive terminal and connect to it.
-- @param session_id string
-- @param opts optional `{ on_data = function(bytes), cwd = , envs = { },
--   pty_size = { rows = 24, cols = 80 }, timeout = 10 }`
-- @return PtyHandle (see daytona.pty)
function Process:create_pty_session(session_id, opts)
  return require("daytona.pty").create(self._sb, session_id, opts)
end

--- Connect to an existing terminal.
-- @param session_id string
-- @param opts optional `{ on_data = function(bytes), timeout = 10 }`
-- @return PtyHandle
function Process:connect_pty_session(session_id, opts)
  return require("daytona.pty").connect(self._sb, session_id, opts)
end

--- The sandbox's terminals.
-- @return list of `{ id, cwd, envs, cols, rows, created_at, active, lazy_start }`
function Process:list_pty_sessions()
  local r = call_toolbox(self, { method = "GET", path = "/process/pty", what = "list PTY sessions" }) or {}
  local out = {}
  for i, s in ipairs(r.sessions or {}) do out[i] = wire.to_lua(s) end
  return out
end

--- One terminal's info.
-- @param session_id string
-- @return `{ id, cwd, envs, cols, rows, created_at, active, lazy_start }`
-- @raise DaytonaNotFoundError
function Process:get_pty_session_info(session_id)
  session_id = check.string(session_id, "get_pty_session_info", "session_id")
  return wire.to_lua(call_toolbox(self, { method = "GET", path = "/process/pty/" .. seg(session_id),
    what = "get PTY session" }))
end

--- Resize a terminal.
-- @param session_id string
-- @param pty_size `{ rows = 1..1000, cols = 1..1000 }`
-- @return the session info
-- @raise DaytonaError (410) if the terminal has ended
function Process:resize_pty_session(session_id, pty_size)
  local f = "resize_pty_session"
  session_id = check.string(session_id, f, "session_id")
  local size = require("daytona.pty").size_arg(pty_size, f, true)
  return wire.to_lua(call_toolbox(self, { method = "POST", path = "/process/pty/" .. seg(session_id) .. "/resize",
    json = size, idempotent = true, what = "resize PTY session" }))
end

--- Kill a terminal (its shell gets SIGKILL).
-- @param session_id string
-- @return nothing
-- @raise DaytonaNotFoundError
function Process:kill_pty_session(session_id)
  session_id = check.string(session_id, "kill_pty_session", "session_id")
  call_toolbox(self, { method = "DELETE", path = "/process/pty/" .. seg(session_id), what = "kill PTY session" })
end


-- a call with '.' instead of ':' says so
check.methods(Process, "process")

return M
