-- examples/vpn_openvpn.lua: an OpenVPN tunnel between two sandboxes.
--
--     build/bin/dtlua examples/vpn_openvpn.lua
--
-- Sandbox A is the VPN server, sandbox B a client that connects to it over
-- the sandboxes' own network: B is created linked to A, so the two reach
-- each other (sandboxes that are not linked do not). The keys are made in
-- A: a small CA with OpenSSL, a server and a client certificate, and
-- OpenVPN's tls-crypt key (TLS mode; OpenVPN 2.6 deprecates static keys).
-- daytona.recipes.vpn installs OpenVPN when a sandbox lacks it, starts it
-- in a session and returns once the tunnel is up; then B pings A through
-- the tunnel. Every address here is one of the two sandboxes' own.
local daytona = require "daytona"
local vpn = require "daytona.recipes.vpn"

-- The tunnel's subnet: A is .1, clients get the next addresses.
local SUBNET, PORT = "10.89.0.0", 1194

local client = daytona.new()
local a <close> = client:create{ labels = { example = "vpn-openvpn" } }
local b <close> = client:create{ labels = { example = "vpn-openvpn" }, linked_sandbox = a.id, ephemeral = true }
print(("created sandbox A %s (server) and sandbox B %s (client, linked to A)"):format(a.id, b.id))

-- B reaches A by A's id (or name): the link puts each in the other's hosts
local a_addr = b.process:exec("getent hosts " .. a.id).result:match("^(%S+)")
assert(a_addr, "sandbox B cannot resolve A's id")
print(("B resolves A's id to %s"):format(a_addr))

local keys = vpn.openvpn_keys(a, { server = "vpn-server", clients = { "sandbox-b" } })
print("made the keys in A: a CA, certificates for vpn-server and sandbox-b, a tls-crypt key")

local function inline(tag, text) return ("<%s>\n%s</%s>\n"):format(tag, text, tag) end

local server_config = table.concat{
  "dev tun\nproto udp\nport ", PORT, "\ntopology subnet\n",
  "server ", SUBNET, " 255.255.255.0\n",
  "dh none\n",                       -- ECDHE with the P-256 keys
  "keepalive 10 60\n",
  inline("ca", keys.ca), inline("cert", keys.server.cert), inline("key", keys.server.key),
  inline("tls-crypt", keys.tls_crypt),
}
local client_config = table.concat{
  "client\ndev tun\nproto udp\nnobind\n",
  "remote ", a.id, " ", PORT, "\n",       -- resolved in B through the link
  "remote-cert-tls server\n",        -- only a certificate made for a server
  inline("ca", keys.ca), inline("cert", keys.clients["sandbox-b"].cert),
  inline("key", keys.clients["sandbox-b"].key), inline("tls-crypt", keys.tls_crypt),
}

local server <close> = vpn.openvpn(a, { config = server_config, timeout = 120 })
print(("A: OpenVPN server up on %s, address %s"):format(server.interface, server.address))
local tunnel <close> = vpn.openvpn(b, { config = client_config, timeout = 120 })
print(("B: connected on %s, address %s"):format(tunnel.interface, tunnel.address))

-- through the tunnel, both ways
local r = b.process:exec("ping -c 3 -i 0.2 -W 5 " .. server.address)
assert(r.exit_code == 0, "ping over the tunnel failed: " .. r.result)
print(("B -> A over the tunnel: %s"):format(r.result:match("%d+ packets transmitted, %d+ received[^\n]*")))
r = a.process:exec("ping -c 1 -W 5 " .. tunnel.address)
assert(r.exit_code == 0, "ping over the tunnel failed: " .. r.result)
print(("A -> B over the tunnel: %s"):format(r.result:match("%d+ packets transmitted, %d+ received[^\n]*")))

tunnel:close()
local gone = b.process:exec("ip link show dev " .. tunnel.interface .. " 2>&1 || true").result
print(("B: tunnel closed: %s"):format((gone:gsub("%s+$", ""))))
server:close()
print("deleting sandboxes " .. b.id .. " and " .. a.id)
