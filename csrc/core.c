/*
** core.c -- luaopen_daytona_core: the binding glue of the base.
**
** The module is created once per Lua state and cached in the registry, so
** that re-requiring it (busted does, per spec file) returns the same table
** and the same loop instead of starting a second loop.
**
** The base holds the loop, timers, signals, UDP sockets, util and process.  core.http,
** core.ws and core.server are parts in their own shared objects (dt.h):
** the first read of one requires daytona.core.<name>, whose luaopen stores
** its table in the base's table, so later reads are plain field reads.
*/
#include <string.h>

#include "dt.h"

/* the parts __index may load; anything else reads as nil */
static const char *const parts[] = {"http", "ws", "server", "x11", NULL};

static void submodule (lua_State *L, const char *name, void (*open)(lua_State *)) {
  /* stack: module, loop */
  lua_newtable(L);
  lua_pushvalue(L, -2);
  open(L);
  lua_pop(L, 1);
  lua_setfield(L, -3, name);
}

/* __index(core, key): load the part named key on first use */
static int core_index (lua_State *L) {
  const char *key = lua_tostring(L, 2);
  int i;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  for (i = 0; parts[i] != NULL; i++) {
    if (strcmp(key, parts[i]) == 0) {
      lua_getglobal(L, "require");
      lua_pushfstring(L, DT_CORE_KEY ".%s", key);
      lua_call(L, 1, 1);
      return 1;
    }
  }
  return 0;
}

LUAMOD_API int luaopen_daytona_core (lua_State *L) {
  luaL_checkversion(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, DT_CORE_KEY) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  lua_newtable(L);                 /* module */
  dt_newloop(L);                   /* module, loop */
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "_loop");    /* keeps the loop alive with the module */
  lua_pushinteger(L, DT_ABI);
  lua_setfield(L, -3, "_abi");     /* what a part checks before it attaches */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);            /* module, loop, module, loop */
  dt_open_loop(L);
  dt_open_udp(L);
  lua_pop(L, 2);
  submodule(L, "util", dt_open_util);
  submodule(L, "process", dt_open_process);
  lua_pop(L, 1);                   /* module */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, core_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, DT_CORE_KEY);
  return 1;
}
