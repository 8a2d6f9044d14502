/*
** server.c -- the Server object of daytona.core.server (server.h lists the
** part's files): listening, libmicrohttpd driven by our libuv loop, the
** connections with their limits, eviction and timeouts, the accept queue.
**
** MHD runs in "external epoll" mode (MHD_USE_EPOLL, no thread of its own):
** a uv_poll_t watches MHD's epoll descriptor and a uv_timer_t fires at
** MHD_get_timeout(); both call MHD_run().  Lua changes (a response, a read
** that makes room, a write) resume the connection and "kick" the timer to
** 0 ms so MHD_run() sees the change on the next loop turn.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <microhttpd.h>

#include "server.h"

#define SERVER_TNAME "daytona.core.Server"

#define DEF_BODY_BUFFER (256 * 1024)        /* request body buffered per request */
#define DEF_MEMORY_LIMIT (64 * 1024)        /* MHD's per-connection pool: bounds headers */
#define DEF_CONN_LIMIT 1024
#define DEF_TIMEOUT 60                      /* seconds of inactivity */
#define DEF_HEADER_TIMEOUT 10               /* seconds to send a request's headers */
#define DEF_IDLE_TIMEOUT 30                 /* seconds a keep-alive waits for a request */
#define DEF_PEER_LIMIT 128                  /* connections per remote peer */
#define EVICT_GRACE_MS 1000                 /* the youngest a connection is evicted at */
#define FD_MARGIN 256                       /* descriptors the process needs besides */
#define DEF_WS_MAX_MESSAGE ((size_t)64 * 1024 * 1024)
#define LINGER_MS 3000                      /* a closed connection is drained at most this long */
#define LINGER_BYTES ((size_t)4 << 20)      /* ... and at most this much */
#define LINGER_MAX 64                       /* connections drained at once */


/* ---------------------------------------------------------------------- */
/* small helpers                                                           */
/* ---------------------------------------------------------------------- */

int fail_errno (lua_State *L, int e, const char *what) {
  lua_pushnil(L);
  if (what) lua_pushfstring(L, "%s: %s", what, strerror(e));
  else lua_pushstring(L, strerror(e));
  lua_pushstring(L, uv_err_name(-e));
  return 3;
}


/* ---------------------------------------------------------------------- */
/* driving MHD from the loop                                               */
/* ---------------------------------------------------------------------- */

static void srv_run (Server *srv);

static void on_srv_timer (uv_timer_t *t) {
  srv_run((Server *)t->data);
}

static void on_srv_poll (uv_poll_t *p, int status, int events) {
  (void)status; (void)events;   /* MHD_run finds out what happened itself */
  srv_run((Server *)p->data);
}

/* Run MHD once, then arm the timer for MHD's next deadline. */
static void srv_run (Server *srv) {
  MHD_UNSIGNED_LONG_LONG ms;
  if (!srv->open) return;
  srv->conn_closed = 0;
  MHD_run(srv->d);
  if (!srv->open) return;
  if (srv->conn_closed)
    /* At the connection limit (or out of descriptors) MHD takes the listen
    ** socket out of its epoll set, and puts it back only at the start of a
    ** later MHD_run(): without this run, clients left in the backlog would
    ** wait for ever once the connections before them closed. */
    uv_timer_start(&srv->timer, on_srv_timer, 0, 0);
  else if (MHD_get_timeout(srv->d, &ms) == MHD_YES) {
    if (ms > 24u * 3600 * 1000) ms = 24u * 3600 * 1000;
    uv_timer_start(&srv->timer, on_srv_timer, (uint64_t)ms, 0);
  }
  else
    uv_timer_stop(&srv->timer);
}

/* Lua changed something MHD must act on: run MHD on the next loop turn. */
void srv_kick (Server *srv) {
  if (srv && srv->open && !srv->closing)   /* closing: the timer is being closed */
    uv_timer_start(&srv->timer, on_srv_timer, 0, 0);
}


/* ---------------------------------------------------------------------- */
/* connections: timeouts, eviction, the per-peer limit                     */
/* ---------------------------------------------------------------------- */

