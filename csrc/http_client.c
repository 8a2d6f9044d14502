/*
** http_client.c -- the HTTP client: libcurl's multi-socket API on the loop.
**
** One curl multi handle per loop (loop->http, created on first use) drives
** every transfer.  libcurl tells us which sockets to watch and when to wake
** it (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION); we map that onto one
** uv_poll_t per socket and one uv_timer_t, call curl_multi_socket_action
** from their callbacks and drain curl_multi_info_read after every call --
** the pattern of curl's docs/examples/multi-uv.c.  The curl callbacks only
** touch C state and the loop; a Request is signalled when its headers are
** complete, when body bytes are ready for Lua, when its upload buffer has
** room, at a progress tick (if asked for) and when it finishes.
**
** Sharing the multi handle gives connection reuse (keep-alive) and HTTP/2
** multiplexing across requests; a share handle adds TLS session reuse.
** Proxy environment variables work as libcurl does by default.
**
** Lua API (core.http):
**   request(opts) -> Request | nil, msg, code       starts at once
**     opts: url (http/https), method ("GET"), headers ({"Name: v", ...} or
**       {Name = "v" | false}; false suppresses a default header),
**       one of: body (string), body_file (path), body_stream (true: Lua
**       supplies chunks with req:write/req:finish; body_size = known length),
**       body_from (a server request: its body, moved in C; body_size as for
**       body_stream), multipart ({{name=, data= | file=, filename=,
**       content_type=}, ...}),
**       response as: memory (default, result().body), response_stream=true
**       (req:read), response_file (path; C writes it in fixed chunks),
**       response_to (a server request whose streamed response gets the
**       body, moved in C once Lua has started that response; see splice.h),
**       connect_timeout, timeout (total), idle_timeout (seconds; idle =
**       no byte for that long), follow_redirects, max_redirects,
**       accept_encoding (true: any the library decodes), progress_interval
**       (seconds between progress signals), ca_file, insecure, verbose.
**   info() -> {version=, ssl=, http2=}
** Request methods:
**   done() -> boolean
**   status() -> integer | nil            once the final headers arrived
**   headers() -> {lower-case name = value} | nil   (repeats joined by ", ")
**   read() -> chunk | "" (nothing yet: wait) | nil (end) | nil, msg, code
**   write(chunk) -> true | false (buffer full: wait, retry) | nil, msg, code
**   finish()                             end of a body_stream
**   result() -> {status=, headers=, body=, bytes=, effective_url=,
**                http_version=} | nil, msg, code    (raises if not done)
**   progress() -> downloaded, download_total|nil, uploaded, upload_total|nil
**   close()                              cancels; idempotent (__close, __gc)
** Error codes: ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH,
** ENOTFOUND (DNS), ETIMEDOUT, ETLS, EPROTO, ETOOMANYREDIRECTS, EPROXY,
** ECANCELED, EINVAL, ENOMEM, EIO and errno names for local file errors;
** with a splice, also ECONNABORTED (the server request was closed) and the
** server request's own failure (ECONNRESET: its client left, ...).
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "dt.h"
#include "splice.h"

#define REQUEST_TNAME "daytona.core.Request"

/* Body bytes held for Lua (response_stream) and queued from Lua
** (body_stream) before the transfer pauses or write() refuses: enough to
** keep a fast link busy between two scheduler turns, small enough that
** memory stays flat whatever the body size. */
#define RECV_LIMIT (256 * 1024)
#define SEND_LIMIT (256 * 1024)

/* libcurl's receive buffer for streamed and saved bodies (the curl CLI uses
** 100 KiB); in-memory bodies keep libcurl's 16 KiB default so that many
** small parallel requests stay small. */
#define BIG_BUFFER (128 * 1024)

#define MAX_HEADER_BYTES (1024 * 1024)   /* one response's header block */

typedef struct Request Request;
typedef struct Sock Sock;

/* The per-loop client state (loop->http). */
typedef struct Http {
  dt_loop *loop;
  CURLM *multi;
  CURLSH *share;
  uv_timer_t timer;
  uv_timer_t kick;   /* splices woken by their server request, served next turn */
  int handles;       /* the two timers, until closed */
  Request *active;   /* requests in the multi handle */
  Sock *socks;       /* sockets being watched */
} Http;

/* A socket libcurl asked us to watch. */
struct Sock {
  uv_poll_t poll;
  curl_socket_t fd;
  Http *http;
  Sock *next, **prevp;
};

enum { BODY_NONE, BODY_STRING, BODY_FILE, BODY_STREAM, BODY_MIME, BODY_SPLICE };
enum { RESP_MEMORY, RESP_STREAM, RESP_FILE, RESP_SPLICE };

struct Request {
  dt_obj base;
  Http *http;
  CURL *easy;                /* NULL once finished or closed */
  Request *next, **prevp;    /* in http->active while in_multi */
  int in_multi;
  int done;                  /* finished (or cancelled) */
  int closed;                /* close() called: buffers released */
  int body_kind, resp_kind;
  /* response */
  long status;
  int hdr_ready;             /* the final response's headers are complete */
  int hdr_location;          /* the current header block has a Location */
  int follow;                /* libcurl follows redirects */
  dt_buf hdr;                /* header lines of the current block */
  dt_buf body;               /* RESP_MEMORY: all of it; RESP_STREAM: bounded */
  int recv_paused, send_paused;
  int out_fd;                /* RESP_FILE */
  char *fbuf;                /* RESP_FILE: DT_CHUNK_SIZE staging buffer */
  size_t flen;
  curl_off_t received;       /* body bytes of the final response */
  /* request body */
  const char *src;           /* BODY_STRING: the string (uservalue 1) */
  size_t srclen, srcoff;
  int in_fd;                 /* BODY_FILE */
  dt_buf up;                 /* BODY_STREAM: queued bytes from up.data+upoff */
  size_t upoff;
  int up_eof, want_write;
  curl_mime *mime;
  struct curl_slist *headers;
  /* body_from / response_to: the server request at the other end of a
  ** splice (uservalue 2 keeps it alive), NULL once unlinked */
  dt_splice_end *end;
  dt_splice_peer peer;
  int kicked;                /* the end woke us: serve it on the kick timer */
  /* progress signals */
  uint64_t progress_ms, last_progress;
  /* outcome, kept after the easy handle is gone */
  CURLcode cc;
  const char *errcode;       /* set when we failed the transfer ourselves */
  char errmsg[CURL_ERROR_SIZE];
  char errbuf[CURL_ERROR_SIZE];
  long os_errno;
  char *effective_url;
  long http_version;
  /* unix_socket + peer_uids: where to connect, and the uids the listening
  ** peer must have (SO_PEERCRED), checked on every new connection */
  char unix_path[108];       /* for messages */
  lua_Integer peer_uids[2];
  curl_socket_t new_sock;    /* made for this request, not checked yet, or -1 */
  curl_off_t dl_now, dl_total, ul_now, ul_total;
};


/* ---------------------------------------------------------------------- */
/* errors                                                                  */
/* ---------------------------------------------------------------------- */

static const char *errno_code (int e) {
  return uv_err_name(uv_translate_sys_error(e));
}

