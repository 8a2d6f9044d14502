--- Storage mounts: a bucket, a remote directory or any rclone remote as a
-- directory of a sandbox, through a FUSE tool running in the sandbox.
--
--     local mount = require "daytona.recipes.mount"
--     local m <close> = mount.mount_s3(sb, { bucket = "data", mount_path = "/home/daytona/data",
--       access_key = key, secret_key = secret })
--     sb.process:exec("ls " .. m.mount_path)
--   -- the scope's end unmounts (m:close() does it earlier)
--
-- Every function takes the sandbox first and an options table, and:
--
-- * installs the tool if the sandbox lacks it (Debian's `s3fs`, `sshfs`,
--   `rclone`, `fuse3`, `fuse-overlayfs` with apt-get; Google's `gcsfuse` and
--   Microsoft's `blobfuse2` from their vendors' apt repositories, which needs
--   the network). `install = false` only checks. A tool that is missing and
--   cannot be installed raises `DaytonaError` (code `ENOTOOL`) naming it and
--   saying why;
-- * writes the secrets to files in a private directory of the sandbox (mode
--   0700, files 0600) and hands the tool their paths, so no secret is ever on
--   a command line that `ps` shows or in a session's command record;
-- * runs the tool in the foreground in a session of its own, so its output is
--   kept, and waits (`timeout`, 120 s by default, one deadline for install and
--   mount) until `mountpoint -q` holds and the mount's root can be listed;
-- * raises `DaytonaError` (code `EMOUNT`, fields `tool` and `output`) with the
--   tool's own message when it exits before that, and `DaytonaTimeoutError`
--   (with the output so far) when the deadline passes; either way nothing is
--   left mounted or running;
-- * returns a `Mount` handle: `mount_path`, `tool`, `close()` (also `<close>`)
--   unmounts, stops the tool and removes the secrets; `logs()` gives the
--   tool's output so far.
--
-- `copy_on_write = true` gives the sandbox a private, writable fork of the
-- storage: the tool mounts at a hidden lower directory and `fuse-overlayfs`
-- lays an upper directory of the sandbox over it at `mount_path`. Writes go
-- to the upper directory only; the bucket is never changed (the tool mounts
-- it read-only).
--
-- Common options: `mount_path` (required; relative to the sandbox's home
-- unless absolute; made if missing), `read_only`, `copy_on_write`, `install`
-- (default true), `timeout` (seconds), `options` (a list of extra arguments
-- for the tool, put before the source and the mount path).
local check = require "daytona.check"
local errors = require "daytona.errors"
local scheduler = require "daytona.runtime.scheduler"
local core = require "daytona.core"
local common_ = require "daytona.recipes.common"

local setmetatable, type, ipairs, pairs, pcall, error, tostring, io =
  setmetatable, type, ipairs, pairs, pcall, error, tostring, io
local concat = table.concat
local q, tail, remaining, run, fail = common_.q, common_.tail, common_.remaining, common_.run, common_.fail

local M = {}

local DEFAULT_TIMEOUT = 120
local POLL = 0.2

---------------------------------------------------------------------------
-- installing the tools
---------------------------------------------------------------------------

-- Debian's packages for the commands a mount needs (default: the
-- command's name), and the vendors' installs, as Daytona's "Mount External
-- Storage" guide does them (their bookworm repositories, which also serve
-- trixie); `probe` is a URL that must answer first.
local PACKAGES = {
  fusermount = "fuse3",
  gcsfuse = {
    probe = "https://packages.cloud.google.com/apt/doc/apt-key.gpg",
    script = [[
set -e
sudo -n mkdir -p /etc/apt/keyrings
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo -n gpg --batch --yes --dearmor -o /etc/apt/keyrings/gcsfuse.gpg
echo "deb [signed-by=/etc/apt/keyrings/gcsfuse.gpg] https://packages.cloud.google.com/apt gcsfuse-bookworm main" | sudo -n tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
sudo -n apt-get update -q
sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcsfuse
]],
  },
  blobfuse2 = {
    probe = "https://packages.microsoft.com/keys/microsoft.asc",
    script = [[
set -e
curl -fsSL https://packages.microsoft.com/keys/microsoft.asc | sudo -n gpg --batch --yes --dearmor -o /etc/apt/trusted.gpg.d/microsoft.gpg
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/trusted.gpg.d/microsoft.gpg] https://packages.microsoft.com/debian/12/prod bookworm main" | sudo -n tee /etc/apt/sources.list.d/microsoft-prod.list >/dev/null
sudo -n apt-get update -q
sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q blobfuse2 fuse3
# blobfuse2's bookworm build links libfuse3.so.3; trixie ships .so.4
if ! ldconfig -p | grep -q 'libfuse3\.so\.3 '; then
  src=$(find /usr/lib /lib -name 'libfuse3.so.*.*' -type f 2>/dev/null | head -n1)
  [ -n "$src" ] && sudo -n ln -sf "$src" "$(dirname "$src")/libfuse3.so.3" && sudo -n ldconfig
fi
]],
  },
}

