/*
** loop.c -- the one libuv loop, the ready list, timers and signal watchers.
**
** step(timeout_ms, out) runs the loop once and stores the objects signalled
** since the last call into the array `out`; the Lua scheduler resumes the
** tasks waiting on them.
*/
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "dt.h"

#define LOOP_TNAME DT_LOOP_TNAME
#define TIMER_TNAME "daytona.core.Timer"
#define SIGNAL_TNAME "daytona.core.Signal"


/* ---------------------------------------------------------------------- */
/* draining the ready list (the objects' side of it is in obj.c)          */
/* ---------------------------------------------------------------------- */

/* Move the ready list into the array at index out; returns how many. */
static lua_Integer drain (lua_State *L, dt_loop *loop, int out) {
  lua_Integer n = 0;
  size_t i;
  for (i = 0; i < loop->nready; i++) {
    dt_obj *o = loop->ready[i];
    o->queued = 0;
    if (o->ref == LUA_NOREF) continue;
    lua_rawgeti(L, LUA_REGISTRYINDEX, o->ref);
    lua_rawseti(L, out, ++n);
    if (o->unpin) {
      luaL_unref(L, LUA_REGISTRYINDEX, o->ref);
      o->ref = LUA_NOREF;
      o->unpin = 0;
      loop->npinned--;
    }
  }
  loop->nready = 0;
  lua_pushnil(L);   /* terminate the array so stale entries are not read */
  lua_rawseti(L, out, n + 1);
  return n;
}


/* ---------------------------------------------------------------------- */
/* the loop's own functions                                                */
/* ---------------------------------------------------------------------- */

static void on_step_timer (uv_timer_t *t) {
  (void)t;  /* only wakes uv_run up */
}

/* core.step(timeout_ms, out) -> n
** timeout_ms < 0 waits for the next event, 0 polls, > 0 waits at most that
** long.  Returns the number of ready objects stored in out[1..n]. */
static int l_step (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  lua_Integer timeout = luaL_optinteger(L, 1, -1);
  uv_run_mode mode;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (loop->nready > 0 || timeout == 0)
    mode = UV_RUN_NOWAIT;
  else {
    mode = UV_RUN_ONCE;
    if (timeout > 0) uv_timer_start(&loop->step_timer, on_step_timer,
                                    (uint64_t)timeout, 0);
  }
  uv_run(&loop->uv, mode);
  uv_timer_stop(&loop->step_timer);
  lua_pushinteger(L, drain(L, loop, 2));
  return 1;
}

/* core.alive() -> boolean: whether any object still has work under way */
static int l_alive (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  lua_pushboolean(L, loop->npinned > 0 || loop->nready > 0);
  return 1;
}

/* core.fd() -> integer: a descriptor that becomes readable when the loop
** has work; for hosts that poll it from their own frame loop. */
static int l_fd (lua_State *L) {
  lua_pushinteger(L, uv_backend_fd(&dt_loopup(L)->uv));
  return 1;
}

/* core.backend_timeout() -> ms until the next timer, -1 if none */
static int l_backend_timeout (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  lua_pushinteger(L, loop->nready ? 0 : uv_backend_timeout(&loop->uv));
  return 1;
}

