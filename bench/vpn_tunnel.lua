--- bench/vpn_tunnel.lua: daytona.recipes.vpn's tunnels, up time and throughput.
--
--   lua5.4 bench/vpn_tunnel.lua [--runs N] [--seconds S]
--
-- In one sandbox of a private dtlocal: the sandbox's own network namespace
-- and one it makes (`ip netns add peer`), joined by a veth pair, as
-- spec/sdk/vpn_spec.lua sets them up (spec/support/vpn.lua, with the two
-- ends' configurations). For OpenVPN (TLS mode, keys from
-- vpn.openvpn_keys) and WireGuard (wg-quick over wireguard-go): the time
-- from the call to the return of the server's and the client's tunnel,
-- the median of --runs bring-ups (default 3); then iperf3 (TCP, --seconds,
-- default 3) from the peer namespace to a server in the sandbox's, over the
-- plain veth and through each tunnel, in the same run, with the ratio to
-- the veth. Every address is inside the sandbox. Run from the checkout
-- (spec/support/dtlocal.lua starts DTLUA_BUILD's dtlocal, default build).
dofile((arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/bench/lib/paths.lua")

local core = require "daytona.core"
local daytona = require "daytona"
local dtlocal = require "support.dtlocal"
local tunnel = require "support.vpn"
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
    sh(tunnel.PEER_NETNS)
    local keys = vpn.openvpn_keys(sb)
    local ovpn_server = tunnel.openvpn_server(keys, 1194)
    local ovpn_client = tunnel.openvpn_client(keys, tunnel.SERVER_ADDR, 1194)
    local a, b = vpn.wireguard_keys(sb), vpn.wireguard_keys(sb)
    local wg_server = tunnel.wireguard_conf(a, b, "10.90.0.1/24",
      { interface = "ListenPort = 51820", peer = "AllowedIPs = 10.90.0.2/32" })
    local wg_client = tunnel.wireguard_conf(b, a, "10.90.0.2/24",
      { peer = "Endpoint = " .. tunnel.SERVER_ADDR .. ":51820\nAllowedIPs = 10.90.0.0/24" })

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
