--- dtlocal.control.objects: the object storage of image build contexts
-- (doc/dtlocal.md "Object storage").
--
-- The official SDKs upload the local files of a declarative image
-- (`addLocalFile`, `add_local_dir`, ...) before they create: they ask
-- `GET /api/object-storage/push-access` for short-lived credentials and an
-- S3 endpoint, look whether `<organizationId>/<hash>/` already holds
-- something (ListObjectsV2), and if not PUT `<organizationId>/<hash>/context.tar`
-- (one PutObject, or a multipart upload for a large one). This module is
-- both halves on dtlocal's side: it issues the credentials and serves the
-- S3 subset the SDKs use, at `<base url>/s3/<bucket>/<key>` (path style) on
-- the API's listener, storing objects under `<state>/objects/`. The builder
-- reads the contexts back with `Objects:path`.
--
-- Every S3 request is authenticated with AWS Signature Version 4
-- (Authorization header) against the credentials issued here: the access
-- key must be one we issued and not expired, the session token must be its
-- token (and signed), the date within 15 minutes of ours, the scope
-- `<date>/<region>/s3/aws4_request`, and the signature must match; a signed
-- payload hash is checked as the body streams to disk (a mismatch keeps
-- nothing), as are the signatures of signed aws-chunked bodies. The
-- credentials reach one bucket and the keys under the organization's
-- prefix only. Refusals are S3's XML error bodies (Code, Message), as any
-- S3 client expects.
--
-- The S3 subset: ListObjectsV2 (GET /<bucket>?list-type=2: prefix,
-- max-keys, start-after, continuation-token), PutObject, HeadObject,
-- GetObject, DeleteObject, CreateMultipartUpload, UploadPart,
-- CompleteMultipartUpload, AbortMultipartUpload. Bodies may be plain
-- (x-amz-content-sha256 the hash, or UNSIGNED-PAYLOAD) or aws-chunked
-- (STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD),
-- which newer SDKs send. Bodies are streamed to a temp file and renamed
-- into place when complete, never held whole in memory.
--
-- Storage: an object is `<dir>/<bucket>/<sha256 of key>.data` with its
-- `.json` (key, size, etag, modified) beside it: the key never becomes a
-- path, so no key can name a file outside the bucket or collide with a
-- directory. Keys are still refused when they hold `.`/`..` segments, an
-- empty segment, a leading `/` or a control character, as the builder
-- treats them as context names.
--
--   local objects = require "dtlocal.control.objects"
--   local o = objects.new{ dir =, ttl = seconds, organization =, log = }
--   o:push_access(base_url) -> the StorageAccessDto table
--   o:serve(ctx)            -- a request below /s3
--   o:path(bucket, key) -> the data file of an object | nil
--   o:context(hash) -> the context.tar of a context hash | nil
local core = require "daytona.core"
local fs = require "dtlocal.fs"
local http = require "dtlocal.http"
local record = require "dtlocal.control.record"
local store = require "dtlocal.control.store"

local type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, pcall, error, select =
  type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, pcall, error, select
local io, os, math, string, table = io, os, math, string, table
local format, concat, sort = string.format, table.concat, table.sort
local util = core.util
local json = http.json

local M = {}

M.BUCKET = "daytona-contexts"
M.REGION = "us-east-1"
M.TTL = 15 * 60                     -- seconds a push-access credential lives
M.SKEW = 15 * 60                    -- seconds a request's date may differ from ours
M.MAX_OBJECT = 5 * 1024 ^ 3         -- S3's own limit for one PUT (and one part)
M.MAX_PARTS = 10000                 -- S3's multipart limit
M.MAX_CREDENTIALS = 1000            -- live credentials kept; the oldest go first
M.MAX_KEY = 1024                    -- bytes, as S3
M.MAX_UPLOADS = 64                  -- multipart uploads in progress at once

local Objects = {}
Objects.__index = Objects
Objects.__name = "dtlocal.Objects"

