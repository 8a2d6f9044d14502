/*
** util.c -- small system helpers the Lua layers need and Lua lacks:
** digests of files streamed in fixed chunks, random tokens, constant-time
** comparison, terminal and process facts, and the few file-system calls
** (readdir, mkdir, chmod, chown, user/group lookup) the toolbox daemon needs.
**
** SHA-256 is implemented here (FIPS 180-4) rather than taken from libcrypto:
** mapping libcrypto costs every dtlua start about 1 ms and 1.3 MB of RSS,
** and the base of the core links nothing but libuv (see dt.h).
*/
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dt.h"

extern char **environ;

static void tohex (const unsigned char *p, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = hex[p[i] >> 4];
    out[2 * i + 1] = hex[p[i] & 15];
  }
}

/* --- SHA-256 ------------------------------------------------------------ */

typedef struct Sha256 {
  uint32_t h[8];
  uint64_t len;              /* bytes hashed so far */
  unsigned char block[64];
  size_t nblock;             /* bytes waiting in block */
} Sha256;

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

static void sha256_init (Sha256 *c) {
  static const uint32_t h0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  };
  memcpy(c->h, h0, sizeof h0);
  c->len = 0;
  c->nblock = 0;
}

static void sha256_block (Sha256 *c, const unsigned char *p) {
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

static void sha256_update (Sha256 *c, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data;
  c->len += n;
  if (c->nblock > 0) {
    size_t take = 64 - c->nblock < n ? 64 - c->nblock : n;
    memcpy(c->block + c->nblock, p, take);
    c->nblock += take;
    p += take;
    n -= take;
    if (c->nblock < 64) return;
    sha256_block(c, c->block);
    c->nblock = 0;
  }
  for (; n >= 64; p += 64, n -= 64) sha256_block(c, p);
  memcpy(c->block, p, n);
  c->nblock = n;
}

/* the digest as 64 lower-case hex digits (no terminating zero) */
static void sha256_final (Sha256 *c, char hex[64]) {
  uint64_t bits = c->len * 8;
  unsigned char md[32];
  int i;
  c->block[c->nblock++] = 0x80;
  if (c->nblock > 56) {
    memset(c->block + c->nblock, 0, 64 - c->nblock);
    sha256_block(c, c->block);
    c->nblock = 0;
  }
  memset(c->block + c->nblock, 0, 56 - c->nblock);
  for (i = 0; i < 8; i++) c->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_block(c, c->block);
  for (i = 0; i < 8; i++) {
    md[4 * i] = (unsigned char)(c->h[i] >> 24);
    md[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
    md[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
    md[4 * i + 3] = (unsigned char)c->h[i];
  }
  tohex(md, sizeof md, hex);
}

/* util.sha256(string) -> hex digest */
static int l_sha256 (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  Sha256 c;
  char hex[64];
  sha256_init(&c);
  sha256_update(&c, s, len);
  sha256_final(&c, hex);
  lua_pushlstring(L, hex, sizeof hex);
  return 1;
}

/* util.sha256_file(path) -> hex digest, size | nil, msg, code
** Blocking file reads are fine here: it is for tests and benchmarks, and it
** reads in fixed chunks so memory stays flat whatever the size. */
static int l_sha256_file (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char hex[64];
  static unsigned char chunk[DT_CHUNK_SIZE];
  lua_Integer total = 0;
  ssize_t n;
  Sha256 c;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return luaL_fileresult(L, 0, path);
  sha256_init(&c);
  while ((n = read(fd, chunk, sizeof chunk)) != 0) {
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      close(fd);
      errno = e;
      return luaL_fileresult(L, 0, path);
    }
    sha256_update(&c, chunk, (size_t)n);
    total += n;
  }
  close(fd);
  sha256_final(&c, hex);
  lua_pushlstring(L, hex, sizeof hex);
  lua_pushinteger(L, total);
  return 2;
}

/* util.random_bytes(n) -> string of n bytes from the kernel's CSPRNG */
static int l_random_bytes (lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  char *p;
  size_t got = 0;
  luaL_argcheck(L, n >= 0 && n <= 65536, 1, "out of range (0..65536)");
  p = luaL_buffinitsize(L, &b, (size_t)n);
  while (got < (size_t)n) {
    ssize_t r = getrandom(p + got, (size_t)n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return luaL_error(L, "getrandom: %s", strerror(errno));
    }
    got += (size_t)r;
  }
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* util.hex(s) -> lower-case hex of the bytes of s */
static int l_hex (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, 2 * len);
  tohex((const unsigned char *)s, len, p);
  luaL_pushresultsize(&b, 2 * len);
  return 1;
}

/* util.equal_ct(a, b) -> boolean, in time that depends only on the lengths,
** so a token check does not leak how much of a guess was right. */
static int l_equal_ct (lua_State *L) {
  size_t la, lb, i;
  const unsigned char *a = (const unsigned char *)luaL_checklstring(L, 1, &la);
  const unsigned char *b = (const unsigned char *)luaL_checklstring(L, 2, &lb);
  unsigned char diff = (unsigned char)(la != lb);
  size_t n = la < lb ? la : lb;
  for (i = 0; i < n; i++) diff |= (unsigned char)(a[i] ^ b[i]);
  lua_pushboolean(L, diff == 0);
  return 1;
}

/* util.isatty(fd) -> boolean */
static int l_isatty (lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* util.getpid() -> integer */
static int l_getpid (lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* util.getuid() -> integer */
static int l_getuid (lua_State *L) {
  lua_pushinteger(L, getuid());
  return 1;
}

/* util.environ() -> table of NAME = value */
static int l_environ (lua_State *L) {
  char **e;
  lua_newtable(L);
  for (e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    if (eq == NULL) continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

/* A failed system call as nil, message, code with the errno's stable name
** ("ENOENT", "EACCES", "ENOTDIR", ...). */
static int sysfail (lua_State *L, int e) {
  return dt_fail(L, strerror(e), uv_err_name(uv_translate_sys_error(e)));
}

/* util.stat(path [, follow]) -> {type=, size=, mode=, mtime=, mtime_nsec=,
**   uid=, gid=} | nil, msg, code
** lstat by default: a symlink reports itself; follow = true stats its target.
** mode holds the permission bits (07777); mtime is whole seconds and
** mtime_nsec the nanoseconds within that second. */
static int l_stat (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int follow = lua_toboolean(L, 2);
  struct stat st;
  const char *type;
  if ((follow ? stat(path, &st) : lstat(path, &st)) < 0)
    return sysfail(L, errno);
  if (S_ISREG(st.st_mode)) type = "file";
  else if (S_ISDIR(st.st_mode)) type = "directory";
  else if (S_ISLNK(st.st_mode)) type = "link";
  else if (S_ISFIFO(st.st_mode)) type = "fifo";
  else if (S_ISSOCK(st.st_mode)) type = "socket";
  else if (S_ISCHR(st.st_mode)) type = "char";
  else if (S_ISBLK(st.st_mode)) type = "block";
  else type = "other";
  lua_createtable(L, 0, 7);
  lua_pushstring(L, type); lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size); lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777)); lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec); lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_nsec); lua_setfield(L, -2, "mtime_nsec");
  lua_pushinteger(L, (lua_Integer)st.st_uid); lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)st.st_gid); lua_setfield(L, -2, "gid");
  return 1;
}

