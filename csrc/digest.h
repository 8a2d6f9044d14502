/*
** digest.h -- the few digests the core needs, without libcrypto.
**
** SHA-256 for util.sha256 / sha256_file, SHA-1 and base64 for the
** WebSocket handshake (RFC 6455 Sec-WebSocket-Accept).  Linking libcrypto
** for these cost every program that loads the base or the server part
** about 1 ms and 1.3 MB at start-up (OpenSSL initialises itself on load);
** the toolbox daemon's start-up is on the critical path of creating a
** sandbox.  Compiled into the base and into the server part, hidden.
*/
#ifndef DT_DIGEST_H
#define DT_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

typedef struct dt_sha256 {
  uint32_t h[8];
  uint64_t len;              /* bytes hashed so far */
  unsigned char block[64];
  size_t nblock;             /* bytes waiting in block */
} dt_sha256;

void dt_sha256_init (dt_sha256 *c);
void dt_sha256_update (dt_sha256 *c, const void *data, size_t n);
void dt_sha256_final (dt_sha256 *c, unsigned char md[32]);

/* SHA-1 of one buffer (the handshake hashes 60 bytes; no streaming needed) */
void dt_sha1 (const void *data, size_t n, unsigned char md[20]);

/* Standard base64 with padding of in[0..n); out needs 4 * ((n + 2) / 3) + 1
** bytes and is zero-terminated.  Returns the length written. */
size_t dt_base64 (const unsigned char *in, size_t n, char *out);

#pragma GCC visibility pop

#endif
