--- daytona.progressbar: the transfer progress bar `dtlua` shows on a terminal.
--
-- File transfers call `progressbar.wrap(label, on_progress)` and report
-- through the function it returns. The bar appears on stderr only when the
-- script runs under `dtlua` (which sets `package.dtlua_prefix`), stderr is a
-- terminal, and the transfer has taken more than `DELAY` seconds: quick
-- transfers and scripts whose output is captured stay quiet.
local core = require "daytona.core"

local M = {
  DELAY = 2,          -- seconds before a bar appears
  INTERVAL = 0.1,     -- seconds between redraws
  WIDTH = 30,         -- characters of the bar itself
}

--- Whether bars are drawn in this process (dtlua on a terminal).
-- Scripts may set `progressbar.enabled = false` to silence them.
M.enabled = package.dtlua_prefix ~= nil and core.util.isatty(2)

local function human(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  return i == 1 and ("%d %s"):format(n, units[i]) or ("%.1f %s"):format(n, units[i])
end

--- One line of the bar for `done` of `total` bytes (total may be nil)
-- after `elapsed` seconds.
function M.render(label, done, total, elapsed)
  local rate = elapsed > 0 and done / elapsed or 0
  if total and total > 0 then
    local frac = math.min(done / total, 1)
    local fill = math.floor(frac * M.WIDTH + 0.5)
    return ("%s [%s%s] %3d%% %s/%s %s/s"):format(label, ("#"):rep(fill), ("-"):rep(M.WIDTH - fill),
      math.floor(frac * 100), human(done), human(total), human(rate))
  end
  return ("%s %s %s/s"):format(label, human(done), human(rate))
end

--- A progress function for a transfer: calls `on_progress(done, total)`
-- (may be nil) and draws the bar when enabled. Returns nil when there is
-- nothing to do (no callback, no bar), so callers can skip progress
-- reporting entirely.
function M.wrap(label, on_progress)
  if not M.enabled then return on_progress end
  local start, last, drawn = core.now(), 0, false
  return function(done, total)
    if on_progress then on_progress(done, total) end
    local now = core.now()
    local finished = total and done >= total
    if now - start < M.DELAY or (now - last < M.INTERVAL and not finished) then return end
    last = now
    io.stderr:write("\r", M.render(label, done, total, now - start), "\027[K")
    drawn = true
    if finished and drawn then io.stderr:write("\n"); drawn = false; start = math.huge end
  end
end

return M
