--- dtlocal.control.proxy: forwarding to a sandbox's toolbox daemon and to the
-- servers a sandbox runs (preview links).
--
-- `forward(ctx, url, opts)` streams both ways with constant memory, and
-- without Lua in the data path: the upstream transfer takes the request
-- body straight from the server request (`body_from`) and puts the
-- response body straight into the server response (`response_to`), moved
-- in C between their bounded buffers, each side pausing the other when it
-- is slow (the core's splice). Lua only sets it up, passes the status and
-- headers, and ends or cuts the response. Status and end-to-end headers
-- pass through; hop-by-hop headers and our credentials do not (protocol
-- doc/protocol.md §2.2: the proxy never forwards the API key into the sandbox).
--
-- WebSocket routes are relayed message by message: the upstream WebSocket
-- is opened first with the subprotocols the client offered, and the client
-- is then answered with the one the daemon selected; text/binary kinds,
-- close codes and close reasons go through unchanged.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local dtlocal_http = require "dtlocal.http"

local type, pairs, tostring, tonumber, pcall, error, string, math =
  type, pairs, tostring, tonumber, pcall, error, string, math
local format = string.format
local raise = dtlocal_http.raise

local M = {}

M.CONNECT_TIMEOUT = 10

-- Request headers not forwarded: hop-by-hop ones (RFC 9110 §7.6.1), the
-- ones the upstream transfer sets itself, our credentials, and the mark of
-- dtlocal's own requests to a daemon (M.INTERNAL_HEADER).
M.INTERNAL_HEADER = "x-dtlocal-internal"
local DROP_REQUEST = {
  [M.INTERNAL_HEADER] = true,
  connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true,
  trailer = true, ["transfer-encoding"] = true, upgrade = true, host = true,
  ["content-length"] = true, expect = true, ["proxy-authorization"] = true,
  authorization = true, ["x-daytona-preview-token"] = true,
  ["sec-websocket-key"] = true, ["sec-websocket-version"] = true,
  ["sec-websocket-extensions"] = true, ["sec-websocket-protocol"] = true,
}

-- Response headers not passed back: hop-by-hop ones; the length is set
-- again from the upstream's.
local DROP_RESPONSE = {
  connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true,
  trailer = true, ["transfer-encoding"] = true, upgrade = true, ["content-length"] = true,
  date = true, server = true,
}

local function header_case(name)
  return (name:gsub("^%l", string.upper):gsub("%-%l", string.upper))
end

-- Headers also named in a request's Connection header are hop-by-hop too.
local function connection_tokens(h)
  local t = {}
  for tok in (h or ""):gmatch("[^,%s]+") do t[tok:lower()] = true end
  return t
end

--- The request headers to send upstream (a { Name = value } table).
function M.upstream_headers(headers, extra, websocket)
  -- no 100-continue round trip on big uploads (curl's false = "do not add")
  local out = websocket and {} or { Expect = false }
  local conn = connection_tokens(headers.connection)
  for k, v in pairs(headers) do
    if not DROP_REQUEST[k] and not conn[k] then out[header_case(k)] = v end
  end
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

-- Whether the request carries a body, and its size when declared.
local function request_body(headers)
  local cl = headers["content-length"]
  if cl then
    local n = math.tointeger(tonumber(cl))
    if not n or n < 0 then raise(400, "invalid Content-Length header") end
    return n > 0, n
  end
  if headers["transfer-encoding"] then return true, nil end
  return false, nil
end

--- Forward the request of ctx (a dtlocal.http context) to `url` (an absolute
-- http URL of the upstream, path and query included). opts.headers are
-- added to the upstream request; opts.unix_socket connects to that socket
-- instead of the URL's host (the URL then only names the path). Answers the client itself; returns the
-- status sent (for the log). Raises HttpError 502 when the upstream cannot
-- be reached before anything was sent.
function M.forward(ctx, url, opts)
  opts = opts or {}
  local http = require "daytona.runtime.http"
  local req = ctx.req:core()   -- spliced to and from in C
  local has_body, size = request_body(ctx.headers)
  local up, umsg = http.stream {
    url = url,
    -- the daemon's unix socket, when it listens on one (dtlocal.control.runner)
    unix_socket = opts.unix_socket,
    peer_uids = opts.peer_uids,   -- the sandbox's uids: nobody else's socket
    method = ctx.method,
    headers = M.upstream_headers(ctx.headers, opts.headers),
    body_from = has_body and req or nil,
    body_size = has_body and size or nil,
    response_to = req,
    connect_timeout = M.CONNECT_TIMEOUT,
    follow_redirects = false,
  }
  if not up then raise(502, format("%s: %s", opts.what or "upstream", umsg), "BAD_GATEWAY") end
  local stream <close> = up
  local headers = {}
  for k, v in pairs(stream.headers or {}) do
    if not DROP_RESPONSE[k] then headers[header_case(k)] = v end
  end
  if opts.rewrite_location and headers.Location then
    headers.Location = opts.rewrite_location(headers.Location)
  end
  local status = stream.status
  local clen = stream.headers and stream.headers["content-length"]
  if clen then headers["Content-Length"] = clen end
  local rok = pcall(ctx.stream, ctx, status, headers)
  if not rok then return status end
  -- the body now flows into the response by itself
  if not stream:wait_spliced() then
    -- the upstream broke off mid-body, or the client left: the client must
    -- see a cut, not an end
    ctx.res:abort()
    return status
  end
  if not pcall(ctx.res.finish, ctx.res) then ctx.res:abort() end
  return status
end

---------------------------------------------------------------------------
-- WebSockets
---------------------------------------------------------------------------

local function parse_protocols(header)
  local list = {}
  for tok in (header or ""):gmatch("[^,]+") do
    tok = tok:match("^%s*(.-)%s*$")
    if tok ~= "" then list[#list + 1] = tok end
  end
  return list
end

--- Whether this core can relay WebSockets (it needs the WebSocket client).
function M.websocket_available()
  local ok, ws = pcall(require, "daytona.runtime.websocket")
  return ok and type(ws) == "table" and type(ws.connect) == "function"
end

-- Pump messages from `from` to `to` until `from` closes; returns the close
-- code and reason it ended with.
local function pump(from_recv, to_send)
  while true do
    local data, kind, code, reason = from_recv()
    if data == nil then return code, reason end
    if not to_send(data, kind) then return nil end
  end
end

--- Relay a WebSocket request of ctx to the upstream `url` (ws://...).
-- opts.on_open / opts.on_close are called around the relay (activity).
function M.websocket(ctx, url, opts)
  opts = opts or {}
  if not M.websocket_available() then
    raise(501, "relaying WebSockets needs the core's WebSocket client "
      .. "(daytona.runtime.websocket), which this build does not have yet", "NOT_IMPLEMENTED")
  end
  local websocket = require "daytona.runtime.websocket"
  local offered = parse_protocols(ctx.headers["sec-websocket-protocol"])
  local up, umsg, _, refused = websocket.connect(url, {
    unix_socket = opts.unix_socket, peer_uids = opts.peer_uids,
    protocols = #offered > 0 and offered or nil,
    headers = M.upstream_headers(ctx.headers, opts.headers, true),
    timeout = M.CONNECT_TIMEOUT,
    ping_interval = 0,   -- the client's own pings pass through as its traffic
  })
  if not up then
    -- the daemon refused the upgrade: pass its answer on when there is one
    local st = refused and refused.status
    if st and st >= 400 then raise(st, umsg, "EHANDSHAKE") end
    raise(502, format("%s: %s", opts.what or "upstream", umsg), "BAD_GATEWAY")
  end
  local uok, client = pcall(ctx.upgrade, ctx, up.protocol)
  if not uok then
    up:close(1011, "client upgrade failed")
    error(client, 0)
  end
  -- relayed with the core's non-blocking calls, waiting on it with the rest
  local ws = client:core()
  if opts.on_open then opts.on_open() end
  local function client_recv()
    while true do
      local data, kind, code, reason = ws:receive()
      if data == nil then return nil, nil, code, reason end
      -- "" with no kind: nothing yet; "" with a kind: an empty message
      if data ~= "" or kind then return data, kind end
      scheduler.wait(ws)
    end
  end
  local function client_send(data, kind)
    while true do
      local sok = ws:send(data, kind)
      if sok then return true end
      if sok == nil then return false end
      scheduler.wait(ws)
    end
  end
  local function up_recv()
    local data, kind, code, reason = up:receive()
    if data == nil then
      if type(code) ~= "number" then error(kind, 0) end   -- a failure, not a close
      return nil, nil, code, reason
    end
    return data, kind
  end
  local function up_send(data, kind)
    local ok, sent = pcall(up.send, up, data, kind)
    return ok and sent == true
  end
  -- A close code that may be sent on (1005/1006 only describe what
  -- happened; they are not sent in a frame): the other side gets the same
  -- code and reason, or 1011 when its peer broke off.
  local function sendable(code)
    if code and code >= 1000 and code <= 4999 and code ~= 1004 and code ~= 1005
      and code ~= 1006 and code ~= 1015 then
      return code
    end
    return nil
  end
  local function direction(recv, send, close_other)
    return scheduler.spawn(function()
      local ok, code, reason = pcall(pump, recv, send)
      if not ok then
        if errors.is(code, errors.CancelledError) then error(code, 0) end
        code, reason = 1011, "peer connection lost"
      end
      local c = sendable(code)
      pcall(close_other, c or (code == 1005 and 1000 or 1011), c and reason or "")
    end)
  end
  local to_client = direction(up_recv, client_send, function(c, r) ws:close(c, r) end)
  local to_up = direction(client_recv, up_send, function(c, r) up:close(c, r, 2) end)
  to_client.observed, to_up.observed = true, true
  local rok, rerr = pcall(function()
    while not (to_client:done() and to_up:done()) do
      scheduler.wait(to_client, to_up)
      -- once one side has closed, the other gets a short while to follow
      if to_client:done() ~= to_up:done() then
        local t <close> = core.timer(5000)
        while not (to_client:done() and to_up:done()) and not t:done() do
          scheduler.wait(to_client, to_up, t)
        end
        break
      end
    end
  end)
  to_client:cancel()
  to_up:cancel()
  pcall(up.close, up)
  if opts.on_close then opts.on_close() end
  if not rok then error(rerr, 0) end
  return 101
end

return M
