--- dtlocal.control.dns: the DNS filter behind domainAllowList (as root).
--
-- A sandbox with a domain allow list resolves names only through this
-- filter: its table (dtlocal.control.network) DNATs every UDP datagram it
-- sends to port 53, whatever the address, to the filter's socket on the
-- host's 127.0.0.1, and drops its DNS over TCP. The filter answers a query
-- for a name the list allows by asking the host's resolvers (the
-- nameservers of /etc/resolv.conf, or $DTLOCAL_RESOLV_CONF) and, before it
-- passes the answer on, puts every IPv4 address of the answer (A records,
-- CNAME chains included) in that sandbox's set of reachable addresses
-- (`dallow_<slot>`) for the record's TTL (at least MIN_TTL, at most
-- MAX_TTL). Anything else the sandbox sends is dropped unless it goes to
-- an address of that set or of its networkAllowList (the two add up). A
-- name the list does not allow is answered REFUSED; a malformed query
-- FORMERR, or nothing when even its header is short.
--
-- List entries: "example.com" allows exactly that name; "*.example.com"
-- every name under example.com (not example.com itself).
--
-- The filter reads what a hostile sandbox sends: queries are parsed
-- strictly (one question, no compression, labels of 1-63 bytes, names of
-- at most 255), at most MAX_PENDING of one sandbox are waiting on the
-- upstream at once and at most RATE per second are taken (a token bucket
-- of BURST), the rest dropped. Answers are read as strictly before an
-- address from them reaches the firewall.
--
--   local f = dns.new{ nft = function(script) -> true | nil, msg, table = name, log = }
--   f.port                          -- its UDP port on 127.0.0.1
--   f:set(slot, list_or_nil)        -- the domain list of uid slot `slot`
--   f:close()
--   dns.parse_query(msg) -> q | nil, "drop" | "formerr"
--   dns.answer_addrs(reply, q) -> { {ip, ttl}, ... } | nil, why
--   dns.allowed(patterns, name) -> boolean
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local fs = require "dtlocal.fs"

local format, byte, char, sub, concat = string.format, string.byte, string.char, string.sub, table.concat
local ipairs, pairs, tonumber, tostring, setmetatable, pcall, os = ipairs, pairs, tonumber, tostring, setmetatable, pcall, os

local M = {}

M.MIN_TTL = 60           -- seconds an answered address stays reachable, at least
M.MAX_TTL = 86400        -- and at most
M.MAX_QUERY = 1024       -- bytes of a query taken (one question, an OPT record)
M.MAX_PENDING = 32       -- queries of one sandbox waiting on the upstream
M.RATE, M.BURST = 200, 400   -- queries per second per sandbox, and the bucket
M.UPSTREAM_TIMEOUT = 4   -- seconds, per upstream server tried
M.MAX_ADDRS = 4096       -- addresses in one sandbox's set at once (its size: a name the
                         -- sandbox controls cannot grow it without end)

M.FORMERR, M.SERVFAIL, M.REFUSED = 1, 2, 5

local function u16(s, i)
  local a, b = byte(s, i, i + 1)
  if not b then return nil end
  return a * 256 + b
end

