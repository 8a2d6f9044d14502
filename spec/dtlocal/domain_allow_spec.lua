-- domainAllowList as dtlocal enforces it as root (doc/sandbox.md "Domain
-- allow list"): a sandbox's DNS goes to dtlocal's filter, which answers
-- only the names of the list, and its traffic reaches only the addresses
-- those answers gave (and its networkAllowList). Attacked from inside: a
-- disallowed name, its address dialled directly, another resolver asked,
-- `sudo nft flush ruleset`, malformed DNS; nothing left after delete and
-- kill -9 + restart.
--
-- The host's resolver is a fake of this spec's (DTLOCAL_RESOLV_CONF) on
-- 127.1.N.53 answering names with addresses in a namespace this spec
-- makes (198.19.N.2 and .3, linked to the host by a veth pair): nothing
-- leaves this machine.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local outside_ns = require "support.outside"
local process = require "daytona.runtime.process"

local srv

local function ok(want, method, path, body) return dtlocal.expect(srv, want, method, path, body) end
local function call(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end
local function exec(id, command, timeout) return dtlocal.exec(srv, id, command, timeout or 60) end

local sh, start_listening = outside_ns.sh, outside_ns.start_listening

local function create(body) return dtlocal.create_started(srv, body) end

-- A DNS server: answers A queries for the names given as name=ip (any name
-- with "*=ip"), NXDOMAIN otherwise; AAAA and the rest: no records.
local DNS = [=[
import socket, struct, sys
table = dict(a.split("=") for a in sys.argv[2:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    q, a = s.recvfrom(2048)
    try:
        i, labels = 12, []
        while q[i] != 0:
            labels.append(q[i+1:i+1+q[i]].decode()); i += q[i] + 1
        name = ".".join(labels).lower()
        qtype = struct.unpack(">H", q[i+1:i+3])[0]
        ip = table.get(name, table.get("*"))
        rcode = 0 if ip else 3
        ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes(int(x) for x in ip.split(".")) if ip and qtype == 1 else b""
        s.sendto(q[:2] + struct.pack(">HHHHH", 0x8180 | rcode, 1, 1 if ans else 0, 0, 0) + q[12:i+5] + ans, a)
    except Exception:
        pass
]=]

-- Run in a sandbox: `q.py NAME SERVER` prints the answer's rcode and
-- addresses ("rcode=0 1.2.3.4"), or "timeout"; `q.py --garbage SERVER`
-- sends malformed datagrams and prints how many FORMERR answers came.
local Q = [=[
import socket, struct, sys, random
def name(n): return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"
def ask(msg, server, wait=2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(wait)
    s.sendto(msg, (server, 53))
    try: return s.recv(4096)
    except Exception: return None
if sys.argv[1] == "--garbage":
    random.seed(7)
    good = struct.pack(">HHHHHH", 7, 0x100, 1, 0, 0, 0) + name("allowed.dtlspec") + struct.pack(">HH", 1, 1)
    bad = [b"", b"\0", good[:11], good[:-1], good + b"x", good[:12] + b"\xc0\x0c\0\1\0\1",
           good[:12] + b"\x40" + b"a" * 64 + b"\0\0\1\0\1", good[:4] + b"\0\2" + good[6:], b"\xff" * 3000,
           good[:2] + b"\x28\0" + good[4:]]
    for _ in range(300):
        b = bytearray(good)
        for _ in range(random.randint(1, 4)): b[random.randrange(len(b))] = random.randrange(256)
        bad.append(bytes(b))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
    for m in bad: s.sendto(m, (sys.argv[2], 53))
    n = 0
    try:
        while True:
            r = s.recv(4096)
            if len(r) >= 4 and r[3] & 15 == 1: n += 1
    except Exception: pass
    print("formerr", n)
    sys.exit(0)
msg = struct.pack(">HHHHHH", random.randrange(65536), 0x100, 1, 0, 0, 0) + name(sys.argv[1]) + struct.pack(">HH", 1, 1)
r = ask(msg, sys.argv[2])
if r is None: print("timeout"); sys.exit(0)
an = struct.unpack(">H", r[6:8])[0]
i = 12 + len(name(sys.argv[1])) + 4
ips = []
for _ in range(an):
    i += 2 if r[i] >= 192 else len(name(""))
    t, c, ttl, l = struct.unpack(">HHIH", r[i:i+10])
    if t == 1: ips.append(".".join(str(x) for x in r[i+10:i+14]))
    i += 10 + l
print(("rcode=%d " % (r[3] & 15)) + " ".join(ips))
]=]

local PROBE = [[
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.settimeout(2)
    print("open", s.recv(200).decode(errors="replace").strip())
except Exception as e:
    print("closed", type(e).__name__)
]]

local SERVE = [[
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
while True:
    c, a = s.accept()
    try: c.sendall(("peer=%s\n" % a[0]).encode())
    except Exception: pass
    c.close()
]]

local function put_scripts(id)
  exec(id, "cat > /tmp/q.py <<'EOF'\n" .. Q .. "EOF\ncat > /tmp/probe.py <<'EOF'\n" .. PROBE .. "EOF")
end

local function probe(id, host, port)
  return (exec(id, ("python3 /tmp/probe.py %s %s"):format(host, port)):gsub("%s+$", ""))
end

local function ask(id, name, server)
  return (exec(id, ("python3 /tmp/q.py %s %s"):format(name, server)):gsub("%s+$", ""))
end

local function nameserver(id)
  return exec(id, "cat /etc/resolv.conf"):match("nameserver%s+(%d+%.%d+%.%d+%.%d+)")
end

local function table_name()
  return srv.log():match("nftables table inet (dtlocal_%d+)")
end

-- A process started from a script, once it prints "listening".
describe("dtlocal domainAllowList", function()
  local N = core.util.getpid() % 250
  local ns, OUT_GW, OUT_A, OUT_B
  local UP = ("127.1.%d.53"):format(N)
  local OUT_PORT = 18081
  local procs = {}

  setup(function()
    ns = outside_ns.make("dom", "198.19")
    OUT_GW, OUT_A, OUT_B = ns.gw, ns.a, ns.b
    local dir = helper.tmpdir()
    for file, text in pairs({ ["dns.py"] = DNS, ["serve.py"] = SERVE }) do
      local f = assert(io.open(dir .. "/" .. file, "w"))
      f:write(text)
      f:close()
    end
    local conf = os.tmpname()
    local f = assert(io.open(conf, "w"))
    f:write("nameserver " .. UP .. "\n")
    f:close()
    procs.conf = conf
    helper.run(function()
      -- the host's resolver (a fake), a server behind each outside address,
      -- and another resolver outside that would answer every name
      procs[1] = start_listening({ "python3", dir .. "/dns.py", UP, "allowed.dtlspec=" .. OUT_A,
        "other.dtlspec=" .. OUT_B, "x.wild.dtlspec=" .. OUT_A, "wild.dtlspec=" .. OUT_B })
      procs[2] = start_listening(ns:argv{ "python3", dir .. "/serve.py", "0.0.0.0", tostring(OUT_PORT) })
      procs[3] = start_listening(ns:argv{ "python3", dir .. "/dns.py", OUT_B, "*=" .. OUT_B })
    end)
    local env = core.util.environ()
    env.DTLOCAL_RESOLV_CONF = conf
    srv = dtlocal.start{ env = env }
  end)

  teardown(function()
    for _, p in ipairs(procs) do p:kill("KILL"); pcall(p.wait, p, 5); p:close() end
    if procs.conf then os.remove(procs.conf) end
    if ns then ns:remove() end
    if srv then srv.stop() end
    helper.cleanup()
  end)

  it("resolves only the listed names and reaches only their addresses, which sudo inside cannot lift", function()
    helper.run(function()
      local s = create{ domainAllowList = "allowed.dtlspec,*.wild.dtlspec" }
      assert.are.equal("allowed.dtlspec,*.wild.dtlspec", ok(200, "GET", "/sandbox/" .. s.id).domainAllowList)
      put_scripts(s.id)
      local ns = nameserver(s.id)
      assert.is_truthy(ns)
      -- an allowed name resolves (through the libc resolver too) and its server answers
      local out, code = exec(s.id, "getent hosts allowed.dtlspec")
      assert.are.equal(0, code, out)
      assert.matches("^" .. OUT_A:gsub("%.", "%%.") .. "%s+allowed%.dtlspec", out)
      assert.matches("^open peer=", probe(s.id, "allowed.dtlspec", OUT_PORT))
      assert.are.equal("rcode=0 " .. OUT_A, ask(s.id, "x.wild.dtlspec", ns))
      -- a disallowed name is refused; its address dialled directly is dropped
      assert.are.equal("rcode=5", ask(s.id, "other.dtlspec", ns))
      assert.are.equal("rcode=5", ask(s.id, "wild.dtlspec", ns))
      out, code = exec(s.id, "getent hosts other.dtlspec")
      assert.are_not.equal(0, code, out)
      assert.matches("^closed", probe(s.id, OUT_B, OUT_PORT))
      -- another resolver (one that would answer anything): the filter answers instead
      assert.are.equal("rcode=5", ask(s.id, "other.dtlspec", OUT_B))
      assert.are.equal("rcode=0 " .. OUT_A, ask(s.id, "allowed.dtlspec", OUT_B))
      -- its root flushes what it can: nothing changes
      exec(s.id, "sudo -n nft flush ruleset 2>&1; sudo -n iptables -F 2>&1; sudo -n iptables -t nat -F 2>&1; true")
      assert.matches("^closed", probe(s.id, OUT_B, OUT_PORT))
      assert.are.equal("rcode=5", ask(s.id, "other.dtlspec", OUT_B))
      -- malformed DNS: FORMERR or dropped, and the filter still answers
      local g = exec(s.id, "python3 /tmp/q.py --garbage " .. ns)
      assert.matches("^formerr %d+", g)
      assert.is_true(tonumber(g:match("%d+")) > 0, g)
      helper.eventually(function() return ask(s.id, "allowed.dtlspec", ns) == "rcode=0 " .. OUT_A end, 10, 0.2)
      -- another list on the running sandbox: the old list's addresses go
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "other.dtlspec" })
      assert.matches("^closed", probe(s.id, OUT_A, OUT_PORT))
      assert.are.equal("rcode=5", ask(s.id, "allowed.dtlspec", ns))
      assert.are.equal("rcode=0 " .. OUT_B, ask(s.id, "other.dtlspec", ns))
      assert.matches("^open", probe(s.id, OUT_B, OUT_PORT))
      -- a networkAllowList adds to it
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = OUT_A .. "/32" })
      assert.matches("^open", probe(s.id, OUT_A, OUT_PORT))
      assert.matches("^open", probe(s.id, OUT_B, OUT_PORT))
      -- cleared: an ordinary sandbox again (its DNS goes where it says)
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "", networkAllowList = "" })
      assert.are.equal("rcode=0 " .. OUT_B, ask(s.id, "allowed.dtlspec", OUT_B))
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("refuses bad domainAllowList input with 400 naming the field, creating nothing", function()
    helper.run(function()
      local before = #ok(200, "GET", "/sandbox")
      local function bad(body, words)
        local st, b = call("POST", "/sandbox", body)
        assert.are.equal(400, st, require("dtlocal.http").json.encode(b))
        assert.matches("domainAllowList", b.message, 1, true)
        if words then assert.matches(words, b.message, 1, true) end
      end
      bad({ domainAllowList = "*example.com" })
      bad({ domainAllowList = "exa mple.com" })
      bad({ domainAllowList = "a.com,,b.com" })
      bad({ domainAllowList = 5 })
      local many = {}
      for i = 1, 65 do many[i] = "h" .. i .. ".example.com" end
      bad({ domainAllowList = table.concat(many, ",") }, "at most 64")
      local s = create()
      local st, b = call("POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "-x.com" })
      assert.are.equal(400, st)
      assert.matches("domainAllowList", b.message, 1, true)
      ok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return #ok(200, "GET", "/sandbox") == before end, 30, 0.1)
    end)
  end)

  it("leaves no set, chain or element behind: delete, kill -9 and restart", function()
    helper.run(function()
      local name = table_name()
      assert.is_truthy(name, srv.log())
      local function objects()
        local t = sh("nft list table inet " .. name)
        return t:match("dallow_%d+") or t:match("dom_%d+") or t:match('"dtl%d+" : jump') or ""
      end
      local s = create{ domainAllowList = "allowed.dtlspec" }
      put_scripts(s.id)
      assert.are.equal("rcode=0 " .. OUT_A, ask(s.id, "allowed.dtlspec", nameserver(s.id)),
        sh("nft list table inet " .. name) .. srv.log())
      assert.matches(OUT_A, sh("nft list table inet " .. name), 1, true)
      ok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return call("GET", "/sandbox/" .. s.id) == 404 end, 30, 0.1)
      assert.are.equal("", objects())
      -- killed, restarted on the same state: the sandbox comes back filtered
      local k = create{ domainAllowList = "allowed.dtlspec" }
      srv.crash()
      srv.restart()
      dtlocal.wait_started(srv, k.id, 60, 0.1)
      put_scripts(k.id)
      assert.are.equal("rcode=5", ask(k.id, "other.dtlspec", OUT_B))
      assert.are.equal("rcode=0 " .. OUT_A, ask(k.id, "allowed.dtlspec", OUT_B))
      assert.matches("^closed", probe(k.id, OUT_B, OUT_PORT))
      assert.matches("^open", probe(k.id, OUT_A, OUT_PORT))
      ok(200, "DELETE", "/sandbox/" .. k.id)
      helper.eventually(function() return call("GET", "/sandbox/" .. k.id) == 404 end, 30, 0.1)
      assert.are.equal("", objects())
    end)
  end)
end)
