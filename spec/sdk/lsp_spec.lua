-- sb:create_lsp_server against a private local server: real language
-- servers (pylsp, typescript-language-server) inside a real sandbox.
local errors = require "daytona.errors"
local helper = require "support.helper"
local fixture = require "sdk.fixture"

local projects = require "support.lsp_projects"
local PY, TS = projects.PY, projects.TS

local by_name, labels = projects.by_name, projects.labels

describe("sb:create_lsp_server", function()
  local srv, client, sb, home

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv)
    home = sb:get_user_home_dir()
    sb.fs:upload_file({ data = PY }, "proj/app.py")
    sb.fs:upload_file({ data = "def greeting_helper():\n    return 1\n" }, "proj/pkg/util.py")
    sb.fs:upload_file({ data = TS }, "web/shapes.ts")
  end)

  teardown(function()
    fixture.release(srv, sb)
    helper.cleanup()
  end)

  it("Python: symbols, completions, sandbox symbols; <close> stops it", function()
    do
      local lsp <close> = sb:create_lsp_server("python", "proj")
      lsp:start()
      lsp:did_open(home .. "/proj/app.py")
      local syms = by_name(lsp:document_symbols(home .. "/proj/app.py"))
      assert.are.equal(5, syms.Greeter.kind)
      assert.are.equal(6, syms.greet.kind)
      assert.are.equal(12, syms.helper_function.kind)
      assert.are.equal("file://" .. home .. "/proj/app.py", syms.Greeter.location.uri)
      assert.are.equal(0, syms.Greeter.location.range.start.line)
      assert.are.equal(5, syms.greet.location.range.start.line)
      assert.is_number(syms.greet.location.range["end"].line)

      local list = lsp:completions("app.py", { line = 14, character = 2 })   -- relative to the project
      assert.is_boolean(list.is_incomplete)
      local items = labels(list)
      assert.is_table(items.greeting_count)
      assert.is_table(items.name)
      assert.matches("CompletionItem{", tostring(items.greeting_count))

      local found = by_name(lsp:sandbox_symbols("greet"))
      assert.is_table(found.greet)
      assert.is_table(found.greeting_helper)
      assert.is_nil(found.helper_function)
      assert.are.same(found, by_name(lsp:workspace_symbols("greet")))
      lsp:did_close(home .. "/proj/app.py")
    end
    -- the scope's end stopped it: a call now says so
    local again = sb:create_lsp_server("python", "proj")
    local err = fixture.fails(again.document_symbols, again, home .. "/proj/app.py")
    assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
    assert.matches("start it first", tostring(err))
  end)

  it("TypeScript: symbols, completions, sandbox symbols; a second start reuses nothing stale", function()
    local lsp = sb:create_lsp_server("typescript", home .. "/web")
    lsp:start()
    lsp:did_open("shapes.ts")
    local syms = by_name(lsp:document_symbols("shapes.ts"))
    assert.are.equal(5, syms.Circle.kind)
    assert.are.equal(12, syms.makeCircle.kind)
    assert.are.equal(7, syms.radiusValue.kind)
    local items = labels(lsp:completions("shapes.ts", { line = 11, character = 2 }))
    assert.is_table(items.radiusValue)
    assert.is_table(items.area)
    local found = by_name(lsp:sandbox_symbols("Circ"))
    assert.is_table(found.Circle)
    assert.is_table(found.makeCircle)
    lsp:stop()

    -- the file changes; a new server sees the new text, not the old one's
    sb.fs:upload_file({ data = "export function squareArea(s: number) { return s * s; }\n" }, "web/shapes.ts")
    lsp:start()
    lsp:did_open("shapes.ts")
    syms = by_name(lsp:document_symbols("shapes.ts"))
    assert.is_table(syms.squareArea)
    assert.is_nil(syms.Circle)
    lsp:stop()
    sb.fs:upload_file({ data = TS }, "web/shapes.ts")
  end)

  it("answers bad input with clear errors", function()
    local err = fixture.fails(function() sb:create_lsp_server("cobol", "proj"):start() end)
    assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
    assert.matches('unsupported languageId "cobol"', tostring(err))

    -- a directory of the host, not of the sandbox
    err = fixture.fails(function() sb:create_lsp_server("python", helper.tmpdir()):start() end)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError), tostring(err))
    assert.matches("no such directory in the sandbox", tostring(err))

    local lsp <close> = sb:create_lsp_server("python", "proj")
    lsp:start()
    err = fixture.fails(lsp.did_open, lsp, "/no/such/file.py")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError), tostring(err))
    lsp:did_open("app.py")
    err = fixture.fails(lsp.completions, lsp, "app.py", { line = 500, character = 0 })
    assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
    assert.matches("position 500:0 is past the end of " .. home .. "/proj/app.py", tostring(err), 1, true)
    err = fixture.fails(lsp.completions, lsp, "app.py", { line = 0, character = 99 })
    assert.matches("past the end of line 0", tostring(err), 1, true)
    err = fixture.fails(lsp.completions, lsp, "app.py", { line = -1, character = 0 })
    assert.are.equal("position.line", err.argument)
    err = fixture.fails(lsp.did_open)
    assert.matches("call it with ':'", tostring(err))
  end)
end)
