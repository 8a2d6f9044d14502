--- dtlocal.control.record: the Sandbox record, its wire shape, and the checks on
-- every request body of the control plane (doc/protocol.md §3.2, §3.4).
--
-- A record is the API's Sandbox object in its wire shape (camelCase keys,
-- ISO-8601 times) plus a private `dtlocal` table (uid slot, preview token,
-- signed preview tokens, millisecond clocks). `M.wire(rec, base)` gives the
-- JSON object a client sees; `M.check_create(body)` validates a create body.
--
-- Validation failures raise `http.raise(400, message)` with a message
-- that names the field, e.g. `autoStopInterval must be a non-negative
-- integer`. Callers run handlers through `http.call`, which turns that
-- into the structured error body.
local core = require "daytona.core"
local fs = require "dtlocal.fs"
local http = require "dtlocal.http"

local type, pairs, ipairs, tonumber, next, io, os =
  type, pairs, ipairs, tonumber, next, io, os
local floor, tointeger = math.floor, math.tointeger
local concat, format = table.concat, string.format

local json = http.json
local raise = http.raise

local M = {}

M.ORGANIZATION_ID = "local"
M.TARGET = "local"
M.RUNNER_ID = "local"
M.DAEMON_VERSION = "dtlocal-0.1.0"
M.LANGUAGE_LABEL = "code-toolbox-language"
M.LANGUAGES = { python = true, typescript = true, javascript = true }
M.DEFAULT_SNAPSHOT = "dtlocal"          -- the host's root file system, read-only
M.MAX_AUTO_ARCHIVE = 43200              -- minutes (30 days), doc/protocol.md §3.2
-- Bounds of every interval in minutes (auto-stop, -archive, -delete, ttl):
-- a 32-bit integer, over 4000 years. The sweeper compares minutes × 60,000
-- ms with 64-bit clocks; 2^62 minutes would wrap and stop a sandbox at once.
M.MAX_INTERVAL = 2147483647
M.MIN_INTERVAL = -2147483648
M.DEFAULTS = {
  user = "daytona", cpu = 1, gpu = 0, memory = 1, disk = 3,
  autoStopInterval = 15, autoArchiveInterval = 10080, autoDeleteInterval = -1,
}

-- Every state the API may report (doc/protocol.md §3.2).
M.STATES = {}
for s in ([[creating restoring destroyed destroying started stopped starting stopping
  error build_failed pending_build building_snapshot unknown pulling_snapshot archived
  archiving resizing snapshotting forking pausing paused resuming]]):gmatch("%S+") do
  M.STATES[s] = true
end

---------------------------------------------------------------------------
-- Clocks and identifiers
---------------------------------------------------------------------------

--- Wall-clock time in integer milliseconds since the epoch.
M.now_ms = fs.now_ms

--- ISO-8601 UTC with milliseconds: `2026-06-23T13:33:38.123Z`.
function M.iso(ms)
  ms = ms or M.now_ms()
  return os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. format(".%03dZ", ms % 1000)
end

