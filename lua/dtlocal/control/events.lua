--- dtlocal.control.events: sandbox events over Socket.IO at `/api/socket.io/`
-- (doc/protocol.md §3.6, §8.8).
--
-- The 0.218 SDKs open Socket.IO (Engine.IO v4, Socket.IO v5) at
-- `{api}/socket.io/` with `transports: ['websocket']` and authenticate in
-- the Socket.IO CONNECT packet (`auth: { token }`); their waits for a
-- state end on `sandbox.state.updated` and keep a 1 s safety poll. This
-- module is that server, WebSocket only:
--
--   client                                server
--   GET /api/socket.io/?EIO=4&transport=websocket (upgrade)
--                                         0{"sid","upgrades":[],"pingInterval","pingTimeout","maxPayload"}
--   40{"token":"..."}                     40{"sid":"..."}   (or 44{"message"} and close)
--                                         42["sandbox.created",Sandbox]
--                                         42["sandbox.state.updated",{"sandbox","oldState","newState"}]
--                                         2 (every pingInterval)
--   3 (within pingTimeout, else closed)
--
-- Every authenticated connection gets every event (one organization
-- locally). The Sandbox is the JSON `GET /sandbox/{id}` returns. An
-- HTTP long-polling request gets Engine.IO's error body with 400; a frame
-- that is not valid Engine.IO/Socket.IO closes the connection with a
-- reason (logged); the server never fails because of a client.
--
-- Memory stays bounded per connection: a frame is encoded once per event,
-- a connection's queue holds at most `queue_messages` frames and
-- `queue_bytes` bytes beyond the core's send buffer, and a client that
-- falls that far behind is dropped (logged with the reason).
--
--   local events = require "dtlocal.control.events"
--   local hub = events.new{ check_token = fn, wire = fn, log = fn }
--   hub:serve(ctx)                        -- an /api/socket.io/ request (a task)
--   hub:sandbox_event(name, rec, old)     -- the manager's hook
--   hub:close()                           -- at shutdown
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local http = require "dtlocal.http"
local record = require "dtlocal.control.record"

local type, pairs, next, tostring, tonumber, setmetatable, getmetatable, pcall, error, math =
  type, pairs, next, tostring, tonumber, setmetatable, getmetatable, pcall, error, math
local format = string.format
local json = http.json

local M = {}

-- Socket.IO's own defaults (pingInterval 25 s, pingTimeout 20 s,
-- maxHttpBufferSize 1e6, connectTimeout 45 s).
M.PING_INTERVAL = 25
M.PING_TIMEOUT = 20
M.MAX_PAYLOAD = 1000000
M.CONNECT_TIMEOUT = 45
-- Connections that have not authenticated yet (no bearer token on the
-- upgrade, no Socket.IO CONNECT with a good token): at most this many, for
-- at most this long. The SDKs send their CONNECT as soon as the WebSocket
-- opens, so a real client is pending for a round trip; when the pending
-- ones are at the cap the oldest is dropped for the newcomer, so upgrades
-- that never authenticate can occupy neither the authenticated
-- connections' places nor, for longer than a real client needs, the
-- pending ones.
M.AUTH_TIMEOUT = 5
M.MAX_PENDING = 32
-- A connection's queue beyond the core's send buffer (1 MiB): this many
-- frames or bytes, whichever comes first, and the client is dropped.
M.QUEUE_MESSAGES = 1024
M.QUEUE_BYTES = 4 * 1024 * 1024
-- Event connections at once.
M.MAX_CONNECTIONS = 256

-- A gate that never fires on its own: about 35 years.
local FOREVER_MS = 1 << 40

local Hub = {}
Hub.__index = Hub
Hub.__name = "dtlocal.EventHub"

local function positive(v, name)
  if v ~= nil and (type(v) ~= "number" or v <= 0) then
    error(format("bad option '%s' (positive number expected)", name), 3)
  end
  return v
end

