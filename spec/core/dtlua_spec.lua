-- The dtlua interpreter: lua.c's flags, chunks run as tasks, exit codes.
local helper = require "support.helper"

local DTLUA = (os.getenv("DTLUA_BUILD") or "build") .. "/bin/dtlua"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- run a shell command line; returns stdout, stderr, exit code
local function run(cmdline, stdin)
  local dir = helper.tmpdir()
  local out, err = dir .. "/out", dir .. "/err"
  local full = cmdline .. " >" .. out .. " 2>" .. err
  if stdin then
    local f = assert(io.open(dir .. "/in", "w")); f:write(stdin); f:close()
    full = full .. " <" .. dir .. "/in"
  else
    full = full .. " </dev/null"
  end
  local _, _, code = os.execute(full)
  local function slurp(p) local f = io.open(p); local s = f:read("a"); f:close(); return s end
  return slurp(out), slurp(err), code
end

local function dtlua(args, stdin) return run(DTLUA .. " " .. args, stdin) end

describe("dtlua", function()
  teardown(helper.cleanup)

  it("runs -e chunks with daytona preloaded, inside the scheduler", function()
    local out, _, code = dtlua([[-e "print(type(daytona.spawn), daytona.running() ~= nil)"]])
    assert.are.equal(0, code)
    assert.are.equal("function\ttrue\n", out)
  end)

  it("runs a script with arg like lua does", function()
    local dir = helper.tmpdir()
    local f = assert(io.open(dir .. "/s.lua", "w"))
    f:write("print(arg[0]:match('s.lua$'), arg[1], arg[2], select('#', ...), ...)\n")
    f:close()
    local out, _, code = dtlua(sh_quote(dir .. "/s.lua") .. " one two")
    assert.are.equal(0, code)
    assert.are.equal("s.lua\tone\ttwo\t2\tone\ttwo\n", out)
  end)

  it("waits for every spawned task before exiting", function()
    local out, _, code = dtlua([[-e "daytona.spawn(function() daytona.sleep(0.05) print('late') end) print('main')"]])
    assert.are.equal(0, code)
    assert.are.equal("main\nlate\n", out)
  end)

  it("exits 1 with a traceback on an uncaught error", function()
    local _, err, code = dtlua([[-e "local function f() error('kaboom') end f()"]])
    assert.are.equal(1, code)
    assert.is_truthy(err:find("kaboom", 1, true))
    assert.is_truthy(err:find("stack traceback", 1, true))
  end)

  it("reports errors of tasks nobody waited for", function()
    local _, err, code = dtlua([[-e "daytona.spawn(function() error('lost one') end)"]])
    assert.are.equal(0, code)
    assert.is_truthy(err:find("nobody waited", 1, true))
    assert.is_truthy(err:find("lost one", 1, true))
  end)

  it("reads the chunk from stdin with -", function()
    local out, _, code = dtlua("- x y", "print(...)")
    assert.are.equal(0, code)
    assert.are.equal("x\ty\n", out)
  end)

  it("loads libraries with -l and -l g=mod", function()
    local out, _, code = dtlua([[-l j=cjson -e "print(j.encode({1}))"]])
    assert.are.equal(0, code)
    assert.are.equal("[1]\n", out)
  end)

  it("prints its version with -v", function()
    local out, _, code = dtlua("-v")
    assert.are.equal(0, code)
    assert.is_truthy(out:match("^dtlua %d+%.%d+%.%d+ %(Lua 5%.4"))
  end)

  it("rejects unknown options with usage and status 1", function()
    local _, err, code = dtlua("-z")
    assert.are.equal(1, code)
    assert.is_truthy(err:find("unrecognized option '-z'", 1, true))
  end)

  it("runs an interactive session with -i", function()
    local out, _, code = dtlua("-i", "=1+2\nx = 5\nprint(x * 2)\n")
    assert.are.equal(0, code)
    assert.is_truthy(out:find("3\n", 1, true))
    assert.is_truthy(out:find("10\n", 1, true))
  end)

  it("honours LUA_INIT and ignores it with -E", function()
    local out = run("LUA_INIT='print(\"init\")' " .. DTLUA .. [[ -e "print('x')"]])
    assert.are.equal("init\nx\n", out)
    out = run("LUA_INIT='print(\"init\")' " .. DTLUA .. [[ -E -e "print('x')"]])
    assert.are.equal("x\n", out)
  end)

  it("cancels tasks and exits 130 on Ctrl-C", function()
    local dir = helper.tmpdir()
    local script = dir .. "/s.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
      local t = daytona.spawn(function()
        local ok, err = pcall(daytona.sleep, 30)
        io.open(arg[1], "w"):write(tostring(err)):close()
        error(err, 0)
      end)
      io.open(arg[1] .. ".ready", "w"):close()
      t:wait()
    ]])
    f:close()
    local marker = dir .. "/cancelled"
    -- start it, wait until it is ready, then SIGINT it
    local cmd = ("%s %s %s & pid=$!; for i in $(seq 1 200); do [ -e %s.ready ] && break; sleep 0.01; done; " ..
      "kill -INT $pid; wait $pid; echo $?"):format(DTLUA, script, marker, marker)
    local out = run(cmd)
    assert.are.equal("130\n", out)
    local m = assert(io.open(marker)):read("a")
    assert.is_truthy(m:find("CancelledError", 1, true))
  end)
