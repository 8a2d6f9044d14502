--- bench/http_stream.lua: big HTTP transfers, dtlua's client against the curl CLI.
--
--   lua5.4 bench/http_stream.lua [--size MiB] [--runs N] [--url BASE] [--verify]
--                                [--sink file|null]
--
-- Makes a file of --size MiB (default 1024), then for each client downloads
-- it (GET BASE/file?path=..., written to a file, or to /dev/null with
-- --sink null to leave the disk out) and uploads it (PUT
-- BASE/upload, streamed from disk), each run in its own process under
-- /usr/bin/time so that wall time and peak RSS are the whole process's.
-- Clients: the curl CLI; core.http with body_file/response_file (C streams
-- the file); http.stream / body_producer (the bytes pass through Lua).
-- Reports the best of --runs runs (default 3) in MiB/s, the ratio to curl,
-- and the peak RSS.
--
-- The server is BASE if given (it needs /file?path= and /upload), else the
-- spec test server (spec/support/test_server.lua) run in a separate
-- lua5.4 process. DTLUA_BUILD selects the build directory (default build).
--
-- Internal: `--client MODE BASE PATH OUT` runs one transfer and exits.
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
local build = os.getenv("DTLUA_BUILD") or "build"
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;" .. package.path
package.cpath = root .. "/" .. build .. "/lib/lua/5.4/?.so;" .. package.cpath

local MiB = 1024 * 1024

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------------------
-- one transfer (in its own process)
---------------------------------------------------------------------------

local function client(mode, base, path, out)
  local http = require "daytona.runtime.http"
  local scheduler = require "daytona.runtime.scheduler"
  local file_url = base .. "/file?path=" .. path:gsub("[^%w/._-]", function(c) return ("%%%02X"):format(c:byte()) end)
  local ok, err = scheduler.run(function()
    if mode == "download_file" then
      local r = assert(http.request{ url = file_url, response_file = out })
      assert(r.status == 200, "status " .. r.status)
    elseif mode == "download_stream" then
      local f = assert(io.open(out, "wb"))
      local s <close> = assert(http.stream{ url = file_url })
      assert(s.status == 200, "status " .. s.status)
      for chunk in s:chunks() do f:write(chunk) end
      f:close()
    elseif mode == "upload_file" then
      local r = assert(http.request{ url = base .. "/upload", method = "PUT", body_file = path })
      assert(r.status == 200, "status " .. r.status .. " " .. tostring(r.body))
      io.stdout:write(r.body, "\n")
    elseif mode == "upload_producer" then
      local f = assert(io.open(path, "rb"))
      local r = assert(http.request{ url = base .. "/upload", method = "PUT",
        body_producer = function() return f:read(256 * 1024) end })
      f:close()
      assert(r.status == 200, "status " .. r.status)
      io.stdout:write(r.body, "\n")
    else
      error("unknown client mode " .. tostring(mode))
    end
  end)
  if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
end

---------------------------------------------------------------------------
-- the driver
---------------------------------------------------------------------------

local function run_timed(cmd)
  local tf = os.tmpname()
  local full = ("/usr/bin/time -f '%%e %%M' -o %s %s > /dev/null"):format(sh_quote(tf), cmd)
  local ok = os.execute(full)
  local f = io.open(tf)
  local line = f and f:read("l")
  if f then f:close() end
  os.remove(tf)
  if not ok then error("failed: " .. cmd) end
  local secs, rss = line:match("([%d.]+) (%d+)")
  return tonumber(secs), tonumber(rss)
end

-- Start the spec test server in its own process (its main mode prints
-- "port N"); returns the base URL and a function that stops it.
local function start_server(dir)
  local out = dir .. "/server.out"
  -- TMPDIR: the server's own temp dir lands in ours and goes with it
  os.execute(("cd %s && TMPDIR=%s DTLUA_BUILD=%s lua5.4 spec/support/test_server.lua > %s 2>&1 & echo $! > %s/pid")
    :format(sh_quote(root), sh_quote(dir), sh_quote(build), sh_quote(out), sh_quote(dir)))
  local pid = io.open(dir .. "/pid"):read("l")
  local port
  for _ = 1, 1000 do
    local f = io.open(out)
    port = f and f:read("a"):match("port (%d+)")
    if f then f:close() end
    if port then break end
    os.execute("sleep 0.01")
  end
  assert(port, "test server did not start")
  return "http://127.0.0.1:" .. port, function() os.execute("kill " .. pid .. " 2>/dev/null") end
