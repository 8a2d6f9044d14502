/*
** splice.h -- moving a request's body and its answer between two core
** objects in C, without a Lua round trip per chunk.
**
** dtlocal forwards a request it serves (a daytona.core.ServerRequest,
** server_request.c) to a sandbox's daemon with a client request
** (daytona.core.Request, http_client.c), and the answer back.  Through Lua,
** every chunk becomes a Lua string (a copy, and work for the collector)
** and costs a scheduler round trip.  A splice lets the client request pull
** the server request's body straight out of its bounded buffer
** (core.http.request{ body_from = sreq }) and push the response body
** straight into the server's streamed response (response_to = sreq), with
** the same backpressure as the Lua path: a full buffer pauses the side that
** fills it, and the other side wakes it once it has drained half.
**
** The two files are separate shared objects loaded with RTLD_LOCAL (dt.h),
** so they cannot call each other by name: a server request starts with a
** dt_splice_end, whose table of functions the client calls, and the client
** registers a dt_splice_peer, whose functions the server calls.  Those run
** inside libcurl/MHD/libuv callbacks and must only touch C state and the
** loop (no Lua, no calls into the other library's running code); a peer
** defers its work to its own next loop turn.
**
** Lifetimes: the client keeps the server request's userdata in a uservalue
** while it may use it, so the end's memory outlives every call through
** it; each side unlinks in its own release and finalizer (detach, gone), so
** neither holds a dangling pointer whichever is collected first.
*/
#ifndef DT_SPLICE_H
#define DT_SPLICE_H

#include <stddef.h>

#include "dt.h"

/* The metatable name of the objects that can be an end (a server request). */
#define DT_SPLICE_END_TNAME "daytona.core.ServerRequest"

/* The layout of dt_splice_end and dt_splice_ops and what they mean: bump on
** any change, so that parts from different builds refuse to splice rather
** than call through a table they read differently. */
#define DT_SPLICE_VERSION 1

/* Directions an end is spliced in (attach's dirs). */
#define DT_SPLICE_BODY 1      /* the peer takes the request body */
#define DT_SPLICE_RESPONSE 2  /* the peer gives the response body */

/* What read() says besides its byte count. */
enum { DT_SPLICE_OK, DT_SPLICE_EOF, DT_SPLICE_ERROR };

/* Why an end failed: a stable upper-case code and a message. */
typedef struct dt_splice_err {
  const char *code;
  const char *msg;
} dt_splice_err;

typedef struct dt_splice_peer dt_splice_peer;

/* Registered by the client side; both are called from loop callbacks. */
struct dt_splice_peer {
  /* something changed at the end (body bytes or its end arrived, room in
  ** the response, the response started, the request ended): look again */
  void (*wake) (dt_splice_peer *peer);
  /* the end is being freed: forget it (no call through it after this) */
  void (*gone) (dt_splice_peer *peer);
};

typedef struct dt_splice_ops {
  int version;   /* DT_SPLICE_VERSION */
  /* Link peer to the end for dirs; 0, or -1 with *err (misuse: already
  ** spliced, body already being read or saved, response not streamable). */
  int (*attach) (void *end, dt_splice_peer *peer, int dirs, dt_splice_err *err);
  /* Unlink (idempotent); the end's Lua methods work again. */
  void (*detach) (void *end, dt_splice_peer *peer);
  /* Take up to max bytes of the request body into buf; returns the count.
  ** With 0: *state DT_SPLICE_OK means none yet (peer->wake comes when
  ** there are), DT_SPLICE_EOF the body is complete and all taken,
  ** DT_SPLICE_ERROR it will not be (*err).  max 0 only asks. */
  size_t (*read) (void *end, char *buf, size_t max, int *state, dt_splice_err *err);
  /* Give n bytes of the response body: 1 taken whole, 0 not now (the
  ** response is not started yet or its buffer is full: peer->wake comes
  ** when it may be retried), -1 never (*err).  n 0 only asks. */
  int (*write) (void *end, const char *p, size_t n, dt_splice_err *err);
  /* Whether the request was dropped (the client went away or timed out,
  ** Lua closed it, the server closed): 1 with *err, else 0. */
  int (*gone) (void *end, dt_splice_err *err);
} dt_splice_ops;

/* The first members of an object that can be an end: the dt_obj, then its
** operations.  A userdata of type DT_SPLICE_END_TNAME starts like this. */
typedef struct dt_splice_end {
  dt_obj base;
  const dt_splice_ops *splice;
} dt_splice_end;

#endif
