--- Computer Use figures of dtlocal's daemon (printed, not asserted;
-- doc/dtlocal.md "Computer Use").
--
--   build/bin/dtlua bench/computeruse.lua [--n N]
--
-- Against a private dtlocal and one sandbox, over real HTTP through
-- dtlocal's toolbox proxy:
-- 1. POST /computeruse/start -> all four processes running (xvfb, xfce4,
--    x11vnc, novnc), N start/stop cycles, beside a bare X server in the
--    same sandbox: `Xvfb :1` started by one exec that waits until xdpyinfo
--    answers (the floor any desktop pays), interleaved.
-- 2. Route round trips, p50 of N*10 each: mouse position, mouse move, a
--    full-screen PNG, a JPEG at scale 0.5 (both base64 in JSON), beside
--    GET /version through the same proxy (the cost of any toolbox request).
local core = require "daytona.core"
local daytona = require "daytona"
local http = daytona.http
local json = require("dtlocal.http").json

local ROOT = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/?.lua;" .. ROOT .. "/spec/?.lua;" .. package.path
local script = require "bench.lib.script"
local N = script.args{ n = 5 }.n
local pct = script.pct

local function main()
  local support = require "support.dtlocal"
  local srv = support.start()
  local client = daytona.new { api_key = srv.token, api_url = srv.api_url, target = "local" }
  local sb = client:create({})
  local ok, err = pcall(function()
    local base = srv.toolbox_url .. "/" .. sb.id
    local auth = { Authorization = "Bearer " .. srv.token }
    local function req(method, path, body, query)
      local h = { Authorization = auth.Authorization }
      if body then h["Content-Type"] = "application/json" end
      local r = assert(http.request { url = base .. path, method = method, headers = h, query = query,
                                      body = body and json.encode(body), timeout = 120 })
      assert(r.status == 200, path .. ": " .. r.status .. " " .. r.body)
      return r
    end
    local function timed(fn)
      local t0 = core.now()
      fn()
      return core.now() - t0
    end

    -- 1. start -> running, beside a bare Xvfb
    local desk, bare = {}, {}
    for i = 1, N do
      desk[i] = timed(function() req("POST", "/computeruse/start") end)
      req("POST", "/computeruse/stop")
      bare[i] = timed(function()
        local r = sb.process:exec("Xvfb :1 -nolisten tcp -nolisten local >/dev/null 2>&1 & x=$!; "
          .. "until DISPLAY=:1 xdpyinfo >/dev/null 2>&1; do sleep 0.02; done; kill $x; wait $x 2>/dev/null; true",
          { timeout = 60 })
        assert(r.exit_code == 0, r.result)
      end)
    end
    print(("start -> xvfb, xfce4, x11vnc, novnc running: p50 %.2f s (min %.2f, max %.2f; %d cycles)")
      :format(pct(desk, 50), pct(desk, 0), pct(desk, 100), N))
    print(("  a bare Xvfb up (one exec, polled with xdpyinfo):   p50 %.2f s  -> the desktop costs %.1fx")
      :format(pct(bare, 50), pct(desk, 50) / pct(bare, 50)))

    -- 2. round trips
    req("POST", "/computeruse/start")
    local M = N * 10
    local function p50(fn)
      fn()
      local t = {}
      for i = 1, M do t[i] = timed(fn) end
      return pct(t, 50) * 1000
    end
    local floor = p50(function() req("GET", "/version") end)
    local rows = {
      { "GET /version (the proxy's floor)", floor },
      { "GET mouse/position", p50(function() req("GET", "/computeruse/mouse/position") end) },
      { "POST mouse/move", p50(function() req("POST", "/computeruse/mouse/move", { x = 200, y = 300 }) end) },
      { "GET screenshot (PNG 1024x768)", p50(function() req("GET", "/computeruse/screenshot") end) },
      { "GET screenshot/compressed (JPEG q85, scale 0.5)", p50(function()
          req("GET", "/computeruse/screenshot/compressed", nil, { format = "jpeg", scale = "0.5" }) end) },
    }
    print(("\nround trips through dtlocal's proxy, p50 of %d:"):format(M))
    for _, r in ipairs(rows) do
      print(("  %-48s %7.2f ms  %5.1fx the floor"):format(r[1], r[2], r[2] / floor))
    end
    req("POST", "/computeruse/stop")
  end)
  pcall(sb.delete, sb, { wait = false })
  srv.stop()
  if not ok then error(err, 0) end
end

main()
