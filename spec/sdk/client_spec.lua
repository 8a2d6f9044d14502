-- The client and sandbox lifecycle against a private local server.
local daytona = require "daytona"
local errors = require "daytona.errors"
local fixture = require "sdk.fixture"
local core = require "daytona.core"

describe("daytona client", function()
  local srv, client
  local made = {}

  local function create(params)
    local sb = client:create(params)
    made[#made + 1] = sb
    return sb
  end

  setup(function()
    srv = fixture.server()
    client = fixture.client(srv)
  end)

  teardown(function() fixture.release(srv, table.unpack(made)) end)

  it("creates a started sandbox with its fields, env vars and language label", function()
    local sb = create{ env_vars = { GREETING = "hello" }, labels = { suite = "client" },
      auto_stop_interval = 0, language = "python" }
    assert.are.equal("started", sb.state)
    assert.is_string(sb.id)
    assert.is_string(sb.name)
    assert.is_string(sb.toolbox_proxy_url)
    assert.is_number(sb.cpu)
    assert.is_number(sb.memory)
    assert.is_number(sb.disk)
    assert.are.equal("client", sb.labels.suite)
    assert.are.equal("python", sb.labels["code-toolbox-language"])
    assert.are.equal(0, sb.auto_stop_interval)
    assert.are.equal("hello", sb.env.GREETING)
    assert.matches("^Sandbox{id=\"", tostring(sb))
    assert.are.equal("hello\n", sb.process:exec("echo $GREETING").result)
  end)

  it("gets a sandbox by id and by name; a missing one raises DaytonaNotFoundError", function()
    local sb = create{ name = "byname-" .. core.util.hex(core.util.random_bytes(4)) }
    assert.are.equal(sb.id, client:get(sb.id).id)
    assert.are.equal(sb.id, client:get(sb.name).id)
    local err = fixture.fails(client.get, client, "no-such-sandbox")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    assert.are.equal(404, err.status_code)
    assert.is_table(err.headers)
  end)

  it("lists with label filters as an iterator over cursor pages", function()
    local tag = core.util.hex(core.util.random_bytes(6))
    local ids = {}
    for _ = 1, 3 do ids[create{ labels = { tag = tag } }.id] = true end
    local seen, n = {}, 0
    for sb in client:list{ labels = { tag = tag }, limit = 1 } do
      n = n + 1
      assert.is_true(ids[sb.id] ~= nil)
      seen[sb.id] = true
    end
    assert.are.equal(3, n)
    assert.are.equal(3, #client:list{ labels = { tag = tag } }:all())
    assert.are.equal(0, #client:list{ labels = { tag = tag .. "-none" } }:all())
    assert.is_not_nil(client:find_one{ labels = { tag = tag } })
  end)

  it("stops, starts (sandbox and client forms) and refreshes", function()
    local sb = create{}
    sb:stop()
    assert.are.equal("stopped", sb.state)
    assert.are.equal("stopped", client:get(sb.id).state)
    -- a stopped sandbox has no toolbox: a wrong-state error, not a hang
    local err = fixture.fails(sb.process.exec, sb.process, "true")
    assert.is_true(errors.is(err, errors.DaytonaError))
    client:start(sb, { timeout = 60 })
    assert.are.equal("started", sb.state)
    client:stop(sb.id, { force = true })
    sb:refresh_data()
    assert.are.equal("stopped", sb.state)
    sb:start()
    sb:wait_for_sandbox_start()
    assert.are.equal("0\n", sb.process:exec("echo $?").result)
  end)

  it("deletes, after which the sandbox is gone", function()
    local sb = client:create{}
    sb:delete()
    assert.are.equal("destroyed", sb.state)
    local err = fixture.fails(client.get, client, sb.id)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    err = fixture.fails(sb.delete, sb)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
  end)

  it("deletes a <close> sandbox at the end of its scope", function()
    local id
    do
      local sb <close> = client:create{}
      id = sb.id
      assert.are.equal("started", client:get(id).state)
    end
    local err = fixture.fails(client.get, client, id)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
  end)

  it("deletes a <close> sandbox when its scope ends by an error, keeping that error", function()
    local id
    local ok, err = pcall(function()
      local sb <close> = client:create{}
      id = sb.id
      error("boom", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("boom", err)
    assert.is_true(errors.is(fixture.fails(client.get, client, id), errors.DaytonaNotFoundError))
  end)

  it("sets labels and the auto-stop/archive/delete intervals", function()
    local sb = create{}
    local labels = sb:set_labels{ a = "1", b = "two" }
    assert.are.equal("1", labels.a)
    sb:set_autostop_interval(30)
    sb:set_auto_archive_interval(60)
    sb:set_auto_delete_interval(-1)
    sb:refresh_data()
    assert.are.equal("two", sb.labels.b)
    assert.are.equal(30, sb.auto_stop_interval)
    assert.are.equal(60, sb.auto_archive_interval)
    assert.are.equal(-1, sb.auto_delete_interval)
    sb:refresh_activity()
  end)

  it("reports the work and home directories", function()
    local sb = create{}
    assert.matches("^/", sb:get_work_dir())
    assert.matches("^/", sb:get_user_home_dir())
  end)

  it("makes preview links, signed preview URLs and SSH access", function()
    local sb = create{}
    local link = sb:get_preview_link(3000)
    assert.is_string(link.url)
    assert.is_string(link.token)
    local signed = sb:create_signed_preview_url(3000, { expires_in_seconds = 120 })
    assert.is_string(signed.url)
    assert.is_string(signed.token)
    sb:expire_signed_preview_url(3000, signed.token)
    local ok, ssh = pcall(sb.create_ssh_access, sb, { expires_in_minutes = 5 })
    if not ok then
      -- the local server has no SSH gateway: a clear error, not a crash
      assert.is_true(errors.is(ssh, errors.DaytonaError))
      assert.are.equal(501, ssh.status_code)
      return
    end
    assert.is_string(ssh.token)
    local v = sb:validate_ssh_access(ssh.token)
    assert.is_true(v.valid)
    sb:revoke_ssh_access(ssh.token)
    assert.is_false(sb:validate_ssh_access(ssh.token).valid)
  end)

  it("updates the network settings", function()
    local sb = create{}
    -- as root the local server enforces them on a running sandbox (what
    -- gets through: spec/dtlocal/network_spec.lua, domain_allow_spec.lua)
    sb:update_network_settings{ network_allow_list = { "10.0.0.0/8", "192.168.0.0/16" } }
    sb:refresh_data()
    assert.are.equal("10.0.0.0/8,192.168.0.0/16", sb.network_allow_list)
    sb:update_network_settings{ domain_allow_list = "example.com" }
    sb:refresh_data()
    assert.are.equal("example.com", sb.domain_allow_list)
    sb:update_network_settings{ domain_allow_list = "" }
    local derr = fixture.fails(sb.update_network_settings, sb, { domain_allow_list = "*example.com" })
    assert.is_true(errors.is(derr, errors.DaytonaError))
    assert.are.equal(400, derr.status_code)
    assert.is_truthy(derr.message:find("domainAllowList", 1, true))
    sb:update_network_settings{ network_block_all = true }
    sb:refresh_data()
    assert.is_true(sb.network_block_all)
    assert.is_nil(sb.network_allow_list)
    -- its own network: eth0 beside lo, the sandbox's link to the host
    local r = sb.process:exec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '")
    assert.are.equal("eth0 lo", r.result:match("^%s*(.-)%s*$"))
  end)

  it("refuses a wrong-state transition with the server's error", function()
    local sb = create{}
    -- archiving needs a stopped sandbox
    local err = fixture.fails(sb.archive, sb)
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.is_number(err.status_code)
    assert.is_true(err.status_code >= 400 and err.status_code < 500)
  end)

  it("archives a stopped sandbox and starts it again", function()
    local sb = create{}
    sb.fs:upload_file({ data = "kept" }, "keep.txt")
    sb:stop()
    sb:archive()
    assert.are.equal("archived", sb.state)
    sb:start()
    assert.are.equal("started", sb.state)
    assert.are.equal("kept", sb.fs:download_file("keep.txt"))
  end)

  it("resizes, and refuses what the state does not allow", function()
    local sb = create{}
    local cpu = sb.cpu
    sb:resize({ cpu = cpu + 1 }, { timeout = 30 })
    assert.are.equal(cpu + 1, sb.cpu)
    sb:wait_for_resize_complete()
    -- disk needs a stopped sandbox
    local err = fixture.fails(sb.resize, sb, { disk = sb.disk + 1 })
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.is_true(err.status_code == 400 or err.status_code == 409)
    -- recover is for sandboxes in error
    err = fixture.fails(sb.recover, sb)
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.is_number(err.status_code)
  end)

  it("creates 20 sandboxes concurrently with daytona.all", function()
    local posts, finished = {}, {}
    local c = fixture.client(srv, { on_request = function(method, url)
      if method == "POST" and url:match("/sandbox$") then posts[#posts + 1] = core.now() end
    end })
    local fns = {}
    for i = 1, 20 do
      fns[i] = function()
        local sb = c:create{ labels = { batch = "20" } }
        finished[#finished + 1] = core.now()
        return sb
      end
    end
    local sbs = daytona.all(fns)
    local ids = {}
    for _, sb in ipairs(sbs) do
      made[#made + 1] = sb
      assert.are.equal("started", sb.state)
      ids[sb.id] = true
    end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.are.equal(20, n)
    -- concurrent: every create was sent before the first one came back
    assert.are.equal(20, #posts)
    table.sort(posts)
    table.sort(finished)
    assert.is_true(posts[20] < finished[1], "creates did not overlap")
  end)

  it("raises DaytonaAuthenticationError for a wrong key", function()
    local bad = fixture.client(srv, { api_key = "wrong" })
    local err = fixture.fails(bad.get, bad, "x")
    assert.is_true(errors.is(err, errors.DaytonaAuthenticationError))
    assert.are.equal(401, err.status_code)
  end)

  it("retries a refused connection with backoff, and not when retries are off", function()
    local n = 0
    local c = daytona.new{ api_key = "k", api_url = "http://127.0.0.1:9/api", target = "t",
      retry = { retries = 2, base_delay = 0.01 }, on_request = function() n = n + 1 end }
    local err = fixture.fails(c.get, c, "x")
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
    assert.are.equal("ECONNREFUSED", err.code)
    assert.are.equal(3, n)
    n = 0
    c = daytona.new{ api_key = "k", api_url = "http://127.0.0.1:9/api", target = "t", retry = false,
      on_request = function() n = n + 1 end }
    fixture.fails(c.get, c, "x")
    assert.are.equal(1, n)
  end)

  it("times out a create that cannot finish in time", function()
    local err = fixture.fails(client.create, client, { timeout = 0.001 })
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
    for sb in client:list{} do
      if sb.state ~= "destroyed" then made[#made + 1] = sb end
    end
  end)
end)
