-- PTY sessions against a private local server.
local errors = require "daytona.errors"
local fixture = require "sdk.fixture"

describe("PTY sessions", function()
  local srv, client, sb

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv)
  end)

  teardown(function() fixture.release(srv, sb) end)

  it("reads output as an iterator and reports the exit code", function()
    local pty <close> = sb.process:create_pty_session("p-iter", { pty_size = { rows = 30, cols = 100 } })
    assert.is_true(pty:is_connected())
    pty:send_input("stty size; exit 3\n")
    local out = {}
    for chunk in pty do out[#out + 1] = chunk end
    assert.matches("30 100", table.concat(out))
    assert.are.equal(3, pty.exit_code)
    assert.is_false(pty:is_connected())
  end)

  it("delivers output to on_data, resizes, and waits for the exit", function()
    local out = {}
    local pty = sb.process:create_pty_session("p-cb", { on_data = function(d) out[#out + 1] = d end,
      envs = { PTYVAR = "xyz" } })
    pty:resize{ rows = 40, cols = 120 }
    local info = sb.process:get_pty_session_info("p-cb")
    assert.are.equal(40, info.rows)
    assert.are.equal(120, info.cols)
    pty:send_input("echo $PTYVAR; stty size; exit\n")
    local r = pty:wait{ timeout = 20 }
    assert.are.equal(0, r.exit_code)
    local text = table.concat(out)
    assert.matches("xyz", text)
    assert.matches("40 120", text)
  end)

  it("lists, reconnects to and kills a terminal", function()
    local pty = sb.process:create_pty_session("p-kill")
    pty:disconnect()
    local found = false
    for _, s in ipairs(sb.process:list_pty_sessions()) do found = found or s.id == "p-kill" end
    assert.is_true(found)
    local again = sb.process:connect_pty_session("p-kill")
    again:send_input("echo back\n")
    local seen = ""
    while not seen:find("back") do seen = seen .. assert(again:read{ timeout = 10 }) end
    sb.process:kill_pty_session("p-kill")
    local r = again:wait{ timeout = 10 }
    assert.are.equal(137, r.exit_code)
    assert.is_true(errors.is(fixture.fails(sb.process.get_pty_session_info, sb.process, "p-kill"),
      errors.DaytonaNotFoundError))
  end)

  it("raises for a duplicate, unknown or ended terminal", function()
    local pty = sb.process:create_pty_session("p-dup")
    assert.is_true(errors.is(fixture.fails(sb.process.create_pty_session, sb.process, "p-dup"),
      errors.DaytonaConflictError))
    pty:kill()
    pty:wait{ timeout = 10 }
    assert.is_true(errors.is(fixture.fails(sb.process.connect_pty_session, sb.process, "p-none"),
      errors.DaytonaError))
    assert.is_true(errors.is(fixture.fails(sb.process.resize_pty_session, sb.process, "p-dup", { rows = 5, cols = 5 }),
      errors.DaytonaError))
    assert.is_true(errors.is(fixture.fails(pty.send_input, pty, "x"), errors.DaytonaError))
  end)
end)
