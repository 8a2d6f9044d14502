-- The toolbox daemon (dtlocal.toolbox), driven over real HTTP and
-- WebSockets: it runs in-process on 127.0.0.1 port 0 with a temp dir as
-- the user's home and working directory.
local helper = require "support.helper"
local scheduler = require "daytona.runtime.scheduler"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"
local core = require "daytona.core"
local dhttp = require "dtlocal.http"
local toolbox = require "dtlocal.toolbox"
local common = require "dtlocal.toolbox.common"

local json = dhttp.json

local SDK = "0.218.0"

describe("dtlocal toolbox", function()
  local srv, home, base, wsbase

  -- one request; body may be a string, or a table sent as JSON
  local function req(method, path, body, headers)
    local h = { ["X-Daytona-SDK-Version"] = SDK }
    for k, v in pairs(headers or {}) do h[k] = v end
    local opts = { url = base .. path, method = method, headers = h, timeout = 20 }
    if type(body) == "table" then
      opts.body = json.encode(body)
      h["Content-Type"] = "application/json"
    else
      opts.body = body
    end
    local r = http.request(opts)
    local ct = r.headers["content-type"] or ""
    if ct:find("application/json", 1, true) and r.body ~= "" then r.json = json.decode(r.body) end
    return r
  end

  local function write(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
  end

  local read = helper.read_file

  local function sh(cmd)
    local ok = os.execute(cmd .. " >/dev/null 2>&1")
    assert(ok, "failed: " .. cmd)
  end

  local function q(s)
    return (s:gsub("[^%w%-%._~/]", function(c) return ("%%%02X"):format(c:byte()) end))
  end

  -- the structured error body of every toolbox error
  local function assert_error(r, status, code, needle)
    assert.are.equal(status, r.status, r.body)
    assert.is_table(r.json, "error body is not JSON: " .. tostring(r.body))
    assert.are.equal(status, r.json.statusCode)
    assert.is_string(r.json.message)
    assert.is_string(r.json.timestamp)
    assert.is_string(r.json.path)
    if code then assert.are.equal(code, r.json.code) end
    if needle then
      assert.is_truthy(r.json.message:find(needle, 1, true),
        ("message %q does not mention %q"):format(r.json.message, needle))
    end
  end

  setup(function()
    home = helper.tmpdir()
    helper.run(function()
      srv = toolbox.start { listen = "127.0.0.1:0", home = home, state_dir = helper.tmpdir() }
    end)
    base = srv.url
    wsbase = base:gsub("^http", "ws")
  end)

  teardown(function()
    if srv then helper.run(function() srv:close() end) end
    helper.cleanup()
  end)

  it("reports its version and directories", function()
    helper.run(function()
      local r = req("GET", "/version")
      assert.are.equal(200, r.status)
      assert.are.equal(toolbox.VERSION, r.json.version)
      assert.are.same({ dir = home }, req("GET", "/user-home-dir").json)
      assert.are.same({ dir = home }, req("GET", "/project-dir").json)
      assert.are.same({ dir = home }, req("GET", "/work-dir").json)
      assert_error(req("GET", "/no/such/route"), 404, "NOT_FOUND")
      assert_error(req("PUT", "/files/info"), 405, "METHOD_NOT_ALLOWED")
    end)
  end)

  describe("files", function()
    it("lists, stats and creates folders with exact FileInfo fields", function()
      helper.run(function()
        local r = req("POST", "/files/folder?path=" .. q("proj/src") .. "&mode=750")
        assert.are.equal(201, r.status)
        write(home .. "/proj/src/main.py", "print('hi')\n")
        r = req("GET", "/files?path=proj")
        assert.are.equal(200, r.status)
        assert.are.equal(1, #r.json)
        local e = r.json[1]
        assert.are.equal("src", e.name)
        assert.is_true(e.isDir)
        assert.are.equal("drwxr-x---", e.mode)
        assert.are.equal("0750", e.permissions)
        assert.are.equal(tostring(core.util.getuid()), e.owner)
        assert.is_string(e.group)
        assert.is_truthy(e.modifiedAt:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[%.%d]*Z$"), e.modifiedAt)
        assert.is_truthy(e.modTime:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%.%d]* %+0000 UTC$"), e.modTime)
        r = req("GET", "/files/info?path=" .. q(home .. "/proj/src/main.py"))
        assert.are.same({ "group", "isDir", "modTime", "mode", "modifiedAt", "name", "owner", "path", "permissions",
                          "size" },
          (function() local k = {} for n in pairs(r.json) do k[#k + 1] = n end table.sort(k) return k end)())
        assert.are.equal("main.py", r.json.name)
        assert.are.equal(12, r.json.size)
        assert.is_false(r.json.isDir)
        -- an empty directory lists as [] (not {})
        req("POST", "/files/folder?path=empty&mode=")
        r = req("GET", "/files?path=empty")
        assert.are.equal("[]", r.body)
        -- 0.218's depth: entries of subdirectories too, each with its full path
        r = req("GET", "/files?path=proj&depth=2")
        assert.are.same({ { "src", home .. "/proj/src" }, { "main.py", home .. "/proj/src/main.py" } },
          { { r.json[1].name, r.json[1].path }, { r.json[2].name, r.json[2].path } })
        assert_error(req("GET", "/files?path=proj&depth=0"), 400, "BAD_REQUEST", "depth")
        -- without path: the working directory
        r = req("GET", "/files")
        local names = {}
        for _, x in ipairs(r.json) do names[x.name] = true end
        assert.is_true(names.proj and names.empty)
      end)
    end)

    it("answers 404 for missing paths and 400 naming the field for bad input", function()
      helper.run(function()
        assert_error(req("GET", "/files/info?path=nope"), 404, "FILE_NOT_FOUND", "nope")
        assert_error(req("GET", "/files/info"), 400, "BAD_REQUEST", "path")
        assert_error(req("GET", "/files?path=missing-dir"), 404)
        assert_error(req("POST", "/files/folder?path=x&mode=9z"), 400, "BAD_REQUEST", "mode")
        assert_error(req("POST", "/files/move?source=a"), 400, "BAD_REQUEST", "destination")
        assert_error(req("GET", "/files/info?path=a%00b"), 400, "BAD_REQUEST", "NUL")
        assert_error(req("POST", "/files/replace", "{not json"), 400, "INVALID_REQUEST_BODY", "malformed JSON")
        assert_error(req("POST", "/files/replace", { files = "x", pattern = "a", newValue = "b" }),
          400, "INVALID_REQUEST_BODY", "files")
        assert_error(req("POST", "/files/replace", { files = { "x" }, newValue = "b" }),
          400, "INVALID_REQUEST_BODY", "pattern")
        assert_error(req("POST", "/files/replace", "[1,2]"), 400, "INVALID_REQUEST_BODY")
      end)
    end)

    it("deletes files, and directories only with recursive=true", function()
      helper.run(function()
        sh(("mkdir -p '%s/del/a/b' && touch '%s/del/a/b/f' '%s/del/g'"):format(home, home, home))
        sh(("ln -s /etc '%s/del/link'"):format(home))
        local r = req("DELETE", "/files?path=del/g")
        assert.are.equal(204, r.status)
        assert.is_nil(read(home .. "/del/g"))
        assert_error(req("DELETE", "/files?path=del"), 400, "BAD_REQUEST", "recursive")
        r = req("DELETE", "/files?path=del&recursive=true")
        assert.are.equal(204, r.status)
        assert.is_nil(core.util.stat(home .. "/del"))
        assert.is_truthy(core.util.stat("/etc/hostname") or core.util.stat("/etc"))   -- the link's target survives
        assert_error(req("DELETE", "/files?path=del"), 404)
      end)
    end)

    it("moves, refusing to overwrite", function()
      helper.run(function()
        write(home .. "/m1.txt", "one")
        write(home .. "/m2.txt", "two")
        assert_error(req("POST", "/files/move?source=m1.txt&destination=m2.txt"), 409, "CONFLICT")
        assert_error(req("POST", "/files/move?source=nothere&destination=x"), 404)
        assert_error(req("POST", "/files/move?source=m1.txt&destination=" .. q("no/such/dir/x")), 404)
        local r = req("POST", "/files/move?source=m1.txt&destination=moved.txt")
        assert.are.equal(200, r.status)
        assert.are.equal("one", read(home .. "/moved.txt"))
        assert.is_nil(read(home .. "/m1.txt"))
      end)
    end)

    it("sets permissions (mode, numeric owner/group) and rejects unknown users", function()
      helper.run(function()
        write(home .. "/perm.sh", "#!/bin/sh\n")
        local r = req("POST", "/files/permissions?path=perm.sh&mode=755")
        assert.are.equal(200, r.status)
        assert.are.equal(493, core.util.stat(home .. "/perm.sh").mode)
        local uid = core.util.getuid()
        r = req("POST", ("/files/permissions?path=perm.sh&owner=%d&group=%d"):format(uid,
          core.util.stat(home .. "/perm.sh").gid))
        assert.are.equal(200, r.status)
        assert_error(req("POST", "/files/permissions?path=perm.sh&owner=no-such-user-xyz"), 400, "BAD_REQUEST", "owner")
        assert_error(req("POST", "/files/permissions?path=perm.sh&mode=abc"), 400, "BAD_REQUEST", "mode")
      end)
    end)

    it("finds text, searches names by glob and replaces literally", function()
      helper.run(function()
        sh(("mkdir -p '%s/fs/sub'"):format(home))
        write(home .. "/fs/a.py", "import os\nx = 1 + 1\nprint(x)\n")
        write(home .. "/fs/sub/b.py", "y = (1 + 1)\n")
        write(home .. "/fs/sub/c.txt", "nothing\n")
        write(home .. "/fs/bin.dat", "1 + 1\0binary")
        local r = req("GET", "/files/find?path=fs&pattern=" .. q("1 + 1"))
        assert.are.equal(200, r.status)
        table.sort(r.json, function(a, b) return a.file < b.file end)
        assert.are.same({
          { file = home .. "/fs/a.py", line = 2, content = "x = 1 + 1" },
          { file = home .. "/fs/sub/b.py", line = 1, content = "y = (1 + 1)" },
        }, r.json)
        r = req("GET", "/files/find?path=fs&pattern=zzz-none")
        assert.are.equal("[]", r.body)
        r = req("GET", "/files/search?path=fs&pattern=" .. q("*.py"))
        table.sort(r.json.files)
        assert.are.same({ home .. "/fs/a.py", home .. "/fs/sub/b.py" }, r.json.files)
        r = req("GET", "/files/search?path=fs&pattern=su%5Bab%5D")
        assert.are.same({ home .. "/fs/sub" }, r.json.files)
        assert_error(req("GET", "/files/search?path=fs&pattern=" .. q("[ab")), 400, "BAD_REQUEST", "pattern")
        r = req("POST", "/files/replace", { files = { home .. "/fs/a.py", "fs/missing.py" },
                                             pattern = "1 + 1", newValue = "2 (%1)" })
        assert.are.equal(200, r.status)
        assert.are.equal(2, #r.json)
        assert.is_true(r.json[1].success)
        assert.is_false(r.json[2].success)
        assert.is_string(r.json[2].error)
        assert.are.equal("import os\nx = 2 (%1)\nprint(x)\n", read(home .. "/fs/a.py"))
      end)
    end)

    it("uploads a single file into place, creating parents", function()
      helper.run(function()
        local r = http.request {
          url = base .. "/files/upload?path=" .. q("up/one/file.bin"), method = "POST",
          multipart = { { name = "file", data = "hello\0world", filename = "file.bin" } }, timeout = 10,
        }
        assert.are.equal(200, r.status, r.body)
        assert.are.equal("hello\0world", read(home .. "/up/one/file.bin"))
        -- no file part: 400, nothing written
        r = http.request {
          url = base .. "/files/upload?path=up/none.bin", method = "POST",
          multipart = { { name = "other", data = "x" } }, timeout = 10,
        }
        assert.are.equal(400, r.status)
        assert.is_nil(read(home .. "/up/none.bin"))
      end)
    end)

    it("bulk-uploads as a stream, path before file, reporting per-file errors", function()
      helper.run(function()
        local big = helper.bigfile(home, "big.src", 3 * 1024 * 1024 + 17)
        local r = http.request {
          url = base .. "/files/bulk-upload", method = "POST", timeout = 20,
          multipart = {
            { name = "files[0].path", data = "bulk/a.txt" },
            { name = "files[0].file", data = "alpha", filename = "bulk/a.txt" },
            { name = "files[1].path", data = home .. "/bulk/deep/big.bin" },
            { name = "files[1].file", file = big, filename = "big.bin" },
          },
        }
        assert.are.equal(200, r.status, r.body)
        local res = json.decode(r.body)
        assert.are.same({ { path = home .. "/bulk/a.txt", bytes = 5 },
                          { path = home .. "/bulk/deep/big.bin", bytes = 3 * 1024 * 1024 + 17 } }, res.files)
        assert.are.equal(core.util.sha256_file(big), core.util.sha256_file(home .. "/bulk/deep/big.bin"))
        -- a file part without its .path first
        r = http.request {
          url = base .. "/files/bulk-upload", method = "POST", timeout = 10,
          multipart = {
            { name = "files[0].file", data = "orphan", filename = "x" },
            { name = "files[1].path", data = "bulk/b.txt" },
            { name = "files[1].file", data = "beta", filename = "bulk/b.txt" },
          },
        }
        assert.are.equal(400, r.status)
        res = json.decode(r.body)
        assert.are.same({ "file[0]: missing .path metadata" }, res.errors)
        assert.are.same({ { path = home .. "/bulk/b.txt", bytes = 4 } }, res.files)
        -- not multipart at all
        r = req("POST", "/files/bulk-upload", "hello", { ["Content-Type"] = "text/plain" })
        assert.are.equal(400, r.status)
        assert.is_truthy(json.decode(r.body).errors[1]:find("invalid multipart form", 1, true))
      end)
    end)

    it("accepts a chunked bulk upload and keeps an overwritten file's mode", function()
      helper.run(function()
        write(home .. "/tool.sh", "old")
        sh(("chmod 750 '%s/tool.sh'"):format(home))
        local body = table.concat {
          "--b0und\r\n", 'Content-Disposition: form-data; name="files[0].path"\r\n\r\n', "tool.sh\r\n",
          "--b0und\r\n", 'Content-Disposition: form-data; name="files[0].file"; filename="tool.sh"\r\n',
          "Content-Type: application/x-sh\r\n\r\n", ("#!/bin/sh\necho new\n"):rep(1000), "\r\n--b0und--\r\n",
        }
        -- odd-sized chunks, no Content-Length: what TS's uploadFileStream sends
        local pos = 1
        local r = http.request {
          url = base .. "/files/bulk-upload", method = "POST", timeout = 10,
          headers = { ["Content-Type"] = "multipart/form-data; boundary=b0und" },
          body_producer = function()
            if pos > #body then return nil end
            local chunk = body:sub(pos, pos + 6)
            pos = pos + 7
            return chunk
          end,
        }
        assert.are.equal(200, r.status, r.body)
        assert.are.equal(("#!/bin/sh\necho new\n"):rep(1000), read(home .. "/tool.sh"))
        assert.are.equal(488, core.util.stat(home .. "/tool.sh").mode)   -- 0750
      end)
    end)

    it("leaves no partial file when an upload is cut off", function()
      helper.run(function()
        write(home .. "/keep.txt", "original")
        -- a body that ends inside the file part (no closing boundary)
        local body = table.concat {
          "--XyZ\r\n", 'Content-Disposition: form-data; name="files[0].path"\r\n\r\n', "keep.txt\r\n",
          "--XyZ\r\n", 'Content-Disposition: form-data; name="files[0].file"; filename="keep.txt"\r\n',
          "Content-Type: application/octet-stream\r\n\r\n", "partial data that never ends",
        }
        local r = req("POST", "/files/bulk-upload", body, { ["Content-Type"] = "multipart/form-data; boundary=XyZ" })
        assert.are.equal(400, r.status)
        assert.are.equal("original", read(home .. "/keep.txt"))
        local leftovers = {}
        for _, n in ipairs(core.util.readdir(home)) do
          if n:find("%.part$") then leftovers[#leftovers + 1] = n end
        end
        assert.are.same({}, leftovers)
      end)
    end)

    it("downloads one file raw and many as multipart with file/error parts", function()
      helper.run(function()
        write(home .. "/dl.txt", "download me")
        write(home .. "/ünï €.txt", "unicode")
        local r = req("GET", "/files/download?path=dl.txt")
        assert.are.equal(200, r.status)
        assert.are.equal("download me", r.body)
        assert.are.equal("application/octet-stream", r.headers["content-type"])
        assert.is_truthy(r.headers["content-disposition"]:find('filename="dl.txt"', 1, true))
        assert_error(req("GET", "/files/download?path=proj"), 400)
        assert_error(req("GET", "/files/download?path=nope"), 404)

        r = req("POST", "/files/bulk-download", { paths = { "dl.txt", "/nope", home .. "/ünï €.txt", "proj" } })
        assert.are.equal(200, r.status)
        assert.are.equal("multipart/form-data; boundary=DAYTONA-FILE-BOUNDARY", r.headers["content-type"])
        local body = r.body
        assert.is_truthy(body:find("\r\n%-%-DAYTONA%-FILE%-BOUNDARY%-%-\r\n$"), "no closing boundary")
        -- parse with the runtime's multipart parser
        local multipart = require "daytona.runtime.multipart"
        local parts = {}
        local p = multipart.parser("DAYTONA-FILE-BOUNDARY", function(part)
          local rec = { name = part.name, filename = part.filename, headers = part.headers, data = {} }
          parts[#parts + 1] = rec
          return function(d) if d then rec.data[#rec.data + 1] = d end end
        end)
        assert(p:feed(body))
        assert(p:finish())
        assert.are.equal(4, #parts)
        assert.are.equal("file", parts[1].name)
        assert.are.equal("dl.txt", parts[1].filename)
        assert.are.equal("11", parts[1].headers["content-length"])
        assert.are.equal("download me", table.concat(parts[1].data))
        assert.are.equal("error", parts[2].name)
        assert.are.equal("/nope", parts[2].filename)
        local e = json.decode(table.concat(parts[2].data))
        assert.are.equal(404, e.statusCode)
        assert.are.equal("FILE_NOT_FOUND", e.code)
        assert.are.equal("/nope", e.path)
        assert.are.equal("file", parts[3].name)
        local want = (home .. "/ünï €.txt"):gsub("[^%w!#%$&%+%-%.%^_`|~]", function(c)
          return ("%%%02X"):format(c:byte())
        end)
        assert.is_truthy(parts[3].headers["content-disposition"]:find("filename*=utf-8''" .. want, 1, true),
          parts[3].headers["content-disposition"])
        assert.are.equal(home .. "/ünï €.txt", parts[3].filename)
        assert.are.equal("unicode", table.concat(parts[3].data))
        assert.are.equal("error", parts[4].name)
        assert.are.equal("INVALID_FILE_PATH", json.decode(table.concat(parts[4].data)).code)

        r = req("POST", "/files/bulk-download", { paths = { "", "a\0b", "dl.txt" } })
        assert.are.equal(200, r.status)
        local _, n400 = r.body:gsub("INVALID_FILE_PATH", "")
        assert.are.equal(2, n400)
        assert.is_truthy(r.body:find("download me", 1, true))
        r = req("POST", "/files/bulk-download", { paths = {} })
        assert.are.equal(400, r.status)
        assert.is_truthy(json.decode(r.body).error:find("non-empty", 1, true))
      end)
    end)
  end)

  describe("process/execute", function()
    it("runs commands with exit codes, cwd and env, merging stderr", function()
      helper.run(function()
        local r = req("POST", "/process/execute", { command = "echo out; echo err >&2; exit 7" })
        assert.are.equal(200, r.status)
        assert.are.same({ exitCode = 7, result = "out\nerr\n" }, r.json)
        sh(("mkdir -p '%s/wd'"):format(home))
        r = req("POST", "/process/execute", { command = "pwd; echo $GREETING", cwd = "wd",
                                              envs = { GREETING = "hello there" } })
        assert.are.same({ exitCode = 0, result = home .. "/wd\nhello there\n" }, r.json)
        r = req("POST", "/process/execute", { command = "pwd" })
        assert.are.equal(home .. "\n", r.json.result)
        assert_error(req("POST", "/process/execute", { command = "true", envs = { ["1BAD"] = "x" } }),
          400, "INVALID_REQUEST_BODY", "envs")
        assert_error(req("POST", "/process/execute", { command = "  " }), 400, nil, "command")
        assert_error(req("POST", "/process/execute", {}), 400, "INVALID_REQUEST_BODY", "command")
        assert_error(req("POST", "/process/execute", { command = "true", cwd = "no/such" }), 400, nil, "cwd")
        assert_error(req("POST", "/process/execute", { command = "true", timeout = -1 }), 400, nil, "timeout")
      end)
    end)

    it("kills the process group at the timeout and answers 408", function()
      helper.run(function()
        local t0 = core.now()
        local marker = home .. "/grandchild-alive"
        local r = req("POST", "/process/execute", {
          command = ("(sleep 2; touch '%s') & sleep 30"):format(marker), timeout = 1 })
        assert_error(r, 408, "PROCESS_EXECUTION_TIMEOUT")
        assert.is_true(core.now() - t0 < 5)
        scheduler.sleep(1.5)
        assert.is_nil(read(marker), "the background child survived the timeout")
      end)
    end)

    it("runs code by language, and says so when a runtime is missing", function()
      helper.run(function()
        local r = req("POST", "/process/code-run", { code = "import sys\nprint('py', sys.argv[1:])",
                                                     language = "python", argv = { "a", "b c" } })
        if r.status == 400 then
          assert.is_truthy(r.json.message:find("python3 is not installed", 1, true))
        else
          assert.are.equal(200, r.status, r.body)
          assert.are.equal(0, r.json.exitCode)
          assert.are.equal("py ['a', 'b c']\n", r.json.result)
          assert.is_truthy(r.body:find('"charts":[]', 1, true), r.body)
        end
        r = req("POST", "/process/code-run", { code = "console.log('js', process.argv.slice(1).join(','))",
                                               language = "javascript", argv = { "x" } })
        if r.status == 400 then
          assert.is_truthy(r.json.message:find("node is not installed", 1, true))
        else
          assert.are.equal("js x\n", r.json.result)
        end
        r = req("POST", "/process/code-run", { code = 'echo "sh $1"; exit 4', language = "shell", argv = { "arg" } })
        assert.are.same({ 4, "sh arg\n" }, { r.json.exitCode, r.json.result })
        assert_error(req("POST", "/process/code-run", { code = "x", language = "cobol" }), 400, nil, "language")
        assert_error(req("POST", "/process/code-run", { code = "sleep 10", language = "shell", timeout = 1 }),
          408, "PROCESS_EXECUTION_TIMEOUT")
      end)
    end)

    -- Python's charts (doc/protocol.md §4.3): the hook's artifact lines leave
    -- `result` and become artifacts.charts; Python, and only Python, runs
    -- with matplotlib pointed at the hook, unless the caller chose a backend
    it("takes Python's chart lines out of result into artifacts.charts", function()
      helper.run(function()
        local code = table.concat({
          "import os",
          "print('before')",
          [[print('dtn_artifact_k39fd2:{"type":"chart","value":{"type":"unknown","title":"t","elements":[],"png":"iVBORw0KGgo="}}')]],
          "print('dtn_artifact_k39fd2:{not json')",
          "hook = os.path.join(os.environ['PYTHONPATH'].split(':')[0], 'dtlua_charts.py')",
          "print('after', os.environ['MPLBACKEND'], os.path.isfile(hook))",
        }, "\n")
        local r = req("POST", "/process/code-run", { code = code, language = "python" })
        if r.status == 400 then return end   -- no python3 here (the runtimes test says so)
        assert.are.equal(200, r.status, r.body)
        assert.are.equal("before\nafter module://dtlua_charts True\n", r.json.result)
        assert.are.equal(1, #r.json.artifacts.charts)
        assert.are.equal("t", r.json.artifacts.charts[1].title)
        assert.is_truthy(r.body:find('"elements":[]', 1, true), r.body)
        r = req("POST", "/process/code-run", { code = "import os\nprint(os.environ['MPLBACKEND'])",
                                               language = "python", envs = { MPLBACKEND = "agg" } })
        assert.are.equal("agg\n", r.json.result)
        r = req("POST", "/process/code-run", { code = 'echo "[$MPLBACKEND]"', language = "shell" })
        assert.are.equal("[]\n", r.json.result)
      end)
    end)

    -- TypeScript runs through tsx, with argv and env as under JavaScript
    -- (process.argv = [node, ...argv]) and Node's exit codes and messages
    it("runs TypeScript through tsx, or names tsx when it is missing", function()
      helper.run(function()
        local function ts(code, extra)
          local body = { code = code, language = "typescript" }
          for k, v in pairs(extra or {}) do body[k] = v end
          return req("POST", "/process/code-run", body)
        end
        -- without tsx on PATH: a 400 that names it, never a fake result
        assert_error(ts("console.log(1)", { envs = { PATH = home .. "/no-bin" } }), 400, "RUNTIME_NOT_FOUND",
          "tsx is not installed")
        if not os.execute("command -v tsx >/dev/null 2>&1") then return end
        local r = ts(table.concat({
          "interface Greeting { who: string; n: number }",
          "type Pair = [string, string];",
          "const g: Greeting = { who: process.env.WHO as string, n: 2 };",
          "const args: Pair = process.argv.slice(1) as Pair;",
          "console.log(`ts ${g.who} ${g.n} ${JSON.stringify(args)} ${process.argv.length}`);",
        }, "\n"), { argv = { "a", "b c" }, envs = { WHO = "env-ok" } })
        assert.are.equal(200, r.status, r.body)
        assert.are.same({ 0, 'ts env-ok 2 ["a","b c"] 3\n' }, { r.json.exitCode, r.json.result })
        -- a type error is not checked (upstream runs ts-node -T): it runs
        r = ts("const n: string = 5;\nconsole.log(typeof n)")
        assert.are.same({ 0, "number\n" }, { r.json.exitCode, r.json.result })
        -- an uncaught throw: exit code 1, the message and its line on stderr
        r = ts("const x: number = 1;\nthrow new Error('boom ' + x)")
        assert.are.equal(1, r.json.exitCode)
        assert.matches("Error: boom 1", r.json.result, 1, true)
        assert.matches("%.ts:2", r.json.result)
        -- a syntax error: exit code 1 and the position, like node's
        r = ts("const x: number = ;")
        assert.are.equal(1, r.json.exitCode)
        assert.matches("%.ts:1:%d+: ERROR", r.json.result)
        r = ts("process.exit(6)")
        assert.are.equal(6, r.json.exitCode)
      end)
    end)
  end)

  describe("sessions", function()
    local function exec(sid, command, extra, headers)
      local body = { command = command }
      for k, v in pairs(extra or {}) do body[k] = v end
      return req("POST", "/process/session/" .. sid .. "/exec", body, headers)
    end

    it("keeps shell state between serial commands", function()
      helper.run(function()
        assert.are.equal(201, req("POST", "/process/session", { sessionId = "s1" }).status)
        assert_error(req("POST", "/process/session", { sessionId = "s1" }), 409, "CONFLICT")
        assert_error(req("POST", "/process/session", { sessionId = "entrypoint" }), 400)
        assert_error(req("POST", "/process/session", {}), 400, nil, "sessionId")
        sh(("mkdir -p '%s/sdir'"):format(home))
        local r = exec("s1", "cd sdir && export FOO=bar && myfn() { echo fn-$1; }")
        assert.are.equal(200, r.status)
        assert.are.equal(0, r.json.exitCode)
        r = exec("s1", "pwd; echo $FOO; myfn x; echo oops >&2; false")
        assert.are.equal(1, r.json.exitCode)
        assert.are.equal(home .. "/sdir\nbar\nfn-x\n", r.json.stdout)
        assert.are.equal("oops\n", r.json.stderr)
        assert.is_truthy(r.json.output:find("\1\1\1" .. home .. "/sdir\n", 1, true))
        assert.is_truthy(r.json.output:find("\2\2\2oops\n", 1, true))
        assert.is_string(r.json.cmdId)
        -- a last line without a newline gets one
        r = exec("s1", "printf 'no newline'")
        assert.are.equal("no newline\n", r.json.stdout)
        assert.are.equal("\1\1\1no newline\n", r.json.output)
        -- exit in a command ends the shell; the next command gets a fresh one
        r = exec("s1", "exit 5")
        assert.are.equal(5, r.json.exitCode)
        r = exec("s1", "echo alive")
        assert.are.equal("alive\n", r.json.stdout)
        -- the session and its commands
        r = req("GET", "/process/session/s1")
        assert.are.equal("s1", r.json.sessionId)
        assert.are.equal(5, #r.json.commands)
        assert.are.equal(1, r.json.commands[2].exitCode)
        r = req("GET", "/process/session")
        assert.are.equal(1, #r.json)
        assert_error(req("GET", "/process/session/none"), 404, "NOT_FOUND")
        assert_error(exec("none", "true"), 404)
      end)
    end)

    it("shapes exec output by SDK version", function()
      helper.run(function()
        req("POST", "/process/session", { sessionId = "sv" })
        local r = exec("sv", "echo a; echo b >&2", nil, { ["X-Daytona-SDK-Version"] = "0.100.0" })
        assert.are.equal("\1\1\1a\n\2\2\2b\n", r.json.output)
        assert.is_nil(r.json.stdout)
        local h = http.request { url = base .. "/process/session/sv/exec", method = "POST",
                                 body = '{"command":"echo c; echo d >&2"}', timeout = 10 }
        local legacy = json.decode(h.body)
        assert.are.equal("c\nd\n", legacy.output)
        assert.are.equal(json.null, legacy.stdout)
      end)
    end)

    it("runs async commands, takes input, and serves logs as JSON and text", function()
      helper.run(function()
        req("POST", "/process/session", { sessionId = "s2" })
        local r = exec("s2", "read name; echo hello $name; echo bye >&2", { runAsync = true })
        assert.are.equal(202, r.status)
        local cid = r.json.cmdId
        r = req("GET", "/process/session/s2/command/" .. cid)
        assert.are.same({ id = cid, command = "read name; echo hello $name; echo bye >&2" }, r.json)
        -- a command queued behind the async one waits for it
        local later = scheduler.spawn(exec, "s2", "echo after")
        r = req("POST", ("/process/session/s2/command/%s/input"):format(cid), { data = "world" })
        assert.are.equal(204, r.status)
        local after = later:wait()
        assert.are.equal("after\n", after.json.stdout)
        r = req("GET", "/process/session/s2/command/" .. cid)
        assert.are.equal(0, r.json.exitCode)
        r = req("GET", ("/process/session/s2/command/%s/logs"):format(cid))
        assert.are.equal(200, r.status)
        assert.are.same({ output = "\1\1\1world\n\1\1\1hello world\n\2\2\2bye\n",
                          stdout = "world\nhello world\n", stderr = "bye\n" }, r.json)
        -- raw text for SDKs between 0.27 and 0.167, stripped for legacy ones
        r = req("GET", ("/process/session/s2/command/%s/logs"):format(cid), nil, { ["X-Daytona-SDK-Version"] = "0.50.0" })
        assert.are.equal("\1\1\1world\n\1\1\1hello world\n\2\2\2bye\n", r.body)
        assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
        assert_error(req("POST", ("/process/session/s2/command/%s/input"):format(cid), { data = "x" }), 410, "GONE")
        assert_error(req("POST", "/process/session/s2/command/nope/input", { data = "x" }), 404)
        assert_error(req("POST", ("/process/session/s2/command/%s/input"):format(cid), {}), 400, nil, "data")
        -- suppressed echo
        r = exec("s2", "read x; echo got-$x", { runAsync = true, suppressInputEcho = true })
        req("POST", ("/process/session/s2/command/%s/input"):format(r.json.cmdId), { data = "y\n" })
        helper.eventually(function()
          return req("GET", "/process/session/s2/command/" .. r.json.cmdId).json.exitCode == 0
        end)
        local logs = req("GET", ("/process/session/s2/command/%s/logs"):format(r.json.cmdId)).json
        assert.are.equal("got-y\n", logs.stdout)
      end)
    end)

    it("streams logs over a WebSocket with marker framing, closing 1000 at the end", function()
      helper.run(function()
        req("POST", "/process/session", { sessionId = "s3" })
        local r = exec("s3", "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.1; done; exit 3",
                       { runAsync = true })
        local cid = r.json.cmdId
        local ws = websocket.connect(("%s/process/session/s3/command/%s/logs?follow=true"):format(wsbase, cid),
                                     { headers = { ["X-Daytona-SDK-Version"] = SDK } })
        assert.is_nil(ws.protocol)
        local got = {}
        for data, kind in ws:messages(10) do
          assert.are.equal("binary", kind)
          assert.is_true(#data <= 1024)
          got[#got + 1] = data
        end
        assert.are.equal(1000, ws.close_code)
        local log = table.concat(got)
        local out, err = common.demux(log)
        assert.are.equal("out1\nout2\nout3\n", out)
        assert.are.equal("err1\nerr2\nerr3\n", err)
        assert.are.equal(3, req("GET", "/process/session/s3/command/" .. cid).json.exitCode)
        -- a finished command replays in full; a browser-style version token is echoed
        ws = websocket.connect(("%s/process/session/s3/command/%s/logs?follow=true"):format(wsbase, cid),
                               { protocols = { "X-Daytona-SDK-Version~" .. SDK } })
        assert.are.equal("X-Daytona-SDK-Version~" .. SDK, ws.protocol)
        got = {}
        for data in ws:messages(10) do got[#got + 1] = data end
        assert.are.equal(log, table.concat(got))
        -- unknown command: a plain 404 before any upgrade
        local refused, _, _, fields = websocket.connect(wsbase .. "/process/session/s3/command/nope/logs?follow=true")
        assert.is_nil(refused)
        assert.are.equal(404, fields.status)
      end)
    end)

    it("deletes sessions and serves the empty entrypoint session", function()
      helper.run(function()
        req("POST", "/process/session", { sessionId = "s4" })
        local r = exec("s4", "sleep 30", { runAsync = true })
        local cid = r.json.cmdId
        assert.are.equal(204, req("DELETE", "/process/session/s4").status)
        assert_error(req("GET", "/process/session/s4"), 404)
        assert_error(req("DELETE", "/process/session/entrypoint"), 400)
        r = req("GET", "/process/session/entrypoint")
        assert.are.same({ sessionId = "entrypoint", commands = {} }, r.json)
        assert.is_truthy(r.body:find('"commands":[]', 1, true))
        r = req("GET", "/process/session/entrypoint/logs")
        assert.are.same({ output = "", stdout = "", stderr = "" }, r.json)
        assert.is_string(cid)
      end)
    end)
  end)

  describe("pty", function()
    -- read binary output until pred(all output so far) holds
    local function read_until(ws, pred, what)
      local buf = {}
      local deadline = core.now() + 10
      while core.now() < deadline do
        local data, kind = ws:receive(deadline - core.now())
        assert.is_not_nil(data, "closed while waiting for " .. what)
        if kind == "binary" then buf[#buf + 1] = data end
        if pred(table.concat(buf)) then return table.concat(buf) end
      end
      error("timed out waiting for " .. what)
    end

    it("creates, connects, echoes, resizes and reports the exit code", function()
      helper.run(function()
        local r = req("POST", "/process/pty", { id = "p1", cols = 100, rows = 30, lazyStart = true,
                                                envs = { PTYVAR = "pty-ok" } })
        assert.are.equal(201, r.status)
        assert.are.same({ sessionId = "p1" }, r.json)
        assert_error(req("POST", "/process/pty", { id = "p1" }), 409)
        assert_error(req("POST", "/process/pty", { id = "p9", cols = 5000 }), 400, nil, "cols")
        r = req("GET", "/process/pty/p1")
        assert.are.equal(false, r.json.active)
        assert.are.equal(true, r.json.lazyStart)
        local ws = websocket.connect(wsbase .. "/process/pty/p1/connect",
                                     { protocols = { "X-Daytona-Pty-Exit-Control" } })
        assert.are.equal("X-Daytona-Pty-Exit-Control", ws.protocol)
        local first = ws:receive(10)
        assert.are.equal('{"type":"control","status":"connected"}', first)
        ws:send("echo $PTYVAR-$TERM\n", "binary")
        read_until(ws, function(s) return s:find("pty-ok-xterm-256color", 1, true) end, "echo")
        r = req("POST", "/process/pty/p1/resize", { cols = 120, rows = 40 })
        assert.are.equal(200, r.status)
        assert.are.equal(120, r.json.cols)
        ws:send("stty size\n", "binary")
        read_until(ws, function(s) return s:find("40 120", 1, true) end, "stty size")
        assert_error(req("POST", "/process/pty/p1/resize", { cols = 0, rows = 10 }), 400)
        assert_error(req("POST", "/process/pty/nope/resize", { cols = 10, rows = 10 }), 410)
        r = req("GET", "/process/pty")
        assert.are.equal(1, #r.json.sessions)
        assert.is_true(r.json.sessions[1].active)
        ws:send("exit 3\n", "binary")
        local control
        while true do
          local data, kind = ws:receive(10)
          if not data then break end
          if kind == "text" then control = json.decode(data) end
        end
        assert.are.same({ type = "control", status = "exited", exitCode = 3, exitReason = "non-zero exit" }, control)
        assert.are.equal(1011, ws.close_code)
        assert.are.same({ exitCode = 3, exitReason = "non-zero exit" }, json.decode(ws.close_reason))
        helper.eventually(function() return req("GET", "/process/pty/p1").status == 404 end)
      end)
    end)

    it("kills with DELETE (137) and supports the 0.218 create-connect flow", function()
      helper.run(function()
        local envs = json.encode { CC = "from-subprotocol" }
        local function b64url(s)
          local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
          local out = {}
          for i = 1, #s, 3 do
            local a, b, c = s:byte(i, i + 2)
            local n = (a << 16) | ((b or 0) << 8) | (c or 0)
            local chunk = {}
            for j = 3, 0, -1 do chunk[#chunk + 1] = alphabet:sub(((n >> (6 * j)) & 63) + 1, ((n >> (6 * j)) & 63) + 1) end
            local keep = c and 4 or b and 3 or 2
            out[#out + 1] = table.concat(chunk):sub(1, keep)
          end
          return table.concat(out)
        end
        local ws = websocket.connect(wsbase .. "/process/pty/create-connect?id=p2&cols=90&rows=20",
          { protocols = { "X-Daytona-Pty-Envs~" .. b64url(envs), "X-Daytona-Pty-Exit-Control" } })
        assert.are.equal("X-Daytona-Pty-Exit-Control", ws.protocol)
        assert.are.equal('{"type":"control","status":"connected"}', ws:receive(10))
        ws:send("echo $CC; stty size\n", "binary")
        read_until(ws, function(s) return s:find("from-subprotocol", 1, true) and s:find("20 90", 1, true) end,
                   "create-connect echo")
        local r = req("DELETE", "/process/pty/p2")
        assert.are.same({ message = "PTY session deleted" }, r.json)
        while ws:receive(10) do end
        assert.are.equal(1011, ws.close_code)
        assert.are.same({ exitCode = 137, exitReason = "SIGKILL" }, json.decode(ws.close_reason))
        assert_error(req("DELETE", "/process/pty/p2"), 404)
        -- connecting to an unknown PTY: an error control frame
        ws = websocket.connect(wsbase .. "/process/pty/nope/connect")
        local msg = json.decode(ws:receive(10))
        assert.are.equal("error", msg.status)
        assert.is_truthy(msg.error:find("PTY session not found", 1, true))
      end)
    end)
  end)

  describe("code interpreter", function()
    local function run(body, protocols)
      local ws = websocket.connect(wsbase .. "/process/interpreter/execute", { protocols = protocols })
      ws:send(json.encode(body))
      local msgs = {}
      for data, kind in ws:messages(20) do
        assert.are.equal("text", kind)
        local m = json.decode(data)
        for _, k in ipairs { "type", "text", "name", "value", "traceback" } do
          assert.is_string(m[k], "missing key " .. k)
        end
        msgs[#msgs + 1] = m
      end
      local out, err = {}, {}
      for _, m in ipairs(msgs) do
        if m.type == "stdout" then out[#out + 1] = m.text elseif m.type == "stderr" then err[#err + 1] = m.text end
      end
      return { msgs = msgs, stdout = table.concat(out), stderr = table.concat(err), code = ws.close_code,
               reason = ws.close_reason, last = msgs[#msgs] }
    end

    it("keeps state per context, reports errors, times out with 4008", function()
      helper.run(function()
        if not require("dtlocal.toolbox.proc").which("python3") then
          local r = run { code = "print(1)" }
          assert.are.equal(1011, r.code)
          return
        end
        local r = run { code = "x = 41\nprint('hi'); import sys; print('warn', file=sys.stderr)" }
        assert.are.equal(1000, r.code)
        assert.are.equal("hi\n", r.stdout)
        assert.are.equal("warn\n", r.stderr)
        assert.are.same({ "control", "completed" }, { r.last.type, r.last.text })
        r = run { code = "import os\nprint(x + 1, os.environ.get('ONE'))", envs = { ONE = "1" } }
        assert.are.equal("42 1\n", r.stdout)
        r = run { code = "1/0" }
        local e
        for _, m in ipairs(r.msgs) do if m.type == "error" then e = m end end
        assert.are.same({ "ZeroDivisionError", "division by zero" }, { e.name, e.value })
        assert.is_truthy(e.traceback:find("ZeroDivisionError", 1, true))
        -- a separate context has its own globals
        local c = req("POST", "/process/interpreter/context", { cwd = "." })
        assert.are.equal(200, c.status)
        assert.are.equal("python", c.json.language)
        r = run { code = "print('x' in globals())", contextId = c.json.id }
        assert.are.equal("False\n", r.stdout)
        local list = req("GET", "/process/interpreter/context").json.contexts
        assert.are.equal(1, #list)
        assert.are.equal(c.json.id, list[1].id)
        assert.are.same({ message = "Context deleted successfully" },
          req("DELETE", "/process/interpreter/context/" .. c.json.id).json)
        r = run { code = "print(1)", contextId = c.json.id }
        assert.are.equal(1008, r.code)
        assert_error(req("DELETE", "/process/interpreter/context/default"), 400)
        assert_error(req("POST", "/process/interpreter/context", { language = "ruby" }), 400, nil, "language")
        -- timeout: interrupted, close 4008; the default context survives a caught interrupt
        local t0 = core.now()
        r = run { code = "import time\nprint('start')\ntime.sleep(30)", timeout = 1 }
        assert.are.equal(4008, r.code)
        assert.are.same({ "control", "interrupted" }, { r.last.type, r.last.text })
        assert.is_true(core.now() - t0 < 5)
        r = run { code = "print(x)" }
        assert.are.equal("41\n", r.stdout)
        r = run { code = "" }
        assert.are.equal(1008, r.code)
        -- a browser-style client gets its version token echoed
        local ws = websocket.connect(wsbase .. "/process/interpreter/execute",
                                     { protocols = { "X-Daytona-SDK-Version~" .. SDK } })
        assert.are.equal("X-Daytona-SDK-Version~" .. SDK, ws.protocol)
        ws:close()
      end)
    end)
  end)

  describe("git", function()
    it("clones from a local bare remote, branches, commits, pushes, pulls and reports status", function()
      helper.run(function()
        local remote = helper.tmpdir() .. "/remote.git"
        local seed = helper.tmpdir()
        sh(("git init -q --bare -b main '%s'"):format(remote))
        sh(("cd '%s' && git init -q -b main && echo seed > README && git add README && " ..
            "git -c user.name=s -c user.email=s@x commit -q -m seed && git remote add origin '%s' && " ..
            "git push -q origin main"):format(seed, remote))
        local r = req("POST", "/git/clone", { url = remote, path = "repo" })
        assert.are.equal(200, r.status, r.body)
        assert.are.equal("seed\n", read(home .. "/repo/README"))
        r = req("GET", "/git/branches?path=repo")
        assert.are.same({ branches = { "main" } }, r.json)
        assert.are.equal(201, req("POST", "/git/branches", { path = "repo", name = "feature" }).status)
        r = req("GET", "/git/branches?path=repo")
        table.sort(r.json.branches)
        assert.are.same({ "feature", "main" }, r.json.branches)
        write(home .. "/repo/new.txt", "new\n")
        write(home .. "/repo/README", "changed\n")
        r = req("GET", "/git/status?path=repo")
        assert.are.equal("feature", r.json.currentBranch)
        local st = {}
        for _, f in ipairs(r.json.fileStatus) do st[f.name] = f end
        assert.are.equal("Untracked", st["new.txt"].worktree)
        assert.are.equal("Modified", st["README"].worktree)
        assert.are.equal(200, req("POST", "/git/add", { path = "repo", files = { "." } }).status)
        r = req("GET", "/git/status?path=repo")
        st = {}
        for _, f in ipairs(r.json.fileStatus) do st[f.name] = f end
        assert.are.equal("Added", st["new.txt"].staging)
        r = req("POST", "/git/commit", { path = "repo", message = "work", author = "Ann", email = "ann@x" })
        assert.are.equal(200, r.status, r.body)
        assert.is_truthy(r.json.hash:match("^%x+$") and #r.json.hash == 40)
        r = req("GET", "/git/status?path=repo")
        assert.is_truthy(r.body:find('"fileStatus":[]', 1, true), r.body)
        assert.are.equal(200, req("POST", "/git/push", { path = "repo" }).status)
        r = req("GET", "/git/status?path=repo")
        assert.is_true(r.json.branchPublished)
        assert.are.equal(0, r.json.ahead)
        -- somebody else pushes to feature; pull brings it in
        sh(("cd '%s' && git fetch -q origin && git checkout -q -b feature origin/feature && echo more > more.txt && " ..
            "git add more.txt && git -c user.name=s -c user.email=s@x commit -q -m more && git push -q origin feature")
          :format(seed))
        assert.are.equal(200, req("POST", "/git/pull", { path = "repo" }).status)
        assert.are.equal("more\n", read(home .. "/repo/more.txt"))
        r = req("GET", "/git/history?path=repo")
        assert.are.equal("more", r.json[1].message)
        assert.are.equal("work", r.json[2].message)
        assert.are.equal("Ann", r.json[2].author)
        assert.are.equal(200, req("POST", "/git/checkout", { path = "repo", branch = "main" }).status)
        assert.are.equal(204, req("DELETE", "/git/branches", { path = "repo", name = "feature" }).status)
        -- a fresh repository: empty history, status on its unborn branch
        sh(("git init -q -b trunk '%s/fresh'"):format(home))
        assert.are.equal("[]", req("GET", "/git/history?path=fresh").body)
        assert.are.equal("trunk", req("GET", "/git/status?path=fresh").json.currentBranch)
        -- errors: missing repo, unknown branch, bad body
        assert_error(req("GET", "/git/status?path=nothere"), 404)
        assert_error(req("POST", "/git/checkout", { path = "repo", branch = "no-such-branch" }), 404)
        assert_error(req("POST", "/git/clone", { url = remote }), 400, "INVALID_REQUEST_BODY", "path")
        assert_error(req("POST", "/git/clone", { url = remote .. "-missing", path = "repo2" }), 404)
        -- what git refuses of the request is the request's fault, named as git names it
        assert_error(req("POST", "/git/clone", { url = "file://", path = "repo3" }), 400, "BAD_REQUEST")
        local bad = req("POST", "/git/commit", { path = "repo", message = "m", author = ",", email = "a@x", allow_empty = true })
        assert_error(bad, 400, "BAD_REQUEST")
        assert.matches("git commit failed: .*disallowed characters", bad.body)
        write(home .. "/repo/README", "conflicting\n")
        assert_error(req("POST", "/git/checkout", { path = "repo", branch = "feature" }), 409, "CONFLICT")
      end)
    end)
  end)

  describe("main options", function()
    it("serves on a unix socket and runs the entrypoint as a session", function()
      helper.run(function()
        local dir = helper.tmpdir()
        local sock = dir .. "/toolbox.sock"
        local other = toolbox.start { socket = sock, home = dir, state_dir = helper.tmpdir(),
                                      entrypoint = "echo from-entrypoint; echo warn >&2" }
        local function get(path)
          local r = http.request { url = "http://toolbox" .. path, unix_socket = sock, timeout = 10,
                                   headers = { ["X-Daytona-SDK-Version"] = SDK } }
          assert.are.equal(200, r.status, r.body)
          return json.decode(r.body)
        end
        assert.are.same({ dir = dir }, get("/work-dir"))
        local logs = helper.eventually(function()
          local s = get("/process/session/entrypoint")
          return s.commands[1] and s.commands[1].exitCode == 0 and get("/process/session/entrypoint/logs")
        end)
        assert.are.same({ output = "\1\1\1from-entrypoint\n\2\2\2warn\n", stdout = "from-entrypoint\n",
                          stderr = "warn\n" }, logs)
        local s = get("/process/session/entrypoint")
        assert.are.equal("entrypoint_command", s.commands[1].id)
        -- the entrypoint session is not listed with the others
        assert.are.same({}, get("/process/session"))
        other:close()
        assert.is_nil(core.util.stat(sock))
        -- a stale socket file (a daemon that died) is replaced
        sh(("python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind(\"%s\")'"):format(sock))
        assert.are.equal("socket", core.util.stat(sock).type)
        other = toolbox.start { socket = sock, home = dir, state_dir = helper.tmpdir() }
        assert.are.same({ dir = dir }, get("/work-dir"))
        other:close()
      end)
    end)
  end)

  describe("unsupported features", function()
    it("answers the proxy with an error, not a fake success", function()
      helper.run(function()
        -- computer use is served (spec/dtlocal/computeruse_spec.lua): before
        -- start, its status is inactive and its input routes say why they fail
        local r = req("GET", "/computeruse/status")
        assert.are.equal(200, r.status, r.body)
        assert.are.same({ status = "inactive" }, r.json)
        assert_error(req("GET", "/computeruse/mouse/position"), 503, nil, "POST /computeruse/start")
        -- language servers are served (spec/dtlocal/lsp_spec.lua): no 501 left
        assert_error(req("POST", "/lsp/start", { languageId = "cobol", pathToProject = "." }), 400,
          "LSP_INVALID_REQUEST", "unsupported languageId")
        assert_error(req("GET", "/proxy/8080/some/path"), 501, "NOT_IMPLEMENTED")
        r = req("GET", "/port")
        assert.are.equal(200, r.status)
        assert.is_table(r.json.ports)
        local lp = srv.port
        assert.are.same({ isInUse = true }, req("GET", ("/port/%d/in-use"):format(lp)).json)
        assert_error(req("GET", "/port/abc/in-use"), 400)
      end)
    end)
  end)
end)
