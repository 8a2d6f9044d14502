--- Cold script: create a sandbox, run one command, delete it (at scope
-- end, waiting until it is gone), exit. Timed as a whole process.
--   dtlua hello.lua
local client = daytona.new()
local sb <close> = client:create{}
local r = sb.process:exec("echo hello")
assert(r.exit_code == 0 and r.result == "hello\n", "unexpected output: " .. tostring(r.result))
