--- A seeded mutation fuzzer for the request paths dtlocal parses itself.
--
--     local fuzz = require "support.fuzz"
--     local f = fuzz.new{ srv = srv, seed = 42 }     -- srv from support.dtlocal
--     f:setup()                                      -- a sandbox and its fixtures
--     local report = f:run{ seconds = 5 }            -- or { only = 1234 }
--     f:teardown()
--
-- Coverage-agnostic: every input is a seed (a valid request of one of the
-- targets below) changed by a few random mutations, sent to a real dtlocal
-- and its sandbox's toolbox daemon over real HTTP and WebSocket. Input
-- number i of seed s is made by a generator seeded with (s, i) alone, so
-- `run{ seed = s, only = i }` makes the same bytes again.
--
-- Targets: multipart bodies (files/upload, files/bulk-upload), query
-- strings (toolbox and /api routes), JSON bodies (/api: create, labels,
-- resize, network settings, volumes, snapshots; toolbox: execute, code-run,
-- sessions, PTYs, interpreter contexts, git, files), Engine.IO/Socket.IO
-- frames on /api/socket.io/, and PTY and interpreter WebSocket messages.
-- Mutations: byte flips and bit flips, truncation, deletion, duplication,
-- dictionary tokens (CRLF, NUL, '%', boundaries, invalid UTF-8), huge
-- repeats; in JSON, type confusion, deep nesting, huge and non-finite
-- numbers, duplicate keys, invalid UTF-8 strings; in multipart, part and
-- boundary games.
--
-- The oracle: a failure is any 5xx that is not the route's documented
-- "not available locally" answer (501 on the not-local routes, 503 on
-- computer use; 500 never), a connection dropped without a response, a
-- request with no answer within `request_timeout`, a WebSocket closed with
-- 1011 for an internal error or a lost peer (or dropped without a close),
-- the server process exiting, or a health check failing (GET /api/sandbox
-- with the token, and an exec in the sandbox), run every `health_every`
-- inputs. Each failure is printed with its seed and input number and the
-- input is written to a file under $TMPDIR.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"
local errors = require "daytona.errors"
local cjson = require "cjson.safe"

local type, pairs, ipairs, tostring, setmetatable, pcall, math, string, table =
  type, pairs, ipairs, tostring, setmetatable, pcall, math, string, table
local char, byte, rep, format, concat = string.char, string.byte, string.rep, string.format, table.concat

local M = {}

