--- daytona.runtime.server: an HTTP/1.1 + WebSocket server on the core's loop.
--
-- The policy layer over `core.server` (libmicrohttpd + wslay, mechanism):
-- one scheduler task per request, body and response helpers that wait with
-- `scheduler.wait` (so they read as blocking and yield in a task), handler
-- errors turned into 500s and logged (the server never dies of them), and
-- WebSocket upgrades.
--
--     local server = require "daytona.runtime.server"
--     local srv = server.listen{ port = 0, handler = function(req, res)
--       if req.path == "/hello" then
--         return res:json(200, { hello = req.args.name or "world" })
--       end
--       res:send(404, { ["content-type"] = "text/plain" }, "not found\n")
--     end }
--     print(srv.url)             --> http://127.0.0.1:41234
--     ...
--     srv:close()
--
-- Routes. There is no router: `handler(req, res)` sees every request and
-- dispatches on `req.method` and `req.path` itself. A WebSocket route is a
-- request with `req.websocket == true` (a GET asking to upgrade) whose
-- handler calls `res:websocket{ protocol = ... }` and talks over the
-- returned WebSocket; the subprotocol is chosen by the handler from
-- `req.protocols` (what the client offered) and must be one of them, or
-- nil for none (Node's `ws` client aborts otherwise). As a shortcut,
-- `listen{ websocket = function(req, ws) ... end, protocols = {...} }`
-- upgrades every upgrade request itself (choosing the first of `protocols`
-- the client offered) and hands it to that function; `handler` then only
-- sees plain HTTP.
--
-- server.listen(opts) -> Server
--   opts: host ("127.0.0.1"; a numeric IPv4/IPv6 address), port (0: the OS
--   picks), or socket (a path: listen on a unix-domain socket there; the
--   path must not exist, and is removed by close), handler (function(req, res), required unless websocket is
--   given), websocket (function(req, ws)), protocols (list of subprotocols
--   for the websocket shortcut), log (function(message) for handler errors;
--   default writes to stderr), and the core's limits: connection_limit
--   (1024), connection_timeout (60 s of inactivity), memory_limit (64 KiB
--   per connection: bounds the request line and headers; bigger gets 431),
--   body_buffer (256 KiB of request body buffered per request),
--   ws_max_message (64 MiB; bigger messages close with 1009).
--   Raises `DaytonaError` (code EADDRINUSE, EINVAL, ...) when it cannot listen.
--   The server keeps the scheduler alive (`scheduler.run` does not return)
--   until closed.
-- Server: srv.port, srv.url ("http://host:port"; both nil on a unix
--   socket, where srv.socket is the path), srv:stats() -> {
--   connections, peak_connections, requests, websockets, total_requests },
--   srv:close() (idempotent: drops every connection, cancels running
--   handlers; also `<close>`).
--
-- Request `req` (fields): method, path (percent-decoded by MHD), target
--   (the raw request-target), query (raw query string, "" if none), args
--   (query decoded: name -> first value), headers (lower-case names;
--   repeated headers joined with ", "), version ("HTTP/1.1"), remote
--   ("ip:port"), websocket (boolean), protocols (list of offered
--   subprotocols). Body (read once, by one of these):
--   req:read() -> chunk (<= 64 KiB) | nil at the end
--   req:chunks() -> iterator over the chunks
--   req:body([max = 16 MiB]) -> string; raises `DaytonaValidationError`
--     (status_code 413, code "E2BIG") when the body is bigger than max
--   req:save(path) -> bytes: streams the body into the file in C
--   They raise `DaytonaConnectionError` (code ECONNRESET) when the client
--   goes away before the end of the body, `DaytonaTimeoutError` (ETIMEDOUT)
--   when MHD times the connection out, `CancelledError` when the server
--   closes. The body is bounded in C: an unread body pauses the client.
--
-- Response `res`: exactly one of
--   res:send(status [, headers [, body = ""]])
--   res:json(status, value [, headers])     cjson-encoded, application/json
--   res:stream(status, headers, producer)   producer() returns the next
--     chunk or nil at the end; chunked unless headers give content-length
--   res:start(status, headers) then res:write(chunk)... res:finish():
--     the same by hand; write waits while the C buffer is full
--   res:file(status, headers, path [, offset [, length]])  MHD sends the
--     file itself (sendfile); raises `DaytonaError` (ENOENT, EISDIR, ...)
--     without using up the response, so a handler may then send a 404
--   res:websocket{ protocol =, headers = } -> WebSocket (101 sent);
--     raises `DaytonaValidationError` when req is not an upgrade request
--   res.started is true once one of them ran. A handler that returns
--   without responding gets a 500 (logged); a handler error gets a 500 if
--   nothing was sent yet, else the connection is dropped. An unread request
--   body is discarded by the core after the response.
--
-- WebSocket `ws`: ws.protocol (the chosen subprotocol or nil),
--   ws:send(data [, "text"|"binary"])  waits while 1 MiB is queued; raises
--     `DaytonaConnectionError` (code EPIPE) once closed; text must be UTF-8
--   ws:receive([timeout]) -> data, "text"|"binary" | nil, code, reason once
--     closed (1000 normal, 1006 dropped, ...); raises `DaytonaTimeoutError`
--   ws:close([code = 1000 [, reason]])  closing handshake (5 s at most)
--   ws:abort()                          drops the TCP connection (RST)
--   ws:state() -> "connecting" | "open" | "closing" | "closed"
--   Fragments are reassembled, pings answered, invalid UTF-8 in text
--   closes with 1007, messages over ws_max_message with 1009. When the
--   route's function returns, the WebSocket is closed (1000; 1011 after an
--   error).
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"

