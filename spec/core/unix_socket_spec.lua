-- HTTP and WebSocket over a unix-domain socket: dtlocal reaches each
-- sandbox's toolbox daemon this way.
local helper = require "support.helper"
local server = require "daytona.runtime.server"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"

describe("unix-domain sockets", function()
  teardown(helper.cleanup)

  it("carries HTTP requests and WebSockets from our clients to our server", function()
    local path = helper.tmpdir() .. "/s.sock"
    local srv <close> = server.listen{
      socket = path,
      handler = function(req, res)
        res:json(200, { path = req.path, host = req.headers.host, body = req:body() })
      end,
      websocket = function(_, ws)
        local data, kind = ws:receive()
        ws:send("echo:" .. data, kind)
        ws:close(1000, "bye")
      end,
    }
    local r = http.request{ url = "http://sandbox/files?x=1", method = "POST", body = "hi", unix_socket = path }
    assert.are.equal(200, r.status)
    local j = r:json()
    assert.are.same({ path = "/files", host = "sandbox", body = "hi" }, j)
    local ws <close> = websocket.connect("ws://sandbox/pty", { unix_socket = path, timeout = 5 })
    ws:send("x", "text")
    assert.are.equal("echo:x", (ws:receive(5)))
    local a, b, code, reason = ws:receive(5)
    assert.is_nil(a)
    assert.are.same({ "closed", 1000, "bye" }, { b, code, reason })
  end)

  it("reports a missing socket as a connection error", function()
    local errors = require "daytona.errors"
    local path = helper.tmpdir() .. "/none.sock"
    local ok, err = pcall(http.request, { url = "http://x/", unix_socket = path })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
    ok, err = pcall(websocket.connect, "ws://x/", { unix_socket = path, timeout = 2 })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaConnectionError))
  end)

  it("rejects a relative socket path", function()
    assert.has_error(function() http.request{ url = "http://x/", unix_socket = "rel.sock" } end)
    assert.has_error(function() websocket.connect("ws://x/", { unix_socket = "rel.sock" }) end)
  end)
end)
