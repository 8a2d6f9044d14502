/*
** http_server.c -- the HTTP/1.1 + WebSocket server: libmicrohttpd driven by
** our libuv loop, wslay for WebSocket framing.
**
** MHD runs in "external epoll" mode (MHD_USE_EPOLL, no thread of its own):
** a uv_poll_t watches MHD's epoll descriptor and a uv_timer_t fires at
** MHD_get_timeout(); both call MHD_run().  Lua changes (a response, a read
** that makes room, a write) resume the connection and "kick" the timer to
** 0 ms so MHD_run() sees the change on the next loop turn.
**
** A request (struct Req, malloc'd) is born in MHD's URI-log callback and
** handed to Lua through the server's accept queue.  Every time MHD gives us
** control over it and Lua has not decided yet, the connection is suspended
** (MHD_suspend_connection): MHD neither busy-polls nor times it out, and the
** request waits for Lua.  The body flows into a bounded buffer; when it is
** full the connection is suspended again until Lua reads, so memory stays
** flat whatever the size.  Responses are queued from inside the access
** handler only (MHD's rule), when the connection is next resumed.
**
** Two owners share a Req: MHD (until its request-completed callback) and
** the Lua wrapper (a daytona.ServerRequest, until collected).  The wrapper
** is pinned while MHD holds the Req, so MHD callbacks can always signal it.
**
** A WebSocket (daytona.ServerWebSocket) is a userdata pinned while MHD or
** libuv hold its pointer: the 101 response's upgrade callback, the
** uv_poll_t on the upgraded socket and a close-handshake timer.
**
** Two ways keep big bodies out of Lua.  A client request (http_client.c)
** may take the request body and give the streamed response body itself, in
** C, through the request's dt_splice_end (splice.h): its reads and writes
** use the same bounded buffers, and it is woken instead of Lua.  And
** req:write(file, n) queues a file segment that the content reader preads
** straight into MHD's buffer.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

#include <microhttpd.h>
#include <wslay/wslay.h>

#include "dt.h"
#include "digest.h"
#include "splice.h"

#define SERVER_TNAME "daytona.Server"
#define REQUEST_TNAME "daytona.ServerRequest"
#define WS_TNAME "daytona.ServerWebSocket"

/* Most bytes one req:read() returns, and the buffer MHD gives a streamed
** response: big bodies cross in few large pieces (fewer turns of the loop
** and of Lua, fewer syscalls), memory stays bounded per request. */
#define READ_CHUNK (4 * DT_CHUNK_SIZE)
#define DEF_BODY_BUFFER (256 * 1024)        /* request body buffered per request */
#define DEF_OUT_BUFFER (256 * 1024)         /* streamed response body buffered */
#define DEF_MEMORY_LIMIT (64 * 1024)        /* MHD's per-connection pool: bounds headers */
#define DEF_CONN_LIMIT 1024
#define DEF_TIMEOUT 60                      /* seconds of inactivity */
#define DEF_HEADER_TIMEOUT 10               /* seconds to send a request's headers */
#define DEF_IDLE_TIMEOUT 30                 /* seconds a keep-alive waits for a request */
#define DEF_PEER_LIMIT 128                  /* connections per remote peer */
#define EVICT_GRACE_MS 1000                 /* the youngest a connection is evicted at */
#define FD_MARGIN 256                       /* descriptors the process needs besides */
#define DEF_WS_MAX_MESSAGE ((size_t)64 * 1024 * 1024)
#define WS_RX_BOUND (1024 * 1024)           /* received messages queued for Lua */
#define WS_TX_BOUND (1024 * 1024)           /* sends queued before send() says "full" */
#define WS_RX_BUDGET (1024 * 1024)          /* bytes read per poll event: fairness */
#define WS_CLOSE_WAIT_MS 5000               /* wait for the peer's close frame */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef struct Server Server;
typedef struct Req Req;
typedef struct ReqObj ReqObj;
typedef struct WS WS;
typedef struct Conn Conn;

/* bytes data[off, off+len): a FIFO that compacts only when it must */
typedef struct Fifo {
  char *data;
  size_t off, len, cap;
} Fifo;

struct Server {
  dt_obj base;
  dt_loop *loop;
  struct MHD_Daemon *d;
  uv_poll_t poll;          /* MHD's epoll descriptor */
  uv_timer_t timer;        /* MHD's timeouts, and kicks after Lua changes */
  int handles;             /* uv handles not yet closed */
  int open;                /* listening */
  int closing;             /* close() under way: no new suspensions */
  int port;
  int conn_closed;         /* a connection closed during this MHD_run() */
  int log;                 /* MHD's messages to stderr */
  unsigned int timeout;    /* connection_timeout, seconds (0: none) */
  uint64_t header_ms, idle_ms;   /* header_timeout, idle_timeout (0: none) */
  unsigned int peer_limit; /* peer_connection_limit (0: none) */
  lua_Integer climit;      /* the connection limit in force */
  lua_Integer high_water;  /* above it, waiting connections are evicted */
  uv_timer_t sweep;        /* header and idle deadlines, evictions */
  uint64_t sweep_due;      /* when it fires (0: stopped) */
  Conn *conns;             /* every connection */
  Conn *whead, *wtail;     /* waiting connections, the longest waiting first */
  lua_Integer dropping;    /* shut down by us, not yet closed by MHD */
  size_t body_buffer, out_buffer, ws_max_message;
  Req *qhead, *qtail;      /* requests waiting for accept() */
  Req *all;                /* every live Req */
  WS *wss;                 /* every WebSocket not closed */
  /* figures for stats() */
  lua_Integer nreq, nws, nconn, peak_conn, total_req;
  lua_Integer evicted, timed_out, refused, rejected;
};

/* What a connection is doing, for the header and idle timeouts and the
** eviction of connections that serve nobody.  A connection is "waiting"
** (on srv->whead, oldest first) while it has not completed a request's
** headers (CONN_HEADERS), waits for the next request on a keep-alive
** (CONN_IDLE) or only feeds a body into the bin after its response was
** decided (CONN_DISCARD); a request being served (CONN_BUSY) and an
** upgraded WebSocket (CONN_UPGRADED) are never touched. */
enum { CONN_HEADERS, CONN_IDLE, CONN_DISCARD, CONN_BUSY, CONN_UPGRADED };

struct Conn {
  Server *srv;
  struct MHD_Connection *c;
  Conn *prev, *next;               /* srv->conns */
  Conn *wprev, *wnext;             /* srv->whead, while waiting */
  int waiting;
  int state;                       /* CONN_* */
  int fd;
  int dropped;                     /* we shut it down */
  uint64_t since;                  /* loop ms it started waiting */
  uint64_t deadline;               /* loop ms it is closed at if still waiting (0: never) */
  unsigned char peer[8];           /* per-peer key (see peer_key) */
  int peer_len;                    /* 0: not counted */
};

enum { PH_NEW, PH_HEADERS, PH_BODY, PH_DONE, PH_REJECTED };
enum { RESP_NONE, RESP_READY, RESP_QUEUED };
enum { OUT_NONE, OUT_WHOLE, OUT_STREAM, OUT_FILE, OUT_UPGRADE };
enum { SAVE_NONE, SAVE_RUNNING, SAVE_DONE, SAVE_FAILED };

struct Req {
  Server *srv;                     /* NULL once MHD let go */
  struct MHD_Connection *conn;     /* NULL once MHD let go */
  ReqObj *obj;                     /* the Lua wrapper, once accepted */
  Req *qnext;                      /* accept queue */
  Req *prev, *next;                /* srv->all */
  int phase;
  int suspended;                   /* we suspended the connection */
  int queued_for_accept;
  int started;                     /* Lua wants the body */
  int peer_eof;                    /* the client shut its side mid-body */
  int discard;                     /* drop the rest of the body */
  int has_body, expect100, is_head;
  int aborted;                     /* Lua closed it: drop the connection */
  int done;                        /* MHD completed the request */
  int toe;                         /* MHD's termination code */
  char *target;                    /* raw request-target, as sent */
  char *method, *path, *version;
  dt_buf headers;                  /* "name\0value\0" pairs, names lower-cased */
  int nheaders;
  char remote[64];
  /* request body */
  Fifo in;
  size_t body_buffer;              /* bound of `in` */
  int save;                        /* SAVE_* */
  int save_fd;
  int save_errno;
  uint64_t saved;
  /* response */
  int resp_state;                  /* RESP_* */
  int out_mode;                    /* OUT_* */
  struct MHD_Response *resp;
  unsigned int status;
  Fifo out;                        /* streamed body not yet taken by MHD */
  int out_file_fd;                 /* a file segment sent after `out` (write(file, n)) */
  uint64_t out_file_off, out_file_left;
  int out_file_errno;              /* reading it failed: the response was cut */
  int out_finished;
  int want_write;                  /* write() said "full": signal when room */
  uint64_t out_declared;           /* Content-Length, or MHD_SIZE_UNKNOWN */
  uint64_t out_written;
  WS *ws;                          /* the WebSocket awaiting its upgrade */
  Conn *cn;                        /* its connection, until completed */
  /* a client request moving the body / the response in C (splice.h) */
  dt_splice_peer *peer;
  int peer_dirs;                   /* DT_SPLICE_BODY | DT_SPLICE_RESPONSE */
  int peer_wants_body;             /* its read found nothing yet */
  int peer_wants_room;             /* its write found no room (or no response yet) */
};

struct ReqObj {   /* starts like a dt_splice_end */
  dt_obj base;
  const dt_splice_ops *splice;
  Req *r;
};

static const dt_splice_ops req_splice_ops;

enum { WS_PENDING, WS_OPEN, WS_CLOSED };

typedef struct WSMsg {
  struct WSMsg *next;
  int binary;
  size_t len;
  char data[];
} WSMsg;

struct WS {
  dt_obj base;
  Server *srv;                     /* NULL once torn down */
  WS *prev, *next;                 /* srv->wss */
  Req *req;                        /* until the upgrade happened */
  int state;
  int awaiting_upgrade;            /* MHD holds our pointer in the 101 response */
  int handles;                     /* uv handles open */
  int polling;                     /* poll handle initialised */
  int timer_on;                    /* close timer initialised */
  int timer_started;
  int fd;
  struct MHD_UpgradeResponseHandle *urh;
  wslay_event_context_ptr ctx;
  char *extra;                     /* bytes MHD read past the request */
  size_t extra_len, extra_off;
  size_t budget;
  size_t max_message;
  WSMsg *rxhead, *rxtail;
  size_t rx_bytes;
  int want_send;                   /* send() said "full" */
  int draining;                    /* failed it: discarding input until EOF */
  int peer_eof;
  int close_code;                  /* what receive() reports once closed */
  char close_reason[128];
  size_t close_reason_len;
  int pending_close;               /* close() before the upgrade happened */
  uint16_t pending_code;
  char pending_reason[124];
  size_t pending_reason_len;
  uv_poll_t poll;
  uv_timer_t timer;
};


