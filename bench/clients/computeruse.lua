--- Computer Use: WARMUP then N of each, one after the other, on a desktop
-- already running in the sandbox: full-screen PNG screenshots, compressed
-- JPEG screenshots at scale 0.5, mouse moves (each answered with the
-- position). Prints the latencies in milliseconds under `png`, `jpeg`,
-- `move`, and the bytes of the last images under `png_bytes`, `jpeg_bytes`.
--   dtlua computeruse.lua SANDBOX_ID N WARMUP
local c = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local id, n, warmup = c.str_arg(1, "sandbox id"), c.int_arg(2, "n"), c.int_arg(3, "warmup")

local cu = daytona.new():get(id).computer_use
local now = c.now

local function series(key, fn)
  for _ = 1, warmup do fn(0) end
  local ms = {}
  for i = 1, n do
    local t = now()
    fn(i)
    ms[i] = (now() - t) * 1000
  end
  c.out(key, table.unpack(ms))
end

local png, jpeg
series("png", function() png = cu.screenshot:take_full_screen() end)
series("jpeg", function() jpeg = cu.screenshot:take_compressed{ format = "jpeg", scale = 0.5 } end)
series("move", function(i) cu.mouse:move(100 + i % 500, 100 + i % 300) end)
-- the images are real: their size as decoded
c.out("png_bytes", #png:bytes())
c.out("jpeg_bytes", #jpeg:bytes())
