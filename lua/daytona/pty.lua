--- Interactive terminals (PTYs) in a sandbox: the handle returned by
-- `sandbox.process:create_pty_session` and `:connect_pty_session`.
--
--     local pty <close> = sb.process:create_pty_session("t1", { pty_size = { rows = 24, cols = 80 } })
--     pty:send_input("echo hi; exit 3\n")
--     for chunk in pty do io.write(chunk) end      -- output until the shell ends
--     print(pty.exit_code)                          --> 3
--
--     -- or with a callback, delivered by a reader task while you do other things
--     local pty = sb.process:create_pty_session("t2", { on_data = io.write })
--     pty:send_input("ls\nexit\n")
--     local r = pty:wait{ timeout = 30 }            --> { exit_code = 0 }
--
-- Output arrives as raw bytes (a UTF-8 character may be split between
-- chunks). Closing the handle (`disconnect`, `<close>`, collection) only
-- detaches: the terminal keeps running until `kill` or its shell exits.
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"

local type, tostring, setmetatable, error, pcall, table = type, tostring, setmetatable, error, pcall, table

local M = {}

local PtyHandle = {}
PtyHandle.__index = PtyHandle
PtyHandle.__name = "daytona.pty.PtyHandle"
M.PtyHandle = PtyHandle

local CONNECT_TIMEOUT = 10
local MAX_INPUT = 60 * 1024          -- the daemon closes on messages over 64 KiB

--- Validate a `{ rows, cols }` table.
-- @param v the table
-- @param f function name
-- @param required raise when nil
-- @return `{ rows = , cols = }` or nil
-- @local
function M.size_arg(v, f, required)
  if v == nil and not required then return nil end
  check.options(check.table(v, f, "pty_size"), f, check.set("rows", "cols"), "pty_size")
  return {
    rows = check.integer(v.rows, f, "pty_size.rows", 1, 1000),
    cols = check.integer(v.cols, f, "pty_size.cols", 1, 1000),
  }
end

-- exit code and error from a close frame (doc/protocol.md §5.4)
local function parse_close(code, reason)
  local exit_code, err
  if type(reason) == "string" and reason:match("^%s*{") then
    local ok, v = pcall(wire.decode, reason)
    if ok and type(v) == "table" then
      if type(v.exitCode) == "number" then exit_code = math.tointeger(v.exitCode) or v.exitCode end
      if type(v.exitReason) == "string" then err = v.exitReason end
      if type(v.error) == "string" then err = v.error end
      return exit_code, err
    end
  end
  if code == 1000 or code == nil then return 0, nil end
  return nil, (reason ~= nil and reason ~= "" and reason or "connection closed") .. " (close code " .. tostring(code) .. ")"
end
M.parse_close = parse_close

local function new_handle(sb, session_id, ws, on_data)
  return setmetatable({
    session_id = session_id,
    exit_code = nil,
    error = nil,
    _sb = sb,
    _ws = ws,
    _on_data = on_data,
    _pending = {},           -- output received before it was asked for
    _connected = false,
    _closed = false,          -- the connection is over (exit, error or disconnect)
  }, PtyHandle)
end

-- Read one message; returns output bytes, or nil once the connection ended.
function PtyHandle:_recv(timeout)
  if self._closed then return nil end
  local ok, kind, a, b = pcall(transport.ws_recv, self._ws, timeout)
  if not ok then
    if errors.is(kind, errors.DaytonaTimeoutError) or errors.is(kind, errors.CancelledError) then error(kind, 0) end
    self._closed = true
    self.error = self.error or tostring(kind)
    return nil
  end
  if kind == "close" then
    self._closed = true
    if self.exit_code == nil then
      local code, err = parse_close(a, b)
      self.exit_code = code
      if err and not self.error then self.error = err end
    end
    return nil
  end
  if b then
    -- a text frame: a control message, or terminal output
    local okj, v = pcall(wire.decode, a)
    if okj and type(v) == "table" and v.type == "control" then
      if v.status == "connected" then
        self._connected = true
      elseif v.status == "error" then
        self.error = type(v.error) == "string" and v.error or "PTY error"
      elseif v.status == "exited" then
        self.exit_code = math.tointeger(v.exitCode) or v.exitCode
        if type(v.exitReason) == "string" then self.error = v.exitReason end
      end
      return ""
    end
  end
  return a
