-- Sandbox resources against a real dtlocal (lua/dtlocal/control/cgroups.lua,
-- doc/dtlocal.md "Resources"): where this machine lets dtlocal use
-- cgroups, a started sandbox's processes are in groups carrying its cpu,
-- memory and pids limits (read from the host), a process allocating beyond
-- the memory limit is killed, resize changes the limits live, stop, delete
-- and shutdown remove the groups; where it does not, the server's report
-- line says so. A networkAllowList is recorded as root (its enforcement:
-- spec/dtlocal/network_spec.lua) and refused unprivileged, where the
-- start line says so. Also the launcher's own --cgroup.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local cgroups = require "dtlocal.control.cgroups"

local GIB = 1024 * 1024 * 1024

local srv
local info = cgroups.detect()   -- the server runs in our cgroups: it finds the same
local ENFORCED = info.enforced.cpu and info.enforced.memory and info.enforced.pids

local read = helper.read_file

local function call(method, path, body, base) return dtlocal.request(srv, method, path, body, { base = base }) end
local function ok(want, method, path, body) return dtlocal.expect(srv, want, method, path, body) end
local function exec(id, command, timeout) return dtlocal.exec(srv, id, command, timeout or 30) end

-- The host pids of a started sandbox: its launcher and its init (.lock).
local function pids_of(id)
  local lock = read(srv.state_dir .. "/sandboxes/" .. id .. "/.lock") or ""
  local launcher, init = lock:match("^(%d+) %d+ (%d+) %d+")
  assert(launcher, "no running sandbox " .. id .. " (.lock: " .. lock .. ")")
  return launcher, init
end

-- controller -> host directory of process pid's cgroup
local function dirs_of(pid)
  local loc = cgroups.locate(read("/proc/" .. pid .. "/cgroup"), read("/proc/self/mountinfo"))
  local out = {}
  for _, c in ipairs(cgroups.CONTROLLERS) do
    local h = info.hier[c]
    if h and h.version == 2 then out[c] = loc.v2 and loc.v2.dir
    elseif h then out[c] = loc.v1[c] and loc.v1[c].dir end
  end
  return out
end

-- The group directories sandbox `id` gets from this server, per controller.
local function group_dirs(id)
  local out = {}
  for _, c in ipairs(cgroups.CONTROLLERS) do
    out[c] = info.hier[c].dir .. "/dtlocal-" .. srv.pid .. "/" .. id
  end
  return out
end

local function trim(s) return ((s or ""):gsub("%s+$", "")) end

-- The limits written in a sandbox's groups: cpu (cores), memory (GiB), pids.
local function limits(dirs)
  local cpu, mem
  if info.hier.cpu.version == 2 then
    local quota, period = trim(read(dirs.cpu .. "/cpu.max")):match("^(%d+) (%d+)$")
    cpu = tonumber(quota) / tonumber(period)
  else
    cpu = tonumber(trim(read(dirs.cpu .. "/cpu.cfs_quota_us"))) / tonumber(trim(read(dirs.cpu .. "/cpu.cfs_period_us")))
  end
  if info.hier.memory.version == 2 then
    mem = tonumber(trim(read(dirs.memory .. "/memory.max")))
  else
    mem = tonumber(trim(read(dirs.memory .. "/memory.limit_in_bytes")))
    local sw = read(dirs.memory .. "/memory.memsw.limit_in_bytes")
    if sw then assert.are.equal(mem, tonumber(trim(sw)), "memory+swap is the memory limit") end
  end
  return { cpu = cpu, memory = mem / GIB, pids = tonumber(trim(read(dirs.pids .. "/pids.max"))) }
end

local function gone(dirs)
  for _, d in pairs(dirs) do
    if core.util.stat(d) then return false end
  end
  return true
end

