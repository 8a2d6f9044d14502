--- domainAllowList figures (printed, not asserted; doc/sandbox.md "Domain allow list").
--
--   build/bin/dtlua bench/dns.lua [--n N]   (as root)
--
-- A fake upstream resolver of this script's on 127.1.77.53 (python3, as
-- the specs' one), a dtlocal told (DTLOCAL_RESOLV_CONF) it is the host's.
-- 1. DNS query p50/p90 (UDP, one at a time, N each, at most 350: the
--    filter's rate limit) from inside a sandbox
--    with a domainAllowList, through dtlocal's filter: a name it allows
--    (upstream asked, its address put in the sandbox's set) and one it
--    refuses (answered at once); beside the same query from the host
--    straight to the upstream (no filter, no NAT), in the same run.
-- 2. create -> started p50, cold ({"user":"root"}, which the warm pool
--    cannot serve), with and without a domainAllowList, interleaved.
-- Only this machine's addresses see traffic.
local core = require "daytona.core"
local daytona = require "daytona"
local process = daytona.process
local http = daytona.http
local json = require("dtlocal.http").json

local ROOT = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/?.lua;" .. package.path
local script = require "bench.lib.script"
local BUILD = os.getenv("DTLUA_BUILD") or (ROOT .. "/build")
local N = script.args{ n = 200 }.n
assert(core.util.getuid() == 0, "run as root (domain allow lists are enforced as root)")
-- the filter takes a burst of 400 queries from one sandbox, then 200 a
-- second (dtlocal.control.dns): a run stays within the burst, and the
-- bucket refills between runs
assert(N >= 10 and N <= 350, "--n: 10 to 350 (the filter's burst is 400 queries)")

local UP = "127.1.77.53"

local DNS = [=[
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    q, a = s.recvfrom(2048)
    i = 12
    while q[i] != 0: i += q[i] + 1
    qtype = struct.unpack(">H", q[i+1:i+3])[0]
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([198, 19, 77, 2]) if qtype == 1 else b""
    s.sendto(q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if ans else 0, 0, 0) + q[12:i+5] + ans, a)
]=]

-- N queries one after another; prints "p50 p90" in ms
local Q = [=[
import socket, struct, sys, time
def name(n): return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
ts = []
for i in range(int(sys.argv[3])):
    m = struct.pack(">HHHHHH", i, 0x100, 1, 0, 0, 0) + name(sys.argv[1]) + struct.pack(">HH", 1, 1)
    t0 = time.perf_counter(); s.sendto(m, (sys.argv[2], 53))
    while True:
        r = s.recv(4096)
        if r[:2] == m[:2]: break
    ts.append((time.perf_counter() - t0) * 1000)
ts.sort()
print("%.3f %.3f" % (ts[len(ts) // 2], ts[int(len(ts) * 0.9)]))
]=]

local pct = script.pct

do
  local dir = assert(process.run({ "mktemp", "-d", "/tmp/dtl-dnsbench.XXXXXX" })).stdout:gsub("%s+$", "")
  local function write(path, text)
    local f = assert(io.open(path, "w")); f:write(text); f:close()
  end
  write(dir .. "/dns.py", DNS)
  write(dir .. "/q.py", Q)
  write(dir .. "/resolv.conf", "nameserver " .. UP .. "\n")
  local up <close> = assert(process.spawn({ "python3", dir .. "/dns.py", UP }, { stdin = "null", stdout = "pipe", stderr = "stdout" }))
  for l in up:lines("stdout", 10) do if l:find("listening", 1, true) then break end end
  local srv = script.start_server{ build = BUILD, env = { DTLOCAL_RESOLV_CONF = dir .. "/resolv.conf" } }
  local api, token = srv.api, srv.token
  srv.drain.observed = true
  local function call(method, path, body, base)
    local r = assert(http.request{ url = (base or api) .. path, method = method, timeout = 120,
      headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/json" },
      body = body and json.encode(body) or nil })
    return r.status, json.decode(r.body or "") or r.body
  end
  local function started(body)
    local t0 = core.now()
    local st, s = call("POST", "/sandbox", body)
    assert(st == 200, json.encode(s))
    while s.state ~= "started" do
      daytona.sleep(0.002)
      st, s = call("GET", "/sandbox/" .. s.id)
      assert(s.state ~= "error", json.encode(s))
    end
    return (core.now() - t0) * 1000, s
  end
  local function exec(id, cmd)
    local st, r = call("POST", "/" .. id .. "/process/execute", { command = cmd, timeout = 300 }, api:gsub("/api$", "/toolbox"))
    assert(st == 200, json.encode(r))
    return r.result
  end
  -- 1. queries
  local _, s = started{ domainAllowList = "allowed.bench", user = "root" }
  exec(s.id, "cat > /tmp/q.py <<'EOF'\n" .. Q .. "EOF")
  local ns = exec(s.id, "cat /etc/resolv.conf"):match("nameserver%s+(%S+)")
  local allowed = exec(s.id, ("python3 /tmp/q.py allowed.bench %s %d"):format(ns, N))
  daytona.sleep(2.5)
  local refused = exec(s.id, ("python3 /tmp/q.py refused.bench %s %d"):format(ns, N))
  local host = assert(process.run({ "python3", dir .. "/q.py", "allowed.bench", UP, tostring(N) })).stdout
  print(("DNS query, N=%d each, p50 / p90 ms:"):format(N))
  print("  sandbox -> dtlocal's filter -> upstream (allowed name): " .. allowed:gsub("%s+$", ""):gsub(" ", " / "))
  print("  sandbox -> dtlocal's filter (refused name):             " .. refused:gsub("%s+$", ""):gsub(" ", " / "))
  print("  host -> upstream directly:                              " .. host:gsub("%s+$", ""):gsub(" ", " / "))
  call("DELETE", "/sandbox/" .. s.id)
  -- 2. create
  local plain, listed = {}, {}
  for _ = 1, math.max(5, N // 20) do
    local t, a = started{ user = "root" }
    plain[#plain + 1] = t
    call("DELETE", "/sandbox/" .. a.id)
    local t2, b = started{ user = "root", domainAllowList = "allowed.bench,*.bench.example" }
    listed[#listed + 1] = t2
    call("DELETE", "/sandbox/" .. b.id)
  end
  print(("create -> started p50, cold, n=%d: plain %.1f ms, with a domainAllowList %.1f ms"):format(
    #plain, pct(plain, 50), pct(listed, 50)))
  srv.stop()
  up:kill("KILL")
  os.execute("rm -rf '" .. dir .. "'")
end
