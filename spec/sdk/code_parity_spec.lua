-- Code runs as the other SDKs see them, against a private local server:
-- TypeScript code_run (tsx in the sandbox), the code interpreter's callback
-- objects (Python's OutputMessage and ExecutionError), and "" rather than
-- nil for the empty streams of session commands.
local code_interpreter = require "daytona.code_interpreter"
local fixture = require "sdk.fixture"

describe("code parity with the Python and TypeScript SDKs", function()
  local srv, client, py, ts

  setup(function()
    srv = fixture.server()
    client = fixture.client(srv)
    py = client:create{ language = "python" }
    ts = client:create{ language = "typescript" }
  end)

  teardown(function() fixture.release(srv, py, ts) end)

  describe("code_run in TypeScript", function()
    it("runs a typed program with argv and env as JavaScript gets them", function()
      local r = ts.process:code_run([[
interface Run { args: string[]; who: string | undefined }
const run: Run = { args: process.argv.slice(1), who: process.env.WHO };
const shout = <T extends string>(s: T): T => s.toUpperCase() as T;
console.log(JSON.stringify(run.args), shout(run.who ?? "nobody"));
]], { argv = { "one", "two" }, env = { WHO = "ts" } })
      assert.are.equal(0, r.exit_code, r.result)
      assert.are.equal('["one","two"] TS\n', r.result)
      assert.is_table(r.artifacts.charts)
    end)

    it("runs type-only syntax without checking types, as ts-node -T does", function()
      local r = ts.process:code_run([[
type Id = number & { readonly brand: unique symbol };
enum Colour { Red = 1, Green }
declare const later: Id;
const wrong: string = 42 as unknown as string;
console.log(Colour.Green, typeof wrong);
]])
      assert.are.equal(0, r.exit_code, r.result)
      assert.are.equal("2 number\n", r.result)
    end)

    it("reports an uncaught throw as exit code 1 with the error on stderr", function()
      local r = ts.process:code_run("const n: number = 3;\nthrow new TypeError(`bad ${n}`);")
      assert.are.equal(1, r.exit_code)
      assert.matches("TypeError: bad 3", r.result, 1, true)
      r = ts.process:code_run("process.exitCode = 9;")
      assert.are.equal(9, r.exit_code)
    end)
  end)

  describe("the code interpreter's callbacks", function()
    it("get OutputMessage objects with .output that still print as their text", function()
      local outs, errs = {}, {}
      local r = py.code_interpreter:run_code("import sys\nprint('hello', flush=True)\nprint('warn', file=sys.stderr)", {
        on_stdout = function(msg) outs[#outs + 1] = msg end,
        on_stderr = function(msg) errs[#errs + 1] = msg end,
      })
      assert.are.equal("hello\n", r.stdout)
      assert.is_true(#outs >= 1)
      local text, shown = "", ""
      for _, msg in ipairs(outs) do
        assert.is_table(msg)
        assert.are.equal(code_interpreter.OutputMessage, getmetatable(msg))
        assert.is_string(msg.output)
        text = text .. msg.output
        shown = shown .. tostring(msg)
      end
      assert.are.equal("hello\n", text)
      assert.are.equal("hello\n", shown)
      local all_err = ""
      for _, msg in ipairs(errs) do all_err = all_err .. msg end   -- __concat, as with the old strings
      assert.are.equal("warn\n", all_err)
      -- the string habits of older callbacks keep working
      local m = outs[1]
      assert.are.equal(#m.output, #m)
      assert.are.equal(m.output:upper(), m:upper())
      assert.are.equal("[" .. m.output, "[" .. m)
    end)

    it("pass the error with Python's fields, strings all", function()
      local seen
      local r = py.code_interpreter:run_code("{}['missing']", { on_error = function(e) seen = e end })
      assert.is_table(seen)
      assert.are.equal(r.error, seen)
      assert.are.equal("KeyError", seen.name)
      assert.are.equal("'missing'", seen.value)
      assert.is_string(seen.traceback)
      assert.matches("KeyError", seen.traceback, 1, true)
      assert.matches("^ExecutionError{", tostring(seen))
    end)
  end)

  describe("session commands", function()
    it("report empty stdout and stderr as \"\", async ones too", function()
      local p = py.process
      p:create_session("s-empty")
      local r = p:execute_session_command("s-empty", "true")
      assert.are.same({ "", "", 0 }, { r.stdout, r.stderr, r.exit_code })
      local c = p:execute_session_command("s-empty", { command = "echo only-out", run_async = true })
      assert.is_string(c.cmd_id)
      assert.are.same({ "", "" }, { c.stdout, c.stderr })
      assert.is_nil(c.exit_code)
      local out = {}
      p:get_session_command_logs("s-empty", c.cmd_id, { on_stdout = function(s) out[#out + 1] = s end })
      -- session log callbacks get plain strings, as Python's OutputHandler[str] does
      assert.are.equal("only-out\n", table.concat(out))
      local logs = p:get_session_command_logs("s-empty", c.cmd_id)
      assert.are.same({ "only-out\n", "" }, { logs.stdout, logs.stderr })
      logs = p:get_session_command_logs("s-empty", r.cmd_id)
      assert.are.same({ "", "" }, { logs.stdout, logs.stderr })
      p:delete_session("s-empty")
    end)
  end)
end)
