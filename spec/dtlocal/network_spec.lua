-- Every sandbox its own network (dtlocal as root, doc/sandbox.md "Network"):
-- attacks from inside a sandbox on the host's loopback, dtlocal's API, the
-- host's other addresses, other sandboxes' ports and abstract sockets; the
-- sandbox's root owning its namespace (tun, addresses, routes); outbound
-- NAT, allow lists and networkBlockAll enforced where the sandbox's root
-- cannot lift them; linked sandboxes; previews (HTTP, WebSockets, to the
-- sandbox's address and through its daemon); nothing left behind; and an
-- unprivileged server (run as nobody) whose sandboxes pasta links.
--
-- "Outside" is a network namespace this spec makes, linked to the host by
-- a veth pair of its own (198.18.N.1 on the host, .2 and .3 inside, N from
-- our pid): the sandboxes' traffic never leaves this machine.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local outside_ns = require "support.outside"
local process = require "daytona.runtime.process"
local server = require "daytona.runtime.server"

local srv

local function ok(want, method, path, body) return dtlocal.expect(srv, want, method, path, body) end
local function call(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end
local function exec(id, command, timeout) return dtlocal.exec(srv, id, command, timeout or 60) end

local function create(body) return dtlocal.create_started(srv, body) end

local sh = outside_ns.sh

-- A probe a sandbox runs: connect to host:port (TCP, or an abstract unix
-- socket when host is "@name"), print "open <what the server said>" or
-- "closed <why>".
local PROBE = [[
import socket, sys
host, port = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0"
try:
    if host.startswith("@"):
        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect("\0" + host[1:])
    else:
        s = socket.create_connection((host, int(port)), timeout=2)
    s.settimeout(2)
    try: data = s.recv(200).decode(errors="replace").strip()
    except Exception: data = ""
    print("open", data)
except Exception as e:
    print("closed", type(e).__name__)
]]

-- A server that answers each connection with its peer's address.
local SERVE = [[
import socket, sys, threading
def serve(s):
    while True:
        c, a = s.accept()
        try: c.sendall(("peer=%s\n" % a[0] if a else "peer=unix\n").encode())
        except Exception: pass
        c.close()
host = sys.argv[1]
if host.startswith("@"):
    s = socket.socket(socket.AF_UNIX); s.bind("\0" + host[1:])
else:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
serve(s)
]]

local function put_scripts(id)
  exec(id, "cat > /tmp/probe.py <<'EOF'\n" .. PROBE .. "EOF\ncat > /tmp/serve.py <<'EOF'\n" .. SERVE .. "EOF")
end

local function probe(id, host, port)
  return (exec(id, ("python3 /tmp/probe.py %s %s"):format(host, port or "")):gsub("%s+$", ""))
end

-- Serve in sandbox id (in a session), until it prints "listening".
local function serve_in(id, name, host, port)
  local tb = srv.toolbox_url .. "/" .. id
  assert.are.equal(201, (call("POST", "/process/session", { sessionId = name }, { base = tb })))
  call("POST", "/process/session/" .. name .. "/exec",
    { command = ("python3 /tmp/serve.py %s %s"):format(host, port or ""), runAsync = true }, { base = tb })
  helper.eventually(function()
    if host:sub(1, 1) == "@" then return probe(id, host):match("^open") end
    return probe(id, "127.0.0.1", port):match("^open")
  end, 15, 0.1)
end

local function addr_of(id)
  local out = exec(id, "ip -4 -o addr show dev eth0; ip route show default")
  return out:match("inet (%d+%.%d+%.%d+%.%d+)/"), out:match("default via (%d+%.%d+%.%d+%.%d+)")
end

local function table_name()
  return srv.log():match("nftables table inet (dtlocal_%d+)")
end

describe("dtlocal sandbox networks", function()
  local N = core.util.getpid() % 250
  local ns, NS, OUT_GW, OUT_A, OUT_B
  local OUT_PORT = 18080
  local outside, host_lo, host_any

  setup(function()
    srv = dtlocal.start()
    ns = outside_ns.make("spec", "198.18")
    NS, OUT_GW, OUT_A, OUT_B = ns.ns, ns.gw, ns.a, ns.b
    -- the outside: a namespace with two addresses, a server answering with
    -- the address it sees
    local path = helper.tmpdir() .. "/serve.py"
    local f = assert(io.open(path, "w"))
    f:write(SERVE)
    f:close()
    helper.run(function()
      outside = outside_ns.start_listening(ns:argv{ "python3", path, "0.0.0.0", tostring(OUT_PORT) }, 30)
    end)
  end)

  teardown(function()
    if outside then outside:kill("KILL"); pcall(outside.wait, outside, 5); outside:close() end
    if ns then ns:remove() end
    if srv then srv.stop() end
    helper.cleanup()
  end)

  it("gives the sandbox's root its own namespace: tun, addresses, routes", function()
    helper.run(function()
      local s = create()
      local out, code = exec(s.id, table.concat({
        "sudo -n ip tuntap add dev tun7 mode tun",
        "sudo -n ip addr add 172.31.7.1/24 dev tun7",
        "sudo -n ip link set tun7 up",
        "sudo -n ip route add 172.31.8.0/24 dev tun7",
        "ip -br addr show tun7",
        "ip route show 172.31.8.0/24",
        "python3 -c 'import os; fd = os.open(\"/dev/net/tun\", os.O_RDWR); print(\"tun open\", fd > 0)'",
        "ip -br link | awk '{print $1}' | sort | tr '\\n' ' '",
      }, " && "))
      assert.are.equal(0, code, out)
      assert.matches("tun7%s+%S+%s+172%.31%.7%.1/24", out)
      assert.matches("172.31.8.0/24 dev tun7", out, 1, true)
      assert.matches("tun open True", out, 1, true)
      assert.matches("eth0@if%d+ lo tun7", out)
      -- its own address, from its uid slot, and a default route to the host end
      local addr, gw = addr_of(s.id)
      assert.matches("^10%.200%.", addr)
      assert.matches("^10%.200%.", gw)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("keeps the host's loopback, dtlocal's API, the host's addresses and other sandboxes out of reach", function()
    helper.run(function()
      local a, b = create(), create()
      put_scripts(a.id)
      put_scripts(b.id)
      -- host services: one on loopback, one on every address
      local lo <close> = server.listen{ host = "127.0.0.1", port = 0, handler = function(_, res) res:send(200, {}, "x") end }
      local any <close> = server.listen{ host = "0.0.0.0", port = 0, handler = function(_, res) res:send(200, {}, "x") end }
      local api_port = srv.base_url:match(":(%d+)$")
      local a_addr, a_gw = addr_of(a.id)
      local b_addr = addr_of(b.id)
      local host_eth = sh("ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | grep -v '^10\\.200\\.' | head -1")
        :gsub("%s+$", "")
      serve_in(b.id, "tcp", "0.0.0.0", 7001)
      serve_in(b.id, "abstract", "@dtlspec-secret")
      -- the controls: B reaches its own, the host reaches B's port
      assert.matches("^open peer=127.0.0.1", probe(b.id, "127.0.0.1", 7001))
      assert.matches("^open peer=unix", probe(b.id, "@dtlspec-secret"))
      assert.matches("^open peer=", sh(("python3 -c 'import socket;s=socket.create_connection((\"%s\",7001),2);"
        .. "print(\"open\", s.recv(99).decode())'"):format(b_addr)))
      -- GET /port lists a sandbox's own listeners, not another's nor the host's
      local function ports_of(id)
        local st, body = call("GET", "/port", nil, { base = srv.toolbox_url .. "/" .. id })
        assert.are.equal(200, st)
        local set = {}
        for _, p in ipairs(body.ports) do set[p] = true end
        return set
      end
      assert.is_true(ports_of(b.id)[7001])
      assert.is_nil(ports_of(a.id)[7001])
      assert.is_nil(ports_of(a.id)[tonumber(api_port)])
      -- the attacks from A
      for _, t in ipairs({
        { "127.0.0.1", api_port, "dtlocal's API on the host's loopback" },
        { "127.0.0.1", lo.port, "a loopback service of the host" },
        { a_gw, any.port, "the host at A's gateway" },
        { a_gw, api_port, "dtlocal's port at A's gateway" },
        { host_eth ~= "" and host_eth or a_gw, any.port, "the host's own address " .. host_eth },
        { b_addr, 7001, "B's port at B's address" },
        { b_addr:gsub("%.2$", ".1"), any.port, "the host at B's gateway" },
        { "127.0.0.1", 7001, "B's port on A's loopback" },
        { "@dtlspec-secret", nil, "B's abstract socket" },
      }) do
        assert.matches("^closed", probe(a.id, t[1], t[2]), t[3])
      end
      -- sudo inside changes nothing of that: the filter is in the host's namespace
      exec(a.id, "sudo -n nft flush ruleset 2>&1; sudo -n iptables -F 2>&1; sudo -n iptables -P OUTPUT ACCEPT 2>&1; true")
      assert.matches("^closed", probe(a.id, b_addr, 7001))
      assert.matches("^closed", probe(a.id, a_gw, any.port))
      -- nor does taking B's address as its own (spoofing)
      exec(a.id, ("sudo -n ip addr add %s/32 dev eth0 2>&1; true"):format(b_addr))
      assert.are.equal("closed\n", exec(a.id, ("python3 -c 'import socket;s=socket.socket();s.bind((\"%s\",0));"
        .. "s.settimeout(2);s.connect((\"%s\",%d));print(\"open\")' 2>/dev/null || echo closed"):format(b_addr, OUT_A, OUT_PORT)))
      ok(200, "DELETE", "/sandbox/" .. a.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
      assert.is_truthy(a_addr)
    end)
  end)

  it("tells a host whose nameservers are all on loopback (which sandboxes cannot reach)", function()
    local network = require "dtlocal.control.network"
    local path = helper.tmpdir() .. "/resolv.conf"
    local function check(text)
      local f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
      return network.loopback_resolvers(path)
    end
    assert.are.same({ "127.0.0.53" }, check("nameserver 127.0.0.53\noptions edns0 trust-ad\n"))
    assert.are.same({ "127.0.0.1", "::1" }, check("search lan\n nameserver 127.0.0.1\nnameserver ::1\n"))
    assert.is_nil(check("nameserver 127.0.0.53\nnameserver 10.255.255.53\n"))
    assert.is_nil(check("nameserver 10.255.255.53\n"))
    assert.is_nil(check("# none\n"))
  end)

  it("reaches a resolver on the host's loopback through the sandbox's gateway, and nothing else there", function()
    helper.run(function()
      -- a resolver on 127.0.0.N of the host that answers every A query with one
      -- address; a server told (DTLOCAL_RESOLV_CONF) that it is the host's
      local lo_ns = ("127.0.%d.%d"):format(N, 53)
      local dir = helper.tmpdir()
      local conf = dir .. "/resolv.conf"
      local f = assert(io.open(conf, "w"))
      f:write("nameserver " .. lo_ns .. "\n")
      f:close()
      f = assert(io.open(dir .. "/dns.py", "w"))
      f:write([=[
import socket, struct, sys
ip = bytes(int(x) for x in sys.argv[2].split("."))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    q, a = s.recvfrom(512)
    qid = struct.unpack(">H", q[:2])[0]
    i = 12
    while q[i] != 0: i += q[i] + 1
    qtype = struct.unpack(">H", q[i+1:i+3])[0]
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + ip if qtype == 1 else b""
    s.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 1 if ans else 0, 0, 0) + q[12:i+5] + ans, a)
]=])
      f:close()
      local dns <close> = assert(process.spawn({ "python3", dir .. "/dns.py", lo_ns, OUT_A },
        { stdin = "null", stdout = "pipe", stderr = "stdout" }))
      for l in dns:lines("stdout", 10) do if l:find("listening", 1, true) then break end end
      local env = core.util.environ()
      env.DTLOCAL_RESOLV_CONF = conf
      local token = "spec-" .. core.util.hex(core.util.random_bytes(12))
      local p <close> = assert(process.spawn({ dtlocal.binary(), "serve", "--port", "0", "--state", dir .. "/state",
        "--warm", "0", "--token", token }, { stdin = "null", stdout = "pipe", stderr = "stdout", env = env }))
      local api, line
      for l in p:lines("stdout", 20) do
        line = line or l:match("dtlocal: the host's nameserver is on its loopback .*$")
        api = l:match("^dtlocal: API (%S+)")
        if api then break end
      end
      assert(api, "the server did not start")
      local drain = require("daytona.runtime.scheduler").spawn(function() for _ in p:lines("stdout") do end end)
      drain.observed = true
      assert.matches(lo_ns, line or "", 1, true)
      local d = { api_url = api, token = token, toolbox_url = api:gsub("/api$", "/toolbox") }
      local s = dtlocal.create_started(d)
      -- as the host's file would be seen through the overlay, then a start
      dtlocal.exec(d, s.id, "sudo -n sh -c 'echo nameserver " .. lo_ns .. " > /etc/resolv.conf'")
      dtlocal.expect(d, 200, "POST", "/sandbox/" .. s.id .. "/stop")
      dtlocal.expect(d, 200, "POST", "/sandbox/" .. s.id .. "/start")
      dtlocal.wait_started(d, s.id)
      local out = dtlocal.exec(d, s.id, "cat /etc/resolv.conf; getent hosts anything.dtlspec")
      assert.matches("^nameserver 10%.200%.%d+%.%d+\n", out)
      assert.matches(OUT_A .. "%s+anything%.dtlspec", out)
      -- its root sends to the host's loopback over its link (its own loopback
      -- gone, route_localnet on, 127/8 routed to its gateway): the host end
      -- accepts 127/8 destinations now, but the input chain lets in only
      -- what was DNATed to the resolver
      dtlocal.exec(d, s.id, "cat > /tmp/probe.py <<'EOF'\n" .. PROBE .. "EOF")
      local gw = out:match("^nameserver (%S+)")
      dtlocal.exec(d, s.id, "sudo -n ip addr flush dev lo; "
        .. "sudo -n sysctl -qw net.ipv4.conf.eth0.route_localnet=1 net.ipv4.conf.all.route_localnet=1; "
        .. "sudo -n ip route add 127.0.0.0/8 via " .. gw .. " dev eth0 onlink; true")
      assert.matches("^closed", dtlocal.exec(d, s.id, "python3 /tmp/probe.py 127.0.0.1 " .. api:match(":(%d+)/api$")))
      assert.matches("^closed", dtlocal.exec(d, s.id, "python3 /tmp/probe.py 127.0.0.1 " .. srv.base_url:match(":(%d+)$")))
      dtlocal.expect(d, 200, "DELETE", "/sandbox/" .. s.id)
      p:kill("TERM")
      p:wait(20)
      dns:kill("KILL")
    end)
  end)

  it("gives outbound access through NAT, and resolves names", function()
    helper.run(function()
      local s = create()
      put_scripts(s.id)
      -- the outside sees the host's address on its link, not the sandbox's
      assert.are.equal("open peer=" .. OUT_GW, probe(s.id, OUT_A, OUT_PORT))
      -- the sandbox's resolver is the host's (reached through NAT): a name
      -- of the host's own files resolves inside as well
      local out, code = exec(s.id, "cat /etc/resolv.conf; getent hosts localhost")
      assert.are.equal(0, code, out)
      assert.matches("nameserver", out)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("enforces an allow list, on create and on a running sandbox, that sudo inside cannot lift", function()
    helper.run(function()
      local s = create{ networkAllowList = OUT_A .. "/32" }
      assert.are.equal(OUT_A .. "/32", ok(200, "GET", "/sandbox/" .. s.id).networkAllowList)
      put_scripts(s.id)
      assert.matches("^open", probe(s.id, OUT_A, OUT_PORT))
      assert.matches("^closed", probe(s.id, OUT_B, OUT_PORT))
      exec(s.id, "sudo -n nft flush ruleset 2>&1; sudo -n iptables -F 2>&1; true")
      assert.matches("^closed", probe(s.id, OUT_B, OUT_PORT))
      -- changed while it runs
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = OUT_B .. "/32" })
      assert.matches("^open", probe(s.id, OUT_B, OUT_PORT))
      assert.matches("^closed", probe(s.id, OUT_A, OUT_PORT))
      -- blocked: nothing goes out, yet its preview still works
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkBlockAll = true })
      assert.matches("^closed", probe(s.id, OUT_B, OUT_PORT))
      assert.matches("^closed", probe(s.id, OUT_A, OUT_PORT))
      local tb = srv.toolbox_url .. "/" .. s.id
      exec(s.id, "mkdir -p /tmp/www && echo preview-ok > /tmp/www/i.txt")
      call("POST", "/process/session", { sessionId = "web" }, { base = tb })
      call("POST", "/process/session/web/exec",
        { command = "python3 -m http.server 7002 --bind 0.0.0.0 --directory /tmp/www", runAsync = true }, { base = tb })
      local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/7002/preview-url")
      local http = require "daytona.runtime.http"
      assert.are.equal("preview-ok\n", helper.eventually(function()
        local r = http.request{ url = p.url .. "/i.txt", headers = { ["X-Daytona-Preview-Token"] = p.token }, timeout = 10 }
        return r.status == 200 and r.body
      end, 15, 0.1))
      -- a server on the sandbox's loopback only: reached through its daemon
      call("POST", "/process/session", { sessionId = "lo" }, { base = tb })
      call("POST", "/process/session/lo/exec",
        { command = "python3 -m http.server 7005 --bind 127.0.0.1 --directory /tmp/www", runAsync = true }, { base = tb })
      local pl = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/7005/preview-url")
      assert.are.equal("preview-ok\n", helper.eventually(function()
        local r = http.request{ url = pl.url .. "/i.txt?x=1", headers = { ["X-Daytona-Preview-Token"] = pl.token }, timeout = 10 }
        return r.status == 200 and r.body
      end, 15, 0.1))
      -- the daemon's route is dtlocal's alone: a client's request for it is a plain 404
      local st = call("GET", "/dtlocal/port/7005/i.txt", nil,
        { base = srv.toolbox_url .. "/" .. s.id, headers = { ["X-Dtlocal-Internal"] = "preview" } })
      assert.are.equal(404, st)
      -- unblocked: everything again
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkBlockAll = false })
      assert.matches("^open", probe(s.id, OUT_A, OUT_PORT))
      assert.matches("^open", probe(s.id, OUT_B, OUT_PORT))
      -- a blocked create
      local b = create{ networkBlockAll = true }
      put_scripts(b.id)
      assert.matches("^closed", probe(b.id, OUT_A, OUT_PORT))
      ok(200, "DELETE", "/sandbox/" .. s.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
    end)
  end)

  it("refuses bad network input with 400 naming the field, creating nothing", function()
    helper.run(function()
      local before = #ok(200, "GET", "/sandbox")
      local function bad(body, field, words)
        local st, b = call("POST", "/sandbox", body)
        assert.are.equal(400, st, require("dtlocal.http").json.encode(b))
        assert.matches(field, b.message, 1, true)
        if words then assert.matches(words, b.message, 1, true) end
      end
      bad({ networkAllowList = "10.0.0.0/33" }, "networkAllowList")
      bad({ networkAllowList = "10.0.0/8" }, "networkAllowList")
      bad({ networkAllowList = "1.2.3.4/32,,5.6.7.8/32" }, "networkAllowList")
      local many = {}
      for i = 1, 11 do many[i] = ("10.%d.0.0/16"):format(i) end
      bad({ networkAllowList = table.concat(many, ",") }, "networkAllowList", "at most 10")
      bad({ domainAllowList = "*example.com" }, "domainAllowList")
      bad({ linkedSandbox = "no-such-sandbox", autoDeleteInterval = 0 }, "linkedSandbox", "not found")
      local p = create{ name = "net-parent-" .. core.util.getpid() }
      bad({ linkedSandbox = p.id }, "autoDeleteInterval")
      bad({ linkedSandbox = p.id, autoDeleteInterval = 5 }, "autoDeleteInterval")
      local c = create{ linkedSandbox = p.id, autoDeleteInterval = 0 }
      bad({ linkedSandbox = c.id, autoDeleteInterval = 0 }, "linkedSandbox", "chained links are not allowed")
      ok(200, "POST", "/sandbox/" .. p.id .. "/stop")
      bad({ linkedSandbox = p.id, autoDeleteInterval = 0 }, "linkedSandbox", "stopped")
      local st = call("POST", "/sandbox/" .. p.id .. "/network-settings", { networkAllowList = "300.1.1.1/8" })
      assert.are.equal(400, st)
      ok(200, "DELETE", "/sandbox/" .. p.id)
      helper.eventually(function() return #ok(200, "GET", "/sandbox") == before end, 30, 0.1)
    end)
  end)

  it("links a parent and its children both ways, by name and id, and deletes them with it", function()
    helper.run(function()
      local pname = "net-parent-" .. core.util.getpid()
      local p = create{ name = pname }
      local c = create{ name = "net-child-" .. core.util.getpid(), linkedSandbox = pname, autoDeleteInterval = 0 }
      local u = create()
      assert.are.equal(p.id, ok(200, "GET", "/sandbox/" .. c.id).linkedSandboxId)
      for _, id in ipairs({ p.id, c.id, u.id }) do put_scripts(id) end
      serve_in(p.id, "tcp", "0.0.0.0", 7003)
      serve_in(c.id, "tcp", "0.0.0.0", 7004)
      local p_addr = addr_of(p.id)
      -- child -> parent by name and id, parent -> child by id
      assert.matches("^open", probe(c.id, pname, 7003))
      assert.matches("^open", probe(c.id, p.id, 7003))
      assert.matches("^open", probe(p.id, c.id, 7004))
      assert.matches("^open", probe(p.id, "net-child-" .. core.util.getpid(), 7004))
      -- an unlinked sandbox neither resolves nor reaches the parent
      assert.matches("^closed", probe(u.id, pname, 7003))
      assert.matches("^closed", probe(u.id, p_addr, 7003))
      -- deleting the parent deletes the child
      ok(200, "DELETE", "/sandbox/" .. p.id)
      helper.eventually(function() return call("GET", "/sandbox/" .. c.id) == 404 end, 30, 0.1)
      -- a stopped child is deleted (it is ephemeral)
      local p2 = create()
      local c2 = create{ linkedSandbox = p2.id, autoDeleteInterval = 0 }
      ok(200, "POST", "/sandbox/" .. c2.id .. "/stop")
      helper.eventually(function() return call("GET", "/sandbox/" .. c2.id) == 404 end, 30, 0.1)
      ok(200, "DELETE", "/sandbox/" .. p2.id)
      ok(200, "DELETE", "/sandbox/" .. u.id)
    end)
  end)

  it("relays WebSocket previews, to the sandbox's address and through its daemon for a loopback server", function()
    helper.run(function()
      local websocket = require "daytona.runtime.websocket"
      local s = create()
      local tb = srv.toolbox_url .. "/" .. s.id
      -- WebSocket servers inside: toolbox daemons of the installation (bound
      -- in every sandbox), one on all addresses, one on loopback only
      local bin = dtlocal.binary()
      for port, host in pairs({ [7008] = "0.0.0.0", [7009] = "127.0.0.1" }) do
        call("POST", "/process/session", { sessionId = "ws" .. port }, { base = tb })
        call("POST", "/process/session/ws" .. port .. "/exec",
          { command = ("%s toolbox --listen %s:%d"):format(bin, host, port), runAsync = true }, { base = tb })
      end
      for _, port in ipairs({ 7008, 7009 }) do
        local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/" .. port .. "/preview-url")
        local ws
        helper.eventually(function()
          ws = websocket.connect(p.url:gsub("^http", "ws") .. "/process/pty/create-connect?id=p" .. port .. "&cols=80&rows=24",
            { headers = { ["X-Daytona-Preview-Token"] = p.token } })
          return ws
        end, 20, 0.1)
        local first = ws:receive(10)
        assert.matches("connected", first)
        ws:send("echo ws-$((" .. port .. "+1))\n", "binary")
        local seen = ""
        while not seen:find("ws-" .. (port + 1), 1, true) do
          local data = ws:receive(10)
          assert.is_not_nil(data, "port " .. port .. ": closed early: " .. seen)
          seen = seen .. data
        end
        ws:close()
      end
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("unprivileged: each sandbox its own namespace linked by pasta, which goes with it, also after kill -9 + restart", function()
    if core.util.getuid() ~= 0 or not os.execute("command -v setpriv >/dev/null 2>&1")
      or not os.execute("command -v pasta >/dev/null 2>&1") then
      pending("needs root (to run a server as nobody), setpriv and pasta")
      return
    end
    helper.run(function()
      local dir = helper.tmpdir()
      assert(core.util.chmod(dir, 457))                 -- 0711: nobody passes through
      local state = dir .. "/nobody"
      assert(core.util.mkdir(state, 448))
      assert(core.util.chown(state, 65534, 65534))
      local token = "spec-" .. core.util.hex(core.util.random_bytes(12))
      local p, api, netline
      local function serve()
        p = process.spawn({ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
          dtlocal.binary(), "serve", "--port", "0", "--state", state .. "/state", "--warm", "0", "--token", token },
          { stdin = "null", stdout = "pipe", stderr = "stdout", env = { HOME = state, XDG_STATE_HOME = state,
            XDG_RUNTIME_DIR = state, PATH = os.getenv("PATH") } })
        api, netline = nil, nil
        for l in p:lines("stdout", 20) do
          netline = netline or l:match("dtlocal: sandbox networks: (.*)$")
          api = l:match("^dtlocal: API (%S+)")
          if api then break end
        end
        assert(api, "the unprivileged server did not start")
        local proc = p
        local drain = require("daytona.runtime.scheduler").spawn(function() for _ in proc:lines("stdout") do end end)
        drain.observed = true
      end
      serve()
      assert.matches("linked to the outside by .*pasta", netline)
      local u = { api_url = api, token = token, toolbox_url = api:gsub("/api$", "/toolbox") }
      local function uok(want, method, path, body) return dtlocal.expect(u, want, method, path, body) end
      local function uexec(id, cmd) return dtlocal.exec(u, id, cmd, 60) end
      -- no subordinate ids for nobody here: its sandboxes run as root
      local s = dtlocal.create_started(u, { user = "root" })
      uexec(s.id, "cat > /tmp/probe.py <<'EOF'\n" .. PROBE .. "EOF")
      local out = uexec(s.id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '")
      assert.matches("eth0 lo", out)
      -- out through pasta: the outside sees the host's address on its link
      assert.are.equal("open peer=" .. OUT_GW, (uexec(s.id, ("python3 /tmp/probe.py %s %d"):format(OUT_A, OUT_PORT)):gsub("%s+$", "")))
      -- the host's loopback (dtlocal's API, the root server's) is not the sandbox's
      local api_port = api:match(":(%d+)/api$")
      assert.matches("^closed", uexec(s.id, "python3 /tmp/probe.py 127.0.0.1 " .. api_port))
      assert.matches("^closed", uexec(s.id, "python3 /tmp/probe.py 127.0.0.1 " .. srv.base_url:match(":(%d+)$")))
      -- an allow list cannot be enforced here: 400 saying so
      local st, b = dtlocal.request(u, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = "10.0.0.0/8" })
      assert.are.equal(400, st)
      assert.matches("networkAllowList: dtlocal cannot enforce", b.message, 1, true)
      -- nor a domain allow list (its filter needs the host's firewall), at create or after
      st, b = dtlocal.request(u, "POST", "/sandbox/" .. s.id .. "/network-settings", { domainAllowList = "example.com" })
      assert.are.equal(400, st)
      assert.matches("^domainAllowList: .*only when it runs as root", b.message)
      st, b = dtlocal.request(u, "POST", "/sandbox", { domainAllowList = "example.com" })
      assert.are.equal(400, st)
      assert.matches("^domainAllowList: ", b.message)
      -- a preview reaches its server through its daemon
      local tb = u.toolbox_url .. "/" .. s.id
      uexec(s.id, "mkdir -p /tmp/www && echo unpriv-ok > /tmp/www/i.txt")
      dtlocal.request(u, "POST", "/process/session", { sessionId = "web" }, { base = tb })
      dtlocal.request(u, "POST", "/process/session/web/exec",
        { command = "python3 -m http.server 7006 --bind 0.0.0.0 --directory /tmp/www", runAsync = true }, { base = tb })
      local pv = uok(200, "GET", "/sandbox/" .. s.id .. "/ports/7006/preview-url")
      local http = require "daytona.runtime.http"
      assert.are.equal("unpriv-ok\n", helper.eventually(function()
        local r = http.request{ url = pv.url .. "/i.txt", headers = { ["X-Daytona-Preview-Token"] = pv.token }, timeout = 10 }
        return r.status == 200 and r.body
      end, 15, 0.1))
      -- pasta runs as the server's user while the sandbox does
      local function pastas()
        return (sh("pgrep -u 65534 -f -- \"--no-map-gw .* " .. "--pid\" | sort | tr '\\n' ' '"))
      end
      local first = pastas()
      assert.matches("^%d+ $", first)
      -- the server killed, started again: the old pasta is ended with the old
      -- sandbox, the sandbox started again with a pasta of its own
      p:kill("KILL")
      p:wait(10)
      p:close()
      serve()
      u.api_url, u.toolbox_url = api, api:gsub("/api$", "/toolbox")
      dtlocal.wait_started(u, s.id)
      local second = pastas()
      assert.matches("^%d+ $", second)
      assert.are_not.equal(first, second)
      assert.are.equal("open peer=" .. OUT_GW, (uexec(s.id, ("python3 /tmp/probe.py %s %d"):format(OUT_A, OUT_PORT)):gsub("%s+$", "")))
      -- and goes with it
      uok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return pastas() == "" end, 15, 0.05)
      p:kill("TERM")
      p:wait(20)
      p:close()
    end)
  end)

  it("removes the table of a server killed with SIGKILL whose state went away, at any server's start", function()
    helper.run(function()
      local other = dtlocal.start()
      local name = other.log():match("nftables table inet (dtlocal_%d+)")
      assert.is_truthy(name, other.log())
      assert.is_truthy(sh("nft list tables inet"):find(name .. "\n", 1, true))
      other.crash()
      -- its warm sandboxes outlive it: ended here (a restart on the same
      -- state would have), then its state dir goes; its table stays behind
      local pat = "[d]tlua-sandbox run --root-dir " .. other.state_dir .. "/"   -- [d]: not the pgrep's shell
      for pid in sh("pgrep -f -- " .. ("%q"):format(pat)):gmatch("%d+") do sh("kill -9 " .. pid) end
      helper.eventually(function() return select(2, sh("pgrep -f -- " .. ("%q"):format(pat))) ~= 0 end, 10, 0.05)
      -- (their namespaces go a moment later: until then files may still appear)
      helper.eventually(function() return select(2, sh("rm -rf " .. ("%q"):format(other.state_dir))) == 0 end, 10, 0.1)
      other.stop()
      assert.is_truthy(sh("nft list tables inet"):find(name .. "\n", 1, true))
      local third = dtlocal.start()
      local ok_, err = pcall(function()
        assert.is_truthy(third.log():find("removed nftables table " .. name, 1, true), third.log())
        assert.is_nil(sh("nft list tables inet"):find(name .. "\n", 1, true))
      end)
      third.stop()
      if not ok_ then error(err, 0) end
    end)
  end)

  it("leaves no interface, set element, table or namespace behind: delete, kill -9 and restart, stop", function()
    helper.run(function()
      local name = table_name()
      assert.is_truthy(name, srv.log())
      local group = tonumber(sh("nft -a list chain inet " .. name .. " input"):match("iifgroup (%d+)"))
      assert.is_truthy(group)
      local function links_of_group()
        return (sh("ip -o link show group " .. group .. " | awk -F': ' '{print $2}'"):gsub("%s+$", ""))
      end
      local s = create{ networkAllowList = OUT_A .. "/32" }
      local _, gw = addr_of(s.id)
      assert.matches("dtl%d+", links_of_group())
      assert.matches(OUT_A, sh("nft list set inet " .. name .. " allow"), 1, true)
      ok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return call("GET", "/sandbox/" .. s.id) == 404 end, 30, 0.1)
      helper.eventually(function() return sh("ip -4 -o addr show to " .. gw .. "/32") == "" end, 10, 0.05)
      local set = sh("nft list set inet " .. name .. " allow")
      assert.is_nil(set:find(OUT_A, 1, true), set .. srv.log())
      set = sh("nft list set inet " .. name .. " listed")
      assert.is_nil(set:find("\"dtl", 1, true), set)
      -- killed without cleaning up, then started again on the same state
      local k = create{ networkBlockAll = true }
      local _, kgw = addr_of(k.id)
      srv.crash()
      srv.restart()
      dtlocal.wait_started(srv, k.id, 60, 0.1)
      local tables = sh("nft list tables inet")
      local _, count = tables:gsub(name .. "\n", "")
      assert.are.equal(1, count, tables)
      -- the restarted sandbox has its link again, once (the old one went with
      -- its namespace when the restarted server ended the old launcher)
      assert.are.equal(1, select(2, sh("ip -4 -o addr show to " .. kgw .. "/32"):gsub("\n", "")))
      assert.matches("^dtl", sh("nft list set inet " .. name .. " blocked"):match('"(dtl%d+)"') or "", 1)
      ok(200, "DELETE", "/sandbox/" .. k.id)
      helper.eventually(function() return sh("ip -4 -o addr show to " .. kgw .. "/32") == "" end, 10, 0.05)
      -- a server that stops removes its table; its sandboxes' links are gone
      local t = create()
      put_scripts(t.id)
      srv.stop()
      srv = nil
      helper.eventually(function() return links_of_group() == "" end, 10, 0.05)
      assert.is_nil(sh("nft list tables inet"):find(name .. "\n", 1, true))
    end)
  end)
end)
