-- The server's defences against clients that hold connections without
-- using them, and its strictness about request framing: idle connections
-- past the limit, a slowloris, request smuggling (two Content-Lengths,
-- Content-Length with Transfer-Encoding), a malformed Content-Length; and
-- that the timeouts spare what is making progress (a slow but steady
-- upload and download, an open WebSocket). The clients are raw sockets in a
-- child process (spec/support/raw_http.py), so the in-process server keeps
-- serving while they run.
local helper = require "support.helper"
local scheduler = require "daytona.runtime.scheduler"
local server = require "daytona.runtime.server"
local process = require "daytona.runtime.process"
local cjson = require "cjson"

-- Children run without the sanitizer runtime `make asan` preloads into us.
local ENV = helper.child_env()

local RAW = "spec/support/raw_http.py"

local function raw(port, args, input)
  local argv = { "python3", RAW, tostring(port) }
  for _, a in ipairs(args) do argv[#argv + 1] = tostring(a) end
  local r = process.run(argv, { env = ENV, input = input or "", timeout = 60 })
  local ok, res = pcall(cjson.decode, r.stdout)
  assert(ok, "raw_http.py said: " .. r.stdout .. r.stderr)
  return res
end

-- the status lines in what came back
local function statuses(data)
  local list = {}
  for s in data:gmatch("HTTP/1%.1 (%d%d%d) ") do list[#list + 1] = tonumber(s) end
  return list
end

-- A tiny server: /hello, /upload (counts the body), /slowdl?n=N (N chunks,
-- 0.25 s apart), /ws (echo); `seen` lists every path a handler got.
local function start(opts)
  local seen = {}
  opts = opts or {}
  opts.log = function() end
  opts.handler = function(req, res)
    seen[#seen + 1] = req.path
    if req.path == "/upload" then
      local n = 0
      for chunk in req:chunks() do n = n + #chunk end
      return res:send(200, { ["content-type"] = "text/plain" }, tostring(n))
    elseif req.path == "/slowdl" then
      local left = tonumber(req.args.n) or 10
      return res:stream(200, { ["content-length"] = tostring(left * 1000) }, function()
        if left == 0 then return nil end
        left = left - 1
        scheduler.sleep(0.25)
        return string.rep("d", 1000)
      end)
    end
    res:send(200, { ["content-type"] = "text/plain" }, "hi")
  end
  local srv = server.listen(opts)
  return srv, seen
end

describe("core.server limits", function()
  teardown(function() helper.cleanup() end)

  it("serves a real client within 2 s while 1,100 idle connections are open", function()
    helper.run(function()
      local srv = start()
      local p = process.spawn({ "python3", RAW, tostring(srv.port), "flood", "1100" },
        { env = ENV })
      local lines = p:lines("stdout", 30)
      assert.are.equal("open 1100", lines())
      -- let the server take what it will of them
      helper.eventually(function() return srv:stats().peak_connections >= 950 end, 20)
      local last, same = -1, 0
      helper.eventually(function()
        local n = srv:stats().connections
        if n == last then same = same + 1 else same, last = 0, n end
        return same >= 5
      end, 20, 0.1)
      local s = srv:stats()
      assert.is_true(s.connections >= 900, "connections " .. s.connections)
      p:write("go\n")
      local res = cjson.decode(lines())
      p:close_stdin()
      p:wait(20)
      p:close()
      assert.are.equal(200, res.status, "the real client got no answer")
      assert.is_true(res.elapsed < 2, ("answered after %.2f s"):format(res.elapsed))
      s = srv:stats()
      assert.is_true(s.evicted > 0, "evicted " .. tostring(s.evicted))
      srv:close()
    end)
  end)

  it("closes a slowloris client after the header timeout", function()
    helper.run(function()
      local srv = start{ header_timeout = 2 }
      local r = raw(srv.port, { "slowloris", 0.2, 10 })
      assert.is_true(r.closed, "still open after " .. r.elapsed .. " s")
      assert.is_true(r.elapsed > 1.5 and r.elapsed < 4, ("closed after %.2f s"):format(r.elapsed))
      assert.is_true(srv:stats().timed_out >= 1)
      srv:close()
    end)
  end)

  it("closes an idle keep-alive connection after the idle timeout", function()
    helper.run(function()
      local srv = start{ idle_timeout = 1 }
      local r = raw(srv.port, { "raw", 5 }, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.same({ 200 }, statuses(r.data))
      assert.is_true(r.closed, "still open")
      assert.is_true(r.elapsed > 0.5 and r.elapsed < 3, ("closed after %.2f s"):format(r.elapsed))
      srv:close()
    end)
  end)

  it("answers a request line or header block beyond the pool with 414 or 431, never a reset", function()
    -- MHD answers and closes while the client is still sending: a close
    -- with unread input resets the connection, and the client lost the
    -- answer (ECONNRESET). The server drains such a connection first.
    local http = require "daytona.runtime.http"
    helper.run(function()
      local srv = start()
      for _, n in ipairs { 70000, 150000, 500000 } do
        local h = {}
        for j = 1, n // 110 do h["X-H" .. j] = ("v"):rep(100) end
        for _ = 1, 5 do
          local r, msg, code = http.request{ url = srv.url .. "/hello?x=" .. ("a"):rep(n), timeout = 10 }
          assert.is_not_nil(r, ("a %d-byte target: %s (%s)"):format(n, tostring(msg), tostring(code)))
          assert.are.equal(414, r.status)
          r, msg, code = http.request{ url = srv.url .. "/hello", headers = h, timeout = 10 }
          assert.is_not_nil(r, ("%d bytes of headers: %s (%s)"):format(n, tostring(msg), tostring(code)))
          assert.are.equal(431, r.status)
        end
      end
      srv:close()
    end)
  end)

  it("drains a refused client for a bounded time and amount only", function()
    helper.run(function()
      local srv = start()
      local r = raw(srv.port, { "endless", 20 })
      assert.are.equal(431, r.status)
      assert.is_true(r.closed, ("still open after %.2f s, %d bytes"):format(r.elapsed, r.sent))
      -- 3 s or 4 MiB of draining (server.c, LINGER_MS, LINGER_BYTES), and the pool before it
      assert.is_true(r.elapsed < 8, ("closed after %.2f s"):format(r.elapsed))
      assert.is_true(r.sent < 6 * 1024 * 1024, ("took %d bytes"):format(r.sent))
      -- and it still serves
      local ok = raw(srv.port, { "raw", 5 }, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.are.same({ 200 }, statuses(ok.data))
      srv:close()
    end)
  end)

  it("answers a smuggling attempt with 400 and closes before the handler sees it", function()
    helper.run(function()
      local srv, seen = start()
      local smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
      local attempts = {
        -- two different Content-Lengths: MHD takes the first
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: " .. #smuggled ..
          "\r\n\r\n" .. smuggled,
        -- Content-Length and Transfer-Encoding: MHD reads chunked
        "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: " .. (5 + #smuggled) ..
          "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" .. smuggled,
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" ..
          "0\r\n\r\n" .. smuggled,
        -- a transfer coding other than chunked: no way to find the body's end
        "POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" .. smuggled,
        "POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" ..
          "0\r\n\r\n" .. smuggled,
      }
      for i, req in ipairs(attempts) do
        local r = raw(srv.port, { "raw", 5 }, req)
        assert.are.same({ 400 }, statuses(r.data), "attempt " .. i .. ": " .. r.data)
        assert.truthy(r.data:lower():find("\r\nconnection: close\r\n", 1, true), "attempt " .. i)
        assert.is_true(r.closed, "attempt " .. i .. ": connection left open")
      end
      assert.are.same({}, seen)
      -- the same value twice is one length, as RFC 9112 allows
      local r = raw(srv.port, { "raw", 5 },
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n" ..
        "Connection: close\r\n\r\nabc")
      assert.are.same({ 200 }, statuses(r.data))
      assert.are.equal("3", r.data:match("\r\n\r\n(.*)$"))
      srv:close()
    end)
  end)

  it("answers a malformed Content-Length with exactly one 400", function()
    helper.run(function()
      local srv, seen = start()
      for _, v in ipairs({ "-5", "5x", "+5", "0x10", "" }) do
        local r = raw(srv.port, { "raw", 5 },
          "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: " .. v .. "\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")
        assert.are.same({ 400 }, statuses(r.data), "Content-Length: " .. v .. ": " .. r.data)
        assert.is_true(r.closed, "Content-Length: " .. v .. ": connection left open")
      end
      assert.are.same({}, seen)
      srv:close()
    end)
  end)

  it("does not cut a slow but steady upload, download or an idle WebSocket", function()
    helper.run(function()
      local srv = server.listen{
        header_timeout = 1, idle_timeout = 1, connection_timeout = 2, log = function() end,
        handler = function(req, res)
          if req.path == "/upload" then
            local n = 0
            for chunk in req:chunks() do n = n + #chunk end
            return res:send(200, { ["content-type"] = "text/plain" }, tostring(n))
          end
          local left = 14
          res:stream(200, { ["content-length"] = tostring(left * 1000) }, function()
            if left == 0 then return nil end
            left = left - 1
            scheduler.sleep(0.25)
            return string.rep("d", 1000)
          end)
        end,
        websocket = function(_, ws)
          while true do
            local data, kind = ws:receive()
            if not data then return end
            ws:send(data, kind)
          end
        end,
      }
      local up, down, ws
      local tasks = {
        scheduler.spawn(function() up = raw(srv.port, { "slowupload", 16000, 1000, 0.25 }) end),
        scheduler.spawn(function() down = raw(srv.port, { "slowdownload", "/slowdl" }) end),
        scheduler.spawn(function() ws = raw(srv.port, { "wsidle", 3.5 }) end),
      }
      for _, t in ipairs(tasks) do t:wait() end
      assert.is_false(up.cut, "upload cut after " .. up.elapsed .. " s")
      assert.are.equal(200, up.status)
      assert.are.equal("16000", up.body)
      assert.is_true(up.elapsed > 3)
      assert.is_true(down.complete, ("download: %d bytes in %.2f s"):format(down.bytes, down.elapsed))
      assert.are.equal(14000, down.bytes)
      assert.are.equal("still here", ws.echo)
      srv:close()
    end)
  end)
end)
