/*
** ws_client.c -- the WebSocket client: libwebsockets on the core's libuv loop.
**
** One lws_context per loop, created at the first connect with
** LWS_SERVER_OPTION_LIBUV and the core's uv loop as its *foreign* loop, so
** lws adds its poll handles and timers to our loop and is serviced by
** core.step() like everything else.  Following lws's rules, everything is
** single-threaded and frames are written only from the WRITEABLE callback.
**
**   core.ws.connect{url=, headers=, protocols=, ca_file=,
**                   insecure=, ping_interval=, ping_timeout=,
**                   max_message=, recv_buffer=, send_buffer=} -> WebSocket
**   ws:state()          "connecting" | "open" | "closing" | "closed"
**   ws:protocol()       the subprotocol the server selected, or nil
**   ws:http_status()    status of the upgrade response (101), or nil
**   ws:send(data [, "text"|"binary"])   true | false (queue full) | nil, msg, code
**   ws:receive()        data, kind | false (nothing yet) |
**                       nil, "closed", code, reason | nil, msg, code
**   ws:error()          msg, code of a failed connection, else nil
**   ws:ping([payload])  true | nil, msg, code
**   ws:pongs()          number of pongs received
**   ws:buffered()       bytes queued to send, bytes received and not read
**   ws:close([code [, reason]])  graceful close after the queued messages
**   ws:abort()          drop the connection now
**
** Object lifetime.  lws's per-connection user pointer is not the Lua
** userdata but a small malloc'd Conn, which lws may still hold after the
** userdata is collected (at lua_close the userdata is finalized before the
** loop, while lws still has to run the connection's close).  Conn and
** WebSocket point at each other while both live; the userdata is pinned
** for as long as it is attached, and the Conn is freed when neither lws
** (wsi or DNS request) nor the userdata refers to it any more.
**
** Name resolution is ours (uv_getaddrinfo): lws 4.1 as packaged resolves
** with a blocking getaddrinfo on the loop thread.  lws is then given a
** numeric address, with the Host header (also used for TLS SNI and the
** certificate's name check) set to the URL's host; a refused or
** unreachable address moves on to the next one.
**
** lws logs nothing unless DTLUA_LWS_DEBUG is set to an lws log-level mask
** (e.g. 7 for errors, warnings and notices; 2047 for everything).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <strings.h>
#include <netdb.h>
#include <sys/socket.h>

#include <libwebsockets.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "dt.h"

#define WS_TNAME "daytona.core.WebSocket"

#define FRAG_SIZE        (64 * 1024)          /* bytes per frame we write */
#define DEF_MAX_MESSAGE  (64 * 1024 * 1024)   /* largest message we assemble */
#define DEF_RECV_BUFFER  (4 * 1024 * 1024)    /* unread bytes before rx pauses */
#define DEF_SEND_BUFFER  (4 * 1024 * 1024)    /* queued bytes before send refuses */
#define MSG_OVERHEAD     64                   /* per-message cost in the bounds */
#define DEF_PING         30                   /* idle seconds before a ping */
#define DEF_PING_TIMEOUT 30                   /* seconds for the pong after that */
#define MAX_REASON       123                  /* close reason bytes (RFC 6455) */
/* The largest upgrade request and response header block.  lws 4.1 builds
** the request in its per-thread service buffer (pt_serv_buf_size) and keeps
** the URL and the response's headers in a per-connection header table
** (max_http_header_data): both 4 KiB by default, so a handshake with a few
** KiB of headers or a long URL failed -- a URL before any byte was sent,
** seen as "cannot start the connection" (ECONNREFUSED).  64 KiB matches
** what our own server takes (core.server's memory_limit).  The service
** buffer gets HS_SLACK more for the lines lws writes itself. */
#define HANDSHAKE_MAX    (64 * 1024)
#define HS_SLACK         1024
/* lws 4.1 also writes the request line and the Host header into fixed room
** (lws_snprintf into 2048 and 128 bytes, lib/roles/http/client/
** client-http.c; 4.2 bounds them by the buffer): a longer request-target or
** host was cut, and a garbled request sent.  So those are refused here. */
#if LWS_LIBRARY_VERSION_MAJOR == 4 && LWS_LIBRARY_VERSION_MINOR < 2
#define TARGET_MAX       (2048 - 1 - sizeof "GET  HTTP/1.1\r\n" + 1)   /* 2032 */
#define HOST_MAX         (128 - 1 - sizeof "Host: \r\n" + 1)           /* 119 */
#endif

/* lws's own opcode for a close frame: private in lws 4.1 (lib/core/
** private-lib-core.h), the hole at 4 in the public lws_write_protocol ABI.
** See send_close() for why we write the close frame ourselves. */
#define DT_LWS_WRITE_CLOSE ((enum lws_write_protocol)4)

enum { ST_CONNECTING, ST_OPEN, ST_CLOSING, ST_CLOSED };
static const char *const state_names[] = {"connecting", "open", "closing", "closed"};

enum { K_TEXT, K_BINARY, K_PING };


/* ---------------------------------------------------------------------- */
/* types                                                                   */
/* ---------------------------------------------------------------------- */

typedef struct SendMsg {
  struct SendMsg *next;
  size_t len, off;          /* payload length, bytes already written */
  int kind;
  unsigned char buf[];      /* LWS_PRE bytes of headroom, then the payload */
} SendMsg;

typedef struct RecvMsg {
  struct RecvMsg *next;
  char *data;
  size_t len;
  int binary;
} RecvMsg;

typedef struct Conn Conn;
typedef struct WsState WsState;

typedef struct Ws {
  dt_obj base;
  Conn *conn;               /* NULL once lws let go, or after abort/__gc */
  int state;
  int http_status;
  char protocol[64];
  /* outgoing */
  SendMsg *sq_head, *sq_tail;
  size_t sq_bytes, send_buffer;
  /* incoming: the message being assembled, then complete ones */
  dt_buf rx;
  int rx_binary;
  RecvMsg *rq_head, *rq_tail;
  size_t rq_bytes, recv_buffer, max_message;
  int rx_paused;
  lua_Integer pongs;
  /* closing */
  int close_requested;      /* ws:close() called: close after the queue */
  int close_code;           /* ours, or the peer's once it sent one */
  char close_reason[MAX_REASON + 1];
  int peer_closed;          /* the peer's close frame arrived */
  /* failure (connection error, or the connection dropped) */
  const char *errcode;      /* NULL if none; a static string */
  char errmsg[200];
} Ws;

struct Conn {
  Ws *ws;                   /* NULL once the Lua object let go */
  WsState *st;
  Conn *prev, *next;        /* in st's list, for shutdown */
  struct lws *wsi;          /* current attempt, NULL between attempts */
  int wsi_alive;            /* lws holds this Conn (until WSI_DESTROY) */
  int seen;                 /* lws called us for the current attempt */
  int established;
  int closing;              /* our close frame is sent */
  int rx_drop;              /* ignore what still arrives */
  uint64_t last_rx;         /* loop time (ms) of the last frame received */
  char tls_error[160];      /* why the server's certificate was refused */
  int retry;                /* after this wsi is gone, try the next address */
  int dns_pending;
  uv_getaddrinfo_t dns;
  struct addrinfo *ai, *ai_next;
  /* what the connection attempt needs; lws keeps pointers to some */
  struct lws_vhost *vhost;
  lws_retry_bo_t policy;
  int port, tls, tls_flags;
  char *hostname;           /* for the resolver */
  char *unix_path;          /* "+/path": connect to a unix socket instead */
  lua_Integer peer_uids[2];   /* or -1: who may listen there */
  char *host;               /* the Host header: host[:port] */
  char *path;               /* "/..." with the query */
  char *protocols;          /* "a,b" or NULL */
  char *headers;            /* "Name: value\r\n"... or NULL */
  size_t headers_len;
};

