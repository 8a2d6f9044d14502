--- Big file: upload a local file to the sandbox, then download it back to
-- another local file; prints the seconds of each call.
--   dtlua bigfile.lua SANDBOX_ID LOCAL_SRC REMOTE_PATH LOCAL_DST
local c = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local id, src, remote, dst = c.str_arg(1, "sandbox id"), c.str_arg(2, "local source"),
  c.str_arg(3, "remote path"), c.str_arg(4, "local destination")

local sb = daytona.new():get(id)
local t0 = c.now()
sb.fs:upload_file(src, remote)
local t1 = c.now()
sb.fs:download_file(remote, dst)
local t2 = c.now()
c.out("up_s", t1 - t0)
c.out("down_s", t2 - t1)