/* MHD's own timeout (connection_timeout) counts inactivity: a client that
** sends one header byte a second keeps it at bay for ever (slowloris), and
** a connection that is merely quiet is closed whatever it is waiting for.
** So the deadlines that matter here are ours, absolute, and only for
** connections that wait: a request's headers must be complete
** header_timeout seconds after the connection opened (or after the request
** line of a keep-alive's next request arrived), and a keep-alive gets
** idle_timeout seconds for its next request.  A request being served,
** however long it moves its body, and a WebSocket are not waiting.
**
** The connection limit would still let anyone hold every slot with
** connections that send nothing (and then the listen backlog, where the
** next client waits behind them).  So above a high-water mark (1/16 of the
** limit below it) a new connection evicts the connection that has waited
** longest, if it has waited EVICT_GRACE_MS at least (a client that just
** connected has its headers on the way); the sweep does the same while
** over the mark.  Requests being served are never evicted: a client that
** completes its headers keeps its connection.
**
** Closing a connection MHD owns is done by shutting its socket down: MHD
** reads the end of input at its next run and closes it in order, with its
** callbacks (there is no call to close one in MHD 0.9.75). */

static void on_sweep (uv_timer_t *t);

Conn *conn_of (struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? (Conn *)ci->socket_context : NULL;
}

static void conn_unwait (Conn *cn) {
  Server *srv = cn->srv;
  if (!cn->waiting) return;
  if (cn->wprev) cn->wprev->wnext = cn->wnext;
  else srv->whead = cn->wnext;
  if (cn->wnext) cn->wnext->wprev = cn->wprev;
  else srv->wtail = cn->wprev;
  cn->wprev = cn->wnext = NULL;
  cn->waiting = 0;
}

/* Arm the sweep for `due` (loop ms) unless it fires earlier already. */
static void sweep_at (Server *srv, uint64_t due) {
  uint64_t now = uv_now(&srv->loop->uv);
  if (!srv->open || srv->closing || (srv->sweep_due && srv->sweep_due <= due)) return;
  srv->sweep_due = due;
  uv_timer_start(&srv->sweep, on_sweep, due > now ? due - now : 0, 0);
}

/* cn waits (state), from now, for at most timeout_ms (0: no deadline). */
void conn_wait (Conn *cn, int state, uint64_t timeout_ms) {
  Server *srv = cn->srv;
  uint64_t now = uv_now(&srv->loop->uv);
  conn_unwait(cn);
  cn->state = state;
  cn->since = now;
  cn->deadline = timeout_ms ? now + timeout_ms : 0;
  cn->wprev = srv->wtail;
  if (srv->wtail) srv->wtail->wnext = cn;
  else srv->whead = cn;
  srv->wtail = cn;
  cn->waiting = 1;
  if (cn->deadline) sweep_at(srv, cn->deadline);
}

void conn_busy (Conn *cn, int state) {
  conn_unwait(cn);
  cn->state = state;
}

static void conn_drop (Conn *cn) {
  Server *srv = cn->srv;
  conn_unwait(cn);
  if (cn->dropped) return;
  cn->dropped = 1;
  srv->dropping++;
  shutdown(cn->fd, SHUT_RDWR);
  srv_kick(srv);
}

/* Close what is past its deadline, and evict while over the high-water
** mark; re-arm for the next deadline or eviction. */
static void sweep (Server *srv) {
  uint64_t now = uv_now(&srv->loop->uv), next = 0;
  Conn *cn, *nx;
  if (!srv->open || srv->closing) return;
  for (cn = srv->whead; cn; cn = nx) {
    uint64_t due = cn->deadline;
    nx = cn->wnext;
    if (due && due <= now) {
      srv->timed_out++;
      conn_drop(cn);
      continue;
    }
    if (srv->nconn - srv->dropping > srv->high_water) {
      if (now - cn->since >= EVICT_GRACE_MS) {
        srv->evicted++;
        conn_drop(cn);
        continue;
      }
      /* the list is in waiting order: the rest are younger still */
      if (!due || cn->since + EVICT_GRACE_MS < due) due = cn->since + EVICT_GRACE_MS;
    }
    if (due && (!next || due < next)) next = due;
  }
  if (next) sweep_at(srv, next);
}

static void on_sweep (uv_timer_t *t) {
  Server *srv = (Server *)t->data;
  srv->sweep_due = 0;
  sweep(srv);
}

