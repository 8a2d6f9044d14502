--- Sandbox networking figures (printed, not asserted; doc/sandbox.md "Network").
--
--   build/bin/dtlua bench/net.lua [--peer BUILD_DIR] [--n N] [--only launcher]   (as root)
--
-- 1. The launcher alone: spawn -> the first line of its program (`sh -c
--    'echo up'`) for --net host / none / veth (the link dtlocal makes),
--    interleaved, first starts (a new DIR each time).
-- 2. dtlocal: POST /api/sandbox -> started, p50, warm pool (`{}` after the
--    pool refilled) and cold (`{"user":"root"}`, which the pool cannot
--    serve), against this build and, with --peer, the same against another
--    build's dtlocal (e.g. the commit before the network change: `git
--    worktree add /tmp/peer <commit> && make -C /tmp/peer`), interleaved in
--    the same run.
-- 3. iperf3 (Debian) for 3 s: from a sandbox to a server on the host
--    (reached at the sandbox's gateway, which its allow list names) beside
--    the host to itself over loopback: the ratio.
-- 4. previews: a server on the sandbox's address (direct) and one on its
--    loopback only (through its daemon): small GET p50 and a big download.
-- 5. unprivileged (a server as nobody, pasta): create -> started p50, and
--    iperf3 to a server in a namespace made here, via pasta and via veth.
-- The launcher runs use uid ranges above dtlocal's registry (2^31 + i*65536)
-- and links outside its 10.200/16. Only this machine's addresses and dtlocal's namespaces see traffic.
local core = require "daytona.core"
local daytona = require "daytona"
local process = daytona.process
local http = daytona.http
local json = require("dtlocal.http").json

local ROOT = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/?.lua;" .. package.path
local script = require "bench.lib.script"
local BUILD = os.getenv("DTLUA_BUILD") or (ROOT .. "/build")
local opt = script.args{ peer = false, n = 15, only = false }
local peer, N, only = opt.peer or nil, opt.n, opt.only or nil
assert(core.util.getuid() == 0, "run as root (the sandboxes' own networks need it)")

local pct = script.pct
local function sh(cmd) return script.sh(cmd, 120) end
local function tmpdir() return script.tmpdir("netbench") end

-- 1. the launcher
local function launcher_figures()
  local launcher = BUILD .. "/libexec/dtlua/dtlua-sandbox"
  local dir = tmpdir()
  local ms = { host = {}, none = {}, veth = {} }
  for i = 1, N do
    for _, mode in ipairs({ "host", "none", "veth" }) do
      local net = mode
      if mode == "veth" then net = ("veth:dtlb%d:10.201.%d.1/30:10.201.%d.2"):format(i, i, i) end
      daytona.sleep(0.05)   -- the previous sandbox's teardown out of the way
      local t0 = core.now()
      local p = assert(process.spawn({ launcher, "run", "--root-dir", ("%s/%s%d"):format(dir, mode, i),
        "--hostname", "b", "--uid-base", tostring((1 << 31) + i * 65536), "--net", net, "--user", "root",
        "--", "sh", "-c", "echo up; sleep 0.2" }, { stdin = "null", stdout = "pipe", stderr = "stdout" }))
      local line = p:read() or ""
      local dt = (core.now() - t0) * 1000
      assert(line:match("^up"), mode .. ": " .. line)
      p:wait(10)
      p:close()
      ms[mode][#ms[mode] + 1] = dt
    end
  end
  sh("rm -rf " .. dir)
  print(("launcher, first start -> program's first line, p50 of %d (p90):"):format(N))
  for _, mode in ipairs({ "host", "none", "veth" }) do
    print(("  --net %-5s %6.1f ms (%5.1f)"):format(mode, pct(ms[mode], 50), pct(ms[mode], 90)))
  end
end

-- a dtlocal of `build` with a warm pool of 2
-- (as_nobody: run as uid 65534, the unprivileged mode, without a warm pool)
local function start_server(build, as_nobody)
  return script.start_server{ build = build, warm = 2, as_nobody = as_nobody, timeout = 60 }
end

local function create_ms(srv, body)
  local t0 = core.now()
  local st, b = srv.call("POST", "/sandbox", body)
  local dt = (core.now() - t0) * 1000
  assert(st == 200 and b.state == "started", "create: " .. tostring(st) .. " " .. json.encode(b or {}))
  return dt, b.id
end

-- 2. create -> started, this build and the peer, interleaved
local function create_figures()
  local servers = { { name = "this build", srv = start_server(BUILD), warm = {}, cold = {} } }
  if peer then servers[2] = { name = "peer " .. peer, srv = start_server(peer), warm = {}, cold = {} } end
  daytona.sleep(3)   -- the pools fill
  for _ = 1, N do
    for _, s in ipairs(servers) do
      local w, wid = create_ms(s.srv, { labels = { bench = "warm" } })
      local c, cid = create_ms(s.srv, { user = "root", labels = { bench = "cold" } })
      s.warm[#s.warm + 1], s.cold[#s.cold + 1] = w, c
      s.srv.call("DELETE", "/sandbox/" .. wid)
      s.srv.call("DELETE", "/sandbox/" .. cid)
      if s == servers[1] then
        -- a cold create with an allow list: one `nft` run before the launcher
        local a, aid = create_ms(s.srv, { user = "root", networkAllowList = "10.0.0.0/8", labels = { bench = "cold" } })
        s.allow = s.allow or {}
        s.allow[#s.allow + 1] = a
        s.srv.call("DELETE", "/sandbox/" .. aid)
      end
    end
    daytona.sleep(1.5)   -- the pools refill, the deletes end
  end
  print(("dtlocal, POST /api/sandbox -> started, p50 of %d (p90):"):format(N))
  for _, s in ipairs(servers) do
    print(("  %-40s warm pool %6.1f ms (%5.1f)   cold %6.1f ms (%5.1f)"):format(s.name,
      pct(s.warm, 50), pct(s.warm, 90), pct(s.cold, 50), pct(s.cold, 90)))
  end
  print(("  %-40s cold, with networkAllowList %6.1f ms (%5.1f)"):format("this build",
    pct(servers[1].allow, 50), pct(servers[1].allow, 90)))
  return servers[1].srv, servers
end

-- 3. iperf3: sandbox -> host beside host -> host (loopback)
local function iperf_figures(srv)
  local port = 25201
  local server = assert(process.spawn({ "iperf3", "-s", "-p", tostring(port) },
    { stdin = "null", stdout = "pipe", stderr = "stdout" }))
  local drain = daytona.spawn(function() for _ in server:lines("stdout") do end end)
  daytona.sleep(0.5)
  local function gbps(out)
    local d = json.decode(out:match("%b{}") or "{}")
    return d and d["end"] and d["end"].sum_received and d["end"].sum_received.bits_per_second / 1e9
  end
  local host_out = sh(("iperf3 -c 127.0.0.1 -p %d -t 3 -J"):format(port))
  local _, id = create_ms(srv, {})
  local tb = srv.api:gsub("/api$", "/toolbox/") .. id
  local function exec(cmd)
    local r = http.request{ url = tb .. "/process/execute", method = "POST", timeout = 60,
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" },
      body = json.encode({ command = cmd, timeout = 30 }) }
    return json.decode(r.body).result
  end
  local gw = exec("ip route show default"):match("via (%S+)")
  assert(srv.call("POST", "/sandbox/" .. id .. "/network-settings", { networkAllowList = gw .. "/32" }) == 200)
  local sb_out = exec(("iperf3 -c %s -p %d -t 3 -J"):format(gw, port))
  srv.call("DELETE", "/sandbox/" .. id)
  server:kill("TERM")
  server:wait(5)
  server:close()
  drain:cancel()
  local h, s = gbps(host_out), gbps(sb_out)
  print("iperf3, 3 s, one stream (received):")
  print(("  host -> host (loopback)          %6.2f Gbit/s"):format(h or 0))
  print(("  sandbox -> host (veth, filtered) %6.2f Gbit/s   ratio %.2f"):format(s or 0, (s or 0) / (h or 1)))
end

-- 4. previews: a server on the sandbox's address (direct) beside one on its
-- loopback only (through its daemon): small GETs and a 256 MiB download
local function preview_figures(srv)
  local _, id = create_ms(srv, {})
  local tb = srv.api:gsub("/api$", "/toolbox/") .. id
  local function tbcall(method, path, body)
    local r = http.request{ url = tb .. path, method = method, timeout = 120,
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" },
      body = body and json.encode(body) or nil }
    return r.status, r.body
  end
  tbcall("POST", "/process/execute", { command = "mkdir -p /tmp/www && echo small > /tmp/www/s.txt && "
    .. "head -c 268435456 /dev/zero > /tmp/www/big.bin" })
  tbcall("POST", "/process/session", { sessionId = "web" })
  tbcall("POST", "/process/session/web/exec", { command = "python3 -m http.server 7101 --bind 0.0.0.0 --directory /tmp/www", runAsync = true })
  tbcall("POST", "/process/session", { sessionId = "lo" })
  tbcall("POST", "/process/session/lo/exec", { command = "python3 -m http.server 7102 --bind 127.0.0.1 --directory /tmp/www", runAsync = true })
  print("previews (python3 -m http.server in the sandbox; GET through dtlocal's preview listener):")
  for _, port in ipairs({ 7101, 7102 }) do
    local _, b = srv.call("GET", "/sandbox/" .. id .. "/ports/" .. port .. "/preview-url")
    local url, hdr = b.url, { ["X-Daytona-Preview-Token"] = b.token }
    for _ = 1, 100 do
      local r = http.request{ url = url .. "/s.txt", headers = hdr, timeout = 5 }
      if r.status == 200 then break end
      daytona.sleep(0.1)
    end
    local ms = {}
    for _ = 1, 100 do
      local t0 = core.now()
      local r = http.request{ url = url .. "/s.txt", headers = hdr, timeout = 10 }
      assert(r.status == 200, "preview " .. port .. ": " .. r.status)
      ms[#ms + 1] = (core.now() - t0) * 1000
    end
    local out = sh(("curl -s -o /dev/null -w '%%{speed_download}' -H 'X-Daytona-Preview-Token: %s' %s/big.bin")
      :format(b.token, url))
    print(("  %-28s small GET p50 %5.2f ms (p90 %5.2f)   256 MiB at %6.0f MB/s"):format(
      port == 7101 and "on 0.0.0.0 (direct)" or "on 127.0.0.1 (via daemon)",
      pct(ms, 50), pct(ms, 90), (tonumber(out) or 0) / 1e6))
  end
  srv.call("DELETE", "/sandbox/" .. id)
end

-- 5. unprivileged (a server as nobody: pasta): create -> started, and
-- iperf3 from a sandbox to a server in a namespace made here (linked to
-- the host by a veth pair), beside a root sandbox to the same server
local function unprivileged_figures(root_srv)
  local ns, hostif = "dtlbench" .. core.util.getpid(), "nsb" .. core.util.getpid()
  sh(("ip netns add %s && ip link add %s type veth peer name eth0 netns %s && "
    .. "ip addr add 198.18.251.1/24 dev %s && ip link set %s up && ip -n %s addr add 198.18.251.2/24 dev eth0 && "
    .. "ip -n %s link set eth0 up && ip -n %s link set lo up"):format(ns, hostif, ns, hostif, hostif, ns, ns, ns))
  local server = assert(process.spawn({ "ip", "netns", "exec", ns, "iperf3", "-s", "-p", "25202" },
    { stdin = "null", stdout = "pipe", stderr = "stdout" }))
  local drain = daytona.spawn(function() for _ in server:lines("stdout") do end end)
  daytona.sleep(0.5)
  local function gbps(out)
    local d = json.decode((out or ""):match("%b{}") or "{}")
    return d and d["end"] and d["end"].sum_received and d["end"].sum_received.bits_per_second / 1e9 or 0
  end
  local function iperf_from(srv, id)
    local tb = srv.api:gsub("/api$", "/toolbox/") .. id
    local r = http.request{ url = tb .. "/process/execute", method = "POST", timeout = 60,
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" },
      body = json.encode({ command = "iperf3 -c 198.18.251.2 -p 25202 -t 3 -J", timeout = 30 }) }
    return gbps(json.decode(r.body).result)
  end
  local u = start_server(BUILD, true)
  local ms = {}
  local id
  for i = 1, math.min(N, 10) do
    local dt, sid = create_ms(u, { user = "root" })
    ms[#ms + 1] = dt
    if i == 1 then id = sid else u.call("DELETE", "/sandbox/" .. sid) end
  end
  local up = iperf_from(u, id)
  u.call("DELETE", "/sandbox/" .. id)
  local _, rid = create_ms(root_srv, {})
  local rp = iperf_from(root_srv, rid)
  root_srv.call("DELETE", "/sandbox/" .. rid)
  u.stop()
  server:kill("TERM")
  server:wait(5)
  server:close()
  drain:cancel()
  sh(("ip netns del %s; ip link del %s 2>/dev/null; true"):format(ns, hostif))
  print(("unprivileged (as nobody, pasta), create {user: root} -> started, p50 of %d: %.1f ms (p90 %.1f)")
    :format(#ms, pct(ms, 50), pct(ms, 90)))
  print(("iperf3 to a server in a namespace of this machine: sandbox via pasta %.2f Gbit/s, via veth (root) %.2f Gbit/s")
    :format(up, rp))
end

launcher_figures()
if only == "launcher" then return end
local srv, servers = create_figures()
local ok, err = pcall(iperf_figures, srv)
if not ok then print("iperf3: " .. tostring(err)) end
ok, err = pcall(preview_figures, srv)
if not ok then print("previews: " .. tostring(err)) end
ok, err = pcall(unprivileged_figures, srv)
if not ok then print("unprivileged: " .. tostring(err)) end
for _, s in ipairs(servers) do s.srv.stop() end
