-- dtlocal's HTTP forwarding (dtlocal.control.proxy): both bodies move in C
-- between the server request and the upstream request (the core's splice,
-- core.http.request{ body_from =, response_to = }). A front server
-- forwards with proxy.forward to a back server in the same process; the
-- toolbox daemon stands in for the back in the last tests.
local helper = require "support.helper"
local scheduler = require "daytona.runtime.scheduler"
local server = require "daytona.runtime.server"
local http = require "daytona.runtime.http"
local multipart = require "daytona.runtime.multipart"
local errors = require "daytona.errors"
local core = require "daytona.core"
local proxy = require "dtlocal.control.proxy"
local dhttp = require "dtlocal.http"
local toolbox = require "dtlocal.toolbox"

local MiB = 1024 * 1024

local peak_rss_kib, reset_peak_rss = helper.peak_rss_kib, helper.reset_peak_rss

-- Peak RSS grew by less than `kib` since rss0 (not checked under ASan,
-- whose quarantine holds on to freed memory).
local function assert_rss_below(rss0, kib)
  if (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then return end
  local peak = peak_rss_kib()
  assert.is_true(peak - rss0 < kib, ("peak RSS grew by %d KiB"):format(peak - rss0))
end

-- A file of `mib` MiB: a random MiB repeated, each 64 KiB block stamped
-- with its number, so that a lost, doubled or reordered block shows.
local function make_file(path, mib)
  local rnd = {}
  for i = 1, 16 do rnd[i] = core.util.random_bytes(65536) end
  local f = assert(io.open(path, "wb"))
  for b = 0, mib * 16 - 1 do
    local blk = rnd[b % 16 + 1]
    f:write(("%016x"):format(b), blk:sub(17))
  end
  f:close()
end

-- A front server that forwards every request to base with proxy.forward.
local function front_for(base)
  return server.listen{ log = function() end, handler = dhttp.handler{ dispatch = function(ctx)
    return proxy.forward(ctx, base .. ctx.target, { what = "the back server" })
  end } }
end

describe("dtlocal proxy", function()
  local dir, back, front
  local outcome = {}

  setup(function()
    dir = helper.tmpdir()
    helper.run(function()
      back = server.listen{ log = function() end, handler = function(req, res)
        local name = req.path:match("^/%a+/([%w%-%.]+)$")
        local route = req.path:match("^/(%a+)")
        if route == "save" then
          res:json(200, { bytes = req:save(dir .. "/" .. name) })
        elseif route == "file" then
          res:file(200, { ["Content-Type"] = "application/octet-stream" }, dir .. "/" .. name)
        elseif route == "slow" then   -- a slow reader: the front must not buffer for it
          local n = 0
          for chunk in req:chunks() do
            n = n + #chunk
            scheduler.sleep(0.01)
          end
          res:json(200, { bytes = n })
        elseif route == "collect" then   -- reads to the end, or to the cut
          local ok, err = pcall(function() for _ in req:chunks() do end end)
          outcome[name] = ok and "complete" or err
          if ok then res:json(200, {}) end
        elseif route == "endless" then   -- writes until the client is gone
          res:start(200)
          local blk = ("x"):rep(65536)
          local deadline = core.now() + 30
          local ok, err = pcall(function()
            while core.now() < deadline do res:write(blk) end
          end)
          outcome[name] = ok and "timed out" or err
        elseif route == "cut" then   -- breaks off in the middle of its body
          res:start(200, { ["Content-Length"] = tostring(2 * MiB) })
          res:write(("y"):rep(MiB))
          scheduler.sleep(0.05)
          req._c:close()
        elseif route == "drop" then   -- drops the upload in the middle
          local n = 0
          for chunk in req:chunks() do
            n = n + #chunk
            if n >= 256 * 1024 then break end
          end
          req._c:close()
        else
          res:send(404, {}, "")
        end
      end }
      front = front_for(back.url)
    end)
  end)

  teardown(function()
    if front then front:close() end
    if back then back:close() end
    helper.cleanup()
  end)

  it("moves 1 GiB each way, byte for byte, with flat memory #slow", function()
    helper.run(function()
      local src, dst = dir .. "/src-1g", dir .. "/dst-1g"
      make_file(src, 1024)
      local want = core.util.sha256_file(src)
      reset_peak_rss()
      local _, rss0 = peak_rss_kib()
      local r = http.request{ url = front.url .. "/save/up-1g", method = "PUT", body_file = src,
                              timeout = 300 }
      assert.are.equal(200, r.status, r.body)
      assert.are.equal(1024 * MiB, r:json().bytes)
      assert.are.equal(want, core.util.sha256_file(dir .. "/up-1g"))
      r = http.request{ url = front.url .. "/file/up-1g", response_file = dst, timeout = 300 }
      assert.are.equal(200, r.status)
      assert.are.equal(want, core.util.sha256_file(dst))
      assert_rss_below(rss0, 32 * 1024)
      os.remove(src); os.remove(dst); os.remove(dir .. "/up-1g")
    end)
  end)

  it("holds back a fast sender for a slow reader, both ways (bounded memory)", function()
    helper.run(function()
      local src = dir .. "/src-32m"
      make_file(src, 32)
      reset_peak_rss()
      local _, rss0 = peak_rss_kib()
      -- upload: the back reads slowly
      local r = http.request{ url = front.url .. "/slow/x", method = "POST", body_file = src, timeout = 60 }
      assert.are.equal(200, r.status, r.body)
      assert.are.equal(32 * MiB, r:json().bytes)
      -- download: the client reads slowly
      local s <close> = http.stream{ url = front.url .. "/file/src-32m", timeout = 60 }
      assert.are.equal(200, s.status)
      local n = 0
      for chunk in s:chunks() do
        n = n + #chunk
        scheduler.sleep(0.005)
      end
      assert.are.equal(32 * MiB, n)
      assert_rss_below(rss0, 16 * 1024)
    end)
  end)

  it("cuts the upstream's body when the client goes away mid-upload", function()
    helper.run(function()
      local sent = 0
      local blk = ("z"):rep(65536)
      local ok, err = pcall(http.request, {
        url = front.url .. "/collect/client-left", method = "POST", timeout = 20,
        body_producer = function()
          if sent >= 4 * MiB then error("client gives up", 0) end
          sent = sent + #blk
          return blk
        end,
      })
      assert.is_false(ok)
      assert.are.equal("client gives up", err)
      local seen = helper.eventually(function() return outcome["client-left"] end, 10)
      assert.is_true(errors.is(seen, errors.DaytonaConnectionError), tostring(seen))
    end)
  end)

  it("cuts the client's response when the upstream breaks off mid-body", function()
    helper.run(function()
      local r, msg, code = http.request{ url = front.url .. "/cut/x", timeout = 20 }
      assert.is_nil(r, "a cut body was taken for a complete one")
      assert.is_true(errors.is(errors.from_failure(msg, code), errors.DaytonaConnectionError), msg)
    end)
  end)

  it("stops the upstream when the client goes away mid-download", function()
    helper.run(function()
      local s = http.stream{ url = front.url .. "/endless/reader-left", timeout = 20 }
      assert.are.equal(200, s.status)
      assert.is_string(s:read())
      assert.is_string(s:read())
      s:close()
      local seen = helper.eventually(function() return outcome["reader-left"] end, 10)
      assert.is_true(errors.is(seen, errors.DaytonaConnectionError), tostring(seen))
    end)
  end)

  it("answers 502 when the upstream drops the upload", function()
    helper.run(function()
      local r = http.request{ url = front.url .. "/drop/x", method = "POST", timeout = 20,
                              body = ("d"):rep(8 * MiB) }
      assert.are.equal(502, r.status, r.body)
    end)
  end)

  it("refuses to splice what cannot be", function()
    helper.run(function()
      local function refused(opts, needle)
        opts.url = back.url .. "/save/never"
        local ok, err = pcall(core.http.request, opts)
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find(needle, 1, true), tostring(err))
      end
      refused({ body_from = {} }, "must be a server request")
      refused({ response_to = "x" }, "must be a server request")
      local seen = {}
      local s2 = server.listen{ log = function() end, handler = function(req, res)
        refused({ body_from = req._c, body = "x" }, "exclusive")
        refused({ response_to = req._c, response_stream = true }, "exclusive")
        local up <close> = core.http.request{ url = back.url .. "/collect/misuse", method = "POST",
                                               body_from = req._c }
        seen.read = select(2, pcall(req._c.read, req._c))
        seen.again = select(2, core.http.request{ url = back.url .. "/collect/misuse2", method = "POST",
                                                  body_from = req._c })
        while not up:done() do scheduler.wait(up) end
        res:send(200, {}, "")
      end }
      local r = http.request{ url = s2.url .. "/", method = "POST", body = "some body", timeout = 10 }
      s2:close()
      assert.are.equal(200, r.status)
      assert.is_truthy(tostring(seen.read):find("spliced", 1, true), tostring(seen.read))
      assert.is_truthy(tostring(seen.again):find("already spliced", 1, true), tostring(seen.again))
      assert.are.equal("complete", outcome.misuse)
    end)
  end)

  it("relays WebSocket messages both ways, empty ones included, in order", function()
    helper.run(function()
      local websocket = require "daytona.runtime.websocket"
      -- the back echoes every message with its kind
      local echo <close> = server.listen{ log = function() end, websocket = function(_, ws)
        while true do
          local data, kind = ws:receive()
          if data == nil then return end
          ws:send(data, kind)
        end
      end }
      local wsfront <close> = server.listen{ log = function() end, handler = dhttp.handler{ dispatch = function(ctx)
        return proxy.websocket(ctx, echo.url:gsub("^http", "ws") .. "/", { what = "the echo" })
      end } }
      local ws <close> = websocket.connect(wsfront.url:gsub("^http", "ws") .. "/")
      local sent = { { "", "text" }, { "a", "binary" }, { "", "binary" }, { "bc", "text" } }
      for _, m in ipairs(sent) do ws:send(m[1], m[2]) end
      for _, m in ipairs(sent) do
        local data, kind = ws:receive(5)
        assert.are.same(m, { data, kind })
      end
      ws:close(1000)
    end)
  end)

  describe("to the toolbox daemon", function()
    local home, tb, tfront

    setup(function()
      home = helper.tmpdir()
      helper.run(function()
        tb = toolbox.start { listen = "127.0.0.1:0", home = home, state_dir = helper.tmpdir() }
        tfront = front_for(tb.url)
      end)
    end)

    teardown(function()
      if tfront then tfront:close() end
      if tb then tb:close() end
    end)

    local function parts_in(dirpath)
      local left = {}
      for _, n in ipairs(core.util.readdir(dirpath) or {}) do
        if n:find("%.part$") then left[#left + 1] = n end
      end
      return left
    end

    it("leaves no file behind when the client goes away mid-upload", function()
      helper.run(function()
        local head = table.concat {
          "--XyZ\r\n", 'Content-Disposition: form-data; name="files[0].path"\r\n\r\n', "cut.bin\r\n",
          "--XyZ\r\n", 'Content-Disposition: form-data; name="files[0].file"; filename="cut.bin"\r\n',
          "Content-Type: application/octet-stream\r\n\r\n",
        }
        local blk = ("c"):rep(65536)
        local sent = -1
        local ok, err = pcall(http.request, {
          url = tfront.url .. "/files/bulk-upload", method = "POST", timeout = 20,
          headers = { ["Content-Type"] = "multipart/form-data; boundary=XyZ" },
          body_producer = function()
            if sent < 0 then sent = 0; return head end
            if sent >= 2 * MiB then
              -- the daemon is writing the file: now go away
              helper.eventually(function() return #parts_in(home) > 0 end, 10)
              error("client gives up", 0)
            end
            sent = sent + #blk
            return blk
          end,
        })
        assert.is_false(ok)
        assert.are.equal("client gives up", err)
        helper.eventually(function() return #parts_in(home) == 0 end, 10)
        assert.is_nil(core.util.stat(home .. "/cut.bin", false))
      end)
    end)

    it("uploads and downloads big and small files through the proxy intact", function()
      helper.run(function()
        make_file(dir .. "/big-8m", 8)
        local small = core.util.random_bytes(3000)
        local f = assert(io.open(dir .. "/small", "wb"))
        f:write(small)
        f:close()
        local r = http.request{ url = tfront.url .. "/files/bulk-upload", method = "POST", timeout = 60,
          multipart = {
            { name = "files[0].path", data = "big.bin" },
            { name = "files[0].file", file = dir .. "/big-8m", filename = "big.bin" },
            { name = "files[1].path", data = "small.bin" },
            { name = "files[1].file", file = dir .. "/small", filename = "small.bin" },
          } }
        assert.are.equal(200, r.status, r.body)
        assert.are.equal(core.util.sha256_file(dir .. "/big-8m"), core.util.sha256_file(home .. "/big.bin"))
        r = http.request{ url = tfront.url .. "/files/bulk-download", method = "POST", timeout = 60,
          headers = { ["Content-Type"] = "application/json" },
          body = '{"paths":["big.bin","small.bin"]}' }
        assert.are.equal(200, r.status)
        local got = {}
        local p = multipart.parser(assert(multipart.boundary(r.headers["content-type"])), function(part)
          local data = {}
          return function(d)
            if d then data[#data + 1] = d else got[part.filename] = table.concat(data) end
          end
        end)
        assert(p:feed(r.body))
        assert.are.equal(2, p:finish())
        assert.are.equal(core.util.sha256_file(dir .. "/big-8m"), core.util.sha256(got["big.bin"]))
        assert.is_true(got["small.bin"] == small)
      end)
    end)
  end)
end)
