--- The benchmarks: dtlua against the official TypeScript SDK and curl, all
-- against one private dtlocal. Run by `bench/run` (`make bench`).
--
--   bench/run [--quick] [--only a,b,...] [--runs N] [--keep]
--
-- Scenarios (names for --only): bigfile, roundtrip, fanout, smallops,
-- manyfiles, cold, server, computeruse. Every client measurement runs in its own process
-- (bench/clients/*.lua under build/bin/dtlua, bench/clients/*.mjs under
-- node) under /usr/bin/time -v, whose peak RSS is reported. Each figure is
-- the median over runs, the clients interleaved within each run (A B C A B
-- C ...), the machine left to settle (CPUs idle) before each measurement.
--
-- Writes bench/results/latest.md and bench/results/latest.json (not with
-- --only, which prints the table and nothing else).
local ROOT = assert(os.getenv("BENCH_ROOT"), "run me with bench/run")
package.path = ROOT .. "/?.lua;" .. ROOT .. "/spec/?.lua;" .. package.path

local core = require "daytona.core"
local daytona = require "daytona"
local wire = require "daytona.wire"
local measure = require "bench.lib.measure"
local report = require "bench.lib.report"
local srvmod = require "support.dtlocal"

local q = measure.sh_quote
local MB = 1e6
local MiB = 1024 * 1024

local BUILD = os.getenv("DTLUA_BUILD") or "build"
local DTLUA = (BUILD:sub(1, 1) == "/" and BUILD or ROOT .. "/" .. BUILD) .. "/bin/dtlua"
local CLIENTS = ROOT .. "/bench/clients"

---------------------------------------------------------------------------
-- options and sizes
---------------------------------------------------------------------------

local SCENARIOS = { "bigfile", "roundtrip", "fanout", "smallops", "manyfiles", "cold", "server", "computeruse" }

local function usage(msg)
  if msg then io.stderr:write("bench: ", msg, "\n") end
  io.stderr:write("usage: bench/run [--quick] [--only ", table.concat(SCENARIOS, ","), "] [--runs N] [--keep]\n")
  os.exit(2)
end

local opts = { quick = false, only = nil, keep = false }
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--quick" then opts.quick = true
    elseif a == "--keep" then opts.keep = true
    elseif a == "--runs" then
      opts.runs = math.tointeger(tonumber(arg[i + 1])) or usage("--runs needs a number")
      if opts.runs < 1 then usage("--runs needs a positive number") end
      i = i + 1
    elseif a == "--only" then
      local list = arg[i + 1] or usage("--only needs a list")
      opts.only = {}
      for name in list:gmatch("[^,]+") do
        local known = false
        for _, s in ipairs(SCENARIOS) do known = known or s == name end
        if not known then usage("unknown scenario " .. name) end
        opts.only[name] = true
      end
      i = i + 1
    elseif a == "--help" or a == "-h" then usage()
    else usage("unknown argument " .. a) end
    i = i + 1
  end
end

-- full run: about 6 minutes on 2 cores; --quick: about half a minute
local P = opts.quick and {
  big_mib = 256, big_runs = 1,
  rt_n = 200, rt_warmup = 10, rt_runs = 2,
  fan_n = 10, fan_runs = 1,
  ops_n = 400, ops_conc = 32, ops_runs = 1,
  files_n = 200, files_runs = 1,
  cold_runs = 3,
  create_n = 5,
  cu_n = 20, cu_warmup = 3, cu_runs = 1, cu_start_runs = 2,
} or {
  big_mib = 1024, big_runs = 5,
  rt_n = 500, rt_warmup = 10, rt_runs = 5,
  fan_n = 50, fan_runs = 3,
  ops_n = 2000, ops_conc = 32, ops_runs = 3,
  files_n = 2000, files_runs = 3,
  cold_runs = 7,
  create_n = 20,
  cu_n = 100, cu_warmup = 5, cu_runs = 3, cu_start_runs = 5,
}

if opts.runs then
  for k in pairs(P) do
    if k:match("_runs$") then P[k] = opts.runs end
  end
end

local function log(fmt, ...)
  io.stderr:write(("[%s] "):format(os.date("%H:%M:%S")), fmt:format(...), "\n")
  io.stderr:flush()
end

---------------------------------------------------------------------------
-- the machine
---------------------------------------------------------------------------

local function first_line(cmd)
  local ok, out = pcall(measure.sh, cmd .. " 2>/dev/null")
  return ok and out:match("[^\n]+") or nil
end

local function machine()
  local cpu, mem
  for line in io.lines("/proc/cpuinfo") do
    cpu = cpu or line:match("^model name%s*:%s*(.-)%s*$")
  end
  for line in io.lines("/proc/meminfo") do
    local kb = line:match("^MemTotal:%s*(%d+)")
    if kb then mem = tonumber(kb) / MiB end
  end
  local commit = first_line("git -C " .. q(ROOT) .. " rev-parse --short HEAD")
  if commit and first_line("git -C " .. q(ROOT) .. " status --porcelain --untracked-files=no") then
    commit = commit .. " (with uncommitted changes)"
  end
  return report.object({ "cores", "cpu", "memory_gib", "kernel", "os", "node", "ts_sdk", "curl", "lua", "dtlua_commit" }, {
    cores = tonumber(first_line("nproc")),
    cpu = cpu,
    memory_gib = mem and math.floor(mem * 10 + 0.5) / 10,
    kernel = first_line("uname -r"),
    os = first_line(". /etc/os-release && echo \"$PRETTY_NAME\""),
    node = first_line("node --version"),
    ts_sdk = first_line("node -p \"require('" .. ROOT .. "/spec/ts/node_modules/@daytonaio/sdk/package.json').version\""),
    curl = first_line("curl --version"):match("^curl (%S+)"),
    lua = _VERSION,
    dtlua_commit = commit,
  })
end

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

local srv, client, sb, tb_url, tmp
local ENV      -- what the clients need to reach the server

local function dtlua_client(script, ...)
  return { DTLUA, CLIENTS .. "/" .. script, ... }
end

local function node_client(script, ...)
  return { "node", CLIENTS .. "/" .. script, ... }
end

local function run_client(argv, timeout)
  return measure.run(argv, { env = ENV, timeout = timeout, cwd = tmp })
end

local function curl_argv(extra)
  local argv = { "curl", "-sS", "-H", "Authorization: Bearer " .. srv.token }
  for _, a in ipairs(extra) do argv[#argv + 1] = a end
  return argv
end

-- a curl run's HTTP status must be 200 (else the answer's start is shown)
local function curl_ok(res, what, resp_file)
  local status = measure.figure(res, "status")
  if status == 200 then return end
  local body = ""
  local f = resp_file and io.open(resp_file, "rb")
  if f then body = f:read(300) or ""; f:close() end
  error(("curl %s: HTTP %d %s"):format(what, status, body), 0)
end

local function exec_ok(cmd, timeout)
  local r = sb.process:exec(cmd, { timeout = timeout or 300 })
  if r.exit_code ~= 0 then
    error(("in the sandbox: %s: exit %s: %s"):format(cmd, tostring(r.exit_code), r.result), 0)
  end
  return r.result
end

-- Interleave the clients over the runs: for each run, each client in turn
-- (the machine settled first) calls measure_one(client, run) -> { metric =
-- value }. A client that fails is not run again; its error is kept.
-- Returns { client = { metric = { values } } }, { client = error }.
-- `warmup` rounds (default 0) go first and are not counted.
local function interleave(runs, clients, measure_one, before, warmup)
  local got, failed = {}, {}
  warmup = warmup or 0
  for _, c in ipairs(clients) do got[c] = {} end
  for round = 1 - warmup, runs do
    local run = round
    for _, c in ipairs(clients) do
      if not failed[c] then
        if before then before(c, run) end
        measure.settle()
        local ok, res = pcall(measure_one, c, run)
        if ok and round < 1 then
          log("  warm-up %-6s (not counted)", c)
        elseif ok then
          local show = {}
          for k, v in pairs(res) do
            got[c][k] = got[c][k] or {}
            table.insert(got[c][k], v)
            show[#show + 1] = ("%s=%s"):format(k, report.fmt(v))
          end
          table.sort(show)
          log("  run %d/%d %-6s %s", run, runs, c, table.concat(show, " "))
        else
          failed[c] = tostring(res)
          log("  run %d/%d %-6s FAILED: %s", run, runs, c, failed[c])
        end
      end
    end
  end
  return got, failed
end

-- the median of a metric for a client (nil if it failed or never ran)
local function med(got, c, metric)
  return got[c] and got[c][metric] and measure.median(got[c][metric])
end

-- A scenario's table rows: one per { key, metric, unit[, better] } (better
-- is "lower" unless given), each client's median of got[client][key]
-- (nil for a client the scenario does not run).
local function rows_of(label, got, metrics)
  local rows = {}
  for _, m in ipairs(metrics) do
    rows[#rows + 1] = { name = label, metric = m[2], unit = m[3], better = m[4] or "lower",
      dtlua = med(got, "dtlua", m[1]), ts_sdk = med(got, "ts_sdk", m[1]), curl = med(got, "curl", m[1]) }
  end
  return rows
end

local notes = {}
local function note(s)
  notes[#notes + 1] = s
  log("note: %s", s)
end

local function failures(scenario, failed)
  for c, e in pairs(failed) do
    note(("%s: %s failed: %s"):format(scenario, c, e:match("[^\n]*"):sub(1, 300)))
  end
end

local function rss_mib(res)
  return res.rss_kib / 1024
end

---------------------------------------------------------------------------
-- 1. big file
---------------------------------------------------------------------------

-- The file part of a bulk-download response written whole by curl:
-- returns its offset and length (checked against the framing).
local function multipart_body_range(path)
  local f = assert(io.open(path, "rb"))
  local head = f:read(8192) or ""
  local size = f:seek("end")
  f:seek("set", math.max(0, size - 512))
  local tailbytes = f:read("a")
  f:close()
  local boundary = head:match("^(%-%-[^\r\n]+)\r\n")
  local hend = head:find("\r\n\r\n", 1, true)
  if not boundary or not hend then error("curl download: not a multipart body", 0) end
  local close = "\r\n" .. boundary .. "--"
  local tail_at = tailbytes:find(close, 1, true)
  if not tail_at then error("curl download: no closing boundary", 0) end
  local tail_len = #tailbytes - tail_at + 1
  local off = hend + 3
  return off, size - off - tail_len
end

local function sha256_range(path, off, len)
  return measure.sh(("tail -c +%d %s | head -c %d | sha256sum"):format(off + 1, q(path), len)):match("^(%x+)")
end

local function scenario_bigfile()
  local size = P.big_mib * MiB
  local label = ("big file (%s)"):format(P.big_mib >= 1024 and (P.big_mib // 1024) .. " GiB" or P.big_mib .. " MiB")
  log("%s: upload then download, %d run(s)", label, P.big_runs)
  local src = tmp .. "/big.bin"
  measure.sh(("head -c %d /dev/urandom > %s"):format(size, q(src)))
  local want = core.util.sha256_file(src)
  local got, failed = interleave(P.big_runs, { "dtlua", "ts_sdk", "curl" }, function(c)
    local remote = "/home/daytona/bench-big-" .. c .. ".bin"
    local dst = tmp .. "/big-down-" .. c .. ".bin"
    local up_s, down_s, rss, cpu
    if c == "curl" then
      local resp = tmp .. "/curl-resp"
      local u = run_client(curl_argv{ "-o", resp, "-w", "bench up_s %{time_total}\nbench status %{http_code}\n",
        "-F", "files[0].path=" .. remote, "-F", "files[0].file=@" .. src .. ";filename=" .. remote,
        tb_url .. "/files/bulk-upload" })
      curl_ok(u, "upload", resp)
      local d = run_client(curl_argv{ "-o", dst, "-w", "bench down_s %{time_total}\nbench status %{http_code}\n",
        "-H", "Content-Type: application/json", "-d", wire.encode({ paths = { remote } }),
        tb_url .. "/files/bulk-download" })
      curl_ok(d, "download", dst)
      up_s, down_s = measure.figure(u, "up_s"), measure.figure(d, "down_s")
      rss = math.max(rss_mib(u), rss_mib(d))
      cpu = u.user + u.system + d.user + d.system
      local off, len = multipart_body_range(dst)
      if len ~= size or sha256_range(dst, off, len) ~= want then error("curl: downloaded file differs", 0) end
    else
      local argv = c == "dtlua" and dtlua_client("bigfile.lua", sb.id, src, remote, dst)
        or node_client("bigfile.mjs", sb.id, src, remote, dst)
      local r = run_client(argv, 900)
      up_s, down_s, rss = measure.figure(r, "up_s"), measure.figure(r, "down_s"), rss_mib(r)
      cpu = r.user + r.system
      if core.util.sha256_file(dst) ~= want then error(c .. ": downloaded file differs", 0) end
    end
    local remote_sum = exec_ok("sha256sum " .. q(remote)):match("^(%x+)")
    if remote_sum ~= want then error(c .. ": uploaded file differs", 0) end
    exec_ok("rm -f " .. q(remote))
    os.remove(dst)
    return { up = size / MB / up_s, down = size / MB / down_s, rss = rss, cpu = cpu }
  end, function()
    measure.sh("sync")     -- no dirty pages of the last run slowing this one
  end, 1)                  -- the first big transfers into a fresh sandbox ran
                           -- markedly slower (up to 2x), whichever client made them
  os.remove(src)
  failures(label, failed)
  return rows_of(label, got, { { "up", "upload", "MB/s", "higher" }, { "down", "download", "MB/s", "higher" },
    { "rss", "peak RSS", "MiB" }, { "cpu", "client CPU (user+sys)", "s" } })
end

---------------------------------------------------------------------------
-- 2. round trip (and the curl floor, reported again under server side)
---------------------------------------------------------------------------

local curl_floor = {}

local function curl_exec_config(n)
  local path = tmp .. "/curl-exec.cfg"
  local f = assert(io.open(path, "w"))
  for _ = 1, n do
    f:write('url = "', tb_url, '/process/execute"\noutput = "/dev/null"\n')
  end
  f:close()
  return path
end

local function scenario_roundtrip()
  local label = ("round trip (%d × exec)"):format(P.rt_n)
  log("%s: sequential exec(\"true\") in one sandbox, %d run(s)", label, P.rt_runs)
  local cfg = curl_exec_config(P.rt_warmup + P.rt_n)
  local got, failed = interleave(P.rt_runs, { "dtlua", "ts_sdk", "curl" }, function(c)
    local ms = {}
    local r
    if c == "curl" then
      -- one curl process, one kept-alive connection, one request after the other
      r = run_client(curl_argv{ "-H", "Content-Type: application/json", "-d", '{"command":"true"}',
        "-w", "%{http_code} %{time_total}\n", "-K", cfg })
      local i = 0
      for status, t in r.stdout:gmatch("(%d+) ([%d.]+)\n") do
        if status ~= "200" then error("curl exec: HTTP " .. status, 0) end
        i = i + 1
        if i > P.rt_warmup then ms[#ms + 1] = tonumber(t) * 1000 end
      end
    else
      r = run_client(c == "dtlua" and dtlua_client("roundtrip.lua", sb.id, P.rt_n, P.rt_warmup)
        or node_client("roundtrip.mjs", sb.id, P.rt_n, P.rt_warmup))
      ms = r.figures.ms or {}
    end
    if #ms ~= P.rt_n then error(("%d latencies instead of %d"):format(#ms, P.rt_n), 0) end
    return { p50 = measure.percentile(ms, 50), p99 = measure.percentile(ms, 99), rss = rss_mib(r) }
  end)
  failures(label, failed)
  curl_floor.p50, curl_floor.p99 = med(got, "curl", "p50"), med(got, "curl", "p99")
  local rows = rows_of(label, got, { { "p50", "p50 latency", "ms" }, { "p99", "p99 latency", "ms" },
    { "rss", "peak RSS", "MiB" } })
  -- what the client itself adds to a round trip: its p50 over curl's floor
  -- (the server's time -- HTTP, the proxy hop, spawning bash -- is in all three)
  local floor = curl_floor.p50
  local function over(c)
    local v = med(got, c, "p50")
    return v and floor and math.max(v - floor, 0) or nil
  end
  table.insert(rows, 3, { name = label, metric = "p50 over curl's floor (client's own time)", unit = "ms",
    better = "lower", dtlua = over("dtlua"), ts_sdk = over("ts_sdk") })
  return rows
end

---------------------------------------------------------------------------
-- 3. fan-out
---------------------------------------------------------------------------

local function scenario_fanout()
  local label = ("fan-out (%d sandboxes)"):format(P.fan_n)
  log("%s: create, exec, delete, all concurrently, %d run(s)", label, P.fan_runs)
  local got, failed = interleave(P.fan_runs, { "dtlua", "ts_sdk" }, function(c)
    local r = run_client(c == "dtlua" and dtlua_client("fanout.lua", P.fan_n) or node_client("fanout.mjs", P.fan_n), 600)
    -- every sandbox of the run is gone (only the bench's own is listed)
    local left = client:list():all()
    if #left ~= 1 then error(("%d sandboxes left after the run"):format(#left - 1), 0) end
    return { wall = measure.figure(r, "wall_s"), rss = rss_mib(r) }
  end)
  failures(label, failed)
  return rows_of(label, got, { { "wall", "wall time", "s" }, { "rss", "peak RSS", "MiB" } })
end

---------------------------------------------------------------------------
-- 4. small-op throughput
---------------------------------------------------------------------------

local function scenario_smallops()
  local label = ("small ops (%d × exec, %d in flight)"):format(P.ops_n, P.ops_conc)
  log("%s: %d run(s)", label, P.ops_runs)
  local cfg = curl_exec_config(P.ops_n)
  local got, failed = interleave(P.ops_runs, { "dtlua", "ts_sdk", "curl" }, function(c)
    local r, wall
    if c == "curl" then
      r = run_client(curl_argv{ "--parallel", "--parallel-immediate", "--parallel-max", tostring(P.ops_conc),
        "-H", "Content-Type: application/json", "-d", '{"command":"true"}', "-w", "%{http_code}\n", "-K", cfg })
      local n = 0
      for status in r.stdout:gmatch("(%d+)\n") do
        if status ~= "200" then error("curl exec: HTTP " .. status, 0) end
        n = n + 1
      end
      if n ~= P.ops_n then error(("%d answers instead of %d"):format(n, P.ops_n), 0) end
      wall = r.wall         -- the whole curl process (its start-up is a few ms)
    else
      r = run_client(c == "dtlua" and dtlua_client("smallops.lua", sb.id, P.ops_n, P.ops_conc)
        or node_client("smallops.mjs", sb.id, P.ops_n, P.ops_conc))
      wall = measure.figure(r, "wall_s")
    end
    return { ops = P.ops_n / wall, rss = rss_mib(r) }
  end)
  failures(label, failed)
  return rows_of(label, got, { { "ops", "throughput", "ops/s", "higher" }, { "rss", "peak RSS", "MiB" } })
end

---------------------------------------------------------------------------
-- 5. many files
---------------------------------------------------------------------------

local function make_tree(dir, n)
  local rel = {}
  local dirs = math.max(1, n // 100)
  local bytes = 0
  for d = 0, dirs - 1 do measure.sh("mkdir -p " .. q(("%s/d%02d"):format(dir, d))) end
  for i = 0, n - 1 do
    local p = ("d%02d/f%04d.dat"):format(i % dirs, i)
    local size = 512 + (i * 7919) % 7681        -- 512 B .. 8 KiB
    local f = assert(io.open(dir .. "/" .. p, "wb"))
    f:write(core.util.random_bytes(size))
    f:close()
    rel[#rel + 1] = p
    bytes = bytes + size
  end
  return rel, bytes
end

local TREE_SUM = "find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum"

local function scenario_manyfiles()
  local label = ("many files (%d small)"):format(P.files_n)
  log("%s: upload then download a tree with the batch calls, %d run(s)", label, P.files_runs)
  local src = tmp .. "/tree"
  local rel, bytes = make_tree(src, P.files_n)
  local manifest = tmp .. "/tree.manifest"
  local mf = assert(io.open(manifest, "w"))
  mf:write(table.concat(rel, "\n"), "\n")
  mf:close()
  local want = measure.sh("cd " .. q(src) .. " && " .. TREE_SUM):match("^(%x+)")
  log("  %d files, %.1f MB in all", #rel, bytes / MB)
  local got, failed = interleave(P.files_runs, { "dtlua", "ts_sdk", "curl" }, function(c, run)
    local remote = ("/home/daytona/bench-tree-%s-%d"):format(c, run)
    local dst = ("%s/tree-down-%s-%d"):format(tmp, c, run)
    local up_s, down_s, rss
    if c == "curl" then
      -- one bulk-upload with every file as a part, one bulk-download of
      -- every path written as it comes (curl does not split the parts
      -- into files: its figure is the transfer's floor)
      local cfg = tmp .. "/curl-upload.cfg"
      local f = assert(io.open(cfg, "w"))
      for i, p in ipairs(rel) do
        f:write(('form = "files[%d].path=%s/%s"\n'):format(i - 1, remote, p))
        f:write(('form = "files[%d].file=@%s/%s;filename=%s/%s"\n'):format(i - 1, src, p, remote, p))
      end
      f:close()
      local u = run_client(curl_argv{ "-o", tmp .. "/curl-resp", "-w", "bench up_s %{time_total}\nbench status %{http_code}\n",
        "-K", cfg, tb_url .. "/files/bulk-upload" })
      curl_ok(u, "upload", tmp .. "/curl-resp")
      local paths = {}
      for i, p in ipairs(rel) do paths[i] = remote .. "/" .. p end
      local body = tmp .. "/curl-paths.json"
      local bf = assert(io.open(body, "w"))
      bf:write(wire.encode({ paths = paths }))
      bf:close()
      local out = tmp .. "/curl-tree.multipart"
      local d = run_client(curl_argv{ "-o", out, "-w", "bench down_s %{time_total}\nbench status %{http_code}\n",
        "-H", "Content-Type: application/json", "--data-binary", "@" .. body, tb_url .. "/files/bulk-download" })
      curl_ok(d, "download", out)
      local parts = tonumber(measure.sh("grep -a -c '^Content-Disposition: form-data; name=\"file\"' " .. q(out)))
      if parts ~= #rel then error(("curl download: %d file parts instead of %d"):format(parts, #rel), 0) end
      os.remove(out)
      up_s, down_s = measure.figure(u, "up_s"), measure.figure(d, "down_s")
      rss = math.max(rss_mib(u), rss_mib(d))
    else
      local r = run_client(c == "dtlua" and dtlua_client("manyfiles.lua", sb.id, manifest, src, remote, dst)
        or node_client("manyfiles.mjs", sb.id, manifest, src, remote, dst), 900)
      up_s, down_s, rss = measure.figure(r, "up_s"), measure.figure(r, "down_s"), rss_mib(r)
      local same = pcall(measure.sh, "diff -r -q " .. q(src) .. " " .. q(dst))
      if not same then error(c .. ": downloaded tree differs", 0) end
    end
    local remote_sum = exec_ok("cd " .. q(remote) .. " && " .. TREE_SUM):match("^(%x+)")
    if remote_sum ~= want then error(c .. ": uploaded tree differs", 0) end
    return { up = up_s, down = down_s, rss = rss }
  end, function()
    measure.sh("sync")     -- the last run's 4,000 file creations written out
  end)
  -- the trees go only now: creating files where thousands were just removed
  -- made ext4's inode allocation (find_inode_bit, recently_deleted) the
  -- larger part of a download's time, whichever client came next
  measure.sh("rm -rf " .. q(src) .. " " .. q(tmp) .. "/tree-down-*")
  pcall(exec_ok, "rm -rf /home/daytona/bench-tree-*")
  failures(label, failed)
  return rows_of(label, got, { { "up", "upload (one batch)", "s" }, { "down", "download (one batch)", "s" },
    { "rss", "peak RSS", "MiB" } })
end

---------------------------------------------------------------------------
-- 6. cold script
---------------------------------------------------------------------------

local function scenario_cold()
  local label = "cold script"
  log("%s: interpreter start, create, exec, delete, exit; %d run(s)", label, P.cold_runs)
  local got, failed = interleave(P.cold_runs, { "dtlua", "ts_sdk" }, function(c)
    local r = run_client(c == "dtlua" and { DTLUA, CLIENTS .. "/hello.lua" } or { "node", CLIENTS .. "/hello.mjs" }, 300)
    return { wall = r.wall, rss = rss_mib(r) }
  end)
  failures(label, failed)
  return rows_of(label, got, { { "wall", "wall time", "s" }, { "rss", "peak RSS", "MiB" } })
end

---------------------------------------------------------------------------
-- 7. server side
---------------------------------------------------------------------------

-- create with curl (POST /api/sandbox answers once the sandbox has
-- started), return the seconds; then delete it and wait until it is gone
local function curl_create(body)
  local resp = tmp .. "/curl-create.json"
  local r = run_client(curl_argv{ "-o", resp, "-w", "bench t %{time_total}\nbench status %{http_code}\n",
    "-H", "Content-Type: application/json", "-d", body, srv.api_url .. "/sandbox" })
  local f = assert(io.open(resp))
  local text = f:read("a")
  f:close()
  local ok, dto = pcall(wire.decode, text)
  if measure.figure(r, "status") ~= 200 or not ok or type(dto) ~= "table" then
    error("create: HTTP " .. measure.figure(r, "status") .. ": " .. text:sub(1, 300), 0)
  end
  if dto.state ~= "started" then error("create answered in state " .. tostring(dto.state), 0) end
  client:delete(dto.id)      -- waits until it is gone
  return measure.figure(r, "t")
end

local function scenario_server()
  local label = "server side (dtlocal)"
  log("%s: %d creates from the warm pool, %d without it", label, P.create_n, P.create_n)
  local warm, cold = {}, {}
  local err
  local ok, e = pcall(function()
    for i = 1, P.create_n do
      -- interleaved; settling lets the pool refill before a warm create
      measure.settle()
      warm[#warm + 1] = curl_create("{}") * 1000
      measure.settle()
      -- user root: a create the warm pool cannot serve (its sandboxes run
      -- as daytona), with nothing else a plain create lacks
      cold[#cold + 1] = curl_create('{"user":"root","labels":{"bench":"cold"}}') * 1000
      if i % 5 == 0 then log("  %d/%d creates", i, P.create_n) end
    end
  end)
  if not ok then err = tostring(e); note(label .. ": create failed: " .. err:match("[^\n]*")) end
  local function pct(list, p) return #list > 0 and measure.percentile(list, p) or nil end
  local rows = {
    { name = label, metric = "create → started p50, warm pool", unit = "ms", better = "lower", curl = pct(warm, 50) },
    { name = label, metric = "create → started p99, warm pool", unit = "ms", better = "lower", curl = pct(warm, 99) },
    { name = label, metric = "create → started p50, cold", unit = "ms", better = "lower", curl = pct(cold, 50) },
    { name = label, metric = "create → started p99, cold", unit = "ms", better = "lower", curl = pct(cold, 99) },
  }
  if curl_floor.p50 then
    rows[#rows + 1] = { name = label, metric = "exec round trip p50 (curl floor)", unit = "ms", better = "lower", curl = curl_floor.p50 }
    rows[#rows + 1] = { name = label, metric = "exec round trip p99 (curl floor)", unit = "ms", better = "lower", curl = curl_floor.p99 }
  end
  return rows
end

---------------------------------------------------------------------------
-- 8. Computer Use
---------------------------------------------------------------------------

local function scenario_computeruse()
  local label = ("computer use (%d × each)"):format(P.cu_n)
  local cu = sb.computer_use
  -- start to all four processes running, seen through the SDK's polling
  -- (50 ms apart): the server's work, in the dtlua column
  log("%s: stop, start, wait until the four processes run; %d run(s)", label, P.cu_start_runs)
  local starts = {}
  for i = 1, P.cu_start_runs do
    cu:stop()
    measure.settle()
    local t0 = core.now()
    cu:start()
    cu:wait_until_ready{ timeout = 120, interval = 0.05 }
    starts[i] = core.now() - t0
    log("  run %d/%d start → running %.2f s", i, P.cu_start_runs, starts[i])
  end
  log("%s: sequential full-screen PNG, JPEG at scale 0.5, mouse move; %d run(s)", label, P.cu_runs)
  local got, failed = interleave(P.cu_runs, { "dtlua", "ts_sdk" }, function(c)
    local r = run_client(c == "dtlua" and dtlua_client("computeruse.lua", sb.id, P.cu_n, P.cu_warmup)
      or node_client("computeruse.mjs", sb.id, P.cu_n, P.cu_warmup))
    local res = { rss = rss_mib(r) }
    for _, k in ipairs({ "png", "jpeg", "move" }) do
      local ms = r.figures[k] or {}
      if #ms ~= P.cu_n then error(("%s: %d latencies instead of %d"):format(k, #ms, P.cu_n), 0) end
      res[k] = measure.percentile(ms, 50)
      res[k .. "99"] = measure.percentile(ms, 99)
    end
    res.png_kb = measure.figure(r, "png_bytes") / 1000
    res.jpeg_kb = measure.figure(r, "jpeg_bytes") / 1000
    return res
  end)
  failures(label, failed)
  cu:stop()
  local rows = rows_of(label, got, {
    { "png", "full-screen PNG p50", "ms" }, { "png99", "full-screen PNG p99", "ms" },
    { "jpeg", "JPEG scale 0.5 p50", "ms" }, { "jpeg99", "JPEG scale 0.5 p99", "ms" },
    { "move", "mouse move p50", "ms" }, { "move99", "mouse move p99", "ms" },
    { "png_kb", "PNG size", "kB" }, { "jpeg_kb", "JPEG size", "kB" },
    { "rss", "peak RSS", "MiB" } })
  rows[#rows + 1] = { name = label, metric = "start → four processes running (median; server side)", unit = "s",
    better = "lower", dtlua = measure.median(starts) }
  return rows
end

---------------------------------------------------------------------------
-- targets
---------------------------------------------------------------------------

local function find(rows, name_prefix, metric)
  for _, r in ipairs(rows) do
    if r.name:sub(1, #name_prefix) == name_prefix and r.metric == metric then return r end
  end
end

local function targets(rows)
  local out = {}
  local function check(text, value, ok, fmtv)
    if value == nil then return end
    out[#out + 1] = { text = text, value = fmtv and fmtv(value) or value, met = ok(value) }
  end
  local function ratio(r, a, b) return r and r[a] and r[b] and r[a] / r[b] or nil end
  local function x(v) return ("%.2f×"):format(v) end
  local function mib(v) return ("%.1f MiB"):format(v) end
  local function ms(v) return ("%.1f ms"):format(v) end
  for _, dir in ipairs({ "upload", "download" }) do
    local r = find(rows, "big file", dir)
    check("big file " .. dir .. ": dtlua ≥ 0.9× curl", ratio(r, "dtlua", "curl"), function(v) return v >= 0.9 end, x)
    check("big file " .. dir .. ": dtlua ≥ 2× TS SDK", ratio(r, "dtlua", "ts_sdk"), function(v) return v >= 2 end, x)
  end
  local r = find(rows, "big file", "peak RSS")
  check("big file: dtlua peak RSS ≤ 32 MiB", r and r.dtlua, function(v) return v <= 32 end, mib)
  r = find(rows, "round trip", "p50 latency")
  check("round trip: dtlua p50 ≤ 1.2× curl's", ratio(r, "dtlua", "curl"), function(v) return v <= 1.2 end, x)
  check("round trip: dtlua p50 ≤ 0.5× TS SDK's", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 0.5 end, x)
  r = find(rows, "round trip", "p50 over curl's floor (client's own time)")
  check("round trip: dtlua's own time over the floor ≤ 0.5× TS SDK's (not an issue target: it shows the " ..
        "part a client controls)", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 0.5 end, x)
  r = find(rows, "fan-out", "wall time")
  check("fan-out: dtlua wall time ≤ TS SDK's", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 1 end, x)
  r = find(rows, "fan-out", "peak RSS")
  check("fan-out: dtlua peak RSS ≤ 1/5 of TS SDK's", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 0.2 end, x)
  r = find(rows, "small ops", "throughput")
  check("small ops: dtlua throughput ≥ TS SDK's", ratio(r, "dtlua", "ts_sdk"), function(v) return v >= 1 end, x)
  r = find(rows, "small ops", "peak RSS")
  check("small ops: dtlua peak RSS ≤ 1/5 of TS SDK's", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 0.2 end, x)
  r = find(rows, "cold script", "wall time")
  check("cold script: dtlua wall time ≤ 1/10 of Node's", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 0.1 end, x)
  r = find(rows, "cold script", "peak RSS")
  check("cold script: dtlua peak RSS ≤ 1/10 of Node's", ratio(r, "dtlua", "ts_sdk"), function(v) return v <= 0.1 end, x)
  r = find(rows, "server side", "create → started p50, warm pool")
  check("dtlocal create → started p50 ≤ 20 ms (warm pool)", r and r.curl, function(v) return v <= 20 end, ms)
  r = find(rows, "server side", "create → started p50, cold")
  check("dtlocal create → started p50 ≤ 20 ms (cold)", r and r.curl, function(v) return v <= 20 end, ms)
  return out
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

local RUNNERS = {
  bigfile = scenario_bigfile, roundtrip = scenario_roundtrip, fanout = scenario_fanout,
  smallops = scenario_smallops, manyfiles = scenario_manyfiles, cold = scenario_cold,
  server = scenario_server, computeruse = scenario_computeruse,
}

local METHOD = {
  "One private `dtlocal serve --port 0 --state <tmp> --token <random>` (default warm pool of 2) serves every " ..
    "client; scenarios 1, 2, 4 and 5 use one sandbox made by the bench.",
  "Each measurement is one process under `/usr/bin/time -v` (peak RSS = its \"Maximum resident set size\"): " ..
    "`build/bin/dtlua bench/clients/*.lua`, `node bench/clients/*.mjs` (the pinned @daytonaio/sdk), or `curl`. " ..
    "Before each one the bench waits until the CPUs are idle (at most 3 s), and `sync`s before big-file runs.",
  "Durations are taken inside the client around the measured calls (curl: its `time_total`), except the cold " ..
    "script (the whole process) and curl's small ops (the whole `curl --parallel` process).",
  "Big file: `upload_file(path, remote)` then `download_file(remote, path)` / `uploadFile` then `downloadFile` / " ..
    "curl on the same toolbox routes (`POST /files/bulk-upload` with `-F`, `POST /files/bulk-download`); sha256 " ..
    "checked in the sandbox and locally (for curl: of the file part of the multipart answer). Peak RSS for curl: " ..
    "the larger of its two processes. One warm-up round (each client once) is not counted: the first " ..
    "transfers into a fresh sandbox were up to twice as slow, for whichever client came first. Client CPU: user + system time of the client process(es), from " ..
    "`/usr/bin/time` (on 2 cores the client shares the CPUs with dtlocal and the sandbox's daemon).",
  "Round trip: 10 warm-up calls, then sequential `exec(\"true\")` / `executeCommand('true')`; curl: one " ..
    "process, one kept-alive connection, the same POST one after the other (the floor for any client).",
  "Fan-out: N × (create, exec `echo i`, delete and wait until gone) concurrently in one script " ..
    "(`daytona.all` / `Promise.all`; TS: `delete(60, true)` so both wait).",
  "Small ops: 32 workers share a counter of exec(\"true\") calls; curl: `--parallel --parallel-max 32`.",
  "Many files: one `upload_files` / `uploadFiles` call then one `download_files` / `downloadFiles` call; " ..
    "trees compared (remote sha256 list, local `diff -r`). curl sends the same one multipart upload and writes " ..
    "the one multipart download unsplit (a floor for the transfer, not the same work). Every run uses fresh " ..
    "directories, all removed only at the end (file creation right after mass removal was slowed by ext4's " ..
    "inode allocator, whichever client came next).",
  "Cold script: `dtlua bench/clients/hello.lua` against `node bench/clients/hello.mjs` (create, exec, delete " ..
    "waiting until gone, exit), wall time of the whole process.",
  "Server side: `POST /api/sandbox` with curl (it answers once the sandbox has started): `{}` is served by the " ..
    "warm pool; `{\"user\":\"root\"}` cannot be (warm sandboxes run as daytona), so it starts a sandbox " ..
    "cold (a `networkBlockAll` one costs ~8 ms more: its network namespace). Each create is followed by a delete, " ..
    "and the machine settles (pool refilled) before the next.",
  "Computer use: in the bench's sandbox, the desktop stopped and started, timed until `wait_until_ready` " ..
    "(50 ms polls) sees Xvfb, xfce4, x11vnc and noVNC running; then, with it running, one client process does " ..
    "warm-up calls and N sequential `take_full_screen()` / `takeFullScreen()` (1024x768 PNG), N " ..
    "`take_compressed{format=\"jpeg\", scale=0.5}` / `takeCompressed({format:'jpeg', scale:0.5})`, N mouse moves; " ..
    "the sizes are those of the last images, decoded from base64.",
}

local function markdown(meta, rows, tg)
  local m = meta.machine
  local out = {
    "# dtlua benchmarks" .. (opts.quick and " — QUICK run (smaller sizes, fewer runs: rough figures)" or ""),
    "",
    ("%s · %s cores (%s) · %s GiB RAM · %s · Node %s · @daytonaio/sdk %s · curl %s · dtlua %s"):format(
      meta.date, tostring(m.cores), tostring(m.cpu), tostring(m.memory_gib), tostring(m.os),
      tostring(m.node), tostring(m.ts_sdk), tostring(m.curl), tostring(m.dtlua_commit)),
    "",
    report.markdown_table(rows),
    "Medians over runs (big file " .. P.big_runs .. ", round trip " .. P.rt_runs .. ", fan-out " .. P.fan_runs ..
      ", small ops " .. P.ops_runs .. ", many files " .. P.files_runs .. ", cold script " .. P.cold_runs .. ", computer use " .. P.cu_runs ..
      "), clients interleaved within each run. MB = 10^6 bytes, MiB = 2^20. Ratios are dtlua's figure over the other's.",
    "",
    "## Targets (goals, not tests)",
    "",
  }
  for _, t in ipairs(tg) do
    out[#out + 1] = ("- %s %s: %s"):format(t.met and "✅" or "❌", t.text, t.value)
  end
  out[#out + 1] = ""
  out[#out + 1] = "## Method"
  out[#out + 1] = ""
  for _, line in ipairs(METHOD) do out[#out + 1] = "- " .. line end
  if #notes > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "## Notes"
    out[#out + 1] = ""
    for _, n in ipairs(notes) do out[#out + 1] = "- " .. n end
  end
  return table.concat(out, "\n") .. "\n"
end

local function main()
  local t_start = core.now()
  log("dtlua benchmarks%s", opts.quick and " (QUICK: smaller sizes, fewer runs — rough figures)" or "")
  local meta = { machine = machine(), date = os.date("!%Y-%m-%dT%H:%M:%SZ"), mode = opts.quick and "quick" or "full" }
  tmp = measure.tmpdir("run")
  srv = srvmod.start()
  log("dtlocal %s (state %s)", srv.api_url, srv.state_dir)
  ENV = { DAYTONA_API_URL = srv.api_url, DAYTONA_API_KEY = srv.token }
  client = daytona.new{ api_url = srv.api_url, api_key = srv.token }
  local rows = {}
  local ok, err = pcall(function()
    sb = client:create{ labels = { purpose = "bench" } }
    tb_url = srv.toolbox_url .. "/" .. sb.id
    for _, name in ipairs(SCENARIOS) do
      if not opts.only or opts.only[name] then
        local t0 = core.now()
        local sok, res = pcall(RUNNERS[name])
        if sok then
          for _, r in ipairs(res) do rows[#rows + 1] = r end
        else
          note(("%s: scenario failed: %s"):format(name, tostring(res)))
        end
        log("%s done in %.0f s", name, core.now() - t0)
      end
    end
  end)
  if not ok then note("bench failed: " .. tostring(err)) end
  if sb then pcall(sb.delete, sb) end
  srv.stop()
  if opts.keep then log("kept %s", tmp) else measure.sh("rm -rf " .. q(tmp)) end

  local tg = targets(rows)
  io.stdout:write("\n", opts.quick and "QUICK run: smaller sizes and fewer runs, rough figures\n" or "",
    report.text(rows), "\n")
  for _, t in ipairs(tg) do io.stdout:write(("%s %s: %s\n"):format(t.met and "met   " or "MISSED", t.text, t.value)) end
  for _, n in ipairs(notes) do io.stdout:write("note: ", n, "\n") end
  io.stdout:write(("\n%.0f s in all\n"):format(core.now() - t_start))
  if not opts.only then
    local dir = ROOT .. "/bench/results"
    measure.sh("mkdir -p " .. q(dir))
    local doc = report.document(meta, rows, tg, notes)
    local f = assert(io.open(dir .. "/latest.json", "w"))
    f:write(report.json(doc))
    f:close()
    f = assert(io.open(dir .. "/latest.md", "w"))
    f:write(markdown(meta, rows, tg))
    f:close()
    io.stdout:write("wrote bench/results/latest.md and bench/results/latest.json\n")
  end
  if not ok then os.exit(1) end
end

main()