/* The per-peer limit's key: an IPv4 address or an IPv6 address's /64 (a
** host usually has a whole /64: counting single addresses would count
** nothing).  None (0) for loopback and unix-domain peers: every local
** client is 127.0.0.1, dtlocal's SDKs and the sandboxes on the host
** network alike, so a limit there would only be a lower connection limit
** for all of them; the high-water eviction protects them instead. */
static int peer_key (const struct sockaddr *sa, unsigned char key[8]) {
  if (sa == NULL) return 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
    const unsigned char *a = (const unsigned char *)&s4->sin_addr;
    if (a[0] == 127) return 0;
    memcpy(key, a, 4);
    return 4;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
    const unsigned char *a = s6->sin6_addr.s6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) return 0;
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      if (a[12] == 127) return 0;
      memcpy(key, a + 12, 4);
      return 4;
    }
    memcpy(key, a, 8);
    return 8;
  }
  return 0;
}

/* MHD's accept policy: refuse a peer at its limit.  MHD has a per-IP limit
** of its own, but it counts loopback too and IPv6 by whole address.  A
** linear count: it runs only for non-loopback peers, over at most
** connection_limit entries. */
static enum MHD_Result on_accept (void *cls, const struct sockaddr *addr,
                                  socklen_t addrlen) {
  Server *srv = (Server *)cls;
  unsigned char key[8];
  int n = peer_key(addrlen > 0 ? addr : NULL, key);
  unsigned int count = 0;
  Conn *cn;
  if (n == 0 || srv->peer_limit == 0) return MHD_YES;
  for (cn = srv->conns; cn; cn = cn->next)
    if (cn->peer_len == n && memcmp(cn->peer, key, (size_t)n) == 0 && !cn->dropped &&
        ++count >= srv->peer_limit) {
      srv->refused++;
      return MHD_NO;
    }
  return MHD_YES;
}

static void conn_started (Server *srv, struct MHD_Connection *c, void **sock_ctx) {
  const union MHD_ConnectionInfo *ci;
  Conn *cn = (Conn *)calloc(1, sizeof *cn);
  *sock_ctx = cn;
  if (cn == NULL) {   /* untracked, it could never be timed out: refuse it */
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
    return;
  }
  cn->srv = srv;
  cn->c = c;
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  cn->fd = ci ? ci->connect_fd : -1;
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  cn->peer_len = peer_key(ci ? ci->client_addr : NULL, cn->peer);
  cn->next = srv->conns;
  if (srv->conns) srv->conns->prev = cn;
  srv->conns = cn;
  conn_wait(cn, CONN_HEADERS, srv->header_ms);
  if (srv->nconn - srv->dropping > srv->high_water) sweep(srv);
}

/* Lingering close.  When MHD refuses a request line or header block larger
** than its connection's pool (414, 431), it answers and closes while the
** client is still sending the rest: closing a socket with unread input
** makes the kernel answer with a reset, and a reset that reaches the client
** before it has read the answer discards it -- the client sees ECONNRESET
** (or EPIPE on its send), not the 414.  So a connection that MHD closes
** with input still unread is kept open on a duplicate of its descriptor
** (MHD notifies the close before it closes its own, and has already shut
** our sending side down, so the answer is out and followed by FIN) and
** drained until the client closes, for at most LINGER_MS and LINGER_BYTES,
** as web servers do (Apache's lingering close).  At most LINGER_MAX at
** once, so this cannot hold more descriptors than that beyond the
** connection limit; connections we cut ourselves (timeouts, eviction) and
** upgraded ones are not drained. */
typedef struct Linger {
  uv_poll_t poll;
  uv_timer_t timer;
  Server *srv;
  struct Linger *prev, *next;
  int fd, nopen, done;
  size_t drained;
} Linger;

static void linger_closed (uv_handle_t *h) {
  Linger *l = (Linger *)h->data;
  Server *srv = l->srv;
  if (--l->nopen > 0) return;
  close(l->fd);
  free(l);
  if (--srv->handles == 0) dt_release(&srv->base);
}

static void linger_end (Linger *l) {
  Server *srv = l->srv;
  if (l->done) return;
  l->done = 1;
  if (l->prev) l->prev->next = l->next;
  else srv->lingers = l->next;
  if (l->next) l->next->prev = l->prev;
  srv->nlinger--;
  uv_close((uv_handle_t *)&l->poll, linger_closed);
  uv_close((uv_handle_t *)&l->timer, linger_closed);
}

