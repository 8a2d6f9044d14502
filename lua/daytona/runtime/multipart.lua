--- daytona.runtime.multipart: a streaming multipart/form-data parser.
--
-- Feed it the body in chunks of any size (as they come off the socket,
-- chunked or not); each part's data goes to a sink as it arrives, so a part
-- of any size is never held whole in memory. Each chunk is scanned where it
-- lies (no copy of the stream is built), and under a delimiter's length of
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
--     for chunk in req:chunks() do assert(p:feed(chunk)) end
--     assert(p:finish())
--
-- Conventions (as the rest of the runtime's): malformed input is a failure,
-- `nil, message, "EINVAL"` (a server answers it with 400), and the parser
-- stays failed; misuse raises a plain error; errors raised by `on_part` or a
-- sink propagate as they are.
local setmetatable, type, error, getmetatable, pcall = setmetatable, type, error, getmetatable, pcall
local find, sub, lower, match, gsub = string.find, string.sub, string.lower, string.match, string.gsub

local M = {}

-- Malformed input, raised from deep in the scan and caught at its top
-- (feed, finish), where it becomes `nil, message, "EINVAL"`; a table of its
-- own, so the callbacks' errors are never mistaken for it.
local Malformed = {}

local function bad(msg)
  error(setmetatable({ message = "multipart: " .. msg }, Malformed), 0)
end

-- Run fn(self, ...) and turn a Malformed raised in it into the failure.
local function guarded(self, fn, ...)
  if self.failed then return nil, self.failed, "EINVAL" end
  local ok, v = pcall(fn, self, ...)
  if ok then return true end
  if getmetatable(v) ~= Malformed then error(v, 0) end
  self.failed = v.message
  return nil, v.message, "EINVAL"
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
        -- runs of plain characters at once, up to a quote or backslash
        local buf, j, n = {}, i + 1, #rest
        while j <= n do
          local q = find(rest, '["\\]', j) or n + 1
          if q > j then buf[#buf + 1] = sub(rest, j, q - 1) end
          j = q
          if j > n or sub(rest, j, j) == '"' then break end
          if j < n then buf[#buf + 1] = sub(rest, j + 1, j + 1); j = j + 2
          else buf[#buf + 1] = "\\"; j = j + 1 end   -- a backslash at the very end
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

local Parser = { __name = "daytona.runtime.multipart.Parser" }
Parser.__index = Parser

local PREAMBLE, AFTER_DELIM, HEADERS, BODY, DONE = 1, 2, 3, 4, 5

-- A boundary line is the delimiter, optional transport padding, CRLF: the
-- CRLF must come within this many bytes of the delimiter, whatever the
-- chunking (longer padding is refused, not buffered without end).
local MAX_BOUNDARY_LINE = 256

local CLOSED = 0   -- boundary_line's answer for the closing delimiter

--- A parser for a body with this boundary.
-- @param boundary the boundary, as `boundary` returns it
-- @param on_part `function(part) -> sink | nil`, called at each part's
-- headers with `part.name`, `part.filename` (nil for plain fields; a
-- `filename*` is decoded), `part.content_type`, `part.disposition` and
-- `part.headers` (lower-case names). The sink, `function(data)`, is called
-- with each piece of the part's data (a non-empty string; often the fed
-- chunk itself, never a copy of it) and then with nil once the part ends;
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
    -- Bytes of the stream not decided yet, carried to the next chunk: a
    -- possible start of the delimiter (under its length), an unfinished
    -- boundary line or header block. The body is read as if preceded by
    -- CRLF, so the first boundary (which may start the body) is found by
    -- the same delimiter.
    tail = "\r\n",
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
  -- line by line (CRLF-separated), each `token [ws] : [ws] value [ws]`;
  -- plain finds and greedy patterns: the lazy ones cost a retry per byte
  local i, n = 1, #block
  while i <= n do
    local eol = find(block, "\r\n", i, true) or n + 1
    local line = sub(block, i, eol - 1)
    i = eol + 2
    local _, ne = find(line, "^[%w!#$%%&'*+%-.^_`|~]+")
    local _, ce = find(line, "^%s*:", (ne or 0) + 1)
    if not ne or not ce then bad("malformed part header line") end
    headers[lower(sub(line, 1, ne))] = match(line, "^%s*(.*%S)", ce + 1) or ""
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

-- The part's data ends at a delimiter: its sink hears the end.
local function end_part(self)
  local sink = self.sink
  self.sink = nil
  if sink then sink(nil) end
end

-- The boundary line after a delimiter, at s[i..]: "--" closes the body,
-- else optional padding and CRLF start a part. Returns the index after the
-- line, CLOSED, or nil when the line's end has not arrived yet.
local function boundary_line(s, i)
  local avail = #s - i + 1
  if avail < 2 then return nil end
  if find(s, "^%-%-", i) then return CLOSED end
  local a, e = find(s, "^[ \t]*\r\n", i)
  if a then
    if e - i + 1 > MAX_BOUNDARY_LINE then bad("malformed boundary line") end
    return e + 1
  end
  if avail < MAX_BOUNDARY_LINE and find(s, "^[ \t]*\r?$", i) then return nil end
  bad("malformed boundary line")
end

-- A part's header block at s[i..], ended by an empty line. Parses it (and
-- calls on_part); returns the index after it, or nil when its end has not
-- arrived yet.
local function header_block(self, s, i)
  if find(s, "^\r\n", i) then   -- no headers at all
    parse_headers(self, "")
    return i + 2
  end
  local a, e = find(s, "\r\n\r\n", i, true)
  if not a then
    -- the block so far and up to 3 bytes of its terminator
    if #s - i + 1 > self.max_header + 3 then bad("part headers too large") end
    return nil
  end
  if a - i > self.max_header then bad("part headers too large") end
  parse_headers(self, sub(s, i, a - 1))
  return e + 1
end

-- The index in s (at or after i) where a possible start of the delimiter
-- begins: the longest suffix of s that is a proper prefix of delim; #s + 1
-- when there is none. Only its last #delim - 1 bytes are looked at.
local function held_from(s, i, delim)
  local n, dl = #s, #delim
  local from = n - dl + 2
  if from < i then from = i end
  while true do
    local c = find(s, "\r", from, true)
    if not c then return n + 1 end
    if sub(s, c) == sub(delim, 1, n - c + 1) then return c end
    from = c + 1
  end
end

--- Feed the next chunk of the body; parts and their data go to `on_part`
-- and the sinks as they are complete. Chunks after the closing boundary
-- are ignored.
-- The chunk is scanned where it lies: only an undecided tail (under the
-- delimiter's length inside a part, a boundary line or header block in
-- progress) is kept to the next call, and part data goes to the sinks as
-- pieces of the chunk (the chunk itself when it holds nothing else).
-- @param chunk string, of any size
-- @return true, or nil, message, "EINVAL" on malformed input: a bad
-- boundary line, headers too big or malformed, too many parts
-- @raise a plain error when `on_part` returns neither a function nor nil;
-- errors raised by `on_part` or a sink propagate
function Parser:feed(chunk)
  return guarded(self, self._feed, chunk)
end

--- The scan of `feed`; raises Malformed on malformed input.
-- @local
function Parser:_feed(chunk)
  if self.state == DONE or chunk == "" then return end
  local delim, dl = self.delim, #self.delim
  local s, i = chunk, 1
  local tail = self.tail
  self.tail = ""
  if tail ~= "" then
    -- Settle the seam between the tail and the chunk, looking at no more of
    -- the chunk than that needs, then go on in the chunk itself.
    local state = self.state
    if #chunk < dl then
      s = tail .. chunk   -- short pieces: joining them costs next to nothing
    elseif state == PREAMBLE or state == BODY then
      -- a delimiter starting in the tail ends in the first dl - 1 bytes
      local seam = tail .. sub(chunk, 1, dl - 1)
      local a = find(seam, delim, 1, true)
      if a and a <= #tail then
        if state == BODY then
          if a > 1 and self.sink then self.sink(sub(tail, 1, a - 1)) end
          end_part(self)
        end
        self.state = AFTER_DELIM
        i = a + dl - #tail
      elseif state == BODY and self.sink then
        self.sink(tail)   -- no delimiter starts there: it is data
      end
    else
      -- an unfinished boundary line or header block: its end, if it comes,
      -- is within the bound the state allows
      local limit = state == AFTER_DELIM and MAX_BOUNDARY_LINE or self.max_header + 4
      local w = tail .. sub(chunk, 1, limit)
      local nxt
      if state == AFTER_DELIM then
        nxt = boundary_line(w, 1)
        if nxt then self.state = nxt == CLOSED and DONE or HEADERS end
      else
        nxt = header_block(self, w, 1)
        if nxt then self.state = BODY end
      end
      if not nxt then
        -- the whole chunk fitted in w (else the bound was already exceeded)
        self.tail = w
        return
      end
      if nxt == CLOSED then return end
      i = nxt - #tail   -- the end lies in the chunk: go on from there
    end
  end
  local n = #s
  while i <= n do
    local state = self.state
    if state == PREAMBLE or state == BODY then
      local a = find(s, delim, i, true)
      if a then
        if state == BODY then
          if a > i and self.sink then self.sink(sub(s, i, a - 1)) end
          end_part(self)
        end
        self.state = AFTER_DELIM
        i = a + dl
      else
        -- hand out all but what could be the start of a delimiter split
        -- across chunks
        local h = held_from(s, i, delim)
        if state == BODY and h > i and self.sink then
          self.sink((i == 1 and h > n) and s or sub(s, i, h - 1))
        end
        if h <= n then self.tail = sub(s, h) end
        return
      end
    elseif state == AFTER_DELIM then
      local nxt = boundary_line(s, i)
      if not nxt then self.tail = sub(s, i); return end
      if nxt == CLOSED then self.state = DONE; return end
      self.state = HEADERS
      i = nxt
    elseif state == HEADERS then
      local nxt = header_block(self, s, i)
      if not nxt then self.tail = sub(s, i); return end
      self.state = BODY
      i = nxt
    else  -- DONE
      return
    end
  end
end

--- Tell the parser the body has ended.
-- @return the number of parts, or nil, message, "EINVAL" when the body
-- ended before the closing boundary (or had no boundary at all) or was
-- malformed
function Parser:finish()
  if self.failed then return nil, self.failed, "EINVAL" end
  if self.state ~= DONE then
    if self.nparts == 0 and self.state == PREAMBLE then
      return nil, "multipart: no boundary found in the body", "EINVAL"
    end
    return nil, "multipart: body ended before the closing boundary", "EINVAL"
  end
  return self.nparts
end

M.Parser = Parser
return M
