/*
** digest.c -- SHA-256, HMAC-SHA256, SHA-1, MD5 and base64 (see digest.h
** for why they are ours).  Plain FIPS 180-4, RFC 2104, RFC 1321 and RFC
** 4648; checked against the standard test vectors by spec/core/util_spec.lua
** and, through the WebSocket handshake, by every WebSocket spec.
*/
#include <string.h>

#include "digest.h"

/* --- the framing SHA-256 and MD5 share ------------------------------------ */

/* Both cut the message into 64-byte blocks for their compression function
** and end it with 0x80, zeros and the bit length in the last 8 bytes (MD5
** little-endian, SHA-256 big-endian): one copy of that here. */
typedef void (*block_fn) (void *ctx, const unsigned char *p);

static void md_update (void *ctx, block_fn block, unsigned char buf[64], size_t *nbuf,
                       uint64_t *len, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data;
  *len += n;
  if (*nbuf > 0) {
    size_t take = 64 - *nbuf < n ? 64 - *nbuf : n;
    memcpy(buf + *nbuf, p, take);
    *nbuf += take;
    p += take;
    n -= take;
    if (*nbuf < 64) return;
    block(ctx, buf);
    *nbuf = 0;
  }
  for (; n >= 64; p += 64, n -= 64) block(ctx, p);
  memcpy(buf, p, n);
  *nbuf = n;
}

static void md_pad (void *ctx, block_fn block, unsigned char buf[64], size_t nbuf, uint64_t len,
                    int big_endian) {
  uint64_t bits = len * 8;
  int i;
  buf[nbuf++] = 0x80;
  if (nbuf > 56) {
    memset(buf + nbuf, 0, 64 - nbuf);
    block(ctx, buf);
    nbuf = 0;
  }
  memset(buf + nbuf, 0, 56 - nbuf);
  for (i = 0; i < 8; i++)
    buf[56 + i] = (unsigned char)(bits >> (big_endian ? 56 - 8 * i : 8 * i));
  block(ctx, buf);
}

/* the state words of SHA-256 and SHA-1 out as their big-endian digest */
static void put_be32 (unsigned char *md, const uint32_t *h, int n) {
  int i;
  for (i = 0; i < n; i++) {
    md[4 * i] = (unsigned char)(h[i] >> 24);
    md[4 * i + 1] = (unsigned char)(h[i] >> 16);
    md[4 * i + 2] = (unsigned char)(h[i] >> 8);
    md[4 * i + 3] = (unsigned char)h[i];
  }
}

/* --- SHA-256 ------------------------------------------------------------ */

static const uint32_t sha256_k[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
  0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
  0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

void dt_sha256_init (dt_sha256 *c) {
  static const uint32_t h0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  };
  memcpy(c->h, h0, sizeof h0);
  c->len = 0;
  c->nblock = 0;
}

static void sha256_block (void *ctx, const unsigned char *p) {
  dt_sha256 *c = (dt_sha256 *)ctx;
  uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3];
  e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
  for (i = 0; i < 64; i++) {
    t1 = h + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) + ((e & f) ^ (~e & g)) +
         sha256_k[i] + w[i];
    t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g; g = f; f = e; e = d + t1;
    d = cc; cc = b; b = a; a = t1 + t2;
  }
  c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
  c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

void dt_sha256_update (dt_sha256 *c, const void *data, size_t n) {
  md_update(c, sha256_block, c->block, &c->nblock, &c->len, data, n);
}

void dt_sha256_final (dt_sha256 *c, unsigned char md[32]) {
  md_pad(c, sha256_block, c->block, c->nblock, c->len, 1);
  put_be32(md, c->h, 8);
}

/* --- HMAC-SHA256 ------------------------------------------------------- */

void dt_hmac_sha256 (const void *key, size_t keylen, const void *msg, size_t n,
                     unsigned char md[32]) {
  unsigned char k[64], pad[64], inner[32];
  dt_sha256 c;
  int i;
  memset(k, 0, sizeof k);
  if (keylen > 64) {           /* a long key is hashed first (RFC 2104 2.) */
    dt_sha256_init(&c);
    dt_sha256_update(&c, key, keylen);
    dt_sha256_final(&c, k);
  } else if (keylen > 0) {
    memcpy(k, key, keylen);
  }
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  dt_sha256_init(&c);
  dt_sha256_update(&c, pad, 64);
  dt_sha256_update(&c, msg, n);
  dt_sha256_final(&c, inner);
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  dt_sha256_init(&c);
  dt_sha256_update(&c, pad, 64);
  dt_sha256_update(&c, inner, 32);
  dt_sha256_final(&c, md);
}

/* --- MD5 ---------------------------------------------------------------- */

static const uint32_t md5_k[64] = {
  0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
  0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
  0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
  0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
  0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
  0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
  0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
  0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
  0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
  0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
  0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391
};

static const unsigned char md5_r[64] = {
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21
};

