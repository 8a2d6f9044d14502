--- dtlocal.toolbox.files: the /files routes (doc/protocol.md §4.2).
--
-- Listing, info, folders, delete, move, permissions, find (literal text),
-- search (glob on names), replace, single and bulk upload (streamed to a
-- temp file beside the target, renamed into place once complete, so an
-- aborted upload leaves no partial file) and single and bulk download
-- (streamed from disk; bulk-download is the multipart layout of doc/protocol.md §4.2 with
-- parts `file`/`error`, and a read error mid-file aborts the connection
-- before the closing boundary so a short file never reads as success).
--
-- Handlers are dtlocal.http's (ctx, params) — see dtlocal.toolbox.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local fs = require "dtlocal.fs"
local multipart = require "daytona.runtime.multipart"
local errors = require "daytona.errors"

local util = core.util
local json = http.json
local raise = http.raise
local resolve, join, stat_or_fail, fs_fail =
  common.resolve, common.join, common.stat_or_fail, common.fs_fail
local io, os, table, string, ipairs, pairs, tostring, type, math =
  io, os, table, string, ipairs, pairs, tostring, type, math

local M = {}

-- Give the loop a turn every so many files of a tree walk, so one big walk
-- does not stall every other request.
local function make_ticker(every)
  local n = 0
  return function()
    n = n + 1
    if n % every == 0 then scheduler.sleep(0) end
  end
end

local function parse_mode(s, what)
  if s == nil or s == "" then return nil end
  if not s:match("^[0-7]+$") or #s > 4 then
    raise(400, ("%s: invalid mode %q (an octal string such as 755 is expected)"):format(what, s),
          "BAD_REQUEST")
  end
  return tonumber(s, 8)
end

---------------------------------------------------------------------------
-- list / info / folder / delete / move / permissions
---------------------------------------------------------------------------

