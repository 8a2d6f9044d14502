-- sandbox.fs against a private local server: metadata, small operations,
-- single and bulk transfers, streaming with progress and cancellation.
local errors = require "daytona.errors"
local helper = require "support.helper"
local core = require "daytona.core"
local fixture = require "sdk.fixture"

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

describe("sandbox.fs", function()
  local srv, client, sb, dir, home

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv)
    home = sb:get_user_home_dir()
  end)

  teardown(function() fixture.release(srv, sb) end)

  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.cleanup() end)

  it("uploads bytes and a local file, and downloads them to memory and to disk", function()
    sb.fs:upload_file({ data = "hello\0world" }, "up/a.bin")
    local bytes = sb.fs:download_file("up/a.bin")
    assert.are.equal("hello\0world", bytes)
    local src = helper.bigfile(dir, "src.bin", 3 * 1024 * 1024 + 17)
    sb.fs:upload_file(src, home .. "/up/big.bin")
    local dst = dir .. "/sub/dir/big.copy"
    assert.is_nil(sb.fs:download_file(home .. "/up/big.bin", dst))
    assert.are.equal(core.util.sha256_file(src), core.util.sha256_file(dst))
  end)

  it("makes a download's local directories without a shell: quotes, spaces, $(...) and a leading - are data", function()
    sb.fs:upload_file({ data = "odd path" }, home .. "/odd.txt")
    -- a child dtlua in `dir` with no PATH: `mkdir -p` through a shell could
    -- neither be found nor take "-x" for a directory
    local rel = "-x/it's a \"dir\"/$(touch pwned)/`touch pwned2`/; touch pwned3/f.txt"
    local script = [[
      local daytona = require "daytona"
      local c = daytona.new { api_key = arg[1], api_url = arg[2], target = "local", retry = false }
      local sb = c:get(arg[3])
      sb.fs:download_file(arg[4], arg[5])
      io.write("downloaded")
    ]]
    local env = helper.child_env()
    env.PATH = "/nonexistent"
    local process = require "daytona.runtime.process"
    local f = assert(io.open(dir .. "/download.lua", "w"))
    f:write(script); f:close()
    local r = assert(process.run({ helper.build_path("bin/dtlua"), dir .. "/download.lua",
      srv.token, srv.api_url, sb.id, home .. "/odd.txt", rel }, { cwd = dir, env = env, timeout = 60 }))
    assert.are.equal("downloaded", r.stdout, r.stderr)
    assert.are.equal(0, r.exit_code)
    assert.are.equal("odd path", slurp(dir .. "/" .. rel))
    for _, name in ipairs { "pwned", "pwned2", "pwned3" } do
      assert.is_nil(core.util.stat(dir .. "/" .. name), name)
      assert.is_nil(core.util.stat(name), name)
    end
    -- in this process too, with an absolute path
    local dst = dir .. "/a b/'q'/$(touch pwned)/f.txt"
    sb.fs:download_file(home .. "/odd.txt", dst)
    assert.are.equal("odd path", slurp(dst))
    assert.is_nil(core.util.stat(dir .. "/pwned"))
  end)

  it("raises DaytonaNotFoundError for a missing file, leaving no local file", function()
    local err = fixture.fails(sb.fs.download_file, sb.fs, "/no/such/file")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    err = fixture.fails(sb.fs.download_file, sb.fs, "/no/such/file", dir .. "/x")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    assert.is_nil(io.open(dir .. "/x"))
    -- an existing local file is left as it was
    local f = assert(io.open(dir .. "/old", "wb")); f:write("old"); f:close()
    fixture.fails(sb.fs.download_file, sb.fs, "/no/such/file", dir .. "/old")
    assert.are.equal("old", slurp(dir .. "/old"))
    local p = io.popen("ls -A '" .. dir .. "'")
    assert.are.equal("old\n", p:read("a"))
    p:close()
    err = fixture.fails(sb.fs.get_file_info, sb.fs, "/no/such/file")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
    err = fixture.fails(sb.fs.list_files, sb.fs, "/no/such/dir")
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
  end)

  it("creates folders, lists, stats, moves, chmods and deletes", function()
    sb.fs:create_folder("work/sub", "750")
    sb.fs:upload_file({ data = "x = 1\n" }, "work/sub/m.py")
    local info = sb.fs:get_file_info("work/sub")
    assert.is_true(info.is_dir)
    assert.are.equal("0750", info.permissions)
    local list = sb.fs:list_files("work/sub")
    assert.are.equal(1, #list)
    assert.are.equal("m.py", list[1].name)
    assert.is_false(list[1].is_dir)
    assert.are.equal(6, list[1].size)
    sb.fs:move_files("work/sub/m.py", "work/n.py")
    assert.is_true(errors.is(fixture.fails(sb.fs.get_file_info, sb.fs, "work/sub/m.py"), errors.DaytonaNotFoundError))
    sb.fs:upload_file({ data = "other" }, "work/o.txt")
    assert.is_true(errors.is(fixture.fails(sb.fs.move_files, sb.fs, "work/o.txt", "work/n.py"), errors.DaytonaConflictError))
    sb.fs:set_file_permissions("work/n.py", { mode = "600" })
    assert.are.equal("0600", sb.fs:get_file_info("work/n.py").permissions)
    -- a directory needs recursive
    assert.is_true(errors.is(fixture.fails(sb.fs.delete_file, sb.fs, "work"), errors.DaytonaValidationError))
    sb.fs:delete_file("work", { recursive = true })
    assert.is_true(errors.is(fixture.fails(sb.fs.get_file_info, sb.fs, "work"), errors.DaytonaNotFoundError))
  end)

  it("finds, searches and replaces in files", function()
    sb.fs:upload_files{
      { source = { data = "alpha\nneedle here\n" }, destination = "s/a.txt" },
      { source = { data = "needle\n" }, destination = "s/deep/b.py" },
    }
    local matches = sb.fs:find_files("s", "needle")
    assert.are.equal(2, #matches)
    for _, m in ipairs(matches) do
      assert.is_string(m.file)
      assert.is_number(m.line)
      assert.matches("needle", m.content)
    end
    local found = sb.fs:search_files("s", "*.py")
    assert.are.equal(1, #found.files)
    assert.matches("b%.py$", found.files[1])
    local res = sb.fs:replace_in_files({ "s/a.txt", "s/missing.txt" }, "needle", "pin")
    assert.are.equal(2, #res)
    local by = {}
    for _, r in ipairs(res) do by[r.file:match("[^/]+$")] = r end
    assert.is_true(by["a.txt"].success)
    assert.is_false(by["missing.txt"].success)
    assert.are.equal("alpha\npin here\n", sb.fs:download_file("s/a.txt"))
  end)

  it("uploads and downloads many files in one request, reporting per-file errors", function()
    local local1 = dir .. "/l1.txt"
    local f = assert(io.open(local1, "wb")); f:write("from disk"); f:close()
    local up = sb.fs:upload_files{
      { source = local1, destination = "bulk/one.txt" },
      { source = { data = "from memory" }, destination = "bulk/two.txt" },
    }
    assert.are.equal(2, #up)
    assert.are.equal(9, up[1].bytes)
    assert.is_nil(up[1].error)
    local down = sb.fs:download_files{
      { source = "bulk/one.txt", destination = dir .. "/d/one.txt" },
      { source = "bulk/two.txt" },
      { source = "bulk/none.txt" },
    }
    assert.are.equal(3, #down)
    assert.are.equal(dir .. "/d/one.txt", down[1].result)
    assert.are.equal("from disk", slurp(dir .. "/d/one.txt"))
    assert.are.equal("from memory", down[2].result)
    assert.is_nil(down[3].result)
    assert.is_true(errors.is(down[3].error, errors.DaytonaNotFoundError))
  end)

  it("uploads and downloads 1,500 files in one request each (beyond 1,000 multipart parts)", function()
    local items, want = {}, {}
    for i = 1, 1500 do
      items[i] = { source = { data = "file " .. i }, destination = ("many/d%02d/f%04d.txt"):format(i % 10, i) }
      want[i] = { source = items[i].destination }
    end
    local up = sb.fs:upload_files(items)
    assert.are.equal(1500, #up)
    for i = 1, 1500 do assert.is_nil(up[i].error) end
    local down = sb.fs:download_files(want)
    assert.are.equal(1500, #down)
    for i = 1, 1500 do assert.are.equal("file " .. i, down[i].result) end
  end)

  it("raises when a file of upload_files fails, with every file's outcome in the error", function()
    sb.fs:upload_file({ data = "f" }, "blocker")
    local files = {
      { source = { data = "ok" }, destination = "fine.txt" },
      { source = { data = "no" }, destination = "blocker/under-a-file.txt" },
    }
    local err = fixture.fails(sb.fs.upload_files, sb.fs, files)
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.are.equal("UPLOAD_FAILED", err.code)
    assert.matches("1 of 2 files failed", err.message, 1, true)
    assert.matches("blocker/under-a-file.txt", err.message, 1, true)
    assert.is_nil(err.results[1].error)
    assert.are.equal(2, err.results[1].bytes)
    assert.is_true(errors.is(err.results[2].error, errors.DaytonaError))
    assert.are.equal("ok", sb.fs:download_file("fine.txt"))   -- the others were written
    -- raise = false: the list, failures included
    local res = sb.fs:upload_files(files, { raise = false })
    assert.is_nil(res[1].error)
    assert.is_not_nil(res[2].error)
    assert.is_true(errors.is(fixture.fails(sb.fs.upload_file, sb.fs, { data = "no" }, "blocker/x"),
      errors.DaytonaError))
  end)

  it("says to pass { data = ... } when content is passed as a path", function()
    local err = fixture.fails(sb.fs.upload_file, sb.fs, "#!/bin/sh\necho hi\n", "run.sh")
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    assert.matches("looks like file content", err.message, 1, true)
    assert.matches("pass { data = ... }", err.message, 1, true)
    assert.are.equal("source", err.argument)
    err = fixture.fails(sb.fs.upload_file, sb.fs, "no-such-local-file.txt", "x.txt")
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    assert.are.equal("ENOENT", err.code)
    assert.matches("cannot open local file no-such-local-file.txt", err.message, 1, true)
    assert.matches("pass { data = ... }", err.message, 1, true)
    err = fixture.fails(sb.fs.upload_files, sb.fs, { { source = ("x"):rep(5000), destination = "y" } })
    assert.is_true(errors.is(err, errors.DaytonaValidationError))
    assert.are.equal("files[1].source", err.argument)
    assert.is_true(#err.message < 300)        -- a preview, not the content
  end)

  it("streams uploads and downloads with progress, in constant memory", function()
    local size = 8 * 1024 * 1024
    local sent = 0
    local n = 0
    -- a producer source: 8 MiB made chunk by chunk
    local block = ("0123456789abcdef"):rep(4096)
    sb.fs:upload_file_stream(function()
      if n * #block >= size then return nil end
      n = n + 1
      return block
    end, "stream/big.bin", { on_progress = function(p, done)
      -- one object with Python's names, then the numbers positionally
      assert.are.equal(p.bytes_sent, done)
      assert.are.equal("big.bin", p.file)
      sent = p.bytes_sent
    end })
    assert.is_true(sent >= size)
    assert.are.equal(size, sb.fs:get_file_info("stream/big.bin").size)
    local got, last, total = 0, 0, nil
    collectgarbage()
    local mem0 = collectgarbage("count")
    local peak = mem0
    for chunk in sb.fs:download_file_stream("stream/big.bin", {
      on_progress = function(p, done, t)
        assert.are.equal(p.bytes_received, done)
        assert.are.equal(p.total_bytes, t)
        last, total = p.bytes_received, p.total_bytes
      end }) do
      got = got + #chunk
      -- live memory, not garbage waiting for the collector
      collectgarbage()
      local m = collectgarbage("count")
      if m > peak then peak = m end
    end
    assert.are.equal(size, got)
    assert.are.equal(size, last)
    assert.are.equal(size, total)
    -- never anywhere near the whole file in Lua memory
    assert.is_true((peak - mem0) * 1024 < size / 2, ("peak grew by %.0f KiB"):format(peak - mem0))
  end)

  it("cancels a streaming transfer", function()
    local src = helper.bigfile(dir, "c.bin", 16 * 1024 * 1024)
    local token = sb.fs:cancel_token()
    local produced = 0
    local err = fixture.fails(sb.fs.upload_file_stream, sb.fs, function()
      produced = produced + 1
      if produced == 3 then token:cancel() end
      return ("x"):rep(65536)
    end, "stream/c.bin", { cancel = token })
    assert.is_true(errors.is(err, errors.CancelledError))
    assert.are.equal(3, produced)
    sb.fs:upload_file(src, "stream/c.bin")
    local chunks = 0
    err = fixture.fails(function()
      for _ in sb.fs:download_file_stream("stream/c.bin", { cancel = function() return chunks >= 2 end }) do
        chunks = chunks + 1
      end
    end)
    assert.is_true(errors.is(err, errors.CancelledError))
    assert.are.equal(2, chunks)
  end)

  it("raises DaytonaNotFoundError from a streamed download of a missing file", function()
    local err = fixture.fails(function()
      for _ in sb.fs:download_file_stream("/no/such/file") do end
    end)
    assert.is_true(errors.is(err, errors.DaytonaNotFoundError))
  end)
end)
