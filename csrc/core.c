/*
** core.c -- luaopen_daytona_core: the binding glue.
**
** The module is created once per Lua state and cached in the registry, so
** that re-requiring it (busted does, per spec file) returns the same table
** and the same loop instead of starting a second loop.
*/
#include "dt.h"

#define CORE_KEY "daytona.core"

dt_loop *dt_newloop (lua_State *L);

static void submodule (lua_State *L, const char *name, void (*open)(lua_State *)) {
  /* stack: module, loop */
  lua_newtable(L);
  lua_pushvalue(L, -2);
  open(L);
  lua_pop(L, 1);
  lua_setfield(L, -3, name);
}

LUAMOD_API int luaopen_daytona_core (lua_State *L) {
  luaL_checkversion(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, CORE_KEY) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  lua_newtable(L);                 /* module */
  dt_newloop(L);                   /* module, loop */
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "_loop");    /* keeps the loop alive with the module */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);            /* module, loop, module, loop */
  dt_open_loop(L);
  lua_pop(L, 2);
  submodule(L, "util", dt_open_util);
  submodule(L, "http", dt_open_http);
  submodule(L, "ws", dt_open_ws);
  submodule(L, "server", dt_open_server);
  submodule(L, "process", dt_open_process);
  lua_pop(L, 1);                   /* module */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, CORE_KEY);
  return 1;
}