/* The stable code of a finished transfer's libcurl result. */
static const char *curl_code (CURLcode cc, long os_errno) {
  switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
      return "ENOTFOUND";
    case CURLE_COULDNT_CONNECT:
      switch (os_errno) {
        case ETIMEDOUT: return "ETIMEDOUT";
        case ENETUNREACH: return "ENETUNREACH";
        case EHOSTUNREACH: return "EHOSTUNREACH";
        case ECONNRESET: return "ECONNRESET";
        default: return "ECONNREFUSED";
      }
    case CURLE_OPERATION_TIMEDOUT:
      return "ETIMEDOUT";
    case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      return (os_errno == EPIPE || os_errno == ECONNABORTED) ? errno_code((int)os_errno)
                                                           : "ECONNRESET";
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED: case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
      return "ETLS";
    case CURLE_TOO_MANY_REDIRECTS:
      return "ETOOMANYREDIRECTS";
    case CURLE_WEIRD_SERVER_REPLY: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING: case CURLE_HTTP3: case CURLE_QUIC_CONNECT_ERROR:
      return "EPROTO";
    case CURLE_PROXY:
      return "EPROXY";
    case CURLE_URL_MALFORMAT: case CURLE_UNSUPPORTED_PROTOCOL:
      return "EINVAL";
    case CURLE_OUT_OF_MEMORY:
      return "ENOMEM";
    case CURLE_ABORTED_BY_CALLBACK:
      return "ECANCELED";
    default:
      return "EIO";
  }
}

/* Fail the transfer from inside a callback with our own code and message;
** the callback then returns its "abort" value. */
static void set_error (Request *r, const char *code, const char *msg) {
  if (r->errcode) return;   /* the first cause wins */
  r->errcode = code;
  snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
}

static void set_errno_error (Request *r, int e, const char *what) {
  char msg[CURL_ERROR_SIZE];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  set_error(r, errno_code(e), msg);
}


/* With peer_uids, every new connection's listener is checked before a byte
** is sent: a unix socket path can name a socket someone else put there
** (dtlocal reaches each sandbox's daemon this way and must never talk to
** another sandbox's, or the host's).  The socket is noted when libcurl
** makes it (CURLOPT_SOCKOPTFUNCTION, before its connect) and checked once
** connected (CURLOPT_PREREQFUNCTION, before the request goes out).  Doing
** the connect in the sockopt callback and answering
** CURL_SOCKOPT_ALREADY_CONNECTED would be one step, but libcurl 7.88 then
** connects again and fails (curl/curl#10626, fixed in 8.0). */
static int on_sockopt (void *p, curl_socket_t fd, curlsocktype purpose) {
  Request *r = (Request *)p;
  if (purpose == CURLSOCKTYPE_IPCXN) r->new_sock = fd;
  return CURL_SOCKOPT_OK;
}

static int on_prereq (void *p, char *ip, char *local_ip, int port, int local_port) {
  Request *r = (Request *)p;
  char msg[CURL_ERROR_SIZE];
  int fd = r->new_sock, ok;
  (void)ip; (void)local_ip; (void)port; (void)local_port;
  if (fd < 0) return CURL_PREREQFUNC_OK;   /* reused: checked when it was made */
  r->new_sock = -1;
  ok = dt_peer_check(fd, r->peer_uids, r->unix_path, msg, sizeof msg);
  if (ok > 0) return CURL_PREREQFUNC_OK;
  if (ok < 0) set_errno_error(r, errno, "SO_PEERCRED");
  else set_error(r, "EPEER", msg);
  /* dead for good, so that the connection cache never hands it out */
  shutdown(fd, SHUT_RDWR);
  return CURL_PREREQFUNC_ABORT;
}


/* ---------------------------------------------------------------------- */
/* the multi handle on the loop                                            */
/* ---------------------------------------------------------------------- */

static void finish (Request *r, CURLcode cc);

/* Hand every finished transfer to its Request.  Called after each
** curl_multi_socket_action, never from inside a libcurl callback. */
static void drain_done (Http *h) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (m->msg == CURLMSG_DONE) {
      CURLcode cc = m->data.result;   /* m is invalid after remove_handle */
      char *priv = NULL;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
      finish((Request *)priv, cc);
    }
  }
}

static void on_poll (uv_poll_t *p, int status, int events) {
  Sock *k = (Sock *)p->data;
  Http *h = k->http;
  int running, flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(h->multi, k->fd, flags, &running);
  drain_done(h);
}

static void on_timeout (uv_timer_t *t) {
  Http *h = (Http *)t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_done(h);
  /* Timers run before the poll phase of uv_run(UV_RUN_ONCE): without this,
  ** a request signalled here (headers or body that libcurl read at once,
  ** a transfer resumed after a pause) would wait for the poll to time out
  ** -- up to libcurl's next deadline -- before Lua heard of it. */
  if (h->loop->nready > 0) uv_stop(&h->loop->uv);
}

static void sock_freed (uv_handle_t *p) {
  free(p->data);
}

