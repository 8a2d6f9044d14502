-- sandbox.computer_use on the wire: every call's method, path, query and
-- JSON body (camelCase, doc/protocol.md §4.9) as a real HTTP server on
-- loopback receives them, the answers mapped to Python's snake_case names,
-- screenshots decoded and saved (real PNG and JPEG files made by ffmpeg),
-- recordings streamed to disk, the polling of wait_until_ready and of
-- changed_since, and the argument checks that fail before any request.
-- The same calls against dtlocal's real desktop: spec/sdk/computer_use_spec.lua.
local errors = require "daytona.errors"
local server = require "daytona.runtime.server"
local sandbox = require "daytona.sandbox"
local computer_use = require "daytona.computer_use"
local daytona = require "daytona"
local helper = require "support.helper"
local fixture = require "sdk.fixture"
local cjson = require "cjson"

local function b64(s)
  local p = assert(io.popen("base64 -w0 < '" .. s .. "'"))
  local out = p:read("a")
  p:close()
  return out
end

local function image(dir, name, w, h, color)
  local path = dir .. "/" .. name
  assert(os.execute(("ffmpeg -loglevel error -y -f lavfi -i color=c=%s:s=%dx%d -frames:v 1 '%s'")
    :format(color, w, h, path)), "ffmpeg could not make " .. name)
  return path
end

