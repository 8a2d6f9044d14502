--- dtlocal.control.ports: which listeners of a port belong to a sandbox.
--
-- A sandbox with a network of its own (a veth as root, pasta unprivileged)
-- is reached at its own address or through its daemon; only which of its
-- listeners take a port is asked then (`sandbox_listener`, from its
-- namespace's socket table). Without one (unprivileged and no pasta),
-- sandboxes share the host's network, so "port 3000 of sandbox X" is
-- whatever listens on the host's loopback port 3000. A preview must reach
-- only the sandbox's own servers, never another sandbox's, dtlocal's own
-- API or another host service, so before forwarding dtlocal checks who
-- owns the listening socket (`owned`):
-- - as root, each sandbox runs under its own host uid range, and the
--   kernel's socket table (/proc/net/tcp, tcp6) names each listener's uid;
-- - unprivileged, every sandbox runs under dtlocal's own uid, so the
--   listener's socket inode must be open in a process of the sandbox's PID
--   namespace.
--
--   ports.listeners(port) -> { {uid =, inode =}, ... }   (loopback or any address)
--   ports.owned(port, { uid_first =, init_pid = }) -> true | false, why
--   ports.sandbox_listener(init_pid, port) -> "any" | "loopback" | nil
local core = require "daytona.core"

local io, ipairs, tonumber, format = io, ipairs, tonumber, string.format

local M = {}

M.ID_COUNT = 65536

-- Local addresses a connection to 127.0.0.1 can reach: loopback and the
-- wildcard, in /proc's hex (IPv4 in host byte order, little-endian here;
-- v4-mapped v6 addresses for dual-stack sockets).
local REACHABLE = {
  ["0100007F"] = true, ["00000000"] = true,
  ["00000000000000000000000000000000"] = true,
  ["0000000000000000FFFF00000100007F"] = true,
  ["0000000000000000FFFF000000000000"] = true,
}

-- Calls fn(addr, uid, inode) for each socket listening on `port` in the
-- socket tables under `dir` (/proc/net, or /proc/<pid>/net for another
-- namespace's): addr in /proc's hex.
local function each_listener(dir, port, fn)
  local hex = format("%04X", port)
  for _, file in ipairs({ dir .. "/tcp", dir .. "/tcp6" }) do
    local f = io.open(file, "rb")
    if f then
      for line in f:lines() do
        -- sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        local addr, lport, st, uid, inode =
          line:match("^%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)%s+%S+%s+%S+%s+%S+%s+(%d+)%s+%d+%s+(%d+)")
        if st == "0A" and lport == hex then fn(addr, tonumber(uid), inode) end
      end
      f:close()
    end
  end
end

--- The listening TCP sockets on `port` that a connection to 127.0.0.1 can
-- reach: a list of {uid =, inode =}.
function M.listeners(port)
  local out = {}
  each_listener("/proc/net", port, function(addr, uid, inode)
    if REACHABLE[addr] then out[#out + 1] = { uid = uid, inode = inode } end
  end)
  return out
end

-- Whether socket inode `inode` is open in a process of the PID namespace
-- of init_pid (unprivileged sandboxes: their processes are ours by uid,
-- so only the namespace tells them from any other process of ours).
local function in_namespace(inode, init_pid)
  local ns = core.util.readlink("/proc/" .. init_pid .. "/ns/pid")
  if not ns then return false end
  local want = "socket:[" .. inode .. "]"
  for _, pid in ipairs(core.util.readdir("/proc") or {}) do
    if pid:match("^%d+$") and core.util.readlink("/proc/" .. pid .. "/ns/pid") == ns then
      for _, fd in ipairs(core.util.readdir("/proc/" .. pid .. "/fd") or {}) do
        if core.util.readlink("/proc/" .. pid .. "/fd/" .. fd) == want then return true end
      end
    end
  end
  return false
end

--- How a sandbox with a network of its own serves `port`, from its
-- namespace's socket table (/proc/<init pid>/net/tcp, tcp6, read from the
-- host): "any" when a listener takes connections from outside its
-- loopback (the wildcard or another address), "loopback" when only its
-- loopback does, nil when nothing listens.
function M.sandbox_listener(init_pid, port)
  local best
  each_listener("/proc/" .. init_pid .. "/net", port, function(addr)
    local loop = addr == "0100007F" or addr == "00000000000000000000000001000000"
      or addr == "0000000000000000FFFF00000100007F" or addr:match("^..0000..$") and addr:sub(-2) == "7F"
    if loop then best = best or "loopback" else best = "any" end
  end)
  return best
end

--- Whether something of the sandbox listens on `port` (and nothing but it
-- would be reached). who: uid_first (the sandbox's first host uid, as
-- root) or init_pid (its init on the host, unprivileged). Returns true, or
-- false and why.
function M.owned(port, who)
  local ls = M.listeners(port)
  if #ls == 0 then return false, format("nothing listens on port %d", port) end
  for _, l in ipairs(ls) do
    local mine
    if who.uid_first then
      mine = l.uid >= who.uid_first and l.uid < who.uid_first + M.ID_COUNT
    elseif who.init_pid then
      mine = in_namespace(l.inode, who.init_pid)
    end
    if not mine then
      -- a listener of someone else's on the port: 127.0.0.1:port may well
      -- reach it rather than the sandbox's
      return false, format("port %d is served by a process outside the sandbox", port)
    end
  end
  return true
end

return M