static void sock_close (Sock *k) {
  *k->prevp = k->next;
  if (k->next) k->next->prevp = k->prevp;
  uv_close((uv_handle_t *)&k->poll, sock_freed);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what libcurl wants (only the loop
** is touched here). */
static int on_socket (CURL *e, curl_socket_t s, int what, void *userp,
                      void *socketp) {
  Http *h = (Http *)userp;
  Sock *k = (Sock *)socketp;
  int events = 0;
  (void)e;
  if (what == CURL_POLL_REMOVE) {
    if (k) {
      curl_multi_assign(h->multi, s, NULL);
      sock_close(k);
    }
    return 0;
  }
  if (k == NULL) {
    k = (Sock *)calloc(1, sizeof *k);
    if (k == NULL) return -1;
    if (uv_poll_init_socket(&h->loop->uv, &k->poll, s) < 0) {
      free(k);
      return -1;   /* libcurl fails the transfers on this socket */
    }
    k->poll.data = k;
    k->fd = s;
    k->http = h;
    k->next = h->socks;
    if (k->next) k->next->prevp = &k->next;
    k->prevp = &h->socks;
    h->socks = k;
    curl_multi_assign(h->multi, s, k);
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&k->poll, events, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle. */
static int on_timer_set (CURLM *m, long ms, void *userp) {
  Http *h = (Http *)userp;
  (void)m;
  if (ms < 0) uv_timer_stop(&h->timer);
  else uv_timer_start(&h->timer, on_timeout, (uint64_t)ms, 0);
  return 0;
}

static Http *get_http (lua_State *L, dt_loop *loop) {
  static int global_done = 0;   /* curl_global_init is per process */
  Http *h = (Http *)loop->http;
  if (h) return h;
  if (loop->closing) luaL_error(L, "the event loop is shutting down");
  if (!global_done) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      luaL_error(L, "cannot initialise libcurl");
    global_done = 1;
  }
  h = (Http *)calloc(1, sizeof *h);
  if (h == NULL) {
    luaL_error(L, "out of memory");
    return NULL;
  }
  h->loop = loop;
  h->multi = curl_multi_init();
  h->share = curl_share_init();
  if (h->multi == NULL || h->share == NULL) {
    if (h->multi) curl_multi_cleanup(h->multi);
    if (h->share) curl_share_cleanup(h->share);
    free(h);
    luaL_error(L, "cannot create the libcurl multi handle");
    return NULL;
  }
  /* TLS sessions and DNS answers reused across requests; one thread, so
  ** the share needs no lock callbacks */
  curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  uv_timer_init(&loop->uv, &h->timer);
  uv_timer_init(&loop->uv, &h->kick);
  h->timer.data = h->kick.data = h;
  h->handles = 2;
  loop->http = h;
  return h;
}

static void http_freed (uv_handle_t *t) {
  Http *h = (Http *)t->data;
  if (--h->handles == 0) free(h);
}

static void request_release (Request *r);

void dt_http_shutdown (dt_loop *loop) {
  Http *h = (Http *)loop->http;
  if (h == NULL) return;
  loop->http = NULL;
  /* Requests still running (only at lua_close, when finalizers already
  ** ran in an order we do not control): drop them without telling Lua. */
  while (h->active) {
    Request *r = h->active;
    request_release(r);
    r->done = 1;
    r->http = NULL;
  }
  curl_multi_cleanup(h->multi);   /* closes cached connections */
  curl_share_cleanup(h->share);
  while (h->socks) sock_close(h->socks);
  uv_timer_stop(&h->timer);
  uv_timer_stop(&h->kick);
  uv_close((uv_handle_t *)&h->timer, http_freed);   /* the loop's __gc runs them */
  uv_close((uv_handle_t *)&h->kick, http_freed);
}


/* ---------------------------------------------------------------------- */
/* transfer callbacks (C state only)                                       */
/* ---------------------------------------------------------------------- */

static int is_redirect_status (long s) {
  return s >= 300 && s < 400;
}

/* A complete header block: final unless it is an interim 1xx response or
** a redirect that libcurl is about to follow (whose body it discards). */
static void header_block_end (Request *r) {
  if (r->status >= 100 && r->status < 200) return;
  if (r->follow && r->hdr_location && is_redirect_status(r->status)) return;
  r->hdr_ready = 1;
  dt_signal(&r->base);
}

static size_t on_header (char *p, size_t size, size_t n, void *ud) {
  Request *r = (Request *)ud;
  size_t len = size * n;
  if (r->hdr_ready) return len;   /* trailers after the body: not kept */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {   /* a new response starts */
    const char *sp = memchr(p, ' ', len);
    long st = 0;
    r->hdr.len = 0;
    r->hdr_location = 0;
    if (sp) {
      const char *d = sp + 1, *end = p + len;
      while (d < end && *d >= '0' && *d <= '9' && st < 1000) st = st * 10 + (*d++ - '0');
    }
    r->status = st;
    return len;
  }
  if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
    header_block_end(r);
    return len;
  }
  if (len >= 9 && strncasecmp(p, "location:", 9) == 0) r->hdr_location = 1;
  if (r->hdr.len + len > MAX_HEADER_BYTES) {
    set_error(r, "EPROTO", "response headers too large");
    return 0;
  }
  if (dt_buf_add(&r->hdr, p, len) < 0) {
    set_error(r, "ENOMEM", "out of memory");
    return 0;
  }
  return len;
}

static int write_all (int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int flush_file (Request *r) {
  if (r->flen == 0) return 0;
  if (write_all(r->out_fd, r->fbuf, r->flen) < 0) return -1;
  r->flen = 0;
  return 0;
}

static size_t on_write (char *p, size_t size, size_t n, void *ud) {
  Request *r = (Request *)ud;
  size_t len = size * n;
  if (!r->hdr_ready) {   /* a body without a header block we recognised */
    r->hdr_ready = 1;
    dt_signal(&r->base);
  }
  switch (r->resp_kind) {
    case RESP_STREAM:
      if (r->body.len >= RECV_LIMIT) {   /* Lua has not caught up: pause */
        r->recv_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
      }
      if (dt_buf_add(&r->body, p, len) < 0) goto nomem;
      dt_signal(&r->base);
      break;
    case RESP_SPLICE: {   /* straight into the server request's response */
      dt_splice_err err;
      int rc;
      if (r->end == NULL) {
        set_error(r, "ECONNABORTED", "the server request was closed");
        return 0;
      }
      rc = r->end->splice->write(r->end, p, len, &err);
      if (rc == 0) {   /* no room, or no response head yet: it wakes us */
        r->recv_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
      }
      if (rc < 0) {
        set_error(r, err.code, err.msg);
        return 0;
      }
      break;
    }
    case RESP_FILE:
      if (r->flen + len > DT_CHUNK_SIZE && flush_file(r) < 0) goto ioerr;
      if (len >= DT_CHUNK_SIZE) {
        if (write_all(r->out_fd, p, len) < 0) goto ioerr;
      } else {
        memcpy(r->fbuf + r->flen, p, len);
        r->flen += len;
      }
      break;
    default:
      if (dt_buf_add(&r->body, p, len) < 0) goto nomem;
      break;
  }
  r->received += (curl_off_t)len;
  return len;
nomem:
  set_error(r, "ENOMEM", "out of memory buffering the response body");
  return 0;
ioerr:
  set_errno_error(r, errno, "writing the response file");
  return 0;
}

static size_t on_read (char *p, size_t size, size_t n, void *ud) {
  Request *r = (Request *)ud;
  size_t len = size * n;
  switch (r->body_kind) {
    case BODY_STRING: {
      size_t avail = r->srclen - r->srcoff;
      if (len > avail) len = avail;
      memcpy(p, r->src + r->srcoff, len);
      r->srcoff += len;
      return len;
    }
    case BODY_FILE:
      for (;;) {
        ssize_t got = read(r->in_fd, p, len);
        if (got >= 0) return (size_t)got;
        if (errno != EINTR) {
          set_errno_error(r, errno, "reading the request body file");
          return CURL_READFUNC_ABORT;
        }
      }
    case BODY_STREAM: {
      size_t avail = r->up.len - r->upoff;
      if (avail == 0) {
        if (r->up_eof) return 0;
        r->send_paused = 1;   /* until Lua writes or finishes */
        dt_signal(&r->base);
        return CURL_READFUNC_PAUSE;
      }
      if (len > avail) len = avail;
      memcpy(p, r->up.data + r->upoff, len);
      r->upoff += len;
      if (r->upoff == r->up.len) r->upoff = r->up.len = 0;
      if (r->want_write && r->up.len - r->upoff < SEND_LIMIT / 2) {
        r->want_write = 0;   /* room again: wake the writer */
        dt_signal(&r->base);
      }
      return len;
    }
    case BODY_SPLICE: {   /* straight out of the server request's body */
      dt_splice_err err;
      int state;
      size_t got;
      if (r->end == NULL) {
        set_error(r, "ECONNABORTED", "the server request was closed");
        return CURL_READFUNC_ABORT;
      }
      got = r->end->splice->read(r->end, p, len, &state, &err);
      if (got > 0) return got;
      if (state == DT_SPLICE_EOF) {
        r->up_eof = 1;
        return 0;
      }
      if (state == DT_SPLICE_ERROR) {
        set_error(r, err.code, err.msg);   /* the upstream sees a cut body */
        return CURL_READFUNC_ABORT;
      }
      r->send_paused = 1;   /* until the end wakes us with more */
      return CURL_READFUNC_PAUSE;
    }
    default:
      return 0;
  }
}

/* Rewinds for a resend (redirect, retried reused connection). */
static int on_seek (void *ud, curl_off_t off, int origin) {
  Request *r = (Request *)ud;
  switch (r->body_kind) {
    case BODY_STRING:
      if (origin != SEEK_SET || off < 0 || (size_t)off > r->srclen) return CURL_SEEKFUNC_FAIL;
      r->srcoff = (size_t)off;
      return CURL_SEEKFUNC_OK;
    case BODY_FILE:
      return lseek(r->in_fd, (off_t)off, origin) < 0 ? CURL_SEEKFUNC_FAIL : CURL_SEEKFUNC_OK;
    default:
      return CURL_SEEKFUNC_CANTSEEK;   /* Lua's chunks are gone once sent */
  }
}

/* Progress ticks wake Lua at most every progress_ms. */
static int on_progress (void *ud, curl_off_t dlt, curl_off_t dln,
                        curl_off_t ult, curl_off_t uln) {
  Request *r = (Request *)ud;
  uint64_t now = uv_now(&r->base.loop->uv);
  (void)dlt; (void)dln; (void)ult; (void)uln;
  if (now - r->last_progress >= r->progress_ms) {
    r->last_progress = now;
    dt_signal(&r->base);
  }
  return 0;
}


/* ---------------------------------------------------------------------- */
/* request life cycle                                                      */
/* ---------------------------------------------------------------------- */

static void snapshot (Request *r) {
  char *url = NULL;
  curl_off_t v;
  curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &r->os_errno);
  curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &r->http_version);
  if (curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url) {
    free(r->effective_url);
    r->effective_url = strdup(url);
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &v) == CURLE_OK) r->dl_now = v;
  if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &v) == CURLE_OK) r->dl_total = v;
  if (curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &v) == CURLE_OK) r->ul_now = v;
  if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_UPLOAD_T, &v) == CURLE_OK) r->ul_total = v;
}

