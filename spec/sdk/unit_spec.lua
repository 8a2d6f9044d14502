-- The SDK's pure parts, without a server: configuration, the transport's
-- helpers and error mapping, the log demultiplexer, and argument checks that
-- must fail before any request is made.
local helper = require "support.helper"
local errors = require "daytona.errors"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local config = require "daytona.config"
local process = require "daytona.sandbox_process"

local function env(t)
  return function(name) return t[name] end
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("daytona.config", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.cleanup() end)

  it("takes explicit settings over the environment", function()
    local c = config.resolve({ api_key = "k1", api_url = "http://a/api", target = "eu" },
      { getenv = env { DAYTONA_API_KEY = "k2" }, dir = dir })
    assert.are.equal("k1", c.api_key)
    assert.are.equal("http://a/api", c.api_url)
    assert.are.equal("eu", c.target)
  end)

  it("reads the environment, then .env.local, then .env (DAYTONA_ keys only)", function()
    write(dir .. "/.env", "DAYTONA_API_KEY=from-env-file\nDAYTONA_TARGET=us\nOTHER=x\n")
    write(dir .. "/.env.local", "export DAYTONA_TARGET='eu' # comment\n")
    local c = config.resolve(nil, { getenv = env {}, dir = dir })
    assert.are.equal("from-env-file", c.api_key)
    assert.are.equal("eu", c.target)
    assert.are.equal(config.DEFAULT_API_URL, c.api_url)
    c = config.resolve(nil, { getenv = env { DAYTONA_API_KEY = "proc" }, dir = dir })
    assert.are.equal("proc", c.api_key)
  end)

  it("prefers an API key to a JWT and needs an organization with a JWT", function()
    local c = config.resolve(nil, { getenv = env { DAYTONA_API_KEY = "k", DAYTONA_JWT_TOKEN = "j",
      DAYTONA_ORGANIZATION_ID = "o" }, dir = dir })
    assert.are.equal("k", c.api_key)
    assert.is_nil(c.jwt_token)
    c = config.resolve({ jwt_token = "j", organization_id = "o" }, { getenv = env { DAYTONA_API_KEY = "k" }, dir = dir })
    assert.are.equal("j", c.jwt_token)
    assert.is_nil(c.api_key)
    local ok, err = pcall(config.resolve, { jwt_token = "j" }, { getenv = env {}, dir = dir })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaAuthenticationError))
  end)

  it("falls back to the local server only without credentials and without an API URL", function()
    local c = config.resolve(nil, { getenv = env {}, dir = dir })
    assert.is_true(c.use_local)
    local ok, err = pcall(config.resolve, nil, { getenv = env { DAYTONA_API_URL = "http://x/api" }, dir = dir })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaAuthenticationError))
    ok, err = pcall(config.resolve, { local_server = false }, { getenv = env {}, dir = dir })
    assert.is_false(ok)
    assert.are.equal("MISSING_CREDENTIALS", err.code)
  end)

  it("takes the endpoint from a .env file together with its key", function()
    -- a .env written for a local server: its key goes to its URL, not to the cloud
    write(dir .. "/.env", "DAYTONA_API_KEY=k\nDAYTONA_API_URL=http://localhost:3986/api\nDAYTONA_TARGET=local\n")
    local c = config.resolve(nil, { getenv = env {}, dir = dir })
    assert.are.equal("k", c.api_key)
    assert.are.equal("http://localhost:3986/api", c.api_url)
    assert.are.equal("local", c.target)
    -- each file is its own place: a committed .env's URL never steers the
    -- key of .env.local
    write(dir .. "/.env", "DAYTONA_API_URL=http://elsewhere/api\n")
    write(dir .. "/.env.local", "DAYTONA_API_KEY=k2\n")
    local ok, err = pcall(config.resolve, nil, { getenv = env {}, dir = dir })
    assert.is_false(ok)
    assert.are.equal("AMBIGUOUS_ENDPOINT", err.code)
    assert.matches("comes from .env.local", err.message, 1, true)
    write(dir .. "/.env.local", "DAYTONA_API_KEY=k2\nDAYTONA_API_URL=http://localhost:3986/api\n")
    c = config.resolve(nil, { getenv = env {}, dir = dir })
    assert.are.equal("k2", c.api_key)
    assert.are.equal("http://localhost:3986/api", c.api_url)
  end)

  it("lets the environment win over .env, the key and the URL as one pair", function()
    write(dir .. "/.env", "DAYTONA_API_KEY=file-key\nDAYTONA_API_URL=http://file/api\nDAYTONA_TARGET=eu\n")
    local c = config.resolve(nil, { getenv = env { DAYTONA_API_KEY = "env-key", DAYTONA_API_URL = "http://envurl/api" },
      dir = dir })
    assert.are.equal("env-key", c.api_key)
    assert.are.equal("http://envurl/api", c.api_url)
    assert.are.equal("eu", c.target)          -- not a secret: taken from the file
    c = config.resolve(nil, { getenv = env { DAYTONA_TARGET = "us", DAYTONA_API_URL = "http://file/api" }, dir = dir })
    assert.are.equal("file-key", c.api_key)   -- the same URL in both places is no conflict
    assert.are.equal("us", c.target)
  end)

  it("never sends a key to a URL configured apart from it", function()
    -- the environment's URL beside a key from .env that names another
    write(dir .. "/.env", "DAYTONA_API_KEY=k\nDAYTONA_API_URL=http://local/api\n")
    local ok, err = pcall(config.resolve, nil, { getenv = env { DAYTONA_API_URL = "http://other/api" }, dir = dir })
    assert.is_false(ok)
    assert.are.equal("AMBIGUOUS_ENDPOINT", err.code)
    assert.matches("DAYTONA_API_KEY comes from .env", err.message, 1, true)
    -- a key from .env without a URL, the environment naming one
    write(dir .. "/.env", "DAYTONA_API_KEY=k\n")
    ok, err = pcall(config.resolve, nil, { getenv = env { DAYTONA_API_URL = "http://other/api" }, dir = dir })
    assert.is_false(ok)
    assert.are.equal("AMBIGUOUS_ENDPOINT", err.code)
    -- the environment's key (say, for the cloud) beside a .env naming a local server
    write(dir .. "/.env", "DAYTONA_API_KEY=local-key\nDAYTONA_API_URL=http://local/api\n")
    ok, err = pcall(config.resolve, nil, { getenv = env { DAYTONA_API_KEY = "cloud-key" }, dir = dir })
    assert.is_false(ok)
    assert.are.equal("AMBIGUOUS_ENDPOINT", err.code)
    assert.matches("the environment, without DAYTONA_API_URL", err.message, 1, true)
    -- a key without a URL anywhere goes to the cloud
    write(dir .. "/.env", "DAYTONA_API_KEY=k\n")
    local c = config.resolve(nil, { getenv = env {}, dir = dir })
    assert.are.equal(config.DEFAULT_API_URL, c.api_url)
    -- api_url (or the key) in the options settles it
    c = config.resolve({ api_url = "http://explicit/api" }, { getenv = env { DAYTONA_API_URL = "http://good/api" }, dir = dir })
    assert.are.equal("http://explicit/api", c.api_url)
    assert.are.equal("k", c.api_key)
    c = config.resolve({ api_key = "mine" }, { getenv = env { DAYTONA_API_URL = "http://good/api" }, dir = dir })
    assert.are.equal("http://good/api", c.api_url)
    assert.are.equal("mine", c.api_key)
    -- a key in the code is not steered by a dotenv file's URL
    write(dir .. "/.env", "DAYTONA_API_URL=http://evil/api\n")
    ok, err = pcall(config.resolve, { api_key = "mine" }, { getenv = env {}, dir = dir })
    assert.is_false(ok)
    assert.are.equal("AMBIGUOUS_ENDPOINT", err.code)
  end)

  it("needs credentials for a URL from a .env file", function()
    write(dir .. "/.env", "DAYTONA_API_URL=http://somewhere/api\n")
    local ok, err = pcall(config.resolve, nil, { getenv = env {}, dir = dir })
    assert.is_false(ok)
    assert.are.equal("MISSING_CREDENTIALS", err.code)
  end)

  it("rejects unknown and mistyped settings, naming them", function()
    local ok, err = pcall(config.resolve, { api_kye = "x" })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    assert.matches("api_kye", err.message)
    ok, err = pcall(config.resolve, { api_key = 42 })
    assert.is_false(ok)
    assert.matches("'api_key'", err.message)
  end)
