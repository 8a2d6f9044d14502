--- dtlocal.toolbox.pty: interactive terminals (doc/protocol.md §4.5, §5.4).
--
-- A PTY session runs `<shell> -i -l` on a real pseudo-terminal (core.process
-- in PTY mode). One pump task reads the terminal and fans its output out to
-- every attached WebSocket as binary frames (at most 32 KiB each); every
-- frame a client sends, text or binary, goes verbatim to the terminal.
-- Resize is a REST call. When the shell ends, each client gets (if it
-- offered the `X-Daytona-Pty-Exit-Control` subprotocol) a text frame
-- {"type":"control","status":"exited","exitCode":N[,"exitReason":…]} and
-- then a close whose reason is JSON: 1000 {"exitCode":0}, or 1011
-- {"exitCode":N,"exitReason":"…"}; the session is then removed.
--
-- Lazy sessions (what the SDKs create) start their shell when the first
-- client attaches. 0.218's `create-connect` creates and attaches in one
-- WebSocket, with environment variables in a subprotocol token
-- `X-Daytona-Pty-Envs~<base64url JSON>`.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local proc = require "dtlocal.toolbox.proc"

local util = core.util
local json = http.json
local raise = http.raise
local wait = scheduler.wait
local setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, math, pcall, error, next =
  setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, math, pcall, error, next

local M = {}

local EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
local MAX_OUT_FRAME = 32 * 1024
local CLIENT_QUEUE = 256         -- output chunks queued per client before 1008
local MAX_IN_MESSAGE = 64 * 1024

-- Raise a PTY-route error: structured body plus the ad-hoc {"error"} the
-- v0.190 daemon used (doc/protocol.md §6.2 case 3), so both kinds of client read it.
local function pty_raise(status, message, code)
  raise(status, message, code, { error = message })
end

local function exit_reason(code, signal)
  if code == 0 then return nil end
  if code == 130 then return "Ctrl+C" end
  if code == 137 then return "SIGKILL" end
  if code == 143 then return "SIGTERM" end
  if code > 128 and code < 128 + 65 then return "signal " .. (code - 128) end
  return "non-zero exit"
end
M.exit_reason = exit_reason

local Pty = {}
Pty.__index = Pty

function Pty:info()
  local envs = {}
  for k, v in pairs(self.envs) do envs[k] = v end
  return {
    id = self.id, cwd = self.cwd, envs = envs, cols = self.cols, rows = self.rows,
    createdAt = self.created_at, active = self.proc ~= nil and not self.exited,
    lazyStart = self.lazy,
  }
end

function Pty:start()
  if self.proc or self.exited then return end
  local env = common.child_env(self.app, self.envs)
  -- the terminal is an xterm-256color unless the request says otherwise
  if not self.envs.TERM then env.TERM = "xterm-256color" end
  local p, msg = proc.spawn { argv = { self.app.shell, "-i", "-l" }, cwd = self.cwd, env = env,
                              pty = { cols = self.cols, rows = self.rows }, tag = self.tag }
  if not p then error("failed to start the PTY shell: " .. tostring(msg), 0) end
  self.proc = p
  self.pump = scheduler.spawn(self.pump_loop, self)
  self.pump.observed = true
end

