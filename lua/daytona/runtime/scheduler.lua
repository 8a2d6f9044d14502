--- The scheduler: coroutine tasks over the core's one event loop.
--
-- There is one suspension point, `wait(obj, ...)`. In a task it yields to the
-- scheduler until one of the objects is signalled; anywhere else (the main
-- thread of a plain `lua5.4`, a coroutine that is not a task) it runs the loop
-- and the other tasks until then. Everything that looks blocking in the SDK is
-- built on it, so the same code works in both places.
--
-- Waitable objects are the core's userdata (signalled from C through the
-- ready list) and tasks (signalled here when they finish).
--
-- Cancelling is not leaving: a cancelled task gets one CancelledError and
-- may then wait again (its `<close>` handlers delete sandboxes over HTTP),
-- and `all` and `timeout` raise only once the tasks they cancelled have
-- finished, or `cleanup_timeout` seconds have passed.
--
-- Ctrl-C on the main thread of a plain `lua5.4` (or another host that is
-- not dtlua): lua.c's SIGINT handler only sets a hook that fires when Lua
-- code runs, which it does not while the loop sleeps in a wait. So a wait
-- on the main thread borrows SIGINT while it sleeps (and gives it back
-- after: lua.c's handler, a host's, the default). A Ctrl-C there cancels
-- the tasks that wait was for, waits for their cleanup (`cleanup_timeout`)
-- and raises `errors.InterruptedError` (a CancelledError) from the wait, so
-- the program unwinds through its `<close>` handlers. A second Ctrl-C
-- during that cleanup, up to `cleanup_timeout` seconds after the first,
-- ends the process as an uncaught SIGINT does. Under dtlua, `run` watches
-- SIGINT itself (it cancels every task and exits 130; SIGTERM likewise,
-- 143, unless the program watches SIGTERM) and nothing is borrowed; a
-- SIGINT that is ignored (a background job) stays ignored.
local core = require "daytona.core"
local errors = require "daytona.errors"

local coroutine, setmetatable, select, table, pcall, tostring, type, xpcall, error =
  coroutine, setmetatable, select, table, pcall, tostring, type, xpcall, error
local unpack = table.unpack

local M = {}

--- Seconds that `all` and `timeout` wait, after cancelling tasks, for those
-- tasks to finish their cleanup before raising. When the bound is hit, the
-- tasks still running are cancelled once more (the wait their cleanup is in
-- raises CancelledError), get one turn to unwind, and are left to finish on
-- their own while the error is raised; under a plain `lua5.4` that raise may
-- end the process before they do. Set it to what your slowest cleanup needs.
M.cleanup_timeout = 30

-- scheduler state lives in one table so that a re-require (busted does) sees the same
local S = package.loaded["daytona.runtime.scheduler.state"] or {
  tasks = {},          -- coroutine -> Task, for tasks not finished
  ntasks = 0,
  waiters = {},        -- waitable -> { [waiter] = true }; a waiter is a Task or a Blocker
  runq = {},           -- tasks to resume: { task, value } records
  runq_n = 0,
  lua_ready = {},      -- waitables signalled from Lua (finished tasks)
  buf = {},            -- reused output array of core.step
  interrupted = false, -- Ctrl-C seen by `run`
  sigint = nil,        -- SIGINT borrowed by the main thread's waits (see borrow_sigint)
  sigint_users = 0,    -- waits sharing it (a wait for cleanup inside a wait)
  interrupted_at = nil, -- core.now() of the Ctrl-C a wait raised InterruptedError for
  failed = setmetatable({}, { __mode = "k" }), -- failed tasks (weak), checked for unobserved errors at the end of `run`
}
package.loaded["daytona.runtime.scheduler.state"] = S

local WAIT = setmetatable({}, { __name = "daytona.wait" })   -- the tag of our yields
local CANCEL = setmetatable({}, { __name = "daytona.cancel" })

---------------------------------------------------------------------------
-- Tasks
---------------------------------------------------------------------------

local Task = {}
Task.__index = Task
Task.__name = "daytona.runtime.scheduler.Task"

