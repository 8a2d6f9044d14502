--- daytona.runtime.multipart: a streaming multipart/form-data parser.
--
-- Feed it the body in chunks of any size (as they come off the socket,
-- chunked or not); each part's data goes to a sink as it arrives, so a part
-- of any size is never held whole in memory. Only a delimiter's length of
-- data is kept back between chunks. The preamble before the first boundary
-- and the epilogue after the last are ignored, as RFC 2046 says.
--
--     local multipart = require "daytona.runtime.multipart"
--     local boundary = assert(multipart.boundary(req.headers["content-type"]))
--     local p = multipart.parser(boundary, function(part)
--       -- part.name, part.filename (nil for plain fields), part.content_type,
--       -- part.headers (lower-case names)
--       local f = assert(io.open(dir .. "/" .. n, "wb"))
--       return function(data)            -- data, ..., then nil at the part's end
--         if data then f:write(data) else f:close() end
--       end
--     end)
--     for chunk in req:chunks() do p:feed(chunk) end
--     p:finish()
local errors = require "daytona.errors"

local setmetatable, type, error = setmetatable, type, error
local find, sub, lower, match, gsub = string.find, string.sub, string.lower, string.match, string.gsub

local M = {}

local function bad(msg)
  error(errors.DaytonaValidationError("multipart: " .. msg, { status_code = 400, code = "EINVAL" }), 3)
end

