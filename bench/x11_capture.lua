--- bench/x11_capture.lua: daytona.core.x11 on a 1024x768 Xvfb of its own.
--
--   lua5.4 bench/x11_capture.lua [--runs N] [--display :N]
--
-- Screenshot latency (full screen PNG, JPEG, JPEG and PNG at scale 0.5, a
-- 300x200 region) and the mouse round trip (d:move then d:pointer), each
-- the median of --runs calls (default 50) in this process, beside what a
-- command per event costs on the same display in the same run: ffmpeg
-- x11grab writing one PNG / one JPEG frame, xdotool mousemove +
-- getmouselocation.  The screen shows two xterms full of text, so that
-- the encoders have something to compress.  DTLUA_BUILD selects the build
-- directory (default build).
dofile((arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/bench/lib/paths.lua")

local core = require "daytona.core"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"

local script = require "bench.lib.script"

local opt = script.args{ runs = 50, display = false }
local runs, display = opt.runs, opt.display or nil

local function median(t) return script.pct(t, 50) end

-- median milliseconds of fn() over n calls (after one warm-up call)
local function time_ms(n, fn)
  fn()
  local t = {}
  for k = 1, n do
    local t0 = core.now()
    fn()
    t[k] = (core.now() - t0) * 1000
  end
  return median(t)
end

local env = core.util.environ()
local procs = {}

local function wait_for(pred, what)
  local deadline = core.now() + 15
  while not pred() do
    assert(core.now() < deadline, what .. " did not come up")
    scheduler.sleep(0.02)
  end
end

scheduler.run(function()
  if not display then
    for n = 700 + math.random(0, 200), 999 do
      if not io.open("/tmp/.X" .. n .. "-lock") then
        local p = assert(process.spawn({ "Xvfb", ":" .. n, "-screen", "0", "1024x768x24", "-nolisten", "tcp" },
          { stdout = "null", stderr = "null" }))
        local ok = pcall(wait_for, function()
          assert(p:status() == nil, "exited")
          local f = io.open("/tmp/.X" .. n .. "-lock")
          local lock = f and f:read("a")
          if f then f:close() end
          if not (lock and tonumber(lock:match("%d+")) == p:pid()) then return false end
          local d = core.x11.open(":" .. n)
          if d then d:close() return true end
        end, "Xvfb")
        if ok then display = ":" .. n; procs[#procs + 1] = p; break end
        p:close()
      end
    end
  end
  assert(display, "no X display")
  env.DISPLAY = display
  local d <close> = assert(core.x11.open(display))
  for k, geo in ipairs({ "100x40+0+0", "80x30+400+300" }) do
    procs[#procs + 1] = assert(process.spawn({ "xterm", "-T", "bench" .. k, "-geometry", geo, "-e", "sh", "-c",
      "ls -l --color=always /usr/bin /usr/lib | head -400; sleep 600" }, { env = env, stdout = "null", stderr = "null" }))
  end
  wait_for(function()
    local n = 0
    for _, w in ipairs(assert(d:windows())) do if w.title:match("^bench") then n = n + 1 end end
    return n == 2
  end, "the xterms")
  scheduler.sleep(0.5)                 -- let them draw their text

  local rows = {}
  local function row(what, ms, bytes, peer)
    rows[#rows + 1] = { what, ms, bytes, peer }
  end
  local function shot(what, opts)
    local bytes
    local ms = time_ms(runs, function() bytes = assert(d:capture(opts)) end)
    row(what, ms, #bytes)
    return ms
  end
  local png = shot("full screen PNG", {})
  local jpeg = shot("full screen JPEG q85", { format = "jpeg" })
  shot("full screen JPEG q85, scale 0.5", { format = "jpeg", scale = 0.5 })
  shot("full screen PNG, scale 0.5", { scale = 0.5 })
  shot("region 300x200 PNG", { x = 100, y = 100, width = 300, height = 200 })
  shot("full screen PNG + cursor", { cursor = true })
  local move = time_ms(runs * 10, function()
    assert(d:move(math.random(0, 1023), math.random(0, 767)))
    assert(d:pointer())
  end)
  row("mouse move + read back", move)

  -- the peers: one process per event, on the same display
  local tmp = os.tmpname()
  local have_ffmpeg = os.execute("command -v ffmpeg >/dev/null 2>&1")
  local have_xdotool = os.execute("command -v xdotool >/dev/null 2>&1")
  local peer_runs = math.max(3, runs // 10)
  local function ffmpeg(ext)
    return time_ms(peer_runs, function()
      local r = process.run({ "ffmpeg", "-loglevel", "error", "-y", "-f", "x11grab", "-video_size", "1024x768",
        "-i", display, "-frames:v", "1", tmp .. ext }, { env = env, timeout = 30 })
      assert(r and r.exit_code == 0, "ffmpeg failed")
    end)
  end
  if have_ffmpeg then
    local ms = ffmpeg(".png")
    local fh = io.open(tmp .. ".png", "rb")
    row("peer: ffmpeg x11grab, 1 PNG frame", ms, fh and #fh:read("a"), png)
    if fh then fh:close() end
    ms = ffmpeg(".jpg")
    fh = io.open(tmp .. ".jpg", "rb")
    row("peer: ffmpeg x11grab, 1 JPEG frame", ms, fh and #fh:read("a"), jpeg)
    if fh then fh:close() end
    os.remove(tmp .. ".png")
    os.remove(tmp .. ".jpg")
  end
  os.remove(tmp)
  if have_xdotool then
    local ms = time_ms(peer_runs, function()
      local r = process.run({ "xdotool", "mousemove", tostring(math.random(0, 1023)), tostring(math.random(0, 767)),
        "getmouselocation" }, { env = env, timeout = 30 })
      assert(r and r.exit_code == 0, "xdotool failed")
    end)
    row("peer: xdotool mousemove + getmouselocation", ms, nil, move)
  end

  print(("daytona.core.x11 on Xvfb %s 1024x768x24, median of %d calls (peers: %d)"):format(display, runs, peer_runs))
  print(("%-44s %10s %10s %8s"):format("", "ms", "bytes", "x11 is"))
  for _, r in ipairs(rows) do
    print(("%-44s %10.2f %10s %8s"):format(r[1], r[2], r[3] and tostring(r[3]) or "",
      r[4] and ("%.1fx"):format(r[2] / r[4]) or ""))
  end
  for _, p in ipairs(procs) do p:close() end
end)
