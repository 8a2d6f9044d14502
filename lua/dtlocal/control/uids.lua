--- dtlocal.control.uids: host uid/gid ranges for sandboxes, unique across every
-- dtlocal on the machine.
--
-- Each sandbox owns one *slot*: host ids `base + slot * size` up to
-- `base + (slot + 1) * size - 1`, mapped to ids 0..size-1 inside its user
-- namespace. A slot is claimed by creating the directory `<dir>/<slot>`
-- (mkdir is atomic and exclusive, so two servers never get the same one)
-- and writing into it the path of the sandbox record that owns it. The
-- claim lasts as long as the sandbox exists, stopped or started, because the
-- files of its overlay belong to those host ids.
--
-- A claim is stale when its owner record no longer exists (the sandbox was
-- deleted while no server ran, or a spec's temp state dir was removed) and
-- it is older than STALE_AGE seconds (so a claim whose record is still being
-- written is never taken). Stale claims are swept by one server at a time,
-- under the `<dir>/.sweep` lock directory.
--
--   local pool = uids.new{ dir = "/var/lib/dtlua/uid-slots" }
--   local slot, first = pool:claim(record_path)   -- or nil, message
--   pool:release(slot, record_path)
local core = require "daytona.core"
local fs = require "dtlocal.fs"

local type, tostring, tonumber, io, os, math, setmetatable, ipairs =
  type, tostring, tonumber, io, os, math, setmetatable, ipairs

local util = core.util

local M = {}

M.BASE = 1 << 30        -- far above any system or login uid, and subuid ranges
M.SIZE = 65536          -- a full 16-bit id space per sandbox (nobody = 65534)
M.SLOTS = 16384         -- BASE + SLOTS * SIZE stays below 2^32 - 1
M.STALE_AGE = 120       -- seconds

--- The machine-wide registry directory: a system path when running as root
-- (ranges need root to be mapped), else one under the user's runtime dir.
function M.default_dir()
  if util.getuid() == 0 then return "/var/lib/dtlua/uid-slots" end
  local base = os.getenv("XDG_RUNTIME_DIR")
  if not base or base == "" then base = "/tmp" end
  return base .. "/dtlua-uid-slots-" .. util.getuid()
end

local Pool = {}
Pool.__index = Pool
Pool.__name = "dtlocal.UidPool"

--- A pool over opts.dir (created if missing; mode 0700).
-- opts: dir, base, size, slots (defaults above).
function M.new(opts)
  opts = opts or {}
  local pool = setmetatable({
    dir = opts.dir or M.default_dir(),
    base = opts.base or M.BASE,
    size = opts.size or M.SIZE,
    slots = opts.slots or M.SLOTS,
  }, Pool)
  local ok, msg = fs.mkdirs(pool.dir, 448)
  if not ok then error("cannot create the uid registry " .. pool.dir .. ": " .. msg, 0) end
  return pool
end

--- The first host id of a slot.
function Pool:first(slot)
  return self.base + slot * self.size
end

local read_owner = fs.read_file

local function write_owner(path, owner)
  local f = io.open(path, "wb")
  if not f then return false end
  local ok = f:write(owner)
  f:close()
  return ok and true or false
end

--- The claim directory of a slot.
function Pool:slot_dir(slot)
  return self.dir .. "/" .. slot
end

--- Try to take slot for owner: true, or false if it is taken.
function Pool:try(slot, owner)
  local dir = self:slot_dir(slot)
  local ok, _, code = util.mkdir(dir, 448)
  if not ok then
    if code == "EEXIST" then return false end
    error("cannot claim uid slot " .. slot .. " in " .. self.dir .. ": " .. tostring(code), 0)
  end
  if not write_owner(dir .. "/owner", owner) then
    os.remove(dir)
    error("cannot write the owner of uid slot " .. slot .. " in " .. self.dir, 0)
  end
  return true
end

--- Claim a free slot for the record at path `owner`. Returns slot, first
-- host id; or nil, message when every slot is taken.
function Pool:claim(owner)
  -- start at a random slot: concurrent servers rarely try the same ones
  local start = (tonumber(util.hex(util.random_bytes(4)), 16) or 0) % self.slots
  for pass = 1, 2 do
    for i = 0, self.slots - 1 do
      local slot = (start + i) % self.slots
      if self:try(slot, owner) then return slot, self:first(slot) end
    end
    if pass == 1 and self:sweep() == 0 then break end
  end
  return nil, ("all %d uid slots in %s are taken"):format(self.slots, self.dir)
end

--- Keep (or take again) a slot recorded for owner, e.g. after a restart.
-- Returns true if the slot is ours; false if another sandbox holds it.
function Pool:keep(slot, owner)
  if type(slot) ~= "number" or slot < 0 or slot >= self.slots then return false end
  local dir = self:slot_dir(slot)
  local cur = read_owner(dir .. "/owner")
  if cur == owner then return true end
  if cur == nil and util.stat(dir) == nil then return self:try(slot, owner) end
  return false
end

--- Release a slot held by owner (no-op if someone else holds it).
function Pool:release(slot, owner)
  if type(slot) ~= "number" then return end
  local dir = self:slot_dir(slot)
  if read_owner(dir .. "/owner") ~= owner then return end
  os.remove(dir .. "/owner")
  os.remove(dir)
end

local function age(st, now)
  return st and (now - st.mtime) or math.huge
end

--- Remove stale claims; returns how many were freed. Only one server
-- sweeps at a time (a sweep lock older than STALE_AGE is broken).
function Pool:sweep()
  local lock = self.dir .. "/.sweep"
  local now = os.time()
  local ok = util.mkdir(lock, 448)
  if not ok then
    if age(util.stat(lock), now) < M.STALE_AGE then return 0 end
    os.remove(lock)
    if not util.mkdir(lock, 448) then return 0 end
  end
  local freed = 0
  for _, name in ipairs(util.readdir(self.dir) or {}) do
    if name:match("^%d+$") then
      local dir = self.dir .. "/" .. name
      local ofile = dir .. "/owner"
      local owner = read_owner(ofile)
      local st = util.stat(owner and ofile or dir)
      if age(st, now) >= M.STALE_AGE and (owner == nil or util.stat(owner) == nil) then
        os.remove(ofile)
        if os.remove(dir) then freed = freed + 1 end
      end
    end
  end
  os.remove(lock)
  return freed
end

return M
