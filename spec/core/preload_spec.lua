-- daytona.loop.preload(): a host loads up front what the first SDK call
-- would load mid-frame, so its first step(0) requires nothing new. Runs in
-- a fresh lua5.4, since this process has loaded everything already.
local helper = require "support.helper"

local BUILD = os.getenv("DTLUA_BUILD") or "build"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function lua(script, ...)
  local dir = helper.tmpdir()
  local path = dir .. "/s.lua"
  local f = assert(io.open(path, "w")); f:write(script); f:close()
  local args = {}
  for i = 1, select("#", ...) do args[i] = sh_quote((select(i, ...))) end
  local p = io.popen(("LUA_PATH=%s LUA_CPATH=%s lua5.4 %s %s 2>&1 </dev/null"):format(
    sh_quote("lua/?.lua;lua/?/init.lua;;"), sh_quote(BUILD .. "/lib/lua/5.4/?.so;;"),
    sh_quote(path), table.concat(args, " ")))
  local out = p:read("a")
  p:close()
  return out
end

-- A host's start: preload (or not), then the first frames of a task that
-- makes a client, an HTTP request to a local server and a WebSocket connect.
local HOST = [[
local daytona = require "daytona"
local now = require("daytona.core").now
local preload = arg[1] == "preload" and daytona.loop.preload() or 0
local server = require "daytona.runtime.server"
local srv = server.listen{ port = 0, handler = function(_, res) res:send(200, {}, "ok") end }
local before = {}
for k in pairs(package.loaded) do before[k] = true end
local done = false
daytona.spawn(function()
  daytona.new{ api_key = "k", api_url = srv.url .. "/api", local_server = false }
  assert(daytona.http.request{ url = srv.url .. "/x" })
  daytona.websocket.connect("ws://127.0.0.1:1/")        -- refused: the context is what counts
  done = true
end)
local first, worst
while not done do
  local t = now()
  daytona.loop.step(0)
  t = (now() - t) * 1000
  first = first or t
  worst = math.max(worst or 0, t)
end
local new = {}
for k in pairs(package.loaded) do if not before[k] then new[#new + 1] = k end end
table.sort(new)
srv:close()
print(("preload %.1f ms, first step %.2f ms, worst %.2f ms, newly loaded: [%s]")
  :format(preload * 1000, first, worst, table.concat(new, " ")))
]]

describe("daytona.loop.preload", function()
  teardown(helper.cleanup)

  it("leaves nothing for the first step(0) to load", function()
    local cold = lua(HOST, "cold")
    local warm = lua(HOST, "preload")
    print("\n  without: " .. cold .. "  with:    " .. warm)
    assert.is_truthy(cold:find("newly loaded: %[.*daytona.core.http"), cold)   -- what it saves
    assert.is_truthy(warm:find("newly loaded: []", 1, true), warm)
    local first = tonumber(warm:match("first step ([%d.]+) ms"))
    assert.is_true(first < 20, warm)   -- generous: the figure is printed above
  end)

  it("loads every module of the SDK and the runtime, and again costs nothing", function()
    local out = lua([[
local daytona = require "daytona"
daytona.loop.preload()
local again = daytona.loop.preload()
local missing = {}
for name in io.lines(arg[1]) do
  if not package.loaded[name] then missing[#missing + 1] = name end
end
print(("missing: [%s] again: %.3f ms"):format(table.concat(missing, " "), again * 1000))
]], (function()
      local list = helper.tmpdir() .. "/modules"
      os.execute("find lua/daytona -name '*.lua' | sed 's|^lua/||; s|/init[.]lua$||; s|[.]lua$||; s|/|.|g' > "
        .. sh_quote(list))
      return list
    end)())
    assert.is_truthy(out:find("missing: []", 1, true), out)
    assert.is_true(tonumber(out:match("again: ([%d.]+) ms")) < 5, out)
  end)
end)