/* util.readdir(path) -> { name, ... } (without "." and "..", unsorted)
**   | nil, msg, code */
static int l_readdir (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  struct dirent *e;
  lua_Integer n = 0;
  if (d == NULL) return sysfail(L, errno);
  lua_newtable(L);
  for (;;) {
    errno = 0;
    e = readdir(d);
    if (e == NULL) break;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++n);
  }
  if (errno != 0) {
    int err = errno;
    closedir(d);
    return sysfail(L, err);
  }
  closedir(d);
  return 1;
}

/* util.mkdir(path, mode) -> true | nil, msg, code (EEXIST when it exists);
** mode is filtered by the umask as usual. */
static int l_mkdir (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_checkinteger(L, 2);
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode out of range");
  if (mkdir(path, (mode_t)mode) < 0) return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* util.chmod(path, mode) -> true | nil, msg, code */
static int l_chmod (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_checkinteger(L, 2);
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode out of range");
  if (chmod(path, (mode_t)mode) < 0) return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* util.chown(path, uid, gid) -> true | nil, msg, code; -1 leaves one as is */
static int l_chown (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer uid = luaL_checkinteger(L, 2), gid = luaL_checkinteger(L, 3);
  luaL_argcheck(L, uid >= -1 && uid <= 0xfffffffe, 2, "uid out of range");
  luaL_argcheck(L, gid >= -1 && gid <= 0xfffffffe, 3, "gid out of range");
  if (chown(path, (uid_t)uid, (gid_t)gid) < 0) return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* util.user(name) -> uid, gid, home | nil (no such user) */
static int l_user (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct passwd *pw = getpwnam(name);
  if (pw == NULL) { luaL_pushfail(L); return 1; }
  lua_pushinteger(L, (lua_Integer)pw->pw_uid);
  lua_pushinteger(L, (lua_Integer)pw->pw_gid);
  lua_pushstring(L, pw->pw_dir);
  return 3;
}

/* util.group(name) -> gid | nil (no such group) */
static int l_group (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct group *gr = getgrnam(name);
  if (gr == NULL) { luaL_pushfail(L); return 1; }
  lua_pushinteger(L, (lua_Integer)gr->gr_gid);
  return 1;
}

/* util.symlink(target, path) -> true | nil, msg, code */
static int l_symlink (lua_State *L) {
  const char *target = luaL_checkstring(L, 1);
  const char *path = luaL_checkstring(L, 2);
  if (symlink(target, path) < 0) {
    int e = errno;
    return dt_fail(L, strerror(e), uv_err_name(-e));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* util.mkdtemp(prefix) -> path of a new 0700 directory named prefix.XXXXXX
** | nil, msg, code */
static int l_mkdtemp (lua_State *L) {
  size_t n;
  const char *prefix = luaL_checklstring(L, 1, &n);
  char buf[4096];
  luaL_argcheck(L, n + 8 < sizeof buf, 1, "prefix too long");
  memcpy(buf, prefix, n);
  memcpy(buf + n, ".XXXXXX", 8);
  if (mkdtemp(buf) == NULL) {
    int e = errno;
    return dt_fail(L, strerror(e), uv_err_name(-e));
  }
  lua_pushstring(L, buf);
  return 1;
}

void dt_open_util (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sha256", l_sha256}, {"sha256_file", l_sha256_file},
    {"random_bytes", l_random_bytes}, {"hex", l_hex},
    {"equal_ct", l_equal_ct}, {"isatty", l_isatty}, {"getpid", l_getpid},
    {"getuid", l_getuid}, {"environ", l_environ}, {"stat", l_stat},
    {"symlink", l_symlink}, {"mkdtemp", l_mkdtemp},
    {"readdir", l_readdir}, {"mkdir", l_mkdir}, {"chmod", l_chmod},
    {"chown", l_chown}, {"user", l_user}, {"group", l_group},
    {NULL, NULL}
  };
  dt_setfuncs(L, funcs);
}
