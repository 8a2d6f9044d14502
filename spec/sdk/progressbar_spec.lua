-- The transfer progress bar dtlua draws on a terminal.
local progressbar = require "daytona.progressbar"
local fixture = require "sdk.fixture"

describe("progress bar", function()
  local saved_enabled, saved_delay, saved_stderr
  before_each(function()
    saved_enabled, saved_delay, saved_stderr = progressbar.enabled, progressbar.DELAY, io.stderr
  end)
  after_each(function()
    progressbar.enabled, progressbar.DELAY, io.stderr = saved_enabled, saved_delay, saved_stderr
  end)

  local function capture()
    local out = {}
    io.stderr = { write = function(self, ...) for _, s in ipairs({ ... }) do out[#out + 1] = s end return self end }
    return out
  end

  it("renders done, total, percentage and rate", function()
    local line = progressbar.render("upload", 512 * 1024, 1024 * 1024, 1)
    assert.is_truthy(line:find("upload [###############---------------]  50%", 1, true))
    assert.is_truthy(line:find("512.0 KiB/1.0 MiB 512.0 KiB/s", 1, true))
    assert.are.equal("download 10 B 5 B/s", progressbar.render("download", 10, nil, 2))
  end)

  it("stays quiet when disabled and passes progress through", function()
    progressbar.enabled = false
    local seen
    local f = progressbar.wrap("x", function(d, t) seen = { d, t } end)
    local out = capture()
    f(5, 10)
    assert.are.same({ 5, 10 }, seen)
    assert.are.same({}, out)
    assert.is_nil(progressbar.wrap("x", nil))
  end)

  it("draws after the delay and ends the line when the transfer completes", function()
    progressbar.enabled, progressbar.DELAY = true, 0
    local out = capture()
    local f = progressbar.wrap("upload", nil)
    f(100, 100)
    local text = table.concat(out)
    assert.is_truthy(text:find("\rupload [", 1, true))
    assert.is_truthy(text:find("100%", 1, true))
    assert.are.equal("\n", out[#out])
  end)

  it("is drawn by file transfers", function()
    local srv = fixture.server()
    local ok, err = pcall(function()
      local sb <close> = fixture.client(srv):create{}
      progressbar.enabled, progressbar.DELAY = true, 0
      local out = capture()
      sb.fs:upload_file({ data = ("x"):rep(100000) }, "bar.bin")
      assert.are.equal(100000, #sb.fs:download_file("bar.bin"))
      io.stderr = saved_stderr
      local text = table.concat(out)
      assert.is_truthy(text:find("upload", 1, true))
      assert.is_truthy(text:find("download", 1, true))
    end)
    io.stderr = saved_stderr
    srv.stop()
    assert(ok, err)
  end)
end)
