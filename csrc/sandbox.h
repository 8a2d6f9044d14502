/*
** sandbox.h -- what the files of dtlua-sandbox share.
**
** dtlua-sandbox is one program in three files:
**   sandbox_launcher.c  main, the command line, `run` and `rm`, and the
**                       launcher's side: cgroups, the lock, clone3, the id
**                       maps, the status relay and signal forwarding
**   sandbox_root.c      preparing DIR and building the new root: its
**                       directories, accounts and hidden host paths, the
**                       overlays, /dev, /sys and the cgroup view, /run,
**                       the binds, and the pivot into it
**   sandbox_init.c      the sandbox's init (PID 1): from clone3 to the
**                       program's exec, then reaping and forwarding signals
**   sandbox_net.c       --net veth: the sandbox's link to the host, made
**                       over rtnetlink between clone3 and init's release
** Only what one of them uses of another is declared here.
*/
#ifndef DT_SANDBOX_H
#define DT_SANDBOX_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include <linux/openat2.h>

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
#define MAX_LAYERS 128        /* --image-layer: an image's layers */
#define MAX_CGROUPS 16        /* one per cgroup v1 hierarchy, or one v2 group */
#define MAX_ENV_BYTES (1024 * 1024)   /* of one --env-file */
#define ID_COUNT   65536      /* sandbox uids/gids 0..65535 */
#define DAYTONA_ID 1000       /* Daytona's sandbox user and group */
#define OVERFLOW_ID 65534     /* "nobody" */

typedef struct Bind {
  const char *src, *dst;
  const char *sub;         /* --*-beneath: resolved beneath src, or NULL */
  int ro;
  int volume;              /* --volume*: idmapped when privileged */
} Bind;

typedef struct Opts {
  const char *root_dir;
  const char *hostname;
  unsigned long uid_base;
  int have_base;
  int net_none;              /* a network namespace of its own (none or veth) */
  int veth;                  /* --net veth:...: with a veth link to the host */
  char veth_host[16];        /* the host end's name (IFNAMSIZ) */
  unsigned veth_host_addr, veth_addr;   /* network byte order */
  int veth_plen;
  unsigned veth_group;       /* the host end's interface group (0: default) */
  int user_root;             /* --user root (else daytona) */
  const char *cwd;
  const char *env[MAX_ENV];
  int nenv;
  Bind binds[MAX_BINDS];
  int nbinds;
  const char *migrate[MAX_BINDS];  /* --volume-migrate SRC */
  int nmigrate;
  const char *hides[MAX_HIDES];
  int nhides;
  const char *cgroups[MAX_CGROUPS];
  int ncgroups;
  const char *layers[MAX_LAYERS];  /* --image-layer DIR, bottom first: the root is */
  int nlayers;                     /* their overlay instead of the host's system */
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
  int layerfd[MAX_LAYERS];   /* the image's layers, while prepare reads them */
  const char *shell;         /* daytona's login shell and SHELL: /bin/sh when the
                                image has no bash (NULL: /bin/bash) */
  unsigned long daytona_uid, daytona_gid;  /* an image's own daytona user (its USER
                                daytona made with useradd -r), 0: DAYTONA_ID */
} Ctx;

/* daytona's ids in this sandbox: DAYTONA_ID, unless the image has its own */
#define DAYTONA_UID(c) ((c)->daytona_uid ? (c)->daytona_uid : DAYTONA_ID)
#define DAYTONA_GID(c) ((c)->daytona_gid ? (c)->daytona_gid : DAYTONA_ID)

/* --- sandbox_launcher.c: errors ---------------------------------------- */

/* The launcher's argv block, which init blanks (argv_area, argv_len), and
** where errors go besides stderr (report_fd): see their definitions. */
extern char *argv_area;
extern size_t argv_len;
extern int report_fd;

/* Report the message (with strerror(errno): die_errno) and _exit(code). */
__attribute__((noreturn)) void die (int code, const char *fmt, ...);
__attribute__((noreturn)) void die_errno (int code, const char *fmt, ...);

/* --- sandbox_root.c ------------------------------------------------------ */

/* openat2(2), close-on-exec; BENEATH: below dirfd, through no symlink. */
int openat2_ (int dirfd, const char *path, int flags, unsigned long long resolve);
#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

/* A growable string for the files the launcher writes. */
typedef struct Buf {
  char *p;
  size_t n, cap;
} Buf;
/* Host files (/etc/passwd, /etc/subuid, ...): read whole, and split by ':'. */
int read_host_file (const char *path, Buf *b);
void field (const char *line, int i, char *out, size_t outsz);

/* The sandbox's directory and new root, in this order: prepare it, build
** the mounts host root may build, mount what only init can (/proc, devpts,
** shm, mqueue), and pivot into it. */
void prepare (Ctx *c);
void build_tree (Ctx *c);
void mount_inside (Ctx *c);
void enter_root (Ctx *c);

/* --- sandbox_net.c ------------------------------------------------------- */

/* --net veth:HOSTIF:HOSTADDR/PLEN:SANDBOXADDR[:GROUP] into o; 0 if malformed. */
int net_parse_veth (Opts *o, const char *spec);
/* The veth pair and both ends' addresses, the sandbox's default route: by
** the (root) launcher between clone3 and releasing init. */
void net_plumb (Ctx *c, pid_t child);

/* --- sandbox_init.c ------------------------------------------------------ */

/* The signals the launcher and init pass on to the program (0-terminated). */
extern const int forwarded[];
/* An exit code from a wait status: the code, or 128+N for signal N. */
int status_code (int st);
/* The sandbox's init, from clone3 on: it ends by exiting. */
void sandbox_main (Ctx *c, int goread, int statusfd);

#endif
