/*
** sandbox_launcher.c -- dtlua-sandbox: the local server's sandbox launcher,
** and the init (PID 1) of every sandbox.
**
** A sandbox is a directory on the host (its "root dir") plus, while it runs,
** its own Linux namespaces: user, mount, PID, UTS, IPC, cgroup and, with
** --net none, network.  doc/sandbox.md has the design, the mount table and
** the uid mapping.  The processes, when the launcher runs as root:
**
**   launcher P (host root)          init C (PID 1 inside)        program G
**   check args, join --cgroup dirs,
**   lock, prepare dirs
**   private mount namespace
**   clone3(NEWUSER|NEWPID|...) -->  waits on the go pipe
**   write uid/gid maps
**   build the new root in P's mount
**   namespace, which C shares:
**   idmapped lowers, overlays,
**   /dev, /sys, /run, binds
**   go ---------------------------> unshare(NEWNS): a copy of the tree,
**                                   every mount locked by the kernel
**                                   hostname, lo, /proc, devpts, shm
**                                   pivot_root, old root detached
**                                   becomes sandbox root (host uid N)
**                                   fork ---------------------->  user, cwd, env
**                                                                 execvp
**   <----------------- "ready" ---- the exec succeeded
**   "ready PID" on --ready-fd
**   forwards signals to C           reaps every zombie, forwards
**   exits with C's status           signals to G, exits with G's status
**                                   (the kernel then kills everything
**                                   left in the PID namespace)
**
** Not root, the launcher cannot make idmapped mounts nor map a uid range of
** its choosing: C then prepares the directory and builds the tree itself,
** inside its own user namespace (doc/sandbox.md says what does not work).
**
** The launcher is a standalone program with no library beyond libc: it
** runs before anything else in the sandbox, and every millisecond of it is
** on dtlocal's create-and-start path, so it makes direct system calls (the
** new mount API, openat2) and never executes helper programs as root.
*/

#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <net/if.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <linux/magic.h>
#include <linux/openat2.h>
#include <linux/sched.h>

#define PROG "dtlua-sandbox"

/* Exit codes of the launcher's own failures (doc/sandbox.md).  Once the
** program has started, the exit code is the program's (128+N for death by
** signal N); the --ready-fd line tells the two cases apart. */
#define EXIT_USAGE    64   /* bad command line */
#define EXIT_STATE    65   /* preparing the sandbox directory */
#define EXIT_NS       66   /* creating namespaces, writing uid/gid maps */
#define EXIT_MOUNT    67   /* a mount of the new root */
#define EXIT_PIVOT    68   /* pivot_root, detaching the host's root */
#define EXIT_USER     69   /* switching to the sandbox user or cwd */
#define EXIT_BUSY     70   /* the sandbox is running already */
#define EXIT_INTERNAL 71   /* fork, pipes, signals; init died early */
#define EXIT_CGROUP   72   /* joining a --cgroup */
#define EXIT_NOEXEC   126  /* the program exists but cannot be executed */
#define EXIT_NOTFOUND 127  /* the program was not found */

#define MAX_ENV    256
#define MAX_BINDS  64
#define MAX_HIDES  64
#define MAX_CGROUPS 16        /* one per cgroup v1 hierarchy, or one v2 group */
#define MAX_ENV_BYTES (1024 * 1024)   /* of one --env-file */
#define ID_COUNT   65536      /* sandbox uids/gids 0..65535 */
#define DAYTONA_ID 1000       /* Daytona's sandbox user and group */
#define OVERFLOW_ID 65534     /* "nobody" */

/* Top-level host entries the new root reproduces: a host symlink (the
** usr-merge links) becomes the same symlink, a host directory becomes an
** overlay with the host's directory as lower layer. */
static const char *const top_entries[] = {
  "bin", "sbin", "lib", "lib32", "lib64", "libx32",
  "usr", "etc", "var", "opt", "srv", NULL
};

/* Host paths hidden from every sandbox besides --hide ones, by a whiteout
** (files) or an opaque empty directory (directories) in the upper layer.
** /etc/shadow and /etc/gshadow are not here: the sandbox gets its own
** (user names of the host, no password hashes).  Sandbox root can read any
** host file the overlay shows it, so secrets commonly kept under the
** overlaid trees are listed; doc/sandbox.md explains. */
static const char *const default_hides[] = {
  "/etc/shadow-", "/etc/gshadow-", "/etc/ssl/private",
  "/var/backups", "/var/log", "/var/mail", "/var/spool/mail",
  "/var/spool/cron", "/var/lib/sudo", NULL
};

typedef struct Bind {
  const char *src, *dst;
  const char *sub;         /* --bind-beneath: resolved beneath src, or NULL */
  int ro;
} Bind;

typedef struct Opts {
  const char *root_dir;
  const char *hostname;
  unsigned long uid_base;
  int have_base;
  int net_none;
  int user_root;             /* --user root (else daytona) */
  const char *cwd;
  const char *env[MAX_ENV];
  int nenv;
  Bind binds[MAX_BINDS];
  int nbinds;
  const char *hides[MAX_HIDES];
  int nhides;
  const char *cgroups[MAX_CGROUPS];
  int ncgroups;
  int ready_fd;
  int listen_fd;           /* --listen-fd: becomes PROGRAM's descriptor 3 */
  char **argv;               /* the program and its arguments */
} Opts;

typedef struct Ctx {
  Opts *o;
  int privileged;            /* host root: idmapped layers, uid range */
  unsigned long base;        /* host uid/gid of sandbox id 0 (privileged) */
  int sub_mapped;            /* ids 1..65535 mapped (privileged or subuid) */
  uid_t host_uid;            /* the caller's ids, unprivileged mode */
  gid_t host_gid;
  char dir[PATH_MAX];        /* the root dir, made absolute */
  char rootfs[PATH_MAX + 16];
  char upper[PATH_MAX + 16];
  char work[PATH_MAX + 16];
  char run[PATH_MAX + 16];
  int dirfd;                 /* the root dir */
  int lockfd;
  int userns_fd;             /* C's user namespace (privileged) */
  int ntops;                 /* overlaid top-level directories */
  const char *tops[16];
} Ctx;

/* The launcher's original argv block: init blanks it, so that the
** sandbox's /proc/1/cmdline shows none of the host's paths. */
static char *argv_area;
static size_t argv_len;

/* Where errors are reported besides stderr: the --ready-fd in the launcher,
** the status pipe to the launcher in the sandbox's init, -1 elsewhere. */
static int report_fd = -1;


/* ---------------------------------------------------------------------- */
/* errors                                                                   */
/* ---------------------------------------------------------------------- */

static void vreport (int code, int err, const char *fmt, va_list ap) {
  char msg[1024];
  size_t n;
  vsnprintf(msg, sizeof msg, fmt, ap);
  n = strlen(msg);
  if (err != 0)
    snprintf(msg + n, sizeof msg - n, ": %s", strerror(err));
  for (n = 0; msg[n] != '\0'; n++)  /* one line on the report channel */
    if (msg[n] == '\n') msg[n] = ' ';
  fprintf(stderr, PROG ": %s\n", msg);
  if (report_fd >= 0) {
    dprintf(report_fd, "error %d %s\n", code, msg);
    close(report_fd);
    report_fd = -1;
  }
}

/* Fail with exit code `code`; the message names what failed. */
static void die (int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(code, 0, fmt, ap);
  va_end(ap);
  _exit(code);
}

/* Same, appending the text of the current errno. */
static void die_errno (int code, const char *fmt, ...) {
  int err = errno;
  va_list ap;
  va_start(ap, fmt);
  vreport(code, err, fmt, ap);
  va_end(ap);
  _exit(code);
}


/* ---------------------------------------------------------------------- */
/* command line                                                             */
/* ---------------------------------------------------------------------- */

static const char usage_text[] =
  "usage: " PROG " run --root-dir DIR --hostname NAME [--uid-base N]\n"
  "           [--net host|none] [--user daytona|root] [--cwd DIR]\n"
  "           [--env K=V]... [--env-file PATH] [--bind SRC DST]... [--ro-bind SRC DST]...\n"
  "           [--bind-beneath SRC SUBPATH DST]...\n"
  "           [--hide PATH]... [--cgroup DIR]... [--ready-fd FD] [--listen-fd FD]\n"
  "           -- PROGRAM [ARG...]\n"
  "       " PROG " rm --root-dir DIR\n"
  "\n"
  "run: start the sandbox whose state is DIR (created when missing) and run\n"
  "PROGRAM in it as its only child; exits with PROGRAM's status.  As root,\n"
  "--uid-base N (>= 65536) is required: sandbox ids 0..65535 are host ids\n"
  "N..N+65535.  --ready-fd FD gets one line: \"ready PID\" once PROGRAM was\n"
  "executed (PID: the sandbox's init on the host), or \"error CODE MESSAGE\".\n"
  "--env-file PATH: more K=V, NUL-separated, read from the regular file PATH\n"
  "(for secrets: not on the command line, which every host user can see).\n"
  "--cgroup DIR: join the cgroup DIR before anything else, so that every\n"
  "process of the sandbox is in it.\n"
  "--listen-fd FD: the socket FD becomes PROGRAM's descriptor 3.\n"
  "rm: delete the sandbox's directory (it must not be running).\n";

static void usage (const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(EXIT_USAGE, 0, fmt, ap);
  va_end(ap);
  fputs(usage_text, stderr);
  _exit(EXIT_USAGE);
}

/* A clean absolute path: starts with '/', no empty, "." or ".." part. */
static int clean_abs_path (const char *p) {
  const char *s;
  if (p[0] != '/' || strlen(p) >= PATH_MAX) return 0;
  if (p[1] == '\0') return 1;
  for (s = p + 1;;) {
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
      return 0;
    if (!e) return 1;
    s = e + 1;
  }
}

static int valid_hostname (const char *h) {
  size_t i, n = strlen(h);
  if (n == 0 || n > 63 || h[0] == '-' || h[0] == '.') return 0;
  for (i = 0; i < n; i++)
    if (!(isalnum((unsigned char)h[i]) || h[i] == '-' || h[i] == '.')) return 0;
  return 1;
}

