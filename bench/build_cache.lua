--- bench/build_cache.lua: dtlocal's builder (lua/dtlocal/images/build.lua)
-- on the image store, against buildah building the same Dockerfile in the
-- same run.
--
--   dtlua bench/build_cache.lua [--runs N]
--
-- A registry on loopback (spec/support/registry.lua) holds the busybox test
-- image. The Dockerfile: ENV, three RUN steps (one writing 300 files),
-- WORKDIR, COPY of an uploaded context (a 2 MiB file and a small one),
-- a last RUN. For each builder, the base is pulled first (not timed, the
-- pull is the image store's and skopeo's, see image_store_spec), then:
--   first build   every step run
--   cache hit     the same definition again (Daytona builds a definition once)
--   last changed  the last RUN changed: the steps before it from the cache
-- buildah: `buildah bud --layers` with its own storage (overlay driver),
-- crun, isolation chroot, the same base from the same registry. Each
-- figure is the median of --runs runs (default 3), each in a fresh store.
-- Needs root (both builders run steps in user namespaces of host ranges)
-- and buildah (Debian's; optional: without it only dtlocal's figures).
local _, build_dir = dofile((arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/bench/lib/paths.lua")

local core = require "daytona.core"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local registry = require "support.registry"
local Store = require "dtlocal.images.store"
local build = require "dtlocal.images.build"
local fs = require "dtlocal.fs"

local util = core.util

local runs = require("bench.lib.script").args{ runs = 3 }.runs

local function sh(script, ...)
  local r = assert(process.run({ "sh", "-c", script, "sh", ... }, { timeout = 600, stderr = "stdout" }))
  assert(r.exit_code == 0, script .. ": " .. tostring(r.stdout))
  return r.stdout
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local ran, rerr, rtb = scheduler.run(function()
  local tmp = assert(util.mkdtemp("/tmp/dtlua-bench-build.XXXXXX"))
  local reg = registry.start()
  local ok, err = pcall(function()
    -- the test image, with a history entry per layer (buildah refuses to
    -- commit on a base whose config has none: "history lists 1 non-empty
    -- layers, but we have 3 layers on disk"); both builders use this one
    local json = require("dtlocal.http").json
    local src = registry.test_image()
    local oci = tmp .. "/oci"
    sh('cp -a "$1" "$2"', src.dir, oci)
    local function blob(d) return oci .. "/blobs/sha256/" .. d:gsub("^sha256:", "") end
    local index = json.decode(assert(fs.read_file(oci .. "/index.json")))
    local manifest = json.decode(assert(fs.read_file(blob(index.manifests[1].digest))))
    local config = json.decode(assert(fs.read_file(blob(manifest.config.digest))))
    config.history = json.array{ { created_by = "layer 1" }, { created_by = "layer 2" } }
    local function put(v)
      local text = json.encode(v)
      local d = "sha256:" .. util.sha256(text)
      local f = assert(io.open(blob(d), "wb")); f:write(text); f:close()
      return d, #text
    end
    manifest.config.digest, manifest.config.size = put(config)
    index.manifests[1].digest, index.manifests[1].size = put(manifest)
    local f = assert(io.open(oci .. "/index.json", "wb")); f:write(json.encode(index)); f:close()
    local ref = reg:push(oci, src.tag, "dtlua/bench:1")
    -- the context, as the SDKs upload it: a tar holding ctx/...
    sh('mkdir -p "$1/ctx" && head -c 2097152 /dev/urandom > "$1/ctx/blob.bin" && echo cfg > "$1/ctx/app.cfg"'
      .. ' && tar -c -f "$1/context.tar" --numeric-owner --owner=0 --group=0 -C "$1" ctx', tmp)
    local function dockerfile(last)
      return table.concat({
        "FROM " .. ref,
        "ENV APP=bench",
        "RUN mkdir -p /opt/app && echo one > /opt/app/one",
        "RUN i=0; while [ $i -lt 300 ]; do echo $i > /opt/app/f$i; i=$((i+1)); done",
        "RUN echo $APP > /opt/app/name",
        "WORKDIR /opt/app",
        "COPY ctx/blob.bin ctx/app.cfg ./",
        "RUN " .. last,
      }, "\n") .. "\n"
    end
    local launcher = build_dir .. "/libexec/dtlua/dtlua-sandbox"
    -- each RUN in a cgroup of its own, as dtlocal builds (where enforced)
    local cgroups = require("dtlocal.control.cgroups").new{}
    local figures = { dtlocal = { first = {}, hit = {}, changed = {} }, buildah = { first = {}, hit = {}, changed = {} } }
    for r = 1, runs do
      -- dtlocal
      local store = Store.open(tmp .. "/store" .. r)
      assert(store:pull(ref, {}))
      local function timed(df)
        local t0 = core.now()
        local img, msg = build.build(store, { dockerfile = df, contexts = { tmp .. "/context.tar" },
          context_hashes = { "bench" }, launcher = launcher, cgroups = cgroups })
        assert(img, msg)
        return core.now() - t0
      end
      table.insert(figures.dtlocal.first, timed(dockerfile("sha256sum blob.bin > sum")))
      table.insert(figures.dtlocal.hit, timed(dockerfile("sha256sum blob.bin > sum")))
      table.insert(figures.dtlocal.changed, timed(dockerfile("sha256sum app.cfg > sum")))
      fs.remove_tree(tmp .. "/store" .. r)
      -- buildah, the same Dockerfile and context directory
      if os.execute("command -v buildah >/dev/null 2>&1") then
        local broot = tmp .. "/buildah" .. r
        local base = { "buildah", "--root", broot .. "/root", "--runroot", broot .. "/run", "--storage-driver", "overlay" }
        local function bh(extra)
          local argv = {}
          for _, a in ipairs(base) do argv[#argv + 1] = a end
          for _, a in ipairs(extra) do argv[#argv + 1] = a end
          local p = assert(process.run(argv, { timeout = 600, stderr = "stdout" }))
          assert(p.exit_code == 0, table.concat(argv, " ") .. ": " .. tostring(p.stdout))
        end
        bh({ "pull", "--tls-verify=false", "-q", ref })
        local function btimed(df)
          local f = assert(io.open(tmp .. "/Dockerfile", "wb"))
          f:write(df)
          f:close()
          local t0 = core.now()
          bh({ "bud", "--layers", "--tls-verify=false", "--pull=false", "--isolation", "chroot", "-q",
               "-f", tmp .. "/Dockerfile", "-t", "bench:1", tmp })
          return core.now() - t0
        end
        table.insert(figures.buildah.first, btimed(dockerfile("sha256sum blob.bin > sum")))
        table.insert(figures.buildah.hit, btimed(dockerfile("sha256sum blob.bin > sum")))
        table.insert(figures.buildah.changed, btimed(dockerfile("sha256sum app.cfg > sum")))
        pcall(bh, { "rm", "-a" })
        sh('umount -R "$1" 2>/dev/null; rm -rf "$1"', broot .. "/root/overlay")
        fs.remove_tree(broot)
      end
    end
    cgroups:close()
    print(("build of an 8-step Dockerfile (FROM, ENV, 4 RUN, WORKDIR, COPY of 2 MiB), median of %d runs, base pulled before"):format(runs))
    print(("%-22s %12s %12s %12s"):format("", "first build", "cache hit", "last changed"))
    for _, who in ipairs{ "dtlocal", "buildah" } do
      local f = figures[who]
      if #f.first > 0 then
        print(("%-22s %10.3f s %10.3f s %10.3f s"):format(who == "dtlocal" and "dtlocal (own runner)" or "buildah bud --layers",
          median(f.first), median(f.hit), median(f.changed)))
      end
    end
    local d, b = figures.dtlocal, figures.buildah
    print(("dtlocal: cache hit %.1fx faster than its first build"):format(median(d.first) / median(d.hit)))
    if #b.first > 0 then
      print(("dtlocal vs buildah: first build %.1fx, cache hit %.1fx, last changed %.1fx (buildah time / dtlocal time)")
        :format(median(b.first) / median(d.first), median(b.hit) / median(d.hit), median(b.changed) / median(d.changed)))
    end
  end)
  reg:stop()
  -- buildah's overlay storage leaves mounts under its root (its storage dir
  -- and containers' merged dirs): unmounted, deepest first, before removal
  local mounts = {}
  for line in io.lines("/proc/mounts") do
    local m = line:match("^%S+ (%S+)")
    if m and m:sub(1, #tmp + 1) == tmp .. "/" then mounts[#mounts + 1] = m end
  end
  table.sort(mounts, function(a, b) return #a > #b end)
  for _, m in ipairs(mounts) do process.run({ "umount", m }, { timeout = 60 }) end
  fs.remove_tree(tmp)
  if not ok then error(err, 0) end
end)
if not ran then
  io.stderr:write("bench/build_cache.lua: ", tostring(rerr), "\n", rtb or "", "\n")
  os.exit(1)
end
