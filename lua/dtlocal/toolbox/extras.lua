--- dtlocal.toolbox.extras: ports (doc/protocol.md §4.10) and the routes this
-- daemon does not serve, answered with an error that says so.
--
-- GET /port lists the TCP ports listening in the sandbox (from
-- /proc/net/tcp and tcp6); GET /port/{port}/in-use tells one.
-- Computer use answers the protocol's own 503 ("Computer-use functionality
-- is not available", with details and a solution); the port proxy
-- answers 501 NOT_IMPLEMENTED naming the feature. No route here pretends to
-- succeed.
local http = require "dtlocal.http"

local raise = http.raise
local json = http.json
local io, tonumber, ipairs, table, math = io, tonumber, ipairs, table, math

local M = {}

-- Listening TCP ports from /proc/net/tcp{,6} (state 0A = LISTEN).
local function listening_ports()
  local seen, list = {}, json.array()
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local f = io.open(file, "r")
    if f then
      f:read("l")   -- header
      for line in f:lines() do
        local port, state = line:match("^%s*%d+:%s*%x+:(%x+)%s+%x+:%x+%s+(%x+)")
        if port and state == "0A" then
          local n = tonumber(port, 16)
          if n and not seen[n] then seen[n] = true; list[#list + 1] = n end
        end
      end
      f:close()
    end
  end
  table.sort(list)
  return list
end
M.listening_ports = listening_ports

local function ports(ctx)
  return 200, { ports = listening_ports() }
end

local function port_in_use(ctx)
  local p = ctx.params.port
  local n = p:match("^%d+$") and math.tointeger(tonumber(p))
  if not n or n < 1 or n > 65535 then
    raise(400, "port must be an integer between 1 and 65535", "BAD_REQUEST")
  end
  for _, q in ipairs(listening_ports()) do
    if q == n then return 200, { isInUse = true } end
  end
  return 200, { isInUse = false }
end

local function computer_use()
  raise(503, "Computer-use functionality is not available", "SERVICE_UNAVAILABLE", {
    details = "dtlocal sandboxes have no desktop (no X server, VNC or input automation)",
    solution = "use a Daytona sandbox created from a computer-use snapshot",
  })
end

local function not_implemented(feature)
  return function()
    raise(501, feature .. " is not supported by the dtlocal toolbox", "NOT_IMPLEMENTED")
  end
end

-- Register on a dtlocal.router.
function M.add_routes(r)
  r:add("GET", "/port", ports)
  r:add("GET", "/port/{port}/in-use", port_in_use)
  -- computer use: every method, every depth under /computeruse
  local cu = {
    "/computeruse/start", "/computeruse/stop", "/computeruse/status", "/computeruse/process-status",
    "/computeruse/process/{name}/status", "/computeruse/process/{name}/restart",
    "/computeruse/process/{name}/logs", "/computeruse/process/{name}/errors",
    "/computeruse/screenshot", "/computeruse/screenshot/region", "/computeruse/screenshot/compressed",
    "/computeruse/screenshot/region/compressed", "/computeruse/mouse/position",
    "/computeruse/mouse/move", "/computeruse/mouse/click", "/computeruse/mouse/drag",
    "/computeruse/mouse/scroll", "/computeruse/keyboard/type", "/computeruse/keyboard/key",
    "/computeruse/keyboard/hotkey", "/computeruse/display/info", "/computeruse/display/windows",
    "/computeruse/a11y/tree", "/computeruse/a11y/find", "/computeruse/a11y/node/focus",
    "/computeruse/a11y/node/invoke", "/computeruse/a11y/node/value",
    "/computeruse/recordings", "/computeruse/recordings/start", "/computeruse/recordings/stop",
    "/computeruse/recordings/{id}", "/computeruse/recordings/{id}/download",
  }
  for _, path in ipairs(cu) do
    for _, m in ipairs { "GET", "POST", "DELETE" } do r:add(m, path, computer_use) end
  end
  local proxy = not_implemented("The in-sandbox port proxy (/proxy/{port}/...)")
  for _, m in ipairs { "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS" } do
    r:add(m, "/proxy/{port}/{path*}", proxy)
  end
end

return M
