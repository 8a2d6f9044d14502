/*
** sandbox_root.c -- dtlua-sandbox's new root (sandbox.h lists the
** program's files): preparing the sandbox's directory (its layout, the
** accounts, the hidden host paths), then the mounts of the new root (the
** overlays over the host's system directories, idmapped when privileged,
** /dev, /sys and the cgroup view, /run, the binds), and the pivot into it.
** The launcher runs it as host root; unprivileged, init runs it inside its
** own user namespace.
*/

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/xattr.h>

#include <linux/magic.h>
#include <linux/openat2.h>

#include "sandbox.h"

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


/* ---------------------------------------------------------------------- */
/* file helpers: everything under the root dir may have been written by   */
/* the sandbox, so nothing there is followed through a symlink             */
/* ---------------------------------------------------------------------- */

int openat2_ (int dirfd, const char *path, int flags, unsigned long long resolve) {
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (unsigned long long)(flags | O_CLOEXEC);
  how.resolve = resolve;
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

#define HOST_OWNED ((unsigned long)-1)   /* ensure_dir: keep the creator's owner */

/* Host id of sandbox id `id` as seen by the process doing the preparation:
** the launcher (host root) in privileged mode, init inside its user
** namespace otherwise, where unmapped ids fall back to root. */
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

static int read_fd (int fd, Buf *b);

/* Read a whole small host file (at most 4 MiB); b->p is a string after. */
int read_host_file (const char *path, Buf *b) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  return read_fd(fd, b);
}

