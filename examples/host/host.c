/*
** host.c -- a program with its own frame loop (a game, an editor) that
** embeds Lua and drives dtlua's tasks without ever blocking a frame.
**
**   build/bin/dtlua-host examples/host/script.lua
**
** Outside the checkout, after `make install`, it builds like any host:
**
**   cc host.c $(pkg-config --cflags --libs dtlua) -o host
**
** Each frame: pump the daytona loop with step(0) (runs whatever is ready and
** returns at once), do the frame's own work, then sleep until the next frame
** boundary in poll() on daytona.loop.fd(), so I/O that arrives mid-sleep is
** handled on the next frame.  It prints how long the longest step took.
*/
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include <dtlua.h>   /* luaopen_daytona_core */

#define FRAME_MS 16

static double now_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The core's base is linked in; its parts (core.http, core.server, ...) are
** shared objects loaded on first use from <prefix>/lib/lua/5.4, <prefix>
** being the directory above this binary's: put that first on cpath. */
static void set_cpath (lua_State *L) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  char *slash;
  if (n <= 0) return;
  exe[n] = '\0';
  if ((slash = strrchr(exe, '/')) == NULL) return;
  *slash = '\0';                                   /* .../bin */
  if ((slash = strrchr(exe, '/')) == NULL) return;
  *slash = '\0';                                   /* prefix */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/lib/lua/5.4/?.so;%s", exe, lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 2);
}

/* Call daytona.loop.<name>(args) leaving nres results; exits on error. */
static void loopcall (lua_State *L, const char *name, int nargs, int nres) {
  lua_getglobal(L, "daytona");
  lua_getfield(L, -1, "loop");
  lua_getfield(L, -1, name);
  lua_replace(L, -3);
  lua_pop(L, 1);
  lua_insert(L, -(nargs + 1));
  if (lua_pcall(L, nargs, nres, 0) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    exit(1);
  }
}

int main (int argc, char **argv) {
  lua_State *L;
  double worst = 0, total = 0;
  long frames = 0;
  int fd;
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args]\n", argv[0]);
    return 2;
  }
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_daytona_core);
  lua_setfield(L, -2, "daytona.core");
  lua_pop(L, 1);
  set_cpath(L);
  /* the script path's tree: lua/ beside examples/ (run from a checkout) */
  (void)luaL_dostring(L, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "daytona");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_setglobal(L, "daytona");

  /* the script spawns its tasks and returns: it must not block the host */
  if (luaL_loadfile(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  {
    int i;
    for (i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc - 2, 0, 0) != LUA_OK) {
      fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
      return 1;
    }
  }
  loopcall(L, "fd", 0, 1);
  fd = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);

  for (;;) {
    double start = now_ms(), spent, left;
    int more;
    lua_pushinteger(L, 0);
    loopcall(L, "step", 1, 1);             /* never blocks */
    more = lua_toboolean(L, -1);
    lua_pop(L, 1);
    spent = now_ms() - start;
    if (spent > worst) worst = spent;
    total += spent;
    frames++;
    loopcall(L, "tasks", 0, 1);
    if (!more && lua_tointeger(L, -1) == 0) { lua_pop(L, 1); break; }
    lua_pop(L, 1);
    /* the frame's own work would go here; then wait for the next frame,
       waking early if the loop has I/O (handled next frame) */
    left = FRAME_MS - (now_ms() - start);
    if (left > 0) {
      struct pollfd p = { fd, POLLIN, 0 };
      poll(&p, 1, (int)left);
      left = FRAME_MS - (now_ms() - start);
      if (left > 0) {
        struct timespec ts = { 0, (long)(left * 1e6) };
        nanosleep(&ts, NULL);
      }
    }
  }
  printf("host: %ld frames, longest step %.2f ms, mean step %.3f ms\n",
         frames, worst, total / (double)frames);
  lua_close(L);
  return 0;
}
