--- dtlocal.fs: the file-system and process helpers both dtlocal servers
-- need beyond `core.util`, written in Lua over it (no shell: a shell-out
-- costs a fork per call, depends on the host's tools and quotes paths by
-- hand).
--
--   fs.mkdirs(path, mode, parent_mode) -> true | nil, message, code   (mkdir -p)
--   fs.remove_tree(path[, tick])       -> true | nil, message, code   (rm -rf)
--   fs.realpath(path)                  -> the canonical path, or path (readlink -f)
--   fs.cwd()                           -> the working directory       (pwd)
--   fs.now_ms()                        -> wall-clock milliseconds     (core.util.time)
--   fs.kill(pid, signal)               -> true | nil, message, code   (kill)
--   fs.read_file(path)                 -> the content | nil, message  (cat)
local core = require "daytona.core"
local rfs = require "daytona.runtime.fs"

local util = core.util
local io, os, ipairs, type, math = io, os, ipairs, type, math

local M = {}

--- Make a directory and its missing parents (`daytona.runtime.fs.mkdirs`).
-- A directory already there is fine; anything else there is ENOTDIR.
-- @param path the directory
-- @param[opt=0700] mode of the directory
-- @param[opt=mode] parent_mode of the parents it makes
M.mkdirs = rfs.mkdirs

-- errno numbers os.remove reports, by the names core.util uses
local ERRNO = { [1] = "EPERM", [2] = "ENOENT", [13] = "EACCES", [16] = "EBUSY", [20] = "ENOTDIR",
                [21] = "EISDIR", [30] = "EROFS", [39] = "ENOTEMPTY" }

--- Remove a file or a tree, never following symlinks.
-- @param path what to remove
-- @param[opt] tick a function called before each entry (a long removal
-- may yield there)
function M.remove_tree(path, tick)
  local st, msg, code = util.stat(path, false)
  if not st then return nil, msg, code end
  if st.type == "directory" then
    local names, m2, c2 = util.readdir(path)
    if not names then return nil, path .. ": " .. m2, c2 end
    for _, name in ipairs(names) do
      if tick then tick() end
      local ok, m3, c3 = M.remove_tree(path .. "/" .. name, tick)
      if not ok then return nil, m3, c3 end
    end
  end
  local ok, m4, errno = os.remove(path)
  if not ok then return nil, m4, ERRNO[errno] or "EIO" end
  return true
end

--- The canonical absolute path (every symlink resolved, no "." or ".."),
-- as `readlink -f` gives it; path itself when a part of it cannot be
-- resolved.
function M.realpath(path)
  if path:sub(1, 1) ~= "/" then path = M.cwd() .. "/" .. path end
  local todo, done, links = {}, {}, 0
  for seg in path:gmatch("[^/]+") do todo[#todo + 1] = seg end
  local i = 1
  while i <= #todo do
    local seg = todo[i]
    i = i + 1
    if seg == ".." then
      done[#done] = nil
    elseif seg ~= "." then
      local here = "/" .. table.concat(done, "/") .. (#done > 0 and "/" or "") .. seg
      local st = util.stat(here, false)
      if st and st.type == "link" then
        links = links + 1
        local target = links <= 40 and util.readlink(here)
        if not target then return path end
        local rest = { table.unpack(todo, i) }
        todo = {}
        for s in target:gmatch("[^/]+") do todo[#todo + 1] = s end
        for _, s in ipairs(rest) do todo[#todo + 1] = s end
        i = 1
        if target:sub(1, 1) == "/" then done = {} end
      else
        done[#done + 1] = seg
      end
    end
  end
  return "/" .. table.concat(done, "/")
end

--- The working directory of this process.
function M.cwd()
  return util.readlink("/proc/self/cwd") or os.getenv("PWD") or "."
end

--- Wall-clock time in integer milliseconds since the epoch.
function M.now_ms()
  return math.floor(util.time() * 1000)
end

--- The whole content of a file, or nil and a message.
function M.read_file(path)
  local f, msg = io.open(path, "rb")
  if not f then return nil, msg end
  local s, rmsg = f:read("a")
  f:close()
  if not s then return nil, rmsg end
  return s
end

--- Send a signal ("TERM", "KILL", or a number) to one process.
function M.kill(pid, signal)
  if math.type(pid) ~= "integer" or pid <= 0 then return nil, "not a process id", "EINVAL" end
  return core.process.kill(pid, signal)
end

return M