--- A hub. opts: check_token (function(token) -> boolean, constant-time;
-- required), wire (function(rec) -> the Sandbox as GET returns it;
-- required), log (function(fmt, ...)), and for specs ping_interval,
-- ping_timeout, connect_timeout, auth_timeout (seconds), queue_messages,
-- queue_bytes, max_connections, max_pending (defaults: the M.* values).
function M.new(opts)
  assert(type(opts.check_token) == "function", "check_token")
  assert(type(opts.wire) == "function", "wire")
  return setmetatable({
    check_token = opts.check_token,
    wire = opts.wire,
    log = opts.log or function() end,
    ping_interval = positive(opts.ping_interval, "ping_interval") or M.PING_INTERVAL,
    ping_timeout = positive(opts.ping_timeout, "ping_timeout") or M.PING_TIMEOUT,
    connect_timeout = positive(opts.connect_timeout, "connect_timeout") or M.CONNECT_TIMEOUT,
    queue_messages = positive(opts.queue_messages, "queue_messages") or M.QUEUE_MESSAGES,
    queue_bytes = positive(opts.queue_bytes, "queue_bytes") or M.QUEUE_BYTES,
    max_connections = positive(opts.max_connections, "max_connections") or M.MAX_CONNECTIONS,
    auth_timeout = positive(opts.auth_timeout, "auth_timeout") or M.AUTH_TIMEOUT,
    max_pending = positive(opts.max_pending, "max_pending") or M.MAX_PENDING,
    conns = {},          -- every open connection -> true
    count = 0,
    pending = {},        -- connections not authenticated yet, oldest first
    listening = 0,       -- connections past the Socket.IO CONNECT
    closed = false,
  }, Hub)
end

