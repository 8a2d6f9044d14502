-- examples/parallel_agents.lua: several "agents" attempt one task at the
-- same time, each in its own sandbox; the best attempt wins and its
-- workspace moves on to a fresh sandbox.
--
--     build/bin/dtlua examples/parallel_agents.lua
--
-- The task: write fib(n) in Python so that test_fib.py passes. Each agent
-- here is a canned answer (in real use, a coding agent would write it);
-- every agent runs the same test in its sandbox and gets a score. Then the
-- winner's workspace is packed with tar, downloaded, uploaded into a new
-- sandbox, unpacked and tested again there: the hand-off between rounds.
local daytona = require "daytona"
local now = require("daytona.core").now     -- a monotonic clock, in seconds

local client = daytona.new()

-- The same test for everyone: one line per case, then a score line.
local TEST = [[
import time
from solution import fib

CASES = [(0, 0), (1, 1), (2, 1), (10, 55), (30, 832040), (90, 2880067194370816120)]
passed = 0
start = time.perf_counter()
for n, want in CASES:
    try:
        got = fib(n)
    except Exception as e:
        got = repr(e)
    ok = got == want
    passed += ok
    print(("PASS" if ok else "FAIL"), "fib(%d) = %s" % (n, got))
print("SCORE %d/%d %.3f ms" % (passed, len(CASES), (time.perf_counter() - start) * 1000))
]]

-- Four answers: two right, one wrong for n = 0, one that loses precision
-- (floating point) for big n.
local AGENTS = {
  { id = "agent-a", solution = [[
from functools import lru_cache

@lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
]] },
  { id = "agent-b", solution = [[
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
]] },
  { id = "agent-c", solution = [[
def fib(n):
    a, b = 0, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return b
]] },
  { id = "agent-d", solution = [[
import math

def fib(n):
    phi = (1 + math.sqrt(5)) / 2
    return round(phi ** n / math.sqrt(5))
]] },
}

-- This run's label, put on every sandbox it makes.
local RUN = ("%08x"):format(math.random(0, 0x7fffffff))

-- Every sandbox made below is deleted when this variable goes out of
-- scope: at the end of the script, or when an error or Ctrl-C ends it
-- early. A create cut short that way may have made a sandbox we never
-- got back: the run's label finds those too. They are deleted
-- concurrently, and one failing does not stop the others.
local sandboxes <close> = setmetatable({}, { __close = function(list)
  local all, known = {}, {}
  for _, sb in ipairs(list) do all[#all + 1] = sb; known[sb.id] = true end
  local listed, found = pcall(function() return client:list{ labels = { run = RUN } }:all() end)
  for _, sb in ipairs(listed and found or {}) do
    if not known[sb.id] then all[#all + 1] = sb end
  end
  local jobs = {}
  for i, sb in ipairs(all) do
    jobs[i] = function()
      local deleted, err = pcall(sb.delete, sb)
      if not deleted then io.stderr:write("could not delete ", sb.id, ": ", tostring(err), "\n") end
    end
  end
  daytona.all(jobs)
end })

-- Run `python3 test_fib.py` in dir; returns the score line's figures.
local function run_test(sb, dir)
  local r = sb.process:exec("python3 test_fib.py", { cwd = dir, timeout = 60 })
  local passed, total, ms = r.result:match("SCORE (%d+)/(%d+) ([%d.]+) ms")
  if not passed then error("the test did not run (exit " .. r.exit_code .. "):\n" .. r.result) end
  return tonumber(passed), tonumber(total), tonumber(ms), r.result
end

-- One agent's round: a sandbox, its answer and the test written into
-- ./workspace, the test run.
local function attempt(agent)
  local sb = client:create{ language = "python",
    labels = { example = "parallel-agents", run = RUN, agent = agent.id } }
  sandboxes[#sandboxes + 1] = sb
  local workspace = sb:get_work_dir() .. "/workspace"
  -- one request for both files; a file that fails raises (err.results has each file's outcome)
  sb.fs:upload_files{
    { source = { data = agent.solution }, destination = workspace .. "/solution.py" },
    { source = { data = TEST }, destination = workspace .. "/test_fib.py" },
  }
  local passed, total, ms = run_test(sb, workspace)
  print(("%s: sandbox %s: %d/%d tests passed in %.3f ms"):format(agent.id, sb.id, passed, total, ms))
  return { agent = agent, sandbox = sb, workspace = workspace, passed = passed, total = total, ms = ms }
end

-- All four at once: daytona.all runs each function as a task and returns
-- their results in order (the first error cancels the rest and is raised).
local started = now()
local jobs = {}
for i, agent in ipairs(AGENTS) do jobs[i] = function() return attempt(agent) end end
local results = daytona.all(jobs)
print(("%d agents done in %.1f s"):format(#results, now() - started))

-- The most tests passed wins; the faster run breaks a tie.
table.sort(results, function(x, y)
  if x.passed ~= y.passed then return x.passed > y.passed end
  return x.ms < y.ms
end)
local best = results[1]
print(("winner: %s (%d/%d)"):format(best.agent.id, best.passed, best.total))

-- Pack the winner's workspace and bring it here.
local winner = best.sandbox
local r = winner.process:exec("tar -czf /tmp/workspace.tar.gz --exclude=__pycache__ -C " .. best.workspace .. " .",
  { timeout = 60 })
assert(r.exit_code == 0, r.result)
local tarball = os.tmpname()
winner.fs:download_file("/tmp/workspace.tar.gz", tarball)
local f = assert(io.open(tarball, "rb"))
print(("downloaded the winner's workspace: %d bytes of tar.gz in %s"):format(f:seek("end"), tarball))
f:close()

-- The next round starts from it, in a fresh sandbox.
local fresh = client:create{ language = "python",
  labels = { example = "parallel-agents", run = RUN, agent = "next-round" } }
sandboxes[#sandboxes + 1] = fresh
local workspace = fresh:get_work_dir() .. "/workspace"
fresh.fs:upload_file(tarball, "/tmp/workspace.tar.gz")
os.remove(tarball)
r = fresh.process:exec(("mkdir -p %s && tar -xzf /tmp/workspace.tar.gz -C %s && ls %s")
  :format(workspace, workspace, workspace), { timeout = 60 })
assert(r.exit_code == 0, r.result)
print(("unpacked into sandbox %s: %s"):format(fresh.id, (r.result:gsub("%s+", " "):gsub(" $", ""))))
local passed, total, _, output = run_test(fresh, workspace)
io.write(output)
print(("the winner's workspace passes %d/%d in the fresh sandbox"):format(passed, total))
print(("deleting the %d sandboxes of run %s"):format(#sandboxes, RUN))
