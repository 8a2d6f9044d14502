-- The official TypeScript SDK runs a scenario against dtlocal, unchanged,
-- and uses dtlocal's Socket.IO event channel for its waits.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local process = require "daytona.runtime.process"

-- Run `node script args...` to its end. Returns its exit code, its output,
-- and how many seconds node took to exit after printing a line containing
-- `marker` (nil when no line did). Raises after `timeout` seconds.
local function run_node(argv, env, marker, timeout)
  local deadline = core.now() + timeout
  local p <close> = process.spawn(argv, { env = env, stdin = "null", stdout = "pipe", stderr = "stdout" })
  local lines, seen_at = {}, nil
  local ok, err = pcall(function()
    for line in p:lines("stdout", timeout) do
      lines[#lines + 1] = line
      if not seen_at and line:find(marker, 1, true) then seen_at = core.now() end
      if core.now() > deadline then error("timed out", 0) end
    end
  end)
  local code = ok and p:wait(math.max(1, deadline - core.now()))
  local exited_at = core.now()
  local out = table.concat(lines, "\n")
  if not ok then
    p:kill("KILL")
    error(("%s did not finish in %d s (%s):\n%s"):format(argv[2], timeout, tostring(err), out), 0)
  end
  return code, out, seen_at and exited_at - seen_at
end

describe("the official TypeScript SDK against dtlocal", function()
  local srv, env
  setup(function()
    srv = dtlocal.start()
    env = core.util.environ()
    env.DAYTONA_API_URL = srv.api_url
    env.DAYTONA_API_KEY = srv.token
  end)
  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  local function sdk_installed()
    local f = io.open("spec/ts/node_modules/@daytonaio/sdk/package.json")
    assert(f, "the pinned @daytonaio/sdk is not installed: run `make deps`")
    f:close()
  end

  it("passes the scenario script (spec/ts/scenario.mjs) and node exits on its own", function()
    sdk_installed()
    local code, out, exit_delay = run_node({ "node", "spec/ts/scenario.mjs" }, env,
      "scenario: all steps passed", 240)
    if code ~= 0 or not exit_delay then
      error("scenario failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
    end
    -- its LspServer against the daemon's real typescript-language-server
    assert.truthy(out:find("\nok lsp\n", 1, true), out)
    -- network settings and a linked create (dtlocal as root: own networks)
    assert.truthy(out:find("\nok network settings and a linked sandbox\n", 1, true), out)
    -- the Socket.IO channel is unref'd once connected: nothing keeps node
    -- alive (without the channel the SDK retries it for minutes)
    assert.is_true(exit_delay < 2, ("node took %.2f s to exit after the scenario"):format(exit_delay))
  end)

  it("receives sandbox events: its waits end on them, not on its 1 s poll (spec/ts/events.mjs)", function()
    sdk_installed()
    local code, out, exit_delay = run_node({ "node", "spec/ts/events.mjs", "3" }, env,
      "events: all steps passed", 120)
    if code ~= 0 or not exit_delay then
      error("events.mjs failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
    end
    assert.truthy(out:find("ok waits end on events", 1, true))
    assert.is_true(exit_delay < 2, ("node took %.2f s to exit after events.mjs"):format(exit_delay))
  end)

  it("drives the desktop with computerUse (spec/ts/computer_use.mjs)", function()
    sdk_installed()
    local code, out = run_node({ "node", "spec/ts/computer_use.mjs" }, env, "computer_use: all steps passed", 300)
    if code ~= 0 then
      error("computer_use.mjs failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
    end
    assert.truthy(out:find("ok keyboard type into a terminal", 1, true), out)
  end)

  it("runs codeRun in a TypeScript sandbox and the interpreter's callbacks (spec/ts/code_run.mjs)", function()
    sdk_installed()
    local code, out = run_node({ "node", "spec/ts/code_run.mjs" }, env, "code_run: all steps passed", 120)
    if code ~= 0 then
      error("code_run.mjs failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
    end
  end)

  it("builds Daytona's declarative-image flow, the context uploaded by the SDK (spec/ts/declarative_image.mjs)", function()
    sdk_installed()
    local registry = require "support.registry"
    helper.run(function()
      local reg = registry.start()
      local ok, err = pcall(function()
        reg:push_test_image("dtlua/test:1")
        local e = {}
        for k, v in pairs(env) do e[k] = v end
        e.DTLUA_TEST_IMAGE = reg.host .. "/dtlua/test:1"
        local code, out = run_node({ "node", "spec/ts/declarative_image.mjs" }, e,
          "declarative_image: all steps passed", 300)
        if code ~= 0 then
          error("declarative_image.mjs failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
        end
        -- the AWS SDK's own requests reached the S3 endpoint: a listing, and
        -- a multipart upload for the 6 MiB directory
        local log = srv.log()
        assert.truthy(log:find("GET /s3/daytona%-contexts/?%?list%-type=2"), log:sub(-4000))
        assert.truthy(log:find("?uploads", 1, true), log:sub(-4000))
      end)
      reg:stop()
      if not ok then error(err, 0) end
    end)
  end)

  it("makes snapshots and sandboxes from the test registry's image (spec/ts/snapshots.mjs)", function()
    sdk_installed()
    local registry = require "support.registry"
    helper.run(function()
      local reg = registry.start()
      local ok, err = pcall(function()
        reg:push_test_image("dtlua/test:1")
        local e = {}
        for k, v in pairs(env) do e[k] = v end
        e.DTLUA_TEST_IMAGE = reg.host .. "/dtlua/test:1"
        local code, out = run_node({ "node", "spec/ts/snapshots.mjs" }, e, "snapshots: all steps passed", 240)
        if code ~= 0 then
          error("snapshots.mjs failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
        end
        assert.truthy(out:find("\nok sandbox from an image with its build log and resources\n", 1, true), out)
      end)
      reg:stop()
      if not ok then error(err, 0) end
    end)
  end)
end)