typedef struct CaVhost {
  struct CaVhost *next;
  char *ca_file;
  struct lws_vhost *vh;
} CaVhost;

struct WsState {
  dt_loop *loop;
  struct lws_context *ctx;  /* lws sets it to NULL when fully destroyed */
  CaVhost *vhosts;
  int nvhosts;
  Conn *conns;
  int ndns;
};


/* ---------------------------------------------------------------------- */
/* small helpers                                                           */
/* ---------------------------------------------------------------------- */

static char *dupstr (const char *s, size_t n) {
  char *d = (char *)malloc(n + 1);
  if (d) { memcpy(d, s, n); d[n] = '\0'; }
  return d;
}

static void set_error (Ws *ws, const char *code, const char *msg) {
  if (ws->errcode) return;   /* the first cause is the one worth reporting */
  ws->errcode = code;
  snprintf(ws->errmsg, sizeof ws->errmsg, "%s", msg);
}

static void free_queues (Ws *ws) {
  while (ws->sq_head) {
    SendMsg *m = ws->sq_head;
    ws->sq_head = m->next;
    free(m);
  }
  ws->sq_tail = NULL;
  ws->sq_bytes = 0;
  while (ws->rq_head) {
    RecvMsg *m = ws->rq_head;
    ws->rq_head = m->next;
    free(m->data);
    free(m);
  }
  ws->rq_tail = NULL;
  ws->rq_bytes = 0;
  dt_buf_free(&ws->rx);
}

static void conn_free (Conn *c) {
  WsState *st = c->st;
  if (c->prev) c->prev->next = c->next;
  else st->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->ai) uv_freeaddrinfo(c->ai);
  free(c->hostname);
  free(c->unix_path);
  free(c->host);
  free(c->path);
  free(c->protocols);
  free(c->headers);
  free(c);
}

/* Free c if nothing refers to it any more. */
static void conn_check (Conn *c) {
  if (c->ws == NULL && !c->wsi_alive && !c->dns_pending) conn_free(c);
}

/* The connection is over for good: the userdata lets go of its Conn and
** is unpinned when next drained (after one last signal). */
static void ws_finish (Ws *ws) {
  Conn *c = ws->conn;
  if (ws->state != ST_CLOSED) {
    ws->state = ST_CLOSED;
    if (ws->peer_closed || ws->close_requested) {}
    else if (c && !c->established)
      /* lws ends a stalled handshake with no CONNECTION_ERROR */
      set_error(ws, "ETIMEDOUT", "no answer to the WebSocket upgrade in time");
    else
      set_error(ws, "ECONNRESET", "connection closed");
  }
  if (c) {
    ws->conn = NULL;
    c->ws = NULL;
    conn_check(c);
  }
  dt_release(&ws->base);
}

static size_t msg_cost (size_t len) {
  return len + MSG_OVERHEAD;
}


/* ---------------------------------------------------------------------- */
/* connecting                                                              */
/* ---------------------------------------------------------------------- */

static void conn_next (Conn *c);

static int ws_callback (struct lws *wsi, enum lws_callback_reasons reason,
                        void *user, void *in, size_t len);

