-- daytona.recipes.mount against a private local server, with real servers
-- on the other end: s3rver (a real S3-compatible server, spec/s3, pinned;
-- started here on the host's loopback, which the local server's sandboxes
-- share), sshd and `rclone serve webdav` each in another sandbox. The FUSE
-- tools (s3fs, sshfs, rclone, fuse-overlayfs) come from the host's /usr,
-- installed by `make deps`. gcsfuse and blobfuse2 need the network to be
-- installed, so only their argument checks and their "missing tool" errors
-- are tried here.
local errors = require "daytona.errors"
local helper = require "support.helper"
local fixture = require "sdk.fixture"
local mount = require "daytona.recipes.mount"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"

local S3RVER = "spec/s3/node_modules/s3rver/bin/s3rver.js"
-- s3rver checks the access key id of a SigV4 request but not its signature,
-- so the secret can be any text: one that stands out in `ps`
local ACCESS, SECRET = "S3RVER", "s3cret-that-must-not-show-in-ps"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function sh(cmd)
  local r = process.run({ "sh", "-c", cmd }, { timeout = 60, stderr = "pipe" })
  assert(r.exit_code == 0, cmd .. ": " .. r.stderr)
  return r.stdout
end

-- A session command that serves something in `sb`; returns once `ready`
-- (a pattern) shows in its output.
local function serve(sb, name, command, ready)
  sb.process:create_session(name)
  local c = sb.process:execute_session_command(name, { command = command .. " 2>&1", run_async = true })
  local out = helper.eventually(function()
    local logs = sb.process:get_session_command_logs(name, c.cmd_id)
    local text = (logs.output or "") .. (logs.stdout or "") .. (logs.stderr or "")
    if text:find(ready) then return text end
    local st = sb.process:get_session_command(name, c.cmd_id)
    assert(st.exit_code == nil, name .. " exited: " .. text)
  end, 30, 0.1)
  return out
end