static void on_linger_read (uv_poll_t *p, int status, int events) {
  Linger *l = (Linger *)p->data;
  char buf[16384];
  (void)events;
  if (status < 0) { linger_end(l); return; }
  for (;;) {
    ssize_t n = recv(l->fd, buf, sizeof buf, 0);
    if (n > 0) {
      l->drained += (size_t)n;
      if (l->drained >= LINGER_BYTES) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    break;   /* the client closed (0) or the connection failed */
  }
  linger_end(l);
}

static void on_linger_timer (uv_timer_t *t) {
  linger_end((Linger *)t->data);
}

static void linger_start (Server *srv, int fd) {
  Linger *l;
  int unread = 0;
  if (fd < 0 || srv->nlinger >= LINGER_MAX) return;
  if (ioctl(fd, FIONREAD, &unread) != 0 || unread <= 0) return;   /* nothing to reset it */
  l = (Linger *)calloc(1, sizeof *l);
  if (l == NULL) return;
  l->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (l->fd < 0 || uv_poll_init(&srv->loop->uv, &l->poll, l->fd) != 0) {
    if (l->fd >= 0) close(l->fd);
    free(l);
    return;
  }
  uv_timer_init(&srv->loop->uv, &l->timer);
  l->poll.data = l->timer.data = l;
  l->srv = srv;
  l->nopen = 2;
  srv->handles += 2;   /* the Server outlives its handles' close callbacks */
  l->next = srv->lingers;
  if (srv->lingers) srv->lingers->prev = l;
  srv->lingers = l;
  srv->nlinger++;
  /* draining is no work that should keep a script's loop running */
  uv_unref((uv_handle_t *)&l->poll);
  uv_unref((uv_handle_t *)&l->timer);
  uv_poll_start(&l->poll, UV_READABLE, on_linger_read);
  uv_timer_start(&l->timer, on_linger_timer, LINGER_MS, 0);
}

static void conn_closed (Server *srv, Conn *cn) {
  Req *r;
  if (cn == NULL) return;
  if (srv->open && !srv->closing && !cn->dropped && cn->state != CONN_UPGRADED)
    linger_start(srv, cn->fd);
  for (r = srv->all; r; r = r->next)   /* MHD completes requests first: a guard */
    if (r->cn == cn) r->cn = NULL;
  conn_unwait(cn);
  if (cn->dropped) srv->dropping--;
  if (cn->prev) cn->prev->next = cn->next;
  else srv->conns = cn->next;
  if (cn->next) cn->next->prev = cn->prev;
  free(cn);
}

static void on_connection (void *cls, struct MHD_Connection *c, void **sock_ctx,
                           enum MHD_ConnectionNotificationCode what) {
  Server *srv = (Server *)cls;
  if (what == MHD_CONNECTION_NOTIFY_STARTED) {
    if (++srv->nconn > srv->peak_conn) srv->peak_conn = srv->nconn;
    conn_started(srv, c, sock_ctx);
  }
  else {
    srv->nconn--;
    srv->conn_closed = 1;
    conn_closed(srv, (Conn *)*sock_ctx);
    *sock_ctx = NULL;
  }
}


/* ---------------------------------------------------------------------- */
/* the server object                                                       */
/* ---------------------------------------------------------------------- */


static void srv_handle_closed (uv_handle_t *h) {
  Server *srv = (Server *)h->data;
  if (--srv->handles == 0) dt_release(&srv->base);
}

static void server_close (Server *srv) {
  Req *r;
  if (!srv->open) return;
  srv->closing = 1;
  /* libuv must forget MHD's epoll fd before MHD_stop_daemon closes it */
  uv_close((uv_handle_t *)&srv->poll, srv_handle_closed);
  uv_close((uv_handle_t *)&srv->timer, srv_handle_closed);
  uv_close((uv_handle_t *)&srv->sweep, srv_handle_closed);
  ws_close_all(srv);
  while (srv->lingers) linger_end(srv->lingers);
  /* MHD_stop_daemon() panics on a suspended connection, and resuming only
  ** raises a flag that MHD_run() acts on; our handlers refuse to park
  ** anything while closing, so a couple of runs settle it. */
  for (r = srv->all; r; r = r->next) {
    if (r->suspended && r->conn) {
      r->suspended = 0;
      MHD_resume_connection(r->conn);
    }
  }
  MHD_run(srv->d);
  MHD_run(srv->d);
  srv->open = 0;
  MHD_stop_daemon(srv->d);   /* completes every request still open */
  srv->d = NULL;
  while (srv->qhead) unlink_queue(srv, srv->qhead);
  /* the server may be collected before their uv handles finish closing */
  ws_forget_all(srv);
}

static int listen_socket (lua_State *L, const char *host, int port, int backlog,
                          int *fdout) {
  struct sockaddr_storage ss;
  socklen_t slen;
  int fd, one = 1;
  memset(&ss, 0, sizeof ss);
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0)
    slen = sizeof(struct sockaddr_in);
  else if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0)
    slen = sizeof(struct sockaddr_in6);
  else
    return dt_fail(L, "host must be a numeric IPv4 or IPv6 address", "EINVAL");
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail_errno(L, errno, "socket");
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, slen) != 0 || listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    return fail_errno(L, e, host);
  }
  slen = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &slen);
  *fdout = fd;
  return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                 : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* A listening unix-domain socket at path (which must not exist yet). */
