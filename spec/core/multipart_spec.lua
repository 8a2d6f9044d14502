-- The streaming multipart/form-data parser (daytona.runtime.multipart).
local multipart = require "daytona.runtime.multipart"

-- Parse body fed in pieces of `step` bytes; returns the parts with their data.
local function parse(body, boundary, step, opts)
  local parts = {}
  local p = multipart.parser(boundary, function(part)
    local data = {}
    part.chunks = 0
    parts[#parts + 1] = part
    return function(d)
      if d then
        data[#data + 1] = d
        part.chunks = part.chunks + 1
      else
        part.data = table.concat(data)
        part.ended = true
      end
    end
  end, opts)
  step = step or #body
  -- a failure (nil, message, code) is raised here, for err_of
  for i = 1, #body, step do
    local ok, msg, code = p:feed(body:sub(i, i + step - 1))
    if not ok then error({ message = msg, code = code }, 0) end
  end
  local n, msg, code = p:finish()
  if not n then error({ message = msg, code = code }, 0) end
  assert.are.equal(#parts, n)
  return parts
end

local function err_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.are.equal("EINVAL", err.code, tostring(err.message or err))
  assert.is_string(err.message)
  return err.message
end

local BODY = table.concat({
  "preamble to ignore\r\n",
  "--XyZ\r\n",
  'Content-Disposition: form-data; name="field"\r\n',
  "\r\n",
  "value\r\n",
  "--XyZ \t\r\n",   -- transport padding after the boundary
  'Content-Disposition: form-data; name="file"; filename="a \\"b\\".txt"\r\n',
  "Content-Type: application/octet-stream\r\n",
  "\r\n",
  "line1\r\n--Xy-not-a-boundary\r\n--Xy\r\n\r\nx--XyZ",
  "\r\n--XyZ\r\n",
  "\r\n",               -- a part without headers
  "\r\n",
  "--XyZ\r\n",
  "Content-Disposition: form-data; name=\"u\"; filename*=UTF-8''%C3%A9t%C3%A9.txt\r\n",
  "\r\n",
  "\r\n--XyZ--\r\n",
  "epilogue to ignore",
})

describe("multipart", function()
  it("extracts and validates the boundary", function()
    assert.are.equal("XyZ", multipart.boundary("multipart/form-data; boundary=XyZ"))
    assert.are.equal("a b:c", multipart.boundary('Multipart/Form-Data; charset=x; BOUNDARY="a b:c"'))
    assert.are.equal("----WebKitFormBoundary7MA4YWxk",
      multipart.boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxk"))
    assert.is_nil(multipart.boundary("text/plain; boundary=x"))
    assert.is_nil(multipart.boundary("multipart/form-data"))
    assert.is_nil(multipart.boundary("multipart/form-data; boundary=" .. string.rep("a", 71)))
    assert.is_nil(multipart.boundary('multipart/form-data; boundary="bad<char"'))
    assert.is_nil(multipart.boundary('multipart/form-data; boundary="ends in space "'))
    assert.is_nil(multipart.boundary(nil))
  end)

  it("parses parts whatever the chunking", function()
    for step = 1, #BODY do
      local parts = parse(BODY, "XyZ", step)
      assert.are.equal(4, #parts)
      assert.are.equal("field", parts[1].name)
      assert.is_nil(parts[1].filename)
      assert.are.equal("value", parts[1].data)
      assert.are.equal("file", parts[2].name)
      assert.are.equal('a "b".txt', parts[2].filename)
      assert.are.equal("application/octet-stream", parts[2].content_type)
      assert.are.equal("line1\r\n--Xy-not-a-boundary\r\n--Xy\r\n\r\nx--XyZ", parts[2].data)
      assert.are.same({}, parts[3].headers)
      assert.are.equal("", parts[3].data)   -- the CRLF before a delimiter is part of it
      assert.are.equal("été.txt", parts[4].filename)
      assert.are.equal("", parts[4].data)
      for _, p in ipairs(parts) do assert.is_true(p.ended) end
    end
  end)

  -- A body whose data is full of near-delimiters: every seam position of a
  -- chunking lands somewhere inside a delimiter, a boundary line, a header
  -- block or data that looks like one.
  local B2 = "----------------------------5f0a7c3e9b1d2468ace"
  local function near_body()
    local near = table.concat({
      "\r", "\r\n", "\r\n-", "\r\n--", "\r\n--" .. B2:sub(1, 20), "\r\n--" .. B2:sub(1, -2),
      "--" .. B2, "\n--" .. B2, "\r\r\n--" .. B2:sub(2),
    }, "x")
    return table.concat({
      "--", B2, "\r\n",
      'Content-Disposition: form-data; name="files[0].path"\r\n\r\n',
      "/home/daytona/a.bin\r\n",
      "--", B2, "\r\n",
      'Content-Disposition: form-data; name="files[0].file"; filename="a.bin"\r\n',
      "Content-Type: application/octet-stream\r\n\r\n",
      near, "\r",
      "\r\n--", B2, "  \r\n",
      'Content-Disposition: form-data; name="files[1].file"; filename="b"\r\n\r\n',
      "\r\n--", B2, "\r\n",
      'Content-Disposition: form-data; name="files[2].file"; filename="c"\r\n\r\n',
      near, near,
      "\r\n--", B2, "--\r\n",
    }), near
  end

  local function same_parts(want, got, what)
    assert.are.equal(#want, #got, what)
    for k = 1, #want do
      assert.are.equal(want[k].name, got[k].name, what)
      assert.are.equal(want[k].filename, got[k].filename, what)
      assert.are.equal(want[k].data, got[k].data, what)
      assert.is_true(got[k].ended, what)
    end
  end

  it("finds the delimiter across every chunk seam (chunks of 1 to 80 bytes)", function()
    local body, near = near_body()
    local whole = parse(body, B2)
    assert.are.equal(4, #whole)
    assert.are.equal("/home/daytona/a.bin", whole[1].data)
    assert.are.equal(near .. "\r", whole[2].data)
    assert.are.equal("", whole[3].data)
    assert.are.equal(near .. near, whole[4].data)
    for step = 1, 80 do same_parts(whole, parse(body, B2, step), "chunks of " .. step) end
  end)

  it("gives the same parts for every split of the body in two", function()
    local body = near_body()
    local whole = parse(body, B2)
    for k = 0, #body do
      local parts = {}
      local p = multipart.parser(B2, function(part)
        local data = {}
        parts[#parts + 1] = part
        return function(d)
          if d then data[#data + 1] = d else part.data = table.concat(data); part.ended = true end
        end
      end)
      p:feed(body:sub(1, k))
      p:feed(body:sub(k + 1))
      assert.are.equal(#whole, p:finish())
      same_parts(whole, parts, "split at " .. k)
    end
  end)

  it("ends a part exactly at a chunk's end and hands whole chunks out as they are", function()
    local got = {}
    local ended = 0
    local p = multipart.parser("b", function()
      return function(d) if d then got[#got + 1] = d else ended = ended + 1 end end
    end)
    local data = string.rep("0123456789", 100)
    p:feed("--b\r\n\r\n")             -- the header block ends with the chunk
    p:feed(data)                        -- only data: passed on as is
    assert.are.same({ data }, got)
    p:feed(data .. "\r")                -- ends in what may start a delimiter
    assert.are.same({ data, data }, got)
    assert.are.equal("\r", p.tail)
    p:feed("\n--b")                     -- the delimiter ends exactly at this chunk's end
    assert.are.equal(1, ended)
    p:feed("\r\n")
    p:feed("\r\nlast\r\n--b")
    p:feed("--")
    assert.are.equal(2, p:finish())
    assert.are.same({ data, data, "last" }, got)
    assert.are.equal(2, ended)
  end)

  it("refuses a boundary line padded past 256 bytes however it is chunked", function()
    local function body(pad)
      return "--b" .. string.rep(" ", pad) .. "\r\n\r\nx\r\n--b--"
    end
    for _, step in ipairs({ 1, 7, 300, 1000 }) do
      assert.are.equal(1, #parse(body(254), "b", step))
      assert.truthy(err_of(function() parse(body(255), "b", step) end):find("boundary line", 1, true))
    end
  end)

  it("bounds a part's header block however it is chunked", function()
    local function body(n)
      return "--b\r\nX-Big: " .. string.rep("a", n - 7) .. "\r\n\r\nx\r\n--b--"
    end
    for _, step in ipairs({ 1, 13, 100, 5000 }) do
      assert.are.equal(1, #parse(body(1000), "b", step, { max_header_bytes = 1000 }))
      assert.truthy(err_of(function()
        parse(body(1001), "b", step, { max_header_bytes = 1000 })
      end):find("too large", 1, true))
    end
  end)

  it("accepts a body that starts with the boundary and ignores dropped parts", function()
    local body = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nabc\r\n--b--"
    local seen = 0
    local p = multipart.parser("b", function(part) seen = seen + 1; assert.are.equal("x", part.name) end)
    p:feed(body)
    assert.are.equal(1, p:finish())
    assert.are.equal(1, seen)
  end)

  it("streams a large part without holding it", function()
    local size = 8 * 1024 * 1024 + 11
    local block = string.rep("0123456789abcdef\r\n-", 3277)   -- CR LF dashes all along
    local total, max_buf = 0, 0
    local p = multipart.parser("BOUNDARY", function()
      return function(d) if d then total = total + #d end end
    end)
    p:feed("--BOUNDARY\r\nContent-Disposition: form-data; name=\"big\"\r\n\r\n")
    local left = size
    while left > 0 do
      local k = math.min(left, #block)
      p:feed(k == #block and block or block:sub(1, k))
      left = left - k
      if #p.tail > max_buf then max_buf = #p.tail end
    end
    p:feed("\r\n--BOUNDARY--\r\n")
    p:finish()
    assert.are.equal(size, total)
    assert.is_true(max_buf < 64, "parser kept " .. max_buf .. " bytes")
  end)

  it("rejects malformed bodies", function()
    local function parse_all(body, opts) return parse(body, "b", nil, opts) end
    assert.truthy(err_of(function() parse_all("no boundary here") end):find("no boundary", 1, true))
    assert.truthy(err_of(function()
      parse_all("--b\r\n\r\ndata without end")
    end):find("closing boundary", 1, true))
    assert.truthy(err_of(function() parse_all("--bX\r\n\r\nx\r\n--b--") end):find("boundary line", 1, true))
    assert.truthy(err_of(function()
      parse_all("--b\r\nNo colon here\r\n\r\nx\r\n--b--")
    end):find("header", 1, true))
    assert.truthy(err_of(function()
      parse_all("--b\r\nX-Big: " .. string.rep("a", 20000) .. "\r\n\r\nx\r\n--b--")
    end):find("too large", 1, true))
    assert.truthy(err_of(function()
      parse_all(string.rep("--b\r\n\r\nx\r\n", 5) .. "--b--", { max_parts = 3 })
    end):find("too many", 1, true))
    assert.has_error(function() multipart.parser("", function() end) end)
    assert.has_error(function() multipart.parser("b", nil) end)
  end)
end)
