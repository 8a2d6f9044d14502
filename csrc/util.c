/*
** util.c -- small system helpers the Lua layers need and Lua lacks:
** digests of files streamed in fixed chunks, random tokens, constant-time
** comparison, terminal and process facts, and the few file-system calls
** (readdir, mkdir, chmod, chown, user/group lookup) the toolbox daemon needs,
** and the two the image store needs (whiteouts, opaque directories' xattrs).
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
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "dt.h"
#include "digest.h"

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
  dt_sha256 c;
  unsigned char md[32];
  char hex[64];
  dt_sha256_init(&c);
  dt_sha256_update(&c, s, len);
  dt_sha256_final(&c, md);
  tohex(md, sizeof md, hex);
  lua_pushlstring(L, hex, sizeof hex);
  return 1;
}

/* util.hmac_sha256(key, message [, raw]) -> hex digest (raw: the 32 bytes) */
static int l_hmac_sha256 (lua_State *L) {
  size_t klen, mlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  unsigned char md[32];
  char hex[64];
  dt_hmac_sha256(key, klen, msg, mlen, md);
  if (lua_toboolean(L, 3)) {
    lua_pushlstring(L, (const char *)md, sizeof md);
  } else {
    tohex(md, sizeof md, hex);
    lua_pushlstring(L, hex, sizeof hex);
  }
  return 1;
}

/* --- util.digest(kind): a streaming digest, for what is hashed piece by
** piece (a request body as it arrives, a directory's files one after the
** other) without holding it whole.  kind: "sha256" or "md5".
**   d:update(s) -> d
**   d:update_file(path) -> bytes read | nil, msg, code (read in fixed chunks)
**   d:hex() -> the digest; the object is finished and refuses more input --- */
#define DIGEST_TNAME "daytona.Digest"

typedef struct Digest {
  int md5;                    /* else SHA-256 */
  int done;
  union { dt_sha256 sha; dt_md5 md; } u;
} Digest;

static Digest *check_digest (lua_State *L) {
  Digest *d = (Digest *)luaL_checkudata(L, 1, DIGEST_TNAME);
  if (d->done) luaL_error(L, "digest already finished");
  return d;
}

static void digest_feed (Digest *d, const void *p, size_t n) {
  if (d->md5) dt_md5_update(&d->u.md, p, n);
  else dt_sha256_update(&d->u.sha, p, n);
}

static int l_digest (lua_State *L) {
  static const char *const kinds[] = {"sha256", "md5", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  Digest *d = (Digest *)lua_newuserdatauv(L, sizeof *d, 0);
  d->md5 = kind == 1;
  d->done = 0;
  if (d->md5) dt_md5_init(&d->u.md);
  else dt_sha256_init(&d->u.sha);
  luaL_setmetatable(L, DIGEST_TNAME);
  return 1;
}

static int digest_update (lua_State *L) {
  Digest *d = check_digest(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  digest_feed(d, s, n);
  lua_settop(L, 1);
  return 1;
}

/* Feed what is left of FD to D in fixed chunks (memory stays flat
** whatever the size), adding the bytes read to *TOTAL; FD is closed.
** 0, or -1 with errno set on a read error. */
static int digest_fd (Digest *d, int fd, lua_Integer *total) {
  static unsigned char chunk[DT_CHUNK_SIZE];
  ssize_t n;
  while ((n = read(fd, chunk, sizeof chunk)) != 0) {
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      close(fd);
      errno = e;
      return -1;
    }
    digest_feed(d, chunk, (size_t)n);
    *total += n;
  }
  close(fd);
  return 0;
}

static int digest_update_file (lua_State *L) {
  Digest *d = check_digest(L);
  const char *path = luaL_checkstring(L, 2);
  lua_Integer total = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return luaL_fileresult(L, 0, path);
  if (digest_fd(d, fd, &total) != 0) return luaL_fileresult(L, 0, path);
  lua_pushinteger(L, total);
  return 1;
}

/* util.sha256_file(path) -> hex digest, size | nil, msg, code
** Blocking file reads are fine here: it is for tests and benchmarks, and it
** reads in fixed chunks so memory stays flat whatever the size. */
static int l_sha256_file (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char hex[64];
  unsigned char md[32];
  lua_Integer total = 0;
  Digest d;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return luaL_fileresult(L, 0, path);
  d.md5 = 0;
  dt_sha256_init(&d.u.sha);
  if (digest_fd(&d, fd, &total) != 0) return luaL_fileresult(L, 0, path);
  dt_sha256_final(&d.u.sha, md);
  tohex(md, sizeof md, hex);
  lua_pushlstring(L, hex, sizeof hex);
  lua_pushinteger(L, total);
  return 2;
}


static int digest_hex (lua_State *L) {
  Digest *d = check_digest(L);
  unsigned char md[32];
  char hex[64];
  size_t n = d->md5 ? 16 : 32;
  if (d->md5) dt_md5_final(&d->u.md, md);
  else dt_sha256_final(&d->u.sha, md);
  d->done = 1;
  tohex(md, n, hex);
  lua_pushlstring(L, hex, 2 * n);
  return 1;
}

static int digest_tostring (lua_State *L) {
  Digest *d = (Digest *)luaL_checkudata(L, 1, DIGEST_TNAME);
  lua_pushfstring(L, "%s (%s): %p", DIGEST_TNAME, d->md5 ? "md5" : "sha256", (void *)d);
  return 1;
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

/* util.base64_decode(s) -> bytes | nil, msg, "EINVAL"
** Standard base64, padding optional, whitespace skipped (digest.h). */
static int l_base64_decode (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *why = NULL;
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n / 4 * 3 + 3);
  ptrdiff_t len = dt_base64_decode(s, n, out, &why);
  if (len < 0) return dt_fail(L, why, "EINVAL");
  luaL_pushresultsize(&b, (size_t)len);
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
static const char *type_name (const struct stat *st) {
  if (S_ISREG(st->st_mode)) return "file";
  if (S_ISDIR(st->st_mode)) return "directory";
  if (S_ISLNK(st->st_mode)) return "link";
  if (S_ISFIFO(st->st_mode)) return "fifo";
  if (S_ISSOCK(st->st_mode)) return "socket";
  if (S_ISCHR(st->st_mode)) return "char";
  if (S_ISBLK(st->st_mode)) return "block";
  return "other";
}

static void push_stat (lua_State *L, const struct stat *st) {
  lua_createtable(L, 0, 7);
  lua_pushstring(L, type_name(st)); lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st->st_size); lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st->st_mode & 07777)); lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_sec); lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_nsec); lua_setfield(L, -2, "mtime_nsec");
  lua_pushinteger(L, (lua_Integer)st->st_uid); lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)st->st_gid); lua_setfield(L, -2, "gid");
}

