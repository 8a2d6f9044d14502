--- dtlocal.control.capture: a sandbox's own files as an image, and a new
-- sandbox's files from one -- what `POST /sandbox/{id}/snapshot` and
-- `POST /sandbox/{id}/fork` are made of (doc/dtlocal.md "Snapshots of a
-- sandbox").
--
-- What a sandbox wrote is in its directory (doc/sandbox.md "Directory
-- layout"): on the host's system, `rootfs/` (its "/": home, root, tmp, ...)
-- and `upper/<usr|etc|var|opt|srv>` over the host's directories; on an
-- image, `rootfs/` and the upper dir over the image's layers.
--
-- A sandbox on an image is captured as a new layer on top of that image's
-- layers (the image store's add_layer: owners shifted from the sandbox's
-- host range to sandbox ids, content-addressed), and the result is an image
-- like a pulled one: sandboxes run on it directly.
--
-- A sandbox on the host's system cannot be a stack of layers (the host's
-- directories are no layer), so its files are kept as one layer holding
-- `rootfs/` and `upper/`, recorded as a *seed* image: a sandbox made from it
-- starts on the host's system with its directory filled from the seed
-- first (owners shifted to its own host range), as if it had written those
-- files itself.
-- A fork of one skips the store: its files are copied once into a staging
-- dir and moved into the fork's directory when it first starts.
--
--   capture.image(images, rec, dir, base_image, log) -> image
--   capture.seed_image(images, rec, dir, log) -> image
--   capture.seed(images, image_id, dir, uid_first)
--   capture.fork_files(images, rec, dir, log) -> staging dir   (a fork of one on the host)
--   capture.seed_from_dir(staging, dir, uid_first)
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local fs = require "dtlocal.fs"

local ipairs, tostring, error, pcall, os, format = ipairs, tostring, error, pcall, os, string.format
local util = core.util

local M = {}

M.TIMEOUT = 3600   -- seconds for one copy

local function xattrs()
  -- the opaque marks of overlay upper dirs: trusted.* as root, user.* unprivileged
  local name = util.getuid() == 0 and "trusted.overlay.opaque" or "user.overlay.opaque"
  return "--xattrs --xattrs-include=" .. name .. " --xattrs-include=security.capability"
end

-- Copy the entries `names` of directory src into directory dst (made if
-- missing), keeping owners (numeric), modes, hard links, devices (overlay
-- whiteouts), holes (a sandbox's huge sparse file stays sparse) and the
-- overlay xattrs; no link is followed. Names that src lacks are skipped.
local function copy(src, names, dst)
  local ok, msg = fs.mkdirs(dst, 448)
  if not ok then error("cannot create " .. dst .. ": " .. tostring(msg), 0) end
  local present = {}
  for _, n in ipairs(names) do
    if util.stat(src .. "/" .. n, false) then present[#present + 1] = n end
  end
  if #present == 0 then return end
  local same = util.getuid() == 0 and " --same-owner --same-permissions" or ""
  local x = xattrs()
  -- the paths are arguments of the shell, never part of its script
  local script = 'src=$1; dst=$2; shift 2; set -o pipefail 2>/dev/null; '
    .. 'tar -c -f - -C "$src" --numeric-owner --sparse ' .. x .. ' --warning=no-file-ignored -- "$@" '
    .. '| tar -x -f - -C "$dst" --numeric-owner' .. same .. ' ' .. x
  local argv = { "bash", "-c", script, "copy", src, dst }
  for _, n in ipairs(present) do argv[#argv + 1] = n end
  local r, rmsg = process.run(argv, { timeout = M.TIMEOUT, stderr = "stdout", max_output = 65536 })
  if not r then error("cannot copy " .. src .. ": " .. tostring(rmsg), 0) end
  if r.exit_code ~= 0 then
    error(format("cannot copy %s: %s", src, (r.stdout or ""):gsub("%s+$", ""):sub(-600)), 0)
  end
end
M.copy = copy

--- Move the owners of the files under dir (a tree nothing else writes: a
-- new sandbox's before it starts, a staging copy) from one id range to
-- another: ids in [from, from + 65536) become id - from + to (0: sandbox
-- ids). chown clears set-user-ID bits, which are put back.
function M.shift(dir, from, to)
  local function map(id)
    if id >= from and id < from + 65536 then return id - from + to end
    return id
  end
  local function walk(path)
    local st = util.stat(path, false)
    if not st then return end
    local nu, ng = map(st.uid), map(st.gid)
    if nu ~= st.uid or ng ~= st.gid then
      local ok, msg = util.chown(path, nu, ng, true)
      if not ok then error("cannot give " .. path .. " its owner: " .. tostring(msg), 0) end
      if st.type == "file" and st.mode & 3072 ~= 0 then util.chmod(path, st.mode & 4095) end
    end
    if st.type == "directory" then
      for _, name in ipairs(util.readdir(path) or {}) do walk(path .. "/" .. name) end
    end
  end
  walk(dir)
end

--- Give the files under dir the host range starting at `base`: sandbox id
-- k becomes base + k.
function M.shift_up(dir, base) M.shift(dir, 0, base) end

-- A staging directory in the store's tmp (removed by the caller).
local function stage(images, what)
  local d, msg = util.mkdtemp(images.tmp .. "/" .. what)
  if not d then error("cannot create a temporary directory: " .. tostring(msg), 0) end
  return d
end

--- The files of a sandbox on the host's system (its directory `dir`, host
-- range from `rec.dtlocal.uid_first`) as a seed image: one layer holding
-- `rootfs/` and `upper/`. Returns the store's image.
function M.seed_image(images, rec, dir, log)
  local st = stage(images, "capture.")
  local ok, res = pcall(function()
    log:line("Copying the sandbox's files")
    copy(dir, { "rootfs", "upper" }, st .. "/seed")
    local layer, digest = images:add_layer(st .. "/seed", { uid_base = rec.dtlocal.uid_first })
    if not layer then error(digest, 0) end
    log:line("Stored the sandbox's files as layer " .. tostring(digest))
    local img, msg = images:put_image{ ref = "dtlocal/seed/" .. rec.id, layers = { digest },
                                       config = { env = {}, cwd = "", user = "", entrypoint = {}, cmd = {} } }
    if not img then error(msg, 0) end
    return img
  end)
  fs.remove_tree(st)
  if not ok then error(res, 0) end
  return res
end

--- Fill a new sandbox's directory `dir` from a seed image (before its
-- first start), owners shifted to the host range at `uid_first` (nil:
-- unprivileged, owners as they are).
function M.seed(images, image_id, dir, uid_first)
  local img = images:image(image_id)
  if not img then error("the snapshot's files (" .. tostring(image_id) .. ") are no longer stored", 0) end
  copy(img.layers[1], { "rootfs", "upper" }, dir)
  if uid_first and uid_first > 0 then
    M.shift_up(dir .. "/rootfs", uid_first)
    M.shift_up(dir .. "/upper", uid_first)
  end
end

--- A fork's copy of a sandbox on the host's system, taken now: its
-- `rootfs/` and `upper/` copied into a staging dir of the store's tmp,
-- owners moved to sandbox ids. Returns the staging dir, for
-- `seed_from_dir` (one copy, where a seed image would take several).
function M.fork_files(images, rec, dir, log)
  local st = stage(images, "fork.")
  local ok, err = pcall(function()
    log:line("Copying the sandbox's files")
    copy(dir, { "rootfs", "upper" }, st .. "/seed")
    local base = rec.dtlocal.uid_first
    if base and base > 0 then M.shift(st .. "/seed", base, 0) end
  end)
  if not ok then
    fs.remove_tree(st)
    error(err, 0)
  end
  return st
end

--- Fill a new sandbox's directory from a fork's staging dir (moved, not
-- copied, on the same file system), owners shifted to its host range at
-- `uid_first`; the staging dir goes.
function M.seed_from_dir(st, dir, uid_first)
  if not util.stat(st .. "/seed", false) then
    error("the fork's files are gone (the server restarted before the fork first started)", 0)
  end
  for _, name in ipairs({ "rootfs", "upper" }) do
    local src = st .. "/seed/" .. name
    if util.stat(src, false) and not os.rename(src, dir .. "/" .. name) then
      copy(st .. "/seed", { name }, dir)   -- another file system: a copy
    end
    if uid_first and uid_first > 0 and util.stat(dir .. "/" .. name, false) then
      M.shift(dir .. "/" .. name, 0, uid_first)
    end
  end
  fs.remove_tree(st)
end

--- The files of a sandbox on an image (`base`, the store's image) as a new
-- image: the base's layers and one more of what the sandbox wrote.
-- `upper` is the sandbox's upper dir over the image. Returns the store's image.
function M.image(images, rec, upper, base, ref, log)
  log:line("Storing the sandbox's changes as a layer")
  local layer, digest = images:add_layer(upper, { uid_base = rec.dtlocal.uid_first })
  if not layer then error(digest, 0) end
  local layers = {}
  for i, l in ipairs(base.layers) do layers[i] = l end
  layers[#layers + 1] = digest
  local img, msg = images:put_image{ ref = ref, layers = layers, config = base.config }
  if not img then error(msg, 0) end
  log:line(format("Stored image %s (%d layers)", tostring(img.id), #layers))
  return img
end

return M
