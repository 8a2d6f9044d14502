--- dtlocal.control.store: sandbox records on disk.
--
-- Layout under the state dir (doc/dtlocal.md):
--   sandboxes/<id>/sandbox.json   the record (wire fields + `dtlocal` private)
--   sandboxes/<id>/...            the sandbox's own dirs (overlay upper/work, run/)
--   volumes/<id>/volume.json      a volume's record, volumes/<id>/data its files
--
-- Every write is atomic: the JSON goes to a temporary file in the same
-- directory, which is then renamed over the record, so a crash leaves either
-- the old or the new record, never half of one.
--
--   local st = store.new(dir)        -- creates the directories
--   st:save(rec); st:load_all() -> { rec... }, { "warning"... }
--   st:remove(id)                    -- the record only; the caller removes the tree
local core = require "daytona.core"
local fs = require "dtlocal.fs"
local http = require "dtlocal.http"

local type, pairs, ipairs, error, tostring, setmetatable, math =
  type, pairs, ipairs, error, tostring, setmetatable, math
local io, os = io, os

local util = core.util
local json = http.json

local M = {}


--- Write text to path atomically (temp file + rename), with file mode
-- 0600 (the records hold tokens). Returns true or nil, message naming the
-- file. A failure (ENOSPC on a full disk, EIO) leaves the old file as it
-- was and no temp file behind.
function M.write_atomic(path, text)
  local tmp = path .. ".tmp." .. util.getpid()
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  util.chmod(tmp, 384)   -- 0600 before any secret is written
  local ok, werr = f:write(text)
  -- the stdio buffer is written here, so a full disk shows now, not as a
  -- short file after the rename
  if ok then ok, werr = f:flush() end
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, tmp .. ": " .. tostring(werr or cerr)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

-- JSON numbers come back as floats: integral ones become integers again
-- (uid bases, intervals and millisecond clocks are integers).
local function integers(v)
  if type(v) == "number" then
    return math.tointeger(v) or v
  elseif type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  end
  return v
end
M.integers = integers

--- Read and decode a JSON file: value or nil, message.
function M.read_json(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local v, derr = json.decode(text)
  if v == nil then return nil, path .. ": " .. tostring(derr) end
  return integers(v)
end

local Store = {}
Store.__index = Store
Store.__name = "dtlocal.Store"

--- A store rooted at dir (created with its subdirectories if missing).
-- Raises if the directories cannot be made.
function M.new(dir)
  local st = setmetatable({ dir = dir, sandboxes = dir .. "/sandboxes", volumes = dir .. "/volumes" }, Store)
  for _, d in ipairs({ dir, st.sandboxes, st.volumes }) do
    local ok, msg = fs.mkdirs(d, 448)
    if not ok then error("cannot create the state directory: " .. msg, 0) end
  end
  return st
end

--- The directory of a sandbox (its record and the launcher's root dir).
function Store:sandbox_dir(id) return self.sandboxes .. "/" .. id end
--- The directory of a volume (its record and data/).
function Store:volume_dir(id) return self.volumes .. "/" .. id end

--- Save a sandbox record atomically (creating its directory).
function Store:save(rec)
  local dir = self:sandbox_dir(rec.id)
  local ok, msg = util.mkdir(dir, 448)
  if not ok and util.stat(dir, true) == nil then
    error("cannot save sandbox " .. rec.id .. ": " .. tostring(msg), 0)
  end
  ok, msg = M.write_atomic(dir .. "/sandbox.json", json.encode(rec))
  if not ok then error("cannot save sandbox " .. rec.id .. ": " .. tostring(msg), 0) end
end

--- Remove a sandbox record (the file only).
function Store:remove(id)
  os.remove(self:sandbox_dir(id) .. "/sandbox.json")
end

local function load_dir(root, file)
  local out, warnings = {}, {}
  local names = util.readdir(root) or {}
  table.sort(names)
  for _, name in ipairs(names) do
    if not name:find("^%.") then
      local path = root .. "/" .. name .. "/" .. file
      if util.stat(path) then
        local v, err = M.read_json(path)
        if type(v) == "table" and v.id == name then
          out[#out + 1] = v
        else
          warnings[#warnings + 1] = ("ignoring %s: %s"):format(path, err or "not a record of " .. name)
        end
      end
    end
  end
  return out, warnings
end

--- Every sandbox record on disk, and a list of warnings for unreadable ones.
function Store:load_all()
  return load_dir(self.sandboxes, "sandbox.json")
end

--- Save / remove / load volume records.
function Store:save_volume(vol)
  local dir = self:volume_dir(vol.id)
  -- the data dir's owner and mode are the volume's (dtlocal.control.volumes)
  local ok, msg = fs.mkdirs(dir .. "/data", 448)
  if not ok then error("cannot save volume " .. vol.id .. ": " .. msg, 0) end
  ok, msg = M.write_atomic(dir .. "/volume.json", json.encode(vol))
  if not ok then error("cannot save volume " .. vol.id .. ": " .. tostring(msg), 0) end
end

--- Remove a volume record (the file only).
function Store:remove_volume(id)
  os.remove(self:volume_dir(id) .. "/volume.json")
end

--- Every volume record on disk, and warnings for unreadable ones.
function Store:load_volumes()
  return load_dir(self.volumes, "volume.json")
end

return M
