-- Sandboxes whose root is a container image (dtlua-sandbox --image-layer,
-- dtlocal.control.runner with spec.image; doc/sandbox.md "Image roots"):
-- the test image of spec/support/registry.lua pulled from a real registry
-- on loopback into a real image store, started by name and by digest; the
-- image's own /etc, layers shared on disk by every sandbox of the image,
-- writes in each sandbox's upper dir only, the toolbox daemon running from
-- the host's runtime while what it starts uses the image's programs (the
-- image has no bash, sudo, python3 nor git), and attacks from inside.
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local http = require "daytona.runtime.http"
local helper = require "support.helper"
local registry = require "support.registry"
local Store = require "dtlocal.images.store"
local runner_mod = require "dtlocal.control.runner"
local sandboxes = require "dtlocal.control.sandboxes"
local json = require("dtlocal.http").json

local util = core.util
local IS_ROOT = util.getuid() == 0

local reg, ref, digest, store, runner, state, uids
local running = {}
local claims = {}

local function host_sh(script, ...)
  local r = assert(process.run({ "sh", "-c", script, "sh", ... }, { timeout = 60, stderr = "stdout" }))
  assert.are.equal(0, r.exit_code, r.stdout)
  return r.stdout
end

local next_base = 0
-- start a sandbox of image; returns its instance (stopped and removed in teardown)
local function launch(image, opts)
  opts = opts or {}
  next_base = next_base + 1
  local id = "img" .. next_base .. "-" .. util.hex(util.random_bytes(3))
  local first
  if IS_ROOT then
    -- a host range of its own, from the machine-wide registry dtlocal uses
    local owner = state .. "/" .. id .. ".claim"
    local f = assert(io.open(owner, "w")); f:write("spec\n"); f:close()
    local slot
    slot, first = assert(uids:claim(owner))
    claims[#claims + 1] = { slot, owner }
  end
  local spec = { id = id, dir = state .. "/" .. id, user = opts.user or "root", image = image,
                 env = opts.env, uid_first = first }
  local inst = runner:launch(spec)
  running[#running + 1] = inst
  inst:wait_ready()
  return inst
end

local function call(inst, method, path, body)
  local r, msg = http.request{ url = inst.base_url .. path, method = method,
    unix_socket = inst.unix_socket, peer_uids = inst.peer_uids,
    headers = body and { ["Content-Type"] = "application/json" } or nil,
    body = body and json.encode(body) or nil, timeout = 30 }
  assert(r, msg)
  local decoded = json.decode(r.body or "")
  return r.status, decoded or r.body
end

-- run a command in the sandbox: output, exit code
local function exec(inst, cmd)
  local status, body = call(inst, "POST", "/process/execute", { command = cmd })
  assert.are.equal(200, status, json.encode(body))
  return body.result, body.exitCode
end

local function sh(inst, cmd)
  local out, code = exec(inst, cmd)
  assert.are.equal(0, code, cmd .. ": " .. tostring(out))
  return out
end

describe("dtlocal sandboxes from a container image", function()
  setup(function()
    helper.run(function()
      reg = registry.start()
      ref, digest = reg:push_test_image("dtlua/test:1")
      local dir = helper.tmpdir()
      state = dir .. "/sandboxes"
      util.mkdir(state, 448)
      store = Store.open(dir .. "/images")
      runner = runner_mod.new{ prefix = helper.build_path(""), log = function() end }
      if IS_ROOT then uids = require("dtlocal.control.uids").new{} end
    end)
  end)
  teardown(function()
    helper.run(function()
      for _, inst in ipairs(running) do
        inst:stop(0)
        pcall(runner.remove_tree, runner, inst.dir)
      end
      if runner then runner:close() end
      for _, c in ipairs(claims) do uids:release(c[1], c[2]) end
      if reg then reg:stop() end
    end)
    helper.cleanup()
  end)

  it("starts from the image by name and by digest, with the image's /etc and environment", function()
    helper.run(function()
      local by_name = assert(store:pull(ref))
      local by_digest = assert(store:pull(reg.host .. "/dtlua/test@" .. digest))
      assert.are.equal(by_name.id, by_digest.id)
      for _, img in ipairs({ by_name, by_digest }) do
        local inst = launch(img, { env = { FROM_SPEC = "yes" } })
        local osr = sh(inst, "cat /etc/os-release")
        assert.matches("ID=dtlua%-test", osr)
        -- not the host's
        assert.are_not.equal(helper.read_file("/etc/os-release"), osr)
        -- both layers, with the second's whiteout and opaque directory
        assert.are.equal("second layer\n", sh(inst, "cat /etc/layer2"))
        local _, gone = exec(inst, "test -e /etc/gone")
        assert.are_not.equal(0, gone)
        assert.are.equal("new\n", sh(inst, "ls /opt/opq"))
        -- the accounts from the image's /etc/passwd, plus daytona (sh: no bash in the image)
        local passwd = sh(inst, "cat /etc/passwd")
        assert.matches("^root:x:0:0:root:/root:/bin/sh\n", passwd)
        assert.matches("\ndaytona:x:1000:1000:Daytona:/home/daytona:/bin/sh\n", passwd)
        assert.is_nil(passwd:find("\n_apt:", 1, true))     -- nothing of the host's
        assert.are.equal(inst.id .. "\n", sh(inst, "cat /etc/hostname"))
        -- the image's env, the sandbox's, and nothing of the daemon's runtime
        local env = sh(inst, "env")
        assert.matches("DTLUA_TEST_IMAGE=1", env)
        assert.matches("FROM_SPEC=yes", env)
        assert.is_nil(env:find("DTLUA_PREFIX", 1, true))
        assert.is_nil(env:find("LD_LIBRARY_PATH", 1, true))
        assert.matches("SHELL=/bin/sh", env)
        -- WORKDIR / of the image: commands start there
        assert.are.equal("/\n", sh(inst, "pwd"))
        -- the daemon's user: root (the image has no USER)
        assert.are.equal("root\n", sh(inst, "whoami"))
      end
    end)
  end)

  it("shares the image's layers on disk and keeps each sandbox's writes in its upper dir", function()
    helper.run(function()
      local img = assert(store:pull(ref))
      local a, b = launch(img), launch(img)
      local layer_ino = host_sh('stat -c %i "$1"', img.layers[1] .. "/bin/busybox")
      -- one copy: the same inode in both sandboxes, the layer's own
      assert.are.equal(layer_ino, sh(a, "stat -c %i /bin/busybox"))
      assert.are.equal(layer_ino, sh(b, "stat -c %i /bin/busybox"))
      assert.are.equal(2, #util.readdir(store.dir .. "/layers"))
      -- a write in a: in a's upper dir, not in the layer, not in b
      sh(a, "echo changed > /etc/os-release && echo mine > /opt/a-file && rm /bin/ls")
      assert.are.equal("changed\n", sh(a, "cat /etc/os-release"))
      assert.matches("ID=dtlua%-test", sh(b, "cat /etc/os-release"))
      assert.are.equal(0, select(2, exec(b, "test -e /bin/ls")))
      assert.are_not.equal(0, select(2, exec(b, "test -e /opt/a-file")))
      assert.matches("ID=dtlua%-test", helper.read_file(img.layers[1] .. "/etc/os-release"))
      assert.truthy(util.stat(img.layers[1] .. "/bin/ls", false))
      assert.are.equal("changed\n", helper.read_file(a.dir .. "/upper/image/etc/os-release"))
      assert.are.equal("char", util.stat(a.dir .. "/upper/image/bin/ls", false).type)
      assert.is_nil(util.stat(b.dir .. "/upper/image/etc/os-release", false))
      -- the sandboxes' own dirs hold only what they wrote: far less than the layers
      local function du(p) return tonumber(host_sh('du -sk "$1" | cut -f1', p):match("%d+")) end
      assert.truthy(du(b.dir) < du(img.layers[1]) / 4, "a sandbox's dir holds a copy of the image")
    end)
  end)

  it("runs the toolbox from the host's runtime while commands use the image's programs", function()
    helper.run(function()
      local img = assert(store:pull(ref))
      local inst = launch(img, { user = "daytona" })
      assert.are.equal("daytona\n", sh(inst, "whoami"))
      -- the shell is the image's busybox sh, its libc the image's
      assert.matches("/bin/busybox", sh(inst, "cat /proc/self/maps | grep -m1 busybox"))
      -- files through the daemon are the image's files
      local status, info = call(inst, "GET", "/files/info?path=/etc/layer2")
      assert.are.equal(200, status)
      assert.are.equal(13, info.size)
      -- what the image lacks is said so, naming the program
      status, info = call(inst, "POST", "/process/code-run", { code = "print(1)", language = "python" })
      assert.are.equal(400, status)
      assert.matches("python3 is not installed", json.encode(info))
      local out, code = exec(inst, "git --version")
      assert.are_not.equal(0, code)
      assert.matches("not found", out)
      -- sessions work with the image's sh
      status, info = call(inst, "POST", "/process/session", { sessionId = "s1" })
      assert.are.equal(201, status, json.encode(info))
      status, info = call(inst, "POST", "/process/session/s1/exec", { command = "cd /etc && echo in-$(pwd)" })
      assert.are.equal(200, status, json.encode(info))
      assert.matches("in%-/etc", json.encode(info))
      -- shell code runs with the image's sh
      status, info = call(inst, "POST", "/process/code-run", { code = "echo shell-ok", language = "shell" })
      assert.are.equal(200, status)
      assert.matches("shell%-ok", info.result)
    end)
  end)

  it("runs code_run with the image's python3 and git operations with the image's git", function()
    helper.run(function()
      local tref = reg:push_tools_image("dtlua/tools:1")
      local img = assert(store:pull(tref))
      assert.are.equal(3, #img.layers)
      local inst = launch(img, { user = "daytona" })
      local status, r = call(inst, "POST", "/process/code-run", { language = "python", code =
        "import sys\nprint(sys.executable, sys.version_info[0])\nprint(open('/etc/os-release').read())" })
      assert.are.equal(200, status, json.encode(r))
      assert.are.equal(0, r.exitCode, r.result)
      assert.matches("^/usr/bin/python3 3\n", r.result)
      assert.matches("ID=dtlua%-test", r.result)
      -- git: the toolbox's routes drive the image's git
      sh(inst, "git init -q /home/daytona/repo && echo hi > /home/daytona/repo/f")
      status, r = call(inst, "POST", "/git/add", { path = "/home/daytona/repo", files = { "f" } })
      assert.are.equal(200, status, json.encode(r))
      status, r = call(inst, "POST", "/git/commit", { path = "/home/daytona/repo", message = "first",
                                                      author = "Spec", email = "spec@example.com" })
      assert.are.equal(200, status, json.encode(r))
      assert.matches("^%x+$", r.hash)
      status, r = call(inst, "GET", "/git/status?path=/home/daytona/repo")
      assert.are.equal(200, status, json.encode(r))
      assert.is_string(r.currentBranch)
      assert.matches("first", sh(inst, "git -C /home/daytona/repo log --format=%s"))
    end)
  end)

  it("holds against a hostile sandbox and a hostile image", function()
    helper.run(function()
      local img = assert(store:pull(ref))
      local inst = launch(img)   -- as root inside
      -- the host's runtime is read-only and cannot grow setuid programs; only
      -- what the daemon needs of the host is there (no /usr/bin, no /etc)
      local binds = runner:image_runtime().binds
      assert.truthy(#binds >= 3)
      for _, b in ipairs(binds) do
        local out, code = exec(inst, "echo x > " .. b[2] .. "/evil")
        assert.are_not.equal(0, code)
        assert.matches("Read%-only", out)
        local line = sh(inst, "grep ' " .. b[2] .. " ' /proc/self/mountinfo")
        assert.matches("nosuid", line)
        assert.matches("%sro[%s,]", line)
      end
      local _, nobin = exec(inst, "test -e /run/dtlua-host/usr/bin/sudo || test -e /run/dtlua-host/usr/bin/bash")
      assert.are_not.equal(0, nobin)
      -- the layers' host paths are not shown, and the layer is not writable through the overlay
      assert.is_nil(sh(inst, "cat /proc/self/mountinfo"):find(store.dir, 1, true))
      sh(inst, "echo evil > /bin/busybox.new && chmod 4755 /bin/busybox.new")
      assert.is_nil(util.stat(img.layers[1] .. "/bin/busybox.new", false))
      -- the sandbox turns its /etc files into links to host secrets and restarts:
      -- the launcher does not follow them (its accounts are written once, O_EXCL)
      sh(inst, "rm -f /etc/hostname && ln -s /run/dtlua-host/usr/../../../etc/shadow /etc/hostname")
      inst:stop(0)
      local again = runner:launch{ id = inst.id, dir = inst.dir, user = "root", image = img,
                                   uid_first = IS_ROOT and inst.peer_uids[1] or nil }
      running[#running + 1] = again
      again:wait_ready()
      assert.matches("^/run/dtlua%-host/usr/", sh(again, "readlink /etc/hostname"))
      -- an image whose /etc/passwd is a link to the host's /etc/shadow: not followed
      local evil = helper.tmpdir() .. "/evil"
      host_sh('mkdir -p "$1/etc" && ln -s /../../../../../../etc/shadow "$1/etc/passwd" && ' ..
              'ln -s /etc/shadow "$1/etc/group"', evil)
      local _, ldigest = assert(store:add_layer(evil))
      local bad = assert(store:put_image{ ref = "spec/evil:1", layers = { img.layer_digests[1], img.layer_digests[2], ldigest },
                                          config = img.config })
      local e = launch(bad)
      local passwd = sh(e, "cat /etc/passwd")
      assert.are.equal("daytona:x:1000:1000:Daytona:/home/daytona:/bin/sh\n", passwd)
      assert.are.equal("daytona:x:1000:\n", sh(e, "cat /etc/group"))
    end)
  end)

  it("runs as the image's own daytona user when the image made one (USER daytona)", function()
    helper.run(function()
      local img = assert(store:pull(ref))
      -- as Daytona's docs make it: useradd -r (a system uid), its home chowned to it
      local up = helper.tmpdir() .. "/daytona-layer"
      host_sh('mkdir -p "$1/etc" "$1/home/daytona" && cp "$2/etc/passwd" "$2/etc/group" "$1/etc/" && ' ..
              'echo "daytona:x:999:998::/home/daytona:/bin/sh" >> "$1/etc/passwd" && ' ..
              'echo "daytona:x:998:" >> "$1/etc/group" && echo mine > "$1/home/daytona/made-in-image" && ' ..
              'chown -R 999:998 "$1/home/daytona"', up, img.layers[1])
      local _, ldigest = assert(store:add_layer(up))
      local own = assert(store:put_image{ ref = "spec/own-daytona:1",
        layers = { img.layer_digests[1], img.layer_digests[2], ldigest },
        config = { env = img.config.env, user = "daytona", cwd = "/home/daytona" } })
      assert.are.equal("daytona", sandboxes.image_user(own))
      local inst = launch(own, { user = "daytona" })
      assert.are.equal("uid=999(daytona) gid=998(daytona) groups=998(daytona)\n", sh(inst, "id"))
      assert.are.equal("/home/daytona\n", sh(inst, "pwd"))
      sh(inst, "echo more >> /home/daytona/made-in-image && touch /home/daytona/new")
      local passwd = sh(inst, "cat /etc/passwd")
      assert.matches("\ndaytona:x:999:998:Daytona:/home/daytona:/bin/sh\n", passwd)
      assert.is_nil(passwd:find(":1000:", 1, true))
    end)
  end)

  it("works unprivileged: a store and an image root made by a user without root", function()
    if not IS_ROOT then
      -- the other cases ran this way already
      return
    end
    helper.run(function()
      local parent = helper.tmpdir()
      util.chmod(parent, 457)   -- 0711: nobody may pass through to its own dir
      local dir = parent .. "/unpriv"
      util.mkdir(dir, 448)
      assert(util.chown(dir, 65534, 65534))
      local as_nobody = { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env",
                          "HOME=" .. dir, "PATH=/usr/bin:/bin" }
      local function run_as_nobody(argv)
        local full = {}
        for _, a in ipairs(as_nobody) do full[#full + 1] = a end
        for _, a in ipairs(argv) do full[#full + 1] = a end
        local r = assert(process.run(full, { timeout = 120, stderr = "stdout", cwd = dir }))
        return r.stdout, r.exit_code
      end
      local cwd = os.getenv("PWD")
      local script = ([[
package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
package.cpath = %q .. "/lib/lua/5.4/?.so;" .. package.cpath
require("daytona.runtime.scheduler").run(function()
  local st = require("dtlocal.images.store").open(%q)
  local im = assert(st:pull(%q))
  for _, l in ipairs(im.layers) do print(l) end
end)
]]):format(cwd, cwd, helper.build_path(""), dir .. "/store", ref)
      local out, code = run_as_nobody({ "lua5.4", "-e", script })
      assert.are.equal(0, code, out)
      local argv = { helper.build_path("libexec/dtlua/dtlua-sandbox"), "run", "--root-dir", dir .. "/sb",
                     "--hostname", "unpriv", "--user", "root" }
      for layer in out:gmatch("[^\n]+") do
        argv[#argv + 1] = "--image-layer"
        argv[#argv + 1] = layer
      end
      argv[#argv + 1] = "--"
      argv[#argv + 1] = "/bin/sh"
      argv[#argv + 1] = "-c"
      argv[#argv + 1] = "cat /etc/os-release; ls /opt/opq; test -e /etc/gone || echo gone-is-gone; " ..
                        "grep ^daytona: /etc/passwd; echo w > /etc/w && cat /etc/w"
      out, code = run_as_nobody(argv)
      assert.are.equal(0, code, out)
      assert.matches("ID=dtlua%-test", out)
      assert.matches("\nnew\n", out)
      assert.matches("gone%-is%-gone", out)
      assert.matches("daytona:x:1000:1000:Daytona:/home/daytona:/bin/sh", out)
      assert.matches("\nw\n", out)
      assert.are.equal("w\n", helper.read_file(dir .. "/sb/upper/image/etc/w"))
      run_as_nobody({ helper.build_path("libexec/dtlua/dtlua-sandbox"), "rm", "--root-dir", dir .. "/sb" })
      run_as_nobody({ "rm", "-rf", dir .. "/store" })
    end)
  end)

  it("records which image a sandbox uses and applies the image's USER", function()
    assert.are.equal("root", sandboxes.image_user({ config = { user = "" } }))
    assert.are.equal("daytona", sandboxes.image_user({ config = { user = "daytona" } }))
    assert.are.equal("daytona", sandboxes.image_user({ config = { user = "1000:1000" } }))
    assert.are.equal("root", sandboxes.image_user({ config = { user = "0" } }))
  end)
end)

-- The same through dtlocal's API: a snapshot of the registry's image (by
-- tag, by digest), sandboxes created from it.
describe("dtlocal API: sandboxes from a snapshot of an image", function()
  local dtlocal = require "support.dtlocal"
  local srv, areg, aref, adigest
  local function ok(want, method, path, body) return dtlocal.expect(srv, want, method, path, body) end
  local function until_state(path, want, passing)
    local deadline = core.now() + 120
    while true do
      local r = ok(200, "GET", path)
      if r.state == want then return r end
      assert.is_truthy(passing[r.state], path .. " is " .. tostring(r.state) .. ": " .. tostring(r.errorReason))
      assert.is_true(core.now() < deadline, path .. " still " .. r.state)
      require("daytona.runtime.scheduler").sleep(0.02)
    end
  end
  local function sh_in(id, cmd)
    local out, code = dtlocal.exec(srv, id, cmd, 30)
    assert.are.equal(0, code, cmd .. ": " .. tostring(out))
    return out
  end

  setup(function()
    srv = dtlocal.start()
    helper.run(function()
      areg = registry.start()
      aref, adigest = areg:push_test_image("dtlua/api:1")
    end)
  end)
  teardown(function()
    if areg then helper.run(function() areg:stop() end) end
    if srv then srv.stop() end
  end)

  it("creates sandboxes from a snapshot by tag and by digest, sharing the layers", function()
    helper.run(function()
      local ids = {}
      for i, image in ipairs({ aref, areg.host .. "/dtlua/api@" .. adigest }) do
        local s = ok(200, "POST", "/snapshots", { name = "spec-image-" .. i, imageName = image })
        until_state("/snapshots/" .. s.id, "active", { pending = true, pulling = true })
        local sb = ok(200, "POST", "/sandbox", { snapshot = "spec-image-" .. i })
        assert.are.equal("spec-image-" .. i, sb.snapshot)
        until_state("/sandbox/" .. sb.id, "started", { creating = true, starting = true })
        ids[#ids + 1] = sb.id
        assert.matches("ID=dtlua%-test", sh_in(sb.id, "cat /etc/os-release"))
        assert.are.equal("root\n", sh_in(sb.id, "whoami"))   -- the image has no USER
        assert.are.equal("root", ok(200, "GET", "/sandbox/" .. sb.id).user)
      end
      -- one image in the store, its layers on disk once: the same inode in both
      local layers = util.readdir(srv.state_dir .. "/images/layers")
      assert.are.equal(2, #layers)
      assert.are.equal(sh_in(ids[1], "stat -c %i /bin/busybox"), sh_in(ids[2], "stat -c %i /bin/busybox"))
      -- writes stay in each sandbox
      sh_in(ids[1], "echo one > /etc/os-release")
      assert.matches("ID=dtlua%-test", sh_in(ids[2], "cat /etc/os-release"))
      -- restarted, a sandbox keeps its writes on its image
      assert.are.equal(200, (dtlocal.request(srv, "POST", "/sandbox/" .. ids[1] .. "/stop")))
      until_state("/sandbox/" .. ids[1], "stopped", { started = true, stopping = true })
      assert.are.equal(200, (dtlocal.request(srv, "POST", "/sandbox/" .. ids[1] .. "/start")))
      until_state("/sandbox/" .. ids[1], "started", { stopped = true, starting = true })
      assert.are.equal("one\n", sh_in(ids[1], "cat /etc/os-release"))
      for _, id in ipairs(ids) do
        assert.are.equal(200, (dtlocal.request(srv, "DELETE", "/sandbox/" .. id)))
      end
    end)
  end)

  it("runs the snapshot's entrypoint as the daemon's entrypoint session", function()
    helper.run(function()
      local s = ok(200, "POST", "/snapshots", { name = "spec-entrypoint", imageName = aref,
        entrypoint = { "sh", "-c", "echo 'it ran' > /tmp/entrypoint-ran; exec sleep 1000" } })
      until_state("/snapshots/" .. s.id, "active", { pending = true, pulling = true })
      local sb = ok(200, "POST", "/sandbox", { snapshot = "spec-entrypoint" })
      until_state("/sandbox/" .. sb.id, "started", { creating = true, starting = true })
      helper.eventually(function()
        local out, code = dtlocal.exec(srv, sb.id, "cat /tmp/entrypoint-ran", 10)
        return code == 0 and out == "it ran\n"
      end, 20)
      local st, session = dtlocal.request(srv, "GET", "/process/session/entrypoint", nil,
                                          { base = srv.toolbox_url .. "/" .. sb.id })
      assert.are.equal(200, st, type(session) == "table" and json.encode(session) or tostring(session))
      assert.matches("exec sleep 1000", json.encode(session), 1, true)
      assert.are.equal(200, (dtlocal.request(srv, "DELETE", "/sandbox/" .. sb.id)))
    end)
  end)
end)