local setmetatable, getmetatable, type, tostring, error, pcall, xpcall, pairs, ipairs =
  setmetatable, getmetatable, type, tostring, error, pcall, xpcall, pairs, ipairs
local concat, tonumber, char = table.concat, tonumber, string.char

local M = {}

local DEFAULT_MAX_BODY = 16 * 1024 * 1024

-- A core failure (nil, msg, code) as a daytona.errors object.
local function failure(msg, code)
  if code == "ETIMEDOUT" then return errors.DaytonaTimeoutError(msg, { code = code }) end
  if code == "ECANCELED" then return errors.CancelledError(msg, { code = code }) end
  if code == "ECONNRESET" or code == "EPIPE" then
    return errors.DaytonaConnectionError(msg, { code = code })
  end
  return errors.DaytonaError(msg, { code = code })
end

local function check(v, msg, code, ...)
  if v == nil and msg ~= nil then error(failure(msg, code), 2) end
  return v, msg, code, ...
end

---------------------------------------------------------------------------
-- query strings
---------------------------------------------------------------------------

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

--- Decode a query string into name -> first value.
function M.parse_query(q)
  local args = {}
  for pair in (q or ""):gmatch("[^&;]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    k = unescape(k)
    if args[k] == nil then args[k] = unescape(v) end
  end
  return args
end

local function token_list(s)
  local list = {}
  for t in (s or ""):gmatch("[^,%s]+") do list[#list + 1] = t end
  return list
end

local function has_token(s, want)
  for _, t in ipairs(token_list(s)) do
    if t:lower() == want then return true end
  end
  return false
end

---------------------------------------------------------------------------
-- Request
---------------------------------------------------------------------------

local Request = { __name = "daytona.server.Request" }
Request.__index = Request

local function new_request(creq, info)
  local h = info.headers
  local req = setmetatable({
    _c = creq,
    method = info.method,
    path = info.path,
    target = info.target,
    query = info.query,
    args = M.parse_query(info.query),
    headers = h,
    version = info.version,
    remote = info.remote,
    websocket = info.method == "GET" and has_token(h.upgrade, "websocket")
      and has_token(h.connection, "upgrade") or false,
    protocols = token_list(h["sec-websocket-protocol"]),
  }, Request)
  return req
end

--- The next body chunk, or nil at the end.
function Request:read()
  local c = self._c
  while true do
    local chunk, msg, code = c:read()
    if chunk == nil then
      if msg ~= nil then error(failure(msg, code), 2) end
      return nil
    end
    if chunk ~= "" then return chunk end
    scheduler.wait(c)
  end
end

--- An iterator over the body's chunks.
function Request:chunks()
  return function() return self:read() end
end

--- The whole body as a string (at most max bytes, default 16 MiB).
function Request:body(max)
  max = max or DEFAULT_MAX_BODY
  local parts, n = {}, 0
  while true do
    local chunk = self:read()
    if not chunk then break end
    n = n + #chunk
    if n > max then
      error(errors.DaytonaValidationError(("request body larger than %d bytes"):format(max),
        { status_code = 413, code = "E2BIG" }), 2)
    end
    parts[#parts + 1] = chunk
  end
  return concat(parts)
end

--- Stream the body into a file (in C); returns the number of bytes written.
function Request:save(path)
  local c = self._c
  check(c:read_to_file(path))
  while true do
    local n, msg, code = c:saved()
    if n == nil then error(failure(msg, code), 2) end
    if n then return n end
    scheduler.wait(c)
  end
end

---------------------------------------------------------------------------
-- WebSocket
---------------------------------------------------------------------------

local WebSocket = { __name = "daytona.server.WebSocket" }
WebSocket.__index = WebSocket

local function new_ws(cws, protocol)
  return setmetatable({ _c = cws, protocol = protocol }, WebSocket)
end

--- Send a message; waits while the send queue is full.
function WebSocket:send(data, kind)
  local c = self._c
  while true do
    local ok, msg, code = c:send(data, kind)
    if ok then return true end
    if ok == nil then error(failure(msg, code), 2) end
    scheduler.wait(c)
  end
end

--- The next message: data, kind; or nil, code, reason once closed.
function WebSocket:receive(timeout)
  local c = self._c
  local timer
  if timeout then timer = core.timer(math.floor(timeout * 1000 + 0.5)) end
  local ok, a, b, cc, d = pcall(function()
    while true do
      local data, kind, code, reason = c:receive()
      if data == nil then return nil, code, reason end
      if data ~= "" or kind then return data, kind end
      if timer and timer:done() then
        error(errors.DaytonaTimeoutError(("no message in %g s"):format(timeout),
          { code = "ETIMEDOUT" }), 0)
      end
      if timer then scheduler.wait(c, timer) else scheduler.wait(c) end
    end
  end)
  if timer then timer:close() end
  if not ok then error(a, 2) end
  return a, b, cc, d
end

--- Start the closing handshake.
function WebSocket:close(code, reason)
  self._c:close(code, reason)
end

--- Drop the connection at once.
function WebSocket:abort()
  self._c:abort()
end

function WebSocket:state()
  return self._c:state()
end

WebSocket.__close = function(self) self._c:close() end

---------------------------------------------------------------------------
-- Response
---------------------------------------------------------------------------

local Response = { __name = "daytona.server.Response" }
Response.__index = Response

local function new_response(creq, req)
  return setmetatable({ _c = creq, _req = req, started = false }, Response)
end

local function begin(self)
  if self.started then error("response already started", 3) end
end

--- Send a whole response.
function Response:send(status, headers, body)
  begin(self)
  local ok, msg, code = self._c:respond(status, headers, body or "")
  self.started = true
  if not ok then error(failure(msg, code), 2) end
end

--- Send value as JSON.
function Response:json(status, value, headers)
  local cjson = require "cjson"
  local h = { ["content-type"] = "application/json" }
  if headers then for k, v in pairs(headers) do h[k] = v end end
  return self:send(status, h, cjson.encode(value))
end

--- Start a streamed response (chunked unless headers give content-length).
function Response:start(status, headers)
  begin(self)
  local ok, msg, code = self._c:respond(status, headers)
  self.started = true
  if not ok then error(failure(msg, code), 2) end
  self._streaming = true
end

--- Write a chunk of a streamed response; waits while the C buffer is full.
function Response:write(chunk)
  local c = self._c
  while true do
    local ok, msg, code = c:write(chunk)
    if ok then return true end
    if ok == nil then error(failure(msg, code), 2) end
    scheduler.wait(c)
  end
end

--- End a streamed response.
function Response:finish()
  check(self._c:finish())
end

--- Stream a response from producer() (next chunk, or nil at the end).
function Response:stream(status, headers, producer)
  if type(producer) ~= "function" then
    error("bad argument #3 to 'stream' (function expected)", 2)
  end
  self:start(status, headers)
  if self._req.method ~= "HEAD" then
    while true do
      local chunk = producer()
      if chunk == nil then break end
      self:write(chunk)
    end
  end
  self:finish()
end

--- Send a file (MHD streams it from disk).
function Response:file(status, headers, path, offset, length)
  begin(self)
  local ok, msg, code = self._c:respond_file(status, headers, path, offset, length)
  if not ok then error(failure(msg, code), 2) end
  self.started = true
end

--- Accept a WebSocket upgrade; returns the WebSocket.
function Response:websocket(opts)
  begin(self)
  opts = opts or {}
  local cws, msg, code = self._c:upgrade_websocket{ protocol = opts.protocol, headers = opts.headers }
  if not cws then
    if code == "EINVAL" then
      error(errors.DaytonaValidationError(msg, { status_code = 400, code = code }), 2)
    end
    error(failure(msg, code), 2)
  end
  self.started = true
  return new_ws(cws, opts.protocol)
end

---------------------------------------------------------------------------
-- Server
---------------------------------------------------------------------------

local Server = { __name = "daytona.server.Server" }
Server.__index = Server

local function default_log(msg)
  io.stderr:write("dtlua server: ", msg, "\n")
end

local function describe(err, tb)
  local s = type(err) == "string" and err or tostring(err)
  if tb then s = s .. "\n" .. tb end
  return s
end

local Traced = {}   -- a handler error with its traceback

local function traceback(err)
  if getmetatable(err) == Traced then return err end   -- already traced deeper down
  return setmetatable({ err = err, tb = debug.traceback(nil, 2) }, Traced)
end

local function choose_protocol(offered, mine)
  for _, p in ipairs(mine or {}) do
    for _, o in ipairs(offered) do
      if o == p then return p end
    end
  end
  return nil
end

local function run_ws_route(self, req, res)
  local proto = choose_protocol(req.protocols, self._protocols)
  local ok, ws = pcall(res.websocket, res, { protocol = proto })
  if not ok then
    if errors.is(ws, errors.DaytonaValidationError) and not res.started then
      return res:send(400, { ["content-type"] = "text/plain" }, "bad WebSocket upgrade\n")
    end
    error(ws, 0)
  end
  local fine, e = xpcall(self._websocket, traceback, req, ws)
  if ws:state() ~= "closed" then
    if fine then ws:close(1000) else ws:close(1011, "internal error") end
  end
  if not fine then error(e, 0) end
end

local function serve(self, creq)
  local info = creq:info()
  if not info then creq:close(); return end
  local req = new_request(creq, info)
  local res = new_response(creq, req)
  local fn = (self._websocket and req.websocket) and run_ws_route or self._handler
  local ok, e
  if fn == run_ws_route then ok, e = xpcall(run_ws_route, traceback, self, req, res)
  else ok, e = xpcall(fn, traceback, req, res) end
  if ok then
    if not res.started then
      self._log(("%s %s: handler returned without responding"):format(req.method, req.path))
      pcall(res.send, res, 500, { ["content-type"] = "text/plain" }, "internal server error\n")
    end
    return
  end
  local err, tb = e, nil
  if getmetatable(e) == Traced then err, tb = e.err, e.tb end
  if errors.is(err, errors.CancelledError) then creq:close(); return end
  local gone, how = creq:done()
  if gone and how ~= "ok" then
    -- the client went away (or timed out): not a handler bug, one line is enough
    self._log(("%s %s: client connection ended (%s): %s"):format(req.method, req.path, how,
      describe(err)))
    return
  end
  self._log(("%s %s: %s"):format(req.method, req.path, describe(err, tb)))
  if not res.started then
    if not pcall(res.send, res, 500, { ["content-type"] = "text/plain" }, "internal server error\n") then
      creq:close()
    end
  elseif res._streaming then
    creq:close()   -- cut a streamed body short: the client sees a broken transfer
  end
end

local function accept_loop(self)
  local c = self._c
  while true do
    local creq, msg = c:accept()
    if creq then
      local task
      task = scheduler.spawn(function()
        local ok, err = pcall(serve, self, creq)
        self._tasks[task] = nil
        if not ok and not errors.is(err, errors.CancelledError) then
          self._log("request task failed: " .. describe(err))
        end
      end)
      self._tasks[task] = true
    elseif msg then
      return   -- closed
    else
      scheduler.wait(c)
    end
  end
end

--- Start a server; see the module header for opts.
function M.listen(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'listen' (table expected)", 2) end
  local handler, websocket = opts.handler, opts.websocket
  if handler == nil and websocket == nil then
    error("bad argument #1 to 'listen' (handler or websocket required)", 2)
  end
  if handler ~= nil and type(handler) ~= "function" then
    error("bad argument #1 to 'listen' (handler must be a function)", 2)
  end
  if websocket ~= nil and type(websocket) ~= "function" then
    error("bad argument #1 to 'listen' (websocket must be a function)", 2)
  end
  handler = handler or function(_, res)
    res:send(426, { ["content-type"] = "text/plain", upgrade = "websocket" },
      "this server speaks WebSocket only\n")
  end
  local host = opts.host or "127.0.0.1"
  if opts.socket ~= nil and type(opts.socket) ~= "string" then
    error("bad argument #1 to 'listen' (socket must be a path)", 2)
  end
  local c, msg, code = core.server.listen{
    host = host, port = opts.port or 0, socket = opts.socket,
    connection_limit = opts.connection_limit, connection_timeout = opts.connection_timeout,
    memory_limit = opts.memory_limit, body_buffer = opts.body_buffer,
    ws_max_message = opts.ws_max_message, backlog = opts.backlog,
  }
  if not c then error(failure(msg, code), 2) end
  local port = not opts.socket and c:port() or nil
  local self = setmetatable({
    _c = c, _handler = handler, _websocket = websocket, _protocols = opts.protocols,
    _log = opts.log or default_log, _tasks = {},
    port = port,
    socket = opts.socket,
    url = port and ("http://%s:%d"):format(host:find(":", 1, true) and "[" .. host .. "]" or host, port),
  }, Server)
  self._accept = scheduler.spawn(accept_loop, self)
  return self
end

--- The server's figures: connections, peak_connections, requests, websockets, total_requests.
function Server:stats()
  return self._c:stats()
end

--- Stop listening, drop every connection and cancel running handlers.
function Server:close()
  if self._c:closed() then return end
  self._c:close()
  if self.socket then os.remove(self.socket) end   -- we made it
  local list = {}
  for t in pairs(self._tasks) do list[#list + 1] = t end
  for _, t in ipairs(list) do t:cancel() end
end

Server.__close = Server.close

M.Request, M.Response, M.WebSocket, M.Server = Request, Response, WebSocket, Server
return M
