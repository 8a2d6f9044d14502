-- examples/snapshots_volumes.lua: the snapshots sandboxes start from, and a
-- volume shared between two sandboxes.
--
--     build/bin/dtlua examples/snapshots_volumes.lua
--
-- A volume is storage that outlives sandboxes: it is mounted at a path when
-- a sandbox is created, and several sandboxes may mount the same one. Here
-- one sandbox writes into the volume and a second one, created afterwards,
-- reads what the first left and adds to it.
--
-- With the local server (dtlocal) the built-in snapshots are the host's
-- own system, seen copy-on-write: `dtlocal` and Daytona's default names
-- (`daytona-small`, `-medium`, `-large`, with their resources); snapshots
-- made from images come first. A volume is a directory of the server's
-- state. On Daytona's cloud the same script lists your organisation's
-- snapshots.
local daytona = require "daytona"

local client = daytona.new()

-- Snapshots: one page of them (the API pages this list).
local page = client.snapshot:list{ limit = 10 }
print(("snapshots: %d in all"):format(page.total))
for _, snap in ipairs(page.items) do
  print(("  %s: %s"):format(snap.name, snap.state))
end
if page.items[1] then
  local snap = client.snapshot:get(page.items[1].name)
  print(("get(%q): id %s"):format(snap.name, snap.id))
end

-- A volume of this run (names are unique within an organisation). It is
-- deleted at the end of the chunk: `<close>` runs in reverse order, so the
-- sandboxes below, which use it, are deleted first (a volume in use cannot
-- be deleted).
local name = ("example-shared-%08x"):format(math.random(0, 0x7fffffff))
local volume = client.volume:get(name, { create = true })
local _ <close> = setmetatable({}, { __close = function()
  client.volume:delete(volume)
  print("deleted volume " .. name)
end })
volume = client.volume:wait_for_ready(volume)
print(("volume %s is %s"):format(volume.name, volume.state))

local MOUNT = "/home/daytona/shared"
local mounts = { { volume_id = volume.id, mount_path = MOUNT } }
local labels = { example = "snapshots-volumes" }

-- The first sandbox writes a file into the volume.
local writer <close> = client:create{ volumes = mounts, labels = labels }
print(("writer: sandbox %s"):format(writer.id))
writer.fs:upload_file({ data = "written by the first sandbox\n" }, MOUNT .. "/notes.txt")
local r = writer.process:exec("df -P " .. MOUNT .. " >/dev/null && ls " .. MOUNT)
print("writer sees: " .. r.result:gsub("%s+$", ""))

-- The second one, created afterwards, finds it there and adds its own file.
local reader <close> = client:create{ volumes = mounts, labels = labels }
print(("reader: sandbox %s"):format(reader.id))
print("reader reads: " .. reader.fs:download_file(MOUNT .. "/notes.txt"):gsub("%s+$", ""))
reader.fs:upload_file({ data = "and the second one answered\n" }, MOUNT .. "/reply.txt")

-- Both are mounted at once: the writer sees the reply straight away.
print("writer now reads: " .. writer.fs:download_file(MOUNT .. "/reply.txt"):gsub("%s+$", ""))

-- Volumes list like this; `include_deleted` shows the ones being removed.
for _, v in ipairs(client.volume:list()) do
  if v.name == name then print(("listed: %s (%s)"):format(v.name, v.state)) end
end
print("deleting the two sandboxes, then the volume")