---------------------------------------------------------------------------
-- The generator: splitmix64, so a run depends on the seed alone (not on
-- math.random's state, which the rest of the process may use)
---------------------------------------------------------------------------

local Rng = {}
Rng.__index = Rng

function M.rng(seed, stream)
  local s = (math.tointeger(seed) or 0) ~ ((math.tointeger(stream) or 0) * 0x2545F4914F6CDD1D)
  local r = setmetatable({ s = s }, Rng)
  r:next(); r:next()
  return r
end

function Rng:next()
  self.s = self.s + 0x9E3779B97F4A7C15
  local z = self.s
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

-- an integer in 1..n
function Rng:int(n)
  if n <= 1 then return 1 end
  return (self:next() >> 1) % n + 1
end

-- an integer in lo..hi
function Rng:range(lo, hi) return lo + self:int(hi - lo + 1) - 1 end
function Rng:chance(p) return (self:next() >> 11) / 9007199254740992.0 < p end
function Rng:pick(list) return list[self:int(#list)] end

function Rng:bytes(n)
  local t = {}
  for i = 1, n do t[i] = char(self:int(256) - 1) end
  return concat(t)
end

-- A size that is usually small and sometimes huge.
function Rng:size()
  local r = self:int(100)
  if r <= 70 then return self:range(0, 16) end
  if r <= 90 then return self:range(17, 512) end
  if r <= 98 then return self:range(513, 70000) end
  return self:range(70001, 1100000)
end

---------------------------------------------------------------------------
-- Byte mutations
---------------------------------------------------------------------------

-- Tokens that matter to the parsers: line ends, NULs, percent-encoding,
-- quoting, JSON punctuation, multipart delimiters, invalid UTF-8 (a lone
-- continuation byte, an overlong NUL, a surrogate, past U+10FFFF, a
-- truncated sequence), and numbers JSON parsers disagree on.
local TOKENS = {
  "\0", "\r\n", "\r", "\n", "\r\n\r\n", "%", "%0", "%zz", "%00", "%ff", "%2", "%%", "+", "&", "=",
  "&&", "==", "?", "#", ";", ",", ":", "\"", "\\", "'", "{", "}", "[", "]", "{}", "[]", " ", "\t",
  "--", "\r\n--", "/", "../", "..", "//", "\128", "\192\128", "\237\160\128", "\244\144\128\128",
  "\226\130", "\255\254", "\239\187\191", "null", "true", "NaN", "Infinity", "-Infinity", "1e999",
  "-0", "0x10", "99999999999999999999", "9223372036854775808", "-9223372036854775809", "1e-400",
  "\\u0000", "\\ud800", "\\uDFFF\\uD800", "\\u", "\\x", "filename*=UTF-8''%ff", "name=\"files[0].file\"",
  "Content-Disposition: form-data; ", "\"\"", "4", "42", "40", "2", "3", "1", "6", "/x,",
  "X-Daytona-Pty-Exit-Control", "\3", "\4", "\27[", "\127",
}
M.TOKENS = TOKENS

local function mutate_once(rng, s, dict)
  local n = #s
  local op = rng:int(11)
  if op == 1 and n > 0 then                                 -- a random byte
    local i = rng:int(n)
    return s:sub(1, i - 1) .. char(rng:int(256) - 1) .. s:sub(i + 1)
  elseif op == 2 and n > 0 then                             -- a bit flip
    local i = rng:int(n)
    return s:sub(1, i - 1) .. char(byte(s, i) ~ (1 << (rng:int(8) - 1))) .. s:sub(i + 1)
  elseif op == 3 then                                       -- truncation
    return s:sub(1, rng:range(0, n))
  elseif op == 4 and n > 0 then                             -- a deleted slice
    local i = rng:int(n)
    return s:sub(1, i - 1) .. s:sub(i + rng:range(1, 16))
  elseif op == 5 and n > 0 then                             -- a duplicated slice
    local i = rng:int(n)
    local j = math.min(n, i + rng:range(0, 64))
    local at = rng:range(0, n)
    return s:sub(1, at) .. s:sub(i, j) .. s:sub(at + 1)
  elseif op == 6 or op == 7 then                            -- a token
    local t = (dict and rng:chance(0.5)) and rng:pick(dict) or rng:pick(TOKENS)
    local at = rng:range(0, n)
    if rng:chance(0.3) and n > 0 then                       -- replacing bytes
      return s:sub(1, at) .. t .. s:sub(at + #t + 1)
    end
    return s:sub(1, at) .. t .. s:sub(at + 1)
  elseif op == 8 then                                       -- a huge repeat
    local piece = n > 0 and s:sub(rng:int(n), rng:int(n) + rng:range(0, 8)) or rng:pick(TOKENS)
    if piece == "" then piece = "A" end
    local total = rng:size()
    local at = rng:range(0, n)
    return s:sub(1, at) .. rep(piece, math.max(1, total // #piece)) .. s:sub(at + 1)
  elseif op == 9 then                                       -- random bytes
    local at = rng:range(0, n)
    return s:sub(1, at) .. rng:bytes(rng:range(1, 8)) .. s:sub(at + 1)
  elseif op == 10 and n > 1 then                            -- two slices swapped
    local a, b = rng:int(n), rng:int(n)
    if a > b then a, b = b, a end
    return s:sub(1, a - 1) .. s:sub(b, b) .. s:sub(a + 1, b - 1) .. s:sub(a, a) .. s:sub(b + 1)
  end
  return s .. rng:pick(TOKENS)                              -- appended
end

--- 1 to 8 random byte mutations of s (fewer more often).
function M.mutate(rng, s, dict)
  local k = rng:chance(0.6) and 1 or rng:range(2, 8)
  for _ = 1, k do s = mutate_once(rng, s, dict) end
  return s
end

---------------------------------------------------------------------------
-- JSON: trees that can hold what an encoder would refuse (raw tokens,
-- duplicate keys, invalid UTF-8), and their mutations
---------------------------------------------------------------------------

local OBJ, ARR, RAW = {}, {}, {}
local NULL = setmetatable({}, { __name = "fuzz.null" })
M.NULL = NULL

--- An empty JSON array in a seed (an empty Lua table is an object).
function M.array(t) return setmetatable(t or {}, ARR) end

-- A seed (plain Lua values) as a tree: objects are ordered lists of pairs.
local function tree(v)
  if type(v) ~= "table" or v == NULL then return v end
  if getmetatable(v) == ARR or (#v > 0) then
    local items = setmetatable({}, ARR)
    for i = 1, #v do items[i] = tree(v[i]) end
    return items
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local o = setmetatable({}, OBJ)
  for _, k in ipairs(keys) do o[#o + 1] = { k, tree(v[k]) } end
  return o
end
M.tree = tree

local function esc(s)
  -- JSON escapes for quotes, backslashes and control bytes; other bytes
  -- (invalid UTF-8 included) go as they are
  return (s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return format("\\u%04x", byte(c))
  end))
end

local function encode(v, out)
  local tv = type(v)
  if tv == "string" then out[#out + 1] = '"' .. esc(v) .. '"'
  elseif tv == "number" then
    out[#out + 1] = math.type(v) == "integer" and format("%d", v) or format("%.17g", v)
  elseif tv == "boolean" then out[#out + 1] = tostring(v)
  elseif v == nil or v == NULL then out[#out + 1] = "null"
  else
    local mt = getmetatable(v)
    if mt == RAW then out[#out + 1] = v[1]
    elseif mt == OBJ then
      out[#out + 1] = "{"
      for i, kv in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = '"' .. esc(kv[1]) .. '":'
        encode(kv[2], out)
      end
      out[#out + 1] = "}"
    else
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out)
      end
      out[#out + 1] = "]"
    end
  end
end

--- The JSON text of a tree (or of plain Lua values).
function M.encode(v)
  local out = {}
  encode(v, out)
  return concat(out)
end

local function raw(s) return setmetatable({ s }, RAW) end

local RAW_NUMBERS = {
  "1e999", "-1e999", "NaN", "-NaN", "Infinity", "-Infinity", "inf", "nan", "0x7fffffffffffffff",
  "123456789012345678901234567890", "-0", "1E+2", "9223372036854775807", "9223372036854775808",
  "-9223372036854775809", "1e308", "4.9e-324", "1e-400", "0.1e1", "00", "01", "1.", ".5",
}
local NUMBERS = {
  0, 1, -1, 2, 3, 80, 1000, 1001, 65535, 65536, 2147483647, 2147483648, -2147483649,
  9007199254740993, math.maxinteger, math.mininteger, 0.5, -0.0, 1.5, 1e308, -1e308, 5e-324, 2^53, 2^63, 1e19,
}
local STRINGS = {
  "", " ", "a", "default", "python", "root", "daytona", "/", ".", "..", "../../etc/passwd", "/etc",
  "/tmp", "fuzz", "fuzz/a.txt", "~", "$HOME", "main", "HEAD", "0", "-1", "true", "null", "\0",
  "a\0b", "\255\254", "\192\128", "\237\160\128", "\226\130", "x\r\ny", "%", "%zz", "*", "[", "10.0.0.0/8",
  "0.0.0.0/0", "example.com", "file:///nonexistent", "http://127.0.0.1:1/x", "echo fuzz", "print(1)",
  "1+1", "A", "A=B", "PATH", "dtlocal", "X-Daytona-Pty-Exit-Control", "10", "1e999",
}

local function random_string(rng)
  local r = rng:int(10)
  if r <= 5 then return rng:pick(STRINGS) end
  if r <= 7 then return rng:bytes(rng:range(0, 24)) end
  if r <= 9 then return M.mutate(rng, rng:pick(STRINGS)) end
  return rep(rng:pick(STRINGS) .. "x", math.max(1, rng:size() // 2))
end
M.random_string = random_string

local random_value

-- A value nested `depth` levels deep in arrays or objects.
local function nested(rng, depth, inner)
  local v = inner
  local arrays = rng:chance(0.5)
  for _ = 1, depth do
    if arrays then v = setmetatable({ v }, ARR)
    else v = setmetatable({ { "a", v } }, OBJ) end
  end
  return v
end

function random_value(rng, depth)
  depth = depth or 0
  local r = rng:int(14)
  if r == 1 then return NULL
  elseif r == 2 then return rng:chance(0.5)
  elseif r <= 4 then return rng:pick(NUMBERS)
  elseif r == 5 then return raw(rng:pick(RAW_NUMBERS))
  elseif r <= 8 then return random_string(rng)
  elseif r == 9 and depth < 3 then
    local o = setmetatable({}, OBJ)
    for i = 1, rng:range(0, 4) do o[i] = { random_string(rng), random_value(rng, depth + 1) } end
    return o
  elseif r == 10 and depth < 3 then
    local a = setmetatable({}, ARR)
    for i = 1, rng:range(0, 4) do a[i] = random_value(rng, depth + 1) end
    return a
  elseif r == 11 then
    return nested(rng, rng:pick { 2, 20, 200, 1100, 5000 }, random_value(rng, 3))
  end
  return rng:pick(NUMBERS)
end
M.random_value = random_value

-- Every slot of a tree: { container, index } where container[index] is a
-- value (for an object, its pair's value).
local function slots(v, out)
  local mt = getmetatable(v)
  if mt == OBJ then
    for i, kv in ipairs(v) do
      out[#out + 1] = { v, i, true }
      slots(kv[2], out)
    end
  elseif mt == ARR then
    for i = 1, #v do
      out[#out + 1] = { v, i, false }
      slots(v[i], out)
    end
  end
  return out
end

local function copy(v)
  if type(v) ~= "table" or v == NULL then return v end
  local c = setmetatable({}, getmetatable(v))
  for i, x in ipairs(v) do c[i] = (getmetatable(v) == OBJ) and { x[1], copy(x[2]) } or copy(x) end
  if getmetatable(v) == RAW then c[1] = v[1] end
  return c
end

local function containers(v, out)
  local mt = getmetatable(v)
  if mt == OBJ or mt == ARR then
    out[#out + 1] = v
    for _, x in ipairs(v) do containers(mt == OBJ and x[2] or x, out) end
  end
  return out
end

--- A structurally mutated copy of tree t (1 to 4 changes).
function M.mutate_tree(rng, t, keys)
  t = copy(t)
  for _ = 1, rng:range(1, 4) do
    local s = slots(t, {})
    local op = rng:int(8)
    if #s == 0 or op == 1 then
      if rng:chance(0.3) then t = random_value(rng)   -- the whole body confused
      else
        local cs = containers(t, {})
        local c = cs[1] and rng:pick(cs)
        if c and getmetatable(c) == OBJ then
          c[#c + 1] = { (keys and rng:chance(0.7)) and rng:pick(keys) or random_string(rng), random_value(rng) }
        elseif c then
          c[#c + 1] = random_value(rng)
        end
      end
    else
      local slot = rng:pick(s)
      local c, i, is_obj = slot[1], slot[2], slot[3]
      local function get() if is_obj then return c[i][2] end return c[i] end
      local function set(v) if is_obj then c[i][2] = v else c[i] = v end end
      if op == 2 or op == 3 then set(random_value(rng))          -- type confusion
      elseif op == 4 then table.remove(c, i)                     -- a field removed
      elseif op == 5 and is_obj then                             -- a duplicate key
        table.insert(c, rng:range(1, #c + 1), { c[i][1], random_value(rng) })
      elseif op == 5 then
        table.insert(c, i, copy(c[i]))
      elseif op == 6 then                                        -- deep nesting
        set(nested(rng, rng:pick { 3, 50, 1100, 3000 }, get()))
      elseif op == 7 and is_obj then                             -- a mutated key
        c[i][1] = M.mutate(rng, c[i][1])
      else                                                       -- a mutated scalar
        local v = get()
        if type(v) == "string" then set(M.mutate(rng, v))
        elseif type(v) == "number" then set(rng:chance(0.5) and -v or v * rng:pick(NUMBERS))
        else set(random_value(rng)) end
      end
    end
  end
  return t
end

--- The JSON text of a mutated seed: structure changes, and sometimes byte
-- changes of the text too.
function M.json_body(rng, seed, keys)
  local t = tree(seed)
  if rng:chance(0.85) then t = M.mutate_tree(rng, t, keys) end
  local text = M.encode(t)
  if rng:chance(0.25) then text = M.mutate(rng, text) end
  return text
end

---------------------------------------------------------------------------
-- Query strings
---------------------------------------------------------------------------

-- Bytes that cannot go into a URL as they are (curl refuses them, or they
-- end the target): percent-encoded. Everything else, bad percent
-- sequences included, goes as generated.
local function url_safe(s)
  return (s:gsub("[%z\1-\32\127#]", function(c) return format("%%%02X", byte(c)) end))
end
M.url_safe = url_safe

--- A mutated query string from pairs { {name, value}, ... }.
function M.query(rng, pairs_list)
  local list = {}
  for i, p in ipairs(pairs_list) do list[i] = { p[1], p[2] } end
  for _ = 1, rng:range(1, 4) do
    local op = rng:int(9)
    local p = list[1] and rng:pick(list)
    if op == 1 and p then list[#list + 1] = { p[1], random_string(rng) }     -- repeated key
    elseif op == 2 and p then p[2] = M.mutate(rng, p[2])
    elseif op == 3 and p then p[1] = M.mutate(rng, p[1])
    elseif op == 4 and p then p[2] = rep(p[2] ~= "" and p[2] or "a", math.max(1, rng:size() // math.max(1, #p[2])))
    elseif op == 5 and p then p[2] = p[2] .. rng:pick { "%", "%0", "%zz", "%00", "\0", "%ff%fe", "%c0%80", "+%2" }
    elseif op == 6 then list[#list + 1] = { random_string(rng), random_string(rng) }
    elseif op == 7 and p then p[2] = random_string(rng)
    elseif op == 8 and p then p[3] = true                    -- a name without '='
    else list[#list + 1] = { rng:pick { "", "=", "&", "%", "+" }, "" } end
  end
  local out = {}
  for _, p in ipairs(list) do
    out[#out + 1] = p[3] and url_safe(p[1]) or (url_safe(p[1]) .. "=" .. url_safe(p[2]))
  end
  local qs = concat(out, "&")
  if rng:chance(0.15) then qs = url_safe(M.mutate(rng, qs)) end
  return qs
end

---------------------------------------------------------------------------
-- Multipart bodies
---------------------------------------------------------------------------

local function multipart_body(rng, boundary, parts)
  local out = {}
  if rng:chance(0.1) then out[#out + 1] = "preamble\r\n" end
  for _, p in ipairs(parts) do
    out[#out + 1] = "--" .. boundary .. (p.pad or "") .. "\r\n"
    for _, h in ipairs(p.headers) do out[#out + 1] = h .. "\r\n" end
    out[#out + 1] = "\r\n" .. p.data .. "\r\n"
  end
  out[#out + 1] = "--" .. boundary .. "--\r\n"
  if rng:chance(0.1) then out[#out + 1] = "epilogue" end
  return concat(out)
end

local BOUNDARIES = {
  "fuzzboundary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a", "x y", "=?'()+_,-./:",
  rep("b", 70), rep("b", 71), "", "bad\"quote", "é",
}

-- parts: a list of { name =, filename =, data = }
local function mutate_parts(rng, parts, boundary)
  local out = {}
  for _, p in ipairs(parts) do
    local name = p.name
    local cd = 'Content-Disposition: form-data; name="' .. name .. '"'
    if p.filename then cd = cd .. '; filename="' .. p.filename .. '"' end
    out[#out + 1] = { headers = { cd, "Content-Type: application/octet-stream" }, data = p.data }
  end
  for _ = 1, rng:range(0, 3) do
    local p = rng:pick(out)
    local op = rng:int(12)
    if op == 1 then p.data = M.mutate(rng, p.data)
    elseif op == 2 then p.data = p.data .. "\r\n--" .. boundary .. rng:pick { "", "--", "\r\n", "  \r\n" }
    elseif op == 3 then p.headers[1] = M.mutate(rng, p.headers[1] or "", { "files[", "].path", "].file", "filename*=" })
    elseif op == 4 then p.headers[#p.headers + 1] = rng:pick {
      "X-Big: " .. rep("h", rng:size()), "no colon here", ": empty name", "Content-Type:",
      "Content-Disposition: form-data; name=\"files[99999999999999999999].path\"",
      "Content-Disposition: form-data; name*=UTF-8''%ff; filename*=UTF-8''%zz",
      "Content-Disposition: form-data; name=\"x\\", "Content-Disposition: ;;;; ====",
    }
    elseif op == 5 then table.remove(p.headers, 1)
    elseif op == 6 then p.pad = rng:pick { " ", "\t", rep(" ", 300), "x", "\r" }
    elseif op == 7 then out[#out + 1] = { headers = { p.headers[1] }, data = p.data }
    elseif op == 8 then table.remove(out, rng:int(#out))
    elseif op == 9 then
      for _ = 1, rng:range(2, 400) do out[#out + 1] = { headers = {}, data = "" } end
    elseif op == 10 then p.data = rep(p.data ~= "" and p.data or "d", math.max(1, rng:size() // math.max(1, #p.data)))
    elseif op == 11 then
      p.headers[1] = rng:pick {
        'Content-Disposition: form-data; name="files[0].path"', 'Content-Disposition: form-data; name="files[0].file"; filename="a"',
        'Content-Disposition: form-data; name="files[1].file"', 'Content-Disposition: form-data; name="file"; filename*=UTF-8\'\'%e2%82',
        'Content-Disposition: form-data; name="files[].path"', 'Content-Disposition: form-data; name="files[0].PATH"',
      }
    else p.data = rng:pick { "fuzz/b.txt", "/", "", ".", "..", "../../../etc/x", "fuzz/", "fuzz/a\0b", "\255", "   " } end
    if #out == 0 then break end
  end
  return out
end

--- A (content-type, body) pair of a mutated multipart request.
function M.multipart(rng, parts)
  local boundary = rng:chance(0.85) and "fuzzboundary" or rng:pick(BOUNDARIES)
  local ps = mutate_parts(rng, parts, boundary)
  local body = multipart_body(rng, boundary, ps)
  if rng:chance(0.25) then body = M.mutate(rng, body, { "--" .. boundary, "\r\n--" .. boundary .. "--", "\r\n\r\n" }) end
  local ct = "multipart/form-data; boundary=" .. boundary
  if rng:chance(0.15) then
    ct = rng:pick {
      'multipart/form-data; boundary="' .. boundary .. '"', "multipart/form-data", "multipart/form-data; boundary=",
      "text/plain", "multipart/mixed; boundary=" .. boundary, "multipart/form-data; boundary=" .. boundary .. "; boundary=z",
      M.mutate(rng, ct), "multipart/form-data; BOUNDARY=" .. boundary, "",
    }
  end
  return ct, body
end

---------------------------------------------------------------------------
-- The targets: each makes one input (a table) from a generator
---------------------------------------------------------------------------

-- Routes that answer 501 or 503 because a feature is not available
-- locally (doc/dtlocal.md "What is local, what is not"; the toolbox's
-- extras): those statuses are their documented answers there, nowhere else.
local NOT_LOCAL = {
  { 501, "^/api/sandbox/[^/]+/ssh%-access$" }, { 501, "^/api/sandbox/ssh%-access/validate$" },
  { 501, "^/api/sandbox/[^/]+/pause$" }, { 501, "^/api/sandbox/[^/]+/fork$" },
  { 501, "^/api/sandbox/[^/]+/snapshot$" }, { 501, "^/api/sandbox/[^/]+/backup$" },
  { 501, "^/api/object%-storage/push%-access$" },
  { 503, "^/toolbox/[^/]+/computeruse" }, { 501, "^/toolbox/[^/]+/lsp" },
}

local function documented(status, path, body)
  for _, r in ipairs(NOT_LOCAL) do
    if r[1] == status and path:find(r[2]) then return true end
  end
  -- a git remote that cannot be reached is the daemon's typed 502
  -- (DaytonaGitTransportFailedError in the SDKs), not a failure of ours
  if status == 502 and path:find("^/toolbox/[^/]+/git/") and (body or ""):find('"GIT_TRANSPORT_FAILED"', 1, true) then
    return true
  end
  return false
end
M.documented = documented

local function seg(s) return url_safe((s:gsub("[/?]", function(c) return format("%%%02X", byte(c)) end))) end

local T = {}   -- name -> function(rng, env) -> input
M.targets = T

-- env: { id = sandbox id, pty = the fixture PTY id, session = the fixture
-- session id, repo = the fixture git repository }

T.multipart_bulk = function(rng, env)
  local n = rng:range(1, 3)
  local parts = {}
  for i = 0, n - 1 do
    parts[#parts + 1] = { name = "files[" .. i .. "].path", data = "fuzz/b" .. i .. ".txt" }
    parts[#parts + 1] = { name = "files[" .. i .. "].file", filename = "b" .. i .. ".txt", data = "data " .. i }
  end
  local ct, body = M.multipart(rng, parts)
  return { kind = "http", method = "POST", path = "/toolbox/" .. env.id .. "/files/bulk-upload",
           headers = { ["Content-Type"] = ct }, body = body }
end

T.multipart_upload = function(rng, env)
  local ct, body = M.multipart(rng, { { name = "file", filename = "a.txt", data = "hello fuzz" } })
  local qs = rng:chance(0.8) and "path=fuzz%2Fup.txt" or M.query(rng, { { "path", "fuzz/up.txt" } })
  return { kind = "http", method = "POST",
           path = "/toolbox/" .. env.id .. rng:pick { "/files/upload", "/files/upload-v2" } .. "?" .. qs,
           headers = { ["Content-Type"] = ct }, body = body }
end

local TOOLBOX_QUERIES = {
  { "GET", "/files", { { "path", "fuzz" } } },
  { "GET", "/files/info", { { "path", "fuzz/a.txt" } } },
  { "GET", "/files/find", { { "path", "fuzz" }, { "pattern", "fuzz" } } },
  { "GET", "/files/search", { { "path", "fuzz" }, { "pattern", "*.txt" } } },
  { "GET", "/files/download", { { "path", "fuzz/a.txt" } } },
  { "DELETE", "/files", { { "path", "fuzz/nothing" }, { "recursive", "true" } } },
  { "POST", "/files/folder", { { "path", "fuzz/dir" }, { "mode", "755" } } },
  { "POST", "/files/move", { { "source", "fuzz/nothing" }, { "destination", "fuzz/nothing2" } } },
  { "POST", "/files/permissions", { { "path", "fuzz/a.txt" }, { "mode", "644" }, { "owner", "daytona" } } },
  { "GET", "/git/status", { { "path", "fuzzrepo" } } },
  { "GET", "/git/branches", { { "path", "fuzzrepo" } } },
  { "GET", "/git/history", { { "path", "fuzzrepo" } } },
  { "GET", "/process/session/{session}/command/x/logs", { { "follow", "false" } } },
  { "GET", "/process/session/entrypoint/logs", { { "follow", "false" } } },
  { "GET", "/process/pty/create-connect", { { "id", "fz-q" }, { "cols", "80" }, { "rows", "24" } } },
  { "GET", "/port/{port}/in-use", {} },
  { "GET", "/port", {} },
  { "GET", "/version", { { "DAYTONA_SANDBOX_AUTH_KEY", "x" } } },
  { "GET", "/process/interpreter/context", {} },
  { "GET", "/process/pty", {} },
}

local function fill(path, rng, env)
  return (path:gsub("{(%w+)}", function(k)
    if k == "port" then return seg(rng:chance(0.5) and rng:pick { "1", "65535", "0", "99999999999999999999", "-1", "1e3" } or random_string(rng)) end
    return env[k] or "x"
  end))
end

T.query_toolbox = function(rng, env)
  local r = rng:pick(TOOLBOX_QUERIES)
  local path = "/toolbox/" .. env.id .. fill(r[2], rng, env)
  return { kind = "http", method = r[1], path = path .. "?" .. M.query(rng, r[3]) }
end

local API_QUERIES = {
  { "GET", "/api/sandbox", { { "limit", "10" }, { "labels", '{"a":"b"}' }, { "states", "started" }, { "sort", "name" }, { "order", "asc" } } },
  { "GET", "/api/sandbox", { { "cursor", "5b226e616d65222c22617363222c2261222c2262225d" }, { "sort", "name" }, { "order", "asc" } } },
  { "GET", "/api/sandbox", { { "minCpu", "1" }, { "maxMemoryGiB", "4" }, { "isPublic", "false" }, { "createdAtAfter", "2020-01-01T00:00:00Z" } } },
  { "GET", "/api/sandbox/paginated", { { "page", "1" }, { "limit", "5" }, { "name", "x" } } },
  { "GET", "/api/sandbox/{id}/ports/{port}/signed-preview-url", { { "expiresInSeconds", "60" } } },
  { "GET", "/api/sandbox/{id}/ports/{port}/preview-url", {} },
  { "POST", "/api/sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire", {} },
  { "GET", "/api/snapshots", { { "page", "1" }, { "limit", "10" }, { "name", "dtl" } } },
  { "GET", "/api/volumes", { { "includeDeleted", "false" } } },
  { "GET", "/api/volumes/by-name/{name}", {} },
  { "GET", "/api/sandbox/{other}", {} },
  { "POST", "/api/sandbox/{other}/stop", { { "force", "true" } } },
  { "POST", "/api/sandbox/{other}/recover", { { "skipStart", "true" } } },
  { "POST", "/api/sandbox/{id}/autostop/{interval}", {} },
  { "POST", "/api/sandbox/{id}/autodelete/{interval}", {} },
  { "POST", "/api/sandbox/{id}/autoarchive/{interval}", {} },
  { "POST", "/api/sandbox/{id}/public/{bool}", {} },
  { "GET", "/api/sandbox/{id}/toolbox-proxy-url", {} },
  { "GET", "/api/sandbox/{id}/build-logs", { { "follow", "true" } } },
  { "POST", "/api/sandbox/{id}/pause", {} },
  { "GET", "/api/config", {} },
  { "GET", "/api/socket.io/", { { "EIO", "4" }, { "transport", "polling" } } },
  { "GET", "/api/toolbox/{id}/toolbox/files", { { "path", "fuzz" } } },
}

T.query_api = function(rng, env)
  local r = rng:pick(API_QUERIES)
  local path = r[2]:gsub("{(%w+)}", function(k)
    if k == "id" then return rng:chance(0.9) and env.id or seg(random_string(rng)) end
    if k == "other" then return seg(rng:chance(0.5) and "no-such-sandbox" or random_string(rng)) end
    if k == "port" then return seg(rng:chance(0.6) and rng:pick { "3000", "1", "65535", "0", "65536", "+80", "080" } or random_string(rng)) end
    if k == "interval" then
      -- never a short auto-stop of the fixture sandbox: the health checks need it
      return seg(rng:chance(0.5) and rng:pick { "0", "-1", "+0", "99999999999999999999", "1e3", "0x10", "-9223372036854775808" } or random_string(rng))
    end
    if k == "bool" then return seg(rng:chance(0.5) and rng:pick { "true", "false", "TRUE", "1" } or random_string(rng)) end
    return seg(random_string(rng))
  end)
  return { kind = "http", method = r[1], path = path .. "?" .. M.query(rng, r[3]) }
end

local API_JSON = {
  { "POST", "/api/sandbox", { name = "fz", labels = { a = "b" }, env = { A = "1" }, autoStopInterval = 0,
      autoDeleteInterval = 0, public = false, user = "daytona", snapshot = "dtlocal",
      volumes = M.array(), networkBlockAll = false, ttlMinutes = 0 }, true },
  { "PUT", "/api/sandbox/{id}/labels", { labels = { a = "b", ["code-toolbox-language"] = "python" } } },
  { "POST", "/api/sandbox/{id}/resize", { cpu = 1, memory = 1, disk = 3 } },
  { "POST", "/api/sandbox/{id}/network-settings", { networkBlockAll = false, networkAllowList = "", domainAllowList = "" } },
  { "POST", "/api/volumes", { name = "fuzzvol" } },
  { "POST", "/api/snapshots", { name = "fz", imageName = "x" } },
  { "POST", "/api/sandbox/{id}/fork", { name = "x" } },
}
local API_KEYS = {
  "name", "labels", "env", "cpu", "memory", "disk", "gpu", "gpuType", "user", "snapshot", "volumes",
  "buildInfo", "networkBlockAll", "networkAllowList", "domainAllowList", "autoStopInterval",
  "autoArchiveInterval", "autoDeleteInterval", "ttlMinutes", "public", "target", "class", "secrets",
  "linkedSandbox", "spot", "kvm", "autoPauseInterval", "volumeId", "mountPath", "subpath",
}

T.json_api = function(rng, env)
  local r = rng:pick(API_JSON)
  local seed = r[3]
  if r[2] == "/api/sandbox/{id}/resize" and rng:chance(0.5) then
    -- grow only: a started sandbox refuses to shrink (400), so this reaches the cgroup update
    seed = { cpu = rng:pick { 1, 2 }, memory = rng:pick { 1, 2 } }
  end
  return { kind = "http", method = r[1], path = r[2]:gsub("{id}", env.id),
           headers = { ["Content-Type"] = "application/json" }, body = M.json_body(rng, seed, API_KEYS),
           creates = r[4] }
end

local TOOLBOX_JSON = {
  { "/process/execute", { command = "echo fuzz", timeout = 5, cwd = "fuzz", envs = { A = "b" } } },
  { "/process/code-run", { code = "print(1)", language = "python", argv = M.array { "a" }, timeout = 5, envs = { A = "b" } } },
  { "/process/session", { sessionId = "fz-new" }, "session" },
  { "/process/session/{session}/exec", { command = "echo fuzz", runAsync = false, suppressInputEcho = true } },
  { "/process/session/{session}/command/x/input", { data = "input\n" } },
  { "/process/pty", { id = "fz-new", cwd = "fuzz", envs = { A = "b" }, cols = 80, rows = 24, lazyStart = true }, "pty" },
  { "/process/pty/{pty}/resize", { cols = 100, rows = 30 } },
  { "/process/interpreter/context", { language = "python", cwd = "fuzz" }, "context" },
  { "/git/clone", { url = "file:///nonexistent", path = "fuzz/clone", branch = "main", username = "u", password = "p" } },
  { "/git/add", { path = "fuzzrepo", files = M.array { "." } } },
  { "/git/commit", { path = "fuzzrepo", message = "m", author = "a", email = "a@b", allow_empty = true } },
  { "/git/branches", { path = "fuzzrepo", name = "fz-branch" } },
  { "/git/checkout", { path = "fuzzrepo", branch = "main" } },
  { "/files/replace", { files = M.array { "fuzz/a.txt" }, pattern = "hello", newValue = "bye" } },
  { "/files/bulk-download", { paths = M.array { "fuzz/a.txt" } } },
  { "/files/folder", { path = "fuzz/dir2", mode = "755" } },
}
local TOOLBOX_KEYS = {
  "command", "timeout", "cwd", "envs", "code", "language", "argv", "sessionId", "runAsync", "async",
  "suppressInputEcho", "data", "id", "cols", "rows", "lazyStart", "url", "path", "branch", "commit_id",
  "username", "password", "files", "message", "author", "email", "allow_empty", "name", "pattern",
  "newValue", "paths", "mode", "insecure_skip_tls",
}

T.json_toolbox = function(rng, env)
  local r = rng:pick(TOOLBOX_JSON)
  local path = "/toolbox/" .. env.id .. r[1]:gsub("{(%w+)}", function(k) return env[k] end)
  local method = "POST"
  if r[1] == "/git/branches" and rng:chance(0.3) then method = "DELETE" end
  return { kind = "http", method = method, path = path, headers = { ["Content-Type"] = "application/json" },
           body = M.json_body(rng, r[2], TOOLBOX_KEYS), makes = r[3] }
end

local EIO_FRAMES = {
  '40{"token":"{token}"}', "40", '40{"token":1}', "40/admin,", '42["hello",1]', '421["x",{}]', "43[]",
  "431[1,2]", "41", "2", "3", "2probe", "6", "1", "4", "44{}", "45", "", "0", "5", '40["token"]',
}

T.events = function(rng, env)
  local frames = {}
  if rng:chance(0.8) then frames[1] = { data = '40{"token":"{token}"}', kind = "text" } end
  for _ = 1, rng:range(0, 5) do
    local d = rng:pick(EIO_FRAMES)
    if rng:chance(0.6) then d = M.mutate(rng, d, EIO_FRAMES) end
    if rng:chance(0.2) then
      d = "42" .. M.json_body(rng, M.array { "sandbox.created", { id = "x" } }, {})
    end
    frames[#frames + 1] = { data = d, kind = rng:chance(0.05) and "binary" or "text" }
  end
  local qs = rng:chance(0.85) and "EIO=4&transport=websocket"
    or M.query(rng, { { "EIO", "4" }, { "transport", "websocket" } })
  local headers
  if rng:chance(0.2) then headers = { Authorization = rng:pick { "Bearer {token}", "Bearer", "bearer x y", M.mutate(rng, "Bearer {token}") } } end
  return { kind = "ws", target = "events", path = "/api/socket.io/?" .. qs, frames = frames, headers = headers,
           probe = "2fuzzprobe" }
end

local PTY_FRAMES = { "echo fuzz\r", "\r", "", "\3", "ls\r", "\27[A", "stty size\r", "\0", "\255\254" }

T.pty = function(rng, env)
  local frames = {}
  for _ = 1, rng:range(1, 4) do
    local d = rng:pick(PTY_FRAMES)
    if rng:chance(0.7) then d = M.mutate(rng, d) end
    -- never end the shell on purpose: Ctrl-D and exit are what the
    -- fixture's recreation covers, not what is fuzzed
    d = d:gsub("[\4]", ""):gsub("exit", "exi")
    frames[#frames + 1] = { data = d, kind = rng:chance(0.5) and "binary" or "text" }
  end
  local protocols = rng:pick { {}, { "X-Daytona-Pty-Exit-Control" }, { "X-Daytona-SDK-Version~0.218.0", "X-Daytona-Pty-Exit-Control" } }
  return { kind = "ws", target = "pty", path = "/toolbox/" .. env.id .. "/process/pty/" .. env.pty .. "/connect",
           frames = frames, protocols = protocols }
end

local function b64url(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    for k = 0, (c and 3 or b and 2 or 1) do
      local v = (n >> (18 - 6 * k)) & 63
      out[#out + 1] = alphabet:sub(v + 1, v + 1)
    end
  end
  return concat(out)
end

T.pty_create = function(rng, env)
  local qs = M.query(rng, { { "id", "fz-cc" }, { "cols", "80" }, { "rows", "24" }, { "cwd", "fuzz" } })
  local protocols = { "X-Daytona-Pty-Exit-Control" }
  if rng:chance(0.7) then
    local envs = M.json_body(rng, { A = "b" }, { "TERM", "PATH", "A" })
    local tok = rng:chance(0.9) and b64url(envs) or M.mutate(rng, b64url(envs))
    protocols[#protocols + 1] = "X-Daytona-Pty-Envs~" .. tok
  end
  return { kind = "ws", target = "pty", path = "/toolbox/" .. env.id .. "/process/pty/create-connect?" .. qs,
           frames = { { data = "echo fz\r", kind = "text" } }, protocols = protocols, makes = "pty" }
end

T.interpreter = function(rng, env)
  local seed = rng:pick {
    { code = "print(1)" }, { code = "x = 1", contextId = "default", timeout = 5, envs = { A = "b" } },
    { code = "print(2)", contextId = env.context, timeout = 0 }, { code = "1/0" },
  }
  local frames = { { data = M.json_body(rng, seed, { "code", "contextId", "timeout", "envs" }),
                     kind = rng:chance(0.1) and "binary" or "text" } }
  if rng:chance(0.1) then frames[2] = { data = M.mutate(rng, "{}"), kind = "text" } end
  if rng:chance(0.05) then frames = {} end
  return { kind = "ws", target = "interpreter", path = "/toolbox/" .. env.id .. "/process/interpreter/execute",
           frames = frames, protocols = rng:chance(0.5) and { "X-Daytona-SDK-Version~0.218.0" } or nil }
end

local WS_HANDSHAKE_MAX = 3000   -- path and subprotocols of an upgrade
local TARGET_MAX = 20000        -- path and query of a request
local TARGET_ARGS = 300         -- and its query arguments
local UNCAPPED = os.getenv("FUZZ_UNCAPPED") == "1"

-- How often each target is picked (out of the sum).
local WEIGHTS = {
  { "multipart_bulk", 12 }, { "multipart_upload", 8 }, { "query_toolbox", 12 }, { "query_api", 12 },
  { "json_api", 14 }, { "json_toolbox", 18 }, { "events", 9 }, { "pty", 5 }, { "pty_create", 3 },
  { "interpreter", 7 },
}
M.WEIGHTS = WEIGHTS

--- Input number i of seed `seed` for the fixtures env (deterministic).
function M.input(seed, i, env, only_target)
  local rng = M.rng(seed, i)
  local name = only_target
  if not name then
    local total = 0
    for _, w in ipairs(WEIGHTS) do total = total + w[2] end
    local x = rng:int(total)
    for _, w in ipairs(WEIGHTS) do
      x = x - w[2]
      if x <= 0 then name = w[1]; break end
    end
  end
  local input = T[name](rng, env)
  input.name = name
  -- Limits outside the parsers under test, so that a failure is news:
  -- our WebSocket client (libwebsockets) cannot send a handshake of 4 KiB
  -- or more (it fails with a misleading ECONNREFUSED before connecting);
  -- and the server's request head must fit its 64 KiB per-connection pool
  -- (libmicrohttpd), the target plus ~60 bytes per query argument: past
  -- it the server hangs or resets instead of answering 414 (the pending
  -- cases in spec/dtlocal/fuzz_spec.lua). FUZZ_UNCAPPED=1 lifts the caps.
  if UNCAPPED then return input end
  if input.kind == "ws" then
    local budget = WS_HANDSHAKE_MAX
    for k, p in ipairs(input.protocols or {}) do
      p = p:sub(1, math.max(1, budget // 2))
      input.protocols[k] = p
      budget = budget - #p
    end
    input.path = input.path:sub(1, math.max(64, budget))
  else
    local p = input.path:sub(1, TARGET_MAX)
    local n = 0
    input.path = p:gsub("&", function() n = n + 1; if n > TARGET_ARGS then return "" end end)
  end
  return input
end

---------------------------------------------------------------------------
-- Running inputs against a server
---------------------------------------------------------------------------

local Fuzzer = {}
Fuzzer.__index = Fuzzer

--- A fuzzer against srv (support.dtlocal). opts: seed, request_timeout
-- (default 15 s), health_every (default 20 inputs), log (function(line)),
-- out_dir (where failing inputs are written; default $TMPDIR or /tmp).
function M.new(opts)
  return setmetatable({
    srv = opts.srv, seed = opts.seed or 1, request_timeout = opts.request_timeout or 15,
    health_every = opts.health_every or 20, log = opts.log or function(line) io.stderr:write(line, "\n") end,
    out_dir = opts.out_dir or os.getenv("TMPDIR") or "/tmp",
    env = {}, failures = {}, count = 0, stats = {},
  }, Fuzzer)
end

local function api(self, method, path, body, opts)
  opts = opts or {}
  local headers = { Authorization = "Bearer " .. self.srv.token }
  if body then headers["Content-Type"] = "application/json" end
  local r = http.request{ url = self.srv.base_url .. path, method = method, headers = headers,
                          body = body and M.encode(tree(body)) or nil, timeout = opts.timeout or 60 }
  local decoded = r.body ~= "" and cjson.decode(r.body) or nil
  return r.status, decoded
end

--- Make the fixtures: a sandbox (also the health check's), a session, a
-- lazy PTY, an interpreter context, a git repository and files.
function Fuzzer:setup()
  local st, sb = api(self, "POST", "/api/sandbox", { name = "fuzz-" .. self.seed % 100000, autoStopInterval = 0 })
  assert(st == 200, "create: " .. tostring(st))
  local env = self.env
  env.id = sb.id
  env.session, env.pty = "fz-session", "fz-pty"
  local tb = "/toolbox/" .. env.id
  self:exec("mkdir -p fuzz && echo hello > fuzz/a.txt && (git init -q fuzzrepo 2>/dev/null || mkdir -p fuzzrepo); echo ok")
  assert(api(self, "POST", tb .. "/process/session", { sessionId = env.session }) < 300)
  self:ensure_pty()
  local cs, c = api(self, "POST", tb .. "/process/interpreter/context", { language = "python" })
  env.context = cs == 200 and c.id or "default"
  self.token = self.srv.token
end

function Fuzzer:ensure_pty()
  local tb = "/toolbox/" .. self.env.id
  local st = api(self, "GET", tb .. "/process/pty/" .. self.env.pty)
  if st ~= 200 then
    api(self, "POST", tb .. "/process/pty", { id = self.env.pty, lazyStart = true })
  end
end

--- Run `command` in the sandbox; returns its output, or raises.
function Fuzzer:exec(command)
  local st, b = api(self, "POST", "/toolbox/" .. self.env.id .. "/process/execute", { command = command, timeout = 30 },
                    { timeout = 30 })
  if st ~= 200 or type(b) ~= "table" then
    error(format("exec in the sandbox: HTTP %s: %s", tostring(st), type(b) == "table" and cjson.encode(b) or tostring(b)), 0)
  end
  return b.result
end

--- Remove the fixture sandbox (and wait until it is gone, so that the
-- server's own stop has nothing left to stop).
function Fuzzer:teardown()
  local id = self.env.id
  if not id then return end
  self.env.id = nil
  pcall(api, self, "DELETE", "/api/sandbox/" .. id)
  local deadline = core.now() + 20
  while core.now() < deadline do
    local ok, st = pcall(api, self, "GET", "/api/sandbox/" .. id)
    if ok and st == 404 then return end
    scheduler.sleep(0.05)
  end
end

-- The health check: the server runs, lists sandboxes with the token, and
-- runs a command in the sandbox. Returns nil or what failed.
function Fuzzer:health()
  local p = self.srv.proc
  if p and p:status() ~= nil then return "the server process exited" end
  local ok, st, b = pcall(api, self, "GET", "/api/sandbox", nil, { timeout = 30 })
  if not ok then return "GET /api/sandbox: " .. tostring(st) end
  if st ~= 200 or type(b) ~= "table" or type(b.items) ~= "table" then
    return "GET /api/sandbox: HTTP " .. tostring(st)
  end
  local eok, out = pcall(self.exec, self, "echo fuzz-$((40+2))")
  if not eok then return tostring(out) end
  if out ~= "fuzz-42\n" and out ~= "fuzz-42" then return "exec in the sandbox answered " .. format("%q", tostring(out)) end
  return nil
end

local function hex(s, max)
  s = s or ""
  local t = {}
  for i = 1, math.min(#s, max or #s) do t[#t + 1] = format("%02x", byte(s, i)) end
  return concat(t) .. ((max and #s > max) and ("... (" .. #s .. " bytes)") or "")
end
M.hex = hex

-- The input with the token put in.
local function substitute(self, s)
  if type(s) ~= "string" then return s end
  return (s:gsub("{token}", self.token))
end

--- A readable description of an input (its bytes in hex), as printed and
-- saved for failures.
function M.describe(input)
  local lines = { "target: " .. tostring(input.name), "kind: " .. input.kind }
  if input.kind == "http" then
    lines[#lines + 1] = "request: " .. input.method .. " " .. input.path
    for k, v in pairs(input.headers or {}) do lines[#lines + 1] = "header: " .. k .. ": " .. v end
    lines[#lines + 1] = "body (" .. #(input.body or "") .. " bytes, hex): " .. hex(input.body, 4096)
    lines[#lines + 1] = "body (escaped): " .. format("%q", (input.body or ""):sub(1, 2048))
  else
    lines[#lines + 1] = "websocket: " .. input.path
    for _, p in ipairs(input.protocols or {}) do lines[#lines + 1] = "protocol: " .. p end
    for k, v in pairs(input.headers or {}) do lines[#lines + 1] = "header: " .. k .. ": " .. v end
    for i, f in ipairs(input.frames) do
      lines[#lines + 1] = format("frame %d (%s, %d bytes, hex): %s", i, f.kind, #f.data, hex(f.data, 4096))
      lines[#lines + 1] = format("frame %d (escaped): %q", i, f.data:sub(1, 2048))
    end
  end
  return concat(lines, "\n")
end

-- a runtime failure (nil, message, code) that says nothing answered
local function transport(code)
  return code ~= nil and errors.is(errors.from_failure("", code), errors.DaytonaConnectionError)
    or code == "ETIMEDOUT"
end

local function header_value(v) return (v:gsub("[%z\r\n]", " ")) end

-- One HTTP input: nil, or what failed.
function Fuzzer:run_http(input)
  local headers = { Authorization = "Bearer " .. self.token, Expect = false }
  for k, v in pairs(input.headers or {}) do headers[k] = header_value(substitute(self, v)) end
  local ok, r, msg, code = pcall(http.request, { url = self.srv.base_url .. input.path, method = input.method,
                                     headers = headers, body = input.body, timeout = self.request_timeout,
                                     follow_redirects = false })
  if not ok then error(r, 0) end
  if not r then
    if transport(code) then return "no response: " .. tostring(msg) end
    if code == "EINVAL" then return nil, "skipped" end
    error(msg, 0)
  end
  if r.status >= 500 and not documented(r.status, input.path:match("^[^?]*"), r.body) then
    return format("HTTP %d: %s", r.status, (r.body or ""):sub(1, 600))
  end
  -- what an input made is removed again: the fixtures stay few and the
  -- sandbox's processes bounded
  if r.status < 300 then
    local b = (r.body or "") ~= "" and cjson.decode(r.body) or nil
    local tb = "/toolbox/" .. self.env.id
    if input.creates and type(b) == "table" and type(b.id) == "string" then
      pcall(api, self, "DELETE", "/api/sandbox/" .. b.id)
    elseif input.makes == "session" then
      self:cleanup("/process/session", "sessions", "sessionId", self.env.session)
    elseif input.makes == "pty" then
      self:cleanup("/process/pty", "sessions", "id", self.env.pty)
    elseif input.makes == "context" and type(b) == "table" and type(b.id) == "string" then
      pcall(api, self, "DELETE", tb .. "/process/interpreter/context/" .. b.id)
    end
  end
  return nil
end

-- Delete every item of a toolbox listing but the fixture `keep`.
function Fuzzer:cleanup(list_path, field, idkey, keep)
  local tb = "/toolbox/" .. self.env.id
  local ok, st, b = pcall(api, self, "GET", tb .. list_path)
  if not ok or st ~= 200 or type(b) ~= "table" then return end
  local items = b[field] or b
  if type(items) ~= "table" then return end
  for _, it in ipairs(items) do
    local id = type(it) == "table" and it[idkey]
    if type(id) == "string" and id ~= keep then
      pcall(api, self, "DELETE", tb .. list_path .. "/" .. seg(id))
    end
  end
end

-- Close codes that mean the server failed: 1011 for an internal error
-- (the toolbox daemon's handler or the event hub) or a lost peer (the
-- proxy: the daemon dropped its side), and 1006 (no close frame at all).
local function bad_close(code, reason)
  reason = reason or ""
  if code == 1006 then return true end
  if code == 1011 and (reason:find("^internal error") or reason:find("peer connection lost")) then return true end
  return false
end

-- One WebSocket input: nil, or what failed.
function Fuzzer:run_ws(input)
  if input.target == "pty" and not input.makes then self:ensure_pty() end
  local url = self.srv.base_url:gsub("^http", "ws") .. input.path
  local headers = { Authorization = "Bearer " .. self.token }
  for k, v in pairs(input.headers or {}) do headers[k] = header_value(substitute(self, v)) end
  local ok, ws, wmsg, wcode, refused = pcall(websocket.connect, url, { headers = headers, protocols = input.protocols,
                                                  timeout = self.request_timeout, ping_interval = 0 })
  if ok and not ws then
    if refused and refused.status then
      if refused.status >= 500 and not documented(refused.status, input.path:match("^[^?]*")) then
        return format("upgrade answered HTTP %d: %s", refused.status, tostring(wmsg))
      end
      return nil
    end
    if transport(wcode) then return "upgrade: no response: " .. tostring(wmsg) end
  end
  if not ok or not ws then
    return nil, "skipped"   -- a request our client refuses to make (a bad header or token)
  end
  local failure
  local closed_by_server, code, reason
  local function recv(timeout)
    local rok, data, what, c, rs = pcall(ws.receive, ws, timeout)
    if not rok or (data == nil and type(c) ~= "number") then
      if rok and c == "ETIMEDOUT" then return false end
      failure = "connection dropped: " .. tostring(rok and what or data)
      return nil
    end
    if data == nil then closed_by_server, code, reason = true, c, rs; return nil end
    return data, what
  end
  -- what the server sends first (the Engine.IO open packet, the PTY's
  -- "connected") comes before any input
  if input.target ~= "interpreter" then recv(self.request_timeout) end
  for _, f in ipairs(input.frames) do
    if closed_by_server or failure then break end
    local data, kind = substitute(self, f.data), f.kind
    -- our client sends text only as valid UTF-8 (the core checks): other
    -- bytes go as a binary message, which every target also must survive
    if kind == "text" and not utf8.len(data) then kind = "binary"; self.binary_text = (self.binary_text or 0) + 1 end
    local sok, sent = pcall(ws.send, ws, data, kind)
    if not sok or not sent then break end   -- the server closed meanwhile: its close tells why
  end
  if input.probe and not closed_by_server and not failure then
    -- an Engine.IO ping answered means the connection still reads input
    pcall(ws.send, ws, input.probe, "text")
    local want = "3" .. input.probe:sub(2)
    local deadline = core.now() + self.request_timeout
    while not closed_by_server and not failure do
      local data = recv(math.max(0.01, deadline - core.now()))
      if data == want then break end
      if data == false then failure = "no answer to an Engine.IO ping within " .. self.request_timeout .. " s"; break end
    end
  elseif input.target == "interpreter" and #input.frames > 0 then
    -- a run ends with a close; give it a while
    local deadline = core.now() + 10
    while not closed_by_server and not failure and core.now() < deadline do
      recv(math.max(0.01, deadline - core.now()))
    end
  else
    -- what the input provoked at once (a PTY echoes), then our close
    local deadline = core.now() + 0.02
    while not closed_by_server and not failure and core.now() < deadline do
      recv(math.max(0.01, deadline - core.now()))
    end
  end
  if not closed_by_server and not failure then
    local cok, c, rs = pcall(ws.close, ws, 1000, "", 5)
    if cok then code, reason = c, rs end
  else
    pcall(ws.abort, ws)
  end
  if not failure and bad_close(code, reason) then
    failure = format("closed with %s %q", tostring(code), tostring(reason))
  end
  if input.makes == "pty" then self:cleanup("/process/pty", "sessions", "id", self.env.pty) end
  return failure
end

-- Record a failure: print it and write the input to a file.
function Fuzzer:fail(i, input, why)
  local path = format("%s/dtlocal-fuzz-%d-%d.txt", self.out_dir, self.seed, i)
  local text = format("dtlocal fuzz failure\nseed: %d\ninput: %d\nwhy: %s\n%s\n", self.seed, i, why,
                      input and M.describe(input) or "(the inputs since the last health check)")
  local f = io.open(path, "wb")
  if f then f:write(text); f:close() end
  if input and input.kind == "http" and input.body then
    local bf = io.open(path:gsub("%.txt$", ".body"), "wb")
    if bf then bf:write(input.body); bf:close() end
  end
  local line = format("FUZZ FAILURE seed=%d input=%d target=%s: %s (input in %s; replay: FUZZ_SEED=%d FUZZ_INPUT=%d)",
                      self.seed, i, input and input.name or "-", why, path, self.seed, i)
  self.log(line)
  self.failures[#self.failures + 1] = { seed = self.seed, input = i, why = why, file = path, line = line }
end

--- Run one input number i; returns nil or what failed.
function Fuzzer:one(i, only_target)
  local input = M.input(self.seed, i, self.env, only_target)
  local t0 = core.now()
  local run = input.kind == "http" and self.run_http or self.run_ws
  local why, note = run(self, input)
  local dt = core.now() - t0
  local s = self.stats[input.name] or { n = 0, time = 0, skipped = 0 }
  self.stats[input.name] = s
  s.n, s.time = s.n + 1, s.time + dt
  if note == "skipped" then s.skipped = s.skipped + 1 end
  self.count = self.count + 1
  if why then self:fail(i, input, why) end
  return why, input
end

--- Run inputs: opts.seconds of them from input 1 (or opts.first), or just
-- input opts.only. Stops at opts.max_failures (default 10) or once the
-- server is unhealthy. Returns { inputs, seconds, rate, failures, stats }.
function Fuzzer:run(opts)
  opts = opts or {}
  local t0 = core.now()
  local i = opts.first or 1
  local last_health = i - 1
  local max_failures = opts.max_failures or 10
  local progress_at = t0 + (opts.progress or math.huge)
  while true do
    if opts.only then
      self:one(opts.only, opts.target)
      last_health = opts.only - 1
      i = opts.only
    else
      if core.now() - t0 >= (opts.seconds or 5) then break end
      self:one(i, opts.target)
    end
    local last = i
    if opts.only or (i - last_health) >= self.health_every then
      local bad = self:health()
      if bad then
        self:fail(last, nil, format("health check after inputs %d..%d: %s", last_health + 1, last, bad))
        self.unhealthy = true
        break
      end
      last_health = last
    end
    if opts.only or #self.failures >= max_failures then break end
    if core.now() >= progress_at then
      self.log(format("fuzz: seed %d: %d inputs, %d failures, %.0f s", self.seed, self.count, #self.failures, core.now() - t0))
      progress_at = core.now() + opts.progress
    end
    i = i + 1
  end
  if not opts.only and not self.unhealthy and last_health < i - 1 and #self.failures < max_failures then
    local bad = self:health()
    if bad then self:fail(i - 1, nil, format("health check after inputs %d..%d: %s", last_health + 1, i - 1, bad)) end
  end
  local secs = core.now() - t0
  return { inputs = self.count, seconds = secs, rate = self.count / math.max(secs, 1e-9),
           failures = self.failures, stats = self.stats }
end

--- One line per target: inputs, mean time, skipped.
function M.stats_lines(stats)
  local names = {}
  for k in pairs(stats) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do
    local s = stats[k]
    out[#out + 1] = format("  %-16s %6d inputs  %7.2f ms each  %d skipped", k, s.n, s.time / s.n * 1000, s.skipped)
  end
  return concat(out, "\n")
end

M.scheduler = scheduler
return M