static int listen_unix (lua_State *L, const char *path, int backlog, int *fdout) {
  struct sockaddr_un sun;
  int fd;
  if (strlen(path) == 0 || strlen(path) >= sizeof sun.sun_path)
    return dt_fail(L, "socket path empty or too long", "EINVAL");
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path));
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail_errno(L, errno, "socket");
  if (bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0 || listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    return fail_errno(L, e, path);
  }
  *fdout = fd;
  return 0;
}

/* A unix-domain stream socket handed over already bound (dtlocal binds it
** in a directory only it can write and passes it into the sandbox: no path
** a sandbox can change is ever followed to reach the daemon).  listen() is
** called here, by the process that will serve it, because the kernel
** records the listener's credentials at listen(): those are what a client
** reads with SO_PEERCRED, so the host can check it reached this sandbox. */
static int listen_fd (lua_State *L, lua_Integer fd, int backlog, int *fdout) {
  int domain = 0, type = 0, flags;
  socklen_t len = sizeof domain;
  if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
    return fail_errno(L, errno, "fd");
  len = sizeof type;
  if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return fail_errno(L, errno, "fd");
  if (domain != AF_UNIX || type != SOCK_STREAM)
    return dt_fail(L, "fd is not a unix-domain stream socket", "EINVAL");
  flags = fcntl((int)fd, F_GETFL);
  if (flags < 0 || fcntl((int)fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      fcntl((int)fd, F_SETFD, FD_CLOEXEC) != 0 || listen((int)fd, backlog) != 0)
    return fail_errno(L, errno, "fd");
  *fdout = (int)fd;
  return 0;
}

/* Each connection holds a descriptor and may hold a second (a proxied
** request's upstream, a file being sent or saved), and the process needs
** some besides (FD_MARGIN).  When accept() runs out of descriptors, MHD
** stops accepting until a connection closes, before the eviction above
** ever sees the connection that would have made room: so the soft
** RLIMIT_NOFILE is raised to fit the limit (never past the hard one),
** and where it cannot be, the connection limit is lowered to fit it.
** Returns the connection limit to use. */
static lua_Integer fit_fd_limit (lua_Integer climit) {
  struct rlimit rl;
  rlim_t want = (rlim_t)climit * 2 + FD_MARGIN, have;
  lua_Integer fit;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return climit;
  have = rl.rlim_cur;
  if (have < want) {
    rl.rlim_cur = (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) have = rl.rlim_cur;
  }
  if (have >= want) return climit;
  fit = have > 2 * FD_MARGIN ? (lua_Integer)(have - FD_MARGIN) / 2 : (lua_Integer)have / 4;
  return fit < 1 ? 1 : fit;
}

static lua_Integer opt_int (lua_State *L, const char *key, lua_Integer def,
                            lua_Integer lo, lua_Integer hi) {
  lua_Integer v = def;
  if (lua_getfield(L, 1, key) != LUA_TNIL) {
    int isnum;
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < lo || v > hi)
      luaL_error(L, "bad option '%s' to 'listen' (integer in [%I, %I] expected)",
                 key, lo, hi);
  }
  lua_pop(L, 1);
  return v;
}

