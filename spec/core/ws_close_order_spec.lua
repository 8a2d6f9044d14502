-- Regression: a server close right after queued messages must not overtake
-- them (wslay sends control frames ahead of data). dtlocal's followed logs
-- replay a finished command's output and close at once.
local server = require "daytona.runtime.server"
local websocket = require "daytona.runtime.websocket"

describe("server WebSocket close", function()
  it("sends every queued message before the close frame", function()
    local N = 200
    local srv <close> = server.listen{ port = 0, websocket = function(_, ws)
      for i = 1, N do ws:send(("message %d "):format(i) .. ("x"):rep(4000), "binary") end
      ws:close(1000, "done")
    end }
    local ws <close> = websocket.connect(("ws://127.0.0.1:%d/"):format(srv.port), { timeout = 5 })
    local got = 0
    while true do
      local data, kind, code, reason = ws:receive(5)
      if data == nil then
        assert.are.equal("closed", kind)
        assert.are.equal(1000, code)
        assert.are.equal("done", reason)
        break
      end
      got = got + 1
      assert.is_truthy(data:find(("message %d "):format(got), 1, true))
    end
    assert.are.equal(N, got)
  end)
end)
