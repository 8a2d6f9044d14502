--- daytona.object_storage: the upload of a declarative image's build
-- context (what `Image:add_local_file`, `add_local_dir` and
-- `pip_install_from_requirements` name), as the official SDKs do it.
--
-- Before a create with such an image, the SDK asks the API for short-lived
-- S3 credentials (`GET /object-storage/push-access`: accessKey, secret,
-- sessionToken, storageUrl, organizationId, bucket), names each context
-- path by an MD5 of its archive path and its contents, and uploads it as
-- `<organizationId>/<hash>/context.tar` unless something is stored under
-- `<organizationId>/<hash>/` already (ListObjectsV2). The hashes go into
-- `buildInfo.contextHashes`; the builder unpacks every context into one
-- directory and resolves the Dockerfile's COPY sources there.
--
-- The hash (Python SDK's `_compute_hash_for_path_md5`): MD5 over the
-- archive path, then for a file its bytes; for a directory, walking it top
-- down (each directory's files, then its subdirectories; names in byte
-- order here, where Python takes the file system's order), for each file
-- its path relative to the directory and its bytes, and for an empty
-- directory its relative path. A symbolic link is hashed as its target's
-- name rather than followed, and stored in the tar as a link.
--
-- The tar is made by GNU tar in a temp file (numeric owners 0, names
-- sorted) and PUT streamed from disk, signed with AWS Signature Version 4
-- (HMAC-SHA256 in the core: `core.util.hmac_sha256`), the payload hash
-- included in the signature.
--
--   local os_ = require "daytona.object_storage"
--   os_.archive_base_path(path) -> the path inside the archive (and the
--     COPY source): normalised, without a leading "/"
--   os_.hash(path, archive_base_path) -> md5 hex
--   os_.upload_contexts(transport, contexts, deadline) -> { hash... }
--   os_.sign(...)   -- SigV4 headers for one request (see below)
local core = require "daytona.core"
local errors = require "daytona.errors"
local process = require "daytona.runtime.process"
local http = require "daytona.runtime.http"
local wire = require "daytona.wire"

local type, ipairs, tostring, error, setmetatable, pcall, assert, os, math, string, table =
  type, ipairs, tostring, error, setmetatable, pcall, assert, os, math, string, table
local format, concat, sort = string.format, table.concat, table.sort
local util = core.util

local M = {}

M.TAR_TIMEOUT = 3600

---------------------------------------------------------------------------
-- Paths and hashes
---------------------------------------------------------------------------

--- `~` and `~/...` as the user's home (Python's os.path.expanduser).
function M.expanduser(path)
  if path == "~" or path:sub(1, 2) == "~/" then
    local home = os.getenv("HOME")
    if home and home ~= "" then return home .. path:sub(2) end
  end
  return path
end

--- A path normalised as Python's os.path.normpath does (no empty, "."
-- segments; ".." folded where it can be).
function M.normpath(path)
  if path == "" then return "." end
  local abs = path:sub(1, 1) == "/"
  local out = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      if #out > 0 and out[#out] ~= ".." then out[#out] = nil
      elseif not abs then out[#out + 1] = ".." end
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  local s = concat(out, "/")
  if abs then return "/" .. s end
  return s == "" and "." or s
end

--- The path of a context inside its archive, which is also the COPY
-- source in the Dockerfile: the normalised path without its leading "/"
-- (the Python SDK's compute_archive_base_path).
function M.archive_base_path(path)
  return (M.normpath(path):gsub("^/+", ""))
end

local function is_link(path)
  local st = util.stat(path, true)
  return st and st.type == "link"
end

local function hash_dir(md5, root, dir, rel)
  local names = util.readdir(dir)
  if not names then
    error(errors.DaytonaError("cannot read the directory " .. dir, { code = "EIO" }), 0)
  end
  sort(names)
  local files, dirs = {}, {}
  for _, n in ipairs(names) do
    local st = util.stat(dir .. "/" .. n, true)
    if st and st.type == "directory" then dirs[#dirs + 1] = n else files[#files + 1] = n end
  end
  if #files == 0 and #dirs == 0 then md5:update(rel == "" and "." or rel) end
  for _, n in ipairs(files) do
    local p, r = dir .. "/" .. n, (rel == "" and n or rel .. "/" .. n)
    md5:update(r)
    if is_link(p) then
      md5:update(util.readlink(p) or "")
    else
      local ok, msg = md5:update_file(p)
      if not ok then error(errors.DaytonaError("cannot read " .. p .. ": " .. tostring(msg), { code = "EIO" }), 0) end
    end
  end
  for _, n in ipairs(dirs) do
    hash_dir(md5, root, dir .. "/" .. n, rel == "" and n or rel .. "/" .. n)
  end
end

--- The content hash of a context path (MD5 hex; see the module doc).
function M.hash(path, archive_base_path)
  local md5 = util.digest("md5")
  md5:update(archive_base_path or M.archive_base_path(path))
  local st = util.stat(path)
  if not st then error(errors.DaytonaNotFoundError("Path does not exist: " .. path, { code = "ENOENT" }), 0) end
  if st.type == "directory" then
    hash_dir(md5, path, path, "")
  else
    local ok, msg = md5:update_file(path)
    if not ok then error(errors.DaytonaError("cannot read " .. path .. ": " .. tostring(msg), { code = "EIO" }), 0) end
  end
  return md5:hex()
end

---------------------------------------------------------------------------
-- SigV4
---------------------------------------------------------------------------

local function uri_encode(s, keep_slash)
  local e = s:gsub("[^%w%-%._~/]", function(c) return format("%%%02X", c:byte()) end)
  if not keep_slash then e = e:gsub("/", "%%2F") end
  return e
end
M.uri_encode = uri_encode

--- The SigV4 headers of one S3 request. r: method, host ("127.0.0.1:9000"),
-- path (already encoded, as sent), query (list of {name, value}, raw),
-- payload_hash (hex, or "UNSIGNED-PAYLOAD"), access_key, secret,
-- session_token, region, time (seconds; default now). Returns the headers
-- table to send (Authorization, X-Amz-Date, X-Amz-Content-Sha256,
-- X-Amz-Security-Token).
function M.sign(r)
  local t = r.time or os.time()
  local amz_date = os.date("!%Y%m%dT%H%M%SZ", t)
  local date = amz_date:sub(1, 8)
  local q = {}
  for i, p in ipairs(r.query or {}) do q[i] = { uri_encode(p[1]), uri_encode(p[2]) } end
  sort(q, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
  local qs = {}
  for i, p in ipairs(q) do qs[i] = p[1] .. "=" .. p[2] end
  local signed = "host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
  local creq = concat({
    r.method, r.path, concat(qs, "&"),
    "host:" .. r.host .. "\nx-amz-content-sha256:" .. r.payload_hash .. "\nx-amz-date:" .. amz_date
      .. "\nx-amz-security-token:" .. r.session_token .. "\n",
    signed, r.payload_hash,
  }, "\n")
  local scope = date .. "/" .. r.region .. "/s3/aws4_request"
  local sts = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. scope .. "\n" .. util.sha256(creq)
  local k = util.hmac_sha256("AWS4" .. r.secret, date, true)
  k = util.hmac_sha256(k, r.region, true)
  k = util.hmac_sha256(k, "s3", true)
  k = util.hmac_sha256(k, "aws4_request", true)
  return {
    Authorization = format("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
      r.access_key, scope, signed, util.hmac_sha256(k, sts)),
    ["X-Amz-Date"] = amz_date,
    ["X-Amz-Content-Sha256"] = r.payload_hash,
    ["X-Amz-Security-Token"] = r.session_token,
  }
end

---------------------------------------------------------------------------
-- The upload
---------------------------------------------------------------------------

local S3 = {}
S3.__index = S3

-- An S3 client for the push-access credentials `c` (the API's answer).
local function s3_client(c)
  local base = type(c.storageUrl) == "string" and c.storageUrl:gsub("/+$", "") or nil
  if not base or not base:match("^https?://") then
    -- Daytona gives a bare host name in its examples; its SDKs add nothing
    if base and not base:find("://", 1, true) then base = "https://" .. base end
  end
  local scheme, host, prefix = (base or ""):match("^(https?)://([^/]+)(.*)$")
  if not scheme or type(c.accessKey) ~= "string" or type(c.secret) ~= "string"
    or type(c.bucket) ~= "string" or type(c.organizationId) ~= "string" then
    error(errors.DaytonaError("object-storage/push-access answered without usable credentials", { code = "EPROTO" }), 0)
  end
  return setmetatable({
    scheme = scheme, host = host, prefix = prefix, c = c,
    region = type(c.region) == "string" and c.region ~= "" and c.region or "us-east-1",
  }, S3)
end

function S3:_call(method, key, query, opts, deadline)
  local path = self.prefix .. "/" .. uri_encode(self.c.bucket) .. (key and ("/" .. uri_encode(key, true)) or "")
  local headers = M.sign{
    method = method, host = self.host, path = path, query = query,
    payload_hash = opts.payload_hash or util.sha256(""),
    access_key = self.c.accessKey, secret = self.c.secret, session_token = self.c.sessionToken or "",
    region = self.region,
  }
  local qs = {}
  for i, p in ipairs(query) do qs[i] = uri_encode(p[1]) .. "=" .. uri_encode(p[2]) end
  local url = self.scheme .. "://" .. self.host .. path .. (#qs > 0 and ("?" .. concat(qs, "&")) or "")
  local timeout = deadline and math.max(0.001, deadline - core.now()) or nil
  local res, msg, code = http.request{ method = method, url = url, headers = headers,
    body_file = opts.body_file, timeout = timeout }
  if not res then
    error(errors.DaytonaConnectionError("object storage: " .. tostring(msg), { code = code }), 0)
  end
  if res.status >= 300 then
    local body = res.body or ""
    local scode = body:match("<Code>(.-)</Code>") or tostring(res.status)
    local smsg = body:match("<Message>(.-)</Message>") or body:sub(1, 200)
    error(errors.DaytonaError(format("object storage refused %s %s: %s: %s", method, key or self.c.bucket, scode, smsg),
      { status_code = res.status, code = scode }), 0)
  end
  return res
end

function S3:_exists(prefix, deadline)
  local res = self:_call("GET", nil, { { "list-type", "2" }, { "max-keys", "1" }, { "prefix", prefix } }, {}, deadline)
  return (res.body or ""):find("<Contents>", 1, true) ~= nil
end

-- tar the context into a temp file (GNU tar, numeric owners 0, sorted),
-- source stored under its archive path: the archive path is the end of the
-- source path (add_local_*: all of it, without a leading "/"; a Dockerfile's
-- COPY: the part below its directory), or "." for the source's contents
local function make_tar(source, archive)
  local src, arc = M.normpath(source), M.archive_base_path(archive)
  local base, target
  if arc == "." then
    base, target = src, "."
  elseif src == arc or src:sub(-(#arc + 1)) == "/" .. arc then
    base, target = src:sub(1, #src - #arc), arc
    if base == "" then base = "." end
  else
    error(errors.DaytonaError(format("the build context %s cannot be stored as %s", source, archive), { code = "EINVAL" }), 0)
  end
  local tmpdir = assert(util.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/dtlua-context.XXXXXX"))
  local out = tmpdir .. "/context.tar"
  local r = process.run({ "tar", "-c", "-f", out, "--format=pax", "--sort=name", "--numeric-owner",
    "--owner=0", "--group=0", "-C", base, "--", target }, { timeout = M.TAR_TIMEOUT })
  if r.exit_code ~= 0 then
    os.remove(out)
    os.remove(tmpdir)
    error(errors.DaytonaError(format("cannot archive the build context %s: %s", source,
      (r.stderr or ""):gsub("%s+$", "")), { code = "EIO" }), 0)
  end
  return out, tmpdir
end

--- Upload one context (a file or directory) unless it is stored already;
-- returns its hash.
function S3:upload(source, archive, deadline)
  local hash = M.hash(source, archive)
  local prefix = self.c.organizationId .. "/" .. hash .. "/"
  if self:_exists(prefix, deadline) then return hash end
  local tar, tmpdir = make_tar(source, archive)
  local ok, err = pcall(function()
    local sha = util.digest("sha256")
    assert(sha:update_file(tar))
    self:_call("PUT", prefix .. "context.tar", {}, { body_file = tar, payload_hash = sha:hex() }, deadline)
  end)
  os.remove(tar)
  os.remove(tmpdir)
  if not ok then error(err, 0) end
  return hash
end

--- Upload an Image's contexts (`image._contexts`: { source_path,
-- archive_path }...) through the API's push-access; returns the list of
-- their hashes, in order ({} with no request when there are none).
-- transport: the client's daytona.transport (for push-access).
function M.upload_contexts(transport, contexts, deadline)
  local hashes = {}
  if not contexts or #contexts == 0 then return hashes end
  local c = transport:request({ method = "GET", path = "/object-storage/push-access", deadline = deadline,
    what = "get object storage push access" })
  local s3 = s3_client(type(c) == "table" and c or {})
  for i, ctx in ipairs(contexts) do hashes[i] = s3:upload(ctx.source_path, ctx.archive_path, deadline) end
  return hashes
end

return M