/* core.server.listen{host=, port= | socket= | fd=, backlog=,
**   connection_limit=, connection_timeout=, header_timeout=, idle_timeout=,
**   peer_connection_limit=, memory_limit=, body_buffer=, ws_max_message=,
**   log=} -> Server | nil, msg, code
** host is a numeric IPv4/IPv6 address ("localhost" means 127.0.0.1); with
** socket (a path) it listens on a unix-domain socket instead; with fd, on
** that inherited, bound unix-domain socket (the server owns it from then). */
static int l_listen (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  const char *host, *sockpath;
  lua_Integer port, backlog, climit, ctimeout, memlimit, bodybuf, wsmax, given_fd;
  lua_Integer htimeout, itimeout, peerlimit;
  int log, fd = -1, rc, epfd;
  Server *srv;
  const union MHD_DaemonInfo *di;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "host");
  host = luaL_optstring(L, -1, "127.0.0.1");
  lua_getfield(L, 1, "socket");
  sockpath = luaL_optstring(L, -1, NULL);
  given_fd = opt_int(L, "fd", -1, 3, 65535);
  port = opt_int(L, "port", 0, 0, 65535);
  backlog = opt_int(L, "backlog", 511, 1, 65535);
  climit = opt_int(L, "connection_limit", DEF_CONN_LIMIT, 1, 1000000);
  ctimeout = opt_int(L, "connection_timeout", DEF_TIMEOUT, 0, 86400);
  htimeout = opt_int(L, "header_timeout", DEF_HEADER_TIMEOUT, 0, 86400);
  itimeout = opt_int(L, "idle_timeout", DEF_IDLE_TIMEOUT, 0, 86400);
  peerlimit = opt_int(L, "peer_connection_limit", DEF_PEER_LIMIT, 0, 1000000);
  memlimit = opt_int(L, "memory_limit", DEF_MEMORY_LIMIT, 8192, 64 * 1024 * 1024);
  bodybuf = opt_int(L, "body_buffer", DEF_BODY_BUFFER, 1024, 1024 * 1024 * 1024);
  wsmax = opt_int(L, "ws_max_message", (lua_Integer)DEF_WS_MAX_MESSAGE, 1,
                  (lua_Integer)1 << 40);
  lua_getfield(L, 1, "log");
  log = lua_toboolean(L, -1);
  lua_pop(L, 1);
  srv = (Server *)lua_newuserdatauv(L, sizeof *srv, 0);
  memset(srv, 0, sizeof *srv);
  dt_obj_init(loop, &srv->base);
  luaL_setmetatable(L, SERVER_TNAME);
  srv->loop = loop;
  srv->body_buffer = (size_t)bodybuf;
  srv->memory_limit = (size_t)memlimit;
  srv->timeout = (unsigned int)ctimeout;
  srv->header_ms = (uint64_t)htimeout * 1000;
  srv->idle_ms = (uint64_t)itimeout * 1000;
  srv->peer_limit = (unsigned int)peerlimit;
  srv->log = log;
  srv->climit = climit = fit_fd_limit(climit);
  srv->high_water = climit - (climit / 16 > 0 ? climit / 16 : 1);
  srv->out_buffer = DEF_OUT_BUFFER;
  srv->ws_max_message = (size_t)wsmax;
  if (given_fd >= 0) rc = listen_fd(L, given_fd, (int)backlog, &fd);
  else if (sockpath) rc = listen_unix(L, sockpath, (int)backlog, &fd);
  else rc = listen_socket(L, host, (int)port, (int)backlog, &fd);
  if (fd < 0) return rc;
  srv->port = rc;   /* 0 for a unix socket */
  srv->d = MHD_start_daemon(
      MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG,
      0, on_accept, srv, on_request, srv,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
      MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,   /* see there; prints only with log */
      MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned int)climit,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ctimeout,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)memlimit,
      MHD_OPTION_END);
  if (srv->d == NULL) {
    close(fd);
    return dt_fail(L, "cannot start the HTTP daemon", "EIO");
  }
  di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_EPOLL_FD);
  epfd = di ? di->epoll_fd : -1;
  if (epfd < 0 || uv_poll_init(&loop->uv, &srv->poll, epfd) != 0) {
    MHD_stop_daemon(srv->d);
    srv->d = NULL;
    return dt_fail(L, "cannot watch the HTTP daemon", "EIO");
  }
  uv_timer_init(&loop->uv, &srv->timer);
  uv_timer_init(&loop->uv, &srv->sweep);
  srv->poll.data = srv->timer.data = srv->sweep.data = srv;
  srv->handles = 3;
  srv->open = 1;
  dt_pin(L, &srv->base, -1);
  uv_poll_start(&srv->poll, UV_READABLE, on_srv_poll);
  srv_run(srv);
  return 1;
}