end)

-- A main chunk that fails while a server or a background task it started
-- still runs: the error is printed at once and the process exits 1 (as lua
-- does), the tasks it left being cancelled with their cleanup bounded by
-- cleanup_timeout; a chunk that returns leaves its server serving until a
-- signal. Every child runs under process.run's timeout: one that hangs
-- fails the spec (ETIMEDOUT) instead of hanging it.
describe("dtlua with tasks left running", function()
  local process = require "daytona.runtime.process"
  local http = require "daytona.runtime.http"
  local BUILD = os.getenv("DTLUA_BUILD") or "build"
  local BOUND = 30   -- seconds: far above what any of these needs

  teardown(helper.cleanup)

  local function script(src)
    local dir = helper.tmpdir()
    local path = dir .. "/s.lua"
    local f = assert(io.open(path, "w")); f:write(src); f:close()
    return path, dir
  end

  -- run argv to its end; returns process.run's result table
  local function bounded(argv)
    return helper.run(function()
      local r, msg = process.run(argv, { timeout = BOUND })
      assert(r, msg)   -- ETIMEDOUT: the child hung
      return r
    end)
  end

  local function dtlua_run(path, ...) return bounded({ DTLUA, path, ... }) end

  -- plain lua5.4 with the checkout's modules
  local function lua_run(path, ...)
    return bounded({ "env", "LUA_PATH=lua/?.lua;lua/?/init.lua;;",
      "LUA_CPATH=" .. BUILD .. "/lib/lua/5.4/?.so;;", "lua5.4", path, ... })
  end

  -- a pid that is gone (or a zombie waiting for its reaper)
  local function dead(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return true end
    local stat = f:read("a"); f:close()
    return stat:match("^%d+ %b() (%a)") == "Z"
  end

  local SERVER_THEN_ERROR = [[
    local daytona = require "daytona"
    local srv = daytona.server.listen{ port = 0, handler = function(_, res) res:send(200, {}, "ok") end }
    local r = assert(daytona.http.request{ url = srv.url .. "/" })
    assert(r.status == 200)
    error("failed after listening")
  ]]

  it("prints the error of a chunk that fails while its server listens and exits 1", function()
    local path = script(SERVER_THEN_ERROR)
    local r = dtlua_run(path)
    assert.are.equal(1, r.exit_code, r.stderr)
    assert.is_truthy(r.stderr:find("s.lua:5: failed after listening\nstack traceback:", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("in main chunk", 1, true), r.stderr)
  end)

  it("does the same under a plain lua5.4", function()
    local path = script(SERVER_THEN_ERROR)
    local r = lua_run(path)
    assert.are.equal(1, r.exit_code, r.stderr)
    assert.is_truthy(r.stderr:find("s.lua:5: failed after listening\nstack traceback:", 1, true), r.stderr)
  end)

  local BACKGROUND_THEN_ERROR = [[
    local daytona = require "daytona"
    local dir = arg[0]:match("^(.*)/")
    local child = assert(daytona.process.spawn({ "sleep", "300" }, { stdin = "null" }))
    io.open(dir .. "/pid", "w"):write(child:pid()):close()
    daytona.spawn(function()
      local _ <close> = setmetatable({}, { __close = function(_, e)
        daytona.sleep(0.05)   -- cleanup may wait
        io.open(dir .. "/cleaned", "w"):write(tostring(e)):close()
      end })
      child:wait()            -- never ends by itself
    end)
    daytona.sleep(0.05)
    error(daytona.errors.DaytonaError("background still running"))
  ]]

  for _, how in ipairs({ "dtlua", "lua5.4" }) do
    it("cancels a background task and kills its child when the chunk fails (" .. how .. ")", function()
      local path, dir = script(BACKGROUND_THEN_ERROR)
      local r = (how == "dtlua" and dtlua_run or lua_run)(path)
      assert.are.equal(1, r.exit_code, r.stderr)
      -- the project's error format: position, class, message, traceback
      assert.is_truthy(r.stderr:find("s.lua:13: DaytonaError: background still running", 1, true), r.stderr)
      assert.is_truthy(r.stderr:find("stack traceback", 1, true), r.stderr)
      local pid = assert(tonumber(helper.read_file(dir .. "/pid")))
      assert.is_truthy(helper.eventually(function() return dead(pid) end), "child " .. pid .. " still runs")
      if how == "dtlua" then   -- lua.c exits without running the loop again
        local cleaned = helper.read_file(dir .. "/cleaned")
        assert.is_truthy(cleaned and cleaned:find("CancelledError", 1, true), cleaned)
      end
    end)
  end

  it("bounds the cleanup of the tasks a failed chunk left by cleanup_timeout", function()
    local path = script([[
      daytona.cleanup_timeout = 0.2
      daytona.spawn(function()
        pcall(daytona.sleep, 300)   -- cancelled here ...
        daytona.sleep(300)          -- ... and its cleanup would never end
      end)
      daytona.sleep(0.01)
      error("main failed")
    ]])
    local r = dtlua_run(path)
    assert.are.equal(1, r.exit_code, r.stderr)
    assert.is_truthy(r.stderr:find("s.lua:7: main failed", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("1 task(s) still cleaning up after 0.2 s (cleanup_timeout)", 1, true), r.stderr)
    -- the error comes first, the cleanup after it
    assert.is_true(r.stderr:find("main failed", 1, true) < r.stderr:find("cleaning up", 1, true), r.stderr)
  end)

  -- start a server-only script, check it serves after its chunk returned,
  -- send it `sig`; returns its exit status and stderr
  local function serve_then_signal(src, sig)
    local path, dir = script(src)
    local res = helper.run(function()
      local p <close> = assert(process.spawn({ DTLUA, path }, { stdin = "null" }))
      local url = p:lines("stdout", BOUND)()
      assert.is_truthy(url and url:match("^http://"), url)
      for _ = 1, 2 do   -- the chunk has returned: the server keeps serving
        local r = assert(http.request{ url = url .. "/", timeout = BOUND })
        assert.are.equal(200, r.status)
        assert.are.equal("ok", r.body)
      end
      assert.is_true(p:kill(sig, false))
      local code = assert(p:wait(BOUND))
      local err = {}
      for chunk in function() return p:read("stderr", BOUND) end do err[#err + 1] = chunk end
      return { code, table.concat(err) }
    end)
    return res[1], res[2], dir
  end

  local SERVER_ONLY = [[
    local dir = arg[0]:match("^(.*)/")
    local srv = daytona.server.listen{ port = 0, handler = function(_, res) res:send(200, {}, "ok") end }
    daytona.spawn(function()   -- a background task with cleanup that waits
      local _ <close> = setmetatable({}, { __close = function(_, e)
        daytona.sleep(0.05)
        io.open(dir .. "/cleaned", "w"):write(tostring(e)):close()
      end })
      daytona.sleep(3600)
    end)
    io.stdout:write(srv.url, "\n"); io.stdout:flush()
  ]]

  it("keeps serving after the chunk returns, and ends cleanly on SIGTERM (143)", function()
    local code, err, dir = serve_then_signal(SERVER_ONLY, "TERM")
    assert.are.equal(143, code, err)
    local cleaned = helper.read_file(dir .. "/cleaned")
    assert.is_truthy(cleaned and cleaned:find("CancelledError", 1, true), cleaned)
  end)

  it("ends the same on Ctrl-C (130)", function()
    local code, err, dir = serve_then_signal(SERVER_ONLY, "INT")
    assert.are.equal(130, code, err)
    assert.is_truthy(helper.read_file(dir .. "/cleaned"))
  end)

  it("leaves SIGTERM to a script that watches it itself", function()
    local code, err, dir = serve_then_signal([[
      local dir = arg[0]:match("^(.*)/")
      local core = require "daytona.core"
      local srv <close> = daytona.server.listen{ port = 0, handler = function(_, res) res:send(200, {}, "ok") end }
      local term <close> = core.signal("TERM")
      io.stdout:write(srv.url, "\n"); io.stdout:flush()
      while term:take() == 0 do require("daytona.runtime.scheduler").wait(term) end
      io.open(dir .. "/graceful", "w"):close()
    ]], "TERM")
    assert.are.equal(0, code, err)
    assert.is_truthy(helper.read_file(dir .. "/graceful"))
  end)
end)