#define ROL32(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void md5_block (void *ctx, const unsigned char *p) {
  dt_md5 *c = (dt_md5 *)ctx;
  uint32_t w[16], a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], f, t;
  int i, g;
  for (i = 0; i < 16; i++)   /* little-endian words, unlike SHA */
    w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
           (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
  for (i = 0; i < 64; i++) {
    if (i < 16) { f = (b & cc) | (~b & d); g = i; }
    else if (i < 32) { f = (d & b) | (~d & cc); g = (5 * i + 1) & 15; }
    else if (i < 48) { f = b ^ cc ^ d; g = (3 * i + 5) & 15; }
    else { f = cc ^ (b | ~d); g = (7 * i) & 15; }
    t = d;
    d = cc;
    cc = b;
    b = b + ROL32(a + f + md5_k[i] + w[g], md5_r[i]);
    a = t;
  }
  c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
}

void dt_md5_init (dt_md5 *c) {
  c->h[0] = 0x67452301; c->h[1] = 0xefcdab89;
  c->h[2] = 0x98badcfe; c->h[3] = 0x10325476;
  c->len = 0;
  c->nblock = 0;
}

void dt_md5_update (dt_md5 *c, const void *data, size_t n) {
  md_update(c, md5_block, c->block, &c->nblock, &c->len, data, n);
}

void dt_md5_final (dt_md5 *c, unsigned char md[16]) {
  int i;
  md_pad(c, md5_block, c->block, c->nblock, c->len, 0);
  for (i = 0; i < 4; i++) {
    md[4 * i] = (unsigned char)c->h[i];
    md[4 * i + 1] = (unsigned char)(c->h[i] >> 8);
    md[4 * i + 2] = (unsigned char)(c->h[i] >> 16);
    md[4 * i + 3] = (unsigned char)(c->h[i] >> 24);
  }
}

/* --- SHA-1 -------------------------------------------------------------- */

static void sha1_block (void *ctx, const unsigned char *p) {
  uint32_t *h = (uint32_t *)ctx;
  uint32_t w[80], a, b, c, d, e, f, k, t;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (i = 16; i < 80; i++) w[i] = ROL32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
  for (i = 0; i < 80; i++) {
    if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
    else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
    else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
    else { f = b ^ c ^ d; k = 0xca62c1d6; }
    t = ROL32(a, 5) + f + e + k + w[i];
    e = d; d = c; c = ROL32(b, 30); b = a; a = t;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

void dt_sha1 (const void *data, size_t n, unsigned char md[20]) {
  uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
  const unsigned char *p = (const unsigned char *)data;
  unsigned char block[64];
  uint64_t len = n;
  for (; n >= 64; p += 64, n -= 64) sha1_block(h, p);
  memcpy(block, p, n);
  md_pad(h, sha1_block, block, n, len, 1);
  put_be32(md, h, 5);
}

/* --- base64 ------------------------------------------------------------- */

size_t dt_base64 (const unsigned char *in, size_t n, char *out) {
  static const char abc[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i, o = 0;
  for (i = 0; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = abc[v >> 18];
    out[o++] = abc[(v >> 12) & 63];
    out[o++] = abc[(v >> 6) & 63];
    out[o++] = abc[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = abc[v >> 18];
    out[o++] = abc[(v >> 12) & 63];
    out[o++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

/* the value of a base64 letter, 64 for whitespace, 65 for '=', 66 for
** anything else (computed, not a table filled on first use: no state
** shared between threads) */
static unsigned b64_value (unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  if (c == ' ' || (c >= '\t' && c <= '\r')) return 64;
  if (c == '=') return 65;
  return 66;
}

ptrdiff_t dt_base64_decode (const char *in, size_t n, unsigned char *out, const char **why) {
  size_t i, o = 0;
  uint32_t acc = 0;
  int k = 0, pad = 0;
  for (i = 0; i < n; i++) {
    unsigned v = b64_value((unsigned char)in[i]);
    if (v == 64) continue;
    if (v == 65) { pad++; continue; }
    /* a letter after '=': the padding was not at the end */
    if (v == 66 || pad > 0) { *why = "not base64: a character outside the alphabet"; return -1; }
    acc = acc << 6 | v;
    if (++k == 4) {
      out[o++] = (unsigned char)(acc >> 16);
      out[o++] = (unsigned char)(acc >> 8);
      out[o++] = (unsigned char)acc;
      acc = 0;
      k = 0;
    }
  }
  if (pad > 2) { *why = "not base64: too much padding"; return -1; }
  if (k == 1) { *why = "not base64: its length is not a whole number of bytes"; return -1; }
  if (k == 2) out[o++] = (unsigned char)(acc >> 4);
  else if (k == 3) {
    out[o++] = (unsigned char)(acc >> 10);
    out[o++] = (unsigned char)(acc >> 2);
  }
  return (ptrdiff_t)o;
}
