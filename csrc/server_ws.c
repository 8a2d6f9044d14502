/*
** server_ws.c -- the WebSockets of daytona.core.server (server.h lists the
** part's files): the upgrade of a request, and wslay over the upgraded
** socket.
**
** A WebSocket (daytona.ServerWebSocket) is a userdata pinned while MHD or
** libuv hold its pointer: the 101 response's upgrade callback, the
** uv_poll_t on the upgraded socket and a close-handshake timer.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <microhttpd.h>
#include <wslay/wslay.h>

#include "server.h"
#include "digest.h"

#define WS_TNAME "daytona.core.ServerWebSocket"

#define WS_RX_BOUND (1024 * 1024)           /* received messages queued for Lua */
#define WS_TX_BOUND (1024 * 1024)           /* sends queued before send() says "full" */
#define WS_RX_BUDGET (1024 * 1024)          /* bytes read per poll event: fairness */
#define WS_CLOSE_WAIT_MS 5000               /* wait for the peer's close frame */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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
int req_upgrade_websocket (lua_State *L) {
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
/* the server's side: a request completed, the server closing              */
/* ---------------------------------------------------------------------- */

void ws_request_completed (Req *r, enum MHD_RequestTerminationCode toe) {
  WS *ws = r->ws;
  r->ws = NULL;
  ws->req = NULL;
  /* a 101 never sent means the upgrade callback will never come */
  if (ws->state == WS_PENDING && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
    ws_upgrade_failed(ws);
}

void ws_close_all (Server *srv) {
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

void ws_forget_all (Server *srv) {
  while (srv->wss) {
    WS *ws = srv->wss;
    ws->awaiting_upgrade = 0;   /* MHD is gone: no upgrade callback will come */
    ws_unlink(ws);
    ws_maybe_release(ws);
  }
}


/* ---------------------------------------------------------------------- */
/* registration                                                            */
/* ---------------------------------------------------------------------- */

void server_ws_open (lua_State *L) {
  static const luaL_Reg ws_methods[] = {
    {"send", ws_send}, {"receive", ws_receive}, {"close", ws_close},
    {"abort", ws_abort}, {"state", ws_state},
    {NULL, NULL}
  };
  static const luaL_Reg ws_meta[] = {
    {"__gc", ws_gc}, {"__close", ws_tbc},
    {NULL, NULL}
  };
  dt_newclass(L, WS_TNAME, ws_methods, ws_meta);
  lua_pop(L, 1);
}
