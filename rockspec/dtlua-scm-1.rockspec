-- luarocks make rockspec/dtlua-scm-1.rockspec   (from a checkout; builds with the Makefile)
rockspec_format = "3.0"
package = "dtlua"
version = "scm-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "Daytona sandboxes driven from Lua, with a C core",
  detailed = [[
    The daytona Lua SDK (coroutine-friendly, streaming), its C core (one libuv
    loop driving libcurl, libwebsockets and libmicrohttpd), the dtlua
    interpreter and dtlocal, a local Daytona-compatible sandbox server.
  ]],
  license = "Apache-2.0",
}
dependencies = {
  "lua == 5.4",
}
-- C libraries (libuv, libcurl, libwebsockets, libmicrohttpd, wslay, OpenSSL)
-- come from Debian's packages (`make deps`); the Makefile finds them with
-- pkg-config. `make install` puts the core's base at LIBDIR/daytona/core.so
-- and its parts, loaded on first use, at LIBDIR/daytona/core/*.so.
build = {
  type = "make",
  build_variables = {
    CFLAGS = "-O2 -g",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    LIBEXECDIR = "$(PREFIX)/libexec/dtlua",
  },
}
