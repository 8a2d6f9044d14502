-- dtlua-sandbox (csrc/sandbox_launcher.c): the local server's namespace
-- launcher and init.  Every isolation promise of doc/sandbox.md gets a
-- test here; sandboxes live in helper.tmpdir() dirs and are removed after.
-- The launcher is driven with os.execute/io.popen; a FIFO carries its
-- --ready-fd line, so readiness is a blocking read, never a sleep.
local helper = require "support.helper"

local BUILD = os.getenv("DTLUA_BUILD") or "build"
local LAUNCHER = BUILD .. "/libexec/dtlua/dtlua-sandbox"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local read_file = helper.read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- Run a host shell command; returns its exit code and output (stdout+stderr).
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1", "r")
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out
end

local function trim(s) return ((s or ""):gsub("%s+$", "")) end

local IS_ROOT = trim(select(2, sh("id -u"))) == "0"
local HAVE_LAUNCHER = exists(LAUNCHER)
local PY = exists("/usr/bin/python3") and "/usr/bin/python3" or "python3"
local HAVE_PY = sh("command -v " .. PY) == 0

-- Sandbox ids: a range per sandbox, far above any real user's, varied per
-- run so that two concurrent runs of this spec rarely meet.
local BASE0 = 3000000000 + (os.time() % 256) * 64 * 65536
local nsandbox = 0

-- A sandbox description: its directory, host uid base and hostname.
-- opts.unpriv: run the launcher as nobody (when we are root) or as
-- ourselves (when we are not), i.e. in the unprivileged mode.
local function sandbox(parent, name, opts)
  opts = opts or {}
  nsandbox = nsandbox + 1
  local sb = { dir = parent .. "/" .. name, host = name, base = BASE0 + nsandbox * 65536,
               unpriv = opts.unpriv or not IS_ROOT, parent = parent }
  if sb.unpriv and IS_ROOT then
    -- nobody must reach its sandbox dir: a traversable parent it owns
    assert(os.execute("chmod 0711 " .. q(parent)))
    sb.dir = parent .. "/nobody/" .. name
    os.execute("mkdir -p " .. q(parent .. "/nobody") .. " && chown 65534:65534 " .. q(parent .. "/nobody"))
  end
  return sb
end

local function prefix(sb)
  if sb.unpriv and IS_ROOT then return "setpriv --reuid=65534 --regid=65534 --clear-groups " end
  return ""
end

