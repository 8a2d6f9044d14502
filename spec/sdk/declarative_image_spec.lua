-- Declarative images through the Lua SDK against dtlocal (doc/dtlocal.md,
-- "Builds"): `Image.base(<the test registry's image>):run_commands(...)
-- :env{...}:workdir(...):add_local_file(...)` created with
-- `client:create{ image = }`: the context uploaded through push-access and
-- the S3 endpoint, the Dockerfile built by dtlocal's builder with the build
-- log streamed to `on_snapshot_create_logs`, the sandbox started on the
-- image with the step's results, the same definition a second time a cache
-- hit; a failing RUN step ends the create with the step's output and leaves
-- the sandbox `build_failed`.
local core = require "daytona.core"
local helper = require "support.helper"
local registry = require "support.registry"
local dtlocal = require "support.dtlocal"
local fixture = require "sdk.fixture"
local Image = require "daytona.image"

local util = core.util

local reg, ref, srv, client

describe("SDK declarative images on dtlocal", function()
  setup(function()
    helper.run(function()
      reg = registry.start()
      ref = reg:push_test_image("dtlua/test:1")
      srv = dtlocal.start()
      client = fixture.client(srv)
    end)
  end)
  teardown(function()
    helper.run(function()
      if client then client:close() end
      if srv then srv.stop() end
      if reg then reg:stop() end
    end)
    helper.cleanup()
  end)

  it("builds and starts Image.base():run_commands():env():workdir():add_local_file(), then hits the cache", function()
    helper.run(function()
      local dir = helper.tmpdir()
      local f = assert(io.open(dir .. "/config.txt", "wb"))
      f:write("from this machine\n")
      f:close()
      local function image()
        return Image.base(ref)
          :run_commands("mkdir -p /srv/data && echo built > /srv/data/marker", "echo step-output-line")
          :env{ APP_MODE = "declarative" }
          :workdir("/srv/data")
          :add_local_file(dir .. "/config.txt", "/srv/data/config.txt")
      end
      local logs = {}
      local t0 = core.now()
      local sb <close> = client:create({ image = image() }, {
        timeout = 300, on_snapshot_create_logs = function(line) logs[#logs + 1] = line end })
      local first = core.now() - t0
      assert.are.equal("started", sb.state)
      local log = table.concat(logs, "\n")
      assert.matches("RUN mkdir -p /srv/data", log, 1, true)
      assert.matches("step-output-line", log, 1, true)
      local r = sb.process:exec("cat /srv/data/marker /srv/data/config.txt; echo $APP_MODE; pwd; grep ^ID= /etc/os-release")
      assert.are.equal(0, r.exit_code, r.result)
      assert.are.equal("built\nfrom this machine\ndeclarative\n/srv/data\nID=dtlua-test\n", r.result)
      -- the same definition again: no step runs
      logs = {}
      t0 = core.now()
      local again <close> = client:create({ image = image() }, {
        timeout = 300, on_snapshot_create_logs = function(line) logs[#logs + 1] = line end })
      local second = core.now() - t0
      assert.are.equal("started", again.state)
      assert.is_nil(table.concat(logs, "\n"):find("\nstep%-output%-line"))
      r = again.process:exec("cat /srv/data/marker")
      assert.are.equal("built\n", r.result)
      print(("\ndeclarative image: first create %.2f s, same definition again %.2f s"):format(first, second))
    end)
  end)

  it("makes a snapshot of a declarative image with a local directory, its build log streamed", function()
    helper.run(function()
      local dir = helper.tmpdir()
      assert(util.mkdir(dir .. "/site", 493))
      local f = assert(io.open(dir .. "/site/index.html", "wb"))
      f:write("<h1>local</h1>\n")
      f:close()
      local name = "decl-snap-" .. util.hex(util.random_bytes(3))
      local logs = {}
      local snap = client.snapshot:create({ name = name,
        image = Image.base(ref):add_local_dir(dir .. "/site", "/srv/site"):run_commands("ls /srv/site") },
        { on_logs = function(line) logs[#logs + 1] = line end, timeout = 300 })
      assert.are.equal("active", snap.state)
      local log = table.concat(logs, "\n")
      assert.matches("COPY " .. (dir .. "/site"):sub(2):gsub("%p", "%%%0") .. " /srv/site", log)
      assert.matches("\nindex%.html", log)
      local sb <close> = client:create({ snapshot = name }, { timeout = 120 })
      assert.are.equal("<h1>local</h1>\n", sb.process:exec("cat /srv/site/index.html").result)
      sb:delete()
      client.snapshot:delete(snap)
    end)
  end)

  it("builds Image.from_dockerfile with its COPY sources uploaded from the Dockerfile's directory", function()
    helper.run(function()
      local dir = helper.tmpdir()
      assert(util.mkdir(dir .. "/proj", 493))
      assert(util.mkdir(dir .. "/proj/conf", 493))
      local f = assert(io.open(dir .. "/proj/conf/app.ini", "wb"))
      f:write("[app]\nname=from-dockerfile\n")
      f:close()
      f = assert(io.open(dir .. "/proj/Dockerfile", "wb"))
      f:write("FROM " .. ref .. "\nCOPY conf /etc/app\nRUN grep name= /etc/app/app.ini\n")
      f:close()
      local logs = {}
      local sb <close> = client:create({ image = Image.from_dockerfile(dir .. "/proj/Dockerfile") },
        { timeout = 300, on_snapshot_create_logs = function(line) logs[#logs + 1] = line end })
      assert.matches("\nname=from%-dockerfile", table.concat(logs, "\n"))
      assert.are.equal("[app]\nname=from-dockerfile\n", sb.process:exec("cat /etc/app/app.ini").result)
    end)
  end)

  it("runs RUN steps in a network of their own as root, as sandboxes have (not the host's)", function()
    helper.run(function()
      local host_ns = util.readlink("/proc/self/ns/net")
      local logs = {}
      local sb <close> = client:create({ image = Image.base(ref):run_commands(
        "echo ns=$(readlink /proc/self/ns/net) ifs=$(ls /sys/class/net | tr '\\n' ,)") },
        { timeout = 300, on_snapshot_create_logs = function(line) logs[#logs + 1] = line end })
      local log = table.concat(logs, "\n")
      local ns, ifs = log:match("\nns=(%S+) ifs=(%S+)")
      assert.is_string(ns, log)
      if util.getuid() == 0 then
        assert.are_not.equal(host_ns, ns)
        assert.matches("eth0,", ifs)
      else
        -- unprivileged sandboxes share the host's network: so do build steps
        assert.are.equal(host_ns, ns)
      end
    end)
  end)

  it("ends the create of a failing RUN step with its output, the sandbox build_failed", function()
    helper.run(function()
      local img = Image.base(ref):run_commands("echo about-to-fail; exit 7")
      local logs = {}
      local ok, err = pcall(client.create, client, { image = img }, {
        timeout = 300, on_snapshot_create_logs = function(line) logs[#logs + 1] = line end })
      assert.is_false(ok)
      assert.matches("exit code 7", tostring(err))
      assert.matches("about%-to%-fail", table.concat(logs, "\n"))
      assert.is_string(err.sandbox_id, tostring(err))
      local found <close> = client:get(err.sandbox_id)
      assert.are.equal("build_failed", found.state)
      assert.matches("exit code 7", found.error_reason or "")
    end)
  end)
end)
