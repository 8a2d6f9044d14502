-- Packaging: the rockspecs LuaRocks accepts, `make dist`'s tarball, `make
-- rock`'s .src.rock installed offline into a fresh tree, and a C host built
-- against `make install`'s header and pkg-config file.
local helper = require "support.helper"

local ROOT = assert(os.getenv("PWD"), "PWD is not set")

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- run a shell command line from the checkout; returns its output (stdout
-- and stderr together) and exit code
local function sh(cmdline)
  local p = assert(io.popen("cd " .. sh_quote(ROOT) .. " && (" .. cmdline .. ") 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

local function ok(cmdline)
  local out, code = sh(cmdline)
  assert(code == 0, ("`%s` exited %s:\n%s"):format(cmdline, tostring(code), out))
  return out
end

local function slurp(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function load_rockspec(path)
  local env = {}
  assert(load(slurp(path), "@" .. path, "t", env))()
  return env
end

local VERSION = slurp(ROOT .. "/csrc/dtlua.h"):match('#define DTLUA_VERSION "([^"]+)"')
local RELEASE = ROOT .. "/rockspec/dtlua-" .. tostring(VERSION) .. "-1.rockspec"
local SCM = ROOT .. "/rockspec/dtlua-scm-1.rockspec"

-- A LuaRocks configuration with no servers (so nothing can be fetched) that
-- says which rocks Debian's packages provide (`make deps` installs
-- lua-cjson 2.1.0 with apt, which LuaRocks does not see by itself).
local function offline_config(dir)
  local path = dir .. "/luarocks-offline.lua"
  local f = assert(io.open(path, "w"))
  f:write('rocks_servers = {}\nrocks_provided = { ["lua-cjson"] = "2.1.0-1" }\n')
  f:close()
  return path
end

describe("packaging", function()
  teardown(helper.cleanup)

  it("has a rockspec for the header's version, alike to the scm one, that luarocks lint accepts", function()
    assert.is_truthy(VERSION and VERSION:match("^%d+%.%d+%.%d+$"), "DTLUA_VERSION in csrc/dtlua.h")
    ok("luarocks --lua-version 5.4 lint " .. sh_quote(SCM))
    ok("luarocks --lua-version 5.4 lint " .. sh_quote(RELEASE))
    local rel, scm = load_rockspec(RELEASE), load_rockspec(SCM)
    assert.are.equal(VERSION .. "-1", rel.version)
    assert.are.equal("scm-1", scm.version)
    assert.is_truthy(rel.source.url:match("/dtlua%-" .. VERSION:gsub("%.", "%%.") .. "%.tar%.gz$"), rel.source.url)
    assert.are.equal("dtlua-" .. VERSION, rel.source.dir)
    assert.is_truthy(scm.source.url:match("^git%+https://"), scm.source.url)
    -- the SDK says the same version
    assert.are.equal(VERSION, slurp(ROOT .. "/lua/daytona/init.lua"):match('_VERSION = "([^"]+)"'))
    -- what is built and how: the same in both
    for _, key in ipairs({ "dependencies", "external_dependencies", "build", "description" }) do
      assert.are.same(scm[key], rel[key], key)
    end
    assert.are.equal("MIT", rel.description.license)
    assert.are.same({ "lua >= 5.4, < 5.5", "lua-cjson >= 2.1.0" }, rel.dependencies)
    for _, lib in ipairs({ "LIBUV", "LIBCURL", "LIBWEBSOCKETS", "LIBMICROHTTPD", "WSLAY", "OPENSSL",
                        "X11", "XTST", "XFIXES", "LIBPNG", "LIBJPEG" }) do
      assert.is_table(rel.external_dependencies[lib], lib)
    end
    local vars = rel.build.variables
    assert.are.equal("$(CFLAGS)", vars.CFLAGS)          -- LuaRocks' CFLAGS, extended by the Makefile
    assert.are.equal("$(LIBFLAG)", vars.LIBFLAG)
    assert.are.equal("$(LUA_INCDIR)", vars.LUA_INCDIR)
    assert.are.equal("", vars.WERROR)
  end)

  it("make dist: a tarball of the tracked files under dtlua-<version>/, nothing from build/", function()
    local b = helper.tmpdir() .. "/build"
    ok("make -s dist BUILD=" .. sh_quote(b))
    local tarball = b .. "/dtlua-" .. VERSION .. ".tar.gz"
    local list = ok("tar -tzf " .. sh_quote(tarball))
    local files = {}
    for name in list:gmatch("[^\n]+") do
      assert.are.equal("dtlua-" .. VERSION .. "/", name:sub(1, #VERSION + 7), name)
      files[name:sub(#VERSION + 8)] = true
    end
    for _, need in ipairs({ "Makefile", "README.md", "dtlua.pc.in", "csrc/dtlua.h", "csrc/dtlua.c",
        "csrc/core.c", "csrc/dt.h", "lua/daytona/init.lua", "lua/dtlocal/cli.lua",
        "rockspec/dtlua-" .. VERSION .. "-1.rockspec", "examples/hello.lua" }) do
      assert.is_true(files[need], need .. " is not in the tarball")
    end
    for name in pairs(files) do
      assert.is_falsy(name:match("^build") or name:match("node_modules") or name:match("%.o$")
        or name:match("%.so$"), name)
    end
    -- reproducible: the same HEAD gives the same bytes
    local first = ok("sha256sum < " .. sh_quote(tarball))
    ok("make -s dist BUILD=" .. sh_quote(b))
    assert.are.equal(first, ok("sha256sum < " .. sh_quote(tarball)))
  end)

  it("make rock: the .src.rock installs offline into a fresh tree, where require 'daytona' and dtlua work", function()
    local dir = helper.tmpdir()
    local b, tree = dir .. "/build", dir .. "/tree"
    ok("make -s rock BUILD=" .. sh_quote(b))
    local rock = b .. "/dtlua-" .. VERSION .. "-1.src.rock"
    local listing = ok("unzip -l " .. sh_quote(rock))
    assert.is_truthy(listing:find("dtlua-" .. VERSION .. "-1.rockspec", 1, true), listing)
    assert.is_truthy(listing:find("dtlua-" .. VERSION .. ".tar.gz", 1, true), listing)
    -- from another directory, so nothing of the checkout is at hand
    local out = ok(("cd %s && LUAROCKS_CONFIG=%s luarocks --lua-version 5.4 --tree %s install %s")
      :format(sh_quote(dir), sh_quote(offline_config(dir)), sh_quote(tree), sh_quote(rock)))
    assert.is_truthy(out:find("is now installed", 1, true), out)
    assert.is_falsy(out:find("-Werror", 1, true), "the rock builds without -Werror")
    -- plain lua5.4 with the tree's paths
    out = ok(("cd %s && eval \"$(luarocks --lua-version 5.4 --tree %s path)\" && lua5.4 -e %s")
      :format(sh_quote(dir), sh_quote(tree), sh_quote([[
        local d = require "daytona"
        d.sleep(0.01)
        local where = package.searchpath("daytona.core.http", package.cpath)
        local core = require("daytona.core")
        print("ok", d._VERSION, where, core.http.info().version ~= nil, type(core.x11.open))]])))
    local v, where = out:match("ok\t(%S+)\t(%S+)\ttrue\tfunction")
    assert.are.equal(VERSION, v, out)
    assert.are.equal(tree, where:sub(1, #tree), where)
    -- the tree's dtlua, with the sandbox launcher beside it
    out = ok(sh_quote(tree .. "/bin/dtlua") .. " -e " .. sh_quote([[
      assert(require("dtlocal.control.runner").find_launcher(package.dtlua_prefix))
      print("dtlua", daytona._VERSION)]]))
    assert.are.equal("dtlua\t" .. VERSION .. "\n", out)
  end)

  it("make install: a C host builds with dtlua.h and `pkg-config --cflags --libs dtlua`", function()
    local dir = helper.tmpdir()
    local prefix = dir .. "/prefix"
    ok("make -s install PREFIX=" .. sh_quote(prefix))
    for _, part in ipairs({ "http", "ws", "server", "x11" }) do
      assert.is_truthy(io.open(prefix .. "/lib/lua/5.4/daytona/core/" .. part .. ".so"), part)
    end
    local pc = "PKG_CONFIG_PATH=" .. sh_quote(prefix .. "/lib/pkgconfig")
    assert.are.equal(VERSION .. "\n", ok(pc .. " pkg-config --modversion dtlua"))
    local f = assert(io.open(dir .. "/host.c", "w"))
    f:write([[
#include <stdio.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <dtlua.h>

int main (int argc, char **argv) {
  lua_State *L = luaL_newstate();
  (void)argc;
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_daytona_core);
  lua_setfield(L, -2, "daytona.core");
  lua_pop(L, 1);
  lua_pushstring(L, argv[1]);
  lua_setglobal(L, "LMOD");
  lua_pushstring(L, argv[2]);
  lua_setglobal(L, "CMOD");
  if (luaL_dostring(L,
      "package.path = LMOD .. '/?.lua;' .. LMOD .. '/?/init.lua;' .. package.path\n"
      "package.cpath = CMOD .. '/?.so;' .. package.cpath\n"
      "local d = require 'daytona'\n"
      "d.sleep(0.01)\n"
      "print('host', d._VERSION, package.searchpath('daytona.core.http', package.cpath))") != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_close(L);
  printf("%s\n", DTLUA_VERSION);
  return 0;
}
]])
    f:close()
    ok(("cd %s && %s cc -Wall -Werror host.c $(%s pkg-config --cflags --libs dtlua) -o host")
      :format(sh_quote(dir), pc, pc))
    local lmod = ok(pc .. " pkg-config --variable=lmoddir dtlua"):gsub("\n$", "")
    local cmod = ok(pc .. " pkg-config --variable=cmoddir dtlua"):gsub("\n$", "")
    assert.are.equal(prefix .. "/share/lua/5.4", lmod)
    local out = ok(sh_quote(dir .. "/host") .. " " .. sh_quote(lmod) .. " " .. sh_quote(cmod))
    assert.are.equal(("host\t%s\t%s/daytona/core/http.so\n%s\n"):format(VERSION, cmod, VERSION), out)
  end)
end)