/* Give back everything libcurl and the OS hold for r (the easy handle,
** header list, mime, files, upload queue).  Leaves the response state. */
static void request_release (Request *r) {
  if (r->in_multi) {
    curl_multi_remove_handle(r->http->multi, r->easy);
    r->in_multi = 0;
    *r->prevp = r->next;
    if (r->next) r->next->prevp = r->prevp;
    r->next = NULL;
    r->prevp = NULL;
  }
  if (r->easy) { curl_easy_cleanup(r->easy); r->easy = NULL; }
  /* after the easy handle: it points into both */
  if (r->mime) { curl_mime_free(r->mime); r->mime = NULL; }
  if (r->headers) { curl_slist_free_all(r->headers); r->headers = NULL; }
  if (r->in_fd >= 0) { close(r->in_fd); r->in_fd = -1; }
  if (r->out_fd >= 0) { close(r->out_fd); r->out_fd = -1; }
  free(r->fbuf);
  r->fbuf = NULL;
  dt_buf_free(&r->up);
  r->upoff = 0;
  if (r->end) {   /* no byte moves any more: the server request is Lua's again */
    r->end->splice->detach(r->end, &r->peer);
    r->end = NULL;
  }
}

static void finish (Request *r, CURLcode cc) {
  snapshot(r);
  if (r->out_fd >= 0) {
    if (flush_file(r) < 0 && cc == CURLE_OK) {
      set_errno_error(r, errno, "writing the response file");
      cc = CURLE_WRITE_ERROR;
    }
    if (close(r->out_fd) < 0 && cc == CURLE_OK) {   /* NFS and friends report here */
      set_errno_error(r, errno, "closing the response file");
      cc = CURLE_WRITE_ERROR;
    }
    r->out_fd = -1;
  }
  r->cc = cc;
  if (cc != CURLE_OK && r->errcode == NULL) {
    r->errcode = curl_code(cc, r->os_errno);
    snprintf(r->errmsg, sizeof r->errmsg, "%s",
             r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
  }
  else if (cc == CURLE_OK) r->errcode = NULL;   /* a callback's note did not fail it */
  request_release(r);
  r->done = 1;
  r->hdr_ready = 1;
  dt_release(&r->base);   /* wake the waiters; unpin at drain */
}

/* Cancel a running transfer (from Lua, never from a libcurl callback). */
static void cancel (Request *r) {
  if (r->done) return;
  if (r->easy) snapshot(r);
  request_release(r);
  r->done = 1;
  r->hdr_ready = 1;
  r->cc = CURLE_ABORTED_BY_CALLBACK;
  r->errcode = "ECANCELED";
  snprintf(r->errmsg, sizeof r->errmsg, "request cancelled");
  dt_release(&r->base);
}

/* Tell libcurl the pause state of both directions at once (curl_easy_pause
** sets both; it may call our callbacks and the socket/timer callbacks). */
static void update_pause (Request *r) {
  int mask = (r->recv_paused ? CURLPAUSE_RECV : 0) | (r->send_paused ? CURLPAUSE_SEND : 0);
  if (r->easy && r->in_multi) curl_easy_pause(r->easy, mask);
}


/* ---------------------------------------------------------------------- */
/* splices (splice.h): the body from / the response to a server request    */
/* ---------------------------------------------------------------------- */

static void splice_fail (Request *r, const dt_splice_err *err) {
  set_error(r, err->code, err->msg);
  finish(r, CURLE_ABORTED_BY_CALLBACK);
}

/* The end woke us: resume what waited for it, or fail the transfer when
** the server request was dropped while it still mattered (a body not sent
** in full, an answer with nowhere to go).  Runs on the kick timer, outside
** every libcurl and MHD callback. */
static void splice_serve (Request *r) {
  dt_splice_err err;
  int changed = 0;
  if (r->done || !r->in_multi) return;
  if (r->end == NULL) {
    err.code = "ECONNABORTED";
    err.msg = "the server request was closed";
    splice_fail(r, &err);
    return;
  }
  if (((r->body_kind == BODY_SPLICE && !r->up_eof) || r->resp_kind == RESP_SPLICE) &&
      r->end->splice->gone(r->end, &err)) {
    splice_fail(r, &err);
    return;
  }
  if (r->body_kind == BODY_SPLICE && r->send_paused) {
    r->send_paused = 0;   /* on_read takes what came, or pauses again */
    changed = 1;
  }
  if (r->resp_kind == RESP_SPLICE && r->recv_paused) {
    int rc = r->end->splice->write(r->end, NULL, 0, &err);
    if (rc < 0) {
      splice_fail(r, &err);
      return;
    }
    if (rc > 0) {   /* libcurl hands the held bytes to on_write again */
      r->recv_paused = 0;
      changed = 1;
    }
  }
  if (changed) update_pause(r);
}

static void on_kick (uv_timer_t *t) {
  Http *h = (Http *)t->data;
  Request *r, *next;
  for (r = h->active; r; r = next) {
    next = r->next;   /* splice_serve may take r out of the list */
    if (r->kicked) {
      r->kicked = 0;
      splice_serve(r);
    }
  }
  if (h->loop->nready > 0) uv_stop(&h->loop->uv);   /* as on_timeout */
}

#define PEER_REQUEST(p) ((Request *)(void *)((char *)(p) - offsetof(Request, peer)))

/* dt_splice_peer.wake: called from MHD and libcurl callbacks, so it only
** marks the request and arms the kick timer. */
static void splice_wake (dt_splice_peer *peer) {
  Request *r = PEER_REQUEST(peer);
  Http *h = r->http;
  if (h == NULL || r->done || r->kicked) return;
  r->kicked = 1;
  uv_timer_start(&h->kick, on_kick, 0, 0);
}

/* dt_splice_peer.gone: the end is being freed; a running transfer fails on
** its next turn. */
static void splice_peer_gone (dt_splice_peer *peer) {
  Request *r = PEER_REQUEST(peer);
  r->end = NULL;
  splice_wake(peer);
}


/* ---------------------------------------------------------------------- */
/* building a request from its options                                     */
/* ---------------------------------------------------------------------- */

static const char *const known_opts[] = {
  "url", "method", "headers", "body", "body_file", "body_stream", "body_size",
  "multipart", "response_file", "response_stream", "connect_timeout",
  "timeout", "idle_timeout", "follow_redirects", "max_redirects",
  "accept_encoding", "progress_interval", "ca_file", "insecure", "verbose",
  "unix_socket", "peer_uids", "body_from", "response_to", NULL
};

static void check_known (lua_State *L, int t) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int i;
    const char *k;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad argument #1 to 'request' (option names must be strings)");
    k = lua_tostring(L, -1);
    for (i = 0; known_opts[i]; i++)
      if (strcmp(known_opts[i], k) == 0) break;
    if (known_opts[i] == NULL)
      luaL_error(L, "bad argument #1 to 'request' (unknown option '%s')", k);
  }
}

