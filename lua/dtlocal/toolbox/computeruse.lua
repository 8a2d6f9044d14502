--- dtlocal.toolbox.computeruse: the /computeruse/* routes (doc/protocol.md
-- §4.9; doc/dtlocal.md "Computer Use").
--
-- Lifecycle and process control go to the supervisor (dtlocal.toolbox.
-- desktop); mouse, keyboard, screenshots, display and windows to the
-- core's X11 part (daytona.core.x11: XTest input, X image capture encoded
-- with libpng/libjpeg-turbo), loaded on first use with one connection to
-- the display kept open; accessibility to python/dtlua_atspi.py (AT-SPI);
-- recordings to dtlocal.toolbox.recordings.
--
-- Errors: a missing program or a desktop that cannot start is 503 naming
-- the cause (the Debian package when a program is missing); a route used
-- while the display is not running is 503 saying so; every bad field is a
-- 400 naming it.
local core = require "daytona.core"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local desktop = require "dtlocal.toolbox.desktop"
local proc = require "dtlocal.toolbox.proc"
local scheduler = require "daytona.runtime.scheduler"

local json = http.json
local raise = http.raise
local util = core.util
local ipairs, tostring, tonumber, type, table, string, math, pcall, require, utf8 =
  ipairs, tostring, tonumber, type, table, string, math, pcall, require, utf8

local M = {}

local function bad(msg)
  raise(400, msg, "BAD_REQUEST")
end

local function field(name, what)
  raise(400, ("invalid request body: field '%s' %s"):format(name, what), "INVALID_REQUEST_BODY")
end

local function query_error(name, what)
  raise(400, ("query parameter '%s' %s"):format(name, what), "BAD_REQUEST")
end

---------------------------------------------------------------------------
-- base64 (screenshots go out as base64 inside JSON): 12 bits per lookup
---------------------------------------------------------------------------

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local PAIRS = {}
for i = 0, 4095 do
  local a, b = (i >> 6) + 1, (i & 63) + 1
  PAIRS[i] = B64:sub(a, a) .. B64:sub(b, b)
end

-- the last 0..11 bytes, 3 at a time, with padding
local function base64_tail(s, from)
  local out, len = {}, #s
  local byte = string.byte
  local i = from
  while i + 2 <= len do
    local a, b, c = byte(s, i, i + 2)
    local v = (a << 16) | (b << 8) | c
    out[#out + 1] = PAIRS[v >> 12] .. PAIRS[v & 4095]
    i = i + 3
  end
  local rest = len - i + 1
  if rest == 1 then
    local v = byte(s, len) << 16
    out[#out + 1] = PAIRS[v >> 12] .. "=="
  elseif rest == 2 then
    local a, b = byte(s, len - 1, len)
    local v = (a << 16) | (b << 8)
    out[#out + 1] = PAIRS[v >> 12] .. PAIRS[v & 4095]:sub(1, 1) .. "="
  end
  return table.concat(out)
end

-- 12 bytes (four 24-bit groups) per step: a 1 MB PNG in about 16 ms
local function base64(s)
  local out, n, len = {}, 0, #s
  local unpack = string.unpack
  local full = len - len % 12
  for i = 1, full, 12 do
    local a, b, c, d = unpack(">I3I3I3I3", s, i)
    n = n + 1
    out[n] = PAIRS[a >> 12] .. PAIRS[a & 4095] .. PAIRS[b >> 12] .. PAIRS[b & 4095]
          .. PAIRS[c >> 12] .. PAIRS[c & 4095] .. PAIRS[d >> 12] .. PAIRS[d & 4095]
  end
  out[n + 1] = base64_tail(s, full + 1)
  return table.concat(out)
end
M.base64 = base64

---------------------------------------------------------------------------
-- The display connection
---------------------------------------------------------------------------

local x11mod

local function x11()
  if x11mod == nil then
    local ok, m = pcall(require, "daytona.core.x11")
    x11mod = ok and m or false
    M.x11_error = not ok and tostring(m):match("^[^\n]*") or nil
  end
  if not x11mod then
    raise(503, "this dtlocal was built without its X11 part (daytona.core.x11: libx11-dev, "
      .. "libxtst-dev, libxfixes-dev, libpng-dev, libjpeg62-turbo-dev; `make deps`, then rebuild): "
      .. tostring(M.x11_error), "SERVICE_UNAVAILABLE")
  end
  return x11mod
end

-- The open display, opened when needed. After an X failure the connection
-- is dropped, so the next request opens a new one (the X server may have
-- been restarted).
local function display(app)
  local d = app.x11_display
  if d then return d end
  if not desktop.get(app):is_running("xvfb") then
    raise(503, "the desktop is not running: POST /computeruse/start first", "SERVICE_UNAVAILABLE")
  end
  local mod = x11()
  local msg
  d, msg = mod.open(desktop.DISPLAY)
  if not d then
    raise(503, ("cannot connect to the display %s: %s"):format(desktop.DISPLAY, tostring(msg)),
          "SERVICE_UNAVAILABLE")
  end
  app.x11_display = d
  return d
end

-- Call d[method](d, ...) and handle an operational failure (nil, msg,
-- code [, { field = }]): a lost connection drops the display (503); EINVAL
-- is a 400 naming the field (`fields` maps the part's argument names to
-- the request's, `on_fail(msg, field)` may raise its own); the rest a 500
-- naming the X error.
local function xcall(app, method, fields, on_fail, ...)
  -- before any X call, opening the connection included (its handshake
  -- would wait for the server too)
  if desktop.get(app):x_stopped() then
    raise(503, "the X server (xvfb) is stopped (SIGSTOP): continue it (SIGCONT) or restart it",
          "SERVICE_UNAVAILABLE")
  end
  local d = display(app)
  local r = table.pack(pcall(d[method], d, ...))
  if r[1] and r[2] == nil and r[4] == "ECONNRESET" then
    -- the X server went away since the connection was made (xvfb restarted
    -- by the supervisor): once more on a new connection
    app.x11_display = nil
    pcall(d.close, d)
    d = display(app)
    r = table.pack(pcall(d[method], d, ...))
  end
  if not r[1] then
    -- a raised error: wrong argument types, a bug of ours
    error(("X11 %s: %s"):format(method, tostring(r[2])), 0)
  end
  if r[2] == nil and r.n >= 3 then
    local msg, code, extra = r[3], r[4], r[5]
    if code == "ECONNRESET" then
      app.x11_display = nil
      pcall(d.close, d)
      raise(503, ("the connection to the display was lost (%s): is xvfb running?"):format(tostring(msg)),
            "SERVICE_UNAVAILABLE")
    end
    if code == "EINVAL" then
      local f = type(extra) == "table" and extra.field or nil
      f = f and fields and fields[f] or f
      if on_fail then on_fail(msg, f) end
      if f then field(f, tostring(msg)) end
      bad(tostring(msg))
    end
    if code == "ENOENT" then raise(404, tostring(msg), "NOT_FOUND") end
    raise(500, ("X11 %s failed (%s): %s"):format(method, tostring(code), tostring(msg)))
  end
  return table.unpack(r, 2, r.n)
end

-- The screen's size: d:screen() gives a table or two numbers.
local function screen_size(app)
  local a, b = xcall(app, "screen")
  if type(a) == "table" then return a.width, a.height end
  return a, b
end

local function pointer(app)
  local a, b = xcall(app, "pointer")
  if type(a) == "table" then return a.x, a.y end
  return a, b
end

---------------------------------------------------------------------------
-- Lifecycle and process control
---------------------------------------------------------------------------

local function process_name(ctx)
  local name = ctx.params.name
  if not desktop.SPECS[name] then
    raise(400, ("unknown process '%s' (processName must be one of xvfb, xfce4, x11vnc, novnc)")
      :format(tostring(name)), "BAD_REQUEST")
  end
  return name
end

function M.start(ctx)
  local d = desktop.get(ctx.app)
  local ok, err, status = d:start()
  if not ok then
    raise(status or 503, "failed to start the computer-use processes: " .. tostring(err),
          status == 409 and "CONFLICT" or "SERVICE_UNAVAILABLE")
  end
  return 200, { message = "Computer use processes started successfully", status = d:status() }
end

function M.stop(ctx)
  local d = desktop.get(ctx.app)
  local disp = ctx.app.x11_display
  ctx.app.x11_display = nil
  if disp then pcall(disp.close, disp) end
  require("dtlocal.toolbox.recordings").stop_all(ctx.app)
  d:stop()
  return 200, { message = "Computer use processes stopped successfully", status = d:status() }
end

function M.status(ctx)
  return 200, { status = desktop.get(ctx.app):overall() }
end

function M.process_status(ctx)
  local name = process_name(ctx)
  return 200, { processName = name, running = desktop.get(ctx.app):is_running(name) }
end

function M.process_restart(ctx)
  local name = process_name(ctx)
  local ok, err, status = desktop.get(ctx.app):restart(name)
  if name == "xvfb" then ctx.app.x11_display = nil end
  if not ok then
    raise(status or 503, ("failed to restart %s: %s"):format(name, tostring(err)),
          status == 409 and "CONFLICT" or "SERVICE_UNAVAILABLE")
  end
  return 200, { message = ("Process %s restarted successfully"):format(name), processName = name }
end

function M.process_logs(ctx)
  local name = process_name(ctx)
  return 200, { processName = name, logs = desktop.get(ctx.app):logs(name) }
end

function M.process_errors(ctx)
  local name = process_name(ctx)
  return 200, { processName = name, errors = desktop.get(ctx.app):errors(name) }
end

---------------------------------------------------------------------------
-- Screenshots
---------------------------------------------------------------------------

local function q_bool(q, name, alt)
  local v = q[name]
  if v == nil and alt then v, name = q[alt], alt end
  if v == nil or v == "" then return false end
  if v == "true" or v == "1" then return true end
  if v == "false" or v == "0" then return false end
  query_error(name, "must be true or false")
end

local function q_int(q, name, required)
  local v = q[name]
  if v == nil or v == "" then
    if required then query_error(name, "is required") end
    return nil
  end
  local n = v:match("^%-?%d+$") and math.tointeger(tonumber(v))
  if not n then query_error(name, "must be an integer") end
  return n
end

local function q_number(q, name)
  local v = q[name]
  if v == nil or v == "" then return nil end
  local n = v:match("^%d*%.?%d+$") and tonumber(v) or v:match("^%d+%.$") and tonumber(v)
  if not n then query_error(name, "must be a number") end
  return n
end

-- Screenshot options from the query: region (when `region`), compression
-- (when `compressed`), cursor.
local function screenshot_opts(ctx, region, compressed)
  local q = ctx.query
  local o = { cursor = q_bool(q, "showCursor", "show_cursor"), format = "png" }
  local sw, sh
  if region then
    local x, y = q_int(q, "x", true), q_int(q, "y", true)
    local w, h = q_int(q, "width", true), q_int(q, "height", true)
    if x < 0 then query_error("x", "must not be negative") end
    if y < 0 then query_error("y", "must not be negative") end
    if w <= 0 then query_error("width", "must be greater than 0") end
    if h <= 0 then query_error("height", "must be greater than 0") end
    sw, sh = screen_size(ctx.app)
    if x >= sw then query_error("x", ("must be less than the screen's width (%d)"):format(sw)) end
    if y >= sh then query_error("y", ("must be less than the screen's height (%d)"):format(sh)) end
    if x + w > sw then
      query_error("width", ("reaches beyond the screen: x + width = %d > %d"):format(x + w, sw))
    end
    if y + h > sh then
      query_error("height", ("reaches beyond the screen: y + height = %d > %d"):format(y + h, sh))
    end
    o.x, o.y, o.width, o.height = x, y, w, h
  end
  if compressed then
    local f = q.format
    if f ~= nil and f ~= "" then
      f = f:lower()
      if f == "jpg" then f = "jpeg" end
      if f ~= "png" and f ~= "jpeg" then query_error("format", "must be png or jpeg") end
      o.format = f
    end
    local quality = q_int(q, "quality")
    if quality and (quality < 1 or quality > 100) then query_error("quality", "must be between 1 and 100") end
    o.quality = quality or 85
    local scale = q_number(q, "scale")
    if scale and (scale < 0.1 or scale > 1.0) then query_error("scale", "must be between 0.1 and 1.0") end
    o.scale = scale or 1.0
  end
  return o
end

local function screenshot(region, compressed)
  return function(ctx)
    local o = screenshot_opts(ctx, region, compressed)
    local bytes = xcall(ctx.app, "capture", nil, function(msg, f)
      if f then query_error(f, tostring(msg)) end
    end, o)
    local body = { screenshot = base64(bytes), sizeBytes = #bytes }
    if o.cursor then
      local x, y = pointer(ctx.app)
      body.cursorPosition = { x = x, y = y }
    end
    return 200, body
  end
end

M.screenshot = screenshot(false, false)
M.screenshot_region = screenshot(true, false)
M.screenshot_compressed = screenshot(false, true)
M.screenshot_region_compressed = screenshot(true, true)

---------------------------------------------------------------------------
-- Mouse and keyboard
---------------------------------------------------------------------------

local BUTTONS = { left = 1, middle = 2, right = 3 }

-- move, click and drag answer where the pointer was sent, as Daytona's do:
-- where it is can lag behind while a client holds a synchronous grab (a
-- window manager's click to focus freezes the pointer until it lets go);
-- GET /mouse/position reads the server's.

-- A coordinate field: a required integer on the screen.
local function coord(app, body, name, limit_of)
  local v = common.int(body, name)
  if v == nil then field(name, "is required") end
  local w, h = screen_size(app)
  local max = limit_of == "x" and w or h
  if v < 0 or v >= max then field(name, ("must be within the screen (0..%d)"):format(max - 1)) end
  return v
end

local function button(body)
  local b = common.str(body, "button")
  if b == nil or b == "" then return "left" end
  if not BUTTONS[b] then field("button", "must be left, right or middle") end
  return b
end

function M.mouse_position(ctx)
  local x, y = pointer(ctx.app)
  return 200, { x = x, y = y }
end

function M.mouse_move(ctx)
  local body = ctx:json_object(true)
  local x, y = coord(ctx.app, body, "x", "x"), coord(ctx.app, body, "y", "y")
  xcall(ctx.app, "move", nil, nil, x, y)
  return 200, { x = x, y = y }
end

function M.mouse_click(ctx)
  local body = ctx:json_object(true)
  local x, y = coord(ctx.app, body, "x", "x"), coord(ctx.app, body, "y", "y")
  local b = button(body)
  local double = common.bool(body, "double") or false
  xcall(ctx.app, "click", nil, nil, x, y, BUTTONS[b], double)
  return 200, { x = x, y = y }
end

function M.mouse_drag(ctx)
  local body = ctx:json_object(true)
  local x1, y1 = coord(ctx.app, body, "startX", "x"), coord(ctx.app, body, "startY", "y")
  local x2, y2 = coord(ctx.app, body, "endX", "x"), coord(ctx.app, body, "endY", "y")
  xcall(ctx.app, "drag", { x1 = "startX", y1 = "startY", x2 = "endX", y2 = "endY" }, nil,
        x1, y1, x2, y2, BUTTONS[button(body)])
  return 200, { x = x2, y = y2 }
end

function M.mouse_scroll(ctx)
  local body = ctx:json_object(true)
  local x, y = coord(ctx.app, body, "x", "x"), coord(ctx.app, body, "y", "y")
  local dir = common.str(body, "direction", true)
  if dir ~= "up" and dir ~= "down" then field("direction", "must be up or down") end
  local amount = common.int(body, "amount", 0, 100) or 1
  if amount > 0 then xcall(ctx.app, "scroll", nil, nil, x, y, dir, amount) end
  return 200, { success = true }
end

local MAX_TEXT = 64 * 1024

function M.keyboard_type(ctx)
  local body = ctx:json_object(true)
  local text = common.str(body, "text", true)
  if #text > MAX_TEXT then field("text", ("must be at most %d bytes"):format(MAX_TEXT)) end
  if not utf8.len(text) then field("text", "must be valid UTF-8") end
  local delay = common.int(body, "delay", 0, 10000) or 0
  local function fail(msg) field("text", "cannot be typed: " .. tostring(msg)) end
  local fields = { text = "text" }
  if delay == 0 then
    xcall(ctx.app, "type", fields, fail, text, 0)
  else
    -- one character at a time, the pause on our loop rather than in C,
    -- so a slow typist does not stall the daemon
    local first = true
    for _, c in utf8.codes(text) do
      if not first then scheduler.sleep(delay / 1000) end
      first = false
      xcall(ctx.app, "type", fields, fail, utf8.char(c), 0)
    end
  end
  return 200, {}
end

local MODIFIERS = { ctrl = true, alt = true, shift = true, cmd = true, super = true, meta = true,
                    win = true, control = true }

function M.keyboard_key(ctx)
  local body = ctx:json_object(true)
  local key = common.str(body, "key", true)
  local mods = common.str_list(body, "modifiers") or {}
  for i, m in ipairs(mods) do
    if not MODIFIERS[m:lower()] then
      field("modifiers", ("item %d (%q) must be one of ctrl, alt, shift, cmd"):format(i - 1, m))
    end
  end
  xcall(ctx.app, "press", nil, function(msg, f)
    field(f == "modifiers" and "modifiers" or "key", tostring(msg))
  end, key, mods)
  return 200, {}
end

function M.keyboard_hotkey(ctx)
  local body = ctx:json_object(true)
  local keys = common.str(body, "keys", true)
  xcall(ctx.app, "hotkey", nil, function(msg) field("keys", tostring(msg)) end, keys)
  return 200, {}
end

---------------------------------------------------------------------------
-- Display and windows
---------------------------------------------------------------------------

function M.display_info(ctx)
  local w, h = screen_size(ctx.app)
  return 200, { displays = json.array { { id = 0, x = 0, y = 0, width = w, height = h, isActive = true } } }
end

function M.display_windows(ctx)
  local list = xcall(ctx.app, "windows")
  local out = json.array()
  for _, win in ipairs(list or {}) do
    out[#out + 1] = { id = win.id, title = win.title or "", x = win.x, y = win.y,
                      width = win.width, height = win.height, isActive = win.active and true or false }
  end
  return 200, { windows = out }
end

---------------------------------------------------------------------------
-- Accessibility (python/dtlua_atspi.py)
---------------------------------------------------------------------------

local ATSPI = common.python_path("dtlua_atspi.py")

local A11Y_TIMEOUT = 30

local function atspi(ctx, req)
  if not ATSPI then
    raise(503, "this installation lacks python/dtlua_atspi.py beside dtlocal/toolbox/computeruse.lua",
          "SERVICE_UNAVAILABLE")
  end
  if not desktop.get(ctx.app):is_running("xfce4") then
    raise(503, "the desktop is not running (its session carries the accessibility bus): "
      .. "POST /computeruse/start first", "SERVICE_UNAVAILABLE")
  end
  -- Debian's python3 (python3-gi, gir1.2-atspi-2.0), not whatever python3
  -- comes first on the sandbox's PATH (a virtualenv has no gi)
  local python = proc.which("/usr/bin/python3") or "python3"
  local r, msg = proc.run({ python, ATSPI }, { input = json.encode(req), env = desktop.get(ctx.app):env(),
                                                  timeout = A11Y_TIMEOUT, merge = false })
  if not r then raise(503, "cannot run python3 for accessibility: " .. tostring(msg), "SERVICE_UNAVAILABLE") end
  local out = json.decode(r.output or "")
  if type(out) ~= "table" then
    raise(500, ("the accessibility helper failed (exit %s): %s"):format(tostring(r.exit_code),
      ((r.stderr or "") .. (r.output or "")):sub(-800)))
  end
  if out.error then
    local status = math.tointeger(out.status) or 500
    raise(status, tostring(out.error), status == 404 and "NOT_FOUND" or nil)
  end
  return out.result
end

local SCOPES = { focused = true, pid = true, all = true }

local function scope_of(scope, pid, fieldfn)
  scope = scope or "focused"
  if not SCOPES[scope] then fieldfn("scope", "must be focused, pid or all") end
  if scope == "pid" and not pid then fieldfn("pid", "is required when scope is pid") end
  return scope
end

-- A11yNode arrays must go out as [] even when empty.
local function arrays(node)
  if type(node) ~= "table" then return node end
  node.states = json.array(node.states or {})
  if node.actions then node.actions = json.array(node.actions) end
  if node.children then
    node.children = json.array(node.children)
    for _, c in ipairs(node.children) do arrays(c) end
  end
  return node
end

-- The focused scope as the X server knows it: the pid of the active
-- window (nil when none, or its client set no _NET_WM_PID). AT-SPI's own
-- "active" state is also set on windows nobody sees (xfwm4's 5x5 helper
-- window off screen), so it only decides when X cannot.
local function focused_pid(ctx)
  local ok, id = pcall(xcall, ctx.app, "active_window")
  if not ok or not id then return nil end
  local ok2, list = pcall(xcall, ctx.app, "windows")
  if not ok2 then return nil end
  for _, w in ipairs(list or {}) do
    if w.id == id then return w.pid end
  end
  return nil
end

-- The helper's request for a scope: focused becomes pid when X names one.
local function scoped(ctx, scope, pid)
  if scope == "focused" then
    local fpid = focused_pid(ctx)
    if fpid then return "pid", fpid end
  end
  return scope, pid
end

function M.a11y_tree(ctx)
  local q = ctx.query
  local pid = q_int(q, "pid")
  if pid and pid <= 0 then query_error("pid", "must be a positive integer") end
  local depth = q_int(q, "maxDepth") or -1
  if depth < -1 then query_error("maxDepth", "must be -1 (unbounded) or at least 0") end
  local scope = scope_of(q.scope ~= "" and q.scope or nil, pid, query_error)
  local s2, p2 = scoped(ctx, scope, pid)
  local res = atspi(ctx, { op = "tree", scope = s2, pid = p2, maxDepth = depth })
  return 200, { root = arrays(res.root), truncated = res.truncated and true or false }
end

local NAME_MATCH = { exact = true, substring = true, regex = true }

function M.a11y_find(ctx)
  local body = ctx:json_object(true)
  local pid = common.int(body, "pid", 1, 1 << 31)
  local scope = scope_of(common.str(body, "scope"), pid, field)
  local how = common.str(body, "nameMatch")
  if how and how ~= "" and not NAME_MATCH[how] then field("nameMatch", "must be exact, substring or regex") end
  local limit = common.int(body, "limit", 0, 10000)
  local s2, p2 = scoped(ctx, scope, pid)
  local res = atspi(ctx, { op = "find", scope = s2, pid = p2, role = common.str(body, "role"),
                           name = common.str(body, "name"), nameMatch = how ~= "" and how or nil,
                           states = common.str_list(body, "states"),
                           limit = (limit and limit > 0) and limit or nil })
  local matches = json.array(res.matches or {})
  for _, n in ipairs(matches) do arrays(n) end
  return 200, { matches = matches, truncated = res.truncated and true or false }
end

local function node_id(body)
  local id = common.str(body, "id", true)
  if not id:match("^%d+[/%d]*$") or id:find("//", 1, true) or id:sub(-1) == "/" then
    field("id", "must be a node id as the tree and find routes give them (<pid>/<index>/...)")
  end
  return id
end

function M.a11y_focus(ctx)
  local body = ctx:json_object(true)
  atspi(ctx, { op = "focus", id = node_id(body) })
  return 200, {}
end

function M.a11y_invoke(ctx)
  local body = ctx:json_object(true)
  local id = node_id(body)
  atspi(ctx, { op = "invoke", id = id, action = common.str(body, "action") })
  return 200, {}
end

function M.a11y_value(ctx)
  local body = ctx:json_object(true)
  local id = node_id(body)
  local value = common.str(body, "value") or ""
  atspi(ctx, { op = "value", id = id, value = value })
  return 200, {}
end

--- The daemon is closing.
function M.shutdown(app)
  local disp = app.x11_display
  app.x11_display = nil
  if disp then pcall(disp.close, disp) end
  desktop.shutdown(app)
end

return M
