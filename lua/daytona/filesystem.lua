--- `sandbox.fs`: files and directories inside the sandbox.
--
--     sb.fs:upload_file("build/app.tar", "/tmp/app.tar")          -- a local file
--     sb.fs:upload_file({ data = "print(1)\n" }, "main.py")        -- bytes from Lua
--     local bytes = sb.fs:download_file("main.py")                  -- to memory
--     sb.fs:download_file("/tmp/out.bin", "out.bin")                -- streamed to disk
--     for chunk in sb.fs:download_file_stream("/var/log/big.log") do ... end
--
-- Transfers go through the toolbox's bulk multipart routes, as the
-- official SDKs do: uploads stream local files from disk, downloads stream
-- into files or chunks, so memory stays flat whatever the size. Transfer
-- timeouts default to 30 minutes (0 = none). Remote paths that are
-- relative are resolved against the sandbox's work directory.
local progressbar = require "daytona.progressbar"
local check = require "daytona.check"
local transport = require "daytona.transport"
local wire = require "daytona.wire"
local core = require "daytona.core"
local errors = require "daytona.errors"
local rfs = require "daytona.runtime.fs"
local multipart    -- daytona.runtime.multipart, loaded by the first download

local type, pairs, ipairs, tostring, setmetatable, error, pcall, io, os =
  type, pairs, ipairs, tostring, setmetatable, error, pcall, io, os
local concat = table.concat

local M = {}

local FileSystem = {}
FileSystem.__index = FileSystem
FileSystem.__name = "daytona.filesystem.FileSystem"
M.FileSystem = FileSystem

local TRANSFER_TIMEOUT = 1800

--- The file system object of a sandbox (made by the Sandbox).
-- @param sb Sandbox
-- @return FileSystem
function M.new(sb)
  return setmetatable({ _sb = sb }, FileSystem)
end

local function call_toolbox(self, opts)
  return self._sb:toolbox(opts)
end

local function file_info(v)
  local m = wire.to_lua(v or {}, "FileInfo")
  m.is_dir = m.is_dir or false
  return m
end

---------------------------------------------------------------------------
-- metadata and small operations
---------------------------------------------------------------------------

--- The entries of a directory (not recursive).
-- @param path directory
-- @return list of `{ name, is_dir, size, mode, permissions, owner, group,
--   mod_time, modified_at }`
-- @raise DaytonaNotFoundError
function FileSystem:list_files(path)
  path = check.string(path, "list_files", "path")
  local r = call_toolbox(self, { method = "GET", path = "/files", query = { path = path }, what = "list files" }) or {}
  local out = {}
  for i, v in ipairs(r) do out[i] = file_info(v) end
  return out
end

--- Details of a file or directory (symlinks followed).
-- @param path string
-- @return `{ name, is_dir, size, mode, permissions, owner, group, mod_time, modified_at }`
-- @raise DaytonaNotFoundError
function FileSystem:get_file_info(path)
  path = check.string(path, "get_file_info", "path")
  return file_info(call_toolbox(self, { method = "GET", path = "/files/info", query = { path = path },
    what = "get file info" }))
end

local function mode_arg(v, f, arg, optional)
  if v == nil and optional then return nil end
  if type(v) ~= "string" or not v:match("^[0-7][0-7][0-7][0-7]?$") then
    check.argerror(f, arg, "octal permission string such as \"755\" expected, got " .. tostring(v))
  end
  return v
end

--- Create a directory (and its parents; an existing one is fine).
-- @param path string
-- @param mode optional octal string, default "755"
-- @return nothing
function FileSystem:create_folder(path, mode)
  path = check.string(path, "create_folder", "path")
  mode = mode_arg(mode or "755", "create_folder", "mode")
  call_toolbox(self, { method = "POST", path = "/files/folder", query = { path = path, mode = mode },
    idempotent = true, what = "create folder" })
end

--- Delete a file, or a directory with `recursive = true`.
-- @param path string
-- @param opts optional `{ recursive = false }`
-- @return nothing
-- @raise DaytonaNotFoundError; DaytonaValidationError for a directory
--   without recursive
function FileSystem:delete_file(path, opts)
  path = check.string(path, "delete_file", "path")
  opts = check.options(opts, "delete_file", check.set("recursive"))
  local recursive = check.optboolean(opts.recursive, "delete_file", "recursive")
  call_toolbox(self, { method = "DELETE", path = "/files", query = { path = path, recursive = recursive or nil },
    what = "delete file" })
