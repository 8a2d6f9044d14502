-- examples/code_interpreter.lua: the stateful Python interpreter of a
-- sandbox, with its output delivered to callbacks as it is printed.
--
--     build/bin/dtlua examples/code_interpreter.lua
--
-- `process:code_run` starts a fresh interpreter for every snippet. The code
-- interpreter keeps one running instead: in a context, variables, imports
-- and functions defined by one run are there for the next. Each context is
-- its own Python process; runs without a context share the default one.
-- Output comes back over a WebSocket while the code runs, so a long
-- computation can report progress.
local daytona = require "daytona"
local errors = daytona.errors

local client = daytona.new()
local sb <close> = client:create{ language = "python", labels = { example = "code-interpreter" } }
print(("created sandbox %s"):format(sb.id))

local ci = sb.code_interpreter

-- on_stdout and on_stderr get an OutputMessage as output arrives, as in the
-- Python and TypeScript SDKs: `msg.output` is the text (tostring(msg) and
-- print(msg) give it too; io.write needs msg.output). The pieces need not be
-- whole lines: this callback prints complete lines with a prefix.
local function by_line(prefix)
  local held = ""
  return function(msg)
    held = held .. msg.output
    for line in held:gmatch("([^\n]*)\n") do print(prefix .. line) end
    held = held:match("[^\n]*$")
  end
end

-- Streaming: on_stdout gets each piece of output as Python flushes it.
-- (`flush=True` because a pipe would otherwise buffer until the end.)
local pieces, live = 0, by_line("  live: ")
local r = ci:run_code([[
import time
for step in range(1, 4):
    print(f"step {step} of 3", flush=True)
    time.sleep(0.1)
]], {
  on_stdout = function(msg)
    pieces = pieces + 1
    live(msg)
  end,
})
print(("the run printed %d bytes in %d piece(s)"):format(#r.stdout, pieces))

-- State: a context of its own keeps what its runs define.
local ctx = ci:create_context()
print(("created context %s (%s)"):format(ctx.id, ctx.language))
ci:run_code("import math\nradius = 2", { context = ctx })
r = ci:run_code("print(f'area {math.pi * radius ** 2:.4f}')", { context = ctx })
print("the second run sees the first one's variables: " .. r.stdout:gsub("%s+$", ""))

-- The default context does not share that context's names.
r = ci:run_code("print(radius)")
print(("in the default context: %s: %s"):format(r.error.name, r.error.value))

-- Errors in the code are results, not Lua errors: `error` holds Python's
-- exception as an ExecutionError `{ name, value, traceback }` (also passed
-- to on_error as it happens), stderr its own stream.
local seen
r = ci:run_code([[
import sys
print("about to fail", file=sys.stderr)
{}["missing"]
]], {
  context = ctx,
  on_stderr = by_line("  stderr: "),
  on_error = function(err) seen = err.name end,
})
print(("on_error saw %s; the result says %s: %s"):format(seen, r.error.name, r.error.value))

-- Environment variables for one run.
r = ci:run_code("import os\nprint(os.environ['GREETING'])", { context = ctx, envs = { GREETING = "hi there" } })
print("envs: " .. r.stdout:gsub("%s+$", ""))

-- A run that takes too long raises DaytonaTimeoutError (a Lua error this
-- time); the interpreter of that context is restarted, so its state is gone.
local slow = ci:create_context()
local ok, err = pcall(ci.run_code, ci, "import time\ntime.sleep(30)", { context = slow, timeout = 1 })
print(("a 30 s run with a 1 s timeout: %s"):format(
  (not ok and errors.is(err, errors.DaytonaTimeoutError)) and "DaytonaTimeoutError" or tostring(err)))

-- Contexts end with the sandbox; deleting one ends its Python process now.
print(("contexts: %d"):format(#ci:list_contexts()))
ci:delete_context(slow)
ci:delete_context(ctx)
print(("after deleting both: %d"):format(#ci:list_contexts()))
print("deleting sandbox " .. sb.id)
