--- `sandbox.computer_use`: the sandbox's desktop (an X display with a
-- window manager, VNC and noVNC), driven like a person would: mouse,
-- keyboard, screenshots, windows, screen recordings and the accessibility
-- tree.
--
--     local cu = sb.computer_use
--     cu:start()
--     cu:wait_until_ready{ timeout = 60 }          -- the four processes run
--     cu.mouse:click(200, 150)
--     cu.keyboard:type("hello")
--     cu.keyboard:hotkey("ctrl+s")
--     local shot = cu.screenshot:take_full_screen()
--     shot:save("screen.png")
--     -- act, then look again once the screen has changed
--     cu.keyboard:press("enter")
--     shot = cu.screenshot:take_full_screen{ changed_since = shot, timeout = 10 }
--     local rec = cu.recording:start("demo")
--     ...
--     cu.recording:stop(rec.id)
--     cu.recording:download(rec.id, "demo.mp4")
--     cu:stop()
--
-- The methods are Python's (`ComputerUse`, `Mouse`, `Keyboard`,
-- `Screenshot`, `Display`, `RecordingService`, `Accessibility`), with its
-- positional arguments, and an options table wherever Python has keyword
-- arguments with defaults (`cu.mouse:click(x, y, "right")` and
-- `cu.mouse:click(x, y, { button = "right", double = true })` both work).
-- Results are plain tables with Python's field names (the wire's camelCase
-- in snake_case), printed like the SDK's other models. The wire format is
-- the toolbox's `/computeruse/*` routes (doc/protocol.md §4.9).
--
-- Beyond the official SDKs: `ComputerUse:wait_until_ready` polls the
-- processes' real status, screenshots have `save`, `bytes`, `dimensions`
-- and `digest`, and every screenshot call takes `changed_since` to return
-- only once the screen differs from an earlier shot.
--
-- Errors: a bad argument raises `DaytonaValidationError` before any
-- request; the toolbox's 400s (a region outside the screen, an unknown
-- format, a scale outside 0.1-1.0, ...) `DaytonaValidationError` with its
-- message; a sandbox without a desktop answers 503, raised as a
-- `DaytonaError` with `status_code` 503 at once (it is not retried: the
-- desktop will not appear by waiting).
local check = require "daytona.check"
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local transport = require "daytona.transport"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"
local fsutil = require "daytona.runtime.fs"

local type, ipairs, select, setmetatable, getmetatable, rawget, rawset, tostring, error, pcall, io, os =
  type, ipairs, select, setmetatable, getmetatable, rawget, rawset, tostring, error, pcall, io, os
local concat = table.concat
local byte = string.byte

local M = {}

