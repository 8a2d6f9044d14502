-- The core's split into a base and lazily loaded parts (csrc/dt.h):
-- daytona.core holds the loop, timers, signals, util and process and maps
-- only liblua + libuv; core.http, core.ws and core.server are shared
-- objects loaded on first use, attached to the base's one loop.
--
-- What a fresh process loads is checked in child processes (`dtlua` and a
-- plain `lua5.4` on the build tree), whose /proc/self/maps tell which
-- libraries are mapped; that the parts run on the base's loop is checked
-- in this process, with a server, an HTTP request and a WebSocket driven
-- by nothing but the scheduler's waits on the base's step().
local helper = require "support.helper"
local server = require "daytona.runtime.server"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"
local process = require "daytona.runtime.process"
local core = require "daytona.core"

local ROOT = os.getenv("PWD")
local DTLUA = helper.build_path("bin/dtlua")

-- plain lua5.4 finds the SDK in the checkout and the core in the build
local LUA_ENV = {
  LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;",
  LUA_CPATH = helper.build_path("lib/lua/5.4/?.so;;"),
}

-- Lua code that prints one line per mapped shared library: "lib <path>"
local PRINT_LIBS = [[
  local seen = {}
  for l in io.lines("/proc/self/maps") do
    local p = l:match("%s(/%S+%.so[%.%d]*)$")
    if p and not seen[p] then seen[p] = true; print("lib " .. p) end
  end
]]

-- Run argv (the sanitizer runtime `make asan` preloads into us stays, so
-- instrumented builds run too); returns stdout, raising with the output
-- unless it exits 0.
local function run(argv, env)
  local e = core.util.environ()
  for k, v in pairs(env or {}) do e[k] = v end
  local r = process.run(argv, { env = e, timeout = 60, stderr = "pipe" })
  assert(r.exit_code == 0, ("%s exited %s\n--- stdout\n%s\n--- stderr\n%s")
    :format(argv[1], tostring(r.exit_code), r.stdout, r.stderr))
  return r.stdout
end

local function lua(code)
  return run({ "lua5.4", "-e", code }, LUA_ENV)
end

-- the set of library base names (without version) in "lib <path>" lines
local function libs(out)
  local set = {}
  for path in out:gmatch("lib (%S+)") do
    set[path:match("([^/]+)%.so[%.%d]*$")] = path
  end
  return set
end

local HEAVY = { "libcurl", "libwebsockets", "libmicrohttpd", "libwslay", "libssl", "libcrypto", "libgnutls",
  "libX11", "libXtst", "libXfixes", "libpng16", "libjpeg" }

local function assert_none_of(set, names, what)
  for _, name in ipairs(names) do
    assert(set[name] == nil, what .. " maps " .. tostring(set[name]))
  end
end

