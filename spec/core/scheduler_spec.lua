-- The scheduler: tasks, the one wait point, combinators, error reporting.
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local core = require "daytona.core"
local daytona = require "daytona"

describe("scheduler", function()
  it("runs 1,000 tasks that each sleep 100 ms in well under a second", function()
    local fns = {}
    for i = 1, 1000 do fns[i] = function() scheduler.sleep(0.1); return i end end
    local t0 = core.now()
    local results = scheduler.all(fns)
    local elapsed = core.now() - t0
    assert.are.equal(1000, #results)
    for i = 1, 1000 do assert.are.equal(i, results[i]) end
    assert.is_true(elapsed < 0.5, "took " .. elapsed .. " s")
  end)

  it("returns a task's results from wait and raises its error", function()
    local t = scheduler.spawn(function(a, b) scheduler.sleep(0.01); return a + b, "x" end, 2, 3)
    local s, x = t:wait()
    assert.are.equal(5, s)
    assert.are.equal("x", x)
    local bad = scheduler.spawn(function() scheduler.sleep(0.01); error({ tag = "mine" }) end)
    local ok, err = pcall(bad.wait, bad)
    assert.is_false(ok)
    assert.are.equal("mine", err.tag)
    assert.is_truthy(bad.traceback:find("scheduler_spec", 1, true))
  end)

  it("cancels a waiting task with CancelledError", function()
    local cleaned = false
    local t = scheduler.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() cleaned = true end })
      scheduler.sleep(10)
    end)
    scheduler.sleep(0.01)
    t:cancel()
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.CancelledError))
    assert.is_true(cleaned)
    assert.are.equal("cancelled", t.status)
  end)

  it("cancels a task that never started", function()
    local ran = false
    local t = scheduler.spawn(function() ran = true end)
    t:cancel()
    assert.is_false(pcall(t.wait, t))
    assert.is_false(ran)
  end)

  it("all raises the first error and cancels the rest", function()
    local slow_finished = false
    local t0 = core.now()
    local ok, err = pcall(scheduler.all, {
      function() scheduler.sleep(2); slow_finished = true end,
      function() scheduler.sleep(0.02); error("boom", 0) end,
    })
    assert.is_false(ok)
    assert.are.equal("boom", err)
    assert.is_true(core.now() - t0 < 1)
    assert.is_false(slow_finished)
  end)

  it("all accepts tasks and rejects other values with a clear message", function()
    local t = scheduler.spawn(function() return "t" end)
    assert.are.same({ "f", "t" }, scheduler.all({ function() return "f" end, t }))
    assert.has_error(function() scheduler.all({ 42 }) end,
      "bad argument to 'all' (item 1 is a number, expected a function or task)")
  end)

  it("timeout raises DaytonaTimeoutError and cancels the function", function()
    local finished = false
    local ok, err = pcall(scheduler.timeout, 0.05, function() scheduler.sleep(5); finished = true end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.is_false(finished)
    assert.are.same({ 1, 2 }, { scheduler.timeout(1, function() return 1, 2 end) })
  end)

  it("works the same from inside a task and from the main thread", function()
    local inside = scheduler.spawn(function()
      assert.is_not_nil(scheduler.running())
      scheduler.sleep(0.01)
      return "in"
    end):wait()
    assert.are.equal("in", inside)
    assert.is_nil(scheduler.running())
  end)

  it("waits through pcall, metamethods and nested functions inside a task", function()
    local obj = setmetatable({}, {
      __index = function(_, k) scheduler.sleep(0.01); return k .. "!" end,
      __add = function() scheduler.sleep(0.01); return 42 end,
    })
    local r = scheduler.spawn(function()
      local ok, v = pcall(function() return obj.hello end)
      assert.is_true(ok)
      local function nested(n) if n == 0 then scheduler.sleep(0.001); return 0 end return nested(n - 1) + 1 end
      return v, obj + 1, nested(20)
    end)
    local a, b, c = r:wait()
    assert.are.equal("hello!", a)
    assert.are.equal(42, b)
    assert.are.equal(20, c)
  end)

  it("validates its arguments", function()
    assert.has_error(function() scheduler.sleep(-1) end)
    assert.has_error(function() scheduler.spawn(42) end,
      "bad argument #1 to 'spawn' (function expected, got number)")
    assert.has_error(function() scheduler.timeout("x", print) end)
  end)

  it("reports a deadlock instead of hanging", function()
    local a, b
    a = scheduler.spawn(function() scheduler.sleep(0); b:wait() end)
    b = scheduler.spawn(function() scheduler.sleep(0); a:wait() end)
    local ok, err = pcall(a.wait, a)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("deadlock", 1, true))
    a:cancel(); b:cancel()
    assert.is_false(pcall(b.wait, b))
  end)

  it("treats a bare coroutine.yield in a task as a cooperative yield", function()
    local order = {}
    local t1 = scheduler.spawn(function() order[#order + 1] = 1; coroutine.yield(); order[#order + 1] = 3 end)
    local t2 = scheduler.spawn(function() order[#order + 1] = 2 end)
    t1:wait(); t2:wait()
    assert.are.same({ 1, 2, 3 }, order)
  end)

  describe("host integration", function()
    it("step(0) never blocks and the fd is pollable", function()
      assert.is_true(math.type(daytona.loop.fd()) == "integer" and daytona.loop.fd() >= 0)
      local t = daytona.spawn(function() daytona.sleep(0.05); return "done" end)
      local steps, worst = 0, 0
      while not t:done() do
        local s0 = core.now()
        daytona.loop.step(0)
        worst = math.max(worst, core.now() - s0)
        steps = steps + 1
        -- a host frame: sleep a little without the loop
        os.execute("sleep 0.005")
      end
      assert.are.equal("done", t:wait())
      assert.is_true(steps > 1)
      assert.is_true(worst < 0.02, "a step blocked for " .. worst .. " s")
    end)
  end)

  describe("run and shutdown", function()
    it("returns at the main task's failure, leaving the others to shutdown", function()
      local cleaned
      local ok, err, tb = scheduler.run(function()
        scheduler.spawn(function()
          local _ <close> = setmetatable({}, { __close = function(_, e)
            scheduler.sleep(0.01)   -- cleanup that waits
            cleaned = e
          end })
          scheduler.sleep(3600)
        end)
        scheduler.sleep(0.01)
        error("main failed")
      end)
      assert.is_false(ok)
      assert.is_truthy(err:find("main failed", 1, true))
      assert.is_truthy(tb:find("stack traceback", 1, true))
      assert.is_falsy(tb:find("xpcall", 1, true), tb)   -- none of the scheduler's frames
      assert.are.equal(1, scheduler.count())             -- the other one still runs
      assert.is_nil(cleaned)
      assert.are.equal(0, scheduler.shutdown())
      assert.are.equal(0, scheduler.count())
      assert.is_true(errors.is(cleaned, errors.CancelledError))
    end)

    it("bounds shutdown by cleanup_timeout, then cancels the overrunning cleanup once more", function()
      local saved = scheduler.cleanup_timeout
      scheduler.cleanup_timeout = 0.05
      local stuck
      local ok = scheduler.run(function()
        stuck = scheduler.spawn(function()
          pcall(scheduler.sleep, 3600)
          scheduler.sleep(3600)   -- a cleanup that would never end
        end)
        scheduler.sleep(0.01)
        error("main failed")
      end)
      assert.is_false(ok)
      local left = scheduler.shutdown()
      scheduler.cleanup_timeout = saved
      -- cancelled once more at the bound: it unwound and is done
      assert.are.equal(0, left)
      assert.are.equal("cancelled", stuck.status)
    end)

    it("a fallback signal watcher stands back while the signal is watched", function()
      local pid = tonumber(io.open("/proc/self/stat"):read("a"):match("^(%d+)"))
      local function deliver(w)
        os.execute("kill -TERM " .. pid)
        local t <close> = core.timer(2000)
        scheduler.wait(w, t)      -- signalled at once when counted
        local deadline = core.timer(50)
        scheduler.wait(deadline)  -- a delivery to the other watcher meanwhile
      end
      local fb <close> = core.signal("TERM", "fallback")
      do
        local own <close> = core.signal("TERM")
        deliver(own)
        assert.are.equal(1, own:take())
        assert.are.equal(0, fb:take())
      end
      deliver(fb)
      assert.are.equal(1, fb:take())
    end)
  end)
end)
