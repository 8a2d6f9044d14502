--- Snapshot-of-a-sandbox and fork figures (printed, not asserted;
-- doc/dtlocal.md "Snapshots").
--
--   build/bin/dtlua bench/snapshots.lua [--n N] [--mib M]    (as root, like dtlocal's CI)
--
-- A prepared sandbox holds M MiB in 200 files under /home/daytona and a
-- file in /usr/local/bin. For a sandbox on the host's system and one on the
-- test image (spec/support/registry.lua, in a real docker-registry on
-- loopback), p50 of N (p90), interleaved:
--   POST /sandbox/{id}/snapshot -> snapshot active;
--   POST /sandbox {snapshot} -> started, from that snapshot, beside a plain
--   create on the same base (the peer: what the copy of the prepared files adds);
--   POST /sandbox/{id}/fork -> the fork started.
-- The warm pool is off, so every create is cold.
--
-- A run on the development machine (2 cores shared with other work, --n 5 --mib 20):
--   host's system: snapshot -> active 528 ms (p90 588); create plain 59 ms,
--   from the snapshot 259 ms (4.4x: each new sandbox gets its own copy of the
--   20 MiB, owners shifted); fork -> started 269 ms (4.6x: one copy, moved
--   into the fork's dir; it was 23x through a seed image).
--   test image: snapshot -> active 107 ms (one add_layer); create plain 20 ms,
--   from the snapshot 25 ms (1.3x: the prepared files are a shared layer,
--   nothing is copied); fork -> started 218 ms (11x: a layer, then a create).
local core = require "daytona.core"
local daytona = require "daytona"
local http = daytona.http
local json = require("dtlocal.http").json

local ROOT = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/?.lua;" .. ROOT .. "/spec/?.lua;" .. ROOT .. "/lua/?.lua;" .. package.path
local script = require "bench.lib.script"
local registry = require "support.registry"
local BUILD = os.getenv("DTLUA_BUILD") or (ROOT .. "/build")
local opt = script.args{ n = 9, mib = 20 }
local N, MIB = opt.n, opt.mib
assert(core.util.getuid() == 0, "run as root (as dtlocal's CI does: sandboxes in uid ranges)")

local pct = script.pct

local function start_server()
  local srv = script.start_server{ build = BUILD, timeout = 300 }
  function srv.exec(id, command)
    local r = http.request{ url = srv.api:gsub("/api$", "") .. "/toolbox/" .. id .. "/process/execute",
      method = "POST", timeout = 300,
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" },
      body = json.encode({ command = "sh -c '" .. command .. "'", timeout = 300 }) }
    local b = json.decode(r.body)
    assert(r.status == 200 and b.exitCode == 0, "exec: " .. tostring(r.body))
  end
  return srv
end

-- ms until GET path answers with a state not in `passing`
local function until_done(srv, path, passing, t0)
  while true do
    local _, s = srv.call("GET", path)
    if not passing[s.state] then
      assert(s.state == "started" or s.state == "active", path .. ": " .. tostring(s.state) .. " "
        .. tostring(s.errorReason))
      return (core.now() - t0) * 1000, s
    end
    daytona.sleep(0.002)
  end
end
local CREATING = { creating = true, starting = true }

local function create_ms(srv, body)
  local t0 = core.now()
  local st, b = srv.call("POST", "/sandbox", body)
  assert(st == 200, "create: " .. tostring(st) .. " " .. json.encode(b or {}))
  local ms = until_done(srv, "/sandbox/" .. b.id, CREATING, t0)
  return ms, b.id
end

local function gone(srv, id)
  srv.call("DELETE", "/sandbox/" .. id)
  while srv.call("GET", "/sandbox/" .. id) == 200 do daytona.sleep(0.01) end
end

local function figures(srv, label, base)
  local _, prepared = create_ms(srv, base)
  local per = math.max(1, MIB * 1024 // 200)
  srv.exec(prepared, ("mkdir -p /home/daytona/data && i=0; while [ $i -lt 200 ]; do "
    .. "head -c %dK /dev/urandom > /home/daytona/data/f$i; i=$((i+1)); done; "
    .. "mkdir -p /usr/local/bin 2>/dev/null; echo tool > /home/daytona/tool"):format(per))
  local snap_ms, from_ms, plain_ms, fork_ms = {}, {}, {}, {}
  for i = 1, N do
    local name = ("bench-%s-%d"):format(label:gsub("%W", ""), i)
    local t0 = core.now()
    local st, b = srv.call("POST", "/sandbox/" .. prepared .. "/snapshot", { name = name })
    assert(st == 200, "snapshot: " .. json.encode(b or {}))
    snap_ms[i] = until_done(srv, "/snapshots/" .. name, { pending = true, building = true }, t0)
    until_done(srv, "/sandbox/" .. prepared, { snapshotting = true }, t0)
    local p, pid = create_ms(srv, base)
    local f, fid = create_ms(srv, { snapshot = name })
    plain_ms[i], from_ms[i] = p, f
    t0 = core.now()
    local fst, child = srv.call("POST", "/sandbox/" .. prepared .. "/fork", {})
    assert(fst == 200, "fork: " .. json.encode(child or {}))
    fork_ms[i] = until_done(srv, "/sandbox/" .. child.id, CREATING, t0)
    for _, id in ipairs({ pid, fid, child.id }) do gone(srv, id) end
    srv.call("DELETE", "/snapshots/" .. name)
  end
  gone(srv, prepared)
  local function line(what, list) return ("  %-44s %8.1f ms (%7.1f)"):format(what, pct(list, 50), pct(list, 90)) end
  print(("%s, a prepared sandbox of %d MiB in 200 files, p50 of %d (p90):"):format(label, MIB, N))
  print(line("snapshot of the sandbox -> active", snap_ms))
  print(line("create -> started, plain (the peer)", plain_ms))
  print(line("create -> started, from the snapshot", from_ms) .. ("   %.2fx the plain create")
    :format(pct(from_ms, 50) / pct(plain_ms, 50)))
  print(line("fork -> the fork started", fork_ms) .. ("   %.2fx the plain create")
    :format(pct(fork_ms, 50) / pct(plain_ms, 50)))
end

local reg = registry.start()
local ref = reg:push_test_image("bench/test:1")
local srv = start_server()
local ok, err = pcall(function()
  figures(srv, "the host's system", { user = "root" })
  local st, snap = srv.call("POST", "/snapshots", { name = "bench-image", imageName = ref })
  assert(st == 200, "snapshot: " .. json.encode(snap or {}))
  until_done(srv, "/snapshots/" .. snap.id, { pending = true, pulling = true }, core.now())
  figures(srv, "the test image", { snapshot = "bench-image" })
end)
srv.stop()
reg:stop()
require("support.helper").cleanup()
if not ok then error(err, 0) end
