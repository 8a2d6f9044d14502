--- A reusable HTTP + WebSocket test server for specs (in this process, on
-- the scheduler), built on daytona.runtime.server.
--
--     local test_server = require "support.test_server"
--     local ts = test_server.start()        -- { url =, port =, close =, server =, dir = }
--     ... requests to ts.url .. "/echo" from a task ...
--     ts.close()                            -- also in teardown, with helper.cleanup()
--
-- The server runs as scheduler tasks, so the spec's client must run on the
-- same scheduler (inside helper.run or another task): a blocking call such
-- as io.popen would stall the server with it. For a server in its own
-- process: `lua5.4 spec/support/test_server.lua [port]` from the repository
-- root prints "port N" and serves until killed.
--
-- Routes (any method unless said otherwise):
--   /echo                 JSON { method, path, query, args, headers, body_len,
--                         body_sha256 } (body up to 64 MiB; bigger gets 413)
--   /status/<n>           responds with status n (200..599), body "status n\n"
--   /redirect/<n>         302 to /redirect/<n-1>, and /redirect/1 to /echo
--   /slow?ms=N            responds JSON { slept = N } after N ms (N <= 60000)
--   /bytes?n=N            N bytes streamed from Lua chunks, Content-Length set;
--                         byte i of the body is i % 256; &chunked=1 for no
--                         Content-Length (chunked transfer encoding)
--   /file?path=P          the file P streamed from disk (404 if missing)
--   /upload               the body streamed to a temp file in C; JSON { size, sha256 }
--   /multipart            multipart/form-data parsed streaming; JSON list of
--                         parts { name, filename, size, sha256 }; 400 if malformed
--   /ws/echo              WebSocket echo of text and binary messages; selects
--                         the "echo" subprotocol if the client offers it
--   /ws/close?code=N&reason=R   WebSocket closed by the server with that code
--   /ws/drop              WebSocket whose TCP connection is dropped (RST)
--                         after the first message
local modname = ...
local is_main = type(modname) ~= "string" or not modname:find("test_server", 1, true)
if is_main then
  package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;spec/?/init.lua;" .. package.path
  package.cpath = (os.getenv("DTLUA_BUILD") or "build") .. "/lib/lua/5.4/?.so;" .. package.cpath
end

local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local server = require "daytona.runtime.server"
local multipart = require "daytona.runtime.multipart"
local helper = require "support.helper"
local cjson = require "cjson"

local M = {}

local BLOCK = (function()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return string.rep(table.concat(t), 256)   -- 64 KiB; the pattern repeats every 256 bytes
end)()

local TEXT = { ["content-type"] = "text/plain" }

