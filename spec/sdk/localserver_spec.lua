-- The no-credentials default: the SDK finds (or starts) the user's local
-- server from $XDG_STATE_HOME/dtlua/dtlocal.json.
local helper = require "support.helper"
local errors = require "daytona.errors"
local ls = require "daytona.localserver"

local build = os.getenv("DTLUA_BUILD") or "build"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("the local server default", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.cleanup() end)

  it("locates the state file under XDG_STATE_HOME, else HOME", function()
    assert.are.equal("/x/dtlua/dtlocal.json", ls.state_file(function(k) return ({ XDG_STATE_HOME = "/x" })[k] end))
    assert.are.equal("/h/.local/state/dtlua/dtlocal.json", ls.state_file(function(k) return ({ HOME = "/h" })[k] end))
  end)

  it("ignores a description whose server is gone, and says why", function()
    local path = dir .. "/dtlocal.json"
    write(path, '{"api_url":"http://127.0.0.1:1/api","toolbox_url":"x","token":"t","pid":999999999}')
    local info, why = ls.read(path)
    assert.is_nil(info)
    assert.matches("not running", why)
    write(path, "not json")
    info, why = ls.read(path)
    assert.is_nil(info)
    assert.matches("not valid JSON", why)
    local err = select(2, pcall(ls.ensure, { state_file = path, start = false, quiet = true }))
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
    assert.are.equal("ENOSERVER", err.code)
  end)

  it("reports a dtlocal that cannot be found", function()
    local ok, err = pcall(ls.start, dir .. "/no-such-dtlocal", 10)
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
    assert.matches("not found", err.message)
  end)

  it("dtlocal start leaves the server in its own session, stop ends it, a failed start says why", function()
    local process = require "daytona.runtime.process"
    local dtlocal = helper.build_path("bin/dtlocal")
    local env = helper.child_env()
    env.XDG_STATE_HOME, env.HOME = dir .. "/state", dir
    local function run(...)
      return assert(process.run({ dtlocal, ... }, { env = env, timeout = 60, stderr = "stdout" }))
    end
    local r = run("start")
    local ok, err = pcall(function()
      assert.are.equal(0, r.exit_code, r.stdout)
      local pid = tonumber(r.stdout:match("started %(pid (%d+)%)"))
      assert.is_not_nil(pid, r.stdout)
      local info = assert(ls.read(dir .. "/state/dtlua/dtlocal.json"))
      assert.are.equal(pid, math.tointeger(info.pid))   -- the server's own pid, no shell between
      local stat = assert(helper.read_file("/proc/" .. pid .. "/stat"))
      assert.are.equal(pid, tonumber(stat:match("^%d+ %b() %a %d+ %d+ (%d+)")))   -- its session
      assert.matches("already running %(pid " .. pid, run("start").stdout)
      -- a second server on the same port cannot listen: the error carries its log
      local port = info.api_url:match(":(%d+)/")
      local env2 = helper.child_env()
      env2.XDG_STATE_HOME, env2.HOME = dir .. "/state2", dir
      local r2 = assert(process.run({ dtlocal, "start", "--port", port }, { env = env2, timeout = 60, stderr = "stdout" }))
      assert.are.equal(1, r2.exit_code)
      assert.matches("did not start.*Address already in use", r2.stdout)
    end)
    local s = run("stop")
    assert.is_true(ok, err)
    assert.matches("stopped", s.stdout)
    assert.matches("not running", run("status").stdout)
  end)

  it("starts the user's server when none runs, uses it, and says so on stderr", function()
    local dtlua = build .. "/bin/dtlua"
    local script = dir .. "/s.lua"
    write(script, [[
      local client = daytona.new()
      local sb <close> = client:create{}
      print(sb.state, sb.process:exec("echo ok").result)
    ]])
    local envs = ("env -u DAYTONA_API_KEY -u DAYTONA_JWT_TOKEN -u DAYTONA_API_URL -u DAYTONA_SERVER_URL " ..
      "XDG_STATE_HOME=%s HOME=%s"):format(sh_quote(dir .. "/state"), sh_quote(dir))
    local cmd = ("cd %s && %s %s %s 2>%s"):format(sh_quote(dir), envs, sh_quote(os.getenv("PWD") .. "/" .. dtlua),
      sh_quote(script), sh_quote(dir .. "/err"))
    local p = io.popen(cmd)
    local out = p:read("a")
    local ok = p:close()
    local f = io.open(dir .. "/err"); local err = f and f:read("a") or ""; if f then f:close() end
    -- stop the server it started, whatever happened
    os.execute(("%s %s stop >/dev/null 2>&1"):format(envs, sh_quote(os.getenv("PWD") .. "/" .. build .. "/bin/dtlocal")))
    assert.is_true(ok, err)
    assert.are.equal("started\tok\n\n", out)
    local lines = {}
    for l in err:gmatch("[^\n]+") do if l:match("^daytona:") then lines[#lines + 1] = l end end
    assert.are.equal(1, #lines, err)
    assert.matches("using the local server at http://127%.0%.0%.1:%d+/api %(started it", lines[1])
  end)
end)