--- The processes of the desktop, in the order they start (Daytona's names).
M.PROCESSES = { "xvfb", "xfce4", "x11vnc", "novnc" }

-- an object of one of the classes below, for a sandbox
local function new(class, sb)
  return setmetatable({ _sb = sb }, class)
end

local function class(name)
  local c = {}
  c.__index = c
  c.__name = "daytona.computer_use." .. name
  M[name] = c
  return c
end

local function call(self, opts)
  return self._sb:toolbox(opts)
end

-- a decoded object (or nil for an empty body) as a model named like Python's
local function model(r, name)
  return wire.to_lua(type(r) == "table" and r or {}, name)
end

-- Python's positional optional argument or an options table: `(x, y,
-- "right", true)` and `(x, y, { button = "right", double = true })`.
-- names lists the positional names after the required ones.
local function optargs(f, allowed, names, ...)
  local first = ...
  if type(first) == "table" and getmetatable(first) == nil and select("#", ...) == 1 then
    return check.options(first, f, allowed)
  end
  local o = {}
  for i, n in ipairs(names) do o[n] = (select(i, ...)) end
  return o
end

local function one_of(v, f, arg, set, list)
  if v == nil then return nil end
  if type(v) ~= "string" or not set[v] then
    check.argerror(f, arg, "one of " .. list .. " expected, got " .. (type(v) == "string" and ("%q"):format(v) or type(v)))
  end
  return v
end

local function name_arg(v, f)
  return check.string(v, f, "process_name")
end

---------------------------------------------------------------------------
-- ComputerUse: lifecycle and processes
---------------------------------------------------------------------------

local ComputerUse = class("ComputerUse")
local Mouse = class("Mouse")
local Keyboard = class("Keyboard")
local Screenshot = class("Screenshot")
local Display = class("Display")
local Recording = class("RecordingService")
local Accessibility = class("Accessibility")

--- The computer-use object of a sandbox (made by the Sandbox): `start`,
-- `stop`, the processes, and the sub-objects `mouse`, `keyboard`,
-- `screenshot`, `display`, `recording` and `accessibility`.
-- @param sb Sandbox
-- @return ComputerUse
function M.new(sb)
  local cu = new(ComputerUse, sb)
  cu.mouse = new(Mouse, sb)
  cu.keyboard = new(Keyboard, sb)
  cu.screenshot = new(Screenshot, sb)
  cu.display = new(Display, sb)
  cu.recording = new(Recording, sb)
  cu.accessibility = new(Accessibility, sb)
  return cu
end

local TIMEOUT_OPT = check.set("timeout")

--- Start the desktop: Xvfb, xfce4, x11vnc and noVNC (on port 6080). Returns
-- when the server has started them; `wait_until_ready` waits until they run.
-- @param opts optional `{ timeout = seconds for the request (0 = none, the
--   default) }`
-- @return `{ message, status = { xvfb = { running, pid, priority,
--   auto_restart }, ... } }` (Python's `ComputerUseStartResponse`)
-- @raise DaytonaError with status_code 503 when the sandbox has no desktop
--   (the message says what is missing)
function ComputerUse:start(opts)
  opts = check.options(opts, "start", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "start", nil)
  return model(call(self, { method = "POST", path = "/computeruse/start", idempotent = true,
    timeout = timeout, what = "start computer use" }), "ComputerUseStartResponse")
end

--- Stop the desktop's processes (recordings under way are stopped too).
-- @param opts optional `{ timeout = seconds }`
-- @return `{ message, status = { ... } }` (`ComputerUseStopResponse`)
function ComputerUse:stop(opts)
  opts = check.options(opts, "stop", TIMEOUT_OPT)
  local timeout = check.timeout(opts.timeout, "stop", nil)
  return model(call(self, { method = "POST", path = "/computeruse/stop", idempotent = true,
    timeout = timeout, what = "stop computer use" }), "ComputerUseStopResponse")
end

--- The desktop's overall status.
-- @return `{ status = "active" | "partial" | "inactive" | "error" }`
--   (`ComputerUseStatusResponse`)
function ComputerUse:get_status()
  return model(call(self, { method = "GET", path = "/computeruse/status",
    what = "get computer use status" }), "ComputerUseStatusResponse")
end

--- Whether one process of the desktop runs.
-- @param process_name "xvfb", "xfce4", "x11vnc" or "novnc"
-- @return `{ process_name, running }` (`ProcessStatusResponse`)
-- @raise DaytonaNotFoundError or DaytonaValidationError for an unknown name
function ComputerUse:get_process_status(process_name)
  process_name = name_arg(process_name, "get_process_status")
  return model(call(self, { method = "GET", what = "get process status",
    path = "/computeruse/process/" .. wire.urlencode(process_name) .. "/status" }), "ProcessStatusResponse")
end

--- Restart one process of the desktop.
-- @param process_name string
-- @return `{ message, process_name }` (`ProcessRestartResponse`)
function ComputerUse:restart_process(process_name)
  process_name = name_arg(process_name, "restart_process")
  return model(call(self, { method = "POST", what = "restart process",
    path = "/computeruse/process/" .. wire.urlencode(process_name) .. "/restart" }), "ProcessRestartResponse")
end

--- The output a process of the desktop wrote (its log).
-- @param process_name string
-- @return `{ process_name, logs }` (`ProcessLogsResponse`)
function ComputerUse:get_process_logs(process_name)
  process_name = name_arg(process_name, "get_process_logs")
  return model(call(self, { method = "GET", what = "get process logs",
    path = "/computeruse/process/" .. wire.urlencode(process_name) .. "/logs" }), "ProcessLogsResponse")
end

--- The errors a process of the desktop wrote (its error log).
-- @param process_name string
-- @return `{ process_name, errors }` (`ProcessErrorsResponse`)
function ComputerUse:get_process_errors(process_name)
  process_name = name_arg(process_name, "get_process_errors")
  return model(call(self, { method = "GET", what = "get process errors",
    path = "/computeruse/process/" .. wire.urlencode(process_name) .. "/errors" }), "ProcessErrorsResponse")
end

local READY_OPTS = check.set("timeout", "interval", "processes")

--- Wait until the desktop's processes run, by polling their status (not
-- in the official SDKs, which leave it to a fixed sleep).
--
--     sb.computer_use:start()
--     sb.computer_use:wait_until_ready{ timeout = 60 }
-- @param opts optional `{ timeout = seconds (default 60, 0 = forever),
--   interval = seconds between polls (default 0.2), processes = the names
--   to wait for (default all four, `computer_use.PROCESSES`) }`
-- @return a table name -> `{ process_name, running = true }`
-- @raise DaytonaTimeoutError naming the processes that do not run, with the
--   last lines of their errors; DaytonaError (503) at once when the sandbox
--   has no desktop
function ComputerUse:wait_until_ready(opts)
  local f = "wait_until_ready"
  opts = check.options(opts, f, READY_OPTS)
  local timeout = check.timeout(opts.timeout, f, 60)
  local interval = check.timeout(opts.interval, f, 0.2, "interval")
  local names = opts.processes and check.strlist(opts.processes, f, "processes") or M.PROCESSES
  local deadline = transport.deadline(timeout)
  local ready = {}
  while true do
    local waiting = {}
    for _, name in ipairs(names) do
      if not ready[name] then
        local st = self:get_process_status(name)
        if st.running == true then ready[name] = st else waiting[#waiting + 1] = name end
      end
    end
    if #waiting == 0 then return ready end
    if deadline and transport.now() + interval >= deadline then
      local why = {}
      for _, name in ipairs(waiting) do
        -- the process's own words, when it has any
        local ok, e = pcall(self.get_process_errors, self, name)
        local text = ok and type(e.errors) == "string" and e.errors:gsub("%s+$", ""):sub(-200) or ""
        why[#why + 1] = text ~= "" and (name .. " (" .. text .. ")") or name
      end
      error(errors.DaytonaTimeoutError(("computer use not ready within %g seconds: not running: %s")
        :format(timeout, concat(why, ", ")), { code = "ETIMEDOUT" }), 0)
    end
    scheduler.sleep(interval)
  end
end

---------------------------------------------------------------------------
-- Mouse
---------------------------------------------------------------------------

local BUTTONS = check.set("left", "right", "middle")
local BUTTON_LIST = "'left', 'right', 'middle'"

local function coord(v, f, arg)
  return check.integer(v, f, arg)
end

--- Where the pointer is.
-- @return `{ x, y }` (`MousePositionResponse`)
function Mouse:get_position()
  return model(call(self, { method = "GET", path = "/computeruse/mouse/position",
    what = "get mouse position" }), "MousePositionResponse")
end

--- Move the pointer.
-- @param x integer
-- @param y integer
-- @return `{ x, y }`, the position after the move
function Mouse:move(x, y)
  local f = "move"
  x, y = coord(x, f, "x"), coord(y, f, "y")
  -- moving to a place twice is moving there once: a retry is harmless
  return model(call(self, { method = "POST", path = "/computeruse/mouse/move", json = { x = x, y = y },
    idempotent = true, what = "move mouse" }), "MousePositionResponse")
end

local CLICK_OPTS = check.set("button", "double")

--- Click (move there, press, release).
-- @param x integer
-- @param y integer
-- @param ... Python's `button` ("left", "right" or "middle"; default
--   "left") and `double` (boolean), or one table `{ button =, double = }`
-- @return `{ x, y }` (`MouseClickResponse`)
function Mouse:click(x, y, ...)
  local f = "click"
  x, y = coord(x, f, "x"), coord(y, f, "y")
  local o = optargs(f, CLICK_OPTS, { "button", "double" }, ...)
  return model(call(self, { method = "POST", path = "/computeruse/mouse/click", what = "click mouse", json = {
    x = x, y = y,
    button = one_of(o.button, f, "button", BUTTONS, BUTTON_LIST) or "left",
    double = check.optboolean(o.double, f, "double") or false,
  } }), "MouseClickResponse")
end

local DRAG_OPTS = check.set("button")

--- Drag: press at the start, move to the end, release.
-- @param start_x integer
-- @param start_y integer
-- @param end_x integer
-- @param end_y integer
-- @param ... `button` (default "left") or `{ button = }`
-- @return `{ x, y }` (`MouseDragResponse`)
function Mouse:drag(start_x, start_y, end_x, end_y, ...)
  local f = "drag"
  start_x, start_y = coord(start_x, f, "start_x"), coord(start_y, f, "start_y")
  end_x, end_y = coord(end_x, f, "end_x"), coord(end_y, f, "end_y")
  local o = optargs(f, DRAG_OPTS, { "button" }, ...)
  return model(call(self, { method = "POST", path = "/computeruse/mouse/drag", what = "drag mouse", json = {
    startX = start_x, startY = start_y, endX = end_x, endY = end_y,
    button = one_of(o.button, f, "button", BUTTONS, BUTTON_LIST) or "left",
  } }), "MouseDragResponse")
end

local SCROLL_OPTS = check.set("amount")
local DIRECTIONS = check.set("up", "down")

--- Turn the wheel at a place.
-- @param x integer
-- @param y integer
-- @param direction "up" or "down"
-- @param ... `amount` (clicks of the wheel, default 1) or `{ amount = }`
-- @return true when the server says it scrolled (Python's `bool`)
function Mouse:scroll(x, y, direction, ...)
  local f = "scroll"
  x, y = coord(x, f, "x"), coord(y, f, "y")
  direction = one_of(direction, f, "direction", DIRECTIONS, "'up', 'down'")
  if direction == nil then check.argerror(f, "direction", "'up' or 'down' expected, got nil") end
  local o = optargs(f, SCROLL_OPTS, { "amount" }, ...)
  local r = call(self, { method = "POST", path = "/computeruse/mouse/scroll", what = "scroll mouse", json = {
    x = x, y = y, direction = direction, amount = check.optinteger(o.amount, f, "amount", 1) or 1,
  } })
  return type(r) == "table" and r.success == true
end

---------------------------------------------------------------------------
-- Keyboard
---------------------------------------------------------------------------

local TYPE_OPTS = check.set("delay")

--- Type text, as key presses (Unicode included).
-- @param text string
-- @param ... `delay` (milliseconds between keys) or `{ delay = }`
-- @return nothing
function Keyboard:type(text, ...)
  local f = "type"
  text = check.string(text, f, "text")
  local o = optargs(f, TYPE_OPTS, { "delay" }, ...)
  call(self, { method = "POST", path = "/computeruse/keyboard/type", what = "type text", json = {
    text = text, delay = check.optinteger(o.delay, f, "delay", 0),
  } })
end

--- Press (and release) one key, with modifiers held.
--
--     cu.keyboard:press("enter")
--     cu.keyboard:press("t", { "ctrl", "shift" })
-- @param key a key name ("enter", "escape", "tab", "f5", "a", ...)
-- @param modifiers optional list of "ctrl", "alt", "shift", "cmd" (or
--   `{ modifiers = { ... } }`)
-- @return nothing
function Keyboard:press(key, modifiers)
  local f = "press"
  key = check.string(key, f, "key")
  if type(modifiers) == "table" and modifiers.modifiers ~= nil then
    modifiers = check.options(modifiers, f, check.set("modifiers")).modifiers
  end
  local mods
  if modifiers ~= nil then mods = check.strlist(modifiers, f, "modifiers", true) end
  -- an empty list is left out (cjson would send {}): the field is optional
  if mods and #mods == 0 then mods = nil end
  call(self, { method = "POST", path = "/computeruse/keyboard/key", what = "press key", json = {
    key = key, modifiers = mods,
  } })
end

--- Press a chord: "ctrl+c", "alt+tab", "ctrl+shift+t".
-- @param keys string, keys joined by "+"
-- @return nothing
function Keyboard:hotkey(keys)
  keys = check.string(keys, "hotkey", "keys")
  call(self, { method = "POST", path = "/computeruse/keyboard/hotkey", what = "press hotkey",
    json = { keys = keys } })
end

---------------------------------------------------------------------------
-- Screenshots
---------------------------------------------------------------------------

-- A screenshot: Python's `ScreenshotResponse` fields `screenshot` (the
-- image, base64), `cursor_position` (`{ x, y }`, when the server gives it)
-- and `size_bytes`, with methods to use the picture.
-- @type ScreenshotResponse
local ScreenshotResponse = {}
M.ScreenshotResponse = ScreenshotResponse
local shot_mt = { __index = ScreenshotResponse, __name = "daytona.computer_use.ScreenshotResponse",
  __tostring = function(s)
    return wire.model_text({ screenshot = s.screenshot, cursor_position = s.cursor_position,
      size_bytes = s.size_bytes }, "ScreenshotResponse")
  end }

local function new_shot(r)
  local t = model(r)
  setmetatable(t, nil)
  if type(t.screenshot) ~= "string" then
    error(errors.DaytonaError("screenshot: the server answered without an image", { code = "EPROTO" }), 0)
  end
  if t.cursor_position then t.cursor_position = wire.model(t.cursor_position, "Position") end
  return setmetatable(t, shot_mt)
end

--- The image's bytes (PNG or JPEG), decoded from `screenshot`.
-- @return string
-- @raise DaytonaError when `screenshot` is not base64
function ScreenshotResponse:bytes()
  local b = rawget(self, "_bytes")
  if b then return b end
  local msg
  b, msg = wire.base64_decode(self.screenshot)
  if not b then error(errors.DaytonaError("screenshot: " .. msg, { code = "EINVAL" }), 2) end
  rawset(self, "_bytes", b)
  return b
end

--- The image's format, from its first bytes.
-- @return "png", "jpeg" or nil for anything else
function ScreenshotResponse:format()
  local b = self:bytes()
  if b:sub(1, 8) == "\137PNG\r\n\26\n" then return "png" end
  if b:sub(1, 3) == "\255\216\255" then return "jpeg" end
  return nil
end

local function be16(s, i) local a, b = byte(s, i, i + 1); return a * 256 + b end
local function be32(s, i) local a, b, c, d = byte(s, i, i + 3); return ((a * 256 + b) * 256 + c) * 256 + d end

-- the width and height of a PNG (its IHDR) or a JPEG (its first SOFn)
local function image_size(b)
  if b:sub(1, 8) == "\137PNG\r\n\26\n" and b:sub(13, 16) == "IHDR" and #b >= 24 then
    return be32(b, 17), be32(b, 21)
  end
  if b:sub(1, 2) == "\255\216" then
    local i = 3
    while i + 8 <= #b do
      if byte(b, i) ~= 255 then return nil end
      local m = byte(b, i + 1)
      if m == 255 then i = i + 1                          -- fill byte
      elseif m == 0xD8 or m == 0x01 or (m >= 0xD0 and m <= 0xD7) then i = i + 2
      else
        -- SOF0..SOF15, but C4 (huffman), C8 (reserved), CC (arithmetic) are no frame
        if m >= 0xC0 and m <= 0xCF and m ~= 0xC4 and m ~= 0xC8 and m ~= 0xCC then
          return be16(b, i + 7), be16(b, i + 5)
        end
        i = i + 2 + be16(b, i + 2)
      end
    end
  end
  return nil
end
M._image_size = image_size

--- The image's size in pixels, from its header (a PNG's IHDR, a JPEG's
-- frame header).
-- @return width, height (nil for an image of another format)
function ScreenshotResponse:dimensions()
  return image_size(self:bytes())
end

--- A digest of the image (SHA-256, hex): equal for two shots of the same
-- pixels taken with the same options. `changed_since` compares these.
-- @return string
function ScreenshotResponse:digest()
  local d = rawget(self, "_digest")
  if not d then
    -- of the base64 text: one to one with the bytes, and no decoding needed
    d = core.util.sha256(self.screenshot)
    rawset(self, "_digest", d)
  end
  return d
end

--- Write the image to a local file (replaced if it exists), e.g.
-- `shot:save("screen.png")`.
-- @param path string
-- @return the number of bytes written
-- @raise DaytonaError when the file cannot be written
function ScreenshotResponse:save(path)
  path = check.string(path, "save", "path")
  local bytes = self:bytes()
  -- into a temp file renamed at the end: never half a picture under its name
  local tmp = path .. ".dtlua-part-" .. core.util.hex(core.util.random_bytes(4))
  local fh, msg = io.open(tmp, "wb")
  if not fh then error(errors.DaytonaError("save: cannot write " .. tostring(msg), { code = "EIO" }), 2) end
  local ok, werr = fh:write(bytes)
  local closed, cerr = fh:close()
  if not ok or not closed then
    os.remove(tmp)
    error(errors.DaytonaError("save: cannot write " .. path .. ": " .. tostring(werr or cerr), { code = "EIO" }), 2)
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    error(errors.DaytonaError("save: cannot write " .. path .. ": " .. tostring(rerr), { code = "EIO" }), 2)
  end
  return #bytes
end

-- the region argument: `{ x =, y =, width =, height = }`
local REGION = check.set("x", "y", "width", "height")
local function region_arg(r, f)
  check.options(check.table(r, f, "region"), f, REGION, "region")
  return {
    x = check.integer(r.x, f, "region.x"), y = check.integer(r.y, f, "region.y"),
    width = check.integer(r.width, f, "region.width", 1), height = check.integer(r.height, f, "region.height", 1),
  }
end

local SHOT_OPTS = check.set("show_cursor", "changed_since", "timeout", "interval")
local COMPRESSED_OPTS = check.set("show_cursor", "format", "fmt", "quality", "scale",
  "changed_since", "timeout", "interval")
local FORMATS = check.set("png", "jpeg")

-- A screenshot taken by `get()`, taken again until its digest differs
-- from `changed_since` (a ScreenshotResponse or a digest string) when
-- that is given.
local function take(f, opts, get)
  local since = opts.changed_since
  if since == nil then return new_shot(get()) end
  local prev
  if getmetatable(since) == shot_mt then prev = since:digest()
  elseif type(since) == "string" and since:match("^%x+$") and #since == 64 then prev = since:lower()
  else check.argerror(f, "changed_since", "a screenshot or its digest expected") end
  local timeout = check.timeout(opts.timeout, f, 30)
  local interval = check.timeout(opts.interval, f, 0.25, "interval")
  local deadline = transport.deadline(timeout)
  while true do
    local shot = new_shot(get())
    if shot:digest() ~= prev then return shot end
    if deadline and transport.now() + interval >= deadline then
      error(errors.DaytonaTimeoutError(("%s: the screen did not change within %g seconds"):format(f, timeout),
        { code = "ETIMEDOUT" }), 0)
    end
    scheduler.sleep(interval)
  end
end

local function shot_opts(f, allowed, v)
  if type(v) == "boolean" then return { show_cursor = v } end
  return check.options(v, f, allowed)
end

local function compressed_query(f, o, q)
  local fmt = o.format
  if fmt == nil then fmt = o.fmt end
  q.format = one_of(fmt, f, "format", FORMATS, "'png', 'jpeg'")
  q.quality = check.optinteger(o.quality, f, "quality", 1, 100)
  if o.scale ~= nil then
    if type(o.scale) ~= "number" or o.scale ~= o.scale or o.scale < 0.1 or o.scale > 1 then
      check.argerror(f, "scale", "number in 0.1..1.0 expected, got " .. tostring(o.scale))
    end
    q.scale = o.scale
  end
  return q
end

--- The whole screen, as PNG.
--
--     local shot = cu.screenshot:take_full_screen()
--     shot:save("screen.png")
--     local w, h = shot:dimensions()
--     shot = cu.screenshot:take_full_screen{ changed_since = shot, timeout = 5 }
-- @param opts optional `show_cursor` (boolean, Python's positional
--   argument) or `{ show_cursor = false, changed_since = an earlier
--   screenshot or its digest: take shots until one differs from it,
--   timeout = seconds to wait for that (default 30), interval = seconds
--   between shots (default 0.25) }`
-- @return ScreenshotResponse
-- @raise DaytonaTimeoutError when the screen did not change in time
function Screenshot:take_full_screen(opts)
  local f = "take_full_screen"
  local o = shot_opts(f, SHOT_OPTS, opts)
  local q = { showCursor = check.optboolean(o.show_cursor, f, "show_cursor") or false }
  return take(f, o, function()
    return call(self, { method = "GET", path = "/computeruse/screenshot", query = q, what = "take screenshot" })
  end)
end

--- A region of the screen, as PNG.
-- @param region `{ x =, y =, width =, height = }` (Python's `ScreenshotRegion`)
-- @param opts optional `show_cursor` or a table as for `take_full_screen`
-- @return ScreenshotResponse
-- @raise DaytonaValidationError for a region outside the screen (from the server)
function Screenshot:take_region(region, opts)
  local f = "take_region"
  local r = region_arg(region, f)
  local o = shot_opts(f, SHOT_OPTS, opts)
  local q = { x = r.x, y = r.y, width = r.width, height = r.height,
    showCursor = check.optboolean(o.show_cursor, f, "show_cursor") or false }
  return take(f, o, function()
    return call(self, { method = "GET", path = "/computeruse/screenshot/region", query = q,
      what = "take region screenshot" })
  end)
end

--- The whole screen, compressed: PNG or JPEG, scaled.
--
--     local shot = cu.screenshot:take_compressed{ format = "jpeg", quality = 70, scale = 0.5 }
-- @param opts optional Python's `ScreenshotOptions` as a table: `{ format =
--   "png" (default) | "jpeg" (also `fmt`), quality = 1..100 (JPEG, default
--   85), scale = 0.1..1.0 (default 1.0), show_cursor = false }`, plus
--   `changed_since`, `timeout`, `interval` as for `take_full_screen`
-- @return ScreenshotResponse
function Screenshot:take_compressed(opts)
  local f = "take_compressed"
  local o = check.options(opts, f, COMPRESSED_OPTS)
  local q = compressed_query(f, o, { showCursor = check.optboolean(o.show_cursor, f, "show_cursor") or false })
  return take(f, o, function()
    return call(self, { method = "GET", path = "/computeruse/screenshot/compressed", query = q,
      what = "take compressed screenshot" })
  end)
end

--- A region of the screen, compressed.
-- @param region `{ x =, y =, width =, height = }`
-- @param opts optional, as for `take_compressed`
-- @return ScreenshotResponse
function Screenshot:take_compressed_region(region, opts)
  local f = "take_compressed_region"
  local r = region_arg(region, f)
  local o = check.options(opts, f, COMPRESSED_OPTS)
  local q = compressed_query(f, o, { x = r.x, y = r.y, width = r.width, height = r.height,
    showCursor = check.optboolean(o.show_cursor, f, "show_cursor") or false })
  return take(f, o, function()
    return call(self, { method = "GET", path = "/computeruse/screenshot/region/compressed", query = q,
      what = "take compressed region screenshot" })
  end)
end

---------------------------------------------------------------------------
-- Display
---------------------------------------------------------------------------

local function list_of(r, key, name)
  local t = model(r, name)
  local out = {}
  for i, x in ipairs(type(t[key]) == "table" and t[key] or {}) do out[i] = x end
  t[key] = setmetatable(out, nil)
  return t
end

--- The displays (screens) of the desktop.
-- @return `{ displays = { { id, x, y, width, height, is_active }, ... } }`
--   (`DisplayInfoResponse`)
function Display:get_info()
  return list_of(call(self, { method = "GET", path = "/computeruse/display/info", what = "get display info" }),
    "displays", "DisplayInfoResponse")
end

--- The open windows.
-- @return `{ windows = { { id, title, x, y, width, height, is_active }, ... } }`
--   (`WindowsResponse`)
function Display:get_windows()
  return list_of(call(self, { method = "GET", path = "/computeruse/display/windows", what = "get windows" }),
    "windows", "WindowsResponse")
end

---------------------------------------------------------------------------
-- Recordings
---------------------------------------------------------------------------

local function rec_id(v, f)
  return check.id(v, f, "recording_id")
end

--- Start recording the screen (ffmpeg, into the sandbox).
-- @param label optional string, part of the file's name
-- @return Recording `{ id, file_name, file_path, start_time, status =
--   "recording", ... }`
function Recording:start(label)
  label = check.optstring(label, "start", "label")
  return model(call(self, { method = "POST", path = "/computeruse/recordings/start", json = { label = label },
    what = "start recording" }), "Recording")
end

--- Stop a recording.
-- @param recording_id the id (or the Recording)
-- @return Recording with `status` "completed" (or "failed"), `end_time`,
--   `duration_seconds`, `size_bytes`
function Recording:stop(recording_id)
  recording_id = rec_id(recording_id, "stop")
  return model(call(self, { method = "POST", path = "/computeruse/recordings/stop", json = { id = recording_id },
    idempotent = true, what = "stop recording" }), "Recording")
end

--- Every recording, under way or done.
-- @return `{ recordings = { Recording, ... } }` (`ListRecordingsResponse`)
function Recording:list()
  return list_of(call(self, { method = "GET", path = "/computeruse/recordings", what = "list recordings" }),
    "recordings", "ListRecordingsResponse")
end

--- One recording.
-- @param recording_id the id (or the Recording)
-- @return Recording
-- @raise DaytonaNotFoundError
function Recording:get(recording_id)
  recording_id = rec_id(recording_id, "get")
  return model(call(self, { method = "GET", path = "/computeruse/recordings/" .. wire.urlencode(recording_id),
    what = "get recording" }), "Recording")
end

--- Delete a recording (its file too).
-- @param recording_id the id (or the Recording)
-- @return nothing
-- @raise DaytonaValidationError while it is still recording; DaytonaNotFoundError
function Recording:delete(recording_id)
  recording_id = rec_id(recording_id, "delete")
  call(self, { method = "DELETE", path = "/computeruse/recordings/" .. wire.urlencode(recording_id),
    what = "delete recording" })
end

local DOWNLOAD_OPTS = check.set("timeout")

--- Download a recording's video, streamed to a local file (written beside
-- it and renamed at the end, so a failed download leaves nothing; parent
-- directories are created).
-- @param recording_id the id (or the Recording)
-- @param local_path string
-- @param opts optional `{ timeout = seconds (default 1800, 0 = none) }`
-- @return the number of bytes written
-- @raise DaytonaNotFoundError; DaytonaError when the file cannot be written
function Recording:download(recording_id, local_path, opts)
  local f = "download"
  recording_id = rec_id(recording_id, f)
  local_path = check.string(local_path, f, "local_path")
  opts = check.options(opts, f, DOWNLOAD_OPTS)
  local timeout = check.timeout(opts.timeout, f, 1800)
  -- the parent directories, made without a shell (as fs downloads make them)
  local dir = local_path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    local ok, msg = fsutil.mkdirs(dir, 511)
    if not ok then
      error(errors.DaytonaError(f .. ": cannot make " .. tostring(msg), { code = "EIO" }), 0)
    end
  end
  local s <close> = call(self, { method = "GET", stream = true, raw = true, timeout = timeout,
    headers = { Accept = "application/octet-stream" }, what = "download recording",
    path = "/computeruse/recordings/" .. wire.urlencode(recording_id) .. "/download" })
  local tmp = local_path .. ".dtlua-part-" .. core.util.hex(core.util.random_bytes(4))
  local fh, msg = io.open(tmp, "wb")
  if not fh then error(errors.DaytonaError(f .. ": cannot write " .. tostring(msg), { code = "EIO" }), 0) end
  local n = 0
  local ok, err = pcall(function()
    for chunk in s:chunks() do
      local w, e = fh:write(chunk)
      if not w then error(errors.DaytonaError(f .. ": cannot write " .. local_path .. ": " .. tostring(e),
        { code = "EIO" }), 0) end
      n = n + #chunk
    end
  end)
  local closed, cerr = fh:close()
  if ok and not closed then
    ok, err = false, errors.DaytonaError(f .. ": cannot write " .. local_path .. ": " .. tostring(cerr), { code = "EIO" })
  end
  if ok then
    local renamed, rerr = os.rename(tmp, local_path)
    if not renamed then
      ok, err = false, errors.DaytonaError(f .. ": cannot write " .. local_path .. ": " .. tostring(rerr), { code = "EIO" })
    end
  end
  if not ok then
    os.remove(tmp)
    error(err, 0)
  end
  return n
end

---------------------------------------------------------------------------
-- Accessibility (AT-SPI)
---------------------------------------------------------------------------

local SCOPES = check.set("focused", "pid", "all")
local SCOPE_LIST = "'focused', 'pid', 'all'"
local NAME_MATCH = check.set("exact", "substring", "regex")

-- nodes are models; their children too
local function node(n)
  if type(n) ~= "table" then return n end
  if type(n.children) == "table" then
    for i, c in ipairs(n.children) do n.children[i] = node(c) end
  end
  if type(n.bounds) == "table" then wire.model(n.bounds, "Bounds") end
  return wire.model(n, "AccessibilityNode")
end

local function plain_tree(r, name)
  local t = wire.to_lua(type(r) == "table" and r or {})
  setmetatable(t, nil)
  local function strip(n)
    if type(n) ~= "table" then return end
    setmetatable(n, nil)
    if type(n.bounds) == "table" then setmetatable(n.bounds, nil) end
    for _, c in ipairs(type(n.children) == "table" and n.children or {}) do strip(c) end
  end
  if t.root then strip(t.root); t.root = node(t.root) end
  if type(t.matches) == "table" then
    setmetatable(t.matches, nil)
    for i, m in ipairs(t.matches) do strip(m); t.matches[i] = node(m) end
  end
  return wire.model(t, name)
end

local TREE_OPTS = check.set("scope", "pid", "max_depth")

--- The accessibility tree of the desktop's applications (AT-SPI). An
-- application that exposes no accessibility data gives an empty tree.
--
--     local tree = cu.accessibility:get_tree{ scope = "all", max_depth = 3 }
-- @param ... Python's `scope`, `pid`, `max_depth`, or one table
--   `{ scope = "focused" (default) | "pid" | "all", pid = (with scope
--   "pid"), max_depth = -1 (unbounded) | 0 (root only) | n }`
-- @return `{ root = node, truncated }` where a node is `{ id, role, name,
--   description, bounds = { x, y, width, height }, states = { ... },
--   actions = { ... }, children = { node, ... } }`
function Accessibility:get_tree(...)
  local f = "get_tree"
  local o = optargs(f, TREE_OPTS, { "scope", "pid", "max_depth" }, ...)
  local q = {
    scope = one_of(o.scope, f, "scope", SCOPES, SCOPE_LIST),
    pid = check.optinteger(o.pid, f, "pid", 1),
    maxDepth = check.optinteger(o.max_depth, f, "max_depth", -1),
  }
  if q.scope == "pid" and q.pid == nil then check.argerror(f, "pid", "an integer expected with scope 'pid'") end
  return plain_tree(call(self, { method = "GET", path = "/computeruse/a11y/tree", query = q,
    what = "get accessibility tree" }), "AccessibilityTreeResponse")
end

local FIND_OPTS = check.set("scope", "pid", "role", "name", "name_match", "states", "limit")

--- Find accessibility nodes.
--
--     local r = cu.accessibility:find_nodes{ scope = "all", role = "push button", name = "OK" }
--     for _, n in ipairs(r.matches) do print(n.id, n.name) end
-- @param opts optional `{ scope = "focused" | "pid" | "all", pid =, role =,
--   name =, name_match = "exact" | "substring" | "regex", states = { ... },
--   limit = }`
-- @return `{ matches = { node, ... }, truncated }`
function Accessibility:find_nodes(opts)
  local f = "find_nodes"
  local o = check.options(opts, f, FIND_OPTS)
  local body = {
    scope = one_of(o.scope, f, "scope", SCOPES, SCOPE_LIST),
    pid = check.optinteger(o.pid, f, "pid", 1),
    role = check.optstring(o.role, f, "role"),
    name = check.optstring(o.name, f, "name", true),
    nameMatch = one_of(o.name_match, f, "name_match", NAME_MATCH, "'exact', 'substring', 'regex'"),
    states = o.states ~= nil and check.strlist(o.states, f, "states") or nil,
    limit = check.optinteger(o.limit, f, "limit", 1),
  }
  if body.scope == "pid" and body.pid == nil then check.argerror(f, "pid", "an integer expected with scope 'pid'") end
  return plain_tree(call(self, { method = "POST", path = "/computeruse/a11y/find", json = body, idempotent = true,
    what = "find accessibility nodes" }), "AccessibilityNodesResponse")
end

local function node_id(v, f)
  return check.id(v, f, "id")
end

--- Give a node the keyboard focus.
-- @param id the node's id (or the node)
-- @return nothing
function Accessibility:focus_node(id)
  id = node_id(id, "focus_node")
  call(self, { method = "POST", path = "/computeruse/a11y/node/focus", json = { id = id }, idempotent = true,
    what = "focus accessibility node" })
end

--- Run a node's action (its first one unless named).
-- @param id the node's id (or the node)
-- @param action optional action name ("click", "press", ...)
-- @return nothing
function Accessibility:invoke_node(id, action)
  id = node_id(id, "invoke_node")
  action = check.optstring(action, "invoke_node", "action")
  call(self, { method = "POST", path = "/computeruse/a11y/node/invoke", json = { id = id, action = action },
    what = "invoke accessibility node" })
end

--- Set a node's value (a text field's text, a slider's number).
-- @param id the node's id (or the node)
-- @param value string
-- @return nothing
function Accessibility:set_node_value(id, value)
  id = node_id(id, "set_node_value")
  value = check.string(value, "set_node_value", "value", true)
  call(self, { method = "POST", path = "/computeruse/a11y/node/value", json = { id = id, value = value },
    idempotent = true, what = "set accessibility node value" })
end

-- a call with '.' instead of ':' says so
check.methods(ComputerUse, "computer_use")
check.methods(Mouse, "mouse")
check.methods(Keyboard, "keyboard")
check.methods(Screenshot, "screenshot")
check.methods(Display, "display")
check.methods(Recording, "recording")
check.methods(Accessibility, "accessibility")
check.methods(ScreenshotResponse, "shot", shot_mt)

return M
