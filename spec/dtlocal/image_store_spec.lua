-- The image store (lua/dtlocal/images/store.lua) against a real registry
-- on loopback (docker-registry, spec/support/registry.lua): pulls by tag and
-- by digest, layers unpacked once and shared, OCI whiteouts as overlay
-- whiteouts, layers and images made here, and the failures: an unknown
-- image, an unreachable registry, a registry answering garbage, a layer
-- that tries to leave its directory. After a failure nothing is left in
-- the store.
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local helper = require "support.helper"
local registry = require "support.registry"
local Store = require "dtlocal.images.store"

local util = core.util
local IS_ROOT = util.getuid() == 0

local reg, ref, digest

-- nothing half-made: no layer, no record, nothing in tmp/
local function assert_empty(store)
  assert.are.same({}, util.readdir(store.dir .. "/layers"))
  assert.are.same({}, util.readdir(store.dir .. "/images"))
  assert.are.same({}, util.readdir(store.dir .. "/tmp"))
end

local function sh(script, ...)
  local r = assert(process.run({ "sh", "-c", script, "sh", ... }, { timeout = 60, stderr = "stdout" }))
  assert.are.equal(0, r.exit_code, r.stdout)
  return r.stdout
end

describe("dtlocal image store", function()
  setup(function()
    helper.run(function()
      reg = registry.start()
      ref, digest = reg:push_test_image("dtlua/test:1")
    end)
  end)
  teardown(function()
    if reg then helper.run(function() reg:stop() end) end
    helper.cleanup()
  end)

  it("parses references as Docker does", function()
    assert.are.equal("docker.io/library/debian:latest", Store.parse_ref("debian").ref)
    assert.are.equal("docker.io/library/python:3.12-slim", Store.parse_ref("python:3.12-slim").ref)
    assert.are.equal("ghcr.io/a/b:1", Store.parse_ref("ghcr.io/a/b:1").ref)
    assert.are.equal("127.0.0.1:5000", Store.parse_ref("127.0.0.1:5000/x/y:2").registry)
    local d = "sha256:" .. string.rep("a", 64)
    assert.are.equal("docker.io/library/x@" .. d, Store.parse_ref("x@" .. d).ref)
    for _, bad in ipairs({ "", "UPPER/case", "a b", "x@sha256:12", "x:", "x:-t", "../x", "x//y" }) do
      local p, msg = Store.parse_ref(bad)
      assert.is_nil(p, bad)
      assert.is_string(msg)
    end
  end)

  it("pulls an image: layers unpacked with overlay whiteouts, config, progress lines", function()
    helper.run(function()
      local store = Store.open(helper.tmpdir() .. "/images")
      local lines = {}
      local img = assert(store:pull(ref, { on_log = function(l) lines[#lines + 1] = l end }))
      assert.matches("^sha256:%x+$", img.id)
      assert.are.equal(digest, img.digest)
      assert.are.equal(ref, img.ref)
      assert.are.equal(2, #img.layers)
      assert.are.same({ "/bin/sh" }, img.config.cmd)
      assert.are.equal("/", img.config.cwd)
      assert.truthy(img.size > 0)
      local text = table.concat(lines, "\n")
      assert.matches("pulling " .. ref:gsub("%p", "%%%0"), text)
      assert.matches("Copying blob", text)
      assert.matches("unpacked", text)
      -- layer 1 as built; layer 2's OCI whiteouts are overlay whiteouts
      assert.matches("ID=dtlua%-test", helper.read_file(img.layers[1] .. "/etc/os-release"))
      local wh = util.stat(img.layers[2] .. "/etc/gone", false)
      assert.are.equal("char", wh.type)
      assert.is_nil(util.stat(img.layers[2] .. "/etc/.wh.gone", false))
      assert.is_nil(util.stat(img.layers[2] .. "/opt/opq/.wh..wh..opq", false))
      local xattr = IS_ROOT and "trusted.overlay.opaque" or "user.overlay.opaque"
      assert.are.equal("y", sh('getfattr --only-values -n "$1" "$2" 2>/dev/null || python3 -c ' ..
        '"import os,sys; sys.stdout.write(os.getxattr(sys.argv[2], sys.argv[1]).decode())" "$1" "$2"',
        xattr, img.layers[2] .. "/opt/opq"))
      if IS_ROOT then
        assert.are.equal(0, util.stat(img.layers[1] .. "/bin/busybox", false).uid)
      end
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
      -- found again by id, short id, digest, ref and ref@digest
      for _, key in ipairs({ img.id, img.id:sub(8, 20), digest, ref, reg.host .. "/dtlua/test@" .. digest }) do
        assert.are.equal(img.id, (store:image(key) or {}).id, key)
      end
      assert.are.equal(1, #store:images())
    end)
  end)

  it("shares layers between images and pulls a stored digest without the registry", function()
    helper.run(function()
      local store = Store.open(helper.tmpdir() .. "/images")
      local a = assert(store:pull(ref))
      local ref2 = reg:push_test_image("other/name:2")
      local b = assert(store:pull(ref2))
      assert.are.equal(a.id, b.id)   -- the same image under two names
      assert.are.same(a.layers, b.layers)
      assert.are.equal(2, #util.readdir(store.dir .. "/layers"))
      -- by digest: a cache hit, even with the registry gone
      local byd = reg.host .. "/dtlua/test@" .. digest
      local other = registry.start()
      other:stop()
      local t0 = core.now()
      local c = assert(store:pull(byd))
      assert.are.equal(a.id, c.id)
      assert.truthy(core.now() - t0 < 0.5)
      -- removing one name keeps the layers the other uses; the last removes them
      assert(store:remove_image(a.id))
      assert.are.same({}, util.readdir(store.dir .. "/layers"))
      assert.is_nil(store:image(ref))
    end)
  end)

  it("refuses an unknown image, an unreachable registry and garbage, leaving nothing", function()
    helper.run(function()
      local store = Store.open(helper.tmpdir() .. "/images")
      local img, msg, code = store:pull(reg.host .. "/dtlua/nope:1")
      assert.is_nil(img)
      assert.are.equal("ENOTFOUND", code)
      assert.matches("dtlua/nope:1", msg)
      assert.matches("registry " .. reg.host, msg, 1, true)
      assert_empty(store)
      -- nothing listens there
      img, msg, code = store:pull("127.0.0.1:9/x/y:1", { timeout = 30 })
      assert.is_nil(img)
      assert.are.equal("EUNREACHABLE", code)
      assert.matches("registry 127.0.0.1:9", msg, 1, true)
      assert_empty(store)
      -- an HTTP server answering junk to every request
      local dir = helper.tmpdir()
      local srv = assert(process.spawn({ "python3", "-c", [[
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.end_headers(); self.wfile.write(b"\x00\xffthis is not a registry{{{")
    do_HEAD = do_GET
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
]] }, { stdin = "null", stdout = "pipe", stderr = "null", cwd = dir }))
      local port = srv:read("stdout", 10):match("(%d+)")
      img, msg, code = store:pull("127.0.0.1:" .. port .. "/junk/image:1", { timeout = 30 })
      srv:kill("KILL", true)
      srv:wait(5)
      assert.is_nil(img)
      assert.are.equal("EREGISTRY", code)
      assert.matches("registry 127.0.0.1:" .. port, msg, 1, true)
      assert_empty(store)
      -- insecure is for loopback registries only; a bad ref is EINVAL
      img, msg, code = store:pull("example.com/x:1", { insecure = true })
      assert.are.equal("EINVAL", code)
      img, msg, code = store:pull("NOT A REF")
      assert.are.equal("EINVAL", code)
      assert_empty(store)
    end)
  end)

  it("gives up on a registry that never answers, and pulls the same image twice at once", function()
    helper.run(function()
      local store = Store.open(helper.tmpdir() .. "/images")
      -- accepts connections and says nothing
      local srv = assert(process.spawn({ "python3", "-c", [[
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
]] }, { stdin = "null", stdout = "pipe", stderr = "null" }))
      local port = srv:read("stdout", 10):match("(%d+)")
      local t0 = core.now()
      local img, msg, code = store:pull("127.0.0.1:" .. port .. "/silent/image:1", { timeout = 2 })
      srv:kill("KILL", true)
      srv:wait(5)
      assert.is_nil(img)
      assert.are.equal("ETIMEDOUT", code)
      assert.matches("registry 127.0.0.1:" .. port, msg, 1, true)
      assert.truthy(core.now() - t0 < 10)
      assert_empty(store)
      -- two tasks pull the same image into one store at once: one copy of each layer
      local scheduler = require "daytona.runtime.scheduler"
      local results = scheduler.all({
        scheduler.spawn(function() return store:pull(ref) end),
        scheduler.spawn(function() return store:pull(ref) end),
      })
      assert.are.equal(results[1].id, results[2].id)
      assert.are.equal(2, #util.readdir(store.dir .. "/layers"))
      assert.are.equal(1, #store:images())
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
    end)
  end)

  it("refuses layers whose entries would leave the layer directory", function()
    helper.run(function()
      local dir = helper.tmpdir()
      -- tar archives made by python's tarfile, which writes what it is told
      local function make(name, script)
        sh('cd "$1" && python3 -c "$2"', dir, "import tarfile, io\n" ..
           "t = tarfile.open('" .. name .. "', 'w')\n" ..
           "def f(n, data=b'x'):\n" ..
           "    i = tarfile.TarInfo(n); i.size = len(data); t.addfile(i, io.BytesIO(data))\n" ..
           "def l(n, target, kind=tarfile.SYMTYPE):\n" ..
           "    i = tarfile.TarInfo(n); i.type = kind; i.linkname = target; t.addfile(i)\n" ..
           "def d(n):\n" ..
           "    i = tarfile.TarInfo(n); i.type = tarfile.DIRTYPE; t.addfile(i)\n" ..
           script .. "\nt.close()\n")
        return dir .. "/" .. name
      end
      local cases = {
        { make("abs.tar", "f('/etc/evil')"), "absolute" },
        { make("dotdot.tar", "f('a/../../evil')"), "'..'" },
        { make("link.tar", "l('esc', '/etc')\nf('esc/evil')"), "goes through" },
        { make("link2.tar", "d('a')\nl('a/b', '../..')\nf('a/b/c/evil')"), "goes through" },
        { make("hard.tar", "l('h', '../etc/passwd', tarfile.LNKTYPE)"), "hard link" },
        { make("hard2.tar", "l('s', '/etc')\nl('h', 's/passwd', tarfile.LNKTYPE)"), "hard link through" },
        { make("redef.tar", "l('x', '/')\nd('x')\nf('x/evil')"), "a directory over a link" },
      }
      for _, c in ipairs(cases) do
        local res, msg = Store.check_tar(c[1])
        assert.is_nil(res, c[1])
        assert.matches(c[2], msg, 1, true)
      end
      -- and a fine one passes, with its whiteouts listed
      local good = make("good.tar", "d('etc')\nf('etc/.wh.gone', b'')\nd('opt')\nf('opt/.wh..wh..opq', b'')\n" ..
                        "l('etc/link', '/etc/passwd')\nf('etc/x')")
      local res = assert(Store.check_tar(good))
      assert.are.same({ "etc/.wh.gone" }, res.whiteouts)
      assert.are.same({ "opt" }, res.opaque)
      assert.is_nil(Store.check_tar(dir .. "/nothing.tar"))
      local junk = dir .. "/junk.tar"
      local f = assert(io.open(junk, "wb")); f:write(string.rep("junk", 300)); f:close()
      local r2, m2 = Store.check_tar(junk)
      assert.is_nil(r2)
      assert.matches("not a tar", m2)
    end)
  end)

  it("refuses an image from the registry whose layer tries to escape, leaving nothing", function()
    helper.run(function()
      local dir = helper.tmpdir()
      sh('cd "$1" && python3 -c "$2"', dir, [[
import tarfile, io
def f(t, n, data=b"x"):
    i = tarfile.TarInfo(n); i.size = len(data); t.addfile(i, io.BytesIO(data))
with tarfile.open("good.tar", "w") as t:
    i = tarfile.TarInfo("etc"); i.type = tarfile.DIRTYPE; t.addfile(i)
    f(t, "etc/fine")
with tarfile.open("evil.tar", "w") as t:
    i = tarfile.TarInfo("x"); i.type = tarfile.SYMTYPE; i.linkname = "/"; t.addfile(i)
    f(t, "x/tmp/escaped-by-a-layer")
]])
      local img = registry.image_from_tars(dir .. "/oci", { dir .. "/good.tar", dir .. "/evil.tar" })
      local evil = reg:push(img.dir, img.tag, "evil/escape:1")
      local store = Store.open(helper.tmpdir() .. "/images")
      local lines = {}
      local got, msg, code = store:pull(evil, { on_log = function(l) lines[#lines + 1] = l end })
      assert.is_nil(got)
      assert.are.equal("ELAYER", code)
      assert.matches('entry "x/tmp/escaped-by-a-layer": goes through "x"', msg, 1, true)
      assert.matches("error: ", table.concat(lines, "\n"), 1, true)
      assert.is_nil(util.stat("/tmp/escaped-by-a-layer", false))
      assert_empty(store)   -- the good layer, unpacked first, went too
    end)
  end)

  it("imports a directory as a layer and records an image of stored layers", function()
    helper.run(function()
      local store = Store.open(helper.tmpdir() .. "/images")
      local base = assert(store:pull(ref))
      local up = helper.tmpdir() .. "/upper"
      sh('mkdir -p "$1/etc" "$1/opt/data" && echo built > "$1/etc/built" && echo d > "$1/opt/data/f"', up)
      assert(util.whiteout(up .. "/etc/layer2"))
      if IS_ROOT then sh('chown -R 200000:200000 "$1/etc/built"', up) end
      local path, ldigest = store:add_layer(up, { uid_base = 200000 })
      assert(path, ldigest)
      assert.matches("^sha256:%x+$", ldigest)
      assert.are.equal("char", util.stat(path .. "/etc/layer2", false).type)
      assert.are.equal("built\n", helper.read_file(path .. "/etc/built"))
      if IS_ROOT then assert.are.equal(0, util.stat(path .. "/etc/built", false).uid) end
      -- the same content again: the same layer
      local path2, d2 = store:add_layer(up, { uid_base = 200000 })
      assert.are.equal(path, path2)
      assert.are.equal(ldigest, d2)
      local layers = { base.layers[1], base.layers[2], ldigest }
      local img = assert(store:put_image{ ref = "dtlocal/built:1", layers = layers,
                                          config = { env = { "A=1" }, cwd = "/opt", cmd = { "sh" } } })
      assert.are.equal(3, #img.layers)
      assert.are.equal(path, img.layers[3])
      assert.are.same({ "A=1" }, img.config.env)
      assert.are.equal(img.id, store:image("dtlocal/built:1").id)
      -- a layer that is not stored is refused
      local bad, msg, code = store:put_image{ layers = { "sha256:" .. string.rep("0", 64) } }
      assert.is_nil(bad)
      assert.are.equal("EINVAL", code)
      assert.matches("not in the store", msg)
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
      -- removing the base keeps the layers the built image uses
      assert(store:remove_image(base.id))
      assert.are.equal(3, #util.readdir(store.dir .. "/layers"))
      assert(store:remove_image(img.id))
      assert.are.same({}, util.readdir(store.dir .. "/layers"))
    end)
  end)
end)
