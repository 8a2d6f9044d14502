/*
** server.h -- what the files of daytona.core.server share.
**
** The server part is the HTTP/1.1 + WebSocket server: libmicrohttpd driven
** by our libuv loop, wslay for WebSocket framing.  One file per object:
**   server.c          the Server: listening, MHD on the loop, connections
**                     (limits, eviction, timeouts), the accept queue,
**                     stats, dt_open_server and the part's luaopen
**   server_request.c  a request: MHD's request callbacks, the framing
**                     checks, the daytona.core.ServerRequest object (body,
**                     responses, streaming, files) and its splice end
**   server_ws.c       the WebSocket upgrade and daytona.ServerWebSocket
** Only what one of them uses of another is declared here; everything else
** is static.  All of it is internal to the part's shared object.
*/
#ifndef DT_SERVER_H
#define DT_SERVER_H

#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#include <microhttpd.h>

#include "dt.h"
#include "splice.h"

#pragma GCC visibility push(hidden)

#define REQUEST_TNAME "daytona.core.ServerRequest"
#define DEF_OUT_BUFFER (256 * 1024)         /* streamed response body buffered */

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
  size_t memory_limit;     /* MHD's per-connection pool (memory_limit) */
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
  struct Linger *lingers;  /* closed connections still drained (server.c) */
  int nlinger;
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

/* --- server.c ---------------------------------------------------------- */

/* nil, "what: strerror(e)", the errno's name */
int fail_errno (lua_State *L, int e, const char *what);
/* Run MHD on the next loop turn (after a change made from Lua). */
void srv_kick (Server *srv);
/* The connection's state for our timeouts and evictions (CONN_*). */
Conn *conn_of (struct MHD_Connection *c);
void conn_wait (Conn *cn, int state, uint64_t timeout_ms);
void conn_busy (Conn *cn, int state);
/* Take r off the accept queue, if it is on it. */
void unlink_queue (Server *srv, Req *r);

/* --- server_request.c: MHD's request callbacks (given by listen) -------- */

/* the splice end of every request wrapper (srv_accept makes them) */
extern const dt_splice_ops req_splice_ops;
void *on_uri (void *cls, const char *uri, struct MHD_Connection *c);
void on_completed (void *cls, struct MHD_Connection *c, void **req_cls,
                   enum MHD_RequestTerminationCode toe);
void on_mhd_log (void *cls, const char *fmt, va_list ap);
enum MHD_Result on_request (void *cls, struct MHD_Connection *c,
                            const char *url, const char *method,
                            const char *version, const char *data,
                            size_t *size, void **req_cls);

/* --- server_request.c: the request, as the WebSocket upgrade uses it --- */

int valid_name (const char *s, size_t n);
const char *req_header (Req *r, const char *name);
Req *check_req (lua_State *L);
void check_headers (lua_State *L, int idx);
const char *add_headers (lua_State *L, int idx, struct MHD_Response *resp,
                         uint64_t *clen, int *bad_clen);
int resp_precheck (lua_State *L, Req *r);
void refused_header (lua_State *L, struct MHD_Response *resp, const char *k);
void resp_ready (Req *r, struct MHD_Response *resp, unsigned int status, int mode);
/* Register daytona.core.ServerRequest (stack: table, loop; left as found). */
void server_request_open (lua_State *L);

/* --- server_ws.c -------------------------------------------------------- */

/* req:upgrade_websocket{protocol=, headers=} */
int req_upgrade_websocket (lua_State *L);
/* MHD completed r, whose upgrade to a WebSocket was answered (r->ws). */
void ws_request_completed (Req *r, enum MHD_RequestTerminationCode toe);
/* The server closes: say goodbye to every WebSocket and tear it down. */
void ws_close_all (Server *srv);
/* MHD is stopped: no WebSocket may wait for it any more. */
void ws_forget_all (Server *srv);
/* Register daytona.ServerWebSocket (stack: table, loop; left as found). */
void server_ws_open (lua_State *L);

#pragma GCC visibility pop

#endif