-- Append the entries of dir (sorted, lstat'ed; failures skipped) to out,
-- descending `depth - 1` more levels into real (not symlinked) directories.
local function list_into(out, dir, depth, tick)
  local names = util.readdir(dir)
  if not names then return end
  table.sort(names)
  for _, name in ipairs(names) do
    tick()
    local path = join(dir, name)
    local st = util.stat(path, false)
    if st then
      local info = common.file_info(name, st)
      info.path = path
      out[#out + 1] = info
      if depth > 1 and st.type == "directory" then list_into(out, path, depth - 1, tick) end
    end
  end
end

function M.list(ctx)
  local app = ctx.app
  local q = ctx.query
  local path = resolve(app, (q.path and q.path ~= "") and q.path or ".", "path")
  local depth = 1
  if q.depth and q.depth ~= "" then
    depth = q.depth:match("^%d+$") and math.tointeger(tonumber(q.depth))
    if not depth or depth < 1 then
      raise(400, ("depth: must be an integer of at least 1 (got %q)"):format(q.depth), "BAD_REQUEST")
    end
  end
  local st = stat_or_fail(path)
  if st.type ~= "directory" then
    raise(400, path .. ": not a directory", "BAD_REQUEST")
  end
  local _, msg, code = util.readdir(path)
  if msg then fs_fail(path, msg, code) end
  local out = json.array()
  list_into(out, path, depth, make_ticker(200))
  return 200, out
end

function M.info(ctx)
  local app = ctx.app
  local path = resolve(app, common.query_required(ctx.query, "path"), "path")
  local st = stat_or_fail(path)
  local info = common.file_info(common.basename(path), st)
  info.path = path
  return 200, info
end

function M.folder(ctx)
  local app = ctx.app
  local path = resolve(app, common.query_required(ctx.query, "path"), "path")
  local mode = parse_mode(ctx.query.mode, "mode") or 493
  local existed = util.stat(path, true)
  local ok, msg, code = fs.mkdirs(path, mode, 493)
  if not ok then fs_fail(path, msg, code) end
  -- the mode asked for, not the umask's cut of it
  if not existed then util.chmod(path, mode) end
  return 201
end


function M.delete(ctx)
  local app = ctx.app
  local path = resolve(app, common.query_required(ctx.query, "path"), "path")
  local st = stat_or_fail(path, false)
  if st.type == "directory" and ctx.query.recursive ~= "true" then
    raise(400, path .. ": is a directory; pass recursive=true to delete it", "BAD_REQUEST")
  end
  local ok, msg, code = fs.remove_tree(path, make_ticker(200))
  if not ok then fs_fail(path, msg, code) end
  return 204
end

function M.move(ctx)
  local app = ctx.app
  local src = resolve(app, common.query_required(ctx.query, "source"), "source")
  local dst = resolve(app, common.query_required(ctx.query, "destination"), "destination")
  stat_or_fail(src, false)
  local pst = util.stat(common.dirname(dst), true)
  if not pst or pst.type ~= "directory" then
    raise(404, "destination: parent directory does not exist: " .. common.dirname(dst), "FILE_NOT_FOUND")
  end
  if util.stat(dst, false) then
    raise(409, "destination already exists: " .. dst, "CONFLICT")
  end
  local ok, msg, errno = os.rename(src, dst)
  if ok then return 200 end
  local code = common.errno_name(errno)
  if code ~= "EXDEV" then fs_fail(src, msg, code) end
  -- across devices: copy, then remove the source
  local res = app.proc.run({ "cp", "-a", "--", src, dst }, { cwd = "/" })
  if res.exit_code ~= 0 then
    raise(500, "copy across devices failed: " .. res.output, "INTERNAL_SERVER_ERROR")
  end
  local rok, rmsg = fs.remove_tree(src, make_ticker(200))
  if not rok then
    return 200, { message = "moved by copying, but the source could not be removed",
                                 error = tostring(rmsg) }
  end
  return 200
end

local function lookup_id(value, kind)
  if value:match("^%d+$") then return math.tointeger(tonumber(value)) end
  if kind == "owner" then
    local uid = util.user(value)
    if not uid then raise(400, ("owner: unknown user %q"):format(value), "BAD_REQUEST") end
    return uid
  end
  local gid = util.group(value)
  if not gid then raise(400, ("group: unknown group %q"):format(value), "BAD_REQUEST") end
  return gid
end

function M.permissions(ctx)
  local app = ctx.app
  local q = ctx.query
  local path = resolve(app, common.query_required(q, "path"), "path")
  stat_or_fail(path)
  local mode = parse_mode(q.mode, "mode")
  local uid = (q.owner and q.owner ~= "") and lookup_id(q.owner, "owner") or -1
  local gid = (q.group and q.group ~= "") and lookup_id(q.group, "group") or -1
  if mode then
    local ok, msg, code = util.chmod(path, mode)
    if not ok then fs_fail(path, msg, code) end
  end
  if uid ~= -1 or gid ~= -1 then
    local ok, msg, code = util.chown(path, uid, gid)
    if not ok then fs_fail(path, msg, code) end
  end
  return 200
end

---------------------------------------------------------------------------
-- find / search / replace
---------------------------------------------------------------------------

-- Walk a tree depth-first (not following symlinked directories), calling
-- fn(path, name, st) for every entry including the root.
local function walk(path, fn, tick)
  local st = util.stat(path, false)
  if not st then return end
  tick()
  fn(path, common.basename(path), st)
  if st.type ~= "directory" then return end
  local names = util.readdir(path)
  if not names then return end
  table.sort(names)
  for _, name in ipairs(names) do walk(join(path, name), fn, tick) end
end

local function is_binary(head)
  return head:find("\0", 1, true) ~= nil
end

function M.find(ctx)
  local app = ctx.app
  local root = resolve(app, common.query_required(ctx.query, "path"), "path")
  local pattern = common.query_required(ctx.query, "pattern")
  stat_or_fail(root)
  local matches = json.array()
  walk(root, function(path, _, st)
    if st.type ~= "file" then return end
    -- not io.open: the entry may have become a FIFO since the walk saw it
    local f = common.open_regular(path, "rb")
    if not f then return end
    local head = f:read(512) or ""
    if is_binary(head) then f:close(); return end
    f:seek("set", 0)
    local n = 0
    -- a file whose read fails (EINVAL from some /proc and /sys files, EIO)
    -- is skipped like one that cannot be opened: lines() raises on it
    pcall(function()
      for line in f:lines("L") do
        n = n + 1
        if line:find(pattern, 1, true) then
          matches[#matches + 1] = { file = path, line = n, content = (line:gsub("\r?\n$", "")) }
        end
      end
    end)
    f:close()
  end, make_ticker(50))
  return 200, matches
end

-- A shell glob (Go's filepath.Match: * ? [...] [^...] and \ escapes) as an
-- anchored Lua pattern; nil if malformed.
local function glob_to_pattern(glob)
  local out, i, n = { "^" }, 1, #glob
  while i <= n do
    local c = glob:sub(i, i)
    if c == "*" then out[#out + 1] = ".*"
    elseif c == "?" then out[#out + 1] = "."
    elseif c == "\\" then
      i = i + 1
      if i > n then return nil end
      out[#out + 1] = "%" .. glob:sub(i, i):gsub("%w", "%0"):gsub("^%%(%w)$", "%1")
    elseif c == "[" then
      local j = i + 1
      local cls = { "[" }
      if glob:sub(j, j) == "^" or glob:sub(j, j) == "!" then cls[#cls + 1] = "^"; j = j + 1 end
      local closed = false
      local first = true
      while j <= n do
        local d = glob:sub(j, j)
        if d == "]" and not first then closed = true; break end
        if d == "\\" then j = j + 1; d = glob:sub(j, j) end
        if d:match("%W") and d ~= "-" then cls[#cls + 1] = "%" .. d else cls[#cls + 1] = d end
        first = false
        j = j + 1
      end
      if not closed then return nil end
      cls[#cls + 1] = "]"
      out[#out + 1] = table.concat(cls)
      i = j
    elseif c:match("%W") then out[#out + 1] = "%" .. c
    else out[#out + 1] = c end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end
M.glob_to_pattern = glob_to_pattern

function M.search(ctx)
  local app = ctx.app
  local root = resolve(app, common.query_required(ctx.query, "path"), "path")
  local glob = common.query_required(ctx.query, "pattern")
  local pat = glob_to_pattern(glob)
  if not pat then raise(400, ("pattern: malformed glob %q"):format(glob), "BAD_REQUEST") end
  stat_or_fail(root)
  local files = json.array()
  walk(root, function(path, name)
    if name:find(pat) then files[#files + 1] = path end
  end, make_ticker(200))
  return 200, { files = files }
end

local function replace_literal(s, pat, new)
  local out, i, count = {}, 1, 0
  while true do
    local a, b = s:find(pat, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = new
    i = b + 1
    count = count + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out), count
end

function M.replace(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local files = common.str_list(body, "files", true)
  local pattern = common.str(body, "pattern", true)
  local new = body.newValue
  if new == nil or new == json.null then
    raise(400, "invalid request body: field 'newValue' is required", "INVALID_REQUEST_BODY")
  end
  if type(new) ~= "string" then
    raise(400, "invalid request body: field 'newValue' must be a string", "INVALID_REQUEST_BODY")
  end
  local results = json.array()
  for _, f in ipairs(files) do
    local ok, path = pcall(resolve, app, f, "files")
    local r = { file = f, success = false }
    if not ok then
      r.error = "invalid path"
    else
      -- a FIFO or a device among the files gets its own error: opening it
      -- would block the daemon (common.open_regular)
      local fh, err = common.open_regular(path, "rb")
      if not fh then
        r.error = err
      else
        local text = fh:read("a")
        fh:close()
        local replaced = replace_literal(text, pattern, new)
        local out, werr = common.open_regular(path, "wb")
        if not out then r.error = werr
        else
          local wok, e2 = out:write(replaced)
          out:close()
          if wok then r.success = true else r.error = e2 end
        end
      end
    end
    results[#results + 1] = r
  end
  return 200, results
end

---------------------------------------------------------------------------
-- Uploads
---------------------------------------------------------------------------

-- A file being received: bytes go to a temp file beside the target, which
-- is renamed over the target on commit and removed on abort.
local Upload = {}
Upload.__index = Upload

local function open_upload(path)
  local ok, msg, code = fs.mkdirs(common.dirname(path), 493, 493)
  if not ok then return nil, msg, code end
  local dst = util.stat(path, true)
  if dst and dst.type == "directory" then return nil, path .. ": is a directory", "EISDIR" end
  -- the rename would put a regular file in place of a FIFO, socket or
  -- device node that something in the sandbox uses: refuse, as a write
  -- into it (which would block on a FIFO) is not what an upload means
  local kind = dst and common.special(dst)
  if kind then return nil, ("%s: is %s, not a regular file"):format(path, kind), "ENOTREG" end
  local tmp = common.temp_beside(path)
  local f, err, errno = io.open(tmp, "wb")
  if not f then return nil, err, common.errno_name(errno) end
  -- the parser hands out whole chunks: one write(2) each, straight from the
  -- Lua string, rather than a copy through stdio's buffer
  f:setvbuf("no")
  -- an overwritten file keeps its permission bits, as an in-place write would
  if dst and dst.type == "file" then util.chmod(tmp, dst.mode) end
  return setmetatable({ path = path, tmp = tmp, f = f, bytes = 0 }, Upload)
end

function Upload:write(data)
  if self.err then return end
  local ok, err = self.f:write(data)
  if not ok then self.err = err; return end
  self.bytes = self.bytes + #data
end

function Upload:commit()
  local ok, err = self.f:close()
  self.f = nil
  if self.err or not ok then
    os.remove(self.tmp)
    return nil, self.err or err
  end
  local rok, rerr = os.rename(self.tmp, self.path)
  if not rok then os.remove(self.tmp); return nil, rerr end
  return true
end

function Upload:abort()
  if self.f then self.f:close(); self.f = nil end
  os.remove(self.tmp)
end

-- Read the request's multipart body as a stream (daytona.runtime.multipart),
-- calling on_part(name, filename) at each part's headers (it returns a sink
-- function(data), or nil to drop the part's data) and on_end(name) when the
-- part is complete. Returns true, or nil and a message when the body is not
-- valid multipart; other errors (the client going away) propagate.
-- A bulk upload is two parts a file; Daytona sets no count limit, and the
-- parts stream to disk, so only a sanity bound (100,000 files).
local MAX_UPLOAD_PARTS = 200000

local function each_part(ctx, on_part, on_end)
  local boundary, berr = multipart.boundary(ctx.headers["content-type"])
  if not boundary then return nil, "Content-Type: " .. tostring(berr) end
  local parser = multipart.parser(boundary, function(part)
    local sink = on_part(part.name or "", part.filename)
    return function(data)
      if data then
        if sink then sink(data) end
      else
        on_end(part.name or "")
      end
    end
  end, { max_parts = MAX_UPLOAD_PARTS })
  while true do
    local chunk = ctx:read_chunk()
    if not chunk then break end
    local ok, msg = parser:feed(chunk)
    if not ok then return nil, msg end
  end
  local n, msg = parser:finish()
  if not n then return nil, msg end
  return true
end

function M.upload(ctx)
  local app = ctx.app
  local path = resolve(app, common.query_required(ctx.query, "path"), "path")
  local up, committed, fail
  local ok, res, perr = pcall(each_part, ctx, function(name)
    if name ~= "file" or up then return nil end
    local u, msg, code = open_upload(path)
    if not u then fail = { msg, code }; return nil end
    up = u
    return function(data) up:write(data) end
  end, function(name)
    if name == "file" and up and not committed then
      committed = true
      local cok, cerr = up:commit()
      if not cok then fail = { "write: " .. tostring(cerr), "EIO" } end
    end
  end)
  if up and not committed then up:abort() end
  if not ok then error(res, 0) end
  if fail then fs_fail(path, fail[1], fail[2]) end
  if not res then raise(400, "invalid multipart form: " .. tostring(perr), "BAD_REQUEST") end
  if not committed then
    raise(400, "invalid multipart form: the part 'file' is required", "BAD_REQUEST")
  end
  return 200
end

function M.bulk_upload(ctx)
  local app = ctx.app
  local paths = {}        -- index -> destination (from files[i].path)
  local done = json.array()
  local errs = json.array()
  local current           -- { index =, up = } of the file part being received
  local text              -- { index =, buf = {} } of the .path part being received
  local ok, res, perr = pcall(each_part, ctx, function(name)
    local idx, kind = name:match("^files%[(%d+)%]%.(%a+)$")
    if kind == "path" then
      text = { index = idx, buf = {} }
      return function(data)
        if #text.buf < 1024 then text.buf[#text.buf + 1] = data end
      end
    elseif kind == "file" then
      local dest = paths[idx]
      if not dest then
        errs[#errs + 1] = ("file[%s]: missing .path metadata"):format(idx)
        return nil
      end
      local rok, abs = pcall(resolve, app, dest, "files[" .. idx .. "].path")
      if not rok then
        errs[#errs + 1] = ("%s: invalid path: %s"):format(dest,
          http.is_http_error(abs) and abs.message or tostring(abs))
        return nil
      end
      local up, msg = open_upload(abs)
      if not up then
        errs[#errs + 1] = ("%s: create: %s"):format(dest, msg)
        return nil
      end
      current = { index = idx, up = up, dest = abs }
      return function(data) current.up:write(data) end
    end
    return nil
  end, function(name)
    local idx, kind = name:match("^files%[(%d+)%]%.(%a+)$")
    if kind == "path" and text and text.index == idx then
      local p = table.concat(text.buf):match("^%s*(.-)%s*$")
      if p == "" then
        errs[#errs + 1] = ("file[%s]: empty path"):format(idx)
      else
        paths[idx] = p
      end
      text = nil
    elseif kind == "file" and current and current.index == idx then
      local cok, cerr = current.up:commit()
      if cok then
        done[#done + 1] = { path = current.dest, bytes = current.up.bytes }
      else
        errs[#errs + 1] = ("%s: write: %s"):format(current.dest, tostring(cerr))
      end
      current = nil
    end
  end)
  if current then current.up:abort(); current = nil end
  if not ok then error(res, 0) end
  if not res then
    errs[#errs + 1] = "invalid multipart form"
    return 400, { errors = errs, files = done }
  end
  if #errs > 0 then return 400, { errors = errs, files = done } end
  return 200, { files = done }
end

---------------------------------------------------------------------------
-- Downloads
---------------------------------------------------------------------------

-- RFC 5987 encoding: every byte outside the attr-char set percent-encoded.
local function rfc5987(s)
  return (s:gsub("[^%w!#%$&%+%-%.%^_`|~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- A Latin-1-safe quoted-string copy: characters above U+00FF and control
-- characters become '_', quotes and backslashes are escaped.
local function latin1_filename(s)
  local out = {}
  local ok = utf8.len(s)
  if ok then
    for _, cp in utf8.codes(s) do
      if cp < 32 or cp == 127 or cp > 255 then out[#out + 1] = "_"
      elseif cp == 34 or cp == 92 then out[#out + 1] = "\\" .. string.char(cp)
      else out[#out + 1] = utf8.char(cp) end
    end
  else
    for i = 1, #s do
      local b = s:byte(i)
      if b < 32 or b >= 127 then out[#out + 1] = "_"
      elseif b == 34 or b == 92 then out[#out + 1] = "\\" .. string.char(b)
      else out[#out + 1] = string.char(b) end
    end
  end
  return table.concat(out)
end

local function disposition(kind, name, filename)
  return ('%s; name="%s"; filename="%s"; filename*=utf-8\'\'%s'):format(
    kind, name, latin1_filename(filename), rfc5987(filename))
end

local mime_types = {
  txt = "text/plain; charset=utf-8", html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8", mjs = "text/javascript; charset=utf-8",
  json = "application/json", xml = "text/xml; charset=utf-8", csv = "text/csv; charset=utf-8",
  md = "text/markdown; charset=utf-8", py = "text/x-python; charset=utf-8",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
  svg = "image/svg+xml", webp = "image/webp", ico = "image/vnd.microsoft.icon",
  pdf = "application/pdf", zip = "application/zip", gz = "application/gzip",
  tar = "application/x-tar", wasm = "application/wasm", mp4 = "video/mp4",
  mp3 = "audio/mpeg", wav = "audio/wav",
}
local function content_type(path)
  local ext = path:match("%.([%w]+)$")
  return ext and mime_types[ext:lower()] or "application/octet-stream"
end

function M.download(ctx)
  local app = ctx.app
  local path = resolve(app, common.query_required(ctx.query, "path"), "path")
  local st = stat_or_fail(path)
  if st.type == "directory" then raise(400, path .. ": is a directory", "INVALID_FILE_PATH") end
  -- a FIFO would block the open, a device never end; the core opens with
  -- O_NONBLOCK and refuses what fstat says is not a regular file, so a
  -- path that changes after this check is refused too (EINVAL: a 400)
  local kind = common.special(st)
  if kind then
    raise(400, ("%s: is %s, not a regular file"):format(path, kind), "INVALID_FILE_PATH")
  end
  local base = common.basename(path)
  local ok, err = pcall(ctx.file, ctx, 200, {
    ["Content-Type"] = "application/octet-stream",
    ["Content-Disposition"] = ('attachment; filename="%s"; filename*=utf-8\'\'%s'):format(
      latin1_filename(base), rfc5987(base)),
  }, path)
  if not ok then
    -- nothing was sent: the file went away (or turned odd) since the stat
    if errors.is(err, errors.DaytonaError) and err.code then common.fs_fail(path, err.message, err.code) end
    error(err, 0)
  end
end

local BOUNDARY = "DAYTONA-FILE-BOUNDARY"
M.BOUNDARY = BOUNDARY

-- Files up to this size are sent as one Lua string with their part's
-- framing; bigger ones from the file in C (Response:write(file, n)).
local INLINE_MAX = 64 * 1024

-- The error part body for one requested path.
local function error_part(ctx, path, status, code, message)
  local body = http.error_body(status, message, code, ctx.path, ctx.method)
  body.path = path
  return table.concat {
    "--", BOUNDARY, "\r\n",
    "Content-Disposition: ", disposition("form-data", "error", path), "\r\n",
    "Content-Type: application/json; charset=utf-8\r\n\r\n",
    json.encode(body), "\r\n",
  }
end

function M.bulk_download(ctx)
  local app = ctx.app
  local raw = ctx:body()
  local body = raw and json.decode_object(raw)
  local paths = type(body) == "table" and body.paths
  local valid = type(paths) == "table" and #paths > 0
  if valid then
    for i = 1, #paths do if type(paths[i]) ~= "string" then valid = false end end
  end
  if not valid then
    return 400, http.error_body(400, 'request body must be {"paths": [ ... ]} and non-empty',
                                                 "BAD_REQUEST", ctx.path, ctx.method,
                                                 { error = 'request body must be {"paths": [ ... ]} and non-empty' })
  end
  local out = ctx:stream(200, {
    ["Content-Type"] = "multipart/form-data; boundary=" .. BOUNDARY,
  })
  local ok, perr = pcall(function()
    for _, req_path in ipairs(paths) do
      local rok, path = pcall(common.resolve, app, req_path, "paths")
      local st, msg, code
      if rok then st, msg, code = util.stat(path, true) end
      if not rok then
        out:write(error_part(ctx, req_path, 400, "INVALID_FILE_PATH", "invalid file path: "
          .. (http.is_http_error(path) and path.message or tostring(path))))
      elseif not st then
        if code == "EACCES" or code == "EPERM" then
          out:write(error_part(ctx, req_path, 403, "FILE_ACCESS_DENIED", "access denied: " .. req_path))
        else
          out:write(error_part(ctx, req_path, 404, "FILE_NOT_FOUND", "file not found: " .. req_path))
        end
      elseif st.type == "directory" then
        out:write(error_part(ctx, req_path, 400, "INVALID_FILE_PATH",
                             "invalid file path: is a directory: " .. req_path))
      elseif common.special(st) then
        out:write(error_part(ctx, req_path, 400, "INVALID_FILE_PATH",
                             ("invalid file path: is %s, not a regular file: %s"):format(common.special(st), req_path)))
      else
        local f, ferr, fcode = common.open_regular(path, "rb")
        if f then st = ferr end   -- the stat of what was opened
        if not f and (fcode == "ENOTREG" or fcode == "EISDIR") then
          out:write(error_part(ctx, req_path, 400, "INVALID_FILE_PATH", "invalid file path: " .. tostring(ferr)))
        elseif not f and (fcode == "ENOENT" or fcode == "ENOTDIR") then
          out:write(error_part(ctx, req_path, 404, "FILE_NOT_FOUND", "file not found: " .. req_path))
        elseif not f then
          out:write(error_part(ctx, req_path, 403, "FILE_ACCESS_DENIED",
                               "access denied: " .. tostring(ferr)))
        else
          local head = table.concat {
            "--", BOUNDARY, "\r\n",
            "Content-Disposition: ", disposition("form-data", "file", req_path), "\r\n",
            "Content-Type: ", content_type(path), "\r\n",
            "Content-Length: ", tostring(st.size), "\r\n\r\n",
          }
          -- A short read (an error, or the file shrank) must cut the
          -- connection (no closing boundary), so that the short part is
          -- never taken for the file.
          if st.size <= INLINE_MAX then
            -- small: one write for the whole part
            local data = st.size > 0 and f:read(st.size) or ""
            f:close()
            if data == nil or #data ~= st.size then
              error(("%s: read %d of %d bytes"):format(req_path, #(data or ""), st.size), 0)
            end
            out:write(head .. data .. "\r\n")
          else
            -- big: its bytes go from the file to the socket in C, never
            -- through Lua; the server cuts the connection itself on a short
            -- read, and the next write raises
            out:write(head)
            local wok, werr = pcall(ctx.res.write, ctx.res, f, st.size)
            f:close()
            if not wok then error(werr, 0) end
            out:write("\r\n")
          end
        end
      end
    end
    out:write("--" .. BOUNDARY .. "--\r\n")
  end)
  if not ok then
    if errors.is(perr, errors.DaytonaConnectionError) or errors.is(perr, errors.CancelledError) then
      error(perr, 0)
    end
    return out:abort()   -- the client sees a truncated body
  end
  out:finish()
end

return M
