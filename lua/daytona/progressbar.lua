--- daytona.progressbar: the transfer progress bars `dtlua` draws on a terminal.
--
-- File transfers call `progressbar.start(kind, nfiles)` and report through
-- the bar it returns (`bar:update(done, total, file)`, `bar:finish(ok)`).
-- Bars are drawn on stderr only when the script runs under `dtlua` (which
-- sets `package.dtlua_prefix`) and stderr is a terminal: scripts whose
-- output is captured stay quiet.
--
-- A bar appears only for a transfer expected to take longer than
-- `SHOW_AFTER` seconds: after `PROBE` seconds its rate so far gives an
-- estimate of the whole duration (a transfer of unknown size appears once it
-- has run that long). Concurrent transfers get one line each, redrawn as a
-- block with ANSI cursor movement; a finished transfer whose bar was shown
-- leaves one summary line ("uploaded 3 files, 1.2 GiB in 2.1 s, 570.0 MiB/s").
local core = require "daytona.core"

local ipairs, setmetatable, math, io, table = ipairs, setmetatable, math, io, table
local concat, remove = table.concat, table.remove

local M = {
  SHOW_AFTER = 1,     -- seconds a transfer must be expected to take to get a bar
  PROBE = 0.2,        -- seconds of transfer before its rate is trusted
  INTERVAL = 0.1,     -- seconds between redraws
  WIDTH = 30,         -- characters of the bar itself
}

--- Whether bars are drawn in this process (dtlua with stderr on a terminal).
-- Scripts may set `progressbar.enabled = false` to silence them.
M.enabled = package.dtlua_prefix ~= nil and core.util.isatty(2)

--- The clock bars measure with (seconds; replaceable for tests).
M.clock = core.now

local Bar = {}
Bar.__index = Bar
Bar.__name = "daytona.progressbar.Bar"

local active = {}     -- the unfinished bars, in start order
local drawn = 0       -- lines of the block now on screen
local last_draw = -math.huge

local function human(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  return i == 1 and ("%d %s"):format(math.floor(n), units[i]) or ("%.1f %s"):format(n, units[i])
end
M.human = human

--- One line of a bar for `done` of `total` bytes (total may be nil)
-- after `elapsed` seconds.
-- @param label what is transferred, e.g. "upload main.py"
-- @return string
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

local function label(b)
  local l = b.kind
  if b.file then l = l .. " " .. b.file end
  if b.nfiles > 1 then
    l = l .. (b.index and (" (%d of %d)"):format(b.index, b.nfiles) or (" (%d files)"):format(b.nfiles))
  end
  return l
end

-- Rewrite the block of shown bars in place: up to its first line, an
-- optional summary line that stays above the block, one line per bar,
-- then clear whatever the old block had below.
local function redraw(now, summary)
  local out = {}
  if drawn > 0 then out[#out + 1] = ("\027[%dA"):format(drawn) end
  if summary then out[#out + 1] = "\r" .. summary .. "\027[K\n" end
  local n = 0
  for _, b in ipairs(active) do
    if b.shown then
      out[#out + 1] = "\r" .. M.render(label(b), b.done, b.total, now - b.started) .. "\027[K\n"
      n = n + 1
    end
  end
  if n + (summary and 1 or 0) < drawn then out[#out + 1] = "\027[J" end
  drawn = n
  last_draw = now
  io.stderr:write(concat(out))
end

--- Start tracking a transfer.
-- @param kind "upload" or "download"
-- @param nfiles how many files the transfer carries
-- @return a bar, or nil when bars are not drawn
function M.start(kind, nfiles)
  if not M.enabled then return nil end
  local b = setmetatable({ kind = kind, nfiles = nfiles or 1, done = 0, started = M.clock(), shown = false }, Bar)
  active[#active + 1] = b
  return b
end

--- Report progress: `done` bytes of `total` (nil if unknown), the file
-- now being transferred and its 1-based index among the transfer's files.
-- @return nothing
function Bar:update(done, total, file, index)
  if self.finished then return end
  self.done, self.total = done, total or self.total
  if file then self.file, self.index = file, index end
  local now = M.clock()
  if not self.shown then
    local elapsed = now - self.started
    if elapsed < M.PROBE then return end
    local expected
    if self.total and self.total > 0 and done > 0 and done < self.total then
      expected = elapsed * self.total / done
    else
      expected = elapsed
    end
    if expected <= M.SHOW_AFTER then return end
    self.shown = true
  elseif now - last_draw < M.INTERVAL then
    return
  end
  redraw(now)
end

--- End the transfer: its line goes, and a summary line stays if its bar
-- was shown. Idempotent.
-- @param ok false when the transfer failed
-- @return nothing
function Bar:finish(ok)
  if self.finished then return end
  self.finished = true
  for i, b in ipairs(active) do
    if b == self then remove(active, i); break end
  end
  if not self.shown then return end
  local now = M.clock()
  local elapsed = now - self.started
  local what = self.nfiles > 1 and ("%d files"):format(self.nfiles) or (self.file or "1 file")
  local summary
  if ok == false then
    summary = ("%s of %s failed after %s"):format(self.kind, what, human(self.done))
  else
    summary = ("%sed %s, %s in %.1f s, %s/s"):format(self.kind, what, human(self.done), elapsed,
      human(elapsed > 0 and self.done / elapsed or 0))
  end
  redraw(now, summary)
end
Bar.__close = function(self, err) self:finish(err == nil) end

--- Forget every bar and the block on screen (for tests).
-- @local
function M._reset()
  active, drawn, last_draw = {}, 0, -math.huge
end

return M