end

--- Wait until the terminal has confirmed the connection.
-- @param opts optional `{ timeout = 10 }`
-- @return self
-- @raise DaytonaTimeoutError; DaytonaError if the terminal refused
function PtyHandle:wait_for_connection(opts)
  opts = check.options(opts, "wait_for_connection", check.set("timeout"))
  local timeout = check.timeout(opts.timeout, "wait_for_connection", CONNECT_TIMEOUT)
  local deadline = transport.deadline(timeout)
  while not self._connected do
    if self._closed or self.error then
      error(errors.DaytonaError("PTY connection failed: " .. tostring(self.error or "closed"),
        { code = "PTY_CONNECT" }), 0)
    end
    local left = deadline and deadline - transport.now()
    if left and left <= 0 then
      error(errors.DaytonaTimeoutError("PTY connection timeout", { code = "ETIMEDOUT" }), 0)
    end
    local ok, data = pcall(self._recv, self, left)
    if not ok then
      if errors.is(data, errors.DaytonaTimeoutError) then
        error(errors.DaytonaTimeoutError("PTY connection timeout", { code = "ETIMEDOUT" }), 0)
      end
      error(data, 0)
    end
    -- output can precede the confirmation: keep it
    if data and data ~= "" then self._pending[#self._pending + 1] = data end
  end
  return self
end

--- True while the connection is open and confirmed.
-- @return boolean
function PtyHandle:is_connected()
  return self._connected and not self._closed
end

--- The next output chunk (pull mode, without `on_data`), or nil when the
-- terminal has ended (then `exit_code` / `error` are set). The handle is
-- also an iterator: `for chunk in pty do ... end`.
-- @param opts optional `{ timeout = s }` (nil: wait for ever)
-- @return bytes or nil
-- @raise DaytonaTimeoutError if nothing arrives in time
function PtyHandle:read(opts)
  if self._reader then
    error(errors.DaytonaError("this PTY handle delivers output to on_data; use wait()", { code = "EINVAL" }), 0)
  end
  if type(opts) ~= "table" then opts = nil end   -- a generic for passes (handle, nil)
  local timeout = opts and check.timeout(opts.timeout, "read", nil) or nil
  if #self._pending > 0 then return table.remove(self._pending, 1) end
  while true do
    local data = self:_recv(timeout)
    if data == nil then return nil end
    if data ~= "" then return data end
  end
end
PtyHandle.__call = PtyHandle.read

--- Send input to the terminal (keystrokes; "\3" is Ctrl-C).
-- @param data string
-- @return nothing
-- @raise DaytonaError if the terminal is no longer connected
function PtyHandle:send_input(data)
  data = check.string(data, "send_input", "data", true)
  if self._closed then
    error(errors.DaytonaError("PTY " .. self.session_id .. " is not connected", { code = "ECLOSED" }), 0)
  end
  for i = 1, #data, MAX_INPUT do
    transport.ws_send(self._ws, data:sub(i, i + MAX_INPUT - 1), false)
  end
end

--- Resize the terminal.
-- @param pty_size `{ rows = , cols = }`
-- @return the session info
function PtyHandle:resize(pty_size)
  return self._sb.process:resize_pty_session(self.session_id, M.size_arg(pty_size, "resize", true))
end

--- Kill the terminal's shell (exit code 137).
-- @return nothing
function PtyHandle:kill()
  self._sb.process:kill_pty_session(self.session_id)
end

--- Detach from the terminal (it keeps running). Idempotent.
-- @return nothing
function PtyHandle:disconnect()
  if self._reader and not self._reader:done() then self._reader:cancel() end
  if self._ws then
    local ws = self._ws
    self._closed = true
    pcall(ws.close, ws)
  end
end
PtyHandle.__close = PtyHandle.disconnect
PtyHandle.__gc = PtyHandle.disconnect

--- Wait until the terminal's shell exits, delivering output to `on_data`
-- (the one given here, else the handle's; output is dropped without one).
-- @param opts optional `{ timeout = s, on_data = function(bytes) }`
-- @return `{ exit_code = n or nil, error = message or nil }`
-- @raise DaytonaTimeoutError (the terminal keeps running)
function PtyHandle:wait(opts)
  opts = check.options(opts, "wait", check.set("timeout", "on_data"))
  local timeout = check.timeout(opts.timeout, "wait", 0)
  local on_data = check.optfunction(opts.on_data, "wait", "on_data")
  local deadline = transport.deadline(timeout)
  if self._reader then
    local reader = self._reader
    if deadline then
      local left = deadline - transport.now()
      if left <= 0 then error(errors.DaytonaTimeoutError("PTY wait timed out", { code = "ETIMEDOUT" }), 0) end
      scheduler.timeout(left, function() while not reader:done() do scheduler.wait(reader) end end)
    end
    reader:wait()
  else
    local sink = on_data or self._on_data
    while true do
      local left = deadline and deadline - transport.now()
      if left and left <= 0 then
        error(errors.DaytonaTimeoutError("PTY wait timed out", { code = "ETIMEDOUT" }), 0)
      end
      local data
      if #self._pending > 0 then data = table.remove(self._pending, 1) else data = self:_recv(left) end
      if data == nil then break end
      if data ~= "" and sink then sink(data) end
    end
  end
  return { exit_code = self.exit_code, error = self.error }
end

-- Deliver output to on_data from a reader task until the end.
local function start_reader(h)
  h._reader = scheduler.spawn(function()
    while #h._pending > 0 do h._on_data(table.remove(h._pending, 1)) end
    while true do
      local data = h:_recv(nil)
      if data == nil then break end
      if data ~= "" then h._on_data(data) end
    end
  end)
end

local function connect(sb, session_id, on_data, timeout, f)
  local ws = sb:toolbox_ws("/process/pty/" .. wire.urlencode(session_id) .. "/connect", nil,
    { timeout = timeout, what = f })
  local h = new_handle(sb, session_id, ws, on_data)
  local ok, err = pcall(h.wait_for_connection, h, { timeout = timeout })
  if not ok then
    h:disconnect()
    error(err, 0)
  end
  if on_data then start_reader(h) end
  return h
end

--- Create a terminal and connect to it (used by
-- `sandbox.process:create_pty_session`).
-- @param sb Sandbox
-- @param session_id string
-- @param opts optional `{ on_data = function(bytes), cwd = , envs = { },
--   pty_size = { rows = 24, cols = 80 }, timeout = 10 }`
-- @return PtyHandle
-- @raise DaytonaConflictError if the id is taken
function M.create(sb, session_id, opts)
  local f = "create_pty_session"
  session_id = check.string(session_id, f, "session_id")
  opts = check.options(opts, f, check.set("on_data", "cwd", "envs", "pty_size", "timeout"))
  local on_data = check.optfunction(opts.on_data, f, "on_data")
  local size = M.size_arg(opts.pty_size, f, false) or {}
  local timeout = check.timeout(opts.timeout, f, CONNECT_TIMEOUT)
  sb:toolbox({ method = "POST", path = "/process/pty", what = "create PTY session", json = {
    id = session_id,
    cwd = check.optstring(opts.cwd, f, "cwd"),
    envs = check.strmap(opts.envs, f, "envs"),
    cols = size.cols, rows = size.rows,
    lazyStart = true,
  } })
  return connect(sb, session_id, on_data, timeout, f)
end

--- Connect to an existing terminal (used by
-- `sandbox.process:connect_pty_session`).
-- @param sb Sandbox
-- @param session_id string
-- @param opts optional `{ on_data = function(bytes), timeout = 10 }`
-- @return PtyHandle
-- @raise DaytonaError when the terminal does not exist or has ended
function M.connect(sb, session_id, opts)
  local f = "connect_pty_session"
  session_id = check.string(session_id, f, "session_id")
  opts = check.options(opts, f, check.set("on_data", "timeout"))
  local on_data = check.optfunction(opts.on_data, f, "on_data")
  local timeout = check.timeout(opts.timeout, f, CONNECT_TIMEOUT)
  return connect(sb, session_id, on_data, timeout, f)
end


-- a call with '.' instead of ':' says so
check.methods(PtyHandle, "pty")

return M
