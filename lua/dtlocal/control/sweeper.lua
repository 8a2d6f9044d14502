--- dtlocal.control.sweeper: the timers of the sandbox manager.
--
-- Every few seconds (a quarter of an interval minute) one pass over the
-- live sandboxes: an idle started sandbox past its autoStopInterval is
-- stopped, a stopped one past its autoArchiveInterval archived, one past
-- its autoDeleteInterval (or its TTL) deleted; and activity the manager
-- kept in memory (every toolbox request touches it) is saved, at most every
-- SAVE_ACTIVITY_EVERY seconds.
--
--   scheduler.spawn(sweeper.run, mgr)   -- until mgr:shutdown()
--   sweeper.sweep(mgr)                  -- one pass
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local record = require "dtlocal.control.record"

local ipairs, pcall, error, tostring, math = ipairs, pcall, error, tostring, math

local M = {}

-- Activity is saved at most this often (seconds).
M.SAVE_ACTIVITY_EVERY = 5

--- The automatic transition due now for one record (its deadlines in ms
-- against `now`): "stop", "archive", "delete" or nil.
function M.due(mgr, rec, now)
  local d = rec.dtlocal
  local minute_ms = mgr.minute * 1000
  local rt = mgr.rt[rec.id]
  if rt and rt.op and not rt.op:done() then return nil end
  if d.ttl_minutes and now - d.created_ms >= d.ttl_minutes * minute_ms then return "delete" end
  local s = rec.state
  if s == "started" then
    if rec.autoStopInterval > 0 and (not rt or rt.conns <= 0)
      and now - d.activity_ms >= rec.autoStopInterval * minute_ms then
      return "stop"
    end
  elseif s == "stopped" or s == "archived" then
    if rec.autoDeleteInterval >= 0 and now - d.state_ms >= rec.autoDeleteInterval * minute_ms then
      return "delete"
    end
    if s == "stopped" and rec.autoArchiveInterval > 0
      and now - d.state_ms >= rec.autoArchiveInterval * minute_ms then
      return "archive"
    end
  end
  return nil
end

--- One pass of the sweeper: automatic stops, archives and deletes, and
-- saving activity that changed.
function M.sweep(mgr)
  local now = record.now_ms()
  local save_due = not mgr.saved_at or now - mgr.saved_at >= M.SAVE_ACTIVITY_EVERY * 1000
  for _, rec in ipairs(mgr:all()) do
    local action = M.due(mgr, rec, now)
    if action then
      mgr.log("sandbox %s: auto-%s", rec.id, action)
      local ok, err = pcall(function()
        if action == "stop" then mgr:stop(rec, false, 0)
        elseif action == "archive" then mgr:archive(rec)
        else mgr:delete(rec) end
      end)
      if not ok then mgr.log("sandbox %s: auto-%s failed: %s", rec.id, action, tostring(err.message or err)) end
    end
    local rt = mgr.rt[rec.id]
    if save_due and rt and rt.dirty and mgr.by_id[rec.id] then pcall(mgr.save, mgr, rec) end
  end
  if save_due then mgr.saved_at = now end
end

--- Sweep every `minute / 4` seconds (between 0.02 and 1) until the
-- manager shuts down (a task body).
function M.run(mgr)
  local period = math.max(0.02, math.min(1, mgr.minute / 4))
  while not mgr.closing do
    scheduler.sleep(period)
    local ok, err = pcall(M.sweep, mgr)
    if not ok then
      if errors.is(err, errors.CancelledError) then error(err, 0) end
      mgr.log("sweeper: %s", tostring(err))
    end
  end
end

return M