-- Queue a message for every attached client; one that cannot keep up is
-- closed with 1008 "slow consumer".
function Pty:broadcast(data)
  for client in pairs(self.clients) do
    if #client.queue >= CLIENT_QUEUE then
      self.clients[client] = nil
      client.kick = { 1008, "slow consumer" }
      client.event:notify()
    else
      client.queue[#client.queue + 1] = data
      client.event:notify()
    end
  end
end

function Pty.pump_loop(self)
  local p = self.proc
  while true do
    local data = p:read("stdout")
    if data and data ~= "" then
      for i = 1, #data, MAX_OUT_FRAME do self:broadcast(data:sub(i, i + MAX_OUT_FRAME - 1)) end
    elseif data == nil then
      -- the terminal is closed (every process on it has gone): wait for the exit
      while not p:status() do wait(p) end
      break
    else
      wait(p)
    end
  end
  local code, signal = p:status()
  self:ended(code, signal)
end

-- The shell has exited: tell every client and forget the session.
function Pty:ended(code, signal)
  if self.exited then return end
  self.exited = true
  self.exit_code = code
  self.exit_signal = signal
  if self.proc then self.proc:close() end
  if self.app.ptys[self.id] == self then self.app.ptys[self.id] = nil end
  for client in pairs(self.clients) do client.event:notify() end
end

-- Killing a terminal kills everything started in it, not only the shell's
-- process group: job control gives every background job a group of its
-- own, and `disown`, `setsid` or a double fork take a process further
-- away. The terminal's tag finds them all (proc.lua). SIGKILL at once, as
-- the shell gets it: the protocol's kill is SIGKILL (exit 137), and what
-- left the group on purpose cannot be trusted to honour a SIGTERM.
function Pty:kill(quick)
  -- before the shell is reaped, while its pid still names its session
  if self.proc and not self.exited then self.tag:kill(self.proc) end
  if quick then
    if self.proc then self.proc:close() end
    return self:ended(137, "SIGKILL")
  end
  if self.proc and not self.exited then
    self.proc:kill("KILL", true)
    -- the pump reports the exit; wait for it so the DELETE answers after
    local t <close> = core.timer(2000)
    while not self.exited and not t:done() do wait(self.proc, t) end
    if not self.exited then self:ended(137, "SIGKILL") end
  else
    self:ended(137, "SIGKILL")
  end
end

local function registry(app)
  if not app.ptys then app.ptys = {} end
  return app.ptys
end

local function check_size(v, name)
  if v == nil then return nil end
  if math.type(v) ~= "integer" then
    -- a whole float may still have no integer (1e300, -inf): that is a
    -- bad size too, not a nil to compare
    v = type(v) == "number" and math.tointeger(v) or nil
    if not v then pty_raise(400, ("%s must be an integer between 1 and 1000"):format(name), "BAD_REQUEST") end
  end
  if v < 1 or v > 1000 then
    pty_raise(400, ("%s must be between 1 and 1000 (got %d)"):format(name, v), "BAD_REQUEST")
  end
  return v
end

local function new_pty(app, id, cwd, envs, cols, rows, lazy)
  if type(id) ~= "string" or id == "" then pty_raise(400, "id is required", "BAD_REQUEST") end
  if #id > 256 or id:find("[%c/]") then
    pty_raise(400, "id must be at most 256 characters without '/' or control characters", "BAD_REQUEST")
  end
  local reg = registry(app)
  if reg[id] then pty_raise(409, "PTY session already exists: " .. id, "CONFLICT") end
  local dir = app.workdir
  if cwd and cwd ~= "" then
    dir = common.resolve(app, cwd, "cwd")
    local st = util.stat(dir, true)
    if not st or st.type ~= "directory" then
      pty_raise(400, "cwd: no such directory: " .. dir, "BAD_REQUEST")
    end
  end
  local s = setmetatable({
    app = app, id = id, cwd = dir, envs = envs or {}, cols = cols or 80, rows = rows or 24,
    lazy = lazy and true or false, clients = {}, tag = proc.tag(),
    created_at = common.rfc3339(os.time(), 0),
  }, Pty)
  reg[id] = s
  return s
end

-- The shell of a new session did not start: forget the session and say
-- why. A working directory the user cannot enter (a chmod the client made)
-- is the request's problem, 403; anything else is ours.
local function start_failed(app, id, err)
  registry(app)[id] = nil
  err = tostring(err)
  if err:lower():find("permission denied", 1, true) then
    pty_raise(403, err .. " (is the working directory accessible?)", "FORBIDDEN")
  end
  pty_raise(500, err, "INTERNAL_SERVER_ERROR")
end

---------------------------------------------------------------------------
-- REST
---------------------------------------------------------------------------

function M.create(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local id = common.str(body, "id", true)
  local cwd = common.str(body, "cwd")
  local envs = common.env_map(body, "envs")
  local cols = check_size(body.cols ~= json.null and body.cols or nil, "cols")
  local rows = check_size(body.rows ~= json.null and body.rows or nil, "rows")
  local lazy = common.bool(body, "lazyStart")
  local s = new_pty(app, id, cwd, envs, cols, rows, lazy)
  if not s.lazy then
    local ok, err = pcall(s.start, s)
    if not ok then start_failed(app, id, err) end
  end
  return 201, { sessionId = id }
end

function M.list(ctx)
  local app = ctx.app
  local ids = {}
  for id in pairs(registry(app)) do ids[#ids + 1] = id end
  table.sort(ids)
  local out = json.array()
  for _, id in ipairs(ids) do out[#out + 1] = registry(app)[id]:info() end
  return 200, { sessions = out }
end

local function get(app, id, status)
  local s = registry(app)[id]
  if not s or s.exited then pty_raise(status or 404, "PTY session not found", status == 410 and "GONE" or "NOT_FOUND") end
  return s
end

function M.get(ctx)
  local app = ctx.app
  return 200, get(app, ctx.params.sessionId):info()
end

function M.delete(ctx)
  local app = ctx.app
  local s = get(app, ctx.params.sessionId)
  s:kill()
  return 200, { message = "PTY session deleted" }
end

function M.resize(ctx)
  local app = ctx.app
  local s = get(app, ctx.params.sessionId, 410)
  local body = ctx:json_object(true)
  if body.cols == nil or body.rows == nil then
    pty_raise(400, "cols and rows are required", "BAD_REQUEST")
  end
  local cols = check_size(body.cols, "cols")
  local rows = check_size(body.rows, "rows")
  if s.lazy and not s.proc then
    -- nothing runs yet: remember the size for the start
    s.cols, s.rows = cols, rows
    return 200, s:info()
  end
  local ok, msg = s.proc:resize(cols, rows)
  if not ok then pty_raise(410, "PTY session unavailable: " .. tostring(msg), "GONE") end
  s.cols, s.rows = cols, rows
  return 200, s:info()
end

function M.shutdown(app)
  for _, s in pairs(registry(app)) do pcall(s.kill, s, true) end
end

---------------------------------------------------------------------------
-- WebSocket
---------------------------------------------------------------------------

-- Pick the subprotocol to echo: exit-control if offered, else the SDK
-- version token, else the first offered (Node's ws fails the handshake
-- when it offered some and none is selected).
local function choose_protocol(offered)
  local first, version
  for _, p in ipairs(offered or {}) do
    if p == EXIT_CONTROL then return p end
    if not version and p:match("^X%-Daytona%-SDK%-Version~") then version = p end
    first = first or p
  end
  return version or first
end
M.choose_protocol = choose_protocol

local function has(offered, token)
  for _, p in ipairs(offered or {}) do if p == token then return true end end
  return false
end

-- Serve one attached client until the shell exits or the client leaves.
local function serve_client(s, ws, exit_control)
  local client = { queue = {}, event = proc.event() }
  s.clients[client] = true
  local left = false
  local reader = scheduler.spawn(function()
    -- a broken connection raises: either way the client has left
    pcall(function()
      while true do
        local data = ws:receive()
        if not data then break end
        if #data > MAX_IN_MESSAGE then
          client.kick = { 1009, "message too big" }
          break
        end
        if s.proc and not s.exited then
          local ok = s.proc:write(data)
          if ok == nil then client.kick = { 1011, "PTY session unavailable" }; break end
        end
      end
    end)
    left = true
    client.event:notify()
  end)
  reader.observed = true
  local ok, err = pcall(function()
    ws:send('{"type":"control","status":"connected"}', "text")
    while true do
      while #client.queue > 0 do
        local data = table.remove(client.queue, 1)
        ws:send(data, "binary")
      end
      if client.kick or left then break end
      if s.exited then break end
      client.event:wait()
    end
  end)
  s.clients[client] = nil
  reader:cancel()
  if not ok then
    if not http.is_http_error(err) then ws:abort() end
    return
  end
  if client.kick then
    ws:close(client.kick[1], client.kick[2])
  elseif s.exited then
    local code = s.exit_code or 1
    local reason = exit_reason(code, s.exit_signal)
    if exit_control then
      local msg = { type = "control", status = "exited", exitCode = code, exitReason = reason }
      pcall(ws.send, ws, json.encode(msg), "text")
    end
    ws:close(code == 0 and 1000 or 1011, json.encode { exitCode = code, exitReason = reason })
  else
    ws:close(1000, "")
  end
end

-- GET /process/pty/{sessionId}/connect
function M.connect(ctx)
  local app = ctx.app
  local protocol = choose_protocol(ctx.subprotocols)
  local ws = ctx:upgrade(protocol)
  local s = registry(app)[ctx.params.sessionId]
  local reason
  if not s or s.exited then
    reason = "PTY session not found"
  elseif not s.proc then
    local ok, err = pcall(s.start, s)
    if not ok then reason = tostring(err) end
  end
  if reason then
    -- doc/protocol.md §5.4: an error control frame, then the connection is dropped
    pcall(ws.send, ws, json.encode { type = "control", status = "error",
                                     error = "Failed to connect to PTY session: " .. reason }, "text")
    ws:close(1011, reason)
    return
  end
  return serve_client(s, ws, has(ctx.subprotocols, EXIT_CONTROL))
end

local function b64url_decode(s)
  s = s:gsub("-", "+"):gsub("_", "/")
  local map = {}
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do map[alphabet:byte(i)] = i - 1 end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    local v = map[s:byte(i)]
    if v == nil then
      if s:sub(i, i) ~= "=" then return nil end
    else
      bits = (bits << 6) | v
      nbits = nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((bits >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end
M.b64url_decode = b64url_decode

-- GET /process/pty/create-connect?id=&cols=&rows=[&cwd=]  (0.218)
function M.create_connect(ctx)
  local app = ctx.app
  local q = ctx.query
  local id = common.query_required(q, "id")
  local function num(name)
    local v = q[name]
    if v == nil or v == "" then return nil end
    -- digits past an integer's range have no integer: refused, not taken as absent
    local n = v:match("^%d+$") and math.tointeger(tonumber(v))
    if not n then pty_raise(400, name .. " must be an integer between 1 and 1000", "BAD_REQUEST") end
    return check_size(n, name)
  end
  local cols, rows = num("cols"), num("rows")
  local envs
  for _, p in ipairs(ctx.subprotocols or {}) do
    local enc = p:match("^X%-Daytona%-Pty%-Envs~(.*)$")
    if enc then
      local raw = b64url_decode(enc)
      local decoded = raw and json.decode(raw)
      if type(decoded) ~= "table" then
        pty_raise(400, "X-Daytona-Pty-Envs: not base64url-encoded JSON", "BAD_REQUEST")
      end
      envs = common.env_map({ envs = decoded }, "envs")
    end
  end
  if not ctx.is_websocket then
    pty_raise(400, "create-connect requires a WebSocket upgrade", "BAD_REQUEST")
  end
  local s = new_pty(app, id, q.cwd, envs, cols, rows, true)
  local ok, err = pcall(s.start, s)
  if not ok then start_failed(app, id, err) end
  local ws = ctx:upgrade(choose_protocol(ctx.subprotocols))
  return serve_client(s, ws, has(ctx.subprotocols, EXIT_CONTROL))
end

return M