/* ---------------------------------------------------------------------- */
/* small helpers                                                           */
/* ---------------------------------------------------------------------- */

static int fifo_push (Fifo *f, const void *p, size_t n) {
  if (f->off + f->len + n > f->cap) {
    if (f->off > 0) {
      memmove(f->data, f->data + f->off, f->len);
      f->off = 0;
    }
    if (f->len + n > f->cap) {
      size_t ncap = f->cap ? f->cap : 4096;
      char *d;
      while (ncap < f->len + n) ncap *= 2;
      d = (char *)realloc(f->data, ncap);
      if (d == NULL) return -1;
      f->data = d;
      f->cap = ncap;
    }
  }
  memcpy(f->data + f->off + f->len, p, n);
  f->len += n;
  return 0;
}

static void fifo_pop (Fifo *f, size_t n) {
  if (n >= f->len) { f->off = f->len = 0; return; }
  f->off += n;
  f->len -= n;
}

static void fifo_free (Fifo *f) {
  free(f->data);
  f->data = NULL;
  f->off = f->len = f->cap = 0;
}

static char *dupstr (const char *s) {
  size_t n = strlen(s) + 1;
  char *p = (char *)malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static int fail_errno (lua_State *L, int e, const char *what) {
  lua_pushnil(L);
  if (what) lua_pushfstring(L, "%s: %s", what, strerror(e));
  else lua_pushstring(L, strerror(e));
  lua_pushstring(L, uv_err_name(-e));
  return 3;
}

/* A header name is an RFC 9110 token; a value has no CR, LF or NUL. */
static int valid_name (const char *s, size_t n) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
          (c >= 'A' && c <= 'Z') || (c && strchr(extra, c))))
      return 0;
  }
  return 1;
}

