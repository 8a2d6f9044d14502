--- The "outside" of the network specs: a network namespace of the spec's
-- own, linked to the host by a veth pair, with the host's end at GW and two
-- addresses A and B inside (`<net>.N.1`, `.2`, `.3`, N from our pid), so that
-- sandboxes' traffic to "the world" never leaves this machine. Plus the two
-- small tools those specs share: a shell line's output and a process
-- started once it printed "listening".
local core = require "daytona.core"
local process = require "daytona.runtime.process"

local M = {}

--- Run `cmd` with sh; its output (stderr too) and exit code.
function M.sh(cmd)
  local r = assert(process.run({ "sh", "-c", cmd }, { timeout = 30, stderr = "stdout" }))
  return r.stdout, r.exit_code
end

--- Spawn argv and return it once a line of its output says "listening".
function M.start_listening(argv, timeout)
  local p = assert(process.spawn(argv, { stdin = "null", stdout = "pipe", stderr = "stdout" }))
  local up = false
  for line in p:lines("stdout", timeout or 20) do
    if line:find("listening", 1, true) then up = true break end
  end
  assert(up, "did not start: " .. table.concat(argv, " "))
  return p
end

local Outside = {}
Outside.__index = Outside

--- Make the namespace: `tag` names it and the host's end (with our pid),
-- `net` is the first two octets of its /24 (e.g. "198.18"). Whatever a
-- crashed run of ours left under those names is removed first.
function M.make(tag, net)
  local pid = core.util.getpid()
  local n = pid % 250
  local o = setmetatable({
    ns = "dtl" .. tag .. pid, hostif = tag:sub(1, 3) .. "x" .. pid,
    gw = ("%s.%d.1"):format(net, n), a = ("%s.%d.2"):format(net, n), b = ("%s.%d.3"):format(net, n),
  }, Outside)
  o:remove()
  local out, code = M.sh(table.concat({
    "ip netns add " .. o.ns,
    ("ip link add %s type veth peer name eth0 netns %s"):format(o.hostif, o.ns),
    ("ip addr add %s/24 dev %s && ip link set %s up"):format(o.gw, o.hostif, o.hostif),
    ("ip -n %s addr add %s/24 dev eth0 && ip -n %s addr add %s/24 dev eth0"):format(o.ns, o.a, o.ns, o.b),
    ("ip -n %s link set eth0 up && ip -n %s link set lo up"):format(o.ns, o.ns),
  }, " && "))
  assert(code == 0, out)
  return o
end

--- argv run inside the namespace.
function Outside:argv(argv)
  local t = { "ip", "netns", "exec", self.ns }
  for _, a in ipairs(argv) do t[#t + 1] = a end
  return t
end

--- Remove the namespace and the host's end (no error if they are gone).
function Outside:remove()
  M.sh(("ip netns del %s 2>/dev/null; ip link del %s 2>/dev/null; true"):format(self.ns, self.hostif))
end

return M
