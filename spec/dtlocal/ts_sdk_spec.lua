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

  -- Run spec/ts/NAME.mjs (opts.args after it) with the server's env plus
  -- opts.env; raises with its output and dtlocal's log unless it exits 0
  -- having printed "NAME: all steps passed" (with opts.exits: and node
  -- exited on its own after it). Returns its output and that exit delay.
  local function run_script(name, opts)
    sdk_installed()
    local e = env
    if opts.env then
      e = {}
      for k, v in pairs(env) do e[k] = v end
      for k, v in pairs(opts.env) do e[k] = v end
    end
    local argv = { "node", "spec/ts/" .. name .. ".mjs", table.unpack(opts.args or {}) }
    local code, out, exit_delay = run_node(argv, e, name .. ": all steps passed", opts.timeout)
    if code ~= 0 or (opts.exits and not exit_delay) then
      error(name .. ".mjs failed:\n" .. out .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
    end
    return out, exit_delay
  end

  -- fn(image) with the test image pushed to a registry of the spec's
  local function with_test_image(fn)
    local registry = require "support.registry"
    helper.run(function()
      local reg = registry.start()
      local ok, err = pcall(function()
        reg:push_test_image("dtlua/test:1")
        fn(reg.host .. "/dtlua/test:1")
      end)
      reg:stop()
      if not ok then error(err, 0) end
    end)
  end

  it("passes the scenario script (spec/ts/scenario.mjs) and node exits on its own", function()
    local out, exit_delay = run_script("scenario", { timeout = 240, exits = true })
    -- its LspServer against the daemon's real typescript-language-server
    assert.truthy(out:find("\nok lsp\n", 1, true), out)
    -- network settings and a linked create (dtlocal as root: own networks)
    assert.truthy(out:find("\nok network settings and a linked sandbox\n", 1, true), out)
    -- the Socket.IO channel is unref'd once connected: nothing keeps node
    -- alive (without the channel the SDK retries it for minutes)
    assert.is_true(exit_delay < 2, ("node took %.2f s to exit after the scenario"):format(exit_delay))
  end)

  it("receives sandbox events: its waits end on them, not on its 1 s poll (spec/ts/events.mjs)", function()
    local out, exit_delay = run_script("events", { args = { "3" }, timeout = 120, exits = true })
    assert.truthy(out:find("ok waits end on events", 1, true))
    assert.is_true(exit_delay < 2, ("node took %.2f s to exit after events.mjs"):format(exit_delay))
  end)

  it("drives the desktop with computerUse (spec/ts/computer_use.mjs)", function()
    local out = run_script("computer_use", { timeout = 300 })
    assert.truthy(out:find("ok keyboard type into a terminal", 1, true), out)
  end)

  it("runs codeRun in a TypeScript sandbox and the interpreter's callbacks (spec/ts/code_run.mjs)", function()
    run_script("code_run", { timeout = 120 })
  end)

  it("builds Daytona's declarative-image flow, the context uploaded by the SDK (spec/ts/declarative_image.mjs)", function()
    with_test_image(function(image)
      run_script("declarative_image", { env = { DTLUA_TEST_IMAGE = image }, timeout = 300 })
      -- the AWS SDK's own requests reached the S3 endpoint: a listing, and
      -- a multipart upload for the 6 MiB directory
      local log = srv.log()
      assert.truthy(log:find("GET /s3/daytona%-contexts/?%?list%-type=2"), log:sub(-4000))
      assert.truthy(log:find("?uploads", 1, true), log:sub(-4000))
    end)
  end)

  it("makes snapshots and sandboxes from the test registry's image (spec/ts/snapshots.mjs)", function()
    with_test_image(function(image)
      local out = run_script("snapshots", { env = { DTLUA_TEST_IMAGE = image }, timeout = 240 })
      assert.truthy(out:find("\nok sandbox from an image with its build log and resources\n", 1, true), out)
    end)
  end)
end)
