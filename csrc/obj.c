/*
** obj.c -- what the base (daytona.core) and every part (daytona.core.http,
** .ws, .server) compile in: waitable objects, pins and the loop's ready
** list, class and failure helpers, byte buffers, and how a part attaches
** itself to the base's loop.
**
** Lua loads C modules with RTLD_LOCAL, so a part cannot call the base's
** copy of these functions; each shared object has its own, hidden (dt.h).
** They keep no state of their own -- everything they touch is the dt_loop
** or the object they are given -- so the copies are interchangeable, and
** the one loop of the base is shared by pointer.
*/
#define _GNU_SOURCE   /* struct ucred (SO_PEERCRED) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dt.h"


/* ---------------------------------------------------------------------- */
/* objects, pins and the ready list                                        */
/* ---------------------------------------------------------------------- */

void dt_obj_init (dt_loop *loop, dt_obj *o) {
  o->loop = loop;
  o->ref = LUA_NOREF;
  o->queued = 0;
  o->unpin = 0;
}

void dt_pin (lua_State *L, dt_obj *o, int idx) {
  if (o->ref != LUA_NOREF) {  /* already pinned: just cancel a pending unpin */
    o->unpin = 0;
    return;
  }
  lua_pushvalue(L, idx);
  o->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  o->unpin = 0;
  o->loop->npinned++;
}

void dt_unpin (lua_State *L, dt_obj *o) {
  if (o->ref == LUA_NOREF) return;
  if (o->queued) {  /* still to be handed to Lua: drop the pin at drain time */
    o->unpin = 1;
    return;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, o->ref);
  o->ref = LUA_NOREF;
  o->loop->npinned--;
}

void dt_signal (dt_obj *o) {
  dt_loop *loop = o->loop;
  if (o->queued || o->ref == LUA_NOREF) return;  /* unpinned: nobody to tell */
  if (loop->nready == loop->capready) {
    size_t ncap = loop->capready ? loop->capready * 2 : 64;
    dt_obj **n = realloc(loop->ready, ncap * sizeof *n);
    if (n == NULL) abort();  /* cannot lose a wake-up; out of memory is fatal */
    loop->ready = n;
    loop->capready = ncap;
  }
  loop->ready[loop->nready++] = o;
  o->queued = 1;
  /* uv_run(UV_RUN_ONCE) runs due timers *before* it polls, and would then
  ** block in poll with this wake-up pending: make it return instead. */
  uv_stop(&loop->uv);
}

void dt_release (dt_obj *o) {
  if (o->ref == LUA_NOREF) return;
  dt_signal(o);
  o->unpin = 1;
}

void dt_unqueue (dt_obj *o) {
  dt_loop *loop = o->loop;
  size_t i;
  if (!o->queued) return;
  for (i = 0; i < loop->nready; i++) {
    if (loop->ready[i] == o) {
      memmove(loop->ready + i, loop->ready + i + 1,
              (loop->nready - i - 1) * sizeof *loop->ready);
      loop->nready--;
      break;
    }
  }
  o->queued = 0;
}

/* ---------------------------------------------------------------------- */
/* helpers shared by the submodules                                        */
/* ---------------------------------------------------------------------- */

void dt_newclass (lua_State *L, const char *tname, const luaL_Reg *methods,
                  const luaL_Reg *metamethods) {
  /* expects the loop userdata at the top of the stack */
  luaL_newmetatable(L, tname);
  lua_pushvalue(L, -2);
  if (metamethods) luaL_setfuncs(L, metamethods, 1);
  else lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -3);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  /* leaves the metatable on the stack above the loop */
}

void dt_setfuncs (lua_State *L, const luaL_Reg *funcs) {
  lua_pushvalue(L, -2);   /* table, loop, table */
  lua_pushvalue(L, -2);   /* table, loop, table, loop */
  luaL_setfuncs(L, funcs, 1);
  lua_pop(L, 1);
}

int dt_fail (lua_State *L, const char *msg, const char *code) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

int dt_uvfail (lua_State *L, int uverr) {
  return dt_fail(L, uv_strerror(uverr), uv_err_name(uverr));
}

