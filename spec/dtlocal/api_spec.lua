-- The control plane of dtlocal over real HTTP: every /api route the SDKs
-- use, their error paths (401, 404, 400 naming the field, 409), listing
-- and pagination, lifecycle and persistence (across stop/start and across
-- a restart of the server), auto-stop, ephemeral sandboxes, forwarding to
-- the toolbox daemon, and many concurrent execs.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "daytona.runtime.http"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local json = require("dtlocal.http").json

local srv

-- percent-encode a query value
local function http_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- One request; returns status, decoded body (or raw text), headers.
local function call(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end

local function api(method, path, body, opts) return call(method, path, body, opts) end

-- status must be `want`; returns the body
local function ok(want, method, path, body, opts) return dtlocal.expect(srv, want, method, path, body, opts) end

-- A structured error body of status `want` whose message contains `needle`.
local function fails(want, needle, method, path, body, opts)
  local st, b = api(method, path, body, opts)
  assert.are.equal(want, st, ("%s %s: %s"):format(method, path, type(b) == "table" and json.encode(b) or tostring(b)))
  assert.is_table(b)
  assert.are.equal(want, b.statusCode)
  assert.is_string(b.code)
  assert.is_string(b.error)
  assert.is_string(b.timestamp)
  assert.are.equal(method, b.method)
  assert.is_truthy(b.path:find("/api/", 1, true) or b.path:find("/toolbox/", 1, true) or b.path:find("/preview/", 1, true))
  if needle then
    assert.is_truthy(b.message:find(needle, 1, true),
      ("message %q should contain %q"):format(b.message, needle))
  end
  return b
end

local function create(body)
  return ok(200, "POST", "/sandbox", body or {})
end

local function tb(id, path, body, opts)
  opts = opts or {}
  opts.base = srv.toolbox_url .. "/" .. id
  return call(body and "POST" or "GET", path, body, opts)
end

local function exec(id, command) return dtlocal.exec(srv, id, command) end

local function run(fn) return helper.run(fn) end

describe("dtlocal control plane", function()
  setup(function()
    srv = dtlocal.start()
  end)

  teardown(function()
    if srv then srv.stop() end
  end)

  it("refuses requests without the right token, with the structured body", function()
    run(function()
      fails(401, "missing authentication", "GET", "/sandbox", nil, { token = false })
      fails(401, "invalid", "GET", "/sandbox", nil, { token = "wrong-token-123" })
      fails(401, nil, "POST", "/sandbox", {}, { token = "x" })
      -- toolbox routes too
      local st = call("GET", "/nope/version", nil, { base = srv.toolbox_url, token = false })
      assert.are.equal(401, st)
    end)
  end)

  it("answers /config with the toolbox URL and 404 for unknown routes", function()
    run(function()
      local c = ok(200, "GET", "/config")
      assert.are.equal(srv.toolbox_url, c.proxyToolboxUrl)
      assert.are.equal(43200, c.maxAutoArchiveInterval)
      assert.is_string(c.defaultSnapshot)
      fails(404, "Cannot GET", "GET", "/no/such/route")
      fails(404, "not found", "GET", "/sandbox/no-such-sandbox")
    end)
  end)

  it("creates a sandbox with the API's defaults and gets it by id and by name", function()
    run(function()
      local t0 = core.now()
      local s = create{ name = "spec-one", env = { FOO = "bar" }, labels = { team = "a" } }
      local took = core.now() - t0
      assert.are.equal("started", s.state)
      assert.is_truthy(s.id:match("^%x+%-%x+%-4%x+%-%x+%-%x+$"))
      assert.are.equal("spec-one", s.name)
      assert.are.equal("python", s.labels["code-toolbox-language"])
      assert.are.equal("a", s.labels.team)
      assert.are.equal("bar", s.env.FOO)
      assert.are.equal("daytona", s.user)
      assert.are.equal(15, s.autoStopInterval)
      assert.are.equal(10080, s.autoArchiveInterval)
      assert.are.equal(-1, s.autoDeleteInterval)
      assert.are.equal(srv.toolbox_url, s.toolboxProxyUrl)
      assert.are.same({}, s.volumes)
      assert.is_truthy(s.createdAt:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"))
      assert.is_true(took < 5, "create took " .. took .. " s")
      local g = ok(200, "GET", "/sandbox/" .. s.id)
      assert.are.equal(s.id, g.id)
      local n = ok(200, "GET", "/sandbox/spec-one")
      assert.are.equal(s.id, n.id)
      -- the env reaches the sandbox
      assert.are.equal("bar\n", exec(s.id, "echo $FOO"))
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("validates create bodies with 400 naming the field", function()
    run(function()
      fails(400, "autoStopInterval", "POST", "/sandbox", { autoStopInterval = -1 })
      fails(400, "autoArchiveInterval", "POST", "/sandbox", { autoArchiveInterval = 1.5 })
      fails(400, "labels.team", "POST", "/sandbox", { labels = { team = 3 } })
      fails(400, "env", "POST", "/sandbox", { env = { ["1BAD"] = "x" } })
      fails(400, "name", "POST", "/sandbox", { name = "a/b" })
      fails(400, "networkAllowList", "POST", "/sandbox", { networkAllowList = "10.0.0.0/33" })
      fails(400, "resources", "POST", "/sandbox", { cpu = 2 })
      fails(400, "buildInfo", "POST", "/sandbox", { snapshot = "x", buildInfo = { dockerfileContent = "FROM x\n" } })
      fails(400, "buildInfo.contextHashes", "POST", "/sandbox",
        { buildInfo = { dockerfileContent = "FROM debian:12\nRUN true\n", contextHashes = { 1 } } })
      fails(400, "not valid JSON", "POST", "/sandbox", "{nope")
      fails(400, "JSON object", "POST", "/sandbox", "[1,2]")
      fails(400, "code-toolbox-language", "POST", "/sandbox", { labels = { ["code-toolbox-language"] = "cobol" } })
      fails(400, "user", "POST", "/sandbox", { user = "Bad User" })
    end)
  end)

  it("refuses a second sandbox with the same name (409)", function()
    run(function()
      local s = create{ name = "spec-dup" }
      fails(409, "already exists", "POST", "/sandbox", { name = "spec-dup" })
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("lists with a label filter and follows nextCursor", function()
    run(function()
      local ids = {}
      for i = 1, 5 do ids[i] = create{ labels = { suite = "paging", i = tostring(i) } }.id end
      create{ labels = { suite = "other" } }
      local seen, pages, cursor = {}, 0, nil
      repeat
        local q = "?limit=2&labels=" .. http_escape(json.encode({ suite = "paging" }))
        if cursor then q = q .. "&cursor=" .. cursor end
        local page = ok(200, "GET", "/sandbox" .. q)
        pages = pages + 1
        assert.is_true(#page.items <= 2)
        for _, it in ipairs(page.items) do
          assert.are.equal("paging", it.labels.suite)
          assert.is_nil(it.env)                       -- a list item has no env
          assert.are.equal(srv.toolbox_url, it.toolboxProxyUrl)
          assert.is_nil(seen[it.id])
          seen[it.id] = true
        end
        cursor = page.nextCursor ~= json.null and page.nextCursor or nil
      until not cursor
      assert.are.equal(3, pages)
      for _, id in ipairs(ids) do assert.is_true(seen[id]) end
      -- newest first by default
      local all = ok(200, "GET", "/sandbox?labels=" .. http_escape(json.encode({ suite = "paging" })))
      assert.are.equal(ids[5], all.items[1].id)
      assert.are.equal(5, #all.items)
      local asc = ok(200, "GET", "/sandbox?order=asc&sort=createdAt&labels=" .. http_escape(json.encode({ suite = "paging" })))
      assert.are.equal(ids[1], asc.items[1].id)
      -- the older page-number listing
      local p = ok(200, "GET", "/sandbox/paginated?page=2&limit=2&labels=" .. http_escape(json.encode({ suite = "paging" })))
      assert.are.equal(5, p.total)
      assert.are.equal(2, p.page)
      assert.are.equal(3, p.totalPages)
      assert.are.equal(2, #p.items)
      -- states filter, repeated keys
      local st = ok(200, "GET", "/sandbox?states=stopped&states=archived&labels=" .. http_escape(json.encode({ suite = "paging" })))
      assert.are.equal(0, #st.items)
      fails(400, "labels", "GET", "/sandbox?labels=notjson")
      fails(400, "limit", "GET", "/sandbox?limit=0")
      fails(400, "cursor", "GET", "/sandbox?cursor=zz")
      fails(400, "states", "GET", "/sandbox?states=sleeping")
      for _, id in ipairs(ids) do ok(200, "DELETE", "/sandbox/" .. id) end
    end)
  end)

  it("sets labels, intervals, public and network settings", function()
    run(function()
      local s = create{}
      local l = ok(200, "PUT", "/sandbox/" .. s.id .. "/labels", { labels = { x = "1", ["code-toolbox-language"] = "typescript" } })
      assert.are.same({ x = "1", ["code-toolbox-language"] = "typescript" }, l.labels)
      assert.are.same(l.labels, ok(200, "GET", "/sandbox/" .. s.id).labels)
      fails(400, "labels", "PUT", "/sandbox/" .. s.id .. "/labels", { labels = { x = 1 } })
      fails(400, "labels is required", "PUT", "/sandbox/" .. s.id .. "/labels", {})

      assert.are.equal(30, ok(201, "POST", "/sandbox/" .. s.id .. "/autostop/30").autoStopInterval)
      fails(400, "interval", "POST", "/sandbox/" .. s.id .. "/autostop/-1")
      fails(400, "interval", "POST", "/sandbox/" .. s.id .. "/autostop/abc")
      assert.are.equal(43200, ok(201, "POST", "/sandbox/" .. s.id .. "/autoarchive/0").autoArchiveInterval)
      assert.are.equal(60, ok(201, "POST", "/sandbox/" .. s.id .. "/autoarchive/60").autoArchiveInterval)
      assert.are.equal(-1, ok(201, "POST", "/sandbox/" .. s.id .. "/autodelete/-1").autoDeleteInterval)
      assert.are.equal(5, ok(201, "POST", "/sandbox/" .. s.id .. "/autodelete/5").autoDeleteInterval)

      assert.is_true(ok(201, "POST", "/sandbox/" .. s.id .. "/public/true").public)
      assert.is_false(ok(201, "POST", "/sandbox/" .. s.id .. "/public/false").public)
      fails(400, "isPublic", "POST", "/sandbox/" .. s.id .. "/public/maybe")

      fails(400, "at least one", "POST", "/sandbox/" .. s.id .. "/network-settings", {})
      fails(400, "networkAllowList", "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = "example.com" })
      -- as root both allow lists are enforced (spec/dtlocal/network_spec.lua,
      -- spec/dtlocal/domain_allow_spec.lua)
      local n = ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = "10.0.0.0/8, 192.168.1.0/24" })
      assert.are.equal("10.0.0.0/8,192.168.1.0/24", n.networkAllowList)
      n = ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "Example.com, *.daytona.io" })
      assert.are.equal("example.com,*.daytona.io", n.domainAllowList)
      fails(400, "domainAllowList", "POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "*example.com" })
      fails(400, "domainAllowList", "POST", "/sandbox", { domainAllowList = "a..example.com" })
      assert.is_nil(ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "" }).domainAllowList)
      n = ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = "" })
      assert.is_nil(n.networkAllowList)
      -- blocking changes at once on a running sandbox (its own network, filtered outside)
      assert.is_true(ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkBlockAll = true }).networkBlockAll)
      n = ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkBlockAll = false })
      assert.is_false(n.networkBlockAll)
      assert.is_nil(n.networkAllowList)

      ok(201, "POST", "/sandbox/" .. s.id .. "/last-activity")
      fails(404, nil, "POST", "/sandbox/nope/autostop/3")
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("gives preview links and signed preview links, and expires them", function()
    run(function()
      local s = create{}
      local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/8080/preview-url")
      assert.are.equal(s.id, p.sandboxId)
      assert.is_string(p.token)
      -- on the previews' own origin, not the API's
      assert.matches("^http://127%.0%.0%.1:%d+/preview/" .. s.id:gsub("%-", "%%-") .. "/8080$", p.url)
      assert.is_nil(p.url:find(srv.base_url, 1, true))
      fails(400, "port", "GET", "/sandbox/" .. s.id .. "/ports/0/preview-url")
      fails(400, "port", "GET", "/sandbox/" .. s.id .. "/ports/70000/preview-url")
      local sp = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/8080/signed-preview-url?expiresInSeconds=120")
      assert.are.equal(8080, sp.port)
      assert.is_truthy(sp.token:match("^[a-z0-9]+$") and #sp.token == 16)
      fails(400, "expiresInSeconds", "GET", "/sandbox/" .. s.id .. "/ports/8080/signed-preview-url?expiresInSeconds=0")
      ok(201, "POST", "/sandbox/" .. s.id .. "/ports/8080/signed-preview-url/" .. sp.token .. "/expire")
      fails(404, nil, "POST", "/sandbox/" .. s.id .. "/ports/8080/signed-preview-url/" .. sp.token .. "/expire")
      -- the toolbox URL routes
      assert.are.equal(srv.toolbox_url, ok(200, "GET", "/sandbox/" .. s.id .. "/toolbox-proxy-url").url)
      -- SSH: not available locally, said clearly
      fails(501, "not available", "POST", "/sandbox/" .. s.id .. "/ssh-access")
      fails(501, "not available", "DELETE", "/sandbox/" .. s.id .. "/ssh-access?token=x")
      fails(501, "not available", "GET", "/sandbox/ssh-access/validate?token=x")
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("serves a sandbox's port through its preview link", function()
    run(function()
      local s = create{}
      local port = 20000 + (core.util.getpid() % 20000)
      -- a tiny HTTP server inside the sandbox, on its own network: previews
      -- reach it at its address (servers bound to its loopback only are not)
      local st = tb(s.id, "/process/session", { sessionId = "web" })
      assert.are.equal(201, st)
      st = tb(s.id, "/process/session/web/exec", {
        command = ("python3 -m http.server %d --bind 0.0.0.0 --directory /tmp"):format(port), runAsync = true })
      assert.is_true(st == 200 or st == 202)
      exec(s.id, "echo preview-body > /tmp/hello.txt")
      local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/" .. port .. "/preview-url")
      local body = helper.eventually(function()
        local r = http.request{ url = p.url .. "/hello.txt", headers = { ["X-Daytona-Preview-Token"] = p.token } }
        return r.status == 200 and r.body
      end, 10, 0.05)
      assert.are.equal("preview-body\n", body)
      -- without the token: 401; the signed link needs none
      assert.are.equal(401, http.request{ url = p.url .. "/hello.txt" }.status)
      local sp = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/" .. port .. "/signed-preview-url")
      assert.are.equal("preview-body\n", http.request{ url = sp.url .. "/hello.txt" }.body)
      ok(201, "POST", "/sandbox/" .. s.id .. "/ports/" .. port .. "/signed-preview-url/" .. sp.token .. "/expire")
      assert.are.equal(401, http.request{ url = sp.url .. "/hello.txt" }.status)
      -- a public sandbox needs no token
      ok(201, "POST", "/sandbox/" .. s.id .. "/public/true")
      assert.are.equal("preview-body\n", http.request{ url = p.url .. "/hello.txt" }.body)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("stops, starts and archives with the API's states, keeping files", function()
    run(function()
      local s = create{}
      exec(s.id, "echo kept > /home/daytona/f.txt")
      fails(409, "recovered", "POST", "/sandbox/" .. s.id .. "/recover")
      fails(409, "archived", "POST", "/sandbox/" .. s.id .. "/archive")
      local st = ok(200, "POST", "/sandbox/" .. s.id .. "/stop")
      assert.are.equal("stopped", st.state)
      assert.are.equal("stopped", ok(200, "GET", "/sandbox/" .. s.id).state)
      -- the toolbox of a stopped sandbox: 400 "Is the Sandbox started?"
      local code, b = tb(s.id, "/version")
      assert.are.equal(400, code)
      assert.is_truthy(b.message:find("started", 1, true))
      ok(200, "POST", "/sandbox/" .. s.id .. "/stop")          -- stopping a stopped one: as is
      assert.are.equal("archived", ok(200, "POST", "/sandbox/" .. s.id .. "/archive").state)
      local started = ok(200, "POST", "/sandbox/" .. s.id .. "/start")
      assert.are.equal("started", started.state)
      assert.are.equal("kept\n", exec(s.id, "cat /home/daytona/f.txt"))
      -- forced stop
      assert.are.equal("stopped", ok(200, "POST", "/sandbox/" .. s.id .. "/stop?force=true").state)
      assert.are.equal("started", ok(200, "POST", "/sandbox/" .. s.id .. "/start").state)
      assert.are.equal("kept\n", exec(s.id, "cat /home/daytona/f.txt"))
      -- resize rules
      fails(400, "disk", "POST", "/sandbox/" .. s.id .. "/resize", { disk = 10 })
      fails(400, "cpu", "POST", "/sandbox/" .. s.id .. "/resize", { cpu = 0 })
      assert.are.equal(2, ok(200, "POST", "/sandbox/" .. s.id .. "/resize", { cpu = 2 }).cpu)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("serves a create with env from the warm pool, the env in every process, also after a restart", function()
    run(function()
      -- the pool refills in the background: until a spare is ready a
      -- create starts cold, so try until one is served by the pool
      local s
      helper.eventually(function()
        local before = #srv.lines
        s = create({ env = { DT_WARM_ENV = "from the pool", PATH_EXTRA = "x y" } })
        for i = before + 1, #srv.lines do
          if srv.lines[i]:find(s.id .. ": started (from the warm pool)", 1, true) then return true end
        end
        ok(200, "DELETE", "/sandbox/" .. s.id)
        scheduler.sleep(0.2)
      end, 20)
      assert.are.same({ DT_WARM_ENV = "from the pool", PATH_EXTRA = "x y" }, s.env)
      assert.are.equal("from the pool|x y", exec(s.id, 'printf "%s|%s" "$DT_WARM_ENV" "$PATH_EXTRA"'))
      -- a session's shell too
      local st = tb(s.id, "/process/session", { sessionId = "envs" })
      assert.are.equal(201, st)
      local _, r = tb(s.id, "/process/session/envs/exec", { command = 'printf "%s" "$DT_WARM_ENV"' })
      assert.are.equal("from the pool", ((r.output or ""):gsub("\n$", "")))
      -- a client cannot reach the daemon's own route, whatever it sends
      local st2 = call("PUT", "/dtlocal/sandbox-env", { env = { DT_WARM_ENV = "hijacked" } },
        { base = srv.toolbox_url .. "/" .. s.id, headers = { ["X-Dtlocal-Internal"] = "sandbox-env" } })
      assert.are.equal(404, st2)
      assert.are.equal("from the pool", exec(s.id, 'printf "%s" "$DT_WARM_ENV"'))
      -- a cold start (stop, start) gives the same env through the launcher
      ok(200, "POST", "/sandbox/" .. s.id .. "/stop")
      helper.eventually(function() return ok(200, "GET", "/sandbox/" .. s.id).state == "stopped" end, 20)
      ok(200, "POST", "/sandbox/" .. s.id .. "/start")
      assert.are.equal("from the pool", exec(s.id, 'printf "%s" "$DT_WARM_ENV"'))
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("deletes: destroying, then 404", function()
    run(function()
      local s = create{}
      local d = ok(200, "DELETE", "/sandbox/" .. s.id)
      assert.is_truthy(d.state == "destroying" or d.state == "destroyed")
      helper.eventually(function() return (api("GET", "/sandbox/" .. s.id)) == 404 end, 10)
      fails(404, nil, "DELETE", "/sandbox/" .. s.id)
      -- its files are gone from the state dir
      assert.is_nil(core.util.stat(srv.state_dir .. "/sandboxes/" .. s.id))
    end)
  end)

  it("deletes an ephemeral sandbox when it stops", function()
    run(function()
      local s = create{ autoDeleteInterval = 0 }
      api("POST", "/sandbox/" .. s.id .. "/stop")
      helper.eventually(function() return (api("GET", "/sandbox/" .. s.id)) == 404 end, 10)
    end)
  end)

  it("gives each sandbox its own host uid range", function()
    run(function()
      local a, b = create{}, create{}
      local sa = core.util.stat(srv.state_dir .. "/sandboxes/" .. a.id .. "/rootfs")
      local sb = core.util.stat(srv.state_dir .. "/sandboxes/" .. b.id .. "/rootfs")
      if core.util.getuid() == 0 then
        assert.are_not.equal(sa.uid, sb.uid)
        assert.is_true(sa.uid >= 65536 and sb.uid >= 65536)
        assert.is_true(math.abs(sa.uid - sb.uid) >= 65536)
      end
      ok(200, "DELETE", "/sandbox/" .. a.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
    end)
  end)

  it("forwards toolbox requests by id, with the preview token as well", function()
    run(function()
      local s = create{}
      local st, v = tb(s.id, "/version")
      assert.are.equal(200, st)
      assert.is_string(v.version)
      local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/1/preview-url")
      st = tb(s.id, "/version", nil, { token = false, headers = { ["X-Daytona-Preview-Token"] = p.token } })
      assert.are.equal(200, st)
      st = call("GET", "/version?DAYTONA_SANDBOX_AUTH_KEY=" .. p.token, nil,
        { base = srv.toolbox_url .. "/" .. s.id, token = false })
      assert.are.equal(200, st)
      st = tb(s.id, "/version", nil, { token = false, headers = { ["X-Daytona-Preview-Token"] = "wrong" } })
      assert.are.equal(401, st)
      st = call("GET", "/version", nil, { base = srv.toolbox_url .. "/00000000-0000-4000-8000-000000000000" })
      assert.are.equal(404, st)
      -- a daemon error passes through with its status
      st = tb(s.id, "/process/session/none")
      assert.are.equal(404, st)
      -- a big upload and download stream through
      local dir = helper.tmpdir()
      local path = helper.bigfile(dir, "big.bin", 8 * 1024 * 1024)
      local sum = core.util.sha256_file(path)
      local r = http.request{
        url = srv.toolbox_url .. "/" .. s.id .. "/files/upload?path=/home/daytona/big.bin", method = "POST",
        headers = { Authorization = "Bearer " .. srv.token },
        multipart = { { name = "file", file = path, filename = "big.bin" } },
      }
      assert.are.equal(200, r.status, r.body)
      local out = dir .. "/back.bin"
      r = http.request{
        url = srv.toolbox_url .. "/" .. s.id .. "/files/download?path=/home/daytona/big.bin",
        headers = { Authorization = "Bearer " .. srv.token }, response_file = out,
      }
      assert.are.equal(200, r.status)
      assert.are.equal(sum, core.util.sha256_file(out))
      helper.cleanup()
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("relays WebSockets to the daemon: a PTY and a followed session log", function()
    run(function()
      local websocket = require "daytona.runtime.websocket"
      local s = create{}
      local wsbase = srv.toolbox_url:gsub("^http", "ws") .. "/" .. s.id
      local auth = { Authorization = "Bearer " .. srv.token }
      -- the PTY of the 0.218 SDK: create-connect, the exit-control subprotocol
      local ws <close> = websocket.connect(wsbase .. "/process/pty/create-connect?id=spec-pty&cols=80&rows=24",
        { headers = auth, protocols = { "X-Daytona-Pty-Exit-Control" } })
      assert.are.equal("X-Daytona-Pty-Exit-Control", ws.protocol)
      local first, kind = ws:receive(10)
      assert.are.equal("text", kind)
      assert.are.equal("connected", json.decode(first).status)
      ws:send("echo pty-$((40+2))\n", "binary")
      local seen = ""
      while not seen:find("pty-42", 1, true) do
        local data = ws:receive(10)
        assert.is_not_nil(data, "the PTY closed early: " .. seen)
        seen = seen .. data
      end
      ws:send("exit 3\n", "binary")
      local exited
      while true do
        local data, k, code, reason = ws:receive(10)
        if data == nil then
          assert.are.equal(3, json.decode(reason).exitCode)
          break
        end
        if k == "text" and data:find('"exited"', 1, true) then exited = json.decode(data) end
      end
      assert.are.equal(3, exited.exitCode)
      -- a followed session log: replay, then the rest, then a close
      assert.are.equal(201, (tb(s.id, "/process/session", { sessionId = "logs" })))
      local st, cmd = tb(s.id, "/process/session/logs/exec",
        { command = "echo one; sleep 0.3; echo two >&2", runAsync = true })
      assert.is_true(st == 200 or st == 202, json.encode(cmd))
      -- (the SDK version header selects the marker framing, doc/protocol.md §5.3:
      -- it must reach the daemon through the relay)
      local lw <close> = websocket.connect(wsbase .. "/process/session/logs/command/" .. cmd.cmdId .. "/logs?follow=true",
        { headers = { Authorization = auth.Authorization, ["X-Daytona-SDK-Version"] = "0.190.0" } })
      local got = {}
      for data in lw:messages(10) do got[#got + 1] = data end
      local all = table.concat(got)
      assert.is_truthy(all:find("\1\1\1one", 1, true), all)
      assert.is_truthy(all:find("\2\2\2two", 1, true), all)
      -- no token: refused before any upgrade
      local refused, _, _, fields = websocket.connect(wsbase .. "/process/pty/create-connect?id=x", {})
      assert.is_nil(refused)
      assert.are.equal(401, fields.status)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("keeps sandboxes across a restart of the server, starting the started ones", function()
    run(function()
      local a = create{ name = "spec-restart-a" }
      local b = create{ name = "spec-restart-b" }
      exec(a.id, "echo survived > /home/daytona/r.txt")
      ok(200, "POST", "/sandbox/" .. b.id .. "/stop")
      srv.restart()
      local ga = ok(200, "GET", "/sandbox/spec-restart-a")
      assert.are.equal(a.id, ga.id)
      assert.are.equal(srv.toolbox_url, ga.toolboxProxyUrl)
      dtlocal.wait_started(srv, a.id, 20)
      assert.are.equal("survived\n", exec(a.id, "cat /home/daytona/r.txt"))
      assert.are.equal("stopped", ok(200, "GET", "/sandbox/" .. b.id).state)
      ok(200, "DELETE", "/sandbox/" .. a.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
    end)
  end)

  it("answers snapshot and volume routes", function()
    run(function()
      local list = ok(200, "GET", "/snapshots")
      assert.are.equal(#list.items, list.total)
      local snap = ok(200, "GET", "/snapshots/" .. list.items[1].name)
      assert.are.equal("active", snap.state)
      fails(400, "imageName", "POST", "/snapshots", { name = "x", imageName = "python" })
      fails(400, "name", "POST", "/snapshots", {})
      fails(404, nil, "GET", "/snapshots/nope")

      local v = ok(200, "POST", "/volumes", { name = "spec-vol" })
      assert.are.equal("ready", v.state)
      assert.are.equal(v.id, ok(200, "GET", "/volumes/by-name/spec-vol").id)
      assert.are.equal(v.id, ok(200, "GET", "/volumes/" .. v.id).id)
      fails(409, "exists", "POST", "/volumes", { name = "spec-vol" })
      fails(400, "name", "POST", "/volumes", { name = "" })
      local s = create{ volumes = { { volumeId = "spec-vol", mountPath = "/home/daytona/vol" } } }
      assert.are.equal(v.id, s.volumes[1].volumeId)
      exec(s.id, "echo in-volume > /home/daytona/vol/v.txt")
      fails(409, "in use", "DELETE", "/volumes/" .. v.id)
      local s2 = create{ volumes = { { volumeId = v.id, mountPath = "/data" } } }
      assert.are.equal("in-volume\n", exec(s2.id, "cat /data/v.txt"))
      -- a subpath: made on first use, the rest of the volume out of sight
      local s3 = create{ volumes = { { volumeId = v.id, mountPath = "/sub", subpath = "tenant-a" } } }
      exec(s3.id, "echo tenant > /sub/t.txt")
      assert.are.equal("tenant\n", exec(s2.id, "cat /data/tenant-a/t.txt"))
      local _, code = exec(s3.id, "test -e /sub/v.txt")
      assert.are.equal(1, code)
      fails(400, "subpath", "POST", "/sandbox", { volumes = { { volumeId = v.id, mountPath = "/x", subpath = "../up" } } })
      ok(200, "DELETE", "/sandbox/" .. s3.id)
      fails(404, "Volume", "POST", "/sandbox", { volumes = { { volumeId = "nope", mountPath = "/x" } } })
      fails(400, "mountPath", "POST", "/sandbox", { volumes = { { volumeId = v.id, mountPath = "relative" } } })
      ok(200, "DELETE", "/sandbox/" .. s.id)
      ok(200, "DELETE", "/sandbox/" .. s2.id)
      helper.eventually(function() return (api("DELETE", "/volumes/" .. v.id)) == 200 end, 10)
      fails(404, nil, "GET", "/volumes/" .. v.id)
      local vols = ok(200, "GET", "/volumes")
      assert.are.equal(0, #vols)
    end)
  end)

  it("runs 200 concurrent execs across 20 sandboxes", function()
    run(function()
      local ids = {}
      local creates = {}
      for i = 1, 20 do creates[i] = function() return create{ labels = { suite = "load" } }.id end end
      ids = scheduler.all(creates)
      local jobs = {}
      for i = 1, 200 do
        local id = ids[(i - 1) % 20 + 1]
        jobs[i] = function()
          local out, code = exec(id, "echo job-" .. i)
          assert.are.equal(0, code)
          assert.are.equal("job-" .. i .. "\n", out)
          return true
        end
      end
      local t0 = core.now()
      local res = scheduler.all(jobs)
      local took = core.now() - t0
      assert.are.equal(200, #res)
      assert.is_true(took < 60, "200 execs took " .. took .. " s")
      local dels = {}
      for i, id in ipairs(ids) do dels[i] = function() ok(200, "DELETE", "/sandbox/" .. id) end end
      scheduler.all(dels)
    end)
  end)
end)

describe("dtlocal automatic transitions", function()
  local fast
  setup(function()
    -- an interval minute lasts 0.1 s on this server
    fast = dtlocal.start{ minute_seconds = 0.1 }
  end)
  teardown(function()
    if fast then fast.stop() end
  end)

  it("stops an idle sandbox after its auto-stop interval, not a busy one", function()
    run(function()
      local saved = srv
      srv = fast
      local ok_, err = pcall(function()
        local idle = create{ autoStopInterval = 3 }     -- 0.3 s
        local busy = create{ autoStopInterval = 10 }    -- 1 s, touched every ~0.05 s
        local t_end = core.now() + 1.2
        while core.now() < t_end do                       -- activity on one of them
          exec(busy.id, "true")
          scheduler.sleep(0.05)
        end
        assert.are.equal("stopped", ok(200, "GET", "/sandbox/" .. idle.id).state)
        assert.are.equal("started", ok(200, "GET", "/sandbox/" .. busy.id).state)
        -- 0 disables it
        ok(201, "POST", "/sandbox/" .. busy.id .. "/autostop/0")
        scheduler.sleep(0.6)
        assert.are.equal("started", ok(200, "GET", "/sandbox/" .. busy.id).state)
        -- auto-delete of a stopped sandbox
        ok(201, "POST", "/sandbox/" .. idle.id .. "/autodelete/2")
        helper.eventually(function() return (api("GET", "/sandbox/" .. idle.id)) == 404 end, 10)
        ok(200, "DELETE", "/sandbox/" .. busy.id)
      end)
      srv = saved
      if not ok_ then error(err, 0) end
    end)
  end)
end)

describe("dtlocal uid slots", function()
  local uids = require "dtlocal.control.uids"

  it("never gives one slot to two owners, keeps and releases claims, sweeps stale ones", function()
    local dir = helper.tmpdir()
    local a = uids.new{ dir = dir .. "/reg", slots = 8 }
    local b = uids.new{ dir = dir .. "/reg", slots = 8 }      -- another server, same registry
    local owners, seen = {}, {}
    for i = 1, 8 do
      local owner = dir .. "/rec" .. i
      local f = io.open(owner, "w"); f:write("x"); f:close()
      local pool = i % 2 == 0 and a or b
      local slot, first = pool:claim(owner)
      assert.is_number(slot)
      assert.is_nil(seen[slot])
      seen[slot] = owner
      owners[i] = { slot = slot, owner = owner }
      assert.are.equal(uids.BASE + slot * uids.SIZE, first)
    end
    local none, msg = a:claim(dir .. "/rec9")
    assert.is_nil(none)
    assert.is_truthy(msg:find("taken", 1, true))
    -- a server that restarts keeps its own claim, not another's
    assert.is_true(b:keep(owners[1].slot, owners[1].owner))
    assert.is_false(b:keep(owners[1].slot, owners[2].owner))
    -- release frees the slot for the next claim
    a:release(owners[3].slot, owners[3].owner)
    local f = io.open(dir .. "/rec9", "w"); f:write("x"); f:close()
    assert.are.equal(owners[3].slot, (a:claim(dir .. "/rec9")))
    -- claims whose records are gone are stale once old enough
    os.remove(owners[4].owner)
    local saved = uids.STALE_AGE
    uids.STALE_AGE = -1
    local freed = a:sweep()
    uids.STALE_AGE = saved
    assert.are.equal(1, freed)
    assert.are.equal(owners[4].slot, (b:claim(owners[4].owner .. "-new")))
    helper.cleanup()
  end)
end)
