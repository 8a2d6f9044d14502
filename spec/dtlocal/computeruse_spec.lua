-- Computer Use in dtlocal (doc/dtlocal.md "Computer Use"): the /computeruse
-- routes of a real sandbox of a private local server, against the real
-- desktop the daemon starts in it (Xvfb, xfce4, x11vnc, noVNC), with what
-- happened read back from inside the sandbox: the pointer, text typed into
-- an xterm, images decoded, a recording probed with ffprobe, the
-- accessibility tree of a GTK application, and a second sandbox that tries
-- to reach the first one's display.
local core = require "daytona.core"
local http = require "daytona.runtime.http"
local scheduler = require "daytona.runtime.scheduler"
local wire = require "daytona.wire"
local dhttp = require "dtlocal.http"
local helper = require "support.helper"
local fixture = require "sdk.fixture"

local json = dhttp.json

local function has_x11()
  return (pcall(require, "daytona.core.x11"))
end

describe("dtlocal computer use", function()
  local srv, client, sb, sb2

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv)
  end)

  teardown(function() fixture.release(srv, sb, sb2) end)

  local function cu(method, path, body, query, box)
    local opts = {
      url = srv.toolbox_url .. "/" .. (box or sb).id .. "/computeruse" .. path, method = method,
      headers = { Authorization = "Bearer " .. srv.token }, query = query, timeout = 120,
    }
    if body then
      opts.body = json.encode(body)
      opts.headers["Content-Type"] = "application/json"
    end
    local r = assert(http.request(opts))
    if r.body ~= "" and (r.headers["content-type"] or ""):find("json", 1, true) then
      r.json = json.decode(r.body)
    end
    return r
  end

  local function ok(r, status)
    assert.are.equal(status or 200, r.status, r.body)
    return r.json
  end

  -- a 400 whose message names `name`
  local function bad(r, name)
    assert.are.equal(400, r.status, r.body)
    assert.is_truthy(r.json.message:find(name, 1, true),
      ("message %q does not name %q"):format(r.json.message, name))
  end

  local function sh(cmd, box)
    return (box or sb).process:exec(cmd, { timeout = 60 })
  end

  local function eventually(pred, timeout, what)
    local deadline = core.now() + (timeout or 20)
    while true do
      local v = pred()
      if v then return v end
      assert(core.now() < deadline, "timed out waiting for " .. (type(what) == "function" and what() or what or "a condition"))
      scheduler.sleep(0.1)
    end
  end

  local function running(pattern, box)
    local r = sh("pgrep -a -u daytona -f '" .. pattern .. "' || true", box)
    local list = {}
    for line in r.result:gmatch("[^\n]+") do
      if not line:find("pgrep", 1, true) then list[#list + 1] = line end
    end
    return list
  end

  describe("before start", function()
    it("reports inactive, and the display routes say to start first", function()
      assert.are.same({ status = "inactive" }, ok(cu("GET", "/status")))
      assert.are.same({ status = "inactive" }, ok(cu("GET", "/process-status")))
      assert.are.same({ processName = "xvfb", running = false }, ok(cu("GET", "/process/xvfb/status")))
      local r = cu("GET", "/screenshot")
      assert.are.equal(503, r.status, r.body)
      assert.is_truthy(r.json.message:find("POST /computeruse/start", 1, true), r.body)
      r = cu("POST", "/recordings/start", {})
      assert.are.equal(503, r.status, r.body)
      bad(cu("GET", "/process/nope/status"), "processName")
    end)
  end)

  describe("lifecycle", function()
    it("starts xvfb, xfce4, x11vnc and novnc, each ready", function()
      local t0 = core.now()
      local body = ok(cu("POST", "/start"))
      local took = core.now() - t0
      print(("\n  figure: computer use start to all four processes running: %.2f s"):format(took))
      assert.is_string(body.message)
      local prio = { xvfb = 100, xfce4 = 200, x11vnc = 300, novnc = 400 }
      for name, p in pairs(prio) do
        local s = body.status[name]
        assert.is_table(s, name)
        assert.is_true(s.running, name)
        assert.is_true(s.pid > 0, name)
        assert.are.equal(p, s.priority)
        assert.is_true(s.autoRestart)
        assert.are.same({ processName = name, running = true }, ok(cu("GET", "/process/" .. name .. "/status")))
      end
      assert.are.same({ status = "active" }, ok(cu("GET", "/status")))
      -- the programs themselves, seen from inside the sandbox
      assert.are.equal(1, #running("^Xvfb :0"))
      assert.are.equal(1, #running("^xfce4-session"))
      assert.are.equal(1, #running("^x11vnc"))
      assert.is_true(#running("websockify") >= 1)
      -- noVNC answers on 6080 and bridges to the VNC server
      local r = sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:6080/vnc.html")
      assert.are.equal("200", r.result)
      -- the X server has no TCP port and no abstract socket; VNC no TCP port
      local unix = sh("cat /proc/net/unix").result
      assert.is_nil(unix:find("@/tmp/.X11-unix/X0", 1, true))
      assert.is_truthy(unix:find("/tmp/.X11-unix/X0", 1, true))
      local ports = sh("cat /proc/net/tcp /proc/net/tcp6").result
      assert.is_nil(ports:find(":1770 %x+:0000 0A"))   -- 6000
      assert.is_nil(ports:find(":170C %x+:0000 0A"))   -- 5900
      -- and through the sandbox's preview link, as a person watching would
      local pv = assert(http.request { url = srv.api_url .. "/sandbox/" .. sb.id .. "/ports/6080/preview-url",
                                       headers = { Authorization = "Bearer " .. srv.token } })
      assert.are.equal(200, pv.status, pv.body)
      pv = json.decode(pv.body)
      local page = assert(http.request { url = pv.url .. "/vnc.html", headers = { ["X-Daytona-Preview-Token"] = pv.token } })
      assert.are.equal(200, page.status, page.body)
      assert.is_truthy(page.body:find("noVNC", 1, true))
      -- not without the sandbox's preview token
      local anon = assert(http.request { url = pv.url .. "/vnc.html" })
      assert.are.equal(401, anon.status)
      -- start again: nothing new, the same processes
      local again = ok(cu("POST", "/start"))
      assert.are.equal(body.status.xvfb.pid, again.status.xvfb.pid)
    end)

    it("restarts one process, with its logs and errors", function()
      local before = ok(cu("POST", "/start")).status.x11vnc.pid
      local r = ok(cu("POST", "/process/x11vnc/restart"))
      assert.are.same({ message = "Process x11vnc restarted successfully", processName = "x11vnc" }, r)
      local after = ok(cu("POST", "/start")).status.x11vnc.pid
      assert.are_not.equal(before, after)
      assert.are.same({ processName = "x11vnc", running = true }, ok(cu("GET", "/process/x11vnc/status")))
      -- the old one is gone, the new one serves
      assert.are.equal(1, #running("^x11vnc"))
      assert.are.equal("200", sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:6080/vnc.html").result)
      local errs = ok(cu("GET", "/process/x11vnc/errors"))
      assert.are.equal("x11vnc", errs.processName)
      assert.is_truthy(errs.errors:find("restart requested", 1, true), errs.errors)
      local logs = ok(cu("GET", "/process/xvfb/logs"))
      assert.are.equal("xvfb", logs.processName)
      assert.is_string(logs.logs)
      assert.is_truthy(ok(cu("GET", "/process/xvfb/errors")).errors:find("Xvfb :0", 1, true))
      bad(cu("POST", "/process/bogus/restart"), "processName")
      bad(cu("GET", "/process/bogus/logs"), "processName")
    end)

    it("restarts a process that dies by itself", function()
      local pid = math.tointeger(ok(cu("POST", "/start")).status.x11vnc.pid)
      local killed = sh("kill -9 " .. pid .. " && echo killed").result
      -- the supervisor notices and brings it back by itself
      eventually(function()
        return ok(cu("GET", "/process/x11vnc/errors")).errors:find("exited: signal SIGKILL\n[^\n]*restarting")
      end, 20, function()
        local notes = {}
        for l in ok(cu("GET", "/process/x11vnc/errors")).errors:gmatch("[^\n]*dtlocal%][^\n]*") do notes[#notes + 1] = l end
        return ("x11vnc (pid %d, %s) to be restarted; the supervisor's notes: %s"):format(pid, killed, table.concat(notes, "\n"))
      end)
      eventually(function() return ok(cu("GET", "/process/x11vnc/status")).running end, 20, "x11vnc to come back")
      eventually(function() return #running("^x11vnc") == 1 end, 20, "one x11vnc")
      assert.is_truthy(ok(cu("GET", "/process/x11vnc/errors")).errors:find("restarting", 1, true))
      assert.are.same({ status = "active" }, ok(cu("GET", "/status")))
    end)
  end)

  describe("restarting the X server", function()
    it("brings the desktop back: what depends on the display is restarted by itself", function()
      ok(cu("POST", "/process/xvfb/restart"))
      eventually(function() return ok(cu("GET", "/status")).status == "active" and #running("^x11vnc") == 1 end,
                 30, "the desktop to be active again")
      -- input works on the new server (the daemon's connection was renewed)
      assert.are.same({ x = 77, y = 88 }, ok(cu("POST", "/mouse/move", { x = 77, y = 88 })))
      eventually(function()
        local p = ok(cu("GET", "/mouse/position"))
        return p.x == 77 and p.y == 88
      end, 10, "the pointer on the new server")
      -- what starts from now on joins the new session's bus
      eventually(function()
        local bus = sh("echo $DBUS_SESSION_BUS_ADDRESS").result:match("%S+")
        return bus and sh("dbus-send --session --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.GetId >/dev/null 2>&1 && echo ok").result:find("ok")
      end, 20, "the new session bus in the environment")
    end)

    it("comes back after the X server is killed, and the routes with it", function()
      ok(cu("GET", "/mouse/position"))   -- the daemon holds a connection to this server
      local pid = math.tointeger(ok(cu("POST", "/start")).status.xvfb.pid)
      sh("kill -9 " .. pid)
      eventually(function()
        return ok(cu("GET", "/process/xvfb/errors")).errors:find("exited: signal SIGKILL\n[^\n]*restarting")
      end, 20, "xvfb to be restarted")
      eventually(function() return ok(cu("GET", "/status")).status == "active" and #running("^x11vnc") == 1 end,
                 30, "the desktop to be active again")
      -- the old connection is dead: the daemon makes a new one by itself
      assert.are.same({ x = 33, y = 44 }, ok(cu("POST", "/mouse/move", { x = 33, y = 44 })))
      local png = wire.base64_decode(ok(cu("GET", "/screenshot")).screenshot)
      assert.are.equal("\137PNG", png:sub(1, 4))
    end)

    it("answers 503 while the X server is stopped, instead of hanging", function()
      local pid = math.tointeger(ok(cu("POST", "/start")).status.xvfb.pid)
      -- stopped and continued by a process of its own: should an X call
      -- slip in before the stop shows, the daemon is held only until then
      sh(("nohup sh -c 'kill -STOP %d; sleep 5; kill -CONT %d' >/dev/null 2>&1 &"):format(pid, pid))
      eventually(function() return sh("ps -o state= -p " .. pid).result:match("^%s*T") end, 5, "xvfb stopped")
      local r = cu("GET", "/mouse/position")
      assert.are.equal(503, r.status, r.body)
      assert.is_truthy(r.json.message:find("stopped", 1, true), r.body)
      eventually(function() return cu("GET", "/mouse/position").status == 200 end, 20, "xvfb continued")
    end)
  end)

  describe("display, mouse and keyboard", function()
    local function xit(name, fn)
      if has_x11() then it(name, fn) else pending(name .. " (needs daytona.core.x11)") end
    end

    xit("reports the display and moves the pointer", function()
      local info = ok(cu("GET", "/display/info"))
      assert.are.same({ { id = 0, x = 0, y = 0, width = 1024, height = 768, isActive = true } }, info.displays)
      assert.are.same({ x = 100, y = 200 }, ok(cu("POST", "/mouse/move", { x = 100, y = 200 })))
      assert.are.same({ x = 100, y = 200 }, ok(cu("GET", "/mouse/position")))
      -- on the empty middle of the desktop (a rubber band, not an icon's drag and drop)
      assert.are.same({ x = 600, y = 500 },
        ok(cu("POST", "/mouse/drag", { startX = 400, startY = 300, endX = 600, endY = 500 })))
      -- where the pointer is: a client's synchronous grab (the rubber band)
      -- may hold it back for a moment
      eventually(function()
        local p = ok(cu("GET", "/mouse/position"))
        return p.x == 600 and p.y == 500
      end, 10, "the pointer at the drag's end")
      assert.are.same({ x = 50, y = 60 }, ok(cu("POST", "/mouse/click", { x = 50, y = 60, button = "right" })))
      -- a right click opens xfdesktop's menu: close it again
      ok(cu("POST", "/keyboard/key", { key = "Escape" }))
      assert.are.same({ success = true }, ok(cu("POST", "/mouse/scroll", { x = 500, y = 400, direction = "down", amount = 2 })))
      bad(cu("POST", "/mouse/move", { x = -1, y = 0 }), "x")
      bad(cu("POST", "/mouse/move", { x = 0, y = 5000 }), "y")
      bad(cu("POST", "/mouse/move", { y = 0 }), "x")
      bad(cu("POST", "/mouse/click", { x = 1, y = 1, button = "fourth" }), "button")
      bad(cu("POST", "/mouse/scroll", { x = 1, y = 1, direction = "sideways" }), "direction")
      bad(cu("POST", "/mouse/drag", { startX = 1, startY = 1, endX = 1, endY = 99999 }), "endY")
    end)

    xit("types into an xterm, presses a hotkey, and lists its window", function()
      local dir = "/home/daytona/cu-typed"
      sh("mkdir -p " .. dir .. "; rm -f " .. dir .. "/out")
      -- DISPLAY comes from the daemon while the desktop runs
      sh(("nohup xterm -title cu-typing -geometry 60x10+100+100 -e sh -c 'cat > %s/out' >/dev/null 2>&1 &"):format(dir))
      local win = eventually(function()
        for _, w in ipairs(ok(cu("GET", "/display/windows")).windows) do
          if w.title == "cu-typing" then return w end
        end
      end, 20, "the xterm's window")
      assert.is_true(win.width > 0 and win.height > 0)
      ok(cu("POST", "/mouse/click", { x = win.x + win.width // 2, y = win.y + win.height // 2 }))
      eventually(function()
        for _, w in ipairs(ok(cu("GET", "/display/windows")).windows) do
          if w.title == "cu-typing" then return w.isActive end
        end
      end, 10, "the xterm to be the active window")
      -- ctrl+u (the terminal's kill character) erases what was typed so far
      ok(cu("POST", "/keyboard/type", { text = "junk" }))
      ok(cu("POST", "/keyboard/key", { key = "u", modifiers = { "ctrl" } }))
      ok(cu("POST", "/keyboard/type", { text = "hello from dtlua" }))
      ok(cu("POST", "/keyboard/key", { key = "Return" }))
      ok(cu("POST", "/keyboard/type", { text = "slow", delay = 20 }))
      ok(cu("POST", "/keyboard/key", { key = "Return" }))
      -- ctrl+d ends cat, and with it the xterm
      ok(cu("POST", "/keyboard/hotkey", { keys = "ctrl+d" }))
      eventually(function() return #running("cu-typing") == 0 end, 20, "the xterm to end")
      assert.are.equal("hello from dtlua\nslow\n", sh("cat " .. dir .. "/out").result)
      bad(cu("POST", "/keyboard/type", {}), "text")
      bad(cu("POST", "/keyboard/key", { key = "a", modifiers = { "hyper" } }), "modifiers")
      bad(cu("POST", "/keyboard/key", {}), "key")
      bad(cu("POST", "/keyboard/hotkey", {}), "keys")
    end)
  end)

  describe("screenshots", function()
    local function xit(name, fn)
      if has_x11() then it(name, fn) else pending(name .. " (needs daytona.core.x11)") end
    end

    local function png_size(s)
      assert.are.equal("\137PNG\r\n\26\n", s:sub(1, 8))
      local w, h = string.unpack(">I4I4", s, 17)
      return w, h
    end

    local function jpeg_size(s)
      assert.are.equal("\255\216", s:sub(1, 2))
      local i = 3
      while i < #s do
        local marker, len = string.unpack(">BB", s, i), string.unpack(">I2", s, i + 2)
        local kind = s:byte(i + 1)
        assert.are.equal(255, marker)
        if kind >= 0xC0 and kind <= 0xC3 then
          local h, w = string.unpack(">I2I2", s, i + 5)
          return w, h
        end
        i = i + 2 + len
      end
      error("no SOF marker")
    end

    local function shot(path, q)
      local body = ok(cu("GET", path, nil, q))
      local bytes = assert(wire.base64_decode(body.screenshot))
      assert.are.equal(#bytes, body.sizeBytes)
      return bytes, body
    end

    xit("takes the full screen, a region, compressed ones, and the cursor", function()
      local png, body = shot("/screenshot")
      assert.are.same({ 1024, 768 }, { png_size(png) })
      assert.is_nil(body.cursorPosition)
      ok(cu("POST", "/mouse/move", { x = 321, y = 123 }))
      local _, withc = shot("/screenshot", { showCursor = "true" })
      assert.are.same({ x = 321, y = 123 }, withc.cursorPosition)
      local region = shot("/screenshot/region", { x = "10", y = "20", width = "300", height = "200" })
      assert.are.same({ 300, 200 }, { png_size(region) })
      local half = shot("/screenshot/compressed", { format = "png", scale = "0.5" })
      assert.are.same({ 512, 384 }, { png_size(half) })
      local hi = shot("/screenshot/compressed", { format = "jpeg", quality = "95" })
      local lo = shot("/screenshot/compressed", { format = "jpeg", quality = "5" })
      assert.are.same({ 1024, 768 }, { jpeg_size(hi) })
      assert.is_true(#lo < #hi, ("quality 5: %d bytes, 95: %d"):format(#lo, #hi))
      local rc = shot("/screenshot/region/compressed",
        { x = "0", y = "0", width = "400", height = "300", format = "jpeg", quality = "50", scale = "0.5" })
      assert.are.same({ 200, 150 }, { jpeg_size(rc) })
    end)

    xit("answers bad parameters with a 400 naming the field", function()
      local R = "/screenshot/region"
      bad(cu("GET", R, nil, { x = "-1", y = "0", width = "10", height = "10" }), "x")
      bad(cu("GET", R, nil, { x = "0", y = "-5", width = "10", height = "10" }), "y")
      bad(cu("GET", R, nil, { x = "0", y = "0", width = "0", height = "10" }), "width")
      bad(cu("GET", R, nil, { x = "0", y = "0", width = "10", height = "-3" }), "height")
      bad(cu("GET", R, nil, { x = "1000", y = "0", width = "100", height = "10" }), "width")
      bad(cu("GET", R, nil, { x = "0", y = "700", width = "10", height = "100" }), "height")
      bad(cu("GET", R, nil, { x = "abc", y = "0", width = "10", height = "10" }), "x")
      bad(cu("GET", R, nil, { y = "0", width = "10", height = "10" }), "x")
      local C = "/screenshot/compressed"
      bad(cu("GET", C, nil, { format = "gif" }), "format")
      bad(cu("GET", C, nil, { quality = "0" }), "quality")
      bad(cu("GET", C, nil, { quality = "101" }), "quality")
      bad(cu("GET", C, nil, { scale = "0.05" }), "scale")
      bad(cu("GET", C, nil, { scale = "1.5" }), "scale")
      bad(cu("GET", C, nil, { scale = "big" }), "scale")
      bad(cu("GET", "/screenshot", nil, { showCursor = "maybe" }), "showCursor")
    end)
  end)

  describe("recordings", function()
    it("records, lists, refuses to delete a running one, stops, downloads a playable file, deletes", function()
      local rec = ok(cu("POST", "/recordings/start", { label = "spec run" }), 201)
      assert.are.equal("recording", rec.status)
      assert.is_truthy(rec.fileName:match("^spec_run_.*%.mp4$"), rec.fileName)
      assert.are.equal("/home/daytona/.daytona/recordings/" .. rec.fileName, rec.filePath)
      local list = ok(cu("GET", "/recordings")).recordings
      assert.are.equal(1, #list)
      assert.are.equal(rec.id, list[1].id)
      bad(cu("DELETE", "/recordings/" .. rec.id), "still in progress")
      bad(cu("GET", "/recordings/" .. rec.id .. "/download"), "still in progress")
      -- a few seconds of a changing screen
      sh("nohup xterm -title cu-rec -e sleep 30 >/dev/null 2>&1 &")
      scheduler.sleep(2)
      sh("pkill -f 'cu-rec' || true")
      local stopped = ok(cu("POST", "/recordings/stop", { id = rec.id }))
      assert.are.equal("completed", stopped.status)
      assert.is_string(stopped.endTime)
      assert.is_true(stopped.durationSeconds >= 1.5, tostring(stopped.durationSeconds))
      assert.is_true(stopped.sizeBytes > 0)
      assert.are.same(stopped, ok(cu("GET", "/recordings/" .. rec.id)))
      bad(cu("POST", "/recordings/stop", { id = rec.id }), "not in progress")
      -- download (streamed from the sandbox's disk) and probe it here
      local dir = helper.tmpdir()
      local file = dir .. "/rec.mp4"
      local r = assert(http.request {
        url = srv.toolbox_url .. "/" .. sb.id .. "/computeruse/recordings/" .. rec.id .. "/download",
        headers = { Authorization = "Bearer " .. srv.token }, response_file = file, timeout = 60 })
      assert.are.equal(200, r.status)
      assert.are.equal(stopped.sizeBytes, core.util.stat(file).size)
      local p = io.popen("ffprobe -v error -show_entries format=duration -of csv=p=0 '" .. file .. "'")
      local duration = tonumber(p:read("a"))
      p:close()
      assert.is_truthy(duration and duration > 1, "ffprobe duration: " .. tostring(duration))
      assert.are.equal(204, cu("DELETE", "/recordings/" .. rec.id).status)
      assert.are.equal(404, cu("GET", "/recordings/" .. rec.id).status)
      assert.are.equal(404, cu("DELETE", "/recordings/" .. rec.id).status)
      assert.are.equal(404, cu("GET", "/recordings/nope/download").status)
      assert.are.equal("gone", sh("test -e " .. rec.filePath .. " || echo gone").result:match("%S+"))
      assert.are.same({}, ok(cu("GET", "/recordings")).recordings)
      bad(cu("POST", "/recordings/start", { label = "../escape" }), "label")
      bad(cu("POST", "/recordings/stop", {}), "id")
    end)
  end)

  describe("accessibility", function()
    it("gives a GTK application's tree, finds and focuses its nodes; an empty tree where none", function()
      sh("nohup Thunar /home/daytona >/dev/null 2>&1 &")
      local frame = eventually(function()
        local m = ok(cu("POST", "/a11y/find", { scope = "all", role = "frame", name = "Thunar" })).matches
        return m[1]
      end, 30, "Thunar's frame in the accessibility tree")
      assert.is_truthy(frame.name:find("Thunar", 1, true))
      assert.is_true(frame.bounds.width > 0)
      local pid = tonumber(frame.id:match("^(%d+)"))
      local tree = ok(cu("GET", "/a11y/tree", nil, { scope = "pid", pid = tostring(pid), maxDepth = "-1" }))
      assert.are.equal(tostring(pid), tree.root.id)
      assert.are.equal("application", tree.root.role)
      local count = 0
      local function walk(n) count = count + 1; for _, c in ipairs(n.children or {}) do walk(c) end end
      walk(tree.root)
      assert.is_true(count > 10, "nodes: " .. count)
      -- depth 1: the application and its windows only, truncated
      local shallow = ok(cu("GET", "/a11y/tree", nil, { scope = "pid", pid = tostring(pid), maxDepth = "1" }))
      assert.is_true(shallow.truncated)
      for _, c in ipairs(shallow.root.children) do assert.are.same({}, c.children) end
      -- find with states and exact names; then focus
      local buttons = ok(cu("POST", "/a11y/find", { scope = "pid", pid = pid, role = "push_button", limit = 3 }))
      assert.is_true(#buttons.matches <= 3)
      local exact = ok(cu("POST", "/a11y/find", { scope = "pid", pid = pid, name = frame.name, nameMatch = "exact" }))
      assert.are.equal(frame.id, exact.matches[1].id)
      local focusable = ok(cu("POST", "/a11y/find", { scope = "pid", pid = pid, states = { "focusable", "showing" }, limit = 1 }))
      assert.are.equal(1, #focusable.matches)
      ok(cu("POST", "/a11y/node/focus", { id = focusable.matches[1].id }))
      -- a program without AT-SPI (an X toolkit xterm): an empty tree
      local xpid = tonumber(sh("nohup xterm -title cu-a11y -e sleep 60 >/dev/null 2>&1 & echo $!").result:match("%d+"))
      local empty = ok(cu("GET", "/a11y/tree", nil, { scope = "pid", pid = tostring(xpid) }))
      assert.are.same({}, empty.root.children)
      assert.is_false(empty.truncated)
      sh("kill " .. xpid .. "; pkill -x Thunar || true")
      -- bad input
      bad(cu("GET", "/a11y/tree", nil, { scope = "window" }), "scope")
      bad(cu("GET", "/a11y/tree", nil, { scope = "pid" }), "pid")
      bad(cu("GET", "/a11y/tree", nil, { maxDepth = "-2" }), "maxDepth")
      bad(cu("POST", "/a11y/find", { scope = "all", nameMatch = "glob" }), "nameMatch")
      bad(cu("POST", "/a11y/find", { scope = "all", name = "(", nameMatch = "regex" }), "name")
      bad(cu("POST", "/a11y/node/focus", { id = "../1" }), "id")
      assert.are.equal(404, cu("POST", "/a11y/node/invoke", { id = "999999/0" }).status)
    end)
  end)

  describe("accessibility actions", function()
    -- a GTK window of ours: an entry, and a button that writes the entry's
    -- text to a file, so that set_value and invoke are read back
    local APP = [[
import gi, sys
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk
w = Gtk.Window(title="cu-a11y-app")
box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
entry = Gtk.Entry()
button = Gtk.Button(label="Save it")
def save(_):
    with open(sys.argv[1], "w") as f:
        f.write(entry.get_text())
button.connect("clicked", save)
box.add(entry); box.add(button); w.add(box)
w.connect("destroy", Gtk.main_quit)
w.show_all()
Gtk.main()
]]

    it("sets a value and invokes an action, read back from the application", function()
      sh("cat > /home/daytona/cu_app.py <<'EOF'\n" .. APP .. "EOF\nrm -f /home/daytona/cu_saved")
      local pid = tonumber(sh("nohup /usr/bin/python3 /home/daytona/cu_app.py /home/daytona/cu_saved >/dev/null 2>&1 & echo $!").result:match("%d+"))
      local entry = eventually(function()
        return ok(cu("POST", "/a11y/find", { scope = "pid", pid = pid, role = "text" })).matches[1]
      end, 30, "the entry in the application's tree")
      assert.is_truthy(entry.id:match("^" .. pid .. "/"))
      local button = ok(cu("POST", "/a11y/find", { scope = "pid", pid = pid, role = "push_button",
                                                    name = "Save it", nameMatch = "exact" })).matches[1]
      assert.is_table(button)
      assert.is_truthy(table.concat(button.actions or {}, ","):find("click", 1, true))
      ok(cu("POST", "/a11y/node/value", { id = entry.id, value = "typed by AT-SPI" }))
      ok(cu("POST", "/a11y/node/invoke", { id = button.id, action = "click" }))
      eventually(function()
        return sh("cat /home/daytona/cu_saved 2>/dev/null").result == "typed by AT-SPI"
      end, 10, "the button's handler to write the entry's text")
      -- the focused scope (the default): the application of the active window, ours
      ok(cu("POST", "/a11y/node/focus", { id = entry.id }))
      eventually(function()
        return ok(cu("GET", "/a11y/tree", nil, { maxDepth = "0" })).root.id == tostring(pid)
      end, 10, "our window's application as the focused scope")
      bad(cu("POST", "/a11y/node/invoke", { id = button.id, action = "explode" }), "explode")
      bad(cu("POST", "/a11y/node/value", { id = button.id, value = "x" }), "takes no value")
      sh("kill " .. pid)
    end)
  end)

  describe("missing programs", function()
    it("answer 503 naming the Debian package", function()
      -- a sandbox whose PATH has none of the programs
      local _, bare = fixture.sandbox(srv, { env_vars = { PATH = "/nonexistent" } })
      local ok2, err = pcall(function()
        local r = cu("POST", "/start", nil, nil, bare)
        assert.are.equal(503, r.status, r.body)
        assert.is_truthy(r.json.message:find("Xvfb is not installed", 1, true), r.body)
        assert.is_truthy(r.json.message:find("Debian package(s) xvfb", 1, true), r.body)
        assert.are.same({ status = "inactive" }, ok(cu("GET", "/status", nil, nil, bare)))
        r = cu("POST", "/recordings/start", {}, nil, bare)
        assert.are.equal(503, r.status, r.body)
        assert.is_truthy(r.json.message:find("Debian package ffmpeg", 1, true), r.body)
      end)
      pcall(bare.delete, bare, { wait = false })
      assert(ok2, err)
    end)
  end)

  describe("isolation", function()
    it("keeps a second sandbox away from the first one's display", function()
      assert.are.same({ status = "active" }, ok(cu("GET", "/status")))
      local _
      _, sb2 = fixture.sandbox(srv)
      -- no X server of its own yet: :0 by every way a client could try
      local r = sh("DISPLAY=:0 xdpyinfo >/dev/null 2>&1; echo $?", sb2)
      assert.are_not.equal("0", r.result:match("%d+"))
      r = sh([[python3 -c '
import socket
for addr, fam in (("\0/tmp/.X11-unix/X0", socket.AF_UNIX), ("/tmp/.X11-unix/X0", socket.AF_UNIX), (("127.0.0.1", 6000), socket.AF_INET)):
    s = socket.socket(fam)
    try:
        s.connect(addr); print("reached", addr)
    except OSError as e:
        print("refused", e.errno)
']], sb2)
      assert.is_nil(r.result:find("reached", 1, true), r.result)
      -- the first one's VNC server has no port; its socket is in the daemon's private dir
      r = sh("ls -d /tmp/dtlocal-toolbox-*/computeruse/vnc.sock 2>/dev/null | wc -l", sb2)
      assert.are.equal("0", r.result:match("%d+"))
      -- nor its noVNC, in a network of its own (dtlocal as root)
      local addr = sh("ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1").result:match("[%d%.]+")
      if addr then
        r = sh(("curl -s -m 3 -o /dev/null -w '%%{http_code}' http://%s:6080/vnc.html"):format(addr), sb2)
        assert.are.equal("000", r.result)
        assert.are.equal("200", sh(("curl -s -m 3 -o /dev/null -w '%%{http_code}' http://%s:6080/vnc.html"):format(addr)).result)
      end
      -- its own :0, at the same time, is another server (another size)
      sh("nohup Xvfb :0 -screen 0 640x480x24 -nolisten tcp -nolisten local >/dev/null 2>&1 &", sb2)
      local dims = eventually(function()
        local d = sh("DISPLAY=:0 xdpyinfo 2>/dev/null | grep dimensions", sb2).result
        return d ~= "" and d
      end, 20, "the second sandbox's own X server")
      assert.is_truthy(dims:find("640x480", 1, true), dims)
      assert.is_truthy(sh("DISPLAY=:0 xdpyinfo | grep dimensions").result:find("1024x768", 1, true))
      sh("pkill -x Xvfb || true", sb2)
    end)
  end)

  describe("stop", function()
    it("stops every process and leaves none behind", function()
      local body = ok(cu("POST", "/stop"))
      for _, name in ipairs { "xvfb", "xfce4", "x11vnc", "novnc" } do
        assert.is_false(body.status[name].running, name)
      end
      assert.are.same({ status = "inactive" }, ok(cu("GET", "/status")))
      local left = running("Xvfb|xfce|xfwm|x11vnc|websockify|dbus|agent|Thunar|xfdesktop|xfconfd|at-spi")
      assert.are.same({}, left)
      assert.are.equal(503, cu("GET", "/mouse/position").status)
    end)

    it("starts again in a sandbox that was stopped with its desktop running", function()
      ok(cu("POST", "/start"))
      -- a recording finished, one still running when the sandbox stops
      local done = ok(cu("POST", "/recordings/start", { label = "kept" }), 201)
      scheduler.sleep(1)
      done = ok(cu("POST", "/recordings/stop", { id = done.id }))
      local cut = ok(cu("POST", "/recordings/start", { label = "cut" }), 201)
      scheduler.sleep(1)
      sb:stop()
      sb:start()
      -- nothing of the desktop outlived the sandbox's stop
      assert.are.same({}, running("Xvfb|xfce|xfwm|x11vnc|websockify|dbus|at-spi|ffmpeg"))
      -- the recordings did: the daemon finished the running one as it stopped
      local list = ok(cu("GET", "/recordings")).recordings
      assert.are.equal(2, #list)
      assert.are.same(done, ok(cu("GET", "/recordings/" .. done.id)))
      local again = ok(cu("GET", "/recordings/" .. cut.id))
      assert.are.equal("completed", again.status)
      assert.is_true(again.sizeBytes > 0)
      local dl = assert(http.request { url = srv.toolbox_url .. "/" .. sb.id .. "/computeruse/recordings/" .. done.id .. "/download",
                                       headers = { Authorization = "Bearer " .. srv.token } })
      assert.are.equal(200, dl.status)
      assert.are.equal(done.sizeBytes, #dl.body)
      assert.are.equal(204, cu("DELETE", "/recordings/" .. done.id).status)
      assert.are.equal(204, cu("DELETE", "/recordings/" .. cut.id).status)
      assert.are.same({}, ok(cu("GET", "/recordings")).recordings)
      -- a lock file a killed X server left in /tmp (which outlives the PID
      -- namespace), naming a pid that is no X server now: not in the way
      sh("printf '%10d\\n' 1 > /tmp/.X0-lock")
      assert.are.same({ status = "inactive" }, ok(cu("GET", "/status")))
      local body = ok(cu("POST", "/start"))
      assert.is_true(body.status.xvfb.running and body.status.novnc.running)
      ok(cu("POST", "/stop"))
      -- an X server the sandbox runs itself on :0 is: 409 naming the display
      sh("nohup Xvfb :0 -nolisten tcp -nolisten local >/dev/null 2>&1 &")
      eventually(function() return sh("DISPLAY=:0 xdpyinfo >/dev/null 2>&1 && echo up").result:find("up") end,
                 20, "the sandbox's own Xvfb")
      local r = cu("POST", "/start")
      assert.are.equal(409, r.status, r.body)
      assert.is_truthy(r.json.message:find("display :0 is already in use", 1, true), r.body)
      sh("pkill -x Xvfb")
    end)
  end)
end)
