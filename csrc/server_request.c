/*
** server_request.c -- a request of daytona.core.server (server.h lists the
** part's files): MHD's request callbacks, the framing checks, and the
** daytona.core.ServerRequest object with its splice end.
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
** the Lua wrapper (a daytona.core.ServerRequest, until collected).  The wrapper
** is pinned while MHD holds the Req, so MHD callbacks can always signal it.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>

#include <microhttpd.h>

#include "server.h"

/* Most bytes one req:read() returns, and the buffer MHD gives a streamed
** response: big bodies cross in few large pieces (fewer turns of the loop
** and of Lua, fewer syscalls), memory stays bounded per request. */
#define READ_CHUNK (4 * DT_CHUNK_SIZE)


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

/* A header name is an RFC 9110 token; a value has no CR, LF or NUL. */
int valid_name (const char *s, size_t n) {
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
/* MHD callbacks for requests                                              */
/* ---------------------------------------------------------------------- */


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

static void send_status (int fd, const char *status, const char *msg);

/* A request-target MHD could not parse without running out of its
** connection's memory pool: each query argument takes a record in the pool
** beside the target itself, and once the pool is full MHD 0.9.75 neither
** answers nor closes (the request waited for the header timeout).  So a
** target longer than a quarter of the pool, or with more arguments than
** 1/256 of its size (64 KiB: 16 KiB, 256 arguments), is answered 414 here,
** straight on the socket MHD has written nothing to yet, and the connection
** ends a second later whatever MHD makes of the rest. */
static int target_too_big (const Server *srv, const char *uri) {
  size_t n = 0, args = 0;
  for (; uri[n] != '\0'; n++) if (uri[n] == '&') args++;
  return n > srv->memory_limit / 4 || args > srv->memory_limit / 256;
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request line is in.  The URI given here
** is the raw request-target (MHD unescapes the path it passes later), and
** what we return becomes the request's context. */
void *on_uri (void *cls, const char *uri, struct MHD_Connection *c) {
  Server *srv = (Server *)cls;
  Req *r;
  if (uri && target_too_big(srv, uri)) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) send_status(ci->connect_fd, "414 URI Too Long", "the request target is too long\n");
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 1u);
    srv->rejected++;
  }
  r = (Req *)calloc(1, sizeof *r);
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
void on_completed (void *cls, struct MHD_Connection *c, void **req_cls,
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
  if (r->ws) ws_request_completed(r, toe);
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

const char *req_header (Req *r, const char *name) {
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
static void send_status (int fd, const char *status, const char *msg) {
  char raw[256];
  int len = snprintf(raw, sizeof raw, "HTTP/1.1 %s\r\nConnection: close\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                     status, strlen(msg), msg);
  ssize_t n;
  do n = send(fd, raw, (size_t)len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  shutdown(fd, SHUT_WR);
}

static void send_400 (int fd) {
  send_status(fd, "400 Bad Request", REJECT_MSG);
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
void on_mhd_log (void *cls, const char *fmt, va_list ap) {
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
enum MHD_Result on_request (void *cls, struct MHD_Connection *c,
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
/* the request object                                                      */
/* ---------------------------------------------------------------------- */

Req *check_req (lua_State *L) {
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
void check_headers (lua_State *L, int idx) {
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
const char *add_headers (lua_State *L, int idx, struct MHD_Response *resp,
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
int resp_precheck (lua_State *L, Req *r) {
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
void resp_ready (Req *r, struct MHD_Response *resp, unsigned int status,
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

void refused_header (lua_State *L, struct MHD_Response *resp, const char *k) {
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

const dt_splice_ops req_splice_ops = {
  DT_SPLICE_VERSION, splice_attach, splice_detach, splice_read, splice_write, splice_gone
};


/* ---------------------------------------------------------------------- */
/* registration                                                            */
/* ---------------------------------------------------------------------- */

void server_request_open (lua_State *L) {
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
  dt_newclass(L, REQUEST_TNAME, req_methods, req_meta);
  lua_pop(L, 1);
}