/* Pushes field k of the options table (raw, like check_known's walk, so
** that a string we keep a pointer to lives in the table); returns its type. */
static int field (lua_State *L, const char *k) {
  lua_pushstring(L, k);
  return lua_rawget(L, 1);
}

static const char *opt_string (lua_State *L, const char *k, size_t *len) {
  const char *s = NULL;
  int t = field(L, k);
  if (t == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  else if (t != LUA_TNIL)
    luaL_error(L, "bad argument #1 to 'request' (option '%s' must be a string)", k);
  lua_pop(L, 1);   /* the string stays alive in the options table */
  return s;
}

static int opt_bool (lua_State *L, const char *k) {
  int t = field(L, k), b = lua_toboolean(L, -1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "bad argument #1 to 'request' (option '%s' must be a boolean)", k);
  lua_pop(L, 1);
  return b;
}

/* Seconds (a non-negative number) as milliseconds; -1 when absent. */
static long opt_ms (lua_State *L, const char *k) {
  lua_Number s;
  int isnum;
  if (field(L, k) == LUA_TNIL) { lua_pop(L, 1); return -1; }
  s = lua_tonumberx(L, -1, &isnum);
  if (!isnum || !(s >= 0) || s > 1e7)
    luaL_error(L, "bad argument #1 to 'request' (option '%s' must be seconds >= 0)", k);
  lua_pop(L, 1);
  return (long)ceil(s * 1000.0);
}

static lua_Integer opt_int (lua_State *L, const char *k, lua_Integer lo, lua_Integer dflt) {
  lua_Integer v;
  int isint;
  if (field(L, k) == LUA_TNIL) { lua_pop(L, 1); return dflt; }
  v = lua_tointegerx(L, -1, &isint);
  if (!isint || v < lo)
    luaL_error(L, "bad argument #1 to 'request' (option '%s' must be an integer >= %d)",
               k, (int)lo);
  lua_pop(L, 1);
  return v;
}

/* A splice option: a server request (splice.h) or nil. */
static dt_splice_end *opt_splice_end (lua_State *L, const char *k) {
  dt_splice_end *end = NULL;
  if (field(L, k) != LUA_TNIL) {
    end = (dt_splice_end *)luaL_testudata(L, -1, DT_SPLICE_END_TNAME);
    if (end == NULL)
      luaL_error(L, "bad argument #1 to 'request' (option '%s' must be a server request)", k);
    if (end->splice->version != DT_SPLICE_VERSION)
      luaL_error(L, "option '%s': core.server is from another build (splice version %d, not %d)",
                 k, end->splice->version, DT_SPLICE_VERSION);
  }
  lua_pop(L, 1);
  return end;
}

static int is_token_char (int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token (const char *s, size_t len) {
  size_t i;
  if (len == 0) return 0;
  for (i = 0; i < len; i++) if (!is_token_char((unsigned char)s[i])) return 0;
  return 1;
}

/* A header value must not smuggle in another header or a NUL. */
static int is_clean (const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

static void add_header (lua_State *L, Request *r, const char *line) {
  struct curl_slist *n = curl_slist_append(r->headers, line);
  if (n == NULL) luaL_error(L, "out of memory");
  r->headers = n;
}

/* headers: an array of "Name: value" lines or a map Name = value | false.
** Returns whether the caller set an Expect header. */
static int build_headers (lua_State *L, Request *r) {
  int has_expect = 0;
  int t = field(L, "headers");
  if (t == LUA_TNIL) { lua_pop(L, 1); return 0; }
  if (t != LUA_TTABLE) luaL_error(L, "bad argument #1 to 'request' (option 'headers' must be a table)");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    size_t klen, vlen;
    const char *line;
    if (lua_type(L, -2) == LUA_TNUMBER) {          /* "Name: value" */
      const char *colon;
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad argument #1 to 'request' (header lines must be strings)");
      line = lua_tolstring(L, -1, &vlen);
      colon = memchr(line, ':', vlen);
      if (!is_clean(line, vlen) || colon == NULL || !is_token(line, (size_t)(colon - line)))
        luaL_error(L, "bad argument #1 to 'request' (malformed header line '%s')", line);
      add_header(L, r, line);
      if (colon - line == 6 && strncasecmp(line, "expect", 6) == 0) has_expect = 1;
    }
    else if (lua_type(L, -2) == LUA_TSTRING) {     /* Name = value | false */
      const char *k = lua_tolstring(L, -2, &klen);
      if (!is_token(k, klen))
        luaL_error(L, "bad argument #1 to 'request' (malformed header name '%s')", k);
      if (lua_type(L, -1) == LUA_TSTRING) {
        const char *v = lua_tolstring(L, -1, &vlen);
        if (!is_clean(v, vlen))
          luaL_error(L, "bad argument #1 to 'request' (header '%s' has CR, LF or NUL)", k);
        /* "Name;" is libcurl's way to send a header with an empty value */
        if (vlen == 0) lua_pushfstring(L, "%s;", k);
        else lua_pushfstring(L, "%s: %s", k, v);
      }
      else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        lua_pushfstring(L, "%s:", k);   /* suppress libcurl's own header */
      else
        luaL_error(L, "bad argument #1 to 'request' (header '%s' must be a string or false)", k);
      add_header(L, r, lua_tostring(L, -1));
      lua_pop(L, 1);
      if (klen == 6 && strncasecmp(k, "expect", 6) == 0) has_expect = 1;
    }
    else luaL_error(L, "bad argument #1 to 'request' (header keys must be names or indices)");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return has_expect;
}

/* multipart: each part {name=, data= | file=, filename=, content_type=}.
** Returns 0, or pushes nil, msg, code and returns 3 for a missing file. */
static int build_mime (lua_State *L, Request *r) {
  lua_Integer i, n;
  r->mime = curl_mime_init(r->easy);
  if (r->mime == NULL) luaL_error(L, "out of memory");
  n = (lua_Integer)luaL_len(L, -1);
  if (n < 1) luaL_error(L, "bad argument #1 to 'request' (option 'multipart' needs parts)");
  for (i = 1; i <= n; i++) {
    curl_mimepart *part;
    const char *name, *data, *file, *filename, *ctype;
    size_t dlen = 0;
    if (lua_rawgeti(L, -1, i) != LUA_TTABLE)
      luaL_error(L, "bad argument #1 to 'request' (multipart part %d must be a table)", (int)i);
    lua_getfield(L, -1, "name");
    lua_getfield(L, -2, "data");
    lua_getfield(L, -3, "file");
    lua_getfield(L, -4, "filename");
    lua_getfield(L, -5, "content_type");
    name = lua_tostring(L, -5);
    data = lua_type(L, -4) == LUA_TSTRING ? lua_tolstring(L, -4, &dlen) : NULL;
    file = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : NULL;
    filename = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    ctype = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (lua_type(L, -5) != LUA_TSTRING || (data == NULL) == (file == NULL) ||
        (!lua_isnil(L, -2) && !filename) || (!lua_isnil(L, -1) && !ctype) ||
        (!lua_isnil(L, -4) && !data) || (!lua_isnil(L, -3) && !file))
      luaL_error(L, "bad argument #1 to 'request' (multipart part %d needs a string name "
                 "and exactly one of data or file; filename and content_type are strings)", (int)i);
    if (!is_clean(name, strlen(name)) || (filename && !is_clean(filename, strlen(filename))) ||
        (ctype && !is_clean(ctype, strlen(ctype))))
      luaL_error(L, "bad argument #1 to 'request' (multipart part %d has CR or LF in a field)", (int)i);
    part = curl_mime_addpart(r->mime);
    if (part == NULL) luaL_error(L, "out of memory");
    curl_mime_name(part, name);
    if (file) {
      /* libcurl only finds a missing file once the transfer runs; say it now */
      int fd = open(file, O_RDONLY | O_CLOEXEC);
      struct stat st;
      if (fd < 0) {
        int e = errno;
        lua_pop(L, 6);
        lua_pushfstring(L, "%s: %s", file, strerror(e));
        luaL_pushfail(L);
        lua_insert(L, -2);
        lua_pushstring(L, errno_code(e));
        return 3;
      }
      if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        lua_pop(L, 6);
        return dt_fail(L, "multipart file is a directory", "EISDIR");
      }
      close(fd);
      if (curl_mime_filedata(part, file) != CURLE_OK) luaL_error(L, "out of memory");
    }
    else if (curl_mime_data(part, data, dlen) != CURLE_OK) luaL_error(L, "out of memory");
    if (filename && curl_mime_filename(part, filename) != CURLE_OK) luaL_error(L, "out of memory");
    if (ctype && curl_mime_type(part, ctype) != CURLE_OK) luaL_error(L, "out of memory");
    lua_pop(L, 6);
  }
  return 0;
}

/* Accept only absolute http(s) URLs; returns 0 or an error message. */
static const char *check_url (const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL;
  const char *err = NULL;
  if (u == NULL) return "out of memory";
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) err = "malformed URL";
  else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
           (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
    err = "URL scheme must be http or https";
  curl_free(scheme);
  curl_url_cleanup(u);
  return err;
}

static int open_fail (lua_State *L, const char *path) {
  int e = errno;
  lua_pushfstring(L, "%s: %s", path, strerror(e));
  return dt_fail(L, lua_tostring(L, -1), errno_code(e));
}

#define SETOPT(o, v) curl_easy_setopt(e, o, v)

/* core.http.request(opts) -> Request | nil, msg, code */
static int l_request (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  Http *h;
  Request *r;
  CURL *e;
  const char *url, *method, *body, *body_file, *response_file, *ca_file, *bad, *unix_socket;
  size_t bodylen = 0, mlen = 0;
  int body_stream, response_stream, nbodies, has_expect, is_head;
  dt_splice_end *body_from, *response_to, *end;
  long connect_ms, total_ms, idle_ms, progress_ms;
  lua_Integer max_redirs, body_size, peer_uids[2];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_known(L, 1);
  /* validate everything before acquiring anything */
  url = opt_string(L, "url", NULL);
  if (url == NULL) luaL_error(L, "bad argument #1 to 'request' (option 'url' is required)");
  method = opt_string(L, "method", &mlen);
  if (method == NULL) { method = "GET"; mlen = 3; }
  if (!is_token(method, mlen)) luaL_error(L, "bad argument #1 to 'request' (malformed method)");
  body = opt_string(L, "body", &bodylen);
  body_file = opt_string(L, "body_file", NULL);
  body_stream = opt_bool(L, "body_stream");
  body_size = opt_int(L, "body_size", 0, -1);
  response_file = opt_string(L, "response_file", NULL);
  response_stream = opt_bool(L, "response_stream");
  ca_file = opt_string(L, "ca_file", NULL);
  body_from = opt_splice_end(L, "body_from");
  response_to = opt_splice_end(L, "response_to");
  end = body_from ? body_from : response_to;
  if (body_from && response_to && body_from != response_to)
    luaL_error(L, "bad argument #1 to 'request' (body_from and response_to must be the same server request)");
  unix_socket = opt_string(L, "unix_socket", NULL);
  if (unix_socket && (unix_socket[0] != '/' || strlen(unix_socket) > 100))
    luaL_error(L, "bad argument #1 to 'request' (option 'unix_socket' must be an absolute path of at most 100 bytes)");
  field(L, "peer_uids");
  if ((bad = dt_peer_uids(L, -1, unix_socket != NULL, peer_uids)) != NULL)
    luaL_error(L, "bad argument #1 to 'request' (%s)", bad);
  lua_pop(L, 1);
  connect_ms = opt_ms(L, "connect_timeout");
  total_ms = opt_ms(L, "timeout");
  idle_ms = opt_ms(L, "idle_timeout");
  progress_ms = opt_ms(L, "progress_interval");
  max_redirs = opt_int(L, "max_redirects", 0, 10);
  nbodies = (body != NULL) + (body_file != NULL) + body_stream + (body_from != NULL) +
            (field(L, "multipart") != LUA_TNIL);
  if (!lua_isnil(L, -1) && !lua_istable(L, -1))
    luaL_error(L, "bad argument #1 to 'request' (option 'multipart' must be a table)");
  lua_pop(L, 1);
  if (nbodies > 1)
    luaL_error(L, "bad argument #1 to 'request' (body, body_file, body_stream, body_from and multipart are exclusive)");
  if ((response_file != NULL) + response_stream + (response_to != NULL) > 1)
    luaL_error(L, "bad argument #1 to 'request' (response_file, response_stream and response_to are exclusive)");
  if (body_size >= 0 && !body_stream && !body_from)
    luaL_error(L, "bad argument #1 to 'request' (body_size goes with body_stream or body_from)");
  is_head = (mlen == 4 && strcmp(method, "HEAD") == 0);
  if (is_head && nbodies)
    luaL_error(L, "bad argument #1 to 'request' (a HEAD request has no body)");
  if ((bad = check_url(url)) != NULL) return dt_fail(L, bad, "EINVAL");
  h = get_http(L, loop);

  /* the object exists, closed, before anything is acquired */
  r = (Request *)lua_newuserdatauv(L, sizeof *r, 2);   /* 2 */
  memset(r, 0, sizeof *r);
  dt_obj_init(loop, &r->base);
  r->http = h;
  r->done = 1;
  r->in_fd = r->out_fd = -1;
  r->dl_total = r->ul_total = -1;
  luaL_setmetatable(L, REQUEST_TNAME);
  r->easy = e = curl_easy_init();
  if (e == NULL) return luaL_error(L, "cannot create a libcurl handle");

  SETOPT(CURLOPT_PRIVATE, (void *)r);
  SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_SHARE, h->share);
  SETOPT(CURLOPT_URL, url);
  /* the URL's host then only names the Host header */
  if (unix_socket) SETOPT(CURLOPT_UNIX_SOCKET_PATH, unix_socket);
  if (peer_uids[0] >= 0) {
    snprintf(r->unix_path, sizeof r->unix_path, "%s", unix_socket);   /* <= 100 bytes */
    r->peer_uids[0] = peer_uids[0];
    r->peer_uids[1] = peer_uids[1];
    r->new_sock = -1;
    SETOPT(CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    SETOPT(CURLOPT_SOCKOPTDATA, r);
    SETOPT(CURLOPT_PREREQFUNCTION, on_prereq);
    SETOPT(CURLOPT_PREREQDATA, r);
  }
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* over TLS, wait for ALPN of a connection being set up to the same host
  ** rather than open another: if it is h2 the transfers share it.  Not for
  ** plain http, where libcurl would hold the transfer until the first one
  ** on that host has finished. */
  if (strncasecmp(url, "https:", 6) == 0) SETOPT(CURLOPT_PIPEWAIT, 1L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);   /* a proxy's CONNECT reply is not ours */
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, r);
  SETOPT(CURLOPT_WRITEFUNCTION, on_write);
  SETOPT(CURLOPT_WRITEDATA, r);
  SETOPT(CURLOPT_READFUNCTION, on_read);
  SETOPT(CURLOPT_READDATA, r);
  SETOPT(CURLOPT_SEEKFUNCTION, on_seek);
  SETOPT(CURLOPT_SEEKDATA, r);
  if (opt_bool(L, "verbose")) SETOPT(CURLOPT_VERBOSE, 1L);
  if (opt_bool(L, "insecure")) {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (ca_file) SETOPT(CURLOPT_CAINFO, ca_file);
  if (opt_bool(L, "accept_encoding")) SETOPT(CURLOPT_ACCEPT_ENCODING, "");
  if (connect_ms >= 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms > 0 ? connect_ms : 1L);
  if (total_ms >= 0) SETOPT(CURLOPT_TIMEOUT_MS, total_ms > 0 ? total_ms : 1L);
  if (idle_ms >= 0) {   /* libcurl's low-speed check counts whole seconds */
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, idle_ms > 1000 ? (idle_ms + 999) / 1000 : 1L);
  }
  if (opt_bool(L, "follow_redirects")) {
    r->follow = 1;
    SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(CURLOPT_MAXREDIRS, (long)max_redirs);
  }
  if (progress_ms >= 0) {
    r->progress_ms = (uint64_t)progress_ms;
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, r);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
  }

  /* the request body */
  if (body) {
    r->body_kind = BODY_STRING;
    r->src = body;
    r->srclen = bodylen;
    field(L, "body");
    lua_setiuservalue(L, 2, 1);   /* keeps r->src alive */
  }
  else if (body_file) {
    struct stat st;
    r->body_kind = BODY_FILE;
    r->in_fd = open(body_file, O_RDONLY | O_CLOEXEC);
    if (r->in_fd < 0) return open_fail(L, body_file);
    if (fstat(r->in_fd, &st) < 0) return open_fail(L, body_file);
    if (!S_ISREG(st.st_mode)) return dt_fail(L, "body_file is not a regular file", "EINVAL");
    bodylen = (size_t)st.st_size;
  }
  else if (body_stream) r->body_kind = BODY_STREAM;
  else if (body_from) r->body_kind = BODY_SPLICE;
  else if (field(L, "multipart") == LUA_TTABLE) {
    r->body_kind = BODY_MIME;
    if (build_mime(L, r)) return 3;
  }
  lua_settop(L, 2);

  switch (r->body_kind) {
    case BODY_STRING: case BODY_FILE:
      SETOPT(CURLOPT_UPLOAD, 1L);
      SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t)bodylen);
      break;
    case BODY_STREAM: case BODY_SPLICE:   /* unknown size: chunked on HTTP/1.1 */
      SETOPT(CURLOPT_UPLOAD, 1L);
      SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_size);
      break;
    case BODY_MIME:
      SETOPT(CURLOPT_MIMEPOST, r->mime);
      break;
    default:
      /* a POST/PUT/PATCH without a body still says Content-Length: 0 */
      if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
          strcmp(method, "PATCH") == 0) {
        r->body_kind = BODY_STRING;
        r->src = "";
        SETOPT(CURLOPT_UPLOAD, 1L);
        SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t)0);
      }
      break;
  }
  if (r->body_kind == BODY_FILE || r->body_kind == BODY_STREAM || r->body_kind == BODY_MIME ||
      r->body_kind == BODY_SPLICE)
    SETOPT(CURLOPT_UPLOAD_BUFFERSIZE, (long)(DT_CHUNK_SIZE * 2));
  /* the method: libcurl's defaults (GET, PUT for uploads, POST for mime)
  ** unless something else was asked for */
  if (is_head) SETOPT(CURLOPT_NOBODY, 1L);
  else if (!(strcmp(method, "GET") == 0 && r->body_kind == BODY_NONE) &&
           !(strcmp(method, "PUT") == 0 && r->body_kind != BODY_NONE && r->body_kind != BODY_MIME) &&
           !(strcmp(method, "POST") == 0 && r->body_kind == BODY_MIME))
    SETOPT(CURLOPT_CUSTOMREQUEST, method);

  has_expect = build_headers(L, r);
  if (!has_expect) add_header(L, r, "Expect:");   /* no 100-continue round trip */
  SETOPT(CURLOPT_HTTPHEADER, r->headers);

  /* the response body */
  if (response_file) {
    r->resp_kind = RESP_FILE;
    r->fbuf = (char *)malloc(DT_CHUNK_SIZE);
    if (r->fbuf == NULL) return luaL_error(L, "out of memory");
    r->out_fd = open(response_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (r->out_fd < 0) return open_fail(L, response_file);
  }
  else if (response_stream) r->resp_kind = RESP_STREAM;
  else if (response_to) r->resp_kind = RESP_SPLICE;
  if (r->resp_kind != RESP_MEMORY) SETOPT(CURLOPT_BUFFERSIZE, (long)BIG_BUFFER);

  /* the splice, last: from here the end may wake us */
  if (end) {
    dt_splice_err err;
    field(L, body_from ? "body_from" : "response_to");
    lua_setiuservalue(L, 2, 2);   /* keeps the end's userdata while we use it */
    r->peer.wake = splice_wake;
    r->peer.gone = splice_peer_gone;
    if (end->splice->attach(end, &r->peer, (body_from ? DT_SPLICE_BODY : 0) |
                            (response_to ? DT_SPLICE_RESPONSE : 0), &err) != 0)
      return dt_fail(L, err.msg, err.code);
    r->end = end;
  }

  /* start */
  if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
    return luaL_error(L, "cannot add the transfer to the multi handle");
  r->in_multi = 1;
  r->done = 0;
  r->next = h->active;
  if (r->next) r->next->prevp = &r->next;
  r->prevp = &h->active;
  h->active = r;
  dt_pin(L, &r->base, 2);
  lua_settop(L, 2);
  return 1;
}

