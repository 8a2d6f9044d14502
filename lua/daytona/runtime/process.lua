--- daytona.runtime.process: child processes and PTYs over the core's loop.
--
-- The Lua face of `core.process`: argument checking, waiting with
-- `scheduler.wait` (so every call reads as blocking, yields in a task and
-- runs the loop on a plain main thread), timeouts and cancellation.
--
--     local process = require "daytona.runtime.process"
--     local r = assert(process.run({ "sh", "-c", "echo hi; exit 3" }, { timeout = 10 }))
--     print(r.exit_code, r.stdout)                   --> 3   hi\n
--
--     local p <close> = assert(process.spawn({ "cat" }))
--     p:write("hello\n"); p:close_stdin()
--     for line in p:lines() do print(line) end
--     print(p:wait(5))                                --> 0   nil
--
--     local t <close> = assert(process.spawn({ "sh" }, { pty = { cols = 100, rows = 30 } }))
--     t:write("stty size\n"); print(t:read())         -- terminal output, with echo
--
-- Conventions (as the core's): a failure returns `nil, message, code`
-- with a stable upper-case code (ENOENT, EACCES, EPIPE, ETIMEDOUT, ...),
-- and `run` adds a fourth value, a table of what is known (`pid`,
-- `stdout`, `stderr` read before a timeout). Every method that waits takes
-- an optional `timeout` in seconds (nil waits for ever; its passing is the
-- failure ETIMEDOUT) and raises `CancelledError` if the task is cancelled
-- meanwhile; misuse raises a plain error; iterators (`lines`) raise the
-- failure's message. Every call may be made inside a task or on the main
-- thread.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"

local type, tostring, tonumber, error, setmetatable, pairs, ipairs, math, io =
  type, tostring, tonumber, error, setmetatable, pairs, ipairs, math, io
local concat = table.concat
local wait = scheduler.wait
local cp = core.process

local M = {}

--- Bytes queued for a child's stdin before `p:write` waits for the drain.
M.IN_BOUND = cp.IN_BOUND
--- Bytes of output buffered per stream before the child is paused until
-- Lua reads.
M.OUT_BOUND = cp.OUT_BOUND

local function argerror(fname, n, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function check_timeout(fname, n, timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    argerror(fname, n, "timeout must be a non-negative number of seconds")
  end
end


local function timer_for(timeout)
  if timeout == nil then return nil end
  return core.timer(math.floor(timeout * 1000 + 0.5))
end

---------------------------------------------------------------------------
-- Process
---------------------------------------------------------------------------

local Process = {}
Process.__index = Process
Process.__name = "daytona.runtime.process.Process"

function Process:__tostring()
  return ("process %d (%s)"):format(self.proc:pid(), self.argv0)
end

function Process:__close() self:close() end

-- collecting an abandoned handle kills its process, as closing it would
function Process:__gc() self.proc:close() end

-- Wait on the process (and the timer) until ready() is true: true, or
-- nil, message, "ETIMEDOUT" when the timer fires first. The C object is
-- signalled whenever anything changes and stays pinned until everything a
-- predicate here can wait for has happened, so this cannot wait on nothing.
local function wait_until(self, ready, timeout, what)
  if ready() then return true end
  local timer <close> = timer_for(timeout)
  while not ready() do
    if timer then
      if timer:done() then
        return nil, ("%s: timed out after %g s waiting for %s"):format(self.argv0, timeout, what), "ETIMEDOUT"
      end
      wait(self.proc, timer)
    else
      wait(self.proc)
    end
  end
  return true
end

--- The child's process id.
-- @return integer
function Process:pid() return self.proc:pid() end

--- The exit status without waiting.
-- @return nil while the process runs, else exit_code, signal as `wait`
-- gives them
function Process:status() return self.proc:status() end

--- Queue data for the child's stdin (the terminal in PTY mode).
-- Returns at once unless more than `IN_BOUND` bytes are queued; then
-- waits for the child to read.
-- @param data string
-- @param[opt] timeout seconds to wait for the drain (nil: for ever)
-- @return the process, for chaining; or nil, message, code: EPIPE when
-- the child's input is closed (else the failed write's code), ETIMEDOUT
-- when the drain takes longer than `timeout` (the data stays queued)
-- @raise `CancelledError`
function Process:write(data, timeout)
  if type(data) ~= "string" then argerror("write", 1, "string expected, got " .. type(data)) end
  check_timeout("write", 2, timeout)
  local ok, msg, code = self.proc:write(data)
  if ok == nil then return nil, ("%s: write: %s"):format(self.argv0, msg), code end
  if not ok then
    local proc = self.proc
    local drained, wmsg, wcode = wait_until(self, function() return proc:pending() <= M.IN_BOUND end,
      timeout, "stdin to drain")
    if not drained then return nil, wmsg, wcode end
  end
  return self
end

--- Send EOF on stdin once the queued data is written.
-- In PTY mode it writes the terminal's EOF character (normally ^D).
-- Idempotent.
function Process:close_stdin()
  self.proc:close_stdin()
end

local STREAMS = { stdout = true, stderr = true }

local function check_stream(fname, stream)
  if stream == nil then return "stdout" end
  if not STREAMS[stream] then argerror(fname, 1, "'stdout' or 'stderr' expected") end
  return stream
end

-- one chunk of the stream, waiting; nil at EOF; nil, message, code
local function read_chunk(self, stream, timeout)
  local proc = self.proc
  local data, msg, code
  local ok, wmsg, wcode = wait_until(self, function()
    data, msg, code = proc:read(stream)
    return data ~= ""
  end, timeout, stream)
  if not ok then return nil, wmsg, wcode end
  if data == nil and msg then
    return nil, ("%s: read %s: %s"):format(self.argv0, stream, msg), code
  end
  return data
end

--- The next chunk of output, waiting for it.
-- Output is buffered in C (`OUT_BOUND` bytes per stream, the child
-- pausing meanwhile), so read what you spawned as a pipe, or the child
-- may block writing. A stream that is not a pipe reads as EOF. In PTY mode
-- the terminal's output is "stdout".
-- @param[opt="stdout"] stream "stdout" or "stderr"
-- @param[opt] timeout seconds (nil: for ever)
-- @return a non-empty string, or nil at EOF; or nil, message, code on a
-- read error or (ETIMEDOUT) on timeout (nothing is lost)
-- @raise `CancelledError`
function Process:read(stream, timeout)
  stream = check_stream("read", stream)
  check_timeout("read", 2, timeout)
  local rest = self.rest[stream]
  if rest then   -- what lines() had read past its last line
    self.rest[stream] = nil
    return rest
  end
  return read_chunk(self, stream, timeout)
end

--- An iterator over the lines of an output stream, without the "\n"
-- (PTY output keeps its "\r"); a last line without "\n" is given too.
-- @param[opt="stdout"] stream "stdout" or "stderr"
-- @param[opt] timeout seconds to wait for each line (nil: for ever)
-- @return an iterator function: `for line in p:lines() do ... end`
-- @raise (when iterated) the message of `read`'s failure, a string;
-- `CancelledError`
function Process:lines(stream, timeout)
  stream = check_stream("lines", stream)
  check_timeout("lines", 2, timeout)
  return function()
    local buf = self.rest[stream] or ""
    while true do
      local nl = buf:find("\n", 1, true)
      if nl then
        self.rest[stream] = nl < #buf and buf:sub(nl + 1) or nil
        return buf:sub(1, nl - 1)
      end
      local chunk, msg = read_chunk(self, stream, timeout)
      if chunk == nil then
        if msg ~= nil then self.rest[stream] = buf ~= "" and buf or nil; error(msg, 2) end
        self.rest[stream] = nil
        if buf ~= "" then return buf end
        return nil
      end
      buf = buf .. chunk
    end
  end
end

--- Wait for the process to exit.
-- @param[opt] timeout seconds (nil: for ever)
-- @return exit_code: the exit status, or 128 + the signal's number when
-- killed by a signal
-- @return signal: the signal's name ("SIGKILL") when killed by one, else nil
-- (on timeout: nil, message, "ETIMEDOUT"; the process keeps running)
-- @raise `CancelledError`
function Process:wait(timeout)
  check_timeout("wait", 1, timeout)
  local proc = self.proc
  local ok, msg, code = wait_until(self, function() return proc:status() ~= nil end, timeout, "exit")
  if not ok then return nil, msg, code end
  return proc:status()
end

--- Send a signal to the process group or just the process.
-- @param[opt="TERM"] sig a name such as "KILL" or "SIGKILL", or a number
-- @param[opt=true] tree true: the whole process group (when the child
-- leads one, as it does unless spawned with `new_group = false`)
-- @return true, or false if the process no longer exists, or nil,
-- message, code when the signal cannot be sent (e.g. EPERM)
-- @raise a plain error for an unknown signal
function Process:kill(sig, tree)
  if tree == nil then tree = true end
  local ok, msg, code = self.proc:kill(sig or "TERM", tree)
  if ok then return true end
  if code == "ESRCH" then return false end
  return nil, ("%s: kill: %s"):format(self.argv0, msg), code
end

--- Resize the terminal (PTY mode); the child sees SIGWINCH.
-- @param cols integer, 1 to 65535
-- @param rows integer, 1 to 65535
-- @return true, or nil, message, "EBADF" when the terminal is closed
-- @raise a plain error when the process has no PTY or a size is out of
-- range
function Process:resize(cols, rows)
  local ok, msg, code = self.proc:resize(cols, rows)
  if not ok then return nil, ("%s: resize: %s"):format(self.argv0, msg), code end
  return true
end

--- Close the handle: kill the process group (SIGKILL) if it still runs
-- and drop buffered output. Idempotent; also `local p <close> = ...` and
-- collection.
function Process:close()
  self.proc:close()
end

local SPAWN_KEYS = {
  cwd = true, env = true, stdin = true, stdout = true, stderr = true, pty = true, new_group = true,
  fds = true, detached = true,
}

local function spawn(fname, argv, opts)
  if type(argv) ~= "table" then argerror(fname, 1, "argv table expected, got " .. type(argv)) end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(fname, 2, "options table expected, got " .. type(opts))
  end
  local o = { argv = argv }
  for k, v in pairs(opts or {}) do
    if not SPAWN_KEYS[k] then argerror(fname, 2, "unknown option '" .. tostring(k) .. "'") end
    o[k] = v
  end
  local proc, msg, code = cp.spawn(o)
  if not proc then return nil, msg, code end
  return setmetatable({ proc = proc, argv0 = tostring(argv[1]), rest = {} }, Process)
end

--- Start a process.
-- Unless `detached`, the process is killed (SIGKILL, whole group) when the handle is closed
-- (`local p <close> = ...`), collected, or when the loop shuts down; a
-- task cancelled while waiting on it closes it through its `<close>`
-- variable.
-- @param argv `{ program, args... }`: argv[1] is searched in PATH (the
-- child's PATH when `env` gives one)
-- @param[opt] opts options:
-- @param[opt] opts.cwd working directory of the child
-- @param[opt] opts.env `{ NAME = "value" }` or `{ "NAME=value", ... }`: the
-- child's whole environment (nil inherits ours)
-- @param[opt="pipe"] opts.stdin "pipe", "null", "inherit", a descriptor
-- number or an open io file
-- @param[opt="pipe"] opts.stdout the same
-- @param[opt="pipe"] opts.stderr the same, or "stdout": merged into the
-- stdout pipe
-- @param[opt] opts.pty `{ cols = 80, rows = 24 }` (or true): run on a new
-- pseudo terminal; stdin, stdout and stderr are the terminal, read with
-- `p:read("stdout")`; the child leads a new session with the terminal as
-- its controlling terminal
-- @param[opt=true] opts.new_group false: stay in our process group
-- (by default the child leads a new group, so `p:kill` reaches its
-- descendants)
-- @param[opt] opts.fds a list of up to 8 open descriptors of ours that
-- become the child's descriptors 3, 4, ... (not with `pty`); every other
-- descriptor of ours is closed in the child as always
-- @param[opt=false] opts.detached true: a daemon that outlives us. It
-- leads its own session; closing or collecting the handle and the loop's
-- shutdown leave it running (only `p:kill` signals it), and its exit keeps
-- no loop running. Needs stdin, stdout and stderr that are not pipes
-- ("null", a descriptor or a file); not with `pty` or `new_group = false`
-- @return a `Process`, or nil, message, code when the process cannot be
-- started: ENOENT (no such program or cwd), EACCES (not executable) or
-- another errno-style code
-- @raise a plain error on misuse
function M.spawn(argv, opts)
  return spawn("spawn", argv, opts)
end

---------------------------------------------------------------------------
-- run
---------------------------------------------------------------------------

local RUN_KEYS = { cwd = true, env = true, input = true, timeout = true, max_output = true, stderr = true }
local RUN_STDERR = { pipe = true, stdout = true, null = true }

--- Run a process to completion, collecting its output.
-- @param argv as for `spawn`
-- @param[opt] opts options:
-- @param[opt] opts.cwd as for `spawn`
-- @param[opt] opts.env as for `spawn`
-- @param[opt] opts.input string written to stdin (stdin is /dev/null
-- without it)
-- @param[opt="pipe"] opts.stderr "pipe", "stdout" (merged into stdout) or
-- "null"
-- @param[opt] opts.timeout seconds for the whole run (nil: no limit)
-- @param[opt] opts.max_output bytes kept per stream; the rest is read and
-- dropped, so the child never blocks
-- @return `{ exit_code =, signal = (nil or "SIGKILL"...), stdout =, stderr =
-- (nil when merged or "null"), truncated = boolean }`; or nil, message,
-- code like `spawn`, or nil, message, "ETIMEDOUT", `{ pid =, stdout =,
-- stderr = }` (what was read) after killing the process tree when the
-- timeout passes
-- @raise `CancelledError` (after killing the tree) on cancellation; a
-- plain error on misuse
function M.run(argv, opts)
  opts = opts or {}
  if type(opts) ~= "table" then argerror("run", 2, "options table expected, got " .. type(opts)) end
  for k in pairs(opts) do
    if not RUN_KEYS[k] then argerror("run", 2, "unknown option '" .. tostring(k) .. "'") end
  end
  if opts.input ~= nil and type(opts.input) ~= "string" then argerror("run", 2, "'input' must be a string") end
  if opts.stderr ~= nil and not RUN_STDERR[opts.stderr] then
    argerror("run", 2, "'stderr' must be \"pipe\", \"stdout\" or \"null\"")
  end
  local max = opts.max_output
  if max ~= nil and (math.type(max) ~= "integer" or max < 0) then
    argerror("run", 2, "'max_output' must be a non-negative integer")
  end
  local timeout = opts.timeout
  check_timeout("run", 2, timeout)

  local p <close>, smsg, scode = spawn("run", argv, {
    cwd = opts.cwd, env = opts.env,
    stdin = opts.input and "pipe" or "null",
    stderr = opts.stderr or "pipe",
  })
  if not p then return nil, smsg, scode end
  local proc = p.proc
  if opts.input then
    -- everything is queued in C at once: we already hold the input, and
    -- output is read meanwhile, so a child that writes before it reads
    -- cannot deadlock us. A child that exits without reading makes the
    -- write fail with EPIPE, which is no error of the run.
    proc:write(opts.input)
    proc:close_stdin()
  end

  local out = { stdout = {}, stderr = {} }
  local size = { stdout = 0, stderr = 0 }
  local truncated = false
  local rmsg, rcode   -- a read error
  local function drain()
    local more = false
    for _, s in ipairs({ "stdout", "stderr" }) do
      while true do
        local chunk, msg, code = proc:read(s)
        if chunk == nil then
          if msg then rmsg, rcode = ("%s: read %s: %s"):format(p.argv0, s, msg), code end
          break
        end
        if chunk == "" then more = true; break end
        if max and size[s] + #chunk > max then
          chunk = chunk:sub(1, max - size[s])
          truncated = true
        end
        if #chunk > 0 then
          local t = out[s]
          t[#t + 1] = chunk
          size[s] = size[s] + #chunk
        end
      end
    end
    return more or proc:status() == nil
  end

  local timer <close> = timer_for(timeout)
  while drain() do
    if rmsg then return nil, rmsg, rcode end   -- closing p kills the tree
    if timer and timer:done() then
      proc:kill("KILL", true)
      return nil, ("%s: timed out after %g s"):format(p.argv0, timeout), "ETIMEDOUT", {
        pid = proc:pid(), stdout = concat(out.stdout), stderr = concat(out.stderr),
      }
    end
    if timer then wait(proc, timer) else wait(proc) end
  end
  if rmsg then return nil, rmsg, rcode end
  local code, sig = proc:status()
  local merged = opts.stderr == "stdout" or opts.stderr == "null"
  return {
    exit_code = code,
    signal = sig,
    stdout = concat(out.stdout),
    stderr = not merged and concat(out.stderr) or nil,
    truncated = truncated,
  }
end

---------------------------------------------------------------------------
-- /proc
---------------------------------------------------------------------------

--- What /proc/<pid>/stat says of a process (Linux).
-- The command name (field 2) may hold spaces and parentheses: the fields
-- after it start after its last ")".
-- @param pid integer
-- @return `{ state = "R", ppid =, pgrp =, session =, start_time = clock
-- ticks since boot }`, or nil when there is no such process
function M.stat(pid)
  local f = io.open("/proc/" .. tostring(pid) .. "/stat", "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local rest = s and s:match("^.*%)%s+(.*)$")
  if not rest then return nil end
  local v, n = {}, 0
  for w in rest:gmatch("%S+") do
    n = n + 1
    v[n] = w
    if n == 20 then break end
  end
  if n < 20 then return nil end
  return { state = v[1], ppid = tonumber(v[2]), pgrp = tonumber(v[3]), session = tonumber(v[4]),
           start_time = tonumber(v[20]) }
end

--- The start time of a process (field 22 of /proc/<pid>/stat, clock ticks
-- since boot): with the pid, it names the process even after the pid is
-- reused.
-- @param pid integer
-- @return integer, or nil when there is no such process
function M.start_time(pid)
  local st = M.stat(pid)
  return st and st.start_time
end

M.Process = Process
return M