local function u32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  if not d then return nil end
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- The uncompressed name at i (a query's): lower-cased dotted name and the
-- index after it, or nil.
local function plain_name(s, i)
  local labels, total = {}, 0
  while true do
    local len = byte(s, i)
    if not len then return nil end
    if len == 0 then break end
    if len > 63 then return nil end            -- a pointer or a reserved type
    local label = sub(s, i + 1, i + len)
    if #label ~= len then return nil end
    if label:find("[%z%.]") then return nil end
    labels[#labels + 1] = label:lower()
    total = total + len + 1
    if total > 254 then return nil end
    i = i + len + 1
  end
  return concat(labels, "."), i + 1
end

--- A query: { id, name, qtype, qclass, qend (index after the question) },
-- or nil and what to do: "drop" (no header to answer) or "formerr".
function M.parse_query(msg)
  if #msg < 12 or #msg > M.MAX_QUERY then return nil, "drop" end
  local flags = u16(msg, 3)
  if flags & 0x8000 ~= 0 then return nil, "drop" end            -- a response
  if (flags >> 11) & 15 ~= 0 then return nil, "formerr" end      -- not QUERY
  local qd, an, ns, ar = u16(msg, 5), u16(msg, 7), u16(msg, 9), u16(msg, 11)
  if qd ~= 1 or an ~= 0 or ns ~= 0 or ar > 1 then return nil, "formerr" end
  local name, i = plain_name(msg, 13)
  if not name then return nil, "formerr" end
  local qtype, qclass = u16(msg, i), u16(msg, i + 2)
  if not qclass then return nil, "formerr" end
  local qend = i + 4
  if ar == 1 then
    -- an OPT record (EDNS): root name, type 41, its rdata in full
    if byte(msg, qend) ~= 0 or u16(msg, qend + 1) ~= 41 then return nil, "formerr" end
    local rdlen = u16(msg, qend + 9)
    if not rdlen or qend + 11 + rdlen ~= #msg + 1 then return nil, "formerr" end
  elseif qend ~= #msg + 1 then
    return nil, "formerr"
  end
  return { id = u16(msg, 1), name = name, qtype = qtype, qclass = qclass, qend = qend, rd = flags & 0x100 }
end

--- A reply to query `msg` (parsed as `q`, or nil: header only) with rcode.
function M.reply(msg, q, rcode)
  local flags = 0x8000 | (q and q.rd or 0) | 0x80 | rcode   -- QR, RD as asked, RA
  local head = char(byte(msg, 1), byte(msg, 2), flags >> 8, flags & 255,
    0, q and 1 or 0, 0, 0, 0, 0, 0, 0)
  return q and head .. sub(msg, 13, q.qend - 1) or head
end

-- Skip a (possibly compressed) name at i: the index after it, or nil.
local function skip_name(s, i)
  for _ = 1, 128 do
    local len = byte(s, i)
    if not len then return nil end
    if len == 0 then return i + 1 end
    if len >= 192 then
      if not byte(s, i + 1) then return nil end
      return i + 2
    end
    if len > 63 then return nil end
    i = i + len + 1
  end
  return nil
end

--- The IPv4 addresses of upstream reply `r` to query `q` (sent verbatim):
-- { {ip, ttl}, ... } from its answer section, or nil and why when it is
-- not a well-formed answer to that question.
function M.answer_addrs(r, q, query)
  if #r < 12 then return nil, "short" end
  if u16(r, 1) ~= q.id then return nil, "another id" end
  local flags = u16(r, 3)
  if flags & 0x8000 == 0 then return nil, "not a response" end
  local qd, an = u16(r, 5), u16(r, 7)
  if qd ~= 1 then return nil, "not one question" end
  -- the question as asked (case aside: some servers echo 0x20 mixing)
  if sub(r, 13, q.qend - 1):lower() ~= sub(query, 13, q.qend - 1):lower() then return nil, "another question" end
  local i = q.qend
  local out = {}
  for _ = 1, an do
    i = skip_name(r, i)
    if not i then return nil, "bad name" end
    local rtype, rclass, ttl, rdlen = u16(r, i), u16(r, i + 2), u32(r, i + 4), u16(r, i + 8)
    if not rdlen or i + 10 + rdlen > #r + 1 then return nil, "truncated record" end
    if rtype == 1 and rclass == 1 then
      if rdlen ~= 4 then return nil, "bad A record" end
      local a, b, c, d = byte(r, i + 10, i + 13)
      out[#out + 1] = { format("%d.%d.%d.%d", a, b, c, d), ttl }
    end
    i = i + 10 + rdlen
  end
  return out
end

--- Whether name (lower case, no trailing dot) matches a list entry.
function M.allowed(patterns, name)
  for _, p in ipairs(patterns) do
    if p:sub(1, 2) == "*." then
      local base = p:sub(2)   -- ".example.com"
      if #name > #base and name:sub(-#base) == base then return true end
    elseif name == p then
      return true
    end
  end
  return false
end

-- The nameservers (IPv4) of resolv.conf file `path` (nil: the host's,
-- /etc/resolv.conf or $DTLOCAL_RESOLV_CONF): the filter's upstreams.
local function upstreams(path)
  local p = os.getenv("DTLOCAL_RESOLV_CONF")
  local text = "\n" .. (fs.read_file(path or ((p and p ~= "") and p or "/etc/resolv.conf")) or "")
  local out = {}
  for ns in text:gmatch("\n[ \t]*nameserver[ \t]+(%S+)") do
    if ns:match("^%d+%.%d+%.%d+%.%d+$") then out[#out + 1] = ns end
  end
  return out
end

local Filter = {}
Filter.__index = Filter
Filter.__name = "dtlocal.DnsFilter"

--- opts: nft (runs a script, true | nil, msg), table (the nft table's
-- name), addr_slot (sandbox address -> uid slot or nil), log,
-- resolv_conf (the file naming the upstreams; nil: the host's).
function M.new(opts)
  local sock, msg = core.udp("127.0.0.1", 0)
  if not sock then error("cannot open the DNS filter's socket: " .. tostring(msg), 0) end
  local _, port = sock:sockname()
  local self = setmetatable({ sock = sock, port = port, nft = opts.nft, table = opts.table,
    addr_slot = opts.addr_slot, log = opts.log or function() end, resolv_conf = opts.resolv_conf,
    lists = {}, state = {} }, Filter)
  self.task = scheduler.spawn(function() self:serve() end)
  return self
end

--- The list of uid slot `slot` (a comma-separated string), or nil: none.
function Filter:set(slot, list)
  if not list or list == "" then
    self.lists[slot], self.state[slot] = nil, nil
    return
  end
  local patterns = {}
  for e in list:gmatch("[^,]+") do patterns[#patterns + 1] = e:lower() end
  self.lists[slot] = patterns
  local st = self.state[slot] or { tokens = M.BURST, at = core.now(), pending = 0, seen = {}, nseen = 0 }
  -- another list empties the set (Net:apply): what it held is forgotten
  if st.list ~= list then st.seen, st.nseen, st.list = {}, 0, list end
  self.state[slot] = st
end

function Filter:serve()
  while not self.closed do
    local data, ip, port = self.sock:recv()
    if data then
      local ok, err = pcall(self.handle, self, data, ip, port)
      if not ok then self.log("DNS filter: %s", tostring(err)) end
    else
      scheduler.wait(self.sock)
    end
  end
end

function Filter:handle(data, ip, port)
  local slot = self.addr_slot(ip)
  local patterns = slot and self.lists[slot]
  if not patterns then return end        -- not a sandbox with a list: ignored
  local st = self.state[slot]
  local now = core.now()
  st.tokens = math.min(M.BURST, st.tokens + (now - st.at) * M.RATE)
  st.at = now
  if st.tokens < 1 or st.pending >= M.MAX_PENDING then return end
  st.tokens = st.tokens - 1
  local q, what = M.parse_query(data)
  if not q then
    if what == "formerr" then self.sock:send(M.reply(data, nil, M.FORMERR), ip, port) end
    return
  end
  if not M.allowed(patterns, q.name) then
    self.sock:send(M.reply(data, q, M.REFUSED), ip, port)
    return
  end
  st.pending = st.pending + 1
  scheduler.spawn(function()
    local ok, err = pcall(self.forward, self, slot, data, q, ip, port)
    st.pending = st.pending - 1
    if not ok then self.log("DNS filter: %s", tostring(err)) end
  end)
end

-- Ask the upstreams in turn; the first well-formed answer has its
-- addresses put in the sandbox's set, then goes back to the sandbox.
function Filter:forward(slot, data, q, ip, port)
  for _, up in ipairs(upstreams(self.resolv_conf)) do
    local s <close> = core.udp("0.0.0.0", 0)
    if s and s:send(data, up, 53) then
      local deadline = core.now() + M.UPSTREAM_TIMEOUT
      while core.now() < deadline do
        local r, rip, rport = s:recv()
        if r then
          if rip == up and rport == 53 then
            local addrs = M.answer_addrs(r, q, data)
            if addrs then
              -- still allowed (the list may have changed meanwhile)
              local now = self.lists[slot]
              if now and M.allowed(now, q.name) and self:allow(slot, addrs) then self.sock:send(r, ip, port) end
              return
            end
          end
        else
          local t <close> = core.timer(math.max(1, math.floor((deadline - core.now()) * 1000)))
          scheduler.wait(s, t)
        end
      end
    end
  end
  if self.lists[slot] then self.sock:send(M.reply(data, q, M.SERVFAIL), ip, port) end
end

-- Put the addresses in the slot's set; false when nft refused. An address
-- put there with more than half of this answer's TTL still to go is left
-- as it is: a name asked again and again costs no `nft` run each time.
function Filter:allow(slot, addrs)
  local st = self.state[slot]
  local now = core.now()
  local parts, ttls = {}, {}
  for _, a in ipairs(addrs) do
    local ttl = math.min(M.MAX_TTL, math.max(M.MIN_TTL, a[2]))
    if not ttls[a[1]] and (st.seen[a[1]] or 0) < now + ttl / 2 then
      ttls[a[1]] = ttl
      parts[#parts + 1] = format("%s timeout %ds", a[1], ttl)
    end
  end
  if #parts == 0 then return true end
  local ok, msg = self.nft(format("add element inet %s dallow_%d { %s }\n", self.table, slot, concat(parts, ", ")))
  if not ok then
    self.log("DNS filter: cannot allow %s: %s", parts[1], tostring(msg))
    return false
  end
  local seen = st.seen
  for ip, ttl in pairs(ttls) do
    if not seen[ip] then st.nseen = (st.nseen or 0) + 1 end
    seen[ip] = now + ttl
  end
  if st.nseen > 2 * M.MAX_ADDRS then
    -- what the kernel has let expire is forgotten here too
    st.nseen = 0
    for ip, exp in pairs(seen) do
      if exp <= now then seen[ip] = nil else st.nseen = st.nseen + 1 end
    end
  end
  return true
end

function Filter:close()
  if self.closed then return end
  self.closed = true
  self.task:cancel()
  self.sock:close()
end

return M