end

local function driver(opts)
  local size = opts.size * MiB
  local dir = io.popen("mktemp -d \"${TMPDIR:-/tmp}/dtlua-bench.XXXXXX\""):read("l")
  local stop = function() end
  local base = opts.url
  if not base then base, stop = start_server(dir) end
  local src = dir .. "/src.bin"
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(size, sh_quote(src))))
  local file_url = base .. "/file?path=" .. src
  -- downloads go to a file next to the source, or to /dev/null (--sink null)
  local out = opts.sink == "null" and "/dev/null" or src .. ".down"
  local lua = "lua5.4 " .. sh_quote(arg[0]) .. " --client "
  local function ours(mode)
    return lua .. mode .. " " .. sh_quote(base) .. " " .. sh_quote(src) .. " " .. sh_quote(out)
  end
  local cases = {
    { "download", "curl CLI", ("curl -sS -o %s %s"):format(sh_quote(out), sh_quote(file_url)) },
    { "download", "core response_file", ours("download_file") },
    { "download", "http.stream (Lua)", ours("download_stream") },
    { "upload", "curl CLI", ("curl -sS -o /dev/null -T %s %s"):format(sh_quote(src), sh_quote(base .. "/upload")) },
    { "upload", "core body_file", ours("upload_file") },
    { "upload", "body_producer (Lua)", ours("upload_producer") },
  }
  local ok, err = pcall(function()
    local core = require "daytona.core"
    local want = opts.verify and core.util.sha256_file(src)
    local best, rss = {}, {}
    -- runs interleave the clients so that drift (page cache, the server's
    -- warm-up) does not favour one of them
    for _ = 1, opts.runs do
      for i, c in ipairs(cases) do
        if out ~= "/dev/null" then os.remove(out) end
        os.execute("sync")   -- no dirty pages of the last run slowing this one
        local s, m = run_timed(c[3])
        if not best[i] or s < best[i] then best[i] = s end
        if not rss[i] or m > rss[i] then rss[i] = m end
        if want and c[1] == "download" and out ~= "/dev/null" then
          assert(core.util.sha256_file(out) == want, c[2] .. ": downloaded file differs")
        end
      end
    end
    print(("%d MiB, best of %d runs, downloads to %s, server %s"):format(opts.size, opts.runs,
      out == "/dev/null" and "/dev/null" or "a file", base))
    print(("%-9s %-22s %10s %8s %12s"):format("direction", "client", "MiB/s", "vs curl", "peak RSS"))
    local curl_rate = {}
    for i, c in ipairs(cases) do
      local rate = opts.size / best[i]
      if c[2] == "curl CLI" then curl_rate[c[1]] = rate end
      print(("%-9s %-22s %10.1f %8s %9d KiB"):format(c[1], c[2], rate,
        ("%.2fx"):format(rate / curl_rate[c[1]]), rss[i]))
    end
  end)
  stop()
  os.execute("rm -rf " .. sh_quote(dir))
  if not ok then error(err, 0) end
end

local function main(argv)
  if argv[1] == "--client" then return client(argv[2], argv[3], argv[4], argv[5]) end
  local opts = { size = 1024, runs = 3 }
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--size" then opts.size = assert(tonumber(argv[i + 1]), "--size MiB"); i = i + 2
    elseif a == "--runs" then opts.runs = assert(tonumber(argv[i + 1]), "--runs N"); i = i + 2
    elseif a == "--url" then opts.url = argv[i + 1]; i = i + 2
    elseif a == "--verify" then opts.verify = true; i = i + 1
    elseif a == "--sink" then opts.sink = argv[i + 1]; i = i + 2
    else error("unknown argument " .. a) end
  end
  driver(opts)
end

main(arg)