static int valid_env (const char *kv) {
  const char *eq = strchr(kv, '=');
  const char *s;
  if (eq == NULL || eq == kv) return 0;
  for (s = kv; s < eq; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_')) return 0;
  return !isdigit((unsigned char)kv[0]);
}

static unsigned long parse_ulong (const char *opt, const char *s, unsigned long max) {
  char *end;
  unsigned long v;
  errno = 0;
  if (!isdigit((unsigned char)s[0])) usage("%s: not a number: '%s'", opt, s);
  v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    usage("%s: not a number in 0..%lu: '%s'", opt, max, s);
  return v;
}

/* --env-file: NAME=VALUE entries separated by NUL bytes, at most
** MAX_ENV_BYTES, from a regular file.  The launcher reads it itself (as the
** caller, before anything else), so the caller can keep it readable by
** itself only and remove it once the sandbox is ready.  The entries stay in
** the buffer, which lives as long as the process. */
static void read_env_file (Opts *o, const char *path) {
  size_t n = 0, i;
  struct stat st;
  char *buf;
  /* O_NONBLOCK: a FIFO put there must not hang the launcher (refused below) */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) die_errno(EXIT_USAGE, "--env-file: open %s", path);
  if (fstat(fd, &st) != 0) die_errno(EXIT_USAGE, "--env-file: stat %s", path);
  if (!S_ISREG(st.st_mode)) usage("--env-file: %s is not a regular file", path);
  if (st.st_size > MAX_ENV_BYTES)
    usage("--env-file: %s has more than %d bytes", path, MAX_ENV_BYTES);
  buf = malloc(MAX_ENV_BYTES + 1);
  if (buf == NULL) die(EXIT_INTERNAL, "out of memory");
  for (;;) {  /* until EOF: the size may change while we read */
    ssize_t r = read(fd, buf + n, MAX_ENV_BYTES + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die_errno(EXIT_USAGE, "--env-file: read %s", path);
    if (r == 0) break;
    n += (size_t)r;
    if (n > MAX_ENV_BYTES) usage("--env-file: %s has more than %d bytes", path, MAX_ENV_BYTES);
  }
  close(fd);
  buf[n] = '\0';
  for (i = 0; i < n; i += strlen(buf + i) + 1) {
    if (buf[i] == '\0') continue;  /* tolerate a trailing or double NUL */
    if (!valid_env(buf + i))
      usage("--env-file: %s: expected NAME=VALUE entries separated by NUL bytes, got '%.40s'",
            path, buf + i);
    if (o->nenv == MAX_ENV) usage("--env/--env-file: more than %d", MAX_ENV);
    o->env[o->nenv++] = buf + i;
  }
}

static void parse_run (Opts *o, int argc, char **argv) {
  int i;
  memset(o, 0, sizeof *o);
  o->ready_fd = -1;
  o->listen_fd = -1;
  for (i = 0; i < argc; i++) {
    const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage("%s needs a value", a), ""))
    if (strcmp(a, "--") == 0) { i++; break; }
    if (strncmp(a, "--", 2) != 0) break;
    if (strcmp(a, "--root-dir") == 0) o->root_dir = NEXT();
    else if (strcmp(a, "--hostname") == 0) o->hostname = NEXT();
    else if (strcmp(a, "--uid-base") == 0) {
      o->uid_base = parse_ulong(a, NEXT(), 4294967295UL);
      o->have_base = 1;
    }
    else if (strcmp(a, "--net") == 0) {
      const char *v = NEXT();
      if (strcmp(v, "none") == 0) o->net_none = 1;
      else if (strcmp(v, "host") == 0) o->net_none = 0;
      else usage("--net: expected host or none, got '%s'", v);
    }
    else if (strcmp(a, "--user") == 0) {
      const char *v = NEXT();
      if (strcmp(v, "root") == 0) o->user_root = 1;
      else if (strcmp(v, "daytona") == 0) o->user_root = 0;
      else usage("--user: expected daytona or root, got '%s'", v);
    }
    else if (strcmp(a, "--cwd") == 0) o->cwd = NEXT();
    else if (strcmp(a, "--env") == 0) {
      const char *v = NEXT();
      if (!valid_env(v)) usage("--env: expected NAME=VALUE, got '%s'", v);
      if (o->nenv == MAX_ENV) usage("--env: more than %d", MAX_ENV);
      o->env[o->nenv++] = v;
    }
    else if (strcmp(a, "--env-file") == 0) read_env_file(o, NEXT());
    else if (strcmp(a, "--bind") == 0 || strcmp(a, "--ro-bind") == 0) {
      Bind *b;
      if (o->nbinds == MAX_BINDS) usage("%s: more than %d binds", a, MAX_BINDS);
      b = &o->binds[o->nbinds++];
      b->ro = (a[2] == 'r');
      b->src = NEXT();
      b->dst = NEXT();
      if (b->src[0] != '/') usage("%s: source must be absolute: '%s'", a, b->src);
      if (!clean_abs_path(b->dst) || strcmp(b->dst, "/") == 0)
        usage("%s: destination must be a clean absolute path below /: '%s'", a, b->dst);
    }
    else if (strcmp(a, "--bind-beneath") == 0) {
      Bind *b;
      if (o->nbinds == MAX_BINDS) usage("%s: more than %d binds", a, MAX_BINDS);
      b = &o->binds[o->nbinds++];
      b->ro = 0;
      b->src = NEXT();
      b->sub = NEXT();
      b->dst = NEXT();
      if (b->src[0] != '/') usage("%s: source must be absolute: '%s'", a, b->src);
      /* relative, clean: checked as the absolute path it would be */
      if (b->sub[0] == '/' || strlen(b->sub) >= PATH_MAX - 1) usage("%s: bad subpath '%s'", a, b->sub);
      {
        char abs[PATH_MAX];
        snprintf(abs, sizeof abs, "/%s", b->sub);
        if (!clean_abs_path(abs) || strcmp(abs, "/") == 0)
          usage("%s: subpath must be a clean relative path, got '%s'", a, b->sub);
      }
      if (!clean_abs_path(b->dst) || strcmp(b->dst, "/") == 0)
        usage("%s: destination must be a clean absolute path below /: '%s'", a, b->dst);
    }
    else if (strcmp(a, "--hide") == 0) {
      const char *v = NEXT();
      if (!clean_abs_path(v) || strcmp(v, "/") == 0)
        usage("--hide: expected a clean absolute path below /, got '%s'", v);
      if (o->nhides == MAX_HIDES) usage("--hide: more than %d", MAX_HIDES);
      o->hides[o->nhides++] = v;
    }
    else if (strcmp(a, "--cgroup") == 0) {
      const char *v = NEXT();
      if (!clean_abs_path(v) || strcmp(v, "/") == 0)
        usage("--cgroup: expected a clean absolute path of a cgroup directory, got '%s'", v);
      if (o->ncgroups == MAX_CGROUPS) usage("--cgroup: more than %d", MAX_CGROUPS);
      o->cgroups[o->ncgroups++] = v;
    }
    else if (strcmp(a, "--ready-fd") == 0) {
      o->ready_fd = (int)parse_ulong(a, NEXT(), INT_MAX);
      if (o->ready_fd <= 2 || fcntl(o->ready_fd, F_GETFD) < 0)
        usage("--ready-fd: %d is not an open descriptor above 2", o->ready_fd);
    }
    else if (strcmp(a, "--listen-fd") == 0) {
      struct stat st;
      o->listen_fd = (int)parse_ulong(a, NEXT(), INT_MAX);
      if (o->listen_fd <= 2 || fstat(o->listen_fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        usage("--listen-fd: %d is not an open socket descriptor above 2", o->listen_fd);
    }
    else usage("unknown option '%s'", a);
#undef NEXT
  }
  if (o->listen_fd >= 0 && o->listen_fd == o->ready_fd)
    usage("--listen-fd and --ready-fd must be different descriptors");
  if (o->root_dir == NULL) usage("--root-dir is required");
  if (o->root_dir[0] == '\0' || strlen(o->root_dir) >= PATH_MAX - 32)
    usage("--root-dir: bad path '%s'", o->root_dir);
  if (o->hostname == NULL) usage("--hostname is required");
  if (!valid_hostname(o->hostname))
    usage("--hostname: expected 1..63 letters, digits, '-' or '.', got '%s'", o->hostname);
  if (o->cwd != NULL && !clean_abs_path(o->cwd))
    usage("--cwd: expected a clean absolute path, got '%s'", o->cwd);
  if (i >= argc) usage("no program given (after --)");
  o->argv = argv + i;
}


/* ---------------------------------------------------------------------- */
/* file helpers: everything under the root dir may have been written by   */
/* the sandbox, so nothing there is followed through a symlink             */
/* ---------------------------------------------------------------------- */

static int openat2_ (int dirfd, const char *path, int flags, unsigned long long resolve) {
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (unsigned long long)(flags | O_CLOEXEC);
  how.resolve = resolve;
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

/* Host id of sandbox id `id` as seen by the process doing the preparation:
** the launcher (host root) in privileged mode, init inside its user
** namespace otherwise, where unmapped ids fall back to root. */
#define HOST_OWNED ((unsigned long)-1)   /* ensure_dir: keep the creator's owner */

static uid_t own_id (Ctx *c, unsigned long id) {
  if (c->privileged) return (uid_t)(c->base + (id < ID_COUNT ? id : OVERFLOW_ID));
  return (uid_t)(c->sub_mapped && id < ID_COUNT ? id : 0);
}

/* The directory `name` in dirfd: created (mode, owner sandbox id `id`)
** when missing; anything else in its place (a file, a symlink the sandbox
** left) is replaced.  Returns an O_PATH descriptor; *created says whether
** it is new. */
static int ensure_dir (Ctx *c, int dirfd, const char *name, mode_t mode,
                       unsigned long id, int *created, const char *what) {
  struct stat st;
  int fd;
  if (created) *created = 0;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
    if (unlinkat(dirfd, name, 0) != 0)
      die_errno(EXIT_STATE, "replace non-directory %s", what);
  }
  if (mkdirat(dirfd, name, mode) == 0) {
    if (id != HOST_OWNED &&
        fchownat(dirfd, name, own_id(c, id), own_id(c, id), AT_SYMLINK_NOFOLLOW) != 0)
      die_errno(EXIT_STATE, "chown %s", what);
    if (created) *created = 1;
  }
  else if (errno != EEXIST)
    die_errno(EXIT_STATE, "mkdir %s", what);
  fd = openat2_(dirfd, name, O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_STATE, "open %s", what);
  return fd;
}

/* The symlink `name` -> target in dirfd, when nothing is there yet. */
static void ensure_symlink (Ctx *c, int dirfd, const char *name, const char *target) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) return;
  if (symlinkat(target, dirfd, name) != 0 ||
      fchownat(dirfd, name, own_id(c, 0), own_id(c, 0), AT_SYMLINK_NOFOLLOW) != 0)
    die_errno(EXIT_STATE, "symlink /%s -> %s in %s", name, target, c->rootfs);
}

/* Create the regular file `name` in dirfd with `data`, unless something
** by that name exists (the sandbox's own version, or its deletion as a
** whiteout, wins).  Returns 1 when written. */
static int write_new_file (Ctx *c, int dirfd, const char *name, const char *data,
                           size_t len, mode_t mode, unsigned long uid,
                           unsigned long gid, const char *what) {
  int fd = openat2_(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, BENEATH);
  size_t off = 0;
  if (fd < 0) {
    if (errno == EEXIST) return 0;
    die_errno(EXIT_STATE, "create %s", what);
  }
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      die_errno(EXIT_STATE, "write %s", what);
    }
    off += (size_t)n;
  }
  if (fchown(fd, own_id(c, uid), own_id(c, gid)) != 0 || fchmod(fd, mode) != 0)
    die_errno(EXIT_STATE, "set owner and mode of %s", what);
  close(fd);
  return 1;
}

/* A growable string for the files the launcher writes. */
typedef struct Buf {
  char *p;
  size_t n, cap;
} Buf;

static void buf_add (Buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (b->n + n + 1 > cap) cap *= 2;
    b->p = realloc(b->p, cap);
    if (b->p == NULL) die(EXIT_INTERNAL, "out of memory");
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void buf_addf (Buf *b, const char *fmt, ...) {
  char tmp[1024];
  int n;
  va_list ap;
  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) die(EXIT_INTERNAL, "line too long");
  buf_add(b, tmp, (size_t)n);
}

