-- Processes, pipes and PTYs: core.process and the daytona.runtime.process
-- wrapper. Liveness is checked in /proc, never by sleeping.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local errors = require "daytona.errors"
local process = require "daytona.runtime.process"
local helper = require "support.helper"

local MiB = 1024 * 1024

local slurp = helper.read_file

local function mypid()
  return tonumber(slurp("/proc/self/stat"):match("^(%d+)"))
end

-- The state letter of a process ("S", "R", "Z", ...) or nil if it is gone.
local function state(pid)
  local s = slurp("/proc/" .. pid .. "/stat")
  return s and s:match("^%d+ %b() (%a)")
end

-- Gone, or a zombie left to a parent that is not us (an orphaned
-- grandchild is reaped by PID 1, which may take its time in a container).
local function dead(pid)
  local st = state(pid)
  return st == nil or st == "Z"
end

local function alive(pid)
  local st = state(pid)
  return st ~= nil and st ~= "Z"
end

-- Our children still in the process table: { pid = state }.
local function children()
  local me = mypid()
  local list = slurp(("/proc/%d/task/%d/children"):format(me, me))
  local out = {}
  if list then
    for pid in list:gmatch("%d+") do out[tonumber(pid)] = state(pid) end
  else   -- no CONFIG_PROC_CHILDREN: scan for our ppid
    local ls = io.popen("ls /proc")
    local pids = {}
    for name in ls:lines() do if name:match("^%d+$") then pids[#pids + 1] = name end end
    ls:close()
    for _, pid in ipairs(pids) do
      local s = slurp("/proc/" .. pid .. "/stat")
      local st, ppid = s and s:match("^%d+ %b() (%a) (%d+)")
      if ppid and tonumber(ppid) == me then out[tonumber(pid)] = st end
    end
  end
  return out
end

local function rss_kib()
  return tonumber(slurp("/proc/self/status"):match("VmRSS:%s+(%d+)"))
end

-- Read the stream until pred(all output so far) holds; returns the output.
local function read_until(p, pred, stream)
  local acc = ""
  while not pred(acc) do
    local chunk = p:read(stream or "stdout", 5)
    if chunk == nil then error("EOF before the expected output; got " .. ("%q"):format(acc), 2) end
    acc = acc .. chunk
  end
  return acc
end

local function contains(s) return function(acc) return acc:find(s, 1, true) ~= nil end end

describe("process", function()
  teardown(function() helper.cleanup() end)

  describe("exit status", function()
    it("reports exit codes", function()
      helper.run(function()
        local r = process.run({ "sh", "-c", "exit 3" })
        assert.are.equal(3, r.exit_code)
        assert.is_nil(r.signal)
        assert.are.equal(0, process.run({ "true" }).exit_code)
        assert.are.equal(1, process.run({ "false" }).exit_code)
      end)
    end)

    it("reports the signal that killed a process", function()
      helper.run(function()
        local p <close> = process.spawn({ "sleep", "30" })
        assert.is_nil(p:status())
        assert.is_true(p:kill("TERM"))
        local code, sig = p:wait(5)
        assert.are.equal(128 + 15, code)
        assert.are.equal("SIGTERM", sig)
        assert.are.same({ 128 + 15, "SIGTERM" }, { p:status() })
        -- a process that signals itself; numbers work as well as names
        local r = process.run({ "sh", "-c", "kill -USR1 $$" })
        assert.are.equal("SIGUSR1", r.signal)
        local q <close> = process.spawn({ "sleep", "30" })
        q:kill(9)
        assert.are.same({ 137, "SIGKILL" }, { q:wait(5) })
        assert.is_false(q:kill("KILL", false))   -- reaped: nothing to signal
      end)
    end)

    it("times out wait without killing, and run with killing", function()
      helper.run(function()
        local p <close> = process.spawn({ "sleep", "30" })
        local st, msg, code = p:wait(0.05)
        assert.is_nil(st)
        assert.is_string(msg)
        assert.are.equal("ETIMEDOUT", code)
        assert.is_nil(p:status())           -- still running
        p:kill("KILL")
        p:wait(5)

        local t0 = core.now()
        local r, err
        r, msg, code, err = process.run({ "sh", "-c", "sleep 300 & echo $!; exec sleep 300" }, { timeout = 0.3 })
        assert.is_nil(r)
        assert.are.equal("ETIMEDOUT", code, msg)
        assert.is_true(core.now() - t0 < 3)
        local grandchild = tonumber(err.stdout:match("^(%d+)"))
        assert.is_number(grandchild)
        helper.eventually(function() return state(err.pid) == nil end)   -- ours: reaped
        helper.eventually(function() return dead(grandchild) end)
      end)
    end)
  end)

  describe("pipes", function()
    it("passes stdin to stdout through cat", function()
      helper.run(function()
        local p <close> = process.spawn({ "cat" })
        p:write("hello\n"):write("world\n")
        assert.are.equal("hello", p:lines()())
        p:close_stdin()
        local rest = {}
        for line in p:lines() do rest[#rest + 1] = line end
        assert.are.same({ "world" }, rest)
        assert.are.equal(0, p:wait(5))
        assert.is_nil(p:read())
        assert.are.equal("abc", process.run({ "cat" }, { input = "abc" }).stdout)
      end)
    end)

    it("streams 8 MiB through cat with back-pressure on both sides", function()
      helper.run(function()
        local p <close> = process.spawn({ "cat" })
        local block = ("0123456789abcdef"):rep(4096)   -- 64 KiB
        local n = 128
        local writer = scheduler.spawn(function()
          for _ = 1, n do p:write(block, 10) end
          p:close_stdin()
        end)
        local pattern = "0123456789abcdef"
        local total, max_chunk, intact = 0, 0, true
        while true do
          local chunk = p:read("stdout", 10)
          if not chunk then break end
          local start = total % 16
          local expect = pattern:rep(#chunk // 16 + 2):sub(start + 1, start + #chunk)
          intact = intact and chunk == expect
          total = total + #chunk
          if #chunk > max_chunk then max_chunk = #chunk end
        end
        writer:wait()
        assert.are.equal(n * #block, total)
        assert.is_true(intact)
        assert.is_true(max_chunk <= process.OUT_BOUND + 64 * 1024)
        assert.are.equal(0, p:wait(5))
        -- run() queues its whole input and reads output meanwhile: no deadlock
        local big = ("x"):rep(3 * MiB)
        local r = process.run({ "cat" }, { input = big })
        assert.are.equal(#big, #r.stdout)
        assert.are.equal(big, r.stdout)
      end)
    end)

    it("moves 50 MiB from head -c with flat memory", function()
      helper.run(function()
        collectgarbage()
        local base, peak = rss_kib(), 0
        local p <close> = process.spawn({ "head", "-c", tostring(50 * MiB), "/dev/zero" })
        local total, reads = 0, 0
        while true do
          local chunk = p:read()
          if not chunk then break end
          total = total + #chunk
          reads = reads + 1
          if reads % 16 == 0 then
            local r = rss_kib()
            if r > peak then peak = r end
          end
        end
        assert.are.equal(50 * MiB, total)
        assert.are.equal(0, p:wait(5))
        -- buffering the transfer would cost 50 MiB; a few MiB of garbage
        -- strings between collections is all we allow.  (Under ASan freed
        -- memory sits in its quarantine, so RSS says nothing there.)
        if not (os.getenv("LD_PRELOAD") or ""):find("libasan", 1, true) then
          assert.is_true(peak - base < 24 * 1024, ("RSS grew by %d KiB"):format(peak - base))
        end
      end)
    end)

    it("bounds run's output by max_output without blocking the child", function()
      helper.run(function()
        local r = process.run({ "head", "-c", tostring(8 * MiB), "/dev/zero" }, { max_output = 1000 })
        assert.are.equal(0, r.exit_code)
        assert.are.equal(1000, #r.stdout)
        assert.is_true(r.truncated)
        r = process.run({ "echo", "small" }, { max_output = 1000 })
        assert.is_false(r.truncated)
      end)
    end)

    it("keeps stderr apart, merges it, or drops it", function()
      helper.run(function()
        local cmd = { "sh", "-c", "echo out; echo err >&2" }
        local r = process.run(cmd)
        assert.are.equal("out\n", r.stdout)
        assert.are.equal("err\n", r.stderr)
        r = process.run(cmd, { stderr = "stdout" })
        assert.are.equal("out\nerr\n", r.stdout)
        assert.is_nil(r.stderr)
        r = process.run(cmd, { stderr = "null" })
        assert.are.equal("out\n", r.stdout)
        -- a stream that is not a pipe reads as EOF
        local p <close> = process.spawn({ "true" }, { stdout = "null", stdin = "null" })
        assert.is_nil(p:read("stdout"))
        assert.are.equal(0, p:wait(5))
        local wrote, _, wcode = p:write("x")
        assert.is_nil(wrote)
        assert.is_string(wcode)
      end)
    end)

    it("passes a descriptor as stdout", function()
      helper.run(function()
        local dir = helper.tmpdir()
        local f = assert(io.open(dir .. "/out", "w"))
        -- the descriptor of the Lua file, found through /proc
        local fd
        local ls = io.popen("ls -l /proc/" .. mypid() .. "/fd")
        for line in ls:lines() do
          local n, target = line:match("(%d+) %-> (.*)$")
          if target == dir .. "/out" then fd = tonumber(n) end
        end
        ls:close()
        assert.is_number(fd)
        local p <close> = process.spawn({ "echo", "to a file" }, { stdout = fd })
        assert.are.equal(0, p:wait(5))
        f:close()
        assert.are.equal("to a file\n", slurp(dir .. "/out"))
        assert.has_error(function() process.spawn({ "true" }, { stdout = 100000 }) end)
      end)
    end)
  end)

  describe("environment and directory", function()
    it("replaces the environment with a map or a list", function()
      helper.run(function()
        local r = process.run({ "sh", "-c", 'echo "$FOO|${HOME-unset}"' }, { env = { FOO = "bar baz" } })
        assert.are.equal("bar baz|unset\n", r.stdout)
        r = process.run({ "env" }, { env = { "A=1", "B=x=y" } })
        local lines = {}
        for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
        table.sort(lines)
        assert.are.same({ "A=1", "B=x=y" }, lines)
        -- nil inherits ours
        r = process.run({ "sh", "-c", 'echo "$PATH"' })
        assert.are.equal(os.getenv("PATH") .. "\n", r.stdout)
        assert.has_error(function() process.run({ "true" }, { env = { "NOEQUALS" } }) end)
        assert.has_error(function() process.run({ "true" }, { env = { ["A=B"] = "x" } }) end)
      end)
    end)

    it("runs in the given directory", function()
      helper.run(function()
        local dir = helper.tmpdir()
        local f = assert(io.open(dir .. "/marker", "w"))
        f:write("here")
        f:close()
        assert.are.equal("here", process.run({ "cat", "marker" }, { cwd = dir }).stdout)
        local r, _, code = process.run({ "true" }, { cwd = dir .. "/missing" })
        assert.is_nil(r)
        assert.are.equal("ENOENT", code)
      end)
    end)

    it("starts the child with no signal blocked or ignored, in its own session", function()
      helper.run(function()
        -- shell builtins only: under make asan every program gets the
        -- sanitizer runtime preloaded, and some (ps) hang with it
        local r = process.run({ "sh", "-c", 'while read -r l; do case $l in Sig*) echo "$l";; esac; done '
          .. '< /proc/self/status; read -r stat < /proc/$$/stat; echo "$stat"; echo $$' })
        assert.are.equal(0, r.exit_code, r.stdout)
        -- the classic signals 1..31 (bits 0..30); the RT ones are glibc's
        for _, field in ipairs({ "SigBlk", "SigIgn" }) do
          local mask = assert(tonumber(r.stdout:match(field .. ":%s+(%x+)"), 16), r.stdout)
          assert.are.equal(0, mask & 0x7fffffff, field)
        end
        -- /proc/PID/stat: pid (comm) state ppid pgrp session ...
        local sid, pid = r.stdout:match("%) %S+ %d+ %d+ (%d+)[^\n]*\n(%d+)%s*$")
        assert.are.equal(pid, sid)   -- new_group (the default): a session leader
      end)
    end)
  end)

  describe("spawn failures", function()
    it("fails with ENOENT for a missing program instead of a child exiting 127", function()
      helper.run(function()
        for _, argv in ipairs({ { "no-such-program-dtlua" }, { "/nonexistent/prog" } }) do
          local p, msg, code = process.spawn(argv)
          assert.is_nil(p)
          assert.are.equal("ENOENT", code)
          assert.is_truthy(msg:find(argv[1], 1, true))
        end
        local tp, _, tcode = process.spawn({ "no-such-program-dtlua" }, { pty = {} })
        assert.is_nil(tp)
        assert.are.equal("ENOENT", tcode)
        -- core level: nil, message, code
        local p, msg, code = core.process.spawn{ argv = { "/nonexistent/prog" } }
        assert.is_nil(p)
        assert.is_string(msg)
        assert.are.equal("ENOENT", code)
      end)
    end)

    it("fails with EACCES for a file that is not executable", function()
      helper.run(function()
        local dir = helper.tmpdir()
        local f = assert(io.open(dir .. "/script", "w"))
        f:write("#!/bin/sh\necho hi\n")
        f:close()
        for _, opts in ipairs({ {}, { pty = true } }) do
          local p, _, code = process.spawn({ dir .. "/script" }, opts)
          assert.is_nil(p)
          assert.are.equal("EACCES", code)
        end
        local p, _, code = process.spawn({ "script" }, { env = { "PATH=" .. dir } })
        assert.is_nil(p)
        assert.are.equal("EACCES", code)
        -- executable: found through the child's PATH
        os.execute("chmod +x '" .. dir .. "/script'")
        assert.are.equal("hi\n", process.run({ "script" }, { env = { PATH = dir .. ":/usr/bin:/bin" } }).stdout)
      end)
    end)

    it("raises on misuse", function()
      helper.run(function()
        assert.has_error(function() process.spawn({}) end)
        assert.has_error(function() process.spawn("ls") end)
        assert.has_error(function() process.spawn({ "ls", 3 }) end)
        assert.has_error(function() process.spawn({ "ls" }, { bogus = 1 }) end)
        assert.has_error(function() process.spawn({ "ls" }, { stdin = "maybe" }) end)
        assert.has_error(function() process.spawn({ "ls" }, { stdout = "stdout" }) end)
        assert.has_error(function() process.spawn({ "ls" }, { pty = { cols = 0 } }) end)
        assert.has_error(function() process.spawn({ "ls" }, { pty = true, stdin = "null" }) end)
        assert.has_error(function() core.process.spawn{ argv = { "ls\0x" } } end)
        local p <close> = process.spawn({ "true" })
        assert.has_error(function() p:resize(10, 10) end)
        assert.has_error(function() p:kill("NOTASIGNAL") end)
        assert.has_error(function() p:read("stdwhat") end)
        p:wait(5)
      end)
    end)
  end)

  describe("PTY", function()
    it("echoes input and runs the child on a terminal", function()
      helper.run(function()
        local p <close> = process.spawn({ "cat" }, { pty = { cols = 80, rows = 24 } })
        assert.is_true(p.proc:is_pty())
        p:write("hello\n")
        -- the terminal echoes the line, then cat writes it back
        local out = read_until(p, contains("hello\r\nhello\r\n"))
        assert.are.equal("hello\r\nhello\r\n", out)
        p:close_stdin()   -- ^D: cat sees EOF
        assert.are.equal(0, p:wait(5))
        assert.is_nil(p:read("stderr"))   -- everything is on the terminal

        local t <close> = process.spawn({ "tty" }, { pty = {} })
        local all = {}
        for line in t:lines() do all[#all + 1] = line end
        assert.is_truthy(all[1]:match("^/dev/pts/%d+\r$"), all[1])
        assert.are.equal(0, t:wait(5))
      end)
    end)

    it("gives the child a controlling terminal in a new session", function()
      helper.run(function()
        -- a shell reading /dev/tty only works with a controlling terminal
        local p <close> = process.spawn({ "sh", "-c", "read x </dev/tty; echo got:$x; read y" }, { pty = {} })
        p:write("abc\n")
        read_until(p, contains("got:abc"))
        -- while it waits for the second line: its group, session and terminal
        local pgrp, sid, tty = slurp("/proc/" .. p:pid() .. "/stat"):match("^%d+ %b() %a %d+ (%d+) (%d+) (%d+)")
        assert.are.equal(p:pid(), tonumber(pgrp))
        assert.are.equal(p:pid(), tonumber(sid))
        assert.are_not.equal(0, tonumber(tty))
        p:write("done\n")
        while p:read(nil, 5) do end
        assert.are.equal(0, p:wait(5))
      end)
    end)

    it("reflects resize in stty size and sends SIGWINCH", function()
      helper.run(function()
        local p <close> = process.spawn({ "sh" }, { pty = { cols = 80, rows = 24 } })
        p:write("stty size\n")
        read_until(p, contains("24 80"))
        p:resize(120, 40)
        p:write("stty size\n")
        read_until(p, contains("40 120"))
        p:write("exit 5\n")
        while p:read(nil, 5) do end
        assert.are.equal(5, p:wait(5))
        assert.has_error(function() p:resize(0, 10) end)

        local w <close> = process.spawn({ "sh", "-c", "trap 'echo WINCH' WINCH; echo ready; while :; do sleep 0.05; done" },
          { pty = {} })
        read_until(w, contains("ready"))
        w:resize(100, 30)
        read_until(w, contains("WINCH"))
      end)
    end)
  end)

  describe("process trees", function()
    local function tree(opts)
      local p = process.spawn({ "sh", "-c", "sleep 300 & echo $!; wait" }, opts)
      local line = p:lines()()
      return p, tonumber(line:match("%d+"))
    end

    it("kills the whole group", function()
      helper.run(function()
        for _, opts in ipairs({ {}, { pty = {} } }) do
          local p <close>, grandchild = tree(opts)
          assert.is_true(alive(grandchild))
          assert.is_true(p:kill("TERM"))
          local _, sig = p:wait(5)
          assert.are.equal("SIGTERM", sig)
          assert.is_nil(state(p:pid()))   -- reaped by us
          helper.eventually(function() return dead(grandchild) end)
        end
      end)
    end)

    it("kills only the child without tree or without its own group", function()
      helper.run(function()
        local p <close>, grandchild = tree({})
        p:kill("KILL", false)
        p:wait(5)
        assert.is_true(alive(grandchild))
        p:kill("KILL")   -- the group still exists through the grandchild
        helper.eventually(function() return dead(grandchild) end)

        local q <close>, g2 = tree({ new_group = false })
        assert.is_true(q:kill("KILL"))
        q:wait(5)
        assert.is_true(alive(g2))
        os.execute("kill -9 " .. g2)
        helper.eventually(function() return dead(g2) end)
      end)
    end)

    it("closing or cancelling kills the tree", function()
      helper.run(function()
        local p, grandchild = tree({})
        local pid = p:pid()
        p:close()
        p:close()   -- idempotent
        helper.eventually(function() return state(pid) == nil and dead(grandchild) end)

        local child
        local task = scheduler.spawn(function()
          local q <close> = process.spawn({ "sh", "-c", "sleep 300 & echo $!; wait" })
          child = q:pid()
          q:wait()
        end)
        helper.eventually(function() return child ~= nil end)
        task:cancel()
        local ok, err = pcall(task.wait, task)
        assert.is_false(ok)
        assert.is_true(errors.is(err, errors.CancelledError))
        helper.eventually(function() return state(child) == nil end)

        -- an abandoned handle is killed when collected
        local abandoned = (function() return process.spawn({ "sleep", "300" }):pid() end)()
        helper.eventually(function()
          collectgarbage()
          return state(abandoned) == nil
        end)

        -- run() under a cancelled task
        local before = children()
        local runner = scheduler.spawn(function() return process.run({ "sleep", "300" }) end)
        local new = helper.eventually(function()
          for pid, st in pairs(children()) do
            if not before[pid] and st ~= "Z" then return pid end
          end
        end)
        runner:cancel()
        assert.is_false(pcall(runner.wait, runner))
        helper.eventually(function() return state(new) == nil end)
      end)
    end)
  end)

  describe("detached (a daemon that outlives us)", function()
    -- the session id of a process (field 6 of /proc/PID/stat)
    local function sid(pid)
      local s = slurp("/proc/" .. pid .. "/stat")
      return s and tonumber(s:match("^%d+ %b() %a %d+ %d+ (%d+)"))
    end

    it("survives close, collection and the end of the script that started it, in its own session", function()
      local dir = helper.tmpdir()
      -- a child dtlua starts a detached sleep (output to a file) and a
      -- plain one, prints both pids and ends at once: the plain one dies
      -- with it, the detached one runs on, and its exit kept no loop running
      local script = dir .. "/start.lua"
      local f = assert(io.open(script, "w"))
      f:write([[
        local process = require "daytona.runtime.process"
        local log = assert(io.open(arg[1], "ab"))
        local d = assert(process.spawn({ "sh", "-c", "echo started; exec sleep 300" },
          { detached = true, stdin = "null", stdout = log, stderr = "stdout" }))
        log:close()
        local plain = assert(process.spawn({ "sleep", "300" }))
        io.write(d:pid(), " ", plain:pid(), "\n")
        d:close()   -- lets it go
      ]])
      f:close()
      local r = assert(process.run({ helper.build_path("bin/dtlua"), script, dir .. "/log" },
        { env = helper.child_env(), timeout = 30 }))
      assert.are.equal(0, r.exit_code, r.stderr)
      local dpid, ppid = r.stdout:match("^(%d+) (%d+)")
      dpid, ppid = tonumber(dpid), tonumber(ppid)
      helper.eventually(function() return dead(ppid) end)
      assert.is_true(alive(dpid))
      assert.are.equal(dpid, sid(dpid))   -- leads its own session
      helper.eventually(function() return helper.read_file(dir .. "/log") == "started\n" end)
      assert.is_true(core.process.kill(dpid, "KILL"))
      helper.eventually(function() return dead(dpid) end)
    end)

    it("is reaped while we run, and collection does not kill it", function()
      helper.run(function()
        local p = assert(process.spawn({ "sleep", "300" }, { detached = true, stdin = "null", stdout = "null",
          stderr = "null" }))
        local pid = p:pid()
        p = nil
        collectgarbage(); collectgarbage()
        assert.is_true(alive(pid))
        local q <close> = assert(process.spawn({ "sh", "-c", "exit 7" }, { detached = true, stdin = "null",
          stdout = "null", stderr = "null" }))
        assert.are.equal(7, q:wait(5))
        assert.is_nil(state(q:pid()))   -- reaped: no zombie
        core.process.kill(pid, "KILL")
        helper.eventually(function() return state(pid) == nil end)
      end)
    end)

    it("refuses pipes, a PTY and new_group = false", function()
      for _, opts in ipairs {
        { detached = true },
        { detached = true, stdin = "null", stdout = "null" },
        { detached = true, stdin = "null", stdout = "null", stderr = "null", new_group = false },
        { detached = true, pty = true },
      } do
        local ok, err = pcall(process.spawn, { "true" }, opts)
        assert.is_false(ok)
        assert.matches("detached", tostring(err))
      end
      local f = assert(io.tmpfile())
      f:close()
      assert.matches("closed file", tostring(select(2, pcall(process.spawn, { "true" }, { stdout = f }))))
    end)
  end)

  describe("reaping and concurrency", function()
    it("leaves no zombies after 200 short processes", function()
      helper.run(function()
        local before = children()
        for i = 1, 200 do
          if i % 4 == 0 then
            local p <close> = process.spawn({ "true" }, { pty = {} })
            while p:read() do end
            assert.are.equal(0, p:wait(5))
          elseif i % 4 == 1 then
            local p <close> = process.spawn({ "sleep", "30" })   -- closed while running
          else
            assert.are.equal(0, process.run({ "true" }).exit_code)
          end
        end
        helper.eventually(function()
          for pid, st in pairs(children()) do
            if not before[pid] and st then return false end
          end
          return true
        end)
      end)
    end)

    it("runs 50 processes at once", function()
      helper.run(function()
        local fns = {}
        for i = 1, 50 do
          fns[i] = function()
            return process.run({ "sh", "-c", "sleep 0.3; echo $0", tostring(i) }, { timeout = 20 }).stdout
          end
        end
        local t0 = core.now()
        local out = scheduler.all(fns)
        local elapsed = core.now() - t0
        for i = 1, 50 do assert.are.equal(i .. "\n", out[i]) end
        assert.is_true(elapsed < 5, "took " .. elapsed .. " s")   -- one after another: 15 s
      end)
    end)

    it("works from a plain coroutine that is not a task", function()
      local r = process.run({ "echo", "plain" })
      assert.are.equal("plain\n", r.stdout)
    end)
  end)
end)
