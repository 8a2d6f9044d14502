--- `sandbox.code_interpreter`: stateful Python execution (globals persist
-- between runs of one context), with output streamed as it is printed.
--
--     local ci = sb.code_interpreter
--     local ctx = ci:create_context{ cwd = "/home/daytona" }
--     ci:run_code("x = 41", { context = ctx })
--     local r = ci:run_code("print(x + 1)", { context = ctx,
--       on_stdout = function(msg) io.write(msg.output) end })
--     print(r.stdout, r.error)               --> "42\n"  nil
--     ci:delete_context(ctx)
--
-- Runs go over a WebSocket (doc/protocol.md §5.5): one JSON request, then JSON
-- messages `stdout` / `stderr` / `error` and a final `control`.
--
-- The callbacks get what Python's and TypeScript's get, so ported code reads
-- the same: `on_stdout` / `on_stderr` an OutputMessage `{ output = text }`,
-- `on_error` an ExecutionError `{ name, value, traceback }` (strings, "" when
-- absent). An OutputMessage also stands in for its text (`tostring(msg)`,
-- `print(msg)`, `"x" .. msg`, `#msg`, `msg:match(p)`), so code written when
-- the callbacks got a string keeps working -- except `io.write(msg)`, which
-- takes only strings and numbers and never calls __tostring, and `msg == s`,
-- which is false for any string: use `msg.output` there.
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local errors = require "daytona.errors"

local type, pairs, ipairs, setmetatable, getmetatable, error, pcall, tostring, string =
  type, pairs, ipairs, setmetatable, getmetatable, error, pcall, tostring, string
local concat = table.concat

local M = {}

-- what on_stdout / on_stderr receive (Python's and TypeScript's OutputMessage)
local OutputMessage = { __name = "daytona.code_interpreter.OutputMessage" }
OutputMessage.__tostring = function(m) return m.output end
-- code that appended the old string argument to a buffer keeps working
OutputMessage.__concat = function(a, b)
  if getmetatable(a) == OutputMessage then a = a.output end
  if getmetatable(b) == OutputMessage then b = b.output end
  return a .. b
end
OutputMessage.__len = function(m) return #m.output end
-- and so do its string methods (`msg:match(...)` works on msg.output)
OutputMessage.__index = {}
for name, fn in pairs(string) do
  OutputMessage.__index[name] = function(m, ...) return fn(m.output, ...) end
end
M.OutputMessage = OutputMessage

local function output_message(text)
  return setmetatable({ output = text }, OutputMessage)
end

local function str_or_empty(v)
  return type(v) == "string" and v or ""
end

local CodeInterpreter = {}
CodeInterpreter.__index = CodeInterpreter
CodeInterpreter.__name = "daytona.code_interpreter.CodeInterpreter"
M.CodeInterpreter = CodeInterpreter

--- The code interpreter of a sandbox (made by the Sandbox).
-- @param sb Sandbox
-- @return CodeInterpreter
function M.new(sb)
  return setmetatable({ _sb = sb }, CodeInterpreter)
end

local function context_id(v, f)
  if type(v) == "table" and type(v.id) == "string" then return v.id end
  return check.string(v, f, "context")
end

--- Create an interpreter context (its own Python process).
-- @param opts optional `{ cwd = dir }`
-- @return `{ id, cwd, language, active, created_at }`
function CodeInterpreter:create_context(opts)
  opts = check.options(opts, "create_context", check.set("cwd"))
  return wire.to_lua(self._sb:toolbox({ method = "POST", path = "/process/interpreter/context",
    json = { cwd = check.optstring(opts.cwd, "create_context", "cwd"), language = "python" },
    what = "create interpreter context" }))
end

--- The contexts (the built-in default context is not listed).
-- @return list of contexts
function CodeInterpreter:list_contexts()
  local r = self._sb:toolbox({ method = "GET", path = "/process/interpreter/context",
    what = "list interpreter contexts" }) or {}
  local out = {}
  for i, c in ipairs(r.contexts or {}) do out[i] = wire.to_lua(c) end
  return out
