-- dtlocal's Socket.IO event channel (/api/socket.io/, dtlocal.control.events)
-- spoken frame by frame with our own WebSocket client: the Engine.IO open
-- packet, the Socket.IO CONNECT and its token check, heartbeats, the
-- sandbox events of create/stop/start/delete with the Sandbox as GET
-- returns it, malformed frames, and the bounds on slow clients. The
-- heartbeat, timeout and queue bounds are checked on a hub with short
-- settings served in-process; everything else against a real dtlocal.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local events = require "dtlocal.control.events"
local json = require("dtlocal.http").json

local function run(fn) return helper.run(fn) end

local EIO_QUERY = "/socket.io/?EIO=4&transport=websocket"

-- Open an Engine.IO WebSocket under api_url; returns it and the decoded
-- open packet.
local function eio_open(api_url, opts)
  local ws = websocket.connect(api_url:gsub("^http", "ws") .. EIO_QUERY, opts)
  local data, kind = ws:receive(5)
  assert.are.equal("text", kind)
  assert.are.equal("0", data:sub(1, 1), "the first frame is the Engine.IO open packet: " .. data)
  return ws, assert(json.decode(data:sub(2)))
end

-- Open and CONNECT with `token`; returns the WebSocket and the reply frame.
local function sio_open(api_url, token, opts)
  local ws = eio_open(api_url, opts)
  ws:send("40" .. json.encode({ token = token }))
  return ws, ws:receive(5)
end

-- The next Socket.IO event on ws (server pings are answered on the way):
-- name, payload.
local function next_event(ws, timeout)
  local deadline = core.now() + (timeout or 10)
  while true do
    local data = ws:receive(math.max(0.01, deadline - core.now()))
    assert(data, "the connection closed while waiting for an event")
    if data == "2" then
      ws:send("3")
    else
      assert.are.equal("42", data:sub(1, 2), "an EVENT packet: " .. data)
      local v = assert(json.decode(data:sub(3)))
      return v[1], v[2]
    end
  end
end

-- Wait until the server closes ws; returns the close code and reason.
local function closed(ws)
  local deadline = core.now() + 5
  while core.now() < deadline do
    local data, what, code, reason = ws:receive(5)
    if data == nil then
      assert.are.equal("closed", what)
      return code, reason
    end
  end
  error("the server did not close the connection", 2)
end