static const struct lws_protocols protocols[] = {
  {"dt-ws-client", ws_callback, 0, FRAG_SIZE, 0, NULL, 0},
  {NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Start a connection to the address c->ai_next. */
static void conn_start (Conn *c) {
  Ws *ws = c->ws;
  struct lws_client_connect_info ci;
  struct addrinfo *a = c->ai_next;
  char addr[64];
  struct lws *wsi;
  if (c->unix_path == NULL) {
    c->ai_next = a->ai_next;
    if (a->ai_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, addr, sizeof addr);
    else
      uv_ip4_name((const struct sockaddr_in *)a->ai_addr, addr, sizeof addr);
  }
  memset(&ci, 0, sizeof ci);
  ci.context = c->st->ctx;
  ci.vhost = c->vhost;
  ci.address = c->unix_path ? c->unix_path : addr;   /* lws copies it */
  ci.port = c->port;
  ci.ssl_connection = c->tls ? (LCCSCF_USE_SSL | c->tls_flags) : 0;
  ci.path = c->path;
  ci.host = c->host;
  ci.protocol = c->protocols;
  ci.local_protocol_name = protocols[0].name;
  ci.alpn = "http/1.1";       /* a ws upgrade is HTTP/1.1, never h2 */
  ci.userdata = c;
  ci.retry_and_idle_policy = &c->policy;
  c->seen = 0;
  c->retry = 0;
  c->tls_error[0] = '\0';
  c->wsi_alive = 1;
  wsi = lws_client_connect_via_info(&ci);
  if (wsi != NULL) {
    if (c->wsi_alive) c->wsi = wsi;
    return;
  }
  /* NULL: lws gave the attempt up. */
  if (!c->wsi_alive) return;   /* its WSI_DESTROY came already and decided */
  if (!c->seen) c->wsi_alive = 0;   /* lws never knew c: it holds nothing */
  /* else lws might still send WSI_DESTROY about it: c stays valid until
  ** then (or until shutdown), but the object is not kept waiting */
  if (ws == NULL || c->ws == NULL) { conn_check(c); return; }
  if (c->ai_next && !c->seen) { conn_next(c); return; }
  set_error(ws, "ECONNREFUSED", "cannot start the connection");
  ws_finish(ws);
}

/* Try the next address, or fail with the error of the last attempt. */
static void conn_next (Conn *c) {
  Ws *ws = c->ws;
  if (ws == NULL) { conn_check(c); return; }
  if (c->ai_next == NULL) {
    set_error(ws, "ECONNREFUSED", "connection refused");
    ws_finish(ws);
    return;
  }
  ws->errcode = NULL;   /* the next attempt's error is the one to report */
  conn_start(c);
}

static void dns_done (uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  Conn *c = (Conn *)req->data;
  Ws *ws = c->ws;
  c->dns_pending = 0;
  c->st->ndns--;
  if (ws == NULL) {   /* the object let go meanwhile */
    if (res) uv_freeaddrinfo(res);
    conn_check(c);
    return;
  }
  if (status < 0 || res == NULL) {
    char msg[200];
    const char *code = status == UV_ECANCELED ? "ECANCELED" : "ENOTFOUND";
    snprintf(msg, sizeof msg, "cannot resolve %s: %s", c->hostname,
             uv_strerror(status < 0 ? status : UV_EAI_NONAME));
    set_error(ws, code, msg);
    if (res) uv_freeaddrinfo(res);
    ws_finish(ws);
    return;
  }
  c->ai = c->ai_next = res;
  conn_start(c);
}

/* The errno of a failed connect, if the socket still has one pending. */
static int socket_error (struct lws *wsi) {
  int fd = lws_get_socket_fd(wsi), err = 0;
  socklen_t sl = sizeof err;
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) return 0;
  return err;
}

static int contains (const char *s, const char *what) {
  size_t n = strlen(what);
  for (; *s; s++)
    if (strncasecmp(s, what, n) == 0) return 1;
  return 0;
}

/* With peer_uids: the unix socket's listener must have one of those uids
** (dt_peer_check); dtlocal reaches each sandbox's daemon this way and must
** not talk to another sandbox's, or the host's. */
static int peer_ok (Conn *c, struct lws *wsi) {
  char msg[200];
  int ok = dt_peer_check((int)lws_get_socket_fd(wsi), c->peer_uids, c->unix_path + 1, msg, sizeof msg);
  if (ok < 0) snprintf(msg, sizeof msg, "cannot read the unix socket's peer credentials");
  if (ok <= 0 && c->ws) set_error(c->ws, "EPEER", msg);
  return ok > 0;
}

/* LWS_CALLBACK_CLIENT_CONNECTION_ERROR: classify, maybe try the next address. */
static void on_connect_error (Conn *c, struct lws *wsi, const char *why) {
  Ws *ws = c->ws;
  int err = socket_error(wsi);
  unsigned int status = lws_http_client_http_response(wsi);
  char msg[200];
  if (why == NULL) why = "connection failed";
  if (err == ECONNREFUSED || err == ENETUNREACH || err == EHOSTUNREACH ||
      err == EADDRNOTAVAIL || err == ETIMEDOUT) {
    snprintf(msg, sizeof msg, "cannot connect to %s: %s", c->host,
             uv_strerror(-err));
    set_error(ws, uv_err_name(-err), msg);
    if (c->ai_next && !c->established) c->retry = 1;
    return;
  }
  if (status >= 100 && status != 101) {
    ws->http_status = (int)status;
    snprintf(msg, sizeof msg, "WebSocket upgrade refused with HTTP %u", status);
    set_error(ws, "EHANDSHAKE", msg);
    return;
  }
  if (c->tls_error[0]) {
    snprintf(msg, sizeof msg, "cannot connect to %s: %s", c->host, c->tls_error);
    set_error(ws, "ETLS", msg);
    return;
  }
  snprintf(msg, sizeof msg, "cannot connect to %s: %s", c->host, why);
  if (contains(why, "tls") || contains(why, "ssl") || contains(why, "cert"))
    set_error(ws, "ETLS", msg);
  else if (contains(why, "timed out") || contains(why, "timeout"))
    set_error(ws, "ETIMEDOUT", msg);
  else if (contains(why, "HS:") || contains(why, "handshake"))
    set_error(ws, "EHANDSHAKE", msg);
  else if (contains(why, "parsing header")) {
    /* lws's parser fails alike on a malformed answer and on one whose
    ** headers overflow its header table (HANDSHAKE_MAX) */
    snprintf(msg, sizeof msg, "cannot connect to %s: the WebSocket upgrade response is "
             "malformed or its headers exceed the 64 KiB handshake limit", c->host);
    set_error(ws, "EHANDSHAKE", msg);
  }
  else if (err != 0) {
    snprintf(msg, sizeof msg, "cannot connect to %s: %s", c->host,
             uv_strerror(-err));
    set_error(ws, uv_err_name(-err), msg);
  }
  else
    set_error(ws, "ECONNRESET", msg);
}


/* ---------------------------------------------------------------------- */
/* the lws callback                                                        */
/* ---------------------------------------------------------------------- */

/* Send our close frame (from WRITEABLE only) and give the peer a few
** seconds to answer.  The usual way, lws_close_reason() and returning -1,
** loses the close frame with Debian's lws 4.1 (a _DEBUG build): after a -1,
** lws_service_fd_tsi() calls lws_close_free_wsi() a second time as a "uv
** repeat test", and that call kills the socket while the close frame is
** still queued.  The peer's answer is taken in WS_PEER_INITIATED_CLOSE. */
static int send_close (Conn *c, struct lws *wsi, int code, const char *reason) {
  unsigned char buf[LWS_PRE + 2 + MAX_REASON];
  size_t rl = strlen(reason);
  if (rl > MAX_REASON) rl = MAX_REASON;
  c->closing = 1;
  buf[LWS_PRE] = (unsigned char)(code >> 8);
  buf[LWS_PRE + 1] = (unsigned char)(code & 0xff);
  memcpy(buf + LWS_PRE + 2, reason, rl);
  if (lws_write(wsi, buf + LWS_PRE, 2 + rl, DT_LWS_WRITE_CLOSE) < 0) return -1;
  lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, 5);
  return 0;
}

/* Write one frame of the queue head (or the close frame) from WRITEABLE. */
static int on_writeable (Conn *c, struct lws *wsi) {
  Ws *ws = c->ws;
  SendMsg *m;
  if (c->closing) return 0;
  if (ws == NULL)   /* the object was collected: close politely */
    return send_close(c, wsi, LWS_CLOSE_STATUS_GOINGAWAY, "");
  m = ws->sq_head;
  if (m != NULL) {
    size_t n = m->len - m->off;
    int flags;
    if (m->kind == K_PING)
      flags = LWS_WRITE_PING;
    else {
      int is_start = m->off == 0, is_end;
      if (n > FRAG_SIZE) n = FRAG_SIZE;
      is_end = m->off + n == m->len;
      flags = lws_write_ws_flags(m->kind == K_TEXT ? LWS_WRITE_TEXT
                                                   : LWS_WRITE_BINARY,
                                 is_start, is_end);
    }
    /* the LWS_PRE bytes before this frame are headroom or already-sent
    ** payload, which lws may overwrite with the frame header */
    if (lws_write(wsi, m->buf + LWS_PRE + m->off, n, (enum lws_write_protocol)flags) < 0) {
      set_error(ws, "EPIPE", "write failed");
      return -1;
    }
    m->off += n;
    if (m->off == m->len) {
      ws->sq_head = m->next;
      if (ws->sq_head == NULL) ws->sq_tail = NULL;
      ws->sq_bytes -= msg_cost(m->len);
      free(m);
      dt_signal(&ws->base);   /* room in the queue */
    }
    if (ws->sq_head != NULL || ws->close_requested)
      lws_callback_on_writable(wsi);
    return 0;
  }
  if (ws->close_requested) return send_close(c, wsi, ws->close_code, ws->close_reason);
  return 0;
}

/* Pause reading while Lua has too much unread. */
static void check_rx_flow (Ws *ws, struct lws *wsi) {
  if (!ws->rx_paused && ws->rq_bytes >= ws->recv_buffer) {
    ws->rx_paused = 1;
    lws_rx_flow_control(wsi, 0);
  }
}

static int on_receive (Conn *c, struct lws *wsi, void *in, size_t len) {
  Ws *ws = c->ws;
  RecvMsg *m;
  if (ws == NULL || c->rx_drop) return 0;
  if (lws_is_first_fragment(wsi)) {
    ws->rx.len = 0;
    ws->rx_binary = lws_frame_is_binary(wsi);
  }
  if (ws->rx.len + len > ws->max_message) {
    /* drop the rest and close with 1009 once the queue is out */
    set_error(ws, "EMSGSIZE", "message larger than max_message");
    dt_buf_free(&ws->rx);
    c->rx_drop = 1;
    if (!ws->close_requested) {
      ws->close_requested = 1;
      ws->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
      snprintf(ws->close_reason, sizeof ws->close_reason, "message too big");
      ws->state = ST_CLOSING;
    }
    lws_callback_on_writable(wsi);
    return 0;
  }
  if (len > 0 && dt_buf_add(&ws->rx, in, len) < 0) {
    set_error(ws, "ENOMEM", "out of memory receiving a message");
    return -1;
  }
  if (!lws_is_final_fragment(wsi)) return 0;
  m = (RecvMsg *)malloc(sizeof *m);
  if (m == NULL) {
    set_error(ws, "ENOMEM", "out of memory receiving a message");
    return -1;
  }
  /* the message takes the assembly buffer over */
  m->next = NULL;
  m->data = ws->rx.data;
  m->len = ws->rx.len;
  m->binary = ws->rx_binary;
  ws->rx.data = NULL;
  ws->rx.len = ws->rx.cap = 0;
  if (ws->rq_tail) ws->rq_tail->next = m;
  else ws->rq_head = m;
  ws->rq_tail = m;
  ws->rq_bytes += msg_cost(m->len);
  check_rx_flow(ws, wsi);
  dt_signal(&ws->base);
  return 0;
}