static int valid_value (const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF): what we
** send as text must be valid (RFC 6455 8.1); wslay checks what we receive. */
static int valid_utf8 (const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
    else return 0;
    if (n - i - 1 < k) return 0;   /* truncated sequence */
    {
      size_t j;
      for (j = 1; j <= k; j++) {
        if ((s[i + j] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i + j] & 0x3F);
      }
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += k + 1;
  }
  return 1;
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
static void srv_kick (Server *srv) {
  if (srv && srv->open && !srv->closing)   /* closing: the timer is being closed */
    uv_timer_start(&srv->timer, on_srv_timer, 0, 0);
}

static void req_signal (Req *r) {
  if (r->obj) dt_signal(&r->obj->base);
}

static void req_suspend (Req *r) {
  if (!r->suspended) {
    MHD_suspend_connection(r->conn);
    r->suspended = 1;
  }
}

/* Let a parked connection go on; MHD calls us back with what to do next. */
static void req_wake (Req *r) {
  if (r->suspended && r->conn && r->srv && !r->srv->closing) {
    r->suspended = 0;
    MHD_resume_connection(r->conn);
    srv_kick(r->srv);
  }
}

/* Tell a splice peer to look again (it defers to its own loop turn). */
static void peer_wake (Req *r) {
  if (r->peer) r->peer->wake(r->peer);
}

/* Body bytes (or the body's end) arrived: wake whoever reads them. */
static void body_signal (Req *r) {
  if (r->peer && (r->peer_dirs & DT_SPLICE_BODY)) {
    if (r->peer_wants_body) {
      r->peer_wants_body = 0;
      peer_wake(r);
    }
  }
  else req_signal(r);
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

static Conn *conn_of (struct MHD_Connection *c) {
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
static void conn_wait (Conn *cn, int state, uint64_t timeout_ms) {
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

static void conn_busy (Conn *cn, int state) {
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

static void conn_closed (Server *srv, Conn *cn) {
  Req *r;
  if (cn == NULL) return;
  for (r = srv->all; r; r = r->next)   /* MHD completes requests first: a guard */
    if (r->cn == cn) r->cn = NULL;
  conn_unwait(cn);
  if (cn->dropped) srv->dropping--;
  if (cn->prev) cn->prev->next = cn->next;
  else srv->conns = cn->next;
  if (cn->next) cn->next->prev = cn->prev;
  free(cn);
}


/* ---------------------------------------------------------------------- */
/* MHD callbacks for requests                                              */
/* ---------------------------------------------------------------------- */

static void ws_upgrade_failed (WS *ws);

static void req_free (Req *r) {
  if (r->peer) {   /* the peer must not call through us any more */
    dt_splice_peer *peer = r->peer;
    r->peer = NULL;
    peer->gone(peer);
  }
  free(r->target);
  free(r->method);
  free(r->path);
  free(r->version);
  dt_buf_free(&r->headers);
  fifo_free(&r->in);
  fifo_free(&r->out);
  if (r->save_fd >= 0) close(r->save_fd);
  if (r->out_file_fd >= 0) close(r->out_file_fd);
  free(r);
}

static void unlink_queue (Server *srv, Req *r) {
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

/* MHD_OPTION_URI_LOG_CALLBACK: the request line is in.  The URI given here
** is the raw request-target (MHD unescapes the path it passes later), and
** what we return becomes the request's context. */
static void *on_uri (void *cls, const char *uri, struct MHD_Connection *c) {
  Server *srv = (Server *)cls;
  Req *r = (Req *)calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->srv = srv;
  r->cn = conn_of(c);
  /* a keep-alive's next request has begun: its headers get their own time */
  if (r->cn && r->cn->state == CONN_IDLE)
    conn_wait(r->cn, CONN_HEADERS, srv->header_ms);
  r->save_fd = -1;
  r->out_file_fd = -1;
  r->body_buffer = srv->body_buffer;
  r->out_declared = MHD_SIZE_UNKNOWN;
  r->target = dupstr(uri ? uri : "");
  if (r->target == NULL) { free(r); return NULL; }
  r->next = srv->all;
  if (srv->all) srv->all->prev = r;
  srv->all = r;
  srv->nreq++;
  return r;
}

/* MHD_OPTION_NOTIFY_COMPLETED: MHD is done with the request, for good or ill. */
static void on_completed (void *cls, struct MHD_Connection *c, void **req_cls,
                          enum MHD_RequestTerminationCode toe) {
  Server *srv = (Server *)cls;
  Req *r = (Req *)*req_cls;
  (void)c;
  if (r == NULL) return;
  *req_cls = NULL;
  r->done = 1;
  /* the short timeout of check_peer_eof: the client left */
  if (r->peer_eof && toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
    toe = MHD_REQUEST_TERMINATED_CLIENT_ABORT;
  r->toe = (int)toe;
  r->conn = NULL;
  r->suspended = 0;
  if (r->save == SAVE_RUNNING) {   /* the body ended before it was complete */
    close(r->save_fd);
    r->save_fd = -1;
    r->save = SAVE_FAILED;
    r->save_errno = (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED) ? ETIMEDOUT
                                                                    : ECONNRESET;
  }
  if (r->resp) {
    MHD_destroy_response(r->resp);
    r->resp = NULL;
  }
  if (r->out_file_fd >= 0) {   /* a file segment never sent in full */
    close(r->out_file_fd);
    r->out_file_fd = -1;
    r->out_file_left = 0;
  }
  if (r->ws) {
    WS *ws = r->ws;
    r->ws = NULL;
    ws->req = NULL;
    /* a 101 never sent means the upgrade callback will never come */
    if (ws->state == WS_PENDING && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
      ws_upgrade_failed(ws);
  }
  if (r->cn) {   /* a keep-alive now waits for its next request */
    if (r->cn->state != CONN_UPGRADED && !r->cn->dropped)
      conn_wait(r->cn, CONN_IDLE, srv->idle_ms);
    r->cn = NULL;
  }
  unlink_queue(srv, r);
  if (r->prev) r->prev->next = r->next;
  else if (srv->all == r) srv->all = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
  r->srv = NULL;
  srv->nreq--;
  peer_wake(r);   /* a splice peer learns that the body or the client is gone */
  if (r->obj) dt_release(&r->obj->base);   /* the wrapper frees r when collected */
  else req_free(r);
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

/* Copy what Lua will want while the connection can still tell us. */
struct hdr_ctx { Req *r; int failed; };

static enum MHD_Result copy_header (void *cls, enum MHD_ValueKind kind,
                                    const char *key, const char *value) {
  struct hdr_ctx *h = (struct hdr_ctx *)cls;
  size_t kn = strlen(key), vn = value ? strlen(value) : 0, i;
  char *p;
  (void)kind;
  if (dt_buf_add(&h->r->headers, key, kn + 1) != 0 ||
      dt_buf_add(&h->r->headers, value ? value : "", vn + 1) != 0) {
    h->failed = 1;
    return MHD_NO;
  }
  p = h->r->headers.data + h->r->headers.len - vn - 1 - kn - 1;
  for (i = 0; i < kn; i++)
    if (p[i] >= 'A' && p[i] <= 'Z') p[i] = (char)(p[i] + ('a' - 'A'));
  h->r->nheaders++;
  return MHD_YES;
}

static const char *req_header (Req *r, const char *name) {
  size_t off = 0;
  int i;
  for (i = 0; i < r->nheaders; i++) {
    const char *k = r->headers.data + off;
    const char *v = k + strlen(k) + 1;
    if (strcmp(k, name) == 0) return v;
    off = (size_t)(v + strlen(v) + 1 - r->headers.data);
  }
  return NULL;
}

/* Does the token list (comma separated, case-insensitive) hold tok? */
static int has_token (const char *list, const char *tok) {
  size_t tn = strlen(tok);
  const char *p = list;
  while (p && *p) {
    const char *e;
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    e = p;
    while (*e && *e != ',') e++;
    {
      const char *t = e;
      while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
      if ((size_t)(t - p) == tn && strncasecmp(p, tok, tn) == 0) return 1;
    }
    p = e;
  }
  return 0;
}

static int req_capture (Req *r, struct MHD_Connection *c, const char *url,
                        const char *method, const char *version) {
  struct hdr_ctx h;
  const union MHD_ConnectionInfo *ci;
  const char *cl, *te, *ex;
  r->method = dupstr(method);
  r->path = dupstr(url);
  r->version = dupstr(version);
  if (!r->method || !r->path || !r->version) return -1;
  h.r = r;
  h.failed = 0;
  MHD_get_connection_values(c, MHD_HEADER_KIND, copy_header, &h);
  if (h.failed) return -1;
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr) {
    const struct sockaddr *sa = ci->client_addr;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
      const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
      uv_ip4_name(s4, ip, sizeof ip);
      port = ntohs(s4->sin_port);
      snprintf(r->remote, sizeof r->remote, "%s:%d", ip, port);
    }
    else if (sa->sa_family == AF_INET6) {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
      uv_ip6_name(s6, ip, sizeof ip);
      port = ntohs(s6->sin6_port);
      snprintf(r->remote, sizeof r->remote, "[%s]:%d", ip, port);
    }
    else if (sa->sa_family == AF_UNIX)
      snprintf(r->remote, sizeof r->remote, "unix");
  }
  cl = req_header(r, "content-length");
  te = req_header(r, "transfer-encoding");
  ex = req_header(r, "expect");
  r->has_body = (te != NULL) || (cl != NULL && strspn(cl, "0") != strlen(cl));
  r->expect100 = ex != NULL && strcasecmp(ex, "100-continue") == 0;
  r->is_head = strcmp(method, "HEAD") == 0;
  return 0;
}

static enum MHD_Result queue_response (Req *r) {
  enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->resp);
  MHD_destroy_response(r->resp);   /* MHD holds its own reference now */
  r->resp = NULL;
  r->resp_state = RESP_QUEUED;
  return ok;
}

static void save_write (Req *r, const char *p, size_t n) {
  while (n > 0 && r->save == SAVE_RUNNING) {
    ssize_t w = write(r->save_fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      r->save_errno = errno;
      r->save = SAVE_FAILED;
      close(r->save_fd);
      r->save_fd = -1;
      r->discard = 1;     /* keep the connection in step: drop the rest */
      req_signal(r);
      return;
    }
    r->saved += (uint64_t)w;
    p += w;
    n -= (size_t)w;
  }
}

/* MHD stops reading a socket at a short read and waits for the next edge of
** its edge-triggered epoll.  A client whose last bytes and FIN arrive
** together (it gave up mid-body) gives no further edge, so MHD never sees it
** close and the request would wait for the connection timeout, the upload
** it feeds hanging open meanwhile.  So, once we have taken every body byte
** MHD passed, peek at the socket: at EOF the connection gets a 1 s timeout.
** (MHD may still hold the rest of a complete body, and then finishes it at
** once; the timeout is restored when it does.) */
static void check_peer_eof (Req *r, struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci;
  char b;
  ssize_t n;
  if (r->peer_eof) return;
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (ci == NULL) return;
  do n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n == 0) {
    r->peer_eof = 1;
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 1u);
  }
}

/* Request framing MHD 0.9.75 accepts and must not (RFC 9112 6.1, 6.3).  Of
** several Content-Lengths it takes the first, and with Transfer-Encoding
** it ignores Content-Length and reads chunked: a proxy in front that reads
** the other way ends the body elsewhere, and what MHD then reads as the
** next request was smuggled in.  A transfer coding other than chunked
** leaves the body's end to the connection's close.  And a Content-Length
** it cannot parse ("-5") gets MHD's own 400 queued, after which it calls
** the access handler all the same, whose answer goes out behind it: two
** header blocks.  The same length repeated is one length (RFC 9112 6.3). */
struct framing { const char *cl; int ncl, nte, bad; };

static enum MHD_Result check_framing (void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value) {
  struct framing *f = (struct framing *)cls;
  (void)kind;
  if (value == NULL) value = "";
  if (strcasecmp(key, "content-length") == 0) {
    size_t n = strspn(value, "0123456789"), z = strspn(value, "0");
    /* digits only, and a length MHD's 64-bit count can hold */
    if (n == 0 || value[n] != '\0' || n - (z < n ? z : n) > 19 ||
        (f->cl && strcmp(f->cl, value) != 0))
      f->bad = 1;
    f->cl = value;
    f->ncl++;
  }
  else if (strcasecmp(key, "transfer-encoding") == 0) {
    if (strcasecmp(value, "chunked") != 0) f->bad = 1;
    f->nte++;
  }
  return MHD_YES;
}

static int bad_framing (struct MHD_Connection *c) {
  struct framing f = {NULL, 0, 0, 0};
  MHD_get_connection_values(c, MHD_HEADER_KIND, check_framing, &f);
  return f.bad || f.nte > 1 || (f.nte > 0 && f.ncl > 0);
}

/* 400 and close, from the first call of the access handler: nothing of the
** body is read and no handler sees the request.  Where MHD has queued its
** own 400 already (a Content-Length it cannot parse), ours is refused and
** MHD would send its header block twice: then the 400 is written straight
** to the socket, which MHD has written nothing to yet (it writes after the
** handler's turn), the write side is shut, and MHD drops the connection
** without sending what it built. */
#define REJECT_MSG "bad request: ambiguous or malformed message framing\n"

/* The 400 written straight to a socket MHD has written nothing to yet (a
** fresh socket's buffer takes these few bytes at once); the write side is
** shut after it. */
static void send_400 (int fd) {
  char raw[256];
  int len = snprintf(raw, sizeof raw, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof REJECT_MSG - 1, REJECT_MSG);
  ssize_t n;
  do n = send(fd, raw, (size_t)len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  shutdown(fd, SHUT_WR);
}

static enum MHD_Result reject_request (Req *r, struct MHD_Connection *c) {
  static const char msg[] = REJECT_MSG;
  const union MHD_ConnectionInfo *ci;
  struct MHD_Response *resp;
  enum MHD_Result queued = MHD_NO;
  r->phase = PH_REJECTED;
  r->srv->rejected++;
  resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
  if (resp && MHD_add_response_header(resp, "Content-Type", "text/plain") == MHD_YES &&
      MHD_add_response_header(resp, "Connection", "close") == MHD_YES)
    queued = MHD_queue_response(c, MHD_HTTP_BAD_REQUEST, resp);
  if (resp) MHD_destroy_response(resp);
  if (queued == MHD_YES) return MHD_YES;
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (ci) send_400(ci->connect_fd);
  return MHD_NO;
}

/* MHD_OPTION_EXTERNAL_LOGGER.  A Content-Length MHD cannot parse ("-5",
** or past 64 bits) never reaches the access handler: MHD queues its 400
** (413) in parse_connection_headers, builds its header block, then goes on
** as if the headers were fine and builds it again when it starts the
** reply, and writes both in the same turn.  Its message about the header
** is the only moment we get: the connection being parsed is the one whose
** request line we saw (PH_NEW) and whose headers are complete (MHD answers
** their size only from then on, and a connection goes on to the access
** handler in the same turn, so at most one is in between).  It gets our
** 400 and its write side shut: MHD's own writes then fail and it closes. */
static void on_mhd_log (void *cls, const char *fmt, va_list ap) {
  Server *srv = (Server *)cls;
  if (strncmp(fmt, "Failed to parse `Content-Length'", 32) == 0 ||
      strncmp(fmt, "Too large value of 'Content-Length'", 35) == 0) {
    Req *r;
    for (r = srv->all; r; r = r->next)
      if (r->phase == PH_NEW && r->cn && !r->cn->dropped &&
          MHD_get_connection_info(r->cn->c, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE)) {
        r->phase = PH_REJECTED;
        srv->rejected++;
        send_400(r->cn->fd);
        break;
      }
  }
  if (srv->log) vfprintf(stderr, fmt, ap);
}

/* The access handler.  See the file comment for the protocol. */
static enum MHD_Result on_request (void *cls, struct MHD_Connection *c,
                                   const char *url, const char *method,
                                   const char *version, const char *data,
                                   size_t *size, void **req_cls) {
  Server *srv = (Server *)cls;
  Req *r = (Req *)*req_cls;
  if (r == NULL || srv->closing || r->aborted) return MHD_NO;
  switch (r->phase) {
    case PH_NEW:  /* the first call: the headers are in */
      r->conn = c;
      if (r->cn) conn_busy(r->cn, CONN_BUSY);
      if (bad_framing(c)) return reject_request(r, c);
      if (req_capture(r, c, url, method, version) != 0) return MHD_NO;
      r->phase = PH_HEADERS;
      r->queued_for_accept = 1;
      if (srv->qtail) srv->qtail->qnext = r;
      else srv->qhead = r;
      srv->qtail = r;
      srv->total_req++;
      dt_signal(&srv->base);
      req_suspend(r);
      return MHD_YES;
    case PH_REJECTED:  /* the 400 is queued (or MHD's): read nothing more */
      *size = 0;
      return MHD_YES;
    case PH_HEADERS:  /* resumed: Lua decided */
      if (r->resp_state == RESP_READY) {
        if (!r->has_body) { r->phase = PH_BODY; return MHD_YES; }
        /* the client waits for 100 Continue: answer instead, as RFC 9110
        ** intends; MHD then closes rather than read the body */
        if (r->expect100) return queue_response(r);
        r->discard = 1;   /* the body is on its way: drop it, keep the connection */
        r->phase = PH_BODY;
        return MHD_YES;
      }
      if (!r->started) { req_suspend(r); return MHD_YES; }
      r->phase = PH_BODY;
      return MHD_YES;
    case PH_BODY:
      if (*size > 0) {
        size_t n = *size, room, take;
        if (r->discard || r->resp_state != RESP_NONE) {
          *size = 0;
          check_peer_eof(r, c);
          return MHD_YES;
        }
        if (r->save == SAVE_RUNNING) {
          save_write(r, data, n);
          *size = 0;
          check_peer_eof(r, c);
          return MHD_YES;
        }
        room = r->in.len < r->body_buffer ? r->body_buffer - r->in.len : 0;
        take = n < room ? n : room;
        if (take > 0) {
          if (fifo_push(&r->in, data, take) != 0) return MHD_NO;
          *size = n - take;
          body_signal(r);
        }
        /* only park with bytes left over: MHD then calls us again with them
        ** once resumed, and never with an empty chunk in mid-body */
        if (*size > 0) req_suspend(r);
        else check_peer_eof(r, c);
        return MHD_YES;
      }
      /* the final call: the whole body is in */
      r->phase = PH_DONE;
      if (r->peer_eof)   /* a client that shut its side after a complete body */
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, srv->timeout);
      if (r->save == SAVE_RUNNING) {
        close(r->save_fd);
        r->save_fd = -1;
        r->save = SAVE_DONE;
      }
      body_signal(r);
      /* fall through */
    default:  /* PH_DONE */
      if (r->resp_state == RESP_READY) return queue_response(r);
      if (r->resp_state == RESP_QUEUED) return MHD_YES;
      req_suspend(r);
      return MHD_YES;
  }
}

/* Room in the streamed response: wake whoever waits to write. */
static void room_signal (Req *r) {
  if (r->want_write) {
    r->want_write = 0;
    req_signal(r);
  }
  if (r->peer_wants_room) {
    r->peer_wants_room = 0;
    peer_wake(r);
  }
}

/* The content reader of streamed responses: hands MHD what Lua (or a
** splice peer) wrote. */
static ssize_t on_read_body (void *cls, uint64_t pos, char *buf, size_t max) {
  Req *r = (Req *)cls;
  (void)pos;
  if (r->srv == NULL || r->srv->closing || r->aborted)
    return MHD_CONTENT_READER_END_WITH_ERROR;
  if (r->out.len > 0) {
    size_t n = r->out.len < max ? r->out.len : max;
    memcpy(buf, r->out.data + r->out.off, n);
    fifo_pop(&r->out, n);
    if (r->out.len <= r->srv->out_buffer / 2 && r->out_file_left == 0) room_signal(r);
    return (ssize_t)n;
  }
  if (r->out_file_left > 0) {   /* straight from the file into MHD's buffer */
    size_t want = r->out_file_left < max ? (size_t)r->out_file_left : max;
    ssize_t got;
    do got = pread(r->out_file_fd, buf, want, (off_t)r->out_file_off);
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
      /* a read error, or the file shrank: cut the response, so that a
      ** short file never reads as complete */
      r->out_file_errno = got < 0 ? errno : EIO;
      close(r->out_file_fd);
      r->out_file_fd = -1;
      r->out_file_left = 0;
      req_signal(r);
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    r->out_file_off += (uint64_t)got;
    r->out_file_left -= (uint64_t)got;
    if (r->out_file_left == 0) {
      close(r->out_file_fd);
      r->out_file_fd = -1;
      room_signal(r);
    }
    return got;
  }
  if (r->out_finished) return MHD_CONTENT_READER_END_OF_STREAM;
  /* nothing yet: park until more is written (returning 0 unparked would spin) */
  req_suspend(r);
  room_signal(r);
  return 0;
}


/* ---------------------------------------------------------------------- */
/* the server object                                                       */
/* ---------------------------------------------------------------------- */

static void ws_teardown (WS *ws, int code);
static int ws_closing (WS *ws);
static void ws_unlink (WS *ws);
static void ws_maybe_release (WS *ws);

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
  {
    WS *ws, *next;
    for (ws = srv->wss; ws; ws = next) {
      next = ws->next;
      if (ws->state == WS_OPEN && !ws_closing(ws)) {   /* best effort: say goodbye */
        static const char why[] = "server closing";
        wslay_event_queue_close(ws->ctx, 1001, (const uint8_t *)why, sizeof why - 1);
        wslay_event_send(ws->ctx);
      }
      ws_teardown(ws, 1001);
    }
  }
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
  while (srv->wss) {
    WS *ws = srv->wss;
    ws->awaiting_upgrade = 0;   /* MHD is gone: no upgrade callback will come */
    ws_unlink(ws);
    ws_maybe_release(ws);
  }
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
/* the request object                                                      */
/* ---------------------------------------------------------------------- */

static Req *check_req (lua_State *L) {
  ReqObj *o = (ReqObj *)luaL_checkudata(L, 1, REQUEST_TNAME);
  if (o->r == NULL) luaL_argerror(L, 1, "request is gone");
  return o->r;
}

static const char *toe_name (int toe) {
  switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "ok";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "aborted";
    default: return "error";
  }
}

/* The failure of a request MHD has finished with. */
static int req_gone (lua_State *L, Req *r) {
  switch (r->toe) {
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
      return dt_fail(L, "connection timed out", "ETIMEDOUT");
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
      return dt_fail(L, "server closed", "ECANCELED");
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
      return dt_fail(L, "request already finished", "EPIPE");
    default:
      return dt_fail(L, "client closed the connection", "ECONNRESET");
  }
}

/* req:info() -> {method, path, target, query, version, remote, headers} */
static int req_info (lua_State *L) {
  Req *r = check_req(L);
  const char *q;
  size_t off = 0;
  int i;
  if (r->method == NULL) return req_gone(L, r);
  lua_createtable(L, 0, 7);
  lua_pushstring(L, r->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, r->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, r->target);
  lua_setfield(L, -2, "target");
  q = strchr(r->target, '?');
  if (q) lua_pushstring(L, q + 1);
  else lua_pushliteral(L, "");
  lua_setfield(L, -2, "query");
  lua_pushstring(L, r->version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, r->remote);
  lua_setfield(L, -2, "remote");
  lua_createtable(L, 0, r->nheaders);
  for (i = 0; i < r->nheaders; i++) {
    const char *k = r->headers.data + off;
    const char *v = k + strlen(k) + 1;
    off = (size_t)(v + strlen(v) + 1 - r->headers.data);
    if (lua_getfield(L, -1, k) == LUA_TSTRING) {   /* repeated: join */
      lua_pushstring(L, strcmp(k, "cookie") == 0 ? "; " : ", ");
      lua_pushstring(L, v);
      lua_concat(L, 3);
    }
    else {
      lua_pop(L, 1);
      lua_pushstring(L, v);
    }
    lua_setfield(L, -2, k);
  }
  lua_setfield(L, -2, "headers");
  return 1;
}

/* Lua wants the body: let the connection read it. */
static void req_start_body (Req *r) {
  if (!r->started) {
    r->started = 1;
    if (r->phase == PH_HEADERS) req_wake(r);
  }
}

/* req:read() -> chunk | "" (none yet: wait on req) | nil (end) | nil, msg, code */
static int req_read (lua_State *L) {
  Req *r = check_req(L);
  if (r->save != SAVE_NONE) return luaL_error(L, "body is being saved to a file");
  if (r->peer_dirs & DT_SPLICE_BODY)
    return luaL_error(L, "body is spliced into a client request");
  if (r->discard)
    return dt_fail(L, "request body discarded after the response", "ECANCELED");
  req_start_body(r);
  if (r->in.len > 0) {
    size_t n = r->in.len < READ_CHUNK ? r->in.len : READ_CHUNK;
    lua_pushlstring(L, r->in.data + r->in.off, n);
    fifo_pop(&r->in, n);
    if (r->in.len == 0 && r->phase == PH_DONE) fifo_free(&r->in);
    /* room again: let the rest of the body in */
    if (r->phase == PH_BODY && r->in.len <= r->body_buffer / 2) req_wake(r);
    return 1;
  }
  if (r->phase == PH_DONE) { lua_pushnil(L); return 1; }
  if (r->done) return req_gone(L, r);
  lua_pushliteral(L, "");
  return 1;
}

/* req:read_to_file(path) -> true | nil, msg, code
** Streams the rest of the body into path from C; req:saved() tells the
** outcome.  What req:read() had buffered goes to the file first. */
static int req_read_to_file (lua_State *L) {
  Req *r = check_req(L);
  const char *path = luaL_checkstring(L, 2);
  int fd;
  if (r->save != SAVE_NONE) return luaL_error(L, "body is already being saved");
  if (r->peer_dirs & DT_SPLICE_BODY)
    return luaL_error(L, "body is spliced into a client request");
  if (r->discard)
    return dt_fail(L, "request body discarded after the response", "ECANCELED");
  if (r->done && r->phase != PH_DONE) return req_gone(L, r);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return fail_errno(L, errno, path);
  r->save_fd = fd;
  r->save = SAVE_RUNNING;
  r->saved = 0;
  if (r->in.len > 0) save_write(r, r->in.data + r->in.off, r->in.len);
  fifo_free(&r->in);
  if (r->save == SAVE_RUNNING && r->phase == PH_DONE) {
    close(r->save_fd);
    r->save_fd = -1;
    r->save = SAVE_DONE;
  }
  if (r->phase == PH_BODY) req_wake(r);   /* it may be parked on a full buffer */
  req_start_body(r);
  lua_pushboolean(L, 1);
  return 1;
}

/* req:saved() -> false (still going) | bytes | nil, msg, code */
static int req_saved (lua_State *L) {
  Req *r = check_req(L);
  switch (r->save) {
    case SAVE_RUNNING: lua_pushboolean(L, 0); return 1;
    case SAVE_DONE: lua_pushinteger(L, (lua_Integer)r->saved); return 1;
    case SAVE_FAILED:
      if (r->save_errno == ECANCELED)
        return dt_fail(L, "request body discarded after the response", "ECANCELED");
      if (r->save_errno == ECONNRESET)
        return dt_fail(L, "client closed the connection before the body was complete",
                       "ECONNRESET");
      if (r->save_errno == ETIMEDOUT)
        return dt_fail(L, "connection timed out before the body was complete", "ETIMEDOUT");
      return fail_errno(L, r->save_errno, "writing the request body");
    default: return luaL_error(L, "read_to_file was not called");
  }
}

/* Check a headers table (name -> string | number | list of strings). */
static void check_headers (lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn, vn;
    const char *k;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "header names must be strings");
    k = lua_tolstring(L, -2, &kn);
    if (!valid_name(k, kn)) luaL_error(L, "invalid header name '%s'", k);
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_Integer i, n = (lua_Integer)luaL_len(L, -1);
      for (i = 1; i <= n; i++) {
        const char *v;
        if (lua_geti(L, -1, i) != LUA_TSTRING) luaL_error(L, "header '%s': strings expected", k);
        v = lua_tolstring(L, -1, &vn);
        if (!valid_value(v, vn)) luaL_error(L, "header '%s' has CR, LF or NUL", k);
        lua_pop(L, 1);
      }
    }
    else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
      const char *v = lua_tolstring(L, -1, &vn);   /* a number becomes a string copy */
      if (!valid_value(v, vn)) luaL_error(L, "header '%s' has CR, LF or NUL", k);
    }
    else luaL_error(L, "header '%s': string expected, got %s", k, luaL_typename(L, -1));
    lua_pop(L, 1);
  }
}