local function bytes_route(req, res)
  local n = tonumber(req.args.n)
  if not n or n < 0 or n ~= math.floor(n) then
    return res:send(400, TEXT, "n must be a non-negative integer\n")
  end
  local headers = { ["content-type"] = "application/octet-stream" }
  if req.args.chunked ~= "1" then headers["content-length"] = tostring(n) end
  local left = n
  res:stream(200, headers, function()
    if left == 0 then return nil end
    local k = math.min(left, #BLOCK)
    left = left - k
    return k == #BLOCK and BLOCK or BLOCK:sub(1, k)
  end)
end

local function multipart_route(state, req, res)
  local boundary, why = multipart.boundary(req.headers["content-type"])
  if not boundary then return res:send(400, TEXT, "multipart: " .. why .. "\n") end
  local parts = {}
  local p = multipart.parser(boundary, function(part)
    state.seq = state.seq + 1
    local path = ("%s/part-%d"):format(state.dir, state.seq)
    local f = assert(io.open(path, "wb"))
    local info = { name = part.name or cjson.null, filename = part.filename or cjson.null, size = 0 }
    parts[#parts + 1] = info
    return function(data)
      if data then
        f:write(data)
        info.size = info.size + #data
      else
        f:close()
        info.sha256 = core.util.sha256_file(path)
        os.remove(path)
      end
    end
  end)
  local ok, err = pcall(function()
    for chunk in req:chunks() do p:feed(chunk) end
    p:finish()
  end)
  if not ok then
    if type(err) == "table" and err.status_code == 400 then
      return res:send(400, TEXT, tostring(err.message) .. "\n")
    end
    error(err, 0)
  end
  setmetatable(parts, cjson.array_mt)
  res:json(200, parts)
end

local function ws_route(req, res)
  if not req.websocket then
    return res:send(426, { ["content-type"] = "text/plain", upgrade = "websocket" },
      "WebSocket upgrade required\n")
  end
  local offered = false
  for _, p in ipairs(req.protocols) do if p == "echo" then offered = true end end
  local ws = res:websocket{ protocol = offered and "echo" or nil }
  if req.path == "/ws/echo" then
    while true do
      local data, kind = ws:receive()
      if data == nil then return end
      ws:send(data, kind)
    end
  elseif req.path == "/ws/close" then
    local code = tonumber(req.args.code) or 1000
    ws:close(code, req.args.reason)
    -- let the handshake finish (the peer answers, or 5 s pass)
    while ws:receive() do end
  else  -- /ws/drop
    ws:receive()
    ws:abort()
  end
end

local function handler(state, req, res)
  local path = req.path
  if path == "/echo" then
    local body = req:body(64 * 1024 * 1024)
    return res:json(200, {
      method = req.method, path = path, query = req.query, args = req.args,
      headers = req.headers, body_len = #body, body_sha256 = core.util.sha256(body),
    })
  end
  local n = path:match("^/status/(%d+)$")
  if n then
    n = tonumber(n)
    if n < 200 or n > 599 then return res:send(400, TEXT, "status must be in [200, 599]\n") end
    return res:send(n, TEXT, ("status %d\n"):format(n))
  end
  n = path:match("^/redirect/(%d+)$")
  if n then
    n = tonumber(n)
    local to = n <= 1 and "/echo" or ("/redirect/%d"):format(n - 1)
    return res:send(302, { location = to, ["content-type"] = "text/plain" }, "see " .. to .. "\n")
  end
  if path == "/slow" then
    local ms = math.min(math.max(tonumber(req.args.ms) or 0, 0), 60000)
    scheduler.sleep(ms / 1000)
    return res:json(200, { slept = ms })
  end
  if path == "/bytes" then return bytes_route(req, res) end
  if path == "/file" then
    local p = req.args.path
    if not p or p == "" then return res:send(400, TEXT, "path required\n") end
    local ok, err = pcall(res.file, res, 200, { ["content-type"] = "application/octet-stream" }, p)
    if not ok then
      local code = type(err) == "table" and err.code
      return res:send((code == "ENOENT" or code == "EISDIR") and 404 or 500, TEXT,
        tostring(err) .. "\n")
    end
    return
  end
  if path == "/upload" then
    state.seq = state.seq + 1
    local tmp = ("%s/upload-%d"):format(state.dir, state.seq)
    local ok, err = pcall(req.save, req, tmp)
    if not ok then os.remove(tmp); error(err, 0) end
    local sha, size = core.util.sha256_file(tmp)
    os.remove(tmp)
    return res:json(200, { size = size, sha256 = sha })
  end
  if path == "/multipart" then return multipart_route(state, req, res) end
  if path == "/ws/echo" or path == "/ws/close" or path == "/ws/drop" then
    return ws_route(req, res)
  end
  res:send(404, TEXT, "no route for " .. path .. "\n")
end

--- Start the server on 127.0.0.1 and a free port.
-- opts: host, port (or socket, a unix-socket path: url and port are then
-- nil), log, and any other server.listen option.
-- Returns { url, port, close, server, dir }.
function M.start(opts)
  opts = opts or {}
  local state = { dir = opts.dir or helper.tmpdir(), seq = 0 }
  local lopts = {}
  for k, v in pairs(opts) do lopts[k] = v end
  lopts.dir = nil
  lopts.host = opts.host or "127.0.0.1"
  lopts.port = opts.port or 0
  lopts.handler = function(req, res) return handler(state, req, res) end
  local srv = server.listen(lopts)
  return {
    url = srv.url,
    port = srv.port,
    server = srv,
    dir = state.dir,
    close = function() srv:close() end,
  }
end

if is_main then
  local port = tonumber(arg and arg[1]) or 0
  local ok, err = scheduler.run(function()
    local ts = M.start{ port = port }
    io.stdout:write("port ", ts.port, "\n")
    io.stdout:flush()
  end)
  helper.cleanup()
  if not ok and err ~= "interrupted" then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
end

return M
