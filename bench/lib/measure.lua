--- Measuring: running one client process under /usr/bin/time -v, reading
-- its figures and its peak RSS, statistics, and letting the machine settle
-- between measurements.
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"

local M = {}

M.now = core.now

function M.sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Run a shell command line and return its stdout (raises on failure).
function M.sh(cmd)
  local r = assert(process.run({ "/bin/sh", "-c", cmd }, { timeout = 600 }))
  if r.exit_code ~= 0 then
    error(("command failed (exit %s): %s\n%s"):format(tostring(r.exit_code), cmd, r.stderr or ""), 0)
  end
  return r.stdout
end

--- A fresh temp directory (the caller removes it).
function M.tmpdir(tag)
  local dir = M.sh("mktemp -d \"${TMPDIR:-/tmp}/dtlua-bench-" .. tag .. ".XXXXXX\""):match("[^\n]+")
  assert(dir and dir ~= "", "mktemp failed")
  return dir
end

---------------------------------------------------------------------------
-- statistics
---------------------------------------------------------------------------

local function sorted(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  return s
end

--- The p-th percentile by nearest rank (p in 0..100) of a non-empty list.
function M.percentile(list, p)
  assert(#list > 0, "percentile of an empty list")
  local s = sorted(list)
  local rank = math.ceil(p / 100 * #s)
  if rank < 1 then rank = 1 end
  return s[rank]
end

--- The median (mean of the two middle values for an even count).
function M.median(list)
  if #list == 0 then return nil end
  local s = sorted(list)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

---------------------------------------------------------------------------
-- settling
---------------------------------------------------------------------------

-- busy and total jiffies of all CPUs from /proc/stat
local function cpu_jiffies()
  local f = assert(io.open("/proc/stat"))
  local line = f:read("l")
  f:close()
  local v = {}
  for n in line:gmatch("%d+") do v[#v + 1] = tonumber(n) end
  -- user nice system idle iowait irq softirq steal
  local total = 0
  for i = 1, 8 do total = total + (v[i] or 0) end
  return total - v[4] - (v[5] or 0), total
end

--- Wait until the machine is idle: the CPUs less than 5 % busy over a
-- 200 ms window (background work of the previous measurement such as a
-- sandbox's removal, the warm pool's refill or writeback is done), for at
-- most `max` seconds (default 3: a machine busy with other work
-- must not stall the bench). Returns the seconds waited.
function M.settle(max)
  max = max or 3
  local t0 = core.now()
  while true do
    local b0, t0j = cpu_jiffies()
    scheduler.sleep(0.2)
    local b1, t1j = cpu_jiffies()
    local total = t1j - t0j
    if total > 0 and (b1 - b0) / total < 0.05 then break end
    if core.now() - t0 > max then break end
  end
  return core.now() - t0
end

---------------------------------------------------------------------------
-- client processes
---------------------------------------------------------------------------

-- the environment of the bench plus `extra` (NAME = value)
local function environ(extra)
  local env = {}
  for k, v in pairs(core.util.environ()) do env[k] = v end
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end
M.environ = environ

-- "Elapsed (wall clock) time (h:mm:ss or m:ss): 1:02.03"
local function parse_elapsed(s)
  local parts = {}
  for p in s:gmatch("[%d.]+") do parts[#parts + 1] = tonumber(p) end
  local secs = 0
  for _, p in ipairs(parts) do secs = secs * 60 + p end
  return secs
end

local function parse_time_v(text)
  local r = {}
  r.rss_kib = tonumber(text:match("Maximum resident set size %(kbytes%): (%d+)"))
  local el = text:match("Elapsed %(wall clock%) time [^:]*: ([%d:.]+)")
  r.elapsed = el and parse_elapsed(el)
  r.exit_status = tonumber(text:match("Exit status: (%d+)"))
  r.user = tonumber(text:match("User time %(seconds%): ([%d.]+)"))
  r.system = tonumber(text:match("System time %(seconds%): ([%d.]+)"))
  return r
end

-- `bench key v1 v2 ...` lines -> { key = { v1, v2, ... } }
local function parse_figures(stdout)
  local figs = {}
  for line in stdout:gmatch("[^\n]+") do
    local key, rest = line:match("^bench (%S+)(.*)$")
    if key then
      local vals = {}
      for v in rest:gmatch("%S+") do vals[#vals + 1] = tonumber(v) or v end
      figs[key] = vals
    end
  end
  return figs
end

--- The line of a client's stderr that says what went wrong: the first one
-- naming an error (Lua's "...: DaytonaError: ...", node's "XxxError: ..."),
-- else the first non-empty one; at most 400 characters.
function M.error_line(stderr)
  stderr = stderr or ""
  local line = stderr:match("[^\n]*%w*Error[:%s][^\n]*") or stderr:match("[^\n]*%S[^\n]*") or "(no message)"
  line = line:gsub("^%s+", "")
  if #line > 400 then line = line:sub(1, 400) .. "…" end
  return line
end

--- Run argv in its own process under `/usr/bin/time -v`.
-- @param argv the client's command
-- @param opts `{ env = extra variables, timeout = seconds (default 600),
--   cwd = }`
-- @return `{ wall = seconds (measured here, around the process), rss_kib =
--   peak RSS from the OS, figures = { key = { values } }, stdout, stderr,
--   user, system }`
-- @raise when the process fails (its stderr's tail in the message)
function M.run(argv, opts)
  opts = opts or {}
  local tf = os.tmpname()
  local full = { "/usr/bin/time", "-v", "-o", tf }
  for _, a in ipairs(argv) do full[#full + 1] = tostring(a) end
  local t0 = core.now()
  local ok, r, msg = pcall(process.run, full, { env = environ(opts.env), timeout = opts.timeout or 600,
    cwd = opts.cwd, max_output = 4 * 1024 * 1024 })
  local wall = core.now() - t0
  local f = io.open(tf)
  local tv = f and f:read("a") or ""
  if f then f:close() end
  os.remove(tf)
  if not ok or not r then error(("%s: %s"):format(table.concat(argv, " "), tostring(ok and msg or r)), 0) end
  local t = parse_time_v(tv)
  if r.exit_code ~= 0 or not t.rss_kib then
    error(("%s exited with %s: %s"):format(argv[2] and argv[2]:match("[^/]+$") or argv[1],
      tostring(r.exit_code), M.error_line(r.stderr)), 0)
  end
  return {
    wall = wall, rss_kib = t.rss_kib, user = t.user, system = t.system,
    figures = parse_figures(r.stdout), stdout = r.stdout, stderr = r.stderr,
  }
end

--- The one figure `key` of a client run (raises if it is missing).
function M.figure(res, key)
  local v = res.figures[key]
  if not v or type(v[1]) ~= "number" then
    error(("client printed no figure %q:\n%s"):format(key, res.stdout), 0)
  end
  return v[1]
end

return M
