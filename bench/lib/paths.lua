--- The module paths of a bench script run by a plain lua5.4 from the
-- checkout (bench/build_cache.lua, vpn_tunnel.lua, x11_capture.lua):
--   local root, build = dofile((arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/bench/lib/paths.lua")
-- puts the checkout's lua/, spec/ and bench/lib (as bench.lib.*) and
-- DTLUA_BUILD's C modules (default build, relative to the checkout) first,
-- and returns the checkout and the build directory.
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local build = os.getenv("DTLUA_BUILD") or "build"
package.path = root .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;"
  .. package.path
if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
package.cpath = build .. "/lib/lua/5.4/?.so;" .. package.cpath
return root, build
