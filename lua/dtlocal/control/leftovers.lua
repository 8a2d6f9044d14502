--- dtlocal.control.leftovers: what a server killed without cleaning up leaves
-- in the temp dir, and how the next one finds it.
--
-- Each server makes a private socket link dir, `$TMPDIR/dtlocal.XXXXXX`
-- (or `/tmp/dtlocal.XXXXXX`; dtlocal.control.runner), and removes it at a clean
-- shutdown. A server killed with SIGKILL cannot, so its dir stays. To tell
-- a dead server's dir from a live one's, the server writes an `owner` file
-- into it: "<pid> <start time>\n", the start time being field 22 of
-- /proc/<pid>/stat (clock ticks since boot), so a pid reused by another
-- process does not keep a dead server's dir alive.
--
--   leftovers.claim_link_dir(dir)          -- right after making it
--   leftovers.sweep_link_dirs(tmpdir, { keep = our dir, state_dir = })
--                                           -- at start-up: the removed dirs
--
-- A dir without an `owner` file (made by a server older than this
-- convention, or one still between mkdtemp and its claim) is left alone,
-- unless its entries are named after sandboxes (links `<id>` or sockets
-- `<id>.sock`), one of them a sandbox of `state_dir`: the caller holds
-- that state dir's lock, so the server that made them is gone.
local core = require "daytona.core"

local ipairs, tonumber, tostring, io, os = ipairs, tonumber, tostring, io, os
local util = core.util

local M = {}

M.OWNER = "owner"

--- The start time of process pid (field 22 of /proc/<pid>/stat, clock
-- ticks since boot), or nil when there is no such process.
M.start_time = require("daytona.runtime.process").start_time

--- Write dir's `owner` file: this process's pid and start time. Returns
-- true or nil, message.
function M.claim_link_dir(dir)
  local pid = util.getpid()
  local start = M.start_time(pid)
  if not start then return nil, "cannot read /proc/" .. pid .. "/stat" end
  local tmp = dir .. "/" .. M.OWNER .. ".tmp"
  local f, msg = io.open(tmp, "wb")
  if not f then return nil, msg end
  local ok, werr = f:write(pid, " ", start, "\n")
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, tmp .. ": " .. tostring(werr or cerr)
  end
  local rok, rerr = os.rename(tmp, dir .. "/" .. M.OWNER)
  if not rok then os.remove(tmp); return nil, rerr end
  return true
end

-- Whether the owner recorded in dir is a live process: true, false, or
-- nil when there is no owner file.
local function owner_alive(dir)
  local f = io.open(dir .. "/" .. M.OWNER, "rb")
  if not f then return nil end
  local s = f:read("a") or ""
  f:close()
  local pid, start = s:match("^(%d+) (%d+)")
  if not pid then return false end   -- garbage: no live owner wrote it
  return M.start_time(pid) == tonumber(start)
end

-- Whether the entries of a dir show that it served state_dir: every one
-- is named after a sandbox (`<uuid>`, a link to its run dir, or
-- `<uuid>.sock`, its daemon's socket) and at least one after a sandbox
-- that state_dir has. Sandbox ids are unique, so one is enough; the others
-- may be of sandboxes deleted since.
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local function serves(names, state_dir)
  if not state_dir then return false end
  local found = false
  for _, name in ipairs(names) do
    local id = name:match("^(.-)%.sock$") or name
    if not id:match(UUID) then return false end
    found = found or util.stat(state_dir .. "/sandboxes/" .. id) ~= nil
  end
  return found
end

--- Remove the `dtlocal.*` dirs in tmpdir that belong to us (our uid) and
-- to a server that is gone (see the module's comment). opts: keep (a dir
-- never to touch: the caller's own), state_dir (the caller's locked state
-- dir). Only the dir's own entries (links, sockets, the owner file) are
-- removed, never what a link points to. Returns the list of removed dirs.
function M.sweep_link_dirs(tmpdir, opts)
  opts = opts or {}
  local removed = {}
  local uid = util.getuid()
  tmpdir = (tmpdir or "/tmp"):gsub("/+$", "")
  if tmpdir == "" then tmpdir = "/" end
  for _, name in ipairs(util.readdir(tmpdir) or {}) do
    local dir = tmpdir .. "/" .. name
    if name:match("^dtlocal%.%w%w%w%w%w%w$") and dir ~= opts.keep then
      local st = util.stat(dir)   -- lstat: a link named like ours is not ours
      if st and st.type == "directory" and st.uid == uid then
        local names = util.readdir(dir) or {}
        local alive = owner_alive(dir)
        local gone = alive == false
        if alive == nil then
          gone = serves(names, opts.state_dir)
        end
        if gone then
          for _, n in ipairs(names) do os.remove(dir .. "/" .. n) end
          if os.remove(dir) then removed[#removed + 1] = dir end
        end
      end
    end
  end
  return removed
end

return M
