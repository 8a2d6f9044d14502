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
-- The request `req` has the fields method, path (percent-decoded by MHD),
-- target (the raw request-target), query (raw query string, "" if none),
-- args (query decoded: name -> first value), headers (lower-case names;
-- repeated headers joined with ", "), version ("HTTP/1.1"), remote
-- ("ip:port"), websocket (boolean) and protocols (list of offered
-- subprotocols). Its body is read once, by one of `Request:read`,
-- `chunks`, `body` or `save`; it is bounded in C (an unread body pauses
-- the client) and what is left unread is discarded after the response.
--
-- The response `res` takes exactly one of `Response:send`, `json`,
-- `stream`, `start` (then `write`... `finish`), `file` or `websocket`;
-- `res.started` is true once one of them ran. A handler that returns
-- without responding gets a 500 (logged); a handler error gets a 500 if
-- nothing was sent yet, else the connection is dropped.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local wire = require "daytona.wire"

local setmetatable, getmetatable, type, tostring, error, pcall, xpcall, pairs, ipairs =
  setmetatable, getmetatable, type, tostring, error, pcall, xpcall, pairs, ipairs
local concat = table.concat

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

--- Decode a query string ("+" and %XX escapes; pairs split on "&" only,
-- as URLSearchParams does: a ";" is part of a value, e.g. a file name):
-- daytona.wire's, the one URL codec, which dtlocal's servers read through
-- `req.args` and `ctx:query_all`.
-- @param[opt] q the raw query string, without the "?"
-- @param[opt] all true: every value of a repeated name, in order
-- @return a table of name -> first value ("" for a name without "="), or
-- with `all` name -> list of values
M.parse_query = wire.parse_query

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

--- The next chunk of the request body, waiting for it.
-- @return a string of at most 256 KiB, or nil at the end
-- @raise `DaytonaConnectionError` (code ECONNRESET) when the client goes
-- away before the end of the body; `DaytonaTimeoutError` (code ETIMEDOUT)
-- when MHD times the connection out; `CancelledError` when the server
-- closes
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

--- An iterator over the body's chunks: `for chunk in req:chunks() do ... end`.
-- @return an iterator function giving the chunks of `read`
-- @raise (when iterated) like `read`
function Request:chunks()
  return function() return self:read() end
end

--- The whole body as one string.
-- @param[opt] max the largest body accepted, bytes (default 16 MiB)
-- @return string
-- @raise `DaytonaValidationError` (status_code 413, code "E2BIG") when the
-- body is bigger than max; else like `read`
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

--- Stream the body into a file, written in C (created or truncated).
-- @param path the file
-- @return the number of bytes written
-- @raise `DaytonaError` (ENOENT, EACCES, ...) when the file cannot be
-- opened or written; else like `read`
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

--- The core request under this one, for the HTTP client's splice
-- (`http.stream{ body_from =, response_to = }` moves a body between two
-- transfers in C); the response still goes through the `Response`.
-- @return the `core.server` request
function Request:core()
  return self._c
end

---------------------------------------------------------------------------
-- WebSocket
---------------------------------------------------------------------------

local WebSocket = { __name = "daytona.server.WebSocket" }
WebSocket.__index = WebSocket

local function new_ws(cws, protocol)
  return setmetatable({ _c = cws, protocol = protocol }, WebSocket)
end

--- Queue one message; waits while 1 MiB is already queued.
-- @param data string (valid UTF-8 for a text message)
-- @param[opt="text"] kind "text" or "binary"
-- @return true
-- @raise `DaytonaConnectionError` (code EPIPE) once the WebSocket is
-- closing or closed; `CancelledError`; a plain error for text that is not
-- UTF-8
function WebSocket:send(data, kind)
  local c = self._c
  while true do
    local ok, msg, code = c:send(data, kind)
    if ok then return true end
    if ok == nil then error(failure(msg, code), 2) end
    scheduler.wait(c)
  end
end

--- Wait for the next whole message (fragments are reassembled).
-- @param[opt] timeout seconds (nil: for ever)
-- @return data, kind ("text" or "binary"); or nil, the close code (1000
-- normal, 1006 dropped, ...) and the reason once closed
-- @raise `DaytonaTimeoutError` (code ETIMEDOUT) when no message came in
-- `timeout` seconds; `CancelledError`
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

--- Start the closing handshake; the connection is released when the peer
-- answers, or after 5 s. Returns at once; idempotent.
-- @param[opt=1000] code the close code (1000-4999, not 1004-1006 or 1015)
-- @param[opt] reason UTF-8, up to 123 bytes
-- @raise a plain error for a bad code or reason
function WebSocket:close(code, reason)
  self._c:close(code, reason)