-- Days since 1970-01-01 of a proleptic Gregorian date (civil_from_days inverse).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Parse an ISO-8601 / RFC 3339 time (`Z` or `±hh:mm`, optional fraction, or
-- a date alone) into epoch milliseconds; nil if it is not one.
function M.parse_iso(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tointeger(tonumber(y)), tointeger(tonumber(mo)), tointeger(tonumber(d))
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  local h, mi, sec, ms, off = 0, 0, 0, 0, 0
  if rest ~= "" then
    local hh, mm, ss, tail = rest:match("^[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi, sec = tointeger(tonumber(hh)), tointeger(tonumber(mm)), tointeger(tonumber(ss))
    if h > 23 or mi > 59 or sec > 60 then return nil end
    local frac, zone = tail:match("^%.(%d+)(.*)$")
    if frac then ms = tointeger(tonumber((frac .. "00"):sub(1, 3))); tail = zone end
    if tail == "Z" or tail == "z" then
      off = 0
    else
      local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
      if not sign then return nil end
      off = (tonumber(oh) * 60 + tonumber(om)) * (sign == "+" and 1 or -1)
    end
  end
  local days = days_from_civil(y, mo, d)
  return ((days * 86400 + h * 3600 + mi * 60 + sec) - off * 60) * 1000 + ms
end

--- A random UUID (version 4), lower-case.
function M.uuid()
  local b = { core.util.random_bytes(16):byte(1, 16) }
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  local h = {}
  for i = 1, 16 do h[i] = format("%02x", b[i]) end
  return concat(h, "", 1, 4) .. "-" .. concat(h, "", 5, 6) .. "-" .. concat(h, "", 7, 8)
    .. "-" .. concat(h, "", 9, 10) .. "-" .. concat(h, "", 11, 16)
end

local ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

--- A random token of n characters from [a-z0-9] (lower = true) or
-- [a-zA-Z0-9]; rejection sampling keeps it uniform.
function M.token(n, lower)
  local alphabet = lower and 36 or 62
  local limit = 256 - 256 % alphabet
  local out = {}
  while #out < n do
    for _, c in ipairs({ core.util.random_bytes(n * 2):byte(1, -1) }) do
      if c < limit then
        local i = c % alphabet + 1
        out[#out + 1] = ALNUM:sub(i, i)
        if #out == n then break end
      end
    end
  end
  return concat(out)
end

--- True if s looks like a UUID (any version).
function M.is_uuid(s)
  return type(s) == "string"
    and s:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end

---------------------------------------------------------------------------
-- Field checks: each raises 400 with a message naming the field
---------------------------------------------------------------------------

local check = {}
M.check = check

local function absent(v) return v == nil or v == json.null end
M.absent = absent

local function typename(v)
  if v == json.null then return "null" end
  if type(v) == "table" then
    if next(v) == nil then return "an empty object or array" end
    return v[1] ~= nil and "an array" or "an object"
  end
  return "a " .. type(v)
end

--- A string (opts.empty allows "", opts.max bounds the length; no NUL).
function check.string(v, field, opts)
  opts = opts or {}
  if type(v) ~= "string" then raise(400, field .. " must be a string, not " .. typename(v)) end
  if not opts.empty and v == "" then raise(400, field .. " must not be empty") end
  if #v > (opts.max or 4096) then
    raise(400, format("%s must be at most %d characters long", field, opts.max or 4096))
  end
  if v:find("%z") then raise(400, field .. " must not contain NUL characters") end
  return v
end

--- A boolean.
function check.boolean(v, field)
  if type(v) ~= "boolean" then raise(400, field .. " must be a boolean, not " .. typename(v)) end
  return v
end

--- An integer within [lo, hi] (either bound may be nil). JSON numbers
-- arrive as floats; an integral one becomes an integer.
function check.integer(v, field, lo, hi, what)
  local i = type(v) == "number" and tointeger(v) or nil
  local bad = i == nil or (lo and i < lo) or (hi and i > hi)
  if bad then
    local range = what
    if not range then
      if lo == 0 and not hi then range = "a non-negative integer"
      elseif lo and hi then range = format("an integer from %d to %d", lo, hi)
      elseif lo then range = format("an integer >= %d", lo)
      else range = "an integer" end
    end
    raise(400, format("%s must be %s", field, range))
  end
  return i
end

--- An object of string -> string (env, labels).
function check.strmap(v, field, opts)
  opts = opts or {}
  if type(v) ~= "table" or (next(v) ~= nil and v[1] ~= nil) then
    raise(400, field .. " must be an object of strings, not " .. typename(v))
  end
  local out, n = {}, 0
  for k, x in pairs(v) do
    if type(k) ~= "string" then raise(400, field .. " must be an object of strings") end
    if k == "" then raise(400, field .. " must not have an empty key") end
    if opts.key_pattern and not k:match(opts.key_pattern) then
      raise(400, format("%s has an invalid key %q (%s)", field, k, opts.key_rule))
    end
    if type(x) ~= "string" then
      raise(400, format("%s.%s must be a string, not %s", field, k, typename(x)))
    end
    if x:find("%z") or k:find("%z") then raise(400, field .. " must not contain NUL characters") end
    out[k] = x
    n = n + 1
  end
  if opts.max and n > opts.max then
    raise(400, format("%s must have at most %d entries", field, opts.max))
  end
  return out
end

local function check_ipv4_cidr(entry, field)
  local a, b, c, d, len = entry:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)/(%d+)$")
  if not a then
    raise(400, format("%s: %q is not an IPv4 CIDR block (A.B.C.D/N)", field, entry))
  end
  for _, o in ipairs({ a, b, c, d }) do
    if #o > 3 or tonumber(o) > 255 then
      raise(400, format("%s: %q has an octet out of range", field, entry))
    end
  end
  if #len > 2 or tonumber(len) > 32 then
    raise(400, format("%s: %q has a prefix length out of range 0-32", field, entry))
  end
end

--- A comma-separated list of IPv4 CIDRs (at most 10, whitespace trimmed);
-- returns the normalised string ("" clears).
function check.cidr_list(v, field)
  check.string(v, field, { empty = true, max = 1024 })
  local entries = {}
  for part in (v .. ","):gmatch("([^,]*),") do
    local e = part:match("^%s*(.-)%s*$")
    if e == "" then
      if v:match("%S") then raise(400, field .. " has an empty entry") end
    else
      check_ipv4_cidr(e, field)
      entries[#entries + 1] = e
    end
  end
  if #entries > 10 then raise(400, field .. " must have at most 10 entries") end
  return concat(entries, ",")
end

--- An allow list dtlocal cannot enforce must be refused, not recorded (a
-- client would believe it holds). Raises 400 naming `field` for a
-- non-empty (already validated) list. Both lists are enforced as root
-- (each sandbox its own network, filtered by dtlocal's nftables table;
-- domainAllowList through dtlocal's DNS filter, dtlocal.control.dns), not
-- unprivileged (sandboxes share the host's network).
function M.refuse_allow_list(list, field, enforced)
  if list == nil or list == "" or enforced then return end
  if field == "domainAllowList" then
    raise(400, "domainAllowList: dtlocal enforces a domain allow list only when it runs as root (it "
      .. "filters the sandbox's DNS and its traffic in the host's firewall); unprivileged, a local "
      .. "sandbox's network is pasta's, which dtlocal cannot filter. Run dtlocal as root, use "
      .. "networkBlockAll, or run against Daytona's cloud")
  end
  raise(400, format("%s: dtlocal cannot enforce an allow list here (not running as root, a local "
    .. "sandbox shares the host's network); run dtlocal as root, use networkBlockAll for no network "
    .. "at all, or run against Daytona's cloud", field))
end

M.MAX_DOMAINS = 64   -- entries of a domainAllowList (dtlocal's own bound)

local LABEL = "^[%w]([%w%-]*)$"

--- A comma-separated list of domain names, each a host name
-- ("example.com") or a wildcard over the names under one ("*.example.com");
-- at most MAX_DOMAINS, whitespace trimmed, lower-cased, a final dot
-- dropped. Returns the normalised string ("" clears).
function check.domain_list(v, field)
  check.string(v, field, { empty = true, max = 4096 })
  local entries = {}
  for part in (v .. ","):gmatch("([^,]*),") do
    local e = part:match("^%s*(.-)%s*$"):lower()
    if e == "" then
      if v:match("%S") then raise(400, field .. " has an empty entry") end
    else
      local name = e:gsub("%.$", ""):gsub("^%*%.", "")
      local good = #name > 0 and #name <= 253 and name:find(".", 1, true) ~= nil
      for label in (name .. "."):gmatch("([^.]*)%.") do
        if not good then break end
        good = #label >= 1 and #label <= 63 and label:match(LABEL) ~= nil and label:sub(-1) ~= "-"
      end
      if not good then
        raise(400, format("%s: %q is not a domain name (a host name such as example.com, or *.example.com "
          .. "for the names under one)", field, part:match("^%s*(.-)%s*$")))
      end
      entries[#entries + 1] = (e:sub(1, 2) == "*." and "*." or "") .. name
    end
  end
  if #entries > M.MAX_DOMAINS then
    raise(400, format("%s must have at most %d entries", field, M.MAX_DOMAINS))
  end
  return concat(entries, ",")
end

--- A sandbox name: what can be a path segment and a label value. The API
-- addresses sandboxes by id or name in one path segment, so no '/'.
function check.name(v, field)
  check.string(v, field, { max = 255 })
  if v:find("[%c/%s%%?#]") then
    raise(400, field .. " must not contain '/', '%', '?', '#', spaces or control characters")
  end
  return v
end

local ENV_KEY = "^[%a_][%w_]*$"
local LABEL_KEY = "^[%w][%w%-%._/]*$"

--- Labels: an object of strings, at most 64, keys of letters, digits,
-- '-', '.', '_' and '/' (up to 253 bytes), values up to 1024 bytes.
function M.check_labels(v)
  local labels = check.strmap(v, "labels", { key_pattern = LABEL_KEY,
    key_rule = "letters, digits, '-', '.', '_' and '/'", max = 64 })
  for k, x in pairs(labels) do
    if #k > 253 then raise(400, format("labels: key %q is too long (at most 253 characters)", k)) end
    if #x > 1024 then raise(400, format("labels.%s is too long (at most 1024 characters)", k)) end
  end
  return labels
end

---------------------------------------------------------------------------
-- Create
---------------------------------------------------------------------------

-- Fields the 0.218 SDK sends that a local server may take or leave (doc/protocol.md §3.4):
-- their types are checked; only the ones we can honour have an effect.
local function check_extras(body)
  if not absent(body.spot) then check.boolean(body.spot, "spot") end
  if not absent(body.kvm) then check.boolean(body.kvm, "kvm") end
  if not absent(body.autoPauseInterval) then
    local n = check.integer(body.autoPauseInterval, "autoPauseInterval", 0)
    if n > 0 then raise(400, "autoPauseInterval: pausing sandboxes is not available locally; use 0 or autoStopInterval") end
  end
  if not absent(body.outboundProxyUrl) then check.string(body.outboundProxyUrl, "outboundProxyUrl", { empty = true }) end
  if not absent(body.otelEndpointOverride) then check.string(body.otelEndpointOverride, "otelEndpointOverride", { empty = true }) end
  if not absent(body.secrets) then
    local s = body.secrets
    if type(s) ~= "table" or (next(s) ~= nil and s[1] == nil) then
      raise(400, "secrets must be an array of {ENV_VAR: secretName} objects")
    end
    if #s > 0 then raise(400, "secrets: named secrets are not available locally; pass the values in env") end
  end
end

-- Where a volume may not be mounted. The API's own list (its
-- validateMountPaths: /proc /sys /dev /boot /etc /bin /sbin /lib /lib64,
-- each with everything under it) plus, for a local sandbox: /usr and the
-- other lib dirs (the system's programs, which every sandbox shares with
-- the host through its overlay, and where the dtlua installation is often
-- bound), and /run/dtlua, the toolbox daemon's socket directory: in a
-- volume's data dir, shared by sandboxes, another sandbox could take the
-- daemon's place.
local RESERVED_TREES = {
  ["/proc"] = "a system directory", ["/sys"] = "a system directory", ["/dev"] = "a system directory",
  ["/boot"] = "a system directory", ["/etc"] = "a system directory", ["/bin"] = "a system directory",
  ["/sbin"] = "a system directory", ["/lib"] = "a system directory", ["/lib32"] = "a system directory",
  ["/lib64"] = "a system directory", ["/libx32"] = "a system directory", ["/usr"] = "a system directory",
  ["/run/dtlua"] = "the toolbox daemon's socket directory",
}
-- Directories that hold something the sandbox needs: a mount *at* them
-- would hide it (below them is fine: /tmp/data, /home/daytona/x).
local RESERVED_HOLDERS = {
  ["/run"] = "it holds /run/dtlua, the toolbox daemon's socket directory",
  ["/tmp"] = "it holds the toolbox daemon's own files (session logs, its git credential helper)",
  ["/home"] = "it holds the sandbox user's home directory",
}

--- A volume's mount path: absolute, without '.' or '..' parts, and not a
-- reserved path (above). Doubled and trailing slashes are dropped. Returns
-- the clean path; raises 400 naming `field` otherwise.
function M.check_mount_path(p, field)
  if p:sub(1, 1) ~= "/" or ("/" .. p .. "/"):find("/%.%.?/") then
    raise(400, field .. ": " .. p .. " must be an absolute path without '.' or '..' components")
  end
  if p:find("[%c]") then raise(400, field .. ": must not contain control characters") end
  local clean = p:gsub("/+", "/"):gsub("(.)/$", "%1")
  if clean == "/" then raise(400, field .. ": cannot mount a volume at the root directory /") end
  local why = RESERVED_HOLDERS[clean]
  if why then raise(400, format("%s: %s is reserved: %s", field, clean, why)) end
  -- the path itself and each of its parents against the reserved trees
  local at = clean
  while at ~= "" do
    why = RESERVED_TREES[at]
    if why then
      raise(400, format("%s: %s is reserved: it is %s%s", field, clean,
        at == clean and "" or "under ", at == clean and why or at .. ", " .. why))
    end
    at = at:match("^(.*)/[^/]*$")
  end
  return clean
end

--- Validate a CreateSandbox body (already JSON-decoded). Returns a table of
-- the accepted values (absent fields nil); raises 400 naming the field.
-- `volumes` entries are returned as given; the caller resolves them.
function M.check_create(body)
  if type(body) ~= "table" or (next(body) ~= nil and body[1] ~= nil) then
    raise(400, "the request body must be a JSON object")
  end
  local c = {}
  if not absent(body.name) then c.name = check.name(body.name, "name") end
  if not absent(body.snapshot) then c.snapshot = check.string(body.snapshot, "snapshot", { max = 512 }) end
  if not absent(body.user) then
    c.user = check.string(body.user, "user", { max = 32 })
    if not c.user:match("^[%l_][%l%d_%-]*$") then
      raise(400, "user must be a POSIX user name (lower-case letters, digits, '_' and '-')")
    end
    -- a local sandbox has the image's two users (csrc/sandbox_launcher.c)
    if c.user ~= "daytona" and c.user ~= "root" then
      raise(400, ("user %q: local sandboxes have the users daytona and root only"):format(c.user))
    end
  end
  if not absent(body.env) then
    c.env = check.strmap(body.env, "env", { key_pattern = ENV_KEY, max = 200,
      key_rule = "letters, digits and '_', not starting with a digit" })
  end
  if not absent(body.labels) then c.labels = M.check_labels(body.labels) end
  local lang = c.labels and c.labels[M.LANGUAGE_LABEL]
  if lang and not M.LANGUAGES[lang] then
    raise(400, format("labels.%s must be one of python, typescript, javascript (got %q)", M.LANGUAGE_LABEL, lang))
  end
  if not absent(body.public) then c.public = check.boolean(body.public, "public") end
  if not absent(body.networkBlockAll) then c.networkBlockAll = check.boolean(body.networkBlockAll, "networkBlockAll") end
  if not absent(body.networkAllowList) then
    -- enforced as root (dtlocal.control.network); the manager refuses it
    -- where it cannot be (Manager:create)
    c.networkAllowList = check.cidr_list(body.networkAllowList, "networkAllowList")
  end
  if not absent(body.domainAllowList) then
    -- enforced as root (dtlocal.control.dns); refused by the manager elsewhere
    c.domainAllowList = check.domain_list(body.domainAllowList, "domainAllowList")
  end
  if not absent(body.target) then c.target = check.string(body.target, "target", { max = 255 }) end

  local resources = false
  for _, f in ipairs({ "cpu", "memory", "disk" }) do
    if not absent(body[f]) then c[f] = check.integer(body[f], f, 1, 1024); resources = true end
  end
  if not absent(body.gpu) then c.gpu = check.integer(body.gpu, "gpu", 0, 64); resources = true end
  if not absent(body.gpuType) then
    local g = body.gpuType
    if type(g) ~= "table" or (next(g) ~= nil and g[1] == nil) then
      raise(400, "gpuType must be an array of H100 or RTX-PRO-6000")
    end
    for i, t in ipairs(g) do
      if t ~= "H100" and t ~= "RTX-PRO-6000" then
        raise(400, format("gpuType[%d] must be H100 or RTX-PRO-6000", i - 1))
      end
    end
    if #g > 0 then resources = true end
  end
  if (c.gpu or 0) > 0 or (type(body.gpuType) == "table" and #body.gpuType > 0) then
    raise(400, "gpu: GPUs are not available locally")
  end

  -- auto-stop 0 = off, auto-archive 0 = the maximum, both never negative;
  -- auto-delete: "negative value means disabled" (the API's words, any
  -- negative), 0 = when it stops (doc/protocol.md §3.2)
  local MAXI, MINI = M.MAX_INTERVAL, M.MIN_INTERVAL
  if not absent(body.autoStopInterval) then
    c.autoStopInterval = check.integer(body.autoStopInterval, "autoStopInterval", 0, MAXI)
  end
  if not absent(body.autoArchiveInterval) then
    c.autoArchiveInterval = M.archive_interval(check.integer(body.autoArchiveInterval, "autoArchiveInterval", 0, MAXI))
  end
  if not absent(body.autoDeleteInterval) then
    c.autoDeleteInterval = check.integer(body.autoDeleteInterval, "autoDeleteInterval", MINI, MAXI)
  end
  if not absent(body.ttlMinutes) then c.ttlMinutes = check.integer(body.ttlMinutes, "ttlMinutes", 0, MAXI) end

  if not absent(body.volumes) then
    local vols = body.volumes
    if type(vols) ~= "table" or (next(vols) ~= nil and vols[1] == nil) then
      raise(400, "volumes must be an array of {volumeId, mountPath, subpath?}")
    end
    c.volumes = {}
    local seen = {}
    for i, v in ipairs(vols) do
      local f = format("volumes[%d]", i - 1)
      if type(v) ~= "table" or v[1] ~= nil then raise(400, f .. " must be an object") end
      local vol = {
        volumeId = check.string(v.volumeId, f .. ".volumeId", { max = 255 }),
        mountPath = check.string(v.mountPath, f .. ".mountPath", { max = 1024 }),
      }
      vol.mountPath = M.check_mount_path(vol.mountPath, f .. ".mountPath")
      if seen[vol.mountPath] then raise(400, f .. ".mountPath is mounted twice") end
      seen[vol.mountPath] = true
      if not absent(v.subpath) then
        vol.subpath = check.string(v.subpath, f .. ".subpath", { max = 1024 })
        if vol.subpath:sub(1, 1) == "/" or ("/" .. vol.subpath .. "/"):find("/%.%.?/") then
          raise(400, f .. ".subpath must be a relative path without '.' or '..' components")
        end
      end
      c.volumes[i] = vol
    end
  end

  if not absent(body.buildInfo) then
    local b = body.buildInfo
    if type(b) ~= "table" or b[1] ~= nil then raise(400, "buildInfo must be an object") end
    c.buildInfo = { dockerfileContent = check.string(b.dockerfileContent, "buildInfo.dockerfileContent", { max = 1024 * 1024 }) }
    if not absent(b.contextHashes) then
      local h = b.contextHashes
      if type(h) ~= "table" or (next(h) ~= nil and h[1] == nil) then
        raise(400, "buildInfo.contextHashes must be an array of strings")
      end
      c.buildInfo.contextHashes = {}
      for i, x in ipairs(h) do
        c.buildInfo.contextHashes[i] = check.string(x, format("buildInfo.contextHashes[%d]", i - 1), { max = 256 })
      end
    end
  end
  if not absent(body.linkedSandbox) then
    c.linkedSandbox = check.string(body.linkedSandbox, "linkedSandbox", { max = 255 })
  end
  check_extras(body)

  -- the API's own rules (doc/protocol.md §3.4)
  if c.buildInfo and c.snapshot then
    raise(400, "buildInfo and snapshot cannot be used together: give one of them")
  end
  if c.buildInfo and c.linkedSandbox then
    raise(400, "linkedSandbox cannot be used with buildInfo")
  end
  if resources and not c.buildInfo then
    raise(400, "cpu/gpu/memory/disk: Cannot specify Sandbox resources when using a snapshot")
  end
  if c.linkedSandbox and c.autoDeleteInterval ~= 0 then
    raise(400, "linkedSandbox requires an ephemeral sandbox (autoDeleteInterval 0)")
  end
  return c
end

--- The stored auto-archive interval for a requested one: 0 means the
-- maximum, larger values are clamped to it (doc/protocol.md §3.2).
function M.archive_interval(n)
  if n == 0 or n > M.MAX_AUTO_ARCHIVE then return M.MAX_AUTO_ARCHIVE end
  return n
end

--- A deep copy of a value.
local function copy(t)
  if type(t) ~= "table" then return t end
  local o = {}
  for k, v in pairs(t) do o[k] = copy(v) end
  return o
end
M.copy = copy

--- A new record for validated create values `c`; `now` in ms.
function M.new_record(c, id, now)
  local iso = M.iso(now)
  local labels = c.labels or {}
  if not labels[M.LANGUAGE_LABEL] then labels[M.LANGUAGE_LABEL] = "python" end
  local rec = {
    id = id,
    organizationId = M.ORGANIZATION_ID,
    name = c.name or id,
    snapshot = c.snapshot or (not c.buildInfo and M.DEFAULT_SNAPSHOT or nil),
    user = c.user or M.DEFAULTS.user,
    env = c.env or {},
    labels = labels,
    public = c.public or false,
    networkBlockAll = c.networkBlockAll or false,
    networkAllowList = c.networkAllowList,
    domainAllowList = c.domainAllowList,
    target = c.target or M.TARGET,
    cpu = c.cpu or M.DEFAULTS.cpu,
    gpu = c.gpu or M.DEFAULTS.gpu,
    memory = c.memory or M.DEFAULTS.memory,
    disk = c.disk or M.DEFAULTS.disk,
    state = "creating",
    desiredState = "started",
    recoverable = false,
    backupState = "None",
    autoStopInterval = c.autoStopInterval or M.DEFAULTS.autoStopInterval,
    autoArchiveInterval = c.autoArchiveInterval or M.DEFAULTS.autoArchiveInterval,
    autoDeleteInterval = c.autoDeleteInterval or M.DEFAULTS.autoDeleteInterval,
    volumes = c.volumes or {},
    createdAt = iso,
    updatedAt = iso,
    lastActivityAt = iso,
    sandboxClass = "container",
    daemonVersion = M.DAEMON_VERSION,
    runnerId = M.RUNNER_ID,
    dtlocal = {
      created_ms = now,
      activity_ms = now,
      state_ms = now,
      signed = {},
    },
  }
  if c.buildInfo then
    rec.buildInfo = {
      dockerfileContent = c.buildInfo.dockerfileContent,
      contextHashes = c.buildInfo.contextHashes or {},
      createdAt = iso, updatedAt = iso,
      snapshotRef = c.buildInfo.snapshotRef,
    }
  end
  -- the image it runs on (dtlocal.images.store); nil: the host's system
  rec.dtlocal.image = c.image
  rec.dtlocal.snapshot_id = c.snapshot_id
  -- a snapshot of a sandbox on the host's system: files to start with
  -- (dtlocal.control.capture)
  rec.dtlocal.seed = c.seed
  rec.dtlocal.seed_dir = c.seed_dir             -- a fork's copy (dtlocal.control.capture)
  rec.dtlocal.own_image = c.own_image          -- a fork's image, removed with it
  rec.dtlocal.fork_parent = c.fork_parent
  if c.ttlMinutes and c.ttlMinutes > 0 then rec.dtlocal.ttl_minutes = c.ttlMinutes end
  return rec
end

---------------------------------------------------------------------------
-- Wire shape
---------------------------------------------------------------------------

-- Fields a list item (SandboxListItem) leaves out (doc/protocol.md §3.2).
local NOT_IN_LIST = {
  env = true, networkBlockAll = true, networkAllowList = true, domainAllowList = true,
  volumes = true, buildInfo = true, backupCreatedAt = true, linkedSandboxId = true,
}

local WIRE_FIELDS = {
  "id", "organizationId", "name", "snapshot", "user", "env", "labels", "public",
  "networkBlockAll", "networkAllowList", "domainAllowList", "target", "cpu", "gpu",
  "memory", "disk", "gpuType", "state", "desiredState", "errorReason", "recoverable",
  "backupState", "backupCreatedAt", "autoStopInterval", "autoArchiveInterval",
  "autoDeleteInterval", "volumes", "buildInfo", "createdAt", "updatedAt",
  "lastActivityAt", "sandboxClass", "daemonVersion", "runnerId", "linkedSandboxId",
}

--- The JSON object of a record as the API sends it. `toolbox_url` is this
-- server's toolbox base (it changes with the port); `list_item` drops the
-- fields SandboxListItem does not have.
function M.wire(rec, toolbox_url, list_item)
  local o = {}
  for _, k in ipairs(WIRE_FIELDS) do
    if not (list_item and NOT_IN_LIST[k]) then
      local v = rec[k]
      if v ~= nil then o[k] = copy(v) end
    end
  end
  if o.volumes then
    o.volumes = json.array(o.volumes)
  end
  if o.buildInfo and o.buildInfo.contextHashes then
    o.buildInfo.contextHashes = json.array(o.buildInfo.contextHashes)
  end
  if rec.errorReason == nil then o.errorReason = json.null end
  o.toolboxProxyUrl = toolbox_url
  return o
end

return M
