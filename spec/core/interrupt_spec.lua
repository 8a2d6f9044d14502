-- Ctrl-C under a plain lua5.4: a wait on the main thread borrows SIGINT
-- (lua.c's own handler only acts when Lua code runs, never while the loop
-- sleeps), raises errors.InterruptedError there after the tasks it waited
-- for have run their cleanup, and gives lua.c its handler back; a second
-- Ctrl-C during that cleanup ends the process. Each case runs a real
-- lua5.4 and sends it a real SIGINT.
local helper = require "support.helper"

local BUILD = os.getenv("DTLUA_BUILD") or "build"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Run `script` under lua5.4 with the checkout's modules, send it SIGINT
-- once it has created its .ready file (and again `again` seconds later if
-- given); returns its exit status, its stderr and the milliseconds from
-- the first SIGINT to its exit.
local function interrupt(script, again)
  local dir = helper.tmpdir()
  local path = dir .. "/s.lua"
  local f = assert(io.open(path, "w")); f:write(script); f:close()
  local ready = dir .. "/ready"
  local env = ("LUA_PATH=%s LUA_CPATH=%s"):format(
    sh_quote("lua/?.lua;lua/?/init.lua;;"), sh_quote(BUILD .. "/lib/lua/5.4/?.so;;"))
  local cmd = ("%s lua5.4 %s %s 2>%s & pid=$!; " ..
    "for i in $(seq 1 500); do [ -e %s ] && break; sleep 0.01; done; " ..
    "t0=$(date +%%s%%N); kill -INT $pid; %s wait $pid; rc=$?; " ..
    "echo $rc $(( ($(date +%%s%%N) - t0) / 1000000 ))"):format(
    env, sh_quote(path), sh_quote(ready), sh_quote(dir .. "/err"), sh_quote(ready),
    again and ("sleep %g; kill -INT $pid;"):format(again) or "")
  local p = io.popen(cmd .. " </dev/null")
  local out = p:read("a")
  p:close()
  local rc, ms = out:match("(%d+) (%d+)")
  return tonumber(rc), helper.read_file(dir .. "/err") or "", tonumber(ms), dir
end

describe("Ctrl-C in a plain lua5.4", function()
  teardown(helper.cleanup)

  it("interrupts a wait on the main thread, after the waited-for task's cleanup", function()
    local rc, err, ms, dir = interrupt([[
      local daytona = require "daytona"
      local marker = arg[0]:gsub("s%.lua$", "cleaned")
      local t = daytona.spawn(function()
        local c <close> = setmetatable({}, { __close = function(_, e)
          daytona.sleep(0.05)   -- cleanup may wait: it runs before the raise
          io.open(marker, "w"):write(tostring(e):match("[^\n]*")):close()
        end })
        daytona.sleep(30)
      end)
      io.open(arg[0]:gsub("s%.lua$", "ready"), "w"):close()
      t:wait()
    ]])
    print(("\n  SIGINT to exit, a task with 50 ms of cleanup: %d ms"):format(ms))
    assert.are.equal(1, rc, err)                               -- lua.c: an uncaught error
    assert.is_truthy(err:find("s.lua:11: InterruptedError: interrupted", 1, true), err)
    assert.is_truthy(err:find("stack traceback", 1, true), err)
    local cleaned = helper.read_file(dir .. "/cleaned")
    assert.is_truthy(cleaned and cleaned:find("CancelledError", 1, true), cleaned)
    assert.is_true(ms < 5000, ms)                              -- not the 30 s sleep
  end)

  it("gives lua.c its handler back: the error is catchable, and Ctrl-C in Lua code is lua.c's", function()
    local rc, err, ms = interrupt([[
      local daytona = require "daytona"
      local errors = daytona.errors
      io.open(arg[0]:gsub("s%.lua$", "ready"), "w"):close()
      local ok, e = pcall(daytona.sleep, 30)
      assert(not ok and errors.is(e, errors.InterruptedError) and errors.is(e, errors.CancelledError))
      io.stderr:write("caught ", tostring(e), "\n")
      while true do end                                      -- only lua.c's hook can stop this
    ]], 0.3)
    print(("\n  SIGINT to exit, then lua.c's interrupt of a busy loop: %d ms"):format(ms))
    assert.are.equal(1, rc, err)
    assert.is_truthy(err:find("caught .*s.lua:4: InterruptedError: interrupted"), err)
    assert.is_truthy(err:find("lua5.4: interrupted!", 1, true), err)
  end)

  it("ends the process on a second Ctrl-C during the cleanup", function()
    local rc, err, ms = interrupt([[
      local daytona = require "daytona"
      local t = daytona.spawn(function()
        local c <close> = setmetatable({}, { __close = function() daytona.sleep(20) end })
        daytona.sleep(30)
      end)
      io.open(arg[0]:gsub("s%.lua$", "ready"), "w"):close()
      t:wait()
    ]], 0.2)
    print(("\n  SIGINT, a 20 s cleanup, SIGINT 0.2 s later: exit after %d ms"):format(ms))
    assert.are.equal(130, rc, err)                             -- killed by SIGINT
    assert.is_truthy(err:find("interrupted again", 1, true), err)
    assert.is_true(ms < 5000, ms)
  end)

  it("interrupts a main-thread call of the runtime, which unwinds through <close>", function()
    local rc, err, ms, dir = interrupt([[
      local daytona = require "daytona"
      local process = daytona.process
      local p <close> = assert(process.spawn({ "sleep", "30" }, { stdin = "null" }))
      local marker = arg[0]:gsub("s%.lua$", "pid")
      io.open(marker, "w"):write(p:pid()):close()
      io.open(arg[0]:gsub("s%.lua$", "ready"), "w"):close()
      p:wait()
    ]])
    print(("\n  SIGINT to exit, a main-thread Process:wait: %d ms"):format(ms))
    assert.are.equal(1, rc, err)
    assert.is_truthy(err:find("InterruptedError", 1, true), err)
    assert.is_true(ms < 5000, ms)
    -- closing the process on the way out stopped the child
    local pid = helper.read_file(dir .. "/pid")
    helper.run(function()
      helper.eventually(function() return not io.open("/proc/" .. pid .. "/stat") end)
    end)
  end)

  it("is dtlua's own under dtlua: nothing is borrowed while run watches SIGINT", function()
    local core = require "daytona.core"
    local watcher <close> = core.signal("INT")
    assert.is_nil(core.signal("INT", "borrow"))
  end)
end)
