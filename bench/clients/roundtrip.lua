--- Round trip: WARMUP then N sequential exec("true") in one sandbox;
-- prints the N latencies in milliseconds.
--   dtlua roundtrip.lua SANDBOX_ID N WARMUP
local c = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local id, n, warmup = c.str_arg(1, "sandbox id"), c.int_arg(2, "n"), c.int_arg(3, "warmup")

local sb = daytona.new():get(id)
for _ = 1, warmup do c.exec_ok(sb, "true") end
local ms = {}
local now = c.now
for i = 1, n do
  local t = now()
  c.exec_ok(sb, "true")
  ms[i] = (now() - t) * 1000
end
c.out("ms", table.unpack(ms))
