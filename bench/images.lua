--- Image figures (printed, not asserted; doc/dtlocal.md "Image store",
-- doc/sandbox.md "Image roots").
--
--   build/bin/dtlua bench/images.lua [--n N]            (as root, like dtlocal's CI)
--
-- The test image of spec/support/registry.lua (two layers, busybox and the
-- host's libc: ~1.5 MB) in a real docker-registry on loopback.
-- 1. The image store: first pull + unpack into an empty store, p50 of N
--    (a new store each time), beside a pull that is a cache hit (by digest:
--    no registry) and a `skopeo copy` alone of the same image into an OCI
--    layout (the download part, to see what the unpack adds).
-- 2. dtlocal: POST /api/sandbox -> started, p50 of N, from a snapshot of
--    the cached image beside a create on the host's system (both cold: the
--    warm pool is off, `user` root on both, as an image without USER runs
--    as root), interleaved.
-- 3. Disk: N sandboxes of the image started: the store's layers, the
--    sandboxes' own dirs, against N copies of the layers.
--
-- A run on the development machine (2 cores shared with other work, --n 15):
--   skopeo copy alone 45 ms; first pull + unpack 148 ms (p90 212); pull of a
--   stored digest 0.1 ms. Create -> started, cold: host's system 67 ms, image
--   27 ms (an image root skips the host rule's walk of /etc and /var, and has
--   one overlay instead of five). 15 sandboxes: layers 3020 KiB once, 112 KiB
--   of each sandbox's own (its /etc files, mountpoints), 4700 KiB in all
--   against 45300 KiB for 15 copies.
local core = require "daytona.core"
local daytona = require "daytona"
local json = require("dtlocal.http").json

local ROOT = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/?.lua;" .. ROOT .. "/spec/?.lua;" .. ROOT .. "/lua/?.lua;" .. package.path
local script = require "bench.lib.script"
local registry = require "support.registry"
local Store = require "dtlocal.images.store"
local BUILD = os.getenv("DTLUA_BUILD") or (ROOT .. "/build")
local N = script.args{ n = 15 }.n
assert(core.util.getuid() == 0, "run as root (as dtlocal's CI does: idmapped layers)")

local pct, sh = script.pct, script.sh
local function tmpdir() return script.tmpdir("imgbench") end

local function du_kib(path)
  return tonumber((sh("du -sk " .. path .. " | cut -f1")):match("%d+")) or 0
end

local reg = registry.start()
local ref, digest = reg:push_test_image("bench/test:1")

-- 1. the store
local function store_figures()
  local dir = tmpdir()
  local first, hit, skopeo = {}, {}, {}
  for i = 1, N do
    local t0 = core.now()
    local r = sh(("skopeo copy --src-tls-verify=false docker://%s oci:%s/oci%d:x >/dev/null 2>&1; echo $?")
      :format(ref, dir, i))
    assert(r:match("^0"), "skopeo copy failed")
    skopeo[#skopeo + 1] = (core.now() - t0) * 1000
    local store = Store.open(("%s/store%d"):format(dir, i))
    t0 = core.now()
    assert(store:pull(ref))
    first[#first + 1] = (core.now() - t0) * 1000
    t0 = core.now()
    assert(store:pull(reg.host .. "/bench/test@" .. digest))
    hit[#hit + 1] = (core.now() - t0) * 1000
  end
  sh("rm -rf " .. dir)
  print(("image store, the test image (%s), p50 of %d (p90):"):format(ref, N))
  print(("  skopeo copy alone (download to an OCI layout) %7.1f ms (%6.1f)"):format(pct(skopeo, 50), pct(skopeo, 90)))
  print(("  first pull + unpack into an empty store       %7.1f ms (%6.1f)"):format(pct(first, 50), pct(first, 90)))
  print(("  pull of a stored digest (cache hit)           %7.1f ms (%6.1f)"):format(pct(hit, 50), pct(hit, 90)))
end

local function start_server()
  return script.start_server{ build = BUILD, timeout = 120 }
end

local function create_ms(srv, body)
  local t0 = core.now()
  local st, b = srv.call("POST", "/sandbox", body)
  local id = st == 200 and b.id
  assert(id, "create: " .. tostring(st) .. " " .. json.encode(b or {}))
  local state = b.state
  while state ~= "started" do
    assert(state == "creating" or state == "starting", "create: state " .. tostring(state))
    daytona.sleep(0.001)
    local _, s = srv.call("GET", "/sandbox/" .. id)
    state = s.state
  end
  return (core.now() - t0) * 1000, id
end

-- 2. create -> started; 3. disk
local function sandbox_figures()
  local srv = start_server()
  local st, snap = srv.call("POST", "/snapshots", { name = "bench-image", imageName = ref })
  assert(st == 200, "snapshot: " .. json.encode(snap or {}))
  repeat
    daytona.sleep(0.05)
    local _, s = srv.call("GET", "/snapshots/" .. snap.id)
    assert(s.state ~= "error", "snapshot in error: " .. tostring(s.errorReason))
  until s.state == "active"
  local host, image = {}, {}
  for _ = 1, N do
    local h, hid = create_ms(srv, { user = "root" })
    local m, mid = create_ms(srv, { snapshot = "bench-image" })
    host[#host + 1], image[#image + 1] = h, m
    srv.call("DELETE", "/sandbox/" .. hid)
    srv.call("DELETE", "/sandbox/" .. mid)
  end
  print(("dtlocal, POST /api/sandbox -> started, cold, p50 of %d (p90):"):format(N))
  print(("  host's system              %6.1f ms (%5.1f)"):format(pct(host, 50), pct(host, 90)))
  print(("  image (cached snapshot)    %6.1f ms (%5.1f)   difference %+.1f ms"):format(pct(image, 50),
    pct(image, 90), pct(image, 50) - pct(host, 50)))
  daytona.sleep(2)   -- the deletes end
  local ids = {}
  for _ = 1, N do
    local _, id = create_ms(srv, { snapshot = "bench-image" })
    ids[#ids + 1] = id
  end
  local layers = du_kib(srv.state .. "/images/layers")
  local own = 0
  for _, id in ipairs(ids) do own = own + du_kib(srv.state .. "/sandboxes/" .. id) end
  print(("disk, %d started sandboxes of the image:"):format(N))
  print(("  the image's layers (one copy)   %6d KiB"):format(layers))
  print(("  the sandboxes' own dirs, total  %6d KiB (%.0f KiB each)"):format(own, own / N))
  print(("  together                        %6d KiB, against %d KiB for %d copies of the layers"):format(
    layers + own, layers * N, N))
  for _, id in ipairs(ids) do srv.call("DELETE", "/sandbox/" .. id) end
  daytona.sleep(1)
  srv.stop()
end

store_figures()
local ok, err = pcall(sandbox_figures)
reg:stop()
require("support.helper").cleanup()
if not ok then error(err, 0) end
