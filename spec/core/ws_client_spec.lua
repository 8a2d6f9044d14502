-- The WebSocket client: core.ws (libwebsockets on the core's libuv loop)
-- and the daytona.runtime.websocket wrapper.
--
-- Peers: support/test_server.lua (/ws/echo, /ws/close, /ws/drop), a few more
-- routes served here by daytona.runtime.server (request headers, floods,
-- refused upgrades, a server that never answers, what the server received),
-- both in this process on the same loop; and, for TLS, which those lack,
-- support/wss_echo_server.js (node built-ins only) in a child process.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local server = require "daytona.runtime.server"
local websocket = require "daytona.runtime.websocket"
local helper = require "support.helper"
local test_server = require "support.test_server"
local cjson = require "cjson"

local MiB = 1024 * 1024

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Wait until ws has left "connecting".
local function opened(ws)
  while ws:state() == "connecting" do scheduler.wait(ws) end
  return ws:state()
end

-- Wait for the next result of a core WebSocket's receive().
local function recv(ws)
  while true do
    local a, b, c, d = ws:receive()
    if a ~= false then return a, b, c, d end
    scheduler.wait(ws)
  end
end

-- Routes test_server.lua does not have; `seen[id]` collects what a
-- /ws/record?id= connection received, as lines.
local function extra_handler(seen)
  return function(req, res)
    if req.path == "/ws/reject" then
      return res:send(tonumber(req.args.status) or 403, { ["content-type"] = "text/plain" }, "refused\n")
    end
    if not req.websocket then return res:send(404, { ["content-type"] = "text/plain" }, "no\n") end
    if req.path == "/ws/hang" then   -- never answers the upgrade
      scheduler.sleep(60)
      return res:send(503)
    end
    local offered
    for _, p in ipairs(req.protocols) do if p == "echo" then offered = p end end
    local rh   -- resp_kb=N: N KiB of headers in the 101 answer
    if req.args.resp_kb then
      rh = {}
      for i = 1, tonumber(req.args.resp_kb) * 1024 // 100 do rh["X-Resp-" .. i] = ("r"):rep(90) end
    end
    local ws = res:websocket{ protocol = offered, headers = rh }
    if req.path == "/ws/headers" then
      ws:send(cjson.encode{ headers = req.headers, protocol = ws.protocol or "", target = req.target })
    elseif req.path == "/ws/flood" then
      for i = 1, tonumber(req.args.n) do ws:send("m" .. i) end
    elseif req.path == "/ws/record" then
      local log = {}
      seen[req.args.id] = log
      while true do
        local data, kind, reason = ws:receive()
        if data == nil then
          log[#log + 1] = ("close %s %s"):format(kind, reason or "")
          return
        end
        log[#log + 1] = ("message %d %s"):format(#data, kind)
      end
    end
    while ws:receive() do end   -- until the client closes
  end
end

-- Make a CA and a certificate for "localhost" signed by it, with openssl.
local function make_certs(dir)
  local function run(cmd)
    assert(os.execute("cd " .. sh_quote(dir) .. " && " .. cmd .. " >/dev/null 2>&1"), "failed: " .. cmd)
  end
  run("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=dtlua spec CA'")
  run("openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj '/CN=localhost'")
  run("printf 'subjectAltName=DNS:localhost\\n' > ext.cnf && openssl x509 -req -in srv.csr -CA ca.pem "
    .. "-CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext.cnf")
  return dir .. "/ca.pem", dir .. "/srv.pem", dir .. "/srv.key"
end

-- Start wss_echo_server.js; returns { port, close }.
local function start_tls_server(cert, key)
  local dir = helper.tmpdir()
  local portfile = dir .. "/port"
  local proc = assert(io.popen(("exec node spec/support/wss_echo_server.js %s %s > %s")
    :format(sh_quote(cert), sh_quote(key), sh_quote(portfile)), "w"))   -- closing stdin stops it
  local port = helper.eventually(function()
    local f = io.open(portfile)
    local p = f and f:read("n")
    if f then f:close() end
    return p
  end, 10)
  return { port = port, close = function() proc:close() end }
end

-- A port nothing listens on: one the OS handed to a server now closed.
local function closed_port()
  local s = test_server.start()
  local port = s.port
  s.close()
  return port
end

describe("websocket client", function()
  local ts, base, extra, xbase, seen

  setup(function()
    ts = test_server.start()
    base = "ws://127.0.0.1:" .. ts.port
    seen = {}
    extra = server.listen{ port = 0, handler = extra_handler(seen), log = function() end }
    xbase = "ws://127.0.0.1:" .. extra.port
  end)

  teardown(function()
    if ts then ts.close() end
    if extra then extra:close() end
    helper.cleanup()
  end)

  describe("core.ws", function()
    it("opens, selects the offered subprotocol and echoes text and binary", function()
      helper.run(function()
        local ws <close> = core.ws.connect{ url = base .. "/ws/echo", protocols = { "foo", "echo" } }
        assert.are.equal("connecting", ws:state())
        assert.are.equal("open", opened(ws))
        assert.are.equal("echo", ws:protocol())
        assert.are.equal(101, ws:http_status())
        assert.is_true(ws:send("héllo"))
        assert.are.same({ "héllo", "text" }, { recv(ws) })
        assert.is_true(ws:send("\0\1\2\255", "binary"))
        assert.are.same({ "\0\1\2\255", "binary" }, { recv(ws) })
        assert.is_true(ws:send(""))
        assert.are.same({ "", "text" }, { recv(ws) })
        assert.is_false(ws:receive())   -- nothing more yet
      end)
    end)

    it("has no subprotocol when none was offered", function()
      helper.run(function()
        local ws <close> = core.ws.connect{ url = base .. "/ws/echo" }
        assert.are.equal("open", opened(ws))
        assert.is_nil(ws:protocol())
      end)
    end)

    it("sends the Authorization and custom headers and the offered subprotocols", function()
      helper.run(function()
        local ws <close> = core.ws.connect{
          url = xbase .. "/ws/headers?x=1#frag",
          headers = { Authorization = "Bearer tok-123", ["X-Trace"] = "abc", ["X-Num"] = 7,
                      Origin = "https://example.test" },
          protocols = { "foo", "echo" },
        }
        assert.are.equal("open", opened(ws))
        local got = cjson.decode((recv(ws)))
        assert.are.equal("Bearer tok-123", got.headers.authorization)
        assert.are.equal("abc", got.headers["x-trace"])
        assert.are.equal("7", got.headers["x-num"])
        assert.are.equal("https://example.test", got.headers.origin)
        assert.are.equal("foo,echo", got.headers["sec-websocket-protocol"])
        assert.are.equal("127.0.0.1:" .. extra.port, got.headers.host)
        assert.are.equal("/ws/headers?x=1", got.target)
        assert.are.equal("echo", got.protocol)
        assert.are.equal("echo", ws:protocol())
      end)
    end)

    it("opens handshakes of 6 and 12 KiB either way, refuses one over the limit naming it", function()
      -- lws 4.1's header buffers are 4 KiB by default: these failed with
      -- "request headers too large", or ECONNREFUSED for a long URL
      helper.run(function()
        for _, kb in ipairs { 6, 12 } do
          local h = {}
          for i = 1, kb * 1024 // 100 do h["X-Big-" .. i] = ("v"):rep(88) end
          local ws <close> = assert(core.ws.connect{ url = xbase .. "/ws/headers?resp_kb=" .. kb, headers = h })
          assert.are.equal("open", opened(ws), tostring((ws:error())))
          local got = cjson.decode((recv(ws)))
          for i = 1, kb * 1024 // 100 do assert.are.equal(("v"):rep(88), got.headers["x-big-" .. i]) end
        end
        -- a URL up to what lws 4.1 writes in its request line
        local q = ("q"):rep(2000)
        local ws <close> = assert(core.ws.connect{ url = xbase .. "/ws/headers?x=" .. q })
        assert.are.equal("open", opened(ws), tostring((ws:error())))
        assert.are.equal("/ws/headers?x=" .. q, cjson.decode((recv(ws))).target)
        -- over the limits: refused at once, saying which
        local h = {}
        for i = 1, 700 do h["X-Big-" .. i] = ("v"):rep(88) end
        local none, msg, code = core.ws.connect{ url = xbase .. "/ws/headers", headers = h }
        assert.is_nil(none)
        assert.are.equal("EINVAL", code)
        assert.matches("64 KiB handshake limit", msg)
        none, msg, code = core.ws.connect{ url = xbase .. "/ws/headers?x=" .. ("q"):rep(3000) }
        assert.is_nil(none)
        assert.are.equal("EINVAL", code)
        assert.matches("over the %d+ bytes libwebsockets", msg)
        -- and through the runtime wrapper
        none, msg, code = websocket.connect(xbase .. "/ws/headers", { headers = h, timeout = 5 })
        assert.is_nil(none)
        assert.are.equal("EINVAL", code)
        assert.matches("64 KiB", msg)
      end)
    end)

    it("echoes a 10 MiB binary message whole", function()
      helper.run(function()
        local ws <close> = core.ws.connect{ url = base .. "/ws/echo" }
        assert.are.equal("open", opened(ws))
        local f = assert(io.open("/dev/urandom", "rb"))
        local big = f:read(10 * MiB)
        f:close()
        assert.is_true(ws:send(big, "binary"))
        local data, kind = recv(ws)
        assert.are.equal("binary", kind)
        assert.are.equal(#big, #data)
        assert.is_true(data == big, "the echoed message differs")
      end)
    end)

    it("surfaces the server's close code and reason", function()
      helper.run(function()
        local ws = core.ws.connect{ url = base .. "/ws/close?code=4001&reason=going%20away" }
        assert.are.same({ nil, "closed", 4001, "going away" }, { recv(ws) })
        while ws:state() ~= "closed" do scheduler.wait(ws) end
        assert.is_nil(ws:error())
        assert.are.same({ nil, "closed", 4001, "going away" }, { ws:receive() })
      end)
    end)

    it("closes with our code and reason after the queued messages", function()
      helper.run(function()
        local ws = core.ws.connect{ url = xbase .. "/ws/record?id=close1" }
        assert.is_true(ws:send(("q"):rep(3 * MiB), "binary"))   -- queued before open
        assert.are.equal("open", opened(ws))
        assert.is_true(ws:send("last"))
        ws:close(4000, "done")
        assert.are.equal("closing", ws:state())
        assert.are.same({ nil, "WebSocket is closed", "ECLOSED" }, { ws:send("late") })
        assert.are.same({ nil, "closed", 4000, "done" }, { recv(ws) })
        while ws:state() ~= "closed" do scheduler.wait(ws) end
        ws:close()   -- idempotent
        helper.eventually(function() return seen.close1 and #seen.close1 == 3 end)
        assert.are.same({ ("message %d binary"):format(3 * MiB), "message 4 text", "close 4000 done" },
          seen.close1)
      end)
    end)

    it("still delivers what the peer sent before answering our close", function()
      helper.run(function()
        local ws = core.ws.connect{ url = base .. "/ws/echo" }
        assert.are.equal("open", opened(ws))
        assert.is_true(ws:send("last"))
        ws:close(4000, "done")
        assert.are.same({ "last", "text" }, { recv(ws) })
        assert.are.same({ nil, "closed", 4000, "done" }, { recv(ws) })
      end)
    end)

    it("reports a server that vanishes mid-stream as ECONNRESET", function()
      helper.run(function()
        local ws = core.ws.connect{ url = base .. "/ws/drop" }
        assert.are.equal("open", opened(ws))
        assert.is_true(ws:send("x"))   -- the server drops the connection after one message
        local a, msg, code = recv(ws)
        assert.is_nil(a)
        assert.are.equal("ECONNRESET", code)
        assert.is_string(msg)
        assert.are.equal("closed", ws:state())
        local ok, _, scode = ws:send("x")
        assert.is_nil(ok)
        assert.are.equal("ECONNRESET", scode)
      end)
    end)

    it("receives many messages in order with reading paused in between", function()
      helper.run(function()
        local n = 20000
        local ws <close> = core.ws.connect{ url = xbase .. "/ws/flood?n=" .. n, recv_buffer = 4096 }
        assert.are.equal("open", opened(ws))
        scheduler.sleep(0.2)   -- not reading: the connection must pause, not buffer it all
        local _, unread = ws:buffered()
        assert.is_true(unread > 0 and unread < 4096, "unread bytes " .. unread)
        for i = 1, n do
          local data = recv(ws)
          if data ~= "m" .. i then error(("message %d: %s"):format(i, tostring(data))) end
          _, unread = ws:buffered()
          assert(unread < 4096)
        end
      end)
    end)

    it("pipelines thousands of messages and refuses sends beyond send_buffer", function()
      helper.run(function()
        local ws <close> = core.ws.connect{ url = base .. "/ws/echo", send_buffer = 64 * 1024 }
        assert.are.equal("open", opened(ws))
        local n, refused = 3000, 0
        local reader = scheduler.spawn(function()
          for i = 1, n do
            local data = recv(ws)
            assert.are.equal(("%d:"):format(i) .. ("p"):rep(1000), data)
          end
        end)
        for i = 1, n do
          local msg = ("%d:"):format(i) .. ("p"):rep(1000)
          while not ws:send(msg, "binary") do
            refused = refused + 1
            assert.is_true(ws:buffered() <= 64 * 1024)
            scheduler.wait(ws)
          end
        end
        reader:wait()
        assert.is_true(refused > 0, "send never reported a full queue")
        assert.are.equal(0, (ws:buffered()))
      end)
    end)

    it("gets pongs for its pings, and pings by itself when idle", function()
      helper.run(function()
        local ws <close> = core.ws.connect{ url = base .. "/ws/echo", ping_interval = 1 }
        assert.are.equal("open", opened(ws))
        assert.is_true(ws:ping("x"))
        while ws:pongs() < 1 do scheduler.wait(ws) end
        scheduler.sleep(1.5)   -- idle past ping_interval: lws pings on its own
        assert.is_true(ws:pongs() >= 2, "pongs: " .. ws:pongs())
        assert.are.equal("open", ws:state())
      end)
    end)

    it("reports connection failures on the object", function()
      helper.run(function()
        local ws = core.ws.connect{ url = "ws://127.0.0.1:" .. closed_port() .. "/" }
        assert.are.equal("closed", opened(ws))
        local msg, code = ws:error()
        assert.are.equal("ECONNREFUSED", code)
        assert.matches("refused", msg)
        assert.are.same({ nil, msg, code }, { ws:receive() })

        local rej = core.ws.connect{ url = xbase .. "/ws/reject?status=403" }
        assert.are.equal("closed", opened(rej))
        assert.are.equal(403, rej:http_status())
        assert.are.equal("EHANDSHAKE", select(2, rej:error()))

        local dns = core.ws.connect{ url = "ws://nonexistent.invalid/" }
        assert.are.equal("closed", opened(dns))
        assert.are.equal("ENOTFOUND", select(2, dns:error()))
      end)
    end)

    it("cancels a connection attempt closed while connecting", function()
      helper.run(function()
        local ws = core.ws.connect{ url = xbase .. "/ws/hang" }
        ws:close()
        assert.are.equal("closed", ws:state())
        assert.are.equal("ECANCELED", select(2, ws:error()))
      end)
    end)

    it("closes the connection when a message exceeds max_message", function()
      helper.run(function()
        local ws = core.ws.connect{ url = base .. "/ws/echo", max_message = 1000 }
        assert.are.equal("open", opened(ws))
        assert.is_true(ws:send(("a"):rep(1001)))
        local a, _, code = recv(ws)
        assert.is_nil(a)
        assert.are.equal("EMSGSIZE", code)
      end)
    end)

    it("raises on misuse", function()
      local function bad(opts, pattern)
        local ok, err = pcall(core.ws.connect, opts)
        assert.is_false(ok)
        assert.matches(pattern, err)
      end
      bad({ url = "http://x/" }, "ws://")
      bad({ url = "ws:///path" }, "no valid host")
      bad({ url = "ws://h:99999/" }, "invalid port")
      bad({ url = "ws://h/a b" }, "spaces")
      bad({ url = "ws://h/", headers = { ["X-A"] = "a\r\nX-B: b" } }, "line break")
      bad({ url = "ws://h/", headers = { ["Bad Name"] = "x" } }, "invalid header name")
      bad({ url = "ws://h/", headers = { Upgrade = "x" } }, "handshake itself")
      bad({ url = "ws://h/", protocols = { "a b" } }, "subprotocol")
      bad({ url = "ws://h/", nope = 1 }, "unknown option")
      bad({ url = "ws://h/", max_message = 0 }, "max_message")
      helper.run(function()
        local ws <close> = core.ws.connect{ url = base .. "/ws/echo" }
        assert.are.equal("open", opened(ws))
        assert.has_error(function() ws:send("\255\254") end)
        assert.has_error(function() ws:send("x", "blob") end)
        assert.has_error(function() ws:close(1005) end)
        assert.has_error(function() ws:close(1000, ("r"):rep(124)) end)
        assert.has_error(function() ws:ping(("p"):rep(126)) end)
      end)
    end)

    it("survives lua_close with connections open, connecting and mid-transfer", function()
      local dir = helper.tmpdir()
      local script = ([[
        package.cpath = %q .. "/lib/lua/5.4/?.so;" .. package.cpath
        package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
        local core = require "daytona.core"
        local scheduler = require "daytona.runtime.scheduler"
        local ts = require("support.test_server").start{ dir = %q }
        local base = "ws://127.0.0.1:" .. ts.port
        local a = core.ws.connect{ url = base .. "/ws/echo" }
        while a:state() == "connecting" do scheduler.wait(a) end
        a:send(("x"):rep(4 * 1024 * 1024), "binary")     -- in flight
        local b = core.ws.connect{ url = base .. "/ws/echo" }   -- connecting
        local c = core.ws.connect{ url = "ws://localhost:1/" }  -- resolving
        scheduler.step(0)
        io.write("exiting\n")
      ]]):format(os.getenv("DTLUA_BUILD") or "build", dir)
      local f = assert(io.open(dir .. "/exit.lua", "w"))
      f:write(script)
      f:close()
      local p = assert(io.popen("lua5.4 " .. sh_quote(dir .. "/exit.lua") .. " 2>&1"))
      local out = p:read("a")
      local ok, how, status = p:close()
      assert.are.equal("exiting\n", out)
      assert.is_true(ok, ("exit: %s %s"):format(how, status))
    end)
  end)

  describe("over TLS", function()
    local tls, ca

    setup(function()
      local cert, key
      ca, cert, key = make_certs(helper.tmpdir())
      tls = start_tls_server(cert, key)
    end)

    teardown(function()
      if tls then tls.close() end
    end)

    it("verifies the server against ca_file and the URL's host name", function()
      helper.run(function()
        local ws <close> = core.ws.connect{ url = "wss://localhost:" .. tls.port .. "/", ca_file = ca,
                                            protocols = { "echo" } }
        assert.are.equal("open", opened(ws))
        assert.are.equal("echo", ws:protocol())
        assert.is_true(ws:send("secret"))
        assert.are.same({ "secret", "text" }, { recv(ws) })

        local wrong = core.ws.connect{ url = "wss://127.0.0.1:" .. tls.port .. "/", ca_file = ca }
        assert.are.equal("closed", opened(wrong))
        local msg, code = wrong:error()
        assert.are.equal("ETLS", code)
        assert.matches("mismatch", msg)
      end)
    end)

    it("refuses an unknown issuer unless insecure", function()
      helper.run(function()
        local ws = core.ws.connect{ url = "wss://localhost:" .. tls.port .. "/" }
        assert.are.equal("closed", opened(ws))
        local msg, code = ws:error()
        assert.are.equal("ETLS", code)
        assert.matches("certificate", msg)
        local ok <close> = core.ws.connect{ url = "wss://localhost:" .. tls.port .. "/", insecure = true }
        assert.are.equal("open", opened(ok))
      end)
    end)

    it("reports an unreadable ca_file", function()
      local ws, msg, code = core.ws.connect{ url = "wss://localhost:1/", ca_file = "/nonexistent/ca.pem" }
      assert.is_nil(ws)
      assert.are.equal("ENOENT", code)
      assert.matches("ca_file", msg)
    end)
  end)

  describe("daytona.runtime.websocket", function()
    it("connects, echoes, and closes with a code", function()
      helper.run(function()
        local ws = websocket.connect(base .. "/ws/echo", {
          headers = { Authorization = "Bearer x" }, protocols = { "echo" }, timeout = 5 })
        assert.are.equal("echo", ws.protocol)
        ws:send("one")
        ws:send("two", "binary")
        assert.are.same({ "one", "text" }, { ws:receive(5) })
        assert.are.same({ "two", "binary" }, { ws:receive(5) })
        assert.are.same({ 4000, "bye" }, { ws:close(4000, "bye") })
        assert.are.equal("closed", ws:state())
        assert.are.same({ nil, "closed", 4000, "bye" }, { ws:receive() })
        local sent, _, code = ws:send("late")
        assert.is_nil(sent)
        assert.are.equal("ECLOSED", code)
      end)
    end)

    it("times out a receive and stays usable", function()
      helper.run(function()
        local ws <close> = websocket.connect(base .. "/ws/echo")
        local t0 = core.now()
        local data, msg, code = ws:receive(0.2)
        assert.is_nil(data)
        assert.is_string(msg)
        assert.are.equal("ETIMEDOUT", code)
        local dt = core.now() - t0
        assert.is_true(dt >= 0.19 and dt < 2, "waited " .. dt)
        ws:send("still here")
        assert.are.same({ "still here", "text" }, { ws:receive(5) })
      end)
    end)

    it("returns the server's close code and reason from receive and messages()", function()
      helper.run(function()
        local ws = websocket.connect(base .. "/ws/close?code=4002&reason=later")
        assert.are.same({ nil, "closed", 4002, "later" }, { ws:receive(5) })
        local ws2 = websocket.connect(xbase .. "/ws/flood?n=50")
        local n = 0
        for data, kind in ws2:messages(5) do
          n = n + 1
          assert.are.equal("m" .. n, data)
          assert.are.equal("text", kind)
          if n == 50 then ws2:close(1000, "enough") end
        end
        assert.are.equal(50, n)
        assert.are.equal(1000, ws2.close_code)
      end)
    end)

    it("delivers messages to an on_message callback task", function()
      helper.run(function()
        local ws = websocket.connect(base .. "/ws/echo")
        local got = {}
        local task = ws:on_message(function(data, kind, w)
          got[#got + 1] = data .. "/" .. kind
          assert.are.equal(ws, w)
          if #got == 3 then w:close(4003, "three") end
        end)
        ws:send("a")
        ws:send("b", "binary")
        ws:send("c")
        assert.are.same({ 4003, "three" }, { task:wait() })
        assert.are.same({ "a/text", "b/binary", "c/text" }, got)
      end)
    end)

    it("fails with ECONNRESET (a retryable DaytonaConnectionError for the SDK) when the server vanishes", function()
      helper.run(function()
        local ws = websocket.connect(base .. "/ws/drop")
        ws:send("x")
        local data, msg, code = ws:receive(5)
        assert.is_nil(data)
        assert.are.equal("ECONNRESET", code)
        local err = errors.from_failure(msg, code)
        assert.is_true(errors.is(err, errors.DaytonaConnectionError))
        assert.is_true(err.retryable)
      end)
    end)

    it("fails with codes (and the HTTP status of a refused upgrade) for failed connects", function()
      helper.run(function()
        local ws, msg, code, fields = websocket.connect(xbase .. "/ws/reject?status=401")
        assert.is_nil(ws)
        assert.is_string(msg)
        assert.are.equal("EHANDSHAKE", code)
        assert.are.equal(401, fields.status)

        ws, msg, code, fields = websocket.connect(xbase .. "/ws/reject?status=503")
        assert.are.equal(503, fields.status)

        ws, msg, code, fields = websocket.connect("ws://127.0.0.1:" .. closed_port() .. "/")
        assert.is_nil(ws)
        assert.are.equal("ECONNREFUSED", code)
        assert.is_nil(fields)
        local err = errors.from_failure(msg, code)
        assert.is_true(errors.is(err, errors.DaytonaConnectionError))
        assert.is_true(err.retryable)

        local t0 = core.now()
        ws, msg, code = websocket.connect(xbase .. "/ws/hang", { timeout = 0.3 })
        assert.is_nil(ws)
        assert.are.equal("ETIMEDOUT", code, msg)
        assert.is_true(core.now() - t0 < 2)

        assert.has_error(function() websocket.connect(base, { nope = true }) end)
        assert.has_error(function() websocket.connect("http://x/") end)
      end)
    end)

    it("measures a ping's round trip and sends with back-pressure", function()
      helper.run(function()
        local ws <close> = websocket.connect(base .. "/ws/echo", { send_buffer = 10000 })
        local rtt = ws:ping(5)
        assert.is_true(rtt >= 0 and rtt < 5)
        local reader = scheduler.spawn(function()
          for i = 1, 200 do assert.are.equal(tostring(i) .. ("s"):rep(5000), (ws:receive(5))) end
        end)
        for i = 1, 200 do ws:send(tostring(i) .. ("s"):rep(5000), "binary", 5) end
        reader:wait()
      end)
    end)

    it("closes a WebSocket that is collected without being closed", function()
      helper.run(function()
        local function use_and_forget()
          local ws = websocket.connect(xbase .. "/ws/record?id=gc1")
          ws:send("x")
        end
        use_and_forget()
        collectgarbage()
        collectgarbage()
        helper.eventually(function() return seen.gc1 and #seen.gc1 == 2 end)
        assert.are.same({ "message 1 text", "close 1000 " }, seen.gc1)
      end)
    end)

    it("raises CancelledError when the connecting task is cancelled", function()
      helper.run(function()
        local task = scheduler.spawn(function()
          return websocket.connect(xbase .. "/ws/hang", { timeout = 10 })
        end)
        scheduler.sleep(0.1)
        task:cancel()
        local ok, err = pcall(task.wait, task)
        assert.is_false(ok)
        assert.is_true(errors.is(err, errors.CancelledError))
      end)
    end)

    it("works from the main thread, outside any task", function()
      local ws = websocket.connect(base .. "/ws/echo")
      ws:send("plain")
      assert.are.same({ "plain", "text" }, { ws:receive(5) })
      ws:close()
    end)
  end)
end)