local function ensure_tools(f, sb, cmds, install, deadline)
  return common_.ensure_tools(f, sb, cmds, install, deadline, PACKAGES)
end

---------------------------------------------------------------------------
-- the handle
---------------------------------------------------------------------------

local Mount = {}
Mount.__index = Mount
Mount.__name = "daytona.recipes.mount.Mount"

-- Run `command` in a session of its own, in the background; returns the
-- process record `{ session, cmd_id, path, tool }`.
local function start_process(sb, tool, command, path, deadline)
  local p = common_.start(sb, "mount", tool, command, deadline)
  p.path = path
  return p
end

local process_output = common_.output

-- Unmount one process's mount (lazily if it is busy), then end its session.
local function stop_process(sb, p, timeout)
  local path = q(p.path)
  pcall(sb.process.exec, sb.process,
    ("if mountpoint -q %s; then fusermount3 -u %s 2>/dev/null || fusermount -u %s 2>/dev/null "
      .. "|| fusermount3 -uz %s 2>/dev/null || fusermount -uz %s 2>/dev/null || sudo -n umount -l %s; fi")
      :format(path, path, path, path, path, path), { timeout = timeout })
  pcall(sb.process.delete_session, sb.process, p.session)
end

-- Wait until `path` is a mount point whose root can be listed. A tool that
-- exits first raises EMOUNT with its output; the deadline DaytonaTimeoutError.
local function wait_mounted(f, sb, p, deadline)
  local probe = ("mountpoint -q %s && ls -A %s >/dev/null"):format(q(p.path), q(p.path))
  while true do
    local st = sb.process:get_session_command(p.session, p.cmd_id)
    if st.exit_code ~= nil then
      local out = process_output(sb, p)
      fail(f, ("%s exited (code %s) before %s was mounted: %s"):format(p.tool, tostring(st.exit_code), p.path,
        tail(out, 6, "(no output)")), { code = "EMOUNT", tool = p.tool, output = out })
    end
    if run(sb, probe, deadline).exit_code == 0 then return end
    if core.now() >= deadline then
      local out = process_output(sb, p)
      error(errors.DaytonaTimeoutError(("%s: %s did not mount %s in time; its output so far: %s")
        :format(f, p.tool, p.path, tail(out, 6, "(none)")),
        { code = "ETIMEDOUT", tool = p.tool, output = out }), 0)
    end
    scheduler.sleep(POLL)
  end
end

--- Unmount: stops the tool(s) in the sandbox, removes the mount's private
-- directory (secrets, copy-on-write layers). Safe to call more than once;
-- also what a `<close>` variable does at its scope's end.
-- @param opts optional `{ timeout = 30 }`
-- @return nothing
-- @raise DaytonaError if the mount point is still mounted afterwards
function Mount:close(opts)
  if self.closed then return end
  self.closed = true
  opts = check.options(opts, "close", check.set("timeout"))
  local timeout = check.timeout(opts.timeout, "close", 30)
  local sb = self.sandbox
  -- the overlay first: it holds the lower mount busy
  for i = #self._procs, 1, -1 do stop_process(sb, self._procs[i], timeout) end
  local r = sb.process:exec(("rm -rf %s; mountpoint -q %s && echo still mounted || true")
    :format(q(self._dir), q(self.mount_path)), { timeout = timeout })
  if r.result:find("still mounted", 1, true) then
    error(errors.DaytonaError(("unmount %s: it is still mounted"):format(self.mount_path),
      { code = "EBUSY" }), 0)
  end
end

--- The tool's output so far (for a copy-on-write mount, the storage tool's
-- and then fuse-overlayfs's).
-- @return string
function Mount:logs()
  return common_.logs(self.sandbox, self._procs)
end

-- `local m <close> = mount.mount_s3(...)`: unmount at the scope's end. When
-- the scope ends by an error, a failure to unmount goes to stderr and the
-- original error goes on.
function Mount:__close(err)
  common_.close_scope(self, err, "unmount " .. tostring(self.mount_path))