describe("computer_use on the wire", function()
  local srv, route, seen, dir, png, png2, jpg

  setup(function()
    -- not helper.tmpdir(): that is cleaned after every test
    local mk = io.popen("mktemp -d \"${TMPDIR:-/tmp}/dtlua-cu-wire.XXXXXX\"")
    dir = mk:read("l")
    mk:close()
    png = b64(image(dir, "a.png", 64, 48, "red"))
    png2 = b64(image(dir, "b.png", 64, 48, "blue"))
    jpg = b64(image(dir, "c.jpg", 40, 30, "green"))
    srv = server.listen{ port = 0, log = function() end, handler = function(req, res)
      local body = req:body()
      seen[#seen + 1] = { method = req.method, path = req.path, args = req.args, query = req.query,
        json = body ~= "" and cjson.decode(body) or nil }
      local fn = route[req.method .. " " .. req.path]
      if not fn then return res:json(404, { message = "no route " .. req.path }) end
      return fn(req, res)
    end }
  end)

  teardown(function()
    if srv then srv:close() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  before_each(function() route, seen = {}, {} end)

  local function sb()
    local c = daytona.new{ api_key = "k", api_url = srv.url .. "/api", target = "us",
      retry = { retries = 2, base_delay = 0.01, max_delay = 0.02, max_retry_after = 2 } }
    return sandbox.new(c, { id = "s1", state = "started", toolboxProxyUrl = srv.url .. "/toolbox", labels = {} })
  end
  local P = "/toolbox/s1/computeruse"

  local function ok(value, status)
    return function(_, res) res:json(status or 200, value) end
  end

  it("lifecycle and process calls", function()
    local status = { xvfb = { running = true, pid = 10, priority = 100, autoRestart = true } }
    route["POST " .. P .. "/start"] = ok{ message = "started", status = status }
    route["POST " .. P .. "/stop"] = ok{ message = "stopped", status = status }
    route["GET " .. P .. "/status"] = ok{ status = "active" }
    route["GET " .. P .. "/process/x11vnc/status"] = ok{ processName = "x11vnc", running = true }
    route["POST " .. P .. "/process/xfce4/restart"] = ok{ message = "restarted", processName = "xfce4" }
    route["GET " .. P .. "/process/novnc/logs"] = ok{ processName = "novnc", logs = "listening on 6080" }
    route["GET " .. P .. "/process/xvfb/errors"] = ok{ processName = "xvfb", errors = "" }
    local cu = sb().computer_use
    local r = cu:start()
    assert.are.equal("started", r.message)
    assert.are.same({ running = true, pid = 10, priority = 100, auto_restart = true }, r.status.xvfb)
    assert.are.equal("stopped", cu:stop().message)
    assert.are.equal("active", cu:get_status().status)
    assert.are.same({ process_name = "x11vnc", running = true }, cu:get_process_status("x11vnc"))
    assert.are.equal("xfce4", cu:restart_process("xfce4").process_name)
    assert.are.equal("listening on 6080", cu:get_process_logs("novnc").logs)
    assert.are.equal("", cu:get_process_errors("xvfb").errors)
    local calls = {}
    for i, s in ipairs(seen) do calls[i] = s.method .. " " .. s.path end
    assert.are.same({ "POST " .. P .. "/start", "POST " .. P .. "/stop", "GET " .. P .. "/status",
      "GET " .. P .. "/process/x11vnc/status", "POST " .. P .. "/process/xfce4/restart",
      "GET " .. P .. "/process/novnc/logs", "GET " .. P .. "/process/xvfb/errors" }, calls)
    assert.matches("ComputerUseStartResponse{", tostring(r))
  end)

  it("wait_until_ready polls each process until all run, and names the ones that never do", function()
    local polls = {}
    for _, name in ipairs(computer_use.PROCESSES) do
      polls[name] = 0
      route["GET " .. P .. "/process/" .. name .. "/status"] = function(_, res)
        polls[name] = polls[name] + 1
        -- x11vnc comes up on the third look
        res:json(200, { processName = name, running = name ~= "x11vnc" or polls[name] >= 3 })
      end
    end
    local ready = sb().computer_use:wait_until_ready{ timeout = 10, interval = 0.01 }
    for _, name in ipairs(computer_use.PROCESSES) do assert.is_true(ready[name].running) end
    assert.are.equal(3, polls.x11vnc)
    assert.are.equal(1, polls.xvfb)       -- a process seen running is not asked again

    route["GET " .. P .. "/process/novnc/status"] = ok{ processName = "novnc", running = false }
    route["GET " .. P .. "/process/novnc/errors"] = ok{ processName = "novnc", errors = "websockify: port 6080 in use\n" }
    local t0 = require("daytona.core").now()
    local err = fixture.fails(sb().computer_use.wait_until_ready, sb().computer_use,
      { timeout = 0.3, interval = 0.05, processes = { "xvfb", "novnc" } })
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError), tostring(err))
    assert.matches("not running: novnc %(websockify: port 6080 in use%)", err.message)
    assert.is_true(require("daytona.core").now() - t0 < 2)
  end)

  it("wait_until_ready fails at once when the sandbox has no desktop", function()
    local n = 0
    route["GET " .. P .. "/process/xvfb/status"] = function(_, res)
      n = n + 1
      res:json(503, { message = "Computer-use functionality is not available" })
    end
    local err = fixture.fails(sb().computer_use.wait_until_ready, sb().computer_use, { timeout = 30 })
    assert.are.equal(503, err.status_code)
    assert.are.equal(1, n)
  end)

  it("mouse and keyboard bodies", function()
    route["GET " .. P .. "/mouse/position"] = ok{ x = 1, y = 2 }
    for _, p in ipairs{ "move", "click", "drag" } do route["POST " .. P .. "/mouse/" .. p] = ok{ x = 5, y = 6 } end
    route["POST " .. P .. "/mouse/scroll"] = ok{ success = true }
    for _, p in ipairs{ "type", "key", "hotkey" } do route["POST " .. P .. "/keyboard/" .. p] = ok{} end
    local cu = sb().computer_use
    assert.are.same({ x = 1, y = 2 }, cu.mouse:get_position())
    assert.are.same({ x = 5, y = 6 }, cu.mouse:move(5, 6))
    cu.mouse:click(5, 6)
    cu.mouse:click(5, 6, "right", true)
    cu.mouse:click(5, 6, { button = "middle" })
    cu.mouse:drag(1, 2, 3, 4)
    cu.mouse:drag(1, 2, 3, 4, "right")
    assert.is_true(cu.mouse:scroll(7, 8, "down", 3))
    assert.is_true(cu.mouse:scroll(7, 8, "up"))
    cu.keyboard:type("héllo")
    cu.keyboard:type("slow", 100)
    cu.keyboard:type("slow", { delay = 50 })
    cu.keyboard:press("enter")
    cu.keyboard:press("t", { "ctrl", "shift" })
    cu.keyboard:press("c", { modifiers = { "ctrl" } })
    cu.keyboard:hotkey("ctrl+alt+t")
    local bodies = {}
    for i = 2, #seen do bodies[#bodies + 1] = { seen[i].path:sub(#P + 2), seen[i].json } end
    assert.are.same({
      { "mouse/move", { x = 5, y = 6 } },
      { "mouse/click", { x = 5, y = 6, button = "left", double = false } },
      { "mouse/click", { x = 5, y = 6, button = "right", double = true } },
      { "mouse/click", { x = 5, y = 6, button = "middle", double = false } },
      { "mouse/drag", { startX = 1, startY = 2, endX = 3, endY = 4, button = "left" } },
      { "mouse/drag", { startX = 1, startY = 2, endX = 3, endY = 4, button = "right" } },
      { "mouse/scroll", { x = 7, y = 8, direction = "down", amount = 3 } },
      { "mouse/scroll", { x = 7, y = 8, direction = "up", amount = 1 } },
      { "keyboard/type", { text = "héllo" } },
      { "keyboard/type", { text = "slow", delay = 100 } },
      { "keyboard/type", { text = "slow", delay = 50 } },
      { "keyboard/key", { key = "enter" } },
      { "keyboard/key", { key = "t", modifiers = { "ctrl", "shift" } } },
      { "keyboard/key", { key = "c", modifiers = { "ctrl" } } },
      { "keyboard/hotkey", { keys = "ctrl+alt+t" } },
    }, bodies)
  end)

  it("screenshots: queries, decoding, save, dimensions", function()
    route["GET " .. P .. "/screenshot"] = ok{ screenshot = png, cursorPosition = { x = 3, y = 4 }, sizeBytes = 100 }
    route["GET " .. P .. "/screenshot/region"] = ok{ screenshot = png }
    route["GET " .. P .. "/screenshot/compressed"] = ok{ screenshot = jpg, sizeBytes = 50 }
    route["GET " .. P .. "/screenshot/region/compressed"] = ok{ screenshot = jpg }
    local s = sb().computer_use.screenshot
    local shot = s:take_full_screen()
    assert.are.equal(png, shot.screenshot)
    assert.are.same({ x = 3, y = 4 }, shot.cursor_position)
    assert.are.equal(100, shot.size_bytes)
    assert.are.equal("png", shot:format())
    assert.are.same({ 64, 48 }, { shot:dimensions() })
    local out = helper.tmpdir() .. "/shot.png"
    assert.are.equal(#helper.read_file(dir .. "/a.png"), shot:save(out))
    assert.are.equal(helper.read_file(dir .. "/a.png"), helper.read_file(out))
    assert.matches("^ScreenshotResponse{", tostring(shot))
    s:take_full_screen(true)
    s:take_region({ x = 1, y = 2, width = 30, height = 20 }, { show_cursor = true })
    local j = s:take_compressed{ format = "jpeg", quality = 70, scale = 0.5 }
    assert.are.equal("jpeg", j:format())
    assert.are.same({ 40, 30 }, { j:dimensions() })
    s:take_compressed()
    s:take_compressed_region({ x = 0, y = 0, width = 10, height = 10 }, { fmt = "png", scale = 1 })
    local q = {}
    for i, r in ipairs(seen) do q[i] = r.path:sub(#P + 2) .. "?" .. r.query end
    assert.are.same({
      "screenshot?showCursor=false",
      "screenshot?showCursor=true",
      "screenshot/region?height=20&showCursor=true&width=30&x=1&y=2",
      "screenshot/compressed?format=jpeg&quality=70&scale=0.5&showCursor=false",
      "screenshot/compressed?showCursor=false",
      "screenshot/region/compressed?format=png&height=10&scale=1&showCursor=false&width=10&x=0&y=0",
    }, q)
  end)

  it("changed_since returns the first shot that differs, or times out", function()
    local n = 0
    route["GET " .. P .. "/screenshot"] = function(_, res)
      n = n + 1
      res:json(200, { screenshot = n <= 3 and png or png2 })
    end
    local s = sb().computer_use.screenshot
    local first = s:take_full_screen()
    local changed = s:take_full_screen{ changed_since = first, interval = 0.01, timeout = 5 }
    assert.are.equal(png2, changed.screenshot)
    assert.are.equal(4, n)
    -- a digest works as well as the shot itself
    n = 0
    changed = s:take_full_screen{ changed_since = first:digest(), interval = 0.01 }
    assert.are.equal(4, n)
    route["GET " .. P .. "/screenshot"] = ok{ screenshot = png }
    local err = fixture.fails(s.take_full_screen, s, { changed_since = first, interval = 0.05, timeout = 0.2 })
    assert.is_true(errors.is(err, errors.DaytonaTimeoutError), tostring(err))
    assert.matches("did not change", err.message)
  end)

  it("display and windows", function()
    route["GET " .. P .. "/display/info"] = ok{ displays = { { id = 0, x = 0, y = 0, width = 1024, height = 768, isActive = true } } }
    route["GET " .. P .. "/display/windows"] = ok{ windows = {
      { id = 41943043, title = "Terminal", x = 10, y = 20, width = 600, height = 400, isActive = true } } }
    local d = sb().computer_use.display
    local info = d:get_info()
    assert.are.same({ id = 0, x = 0, y = 0, width = 1024, height = 768, is_active = true }, info.displays[1])
    local w = d:get_windows()
    assert.are.equal("Terminal", w.windows[1].title)
    assert.is_true(w.windows[1].is_active)
    route["GET " .. P .. "/display/windows"] = ok{ windows = cjson.null }
    assert.are.same({}, d:get_windows().windows)
  end)

  it("recordings: start, stop, list, get, delete, and a streamed download", function()
    local rec = { id = "r1", fileName = "demo.mp4", filePath = "/home/daytona/.daytona/recordings/demo.mp4",
      startTime = "2026-12-07T21:00:00Z", status = "recording" }
    route["POST " .. P .. "/recordings/start"] = ok(rec, 201)
    route["POST " .. P .. "/recordings/stop"] = ok{ id = "r1", status = "completed", durationSeconds = 2.5, sizeBytes = 1000 }
    route["GET " .. P .. "/recordings"] = ok{ recordings = { rec } }
    route["GET " .. P .. "/recordings/r1"] = ok(rec)
    route["DELETE " .. P .. "/recordings/r1"] = function(_, res) res:send(204) end
    local video = string.rep("0123456789abcdef", 40000)   -- 640000 bytes, several chunks
    route["GET " .. P .. "/recordings/r1/download"] = function(_, res)
      local i = 1
      res:stream(200, { ["content-type"] = "application/octet-stream" }, function()
        if i > #video then return nil end
        local c = video:sub(i, i + 65535)
        i = i + 65536
        return c
      end)
    end
    local r = sb().computer_use.recording
    local started = r:start("demo")
    assert.are.equal("demo.mp4", started.file_name)
    assert.are.equal("recording", started.status)
    local stopped = r:stop(started)                  -- the Recording or its id
    assert.are.equal(2.5, stopped.duration_seconds)
    assert.are.equal("r1", r:list().recordings[1].id)
    assert.are.equal("/home/daytona/.daytona/recordings/demo.mp4", r:get("r1").file_path)
    -- missing parents are made without a shell: a name a shell would run is only a name
    local base = helper.tmpdir()
    local out = base .. "/new/it's $(touch pwned) `touch pwned2`; x/demo.mp4"
    assert.are.equal(#video, r:download("r1", out))
    assert.are.equal(video, helper.read_file(out))
    assert.is_nil(io.open(base .. "/new/pwned")); assert.is_nil(io.open("pwned")); assert.is_nil(io.open("pwned2"))
    assert.is_nil(r:delete("r1"))
    assert.are.same({ label = "demo" }, seen[1].json)
    assert.are.same({ id = "r1" }, seen[2].json)
    -- a failed download leaves nothing behind
    local missing = helper.tmpdir() .. "/missing.mp4"
    local err = fixture.fails(r.download, r, "r2", missing)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError), tostring(err))
    assert.is_nil(io.open(missing))
    local p = io.popen("ls -A '" .. helper.tmpdir() .. "'")
    local left = p:read("a"); p:close()
    assert.is_nil(left:find("dtlua%-part"))
  end)

  it("accessibility: tree, find, focus, invoke, value", function()
    local leaf = { id = "2", role = "text", name = "hello", bounds = { x = 1, y = 2, width = 3, height = 4 },
      states = { "editable", "focused" }, actions = {} }
    route["GET " .. P .. "/a11y/tree"] = ok{ root = { id = "1", role = "application", name = "xterm",
      bounds = { x = 0, y = 0, width = 10, height = 10 }, states = {}, children = { leaf } }, truncated = false }
    route["POST " .. P .. "/a11y/find"] = ok{ matches = { leaf }, truncated = true }
    for _, p in ipairs{ "focus", "invoke", "value" } do route["POST " .. P .. "/a11y/node/" .. p] = ok{} end
    local a = sb().computer_use.accessibility
    local tree = a:get_tree{ scope = "all", max_depth = 3 }
    assert.are.equal("xterm", tree.root.name)
    assert.are.equal("hello", tree.root.children[1].name)
    assert.are.same({ "editable", "focused" }, tree.root.children[1].states)
    a:get_tree("pid", 42, 0)
    a:get_tree()
    local found = a:find_nodes{ scope = "all", role = "text", name = "hel", name_match = "substring",
      states = { "focused" }, limit = 5 }
    assert.is_true(found.truncated)
    assert.are.equal("2", found.matches[1].id)
    a:focus_node(found.matches[1])
    a:invoke_node("2", "click")
    a:invoke_node("2")
    a:set_node_value("2", "")
    assert.are.equal("maxDepth=3&scope=all", seen[1].query)
    assert.are.equal("maxDepth=0&pid=42&scope=pid", seen[2].query)
    assert.are.equal("", seen[3].query)
    assert.are.same({ scope = "all", role = "text", name = "hel", nameMatch = "substring", states = { "focused" },
      limit = 5 }, seen[4].json)
    assert.are.same({ id = "2" }, seen[5].json)
    assert.are.same({ id = "2", action = "click" }, seen[6].json)
    assert.are.same({ id = "2" }, seen[7].json)
    assert.are.same({ id = "2", value = "" }, seen[8].json)
  end)

  it("checks arguments before any request", function()
    local cu = sb().computer_use
    local function fails(arg, fn, ...)
      local err = fixture.fails(fn, ...)
      assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
      assert.matches(arg, err.message, 1, true)
    end
    fails("'x'", cu.mouse.move, cu.mouse, 1.5, 2)
    fails("'y'", cu.mouse.move, cu.mouse, 1, nil)
    fails("'button'", cu.mouse.click, cu.mouse, 1, 2, "left-ish")
    fails("'double'", cu.mouse.click, cu.mouse, 1, 2, "left", "yes")
    fails("'options'", cu.mouse.click, cu.mouse, 1, 2, { buton = "left" })
    fails("'direction'", cu.mouse.scroll, cu.mouse, 1, 2, "sideways")
    fails("'direction'", cu.mouse.scroll, cu.mouse, 1, 2)
    fails("'amount'", cu.mouse.scroll, cu.mouse, 1, 2, "up", 0)
    fails("'text'", cu.keyboard.type, cu.keyboard, nil)
    fails("'delay'", cu.keyboard.type, cu.keyboard, "x", -1)
    fails("'modifiers[1]'", cu.keyboard.press, cu.keyboard, "a", { 1 })
    fails("'keys'", cu.keyboard.hotkey, cu.keyboard, "")
    fails("'region.width'", cu.screenshot.take_region, cu.screenshot, { x = 0, y = 0, width = 0, height = 5 })
    fails("'region'", cu.screenshot.take_region, cu.screenshot, { x = 0, y = 0, w = 1, height = 5 })
    fails("'scale'", cu.screenshot.take_compressed, cu.screenshot, { scale = 1.5 })
    fails("'scale'", cu.screenshot.take_compressed, cu.screenshot, { scale = 0.05 })
    fails("'quality'", cu.screenshot.take_compressed, cu.screenshot, { quality = 0 })
    fails("'format'", cu.screenshot.take_compressed, cu.screenshot, { format = "gif" })
    fails("'changed_since'", cu.screenshot.take_full_screen, cu.screenshot, { changed_since = "nope" })
    fails("'process_name'", cu.get_process_status, cu, "")
    fails("'processes'", cu.wait_until_ready, cu, { processes = {} })
    fails("'recording_id'", cu.recording.get, cu.recording, nil)
    fails("'local_path'", cu.recording.download, cu.recording, "r1", nil)
    fails("'scope'", cu.accessibility.get_tree, cu.accessibility, { scope = "everything" })
    fails("'pid'", cu.accessibility.get_tree, cu.accessibility, { scope = "pid" })
    fails("'name_match'", cu.accessibility.find_nodes, cu.accessibility, { name_match = "glob" })
    fails("'value'", cu.accessibility.set_node_value, cu.accessibility, "1", nil)
    fails("call it with ':'", cu.mouse.move, 1, 2)
    assert.are.same({}, seen)
  end)

  it("reads the size of JPEGs with other segments before the frame", function()
    -- ffmpeg's JPEG has a JFIF APP0 and a comment before SOF0
    local bytes = helper.read_file(dir .. "/c.jpg")
    assert.are.same({ 40, 30 }, { computer_use._image_size(bytes) })
    assert.is_nil(computer_use._image_size("GIF89a"))
  end)
end)
