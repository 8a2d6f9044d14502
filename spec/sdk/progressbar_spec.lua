-- The transfer progress bars dtlua draws on a terminal: when a bar appears
-- (from the transfer's rate), one line per concurrent transfer, the summary
-- line, and silence when stderr is not a terminal.
local progressbar = require "daytona.progressbar"
local fixture = require "sdk.fixture"
local helper = require "support.helper"

-- A fake terminal: interprets what the bars write (\r, \n, ESC[nA up,
-- ESC[K erase to end of line, ESC[J erase below) into screen lines.
local function terminal()
  local t = { lines = { "" }, row = 1, col = 1, raw = {} }
  function t:write(...)
    for _, s in ipairs({ ... }) do
      self.raw[#self.raw + 1] = s
      local i = 1
      while i <= #s do
        local n, cmd, j = s:match("^\027%[(%d*)([AKJ])()", i)
        if cmd then
          n = tonumber(n) or 1
          if cmd == "A" then self.row = math.max(1, self.row - n)
          elseif cmd == "K" then self.lines[self.row] = self.lines[self.row]:sub(1, self.col - 1)
          else
            self.lines[self.row] = self.lines[self.row]:sub(1, self.col - 1)
            for r = #self.lines, self.row + 1, -1 do self.lines[r] = nil end
          end
          i = j
        else
          local c = s:sub(i, i)
          if c == "\r" then self.col = 1
          elseif c == "\n" then
            self.row, self.col = self.row + 1, 1
            self.lines[self.row] = self.lines[self.row] or ""
          else
            local l = self.lines[self.row]
            l = l .. (" "):rep(self.col - 1 - #l)
            self.lines[self.row] = l:sub(1, self.col - 1) .. c .. l:sub(self.col + 1)
            self.col = self.col + 1
          end
          i = i + 1
        end
      end
    end
    return self
  end
  -- the screen without the empty line under the cursor
  function t:screen()
    local out = {}
    for r = 1, #self.lines do
      if not (r == #self.lines and self.lines[r] == "") then out[#out + 1] = self.lines[r] end
    end
    return out
  end
  return t
end

describe("progress bars", function()
  local saved, now, term
  before_each(function()
    saved = { progressbar.enabled, progressbar.clock, io.stderr }
    now = 0
    progressbar.enabled, progressbar.clock = true, function() return now end
    progressbar._reset()
    term = terminal()
    io.stderr = term
  end)
  after_each(function()
    progressbar.enabled, progressbar.clock, io.stderr = saved[1], saved[2], saved[3]
    progressbar._reset()
  end)

  it("renders done, total, percentage and rate", function()
    local line = progressbar.render("upload", 512 * 1024, 1024 * 1024, 1)
    assert.is_truthy(line:find("upload [###############---------------]  50%", 1, true))
    assert.is_truthy(line:find("512.0 KiB/1.0 MiB 512.0 KiB/s", 1, true))
    assert.are.equal("download 10 B 5 B/s", progressbar.render("download", 10, nil, 2))
  end)

  it("shows a bar for a transfer expected to take over a second, judged from its rate", function()
    local mib = 1024 * 1024
    -- 300 MiB at 230 MiB/s: 1.3 s expected, so a bar appears after the probe
    local b = progressbar.start("upload", 1)
    now = 0.1; b:update(23 * mib, 300 * mib, "big.tar", 1)
    assert.are.same({}, term:screen())                -- too early to judge
    now = 0.2; b:update(46 * mib, 300 * mib, "big.tar", 1)
    assert.are.equal(1, #term:screen())
    assert.matches("^upload big.tar %[#+%-+%]  15%% 46.0 MiB/300.0 MiB 230.0 MiB/s$", term:screen()[1])
    now = 1.3; b:update(300 * mib, 300 * mib, "big.tar", 1)
    b:finish(true)
    assert.are.same({ "uploaded big.tar, 300.0 MiB in 1.3 s, 230.8 MiB/s" }, term:screen())
  end)

  it("stays quiet for a transfer expected to be quick, and for one over before the probe", function()
    local a = progressbar.start("download", 1)
    now = 0.25; a:update(900, 1000, "a", 1)           -- 0.28 s expected
    now = 0.3; a:update(1000, 1000, "a", 1)
    a:finish(true)
    local b = progressbar.start("upload", 1)
    now = 0.35; b:update(10, 10, "b", 1)
    b:finish(true)
    assert.are.same({}, term.raw)
  end)

  it("draws one line per concurrent transfer, with its file name, and a summary for each", function()
    local up = progressbar.start("upload", 3)
    local down = progressbar.start("download", 1)
    now = 0.5
    up:update(100, 1000, "a.txt", 1)
    now = 0.6
    down:update(50, 1000, "log.txt", 1)
    local s = term:screen()
    assert.are.equal(2, #s)
    assert.matches("^upload a.txt %(1 of 3%) %[", s[1])
    assert.matches("^download log.txt %[", s[2])
    now = 0.8
    up:update(500, 1000, "c.txt", 3)
    s = term:screen()
    assert.are.equal(2, #s)                            -- redrawn in place, not appended
    assert.matches("^upload c.txt %(3 of 3%) %[.*  50%%", s[1])
    now = 2
    up:update(1000, 1000, "c.txt", 3)
    up:finish(true)
    s = term:screen()
    assert.are.equal(2, #s)
    assert.matches("^uploaded 3 files, 1000 B in 2.0 s, 500 B/s$", s[1])
    assert.matches("^download log.txt %[", s[2])
    now = 3
    down:update(400, 1000, "log.txt", 1)
    down:finish(false)
    s = term:screen()
    assert.are.same({ s[1], "download of log.txt failed after 400 B" }, s)
  end)

  it("shows a transfer of unknown size once it has run over a second", function()
    local b = progressbar.start("download", 1)
    now = 0.5; b:update(10, nil, "stream", 1)
    assert.are.same({}, term.raw)
    now = 1.5; b:update(30, nil, "stream", 1)
    assert.are.same({ "download stream 30 B 20 B/s" }, term:screen())
  end)

  it("is off when disabled: start returns nothing", function()
    progressbar.enabled = false
    assert.is_nil(progressbar.start("upload", 1))
  end)

  it("is off under dtlua when stderr is not a terminal, on when it is one", function()
    local dtlua = helper.build_path("bin/dtlua")
    local code = [[io.stdout:write(tostring(require("daytona.progressbar").enabled))]]
    local p = io.popen(("%q -e %q 2>/dev/null"):format(dtlua, code))
    assert.are.equal("false", p:read("a"))
    p:close()
    -- a real terminal: script(1) runs the command on a pty
    if os.execute("command -v script >/dev/null 2>&1") then
      p = io.popen(("script -qec %q /dev/null"):format(("%q -e %q"):format(dtlua, code)))
      assert.matches("true", p:read("a"))
      p:close()
    end
  end)

  it("is drawn by file transfers, with the file's name", function()
    local srv = fixture.server()
    local ok, err = pcall(function()
      local sb <close> = fixture.client(srv):create{}
      -- a clock that makes every transfer look slow
      local t = 0
      progressbar.clock = function() t = t + 2; return t end
      sb.fs:upload_file({ data = ("x"):rep(100000) }, "dir/bar.bin")
      assert.are.equal(100000, #sb.fs:download_file("dir/bar.bin"))
      io.stderr = saved[3]
      local s = term:screen()
      assert.matches("^uploaded bar.bin, 97.7 KiB in", s[1])
      assert.matches("^downloaded bar.bin, 97.7 KiB in", s[2])
    end)
    io.stderr = saved[3]
    srv.stop()
    assert(ok, err)
  end)
end)