/* Read what is left of fd (at most 4 MiB) into b and close fd. */
static int read_fd (int fd, Buf *b) {
  char tmp[8192];
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
void field (const char *line, int i, char *out, size_t outsz) {
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

/* daytona's sudo rule in the sudoers.d directory SFD (closed; -1: none
** to write) and the sandbox's /etc/hostname and /etc/hosts in ETCFD: the
** same for a sandbox on the host's system and on an image. */
static void write_sudo_and_name (Ctx *c, int etcfd, int sfd) {
  static const char rule[] = "daytona ALL=(ALL:ALL) NOPASSWD: ALL\n";
  char hosts[512];
  if (sfd >= 0) {
    write_new_file(c, sfd, "daytona", rule, sizeof rule - 1, 0440, 0, 0, "/etc/sudoers.d/daytona");
    close(sfd);
  }
  snprintf(hosts, sizeof hosts, "%s\n", c->o->hostname);
  write_new_file(c, etcfd, "hostname", hosts, strlen(hosts), 0644, 0, 0, "/etc/hostname");
  snprintf(hosts, sizeof hosts,
           "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n"
           "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n", c->o->hostname);
  write_new_file(c, etcfd, "hosts", hosts, strlen(hosts), 0644, 0, 0, "/etc/hosts");
}

/* /etc/passwd, /etc/group, /etc/shadow and /etc/gshadow of a new sandbox:
** the host's accounts minus whatever holds the name daytona or id 1000,
** plus daytona; shadow files carry no password of the host ("*": no
** password login; sudo for daytona needs none). */
static void write_accounts (Ctx *c, int etcfd, Buf hp, Buf hg) {
  Buf pw = {0}, gr = {0}, sh = {0}, gsh = {0};
  unsigned long shadow_gid = 0;
  char name[256], id[32];
  char *line, *save;
  buf_add(&hp, "", 0);   /* an image without the file: an empty one */
  buf_add(&hg, "", 0);
  for (line = strtok_r(hp.p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    field(line, 0, name, sizeof name);
    field(line, 2, id, sizeof id);
    if (name[0] == '\0' || name[0] == '#' || strcmp(name, "daytona") == 0 ||
        strtoul(id, NULL, 10) == DAYTONA_UID(c))
      continue;
    buf_adds(&pw, line);
    buf_adds(&pw, "\n");
    buf_adds(&sh, name);
    buf_adds(&sh, ":*:::::::\n");
  }
  buf_addf(&pw, "daytona:x:%lu:%lu:Daytona:/home/daytona:%s\n", DAYTONA_UID(c), DAYTONA_GID(c),
           c->shell ? c->shell : "/bin/bash");
  buf_addf(&sh, "daytona:*:::::::\n");
  for (line = strtok_r(hg.p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    const char *members = line;
    int k;
    field(line, 0, name, sizeof name);
    field(line, 2, id, sizeof id);
    if (name[0] == '\0' || name[0] == '#' || strcmp(name, "daytona") == 0 ||
        strtoul(id, NULL, 10) == DAYTONA_GID(c))
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
  buf_addf(&gr, "daytona:x:%lu:\n", DAYTONA_GID(c));
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

/* ---------------------------------------------------------------------- */
/* a root made of a container image's layers (--image-layer)                */
/* ---------------------------------------------------------------------- */

/* The layers are the image store's directories (dtlocal's state dir), in
** overlayfs upper format.  Their content is the image's: its names, its
** symlinks, its /etc.  Nothing here follows a link of theirs: every name
** is opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) beneath a
** layer, one part at a time, and the merged view is worked out by hand. */

static const char *opaque_xattr (Ctx *c) {
  return c->privileged ? "trusted.overlay.opaque" : "user.overlay.opaque";
}

/* Where rel (clean, relative) is in the image's merged tree: the index of
** the topmost layer that has it (*out: its stat, not followed), or -1 when
** the image has no such name: never there, deleted by a whiteout, hidden by
** an opaque directory above it, or below a non-directory (a symlink
** included) of a higher layer. */
static int image_lookup (Ctx *c, const char *rel, struct stat *out) {
  char prefix[PATH_MAX];
  size_t len = strlen(rel), k;
  int i;
  if (len == 0 || len >= sizeof prefix) return -1;
  for (i = c->o->nlayers - 1; i >= 0; i--) {
    int cut = 0;
    {
      /* a layer whose root is opaque hides every layer below it */
      char v = 0;
      int dfd = openat(c->layerfd[i], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        if (fgetxattr(dfd, opaque_xattr(c), &v, 1) == 1 && v == 'y') cut = 1;
        close(dfd);
      }
    }
    for (k = 1; k <= len; k++) {
      struct stat st;
      int fd;
      if (rel[k] != '/' && rel[k] != '\0') continue;
      memcpy(prefix, rel, k);
      prefix[k] = '\0';
      fd = openat2_(c->layerfd[i], prefix, O_PATH | O_NOFOLLOW, BENEATH);
      if (fd < 0) break;                       /* not in this layer */
      if (fstat(fd, &st) != 0) { close(fd); break; }
      if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) { close(fd); return -1; }
      if (k == len) { close(fd); *out = st; return i; }
      if (!S_ISDIR(st.st_mode)) { close(fd); return -1; }
      {
        char v = 0;
        int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
          if (fgetxattr(dfd, opaque_xattr(c), &v, 1) == 1 && v == 'y') cut = 1;
          close(dfd);
        }
      }
      close(fd);
    }
    if (cut) return -1;                        /* lower layers are hidden */
  }
  return -1;
}

/* The image's regular file rel (at most 4 MiB) into b: 1, or 0 when the
** image has no such regular file. */
static int image_read (Ctx *c, const char *rel, Buf *b) {
  struct stat st;
  int i = image_lookup(c, rel, &st), fd;
  if (i < 0 || !S_ISREG(st.st_mode)) return 0;
  fd = openat2_(c->layerfd[i], rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, BENEATH);
  if (fd < 0) return 0;
  if (read_fd(fd, b) != 0) die_errno(EXIT_STATE, "read the image's /%s", rel);
  return 1;
}

/* The directory rel of the image in its upper layer (name: rel's last part,
** in dirfd): made with the image's mode and owner (sandbox ids) when
** missing, 0755 root's when the image has none.  Returns an O_PATH fd, or
** -1 when the sandbox put something else there (its own choice). */
static int image_upper_dir (Ctx *c, int dirfd, const char *name, const char *rel) {
  struct stat st;
  mode_t mode = 0755;
  unsigned long uid = 0, gid = 0;
  int fd = openat2_(dirfd, name, O_PATH | O_DIRECTORY, BENEATH);
  if (fd >= 0) return fd;
  if (errno != ENOENT) return -1;
  if (image_lookup(c, rel, &st) >= 0) {
    if (!S_ISDIR(st.st_mode)) return -1;       /* the image's own non-directory */
    mode = st.st_mode & 07777;
    uid = st.st_uid < ID_COUNT ? st.st_uid : OVERFLOW_ID;
    gid = st.st_gid < ID_COUNT ? st.st_gid : OVERFLOW_ID;
  }
  if (mkdirat(dirfd, name, 0700) != 0) die_errno(EXIT_STATE, "mkdir the upper directory /%s", rel);
  if (fchownat(dirfd, name, own_id(c, uid), own_id(c, gid), AT_SYMLINK_NOFOLLOW) != 0 ||
      fchmodat(dirfd, name, mode, 0) != 0)
    die_errno(EXIT_STATE, "set owner and mode of the upper directory /%s", rel);
  fd = openat2_(dirfd, name, O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_STATE, "open the upper directory /%s", rel);
  return fd;
}

/* Open the image's layers (c->layerfd, until prepare_image closes them)
** and read what the start needs of it before anything is made: its shell
** and its own daytona user.  An image may make daytona itself (Daytona's
** docs show `useradd -r ... daytona` and `USER daytona`: a system uid, its
** files owned by it); the sandbox's daytona is then that user, not 1000,
** so the image's files stay daytona's.  Root (uid or gid 0) or an id
** beyond the sandbox's range is not taken. */
static void image_open (Ctx *c) {
  Opts *o = c->o;
  struct stat st;
  Buf pw = {0};
  char *line, *save;
  int i;
  for (i = 0; i < o->nlayers; i++) {
    c->layerfd[i] = openat2_(AT_FDCWD, o->layers[i], O_PATH | O_DIRECTORY, RESOLVE_NO_MAGICLINKS);
    if (c->layerfd[i] < 0) die_errno(EXIT_STATE, "open image layer %s", o->layers[i]);
  }
  c->shell = (image_lookup(c, "bin/bash", &st) >= 0 || image_lookup(c, "usr/bin/bash", &st) >= 0)
             ? "/bin/bash" : "/bin/sh";
  if (image_read(c, "etc/passwd", &pw) && pw.p != NULL) {
    for (line = strtok_r(pw.p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      char name[64], uid[32], gid[32];
      char *end1, *end2;
      unsigned long u, g;
      field(line, 0, name, sizeof name);
      if (strcmp(name, "daytona") != 0) continue;
      field(line, 2, uid, sizeof uid);
      field(line, 3, gid, sizeof gid);
      u = strtoul(uid, &end1, 10);
      g = strtoul(gid, &end2, 10);
      if (uid[0] != '\0' && gid[0] != '\0' && *end1 == '\0' && *end2 == '\0' &&
          u > 0 && g > 0 && u < OVERFLOW_ID && g < OVERFLOW_ID) {
        c->daytona_uid = u;
        c->daytona_gid = g;
      }
      break;
    }
  }
  free(pw.p);
}

/* prepare() for an image root: the overlay's upper and work dirs, the
** mountpoints the image lacks, and the accounts, sudo rule, name and
** resolver in the upper layer's /etc, from the image's own /etc (never the
** host's).  As for the host's system, only at first start: what is in the
** upper layer already (the sandbox's own, or its deletion) stays. */
static void prepare_image (Ctx *c) {
  static const struct { const char *name; mode_t mode; int mount; } tops[] = {
    { "proc", 0555, 1 }, { "sys", 0555, 1 }, { "dev", 0755, 1 }, { "run", 0755, 1 },
    { "tmp", 01777, 0 }, { "root", 0700, 0 }, { "home", 0755, 0 }, { NULL, 0, 0 }
  };
  Opts *o = c->o;
  char what[PATH_MAX + 64];
  struct stat st;
  int fd, ufd, efd, i;
  fd = openat2_(c->dirfd, "upper", O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_STATE, "open %s", c->upper);
  snprintf(what, sizeof what, "%s/image", c->upper);
  ufd = ensure_dir(c, fd, "image", 0755, 0, NULL, what);
  close(fd);
  fd = openat2_(c->dirfd, "work", O_PATH | O_DIRECTORY, BENEATH);
  if (fd < 0) die_errno(EXIT_STATE, "open %s", c->work);
  snprintf(what, sizeof what, "%s/image", c->work);
  close(ensure_dir(c, fd, "image", 0700, HOST_OWNED, NULL, what));
  close(fd);

  /* mountpoints must be directories; the sandbox's own dirs exist */
  for (i = 0; tops[i].name != NULL; i++) {
    int in_image = image_lookup(c, tops[i].name, &st) >= 0 && S_ISDIR(st.st_mode);
    struct stat ust;
    int in_upper = fstatat(ufd, tops[i].name, &ust, AT_SYMLINK_NOFOLLOW) == 0;
    if (in_image && !(tops[i].mount && in_upper && !S_ISDIR(ust.st_mode))) continue;
    if (!tops[i].mount && in_upper) continue;   /* the sandbox's own doing */
    snprintf(what, sizeof what, "%s/image/%s", c->upper, tops[i].name);
    close(ensure_dir(c, ufd, tops[i].name, tops[i].mode, 0, NULL, what));
  }
  if (c->sub_mapped && image_lookup(c, "home/daytona", &st) < 0) {
    int hfd = image_upper_dir(c, ufd, "home", "home");
    if (hfd >= 0) {
      int created;
      int dfd = ensure_dir(c, hfd, "daytona", 0750, DAYTONA_UID(c), &created, "/home/daytona");
      if (created && fchownat(hfd, "daytona", own_id(c, DAYTONA_UID(c)), own_id(c, DAYTONA_GID(c)),
                              AT_SYMLINK_NOFOLLOW) != 0)
        die_errno(EXIT_STATE, "chown /home/daytona");
      close(dfd);
      close(hfd);
    }
  }

  efd = image_upper_dir(c, ufd, "etc", "etc");
  if (efd >= 0) {
    Buf pw = {0}, gr = {0}, rc = {0};
    image_read(c, "etc/passwd", &pw);
    image_read(c, "etc/group", &gr);
    write_accounts(c, efd, pw, gr);
    write_sudo_and_name(c, efd, image_upper_dir(c, efd, "sudoers.d", "etc/sudoers.d"));
    /* the resolver the host uses (as a container engine gives one): the
    ** image's own names no server of this network */
    if (read_host_file("/etc/resolv.conf", &rc) == 0 && rc.p != NULL)
      write_new_file(c, efd, "resolv.conf", rc.p, rc.n, 0644, 0, 0, "/etc/resolv.conf");
    free(rc.p);
    close(efd);
  }
  close(ufd);
  for (i = 0; i < o->nlayers; i++) {
    close(c->layerfd[i]);
    c->layerfd[i] = -1;
  }
}

/* Everything the sandbox's directory needs before its mounts: the layout,
** the new root's mountpoints and symlinks, the upper layers with the
** sandbox's accounts, sudo rule, hostname and hidden host paths.  Runs as
** host root (privileged) or as root of the sandbox's user namespace. */
void prepare (Ctx *c) {
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
  if (o->nlayers > 0) image_open(c);
  {
    unsigned long rid = o->user_root ? 0 : DAYTONA_UID(c);
    mode_t mode = (!c->privileged && !o->user_root) ? 0777 : 0700;
    if (!c->privileged) rid = 0;
    if (fchownat(c->dirfd, "run", own_id(c, rid), own_id(c, rid), AT_SYMLINK_NOFOLLOW) != 0 ||
        fchmodat(c->dirfd, "run", mode, 0) != 0)
      die_errno(EXIT_STATE, "set owner and mode of %s", c->run);
  }

  rootfd = ensure_dir(c, c->dirfd, "rootfs", 0755, 0, NULL, c->rootfs);
  c->ntops = 0;
  if (o->nlayers > 0) {
    close(rootfd);
    prepare_image(c);
    return;
  }
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
    Buf hp = {0}, hg = {0};
    if (ufd < 0) die_errno(EXIT_STATE, "open %s/etc", c->upper);
    if (read_host_file("/etc/passwd", &hp) != 0)
      die_errno(EXIT_STATE, "read the host's /etc/passwd");
    if (read_host_file("/etc/group", &hg) != 0)
      die_errno(EXIT_STATE, "read the host's /etc/group");
    write_accounts(c, ufd, hp, hg);
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
    write_sudo_and_name(c, ufd, upper_subdir(c, ufd, "sudoers.d", "/etc/sudoers.d"));
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
/* the new root's mounts                                                    */
/* ---------------------------------------------------------------------- */

/* FSCONFIG_CMD_CREATE of a filesystem context, or die with the kernel's own
** log line for it (what it says about a refused overlay is the only useful
** part of the error). */
static void fs_create (int fs, const char *type, const char *what) {
  int err;
  char log[512] = "";
  ssize_t n;
  if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0) return;
  err = errno;
  n = read(fs, log, sizeof log - 1);
  log[n > 0 ? n : 0] = '\0';
  if (n > 0 && log[n - 1] == '\n') log[n - 1] = '\0';
  errno = err;
  die_errno(EXIT_MOUNT, "mount %s on %s%s%s", type, what, log[0] ? ": kernel says " : "", log);
}

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
  fs_create(fs, type, what);
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

/* The directory sub beneath src (--bind-beneath, --volume-beneath): src is
** the caller's, but what lies beneath may have been written by sandboxes (a
** volume's data is writable by every sandbox that mounts it), so each part
** is resolved without following a symlink, leaving src or crossing a mount,
** and a missing part is made.  As the volume's own directories are: for an
** idmapped volume, daytona's (sandbox id 1000 on disk) and 0755; else
** writable by all, since each sandbox writes as host ids of its own.
** Returns an open directory fd: what gets bound is what was checked,
** whatever is renamed meanwhile. */
static int open_beneath (Ctx *c, const Bind *b, const char *what) {
  char buf[PATH_MAX], *part, *save = NULL;
  int idmapped = b->volume && c->privileged;
  int fd = open(b->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die_errno(EXIT_MOUNT, "bind %s: source", what);
  snprintf(buf, sizeof buf, "%s", b->sub);
  for (part = strtok_r(buf, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
    int next = openat2_(fd, part, O_RDONLY | O_DIRECTORY, BENEATH | RESOLVE_NO_XDEV);
    if (next < 0 && errno == ENOENT) {
      int made = mkdirat(fd, part, idmapped ? 0755 : 0777) == 0;
      if (!made && errno != EEXIST)
        die_errno(EXIT_MOUNT, "bind %s: mkdir %s", what, part);
      next = openat2_(fd, part, O_RDONLY | O_DIRECTORY, BENEATH | RESOLVE_NO_XDEV);
      /* by the fd, not the name: a sandbox may have swapped the name */
      if (next >= 0 && made && idmapped && fchown(next, DAYTONA_ID, DAYTONA_ID) != 0)
        die_errno(EXIT_MOUNT, "bind %s: chown %s", what, part);
    }
    if (next < 0)
      die_errno(EXIT_MOUNT, "bind %s: %s is not a directory beneath %s (a symlink or mount point?)",
                what, part, b->src);
    close(fd);
    fd = next;
  }
  return fd;
}

#define MIGRATE_DEPTH 128   /* deeper entries keep their owners */

/* The sandbox id a host id of an old per-sandbox range stood for: ids below
** ID_COUNT are already sandbox ids (or host root's); the others belong to
** some sandbox's range, and ranges spaced by ID_COUNT from ours (dtlocal's
** all are) give (id - base) mod ID_COUNT. */
static unsigned long canonical_id (Ctx *c, unsigned long id) {
  if (id < ID_COUNT) return id;
  return (id - c->base) % ID_COUNT;
}

/* --volume-migrate: give every entry beneath the directory dfd owned by an
** old sandbox range the sandbox ids it stood for.  Sandboxes may be
** writing there (even renaming or swapping entries under the walk), so
** each entry is opened by openat2(RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV),
** O_PATH|O_NOFOLLOW (a symlink is opened as itself), and stat and chown go
** through that fd: they are the same inode, never a link's target, never
** another mount.  An entry that vanished meanwhile is skipped. */
static void migrate_tree (Ctx *c, int dfd, int depth, const char *what) {
  int lfd = dup(dfd);
  DIR *d;
  struct dirent *e;
  if (lfd < 0 || (d = fdopendir(lfd)) == NULL)
    die_errno(EXIT_STATE, "migrate volume %s: read a directory", what);
  while ((errno = 0, e = readdir(d)) != NULL) {
    struct stat st;
    unsigned long uid, gid;
    int fd;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    fd = openat2_(dfd, e->d_name, O_PATH | O_NOFOLLOW, BENEATH | RESOLVE_NO_XDEV);
    if (fd < 0) {
      if (errno == ENOENT || errno == EXDEV) continue;   /* gone, or a mount point */
      die_errno(EXIT_STATE, "migrate volume %s: open %s", what, e->d_name);
    }
    if (fstat(fd, &st) != 0) die_errno(EXIT_STATE, "migrate volume %s: stat %s", what, e->d_name);
    uid = canonical_id(c, st.st_uid);
    gid = canonical_id(c, st.st_gid);
    if ((uid != st.st_uid || gid != st.st_gid) &&
        fchownat(fd, "", (uid_t)uid, (gid_t)gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
      die_errno(EXIT_STATE, "migrate volume %s: chown %s", what, e->d_name);
    if (S_ISDIR(st.st_mode) && depth < MIGRATE_DEPTH) {
      /* "." of the O_PATH fd: the directory just checked, not a new lookup */
      int sub = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (sub < 0) die_errno(EXIT_STATE, "migrate volume %s: open %s", what, e->d_name);
      migrate_tree(c, sub, depth + 1, what);
      close(sub);
    }
    close(fd);
  }
  if (errno != 0) die_errno(EXIT_STATE, "migrate volume %s: readdir", what);
  closedir(d);
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

/* Add DIR as the next lower layer of the overlay being configured on FS.
** Privileged: an idmapped, read-only clone of DIR, by fd, which is
** returned: it must stay open until the overlay is mounted (closing the
** last fd of a detached mount dissolves it).  Unprivileged: by path, -1. */
static int overlay_lower (Ctx *c, int fs, const char *dir, const char *what) {
  struct mount_attr a;
  int lfd;
  if (!c->privileged) {
    if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", dir, 0) != 0)
      die_errno(EXIT_MOUNT, "mount overlay on %s: lowerdir+ %s", what, dir);
    return -1;
  }
  lfd = open_tree(AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (lfd < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: open_tree %s", what, dir);
  memset(&a, 0, sizeof a);
  a.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
  a.userns_fd = (uint64_t)c->userns_fd;
  if (mount_setattr(lfd, "", AT_EMPTY_PATH, &a, sizeof a) != 0)
    die_errno(EXIT_MOUNT, "mount overlay on %s: idmap the lower layer %s "
              "(needs a filesystem with idmapped mounts)", what, dir);
  if (fsconfig(fs, FSCONFIG_SET_FD, "lowerdir+", NULL, lfd) != 0)
    die_errno(EXIT_MOUNT, "mount overlay on %s: lowerdir+ %s by fd "
              "(needs Linux 6.13 or later)", what, dir);
  return lfd;
}

/* Finish the overlay configured on FS (its lower layers given) with UPPER
** and WORK, and return it mounted, detached, nodev; FS is closed. */
static int overlay_mount (int fs, const char *upper, const char *work, const char *what) {
  int mfd;
  if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) != 0 ||
      fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) != 0)
    die_errno(EXIT_MOUNT, "mount overlay on %s: upperdir/workdir", what);
  /* upper-layer metadata the sandbox could steer is never trusted */
  if (fsconfig(fs, FSCONFIG_SET_STRING, "metacopy", "off", 0) != 0 ||
      fsconfig(fs, FSCONFIG_SET_STRING, "index", "off", 0) != 0)
    die_errno(EXIT_MOUNT, "mount overlay on %s: metacopy/index", what);
  fs_create(fs, "overlay", what);
  mfd = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
  if (mfd < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: fsmount", what);
  close(fs);
  return mfd;
}

/* The root of an image sandbox: one overlay, the image's layers as lower
** layers (topmost first; idmapped and read-only when privileged, like the
** host's directories: the layers hold sandbox ids 0..65535, which the
** sandbox's user namespace shows as themselves) under DIR/upper/image, on
** DIR/rootfs.  The layers are shared by every sandbox of the image: nothing
** reaches them but reads through overlays. */
static void mount_image_root (Ctx *c) {
  Opts *o = c->o;
  char what[2 * PATH_MAX], upper[PATH_MAX + 64], work[PATH_MAX + 64];
  int lfds[MAX_LAYERS];
  int fs, mfd, fd, i;
  snprintf(upper, sizeof upper, "%s/image", c->upper);
  snprintf(work, sizeof work, "%s/image", c->work);
  snprintf(what, sizeof what, "/ (%d image layers, upper %s)", o->nlayers, upper);
  fs = fsopen("overlay", FSOPEN_CLOEXEC);
  if (fs < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: fsopen", what);
  for (i = o->nlayers - 1; i >= 0; i--) lfds[i] = overlay_lower(c, fs, o->layers[i], what);
  if (!c->privileged && fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) != 0)
    die_errno(EXIT_MOUNT, "mount overlay on %s: userxattr", what);
  mfd = overlay_mount(fs, upper, work, what);
  for (i = 0; i < o->nlayers; i++) if (lfds[i] >= 0) close(lfds[i]);
  fd = rootfd_open(c);
  attach(mfd, fd, what);
  close(fd);
}

/* Everything of the new root that host root may build (privileged: in the
** launcher's mount namespace, before the sandbox's copy is made, so the
** kernel locks it all in the sandbox), or that init builds unprivileged. */
void build_tree (Ctx *c) {
  Opts *o = c->o;
  char what[3 * PATH_MAX], path[PATH_MAX + 64];
  int rootfd, fd, m, i;

  /* the new root: the image's layers under the sandbox's upper dir, or
  ** the persistent rootfs directory as a mount of its own (pivot_root
  ** needs one) */
  if (o->nlayers > 0) mount_image_root(c);
  else {
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
  }
  rootfd = rootfd_open(c);

  /* the host's system directories: copy-on-write overlays, the sandbox's
  ** upper layer over the host's directory, which privileged is an
  ** idmapped mount (host 0..65535 shown as sandbox 0..65535) */
  for (i = 0; i < c->ntops; i++) {
    const char *name = c->tops[i];
    char upper[PATH_MAX + 64], work[PATH_MAX + 64], lower[64];
    int fs, mfd, lfd;
    snprintf(lower, sizeof lower, "/%s", name);
    snprintf(upper, sizeof upper, "%s/%s", c->upper, name);
    snprintf(work, sizeof work, "%s/%s", c->work, name);
    snprintf(what, sizeof what, "/%s (lower %s, upper %s)", name, lower, upper);
    fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0) die_errno(EXIT_MOUNT, "mount overlay on %s: fsopen", what);
    lfd = overlay_lower(c, fs, lower, what);
    if (!c->privileged && fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) != 0)
      die_errno(EXIT_MOUNT, "mount overlay on %s: userxattr", what);
    mfd = overlay_mount(fs, upper, work, what);
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

  /* volumes from before they were idmapped: their files' owners first */
  for (i = 0; c->privileged && i < o->nmigrate; i++) {
    fd = open(o->migrate[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die_errno(EXIT_STATE, "migrate volume %s", o->migrate[i]);
    migrate_tree(c, fd, 0, o->migrate[i]);
    close(fd);
  }

  /* the caller's binds, in order.  A volume's, as root, is idmapped like
  ** the lower layers (host ids 0..65535 shown as sandbox ids 0..65535):
  ** every sandbox sharing it stores and sees the same ids, whatever its
  ** host range.  Only its top mount: a mount beneath a volume is no part of
  ** it (subpaths do not cross one either). */
  for (i = 0; i < o->nbinds; i++) {
    Bind *b = &o->binds[i];
    struct stat st;
    struct mount_attr a;
    int idmapped = b->volume && c->privileged, dfd;
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH |
                     (idmapped ? 0 : AT_RECURSIVE);
    snprintf(what, sizeof what, "%s (from %s%s%s%s)", b->dst, b->src, b->sub ? "/" : "",
             b->sub ? b->sub : "", b->ro ? ", read-only" : "");
    if (b->sub) dfd = open_beneath(c, b, what);
    else {
      dfd = open(b->src, O_PATH | O_CLOEXEC);
      if (dfd < 0) die_errno(EXIT_MOUNT, "bind %s: source", what);
    }
    if (fstat(dfd, &st) != 0) die_errno(EXIT_MOUNT, "bind %s: source", what);
    m = open_tree(dfd, "", flags);
    if (m < 0) die_errno(EXIT_MOUNT, "bind %s: open_tree", what);
    close(dfd);
    memset(&a, 0, sizeof a);
    a.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (b->ro ? MOUNT_ATTR_RDONLY : 0);
    if (idmapped) {
      a.attr_set |= MOUNT_ATTR_IDMAP;
      a.userns_fd = (uint64_t)c->userns_fd;
    }
    if (mount_setattr(m, "", AT_EMPTY_PATH | (idmapped ? 0 : AT_RECURSIVE), &a, sizeof a) != 0)
      die_errno(EXIT_MOUNT, "bind %s: set mount attributes%s", what,
                idmapped ? " (idmapped: needs a filesystem with idmapped mounts)" : "");
    snprintf(path, sizeof path, "%s", b->dst + 1);
    fd = mountpoint(c, rootfd, path, !S_ISDIR(st.st_mode), what);
    attach(m, fd, what);
    close(fd);
  }
  close(rootfd);
}

/* What only the sandbox's init can mount, in its own namespaces: /proc of
** its PID namespace, its own devpts, /dev/shm, /dev/mqueue. */
void mount_inside (Ctx *c) {
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
void enter_root (Ctx *c) {
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