static void on_peer_close (Ws *ws, const unsigned char *p, size_t len) {
  ws->peer_closed = 1;
  if (len >= 2) {
    size_t n = len - 2;
    if (n > MAX_REASON) n = MAX_REASON;
    ws->close_code = (p[0] << 8) | p[1];
    memcpy(ws->close_reason, p + 2, n);
    ws->close_reason[n] = '\0';
  }
  else {
    ws->close_code = LWS_CLOSE_STATUS_NO_STATUS;   /* 1005: none given */
    ws->close_reason[0] = '\0';
  }
  if (ws->state < ST_CLOSING) ws->state = ST_CLOSING;
  dt_signal(&ws->base);
}

static int ws_callback (struct lws *wsi, enum lws_callback_reasons reason,
                        void *user, void *in, size_t len) {
  Conn *c;
  Ws *ws;
  switch (reason) {
    case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION:
      /* here `user` is OpenSSL's X509_STORE_CTX and `len` preverify_ok */
      c = wsi ? (Conn *)lws_wsi_user(wsi) : NULL;
      if (c && !len && !c->tls_error[0]) {
        int err = X509_STORE_CTX_get_error((X509_STORE_CTX *)user);
        snprintf(c->tls_error, sizeof c->tls_error, "certificate verification failed: %s",
                 X509_verify_cert_error_string(err));
      }
      return 0;   /* OpenSSL's verdict stands */
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
    case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH:
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
      break;   /* client-connection events: `user` is our Conn */
    default:
      return 0;   /* vhost/protocol-level and other roles' events */
  }
  c = (Conn *)user;
  if (c == NULL) return 0;
  if (c->wsi_alive && (c->wsi == NULL || c->wsi == wsi)) c->seen = 1;
  ws = c->ws;
  switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
      char **p = (char **)in;
      /* connected, nothing sent yet: the last moment to check who listens */
      if (c->peer_uids[0] >= 0 && !peer_ok(c, wsi)) return -1;
      if (c->headers_len == 0) return 0;
      if (c->headers_len >= len) {   /* does not fit the handshake buffer */
        if (ws) set_error(ws, "EINVAL", "WebSocket upgrade request too large: over the "
                          "64 KiB handshake limit (URL, headers and subprotocols)");
        return -1;
      }
      memcpy(*p, c->headers, c->headers_len);
      *p += c->headers_len;
      return 0;
    }
    case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH:
      /* the response headers are still attached here, not after */
      if (ws) {
        int n = lws_hdr_copy(wsi, ws->protocol, sizeof ws->protocol,
                             WSI_TOKEN_PROTOCOL);
        if (n < 0) ws->protocol[0] = '\0';
        ws->http_status = 101;
      }
      return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
      c->established = 1;
      c->last_rx = uv_now(&c->st->loop->uv);
      if (ws == NULL) {   /* collected while connecting */
        lws_callback_on_writable(wsi);
        return 0;
      }
      ws->state = ST_OPEN;
      if (ws->sq_head || ws->close_requested) lws_callback_on_writable(wsi);
      dt_signal(&ws->base);
      return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
      if (ws) {
        on_connect_error(c, wsi, (const char *)in);
        dt_signal(&ws->base);
      }
      return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
      return on_writeable(c, wsi);
    case LWS_CALLBACK_CLIENT_RECEIVE:
      c->last_rx = uv_now(&c->st->loop->uv);
      return on_receive(c, wsi, in, len);
    case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
      c->last_rx = uv_now(&c->st->loop->uv);
      if (ws) {
        ws->pongs++;
        dt_signal(&ws->base);
      }
      return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
      if (c->closing) {   /* the answer to ours: done, no second close frame */
        if (ws) ws->peer_closed = 1;
        return 1;
      }
      if (ws) on_peer_close(ws, (const unsigned char *)in, len);
      return 0;   /* lws answers the close frame and closes */
    case LWS_CALLBACK_CLIENT_CLOSED:
      if (ws && ws->state != ST_CLOSED) {
        if (!ws->peer_closed && !ws->close_requested) {
          /* lws hangs up itself when keepalive pings go unanswered */
          uint64_t quiet = uv_now(&c->st->loop->uv) - c->last_rx;
          unsigned hup = c->policy.secs_since_valid_hangup;
          if (hup && quiet + 250 >= (uint64_t)hup * 1000) {
            char msg[100];
            snprintf(msg, sizeof msg, "no answer to keepalive pings for %u s", hup);
            set_error(ws, "ETIMEDOUT", msg);
          }
          else
            set_error(ws, "ECONNRESET", "connection closed by the peer without a close frame");
        }
        ws->state = ST_CLOSED;
        dt_signal(&ws->base);
      }
      return 0;
    case LWS_CALLBACK_WSI_DESTROY:
      if (c->wsi != NULL && c->wsi != wsi) return 0;   /* an older attempt */
      c->wsi = NULL;
      c->wsi_alive = 0;
      if (c->retry && c->ws != NULL && c->ai_next) {
        conn_next(c);
        return 0;
      }
      if (c->ws) ws_finish(c->ws);
      else conn_check(c);
      return 0;
    default:
      return 0;
  }
}


/* ---------------------------------------------------------------------- */
/* the context                                                             */
/* ---------------------------------------------------------------------- */

static WsState *get_state (dt_loop *loop) {
  WsState *st = (WsState *)loop->ws;
  if (st == NULL) {
    st = (WsState *)calloc(1, sizeof *st);
    if (st == NULL) return NULL;
    st->loop = loop;
    loop->ws = st;
  }
  return st;
}

static void lws_log (int level, const char *line) {
  (void)level;
  fputs(line, stderr);
}

/* Create the lws context on first use; NULL with *why set on failure. */
static struct lws_context *get_context (WsState *st, const char **why) {
  struct lws_context_creation_info info;
  void *foreign[1];
  const char *dbg;
  if (st->ctx) return st->ctx;
  /* lws logs to stderr by default; we report errors ourselves */
  dbg = getenv("DTLUA_LWS_DEBUG");
  lws_set_log_level(dbg ? atoi(dbg) : 0, lws_log);
  memset(&info, 0, sizeof info);
  foreign[0] = &st->loop->uv;   /* only read during creation */
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                 LWS_SERVER_OPTION_VALIDATE_UTF8;
  info.foreign_loops = foreign;
  info.pcontext = &st->ctx;
  info.timeout_secs = 60;   /* lws's handshake timeouts; callers may use shorter */
  info.gid = -1;
  info.uid = -1;
  info.pt_serv_buf_size = HANDSHAKE_MAX + HS_SLACK;   /* see HANDSHAKE_MAX */
  info.max_http_header_data = 0;                      /* 0: the unsigned int one counts */
  info.max_http_header_data2 = HANDSHAKE_MAX;
  st->ctx = lws_create_context(&info);
  if (st->ctx == NULL)
    *why = "cannot create the WebSocket context (is libwebsockets-evlib-uv installed?)";
  return st->ctx;
}

