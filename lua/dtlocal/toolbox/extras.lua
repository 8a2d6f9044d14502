--- dtlocal.toolbox.extras: ports (doc/protocol.md §4.10) and the route this
-- daemon does not serve, answered with an error that says so.
--
-- GET /port lists the TCP ports listening in the sandbox (from
-- /proc/net/tcp and tcp6); GET /port/{port}/in-use tells one.
-- The port proxy answers 501 NOT_IMPLEMENTED naming the feature. No route
-- here pretends to succeed.
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

local function not_implemented(feature)
  return function()
    raise(501, feature .. " is not supported by the dtlocal toolbox", "NOT_IMPLEMENTED")
  end
end

-- Register on a dtlocal.router.
function M.add_routes(r)
  r:add("GET", "/port", ports)
  r:add("GET", "/port/{port}/in-use", port_in_use)
  local proxy = not_implemented("The in-sandbox port proxy (/proxy/{port}/...)")
  for _, m in ipairs { "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS" } do
    r:add(m, "/proxy/{port}/{path*}", proxy)
  end
end

return M
