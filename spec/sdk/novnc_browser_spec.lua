-- The way a person watches the agent: the sandbox's noVNC page opened
-- through its signed preview link in a real headless Chromium
-- (spec/support/chromium.lua, driven over the DevTools protocol), its
-- WebSocket to websockify going through dtlocal's preview proxy. The page
-- must say it connected (noVNC's own state: the `noVNC_connected` class, the
-- desktop's name in the title), its canvas must be the display's size and
-- not blank, and it must be live: a window opened by the SDK afterwards
-- changes what the browser shows.
local fixture = require "sdk.fixture"
local chromium = require "support.chromium"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"

-- noVNC's state, read in the page: connected, title, status line, and the
-- canvas's size, number of distinct colours (sampled) and a checksum
local STATE = [[JSON.stringify((() => {
  const c = document.querySelector('#noVNC_container canvas')
  let canvas = null
  if (c && c.width && c.height) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
    const seen = new Set()
    let sum = 0
    for (let i = 0; i < d.length; i += 4 * 7) {
      const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2]
      seen.add(v)
      sum = (sum * 31 + v) >>> 0
    }
    canvas = { width: c.width, height: c.height, colours: seen.size, sum }
  }
  return {
    connected: !!document.documentElement && document.documentElement.classList.contains('noVNC_connected'),
    title: document.title,
    status: (document.getElementById('noVNC_status') || {}).textContent || '',
    canvas,
  }
})())]]

describe("noVNC in a real browser", function()
  local srv, sb

  setup(function()
    srv = fixture.server()
  end)

  teardown(function()
    fixture.release(srv, sb)
  end)

  it("connects through the signed preview link and shows the live desktop", function()
    assert.is_true(chromium.available(), "chromium is not installed: run `make deps`")
    local _
    _, sb = fixture.sandbox(srv, { labels = { suite = "novnc-browser" } })
    local cu = sb.computer_use
    cu:start()
    cu:wait_until_ready{ timeout = 120 }
    local display = cu.display:get_info().displays[1]

    local link = sb:create_signed_preview_url(6080, { expires_in_seconds = 600 })
    local base = link.url:gsub("/+$", "")
    local path = base:match("^https?://[^/]+/(.*)$") or ""
    local url = base .. "/vnc.html?autoconnect=true&path=" .. (path ~= "" and path .. "/" or "") .. "websockify"

    local b <close> = chromium.open(url)
    local cjson = require "cjson"
    local function state()
      -- while the page (re)loads there may be no context to evaluate in
      local ok, v = pcall(b.eval, b, STATE)
      return ok and cjson.decode(v) or { connected = false, status = tostring(v) }
    end
    -- poll noVNC's own state until it has connected and painted. Chromium
    -- aborts the requests in flight when the host's network changes
    -- (net::ERR_NETWORK_CHANGED), and every sandbox started or deleted on
    -- this machine adds or removes a veth link: a page whose scripts were
    -- cut off that way never starts noVNC, so it is reloaded, as a person
    -- would reload it (up to 4 loads)
    local st
    local deadline = core.now() + 90
    local loads, loaded_at = 1, core.now()
    repeat
      st = state()
      if st.connected and st.canvas and st.canvas.colours > 1 then break end
      if not st.connected and loads < 4 and core.now() - loaded_at > 15 then
        b:send("Page.reload", { ignoreCache = true })
        loads, loaded_at = loads + 1, core.now()
      end
      scheduler.sleep(0.2)
    until core.now() > deadline
    local why = ("noVNC state: %s\n--- dtlocal:\n%s"):format(cjson.encode(st),
      srv.log and srv.log():sub(-2500) or "")
    assert.is_true(st.connected, why)
    assert.matches("Connected", st.status, 1, true)
    assert.matches(" %- noVNC$", st.title)             -- "<desktop name> - noVNC"
    assert.are.same({ display.width, display.height }, { st.canvas.width, st.canvas.height })
    assert.is_true(st.canvas.colours > 1, why)         -- not a blank, uniform picture

    -- live: a window the SDK opens now shows up in the browser
    local before = st.canvas.sum
    sb.process:create_session("desktop")
    sb.process:execute_session_command("desktop",
      { command = "DISPLAY=:0 xterm -geometry 60x15+100+100 -bg yellow -title browser-check -e sh", run_async = true })
    deadline = core.now() + 30
    repeat
      st = state()
      if st.canvas and st.canvas.sum ~= before then break end
      scheduler.sleep(0.2)
    until core.now() > deadline
    assert.are_not.equal(before, st.canvas.sum, "the browser's picture did not change after a window opened")
    assert.is_true(st.connected)
  end)
end)