local function launcher_cmd(sb, program, opts)
  opts = opts or {}
  local args = { LAUNCHER, "run", "--root-dir", sb.dir, "--hostname", sb.host, "--ready-fd", "3" }
  if not sb.unpriv then
    args[#args + 1] = "--uid-base"
    args[#args + 1] = tostring(sb.base)
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  args[#args + 1] = "--"
  for _, a in ipairs(program) do args[#args + 1] = a end
  local parts = {}
  for i, a in ipairs(args) do parts[i] = q(a) end
  return prefix(sb) .. table.concat(parts, " ")
end

local outn = 0
local function outfiles(sb)
  outn = outn + 1
  local base = sb.parent .. "/out" .. outn
  return base .. ".stdout", base .. ".stderr", base .. ".ready"
end

-- Run `script` (sh -c) in the sandbox to completion.
-- Returns { code, out, err, ready } (ready: the --ready-fd line).
local function run(sb, script, opts)
  opts = opts or {}
  local o, e, r = outfiles(sb)
  local program = opts.program or { opts.shell or "sh", "-c", script }
  local cmd = ("%s%s >%s 2>%s 3>%s </dev/null"):format(opts.env_prefix or "",
    launcher_cmd(sb, program, opts), q(o), q(e), q(r))
  local _, _, code = os.execute(cmd)
  return { code = code, out = read_file(o) or "", err = read_file(e) or "",
           ready = trim(read_file(r)) }
end

-- Start `script` in the sandbox in the background and wait for its ready
-- line.  Returns a handle: h.pid (the launcher), h.ready, h.init (the
-- sandbox init's host pid), h:finish() -> code, out, err (waits).
local function start(sb, script, opts)
  opts = opts or {}
  local o, e, r = outfiles(sb)
  local codef = o .. ".code"
  assert(os.execute("mkfifo " .. q(r)))
  -- a watchdog bounds the whole run; it is not part of any readiness test
  local inner = ("%s >%s 2>%s 3>%s </dev/null & pid=$!; echo $pid; " ..
                 "( trap 'kill $s 2>/dev/null; exit 0' TERM; sleep 60 & s=$!; wait $s; kill -9 $pid ) & wd=$!; " ..
                 "wait $pid; echo $? >%s; kill $wd 2>/dev/null; wait $wd")
    :format(launcher_cmd(sb, opts.program or { "sh", "-c", script }, opts), q(o), q(e), q(r), q(codef))
  local p = io.popen("sh -c " .. q(inner) .. " 2>/dev/null", "r")
  local h = { pid = tonumber(p:read("l")), stdout = o }
  local f = assert(io.open(r, "r"))  -- blocks until the launcher side opens it
  h.ready = f:read("l") or ""
  f:close()
  h.init = tonumber(h.ready:match("^ready (%d+)$"))
  function h.finish()
    p:close()
    return tonumber(trim(read_file(codef))), read_file(o) or "", read_file(e) or ""
  end
  return h
end

local function rm_sandbox(sb)
  local code, out = sh(prefix(sb) .. q(LAUNCHER) .. " rm --root-dir " .. q(sb.dir))
  return code, out
end

-- One probe run decides whether this machine can run sandboxes at all.
local PROBE_ERR
do
  if not HAVE_LAUNCHER then
    PROBE_ERR = LAUNCHER .. " is not built (make)"
  else
    local dir = helper.tmpdir()
    local sb = sandbox(dir, "probe")
    local r = run(sb, "exit 0", { args = { "--user", "root" } })
    if r.code ~= 0 then PROBE_ERR = "cannot start a sandbox here: " .. trim(r.err) end
    rm_sandbox(sb)
    helper.cleanup()
  end
end

local function need(what, cond, why)
  if PROBE_ERR then pending(what .. ": " .. PROBE_ERR) return false end
  if cond == false then pending(what .. ": " .. why) return false end
  return true
end

describe("dtlua-sandbox", function()
  local dir
  local made

  before_each(function()
    dir = helper.tmpdir()
    made = {}
  end)

  after_each(function()
    for _, sb in ipairs(made) do rm_sandbox(sb) end
    helper.cleanup()
  end)

  local function new(name, opts)
    local sb = sandbox(dir, name, opts)
    made[#made + 1] = sb
    return sb
  end

  describe("command line", function()
    it("rejects bad arguments with exit code 64 and names the problem", function()
      if not need("command line", HAVE_LAUNCHER, "launcher not built") then return end
      local code, out = sh(q(LAUNCHER) .. " run --hostname x -- true")
      assert.equal(64, code)
      assert.matches("--root%-dir is required", out)
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname 'bad host' -- true")
      assert.equal(64, code)
      assert.matches("--hostname", out)
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --env 1X=2 -- true")
      assert.equal(64, code)
      assert.matches("--env", out)
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --ro-bind /tmp rel -- true")
      assert.equal(64, code)
      assert.matches("destination", out)
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h")
      assert.equal(64, code)
      assert.matches("no program", out)
      code, out = sh(q(LAUNCHER) .. " frobnicate")
      assert.equal(64, code)
      assert.matches("unknown command", out)
      -- --env-file: a regular file of NAME=VALUE entries, NUL-separated
      local bad = dir .. "/bad.env"
      write_file(bad, "GOOD=1\0no equals sign\0")
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --env-file " .. q(bad) .. " -- true")
      assert.equal(64, code)
      assert.matches("%-%-env%-file: .*expected NAME=VALUE", out)
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --env-file " .. q(dir .. "/none") .. " -- true")
      assert.equal(64, code)
      assert.matches("%-%-env%-file: open", out)
      assert(os.execute("mkfifo " .. q(dir .. "/fifo.env")))
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --env-file " .. q(dir .. "/fifo.env") .. " -- true")
      assert.equal(64, code)
      assert.matches("not a regular file", out)
    end)

    it("as root, requires a --uid-base that maps no host user", function()
      if not need("uid base", IS_ROOT, "needs root") then return end
      local code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h -- true")
      assert.equal(64, code)
      assert.matches("--uid%-base is required", out)
      code, out = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --uid-base 1000 -- true")
      assert.equal(64, code)
      assert.matches("--uid%-base: must be in", out)
    end)
  end)

  describe("a started sandbox", function()
    it("runs the program as daytona in /home/daytona under its hostname, reports ready and its status", function()
      if not need("run") then return end
      local sb = new("basic")
      local r = run(sb, "id -un; id -u; id -g; pwd; hostname; echo \"$HOME\"; exit 7",
                    { args = sb.unpriv and { "--user", "root" } or nil })
      assert.equal(7, r.code, r.err)
      assert.matches("^ready %d+$", r.ready)
      if sb.unpriv then
        assert.equal("root\n0\n0\n/root\nbasic\n/root\n", r.out)
      else
        assert.equal("daytona\n1000\n1000\n/home/daytona\nbasic\n/home/daytona\n", r.out)
      end
    end)

    it("passes only its own environment, --env and --env-file", function()
      if not need("env") then return end
      local sb = new("env")
      local envf = dir .. "/envfile"
      write_file(envf, "SECRET=s3cr3t\0SPACED=a b\0")
      local o, e, rd = outfiles(sb)
      local cmd = ("LEAKY_HOST_VAR=1 %s >%s 2>%s 3>%s </dev/null"):format(
        launcher_cmd(sb, { "sh", "-c", "env | sort" },
          { args = { "--user", "root", "--env", "A=1", "--env", "PATH=/usr/bin:/bin", "--env-file", envf } }),
        q(o), q(e), q(rd))
      local _, _, code = os.execute(cmd)
      local out = read_file(o)
      assert.equal(0, code, read_file(e))
      assert.matches("\nA=1\n", "\n" .. out)
      assert.matches("\nSECRET=s3cr3t\n", "\n" .. out)
      assert.matches("\nSPACED=a b\n", "\n" .. out)
      assert.matches("\nPATH=/usr/bin:/bin\n", "\n" .. out)
      assert.matches("\nHOSTNAME=env\n", "\n" .. out)
      assert.not_matches("LEAKY_HOST_VAR", out)
    end)

    it("fails with 127 and an error line when the program does not exist", function()
      if not need("not found") then return end
      local sb = new("nf")
      local r = run(sb, nil, { program = { "/no/such/program" }, args = { "--user", "root" } })
      assert.equal(127, r.code)
      assert.matches("^error 127 execute /no/such/program", r.ready)
      assert.matches("No such file or directory", r.err)
    end)

    it("fails with 67 naming the mount when a bind source is missing", function()
      if not need("bad bind") then return end
      local sb = new("badbind")
      local r = run(sb, "true", { args = { "--user", "root", "--ro-bind", dir .. "/missing", "/mnt/x" } })
      assert.equal(67, r.code)
      assert.matches("^error 67 bind /mnt/x %(from " .. dir:gsub("%p", "%%%0") .. "/missing", r.ready)
    end)

    it("is busy (70) while running: no second start, no rm", function()
      if not need("busy") then return end
      local sb = new("busy")
      local h = start(sb, "exec sleep 1000", { args = { "--user", "root" } })
      assert.matches("^ready", h.ready)
      local r = run(sb, "true", { args = { "--user", "root" } })
      assert.equal(70, r.code)
      assert.matches("is running", r.err)
      local code = rm_sandbox(sb)
      assert.equal(70, code)
      assert.is_true(os.execute("kill -TERM " .. h.pid))
      local c = h.finish()
      assert.equal(128 + 15, c)
    end)
  end)

  describe("init", function()
    it("forwards SIGTERM to the program and exits with its status", function()
      if not need("signals") then return end
      local sb = new("sig")
      local h = start(sb, "trap 'echo got-term; exit 42' TERM; echo started; while :; do sleep 0.05; done",
                      { args = { "--user", "root" } })
      assert.matches("^ready %d+$", h.ready)
      -- "ready" is the launcher's: the shell sets its trap after that, so
      -- TERM waits for the line the shell prints once the trap is set
      helper.eventually(function()
        local so_far = helper.read_file(h.stdout)
        return so_far and so_far:find("started", 1, true)
      end, 10)
      assert.is_true(os.execute("kill -TERM " .. h.pid))
      local code, out = h.finish()
      assert.equal(42, code)
      assert.matches("got%-term", out)
    end)

    it("reaps orphaned zombies", function()
      if not need("reaping") then return end
      local sb = new("reap")
      -- orphans re-parented to PID 1 must not stay zombies; poll (bounded)
      local r = run(sb, [[
        for i in 1 2 3 4 5; do (true &); done
        n=0
        while [ $n -lt 500 ]; do
          z=$(ps -eo stat= | grep -c '^Z')
          [ "$z" = 0 ] && { echo reaped; exit 0; }
          n=$((n+1))
        done
        echo "zombies left: $z"; exit 1]], { args = { "--user", "root" } })
      assert.equal(0, r.code, r.out .. r.err)
      assert.equal("reaped\n", r.out)
    end)

    it("ends every process of the sandbox when the program exits", function()
      if not need("stop") then return end
      local sb = new("stop")
      -- a daemon detached from the program must not outlive the sandbox
      local r = run(sb, "setsid sleep 1000.25 >/dev/null 2>&1 < /dev/null & echo $!", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      if not sb.unpriv then
        local code, out = sh("ps -o pid= -u " .. sb.base)
        assert.equal("", trim(out), "processes left under the sandbox's uid")
        assert.equal(1, code)
      else
        -- (the [2] keeps pgrep from matching its own shell)
        local _, out = sh("pgrep -f 'sleep 1000[.]2[5]' -U " .. (IS_ROOT and "65534" or "$(id -u)"))
        assert.equal("", trim(out))
      end
    end)

    it("stops on SIGKILL of the launcher, and starts again with its files", function()
      if not need("restart") then return end
      local sb = new("persist")
      local h = start(sb, "echo kept > /root/file; echo tmp > /tmp/file; mkdir -p /opt/mine; echo o > /opt/mine/f; " ..
                          "echo ok; exec sleep 1000", { args = { "--user", "root" } })
      assert.matches("^ready", h.ready)
      -- the files are written before "ok"; wait for it by polling the output
      helper.eventually(function() return (read_file(h.stdout) or ""):find("ok") end, 5)
      assert.is_true(os.execute("kill -KILL " .. h.pid))
      assert.equal(137, (h.finish()))
      -- at once: init is still dying of PDEATHSIG, the start waits for it
      local r = run(sb, "cat /root/file /tmp/file /opt/mine/f", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      assert.equal("kept\ntmp\no\n", r.out)
      if not sb.unpriv then  -- (the old init may linger as a zombie of the host's init)
        assert.equal("", select(2, sh("ps -o stat=,pid= -u " .. sb.base .. " | grep -v '^Z'")))
      end
    end)
  end)

  describe("isolation", function()
    it("shows only the sandbox's processes (PID namespace)", function()
      if not need("pid ns") then return end
      local sb = new("pids")
      local mypid = trim(select(2, sh("echo $PPID")))
      local r = run(sb, "ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; echo; " ..
                        "kill -0 " .. mypid .. " 2>/dev/null && echo sees-host || echo host-invisible",
                    { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      local n, cmdline, vis = r.out:match("^(%d+)\n(.-)\n(.-)\n$")
      assert.is_true(tonumber(n) <= 6, "too many processes visible: " .. r.out)
      assert.matches("^dtlua%-sandbox%-init", cmdline)
      assert.not_matches(dir, cmdline, 1, true)
      assert.equal("host-invisible", vis)
    end)

    it("runs every sandbox process under the sandbox's host uid range", function()
      if not need("host uids", IS_ROOT, "needs root (unprivileged, the sandbox is the caller's uid)") then return end
      local sb = new("uids")
      local h = start(sb, "exec sleep 1000")
      assert.matches("^ready", h.ready)
      local children = trim(read_file(("/proc/%d/task/%d/children"):format(h.init, h.init)))
      local child = tonumber(children:match("^(%d+)"))
      local function uids(pid)
        return read_file("/proc/" .. pid .. "/status"):match("\nUid:%s+(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
      end
      assert.equal(tostring(sb.base), (uids(h.init)))
      local ru, eu, su, fu = uids(child)
      assert.same({ tostring(sb.base + 1000) }, { ru })
      assert.equal(ru, eu); assert.equal(ru, su); assert.equal(ru, fu)
      assert.is_true(os.execute("kill -TERM " .. h.pid))
      h.finish()
    end)

    it("gives root its own empty /root, its own /home and hides the host's", function()
      if not need("home") then return end
      local a, b = new("home-a"), new("home-b")
      local r = run(a, "ls -A /root | wc -l; ls /home; echo mine > /root/secret-a; ls /home/daytona/.bashrc",
                    { args = { "--user", "root" } })
      if a.unpriv then  -- no daytona without subordinate ids
        assert.equal("0\n", r.out:match("^%d+\n"))
      else
        assert.equal(0, r.code, r.err)
        assert.equal("0\ndaytona\n/home/daytona/.bashrc\n", r.out)
      end
      -- the other sandbox sees neither a's files nor a's directory
      r = run(b, "cat /root/secret-a 2>/dev/null || echo absent; ls " .. q(a.dir) .. " 2>/dev/null || echo no-path",
              { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      assert.equal("absent\nno-path\n", r.out)
    end)

    it("cannot leave its root through .. or symlinks", function()
      if not need("escape") then return end
      local sb = new("escape")
      local r = run(sb, "cd /../../..; pwd; realpath /tmp/../../etc/../..; ln -s / /tmp/up; ln -s ../../../../../.. /tmp/up2; " ..
                        "ls -di / /tmp/up/ /tmp/up2/ | awk '{print $1}' | uniq | wc -l; ls " .. q(sb.dir) .. " 2>&1 >/dev/null | grep -c 'No such'",
                    { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      assert.equal("/\n/\n1\n1\n", r.out)
    end)

    it("does not follow a symlink left in its directory (next start replaces it)", function()
      if not need("symlink safety") then return end
      local sb = new("plant")
      local r = run(sb, "true", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      -- what the sandbox could have done to its own top-level: /dev -> a
      -- host directory (through rootfs, which it owns)
      local victim = dir .. "/victim"
      assert.is_true(os.execute("mkdir " .. q(victim) .. " && chmod 0777 " .. q(victim)))
      local rootfs = sb.dir .. "/rootfs"
      assert.is_true(os.execute(prefix(sb) .. "sh -c " .. q("rm -rf " .. q(rootfs .. "/dev") .. " && ln -s " ..
                                                         q(victim) .. " " .. q(rootfs .. "/dev"))))
      r = run(sb, "echo x > /dev/null && echo devnull-ok", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      assert.equal("devnull-ok\n", r.out)
      assert.equal("", trim(select(2, sh("ls -A " .. q(victim)))))
    end)

    it("confines root: locked mounts, read-only /sys, no host sysctls", function()
      if not need("confined root") then return end
      local sb = new("confined")
      local _, before = sh("grep -c ' /mnt ' /proc/self/mounts")
      local r = run(sb, [[
        mount -t tmpfs none /mnt && echo own-mount-ok
        touch /sys/x 2>/dev/null && echo sys-writable || echo sys-readonly
        v=$(cat /proc/sys/vm/swappiness); (echo "$v" > /proc/sys/vm/swappiness) 2>/dev/null && echo sysctl-writable || echo sysctl-denied
        cat /proc/1/environ >/dev/null 2>&1 && echo init-env-readable || echo init-env-hidden
        umount -l /usr 2>/dev/null && echo umount-usr-worked || echo umount-usr-refused]],
        { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      -- unprivileged, the mounts are the sandbox's own, not locked: what
      -- an unmount reveals is the sandbox's own (empty) directory
      assert.equal("own-mount-ok\nsys-readonly\nsysctl-denied\ninit-env-hidden\n" ..
                   (sb.unpriv and "umount-usr-worked\n" or "umount-usr-refused\n"), r.out)
      -- the sandbox's own mount did not reach the host
      local _, after = sh("grep -c ' /mnt ' /proc/self/mounts")
      assert.equal(trim(before), trim(after))
    end)

    it("has an empty network namespace with a working loopback under --net none", function()
      if not need("net none", HAVE_PY, "python3 missing") then return end
      local sb = new("netnone")
      local script = [[
        tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
        python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
c.sendall(b"x"); print("loopback-ok" if a.recv(1) == b"x" else "loopback-broken")']]
      local r = run(sb, script, { args = { "--user", "root", "--net", "none" } })
      assert.equal(0, r.code, r.err)
      assert.equal("lo\nloopback-ok\n", r.out)
    end)

    it("links its own namespace to the host with --net veth, owned by its root (as root)", function()
      if not need("net veth", IS_ROOT and HAVE_PY, "needs root and python3") then return end
      local sb = new("netveth")
      local n = (os.time() + nsandbox) % 200
      local hostif, haddr, saddr = "dtlspec" .. n, ("10.202.%d.1"):format(n), ("10.202.%d.2"):format(n)
      local script = [[
        ip -4 -o addr show dev eth0 | awk '{print $4}'
        ip route show default
        ip tuntap add dev tun3 mode tun && ip link set tun3 up && echo tun-ok
        python3 -c '
import socket
s = socket.create_connection(("]] .. haddr .. [[", 1), timeout=2)' 2>&1 | tail -1 | cut -d: -f1
        sleep 0.5]]
      local h = start(sb, script, { args = { "--user", "root", "--net",
        ("veth:%s:%s/30:%s:4242"):format(hostif, haddr, saddr) } })
      assert.matches("^ready %d+$", h.ready)
      -- the host end: its address, in group 4242, linked to the sandbox
      local _, link = sh("ip -d -o link show " .. hostif .. "; ip -4 -o addr show dev " .. hostif)
      assert.matches("group 4242", link)
      assert.matches(haddr .. "/30", link, 1, true)
      local code, out, err = h.finish()
      assert.equal(0, code, err)
      -- a connection to the host end's closed port is refused: the link works
      assert.equal(saddr .. "/30\ndefault via " .. haddr .. " dev eth0 \ntun-ok\nConnectionRefusedError\n", out)
      -- the pair goes with the namespace
      local gone = false
      for _ = 1, 200 do
        if sh("ip link show " .. hostif .. " >/dev/null 2>&1") ~= 0 then gone = true break end
        sh("sleep 0.02")
      end
      assert.is_true(gone, hostif .. " outlived the sandbox")
      -- malformed values: exit 64 naming the option
      for _, v in ipairs({ "veth:", "veth:UPPER:10.0.0.1/30:10.0.0.2", "veth:x:10.0.0.1/30:10.1.0.2",
                           "veth:x:10.0.0.1/33:10.0.0.2", "veth:x:10.0.0.1/30:10.0.0.1", "veth:waytoolonginterface:10.0.0.1/30:10.0.0.2" }) do
        local c, o = sh(q(LAUNCHER) .. " run --root-dir " .. q(dir .. "/x") .. " --hostname h --uid-base "
          .. sb.base .. " --net " .. q(v) .. " -- true")
        assert.equal(64, c, v)
        assert.matches("--net: expected veth:", o, 1, true)
      end
    end)

    it("shares the host's network without --net none", function()
      if not need("net host") then return end
      local sb = new("nethost")
      local r = run(sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      local _, host = sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort")
      assert.equal(host, r.out)
    end)
  end)

  describe("root filesystem", function()
    it("lands writes to /usr, even sudo ones, in the sandbox's upper layer only", function()
      if not need("cow /usr", IS_ROOT, "needs root (unprivileged, /usr is not writable: doc/sandbox.md)") then return end
      local sb = new("cow")
      local probe = "dtlua-probe-" .. sb.base
      local r = run(sb, "sudo -n touch /usr/lib/" .. probe .. " && ls -ln /usr/lib/" .. probe ..
                        " | awk '{print $3}'; touch /usr/lib/x 2>/dev/null || echo user-denied")
      assert.equal(0, r.code, r.err)
      assert.equal("0\nuser-denied\n", r.out)
      assert.is_false(exists("/usr/lib/" .. probe))
      local _, owner = sh("stat -c %u " .. q(sb.dir .. "/upper/usr/lib/" .. probe))
      assert.equal(tostring(sb.base), trim(owner))
    end)

    it("lets daytona sudo apt-get install a package into the sandbox only", function()
      if not need("apt-get install", IS_ROOT, "needs root") then return end
      if sh("command -v dpkg-deb && command -v apt-get") ~= 0 then
        pending("dpkg-deb/apt-get not on this host") return
      end
      local sb = new("apt")
      local pkg = "dtlua-probe-pkg"
      local r = run(sb, ([[
        set -e
        mkdir -p /tmp/p/DEBIAN /tmp/p/usr/bin
        printf 'Package: %s\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: probe\n' > /tmp/p/DEBIAN/control
        printf '#!/bin/sh\necho hello-from-package\n' > /tmp/p/usr/bin/%s
        chmod 0755 /tmp/p/usr/bin/%s
        dpkg-deb --root-owner-group -b /tmp/p /tmp/p.deb >/dev/null
        sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/p.deb >/dev/null 2>&1
        %s
        dpkg-query -W -f '${Status}\n' %s]]):format(pkg, pkg, pkg, pkg, pkg), { shell = "bash" })
      assert.equal(0, r.code, r.out .. r.err)
      assert.equal("hello-from-package\ninstall ok installed\n", r.out)
      assert.is_false(exists("/usr/bin/" .. pkg))
      assert.is_true(exists(sb.dir .. "/upper/usr/bin/" .. pkg))
      local code = sh("dpkg-query -W " .. pkg)
      assert.is_not.equal(0, code)
    end)

    it("keeps the host's /etc/shadow, gshadow and SSH host keys out, even from sudo", function()
      if not need("secrets") then return end
      local sb = new("secrets")
      local unpriv = sb.unpriv
      local r = run(sb, [[
        cat /etc/shadow >/dev/null 2>&1 && echo shadow-readable || echo shadow-denied
        S="sudo -n"; [ "$(id -u)" = 0 ] && S=
        $S cat /etc/shadow | cut -d: -f2 | sort -u
        $S cat /etc/gshadow | cut -d: -f2 | sort -u
        ls /etc/ssh/ssh_host_* /etc/shadow- /etc/gshadow- 2>/dev/null | wc -l]],
        { args = unpriv and { "--user", "root" } or nil })
      assert.equal(0, r.code, r.err)
      if unpriv then
        assert.equal("shadow-readable\n*\n*\n0\n", r.out)  -- root inside; still no host hash
      else
        assert.equal("shadow-denied\n*\n*\n0\n", r.out)
      end
      -- and the file is the sandbox's, not the host's
      local host = read_file("/etc/shadow")
      if host then
        local rr = run(sb, "cat /etc/shadow", { args = { "--user", "root" } })
        assert.is_not.equal(host, rr.out)
      end
    end)

    it("hides --hide paths and the directory holding the sandboxes", function()
      if not need("hide") then return end
      local target
      for _, p in ipairs({ "/usr/share/doc", "/usr/share/man", "/usr/include" }) do
        if sh("test -d " .. p .. " && test -n \"$(ls -A " .. p .. ")\"") == 0 then target = p break end
      end
      if not target then pending("no non-empty /usr/share/doc, /usr/share/man or /usr/include here") return end
      local sb = new("hide")
      local r = run(sb, "ls -A " .. target .. " | wc -l; ls /usr/bin/env >/dev/null 2>&1 && echo visible",
                    { args = { "--user", "root", "--hide", target } })
      assert.equal(0, r.code, r.err)
      assert.equal("0\nvisible\n", r.out)
    end)

    it("binds host directories read-only or read-write", function()
      if not need("binds") then return end
      local src = dir .. "/share"
      assert.is_true(os.execute("mkdir -p " .. q(src) .. " && echo shared > " .. q(src .. "/f") .. " && chmod -R a+rwX " .. q(src)))
      local sb = new("binds")
      local r = run(sb, "cat /work/ro/f; echo x > /work/ro/g 2>/dev/null || echo ro-denied; echo w > /mnt/rw/g && echo rw-ok",
                    { args = { "--user", "root", "--ro-bind", src, "/work/ro", "--bind", src, "/mnt/rw" } })
      assert.equal(0, r.code, r.err)
      assert.equal("shared\nro-denied\nrw-ok\n", r.out)
      assert.equal("w\n", read_file(src .. "/g"))
    end)

    it("gives /dev the usual devices and its own ptys", function()
      if not need("dev", HAVE_PY, "python3 missing") then return end
      local sb = new("dev")
      local r = run(sb, "head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; ls /dev/pts; test -c /dev/pts/ptmx && echo ptmx; " ..
                        "python3 -c 'import os; m, s = os.openpty(); print(os.ttyname(s))'", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      assert.equal("4\n4\nptmx\nptmx\n/dev/pts/0\n", r.out)
    end)
  end)

  describe("volumes", function()
    -- a volume's data dir as dtlocal makes one as root: owned by the
    -- sandbox ids of daytona on disk
    local function volume(name)
      local v = dir .. "/" .. name
      assert.is_true(os.execute("mkdir -m 0755 " .. q(v) .. " && chown 1000:1000 " .. q(v)))
      return v
    end
    local function owner(path) return trim(select(2, sh("stat -c %u:%g " .. q(path)))) end

    it("idmaps --volume and --volume-beneath: what one sandbox makes the other may change, stored under sandbox ids", function()
      if not need("volumes", IS_ROOT, "idmapped volumes need root") then return end
      local v = volume("vol")
      local a, b = new("vola"), new("volb")
      local va = { args = { "--volume", v, "/home/daytona/vol" } }
      local r = run(a, "cd /home/daytona/vol && mkdir -p shared/dir && echo a > shared/dir/a.txt && " ..
                       "sudo sh -c 'echo r > shared/root.txt' && stat -c %U:%G shared/dir/a.txt", va)
      assert.equal(0, r.code, r.err)
      assert.equal("daytona:daytona\n", r.out)
      -- on disk: the sandbox ids, not a's host range
      assert.equal("1000:1000", owner(v .. "/shared/dir"))
      assert.equal("1000:1000", owner(v .. "/shared/dir/a.txt"))
      assert.equal("0:0", owner(v .. "/shared/root.txt"))
      r = run(b, "cd /data/shared && echo b > dir/b.txt && echo a2 >> dir/a.txt && " ..
                 "stat -c %U:%G dir/a.txt root.txt && { echo x >> root.txt 2>/dev/null || echo root-only; } && " ..
                 "sudo sh -c 'echo r2 >> root.txt' && cat root.txt",
              { args = { "--volume", v, "/data" } })
      assert.equal(0, r.code, r.err)
      assert.equal("daytona:daytona\nroot:root\nroot-only\nr\nr2\n", r.out)
      assert.equal("1000:1000", owner(v .. "/shared/dir/b.txt"))
      -- a subpath: the same ids; a missing one is made, daytona's, 0755
      r = run(b, "echo c > /sub/c.txt && echo a3 >> /sub/a.txt && echo n > /new/n.txt && ls /sub",
              { args = { "--volume-beneath", v, "shared/dir", "/sub", "--volume-beneath", v, "made/here", "/new" } })
      assert.equal(0, r.code, r.err)
      assert.equal("a.txt\nb.txt\nc.txt\n", r.out)
      assert.equal("1000:1000", owner(v .. "/made/here"))
      assert.equal("1000:1000", owner(v .. "/made/here/n.txt"))
      assert.equal("755", trim(select(2, sh("stat -c %a " .. q(v .. "/made/here")))))
      -- a again (started anew): everything is still daytona's to change
      r = run(a, "cd /home/daytona/vol/shared/dir && cat a.txt b.txt c.txt && echo b2 >> b.txt && rm c.txt && ls", va)
      assert.equal(0, r.code, r.err)
      assert.equal("a\na2\na3\nb\nc\na.txt\nb.txt\n", r.out)
      -- a link left in the volume is never followed to a subpath
      assert.equal(0, run(a, "ln -s /etc /home/daytona/vol/evil", va).code)
      r = run(b, "true", { args = { "--volume-beneath", v, "evil", "/x" } })
      assert.equal(67, r.code)
      assert.matches("symlink", r.err)
    end)

    it("gives files a volume's old per-sandbox host ids left the sandbox ids they stood for (--volume-migrate)", function()
      if not need("volume migration", IS_ROOT, "needs root") then return end
      -- as dtlocal left volumes before: 0777, files of a sandbox's range
      local v = dir .. "/old"
      local old = BASE0 + 1000 * 65536        -- another sandbox's range
      local outside = dir .. "/outside"
      assert.is_true(os.execute(("mkdir -m 0777 %s && mkdir -p %s/d/e && echo a > %s/d/e/a.txt && echo r > %s/r.txt && " ..
        "echo o > %s && ln -s %s %s/link && chown -R %d:%d %s/d && chown %d:%d %s/r.txt %s && chown -h %d:%d %s/link")
        :format(q(v), q(v), q(v), q(v), q(outside), q(outside), q(v), old + 1000, old + 1000, q(v),
                old, old, q(v), q(outside), old + 1000, old + 1000, q(v))))
      local sb = new("migrate")
      local r = run(sb, "echo more >> /vol/d/e/a.txt && stat -c %U:%G /vol/d/e/a.txt /vol/r.txt",
                    { args = { "--volume-migrate", v, "--volume", v, "/vol" } })
      assert.equal(0, r.code, r.err)
      assert.equal("daytona:daytona\nroot:root\n", r.out)
      assert.equal("1000:1000", owner(v .. "/d/e"))
      assert.equal("1000:1000", owner(v .. "/d/e/a.txt"))
      assert.equal("0:0", owner(v .. "/r.txt"))
      assert.equal("1000:1000", owner(v .. "/link"))   -- stat: the link itself
      -- the link's target, outside the volume, is untouched
      assert.equal(("%d:%d"):format(old, old), owner(outside))
    end)

    it("binds --volume as a plain bind when not root", function()
      if not need("unprivileged volume", IS_ROOT == false or sh("command -v setpriv") == 0, "needs setpriv to drop root") then return end
      local sb = new("unprivvol", { unpriv = true })
      local v = dir .. "/uvol"
      assert.is_true(os.execute("mkdir -m 0777 " .. q(v)))
      local r = run(sb, "echo u > /vol/u.txt && cat /vol/u.txt", { args = { "--user", "root", "--volume", v, "/vol" } })
      assert.equal(0, r.code, r.err)
      assert.equal("u\n", r.out)
    end)
  end)

  describe("the run directory", function()
    it("makes a unix socket made inside at /run/dtlua reachable from the host", function()
      if not need("socket", HAVE_PY, "python3 missing") then return end
      local sb = new("sock")
      local server = [[
import os, socket
p = "/run/dtlua/toolbox.sock"
s = socket.socket(socket.AF_UNIX); s.bind(p); os.chmod(p, 0o666); s.listen(1)
c, _ = s.accept()
c.sendall(("pong %s %d\n" % (socket.gethostname(), os.getuid())).encode() + c.recv(100))
c.close()]]
      local h = start(sb, nil, { program = { "python3", "-c", server }, args = sb.unpriv and { "--user", "root" } or nil })
      assert.matches("^ready", h.ready)
      local sock = sb.dir .. "/run/toolbox.sock"
      helper.eventually(function() return sh("test -S " .. q(sock)) == 0 end, 5)
      local code, out = sh(prefix(sb) .. PY .. " -c " .. q([[
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"ping\n")
print(s.makefile().read().strip())]]) .. " " .. q(sock))
      assert.equal(0, code, out)
      assert.equal(("pong sock %d\nping"):format(sb.unpriv and 0 or 1000), trim(out))
      local c = h.finish()
      assert.equal(0, c)
    end)
  end)

  describe("rm", function()
    it("deletes a stopped sandbox's directory, owned by its uids", function()
      if not need("rm") then return end
      local sb = new("rm")
      local r = run(sb, "echo x > /tmp/f; mkdir -p /root/d; chmod 000 /root/d", { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      local code, out = rm_sandbox(sb)
      assert.equal(0, code, out)
      assert.is_false(exists(sb.dir))
      code = rm_sandbox(sb)  -- already gone: fine
      assert.equal(0, code)
    end)
  end)

  describe("unprivileged mode", function()
    it("works without root, as root of its own user namespace", function()
      if not need("unprivileged", IS_ROOT == false or sh("command -v setpriv") == 0, "needs setpriv to drop root") then return end
      local sb = new("unpriv", { unpriv = true })
      local r = run(sb, "id -u; hostname; touch /usr/bin/x 2>/dev/null || echo usr-readonly; echo e > /etc/mine && cat /etc/mine",
                    { args = { "--user", "root" } })
      assert.equal(0, r.code, r.err)
      assert.equal("0\nunpriv\nusr-readonly\ne\n", r.out)
      local code, out = rm_sandbox(sb)
      assert.equal(0, code, out)
      assert.is_false(exists(sb.dir))
    end)
  end)

  describe("speed", function()
    it("is ready in well under dtlocal's 20 ms budget (p50 of 9 restarts)", function()
      if not need("speed") then return end
      local sb = new("speed")
      assert.equal(0, run(sb, "true", { args = { "--user", "root" } }).code)
      -- time from exec of the launcher to its ready line, in the shell
      local fifo = dir .. "/speed.fifo"
      local script = ([[
        mkfifo %s
        for i in 1 2 3 4 5 6 7 8 9; do
          t0=$(date +%%s%%N)
          %s >/dev/null 2>&1 3>%s </dev/null &
          read line < %s
          t1=$(date +%%s%%N)
          wait
          echo $(( (t1 - t0) / 1000 ))
        done]]):format(q(fifo), launcher_cmd(sb, { "true" }, { args = { "--user", "root" } }), q(fifo), q(fifo))
      local code, out = sh("sh -c " .. q(script))
      assert.equal(0, code, out)
      local t = {}
      for us in out:gmatch("%d+") do t[#t + 1] = tonumber(us) end
      assert.equal(9, #t, out)
      table.sort(t)
      -- generous: the figure on an idle machine is ~6-10 ms; the spec
      -- only guards against a regression by an order of magnitude
      assert.is_true(t[5] < 100000, ("p50 %.1f ms"):format(t[5] / 1000))
    end)
  end)
end)