const char *dt_peer_uids (lua_State *L, int idx, int with_unix, lua_Integer uids[2]) {
  int ok1, ok2;
  uids[0] = uids[1] = -1;
  if (lua_isnil(L, idx)) return NULL;
  if (!lua_istable(L, idx) || !with_unix)
    return "option 'peer_uids' must be a table {first, last} and goes with 'unix_socket'";
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, idx, 1);
  lua_rawgeti(L, idx, 2);
  uids[0] = lua_tointegerx(L, -2, &ok1);
  uids[1] = lua_tointegerx(L, -1, &ok2);
  lua_pop(L, 2);
  if (!ok1 || !ok2 || uids[0] < 0 || uids[1] < uids[0] || uids[1] > 0xffffffffLL)
    return "option 'peer_uids' must be two uids, first <= last";
  return NULL;
}

int dt_peer_check (int fd, const lua_Integer uids[2], const char *path, char *msg, size_t size) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  if ((lua_Integer)cred.uid >= uids[0] && (lua_Integer)cred.uid <= uids[1]) return 1;
  snprintf(msg, size, "the socket %s is served by uid %lu (pid %ld), not by one of uids "
           "%lld..%lld", path, (unsigned long)cred.uid, (long)cred.pid,
           (long long)uids[0], (long long)uids[1]);
  return 0;
}

int dt_buf_add (dt_buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    char *d;
    while (ncap < b->len + n) ncap *= 2;
    d = realloc(b->data, ncap);
    if (d == NULL) return UV_ENOMEM;
    b->data = d;
    b->cap = ncap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void dt_buf_consume (dt_buf *b, size_t n) {
  if (n >= b->len) { b->len = 0; return; }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void dt_buf_free (dt_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}


/* ---------------------------------------------------------------------- */
/* parts                                                                   */
/* ---------------------------------------------------------------------- */

/* Push the base's module table, requiring daytona.core when this part is
** required first. */
static void push_core (lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, DT_CORE_KEY) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, DT_CORE_KEY);
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    luaL_error(L, "require '" DT_CORE_KEY "' did not return a table");
}

int dt_open_part (lua_State *L, const char *name, void (*open)(lua_State *L),
                  void (*shutdown)(dt_loop *loop)) {
  dt_loop *loop;
  lua_Integer abi;
  int isnum;
  luaL_checkversion(L);
  push_core(L);                                       /* core */
  /* raw reads: core's __index is what requires this part */
  lua_pushstring(L, name);
  if (lua_rawget(L, -2) == LUA_TTABLE) return 1;      /* core, part: cached */
  lua_pop(L, 1);
  lua_pushliteral(L, "_abi");
  lua_rawget(L, -2);
  abi = lua_tointegerx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum || abi != DT_ABI)
    return luaL_error(L, DT_CORE_KEY ".%s: built for core ABI %d but the loaded "
                      DT_CORE_KEY " has %s (two installations mixed on the "
                      "search path?)", name, DT_ABI,
                      isnum ? lua_pushfstring(L, "%I", abi) : "none");
  lua_pushliteral(L, "_loop");
  lua_rawget(L, -2);                                  /* core, loop */
  loop = (dt_loop *)luaL_testudata(L, -1, DT_LOOP_TNAME);
  if (loop == NULL || lua_rawlen(L, -1) != sizeof *loop)
    return luaL_error(L, DT_CORE_KEY ".%s: the base has no usable loop", name);
  if (loop->closing)
    return luaL_error(L, DT_CORE_KEY ".%s: the event loop is shutting down", name);
  if (shutdown != NULL) {
    int i;
    for (i = 0; i < loop->nshutdown && loop->shutdown[i] != shutdown; i++) {}
    if (i == loop->nshutdown) {
      if (loop->nshutdown == DT_MAXHOOKS)
        return luaL_error(L, DT_CORE_KEY ".%s: too many parts", name);
      loop->shutdown[loop->nshutdown++] = shutdown;
    }
  }
  lua_newtable(L);                                    /* core, loop, part */
  lua_pushvalue(L, -2);                               /* core, loop, part, loop */
  open(L);
  lua_pop(L, 1);                                      /* core, loop, part */
  lua_pushstring(L, name);
  lua_pushvalue(L, -2);
  lua_rawset(L, -5);                                  /* core[name] = part */
  return 1;
}
