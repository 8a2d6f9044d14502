-- The official TypeScript SDK runs a scenario against dtlocal, unchanged.
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local process = require "daytona.runtime.process"

describe("the official TypeScript SDK against dtlocal", function()
  local srv
  setup(function() srv = dtlocal.start() end)
  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  it("passes the scenario script (spec/ts/scenario.mjs)", function()
    local f = io.open("spec/ts/node_modules/@daytonaio/sdk/package.json")
    assert(f, "the pinned @daytonaio/sdk is not installed: run `make deps`")
    f:close()
    local env = require("daytona.core").util.environ()
    env.DAYTONA_API_URL = srv.api_url
    env.DAYTONA_API_KEY = srv.token
    local r = process.run({ "node", "spec/ts/scenario.mjs" }, { env = env, timeout = 240, stderr = "stdout" })
    if r.exit_code ~= 0 then
      error("scenario failed:\n" .. r.stdout .. "\n--- dtlocal log ---\n" .. srv.log():sub(-4000), 0)
    end
    assert.is_truthy(r.stdout:find("scenario: all steps passed", 1, true))
  end)
end)
