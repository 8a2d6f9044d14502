-- dtlocal.control.dns's parsing of what a sandbox and an upstream send
-- (the filter itself is attacked from inside a sandbox in
-- spec/dtlocal/domain_allow_spec.lua), and the domainAllowList checks.
local dns = require "dtlocal.control.dns"
local record = require "dtlocal.control.record"
local core = require "daytona.core"
local helper = require "support.helper"
local scheduler = require "daytona.runtime.scheduler"

local function name(n)
  local out = {}
  for label in n:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
  return table.concat(out) .. "\0"
end

local function query(id, n, qtype, opt)
  local head = string.pack(">I2I2I2I2I2I2", id, 0x0100, 1, 0, 0, opt and 1 or 0)
  local q = head .. name(n) .. string.pack(">I2I2", qtype or 1, 1)
  if opt then q = q .. "\0" .. string.pack(">I2I2I4I2", 41, 4096, 0, 0) end
  return q
end

describe("dtlocal DNS filter parsing", function()
  it("parses a query, lower-casing its name, with or without EDNS", function()
    local q = assert(dns.parse_query(query(0x1234, "WWW.Example.COM", 1)))
    assert.are.equal(0x1234, q.id)
    assert.are.equal("www.example.com", q.name)
    assert.are.equal(1, q.qtype)
    q = assert(dns.parse_query(query(7, "a.b", 28, true)))
    assert.are.equal("a.b", q.name)
    assert.are.equal(28, q.qtype)
  end)

  it("refuses malformed queries: drop without a header, FORMERR otherwise", function()
    local good = query(1, "a.example.com")
    local function bad(msg, what) local q, w = dns.parse_query(msg); assert.is_nil(q); assert.are.equal(what, w) end
    bad("", "drop")
    bad(good:sub(1, 11), "drop")
    bad(string.rep("x", 2000), "drop")
    bad(good:sub(1, 2) .. "\x81\x00" .. good:sub(5), "drop")         -- a response
    bad(good:sub(1, 2) .. "\x28\x00" .. good:sub(5), "formerr")       -- UPDATE
    bad(good:sub(1, 4) .. "\0\2" .. good:sub(7), "formerr")           -- two questions
    bad(good:sub(1, -2), "formerr")                                   -- cut short
    bad(good .. "x", "formerr")                                       -- trailing bytes
    bad(good:sub(1, 12) .. "\xc0\x0c" .. string.pack(">I2I2", 1, 1), "formerr")   -- compression
    bad(good:sub(1, 12) .. "\64" .. string.rep("a", 64) .. "\0" .. string.pack(">I2I2", 1, 1), "formerr")
    bad(good:sub(1, 12) .. string.rep("\63" .. string.rep("a", 63), 5) .. "\0" .. string.pack(">I2I2", 1, 1), "formerr")
    bad(good:sub(1, 12) .. "\3a.b\0" .. string.pack(">I2I2", 1, 1), "formerr")    -- a dot in a label
    -- the FORMERR reply keeps the id, has no question
    local r = dns.reply(good, nil, dns.FORMERR)
    assert.are.equal(12, #r)
    assert.are.equal(good:sub(1, 2), r:sub(1, 2))
    assert.are.equal(dns.FORMERR, r:byte(4) & 15)
  end)

  it("survives random and mutated input (a little fuzzing)", function()
    math.randomseed(12345)
    local good = query(9, "a.example.com", 1, true)
    for _ = 1, 20000 do
      local msg
      if math.random() < 0.5 then
        local t = {}
        for i = 1, math.random(0, 80) do t[i] = string.char(math.random(0, 255)) end
        msg = table.concat(t)
      else
        local b = { good:byte(1, -1) }
        for _ = 1, math.random(1, 4) do b[math.random(1, #b)] = math.random(0, 255) end
        msg = string.char(table.unpack(b)):sub(1, math.random(1, #b + 2))
      end
      local q, what = dns.parse_query(msg)
      assert.is_true(q ~= nil or what == "drop" or what == "formerr")
      if q then
        local r = dns.reply(msg, q, dns.REFUSED)
        assert.is_true(#r >= 12)
        -- an answer made of the same bytes parses or is refused, never raises
        dns.answer_addrs(r .. msg, q, msg)
      end
    end
  end)

  it("takes the A records of an answer to the question asked, CNAMEs included", function()
    local msg = query(42, "www.example.com")
    local q = assert(dns.parse_query(msg))
    local ans = string.pack(">I2I2I2I2I2I2", 42, 0x8180, 1, 3, 0, 0) .. msg:sub(13, q.qend - 1)
      .. "\xc0\x0c" .. string.pack(">I2I2I4I2", 5, 1, 300, 6) .. "\3cdn\xc0\x10"
      .. "\xc0\x2d" .. string.pack(">I2I2I4I2", 1, 1, 30, 4) .. "\1\2\3\4"
      .. "\xc0\x2d" .. string.pack(">I2I2I4I2", 28, 1, 30, 16) .. string.rep("\0", 16)
    local addrs = assert(dns.answer_addrs(ans, q, msg))
    assert.are.same({ { "1.2.3.4", 30 } }, addrs)
    -- another id, another question, a record running past the end: refused
    assert.is_nil(dns.answer_addrs("\0\0" .. ans:sub(3), q, msg))
    local other = query(42, "www.example.org")
    assert.is_nil(dns.answer_addrs(ans:sub(1, 12) .. other:sub(13), q, msg))
    assert.is_nil(dns.answer_addrs(ans:sub(1, -3), q, msg))
    assert.is_nil(dns.answer_addrs(ans:sub(1, 2) .. "\x01\x00" .. ans:sub(5), q, msg))   -- not a response
  end)

  it("matches exact names and *. wildcards (the names under one, not itself)", function()
    local p = { "example.com", "*.daytona.io" }
    assert.is_true(dns.allowed(p, "example.com"))
    assert.is_false(dns.allowed(p, "www.example.com"))
    assert.is_false(dns.allowed(p, "badexample.com"))
    assert.is_true(dns.allowed(p, "app.daytona.io"))
    assert.is_true(dns.allowed(p, "a.b.daytona.io"))
    assert.is_false(dns.allowed(p, "daytona.io"))
    assert.is_false(dns.allowed(p, "xdaytona.io"))
  end)

  it("checks domainAllowList: format and count, 400 naming the field; refused unprivileged with the reason", function()
    local check = record.check
    assert.are.equal("example.com,*.daytona.io", check.domain_list(" Example.COM. , *.daytona.io ", "domainAllowList"))
    assert.are.equal("", check.domain_list("", "domainAllowList"))
    local function bad(v, words)
      local ok, err = pcall(check.domain_list, v, "domainAllowList")
      assert.is_false(ok)
      assert.are.equal(400, err.status)
      assert.matches("domainAllowList", err.message, 1, true)
      if words then assert.matches(words, err.message, 1, true) end
    end
    for _, v in ipairs({ "*example.com", ".example.com", "exa mple.com", "-a.example.com", "a-.example.com",
                         "localhost", "*", "*.com", "a..b", "a.b,,c.d", "ex_ample.com", "*.*.example.com",
                         string.rep("a", 64) .. ".com", 12 }) do
      bad(v)
    end
    local many = {}
    for i = 1, record.MAX_DOMAINS + 1 do many[i] = "h" .. i .. ".example.com" end
    bad(table.concat(many, ","), "at most " .. record.MAX_DOMAINS)
    assert.has_no.errors(function() record.refuse_allow_list("example.com", "domainAllowList", true) end)
    local ok, err = pcall(record.refuse_allow_list, "example.com", "domainAllowList", false)
    assert.is_false(ok)
    assert.are.equal(400, err.status)
    assert.matches("^domainAllowList: .*root", err.message)
  end)

  -- The filter itself, on the host: queries from a socket of the spec's
  -- (its address standing for a sandbox's), a fake upstream on
  -- 127.1.N.53:53 (core.udp, as root), the nft scripts recorded.
  it("answers, forwards, puts answered addresses in the set, and limits a sandbox's rate", function()
    if core.util.getuid() ~= 0 then pending("binds port 53: needs root") return end
    helper.run(function()
      local up_addr = ("127.1.%d.53"):format(core.util.getpid() % 250)
      local up = assert(core.udp(up_addr, 53))
      local conf = helper.tmpdir() .. "/resolv.conf"
      local f = assert(io.open(conf, "w")); f:write("nameserver " .. up_addr .. "\n"); f:close()
      local asked = 0
      local upstream = scheduler.spawn(function()
        while true do
          local q, ip, port = up:recv()
          if q then
            asked = asked + 1
            local pq = assert(dns.parse_query(q))
            local ans = string.pack(">I2I2I2I2I2I2", pq.id, 0x8180, 1, 2, 0, 0) .. q:sub(13, pq.qend - 1)
              .. "\xc0\x0c" .. string.pack(">I2I2I4I2", 1, 1, 5, 4) .. "\10\1\2\3"
              .. "\xc0\x0c" .. string.pack(">I2I2I4I2", 1, 1, 7200, 4) .. "\10\1\2\4"
            up:send(ans, ip, port)
          else
            scheduler.wait(up)
          end
        end
      end)
      local scripts = {}
      local client = assert(core.udp("127.0.0.1", 0))
      local filter = dns.new{ table = "t", resolv_conf = conf,
        nft = function(script) scripts[#scripts + 1] = script; return true end,
        addr_slot = function(ip) return ip == "127.0.0.1" and 7 or nil end }
      local function answer(msg, wait)
        assert(client:send(msg, "127.0.0.1", filter.port))
        local deadline = core.now() + (wait or 5)
        while core.now() < deadline do
          local r = client:recv()
          if r then return r end
          local t <close> = core.timer(100)
          scheduler.wait(client, t)
        end
      end
      -- no list for this address yet: ignored
      assert.is_nil(answer(query(1, "a.example.com"), 0.5))
      filter:set(7, "a.example.com,*.wild.example")
      -- refused, FORMERR, forwarded
      local r = assert(answer(query(2, "b.example.com")))
      assert.are.equal(dns.REFUSED, r:byte(4) & 15)
      r = assert(answer(query(3, "a.example.com"):sub(1, -2)))
      assert.are.equal(dns.FORMERR, r:byte(4) & 15)
      r = assert(answer(query(4, "x.wild.example")))
      assert.are.equal(0, r:byte(4) & 15)
      assert.are.equal(4, string.unpack(">I2", r))
      assert.are.equal(1, asked)
      -- the addresses went to slot 7's set first, TTLs floored and kept
      assert.are.equal(1, #scripts)
      assert.matches("add element inet t dallow_7 { 10.1.2.3 timeout 60s, 10.1.2.4 timeout 7200s }", scripts[1], 1, true)
      -- asked again: answered, no nft run (both still have more than half their TTL)
      assert.is_truthy(answer(query(5, "a.example.com")))
      assert.are.equal(1, #scripts)
      -- another list: the set was emptied, so they go in again
      filter:set(7, "a.example.com")
      assert.is_truthy(answer(query(6, "a.example.com")))
      assert.are.equal(2, #scripts)
      -- a flood, in batches the sockets' queues (64) hold: the burst and
      -- what refills meanwhile are answered, the rest dropped
      local got, t0 = 0, core.now()
      for b = 1, 20 do
        for i = 1, 50 do client:send(query(b * 100 + i, "b.example.com"), "127.0.0.1", filter.port) end
        local n, deadline = 0, core.now() + 0.05
        while n < 50 and core.now() < deadline do
          if client:recv() then n = n + 1 else scheduler.sleep(0.002) end
        end
        got = got + n
      end
      local bound = dns.BURST + dns.RATE * (core.now() - t0)
      assert.is_true(got >= dns.BURST - 50 and got <= bound + 5, ("answered %d of 1000 (bound %.0f)"):format(got, bound))
      -- the list gone: ignored again
      filter:set(7, nil)
      assert.is_nil(answer(query(7, "a.example.com"), 0.5))
      filter:close()
      upstream:cancel()
      up:close()
      client:close()
    end)
  end)
end)
