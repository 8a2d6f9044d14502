--- dtlocal.toolbox.proc: child processes for the toolbox.
--
-- One-shot runs go through `daytona.runtime.process.run` (timeouts kill the
-- whole process group). Long-lived children whose stdout and stderr are
-- pumped by one task (session shells, PTYs) use `core.process` directly,
-- since that task polls both streams without blocking on either.
--
--     proc.run(argv, { cwd =, env =, input =, timeout =, merge = true })
--       -> { exit_code, signal, output, stderr, truncated }
--          | nil, message, code   (the program could not be started)
--       raises HttpError 408 PROCESS_EXECUTION_TIMEOUT when timeout passes
--     proc.spawn{ argv =, cwd =, env =, stdin =, stdout =, stderr =, pty = }
--       -> core Process | nil, message, code     (always a new process group)
--     proc.which(name [, PATH]) -> path | nil
--     proc.event() -> Event: ev:wait([timeout]) until ev:notify()
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local errors = require "daytona.errors"
local router = require "dtlocal.router"

local wait = scheduler.wait
local setmetatable, math, pcall, error, os = setmetatable, math, pcall, error, os

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

--- Spawn a long-lived child (own process group) with core.process.
function M.spawn(opts)
  if opts.pty then   -- the terminal is stdin, stdout and stderr
    return core.process.spawn { argv = opts.argv, cwd = opts.cwd, env = opts.env,
                                pty = opts.pty, new_group = true }
  end
  return core.process.spawn {
    argv = opts.argv, cwd = opts.cwd, env = opts.env,
    stdin = opts.stdin or "pipe", stdout = opts.stdout or "pipe",
    stderr = opts.stderr or "pipe", new_group = true,
  }
end

local MAX_OUTPUT = 64 * 1024 * 1024

--- Run argv to completion. stdout and stderr are merged into `output`
-- unless merge == false (then `stderr` holds stderr). `timeout` seconds
-- (nil or 0: none) kills the process group and raises a 408 HttpError.
function M.run(argv, opts)
  opts = opts or {}
  local timeout = opts.timeout
  if timeout == 0 then timeout = nil end
  local ok, r = pcall(process.run, argv, {
    cwd = opts.cwd, env = opts.env, input = opts.input, timeout = timeout,
    stderr = opts.merge == false and "pipe" or "stdout", max_output = MAX_OUTPUT,
  })
  if ok then
    return { exit_code = r.exit_code, signal = r.signal, output = r.stdout,
             stderr = r.stderr, truncated = r.truncated }
  end
  if errors.is(r, errors.DaytonaTimeoutError) then
    router.raise(408, "command execution timeout", "PROCESS_EXECUTION_TIMEOUT")
  end
  if errors.is(r, errors.DaytonaError) and r.code then
    return nil, r.message, r.code
  end
  error(r, 0)
end

return M