end)

describe("daytona.wire and daytona.transport helpers", function()
  it("converts wire objects to snake_case, keeping user maps verbatim", function()
    local m = wire.to_lua(wire.decode([[{"toolboxProxyUrl":"u","exitCode":0,"env":{"myVar":"1"},
      "labels":{"code-toolbox-language":"python"},"errorReason":null,"cpu":2.0,"items":[{"isDir":true}]}]]))
    assert.are.equal("u", m.toolbox_proxy_url)
    assert.are.equal(0, m.exit_code)
    assert.are.equal("integer", math.type(m.exit_code))
    assert.are.equal("1", m.env.myVar)
    assert.are.equal("python", m.labels["code-toolbox-language"])
    assert.is_nil(m.error_reason)
    assert.is_true(m.items[1].is_dir)
  end)

  it("builds queries with repeated keys and lower-case booleans", function()
    assert.are.equal("a=1&b=x%20y&f=false&s=started&s=stopped",
      wire.query { b = "x y", a = 1, f = false, s = { "started", "stopped" } })
    assert.are.equal("http://h/api/x?k=v", wire.url("http://h/api/", "/x", { k = "v" }))
  end)

  it("maps HTTP statuses to the error classes and keeps status, code, headers", function()
    local e = transport.http_error(404, { ["x-a"] = "1" }, [[{"statusCode":404,"message":"no such sandbox","code":"NOT_FOUND"}]])
    assert.is_true(errors.is(e, errors.DaytonaNotFoundError))
    assert.is_true(errors.is(e, errors.DaytonaError))
    assert.are.equal(404, e.status_code)
    assert.are.equal("NOT_FOUND", e.code)
    assert.are.equal("no such sandbox", e.message)
    assert.are.equal("1", e.headers["x-a"])
    local cases = { [400] = "DaytonaValidationError", [401] = "DaytonaAuthenticationError",
      [403] = "DaytonaAuthorizationError", [409] = "DaytonaConflictError",
      [429] = "DaytonaRateLimitError", [408] = "DaytonaTimeoutError", [500] = "DaytonaError" }
    for status, name in pairs(cases) do
      assert.are.equal(name, getmetatable(transport.http_error(status, {}, "")).name)
    end
    -- empty bodies still give a useful message; API errors use `error` as the code
    assert.matches("404 Not Found", transport.http_error(404, {}, "").message)
    assert.are.equal("Not Found", transport.http_error(404, {}, [[{"message":"m","error":"Not Found"}]]).code)
    assert.are.equal("a, b", transport.http_error(400, {}, [[{"errors":["a","b"]}]]).message)
  end)

  it("retries only what cannot run twice", function()
    local r = transport._retryable
    assert.is_true(r(transport.http_error(429, {}, ""), false))
    assert.is_true(r(transport.http_error(503, {}, ""), true))
    assert.is_false(r(transport.http_error(503, {}, ""), false))
    -- a 503 with a JSON error body is retried only when it says when
    local unavailable = [[{"message":"Computer-use functionality is not available"}]]
    assert.is_false(r(transport.http_error(503, {}, unavailable), true))
    assert.is_true(r(transport.http_error(503, { ["Retry-After"] = "2" }, unavailable), true))
    assert.is_true(r(transport.http_error(503, {}, "<html>upstream not ready</html>"), true))
    assert.is_true(r(transport.http_error(502, {}, [[{"message":"upstream"}]]), true))
    assert.is_false(r(transport.http_error(500, {}, ""), true))
    assert.is_true(r(errors.DaytonaConnectionError("x", { code = "ECONNREFUSED" }), false))
    assert.is_false(r(errors.DaytonaConnectionError("x", { code = "ECONNRESET" }), false))
    assert.is_true(r(errors.DaytonaConnectionError("x", { code = "ECONNRESET" }), true))
    assert.is_false(r(errors.DaytonaTimeoutError("x", { code = "ETIMEDOUT" }), true))
  end)

  it("treats each transport failure code one way: the retry and err.retryable agree", function()
    local r = transport._retryable
    -- code -> { retried for a POST, retried for a GET }
    local cases = {
      ECONNREFUSED = { true, true }, ENOTFOUND = { true, true }, EHOSTUNREACH = { true, true },
      ENETUNREACH = { true, true }, EAI_NONAME = { true, true }, EAI_AGAIN = { true, true },
      EADDRNOTAVAIL = { true, true },
      ECONNRESET = { false, true }, EPIPE = { false, true }, ECONNABORTED = { false, true },
      EPROTO = { false, true },
      ETLS = { false, false }, EPEER = { false, false }, EHANDSHAKE = { false, false },
      EPROXY = { false, false }, ETOOMANYREDIRECTS = { false, false }, EIO = { false, false },
      ETIMEDOUT = { false, false }, ECANCELED = { false, false }, ENOENT = { false, false },
      EINVAL = { false, false },
    }
    for code, want in pairs(cases) do
      local err = errors.from_failure("x", code)
      local post = err.status_code == nil and r(err, false)
      local get = err.status_code == nil and r(err, true)
      assert.are.equal(want[1], post, code .. " for a POST")
      assert.are.equal(want[2], get, code .. " for a GET")
      -- retryable says "transient", as it does for a 502: retried at least for a GET
      assert.are.equal(want[2], err.retryable, code .. ".retryable")
      assert.are.equal(want[1], errors.retries_failure(code, false), code)
      assert.are.equal(want[2], errors.retries_failure(code, true), code)
    end
    -- every code of the table is in the list above
    for code in pairs(errors.TRANSPORT_RETRY) do assert.is_not_nil(cases[code], code) end
  end)
end)