/* core.now() -> seconds (float), monotonic */
static int l_now (lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static int loop_gc (lua_State *L) {
  dt_loop *loop = (dt_loop *)luaL_checkudata(L, 1, LOOP_TNAME);
  int i;
  if (loop->closing) return 0;
  loop->closing = 1;
  for (i = 0; i < loop->nshutdown; i++) loop->shutdown[i](loop);   /* the parts' */
  dt_process_shutdown(loop);
  uv_close((uv_handle_t *)&loop->step_timer, NULL);
  uv_run(&loop->uv, UV_RUN_NOWAIT);
  uv_loop_close(&loop->uv);   /* may report EBUSY at exit: nothing to do */
  free(loop->ready);
  loop->ready = NULL;
  return 0;
}


/* ---------------------------------------------------------------------- */
/* timers                                                                  */
/* ---------------------------------------------------------------------- */

typedef struct Timer {
  dt_obj base;
  uv_timer_t h;
  int active;   /* handle initialised and not yet closed */
  int fired;
} Timer;

static void timer_closed (uv_handle_t *h) {
  Timer *t = (Timer *)h->data;
  dt_release(&t->base);
}

static void timer_fire (uv_timer_t *h) {
  Timer *t = (Timer *)h->data;
  t->fired = 1;
  t->active = 0;
  dt_signal(&t->base);   /* now, not at the close callback an iteration later */
  uv_close((uv_handle_t *)&t->h, timer_closed);
}

/* core.timer(ms) -> Timer, already running; signals once when it fires */
static int l_timer (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  lua_Integer ms = luaL_checkinteger(L, 1);
  Timer *t = (Timer *)lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  dt_obj_init(loop, &t->base);
  luaL_setmetatable(L, TIMER_TNAME);
  if (ms < 0) ms = 0;
  uv_timer_init(&loop->uv, &t->h);
  t->h.data = t;
  dt_pin(L, &t->base, -1);
  t->active = 1;
  uv_timer_start(&t->h, timer_fire, (uint64_t)ms, 0);
  return 1;
}

static int timer_done (lua_State *L) {
  Timer *t = (Timer *)luaL_checkudata(L, 1, TIMER_TNAME);
  lua_pushboolean(L, t->fired);
  return 1;
}

/* t:close(): stop a timer that has not fired; idempotent */
static int timer_close (lua_State *L) {
  Timer *t = (Timer *)luaL_checkudata(L, 1, TIMER_TNAME);
  if (t->active) {
    t->active = 0;
    uv_timer_stop(&t->h);
    uv_close((uv_handle_t *)&t->h, timer_closed);
  }
  return 0;
}


/* ---------------------------------------------------------------------- */
/* signal watchers (SIGINT for dtlua's Ctrl-C, SIGTERM for servers)         */
/* ---------------------------------------------------------------------- */

typedef struct Signal {
  dt_obj base;
  uv_signal_t h;
  int active;
  int signum;
  int borrowed;             /* close puts `saved` back */
  int fallback;             /* counts only while no other watcher has it */
  struct sigaction saved;   /* the disposition found by a borrowing watcher */
  lua_Integer count;   /* deliveries not yet taken */
} Signal;

/* Watchers that are not borrowing, per signal: one of those means the
** program handles the signal through the loop, so nobody may borrow it. */
static int watching[NSIG];

static void signal_closed (uv_handle_t *h) {
  dt_release(&((Signal *)h->data)->base);
}

static void signal_fire (uv_signal_t *h, int signum) {
  Signal *s = (Signal *)h->data;
  /* the program watches it itself: the fallback (dtlua's SIGTERM) stands back */
  if (s->fallback && watching[signum] > 0) return;
  s->count++;
  dt_signal(&s->base);
}

static int signum_of (lua_State *L, int idx) {
  static const char *const names[] = {"INT", "TERM", "HUP", "QUIT", "USR1",
                                      "USR2", "WINCH", "CHLD", NULL};
  static const int nums[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
                             SIGUSR2, SIGWINCH, SIGCHLD};
  return nums[luaL_checkoption(L, idx, NULL, names)];
}

/* core.signal(name [, "borrow"]) -> Signal watcher for "INT", "TERM", ...
** A borrowing watcher is for the length of one wait: closing it restores
** the disposition it found (lua.c's SIGINT handler, a host's, the default)
** where libuv would leave the default.  It is not made (nil) when the
** signal is ignored (a background job must stay deaf to Ctrl-C) or when a
** watcher that is not borrowing has it (dtlua, a server).
** A "fallback" watcher counts deliveries only while no "watch" watcher
** has the signal: dtlua's SIGTERM, which ends a script cleanly unless the
** script handles SIGTERM itself (a server with its own graceful stop). */
static int l_signal (lua_State *L) {
  static const char *const modes[] = {"watch", "borrow", "fallback", NULL};
  dt_loop *loop = dt_loopup(L);
  int signum = signum_of(L, 1);
  int mode = luaL_checkoption(L, 2, "watch", modes);
  int borrow = mode == 1;
  struct sigaction found;
  Signal *s;
  int rc;
  if (borrow) {
    sigaction(signum, NULL, &found);
    if (found.sa_handler == SIG_IGN || watching[signum] > 0) {
      luaL_pushfail(L);
      return 1;
    }
  }
  s = (Signal *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->signum = signum;
  if ((s->borrowed = borrow)) s->saved = found;
  s->fallback = mode == 2;
  dt_obj_init(loop, &s->base);
  luaL_setmetatable(L, SIGNAL_TNAME);
  uv_signal_init(&loop->uv, &s->h);
  s->h.data = s;
  /* an idle watcher must not keep a script alive: unref the handle */
  rc = uv_signal_start(&s->h, signal_fire, signum);
  if (rc < 0) {
    uv_close((uv_handle_t *)&s->h, NULL);
    return dt_uvfail(L, rc);
  }
  uv_unref((uv_handle_t *)&s->h);
  dt_pin(L, &s->base, -1);
  loop->npinned--;   /* a watcher is not "work under way" for alive() */
  s->active = 1;
  if (mode == 0) watching[signum]++;
  return 1;
}

/* s:take() -> number of deliveries since the last take */
static int signal_take (lua_State *L) {
  Signal *s = (Signal *)luaL_checkudata(L, 1, SIGNAL_TNAME);
  lua_pushinteger(L, s->count);
  s->count = 0;
  return 1;
}

static int signal_close (lua_State *L) {
  Signal *s = (Signal *)luaL_checkudata(L, 1, SIGNAL_TNAME);
  if (s->active) {
    sigset_t block, old;
    s->active = 0;
    s->base.loop->npinned++;   /* balanced by the unpin at drain */
    /* libuv resets the last watcher's signal to SIG_DFL: keep a delivery
    ** pending until the borrowed disposition is back, so that it reaches
    ** that one and not the default */
    sigemptyset(&block);
    sigaddset(&block, s->signum);
    sigprocmask(SIG_BLOCK, &block, &old);
    uv_close((uv_handle_t *)&s->h, signal_closed);
    if (s->borrowed) sigaction(s->signum, &s->saved, NULL);
    else if (!s->fallback) watching[s->signum]--;
    sigprocmask(SIG_SETMASK, &old, NULL);
  }
  return 0;
}

/* core.raise_default(name): deliver the signal to this process with its
** default action, as if nobody caught it; for SIGINT (and TERM, HUP,
** QUIT) that ends the process, which is how a second Ctrl-C during the
** cleanup of the first ends a plain lua5.4.  Returns if the default is to
** ignore it (WINCH, CHLD). */
static int l_raise_default (lua_State *L) {
  int signum = signum_of(L, 1);
  sigset_t set;
  signal(signum, SIG_DFL);
  sigemptyset(&set);
  sigaddset(&set, signum);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(signum);
  return 0;
}


/* ---------------------------------------------------------------------- */

void dt_open_loop (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"step", l_step}, {"alive", l_alive}, {"fd", l_fd},
    {"backend_timeout", l_backend_timeout}, {"now", l_now},
    {"timer", l_timer}, {"signal", l_signal}, {"raise_default", l_raise_default},
    {NULL, NULL}
  };
  static const luaL_Reg timer_methods[] = {
    {"done", timer_done}, {"close", timer_close}, {NULL, NULL}
  };
  static const luaL_Reg timer_meta[] = {
    {"__close", timer_close}, {NULL, NULL}
  };
  static const luaL_Reg signal_methods[] = {
    {"take", signal_take}, {"close", signal_close}, {NULL, NULL}
  };
  static const luaL_Reg signal_meta[] = {
    {"__close", signal_close}, {NULL, NULL}
  };
  /* stack: module table, loop */
  dt_newclass(L, TIMER_TNAME, timer_methods, timer_meta);
  lua_pop(L, 1);
  dt_newclass(L, SIGNAL_TNAME, signal_methods, signal_meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}

/* Create the loop userdata (called once per Lua state by luaopen). */
dt_loop *dt_newloop (lua_State *L) {
  dt_loop *loop = (dt_loop *)lua_newuserdatauv(L, sizeof *loop, 0);
  int rc;
  memset(loop, 0, sizeof *loop);
  loop->closing = 1;   /* nothing to close until initialised */
  if (luaL_newmetatable(L, LOOP_TNAME)) {
    lua_pushcfunction(L, loop_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  rc = uv_loop_init(&loop->uv);
  if (rc < 0) luaL_error(L, "cannot create event loop: %s", uv_strerror(rc));
  uv_timer_init(&loop->uv, &loop->step_timer);
  uv_unref((uv_handle_t *)&loop->step_timer);
  loop->closing = 0;
  /* a write to a closed socket or pipe must be an error, not a death */
  signal(SIGPIPE, SIG_IGN);
  return loop;
}
