--- A real container registry on loopback for the specs, holding a small
-- image built for the test.
--
--   local registry = require "support.registry"
--   local reg = registry.start()          -- in a task (helper.run): docker-registry
--                                          -- (Debian's distribution/registry) on 127.0.0.1
--   reg.host                               -- "127.0.0.1:PORT"
--   local ref, digest = reg:push_test_image("dtlua/test:1")
--   reg:push_tools_image("dtlua/tools:1")  -- the test image plus python3 and git
--                                          -- the test image (built once, cached), pushed
--   reg:push(oci_dir, "name:tag")         -- any OCI layout, with skopeo
--   reg:stop()                             -- kills it, removes its storage
--   registry.test_image() -> { dir =, tag =, os_id = "dtlua-test" }
--   registry.tools_image() -> { dir =, tag = }   -- the same plus python3 and git
--   registry.image_from_tars(dir, { tar... }, config) -> { dir =, tag = }
--                                          -- an OCI layout of crafted layers
--
-- The test image (recipe below, cached in $DTLUA_SPEC_CACHE or
-- /tmp/dtlua-spec-cache keyed by the recipe and the host's busybox) is made
-- of the host's own busybox and the C library it needs, in two layers:
--   1. /bin/busybox with its applets as links (/bin/sh, ls, cat, ...),
--      libc, libresolv and the dynamic loader, /etc/os-release with
--      ID=dtlua-test (no host has that), /etc/passwd, /etc/group, /tmp,
--      /root, /etc/gone and /opt/opq/old (for the whiteouts below);
--   2. /etc/layer2 ("second layer"), an OCI whiteout of /etc/gone and an
--      opaque /opt/opq holding only "new".
-- No bash, no sudo, no python3, no git: the sandbox has to cope.
-- Building it takes well under a second (tar, gzip, sha256 in Lua).
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local helper = require "support.helper"

local util = core.util

local M = {}

M.RECIPE = "dtlua-test-image/4"
M.OS_ID = "dtlua-test"
local APPLETS = { "sh", "ls", "cat", "echo", "id", "mkdir", "rm", "touch", "stat", "env",
                  "sleep", "head", "tail", "grep", "sed", "uname", "whoami", "true", "false",
                  "ps", "printf", "pwd", "test", "wc", "sort", "cp", "mv", "ln", "chmod",
                  "readlink", "dirname", "basename", "find", "kill", "hostname", "tr", "du",
                  "df", "mount", "xargs", "su", "sha256sum", "vi", "tee", "date", "expr",
                  "seq", "cut", "awk", "tar", "gzip", "mkfifo" }

local function sh(script, ...)
  local r, msg = process.run({ "sh", "-c", script, "sh", ... }, { timeout = 120, stderr = "stdout" })
  assert(r, msg)
  assert(r.exit_code == 0, "failed: " .. script .. ": " .. tostring(r.stdout))
  return r.stdout
end

local function write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then util.chmod(path, mode) end
end

local function json(v)
  return require("dtlocal.http").json.encode(v)
end

local function cache_dir(extra)
  local base = os.getenv("DTLUA_SPEC_CACHE") or "/tmp/dtlua-spec-cache"
  os.execute("mkdir -p '" .. base .. "/images'")
  local busybox = util.sha256_file("/usr/bin/busybox")
  return base .. "/images/" .. util.sha256(M.RECIPE .. "\n" .. busybox .. (extra or "")):sub(1, 16)
end

-- one layer from the tar at tarpath (removed): its gzip as a blob;
-- returns { digest =, diff_id =, size = }
local function layer_blob(tarpath, blobs)
  local diff = util.sha256_file(tarpath)
  sh('gzip -n -c "$1" > "$2"', tarpath, tarpath .. ".gz")
  local digest, size = util.sha256_file(tarpath .. ".gz")
  sh('mv "$1" "$2/$3"', tarpath .. ".gz", blobs, digest)
  os.remove(tarpath)
  return { digest = "sha256:" .. digest, diff_id = "sha256:" .. diff, size = size }
end

-- one layer: tar (sorted, numeric owners 0, mtime 0) of dir
local function layer(dir, blobs)
  local tarpath = dir .. ".tar"
  sh('tar -c -f "$1" -C "$2" --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=pax ' ..
     '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .', tarpath, dir)
  return layer_blob(tarpath, blobs)
end

local function blob(blobs, text)
  local hex = util.sha256(text)
  write(blobs .. "/" .. hex, text)
  return "sha256:" .. hex, #text
end

-- An OCI layout at oci (made) of layers ({ digest, diff_id, size } in
-- oci/blobs/sha256, bottom first) and the config object's `config`; tag "test".
local function write_layout(oci, blobs, layers, config)
  local diff_ids, descs = {}, {}
  for i, l in ipairs(layers) do
    diff_ids[i] = l.diff_id
    descs[i] = { mediaType = "application/vnd.oci.image.layer.v1.tar+gzip", digest = l.digest, size = l.size }
  end
  local cdigest, csize = blob(blobs, json({
    architecture = "amd64", os = "linux", config = config,
    rootfs = { type = "layers", diff_ids = diff_ids },
  }))
  local mdigest, msize = blob(blobs, json({
    schemaVersion = 2, mediaType = "application/vnd.oci.image.manifest.v1+json",
    config = { mediaType = "application/vnd.oci.image.config.v1+json", digest = cdigest, size = csize },
    layers = descs,
  }))
  write(oci .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  write(oci .. "/index.json", json({
    schemaVersion = 2,
    manifests = { { mediaType = "application/vnd.oci.image.manifest.v1+json", digest = mdigest,
                    size = msize, annotations = { ["org.opencontainers.image.ref.name"] = "test" } } },
  }))
end

--- An OCI layout in dir (made) whose layers are the given tar files
-- (uncompressed, bottom first; they are consumed), for images a spec
-- crafts (e.g. a layer that tries to leave its directory). Returns
-- { dir =, tag = "test" }, to push with reg:push(img.dir, img.tag, name).
function M.image_from_tars(dir, tars, config)
  local blobs = dir .. "/blobs/sha256"
  sh('mkdir -p "$1"', blobs)
  local layers = {}
  for i, t in ipairs(tars) do layers[i] = layer_blob(t, blobs) end
  write_layout(dir, blobs, layers, config or { Cmd = { "/bin/sh" } })
  return { dir = dir, tag = "test" }
end

-- The two layers of the test image, made under work (l1, l2) and stored
-- as blobs.
local function base_layers(work, blobs)
  local l1, l2 = work .. "/l1", work .. "/l2"
  sh([[set -e
    mkdir -p "$1/bin" "$1/lib/x86_64-linux-gnu" "$1/lib64" "$1/etc" "$1/tmp" "$1/root" \
             "$1/home" "$1/opt/opq" "$1/usr/bin" "$1/var/tmp"
    chmod 1777 "$1/tmp" "$1/var/tmp"; chmod 700 "$1/root"
    cp -L /usr/bin/busybox "$1/bin/busybox"
    for l in libc.so.6 libresolv.so.2; do cp -L "/lib/x86_64-linux-gnu/$l" "$1/lib/x86_64-linux-gnu/$l"; done
    cp -L /lib64/ld-linux-x86-64.so.2 "$1/lib64/ld-linux-x86-64.so.2"
    l1=$1; shift
    for a in "$@"; do ln -s busybox "$l1/bin/$a"; done
    ln -s ../../bin/env "$l1/usr/bin/env"
  ]], l1, table.unpack(APPLETS))
  write(l1 .. "/etc/os-release", 'PRETTY_NAME="dtlua test image"\nNAME="dtlua-test"\nID=' ..
        M.OS_ID .. '\nVERSION_ID="1"\n')
  write(l1 .. "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
  write(l1 .. "/etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
  write(l1 .. "/etc/gone", "removed by the second layer\n")
  write(l1 .. "/opt/opq/old", "hidden by the opaque directory of the second layer\n")
  sh('mkdir -p "$1/etc" "$1/opt/opq"', l2)
  write(l2 .. "/etc/layer2", "second layer\n")
  write(l2 .. "/etc/.wh.gone", "")
  write(l2 .. "/opt/opq/.wh..wh..opq", "")
  write(l2 .. "/opt/opq/new", "new\n")
  return layer(l1, blobs), layer(l2, blobs)
end

local BASE_CONFIG = {
  Env = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "DTLUA_TEST_IMAGE=1" },
  Cmd = { "/bin/sh" }, WorkingDir = "/",
}

-- Build an OCI layout into dir (unless there) with make(work, blobs) ->
-- layers; atomically, as parallel spec runs may race to build it.
local function cached_layout(dir, make, config)
  if util.stat(dir .. "/index.json", false) then return end
  local work = assert(util.mkdtemp(dir .. ".build"))
  local ok, err = pcall(function()
    local oci = work .. "/oci"
    local blobs = oci .. "/blobs/sha256"
    sh('mkdir -p "$1"', blobs)
    write_layout(oci, blobs, make(work, blobs), config)
    if not os.rename(oci, dir) and not util.stat(dir .. "/index.json", false) then
      error("cannot store the test image in " .. dir)
    end
  end)
  sh('rm -rf "$1"', work)
  assert(ok, err)
end

--- Build the test image as an OCI layout (once; cached).
function M.test_image()
  local dir = cache_dir()
  cached_layout(dir, function(work, blobs) return { base_layers(work, blobs) } end, BASE_CONFIG)
  return { dir = dir, tag = "test", os_id = M.OS_ID }
end

--- The test image plus a third layer with the host's python3 (its
-- standard library without tests, caches and site packages) and git, and
-- the libraries they link: for code_run and git in an image. Cached like
-- the test image (keyed by the two programs too); about 45 MB unpacked.
function M.tools_image()
  local py = "/usr/bin/python3.11"
  local dir = cache_dir("tools\n" .. util.sha256_file(py) .. util.sha256_file("/usr/bin/git"))
  cached_layout(dir, function(work, blobs)
    local L1, L2 = base_layers(work, blobs)
    local l3 = work .. "/l3"
    sh([[set -e
      mkdir -p "$1/usr/bin" "$1/usr/lib" "$1/lib/x86_64-linux-gnu"
      cp -L "$2" "$1/usr/bin/python3.11"; ln -s python3.11 "$1/usr/bin/python3"
      cp -L /usr/bin/git "$1/usr/bin/git"
      for lib in $(ldd "$2" /usr/bin/git | awk '/=>/ { print $3 }' | sort -u); do
        [ -e "$1/lib/x86_64-linux-gnu/$(basename "$lib")" ] || cp -L "$lib" "$1/lib/x86_64-linux-gnu/"
      done
      rm -f "$1/lib/x86_64-linux-gnu/libc.so.6"     # the first layer's
      tar -C / -c --exclude=__pycache__ --exclude=site-packages --exclude=dist-packages \
          --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter --exclude=ensurepip \
          --exclude=lib2to3 usr/lib/python3.11 | tar -C "$1" -x
    ]], l3, py)
    return { L1, L2, layer(l3, blobs) }
  end, BASE_CONFIG)
  return { dir = dir, tag = "test", os_id = M.OS_ID }
end

local Registry = {}
Registry.__index = Registry

local function get(url)
  local r = process.run({ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url },
                        { timeout = 5, env = helper.child_env() })
  return r and r.stdout or ""
end

--- Start docker-registry on a free loopback port, storage in a temp dir.
function M.start()
  local dir = helper.tmpdir()
  for _ = 1, 20 do
    local port = 20000 + (util.random_bytes(2):byte(1) * 256 + util.random_bytes(2):byte(2)) % 40000
    local conf = dir .. "/config.yml"
    write(conf, ([[
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
]]):format(dir, port))
    local proc = assert(process.spawn({ "docker-registry", "serve", conf },
                                      { stdin = "null", stdout = "null", stderr = "null",
                                        env = helper.child_env() }))
    local up = false
    local deadline = core.now() + 15
    while core.now() < deadline do
      if proc:status() ~= nil then break end   -- the port was taken: another one
      if get(("http://127.0.0.1:%d/v2/"):format(port)) == "200" then up = true; break end
      scheduler.sleep(0.05)
    end
    if up then
      return setmetatable({ proc = proc, port = port, host = "127.0.0.1:" .. port, dir = dir }, Registry)
    end
    proc:kill("KILL", true)
    proc:wait(5)
  end
  error("cannot start docker-registry on a loopback port")
end

--- Push the OCI layout at oci_dir (its tag `tag`) as name ("repo:tag").
function Registry:push(oci_dir, tag, name)
  local r, msg = process.run({ "skopeo", "copy", "--dest-tls-verify=false", "--retry-times", "0",
                               "oci:" .. oci_dir .. ":" .. tag, "docker://" .. self.host .. "/" .. name },
                             { timeout = 120, stderr = "stdout", env = helper.child_env() })
  assert(r, msg)
  assert(r.exit_code == 0, "skopeo push failed: " .. tostring(r.stdout))
  local r2 = assert(process.run({ "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                                  "docker://" .. self.host .. "/" .. name },
                                { timeout = 60, env = helper.child_env() }))
  assert(r2.exit_code == 0, "skopeo inspect failed: " .. tostring(r2.stderr))
  return self.host .. "/" .. name, (r2.stdout:gsub("%s+$", ""))
end

--- Push the test image as name (default "dtlua/test:1"): its ref and
-- manifest digest.
function Registry:push_test_image(name)
  local img = M.test_image()
  return self:push(img.dir, img.tag, name or "dtlua/test:1")
end

--- Push the tools image (M.tools_image) as name (default "dtlua/tools:1").
function Registry:push_tools_image(name)
  local img = M.tools_image()
  return self:push(img.dir, img.tag, name or "dtlua/tools:1")
end

function Registry:stop()
  if self.proc then
    self.proc:kill("KILL", true)
    self.proc:wait(5)
    self.proc:close()
    self.proc = nil
  end
end

return M
