--- daytona: Daytona sandboxes driven from Lua.
--
--     local daytona = require "daytona"
--     local client = daytona.new()                 -- DAYTONA_API_KEY, or the local server
--     local sb <close> = client:create{ language = "python" }
--     print(sb.process:exec("echo hi").result)
--
-- The module also carries the runtime every call stands on: tasks
-- (`spawn`, `all`, `timeout`, `sleep`; `daytona.cleanup_timeout` is the
-- scheduler's bound on the cleanup that `all` and `timeout` wait for after
-- cancelling) and, for hosts with their own frame loop, `daytona.loop`.
-- The SDK classes and the runtime's transport modules (`daytona.http`,
-- `daytona.websocket`, `daytona.server`, `daytona.process`) load on first
-- use, so `require "daytona"` stays cheap.
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local core = require "daytona.core"

local M = {
  _VERSION = "0.1.0",
  errors = errors,
  spawn = scheduler.spawn,
  sleep = scheduler.sleep,
  all = scheduler.all,
  timeout = scheduler.timeout,
  running = scheduler.running,
}

-- What a first SDK call would load: every module of the SDK and the
-- runtime (the C parts core.http, core.ws and core.server come with them).
local PRELOAD = {
  "daytona.check", "daytona.wire", "daytona.config", "daytona.transport",
  "daytona.client", "daytona.localserver", "daytona.sandbox", "daytona.filesystem",
  "daytona.sandbox_process", "daytona.pty", "daytona.git", "daytona.code_interpreter",
  "daytona.snapshot", "daytona.volume", "daytona.image", "daytona.progressbar",
  "daytona.lsp_server", "daytona.chart", "daytona.recipes.mount", "daytona.recipes.vpn",
  "daytona.computer_use", "daytona.object_storage", "daytona.toml",
  "daytona.runtime.http", "daytona.runtime.websocket", "daytona.runtime.process",
  "daytona.runtime.multipart", "daytona.runtime.server",
}

--- Host integration, for programs that run their own frame loop.
-- `step(timeout_ms)` runs ready work and returns (0 never blocks), true while
-- work remains; `fd()` is a descriptor to poll for readability; `timeout()`
-- is how many ms the host may sleep before calling step again (-1: until fd
-- is readable); `preload()` does the first use's loading up front.
M.loop = {
  step = function(timeout_ms)
    if timeout_ms ~= nil and math.type(timeout_ms) ~= "integer" then
      error("bad argument #1 to 'step' (integer milliseconds expected)", 2)
    end
    return scheduler.step(timeout_ms or 0)
  end,
  fd = core.fd,
  timeout = core.backend_timeout,
  tasks = scheduler.count,
}

--- daytona.loop.preload() -> seconds: do now, at a host's start-up, the
-- loading that the first SDK call would otherwise do in the middle of a
-- frame (tens of milliseconds): the SDK's and the runtime's modules, the
-- core's parts with libcurl, libwebsockets and OpenSSL, libcurl's global
-- and multi-handle set-up and the WebSocket context. Returns how long that
-- took. Calling it again costs next to nothing. A WebSocket context that
-- cannot be made is not raised here: the first WebSocket call reports it.
-- What remains for the first calls is per connection: DNS, the TCP and TLS
-- handshakes (the first TLS one reads the system's CA store).
-- @return the seconds it took (a float)
-- @raise an error when a module cannot be loaded (a broken installation)
function M.loop.preload()
  local t0 = core.now()
  for i = 1, #PRELOAD do require(PRELOAD[i]) end
  core.http.init()
  core.ws.init()
  return core.now() - t0
end

local lazy = {
  http = "daytona.runtime.http",
  websocket = "daytona.runtime.websocket",
  server = "daytona.runtime.server",
  process = "daytona.runtime.process",
  Client = "daytona.client",
  Image = "daytona.image",
}

--- daytona.new(config) -> Client (see daytona.client)
function M.new(config)
  return require("daytona.client").new(config)
end

return setmetatable(M, {
  __index = function(t, k)
    -- one value, the scheduler's, whichever module it is set through
    if k == "cleanup_timeout" then return scheduler.cleanup_timeout end
    local mod = lazy[k]
    if mod then
      local v = require(mod)
      rawset(t, k, v)
      return v
    end
  end,
  __newindex = function(t, k, v)
    if k == "cleanup_timeout" then scheduler.cleanup_timeout = v else rawset(t, k, v) end
  end,
})