describe("dtlocal resources", function()
  setup(function()
    srv = dtlocal.start()
  end)

  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  it("says at start which resources are enforced, as this machine allows", function()
    local line = srv.log():match("dtlocal: resources: ([^\n]*)")
    assert.is_string(line, srv.log())
    assert.are.equal(cgroups.report(info), line)
    local said = line:match("^([^;]*) enforced %(")            -- the enforced ones lead
    if said and said:sub(-4) == " not" then said = nil end      -- none is
    for _, r in ipairs({ "cpu", "memory", "pids" }) do
      local listed = said ~= nil and (", " .. said .. ","):find(", " .. r .. ",", 1, true) ~= nil
      assert.are.equal(info.enforced[r], listed, r .. ": " .. line)
      if not info.enforced[r] then
        -- the reason is on the line
        assert.is_truthy(line:find(info.why[r], 1, true), line)
      end
    end
    assert.is_truthy(line:find("disk not enforced (" .. cgroups.DISK_WHY .. ")", 1, true), line)
    assert.is_false(info.enforced.disk)
  end)

  it("puts every process of a started sandbox in groups below the server's, with its limits", function()
    if not ENFORCED then pending("not enforced here: " .. cgroups.report(info)) return end
    helper.run(function()
      local s = ok(200, "POST", "/sandbox", {})
      local launcher, init = pids_of(s.id)
      local want = group_dirs(s.id)
      -- the launcher, the sandbox's init and a process started inside
      local inner = exec(s.id, "sleep 30 >/dev/null 2>&1 & echo $!")
      assert.is_truthy(inner:match("%d+"))
      for _, pid in ipairs({ launcher, init }) do
        assert.are.same(want, dirs_of(pid))
      end
      local n = 0
      for line in (read(want.memory .. "/cgroup.procs") or ""):gmatch("%d+") do n = n + 1 end
      assert.is_true(n >= 4, "launcher, init, the daemon and sleep are in the memory group")
      -- nested under the server's own cgroup (the spec's, here)
      local own = dirs_of(srv.pid)
      for c, d in pairs(want) do
        assert.are.equal(own[c] .. "/dtlocal-" .. srv.pid .. "/" .. s.id, d)
      end
      assert.are.same({ cpu = 1, memory = 1, pids = cgroups.PIDS_MAX }, limits(want))
      ok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return gone(want) end)
    end)
  end)

  it("kills a process that allocates beyond the memory limit, and the sandbox lives on", function()
    if not info.enforced.memory then pending("memory not enforced here: " .. cgroups.report(info)) return end
    helper.run(function()
      local s = ok(200, "POST", "/sandbox", {})   -- Daytona's default: 1 GiB
      assert.are.equal(1, s.memory)
      -- 1.5 GiB of touched pages in a 1 GiB sandbox
      local out, code = exec(s.id, "python3 -c 'b = bytearray(1536 * 1024 * 1024); print(len(b))'", 60)
      assert.is_true(code == 137 or out:find("MemoryError", 1, true) ~= nil,
        ("exit %s: %s"):format(tostring(code), out))
      assert.is_falsy(out:find(tostring(1536 * 1024 * 1024), 1, true))
      -- the daemon is not the victim; 0.5 GiB fits
      local out2, code2 = exec(s.id, "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'", 60)
      assert.are.equal(0, code2, out2)
      assert.are.equal(tostring(512 * 1024 * 1024) .. "\n", out2)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("applies the default resources and a live resize, and removes the groups on stop and delete", function()
    if not ENFORCED then pending("not enforced here: " .. cgroups.report(info)) return end
    helper.run(function()
      local s = ok(200, "POST", "/sandbox", {})
      local dirs = group_dirs(s.id)
      assert.are.same({ cpu = 1, memory = 1, pids = cgroups.PIDS_MAX }, limits(dirs))
      local r = ok(200, "POST", "/sandbox/" .. s.id .. "/resize", { cpu = 3, memory = 3 })
      assert.are.equal(3, r.cpu)
      assert.are.same({ cpu = 3, memory = 3, pids = cgroups.PIDS_MAX }, limits(dirs))
      ok(200, "POST", "/sandbox/" .. s.id .. "/stop")
      assert.is_true(gone(dirs), "stop removes the groups")
      -- stopped: recorded now, applied at start
      ok(200, "POST", "/sandbox/" .. s.id .. "/resize", { memory = 4 })
      assert.is_true(gone(dirs))
      ok(200, "POST", "/sandbox/" .. s.id .. "/start")
      assert.are.same({ cpu = 3, memory = 4, pids = cgroups.PIDS_MAX }, limits(dirs))
      ok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return gone(dirs) end)
    end)
  end)

  it("says why nothing is enforced when it may not write the cgroups", function()
    -- for real: the server run as nobody (as root), or as ourselves (not root,
    -- where the first test already met this branch unless cgroups are delegated)
    if core.util.getuid() ~= 0 or not os.execute("command -v setpriv >/dev/null 2>&1") then
      pending("needs root and setpriv to run a server as nobody")
      return
    end
    helper.run(function()
      local process = require "daytona.runtime.process"
      local dir = helper.tmpdir()
      assert(core.util.chmod(dir, 457))                 -- 0711: nobody passes through
      local state = dir .. "/nobody"
      assert(core.util.mkdir(state, 448))
      assert(core.util.chown(state, 65534, 65534))
      local p <close> = process.spawn({ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
        dtlocal.binary(), "serve", "--port", "0", "--state", state .. "/state", "--warm", "0" },
        { stdin = "null", stdout = "pipe", stderr = "stdout", env = { HOME = state, XDG_STATE_HOME = state,
          PATH = os.getenv("PATH") } })
      local line, net
      for l in p:lines("stdout", 20) do
        net = net or l:match("dtlocal: sandbox networks: (.*)$")
        line = l:match("^dtlocal: resources: (.*)$")
        if line then break end
      end
      -- not root: no networks of their own, so no allow list either
      assert.is_truthy((net or ""):find("allow lists are refused", 1, true), tostring(net))
      p:kill("TERM")
      p:wait(20)
      assert.is_string(line, "no resources line")
      for _, r in ipairs({ "cpu", "memory", "pids" }) do
        assert.is_truthy(line:find(r .. " not enforced (", 1, true), line)
      end
      assert.is_falsy(line:find(" enforced (cgroup", 1, true), line)
      assert.is_truthy(line:find("not writable by dtlocal (uid 65534)", 1, true), line)
    end)
  end)

  it("records a networkAllowList as root, refuses a malformed one with 400 naming the field", function()
    if core.util.getuid() ~= 0 then pending("as root only (unprivileged: refused, see below)") return end
    helper.run(function()
      local st, b = call("POST", "/sandbox", { networkAllowList = "10.0.0.0/8,nonsense" })
      assert.are.equal(400, st)
      assert.is_truthy(b.message:find("networkAllowList", 1, true), b.message)
      local s = ok(200, "POST", "/sandbox", { networkAllowList = "10.0.0.0/8" })
      assert.are.equal("10.0.0.0/8", ok(200, "GET", "/sandbox/" .. s.id).networkAllowList)
      ok(200, "POST", "/sandbox/" .. s.id .. "/network-settings", { networkAllowList = "" })
      local kept = ok(200, "GET", "/sandbox/" .. s.id).networkAllowList
      assert.is_true(kept == nil or kept == "", tostring(kept))
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("removes the server's groups at shutdown", function()
    if not ENFORCED then pending("not enforced here: " .. cgroups.report(info)) return end
    local old = srv.pid
    local tops = {}
    for _, c in ipairs(cgroups.CONTROLLERS) do tops[c] = info.hier[c].dir .. "/dtlocal-" .. old end
    assert.is_false(gone(tops))
    srv.restart()
    assert.are_not.equal(old, srv.pid)
    assert.is_true(gone(tops), "the groups of the stopped server are gone")
  end)
end)

describe("dtlocal.control.cgroups", function()
  -- the layouts CI machines may have; this machine's own is covered above
  it("finds its own cgroups in v2, v1 and container layouts", function()
    -- cgroup v2 only (systemd's unified layout)
    local loc = cgroups.locate("0::/system.slice/dtlocal.service\n",
      "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n")
    assert.are.same({ dir = "/sys/fs/cgroup/system.slice/dtlocal.service",
                      path = "/system.slice/dtlocal.service", ro = false }, loc.v2)
    assert.are.same({}, loc.v1)
    -- a container with its own cgroup namespace, /sys/fs/cgroup read-only
    loc = cgroups.locate("0::/\n", "612 600 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw\n")
    assert.are.same({ dir = "/sys/fs/cgroup", path = "/", ro = true }, loc.v2)
    -- cgroup v1 with cpu and cpuacct co-mounted, the v2 hierarchy empty
    -- beside it, and a mount whose root is our own group (a container
    -- without a cgroup namespace)
    loc = cgroups.locate(table.concat({
      "12:pids:/docker/abc", "4:memory:/docker/abc", "3:cpu,cpuacct:/docker/abc",
      "1:name=systemd:/docker/abc", "0::/docker/abc", "" }, "\n"), table.concat({
      "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
      "41 30 0:36 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory",
      "42 30 0:37 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids",
      "43 30 0:38 /docker/abc /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw",
      "44 30 0:39 /other /mnt/with\\040space rw - cgroup cgroup rw,memory", "" }, "\n"))
    assert.are.equal("/sys/fs/cgroup/cpu,cpuacct", loc.v1.cpu.dir)
    assert.are.equal("/sys/fs/cgroup/memory", loc.v1.memory.dir)
    assert.are.equal("/sys/fs/cgroup/pids/docker/abc", loc.v1.pids.dir)
    assert.are.equal("/sys/fs/cgroup/unified", loc.v2.dir)
    -- octal escapes of mount points
    local m = cgroups.parse_mountinfo("44 30 0:39 / /mnt/with\\040space rw - cgroup cgroup rw,memory\n")
    assert.are.equal("/mnt/with space", m[1].mountpoint)
  end)

  it("reports what is not enforced with the reason, one reason once", function()
    assert.are.equal("cpu, memory, pids not enforced (no cgroup here); disk not enforced (d)",
      cgroups.report{ enforced = {}, why = { cpu = "no cgroup here", memory = "no cgroup here",
                                              pids = "no cgroup here", disk = "d" } })
    assert.are.equal("cpu, pids enforced (cgroup v2); memory not enforced (m); disk not enforced (d)",
      cgroups.report{ version = 2, enforced = { cpu = true, pids = true },
                      why = { memory = "m", disk = "d" } })
  end)
end)

describe("dtlua-sandbox --cgroup", function()
  local LAUNCHER = (os.getenv("DTLUA_BUILD") or "build") .. "/libexec/dtlua/dtlua-sandbox"

  local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

  -- run the launcher with `args`; returns its exit code and output
  local function launch(dir, args, script)
    local cmd = { q(LAUNCHER), "run", "--root-dir", q(dir .. "/sb"), "--hostname", "cg",
                  "--user", "root" }
    if core.util.getuid() == 0 then cmd[#cmd + 1] = "--uid-base 3900000000" end
    for _, a in ipairs(args) do cmd[#cmd + 1] = q(a) end
    cmd[#cmd + 1] = "-- sh -c " .. q(script or "true")
    local p = io.popen(table.concat(cmd, " ") .. " 2>&1 </dev/null")
    local out = p:read("a")
    local _, _, code = p:close()
    return code, out
  end

  after_each(function()
    helper.cleanup()
  end)

  it("fails with 72 naming the cgroup when it cannot join it", function()
    local dir = helper.tmpdir()
    local code, out = launch(dir, { "--cgroup", dir .. "/missing" })
    assert.are.equal(72, code, out)
    assert.is_truthy(out:find("join cgroup " .. dir .. "/missing", 1, true), out)
    -- a directory that is not a cgroup is refused, not written to
    assert(io.open(dir .. "/cgroup.procs", "w")):close()
    code, out = launch(dir, { "--cgroup", dir })
    assert.are.equal(72, code, out)
    assert.is_truthy(out:find("not a cgroup file system", 1, true), out)
    assert.are.equal("", read(dir .. "/cgroup.procs"))
    code, out = launch(dir, { "--cgroup", "relative/dir" })
    assert.are.equal(64, code, out)
    assert.is_truthy(out:find("--cgroup", 1, true), out)
  end)

  it("joins its cgroups before anything runs: the whole sandbox is inside", function()
    if not info.enforced.pids then pending("no writable pids cgroup here: " .. cgroups.report(info)) return end
    local group = info.hier.pids.dir .. "/dtlua-spec-" .. core.util.getpid()
    if not group:match("^/sys/fs/cgroup/[^/]+/") then pending("the pids hierarchy is not under /sys/fs/cgroup") return end
    local dir = helper.tmpdir()
    assert(core.util.mkdir(group, 493))
    finally(function()
      os.execute(q(LAUNCHER) .. " rm --root-dir " .. q(dir .. "/sb") .. " >/dev/null 2>&1")
      os.remove(group)
    end)
    -- the group counts the launcher (outside), init, sh and cat; inside,
    -- where /sys/fs/cgroup shows the sandbox's own groups only, its member
    -- list shows the sandbox's own pids, init's is 1
    local hier = group:match("^/sys/fs/cgroup/([^/]+)/")
    local code, out = launch(dir, { "--cgroup", group },
      ("cat /sys/fs/cgroup/%s/pids.current; tr '\\n' ' ' < /sys/fs/cgroup/%s/cgroup.procs"):format(hier, hier))
    assert.are.equal(0, code, out)
    local current, members = out:match("^(%d+)\n(.*)$")
    assert.is_truthy(current, out)
    assert.is_true(tonumber(current) >= 4, out)
    assert.is_truthy((" " .. members):find(" 1 ", 1, true), out)
  end)
end)