static int l_stat (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int follow = lua_toboolean(L, 2);
  struct stat st;
  if ((follow ? stat(path, &st) : lstat(path, &st)) < 0)
    return sysfail(L, errno);
  push_stat(L, &st);
  return 1;
}

static int io_fclose (lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  int res = fclose(p->f);
  return luaL_fileresult(L, (res == 0), NULL);
}

/* util.open_file(path, mode) -> file, stat | nil, msg, code
** io.open for regular files only: mode "r", "w" (truncate or create) or
** "a", with or without "b".  The open itself cannot block (O_NONBLOCK: a
** FIFO without a writer, or without a reader for "w", would otherwise
** stop the loop and every request with it) and the type is read from the
** opened descriptor, so nothing can be swapped in between; anything but a
** regular file is closed again and refused with code ENOTREG and its type
** ("fifo", "socket", "char", "block", "directory", "other") as message. */
static int l_open_file (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  int flags = O_CLOEXEC | O_NONBLOCK | O_NOCTTY, fd;
  const char *fmode;
  struct stat st;
  luaL_Stream *p;
  switch (mode[0]) {
    case 'r': flags |= O_RDONLY; fmode = "rb"; break;
    case 'w': flags |= O_WRONLY | O_CREAT | O_TRUNC; fmode = "wb"; break;
    case 'a': flags |= O_WRONLY | O_CREAT | O_APPEND; fmode = "ab"; break;
    default: return luaL_argerror(L, 2, "mode must be \"r\", \"w\" or \"a\" (\"b\" optional)");
  }
  luaL_argcheck(L, mode[1] == '\0' || (mode[1] == 'b' && mode[2] == '\0'), 2, "invalid mode");
  fd = open(path, flags, 0666);
  if (fd < 0) return sysfail(L, errno);
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return sysfail(L, e);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return dt_fail(L, type_name(&st), "ENOTREG");
  }
  /* a regular file: blocking I/O from here, as io's files do */
  if (fcntl(fd, F_SETFL, flags & ~(O_NONBLOCK | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY)) != 0) {
    int e = errno;
    close(fd);
    return sysfail(L, e);
  }
  p = (luaL_Stream *)lua_newuserdatauv(L, sizeof(luaL_Stream), 0);
  p->closef = NULL;   /* not a file until fdopen succeeds */
  luaL_setmetatable(L, LUA_FILEHANDLE);
  p->f = fdopen(fd, fmode);
  if (p->f == NULL) {
    int e = errno;
    close(fd);
    return sysfail(L, e);
  }
  p->closef = &io_fclose;
  push_stat(L, &st);
  return 2;
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