end

function Mount:__tostring()
  return ("Mount{tool=%q, mount_path=%q%s}"):format(self.tool, self.mount_path,
    self.copy_on_write and ", copy_on_write=true" or "")
end

---------------------------------------------------------------------------
-- the common path
---------------------------------------------------------------------------

local COMMON = { "mount_path", "read_only", "copy_on_write", "install", "timeout", "options" }

local function option_set(extra)
  return common_.option_set(COMMON, extra)
end

-- Check a recipe's arguments: the sandbox, then `opts` against the
-- recipe's option set; returns the common options normalised.
local function common(f, sb, opts, allowed)
  common_.sandbox(f, sb)
  check.options(check.table(opts, f, "opts"), f, allowed, "opts")
  local c = {
    mount_path = check.string(opts.mount_path, f, "mount_path"),
    read_only = check.optboolean(opts.read_only, f, "read_only") or false,
    copy_on_write = check.optboolean(opts.copy_on_write, f, "copy_on_write") or false,
  }
  c.install, c.timeout = common_.install_timeout(f, opts, DEFAULT_TIMEOUT)
  c.options = opts.options and check.strlist(opts.options, f, "options") or {}
  if c.copy_on_write and c.read_only then
    check.argerror(f, "copy_on_write", "a copy-on-write mount is writable: drop read_only")
  end
  return c
end

