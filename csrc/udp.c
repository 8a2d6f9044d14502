/*
** udp.c -- core.udp: IPv4 datagram sockets on the loop.
**
** A socket receives into a bounded queue in C (UDP_QUEUE datagrams; more
** arriving before Lua takes them are dropped, as a full socket buffer
** would) and signals its object; the task waiting on it takes them with
** recv().  send() is uv_udp_try_send: a datagram goes now or fails with
** its error (EAGAIN when the socket buffer is full), never queued.
** dtlocal's DNS filter (lua/dtlocal/control/dns.lua) is the user.
**
**   core.udp(host, port) -> Udp | nil, msg, code     bound, receiving
**   u:recv() -> data, ip, port | nil (queue empty)
**   u:send(data, ip, port) -> true | nil, msg, code
**   u:sockname() -> ip, port
**   u:dropped() -> datagrams dropped since the last call (queue full)
**   u:close()   (also __close, __gc)
*/
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "dt.h"

#define UDP_TNAME "daytona.core.Udp"
#define UDP_QUEUE 64
#define UDP_MAX 65536

typedef struct Dgram {
  char *data;
  size_t len;
  struct sockaddr_in from;
} Dgram;

typedef struct Udp {
  dt_obj base;
  uv_udp_t h;
  int active;
  Dgram q[UDP_QUEUE];
  int head, count;
  lua_Integer dropped;
  char buf[UDP_MAX];    /* one receive at a time: libuv's recv is synchronous per callback */
} Udp;

static void udp_closed (uv_handle_t *h) {
  dt_release(&((Udp *)h->data)->base);
}

static void udp_alloc (uv_handle_t *h, size_t hint, uv_buf_t *b) {
  Udp *u = (Udp *)h->data;
  (void)hint;
  b->base = u->buf;
  b->len = sizeof u->buf;
}

static void udp_recv (uv_udp_t *h, ssize_t n, const uv_buf_t *b,
                      const struct sockaddr *addr, unsigned flags) {
  Udp *u = (Udp *)h->data;
  Dgram *d;
  (void)b;
  if (n < 0 || addr == NULL || addr->sa_family != AF_INET) return;
  if ((flags & UV_UDP_PARTIAL) || u->count == UDP_QUEUE) { u->dropped++; return; }
  d = &u->q[(u->head + u->count) % UDP_QUEUE];
  d->data = malloc(n > 0 ? (size_t)n : 1);
  if (d->data == NULL) { u->dropped++; return; }
  memcpy(d->data, u->buf, (size_t)n);
  d->len = (size_t)n;
  memcpy(&d->from, addr, sizeof d->from);
  u->count++;
  dt_signal(&u->base);
}

static int addr_of (lua_State *L, int idx, struct sockaddr_in *sa) {
  const char *host = luaL_checkstring(L, idx);
  lua_Integer port = luaL_checkinteger(L, idx + 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, idx + 1, "port out of range");
  return uv_ip4_addr(host, (int)port, sa);
}

/* core.udp(host, port): bound to host:port (port 0: one the kernel picks) */
static int l_udp (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  struct sockaddr_in sa;
  Udp *u;
  int rc;
  if (addr_of(L, 1, &sa) < 0) return dt_fail(L, "not an IPv4 address", "EINVAL");
  u = (Udp *)lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, offsetof(Udp, buf));
  dt_obj_init(loop, &u->base);
  luaL_setmetatable(L, UDP_TNAME);
  uv_udp_init(&loop->uv, &u->h);
  u->h.data = u;
  u->active = 1;
  dt_pin(L, &u->base, -1);
  loop->npinned--;   /* a listening socket is not "work under way" for alive() */
  rc = uv_udp_bind(&u->h, (const struct sockaddr *)&sa, 0);
  if (rc == 0) rc = uv_udp_recv_start(&u->h, udp_alloc, udp_recv);
  if (rc < 0) {
    /* the handle lives in the userdata: it stays pinned until closed */
    u->active = 0;
    loop->npinned++;   /* balanced by the unpin at drain */
    uv_close((uv_handle_t *)&u->h, udp_closed);
    return dt_uvfail(L, rc);
  }
  uv_unref((uv_handle_t *)&u->h);
  return 1;
}