/* The vhost whose client TLS context trusts ca_file (created once per file). */
static struct lws_vhost *ca_vhost (WsState *st, const char *ca_file, const char **why) {
  struct lws_context_creation_info info;
  CaVhost *v;
  char name[32];
  for (v = st->vhosts; v; v = v->next)
    if (strcmp(v->ca_file, ca_file) == 0) return v->vh;
  v = (CaVhost *)calloc(1, sizeof *v);
  if (v == NULL || (v->ca_file = dupstr(ca_file, strlen(ca_file))) == NULL) {
    free(v);
    *why = "out of memory";
    return NULL;
  }
  snprintf(name, sizeof name, "dt-ca-%d", ++st->nvhosts);
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.vhost_name = name;
  info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
  info.client_ssl_ca_filepath = v->ca_file;
  v->vh = lws_create_vhost(st->ctx, &info);
  if (v->vh == NULL) {
    free(v->ca_file);
    free(v);
    *why = "cannot load ca_file";
    return NULL;
  }
  v->next = st->vhosts;
  st->vhosts = v;
  return v->vh;
}

static void count_closing (uv_handle_t *h, void *arg) {
  if (uv_is_closing(h)) (*(int *)arg)++;
}

/* Destroy the context: lws closes its handles through the loop, so the
** loop must run until they are closed; a second lws_context_destroy then
** frees what is left (and sets st->ctx to NULL through pcontext). */
void dt_ws_shutdown (dt_loop *loop) {
  WsState *st = (WsState *)loop->ws;
  Conn *c;
  int i;
  if (st == NULL) return;
  for (c = st->conns; c; c = c->next)
    if (c->dns_pending) uv_cancel((uv_req_t *)&c->dns);
  if (st->ctx) lws_context_destroy(st->ctx);
  for (i = 0; i < 10000 && (st->ctx || st->ndns > 0); i++) {
    int closing = 0;
    /* a resolver request may still run on the thread pool: wait for it */
    uv_run(&loop->uv, st->ndns > 0 ? UV_RUN_ONCE : UV_RUN_NOWAIT);
    uv_walk(&loop->uv, count_closing, &closing);
    if (st->ctx && closing == 0) lws_context_destroy(st->ctx);
  }
  /* whatever lws did not give back is ours to free now */
  while (st->conns) {
    c = st->conns;
    if (c->ws) c->ws->conn = NULL;
    conn_free(c);
  }
  while (st->vhosts) {
    CaVhost *v = st->vhosts;
    st->vhosts = v->next;
    free(v->ca_file);
    free(v);
  }
  free(st);
  loop->ws = NULL;
}


/* ---------------------------------------------------------------------- */
/* connect: argument checking                                              */
/* ---------------------------------------------------------------------- */

static int is_tchar (int ch) {   /* an HTTP token character */
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int is_token (const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}


typedef struct Url {
  int tls, port;
  char hostname[256];       /* for the resolver, without brackets */
  char host[300];           /* the Host header */
  const char *path;         /* into the URL: path and query, no fragment */
  size_t pathlen;
} Url;

/* Parse ws[s]://host[:port][/path][?query][#fragment]; NULL or what is wrong. */
static const char *parse_url (const char *url, Url *u) {
  const char *p, *h, *he, *rest;
  size_t hl;
  long port;
  if (strncasecmp(url, "ws://", 5) == 0) { u->tls = 0; p = url + 5; port = 80; }
  else if (strncasecmp(url, "wss://", 6) == 0) { u->tls = 1; p = url + 6; port = 443; }
  else return "URL must start with ws:// or wss://";
  for (rest = p; *rest; rest++)
    if ((unsigned char)*rest <= ' ' || *rest == 0x7f)
      return "URL contains spaces or control characters";
  if (*p == '[') {   /* an IPv6 literal */
    h = p + 1;
    he = strchr(h, ']');
    if (he == NULL) return "unterminated [ in the URL's host";
    rest = he + 1;
  }
  else {
    h = p;
    he = p + strcspn(p, ":/?#");
    if (memchr(h, '@', (size_t)(he - h))) return "user info in URLs is not supported";
    rest = he;
  }
  hl = (size_t)(he - h);
  if (hl == 0 || hl >= sizeof u->hostname) return "URL has no valid host";
  if (*rest == ':') {
    char *end;
    if (rest[1] < '0' || rest[1] > '9') return "URL has an invalid port";
    port = strtol(rest + 1, &end, 10);
    if (port < 1 || port > 65535) return "URL has an invalid port";
    rest = end;
  }
  if (*rest != '\0' && *rest != '/' && *rest != '?' && *rest != '#')
    return "URL has an invalid authority";
  u->port = (int)port;
  memcpy(u->hostname, h, hl);
  u->hostname[hl] = '\0';
  snprintf(u->host, sizeof u->host, *p == '[' ? "[%s]" : "%s", u->hostname);
  if (port != (u->tls ? 443 : 80)) {
    size_t n = strlen(u->host);
    snprintf(u->host + n, sizeof u->host - n, ":%ld", port);
  }
  u->path = rest;
  u->pathlen = strcspn(rest, "#");
  return NULL;
}

/* headers = { Name = "value", ... }: pushes the raw header lines as one
** string.  Host and the handshake's own headers are refused.  Origin goes
** here too: lws 4.1 would write its own origin field as "http://" .. value. */
static void push_headers (lua_State *L, int opts) {
  static const char *const reserved[] = {
    "host", "upgrade", "connection", "sec-websocket-key",
    "sec-websocket-version", "sec-websocket-protocol",
    "sec-websocket-extensions", "content-length", "transfer-encoding", NULL
  };
  int t, lines, n = 0, i;
  luaL_Buffer b;
  if (lua_getfield(L, opts, "headers") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    return;
  }
  if (!lua_istable(L, -1)) luaL_error(L, "option 'headers' must be a table");
  t = lua_absindex(L, -1);
  lua_newtable(L);
  lines = lua_absindex(L, -1);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    size_t kl, vl, j;
    const char *k, *v;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "header names must be strings");
    k = lua_tolstring(L, -2, &kl);
    if (!is_token(k, kl)) luaL_error(L, "invalid header name '%s'", k);
    for (i = 0; reserved[i]; i++)
      if (strcasecmp(k, reserved[i]) == 0)
        luaL_error(L, "header '%s' is set by the WebSocket handshake itself", k);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "header '%s' must be a string", k);
    v = lua_tolstring(L, -1, &vl);   /* converts a number in the value slot only */
    for (j = 0; j < vl; j++)
      if (v[j] == '\r' || v[j] == '\n' || v[j] == '\0')
        luaL_error(L, "header '%s' contains a line break or NUL", k);
    lua_pushfstring(L, "%s: %s\r\n", k, v);
    lua_rawseti(L, lines, ++n);
    lua_pop(L, 1);
  }
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, lines, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);      /* headers, lines, result */
  lua_replace(L, t);        /* result, lines */
  lua_pop(L, 1);            /* result */
}