--- The boundary parameter of a multipart/* Content-Type, validated
-- (RFC 2046: 1 to 70 characters from its set, not ending in a space).
-- @param content_type the header's value (quoted or bare boundary)
-- @return the boundary, or nil and a message when there is none or it is
-- invalid
function M.boundary(content_type)
  if type(content_type) ~= "string" then return nil, "no content-type" end
  local ct = lower(content_type)
  if not find(ct, "^%s*multipart/") then return nil, "not a multipart content-type" end
  -- the boundary's case matters: take it from the original string
  local b = match(content_type, '[;%s][Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]%s*=%s*"([^"]*)"')
    or match(content_type, "[;%s][Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]%s*=%s*([^;%s]+)")
  if not b then return nil, "no boundary parameter" end
  if #b < 1 or #b > 70 or find(b, "[^%w'()+_,%-%./:=? ]") or sub(b, -1) == " " then
    return nil, "invalid boundary"
  end
  return b
end

-- Parameters of a header value such as Content-Disposition:
-- `form-data; name="a"; filename="b.txt"` -> "form-data", { name = "a", filename = "b.txt" }
local function params(value)
  local v, rest = match(value, "^%s*([^;]*)(.*)$")
  local p = {}
  local i = 1
  while i <= #rest do
    local s, e, key = find(rest, "^%s*;%s*([^=;%s]+)%s*=%s*", i)
    if not s then
      local s2, e2 = find(rest, "^%s*;[^;]*", i)   -- a flag without a value: skip
      if not s2 then break end
      i = e2 + 1
    else
      key = lower(key)
      i = e + 1
      local val
      if sub(rest, i, i) == '"' then
        local buf, j = {}, i + 1
        while j <= #rest do
          local c = sub(rest, j, j)
          if c == "\\" and j < #rest then buf[#buf + 1] = sub(rest, j + 1, j + 1); j = j + 2
          elseif c == '"' then break
          else buf[#buf + 1] = c; j = j + 1 end
        end
        val = table.concat(buf)
        i = j + 1
      else
        local s3, e3, tok = find(rest, "^([^;]*)", i)
        val = s3 and gsub(tok, "%s+$", "") or ""
        i = (e3 or i) + 1
      end
      p[key] = val
    end
  end
  return lower(gsub(v, "%s+$", "")), p
end

-- RFC 5987 ext-value: UTF-8''percent-encoded
local function ext_value(s)
  local enc = match(s, "^[^']*'[^']*'(.*)$")
  if not enc then return nil end
  return (gsub(enc, "%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local Parser = { __name = "daytona.multipart.Parser" }
Parser.__index = Parser

local PREAMBLE, AFTER_DELIM, HEADERS, BODY, DONE = 1, 2, 3, 4, 5

--- A parser for a body with this boundary.
-- @param boundary the boundary, as `boundary` returns it
-- @param on_part `function(part) -> sink | nil`, called at each part's
-- headers with `part.name`, `part.filename` (nil for plain fields; a
-- `filename*` is decoded), `part.content_type`, `part.disposition` and
-- `part.headers` (lower-case names). The sink, `function(data)`, is called
-- with each piece of the part's data and then with nil once the part ends;
-- nil drops the part's data.
-- @param[opt] opts options:
-- @param[opt] opts.max_header_bytes the largest header block of a part
-- (default 16 KiB)
-- @param[opt=1000] opts.max_parts the most parts accepted
-- @return a `Parser`
-- @raise a plain error on misuse
function M.parser(boundary, on_part, opts)
  if type(boundary) ~= "string" or boundary == "" then
    error("bad argument #1 to 'parser' (boundary expected)", 2)
  end
  if type(on_part) ~= "function" then
    error("bad argument #2 to 'parser' (function expected)", 2)
  end
  opts = opts or {}
  return setmetatable({
    -- the body is read as if preceded by CRLF, so the first boundary
    -- (which may start the body) is found by the same delimiter
    buf = "\r\n",
    delim = "\r\n--" .. boundary,
    state = PREAMBLE,
    on_part = on_part,
    sink = nil,
    nparts = 0,
    max_header = opts.max_header_bytes or 16384,
    max_parts = opts.max_parts or 1000,
  }, Parser)
end

local function parse_headers(self, block)
  local headers = {}
  for line in (block == "" and "" or block .. "\r\n"):gmatch("(.-)\r\n") do
    local k, v = match(line, "^([!#$%%&'*+%-.^_`|~%w]+)%s*:%s*(.-)%s*$")
    if not k then bad("malformed part header line") end
    headers[lower(k)] = v
  end
  local cd = headers["content-disposition"]
  local part = { headers = headers, content_type = headers["content-type"] }
  if cd then
    local kind, p = params(cd)
    part.disposition = kind
    part.name = p.name
    part.filename = (p["filename*"] and ext_value(p["filename*"])) or p.filename
  end
  self.nparts = self.nparts + 1
  if self.nparts > self.max_parts then bad("too many parts") end
  local sink = self.on_part(part)
  if sink ~= nil and type(sink) ~= "function" then
    error("multipart: on_part must return a function or nil", 0)
  end
  self.sink = sink
end

--- Feed the next chunk of the body; parts and their data go to `on_part`
-- and the sinks as they are complete. Chunks after the closing boundary
-- are ignored.
-- @param chunk string, of any size
-- @raise `DaytonaValidationError` (status_code 400, code EINVAL) on
-- malformed input: a bad boundary line, headers too big or malformed, too
-- many parts; a plain error when `on_part` returns neither a function nor
-- nil; errors raised by `on_part` or a sink propagate
function Parser:feed(chunk)
  if self.state == DONE or chunk == "" then return end
  local buf = self.buf .. chunk
  local delim, dl = self.delim, #self.delim
  while true do
    local state = self.state
    if state == PREAMBLE or state == BODY then
      local s, e = find(buf, delim, 1, true)
      if s then
        if state == BODY then
          if s > 1 and self.sink then self.sink(sub(buf, 1, s - 1)) end
          if self.sink then self.sink(nil) end
          self.sink = nil
        end
        buf = sub(buf, e + 1)
        self.state = AFTER_DELIM
      else
        -- keep what could be the start of a delimiter split across chunks
        local keep = #buf - (dl - 1)
        if keep > 0 then
          if state == BODY and self.sink then self.sink(sub(buf, 1, keep)) end
          buf = sub(buf, keep + 1)
        end
        break
      end
    elseif state == AFTER_DELIM then
      -- "--" closes; else optional whitespace then CRLF starts a part
      if #buf < 2 then break end
      if sub(buf, 1, 2) == "--" then
        self.state = DONE
        buf = ""
        break
      end
      local s, e = find(buf, "^[ \t]*\r\n")
      if s then
        buf = sub(buf, e + 1)
        self.state = HEADERS
      elseif find(buf, "^[ \t]*\r?$") and #buf < 256 then
        break   -- the line's end has not arrived yet
      else
        bad("malformed boundary line")
      end
    elseif state == HEADERS then
      local s, e
      if sub(buf, 1, 2) == "\r\n" then s, e = 1, 2   -- no headers at all
      else s, e = find(buf, "\r\n\r\n", 1, true) end
      if not s then
        if #buf > self.max_header then bad("part headers too large") end
        break
      end
      if s - 1 > self.max_header then bad("part headers too large") end
      parse_headers(self, sub(buf, 1, s - 1))
      buf = sub(buf, e + 1)
      self.state = BODY
    else  -- DONE
      buf = ""
      break
    end
  end
  self.buf = buf
end

--- Tell the parser the body has ended.
-- @return the number of parts
-- @raise `DaytonaValidationError` (status_code 400, code EINVAL) when the
-- body ended before the closing boundary (or had no boundary at all)
function Parser:finish()
  if self.state ~= DONE then
    if self.nparts == 0 and self.state == PREAMBLE then bad("no boundary found in the body") end
    bad("body ended before the closing boundary")
  end
  return self.nparts
end

M.Parser = Parser
return M