static Server *check_server (lua_State *L) {
  return (Server *)luaL_checkudata(L, 1, SERVER_TNAME);
}

static int srv_port (lua_State *L) {
  lua_pushinteger(L, check_server(L)->port);
  return 1;
}

void unlink_queue (Server *srv, Req *r) {
  Req **pp;
  if (!r->queued_for_accept) return;
  for (pp = &srv->qhead; *pp; pp = &(*pp)->qnext) {
    if (*pp == r) {
      *pp = r->qnext;
      if (srv->qtail == r) {
        Req *t = srv->qhead;
        while (t && t->qnext) t = t->qnext;
        srv->qtail = t;
      }
      break;
    }
  }
  r->qnext = NULL;
  r->queued_for_accept = 0;
}

/* srv:accept() -> ServerRequest | nil (none yet) | nil, msg, "ECANCELED" */
static int srv_accept (lua_State *L) {
  Server *srv = check_server(L);
  Req *r;
  ReqObj *o;
  if (!srv->open) return dt_fail(L, "server closed", "ECANCELED");
  r = srv->qhead;
  if (r == NULL) { lua_pushnil(L); return 1; }
  o = (ReqObj *)lua_newuserdatauv(L, sizeof *o, 0);
  o->r = NULL;
  o->splice = &req_splice_ops;
  dt_obj_init(srv->loop, &o->base);
  luaL_setmetatable(L, REQUEST_TNAME);
  unlink_queue(srv, r);
  o->r = r;
  r->obj = o;
  dt_pin(L, &o->base, -1);   /* MHD holds r, which signals o */
  return 1;
}

static int srv_close (lua_State *L) {
  server_close(check_server(L));
  return 0;
}

static int srv_gc (lua_State *L) {
  Server *srv = check_server(L);
  server_close(srv);   /* only reached pinned at lua_close; else a no-op */
  return 0;
}

/* srv:stats() -> {connections, peak_connections, requests, websockets,
**   total_requests, connection_limit, evicted, timed_out, refused,
**   rejected}: for tests and monitoring */
static int srv_stats (lua_State *L) {
  Server *srv = check_server(L);
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, srv->nconn);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, srv->peak_conn);
  lua_setfield(L, -2, "peak_connections");
  lua_pushinteger(L, srv->nreq);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, srv->nws);
  lua_setfield(L, -2, "websockets");
  lua_pushinteger(L, srv->total_req);
  lua_setfield(L, -2, "total_requests");
  lua_pushinteger(L, srv->climit);
  lua_setfield(L, -2, "connection_limit");
  lua_pushinteger(L, srv->evicted);
  lua_setfield(L, -2, "evicted");
  lua_pushinteger(L, srv->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushinteger(L, srv->refused);
  lua_setfield(L, -2, "refused");
  lua_pushinteger(L, srv->rejected);
  lua_setfield(L, -2, "rejected");
  return 1;
}

static int srv_closed (lua_State *L) {
  lua_pushboolean(L, !check_server(L)->open);
  return 1;
}


/* ---------------------------------------------------------------------- */
/* registration                                                            */
/* ---------------------------------------------------------------------- */

void dt_open_server (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"listen", l_listen},
    {NULL, NULL}
  };
  static const luaL_Reg srv_methods[] = {
    {"port", srv_port}, {"accept", srv_accept}, {"close", srv_close},
    {"stats", srv_stats}, {"closed", srv_closed},
    {NULL, NULL}
  };
  static const luaL_Reg srv_meta[] = {
    {"__gc", srv_gc}, {"__close", srv_close},
    {NULL, NULL}
  };
  /* stack: table, loop */
  dt_newclass(L, SERVER_TNAME, srv_methods, srv_meta);
  lua_pop(L, 1);
  server_request_open(L);
  server_ws_open(L);
  dt_setfuncs(L, funcs);
}

/* daytona.core.server: the part's files as their own shared object, so
** that only a program that uses core.server maps libmicrohttpd and wslay
** (see dt.h). */
LUAMOD_API int luaopen_daytona_core_server (lua_State *L) {
  return dt_open_part(L, "server", dt_open_server, NULL);
}