static void buf_adds (Buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* Read a whole small host file (at most 4 MiB); b->p is a string after. */
static int read_host_file (const char *path, Buf *b) {
  char tmp[8192];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  buf_add(b, "", 0);
  for (;;) {
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (b->n + (size_t)n > 4 * 1024 * 1024) { close(fd); errno = EFBIG; return -1; }
    buf_add(b, tmp, (size_t)n);
  }
  close(fd);
  return 0;
}


/* ---------------------------------------------------------------------- */
/* preparing the sandbox directory                                          */
/* ---------------------------------------------------------------------- */

/* The i-th ':' separated field of line (copied into out), or "" */
static void field (const char *line, int i, char *out, size_t outsz) {
  const char *s = line, *e;
  size_t n;
  while (i-- > 0) {
    s = strchr(s, ':');
    if (s == NULL) { out[0] = '\0'; return; }
    s++;
  }
  e = strpbrk(s, ":\n");
  n = e ? (size_t)(e - s) : strlen(s);
  if (n >= outsz) n = outsz - 1;
  memcpy(out, s, n);
  out[n] = '\0';
}

/* /etc/passwd, /etc/group, /etc/shadow and /etc/gshadow of a new sandbox:
** the host's accounts minus whatever holds the name daytona or id 1000,
** plus daytona; shadow files carry no password of the host ("*": no
** password login; sudo for daytona needs none). */
static void write_accounts (Ctx *c, int etcfd) {
  Buf hp = {0}, hg = {0}, pw = {0}, gr = {0}, sh = {0}, gsh = {0};
  unsigned long shadow_gid = 0;
  char name[256], id[32];
  char *line, *save;
  if (read_host_file("/etc/passwd", &hp) != 0)
    die_errno(EXIT_STATE, "read the host's /etc/passwd");
  if (read_host_file("/etc/group", &hg) != 0)
    die_errno(EXIT_STATE, "read the host's /etc/group");
  for (line = strtok_r(hp.p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    field(line, 0, name, sizeof name);
    field(line, 2, id, sizeof id);
    if (name[0] == '\0' || name[0] == '#' || strcmp(name, "daytona") == 0 ||
        strcmp(id, "1000") == 0)
      continue;
    buf_adds(&pw, line);
    buf_adds(&pw, "\n");
    buf_adds(&sh, name);
    buf_adds(&sh, ":*:::::::\n");
  }
  buf_addf(&pw, "daytona:x:%d:%d:Daytona:/home/daytona:/bin/bash\n", DAYTONA_ID, DAYTONA_ID);
  buf_addf(&sh, "daytona:*:::::::\n");
  for (line = strtok_r(hg.p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    const char *members = line;
    int k;
    field(line, 0, name, sizeof name);
    field(line, 2, id, sizeof id);
    if (name[0] == '\0' || name[0] == '#' || strcmp(name, "daytona") == 0 ||
        strcmp(id, "1000") == 0)
      continue;
    for (k = 0; k < 3 && members != NULL; k++) {  /* the rest after the 3rd ':' */
      members = strchr(members, ':');
      if (members != NULL) members++;
    }
    if (strcmp(name, "shadow") == 0) shadow_gid = strtoul(id, NULL, 10);
    buf_adds(&gr, line);
    buf_adds(&gr, "\n");
    buf_adds(&gsh, name);
    buf_adds(&gsh, ":*::");
    buf_adds(&gsh, members ? members : "");
    buf_adds(&gsh, "\n");
  }
  buf_addf(&gr, "daytona:x:%d:\n", DAYTONA_ID);
  buf_addf(&gsh, "daytona:*::\n");
  write_new_file(c, etcfd, "passwd", pw.p, pw.n, 0644, 0, 0, "/etc/passwd");
  write_new_file(c, etcfd, "group", gr.p, gr.n, 0644, 0, 0, "/etc/group");
  write_new_file(c, etcfd, "shadow", sh.p, sh.n, 0640, 0, shadow_gid, "/etc/shadow");
  write_new_file(c, etcfd, "gshadow", gsh.p, gsh.n, 0640, 0, shadow_gid, "/etc/gshadow");
  free(hp.p); free(hg.p); free(pw.p); free(gr.p); free(sh.p); free(gsh.p);
}

/* Mirror the attributes of host directory `lower` on the new upper
** directory name in dirfd (mode, owner mapped into the sandbox). */
static void copy_dir_attrs (Ctx *c, int dirfd, const char *name, const char *lower) {
  struct stat st;
  unsigned long uid = 0, gid = 0;
  mode_t mode = 0755;
  if (stat(lower, &st) == 0) {
    mode = st.st_mode & 07777;
    uid = st.st_uid;
    gid = st.st_gid;
  }
  if (fchownat(dirfd, name, own_id(c, uid), own_id(c, gid), AT_SYMLINK_NOFOLLOW) != 0 ||
      fchmodat(dirfd, name, mode, 0) != 0)
    die_errno(EXIT_STATE, "set owner and mode of upper directory for %s", lower);
}

/* The directory `name` under dirfd in an upper layer, created with the
** attributes of host directory `lower` when missing.  Returns an O_PATH fd,
** or -1 when something else is there (which already hides the lower). */
static int upper_subdir (Ctx *c, int dirfd, const char *name, const char *lower) {
  int fd = openat2_(dirfd, name, O_PATH | O_DIRECTORY, BENEATH);
  if (fd >= 0) return fd;
  if (errno != ENOENT) return -1;
  if (mkdirat(dirfd, name, 0700) != 0)
    die_errno(EXIT_STATE, "mkdir upper directory for %s", lower);
  copy_dir_attrs(c, dirfd, name, lower);
  fd = openat2_(dirfd, name, O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_STATE, "open upper directory for %s", lower);
  return fd;
}

static int overlaid (Ctx *c, const char *top) {
  int i;
  for (i = 0; i < c->ntops; i++)
    if (strcmp(c->tops[i], top) == 0) return 1;
  return 0;
}

/* Hide host path `path` (clean, absolute) from the sandbox: a whiteout for
** a file, an opaque directory for a directory, in the upper layer of its
** overlay.  Paths outside the overlays are not visible anyway; paths
** through a host symlink are the symlink's business (callers pass real
** paths).  Once hidden, only the host can un-hide: from inside, the
** sandbox sees no lower file there whatever it does. */
static void hide_path (Ctx *c, const char *path) {
  char prefix[PATH_MAX], comp[NAME_MAX + 1];
  const char *s = path + 1, *e;
  struct stat st;
  int fd, nfd;
  size_t n;
  e = strchr(s, '/');
  if (e == NULL) return;                   /* a top-level entry: not hidable */
  n = (size_t)(e - s);
  if (n > NAME_MAX) return;
  memcpy(comp, s, n);
  comp[n] = '\0';
  if (!overlaid(c, comp)) return;
  if (lstat(path, &st) != 0) return;       /* nothing on the host to hide */
  fd = openat2_(c->dirfd, "upper", O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_STATE, "open %s", c->upper);
  nfd = openat2_(fd, comp, O_PATH | O_DIRECTORY, BENEATH);
  close(fd);
  if (nfd < 0) die_errno(EXIT_STATE, "open %s/%s", c->upper, comp);
  fd = nfd;
  for (s = e + 1;; s = e + 1) {
    e = strchr(s, '/');
    n = e ? (size_t)(e - s) : strlen(s);
    if (n > NAME_MAX) { close(fd); return; }
    memcpy(comp, s, n);
    comp[n] = '\0';
    if (e == NULL) break;
    memcpy(prefix, path, (size_t)(e - path));
    prefix[e - path] = '\0';
    if (lstat(prefix, &st) != 0 || !S_ISDIR(st.st_mode)) { close(fd); return; }
    nfd = upper_subdir(c, fd, comp, prefix);
    close(fd);
    if (nfd < 0) return;
    fd = nfd;
  }
  if (lstat(path, &st) != 0) { close(fd); return; }
  if (S_ISDIR(st.st_mode)) {
    const char *xattr = c->privileged ? "trusted.overlay.opaque" : "user.overlay.opaque";
    struct stat ust;
    int dfd;
    if (fstatat(fd, comp, &ust, AT_SYMLINK_NOFOLLOW) != 0) {
      if (mkdirat(fd, comp, 0700) != 0) die_errno(EXIT_STATE, "hide %s: mkdir", path);
      copy_dir_attrs(c, fd, comp, path);
    }
    else if (!S_ISDIR(ust.st_mode)) { close(fd); return; }
    dfd = openat2_(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, BENEATH);
    if (dfd < 0 || fsetxattr(dfd, xattr, "y", 1, 0) != 0)
      die_errno(EXIT_STATE, "hide %s: set %s", path, xattr);
    close(dfd);
  }
  else if (mknodat(fd, comp, S_IFCHR | 0000, makedev(0, 0)) != 0 && errno != EEXIST)
    die_errno(EXIT_STATE, "hide %s: whiteout", path);
  close(fd);
}

/* What of the host's /etc and /var a sandbox sees is decided by rule
** (doc/sandbox.md, "Hidden host paths"), not by a list of known secrets:
** - /var/lib is where services keep their state (databases, dtlocal's own
**   uid registry, sudo's timestamps, ...): only the package managers' data
**   and the system's own registries below stay visible;
** - /var/tmp and /srv are other users' and other services' data: hidden;
** - under /etc and /var, whatever the host keeps from users other than the
**   owner and group (no read permission for others; for a directory, no
**   search permission): the idmapped lower layers make the sandbox's root
**   the owner of the host's root files, so such a mode would not keep it
**   out.  /etc/shadow, /etc/gshadow and /etc/sudoers are replaced by the
**   sandbox's own before the rule runs, so it leaves them be. */
static const char *const var_lib_keep[] = {
  "apt", "dpkg", "ucf", "pam", "python", "misc", "dbus", "systemd", "man-db", "vim",
  "sgml-base", "xml-core", "shells.state", "ca-certificates", "ca-certificates-java",
  "app-info", "swcatalog", "emacsen-common", "dictionaries-common", "aspell", "ispell",
  "fonts", "texmf", "tex-common", "doc-base", "locales", "binfmts", NULL
};

static const char *const hidden_whole[] = { "/var/tmp", "/srv", NULL };

#define RULE_DEPTH_ETC 8   /* /etc is shallow; the bound is for symlink-free loops */
#define RULE_DEPTH_VAR 3   /* deeper in /var are caches with many files */

/* Trees hidden whole (default_hides, hidden_whole) or by their own rule:
** not walked again. */
static int walked_elsewhere (const char *p) {
  static const char *const skip[] = { "/var/lib", "/var/log", "/var/tmp", "/var/mail",
                                      "/var/backups", "/var/spool/mail", "/etc/ssl/private", NULL };
  int i;
  for (i = 0; skip[i] != NULL; i++) if (strcmp(p, skip[i]) == 0) return 1;
  return 0;
}

static void hide_private (Ctx *c, const char *dir, int depth) {
  DIR *d = opendir(dir);
  struct dirent *de;
  if (d == NULL) return;
  while ((de = readdir(d)) != NULL) {
    char p[PATH_MAX];
    struct stat st;
    int n;
    /* links are not followed by the rule (their targets are judged where
    ** they are); most of /etc is links (alternatives, certificates), so
    ** readdir's type saves a stat each */
    if (de->d_type == DT_LNK) continue;
    if (de->d_name[0] == '.' && (de->d_name[1] == '\0' ||
        (de->d_name[1] == '.' && de->d_name[2] == '\0')))
      continue;
    n = snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    if (n < 0 || (size_t)n >= sizeof p || walked_elsewhere(p)) continue;
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISLNK(st.st_mode)) continue;
    if (!(st.st_mode & S_IROTH) || (S_ISDIR(st.st_mode) && !(st.st_mode & S_IXOTH)))
      hide_path(c, p);
    else if (S_ISDIR(st.st_mode) && depth > 1)
      hide_private(c, p, depth - 1);
  }
  closedir(d);
}

static void hide_by_rule (Ctx *c) {
  const char *const *h;
  DIR *d = opendir("/var/lib");
  struct dirent *de;
  while (d != NULL && (de = readdir(d)) != NULL) {
    char p[PATH_MAX];
    int i, keep = de->d_name[0] == '.';
    for (i = 0; !keep && var_lib_keep[i] != NULL; i++) keep = strcmp(de->d_name, var_lib_keep[i]) == 0;
    if (keep || snprintf(p, sizeof p, "/var/lib/%s", de->d_name) >= (int)sizeof p) continue;
    hide_path(c, p);
  }
  if (d != NULL) closedir(d);
  for (h = hidden_whole; *h != NULL; h++) hide_path(c, *h);
  hide_private(c, "/etc", RULE_DEPTH_ETC);
  hide_private(c, "/var", RULE_DEPTH_VAR);
}

/* Copy the regular files of the host's /etc/skel into a new home. */
static void copy_skel (Ctx *c, int homefd) {
  DIR *d = opendir("/etc/skel");
  struct dirent *de;
  if (d == NULL) return;
  while ((de = readdir(d)) != NULL) {
    char path[PATH_MAX];
    struct stat st;
    Buf b = {0};
    if (de->d_name[0] == '.' && (de->d_name[1] == '\0' ||
        (de->d_name[1] == '.' && de->d_name[2] == '\0')))
      continue;
    snprintf(path, sizeof path, "/etc/skel/%s", de->d_name);
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 1024 * 1024)
      continue;
    if (read_host_file(path, &b) == 0)
      write_new_file(c, homefd, de->d_name, b.p ? b.p : "", b.n, st.st_mode & 0777,
                     DAYTONA_ID, DAYTONA_ID, path);
    free(b.p);
  }
  closedir(d);
}

/* Everything the sandbox's directory needs before its mounts: the layout,
** the new root's mountpoints and symlinks, the upper layers with the
** sandbox's accounts, sudo rule, hostname and hidden host paths.  Runs as
** host root (privileged) or as root of the sandbox's user namespace. */
static void prepare (Ctx *c) {
  Opts *o = c->o;
  int rootfd, fd, created, i;
  char real[PATH_MAX];
  const char *const *h;
  /* the root dir's own parts are the host's, not the sandbox's */
  close(ensure_dir(c, c->dirfd, "upper", 0700, HOST_OWNED, NULL, c->upper));
  close(ensure_dir(c, c->dirfd, "work", 0700, HOST_OWNED, NULL, c->work));
  close(ensure_dir(c, c->dirfd, "run", 0700, HOST_OWNED, NULL, c->run));
  /* <root>/run is /run/dtlua inside: the program's user must create its
  ** socket there; the root dir's own mode keeps other host users out. */
  {
    unsigned long rid = o->user_root ? 0 : DAYTONA_ID;
    mode_t mode = (!c->privileged && !o->user_root) ? 0777 : 0700;
    if (!c->privileged) rid = 0;
    if (fchownat(c->dirfd, "run", own_id(c, rid), own_id(c, rid), AT_SYMLINK_NOFOLLOW) != 0 ||
        fchmodat(c->dirfd, "run", mode, 0) != 0)
      die_errno(EXIT_STATE, "set owner and mode of %s", c->run);
  }

  rootfd = ensure_dir(c, c->dirfd, "rootfs", 0755, 0, NULL, c->rootfs);
  c->ntops = 0;
  for (i = 0; top_entries[i] != NULL; i++) {
    char hpath[64], target[PATH_MAX], what[PATH_MAX + 64];
    struct stat st;
    snprintf(hpath, sizeof hpath, "/%s", top_entries[i]);
    if (lstat(hpath, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      ssize_t n = readlink(hpath, target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      ensure_symlink(c, rootfd, top_entries[i], target);
    }
    else if (S_ISDIR(st.st_mode)) {
      int ufd, wfd, cr;
      c->tops[c->ntops++] = top_entries[i];
      snprintf(what, sizeof what, "%s/%s", c->rootfs, top_entries[i]);
      close(ensure_dir(c, rootfd, top_entries[i], 0755, 0, NULL, what));
      fd = openat2_(c->dirfd, "upper", O_PATH | O_DIRECTORY, BENEATH);
      if (fd < 0) die_errno(EXIT_STATE, "open %s", c->upper);
      snprintf(what, sizeof what, "%s/%s", c->upper, top_entries[i]);
      ufd = ensure_dir(c, fd, top_entries[i], 0755, 0, &cr, what);
      if (cr) copy_dir_attrs(c, fd, top_entries[i], hpath);
      close(ufd);
      close(fd);
      fd = openat2_(c->dirfd, "work", O_PATH | O_DIRECTORY, BENEATH);
      if (fd < 0) die_errno(EXIT_STATE, "open %s", c->work);
      snprintf(what, sizeof what, "%s/%s", c->work, top_entries[i]);
      wfd = ensure_dir(c, fd, top_entries[i], 0700, HOST_OWNED, NULL, what);
      close(wfd);
      close(fd);
    }
  }
  /* mountpoints and the sandbox's own top-level directories */
  {
    static const struct { const char *name; mode_t mode; } dirs[] = {
      { "proc", 0555 }, { "sys", 0555 }, { "dev", 0755 }, { "run", 0755 },
      { "tmp", 01777 }, { "root", 0700 }, { "home", 0755 }, { "mnt", 0755 },
      { "media", 0755 }, { NULL, 0 }
    };
    char what[PATH_MAX + 64];
    for (i = 0; dirs[i].name != NULL; i++) {
      snprintf(what, sizeof what, "%s/%s", c->rootfs, dirs[i].name);
      fd = ensure_dir(c, rootfd, dirs[i].name, dirs[i].mode, 0, NULL, what);
      if (strcmp(dirs[i].name, "home") == 0 && c->sub_mapped) {
        int hfd = ensure_dir(c, fd, "daytona", 0750, DAYTONA_ID, &created, "/home/daytona");
        if (created) copy_skel(c, hfd);
        close(hfd);
      }
      close(fd);
    }
  }
  close(rootfd);

  /* the sandbox's accounts, sudo rule and name, in the upper layer of /etc */
  if (overlaid(c, "etc")) {
    int ufd = openat2_(c->dirfd, "upper/etc", O_PATH | O_DIRECTORY, BENEATH);
    int sfd;
    char hosts[512];
    if (ufd < 0) die_errno(EXIT_STATE, "open %s/etc", c->upper);
    write_accounts(c, ufd);
    {
      /* the sandbox's own sudoers (the host's is its own business): the
      ** host's defaults that matter, and the rules of sudoers.d */
      static const char sudoers[] =
        "Defaults\tenv_reset\n"
        "Defaults\tsecure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n"
        "root\tALL=(ALL:ALL) ALL\n"
        "@includedir /etc/sudoers.d\n";
      write_new_file(c, ufd, "sudoers", sudoers, sizeof sudoers - 1, 0440, 0, 0, "/etc/sudoers");
    }
    sfd = upper_subdir(c, ufd, "sudoers.d", "/etc/sudoers.d");
    if (sfd >= 0) {
      static const char rule[] = "daytona ALL=(ALL:ALL) NOPASSWD: ALL\n";
      write_new_file(c, sfd, "daytona", rule, sizeof rule - 1, 0440, 0, 0,
                     "/etc/sudoers.d/daytona");
      close(sfd);
    }
    snprintf(hosts, sizeof hosts, "%s\n", o->hostname);
    write_new_file(c, ufd, "hostname", hosts, strlen(hosts), 0644, 0, 0, "/etc/hostname");
    snprintf(hosts, sizeof hosts,
             "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n", o->hostname);
    write_new_file(c, ufd, "hosts", hosts, strlen(hosts), 0644, 0, 0, "/etc/hosts");
    close(ufd);
    /* the host's SSH host keys */
    {
      DIR *d = opendir("/etc/ssh");
      struct dirent *de;
      while (d != NULL && (de = readdir(d)) != NULL) {
        char p[PATH_MAX];
        if (strncmp(de->d_name, "ssh_host_", 9) != 0) continue;
        snprintf(p, sizeof p, "/etc/ssh/%s", de->d_name);
        hide_path(c, p);
      }
      if (d != NULL) closedir(d);
    }
  }
  for (h = default_hides; *h != NULL; h++) hide_path(c, *h);
  hide_by_rule(c);
  for (i = 0; i < o->nhides; i++) hide_path(c, o->hides[i]);
  /* the directory holding this sandbox's (and its siblings') state */
  if (realpath(c->dir, real) != NULL) {
    char *slash = strrchr(real, '/');
    if (slash != NULL && slash != real) {
      *slash = '\0';
      hide_path(c, real);
    }
  }
}


/* ---------------------------------------------------------------------- */
/* namespaces and id maps                                                   */
/* ---------------------------------------------------------------------- */

static void write_proc (pid_t pid, const char *file, const char *data) {
  char path[64];
  int fd;
  ssize_t n;
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
  fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die_errno(EXIT_NS, "open %s", path);
  n = write(fd, data, strlen(data));
  if (n != (ssize_t)strlen(data)) die_errno(EXIT_NS, "write '%s' to %s", data, path);
  close(fd);
}

/* The caller's subordinate id range from /etc/subuid or /etc/subgid:
** 1 when one with at least DAYTONA_ID ids was found. */
static int find_subid (const char *file, const char *name, unsigned long id,
                       unsigned long *start, unsigned long *count) {
  Buf b = {0};
  char *line, *save, idstr[32];
  int found = 0;
  snprintf(idstr, sizeof idstr, "%lu", id);
  if (read_host_file(file, &b) != 0 || b.p == NULL) return 0;
  for (line = strtok_r(b.p, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
    char who[256], s[32], n[32];
    field(line, 0, who, sizeof who);
    field(line, 1, s, sizeof s);
    field(line, 2, n, sizeof n);
    if ((strcmp(who, idstr) == 0 || (name && strcmp(who, name) == 0)) &&
        isdigit((unsigned char)s[0]) && isdigit((unsigned char)n[0])) {
      *start = strtoul(s, NULL, 10);
      *count = strtoul(n, NULL, 10);
      if (*count > ID_COUNT - 1) *count = ID_COUNT - 1;
      found = *count >= DAYTONA_ID;
    }
  }
  free(b.p);
  return found;
}

/* Run newuidmap/newgidmap (setuid helpers of the uidmap package) for pid:
** id 0 is the caller, ids 1.. the subordinate range. */
static int run_idmap_helper (const char *helper, pid_t pid, unsigned long own,
                             unsigned long start, unsigned long count) {
  char a[5][32];
  pid_t h;
  int st;
  snprintf(a[0], 32, "%d", (int)pid);
  snprintf(a[1], 32, "%lu", own);
  snprintf(a[2], 32, "%lu", start);
  snprintf(a[3], 32, "%lu", count);
  h = fork();
  if (h < 0) return -1;
  if (h == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execlp(helper, helper, a[0], "0", a[1], "1", "1", a[2], a[3], (char *)NULL);
    _exit(127);
  }
  while (waitpid(h, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Give the new user namespace of pid its uid/gid maps.  Privileged:
** sandbox 0..65535 = host base..base+65535.  Otherwise: sandbox 0 = the
** caller, plus 1..N from /etc/subuid and /etc/subgid when newuidmap and a
** range exist, so that daytona (1000) exists. */
static void write_id_maps (Ctx *c, pid_t pid) {
  char map[128];
  if (c->privileged) {
    snprintf(map, sizeof map, "0 %lu %d\n", c->base, ID_COUNT);
    write_proc(pid, "uid_map", map);
    write_proc(pid, "gid_map", map);
    return;
  }
  {
    /* both files are keyed by user name or uid (what newgidmap checks) */
    struct passwd *pw = getpwuid(c->host_uid);
    unsigned long us, uc, gs, gc;
    if (find_subid("/etc/subuid", pw ? pw->pw_name : NULL, c->host_uid, &us, &uc) &&
        find_subid("/etc/subgid", pw ? pw->pw_name : NULL, c->host_uid, &gs, &gc) &&
        run_idmap_helper("newuidmap", pid, c->host_uid, us, uc) == 0) {
      if (run_idmap_helper("newgidmap", pid, c->host_gid, gs, gc) != 0)
        die(EXIT_NS, "newgidmap %d 0 %lu 1 1 %lu %lu failed", (int)pid,
            (unsigned long)c->host_gid, gs, gc);
      c->sub_mapped = 1;
      return;
    }
  }
  snprintf(map, sizeof map, "0 %lu 1\n", (unsigned long)c->host_uid);
  write_proc(pid, "uid_map", map);
  write_proc(pid, "setgroups", "deny");
  snprintf(map, sizeof map, "0 %lu 1\n", (unsigned long)c->host_gid);
  write_proc(pid, "gid_map", map);
}


/* ---------------------------------------------------------------------- */
/* the new root's mounts                                                    */
/* ---------------------------------------------------------------------- */

/* Create a filesystem with the new mount API and return a detached mount.
** opts: NULL-terminated key, value pairs (value NULL: a flag).  The
** kernel's own messages about a refused option end up in the error. */
static int new_fs (const char *type, const char *const *opts, unsigned attrs, const char *what) {
  int fs = fsopen(type, FSOPEN_CLOEXEC), m;
  if (fs < 0) die_errno(EXIT_MOUNT, "mount %s on %s: fsopen", type, what);
  for (; opts && opts[0]; opts += 2) {
    int r = opts[1] ? fsconfig(fs, FSCONFIG_SET_STRING, opts[0], opts[1], 0)
                    : fsconfig(fs, FSCONFIG_SET_FLAG, opts[0], NULL, 0);
    if (r != 0) die_errno(EXIT_MOUNT, "mount %s on %s: option %s%s%s", type, what,
                          opts[0], opts[1] ? "=" : "", opts[1] ? opts[1] : "");
  }
  if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) {
    int err = errno;
    char log[512] = "";
    ssize_t n = read(fs, log, sizeof log - 1);
    log[n > 0 ? n : 0] = '\0';
    if (n > 0 && log[n - 1] == '\n') log[n - 1] = '\0';
    errno = err;
    die_errno(EXIT_MOUNT, "mount %s on %s%s%s", type, what, log[0] ? ": kernel says " : "", log);
  }
  m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
  if (m < 0) die_errno(EXIT_MOUNT, "mount %s on %s: fsmount", type, what);
  close(fs);
  return m;
}

/* Attach detached mount m on the directory or file tfd (an O_PATH fd). */
static void attach (int m, int tfd, const char *what) {
  if (move_mount(m, "", tfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
    die_errno(EXIT_MOUNT, "attach mount on %s", what);
  close(m);
}

/* A detached copy of the host tree at path (with its submounts) with
** mount attributes set. */
static int clone_tree (const char *path, unsigned attrs, const char *what) {
  int m = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
  if (m < 0) die_errno(EXIT_MOUNT, "bind %s on %s: open_tree", path, what);
  if (attrs != 0) {
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = attrs;
    if (mount_setattr(m, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) != 0)
      die_errno(EXIT_MOUNT, "bind %s on %s: set mount attributes", path, what);
  }
  return m;
}

/* The directory sub beneath src (--bind-beneath): src is the caller's, but
** what lies beneath may have been written by sandboxes (a volume's data is
** writable by every sandbox that mounts it), so each part is resolved
** without following a symlink, leaving src or crossing a mount, and a
** missing part is made, writable by all as the volume is.  Returns an open
** directory fd: what gets bound is what was checked, whatever is renamed
** meanwhile. */
static int open_beneath (const char *src, const char *sub, const char *what) {
  char buf[PATH_MAX], *part, *save = NULL;
  int fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die_errno(EXIT_MOUNT, "bind %s: source", what);
  snprintf(buf, sizeof buf, "%s", sub);
  for (part = strtok_r(buf, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
    int next = openat2_(fd, part, O_RDONLY | O_DIRECTORY, BENEATH | RESOLVE_NO_XDEV);
    if (next < 0 && errno == ENOENT) {
      if (mkdirat(fd, part, 0777) != 0 && errno != EEXIST)
        die_errno(EXIT_MOUNT, "bind %s: mkdir %s", what, part);
      next = openat2_(fd, part, O_RDONLY | O_DIRECTORY, BENEATH | RESOLVE_NO_XDEV);
    }
    if (next < 0)
      die_errno(EXIT_MOUNT, "bind %s: %s is not a directory beneath %s (a symlink or mount point?)",
                what, part, src);
    close(fd);
    fd = next;
  }
  return fd;
}

/* The O_PATH fd of `rel` (relative) inside the new root rootfd, resolved as
** if rootfd were "/", so the new root's own symlinks work and none leads
** out.  Missing directories are created (owned by sandbox root); the last
** part is created as a directory, or an empty file when want_file. */
static int mountpoint (Ctx *c, int rootfd, const char *rel, int want_file, const char *what) {
  char prefix[PATH_MAX];
  size_t len = strlen(rel), i;
  int fd = openat2_(rootfd, rel, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd >= 0) return fd;
  if (errno != ENOENT) die_errno(EXIT_MOUNT, "mountpoint %s", what);
  for (i = 0; i <= len; i++) {
    const char *last;
    int pfd;
    if (rel[i] != '/' && rel[i] != '\0') continue;
    memcpy(prefix, rel, i);
    prefix[i] = '\0';
    fd = openat2_(rootfd, prefix, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    if (fd >= 0) { close(fd); continue; }
    if (errno != ENOENT) die_errno(EXIT_MOUNT, "mountpoint %s: /%s", what, prefix);
    last = strrchr(prefix, '/');
    if (last != NULL) {
      char parent[PATH_MAX];
      memcpy(parent, prefix, (size_t)(last - prefix));
      parent[last - prefix] = '\0';
      pfd = openat2_(rootfd, parent, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
      last++;
    }
    else {
      pfd = dup(rootfd);
      last = prefix;
    }
    if (pfd < 0) die_errno(EXIT_MOUNT, "mountpoint %s: parent of /%s", what, prefix);
    if (want_file && rel[i] == '\0') {
      int f = openat(pfd, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
      if (f < 0) die_errno(EXIT_MOUNT, "mountpoint %s: create /%s", what, prefix);
      close(f);
    }
    else if (mkdirat(pfd, last, 0755) != 0)
      die_errno(EXIT_MOUNT, "mountpoint %s: mkdir /%s", what, prefix);
    if (fchownat(pfd, last, own_id(c, 0), own_id(c, 0), AT_SYMLINK_NOFOLLOW) != 0)
      die_errno(EXIT_MOUNT, "mountpoint %s: chown /%s", what, prefix);
    close(pfd);
  }
  fd = openat2_(rootfd, rel, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) die_errno(EXIT_MOUNT, "mountpoint %s", what);
  return fd;
}

static int rootfd_open (Ctx *c) {
  int fd = open(c->rootfs, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) die_errno(EXIT_MOUNT, "open new root %s", c->rootfs);
  return fd;
}

static int sub (int rootfd, const char *name, const char *what) {
  int fd = openat2_(rootfd, name, O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_MOUNT, "open mountpoint %s", what);
  return fd;
}

/* /dev: a small tmpfs with the usual devices.  As host root they are made
** afresh (owned by sandbox root, so /dev/fuse and /dev/net/tun are usable
** inside); unprivileged they are bind mounts of the host's nodes. */
static void build_dev (Ctx *c, int rootfd) {
  static const struct { const char *name; unsigned maj, min; } nodes[] = {
    { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 },
    { "urandom", 1, 9 }, { "tty", 5, 0 }, { "fuse", 10, 229 }, { "net/tun", 10, 200 },
    { NULL, 0, 0 }
  };
  static const char *const links[] = {
    "fd", "/proc/self/fd", "stdin", "/proc/self/fd/0", "stdout", "/proc/self/fd/1",
    "stderr", "/proc/self/fd/2", "ptmx", "pts/ptmx", "core", "/proc/kcore", NULL
  };
  char uid[32], what[PATH_MAX + 64];
  const char *opts[] = { "mode", "0755", "size", "64k", "nr_inodes", "64",
                         "uid", uid, "gid", uid, NULL };
  int m, dfd, i;
  snprintf(uid, sizeof uid, "%lu", (unsigned long)own_id(c, 0));
  snprintf(what, sizeof what, "%s/dev", c->rootfs);
  m = new_fs("tmpfs", opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, what);
  dfd = sub(rootfd, "dev", what);
  attach(m, dfd, what);
  close(dfd);
  dfd = sub(rootfd, "dev", what);  /* the tmpfs now */
  for (i = 0; i < 3; i++) {
    static const char *const dirs[] = { "pts", "shm", "mqueue" };
    if (mkdirat(dfd, dirs[i], i == 1 ? 01777 : 0755) != 0 ||
        fchownat(dfd, dirs[i], own_id(c, 0), own_id(c, 0), 0) != 0)
      die_errno(EXIT_MOUNT, "mkdir /dev/%s", dirs[i]);
  }
  if (fchmodat(dfd, "shm", 01777, 0) != 0) die_errno(EXIT_MOUNT, "chmod /dev/shm");
  for (i = 0; nodes[i].name != NULL; i++) {
    char host[64];
    struct stat st;
    snprintf(host, sizeof host, "/dev/%s", nodes[i].name);
    if (stat(host, &st) != 0 || !S_ISCHR(st.st_mode)) continue;  /* not on this host */
    if (strchr(nodes[i].name, '/') != NULL && mkdirat(dfd, "net", 0755) != 0 && errno != EEXIST)
      die_errno(EXIT_MOUNT, "mkdir /dev/net");
    if (c->privileged) {
      if (mknodat(dfd, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) != 0 ||
          fchownat(dfd, nodes[i].name, own_id(c, 0), own_id(c, 0), 0) != 0)
        die_errno(EXIT_MOUNT, "mknod %s", host);
    }
    else {
      int f = openat(dfd, nodes[i].name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666), nfd;
      if (f < 0) die_errno(EXIT_MOUNT, "mountpoint %s", host);
      close(f);
      nfd = openat2_(dfd, nodes[i].name, O_PATH, BENEATH);
      if (nfd < 0) die_errno(EXIT_MOUNT, "mountpoint %s", host);
      m = open_tree(AT_FDCWD, host, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
      if (m < 0) die_errno(EXIT_MOUNT, "bind %s: open_tree", host);
      attach(m, nfd, host);
      close(nfd);
    }
  }
  for (i = 0; links[i] != NULL; i += 2)
    if (symlinkat(links[i + 1], dfd, links[i]) != 0 ||
        fchownat(dfd, links[i], own_id(c, 0), own_id(c, 0), AT_SYMLINK_NOFOLLOW) != 0)
      die_errno(EXIT_MOUNT, "symlink /dev/%s", links[i]);
  close(dfd);
}

/* Everything of the new root that host root may build (privileged: in the
** launcher's mount namespace, before the sandbox's copy is made, so the
** kernel locks it all in the sandbox), or that init builds unprivileged. */
/* /sys/fs/cgroup inside: the sandbox's own groups (the --cgroup dirs), read
** only, and nothing else.  /sys is the host's, whose cgroup tree names
** every group of the machine, other sandboxes' ids and dtlocal's own among
** them; the cgroup namespace alone only changes /proc/<pid>/cgroup.  A v2
** group is bound at /sys/fs/cgroup itself; v1 groups each at
** /sys/fs/cgroup/<hierarchy> of a small read-only tmpfs, with the
** controllers of a joined hierarchy ("cpu,cpuacct") as links to it, as
** the host has them.  With no group, the tmpfs stays empty. */
static void mount_cgroup_view (Ctx *c, int rootfd) {
  static const char *const opts[] = { "mode", "0755", "size", "64k", NULL };
  const unsigned ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
  static const char prefix[] = "/sys/fs/cgroup/";
  Opts *o = c->o;
  char what[PATH_MAX + 64];
  struct statfs fs;
  struct mount_attr a;
  int fd, tfd, i;
  snprintf(what, sizeof what, "%s/sys/fs/cgroup", c->rootfs);
  fd = openat2_(rootfd, "sys/fs/cgroup", O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) return;   /* a host without cgroups mounted there */
  if (o->ncgroups == 1 && statfs(o->cgroups[0], &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) {
    attach(clone_tree(o->cgroups[0], ro, what), fd, what);
    close(fd);
    return;
  }
  attach(new_fs("tmpfs", opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, what), fd, what);
  close(fd);
  tfd = openat2_(rootfd, "sys/fs/cgroup", O_RDONLY | O_DIRECTORY, BENEATH);
  if (tfd < 0) die_errno(EXIT_MOUNT, "open %s", what);
  for (i = 0; i < o->ncgroups; i++) {
    const char *dir = o->cgroups[i], *end;
    char name[NAME_MAX + 1], sub_what[2 * PATH_MAX + NAME_MAX + 64], *ctl, *save = NULL;
    size_t n;
    if (strncmp(dir, prefix, sizeof prefix - 1) != 0) continue;   /* a hierarchy elsewhere */
    end = strchr(dir + sizeof prefix - 1, '/');
    n = end ? (size_t)(end - dir) - (sizeof prefix - 1) : strlen(dir + sizeof prefix - 1);
    if (n == 0 || n > NAME_MAX) continue;
    memcpy(name, dir + sizeof prefix - 1, n);
    name[n] = '\0';
    snprintf(sub_what, sizeof sub_what, "%s/%s (from %s)", what, name, dir);
    if (mkdirat(tfd, name, 0555) != 0 && errno != EEXIST) die_errno(EXIT_MOUNT, "mkdir %s", sub_what);
    fd = openat2_(tfd, name, O_PATH | O_DIRECTORY, BENEATH);
    if (fd < 0) die_errno(EXIT_MOUNT, "open %s", sub_what);
    attach(clone_tree(dir, ro, sub_what), fd, sub_what);
    close(fd);
    if (strchr(name, ',') != NULL) {
      char ctls[NAME_MAX + 1];
      memcpy(ctls, name, n + 1);
      for (ctl = strtok_r(ctls, ",", &save); ctl != NULL; ctl = strtok_r(NULL, ",", &save))
        if (symlinkat(name, tfd, ctl) != 0 && errno != EEXIST) die_errno(EXIT_MOUNT, "link %s", sub_what);
    }
  }
  memset(&a, 0, sizeof a);
  a.attr_set = MOUNT_ATTR_RDONLY;
  if (mount_setattr(tfd, "", AT_EMPTY_PATH, &a, sizeof a) != 0)
    die_errno(EXIT_MOUNT, "make %s read-only", what);
  close(tfd);
}

static void build_tree (Ctx *c) {
  Opts *o = c->o;
  char what[3 * PATH_MAX], path[PATH_MAX + 64];
  int rootfd, fd, m, i;

  /* the new root: the persistent rootfs directory, as a mount of its own
  ** (pivot_root needs one) */
  fd = rootfd_open(c);
  m = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
  if (m < 0) die_errno(EXIT_MOUNT, "bind %s on itself: open_tree", c->rootfs);
  {
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = MOUNT_ATTR_NODEV;
    if (mount_setattr(m, "", AT_EMPTY_PATH, &a, sizeof a) != 0)
      die_errno(EXIT_MOUNT, "bind %s on itself: set nodev", c->rootfs);
  }
  attach(m, fd, c->rootfs);
  close(fd);
  rootfd = rootfd_open(c);

  /* the host's system directories: copy-on-write overlays, the sandbox's
  ** upper layer over the host's directory, which privileged is an
  ** idmapped mount (host 0..65535 shown as sandbox 0..65535) */
  for (i = 0; i < c->ntops; i++) {
    const char *name = c->tops[i];
    char upper[PATH_MAX + 64], work[PATH_MAX + 64], lower[64];
    int fs, mfd, lfd = -1;
    snprintf(lower, sizeof lower, "/%s", name);
    snprintf(upper, sizeof upper, "%s/%s", c->upper, name);
    snprintf(work, sizeof work, "%s/%s", c->work, name);
    snprintf(what, sizeof what, "/%s (lower %s, upper %s)", name, lower, upper);
    fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: fsopen", what);
    if (c->privileged) {
      struct mount_attr a;
      lfd = open_tree(AT_FDCWD, lower, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
      if (lfd < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: open_tree %s", what, lower);
      memset(&a, 0, sizeof a);
      a.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
      a.userns_fd = (uint64_t)c->userns_fd;
      if (mount_setattr(lfd, "", AT_EMPTY_PATH, &a, sizeof a) != 0)
        die_errno(EXIT_MOUNT, "mount overlay on %s: idmap the lower layer %s "
                  "(needs a filesystem with idmapped mounts)", what, lower);
      if (fsconfig(fs, FSCONFIG_SET_FD, "lowerdir+", NULL, lfd) != 0)
        die_errno(EXIT_MOUNT, "mount overlay on %s: lowerdir+ by fd "
                  "(needs Linux 6.13 or later)", what);
      /* lfd stays open until the overlay exists: closing the last fd of a
      ** detached mount dissolves it */
    }
    else {
      if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", lower, 0) != 0)
        die_errno(EXIT_MOUNT, "mount overlay on %s: lowerdir+", what);
      if (fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) != 0)
        die_errno(EXIT_MOUNT, "mount overlay on %s: userxattr", what);
    }
    if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) != 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) != 0)
      die_errno(EXIT_MOUNT, "mount overlay on %s: upperdir/workdir", what);
    /* upper-layer metadata the sandbox could steer is never trusted */
    if (fsconfig(fs, FSCONFIG_SET_STRING, "metacopy", "off", 0) != 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "index", "off", 0) != 0)
      die_errno(EXIT_MOUNT, "mount overlay on %s: metacopy/index", what);
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) {
      int err = errno;
      char log[512] = "";
      ssize_t n = read(fs, log, sizeof log - 1);
      log[n > 0 ? n : 0] = '\0';
      if (n > 0 && log[n - 1] == '\n') log[n - 1] = '\0';
      errno = err;
      die_errno(EXIT_MOUNT, "mount overlay on %s%s%s", what, log[0] ? ": kernel says " : "", log);
    }
    mfd = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
    if (mfd < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: fsmount", what);
    close(fs);
    if (lfd >= 0) close(lfd);
    fd = sub(rootfd, name, what);
    attach(mfd, fd, what);
    close(fd);
  }

  build_dev(c, rootfd);

  /* /sys: the host's, read-only */
  snprintf(what, sizeof what, "%s/sys", c->rootfs);
  m = clone_tree("/sys", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                 MOUNT_ATTR_NOEXEC, what);
  fd = sub(rootfd, "sys", what);
  attach(m, fd, what);
  close(fd);
  mount_cgroup_view(c, rootfd);

  /* /run: a fresh tmpfs, with the sandbox's run directory at /run/dtlua */
  {
    char uid[32];
    const char *opts[] = { "mode", "0755", "size", "64m", "uid", uid, "gid", uid, NULL };
    int rfd;
    snprintf(uid, sizeof uid, "%lu", (unsigned long)own_id(c, 0));
    snprintf(what, sizeof what, "%s/run", c->rootfs);
    m = new_fs("tmpfs", opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, what);
    fd = sub(rootfd, "run", what);
    attach(m, fd, what);
    close(fd);
    rfd = sub(rootfd, "run", what);
    if (mkdirat(rfd, "dtlua", 0755) != 0 || mkdirat(rfd, "lock", 01777) != 0 ||
        fchmodat(rfd, "lock", 01777, 0) != 0 ||
        fchownat(rfd, "dtlua", own_id(c, 0), own_id(c, 0), 0) != 0 ||
        fchownat(rfd, "lock", own_id(c, 0), own_id(c, 0), 0) != 0)
      die_errno(EXIT_MOUNT, "mkdir /run/dtlua and /run/lock");
    snprintf(what, sizeof what, "/run/dtlua (from %s)", c->run);
    m = open_tree(AT_FDCWD, c->run, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (m < 0) die_errno(EXIT_MOUNT, "bind %s: open_tree", what);
    fd = openat2_(rfd, "dtlua", O_PATH | O_DIRECTORY, BENEATH);
    if (fd < 0) die_errno(EXIT_MOUNT, "open %s", what);
    attach(m, fd, what);
    close(fd);
    close(rfd);
  }

  /* the caller's binds, in order */
  for (i = 0; i < o->nbinds; i++) {
    Bind *b = &o->binds[i];
    struct stat st;
    unsigned attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (b->ro ? MOUNT_ATTR_RDONLY : 0);
    snprintf(what, sizeof what, "%s (from %s%s%s%s)", b->dst, b->src, b->sub ? "/" : "",
             b->sub ? b->sub : "", b->ro ? ", read-only" : "");
    if (b->sub) {
      int dfd = open_beneath(b->src, b->sub, what);
      struct mount_attr a;
      if (fstat(dfd, &st) != 0) die_errno(EXIT_MOUNT, "bind %s: source", what);
      m = open_tree(dfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
      if (m < 0) die_errno(EXIT_MOUNT, "bind %s: open_tree", what);
      close(dfd);
      memset(&a, 0, sizeof a);
      a.attr_set = attrs;
      if (mount_setattr(m, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) != 0)
        die_errno(EXIT_MOUNT, "bind %s: set mount attributes", what);
    }
    else {
      if (stat(b->src, &st) != 0) die_errno(EXIT_MOUNT, "bind %s: source", what);
      m = clone_tree(b->src, attrs, what);
    }
    snprintf(path, sizeof path, "%s", b->dst + 1);
    fd = mountpoint(c, rootfd, path, !S_ISDIR(st.st_mode), what);
    attach(m, fd, what);
    close(fd);
  }
  close(rootfd);
}

/* What only the sandbox's init can mount, in its own namespaces: /proc of
** its PID namespace, its own devpts, /dev/shm, /dev/mqueue. */
static void mount_inside (Ctx *c) {
  static const char *const proc_opts[] = { NULL };
  /* gid 5 is tty, when the sandbox has ids beyond 0; tmpfs's owner would
  ** be the caller's (still host uid 0 when privileged) */
  const char *pts_opts[] = { "newinstance", NULL, "ptmxmode", "0666", "mode", "0620",
                             c->sub_mapped ? "gid" : NULL, "5", NULL };
  static const char *const shm_opts[] = { "mode", "1777", "size", "64m", "uid", "0",
                                          "gid", "0", NULL };
  char what[PATH_MAX + 64];
  int rootfd = rootfd_open(c), fd, m;
  snprintf(what, sizeof what, "%s/proc", c->rootfs);
  m = new_fs("proc", proc_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, what);
  fd = sub(rootfd, "proc", what);
  attach(m, fd, what);
  close(fd);
  snprintf(what, sizeof what, "%s/dev/pts", c->rootfs);
  m = new_fs("devpts", pts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, what);
  fd = sub(rootfd, "dev/pts", what);
  attach(m, fd, what);
  close(fd);
  snprintf(what, sizeof what, "%s/dev/shm", c->rootfs);
  m = new_fs("tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, what);
  fd = sub(rootfd, "dev/shm", what);
  attach(m, fd, what);
  close(fd);
  snprintf(what, sizeof what, "%s/dev/mqueue", c->rootfs);
  m = new_fs("mqueue", proc_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, what);
  fd = sub(rootfd, "dev/mqueue", what);
  attach(m, fd, what);
  close(fd);
  close(rootfd);
}

/* Make the new root "/" and drop every view of the host's tree. */
static void enter_root (Ctx *c) {
  /* pivot_root refuses a mount the kernel locked when it copied the
  ** launcher's namespace; a recursive bind of it made here is not */
  if (c->privileged) {
    int fd = rootfd_open(c);
    int m = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    if (m < 0) die_errno(EXIT_PIVOT, "bind %s on itself: open_tree", c->rootfs);
    if (move_mount(m, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
      die_errno(EXIT_PIVOT, "bind %s on itself: move_mount", c->rootfs);
    close(m);
    close(fd);
  }
  if (chdir(c->rootfs) != 0) die_errno(EXIT_PIVOT, "chdir %s", c->rootfs);
  if (syscall(SYS_pivot_root, ".", ".") != 0)
    die_errno(EXIT_PIVOT, "pivot_root to %s", c->rootfs);
  /* the host's root is now stacked under the new one: detach it */
  if (umount2(".", MNT_DETACH) != 0) die_errno(EXIT_PIVOT, "detach the host's root");
  if (chdir("/") != 0) die_errno(EXIT_PIVOT, "chdir /");
}

/* Loopback up in the new network namespace (--net none), so that
** localhost servers inside work. */
static void loopback_up (void) {
  struct ifreq ifr;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) die_errno(EXIT_NS, "network namespace: socket");
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) die_errno(EXIT_NS, "network namespace: get lo flags");
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) die_errno(EXIT_NS, "network namespace: bring lo up");
  close(s);
}


/* ---------------------------------------------------------------------- */
/* the program, and init                                                    */
/* ---------------------------------------------------------------------- */

static int status_code (int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return EXIT_INTERNAL;
}

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, 0 };

/* In the program's process G: become the sandbox user, set the cwd and
** environment, exec.  A failure is sent on errfd (close-on-exec, so EOF
** means the exec succeeded) as "CODE message". */
static void run_program (Ctx *c, int errfd) {
  Opts *o = c->o;
  static char *envp[MAX_ENV + 16];
  static char envbuf[MAX_ENV + 16][PATH_MAX + 64];
  uid_t uid = o->user_root ? 0 : DAYTONA_ID;
  const char *home = o->user_root ? "/root" : "/home/daytona";
  const char *user = o->user_root ? "root" : "daytona";
  const char *cwd = o->cwd ? o->cwd : home;
  int n = 0, i;
  sigset_t none;
  /* descriptor 3 is the listening socket's place: keep errfd off it */
  if (o->listen_fd >= 0 && errfd == 3) {
    errfd = fcntl(errfd, F_DUPFD_CLOEXEC, 4);
    if (errfd < 0) _exit(EXIT_INTERNAL);
  }
  report_fd = errfd;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  umask(022);
  if (!o->user_root && !c->sub_mapped)
    die(EXIT_USER, "user daytona (uid %d) does not exist in this sandbox: not root and "
        "no usable subordinate uid/gid range (/etc/subuid, /etc/subgid, newuidmap); run with --user root",
        DAYTONA_ID);
  if (c->sub_mapped) {
    gid_t g = (gid_t)uid;
    if (setgroups(1, &g) != 0) die_errno(EXIT_USER, "setgroups(%d)", (int)uid);
  }
  if (setresgid(uid, uid, uid) != 0) die_errno(EXIT_USER, "setresgid(%d)", (int)uid);
  if (setresuid(uid, uid, uid) != 0) die_errno(EXIT_USER, "setresuid(%d)", (int)uid);
  if (chdir(cwd) != 0) die_errno(EXIT_USER, "chdir %s as %s", cwd, user);
#define ENV(...) (snprintf(envbuf[n], sizeof envbuf[n], __VA_ARGS__), envp[n] = envbuf[n], n++)
  ENV("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  ENV("HOME=%s", home);
  ENV("USER=%s", user);
  ENV("LOGNAME=%s", user);
  ENV("SHELL=/bin/bash");
  ENV("HOSTNAME=%s", o->hostname);
#undef ENV
  for (i = 0; i < o->nenv; i++) {  /* --env replaces a default of the same name */
    size_t k = (size_t)(strchr(o->env[i], '=') - o->env[i]) + 1;
    int j;
    for (j = 0; j < n; j++)
      if (strncmp(envp[j], o->env[i], k) == 0) break;
    envp[j] = (char *)o->env[i];
    if (j == n) n++;
  }
  envp[n] = NULL;
  /* the listening socket as descriptor 3, the one descriptor besides
  ** 0..2 that crosses into PROGRAM (dup2 clears close-on-exec) */
  if (o->listen_fd >= 0) {
    if (o->listen_fd == 3 ? fcntl(3, F_SETFD, 0) != 0 : dup2(o->listen_fd, 3) != 3)
      die_errno(EXIT_INTERNAL, "pass the listening socket as descriptor 3");
  }
  execvpe(o->argv[0], o->argv, envp);
  die_errno(errno == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC, "execute %s as %s", o->argv[0], user);
}

/* PID 1: start the program, tell the launcher, then reap every process
** and forward signals to the program until it exits. */
static void init_main (Ctx *c, int statusfd, int sfd) {
  int ep[2], st;
  char buf[1100];
  ssize_t n;
  pid_t child;
  if (pipe2(ep, O_CLOEXEC) != 0) die_errno(EXIT_INTERNAL, "pipe");
  child = fork();
  if (child < 0) die_errno(EXIT_INTERNAL, "fork the program");
  if (child == 0) {
    close(ep[0]);
    close(statusfd);
    close(sfd);
    report_fd = -1;
    run_program(c, ep[1]);
  }
  close(ep[1]);
  if (c->o->listen_fd >= 0) close(c->o->listen_fd);   /* the program's now */
  do n = read(ep[0], buf, sizeof buf - 1); while (n < 0 && errno == EINTR);
  close(ep[0]);
  if (n > 0) {  /* "error CODE message" from run_program: pass it on */
    buf[n] = '\0';
    if (write(statusfd, buf, (size_t)n) < 0) {}
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {}
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_INTERNAL);
  }
  if (write(statusfd, "ready\n", 6) < 0) {}
  close(statusfd);
  report_fd = -1;
  for (;;) {
    struct signalfd_siginfo si;
    n = read(sfd, &si, sizeof si);
    if (n != (ssize_t)sizeof si) {
      if (n < 0 && errno == EINTR) continue;
      die_errno(EXIT_INTERNAL, "init: read signalfd");
    }
    if (si.ssi_signo == SIGCHLD) {
      pid_t p;
      while ((p = waitpid(-1, &st, WNOHANG)) > 0)
        if (p == child) _exit(status_code(st));
    }
    else kill(child, (int)si.ssi_signo);
  }
}

/* Become root of the sandbox's user namespace (privileged: host uid base)
** and tie our life to the launcher's. */
static void become_root (Ctx *c, int goread) {
  struct pollfd pfd;
  if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
    die_errno(EXIT_NS, "become root of the sandbox's user namespace");
  if (c->sub_mapped && setgroups(0, NULL) != 0)
    die_errno(EXIT_NS, "drop supplementary groups");
  /* set after the uid change, which clears it; then check the launcher
  ** did not die before */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die_errno(EXIT_INTERNAL, "prctl(PDEATHSIG)");
  pfd.fd = goread;
  pfd.events = POLLIN;
  if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP)) _exit(EXIT_INTERNAL);
  close(goread);
}

/* The sandbox's init from clone3 to the program's start.  goread: EOF or a
** byte from the launcher; statusfd: where "ready"/"error" lines go. */
static void sandbox_main (Ctx *c, int goread, int statusfd) {
  Opts *o = c->o;
  sigset_t set;
  char go;
  ssize_t n;
  int i, sfd;
  report_fd = statusfd;
  if (argv_area != NULL) {
    static const char title[] = "dtlua-sandbox-init";
    memset(argv_area, 0, argv_len);
    memcpy(argv_area, title, argv_len < sizeof title ? argv_len - 1 : sizeof title - 1);
  }
  do n = read(goread, &go, 1); while (n < 0 && errno == EINTR);
  if (n != 1) _exit(EXIT_INTERNAL);  /* the launcher failed and said so */
  if (go == 's') c->sub_mapped = 1;  /* newuidmap gave us ids 1.. */
  /* init's memory holds the caller's environment and arguments: neither
  ** readable through /proc/1 nor ptrace-able from inside.  (Only now: the
  ** launcher had to open our /proc files for the id maps.) */
  if (prctl(PR_SET_DUMPABLE, 0) != 0) die_errno(EXIT_INTERNAL, "prctl(DUMPABLE)");
  /* Privileged, init still has the launcher's host uid 0 (unmapped here)
  ** with every capability in its own namespaces only: it keeps it until
  ** the pivot, for the paths under the root dir (mode 0700, host root's).
  ** No sandbox code runs before it becomes sandbox root below. */
  if (!c->privileged) become_root(c, goread);
  if (unshare(CLONE_NEWNS) != 0) die_errno(EXIT_NS, "unshare mount namespace");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
    die_errno(EXIT_NS, "make the sandbox's mounts private");
  if (!c->privileged) {
    prepare(c);
    build_tree(c);
  }
  if (sethostname(o->hostname, strlen(o->hostname)) != 0)
    die_errno(EXIT_NS, "sethostname %s", o->hostname);
  if (o->net_none) loopback_up();
  mount_inside(c);
  enter_root(c);
  if (c->privileged) become_root(c, goread);
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (i = 0; forwarded[i]; i++) sigaddset(&set, forwarded[i]);
  sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) die_errno(EXIT_INTERNAL, "init: signalfd");
  init_main(c, statusfd, sfd);
}


/* ---------------------------------------------------------------------- */
/* the launcher                                                             */
/* ---------------------------------------------------------------------- */

static unsigned long long start_time (pid_t pid);
static int lock_pidfd (Ctx *c, int which);
static void wait_previous_init (Ctx *c);

/* Open (creating when missing) the root dir and take its lock, held as
** long as the launcher or the sandbox's init lives. */
static void open_root_dir (Ctx *c, int for_rm) {
  const char *rd = c->o->root_dir;
  if (rd[0] == '/') snprintf(c->dir, sizeof c->dir, "%s", rd);
  else {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL) die_errno(EXIT_STATE, "getcwd");
    if (snprintf(c->dir, sizeof c->dir, "%s/%s", cwd, rd) >= (int)sizeof c->dir)
      die(EXIT_USAGE, "--root-dir: path too long");
  }
  snprintf(c->rootfs, sizeof c->rootfs, "%s/rootfs", c->dir);
  snprintf(c->upper, sizeof c->upper, "%s/upper", c->dir);
  snprintf(c->work, sizeof c->work, "%s/work", c->dir);
  snprintf(c->run, sizeof c->run, "%s/run", c->dir);
  if (!for_rm && mkdir(c->dir, 0700) != 0 && errno != EEXIST)
    die_errno(EXIT_STATE, "mkdir root dir %s", c->dir);
  c->dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (c->dirfd < 0) die_errno(EXIT_STATE, "open root dir %s", c->dir);
  c->lockfd = openat(c->dirfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (c->lockfd < 0) die_errno(EXIT_STATE, "open %s/.lock", c->dir);
  if (flock(c->lockfd, LOCK_EX | LOCK_NB) != 0) {
    int lfd;
    if (errno != EWOULDBLOCK) die_errno(EXIT_STATE, "lock %s/.lock", c->dir);
    /* held: by a live launcher (running), or by the init of one that was
    ** killed (going away: wait for it, then the lock is ours) */
    lfd = lock_pidfd(c, 0);
    if (lfd >= 0) {
      /* readable: it has exited (a zombie is gone too); a launcher being
      ** killed right now gets a moment to finish */
      struct pollfd p;
      int r;
      p.fd = lfd;
      p.events = POLLIN;
      do r = poll(&p, 1, 200); while (r < 0 && errno == EINTR);
      close(lfd);
      if (r != 1) die(EXIT_BUSY, "sandbox %s is running", c->dir);
    }
    wait_previous_init(c);
    if (flock(c->lockfd, LOCK_EX | LOCK_NB) != 0)
      die(EXIT_BUSY, "sandbox %s is running", c->dir);
  }
  wait_previous_init(c);
}

/* Start time of process pid (field 22 of /proc/PID/stat), 0 if unknown:
** with the pid it names one process, whatever pid reuse does. */
static unsigned long long start_time (pid_t pid) {
  char path[64], buf[1024], *p;
  unsigned long long t = 0;
  int fd, i;
  ssize_t n;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  p = strrchr(buf, ')');  /* the command name may hold spaces and ')' */
  for (i = 2; p != NULL && i < 22; i++) p = strchr(p + 1, ' ');
  if (p != NULL) t = strtoull(p + 1, NULL, 10);
  return t;
}

/* The pid in .lock at offset `which` (0: launcher, 1: init) as a pidfd,
** if that very process (same start time) still exists; else -1. */
static int lock_pidfd (Ctx *c, int which) {
  char buf[160];
  int pid[2], pfd;
  unsigned long long start[2];
  ssize_t n = pread(c->lockfd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  if (sscanf(buf, "%d %llu %d %llu", &pid[0], &start[0], &pid[1], &start[1]) != 4 ||
      pid[which] <= 0)
    return -1;
  pfd = (int)syscall(SYS_pidfd_open, pid[which], 0);
  if (pfd < 0) return -1;
  if (start_time(pid[which]) != start[which]) { close(pfd); return -1; }  /* reused pid */
  return pfd;
}

/* An instance whose launcher was SIGKILLed goes away on its own (init has
** PDEATHSIG), but its init drops the lock when its files close, before the
** kernel has killed the rest of its PID namespace (which still uses the
** overlays).  Wait, bounded, until that init is a zombie or gone. */
static void wait_previous_init (Ctx *c) {
  struct pollfd p;
  int r, pfd = lock_pidfd(c, 1);
  if (pfd < 0) return;
  p.fd = pfd;
  p.events = POLLIN;
  do r = poll(&p, 1, 10000); while (r < 0 && errno == EINTR);
  close(pfd);
  if (r == 0) die(EXIT_BUSY, "sandbox %s: its previous instance is still exiting", c->dir);
}

/* Join every --cgroup before anything else: the launcher's children (init,
** the program, everything they start) are born inside, so the limits hold
** for the whole sandbox, and its cgroup namespace is rooted there.  Nothing
** inside can move out: the files are host root's, /sys is read-only there.
** Only a cgroup file system is written to (a DIR elsewhere is refused).
** v1: "0" into DIR/tasks moves this thread, the launcher's only one; the
** kernel then skips the global lock that a write to cgroup.procs takes,
** which waits for an RCU grace period (7 ms median, up to 20 ms, measured
** on a busy 2-core host, against 0.1 ms).  v2 has no such file for a
** domain group: cgroup.procs. */
static void join_cgroups (const Opts *o) {
  int i;
  for (i = 0; i < o->ncgroups; i++) {
    const char *dir = o->cgroups[i], *file = "cgroup.procs";
    struct statfs fs;
    int dfd, fd;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) die_errno(EXIT_CGROUP, "join cgroup %s: open", dir);
    if (fstatfs(dfd, &fs) != 0) die_errno(EXIT_CGROUP, "join cgroup %s: statfs", dir);
    if (fs.f_type == CGROUP_SUPER_MAGIC) file = "tasks";
    else if (fs.f_type != CGROUP2_SUPER_MAGIC)
      die(EXIT_CGROUP, "join cgroup %s: not a cgroup file system", dir);
    fd = openat(dfd, file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) die_errno(EXIT_CGROUP, "join cgroup %s: open %s", dir, file);
    if (write(fd, "0\n", 2) != 2) die_errno(EXIT_CGROUP, "join cgroup %s: write %s", dir, file);
    close(fd);
    close(dfd);
  }
}

static pid_t clone_sandbox (int netns) {
  struct clone_args ca;
  pid_t pid;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP |
             (netns ? CLONE_NEWNET : 0);
  ca.exit_signal = SIGCHLD;
  pid = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0)
    die_errno(EXIT_NS, "create the sandbox's namespaces (user, pid, uts, ipc, cgroup%s)",
              netns ? ", net" : "");
  return pid;
}

/* Read init's status line from *sfd ("ready" or "error CODE message") and
** pass it on to *readyfd as "ready PID" or verbatim; *ready becomes 1 or
** -1 (an error was relayed).  until_eof: init has exited, read it all. */
static void relay_status (int *sfd, int *readyfd, int *ready, pid_t child, int until_eof) {
  static char line[1200];
  static size_t len;
  for (;;) {
    ssize_t n = read(*sfd, line + len, sizeof line - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) len += (size_t)n;
    line[len] = '\0';
    if (n > 0 && !memchr(line, '\n', len) && len < sizeof line - 1) {
      if (until_eof) continue;
      return;  /* a partial line: wait for the rest */
    }
    break;
  }
  if (len > 0) {
    if (strncmp(line, "ready\n", 6) == 0) {
      *ready = 1;
      if (*readyfd >= 0) dprintf(*readyfd, "ready %d\n", (int)child);
    }
    else {
      *ready = -1;
      if (*readyfd >= 0 && write(*readyfd, line, len) < 0) {}
    }
    if (*readyfd >= 0) close(*readyfd);
    *readyfd = -1;
  }
  close(*sfd);
  *sfd = -1;
}

static int cmd_run (int argc, char **argv) {
  Opts o;
  Ctx c;
  int go[2], status[2], sfd, ready = 0, i;
  sigset_t set;
  pid_t child;
  parse_run(&o, argc, argv);
  memset(&c, 0, sizeof c);
  c.o = &o;
  c.userns_fd = -1;
  c.privileged = geteuid() == 0;
  c.host_uid = geteuid();
  c.host_gid = getegid();
  report_fd = o.ready_fd;
  if (c.privileged) {
    if (!o.have_base) usage("--uid-base is required when running as root");
    if (o.uid_base < ID_COUNT || o.uid_base > 4294967295UL - ID_COUNT)
      usage("--uid-base: must be in %d..%lu, so that no sandbox id is a host user's",
            ID_COUNT, 4294967295UL - ID_COUNT);
    c.base = o.uid_base;
    c.sub_mapped = 1;
  }
  /* nothing of the caller's leaks into the sandbox but stdin/out/err */
  if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0)
    die_errno(EXIT_INTERNAL, "close_range");
  umask(0);
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (i = 0; forwarded[i]; i++) sigaddset(&set, forwarded[i]);
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) die_errno(EXIT_INTERNAL, "sigprocmask");

  join_cgroups(&o);
  open_root_dir(&c, 0);
  if (c.privileged) {
    prepare(&c);
    if (unshare(CLONE_NEWNS) != 0) die_errno(EXIT_NS, "unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
      die_errno(EXIT_NS, "make the launcher's mounts private");
  }
  if (pipe2(go, O_CLOEXEC) != 0 || pipe2(status, O_CLOEXEC) != 0)
    die_errno(EXIT_INTERNAL, "pipe");
  child = clone_sandbox(o.net_none);
  if (child == 0) {
    close(go[1]);
    close(status[0]);
    if (o.ready_fd >= 0) close(o.ready_fd);
    sandbox_main(&c, go[0], status[1]);
    _exit(EXIT_INTERNAL);
  }
  close(go[0]);
  close(status[1]);
  if (o.listen_fd >= 0) close(o.listen_fd);   /* init has its copy */
  /* who holds the lock: lets a restarted server find a running sandbox,
  ** and the next start wait for this init's end (wait_previous) */
  {
    char pids[128];
    int n = snprintf(pids, sizeof pids, "%d %llu %d %llu\n", (int)getpid(),
                     start_time(getpid()), (int)child, start_time(child));
    if (ftruncate(c.lockfd, 0) != 0 || pwrite(c.lockfd, pids, (size_t)n, 0) != n)
      die_errno(EXIT_STATE, "write %s/.lock", c.dir);
  }
  write_id_maps(&c, child);
  if (c.privileged) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)child);
    c.userns_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (c.userns_fd < 0) die_errno(EXIT_NS, "open %s", path);
    build_tree(&c);
    close(c.userns_fd);
  }
  /* init inherits the sub_mapped flag through its own copy of c: tell it */
  if (!c.privileged && c.sub_mapped) {
    if (write(go[1], "s", 1) != 1) die_errno(EXIT_INTERNAL, "start the sandbox");
  }
  else if (write(go[1], "g", 1) != 1) die_errno(EXIT_INTERNAL, "start the sandbox");

  /* relay init's status line, forward signals, wait */
  sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) die_errno(EXIT_INTERNAL, "signalfd");
  report_fd = -1;
  for (;;) {
    struct pollfd p[2];
    p[0].fd = sfd;
    p[0].events = POLLIN;
    p[1].fd = status[0];  /* -1 once the status line is handled: ignored */
    p[1].events = POLLIN;
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die_errno(EXIT_INTERNAL, "poll");
    }
    if (status[0] >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
      relay_status(&status[0], &o.ready_fd, &ready, child, 0);
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      int st;
      if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si) continue;
      if (si.ssi_signo != SIGCHLD) {
        kill(child, (int)si.ssi_signo);
        continue;
      }
      if (waitpid(child, &st, WNOHANG) != child) continue;
      if (status[0] >= 0)  /* init is gone: its last words are all there is */
        relay_status(&status[0], &o.ready_fd, &ready, child, 1);
      if (!ready) {
        report_fd = o.ready_fd;
        die(EXIT_INTERNAL, "the sandbox's init ended before the program started (status %d)",
            status_code(st));
      }
      _exit(ready > 0 ? status_code(st) : (status_code(st) ? status_code(st) : EXIT_INTERNAL));
    }
  }
}


/* ---------------------------------------------------------------------- */
/* rm                                                                       */
/* ---------------------------------------------------------------------- */

/* Remove everything in directory fd (not following symlinks, not crossing
** into other filesystems), then nothing is left to follow. */
static void rm_contents (int fd, const char *path, dev_t dev) {
  DIR *d = fdopendir(fd);
  struct dirent *de;
  if (d == NULL) die_errno(EXIT_STATE, "rm: open %s", path);
  while ((de = readdir(d)) != NULL) {
    struct stat st;
    char sub[PATH_MAX];
    if (de->d_name[0] == '.' && (de->d_name[1] == '\0' ||
        (de->d_name[1] == '.' && de->d_name[2] == '\0')))
      continue;
    snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      die_errno(EXIT_STATE, "rm: stat %s", sub);
    if (S_ISDIR(st.st_mode)) {
      int cfd;
      if (st.st_dev != dev) die(EXIT_STATE, "rm: %s is a mount point; not removing", sub);
      cfd = openat2_(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, BENEATH);
      if (cfd < 0 && errno == EACCES) {  /* e.g. overlay's work dirs, mode 0 */
        fchmodat(dirfd(d), de->d_name, 0700, 0);
        cfd = openat2_(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, BENEATH);
      }
      if (cfd < 0) die_errno(EXIT_STATE, "rm: open %s", sub);
      rm_contents(cfd, sub, dev);
      if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) != 0)
        die_errno(EXIT_STATE, "rm: rmdir %s", sub);
    }
    else if (unlinkat(dirfd(d), de->d_name, 0) != 0)
      die_errno(EXIT_STATE, "rm: unlink %s", sub);
  }
  closedir(d);
}

