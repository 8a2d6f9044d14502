-- client.snapshot against a private local server and the test registry
-- (spec/support/registry.lua): create with the build log streamed to
-- on_logs, get, list, deactivate, activate, delete; a failed pull raises
-- with the server's reason; a snapshot of a prepared sandbox and a fork
-- (experimental) give new sandboxes its files.
local errors = require "daytona.errors"
local helper = require "support.helper"
local registry = require "support.registry"
local fixture = require "sdk.fixture"
local core = require "daytona.core"

describe("client.snapshot with images", function()
  local srv, client, reg

  setup(function()
    srv = fixture.server()
    client = fixture.client(srv)
    helper.run(function()
      reg = registry.start()
      reg:push_test_image("dtlua/test:1")
    end)
  end)

  teardown(function()
    if reg then helper.run(function() reg:stop() end) end
    fixture.release(srv)
  end)

  it("creates a snapshot from an image, streaming its build log, and manages it", function()
    local name = "sdk-snap-" .. core.util.hex(core.util.random_bytes(4))
    local image = reg.host .. "/dtlua/test:1"
    local lines = {}
    local snap = client.snapshot:create({ name = name, image = image, resources = { cpu = 2, memory = 2 } },
      { on_logs = function(l) lines[#lines + 1] = l end, timeout = 120 })
    assert.are.equal("active", snap.state)
    assert.are.equal(name, snap.name)
    assert.are.equal(image, snap.image_name)
    assert.are.equal(2, snap.cpu)
    local text = table.concat(lines, "\n")
    assert.matches("Creating snapshot " .. name .. " (pending)", text, 1, true)
    assert.matches("Pulling " .. image, text, 1, true)
    assert.matches("Snapshot " .. name .. " is active", text, 1, true)

    assert.are.equal(snap.id, client.snapshot:get(name).id)
    local page = client.snapshot:list{ name = name }
    assert.are.equal(1, page.total)
    assert.are.equal(1, page.total_pages)
    assert.are.equal(snap.id, page.items[1].id)

    client.snapshot:deactivate(snap)
    assert.are.equal("inactive", client.snapshot:get(snap.id).state)
    assert.are.equal("active", client.snapshot:activate(snap).state)

    client.snapshot:delete(snap)
    assert.is_true(errors.is(fixture.fails(client.snapshot.get, client.snapshot, name), errors.DaytonaNotFoundError))
  end)

  it("raises with the server's reason when the image cannot be pulled", function()
    local name = "sdk-missing-" .. core.util.hex(core.util.random_bytes(4))
    local lines = {}
    local err = fixture.fails(client.snapshot.create, client.snapshot,
      { name = name, image = reg.host .. "/dtlua/nope:1" }, { on_logs = function(l) lines[#lines + 1] = l end })
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.matches("dtlua/nope", tostring(err.message or err), 1, true)
    assert.matches("ERROR: ", table.concat(lines, "\n"), 1, true)
    client.snapshot:delete(client.snapshot:get(name))
  end)

  it("snapshots a prepared sandbox and forks one (experimental), for new sandboxes with its files", function()
    local name = "sdk-prep-" .. core.util.hex(core.util.random_bytes(4))
    local a = client:create{}
    a.fs:upload_file({ data = "ready" }, "/home/daytona/ready.txt")
    a:_experimental_create_snapshot(name, { timeout = 120 })
    assert.are.equal("started", a.state)
    assert.are.equal("active", client.snapshot:get(name).state)
    local b = client:create{ snapshot = name }
    assert.are.equal("ready", b.fs:download_file("/home/daytona/ready.txt"))
    local f = a:_experimental_fork{ name = name .. "-fork" }
    assert.are.equal(name .. "-fork", f.name)
    assert.are.equal("ready", f.fs:download_file("/home/daytona/ready.txt"))
    f:delete()
    b:delete()
    a:delete()
    client.snapshot:delete(client.snapshot:get(name))
  end)

  it("creates a sandbox from an image with its build log and resources; gpu is refused", function()
    local image = reg.host .. "/dtlua/test:1"
    local lines = {}
    local sb = client:create({ image = image, resources = { cpu = 2, memory = 2, disk = 5 } },
      { on_snapshot_create_logs = function(l) lines[#lines + 1] = l end, timeout = 120 })
    assert.are.equal("started", sb.state)
    assert.are.same({ 2, 2, 5 }, { sb.cpu, sb.memory, sb.disk })
    assert.matches("Pulling " .. image, table.concat(lines, "\n"), 1, true)
    assert.matches("ID=dtlua-test", sb.process:exec("cat /etc/os-release").result, 1, true)
    sb:delete()
    local err = fixture.fails(client.create, client, { image = image, resources = { gpu = 1 } })
    assert.matches("gpu", tostring(err.message or err), 1, true)
    -- a snapshot name that does not exist: Daytona's error, not the host's system
    err = fixture.fails(client.create, client, { snapshot = "no-such-snapshot-here" })
    assert.matches("Snapshot no-such-snapshot-here not found", tostring(err.message or err), 1, true)
  end)
end)
