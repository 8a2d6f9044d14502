-- The object storage of image build contexts (doc/dtlocal.md, "Object
-- storage"): push-access credentials, the SDK's upload of add_local_file /
-- add_local_dir contexts (skipped when the hash is stored), and the S3
-- endpoint refusing what is not signed right with the credentials it
-- issued: a bad signature, an unknown or expired key, a stolen session
-- token, a skewed date, keys that leave the bucket or the organization, a
-- body that is not the one signed, bodies over the limit. Every refusal is
-- S3's XML error, and leaves nothing stored.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local daytona = require "daytona"
local Image = require "daytona.image"
local object_storage = require "daytona.object_storage"
local http = require "daytona.runtime.http"
local process = require "daytona.runtime.process"

local util = core.util
local srv

local function access()
  return dtlocal.expect(srv, 200, "GET", "/object-storage/push-access")
end

-- One signed S3 request; `tweak` may change the signing inputs and the
-- headers sent. Returns status, body, headers.
local function s3(c, method, key, query, body, tweak)
  tweak = tweak or {}
  local scheme, host, prefix = c.storageUrl:match("^(https?)://([^/]+)(.*)$")
  local path = prefix .. "/" .. (tweak.bucket or c.bucket) .. (key and ("/" .. object_storage.uri_encode(key, true)) or "")
  if tweak.raw_key then path = prefix .. "/" .. c.bucket .. "/" .. tweak.raw_key end
  local r = {
    method = method, host = host, path = path, query = query or {},
    payload_hash = tweak.payload_hash or util.sha256(body or ""),
    access_key = tweak.access_key or c.accessKey, secret = tweak.secret or c.secret,
    session_token = tweak.session_token or c.sessionToken, region = c.region, time = tweak.time,
  }
  local headers = object_storage.sign(r)
  for k, v in pairs(tweak.headers or {}) do headers[k] = v end
  local qs = {}
  for i, p in ipairs(r.query) do qs[i] = object_storage.uri_encode(p[1]) .. "=" .. object_storage.uri_encode(p[2]) end
  local res = assert(http.request{
    method = method, url = scheme .. "://" .. host .. path .. (#qs > 0 and "?" .. table.concat(qs, "&") or ""),
    headers = headers, body = body, timeout = 30,
  })
  return res.status, res.body or "", res.headers
end

local function s3_code(body) return body:match("<Code>(.-)</Code>") end

-- every object the store holds: { key = size }
local function stored()
  local dir = srv.state_dir .. "/objects/daytona-contexts"
  local out = {}
  for _, name in ipairs(util.readdir(dir) or {}) do
    if name:match("%.json$") then
      local m = require("dtlocal.http").json.decode(helper.read_file(dir .. "/" .. name))
      out[m.key] = m.size
    end
  end
  return out
end

local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end

describe("dtlocal object storage for build contexts", function()
  -- a short "minute": push-access credentials live 15 of them (7.5 s: long
  -- enough for an upload on a busy machine, short enough to wait for)
  setup(function() srv = dtlocal.start{ minute_seconds = 0.5 } end)
  teardown(function() if srv then srv.stop() end helper.cleanup() end)

  it("issues push-access credentials with the API token only", function()
    helper.run(function()
      local st = dtlocal.request(srv, "GET", "/object-storage/push-access", nil, { token = false })
      assert.are.equal(401, st)
      local c = access()
      for _, k in ipairs{ "accessKey", "secret", "sessionToken", "storageUrl", "organizationId", "bucket", "region" } do
        assert.is_string(c[k], k)
        assert.is_true(#c[k] > 0, k)
      end
      assert.are.equal(srv.base_url .. "/s3", c.storageUrl)
      assert.are_not.equal(c.accessKey, access().accessKey)
    end)
  end)

  it("uploads the SDK's contexts once, as tars holding the archive paths", function()
    helper.run(function()
      local dir = helper.tmpdir()
      assert(util.mkdir(dir .. "/proj", 493))
      assert(util.mkdir(dir .. "/proj/sub", 493))
      local f = assert(io.open(dir .. "/proj/a.txt", "wb")); f:write("alpha\n"); f:close()
      f = assert(io.open(dir .. "/proj/sub/b.txt", "wb")); f:write("beta\n"); f:close()
      local img = Image.base("busybox"):add_local_dir(dir .. "/proj", "/opt/proj")
        :add_local_file(dir .. "/proj/a.txt", "/etc/")
      local archive = (dir .. "/proj"):sub(2)
      assert.matches("COPY " .. archive:gsub("%p", "%%%0") .. " /opt/proj\n", img.dockerfile)
      assert.matches("COPY " .. archive:gsub("%p", "%%%0") .. "/a%.txt /etc/a%.txt\n", img.dockerfile)
      local client = daytona.new{ api_url = srv.api_url, api_key = srv.token }
      local hashes = object_storage.upload_contexts(client._transport, img._contexts)
      assert.are.equal(2, #hashes)
      assert.are.equal(object_storage.hash(dir .. "/proj", archive), hashes[1])
      local objs = stored()
      local key = "local/" .. hashes[1] .. "/context.tar"
      assert.is_number(objs[key])
      -- the tar holds the directory under its archive path
      local p = srv.state_dir .. "/objects/daytona-contexts/" .. util.sha256(key) .. ".data"
      local r = process.run({ "tar", "-tf", p }, { timeout = 30 })
      assert.are.equal(0, r.exit_code, r.stderr)
      assert.matches(archive:gsub("%p", "%%%0") .. "/sub/b%.txt", r.stdout)
      -- the same contexts again: found by their hashes, not uploaded again
      local function puts() return select(2, srv.log():gsub(" PUT /s3/", "")) end
      local before = puts()
      local again = object_storage.upload_contexts(client._transport, img._contexts)
      assert.are.same(hashes, again)
      assert.are.equal(before, puts())
      client:close()
    end)
  end)

  it("takes the Python SDK's way of uploading: boto3's list_objects_v2, upload_fileobj, head_object", function()
    helper.run(function()
      local dir = helper.tmpdir()
      assert(util.mkdir(dir .. "/py", 493))
      -- over boto3's 8 MiB multipart threshold
      helper.bigfile(dir .. "/py", "big.bin", 9 * 1024 * 1024)
      local function upload()
        local r = assert(process.run({ "/usr/bin/python3", "spec/support/boto3_context.py", srv.api_url, srv.token,
          dir .. "/py", "pyctx" }, { timeout = 120, env = helper.child_env() }))
        assert.are.equal(0, r.exit_code, r.stderr)
        return require("dtlocal.http").json.decode(r.stdout)
      end
      local first = upload()
      assert.is_false(first.existed)
      assert.is_true(first.size > 9 * 1024 * 1024)
      assert.are.equal(first.size, stored()["local/pyctx/context.tar"])
      assert.truthy(srv.log():find("?uploads", 1, true))
      -- the same hash again: found, not sent
      assert.is_true(upload().existed)
    end)
  end)

  it("refuses context paths that are missing, of the wrong kind, or outside the project", function()
    helper.run(function()
      local img = Image.base("busybox")
      local ok, err = pcall(img.add_local_file, img, "/nonexistent/file.txt", "/x")
      assert.is_false(ok)
      assert.are.equal("DaytonaNotFoundError", err.name)
      ok, err = pcall(img.add_local_file, img, "/etc", "/x")
      assert.is_false(ok)
      assert.matches("not a file", tostring(err))
      ok, err = pcall(img.add_local_dir, img, "/etc/hostname", "/x")
      assert.is_false(ok)
      assert.matches("not a directory", tostring(err))
      -- a relative path above the current directory is outside the context
      local cwd = require("dtlocal.fs").cwd()
      local depth = select(2, cwd:gsub("/", ""))
      local up = ("../"):rep(depth) .. "etc/hostname"
      ok, err = pcall(img.add_local_file, img, up, "/x")
      assert.is_false(ok)
      assert.are.equal("DaytonaValidationError", err.name)
      assert.matches("outside the project", tostring(err))
      assert.are.equal("FROM busybox\n", img.dockerfile)
      assert.are.equal(0, #img._contexts)
    end)
  end)

  it("accepts a signed PUT and serves it back; lists by prefix", function()
    helper.run(function()
      local c = access()
      local st, body = s3(c, "PUT", "local/h1/context.tar", {}, "hello")
      assert.are.equal(200, st, body)
      st, body = s3(c, "GET", "local/h1/context.tar", {}, nil)
      assert.are.equal(200, st)
      assert.are.equal("hello", body)
      st, body = s3(c, "GET", nil, { { "list-type", "2" }, { "prefix", "local/h1/" }, { "max-keys", "1" } }, nil)
      assert.are.equal(200, st)
      assert.matches("<Key>local/h1/context.tar</Key>", body, 1, true)
      st, body = s3(c, "GET", nil, { { "list-type", "2" }, { "prefix", "local/none/" } }, nil)
      assert.are.equal(200, st)
      assert.is_nil(body:find("<Contents>", 1, true))
    end)
  end)

  it("takes aws-chunked bodies: unsigned with a trailer, and signed chunk by chunk", function()
    helper.run(function()
      local c = access()
      local data = { ("a"):rep(70000), ("b"):rep(1000), "tail" }
      local whole = table.concat(data)
      -- unsigned chunks and a checksum trailer (what newer SDKs send over TLS)
      local parts = {}
      for _, d in ipairs(data) do parts[#parts + 1] = ("%x\r\n%s\r\n"):format(#d, d) end
      parts[#parts + 1] = "0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
      local st, body = s3(c, "PUT", "local/chunked/context.tar", {}, table.concat(parts), {
        payload_hash = "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        headers = { ["Content-Encoding"] = "aws-chunked", ["X-Amz-Decoded-Content-Length"] = tostring(#whole),
                    ["X-Amz-Trailer"] = "x-amz-checksum-crc32" } })
      assert.are.equal(200, st, body)
      st, body = s3(c, "GET", "local/chunked/context.tar", {}, nil)
      assert.are.equal(whole, body)
      -- signed chunks: each signature chained from the request's
      local function signed_body(tamper)
        local t = os.time()
        local scheme, host, prefix = c.storageUrl:match("^(https?)://([^/]+)(.*)$")
        local path = prefix .. "/" .. c.bucket .. "/local/signed/context.tar"
        local h = object_storage.sign{ method = "PUT", host = host, path = path, query = {},
          payload_hash = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", access_key = c.accessKey, secret = c.secret,
          session_token = c.sessionToken, region = c.region, time = t }
        local date, amz = os.date("!%Y%m%d", t), h["X-Amz-Date"]
        local k = util.hmac_sha256("AWS4" .. c.secret, date, true)
        for _, part in ipairs{ c.region, "s3", "aws4_request" } do k = util.hmac_sha256(k, part, true) end
        local prev = h.Authorization:match("Signature=(%x+)")
        local out = {}
        local chunks = { data[1], data[2], data[3], "" }
        for i, d in ipairs(chunks) do
          local sig = util.hmac_sha256(k, table.concat({ "AWS4-HMAC-SHA256-PAYLOAD", amz,
            date .. "/" .. c.region .. "/s3/aws4_request", prev, util.sha256(""), util.sha256(d) }, "\n"))
          if tamper and i == 2 then d = d:sub(1, -2) .. "X" end
          out[#out + 1] = ("%x;chunk-signature=%s\r\n%s\r\n"):format(#d, sig, d)
          prev = sig
        end
        h["Content-Encoding"] = "aws-chunked"
        h["X-Amz-Decoded-Content-Length"] = tostring(#whole)
        local res = assert(http.request{ method = "PUT", url = scheme .. "://" .. host .. path, headers = h,
          body = table.concat(out), timeout = 30 })
        return res.status, res.body or ""
      end
      st, body = signed_body(false)
      assert.are.equal(200, st, body)
      st, body = s3(c, "GET", "local/signed/context.tar", {}, nil)
      assert.are.equal(whole, body)
      -- a chunk changed after signing: refused, the stored object unchanged
      st, body = s3(c, "DELETE", "local/signed/context.tar", {}, nil)
      assert.are.equal(204, st)
      st, body = signed_body(true)
      assert.are.equal(403, st)
      assert.are.equal("SignatureDoesNotMatch", s3_code(body))
      assert.is_nil(stored()["local/signed/context.tar"])
      -- HEAD gives the size, as boto3's head_object reads it
      local hst, _, hh = s3(c, "HEAD", "local/chunked/context.tar", {}, nil)
      assert.are.equal(200, hst)
      assert.are.equal(tostring(#whole), hh["content-length"])
      -- boto3 lists with encoding-type=url: keys come back encoded, integers as integers
      st, body = s3(c, "GET", nil, { { "list-type", "2" }, { "prefix", "local/chunked/" }, { "encoding-type", "url" } }, nil)
      assert.are.equal(200, st)
      assert.matches("<EncodingType>url</EncodingType>", body, 1, true)
      assert.matches("<Size>" .. #whole .. "</Size>", body, 1, true)
    end)
  end)

  it("aborts multipart uploads, and bounds those in progress", function()
    helper.run(function()
      -- a server of its own with the real 15 minutes: 66 uploads must not
      -- outlive their credentials on a slow machine
      local short = srv
      srv = dtlocal.start()
      local ok, err = pcall(function()
        local c = access()
        local ids = {}
        local function start(n)
          local st, body = s3(c, "POST", "local/mp" .. n .. "/context.tar", { { "uploads", "" } }, "")
          return st, body, body:match("<UploadId>(.-)</UploadId>")
        end
        local st, body, id = start(0)
        assert.are.equal(200, st, body)
        st, body = s3(c, "PUT", "local/mp0/context.tar", { { "partNumber", "1" }, { "uploadId", id } }, "part one")
        assert.are.equal(200, st, body)
        st = s3(c, "DELETE", "local/mp0/context.tar", { { "uploadId", id } }, nil)
        assert.are.equal(204, st)
        -- gone: completing it now is NoSuchUpload, and its parts are removed
        st, body = s3(c, "POST", "local/mp0/context.tar", { { "uploadId", id } },
          "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>")
        assert.are.equal(404, st)
        assert.are.equal("NoSuchUpload", s3_code(body))
        assert.are.same({}, util.readdir(srv.state_dir .. "/objects/.multipart"))
        -- at most 64 in progress
        for n = 1, 64 do
          local s2, b2, i2 = start(n)
          assert.are.equal(200, s2, b2)
          ids[n] = i2
        end
        st, body = start(65)
        assert.are.equal(503, st)
        assert.are.equal("SlowDown", s3_code(body))
        for n = 1, 64 do
          assert.are.equal(204, (s3(c, "DELETE", "local/mp" .. n .. "/context.tar", { { "uploadId", ids[n] } }, nil)))
        end
        assert.are.same({}, util.readdir(srv.state_dir .. "/objects/.multipart"))
      end)
      srv.stop()
      srv = short
      if not ok then error(err, 0) end
    end)
  end)

  it("refuses bad signatures, unknown keys, stolen tokens and skewed dates with S3 errors", function()
    helper.run(function()
      local c = access()
      local before = count(stored())
      local function refused(status, code, key, tweak)
        local st, body, h = s3(c, "PUT", key or "local/x/context.tar", {}, "data", tweak)
        assert.are.equal(status, st, body)
        assert.are.equal(code, s3_code(body), body)
        assert.matches("xml", h["content-type"])
      end
      refused(403, "SignatureDoesNotMatch", nil, { secret = c.secret:sub(2) .. "x" })
      refused(403, "InvalidAccessKeyId", nil, { access_key = "AKIAIOSFODNN7EXAMPLE" })
      -- another credential's session token with this one's key and secret
      refused(403, "InvalidToken", nil, { session_token = access().sessionToken })
      refused(403, "RequestTimeTooSkewed", nil, { time = os.time() - 3600 })
      -- signed for one body, another sent
      refused(400, "XAmzContentSHA256Mismatch", nil, { payload_hash = util.sha256("other") })
      -- a header changed after signing
      refused(403, "SignatureDoesNotMatch", nil, { headers = { ["X-Amz-Date"] = os.date("!%Y%m%dT%H%M%SZ", os.time() - 5) } })
      -- no signature at all
      local r = assert(http.request{ method = "PUT", url = c.storageUrl .. "/" .. c.bucket .. "/local/x/context.tar",
        body = "data", timeout = 30 })
      assert.are.equal(403, r.status)
      assert.are.equal("AccessDenied", s3_code(r.body))
      -- the API token is no S3 credential
      r = assert(http.request{ method = "GET", url = c.storageUrl .. "/" .. c.bucket .. "?list-type=2",
        headers = { Authorization = "Bearer " .. srv.token }, timeout = 30 })
      assert.are.equal(400, r.status)
      assert.are.equal("InvalidArgument", s3_code(r.body))
      assert.are.equal(before, count(stored()))
    end)
  end)

  it("refuses keys that leave the bucket or the organization, and other buckets", function()
    helper.run(function()
      local c = access()
      local before = count(stored())
      for _, raw in ipairs{ "local/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "local/%2E%2E/x", "local/%2e/x", "local//x",
                            "other/x", "%2Fetc%2Fpasswd", "local/a%00b", "local/" .. ("k"):rep(1100) } do
        local st, body = s3(c, "PUT", nil, {}, "data", { raw_key = raw })
        assert.is_true(st == 400 or st == 403, raw .. ": " .. st)
        assert.is_truthy(s3_code(body), raw)
      end
      -- a literal "/../" is folded by the client (libcurl) before it leaves:
      -- whatever path it lands on, nothing is stored
      local st = s3(c, "PUT", nil, {}, "data", { raw_key = "local/../../../etc/passwd" })
      assert.are_not.equal(200, st)
      local body
      st, body = s3(c, "PUT", "local/x", {}, "data", { bucket = "another" })
      assert.are.equal(404, st)
      assert.are.equal("NoSuchBucket", s3_code(body))
      st, body = s3(c, "GET", nil, { { "list-type", "2" }, { "prefix", "" } }, nil)
      assert.are.equal(403, st)
      assert.are.equal(before, count(stored()))
      -- nothing was written outside the store
      assert.is_nil(util.stat(srv.state_dir .. "/objects/etc"))
    end)
  end)

  it("refuses bodies over the limit before reading them", function()
    helper.run(function()
      local c = access()
      local before = count(stored())
      -- a declared length over S3's 5 GiB, with Expect: 100-continue as the
      -- AWS SDKs send it: refused at the headers, before any byte of the
      -- body (a raw connection that sends none)
      local scheme, host, prefix = c.storageUrl:match("^(https?)://([^/]+)(.*)$")
      local path = prefix .. "/" .. c.bucket .. "/local/big/context.tar"
      local h = object_storage.sign{ method = "PUT", host = host, path = path, query = {},
        payload_hash = "UNSIGNED-PAYLOAD", access_key = c.accessKey, secret = c.secret,
        session_token = c.sessionToken, region = c.region }
      local req = { "PUT " .. path .. " HTTP/1.1", "Host: " .. host, "Content-Length: 6000000000",
        "Expect: 100-continue" }
      for k, v in pairs(h) do req[#req + 1] = k .. ": " .. v end
      local p = process.spawn({ "python3", "spec/support/raw_http.py", host:match(":(%d+)$"), "raw", "5" },
        { stdin = "pipe", stdout = "pipe" })
      p:write(table.concat(req, "\r\n") .. "\r\n\r\n")
      p:close_stdin()
      local parts = {}
      for line in p:lines("stdout", 30) do parts[#parts + 1] = line end
      local out = table.concat(parts, "\n")
      p:wait(30)
      p:close()
      local res = require("dtlocal.http").json.decode(out)
      assert.matches("^HTTP/1%.1 400", res.data)
      assert.matches("EntityTooLarge", res.data)
      -- an aws-chunked body announcing more than the limit
      local st, body = s3(c, "PUT", "local/big2/context.tar", {}, "0\r\n\r\n", {
        payload_hash = "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        headers = { ["X-Amz-Decoded-Content-Length"] = "6000000000", ["Content-Encoding"] = "aws-chunked" } })
      assert.are.equal(400, st)
      assert.are.equal("EntityTooLarge", s3_code(body))
      assert.are.equal(before, count(stored()))
    end)
  end)

  it("refuses credentials once they expired", function()
    helper.run(function()
      local c = access()
      local st = s3(c, "PUT", "local/e1/context.tar", {}, "x")
      assert.are.equal(200, st)
      -- they live 15 server minutes (7.5 s here): poll until refused
      local body, key
      local n = 0
      helper.eventually(function()
        n = n + 1
        key = "local/e" .. n .. "x/context.tar"
        st, body = s3(c, "PUT", key, {}, "x")
        return st ~= 200
      end, 30, 0.2)
      assert.are.equal(400, st)
      assert.are.equal("ExpiredToken", s3_code(body))
      assert.is_nil(stored()[key])
    end)
  end)
end)
