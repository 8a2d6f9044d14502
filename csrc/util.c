/*
** util.c -- small system helpers the Lua layers need and Lua lacks:
** digests of files streamed in fixed chunks, random tokens, constant-time
** comparison, terminal and process facts.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

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

/* util.sha256(string) -> hex digest */
static int l_sha256 (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  char hex[2 * EVP_MAX_MD_SIZE];
  if (!EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL))
    return luaL_error(L, "sha256 failed");
  tohex(md, mdlen, hex);
  lua_pushlstring(L, hex, 2 * mdlen);
  return 1;
}

/* util.sha256_file(path) -> hex digest, size | nil, msg, code
** Blocking file reads are fine here: it is for tests and benchmarks, and it
** reads in fixed chunks so memory stays flat whatever the size. */
static int l_sha256_file (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  char hex[2 * EVP_MAX_MD_SIZE];
  static unsigned char chunk[DT_CHUNK_SIZE];
  lua_Integer total = 0;
  ssize_t n;
  EVP_MD_CTX *ctx;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return luaL_fileresult(L, 0, path);
  ctx = EVP_MD_CTX_new();
  if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
    close(fd);
    EVP_MD_CTX_free(ctx);
    return luaL_error(L, "sha256 failed");
  }
  while ((n = read(fd, chunk, sizeof chunk)) != 0) {
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      close(fd);
      EVP_MD_CTX_free(ctx);
      errno = e;
      return luaL_fileresult(L, 0, path);
    }
    EVP_DigestUpdate(ctx, chunk, (size_t)n);
    total += n;
  }
  close(fd);
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  EVP_MD_CTX_free(ctx);
  tohex(md, mdlen, hex);
  lua_pushlstring(L, hex, 2 * mdlen);
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

/* util.stat(path) -> {type=, size=, mode=, mtime=, uid=, gid=} | nil, msg, code
** lstat: a symlink reports itself. */
static int l_stat (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  const char *type;
  if (lstat(path, &st) < 0) {
    int e = errno;
    return dt_fail(L, strerror(e), e == ENOENT ? "ENOENT" : "EIO");
  }
  if (S_ISREG(st.st_mode)) type = "file";
  else if (S_ISDIR(st.st_mode)) type = "directory";
  else if (S_ISLNK(st.st_mode)) type = "link";
  else type = "other";
  lua_createtable(L, 0, 6);
  lua_pushstring(L, type); lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size); lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777)); lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_mtime); lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st.st_uid); lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)st.st_gid); lua_setfield(L, -2, "gid");
  return 1;
}

void dt_open_util (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sha256", l_sha256}, {"sha256_file", l_sha256_file},
    {"random_bytes", l_random_bytes}, {"hex", l_hex},
    {"equal_ct", l_equal_ct}, {"isatty", l_isatty}, {"getpid", l_getpid},
    {"getuid", l_getuid}, {"environ", l_environ}, {"stat", l_stat},
    {NULL, NULL}
  };
  dt_setfuncs(L, funcs);
}
