-- daytona.core.x11 (csrc/x11.c) against a real X server: an Xvfb of its
-- own per run, real clients (xev reports the pointer and key events it
-- receives; xterm running `cat` writes what is typed to a file), real
-- screenshots decoded far enough to check their size (PNG's IHDR, JPEG's
-- SOF).  xev and xterm are only the readback: the part itself sends every
-- event through XTest.
local helper = require "support.helper"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"

local W, H = 1024, 768

-- An Xvfb on a display number nobody holds: the lock file decides (another
-- spec may start one at the same moment, so a server that exits at once
-- means "taken": try the next number).  Ready when the lock holds its pid
-- and a client can connect.
local function start_xvfb()
  local base = 100 + math.random(0, 400)
  local last
  for n = base, base + 200 do
    local f = io.open("/tmp/.X" .. n .. "-lock")
    if f then
      f:close()
    else
      local p = assert(process.spawn({ "Xvfb", ":" .. n, "-screen", "0", W .. "x" .. H .. "x24",
        "-nolisten", "tcp" },
        { env = helper.child_env(), stdout = "null", stderr = "null" }))
      local d
      local ok, why = pcall(helper.eventually, function()
        if p:status() ~= nil then return "exited" end
        -- ours once the lock names our pid (else another server may answer)
        local lock = helper.read_file("/tmp/.X" .. n .. "-lock")
        if not (lock and tonumber(lock:match("%d+")) == p:pid()) then return nil end
        d = core.x11.open(":" .. n)
        return d
      end, 10)
      if ok and d and d ~= "exited" and p:status() == nil then
        return p, ":" .. n, d
      end
      p:close()
      last = why
    end
  end
  error("no free X display number: " .. tostring(last))
end

