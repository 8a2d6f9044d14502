-- The HTTP/1.1 + WebSocket server (core.server and daytona.runtime.server),
-- driven from outside by the curl CLI and a raw Node client (net/crypto
-- only: spec/support/ws_client.js), both run as child processes on the
-- loop so the in-process server keeps serving meanwhile.
local helper = require "support.helper"
local test_server = require "support.test_server"
local scheduler = require "daytona.runtime.scheduler"
local server = require "daytona.runtime.server"
local process = require "daytona.runtime.process"
local errors = require "daytona.errors"
local core = require "daytona.core"
local cjson = require "cjson"

-- Children run without the sanitizer runtime `make asan` preloads into us.
local ENV = helper.child_env()

local function run(argv, opts)
  opts = opts or {}
  opts.env = ENV
  opts.timeout = opts.timeout or 60
  return process.run(argv, opts)
end

-- curl with args; returns stdout, and the result table (exit_code, stderr)
local function curl(...)
  local argv = { "curl", "-sS", "--max-time", "60", ... }
  local r = run(argv)
  return r.stdout, r
end

local function node(port, scenario, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(ENV) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local r = process.run({ "node", "spec/support/ws_client.js", tostring(port), scenario },
    { env = env, input = opts.input, timeout = 60 })
  local ok, res = pcall(cjson.decode, r.stdout)
  assert(ok, "ws_client said: " .. r.stdout .. r.stderr)
  return res, r
end

local function pattern(n)
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  local block = table.concat(t)
  return string.rep(block, n // 256) .. block:sub(1, n % 256)
end

local peak_rss_kib, reset_peak_rss = helper.peak_rss_kib, helper.reset_peak_rss

describe("core.server", function()
  local ts, dir
  local logs = {}

  setup(function()
    dir = helper.tmpdir()
    ts = test_server.start{ log = function(m) logs[#logs + 1] = m end }
  end)

  teardown(function()
    if ts then ts.close() end
    helper.cleanup()
  end)

  -- every request and WebSocket has been let go of (no leak in C)
  local function settled()
    helper.eventually(function()
      local s = ts.server:stats()
      return s.requests == 0 and s.websockets == 0
    end, 10)
  end

  it("listens on an ephemeral port and reports listen failures", function()
    helper.run(function()
      assert.is_true(ts.port > 0)
      assert.are.equal("http://127.0.0.1:" .. ts.port, ts.url)
      local ok, err = pcall(server.listen, { port = ts.port, handler = function() end })
      assert.is_false(ok)
      assert.are.equal("EADDRINUSE", err.code)
      ok, err = pcall(server.listen, { host = "not-an-ip", handler = function() end })
      assert.is_false(ok)
      assert.are.equal("EINVAL", err.code)
      assert.has_error(function() server.listen{ port = 0 } end)
      assert.has_error(function() core.server.listen{ port = 70000 } end)
    end)
  end)

  it("passes methods, headers, query and body to the handler", function()
    helper.run(function()
      for _, m in ipairs({ "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }) do
        local out = curl("-X", m, "-H", "X-Custom-Thing: Value 1", "-H", "x-two: a",
          "-H", "X-Two: b", "--data-binary", "payload-" .. m,
          ts.url .. "/echo?a=1&b=x%20y&b=2&empty=&c%5B%5D=%2B+")
        local j = cjson.decode(out)
        assert.are.equal(m, j.method)
        assert.are.equal("/echo", j.path)
        assert.are.equal("a=1&b=x%20y&b=2&empty=&c%5B%5D=%2B+", j.query)
        assert.are.same({ a = "1", b = "x y", empty = "", ["c[]"] = "+ " }, j.args)
        assert.are.equal("Value 1", j.headers["x-custom-thing"])
        assert.are.equal("a, b", j.headers["x-two"])
        assert.are.equal(#("payload-" .. m), j.body_len)
        assert.are.equal(core.util.sha256("payload-" .. m), j.body_sha256)
      end
      -- the path is percent-decoded; the raw target stays available
      local out = curl(ts.url .. "/status/2%30%31")
      assert.are.equal("status 201\n", out)
      -- HEAD: headers only
      local _, r = curl("-I", ts.url .. "/bytes?n=1000")
      assert.are.equal(0, r.exit_code)
      out = curl("-I", ts.url .. "/bytes?n=1000")
      assert.truthy(out:match("^HTTP/1.1 200"))
      assert.truthy(out:lower():find("content-length: 1000", 1, true))
    end)
  end)

  it("sends any status, redirects and 404s", function()
    helper.run(function()
      for _, st in ipairs({ 200, 201, 204, 302, 400, 404, 418, 500, 503, 599 }) do
        local out = curl("-o", "/dev/null", "-w", "%{http_code}", ts.url .. "/status/" .. st)
        assert.are.equal(tostring(st), out)
      end
      local out = curl("-L", "-o", "/dev/null", "-w", "%{http_code} %{num_redirects} %{url_effective}",
        ts.url .. "/redirect/3")
      assert.are.equal("200 3 " .. ts.url .. "/echo", out)
      out = curl("-o", "/dev/null", "-w", "%{http_code}", ts.url .. "/nothing/here")
      assert.are.equal("404", out)
    end)
  end)

  it("keeps a connection alive across requests", function()
    helper.run(function()
      local out, r = curl("-v", ts.url .. "/echo", ts.url .. "/status/201", ts.url .. "/bytes?n=10")
      assert.are.equal(0, r.exit_code)
      assert.truthy(out:find('"method":"GET"', 1, true))
      assert.truthy(out:find("status 201", 1, true))
      local _, reused = r.stderr:gsub("Re%-using existing connection", "")
      assert.are.equal(2, reused)
    end)
  end)

  it("streams a 64 MiB chunked upload to a file in C and through Lua chunks", function()
    helper.run(function()
      local size = 64 * 1024 * 1024
      local src = helper.bigfile(dir, "upload.bin", size)
      local want = core.util.sha256_file(src)
      reset_peak_rss()
      local _, rss0 = peak_rss_kib()
      -- C: req:save streams the body into a file
      local out = curl("-H", "Transfer-Encoding: chunked", "-T", src, ts.url .. "/upload")
      assert.are.same({ size = size, sha256 = want }, cjson.decode(out))
      -- Lua: req:chunks() through the streaming multipart parser
      out = curl("-H", "Transfer-Encoding: chunked", "-F", "field=value",
        "-F", "file=@" .. src .. ";filename=big.bin", ts.url .. "/multipart")
      local parts = cjson.decode(out)
      assert.are.equal(2, #parts)
      assert.are.same({ name = "field", filename = cjson.null, size = 5,
        sha256 = core.util.sha256("value") }, parts[1])
      assert.are.same({ name = "file", filename = "big.bin", size = size, sha256 = want }, parts[2])
      -- the body is bounded in C, so memory stays flat: 64 MiB went through
      -- twice (not under ASan, whose quarantine holds on to freed memory)
      if not (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
        local peak = peak_rss_kib()
        assert.is_true(peak - rss0 < 32 * 1024, ("peak RSS grew by %d KiB"):format(peak - rss0))
      end
    end)
  end)

  it("reads a whole body with req:body and bounds it", function()
    helper.run(function()
      local body = pattern(3 * 1024 * 1024 + 17)
      local f = assert(io.open(dir .. "/body.bin", "wb"))
      f:write(body)
      f:close()
      local j = cjson.decode((curl("--data-binary", "@" .. dir .. "/body.bin", ts.url .. "/echo")))
      assert.are.equal(#body, j.body_len)
      assert.are.equal(core.util.sha256(body), j.body_sha256)
    end)
  end)

  it("downloads files from disk and streams bodies from Lua", function()
    helper.run(function()
      local src = helper.bigfile(dir, "download.bin", 8 * 1024 * 1024 + 3)
      local path = dir .. "/got.bin"
      local _, r = curl("-o", path, ts.url .. "/file?path=" .. src)
      assert.are.equal(0, r.exit_code)
      assert.are.equal(core.util.sha256_file(src), core.util.sha256_file(path))
      assert.are.equal("404", (curl("-o", "/dev/null", "-w", "%{http_code}",
        ts.url .. "/file?path=" .. dir .. "/missing")))
      assert.are.equal("404", (curl("-o", "/dev/null", "-w", "%{http_code}",
        ts.url .. "/file?path=" .. dir)))
      -- Lua chunks with Content-Length, and chunked, read by a slow client
      -- (back-pressure: the handler waits on a full C buffer)
      local n = 3 * 1024 * 1024 + 5
      local want = core.util.sha256(pattern(n))
      for _, q in ipairs({ "", "&chunked=1" }) do
        local out = curl("--limit-rate", "8M", "-o", path, "-D", "-", ts.url .. "/bytes?n=" .. n .. q)
        assert.are.equal(want, (core.util.sha256_file(path)))
        if q == "" then assert.truthy(out:lower():find("content-length: " .. n, 1, true))
        else assert.truthy(out:lower():find("transfer-encoding: chunked", 1, true)) end
      end
    end)
  end)

  it("serves 300 concurrent connections", function()
    helper.run(function()
      local argv = { "-Z", "--parallel-max", "300", "--parallel-immediate" }
      for _ = 1, 300 do
        argv[#argv + 1] = ts.url .. "/slow?ms=400"
        argv[#argv + 1] = "-o"
        argv[#argv + 1] = "/dev/null"
      end
      argv[#argv + 1] = "-w"
      argv[#argv + 1] = "%{http_code}\n"
      local before = ts.server:stats().total_requests
      local t0 = core.now()
      local out = curl(table.unpack(argv))
      local elapsed = core.now() - t0
      local _, ok = out:gsub("200\n", "")
      assert.are.equal(300, ok)
      local s = ts.server:stats()
      assert.are.equal(before + 300, s.total_requests)
      assert.is_true(s.peak_connections >= 300, "peak " .. s.peak_connections)
      assert.is_true(elapsed < 5, ("took %.2f s"):format(elapsed))
      settled()
    end)
  end)

  it("survives malformed requests and abrupt disconnects", function()
    helper.run(function()
      local function raw(input, env)
        env = env or {}
        env.RAW_WAIT_MS = env.RAW_WAIT_MS or "1500"
        return (node(ts.port, "raw", { input = input, env = env }))
      end
      local r = raw("GARBAGE\r\n\r\n")
      assert.truthy(r.status == "" or r.status:match("^HTTP/1.1 4%d%d"), r.status)
      assert.truthy(r.closed)
      r = raw("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 100 * 1024) .. "\r\n\r\n")
      assert.are.equal("HTTP/1.1 431 Request Header Fields Too Large", r.status)
      r = raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
      assert.are.equal("HTTP/1.1 400 Bad Request", r.status)
      r = raw("GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
      assert.are.equal("HTTP/1.1 400 Bad Request", r.status)
      r = raw("\0\1\2\3\255\254 HTTP/1.1\r\n\r\n")
      assert.truthy(r.status == "" or r.status:match("^HTTP/1.1 4%d%d"), r.status)
      -- truncated bodies: the client goes away mid-body, on every body path
      for _, p in ipairs({ "/upload", "/echo", "/multipart" }) do
        raw("POST " .. p .. " HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n" ..
          "Content-Length: 1000000\r\n\r\n--zz\r\n\r\nabcdef", { RAW_DESTROY = "1" })
      end
      -- and mid-response, during a big streamed download and a file download
      raw("GET /bytes?n=1000000000 HTTP/1.1\r\nHost: x\r\n\r\n", { RAW_DESTROY = "1" })
      local src = helper.bigfile(dir, "dl.bin", 4 * 1024 * 1024)
      raw("GET /file?path=" .. src .. " HTTP/1.1\r\nHost: x\r\n\r\n", { RAW_DESTROY = "1" })
      raw("GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n", { RAW_DESTROY = "1" })
      -- curl giving up half way through a download
      local _, cr = curl("--max-time", "0.3", "--limit-rate", "1M", "-o", "/dev/null",
        ts.url .. "/bytes?n=100000000")
      assert.are_not.equal(0, cr.exit_code)
      settled()
      -- still serving
      local j = cjson.decode((curl(ts.url .. "/echo?after=1")))
      assert.are.equal("1", j.args.after)
    end)
  end)

  it("speaks WebSocket to a foreign client", function()
    helper.run(function()
      local res = node(ts.port, "echo")
      assert.is_true(res.ok, res.error)
      assert.are.equal("echo", res.protocol)
      assert.are.equal(6, res.messages)
      assert.are.equal(2, res.pongs)
      res = node(ts.port, "noproto")
      assert.is_true(res.ok, res.error)
      res = node(ts.port, "close")
      assert.is_true(res.ok, res.error)
      assert.are.equal(4001, res.code)
      assert.are.equal("bye", res.reason)
      res = node(ts.port, "drop")
      assert.is_true(res.ok, res.error)
      for scenario, code in pairs({ unmasked = 1002, badopcode = 1002, badutf8 = 1007 }) do
        res = node(ts.port, scenario)
        assert.is_true(res.ok, scenario .. ": " .. tostring(res.error))
        assert.are.equal(code, res.code)
      end
      res = node(ts.port, "garbage")
      assert.is_true(res.ok, res.error)
      -- a plain GET to a WebSocket route is told to upgrade
      assert.are.equal("426", (curl("-o", "/dev/null", "-w", "%{http_code}", ts.url .. "/ws/echo")))
      settled()
      assert.are.equal("1", cjson.decode((curl(ts.url .. "/echo?ws=1"))).args.ws)
    end)
  end)

  it("closes messages over ws_max_message with 1009", function()
    helper.run(function()
      local small = test_server.start{ ws_max_message = 1024 * 1024, log = function() end }
      local res = node(small.port, "toobig")
      small.close()
      assert.is_true(res.ok, res.error)
      assert.are.equal(1009, res.code)
    end)
  end)

  it("listens on a unix-domain socket", function()
    helper.run(function()
      local path = dir .. "/http.sock"
      local us = test_server.start{ socket = path, log = function() end }
      assert.is_nil(us.port)
      local out = curl("--unix-socket", path, "http://localhost/echo?via=unix", "http://localhost/status/201")
      local j = cjson.decode(out:match("^(%b{})"))
      assert.are.equal("unix", j.args.via)
      assert.truthy(out:find("status 201", 1, true))
      local res = node(path, "echo")
      assert.is_true(res.ok, res.error)
      local ok, err = pcall(server.listen, { socket = path, handler = function() end })
      assert.is_false(ok)
      assert.are.equal("EADDRINUSE", err.code)
      us.close()
      assert.is_nil(io.open(path))   -- removed on close
    end)
  end)

  it("enforces the connection limit and the inactivity timeout", function()
    helper.run(function()
      local lim = test_server.start{ connection_limit = 5, connection_timeout = 1, log = function() end }
      -- a client that stops half way through its headers is dropped after ~1 s
      local t0 = core.now()
      local r = node(lim.port, "raw", { input = "GET /echo HTTP/1.1\r\nHost: x\r\n",
        env = { RAW_WAIT_MS = "8000" } })
      local took = core.now() - t0
      assert.truthy(r.closed)
      assert.is_true(took > 0.5 and took < 5, ("closed after %.2f s"):format(took))
      -- 8 at once against a limit of 5: the rest wait in the listen backlog
      -- until connections close (idle keep-alives go at the 1 s timeout)
      local argv = { "-Z", "--parallel-max", "8", "--parallel-immediate" }
      for _ = 1, 8 do
        argv[#argv + 1] = lim.url .. "/slow?ms=100"
        argv[#argv + 1] = "-o"
        argv[#argv + 1] = "/dev/null"
      end
      argv[#argv + 1] = "-w"
      argv[#argv + 1] = "%{http_code}\n"
      local out = curl(table.unpack(argv))
      local _, served = out:gsub("200\n", "")
      assert.are.equal(8, served)
      assert.are.equal(5, lim.server:stats().peak_connections)
      -- and it still serves afterwards
      assert.are.equal("200", (curl("-o", "/dev/null", "-w", "%{http_code}", lim.url .. "/echo")))
      lim.close()
    end)
  end)

  describe("handlers", function()
    local srv, seen
    local function start(handler, opts)
      seen = {}
      opts = opts or {}
      opts.handler = handler
      opts.log = function(m) seen[#seen + 1] = m end
      srv = server.listen(opts)
      return srv
    end
    after_each(function() if srv then srv:close() end end)

    it("turns a handler error into a 500 and keeps serving", function()
      helper.run(function()
        start(function(req, res)
          if req.path == "/boom" then error("kaboom") end
          if req.path == "/silent" then return end
          if req.path == "/late" then
            res:start(200, { ["content-length"] = "100" })
            res:write("partial")
            error("late failure")
          end
          res:send(200, nil, "fine")
        end)
        assert.are.equal("500", (curl("-o", "/dev/null", "-w", "%{http_code}", srv.url .. "/boom")))
        assert.truthy(seen[1]:find("kaboom", 1, true))
        assert.truthy(seen[1]:find("stack traceback", 1, true))
        assert.are.equal("500", (curl("-o", "/dev/null", "-w", "%{http_code}", srv.url .. "/silent")))
        assert.truthy(seen[2]:find("without responding", 1, true))
        local _, r = curl(srv.url .. "/late")
        assert.are_not.equal(0, r.exit_code)   -- a cut-short body, not a fake success
        assert.are.equal("fine", (curl(srv.url .. "/")))
      end)
    end)

    it("sends part of a file, and answers before reading the body", function()
      helper.run(function()
        local src = dir .. "/range.txt"
        local f = assert(io.open(src, "wb"))
        f:write("0123456789abcdefghij")
        f:close()
        start(function(req, res)
          if req.path == "/range" then
            return res:file(206, { ["content-type"] = "text/plain" }, src, 5, 7)
          end
          if req.path == "/reject" then
            return res:send(413, { ["content-type"] = "text/plain" }, "too big\n")
          end
          if req.path == "/early" then
            res:send(202, nil, "early\n")
            local ok, err = pcall(req.read, req)   -- the body was dropped: not a clean EOF
            seen.early = ok and "read ok" or err.code
            return
          end
          res:json(200, { len = #req:body() })
        end)
        assert.are.equal("56789ab", (curl(srv.url .. "/range")))
        local big = helper.bigfile(dir, "reject.bin", 16 * 1024 * 1024)
        -- with Expect: 100-continue the body is never sent
        local out = curl("-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "-T", big, srv.url .. "/reject")
        assert.are.equal("413", out:match("^%d+"))
        -- without it, the body is read and dropped: the connection stays usable
        local out2, r = curl("-v", "-H", "Expect:", "-T", big, srv.url .. "/reject",
          "--next", "--data-binary", "xyz", srv.url .. "/count")
        assert.truthy(r.stderr:find("< HTTP/1.1 413", 1, true))
        assert.truthy(r.stderr:find("Re-using existing connection", 1, true))
        assert.are.equal('too big\n{"len":3}', out2)
        assert.are.equal("early\n", (curl("-H", "Expect:", "--data-binary", "@" .. big, srv.url .. "/early")))
        helper.eventually(function() return seen.early end)
        assert.are.equal("ECANCELED", seen.early)
      end)
    end)

    it("checks its arguments", function()
      helper.run(function()
        local done = false
        start(function(_, res)
          assert.has_error(function() res._c:respond(99, {}) end)
          assert.has_error(function() res._c:respond(200, { ["bad name"] = "x" }) end)
          assert.has_error(function() res._c:respond(200, { x = "a\r\nInjected: 1" }) end)
          assert.has_error(function() res._c:write("x") end)
          res:start(200, { ["content-length"] = "3" })
          assert.has_error(function() res:send(200) end)
          assert.has_error(function() res._c:write("toolong") end)
          res:write("abc")
          res:finish()
          done = true
        end)
        assert.are.equal("abc", (curl(srv.url .. "/")))
        assert.is_true(done)
      end)
    end)

    it("runs WebSocket routes through the listen shortcut", function()
      helper.run(function()
        srv = server.listen{
          protocols = { "other", "echo" },
          websocket = function(_, ws)
            while true do
              local data, kind = ws:receive()
              if not data then return end
              ws:send(data, kind)
            end
          end,
          log = function(m) seen[#seen + 1] = m end,
        }
        -- ws_client's /ws/echo scenario works on any path of this server
        local res = node(srv.port, "echo")
        assert.is_true(res.ok, res.error)
        assert.are.equal("echo", res.protocol)
        assert.are.equal("426", (curl("-o", "/dev/null", "-w", "%{http_code}", srv.url .. "/")))
      end)
    end)

    it("closes with requests and WebSockets in flight", function()
      helper.run(function()
        local entered = 0
        start(function(req, res)
          entered = entered + 1
          if req.websocket then
            local ws = res:websocket()
            ws:receive()
          elseif req.path == "/body" then
            req:body()   -- waits for a body that never comes
          else
            scheduler.sleep(30)
          end
        end)
        local clients = {
          scheduler.spawn(curl, srv.url .. "/sleep"),
          scheduler.spawn(curl, "-H", "Content-Length: 100", "-H", "Expect:", "--data-binary", "x",
            srv.url .. "/body"),
          scheduler.spawn(node, srv.port, "echo"),
        }
        helper.eventually(function() return entered == 3 end, 10)
        local t0 = core.now()
        srv:close()
        srv:close()   -- idempotent
        for _, t in ipairs(clients) do pcall(t.wait, t) end
        assert.is_true(core.now() - t0 < 10)
        for _, m in ipairs(seen) do assert.falsy(m:find("traceback", 1, true), m) end
      end)
    end)
  end)

  it("let go of every request and WebSocket", function()
    helper.run(function()
      settled()
      collectgarbage("collect")   -- the wrappers' __gc run (under ASan in make asan)
      collectgarbage("collect")
      local s = ts.server:stats()
      assert.are.equal(0, s.requests)
      assert.are.equal(0, s.websockets)
    end)
  end)
end)
