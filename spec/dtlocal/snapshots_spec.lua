-- Snapshots in dtlocal over real HTTP (doc/protocol.md §3.7, doc/dtlocal.md
-- "Snapshots"): the built-in ones (the host's system under Daytona's
-- default names), the list's pagination and total, the API's errors for a
-- snapshot that does not exist, the create checks, build logs, and
-- records that survive a restart of the server.
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local registry = require "support.registry"
local core = require "daytona.core"
local json = require("dtlocal.http").json

local srv, reg, ref

local function api(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end
local function ok(want, method, path, body, opts) return dtlocal.expect(srv, want, method, path, body, opts) end

-- A structured error of status `want` whose message contains `needle`.
local function fails(want, needle, method, path, body)
  local st, b = api(method, path, body)
  assert.are.equal(want, st, ("%s %s: %s"):format(method, path, type(b) == "table" and json.encode(b) or tostring(b)))
  assert.is_table(b)
  assert.are.equal(want, b.statusCode)
  if needle then
    assert.is_truthy(b.message:find(needle, 1, true), ("message %q should contain %q"):format(b.message, needle))
  end
  return b
end

-- Poll a snapshot until its state is not one of `passing`.
local function settle(id, passing)
  local deadline = require("daytona.core").now() + 120
  while true do
    local s = ok(200, "GET", "/snapshots/" .. id)
    if not passing[s.state] then return s end
    assert.is_true(require("daytona.core").now() < deadline, "snapshot still " .. s.state)
    require("daytona.runtime.scheduler").sleep(0.05)
  end
end
local PENDING = { pending = true, pulling = true, building = true }

local function run(fn) return helper.run(fn) end

describe("dtlocal snapshots", function()
  setup(function()
    srv = dtlocal.start()
    helper.run(function()
      reg = registry.start()
      ref = reg:push_test_image("dtlua/test:1")
    end)
  end)
  teardown(function()
    if reg then helper.run(function() reg:stop() end) end
    if srv then srv.stop() end
  end)

  it("has the host's system under Daytona's default snapshot names, with their resources", function()
    run(function()
      local list = ok(200, "GET", "/snapshots")
      local names = {}
      for _, s in ipairs(list.items) do names[s.name] = s end
      for _, n in ipairs({ "dtlocal", "daytona-small", "daytona-medium", "daytona-large" }) do
        assert.is_table(names[n], n)
        assert.are.equal("active", names[n].state)
        assert.is_true(names[n].general)
      end
      assert.are.equal(2, names["daytona-medium"].cpu)
      assert.are.equal(4, names["daytona-medium"].mem)
      assert.are.equal(8, names["daytona-medium"].disk)
      -- get by name and by id
      local m = ok(200, "GET", "/snapshots/daytona-medium")
      assert.are.equal(m.id, ok(200, "GET", "/snapshots/" .. m.id).id)
      -- Daytona's default image is an alias of the host's system
      assert.are.equal("active", ok(200, "GET", "/snapshots/daytonaio%2Fsandbox:0.6.0").state)
      -- a sandbox from a default snapshot gets its resources
      local sb = ok(200, "POST", "/sandbox", { snapshot = "daytona-medium" })
      assert.are.equal("started", sb.state)
      assert.are.equal("daytona-medium", sb.snapshot)
      assert.are.same({ 2, 4, 8 }, { sb.cpu, sb.memory, sb.disk })
      local sb2 = ok(200, "POST", "/sandbox", { snapshot = "daytonaio/sandbox:0.6.0" })
      assert.are.equal("started", sb2.state)
      assert.are.equal("daytonaio/sandbox:0.6.0", sb2.snapshot)
      -- general snapshots cannot be deleted or deactivated
      fails(403, "general snapshot", "DELETE", "/snapshots/" .. m.id)
      fails(403, "general snapshot", "POST", "/snapshots/" .. m.id .. "/deactivate")
      fails(404, "no build logs", "GET", "/snapshots/" .. m.id .. "/build-logs-url")
      ok(200, "DELETE", "/sandbox/" .. sb.id)
      ok(200, "DELETE", "/sandbox/" .. sb2.id)
    end)
  end)

  it("answers a create from a snapshot that does not exist as the API does, not on the host's system", function()
    run(function()
      fails(400, "Snapshot no-such-snapshot not found. Did you add it through the Daytona Dashboard?",
        "POST", "/sandbox", { snapshot = "no-such-snapshot" })
      fails(400, "GPUs are not available locally", "POST", "/sandbox", { snapshot = "daytona-gpu" })
      fails(404, "Snapshot no-such-snapshot not found", "GET", "/snapshots/no-such-snapshot")
      -- nothing was made
      for _, s in ipairs(ok(200, "GET", "/sandbox").items) do
        assert.are_not.equal("no-such-snapshot", s.snapshot)
      end
    end)
  end)

  it("checks a create's fields, naming the one that is wrong", function()
    run(function()
      fails(400, "name", "POST", "/snapshots", {})
      fails(400, "name: Invalid snapshot name format", "POST", "/snapshots", { name = "bad name", imageName = "a:1" })
      fails(400, "imageName: Must specify an image name", "POST", "/snapshots", { name = "x1" })
      fails(400, 'imageName: Images with tag ":latest" are not allowed', "POST", "/snapshots",
        { name = "x1", imageName = "debian:latest" })
      fails(400, "imageName: Image name must include a tag", "POST", "/snapshots", { name = "x1", imageName = "debian" })
      fails(400, "imageName: Invalid digest format", "POST", "/snapshots", { name = "x1", imageName = "debian@sha256:12" })
      fails(400, "imageName: Invalid image name format", "POST", "/snapshots", { name = "x1", imageName = "de bian:1" })
      fails(400, "gpu: GPUs are not available locally", "POST", "/snapshots", { name = "x1", imageName = "a:1", gpu = 1 })
      fails(400, "cpu must be", "POST", "/snapshots", { name = "x1", imageName = "a:1", cpu = 0 })
      fails(400, "entrypoint", "POST", "/snapshots", { name = "x1", imageName = "a:1", entrypoint = 3 })
      fails(400, "sandboxClass", "POST", "/snapshots", { name = "x1", imageName = "a:1", sandboxClass = "windows" })
      fails(400, "imageName and buildInfo", "POST", "/snapshots",
        { name = "x1", imageName = "a:1", buildInfo = { dockerfileContent = "FROM a:1\n" } })
      fails(409, 'Snapshot with name "daytona-small" already exists', "POST", "/snapshots",
        { name = "daytona-small", imageName = "a:1" })
      fails(400, "gpu", "POST", "/sandbox", { buildInfo = { dockerfileContent = "FROM a:1\n" }, gpu = 1 })
      fails(400, "Cannot specify Sandbox resources when using a snapshot", "POST", "/sandbox",
        { snapshot = "daytona-small", cpu = 2 })
    end)
  end)

  it("lists with the API's pagination: total counts every match", function()
    run(function()
      local all = ok(200, "GET", "/snapshots?limit=200")
      local n = all.total
      assert.are.equal(n, #all.items)
      assert.is_true(n >= 4)
      local seen = {}
      for page = 1, n do
        local p = ok(200, "GET", "/snapshots?page=" .. page .. "&limit=1")
        assert.are.equal(n, p.total)
        assert.are.equal(n, p.totalPages)
        assert.are.equal(page, p.page)
        assert.are.equal(1, #p.items)
        assert.is_nil(seen[p.items[1].id])
        seen[p.items[1].id] = true
      end
      assert.are.equal(0, #ok(200, "GET", "/snapshots?page=" .. (n + 1) .. "&limit=1").items)
      local m = ok(200, "GET", "/snapshots?name=MEDIUM")
      assert.are.equal(1, m.total)
      assert.are.equal("daytona-medium", m.items[1].name)
      local asc = ok(200, "GET", "/snapshots?sort=name&order=asc")
      assert.are.equal(n, asc.total)
      fails(400, "sort", "GET", "/snapshots?sort=size")
      fails(400, "order", "GET", "/snapshots?order=up")
      fails(400, "limit", "GET", "/snapshots?limit=201")
      fails(400, "page", "GET", "/snapshots?page=0")
    end)
  end)

  it("makes a snapshot from a registry's image: pending -> pulling -> active, the pull in its log", function()
    run(function()
      local image = reg.host .. "/dtlua/test:1"
      local s = ok(200, "POST", "/snapshots", { name = "spec-test-image", imageName = image, cpu = 2, memory = 2 })
      assert.are.equal("pending", s.state)
      assert.are.equal(image, s.imageName)
      assert.are.equal(2, s.cpu)
      assert.are.equal(2, s.mem)
      -- the log, followed: the response ends once the pull is over
      local url = ok(200, "GET", "/snapshots/" .. s.id .. "/build-logs-url").url
      assert.are.equal(srv.api_url .. "/snapshots/" .. s.id .. "/build-logs", url)
      local st, text = api("GET", "/snapshots/" .. s.id .. "/build-logs?follow=true")
      assert.are.equal(200, st)
      assert.is_string(text)
      assert.matches("Pulling " .. image, text, 1, true)
      assert.matches("Snapshot spec-test-image is active", text, 1, true)
      local done = settle(s.id, PENDING)
      assert.are.equal("active", done.state)
      assert.is_true(done.errorReason == json.null or done.errorReason == nil)
      assert.is_number(done.size)
      -- by name, and in the list (first: made ones come before the built-in)
      assert.are.equal(s.id, ok(200, "GET", "/snapshots/spec-test-image").id)
      local list = ok(200, "GET", "/snapshots?name=spec-test")
      assert.are.equal(1, list.total)
      assert.are.equal(s.id, list.items[1].id)
      -- the log again, without follow: the same, replayed from disk
      local st2, text2 = api("GET", "/snapshots/" .. s.id .. "/build-logs")
      assert.are.equal(200, st2)
      assert.are.equal(text, text2)
      -- the name is taken
      fails(409, 'Snapshot with name "spec-test-image" already exists', "POST", "/snapshots",
        { name = "spec-test-image", imageName = image })
      -- deactivated: no sandbox from it; activated again
      assert.are.equal(204, (api("POST", "/snapshots/" .. s.id .. "/deactivate")))
      assert.are.equal("inactive", ok(200, "GET", "/snapshots/" .. s.id).state)
      fails(400, "Snapshot spec-test-image is inactive", "POST", "/sandbox", { snapshot = "spec-test-image" })
      assert.are.equal("active", ok(200, "POST", "/snapshots/" .. s.id .. "/activate").state)
      fails(400, "already active", "POST", "/snapshots/" .. s.id .. "/activate")
      -- survives a restart of the server, log included
      srv.restart()
      local again = ok(200, "GET", "/snapshots/spec-test-image")
      assert.are.equal("active", again.state)
      assert.are.equal(text, select(2, api("GET", "/snapshots/" .. s.id .. "/build-logs?follow=true")))
      -- deleted: gone, its image too
      ok(200, "DELETE", "/snapshots/" .. s.id)
      fails(404, "not found", "GET", "/snapshots/" .. s.id)
      fails(404, "not found", "GET", "/snapshots/" .. s.id .. "/build-logs")
    end)
  end)

  it("ends a snapshot of an image that is not there in error with the reason, nothing half-made", function()
    run(function()
      local before = #(core.util.readdir(srv.state_dir .. "/images/layers") or {})
      local s = ok(200, "POST", "/snapshots", { name = "spec-missing", imageName = reg.host .. "/dtlua/nope:1" })
      local done = settle(s.id, PENDING)
      assert.are.equal("error", done.state)
      assert.is_string(done.errorReason)
      assert.matches("dtlua/nope", done.errorReason, 1, true)
      local _, text = api("GET", "/snapshots/" .. s.id .. "/build-logs")
      assert.matches("ERROR: ", text, 1, true)
      -- a registry nobody serves
      local s2 = ok(200, "POST", "/snapshots", { name = "spec-noreg", imageName = "127.0.0.1:9/x/y:1" })
      local done2 = settle(s2.id, PENDING)
      assert.are.equal("error", done2.state)
      assert.matches("127.0.0.1:9", done2.errorReason, 1, true)
      -- nothing half-made in the store
      assert.are.equal(before, #(core.util.readdir(srv.state_dir .. "/images/layers") or {}))
      assert.are.same({}, core.util.readdir(srv.state_dir .. "/images/tmp") or {})
      -- a sandbox cannot be made from it
      fails(400, "Snapshot spec-missing is error", "POST", "/sandbox", { snapshot = "spec-missing" })
      fails(400, "cannot be activated - it is in error state", "POST", "/snapshots/" .. s.id .. "/activate")
      ok(200, "DELETE", "/snapshots/" .. s.id)
      ok(200, "DELETE", "/snapshots/" .. s2.id)
    end)
  end)

  it("snapshots a prepared sandbox; a new sandbox from the snapshot has the prepared files", function()
    run(function()
      local a = ok(200, "POST", "/sandbox", {})
      dtlocal.exec(srv, a.id, "echo prepared > /home/daytona/prepared.txt && mkdir -p /home/daytona/proj/sub"
        .. " && echo deep > /home/daytona/proj/sub/f && sudo sh -c 'echo tool > /usr/local/bin/spec-tool"
        .. " && chmod 755 /usr/local/bin/spec-tool'")
      local r = ok(200, "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "spec-prepared" })
      assert.are.equal("snapshotting", r.state)
      fails(400, "includeMemory", "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "x2", includeMemory = true })
      fails(400, "name: Invalid snapshot name", "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "a b" })
      local snap = settle("spec-prepared", { pending = true, building = true })
      assert.are.equal("active", snap.state, tostring(snap.errorReason))
      -- the sandbox is back as it was
      local deadline = core.now() + 30
      while ok(200, "GET", "/sandbox/" .. a.id).state == "snapshotting" and core.now() < deadline do
        require("daytona.runtime.scheduler").sleep(0.05)
      end
      assert.are.equal("started", ok(200, "GET", "/sandbox/" .. a.id).state)
      fails(409, "already exists", "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "spec-prepared" })

      local b = ok(200, "POST", "/sandbox", { snapshot = "spec-prepared" })
      assert.are.equal("started", b.state)
      assert.are.equal("spec-prepared", b.snapshot)
      assert.are.equal("prepared\ndeep\ntool\ndaytona daytona\n", dtlocal.exec(srv, b.id,
        "cat /home/daytona/prepared.txt /home/daytona/proj/sub/f /usr/local/bin/spec-tool;"
        .. " stat -c '%U %G' /home/daytona/prepared.txt"))
      -- its own files from then on: a change in b is not in a
      dtlocal.exec(srv, b.id, "echo changed > /home/daytona/prepared.txt")
      assert.are.equal("prepared\n", dtlocal.exec(srv, a.id, "cat /home/daytona/prepared.txt"))
      -- in use: not deleted
      fails(409, "in use", "DELETE", "/snapshots/" .. snap.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
      local deadline2 = core.now() + 30
      while api("GET", "/sandbox/" .. b.id) == 200 and core.now() < deadline2 do
        require("daytona.runtime.scheduler").sleep(0.05)
      end
      ok(200, "DELETE", "/snapshots/" .. snap.id)
      ok(200, "DELETE", "/sandbox/" .. a.id)
    end)
  end)

  it("forks a sandbox: a new one with its files and settings, which knows its parent", function()
    run(function()
      local a = ok(200, "POST", "/sandbox", { env = { SPEC_FORK = "yes" }, labels = { team = "forks" } })
      dtlocal.exec(srv, a.id, "echo before-fork > /home/daytona/f.txt")
      local child = ok(200, "POST", "/sandbox/" .. a.id .. "/fork", { name = "spec-fork-child" })
      assert.are_not.equal(a.id, child.id)
      assert.are.equal("spec-fork-child", child.name)
      assert.are.equal("started", child.state)
      assert.are.equal("forks", child.labels.team)
      assert.are.equal("before-fork\nyes\n", dtlocal.exec(srv, child.id, "cat /home/daytona/f.txt; echo $SPEC_FORK"))
      assert.are.equal("started", ok(200, "GET", "/sandbox/" .. a.id).state)
      assert.are.equal(a.id, ok(200, "GET", "/sandbox/" .. child.id .. "/parent").id)
      local kids = ok(200, "GET", "/sandbox/" .. a.id .. "/forks")
      assert.are.equal(1, #kids)
      assert.are.equal(child.id, kids[1].id)
      assert.are.equal(a.id, ok(200, "GET", "/sandbox/" .. child.id .. "/ancestors")[1].id)
      fails(409, "already exists", "POST", "/sandbox/" .. a.id .. "/fork", { name = "spec-fork-child" })
      -- a stopped sandbox forks too, and stays stopped
      ok(200, "POST", "/sandbox/" .. a.id .. "/stop")
      local child2 = ok(200, "POST", "/sandbox/" .. a.id .. "/fork", {})
      assert.are.equal("started", child2.state)
      assert.are.equal("before-fork\n", dtlocal.exec(srv, child2.id, "cat /home/daytona/f.txt"))
      assert.are.equal("stopped", ok(200, "GET", "/sandbox/" .. a.id).state)
      -- an archived one is not a state to capture from
      ok(200, "POST", "/sandbox/" .. a.id .. "/archive")
      fails(409, "archived", "POST", "/sandbox/" .. a.id .. "/fork", {})
      fails(409, "archived", "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "spec-archived" })
      ok(200, "DELETE", "/sandbox/" .. child2.id)
      ok(200, "DELETE", "/sandbox/" .. child.id)
      ok(200, "DELETE", "/sandbox/" .. a.id)
    end)
  end)

  -- wait until a sandbox leaves the states in `passing`
  local function sandbox_settle(id, passing)
    local deadline = core.now() + 120
    while true do
      local sb = ok(200, "GET", "/sandbox/" .. id)
      if not passing[sb.state] then return sb end
      assert.is_true(core.now() < deadline, "sandbox still " .. sb.state)
      require("daytona.runtime.scheduler").sleep(0.05)
    end
  end
  local function gone(id)
    local deadline = core.now() + 30
    while api("GET", "/sandbox/" .. id) == 200 and core.now() < deadline do
      require("daytona.runtime.scheduler").sleep(0.05)
    end
  end

  it("starts sandboxes on a snapshot of a registry's image, and from an image (buildInfo) with its build log", function()
    run(function()
      local image = reg.host .. "/dtlua/test:1"
      local snap = ok(200, "POST", "/snapshots", { name = "spec-img", imageName = image, cpu = 2, memory = 2 })
      assert.are.equal("active", settle(snap.id, PENDING).state)
      local a = ok(200, "POST", "/sandbox", { snapshot = "spec-img" })
      assert.are.equal("started", a.state, tostring(a.errorReason))
      assert.are.equal("spec-img", a.snapshot)
      assert.are.same({ 2, 2 }, { a.cpu, a.memory })
      assert.matches("ID=dtlua-test", dtlocal.exec(srv, a.id, "cat /etc/os-release"), 1, true)

      -- from an image: answered in pending_build, then building_snapshot, then started
      local b = ok(200, "POST", "/sandbox", { buildInfo = { dockerfileContent = "FROM " .. image .. "\n" },
                                              cpu = 2, memory = 3, disk = 4 })
      assert.are.equal("pending_build", b.state)
      assert.are.same({ 2, 3, 4 }, { b.cpu, b.memory, b.disk })
      local url = ok(200, "GET", "/sandbox/" .. b.id .. "/build-logs-url").url
      assert.are.equal(srv.api_url .. "/sandbox/" .. b.id .. "/build-logs", url)
      local st, text = api("GET", "/sandbox/" .. b.id .. "/build-logs?follow=true")
      assert.are.equal(200, st)
      assert.matches("Pulling " .. image, text, 1, true)
      local done = sandbox_settle(b.id, { pending_build = true, building_snapshot = true, creating = true })
      assert.are.equal("started", done.state, tostring(done.errorReason))
      assert.matches("ID=dtlua-test", dtlocal.exec(srv, b.id, "cat /etc/os-release"), 1, true)
      assert.is_string(done.buildInfo.snapshotRef)
      -- the image's user, as for a sandbox on a snapshot of the image
      assert.are.equal(a.user, done.user)
      -- the same definition again: made once, reused; started at once, as
      -- a create from a snapshot (no pending_build)
      local c = ok(200, "POST", "/sandbox", { buildInfo = { dockerfileContent = "FROM " .. image .. "\n" } })
      assert.are.equal("started", c.state)
      assert.are.equal(a.user, c.user)
      local _, text2 = api("GET", "/sandbox/" .. c.id .. "/build-logs?follow=true")
      assert.matches("Using the image built before", text2, 1, true)
      -- an image the registry does not have: build_failed with the reason
      local d = ok(200, "POST", "/sandbox", { buildInfo = { dockerfileContent = "FROM " .. reg.host .. "/dtlua/nope:1\n" } })
      local failed = sandbox_settle(d.id, { pending_build = true, building_snapshot = true })
      assert.are.equal("build_failed", failed.state)
      assert.matches("dtlua/nope", failed.errorReason, 1, true)
      fails(404, "no build logs", "GET", "/sandbox/" .. a.id .. "/build-logs-url")

      -- a snapshot of a sandbox on the image, and a fork of it, have its files
      dtlocal.exec(srv, a.id, "echo on-image > /home/daytona/img.txt")
      ok(200, "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "spec-img-prepared" })
      assert.are.equal("active", settle("spec-img-prepared", { pending = true, building = true }).state)
      local e = ok(200, "POST", "/sandbox", { snapshot = "spec-img-prepared" })
      assert.are.equal("on-image\nID=dtlua-test\n", dtlocal.exec(srv, e.id,
        "cat /home/daytona/img.txt; grep ^ID= /etc/os-release"))
      local f = ok(200, "POST", "/sandbox/" .. a.id .. "/fork", {})
      assert.are.equal("on-image\n", dtlocal.exec(srv, f.id, "cat /home/daytona/img.txt"))

      fails(409, "in use", "DELETE", "/snapshots/" .. snap.id)
      for _, x in ipairs({ a, b, c, d, e, f }) do ok(200, "DELETE", "/sandbox/" .. x.id) end
      for _, x in ipairs({ a, b, c, d, e, f }) do gone(x.id) end
      ok(200, "DELETE", "/snapshots/spec-img-prepared")
      ok(200, "DELETE", "/snapshots/" .. snap.id)
    end)
  end)

  it("builds a snapshot from a Dockerfile: the steps' output in its log, a failing step build_failed", function()
    run(function()
      local image = reg.host .. "/dtlua/test:1"
      local df = "FROM " .. image .. "\nRUN echo built-by-step > /built.txt && echo step-output\nENV SPEC_BUILT=yes\n"
      local s = ok(200, "POST", "/snapshots", { name = "spec-built", buildInfo = { dockerfileContent = df } })
      assert.are.equal("pending", s.state)
      local _, text = api("GET", "/snapshots/" .. s.id .. "/build-logs?follow=true")
      assert.matches("step-output", text, 1, true)
      local done = settle(s.id, PENDING)
      assert.are.equal("active", done.state, tostring(done.errorReason))
      assert.are.equal(df, done.buildInfo.dockerfileContent)
      -- the same definition under another name: built before, active at once
      local again = ok(200, "POST", "/snapshots", { name = "spec-built-again", buildInfo = { dockerfileContent = df } })
      assert.are.equal("active", again.state)
      assert.matches("Using the image built before", select(2, api("GET", "/snapshots/" .. again.id .. "/build-logs")),
        1, true)
      ok(200, "DELETE", "/snapshots/" .. again.id)
      local sb = ok(200, "POST", "/sandbox", { snapshot = "spec-built" })
      assert.are.equal("built-by-step\nyes\n", dtlocal.exec(srv, sb.id, "cat /built.txt; echo $SPEC_BUILT"))

      local bad = ok(200, "POST", "/snapshots", { name = "spec-bad-step",
        buildInfo = { dockerfileContent = "FROM " .. image .. "\nRUN echo about-to-fail && exit 3\n" } })
      local failed = settle(bad.id, PENDING)
      assert.are.equal("build_failed", failed.state)
      assert.is_string(failed.errorReason)
      local _, btext = api("GET", "/snapshots/" .. bad.id .. "/build-logs")
      assert.matches("about-to-fail", btext, 1, true)
      assert.matches("ERROR: ", btext, 1, true)

      ok(200, "DELETE", "/sandbox/" .. sb.id)
      local deadline = core.now() + 30
      while api("GET", "/sandbox/" .. sb.id) == 200 and core.now() < deadline do
        require("daytona.runtime.scheduler").sleep(0.05)
      end
      ok(200, "DELETE", "/snapshots/" .. s.id)
      ok(200, "DELETE", "/snapshots/" .. bad.id)
    end)
  end)

  it("copies a sandbox's links as links: a snapshot never takes in host files through them", function()
    run(function()
      local a = ok(200, "POST", "/sandbox", {})
      -- links a capture as root would read host files through, were they followed
      dtlocal.exec(srv, a.id, "ln -s /etc/shadow /home/daytona/shadow-link && ln -s / /home/daytona/root-link"
        .. " && ln -s " .. srv.state_dir .. " /home/daytona/state-link && mkdir -p /home/daytona/d"
        .. " && ln -s /root /home/daytona/d/root-dir-link")
      ok(200, "POST", "/sandbox/" .. a.id .. "/snapshot", { name = "spec-links" })
      local snap = settle("spec-links", { pending = true, building = true })
      assert.are.equal("active", snap.state, tostring(snap.errorReason))
      local b = ok(200, "POST", "/sandbox", { snapshot = "spec-links" })
      assert.are.equal("symbolic link /etc/shadow\nsymbolic link /\nsymbolic link " .. srv.state_dir
        .. "\nsymbolic link /root\n", dtlocal.exec(srv, b.id,
        "for l in shadow-link root-link state-link d/root-dir-link; do"
        .. " echo \"$(stat -c %F /home/daytona/$l) $(readlink /home/daytona/$l)\"; done"))
      -- and nothing of the host's state dir or /etc/shadow is in the store's layers
      local found = require("daytona.runtime.process").run({ "sh", "-c",
        "grep -rl -e \"$1\" \"$2\" 2>/dev/null | head -1", "sh", srv.token,
        srv.state_dir .. "/images/layers" }, { timeout = 60 })
      assert.are.equal("", found.stdout)
      -- a restart does not fill the new sandbox again: what it changed stays
      dtlocal.exec(srv, b.id, "rm /home/daytona/shadow-link && echo mine > /home/daytona/mine.txt")
      srv.restart()
      local deadline = core.now() + 60
      while ok(200, "GET", "/sandbox/" .. b.id).state ~= "started" and core.now() < deadline do
        require("daytona.runtime.scheduler").sleep(0.05)
      end
      assert.are.equal("mine\nno\n", dtlocal.exec(srv, b.id,
        "cat /home/daytona/mine.txt; test -L /home/daytona/shadow-link && echo yes || echo no"))
      ok(200, "DELETE", "/sandbox/" .. b.id)
      ok(200, "DELETE", "/sandbox/" .. a.id)
    end)
  end)

  it("finishes the pulls and builds a crash of the server cut short, after its restart", function()
    run(function()
      local image = reg.host .. "/dtlua/test:1"
      -- a fresh tag, so that the pull has to reach the registry
      reg:push_test_image("dtlua/crash:1")
      local s = ok(200, "POST", "/snapshots", { name = "spec-crash", imageName = reg.host .. "/dtlua/crash:1" })
      local b = ok(200, "POST", "/sandbox", { buildInfo = { dockerfileContent = "FROM " .. image .. "\nENV CRASH=1\n" } })
      srv.crash()
      srv.restart()
      assert.are.equal("active", settle(s.id, PENDING).state)
      local done = sandbox_settle(b.id, { pending_build = true, building_snapshot = true, creating = true,
                                          starting = true })
      assert.are.equal("started", done.state, tostring(done.errorReason))
      assert.are.equal("1\n", dtlocal.exec(srv, b.id, "echo $CRASH"))
      -- nothing half-made left in the store's tmp
      assert.are.same({}, core.util.readdir(srv.state_dir .. "/images/tmp") or {})
      ok(200, "DELETE", "/sandbox/" .. b.id)
      gone(b.id)
      ok(200, "DELETE", "/snapshots/" .. s.id)
    end)
  end)
end)