--- The object store. opts: dir (required; created), ttl (seconds a
-- credential lives, default M.TTL), organization (default the records'),
-- max_object (bytes, default M.MAX_OBJECT), log.
function M.new(opts)
  local dir = assert(opts.dir, "dir")
  local ok, msg = fs.mkdirs(dir .. "/" .. M.BUCKET, 448, 448)
  if not ok then error("cannot create the object storage " .. dir .. ": " .. tostring(msg), 0) end
  fs.mkdirs(dir .. "/.tmp", 448, 448)
  fs.mkdirs(dir .. "/.multipart", 448, 448)
  -- temp files of uploads a killed server left
  for _, d in ipairs{ "/.tmp", "/.multipart" } do
    for _, name in ipairs(util.readdir(dir .. d) or {}) do fs.remove_tree(dir .. d .. "/" .. name) end
  end
  return setmetatable({
    dir = dir, ttl = opts.ttl or M.TTL, organization = opts.organization or record.ORGANIZATION_ID,
    max_object = opts.max_object or M.MAX_OBJECT, log = opts.log or function() end,
    creds = {}, ncreds = 0, uploads = {},
  }, Objects)
end

---------------------------------------------------------------------------
-- Credentials
---------------------------------------------------------------------------

local function now() return os.time() end

--- New short-lived credentials for the bucket (the answer of
-- GET /api/object-storage/push-access). `region` is not in Daytona's
-- OpenAPI document but its TypeScript SDK reads it (and its S3 client
-- refuses to sign without one).
function Objects:push_access(base_url)
  local t = now()
  for k, c in pairs(self.creds) do
    if c.expires <= t then self.creds[k] = nil; self.ncreds = self.ncreds - 1 end
  end
  if self.ncreds >= M.MAX_CREDENTIALS then
    local oldest
    for k, c in pairs(self.creds) do
      if not oldest or c.expires < self.creds[oldest].expires then oldest = k end
    end
    self.creds[oldest] = nil
    self.ncreds = self.ncreds - 1
  end
  local key = "DTL" .. record.token(17):upper()
  local c = { secret = record.token(40), token = record.token(64), expires = t + self.ttl }
  self.creds[key] = c
  self.ncreds = self.ncreds + 1
  return {
    accessKey = key, secret = c.secret, sessionToken = c.token,
    storageUrl = base_url .. "/s3", organizationId = self.organization,
    bucket = M.BUCKET, region = M.REGION,
  }
end

---------------------------------------------------------------------------
-- S3 errors and XML
---------------------------------------------------------------------------

local S3Error = { __name = "dtlocal.objects.S3Error" }

local function fail(status, code, message)
  error(setmetatable({ status = status, code = code, message = message }, S3Error), 0)
end

local function xml_escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&apos;" }))
end

local XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
local NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

-- <name>...</name> for each field pair in order (name, value, name, value...)
local function elements(...)
  local out = {}
  for i = 1, select("#", ...), 2 do
    local name, value = select(i, ...)
    if value ~= nil then out[#out + 1] = format("<%s>%s</%s>", name, xml_escape(value), name) end
  end
  return concat(out)
end

local function xml_reply(ctx, status, body, headers)
  local h = { ["Content-Type"] = "application/xml" }
  for k, v in pairs(headers or {}) do h[k] = v end
  ctx:reply(status, body and (XML_HEAD .. body) or nil, h)
end

---------------------------------------------------------------------------
-- SigV4
---------------------------------------------------------------------------

-- RFC 3986 percent-encoding of all but the unreserved characters, as the
-- canonical request wants (slash kept when keep_slash).
local function uri_encode(s, keep_slash)
  return (s:gsub("[^%w%-%._~/]", function(c) return format("%%%02X", c:byte()) end)
           :gsub("/", keep_slash and "/" or "%%2F"))
end

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function canonical_query(qs)
  local pairs_ = {}
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    pairs_[#pairs_ + 1] = { uri_encode(pct_decode(k)), uri_encode(pct_decode(v)) }
  end
  sort(pairs_, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
  local out = {}
  for i, p in ipairs(pairs_) do out[i] = p[1] .. "=" .. p[2] end
  return concat(out, "&")
end

-- Days since 1970-01-01 of a proleptic Gregorian date.
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- "20260101T120000Z" -> seconds since the epoch, or nil
local function amz_time(s)
  local y, mo, d, h, mi, se = (s or ""):match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
  if not y then return nil end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se
end

local function hmac(key, msg) return util.hmac_sha256(key, msg, true) end

local function signing_key(secret, date, region)
  return hmac(hmac(hmac(hmac("AWS4" .. secret, date), region), "s3"), "aws4_request")
end

local EMPTY_SHA256 = util.sha256("")

-- Check the request's SigV4 Authorization; returns the auth facts the body
-- checks need: { payload = x-amz-content-sha256, key = signing key, scope,
-- amz_date, signature }.
function Objects:authenticate(ctx)
  local h = ctx.headers
  if ctx.query["X-Amz-Signature"] or ctx.query["X-Amz-Credential"] then
    fail(501, "NotImplemented", "presigned URLs are not served by dtlocal's object storage")
  end
  local auth = h.authorization
  if not auth then fail(403, "AccessDenied", "Access Denied: the request is not signed (AWS Signature Version 4)") end
  local algo, rest = auth:match("^(%S+)%s+(.*)$")
  if algo ~= "AWS4-HMAC-SHA256" then
    fail(400, "InvalidArgument", "unsupported Authorization type: only AWS4-HMAC-SHA256 is accepted")
  end
  local fields = {}
  for k, v in rest:gmatch("(%w+)=([^,%s]*)") do fields[k] = v end
  local cred, signed, sig = fields.Credential, fields.SignedHeaders, fields.Signature
  if not (cred and signed and sig) then
    fail(400, "AuthorizationHeaderMalformed", "the Authorization header needs Credential, SignedHeaders and Signature")
  end
  local akid, date, region, service, term = cred:match("^([^/]+)/(%d%d%d%d%d%d%d%d)/([^/]+)/([^/]+)/([^/]+)$")
  if not akid or service ~= "s3" or term ~= "aws4_request" then
    fail(400, "AuthorizationHeaderMalformed", "the Credential is not <key>/<yyyymmdd>/<region>/s3/aws4_request")
  end
  local c = self.creds[akid]
  if not c then fail(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.") end
  if c.expires <= now() then
    fail(400, "ExpiredToken", "The provided token has expired (push-access credentials live "
      .. self.ttl .. " seconds; ask GET /api/object-storage/push-access again)")
  end
  if region ~= M.REGION then
    fail(400, "AuthorizationHeaderMalformed", "the region '" .. region .. "' is wrong; expecting '" .. M.REGION .. "'")
  end
  local amz_date = h["x-amz-date"]
  local t = amz_time(amz_date)
  if not t then fail(403, "AccessDenied", "the request needs an X-Amz-Date header (yyyymmddThhmmssZ)") end
  if math.abs(t - now()) > M.SKEW then
    fail(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
  end
  if amz_date:sub(1, 8) ~= date then
    fail(403, "SignatureDoesNotMatch", "the credential's date is not the X-Amz-Date's")
  end
  -- the headers that must be under the signature
  local names = {}
  for n in signed:gmatch("[^;]+") do names[#names + 1] = n end
  local set = {}
  for _, n in ipairs(names) do set[n] = true end
  for _, need in ipairs{ "host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token" } do
    if not set[need] then
      fail(403, "AccessDenied", "the header " .. need .. " must be signed")
    end
  end
  if not h["x-amz-security-token"] or not util.equal_ct(h["x-amz-security-token"], c.token) then
    fail(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
  end
  local payload = h["x-amz-content-sha256"]
  if not payload then fail(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256") end
  local lines = {}
  for i, n in ipairs(names) do
    local v = h[n]
    if v == nil then fail(403, "SignatureDoesNotMatch", "the signed header " .. n .. " is missing") end
    lines[i] = n .. ":" .. v:gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " ")
  end
  local creq = concat({
    ctx.method,
    uri_encode(pct_decode(ctx.path), true),
    canonical_query(ctx.qs or ""),
    concat(lines, "\n") .. "\n",
    signed,
    payload,
  }, "\n")
  local scope = date .. "/" .. region .. "/s3/aws4_request"
  local sts = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. scope .. "\n" .. util.sha256(creq)
  local key = signing_key(c.secret, date, region)
  local want = util.hmac_sha256(key, sts)
  if not util.equal_ct(want, sig:lower()) then
    fail(403, "SignatureDoesNotMatch",
      "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
  end
  return { payload = payload, key = key, scope = scope, amz_date = amz_date, signature = sig:lower() }
end

---------------------------------------------------------------------------
-- Keys and paths
---------------------------------------------------------------------------

local function check_key(self, key)
  if key == "" then fail(400, "InvalidArgument", "the object key is empty") end
  if #key > M.MAX_KEY then fail(400, "KeyTooLongError", "Your key is too long (at most 1024 bytes)") end
  if key:find("[%z\1-\31\127]") then fail(400, "InvalidArgument", "the object key holds a control character") end
  if key:sub(1, 1) == "/" then fail(400, "InvalidArgument", "the object key starts with '/': " .. key) end
  for seg in (key .. "/"):gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then
      fail(400, "InvalidArgument", "the object key has an empty, '.' or '..' segment: " .. key)
    end
  end
  -- what these credentials may reach: the organization's prefix
  if key:sub(1, #self.organization + 1) ~= self.organization .. "/" then
    fail(403, "AccessDenied", "Access Denied: keys outside " .. self.organization .. "/ are not yours")
  end
end

local function obj_base(self, bucket, key)
  return format("%s/%s/%s", self.dir, bucket, util.sha256(key))
end

--- The data file of an object (nil if there is none).
function Objects:path(bucket, key)
  local base = obj_base(self, bucket, key)
  local st = util.stat(base .. ".json", true)
  if st and st.type == "file" and util.stat(base .. ".data", true) then return base .. ".data" end
  return nil
end

--- The uploaded context.tar of a build context hash (from buildInfo's
-- contextHashes), or nil, message.
function Objects:context(hash)
  if type(hash) ~= "string" or not hash:match("^%x+$") or #hash > 128 then
    return nil, "context hash " .. tostring(hash) .. " is not a hex digest"
  end
  local p = self:path(M.BUCKET, self.organization .. "/" .. hash .. "/context.tar")
  if not p then return nil, "the build context " .. hash .. " was not uploaded (object storage has no "
    .. self.organization .. "/" .. hash .. "/context.tar)" end
  return p
end

local function read_meta(base)
  local text = fs.read_file(base .. ".json")
  local m = text and json.decode(text)
  if type(m) ~= "table" or type(m.key) ~= "string" then return nil end
  return m
end

local function bucket_of(self, bucket)
  if bucket ~= M.BUCKET then
    fail(404, "NoSuchBucket", "The specified bucket does not exist: " .. bucket)
  end
end

local function new_tmp(self)
  return format("%s/.tmp/%s", self.dir, record.token(24, true))
end

---------------------------------------------------------------------------
-- Bodies: streamed to a file, checked as they go
---------------------------------------------------------------------------

-- A sink writing to a temp file with MD5 (the ETag) and SHA-256 digests.
local function open_sink(path)
  local f, err = io.open(path, "wb")
  if not f then fail(500, "InternalError", "cannot write the object: " .. tostring(err)) end
  f:setvbuf("no")
  return { f = f, path = path, n = 0, md5 = util.digest("md5"), sha = util.digest("sha256") }
end

local function sink_write(s, data, limit)
  s.n = s.n + #data
  if s.n > limit then fail(400, "EntityTooLarge", format("Your proposed upload exceeds the maximum allowed size (%d bytes)", limit)) end
  local ok, err = s.f:write(data)
  if not ok then fail(500, "InternalError", "cannot write the object: " .. tostring(err)) end
  s.md5:update(data)
  s.sha:update(data)
end

-- An aws-chunked decoder (the content-encoding newer SDKs use for
-- streamed bodies): `<hex size>[;chunk-signature=<sig>]\r\n<data>\r\n`...
-- `0...\r\n`, then optional trailer lines and `\r\n`. With `auth.signed`,
-- every chunk's signature is checked in the SigV4 chain.
local function chunk_decoder(auth, on_data)
  local buf, state, remaining, sig, csha, prev = "", "size", 0, nil, nil, auth.signature
  local function check_sig()
    if not auth.signed then return end
    local sts = concat({ "AWS4-HMAC-SHA256-PAYLOAD", auth.amz_date, auth.scope, prev, EMPTY_SHA256,
      csha:hex() }, "\n")
    local want = util.hmac_sha256(auth.key, sts)
    if not sig or not util.equal_ct(want, sig) then
      fail(403, "SignatureDoesNotMatch", "a chunk's signature does not match")
    end
    prev = sig
  end
  local d = {}
  function d.feed(chunk)
    buf = buf .. chunk
    while true do
      if state == "size" then
        local e = buf:find("\r\n", 1, true)
        if not e then
          if #buf > 4096 then fail(400, "IncompleteBody", "an aws-chunked size line is too long") end
          return
        end
        local line = buf:sub(1, e - 1)
        buf = buf:sub(e + 2)
        local hex, ext = line:match("^(%x+)(.*)$")
        if not hex or #hex > 12 then fail(400, "IncompleteBody", "an aws-chunked size line is malformed") end
        remaining = tonumber(hex, 16)
        sig = ext:match("^;chunk%-signature=(%x+)$")
        if auth.signed and not sig then fail(403, "SignatureDoesNotMatch", "a chunk has no signature") end
        csha = util.digest("sha256")
        if remaining == 0 then check_sig(); state = "trailer" else state = "data" end
      elseif state == "data" then
        if buf == "" then return end
        local take = buf:sub(1, remaining)
        buf = buf:sub(#take + 1)
        remaining = remaining - #take
        csha:update(take)
        on_data(take)
        if remaining == 0 then state = "crlf" else return end
      elseif state == "crlf" then
        if #buf < 2 then return end
        if buf:sub(1, 2) ~= "\r\n" then fail(400, "IncompleteBody", "an aws-chunked chunk is not followed by CRLF") end
        buf = buf:sub(3)
        check_sig()
        state = "size"
      else -- trailer: header lines up to an empty one; kept small
        if #buf > 16384 then fail(400, "IncompleteBody", "the aws-chunked trailer is too long") end
        return
      end
    end
  end
  function d.finish()
    if state ~= "trailer" then fail(400, "IncompleteBody", "the aws-chunked body ended before its last chunk") end
  end
  return d
end

-- Receive the request body into a temp file; returns the sink (n, md5, sha
-- finished) after checking the payload hash. The temp file is removed on
-- any failure.
function Objects:receive(ctx, auth, limit)
  local h = ctx.headers
  local cl = tonumber(h["content-length"] or "")
  local payload = auth.payload
  local chunked = payload:find("^STREAMING%-")
  local decoded = tonumber(h["x-amz-decoded-content-length"] or "")
  if chunked then
    if payload == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" then auth.signed = true
    elseif payload ~= "STREAMING-UNSIGNED-PAYLOAD-TRAILER" then
      fail(501, "NotImplemented", "the payload type " .. payload .. " is not served by dtlocal's object storage")
    end
    if decoded and decoded > limit then
      fail(400, "EntityTooLarge", format("Your proposed upload exceeds the maximum allowed size (%d bytes)", limit))
    end
  elseif payload ~= "UNSIGNED-PAYLOAD" and not payload:match("^%x+$") then
    fail(400, "InvalidArgument", "x-amz-content-sha256 must be a SHA-256, UNSIGNED-PAYLOAD or STREAMING-...")
  elseif payload ~= "UNSIGNED-PAYLOAD" and #payload ~= 64 then
    fail(400, "InvalidArgument", "x-amz-content-sha256 is not a SHA-256 hex digest")
  end
  if cl and cl > limit + (chunked and limit // 64 + 65536 or 0) then
    fail(400, "EntityTooLarge", format("Your proposed upload exceeds the maximum allowed size (%d bytes)", limit))
  end
  local s = open_sink(new_tmp(self))
  local ok, err = pcall(function()
    local dec = chunked and chunk_decoder(auth, function(data) sink_write(s, data, limit) end)
    while true do
      local chunk = ctx:read_chunk()
      if not chunk then break end
      if dec then dec.feed(chunk) else sink_write(s, chunk, limit) end
    end
    if dec then dec.finish() end
    local cok, cerr = s.f:close()
    s.f = nil
    if not cok then fail(500, "InternalError", "cannot write the object: " .. tostring(cerr)) end
    if chunked and decoded and decoded ~= s.n then
      fail(400, "IncompleteBody", format("the body has %d bytes, x-amz-decoded-content-length says %d", s.n, decoded))
    end
    s.etag, s.sha256 = s.md5:hex(), s.sha:hex()
    if not chunked and payload ~= "UNSIGNED-PAYLOAD" and s.sha256 ~= payload:lower() then
      fail(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
    end
  end)
  if not ok then
    if s.f then s.f:close() end
    os.remove(s.path)
    error(err, 0)
  end
  return s
end

-- Put a received temp file in place as the object bucket/key.
local function commit(self, bucket, key, tmp, size, etag)
  local base = obj_base(self, bucket, key)
  local ok, err = os.rename(tmp, base .. ".data")
  if not ok then os.remove(tmp); fail(500, "InternalError", "cannot store the object: " .. tostring(err)) end
  local mok, merr = store.write_atomic(base .. ".json",
    json.encode{ key = key, size = size, etag = etag, modified = record.now_ms() })
  if not mok then fail(500, "InternalError", "cannot store the object: " .. tostring(merr)) end
end

---------------------------------------------------------------------------
-- The operations
---------------------------------------------------------------------------

local function http_date(ms)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", ms // 1000)
end

local function list(self, ctx, bucket)
  local q = ctx.query
  if q["list-type"] ~= "2" then
    fail(501, "NotImplemented", "only ListObjectsV2 (list-type=2) is served by dtlocal's object storage")
  end
  if q.delimiter then fail(501, "NotImplemented", "listing with a delimiter is not served by dtlocal's object storage") end
  local prefix = q.prefix or ""
  if prefix:sub(1, #self.organization + 1) ~= self.organization .. "/" then
    fail(403, "AccessDenied", "Access Denied: list below " .. self.organization .. "/ only")
  end
  local max = tonumber(q["max-keys"] or "1000")
  if not max or max < 0 or max ~= math.floor(max) then fail(400, "InvalidArgument", "max-keys must be a non-negative integer") end
  max = math.min(max, 1000)
  local after = q["start-after"] or ""
  local token = q["continuation-token"]
  if token then
    if not token:match("^%x*$") or #token % 2 == 1 then fail(400, "InvalidArgument", "The continuation token provided is incorrect") end
    after = token:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)
  end
  local found = {}
  for _, name in ipairs(util.readdir(self.dir .. "/" .. bucket) or {}) do
    local base = name:match("^(%x+)%.json$")
    local m = base and read_meta(self.dir .. "/" .. bucket .. "/" .. base)
    if m and m.key:sub(1, #prefix) == prefix and m.key > after then found[#found + 1] = m end
  end
  sort(found, function(a, b) return a.key < b.key end)
  local out, truncated = {}, #found > max
  -- encoding-type=url (boto3 asks for it): keys and the prefix URL-encoded
  local enc = q["encoding-type"] == "url" and function(k) return uri_encode(k, true) end
    or function(k) return k end
  for i = 1, math.min(max, #found) do
    local m = found[i]
    out[i] = "<Contents>" .. elements("Key", enc(m.key), "LastModified", record.iso(math.tointeger(m.modified) or 0),
      "ETag", '"' .. m.etag .. '"', "Size", format("%d", m.size), "StorageClass", "STANDARD") .. "</Contents>"
  end
  local next_token = truncated and #out > 0
    and (found[#out].key:gsub(".", function(c) return format("%02x", c:byte()) end)) or nil
  xml_reply(ctx, 200, "<ListBucketResult" .. NS .. ">" .. elements("Name", bucket, "Prefix", enc(prefix),
    "KeyCount", #out, "MaxKeys", format("%d", max), "IsTruncated", truncated and "true" or "false",
    "EncodingType", q["encoding-type"] == "url" and "url" or nil,
    "ContinuationToken", token, "NextContinuationToken", next_token,
    "StartAfter", q["start-after"] and enc(q["start-after"]))
    .. concat(out) .. "</ListBucketResult>")
end

local function head_or_get(self, ctx, bucket, key, get)
  local base = obj_base(self, bucket, key)
  local m = read_meta(base)
  if not m or not util.stat(base .. ".data", true) then
    if not get then ctx:reply(404, nil); return end
    fail(404, "NoSuchKey", "The specified key does not exist.")
  end
  local headers = {
    ["Content-Type"] = "application/octet-stream", ETag = '"' .. m.etag .. '"',
    ["Last-Modified"] = http_date(math.tointeger(m.modified) or 0),
  }
  -- HEAD too: the server answers a HEAD with the file's headers (its
  -- Content-Length) and no body
  ctx:file(200, headers, base .. ".data")
end

local function put(self, ctx, bucket, key, auth)
  local s = self:receive(ctx, auth, self.max_object)
  commit(self, bucket, key, s.path, s.n, s.etag)
  ctx:reply(200, nil, { ETag = '"' .. s.etag .. '"' })
end

-- multipart: uploads[id] = { bucket, key, dir, parts = { [n] = { etag, size } } }
local function upload_of(self, id, bucket, key)
  local u = type(id) == "string" and self.uploads[id]
  if not u or u.bucket ~= bucket or u.key ~= key then
    fail(404, "NoSuchUpload", "The specified multipart upload does not exist.")
  end
  return u
end

local function create_multipart(self, ctx, bucket, key)
  -- uploads nobody completed or aborted: gone once their credentials could
  -- no longer have finished them; and a bound on those in progress
  local n = 0
  for uid, u in pairs(self.uploads) do
    if u.started + 2 * self.ttl < now() then
      self.uploads[uid] = nil
      fs.remove_tree(u.dir)
    else
      n = n + 1
    end
  end
  if n >= M.MAX_UPLOADS then
    fail(503, "SlowDown", format("too many multipart uploads in progress (%d): complete or abort some", n))
  end
  local id = record.token(32)
  local dir = self.dir .. "/.multipart/" .. id
  local ok, msg = fs.mkdirs(dir, 448, 448)
  if not ok then fail(500, "InternalError", "cannot start the upload: " .. tostring(msg)) end
  self.uploads[id] = { bucket = bucket, key = key, dir = dir, parts = {}, started = now() }
  xml_reply(ctx, 200, "<InitiateMultipartUploadResult" .. NS .. ">"
    .. elements("Bucket", bucket, "Key", key, "UploadId", id) .. "</InitiateMultipartUploadResult>")
end

local function upload_part(self, ctx, bucket, key, auth)
  local u = upload_of(self, ctx.query.uploadId, bucket, key)
  local n = tonumber(ctx.query.partNumber or "")
  if not n or n ~= math.floor(n) or n < 1 or n > M.MAX_PARTS then
    fail(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
  end
  local s = self:receive(ctx, auth, self.max_object)
  if self.uploads[ctx.query.uploadId] ~= u then os.remove(s.path); fail(404, "NoSuchUpload", "The upload was aborted.") end
  local ok, err = os.rename(s.path, format("%s/%d", u.dir, n))
  if not ok then os.remove(s.path); fail(500, "InternalError", tostring(err)) end
  u.parts[n] = { etag = s.etag, size = s.n }
  ctx:reply(200, nil, { ETag = '"' .. s.etag .. '"' })
end

local function abort_multipart(self, ctx, bucket, key)
  local u = upload_of(self, ctx.query.uploadId, bucket, key)
  self.uploads[ctx.query.uploadId] = nil
  fs.remove_tree(u.dir)
  ctx:reply(204, nil)
end

local function complete_multipart(self, ctx, bucket, key)
  local id = ctx.query.uploadId
  local u = upload_of(self, id, bucket, key)
  local ok, body = pcall(ctx.body, ctx, 1024 * 1024)
  if not ok then fail(400, "MalformedXML", "the CompleteMultipartUpload body is too large") end
  local list_ = {}
  for part in body:gmatch("<Part>(.-)</Part>") do
    local n = tonumber(part:match("<PartNumber>%s*(%d+)%s*</PartNumber>") or "")
    local etag = part:match("<ETag>%s*(.-)%s*</ETag>")
    if not n or not etag then fail(400, "MalformedXML", "a Part needs PartNumber and ETag") end
    etag = etag:gsub("&quot;", '"'):gsub('^"', ""):gsub('"$', "")
    list_[#list_ + 1] = { n = n, etag = etag }
  end
  if #list_ == 0 then fail(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.") end
  -- concatenate the parts into one temp file, in chunks; the ETag is S3's
  -- multipart one: MD5 of the parts' MD5s, "-<count>"
  local tmp = new_tmp(self)
  local out, err = io.open(tmp, "wb")
  if not out then fail(500, "InternalError", tostring(err)) end
  local md5s, size = {}, 0
  local good, perr = pcall(function()
    for i, p in ipairs(list_) do
      if i > 1 and p.n <= list_[i - 1].n then fail(400, "InvalidPartOrder", "The list of parts was not in ascending order.") end
      local have = u.parts[p.n]
      if not have or have.etag ~= p.etag then fail(400, "InvalidPart", "One or more of the specified parts could not be found.") end
      local f = assert(io.open(format("%s/%d", u.dir, p.n), "rb"))
      while true do
        local chunk = f:read(262144)
        if not chunk then break end
        assert(out:write(chunk))
      end
      f:close()
      size = size + have.size
      md5s[#md5s + 1] = have.etag
    end
    assert(out:close())
  end)
  if not good then
    pcall(out.close, out)
    os.remove(tmp)
    error(perr, 0)
  end
  local d = util.digest("md5")
  for _, e in ipairs(md5s) do
    d:update((e:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)))
  end
  local etag = d:hex() .. "-" .. #md5s
  self.uploads[id] = nil
  commit(self, bucket, key, tmp, size, etag)
  fs.remove_tree(u.dir)
  xml_reply(ctx, 200, "<CompleteMultipartUploadResult" .. NS .. ">" .. elements(
    "Location", "/" .. bucket .. "/" .. key, "Bucket", bucket, "Key", key, "ETag", '"' .. etag .. '"')
    .. "</CompleteMultipartUploadResult>")
end

local function delete(self, ctx, bucket, key)
  local base = obj_base(self, bucket, key)
  os.remove(base .. ".json")
  os.remove(base .. ".data")
  ctx:reply(204, nil)
end

--- Serve one request below /s3 (authenticated here, not by the API token).
function Objects:serve(ctx)
  local ok, err = pcall(function()
    local rest = ctx.path:sub(4)                 -- below /s3
    local bucket, rawkey = rest:match("^/([^/]+)/?(.*)$")
    if not bucket then fail(403, "AccessDenied", "Access Denied: ListBuckets is not served") end
    local auth = self:authenticate(ctx)
    bucket = pct_decode(bucket)
    bucket_of(self, bucket)
    local key = pct_decode(rawkey)
    local m, q = ctx.method, ctx.query
    if key == "" then
      if m == "GET" then return list(self, ctx, bucket) end
      if m == "HEAD" then return ctx:reply(200, nil) end
      fail(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
    end
    check_key(self, key)
    if m == "PUT" then
      if q.uploadId then return upload_part(self, ctx, bucket, key, auth) end
      if ctx.headers["x-amz-copy-source"] then fail(501, "NotImplemented", "CopyObject is not served by dtlocal's object storage") end
      return put(self, ctx, bucket, key, auth)
    elseif m == "POST" then
      if q.uploads then return create_multipart(self, ctx, bucket, key) end
      if q.uploadId then return complete_multipart(self, ctx, bucket, key) end
      fail(400, "InvalidRequest", "POST on an object needs ?uploads or ?uploadId")
    elseif m == "GET" then
      return head_or_get(self, ctx, bucket, key, true)
    elseif m == "HEAD" then
      return head_or_get(self, ctx, bucket, key, false)
    elseif m == "DELETE" then
      if q.uploadId then return abort_multipart(self, ctx, bucket, key) end
      return delete(self, ctx, bucket, key)
    end
    fail(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
  end)
  if ok then return end
  if getmetatable(err) ~= S3Error then error(err, 0) end
  if ctx.responded then return end
  if ctx.method == "HEAD" then return ctx:reply(err.status, nil) end
  xml_reply(ctx, err.status, "<Error>" .. elements("Code", err.code, "Message", err.message,
    "Resource", ctx.path, "RequestId", record.token(16)) .. "</Error>")
end

return M