end

--- Delete a context, ending its Python process.
-- @param context a context table or its id
-- @return nothing
-- @raise DaytonaNotFoundError
function CodeInterpreter:delete_context(context)
  local id = context_id(context, "delete_context")
  self._sb:toolbox({ method = "DELETE", path = "/process/interpreter/context/" .. wire.urlencode(id),
    what = "delete interpreter context" })
end

local RUN_OPTS = check.set("context", "on_stdout", "on_stderr", "on_error", "envs", "timeout")

--- Run Python code in a context (the default one without `context`).
-- @param code string
-- @param opts optional `{ context = ctx or id, on_stdout = f(msg), on_stderr = f(msg),
--   on_error = f(err), envs = { }, timeout = s }` (timeout: the server's,
--   default 600, 0 = none; the context's state is lost when it fires). `msg`
--   is an OutputMessage: `msg.output` is the text, and `tostring(msg)` and
--   `print(msg)` give it too (`io.write` needs `msg.output`). `err` is the
--   ExecutionError also returned in the result.
-- @return `{ stdout, stderr, error = nil or { name, value, traceback } }`
--   (the error's fields are strings, "" when the server sent none)
-- @raise DaytonaTimeoutError when the run exceeds its timeout;
--   DaytonaConnectionError when the connection fails
function CodeInterpreter:run_code(code, opts)
  local f = "run_code"
  code = check.string(code, f, "code")
  opts = check.options(opts, f, RUN_OPTS)
  local on_stdout = check.optfunction(opts.on_stdout, f, "on_stdout")
  local on_stderr = check.optfunction(opts.on_stderr, f, "on_stderr")
  local on_error = check.optfunction(opts.on_error, f, "on_error")
  local timeout = check.timeout(opts.timeout, f, nil)
  local req = {
    code = code,
    contextId = opts.context ~= nil and context_id(opts.context, f) or nil,
    envs = check.strmap(opts.envs, f, "envs"),
    timeout = timeout and math.ceil(timeout) or nil,
  }
  local ws = self._sb:toolbox_ws("/process/interpreter/execute", nil, { what = f })
  local out, err_out, result_error = {}, {}, nil
  local ok, e = pcall(function()
    transport.ws_send(ws, wire.encode(req), true)
    while true do
      local kind, a, b = transport.ws_recv(ws, nil)
      if kind == "close" then
        if a == 1000 or a == 1001 or a == 1005 then return end
        if a == 4008 then
          error(errors.DaytonaTimeoutError("run_code: execution timed out" ..
            (b and b ~= "" and (": " .. b) or ""), { code = "ETIMEDOUT" }), 0)
        end
        error(errors.DaytonaConnectionError(("run_code: %s (close code %s)"):format(
          b ~= nil and b ~= "" and tostring(b) or "connection closed", tostring(a)), { code = "ECLOSED" }), 0)
      end
      local okj, m = pcall(wire.decode, a)
      if okj and type(m) == "table" then
        local t = m.type
        if t == "stdout" then
          local text = str_or_empty(m.text)
          out[#out + 1] = text
          if on_stdout then on_stdout(output_message(text)) end
        elseif t == "stderr" then
          local text = str_or_empty(m.text)
          err_out[#err_out + 1] = text
          if on_stderr then on_stderr(output_message(text)) end
        elseif t == "error" then
          result_error = wire.model({ name = str_or_empty(m.name), value = str_or_empty(m.value),
                                      traceback = str_or_empty(m.traceback) }, "ExecutionError")
          if on_error then on_error(result_error) end
        elseif t == "control" and m.text == "completed" then
          return
        end
        -- "interrupted": the close that follows says why (4008: timeout)
      end
    end
  end)
  pcall(ws.close, ws)
  if not ok then error(e, 0) end
  return { stdout = concat(out), stderr = concat(err_out), error = result_error }
end


-- a call with '.' instead of ':' says so
check.methods(CodeInterpreter, "code_interpreter")

return M
