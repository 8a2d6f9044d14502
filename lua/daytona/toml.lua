--- daytona.toml: a TOML 1.0 reader for what the SDK reads from TOML files
-- (`Image:pip_install_from_pyproject`'s pyproject.toml).
--
--     local toml = require "daytona.toml"
--     local doc, err = toml.decode(text)   -- table | nil, "line N: ..."
--
-- Tables, arrays of tables, dotted and quoted keys, basic/literal and
-- multi-line strings (with escapes), arrays, inline tables, booleans,
-- integers and floats (as Lua numbers). Dates and times are kept as their
-- text. A key defined twice is an error, as TOML says.
local type, tonumber, error, pcall, setmetatable, ipairs = type, tonumber, error, pcall, setmetatable, ipairs
local utf8, string, table, math = utf8, string, table, math
local format, sub, find = string.format, string.sub, string.find

local M = {}

local Parser = {}
Parser.__index = Parser

function Parser:_fail(msg)
  local line = 1
  for _ in sub(self.s, 1, self.i - 1):gmatch("\n") do line = line + 1 end
  error({ toml = format("line %d: %s", line, msg) }, 0)
end

function Parser:_peek(n) return sub(self.s, self.i, self.i + (n or 1) - 1) end

-- spaces and tabs; with nl, newlines and comments too
function Parser:_skip(nl)
  while true do
    local _, e = find(self.s, nl and "^[ \t\r\n]+" or "^[ \t]+", self.i)
    if e then self.i = e + 1 end
    if self:_peek() == "#" then
      local ne = find(self.s, "\n", self.i, true)
      self.i = ne and (nl and ne + 1 or ne) or #self.s + 1
    elseif not e then
      return
    end
  end
end

local ESC = { b = "\b", t = "\t", n = "\n", f = "\f", r = "\r", ['"'] = '"', ["\\"] = "\\" }

function Parser:_basic_string(multi)
  local out = {}
  local close = multi and '"""' or '"'
  if multi and self:_peek() == "\n" then self.i = self.i + 1 elseif multi and self:_peek(2) == "\r\n" then self.i = self.i + 2 end
  while true do
    if self.i > #self.s then self:_fail("unterminated string") end
    if self:_peek(#close) == close then
      -- """"" closes with up to two quotes of content before it
      local _, qe = find(self.s, '^"*', self.i)
      local extra = multi and math.min(qe - self.i + 1 - 3, 2) or 0
      out[#out + 1] = ('"'):rep(extra)
      self.i = self.i + #close + extra
      return table.concat(out)
    end
    local c = self:_peek()
    if c == "\\" then
      local e = sub(self.s, self.i + 1, self.i + 1)
      if ESC[e] then
        out[#out + 1] = ESC[e]; self.i = self.i + 2
      elseif e == "u" or e == "U" then
        local n = e == "u" and 4 or 8
        local hex = sub(self.s, self.i + 2, self.i + 1 + n)
        if not hex:match("^" .. ("%x"):rep(n) .. "$") then self:_fail("bad \\" .. e .. " escape") end
        local cp = tonumber(hex, 16)
        if cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then self:_fail("escape is not a Unicode scalar value") end
        out[#out + 1] = utf8.char(cp); self.i = self.i + 2 + n
      elseif multi and find(self.s, "^[ \t]*\r?\n", self.i + 1) then
        -- a line-ending backslash trims the newline and following whitespace
        local _, we = find(self.s, "^[ \t]*\r?\n[ \t\r\n]*", self.i + 1)
        self.i = we + 1
      else
        self:_fail("bad escape \\" .. e)
      end
    elseif c == "\n" and not multi then
      self:_fail("newline in a single-line string")
    else
      out[#out + 1] = c; self.i = self.i + 1
    end
  end
end

function Parser:_literal_string(multi)
  local close = multi and "'''" or "'"
  if multi and self:_peek() == "\n" then self.i = self.i + 1 elseif multi and self:_peek(2) == "\r\n" then self.i = self.i + 2 end
  local e = find(self.s, close, self.i, true)
  if not e then self:_fail("unterminated string") end
  if multi then
    -- ''''' closes with up to two quotes of content before it
    local _, qe = find(self.s, "^'*", e)
    e = e + math.min(qe - e + 1 - 3, 2)
  end
  local v = sub(self.s, self.i, e - 1)
  if not multi and find(v, "\n", 1, true) then self:_fail("newline in a single-line string") end
  self.i = e + #close
  return v
end

function Parser:_key_part()
  local c = self:_peek()
  if c == '"' then self.i = self.i + 1; return self:_basic_string(false) end
  if c == "'" then self.i = self.i + 1; return self:_literal_string(false) end
  local _, e, k = find(self.s, "^([%w_%-]+)", self.i)
  if not e then self:_fail("a key expected") end
  self.i = e + 1
  return k
end

function Parser:_key()
  local parts = { self:_key_part() }
  while true do
    self:_skip()
    if self:_peek() ~= "." then return parts end
    self.i = self.i + 1
    self:_skip()
    parts[#parts + 1] = self:_key_part()
  end
end

local defined = setmetatable({}, { __mode = "k" })   -- tables closed to redefinition

function Parser:_value()
  local c = self:_peek()
  if self:_peek(3) == '"""' then self.i = self.i + 3; return self:_basic_string(true) end
  if self:_peek(3) == "'''" then self.i = self.i + 3; return self:_literal_string(true) end
  if c == '"' then self.i = self.i + 1; return self:_basic_string(false) end
  if c == "'" then self.i = self.i + 1; return self:_literal_string(false) end
  if c == "[" then
    self.i = self.i + 1
    local arr = {}
    while true do
      self:_skip(true)
      if self:_peek() == "]" then self.i = self.i + 1; return arr end
      arr[#arr + 1] = self:_value()
      self:_skip(true)
      local d = self:_peek()
      if d == "," then self.i = self.i + 1
      elseif d == "]" then self.i = self.i + 1; return arr
      else self:_fail("',' or ']' expected in an array") end
    end
  end
  if c == "{" then
    self.i = self.i + 1
    local t = {}
    self:_skip()
    if self:_peek() == "}" then self.i = self.i + 1; defined[t] = true; return t end
    while true do
      self:_skip()
      local k = self:_key()
      self:_skip()
      if self:_peek() ~= "=" then self:_fail("'=' expected") end
      self.i = self.i + 1
      self:_skip()
      self:_assign(t, k, self:_value())
      self:_skip()
      local d = self:_peek()
      if d == "," then self.i = self.i + 1
      elseif d == "}" then self.i = self.i + 1; defined[t] = true; return t
      else self:_fail("',' or '}' expected in an inline table") end
    end
  end
  for _, lit in ipairs({ "true", "false" }) do
    if sub(self.s, self.i, self.i + #lit - 1) == lit and not find(sub(self.s, self.i + #lit, self.i + #lit), "[%w_]") then
      self.i = self.i + #lit
      return lit == "true"
    end
  end
  local _, e, tok = find(self.s, "^([%w_%.%+%-:]+[ ]?[%d:%.%+%-Z]*)", self.i)
  if not e then self:_fail("a value expected") end
  tok = tok:gsub("%s+$", "")
  self.i = self.i + #tok
  local clean = tok:gsub("_", "")
  if tok:match("^%d%d%d%d%-%d%d%-%d%d") or tok:match("^%d%d:%d%d") then return tok end
  if clean == "inf" or clean == "+inf" then return math.huge end
  if clean == "-inf" then return -math.huge end
  if clean:match("^[+-]?nan$") then return 0 / 0 end
  local n = clean:match("^0[xob]") and (tonumber(clean:sub(3), ({ x = 16, o = 8, b = 2 })[clean:sub(2, 2)]))
    or tonumber(clean)
  if not n then self:_fail("bad value " .. tok) end
  return n
end

-- t[k1][k2]... = v, making the intermediate tables
function Parser:_assign(t, keys, v)
  for i = 1, #keys - 1 do
    local k = keys[i]
    if t[k] == nil then t[k] = {} elseif type(t[k]) ~= "table" or defined[t[k]] then
      self:_fail("key " .. k .. " is already defined")
    end
    t = t[k]
  end
  local last = keys[#keys]
  if t[last] ~= nil then self:_fail("key " .. last .. " is defined twice") end
  t[last] = v
end

function Parser:_document()
  local root = {}
  local cur = root
  while true do
    self:_skip(true)
    if self.i > #self.s then return root end
    if self:_peek(2) == "[[" then
      self.i = self.i + 2
      self:_skip()
      local keys = self:_key()
      if self:_peek(2) ~= "]]" then self:_fail("']]' expected") end
      self.i = self.i + 2
      local t = root
      for i = 1, #keys - 1 do
        local k = keys[i]
        if t[k] == nil then t[k] = {} end
        t = t[k]
        if type(t) ~= "table" then self:_fail("key " .. k .. " is not a table") end
        if #t > 0 and type(t[#t]) == "table" then t = t[#t] end
      end
      local last = keys[#keys]
      if t[last] == nil then t[last] = {} end
      if type(t[last]) ~= "table" then self:_fail("key " .. last .. " is not an array of tables") end
      cur = {}
      t[last][#t[last] + 1] = cur
    elseif self:_peek() == "[" then
      self.i = self.i + 1
      self:_skip()
      local keys = self:_key()
      if self:_peek() ~= "]" then self:_fail("']' expected") end
      self.i = self.i + 1
      local t = root
      for _, k in ipairs(keys) do
        if t[k] == nil then t[k] = {} end
        t = t[k]
        if type(t) ~= "table" then self:_fail("key " .. k .. " is not a table") end
        if #t > 0 and type(t[#t]) == "table" then t = t[#t] end
      end
      cur = t
    else
      local keys = self:_key()
      self:_skip()
      if self:_peek() ~= "=" then self:_fail("'=' expected after a key") end
      self.i = self.i + 1
      self:_skip()
      self:_assign(cur, keys, self:_value())
    end
    self:_skip()
    local c = self:_peek()
    if c ~= "" and c ~= "\n" and c ~= "\r" and c ~= "#" then self:_fail("end of line expected") end
  end
end

--- Decode a TOML document.
-- @param text string
-- @return table, or nil and a message "line N: ..."
function M.decode(text)
  if type(text) ~= "string" then return nil, "string expected" end
  local p = setmetatable({ s = text, i = 1 }, Parser)
  local ok, res = pcall(p._document, p)
  if ok then return res end
  if type(res) == "table" and res.toml then return nil, res.toml end
  error(res, 0)
end

return M
