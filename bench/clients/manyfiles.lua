--- Many files: upload a tree of small files with one upload_files call,
-- then download it with one download_files call; prints the seconds of each.
--   dtlua manyfiles.lua SANDBOX_ID MANIFEST LOCAL_SRC_DIR REMOTE_DIR LOCAL_DST_DIR
-- MANIFEST lists the files' relative paths, one per line.
local c = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local id, manifest, src, remote, dst = c.str_arg(1, "sandbox id"), c.str_arg(2, "manifest"),
  c.str_arg(3, "local source dir"), c.str_arg(4, "remote dir"), c.str_arg(5, "local destination dir")

local rel = c.lines(manifest)
local up, down = {}, {}
for i, p in ipairs(rel) do
  up[i] = { source = src .. "/" .. p, destination = remote .. "/" .. p }
  down[i] = { source = remote .. "/" .. p, destination = dst .. "/" .. p }
end
local sb = daytona.new():get(id)
local t0 = c.now()
for _, r in ipairs(sb.fs:upload_files(up)) do
  if r.error then error("upload " .. r.destination .. ": " .. tostring(r.error), 0) end
end
local t1 = c.now()
for _, r in ipairs(sb.fs:download_files(down)) do
  if r.error then error("download " .. r.source .. ": " .. tostring(r.error), 0) end
end
local t2 = c.now()
c.out("up_s", t1 - t0)
c.out("down_s", t2 - t1)
