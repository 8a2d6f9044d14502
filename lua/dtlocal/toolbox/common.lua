--- dtlocal.toolbox.common: what every toolbox handler group shares.
--
-- Request validation (JSON bodies, required fields, paths), FileInfo, the
-- shell the daemon runs commands with, SDK version gating (doc/protocol.md §5.3)
-- and small file-system helpers over `daytona.core`'s util functions.
--
-- Validation helpers raise `http.raise(400, ...)` with a message naming the
-- offending field, so handlers read straight-line and every bad input ends in
-- a clear 400 rather than a crash.
local core = require "daytona.core"
local http = require "dtlocal.http"

local util = core.util
local json = http.json
local raise = http.raise
local type, tostring, tonumber, pairs, ipairs, math, string, table, os, io =
  type, tostring, tonumber, pairs, ipairs, math, string, table, os, io

local M = {}

M.json = json
M.raise = raise

--- The absolute path of `name` in the toolbox's python/ directory (beside
-- this file), nil when it is not there (an installation without it). Absolute:
-- what uses it runs in a sandbox's work directory, not ours; in a sandbox it
-- is the dtlua installation, bind-mounted at the same path (doc/dtlocal.md).
function M.python_path(name)
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then
    local cwd = util.readlink("/proc/self/cwd")
    if not cwd then return nil end
    dir = cwd .. "/" .. dir:gsub("^%./", "")
  end
  local path = dir .. "/python/" .. name
  return util.stat(path) and path or nil
end

--- A random UUID (version 4), for command and context ids.
function M.uuid()
  local b = { util.random_bytes(16):byte(1, 16) }
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  local h = util.hex(string.char(table.unpack(b)))
  return ("%s-%s-%s-%s-%s"):format(h:sub(1, 8), h:sub(9, 12), h:sub(13, 16), h:sub(17, 20), h:sub(21, 32))
end

---------------------------------------------------------------------------
-- Request bodies and fields
---------------------------------------------------------------------------

-- A body is read with ctx:json_object(true) (dtlocal.http), whose 400s
-- say "invalid request body: ..." with the code INVALID_REQUEST_BODY, as
-- the field errors below do.

local function field_error(name, what)
  raise(400, ("invalid request body: field '%s' %s"):format(name, what), "INVALID_REQUEST_BODY")
end

--- A string field of a decoded body. Absent (or null) gives nil unless
-- `required`; empty counts as absent for required fields.
function M.str(obj, name, required)
  local v = obj[name]
  if v == nil or v == json.null then
    if required then field_error(name, "is required") end
    return nil
  end
  if type(v) ~= "string" then field_error(name, "must be a string") end
  if required and v == "" then field_error(name, "must not be empty") end
  return v
end

--- A boolean field (nil when absent).
function M.bool(obj, name)
  local v = obj[name]
  if v == nil or v == json.null then return nil end
  if type(v) ~= "boolean" then field_error(name, "must be a boolean") end
  return v
end

--- An integer field within [lo, hi] (nil when absent).
function M.int(obj, name, lo, hi)
  local v = obj[name]
  if v == nil or v == json.null then return nil end
  if type(v) ~= "number" or v ~= math.floor(v) then field_error(name, "must be an integer") end
  v = math.tointeger(v)
  if not v or (lo and v < lo) or (hi and v > hi) then
    field_error(name, ("must be an integer in %s..%s"):format(lo or "", hi or ""))
  end
  return v
end

--- An array of strings (nil when absent).
function M.str_list(obj, name, required)
  local v = obj[name]
  if v == nil or v == json.null then
    if required then field_error(name, "is required") end
    return nil
  end
  if type(v) ~= "table" then field_error(name, "must be an array of strings") end
  local n = 0
  for k in pairs(v) do
    if math.type(k) ~= "integer" then field_error(name, "must be an array of strings") end
    n = n + 1
  end
  if n ~= #v then field_error(name, "must be an array of strings") end
  for i = 1, n do
    if type(v[i]) ~= "string" then field_error(name, ("item %d must be a string"):format(i - 1)) end
    -- every list becomes arguments or paths: C strings, where a NUL cannot go
    if v[i]:find("\0", 1, true) then field_error(name, ("item %d must not contain a NUL byte"):format(i - 1)) end
  end
  return v
end

local ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"

