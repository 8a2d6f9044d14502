--- Shared by the dtlua bench clients (loaded with dofile, returns a table).
-- A client reads DAYTONA_API_URL / DAYTONA_API_KEY like any user script,
-- does its work and prints its figures as lines `bench <key> <values...>`
-- on stdout for bench/main.lua to read.
local core = require "daytona.core"

local M = {}

M.now = core.now

--- Print one result line: `bench key v1 v2 ...`.
function M.out(key, ...)
  local parts = { "bench", key }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    parts[#parts + 1] = math.type(v) == "float" and ("%.6f"):format(v) or tostring(v)
  end
  io.stdout:write(table.concat(parts, " "), "\n")
end

--- A positive integer argument, or an error naming it.
function M.int_arg(i, name)
  local v = math.tointeger(tonumber(arg[i]))
  if not v or v < 0 then error(("argument #%d (%s): integer expected, got %s"):format(i, name, tostring(arg[i])), 0) end
  return v
end

--- A string argument, or an error naming it.
function M.str_arg(i, name)
  local v = arg[i]
  if type(v) ~= "string" or v == "" then error(("argument #%d (%s) missing"):format(i, name), 0) end
  return v
end

--- Run `exec(cmd)` and insist on exit code 0.
function M.exec_ok(sb, cmd)
  local r = sb.process:exec(cmd)
  if r.exit_code ~= 0 then
    error(("exec %q: exit code %s: %s"):format(cmd, tostring(r.exit_code), tostring(r.result)), 0)
  end
  return r
end

--- Lines of a text file.
function M.lines(path)
  local out = {}
  for line in assert(io.lines(path)) do
    if line ~= "" then out[#out + 1] = line end
  end
  return out
end

return M