static Udp *check (lua_State *L) {
  return (Udp *)luaL_checkudata(L, 1, UDP_TNAME);
}

static int udp_recvq (lua_State *L) {
  Udp *u = check(L);
  Dgram *d;
  char ip[INET_ADDRSTRLEN];
  if (u->count == 0) { luaL_pushfail(L); return 1; }
  d = &u->q[u->head];
  u->head = (u->head + 1) % UDP_QUEUE;
  u->count--;
  lua_pushlstring(L, d->data, d->len);
  free(d->data);
  d->data = NULL;
  uv_ip4_name(&d->from, ip, sizeof ip);
  lua_pushstring(L, ip);
  lua_pushinteger(L, ntohs(d->from.sin_port));
  return 3;
}

static int udp_send (lua_State *L) {
  Udp *u = check(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  struct sockaddr_in sa;
  uv_buf_t b;
  int rc;
  if (addr_of(L, 3, &sa) < 0) return dt_fail(L, "not an IPv4 address", "EINVAL");
  if (!u->active) return dt_fail(L, "the socket is closed", "ECLOSED");
  b = uv_buf_init((char *)data, (unsigned)len);
  rc = uv_udp_try_send(&u->h, &b, 1, (const struct sockaddr *)&sa);
  if (rc < 0) return dt_uvfail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int udp_sockname (lua_State *L) {
  Udp *u = check(L);
  struct sockaddr_in sa;
  int len = sizeof sa;
  char ip[INET_ADDRSTRLEN];
  int rc;
  if (!u->active) return dt_fail(L, "the socket is closed", "ECLOSED");
  rc = uv_udp_getsockname(&u->h, (struct sockaddr *)&sa, &len);
  if (rc < 0) return dt_uvfail(L, rc);
  uv_ip4_name(&sa, ip, sizeof ip);
  lua_pushstring(L, ip);
  lua_pushinteger(L, ntohs(sa.sin_port));
  return 2;
}

static int udp_dropped (lua_State *L) {
  Udp *u = check(L);
  lua_pushinteger(L, u->dropped);
  u->dropped = 0;
  return 1;
}

static void drain_queue (Udp *u) {
  while (u->count > 0) {
    free(u->q[u->head].data);
    u->q[u->head].data = NULL;
    u->head = (u->head + 1) % UDP_QUEUE;
    u->count--;
  }
}

static int udp_close (lua_State *L) {
  Udp *u = check(L);
  if (u->active) {
    u->active = 0;
    u->base.loop->npinned++;   /* balanced by the unpin at drain */
    uv_udp_recv_stop(&u->h);
    uv_close((uv_handle_t *)&u->h, udp_closed);
  }
  drain_queue(u);
  return 0;
}

/* __gc: only reached once closed and drained (an open socket is pinned),
** or at the loop's end */
static int udp_gc (lua_State *L) {
  Udp *u = check(L);
  if (u->active) {
    /* lua_close: every finalizer runs before any memory is freed, and the
    ** loop's (created first) runs last and completes this close */
    u->active = 0;
    uv_udp_recv_stop(&u->h);
    uv_close((uv_handle_t *)&u->h, NULL);
  }
  drain_queue(u);
  dt_unqueue(&u->base);
  return 0;
}

void dt_open_udp (lua_State *L) {
  static const luaL_Reg methods[] = {
    {"recv", udp_recvq}, {"send", udp_send}, {"sockname", udp_sockname},
    {"dropped", udp_dropped}, {"close", udp_close}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__close", udp_close}, {"__gc", udp_gc}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = { {"udp", l_udp}, {NULL, NULL} };
  dt_newclass(L, UDP_TNAME, methods, meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}
