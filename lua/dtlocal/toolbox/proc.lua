--- dtlocal.toolbox.proc: child processes for the toolbox.
--
-- One-shot runs go through `daytona.runtime.process.run` (timeouts kill the
-- whole process group, then the run's tag sweeps up what left it).
-- Long-lived children whose stdout and stderr are pumped by one task
-- (session shells, PTYs) use `core.process` directly, since that task polls
-- both streams without blocking on either.
--
--     proc.run(argv, { cwd =, env =, input =, timeout =, merge = true })
--       -> { exit_code, signal, output, stderr, truncated }
--          | nil, message, code   (the program could not be started)
--       raises HttpError 408 PROCESS_EXECUTION_TIMEOUT when timeout passes
--     proc.spawn{ argv =, cwd =, env =, stdin =, stdout =, stderr =, pty =, tag = }
--       -> core Process | nil, message, code     (always a new process group)
--     proc.which(name [, PATH]) -> path | nil
--     proc.event() -> Event: ev:wait([timeout]) until ev:notify()
--     proc.tag() -> Tag: what one PTY, session or exec started (below)
--       tag:env(env) -> a copy of env (nil: ours) that marks its holder
--       tag:signal(sig [, leader]) -> processes signalled (one pass)
--       tag:kill([leader]) -> SIGKILL until none is left
--       tag:alive() -> whether a process tag:signal reached still runs
--
-- Finding everything an owner started. A process group is not enough:
-- an interactive shell's job control puts every background job in a group
-- of its own, `disown` only leaves the job table, and `setsid` (or a double
-- fork) leaves the session too. The daemon cannot make a cgroup per owner
-- (/sys is read-only inside the sandbox), and a subreaper would only
-- collect orphans without saying whose they are. So every process the
-- daemon starts for an owner gets DTLOCAL_PROCESS_TAG=<random tag> in its
-- environment: every descendant inherits it whatever it does with its
-- group, session or parent, and /proc/<pid>/environ (the environment the
-- process was exec'd with; same uid, so readable) shows it. A sweep reads
-- /proc once and takes
--   * every process whose environment carries the tag;
--   * while the owner's leader (its shell, a session leader since spawn
--     calls setsid) is not reaped, so its pid cannot name anyone else:
--     the leader, its process group and its whole session -- what ran
--     `env -i` but stayed in the terminal's session;
--   * every descendant of those by parent pid -- what ran `env -i` and
--     then `setsid` without forking again.
-- Only a process that scrubs its environment AND leaves the session AND
-- is orphaned escapes (doc/dtlocal.md). A process is known by pid and start
-- time, so a pid reused meanwhile is never signalled by mistake.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local http = require "dtlocal.http"
local fs = require "dtlocal.fs"

local wait = scheduler.wait
local util = core.util
local setmetatable, math, pcall, error, os, io, pairs, ipairs, tonumber =
  setmetatable, math, pcall, error, os, io, pairs, ipairs, tonumber

local M = {}

-- A gate that never fires on its own: about 35 years.
local FOREVER_MS = 1 << 40

local Event = {}
Event.__index = Event

--- A new event: tasks wait for the next notify().
function M.event()
  return setmetatable({}, Event)
end

--- Wait until the next notify() (or `timeout` seconds). Spurious wake-ups
-- are possible: callers re-check their condition in a loop.
function Event:wait(timeout)
  local g = self.gate
  if not g then
    g = core.timer(FOREVER_MS)
    self.gate = g
  end
  if timeout then
    local t <close> = core.timer(math.max(0, math.floor(timeout * 1000 + 0.5)))
    wait(g, t)
  else
    wait(g)
  end
end

--- Wake every task waiting on the event. The gate is a timer whose close
-- signals its waiters one last time (internals: dt_release).
function Event:notify()
  local g = self.gate
  if g then
    self.gate = nil
    g:close()
  end
end

---------------------------------------------------------------------------
-- Tags: what one owner started (see the top of the file)
---------------------------------------------------------------------------

local TAG_VAR = "DTLOCAL_PROCESS_TAG"
-- kill passes before a sweep gives up: each pass catches what forked before
-- the previous one's SIGKILL (a process with SIGKILL pending forks no more)
local KILL_PASSES = 64

local read_file = fs.read_file

-- state, ppid, pgrp, session and "pid:starttime" of a process, or nil when
-- it is gone. The command name (field 2) may hold spaces and parentheses:
-- the fields after it start after its last ")".
local function proc_stat(pid)
  local st = process.stat(pid)
  if not st then return nil end
  return st.state, st.ppid, st.pgrp, st.session, pid .. ":" .. st.start_time
end

local Tag = {}
Tag.__index = Tag

--- A new tag for one owner (a PTY, a session, an exec).
function M.tag()
  return setmetatable({ value = util.hex(util.random_bytes(12)), known = {} }, Tag)
end

--- A copy of env (nil: the daemon's own) with the tag set.
function Tag:env(env)
  local e = {}
  for k, v in pairs(env or util.environ()) do e[k] = v end
  e[TAG_VAR] = self.value
  return e
end

-- The live members: { [pid] = identity }. `leader` is the owner's core
-- Process; its session counts only while it is not reaped.
function Tag:members(leader)
  local lead = leader and leader:status() == nil and leader:pid() or nil
  local needle = "\0" .. TAG_VAR .. "=" .. self.value .. "\0"
  local me = util.getpid()
  local parent, ids, found = {}, {}, {}
  for _, name in ipairs(util.readdir("/proc") or {}) do
    local pid = tonumber(name:match("^%d+$"))
    if pid and pid ~= me and pid ~= 1 then
      local state, ppid, pgrp, sid, id = proc_stat(pid)
      if state and state ~= "Z" and state ~= "X" then
        parent[pid], ids[pid] = ppid, id
        if self.known[id] or lead and (pid == lead or pgrp == lead or sid == lead) then
          found[pid] = id
        else
          local env = read_file("/proc/" .. pid .. "/environ")
          if env and ("\0" .. env):find(needle, 1, true) then found[pid] = id end
        end
      end
    end
  end
  -- descendants, down every parent chain
  repeat
    local grew = false
    for pid, ppid in pairs(parent) do
      if not found[pid] and found[ppid] then
        found[pid] = ids[pid]
        grew = true
      end
    end
  until not grew
  return found
end

--- Signal every member once; they are remembered for tag:alive() and for
-- the passes of tag:kill(). Returns how many were signalled.
function Tag:signal(sig, leader)
  local n = 0
  for pid, id in pairs(self:members(leader)) do
    self.known[id] = true
    if core.process.kill(pid, sig) then n = n + 1 end
  end
  return n
end

--- SIGKILL every member, pass after pass, until a pass finds none it has
-- not killed yet (what forked meanwhile). No SIGTERM first: what left the
-- group on purpose cannot be trusted to honour it, and the caller answers
-- once all is gone (a session gives its SIGTERM grace before, with
-- tag:signal). Returns how many were killed.
function Tag:kill(leader)
  local killed, n = {}, 0
  for _ = 1, KILL_PASSES do
    local fresh = false
    for pid, id in pairs(self:members(leader)) do
      if not killed[id] then
        killed[id] = true
        self.known[id] = true
        fresh = true
        if core.process.kill(pid, "KILL") then n = n + 1 end
      end
    end
    if not fresh then break end
  end
  return n
end

--- Whether a process tag:signal or tag:kill reached still runs.
function Tag:alive()
  for id in pairs(self.known) do
    local pid = id:match("^(%d+):")
    local state, _, _, _, now = proc_stat(pid)
    if state and state ~= "Z" and state ~= "X" and now == id then return true end
    self.known[id] = nil
  end
  return false
end

--- Find a program on PATH (the given one, else ours); returns its path or nil.
function M.which(name, path)
  local function executable(p)
    local st = core.util.stat(p, true)
    return st and st.type == "file" and st.mode & 73 ~= 0   -- any x bit (0111)
  end
  if name:find("/", 1, true) then return executable(name) and name or nil end
  path = path or os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"
  for dir in path:gmatch("[^:]+") do
    local p = dir .. "/" .. name
    if executable(p) then return p end
  end
  return nil
end

--- Spawn a long-lived child (own process group) with core.process;
-- `tag` (a proc.tag()) marks it and everything it starts.
function M.spawn(opts)
  local env = opts.env
  if opts.tag then env = opts.tag:env(env) end
  if opts.pty then   -- the terminal is stdin, stdout and stderr
    return core.process.spawn { argv = opts.argv, cwd = opts.cwd, env = env,
                                pty = opts.pty, new_group = true }
  end
  return core.process.spawn {
    argv = opts.argv, cwd = opts.cwd, env = env,
    stdin = opts.stdin or "pipe", stdout = opts.stdout or "pipe",
    stderr = opts.stderr or "pipe", new_group = true,
  }
end

local MAX_OUTPUT = 64 * 1024 * 1024

--- Run argv to completion. stdout and stderr are merged into `output`
-- unless merge == false (then `stderr` holds stderr). `timeout` seconds
-- (nil or 0: none) kills everything the run started (its tag, not only its
-- process group) and raises a 408 HttpError. A run that ends by itself
-- leaves its background processes alone: `nohup server &` is how a
-- sandbox starts a server.
function M.run(argv, opts)
  opts = opts or {}
  local timeout = opts.timeout
  if timeout == 0 then timeout = nil end
  local tag = M.tag()
  local ok, r, msg, code = pcall(process.run, argv, {
    cwd = opts.cwd, env = tag:env(opts.env), input = opts.input, timeout = timeout,
    stderr = opts.merge == false and "pipe" or "stdout", max_output = MAX_OUTPUT,
  })
  if ok and r then
    return { exit_code = r.exit_code, signal = r.signal, output = r.stdout,
             stderr = r.stderr, truncated = r.truncated }
  end
  -- process.run has killed the command's group (timeout, cancellation):
  -- what left the group goes with it. The shell is reaped or about to be,
  -- so the sweep goes by the tag alone.
  tag:kill()
  if not ok then error(r, 0) end   -- cancelled
  if code == "ETIMEDOUT" then
    http.raise(408, "command execution timeout", "PROCESS_EXECUTION_TIMEOUT")
  end
  return nil, msg, code
end

return M
