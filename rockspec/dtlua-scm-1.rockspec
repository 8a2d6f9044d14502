-- The development rock, built from a checkout:
--   luarocks --lua-version 5.4 make rockspec/dtlua-scm-1.rockspec
-- (or `luarocks install` of this file, which clones source.url).  A release
-- has its own rockspec, dtlua-<version>-1.rockspec, over `make dist`'s
-- tarball.  Keep the two alike but for version and source.
rockspec_format = "3.0"
package = "dtlua"
version = "scm-1"
source = {
  url = "git+https://github.com/dtlua/dtlua.git",
  branch = "main",
}
description = {
  summary = "Daytona sandboxes driven from Lua, with a C core",
  detailed = [[
    The daytona Lua SDK (coroutine-friendly, streaming), its C core (one libuv
    loop driving libcurl, libwebsockets and libmicrohttpd), the dtlua
    interpreter and dtlocal, a local Daytona-compatible sandbox server.
  ]],
  homepage = "https://github.com/dtlua/dtlua",
  license = "MIT",
  labels = { "daytona", "sandbox", "libuv", "http", "websocket" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson >= 2.1.0",
}
-- Checked by LuaRocks before the build; their directories reach the
-- Makefile as DEP_INCDIRS / DEP_LIBDIRS.  readline is optional (the REPL's
-- line editing; the Makefile uses it when its headers are there).
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  -- a library only: Debian keeps curl/curl.h in a multiarch directory
  -- LuaRocks does not search (the Makefile gets it from pkg-config)
  LIBCURL = { library = "curl" },
  LIBWEBSOCKETS = { header = "libwebsockets.h", library = "websockets" },
  LIBMICROHTTPD = { header = "microhttpd.h", library = "microhttpd" },
  WSLAY = { header = "wslay/wslay.h", library = "wslay" },
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },
  -- daytona.core.x11 (Computer Use): XTest input, the XFixes cursor,
  -- PNG and JPEG screenshots
  X11 = { header = "X11/Xlib.h", library = "X11" },
  XTST = { header = "X11/extensions/XTest.h", library = "Xtst" },
  XFIXES = { header = "X11/extensions/Xfixes.h", library = "Xfixes" },
  -- a library only: Debian keeps png.h under libpng16/ (pkg-config finds it)
  LIBPNG = { library = "png16" },
  LIBJPEG = { header = "jpeglib.h", library = "jpeg" },
}
-- The Makefile with LuaRocks' variables: its Lua (LUA_INCDIR; dtlua finds
-- the library by pkg-config), its CFLAGS (the Makefile adds its own -std and warnings to
-- them), its LIBFLAG, and no -Werror.  `make install-run` puts the core's
-- base at LIBDIR/daytona/core.so, its parts at LIBDIR/daytona/core/*.so,
-- dtlua and dtlocal in BINDIR and the sandbox launcher in PREFIX/libexec.
build = {
  type = "make",
  -- both passes: `make install-run` depends on `all`, which must see
  -- the same flags
  variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    WERROR = "",
    DEP_INCDIRS = "$(LIBUV_INCDIR) $(LIBCURL_INCDIR) $(LIBWEBSOCKETS_INCDIR) $(LIBMICROHTTPD_INCDIR) $(WSLAY_INCDIR) $(OPENSSL_INCDIR) $(X11_INCDIR) $(XTST_INCDIR) $(XFIXES_INCDIR) $(LIBJPEG_INCDIR)",
    DEP_LIBDIRS = "$(LIBUV_LIBDIR) $(LIBCURL_LIBDIR) $(LIBWEBSOCKETS_LIBDIR) $(LIBMICROHTTPD_LIBDIR) $(WSLAY_LIBDIR) $(OPENSSL_LIBDIR) $(X11_LIBDIR) $(XTST_LIBDIR) $(XFIXES_LIBDIR) $(LIBPNG_LIBDIR) $(LIBJPEG_LIBDIR)",
  },
  install_target = "install-run",
  install_variables = {
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    LIBEXECDIR = "$(PREFIX)/libexec/dtlua",
  },
}