end

--- Move or rename.
-- @param source string
-- @param destination string (must not exist)
-- @return nothing
-- @raise DaytonaNotFoundError; DaytonaConflictError if destination exists
function FileSystem:move_files(source, destination)
  source = check.string(source, "move_files", "source")
  destination = check.string(destination, "move_files", "destination")
  call_toolbox(self, { method = "POST", path = "/files/move", query = { source = source, destination = destination },
    what = "move files" })
end

--- Change mode, owner or group.
-- @param path string
-- @param opts `{ mode = "755", owner = "user", group = "group" }` (any of them)
-- @return nothing
-- @raise DaytonaNotFoundError; DaytonaValidationError for an unknown user
function FileSystem:set_file_permissions(path, opts)
  local f = "set_file_permissions"
  path = check.string(path, f, "path")
  opts = check.options(opts, f, check.set("mode", "owner", "group"))
  local q = {
    path = path,
    mode = mode_arg(opts.mode, f, "mode", true),
    owner = check.optstring(opts.owner, f, "owner"),
    group = check.optstring(opts.group, f, "group"),
  }
  if not q.mode and not q.owner and not q.group then check.argerror(f, "options", "mode, owner or group expected") end
  call_toolbox(self, { method = "POST", path = "/files/permissions", query = q, idempotent = true,
    what = "set file permissions" })
end

--- Search file contents for a literal string (recursive; binary files
-- skipped).
-- @param path directory
-- @param pattern literal text
-- @return list of `{ file, line, content }`
function FileSystem:find_files(path, pattern)
  path = check.string(path, "find_files", "path")
  pattern = check.string(pattern, "find_files", "pattern")
  local r = call_toolbox(self, { method = "GET", path = "/files/find", query = { path = path, pattern = pattern },
    what = "find files" }) or {}
  local out = {}
  for i, v in ipairs(r) do out[i] = wire.to_lua(v, "Match") end
  return out
end

--- Find files whose names match a shell glob (recursive).
-- @param path directory
-- @param pattern glob such as "*.py"
-- @return `{ files = { path, ... } }`
function FileSystem:search_files(path, pattern)
  path = check.string(path, "search_files", "path")
  pattern = check.string(pattern, "search_files", "pattern")
  local r = wire.to_lua(call_toolbox(self, { method = "GET", path = "/files/search",
    query = { path = path, pattern = pattern }, what = "search files" }) or {})
  r.files = r.files or {}
  return r
end

--- Replace a literal string in files.
-- @param files list of paths
-- @param pattern literal text to replace (every occurrence)
-- @param new_value replacement
-- @return list of `{ file, success, error }` (per-file failures are
--   reported here, not raised)
function FileSystem:replace_in_files(files, pattern, new_value)
  local f = "replace_in_files"
  files = check.strlist(files, f, "files")
  pattern = check.string(pattern, f, "pattern")
  new_value = check.string(new_value, f, "new_value", true)
  local r = call_toolbox(self, { method = "POST", path = "/files/replace", idempotent = true,
    json = { files = files, pattern = pattern, newValue = new_value }, what = "replace in files" }) or {}
  local out = {}
  for i, v in ipairs(r) do out[i] = wire.to_lua(v, "ReplaceResult") end
  return out
end

---------------------------------------------------------------------------
-- uploads
---------------------------------------------------------------------------

-- cancellation: a function returning true, or a table whose `cancelled`
-- field is true (so `token.cancelled = true` from another task stops it)
local function cancel_arg(v, f)
  if v == nil then return nil end
  if type(v) == "function" then return v end
  if type(v) == "table" then return function() return v.cancelled == true end end
  check.argerror(f, "cancel", "function or table expected, got " .. type(v))
end

local function cancelled_error(what)
  return errors.CancelledError(what .. " cancelled", { code = "ECANCELED" })
end

--- A cancellation token for the streaming transfers: pass it as
-- `cancel`, call `token:cancel()` (from another task or a callback) to stop.
-- @return `{ cancelled = false, cancel = function }`
function FileSystem:cancel_token()
  local t = { cancelled = false }
  function t.cancel() t.cancelled = true end
  return t
end

