-- examples/host/script.lua: work for a host with its own frame loop.
--
--     build/bin/dtlua-host examples/host/script.lua     (from the checkout)
--
-- host.c runs this chunk once, then pumps `daytona.loop.step(0)` once per
-- 16 ms frame and prints how long the longest step took. So this chunk must
-- not wait for anything itself: it starts a server, spawns tasks and
-- returns; the tasks make progress a little in every frame.
--
-- The tasks: an HTTP server (the core's, on 127.0.0.1) streams a 64 MiB
-- body, an HTTP client downloads it chunk by chunk, and meanwhile a child
-- process runs and its output is read line by line.
local daytona = require "daytona"                      -- loaded by the host already
local server = require "daytona.runtime.server"
local http = require "daytona.runtime.http"
local process = require "daytona.runtime.process"
local now = require("daytona.core").now

local SIZE = 64 * 1024 * 1024
local PATTERN = "0123456789abcdef"
local BLOCK = PATTERN:rep(4096)                        -- 64 KiB
local TWICE = PATTERN:rep(2)

local started = now()

-- The server: one route, the body produced 64 KiB at a time. Each write
-- waits (yields) while the core's send buffer is full, so one frame never
-- produces more than that buffer holds.
local srv = server.listen{ port = 0, handler = function(req, res)
  if req.path ~= "/big" then return res:send(404, { ["content-type"] = "text/plain" }, "not found\n") end
  local left = SIZE
  res:stream(200, { ["content-type"] = "application/octet-stream", ["content-length"] = tostring(SIZE) },
    function()
      if left == 0 then return nil end
      local n = left < #BLOCK and left or #BLOCK
      left = left - n
      return n == #BLOCK and BLOCK or BLOCK:sub(1, n)
    end)
end }
print("host script: serving 64 MiB at " .. srv.url .. "/big")

-- The download: read the body as it comes, checking its length and bytes.
local download = daytona.spawn(function()
  local s <close> = assert(http.stream{ url = srv.url .. "/big", timeout = 120 })
  assert(s.status == 200, "status " .. s.status)
  local bytes, chunks = 0, 0
  for chunk in s:chunks() do
    -- the body repeats PATTERN: each chunk starts where it falls in it
    local at, n = bytes % #PATTERN, math.min(8, #chunk)
    if chunk:sub(1, n) ~= TWICE:sub(at + 1, at + n) then
      error(("wrong bytes at offset %d"):format(bytes))
    end
    bytes, chunks = bytes + #chunk, chunks + 1
  end
  assert(bytes == SIZE, ("got %d bytes, expected %d"):format(bytes, SIZE))
  local secs = now() - started
  print(("host script: downloaded %d bytes in %d chunks, %.2f s (%.0f MiB/s)")
    :format(bytes, chunks, secs, bytes / 1048576 / secs))
  return bytes
end)

-- A child process alongside, its output read line by line as it comes.
local child = daytona.spawn(function()
  local p <close> = assert(process.spawn({ "sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.05; done" },
    { stdin = "null", stderr = "stdout" }))
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  local code = p:wait(10)
  print(("host script: the child printed %d lines (%s) and exited with %d")
    :format(#lines, table.concat(lines, ", "), code))
  return code
end)

-- When both are done, stop the server (it keeps the loop alive until
-- closed) so the host's loop ends; report a failure of either.
daytona.spawn(function()
  local ok, err = pcall(function()
    download:wait()
    child:wait()
  end)
  srv:close()
  if ok then
    print("host script: done")
  else
    -- the host only pumps the loop: a failure is ours to report
    io.stderr:write("host script: failed: ", tostring(err), "\n")
  end
end)
