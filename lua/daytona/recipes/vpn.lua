--- VPN connections: a sandbox joins a private network with OpenVPN,
-- WireGuard or Tailscale, and the call returns once the tunnel is really up.
--
--     local vpn = require "daytona.recipes.vpn"
--     local t <close> = vpn.openvpn(sb, { config = ovpn_text })
--     print(t.interface, t.address)          -- "tun0", "10.8.0.2"
--     sb.process:exec("curl http://10.8.0.1/")
--   -- the scope's end takes the tunnel down (t:close() does it earlier)
--
-- Every function takes the sandbox first and an options table, and:
--
-- * installs the tools if the sandbox lacks them (Debian's `openvpn`,
--   `wireguard-tools`, `wireguard-go`, `iproute2` with `sudo apt-get`;
--   Tailscale from its vendor's install script, which needs the network).
--   `install = false` only checks. A tool that is missing and cannot be
--   installed raises `DaytonaError` (code `ENOTOOL`) naming it and saying why;
-- * writes the configuration and the secrets (keys, passwords, the auth
--   key) to files in a private directory of the sandbox (mode 0700, files
--   0600), never on a command line that `ps` shows;
-- * runs the daemon in a process session of its own, so its output is kept
--   (`Tunnel:logs()`), as root through `sudo`: a tunnel needs CAP_NET_ADMIN
--   over the sandbox's network namespace, which the local server's
--   sandboxes give their root (doc/sandbox.md);
-- * polls the real status (every 25 ms at first, then every 0.2 s) until
--   the deadline (`timeout`, 120 s by default, one deadline for installing
--   and connecting): the interface exists, is
--   up and has its address (OpenVPN: also its "Initialization Sequence
--   Completed"; Tailscale: `tailscale status --json` says `Running` with
--   the node's Tailscale IPs);
-- * raises `DaytonaError` (code `EVPN`, fields `tool` and `output`) with the
--   tool's own output when it exits first, and `DaytonaTimeoutError` (with
--   the output so far) when the deadline passes; either way nothing is left
--   running and the interface is gone;
-- * returns a `Tunnel`: `tool`, `interface`, `address` (the first IPv4
--   address without its prefix length, else the first IPv6 one),
--   `addresses` (every address of the interface, "10.8.0.2/24"), `netns`,
--   `close()` (also `<close>`) stops the daemon, removes the interface and
--   the private directory; `logs()` gives the daemon's output so far.
--
-- Common options: `install` (default true), `timeout` (seconds; 0: none),
-- `netns` (the name of a network namespace made in the sandbox with
-- `ip netns add`: the tunnel lives there instead of in the sandbox's own
-- namespace, so only programs started with `ip netns exec` use it).
--
-- The Tailscale recipe cannot be tried without Tailscale's coordination
-- server on the internet: the project's specs try its polling and its
-- error paths against a fake `tailscale`/`tailscaled` pair only
-- (spec/sdk/vpn_spec.lua); doc/guides/vpn.md says what that covers.
local check = require "daytona.check"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"
local wire = require "daytona.wire"
local common = require "daytona.recipes.common"

local setmetatable, type, ipairs, pairs, pcall, error, tostring, io =
  setmetatable, type, ipairs, pairs, pcall, error, tostring, io
local concat = table.concat
local q, tail, remaining, run, fail = common.q, common.tail, common.remaining, common.run, common.fail

local M = {}

local DEFAULT_TIMEOUT = 120
local POLL = 0.2

-- Debian's packages for the commands a tunnel needs; Tailscale is not
-- packaged by Debian: its own install script, as Daytona's VPN guide does.
local TAILSCALE_INSTALL = {
  probe = "https://tailscale.com/install.sh",
  script = "curl -fsSL https://tailscale.com/install.sh | sh",
}
local PACKAGES = {
  openvpn = "openvpn", wg = "wireguard-tools", ["wg-quick"] = "wireguard-tools",
  ["wireguard-go"] = "wireguard-go", ip = "iproute2",
  tailscale = TAILSCALE_INSTALL, tailscaled = TAILSCALE_INSTALL,
}

-- A Linux interface name (IFNAMSIZ - 1 characters) that is also a safe
-- file name: wg-quick names the interface after its config file.
local function ifname(v, f, arg)
  if v == nil then return nil end
  local s = check.string(v, f, arg)
  if #s > 15 or not s:match("^[%w_=+.-]+$") then
    check.argerror(f, arg, ("%q is not an interface name (at most 15 of A-Z a-z 0-9 _ = + . -)"):format(s))
  end
  return s
end

---------------------------------------------------------------------------
-- the handle
---------------------------------------------------------------------------

local Tunnel = {}
Tunnel.__index = Tunnel
Tunnel.__name = "daytona.recipes.vpn.Tunnel"

-- A command as root in the tunnel's namespace.
local function root(t, cmd)
  if t.netns then return "sudo -n ip netns exec " .. q(t.netns) .. " " .. cmd end
  return "sudo -n " .. cmd
end

-- The state of interface `name`: nil if it does not exist, else
-- `{ up = flag UP set, addresses = { "10.8.0.2/24", ... } }` (link-local
-- ones left out).
local function interface_state(t, name, deadline)
  local r = run(t.sandbox, root(t, "ip -j addr show dev " .. q(name)) .. " 2>/dev/null", deadline)
  if r.exit_code ~= 0 then return nil end
  local ok, v = pcall(wire.decode, r.result)
  if not ok or type(v) ~= "table" or type(v[1]) ~= "table" then return nil end
  local st = { up = false, addresses = {} }
  for _, flag in ipairs(v[1].flags or {}) do
    if flag == "UP" then st.up = true end
  end
  for _, a in ipairs(v[1].addr_info or {}) do
    if type(a) == "table" and a["local"] and a.scope ~= "link" then
      st.addresses[#st.addresses + 1] = ("%s/%s"):format(a["local"], tostring(math.tointeger(a.prefixlen) or a.prefixlen))
    end
  end
  return st
end

-- The first IPv4 address of a list ("10.8.0.2/24" -> "10.8.0.2"), else
-- the first one.
local function first_address(list)
  for _, a in ipairs(list) do
    if a:match("^%d+%.%d+%.%d+%.%d+") then return (a:gsub("/.*", "")) end
  end
  return list[1] and (list[1]:gsub("/.*", "")) or nil
end

-- Shell that stops the process whose pid is in `pidfile` (written by
-- `pid_exec`), if it is still the `comm` it was: SIGTERM, up to `grace`
-- seconds for it to clean up (OpenVPN and tailscaled remove their
-- interface on the way out), then SIGKILL.
local function stop_pid(pidfile, comm, grace)
  return ([[
if pid=$(sudo -n cat %s 2>/dev/null) && [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = %s ]; then
  sudo -n kill -TERM "$pid" 2>/dev/null
  n=0
  while [ -d /proc/$pid ] && [ "$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)" != Z ] && [ $n -lt %d ]; do
    sleep 0.05; n=$((n + 1))
  done
  sudo -n kill -KILL "$pid" 2>/dev/null
fi
]]):format(q(pidfile), q(comm:sub(1, 15)), grace * 20)
end

-- `sudo` then the command, with the pid of the command itself written to
-- `pidfile` first (sudo's own pid would not do: sudo stays the parent).
local function pid_exec(t, pidfile, argv)
  local inner = "echo $$ > " .. q(pidfile) .. "; exec " .. argv
  return root(t, "sh -c " .. q(inner))
end

--- Take the tunnel down: stops the daemon, removes the interface (and, for
-- WireGuard, what wg-quick set up with it: routes, DNS) and the private
-- directory with the keys. Safe to call more than once; also what a
-- `<close>` variable does at its scope's end.
-- @param opts optional `{ timeout = 30 }`
-- @return nothing
-- @raise DaytonaError (`EBUSY`) if the interface is still there afterwards
function Tunnel:close(opts)
  if self.closed then return end
  self.closed = true
  opts = check.options(opts, "close", check.set("timeout"))
  local timeout = check.timeout(opts.timeout, "close", 30)
  local sb = self.sandbox
  local script = { self._down and self._down(self) or "" }
  if self.interface then
    -- whatever the daemon left (persist-tun, a killed daemon)
    script[#script + 1] = root(self, "ip link del dev " .. q(self.interface)) .. " 2>/dev/null"
  end
  script[#script + 1] = "sudo -n rm -rf " .. q(self._dir)
  local ok, err = pcall(sb.process.exec, sb.process, concat(script, "\n") .. "\ntrue", { timeout = timeout })
  for _, p in ipairs(self._procs) do pcall(sb.process.delete_session, sb.process, p.session) end
  if not ok then error(err, 0) end
  if self.interface then
    local left = sb.process:exec(root(self, "ip link show dev " .. q(self.interface)) .. " >/dev/null 2>&1",
      { timeout = timeout })
    if left.exit_code == 0 then
      error(errors.DaytonaError(("%s: interface %s is still there after close"):format(self.tool, self.interface),
        { code = "EBUSY" }), 0)
    end
  end
end

--- The daemon's output so far (for Tailscale: tailscaled's, then that of
-- `tailscale up`).
-- @return string
function Tunnel:logs()
  return common.logs(self.sandbox, self._procs)
end

-- `local t <close> = vpn.openvpn(...)`: down at the scope's end. When the
-- scope ends by an error, a failure to take it down goes to stderr and the
-- original error goes on.
function Tunnel:__close(err)
  common.close_scope(self, err, "take the tunnel down")
end

function Tunnel:__tostring()
  return ("Tunnel{tool=%q, interface=%q, address=%q}"):format(self.tool, tostring(self.interface),
    tostring(self.address))
end

---------------------------------------------------------------------------
-- the common path
---------------------------------------------------------------------------

local COMMON = { "install", "timeout", "netns" }

local function option_set(extra)
  return common.option_set(COMMON, extra)
end

local function common_options(f, sb, opts, allowed)
  common.sandbox(f, sb)
  check.options(check.table(opts, f, "opts"), f, allowed, "opts")
  local c = {}
  c.install, c.timeout = common.install_timeout(f, opts, DEFAULT_TIMEOUT)
  c.netns = opts.netns ~= nil and check.string(opts.netns, f, "netns") or nil
  if c.netns and not c.netns:match("^[%w_.-]+$") then
    check.argerror(f, "netns", ("%q is not a network namespace name"):format(c.netns))
  end
  return c
end

-- The tunnel's private directory (0700, made by the sandbox's user) and
-- the handle; `netns` must exist.
local function new_tunnel(f, sb, c, tool, deadline)
  local script = "set -e; umask 077; d=$(mktemp -d /tmp/.dtlua-vpn.XXXXXX); echo \"dir $d\""
  if c.netns then
    script = ("[ -e /run/netns/%s ] || { echo \"no netns\"; exit 1; }; "):format(c.netns) .. script
  end
  local r = run(sb, script, deadline)
  if r.result:find("no netns", 1, true) then
    fail(f, ("there is no network namespace %q in the sandbox (make it with `sudo ip netns add %s`)")
      :format(c.netns, c.netns), { code = "EINVAL" })
  end
  local dir = r.result:match("dir ([^\n]+)")
  if r.exit_code ~= 0 or not dir then
    fail(f, "cannot make a private directory in /tmp: " .. tail(r.result, 3), { code = "EINVAL" })
  end
  return setmetatable({ sandbox = sb, tool = tool, netns = c.netns, closed = false, addresses = {},
    _dir = dir, _procs = {} }, Tunnel)
end

-- Upload `files` (name -> text) into the tunnel's directory, 0600.
local function put_files(t, files, deadline)
  local names = {}
  for name, text in pairs(files) do
    t.sandbox.fs:upload_file({ data = text }, t._dir .. "/" .. name, { timeout = remaining(deadline) })
    names[#names + 1] = q(t._dir .. "/" .. name)
  end
  if #names > 0 then run(t.sandbox, "chmod 600 " .. concat(names, " "), deadline) end
end

-- Start `command` in a session of the tunnel's; `daemon`: it must keep
-- running (its exit is a failure), else it must exit 0.
local function start(t, command, deadline, daemon, tool)
  local p = common.start(t.sandbox, "vpn", tool or t.tool, command, deadline)
  p.daemon = daemon
  t._procs[#t._procs + 1] = p
  return p
end

-- Poll until `ready(t)` returns true. A daemon that exits, or a command
-- that fails, raises EVPN with its output; the deadline DaytonaTimeoutError
-- with `why(t)` (what it was still waiting for) and the output so far.
local function wait_up(f, t, deadline, ready, why)
  local sb = t.sandbox
  -- a tunnel takes from a few ms (a server's) to seconds (a handshake over
  -- a slow link): poll often at first, then every POLL
  local pause = POLL / 8
  while true do
    for _, p in ipairs(t._procs) do
      if not p.done then
        local code = common.exit_code(sb, p)
        if code ~= nil and (p.daemon or code ~= 0) then
          local out = common.output(sb, p)
          fail(f, ("%s exited (code %s) before the tunnel was up: %s"):format(p.tool, tostring(code),
            tail(out, 8, "(no output)")), { code = "EVPN", tool = p.tool, output = out })
        end
        if code ~= nil then p.done = true end
      end
    end
    if ready(t) then return end
    if core.now() >= deadline then
      local out = t:logs()
      error(errors.DaytonaTimeoutError(("%s: the tunnel was not up in time (%s); the output so far: %s")
        :format(f, why(t), tail(out, 8, "(none)")), { code = "ETIMEDOUT", tool = t.tool, output = out }), 0)
    end
    scheduler.sleep(pause)
    pause = math.min(pause * 1.5, POLL)
  end
end

-- Set up a tunnel with `body(t)`, which starts it and waits; on any
-- failure take down what was started, then report the first error.
local function bring_up(f, sb, c, tool, body)
  local deadline = core.now() + c.timeout
  local t = new_tunnel(f, sb, c, tool, deadline)
  local ok, err = pcall(body, t, deadline)
  if not ok then
    pcall(t.close, t, { timeout = 30 })
    error(err, 0)
  end
  return t
end

-- Check the interface and fill in the tunnel's addresses: true when the
-- interface exists, is up and (`need_address`) has an address.
local function interface_up(t, deadline, need_address)
  local st = interface_state(t, t.interface, deadline)
  if not st or not st.up or (need_address and #st.addresses == 0) then return false end
  t.addresses = st.addresses
  t.address = first_address(st.addresses)
  return true
end

---------------------------------------------------------------------------
-- OpenVPN
---------------------------------------------------------------------------

local OPENVPN_OPTS = option_set{ "config", "username", "password", "interface", "options" }

-- Directives that would take openvpn out of its session or hide the
-- output the recipe reads.
local OPENVPN_REFUSED = { daemon = true, log = true, ["log-append"] = true, syslog = true }

--- Connect with OpenVPN (Debian's `openvpn`) from the text of a `.ovpn`
-- configuration, client or server: the recipe runs `openvpn --config` in the
-- foreground of a session and waits until OpenVPN reports "Initialization
-- Sequence Completed" and its interface is up with an address.
-- @param sandbox the sandbox
-- @param opts `{ config = (the .ovpn text, certificates and keys inline or
--   as paths in the sandbox), username =, password = (for
--   `auth-user-pass`: written to a 0600 file), interface = (a name such as
--   "tun5": OpenVPN's `--dev`; default: the config's, "tun0" or the next
--   free one), options = { extra openvpn arguments }, netns, install,
--   timeout }`. The config must not use `daemon`, `log`, `log-append` or
--   `syslog`: the recipe reads OpenVPN's output.
-- @return a `Tunnel`
-- @raise DaytonaValidationError for bad options; DaytonaError (`EVPN`) with
--   OpenVPN's output when it exits (a bad config, AUTH_FAILED), `ENOTOOL`;
--   DaytonaTimeoutError (a server that never answers: OpenVPN retries)
function M.openvpn(sandbox, opts)
  local f = "openvpn"
  local c = common_options(f, sandbox, opts, OPENVPN_OPTS)
  local config = check.string(opts.config, f, "config")
  local username = check.optstring(opts.username, f, "username")
  local password = check.optstring(opts.password, f, "password")
  local interface = ifname(opts.interface, f, "interface")
  local extra = opts.options and check.strlist(opts.options, f, "options") or {}
  if (username == nil) ~= (password == nil) then
    check.argerror(f, username and "password" or "username", "give both username and password, or neither")
  end
  local quiet = false
  for line in config:gmatch("[^\r\n]+") do
    local word = line:match("^%s*([%w-]+)")
    if word and OPENVPN_REFUSED[word] then
      check.argerror(f, "config", ("the config uses '%s': the recipe runs openvpn in the foreground and reads "
        .. "its output, remove that line"):format(word))
    end
    -- verb 0 would hide "Initialization Sequence Completed"
    if word == "verb" and tonumber(line:match("^%s*verb%s+(%d+)")) == 0 then quiet = true end
  end
  return bring_up(f, sandbox, c, "openvpn", function(t, deadline)
    common.ensure_tools(f, sandbox, { "openvpn", "ip" }, c.install, deadline, PACKAGES)
    local files = { ["config.ovpn"] = config }
    if username then files.auth = username .. "\n" .. password .. "\n" end
    put_files(t, files, deadline)
    -- verb 3 unless the config says otherwise (at least 1: the recipe reads it)
    local argv = { "openvpn", "--verb", "3", "--config", q(t._dir .. "/config.ovpn") }
    if quiet then argv[#argv + 1] = "--verb 1" end
    if username then argv[#argv + 1] = "--auth-user-pass " .. q(t._dir .. "/auth") end
    if interface then argv[#argv + 1] = "--dev " .. q(interface) end
    for _, o in ipairs(extra) do argv[#argv + 1] = q(o) end
    local pidfile = t._dir .. "/openvpn.pid"
    t._down = function() return stop_pid(pidfile, "openvpn", 10) end
    local p = start(t, "exec " .. pid_exec(t, pidfile, concat(argv, " ")) .. " 2>&1", deadline, true)
    wait_up(f, t, deadline, function()
      local out = common.output(sandbox, p)
      t.interface = t.interface or interface or out:match("TUN/TAP device (%S+) opened")
        or out:match("DCO device (%S+) opened")
      if not (t.interface and out:find("Initialization Sequence Completed", 1, true)) then return false end
      return interface_up(t, deadline, true)
    end, function()
      return t.interface and ("no \"Initialization Sequence Completed\", or %s not up with an address")
        :format(t.interface) or "no tun/tap device opened yet"
    end)
  end)
end

---------------------------------------------------------------------------
-- WireGuard
---------------------------------------------------------------------------

local WIREGUARD_OPTS = option_set{ "config", "interface" }

-- wg-quick's userspace implementation (WG_QUICK_USERSPACE_IMPLEMENTATION),
-- run as root by wg-quick with the interface's name: wireguard-go in the
-- foreground, in the background of this script, its pid and log where the
-- recipe finds them; it returns once the daemon's control socket is there
-- (wg-quick configures the interface through it next), or fails with the
-- daemon's output if it died first.
local USERSPACE = [[#!/bin/sh
dir=%s
wireguard-go -f "$1" >> "$dir/wireguard-go.log" 2>&1 &
pid=$!
echo $pid > "$dir/wireguard-go.pid"
while [ ! -S "/var/run/wireguard/$1.sock" ]; do
  state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then cat "$dir/wireguard-go.log" >&2; exit 1; fi
  sleep 0.01
done
]]

--- Connect with WireGuard from a wg-quick configuration (the text of a
-- `wg0.conf`: `[Interface]` with `PrivateKey`, `Address`, `ListenPort`,
-- `DNS`, `MTU`..., then `[Peer]` sections). `wg-quick up` sets it up; with
-- no WireGuard kernel module (as on this project's machines) wg-quick falls
-- back to the userspace `wireguard-go`, which the recipe keeps in the
-- session (its log is the session's output). Waits until the interface is
-- up with its address and `wg show` answers. WireGuard has no connection
-- state: a peer is reached when traffic flows (send a `ping` to it, or set
-- `PersistentKeepalive`).
-- @param sandbox the sandbox
-- @param opts `{ config = (the wg-quick text), interface = "wg0" (the
--   interface's name), netns, install, timeout }`. The config goes to
--   wg-quick as a 0600 file.
-- @return a `Tunnel`; `close()` runs `wg-quick down`
-- @raise DaytonaValidationError for bad options; DaytonaError (`EVPN`) with
--   wg-quick's output (a bad key, a bad address), `ENOTOOL`;
--   DaytonaTimeoutError
function M.wireguard(sandbox, opts)
  local f = "wireguard"
  local c = common_options(f, sandbox, opts, WIREGUARD_OPTS)
  local config = check.string(opts.config, f, "config")
  local interface = ifname(opts.interface, f, "interface") or "wg0"
  if not config:find("%[Interface%]") then
    check.argerror(f, "config", "a wg-quick configuration with an [Interface] section expected")
  end
  return bring_up(f, sandbox, c, "wireguard", function(t, deadline)
    common.ensure_tools(f, sandbox, { "wg", "wg-quick", "wireguard-go", "ip" }, c.install, deadline, PACKAGES, true)
    local dir = t._dir
    local conf = dir .. "/" .. interface .. ".conf"
    put_files(t, { [interface .. ".conf"] = config, userspace = USERSPACE:format(q(dir)) }, deadline)
    run(sandbox, "chmod 700 " .. q(dir .. "/userspace"), deadline)
    local exists = interface_state(t, interface, deadline)
    if exists then
      fail(f, ("interface %s already exists in the sandbox: choose another with `interface`"):format(interface),
        { code = "EBUSY" })
    end
    local pidfile = dir .. "/wireguard-go.pid"
    t._down = function()
      return root(t, "wg-quick down " .. q(conf)) .. " >/dev/null 2>&1\n" .. stop_pid(pidfile, "wireguard-go", 5)
    end
    -- wg-quick's output first; then, while the daemon lives, its log (with
    -- the kernel's WireGuard there is no daemon: the session just holds)
    local cmd = ([[
%s 2>&1 || exit $?
echo "dtlua: wg-quick up %s"
if pid=$(sudo -n cat %s 2>/dev/null); then
  exec sudo -n tail -n +1 -f --pid="$pid" %s
fi
exec sleep infinity]]):format(root(t, "env WG_QUICK_USERSPACE_IMPLEMENTATION=" .. q(dir .. "/userspace")
      .. " wg-quick up " .. q(conf)), interface, q(pidfile), q(dir .. "/wireguard-go.log"))
    local p = start(t, cmd, deadline, true)
    t.interface = interface
    wait_up(f, t, deadline, function()
      if not common.output(sandbox, p):find("dtlua: wg-quick up", 1, true) then return false end
      if not interface_up(t, deadline, false) then return false end
      return run(sandbox, root(t, "wg show " .. q(interface)) .. " >/dev/null 2>&1", deadline).exit_code == 0
    end, function()
      return ("wg-quick up has not finished, or %s is not up"):format(interface)
    end)
  end)
end

---------------------------------------------------------------------------
-- Tailscale
---------------------------------------------------------------------------

local TAILSCALE_OPTS = option_set{ "auth_key", "hostname", "interface", "up_options", "logout", "tailscale",
  "tailscaled" }

--- Join a tailnet with Tailscale from an auth key: starts `tailscaled` in a
-- session, runs `tailscale up --auth-key` in another, and polls
-- `tailscale status --json` until the node is `Running` with its
-- Tailscale IPs (and, unless `interface = "userspace-networking"`, the
-- interface is up with them). Tailscale is installed with its vendor's
-- script when missing (needs the network).
--
-- Tailscale's coordination server is on the internet, so this project's
-- specs cannot try a real login: they try the polling and the error paths
-- against a fake `tailscale` and `tailscaled` only (`tailscale` and
-- `tailscaled` options name other commands).
-- @param sandbox the sandbox
-- @param opts `{ auth_key = "tskey-auth-..." (goes to `tailscale up` as
--   `--auth-key=file:` a 0600 file), hostname = (the node's name),
--   interface = "tailscale0" (tailscaled's `--tun`), up_options = { extra
--   arguments of `tailscale up` }, logout = false (true: `tailscale logout`
--   on close, so the node leaves the tailnet), tailscale = "tailscale",
--   tailscaled = "tailscaled" (the commands), netns, install, timeout }`
-- @return a `Tunnel`; `addresses` are the node's Tailscale IPs
-- @raise DaytonaValidationError for bad options; DaytonaError (`EVPN`) with
--   the output of `tailscale up` (a rejected key) or tailscaled's when it
--   exits, `ENOTOOL`; DaytonaTimeoutError naming the last BackendState
--   (`NeedsMachineAuth`: the node waits for an admin's approval)
function M.tailscale(sandbox, opts)
  local f = "tailscale"
  local c = common_options(f, sandbox, opts, TAILSCALE_OPTS)
  local key = check.string(opts.auth_key, f, "auth_key")
  local hostname = check.optstring(opts.hostname, f, "hostname")
  local interface = opts.interface == "userspace-networking" and opts.interface
    or ifname(opts.interface, f, "interface") or "tailscale0"
  local up_options = opts.up_options and check.strlist(opts.up_options, f, "up_options") or {}
  local logout = check.optboolean(opts.logout, f, "logout") or false
  local ts = check.optstring(opts.tailscale, f, "tailscale") or "tailscale"
  local tsd = check.optstring(opts.tailscaled, f, "tailscaled") or "tailscaled"
  if hostname and not hostname:match("^[%w-]+$") then
    check.argerror(f, "hostname", ("%q is not a host name (letters, digits and '-')"):format(hostname))
  end
  return bring_up(f, sandbox, c, "tailscale", function(t, deadline)
    common.ensure_tools(f, sandbox, { ts, tsd, "ip" }, c.install, deadline, PACKAGES)
    local dir = t._dir
    put_files(t, { authkey = key }, deadline)
    local pidfile = dir .. "/tailscaled.pid"
    local status_cmd = root(t, q(ts) .. " status --json") .. " 2>&1"
    t._down = function()
      local s = logout and (root(t, q(ts) .. " logout") .. " >/dev/null 2>&1\n") or ""
      return s .. stop_pid(pidfile, tsd:match("[^/]*$"), 10)
    end
    start(t, "exec " .. pid_exec(t, pidfile, ("%s --state=/var/lib/tailscale/tailscaled.state --tun=%s")
      :format(q(tsd), q(interface))) .. " 2>&1", deadline, true, "tailscaled")
    if interface ~= "userspace-networking" then t.interface = interface end
    local state, up = "(no answer from tailscaled)", nil
    wait_up(f, t, deadline, function()
      local r = run(sandbox, status_cmd, deadline)
      local ok, st = pcall(wire.decode, r.result)
      if r.exit_code ~= 0 or not ok or type(st) ~= "table" then return false end
      state = tostring(st.BackendState)
      if not up then
        -- tailscaled answers: now log in
        local w = { root(t, q(ts) .. " up"), q("--auth-key=file:" .. dir .. "/authkey") }
        if hostname then w[#w + 1] = q("--hostname=" .. hostname) end
        for _, o in ipairs(up_options) do w[#w + 1] = q(o) end
        up = start(t, concat(w, " ") .. " 2>&1", deadline, false, "tailscale up")
        return false
      end
      local ips = type(st.Self) == "table" and st.Self.TailscaleIPs
      if st.BackendState ~= "Running" or type(ips) ~= "table" or #ips == 0 then return false end
      if t.interface then
        if not interface_up(t, deadline, true) then
          state = "Running, but " .. t.interface .. " is not up with an address"
          return false
        end
      end
      t.addresses = {}
      for _, ip in ipairs(ips) do t.addresses[#t.addresses + 1] = tostring(ip) end
      t.address = first_address(t.addresses)
      return true
    end, function()
      return "BackendState " .. state
    end)
  end)
end

---------------------------------------------------------------------------
-- keys made in a sandbox
---------------------------------------------------------------------------

-- A small CA with OpenSSL (P-256 keys, which OpenVPN's TLS mode takes with
-- `dh none`: ECDHE), a server certificate (extendedKeyUsage serverAuth,
-- what `remote-cert-tls server` checks), one client certificate per name,
-- and OpenVPN's own tls-crypt key; each file printed between markers.
local PKI = [[
set -e
umask 077
d=$(mktemp -d /tmp/.dtlua-pki.XXXXXX)
trap 'rm -rf "$d"' EXIT
cd "$d"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.crt -days %d -subj %s 2>&1
cert() {
  openssl req $ec -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>&1
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days %d -extfile "$1.ext" 2>&1
}
cert %s serverAuth
%s
openvpn --genkey tls-crypt tls-crypt.key
for f in *.crt *.key; do [ "$f" = ca.key ] || { echo "=== $f"; cat "$f"; }; done
echo "=== end"
]]

local KEYS_OPTS = check.set("server", "clients", "days", "install", "timeout")

--- Make the keys of an OpenVPN server and its clients in the sandbox, for
-- TLS mode: a CA (OpenSSL, P-256), a server certificate, a certificate per
-- client, and a tls-crypt key from `openvpn --genkey`. The files are made
-- in a private directory that is removed before the call returns; the
-- texts come back for the configs (inline `<ca>`, `<cert>`, `<key>`,
-- `<tls-crypt>` blocks).
-- @param sandbox the sandbox
-- @param opts optional `{ server = "server" (the server's CN), clients = {
--   "client" } (the clients' CNs), days = 30, install, timeout }`
-- @return `{ ca =, tls_crypt =, server = { cert =, key = }, clients = {
--   [name] = { cert =, key = } } }` (PEM texts)
-- @raise DaytonaValidationError; DaytonaError (`EKEYS`) with OpenSSL's
--   output; `ENOTOOL`
function M.openvpn_keys(sandbox, opts)
  local f = "openvpn_keys"
  common.sandbox(f, sandbox)
  opts = check.options(opts, f, KEYS_OPTS, "opts")
  local name = function(v, arg)
    if not v:match("^[%w][%w_.-]*$") then check.argerror(f, arg, ("%q is not a simple name"):format(v)) end
    return v
  end
  local server = name(check.optstring(opts.server, f, "server") or "server", "server")
  local clients = opts.clients and check.strlist(opts.clients, f, "clients") or { "client" }
  for _, c in ipairs(clients) do
    name(c, "clients")
    if c == server or c == "ca" or c == "tls-crypt" then check.argerror(f, "clients", ("%q is taken"):format(c)) end
  end
  local days = check.optinteger(opts.days, f, "days", 1, 36500) or 30
  local install = check.optboolean(opts.install, f, "install")
  local timeout = check.timeout(opts.timeout, f, DEFAULT_TIMEOUT)
  local deadline = core.now() + (timeout == 0 and math.huge or timeout)
  common.ensure_tools(f, sandbox, { "openssl", "openvpn" }, install ~= false, deadline, PACKAGES)
  local lines = {}
  for _, c in ipairs(clients) do lines[#lines + 1] = "cert " .. q(c) .. " clientAuth" end
  local r = run(sandbox, PKI:format(days, q("/CN=dtlua CA " .. server), days, q(server), concat(lines, "\n")), deadline)
  local files, cur = {}, nil
  for line in r.result:gmatch("[^\n]*") do
    local fname = line:match("^=== (%S+)$")
    if fname then
      cur = fname ~= "end" and {} or nil
      files[fname] = cur
    elseif cur and line ~= "" then
      cur[#cur + 1] = line
    end
  end
  for fname, t in pairs(files) do files[fname] = type(t) == "table" and concat(t, "\n") .. "\n" or nil end
  if r.exit_code ~= 0 or not r.result:find("\n=== end", 1, true) or not files["ca.crt"] then
    fail(f, "making the keys failed: " .. tail(r.result, 8, "(no output)"), { code = "EKEYS", output = r.result })
  end
  local keys = { ca = files["ca.crt"], tls_crypt = files["tls-crypt.key"],
    server = { cert = files[server .. ".crt"], key = files[server .. ".key"] }, clients = {} }
  for _, c in ipairs(clients) do keys.clients[c] = { cert = files[c .. ".crt"], key = files[c .. ".key"] } end
  return keys
end

--- A WireGuard key pair made in the sandbox (`wg genkey`, `wg pubkey`).
-- @param sandbox the sandbox
-- @param opts optional `{ install, timeout }`
-- @return `{ private_key =, public_key = }` (base64 texts)
-- @raise DaytonaError (`EKEYS`) with wg's output; `ENOTOOL`
function M.wireguard_keys(sandbox, opts)
  local f = "wireguard_keys"
  common.sandbox(f, sandbox)
  opts = check.options(opts, f, check.set("install", "timeout"), "opts")
  local install = check.optboolean(opts.install, f, "install")
  local timeout = check.timeout(opts.timeout, f, DEFAULT_TIMEOUT)
  local deadline = core.now() + (timeout == 0 and math.huge or timeout)
  common.ensure_tools(f, sandbox, { "wg" }, install ~= false, deadline, PACKAGES, true)
  local r = run(sandbox, "set -e; umask 077; k=$(wg genkey); echo \"private $k\"; echo \"public $(echo \"$k\" | wg pubkey)\"",
    deadline)
  local private, public = r.result:match("private (%S+)"), r.result:match("public (%S+)")
  if r.exit_code ~= 0 or not private or not public then
    fail(f, "wg genkey failed: " .. tail(r.result, 4, "(no output)"), { code = "EKEYS", output = r.result })
  end
  return { private_key = private, public_key = public }
end

M.Tunnel = Tunnel

return M
