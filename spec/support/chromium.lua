--- A real headless Chromium for specs, driven over the DevTools protocol
-- with the core's WebSocket client: open a page, evaluate JavaScript in
-- it, take a screenshot of it.
--
--     local chromium = require "support.chromium"
--     local b <close> = chromium.open("http://127.0.0.1:8080/")
--     local title = b:eval("document.title")
--     local png = b:screenshot()          -- PNG bytes
--
-- Chromium runs with its own new profile directory (removed on close),
-- `--remote-debugging-port=0`: the port it chose is read from the
-- "DevTools listening on ws://..." line it prints on stderr. Nothing but
-- this process reaches it: it listens on 127.0.0.1 only.
local rprocess = require "daytona.runtime.process"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"
local wire = require "daytona.wire"
local cjson = require "cjson"

local M = {}

M.BINARY = "/usr/bin/chromium"

--- True when Chromium is installed here.
function M.available()
  local f = io.open(M.BINARY, "r")
  if f then f:close() return true end
  return false
end

local Browser = {}
Browser.__index = Browser

--- Start Chromium on `url`; returns a Browser attached to that page.
-- @param url string
-- @param opts optional `{ width =, height = }` of the window (default 1280x900)
function M.open(url, opts)
  opts = opts or {}
  local mk = io.popen("mktemp -d \"${TMPDIR:-/tmp}/dtlua-chromium.XXXXXX\"")
  local profile = mk:read("l")
  mk:close()
  assert(profile and profile ~= "", "mktemp failed")
  local p = rprocess.spawn({ M.BINARY, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--user-data-dir=" .. profile, "--remote-debugging-port=0",
    ("--window-size=%d,%d"):format(opts.width or 1280, opts.height or 900), url },
    { stdin = "null", stdout = "null" })
  local self = setmetatable({ p = p, profile = profile, id = 0, log = {} }, Browser)
  local ok, err = pcall(function()
    local deadline = core.now() + 30
    for line in p:lines("stderr", 30) do
      self.log[#self.log + 1] = line
      local port = line:match("DevTools listening on ws://127%.0%.0%.1:(%d+)/")
      if port then self.port = tonumber(port); break end
      assert(core.now() < deadline, "chromium printed no DevTools address")
    end
    assert(self.port, "chromium exited before listening:\n" .. table.concat(self.log, "\n"))
    -- keep reading its stderr so that it never blocks on a full pipe
    self.drain = scheduler.spawn(function()
      for line in p:lines("stderr") do
        if #self.log < 400 then self.log[#self.log + 1] = line end
      end
    end)
    -- the page target Chromium opened for url
    local target
    deadline = core.now() + 30
    while not target do
      local r = assert(http.request{ url = ("http://127.0.0.1:%d/json/list"):format(self.port), timeout = 10 })
      for _, t in ipairs(cjson.decode(r.body)) do
        if t.type == "page" and t.webSocketDebuggerUrl then target = t; break end
      end
      if not target then
        assert(core.now() < deadline, "chromium has no page target")
        scheduler.sleep(0.1)
      end
    end
    self.ws = assert(websocket.connect(target.webSocketDebuggerUrl, { timeout = 10 }))
  end)
  if not ok then self:close(); error(err, 0) end
  return self
end

--- Send a DevTools command and wait for its answer.
-- @return the `result` object
function Browser:send(method, params, timeout)
  self.id = self.id + 1
  local id = self.id
  assert(self.ws:send(cjson.encode{ id = id, method = method, params = params or {} },
    "text"))
  local deadline = core.now() + (timeout or 30)
  while true do
    local left = deadline - core.now()
    assert(left > 0, method .. ": no answer from chromium")
    local data, kind = self.ws:receive(left)
    assert(data, "chromium's DevTools connection: " .. tostring(kind))
    local m = cjson.decode(data)
    if m.id == id then
      if m.error then error(method .. ": " .. tostring(m.error.message), 2) end
      return m.result
    end
  end
end

--- Evaluate a JavaScript expression in the page; its value (JSON-able).
function Browser:eval(expr)
  local r = self:send("Runtime.evaluate", { expression = expr, returnByValue = true })
  local ex = r.exceptionDetails
  if ex then
    local what = type(ex.exception) == "table" and ex.exception.description or ex.text
    error("eval: " .. tostring(what), 2)
  end
  local v = r.result and r.result.value
  if v == cjson.null then return nil end
  return v
end

--- The page as a PNG (bytes).
function Browser:screenshot()
  local r = self:send("Page.captureScreenshot", { format = "png" })
  return assert(wire.base64_decode(r.data))
end

--- Stop Chromium and remove its profile; idempotent.
function Browser:close()
  if self.ws then pcall(self.ws.close, self.ws); self.ws = nil end
  if self.p then
    self.p:kill("TERM")
    if not self.p:wait(10) then self.p:kill("KILL"); self.p:wait(5) end
    self.p:close()
    self.p = nil
  end
  if self.drain then self.drain:cancel(); self.drain = nil end
  if self.profile then os.execute("rm -rf '" .. self.profile .. "'"); self.profile = nil end
end
Browser.__close = Browser.close

return M
