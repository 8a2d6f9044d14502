/*
** sandbox_init.c -- the init (PID 1) of every sandbox (sandbox.h lists
** dtlua-sandbox's files): from clone3 it waits for the launcher, enters
** the new root, becomes the sandbox's root, starts the program, then reaps
** every process and forwards signals to the program until it exits.
*/

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "sandbox.h"

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

int status_code (int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return EXIT_INTERNAL;
}

const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, 0 };

/* In the program's process G: become the sandbox user, set the cwd and
** environment, exec.  A failure is sent on errfd (close-on-exec, so EOF
** means the exec succeeded) as "CODE message". */
static void run_program (Ctx *c, int errfd) {
  Opts *o = c->o;
  static char *envp[MAX_ENV + 16];
  static char envbuf[MAX_ENV + 16][PATH_MAX + 64];
  uid_t uid = o->user_root ? 0 : (uid_t)DAYTONA_UID(c);
  gid_t gid = o->user_root ? 0 : (gid_t)DAYTONA_GID(c);
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
    if (setgroups(1, &gid) != 0) die_errno(EXIT_USER, "setgroups(%d)", (int)gid);
  }
  if (setresgid(gid, gid, gid) != 0) die_errno(EXIT_USER, "setresgid(%d)", (int)gid);
  if (setresuid(uid, uid, uid) != 0) die_errno(EXIT_USER, "setresuid(%d)", (int)uid);
  if (chdir(cwd) != 0) die_errno(EXIT_USER, "chdir %s as %s", cwd, user);
#define ENV(...) (snprintf(envbuf[n], sizeof envbuf[n], __VA_ARGS__), envp[n] = envbuf[n], n++)
  ENV("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  ENV("HOME=%s", home);
  ENV("USER=%s", user);
  ENV("LOGNAME=%s", user);
  ENV("SHELL=%s", c->shell ? c->shell : "/bin/bash");
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
void sandbox_main (Ctx *c, int goread, int statusfd) {
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
