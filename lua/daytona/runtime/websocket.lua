--- daytona.runtime.websocket: WebSocket client over the core's libwebsockets client.
--
-- The Lua face of `core.ws`: waiting and timeouts. Every call reads as
-- blocking and waits with `scheduler.wait`, so it works inside a task (it
-- yields) and on a plain main thread (it runs the loop).
--
--     local websocket = require "daytona.runtime.websocket"
--     local ws <close> = assert(websocket.connect("wss://host/path", {
--       headers = { Authorization = "Bearer " .. token }, protocols = { "v1" } }))
--     ws:send("hello")                      -- text; ws:send(bytes, "binary")
--     local data, kind = ws:receive(5)      -- waits at most 5 s
--     for data, kind in ws:messages() do ... end   -- until the peer closes
--     ws:close(1000, "bye")
--
-- A `WebSocket` has the fields `url`, `protocol` (the selected subprotocol
-- or nil) and, once closed, `close_code` and `close_reason`.
--
-- Conventions (as the core's): a failure returns `nil, message, code` with
-- a string code (ECONNREFUSED, ETIMEDOUT, EHANDSHAKE, ...); a refused
-- upgrade adds a fourth value `{ status = the HTTP status }`. The close of
-- the connection is not a failure: `receive` returns `nil, "closed",
-- close_code, reason` (an integer code). Misuse raises a plain error;
-- cancellation of the calling task raises `CancelledError`; iterators
-- (`messages`) raise the failure's message. Every call may be made inside
-- a task or on the main thread.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local wire = require "daytona.wire"

local type, pairs, tostring, error, setmetatable, pcall, math =
  type, pairs, tostring, error, setmetatable, pcall, math
local wait = scheduler.wait

local M = {}

local DEFAULT_CONNECT_TIMEOUT = 30
local DEFAULT_CLOSE_TIMEOUT = 5
local DEFAULT_PING_TIMEOUT = 10

local KNOWN = {
  headers = true, protocols = true, timeout = true, ca_file = true, insecure = true,
  ping_interval = true, ping_timeout = true, max_message = true, recv_buffer = true,
  send_buffer = true, unix_socket = true, peer_uids = true,
}

-- A failure reported by the core, as `nil, message, code[, fields]`.
local function failure(url, msg, code, fields)
  return nil, ("WebSocket %s: %s"):format(wire.redact(url), msg), code, fields
end

local function timed_out(url, what, seconds)
  return failure(url, ("%s timed out after %g s"):format(what, seconds), "ETIMEDOUT")
end

local function check_timeout(v, fname, default)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < 0 then
    error(("bad timeout to '%s' (non-negative number expected, got %s)"):format(fname, tostring(v)), 3)
  end
  return v
end

-- A timer for `seconds`, or nil for none.
local function timer_for(seconds)
  if seconds == nil or seconds == math.huge then return nil end
  return core.timer(math.floor(seconds * 1000 + 0.5))
end

-- Wait until pred() holds; false if the timer fired first.
local function wait_until(c, timer, pred)
  while not pred() do
    if timer then
      if timer:done() then return false end
      wait(c, timer)
    else
      wait(c)
    end
  end
  return true
end

---------------------------------------------------------------------------
-- WebSocket
---------------------------------------------------------------------------

local WebSocket = {}
WebSocket.__index = WebSocket
WebSocket.__name = "daytona.runtime.websocket.WebSocket"

function WebSocket:__tostring()
  return ("WebSocket %s (%s)"):format(wire.redact(self.url), self._c:state())
end

--- The connection's state.
-- @return "connecting", "open", "closing" or "closed"
function WebSocket:state()
  return self._c:state()
end

--- How much is buffered in C.
-- @return bytes queued to send
-- @return bytes received and not yet read
function WebSocket:buffered()
  return self._c:buffered()
end

--- Drop the connection at once, without a closing handshake.
-- A later `receive` reports the close as code 1006.
function WebSocket:abort()
  self._c:abort()
end

-- Record and return a close seen by the core.
local function closed(self, code, reason)
  self.close_code, self.close_reason = code, reason
  return nil, "closed", code, reason
end

-- One step of receive: data, kind | nil, "closed", code, reason |
-- nil, message, code (a failure) | false.
local function take(self)
  local a, b, c, d = self._c:receive()
  if a then return a, b end
  if a == false then return false end
  if b == "closed" then return closed(self, c, d) end
  if c == "ECANCELED" then return closed(self, 1006, b) end   -- we aborted
  return failure(self.url, b, c)
end

--- Wait for the next whole message (fragments reassembled).
-- @param[opt] timeout seconds (nil: for ever)
-- @return data, kind ("text" or "binary"); after the closing handshake
-- nil, "closed", the close code (1005 when the peer gave none, 1006 after
-- `abort`) and the reason; nil, message, "ETIMEDOUT" after `timeout`
-- seconds (the connection stays usable; nothing is lost); nil, message,
-- code when the connection broke (ECONNRESET when the peer vanished,
-- ETIMEDOUT when keepalive pings went unanswered, EMSGSIZE, ...)
-- @raise `CancelledError`
function WebSocket:receive(timeout)
  timeout = check_timeout(timeout, "receive")
  local a, b, c, d = take(self)
  if a ~= false then return a, b, c, d end
  local timer <close> = timer_for(timeout)
  local got
  local ok = wait_until(self._c, timer, function()
    got = table.pack(take(self))
    return got[1] ~= false
  end)
  if not ok then return timed_out(self.url, "receive", timeout) end
  return table.unpack(got, 1, got.n)
end

--- An iterator over the messages: `for data, kind in ws:messages() do ... end`
-- ends when the connection closes normally (see `ws.close_code`).
-- @param[opt] timeout seconds to wait for each message (nil: for ever)
-- @return an iterator function giving data, kind
-- @raise (when iterated) the failure's message, a string; `CancelledError`
function WebSocket:messages(timeout)
  return function()
    local data, kind, code = self:receive(timeout)
    if data == nil then
      if kind ~= "closed" or type(code) ~= "number" then error(kind, 2) end
      return nil
    end
    return data, kind
  end
end

--- Handle the messages in a new task.
-- The task calls fn(data, kind, ws) for each message and finishes with
-- close_code, close_reason at the close. An error in fn (or a broken
-- connection) fails the task: wait on it (`task:wait()`) to see it. Cancel
-- the task to stop reading.
-- @param fn `function(data, kind, ws)`
-- @return the `Task`
function WebSocket:on_message(fn)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'on_message' (function expected, got " .. type(fn) .. ")", 2)
  end
  return scheduler.spawn(function()
    for data, kind in self:messages() do fn(data, kind, self) end
    return self.close_code, self.close_reason
  end)
end

--- Queue one message.
-- Returns once it is queued; waits while `send_buffer` bytes are already
-- queued.
-- @param data string (UTF-8 for a text message)
-- @param[opt="text"] kind "text" or "binary"
-- @param[opt] timeout seconds to wait for room (nil: for ever)
-- @return true; nil, message, "ETIMEDOUT" after `timeout` seconds (the
-- message is not sent); nil, message, code (ECLOSED, or the failure's
-- code) once the connection is closing or broken
-- @raise `CancelledError`
function WebSocket:send(data, kind, timeout)
  if type(data) ~= "string" then
    error("bad argument #1 to 'send' (string expected, got " .. type(data) .. ")", 2)
  end
  timeout = check_timeout(timeout, "send")
  local c = self._c
  local ok, msg, code = c:send(data, kind)
  if ok then return true end
  if ok == nil then return failure(self.url, msg, code) end
  -- the queue is full: wait for it to drain
  local timer <close> = timer_for(timeout)
  local done = wait_until(c, timer, function()
    ok, msg, code = c:send(data, kind)
    return ok ~= false
  end)
  if not done then return timed_out(self.url, "send", timeout) end
  if ok == nil then return failure(self.url, msg, code) end
  return true
end

--- Send a ping and wait for the pong.
-- @param[opt=10] timeout seconds
-- @return the round-trip time in seconds, or nil, message, code like
-- `receive` (ECLOSED when the connection closed before the pong)
-- @raise `CancelledError`
function WebSocket:ping(timeout)
  timeout = check_timeout(timeout, "ping", DEFAULT_PING_TIMEOUT)
  local c = self._c
  local before = c:pongs()
  local ok, msg, code = c:ping()
  if not ok then return failure(self.url, msg, code) end
  local t0 = core.now()
  local timer <close> = timer_for(timeout)
  local lost
  local got = wait_until(c, timer, function()
    if c:pongs() > before then return true end
    local st = c:state()
    if st == "closed" or st == "closing" then
      local m, cd = c:error()
      lost = { m or "connection closed before the pong", cd or "ECLOSED" }
      return true
    end
    return false
  end)
  if lost then return failure(self.url, lost[1], lost[2]) end
  if not got then return timed_out(self.url, "ping", timeout) end
  return core.now() - t0
end

--- Close the connection with the closing handshake.
-- Sends the queued messages, then the close frame, and waits for the
-- peer's close, else drops the connection; unread messages are dropped.
-- Never raises for a broken connection; idempotent. `local ws <close>`
-- and collection start the same close without waiting.
-- @param[opt=1000] code 1000-1003, 1007-1014 or 3000-4999
-- @param[opt] reason string of up to 123 bytes
-- @param[opt=5] timeout seconds to wait for the peer's close
-- @return the close code and reason: the peer's answer, or ours if it
-- never answered
-- @raise a plain error for a bad code or reason; `CancelledError` (after
-- dropping the connection)
function WebSocket:close(code, reason, timeout)
  timeout = check_timeout(timeout, "close", DEFAULT_CLOSE_TIMEOUT)
  local c = self._c
  c:close(code, reason)   -- raises on a bad code or reason
  local timer <close> = timer_for(timeout)
  local ok, err = pcall(wait_until, c, timer, function() return c:state() == "closed" end)
  if not ok or c:state() ~= "closed" then c:abort() end   -- timed out, or the task was cancelled
  if not ok then error(err, 0) end
  -- the close code: the peer's answer, or ours if it never answered
  while true do
    local a, b, cd, rs = c:receive()
    if a == nil then
      if b == "closed" then closed(self, cd, rs)
      elseif not self.close_code then closed(self, 1006, b) end
      break
    end
    if a == false then break end
    -- unread messages are dropped: the caller chose to close
  end
  return self.close_code, self.close_reason
end

-- `local ws <close>` and collection: start a graceful close, no waiting
function WebSocket:__close()
  pcall(self._c.close, self._c)
end
WebSocket.__gc = WebSocket.__close

--- Open a WebSocket connection; returns once it is open.
-- Cancelling the calling task aborts the attempt.
-- @param url ws:// or wss:// (TLS verified against the system CAs)
-- @param[opt] opts options:
-- @param[opt] opts.headers `{ Name = "value" }` sent with the upgrade
-- request (Host, Upgrade, Connection, Sec-WebSocket-* are refused: use
-- `protocols` for Sec-WebSocket-Protocol)
-- @param[opt] opts.protocols `{ "a", "b" }`: subprotocols offered;
-- `ws.protocol` is the one the server selected (nil if none)
-- @param[opt=30] opts.timeout seconds to connect
-- @param[opt] opts.ca_file PEM file of CAs to trust instead of the system's
-- @param[opt] opts.insecure true: skip certificate verification
-- @param[opt] opts.unix_socket connect to this unix-domain socket path
-- (ws:// only)
-- @param[opt] opts.peer_uids `{first, last}` with `unix_socket`: refuse
-- (code EPEER) a socket whose listening process has a uid outside it
-- @param[opt=30] opts.ping_interval idle seconds before a keepalive ping
-- (0: none)
-- @param[opt=30] opts.ping_timeout seconds to wait for the pong before
-- hanging up
-- @param[opt] opts.max_message largest message accepted, in bytes (default
-- 64 MiB; a larger one closes the connection with 1009, EMSGSIZE)
-- @param[opt] opts.recv_buffer unread bytes held before reading pauses
-- (default 4 MiB)
-- @param[opt] opts.send_buffer queued bytes before `send` waits (default
-- 4 MiB)
-- @return a `WebSocket`; or nil, message, code on failure (ECONNREFUSED,
-- ECONNRESET, ENOTFOUND, EHOSTUNREACH, ETLS, EHANDSHAKE, ETIMEDOUT after
-- `timeout`, ENOENT for an unreadable ca_file, ...) and, when the server
-- answered the upgrade with an HTTP status other than 101, a fourth value
-- `{ status = status }` (code EHANDSHAKE)
-- @raise `CancelledError`; a plain error on misuse (unknown option, bad
-- URL, bad header)
function M.connect(url, opts)
  if type(url) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(url) .. ")", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #2 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
  end
  for k in pairs(opts) do
    if not KNOWN[k] then error("bad argument #2 to 'connect' (unknown option '" .. tostring(k) .. "')", 2) end
  end
  local timeout = check_timeout(opts.timeout, "connect", DEFAULT_CONNECT_TIMEOUT)
  local copts = { url = url }
  for k, v in pairs(opts) do if k ~= "timeout" then copts[k] = v end end
  local okc, c, msg, code = pcall(core.ws.connect, copts)
  if not okc then error(c, 2) end   -- misuse: bad URL, header, option
  if not c then return failure(url, msg, code) end
  local timer <close> = timer_for(timeout)
  local ok, err = pcall(wait_until, c, timer, function() return c:state() ~= "connecting" end)
  if not ok then c:abort(); error(err, 0) end   -- cancelled
  local state = c:state()
  if state == "connecting" then
    c:abort()
    return timed_out(url, "connect", timeout)
  end
  local status = c:http_status()
  if state == "closed" and status ~= 101 then
    -- never upgraded (one that opened and closed at once reports on receive)
    local m, cd = c:error()
    m, cd = m or "connection failed", cd or "ECONNRESET"
    return failure(url, m, cd, status and { status = status } or nil)
  end
  return setmetatable({ _c = c, url = url, protocol = c:protocol() }, WebSocket)
end

M.WebSocket = WebSocket
return M