describe("session log demultiplexing", function()
  local function run(chunks)
    local got = { stdout = {}, stderr = {} }
    local d = process.Demux.new(function(s, data) table.insert(got[s], data) end)
    for _, c in ipairs(chunks) do d:feed(c) end
    d:finish()
    return table.concat(got.stdout), table.concat(got.stderr), got
  end

  it("splits stdout and stderr by their markers", function()
    local out, err = run { "junk\1\1\1hi\n\2\2\2oops\n\1\1\1bye\n" }
    assert.are.equal("hi\nbye\n", out)
    assert.are.equal("oops\n", err)
  end)

  it("handles markers split across chunks at every position", function()
    local raw = "\1\1\1one\n\2\2\2two\n\1\1\1three\1\n\2\2\2\2x\n"
    local want_out, want_err = run { raw }
    for i = 1, #raw - 1 do
      local out, err = run { raw:sub(1, i), raw:sub(i + 1) }
      assert.are.equal(want_out, out, "split at " .. i)
      assert.are.equal(want_err, err, "split at " .. i)
    end
    -- byte by byte
    local bytes = {}
    for i = 1, #raw do bytes[i] = raw:sub(i, i) end
    local out, err = run(bytes)
    assert.are.equal(want_out, out)
    assert.are.equal(want_err, err)
  end)

  it("never splits a UTF-8 character between callbacks", function()
    local text = "\1\1\1h\u{e9}llo \u{1F600}\n"
    for i = 1, #text - 1 do
      local _, _, got = run { text:sub(1, i), text:sub(i + 1) }
      for _, piece in ipairs(got.stdout) do assert.is_truthy(utf8.len(piece), "split at " .. i) end
    end
    assert.are.equal("h\u{e9}llo \u{1F600}\n", (process.demux(text)))
  end)
end)

