/*
** dt.h -- shared declarations of the daytona.core C modules.
**
** The core is mechanism only: one libuv loop, and userdata "objects" whose
** operations run on it.  No C function here ever yields or calls back into
** Lua from a libuv/libcurl/lws callback.  Instead a callback records what
** happened in C state and *signals* its object: the object goes on the
** loop's ready list.  core.step() runs the loop once and hands the ready
** objects to the Lua scheduler, which resumes whatever task waits on them.
** The task then asks the object for its new state (a result, a chunk, an
** error) through ordinary methods.  This keeps exactly one suspension point
** (the scheduler's wait) and makes every call safe through pcall,
** metamethods and nested Lua functions.
**
** The core is split so that a program maps only the libraries it uses:
**   daytona.core         the base: loop, timers, signals, UDP, util, process
**                        (liblua + libuv); core.c, loop.c, udp.c, util.c, process.c
**   daytona.core.http    http_client.c + libcurl
**   daytona.core.ws      ws_client.c + libwebsockets
**   daytona.core.server  server.c, server_request.c, server_ws.c
**                        + libmicrohttpd + wslay
**   daytona.core.x11     x11.c, x11_keys.c, x11_image.c + libX11, libXtst,
**                        libXfixes, libpng, libjpeg
** Each part is its own shared object, loaded by `require` on first use of
** core.http / core.ws / core.server / core.x11 (an __index on the base's
** table).  Lua loads C modules with RTLD_LOCAL, so a part cannot call
** into the base:
** obj.c (the helpers below, which keep no state of their own: everything
** lives in the dt_loop they are given) is compiled into the base and into
** every part, hidden so that no copy interposes on another.  The one shared
** thing is the loop, which a part takes from the base's table (dt_open_part)
** after checking DT_ABI.
*/
#ifndef DT_H
#define DT_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#if LUA_VERSION_NUM != 504
#error "daytona.core requires Lua 5.4"
#endif

#define DT_CHUNK_SIZE (64 * 1024)   /* fixed transfer chunk for file I/O */

/* The registry key under which the base caches its module table, and the
** metatable name of the loop userdata it holds as _loop. */
#define DT_CORE_KEY "daytona.core"
#define DT_LOOP_TNAME "daytona.core.Loop"

/* The layout of dt_loop and dt_obj and the meaning of the obj.c helpers, as
** the base and its parts must agree on them: bump on any change, so that a
** part from another build refuses to load instead of corrupting the loop. */
#define DT_ABI 1

#define DT_MAXHOOKS 8

/* Everything declared below is internal to each shared object. */
#pragma GCC visibility push(hidden)

typedef struct dt_loop dt_loop;
typedef struct dt_obj dt_obj;

/*
** Base of every waitable userdata.  It must be the first member of the
** object's struct so that a dt_obj* and the userdata pointer coincide.
*/
struct dt_obj {
  dt_loop *loop;
  int ref;            /* registry ref pinning the userdata, or LUA_NOREF */
  int queued;         /* on the ready list already */
  int unpin;          /* drop the pin when next drained from the ready list */
};

struct dt_loop {
  uv_loop_t uv;
  uv_timer_t step_timer;   /* bounds one step() when given a timeout */
  dt_obj **ready;          /* objects signalled since the last drain */
  size_t nready, capready;
  int npinned;             /* objects pinned: C holds their pointer */
  void *http;              /* http_client.c state, created lazily */
  void *ws;                /* ws_client.c state, created lazily */
  void *proc;              /* process.c state, created lazily */
  int closing;
  /* the loaded parts' shutdown functions, called by the loop's __gc (a
  ** part's code stays mapped until then: Lua unloads C libraries last) */
  void (*shutdown[DT_MAXHOOKS])(dt_loop *loop);
  int nshutdown;
};

/* --- loop.c ------------------------------------------------------------ */

/* The loop of the daytona.core module; every core function has the loop
** userdata as its first upvalue. */
#define dt_loopup(L) ((dt_loop *)lua_touserdata(L, lua_upvalueindex(1)))

/* Create the loop userdata (once per Lua state, by luaopen_daytona_core). */
dt_loop *dt_newloop (lua_State *L);

