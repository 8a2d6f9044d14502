--- dtlocal.images.store: container images on disk, their layers unpacked once.
--
-- The store is a directory (dtlocal's `<state>/images`, 0700):
--   layers/<hex>/        one unpacked layer in overlayfs "upper" format: files
--                        as the layer has them, OCI whiteouts turned into
--                        overlay whiteouts (character device 0/0) and opaque
--                        directories (xattr trusted.overlay.opaque=y as root,
--                        user.overlay.opaque unprivileged). <hex> is the
--                        sha256 of the layer's uncompressed tar (its OCI
--                        "diff_id"), so an image sharing a layer with another
--                        shares the directory: one copy on disk.
--   images/<hex>.json    one image's record; <hex> is its id's (the sha256 of
--                        its config blob, as `docker images` shows it)
--   tmp/                 pulls and unpacks in progress (a pull's OCI layout,
--                        a layer being unpacked): everything is made there and
--                        renamed into place once complete, so a failure (or a
--                        crash: tmp/ is emptied at open) leaves nothing
--                        half-made in layers/ or images/.
--
-- API (other modules code against it: keep it stable)
--
--   local Store = require "dtlocal.images.store"
--   local store = Store.open(dir)                 -- raises if dir cannot be made
--
--   store:pull(ref, opts) -> image | nil, message, code
--     ref: "debian:12", "docker.io/library/alpine:3", "127.0.0.1:5000/x:1",
--     "name@sha256:<64 hex>"; normalised as Docker does (docker.io,
--     library/, :latest). opts: on_log = function(line) (progress lines:
--     what a build log shows), timeout = seconds for the download (600),
--     insecure = true (plain HTTP / no TLS verification: loopback
--     registries only; a loopback registry gets it anyway), refresh = true
--     (ask the registry again even when the tag is stored).
--     An image already stored under a digest ref is returned without any
--     network; a stored tag too unless refresh. codes: EINVAL (bad ref),
--     ENOTFOUND (the registry has no such image), EUNREACHABLE (cannot
--     connect / resolve), EREGISTRY (the registry answered something that is
--     not an image), ETIMEDOUT, ELAYER (a layer is refused: escapes its
--     directory, bad digest, unsupported entry), EIO. Messages name the ref
--     and the registry.
--   image = { id = "sha256:<hex>" (config digest), ref = ref (normalised),
--             refs = { ref... }, digest = "sha256:<hex>" (manifest digest),
--             layers = { "/abs/layers/<hex>", ... } (bottom first),
--             layer_digests = { "sha256:<diff id>", ... },
--             config = { env = { "K=V"... }, cwd = "/..." | "", user = "" | "name[:group]",
--                        entrypoint = { ... }, cmd = { ... } },
--             size = bytes (pulled: the layers' blobs as the registry serves
--                  them; made here: the layers' files) }
--   store:image(id_or_ref) -> image | nil   -- id (sha256:hex, hex, or a prefix
--                                              of >= 12 hex), digest, ref, ref@digest
--   store:images() -> { image... }          -- sorted by ref
--   store:remove_image(id_or_ref) -> true | nil, message, code
--                                           -- layers no other image uses go too
--   store:add_layer(dir, opts) -> layer_path, "sha256:<hex>" | nil, message, code
--     Import a directory in overlay-upper format (a sandbox's upper dir, a
--     build step's) as a new layer: copied (never moved; whiteouts and
--     opaque marks kept, trusted.overlay.opaque rewritten for the store's
--     mode), owners shifted by opts.uid_base (a sandbox's host range:
--     host id base+k becomes k, as the layers store sandbox ids). The digest
--     is the sha256 of the layer's tar (sorted names, numeric owners), so the
--     same content gives the same layer.
--   store:put_image{ ref =, layers = { path or "sha256:<hex>"... } (bottom
--     first, existing layers), config = { env, cwd, user, entrypoint, cmd } }
--     -> image | nil, message, code   -- its id is the sha256 of its layers
--                                        and config; digest = id
--   store:layer_path("sha256:<hex>") -> path | nil
--   store:mktemp(prefix) -> dir | nil, message, code
--     A new private directory in tmp/ (on the store's file system, so what
--     is made there can be renamed into place; emptied at the next open):
--     for builders of layers. store.tmp is that directory's parent.
--
-- Unpacking is our own (no umoci): each layer is decompressed to a tar,
-- checked against its diff_id, read entry by entry here and refused when an
-- entry would land outside the layer directory (an absolute name, a ".."
-- part, a name or hard link through a symlink of the same layer), then
-- extracted by GNU tar into an empty temporary directory. Nothing else can
-- write there, and no entry passes through a symlink, so tar cannot be led
-- outside it.
local core = require "daytona.core"
local fs = require "dtlocal.fs"
local http = require "dtlocal.http"
local process = require "daytona.runtime.process"

local type, pairs, ipairs, tostring, tonumber, setmetatable, error, math, string, table, io, os =
  type, pairs, ipairs, tostring, tonumber, setmetatable, error, math, string, table, io, os
local format, concat = string.format, table.concat

local util = core.util
local json = http.json

local M = {}

M.PULL_TIMEOUT = 600
M.TAR_TIMEOUT = 3600

local Store = {}
Store.__index = Store
Store.__name = "dtlocal.ImageStore"

local function fail(msg, code) return nil, msg, code end

local function privileged() return util.getuid() == 0 end

--- Open (create) the store at dir; raises a plain error when it cannot.
function M.open(dir)
  if type(dir) ~= "string" or dir == "" then error("image store: a directory is needed", 2) end
  dir = fs.realpath(dir)
  for _, d in ipairs({ dir, dir .. "/layers", dir .. "/images", dir .. "/tmp" }) do
    local ok, msg = fs.mkdirs(d, 448)
    if not ok then error("image store: cannot create " .. d .. ": " .. tostring(msg), 0) end
  end
  util.chmod(dir, 448)
  -- what a killed server left half-made
  for _, name in ipairs(util.readdir(dir .. "/tmp") or {}) do
    fs.remove_tree(dir .. "/tmp/" .. name)
  end
  return setmetatable({ dir = dir, layers_dir = dir .. "/layers", images_dir = dir .. "/images",
                        tmp = dir .. "/tmp" }, Store)
end
M.new = M.open


---------------------------------------------------------------------------
-- references
---------------------------------------------------------------------------

local function valid_path_component(c)
  return c:match("^[a-z0-9]+$") ~= nil or
    (c:match("^[a-z0-9][a-z0-9._-]*[a-z0-9]$") ~= nil and not c:find("[._-][._-][._-]")
     and not c:find("%.%."))
end

--- Parse an image reference as Docker does. Returns { registry =, repo =,
-- tag =, digest =, name = "registry/repo", ref = normalised } or nil, message.
function M.parse_ref(ref)
  if type(ref) ~= "string" or ref == "" then return nil, "an image reference is needed" end
  if #ref > 512 or ref:find("[%s%c]") then return nil, format("invalid image reference %q", ref) end
  local rest, digest = ref, nil
  local at = ref:find("@", 1, true)
  if at then
    rest, digest = ref:sub(1, at - 1), ref:sub(at + 1)
    if not digest:match("^sha256:%x+$") or #digest ~= 71 or digest:find("[A-F]") then
      return nil, format("invalid digest in image reference %q (sha256:<64 lower-case hex> expected)", ref)
    end
  end
  local tag
  local name = rest
  local colon = rest:match("^.*():")
  if colon and not rest:sub(colon + 1):find("/", 1, true) then
    name, tag = rest:sub(1, colon - 1), rest:sub(colon + 1)
    if not tag:match("^[%w_][%w_.-]*$") or #tag > 128 then
      return nil, format("invalid tag %q in image reference %q", tag, ref)
    end
  end
  if name == "" then return nil, format("invalid image reference %q", ref) end
  local registry, repo
  local first, after = name:match("^([^/]+)/(.+)$")
  if first and (first:find("[.:]") or first == "localhost") then
    registry, repo = first, after
    local host = registry:match("^(.-):%d+$") or registry
    local name_ok = host:match("^[%w.-]+$") and not host:find("..", 1, true) and
                    not host:match("^[.-]") and not host:match("[.-]$")
    if not name_ok and not registry:match("^%[[%x:]+%]:?%d*$") then
      return nil, format("invalid registry %q in image reference %q", registry, ref)
    end
  else
    registry, repo = "docker.io", name
  end
  if registry == "docker.io" and not repo:find("/", 1, true) then repo = "library/" .. repo end
  for c in (repo .. "/"):gmatch("([^/]*)/") do
    if not valid_path_component(c) then
      return nil, format("invalid repository name %q in image reference %q (lower-case letters, digits, . _ -)", repo, ref)
    end
  end
  if not tag and not digest then tag = "latest" end
  local full = registry .. "/" .. repo
  local norm = full .. (tag and (":" .. tag) or "") .. (digest and ("@" .. digest) or "")
  return { registry = registry, repo = repo, tag = tag, digest = digest, name = full, ref = norm }
end

-- A registry on this machine: plain HTTP and self-signed certificates are
-- what a test or a local mirror has, and nothing crosses a network.
local function loopback(registry)
  local host = registry:match("^%[([%x:]+)%]") or registry:match("^([^:]+)")
  return host == "localhost" or host == "::1" or (host and host:match("^127%.%d+%.%d+%.%d+$") ~= nil)
end
M.loopback = loopback


---------------------------------------------------------------------------
-- records
---------------------------------------------------------------------------

local function hex_of(digest)
  return type(digest) == "string" and digest:match("^sha256:(%x+)$") or nil
end

local function strings(t)
  local out = {}
  if type(t) == "table" then
    for _, v in ipairs(t) do if type(v) == "string" then out[#out + 1] = v end end
  end
  return out
end

-- The config as the API gives it, from ours or from an OCI config's
-- "config" object.
local function norm_config(c)
  c = type(c) == "table" and c or {}
  return {
    env = strings(c.env or c.Env), cwd = type(c.cwd or c.WorkingDir) == "string" and (c.cwd or c.WorkingDir) or "",
    user = type(c.user or c.User) == "string" and (c.user or c.User) or "",
    entrypoint = strings(c.entrypoint or c.Entrypoint), cmd = strings(c.cmd or c.Cmd),
  }
end

local function encode_record(rec)
  local c = rec.config
  return json.encode({
    id = rec.id, ref = rec.ref, refs = json.array(rec.refs), digest = rec.digest,
    layers = json.array(rec.layers), size = rec.size, created = rec.created,
    config = { env = json.array(c.env), cwd = c.cwd, user = c.user,
               entrypoint = json.array(c.entrypoint), cmd = json.array(c.cmd) },
  })
end

-- The API's image table of a record.
function Store:_image(rec)
  local layers, digests = {}, {}
  for i, hex in ipairs(rec.layers) do
    layers[i] = self.layers_dir .. "/" .. hex
    digests[i] = "sha256:" .. hex
  end
  return { id = rec.id, ref = rec.ref, refs = strings(rec.refs), digest = rec.digest,
           layers = layers, layer_digests = digests, config = norm_config(rec.config),
           size = math.tointeger(rec.size) or 0, created = rec.created }
end

function Store:_records()
  local out = {}
  for _, name in ipairs(util.readdir(self.images_dir) or {}) do
    local hex = name:match("^(%x+)%.json$")
    local rec = hex and self:_record(hex)
    if rec then out[#out + 1] = rec end
  end
  return out
end

function Store:_save(rec)
  local store = require "dtlocal.control.store"
  local ok, msg = store.write_atomic(self.images_dir .. "/" .. hex_of(rec.id) .. ".json",
                                     encode_record(rec))
  if not ok then return fail("cannot save the image record: " .. tostring(msg), "EIO") end
  return true
end

-- One record by its id's hex, or nil.
function Store:_record(hex)
  local text = fs.read_file(self.images_dir .. "/" .. hex .. ".json")
  local rec = text and json.decode(text)
  if type(rec) ~= "table" or hex_of(rec.id) ~= hex or type(rec.layers) ~= "table" then return nil end
  rec.refs = strings(rec.refs)
  rec.layers = strings(rec.layers)
  return rec
end

function Store:_find(key)
  if type(key) ~= "string" or key == "" then return nil end
  -- a full id (what sandbox records hold): its file, without reading the others
  local full = key:match("^sha256:(%x+)$") or key:match("^(%x+)$")
  if full and #full == 64 then
    local rec = self:_record(full)
    if rec then return rec end
  end
  local recs = self:_records()
  local hex = key:match("^sha256:(%x+)$") or (key:match("^%x+$") and key)
  if hex and #hex >= 12 then
    local hit
    for _, rec in ipairs(recs) do
      if hex_of(rec.id):sub(1, #hex) == hex then
        if hit then return nil end   -- ambiguous prefix
        hit = rec
      end
    end
    if hit then return hit end
    for _, rec in ipairs(recs) do if rec.digest == key then return rec end end
  end
  local p = M.parse_ref(key)
  for _, rec in ipairs(recs) do
    for _, r in ipairs(rec.refs) do
      if r == key or (p and r == p.ref) then return rec end
    end
  end
  -- name@digest: the image of that manifest, whatever it was pulled as
  if p and p.digest then
    for _, rec in ipairs(recs) do
      if rec.digest == p.digest then
        for _, r in ipairs(rec.refs) do
          local q = M.parse_ref(r)
          if q and q.name == p.name then return rec end
        end
      end
    end
  end
  return nil
end

--- The image with this id, digest or ref, or nil.
function Store:image(key)
  local rec = self:_find(key)
  return rec and self:_image(rec) or nil
end

--- Every stored image, sorted by ref.
function Store:images()
  local out = {}
  for _, rec in ipairs(self:_records()) do out[#out + 1] = self:_image(rec) end
  table.sort(out, function(a, b) return (a.ref or a.id) < (b.ref or b.id) end)
  return out
end

--- The directory of a stored layer ("sha256:<hex>" or "<hex>"), or nil.
function Store:layer_path(digest)
  local hex = hex_of(digest) or (type(digest) == "string" and digest:match("^%x+$"))
  if not hex or #hex ~= 64 then return nil end
  local st = util.stat(self.layers_dir .. "/" .. hex, false)
  return st and st.type == "directory" and (self.layers_dir .. "/" .. hex) or nil
end

-- Remove the layers of `hexes` that no record uses.
function Store:_gc_layers(hexes)
  local used = {}
  for _, rec in ipairs(self:_records()) do
    for _, h in ipairs(rec.layers) do used[h] = true end
  end
  for _, h in ipairs(hexes) do
    if not used[h] then
      local ok, msg, code = fs.remove_tree(self.layers_dir .. "/" .. h)
      if not ok and code ~= "ENOENT" then return fail("cannot remove layer " .. h .. ": " .. tostring(msg), "EIO") end
    end
  end
  return true
end

--- Remove an image; its layers that no other image uses are removed too.
function Store:remove_image(key)
  local rec = self:_find(key)
  if not rec then return fail(format("no image %s in the store", tostring(key)), "ENOTFOUND") end
  local ok, msg = os.remove(self.images_dir .. "/" .. hex_of(rec.id) .. ".json")
  if not ok then return fail("cannot remove the image record: " .. tostring(msg), "EIO") end
  return self:_gc_layers(rec.layers)
end


---------------------------------------------------------------------------
-- tar: checking a layer before it is extracted
---------------------------------------------------------------------------

local function octal(s)
  s = s:gsub("%z.*$", ""):gsub("^%s+", ""):gsub("%s+$", "")
  if s == "" then return 0 end
  if not s:match("^[0-7]+$") then return nil end
  return tonumber(s, 8)
end

local function tar_number(field)
  local b = field:byte(1)
  if b and b >= 0x80 then   -- base-256 (GNU), for sizes >= 8 GiB
    if b == 0xff then return nil end   -- negative
    local n = b & 0x7f
    for i = 2, #field do n = n * 256 + field:byte(i) end
    return n
  end
  return octal(field)
end

local function cstr(s) return (s:gsub("%z.*$", "")) end

-- A name in a layer, cleaned: "./a//b/" -> "a/b"; nil, why for names that
-- would leave the layer directory.
local function clean_name(name)
  if name:sub(1, 1) == "/" then return nil, "an absolute path" end
  local parts = {}
  for part in name:gmatch("[^/]+") do
    if part == ".." then return nil, "a '..' part" end
    if part ~= "." then parts[#parts + 1] = part end
  end
  return concat(parts, "/")
end

local TYPES = { ["0"] = "file", ["\0"] = "file", ["7"] = "file", ["1"] = "hardlink", ["2"] = "symlink",
                ["3"] = "char", ["4"] = "block", ["5"] = "directory", ["6"] = "fifo" }

--- Read the tar at path and check every entry stays inside the directory it
-- will be extracted into. Returns { whiteouts = { name... }, opaque = { dir... },
-- others = { ".wh..wh.*" names to drop }, entries = n } or nil, message.
function M.check_tar(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local kinds = {}          -- name -> kind, in the order tar creates them
  local res = { whiteouts = {}, opaque = {}, others = {}, entries = 0 }
  local pax, longname, longlink = {}, nil, nil
  local function bad(name, why)
    f:close()
    return nil, format("entry %q: %s", name, why)
  end
  -- the name must not pass through a symlink this layer made
  local function through_link(name)
    local prefix = ""
    for part in name:gmatch("[^/]+/") do
      prefix = prefix .. part
      local p = prefix:sub(1, -2)
      if kinds[p] == "symlink" then return p end
      if kinds[p] and kinds[p] ~= "directory" then return p end
    end
    return nil
  end
  local zero = string.rep("\0", 512)
  while true do
    local h = f:read(512)
    if h == nil or h == zero then break end
    if #h < 512 then f:close(); return nil, "truncated tar header" end
    local sum = 0
    for i = 1, 512 do
      sum = sum + ((i >= 149 and i <= 156) and 32 or h:byte(i))
    end
    if octal(h:sub(149, 156)) ~= sum then f:close(); return nil, "not a tar archive (bad header checksum)" end
    local tflag = h:sub(157, 157)
    local size = tar_number(h:sub(125, 136))
    if not size then f:close(); return nil, "bad size in a tar header" end
    local data_blocks = (size + 511) // 512
    local function read_data()
      if size > 1024 * 1024 then return nil end
      local d = f:read(data_blocks * 512) or ""
      if #d < data_blocks * 512 then return nil end
      return d:sub(1, size)
    end
    if tflag == "x" or tflag == "g" then
      local d = read_data()
      if not d then f:close(); return nil, "bad pax header" end
      local pos = 1
      local rec = {}
      while pos <= #d do
        local len = tonumber(d:match("^(%d+) ", pos))
        if not len or len <= 0 then f:close(); return nil, "bad pax record" end
        local line = d:sub(pos, pos + len - 1)
        local k, v = line:match("^%d+ ([^=]+)=(.*)\n$")
        if not k then f:close(); return nil, "bad pax record" end
        rec[k] = v
        pos = pos + len
      end
      if tflag == "g" then
        if rec.path or rec.linkpath then f:close(); return nil, "a global pax header naming a path" end
      else
        pax = rec
      end
    elseif tflag == "L" or tflag == "K" then
      local d = read_data()
      if not d then f:close(); return nil, "bad GNU long name" end
      if tflag == "L" then longname = cstr(d) else longlink = cstr(d) end
    else
      local kind = TYPES[tflag]
      local raw = pax.path or longname
      if not raw then
        raw = cstr(h:sub(1, 100))
        local prefix = cstr(h:sub(346, 500))
        if h:sub(258, 262) == "ustar" and prefix ~= "" then raw = prefix .. "/" .. raw end
      end
      local link = pax.linkpath or longlink or cstr(h:sub(158, 257))
      if pax.size then size = tonumber(pax.size); data_blocks = (size + 511) // 512 end
      pax, longname, longlink = {}, nil, nil
      if not kind then return bad(raw, format("unsupported tar entry type %q", tflag)) end
      local name, why = clean_name(raw)
      if not name then return bad(raw, why) end
      if name == "" and kind ~= "directory" then return bad(raw, "the layer's root is not a directory") end
      local via = through_link(name)
      if via then return bad(raw, format("goes through %q, which this layer made a link or file", via)) end
      -- a directory over a link of the same layer: a tar that keeps the
      -- link (--keep-directory-symlink, or another version's default)
      -- would then write what follows through it
      if kind == "directory" and kinds[name] == "symlink" then
        return bad(raw, "a directory over a link this layer made")
      end
      if kind == "hardlink" then
        local target, twhy = clean_name(link)
        if not target or target == "" then return bad(raw, "a hard link to " .. (twhy or "the root")) end
        local tvia = through_link(target)
        if tvia then return bad(raw, format("a hard link through %q, which this layer made a link", tvia)) end
        if kinds[target] == "directory" then return bad(raw, "a hard link to a directory") end
      end
      local base = name:match("([^/]*)$")
      local dir = name:match("^(.*)/[^/]*$") or ""
      if base == ".wh..wh..opq" then
        res.opaque[#res.opaque + 1] = dir
      elseif base:sub(1, 8) == ".wh..wh." then
        res.others[#res.others + 1] = name
      elseif base:sub(1, 4) == ".wh." then
        if #base == 4 then return bad(raw, "an empty whiteout") end
        res.whiteouts[#res.whiteouts + 1] = name
      end
      kinds[name] = kind
      res.entries = res.entries + 1
      if data_blocks > 0 and not f:seek("cur", data_blocks * 512) then
        f:close()
        return nil, "truncated tar"
      end
    end
  end
  f:close()
  return res
end


---------------------------------------------------------------------------
-- unpacking a layer
---------------------------------------------------------------------------

local function run(argv, timeout)
  local r, msg, code = process.run(argv, { timeout = timeout or M.TAR_TIMEOUT, stderr = "stdout",
                                            max_output = 65536 })
  if not r then return nil, msg, code end
  if r.exit_code ~= 0 then
    local out = (r.stdout or ""):gsub("%s+$", "")
    return nil, format("%s exited with %s: %s", argv[1], tostring(r.exit_code or r.signal), out:sub(-600))
  end
  return r
end

function Store:_mktemp(what)
  local d, msg = util.mkdtemp(self.tmp .. "/" .. what)
  if not d then return fail("cannot create a temporary directory in " .. self.tmp .. ": " .. tostring(msg), "EIO") end
  return d
end
--- A private directory in the store's tmp/ (see the top).
Store.mktemp = Store._mktemp

local OPAQUE = privileged() and "trusted.overlay.opaque" or "user.overlay.opaque"
M.OPAQUE_XATTR = OPAQUE

-- Extract the checked tar into the empty dir, and turn OCI whiteouts into
-- overlay ones.
local function extract(tarpath, dir, chk)
  local argv = { "tar", "-x", "-f", tarpath, "-C", dir, "--numeric-owner",
                 "--xattrs", "--xattrs-include=security.capability", "--warning=no-unknown-keyword" }
  if privileged() then
    argv[#argv + 1] = "--same-owner"
    argv[#argv + 1] = "--same-permissions"
  else
    argv[#argv + 1] = "--no-same-owner"
  end
  local ok, msg = run(argv)
  if not ok then return nil, msg end
  for _, name in ipairs(chk.others) do os.remove(dir .. "/" .. name) end
  for _, d in ipairs(chk.opaque) do
    local path = d == "" and dir or (dir .. "/" .. d)
    os.remove(path .. "/.wh..wh..opq")
    local xok, xmsg = util.setxattr(path, OPAQUE, "y")
    if not xok then return nil, format("mark %s opaque: %s", d, tostring(xmsg)) end
  end
  for _, name in ipairs(chk.whiteouts) do
    local d, base = name:match("^(.*/)%.wh%.(.*)$")
    if not d then d, base = "", name:sub(5) end
    os.remove(dir .. "/" .. name)
    local target = dir .. "/" .. d .. base
    -- the layer's own file of that name, if any, is what the whiteout hides
    -- below this layer only: the whiteout is the OCI spec's meaning
    if util.stat(target, false) then fs.remove_tree(target) end
    local wok, wmsg = util.whiteout(target)
    if not wok then return nil, format("whiteout %s%s: %s", d, base, tostring(wmsg)) end
  end
  return true
end

-- Unpack the tar at tarpath (already decompressed, of diff id hex) into
-- layers/<hex> unless there. Returns path, created.
function Store:_unpack(tarpath, hex, log)
  local final = self.layers_dir .. "/" .. hex
  if util.stat(final, false) then return final, false end
  local chk, cmsg = M.check_tar(tarpath)
  if not chk then return fail(format("layer sha256:%s refused: %s", hex:sub(1, 12), cmsg), "ELAYER") end
  local dir, dmsg, dcode = self:_mktemp("layer-" .. hex:sub(1, 12) .. ".")
  if not dir then return nil, dmsg, dcode end
  local ok, emsg = extract(tarpath, dir, chk)
  if not ok then
    fs.remove_tree(dir)
    return fail(format("layer sha256:%s: cannot unpack: %s", hex:sub(1, 12), emsg), "ELAYER")
  end
  util.chmod(dir, 493)
  local rok, rmsg = os.rename(dir, final)
  if not rok then
    fs.remove_tree(dir)
    if util.stat(final, false) then return final, false end   -- another pull made it meanwhile
    return fail("cannot store layer " .. hex .. ": " .. tostring(rmsg), "EIO")
  end
  log(format("layer sha256:%s: unpacked (%d entries, %d whiteouts)", hex:sub(1, 12), chk.entries,
             #chk.whiteouts + #chk.opaque))
  return final, true
end

local DECOMPRESS = {
  gzip = { "gzip", "-dc" }, zstd = { "zstd", "-dcq" },
}

local function compression(media)
  if media:match("gzip$") then return "gzip" end
  if media:match("zstd$") then return "zstd" end
  if media:match("tar$") then return nil end
  return false
end


---------------------------------------------------------------------------
-- pull
---------------------------------------------------------------------------

-- What skopeo's failure means, as a code.
local function classify(out)
  local o = out:lower()
  if o:find("manifest unknown", 1, true) or o:find("name unknown", 1, true) or
     o:find("not found", 1, true) or o:find("repository name not known", 1, true) or
     o:find("404", 1, true) then
    return "ENOTFOUND"
  end
  if o:find("connection refused", 1, true) or o:find("no such host", 1, true) or
     o:find("network is unreachable", 1, true) or o:find("i/o timeout", 1, true) or
     o:find("temporary failure in name resolution", 1, true) or o:find("dial tcp", 1, true) or
     o:find("server misbehaving", 1, true) or o:find("no route to host", 1, true) then
    return "EUNREACHABLE"
  end
  return "EREGISTRY"
end

local function read_json_file(path, what)
  local text, err = fs.read_file(path)
  if not text then return nil, what .. ": " .. tostring(err) end
  if #text > 4 * 1024 * 1024 then return nil, what .. ": too large" end
  local v = json.decode(text)
  if type(v) ~= "table" then return nil, what .. ": not JSON" end
  return v
end

-- The image in the OCI layout at dir: manifest digest, manifest, config.
local function read_layout(dir)
  local index, err = read_json_file(dir .. "/index.json", "index.json")
  if not index then return nil, err end
  local m = type(index.manifests) == "table" and index.manifests[1]
  local mhex = m and hex_of(m.digest)
  if not mhex then return nil, "index.json names no manifest" end
  local blob = function(hex) return dir .. "/blobs/sha256/" .. hex end
  local manifest, merr = read_json_file(blob(mhex), "the manifest")
  if not manifest then return nil, merr end
  local chex = type(manifest.config) == "table" and hex_of(manifest.config.digest)
  if not chex or type(manifest.layers) ~= "table" then return nil, "the manifest names no config or layers" end
  local config, cerr = read_json_file(blob(chex), "the image config")
  if not config then return nil, cerr end
  local diff_ids = type(config.rootfs) == "table" and config.rootfs.diff_ids
  if type(diff_ids) ~= "table" or #diff_ids ~= #manifest.layers then
    return nil, "the image config's rootfs.diff_ids do not match the manifest's layers"
  end
  local layers = {}
  for i, l in ipairs(manifest.layers) do
    local lhex, dhex = type(l) == "table" and hex_of(l.digest), hex_of(diff_ids[i])
    if not lhex or not dhex or #dhex ~= 64 then return nil, "a layer without a sha256 digest" end
    local media = type(l.mediaType) == "string" and l.mediaType or ""
    local comp = compression(media)
    if comp == false then return nil, format("layer %d has the unsupported media type %q", i, media) end
    layers[i] = { blob = blob(lhex), diff = dhex, compression = comp, size = l.size }
  end
  return { digest = "sha256:" .. mhex, id = "sha256:" .. chex, layers = layers,
           config = norm_config(config.config), os = config.os, arch = config.architecture }
end

local function now_iso()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

--- Pull an image (see the top for opts and the result).
function Store:pull(ref, opts)
  opts = opts or {}
  local p, perr = M.parse_ref(ref)
  if not p then return fail(perr, "EINVAL") end
  local log = type(opts.on_log) == "function" and opts.on_log or function() end
  local function says(fmt, ...) log(format(fmt, ...)) end
  if opts.insecure and not loopback(p.registry) then
    return fail(format("insecure pulls are for loopback registries only, not %s", p.registry), "EINVAL")
  end
  local have = self:_find(p.ref)
  if have and (p.digest or not opts.refresh) then
    says("%s: in the image store (%s)", p.ref, have.id)
    return self:_image(have)
  end
  local where = format("%s from registry %s", p.ref, p.registry)
  says("pulling %s", where)
  local tmp, tmsg, tcode = self:_mktemp("pull.")
  if not tmp then return nil, tmsg, tcode end
  local created = {}
  local function abort(msg, code)
    fs.remove_tree(tmp)
    self:_gc_layers(created)
    says("error: %s", msg)
    return fail(msg, code)
  end
  -- whatever raises meanwhile (a cancelled task) leaves nothing behind either
  local function fetch()
    -- skopeo: the manifest (for this host's platform), the config and the
    -- layer blobs, checked against their digests, into an OCI layout
    local argv = { "skopeo", "--tmpdir", tmp, "copy", "--retry-times", "0" }
    if loopback(p.registry) then argv[#argv + 1] = "--src-tls-verify=false" end
    argv[#argv + 1] = "docker://" .. p.ref
    argv[#argv + 1] = "oci:" .. tmp .. "/oci:image"
    local proc, smsg = process.spawn(argv, { stdin = "null", stdout = "pipe", stderr = "stdout",
                                             env = { PATH = os.getenv("PATH") or "/usr/bin:/bin",
                                                     HOME = tmp } })
    if not proc then return abort(format("cannot pull %s: cannot run skopeo: %s", where, tostring(smsg)), "EIO") end
    local out = {}
    local timeout = opts.timeout or M.PULL_TIMEOUT
    local ok, terr = pcall(function()
      require("daytona.runtime.scheduler").timeout(timeout, function()
        for line in proc:lines("stdout") do
          out[#out + 1] = line
          if #out > 200 then table.remove(out, 1) end
          log(line)
        end
      end)
    end)
    if not ok then
      proc:kill("KILL", true)
      proc:wait(5)
      proc:close()
      if require("daytona.errors").is(terr, require("daytona.errors").DaytonaTimeoutError) then
        return abort(format("cannot pull %s: no answer within %g s", where, timeout), "ETIMEDOUT")
      end
      fs.remove_tree(tmp)
      self:_gc_layers(created)
      error(terr, 0)
    end
    local code = proc:wait()
    proc:close()
    if code ~= 0 then
      local text = concat(out, "\n")
      local last = (text:match("([^\n]*level=fatal[^\n]*)") or text:match("([^\n]+)%s*$") or ""):gsub('^.*msg="', ""):gsub('"$', "")
      local kind = classify(text)
      local what = kind == "ENOTFOUND" and "no such image" or kind == "EUNREACHABLE" and "registry unreachable"
                   or "the registry's answer is not an image"
      return abort(format("cannot pull %s: %s: %s", where, what, last:sub(1, 500)), kind)
    end
    local img, lerr = read_layout(tmp .. "/oci")
    if not img then return abort(format("cannot pull %s: %s", where, lerr), "EREGISTRY") end
    if img.os and img.os ~= "linux" then
      return abort(format("cannot pull %s: an image for %s, not linux", where, tostring(img.os)), "EREGISTRY")
    end
    -- layers: decompressed, checked against their diff ids, unpacked once
    local size = 0
    local hexes = {}
    for i, l in ipairs(img.layers) do
      hexes[i] = l.diff
      if self:layer_path(l.diff) then
        says("layer sha256:%s: already in the store", l.diff:sub(1, 12))
      else
        local tarpath = l.blob
        if l.compression then
          tarpath = tmp .. "/layer-" .. i .. ".tar"
          local dec = DECOMPRESS[l.compression]
          local sh = format("exec %s %s \"$1\" > \"$2\"", dec[1], dec[2])
          local r, dmsg = run({ "sh", "-c", sh, "sh", l.blob, tarpath })
          if not r then return abort(format("cannot pull %s: layer %d: %s", where, i, dmsg), "ELAYER") end
        end
        local hex = util.sha256_file(tarpath)
        if hex ~= l.diff then
          return abort(format("cannot pull %s: layer %d does not match its diff_id sha256:%s", where, i, l.diff), "ELAYER")
        end
        local path, umsg, ucode = self:_unpack(tarpath, l.diff, log)
        if not path then return abort(format("cannot pull %s: %s", where, umsg), ucode) end
        if umsg == true then created[#created + 1] = l.diff end
        if tarpath ~= l.blob then os.remove(tarpath) end
      end
    end
    for _, l in ipairs(img.layers) do size = size + (math.tointeger(l.size) or 0) end
    -- the record (ref added to an image already stored under another name)
    local rec = self:_find(img.id) or { id = img.id, refs = {}, digest = img.digest, layers = hexes,
                                        config = img.config, size = size, created = now_iso() }
    local seen = false
    for _, r in ipairs(rec.refs) do if r == p.ref then seen = true end end
    if not seen then rec.refs[#rec.refs + 1] = p.ref end
    rec.ref = p.ref
    rec.digest = img.digest
    local sok, serr, scode = self:_save(rec)
    if not sok then return abort(serr, scode) end
    fs.remove_tree(tmp)
    says("%s: stored as %s (%d layers)", p.ref, img.id, #hexes)
    return self:_image(rec)
  end
  local res = table.pack(pcall(fetch))
  if not res[1] then
    fs.remove_tree(tmp)
    self:_gc_layers(created)
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end


---------------------------------------------------------------------------
-- layers and images made here
---------------------------------------------------------------------------

-- Give every entry under dir (not following links) the owner it stood
-- for in a sandbox whose ids start at base: k for host id base+k.
local function shift_owners(dir, base)
  local function walk(path)
    local st = util.stat(path, false)
    if not st then return true end
    local uid, gid = st.uid, st.gid
    local nu = (uid >= base and uid < base + 65536) and uid - base or uid
    local ng = (gid >= base and gid < base + 65536) and gid - base or gid
    if nu ~= uid or ng ~= gid then
      local ok, msg = util.chown(path, nu, ng, true)
      if not ok then return nil, path .. ": " .. tostring(msg) end
    end
    if st.type == "directory" then
      for _, name in ipairs(util.readdir(path) or {}) do
        local ok, msg = walk(path .. "/" .. name)
        if not ok then return nil, msg end
      end
    end
    return true
  end
  return walk(dir)
end

--- Import dir (overlay-upper format) as a new layer (see the top).
function Store:add_layer(dir, opts)
  opts = opts or {}
  local st = type(dir) == "string" and util.stat(dir, false)
  if not st or st.type ~= "directory" then return fail(format("%s is not a directory", tostring(dir)), "EINVAL") end
  local tmp, tmsg, tcode = self:_mktemp("add.")
  if not tmp then return nil, tmsg, tcode end
  local work = tmp .. "/layer"
  local tarpath = tmp .. "/layer.tar"
  local function abort(msg, code)
    fs.remove_tree(tmp)
    return fail(msg, code or "EIO")
  end
  -- a copy, through tar: devices (whiteouts), xattrs (opaque marks),
  -- hard links and owners kept; names are not followed
  local xattr = "--xattrs-include=" .. (privileged() and "trusted.overlay.opaque" or "user.overlay.opaque")
  local ok, msg = run({ "tar", "-c", "-f", tarpath, "-C", dir, "--numeric-owner", "--sort=name",
                        "--xattrs", xattr, "--xattrs-include=security.capability",
                        "--warning=no-file-ignored", "." })
  if not ok then return abort(format("cannot import %s as a layer: %s", dir, msg)) end
  util.mkdir(work, 493)
  local argv = { "tar", "-x", "-f", tarpath, "-C", work, "--numeric-owner", "--xattrs", xattr,
                 "--xattrs-include=security.capability" }
  if privileged() then argv[#argv + 1] = "--same-owner"; argv[#argv + 1] = "--same-permissions" end
  ok, msg = run(argv)
  if not ok then return abort(format("cannot import %s as a layer: %s", dir, msg)) end
  if opts.uid_base and opts.uid_base > 0 then
    local sok, smsg = shift_owners(work, opts.uid_base)
    if not sok then return abort(format("cannot import %s as a layer: chown %s", dir, smsg)) end
  end
  -- the layer's digest: its tar as stored (sorted names, numeric owners)
  os.remove(tarpath)
  ok, msg = run({ "tar", "-c", "-f", tarpath, "-C", work, "--numeric-owner", "--sort=name",
                  "--xattrs", xattr, "--xattrs-include=security.capability", "--mtime=@0",
                  "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime", "." })
  if not ok then return abort(format("cannot import %s as a layer: %s", dir, msg)) end
  local hex = util.sha256_file(tarpath)
  local final = self.layers_dir .. "/" .. hex
  if util.stat(final, false) then
    fs.remove_tree(tmp)
    return final, "sha256:" .. hex
  end
  util.chmod(work, 493)
  local rok, rmsg = os.rename(work, final)
  if not rok and not util.stat(final, false) then return abort("cannot store the layer: " .. tostring(rmsg)) end
  fs.remove_tree(tmp)
  return final, "sha256:" .. hex
end

--- Record an image made of stored layers (see the top).
function Store:put_image(spec)
  if type(spec) ~= "table" or type(spec.layers) ~= "table" or #spec.layers == 0 then
    return fail("put_image: layers (a non-empty list) are needed", "EINVAL")
  end
  if spec.ref ~= nil and (type(spec.ref) ~= "string" or spec.ref == "" or #spec.ref > 512) then
    return fail("put_image: ref must be a non-empty string", "EINVAL")
  end
  local hexes = {}
  for i, l in ipairs(spec.layers) do
    local hex = type(l) == "string" and (hex_of(l) or l:match("^" .. self.layers_dir:gsub("%p", "%%%0") .. "/(%x+)$")
                                         or l:match("^%x+$"))
    if not hex or not self:layer_path(hex) then
      return fail(format("put_image: layer %d (%s) is not in the store", i, tostring(l)), "EINVAL")
    end
    hexes[i] = hex
  end
  local config = norm_config(spec.config)
  local size = 0
  local function du(path)
    local st = util.stat(path, false)
    if not st then return end
    size = size + (st.size or 0)
    if st.type == "directory" then
      for _, name in ipairs(util.readdir(path) or {}) do du(path .. "/" .. name) end
    end
  end
  for _, hex in ipairs(hexes) do du(self.layers_dir .. "/" .. hex) end
  local id = "sha256:" .. util.sha256(json.encode({ layers = json.array(hexes), config = {
    env = json.array(config.env), cwd = config.cwd, user = config.user,
    entrypoint = json.array(config.entrypoint), cmd = json.array(config.cmd) } }))
  local rec = self:_find(id) or { id = id, refs = {}, digest = id, layers = hexes, config = config,
                                   size = size, created = now_iso() }
  if spec.ref then
    local norm = M.parse_ref(spec.ref)
    local r = norm and norm.ref or spec.ref
    local seen = false
    for _, x in ipairs(rec.refs) do if x == r then seen = true end end
    if not seen then rec.refs[#rec.refs + 1] = r end
    rec.ref = r
  end
  local ok, msg, code = self:_save(rec)
  if not ok then return nil, msg, code end
  return self:_image(rec)
end

return M