describe("daytona.recipes.mount", function()
  local srv, client, sb, server_sb, s3, s3_url, keys

  setup(function()
    srv = fixture.server()
    client = fixture.client(srv)
    sb = client:create{}
    -- the servers (sshd, rclone's WebDAV) run in a sandbox linked to the
    -- one that mounts, as a script would set them up
    server_sb = client:create{ linked_sandbox = sb.id, ephemeral = true }
    -- s3rver on port 0: it prints the port it got
    local data = helper.tmpdir()
    -- a sandbox has a network of its own and reaches none of the host's
    -- addresses unless its allow list names them: s3rver listens on every
    -- address of the host, and sb may reach its gateway's (the host end of
    -- its link)
    s3 = process.spawn({ "node", S3RVER, "-d", data, "-a", "0.0.0.0", "-p", "0", "--configure-bucket", "data" },
      { stdin = "null", stderr = "stdout" })
    local gw = sb.process:exec("ip route show default").result:match("via (%d+%.%d+%.%d+%.%d+)")
    assert(gw, "no default route in the sandbox")
    sb:update_network_settings{ network_allow_list = gw .. "/32" }
    for line in s3:lines("stdout", 30) do
      local port = line:match("listening on [%d.]+:(%d+)")
      if port then s3_url = "http://" .. gw .. ":" .. port break end
    end
    assert(s3_url, "s3rver did not start")
    -- keep reading its log so it never blocks on a full pipe
    scheduler.spawn(function() for _ in s3:lines("stdout") do end end)
    keys = helper.tmpdir()
    sh(("ssh-keygen -q -t ed25519 -N '' -C spec -f %s/id && ssh-keygen -q -t ed25519 -N '' -C host -f %s/host")
      :format(keys, keys))
  end)

  teardown(function()
    if s3 then s3:kill("TERM"); pcall(s3.wait, s3, 10); s3:close() end
    for _, s in ipairs{ sb, server_sb } do pcall(s.delete, s, { wait = false }) end
    if srv then srv.stop() end
    helper.cleanup()
  end)

  -- GET an object through the S3 API, signed with SigV4 (curl does that;
  -- s3rver wants the payload's hash header, which curl 7.88 does not send)
  local function s3_get(key)
    local r = process.run({ "curl", "-sS", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", ACCESS .. ":" .. SECRET,
      "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
      s3_url .. "/data/" .. key }, { timeout = 30, stderr = "pipe" })
    return r.stdout, r.exit_code
  end

  local function s3_opts(extra)
    local o = { bucket = "data", endpoint = s3_url, access_key = ACCESS, secret_key = SECRET, mount_path = "s3",
      timeout = 60 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("mount_s3: a write through the mount is an object in the bucket; close unmounts", function()
    local path
    do
      local m <close> = mount.mount_s3(sb, s3_opts())
      path = m.mount_path
      assert.are.equal(sb:get_user_home_dir() .. "/s3", path)
      assert.are.equal("s3fs", m.tool)
      local r = sb.process:exec("echo 'through the mount' > s3/notes.txt && cat s3/notes.txt")
      assert.are.equal(0, r.exit_code, r.result)
      assert.are.equal("through the mount\n", r.result)
      assert.are.equal("through the mount\n", (s3_get("notes.txt")))
      -- the secret is in a 0600 file, not on any command line
      local ps = sb.process:exec("ps -eo args")
      assert.matches("s3fs data", ps.result, 1, true)
      assert.is_nil(ps.result:find(SECRET, 1, true), ps.result)
      local perm = sb.process:exec("stat -c '%a %U' " .. ps.result:match("passwd_file=(%S-/passwd)"))
      assert.are.equal("600 daytona\n", perm.result)
    end
    -- the scope's end unmounted it and removed the secrets
    local r = sb.process:exec(("mountpoint -q %s; echo $?; ls -d /tmp/.dtlua-mount.* 2>/dev/null | wc -l"):format(path))
    assert.are.equal("32\n0\n", r.result)
  end)

  it("mount_s3: prefix and read_only; close is idempotent", function()
    sh(("curl -sS -f -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user %s:%s -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --data-binary 'in a folder' %s/data/dir/a.txt")
      :format(ACCESS, SECRET, s3_url))
    local m = mount.mount_s3(sb, s3_opts{ prefix = "dir", read_only = true, mount_path = "/tmp/ro" })
    local r = sb.process:exec("cat /tmp/ro/a.txt; touch /tmp/ro/b.txt 2>&1; echo $?")
    assert.matches("^in a folder", r.result)
    assert.matches("Read%-only file system\n1\n$", r.result)
    m:close()
    m:close()
    assert.are.equal(32, sb.process:exec("mountpoint -q /tmp/ro").exit_code)
  end)

  it("mount_s3: a wrong key is s3fs's own error, at once, and leaves nothing behind", function()
    local t0 = require("daytona.core").now()
    local err = fixture.fails(mount.mount_s3, sb, s3_opts{ access_key = "NOBODY" })
    assert.is_true(errors.is(err, errors.DaytonaError), tostring(err))
    assert.is_false(errors.is(err, errors.DaytonaTimeoutError), tostring(err))
    assert.are.equal("EMOUNT", err.code)
    assert.are.equal("s3fs", err.tool)
    assert.matches("mount_s3: s3fs exited", tostring(err), 1, true)
    assert.matches("invalid credentials", tostring(err), 1, true)
    assert.is_true(require("daytona.core").now() - t0 < 30)
    local r = sb.process:exec("mountpoint -q s3; echo $?; pgrep -c s3fs; ls -d /tmp/.dtlua-mount.* 2>/dev/null | wc -l")
    assert.are.equal("32\n0\n0\n", r.result)
  end)

  it("mount_s3 with copy_on_write: the sandbox writes to its own layer, the bucket stays as it was", function()
    sh(("curl -sS -f -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user %s:%s -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --data-binary original %s/data/shared.txt")
      :format(ACCESS, SECRET, s3_url))
    do
      local m <close> = mount.mount_s3(sb, s3_opts{ copy_on_write = true, mount_path = "fork" })
      assert.is_true(m.copy_on_write)
      local r = sb.process:exec("cat fork/shared.txt; echo changed > fork/shared.txt; echo new > fork/mine.txt; "
        .. "cat fork/shared.txt; mount | grep -c fuse-overlayfs")
      assert.are.equal("originalchanged\n1\n", r.result)   -- the object has no newline
      assert.are.equal("original", (s3_get("shared.txt")))
      local body = s3_get("mine.txt")
      assert.matches("NoSuchKey", body, 1, true)
    end
    assert.are.equal("0\n", sb.process:exec("mount | grep -c -e fuse-overlayfs -e s3fs").result)
  end)

  describe("mount_sftp", function()
    local port, home

    setup(function()
      home = server_sb:get_user_home_dir()
      server_sb.fs:upload_file({ data = read(keys .. "/id.pub") }, "/tmp/sshd/authorized_keys")
      server_sb.fs:upload_file({ data = read(keys .. "/host") }, "/tmp/sshd/host_key")
      server_sb.process:exec("chmod 600 /tmp/sshd/host_key; mkdir -p share; echo served > share/f.txt; "
        .. "sudo -n mkdir -p /run/sshd")
      -- sshd as the sandbox's root on a high port, its own config only; the
      -- linked sandbox reaches it over their link, by the server's id
      for _ = 1, 5 do
        port = math.random(20000, 39999)
        local ok = pcall(serve, server_sb, "sshd-" .. port, ("sudo -n /usr/sbin/sshd -D -e -f /dev/null -p %d "
          .. "-o ListenAddress=0.0.0.0 -h /tmp/sshd/host_key -o AuthorizedKeysFile=/tmp/sshd/authorized_keys "
          .. "-o StrictModes=no -o PasswordAuthentication=no -o UsePAM=no -o PidFile=none "
          .. "-o 'Subsystem sftp internal-sftp'"):format(port), "Server listening")
        if ok then return end
      end
      error("sshd did not start")
    end)

    it("mounts a directory of an SSH server in another sandbox, both ways", function()
      local host_key = read(keys .. "/host.pub"):match("^(%S+ %S+)")
      do
        local m <close> = mount.mount_sftp(sb, { host = server_sb.id, port = port, user = "daytona",
          key = read(keys .. "/id"), path = home .. "/share", mount_path = "remote", host_key = host_key })
        assert.are.equal("sshfs", m.tool)
        local r = sb.process:exec("cat remote/f.txt && echo back > remote/g.txt")
        assert.are.equal("served\n", r.result)
        assert.are.equal("back\n", server_sb.process:exec("cat share/g.txt").result)
        assert.is_nil(sb.process:exec("ps -eo args").result:find("PRIVATE KEY", 1, true))
      end
      assert.are.equal(32, sb.process:exec("mountpoint -q remote").exit_code)   -- 32: not a mount point
    end)

    it("a refused key is ssh's own error", function()
      local err = fixture.fails(mount.mount_sftp, sb, { host = server_sb.id, port = port, user = "daytona",
        key = read(keys .. "/host"), path = home .. "/share", mount_path = "remote", timeout = 60 })
      assert.are.equal("EMOUNT", err.code)
      assert.matches("Permission denied (publickey", tostring(err), 1, true)
    end)
  end)

  it("mount_rclone: a WebDAV remote served by rclone in another sandbox", function()
    local home = server_sb:get_user_home_dir()
    server_sb.process:exec("mkdir -p dav && echo 'over webdav' > dav/a.txt")
    local port
    for _ = 1, 5 do
      port = math.random(20000, 39999)
      if pcall(serve, server_sb, "dav-" .. port, ("rclone serve webdav %s/dav --addr 0.0.0.0:%d --user u --pass p")
        :format(home, port), "WebDav Server started") then break end
      port = nil
    end
    assert(port, "rclone serve did not start")
    local obscured = sh("rclone obscure p"):gsub("%s+$", "")
    local conf = ("[dav]\ntype = webdav\nurl = http://%s:%d\nvendor = other\nuser = u\npass = %s\n")
      :format(server_sb.id, port, obscured)
    do
      local m <close> = mount.mount_rclone(sb, { remote_config = conf, remote = "dav:", mount_path = "dav" })
      assert.are.equal("rclone", m.tool)
      local r = sb.process:exec("cat dav/a.txt && echo 'from the mount' > dav/b.txt")
      assert.are.equal("over webdav\n", r.result)
      assert.are.equal("from the mount\n", helper.eventually(function()
        local s = server_sb.process:exec("cat dav/b.txt 2>/dev/null").result
        return s ~= "" and s
      end, 20, 0.2))
    end
    -- rclone's own message for a config it cannot use
    local err = fixture.fails(mount.mount_rclone, sb, { remote_config = conf:gsub("pass = %S+", "pass = plain"),
      remote = "dav:", mount_path = "dav" })
    assert.are.equal("EMOUNT", err.code)
    assert.matches("rclone exited", tostring(err), 1, true)
    assert.matches("is it obscured", tostring(err), 1, true)
  end)

  describe("argument checks and tools that are not there", function()
    local function invalid(fn, opts, arg)
      local err = fixture.fails(fn, sb, opts)
      assert.is_true(errors.is(err, errors.DaytonaValidationError), tostring(err))
      assert.are.equal(arg, err.argument)
      return err
    end

    it("check their options before touching the sandbox", function()
      invalid(mount.mount_s3, { mount_path = "x" }, "bucket")
      invalid(mount.mount_s3, { bucket = "b" }, "mount_path")
      invalid(mount.mount_s3, { bucket = "b", mount_path = "x", access_key = "k" }, "secret_key")
      assert.matches("nope", tostring(invalid(mount.mount_s3, { bucket = "b", mount_path = "x", nope = 1 }, "opts")))
      invalid(mount.mount_s3, { bucket = "b", mount_path = "x", read_only = true, copy_on_write = true },
        "copy_on_write")
      invalid(mount.mount_sftp, { host = "h", user = "u", mount_path = "x" }, "key")
      invalid(mount.mount_sftp, { host = "h", user = "u", key = "k", password = "p", mount_path = "x" }, "key")
      invalid(mount.mount_sftp, { host = "h", user = "u", key = "k", port = 70000, mount_path = "x" }, "port")
      invalid(mount.mount_rclone, { remote_config = "[x]\n", remote = "nocolon", mount_path = "x" }, "remote")
      invalid(mount.mount_gcs, { mount_path = "x" }, "bucket")
      invalid(mount.mount_azure, { account = "a", container = "c", mount_path = "x" }, "account_key")
      invalid(mount.mount_azure, { account = "a", mount_path = "x", sas = "s" }, "container")
      local err = fixture.fails(mount.mount_s3, "not a sandbox", { bucket = "b", mount_path = "x" })
      assert.are.equal("sandbox", err.argument)
    end)

    it("gcsfuse and blobfuse2 missing with install = false: an error naming the tool", function()
      for name, call in pairs{
        gcsfuse = function() return mount.mount_gcs(sb, { bucket = "b", mount_path = "g", install = false }) end,
        blobfuse2 = function()
          return mount.mount_azure(sb, { account = "a", container = "c", account_key = "k", mount_path = "az",
            install = false })
        end,
      } do
        local err = fixture.fails(call)
        assert.is_true(errors.is(err, errors.DaytonaError), tostring(err))
        assert.are.equal("ENOTOOL", err.code)
        assert.are.equal(name, err.tool)
        assert.matches(name .. " not installed in the sandbox", tostring(err), 1, true)
      end
    end)

    it("a mount point already in use is refused", function()
      local m <close> = mount.mount_s3(sb, s3_opts{ mount_path = "busy" })
      local err = fixture.fails(mount.mount_s3, sb, s3_opts{ mount_path = "busy" })
      assert.are.equal("EBUSY", err.code)
      assert.matches("already a mount point", tostring(err), 1, true)
    end)
  end)
end)
