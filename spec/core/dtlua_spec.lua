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
