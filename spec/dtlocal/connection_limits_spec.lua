-- dtlocal under a connection flood: 1,100 idle TCP connections (more than
-- the server's 1,024) opened by a client that never sends a byte, then an
-- authenticated API request must still be answered within 2 s. The idle
-- connections come from a child process (spec/support/raw_http.py).
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local process = require "daytona.runtime.process"
local core = require "daytona.core"
local json = require("dtlocal.http").json

describe("dtlocal connection limits", function()
  local srv

  setup(function() srv = dtlocal.start() end)
  teardown(function() if srv then srv.stop() end end)

  it("answers an authenticated request while 1,100 idle connections are open", function()
    helper.run(function()
      local port = tonumber(srv.api_url:match(":(%d+)/"))
      local p = process.spawn({ "python3", "spec/support/raw_http.py", tostring(port), "flood", "1100",
        "/api/sandbox", srv.token }, { env = core.util.environ() })
      local lines = p:lines("stdout", 30)
      assert.are.equal("open 1100", lines())
      -- the server has taken what it will of them (it holds at most its
      -- limit; the rest wait in the listen backlog, before ours)
      local function fds()
        local f = io.popen("ls /proc/" .. srv.pid .. "/fd | wc -l")
        local n = tonumber(f:read("a"))
        f:close()
        return n
      end
      helper.eventually(function() return fds() >= 900 end, 20, 0.1)
      p:write("go\n")
      local res = json.decode(lines())
      -- and our own client, through the SDK's HTTP stack
      local t1 = core.now()
      local st = dtlocal.request(srv, "GET", "/sandbox", nil, { timeout = 10 })
      local sdk_elapsed = core.now() - t1
      p:close_stdin()
      p:wait(20)
      p:close()
      assert.are.equal(200, res.status, "the authenticated client got no answer in 10 s")
      assert.is_true(res.elapsed < 2, ("answered after %.2f s"):format(res.elapsed))
      assert.are.equal(200, st)
      assert.is_true(sdk_elapsed < 2, ("SDK request answered after %.2f s"):format(sdk_elapsed))
    end)
  end)
end)
