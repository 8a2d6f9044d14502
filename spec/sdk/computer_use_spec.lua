-- sandbox.computer_use against dtlocal's real desktop (Xvfb, xfce4, x11vnc,
-- noVNC in the sandbox): what the SDK does is read back from the desktop.
-- The pointer is where it was moved or dragged to; keys typed into an xterm
-- reach its shell (which renames the window, seen in get_windows); a hotkey
-- (ctrl+u, the shell's kill-line) takes effect; screenshots have the
-- display's size, a region's size, half of it at scale 0.5, and a region
-- outside the screen is the server's 400; changed_since sees a real change;
-- a recording is a video ffprobe reads, not deletable while it records;
-- dtlocal's 503 for a desktop not started is raised at once (one request).
-- The request shapes alone: computer_use_wire_spec.lua.
local fixture = require "sdk.fixture"
local errors = require "daytona.errors"
local helper = require "support.helper"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"

describe("computer_use against dtlocal", function()
  local srv, sb, cu, display

  setup(function()
    srv = fixture.server()
    local _
    _, sb = fixture.sandbox(srv, { labels = { suite = "computer-use" } })
    cu = sb.computer_use
  end)

  teardown(function()
    if cu then pcall(cu.stop, cu) end
    fixture.release(srv, sb)
    helper.cleanup()
  end)

  -- poll the window list until a title satisfies pred
  local function window(pred, timeout)
    local deadline = core.now() + (timeout or 30)
    local titles
    repeat
      titles = {}
      for _, w in ipairs(cu.display:get_windows().windows) do
        if pred(w.title or "") then return w end
        titles[#titles + 1] = w.title
      end
      scheduler.sleep(0.2)
    until core.now() > deadline
    error("no such window; windows: " .. table.concat(titles, " | "), 2)
  end

  it("before start: dtlocal's 503 is raised after one request, not retried", function()
    local c, counter = fixture.counting_client(srv)
    local other = c:get(sb.id).computer_use
    counter.n = 0
    local err = fixture.fails(other.mouse.get_position, other.mouse)
    assert.are.equal(503, err.status_code, tostring(err))
    assert.is_false(err.retryable)
    assert.are.equal(1, counter.n, table.concat(counter.log, "\n"))
  end)

  it("starts, and wait_until_ready sees the four processes run", function()
    local r = cu:start()
    assert.is_string(r.message)
    local ready = cu:wait_until_ready{ timeout = 120 }
    for _, name in ipairs{ "xvfb", "xfce4", "x11vnc", "novnc" } do
      assert.is_true(ready[name].running, name)
      assert.is_true(cu:get_process_status(name).running, name)
      assert.is_string(cu:get_process_logs(name).logs)
      assert.is_string(cu:get_process_errors(name).errors)
    end
    assert.are.equal("active", cu:get_status().status)
    display = cu.display:get_info().displays[1]
    assert.is_true(display.width > 0 and display.height > 0)
  end)

  it("moves and drags the pointer to where it is then read back", function()
    local moved = cu.mouse:move(321, 123)
    assert.are.same({ 321, 123 }, { moved.x, moved.y })
    local p = cu.mouse:get_position()
    assert.are.same({ 321, 123 }, { p.x, p.y })
    cu.mouse:drag(10, 20, 400, 300)
    p = cu.mouse:get_position()
    assert.are.same({ 400, 300 }, { p.x, p.y })
    cu.mouse:click(display.width - 5, display.height - 5)
    p = cu.mouse:get_position()
    assert.are.same({ display.width - 5, display.height - 5 }, { p.x, p.y })
    assert.is_true(cu.mouse:scroll(200, 200, "down", 2))
  end)

  it("types into a terminal, and a hotkey takes effect", function()
    -- `-e sh`: bash's prompt would set the title back at every prompt
    sb.process:create_session("xterm")
    sb.process:execute_session_command("xterm",
      { command = "DISPLAY=:0 xterm -geometry 80x20+50+50 -title sdk-terminal -e sh", run_async = true })
    local w = window(function(t) return t == "sdk-terminal" end)
    cu.mouse:click(w.x + w.width // 2, w.y + w.height // 2)
    -- a line typed then killed with ctrl+u (the terminal's kill character)
    -- never runs; the next one does
    cu.keyboard:type("printf '\\033]0;wrong title\\007'")
    cu.keyboard:hotkey("ctrl+u")
    cu.keyboard:type("printf '\\033]0;%s\\007' 'typed by the SDK'", 5)
    cu.keyboard:press("enter")
    local renamed = window(function(t) return t == "typed by the SDK" end)
    assert.is_truthy(renamed.id)
    for _, x in ipairs(cu.display:get_windows().windows) do
      assert.are_not.equal("wrong title", x.title)
    end
  end)

  it("takes screenshots of the right sizes and formats", function()
    local full = cu.screenshot:take_full_screen()
    assert.are.equal("png", full:format())
    assert.are.same({ display.width, display.height }, { full:dimensions() })
    local region = cu.screenshot:take_region({ x = 10, y = 20, width = 200, height = 100 }, true)
    assert.are.same({ 200, 100 }, { region:dimensions() })
    local jpeg = cu.screenshot:take_compressed{ format = "jpeg", quality = 50, scale = 0.5 }
    assert.are.equal("jpeg", jpeg:format())
    assert.are.same({ display.width // 2, display.height // 2 }, { jpeg:dimensions() })
    local cr = cu.screenshot:take_compressed_region({ x = 0, y = 0, width = 300, height = 200 },
      { format = "png", scale = 0.5 })
    assert.are.same({ 150, 100 }, { cr:dimensions() })
    local out = helper.tmpdir() .. "/full.png"
    assert.are.equal(#full:bytes(), full:save(out))
    local png = helper.read_file(out)
    local w, h = string.unpack(">I4I4", png, 17)
    assert.are.same({ display.width, display.height }, { w, h })
    -- a region past the screen's edge: the server says which field
    local err = fixture.fails(cu.screenshot.take_region, cu.screenshot,
      { x = display.width - 10, y = 0, width = 100, height = 100 })
    assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
    assert.are.equal(400, err.status_code)
  end)

  it("changed_since returns once the screen has changed", function()
    -- a piece of the desktop's background, where the window below opens
    -- (the whole screen has a clock and a blinking cursor)
    local region = { x = 560, y = 420, width = 80, height = 30 }
    -- a still picture gives the same image: wait until two shots agree (the
    -- desktop may still be drawing its background)
    local before = cu.screenshot:take_region(region)
    local deadline = core.now() + 20
    while true do
      local again = cu.screenshot:take_region(region)
      if again:digest() == before:digest() then break end
      assert(core.now() < deadline, "the desktop's background never stood still")
      before = again
      scheduler.sleep(0.2)
    end
    sb.process:create_session("second")
    sb.process:execute_session_command("second",
      { command = "DISPLAY=:0 xterm -geometry 30x5+500+400 -bg red -title second -e sh", run_async = true })
    local after = cu.screenshot:take_region(region, { changed_since = before, timeout = 30 })
    assert.are_not.equal(before:digest(), after:digest())
    window(function(t) return t == "second" end)
  end)

  it("records a video that ffprobe reads; not deletable while recording", function()
    local rec = cu.recording:start("spec")
    assert.are.equal("recording", rec.status)
    local err = fixture.fails(cu.recording.delete, cu.recording, rec.id)
    assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
    -- some motion to record, over a couple of seconds
    for i = 1, 10 do
      cu.mouse:move(100 + i * 20, 100 + i * 10)
      scheduler.sleep(0.2)
    end
    local done = cu.recording:stop(rec.id)
    assert.are.equal("completed", done.status)
    assert.is_true(#cu.recording:list().recordings >= 1)
    assert.are.equal(rec.id, cu.recording:get(rec.id).id)
    local out = helper.tmpdir() .. "/rec/spec.mp4"
    local n = cu.recording:download(rec, out)
    assert.is_true(n > 0)
    local r = process.run({ "ffprobe", "-v", "error", "-show_entries", "format=duration",
      "-of", "default=noprint_wrappers=1:nokey=1", out }, { timeout = 60, stderr = "pipe" })
    assert.are.equal(0, r.exit_code, r.stderr)
    assert.is_true(tonumber(r.stdout:match("[%d.]+")) >= 1, r.stdout)
    cu.recording:delete(rec.id)
    err = fixture.fails(cu.recording.get, cu.recording, rec.id)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError), tostring(err))
  end)

  it("reads the accessibility tree without error", function()
    local tree = cu.accessibility:get_tree{ scope = "all", max_depth = 2 }
    assert.is_boolean(tree.truncated)
    local found = cu.accessibility:find_nodes{ scope = "all", limit = 5 }
    assert.is_table(found.matches)
  end)

  it("stops", function()
    cu:stop()
    assert.are.equal("inactive", cu:get_status().status)
    assert.is_false(cu:get_process_status("xvfb").running)
  end)
end)
