-- core.util's SHA-256, which is our own (csrc/util.c) so that the core's
-- base links no libcrypto: checked against the FIPS 180-4 examples and
-- against sha256sum on lengths around the 64-byte block and the 56-byte
-- padding edge, and on a file read in several chunks.
local helper = require "support.helper"
local process = require "daytona.runtime.process"
local core = require "daytona.core"

local util = core.util

-- sha256sum's digest of a file
local function sha256sum(path)
  local r = process.run({ "sha256sum", path }, { timeout = 60 })
  assert(r.exit_code == 0, r.stderr)
  return (r.stdout:match("^(%x+)"))
end

-- For each length n of `lengths`: n, a file of a temp dir holding the first
-- n bytes of 4096 random ones, and those 4096 bytes (a for-in iterator).
local function prefixes(lengths)
  local dir = helper.tmpdir()
  local src = helper.bigfile(dir, "src.bin", 4096)
  local f = assert(io.open(src, "rb"))
  local data = f:read("a")
  f:close()
  local k = 0
  return function()
    k = k + 1
    local n = lengths[k]
    if n == nil then return nil end
    local path = ("%s/p%d"):format(dir, n)
    local out = assert(io.open(path, "wb"))
    out:write(data:sub(1, n))
    out:close()
    return n, path, data
  end
end

describe("core.util.sha256", function()
  teardown(function()
    helper.cleanup()
  end)

  it("gives the FIPS 180-4 digests", function()
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", util.sha256(""))
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", util.sha256("abc"))
    assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      util.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.are.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      util.sha256(("a"):rep(1000000)))
  end)

  it("agrees with sha256sum around block and padding edges, for strings and files", function()
    helper.run(function()
      for n, path, data in prefixes{ 0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096 } do
        local want = sha256sum(path)
        assert.are.equal(want, util.sha256(data:sub(1, n)), "string of " .. n)
        local got, size = util.sha256_file(path)
        assert.are.equal(want, got, "file of " .. n)
        assert.are.equal(n, size)
      end
    end)
  end)

  it("streams a file larger than its read chunk", function()
    helper.run(function()
      local dir = helper.tmpdir()
      -- three 64 KiB chunks and an odd tail
      local path = helper.bigfile(dir, "big.bin", 3 * 65536 + 77)
      local got, size = util.sha256_file(path)
      assert.are.equal(sha256sum(path), got)
      assert.are.equal(3 * 65536 + 77, size)
      local missing, msg = util.sha256_file(dir .. "/missing")
      assert.is_nil(missing)
      assert.is_truthy(msg:find("missing", 1, true))
    end)
  end)
end)

-- HMAC-SHA256 (AWS SigV4 signs with it) and the streaming digests (MD5 names
-- a build context the way the official SDKs do): RFC 4231 and RFC 1321
-- vectors, md5sum/sha256sum on files, and pieces fed in any split.
describe("core.util.hmac_sha256 and core.util.digest", function()
  teardown(function()
    helper.cleanup()
  end)

  it("gives the RFC 4231 HMAC-SHA256 values, hex and raw", function()
    assert.are.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      util.hmac_sha256(("\x0b"):rep(20), "Hi There"))
    assert.are.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      util.hmac_sha256("Jefe", "what do ya want for nothing?"))
    -- a key longer than the block is hashed first (RFC 4231 case 6)
    assert.are.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      util.hmac_sha256(("\xaa"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First"))
    local raw = util.hmac_sha256("Jefe", "what do ya want for nothing?", true)
    assert.are.equal(32, #raw)
    assert.are.equal(util.hmac_sha256("Jefe", "what do ya want for nothing?"), util.hex(raw))
  end)

  it("gives the RFC 1321 MD5 values and SHA-256 as util.sha256 does, in any split", function()
    local vectors = {
      [""] = "d41d8cd98f00b204e9800998ecf8427e",
      ["abc"] = "900150983cd24fb0d6963f7d28e17f72",
      ["message digest"] = "f96b697d7cb7938d525a2f31aaf161d0",
      [("1234567890"):rep(8)] = "57edf4a22be3c955ac49da2e2107b67a",
    }
    for s, want in pairs(vectors) do
      assert.are.equal(want, util.digest("md5"):update(s):hex())
      local d = util.digest("md5")
      for i = 1, #s, 7 do d:update(s:sub(i, i + 6)) end
      assert.are.equal(want, d:hex())
      assert.are.equal(util.sha256(s), util.digest("sha256"):update(s):hex())
    end
    local d = util.digest("md5")
    d:hex()
    assert.has_error(function() d:update("x") end, "digest already finished")
    assert.has_error(function() util.digest("crc32") end)
  end)

  it("hashes files in chunks as md5sum and sha256sum do, and refuses a link", function()
    helper.run(function()
      local dir = helper.tmpdir()
      local path = helper.bigfile(dir, "big.bin", 3 * 65536 + 77)
      local r = process.run({ "md5sum", path }, { timeout = 60 })
      local d = util.digest("md5")
      assert.are.equal(3 * 65536 + 77, d:update_file(path))
      assert.are.equal(r.stdout:match("^(%x+)"), d:hex())
      local s = util.digest("sha256")
      s:update("prefix")
      s:update_file(path)
      local f = assert(io.open(path, "rb"))
      local data = f:read("a")
      f:close()
      assert.are.equal(util.sha256("prefix" .. data), s:hex())
      assert(util.symlink(path, dir .. "/link"))
      local n, msg = util.digest("md5"):update_file(dir .. "/link")
      assert.is_nil(n)
      assert.matches("link", msg)
    end)
  end)
end)

-- core.util.base64_decode (csrc/digest.c): what coreutils' base64 encodes
-- decodes back, at every length modulo 3 and wrapped in lines as MIME
-- writes it; padding optional; what is not base64 is nil, a message, EINVAL.
describe("core.util.base64_decode", function()
  teardown(function()
    helper.cleanup()
  end)

  it("gives back what base64 encoded, wrapped or not, padded or not", function()
    helper.run(function()
      for n, path, data in prefixes{ 0, 1, 2, 3, 4, 5, 56, 57, 58, 1000, 4095, 4096 } do
        for _, wrap in ipairs{ "0", "76" } do
          local r = process.run({ "base64", "-w", wrap, path }, { timeout = 60 })
          assert.are.equal(0, r.exit_code, r.stderr)
          assert.are.equal(data:sub(1, n), util.base64_decode(r.stdout), ("%d bytes, -w %s"):format(n, wrap))
          assert.are.equal(data:sub(1, n), util.base64_decode((r.stdout:gsub("[=%s]", ""))), n .. " bytes, no padding")
        end
      end
    end)
  end)

  it("refuses what is not base64, saying why", function()
    for s, why in pairs{
      ["QQ==="] = "too much padding", ["Q"] = "not a whole number of bytes", ["QUJDR"] = "not a whole number of bytes",
      ["QQ!="] = "outside the alphabet", ["QQ=Q"] = "outside the alphabet", ["QU\0J"] = "outside the alphabet",
      ["QUJD-_"] = "outside the alphabet",
    } do
      local v, msg, code = util.base64_decode(s)
      assert.is_nil(v, s)
      assert.matches(why, msg, 1, true)
      assert.are.equal("EINVAL", code)
    end
    assert.has_error(function() util.base64_decode({}) end)
  end)
end)