/* Delete a stopped sandbox's directory.  Its files belong to the sandbox's
** host ids: as root that is no obstacle; unprivileged, the removal runs as
** root of a user namespace with the same mapping as the sandbox had. */
static int cmd_rm (int argc, char **argv) {
  Opts o;
  Ctx c;
  struct stat st;
  int i, fd;
  memset(&o, 0, sizeof o);
  for (i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--root-dir") == 0 && i + 1 < argc) o.root_dir = argv[++i];
    else usage("rm: unknown argument '%s'", argv[i]);
  }
  if (o.root_dir == NULL || o.root_dir[0] == '\0') usage("rm: --root-dir is required");
  memset(&c, 0, sizeof c);
  c.o = &o;
  c.privileged = geteuid() == 0;
  c.host_uid = geteuid();
  c.host_gid = getegid();
  if (lstat(o.root_dir, &st) != 0) {
    if (errno == ENOENT) return 0;  /* already gone */
    die_errno(EXIT_STATE, "rm: %s", o.root_dir);
  }
  if (!S_ISDIR(st.st_mode)) die(EXIT_STATE, "rm: %s is not a directory", o.root_dir);
  open_root_dir(&c, 1);
  if (!c.privileged) {
    int go[2], stt;
    pid_t child;
    struct clone_args ca;
    if (pipe2(go, O_CLOEXEC) != 0) die_errno(EXIT_INTERNAL, "pipe");
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_NEWUSER;
    ca.exit_signal = SIGCHLD;
    child = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
    if (child < 0) die_errno(EXIT_NS, "rm: create a user namespace");
    if (child == 0) {
      char b;
      close(go[1]);
      if (read(go[0], &b, 1) != 1) _exit(EXIT_INTERNAL);
      if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
        die_errno(EXIT_NS, "rm: become root of the user namespace");
      fd = dup(c.dirfd);
      if (fd < 0) die_errno(EXIT_INTERNAL, "dup");
      rm_contents(fd, c.dir, st.st_dev);
      _exit(0);
    }
    close(go[0]);
    write_id_maps(&c, child);
    if (write(go[1], "g", 1) != 1) die_errno(EXIT_INTERNAL, "rm: start");
    while (waitpid(child, &stt, 0) < 0)
      if (errno != EINTR) die_errno(EXIT_INTERNAL, "rm: wait");
    if (!WIFEXITED(stt) || WEXITSTATUS(stt) != 0) return WIFEXITED(stt) ? WEXITSTATUS(stt) : EXIT_INTERNAL;
  }
  else {
    fd = dup(c.dirfd);
    if (fd < 0) die_errno(EXIT_INTERNAL, "dup");
    rm_contents(fd, c.dir, st.st_dev);
  }
  if (rmdir(c.dir) != 0) die_errno(EXIT_STATE, "rm: rmdir %s", c.dir);
  return 0;
}

int main (int argc, char **argv) {
  char **copy = calloc((size_t)argc + 1, sizeof *copy);
  int i;
  if (copy == NULL) die(EXIT_INTERNAL, "out of memory");
  argv_area = argv[0];
  argv_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
  for (i = 0; i < argc; i++)
    if ((copy[i] = strdup(argv[i])) == NULL) die(EXIT_INTERNAL, "out of memory");
  argv = copy;
  if (argc >= 2 && strcmp(argv[1], "run") == 0) return cmd_run(argc - 2, argv + 2);
  if (argc >= 2 && strcmp(argv[1], "rm") == 0) return cmd_rm(argc - 2, argv + 2);
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(usage_text, stdout);
    return 0;
  }
  usage(argc >= 2 ? "unknown command '%s'" : "no command given", argc >= 2 ? argv[1] : "");
  return EXIT_USAGE;
}
