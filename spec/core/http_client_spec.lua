-- The HTTP client: core.http (libcurl multi-socket on the loop) and the
-- daytona.runtime.http wrapper, against the spec test server on loopback.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local http = require "daytona.runtime.http"
local helper = require "support.helper"
local test_server = require "support.test_server"
local cjson = require "cjson"

local MiB = 1024 * 1024

-- Wait for a core request to finish; returns it.
local function finish(req)
  while not req:done() do scheduler.wait(req) end
  return req
end

-- A port nothing listens on: one the OS handed to a server now closed.
local function closed_port()
  local s = test_server.start()
  local port = s.port
  s.close()
  return port
end

describe("http client", function()
  local server, base
  local server_log = {}   -- what the server says about its connections

  setup(function()
    server = test_server.start{ log = function(msg) server_log[#server_log + 1] = msg end }
    base = server.url
  end)

  teardown(function()
    if server then server.close() end
    helper.cleanup()
  end)

  describe("core.http", function()
    it("reports the library and its HTTP/2 support", function()
      local info = core.http.info()
      assert.is_string(info.version)
      assert.is_boolean(info.http2)
    end)

    it("signals headers before the body has finished", function()
      helper.run(function()
        -- nobody reads the body: the transfer pauses, yet the headers are in
        local req <close> = core.http.request{ url = base .. "/bytes?n=" .. (64 * MiB), response_stream = true }
        while not req:status() and not req:done() do scheduler.wait(req) end
        assert.are.equal(200, req:status())
        assert.is_false(req:done())
        assert.are.equal(tostring(64 * MiB), req:headers()["content-length"])
      end)
    end)

    it("pauses a streamed response until Lua reads, then delivers all of it", function()
      helper.run(function()
        local size = 16 * MiB
        local req <close> = core.http.request{ url = base .. "/bytes?n=" .. size, response_stream = true }
        -- do not read for a while: the transfer must stop at the C bound
        local t = core.timer(300)
        while not t:done() do scheduler.wait(t) end
        local down = req:progress()
        assert.is_true(down < 4 * MiB, ("%d bytes taken in while nobody read"):format(down))
        local total = 0
        while true do
          local chunk, msg, code = req:read()
          if chunk == nil then assert.is_nil(msg, code); break end
          if chunk == "" then scheduler.wait(req) else total = total + #chunk end
        end
        assert.are.equal(size, total)
        assert.are.equal(size, req:result().bytes)
      end)
    end)

    it("takes a body from Lua chunks with back-pressure", function()
      helper.run(function()
        local req <close> = core.http.request{ url = base .. "/upload", method = "POST", body_stream = true }
        local chunk = ("0123456789abcdef"):rep(4096)   -- 64 KiB
        local refused, sent = 0, 0
        while sent < 8 * MiB do
          local ok, msg = req:write(chunk)
          assert.is_not_nil(ok, msg)
          if ok then sent = sent + #chunk else refused = refused + 1; scheduler.wait(req) end
        end
        req:finish()
        finish(req)
        local res = assert(req:result())
        assert.are.equal(200, res.status)
        local body = cjson.decode(res.body)
        assert.are.equal(sent, body.size)
        assert.are.equal(core.util.sha256(chunk:rep(sent // #chunk)), body.sha256)
        assert.is_true(refused > 0, "write never refused: no back-pressure")
      end)
    end)

    it("cancels a running transfer on close, idempotently", function()
      helper.run(function()
        local req = core.http.request{ url = base .. "/slow?ms=5000" }
        scheduler.sleep(0.05)
        req:close()
        req:close()
        assert.is_true(req:done())
        local ok, msg, code = req:result()
        assert.is_nil(ok)
        assert.is_string(msg)
        assert.are.equal("ECANCELED", code)
      end)
    end)

    it("returns nil, msg, code for a bad URL or a missing body file and raises on misuse", function()
      local req, msg, code = core.http.request{ url = "not a url" }
      assert.is_nil(req); assert.is_string(msg); assert.are.equal("EINVAL", code)
      req, msg, code = core.http.request{ url = "file:///etc/passwd" }
      assert.is_nil(req); assert.are.equal("EINVAL", code)
      req, msg, code = core.http.request{ url = base .. "/upload", method = "PUT", body_file = "/nonexistent/x" }
      assert.is_nil(req); assert.are.equal("ENOENT", code)
      assert.has_error(function() core.http.request{ url = base, bogus = 1 } end)
      assert.has_error(function() core.http.request{ url = base, headers = { "X-A: 1\r\nX-B: 2" } } end)
      assert.has_error(function() core.http.request{ url = base, method = "G T" } end)
      assert.has_error(function() core.http.request{ url = base, body = "a", body_file = "/etc/hosts" } end)
      assert.has_error(function() core.http.request{ url = base, timeout = -1 } end)
      local r <close> = core.http.request{ url = base .. "/echo" }
      assert.has_error(function() r:result() end)   -- not finished yet
      assert.has_error(function() r:read() end)     -- not a streamed response
    end)
  end)

  describe("http.request", function()
    it("sends each method with its body and reads the echo", function()
      helper.run(function()
        for _, m in ipairs{ "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" } do
          local body = (m ~= "GET" and m ~= "DELETE" and m ~= "OPTIONS") and ("body of " .. m) or nil
          local resp = http.request{ url = base .. "/echo", method = m, body = body }
          assert.are.equal(200, resp.status)
          local echo = resp:json()
          assert.are.equal(m, echo.method)
          assert.are.equal(#(body or ""), echo.body_len)
          assert.are.equal(core.util.sha256(body or ""), echo.body_sha256)
        end
        local head = http.request{ url = base .. "/echo", method = "HEAD" }
        assert.are.equal(200, head.status)
        assert.are.equal("", head.body)
      end)
    end)

    it("sends headers in both forms and lower-cases response header names", function()
      helper.run(function()
        local resp = http.request{
          url = base .. "/echo", query = { q = "a b&c", n = 2 },
          headers = { ["X-Map"] = "m", "X-Line: l", ["X-Empty"] = "" },
        }
        local echo = resp:json()
        assert.are.equal("m", echo.headers["x-map"])
        assert.are.equal("l", echo.headers["x-line"])
        assert.are.equal("", echo.headers["x-empty"])
        assert.are.equal("a b&c", echo.args.q)
        assert.are.equal("2", echo.args.n)
        assert.is_nil(echo.headers["expect"])
        assert.is_string(echo.headers["user-agent"])
        assert.is_truthy(resp.headers["content-type"]:find("application/json", 1, true))
        for name in pairs(resp.headers) do assert.are.equal(name:lower(), name) end
      end)
    end)

    it("sends and decodes JSON bodies", function()
      helper.run(function()
        local doc = { name = "sb", labels = { a = "1" }, list = { 1, 2, 3 }, ok = true }
        local resp = http.request{ url = base .. "/echo", method = "POST", json = doc }
        local echo = resp:json()
        assert.are.equal("application/json", echo.headers["content-type"])
        local encoded = cjson.encode(doc)   -- the same table encodes the same way
        assert.are.same(doc, cjson.decode(encoded))
        assert.are.equal(#encoded, echo.body_len)
        assert.are.equal(core.util.sha256(encoded), echo.body_sha256)
      end)
    end)

    it("returns HTTP error statuses without raising", function()
      helper.run(function()
        for _, s in ipairs{ 201, 204, 400, 404, 500, 503 } do
          assert.are.equal(s, http.request{ url = base .. "/status/" .. s }.status)
        end
      end)
    end)

    it("follows redirects, or not, and bounds them", function()
      helper.run(function()
        local resp = http.request{ url = base .. "/redirect/3" }
        assert.are.equal(200, resp.status)
        assert.is_falsy(resp.url:find("/redirect/", 1, true))
        local raw = http.request{ url = base .. "/redirect/3", follow_redirects = false }
        assert.is_true(raw.status >= 300 and raw.status < 400)
        assert.is_string(raw.headers["location"])
        local r, msg, code = http.request{ url = base .. "/redirect/5", max_redirects = 2 }
        assert.is_nil(r)
        assert.is_string(msg)
        assert.are.equal("ETOOMANYREDIRECTS", code)
      end)
    end)

    it("fails with ETIMEDOUT when the timeout passes", function()
      helper.run(function()
        local t0 = core.now()
        local r, msg, code = http.request{ url = base .. "/slow?ms=3000", timeout = 0.2 }
        assert.is_nil(r)
        assert.are.equal("ETIMEDOUT", code, msg)
        assert.is_true(core.now() - t0 < 1.5)
      end)
    end)

    it("gives up on a transfer that stays idle for idle_timeout", function()
      helper.run(function()
        local t0 = core.now()
        local r, _, code = http.request{ url = base .. "/slow?ms=8000", idle_timeout = 1 }
        assert.is_nil(r)
        assert.are.equal("ETIMEDOUT", code)
        assert.is_true(core.now() - t0 < 4)
      end)
    end)

    it("fails with ECONNREFUSED for a refused connection, which the SDK maps to a retryable DaytonaConnectionError", function()
      helper.run(function()
        local port = closed_port()
        local r, msg, code = http.request{ url = ("http://127.0.0.1:%d/"):format(port) }
        assert.is_nil(r)
        assert.are.equal("ECONNREFUSED", code)
        assert.is_string(msg)
        local err = errors.from_failure(msg, code)
        assert.is_true(errors.is(err, errors.DaytonaConnectionError), tostring(err))
        assert.is_true(err.retryable)
      end)
    end)

    it("stops the transfer when the calling task is cancelled", function()
      helper.run(function()
        local got = 0
        local task = scheduler.spawn(function()
          local s <close> = http.stream{ url = base .. "/bytes?n=" .. (1024 * MiB) }
          for chunk in s:chunks() do got = got + #chunk end
        end)
        helper.eventually(function() return got > 0 end)
        local t0 = core.now()
        for i = #server_log, 1, -1 do server_log[i] = nil end
        task:cancel()
        local ok, err = pcall(task.wait, task)
        assert.is_false(ok)
        assert.is_true(errors.is(err, errors.CancelledError))
        assert.is_true(core.now() - t0 < 0.5)
        assert.is_true(got < 512 * MiB)
        -- the server saw the connection go: the transfer stopped, not just the task
        helper.eventually(function()
          for _, msg in ipairs(server_log) do
            if msg:find("/bytes", 1, true) and msg:find("closed", 1, true) then return true end
          end
        end)
        -- a plain request in a cancelled task stops too
        local t2 = scheduler.spawn(function() return http.request{ url = base .. "/slow?ms=5000" } end)
        scheduler.sleep(0.05)
        local t1 = core.now()
        t2:cancel()
        assert.is_false(pcall(t2.wait, t2))
        assert.is_true(core.now() - t1 < 0.5)
      end)
    end)

    it("runs 100 requests in parallel", function()
      helper.run(function()
        local fns = {}
        for i = 1, 100 do
          fns[i] = function()
            return http.request{ url = base .. "/echo", query = { i = i } }:json().args.i
          end
        end
        local t0 = core.now()
        local results = scheduler.all(fns)
        for i = 1, 100 do assert.are.equal(tostring(i), results[i]) end
        assert.is_true(core.now() - t0 < 5)
      end)
    end)

    it("uploads 64 MiB from disk and downloads 64 MiB to disk, checked by sha256", function()
      helper.run(function()
        local dir = helper.tmpdir()
        local src = helper.bigfile(dir, "src.bin", 64 * MiB)
        local want = core.util.sha256_file(src)
        local ticks = {}
        local up = http.request{
          url = base .. "/upload", method = "PUT", body_file = src,
          on_progress = function(done, total, dir_) ticks[#ticks + 1] = { done, total, dir_ } end,
          progress_interval = 0.01,
        }
        assert.are.equal(200, up.status)
        local echo = up:json()
        assert.are.equal(64 * MiB, echo.size)
        assert.are.equal(want, echo.sha256)
        assert.is_true(#ticks >= 1)
        assert.are.same({ 64 * MiB, 64 * MiB, "upload" }, ticks[#ticks])
        for i = 2, #ticks do assert.is_true(ticks[i][1] >= ticks[i - 1][1]) end

        local dst = dir .. "/dst.bin"
        local down = http.request{ url = base .. "/file", query = { path = src }, response_file = dst }
        assert.are.equal(200, down.status)
        assert.is_nil(down.body)
        assert.are.equal(64 * MiB, down.bytes)
        local got, size = core.util.sha256_file(dst)
        assert.are.equal(64 * MiB, size)
        assert.are.equal(want, got)
      end)
    end)

    it("streams 1 GiB up from disk and down to disk in flat memory, checked by sha256", function()
      local function rss_kib()
        for line in io.lines("/proc/self/status") do
          local kb = line:match("^VmRSS:%s+(%d+)")
          if kb then return tonumber(kb) end
        end
      end
      helper.run(function()
        local dir = helper.tmpdir()
        local src = helper.bigfile(dir, "big.bin", 1024 * MiB)
        local want = core.util.sha256_file(src)
        local before = rss_kib()
        local up = http.request{ url = base .. "/upload", method = "PUT", body_file = src }
        assert.are.equal(200, up.status)
        local echo = up:json()
        assert.are.equal(1024 * MiB, echo.size)
        assert.are.equal(want, echo.sha256)
        local dst = dir .. "/big.out"
        local down = http.request{ url = base .. "/file", query = { path = src }, response_file = dst }
        assert.are.equal(200, down.status)
        assert.are.equal(1024 * MiB, down.bytes)
        os.remove(src)
        assert.are.equal(want, (core.util.sha256_file(dst)))
        -- client and server both live in this process: neither held the body
        if not os.getenv("LD_PRELOAD") then   -- ASan's quarantine keeps freed memory
          local grown = rss_kib() - before
          assert.is_true(grown < 32 * 1024, ("RSS grew by %d KiB"):format(grown))
        end
      end)
    end)

    it("uploads a body produced by Lua", function()
      helper.run(function()
        local n, chunk = 0, ("x"):rep(100000)
        local resp = http.request{
          url = base .. "/upload", method = "POST",
          body_producer = function()
            if n == 40 then return nil end
            n = n + 1
            return chunk
          end,
        }
        local echo = resp:json()
        assert.are.equal(40 * #chunk, echo.size)
        assert.are.equal(core.util.sha256(chunk:rep(40)), echo.sha256)
      end)
    end)

    it("sends multipart forms with several file parts", function()
      helper.run(function()
        local dir = helper.tmpdir()
        local a = helper.bigfile(dir, "a.bin", 3 * MiB)
        local b = helper.bigfile(dir, "b.bin", 12345)
        local c = helper.bigfile(dir, "c.bin", 0)
        local resp = http.request{
          url = base .. "/multipart", method = "POST",
          multipart = {
            { name = "meta", data = '{"k":1}', content_type = "application/json" },
            { name = "f1", file = a },
            { name = "f2", file = b, filename = "renamed.dat", content_type = "application/x-test" },
            { name = "f3", file = c },
          },
        }
        assert.are.equal(200, resp.status)
        local parts = resp:json()
        assert.are.equal(4, #parts)
        assert.are.equal("meta", parts[1].name)
        assert.are.equal(cjson.null, parts[1].filename)
        assert.are.equal(core.util.sha256('{"k":1}'), parts[1].sha256)
        assert.are.equal("f1", parts[2].name)
        assert.are.equal("a.bin", parts[2].filename)
        assert.are.equal(3 * MiB, parts[2].size)
        assert.are.equal((core.util.sha256_file(a)), parts[2].sha256)
        assert.are.equal("f2", parts[3].name)
        assert.are.equal("renamed.dat", parts[3].filename)
        assert.are.equal((core.util.sha256_file(b)), parts[3].sha256)
        assert.are.equal("c.bin", parts[4].filename)
        assert.are.equal(0, parts[4].size)
        local r, _, code = http.request{ url = base .. "/multipart", method = "POST",
          multipart = { { name = "x", file = dir .. "/missing" } } }
        assert.is_nil(r)
        assert.are.equal("ENOENT", code)
      end)
    end)

    it("streams a response body in bounded chunks", function()
      helper.run(function()
        local s <close> = http.stream{ url = base .. "/bytes?n=" .. (8 * MiB) }
        assert.are.equal(200, s.status)
        local total, biggest = 0, 0
        for chunk in s:chunks() do
          total = total + #chunk
          if #chunk > biggest then biggest = #chunk end
        end
        assert.are.equal(8 * MiB, total)
        assert.is_true(biggest <= 512 * 1024)
        assert.is_nil(s:read())
      end)
    end)

    it("raises on misuse with the caller's position", function()
      assert.has_error(function() http.request{ url = base, nope = true } end)
      assert.has_error(function() http.request("x") end)
      assert.has_error(function() http.request{ url = base, body = "a", json = {} } end)
      local r, _, code = http.request{ url = "ftp://x/" }
      assert.is_nil(r)
      assert.are.equal("EINVAL", code)
    end)
  end)
end)
