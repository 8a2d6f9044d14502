-- client.snapshot and client.volume against a private local server (its
-- built-in snapshots and real volumes).
local errors = require "daytona.errors"
local fixture = require "sdk.fixture"
local core = require "daytona.core"

describe("snapshots and volumes", function()
  local srv, client
  local made = {}

  setup(function()
    srv = fixture.server()
    client = fixture.client(srv)
  end)

  teardown(function() fixture.release(srv, table.unpack(made)) end)

  it("lists, gets and activates snapshots; a failed build raises", function()
    local page = client.snapshot:list()
    assert.is_true(#page.items >= 1)
    assert.are.equal(1, page.page)
    local first = page.items[1]
    assert.is_string(first.name)
    assert.is_string(first.state)
    local got = client.snapshot:get(first.name)
    assert.are.equal(first.id, got.id)
    -- an active snapshot cannot be activated again (the API's 400)
    assert.is_true(errors.is(fixture.fails(client.snapshot.activate, client.snapshot, got), errors.DaytonaError))
    assert.is_true(errors.is(fixture.fails(client.snapshot.get, client.snapshot, "no-such-snapshot"),
      errors.DaytonaNotFoundError))
    -- an image without a tag: the server's error comes through
    local err = fixture.fails(client.snapshot.create, client.snapshot, { name = "x", image = "alpine" })
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.is_true(errors.is(fixture.fails(client.snapshot.create, client.snapshot, { name = "x" }),
      errors.DaytonaValidationError))
    -- a sandbox from the named snapshot
    local sb = client:create{ snapshot = first.name }
    made[#made + 1] = sb
    assert.are.equal("started", sb.state)
  end)

  it("creates, waits for, mounts and deletes volumes", function()
    local name = "vol-" .. core.util.hex(core.util.random_bytes(4))
    assert.is_true(errors.is(fixture.fails(client.volume.get, client.volume, name), errors.DaytonaNotFoundError))
    local v = client.volume:get(name, { create = true })
    assert.are.equal(name, v.name)
    v = client.volume:wait_for_ready(v, { timeout = 30 })
    assert.are.equal("ready", v.state)
    local listed = false
    for _, x in ipairs(client.volume:list()) do listed = listed or x.id == v.id end
    assert.is_true(listed)
    assert.is_true(errors.is(fixture.fails(client.volume.create, client.volume, name), errors.DaytonaConflictError))

    local a = client:create{ volumes = { { volume_id = v.id, mount_path = "/home/daytona/shared" } } }
    made[#made + 1] = a
    a.fs:upload_file({ data = "across" }, "/home/daytona/shared/note.txt")
    a:delete()
    local b = client:create{ volumes = { { volume_id = v.id, mount_path = "/home/daytona/data" } } }
    made[#made + 1] = b
    assert.are.equal("across", b.fs:download_file("/home/daytona/data/note.txt"))
    -- in use: refused; free: deleted
    local err = fixture.fails(client.volume.delete, client.volume, v)
    assert.is_true(errors.is(err, errors.DaytonaConflictError))
    b:delete()
    client.volume:delete(v)
  end)
end)
