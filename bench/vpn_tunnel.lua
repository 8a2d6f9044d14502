--- bench/vpn_tunnel.lua: daytona.recipes.vpn's tunnels, up time and throughput.
--
--   lua5.4 bench/vpn_tunnel.lua [--runs N] [--seconds S]
--
-- In one sandbox of a private dtlocal: the sandbox's own network namespace
-- and one it makes (`ip netns add peer`), joined by a veth pair, as
-- spec/sdk/vpn_spec.lua sets them up. For OpenVPN (TLS mode, keys from
-- vpn.openvpn_keys) and WireGuard (wg-quick over wireguard-go): the time
-- from the call to the return of the server's and the client's tunnel,
-- the median of --runs bring-ups (default 3); then iperf3 (TCP, --seconds,
-- default 3) from the peer namespace to a server in the sandbox's, over the
-- plain veth and through each tunnel, in the same run, with the ratio to
-- the veth. Every address is inside the sandbox. Run from the checkout
-- (spec/support/dtlocal.lua starts DTLUA_BUILD's dtlocal, default build).
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
local build = os.getenv("DTLUA_BUILD") or "build"
package.path = root .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;"
  .. package.path
if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
package.cpath = build .. "/lib/lua/5.4/?.so;" .. package.cpath

local core = require "daytona.core"
local daytona = require "daytona"
local dtlocal = require "support.dtlocal"
local vpn = require "daytona.recipes.vpn"
local wire = require "daytona.wire"
local scheduler = require "daytona.runtime.scheduler"

local script = require "bench.lib.script"

local opt = script.args{ runs = 3, seconds = 3 }
local runs, seconds = opt.runs, opt.seconds

local function median(t) return script.pct(t, 50) end

scheduler.run(function()
  local srv = dtlocal.start()
  local ok, err = pcall(function()
    local client = daytona.new{ api_key = srv.token, api_url = srv.api_url, local_server = false }
    local sb <close> = client:create{ network_block_all = true }
    local function sh(cmd)
      local r = sb.process:exec(cmd, { timeout = 120 })
      assert(r.exit_code == 0, cmd .. ": " .. r.result)
      return r.result
    end
    sh([[set -e
sudo -n ip netns add peer
sudo -n ip link add vpn0 type veth peer name vpn1 netns peer
sudo -n ip addr add 192.168.77.1/24 dev vpn0
sudo -n ip link set vpn0 up
sudo -n ip -n peer addr add 192.168.77.2/24 dev vpn1
sudo -n ip -n peer link set vpn1 up
sudo -n ip -n peer link set lo up]])
    local keys = vpn.openvpn_keys(sb)
    local inline = function(tag, text) return ("<%s>\n%s</%s>\n"):format(tag, text, tag) end
    local ovpn_server = "dev tun\nproto udp\nport 1194\ntopology subnet\nserver 10.89.0.0 255.255.255.0\n"
      .. "dh none\n" .. inline("ca", keys.ca) .. inline("cert", keys.server.cert) .. inline("key", keys.server.key)
      .. inline("tls-crypt", keys.tls_crypt)
    local ovpn_client = "client\ndev tun\nproto udp\nremote 192.168.77.1 1194\nnobind\nremote-cert-tls server\n"
      .. inline("ca", keys.ca) .. inline("cert", keys.clients.client.cert)
      .. inline("key", keys.clients.client.key) .. inline("tls-crypt", keys.tls_crypt)
    local a, b = vpn.wireguard_keys(sb), vpn.wireguard_keys(sb)
    local wg_server = ("[Interface]\nPrivateKey = %s\nAddress = 10.90.0.1/24\nListenPort = 51820\n"
      .. "[Peer]\nPublicKey = %s\nAllowedIPs = 10.90.0.2/32\n"):format(a.private_key, b.public_key)
    local wg_client = ("[Interface]\nPrivateKey = %s\nAddress = 10.90.0.2/24\n[Peer]\nPublicKey = %s\n"
      .. "Endpoint = 192.168.77.1:51820\nAllowedIPs = 10.90.0.0/24\n"):format(b.private_key, a.public_key)

    local kinds = {
      { name = "OpenVPN",
        server = function() return vpn.openvpn(sb, { config = ovpn_server }) end,
        client = function() return vpn.openvpn(sb, { config = ovpn_client, netns = "peer" }) end },
      { name = "WireGuard (wireguard-go)",
        server = function() return vpn.wireguard(sb, { config = wg_server }) end,
        client = function() return vpn.wireguard(sb, { config = wg_client, netns = "peer", interface = "wg1" }) end },
    }

    -- iperf3 from the peer namespace to the server at `addr`: Mbit/s received
    local function iperf(addr)
      local r = sb.process:exec(("sudo -n ip netns exec peer iperf3 -J -c %s -t %d"):format(addr, seconds),
        { timeout = seconds + 60 })
      local okj, v = pcall(wire.decode, r.result)
      assert(r.exit_code == 0 and okj and type(v) == "table", "iperf3: " .. r.result)
      return v["end"].sum_received.bits_per_second / 1e6
    end
    sb.process:create_session("iperf3")
    sb.process:execute_session_command("iperf3", { command = "exec iperf3 -s 2>&1", run_async = true })
    -- readiness: the server's port answers
    local deadline = core.now() + 20
    while sh("ss -ltn '( sport = :5201 )' | tail -n +2"):find("5201", 1, true) == nil do
      assert(core.now() < deadline, "iperf3 -s did not listen")
      scheduler.sleep(0.05)
    end

    print(("tunnel up (median of %d; server, then client), and iperf3 TCP for %d s from the peer namespace:")
      :format(runs, seconds))
    local veth = iperf("192.168.77.1")
    print(("  %-26s %8s %8s %10.0f Mbit/s  1.00"):format("plain veth (no tunnel)", "-", "-", veth))
    for _, k in ipairs(kinds) do
      local ts, tc = {}, {}
      local server, tunnel
      for r = 1, runs do
        if tunnel then tunnel:close(); server:close() end
        local t0 = core.now()
        server = k.server()
        local t1 = core.now()
        tunnel = k.client()
        ts[r], tc[r] = (t1 - t0) * 1000, (core.now() - t1) * 1000
      end
      local mbps = iperf(server.address)
      print(("  %-26s %6.0f ms %6.0f ms %10.0f Mbit/s  %.2f"):format(k.name, median(ts), median(tc), mbps,
        mbps / veth))
      tunnel:close()
      server:close()
    end
    sb.process:delete_session("iperf3")
  end)
  srv.stop()
  if not ok then error(err, 0) end
end)