--- An object of environment variables name -> string value (nil when absent).
function M.env_map(obj, name)
  local v = obj[name]
  if v == nil or v == json.null then return nil end
  if type(v) ~= "table" or #v > 0 then field_error(name, "must be an object of strings") end
  for k, val in pairs(v) do
    if type(k) ~= "string" or not k:match(ENV_NAME) then
      field_error(name, ("has an invalid variable name %q (must match [A-Za-z_][A-Za-z0-9_]*)"):format(tostring(k)))
    end
    if type(val) ~= "string" then
      field_error(name, ("value of %s must be a string"):format(k))
    end
    -- the environment is C strings: a NUL cannot be passed on (the spawn
    -- fails, which is the request's fault, not the daemon's)
    if val:find("\0", 1, true) then
      field_error(name, ("value of %s must not contain a NUL byte"):format(k))
    end
  end
  return v
end

--- A required query parameter (non-empty string); 400 naming it otherwise.
function M.query_required(q, name)
  local v = q[name]
  if v == nil or v == "" then
    raise(400, ("query parameter '%s' is required"):format(name), "BAD_REQUEST")
  end
  return v
end

---------------------------------------------------------------------------
-- Paths
---------------------------------------------------------------------------

--- Clean a path lexically (like Go's filepath.Clean): no "." or ".." parts,
-- no doubled or trailing slashes.
function M.clean(path)
  local abs = path:sub(1, 1) == "/"
  local parts = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      if #parts > 0 and parts[#parts] ~= ".." then parts[#parts] = nil
      elseif not abs then parts[#parts + 1] = ".." end
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  local s = table.concat(parts, "/")
  if abs then return "/" .. s end
  return s == "" and "." or s
end

-- Linux's limits: NAME_MAX bytes a file name, PATH_MAX (with its NUL) a path.
local NAME_MAX, PATH_MAX = 255, 4096

--- Resolve a request path against the daemon's working directory: relative
-- paths are relative to it (doc/protocol.md §4.0). `what` names the field in the
-- 400 for an empty path, one holding a NUL byte, or one the kernel would
-- refuse as too long (checked here, before anything is made, so that an
-- upload does not create parents of a path it cannot finish, and a long
-- name is a 400 rather than whatever the failing call maps to).
function M.resolve(app, path, what)
  what = what or "path"
  if type(path) ~= "string" or path == "" then
    raise(400, ("%s: a non-empty path is required"):format(what), "BAD_REQUEST")
  end
  if path:find("\0", 1, true) then
    raise(400, ("%s: the path must not contain a NUL byte"):format(what), "BAD_REQUEST")
  end
  if path == "~" or path:sub(1, 2) == "~/" then path = app.home .. path:sub(2) end
  if path:sub(1, 1) ~= "/" then path = app.workdir .. "/" .. path end
  path = M.clean(path)
  if #path >= PATH_MAX then
    raise(400, ("%s: the path is %d bytes long; at most %d are allowed"):format(what, #path, PATH_MAX - 1),
          "INVALID_FILE_PATH")
  end
  for seg in path:gmatch("[^/]+") do
    if #seg > NAME_MAX then
      raise(400, ("%s: a file name of %d bytes; at most %d are allowed: %s..."):format(
        what, #seg, NAME_MAX, seg:sub(1, 32)), "INVALID_FILE_PATH")
    end
  end
  return path
end

function M.basename(path)
  if path == "/" then return "/" end
  return path:match("([^/]*)/*$")
end

function M.dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

function M.join(dir, name)
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

---------------------------------------------------------------------------
-- FileInfo (doc/protocol.md §4.2)
---------------------------------------------------------------------------

local function frac(nsec)
  if not nsec or nsec == 0 then return "" end
  return ("." .. ("%09d"):format(nsec)):gsub("0+$", "")
end

--- Go's time.String() layout in UTC: "2026-06-01 10:00:00.123456789 +0000 UTC".
function M.go_time(sec, nsec)
  return os.date("!%Y-%m-%d %H:%M:%S", sec) .. frac(nsec) .. " +0000 UTC"
end

--- RFC 3339 with nanoseconds (trailing zeros dropped), UTC.
function M.rfc3339(sec, nsec)
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. frac(nsec) .. "Z"
end

-- Go's FileMode.String(): type letters, then rwxrwxrwx.
local type_letter = { directory = "d", link = "L", fifo = "p", socket = "S",
                      block = "D", char = "Dc" }
function M.mode_string(st)
  local s = type_letter[st.type] or ""
  local m = st.mode
  if m & 0x800 ~= 0 then s = s .. "u" end   -- setuid (04000)
  if m & 0x400 ~= 0 then s = s .. "g" end   -- setgid (02000)
  if m & 0x200 ~= 0 then s = s .. "t" end   -- sticky (01000)
  if s == "" then s = "-" end
  local rwx = "rwxrwxrwx"
  for i = 0, 8 do
    local bit = 1 << (8 - i)
    s = s .. ((m & bit ~= 0) and rwx:sub(i + 1, i + 1) or "-")
  end
  return s
end

--- FileInfo for a stat table and a name.
function M.file_info(name, st)
  return {
    name = name,
    size = st.size,
    mode = M.mode_string(st),
    modTime = M.go_time(st.mtime, st.mtime_nsec),
    modifiedAt = M.rfc3339(st.mtime, st.mtime_nsec),
    isDir = st.type == "directory",
    owner = tostring(st.uid),
    group = tostring(st.gid),
    permissions = ("%04o"):format(st.mode & 511),
  }
end

-- What a file that is not a regular file or a directory is, for messages.
local special_kind = {
  fifo = "a named pipe (FIFO)", socket = "a socket", char = "a character device",
  block = "a block device", other = "not a regular file",
}

--- nil for a regular file (or a directory: callers say what they do with
-- one), else what the stat table `st` is, e.g. "a named pipe (FIFO)".
function M.special(st)
  return special_kind[st.type]
end

--- Open a regular file for io (mode "rb", "wb", ...): returns the file, or
-- nil, message, code. A FIFO, socket or device is refused (code
-- "ENOTREG") instead of opened: opening a FIFO blocks until a writer comes,
-- and a device may never end, either of which would hold the daemon's one
-- loop and with it every request to the sandbox. The open is
-- core.util.open_file's (O_NONBLOCK, then fstat of what was opened), so
-- there is no window between a check and the open.
function M.open_regular(path, mode)
  -- core.util.open_file opens without blocking and checks the type of what
  -- it opened: no FIFO swapped in after a check can stop the daemon
  local f, st, code = util.open_file(path, mode)
  if f then return f, st end
  if code == "ENOTREG" then
    if st == "directory" then return nil, path .. ": is a directory", "EISDIR" end
    return nil, ("%s: is %s, not a regular file"):format(path, special_kind[st] or special_kind.other), "ENOTREG"
  end
  if code == "ENXIO" then   -- a FIFO (or device) with nobody at the other end
    return nil, ("%s: is %s, not a regular file"):format(path, special_kind.other), "ENOTREG"
  end
  return nil, path .. ": " .. st, code
end

--- Raise the HTTP error that fits a failed file-system call (errno code
-- name from the core): 404 missing, 403 denied, 400 otherwise.
function M.fs_fail(what, msg, code)
  if code == "ENOTREG" or code == "ENAMETOOLONG" then
    raise(400, msg:find(what, 1, true) and msg or ("%s: %s"):format(what, msg), "INVALID_FILE_PATH")
  elseif code == "ENOENT" or code == "ENOTDIR" then
    raise(404, ("%s: %s"):format(what, msg), "FILE_NOT_FOUND")
  elseif code == "EACCES" or code == "EPERM" or code == "EROFS" then
    raise(403, ("%s: %s"):format(what, msg), "FILE_ACCESS_DENIED")
  elseif code == "EEXIST" or code == "ENOTEMPTY" then
    raise(409, ("%s: %s"):format(what, msg), "CONFLICT")
  end
  raise(400, ("%s: %s"):format(what, msg), "BAD_REQUEST")
end

--- stat (following symlinks) or raise 404/403.
function M.stat_or_fail(path, follow)
  local st, msg, code = util.stat(path, follow ~= false)
  if not st then M.fs_fail(path, msg, code) end
  return st
end


--- os.rename's errno number as a code name (Linux numbering).
local errno_names = { [1] = "EPERM", [2] = "ENOENT", [6] = "ENXIO", [13] = "EACCES", [17] = "EEXIST",
                      [18] = "EXDEV", [20] = "ENOTDIR", [21] = "EISDIR", [22] = "EINVAL",
                      [26] = "ETXTBSY", [28] = "ENOSPC", [30] = "EROFS", [36] = "ENAMETOOLONG",
                      [39] = "ENOTEMPTY", [40] = "ELOOP" }
function M.errno_name(n)
  return errno_names[n] or "EIO"
end

--- A unique temp path beside `path` (same directory, so rename is atomic).
-- The target's name is kept while it fits, as a hint in listings; a long
-- one is cut, so that a target of the longest allowed name still has a
-- temp file (25 bytes are ours).
function M.temp_beside(path)
  return ("%s/.%s.dtlua-%s.part"):format(M.dirname(path), M.basename(path):sub(1, 200),
                                         util.hex(util.random_bytes(6)))
end

---------------------------------------------------------------------------
-- Shell and environment
---------------------------------------------------------------------------

--- The shell for commands and sessions (doc/protocol.md §4.0): the first of zsh /
-- bash listed in /etc/shells and present, else $SHELL, else /bin/sh.
function M.find_shell()
  local listed = {}
  local f = io.open("/etc/shells", "r")
  if f then
    for line in f:lines() do listed[line:match("^%s*(.-)%s*$")] = true end
    f:close()
  end
  for _, sh in ipairs { "/usr/bin/zsh", "/bin/zsh", "/usr/bin/bash", "/bin/bash" } do
    if listed[sh] and util.stat(sh, true) then return sh end
  end
  local env = os.getenv("SHELL")
  if env and env ~= "" and util.stat(env, true) then return env end
  return "/bin/sh"
end

--- The environment for a child: the daemon's own plus `extra` (may be nil),
-- as a name -> value table.
function M.child_env(app, extra)
  local env = util.environ()
  -- a warm sandbox gets its env after it started (see sandbox_env in init.lua)
  if app.sandbox_env then for k, v in pairs(app.sandbox_env) do env[k] = v end end
  env.HOME = app.home
  -- while the desktop runs, programs find it as on Daytona's computer-use
  -- sandboxes (dtlocal.toolbox.desktop)
  if app.desktop_env then
    for k, v in pairs(app.desktop_env) do if not env[k] then env[k] = v end end
  end
  if extra then for k, v in pairs(extra) do env[k] = v end end
  return env
end

---------------------------------------------------------------------------
-- SDK version gating (doc/protocol.md §5.3)
---------------------------------------------------------------------------

-- Parse "1.2.3", "1.2.3-rc.1" or "1.2.3foo" (normalised to 1.2.3-foo) into
-- { major, minor, patch, pre } (pre = nil for a release); nil if unparseable.
local function parse_semver(v)
  v = v:gsub("^v", "")
  local a, b, c, rest = v:match("^(%d+)%.(%d+)%.(%d+)(.*)$")
  if not a then return nil end
  local pre = rest:match("^%-(.+)$") or (rest ~= "" and rest:gsub("^%+.*", "")) or nil
  if pre == "" then pre = nil end
  return { tonumber(a), tonumber(b), tonumber(c), pre = pre }
end

-- a >= b for thresholds of the form X.Y.Z-0 (any pre-release of X.Y.Z counts)
local function at_least(v, major, minor, patch)
  if v[1] ~= major then return v[1] > major end
  if v[2] ~= minor then return v[2] > minor end
  return v[3] >= patch
end

--- The output mode for a request's SDK version:
--   "combined" strip markers, no stdout/stderr (legacy)
--   "raw"      markers kept, no stdout/stderr fields, logs as text/plain
--   "split"    markers kept plus stdout/stderr, logs as JSON (>= 0.167.0, dev)
-- `version` may be nil (no header and no subprotocol token); `split_header`
-- is the X-Daytona-Split-Output header.
function M.output_mode(version, split_header)
  if version == nil or version == "" then
    if split_header == "true" then return "raw" end
    return "combined"
  end
  if version:find("dev", 1, true) then return "split" end
  local v = parse_semver(version)
  if not v then return "raw" end
  if not at_least(v, 0, 27, 0) then return "combined" end
  if not at_least(v, 0, 167, 0) then return "raw" end
  return "split"
end

--- True when sessions should start in the home directory (SDK < 0.103.0).
function M.legacy_session_home(version)
  if version == nil or version == "" or version:find("dev", 1, true) then return false end
  local v = parse_semver(version)
  return v ~= nil and not at_least(v, 0, 103, 0)
end

--- The SDK version of a request: the X-Daytona-SDK-Version header, else a
-- `X-Daytona-SDK-Version~<ver>` WebSocket subprotocol token.
function M.sdk_version(headers, subprotocols)
  local v = headers["x-daytona-sdk-version"]
  if v and v ~= "" then return v end
  for _, p in ipairs(subprotocols or {}) do
    local ver = p:match("^X%-Daytona%-SDK%-Version~(.*)$")
    if ver then return ver end
  end
  return nil
end

---------------------------------------------------------------------------
-- Marker framing (doc/protocol.md §5.1)
---------------------------------------------------------------------------

M.STDOUT = "\1\1\1"
M.STDERR = "\2\2\2"

--- Split a framed log into its stdout and stderr text.
function M.demux(log)
  local out, err = {}, {}
  local cur = nil
  local i, n = 1, #log
  while i <= n do
    local a = log:find("\1\1\1", i, true)
    local b = log:find("\2\2\2", i, true)
    local j, which
    if a and (not b or a < b) then j, which = a, out
    elseif b then j, which = b, err end
    if not j then
      if cur then cur[#cur + 1] = log:sub(i) end
      break
    end
    if cur and j > i then cur[#cur + 1] = log:sub(i, j - 1) end
    cur = which
    i = j + 3
  end
  return table.concat(out), table.concat(err)
end

--- The log with its markers removed (legacy combined output).
function M.strip_markers(log)
  return (log:gsub("\1\1\1", ""):gsub("\2\2\2", ""))
end

return M
