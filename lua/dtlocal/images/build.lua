--- dtlocal.images.build: Dockerfiles built on the image store, step by step
-- (doc/dtlocal.md, "Builds").
--
--   local build = require "dtlocal.images.build"
--   local image, msg, code = build.build(store, {
--     dockerfile = text,              -- buildInfo.dockerfileContent
--     contexts = { path... },         -- the context.tar of each contextHashes entry, in order
--     context_hashes = { hash... },   -- their names (part of the cache key)
--     on_log = function(line) end,    -- every step's command and output
--     ref = "name:tag",               -- optional: a ref for the image made
--     launcher = path,                -- dtlua-sandbox (runs RUN steps)
--     uids = pool,                    -- dtlocal.control.uids as root: the build's host range
--                                     -- (default: a pool on the machine's registry)
--     net = network,                  -- dtlocal.control.network (root): RUN steps get a
--                                     -- network of their own as sandboxes do (else the host's)
--     cgroups = cg,                   -- dtlocal.control.cgroups: each RUN in a group of
--                                     -- its own (M.CPU cores, M.MEMORY GiB, the pids limit)
--     timeout = seconds,              -- for the whole build (default 3600)
--   })
--   -> the store's image | nil, message, code
--
-- FROM pulls the base with `store:pull`. Each RUN runs in a sandbox made by
-- the launcher (`--image-layer` for every layer so far, a fresh upper dir,
-- root, the image's environment and working dir, `/bin/sh -c` or the exec
-- form); the step's upper dir becomes the next layer (`store:add_layer`,
-- owners shifted back from the run's host range). Before the command, the
-- same root is started once with `true`, so that what the launcher itself
-- puts in the upper dir (the daytona user, /etc/hosts, /etc/hostname,
-- mount points) is known and left out of the layer unless the step changed
-- it. COPY and ADD (local sources) are done here, into a fresh upper dir:
-- the context tars are checked entry by entry (`store.check_tar`: no
-- absolute name, no `..`, nothing through a link) and unpacked into one
-- directory; a source's path must not go through a symbolic link, links
-- inside it are copied as links (never followed on the host), and the
-- destination is resolved inside the image's layers (its links followed
-- within the image, never on the host), so the copy lands where the image
-- would have it. WORKDIR makes its directory the same way when the image
-- lacks it. ENV, ARG, USER, ENTRYPOINT, CMD, SHELL, LABEL, EXPOSE, VOLUME,
-- STOPSIGNAL are configuration. Refused with the step named: multi-stage
-- builds (a second FROM, COPY --from), heredocs, ADD of URLs or archives,
-- RUN as a user other than root or daytona, ONBUILD/HEALTHCHECK.
--
-- Cache: every step's image is recorded under `dtlocal.local/build-cache:<key>`,
-- key = sha256 of the previous key (first: the base image id) and the step
-- (its text after ARG expansion, the context hashes for COPY/ADD, the
-- environment for RUN): the same definition is built once, and a changed
-- step rebuilds from there on. A failing step leaves nothing of itself in
-- the store (its temp dirs go; the steps before it stay cached) and fails
-- with the step, its exit code and the tail of its output.
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local fs = require "dtlocal.fs"
local http = require "dtlocal.http"
local Store = require "dtlocal.images.store"

local type, pairs, ipairs, tostring, tonumber, error, pcall, setmetatable =
  type, pairs, ipairs, tostring, tonumber, error, pcall, setmetatable
local string, table, os, math, io = string, table, os, math, io
local format, concat = string.format, table.concat
local util = core.util
local json = http.json

local M = {}

M.TIMEOUT = 3600
M.TAIL = 20                  -- output lines a failure quotes
M.MAX_LINE = 16384           -- bytes of one output line (a longer one is cut)
M.LOG_LIMIT = 2 * 1024 * 1024  -- bytes of a step's output that are logged
M.CACHE_REF = "dtlocal.local/build-cache:"
M.MAX_STEPS = 500
M.MAX_LINKS = 40             -- symbolic links followed resolving one path in an image
M.CPU, M.MEMORY = 2, 4       -- a RUN step's limits (cores, GiB), as a medium sandbox

local function fail(msg, code) error({ build = msg, code = code or "EBUILD" }, 0) end

---------------------------------------------------------------------------
-- The Dockerfile
---------------------------------------------------------------------------

--- The instructions of a Dockerfile: { { op = "RUN", args = "...", line = n }, ... }
-- (continuations joined, comments and blank lines left out). Raises the
-- build error for what cannot be parsed.
function M.parse(text)
  local steps = {}
  local cur, start
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    if not cur and (line:match("^%s*#") or line:match("^%s*$")) then goto continue end
    if cur and line:match("^%s*#") then goto continue end   -- comments inside continuations
    if not cur then cur, start = "", n end
    if line:match("\\%s*$") then
      cur = cur .. line:gsub("\\%s*$", "") .. " "
    else
      cur = cur .. line
      local op, args = cur:match("^%s*(%a+)%s*(.-)%s*$")
      if not op then fail(format("line %d: not an instruction: %s", start, cur)) end
      if args:find("<<", 1, true) and (op:upper() == "RUN" or op:upper() == "COPY" or op:upper() == "ADD")
        and args:match("<<%-?[\"']?%w+") then
        fail(format("line %d: heredocs are not supported by dtlocal's builder: %s", start, cur))
      end
      steps[#steps + 1] = { op = op:upper(), args = args, line = start }
      if #steps > M.MAX_STEPS then fail(format("more than %d instructions", M.MAX_STEPS)) end
      cur = nil
    end
    ::continue::
  end
  if cur then fail(format("line %d: the last instruction ends with a continuation", start)) end
  return steps
end

--- $NAME, ${NAME}, ${NAME:-default}, ${NAME:+alt} from vars (a table);
-- `\$` stays a literal $.
function M.expand(s, vars)
  local out = s:gsub("\\%$", "\1"):gsub("%${([%w_]+)(:?[-+]?)([^}]*)}", function(name, op, word)
    local v = vars[name]
    if op == ":-" or op == "-" then
      if v == nil or (op == ":-" and v == "") then return word end
      return v
    elseif op == ":+" or op == "+" then
      if v == nil or (op == ":+" and v == "") then return "" end
      return word
    elseif op ~= "" then
      return nil
    end
    return v or ""
  end):gsub("%$([%a_][%w_]*)", function(name) return vars[name] or "" end)
  return (out:gsub("\1", "$"))
end

-- A JSON array of strings (exec form), or nil.
local function exec_form(args)
  if not args:match("^%[") then return nil end
  local v = json.decode(args)
  if type(v) ~= "table" then return nil end
  for i = 1, #v do if type(v[i]) ~= "string" then return nil end end
  return v
end

-- Words of a COPY/ADD/ENV line, as the shell-less Dockerfile parser splits
-- them: whitespace-separated, quotes grouping, backslash escaping.
local function words(s)
  local out, cur, i, q = {}, nil, 1, nil
  while i <= #s do
    local c = s:sub(i, i)
    if q then
      if c == q then q = nil
      elseif c == "\\" and q == '"' and i < #s then i = i + 1; cur = cur .. s:sub(i, i)
      else cur = cur .. c end
    elseif c:match("%s") then
      if cur then out[#out + 1] = cur; cur = nil end
    elseif c == '"' or c == "'" then
      q = c; cur = cur or ""
    elseif c == "\\" and i < #s then
      i = i + 1; cur = (cur or "") .. s:sub(i, i)
    else
      cur = (cur or "") .. c
    end
    i = i + 1
  end
  if q then fail("an unterminated quote in: " .. s) end
  if cur then out[#out + 1] = cur end
  return out
end

-- ENV/ARG/LABEL pairs: `K=V K2="v 2"` or the old `K value with spaces`.
local function pairs_of(args, what, allow_bare)
  local ws = words(args)
  local out = {}
  if #ws >= 1 and not ws[1]:find("=", 1, true) and not allow_bare then
    local k, v = args:match("^(%S+)%s+(.*)$")
    if not k then fail(what .. " needs NAME=value: " .. args) end
    out[1] = { k, (concat(words(v), " ")) }
    return out
  end
  for _, w in ipairs(ws) do
    local k, v = w:match("^([^=]+)=(.*)$")
    if k then out[#out + 1] = { k, v }
    elseif allow_bare then out[#out + 1] = { w, nil }
    else fail(what .. " needs NAME=value: " .. w) end
  end
  return out
end

---------------------------------------------------------------------------
-- Paths inside an image (its layers, top last)
---------------------------------------------------------------------------

-- The topmost entry of rel in the layers: stat, layer dir; or nil (absent,
-- a whiteout, or hidden by an opaque directory above).
local function lookup(layers, rel)
  if rel == "" then return { type = "directory", mode = 493, uid = 0, gid = 0 }, nil end
  for i = #layers, 1, -1 do
    local st = util.stat(layers[i] .. "/" .. rel, false)
    if st then
      if st.type == "char" and st.size == 0 then return nil end   -- a whiteout
      return st, layers[i]
    end
    -- an opaque directory on the way hides the layers below, and so does a
    -- whiteout (or any non-directory) in the place of a parent
    local parent = rel
    local hidden = false
    while true do
      parent = parent:match("^(.*)/[^/]*$")
      if not parent then break end
      local pst = util.stat(layers[i] .. "/" .. parent, false)
      if pst and (pst.type ~= "directory"
                  or util.getxattr(layers[i] .. "/" .. parent, Store.OPAQUE_XATTR) == "y") then
        hidden = true
        break
      end
    end
    if hidden then return nil end
  end
  return nil
end

-- rel resolved inside the image: every symbolic link on the way followed
-- within the image's root (absolute targets from its root, ".." never
-- above it). Returns the clean relative path with no link in it (the last
-- part may not exist), and the stat of what is there (or nil).
local function resolve(layers, path, follow_last)
  local todo = {}
  for seg in path:gmatch("[^/]+") do todo[#todo + 1] = seg end
  local done = {}
  local links = 0
  local i = 1
  while i <= #todo do
    local seg = todo[i]
    if seg == "." then
      i = i + 1
    elseif seg == ".." then
      done[#done] = nil
      i = i + 1
    else
      local rel = concat(done, "/") .. (#done > 0 and "/" or "") .. seg
      local st, layer = lookup(layers, rel)
      if st and st.type == "link" and (i < #todo or follow_last) then
        links = links + 1
        if links > M.MAX_LINKS then fail("too many symbolic links resolving " .. path .. " in the image") end
        local target = util.readlink(layer .. "/" .. rel) or ""
        local rest = {}
        for seg2 in target:gmatch("[^/]+") do rest[#rest + 1] = seg2 end
        for j = i + 1, #todo do rest[#rest + 1] = todo[j] end
        if target:sub(1, 1) == "/" then done = {} end
        todo, i = rest, 1
      else
        if st and st.type ~= "directory" and i < #todo then
          fail(format("/%s is not a directory in the image (resolving %s)", rel, path))
        end
        done[#done + 1] = seg
        i = i + 1
      end
    end
  end
  local rel = concat(done, "/")
  return rel, (lookup(layers, rel))
end

-- Make the directories of rel (clean, resolved) in upper, each with the
-- image's mode and owner when the image has it (the overlay shows the upper
-- dir's own), else 0755 root's.
local function make_dirs(layers, upper, rel)
  local path = ""
  for seg in rel:gmatch("[^/]+") do
    path = path == "" and seg or (path .. "/" .. seg)
    local dst = upper .. "/" .. path
    local have = util.stat(dst, false)
    if not have then
      local st = lookup(layers, path)
      local ok, msg = util.mkdir(dst, st and st.type == "directory" and st.mode or 493)
      if not ok then fail("cannot make /" .. path .. " in the new layer: " .. tostring(msg), "EIO") end
      util.chmod(dst, st and st.type == "directory" and st.mode or 493)
      util.chown(dst, st and st.uid or 0, st and st.gid or 0, true)
    elseif have.type ~= "directory" then
      fail("/" .. path .. " is not a directory in the new layer", "EIO")
    end
  end
end

---------------------------------------------------------------------------
-- Running commands
---------------------------------------------------------------------------

local function run_checked(argv, what, timeout)
  local r, msg = process.run(argv, { timeout = timeout or 600, stderr = "stdout", max_output = 65536 })
  if not r then fail(what .. ": " .. tostring(msg), "EIO") end
  if r.exit_code ~= 0 then
    fail(format("%s: %s exited with %s: %s", what, argv[1], tostring(r.exit_code or r.signal),
      (r.stdout or ""):gsub("%s+$", ""):sub(-600)), "EIO")
  end
  return r
end

-- Entries of a tree: rel -> "type size mode uid gid mtime.nsec" (not followed).
local function snapshot_tree(dir)
  local out = {}
  local function walk(rel)
    local p = rel == "" and dir or (dir .. "/" .. rel)
    for _, name in ipairs(util.readdir(p) or {}) do
      local r = rel == "" and name or (rel .. "/" .. name)
      local st = util.stat(dir .. "/" .. r, false)
      if st then
        out[r] = format("%s %d %o %d %d %d.%d", st.type, st.type == "directory" and 0 or st.size,
          st.mode, st.uid, st.gid, st.mtime, st.mtime_nsec)
        if st.type == "directory" then walk(r) end
      end
    end
  end
  walk("")
  return out
end

-- Remove from dir what is as it was in `before` (leaves first: a directory
-- goes only when nothing it holds stays).
local function prune_unchanged(dir, before)
  local function walk(rel)
    local p = rel == "" and dir or (dir .. "/" .. rel)
    local left = 0
    for _, name in ipairs(util.readdir(p) or {}) do
      local r = rel == "" and name or (rel .. "/" .. name)
      local st = util.stat(dir .. "/" .. r, false)
      local kept = true
      if st and st.type == "directory" then
        local inner = walk(r)
        local sig = format("%s %d %o %d %d", st.type, 0, st.mode, st.uid, st.gid)
        if inner == 0 and before[r] and before[r]:sub(1, #sig) == sig then
          kept = not os.remove(dir .. "/" .. r)
        end
      elseif st then
        local sig = format("%s %d %o %d %d %d.%d", st.type, st.size, st.mode, st.uid, st.gid, st.mtime, st.mtime_nsec)
        if before[r] == sig then kept = not os.remove(dir .. "/" .. r) end
      end
      if kept then left = left + 1 end
    end
    return left
  end
  walk("")
end

---------------------------------------------------------------------------
-- The builder
---------------------------------------------------------------------------

local Build = {}
Build.__index = Build

function Build:log(fmt, ...)
  local line = select("#", ...) > 0 and format(fmt, ...) or fmt
  if self.on_log then self.on_log(line) end
end

function Build:remaining()
  local left = self.deadline - core.now()
  if left <= 0 then fail(format("the build took longer than %d s", self.timeout), "ETIMEDOUT") end
  return left
end

-- A temp dir in the store's tmp (removed at the end of the build).
function Build:tmpdir(what)
  local d, msg = self.store:_mktemp(what)
  if not d then fail(msg, "EIO") end
  self.temps[#self.temps + 1] = d
  return d
end

function Build:image_env()
  local env = {}
  for _, kv in ipairs(self.config.env) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if k then env[k] = v end
  end
  return env
end

function Build:set_env(k, v)
  local out = {}
  for _, kv in ipairs(self.config.env) do
    if kv:match("^([^=]+)=") ~= k then out[#out + 1] = kv end
  end
  out[#out + 1] = k .. "=" .. v
  self.config.env = out
end

-- what ${} sees: ARGs, then the image's ENV over them
function Build:vars()
  local v = {}
  for k, x in pairs(self.args) do v[k] = x end
  for k, x in pairs(self:image_env()) do v[k] = x end
  return v
end

-- The cache: the image of a key, or nil.
function Build:cached(key)
  return self.store:image(M.CACHE_REF .. key)
end

function Build:commit(key, layers)
  local img, msg, code = self.store:put_image{ ref = M.CACHE_REF .. key, layers = layers, config = self.config }
  if not img then fail("cannot record the step's image: " .. tostring(msg), code) end
  return img
end

-- The context: every context.tar checked and unpacked into one directory.
function Build:context_dir()
  if self.ctxdir then return self.ctxdir end
  local dir = self:tmpdir("context.")
  for i, tar in ipairs(self.contexts) do
    local chk, msg = Store.check_tar(tar)
    if not chk then fail(format("build context %s refused: %s", self.context_hashes[i] or i, msg), "EINVAL") end
    run_checked({ "tar", "-x", "-f", tar, "-C", dir, "--no-same-owner", "--no-same-permissions",
                  "--warning=no-unknown-keyword" }, "unpack the build context " .. (self.context_hashes[i] or i))
  end
  self.ctxdir = dir
  return dir
end

-- A COPY source inside the context: clean, no link on its way (the last
-- part may be one: it is copied as a link).
function Build:context_source(src)
  local dir = self:context_dir()
  if src:find("[*?%[]") then fail("COPY with wildcards is not supported by dtlocal's builder: " .. src, "EINVAL") end
  local parts = {}
  for seg in src:gmatch("[^/]+") do
    if seg == ".." then
      if #parts == 0 then fail("COPY source " .. src .. " is outside the build context", "EINVAL") end
      parts[#parts] = nil
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  local path = dir
  for i, seg in ipairs(parts) do
    path = path .. "/" .. seg
    local st = util.stat(path, false)
    if not st then
      fail(format("COPY source %s is not in the build context (was it added with add_local_file/add_local_dir?)", src), "ENOENT")
    end
    if st.type == "link" and i < #parts then
      fail(format("COPY source %s goes through a symbolic link of the context (%s)", src, concat(parts, "/", 1, i)), "EINVAL")
    end
  end
  return path, util.stat(path, false)
end

local ID_NAMES = { root = 0, daytona = 1000 }

local function owner_of(spec)
  if not spec then return nil end
  local u, g = spec:match("^([^:]+):?(.*)$")
  local function id(x)
    if x == "" then return nil end
    if x:match("^%d+$") then return tonumber(x) end
    if ID_NAMES[x] then return ID_NAMES[x] end
    fail("--chown with the name " .. x .. " is not supported by dtlocal's builder: give numeric ids", "EINVAL")
  end
  local uid = id(u)
  return uid, id(g) or uid
end

-- COPY/ADD from the context into a new layer.
function Build:copy(step, args, layers, is_add)
  local ws = words(args)
  local chown, chmod
  while ws[1] and ws[1]:match("^%-%-") do
    local flag = table.remove(ws, 1)
    local k, v = flag:match("^%-%-([%w-]+)=?(.*)$")
    if k == "chown" then chown = v
    elseif k == "chmod" then chmod = v
    elseif k == "from" then fail("COPY --from (multi-stage builds) is not supported by dtlocal's builder", "EINVAL")
    elseif k == "link" or k == "parents" then -- harmless here
    else fail(format("%s %s is not supported by dtlocal's builder", step.op, flag), "EINVAL") end
  end
  local rest = args
  while rest:match("^%-%-%S+%s+") do rest = rest:gsub("^%-%-%S+%s+", "", 1) end
  local j = exec_form(rest)
  if j then ws = j end
  if #ws < 2 then fail(step.op .. " needs a source and a destination", "EINVAL") end
  local vars = self:vars()
  for i, w in ipairs(ws) do ws[i] = M.expand(w, vars) end
  local dest = table.remove(ws)
  local uid, gid = owner_of(chown)
  if chmod and chmod ~= "" and not chmod:match("^[0-7]+$") then fail("--chmod takes octal modes only: " .. chmod, "EINVAL") end
  -- the destination, inside the image
  if dest:sub(1, 1) ~= "/" then dest = (self.config.cwd ~= "" and self.config.cwd or "/") .. "/" .. dest end
  local into_dir = dest:sub(-1) == "/" or #ws > 1
  local rel, st = resolve(layers, dest, true)
  if st and st.type == "directory" then into_dir = true end
  local upper = self:tmpdir("copy.") .. "/upper"
  util.mkdir(upper, 493)
  for _, src in ipairs(ws) do
    if is_add and src:match("^%a[%w+.-]*://") then
      fail("ADD of a URL is not supported by dtlocal's builder: " .. src, "EINVAL")
    end
    local path, sst = self:context_source(src)
    if is_add and sst.type == "file" and (path:match("%.tar$") or path:match("%.t[gx]z$") or path:match("%.tar%.%w+$")) then
      fail("ADD of an archive (extracted by Docker) is not supported by dtlocal's builder: use COPY and RUN tar", "EINVAL")
    end
    local target
    if sst.type == "directory" then
      target = rel                                   -- the directory's contents go there
      make_dirs(layers, upper, rel)
      run_checked({ "cp", "-R", "--no-dereference", "--preserve=mode,timestamps,links", "-T", path,
                    upper .. (rel ~= "" and ("/" .. rel) or "") }, step.op .. " " .. src)
    else
      if into_dir then
        make_dirs(layers, upper, rel)
        target = (rel ~= "" and (rel .. "/") or "") .. path:match("([^/]+)$")
      else
        local parent = rel:match("^(.*)/[^/]*$") or ""
        make_dirs(layers, upper, parent)
        target = rel
      end
      run_checked({ "cp", "--no-dereference", "--preserve=mode,timestamps,links", "-T", path, upper .. "/" .. target },
        step.op .. " " .. src)
    end
    -- owner (root's unless --chown) and --chmod, without following links
    local function fix(p)
      util.chown(p, uid or 0, gid or 0, true)
      local pst = util.stat(p, false)
      if chmod and chmod ~= "" and pst and pst.type ~= "link" then util.chmod(p, tonumber(chmod, 8)) end
      if pst and pst.type == "directory" then
        for _, name in ipairs(util.readdir(p) or {}) do fix(p .. "/" .. name) end
      end
    end
    if sst.type == "directory" then
      for _, name in ipairs(util.readdir(path) or {}) do fix(upper .. (rel ~= "" and ("/" .. rel) or "") .. "/" .. name) end
    else
      fix(upper .. "/" .. target)
    end
  end
  local layer, msg, code = self.store:add_layer(upper)
  if not layer then fail("cannot store the layer of " .. step.op .. ": " .. tostring(msg), code) end
  return layer
end

-- WORKDIR: the directory, made in a new layer when the image lacks it.
function Build:workdir(path, layers)
  local rel, st = resolve(layers, path, true)
  if st then
    if st.type ~= "directory" then fail("WORKDIR " .. path .. " is not a directory in the image", "EINVAL") end
    return nil
  end
  local upper = self:tmpdir("workdir.") .. "/upper"
  util.mkdir(upper, 493)
  make_dirs(layers, upper, rel)
  local layer, msg, code = self.store:add_layer(upper)
  if not layer then fail("cannot store the layer of WORKDIR: " .. tostring(msg), code) end
  return layer
end

-- Start the launcher on a root of `layers` and dir; returns exit code and
-- whether the program ran (a "ready" came), streaming its output to on_out.
function Build:launch(dir, layers, argv, env, cwd, user, on_out, cgroups)
  local cmd = { self.launcher, "run", "--root-dir", dir, "--hostname", "buildkitsandbox", "--user", user }
  for _, d in ipairs(cgroups or {}) do cmd[#cmd + 1] = "--cgroup"; cmd[#cmd + 1] = d end
  if self.net_arg then cmd[#cmd + 1] = "--net"; cmd[#cmd + 1] = self.net_arg end
  if self.uid_first then cmd[#cmd + 1] = "--uid-base"; cmd[#cmd + 1] = tostring(self.uid_first) end
  if cwd and cwd ~= "" then cmd[#cmd + 1] = "--cwd"; cmd[#cmd + 1] = cwd end
  for _, l in ipairs(layers) do cmd[#cmd + 1] = "--image-layer"; cmd[#cmd + 1] = l end
  local entries = {}
  for k, v in pairs(env) do entries[#entries + 1] = k .. "=" .. v .. "\0" end
  table.sort(entries)
  local envfile
  if #entries > 0 then
    envfile = dir .. ".env"
    local f = assert(io.open(envfile, "wb"))
    util.chmod(envfile, 384)
    f:write(concat(entries))
    f:close()
    cmd[#cmd + 1] = "--env-file"; cmd[#cmd + 1] = envfile
  end
  cmd[#cmd + 1] = "--"
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local p, msg = process.spawn(cmd, { stdin = "null", stdout = "pipe", stderr = "pipe" })
  if not p then
    if envfile then os.remove(envfile) end
    fail("cannot start the launcher: " .. tostring(msg), "EIO")
  end
  local launcher_err = {}
  local readers = {}
  -- the step's output, line by line, but a line is cut at M.MAX_LINE and
  -- only M.LOG_LIMIT bytes of a step are logged (BuildKit clips at 2 MiB
  -- too): a step printing without end costs neither memory nor disk
  local logged, clipped = 0, false
  local function emit(stream, line)
    if stream == "stderr" and line:match("^dtlua%-sandbox: ") then launcher_err[#launcher_err + 1] = line end
    logged = logged + #line + 1
    if logged <= M.LOG_LIMIT then
      on_out(line)
    elseif not clipped then
      clipped = true
      on_out(format("[output clipped: the step printed more than %d bytes]", M.LOG_LIMIT))
    end
  end
  for _, stream in ipairs{ "stdout", "stderr" } do
    local t = scheduler.spawn(function()
      local buf = ""
      while true do
        local chunk = p:read(stream)
        if not chunk then break end
        buf = buf .. chunk
        while true do
          local nl = buf:find("\n", 1, true)
          if nl and nl <= M.MAX_LINE + 1 then
            emit(stream, buf:sub(1, nl - 1))
            buf = buf:sub(nl + 1)
          elseif #buf > M.MAX_LINE then
            emit(stream, buf:sub(1, M.MAX_LINE))
            buf = buf:sub(M.MAX_LINE + 1)
          else
            break
          end
        end
      end
      if buf ~= "" then emit(stream, buf) end
    end)
    t.observed = true
    readers[#readers + 1] = t
  end
  local left = self.deadline - core.now()
  local code = left > 0 and p:wait(left) or nil
  if code == nil then
    p:kill("KILL")
    p:wait(10)
  end
  for _, t in ipairs(readers) do pcall(t.wait, t) end
  p:close()
  if envfile then os.remove(envfile) end
  if code == nil then fail(format("the build took longer than %d s", self.timeout), "ETIMEDOUT") end
  return code, launcher_err
end

-- The cgroups of one RUN (dirs for --cgroup), or {} when none are enforced:
-- a build step is sandbox code, held to a sandbox's limits (a fork bomb in
-- a RUN stops at the pids limit, not at the host's).
function Build:cgroup()
  if not self.cgroups then return {} end
  local id = "build-" .. util.hex(util.random_bytes(6))
  local dirs = self.cgroups:create(id, { cpu = M.CPU, memory = M.MEMORY })
  self.cgids[#self.cgids + 1] = id
  return dirs
end

-- A RUN step: the command in a sandbox on the layers so far; its upper dir
-- becomes a layer (nil when it changed nothing).
function Build:run(step, layers, n, total)
  local argv = exec_form(step.args)
  if not argv then
    argv = {}
    for i, a in ipairs(self.shell) do argv[i] = a end
    argv[#argv + 1] = step.args
  end
  local user = self.config.user
  local uname = user:match("^([^:]*)")
  local as = (uname == "" or uname == "root" or uname == "0") and "root"
    or ((uname == "daytona" or uname == "1000") and "daytona") or nil
  if not as then
    fail(format("RUN as USER %s is not supported by dtlocal's builder (root or daytona)", user), "EINVAL")
  end
  local env = self:image_env()
  for k, v in pairs(self.args) do if env[k] == nil then env[k] = v end end
  if not env.PATH then env.PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" end
  local root = self:tmpdir("run.")
  local dir = root .. "/sandbox"
  local cgroups = self:cgroup()
  -- first the launcher alone: what it puts in the upper dir is not the step's
  local code, lerr = self:launch(dir, layers, { "true" }, env, "/", "root", function() end, cgroups)
  if code ~= 0 then
    fail(format("step %d/%d: cannot start a sandbox on the image: %s", n, total,
      lerr[1] or ("the launcher exited with " .. tostring(code))), "EIO")
  end
  local upper = dir .. "/upper/image"
  local before = snapshot_tree(upper)
  local tail = {}
  code, lerr = self:launch(dir, layers, argv, env, self.config.cwd, as, function(line)
    self:log("%s", line)
    -- the failure's message (a snapshot's errorReason) stays short
    tail[#tail + 1] = #line > 512 and (line:sub(1, 512) .. "...") or line
    if #tail > M.TAIL then table.remove(tail, 1) end
  end, cgroups)
  if code ~= 0 then
    if #lerr > 0 and code >= 64 and code <= 72 then
      fail(format("step %d/%d: RUN %s: the sandbox did not start: %s", n, total, step.args, lerr[1]), "EIO")
    end
    fail(format("step %d/%d: RUN %s: exit code %s%s", n, total, step.args, tostring(code),
      #tail > 0 and (":\n" .. concat(tail, "\n")) or " (no output)"), "ESTEP")
  end
  prune_unchanged(upper, before)
  if #(util.readdir(upper) or {}) == 0 then return nil end
  local layer, msg, lcode = self.store:add_layer(upper, { uid_base = self.uid_first })
  if not layer then fail("cannot store the layer of RUN: " .. tostring(msg), lcode) end
  return layer
end

function Build:finish()
  for _, id in ipairs(self.cgids) do
    pcall(self.cgroups.kill, self.cgroups, id)
    self.cgroups:remove(id)
  end
  self.cgids = {}
  for _, d in ipairs(self.temps) do
    if util.stat(d .. "/sandbox", false) and self.launcher then
      process.run({ self.launcher, "rm", "--root-dir", d .. "/sandbox" }, { timeout = 600, stderr = "stdout" })
    end
    fs.remove_tree(d)
  end
  self.temps = {}
  if self.slot then self.uids:release(self.slot, self.owner); self.slot = nil end
end

local CONFIG_ONLY = { LABEL = true, EXPOSE = true, VOLUME = true, STOPSIGNAL = true, MAINTAINER = true }

function Build:steps(steps)
  -- ARGs before FROM
  local i = 1
  while steps[i] and steps[i].op == "ARG" do
    for _, kv in ipairs(pairs_of(steps[i].args, "ARG", true)) do self.args[kv[1]] = kv[2] or self.args[kv[1]] or "" end
    i = i + 1
  end
  local from = steps[i]
  if not from or from.op ~= "FROM" then fail("the Dockerfile must start with FROM (after ARGs)", "EINVAL") end
  local fw = words(M.expand(from.args, self.args))
  for _, w in ipairs(fw) do if w:match("^%-%-") then fail("FROM " .. w .. " is not supported by dtlocal's builder", "EINVAL") end end
  if #fw ~= 1 and not (#fw == 3 and fw[2]:upper() == "AS") then fail("FROM takes one image: FROM " .. from.args, "EINVAL") end
  local total = #steps - i + 1
  local n = 1
  self:log("Step %d/%d : FROM %s", n, total, fw[1])
  local base, msg = self.store:pull(fw[1], { on_log = function(l) self:log("%s", l) end, timeout = self:remaining() })
  if not base then fail(format("step 1/%d: FROM %s: %s", total, fw[1], tostring(msg)), "EPULL") end
  local layers = {}
  for k, l in ipairs(base.layers) do layers[k] = l end
  self.config = {
    env = {}, cwd = base.config.cwd or "", user = base.config.user or "",
    entrypoint = base.config.entrypoint or {}, cmd = base.config.cmd or {},
  }
  for k, v in ipairs(base.config.env or {}) do self.config.env[k] = v end
  local key = util.sha256("dtlocal-build-v1\0" .. base.id)
  local ctx_hashes = concat(self.context_hashes, ",")
  local img = base
  for s = i + 1, #steps do
    local step = steps[s]
    n = n + 1
    local op = step.op
    if op == "FROM" then fail(format("step %d/%d: a second FROM (multi-stage builds) is not supported by dtlocal's builder", n, total), "EINVAL") end
    if op == "ONBUILD" or op == "HEALTHCHECK" then
      fail(format("step %d/%d: %s is not supported by dtlocal's builder", n, total, op), "EINVAL")
    end
    local text = op .. " " .. step.args
    self:log("Step %d/%d : %s", n, total, text)
    -- what the result depends on: the step, with the ARGs it may see, and
    -- for COPY/ADD the context
    local dep = text .. "\0" .. json.encode(self.args)
    if op == "COPY" or op == "ADD" then dep = dep .. "\0" .. ctx_hashes end
    local skey = util.sha256(key .. "\0" .. dep)
    local hit = self:cached(skey)
    -- configuration steps update self.config also on a hit
    if op == "ENV" then
      for _, kv in ipairs(pairs_of(step.args, "ENV")) do self:set_env(kv[1], M.expand(kv[2], self:vars())) end
    elseif op == "ARG" then
      for _, kv in ipairs(pairs_of(step.args, "ARG", true)) do
        self.args[kv[1]] = kv[2] and M.expand(kv[2], self:vars()) or self.args[kv[1]] or ""
      end
    elseif op == "USER" then
      self.config.user = M.expand(step.args, self:vars())
    elseif op == "ENTRYPOINT" or op == "CMD" then
      local v = exec_form(step.args) or { "/bin/sh", "-c", step.args }
      if op == "ENTRYPOINT" then self.config.entrypoint = v; self.config.cmd = {} else self.config.cmd = v end
    elseif op == "SHELL" then
      local v = exec_form(step.args)
      if not v or #v == 0 then fail(format("step %d/%d: SHELL needs the exec form [\"/bin/sh\", \"-c\"]", n, total), "EINVAL") end
      self.shell = v
    elseif op == "WORKDIR" then
      local p = M.expand(step.args, self:vars())
      if p:sub(1, 1) ~= "/" then p = (self.config.cwd ~= "" and self.config.cwd or "") .. "/" .. p end
      self.config.cwd = p
    elseif op ~= "RUN" and op ~= "COPY" and op ~= "ADD" and not CONFIG_ONLY[op] then
      fail(format("step %d/%d: unknown instruction %s", n, total, op), "EINVAL")
    end
    if hit then
      self:log(" ---> Using cache")
      layers = {}
      for k, l in ipairs(hit.layers) do layers[k] = l end
      -- a hit's config is the recorded one (ENV/USER/... as they were)
      self.config = {
        env = hit.config.env or {}, cwd = hit.config.cwd or "", user = hit.config.user or "",
        entrypoint = hit.config.entrypoint or {}, cmd = hit.config.cmd or {},
      }
      img = hit
    else
      local layer
      local t0 = core.now()
      if op == "RUN" then layer = self:run(step, layers, n, total)
      elseif op == "COPY" or op == "ADD" then layer = self:copy(step, step.args, layers, op == "ADD")
      elseif op == "WORKDIR" then layer = self:workdir(self.config.cwd, layers) end
      if layer then layers[#layers + 1] = layer end
      img = self:commit(skey, layers)
      if op == "RUN" or op == "COPY" or op == "ADD" then self:log(" ---> done in %.2f s", core.now() - t0) end
    end
    key = skey
  end
  if img == base then img = self:commit(key, layers) end
  return img, key
end

--- Build a Dockerfile (see the module doc). Returns the image, or nil,
-- message (naming the step, its exit code and its output's tail), code.
function M.build(store, opts)
  local self = setmetatable({
    store = store, on_log = opts.on_log, launcher = opts.launcher,
    -- as root each RUN needs a host range of its own (the machine's registry)
    uids = opts.uids or (util.getuid() == 0 and require("dtlocal.control.uids").new{} or nil),
    contexts = opts.contexts or {}, context_hashes = opts.context_hashes or {},
    cgroups = opts.cgroups, cgids = {},
    timeout = opts.timeout or M.TIMEOUT, temps = {}, args = {}, shell = { "/bin/sh", "-c" },
  }, Build)
  self.deadline = core.now() + self.timeout
  local ok, img, key = pcall(function()
    if type(opts.dockerfile) ~= "string" or opts.dockerfile == "" then fail("the Dockerfile is empty", "EINVAL") end
    local steps = M.parse(opts.dockerfile)
    if self.uids then
      self.owner = self:tmpdir("owner.")
      local slot, first = self.uids:claim(self.owner)
      if not slot then fail("no free uid range for the build: " .. tostring(first), "EBUSY") end
      self.slot, self.uid_first = slot, first
      -- the build's network: its slot's veth, behind the server's rules (no
      -- way to the host nor to sandboxes), as a sandbox's
      if opts.net then self.net_arg = opts.net:launch_arg(slot) end
    end
    local image, k = self:steps(steps)
    if opts.ref then
      local named, msg, code = store:put_image{ ref = opts.ref, layers = image.layers, config = image.config }
      if not named then fail("cannot name the image " .. opts.ref .. ": " .. tostring(msg), code) end
      image = named
    end
    return image, k
  end)
  local fok, ferr = pcall(self.finish, self)
  if not ok then
    if type(img) == "table" and img.build then
      self:log("ERROR: %s", img.build)
      return nil, img.build, img.code
    end
    error(img, 0)
  end
  if not fok then return nil, "build cleanup failed: " .. tostring(ferr), "EIO" end
  self:log("Successfully built %s (cache key %s)", tostring(img.id), key:sub(1, 16))
  return img
end

return M