/* Add the (checked) headers; returns NULL or the name MHD refused.
** Content-Length is MHD's to send: its value goes to *clen instead. */
static const char *add_headers (lua_State *L, int idx, struct MHD_Response *resp,
                                uint64_t *clen, int *bad_clen) {
  const char *refused = NULL;
  if (lua_isnoneornil(L, idx)) return NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_tostring(L, -2);
    if (strcasecmp(k, "content-length") == 0) {
      if (clen && lua_type(L, -1) != LUA_TTABLE) {
        const char *v = lua_tostring(L, -1);
        char *end;
        unsigned long long n;
        errno = 0;
        n = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-') *bad_clen = 1;
        else *clen = (uint64_t)n;
      }
    }
    else if (lua_type(L, -1) == LUA_TTABLE) {
      lua_Integer i, n = (lua_Integer)luaL_len(L, -1);
      for (i = 1; i <= n && !refused; i++) {
        lua_geti(L, -1, i);
        if (MHD_add_response_header(resp, k, lua_tostring(L, -1)) != MHD_YES) refused = k;
        lua_pop(L, 1);
      }
    }
    else if (MHD_add_response_header(resp, k, lua_tostring(L, -1)) != MHD_YES)
      refused = k;
    lua_pop(L, 1);
    if (refused) { lua_pop(L, 1); break; }
  }
  return refused;
}