describe("dtlocal Socket.IO events", function()
  local srv

  -- One API request; returns status, decoded body.
  local function api(method, path, body) return dtlocal.request(srv, method, path, body) end

  setup(function() srv = dtlocal.start() end)
  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  it("opens an Engine.IO session over WebSocket: sid, no upgrades, heartbeat, maxPayload", function()
    run(function()
      local ws, open = eio_open(srv.api_url)
      assert.is_string(open.sid)
      assert.are.equal(20, #open.sid)
      assert.are.same({}, open.upgrades)
      assert.are.equal(25000, open.pingInterval)
      assert.are.equal(20000, open.pingTimeout)
      assert.are.equal(1000000, open.maxPayload)
      -- an Engine.IO v3-style client ping is answered with its payload
      ws:send("2probe")
      assert.are.equal("3probe", ws:receive(5))
      ws:close()
    end)
  end)

  it("refuses HTTP long-polling and other protocol versions with Engine.IO's error body", function()
    run(function()
      local function get(query)
        local r = http.request{ url = srv.api_url .. "/socket.io/?" .. query, timeout = 10 }
        return r.status, json.decode(r.body)
      end
      local st, b = get("EIO=4&transport=polling")
      assert.are.equal(400, st)
      assert.are.equal(0, b.code)
      assert.is_truthy(b.message:find("only transport=websocket", 1, true))
      st, b = get("EIO=3&transport=websocket")
      assert.are.equal(400, st)
      assert.are.equal(5, b.code)
      -- no upgrade: the same refusal as polling
      st, b = get("EIO=4&transport=websocket")
      assert.are.equal(400, st)
      assert.are.equal(0, b.code)
    end)
  end)

  it("connects with the API token, in auth or in the Authorization header", function()
    run(function()
      local ws, reply = sio_open(srv.api_url, srv.token)
      assert.are.equal("40", reply:sub(1, 2))
      local ack = json.decode(reply:sub(3))
      assert.is_string(ack.sid)
      ws:close()
      ws = eio_open(srv.api_url, { headers = { Authorization = "Bearer " .. srv.token } })
      ws:send("40")
      assert.are.equal("40", ws:receive(5):sub(1, 2))
      ws:close()
    end)
  end)

  it("answers a wrong or missing token with CONNECT_ERROR, then closes", function()
    run(function()
      local ws, reply = sio_open(srv.api_url, "wrong-" .. srv.token)
      assert.are.equal("44", reply:sub(1, 2))
      assert.is_truthy(json.decode(reply:sub(3)).message:find("token is invalid", 1, true))
      assert.are.equal(1008, (closed(ws)))
      ws = eio_open(srv.api_url)
      ws:send("40")
      reply = ws:receive(5)
      assert.are.equal("44", reply:sub(1, 2))
      assert.is_truthy(json.decode(reply:sub(3)).message:find("missing authentication", 1, true))
      local code, reason = closed(ws)
      assert.are.equal(1008, code)
      assert.are.equal("unauthorized: no token", reason)
      -- another namespace: refused, the connection stays
      ws = eio_open(srv.api_url)
      ws:send("40/admin," .. json.encode({ token = srv.token }))
      assert.are.equal('44/admin,{"message":"Invalid namespace"}', ws:receive(5))
      ws:send("40" .. json.encode({ token = srv.token }))
      assert.are.equal("40", ws:receive(5):sub(1, 2))
      ws:close()
    end)
  end)

  it("emits sandbox.created and sandbox.state.updated with the Sandbox as GET returns it", function()
    run(function()
      local ws, reply = sio_open(srv.api_url, srv.token)
      assert.are.equal("40", reply:sub(1, 2))
      -- no network: not served by the warm pool, so it goes creating -> started
      local st, s = api("POST", "/sandbox", { networkBlockAll = true, labels = { suite = "events" } })
      assert.are.equal(200, st)
      local name, created = next_event(ws)
      assert.are.equal("sandbox.created", name)
      assert.are.equal(s.id, created.id)
      assert.are.equal("creating", created.state)
      assert.is_true(created.networkBlockAll)
      local _, got = api("GET", "/sandbox/" .. s.id)
      local seen = {}
      local function expect(old, new)
        local n, ev = next_event(ws)
        assert.are.equal("sandbox.state.updated", n)
        assert.are.equal(s.id, ev.sandbox.id)
        assert.are.equal(old, ev.oldState)
        assert.are.equal(new, ev.newState)
        assert.are.equal(new, ev.sandbox.state)
        seen[#seen + 1] = ev.sandbox
      end
      expect("creating", "started")
      -- the very fields and values of GET (the clocks may have moved on)
      _, got = api("GET", "/sandbox/" .. s.id)
      for k, v in pairs(got) do
        if k ~= "updatedAt" and k ~= "lastActivityAt" then
          assert.are.same(v, seen[1][k], "field " .. k)
        end
      end
      for k in pairs(seen[1]) do assert.is_not_nil(got[k], "extra field " .. k) end
      assert.are.equal(200, (api("POST", "/sandbox/" .. s.id .. "/stop")))
      expect("started", "stopping")
      expect("stopping", "stopped")
      assert.are.equal(200, (api("POST", "/sandbox/" .. s.id .. "/start")))
      expect("stopped", "starting")
      expect("starting", "started")
      assert.are.equal(200, (api("DELETE", "/sandbox/" .. s.id)))
      expect("started", "destroying")
      expect("destroying", "destroyed")
      -- a plain create (the warm pool): created, already started; the
      -- pool's own refills are never announced
      st, s = api("POST", "/sandbox", {})
      assert.are.equal(200, st)
      name, created = next_event(ws)
      assert.are.equal("sandbox.created", name)
      assert.are.equal(s.id, created.id)
      assert.are.equal("started", created.state)
      assert.are.equal(200, (api("DELETE", "/sandbox/" .. s.id)))
      expect("started", "destroying")
      expect("destroying", "destroyed")
      ws:close()
    end)
  end)

  it("closes the connection on malformed frames, with the reason, and goes on serving", function()
    run(function()
      local cases = {
        { "", 1002, "malformed Engine.IO packet: empty message" },
        { "x", 1002, "malformed Engine.IO packet" },
        { "3pong", 1002, "malformed Engine.IO pong" },
        { "4", 1002, "unknown type" },
        { "49", 1002, "unknown type" },
        { "40{nope", 1002, "invalid JSON payload" },
        { "40[1,2]", 1002, "auth payload must be a JSON object" },
        { '40{"token":5}', 1002, "auth.token must be a string" },
        { '42["x"]', 1008, "before CONNECT" },
        { '451-["x",{"_placeholder":true,"num":0}]', 1003, "binary Socket.IO packets" },
        { "44{}", 1002, "may not send CONNECT_ERROR" },
      }
      for _, c in ipairs(cases) do
        local ws = eio_open(srv.api_url)
        ws:send(c[1])
        local code, reason = closed(ws)
        assert.are.equal(c[2], code, ("frame %q: %s"):format(c[1], reason))
        assert.is_truthy(reason:find(c[3], 1, true), ("frame %q: reason %q"):format(c[1], reason))
      end
      -- after CONNECT: an EVENT must be an array starting with a name
      local ws = sio_open(srv.api_url, srv.token)
      ws:send('42{"a":1}')
      local code, reason = closed(ws)
      assert.are.equal(1002, code)
      assert.is_truthy(reason:find("malformed Socket.IO EVENT", 1, true))
      -- a binary frame
      ws = eio_open(srv.api_url)
      ws:send("\1\2\3", "binary")
      assert.are.equal(1003, (closed(ws)))
      -- a message over maxPayload
      ws = eio_open(srv.api_url)
      ws:send("4" .. ("x"):rep(1000001))
      assert.are.equal(1009, (closed(ws)))
      -- the server is fine: the API and a new event connection work
      assert.are.equal(200, (api("GET", "/sandbox")))
      local reply
      ws, reply = sio_open(srv.api_url, srv.token)
      assert.are.equal("40", reply:sub(1, 2))
      -- an EVENT from the client and a DISCONNECT: ignored, then a clean close
      ws:send('42["hello",{"x":1}]')
      ws:send("41")
      code = closed(ws)
      assert.are.equal(1000, code)
    end)
  end)
end)

describe("dtlocal.control.events on short settings (in-process)", function()
  local TOKEN = "events-spec-token"

  -- Serve a hub on a loopback server as dtlocal.control does; returns the api
  -- url, the log lines and a stop function.
  local function serve(opts)
    local logs = {}
    opts.check_token = function(t) return core.util.equal_ct(t, TOKEN) end
    opts.wire = function(rec) return rec end
    opts.log = function(fmt, ...) logs[#logs + 1] = fmt:format(...) end
    local hub = events.new(opts)
    local active = 0
    local srv = require("daytona.runtime.server").listen{
      host = "127.0.0.1", port = 0, connection_timeout = 0,
      handler = require("dtlocal.http").handler{ dispatch = function(ctx)
        active = active + 1
        local ok, err = pcall(hub.serve, hub, ctx)
        active = active - 1
        if not ok then error(err, 0) end
      end },
    }
    local function stop()
      hub:close()
      -- the connections' own ends (close frames) before the listener goes
      pcall(scheduler.timeout, 5, function() while active > 0 do scheduler.sleep(0.01) end end)
      srv:close()
    end
    return ("http://127.0.0.1:%d/api"):format(srv.port), hub, logs, stop
  end

  it("pings every pingInterval and closes a client that does not answer in pingTimeout", function()
    run(function()
      local url, _, logs, stop = serve{ ping_interval = 0.1, ping_timeout = 0.2 }
      local ws, open = eio_open(url)
      assert.are.equal(100, open.pingInterval)
      assert.are.equal(200, open.pingTimeout)
      ws:send("40" .. json.encode({ token = TOKEN }))
      assert.are.equal("40", ws:receive(5):sub(1, 2))
      for _ = 1, 3 do
        assert.are.equal("2", ws:receive(1))
        ws:send("3")
      end
      assert.are.equal("2", ws:receive(1))
      local t0 = core.now()
      local code, reason = closed(ws)            -- no pong this time
      assert.are.equal(1000, code)
      assert.are.equal("ping timeout", reason)
      assert.is_true(core.now() - t0 < 1)
      helper.eventually(function() return table.concat(logs, "\n"):find("ping timeout", 1, true) end)
      stop()
    end)
  end)

  it("closes a connection that sends no CONNECT in time, and refuses connections over the limit", function()
    run(function()
      local url, hub, _, stop = serve{ auth_timeout = 0.2, max_connections = 1 }
      local first = sio_open(url, TOKEN)
      -- a bearer token on the upgrade is checked there: over the limit, 503
      local ok, err, _, refused = websocket.connect(url:gsub("^http", "ws") .. EIO_QUERY,
        { headers = { Authorization = "Bearer " .. TOKEN } })
      assert.is_nil(ok)
      assert.are.equal(503, refused.status, tostring(err))
      -- one that authenticates in its CONNECT is told so, and closed
      local late = eio_open(url)
      late:send("40" .. json.encode({ token = TOKEN }))
      assert.matches("too many event connections", late:receive(5))
      local lcode, lreason = closed(late)
      assert.are.equal(1008, lcode, lreason)
      -- and one that never authenticates is closed after auth_timeout
      local ws = eio_open(url)
      local code, reason = closed(ws)
      assert.are.equal(1008, code)
      assert.are.equal("no Socket.IO CONNECT in time", reason)
      first:close()
      helper.eventually(function() return hub.count == 0 end)
      stop()
    end)
  end)

  it("serves a real client through a flood of upgrades that never authenticate", function()
    run(function()
      local url, hub, _, stop = serve{ max_pending = 16 }
      local flood = {}
      for i = 1, 300 do flood[i] = eio_open(url) end
      assert.is_true(#hub.pending <= 16)
      -- a wrong bearer token on the upgrade: refused before any upgrade
      local ok, err, _, refused = websocket.connect(url:gsub("^http", "ws") .. EIO_QUERY,
        { headers = { Authorization = "Bearer wrong" } })
      assert.is_nil(ok)
      assert.are.equal(401, refused.status, tostring(err))
      local t0 = core.now()
      local ws = sio_open(url, TOKEN)        -- CONNECTs and waits for "40"
      assert.is_true(core.now() - t0 < 2)
      hub:sandbox_event("sandbox.created", { id = "s1", state = "started" })
      local name = next_event(ws)
      assert.are.equal("sandbox.created", name)
      ws:close()
      for _, f in ipairs(flood) do f:close() end
      helper.eventually(function() return hub.count == 0 end)
      stop()
    end)
  end)

  it("queues a burst beyond the core's send buffer and delivers all of it in order", function()
    run(function()
      local url, hub, logs, stop = serve{}
      local ws = eio_open(url)
      ws:send("40" .. json.encode({ token = TOKEN }))
      assert.are.equal("40", ws:receive(5):sub(1, 2))
      -- 6 MiB at once: most of it waits in the connection's queue
      local blob = ("z"):rep(64 * 1024)
      for i = 1, 96 do
        hub:sandbox_event("sandbox.state.updated", { id = "s" .. i, state = "started", blob = blob }, "starting")
      end
      for i = 1, 96 do
        local name, ev = next_event(ws)
        assert.are.equal("sandbox.state.updated", name)
        assert.are.equal("s" .. i, ev.sandbox.id)
        assert.are.equal(#blob, #ev.sandbox.blob)
      end
      assert.are.equal(1, hub.count)
      assert.are.equal("", table.concat(logs, "\n"))
      ws:close()
      stop()
    end)
  end)

  it("drops a client that stops reading once its queue passes the bound, and logs why", function()
    run(function()
      local url, hub, logs, stop = serve{ queue_messages = 8, queue_bytes = 512 * 1024 }
      local ws = eio_open(url, { recv_buffer = 16 * 1024 })
      ws:send("40" .. json.encode({ token = TOKEN }))
      assert.are.equal("40", ws:receive(5):sub(1, 2))
      -- the client reads nothing more; 64 KiB events until the server gives up
      local big = { id = "x", state = "started", blob = ("y"):rep(64 * 1024) }
      for _ = 1, 2000 do
        if hub.count == 0 then break end
        hub:sandbox_event("sandbox.state.updated", big, "stopped")
        scheduler.sleep(0)
      end
      helper.eventually(function() return hub.count == 0 end)
      local log = table.concat(logs, "\n")
      assert.is_truthy(log:find("dropped: its queue passed 8 messages or 524288 bytes", 1, true), log)
      -- the hub forgot the connection
      assert.are.equal(0, hub.listening)
      ws:abort()
      stop()
    end)
  end)

  it("does not announce warm sandboxes, and closes connections with 1001 at shutdown", function()
    run(function()
      local url, hub, _, stop = serve{}
      local ws = eio_open(url)
      ws:send("40" .. json.encode({ token = TOKEN }))
      assert.are.equal("40", ws:receive(5):sub(1, 2))
      hub:sandbox_event("sandbox.created", { id = "warm", state = "started", dtlocal = { spare = true } })
      hub:sandbox_event("sandbox.created", { id = "real", state = "creating", dtlocal = {} })
      local name, payload = next_event(ws)
      assert.are.equal("sandbox.created", name)
      assert.are.equal("real", payload.id)
      hub:close()
      local code, reason = closed(ws)
      assert.are.equal(1001, code)
      assert.are.equal("server shutting down", reason)
      stop()
    end)
  end)
end)