#undef SETOPT


/* ---------------------------------------------------------------------- */
/* Request methods                                                         */
/* ---------------------------------------------------------------------- */

static Request *check_request (lua_State *L) {
  return (Request *)luaL_checkudata(L, 1, REQUEST_TNAME);
}

static int closed_fail (lua_State *L) {
  return dt_fail(L, "request closed", "ECANCELED");
}

static int req_done (lua_State *L) {
  lua_pushboolean(L, check_request(L)->done);
  return 1;
}

static int req_status (lua_State *L) {
  Request *r = check_request(L);
  if (!r->hdr_ready || r->status == 0 || r->closed) luaL_pushfail(L);
  else lua_pushinteger(L, r->status);
  return 1;
}

/* Push the header block as {lower-case name = value}; repeated fields are
** joined with ", " (RFC 9110 5.3). */
static void push_headers (lua_State *L, Request *r) {
  const char *p = r->hdr.data, *end = r->hdr.data + r->hdr.len;
  lua_newtable(L);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon && colon > p) {
      const char *v = colon + 1, *ve = line_end;
      luaL_Buffer b;
      const char *q;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      luaL_buffinit(L, &b);
      for (q = p; q < colon; q++) {
        char c = *q;
        luaL_addchar(&b, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c);
      }
      luaL_pushresult(&b);                        /* t, name */
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {     /* t, name, earlier */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);                         /* t, name, joined */
      }
      else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));  /* t, name, value */
      }
      lua_rawset(L, -3);
    }
    p = line_end + 1;
  }
}

