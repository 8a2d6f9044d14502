--- Small-op throughput: N exec("true") with CONC in flight (CONC tasks
-- taking the next operation from a shared counter); prints the wall time.
--   dtlua smallops.lua SANDBOX_ID N CONC
local c = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local id, n, conc = c.str_arg(1, "sandbox id"), c.int_arg(2, "n"), c.int_arg(3, "conc")

local sb = daytona.new():get(id)
local next_op = 0
local workers = {}
for w = 1, conc do
  workers[w] = function()
    while next_op < n do
      next_op = next_op + 1
      c.exec_ok(sb, "true")
    end
  end
end
local t0 = c.now()
daytona.all(workers)
c.out("wall_s", c.now() - t0)
