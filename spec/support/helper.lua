--- Shared spec helpers: temp dirs that clean up, running a body as a task,
-- and polling for readiness (never fixed sleeps).
local scheduler = require "daytona.runtime.scheduler"

local M = {}

--- A fresh private temp directory; removed by M.cleanup() (call it in teardown).
local made = {}
function M.tmpdir()
  local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/dtlua-spec.XXXXXX\"")
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp failed")
  made[#made + 1] = dir
  return dir
end

function M.cleanup()
  for i = #made, 1, -1 do
    os.execute("rm -rf '" .. made[i]:gsub("'", "'\\''") .. "'")
    made[i] = nil
  end
end

--- Run fn as a scheduler task and return its results (raising its error
-- with the task's traceback).
function M.run(fn, ...)
  local t = scheduler.spawn(fn, ...)
  local ok, res = pcall(t.wait, t)
  if not ok then
    error(tostring(res) .. "\n" .. (t.traceback or ""), 0)
  end
  return res
end

--- Poll pred() every `interval` seconds (default 0.01) until it returns a
-- truthy value or `timeout` seconds pass (default 5); returns the value.
function M.eventually(pred, timeout, interval)
  local core = require "daytona.core"
  local deadline = core.now() + (timeout or 5)
  while true do
    local v = pred()
    if v then return v end
    if core.now() > deadline then error("condition not met in time", 2) end
    scheduler.sleep(interval or 0.01)
  end
end

--- The environment for child processes: ours without the sanitizer runtime
-- `make asan` preloads into us (LD_PRELOAD, ASAN_OPTIONS, UBSAN_OPTIONS).
function M.child_env()
  local env = require("daytona.core").util.environ()
  env.LD_PRELOAD = nil
  env.ASAN_OPTIONS = nil
  env.UBSAN_OPTIONS = nil
  return env
end

--- The absolute path of `rel` in the build under test ($DTLUA_BUILD, by
-- default build/ of the checkout the specs run from).
function M.build_path(rel)
  local b = os.getenv("DTLUA_BUILD") or "build"
  if b:sub(1, 1) ~= "/" then b = assert(os.getenv("PWD"), "PWD is not set") .. "/" .. b end
  return b .. "/" .. rel
end

--- This process's peak and current RSS in KiB (VmHWM, VmRSS).
function M.peak_rss_kib()
  local s = M.read_file("/proc/self/status") or ""
  return tonumber(s:match("VmHWM:%s*(%d+)")), tonumber(s:match("VmRSS:%s*(%d+)"))
end

--- Reset this process's peak RSS to its current RSS (where the kernel lets us).
function M.reset_peak_rss()
  local f = io.open("/proc/self/clear_refs", "w")
  if f then f:write("5"); f:close() end
end

--- The whole content of the file at path, or nil if it cannot be opened.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Write a file of n bytes (a repeating pattern) with dd; returns its path.
function M.bigfile(dir, name, bytes)
  local path = dir .. "/" .. name
  local mib = bytes // (1024 * 1024)
  assert(os.execute(("head -c %d /dev/urandom > '%s' 2>/dev/null || true"):format(bytes, path)))
  assert(mib >= 0)
  return path
end

return M
