/*
** digest.h -- the few digests the core needs, without libcrypto.
**
** SHA-256 for util.sha256 / sha256_file, SHA-1 and base64 for the
** WebSocket handshake (RFC 6455 Sec-WebSocket-Accept), HMAC-SHA256 for
** AWS Signature Version 4 (the object storage of image build contexts, on
** both sides), and MD5 because the official SDKs name a build context by
** the MD5 of its paths and contents (the name is the cache key, so ours
** must be the same).  Linking libcrypto
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

/* HMAC-SHA256 (RFC 2104) of one message */
void dt_hmac_sha256 (const void *key, size_t keylen, const void *msg, size_t n,
                     unsigned char md[32]);

typedef struct dt_md5 {
  uint32_t h[4];
  uint64_t len;
  unsigned char block[64];
  size_t nblock;
} dt_md5;

void dt_md5_init (dt_md5 *c);
void dt_md5_update (dt_md5 *c, const void *data, size_t n);
void dt_md5_final (dt_md5 *c, unsigned char md[16]);

/* SHA-1 of one buffer (the handshake hashes 60 bytes; no streaming needed) */
void dt_sha1 (const void *data, size_t n, unsigned char md[20]);

/* Standard base64 with padding of in[0..n); out needs 4 * ((n + 2) / 3) + 1
** bytes and is zero-terminated.  Returns the length written. */
size_t dt_base64 (const unsigned char *in, size_t n, char *out);

/* Decode standard base64 (RFC 4648 section 4) of in[0..n): padding
** optional, ASCII whitespace skipped (MIME wraps lines).  out needs
** 3 * (n / 4) + 3 bytes.  Returns the number of bytes decoded, or -1 with
** *why set to a message when in is not base64.  For util.base64_decode:
** screenshots arrive as base64 in JSON, and a full-screen PNG decoded in
** Lua took about 45 ms (a millisecond here). */
ptrdiff_t dt_base64_decode (const char *in, size_t n, unsigned char *out, const char **why);

#pragma GCC visibility pop

#endif