/* protocols = {"a", "b"}: pushes "a,b", or nil if none offered. */
static void push_protocols (lua_State *L, int opts) {
  lua_Integer i, n;
  luaL_Buffer b;
  int t;
  if (lua_getfield(L, opts, "protocols") == LUA_TNIL) return;
  if (!lua_istable(L, -1)) luaL_error(L, "option 'protocols' must be a list of strings");
  t = lua_absindex(L, -1);
  n = luaL_len(L, t);
  if (n == 0) { lua_pop(L, 1); lua_pushnil(L); return; }
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    size_t l;
    const char *s;
    if (i > 1) luaL_addchar(&b, ',');
    if (lua_geti(L, t, i) != LUA_TSTRING) luaL_error(L, "protocols[%d] must be a string", (int)i);
    s = lua_tolstring(L, -1, &l);
    if (!is_token(s, l)) luaL_error(L, "invalid subprotocol name '%s'", s);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_replace(L, t);
}

static lua_Integer opt_integer (lua_State *L, int opts, const char *k,
                                lua_Integer def, lua_Integer lo, lua_Integer hi) {
  lua_Integer v;
  int isnum;
  if (lua_getfield(L, opts, k) == LUA_TNIL) { lua_pop(L, 1); return def; }
  v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || v < lo || v > hi)
    luaL_error(L, "option '%s' must be an integer in [%I, %I]", k, lo, hi);
  lua_pop(L, 1);
  return v;
}

static const char *opt_string (lua_State *L, int opts, const char *k) {
  const char *s = NULL;
  int ty = lua_getfield(L, opts, k);
  if (ty == LUA_TSTRING) s = lua_tostring(L, -1);
  else if (ty != LUA_TNIL) luaL_error(L, "option '%s' must be a string", k);
  lua_pop(L, 1);   /* the options table still holds the string */
  return s;
}

static void check_options (lua_State *L, int opts) {
  static const char *const known[] = {
    "url", "headers", "protocols", "ca_file", "insecure", "ping_interval",
    "ping_timeout", "max_message", "recv_buffer", "send_buffer", "unix_socket", "peer_uids",
    NULL
  };
  lua_pushnil(L);
  while (lua_next(L, opts)) {
    int i;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (i = 0; known[i]; i++)
        if (strcmp(k, known[i]) == 0) break;
      if (known[i]) continue;
    }
    luaL_error(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL));
  }
}


/* ---------------------------------------------------------------------- */
/* core.ws.connect                                                         */
/* ---------------------------------------------------------------------- */

/* core.ws.connect(opts) -> WebSocket (connecting), or nil, msg, code when
** the WebSocket machinery itself cannot start, or the upgrade request could
** not be sent whole (EINVAL: over HANDSHAKE_MAX, TARGET_MAX or HOST_MAX).
** Connection failures are reported by the object (ws:state() "closed",
** ws:error()). */
static int l_connect (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  WsState *st;
  struct lws_context *ctx;
  struct lws_vhost *vh = NULL;
  const char *url, *bad, *ca_file, *why = NULL, *headers, *protos, *unix_socket;
  size_t headers_len;
  lua_Integer ping, ping_timeout, peer_uids[2];
  size_t max_message, recv_buffer, send_buffer;
  int insecure, base;
  Url u;
  Ws *ws;
  Conn *c;
  struct in6_addr a6;
  struct in_addr a4;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_options(L, 1);
  url = opt_string(L, 1, "url");
  if (url == NULL) return luaL_argerror(L, 1, "option 'url' is required");
  if ((bad = parse_url(url, &u)) != NULL) return luaL_argerror(L, 1, bad);
  ca_file = opt_string(L, 1, "ca_file");
  unix_socket = opt_string(L, 1, "unix_socket");
  if (unix_socket && (unix_socket[0] != '/' || strlen(unix_socket) > 100))
    return luaL_argerror(L, 1, "option 'unix_socket' must be an absolute path of at most 100 bytes");
  if (unix_socket && u.tls)
    return luaL_argerror(L, 1, "option 'unix_socket' goes with ws://, not wss://");
  lua_getfield(L, 1, "peer_uids");
  if ((bad = dt_peer_uids(L, -1, unix_socket != NULL, peer_uids)) != NULL)
    return luaL_argerror(L, 1, bad);
  lua_pop(L, 1);
  lua_getfield(L, 1, "insecure");
  insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  ping = opt_integer(L, 1, "ping_interval", DEF_PING, 0, 65535);
  ping_timeout = opt_integer(L, 1, "ping_timeout", DEF_PING_TIMEOUT, 1, 65535);
  max_message = (size_t)opt_integer(L, 1, "max_message", DEF_MAX_MESSAGE, 1, (lua_Integer)1 << 40);
  recv_buffer = (size_t)opt_integer(L, 1, "recv_buffer", DEF_RECV_BUFFER, 1, (lua_Integer)1 << 40);
  send_buffer = (size_t)opt_integer(L, 1, "send_buffer", DEF_SEND_BUFFER, 1, (lua_Integer)1 << 40);
  base = lua_gettop(L);
  push_headers(L, 1);                                   /* base+1 */
  push_protocols(L, 1);                                 /* base+2 */
  lua_pushstring(L, (u.pathlen == 0 || u.path[0] != '/') ? "/" : "");
  lua_pushlstring(L, u.path, u.pathlen);
  lua_concat(L, 2);                                     /* base+3: the path */
  headers = lua_tolstring(L, base + 1, &headers_len);
  protos = lua_tostring(L, base + 2);
  {
    /* what the upgrade request carries of ours; lws adds HS_SLACK at most */
    size_t target = strlen(lua_tostring(L, base + 3));
    size_t req = target + strlen(u.host) + headers_len + (protos ? strlen(protos) : 0);
#ifdef TARGET_MAX
    if (target > TARGET_MAX) {
      lua_pushfstring(L, "WebSocket URL too long: a path and query of %I bytes, over the %I "
                      "bytes libwebsockets %s sends", (lua_Integer)target,
                      (lua_Integer)TARGET_MAX, LWS_LIBRARY_VERSION);
      return dt_fail(L, lua_tostring(L, -1), "EINVAL");
    }
    if (strlen(u.host) > HOST_MAX) {
      lua_pushfstring(L, "WebSocket URL's host too long: %I bytes, over the %I bytes "
                      "libwebsockets %s sends", (lua_Integer)strlen(u.host),
                      (lua_Integer)HOST_MAX, LWS_LIBRARY_VERSION);
      return dt_fail(L, lua_tostring(L, -1), "EINVAL");
    }
#endif
    if (req > HANDSHAKE_MAX - HS_SLACK) {
      lua_pushfstring(L, "WebSocket upgrade request too large: %I bytes of URL, headers and "
                      "subprotocols, over the 64 KiB handshake limit", (lua_Integer)req);
      return dt_fail(L, lua_tostring(L, -1), "EINVAL");
    }
  }
  /* from here on nothing raises until the C memory has an owner */
  st = get_state(loop);
  if (st == NULL) return dt_fail(L, "out of memory", "ENOMEM");
  if ((ctx = get_context(st, &why)) == NULL) return dt_fail(L, why, "ENOTSUP");
  if (ca_file) {
    FILE *f = fopen(ca_file, "r");   /* lws would only say so at the handshake */
    if (f == NULL) {
      int e = errno;
      lua_pushfstring(L, "cannot read ca_file %s: %s", ca_file, strerror(e));
      return dt_fail(L, lua_tostring(L, -1), uv_err_name(-e));
    }
    fclose(f);
    if ((vh = ca_vhost(st, ca_file, &why)) == NULL) return dt_fail(L, why, "EINVAL");
  }
  ws = (Ws *)lua_newuserdatauv(L, sizeof *ws, 0);
  memset(ws, 0, sizeof *ws);
  dt_obj_init(loop, &ws->base);
  luaL_setmetatable(L, WS_TNAME);
  ws->state = ST_CLOSED;   /* until it has a connection */
  c = (Conn *)calloc(1, sizeof *c);
  if (c == NULL) return dt_fail(L, "out of memory", "ENOMEM");
  c->st = st;
  c->dns.data = c;
  c->peer_uids[0] = peer_uids[0];
  c->peer_uids[1] = peer_uids[1];
  c->vhost = vh;
  c->port = u.port;
  c->tls = u.tls;
  if (insecure)
    c->tls_flags = LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                   LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
  c->policy.secs_since_valid_ping = (uint16_t)ping;
  c->policy.secs_since_valid_hangup = (uint16_t)(ping ? (ping + ping_timeout > 65535
                                                  ? 65535 : ping + ping_timeout) : 0);
  c->hostname = dupstr(u.hostname, strlen(u.hostname));
  c->host = dupstr(u.host, strlen(u.host));
  c->path = dupstr(lua_tostring(L, base + 3), strlen(lua_tostring(L, base + 3)));
  c->headers_len = headers_len;
  if (headers_len) c->headers = dupstr(headers, headers_len);
  if (protos) c->protocols = dupstr(protos, strlen(protos));
  c->next = st->conns;
  if (st->conns) st->conns->prev = c;
  st->conns = c;
  if (!c->hostname || !c->host || !c->path || (headers_len && !c->headers) ||
      (protos && !c->protocols)) {
    conn_free(c);
    return dt_fail(L, "out of memory", "ENOMEM");
  }
  ws->state = ST_CONNECTING;
  ws->max_message = max_message;
  ws->recv_buffer = recv_buffer;
  ws->send_buffer = send_buffer;
  ws->conn = c;
  c->ws = ws;
  dt_pin(L, &ws->base, -1);
  if (unix_socket) {
    /* lws connects to a unix socket given as "+path" (LWS_WITH_UNIX_SOCK) */
    size_t n = strlen(unix_socket);
    c->unix_path = (char *)malloc(n + 2);
    if (c->unix_path == NULL) {
      set_error(ws, "ENOMEM", "out of memory");
      ws_finish(ws);
      return 1;
    }
    c->unix_path[0] = '+';
    memcpy(c->unix_path + 1, unix_socket, n + 1);
    /* lws reports no error for a unix socket nobody listens on (the
    ** attempt just hangs): a unix connect answers at once, so probe first */
    {
      struct sockaddr_un sa;
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = -1, e = 0;
      memset(&sa, 0, sizeof sa);
      sa.sun_family = AF_UNIX;
      memcpy(sa.sun_path, unix_socket, n + 1);
      if (fd >= 0) {
        rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
        e = errno;
        close(fd);
      }
      if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot connect to %s: %s", unix_socket, strerror(e));
        set_error(ws, e == ENOENT || e == ECONNREFUSED ? "ECONNREFUSED" : uv_err_name(-e), msg);
        ws_finish(ws);
        return 1;
      }
    }
    conn_start(c);
  }
  else if (uv_inet_pton(AF_INET, c->hostname, &a4) == 0 ||
      uv_inet_pton(AF_INET6, c->hostname, &a6) == 0) {
    /* a numeric host needs no resolver: connect now */
    struct addrinfo hints, *res = NULL;
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    rc = getaddrinfo(c->hostname, NULL, &hints, &res);
    c->dns_pending = 1;   /* as if from the resolver */
    st->ndns++;
    dns_done(&c->dns, rc == 0 ? 0 : UV_EAI_NONAME, rc == 0 ? res : NULL);
  }
  else {
    struct addrinfo hints;
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    rc = uv_getaddrinfo(&loop->uv, &c->dns, dns_done, c->hostname, NULL, &hints);
    if (rc < 0) {
      set_error(ws, "ENOTFOUND", uv_strerror(rc));
      ws_finish(ws);
    }
    else {
      c->dns_pending = 1;
      st->ndns++;
    }
  }
  return 1;
}