describe("argument checks before any request", function()
  local client, requests
  local sandbox = require "daytona.sandbox"

  before_each(function()
    requests = 0
    client = require("daytona.client").new {
      api_key = "k", api_url = "http://127.0.0.1:9/api", target = "us", retry = false,
      on_request = function() requests = requests + 1 end,
    }
  end)

  local function fails(fn, arg)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
    assert.are.equal("EINVAL", err.code)
    assert.matches(arg, err.message, 1, true)
    assert.are.equal(0, requests)
  end

  it("client calls", function()
    fails(function() client:create{ language = "cobol" } end, "'language'")
    fails(function() client:create{ env_vars = { A = {} } } end, "'env_vars.A'")
    fails(function() client:create{ auto_stop_interval = -1 } end, "'auto_stop_interval'")
    fails(function() client:create{ snapshot = "s", resources = { cpu = 2 } } end, "'resources'")
    fails(function() client:create{ timeout = -1 } end, "'timeout'")
    fails(function() client:create{ tiemout = 1 } end, "tiemout")
    fails(function() client:create{ linked_sandbox = "p" } end, "'linked_sandbox'")
    fails(function() client:get(nil) end, "'sandbox_id_or_name'")
    fails(function() client:list{ limit = 0 } end, "'limit'")
    fails(function() client:list{ labels = "x" } end, "'labels'")
    fails(function() client:stop(42) end, "'sandbox'")
  end)

  it("sandbox, process, fs and git calls", function()
    local sb = sandbox.new(client, { id = "sb1", state = "started",
      toolboxProxyUrl = "http://127.0.0.1:9/toolbox", labels = {} })
    fails(function() sb:set_labels("x") end, "'labels'")
    fails(function() sb:set_autostop_interval(-5) end, "'interval'")
    fails(function() sb:set_auto_delete_interval(1.5) end, "'interval'")
    fails(function() sb:get_preview_link(70000) end, "'port'")
    fails(function() sb:create_signed_preview_url(80, { expires_in_seconds = 0 }) end, "'expires_in_seconds'")
    fails(function() sb:resize{ gpu = 1 } end, "'resources.gpu'")
    fails(function() sb:update_network_settings{} end, "'options'")
    fails(function() sb:start{ timeout = "soon" } end, "'timeout'")
    fails(function() sb.process:exec("") end, "'command'")
    fails(function() sb.process:exec("ls", { env = { ["1BAD"] = "x" } }) end, "'env'")
    fails(function() sb.process:exec("ls", { cwdd = "/" }) end, "cwdd")
    fails(function() sb.process:code_run(nil) end, "'code'")
    fails(function() sb.process:execute_session_command("s", {}) end, "'req.command'")
    fails(function() sb.process:get_session_command_logs("s", nil) end, "'command_id'")
    fails(function() sb.process:resize_pty_session("p", { rows = 0, cols = 80 }) end, "'pty_size.rows'")
    fails(function() sb.process:create_pty_session(nil) end, "'session_id'")
    fails(function() sb.fs:upload_file(42, "/x") end, "'source'")
    fails(function() sb.fs:upload_file("x", nil) end, "'remote_path'")
    fails(function() sb.fs:create_folder("/d", "rwx") end, "'mode'")
    fails(function() sb.fs:upload_files({}) end, "'files'")
    fails(function() sb.fs:download_files({ {} }) end, "'files[1].source'")
    fails(function() sb.fs:replace_in_files({}, "a", "b") end, "'files'")
    fails(function() sb.git:clone("", "p") end, "'url'")
    fails(function() sb.git:add("repo", { 1 }) end, "'files[1]'")
    fails(function() sb.git:commit("r", "m", "a", nil) end, "'email'")
  end)

  it("a missing local file is reported before any request", function()
    local sb = sandbox.new(client, { id = "sb1", state = "started", toolboxProxyUrl = "http://127.0.0.1:9/toolbox" })
    local ok, err = pcall(sb.fs.upload_file, sb.fs, "/nonexistent/file", "/x")
    assert.is_false(ok)
    assert.are.equal("ENOENT", err.code)
    assert.are.equal(0, requests)
  end)
end)