-- A client whose output we watch: out() is everything it wrote so far.
local function client(display, argv, env)
  local e = helper.child_env()
  e.DISPLAY = display
  for k, v in pairs(env or {}) do e[k] = v end
  local p = assert(process.spawn(argv, { env = e, pty = { cols = 200, rows = 50 } }))
  local buf = {}
  local self = { proc = p }
  function self.out()
    while true do
      local chunk = p:read("stdout", 0.01)
      if not chunk then break end
      buf[#buf + 1] = chunk
    end
    return table.concat(buf)
  end
  function self.wait_for(pattern, timeout)
    return helper.eventually(function() return self.out():match(pattern) end, timeout or 10)
  end
  function self.reset() self.out(); buf = {} end
  return self
end

-- The window whose title is title, once it is mapped.
local function window(d, title)
  return helper.eventually(function()
    for _, w in ipairs(assert(d:windows())) do
      if w.title == title then return w end
    end
  end, 30)
end

local function be32(s, i)
  return (string.unpack(">I4", s, i))
end

-- width and height of a PNG (its IHDR) or a JPEG (its first SOFn)
local function png_size(s)
  assert(s:sub(1, 8) == "\137PNG\r\n\26\n", "not a PNG")
  assert(s:sub(13, 16) == "IHDR")
  return be32(s, 17), be32(s, 21)
end

local function jpeg_size(s)
  assert(s:sub(1, 2) == "\255\216", "not a JPEG")
  local i = 3
  while i < #s do
    assert(s:byte(i) == 0xff, "bad JPEG marker")
    local m = s:byte(i + 1)
    local len = string.unpack(">I2", s, i + 2)
    if m >= 0xc0 and m <= 0xcf and m ~= 0xc4 and m ~= 0xc8 and m ~= 0xcc then
      local h, w = string.unpack(">I2>I2", s, i + 5)
      return w, h
    end
    i = i + 2 + len
  end
  error("no SOF in JPEG")
end

describe("daytona.core.x11", function()
  local xvfb, display, d
  local procs = {}

  setup(function()
    helper.run(function()
      xvfb, display, d = start_xvfb()
    end)
  end)

  teardown(function()
    for _, p in ipairs(procs) do p.proc:close() end
    if d then d:close() end
    if xvfb then xvfb:close() end
    helper.cleanup()
  end)

  local function spawn(argv, env)
    local c = client(display, argv, env)
    procs[#procs + 1] = c
    return c
  end

  it("is a part loaded on first use, with the Display class", function()
    assert.are.equal(core.x11, package.loaded["daytona.core.x11"])
    assert.are.equal("daytona.core.x11.Display", getmetatable(d).__name)
    assert.is_truthy(tostring(d):find(display, 1, true))
  end)

  it("opens a display and reads its screen; a display nobody serves is an error", function()
    assert.are.same({ width = W, height = H }, d:screen())
    local none, msg, code = core.x11.open(":599")
    assert.is_nil(none)
    assert.are.equal("ECONNREFUSED", code)
    assert.is_truthy(msg:find(":599", 1, true))
    -- close is idempotent, and a closed Display raises
    local d2 = assert(core.x11.open(display))
    d2:close()
    d2:close()
    assert.has_error(function() d2:screen() end)
    do local _ <close> = assert(core.x11.open(display)) end
  end)

  it("moves and drags the pointer, read back through the server", function()
    assert.is_true(d:move(100, 200))
    assert.are.same({ 100, 200 }, { d:pointer() })
    assert.is_true(d:drag(10, 20, 600, 500, 1))
    assert.are.same({ 600, 500 }, { d:pointer() })
    assert.is_true(d:click(W - 1, H - 1))
    assert.are.same({ W - 1, H - 1 }, { d:pointer() })
    -- off the screen: EINVAL naming the field, and the pointer stays
    local ok, msg, code, info = d:move(W, 10)
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    assert.are.same({ field = "x" }, info)
    assert.is_truthy(msg:find("^x: "))
    ok, _, code, info = d:move(0, -1)
    assert.are.same({ nil, "EINVAL", { field = "y" } }, { ok, code, info })
    ok, _, code, info = d:drag(0, 0, 5, H + 5)
    assert.are.same({ nil, "EINVAL", { field = "endY" } }, { ok, code, info })
    ok, _, code, info = d:scroll(1, 1, "sideways")
    assert.are.same({ nil, "EINVAL", { field = "direction" } }, { ok, code, info })
    ok, _, code, info = d:scroll(1, 1, "up", 0)
    assert.are.same({ nil, "EINVAL", { field = "amount" } }, { ok, code, info })
    assert.are.same({ W - 1, H - 1 }, { d:pointer() })
    assert.has_error(function() d:button(8, true) end)
    assert.has_error(function() d:move(1.5, 2) end)
  end)

  it("clicks, scrolls and presses keys into a real client (xev)", function()
    helper.run(function()
      local xev = spawn({ "xev", "-geometry", "300x300+0+0", "-event", "keyboard", "-event", "button" })
      local w = window(d, "Event Tester")
      assert.is_true(d:focus(w.id))
      helper.eventually(function() return d:active_window() == w.id end, 10)
      xev.reset()
      assert.is_true(d:click(150, 150, 3))
      xev.wait_for("ButtonRelease event.-button 3,")
      -- how many presses of each button xev has reported
      local function presses()
        local n = {}
        for b in xev.out():gmatch("ButtonPress event.-button (%d+),") do
          n[tonumber(b)] = (n[tonumber(b)] or 0) + 1
        end
        return n
      end
      assert.is_true(d:click(150, 150, 1, true))
      helper.eventually(function() return presses()[1] == 2 end, 15)
      assert.is_true(d:scroll(150, 150, "down", 3))
      helper.eventually(function() return presses()[5] == 3 end, 15)
      assert.is_true(d:scroll(150, 150, "left"))
      helper.eventually(function() return presses()[6] == 1 end, 15)
      assert.are.same({ [1] = 2, [3] = 1, [5] = 3, [6] = 1 }, presses())
      assert.is_true(d:button(2, true))
      assert.is_true(d:button(2, false))
      xev.wait_for("ButtonRelease event.-button 2,")

      -- the key events xev has reported, once there are n
      local function keys(n)
        return helper.eventually(function()
          local seen = {}
          for kind, sym in xev.out():gmatch("(Key%a+) event.-keysym 0x%x+, ([%w_]+)") do
            seen[#seen + 1] = kind .. " " .. sym
          end
          return #seen >= n and seen
        end, 15)
      end
      -- a hotkey: pressed in order, released in reverse; shift makes the T
      xev.reset()
      assert.is_true(d:hotkey("ctrl+shift+t"))
      assert.are.same({ "KeyPress Control_L", "KeyPress Shift_L", "KeyPress T",
        "KeyRelease T", "KeyRelease Shift_L", "KeyRelease Control_L" }, keys(6))
      -- press with modifiers, Daytona's names; an upper-case key adds Shift
      xev.reset()
      assert.is_true(d:press("enter", { "alt" }))
      assert.are.same({ "KeyPress Alt_L", "KeyPress Return", "KeyRelease Return", "KeyRelease Alt_L" },
        keys(4))
      xev.reset()
      assert.is_true(d:press("A", { "ctrl" }))
      assert.are.same({ "KeyPress Control_L", "KeyPress Shift_L", "KeyPress A", "KeyRelease A",
        "KeyRelease Shift_L", "KeyRelease Control_L" }, keys(6))
      -- a key held and released, an F key by Daytona's lower-case name
      xev.reset()
      assert.is_true(d:key("f5", true))
      assert.is_true(d:key("F5", false))
      assert.are.same({ "KeyPress F5", "KeyRelease F5" }, keys(2))
      -- a key no keycode carries is bound while it is held
      xev.reset()
      assert.is_true(d:key("EuroSign", true))
      assert.is_true(d:key("EuroSign", false))
      assert.are.same({ "KeyPress EuroSign", "KeyRelease EuroSign" }, keys(2))
      -- bad names: EINVAL naming the field
      local ok, msg, code, info = d:hotkey("ctrl+nosuchkey")
      assert.are.same({ nil, "EINVAL", { field = "keys" } }, { ok, code, info })
      assert.is_truthy(msg:find("nosuchkey", 1, true))
      ok, _, code, info = d:press("a", { "ctrl", "hyper-ish" })
      assert.are.same({ nil, "EINVAL", { field = "modifiers" } }, { ok, code, info })
      ok, _, code, info = d:key("", true)
      assert.are.same({ nil, "EINVAL", { field = "key" } }, { ok, code, info })
      for _, bad in ipairs({ "ctrl+", "", "+ctrl", "ctrl+ +a", "ctrl+++" }) do
        ok, _, code, info = d:hotkey(bad)
        assert.are.same({ nil, "EINVAL", { field = "keys" } }, { ok, code, info }, bad)
      end
      -- "+" as the key, spaces around names
      xev.reset()
      assert.is_true(d:hotkey(" ctrl + + "))
      assert.are.same({ "KeyPress Control_L", "KeyPress Shift_L", "KeyPress plus", "KeyRelease plus",
        "KeyRelease Shift_L", "KeyRelease Control_L" }, keys(6))
    end)
  end)

  it("types UTF-8 text into a terminal, characters outside the keymap included", function()
    helper.run(function()
      local dir = helper.tmpdir()
      local file = dir .. "/typed.txt"
      spawn({ "xterm", "-geometry", "80x10+320+0", "-T", "typing-target", "-e", "sh", "-c",
        "stty -echo; cat > " .. file }, { LC_ALL = "C.UTF-8", LANG = "C.UTF-8" })
      local w = window(d, "typing-target")
      assert.is_true(d:focus(w.id))
      helper.eventually(function() return d:active_window() == w.id end, 10)
      -- xterm reads keys once it has mapped and set up its pty: retype the
      -- first probe line until cat has written it
      helper.eventually(function()
        d:type("ready\n")
        scheduler.sleep(0.1)
        local s = helper.read_file(file)
        return s and s:find("ready\n", 1, true)
      end, 15, 0.05)
      local text = "Hello, World! ~{[|]}~ 123 déjà vu € ß ✓\n"
      assert.is_true(d:type(text, 2))
      local got = helper.eventually(function()
        local s = helper.read_file(file)
        return s and s:find("\226\156\147\n", 1, true) and s
      end, 10)
      assert.are.equal(text, got:sub(#got - #text + 1))
      -- the keymap is as it was: no spare keycode stays bound
      local r = process.run({ "xmodmap", "-display", display, "-pke" }, { env = helper.child_env() })
      assert.are.equal(0, r.exit_code)
      assert.is_falsy(r.stdout:find("EuroSign", 1, true))
      assert.is_falsy(r.stdout:find("U2713", 1, true))
      -- invalid input: checked before any key is sent
      local ok, _, code, info = d:type("ok\255")
      assert.are.same({ nil, "EINVAL", { field = "text" } }, { ok, code, info })
      ok, _, code, info = d:type("bell\7")
      assert.are.same({ nil, "EINVAL", { field = "text" } }, { ok, code, info })
      ok, _, code, info = d:type("x", 5000)
      assert.are.same({ nil, "EINVAL", { field = "delay" } }, { ok, code, info })
    end)
  end)

  it("lists windows with their geometry, title and pid, and which is active", function()
    helper.run(function()
      local c = spawn({ "xterm", "-geometry", "40x5+100+400", "-T", "listed-window", "-e", "sleep", "600" })
      local w = window(d, "listed-window")
      assert.are.equal(100, w.x)
      assert.are.equal(400, w.y)
      assert.is_true(w.width > 0 and w.height > 0)
      assert.are.equal(c.proc:pid(), w.pid)
      assert.is_true(d:focus(w.id))
      helper.eventually(function() return window(d, "listed-window").active end)
      assert.are.equal(w.id, d:active_window())
      local ok, _, code = d:focus(0x1fffff00)
      assert.are.same({ nil, "ENOENT" }, { ok, code })
    end)
  end)

  it("lists and focuses windows through a window manager's EWMH hints (xfwm4)", function()
    helper.run(function()
      assert.is_false(d:window_manager())
      local p, disp2, d2 = start_xvfb()
      local e = helper.child_env()
      e.DISPLAY = disp2
      local wm = assert(process.spawn({ "xfwm4", "--compositor=off" }, { env = e, stdout = "null", stderr = "null" }))
      local ok, err = pcall(function()
        helper.eventually(function() return d2:window_manager() end, 30)
        assert.are.equal("Xfwm4", d2:window_manager())
        local a = client(disp2, { "xterm", "-T", "wm-one", "-geometry", "40x5+50+50", "-e", "sleep", "600" })
        local b = client(disp2, { "xterm", "-T", "wm-two", "-geometry", "40x5+400+300", "-e", "sleep", "600" })
        procs[#procs + 1], procs[#procs + 2] = a, b
        local one, two = window(d2, "wm-one"), window(d2, "wm-two")
        assert.are.equal(a.proc:pid(), one.pid)
        assert.are.equal(b.proc:pid(), two.pid)
        -- the manager's frames: only the client windows are listed
        local titles = {}
        for _, w in ipairs(d2:windows()) do titles[#titles + 1] = w.title end
        table.sort(titles)
        assert.are.same({ "wm-one", "wm-two" }, titles)
        for _, w in ipairs({ one, two }) do
          assert.is_true(d2:focus(w.id))
          helper.eventually(function() return d2:active_window() == w.id end, 10)
          assert.is_true(window(d2, w.title).active)
        end
      end)
      wm:close()
      d2:close()
      p:close()
      assert(ok, err)
    end)
  end)

  it("captures the screen and regions as PNG and JPEG, scaled", function()
    local png, w, h = d:capture()
    assert.are.same({ W, H }, { w, h })
    assert.are.same({ W, H }, { png_size(png) })
    local jpg
    jpg, w, h = d:capture{ format = "jpeg", quality = 60 }
    assert.are.same({ W, H }, { w, h })
    assert.are.same({ W, H }, { jpeg_size(jpg) })
    local half = d:capture{ format = "jpeg", scale = 0.5 }
    assert.are.same({ W // 2, H // 2 }, { jpeg_size(half) })
    half = d:capture{ scale = 0.5 }
    assert.are.same({ W // 2, H // 2 }, { png_size(half) })
    local region
    region, w, h = d:capture{ x = 10, y = 20, width = 300, height = 200 }
    assert.are.same({ 300, 200 }, { w, h })
    assert.are.same({ 300, 200 }, { png_size(region) })
    region = d:capture{ x = W - 100, y = H - 50, width = 100, height = 50, format = "jpeg", scale = 0.1 }
    assert.are.same({ 10, 5 }, { jpeg_size(region) })
    -- quality changes the JPEG
    local lo = d:capture{ format = "jpeg", quality = 5 }
    local hi = d:capture{ format = "jpeg", quality = 100 }
    assert.is_true(#lo < #hi)
  end)

  it("draws the cursor only when asked", function()
    assert.is_true(d:move(500, 300))
    local area = { x = 480, y = 280, width = 40, height = 40 }
    local plain = d:capture(area)
    area.cursor = true
    local with = d:capture(area)
    assert.are_not.equal(plain, with)
    area.cursor = false
    assert.are.equal(plain, d:capture(area))
  end)

  it("refuses regions off the screen and bad options, naming the field", function()
    local cases = {
      { { x = -1 }, "x" }, { { y = H }, "y" },
      { { width = 0 }, "width" }, { { height = -5 }, "height" },
      { { x = 100, width = W }, "width" }, { { y = 1, height = H }, "height" },
      { { format = "gif" }, "format" }, { { format = "jpeg", quality = 0 }, "quality" },
      { { quality = 101 }, "quality" }, { { scale = 0.05 }, "scale" }, { { scale = 1.5 }, "scale" },
      { { scale = 0 / 0 }, "scale" },
    }
    for _, c in ipairs(cases) do
      local ok, msg, code, info = d:capture(c[1])
      assert.is_nil(ok, c[2])
      assert.are.equal("EINVAL", code, c[2])
      assert.are.same({ field = c[2] }, info)
      assert.is_truthy(msg:find("^" .. c[2] .. ": "), msg)
    end
    assert.has_error(function() d:capture{ x = "left" } end)
    assert.has_error(function() d:capture{ scale = "big" } end)
    assert.has_error(function() d:capture("png") end)
    assert.has_error(function() d:capture{ fromat = "jpeg" } end)
  end)

  it("reports a killed X server as an error on every call, without dying", function()
    helper.run(function()
      local p, _, d2 = start_xvfb()
      assert.are.same({ width = W, height = H }, d2:screen())
      p:kill("KILL")
      p:wait(10)
      local ok, msg, code = d2:capture()
      assert.is_nil(ok)
      assert.are.equal("ECONNRESET", code)
      assert.is_truthy(msg:find("lost", 1, true))
      for _, call in ipairs({
        function() return d2:screen() end, function() return d2:pointer() end,
        function() return d2:move(1, 1) end, function() return d2:type("x") end,
        function() return d2:windows() end, function() return d2:hotkey("ctrl+c") end,
      }) do
        local r, _, c = call()
        assert.are.same({ nil, "ECONNRESET" }, { r, c })
      end
      assert.is_truthy(tostring(d2):find("dead", 1, true))
      d2:close()
      p:close()
      -- the other display is untouched
      assert.are.same({ width = W, height = H }, d:screen())
    end)
  end)
end)
