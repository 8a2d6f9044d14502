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
      local dir = helper.tmpdir()
      local src = helper.bigfile(dir, "src.bin", 4096)
      local f = assert(io.open(src, "rb"))
      local data = f:read("a")
      f:close()
      for _, n in ipairs{ 0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096 } do
        local path = ("%s/p%d"):format(dir, n)
        local out = assert(io.open(path, "wb"))
        out:write(data:sub(1, n))
        out:close()
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
