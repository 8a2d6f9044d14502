-- The SDK's wire behaviour against a scripted server on loopback: the
-- headers it sends, the retry policy (what is retried and what never is),
-- Retry-After, error mapping, and the WebSocket protocols (session logs
-- resumed after a drop, PTY control frames and exit codes).
local daytona = require "daytona"
local errors = require "daytona.errors"
local server = require "daytona.runtime.server"
local core = require "daytona.core"
local sandbox = require "daytona.sandbox"
local fixture = require "sdk.fixture"

-- The runtime server's ws:close()/abort() drop messages still queued (seen
-- while writing these specs; reported): give queued frames time to leave.
local function flush() require("daytona.runtime.scheduler").sleep(0.1) end

describe("SDK transport", function()
  local srv, route, seen

  setup(function()
    srv = server.listen{ port = 0, log = function() end, handler = function(req, res)
      seen[#seen + 1] = { method = req.method, path = req.path, headers = req.headers, query = req.query }
      local fn = route[req.method .. " " .. req.path]
      if not fn then return res:json(404, { statusCode = 404, message = "no route " .. req.path, code = "NOT_FOUND" }) end
      return fn(req, res)
    end }
  end)

  teardown(function() if srv then srv:close() end end)

  before_each(function() route, seen = {}, {} end)

  local function client(extra)
    local cfg = { api_key = "secret", api_url = srv.url .. "/api", target = "us",
      retry = { retries = 3, base_delay = 0.01, max_delay = 0.05, max_retry_after = 5 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return daytona.new(cfg)
  end

  local function dto(id, state)
    return { id = id, name = id, state = state or "started", labels = {}, env = {},
      toolboxProxyUrl = srv.url .. "/toolbox", cpu = 1, memory = 1, disk = 3 }
  end

  it("sends the official SDKs' headers", function()
    route["GET /api/sandbox/a"] = function(_, res) res:json(200, dto("a")) end
    client():get("a")
    local h = seen[1].headers
    assert.are.equal("Bearer secret", h["authorization"])
    assert.are.equal("sdk-lua", h["x-daytona-source"])
    assert.are.equal("0.190.0", h["x-daytona-sdk-version"])
    assert.matches("^sdk%-lua/", h["user-agent"])
    assert.is_nil(h["x-daytona-organization-id"])
    seen = {}
    daytona.new{ jwt_token = "jwt", organization_id = "org-1", api_url = srv.url .. "/api", target = "us" }:get("a")
    h = seen[1].headers
    assert.are.equal("Bearer jwt", h["authorization"])
    assert.are.equal("org-1", h["x-daytona-organization-id"])
  end)

  it("sends the same headers to the toolbox", function()
    route["GET /toolbox/a/work-dir"] = function(_, res) res:json(200, { dir = "/w" }) end
    local c = client()
    local sb = sandbox.new(c, dto("a"))
    assert.are.equal("/w", sb:get_work_dir())
    local h = seen[1].headers
    assert.are.equal("Bearer secret", h["authorization"])
    assert.are.equal("0.190.0", h["x-daytona-sdk-version"])
  end)

  it("retries 502/503/504 on idempotent calls with backoff", function()
    local n = 0
    route["GET /api/sandbox/a"] = function(_, res)
      n = n + 1
      if n == 1 then return res:json(502, { message = "busy" }) end
      -- a 503 that says when, and a proxy's page: both transient
      if n == 2 then return res:json(503, { message = "busy" }, { ["Retry-After"] = "0" }) end
      if n == 3 then return res:send(503, { ["content-type"] = "text/html" }, "<h1>503 Service Unavailable</h1>") end
      if n == 4 then return res:send(504) end
      res:json(200, dto("a"))
    end
    local c = client{ retry = { retries = 4, base_delay = 0.01, max_delay = 0.05, max_retry_after = 5 } }
    assert.are.equal("a", c:get("a").id)
    assert.are.equal(5, n)
  end)

  it("raises a 503 with a JSON error body at once: the service's own answer", function()
    local n = 0
    route["GET /toolbox/a/computeruse/status"] = function(_, res)
      n = n + 1
      res:json(503, { message = "Computer-use functionality is not available", details = "no desktop",
        code = "SERVICE_UNAVAILABLE" })
    end
    local sb = sandbox.new(client(), dto("a"))
    local err = fixture.fails(sb.computer_use.get_status, sb.computer_use)
    assert.are.equal(1, n)
    assert.are.equal(503, err.status_code)
    assert.is_false(err.retryable)
    assert.matches("Computer%-use functionality is not available", err.message)
    -- the same 503 with a Retry-After is asked again, after it
    n = 0
    route["GET /toolbox/a/computeruse/status"] = function(_, res)
      n = n + 1
      if n == 1 then return res:json(503, { message = "starting" }, { ["Retry-After"] = "1" }) end
      res:json(200, { status = "active" })
    end
    local t0 = core.now()
    assert.are.equal("active", sb.computer_use:get_status().status)
    assert.are.equal(2, n)
    assert.is_true(core.now() - t0 >= 0.9)
  end)

  it("never retries a non-idempotent call that reached the server", function()
    local n = 0
    route["POST /toolbox/a/process/execute"] = function(_, res)
      n = n + 1
      res:json(503, { message = "unavailable" })
    end
    local c = client()
    local sb = sandbox.new(c, dto("a"))
    local err = fixture.fails(sb.process.exec, sb.process, "touch /once")
    assert.are.equal(1, n)
    assert.are.equal(503, err.status_code)
    assert.is_true(errors.is(err, errors.DaytonaError))
  end)

  it("does not retry a 500", function()
    local n = 0
    route["GET /api/sandbox/a"] = function(_, res) n = n + 1; res:json(500, { message = "broken" }) end
    local err = fixture.fails(client().get, client(), "a")
    assert.are.equal(1, n)
    assert.are.equal("get sandbox: broken", err.message)
  end)

  it("waits for Retry-After on 429, even for a create (the throttler refused it)", function()
    local n, t = 0, {}
    route["POST /api/sandbox"] = function(_, res)
      n = n + 1
      t[n] = core.now()
      if n == 1 then
        return res:json(429, { statusCode = 429, message = "ThrottlerException: Too Many Requests" },
          { ["Retry-After"] = "1", ["X-RateLimit-Remaining-sandbox-create"] = "0" })
      end
      res:json(200, dto("new"))
    end
    local sb = client():create{}
    assert.are.equal("new", sb.id)
    assert.are.equal(2, n)
    assert.is_true(t[2] - t[1] >= 0.9, "retried after " .. (t[2] - t[1]) .. " s")
  end)

  it("raises DaytonaRateLimitError with the headers when Retry-After is too long", function()
    local n = 0
    route["GET /api/sandbox/a"] = function(_, res)
      n = n + 1
      res:json(429, { message = "slow down" }, { ["Retry-After"] = "3600" })
    end
    local err = fixture.fails(client().get, client(), "a")
    assert.are.equal(1, n)
    assert.is_true(errors.is(err, errors.DaytonaRateLimitError))
    assert.are.equal("3600", err.headers["retry-after"])
  end)

  it("maps bare and structured error bodies", function()
    route["GET /toolbox/a/files/info"] = function(_, res) res:send(404) end
    route["DELETE /toolbox/a/files"] = function(_, res) res:send(400) end
    route["POST /toolbox/a/files/move"] = function(_, res)
      res:json(409, { statusCode = 409, message = "conflict: exists", code = "CONFLICT" })
    end
    local sb = sandbox.new(client(), dto("a"))
    local err = fixture.fails(sb.fs.get_file_info, sb.fs, "/x")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    assert.are.equal(404, err.status_code)
    err = fixture.fails(sb.fs.delete_file, sb.fs, "/d")
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    err = fixture.fails(sb.fs.move_files, sb.fs, "/a", "/b")
    assert.is_true(errors.is(err, errors.DaytonaConflictError))
    assert.are.equal("CONFLICT", err.code)
    assert.matches("conflict: exists", err.message, 1, true)
  end)

  it("follows session logs over a WebSocket and resumes after a drop without repeating output", function()
    local log = "\1\1\1line one\n\2\2\2warn\n\1\1\1line two\n\1\1\1line three\n"
    local conns = 0
    route["GET /toolbox/a/process/session/s/command/c/logs"] = function(req, res)
      assert.are.equal("true", req.args.follow)
      conns = conns + 1
      local ws = res:websocket{}
      if conns == 1 then
        -- the first 20 bytes, cut inside a marker-free line, then a server error
        ws:send(log:sub(1, 7), "binary")
        ws:send(log:sub(8, 20), "binary")
        flush()
        ws:close(1011, "read error")
      else
        -- the daemon replays from the start
        for i = 1, #log, 5 do ws:send(log:sub(i, i + 4), "binary") end
        flush()
        ws:close(1000)
      end
    end
    local sb = sandbox.new(client(), dto("a"))
    local out, err = {}, {}
    sb.process:get_session_command_logs("s", "c", {
      on_stdout = function(s) out[#out + 1] = s end,
      on_stderr = function(s) err[#err + 1] = s end,
    })
    assert.are.equal(2, conns)
    assert.are.equal("line one\nline two\nline three\n", table.concat(out))
    assert.are.equal("warn\n", table.concat(err))
  end)

  it("gives up on a log stream that keeps dropping", function()
    route["GET /toolbox/a/process/session/s/command/c/logs"] = function(_, res)
      local ws = res:websocket{}
      ws:close(1011, "read error")
    end
    local sb = sandbox.new(client(), dto("a"))
    local err = fixture.fails(function()
      for _ in sb.process:get_session_command_logs("s", "c", { follow = true }) do end
    end)
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
    assert.matches("close code 1011", err.message)
  end)

  it("maps a refused log upgrade to the error of its status", function()
    local sb = sandbox.new(client(), dto("a"))
    local err = fixture.fails(sb.process.get_session_command_logs, sb.process, "none", "c", { follow = true })
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
  end)

  it("speaks the PTY protocol: output before 'connected' is kept, input is binary, the exit code comes in the close reason", function()
    local inputs = {}
    route["POST /toolbox/a/process/pty"] = function(req, res)
      local body = require("daytona.wire").decode(req:body())
      assert.are.equal("t1", body.id)
      assert.is_true(body.lazyStart)
      assert.are.equal(100, body.cols)
      res:json(201, { sessionId = "t1" })
    end
    route["GET /toolbox/a/process/pty/t1/connect"] = function(_, res)
      local ws = res:websocket{}
      ws:send("early ", "binary")
      ws:send('{"type":"control","status":"connected"}', "text")
      local data, kind = ws:receive(5)
      inputs[#inputs + 1] = { data, kind }
      ws:send("you said " .. data, "binary")
      flush()
      ws:close(1011, '{"exitCode":3,"exitReason":"non-zero exit"}')
    end
    local sb = sandbox.new(client(), dto("a"))
    local pty <close> = sb.process:create_pty_session("t1", { pty_size = { rows = 30, cols = 100 } })
    pty:send_input("hello\n")
    local out = {}
    for chunk in pty do out[#out + 1] = chunk end
    assert.are.equal("early you said hello\n", table.concat(out))
    assert.are.equal("binary", inputs[1][2])
    assert.are.equal(3, pty.exit_code)
    assert.are.equal("non-zero exit", pty.error)
  end)

  it("reports a PTY that refuses the connection", function()
    route["POST /toolbox/a/process/pty"] = function(_, res) res:json(201, { sessionId = "t2" }) end
    route["GET /toolbox/a/process/pty/t2/connect"] = function(_, res)
      local ws = res:websocket{}
      ws:send('{"type":"control","status":"error","error":"Failed to connect to PTY session: gone"}', "text")
      flush()
      ws:abort()
    end
    local sb = sandbox.new(client(), dto("a"))
    local err = fixture.fails(sb.process.create_pty_session, sb.process, "t2")
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.matches("gone", err.message)
  end)

  it("fails a bulk download whose closing boundary never came", function()
    route["POST /toolbox/a/files/bulk-download"] = function(_, res)
      res:start(200, { ["content-type"] = "multipart/form-data; boundary=B" })
      res:write('--B\r\nContent-Disposition: form-data; name="file"; filename="/f"\r\n\r\npartial')
      res:finish()
    end
    local sb = sandbox.new(client(), dto("a"))
    local err = fixture.fails(sb.fs.download_file, sb.fs, "/f")
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
    assert.are.equal("EPARTIAL", err.code)
  end)

  it("uploads as multipart with each .path part before its .file part", function()
    local parts
    route["POST /toolbox/a/files/bulk-upload"] = function(req, res)
      local multipart = require "daytona.runtime.multipart"
      parts = {}
      local p = multipart.parser(assert(multipart.boundary(req.headers["content-type"])), function(part)
        local rec = { name = part.name, filename = part.filename, data = {} }
        parts[#parts + 1] = rec
        return function(d) if d then rec.data[#rec.data + 1] = d end end
      end)
      for chunk in req:chunks() do assert(p:feed(chunk)) end
      assert(p:finish())
      local files, errs = {}, {}
      for _, x in ipairs(parts) do
        if x.name:match("%.path$") then x.path = table.concat(x.data) end
      end
      for i = 1, #parts, 2 do
        local dest = table.concat(parts[i].data)
        if dest:match("^/ro/") then errs[#errs + 1] = dest .. ": create: permission denied"
        else files[#files + 1] = { path = dest, bytes = #table.concat(parts[i + 1].data) } end
      end
      if #errs > 0 then return res:json(400, { errors = errs, files = files }) end
      res:json(200, { files = files })
    end
    local sb = sandbox.new(client(), dto("a"))
    local res = fixture.fails(sb.fs.upload_files, sb.fs, {
      { source = { data = "12345" }, destination = "/w/a" },
      { source = { data = "xyz" }, destination = "/ro/b" },
    }).results
    assert.are.equal("files[0].path", parts[1].name)
    assert.are.equal("files[0].file", parts[2].name)
    assert.are.equal("/w/a", parts[2].filename)
    assert.are.equal("files[1].path", parts[3].name)
    assert.are.equal("files[1].file", parts[4].name)
    assert.are.equal(5, res[1].bytes)
    assert.is_nil(res[1].error)
    assert.matches("permission denied", res[2].error.message)
    local err = fixture.fails(sb.fs.upload_file, sb.fs, { data = "x" }, "/ro/c")
    assert.matches("/ro/c: create: permission denied", err.message, 1, true)
  end)

  it("maps bulk-download parts back by their full path, filename* first, with per-file errors", function()
    local FILE = table.concat({
      'Content-Disposition: form-data; name="file"; filename="/w/caf_"; filename*=utf-8\'\'%2Fw%2Fcaf%C3%A9\r\n',
      "Content-Length: 4\r\nContent-Type: application/octet-stream\r\n\r\n",
      "\0\1\2\3",
    })
    local ERR = table.concat({
      'Content-Disposition: form-data; name="error"; filename="/nope"\r\n',
      "Content-Type: application/json; charset=utf-8\r\n\r\n",
      '{"statusCode":404,"message":"file not found: /nope","code":"FILE_NOT_FOUND"}',
    })
    local requested
    route["POST /toolbox/a/files/bulk-download"] = function(req, res)
      requested = require("daytona.wire").decode(req:body()).paths
      local body = { "preamble" }
      for _, p in ipairs(requested) do body[#body + 1] = "\r\n--XB\r\n" .. (p == "/nope" and ERR or FILE) end
      body[#body + 1] = "\r\n--XB--\r\n"
      body = table.concat(body)
      -- cut anywhere: the parser must cope
      res:stream(200, { ["content-type"] = 'multipart/form-data; boundary="XB"' }, coroutine.wrap(function()
        for i = 1, #body, 7 do coroutine.yield(body:sub(i, i + 6)) end
      end))
    end
    local sb = sandbox.new(client(), dto("a"))
    local r = sb.fs:download_files{ { source = "/w/caf\u{e9}" }, { source = "/nope" }, { source = "/w/caf\u{e9}" } }
    assert.are.same({ "/w/caf\u{e9}", "/nope" }, requested)   -- de-duplicated
    assert.are.equal("\0\1\2\3", r[1].result)
    assert.are.equal("\0\1\2\3", r[3].result)
    assert.is_true(errors.is(r[2].error, errors.DaytonaNotFoundError))
    assert.are.equal("FILE_NOT_FOUND", r[2].error.code)
    local seen_progress = {}
    local chunks = {}
    for c in sb.fs:download_file_stream("/w/caf\u{e9}", { on_progress = function(p)
      seen_progress[#seen_progress + 1] = { p.bytes_received, p.total_bytes } end }) do chunks[#chunks + 1] = c end
    assert.are.equal("\0\1\2\3", table.concat(chunks))
    assert.are.same({ 4, 4 }, seen_progress[#seen_progress])
  end)

  it("creates, validates and revokes SSH access on the documented routes", function()
    route["POST /api/sandbox/a/ssh-access"] = function(req, res)
      assert.are.equal("15", req.args.expiresInMinutes)
      res:json(200, { id = "s1", sandboxId = "a", token = "tok", sshCommand = "ssh tok@host",
        expiresAt = "2026-01-01T00:00:00.000Z" })
    end
    route["GET /api/sandbox/ssh-access/validate"] = function(req, res)
      res:json(200, { valid = req.args.token == "tok", sandboxId = "a" })
    end
    route["DELETE /api/sandbox/a/ssh-access"] = function(req, res)
      assert.are.equal("tok", req.args.token)
      res:json(200, dto("a"))
    end
    local sb = sandbox.new(client(), dto("a"))
    local ssh = sb:create_ssh_access{ expires_in_minutes = 15 }
    assert.are.equal("ssh tok@host", ssh.ssh_command)
    assert.are.equal("a", ssh.sandbox_id)
    assert.is_true(sb:validate_ssh_access("tok").valid)
    assert.is_false(sb:validate_ssh_access("other").valid)
    sb:revoke_ssh_access("tok")
  end)

  it("creates from an image, sending the Dockerfile and resources and streaming the build log", function()
    local body
    route["POST /api/sandbox"] = function(req, res)
      body = require("daytona.wire").decode(req:body())
      res:json(200, dto("img", "building_snapshot"))
    end
    route["GET /api/sandbox/img/build-logs-url"] = function(_, res)
      res:json(200, { url = srv.url .. "/logs/img" })
    end
    route["GET /logs/img"] = function(req, res)
      assert.are.equal("true", req.args.follow)
      res:start(200, { ["content-type"] = "application/octet-stream" })
      res:write("Step 1/2 : FROM alpine\n")
      res:write("Step 2/2 : done\n")
      res:finish()
    end
    route["GET /api/sandbox/img"] = function(_, res) res:json(200, dto("img", "started")) end
    local lines = {}
    local sb = client():create({ image = "alpine:3", resources = { cpu = 2, memory = 4, disk = 10 },
      language = "typescript" }, { on_snapshot_create_logs = function(l) lines[#lines + 1] = l end })
    assert.are.equal("started", sb.state)
    assert.are.equal("FROM alpine:3\n", body.buildInfo.dockerfileContent)
    assert.is_nil(body.snapshot)
    assert.are.equal(2, body.cpu)
    assert.are.equal(4, body.memory)
    assert.are.equal(10, body.disk)
    assert.are.equal("typescript", body.labels["code-toolbox-language"])
    assert.are.equal("us", body.target)
    assert.are.same({ "Step 1/2 : FROM alpine\nStep 2/2 : done" }, { table.concat(lines, "\n") })
  end)

  it("maps every create parameter to the wire names", function()
    local body
    route["POST /api/sandbox"] = function(req, res)
      body = require("daytona.wire").decode(req:body())
      res:json(200, dto("p1", "started"))
    end
    client():create{
      name = "n", snapshot = "snap", os_user = "root", env_vars = { A = "1" }, labels = { l = "v" },
      public = true, auto_stop_interval = 0, auto_archive_interval = 60, ephemeral = true,
      volumes = { { volume_id = "vol", mount_path = "/data", subpath = "t1" } },
      network_block_all = false, network_allow_list = { "10.0.0.0/8" }, domain_allow_list = "a.com",
      linked_sandbox = "parent",
    }
    assert.are.equal("n", body.name)
    assert.are.equal("snap", body.snapshot)
    assert.are.equal("root", body.user)
    assert.are.same({ A = "1" }, body.env)
    assert.are.equal("v", body.labels.l)
    assert.are.equal("python", body.labels["code-toolbox-language"])
    assert.is_true(body.public)
    assert.are.equal(0, body.autoStopInterval)
    assert.are.equal(60, body.autoArchiveInterval)
    assert.are.equal(0, body.autoDeleteInterval)
    assert.are.same({ { volumeId = "vol", mountPath = "/data", subpath = "t1" } }, body.volumes)
    assert.is_false(body.networkBlockAll)
    assert.are.equal("10.0.0.0/8", body.networkAllowList)
    assert.are.equal("a.com", body.domainAllowList)
    assert.are.equal("parent", body.linkedSandbox)
    -- env is always sent, as an object even when empty
    client():create{}
    assert.are.equal("table", type(body.env))
    assert.is_nil(body.buildInfo)
  end)

  it("lists with every filter on the wire and follows nextCursor", function()
    local queries = {}
    route["GET /api/sandbox"] = function(req, res)
      queries[#queries + 1] = req.query
      if not req.args.cursor then
        return res:json(200, { items = { dto("x1"), dto("x2") }, nextCursor = "c2" })
      end
      res:json(200, { items = { dto("x3") }, nextCursor = require("daytona.wire").null })
    end
    local ids = {}
    for sb in client():list{ labels = { k = "v" }, states = { "started", "stopped" }, targets = { "us" },
      min_cpu = 1, is_public = false, sort = "created_at", order = "desc", limit = 2,
      last_activity_after = "2026-01-01T00:00:00.000Z" } do
      ids[#ids + 1] = sb.id
    end
    assert.are.same({ "x1", "x2", "x3" }, ids)
    assert.are.equal(2, #queries)
    local q = queries[1]
    assert.matches("labels=%7B%22k%22%3A%22v%22%7D", q, 1, true)
    assert.matches("states=started&states=stopped", q, 1, true)
    assert.matches("regionIds=us", q, 1, true)
    assert.matches("minCpu=1", q, 1, true)
    assert.matches("isPublic=false", q, 1, true)
    assert.matches("sort=createdAt", q, 1, true)
    assert.matches("order=desc", q, 1, true)
    assert.matches("limit=2", q, 1, true)
    assert.matches("lastEventAfter=2026", q, 1, true)
    assert.matches("cursor=c2", queries[2], 1, true)
  end)

  it("forks and snapshots a sandbox (experimental), waiting for the result", function()
    local polls = 0
    route["POST /api/sandbox/a/fork"] = function(req, res)
      assert.are.equal("child", require("daytona.wire").decode(req:body()).name)
      res:json(200, dto("child", "forking"))
    end
    route["GET /api/sandbox/child"] = function(_, res) res:json(200, dto("child", "started")) end
    route["POST /api/sandbox/a/snapshot"] = function(_, res) res:json(200, dto("a", "snapshotting")) end
    -- the snapshot is checked once the sandbox is done
    route["GET /api/snapshots/snap-1"] = function(_, res)
      res:json(200, { id = "s1", name = "snap-1", state = "active" })
    end
    route["GET /api/sandbox/a"] = function(_, res)
      polls = polls + 1
      res:json(200, dto("a", polls < 2 and "snapshotting" or "started"))
    end
    local sb = sandbox.new(client(), dto("a"))
    local child = sb:_experimental_fork{ name = "child" }
    assert.are.equal("child", child.id)
    assert.are.equal("started", child.state)
    sb:_experimental_create_snapshot("snap-1")
    assert.are.equal("started", sb.state)
    assert.are.equal(2, polls)
  end)

  it("runs code in the interpreter over its WebSocket, streaming output and errors", function()
    local wire = require "daytona.wire"
    route["POST /toolbox/a/process/interpreter/context"] = function(req, res)
      assert.are.equal("/w", wire.decode(req:body()).cwd)
      res:json(200, { id = "ctx1", cwd = "/w", language = "python", active = true, createdAt = "t" })
    end
    route["GET /toolbox/a/process/interpreter/context"] = function(_, res)
      res:json(200, { contexts = { { id = "ctx1", cwd = "/w", language = "python", active = true } } })
    end
    route["DELETE /toolbox/a/process/interpreter/context/ctx1"] = function(_, res)
      res:json(200, { message = "Context deleted successfully" })
    end
    local requests = {}
    route["GET /toolbox/a/process/interpreter/execute"] = function(_, res)
      local ws = res:websocket{}
      local r = wire.decode((ws:receive(5)))
      requests[#requests + 1] = r
      local function msg(t) t.text = t.text or ""; t.name = t.name or ""; t.value = t.value or ""
        t.traceback = t.traceback or ""; ws:send(wire.encode(t), "text") end
      if r.code == "slow" then
        msg{ type = "control", text = "interrupted" }
        flush()
        return ws:close(4008, "execution timed out")
      end
      msg{ type = "stdout", text = "4" }
      msg{ type = "stdout", text = "2\n" }
      msg{ type = "stderr", text = "warn\n" }
      msg{ type = "error", name = "ZeroDivisionError", value = "division by zero", traceback = "tb" }
      msg{ type = "control", text = "completed" }
      flush()
      ws:close(1000)
    end
    local sb = sandbox.new(client(), dto("a"))
    local ci = sb.code_interpreter
    local ctx = ci:create_context{ cwd = "/w" }
    assert.are.equal("ctx1", ctx.id)
    assert.are.equal(1, #ci:list_contexts())
    local streamed, errs = {}, {}
    local r = ci:run_code("print(42); 1/0", { context = ctx, envs = { K = "v" }, timeout = 30,
      on_stdout = function(t) streamed[#streamed + 1] = t end, on_error = function(e) errs[#errs + 1] = e end })
    assert.are.same({ code = "print(42); 1/0", contextId = "ctx1", envs = { K = "v" }, timeout = 30 }, requests[1])
    assert.are.equal("42\n", r.stdout)
    -- the callbacks get Python's OutputMessage, which still prints as its text
    assert.are.same({ "4", "2\n" }, { streamed[1].output, streamed[2].output })
    assert.are.same({ "4", "2\n" }, { tostring(streamed[1]), tostring(streamed[2]) })
    assert.are.equal("warn\n", r.stderr)
    assert.are.equal("ZeroDivisionError", r.error.name)
    assert.are.equal("division by zero", errs[1].value)
    local err = fixture.fails(ci.run_code, ci, "slow")
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
    assert.is_nil(requests[2].contextId)
    ci:delete_context(ctx)
  end)

  it("pauses and recovers, waiting for the resulting state", function()
    local state = "started"
    route["POST /api/sandbox/a/pause"] = function(_, res) state = "pausing"; res:json(200, dto("a", state)) end
    route["POST /api/sandbox/a/recover"] = function(_, res) state = "starting"; res:json(200, dto("a", state)) end
    route["GET /api/sandbox/a"] = function(_, res)
      if state == "pausing" then state = "paused" elseif state == "starting" then state = "started" end
      res:json(200, dto("a", state))
    end
    local sb = sandbox.new(client(), dto("a"))
    sb:pause()
    assert.are.equal("paused", sb.state)
    sb:recover()
    assert.are.equal("started", sb.state)
  end)

  it("polls a started sandbox through transitional states", function()
    local n = 0
    route["POST /api/sandbox/a/start"] = function(_, res) res:json(200, dto("a", "starting")) end
    route["GET /api/sandbox/a"] = function(_, res)
      n = n + 1
      res:json(200, dto("a", n < 3 and "starting" or "started"))
    end
    local sb = sandbox.new(client(), dto("a", "stopped"))
    sb:start()
    assert.are.equal("started", sb.state)
    assert.are.equal(3, n)
  end)

  it("raises the error reason when a sandbox fails to start, and times out a wait", function()
    route["POST /api/sandbox/a/start"] = function(_, res)
      local d = dto("a", "error")
      d.errorReason = "disk full"
      res:json(200, d)
    end
    local sb = sandbox.new(client(), dto("a", "stopped"))
    local err = fixture.fails(sb.start, sb)
    assert.matches("disk full", err.message)
    route["GET /api/sandbox/b"] = function(_, res) res:json(200, dto("b", "starting")) end
    local sb2 = sandbox.new(client(), dto("b", "starting"))
    err = fixture.fails(sb2.wait_for_sandbox_start, sb2, { timeout = 0.3 })
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
  end)
end)