/* Common checks of respond*(): returns 0 if the caller should go on, or the
** number of results (nil, msg, code) to return. */
static int resp_precheck (lua_State *L, Req *r) {
  if (r->resp_state != RESP_NONE) luaL_error(L, "response already started");
  if (r->aborted) luaL_error(L, "request was closed");
  if (r->done) return req_gone(L, r);
  return 0;
}

static unsigned int check_status (lua_State *L, int idx) {
  lua_Integer st = luaL_checkinteger(L, idx);
  luaL_argcheck(L, st >= 200 && st <= 599, idx, "status must be in [200, 599]");
  return (unsigned int)st;
}

/* The response is ready: MHD takes it at the handler's next call. */
static void resp_ready (Req *r, struct MHD_Response *resp, unsigned int status,
                        int mode) {
  r->resp = resp;
  r->status = status;
  r->resp_state = RESP_READY;
  r->out_mode = mode;
  /* an unread body is dropped from here on; reading it is an error */
  if (r->in.len > 0 || (r->has_body && r->phase != PH_DONE)) {
    r->discard = 1;
    /* a client still sending a body nobody reads serves nobody: it may be
    ** evicted, with no deadline of its own (connection_timeout still holds) */
    if (r->cn && r->phase != PH_DONE) conn_wait(r->cn, CONN_DISCARD, 0);
  }
  fifo_free(&r->in);
  if (r->save == SAVE_RUNNING && r->phase != PH_DONE) {
    close(r->save_fd);
    r->save_fd = -1;
    r->save = SAVE_FAILED;
    r->save_errno = ECANCELED;
  }
  req_wake(r);
  peer_wake(r);   /* the response it may write into has started */
}

static void refused_header (lua_State *L, struct MHD_Response *resp, const char *k) {
  MHD_destroy_response(resp);
  luaL_error(L, "header '%s' refused (MHD sets it itself or rejects its value)", k);
}

/* req:respond(status, headers [, body]) -> true | nil, msg, code
** With a body string the response is sent whole; without, it is streamed
** from req:write() and req:finish(), with the Content-Length given in the
** headers or chunked. */
static int req_respond (lua_State *L) {
  Req *r = check_req(L);
  unsigned int status = check_status(L, 2);
  struct MHD_Response *resp;
  const char *refused;
  uint64_t clen = MHD_SIZE_UNKNOWN;
  int bad = 0, n;
  check_headers(L, 3);
  if ((n = resp_precheck(L, r)) != 0) return n;
  if (!lua_isnoneornil(L, 4)) {
    size_t len;
    const char *body = luaL_checklstring(L, 4, &len);
    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) return dt_fail(L, "out of memory", "ENOMEM");
    if ((refused = add_headers(L, 3, resp, NULL, &bad)) != NULL)
      refused_header(L, resp, refused);
    resp_ready(r, resp, status, OUT_WHOLE);
  }
  else {
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, READ_CHUNK, on_read_body,
                                             r, NULL);
    if (resp == NULL) return dt_fail(L, "out of memory", "ENOMEM");
    if ((refused = add_headers(L, 3, resp, &clen, &bad)) != NULL)
      refused_header(L, resp, refused);
    if (bad) {
      MHD_destroy_response(resp);
      return luaL_error(L, "invalid content-length header");
    }
    if (clen != MHD_SIZE_UNKNOWN) {
      /* the size is fixed at creation: make the response again with it */
      struct MHD_Response *sized = MHD_create_response_from_callback(
          clen, READ_CHUNK, on_read_body, r, NULL);
      MHD_destroy_response(resp);
      if (sized == NULL) return dt_fail(L, "out of memory", "ENOMEM");
      if ((refused = add_headers(L, 3, sized, NULL, &bad)) != NULL)
        refused_header(L, sized, refused);
      resp = sized;
    }
    r->out_declared = clen;
    resp_ready(r, resp, status, OUT_STREAM);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Queue the next `len` bytes of an open Lua file as a file segment, sent
