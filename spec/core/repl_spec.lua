-- dtlua's REPL on a real terminal (a PTY): readline's line editing and
-- history, lines past 4 KiB, multi-line chunks as lua.c reads them.
local helper = require "support.helper"
local core = require "daytona.core"
local process = require "daytona.runtime.process"

local DTLUA = helper.build_path("bin/dtlua")
local LEFT, UP = "\27[D", "\27[A"

local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A REPL session: the terminal's output so far and how much was consumed.
local function session(home)
  local env = { "TERM=xterm", "PATH=" .. os.getenv("PATH"), "LANG=C" }
  if home then env[#env + 1] = "HOME=" .. home end
  local p = process.spawn({ DTLUA }, { pty = { cols = 120, rows = 40 }, env = env })
  return { p = p, out = "", pos = 1 }
end

-- Read until `pattern` (plain text) appears after what was consumed;
-- consumes through it.
local function expect(s, text, timeout)
  local deadline = core.now() + (timeout or 10)
  while true do
    local _, e = s.out:find(text, s.pos, true)
    if e then s.pos = e + 1; return end
    local left = deadline - core.now()
    if left <= 0 then
      error(("no %q in the terminal's output; the last of it: %q"):format(text, s.out:sub(-300)), 2)
    end
    local ok, chunk = pcall(s.p.read, s.p, "stdout", left)
    if ok and chunk == nil then
      error(("end of output before %q; the last of it: %q"):format(text, s.out:sub(-300)), 2)
    end
    if ok then s.out = s.out .. chunk end
  end
end

describe("dtlua's REPL on a terminal", function()
  teardown(helper.cleanup)

  it("edits with cursor keys, recalls history (also from the last session), takes long lines and multi-line chunks", function()
    helper.run(function()
      local home = helper.tmpdir()
      local s = session(home)
      expect(s, "Lua 5.4")
      expect(s, "> ")

      -- a line of 6000 characters: past the old 4 KiB buffer and the
      -- terminal's canonical-mode line limit (readline reads raw)
      s.p:write("x = '" .. ("a"):rep(6000) .. "' print('len', #x)\r")
      expect(s, "len\t6000\r\n", 20)
      expect(s, "> ")

      -- type a typo, go back 12 characters with the left-arrow key, insert
      -- the missing letter: without line editing the escapes would be a
      -- syntax error
      s.p:write('print(("helo"):upper())' .. LEFT:rep(12) .. "l\r")
      expect(s, "\rHELLO\r\n")
      expect(s, "> ")

      -- the up-arrow key recalls it
      s.p:write(UP .. "\r")
      expect(s, "\rHELLO\r\n")
      expect(s, "> ")

      -- an incomplete chunk continues on a ">>" line, as in lua5.4
      s.p:write("function twice(a)\r")
      expect(s, ">> ")
      s.p:write("return a * 2\r")
      expect(s, ">> ")
      s.p:write("end\r")
      expect(s, "> ")
      s.p:write("print('twice', twice(21))\r")
      expect(s, "twice\t42\r\n")
      expect(s, "> ")

      s.p:write("print('last' .. 'line')\r")
      expect(s, "\rlastline\r\n")
      expect(s, "> ")

      -- ^D at an empty line ends the session
      s.p:write("\4")
      assert.are.equal(0, s.p:wait(10))
      s.p:close()

      local hist = assert(slurp(home .. "/.dtlua_history"), "no ~/.dtlua_history")
      assert.is_truthy(hist:find('print(("hello"):upper())', 1, true), hist)
      assert.is_truthy(hist:find("print('twice', twice(21))", 1, true), hist)

      -- a new session recalls the last one's lines from the file
      local s2 = session(home)
      expect(s2, "> ")
      s2.p:write(UP .. "\r")
      expect(s2, "\rlastline\r\n")
      expect(s2, "> ")
      s2.p:write("\4")
      assert.are.equal(0, s2.p:wait(10))
      s2.p:close()
    end)
  end)

  it("reads lines of any length when stdin is not a terminal", function()
    local dir = helper.tmpdir()
    local f = assert(io.open(dir .. "/in", "w"))
    f:write("x = '" .. ("b"):rep(10000) .. "' print('len', #x)\n")
    f:close()
    local p = assert(io.popen(DTLUA .. " -i <" .. dir .. "/in 2>&1"))
    local out = p:read("a")
    p:close()
    assert.is_truthy(out:find("len\t10000\n", 1, true), out:sub(1, 300))
  end)

  it("keeps no history without HOME, and still edits", function()
    helper.run(function()
      local s = session(nil)
      expect(s, "> ")
      s.p:write("print(1 + 2)" .. LEFT .. LEFT .. "3\r")   -- print(1 + 32)
      expect(s, "\r33\r\n")
      expect(s, "> ")
      s.p:write("\4")
      assert.are.equal(0, s.p:wait(10))
      s.p:close()
    end)
  end)
end)
