-- The example scripts, run as a user runs them: `dtlua examples/<name>.lua`
-- in a subprocess, with DAYTONA_API_URL / DAYTONA_API_KEY pointing at a
-- private dtlocal (spec/support/dtlocal.lua), so the user's own server and
-- state are never touched. Each run must exit 0, print what the example
-- promises, and leave no sandbox behind. Also: hello.lua with no
-- credentials at all (the SDK starts dtlocal itself, in a temp
-- XDG_STATE_HOME), and the frame-loop host with its script.
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local process = require "daytona.runtime.process"
local daytona = require "daytona"

local ROOT = os.getenv("PWD")
local DTLUA = helper.build_path("bin/dtlua")
local DTLOCAL = helper.build_path("bin/dtlocal")
local HOST = helper.build_path("bin/dtlua-host")

-- every variable that could point a run at another server
local UNSET = { "DAYTONA_API_KEY", "DAYTONA_JWT_TOKEN", "DAYTONA_ORGANIZATION_ID", "DAYTONA_API_URL",
  "DAYTONA_SERVER_URL", "DAYTONA_TARGET" }

-- Run argv with the DAYTONA_* variables unset, then `vars` set; returns
-- the result of process.run plus the elapsed seconds.
local function run(argv, vars, opts)
  local full = { "env" }
  for _, k in ipairs(UNSET) do full[#full + 1] = "-u"; full[#full + 1] = k end
  for k, v in pairs(vars) do full[#full + 1] = k .. "=" .. v end
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local t0 = require("daytona.core").now()
  local r = process.run(full, { cwd = opts.cwd, timeout = opts.timeout or 120, stderr = "pipe" })
  return r, require("daytona.core").now() - t0
end

local function describe_run(r)
  return ("exit %s\n--- stdout\n%s\n--- stderr\n%s"):format(tostring(r.exit_code), r.stdout, r.stderr)
end

describe("examples", function()
  local srv, client

  setup(function()
    srv = dtlocal.start()
    client = daytona.new{ api_key = srv.token, api_url = srv.api_url, local_server = false }
  end)

  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  -- Run examples/<name>.lua against the private server, from a temp
  -- directory (so no .env of the checkout applies); asserts exit 0 and
  -- that no sandbox labelled example=<label> is left. Returns the output,
  -- the seconds it took, process.run's result and the directory it ran in.
  local function example(name, label, timeout)
    local dir = helper.tmpdir()
    local r, secs = run({ DTLUA, ROOT .. "/examples/" .. name .. ".lua" },
      { DAYTONA_API_URL = srv.api_url, DAYTONA_API_KEY = srv.token, XDG_STATE_HOME = dir .. "/state" },
      { cwd = dir, timeout = timeout })
    assert.are.equal(0, r.exit_code, describe_run(r))
    local left = client:list{ labels = { example = label } }:all()
    assert.are.equal(0, #left, "sandboxes left by " .. name .. ": " .. #left)
    return r.stdout, secs, r, dir
  end

  it("hello.lua: exec, upload and download both ways, code_run", function()
    local out = example("hello", "hello")
    assert.matches("created sandbox [%x-]+ %(started%)", out)
    assert.matches("exec: exit 0: hello from %S+ as daytona", out)
    assert.matches("uploaded hello/main.py from a string", out)
    assert.matches("exec in hello/: exit 0: 42 | 2 notes.txt", out, 1, true)
    assert.matches("downloaded hello/main.py: 13 bytes: print(6 * 7)", out, 1, true)
    assert.matches("downloaded hello/notes.txt to %S+: 18 bytes, same as sent: true", out)
    assert.matches("code_run: exit 0:\npython 3%.[%d.]+ on linux\n285\n", out)
    assert.matches("deleting sandbox", out)
  end)

  it("parallel_agents.lua: four agents at once, the winner's workspace moves on", function()
    local out = example("parallel_agents", "parallel-agents")
    assert.matches("agent%-a: sandbox [%x-]+: 6/6 tests passed", out)
    assert.matches("agent%-b: sandbox [%x-]+: 6/6 tests passed", out)
    assert.matches("agent%-c: sandbox [%x-]+: 5/6 tests passed", out)
    assert.matches("agent%-d: sandbox [%x-]+: 5/6 tests passed", out)
    assert.matches("4 agents done", out)
    assert.matches("winner: agent%-[ab] %(6/6%)", out)
    assert.matches("downloaded the winner's workspace: %d+ bytes of tar.gz", out)
    assert.matches("unpacked into sandbox [%x-]+: solution.py test_fib.py", out)
    assert.matches("PASS fib%(90%) = 2880067194370816120", out)
    assert.matches("the winner's workspace passes 6/6 in the fresh sandbox", out)
  end)

  it("background_server.lua: a server in a session, health check, preview links, logs", function()
    local out = example("background_server", "background-server")
    assert.matches("started the server on port (%d+): session \"web\", command %S+", out)
    assert.matches("server ready after %d+ check%(s%): HTTP 200", out)
    assert.matches("preview link: http://127%.0%.0%.1:%d+/preview/[%x-]+/%d+", out)
    assert.matches("GET via preview link: HTTP 200: <h1>Hello from a sandbox</h1>", out, 1, true)
    assert.matches("GET via signed URL: HTTP 200", out)
    assert.matches("expired the signed URL; GET via it now: HTTP 4%d%d", out)
    assert.matches("server log:\n  127%.0%.0%.1 .-\"GET /index%.html HTTP/1%.1\" 200", out)
    assert.matches("deleted the session", out)
  end)

  it("git_workflow.lua: clone, branch, commit, push, pull between two clones", function()
    local out = example("git_workflow", "git-workflow")
    assert.matches("made the bare repository /%S+/origin%.git", out)
    assert.matches("alice status: greeting.py: Untracked", out)
    assert.matches("alice committed %x+ on feature/greeting", out)
    assert.matches("alice pushed feature/greeting", out)
    assert.matches("bob runs alice's greeting.py: hello\n", out)
    assert.matches("bob committed %x+ and pushed", out)
    assert.matches("alice pulled; greeting.py now prints: hello / and goodbye", out)
    assert.matches("alice: on feature/greeting, ahead 0, behind 0, published true, 0 changed file%(s%); "
      .. "branches: feature/greeting, main", out)
    assert.matches("bob: on feature/greeting, ahead 0, behind 0, published true", out)
    assert.matches("history on feature/greeting:\n  %x+ Bob +Say goodbye too\n  %x+ Alice +Add greeting.py\n"
      .. "  %x+ Seed +initial commit", out)
  end)

  it("pty_session.lua: input, output, resize, exit code; pull and callback modes", function()
    local out, secs = example("pty_session", "pty-session")
    assert.matches("created PTY session demo", out)
    assert.matches("the shell sees 24 rows, 80 columns", out)
    assert.matches("resized to 40 x 120", out)
    assert.matches("the shell now sees 40 rows, 120 columns", out)
    assert.matches("the shell answers: hello, Lua!", out)
    assert.matches("the shell exited with code 7", out)
    assert.matches("second terminal: lines 1 2 3, exit code 0", out)
    -- regression: dtlua used to sit ~30 s in a blocking loop step after the
    -- main task ended, until libwebsockets' idle timer fired
    assert.is_true(secs < 20, ("took %.1f s"):format(secs))
  end)

  it("code_interpreter.lua: streamed output, contexts keep state, errors, envs, timeout", function()
    local out = example("code_interpreter", "code-interpreter")
    assert.matches("  live: step 1 of 3\n  live: step 2 of 3\n  live: step 3 of 3\n", out, 1, true)
    assert.matches("the run printed 36 bytes in %d+ piece%(s%)", out)
    assert.matches("created context [%x-]+ %(python%)", out)
    assert.matches("the second run sees the first one's variables: area 12.5664", out, 1, true)
    assert.matches("in the default context: NameError: name 'radius' is not defined", out, 1, true)
    assert.matches("  stderr: about to fail", out, 1, true)
    assert.matches("on_error saw KeyError; the result says KeyError: 'missing'", out, 1, true)
    assert.matches("envs: hi there", out, 1, true)
    assert.matches("a 30 s run with a 1 s timeout: DaytonaTimeoutError", out, 1, true)
    assert.matches("contexts: 2\nafter deleting both: 0\n", out, 1, true)
  end)

  it("lsp.lua: symbols, completions and a project-wide search from pylsp in the sandbox", function()
    local out = example("lsp", "lsp")
    assert.matches("created sandbox [%x-]+", out)
    assert.matches("  class    Account      line 0", out, 1, true)
    assert.matches("  method   deposit      line 5", out, 1, true)
    assert.matches("  function open_account line 9", out, 1, true)
    assert.matches("  field    balance      line 3", out, 1, true)
    assert.matches("completions after 'acct.': [^\n]*balance", out)
    assert.matches("completions after 'acct.': [^\n]*deposit", out)
    assert.matches("account_report in report.py", out, 1, true)
    assert.matches("open_account in accounts.py", out, 1, true)
    assert.matches("past the end: false: get completions: position 100:0 is past the end of", out, 1, true)
    assert.matches("deleting sandbox", out)
  end)

  it("charts.lua: matplotlib figures come back as charts, their PNGs saved", function()
    local out, _, _, dir = example("charts", "charts")
    assert.matches("code_run: exit 0, result: total units: 505\n2 charts\n", out, 1, true)
    assert.matches('chart 1: bar "Sales per month", 4 element(s)\n  units by month:\n'
      .. "    Jan: 120\n    Feb: 135\n    Mar: 90\n    Apr: 160\n", out, 1, true)
    assert.matches('chart 2: composite_chart "Two views", 2 element(s)\n  line "Growth", 1 element(s)\n'
      .. '  pie "Share", 3 element(s)\n', out, 1, true)
    -- the files it saved are PNGs of the size it printed
    for i = 1, 2 do
      local size = tonumber(out:match(("saved chart%%-%d%%.png: (%%d+) bytes of PNG"):format(i)))
      assert.is_truthy(size, out)
      local data = helper.read_file(("%s/chart-%d.png"):format(dir, i))
      assert.are.equal(size, data and #data)
      assert.are.equal("\137PNG\r\n\26\n", data:sub(1, 8))
    end
  end)

  it("mount_s3.lua: a bucket of s3rver mounted with s3fs, read back over S3, a copy-on-write fork", function()
    local out = example("mount_s3", "mount-s3")
    assert.matches("started s3rver for bucket example", out, 1, true)
    assert.matches("mounted example at /%S+/bucket with s3fs", out)
    assert.matches("the sandbox sees: report.txt", out, 1, true)
    assert.matches("unmounted: bucket is not a mountpoint", out, 1, true)
    assert.matches("GET example/report.txt: HTTP 200: written by a sandbox", out, 1, true)
    assert.matches("the fork reads: changed in the fork", out, 1, true)
    assert.matches("the bucket still reads: written by a sandbox", out, 1, true)
    assert.matches("deleting sandbox", out, 1, true)
  end)

  -- the two VPN examples: a server in sandbox A, a client in sandbox B
  -- linked to it, keys made in the sandboxes, a ping through the tunnel
  local function tunnel_ping(out, dir)
    local n = out:match(dir .. " over the tunnel: (%d+) packets transmitted, (%d+) received")
    assert.is_truthy(n, out)
    assert.matches(dir .. " over the tunnel: (%d+) packets transmitted, %1 received, 0%% packet loss", out)
  end

  it("vpn_openvpn.lua: an OpenVPN server in A (a PKI made there), B connects through the link, pings", function()
    local out = example("vpn_openvpn", "vpn-openvpn")
    assert.matches("created sandbox A [%x-]+ %(server%) and sandbox B [%x-]+ %(client, linked to A%)", out)
    assert.matches("B resolves A's id to %d+%.%d+%.%d+%.%d+\n", out)
    assert.matches("made the keys in A: a CA, certificates for vpn-server and sandbox-b, a tls-crypt key", out, 1, true)
    assert.matches("A: OpenVPN server up on tun%d+, address 10%.89%.0%.1\n", out)
    assert.matches("B: connected on tun%d+, address 10%.89%.0%.%d+\n", out)
    tunnel_ping(out, "B %-> A")
    tunnel_ping(out, "A %-> B")
    assert.matches('B: tunnel closed: Device "tun%d+" does not exist.', out)
    assert.matches("deleting sandboxes", out, 1, true)
  end)

  it("vpn_wireguard.lua: wg-quick over wireguard-go in A and B, keys from wg genkey, a handshake, pings", function()
    local out = example("vpn_wireguard", "vpn-wireguard")
    assert.matches("created sandbox A [%x-]+ and sandbox B [%x-]+ %(linked to A%)", out)
    local a_addr = out:match("B resolves A's id to (%d+%.%d+%.%d+%.%d+)\n")
    assert.is_truthy(a_addr, out)
    assert.matches("keys: A [%w+/]+%.%.%., B [%w+/]+%.%.%. %(public%)", out)
    assert.matches("A: wg0 up, address 10.90.0.1, listening on 51820\n", out, 1, true)
    assert.matches("B: wg0 up, address 10.90.0.2, peer A (" .. a_addr .. ") port 51820\n", out, 1, true)
    tunnel_ping(out, "B %-> A")
    tunnel_ping(out, "A %-> B")
    assert.matches("A's peer: endpoint %d+%.%d+%.%d+%.%d+:%d+, latest handshake [^\n]+", out)
    assert.is_nil(out:match("latest handshake none"), out)
    assert.matches("tunnels closed; deleting sandboxes", out, 1, true)
  end)

  it("computer_use.lua: a terminal on the desktop typed into, a screenshot, a recording", function()
    local out, _, _, dir = example("computer_use", "computer-use", 300)
    assert.matches("running: xvfb, xfce4, x11vnc, novnc", out, 1, true)
    local dw, dh = out:match("display: (%d+)x(%d+)")
    assert.is_truthy(dw, out)
    assert.matches("watch it: http://%S+/vnc%.html%?autoconnect=true&path=%S+websockify", out)
    assert.matches('window "dtlua terminal" at %d+,%d+, %d+x%d+', out)
    -- the keys reached the terminal: its shell renamed the window
    assert.matches('the window is now "typed by dtlua"', out, 1, true)
    -- the PNG it saved is a PNG of the display's size (read from its IHDR here)
    local png = helper.read_file(dir .. "/screen.png")
    assert.are.equal("\137PNG\r\n\26\n", png:sub(1, 8))
    assert.are.equal("IHDR", png:sub(13, 16))
    local w, h = string.unpack(">I4I4", png, 17)
    assert.are.same({ tonumber(dw), tonumber(dh) }, { w, h })
    assert.matches(("saved ./screen.png: %d bytes of png, %sx%s"):format(#png, dw, dh), out, 1, true)
    assert.matches(("compressed: jpeg, %dx%d"):format(dw // 2, dh // 2), out, 1, true)
    -- the recording is a video ffprobe can read, a few seconds long
    assert.matches("recording %S+: completed", out)
    local r = process.run({ "ffprobe", "-v", "error", "-show_entries", "format=duration",
      "-of", "default=noprint_wrappers=1:nokey=1", dir .. "/recording.mp4" }, { timeout = 60, stderr = "pipe" })
    assert.are.equal(0, r.exit_code, r.stderr)
    local duration = tonumber(r.stdout:match("[%d.]+"))
    assert.is_truthy(duration and duration >= 1, "ffprobe: " .. r.stdout)
    assert.matches("stopped: inactive", out, 1, true)
    assert.matches("deleting sandbox", out, 1, true)
  end)

  it("snapshots_volumes.lua: the snapshot list, a volume shared by two sandboxes", function()
    local out = example("snapshots_volumes", "snapshots-volumes")
    assert.matches("snapshots: 4 in all\n  dtlocal: active\n  daytona-small: active\n"
      .. "  daytona-medium: active\n  daytona-large: active\n", out, 1, true)
    assert.matches('get%("dtlocal"%): id [%x-]+', out)
    local name = out:match("volume (example%-shared%-%x+) is ready")
    assert.is_truthy(name, out)
    assert.matches("writer sees: notes.txt", out, 1, true)
    assert.matches("reader reads: written by the first sandbox", out, 1, true)
    assert.matches("writer now reads: and the second one answered", out, 1, true)
    assert.matches("listed: " .. name .. " (ready)", out, 1, true)
    assert.matches("deleted volume " .. name, out, 1, true)
    -- the volume went too (a deleted one may still be listed as such)
    for _, v in ipairs(client.volume:list()) do
      assert.is_false(v.name == name and v.state ~= "deleted" and v.state ~= "deleting",
        "volume left: " .. v.name .. " (" .. tostring(v.state) .. ")")
    end
  end)

  it("examples/host: the frame-loop host keeps every step short", function()
    -- The host measures wall-clock time, so on a loaded machine the OS may
    -- preempt one step for a few ms; a step that really blocks does so in
    -- every run. So: up to 3 runs, one of them must stay under 10 ms.
    local seen = {}
    for _ = 1, 3 do
      -- run from the checkout: the host finds lua/ relative to its cwd
      local r = run({ HOST, "examples/host/script.lua" }, {}, { cwd = ROOT, timeout = 120 })
      assert.are.equal(0, r.exit_code, describe_run(r))
      assert.matches("host script: downloaded 67108864 bytes in %d+ chunks", r.stdout)
      assert.matches("host script: the child printed 5 lines %(tick 1, tick 2, tick 3, tick 4, tick 5%) "
        .. "and exited with 0", r.stdout)
      assert.matches("host script: done", r.stdout)
      local frames, longest = r.stdout:match("host: (%d+) frames, longest step ([%d.]+) ms")
      assert.is_truthy(frames, describe_run(r))
      seen[#seen + 1] = longest .. " ms"
      if tonumber(longest) < 10 then break end
    end
    assert.is_true(tonumber(seen[#seen]:match("[%d.]+")) < 10, "longest steps: " .. table.concat(seen, ", "))
  end)
end)

describe("hello.lua with no credentials", function()
  after_each(function() helper.cleanup() end)

  it("starts the user's local server itself, runs, and the server stops cleanly", function()
    local dir = helper.tmpdir()
    local vars = { XDG_STATE_HOME = dir .. "/state" }
    local r, secs = run({ DTLUA, ROOT .. "/examples/hello.lua" }, vars, { cwd = dir })
    -- stop the server it started, whatever happened
    local stop = run({ DTLOCAL, "stop" }, vars, { cwd = dir, timeout = 60 })
    if r.exit_code ~= 0 then
      -- a failed start may leave a server that announces itself only now:
      -- stop that one too (for up to 10 s), so no server outlives the spec
      local deadline = require("daytona.core").now() + 10
      while require("daytona.core").now() < deadline do
        if run({ DTLOCAL, "status" }, vars, { cwd = dir, timeout = 30 }).exit_code == 0 then
          run({ DTLOCAL, "stop" }, vars, { cwd = dir, timeout = 60 })
          break
        end
        require("daytona.runtime.scheduler").sleep(0.2)
      end
    end
    assert.are.equal(0, r.exit_code, describe_run(r))
    assert.matches("daytona: no credentials set, using the local server at http://127%.0%.0%.1:%d+/api "
      .. "%(started it with `dtlocal start`%)", r.stderr)
    assert.matches("code_run: exit 0:", r.stdout)
    assert.matches("deleting sandbox", r.stdout)
    assert.is_true(secs < 30, ("took %.1f s"):format(secs))
    assert.are.equal(0, stop.exit_code, describe_run(stop))
    local status = run({ DTLOCAL, "status" }, vars, { cwd = dir, timeout = 30 })
    assert.are.equal(3, status.exit_code, describe_run(status))
  end)
end)

describe("dtlua at the end of the main task", function()
  -- regression (found by pty_session.lua): scheduler.run took one more
  -- blocking loop step after the last task had finished, sleeping until
  -- whatever core timer was pending fired
  it("returns at once, whatever core timers are still pending", function()
    local r, secs = run({ DTLUA, "-e", "PENDING = require('daytona.core').timer(5000)" }, {},
      { cwd = ROOT, timeout = 30 })
    assert.are.equal(0, r.exit_code, describe_run(r))
    assert.is_true(secs < 2, ("took %.1f s"):format(secs))
  end)
end)
