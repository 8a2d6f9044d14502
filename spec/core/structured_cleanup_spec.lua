-- Cancelling is not leaving: when `all` or `timeout` cancels tasks, it
-- raises only after their cleanup (`<close>` handlers, pcall handlers, which
-- may wait on I/O themselves) has run, bounded by scheduler.cleanup_timeout.
-- Under plain lua5.4 raising ends the process, so a cleanup still pending
-- then never runs: the sandboxes of `local sb <close>` would stay.
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local process = require "daytona.runtime.process"
local helper = require "support.helper"
local core = require "daytona.core"

-- A to-be-closed value whose close waits `seconds` (cleanup I/O) and then
-- records `name` in `log`; a close that was cancelled records that instead.
local function slow_guard(log, name, seconds)
  return setmetatable({}, { __close = function()
    local ok, err = pcall(scheduler.sleep, seconds or 0.2)
    if ok then log[#log + 1] = name
    else log[#log + 1] = name .. " aborted: " .. tostring(err) end
  end })
end

local function holder(log, name, seconds)
  return function()
    local g <close> = slow_guard(log, name, seconds)
    scheduler.sleep(10)
  end
end

local function failing()
  scheduler.sleep(0.01)
  error("boom", 0)
end

-- both on the main thread (wait drives the loop) and in a task (wait yields)
local function both(name, body)
  it(name .. " (main thread)", function() body() end)
  it(name .. " (in a task)", function() helper.run(body) end)
end

describe("cancellation waits for cleanup", function()
  local saved = scheduler.cleanup_timeout
  after_each(function()
    scheduler.cleanup_timeout = saved
    helper.cleanup()
  end)

  it("bounds the wait by a documented default", function()
    assert.are.equal(30, scheduler.cleanup_timeout)
    -- the SDK module reads and sets the scheduler's one value
    local daytona = require "daytona"
    assert.are.equal(30, daytona.cleanup_timeout)
    daytona.cleanup_timeout = 5
    assert.are.equal(5, scheduler.cleanup_timeout)
    assert.is_nil(rawget(daytona, "cleanup_timeout"))
  end)

  both("all raises only after the cancelled tasks' <close> handlers ran", function()
    local log = {}
    local ok, err = pcall(scheduler.all, { holder(log, "a"), failing, holder(log, "b") })
    assert.is_false(ok)
    assert.are.equal("boom", err)
    table.sort(log)
    assert.are.same({ "a", "b" }, log)
  end)

  both("timeout raises only after the body's <close> handlers ran", function()
    local log = {}
    local ok, err = pcall(scheduler.timeout, 0.05, holder(log, "body"))
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
    assert.are.same({ "body" }, log)
  end)

  both("a cancelled task's pcall handler may wait too", function()
    local log = {}
    local ok = pcall(scheduler.all, {
      function()
        local ok2, e = pcall(scheduler.sleep, 10)
        assert(not ok2 and errors.is(e, errors.CancelledError))
        scheduler.sleep(0.1)
        log[#log + 1] = "handled"
      end,
      failing,
    })
    assert.is_false(ok)
    assert.are.same({ "handled" }, log)
  end)

  both("a timeout inside all, and all inside a timeout, wait for every level", function()
    local log = {}
    local ok, err = pcall(scheduler.all, {
      function()
        local g <close> = slow_guard(log, "outer", 0.1)
        scheduler.timeout(10, holder(log, "inner", 0.2))
      end,
      failing,
    })
    assert.is_false(ok)
    assert.are.equal("boom", err)
    assert.are.same({ "inner", "outer" }, log)

    log = {}
    ok, err = pcall(scheduler.timeout, 0.05, function()
      local g <close> = slow_guard(log, "body", 0.1)
      scheduler.all{ holder(log, "x", 0.2), holder(log, "y", 0.2) }
    end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
    assert.are.same({ "body" }, { log[3] })
    table.sort(log)
    assert.are.same({ "body", "x", "y" }, log)
  end)

  it("a second cancel does not abort the cleanup of the first", function()
    local log = {}
    local t = scheduler.spawn(holder(log, "t", 0.2))
    scheduler.sleep(0.01)
    t:cancel()
    scheduler.sleep(0.05)   -- t is in its close handler now, waiting
    t:cancel()
    t:cancel()
    assert.is_false(pcall(t.wait, t))
    assert.are.equal("cancelled", t.status)
    assert.are.same({ "t" }, log)
  end)

  it("a task running all that is cancelled waits for the tasks it cancels", function()
    local log = {}
    local x = scheduler.spawn(scheduler.all, { holder(log, "a"), holder(log, "b") })
    scheduler.sleep(0.02)
    x:cancel()
    local ok, err = pcall(x.wait, x)
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.CancelledError))
    table.sort(log)
    assert.are.same({ "a", "b" }, log)
  end)

  both("at the bound, the cleanup is cancelled and the error raised", function()
    scheduler.cleanup_timeout = 0.1
    local log = {}
    local t0 = core.now()
    local ok, err = pcall(scheduler.all, { holder(log, "slow", 10), failing })
    local elapsed = core.now() - t0
    assert.is_false(ok)
    assert.are.equal("boom", err)
    assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
    -- the cleanup that overran got a CancelledError at its wait
    assert.are.equal(1, #log)
    assert.matches("^slow aborted: .*cancelled", log[1])
  end)

  describe("under plain lua5.4, the process exits only after the cleanup", function()
    local ROOT = os.getenv("PWD")
    local env = core.util.environ()
    env.LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
    env.LUA_CPATH = helper.build_path("lib/lua/5.4/?.so;;")

    -- the child: a close handler that sleeps and then writes `marker`
    local PRELUDE = [[
      local daytona = require "daytona"
      local marker = ...
      local function guard()
        return setmetatable({}, { __close = function()
          daytona.sleep(0.2)
          local f = assert(io.open(marker, "w")); f:write("closed"); f:close()
        end })
      end
    ]]

    local function child(code)
      local dir = helper.tmpdir()
      local f = assert(io.open(dir .. "/main.lua", "w"))
      f:write(PRELUDE, code)
      f:close()
      local r = process.run({ "lua5.4", dir .. "/main.lua", dir .. "/closed" },
        { env = env, timeout = 60, stderr = "pipe" })
      return r, helper.read_file(dir .. "/closed")
    end

    it("for all", function()
      local r, closed = child([[
        daytona.all{
          function() local g <close> = guard(); daytona.sleep(10) end,
          function() daytona.sleep(0.01); error("boom") end,
        }
      ]])
      assert.are_not.equal(0, r.exit_code)
      assert.matches("boom", r.stderr)
      assert.are.equal("closed", closed, r.stderr)
    end)

    it("for timeout", function()
      local r, closed = child([[
        daytona.timeout(0.05, function() local g <close> = guard(); daytona.sleep(10) end)
      ]])
      assert.are_not.equal(0, r.exit_code)
      assert.matches("timed out", r.stderr)
      assert.are.equal("closed", closed, r.stderr)
    end)
  end)
end)
