-- The toolbox daemon's /lsp routes (dtlocal.toolbox.lsp) over real HTTP,
-- backed by the real language servers `make deps` installs (pylsp,
-- typescript-language-server). The daemon runs in-process on 127.0.0.1
-- port 0 with a temp dir as the user's home.
local helper = require "support.helper"
local http = require "daytona.runtime.http"
local dhttp = require "dtlocal.http"
local toolbox = require "dtlocal.toolbox"

local json = dhttp.json

local projects = require "support.lsp_projects"
local PY, TS = projects.PY, projects.TS

describe("dtlocal toolbox: language servers", function()
  local srv, home, base

  local function req(method, path, body)
    local h = {}
    local opts = { url = base .. path, method = method, headers = h, timeout = 90 }
    if body then
      opts.body = json.encode(body)
      h["Content-Type"] = "application/json"
    end
    local r = http.request(opts)
    if r.body ~= "" then r.json = json.decode(r.body) end
    return r
  end

  local function q(s)
    return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
  end

  local function query(t)
    local parts = {}
    for k, v in pairs(t) do parts[#parts + 1] = k .. "=" .. q(v) end
    table.sort(parts)
    return "?" .. table.concat(parts, "&")
  end

  local function ok(r) assert.are.equal(200, r.status, r.body) return r end

  local function assert_error(r, status, code, needle)
    assert.are.equal(status, r.status, r.body)
    assert.is_table(r.json, r.body)
    if code then assert.are.equal(code, r.json.code, r.body) end
    if needle then
      assert.is_truthy(r.json.message:find(needle, 1, true),
        ("message %q does not mention %q"):format(r.json.message, needle))
    end
  end

  local function write(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
  end

  local by_name, labels = projects.by_name, projects.labels

  setup(function()
    home = helper.tmpdir()
    os.execute(("mkdir -p '%s/py/pkg' '%s/ts'"):format(home, home))
    write(home .. "/py/app.py", PY)
    write(home .. "/py/pkg/util.py", "def greeting_helper():\n    return 1\n")
    write(home .. "/ts/shapes.ts", TS)
    helper.run(function()
      srv = toolbox.start { listen = "127.0.0.1:0", home = home, state_dir = helper.tmpdir() }
    end)
    base = srv.url
  end)

  teardown(function()
    if srv then helper.run(function() srv:close() end) end
    helper.cleanup()
  end)

  it("serves Python through pylsp: symbols, completions, workspace symbols", function()
    helper.run(function()
      local server = { languageId = "python", pathToProject = "py" }
      local doc = { languageId = "python", pathToProject = "py", uri = "file://" .. home .. "/py/app.py" }
      ok(req("POST", "/lsp/start", server))
      ok(req("POST", "/lsp/start", server))   -- again: the same server, no second handshake
      ok(req("POST", "/lsp/did-open", doc))
      local syms = ok(req("GET", "/lsp/document-symbols" .. query(doc))).json
      local s = by_name(syms)
      assert.are.equal(5, s.Greeter.kind)            -- Class
      assert.are.equal(6, s.greet.kind)              -- Method
      assert.are.equal(12, s.helper_function.kind)   -- Function
      assert.are.equal("file://" .. home .. "/py/app.py", s.Greeter.location.uri)
      assert.are.same({ line = 0, character = 0 }, s.Greeter.location.range.start)

      local c = ok(req("POST", "/lsp/completions",
        { languageId = "python", pathToProject = "py", uri = "file://app.py",   -- relative: to the project
          position = { line = 14, character = 2 } })).json
      assert.is_boolean(c.isIncomplete)
      assert.is_table(labels(c).greeting_count, c and json.encode(c))

      -- pylsp has no workspace/symbol: the project's files are searched
      local ws = ok(req("GET", "/lsp/workspacesymbols" .. query { languageId = "python", pathToProject = "py",
                                                                   query = "greet" })).json
      local w = by_name(ws)
      assert.is_table(w.greet)
      assert.is_table(w.greeting_helper)
      assert.are.equal("file://" .. home .. "/py/pkg/util.py", w.greeting_helper.location.uri)
      assert.is_nil(w.helper_function)

      ok(req("POST", "/lsp/did-close", doc))
      ok(req("POST", "/lsp/stop", server))
      assert_error(req("GET", "/lsp/document-symbols" .. query(doc)), 400, "LSP_SERVER_NOT_INITIALIZED", "start it")
      assert_error(req("POST", "/lsp/stop", server), 400, "LSP_SERVER_NOT_INITIALIZED")
    end)
  end)

  it("serves TypeScript through typescript-language-server", function()
    helper.run(function()
      local server = { languageId = "typescript", pathToProject = home .. "/ts" }
      local doc = { languageId = "typescript", pathToProject = home .. "/ts", uri = "file://" .. home .. "/ts/shapes.ts" }
      ok(req("POST", "/lsp/start", server))
      ok(req("POST", "/lsp/did-open", doc))
      local s = by_name(ok(req("GET", "/lsp/document-symbols" .. query(doc))).json)
      assert.are.equal(5, s.Circle.kind)
      assert.are.equal(12, s.makeCircle.kind)
      assert.are.equal(7, s.radiusValue.kind)        -- Property
      local c = labels(ok(req("POST", "/lsp/completions",
        { languageId = "typescript", pathToProject = home .. "/ts", uri = doc.uri,
          position = { line = 11, character = 2 } })).json)
      assert.is_table(c.radiusValue)
      assert.is_table(c.area)
      local w = by_name(ok(req("GET", "/lsp/workspacesymbols" .. query { languageId = "typescript",
        pathToProject = home .. "/ts", query = "Circ" })).json)
      assert.is_table(w.Circle)
      assert.is_table(w.makeCircle)
      ok(req("POST", "/lsp/stop", server))
    end)
  end)

  it("answers bad input with clear errors", function()
    helper.run(function()
      assert_error(req("POST", "/lsp/start", { languageId = "cobol", pathToProject = "py" }), 400,
        "LSP_INVALID_REQUEST", "unsupported languageId")
      assert_error(req("POST", "/lsp/start", { languageId = "python", pathToProject = "no/such/dir" }), 404,
        "FILE_NOT_FOUND", "no such directory")
      assert_error(req("POST", "/lsp/start", { languageId = "python" }), 400, "LSP_INVALID_REQUEST",
        "pathToProject is required")
      assert_error(req("POST", "/lsp/did-open", { languageId = "python", pathToProject = "py",
        uri = "file:///x.py" }), 400, "LSP_SERVER_NOT_INITIALIZED", "start it first")

      local server = { languageId = "python", pathToProject = "py" }
      ok(req("POST", "/lsp/start", server))
      assert_error(req("POST", "/lsp/did-open", { languageId = "python", pathToProject = "py",
        uri = "file:///no/such/file.py" }), 404, "FILE_NOT_FOUND", "/no/such/file.py")
      assert_error(req("POST", "/lsp/did-open", { languageId = "python", pathToProject = "py",
        uri = "/py/app.py" }), 400, "LSP_INVALID_REQUEST", "file://")
      local past = { languageId = "python", pathToProject = "py", uri = "file://app.py",
                     position = { line = 99, character = 0 } }
      assert_error(req("POST", "/lsp/completions", past), 400, "LSP_INVALID_REQUEST", "past the end")
      past.position = { line = 0, character = 80 }
      assert_error(req("POST", "/lsp/completions", past), 400, "LSP_INVALID_REQUEST", "past the end of line 0")
      ok(req("POST", "/lsp/stop", server))
    end)
  end)

  it("reports a server that died, and starts a fresh one", function()
    helper.run(function()
      local server = { languageId = "python", pathToProject = "py" }
      local doc = { languageId = "python", pathToProject = "py", uri = "file://app.py" }
      ok(req("POST", "/lsp/start", server))
      ok(req("POST", "/lsp/did-open", doc))
      local s = srv.app.lsp_servers["python\0" .. home .. "/py"]
      local old = s.proc:pid()
      s.proc:kill("KILL")
      helper.eventually(function() return s.dead ~= nil end, 10)
      assert_error(req("GET", "/lsp/document-symbols" .. query(doc)), 400, "LSP_SERVER_NOT_INITIALIZED",
        "exited (killed by SIGKILL)")
      ok(req("POST", "/lsp/start", server))
      local fresh = srv.app.lsp_servers["python\0" .. home .. "/py"]
      assert.are_not.equal(old, fresh.proc:pid())
      -- nothing of the old one carried over: its open documents are gone
      assert.are.same({}, fresh.docs)
      ok(req("POST", "/lsp/did-open", doc))
      assert.is_true(#ok(req("GET", "/lsp/document-symbols" .. query(doc))).json > 0)
      ok(req("POST", "/lsp/stop", server))
      assert.is_true(helper.eventually(function() return not fresh.tag:alive() end, 10))
    end)
  end)

  it("stops its servers when the daemon closes", function()
    local other, s
    helper.run(function()
      other = toolbox.start { listen = "127.0.0.1:0", home = home, state_dir = helper.tmpdir() }
      local r = http.request { url = other.url .. "/lsp/start", method = "POST", timeout = 90,
        headers = { ["Content-Type"] = "application/json" },
        body = json.encode { languageId = "typescript", pathToProject = "ts" } }
      assert.are.equal(200, r.status, r.body)
      s = other.app.lsp_servers["typescript\0" .. home .. "/ts"]
      other:close()
      assert.is_table(s.dead)
      -- SIGKILLed, and gone once the kernel has delivered it
      assert.is_true(helper.eventually(function() return not s.tag:alive() end, 10))
    end)
  end)
end)
