-- Killing a PTY, deleting a session or timing out an exec ends everything it
-- started, not only its process group: background jobs that job control put
-- in their own groups, disowned jobs, `setsid` and double-forked daemons.
-- Each case attacks from inside a sandbox of a private local server and
-- then looks for survivors with pgrep in the same sandbox.
local core = require "daytona.core"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"
local fixture = require "sdk.fixture"

describe("dtlocal process cleanup", function()
  local srv, client, sb

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv)
  end)

  teardown(function() fixture.release(srv, sb) end)

  -- the command lines of the sandbox's processes matching an extended regex
  local function running(pattern)
    local r = sb.process:exec("pgrep -af '" .. pattern .. "' || true")
    local list = {}
    for line in r.result:gmatch("[^\n]+") do list[#list + 1] = line end
    return list
  end

  -- poll until exactly n processes match (readiness by polling); returns
  -- what matched last
  local function expect_running(pattern, n, timeout)
    local deadline = core.now() + (timeout or 15)
    local got
    while true do
      got = running(pattern)
      if #got == n or core.now() > deadline then break end
      scheduler.sleep(0.1)
    end
    assert.are.equal(n, #got, ("processes matching %q: %s"):format(pattern, table.concat(got, "; ")))
    return got
  end

  it("kills every process a PTY session started when the PTY is killed", function()
    -- a bystander of another owner (an exec without a timeout) must survive
    sb.process:exec("setsid sleep 1009 >/dev/null 2>&1 &")
    local pty <close> = sb.process:create_pty_session("cleanup-pty")
    -- job control puts `sleep 1000` in its own process group; the others
    -- leave the shell's job table or its session altogether
    pty:send_input("sleep 1000 &\n")
    pty:send_input("sleep 1001 & disown\n")
    pty:send_input("setsid sleep 1002 &\n")
    pty:send_input("(setsid sh -c 'sleep 1003 &' &)\n")
    -- no environment at all, but still in the terminal's session
    pty:send_input("env -i sleep 1004 &\n")
    expect_running("sleep 100[0-4]", 5)
    sb.process:kill_pty_session("cleanup-pty")
    assert.are.equal(137, pty:wait{ timeout = 10 }.exit_code)
    expect_running("sleep 100[0-4]", 0)
    expect_running("sleep 1009", 1)
    sb.process:exec("pkill -f 'sleep 1009' || true")
  end)

  it("kills every process a session started when the session is deleted", function()
    sb.process:create_session("cleanup-sess")
    for _, cmd in ipairs {
      "sleep 2000 &",
      "sleep 2001 & disown",
      "setsid sleep 2002 &",
      "(setsid sh -c 'sleep 2003 &' &)",
      "set -m; sleep 2004 & set +m",   -- a group of its own, as job control makes
      "env -i sleep 2005 &",           -- no environment, still in the session
      "sleep 2006",                    -- still running when the session goes
    } do
      sb.process:execute_session_command("cleanup-sess", { command = cmd, run_async = true })
    end
    expect_running("sleep 200[0-6]", 7)
    sb.process:delete_session("cleanup-sess")
    expect_running("sleep 200[0-6]", 0)
  end)

  it("kills what a timed-out exec left behind, and nothing when it finishes", function()
    local err = fixture.fails(sb.process.exec, sb.process,
      "setsid sleep 3000 >/dev/null 2>&1 & (setsid sh -c 'sleep 3001 >/dev/null 2>&1 &' &); sleep 3002",
      { timeout = 2 })
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError), tostring(err))
    expect_running("sleep 300[0-2]", 0)
    -- a finished exec's background server is the sandbox's to keep
    sb.process:exec("setsid sleep 3003 >/dev/null 2>&1 &")
    expect_running("sleep 3003", 1)
    sb.process:exec("pkill -f 'sleep 3003' || true")
  end)

  it("core.process.kill signals one process by pid and refuses groups", function()
    local cp = core.process
    assert.has_error(function() cp.kill(0, "KILL") end)
    assert.has_error(function() cp.kill(-1, "KILL") end)
    assert.has_error(function() cp.kill(1, "NOSUCH") end)
    local p <close> = cp.spawn { argv = { "sleep", "30" }, stdin = "null", stdout = "null", stderr = "null" }
    assert.is_true(cp.kill(p:pid(), "KILL"))
    while not p:status() do scheduler.wait(p) end
    assert.are.equal("SIGKILL", select(2, p:status()))
    local ok, _, code = cp.kill(p:pid(), 0)
    assert.is_nil(ok)
    assert.are.equal("ESRCH", code)
  end)
end)