/* --- obj.c: compiled into the base and into every part ------------------ */

/* Set up the dt_obj part of a fresh userdata (not pinned, not queued). */
void dt_obj_init (dt_loop *loop, dt_obj *o);

/* Pin the userdata at stack index idx while C code holds its pointer. */
void dt_pin (lua_State *L, dt_obj *o, int idx);

/* Put o on the ready list (once until drained).  Callable from any loop
** callback; never touches Lua. */
void dt_signal (dt_obj *o);

/* Signal o and drop its pin when the ready list is next drained: the last
** thing a finished operation does, once no C library holds o any more. */
void dt_release (dt_obj *o);

/* Unpin now (only from a Lua-called function, with L). */
void dt_unpin (lua_State *L, dt_obj *o);

/* Take o off the ready list (used by __gc of an object never drained). */
void dt_unqueue (dt_obj *o);

/* Create a metatable named tname with the given methods in __index and the
** loop as upvalue of each; leaves it on the stack. */
void dt_newclass (lua_State *L, const char *tname, const luaL_Reg *methods,
                  const luaL_Reg *metamethods);

/* With the stack as ..., table, loop: set funcs into the table with the
** loop as their upvalue, leaving the stack unchanged. */
void dt_setfuncs (lua_State *L, const luaL_Reg *funcs);

/* Push nil, message, code (code is a stable upper-case string such as
** "ECONNREFUSED" or "ETIMEDOUT"); returns 3. */
int dt_fail (lua_State *L, const char *msg, const char *code);

/* dt_fail from a libuv error number. */
int dt_uvfail (lua_State *L, int uverr);

/* The peer_uids option of a client on a unix socket (http, ws), the value
** at stack index idx: nil gives uids -1, -1 (no check); else {first, last}.
** Returns NULL, or what is wrong with it for the caller's argument error.
** Leaves the stack as found. */
const char *dt_peer_uids (lua_State *L, int idx, int with_unix, lua_Integer uids[2]);

/* Whether the listener of the connected unix socket fd at path has a uid in
** uids[0]..uids[1] (SO_PEERCRED, recorded by the kernel at its listen()): a
** path can name a socket someone else put there.  1: it has; 0: not, msg
** says whose it is; -1: the credentials cannot be read (errno). */
int dt_peer_check (int fd, const lua_Integer uids[2], const char *path, char *msg, size_t size);

/* A growable byte buffer. */
typedef struct dt_buf {
  char *data;
  size_t len, cap;
} dt_buf;
int dt_buf_add (dt_buf *b, const void *p, size_t n);   /* 0 or UV_ENOMEM */
void dt_buf_consume (dt_buf *b, size_t n);             /* drop n bytes from front */
void dt_buf_free (dt_buf *b);

/* The body of a part's luaopen_daytona_core_<name>: finds the base (requiring
** daytona.core if need be), checks it was built with the same DT_ABI, and
** returns core[name], creating it on first call: a table filled by open
** with the stack as ..., table, loop; shutdown (or NULL) is called by the
** loop's __gc.  Returns 1, the part's table on the stack. */
int dt_open_part (lua_State *L, const char *name, void (*open)(lua_State *L),
                  void (*shutdown)(dt_loop *loop));

/* --- the submodules.  Each is called with the stack holding
**   ..., its table, the loop userdata
** fills the table with its functions (the loop as their upvalue), registers
** its classes with dt_newclass, and leaves the stack as it found it. ----- */
void dt_open_loop (lua_State *L);
void dt_open_http (lua_State *L);
void dt_open_ws (lua_State *L);
void dt_open_server (lua_State *L);
void dt_open_process (lua_State *L);
void dt_open_util (lua_State *L);
void dt_open_udp (lua_State *L);

/* Called from the loop's __gc before uv_loop_close, so each submodule can
** release library state (curl multi, lws context).  The parts' ones reach
** the loop through dt_open_part. */
void dt_http_shutdown (dt_loop *loop);
void dt_ws_shutdown (dt_loop *loop);
void dt_process_shutdown (dt_loop *loop);

#pragma GCC visibility pop

#endif