/* util.chown(path, uid, gid[, nofollow]) -> true | nil, msg, code; -1
** leaves one as is; nofollow: a symlink itself (lchown), never its target */
static int l_chown (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer uid = luaL_checkinteger(L, 2), gid = luaL_checkinteger(L, 3);
  int nofollow = lua_toboolean(L, 4);
  luaL_argcheck(L, uid >= -1 && uid <= 0xfffffffe, 2, "uid out of range");
  luaL_argcheck(L, gid >= -1 && gid <= 0xfffffffe, 3, "gid out of range");
  if ((nofollow ? lchown(path, (uid_t)uid, (gid_t)gid) : chown(path, (uid_t)uid, (gid_t)gid)) < 0)
    return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* util.whiteout(path) -> true | nil, msg, code
** An overlayfs whiteout at path (a character device 0/0, which the kernel
** lets anyone make since Linux 5.8): the image store turns OCI whiteouts
** (".wh.NAME" files) into these.  Fails with EEXIST when path exists. */
static int l_whiteout (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (mknod(path, S_IFCHR | 0000, makedev(0, 0)) < 0) return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* util.setxattr(path, name, value) -> true | nil, msg, code
** On path itself, never a symlink's target (lsetxattr): the image store
** marks opaque directories of its layers (trusted.overlay.opaque, or
** user.overlay.opaque unprivileged). */
static int l_setxattr (lua_State *L) {
  const char *path = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
  size_t n;
  const char *value = luaL_checklstring(L, 3, &n);
  if (lsetxattr(path, name, value, n, 0) < 0) return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* util.getxattr(path, name) -> value | nil, msg, code (ENODATA: not set)
** On path itself (lgetxattr): the builder reads the opaque marks of the
** image store's layers to see a path the way the overlay will. */
static int l_getxattr (lua_State *L) {
  const char *path = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
  char value[256];
  ssize_t n = lgetxattr(path, name, value, sizeof value);
  if (n < 0) return sysfail(L, errno);
  lua_pushlstring(L, value, (size_t)n);
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

/* util.time() -> seconds since the epoch, a float with microseconds (the
** wall clock, CLOCK_REALTIME; core.now() is the monotonic one) */
static int l_time (lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000) / 1e6);
  return 1;
}

/* util.readlink(path) -> target | nil, msg, code (also /proc's magic links,
** e.g. "socket:[123]" and "pid:[4026531836]") */
static int l_readlink (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  ssize_t n = readlink(path, buf, sizeof buf);
  if (n < 0) return sysfail(L, errno);
  if ((size_t)n == sizeof buf) return dt_fail(L, "link target too long", "ENAMETOOLONG");
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* util.unix_bind(path) -> fd | nil, msg, code
** A unix-domain stream socket bound at path (which must not exist), not
** yet listening, close-on-exec: for a child to listen on (process.spawn's
** `fds`), so that the path lives where the caller chose while the kernel
** records the child, which calls listen(), as the peer (SO_PEERCRED). */
static int l_unix_bind (lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  struct sockaddr_un sun;
  int fd;
  luaL_argcheck(L, n > 0 && n < sizeof sun.sun_path && strlen(path) == n, 1,
                "socket path empty, too long or with a NUL");
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, n);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    return sysfail(L, e);
  }
  lua_pushinteger(L, fd);
  return 1;
}

/* util.close(fd) -> true | nil, msg, code: for a descriptor unix_bind gave */
static int l_close (lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd > 2 && fd <= INT_MAX, 1, "not a descriptor above 2");
  if (close((int)fd) != 0) return sysfail(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

void dt_open_util (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sha256", l_sha256}, {"sha256_file", l_sha256_file}, {"base64_decode", l_base64_decode},
    {"hmac_sha256", l_hmac_sha256}, {"digest", l_digest},
    {"random_bytes", l_random_bytes}, {"hex", l_hex},
    {"equal_ct", l_equal_ct}, {"isatty", l_isatty}, {"getpid", l_getpid},
    {"getuid", l_getuid}, {"environ", l_environ}, {"stat", l_stat},
    {"symlink", l_symlink}, {"mkdtemp", l_mkdtemp},
    {"unix_bind", l_unix_bind}, {"close", l_close}, {"readlink", l_readlink},
    {"open_file", l_open_file}, {"time", l_time},
    {"readdir", l_readdir}, {"mkdir", l_mkdir}, {"chmod", l_chmod},
    {"chown", l_chown}, {"user", l_user}, {"group", l_group},
    {"whiteout", l_whiteout}, {"setxattr", l_setxattr}, {"getxattr", l_getxattr},
    {NULL, NULL}
  };
  static const luaL_Reg digest_methods[] = {
    {"update", digest_update}, {"update_file", digest_update_file},
    {"hex", digest_hex}, {NULL, NULL}
  };
  static const luaL_Reg digest_meta[] = {
    {"__tostring", digest_tostring}, {NULL, NULL}
  };
  /* stack: table, loop */
  dt_newclass(L, DIGEST_TNAME, digest_methods, digest_meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}
