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
    local r, msg, code = http.request{ url = "http://x/", unix_socket = path }
    assert.is_nil(r)
    assert.is_true(errors.is(errors.from_failure(msg, code), errors.DaytonaConnectionError))
    r, msg, code = websocket.connect("ws://x/", { unix_socket = path, timeout = 2 })
    assert.is_nil(r)
    assert.is_true(errors.is(errors.from_failure(msg, code), errors.DaytonaConnectionError))
  end)

  it("serves a bound socket handed over as a descriptor, and checks who listens on it", function()
    local core = require "daytona.core"
    local process = require "daytona.runtime.process"
    local errors = require "daytona.errors"
    local path = helper.tmpdir() .. "/handed.sock"
    local fd = assert(core.util.unix_bind(path))
    -- another user's process listens on the socket we bound (as dtlocal
    -- hands each sandbox's daemon its socket): the kernel names it the peer
    local child <close> = process.spawn({ "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
      helper.build_path("bin/dtlua"), "-e", [[
        local server = require "daytona.runtime.server"
        local srv = server.listen{ fd = 3,
          handler = function(_, res) res:json(200, { uid = require("daytona.core").util.getuid() }) end,
          websocket = function(_, ws) ws:send("hi", "text"); ws:close(1000, "bye") end }
        print("ready") io.stdout:flush()
        daytona.sleep(30)
      ]] }, { stdin = "null", stdout = "pipe", stderr = "stdout", fds = { fd } })
    assert(core.util.close(fd))
    local line = child:lines()()
    assert.are.equal("ready", line)
    -- anyone else listening there is refused before a byte is sent
    local refused, msg, code = http.request{ url = "http://x/", unix_socket = path, peer_uids = { 0, 1000 } }
    assert.is_nil(refused)
    assert.is_true(errors.is(errors.from_failure(msg, code), errors.DaytonaConnectionError))
    assert.are.equal("EPEER", code)
    assert.matches("uid 65534", msg)
    refused, msg, code = websocket.connect("ws://x/", { unix_socket = path, peer_uids = { 0, 0 }, timeout = 5 })
    assert.is_nil(refused)
    assert.are.equal("EPEER", code, msg)
    -- the refused connection is not pooled: the right range gets a new one
    local r = http.request{ url = "http://x/", unix_socket = path, peer_uids = { 65534, 65534 } }
    assert.are.equal(65534, r:json().uid)
    local ws <close> = websocket.connect("ws://x/", { unix_socket = path, peer_uids = { 65000, 65534 }, timeout = 5 })
    assert.are.equal("hi", (ws:receive(5)))
    assert.has_error(function() http.request{ url = "http://x/", peer_uids = { 0, 0 } } end)
    assert.has_error(function() http.request{ url = "http://x/", unix_socket = path, peer_uids = { 5, 1 } } end)
    child:kill("KILL")
  end)

  it("rejects a relative socket path", function()
    assert.has_error(function() http.request{ url = "http://x/", unix_socket = "rel.sock" } end)
    assert.has_error(function() websocket.connect("ws://x/", { unix_socket = "rel.sock" }) end)
  end)
end)
