--- dtlocal.control.network: every sandbox its own network (as root).
--
-- Each sandbox gets a network namespace of its own, owned by its user
-- namespace (its root has CAP_NET_ADMIN there: tun devices, addresses,
-- routes, its own firewall), linked to the host by a veth pair that the
-- launcher makes over rtnetlink (`--net veth:...`, csrc/sandbox_net.c).
-- The addresses come from the sandbox's uid slot (dtlocal.control.uids,
-- unique across every dtlocal on the machine): slot S is the routed /30
-- 10.200.0.0/16 + 4*S, host end `dtl<S>` with .1, the sandbox's eth0 .2.
-- No bridge: sandboxes share no link, so no ARP or broadcast between them.
--
-- What a sandbox may reach is decided in the host's namespace, out of its
-- reach (its root can flush only its own namespace's rules), by one
-- nftables table per server, `inet dtlocal_<N>`, N the uid slot the server
-- claims for itself (owner: `<state dir>/network`), which is also the
-- interface group of its host ends, so that its rules match its own
-- sandboxes only and several servers run side by side. The rules are
-- static; a plain create runs no `nft`. Sets hold the exceptions, keyed by
-- interface name or address pair, and can be filled before the interface
-- exists:
--   input     from a sandbox to the host itself (the gateway, every other
--             host address; the host's loopback is unreachable anyway):
--             dropped, but replies to the host's own connections
--             (previews) and addresses in the sandbox's allow list
--   forward   sandbox -> sandbox: dropped unless the pair is linked
--             (`links`); into a sandbox from anywhere else: replies only;
--             out of a `blocked` sandbox: dropped; out of a `listed` one:
--             only to its allow list (`allow`, interface . CIDR); IPv6: none
--   a sandbox with a domain allow list (`domained`): its UDP DNS DNATed to
--             the DNS filter (dtlocal.control.dns) on 127.0.0.1, whatever
--             the resolver; out of it only to the addresses the filter
--             answered (its own timeout set `dallow_<slot>`, through the
--             map `dom` and chain `dom_<slot>`) or its allow list
--   prerouting  anti-spoofing: a source address not routed back through
--             the interface it came in by is dropped (fib)
--   postrouting masquerade what leaves for elsewhere
-- The host must forward IPv4 (net.ipv4.ip_forward = 1): the server turns
-- it on at start and says so.
--
--   local net = network.new{ uids =, state_dir =, log = }   -- raises
--   net:launch_arg(slot) -> "veth:dtl12:10.200.0.49/30:10.200.0.50:G"
--   network.addrs(slot) -> { ifname =, host =, sandbox =, plen = }
--   net:apply(rec, parent_rec)  -- blocked / allow list / domain list / link of rec
--   net:forget(rec)             -- its set elements, at delete
--   net:close()                 -- the table, at shutdown
--   network.find_pasta() -> path | nil         (unprivileged servers)
--   network.loopback_resolvers() -> { "127.0.0.53" } | nil   (the start line's warning)
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local fs = require "dtlocal.fs"
local json = require("dtlocal.http").json

local format, concat = string.format, table.concat
local ipairs, tostring, tonumber, error, io, os, setmetatable =
  ipairs, tostring, tonumber, error, io, os, setmetatable

local M = {}

M.PREFIX = "dtl"
M.NET = 0x0AC80000         -- 10.200.0.0/16: 16384 /30s, one per uid slot
M.PLEN = 30
M.NFT = "nft"

local function ip(n)
  return format("%d.%d.%d.%d", (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
end

--- The link of uid slot `slot`: host end's name and address, the sandbox's.
function M.addrs(slot)
  local base = M.NET + 4 * slot
  return { ifname = M.PREFIX .. slot, host = ip(base + 1), sandbox = ip(base + 2), plen = M.PLEN }
end

--- The uid slot whose sandbox has address `addr` (its eth0), or nil.
function M.slot_of(addr)
  local a, b, c, d = addr:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local n = (tonumber(a) << 24) | (tonumber(b) << 16) | (tonumber(c) << 8) | tonumber(d)
  if n & 3 ~= 2 or n < M.NET or n >= M.NET + 0x10000 then return nil end
  return (n - M.NET) // 4
end

-- A CIDR as nftables takes it: host bits cleared ("10.1.2.3/8" -> "10.0.0.0/8").
local function network_of(cidr)
  local a, b, c, d, len = cidr:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)/(%d+)$")
  local n = (tonumber(a) << 24) | (tonumber(b) << 16) | (tonumber(c) << 8) | tonumber(d)
  len = tonumber(len)
  local mask = len == 0 and 0 or ((0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF)
  return ip(n & mask) .. "/" .. len
end
M.network_of = network_of

local function nft(script)
  local r, msg, code = process.run({ M.NFT, "-f", "-" }, { input = script, timeout = 20, stderr = "stdout" })
  if not r and code == "ENOENT" then
    return nil, "nft is missing: install nftables (make deps); dtlocal as root filters its sandboxes' networks with it"
  end
  if not r then return nil, msg end
  if r.exit_code ~= 0 then return nil, (r.stdout or ""):gsub("%s+$", "") end
  return true
end
M.nft = nft

local function table_name(n) return "dtlocal_" .. n end

-- The nat chain ahead of routing: a sandbox with a domain allow list has
-- every UDP datagram to port 53 DNATed to the DNS filter (dtlocal.control.dns,
-- on 127.0.0.1:fport), whatever resolver it names. With a host resolver on
-- loopback (dns: its address), another sandbox's DNS to its gateway is
-- DNATed to it. Both reach 127.0.0.1 because the host end accepts 127/8
-- destinations (route_localnet, set per link: Net:link_up), and the input
-- chain lets those DNATed packets in, and nothing else addressed to loopback.
local function dns_chain(group, dns, fport)
  local lines = { format("    iifgroup %d iifname @domained udp dport 53 dnat ip to 127.0.0.1:%d", group, fport) }
  if dns then
    lines[#lines + 1] = format("    iifgroup %d fib daddr type local udp dport 53 dnat ip to %s", group, dns)
    lines[#lines + 1] = format("    iifgroup %d fib daddr type local tcp dport 53 dnat ip to %s", group, dns)
  end
  return format([[
  chain dns {
    type nat hook prerouting priority -100; policy accept;
%s
  }
]], concat(lines, "\n"))
end

-- A sandbox with a domain allow list: the domained/dom elements key its
-- interface; its reachable addresses are the set dallow_<slot> (with
-- timeouts, filled by the DNS filter), looked up from the chain dom_<slot>
-- that the map `dom` jumps to. Made at apply, deleted with everything in
-- it when the list goes (nothing of one sandbox is left to the next
-- sandbox of the same slot).
local function domain_objs(tbl, slot, ifname, add)
  if add then
    return format("add set inet %s dallow_%d { type ipv4_addr; size %d; flags timeout; }\n", tbl, slot,
        require("dtlocal.control.dns").MAX_ADDRS)
      .. format("add chain inet %s dom_%d\n", tbl, slot)
      .. format("flush chain inet %s dom_%d\n", tbl, slot)
      .. format("add rule inet %s dom_%d ip daddr @dallow_%d accept\n", tbl, slot, slot)
      .. format('add element inet %s dom { "%s" : jump dom_%d }\n', tbl, ifname, slot)
      .. format('add element inet %s domained { "%s" }\n', tbl, ifname)
  end
  return format('delete element inet %s dom { "%s" }\n', tbl, ifname)
    .. format('delete element inet %s domained { "%s" }\n', tbl, ifname)
    .. format("flush chain inet %s dom_%d\n", tbl, slot)
    .. format("delete chain inet %s dom_%d\n", tbl, slot)
    .. format("delete set inet %s dallow_%d\n", tbl, slot)
end

local function ruleset(name, group, dns, fport)
  local g = group
  return format([[
table inet %s {
  set links { type ipv4_addr . ipv4_addr; }
  set blocked { type ifname; }
  set listed { type ifname; }
  set allow { type ifname . ipv4_addr; flags interval; }
  set domained { type ifname; }
  map dom { type ifname : verdict; }
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    iifgroup %d fib saddr . iif oif missing drop
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifgroup %d ct state established,related accept
    iifgroup %d iifname @blocked drop
    iifgroup %d iifname @domained ip daddr 127.0.0.1 udp dport %d ct status dnat accept
    iifgroup %d iifname . ip daddr @allow accept
    iifgroup %d iifname vmap @dom
    iifgroup %d iifname @domained meta l4proto tcp reject with tcp reset
    iifgroup %d iifname @domained drop
    iifgroup %d ct status dnat th dport 53 accept
    iifgroup %d drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifgroup %d oifname "%s*" ip saddr . ip daddr @links accept
    iifgroup %d oifname "%s*" drop
    oifgroup %d ct state established,related accept
    oifgroup %d drop
    iifgroup %d iifname @blocked drop
    iifgroup %d meta nfproto ipv6 drop
    iifgroup %d iifname . ip daddr @allow accept
    iifgroup %d iifname @domained ct state established accept
    iifgroup %d iifname vmap @dom
    iifgroup %d iifname @listed drop
    iifgroup %d iifname @domained drop
  }
  chain post {
    type nat hook postrouting priority 100; policy accept;
    ip saddr 10.200.0.0/16 oifname != "%s*" masquerade
  }
%s}
]], name, g, g, g, g, fport, g, g, g, g, g, g,
    g, M.PREFIX, g, M.PREFIX, g, g, g, g, g, g, g, g, g,
    M.PREFIX, dns_chain(g, dns, fport))
end

local Net = {}
Net.__index = Net
Net.__name = "dtlocal.Network"

-- The owner file of the server's own slot: "<pid> <start time>\n", so that
-- a sweep can tell a live server's table from a dead one's.
local function write_owner(path)
  local pid = core.util.getpid()
  local start = process.start_time(pid)
  local ok, msg = require("dtlocal.control.store").write_atomic(path, format("%d %s\n", pid, tostring(start)))
  if not ok then error("cannot write " .. path .. ": " .. tostring(msg), 0) end
end

local function owner_alive(path)
  local s = fs.read_file(path)
  local pid, start = (s or ""):match("^(%d+) (%d+)")
  if not pid then return false end
  return process.start_time(pid) == tonumber(start)
end

--- Tables `dtlocal_<N>` whose server is gone (its slot's owner file is
-- missing or names a dead process): deleted, the slot released when its
-- owner file is gone. Returns the names removed.
function M.sweep(uids, log, keep)
  local r = process.run({ M.NFT, "list", "tables", "inet" }, { timeout = 20 })
  local removed = {}
  if not r or r.exit_code ~= 0 then return removed end
  for n in (r.stdout or ""):gmatch("table inet dtlocal_(%d+)") do
    n = tonumber(n)
    if n ~= keep then
      local owner = fs.read_file(uids:slot_dir(n) .. "/owner")
      if not owner or not owner_alive(owner) then
        if nft(format("delete table inet %s\n", table_name(n))) then
          removed[#removed + 1] = table_name(n)
          if owner and not core.util.stat(owner) then uids:release(n, owner) end
        end
      end
    end
  end
  if log then for _, t in ipairs(removed) do log("removed nftables table %s, left by a server that is gone", t) end end
  return removed
end

--- The network of a server running as root. opts: uids (the uid pool),
-- state_dir, log. Claims the server's slot (kept across restarts of the
-- same state dir), replaces its table, turns IPv4 forwarding on.
function M.new(opts)
  local uids, log = opts.uids, opts.log or function() end
  local owner = opts.state_dir .. "/network"
  local saved = fs.read_file(owner .. ".json")
  local slot = saved and tonumber(saved:match('"slot":%s*(%d+)'))
  if not (slot and uids:keep(slot, owner)) then
    local s, msg = uids:claim(owner)
    if not s then error("cannot claim a network slot: " .. tostring(msg), 0) end
    slot = s
    local ok, werr = require("dtlocal.control.store").write_atomic(owner .. ".json",
      json.encode({ slot = slot }))
    if not ok then uids:release(slot, owner); error("cannot write " .. owner .. ".json: " .. tostring(werr), 0) end
  end
  write_owner(owner)
  local self = setmetatable({ uids = uids, slot = slot, group = slot + 1, name = table_name(slot),
                              owner = owner, log = log, elems = {}, domained = {} }, Net)
  M.sweep(uids, log, slot)
  -- a resolver on the host's loopback: reached through the gateway (DNAT)
  for _, ns in ipairs(M.loopback_resolvers() or {}) do
    if ns:match("^127%.%d+%.%d+%.%d+$") then self.dns = ns break end
  end
  -- the DNS filter of the sandboxes with a domain allow list
  self.filter = require("dtlocal.control.dns").new{ nft = nft, table = self.name, log = log,
    addr_slot = M.slot_of }
  local ok, msg = nft(format("table inet %s\ndelete table inet %s\n", self.name, self.name)
    .. ruleset(self.name, self.group, self.dns, self.filter.port))
  if not ok then
    self.filter:close()
    error("cannot install the nftables table " .. self.name .. ": " .. tostring(msg), 0)
  end
  local f = io.open("/proc/sys/net/ipv4/ip_forward", "rb")
  local fwd = f and f:read("a") or ""
  if f then f:close() end
  if not fwd:match("^1") then
    local w = io.open("/proc/sys/net/ipv4/ip_forward", "wb")
    local wok = w and w:write("1\n")
    if w then w:close() end
    if not wok then
      self.filter:close()
      nft(format("delete table inet %s\n", self.name))
      error("cannot turn IPv4 forwarding on (/proc/sys/net/ipv4/ip_forward): sandboxes would have no network", 0)
    end
    self.forwarding_enabled = true
  end
  return self
end

--- pasta (Debian's passt) for unprivileged sandboxes: its path, or nil.
function M.find_pasta()
  for dir in ((os.getenv("PATH") or "") .. ":/usr/bin:/usr/sbin"):gmatch("[^:]+") do
    local p = dir .. "/pasta"
    local st = core.util.stat(p, true)
    if st and st.type == "file" then return p end
  end
  return nil
end

--- The file the host's nameservers are read from: /etc/resolv.conf, or
-- $DTLOCAL_RESOLV_CONF (for specs, which cannot change the host's).
function M.resolv_conf()
  local p = os.getenv("DTLOCAL_RESOLV_CONF")
  return (p and p ~= "") and p or "/etc/resolv.conf"
end

--- The host's nameservers (/etc/resolv.conf, which a sandbox sees through
-- its overlay) if every one is on loopback: a sandbox, with a loopback of
-- its own, cannot reach them (systemd-resolved's 127.0.0.53, say). Returns
-- the list then, else nil.
function M.loopback_resolvers(path)
  local text = "\n" .. (fs.read_file(path or M.resolv_conf()) or "")
  local all, loop = 0, {}
  for ns in text:gmatch("\n[ \t]*nameserver[ \t]+(%S+)") do
    all = all + 1
    if ns:match("^127%.") or ns == "::1" then loop[#loop + 1] = ns end
  end
  if all > 0 and #loop == all then return loop end
  return nil
end

--- Once a sandbox of uid slot `slot` runs (its host end exists): its host
-- end accepts packets for 127/8 (DNATed DNS, to a loopback resolver or
-- the DNS filter; the input chain drops every other one). Returns the
-- line to put in the sandbox's /etc/resolv.conf (its gateway) when its
-- DNS must leave it (a loopback resolver on the host, or a domain allow
-- list), or nil.
function Net:link_up(slot, domained)
  local a = M.addrs(slot)
  local f = io.open("/proc/sys/net/ipv4/conf/" .. a.ifname .. "/route_localnet", "wb")
  local ok = f and f:write("1\n")
  if f then f:close() end
  if not ok then error("cannot set route_localnet on " .. a.ifname, 0) end
  if not (self.dns or domained) then return nil end
  return "nameserver " .. a.host
end

--- The launcher's --net value for the sandbox of uid slot `slot`.
function Net:launch_arg(slot)
  local a = M.addrs(slot)
  return format("veth:%s:%s/%d:%s:%d", a.ifname, a.host, a.plen, a.sandbox, self.group)
end

-- The set elements a record needs: a list of "set { element }" strings.
local function wanted(rec, parent)
  local slot = rec.dtlocal.uid_slot
  local out = {}
  if not slot then return out end
  local a = M.addrs(slot)
  if rec.networkBlockAll then
    out[#out + 1] = format('blocked { "%s" }', a.ifname)
  elseif rec.networkAllowList and rec.networkAllowList ~= "" then
    out[#out + 1] = format('listed { "%s" }', a.ifname)
    local seen = {}
    for cidr in rec.networkAllowList:gmatch("[^,]+") do
      local n = network_of(cidr)
      if not seen[n] then
        seen[n] = true
        out[#out + 1] = format('allow { "%s" . %s }', a.ifname, n)
      end
    end
  end
  if parent and parent.dtlocal.uid_slot then
    local p = M.addrs(parent.dtlocal.uid_slot)
    out[#out + 1] = format("links { %s . %s }", a.sandbox, p.sandbox)
    out[#out + 1] = format("links { %s . %s }", p.sandbox, a.sandbox)
  end
  return out
end

--- Put rec's set elements in place (blocked, allow list, link to parent),
-- replacing what it had: one `nft` run, none when nothing changes (a plain
-- sandbox has none). Raises a plain error when nft refuses.
function Net:apply(rec, parent)
  local want = wanted(rec, parent)
  local have = self.elems[rec.id] or {}
  local wset, hset = {}, {}
  for _, e in ipairs(want) do wset[e] = true end
  for _, e in ipairs(have) do hset[e] = true end
  local script = {}
  for _, e in ipairs(have) do
    if not wset[e] then script[#script + 1] = format("delete element inet %s %s\n", self.name, e) end
  end
  for _, e in ipairs(want) do
    if not hset[e] then script[#script + 1] = format("add element inet %s %s\n", self.name, e) end
  end
  -- the domain allow list (not with networkBlockAll: nothing goes out)
  local slot = rec.dtlocal.uid_slot
  local list = slot and not rec.networkBlockAll and rec.domainAllowList ~= "" and rec.domainAllowList or nil
  local had = self.domained[rec.id]
  if slot and (list ~= nil) ~= (had ~= nil) then
    script[#script + 1] = domain_objs(self.name, slot, M.addrs(slot).ifname, list ~= nil)
  elseif list and had ~= list then
    -- another list: what the old one let through goes
    script[#script + 1] = format("flush set inet %s dallow_%d\n", self.name, slot)
  end
  if #script > 0 then
    local ok, msg = nft(concat(script))
    if not ok then error("cannot apply the network settings: " .. tostring(msg), 0) end
  end
  self.elems[rec.id] = want
  self.domained[rec.id] = list
  if slot then self.filter:set(slot, list) end
end

--- Remove rec's set elements (it is deleted).
function Net:forget(rec)
  local have = self.elems[rec.id]
  self.elems[rec.id] = nil
  local dslot = self.domained[rec.id] and rec.dtlocal.uid_slot
  self.domained[rec.id] = nil
  if dslot then self.filter:set(dslot, nil) end
  if (not have or #have == 0) and not dslot then return end
  local script = {}
  for _, e in ipairs(have or {}) do script[#script + 1] = format("delete element inet %s %s\n", self.name, e) end
  if dslot then script[#script + 1] = domain_objs(self.name, dslot, M.addrs(dslot).ifname, false) end
  local ok, msg = nft(concat(script))
  if not ok then self.log("cannot remove the network elements of %s: %s", rec.id, tostring(msg)) end
end

--- Remove the table (server shutdown: its sandboxes are gone). The slot
-- stays claimed (a restart takes it again) until the state dir goes.
function Net:close()
  if self.closed then return end
  self.closed = true
  self.filter:close()
  local ok, msg = nft(format("delete table inet %s\n", self.name))
  if not ok then self.log("cannot remove the nftables table %s: %s", self.name, tostring(msg)) end
  os.remove(self.owner)
end

return M
