-- Inputs that used to get through dtlocal, or freeze a sandbox's daemon,
-- one regression case each (over real HTTP, against a private server):
-- special files (FIFOs, devices) in the toolbox's file routes, reserved
-- volume mount paths, JSON bodies that are not objects, out-of-range
-- intervals, git failures with Daytona's codes, over-long file names, and
-- the snapshot list's total.
local core = require "daytona.core"
local http = require "daytona.runtime.http"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local json = require("dtlocal.http").json

local srv

local function api(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end
local function ok(want, method, path, body, opts) return dtlocal.expect(srv, want, method, path, body, opts) end

-- A structured 400 (or `want`) whose message contains `needle`.
local function fails(want, needle, method, path, body, opts)
  local st, b = api(method, path, body, opts)
  assert.are.equal(want, st, ("%s %s: %s"):format(method, path, type(b) == "table" and json.encode(b) or tostring(b)))
  assert.is_table(b)
  assert.are.equal(want, b.statusCode)
  if needle then
    assert.is_truthy(tostring(b.message):lower():find(needle:lower(), 1, true),
      ("message %q should contain %q"):format(tostring(b.message), needle))
  end
  return b
end

local function esc(s)
  return (s:gsub("[^%w%-%._~/]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- A toolbox request to sandbox id; a short timeout, so that a daemon that
-- blocks shows as an error here instead of hanging the spec.
local function tb(id, method, path, body, opts)
  opts = opts or {}
  opts.base = srv.toolbox_url .. "/" .. id
  opts.timeout = opts.timeout or 5
  local okc, st, b, h = pcall(api, method, path, body, opts)
  if not okc then return nil, tostring(st) end
  return st, b, h
end

local function exec(id, command) return dtlocal.exec(srv, id, command) end

-- The daemon still answers: an exec within 2 s.
local function responsive(id)
  local t0 = core.now()
  local okc, out = pcall(dtlocal.request, srv, "POST", "/process/execute", { command = "echo alive" },
                         { base = srv.toolbox_url .. "/" .. id, timeout = 2 })
  assert.is_true(okc, "the daemon did not answer an exec within 2 s: " .. tostring(out))
  assert.is_true(core.now() - t0 < 2)
end

local function create(body) return ok(200, "POST", "/sandbox", body or {}) end

local function upload(id, path, data, timeout)
  local r, msg = http.request({
    url = srv.toolbox_url .. "/" .. id .. "/files/upload?path=" .. esc(path), method = "POST",
    headers = { Authorization = "Bearer " .. srv.token,
                ["Content-Type"] = "multipart/form-data; boundary=XyZ" },
    body = table.concat {
      "--XyZ\r\n", 'Content-Disposition: form-data; name="file"; filename="f"\r\n',
      "Content-Type: application/octet-stream\r\n\r\n", data, "\r\n--XyZ--\r\n",
    },
    timeout = timeout or 5,
  })
  if not r then return nil, msg end
  local b = r.body
  if (r.headers["content-type"] or ""):find("json", 1, true) and b ~= "" then b = json.decode(b) end
  return r.status, b
end

local function run(fn) return helper.run(fn) end

describe("dtlocal input validation", function()
  setup(function() srv = dtlocal.start() end)
  teardown(function() if srv then srv.stop() end end)

  describe("special files in the toolbox", function()
    it("refuses to download a FIFO (400 naming it) and the daemon keeps answering", function()
      run(function()
        local s = create()
        exec(s.id, "mkfifo /tmp/f")
        local st, b = tb(s.id, "GET", "/files/download?path=/tmp/f")
        assert.are.equal(400, st, tostring(b))
        assert.is_truthy(b.message:find("named pipe", 1, true), b.message)
        responsive(s.id)
        -- a device is refused the same way, by its type
        st, b = tb(s.id, "GET", "/files/download?path=/dev/null")
        assert.are.equal(400, st, tostring(b))
        assert.is_truthy(b.message:find("character device", 1, true), b.message)
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)

    it("gives a FIFO among regular files its own error part in a bulk download", function()
      run(function()
        local s = create()
        exec(s.id, "mkfifo /tmp/f && printf one > /tmp/a && printf two > /tmp/b")
        local st, body, h = tb(s.id, "POST", "/files/bulk-download", { paths = { "/tmp/a", "/tmp/f", "/tmp/b" } })
        assert.are.equal(200, st, tostring(body))
        assert.is_truthy((h["content-type"] or ""):find("multipart", 1, true))
        -- the regular files arrive whole, the FIFO as an error part naming it
        assert.is_truthy(body:find("\r\n\r\none\r\n", 1, true), body)
        assert.is_truthy(body:find("\r\n\r\ntwo\r\n", 1, true), body)
        assert.is_truthy(body:find('name="error"; filename="/tmp/f"', 1, true), body)
        assert.is_truthy(body:find("named pipe", 1, true), body)
        assert.is_truthy(body:find("--DAYTONA-FILE-BOUNDARY--", 1, true))
        responsive(s.id)
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)

    it("refuses an upload onto a FIFO's path and leaves the FIFO alone", function()
      run(function()
        local s = create()
        exec(s.id, "mkfifo /tmp/f")
        local st, b = upload(s.id, "/tmp/f", "data")
        assert.are.equal(400, st, tostring(b))
        assert.is_truthy(b.message:find("named pipe", 1, true), b.message)
        responsive(s.id)
        local _, code = exec(s.id, "test -p /tmp/f")
        assert.are.equal(0, code)
        -- replace skips it (per-file error), find and search walk past it
        exec(s.id, "mkdir -p /tmp/d && mkfifo /tmp/d/p && echo needle > /tmp/d/t.txt")
        local r
        st, r = tb(s.id, "POST", "/files/replace", { files = { "/tmp/d/p", "/tmp/d/t.txt" },
                                                    pattern = "needle", newValue = "pin" })
        assert.are.equal(200, st, tostring(r))
        assert.is_false(r[1].success)
        assert.is_truthy(tostring(r[1].error):find("named pipe", 1, true), tostring(r[1].error))
        assert.is_true(r[2].success)
        st, r = tb(s.id, "GET", "/files/find?path=/tmp/d&pattern=pin")
        assert.are.equal(200, st)
        assert.are.equal(1, #r)
        responsive(s.id)
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)
  end)

  describe("file names", function()
    it("answers 400 for a name over 255 bytes or a path over 4095, and takes 255", function()
      run(function()
        local s = create()
        local st, b = upload(s.id, "/tmp/" .. ("a"):rep(256), "x")
        assert.are.equal(400, st, json.encode(b))
        assert.is_truthy(b.message:find("255", 1, true), b.message)
        local long = "/tmp" .. ("/" .. ("b"):rep(200)):rep(21)   -- 4224 bytes
        st, b = upload(s.id, long .. "/x", "x")
        assert.are.equal(400, st, json.encode(b))
        assert.is_truthy(b.message:find("4095", 1, true), b.message)
        -- nothing of the long path was made
        local _, code = exec(s.id, "test -e /tmp/" .. ("b"):rep(200))
        assert.are.equal(1, code)
        -- the longest name a file may have uploads (its temp file too)
        st, b = upload(s.id, "/tmp/" .. ("c"):rep(255), "fits")
        assert.are.equal(200, st, json.encode(b))
        assert.are.equal("fits", exec(s.id, "cat /tmp/" .. ("c"):rep(255)))
        st, b = tb(s.id, "GET", "/files/info?path=/tmp/" .. ("d"):rep(300))
        assert.are.equal(400, st, json.encode(b))
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)
  end)

  describe("git failures", function()
    it("carry Daytona's daemon codes", function()
      run(function()
        local s = create()
        local st, b = tb(s.id, "POST", "/git/clone", { url = "http://127.0.0.1:1/nothing.git", path = "/tmp/c1" },
                         { timeout = 20 })
        assert.are.equal(502, st, json.encode(b))
        assert.are.equal("GIT_TRANSPORT_FAILED", b.code)
        assert.are.equal("DAYTONA_DAEMON", b.source)
        st, b = tb(s.id, "POST", "/git/clone", { url = "/tmp/no-such-repo", path = "/tmp/c2" }, { timeout = 20 })
        assert.are.equal(404, st, json.encode(b))
        assert.are.equal("GIT_REPO_NOT_FOUND", b.code)
        exec(s.id, "git init -q /tmp/r && cd /tmp/r && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m one")
        st, b = tb(s.id, "POST", "/git/push", { path = "/tmp/r" }, { timeout = 20 })
        assert.are.equal(404, st, json.encode(b))
        assert.are.equal("GIT_REPO_NOT_FOUND", b.code)
        st, b = tb(s.id, "POST", "/git/checkout", { path = "/tmp/r", branch = "no-such-branch" }, { timeout = 20 })
        assert.are.equal(404, st, json.encode(b))
        assert.are.equal("GIT_BRANCH_NOT_FOUND", b.code)
        st, b = tb(s.id, "POST", "/git/branches", { path = "/tmp/r", name = "dup" }, { timeout = 20 })
        assert.are.equal(201, st, json.encode(b))
        st, b = tb(s.id, "POST", "/git/branches", { path = "/tmp/r", name = "dup" }, { timeout = 20 })
        assert.are.equal(409, st, json.encode(b))
        assert.are.equal("GIT_BRANCH_EXISTS", b.code)
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)
  end)

  describe("JSON bodies", function()
    it("must be objects, on the API and on the toolbox", function()
      run(function()
        -- nothing is made (other specs' sandboxes may come and go meanwhile)
        local function ids()
          local set = {}
          for _, s in ipairs(ok(200, "GET", "/sandbox").items) do set[s.id] = true end
          return set
        end
        local before = ids()
        fails(400, "JSON object", "POST", "/sandbox", "[]")
        fails(400, "JSON object", "POST", "/sandbox", " [ ] ")
        fails(400, "JSON object", "POST", "/sandbox", "null")
        fails(400, "JSON object", "POST", "/sandbox", '"x"')
        for id in pairs(ids()) do assert.is_true(before[id] ~= nil, "a sandbox was made: " .. id) end
        fails(400, "JSON object", "POST", "/volumes", "[]")
        local s = create()
        fails(400, "JSON object", "PUT", "/sandbox/" .. s.id .. "/labels", "[]")
        fails(400, "JSON object", "POST", "/sandbox/" .. s.id .. "/resize", "[]")
        local st, b = tb(s.id, "POST", "/process/execute", "[]")
        assert.are.equal(400, st)
        assert.is_truthy(b.message:find("JSON object", 1, true), b.message)
        st, b = tb(s.id, "POST", "/git/add", "[]")
        assert.are.equal(400, st)
        assert.is_truthy(b.message:find("JSON object", 1, true), b.message)
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)
  end)

  describe("intervals", function()
    it("refuse values the sweeper's clocks cannot hold; negative auto-delete means disabled", function()
      run(function()
        local huge = 4611686018427387904   -- 2^62 minutes
        fails(400, "autoStopInterval", "POST", "/sandbox", { autoStopInterval = huge })
        fails(400, "autoArchiveInterval", "POST", "/sandbox", { autoArchiveInterval = huge })
        fails(400, "autoDeleteInterval", "POST", "/sandbox", { autoDeleteInterval = huge })
        fails(400, "autoDeleteInterval", "POST", "/sandbox", { autoDeleteInterval = -huge })
        fails(400, "ttlMinutes", "POST", "/sandbox", { ttlMinutes = huge })
        fails(400, "autoStopInterval", "POST", "/sandbox", { autoStopInterval = -1 })
        local s = create()
        fails(400, "interval", "POST", "/sandbox/" .. s.id .. "/autostop/" .. huge)
        fails(400, "interval", "POST", "/sandbox/" .. s.id .. "/autostop/-1")
        fails(400, "interval", "POST", "/sandbox/" .. s.id .. "/autoarchive/-1")
        fails(400, "interval", "POST", "/sandbox/" .. s.id .. "/autodelete/" .. huge)
        -- the API's "negative value means disabled" (any negative)
        assert.are.equal(-1, ok(201, "POST", "/sandbox/" .. s.id .. "/autodelete/-1").autoDeleteInterval)
        assert.are.equal(-5, ok(201, "POST", "/sandbox/" .. s.id .. "/autodelete/-5").autoDeleteInterval)
        assert.are.equal(2147483647, ok(201, "POST", "/sandbox/" .. s.id .. "/autostop/2147483647").autoStopInterval)
        -- the sandbox was not stopped by an overflowing deadline
        assert.are.equal("started", ok(200, "GET", "/sandbox/" .. s.id).state)
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)
  end)

  describe("volume mount paths", function()
    it("refuse system and dtlocal paths, naming the field; user data dirs work", function()
      run(function()
        local v = ok(200, "POST", "/volumes", { name = "mount-spec" })
        local function refused(path, needle)
          local b = fails(400, "volumes[1].mountPath", "POST", "/sandbox",
            { volumes = { { volumeId = v.id, mountPath = "/data" }, { volumeId = v.id, mountPath = path } } })
          if needle then
            assert.is_truthy(b.message:find(needle, 1, true), ("%q should mention %q"):format(b.message, needle))
          end
        end
        -- nothing is made (other specs' sandboxes may come and go meanwhile)
        local function ids()
          local set = {}
          for _, s in ipairs(ok(200, "GET", "/sandbox").items) do set[s.id] = true end
          return set
        end
        local before = ids()
        refused("/run/dtlua", "toolbox daemon")
        refused("/run/dtlua/x")
        refused("/run")
        refused("/proc")
        refused("/sys/fs")
        refused("/dev")
        refused("/dev/shm")
        refused("/etc")
        refused("/usr/local/lib")
        refused("/bin")
        refused("/sbin")
        refused("/lib")
        refused("/lib64")
        refused("/boot")
        refused("/home")
        refused("/tmp")
        refused("/")
        refused("//")
        refused("/data/../etc")
        for id in pairs(ids()) do assert.is_true(before[id] ~= nil, "a sandbox was made: " .. id) end
        -- data dirs keep working, /tmp's and /home's subdirectories too
        local s = create{ volumes = {
          { volumeId = v.id, mountPath = "/home/daytona/x" }, { volumeId = v.id, mountPath = "/mnt/x" },
          { volumeId = v.id, mountPath = "/data" }, { volumeId = v.id, mountPath = "/tmp/shared" },
          { volumeId = v.id, mountPath = "/runner" },
        } }
        exec(s.id, "echo hi > /mnt/x/hi.txt")
        assert.are.equal("hi\n", exec(s.id, "cat /data/hi.txt /home/daytona/x/hi.txt /tmp/shared/hi.txt /runner/hi.txt"
          .. " | sort -u"))
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
    end)
  end)

  describe("the snapshot list", function()
    it("counts every match in total, not the page", function()
      run(function()
        local n = ok(200, "GET", "/snapshots").total
        assert.is_true(n >= 1)
        local p1 = ok(200, "GET", "/snapshots?page=1&limit=1")
        assert.are.equal(n, p1.total)
        assert.are.equal(1, #p1.items)
        local p2 = ok(200, "GET", "/snapshots?page=" .. (n + 1) .. "&limit=1")
        assert.are.equal(n, p2.total)
        assert.are.equal(0, #p2.items)
        assert.are.equal(n, p2.totalPages)
        local none = ok(200, "GET", "/snapshots?name=nothing-like-it")
        assert.are.equal(0, none.total)
      end)
    end)
  end)
end)
