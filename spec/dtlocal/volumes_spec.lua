-- Volumes shared by sandboxes (doc/dtlocal.md, "What is local"): whoever
-- made a file or directory in a volume, every sandbox that mounts it may
-- change it, with or without a subpath and across stop/start, as Daytona's
-- volumes are shared read-write. As root, each sandbox's bind of the volume
-- is idmapped with its user namespace, so files are stored under the
-- sandbox ids (daytona = 1000) rather than a sandbox's own host range.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"

local srv

local function ok(want, method, path, body) return dtlocal.expect(srv, want, method, path, body) end
local function call(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end

-- exec that must succeed; returns its output
local function sh(id, command)
  local out, code = dtlocal.exec(srv, id, command, 30)
  assert.are.equal(0, code, command .. ": " .. tostring(out))
  return out
end

local function wait_state(id, want)
  helper.eventually(function() return ok(200, "GET", "/sandbox/" .. id).state == want end, 30)
end

local function create(body)
  local s = ok(200, "POST", "/sandbox", body)
  wait_state(s.id, "started")
  return s
end

local IS_ROOT = core.util.getuid() == 0

describe("dtlocal volumes shared by sandboxes", function()
  setup(function() srv = dtlocal.start() end)
  teardown(function() if srv then srv.stop() end end)

  it("lets every sandbox change what another made in the volume, across stop/start", function()
    helper.run(function()
      local vol = ok(200, "POST", "/volumes", { name = "spec-shared-vol" })
      local data = srv.state_dir .. "/volumes/" .. vol.id .. "/data"
      local a = create{ volumes = { { volumeId = vol.id, mountPath = "/home/daytona/vol" } } }
      local b = create{ volumes = { { volumeId = vol.id, mountPath = "/data" },
                                    { volumeId = vol.id, mountPath = "/sub", subpath = "shared/dir" } } }
      sh(a.id, "mkdir -p /home/daytona/vol/shared/dir && echo a > /home/daytona/vol/shared/dir/a.txt"
        .. " && sudo sh -c 'echo r > /home/daytona/vol/shared/root.txt'")
      -- b writes into a's directory and edits a's file, directly and through the subpath
      sh(b.id, "echo b > /data/shared/dir/b.txt && echo a2 >> /data/shared/dir/a.txt")
      sh(b.id, "echo c > /sub/c.txt && echo a3 >> /sub/a.txt")
      assert.are.equal("a\na2\na3\nb\nc\n", sh(a.id, "cd /home/daytona/vol/shared/dir && cat a.txt b.txt c.txt"))
      -- whose files they are, inside: daytona's, and root's what sudo made
      assert.are.equal("daytona:daytona\nroot:root\n",
        sh(b.id, "stat -c %U:%G /data/shared/dir/a.txt /data/shared/root.txt"))
      assert.are.equal("root-only\n", sh(b.id, "{ echo x >> /data/shared/root.txt; } 2>/dev/null || echo root-only"))
      if IS_ROOT then
        -- on disk: the sandbox ids, not either sandbox's host range
        for _, p in ipairs({ "", "/shared/dir", "/shared/dir/a.txt", "/shared/dir/b.txt", "/shared/dir/c.txt" }) do
          local st = core.util.stat(data .. p)
          assert.are.equal(1000, st.uid, data .. p)
          assert.are.equal(1000, st.gid, data .. p)
        end
        assert.are.equal(0, core.util.stat(data .. "/shared/root.txt").uid)
      end
      -- both stopped and started again: still theirs to change
      for _, s in ipairs({ a, b }) do ok(200, "POST", "/sandbox/" .. s.id .. "/stop") end
      for _, s in ipairs({ a, b }) do
        ok(200, "POST", "/sandbox/" .. s.id .. "/start")
        wait_state(s.id, "started")
      end
      sh(a.id, "cd /home/daytona/vol/shared/dir && echo b2 >> b.txt && rm c.txt && mkdir from-a")
      sh(b.id, "echo a4 >> /sub/a.txt && echo in > /sub/from-a/in.txt && sudo sh -c 'echo r2 >> /data/shared/root.txt'")
      assert.are.equal("a\na2\na3\na4\nb\nb2\nin\nr\nr2\n",
        sh(a.id, "cd /home/daytona/vol/shared && cat dir/a.txt dir/b.txt dir/from-a/in.txt root.txt"))
      -- a volume still mounted cannot be deleted
      assert.are.equal(409, (call("DELETE", "/volumes/" .. vol.id)))
      ok(200, "DELETE", "/sandbox/" .. a.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
      helper.eventually(function() return (call("DELETE", "/volumes/" .. vol.id)) == 200 end, 15)
    end)
  end)

  it("migrates a volume made before: files of a sandbox's host range become the sandbox ids they stood for", function()
    if not IS_ROOT then pending("volumes are migrated as root only") return end
    helper.run(function()
      local vol = ok(200, "POST", "/volumes", { name = "spec-old-vol" })
      local data = srv.state_dir .. "/volumes/" .. vol.id .. "/data"
      -- as dtlocal left them: data dir root's and 0777, files of some
      -- sandbox's host range (uids.BASE + slot * 65536 + id)
      local old = (1 << 30) + 7 * 65536
      assert(os.execute(("mkdir -p %s/d && echo old > %s/d/f.txt && chown -R %d:%d %s/d && chown 0:0 %s && chmod 0777 %s")
        :format(data, data, old + 1000, old + 1000, data, data, data)))
      local s = create{ volumes = { { volumeId = vol.id, mountPath = "/home/daytona/vol" } } }
      assert.are.equal("daytona:daytona\nold\nnew\n",
        sh(s.id, "cd /home/daytona/vol/d && stat -c %U:%G f.txt && echo new >> f.txt && echo x > g.txt && cat f.txt"))
      for _, p in ipairs({ "", "/d", "/d/f.txt", "/d/g.txt" }) do
        assert.are.equal(1000, core.util.stat(data .. p).uid, data .. p)
      end
      assert.are.equal(493, core.util.stat(data).mode)   -- 0755, as a new volume's
      ok(200, "DELETE", "/sandbox/" .. s.id)
      helper.eventually(function() return (call("DELETE", "/volumes/" .. vol.id)) == 200 end, 15)
    end)
  end)
end)