/* ---------------------------------------------------------------------- */
/* WebSocket methods                                                       */
/* ---------------------------------------------------------------------- */

static Ws *checkws (lua_State *L) {
  return (Ws *)luaL_checkudata(L, 1, WS_TNAME);
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int valid_utf8 (const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k, need;
    unsigned cp, min;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n - i <= need) return 0;
    for (k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += need + 1;
  }
  return 1;
}

/* Push nil, msg, code for an object that can no longer send. */
static int closed_fail (lua_State *L, Ws *ws) {
  if (ws->errcode) return dt_fail(L, ws->errmsg, ws->errcode);
  return dt_fail(L, "WebSocket is closed", "ECLOSED");
}

/* Let go of the Conn (from a Lua-called function): lws may still run the
** connection's end, but will no longer touch this object. */
static void detach (lua_State *L, Ws *ws, int polite) {
  Conn *c = ws->conn;
  if (c == NULL) return;
  ws->conn = NULL;
  c->ws = NULL;
  if (c->dns_pending)
    uv_cancel((uv_req_t *)&c->dns);   /* dns_done frees c */
  else if (c->wsi != NULL) {
    if (polite && c->established)
      lws_callback_on_writable(c->wsi);   /* WRITEABLE sends a 1001 close */
    else
      lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
  }
  conn_check(c);
  if (L) dt_unpin(L, &ws->base);
}

/* ws:state() -> "connecting" | "open" | "closing" | "closed" */
static int ws_state (lua_State *L) {
  lua_pushstring(L, state_names[checkws(L)->state]);
  return 1;
}

/* ws:protocol() -> the subprotocol the server selected, or nil */
static int ws_protocol (lua_State *L) {
  Ws *ws = checkws(L);
  if (ws->protocol[0]) lua_pushstring(L, ws->protocol);
  else lua_pushnil(L);
  return 1;
}

/* ws:http_status() -> status of the upgrade response, or nil if none came */
static int ws_http_status (lua_State *L) {
  Ws *ws = checkws(L);
  if (ws->http_status) lua_pushinteger(L, ws->http_status);
  else lua_pushnil(L);
  return 1;
}

/* ws:error() -> msg, code if the connection failed or broke, else nil */
static int ws_error (lua_State *L) {
  Ws *ws = checkws(L);
  if (ws->errcode == NULL) return 0;
  lua_pushstring(L, ws->errmsg);
  lua_pushstring(L, ws->errcode);
  return 2;
}