static int req_headers (lua_State *L) {
  Request *r = check_request(L);
  if (!r->hdr_ready || r->status == 0 || r->closed) luaL_pushfail(L);
  else push_headers(L, r);
  return 1;
}

/* read() -> chunk | "" | nil | nil, msg, code */
static int req_read (lua_State *L) {
  Request *r = check_request(L);
  if (r->resp_kind == RESP_SPLICE)
    return luaL_error(L, "the response body goes to a server request (response_to)");
  if (r->resp_kind != RESP_STREAM)
    return luaL_error(L, "request was not started with response_stream = true");
  if (r->closed) return closed_fail(L);
  if (r->body.len > 0) {
    lua_pushlstring(L, r->body.data, r->body.len);
    r->body.len = 0;
    if (r->recv_paused) {   /* room again: let libcurl deliver more */
      r->recv_paused = 0;
      update_pause(r);
    }
    return 1;
  }
  if (!r->done) { lua_pushliteral(L, ""); return 1; }
  if (r->errcode) return dt_fail(L, r->errmsg, r->errcode);
  luaL_pushfail(L);
  return 1;
}

/* write(chunk) -> true | false | nil, msg, code */
static int req_write (lua_State *L) {
  Request *r = check_request(L);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  if (r->body_kind != BODY_STREAM)
    return luaL_error(L, "request was not started with body_stream = true");
  if (r->up_eof && !r->done) return luaL_error(L, "write after finish");
  if (r->closed) return closed_fail(L);
  if (r->done) {
    if (r->errcode) return dt_fail(L, r->errmsg, r->errcode);
    return dt_fail(L, "the transfer finished before the body was sent", "EPIPE");
  }
  if (r->up.len - r->upoff >= SEND_LIMIT) {
    r->want_write = 1;
    lua_pushboolean(L, 0);
    return 1;
  }
  if (len > 0) {
    if (r->upoff > 0 && r->up.len + len > r->up.cap) {   /* compact before growing */
      dt_buf_consume(&r->up, r->upoff);
      r->upoff = 0;
    }
    if (dt_buf_add(&r->up, p, len) < 0) return luaL_error(L, "out of memory");
    if (r->send_paused) {
      r->send_paused = 0;
      update_pause(r);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* finish(): the end of a body_stream */
static int req_finish (lua_State *L) {
  Request *r = check_request(L);
  if (r->body_kind != BODY_STREAM)
    return luaL_error(L, "request was not started with body_stream = true");
  r->up_eof = 1;
  if (r->send_paused && !r->done) {
    r->send_paused = 0;
    update_pause(r);
  }
  return 0;
}

static const char *version_name (long v) {
  switch (v) {
    case CURL_HTTP_VERSION_1_0: return "1.0";
    case CURL_HTTP_VERSION_1_1: return "1.1";
    case CURL_HTTP_VERSION_2_0: return "2";
    case CURL_HTTP_VERSION_3: return "3";
    default: return NULL;
  }
}

/* result() -> {status=, headers=, body=, bytes=, effective_url=,
** http_version=} | nil, msg, code */
static int req_result (lua_State *L) {
  Request *r = check_request(L);
  const char *v;
  if (!r->done) return luaL_error(L, "request not finished (wait for it first)");
  if (r->closed) return closed_fail(L);
  if (r->errcode) return dt_fail(L, r->errmsg, r->errcode);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  push_headers(L, r);
  lua_setfield(L, -2, "headers");
  if (r->resp_kind == RESP_MEMORY) {
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
  }
  lua_pushinteger(L, (lua_Integer)r->received);
  lua_setfield(L, -2, "bytes");
  if (r->effective_url) {
    lua_pushstring(L, r->effective_url);
    lua_setfield(L, -2, "effective_url");
  }
  if ((v = version_name(r->http_version)) != NULL) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, "http_version");
  }
  return 1;
}

static void push_total (lua_State *L, curl_off_t v) {
  if (v < 0) luaL_pushfail(L);
  else lua_pushinteger(L, (lua_Integer)v);
}

/* progress() -> downloaded, download_total|nil, uploaded, upload_total|nil */
static int req_progress (lua_State *L) {
  Request *r = check_request(L);
  curl_off_t dn = r->dl_now, dt = r->dl_total, un = r->ul_now, ut = r->ul_total;
  if (r->easy) {
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &dn);
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &dt);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &un);
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_UPLOAD_T, &ut);
  }
  lua_pushinteger(L, (lua_Integer)dn);
  push_total(L, dt);
  lua_pushinteger(L, (lua_Integer)un);
  push_total(L, ut);
  return 4;
}