end

--- Drop the TCP connection at once (RST), without a close frame.
function WebSocket:abort()
  self._c:abort()
end

--- The connection's state.
-- @return "connecting", "open", "closing" or "closed"
function WebSocket:state()
  return self._c:state()
end

--- The core WebSocket under this one, for a loop that waits on it
-- together with other handles (`scheduler.wait(ws:core(), timer)`) and
-- polls it with the core's non-blocking receive and send.
-- @return the `core.server` WebSocket
function WebSocket:core()
  return self._c
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
-- @param status the status code
-- @param[opt] headers `{ name = value }`
-- @param[opt=""] body string
-- @raise a plain error when the response was already started, on a bad
-- status (200-599) or a refused header; when the connection is gone, the
-- errors of `Request:read`
function Response:send(status, headers, body)
  begin(self)
  local ok, msg, code = self._c:respond(status, headers, body or "")
  self.started = true
  if not ok then error(failure(msg, code), 2) end
end

--- Send a value as JSON (cjson-encoded, Content-Type application/json).
-- @param status the status code
-- @param value any JSON-encodable value
-- @param[opt] headers more headers
-- @raise like `send`; a plain error when value cannot be encoded
function Response:json(status, value, headers)
  local cjson = require "cjson"
  local h = { ["content-type"] = "application/json" }
  if headers then for k, v in pairs(headers) do h[k] = v end end
  return self:send(status, h, cjson.encode(value))
end

--- Start a streamed response, sent chunked unless the headers give a
-- content-length; the body follows with `write` and ends with `finish`.
-- @param status the status code
-- @param[opt] headers `{ name = value }`
-- @raise a plain error when the response was already started, on a bad
-- status (200-599) or a refused header; when the connection is gone, the
-- errors of `Request:read`
function Response:start(status, headers)
  begin(self)
  local ok, msg, code = self._c:respond(status, headers)
  self.started = true
  if not ok then error(failure(msg, code), 2) end
  self._streaming = true
end

--- Write a chunk of a streamed response; waits while the C buffer is full.
-- `write(file, length)` sends the next `length` bytes of an open io file
-- from C (read as MHD sends them: no Lua string, no copy through the
-- buffer) and moves the file's position past them; the file may be closed
-- at once. Should the file turn out shorter, the response is cut (the
-- client sees a broken transfer) and the next `write` or `finish` raises.
-- @param chunk string, or an io file
-- @param[opt] length with a file: how many bytes
-- @return true
-- @raise the errors of `Request:read` when the connection is gone; a plain
-- error without `start`, after `finish` or past the declared content-length
function Response:write(chunk, length)
  local c = self._c
  while true do
    local ok, msg, code = c:write(chunk, length)
    if ok then return true end
    if ok == nil then error(failure(msg, code), 2) end
    scheduler.wait(c)
  end
end

--- End a streamed response.
-- @raise `DaytonaError` (code EPROTO) when fewer bytes were written than the
-- declared content-length; the errors of `Request:read` when the
-- connection is gone
function Response:finish()
  check(self._c:finish())
end

--- Stream a response from a producer: `start`, `write` for each chunk,
-- `finish`. The producer is not called for a HEAD request.
-- @param status the status code
-- @param[opt] headers `{ name = value }`; chunked unless they give a
-- content-length
-- @param producer `function() -> chunk | nil` (nil at the end)
-- @raise like `start` and `write`; the producer's errors propagate
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

--- Send a file: MHD sends it from disk itself (sendfile), with its
-- Content-Length.
-- @param status the status code
-- @param[opt] headers `{ name = value }`
-- @param path the file
-- @param[opt=0] offset where to start in the file
-- @param[opt] length bytes to send (default: to the end)
-- @raise `DaytonaError` (ENOENT, EISDIR, ...) without using up the
-- response, so a handler may then send a 404; else like `send`
function Response:file(status, headers, path, offset, length)
  begin(self)
  local ok, msg, code = self._c:respond_file(status, headers, path, offset, length)
  if not ok then error(failure(msg, code), 2) end
  self.started = true
end

--- Drop the connection at once: a response whose head is out is cut
-- short (the client sees a broken transfer); one not started yet is
-- never sent. Idempotent.
function Response:abort()
  self.started = true
  self._c:close()
end