---------------------------------------------------------------------------
-- Connections: one task each (the request's), one queue each
---------------------------------------------------------------------------

-- Wake a connection's task (from any task): its gate is a timer whose
-- close signals the waiter (internals: dt_release).
local function wake(conn)
  local g = conn.gate
  if g then
    conn.gate = nil
    g:close()
  end
end

-- Send one text frame: straight to the core while its buffer has room and
-- nothing waits before it, else into the connection's queue. A connection
-- whose queue passes the bounds is marked for dropping (and never queued
-- to again): only a client that stopped reading gets there, since the
-- queue grows only while the core's 1 MiB buffer is full.
local function enqueue(hub, conn, frame)
  if conn.drop or conn.dead then return end
  if conn.qfirst > conn.qlast and not conn.full then
    local ok = conn.ws:send(frame, "text")
    if ok then return end
    if ok == nil then   -- closed: the connection's task sees it
      conn.dead = true
      wake(conn)
      return
    end
    conn.full = true
  end
  local n = conn.qlast - conn.qfirst + 1
  if n >= hub.queue_messages or conn.qbytes + #frame > hub.queue_bytes then
    conn.drop = format("its queue passed %d messages or %d bytes (a client that does not read)",
      hub.queue_messages, hub.queue_bytes)
    conn.q, conn.qfirst, conn.qlast, conn.qbytes = {}, 1, 0, 0
  else
    conn.qlast = conn.qlast + 1
    conn.q[conn.qlast] = frame
    conn.qbytes = conn.qbytes + #frame
  end
  wake(conn)
end

-- Hand queued frames to the core until its send buffer is full
-- (conn.full: the core signals ws when there is room again). Returns false
-- once the WebSocket is closed.
local function flush(conn)
  local ws, q = conn.ws, conn.q
  conn.full = false
  while conn.qfirst <= conn.qlast do
    local frame = q[conn.qfirst]
    local ok = ws:send(frame, "text")
    if ok == false then conn.full = true; return true end
    if ok == nil then return false end
    q[conn.qfirst] = nil
    conn.qfirst = conn.qfirst + 1
    conn.qbytes = conn.qbytes - #frame
  end
  return true
end

---------------------------------------------------------------------------
-- Packets
---------------------------------------------------------------------------

-- A protocol error: closes the connection with `reason` (logged).
local Violation = { __name = "dtlocal.events.Violation" }
local function violation(code, reason)
  error(setmetatable({ code = code, reason = reason }, Violation), 0)
end

local bearer = http.bearer

-- Split a Socket.IO packet (after the Engine.IO "4"): type, namespace, ack
-- id, payload (decoded JSON or nil). Binary packets (5, 6) are refused.
local function parse_sio(s)
  local ptype = tonumber(s:sub(1, 1))
  if not ptype or ptype > 6 then violation(1002, "malformed Socket.IO packet: unknown type") end
  if ptype == 5 or ptype == 6 then violation(1003, "binary Socket.IO packets are not supported") end
  local i = 2
  local nsp = "/"
  if s:sub(i, i) == "/" then
    local comma = s:find(",", i, true)
    if comma then
      nsp, i = s:sub(i, comma - 1), comma + 1
    else
      nsp, i = s:sub(i), #s + 1
    end
  end
  local id_digits = s:match("^%d+", i)
  local ack
  if id_digits then
    if #id_digits > 15 then violation(1002, "malformed Socket.IO packet: ack id too long") end
    ack = tonumber(id_digits)
    i = i + #id_digits
  end
  local payload
  if i <= #s then
    local v, err = json.decode(s:sub(i))
    if v == nil then violation(1002, "malformed Socket.IO packet: invalid JSON payload (" .. tostring(err) .. ")") end
    payload = v
  end
  return ptype, nsp, ack, payload
end

-- The Socket.IO CONNECT: authenticate with auth.token (or the upgrade
-- request's bearer token), answer 40{"sid"} or 44{"message"} + close.
local function on_connect(hub, conn, nsp, payload)
  if nsp ~= "/" then
    -- what a Socket.IO server answers for a namespace it does not have
    enqueue(hub, conn, "44" .. nsp .. "," .. json.encode({ message = "Invalid namespace" }))
    return
  end
  if conn.sio_sid then violation(1002, "a second Socket.IO CONNECT on the same connection") end
  if payload ~= nil and (type(payload) ~= "table" or payload[1] ~= nil) then
    violation(1002, "malformed Socket.IO CONNECT: the auth payload must be a JSON object")
  end
  local token = payload and payload.token
  if token ~= nil and type(token) ~= "string" then
    violation(1002, "malformed Socket.IO CONNECT: auth.token must be a string")
  end
  token = token or conn.bearer
  if not token or not hub.check_token(token) then
    local why = token and "unauthorized: authentication failed: the token is invalid"
      or "unauthorized: missing authentication: send auth: { token } in the Socket.IO handshake"
    enqueue(hub, conn, "44" .. json.encode({ message = why }))
    conn.close_after = { 1008, token and "unauthorized: invalid token" or "unauthorized: no token" }
    return
  end
  if not conn.bearer and hub.count - #hub.pending >= hub.max_connections then
    enqueue(hub, conn, "44" .. json.encode({ message = format("too many event connections (%d)", hub.max_connections) }))
    conn.close_after = { 1008, "too many event connections" }
    return
  end
  conn.sio_sid = record.token(20)
  hub:authenticated(conn)
  hub.listening = hub.listening + 1
  enqueue(hub, conn, "40" .. json.encode({ sid = conn.sio_sid }))
end

-- One Socket.IO packet from the client.
local function on_sio(hub, conn, s)
  local ptype, nsp, _, payload = parse_sio(s)
  if ptype == 0 then return on_connect(hub, conn, nsp, payload) end
  if ptype == 4 then violation(1002, "a client may not send CONNECT_ERROR") end
  if nsp ~= "/" then return end   -- a namespace we refused: nothing to do
  if not conn.sio_sid then violation(1008, "Socket.IO packet before CONNECT") end
  if ptype == 1 then
    conn.close_after = { 1000, "client disconnected" }
  elseif ptype == 2 then
    -- events from clients: none is defined; checked, then ignored
    if type(payload) ~= "table" or type(payload[1]) ~= "string" then
      violation(1002, "malformed Socket.IO EVENT: the payload must be an array starting with the event name")
    end
  elseif ptype == 3 then
    if type(payload) ~= "table" or (next(payload) ~= nil and payload[1] == nil) then
      violation(1002, "malformed Socket.IO ACK: the payload must be an array")
    end
  end
end

-- One WebSocket message from the client: an Engine.IO packet.
local function on_message(hub, conn, data, kind)
  if kind ~= "text" then violation(1003, "binary frames are not supported") end
  if #data > M.MAX_PAYLOAD then violation(1009, "message larger than maxPayload") end
  local t = data:sub(1, 1)
  if t == "4" then return on_sio(hub, conn, data:sub(2)) end
  if t == "3" then
    if data ~= "3" then violation(1002, "malformed Engine.IO pong") end
    if conn.pong_due then
      conn.pong_due = nil
      conn.ping_at = core.now() + hub.ping_interval
    end
    return
  end
  if t == "2" then   -- Engine.IO v3 clients ping; v4 ones answer ours
    enqueue(hub, conn, "3" .. data:sub(2))
    return
  end
  if t == "1" then
    conn.close_after = { 1000, "client closed" }
    return
  end
  if t == "6" and data == "6" then return end   -- noop
  violation(1002, "malformed Engine.IO packet" .. (data == "" and ": empty message" or ""))
end

---------------------------------------------------------------------------
-- Serving one connection
---------------------------------------------------------------------------

-- Answer a request that cannot become an Engine.IO WebSocket with the
-- error body Engine.IO servers send ({code, message}).
local function refuse(ctx, status, code, message)
  ctx:reply(status, { code = code, message = message }, { ["Content-Type"] = "application/json" })
end

-- The connection's loop: send what is queued, read what came, keep the
-- heartbeat. Returns the close code and reason.
local function run(hub, conn)
  local ws = conn.ws
  local opened = core.now()
  conn.ping_at = opened + hub.ping_interval
  while true do
    if hub.closed then return 1001, "server shutting down" end
    if conn.drop then return nil, conn.drop end
    if conn.dead or not flush(conn) then return false, "connection closed" end
    if conn.close_after and conn.qfirst > conn.qlast then
      return conn.close_after[1], conn.close_after[2]
    end
    -- everything the client sent so far
    while not conn.close_after do
      local data, kind, code, reason = ws:receive()
      if data == nil then return false, format("closed by the client (%s %s)", tostring(code), reason or "") end
      if data == "" and not kind then break end   -- nothing more (an empty message has a kind)
      on_message(hub, conn, data, kind)
    end
    local now = core.now()
    if conn.pong_due and now >= conn.pong_due then return 1000, "ping timeout" end
    local deadline = conn.authed and hub.connect_timeout or hub.auth_timeout
    if not conn.sio_sid and now - opened >= deadline then
      return 1008, "no Socket.IO CONNECT in time"
    end
    if not conn.pong_due and now >= conn.ping_at then
      enqueue(hub, conn, "2")
      conn.pong_due = now + hub.ping_timeout
    elseif conn.full or (conn.qfirst > conn.qlast and not conn.close_after) then
      -- nothing to send that the core would take now, nor a close to make:
      -- wait for a message, room in the core's buffer, an event (the gate)
      -- or the next deadline
      local next_at = conn.pong_due or conn.ping_at
      if not conn.sio_sid then
        next_at = math.min(next_at, opened + (conn.authed and hub.connect_timeout or hub.auth_timeout))
      end
      if not conn.gate then conn.gate = core.timer(FOREVER_MS) end
      local t <close> = core.timer(math.max(0, math.ceil((next_at - now) * 1000)))
      scheduler.wait(ws, conn.gate, t)
    end
  end
end

-- A connection that has not authenticated: in the pending list, the
-- oldest dropped when the list is full.
function Hub:add_pending(conn)
  local p = self.pending
  if #p >= self.max_pending then
    local oldest = table.remove(p, 1)
    oldest.drop = "no authentication in time (too many unauthenticated event connections)"
    wake(oldest)
  end
  p[#p + 1] = conn
end

-- Out of the pending list (authenticated, or gone).
function Hub:authenticated(conn)
  conn.authed = true
  local p = self.pending
  for i = 1, #p do
    if p[i] == conn then table.remove(p, i); return end
  end
end

--- Serve one request at `/api/socket.io/` (ctx: a dtlocal.http context).
-- Returns when the connection ends.
function Hub:serve(ctx)
  local q = ctx.query
  if ctx.method ~= "GET" then
    return refuse(ctx, 400, 2, "Bad handshake method")
  end
  if q.EIO ~= "4" then
    return refuse(ctx, 400, 5, "Unsupported protocol version: this server speaks Engine.IO 4 (EIO=4)")
  end
  if q.transport ~= "websocket" or not ctx.is_websocket then
    return refuse(ctx, 400, 0, "Transport unknown: only transport=websocket (a WebSocket upgrade) is supported")
  end
  if q.sid then
    return refuse(ctx, 400, 1, "Session ID unknown: sessions are not resumed (WebSocket only)")
  end
  if self.closed then return refuse(ctx, 503, 3, "the server is shutting down") end
  -- a bearer token on the upgrade is checked here, before anything else
  local given = bearer(ctx.headers)
  if given and not self.check_token(given) then
    return refuse(ctx, 401, 3, "unauthorized: authentication failed: Bearer token is invalid")
  end
  local authed = #self.pending
  authed = self.count - authed
  if given and authed >= self.max_connections then
    self.log("events: refused a connection: %d event connections already open", authed)
    return refuse(ctx, 503, 3, format("too many event connections (%d)", self.max_connections))
  end
  local uok, client = pcall(ctx.res.websocket, ctx.res, {})
  if not uok then return refuse(ctx, 400, 3, "Bad request: " .. tostring(client.message or client)) end
  ctx.responded, ctx.status = true, 101
  -- the loop polls it and waits on it with its timers: the core WebSocket
  local ws = client:core()
  local conn = {
    ws = ws, remote = ctx.remote or "-", bearer = given, authed = given ~= nil,
    q = {}, qfirst = 1, qlast = 0, qbytes = 0,
  }
  self.conns[conn] = true
  self.count = self.count + 1
  if not conn.authed then self:add_pending(conn) end
  enqueue(self, conn, "0" .. json.encode({
    sid = record.token(20), upgrades = json.array(), pingInterval = math.floor(self.ping_interval * 1000),
    pingTimeout = math.floor(self.ping_timeout * 1000), maxPayload = M.MAX_PAYLOAD,
  }))
  local ok, code, reason = pcall(run, self, conn)
  self.conns[conn] = nil
  self.count = self.count - 1
  self:authenticated(conn)   -- out of the pending list, whatever the end
  if conn.sio_sid then self.listening = self.listening - 1 end
  wake(conn)   -- frees its gate
  if not ok then
    local err = code
    if getmetatable(err) == Violation then
      code, reason = err.code, err.reason
    else
      pcall(ws.close, ws, 1011, "internal error")
      if errors.is(err, errors.CancelledError) then error(err, 0) end
      self.log("events: %s: %s", conn.remote, tostring(err))
      return
    end
  end
  if code == nil then
    -- a client too far behind: drop it at once, its unsent data with it
    self.log("events: %s dropped: %s", conn.remote, reason)
    ws:abort()
    return
  end
  if code then
    if code ~= 1000 or reason == "ping timeout" then
      self.log("events: %s closed: %s", conn.remote, reason)
    end
    ws:close(code, reason:sub(1, 123))   -- a close reason has at most 123 bytes
  else
    ws:close()   -- the client's close: answer it (a no-op once closed)
  end
end

---------------------------------------------------------------------------
-- Events
---------------------------------------------------------------------------

--- Send one event to every connection past CONNECT. `payload` is any JSON
-- value; it is encoded once.
function Hub:emit(name, payload)
  if self.listening == 0 then return end
  local frame = "42" .. json.encode(json.array({ name, payload }))
  for conn in pairs(self.conns) do
    if conn.sio_sid and not conn.close_after then enqueue(self, conn, frame) end
  end
end

--- The sandbox manager's hook: `sandbox.created` (payload: the Sandbox)
-- or `sandbox.state.updated` (payload: { sandbox, oldState, newState }).
-- Warm sandboxes, which no client knows yet, are not announced. Never
-- raises: a failure is logged and the manager goes on.
function Hub:sandbox_event(name, rec, old)
  if self.listening == 0 or (type(rec.dtlocal) == "table" and rec.dtlocal.spare) then return end
  local ok, err = pcall(function()
    local sandbox = self.wire(rec)
    if name == "sandbox.created" then
      self:emit(name, sandbox)
    else
      self:emit(name, { sandbox = sandbox, oldState = old or json.null, newState = rec.state })
    end
  end)
  if not ok then self.log("events: %s for sandbox %s not sent: %s", name, tostring(rec.id), tostring(err)) end
end

--- Close every connection (1001) and refuse new ones.
function Hub:close()
  self.closed = true
  for conn in pairs(self.conns) do wake(conn) end
end

return M
