/*
** dtlua.h -- the C API for programs that embed Lua and dtlua's core.
**
** A host links the core's base (libdtlua-core, `pkg-config --cflags --libs
** dtlua`), preloads it and lets `require "daytona"` find the rest:
**
**   luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
**   lua_pushcfunction(L, luaopen_daytona_core);
**   lua_setfield(L, -2, "daytona.core");
**   lua_pop(L, 1);
**
** The core's parts (daytona.core.http, .ws, .server) are shared objects
** loaded on first use from package.cpath, and the SDK is Lua on
** package.path: `pkg-config --variable=cmoddir dtlua` and `--variable=lmoddir
** dtlua` say where `make install` put them.  examples/host/host.c is a whole
** host with its own frame loop.
*/
#ifndef DTLUA_H
#define DTLUA_H

#include <lua.h>

#if LUA_VERSION_NUM != 504
#error "dtlua needs Lua 5.4"
#endif

/* the release; `make dist` and the rockspecs take theirs from here */
#define DTLUA_VERSION_MAJOR 0
#define DTLUA_VERSION_MINOR 1
#define DTLUA_VERSION_PATCH 0
#define DTLUA_VERSION "0.1.0"

/* Opens the core's base (loop, timers, signals, util, process) and returns
** its table, as `require "daytona.core"` does; a second call in the same
** state returns the same table. */
LUAMOD_API int luaopen_daytona_core (lua_State *L);

#endif