describe("daytona.Image", function()
  local Image = require("daytona").Image

  it("writes the official SDKs' Dockerfile for the same calls", function()
    -- the expected text is what @daytonaio/sdk 0.218 writes for these calls
    -- (ENV in name order here: Lua tables have no insertion order)
    local img = Image.debian_slim("3.12")
      :pip_install({ "requests", "a b", "numpy>=1.0" }, { index_url = "https://x/simple", pre = true })
      :run_commands("apt-get update", { "echo", "it's \"q\"" })
      :env{ B = "two words", A = "x" }
      :workdir("/home/daytona")
      :entrypoint{ "sleep", "infinity" }
      :cmd{ "bash" }
      :dockerfile_commands{ "RUN true", "USER daytona" }
    assert.are.equal(table.concat({
      "FROM python:3.12.10-slim-bookworm",
      "RUN apt-get update",
      "RUN apt-get install -y gcc gfortran build-essential",
      "RUN pip install --upgrade pip",
      "RUN echo 'debconf debconf/frontend select Noninteractive' | debconf-set-selections",
      "RUN python -m pip install 'a b' numpy\\>\\=1.0 requests --index-url https\\://x/simple --pre",
      "RUN apt-get update",
      [[RUN "echo" "it\'s \\\"q\\\""]],
      "ENV A=x",
      "ENV B='two words'",
      "WORKDIR /home/daytona",
      'ENTRYPOINT ["sleep", "infinity"]',
      'CMD ["bash"]',
      "RUN true",
      "USER daytona",
    }, "\n") .. "\n", img.dockerfile)
    assert.are.equal("FROM alpine:3\n", Image.base("alpine:3").dockerfile)
    assert.is_true(Image.is(img))
  end)

  it("adds local files, directories and requirements as the Python SDK does", function()
    local util = require("daytona.core").util
    local dir = assert(util.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/dtlua-image.XXXXXX"))
    local function write(name, text)
      local f = assert(io.open(dir .. "/" .. name, "wb"))
      f:write(text)
      f:close()
    end
    assert(util.mkdir(dir .. "/src", 493))
    write("src/m.py", "print(1)\n")
    write("requirements.txt", "requests\n")
    write("pyproject.toml", table.concat({
      "[project]", 'name = "demo"', "dependencies = [", '  "requests>=2",  # http', "  'numpy',", "]",
      "[project.optional-dependencies]", 'dev = ["pytest"]', 'docs = ["sphinx"]', "",
    }, "\n"))
    write("bad.toml", "[project\n")
    write("nodeps.toml", '[project]\nname = "x"\n')
    local a = dir:sub(2)   -- the archive path: no leading "/"
    local img = Image.base("x")
      :add_local_file(dir .. "/src/m.py", "/app/")
      :add_local_file(dir .. "//src/./m.py", "/app/main.py")
      :add_local_dir(dir .. "/src", "/app/src")
      :pip_install_from_requirements(dir .. "/requirements.txt", { index_url = "https://x/simple" })
      :pip_install_from_pyproject(dir .. "/pyproject.toml", { optional_dependencies = { "dev" }, pre = true })
    assert.are.equal(table.concat({
      "FROM x",
      "COPY " .. a .. "/src/m.py /app/m.py",
      "COPY " .. a .. "/src/m.py /app/main.py",
      "COPY " .. a .. "/src /app/src",
      "COPY " .. a .. "/requirements.txt /.requirements.txt",
      "RUN python -m pip install -r /.requirements.txt --index-url https\\://x/simple",
      "RUN python -m pip install numpy pytest requests\\>\\=2 --pre",
    }, "\n") .. "\n", img.dockerfile)
    assert.are.equal(4, #img._contexts)
    assert.are.same({ source_path = dir .. "/src", archive_path = a .. "/src" }, img._contexts[3])
    local ok, err = pcall(img.pip_install_from_pyproject, img, dir .. "/bad.toml")
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    assert.matches("invalid pyproject.toml", err.message)
    ok, err = pcall(img.pip_install_from_pyproject, img, dir .. "/nodeps.toml")
    assert.matches("No %[project.dependencies%]", err.message)
    ok, err = pcall(img.pip_install_from_requirements, img, dir .. "/none.txt")
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("takes a Dockerfile's COPY sources as build context, as the Python SDK does", function()
    local util = require("daytona.core").util
    local dir = assert(util.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/dtlua-image.XXXXXX"))
    assert(util.mkdir(dir .. "/app", 493))
    assert(util.mkdir(dir .. "/app/src", 493))
    local f = assert(io.open(dir .. "/app/src/m.py", "wb")); f:write("x\n"); f:close()
    local text = "FROM python:3.12\nCOPY --chown=1000 src /app/src\nCOPY [\"src/m.py\", \"/m.py\"]\n"
      .. "COPY --from=build /a /b\n"
    f = assert(io.open(dir .. "/app/Dockerfile", "wb")); f:write(text); f:close()
    local img = Image.from_dockerfile(dir .. "/app/Dockerfile")
    assert.are.equal(text, img.dockerfile)
    assert.are.same({ { source_path = dir .. "/app/src", archive_path = "src" },
                      { source_path = dir .. "/app/src/m.py", archive_path = "src/m.py" } }, img._contexts)
    -- dockerfile_commands: relative to context_dir
    local img2 = Image.base("x"):dockerfile_commands({ "COPY src /s" }, dir .. "/app")
    assert.are.same({ { source_path = dir .. "/app/src", archive_path = "src" } }, img2._contexts)
    -- a missing source, ADD of local files, wildcards, a source above the project
    local ok, err = pcall(Image.base("x").dockerfile_commands, Image.base("x"), { "COPY ./no-such-app /app" })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    for _, bad in ipairs({ "ADD src /s", "COPY src/*.py /s", "COPY ../x /s" }) do
      f = assert(io.open(dir .. "/app/x", "wb")); f:close()
      ok, err = pcall(img2.dockerfile_commands, Image.base("x"), { bad }, dir .. "/app/src")
      assert.is_false(ok, bad)
      assert.is_true(errors.is(err, errors.DaytonaValidationError), bad .. ": " .. tostring(err))
    end
    assert.is_true(pcall(Image.base("x").dockerfile_commands, Image.base("x"), { "COPY --from=build /a /b" }))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("refuses bad versions and missing Dockerfiles", function()
    local ok, err = pcall(Image.debian_slim, "2.7")
    assert.is_false(ok)
    assert.matches("'python_version'", err.message)
    ok, err = pcall(Image.from_dockerfile, "/no/such/Dockerfile")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
  end)
end)

describe("Python porters' traps", function()
  local check = require "daytona.check"
  local sandbox = require "daytona.sandbox"

  it("says so when a method is called with '.' instead of ':'", function()
    local client = require("daytona.client")
    local fake = setmetatable({}, client.Client)
    local ok, err = pcall(fake.create, { language = "python" })
    assert.is_false(ok)
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    assert.are.equal("client.create: call it with ':' (client:create{...}), not '.'", err.message)
    local sb = sandbox.new({ _transport = {} }, { id = "s1", state = "started" })
    ok, err = pcall(sb.fs.upload_file, "local.txt", "remote.txt")
    assert.are.equal("fs.upload_file: call it with ':' (fs:upload_file(...)), not '.'", err.message)
    ok, err = pcall(sb.process.exec, "ls")
    assert.matches("process.exec: call it with ':'", err.message, 1, true)
    ok, err = pcall(sb.delete)
    assert.matches("sandbox.delete: call it with ':'", err.message, 1, true)
    -- an object of a derived class is still accepted
    local Base = {}
    Base.__index = Base
    function Base:hello() return self.x end
    check.methods(Base, "thing")
    local Derived = setmetatable({}, { __index = Base })
    Derived.__index = Derived
    assert.are.equal(5, setmetatable({ x = 5 }, Derived):hello())
  end)

  it("costs one metatable comparison per call", function()
    local C = {}
    C.__index = C
    function C:m(x) return x end
    local plain_m = C.m
    check.methods(C, "c")
    local o = setmetatable({}, C)
    local n = 2000000
    local t0 = os.clock()
    for i = 1, n do plain_m(o, i) end
    local t1 = os.clock()
    for i = 1, n do o:m(i) end
    local t2 = os.clock()
    local extra_ns = ((t2 - t1) - (t1 - t0)) / n * 1e9
    -- an SDK call is an HTTP request (tens of microseconds at least)
    assert.is_true(extra_ns < 1000, ("%.0f ns per call"):format(extra_ns))
  end)

  it("prints models on one line, without changing how they index or iterate", function()
    local m = wire.to_lua(wire.decode([[{"name":"a.txt","isDir":false,"size":3,"modTime":"x"}]]), "FileInfo")
    assert.are.equal('FileInfo{name="a.txt", is_dir=false, mod_time="x", size=3}', tostring(m))
    local keys = {}
    for k in pairs(m) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ "is_dir", "mod_time", "name", "size" }, keys)
    assert.are.same({ name = "a.txt", is_dir = false, size = 3, mod_time = "x" }, m)
    local long = wire.to_lua({ result = ("x"):rep(100) .. "\n", exitCode = 0, items = { 1, 2 } })
    assert.are.equal('{exit_code=0, result="' .. ("x"):rep(37) .. '...", items=[2]}', tostring(long))
    local sb = sandbox.new({ _transport = {} }, { id = "s1", state = "started", cpu = 2 })
    assert.are.equal('Sandbox{id="s1", state="started", cpu=2}', tostring(sb))
  end)
end)
