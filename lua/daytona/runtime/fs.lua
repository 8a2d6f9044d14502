--- daytona.runtime.fs: local directories over the core's system calls.
--
-- `mkdirs` is `mkdir -p` without a shell: the SDK (downloads to local paths)
-- and dtlocal (`dtlocal.fs`) make directories with it, so that no path,
-- whatever quotes, spaces or `$(...)` it holds, ever reaches a shell.
-- Conventions as the core's: a failure returns `nil, message, code`.
local core = require "daytona.core"

local util = core.util

local M = {}

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end
M.dirname = dirname

--- Make a directory and its missing parents. A directory already there
-- (or a symlink to one) is fine; anything else there is ENOTDIR.
-- @param path the directory
-- @param[opt=0700] mode of the directory (filtered by the umask)
-- @param[opt=mode] parent_mode of the parents it makes
-- @return true | nil, message, code
function M.mkdirs(path, mode, parent_mode)
  mode = mode or 448
  local st = util.stat(path, true)
  if st then
    if st.type == "directory" then return true end
    return nil, path .. ": exists and is not a directory", "ENOTDIR"
  end
  local parent = dirname((path:gsub("/+$", "")))
  if parent ~= path and parent ~= "." then
    local ok, msg, code = M.mkdirs(parent, parent_mode or mode, parent_mode)
    if not ok then return nil, msg, code end
  end
  local ok, msg, code = util.mkdir(path, mode)
  if not ok and code ~= "EEXIST" then return nil, path .. ": " .. msg, code end
  return true
end

return M
