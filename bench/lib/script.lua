--- What the standalone bench scripts (bench/images.lua, net.lua, computeruse.lua,
-- snapshots.lua, vpn_tunnel.lua, x11_capture.lua) share: their argument
-- parsing, percentiles, a shell line's output, temp dirs and a private
-- dtlocal of a build to time requests against.
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local http = require "daytona.runtime.http"
local json = require("dtlocal.http").json
local measure = require "bench.lib.measure"

local M = {}

--- The script's `--name value` options. `defaults` maps each name to its
-- default: a number makes a numeric option, anything else (false for none)
-- a string one. An unknown argument or a non-number raises.
function M.args(defaults, argv)
  argv = argv or arg
  local opt = {}
  for k, v in pairs(defaults) do opt[k] = v end
  local i = 1
  while argv[i] do
    local name = argv[i]:match("^%-%-(.+)$")
    if name == nil or defaults[name] == nil then error("unknown argument " .. argv[i], 0) end
    if type(defaults[name]) == "number" then
      opt[name] = assert(tonumber(argv[i + 1]), "--" .. name .. " N")
    else
      opt[name] = assert(argv[i + 1], "--" .. name .. " needs a value")
    end
    i = i + 2
  end
  return opt
end

--- The p-th percentile by nearest rank; pct(list, 50) is the median of an
-- odd count, the lower middle one of an even count.
M.pct = measure.percentile

--- A shell line's stdout and stderr together, and its exit code.
function M.sh(cmd, timeout)
  local r = assert(process.run({ "sh", "-c", cmd }, { timeout = timeout or 300, stderr = "stdout" }))
  return r.stdout, r.exit_code
end

--- A new directory /tmp/dtl-TAG.XXXXXX (the caller removes it).
function M.tmpdir(tag)
  return (M.sh("mktemp -d /tmp/dtl-" .. tag .. ".XXXXXX"):gsub("%s+$", ""))
end

--- A dtlocal of `opts.build` on a new state dir, its output drained.
-- opts: `build` (the build dir), `warm` (warm pool size, default 0),
-- `as_nobody` (run as uid 65534, the unprivileged mode, no warm pool),
-- `timeout` (of each srv.call, default 120 s), `env` (variables added to
-- ours).
-- @return `{ api, token, proc, dir, state, call(method, path, body) ->
--   status, decoded body, stop() }`
function M.start_server(opts)
  local dir = M.tmpdir("bench")
  local token = "bench-" .. core.util.hex(core.util.random_bytes(8))
  local state = dir .. "/state"
  local env
  if opts.env then
    env = core.util.environ()
    for k, v in pairs(opts.env) do env[k] = v end
  end
  local argv = { opts.build .. "/bin/dtlocal", "serve", "--port", "0", "--state", state,
    "--token", token, "--warm", tostring(not opts.as_nobody and opts.warm or 0) }
  if opts.as_nobody then
    M.sh("chmod 0711 " .. dir .. " && mkdir -m 0700 " .. dir .. "/n && chown 65534:65534 " .. dir .. "/n")
    state = dir .. "/n/state"
    argv[6] = state
    table.insert(argv, 1, "--clear-groups")
    table.insert(argv, 1, "--regid=65534")
    table.insert(argv, 1, "--reuid=65534")
    table.insert(argv, 1, "setpriv")
    env = { HOME = dir .. "/n", XDG_STATE_HOME = dir .. "/n", XDG_RUNTIME_DIR = dir .. "/n", PATH = os.getenv("PATH") }
  end
  local p = assert(process.spawn(argv, { stdin = "null", stdout = "pipe", stderr = "stdout", env = env }))
  local api
  for line in p:lines("stdout", 30) do
    api = line:match("^dtlocal: API (%S+)")
    if api then break end
  end
  assert(api, "dtlocal of " .. opts.build .. " did not start")
  local drain = scheduler.spawn(function() for _ in p:lines("stdout") do end end)
  local srv = { api = api, token = token, proc = p, dir = dir, drain = drain, state = state }
  function srv.call(method, path, body)
    local r = http.request{ url = api .. path, method = method, timeout = opts.timeout or 120,
      headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/json" },
      body = body and json.encode(body) or nil }
    return r.status, r.body and r.body ~= "" and json.decode(r.body) or nil
  end
  function srv.stop()
    p:kill("TERM")
    p:wait(30)
    p:close()
    M.sh("rm -rf " .. dir)
  end
  return srv
end

return M
