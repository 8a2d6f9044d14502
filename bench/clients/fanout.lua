--- Fan-out: N sandboxes created, one command run in each, deleted (waiting
-- until each is gone), all concurrently; prints the wall time.
--   dtlua fanout.lua N
local c = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local n = c.int_arg(1, "n")

local client = daytona.new()
local jobs = {}
for i = 1, n do
  jobs[i] = function()
    local sb <close> = client:create{}        -- deleted (and waited for) at scope end
    local r = c.exec_ok(sb, "echo " .. i)
    if r.result ~= i .. "\n" then error("sandbox " .. i .. ": unexpected output " .. r.result, 0) end
  end
end
local t0 = c.now()
daytona.all(jobs)
c.out("wall_s", c.now() - t0)
