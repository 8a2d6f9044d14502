-- `local sb <close> = client:create{}` in a task that `daytona.all` cancels:
-- under plain lua5.4 the error of `all` ends the process, so the sandbox is
-- deleted only if `all` waits for the cancelled task's cleanup first.
local fixture = require "sdk.fixture"
local dtlocal = require "support.dtlocal"
local helper = require "support.helper"
local process = require "daytona.runtime.process"
local core = require "daytona.core"

describe("structured concurrency against a local server", function()
  local srv

  setup(function() srv = fixture.server() end)
  teardown(function()
    helper.cleanup()
    if srv then srv.stop() end
  end)

  local function sandboxes()
    local list = dtlocal.expect(srv, 200, "GET", "/sandbox")
    return type(list) == "table" and (list.items or list) or {}
  end

  it("a plain lua5.4 whose all fails leaves no sandbox behind", function()
    assert.are.equal(0, #sandboxes())
    local ROOT = os.getenv("PWD")
    local env = core.util.environ()
    env.LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
    env.LUA_CPATH = helper.build_path("lib/lua/5.4/?.so;;")
    env.DAYTONA_API_URL = srv.api_url
    env.DAYTONA_API_KEY = srv.token
    env.DAYTONA_TARGET = "local"
    local dir = helper.tmpdir()
    local f = assert(io.open(dir .. "/main.lua", "w"))
    -- the failing task waits until the sandbox exists, so that it is the
    -- <close> of a cancelled task that has to delete it
    f:write([[
      local daytona = require "daytona"
      local client = daytona.new()
      local created = false
      daytona.all{
        function()
          local sb <close> = client:create{}
          io.stdout:write("created ", sb.id, "\n"); io.stdout:flush()
          created = true
          daytona.sleep(10)
        end,
        function()
          while not created do daytona.sleep(0.02) end
          error("boom")
        end,
      }
    ]])
    f:close()
    local r = process.run({ "lua5.4", dir .. "/main.lua" }, { env = env, timeout = 120, stderr = "pipe", cwd = dir })
    assert.are_not.equal(0, r.exit_code)
    assert.matches("created %S+", r.stdout, 1, false)
    assert.matches("boom", r.stderr)
    local left = sandboxes()
    assert.are.equal(0, #left, "sandboxes left: " .. #left .. "\n" .. r.stderr)
  end)
end)