-- recipe = { tool, needs = { other commands }, secrets = function(dir) -> { [name] = text },
--            command = function(target, dir, ro, extra) -> shell words (a string) }
local function mount(f, sb, c, recipe)
  local deadline = core.now() + c.timeout
  local cmds = { recipe.tool }
  for _, x in ipairs(recipe.needs or {}) do cmds[#cmds + 1] = x end
  cmds[#cmds + 1] = "fusermount"
  if c.copy_on_write then cmds[#cmds + 1] = "fuse-overlayfs" end
  ensure_tools(f, sb, cmds, c.install, deadline)

  -- the mount point, absolute (relative paths from the home, where exec
  -- starts), and the private directory; umask so nothing in it is ever
  -- readable by others, even before a chmod
  local r = run(sb, ("set -e; mkdir -p %s; cd %s; p=$(pwd -P); if mountpoint -q \"$p\"; then echo \"busy $p\"; "
    .. "exit 0; fi; umask 077; d=$(mktemp -d /tmp/.dtlua-mount.XXXXXX); echo \"ok $p\"; echo \"dir $d\"")
    :format(q(c.mount_path), q(c.mount_path)), deadline)
  local busy = r.result:match("busy ([^\n]+)")
  if busy then fail(f, busy .. " is already a mount point", { code = "EBUSY" }) end
  local path, dir = r.result:match("ok ([^\n]+)"), r.result:match("dir ([^\n]+)")
  if r.exit_code ~= 0 or not path or not dir then
    fail(f, ("cannot make the mount point %s: %s"):format(c.mount_path, tail(r.result, 3)), { code = "EINVAL" })
  end

  local self = setmetatable({ sandbox = sb, mount_path = path, tool = recipe.tool, copy_on_write = c.copy_on_write,
    read_only = c.read_only, closed = false, _dir = dir, _procs = {} }, Mount)
  local ok, err = pcall(function()
    local secrets = recipe.secrets and recipe.secrets(dir) or {}
    local names = {}
    for name, text in pairs(secrets) do
      sb.fs:upload_file({ data = text }, dir .. "/" .. name, { timeout = remaining(deadline) })
      names[#names + 1] = q(dir .. "/" .. name)
    end
    -- s3fs refuses a passwd_file others may read; the directory is 0700 anyway
    if #names > 0 then run(sb, "chmod 600 " .. concat(names, " "), deadline) end
    local target = path
    if c.copy_on_write then
      target = dir .. "/lower"
      run(sb, ("mkdir -p %s %s %s"):format(q(target), q(dir .. "/upper"), q(dir .. "/work")), deadline)
    end
    -- the storage itself stays read-only under a fork: writes go to the upper dir
    local ro = c.read_only or c.copy_on_write
    local extra = {}
    for _, o in ipairs(c.options) do extra[#extra + 1] = q(o) end
    local p = start_process(sb, recipe.tool,
      "exec " .. recipe.command(q(target), dir, ro, concat(extra, " ")) .. " 2>&1", target, deadline)
    self._procs[#self._procs + 1] = p
    wait_mounted(f, sb, p, deadline)
    if c.copy_on_write then
      local ov = start_process(sb, "fuse-overlayfs",
        ("exec fuse-overlayfs -f -o %s %s 2>&1"):format(q(("lowerdir=%s,upperdir=%s,workdir=%s")
          :format(target, dir .. "/upper", dir .. "/work")), q(path)), path, deadline)
      self._procs[#self._procs + 1] = ov
      wait_mounted(f, sb, ov, deadline)
      self.upper_path = dir .. "/upper"
    end
  end)
  if not ok then
    -- leave nothing mounted or running, then report the first failure
    pcall(self.close, self, { timeout = 30 })
    error(err, 0)
  end
  return self
end

---------------------------------------------------------------------------
-- the recipes
---------------------------------------------------------------------------

local S3_OPTS = option_set{ "bucket", "endpoint", "access_key", "secret_key", "region", "prefix", "path_style" }

--- Mount an S3 bucket (AWS, or any S3-compatible store: R2, MinIO, ...) with
-- s3fs (Debian's `s3fs`).
-- @param sandbox the sandbox
-- @param opts `{ bucket =, mount_path =, endpoint = URL, access_key =,
--   secret_key =, region =, read_only = false, prefix = "dir/in/bucket",
--   path_style = (default: true when `endpoint` is given), copy_on_write,
--   install, timeout, options }`. No keys: a public bucket. The keys go to
--   s3fs in a 0600 `passwd_file`.
-- @return a `Mount`
-- @raise DaytonaValidationError for bad options; DaytonaError (`EMOUNT`)
--   with s3fs's message (a wrong key, a missing bucket); `ENOTOOL`;
--   DaytonaTimeoutError
function M.mount_s3(sandbox, opts)
  local f = "mount_s3"
  local c = common(f, sandbox, opts, S3_OPTS)
  local bucket = check.string(opts.bucket, f, "bucket")
  local endpoint = check.optstring(opts.endpoint, f, "endpoint")
  local access = check.optstring(opts.access_key, f, "access_key")
  local secret = check.optstring(opts.secret_key, f, "secret_key")
  local region = check.optstring(opts.region, f, "region")
  local prefix = check.optstring(opts.prefix, f, "prefix")
  local path_style = check.optboolean(opts.path_style, f, "path_style")
  if (access == nil) ~= (secret == nil) then
    check.argerror(f, access and "secret_key" or "access_key", "give both keys, or neither for a public bucket")
  end
  if path_style == nil then path_style = endpoint ~= nil end
  local url = endpoint or (region and ("https://s3.%s.amazonaws.com"):format(region)) or "https://s3.amazonaws.com"
  local source = bucket
  if prefix then source = bucket .. ":/" .. prefix:gsub("^/+", ""):gsub("/+$", "") end
  return mount(f, sandbox, c, {
    tool = "s3fs",
    secrets = function() return access and { passwd = access .. ":" .. secret .. "\n" } or {} end,
    command = function(target, dir, ro, extra)
      local o = { "url=" .. url }
      if access then o[#o + 1] = "passwd_file=" .. dir .. "/passwd" else o[#o + 1] = "public_bucket=1" end
      if region then o[#o + 1] = "endpoint=" .. region end
      if path_style then o[#o + 1] = "use_path_request_style" end
      if ro then o[#o + 1] = "ro" end
      -- retries=1: a wrong key is reported at once, not after five attempts
      o[#o + 1] = "retries=1"
      return ("s3fs %s %s -f -o %s %s"):format(q(source), target, q(concat(o, ",")), extra)
    end,
  })
end

local GCS_OPTS = option_set{ "bucket", "key_json", "prefix", "endpoint" }

--- Mount a Google Cloud Storage bucket with gcsfuse. gcsfuse is not a
-- Debian package: when it is missing it is installed from Google's apt
-- repository, which needs the sandbox to have the network.
-- @param sandbox the sandbox
-- @param opts `{ bucket =, mount_path =, key_json = (the text of a service
--   account's JSON key), prefix = "dir" (gcsfuse's --only-dir), endpoint =,
--   read_only, copy_on_write, install, timeout, options }`. No key: the
--   sandbox's default credentials. The key goes to `--key-file`, 0600.
-- @return a `Mount`
-- @raise DaytonaValidationError; DaytonaError (`ENOTOOL`: gcsfuse missing
--   and Google's repository unreachable; `EMOUNT` with gcsfuse's message);
--   DaytonaTimeoutError
function M.mount_gcs(sandbox, opts)
  local f = "mount_gcs"
  local c = common(f, sandbox, opts, GCS_OPTS)
  local bucket = check.string(opts.bucket, f, "bucket")
  local key = check.optstring(opts.key_json, f, "key_json")
  local prefix = check.optstring(opts.prefix, f, "prefix")
  local endpoint = check.optstring(opts.endpoint, f, "endpoint")
  return mount(f, sandbox, c, {
    tool = "gcsfuse",
    secrets = function() return key and { ["key.json"] = key } or {} end,
    command = function(target, dir, ro, extra)
      local w = { "gcsfuse", "--foreground" }
      if key then w[#w + 1] = q("--key-file=" .. dir .. "/key.json") end
      if prefix then w[#w + 1] = q("--only-dir=" .. prefix) end
      if endpoint then w[#w + 1] = q("--custom-endpoint=" .. endpoint) end
      if ro then w[#w + 1] = "-o ro" end
      w[#w + 1] = extra
      w[#w + 1] = q(bucket)
      w[#w + 1] = target
      return concat(w, " ")
    end,
  })
end

local AZURE_OPTS = option_set{ "account", "container", "account_key", "sas", "endpoint", "prefix" }

-- YAML's double-quoted scalar, for values we did not write ourselves.
local function yq(s)
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end

--- Mount an Azure Blob container with blobfuse2. blobfuse2 is not a Debian
-- package: when it is missing it is installed from Microsoft's apt
-- repository (with the guide's libfuse3.so.3 fix), which needs the network.
-- @param sandbox the sandbox
-- @param opts `{ account =, container =, mount_path =, account_key = | sas =,
--   endpoint = (default https://ACCOUNT.blob.core.windows.net), prefix =
--   "dir" (blobfuse2's subdirectory), read_only, copy_on_write, install,
--   timeout, options }`. The key goes into blobfuse2's YAML config, 0600.
-- @return a `Mount`
-- @raise DaytonaValidationError; DaytonaError (`ENOTOOL`: blobfuse2 missing
--   and Microsoft's repository unreachable; `EMOUNT` with blobfuse2's
--   message); DaytonaTimeoutError
function M.mount_azure(sandbox, opts)
  local f = "mount_azure"
  local c = common(f, sandbox, opts, AZURE_OPTS)
  local account = check.string(opts.account, f, "account")
  local container = check.string(opts.container, f, "container")
  local key = check.optstring(opts.account_key, f, "account_key")
  local sas = check.optstring(opts.sas, f, "sas")
  local prefix = check.optstring(opts.prefix, f, "prefix")
  local endpoint = check.optstring(opts.endpoint, f, "endpoint") or ("https://%s.blob.core.windows.net"):format(account)
  if (key == nil) == (sas == nil) then check.argerror(f, "account_key", "give account_key or sas (one of them)") end
  return mount(f, sandbox, c, {
    tool = "blobfuse2",
    secrets = function(dir)
      local y = {
        "logging:", "  type: base", "  level: log_warning", "  file-path: " .. yq(dir .. "/blobfuse2.log"),
        "components:", "  - libfuse", "  - block_cache", "  - attr_cache", "  - azstorage",
        "block_cache:", "  path: " .. yq(dir .. "/cache"),
        "azstorage:", "  type: block", "  account-name: " .. yq(account), "  container: " .. yq(container),
        "  endpoint: " .. yq(endpoint),
      }
      if key then
        y[#y + 1] = "  mode: key"; y[#y + 1] = "  account-key: " .. yq(key)
      else
        y[#y + 1] = "  mode: sas"; y[#y + 1] = "  sas: " .. yq(sas)
      end
      if prefix then y[#y + 1] = "  subdirectory: " .. yq(prefix) end
      return { ["config.yaml"] = concat(y, "\n") .. "\n" }
    end,
    command = function(target, dir, ro, extra)
      return ("blobfuse2 mount %s %s --foreground%s %s"):format(target, q("--config-file=" .. dir .. "/config.yaml"),
        ro and " --read-only" or "", extra)
    end,
  })
end

local SFTP_OPTS = option_set{ "host", "port", "user", "key", "password", "path", "host_key" }

--- Mount a directory of an SSH server with sshfs (Debian's `sshfs`).
-- @param sandbox the sandbox
-- @param opts `{ host =, port = 22, user =, key = (the text of a private key)
--   | password =, path = "/dir/on/server" (default: the user's home),
--   mount_path =, host_key = (the server's public host key, "ssh-ed25519
--   AAAA..."), read_only, copy_on_write, install, timeout, options }`. The
--   key goes to ssh as `IdentityFile` and the password on sshfs's stdin from
--   a file, both 0600. Without `host_key` the server's key is accepted on
--   first use (into a known_hosts file of this mount only).
-- @return a `Mount`
-- @raise DaytonaValidationError; DaytonaError (`EMOUNT` with ssh's message:
--   a refused key, an unreachable host); `ENOTOOL`; DaytonaTimeoutError
function M.mount_sftp(sandbox, opts)
  local f = "mount_sftp"
  local c = common(f, sandbox, opts, SFTP_OPTS)
  local host = check.string(opts.host, f, "host")
  local port = check.optinteger(opts.port, f, "port", 1, 65535) or 22
  local user = check.string(opts.user, f, "user")
  local key = check.optstring(opts.key, f, "key")
  local password = check.optstring(opts.password, f, "password")
  local path = check.optstring(opts.path, f, "path") or ""
  local host_key = check.optstring(opts.host_key, f, "host_key")
  if (key == nil) == (password == nil) then check.argerror(f, "key", "give key or password (one of them)") end
  return mount(f, sandbox, c, {
    tool = "sshfs",
    needs = { "ssh" },
    secrets = function()
      local s = {}
      -- ssh wants a key file that ends with a newline
      if key then s.id = key:gsub("\n?$", "\n", 1) else s.password = password end
      local known = port == 22 and host or ("[%s]:%d"):format(host, port)
      s.known_hosts = host_key and (known .. " " .. host_key:gsub("%s+$", "") .. "\n") or ""
      return s
    end,
    command = function(target, dir, ro, extra)
      local o = {
        "UserKnownHostsFile=" .. dir .. "/known_hosts",
        "StrictHostKeyChecking=" .. (host_key and "yes" or "accept-new"),
        "ServerAliveInterval=15", "reconnect",
      }
      if key then
        o[#o + 1] = "IdentityFile=" .. dir .. "/id"
        o[#o + 1] = "IdentitiesOnly=yes"
        -- never wait for a password nobody will type
        o[#o + 1] = "BatchMode=yes"
      else
        o[#o + 1] = "password_stdin"
        o[#o + 1] = "PubkeyAuthentication=no"
      end
      if ro then o[#o + 1] = "ro" end
      local cmd = ("sshfs %s %s -f -p %d -o %s %s"):format(q(user .. "@" .. host .. ":" .. path), target, port,
        q(concat(o, ",")), extra)
      if password then cmd = cmd .. " < " .. q(dir .. "/password") end
      return cmd
    end,
  })
end

local RCLONE_OPTS = option_set{ "remote_config", "remote" }

--- Mount any rclone remote (WebDAV, SFTP, S3, Drive, ...) with `rclone
-- mount` (Debian's `rclone`).
-- @param sandbox the sandbox
-- @param opts `{ remote_config = (the text of an rclone.conf), remote = "name:path",
--   mount_path =, read_only, copy_on_write, install, timeout, options }`.
--   The config goes to rclone as `--config`, 0600; writes are cached
--   (`--vfs-cache-mode writes`) so programs can write files as they do on
--   a disk, and uploaded as soon as the file is closed.
-- @return a `Mount`
-- @raise DaytonaValidationError; DaytonaError (`EMOUNT` with rclone's
--   message); `ENOTOOL`; DaytonaTimeoutError (a remote that never answers)
function M.mount_rclone(sandbox, opts)
  local f = "mount_rclone"
  local c = common(f, sandbox, opts, RCLONE_OPTS)
  local config = check.string(opts.remote_config, f, "remote_config")
  local remote = check.string(opts.remote, f, "remote")
  if not remote:find(":", 1, true) then check.argerror(f, "remote", '"name:path" expected') end
  return mount(f, sandbox, c, {
    tool = "rclone",
    secrets = function() return { ["rclone.conf"] = config } end,
    command = function(target, dir, ro, extra)
      return ("rclone mount %s %s --config %s --cache-dir %s --vfs-cache-mode writes --vfs-write-back 0s%s %s"):format(q(remote), target,
        q(dir .. "/rclone.conf"), q(dir .. "/cache"), ro and " --read-only" or "", extra)
    end,
  })
end

M.Mount = Mount

return M
