-- examples/vpn_wireguard.lua: a WireGuard tunnel between two sandboxes.
--
--     build/bin/dtlua examples/vpn_wireguard.lua
--
-- Sandbox A listens, sandbox B (created linked to A, so the two reach each
-- other over the sandboxes' network) has A as its peer. Each sandbox makes
-- its own key pair with `wg genkey`; only the public keys are exchanged.
-- daytona.recipes.vpn hands each a wg-quick config: with no WireGuard
-- kernel module (as on the local server's machine) wg-quick falls back to
-- the userspace wireguard-go, which the recipe keeps running in a session.
-- WireGuard has no connection state: B's ping is what makes the handshake,
-- and its answer is the proof. Every address here is one of the two
-- sandboxes' own.
local daytona = require "daytona"
local vpn = require "daytona.recipes.vpn"

local PORT = 51820

local client = daytona.new()
local a <close> = client:create{ labels = { example = "vpn-wireguard" } }
local b <close> = client:create{ labels = { example = "vpn-wireguard" }, linked_sandbox = a.id, ephemeral = true }
print(("created sandbox A %s and sandbox B %s (linked to A)"):format(a.id, b.id))

-- B reaches A by A's id (or name): the link puts each in the other's hosts
local a_addr = b.process:exec("getent hosts " .. a.id).result:match("^(%S+)")
assert(a_addr, "sandbox B cannot resolve A's id")
print(("B resolves A's id to %s"):format(a_addr))

-- each private key stays in the sandbox that made it and in its own config
local ka, kb = vpn.wireguard_keys(a), vpn.wireguard_keys(b)
print(("keys: A %s..., B %s... (public)"):format(ka.public_key:sub(1, 8), kb.public_key:sub(1, 8)))

local a_tun <close> = vpn.wireguard(a, { timeout = 120, config = ([[
[Interface]
PrivateKey = %s
Address = 10.90.0.1/24
ListenPort = %d

[Peer]
PublicKey = %s
AllowedIPs = 10.90.0.2/32
]]):format(ka.private_key, PORT, kb.public_key) })
print(("A: %s up, address %s, listening on %d"):format(a_tun.interface, a_tun.address, PORT))

local b_tun <close> = vpn.wireguard(b, { timeout = 120, config = ([[
[Interface]
PrivateKey = %s
Address = 10.90.0.2/24

[Peer]
PublicKey = %s
Endpoint = %s:%d
AllowedIPs = 10.90.0.0/24
PersistentKeepalive = 25
]]):format(kb.private_key, ka.public_key, a.id, PORT) })
print(("B: %s up, address %s, peer A (%s) port %d"):format(b_tun.interface, b_tun.address, a_addr, PORT))

local r = b.process:exec("ping -c 3 -i 0.2 -W 5 " .. a_tun.address)
assert(r.exit_code == 0, "ping over the tunnel failed: " .. r.result)
print(("B -> A over the tunnel: %s"):format(r.result:match("%d+ packets transmitted, %d+ received[^\n]*")))
r = a.process:exec("ping -c 1 -W 5 " .. b_tun.address)
assert(r.exit_code == 0, "ping over the tunnel failed: " .. r.result)
print(("A -> B over the tunnel: %s"):format(r.result:match("%d+ packets transmitted, %d+ received[^\n]*")))

-- what wg says on A: the peer, its endpoint (B's address) and a handshake
local show = a.process:exec("sudo -n wg show " .. a_tun.interface).result
print(("A's peer: endpoint %s, latest handshake %s"):format(show:match("endpoint: (%S+)") or "?",
  show:match("latest handshake: ([^\n]+)") or "none"))

b_tun:close()
a_tun:close()
print("tunnels closed; deleting sandboxes " .. b.id .. " and " .. a.id)
