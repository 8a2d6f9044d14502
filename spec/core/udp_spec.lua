-- core.udp: IPv4 datagram sockets on the loop (csrc/udp.c).
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"

-- the next datagram on u, waiting for it (at most 5 s)
local function recv(u)
  local deadline = core.now() + 5
  while true do
    local data, ip, port = u:recv()
    if data then return data, ip, port end
    assert.is_true(core.now() < deadline, "no datagram within 5 s")
    local t <close> = core.timer(5000)
    scheduler.wait(u, t)
  end
end

describe("core.udp", function()
  it("binds, sends and receives datagrams with their sender", function()
    local a <close> = assert(core.udp("127.0.0.1", 0))
    local b <close> = assert(core.udp("127.0.0.1", 0))
    local aip, aport = a:sockname()
    local _, bport = b:sockname()
    assert.are.equal("127.0.0.1", aip)
    assert.is_true(aport > 0)
    assert.is_nil(a:recv())
    assert.is_true(b:send("hello\0world", "127.0.0.1", aport))
    local data, ip, port = recv(a)
    assert.are.equal("hello\0world", data)
    assert.are.equal("127.0.0.1", ip)
    assert.are.equal(bport, port)
    -- an empty datagram and a 60 KiB one
    assert.is_true(a:send("", "127.0.0.1", bport))
    assert.are.equal("", (recv(b)))
    local big = string.rep("x", 60000)
    assert.is_true(a:send(big, "127.0.0.1", bport))
    assert.are.equal(big, (recv(b)))
  end)

  it("bounds its queue: datagrams beyond it are dropped and counted", function()
    local a <close> = assert(core.udp("127.0.0.1", 0))
    local b <close> = assert(core.udp("127.0.0.1", 0))
    local _, aport = a:sockname()
    for i = 1, 100 do b:send(tostring(i), "127.0.0.1", aport) end
    -- the loop runs without anyone taking them: 64 are kept
    scheduler.sleep(0.3)
    local got = {}
    while true do
      local d = a:recv()
      if not d then break end
      got[#got + 1] = d
    end
    assert.are.equal(64, #got)
    assert.are.equal("1", got[1])
    assert.are.equal("64", got[64])
    assert.are.equal(36, a:dropped())
    assert.are.equal(0, a:dropped())
  end)

  it("fails with nil, msg, code on bad addresses and in-use ports, and after close", function()
    local a = assert(core.udp("127.0.0.1", 0))
    local _, port = a:sockname()
    local u, msg, code = core.udp("127.0.0.1", port)
    assert.is_nil(u)
    assert.are.equal("EADDRINUSE", code, msg)
    u, msg, code = core.udp("not an address", 0)
    assert.is_nil(u)
    assert.are.equal("EINVAL", code, msg)
    assert.has_error(function() core.udp("127.0.0.1", 70000) end)
    local ok
    ok, msg, code = a:send("x", "nowhere", 1)
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    a:close()
    a:close()
    ok, msg, code = a:send("x", "127.0.0.1", port)
    assert.is_nil(ok)
    assert.are.equal("ECLOSED", code)
    -- the port is free again once closed
    scheduler.sleep(0.01)
    local again <close> = assert(core.udp("127.0.0.1", port))
  end)
end)