describe("daytona.core modules", function()
  teardown(function()
    helper.cleanup()
  end)

  it("a fresh dtlua maps only the base's libraries", function()
    helper.run(function()
      local out = run({ DTLUA, "-e", PRINT_LIBS })
      local set = libs(out)
      assert.is_truthy(set.libuv, out)
      assert.is_truthy(set["liblua5.4"], out)
      assert_none_of(set, HEAVY, "dtlua -e ''")
    end)
  end)

  it("the toolbox daemon starts without its handler modules, and its server part without OpenSSL", function()
    helper.run(function()
      -- the daemon's start is on the critical path of creating a sandbox
      local out = run({ DTLUA, "-e", [[
        require "dtlocal.toolbox"
        for _, m in ipairs({ "files", "exec", "sessions", "pty", "git", "interpreter" }) do
          print("module " .. m .. " " .. tostring(package.loaded["dtlocal.toolbox." .. m] ~= nil))
        end
        local _ = require("daytona.core").server
      ]] .. PRINT_LIBS })
      for m in ("files exec sessions pty git interpreter"):gmatch("%S+") do
        assert.is_truthy(out:find("module " .. m .. " false", 1, true), out)
      end
      local set = libs(out)
      assert.is_truthy(set.libmicrohttpd, out)
      assert_none_of(set, { "libcrypto", "libssl", "libcurl", "libwebsockets" }, "the server part")
    end)
  end)

  it("requiring daytona.core in lua5.4 loads the base only; each part on first use", function()
    helper.run(function()
      local out = lua([[
        local core = require "daytona.core"
        local function loaded()
          local t = {}
          for name in pairs(package.loaded) do
            if name:match("^daytona%.core") then t[#t + 1] = name end
          end
          table.sort(t)
          return table.concat(t, ",")
        end
        print("after base " .. loaded())
        assert(rawget(core, "http") == nil and rawget(core, "ws") == nil and rawget(core, "server") == nil)
        ]] .. PRINT_LIBS .. [[
        local h = core.http
        assert(type(h.request) == "function")
        assert(package.loaded["daytona.core.http"] == h and rawget(core, "http") == h)
        assert(core.http == h and require("daytona.core.http") == h, "one table, cached")
        assert(core.nope == nil and core[1] == nil, "other keys read as nil")
        print("after http " .. loaded())
        print("--")
        ]] .. PRINT_LIBS)
      local before, after = out:match("^(.-)\n%-%-\n(.*)$")
      assert.is_truthy(before, out)
      assert.are.equal("daytona.core", before:match("after base (%S+)"))
      assert.are.equal("daytona.core,daytona.core.http", before:match("after http (%S+)"))
      local b, a = libs(before), libs(after)
      assert_none_of(b, HEAVY, "require 'daytona.core'")
      assert.is_truthy(a.libcurl, "core.http did not map libcurl:\n" .. after)
      assert_none_of(a, { "libwebsockets", "libmicrohttpd", "libwslay" }, "core.http")
    end)
  end)

  it("requiring a part first requires the base and fills its table", function()
    helper.run(function()
      local out = lua([[
        local s = require "daytona.core.server"
        local w = require "daytona.core.ws"
        local core = package.loaded["daytona.core"]
        assert(core and core.server == s and core.ws == w)
        assert(type(s.listen) == "function" and type(w.connect) == "function")
        print("ok")
      ]])
      assert.are.equal("ok\n", out)
    end)
  end)

  it("core.x11 maps the X, PNG and JPEG libraries, none of the network parts", function()
    helper.run(function()
      local out = lua([[
        local x11 = require("daytona.core").x11
        assert(type(x11.open) == "function" and package.loaded["daytona.core.x11"] == x11)
        ]] .. PRINT_LIBS)
      local set = libs(out)
      for _, name in ipairs({ "libX11", "libXtst", "libXfixes", "libpng16", "libjpeg" }) do
        assert.is_truthy(set[name], name .. " is not mapped:\n" .. out)
      end
      assert_none_of(set, { "libcurl", "libwebsockets", "libmicrohttpd", "libssl" }, "core.x11")
    end)
  end)

  it("a part refuses a base built for another ABI", function()
    helper.run(function()
      local out = lua([[
        local core = require "daytona.core"
        rawset(core, "_abi", -1)
        local ok, err = pcall(function() return core.http end)
        assert(not ok)
        print(err)
      ]])
      assert.is_truthy(out:find("daytona.core.http: built for core ABI", 1, true), out)
    end)
  end)

  it("closing the Lua state with work under way in every part shuts them down in order", function()
    helper.run(function()
      -- lua5.4 closes its state at exit: the parts' shutdown hooks run from
      -- the loop's __gc while their code is still mapped (a crash here
      -- would be a part unloaded first)
      local out = lua([[
        local core = require "daytona.core"
        local scheduler = require "daytona.runtime.scheduler"
        local srv = assert(core.server.listen{ host = "127.0.0.1", port = 0 })
        local url = "http://127.0.0.1:" .. srv:port()
        local req = assert(core.http.request{ url = url .. "/never-answered" })
        local ws = assert(core.ws.connect{ url = "ws://127.0.0.1:" .. srv:port() .. "/ws" })
        -- both reach the server, which never answers them
        local got, deadline = {}, core.now() + 10
        while #got < 2 do
          local r = srv:accept()
          if r then got[#got + 1] = r else scheduler.wait(srv) end
          assert(core.now() < deadline, "requests did not arrive")
        end
        print("leaving", req, ws, got[1], got[2])
      ]])
      assert.is_truthy(out:find("^leaving"), out)
    end)
  end)

  it("core.http, core.ws and core.server run on the base's loop", function()
    helper.run(function()
      local srv = server.listen{
        port = 0,
        handler = function(req, res)
          res:send(200, { ["content-type"] = "text/plain" }, "hello " .. req.path)
        end,
        websocket = function(_, ws)
          while true do
            local data, kind = ws:receive(10)
            if data == nil then return end
            ws:send(data, kind)
          end
        end,
      }
      local ok, err = pcall(function()
        local r = http.request{ url = srv.url .. "/split", timeout = 10 }
        assert.are.equal(200, r.status)
        assert.are.equal("hello /split", r.body)
        local ws <close> = websocket.connect(srv.url:gsub("^http", "ws") .. "/echo", { timeout = 10 })
        ws:send("ping over one loop")
        assert.are.equal("ping over one loop", (ws:receive(10)))
        ws:close()
      end)
      srv:close()
      assert(ok, err)
      -- the parts' functions hold the base's loop as their upvalue 1
      for _, f in ipairs{ core.http.request, core.ws.connect, core.server.listen } do
        local _, loop = debug.getupvalue(f, 1)
        assert.are.equal(core._loop, loop)
      end
    end)
  end)
end)
