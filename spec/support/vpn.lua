--- Two ends of a tunnel inside one sandbox, for spec/sdk/vpn_spec.lua and
-- bench/vpn_tunnel.lua: the sandbox's own network namespace (the server's,
-- M.SERVER_ADDR on vpn0) and one the sandbox makes, "peer" (the client's,
-- 192.168.77.2 on vpn1), joined by a veth pair; and the OpenVPN and
-- WireGuard configurations of the two ends. Every address is inside the
-- sandbox.
local M = {}

M.SERVER_ADDR = "192.168.77.1"

--- The shell script (run in the sandbox) that makes the "peer" namespace
-- and the veth pair between it and the sandbox's own.
M.PEER_NETNS = ([[set -e
sudo -n ip netns add peer
sudo -n ip link add vpn0 type veth peer name vpn1 netns peer
sudo -n ip addr add %s/24 dev vpn0
sudo -n ip link set vpn0 up
sudo -n ip -n peer addr add 192.168.77.2/24 dev vpn1
sudo -n ip -n peer link set vpn1 up
sudo -n ip -n peer link set lo up]]):format(M.SERVER_ADDR)

-- the keys of one end (vpn.openvpn_keys) inline, as OpenVPN's config takes them
local function inline_keys(keys, own)
  return ("<ca>\n%s</ca>\n<cert>\n%s</cert>\n<key>\n%s</key>\n<tls-crypt>\n%s</tls-crypt>\n")
    :format(keys.ca, own.cert, own.key, keys.tls_crypt)
end

--- An OpenVPN server (TLS mode, 10.89.0.0/24) on UDP `port`, with the
-- keys of vpn.openvpn_keys.
function M.openvpn_server(keys, port)
  return ([[
dev tun
proto udp
port %d
topology subnet
server 10.89.0.0 255.255.255.0
dh none
keepalive 10 60
]]):format(port) .. inline_keys(keys, keys.server)
end

--- Its client, to `remote`:`port`.
function M.openvpn_client(keys, remote, port)
  return ([[
client
dev tun
proto udp
remote %s %d
nobind
remote-cert-tls server
]]):format(remote, port) .. inline_keys(keys, keys.clients.client)
end

--- A WireGuard end: its own key pair, the peer's (vpn.wireguard_keys),
-- its address, and `extra.interface` / `extra.peer` lines for the two
-- sections.
function M.wireguard_conf(own, peer, address, extra)
  return ("[Interface]\nPrivateKey = %s\nAddress = %s\n%s\n[Peer]\nPublicKey = %s\n%s\n")
    :format(own.private_key, address, extra.interface or "", peer.public_key, extra.peer)
end

return M