/* close(): cancel if running and free the buffers; idempotent */
static int req_close (lua_State *L) {
  Request *r = check_request(L);
  if (!r->done && r->http) cancel(r);
  else request_release(r);
  r->closed = 1;
  dt_buf_free(&r->body);
  dt_buf_free(&r->hdr);
  free(r->effective_url);
  r->effective_url = NULL;
  return 0;
}

static int req_tostring (lua_State *L) {
  Request *r = check_request(L);
  lua_pushfstring(L, "%s (%s): %p", REQUEST_TNAME,
                  r->closed ? "closed" : r->done ? "done" : "running", (void *)r);
  return 1;
}


/* ---------------------------------------------------------------------- */

/* info() -> {version=, ssl=, http2=} */
static int l_info (lua_State *L) {
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, v->version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, v->ssl_version ? v->ssl_version : "");
  lua_setfield(L, -2, "ssl");
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
  return 1;
}

/* core.http.init() -> true: initialise libcurl (and with it OpenSSL) and
** the loop's multi handle now rather than at the first request, for a host
** that cannot afford the pause in a frame (daytona.loop.preload). */
static int l_init (lua_State *L) {
  get_http(L, dt_loopup(L));
  lua_pushboolean(L, 1);
  return 1;
}

void dt_open_http (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"request", l_request}, {"info", l_info}, {"init", l_init}, {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"done", req_done}, {"status", req_status}, {"headers", req_headers},
    {"read", req_read}, {"write", req_write}, {"finish", req_finish},
    {"result", req_result}, {"progress", req_progress}, {"close", req_close},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__close", req_close}, {"__gc", req_close}, {"__tostring", req_tostring},
    {NULL, NULL}
  };
  dt_newclass(L, REQUEST_TNAME, methods, meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}

/* daytona.core.http: this file as its own shared object, so that only a
** program that uses core.http maps libcurl (see dt.h). */
LUAMOD_API int luaopen_daytona_core_http (lua_State *L) {
  return dt_open_part(L, "http", dt_open_http, dt_http_shutdown);
}
