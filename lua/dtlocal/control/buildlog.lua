--- dtlocal.control.buildlog: the build log of a snapshot or of a sandbox
-- created from an image, kept on disk and streamed to clients
-- (doc/protocol.md §3.9, §5.6).
--
-- A log is a file that a pull or a build appends whole lines to. While the
-- job runs the log is *live*: followers (`?follow=true`) get what is there,
-- then every new line as it comes, and their response ends once the job
-- has finished and they have read everything. A log whose job has ended
-- (or one from before a restart) is replayed from the file and ended.
--
--   local log = buildlog.open(path)      -- truncates; live until finish()
--   log:line("Pulling ...")              -- appended, flushed, followers woken
--   log:finish()                         -- no more lines
--   buildlog.serve(ctx, path, log_or_nil, follow)
local core = require "daytona.core"
local event = require("dtlocal.toolbox.proc").event

local io, setmetatable, tostring, pcall = io, setmetatable, tostring, pcall

local M = {}

M.CHUNK = 64 * 1024        -- bytes read from the file at a time
M.MAX_LINE = 16 * 1024     -- a longer line is cut (a progress bar gone wild)

local Log = {}
Log.__index = Log
Log.__name = "dtlocal.BuildLog"

--- A new, empty live log at path (an existing file is replaced). A log
-- that cannot be written still takes lines: they are dropped, the job
-- goes on (its outcome is in its state and errorReason).
function M.open(path)
  local f = io.open(path, "wb")
  if f then pcall(core.util.chmod, path, 384) end
  return setmetatable({ path = path, f = f, done = false, ev = event() }, Log)
end

--- Append one line (a trailing newline is added; CRs, as progress output
-- has them, become line ends).
function Log:line(s)
  s = tostring(s):gsub("\r\n", "\n"):gsub("\r", "\n"):gsub("\n+$", "")
  if #s > M.MAX_LINE then s = s:sub(1, M.MAX_LINE) .. " [...]" end
  if self.f and not self.done then
    if not (self.f:write(s, "\n") and self.f:flush()) then
      self.f:close()
      self.f = nil
    end
  end
  self.ev:notify()
end

--- The job is over: no more lines; followers end once they have read all.
function Log:finish()
  if self.done then return end
  self.done = true
  if self.f then self.f:close(); self.f = nil end
  self.ev:notify()
end

--- Answer a build-logs request: the file at `path` as
-- application/octet-stream, then, with `follow` and a live `log`, what is
-- appended until the log is finished. A missing file is an empty log.
function M.serve(ctx, path, log, follow)
  local out = ctx:stream(200, { ["Content-Type"] = "application/octet-stream",
                                ["Cache-Control"] = "no-cache" })
  local f = io.open(path, "rb")
  local ok, err = pcall(function()
    while true do
      local chunk = f and f:read(M.CHUNK)
      if chunk then
        out:write(chunk)
      else
        if not (follow and log and not log.done) then break end
        -- bounded, so that a client that went away is noticed by a write
        -- (a heartbeat would be bytes in the log) within a while
        log.ev:wait(20)
        -- fseek clears the end-of-file mark that stdio keeps after EOF
        if f then f:seek("cur", 0) else f = io.open(path, "rb") end
      end
    end
  end)
  if f then f:close() end
  if ok then out:finish() else pcall(out.abort, out) end
end

return M
