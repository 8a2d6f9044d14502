-- examples/mount_s3.lua: an S3 bucket as a directory of a sandbox.
--
--     build/bin/dtlua examples/mount_s3.lua
--
-- With S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY and S3_SECRET_KEY set, it
-- mounts that bucket. Without them it starts s3rver, a small S3-compatible
-- server (spec/s3, installed by `make deps`), on this machine: a local
-- sandbox has a network of its own that reaches none of this machine's
-- addresses, so the sandbox's allow list names the one it reaches s3rver
-- at, its gateway (a sandbox on Daytona's cloud would not reach this
-- machine at all: give it a real bucket).
--
-- The sandbox writes a file through the mount, we read it back as an
-- object over S3's own API, and then a copy-on-write fork of the same
-- bucket lets the sandbox change files without touching the bucket.
local daytona = require "daytona"
local mount = require "daytona.recipes.mount"
local process = daytona.process
local http = daytona.http

local endpoint, bucket = os.getenv("S3_ENDPOINT"), os.getenv("S3_BUCKET") or "example"
local access_key, secret_key = os.getenv("S3_ACCESS_KEY"), os.getenv("S3_SECRET_KEY")
local s3rver, data
if not endpoint then
  local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
  data = io.popen("mktemp -d"):read("l")
  s3rver = process.spawn({ "node", here .. "/../spec/s3/node_modules/s3rver/bin/s3rver.js", "-d", data,
    "-a", "0.0.0.0", "-p", "0", "--configure-bucket", bucket, "--silent" }, { stdin = "null", stderr = "stdout" })
  for line in s3rver:lines("stdout", 30) do
    local port = line:match("listening on [%d.]+:(%d+)")
    if port then endpoint = "http://127.0.0.1:" .. port break end
  end
  assert(endpoint, "s3rver did not start (run `make deps`, or set S3_ENDPOINT)")
  access_key, secret_key = "S3RVER", "S3RVER"     -- s3rver's built-in account
  print("started s3rver for bucket " .. bucket)
end

local client = daytona.new()
local sb <close> = client:create{ labels = { example = "mount-s3" } }
print(("created sandbox %s"):format(sb.id))
local sandbox_endpoint = endpoint
if s3rver then
  -- s3rver listens on every address here; the sandbox may reach its gateway
  local gw = sb.process:exec("ip route show default").result:match("via (%d+%.%d+%.%d+%.%d+)")
  assert(gw, "the sandbox has no default route")
  sb:update_network_settings{ network_allow_list = gw .. "/32" }
  sandbox_endpoint = endpoint:gsub("127%.0%.0%.1", gw)
end

do
  -- s3fs is installed in the sandbox if it is missing; the keys go to it
  -- in a 0600 file, never on a command line
  local m <close> = mount.mount_s3(sb, { bucket = bucket, endpoint = sandbox_endpoint, mount_path = "bucket",
    access_key = access_key, secret_key = secret_key })
  print(("mounted %s at %s with %s"):format(bucket, m.mount_path, m.tool))
  local r = sb.process:exec("date -u +%Y > bucket/report.txt && echo 'written by a sandbox' >> bucket/report.txt "
    .. "&& ls bucket")
  print("the sandbox sees: " .. r.result:gsub("%s+", " "))
end
print("unmounted: " .. sb.process:exec("mountpoint bucket || true").result:gsub("%s+$", ""))

-- The object, over S3's API (s3rver serves it unsigned; a real bucket
-- would want a signed request, as any S3 client makes)
if s3rver then
  local resp = http.request{ url = ("%s/%s/report.txt"):format(endpoint, bucket), timeout = 30 }
  print(("GET %s/report.txt: HTTP %d: %s"):format(bucket, resp.status, resp.body:match("[^\n]*\n(.*)$"):gsub("%s+$", "")))
end

-- A fork: the sandbox changes what it likes, the bucket keeps its copy
do
  local fork <close> = mount.mount_s3(sb, { bucket = bucket, endpoint = sandbox_endpoint, mount_path = "fork",
    access_key = access_key, secret_key = secret_key, copy_on_write = true })
  local r = sb.process:exec("echo 'changed in the fork' > fork/report.txt && tail -n1 fork/report.txt")
  print("the fork reads: " .. r.result:gsub("%s+$", ""))
end
do
  local m <close> = mount.mount_s3(sb, { bucket = bucket, endpoint = sandbox_endpoint, mount_path = "bucket",
    access_key = access_key, secret_key = secret_key, read_only = true })
  print("the bucket still reads: " .. sb.process:exec("tail -n1 bucket/report.txt").result:gsub("%s+$", ""))
end

if s3rver then
  s3rver:kill("TERM"); s3rver:wait(10); s3rver:close()
  os.execute("rm -rf '" .. data .. "'")
end
print("deleting sandbox " .. sb.id)
