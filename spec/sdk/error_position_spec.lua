-- SDK errors say where user code made the call that raised them: `where`
-- ("file.lua:12"), `traceback`, and a one-line tostring that starts with
-- the position; an uncaught one in a plain lua5.4 prints the traceback too.
local helper = require "support.helper"
local daytona = require "daytona"
local errors = require "daytona.errors"
local server = require "daytona.runtime.server"

local BUILD = os.getenv("DTLUA_BUILD") or "build"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("SDK error positions", function()
  teardown(helper.cleanup)

  it("point at the user's line of an SDK call, through the transport and a task", function()
    helper.run(function()
      local srv <close> = server.listen{ port = 0, handler = function(_, res)
        res:send(404, { ["content-type"] = "application/json" }, '{"message":"no such sandbox"}')
      end }
      local client = daytona.new{ api_key = "k", api_url = srv.url .. "/api", retry = false,
        local_server = false }
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() return client:get("nope"), nil end)
      assert.is_false(ok)
      assert.is_true(errors.is(err, errors.DaytonaNotFoundError), tostring(err))
      assert.are.equal("spec/sdk/error_position_spec.lua:" .. line, err.where)
      local s = tostring(err)
      assert.are.equal(err.where .. ": DaytonaNotFoundError: ", s:sub(1, #err.where + 24))
      assert.is_nil(s:find("\n"))                               -- one line
      assert.is_truthy(err.traceback:find("^stack traceback:\n"))
      assert.is_truthy(err.traceback:find("daytona/transport.lua", 1, true))
      assert.is_truthy(err.traceback:find("error_position_spec.lua:" .. line, 1, true))
      -- print, string.format and tostring show the one line
      assert.are.equal(s, ("%s"):format(err))
    end)
  end)

  it("are kept when given, and absent where no user code is on the stack", function()
    local e = errors.DaytonaError("x", { where = "elsewhere.lua:3" })
    assert.are.equal("elsewhere.lua:3: DaytonaError: x", tostring(e))
    -- a task the SDK starts runs only SDK frames: a function loaded under
    -- the SDK's directory stands in for one
    local sdk_dir = debug.getinfo(errors.class, "S").source:match("^@(.*[/\\])")
    local f = load("return require('daytona.errors').DaytonaError('inner')", "@" .. sdk_dir .. "fake.lua")
    local inner = daytona.spawn(f):wait()
    assert.is_nil(inner.where)
    assert.are.equal("DaytonaError: inner", tostring(inner))
    assert.is_string(inner.traceback)
  end)

  it("print the position and the traceback when uncaught in a plain lua5.4", function()
    local dir = helper.tmpdir()
    local path = dir .. "/s.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
local errors = require "daytona.errors"
local function sdk_call() errors.check(nil, "cannot connect", "ECONNREFUSED") end
sdk_call()
]])
    f:close()
    local cmd = ("LUA_PATH=%s LUA_CPATH=%s lua5.4 %s 2>&1 </dev/null; echo rc=$?"):format(
      sh_quote("lua/?.lua;lua/?/init.lua;;"), sh_quote(BUILD .. "/lib/lua/5.4/?.so;;"), sh_quote(path))
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    assert.is_truthy(out:find("lua5.4: " .. path .. ":2: DaytonaConnectionError: cannot connect (ECONNREFUSED)\n",
      1, true), out)
    assert.is_truthy(out:find("stack traceback:\n", 1, true), out)
    assert.is_truthy(out:find(path .. ":3: in main chunk", 1, true), out)
    assert.is_truthy(out:find("rc=1\n", 1, true), out)
  end)
end)