** from C (on_read_body preads them): for big files, no Lua string and no
** copy through `out`.  The file's position moves past them, as if read. */
static int write_file (lua_State *L, Req *r, luaL_Stream *fs) {
  lua_Integer len = luaL_checkinteger(L, 3);
  off_t off;
  int fd;
  luaL_argcheck(L, len >= 0, 3, "length must be >= 0");
  if (fs->closef == NULL) return luaL_argerror(L, 2, "attempt to use a closed file");
  if (r->out_mode != OUT_STREAM) return luaL_error(L, "no streamed response was started");
  if (r->out_finished) return luaL_error(L, "response already finished");
  if (r->peer_dirs & DT_SPLICE_RESPONSE)
    return luaL_error(L, "response body is spliced from a client request");
  if (r->out_declared != MHD_SIZE_UNKNOWN && r->out_written + (uint64_t)len > r->out_declared)
    return luaL_error(L, "write exceeds the declared Content-Length");
  if (!r->is_head) {
    if (r->out_file_errno) return fail_errno(L, r->out_file_errno, "reading the response file");
    if (r->done || r->aborted) return req_gone(L, r);
    if (len == 0) { lua_pushboolean(L, 1); return 1; }
    if (r->out_file_left > 0 || r->out.len >= DEF_OUT_BUFFER) {
      r->want_write = 1;
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  off = ftello(fs->f);   /* counts what stdio buffered */
  if (off < 0) return fail_errno(L, errno, "file position");
  if (fseeko(fs->f, off + (off_t)len, SEEK_SET) != 0) return fail_errno(L, errno, "file position");
  r->out_written += (uint64_t)len;
  if (r->is_head) { lua_pushboolean(L, 1); return 1; }   /* MHD sends no body */
  /* our own descriptor: Lua may close its file at once */
  fd = fcntl(fileno(fs->f), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return fail_errno(L, errno, "dup");
  r->out_file_fd = fd;
  r->out_file_off = (uint64_t)off;
  r->out_file_left = (uint64_t)len;
  req_wake(r);
  lua_pushboolean(L, 1);
  return 1;
}

/* req:write(chunk) -> true | false (buffer full: wait on req) | nil, msg, code
** req:write(file, length): the next length bytes of an open io file */
static int req_write (lua_State *L) {
  Req *r = check_req(L);
  size_t n;
  const char *p;
  luaL_Stream *fs = (luaL_Stream *)luaL_testudata(L, 2, LUA_FILEHANDLE);
  if (fs) return write_file(L, r, fs);
  p = luaL_checklstring(L, 2, &n);
  if (r->out_mode != OUT_STREAM) return luaL_error(L, "no streamed response was started");
  if (r->out_finished) return luaL_error(L, "response already finished");
  if (r->peer_dirs & DT_SPLICE_RESPONSE)
    return luaL_error(L, "response body is spliced from a client request");
  if (r->out_declared != MHD_SIZE_UNKNOWN && r->out_written + n > r->out_declared)
    return luaL_error(L, "write exceeds the declared Content-Length");
  if (r->is_head) {   /* MHD sends no body for HEAD: accept and drop */
    r->out_written += n;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (r->out_file_errno) return fail_errno(L, r->out_file_errno, "reading the response file");
  if (r->done || r->aborted) return req_gone(L, r);
  if (n == 0) { lua_pushboolean(L, 1); return 1; }
  if (r->out.len >= DEF_OUT_BUFFER || r->out_file_left > 0) {   /* after the file */
    r->want_write = 1;
    lua_pushboolean(L, 0);
    return 1;
  }
  if (fifo_push(&r->out, p, n) != 0) return dt_fail(L, "out of memory", "ENOMEM");
  r->out_written += n;
  req_wake(r);
  lua_pushboolean(L, 1);
  return 1;
}

/* req:finish() -> true | nil, msg, code: the streamed body is complete */
static int req_finish (lua_State *L) {
  Req *r = check_req(L);
  if (r->out_mode != OUT_STREAM) return luaL_error(L, "no streamed response was started");
  if (r->out_finished) { lua_pushboolean(L, 1); return 1; }
  r->out_finished = 1;
  req_wake(r);
  if (r->out_file_errno) return fail_errno(L, r->out_file_errno, "reading the response file");
  if (r->out_declared != MHD_SIZE_UNKNOWN && r->out_written < r->out_declared && !r->is_head)
    return dt_fail(L, "response body shorter than its Content-Length", "EPROTO");
  if (r->done && r->toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) return req_gone(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* req:respond_file(status, headers, path [, offset [, length]]) -> true | nil, msg, code
** MHD sends the file itself (sendfile), with its Content-Length. */
static int req_respond_file (lua_State *L) {
  Req *r = check_req(L);
  unsigned int status = check_status(L, 2);
  const char *path = luaL_checkstring(L, 4);
  lua_Integer off = luaL_optinteger(L, 5, 0);
  struct MHD_Response *resp;
  struct stat st;
  const char *refused;
  uint64_t len;
  int fd, bad = 0, n;
  luaL_argcheck(L, off >= 0, 5, "offset must be >= 0");
  check_headers(L, 3);
  if ((n = resp_precheck(L, r)) != 0) return n;
  /* O_NONBLOCK: the open of a FIFO without a writer would block the loop
  ** (and every request of the server); fstat then refuses anything but a
  ** regular file, for which the flag changes nothing. */
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fail_errno(L, errno, path);
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = errno;   /* fstat's error, else what the file is instead */
    if (e == 0 || fstat(fd, &st) == 0) e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    close(fd);
    return fail_errno(L, e, path);
  }
  if ((uint64_t)off > (uint64_t)st.st_size) {
    close(fd);
    return dt_fail(L, "offset beyond the end of the file", "EINVAL");
  }
  len = (uint64_t)st.st_size - (uint64_t)off;
  if (!lua_isnoneornil(L, 6)) {
    lua_Integer l = luaL_checkinteger(L, 6);
    if (l < 0 || (uint64_t)l > len) {
      close(fd);
      return dt_fail(L, "range beyond the end of the file", "EINVAL");
    }
    len = (uint64_t)l;
  }
  resp = MHD_create_response_from_fd_at_offset64(len, fd, (uint64_t)off);
  if (resp == NULL) {
    close(fd);
    return dt_fail(L, "cannot create the file response", "ENOMEM");
  }
  if ((refused = add_headers(L, 3, resp, NULL, &bad)) != NULL)
    refused_header(L, resp, refused);   /* MHD closes fd with the response */
  resp_ready(r, resp, status, OUT_FILE);
  lua_pushboolean(L, 1);
  return 1;
}

/* req:close(): give up on the request; an unsent response becomes a
** dropped connection.  Idempotent. */
static int req_close (lua_State *L) {
  ReqObj *o = (ReqObj *)luaL_checkudata(L, 1, REQUEST_TNAME);
  Req *r = o->r;
  if (r == NULL || r->done || r->aborted) return 0;
  if (r->resp_state == RESP_QUEUED && r->out_mode != OUT_STREAM) return 0;  /* on its way */
  r->aborted = 1;
  if (r->save == SAVE_RUNNING) {
    close(r->save_fd);
    r->save_fd = -1;
    r->save = SAVE_FAILED;
    r->save_errno = ECANCELED;
  }
  req_wake(r);
  peer_wake(r);
  return 0;
}

/* req:done() -> false | true, "ok"|"error"|"timeout"|"aborted"|"shutdown" */
static int req_done (lua_State *L) {
  Req *r = check_req(L);
  lua_pushboolean(L, r->done);
  if (!r->done) return 1;
  lua_pushstring(L, toe_name(r->toe));
  return 2;
}

static int req_gc (lua_State *L) {
  ReqObj *o = (ReqObj *)luaL_checkudata(L, 1, REQUEST_TNAME);
  Req *r = o->r;
  dt_unqueue(&o->base);
  if (r == NULL) return 0;
  if (r->peer) {   /* only at lua_close: the peer holds o while it lives */
    dt_splice_peer *peer = r->peer;
    r->peer = NULL;
    peer->gone(peer);
  }
  o->r = NULL;
  r->obj = NULL;
  if (r->done) req_free(r);
  else {   /* only at lua_close, while pinned: MHD frees r when it completes */
    r->aborted = 1;
    req_wake(r);
  }
  return 0;
}


/* ---------------------------------------------------------------------- */
/* splices: a client request takes the body and gives the response (see    */
/* splice.h); these run in its libcurl callbacks and loop turns            */
/* ---------------------------------------------------------------------- */

static void splice_error (dt_splice_err *err, const char *code, const char *msg) {
  err->code = code;
  err->msg = msg;
}

/* Whether the request was dropped before it could finish; *err says how. */
static int splice_dropped (Req *r, dt_splice_err *err) {
  if (r == NULL || r->aborted) {
    splice_error(err, "ECONNABORTED", "the server request was closed");
    return 1;
  }
  if (r->done && r->toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
    switch (r->toe) {
      case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        splice_error(err, "ETIMEDOUT", "the client's connection timed out");
        break;
      case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        splice_error(err, "ECANCELED", "server closed");
        break;
      default:
        splice_error(err, "ECONNRESET", "the client closed the connection");
        break;
    }
    return 1;
  }
  if (r->srv && r->srv->closing) {
    splice_error(err, "ECANCELED", "server closed");
    return 1;
  }
  return 0;
}

static int splice_attach (void *end, dt_splice_peer *peer, int dirs, dt_splice_err *err) {
  Req *r = ((ReqObj *)end)->r;
  if (splice_dropped(r, err)) return -1;
  if (r->peer) {
    splice_error(err, "EINVAL", "the server request is already spliced");
    return -1;
  }
  if ((dirs & DT_SPLICE_BODY) && (r->save != SAVE_NONE || r->discard)) {
    splice_error(err, "EINVAL", "the server request's body is being saved or was discarded");
    return -1;
  }
  if ((dirs & DT_SPLICE_RESPONSE) &&
      (r->out_finished || (r->resp_state != RESP_NONE && r->out_mode != OUT_STREAM))) {
    splice_error(err, "EINVAL", "the server request's response is not a stream to write");
    return -1;
  }
  r->peer = peer;
  r->peer_dirs = dirs;
  r->peer_wants_body = r->peer_wants_room = 0;
  if (dirs & DT_SPLICE_BODY) req_start_body(r);   /* the peer pulls it from now on */
  return 0;
}

static void splice_detach (void *end, dt_splice_peer *peer) {
  Req *r = ((ReqObj *)end)->r;
  if (r == NULL || r->peer != peer) return;
  r->peer = NULL;
  r->peer_dirs = r->peer_wants_body = r->peer_wants_room = 0;
}

static size_t splice_read (void *end, char *buf, size_t max, int *state,
                           dt_splice_err *err) {
  Req *r = ((ReqObj *)end)->r;
  *state = DT_SPLICE_OK;
  if (r == NULL || r->aborted) {
    splice_dropped(r, err);
    *state = DT_SPLICE_ERROR;
    return 0;
  }
  if (r->discard) {
    splice_error(err, "ECONNABORTED", "request body discarded after the response");
    *state = DT_SPLICE_ERROR;
    return 0;
  }
  if (r->in.len > 0) {
    size_t n = r->in.len < max ? r->in.len : max;
    if (n == 0) return 0;
    memcpy(buf, r->in.data + r->in.off, n);
    fifo_pop(&r->in, n);
    if (r->in.len == 0 && r->phase == PH_DONE) fifo_free(&r->in);
    /* room again: let the rest of the body in */
    if (r->phase == PH_BODY && r->in.len <= r->body_buffer / 2) req_wake(r);
    return n;
  }
  if (r->phase == PH_DONE) { *state = DT_SPLICE_EOF; return 0; }
  if (splice_dropped(r, err) || r->done) {
    if (r->done && r->toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
      splice_error(err, "EPIPE", "request already finished");
    *state = DT_SPLICE_ERROR;
    return 0;
  }
  r->peer_wants_body = 1;
  return 0;
}

static int splice_write (void *end, const char *p, size_t n, dt_splice_err *err) {
  Req *r = ((ReqObj *)end)->r;
  if (splice_dropped(r, err)) return -1;
  if (r->resp_state == RESP_NONE) {   /* Lua has not sent the head yet */
    r->peer_wants_room = 1;
    return 0;
  }
  if (r->out_mode != OUT_STREAM || r->out_finished || r->done) {
    splice_error(err, "EPIPE", "the server request's response is not a stream to write");
    return -1;
  }
  if (r->out_declared != MHD_SIZE_UNKNOWN && r->out_written + n > r->out_declared) {
    splice_error(err, "EPROTO", "response body longer than its Content-Length");
    return -1;
  }
  if (r->is_head) {   /* MHD sends no body for HEAD: accept and drop */
    r->out_written += n;
    return 1;
  }
  if (r->out.len >= DEF_OUT_BUFFER || r->out_file_left > 0) {
    r->peer_wants_room = 1;
    return 0;
  }
  if (n == 0) return 1;
  if (fifo_push(&r->out, p, n) != 0) {
    splice_error(err, "ENOMEM", "out of memory");
    return -1;
  }
  r->out_written += n;
  req_wake(r);
  return 1;
}

static int splice_gone (void *end, dt_splice_err *err) {
  return splice_dropped(((ReqObj *)end)->r, err);
}

static const dt_splice_ops req_splice_ops = {
  DT_SPLICE_VERSION, splice_attach, splice_detach, splice_read, splice_write, splice_gone
};


/* ---------------------------------------------------------------------- */
/* WebSockets                                                              */
/* ---------------------------------------------------------------------- */

static void ws_io (WS *ws, int readable);

static WS *check_ws (lua_State *L) {
  return (WS *)luaL_checkudata(L, 1, WS_TNAME);
}

static void ws_unlink (WS *ws) {
  Server *srv = ws->srv;
  if (srv == NULL) return;
  if (ws->prev) ws->prev->next = ws->next;
  else if (srv->wss == ws) srv->wss = ws->next;
  if (ws->next) ws->next->prev = ws->prev;
  ws->prev = ws->next = NULL;
  ws->srv = NULL;
}

/* Unpin once nothing holds our pointer: no uv handle, no pending 101. */
static void ws_maybe_release (WS *ws) {
  if (ws->state == WS_CLOSED && ws->handles == 0 && !ws->awaiting_upgrade) {
    ws_unlink(ws);
    dt_release(&ws->base);
  }
}

static void ws_handle_closed (uv_handle_t *h) {
  WS *ws = (WS *)h->data;
  ws->handles--;
  ws_maybe_release(ws);
}

static int ws_final_code (WS *ws) {
  if (ws->ctx && wslay_event_get_close_received(ws->ctx)) {
    int c = wslay_event_get_status_code_received(ws->ctx);
    return c ? c : 1005;
  }
  if (ws->ctx && wslay_event_get_close_sent(ws->ctx)) {
    int c = wslay_event_get_status_code_sent(ws->ctx);
    return c ? c : 1005;
  }
  return 1006;
}

/* End the connection now (no handshake): free the socket and wslay. */
static void ws_teardown (WS *ws, int code) {
  Server *srv = ws->srv;
  if (ws->state == WS_CLOSED) { ws_maybe_release(ws); return; }
  ws->state = WS_CLOSED;
  if (srv) srv->nws--;
  if (ws->close_code == 0) ws->close_code = code;
  if (ws->polling) {
    ws->polling = 0;
    uv_close((uv_handle_t *)&ws->poll, ws_handle_closed);
  }
  if (ws->timer_on) {
    ws->timer_on = 0;
    uv_close((uv_handle_t *)&ws->timer, ws_handle_closed);
  }
  if (ws->urh) {   /* MHD closes the socket; libuv has stopped watching it */
    MHD_upgrade_action(ws->urh, MHD_UPGRADE_ACTION_CLOSE);
    ws->urh = NULL;
    ws->fd = -1;
    srv_kick(srv);
  }
  if (ws->ctx) {
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
  }
  free(ws->extra);
  ws->extra = NULL;
  ws->extra_len = ws->extra_off = 0;
  dt_signal(&ws->base);
  ws_maybe_release(ws);
}

static void ws_upgrade_failed (WS *ws) {
  ws->awaiting_upgrade = 0;
  ws_teardown(ws, 1006);
}

static ssize_t ws_recv_cb (wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                           int flags, void *ud) {
  WS *ws = (WS *)ud;
  ssize_t n;
  (void)flags;
  if (ws->extra_off < ws->extra_len) {   /* what MHD read past the request */
    size_t k = ws->extra_len - ws->extra_off;
    if (k > len) k = len;
    memcpy(buf, ws->extra + ws->extra_off, k);
    ws->extra_off += k;
    return (ssize_t)k;
  }
  if (ws->budget == 0 || ws->fd < 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (len > ws->budget) len = ws->budget;
  do n = recv(ws->fd, buf, len, 0); while (n < 0 && errno == EINTR);
  if (n > 0) {
    ws->budget -= (size_t)n;
    return n;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
  else {
    ws->peer_eof = 1;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
  }
  return -1;
}

static ssize_t ws_send_cb (wslay_event_context_ptr ctx, const uint8_t *data,
                           size_t len, int flags, void *ud) {
  WS *ws = (WS *)ud;
  ssize_t n;
  if (ws->fd < 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  do n = send(ws->fd, data, len,
              MSG_NOSIGNAL | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0));
  while (n < 0 && errno == EINTR);
  if (n >= 0) return n;
  wslay_event_set_error(ctx, (errno == EAGAIN || errno == EWOULDBLOCK)
                                 ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

/* Fail the connection from our side with a close code (RFC 6455 7.1.7). */
static void ws_fail (WS *ws, uint16_t code, const char *why) {
  wslay_event_queue_close(ws->ctx, code, (const uint8_t *)why, strlen(why));
  wslay_event_shutdown_read(ws->ctx);
}

static void ws_msg_cb (wslay_event_context_ptr ctx,
                       const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  WS *ws = (WS *)ud;
  (void)ctx;
  if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
    /* wslay has checked the UTF-8 of text messages (1007 otherwise) */
    WSMsg *m = (WSMsg *)malloc(sizeof *m + arg->msg_length);
    if (m == NULL) {
      ws_fail(ws, 1011, "out of memory");
      return;
    }
    m->next = NULL;
    m->binary = arg->opcode == WSLAY_BINARY_FRAME;
    m->len = arg->msg_length;
    if (arg->msg_length > 0) memcpy(m->data, arg->msg, arg->msg_length);
    if (ws->rxtail) ws->rxtail->next = m;
    else ws->rxhead = m;
    ws->rxtail = m;
    ws->rx_bytes += m->len;
    dt_signal(&ws->base);
  }
  else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
    size_t n = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
    if (n > sizeof ws->close_reason) n = sizeof ws->close_reason;
    ws->close_code = arg->status_code ? arg->status_code : 1005;
    if (n) memcpy(ws->close_reason, arg->msg + 2, n);
    ws->close_reason_len = n;
    dt_signal(&ws->base);
  }
  /* pings are answered by wslay itself; pongs need nothing */
}

static void on_ws_poll (uv_poll_t *p, int status, int events) {
  WS *ws = (WS *)p->data;
  if (status < 0) { ws_teardown(ws, 1006); return; }
  ws_io(ws, (events & (UV_READABLE | UV_DISCONNECT)) != 0);
}

static void on_ws_timer (uv_timer_t *t) {
  WS *ws = (WS *)t->data;   /* the peer never answered our close frame */
  ws_teardown(ws, ws_final_code(ws));
}

/* Move bytes both ways as far as the socket allows, then watch for what
** wslay still wants. */
static void ws_io (WS *ws, int readable) {
  int events = 0;
  wslay_event_context_ptr ctx = ws->ctx;
  if (ws->state != WS_OPEN) return;
  if (ws->draining) {
    static char scratch[16384];
    size_t budget = WS_RX_BUDGET;
    while (readable && budget > 0) {
      ssize_t n = recv(ws->fd, scratch, sizeof scratch, 0);
      if (n > 0) { budget -= (size_t)n < budget ? (size_t)n : budget; continue; }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      ws_teardown(ws, ws_final_code(ws));   /* EOF or error: the peer is done */
      return;
    }
    return;
  }
  if (readable && wslay_event_want_read(ctx) && ws->rx_bytes < WS_RX_BOUND) {
    ws->budget = WS_RX_BUDGET;
    if (wslay_event_recv(ctx) != 0) {
      /* the peer is gone (or wslay is out of memory): what it sent is kept */
      ws_teardown(ws, ws_final_code(ws));
      return;
    }
  }
  if (wslay_event_want_write(ctx) && wslay_event_send(ctx) != 0) {
    ws_teardown(ws, ws_final_code(ws));
    return;
  }
  if (ws->pending_close && wslay_event_get_queued_msg_count(ctx) == 0) {
    /* close() waited for the queued messages: wslay sends control frames
    ** ahead of data, so queuing the close earlier would lose them */
    ws->pending_close = 0;
    wslay_event_queue_close(ctx, ws->pending_code,
                            (const uint8_t *)ws->pending_reason, ws->pending_reason_len);
    if (wslay_event_send(ctx) != 0) {
      ws_teardown(ws, ws_final_code(ws));
      return;
    }
  }
  if (ws->want_send && wslay_event_get_queued_msg_length(ctx) < WS_TX_BOUND / 2) {
    ws->want_send = 0;
    dt_signal(&ws->base);
  }
  if (!wslay_event_want_read(ctx) && !wslay_event_want_write(ctx)) {
    if (!wslay_event_get_close_received(ctx) && wslay_event_get_close_sent(ctx)) {
      /* We failed the connection (1002, 1007, 1009...) and stopped reading.
      ** Closing now, with the peer's bytes unread, would send an RST that
      ** can destroy our close frame before the peer reads it: half-close
      ** and discard input until the peer's EOF (or the close timer). */
      ws->draining = 1;
      shutdown(ws->fd, SHUT_WR);
      if (!ws->timer_started) {
        ws->timer_started = 1;
        uv_timer_start(&ws->timer, on_ws_timer, WS_CLOSE_WAIT_MS, 0);
      }
      uv_poll_start(&ws->poll, UV_READABLE, on_ws_poll);
      return;
    }
    ws_teardown(ws, ws_final_code(ws));   /* close handshake done */
    return;
  }
  if (wslay_event_get_close_sent(ctx) && !ws->timer_started) {
    ws->timer_started = 1;
    uv_timer_start(&ws->timer, on_ws_timer, WS_CLOSE_WAIT_MS, 0);
  }
  if (wslay_event_want_read(ctx) && ws->rx_bytes < WS_RX_BOUND) events |= UV_READABLE;
  if (wslay_event_want_write(ctx)) events |= UV_WRITABLE;
  if (events) uv_poll_start(&ws->poll, events, on_ws_poll);
  else uv_poll_stop(&ws->poll);
}

/* MHD sent the 101: the socket is ours (MHD still closes it). */
static void on_upgrade (void *cls, struct MHD_Connection *c, void *req_cls,
                        const char *extra, size_t extra_len, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh) {
  WS *ws = (WS *)cls;
  Server *srv = ws->srv;
  Conn *cn = conn_of(c);
  int one = 1, fl;
  (void)req_cls;
  if (cn) conn_busy(cn, CONN_UPGRADED);   /* no timeout or eviction of ours from now */
  ws->awaiting_upgrade = 0;
  if (ws->req) { ws->req->ws = NULL; ws->req = NULL; }
  if (ws->state != WS_PENDING || srv == NULL || srv->closing) {
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    srv_kick(srv);
    ws_teardown(ws, 1006);
    return;
  }
  ws->urh = urh;
  ws->fd = sock;
  fl = fcntl(sock, F_GETFL);
  if (fl >= 0) fcntl(sock, F_SETFL, fl | O_NONBLOCK);
  setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CORK_OFF);   /* frames go out at once */
  if (extra_len > 0) {
    ws->extra = (char *)malloc(extra_len);
    if (ws->extra == NULL) { ws_teardown(ws, 1011); return; }
    memcpy(ws->extra, extra, extra_len);
    ws->extra_len = extra_len;
  }
  if (uv_poll_init(&srv->loop->uv, &ws->poll, sock) != 0) {
    ws_teardown(ws, 1011);
    return;
  }
  ws->poll.data = ws;
  ws->polling = 1;
  ws->handles++;
  uv_timer_init(&srv->loop->uv, &ws->timer);
  ws->timer.data = ws;
  ws->timer_on = 1;
  ws->handles++;
  ws->state = WS_OPEN;
  /* a close() made before the upgrade completed is queued by ws_io once
  ** the messages sent meanwhile are out */
  dt_signal(&ws->base);
  ws_io(ws, 1);
}

static int valid_ws_key (const char *k) {
  size_t i;
  if (k == NULL || strlen(k) != 24 || strcmp(k + 22, "==") != 0) return 0;
  for (i = 0; i < 22; i++) {
    char c = k[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '+' || c == '/'))
      return 0;
  }
  return 1;
}

/* req:upgrade_websocket{protocol=, headers=} -> ServerWebSocket | nil, msg, code
** Answers 101 with Sec-WebSocket-Accept and the given subprotocol (the
** caller picks it from what the client offered, or none). */
static int req_upgrade_websocket (lua_State *L) {
  Req *r = check_req(L);
  const char *protocol = NULL, *key, *up, *conn, *ver, *refused;
  char concat[64], accept[32];
  unsigned char md[20];
  struct MHD_Response *resp;
  struct wslay_event_callbacks cbs;
  Server *srv = r->srv;
  WS *ws;
  int n, bad = 0, hidx;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  else { lua_newtable(L); lua_replace(L, 2); }
  lua_settop(L, 2);
  lua_getfield(L, 2, "protocol");        /* 3 */
  if (!lua_isnil(L, 3)) {
    size_t pn;
    protocol = luaL_checklstring(L, 3, &pn);
    if (!valid_name(protocol, pn)) return luaL_error(L, "invalid subprotocol '%s'", protocol);
  }
  lua_getfield(L, 2, "headers");         /* 4 */
  hidx = 4;
  check_headers(L, hidx);
  if ((n = resp_precheck(L, r)) != 0) return n;
  key = req_header(r, "sec-websocket-key");
  up = req_header(r, "upgrade");
  conn = req_header(r, "connection");
  ver = req_header(r, "sec-websocket-version");
  if (strcmp(r->method, "GET") != 0 || !up || !has_token(up, "websocket") || !conn ||
      !has_token(conn, "upgrade") || !ver || strcmp(ver, "13") != 0 || !valid_ws_key(key) ||
      r->has_body)
    return dt_fail(L, "not a valid WebSocket upgrade request", "EINVAL");
  snprintf(concat, sizeof concat, "%s%s", key, WS_GUID);
  dt_sha1(concat, strlen(concat), md);
  dt_base64(md, sizeof md, accept);
  ws = (WS *)lua_newuserdatauv(L, sizeof *ws, 0);   /* 5 */
  memset(ws, 0, sizeof *ws);
  dt_obj_init(srv->loop, &ws->base);
  ws->state = WS_CLOSED;   /* nothing to undo until set up */
  ws->fd = -1;
  ws->max_message = srv->ws_max_message;
  luaL_setmetatable(L, WS_TNAME);
  memset(&cbs, 0, sizeof cbs);
  cbs.recv_callback = ws_recv_cb;
  cbs.send_callback = ws_send_cb;
  cbs.on_msg_recv_callback = ws_msg_cb;
  if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0)
    return dt_fail(L, "out of memory", "ENOMEM");
  wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->max_message);
  resp = MHD_create_response_for_upgrade(on_upgrade, ws);
  if (resp == NULL) {
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    return dt_fail(L, "out of memory", "ENOMEM");
  }
  if (MHD_add_response_header(resp, "Upgrade", "websocket") != MHD_YES ||
      MHD_add_response_header(resp, "Connection", "Upgrade") != MHD_YES ||
      MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept) != MHD_YES ||
      (protocol && MHD_add_response_header(resp, "Sec-WebSocket-Protocol", protocol) != MHD_YES)) {
    MHD_destroy_response(resp);
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    return dt_fail(L, "out of memory", "ENOMEM");
  }
  if ((refused = add_headers(L, hidx, resp, NULL, &bad)) != NULL) {
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    refused_header(L, resp, refused);
  }
  ws->state = WS_PENDING;
  ws->awaiting_upgrade = 1;
  ws->srv = srv;
  ws->next = srv->wss;
  if (srv->wss) srv->wss->prev = ws;
  srv->wss = ws;
  srv->nws++;
  ws->req = r;
  r->ws = ws;
  dt_pin(L, &ws->base, 5);
  resp_ready(r, resp, MHD_HTTP_SWITCHING_PROTOCOLS, OUT_UPGRADE);
  lua_pushvalue(L, 5);
  return 1;
}

static int ws_closing (WS *ws) {
  return ws->state == WS_CLOSED || ws->pending_close ||
         (ws->ctx && (wslay_event_get_close_sent(ws->ctx) ||
                      !wslay_event_get_write_enabled(ws->ctx)));
}

/* ws:send(data [, "text"|"binary"]) -> true | false (queue full: wait on
** ws) | nil, msg, code */
static int ws_send (lua_State *L) {
  static const char *const kinds[] = {"text", "binary", NULL};
  WS *ws = check_ws(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  int binary = luaL_checkoption(L, 3, "text", kinds);
  struct wslay_event_msg msg;
  int rc;
  if (!binary && !valid_utf8((const unsigned char *)p, n))
    return luaL_argerror(L, 2, "text message is not valid UTF-8");
  if (ws_closing(ws) || ws->ctx == NULL) return dt_fail(L, "websocket closed", "EPIPE");
  if (wslay_event_get_queued_msg_length(ws->ctx) >= WS_TX_BOUND) {
    ws->want_send = 1;
    lua_pushboolean(L, 0);
    return 1;
  }
  msg.opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
  msg.msg = (const uint8_t *)p;
  msg.msg_length = n;
  rc = wslay_event_queue_msg(ws->ctx, &msg);   /* copies the data */
  if (rc == WSLAY_ERR_NOMEM) return dt_fail(L, "out of memory", "ENOMEM");
  if (rc != 0) return dt_fail(L, "websocket closed", "EPIPE");
  ws_io(ws, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:receive() -> data, "text"|"binary" | "" (none yet: wait on ws)
**   | nil, "closed", code, reason */
static int ws_receive (lua_State *L) {
  WS *ws = check_ws(L);
  WSMsg *m = ws->rxhead;
  if (m) {
    int was_full = ws->rx_bytes >= WS_RX_BOUND;
    ws->rxhead = m->next;
    if (ws->rxhead == NULL) ws->rxtail = NULL;
    ws->rx_bytes -= m->len;
    lua_pushlstring(L, m->data, m->len);
    lua_pushstring(L, m->binary ? "binary" : "text");
    free(m);
    if (was_full && ws->rx_bytes < WS_RX_BOUND) ws_io(ws, 0);   /* read again */
    return 2;
  }
  if (ws->state == WS_CLOSED ||
      (ws->ctx && wslay_event_get_close_received(ws->ctx))) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    lua_pushinteger(L, ws->state == WS_CLOSED ? ws->close_code : ws_final_code(ws));
    lua_pushlstring(L, ws->close_reason, ws->close_reason_len);
    return 4;
  }
  lua_pushliteral(L, "");
  return 1;
}

/* ws:close([code [, reason]]): start the closing handshake; the socket is
** released when the peer answers (or after 5 s).  Idempotent. */
static int ws_close (lua_State *L) {
  WS *ws = check_ws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t rn = 0;
  const char *reason = luaL_optlstring(L, 3, "", &rn);
  luaL_argcheck(L, code >= 1000 && code <= 4999 && code != 1004 && code != 1005 &&
                   code != 1006 && code != 1015, 2, "invalid close code");
  luaL_argcheck(L, rn <= 123, 3, "close reason longer than 123 bytes");
  luaL_argcheck(L, valid_utf8((const unsigned char *)reason, rn), 3,
                "close reason is not valid UTF-8");
  if (ws_closing(ws)) return 0;
  if (ws->state == WS_PENDING) {
    ws->pending_close = 1;
    ws->pending_code = (uint16_t)code;
    memcpy(ws->pending_reason, reason, rn);
    ws->pending_reason_len = rn;
    return 0;
  }
  if (wslay_event_get_queued_msg_count(ws->ctx) > 0) {
    /* data still queued: close once it is out (see ws_io) */
    ws->pending_close = 1;
    ws->pending_code = (uint16_t)code;
    memcpy(ws->pending_reason, reason, rn);
    ws->pending_reason_len = rn;
  } else {
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rn);
  }
  ws_io(ws, 0);
  return 0;
}

/* __close: a to-be-closed WebSocket ends with a normal close (1000). */
static int ws_tbc (lua_State *L) {
  lua_settop(L, 1);   /* drop the error value __close gets */
  return ws_close(L);
}

/* ws:abort(): drop the TCP connection at once (RST), no close frame. */
static int ws_abort (lua_State *L) {
  WS *ws = check_ws(L);
  if (ws->state == WS_OPEN && ws->fd >= 0) {
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(ws->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  ws_teardown(ws, 1006);
  return 0;
}

/* ws:state() -> "connecting" | "open" | "closing" | "closed" */
static int ws_state (lua_State *L) {
  WS *ws = check_ws(L);
  if (ws->state == WS_PENDING) lua_pushliteral(L, "connecting");
  else if (ws->state == WS_CLOSED) lua_pushliteral(L, "closed");
  else if (ws_closing(ws) || wslay_event_get_close_received(ws->ctx))
    lua_pushliteral(L, "closing");
  else lua_pushliteral(L, "open");
  return 1;
}

static int ws_gc (lua_State *L) {
  WS *ws = check_ws(L);
  if (ws->state != WS_CLOSED) ws_teardown(ws, 1001);   /* only at lua_close */
  dt_unqueue(&ws->base);
  while (ws->rxhead) {
    WSMsg *m = ws->rxhead;
    ws->rxhead = m->next;
    free(m);
  }
  ws->rxtail = NULL;
  ws->rx_bytes = 0;
  if (ws->ctx) {
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
  }
  return 0;
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
  static const luaL_Reg req_methods[] = {
    {"info", req_info}, {"read", req_read}, {"read_to_file", req_read_to_file},
    {"saved", req_saved}, {"respond", req_respond}, {"write", req_write},
    {"finish", req_finish}, {"respond_file", req_respond_file},
    {"upgrade_websocket", req_upgrade_websocket}, {"close", req_close},
    {"done", req_done},
    {NULL, NULL}
  };
  static const luaL_Reg req_meta[] = {
    {"__gc", req_gc}, {"__close", req_close},
    {NULL, NULL}
  };
  static const luaL_Reg ws_methods[] = {
    {"send", ws_send}, {"receive", ws_receive}, {"close", ws_close},
    {"abort", ws_abort}, {"state", ws_state},
    {NULL, NULL}
  };
  static const luaL_Reg ws_meta[] = {
    {"__gc", ws_gc}, {"__close", ws_tbc},
    {NULL, NULL}
  };
  /* stack: table, loop */
  dt_newclass(L, SERVER_TNAME, srv_methods, srv_meta);
  lua_pop(L, 1);
  dt_newclass(L, REQUEST_TNAME, req_methods, req_meta);
  lua_pop(L, 1);
  dt_newclass(L, WS_TNAME, ws_methods, ws_meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}

/* daytona.core.server: this file as its own shared object, so that only a
** program that uses core.server maps libmicrohttpd and wslay (see dt.h). */
LUAMOD_API int luaopen_daytona_core_server (lua_State *L) {
  return dt_open_part(L, "server", dt_open_server, NULL);
}