--- Accept a WebSocket upgrade: sends the 101 and returns the WebSocket.
-- Fragments are reassembled, pings answered, invalid UTF-8 in a text
-- message closes with 1007, messages over `ws_max_message` with 1009.
-- With the `listen{ websocket = }` shortcut the WebSocket is closed when
-- the route's function returns (1000; 1011 after an error).
-- @param[opt] opts options:
-- @param[opt] opts.protocol the chosen subprotocol: one of
-- `req.protocols`, or nil for none
-- @param[opt] opts.headers more headers for the 101 response
-- @return a `WebSocket` (field `protocol`: the chosen subprotocol or nil)
-- @raise `DaytonaValidationError` (status_code 400, code EINVAL) when the
-- request is not a valid upgrade request; else like `send`
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

--- Start a server.
-- The server keeps the scheduler alive (`scheduler.run` does not return)
-- until closed: a dtlua script that starts one and returns keeps serving
-- until SIGINT or SIGTERM. A main chunk that fails does not wait for it:
-- dtlua prints the error and cancels the server's tasks.
-- @param opts options:
-- @param[opt] opts.handler `function(req, res)` for every request;
-- required unless `websocket` is given
-- @param[opt] opts.websocket `function(req, ws)`: upgrade every upgrade
-- request and hand the WebSocket to this function
-- @param[opt] opts.protocols list of subprotocols for the `websocket`
-- shortcut, the first the client offered is chosen
-- @param[opt="127.0.0.1"] opts.host a numeric IPv4/IPv6 address
-- @param[opt=0] opts.port the port (0: the OS picks)
-- @param[opt] opts.socket a path: listen on a unix-domain socket there
-- instead (the path must not exist, and is removed by close)
-- @param[opt] opts.fd an inherited descriptor (3 or above) of a bound
-- unix-domain stream socket to listen on instead; whoever bound it keeps
-- its path (dtlocal hands each sandbox's daemon one this way)
-- @param[opt] opts.log `function(message)` for handler errors (default:
-- writes to stderr)
-- @param[opt=1024] opts.connection_limit connections at once
-- @param[opt=60] opts.connection_timeout seconds of inactivity before a
-- connection is dropped
-- @param[opt=10] opts.header_timeout seconds a client has to send a
-- request's line and headers, from the connection's opening (or from the
-- request line of a keep-alive's next request): a client that dribbles
-- them is closed (slowloris); 0 for none
-- @param[opt=30] opts.idle_timeout seconds a keep-alive connection may wait
-- for its next request; 0 for none. Neither timeout touches a request
-- being served (a long upload or download) or a WebSocket
-- @param[opt=128] opts.peer_connection_limit connections at once from one
-- remote address (an IPv6 peer's /64); loopback and unix-socket clients
-- are not counted; 0 for none
-- @param[opt] opts.memory_limit bytes per connection (default 64 KiB):
-- bounds the request line and headers; bigger gets 431
-- @param[opt] opts.body_buffer bytes of request body buffered per request
-- (default 256 KiB)
-- @param[opt] opts.ws_max_message largest WebSocket message (default
-- 64 MiB; bigger messages close with 1009)
-- @param[opt=511] opts.backlog the listen backlog
-- @return a `Server`: `srv.port`, `srv.url` ("http://host:port"; both nil
-- on a unix socket, where `srv.socket` is the path)
-- @raise `DaytonaError` (code EADDRINUSE, EINVAL, ...) when it cannot
-- listen; a plain error on misuse
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
  if opts.fd ~= nil and math.type(opts.fd) ~= "integer" then
    error("bad argument #1 to 'listen' (fd must be an integer)", 2)
  end
  local c, msg, code = core.server.listen{
    host = host, port = opts.port or 0, socket = opts.socket, fd = opts.fd,
    connection_limit = opts.connection_limit, connection_timeout = opts.connection_timeout,
    header_timeout = opts.header_timeout, idle_timeout = opts.idle_timeout,
    peer_connection_limit = opts.peer_connection_limit,
    memory_limit = opts.memory_limit, body_buffer = opts.body_buffer,
    ws_max_message = opts.ws_max_message, backlog = opts.backlog,
  }
  if not c then error(failure(msg, code), 2) end
  local port = not (opts.socket or opts.fd) and c:port() or nil
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

--- The server's figures.
-- @return `{ connections, peak_connections, requests, websockets,
-- total_requests, connection_limit (the limit in force: lowered where the
-- descriptor limit cannot fit it), evicted (waiting connections closed to
-- make room), timed_out (header and idle timeouts), refused (over the
-- per-peer limit), rejected (400 for ambiguous framing) }`
function Server:stats()
  return self._c:stats()
end

--- Stop listening, drop every connection and cancel running handlers.
-- Idempotent; also `local srv <close> = ...`.
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
