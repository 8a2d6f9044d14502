-- sandbox.process: exec, code_run, sessions and their logs, against a
-- private local server.
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"
local fixture = require "sdk.fixture"

describe("sandbox.process", function()
  local srv, client, sb

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv, { language = "python" })
  end)

  teardown(function() fixture.release(srv, sb) end)

  describe("exec", function()
    it("returns the exit code and the merged output", function()
      local r = sb.process:exec("echo out; echo err >&2; exit 3")
      assert.are.equal(3, r.exit_code)
      assert.are.equal("integer", math.type(r.exit_code))
      assert.matches("out\n", r.result, 1, true)
      assert.matches("err\n", r.result, 1, true)
      assert.are.equal(r.result, r.artifacts.stdout)
    end)

    it("honours cwd and env", function()
      local r = sb.process:exec("pwd; echo $A$B", { cwd = "/tmp", env = { A = "1", B = "two" } })
      assert.are.equal(0, r.exit_code)
      assert.are.equal("/tmp\n1two\n", r.result)
    end)

    it("raises DaytonaTimeoutError when the command outlives its timeout", function()
      local err = fixture.fails(sb.process.exec, sb.process, "sleep 30", { timeout = 1 })
      assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
    end)

    it("reports a missing cwd as an error or a failing exit code", function()
      local ok, r = pcall(sb.process.exec, sb.process, "true", { cwd = "/no/such/dir" })
      if ok then assert.are_not.equal(0, r.exit_code) else assert.is_true(errors.is(r, errors.DaytonaError)) end
    end)
  end)

  describe("code_run", function()
    it("runs code in the sandbox's language with argv and env", function()
      local r = sb.process:code_run("import os, sys\nprint(sys.argv[1:], os.environ['X'])",
        { argv = { "a", "b" }, env = { X = "ex" } })
      assert.are.equal(0, r.exit_code)
      assert.are.equal("['a', 'b'] ex\n", r.result)
      assert.is_table(r.artifacts.charts)
    end)

    it("reports a failing program by its exit code", function()
      local r = sb.process:code_run("import sys\nsys.exit(7)")
      assert.are.equal(7, r.exit_code)
    end)
  end)

  describe("sessions", function()
    it("keep shell state between commands and list, get and delete", function()
      sb.process:create_session("s-state")
      local r = sb.process:execute_session_command("s-state", { command = "cd /tmp && export V=42" })
      assert.are.equal(0, r.exit_code)
      r = sb.process:execute_session_command("s-state", "echo $V; pwd; echo oops >&2")
      assert.are.equal(0, r.exit_code)
      assert.are.equal("42\n/tmp\n", r.stdout)
      assert.are.equal("oops\n", r.stderr)
      assert.is_string(r.cmd_id)
      local s = sb.process:get_session("s-state")
      assert.are.equal("s-state", s.session_id)
      assert.are.equal(2, #s.commands)
      local found = false
      for _, x in ipairs(sb.process:list_sessions()) do found = found or x.session_id == "s-state" end
      assert.is_true(found)
      local c = sb.process:get_session_command("s-state", r.cmd_id)
      assert.are.equal(0, c.exit_code)
      assert.are.equal(r.cmd_id, c.id)
      local logs = sb.process:get_session_command_logs("s-state", r.cmd_id)
      assert.are.equal("42\n/tmp\n", logs.stdout)
      assert.are.equal("oops\n", logs.stderr)
      assert.is_string(logs.output)
      sb.process:delete_session("s-state")
      assert.is_true(errors.is(fixture.fails(sb.process.get_session, sb.process, "s-state"),
        errors.DaytonaNotFoundError))
    end)

    it("raise for a duplicate or unknown session", function()
      sb.process:create_session("s-dup")
      assert.is_true(errors.is(fixture.fails(sb.process.create_session, sb.process, "s-dup"),
        errors.DaytonaConflictError))
      assert.is_true(errors.is(fixture.fails(sb.process.get_session, sb.process, "s-none"),
        errors.DaytonaNotFoundError))
      assert.is_true(errors.is(fixture.fails(sb.process.execute_session_command, sb.process, "s-none", "true"),
        errors.DaytonaError))
      assert.is_true(errors.is(fixture.fails(sb.process.delete_session, sb.process, "s-none"),
        errors.DaytonaNotFoundError))
      assert.is_true(errors.is(fixture.fails(sb.process.get_session_command_logs, sb.process, "s-dup", "nope"),
        errors.DaytonaNotFoundError))
      sb.process:delete_session("s-dup")
    end)

    it("run a command asynchronously and follow its logs with callbacks", function()
      sb.process:create_session("s-async")
      local c = sb.process:execute_session_command("s-async",
        { command = "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.2; done", run_async = true })
      assert.is_string(c.cmd_id)
      assert.is_nil(c.exit_code)
      local out, err = {}, {}
      sb.process:get_session_command_logs("s-async", c.cmd_id, {
        on_stdout = function(s) out[#out + 1] = s end,
        on_stderr = function(s) err[#err + 1] = s end,
      })
      assert.are.equal("out1\nout2\nout3\n", table.concat(out))
      assert.are.equal("err1\nerr2\nerr3\n", table.concat(err))
      local cmd = sb.process:get_session_command("s-async", c.cmd_id)
      assert.are.equal(0, cmd.exit_code)
    end)

    it("follow logs as an iterator, including output written before the follow", function()
      sb.process:create_session("s-iter")
      local c = sb.process:execute_session_command("s-iter",
        { command = "echo early; sleep 0.3; printf 'caf\\303\\251\\n'; echo bad >&2", run_async = true })
      scheduler.sleep(0.1)
      local got = { stdout = {}, stderr = {} }
      for stream, data in sb.process:get_session_command_logs("s-iter", c.cmd_id, { follow = true }) do
        table.insert(got[stream], data)
      end
      assert.are.equal("early\ncafé\n", table.concat(got.stdout))
      assert.are.equal("bad\n", table.concat(got.stderr))
    end)

    it("send input to a running command", function()
      sb.process:create_session("s-input")
      local c = sb.process:execute_session_command("s-input",
        { command = "read a; read b; echo got:$a:$b", run_async = true })
      sb.process:send_session_command_input("s-input", c.cmd_id, "one")
      sb.process:send_session_command_input("s-input", c.cmd_id, "two\n")
      local out = {}
      sb.process:get_session_command_logs_async("s-input", c.cmd_id, function(s) out[#out + 1] = s end)
      assert.matches("got:one:two\n", table.concat(out), 1, true)
      -- the command has ended: more input is refused
      local err = fixture.fails(sb.process.send_session_command_input, sb.process, "s-input", c.cmd_id, "x")
      assert.is_true(errors.is(err, errors.DaytonaError))
    end)

    it("bound a followed stream with a timeout", function()
      sb.process:create_session("s-slow")
      local c = sb.process:execute_session_command("s-slow", { command = "sleep 20", run_async = true })
      local err = fixture.fails(function()
        sb.process:get_session_command_logs("s-slow", c.cmd_id, { on_stdout = function() end, timeout = 0.5 })
      end)
      assert.is_true(errors.is(err, errors.DaytonaTimeoutError))
      sb.process:delete_session("s-slow")
    end)

    it("expose the entrypoint session and its logs", function()
      local s = sb.process:get_entrypoint_session()
      assert.are.equal("entrypoint", s.session_id)
      local logs = sb.process:get_entrypoint_logs()
      assert.is_string(logs.output)
      assert.is_string(logs.stdout)
    end)
  end)
end)
