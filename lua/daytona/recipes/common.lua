-- daytona.recipes.common (internal): what the recipe modules share: shell
-- quoting, short tails of a tool's output, a deadline for a whole recipe,
-- installing a missing tool in the sandbox, and running a long-lived tool
-- in a process session of its own.
local errors = require "daytona.errors"
local check = require "daytona.check"
local core = require "daytona.core"

local type, ipairs, pcall, error, tostring, math, io = type, ipairs, pcall, error, tostring, math, io
local concat = table.concat

local M = {}

--- A word for the sandbox's shell: single-quoted, safe whatever it holds.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local q = M.q

--- The last lines of a tool's output: enough to say what went wrong, short
-- enough for one error message; `none` (default "") when there are none.
function M.tail(s, n, none)
  s = (s or ""):gsub("%s+$", "")
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  if #lines == 0 then return none or "" end
  local first = #lines > n and #lines - n + 1 or 1
  return concat(lines, "\n", first, #lines)
end
local tail = M.tail

--- Seconds left before `deadline`, at least 1 (a request needs some time).
function M.remaining(deadline)
  return math.max(deadline - core.now(), 1)
end
local remaining = M.remaining

--- sb.process:exec within the recipe's deadline.
function M.run(sb, cmd, deadline)
  return sb.process:exec(cmd, { timeout = remaining(deadline) })
end
local run = M.run

--- Raise DaytonaError "f: message" with `fields` (code, tool, output).
function M.fail(f, message, fields)
  error(errors.DaytonaError(f .. ": " .. message, fields), 0)
end
local fail = M.fail

--- The sandbox argument of a recipe: anything with process and fs.
function M.sandbox(f, sb)
  if type(sb) ~= "table" or type(sb.process) ~= "table" or type(sb.fs) ~= "table" then
    check.argerror(f, "sandbox", "a sandbox expected, got " .. type(sb))
  end
  return sb
end

-- The commands of `cmds` the sandbox lacks.
local function missing_commands(sb, cmds, deadline)
  local parts = {}
  for _, c in ipairs(cmds) do
    parts[#parts + 1] = ("command -v %s >/dev/null 2>&1 || echo %s"):format(q(c), q(c))
  end
  local r = run(sb, concat(parts, "; "), deadline)
  local missing = {}
  for c in r.result:gmatch("%S+") do missing[#missing + 1] = c end
  return missing
end

--- Make sure every command of `cmds` is there, installing what is missing
-- unless `install` is false; raises ENOTOOL naming the tool and why.
-- `packages` maps a command to its Debian package (default: the command's
-- name) or to a vendor's install `{ probe = URL that must answer first,
-- script = shell }`, so a sandbox without the network gets a clear "cannot
-- reach" instead of apt-get's retries. `no_recommends`: apt-get without the
-- packages' recommends (wireguard-tools recommends a kernel module).
function M.ensure_tools(f, sb, cmds, install, deadline, packages, no_recommends)
  local missing = missing_commands(sb, cmds, deadline)
  if #missing == 0 then return end
  local names = concat(missing, ", ")
  if not install then
    fail(f, ("%s not installed in the sandbox (install = false): use a snapshot that has it"):format(names),
      { code = "ENOTOOL", tool = missing[1] })
  end
  local debs, output = {}, {}
  for _, c in ipairs(missing) do
    local pkg = packages[c]
    if type(pkg) == "table" then
      local probe = run(sb, ("curl -fsS --max-time 10 -o /dev/null %s 2>&1"):format(q(pkg.probe)), deadline)
      if probe.exit_code ~= 0 then
        fail(f, ("%s is not installed in the sandbox and cannot be installed: its vendor's repository "
          .. "is not reachable from the sandbox (%s); the sandbox needs the network, or a snapshot with %s")
          :format(c, tail(probe.result, 2, "curl failed"), c),
          { code = "ENOTOOL", tool = c })
      end
      local r = run(sb, pkg.script .. " 2>&1", deadline)
      output[#output + 1] = r.result
    else
      debs[#debs + 1] = pkg or c
    end
  end
  if #debs > 0 then
    -- apt's lists may be empty in a fresh sandbox: update only when a plain
    -- install cannot find the packages
    local pkgs = (no_recommends and "--no-install-recommends " or "") .. concat(debs, " ")
    local r = run(sb, ("{ sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q %s || "
      .. "{ sudo -n apt-get update -q && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q %s; }; } 2>&1")
      :format(pkgs, pkgs), deadline)
    output[#output + 1] = r.result
  end
  local still = missing_commands(sb, missing, deadline)
  if #still > 0 then
    fail(f, ("%s not installed in the sandbox and installing failed (the sandbox may have no network: use a "
      .. "snapshot that has it):\n%s"):format(concat(still, ", "), tail(concat(output, "\n"), 8)),
      { code = "ENOTOOL", tool = still[1], output = concat(output, "\n") })
  end
end

local serial = 0

--- A session name no other recipe of this process or another uses: a
-- counter, with a random number.
function M.session_name(kind, tool)
  serial = serial + 1
  return ("dtlua-%s-%s-%d-%d"):format(kind, tool, serial, math.random(1, 1 << 30))
end

--- Run `command` in a new session of its own, in the background; returns
-- the process record `{ session, cmd_id, tool }`.
function M.start(sb, kind, tool, command, deadline)
  local session = M.session_name(kind, tool)
  sb.process:create_session(session)
  local ok, r = pcall(sb.process.execute_session_command, sb.process, session,
    { command = command, run_async = true }, { timeout = remaining(deadline) })
  if not ok then
    pcall(sb.process.delete_session, sb.process, session)
    error(r, 0)
  end
  return { session = session, cmd_id = r.cmd_id, tool = tool }
end

--- A session command's output so far ("" when it cannot be read).
function M.output(sb, p)
  local ok, logs = pcall(sb.process.get_session_command_logs, sb.process, p.session, p.cmd_id)
  if not ok then return "" end
  local out = (logs.stdout or "") .. (logs.stderr or "")
  if out == "" then out = logs.output or "" end
  return out
end

--- The output so far of every process record of `procs`, one after the other.
function M.logs(sb, procs)
  local out = {}
  for _, p in ipairs(procs) do out[#out + 1] = M.output(sb, p) end
  return concat(out)
end

--- The option set of a recipe: the module's common names, then `extra`.
function M.option_set(common_names, extra)
  local names = {}
  for _, k in ipairs(common_names) do names[#names + 1] = k end
  for _, k in ipairs(extra) do names[#names + 1] = k end
  return check.set(table.unpack(names))
end

--- The `install` (default true) and `timeout` (0: none) options of a recipe.
function M.install_timeout(f, opts, default_timeout)
  local install = check.optboolean(opts.install, f, "install")
  if install == nil then install = true end
  local timeout = check.timeout(opts.timeout, f, default_timeout)
  if timeout == 0 then timeout = math.huge end
  return install, timeout
end

--- A handle's __close: `obj:close()`; when the scope ends by an error (`err`),
-- a failure of close goes to stderr as "daytona: could not WHAT: ..." and
-- the original error goes on.
function M.close_scope(obj, err, what)
  local ok, e = pcall(obj.close, obj)
  if ok then return end
  if err ~= nil then
    io.stderr:write("daytona: could not ", what, ": ", tostring(e), "\n")
  else
    error(e, 0)
  end
end

--- The exit code of a session command, nil while it runs.
function M.exit_code(sb, p)
  return sb.process:get_session_command(p.session, p.cmd_id).exit_code
end

return M
