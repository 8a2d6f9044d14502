-- Streamed responses that send part of an open file from C
-- (core.server's req:write(file, length), Response:write(file, length)).
local helper = require "support.helper"
local server = require "daytona.runtime.server"
local http = require "daytona.runtime.http"
local errors = require "daytona.errors"

describe("Response:write(file, length)", function()
  local dir, srv
  local outcome = {}   -- what the handlers saw, by name

  local function write(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
  end

  local function block(n, seed)
    local t = {}
    for i = 0, n - 1 do t[#t + 1] = string.char((i * 7 + seed) % 256) end
    return table.concat(t)
  end

  setup(function()
    dir = helper.tmpdir()
    write(dir .. "/five.bin", block(65536, 1):rep(80) .. "tail")   -- 5 MiB + 4 bytes
    write(dir .. "/short.bin", block(4096, 2))
    helper.run(function()
      srv = server.listen{ log = function() end, handler = function(req, res)
        if req.path == "/framed" then
          -- a head, a file segment from an offset, a tail: in that order
          local f = assert(io.open(dir .. "/five.bin", "rb"))
          f:seek("set", 10)
          res:start(200, { ["Content-Length"] = tostring(4 + (5 * 1024 * 1024 - 6) + 4) })
          res:write("head")
          res:write(f, 5 * 1024 * 1024 - 6)
          outcome.position = f:seek("cur")
          f:close()   -- at once: the server keeps its own descriptor
          res:write("tail")
          res:finish()
        elseif req.path == "/short" then
          -- the file is shorter than what is queued: the client must see a cut
          local f = assert(io.open(dir .. "/short.bin", "rb"))
          res:start(200)
          res:write(f, 1024 * 1024)
          f:close()
          local ok, err = pcall(function()
            res:write("after")
            res:finish()
          end)
          outcome.short = ok and "finished" or err
        else
          res:send(404, {}, "")
        end
      end }
    end)
  end)

  teardown(function()
    if srv then srv:close() end
    helper.cleanup()
  end)

  it("sends the segment in order with strings, and moves the file's position", function()
    helper.run(function()
      local r = http.request{ url = srv.url .. "/framed", timeout = 20 }
      assert.are.equal(200, r.status)
      local want = "head" .. (block(65536, 1):rep(80) .. "tail"):sub(11, 10 + 5 * 1024 * 1024 - 6) .. "tail"
      assert.are.equal(#want, #r.body)
      assert.is_true(want == r.body, "body differs")
      assert.are.equal(10 + 5 * 1024 * 1024 - 6, outcome.position)
    end)
  end)

  it("cuts the response when the file reads short, and says so to the handler", function()
    helper.run(function()
      local r, msg, code = http.request{ url = srv.url .. "/short", timeout = 20 }
      assert.is_nil(r, "a short file was taken for a complete body")
      assert.is_true(errors.is(errors.from_failure(msg, code), errors.DaytonaConnectionError), msg)
      helper.eventually(function() return outcome.short end)
      assert.is_true(errors.is(outcome.short, errors.DaytonaError), tostring(outcome.short))
      assert.is_truthy(tostring(outcome.short.message):find("reading the response file", 1, true),
        tostring(outcome.short))
    end)
  end)

  it("refuses misuse", function()
    helper.run(function()
      local f = assert(io.open(dir .. "/short.bin", "rb"))
      f:close()
      local seen
      local s2 = server.listen{ log = function() end, handler = function(_, res)
        res:start(200)
        local g = assert(io.open(dir .. "/short.bin", "rb"))
        seen = {
          closed = select(2, pcall(res.write, res, f, 10)),
          negative = select(2, pcall(res.write, res, g, -1)),
        }
        g:close()
        res:finish()
      end }
      local r = http.request{ url = s2.url .. "/", timeout = 10 }
      s2:close()
      assert.are.equal(200, r.status)
      assert.is_truthy(tostring(seen.closed):find("closed file", 1, true), tostring(seen.closed))
      assert.is_truthy(tostring(seen.negative):find("length must be >= 0", 1, true), tostring(seen.negative))
    end)
  end)
end)