local function report(task)
  io.stderr:write("dtlua: error in task nobody waited for: ",
    tostring(task.err), "\n", task.traceback or "", "\n")
end

function Task.__gc(task)
  if task.status == "failed" and not task.observed then report(task) end
end

function Task:__tostring()
  return ("task %s (%s)"):format(self.name or tostring(self.co):match("0x%x+") or "?", self.status)
end

local function signal_lua(obj)
  local q = S.lua_ready
  q[#q + 1] = obj
end

local function schedule(task, value)
  local n = S.runq_n + 1
  S.runq[n] = { task, value }
  S.runq_n = n
end

-- Remove a waiter from every object it waits on.
local function unregister(waiter)
  local objs = waiter.waiting_on
  if not objs then return end
  for i = 1, #objs do
    local set = S.waiters[objs[i]]
    if set then
      set[waiter] = nil
      if next(set) == nil then S.waiters[objs[i]] = nil end
    end
  end
  waiter.waiting_on = nil
end

local function register(waiter, ...)
  local n = select("#", ...)
  local objs = { ... }
  for i = 1, n do
    local obj = objs[i]
    local set = S.waiters[obj]
    if not set then set = {}; S.waiters[obj] = set end
    set[waiter] = true
  end
  waiter.waiting_on = objs
end

-- A signalled object wakes everything waiting on it.
local function dispatch(obj)
  local set = S.waiters[obj]
  if not set then return end
  S.waiters[obj] = nil
  for waiter in pairs(set) do
    unregister(waiter)
    if waiter.co then schedule(waiter, obj)
    else
      waiter.fired = obj
      S.blocker_fired = true   -- step must not block: its caller can go on
    end
  end
end

local function finish(task, ok, ...)
  S.tasks[task.co] = nil
  S.ntasks = S.ntasks - 1
  if ok then
    task.status = "done"
    task.results = table.pack(...)
  else
    local err = ...
    if errors.is(err, errors.CancelledError) then
      task.status = "cancelled"
    else
      task.status = "failed"
      S.failed[task] = true
    end
    task.err = err
  end
  signal_lua(task)
end

-- Runs in the failing task's coroutine, before the stack unwinds. It
-- returns the error itself, since what it returns is also what the
-- task's `<close>` handlers receive; the traceback goes beside it.
local function traceback_handler(err)
  local task = S.tasks[coroutine.running()]
  if task then
    local tb = debug.traceback(type(err) == "string" and err or tostring(err), 2)
    -- the frames below the task's function are the scheduler's own
    -- (task_body's xpcall): they say nothing about the error, so they go
    local cut = tb:find("\n\t%[C%]: in function 'xpcall'\n[^\n]*daytona/runtime/scheduler%.lua:[^\n]*\n?[^\n]*$")
    task.traceback = cut and tb:sub(1, cut - 1) or tb
  end
  return err
end

local function task_body(task, fn, ...)
  local res = table.pack(xpcall(fn, traceback_handler, ...))
  if res[1] then return unpack(res, 2, res.n) end
  error(res[2], 0)
end

local function resume(task, value)
  if task.status ~= "running" then return end
  local co = task.co
  local res = table.pack(coroutine.resume(co, value))
  if coroutine.status(co) == "dead" then
    finish(task, unpack(res, 1, res.n))
  elseif res[2] ~= WAIT then
    -- a bare coroutine.yield() inside a task: a cooperative yield, run again later
    schedule(task, nil)
  end
end

--- Run fn(...) as a new task; it starts on the next scheduler step.
-- @return Task
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error(("bad argument #1 to 'spawn' (function expected, got %s)"):format(type(fn)), 2)
  end
  local task = setmetatable({ status = "running", observed = false }, Task)
  local args = table.pack(...)
  task.co = coroutine.create(function()
    return task_body(task, fn, unpack(args, 1, args.n))
  end)
  S.tasks[task.co] = task
  S.ntasks = S.ntasks + 1
  schedule(task, nil)
  return task
end

--- The running task, or nil outside one.
function M.running()
  return S.tasks[coroutine.running()]
end

-- SIGINT for the length of a wait on the main thread (see the top): the
-- watcher, or nil when it cannot be borrowed (ignored, or watched by
-- someone else such as `run`). Nested waits share the outer one's.
local function borrow_sigint()
  if S.sigint_users == 0 then S.sigint = core.signal("INT", "borrow") or nil end
  if S.sigint then S.sigint_users = S.sigint_users + 1 end
  return S.sigint
end

local function return_sigint(guard)
  if not guard then return end
  S.sigint_users = S.sigint_users - 1
  if S.sigint_users == 0 then
    S.sigint = nil
    guard:close()
  end
end

local settle

-- A Ctrl-C reached a wait on the main thread. The first: cancel the tasks
-- it waited for and let their cleanup run, then raise InterruptedError.
-- One during that cleanup: end the process, as lua.c's default would.
local function interrupted(objs)
  local now = core.now()
  if S.interrupted_at and now - S.interrupted_at < M.cleanup_timeout then
    -- an outer wait may still hold it: give it back before dying by it
    if S.sigint then S.sigint:close() end
    S.sigint, S.sigint_users = nil, 0
    io.stderr:write("interrupted again: ending without the rest of the cleanup\n")
    core.raise_default("INT")
  end
  S.interrupted_at = now
  local tasks = {}
  for i = 1, #objs do
    local t = objs[i]
    if getmetatable(t) == Task and t.status == "running" then
      t:cancel()
      t.observed = true
      tasks[#tasks + 1] = t
    end
  end
  if #tasks > 0 then settle(tasks) end
  error(errors.InterruptedError("interrupted"), 0)
end

--- Wait until one of the objects is signalled; returns the one that was.
-- Raises CancelledError if the task is cancelled meanwhile. A task gets
-- that error once, so the waits of its cleanup that follow work as usual.
-- On the main thread of a plain `lua5.4`, Ctrl-C raises
-- `errors.InterruptedError` (a CancelledError) here once the tasks waited
-- for have been cancelled and cleaned up (see the module's description).
function M.wait(...)
  local task = S.tasks[coroutine.running()]
  if task then
    if task.cancel_requested then
      task.cancel_requested = nil
      task.cancelling = true
      error(errors.CancelledError("task cancelled"), 0)
    end
    register(task, ...)
    local obj = coroutine.yield(WAIT)
    if obj == CANCEL then
      error(errors.CancelledError("task cancelled"), 0)
    end
    return obj
  end
  -- not in a task: drive the loop ourselves until an object fires
  local blocker = {}
  local first = ...
  local guard = borrow_sigint()
  if guard then register(blocker, guard, ...) else register(blocker, ...) end
  local ok, err = pcall(function()
    while not blocker.fired do
      if not M.step(-1) and not blocker.fired then
        error("deadlock: waiting on " .. tostring(first) .. " but nothing can wake it", 0)
      end
    end
  end)
  unregister(blocker)
  -- a Ctrl-C that came with another wake-up counts all the same
  local sigint = guard and guard:take() > 0
  return_sigint(guard)
  if sigint then interrupted({ ... }) end
  if not ok then error(err, 0) end
  return blocker.fired
end

--- Wait for the task; returns its results or raises its error.
function Task:wait()
  self.observed = true
  while self.status == "running" do M.wait(self) end
  if self.status == "done" then return unpack(self.results, 1, self.results.n) end
  error(self.err, 0)
end

--- True once the task has finished (done, failed or cancelled).
function Task:done()
  return self.status ~= "running"
end

--- Cancel the task: it gets a CancelledError at its current (or next) wait,
-- so its to-be-closed handles close and its processes and transfers stop.
-- A task is cancelled once: cancelling it again while that CancelledError
-- unwinds it does nothing, so the waits of its cleanup (a sandbox's delete
-- in a `<close>` handler) are not cut short. The wait for that cleanup is
-- bounded by whoever waits for the task (`all`, `timeout`: `cleanup_timeout`).
function Task:cancel()
  -- a second CancelledError would abort the cleanup the first one started
  if self.status ~= "running" or self.cancelling then return end
  if S.tasks[coroutine.running()] == self then
    self.cancel_requested = true        -- cancelling ourselves: at the next wait
  elseif self.waiting_on then
    self.cancelling = true
    unregister(self)
    schedule(self, CANCEL)
  elseif not self.started then
    -- never ran: finish it without running
    S.tasks[self.co] = nil
    S.ntasks = S.ntasks - 1
    self.status = "cancelled"
    self.err = errors.CancelledError("task cancelled")
    signal_lua(self)
  else
    self.cancel_requested = true
  end
end

---------------------------------------------------------------------------
-- The loop
---------------------------------------------------------------------------

local function run_queue()
  -- take the whole queue at once: resumed tasks schedule into a fresh one
  while S.runq_n > 0 do
    local q, n = S.runq, S.runq_n
    S.runq, S.runq_n = {}, 0
    for i = 1, n do
      local rec = q[i]
      rec[1].started = true
      resume(rec[1], rec[2])
    end
  end
  -- tasks finished meanwhile wake their waiters
  local lr = S.lua_ready
  if #lr > 0 then
    S.lua_ready = {}
    for i = 1, #lr do dispatch(lr[i]) end
  end
end

local function has_runnable()
  return S.runq_n > 0 or #S.lua_ready > 0
end

--- Run ready work once. timeout_ms < 0 waits for the next event; 0 never blocks.
-- Returns true while there is anything left that could make progress.
function M.step(timeout_ms)
  run_queue()
  local buf = S.buf
  local fired = S.blocker_fired
  S.blocker_fired = false
  local n = core.step((has_runnable() or fired) and 0 or (timeout_ms or -1), buf)
  for i = 1, n do
    local obj = buf[i]
    buf[i] = nil
    dispatch(obj)
  end
  run_queue()
  while has_runnable() do run_queue() end
  return has_runnable() or core.alive()
end

--- The number of tasks not finished yet.
function M.count()
  return S.ntasks
end

--- Cancel every unfinished task (Ctrl-C, shutdown).
function M.cancel_all()
  local list = {}
  for _, t in pairs(S.tasks) do list[#list + 1] = t end
  for _, t in ipairs(list) do t:cancel() end
end

-- Whatever failed and was never waited for is reported now, not at exit's GC.
local function report_unobserved()
  local failed = S.failed
  S.failed = setmetatable({}, { __mode = "k" })
  for t in pairs(failed) do
    if not t.observed then t.observed = true; report(t) end
  end
end

-- Cancel once more the tasks whose cleanup overran `cleanup_timeout` and
-- give them one turn to unwind to their next wait; they are then left.
local function abandon()
  io.stderr:write("dtlua: ", S.ntasks, " task(s) still cleaning up after ",
    M.cleanup_timeout, " s (cleanup_timeout): ending without them\n")
  local list = {}
  for _, t in pairs(S.tasks) do list[#list + 1] = t end
  for _, t in ipairs(list) do t.cancelling = nil; t:cancel() end
  run_queue()
end

local function ms_until(deadline)
  return math.max(0, math.ceil((deadline - core.now()) * 1000))
end

--- Run fn(...) as the main task and drive the loop until it and every task
-- it spawned have finished. This is how dtlua runs a chunk.
--
-- A main task that returns while other tasks run (a server it started)
-- leaves them running: `run` goes on until they finish. SIGINT, and
-- SIGTERM unless the program watches SIGTERM itself (`core.signal("TERM")`,
-- a server with its own graceful stop), cancel every task; their cleanup
-- is bounded by `cleanup_timeout` (then they are cancelled once more, get
-- one turn and are left) and a second signal ends the wait for it at once.
-- The result is then `false, "interrupted", "INT"|"TERM"`.
--
-- A main task that fails (or is cancelled) returns `false, err, traceback`
-- at once, with the other tasks still there, so that the error can be
-- reported before they are cleaned up: call `shutdown` next.
-- @return true, results... | false, err, traceback | false, "interrupted", signal
function M.run(fn, ...)
  local main = M.spawn(fn, ...)
  main.observed = true
  main.name = "main"
  local sigint = core.signal("INT")
  local sigterm = core.signal("TERM", "fallback")
  S.interrupted = false
  local watching = { [sigint] = "INT", [sigterm] = "TERM" }
  local deadline   -- of the cleanup after a signal
  while S.ntasks > 0 or has_runnable() do
    run_queue()
    -- the main chunk failed: its error goes out now, not after the
    -- servers and background tasks it leaves (shutdown ends those)
    if main.status ~= "running" and main.status ~= "done" and not S.interrupted then break end
    -- the last task may have finished just now: then there is nothing to
    -- wait for, and a blocking step would sleep until some idle timer of
    -- the core (libwebsockets keeps a 30 s one) fires
    if S.ntasks == 0 and not has_runnable() then break end
    local buf = S.buf
    local n = core.step(has_runnable() and 0 or deadline and ms_until(deadline) or -1, buf)
    local again = false
    for i = 1, n do
      local obj = buf[i]
      buf[i] = nil
      local sig = watching[obj]
      if sig then
        if obj:take() > 0 then
          if not S.interrupted then
            S.interrupted = sig
            deadline = core.now() + M.cleanup_timeout
            M.cancel_all()
          else
            again = true
          end
        end
      else
        dispatch(obj)
      end
    end
    if again then
      io.stderr:write("dtlua: interrupted again: ending without the rest of the cleanup\n")
      break
    end
    if deadline and core.now() >= deadline and S.ntasks > 0 then
      abandon()
      break
    end
    if not has_runnable() and S.ntasks > 0 and not core.alive() then
      -- every task waits on something nothing will signal
      io.stderr:write("dtlua: deadlock: ", S.ntasks, " task(s) wait on nothing that can finish\n")
      M.cancel_all()
      run_queue()
      break
    end
  end
  sigint:close()
  sigterm:close()
  report_unobserved()
  if S.interrupted then return false, "interrupted", S.interrupted end
  if main.status == "done" then return true, unpack(main.results, 1, main.results.n) end
  return false, main.err, main.traceback
end

--- After `run` returned an error: cancel every task still running (the
-- servers and background tasks the main task left) and drive the loop
-- until they have finished their cleanup, at most `cleanup_timeout`
-- seconds (then they are cancelled once more, get one turn and are left;
-- the process ending closes what they hold). A SIGINT or SIGTERM meanwhile
-- ends the wait at once. Returns the number of tasks left unfinished.
function M.shutdown()
  if S.ntasks == 0 and not has_runnable() then report_unobserved(); return 0 end
  M.cancel_all()
  local sigint <close> = core.signal("INT")
  local sigterm <close> = core.signal("TERM")
  local deadline = core.now() + M.cleanup_timeout
  while S.ntasks > 0 or has_runnable() do
    run_queue()
    if S.ntasks == 0 and not has_runnable() then break end
    if core.now() >= deadline then abandon(); break end
    if not has_runnable() and not core.alive() then run_queue(); break end
    local buf = S.buf
    local n = core.step(has_runnable() and 0 or ms_until(deadline), buf)
    local stop = false
    for i = 1, n do
      local obj = buf[i]
      buf[i] = nil
      if obj == sigint or obj == sigterm then
        if obj:take() > 0 then stop = true end
      else
        dispatch(obj)
      end
    end
    if stop then
      io.stderr:write("dtlua: interrupted: ending without the rest of the cleanup\n")
      break
    end
  end
  report_unobserved()
  return S.ntasks
end

---------------------------------------------------------------------------
-- Combinators
---------------------------------------------------------------------------

--- Sleep for the given number of seconds.
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error("bad argument #1 to 'sleep' (non-negative number expected)", 2)
  end
  local t <close> = core.timer(math.floor(seconds * 1000 + 0.5))
  while not t:done() do M.wait(t) end
end

-- Cancel a task again although it is unwinding from a cancellation: for
-- a cleanup that overran its bound.
local function force_cancel(task)
  task.cancelling = nil
  task:cancel()
end

-- Give the other tasks one turn (the ones just cancelled run to their next
-- wait): a cooperative yield in a task, one non-blocking step elsewhere.
local function one_turn()
  if S.tasks[coroutine.running()] then coroutine.yield() else M.step(0) end
end

-- Wait until the given tasks, just cancelled, have finished: their
-- `<close>` and error handlers run, and may wait on I/O themselves. At most
-- M.cleanup_timeout seconds; then the ones still running are cancelled
-- once more and get one turn, and we go on. A CancelledError for the
-- waiting task itself does not end this wait (it is cleanup too); that
-- task counts as cancelled from then on, and its caller raises the error
-- it was already raising.
function settle(tasks)
  local function still_running()
    local open = {}
    for i = 1, #tasks do
      if tasks[i].status == "running" then open[#open + 1] = tasks[i] end
    end
    return open
  end
  local open = still_running()
  if #open == 0 then return end
  local timer <close> = core.timer(math.floor(M.cleanup_timeout * 1000 + 0.5))
  repeat
    if timer:done() then
      for i = 1, #open do force_cancel(open[i]) end
      one_turn()
      return
    end
    local ok, err = pcall(M.wait, timer, unpack(open))
    if not ok and not errors.is(err, errors.CancelledError) then error(err, 0) end
    open = still_running()
  until #open == 0
end

local function as_task(item, i)
  if type(item) == "function" then return M.spawn(item) end
  if getmetatable(item) == Task then return item end
  error(("bad argument to 'all' (item %d is a %s, expected a function or task)"):format(i, type(item)), 3)
end

--- Run functions (or tasks) concurrently; returns a list of their first
-- results in order. The first error cancels the others and is raised once
-- they have finished their cleanup (their `<close>` handlers ran), or after
-- `cleanup_timeout` seconds (see there). The same when the caller itself is
-- cancelled while it waits: the CancelledError is raised after the others'
-- cleanup.
-- @raise the first task's error; CancelledError
function M.all(list)
  if type(list) ~= "table" then
    error("bad argument #1 to 'all' (table expected, got " .. type(list) .. ")", 2)
  end
  local tasks, results = {}, {}
  for i = 1, #list do tasks[i] = as_task(list[i], i) end
  local pending = #tasks
  local ok, err = pcall(function()
    while pending > 0 do
      local open = {}
      for i = 1, #tasks do
        local t = tasks[i]
        if t.status == "running" then open[#open + 1] = t
        elseif not t.collected then
          t.collected = true
          t.observed = true
          pending = pending - 1
          if t.status ~= "done" then error(t.err, 0) end
          results[i] = t.results[1]
        end
      end
      if #open > 0 then M.wait(unpack(open)) end
    end
  end)
  if not ok then
    for i = 1, #tasks do tasks[i]:cancel(); tasks[i].observed = true end
    settle(tasks)
    error(err, 0)
  end
  return results
end

--- Run fn(...) with a deadline; raises DaytonaTimeoutError if it takes longer
-- than `seconds`, else returns its results. At the deadline fn is cancelled,
-- and the error is raised once fn's cleanup has run (its `<close>` handlers),
-- or after `cleanup_timeout` more seconds (see there). A cancel of the
-- caller cancels fn the same way before the CancelledError is raised.
-- @raise DaytonaTimeoutError; fn's error; CancelledError
function M.timeout(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error("bad argument #1 to 'timeout' (non-negative number expected)", 2)
  end
  local task = M.spawn(fn, ...)
  task.observed = true
  local timer <close> = core.timer(math.floor(seconds * 1000 + 0.5))
  local ok, err = pcall(function()
    while task.status == "running" and not timer:done() do M.wait(task, timer) end
  end)
  if not ok then task:cancel(); settle({ task }); error(err, 0) end
  if task.status == "running" then
    task:cancel()
    settle({ task })
    error(errors.DaytonaTimeoutError(("operation timed out after %g s"):format(seconds)), 2)
  end
  return task:wait()
end

M.Task = Task
return M
