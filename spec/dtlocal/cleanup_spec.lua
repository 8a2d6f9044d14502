-- What a crashed server or a hostile sandbox leaves behind, against a real
-- dtlocal (doc/dtlocal.md "Resources" and "State"): after `kill -9` of the
-- server a restart removes the dead server's cgroups (killing what is still
-- in them) and its socket link dir; a fork-bombed sandbox stops within a
-- few seconds and nothing of its uid range survives; the server's own group
-- carries a total task limit; a sandbox that fills the state dir's file
-- system (a small tmpfs here) cannot make the server lose its records.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local cgroups = require "dtlocal.control.cgroups"
local process = require "daytona.runtime.process"
local scheduler = require "daytona.runtime.scheduler"
local json = require("dtlocal.http").json

local util = core.util
local read = helper.read_file
local info = cgroups.detect()   -- the server runs in our cgroups: it finds the same
local ROOT = util.getuid() == 0

local function trim(s) return ((s or ""):gsub("%s+$", "")) end

-- The directory of our own cgroup in every cgroup hierarchy mounted here
-- (v1 ones of any controller, and v2).
local function own_dirs()
  local own = cgroups.parse_proc_cgroup(read("/proc/self/cgroup"))
  local out = {}
  for _, m in ipairs(cgroups.parse_mountinfo(read("/proc/self/mountinfo"))) do
    local path
    if m.fstype == "cgroup2" then
      path = own.v2
    else
      for o in pairs(m.options) do path = path or own.v1[o] end
    end
    if path then
      local rel = m.root == "/" and path or (path:sub(1, #m.root) == m.root and path:sub(#m.root + 1))
      if rel then out[#out + 1] = m.mountpoint .. (rel == "/" and "" or rel) end
    end
  end
  return out
end

-- The groups (in any hierarchy) named after server pid `pid`.
local function groups_of(pid)
  local out = {}
  for _, d in ipairs(own_dirs()) do
    for _, name in ipairs({ "dtlocal-" .. pid, "dtlocal-" .. pid .. ".server" }) do
      if util.stat(d .. "/" .. name) then out[#out + 1] = d .. "/" .. name end
    end
  end
  return out
end

-- The server's private socket dir (/tmp/dtlocal.XXXXXX) holding sandbox
-- id's link (`<id>`) or socket (`<id>.sock`).
local function link_dir_of(id)
  for _, base in ipairs({ (os.getenv("TMPDIR") or "/tmp"):gsub("/+$", ""), "/tmp" }) do
    for _, name in ipairs(util.readdir(base) or {}) do
      local dir = base .. "/" .. name
      if name:match("^dtlocal%.") and (util.stat(dir .. "/" .. id) or util.stat(dir .. "/" .. id .. ".sock")) then
        return dir
      end
    end
  end
end

-- Host pids whose real uid is in [first, first + 65535].
local function pids_of_range(first)
  local out = {}
  for _, name in ipairs(util.readdir("/proc") or {}) do
    if name:match("^%d+$") then
      local uid = tonumber((read("/proc/" .. name .. "/status") or ""):match("\nUid:%s+(%d+)"))
      if uid and uid >= first and uid <= first + 65535 then out[#out + 1] = name end
    end
  end
  return out
end

-- Host pids whose cgroup (in any hierarchy) is named after sandbox id.
local function pids_in_groups_of(id)
  local out = {}
  for _, name in ipairs(util.readdir("/proc") or {}) do
    if name:match("^%d+$") and (read("/proc/" .. name .. "/cgroup") or ""):find("/" .. id, 1, true) then
      out[#out + 1] = name
    end
  end
  return out
end

local function record(srv, id)
  return json.decode(read(srv.state_dir .. "/sandboxes/" .. id .. "/sandbox.json"))
end

-- A pid that no process has (one that just exited and was reaped).
local function dead_pid()
  local p <close> = process.spawn({ "true" }, { stdin = "null", stdout = "null", stderr = "null" })
  local pid = p:pid()
  p:wait(10)
  assert(not util.stat("/proc/" .. pid), "pid " .. pid .. " is alive")
  return pid
end

describe("dtlocal leftovers", function()
  teardown(function() helper.cleanup() end)

  it("claims a link dir for this process and sweeps the ones whose owner is gone", function()
    local leftovers = require "dtlocal.control.leftovers"
    local tmp = helper.tmpdir()
    local mine = tmp .. "/dtlocal.mine00"
    local dead = tmp .. "/dtlocal.dead00"
    local unowned = tmp .. "/dtlocal.nobody"
    for _, d in ipairs({ mine, dead, unowned }) do assert(util.mkdir(d, 448)) end
    assert(leftovers.claim_link_dir(mine))
    local pid, start = trim(read(mine .. "/owner")):match("^(%d+) (%d+)$")
    assert.are.equal(tostring(util.getpid()), pid)
    assert.are.equal(leftovers.start_time(util.getpid()), tonumber(start))
    -- a server that is gone, and one whose pid was reused (other start time)
    local f = assert(io.open(dead .. "/owner", "w"))
    f:write(dead_pid(), " 12345\n")
    f:close()
    assert(util.symlink("/nonexistent/run", dead .. "/some-sandbox"))
    local reused = tmp .. "/dtlocal.reused"
    assert(util.mkdir(reused, 448))
    f = assert(io.open(reused .. "/owner", "w"))
    f:write(util.getpid(), " ", leftovers.start_time(util.getpid()) + 1, "\n")
    f:close()
    local removed = leftovers.sweep_link_dirs(tmp)
    table.sort(removed)
    assert.are.same({ dead, reused }, removed)
    assert.is_truthy(util.stat(mine), "a live owner's dir stays")
    assert.is_truthy(util.stat(unowned), "a dir without an owner file stays")
    assert.is_nil(util.stat(dead))
  end)
end)

describe("dtlocal after kill -9", function()
  local srv
  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  it("removes the dead server's cgroups, killing what is in them, and its link dir", function()
    helper.run(function()
      srv = dtlocal.start()
      local s = dtlocal.expect(srv, 200, "POST", "/sandbox", {})
      dtlocal.exec(srv, s.id, "for i in 1 2 3 4 5 6 7 8; do sleep 600 >/dev/null 2>&1 & done; true", 30)
      local links = link_dir_of(s.id)
      assert.is_string(links, "the server links the sandbox's socket dir")
      local dead = srv.pid
      -- a group of another server that is gone, with a process still in it
      local stray, ghost
      if ROOT and info.hier.pids then
        ghost = info.hier.pids.dir .. "/dtlocal-" .. dead_pid()
        assert(util.mkdir(ghost, 493))
        assert(util.mkdir(ghost .. "/sandbox", 493))
        stray = process.spawn({ "sleep", "600" }, { stdin = "null", stdout = "null", stderr = "null" })
        local f = assert(io.open(ghost .. "/sandbox/cgroup.procs", "w"))
        f:write(tostring(stray:pid()))
        assert(f:close())
      end
      if info.hier.pids then assert.are_not.same({}, groups_of(dead)) end
      srv.crash()
      srv.restart()
      assert.are_not.equal(dead, srv.pid)
      assert.are.same({}, groups_of(dead), "the dead server's groups are gone")
      assert.is_nil(util.stat(links), "the dead server's link dir is gone: " .. links)
      if stray then
        assert.is_nil(util.stat(ghost), "a gone server's group with a process in it is removed")
        assert.is_not_nil(stray:status(), "the process in it was killed")
        stray:close()
      end
      -- the sandbox runs again, under the new server
      local again = dtlocal.expect(srv, 200, "GET", "/sandbox/" .. s.id)
      helper.eventually(function()
        again = dtlocal.expect(srv, 200, "GET", "/sandbox/" .. s.id)
        return again.state == "started"
      end, 30)
      local out = dtlocal.exec(srv, s.id, "echo hi", 30)
      assert.are.equal("hi\n", out)
      dtlocal.expect(srv, 200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)
end)

describe("dtlocal fork bombs", function()
  local srv
  setup(function() srv = dtlocal.start() end)
  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  -- A new sandbox running the shell code `bomb` in the background, once
  -- its pids group holds half its limit; returns it and that group's dir.
  local function bombed(bomb)
    local s = dtlocal.expect(srv, 200, "POST", "/sandbox", {})
    local group = info.hier.pids.dir .. "/dtlocal-" .. srv.pid .. "/" .. s.id
    dtlocal.exec(srv, s.id, "nohup bash -c '" .. bomb .. "' >/dev/null 2>&1 </dev/null & true", 30)
    helper.eventually(function()
      return (tonumber(trim(read(group .. "/pids.current"))) or 0) >= cgroups.PIDS_MAX / 2
    end, 30)
    return s, group
  end

  it("gives the server's group a total task limit", function()
    if not info.enforced.pids then pending("pids not enforced here: " .. cgroups.report(info)) return end
    local max = trim(read(info.hier.pids.dir .. "/dtlocal-" .. srv.pid .. "/pids.max"))
    assert.are.equal(tostring(cgroups.server_pids_max()), max)
    local pid_max = tonumber(trim(read("/proc/sys/kernel/pid_max")))
    local threads = tonumber(trim(read("/proc/sys/kernel/threads-max")))
    assert.is_true(tonumber(max) < math.min(pid_max, threads), max)
    assert.is_true(tonumber(max) >= cgroups.PIDS_MAX, max)
  end)

  it("stops a sandbox that forks as fast as it can within a few seconds, leaving nothing", function()
    if not info.enforced.pids then pending("pids not enforced here: " .. cgroups.report(info)) return end
    helper.run(function()
      -- the classic bomb, bounded by the sandbox's own pids limit
      local s, group = bombed(":(){ :|:& };:")
      local t0 = core.now()
      local st, b = dtlocal.request(srv, "POST", "/sandbox/" .. s.id .. "/stop")
      assert.are.equal(200, st)
      while b.state ~= "stopped" and core.now() - t0 < 60 do
        scheduler.sleep(0.1)
        b = dtlocal.expect(srv, 200, "GET", "/sandbox/" .. s.id)
      end
      local took = core.now() - t0
      print(("fork-bombed sandbox stopped in %.2f s"):format(took))
      assert.are.equal("stopped", b.state)
      assert.is_true(took < 5, ("stop took %.1f s"):format(took))
      assert.is_nil(util.stat(group), "its group is removed")
      -- killed processes the host's init has yet to reap may show a moment
      local first = record(srv, s.id).dtlocal.uid_first
      if first then
        local ok = pcall(helper.eventually, function() return #pids_of_range(first) == 0 end, 5 - took)
        assert.is_true(ok, "left: " .. table.concat(pids_of_range(first), " "))
      end
      local t1 = core.now()
      dtlocal.expect(srv, 200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return (dtlocal.request(srv, "GET", "/sandbox/" .. s.id)) == 404 end, 30)
      assert.is_true(core.now() - t1 < 5)
    end)
  end)

  it("deletes a fork-bombed sandbox within a few seconds", function()
    if not info.enforced.pids then pending("pids not enforced here: " .. cgroups.report(info)) return end
    helper.run(function()
      local s, group = bombed("while true; do sleep 100 & done")
      local t0 = core.now()
      dtlocal.expect(srv, 200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return (dtlocal.request(srv, "GET", "/sandbox/" .. s.id)) == 404 end, 60)
      local took = core.now() - t0
      print(("fork-bombed sandbox deleted in %.2f s"):format(took))
      assert.is_true(took < 5, ("delete took %.1f s"):format(took))
      assert.is_nil(util.stat(group))
      -- its uid slot is free again (another server may already use it):
      -- what is left would still be in a group named after the sandbox
      assert.are.same({}, pids_in_groups_of(s.id))
    end)
  end)
end)

describe("dtlocal with a full disk", function()
  local srv, mnt
  teardown(function()
    if srv then srv.stop() end
    if mnt then os.execute("umount -l '" .. mnt .. "'") end
    helper.cleanup()
  end)

  it("keeps serving and keeps its records when a sandbox fills the state dir's file system", function()
    if not ROOT then pending("needs root to mount a small tmpfs") return end
    helper.run(function()
      mnt = helper.tmpdir()
      assert(os.execute("mount -t tmpfs -o size=64m,mode=0700 dtlocal-spec '" .. mnt .. "'"))
      srv = dtlocal.start{ state_dir = mnt .. "/state" }
      local s = dtlocal.expect(srv, 200, "POST", "/sandbox", { labels = { keep = "me" } })
      local out = dtlocal.exec(srv, s.id, "dd if=/dev/zero of=$HOME/fill bs=1M 2>&1; df -k $HOME | tail -1", 60)
      assert.is_truthy(out:find("No space left", 1, true), out)
      -- the API answers and lists the sandbox
      local list = dtlocal.expect(srv, 200, "GET", "/sandbox")
      local listed = false
      for _, r in ipairs(list.items or list) do listed = listed or r.id == s.id end
      assert.is_true(listed)
      -- a state change works, or fails saying why, and the record on disk
      -- is whole and tells the truth
      local st, b = dtlocal.request(srv, "POST", "/sandbox/" .. s.id .. "/stop")
      if st == 200 then
        assert.are.equal("stopped", b.state)
      else
        assert.is_true(st >= 400, tostring(st))
        assert.is_truthy(tostring(b.message):find("No space left on device", 1, true), json.encode(b))
        assert.are.equal("started", dtlocal.expect(srv, 200, "GET", "/sandbox/" .. s.id).state)
        assert.are.equal("hi\n", (dtlocal.exec(srv, s.id, "echo hi", 30)))
      end
      local rec = record(srv, s.id)
      assert.are.equal(s.id, rec.id)
      assert.are.equal("me", rec.labels.keep)
      assert.are.equal(st == 200 and "stopped" or "started", rec.state)
      -- room again: everything works
      if st ~= 200 then
        dtlocal.exec(srv, s.id, "rm -f $HOME/fill", 30)
        assert.are.equal("stopped", dtlocal.expect(srv, 200, "POST", "/sandbox/" .. s.id .. "/stop").state)
      else
        dtlocal.expect(srv, 200, "POST", "/sandbox/" .. s.id .. "/start")
        dtlocal.exec(srv, s.id, "rm -f $HOME/fill", 30)
        dtlocal.expect(srv, 200, "POST", "/sandbox/" .. s.id .. "/stop")
      end
      assert.are.equal("started", dtlocal.expect(srv, 200, "POST", "/sandbox/" .. s.id .. "/start").state)
      dtlocal.expect(srv, 200, "PUT", "/sandbox/" .. s.id .. "/labels", { labels = { keep = "still" } })
      -- a restart on that state dir finds the record whole
      srv.restart()
      local again = dtlocal.expect(srv, 200, "GET", "/sandbox/" .. s.id)
      assert.are.equal("still", again.labels.keep)
      helper.eventually(function()
        return dtlocal.expect(srv, 200, "GET", "/sandbox/" .. s.id).state == "started"
      end, 30)
      assert.are.equal("hi\n", (dtlocal.exec(srv, s.id, "echo hi", 30)))
      dtlocal.expect(srv, 200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return (dtlocal.request(srv, "GET", "/sandbox/" .. s.id)) == 404 end, 30)
    end)
  end)
end)