-- a validated upload source: { file = path } or { data = bytes } or
-- { producer = fn }
local function source_arg(src, f, arg, allow_producer)
  if type(src) == "string" then
    if src == "" then check.argerror(f, arg, "local path expected, got an empty string") end
    local fh, emsg = io.open(src, "rb")
    if not fh then
      -- a string is always a local path (Python's bytes are Lua strings
      -- too, so content passed here would otherwise be taken for a name)
      local looks_like_content = #src > 4096 or src:find("[%z\n\r]")
      local msg
      if looks_like_content then
        local preview = src:sub(1, 32):gsub("[%c\"]", function(c) return ("\\%03d"):format(c:byte()) end)
        msg = ("%s: '%s' is a local path, and this string (%d bytes, \"%s%s\") looks like file content, "
          .. "not a path: to upload a string, pass { data = ... }"):format(f, arg, #src, preview, #src > 32 and "..." or "")
      else
        msg = ("%s: cannot open local file %s (%s); a string is a local path: to upload the string itself, "
          .. "pass { data = ... }"):format(f, src, tostring(emsg):gsub("^[^:]*: ", ""))
      end
      error(errors.DaytonaValidationError(msg, { code = looks_like_content and "EINVAL" or "ENOENT", argument = arg }), 0)
    end
    local size = fh:seek("end")
    fh:close()
    return { file = src, size = size }
  end
  if type(src) == "table" then
    if type(src.data) == "string" then return { data = src.data, size = #src.data } end
    if type(src.path) == "string" then return source_arg(src.path, f, arg, allow_producer) end
  end
  if allow_producer and type(src) == "function" then return { producer = src } end
  check.argerror(f, arg, (allow_producer and "local path, { data = bytes } or a producer function" or
    "local path or { data = bytes }") .. " expected, got " .. type(src))
end

local function parse_upload_result(r, dests)
  -- map the daemon's { files = [{path, bytes}], errors = ["<dest>: ..."] }
  -- to the requests; the daemon reports relative destinations resolved
  -- against the work directory, so a relative one matches by suffix
  local done, errs = {}, {}
  if type(r) == "table" then
    for _, x in ipairs(type(r.files) == "table" and r.files or {}) do
      if type(x) == "table" and type(x.path) == "string" then done[#done + 1] = x end
    end
    for _, e in ipairs(type(r.errors) == "table" and r.errors or {}) do errs[#errs + 1] = tostring(e) end
  end
  local used = {}
  local function take(d)
    local rel = d:gsub("^%./", "")
    for i, x in ipairs(done) do
      if not used[i] and (x.path == d or x.path == rel or
          (rel:sub(1, 1) ~= "/" and x.path:sub(-#rel - 1) == "/" .. rel)) then
        used[i] = true
        return x
      end
    end
  end
  local results = {}
  for i, d in ipairs(dests) do
    local res = { destination = d }
    local trimmed = d:match("^%s*(.-)%s*$")
    local x = take(trimmed)
    if x then
      res.bytes = math.tointeger(x.bytes) or x.bytes
    else
      local rel = trimmed:gsub("^%./", "")
      local msg
      for _, e in ipairs(errs) do
        if e:find(rel, 1, true) then msg = e; break end
      end
      msg = msg or (#errs > 0 and concat(errs, ", ")) or "no result for this file"
      res.error = errors.DaytonaError(msg, { code = "UPLOAD_FAILED", destination = d })
    end
    results[i] = res
  end
  return results
end

-- The progress of one transfer: the terminal's bar (daytona.progressbar)
-- and the user's `on_progress`, which gets one object with the Python
-- SDK's names (UploadProgress.bytes_sent, DownloadProgress.bytes_received
-- and total_bytes; `total` too) followed by the same numbers positionally.
-- Returns nil when neither applies. `finish` is idempotent and also runs
-- as the tracker's `__close`.
local Tracker = {}
Tracker.__index = Tracker
Tracker.__close = function(t, err) t:finish(err == nil) end

local function tracker(kind, nfiles, on_progress)
  local bar = progressbar.start(kind, nfiles)
  if not bar and not on_progress then return nil end
  return setmetatable({ bar = bar, cb = on_progress, kind = kind }, Tracker)
end

--- Report `done` bytes of `total` (nil: unknown); `file` is the name of
-- the file being moved, `index` its place among the transfer's files.
-- @local
function Tracker:update(done, total, file, index)
  if self.bar then self.bar:update(done, total, file, index) end
  local cb = self.cb
  if cb then
    local p
    if self.kind == "upload" then
      p = { bytes_sent = done, total = total, total_bytes = total, file = file }
    else
      p = { bytes_received = done, total = total, total_bytes = total, file = file }
    end
    cb(p, done, total)
  end
end

--- End the transfer (`ok` false: it failed).
-- @local
function Tracker:finish(ok)
  if self.bar then self.bar:finish(ok) end
end

-- One bulk-upload request for a list of { src = validated source, dest = }.
local function bulk_upload(self, items, f, timeout, on_progress, cancel)
  local track <close> = tracker("upload", #items, on_progress)
  local parts = {}
  local replayable = true
  local producer
  for i, it in ipairs(items) do
    local k = i - 1
    parts[#parts + 1] = { name = ("files[%d].path"):format(k), data = it.dest }
    local p = { name = ("files[%d].file"):format(k), filename = it.dest, content_type = "application/octet-stream" }
    if it.src.file then p.file = it.src.file
    elseif it.src.data then p.data = it.src.data
    else producer = it.src.producer; replayable = false end
    parts[#parts + 1] = p
  end
  local total = 0
  for _, it in ipairs(items) do total = total + (it.src.size or 0) end
  local progress
  if track or cancel then
    local cur, upto = 1, items[1].src.size or 0
    progress = function(done)
      if cancel and cancel() then error(cancelled_error(f), 0) end
      if track then
        -- multipart framing counts too: report file bytes, bounded by the total
        local d = done
        if total > 0 and d > total then d = total end
        -- the file being sent: where the byte count falls among the sizes
        while d > upto and cur < #items do cur = cur + 1; upto = upto + (items[cur].src.size or 0) end
        local name = items[cur].dest:match("[^/]*$")
        track:update(d, total > 0 and total or nil, name, cur)
      end
    end
  end
  local opts = {
    method = "POST", path = "/files/bulk-upload", timeout = timeout, what = f,
    ok_status = { [400] = true }, on_progress = progress,
    idempotent = replayable,      -- uploads overwrite: sending the same bytes again is harmless
  }
  if producer then
    opts.body_producer, opts.headers = M.multipart_producer(parts, producer, cancel, f)
  else
    opts.multipart = parts
  end
  local r, resp = call_toolbox(self, opts)
  if resp.status == 400 and (type(r) ~= "table" or (r.files == nil and r.errors == nil)) then
    error(transport.http_error(400, resp.headers, resp.body, f), 0)
  end
  local dests = {}
  for i, it in ipairs(items) do dests[i] = it.dest end
  return parse_upload_result(r, dests)
end

--- Build a multipart/form-data body producer for parts where one file part
-- has its bytes from a Lua producer (the runtime streams only files and
-- strings itself).
-- @param parts list of `{ name, data | file?, filename, content_type }`;
--   the part without data/file takes its bytes from `producer`
-- @param producer function() -> chunk | nil
-- @param cancel optional function() -> boolean
-- @param what operation name
-- @return body_producer function, headers table
-- @local
function M.multipart_producer(parts, producer, cancel, what)
  local boundary = "dtlua-" .. core.util.hex(core.util.random_bytes(12))
  local i, state = 0, "head"
  local function part_head(p)
    local h = { "--", boundary, "\r\n", 'Content-Disposition: form-data; name="', p.name, '"' }
    if p.filename then h[#h + 1] = '; filename="' .. p.filename:gsub('[\r\n"]', "_") .. '"' end
    h[#h + 1] = "\r\n"
    if p.content_type then h[#h + 1] = "Content-Type: " .. p.content_type .. "\r\n" end
    h[#h + 1] = "\r\n"
    return concat(h)
  end
  local fh
  local function next_chunk()
    while true do
      if cancel and cancel() then error(cancelled_error(what), 0) end
      if state == "head" then
        i = i + 1
        local p = parts[i]
        if not p then state = "done"; return "--" .. boundary .. "--\r\n" end
        state = "body"
        return part_head(p)
      elseif state == "body" then
        local p = parts[i]
        if p.data then state = "head"; return p.data .. "\r\n" end
        if p.file then
          fh = fh or io.open(p.file, "rb")
          local c = fh and fh:read(64 * 1024)
          if c then return c end
          if fh then fh:close(); fh = nil end
          state = "head"
          return "\r\n"
        end
        local c = producer()
        if c == nil then state = "head"; return "\r\n" end
        if type(c) ~= "string" then
          error(errors.DaytonaValidationError(what .. ": the source producer returned a " .. type(c) ..
            " (string or nil expected)", { argument = "source" }), 0)
        end
        if c ~= "" then return c end
      else
        return nil
      end
    end
  end
  return next_chunk, { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
end

local UPLOAD_OPTS = check.set("timeout")
local UPLOAD_FILES_OPTS = check.set("timeout", "raise")

--- Upload one file.
-- @param source a local path (string) or `{ data = bytes }`
-- @param remote_path destination in the sandbox (parents are created, an
--   existing file is overwritten)
-- @param opts optional `{ timeout = 1800 }`
-- @return nothing
-- @raise DaytonaError (the daemon's message) if the file cannot be written
function FileSystem:upload_file(source, remote_path, opts)
  local f = "upload_file"
  remote_path = check.string(remote_path, f, "remote_path")
  local src = source_arg(source, f, "source")
  opts = check.options(opts, f, UPLOAD_OPTS)
  local timeout = check.timeout(opts.timeout, f, TRANSFER_TIMEOUT)
  local res = bulk_upload(self, { { src = src, dest = remote_path } }, f, timeout)[1]
  if res.error then error(res.error, 0) end
end

--- Upload several files in one multipart request.
--
-- Like the Python SDK, a file that fails raises; the error carries the
-- whole per-file list as `err.results`. With `raise = false` the list is
-- returned instead, failures included.
-- @param files list of `{ source = local path or { data = bytes },
--   destination = remote path }`
-- @param opts optional `{ timeout = 1800, raise = true }`
-- @return list, in order, of `{ destination, bytes }` (with `raise =
--   false`, a failed file is `{ destination, error }`)
-- @raise DaytonaError (code `UPLOAD_FAILED`, `results` = the per-file
--   list) when a file fails; DaytonaError when the request as a whole fails
function FileSystem:upload_files(files, opts)
  local f = "upload_files"
  check.table(files, f, "files")
  if #files == 0 then check.argerror(f, "files", "non-empty list expected") end
  local items = {}
  for i, it in ipairs(files) do
    local a = ("files[%d]"):format(i)
    check.options(check.table(it, f, a), f, check.set("source", "destination"), a)
    items[i] = { src = source_arg(it.source, f, a .. ".source"), dest = check.string(it.destination, f, a .. ".destination") }
  end
  opts = check.options(opts, f, UPLOAD_FILES_OPTS)
  local timeout = check.timeout(opts.timeout, f, TRANSFER_TIMEOUT)
  local raise = check.optboolean(opts.raise, f, "raise") ~= false
  local results = bulk_upload(self, items, f, timeout)
  if raise then
    local failed = {}
    for _, r in ipairs(results) do
      if r.error then
        local m = tostring(r.error.message)
        failed[#failed + 1] = m:find(r.destination, 1, true) and m or (r.destination .. ": " .. m)
      end
    end
    if #failed > 0 then
      error(errors.DaytonaError(("%s: %d of %d files failed (%s); err.results has every file's outcome")
        :format(f, #failed, #results, concat(failed, "; ")), { code = "UPLOAD_FAILED", results = results }), 0)
    end
  end
  return results
end

local STREAM_OPTS = check.set("timeout", "on_progress", "cancel")

--- Upload in constant memory with progress and cancellation.
-- @param source a local path, `{ data = bytes }`, or a producer
--   `function() -> chunk | nil` (it may wait)
-- @param remote_path destination in the sandbox
-- @param opts optional `{ timeout = 1800, on_progress = function(p, bytes_sent,
--   total_or_nil), cancel = token or function }`: `on_progress` gets an
--   object `p` with Python's names, `{ bytes_sent =, total_bytes =, total =,
--   file = }` (total nil when unknown), then the two numbers again
-- @return `{ destination, bytes }`
-- @raise CancelledError when cancelled; DaytonaError on failure
function FileSystem:upload_file_stream(source, remote_path, opts)
  local f = "upload_file_stream"
  remote_path = check.string(remote_path, f, "remote_path")
  local src = source_arg(source, f, "source", true)
  opts = check.options(opts, f, STREAM_OPTS)
  local timeout = check.timeout(opts.timeout, f, TRANSFER_TIMEOUT)
  local on_progress = check.optfunction(opts.on_progress, f, "on_progress")
  local cancel = cancel_arg(opts.cancel, f)
  if cancel and cancel() then error(cancelled_error(f), 0) end
  local res = bulk_upload(self, { { src = src, dest = remote_path } }, f, timeout, on_progress, cancel)[1]
  if res.error then error(res.error, 0) end
  return res
end

---------------------------------------------------------------------------
-- downloads
---------------------------------------------------------------------------

-- the error of a part named "error" (JSON body, §4.2)
local function part_error(body, path)
  local ok, v = pcall(wire.decode, body or "")
  local status, msg, code
  if ok and type(v) == "table" then
    status = math.tointeger(v.statusCode or v.status_code)
    msg = type(v.message) == "string" and v.message or nil
    code = v.code or v.error_code
    if code == wire.null then code = nil end
  end
  local cls = status and transport.status_class(status) or errors.DaytonaError
  if code == "FILE_NOT_FOUND" then cls = errors.DaytonaNotFoundError end
  return cls(msg or ("download of " .. path .. " failed"), { status_code = status, code = code, path = path,
    body = ok and v or body })
end

-- A pull reader over a bulk-download response: events come out one by one
-- ("part", headers) / ("data", bytes) / ("end") and nil after the closing
-- boundary. Raises when the body ends without the closing boundary (a
-- truncated response: the daemon aborts mid-part on read errors).
local Reader = {}
Reader.__index = Reader

local function open_reader(self, paths, f, timeout, cancel)
  local s = call_toolbox(self, { method = "POST", path = "/files/bulk-download", json = { paths = paths },
    timeout = timeout, idempotent = true, what = f, stream = true })
  multipart = multipart or require "daytona.runtime.multipart"
  local ctype = s.headers["content-type"] or ""
  local boundary = multipart.boundary(ctype)
  if not boundary then
    s:close()
    error(errors.DaytonaError(f .. ": the server answered without a multipart body (" .. ctype .. ")",
      { code = "EPROTO" }), 0)
  end
  local r = setmetatable({ s = s, q = {}, qh = 1, done = false, f = f, cancel = cancel }, Reader)
  r.parser = multipart.parser(boundary, function(part)
    local q = r.q
    q[#q + 1] = { "part", part }
    return function(data)
      local q2 = r.q
      if data then q2[#q2 + 1] = { "data", data } else q2[#q2 + 1] = { "end" } end
    end
  end, { max_parts = #paths + 16 })   -- one part a path (file or error)
  return r
end

--- The next event of the response, pulling more of the body as needed.
-- @return "part", headers | "data", bytes | "end" | nil at the end
-- @raise DaytonaConnectionError for a truncated response; CancelledError
function Reader:event()
  while true do
    local q = self.q
    if self.qh <= #q then
      local e = q[self.qh]
      self.qh = self.qh + 1
      return e[1], e[2]
    end
    if self.done then return nil end
    self.q, self.qh = {}, 1
    if self.cancel and self.cancel() then self:close(); error(cancelled_error(self.f), 0) end
    local chunk = self.s:read()
    if chunk == nil then
      self.done = true
      self:close()
      local complete = self.parser:finish()
      if not complete then
        error(errors.DaytonaConnectionError(self.f .. ": truncated multipart response (closing boundary not received)",
          { code = "EPARTIAL" }), 0)
      end
    else
      local fed, msg, code = self.parser:feed(chunk)
      if not fed then self:close(); error(errors.from_failure(msg, code, nil, self.f), 0) end
    end
  end
end

--- Stop reading (closes the transfer). Idempotent.
function Reader:close()
  if self.s then self.s:close() end
end

-- Make the local parent directories of a download's destination, with the
-- core's mkdir (no shell: a path is data, whatever it holds).
local function mkparents(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir == nil or dir == "" then return true end
  return rfs.mkdirs(dir, 511)
end

-- Drive a bulk download: for each requested path, write the file part to
-- memory (dest nil) or to the local file dest; collect per-path errors.
-- Returns a table path -> { result = bytes | dest, error = err }.
local function bulk_download(self, paths, dests, f, timeout, on_progress, cancel)
  local track <close> = tracker("download", #paths, on_progress)
  local r = open_reader(self, paths, f, timeout, cancel)
  local index = 0
  local results = {}
  local cur, buf, fh, errbuf
  local received = 0
  local ok, err = pcall(function()
    while true do
      local ev, a = r:event()
      if ev == nil then break end
      if ev == "part" then
        local name, path = a.name, a.filename
        cur = { name = name, path = path, total = tonumber(a.headers["content-length"]) }
        index = index + 1
        if name == "file" and path then
          local dest = dests[path]
          if dest then
            -- into a temp file beside it, renamed at the end: a failed
            -- download never leaves half a file (nor clobbers an old one)
            local made, e = mkparents(dest)
            cur.tmp = dest .. ".dtlua-part-" .. core.util.hex(core.util.random_bytes(4))
            if made then fh, e = io.open(cur.tmp, "wb") end
            if not fh then
              results[path] = { error = errors.DaytonaError(f .. ": cannot write " .. dest .. ": " .. tostring(e),
                { code = "EIO", path = path }) }
              cur.name = "skip"
            end
          else
            buf = {}
          end
        elseif name == "error" then
          errbuf = {}
        end
      elseif ev == "data" and cur then
        if cur.name == "file" then
          if fh then
            local okw, e = fh:write(a)
            if not okw then error(errors.DaytonaError(f .. ": write failed: " .. tostring(e), { code = "EIO" }), 0) end
          elseif buf then
            buf[#buf + 1] = a
          end
          received = received + #a
          -- a part's length is its file's: a total only for a single file
          if track then track:update(received, #paths == 1 and cur.total or nil, cur.path:match("[^/]*$"), index) end
        elseif cur.name == "error" and errbuf then
          errbuf[#errbuf + 1] = a
        end
      elseif ev == "end" and cur then
        local path = cur.path
        if cur.name == "file" and path then
          if fh then
            fh:close()
            fh = nil
            local okr, e = os.rename(cur.tmp, dests[path])
            if okr then
              results[path] = { result = dests[path] }
            else
              os.remove(cur.tmp)
              results[path] = { error = errors.DaytonaError(f .. ": cannot write " .. dests[path] .. ": " .. tostring(e),
                { code = "EIO", path = path }) }
            end
          elseif buf then results[path] = { result = concat(buf) } end
        elseif cur.name == "error" and path then
          results[path] = { error = part_error(concat(errbuf or {}), path) }
        end
        cur, buf, errbuf = nil, nil, nil
      end
    end
  end)
  if fh then fh:close() end
  if cur and cur.tmp and not results[cur.path] then os.remove(cur.tmp) end
  r:close()
  if not ok then error(err, 0) end
  return results
end

local DOWNLOAD_OPTS = check.set("timeout")

--- Download one file, into memory or (streamed) into a local file.
-- @param remote_path the file in the sandbox
-- @param local_path optional local destination (parents are created)
-- @param opts optional `{ timeout = 1800 }`
-- @return the bytes, or nothing when written to local_path
-- @raise DaytonaNotFoundError; DaytonaError for a directory or an unreadable file
function FileSystem:download_file(remote_path, local_path, opts)
  local f = "download_file"
  remote_path = check.string(remote_path, f, "remote_path")
  if type(local_path) == "table" and opts == nil then local_path, opts = nil, local_path end
  local_path = check.optstring(local_path, f, "local_path")
  opts = check.options(opts, f, DOWNLOAD_OPTS)
  local timeout = check.timeout(opts.timeout, f, TRANSFER_TIMEOUT)
  local res = bulk_download(self, { remote_path }, { [remote_path] = local_path }, f, timeout)[remote_path]
  if not res then
    error(errors.DaytonaError(f .. ": no data received for " .. remote_path, { code = "ENODATA" }), 0)
  end
  if res.error then
    error(res.error, 0)
  end
  if local_path then return nil end
  return res.result
end

--- Download several files in one multipart request.
-- @param files list of `{ source = remote path, destination = local path
--   (optional: into memory) }`
-- @param opts optional `{ timeout = 1800 }`
-- @return list, in order, of `{ source, destination, result, error }`:
--   `result` is the bytes (no destination) or the local path; `error` a
--   DaytonaError (DaytonaNotFoundError for a missing file). Per-file
--   failures are reported, not raised.
-- @raise DaytonaError when the request as a whole fails
function FileSystem:download_files(files, opts)
  local f = "download_files"
  check.table(files, f, "files")
  if #files == 0 then check.argerror(f, "files", "non-empty list expected") end
  local paths, seen, dests = {}, {}, {}
  local list = {}
  for i, it in ipairs(files) do
    local a = ("files[%d]"):format(i)
    check.options(check.table(it, f, a), f, check.set("source", "destination"), a)
    local src = check.string(it.source, f, a .. ".source")
    local dest = check.optstring(it.destination, f, a .. ".destination")
    if dest and dests[src] and dests[src] ~= dest then
      check.argerror(f, a .. ".source", "the same source twice with different destinations")
    end
    if not seen[src] then seen[src] = true; paths[#paths + 1] = src end
    dests[src] = dest or dests[src]
    list[i] = { source = src, destination = dest }
  end
  opts = check.options(opts, f, DOWNLOAD_OPTS)
  local timeout = check.timeout(opts.timeout, f, TRANSFER_TIMEOUT)
  local got = bulk_download(self, paths, dests, f, timeout)
  for _, item in ipairs(list) do
    local r = got[item.source]
    if not r then
      item.error = errors.DaytonaError("no data received for this file", { code = "ENODATA", path = item.source })
    elseif r.error then
      item.error = r.error
    else
      item.result = r.result
    end
  end
  return list
end

--- Download in constant memory: an iterator over the file's chunks, with
-- progress and cancellation.
--
--     for chunk in sb.fs:download_file_stream("/data/big.bin", { on_progress = print }) do out:write(chunk) end
-- @param remote_path the file in the sandbox
-- @param opts optional `{ timeout = 1800, on_progress = function(p,
--   bytes_received, total_bytes), cancel = token or function }`:
--   `on_progress` gets an object `p` with Python's names, `{ bytes_received
--   =, total_bytes =, total =, file = }`, then the two numbers again
-- @return iterator of byte chunks (also `:close()` to stop early)
-- @raise DaytonaNotFoundError (when the iteration reaches the error part);
--   CancelledError; DaytonaConnectionError for a truncated response
function FileSystem:download_file_stream(remote_path, opts)
  local f = "download_file_stream"
  remote_path = check.string(remote_path, f, "remote_path")
  opts = check.options(opts, f, STREAM_OPTS)
  local timeout = check.timeout(opts.timeout, f, TRANSFER_TIMEOUT)
  local on_progress = check.optfunction(opts.on_progress, f, "on_progress")
  local cancel = cancel_arg(opts.cancel, f)
  if cancel and cancel() then error(cancelled_error(f), 0) end
  local track = tracker("download", 1, on_progress)
  local name = remote_path:match("[^/]*$")
  local ok, r = pcall(open_reader, self, { remote_path }, f, timeout, cancel)
  if not ok then
    if track then track:finish(false) end
    error(r, 0)
  end
  local cur, errbuf, total, received, got_file = nil, nil, nil, 0, false
  local it = {}
  local function stop(ok)
    if track then track:finish(ok) end
    r:close()
  end
  function it.close() stop(received > 0 and total ~= nil and received >= total) end
  local function step()
    while true do
      local ev, a = r:event()
      if ev == nil then
        if track then track:finish(got_file) end
        if not got_file then
          error(errors.DaytonaError(f .. ": no data received for " .. remote_path, { code = "ENODATA" }), 0)
        end
        return nil
      end
      if ev == "part" then
        cur = a.name
        total = tonumber(a.headers["content-length"])
        if cur == "file" then
          got_file = true
          if track then track:update(0, total, name, 1) end
        elseif cur == "error" then errbuf = {} end
      elseif ev == "data" then
        if cur == "file" then
          received = received + #a
          if track then track:update(received, total, name, 1) end
          if a ~= "" then return a end
        elseif cur == "error" then
          errbuf[#errbuf + 1] = a
        end
      elseif ev == "end" then
        if cur == "error" then
          stop(false)
          error(part_error(concat(errbuf), remote_path), 0)
        end
        cur = nil
      end
    end
  end
  -- a failed step (truncation, cancellation) ends the bar as failed
  local function next_chunk()
    local okc, chunk = pcall(step)
    if not okc then stop(false); error(chunk, 0) end
    return chunk
  end
  return setmetatable(it, {
    __call = function() return next_chunk() end,
    __close = function() it.close() end,
    __index = { next = next_chunk },
  })
end


-- a call with '.' instead of ':' says so
check.methods(FileSystem, "fs")

return M
