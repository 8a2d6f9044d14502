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
**
** This file is main, the commands and the launcher's side of `run`;
** sandbox_root.c builds the new root and sandbox_init.c is the init
** (sandbox.h).
*/

#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include <sys/file.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include <linux/magic.h>
#include <linux/sched.h>

#include "sandbox.h"

/* The launcher's original argv block: init blanks it, so that the
** sandbox's /proc/1/cmdline shows none of the host's paths. */
char *argv_area;
size_t argv_len;

/* Where errors are reported besides stderr: the --ready-fd in the launcher,
** the status pipe to the launcher in the sandbox's init, -1 elsewhere. */
int report_fd = -1;


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
void die (int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(code, 0, fmt, ap);
  va_end(ap);
  _exit(code);
}

/* Same, appending the text of the current errno. */
void die_errno (int code, const char *fmt, ...) {
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
  "           [--net host|none|veth:HOSTIF:HOSTADDR/PLEN:SANDBOXADDR[:GROUP]] [--user daytona|root] [--cwd DIR]\n"
  "           [--env K=V]... [--env-file PATH] [--bind SRC DST]... [--ro-bind SRC DST]...\n"
  "           [--bind-beneath SRC SUBPATH DST]... [--volume SRC DST]...\n"
  "           [--volume-beneath SRC SUBPATH DST]... [--volume-migrate SRC]...\n"
  "           [--hide PATH]... [--cgroup DIR]... [--ready-fd FD] [--listen-fd FD]\n"
  "           [--image-layer DIR]...\n"
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
  "--volume, --volume-beneath: binds of a volume shared by sandboxes, as\n"
  "root idmapped (its files stored under the sandbox ids 0..65535);\n"
  "--volume-migrate SRC: first give files under SRC owned by host ids >= 65536\n"
  "(a sandbox's range) the sandbox ids they stood for.\n"
  "--image-layer DIR (repeated, bottom first): the root is an overlay of\n"
  "these layers of a container image (and the sandbox's upper dir) instead\n"
  "of the host's system.\n"
  "--net veth:...: a network namespace of its own, linked to the host by a\n"
  "veth pair (host end HOSTIF with HOSTADDR/PLEN in interface group GROUP;\n"
  "the sandbox's eth0 with SANDBOXADDR, default route via HOSTADDR); root only.\n"
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
      if (strcmp(v, "none") == 0) o->net_none = 1, o->veth = 0;
      else if (strcmp(v, "host") == 0) o->net_none = 0, o->veth = 0;
      else if (strncmp(v, "veth:", 5) == 0) {
        if (!net_parse_veth(o, v + 5))
          usage("--net: expected veth:HOSTIF:HOSTADDR/PLEN:SANDBOXADDR[:GROUP] (an interface "
                "name of 1..15 of [a-z0-9-], IPv4 addresses on one subnet, PLEN 8..31), got '%s'", v);
        o->net_none = 1;
      }
      else usage("--net: expected host, none or veth:..., got '%s'", v);
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
    else if (strcmp(a, "--bind") == 0 || strcmp(a, "--ro-bind") == 0 ||
             strcmp(a, "--volume") == 0 || strcmp(a, "--bind-beneath") == 0 ||
             strcmp(a, "--volume-beneath") == 0) {
      Bind *b;
      if (o->nbinds == MAX_BINDS) usage("%s: more than %d binds", a, MAX_BINDS);
      b = &o->binds[o->nbinds++];
      b->ro = (a[2] == 'r');
      b->volume = (a[2] == 'v');
      b->src = NEXT();
      if (strstr(a, "-beneath") != NULL) b->sub = NEXT();
      b->dst = NEXT();
      if (b->src[0] != '/') usage("%s: source must be absolute: '%s'", a, b->src);
      if (b->sub) {
        /* relative, clean: checked as the absolute path it would be */
        char abs[PATH_MAX];
        if (b->sub[0] == '/' || strlen(b->sub) >= PATH_MAX - 1) usage("%s: bad subpath '%s'", a, b->sub);
        snprintf(abs, sizeof abs, "/%s", b->sub);
        if (!clean_abs_path(abs) || strcmp(abs, "/") == 0)
          usage("%s: subpath must be a clean relative path, got '%s'", a, b->sub);
      }
      if (!clean_abs_path(b->dst) || strcmp(b->dst, "/") == 0)
        usage("%s: destination must be a clean absolute path below /: '%s'", a, b->dst);
    }
    else if (strcmp(a, "--volume-migrate") == 0) {
      const char *v = NEXT();
      if (v[0] != '/') usage("--volume-migrate: expected an absolute path, got '%s'", v);
      if (o->nmigrate == MAX_BINDS) usage("--volume-migrate: more than %d", MAX_BINDS);
      o->migrate[o->nmigrate++] = v;
    }
    else if (strcmp(a, "--hide") == 0) {
      const char *v = NEXT();
      if (!clean_abs_path(v) || strcmp(v, "/") == 0)
        usage("--hide: expected a clean absolute path below /, got '%s'", v);
      if (o->nhides == MAX_HIDES) usage("--hide: more than %d", MAX_HIDES);
      o->hides[o->nhides++] = v;
    }
    else if (strcmp(a, "--image-layer") == 0) {
      const char *v = NEXT();
      if (!clean_abs_path(v) || strcmp(v, "/") == 0)
        usage("--image-layer: expected a clean absolute path of a layer directory, got '%s'", v);
      if (o->nlayers == MAX_LAYERS) usage("--image-layer: more than %d layers", MAX_LAYERS);
      o->layers[o->nlayers++] = v;
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
  else if (o.veth) usage("--net veth: needs root (creating interfaces in the host's namespace)");
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
    if (o.veth) net_plumb(&c, child);
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