static int enqueue (lua_State *L, Ws *ws, const char *data, size_t len, int kind) {
  SendMsg *m = (SendMsg *)malloc(sizeof *m + LWS_PRE + len);
  if (m == NULL) return dt_fail(L, "out of memory", "ENOMEM");
  m->next = NULL;
  m->len = len;
  m->off = 0;
  m->kind = kind;
  memcpy(m->buf + LWS_PRE, data, len);
  if (ws->sq_tail) ws->sq_tail->next = m;
  else ws->sq_head = m;
  ws->sq_tail = m;
  ws->sq_bytes += msg_cost(len);
  if (ws->state == ST_OPEN && ws->conn && ws->conn->wsi)
    lws_callback_on_writable(ws->conn->wsi);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:send(data [, "text"|"binary"]) -> true (queued) | false (the send
** queue is full: wait on ws and retry) | nil, msg, code (closed).
** Messages queued while connecting go out once the connection is open. */
static int ws_send (lua_State *L) {
  static const char *const kinds[] = {"text", "binary", NULL};
  Ws *ws = checkws(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int kind = luaL_checkoption(L, 3, "text", kinds);
  if (kind == K_TEXT && !valid_utf8((const unsigned char *)data, len))
    return luaL_argerror(L, 2, "text message is not valid UTF-8 (send it as \"binary\")");
  if (ws->state >= ST_CLOSING || ws->close_requested || ws->conn == NULL)
    return closed_fail(L, ws);
  if (ws->sq_bytes > 0 && ws->sq_bytes + msg_cost(len) > ws->send_buffer) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return enqueue(L, ws, data, len, kind);
}

/* ws:ping([payload]) -> true | nil, msg, code; pongs are counted by ws:pongs() */
static int ws_ping (lua_State *L) {
  Ws *ws = checkws(L);
  size_t len;
  const char *data = luaL_optlstring(L, 2, "", &len);
  luaL_argcheck(L, len <= 125, 2, "ping payload longer than 125 bytes");
  if (ws->state >= ST_CLOSING || ws->close_requested || ws->conn == NULL)
    return closed_fail(L, ws);
  return enqueue(L, ws, data, len, K_PING);
}

/* ws:pongs() -> number of pongs received so far */
static int ws_pongs (lua_State *L) {
  lua_pushinteger(L, checkws(L)->pongs);
  return 1;
}

/* ws:buffered() -> bytes queued to send, bytes received and not yet read */
static int ws_buffered (lua_State *L) {
  Ws *ws = checkws(L);
  SendMsg *s;
  RecvMsg *r;
  lua_Integer out = 0, in = 0;
  for (s = ws->sq_head; s; s = s->next) out += (lua_Integer)(s->len - s->off);
  for (r = ws->rq_head; r; r = r->next) in += (lua_Integer)r->len;
  lua_pushinteger(L, out);
  lua_pushinteger(L, in);
  return 2;
}

/* ws:receive() -> data, "text"|"binary" | false (nothing yet: wait on ws)
** | nil, "closed", code, reason | nil, msg, code (failed or broken). */
static int ws_receive (lua_State *L) {
  Ws *ws = checkws(L);
  RecvMsg *m = ws->rq_head;
  if (m != NULL) {
    ws->rq_head = m->next;
    if (ws->rq_head == NULL) ws->rq_tail = NULL;
    ws->rq_bytes -= msg_cost(m->len);
    lua_pushlstring(L, m->data ? m->data : "", m->len);
    lua_pushstring(L, m->binary ? "binary" : "text");
    free(m->data);
    free(m);
    if (ws->rx_paused && ws->rq_bytes <= ws->recv_buffer / 2) {
      ws->rx_paused = 0;
      if (ws->conn && ws->conn->wsi) {
        lws_rx_flow_control(ws->conn->wsi, 1);
        /* data lws buffered meanwhile is only looked at again when the
        ** loop wakes: wake it */
        lws_cancel_service(ws->conn->st->ctx);
      }
    }
    return 2;
  }
  if (ws->errcode) return dt_fail(L, ws->errmsg, ws->errcode);
  if (ws->peer_closed || ws->state == ST_CLOSED) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    lua_pushinteger(L, ws->close_code ? ws->close_code : LWS_CLOSE_STATUS_NO_STATUS);
    lua_pushstring(L, ws->close_reason);
    return 4;
  }
  lua_pushboolean(L, 0);
  return 1;
}

static int valid_close_code (lua_Integer code) {
  return code == 1000 || code == 1001 || code == 1002 || code == 1003 ||
         (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

static int do_close (lua_State *L, Ws *ws, lua_Integer code, const char *reason,
                     size_t rl) {
  if (ws->state == ST_CLOSED || ws->close_requested || ws->peer_closed) return 0;
  if (ws->state == ST_CONNECTING || ws->conn == NULL || ws->conn->wsi == NULL) {
    /* nothing to close politely yet: cancel the attempt */
    set_error(ws, "ECANCELED", "closed before the connection was open");
    detach(L, ws, 0);
    ws->state = ST_CLOSED;
    return 0;
  }
  ws->close_requested = 1;
  ws->close_code = (int)code;
  memcpy(ws->close_reason, reason, rl);
  ws->close_reason[rl] = '\0';
  ws->state = ST_CLOSING;
  lws_callback_on_writable(ws->conn->wsi);
  return 0;
}

/* ws:close([code [, reason]]): start the closing handshake once the queued
** messages are sent (code 1000 by default); wait on ws until
** ws:state() == "closed".  Messages the peer sends before it answers are
** still delivered.  Closing while connecting cancels the attempt.
** Idempotent. */
static int ws_close (lua_State *L) {
  Ws *ws = checkws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t rl;
  const char *reason = luaL_optlstring(L, 3, "", &rl);
  luaL_argcheck(L, valid_close_code(code), 2, "invalid close code");
  luaL_argcheck(L, rl <= MAX_REASON, 3, "close reason longer than 123 bytes");
  luaL_argcheck(L, valid_utf8((const unsigned char *)reason, rl), 3,
                "close reason is not valid UTF-8");
  return do_close(L, ws, code, reason, rl);
}

/* ws:abort(): drop the connection at once, without a closing handshake */
static int ws_abort (lua_State *L) {
  Ws *ws = checkws(L);
  if (ws->state == ST_CLOSED) return 0;
  if (!ws->peer_closed && !ws->close_requested)
    set_error(ws, "ECANCELED", "connection aborted");
  detach(L, ws, 0);
  ws->state = ST_CLOSED;
  return 0;
}

/* __close: a graceful ws:close(1000) */
static int ws_tbc (lua_State *L) {
  return do_close(L, checkws(L), 1000, "", 0);
}

static int ws_gc (lua_State *L) {
  Ws *ws = checkws(L);
  /* reached while pinned only at lua_close; otherwise lws is done with it */
  detach(NULL, ws, 1);
  dt_unqueue(&ws->base);
  free_queues(ws);
  ws->state = ST_CLOSED;
  return 0;
}


/* ---------------------------------------------------------------------- */

/* core.ws.init() -> true, or nil, msg, code: create the libwebsockets
** context (and its TLS) now rather than at the first connect, which takes
** tens of milliseconds: for daytona.loop.preload. */
static int l_init (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  const char *why = NULL;
  WsState *st;
  if (loop->closing) return dt_fail(L, "the event loop is shutting down", "EINVAL");
  st = get_state(loop);
  if (st == NULL) return dt_fail(L, "out of memory", "ENOMEM");
  if (get_context(st, &why) == NULL) return dt_fail(L, why, "ENOTSUP");
  lua_pushboolean(L, 1);
  return 1;
}

void dt_open_ws (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"connect", l_connect}, {"init", l_init}, {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"state", ws_state}, {"protocol", ws_protocol}, {"http_status", ws_http_status},
    {"error", ws_error}, {"send", ws_send}, {"receive", ws_receive},
    {"ping", ws_ping}, {"pongs", ws_pongs}, {"buffered", ws_buffered},
    {"close", ws_close}, {"abort", ws_abort}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", ws_gc}, {"__close", ws_tbc}, {NULL, NULL}
  };
  /* stack: table, loop */
  dt_newclass(L, WS_TNAME, methods, meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}

/* daytona.core.ws: this file as its own shared object, so that only a
** program that uses core.ws maps libwebsockets (see dt.h). */
LUAMOD_API int luaopen_daytona_core_ws (lua_State *L) {
  return dt_open_part(L, "ws", dt_open_ws, dt_ws_shutdown);
}
