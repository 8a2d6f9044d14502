/*
** process.c -- child processes, pipes and PTYs on the core's libuv loop.
**
**   core.process.spawn{argv = {...}, env = {...}, cwd = "...",
**                      stdin = "pipe"|"null"|"inherit"|fd,
**                      stdout = ..., stderr = ... | "stdout",
**                      pty = {cols = 80, rows = 24}, new_group = true,
**                      detached = true}
**     -> Process | nil, message, code
**   core.process.kill(pid, sig) -> true | nil, message, code
**
** Pipe mode uses posix_spawn, not uv_spawn: glibc's posix_spawn starts the
** child with vfork semantics (it borrows our address space until exec),
** while libuv 1.44 fork()s, copying the page tables of the whole process --
** measured here, 1.1 ms against 0.6 ms per spawn of /bin/true from an 8 MiB
** process, and the gap grows with the parent's size.  Every command the
** toolbox daemon runs pays it.  PTY mode forks: the child must call setsid()
** and then TIOCSCTTY so that the PTY becomes its controlling terminal; it
** takes the care libuv takes (signals blocked across fork, dispositions
** reset in the child, exec errors reported over a close-on-exec pipe).
** Every child is reaped by one SIGCHLD watcher that calls waitpid() on our
** own pids only -- never waitpid(-1), which would steal other code's.
**
** Output is buffered in C, at most OUT_BOUND bytes per stream; when a
** buffer is full reading stops (uv_read_stop) until Lua takes the data, so
** the child blocks in write() and memory stays flat.  Input is queued up to
** IN_BOUND bytes before write() tells the caller to wait for the drain.
**
** The object is pinned while any uv handle is open or the child has not
** been reaped, so it is collected only once nothing is left to clean up.
** dt_process_shutdown kills (SIGKILL, whole group) and reaps every child
** still running when the loop is torn down, so nothing outlives a script --
** except a `detached` child: a daemon we start on purpose (`dtlocal start`).
** It leads its own session with none of our pipes, close and collection
** let it go instead of killing it, its exit is no work that keeps the loop
** running, and the shutdown leaves it to init; while we run it is still
** reaped like any child (a zombie would look alive to kill(pid, 0)).
*/
#define _GNU_SOURCE   /* pipe2, ptsname_r, posix_openpt, POSIX_SPAWN_SETSID */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "dt.h"

#define PROCESS_TNAME "daytona.core.Process"

#define OUT_BOUND (256 * 1024)    /* buffered bytes per output stream before reading pauses */
#define READ_CHUNK (64 * 1024)    /* room offered to each read */
#define IN_BOUND (1024 * 1024)    /* queued stdin bytes before write() answers false */

extern char **environ;


/* ---------------------------------------------------------------------- */
/* signal names                                                            */
/* ---------------------------------------------------------------------- */

static const struct { const char *name; int num; } signals[] = {
  {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
  {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"BUS", SIGBUS}, {"FPE", SIGFPE},
  {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
  {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
  {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
  {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
  {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
  {"SYS", SIGSYS}, {NULL, 0}
};

/* Push "SIGTERM" for 15 (or "SIG<n>" for an unnamed one). */
static void push_signame (lua_State *L, int sig) {
  int i;
  for (i = 0; signals[i].name; i++) {
    if (signals[i].num == sig) {
      lua_pushfstring(L, "SIG%s", signals[i].name);
      return;
    }
  }
  lua_pushfstring(L, "SIG%d", sig);
}

/* A signal given as a number, "TERM" or "SIGTERM"; raises on anything else. */
static int check_signal (lua_State *L, int idx, int def) {
  const char *s;
  int i;
  if (lua_isnoneornil(L, idx)) return def;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, idx);
    luaL_argcheck(L, n >= 0 && n < 65, idx, "signal number out of range");
    return (int)n;
  }
  s = luaL_checkstring(L, idx);
  if (strncmp(s, "SIG", 3) == 0) s += 3;
  for (i = 0; signals[i].name; i++)
    if (strcmp(s, signals[i].name) == 0) return signals[i].num;
  return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'",
                                                lua_tostring(L, idx)));
}


/* ---------------------------------------------------------------------- */
/* the object                                                              */
/* ---------------------------------------------------------------------- */

typedef struct Process Process;

typedef struct Stream {     /* a pipe end or the PTY master, as a uv pipe */
  uv_pipe_t h;
  Process *p;
  int used;       /* the stream exists at all (a pipe or the PTY) */
  int open;       /* handle initialised and not yet uv_close'd */
  int reading;    /* uv_read_start in effect */
  int eof;        /* no more data will come (EOF, error or closed) */
  int err;        /* libuv error that ended the stream; 0 for a clean EOF */
  dt_buf buf;     /* output not yet taken by Lua */
} Stream;

struct Process {
  dt_obj base;
  int pty;                /* PTY mode: out[0] is the master, used both ways */
  int group;              /* the child leads its own process group */
  int detached;           /* let go, never killed by us (`detached`) */
  int pid;                /* 0 until spawned */
  int exited;             /* reaped */
  int exit_code;
  int term_signal;
  int nopen;              /* uv handles not yet closed */
  int closed;             /* close() called */
  int stdin_closed;       /* close_stdin() called */
  int write_err;          /* first failed write, reported by later writes */
  size_t pending;         /* stdin bytes queued in libuv */
  Stream in, out[2];      /* stdin; stdout, stderr */
  uv_shutdown_t shutdown_req;
  Process *prev, *next;   /* the loop's list of spawned processes */
  int listed;
};

/* Per-loop state: the list of spawned processes (for the SIGCHLD reaper and
** for shutdown) and the SIGCHLD watcher. */
typedef struct ProcState {
  uv_signal_t sigchld;
  int sig_started;
  int nchild;             /* children not reaped: the watcher is ref'd meanwhile */
  Process *head;
} ProcState;

typedef struct WriteReq {
  uv_write_t req;
  Process *p;
  size_t len;
  char data[];
} WriteReq;

static Process *checkproc (lua_State *L) {
  return (Process *)luaL_checkudata(L, 1, PROCESS_TNAME);
}

static uv_stream_t *input_stream (Process *p) {
  Stream *s = p->pty ? &p->out[0] : &p->in;
  return (s->open && !p->stdin_closed) ? (uv_stream_t *)&s->h : NULL;
}

static void list_add (ProcState *st, Process *p) {
  p->prev = NULL;
  p->next = st->head;
  if (st->head) st->head->prev = p;
  st->head = p;
  p->listed = 1;
}

static void list_remove (ProcState *st, Process *p) {
  if (!p->listed) return;
  if (p->prev) p->prev->next = p->next;
  else st->head = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
  p->listed = 0;
}

/* Everything let go: signal a last time and drop the pin. */
static void maybe_finish (Process *p) {
  if (p->nopen == 0 && (p->exited || p->pid == 0))
    dt_release(&p->base);
}

static void record_status (Process *p, int status) {
  p->exited = 1;
  if (WIFSIGNALED(status)) {
    p->term_signal = WTERMSIG(status);
    p->exit_code = 128 + p->term_signal;   /* as a shell reports it */
  }
  else
    p->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
}


/* ---------------------------------------------------------------------- */
/* streams                                                                 */
/* ---------------------------------------------------------------------- */

static void stream_closed (uv_handle_t *h) {
  Stream *s = (Stream *)h->data;
  Process *p = s->p;
  p->nopen--;
  dt_signal(&p->base);
  maybe_finish(p);
}

static void stream_close (Stream *s) {
  if (!s->open) return;
  s->open = 0;
  s->reading = 0;
  s->eof = 1;
  uv_close((uv_handle_t *)&s->h, stream_closed);
}

static void on_alloc (uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  Stream *s = (Stream *)h->data;
  dt_buf *buf = &s->buf;
  (void)suggested;
  if (buf->cap - buf->len < READ_CHUNK) {
    size_t ncap = buf->cap ? buf->cap * 2 : READ_CHUNK;
    char *d;
    if (ncap < buf->len + READ_CHUNK) ncap = buf->len + READ_CHUNK;
    d = realloc(buf->data, ncap);
    if (d == NULL) {   /* libuv then reports UV_ENOBUFS to on_read */
      b->base = NULL;
      b->len = 0;
      return;
    }
    buf->data = d;
    buf->cap = ncap;
  }
  b->base = buf->data + buf->len;
  b->len = READ_CHUNK;
}

static void on_read (uv_stream_t *h, ssize_t nread, const uv_buf_t *b) {
  Stream *s = (Stream *)h->data;
  Process *p = s->p;
  (void)b;
  if (nread > 0) {
    s->buf.len += (size_t)nread;
    if (s->buf.len >= OUT_BOUND) {   /* full: the child waits until Lua reads */
      uv_read_stop(h);
      s->reading = 0;
    }
  }
  else if (nread < 0) {
    /* a PTY master reads EIO once every slave descriptor is closed: that
    ** is the terminal's end of file */
    if (nread != UV_EOF && !(p->pty && nread == UV_EIO)) s->err = (int)nread;
    if (p->pty && !p->exited) {
      /* closing the master hangs the terminal up: the kernel would SIGHUP
      ** a child that has closed its descriptors but not exited yet.  Keep
      ** it open until the child is reaped. */
      uv_read_stop(h);
      s->reading = 0;
      s->eof = 1;
    }
    else
      stream_close(s);
  }
  else
    return;   /* EAGAIN: nothing happened */
  dt_signal(&p->base);
}

/* Wrap fd (ours, close-on-exec) in s; on failure fd is closed and the
** stream is at EOF with the error. */
static void stream_open (Process *p, Stream *s, int fd, int readable) {
  int rc;
  s->p = p;
  s->used = 1;
  s->eof = 0;
  uv_pipe_init(&p->base.loop->uv, &s->h, 0);
  s->h.data = s;
  s->open = 1;
  p->nopen++;
  rc = uv_pipe_open(&s->h, fd);
  if (rc < 0) close(fd);   /* not adopted by the handle */
  else if (readable) {
    rc = uv_read_start((uv_stream_t *)&s->h, on_alloc, on_read);
    s->reading = (rc == 0);
  }
  if (rc < 0) {
    s->err = rc;
    stream_close(s);
  }
}


/* ---------------------------------------------------------------------- */
/* building argv and the environment                                       */
/* ---------------------------------------------------------------------- */

/* The strings are Lua strings kept alive by the table at index `anchor`;
** the arrays are userdata anchored there too, so an error anywhere leaks
** nothing. */
static char **newarray (lua_State *L, int anchor, size_t n) {
  char **a = (char **)lua_newuserdatauv(L, (n + 1) * sizeof(char *), 0);
  luaL_ref(L, anchor);
  a[n] = NULL;
  return a;
}

static const char *anchored (lua_State *L, int anchor) {
  /* the string at the top of the stack, popped and kept in anchor */
  const char *s = lua_tostring(L, -1);
  luaL_ref(L, anchor);
  return s;
}

static char **build_argv (lua_State *L, int t, int anchor) {
  lua_Integer n = luaL_len(L, t), i;
  char **argv;
  luaL_argcheck(L, n >= 1, 1, "'argv' must list at least the program");
  luaL_argcheck(L, n < 65536, 1, "'argv' too long");
  argv = newarray(L, anchor, (size_t)n);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *s;
    if (lua_geti(L, t, i) != LUA_TSTRING)
      luaL_error(L, "bad argument #1 to 'spawn' ('argv[%d]' must be a string)", (int)i);
    s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
      luaL_error(L, "bad argument #1 to 'spawn' ('argv[%d]' contains a zero byte)", (int)i);
    argv[i - 1] = (char *)anchored(L, anchor);
  }
  luaL_argcheck(L, argv[0][0] != '\0', 1, "'argv[1]' is empty");
  return argv;
}

static void check_envkey (lua_State *L, const char *k, size_t klen) {
  if (klen == 0 || strlen(k) != klen || strchr(k, '=') != NULL)
    luaL_error(L, "bad argument #1 to 'spawn' (bad 'env' name '%s')", k);
}

/* env is an array of "K=V" strings or a map {K = V}; returns NULL for nil
** (inherit ours). */
static char **build_env (lua_State *L, int t, int anchor) {
  size_t n = 0, i = 0;
  char **env;
  if (lua_isnil(L, t)) return NULL;
  luaL_argcheck(L, lua_type(L, t) == LUA_TTABLE, 1, "'env' must be a table");
  lua_pushnil(L);
  while (lua_next(L, t)) { n++; lua_pop(L, 1); }
  env = newarray(L, anchor, n);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    size_t klen, vlen;
    const char *k, *v;
    if (lua_type(L, -2) == LUA_TNUMBER) {   /* array form: "K=V" */
      const char *eq;
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad argument #1 to 'spawn' ('env' entries must be \"NAME=value\" strings)");
      v = lua_tolstring(L, -1, &vlen);
      eq = strchr(v, '=');
      if (strlen(v) != vlen || eq == NULL || eq == v)
        luaL_error(L, "bad argument #1 to 'spawn' (bad 'env' entry '%s')", v);
      lua_pushvalue(L, -1);
    }
    else {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "bad argument #1 to 'spawn' ('env' keys must be strings)");
      k = lua_tolstring(L, -2, &klen);
      check_envkey(L, k, klen);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "bad argument #1 to 'spawn' ('env.%s' must be a string)", k);
      lua_pushvalue(L, -1);
      v = lua_tolstring(L, -1, &vlen);   /* converts the copy, not the table value */
      if (strlen(v) != vlen)
        luaL_error(L, "bad argument #1 to 'spawn' ('env.%s' contains a zero byte)", k);
      lua_pushfstring(L, "%s=%s", k, v);
      lua_remove(L, -2);
    }
    env[i++] = (char *)anchored(L, anchor);
    lua_pop(L, 1);   /* the value; keep the key for lua_next */
  }
  return env;
}

/* Find the program as execvp would, so that a missing program is reported
** by spawn itself (ENOENT, EACCES) rather than as a child exiting 127.
** Returns 0 with the path in out, or a negative errno. */
static int resolve_program (const char *file, char **env, char *out, size_t outsz) {
  const char *path = NULL, *p;
  int seen_eacces = 0;
  size_t flen = strlen(file);
  if (strchr(file, '/') != NULL) {
    if (flen >= outsz) return -ENAMETOOLONG;
    memcpy(out, file, flen + 1);
    return 0;   /* exec reports whatever is wrong with it */
  }
  if (env) {   /* the child's PATH if it has one, as newer libuv does */
    char **e;
    for (e = env; *e; e++)
      if (strncmp(*e, "PATH=", 5) == 0) { path = *e + 5; break; }
  }
  if (path == NULL) path = getenv("PATH");
  if (path == NULL) path = "/usr/local/bin:/usr/bin:/bin";
  for (p = path; ; ) {
    const char *end = strchr(p, ':');
    size_t dlen = end ? (size_t)(end - p) : strlen(p);
    struct stat sb;
    if (dlen == 0) {   /* an empty entry is the current directory */
      if (flen + 1 <= outsz) memcpy(out, file, flen + 1);
      else goto next;
    }
    else if (dlen + 1 + flen + 1 <= outsz) {
      memcpy(out, p, dlen);
      out[dlen] = '/';
      memcpy(out + dlen + 1, file, flen + 1);
    }
    else goto next;
    if (stat(out, &sb) == 0 && S_ISREG(sb.st_mode)) {
      if (access(out, X_OK) == 0) return 0;
      seen_eacces = 1;
    }
  next:
    if (end == NULL) break;
    p = end + 1;
  }
  return seen_eacces ? -EACCES : -ENOENT;
}


/* ---------------------------------------------------------------------- */
/* exit and reaping                                                        */
/* ---------------------------------------------------------------------- */

static void child_reaped (ProcState *st, Process *p, int status) {
  record_status(p, status);
  if (!p->detached && --st->nchild == 0) uv_unref((uv_handle_t *)&st->sigchld);
  /* a PTY's end of file was held back until now (see on_read) */
  if (p->pty && p->out[0].eof) stream_close(&p->out[0]);
  dt_signal(&p->base);
  maybe_finish(p);
}

/* SIGCHLD: reap our children, by pid. */
static void on_sigchld (uv_signal_t *h, int signum) {
  ProcState *st = (ProcState *)h->data;
  Process *p, *next;
  (void)signum;
  for (p = st->head; p; p = next) {
    int status;
    pid_t r;
    next = p->next;
    if (p->exited || p->pid == 0) continue;
    do r = waitpid(p->pid, &status, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == p->pid) child_reaped(st, p, status);
  }
}

static ProcState *procstate (dt_loop *loop) {
  ProcState *st = (ProcState *)loop->proc;
  if (st == NULL) {
    st = (ProcState *)calloc(1, sizeof *st);
    if (st == NULL) return NULL;
    loop->proc = st;
  }
  return st;
}

/* The SIGCHLD watcher, started before the first spawn so that no exit can
** be missed.  Unref'd while no child runs: it is not work. */
static int start_sigchld (dt_loop *loop, ProcState *st) {
  int rc;
  if (st->sig_started) return 0;
  uv_signal_init(&loop->uv, &st->sigchld);
  st->sigchld.data = st;
  rc = uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
  if (rc < 0) {
    uv_close((uv_handle_t *)&st->sigchld, NULL);
    return rc;
  }
  uv_unref((uv_handle_t *)&st->sigchld);
  st->sig_started = 1;
  return 0;
}


/* ---------------------------------------------------------------------- */
/* spawning                                                                */
/* ---------------------------------------------------------------------- */

enum { IO_PIPE, IO_NULL, IO_INHERIT, IO_FD, IO_STDOUT };

#define MAX_PASS_FDS 8

typedef struct Spec {
  char **argv, **env;
  const char *cwd;
  char path[PATH_MAX];
  int io[3], fd[3];        /* IO_* and the fd for IO_FD / IO_INHERIT */
  int pty, cols, rows;
  int group, detached;
  int nfds, fds[MAX_PASS_FDS];   /* `fds`: the child's 3, 4, ... */
} Spec;

static void check_io (lua_State *L, Spec *sp, int i, const char *key) {
  static const char *const names[] = {"pipe", "null", "inherit", "stdout", NULL};
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TNIL) {
    sp->io[i] = IO_PIPE;
  }
  else if (t == LUA_TNUMBER) {
    int isint;
    lua_Integer fd = lua_tointegerx(L, -1, &isint);
    if (!isint || fd < 0 || fd > INT_MAX || fcntl((int)fd, F_GETFD) < 0)
      luaL_error(L, "bad argument #1 to 'spawn' ('%s' is not an open descriptor)", key);
    sp->io[i] = IO_FD;
    sp->fd[i] = (int)fd;
  }
  else if (t == LUA_TUSERDATA && luaL_testudata(L, -1, LUA_FILEHANDLE)) {
    /* an open io file: its descriptor (dup2'd into the child at spawn) */
    luaL_Stream *f = (luaL_Stream *)lua_touserdata(L, -1);
    if (f->closef == NULL || f->f == NULL || fileno(f->f) < 0)
      luaL_error(L, "bad argument #1 to 'spawn' ('%s' is a closed file)", key);
    sp->io[i] = IO_FD;
    sp->fd[i] = fileno(f->f);
  }
  else if (t == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    int k;
    for (k = 0; names[k] && strcmp(names[k], s) != 0; k++) ;
    if (names[k] == NULL || (k == 3 && i != 2))
      luaL_error(L, "bad argument #1 to 'spawn' (bad '%s' option '%s')", key, s);
    sp->io[i] = k == 0 ? IO_PIPE : k == 1 ? IO_NULL : k == 2 ? IO_INHERIT : IO_STDOUT;
    sp->fd[i] = i;
  }
  else
    luaL_error(L, "bad argument #1 to 'spawn' ('%s' must be a string, a descriptor or a file)", key);
  lua_pop(L, 1);
}

static int getdim (lua_State *L, int t, const char *key, int def) {
  lua_Integer v;
  int isnum;
  if (lua_getfield(L, t, key) == LUA_TNIL) { lua_pop(L, 1); return def; }
  v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || v < 1 || v > 65535)
    luaL_error(L, "bad argument #1 to 'spawn' ('pty.%s' must be an integer in 1..65535)", key);
  lua_pop(L, 1);
  return (int)v;
}

/* Validate the options table (index 1) into sp.  Raises on misuse, before
** anything is acquired. */
static void read_spec (lua_State *L, Spec *sp, int anchor) {
  static const char *const keys[] = {"argv", "env", "cwd", "stdin", "stdout",
                                     "stderr", "pty", "new_group", "fds", "detached",
                                     NULL};
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {   /* unknown options are typos: say so */
    int k;
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "bad argument #1 to 'spawn' (option names must be strings)");
    for (k = 0; keys[k] && strcmp(keys[k], lua_tostring(L, -2)) != 0; k++) ;
    if (keys[k] == NULL)
      luaL_error(L, "bad argument #1 to 'spawn' (unknown option '%s')", lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  if (lua_getfield(L, 1, "argv") != LUA_TTABLE)
    luaL_error(L, "bad argument #1 to 'spawn' ('argv' must be a table)");
  sp->argv = build_argv(L, lua_gettop(L), anchor);
  lua_pop(L, 1);
  lua_getfield(L, 1, "env");
  sp->env = build_env(L, lua_gettop(L), anchor);
  lua_pop(L, 1);
  sp->cwd = NULL;
  if (lua_getfield(L, 1, "cwd") != LUA_TNIL) {
    size_t len;
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad argument #1 to 'spawn' ('cwd' must be a string)");
    sp->cwd = lua_tolstring(L, -1, &len);
    if (len == 0 || strlen(sp->cwd) != len)
      luaL_error(L, "bad argument #1 to 'spawn' (bad 'cwd')");
    lua_pushvalue(L, -1);
    anchored(L, anchor);
  }
  lua_pop(L, 1);
  sp->group = 1;
  if (lua_getfield(L, 1, "new_group") != LUA_TNIL) {
    if (!lua_isboolean(L, -1))
      luaL_error(L, "bad argument #1 to 'spawn' ('new_group' must be a boolean)");
    sp->group = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  sp->nfds = 0;
  if (lua_getfield(L, 1, "fds") != LUA_TNIL) {
    int t = lua_gettop(L);
    lua_Integer n;
    if (!lua_istable(L, t))
      luaL_error(L, "bad argument #1 to 'spawn' ('fds' must be a list of descriptors)");
    n = luaL_len(L, t);
    if (n > MAX_PASS_FDS)
      luaL_error(L, "bad argument #1 to 'spawn' ('fds' has more than %d descriptors)", MAX_PASS_FDS);
    for (i = 0; i < (int)n; i++) {
      int isint;
      lua_Integer fd;
      lua_rawgeti(L, t, i + 1);
      fd = lua_tointegerx(L, -1, &isint);
      if (!isint || fd < 0 || fd > INT_MAX || fcntl((int)fd, F_GETFD) < 0)
        luaL_error(L, "bad argument #1 to 'spawn' ('fds[%d]' is not an open descriptor)", i + 1);
      sp->fds[sp->nfds++] = (int)fd;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  sp->pty = 0;
  if (lua_getfield(L, 1, "pty") != LUA_TNIL && lua_toboolean(L, -1)) {
    int t = lua_gettop(L);
    sp->pty = 1;
    sp->cols = 80;
    sp->rows = 24;
    if (lua_istable(L, t)) {
      sp->cols = getdim(L, t, "cols", 80);
      sp->rows = getdim(L, t, "rows", 24);
    }
    else if (!lua_isboolean(L, t))
      luaL_error(L, "bad argument #1 to 'spawn' ('pty' must be a table or true)");
    if (sp->nfds > 0)
      luaL_error(L, "bad argument #1 to 'spawn' ('fds' cannot be combined with 'pty')");
    for (i = 0; i < 3; i++) {
      static const char *const io[] = {"stdin", "stdout", "stderr"};
      if (lua_getfield(L, 1, io[i]) != LUA_TNIL)
        luaL_error(L, "bad argument #1 to 'spawn' ('%s' cannot be combined with 'pty')", io[i]);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (!sp->pty) {
    check_io(L, sp, 0, "stdin");
    check_io(L, sp, 1, "stdout");
    check_io(L, sp, 2, "stderr");
  }
  sp->detached = 0;
  if (lua_getfield(L, 1, "detached") != LUA_TNIL) {
    if (!lua_isboolean(L, -1))
      luaL_error(L, "bad argument #1 to 'spawn' ('detached' must be a boolean)");
    sp->detached = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  if (sp->detached) {
    /* a daemon outlives us: a pipe to us would break (SIGPIPE on its first
    ** write after we exit), a terminal would hang it up, and it must lead
    ** its own session so that no signal to our group reaches it */
    if (sp->pty)
      luaL_error(L, "bad argument #1 to 'spawn' ('detached' cannot be combined with 'pty')");
    if (!sp->group)
      luaL_error(L, "bad argument #1 to 'spawn' ('detached' cannot be combined with 'new_group = false')");
    for (i = 0; i < 3; i++)
      if (sp->io[i] == IO_PIPE)
        luaL_error(L, "bad argument #1 to 'spawn' ('detached' needs stdin, stdout and stderr "
                      "that are not pipes: \"null\", a descriptor or a file)");
  }
}

static Process *newproc (lua_State *L, dt_loop *loop) {
  Process *p = (Process *)lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  dt_obj_init(loop, &p->base);
  p->in.p = p->out[0].p = p->out[1].p = p;
  p->in.eof = p->out[0].eof = p->out[1].eof = 1;   /* until a pipe exists */
  luaL_setmetatable(L, PROCESS_TNAME);
  return p;
}

static void close_fds (int *fds, int n) {
  int i;
  for (i = 0; i < n; i++) if (fds[i] >= 0) { close(fds[i]); fds[i] = -1; }
}

/* Where the child's descriptor `target` (0..2) comes from: an fd to dup2,
** or -1 for /dev/null.  A source below 3 is first copied above 2 (closed
** on exec), so that installing one standard descriptor can never clobber
** the source of the next, and dup2 always clears close-on-exec. */
static int stdio_source (Spec *sp, int i, const int *theirs, int *extra) {
  int fd;
  switch (sp->io[i]) {
    case IO_PIPE: fd = theirs[i]; break;
    case IO_NULL: return -1;
    case IO_STDOUT: return 1;   /* installed after stdout: a copy of it */
    default: fd = sp->fd[i];
  }
  if (fd < 3) {
    fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return -2;
    extra[i] = fd;
  }
  return fd;
}

/* Pipe mode through posix_spawn.  Stack top: the new Process. */
static int spawn_pipes (lua_State *L, dt_loop *loop, Process *p, Spec *sp) {
  ProcState *st = procstate(loop);
  int ours[3] = {-1, -1, -1}, theirs[3] = {-1, -1, -1}, extra[3] = {-1, -1, -1};
  int passed[MAX_PASS_FDS];
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t defaults, none;
  pid_t pid;
  int i, rc = 0;
  if (st == NULL) return dt_uvfail(L, UV_ENOMEM);
  rc = start_sigchld(loop, st);
  if (rc < 0) return dt_uvfail(L, rc);
  /* our pipes: both ends close-on-exec; the child gets its end by dup2 */
  for (i = 0; i < 3; i++) {
    int fds[2];
    if (sp->io[i] != IO_PIPE) continue;
    if (pipe2(fds, O_CLOEXEC) < 0) {
      rc = -errno;
      goto done;
    }
    ours[i] = i == 0 ? fds[1] : fds[0];
    theirs[i] = i == 0 ? fds[0] : fds[1];
  }
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  for (i = 0; i < 3 && rc == 0; i++) {
    int src = stdio_source(sp, i, theirs, extra);
    if (src == -2) rc = -errno;
    else if (src == -1)
      rc = -posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    else
      rc = -posix_spawn_file_actions_adddup2(&fa, src, i);
  }
  /* `fds`: copied above every target first (close-on-exec), so that no
  ** dup2 onto 3.. clobbers a later source, and dup2 clears close-on-exec */
  for (i = 0; i < sp->nfds; i++) passed[i] = -1;
  for (i = 0; i < sp->nfds && rc == 0; i++) {
    passed[i] = fcntl(sp->fds[i], F_DUPFD_CLOEXEC, 3 + MAX_PASS_FDS);
    if (passed[i] < 0) rc = -errno;
  }
  for (i = 0; i < sp->nfds && rc == 0; i++)
    rc = -posix_spawn_file_actions_adddup2(&fa, passed[i], 3 + i);
  if (rc == 0 && sp->cwd) rc = -posix_spawn_file_actions_addchdir_np(&fa, sp->cwd);
  if (rc == 0) {
    /* the child starts with default dispositions for the classic signals
    ** (not the RT ones: glibc uses some) and nothing blocked */
    sigemptyset(&defaults);
    for (i = 1; i < 32; i++)
      if (i != SIGKILL && i != SIGSTOP) sigaddset(&defaults, i);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
                                    (sp->group ? POSIX_SPAWN_SETSID : 0));
    /* glibc reports the child's exec (or chdir) failure as the result and
    ** has reaped that child itself */
    rc = -posix_spawn(&pid, sp->path, &fa, &attr, sp->argv, sp->env ? sp->env : environ);
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  for (i = 0; i < sp->nfds; i++) if (passed[i] >= 0) close(passed[i]);
done:
  close_fds(theirs, 3);   /* the child has its copies */
  close_fds(extra, 3);
  if (rc < 0) {
    close_fds(ours, 3);
    return dt_uvfail(L, uv_translate_sys_error(-rc));
  }
  p->pid = pid;
  p->group = sp->group;
  p->detached = sp->detached;
  /* its exit is work -- unless it is a daemon let go */
  if (!p->detached && st->nchild++ == 0) uv_ref((uv_handle_t *)&st->sigchld);
  dt_pin(L, &p->base, -1);
  list_add(st, p);
  if (ours[0] >= 0) stream_open(p, &p->in, ours[0], 0);
  if (ours[1] >= 0) stream_open(p, &p->out[0], ours[1], 1);
  if (ours[2] >= 0) stream_open(p, &p->out[1], ours[2], 1);
  return 1;
}

static void write_int (int fd, int v) {
  ssize_t n;
  do n = write(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
}

/* The forked child of PTY mode: only async-signal-safe calls from here. */
static void pty_child (Spec *sp, int slave, int errfd) {
  struct sigaction sa;
  sigset_t none;
  int i, fd;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (i = 1; i < 32; i++)   /* not the RT signals: glibc uses some */
    if (i != SIGKILL && i != SIGSTOP) sigaction(i, &sa, NULL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  /* keep both descriptors clear of 0..2, which are about to be replaced */
  if (errfd < 3) errfd = fcntl(errfd, F_DUPFD_CLOEXEC, 3);
  if (slave < 3) slave = fcntl(slave, F_DUPFD_CLOEXEC, 3);
  if (errfd < 0 || slave < 0) goto fail;
  if (setsid() < 0) goto fail;
  if (ioctl(slave, TIOCSCTTY, 0) < 0) goto fail;
  for (fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) goto fail;   /* dup2 clears close-on-exec */
  if (sp->cwd && chdir(sp->cwd) < 0) goto fail;
  execve(sp->path, sp->argv, sp->env ? sp->env : environ);
fail:
  write_int(errfd, errno);
  _exit(127);
}

static int open_pty (int *master, int *slave, int cols, int rows) {
  char name[128];
  struct winsize ws;
  int m, s;
  m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) return -errno;
  if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name) != 0)
    goto fail;
  s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) goto fail;
  memset(&ws, 0, sizeof ws);
  ws.ws_col = (unsigned short)cols;
  ws.ws_row = (unsigned short)rows;
  ioctl(m, TIOCSWINSZ, &ws);
  *master = m;
  *slave = s;
  return 0;
fail:
  {
    int e = errno;
    close(m);
    return -e;
  }
}

/* PTY mode: fork/exec ourselves.  Stack top: the new Process. */
static int spawn_pty (lua_State *L, dt_loop *loop, Process *p, Spec *sp) {
  ProcState *st = procstate(loop);
  int master = -1, slave = -1, errpipe[2], rc, e = 0;
  sigset_t all, old;
  pid_t pid;
  ssize_t n;
  if (st == NULL) return dt_uvfail(L, UV_ENOMEM);
  rc = start_sigchld(loop, st);
  if (rc < 0) return dt_uvfail(L, rc);
  rc = open_pty(&master, &slave, sp->cols, sp->rows);
  if (rc < 0) return dt_uvfail(L, uv_translate_sys_error(-rc));
  if (pipe2(errpipe, O_CLOEXEC) < 0) {
    e = errno;
    close(master);
    close(slave);
    return dt_uvfail(L, uv_translate_sys_error(e));
  }
  /* no signal handler may run in the child before it resets them: it would
  ** write into libuv's signal pipe, which the child shares with us */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = fork();
  if (pid == 0) pty_child(sp, slave, errpipe[1]);
  if (pid < 0) e = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(slave);
  close(errpipe[1]);
  if (pid < 0) {
    close(errpipe[0]);
    close(master);
    return dt_uvfail(L, uv_translate_sys_error(e));
  }
  /* EOF: exec succeeded; an int: the errno of what failed in the child */
  do n = read(errpipe[0], &e, sizeof e); while (n < 0 && errno == EINTR);
  close(errpipe[0]);
  if (n == (ssize_t)sizeof e) {
    int status;
    pid_t r;
    do r = waitpid(pid, &status, 0); while (r < 0 && errno == EINTR);
    close(master);
    return dt_uvfail(L, uv_translate_sys_error(e));
  }
  p->pid = pid;
  p->pty = 1;
  p->group = 1;   /* setsid made it a session and group leader */
  if (st->nchild++ == 0) uv_ref((uv_handle_t *)&st->sigchld);   /* its exit is work */
  dt_pin(L, &p->base, -1);
  list_add(st, p);
  stream_open(p, &p->out[0], master, 1);
  return 1;
}

/* core.process.spawn(opts) -> Process | nil, message, code */
static int l_spawn (lua_State *L) {
  dt_loop *loop = dt_loopup(L);
  Spec *sp;
  Process *p;
  ProcState *st;
  int anchor, rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_newtable(L);   /* anchor for every string and array handed to C */
  anchor = lua_gettop(L);
  sp = (Spec *)lua_newuserdatauv(L, sizeof *sp, 0);
  luaL_ref(L, anchor);
  memset(sp, 0, sizeof *sp);
  read_spec(L, sp, anchor);
  if (loop->closing) return dt_fail(L, "event loop is closed", "ECANCELED");
  rc = resolve_program(sp->argv[0], sp->env, sp->path, sizeof sp->path);
  if (rc < 0) {
    lua_pushfstring(L, "%s: %s", sp->argv[0], uv_strerror(uv_translate_sys_error(-rc)));
    return dt_fail(L, lua_tostring(L, -1), uv_err_name(uv_translate_sys_error(-rc)));
  }
  st = procstate(loop);
  if (st == NULL) return dt_uvfail(L, UV_ENOMEM);
  p = newproc(L, loop);
  if (sp->pty) return spawn_pty(L, loop, p, sp);
  rc = spawn_pipes(L, loop, p, sp);
  if (rc == 3) {   /* say which program failed */
    lua_pushfstring(L, "%s: %s", sp->argv[0], lua_tostring(L, -2));
    lua_replace(L, -3);
  }
  return rc;
}


/* core.process.kill(pid, sig) -> true | nil, message, code
** Signal one process that need not be our child: the toolbox daemon ends
** what a PTY, a session or an exec started after it left our child's group
** (lua/dtlocal/toolbox/proc.lua finds those).  Only a single pid: a group
** or -1 (every process we may signal) is never what a caller meant. */
static int l_kill (lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int sig = check_signal(L, 2, SIGTERM);
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "pid must be a positive process id");
  if (kill((pid_t)pid, sig) < 0) return dt_uvfail(L, uv_translate_sys_error(errno));
  lua_pushboolean(L, 1);
  return 1;
}


/* ---------------------------------------------------------------------- */
/* methods                                                                 */
/* ---------------------------------------------------------------------- */

/* p:pid() -> integer */
static int proc_pid (lua_State *L) {
  lua_pushinteger(L, checkproc(L)->pid);
  return 1;
}

/* p:is_pty() -> boolean */
static int proc_is_pty (lua_State *L) {
  lua_pushboolean(L, checkproc(L)->pty);
  return 1;
}

static void write_done (uv_write_t *req, int status) {
  WriteReq *w = (WriteReq *)req;
  Process *p = w->p;
  p->pending -= w->len;
  if (status < 0 && status != UV_ECANCELED && p->write_err == 0)
    p->write_err = status;
  free(w);
  dt_signal(&p->base);   /* a writer may be waiting for the drain */
}

/* p:write(data) -> true | false | nil, message, code
** Queues data for the child's stdin (the PTY in PTY mode).  false: the
** data is queued but more than IN_BOUND bytes wait; wait on p until
** p:pending() drops before writing more. */
static int proc_write (lua_State *L) {
  Process *p = checkproc(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  uv_stream_t *s = input_stream(p);
  WriteReq *w;
  uv_buf_t b;
  int rc;
  if (p->write_err) return dt_uvfail(L, p->write_err);
  if (s == NULL || p->closed)
    return dt_fail(L, "the process's input is closed", "EPIPE");
  if (len > 0) {
    w = (WriteReq *)malloc(sizeof *w + len);
    if (w == NULL) return dt_uvfail(L, UV_ENOMEM);
    w->p = p;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned int)len);
    rc = uv_write(&w->req, s, &b, 1, write_done);
    if (rc < 0) {
      free(w);
      return dt_uvfail(L, rc);
    }
    p->pending += len;
  }
  lua_pushboolean(L, p->pending <= IN_BOUND);
  return 1;
}

/* p:pending() -> bytes of input queued and not yet taken by the child */
static int proc_pending (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkproc(L)->pending);
  return 1;
}

static void shutdown_done (uv_shutdown_t *req, int status) {
  Process *p = (Process *)req->data;
  (void)status;
  stream_close(&p->in);
}

/* p:close_stdin(): EOF on the child's stdin once queued input is written.
** In PTY mode it sends the terminal's end-of-file character (VEOF,
** normally ^D), which ends input for a program reading in canonical mode. */
static int proc_close_stdin (lua_State *L) {
  Process *p = checkproc(L);
  if (p->stdin_closed || p->closed) return 0;
  if (p->pty) {
    struct termios tio;
    char eofc = 4;
    uv_os_fd_t fd;
    if (!p->out[0].open) return 0;
    if (uv_fileno((uv_handle_t *)&p->out[0].h, &fd) == 0 && tcgetattr(fd, &tio) == 0
        && tio.c_cc[VEOF] != _POSIX_VDISABLE)
      eofc = (char)tio.c_cc[VEOF];
    lua_settop(L, 1);
    lua_pushlstring(L, &eofc, 1);
    proc_write(L);
    p->stdin_closed = 1;
    return 0;
  }
  p->stdin_closed = 1;
  if (!p->in.open) return 0;
  p->shutdown_req.data = p;
  if (uv_shutdown(&p->shutdown_req, (uv_stream_t *)&p->in.h, shutdown_done) < 0)
    stream_close(&p->in);
  return 0;
}

/* p:read(stream) -> data | "" (nothing yet: wait on p) | nil (EOF)
** stream is "stdout" (default; the PTY in PTY mode) or "stderr".  A stream
** that is not a pipe reads as EOF.  A read error is returned once as
** nil, message, code. */
static int proc_read (lua_State *L) {
  static const char *const names[] = {"stdout", "stderr", NULL};
  Process *p = checkproc(L);
  Stream *s = &p->out[luaL_checkoption(L, 2, "stdout", names)];
  if (s->buf.len > 0) {
    lua_pushlstring(L, s->buf.data, s->buf.len);
    s->buf.len = 0;
    if (!s->reading && s->open && !s->eof && !p->closed) {   /* room again: resume */
      if (uv_read_start((uv_stream_t *)&s->h, on_alloc, on_read) == 0)
        s->reading = 1;
    }
    return 1;
  }
  if (!s->eof) {
    lua_pushliteral(L, "");
    return 1;
  }
  dt_buf_free(&s->buf);
  if (s->err) {
    int e = s->err;
    s->err = 0;
    return dt_uvfail(L, e);
  }
  luaL_pushfail(L);
  return 1;
}

/* p:eof(stream) -> boolean: everything of the stream has been read */
static int proc_eof (lua_State *L) {
  static const char *const names[] = {"stdout", "stderr", NULL};
  Process *p = checkproc(L);
  Stream *s = &p->out[luaL_checkoption(L, 2, "stdout", names)];
  lua_pushboolean(L, s->eof && s->buf.len == 0);
  return 1;
}

/* p:status() -> nil while running | exit_code, signal_name
** A child killed by a signal has exit_code 128 + the signal's number, as a
** shell would report it, and signal_name such as "SIGKILL". */
static int proc_status (lua_State *L) {
  Process *p = checkproc(L);
  if (!p->exited) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, p->exit_code);
  if (p->term_signal) push_signame(L, p->term_signal);
  else lua_pushnil(L);
  return 2;
}

/* p:kill([sig = "TERM" [, tree = true]]) -> true | nil, message, code
** With tree (and a child leading its own group, the default) the signal
** goes to the whole process group, so grandchildren get it too. */
static int proc_kill (lua_State *L) {
  Process *p = checkproc(L);
  int sig = check_signal(L, 2, SIGTERM);
  int tree = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
  int rc;
  if (p->pid <= 0) return dt_fail(L, "no such process", "ESRCH");
  if (tree && p->group)
    rc = kill(-p->pid, sig) < 0 ? -errno : 0;
  else if (p->exited)   /* reaped: the pid may belong to someone else now */
    rc = -ESRCH;
  else
    rc = kill(p->pid, sig) < 0 ? -errno : 0;
  if (rc < 0) return dt_uvfail(L, uv_translate_sys_error(-rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* p:resize(cols, rows) -> true | nil, message, code   (PTY mode only; the
** child's foreground group gets SIGWINCH) */
static int proc_resize (lua_State *L) {
  Process *p = checkproc(L);
  lua_Integer cols = luaL_checkinteger(L, 2), rows = luaL_checkinteger(L, 3);
  struct winsize ws;
  uv_os_fd_t fd;
  luaL_argcheck(L, p->pty, 1, "not a PTY process");
  luaL_argcheck(L, cols >= 1 && cols <= 65535, 2, "out of range");
  luaL_argcheck(L, rows >= 1 && rows <= 65535, 3, "out of range");
  if (!p->out[0].open || p->closed || uv_fileno((uv_handle_t *)&p->out[0].h, &fd) != 0)
    return dt_fail(L, "the terminal is closed", "EBADF");
  memset(&ws, 0, sizeof ws);
  ws.ws_col = (unsigned short)cols;
  ws.ws_row = (unsigned short)rows;
  if (ioctl(fd, TIOCSWINSZ, &ws) < 0) return dt_uvfail(L, uv_translate_sys_error(errno));
  lua_pushboolean(L, 1);
  return 1;
}

static void kill_running (Process *p) {
  if (p->pid > 0 && !p->exited && !p->detached)
    kill(p->group ? -p->pid : p->pid, SIGKILL);
}

/* p:close(): kill the child's group (SIGKILL) if it still runs (unless it
** is detached), close the pipes and drop buffered output.  Idempotent; also
** __close and __gc.  The object stays pinned until the child is reaped. */
static int proc_close (lua_State *L) {
  Process *p = checkproc(L);
  int i;
  if (p->closed) return 0;
  p->closed = 1;
  if (p->base.loop->closing) return 0;   /* the shutdown did all of it */
  kill_running(p);
  stream_close(&p->in);
  for (i = 0; i < 2; i++) {
    stream_close(&p->out[i]);
    dt_buf_free(&p->out[i].buf);
  }
  return 0;
}

static int proc_gc (lua_State *L) {
  Process *p = checkproc(L);
  proc_close(L);
  /* unpinned means reaped and closed, except at lua_close, when every
  ** object is finalized: then the loop's shutdown still needs the entry
  ** to reap the child (the memory outlives all finalizers) */
  if (p->exited && p->nopen == 0 && p->base.loop->proc)
    list_remove((ProcState *)p->base.loop->proc, p);
  dt_unqueue(&p->base);
  dt_buf_free(&p->out[0].buf);
  dt_buf_free(&p->out[1].buf);
  return 0;
}

static int proc_tostring (lua_State *L) {
  Process *p = checkproc(L);
  lua_pushfstring(L, "%s (pid %d, %s)", PROCESS_TNAME, p->pid,
                  p->exited ? "exited" : p->pid ? "running" : "not started");
  return 1;
}


/* ---------------------------------------------------------------------- */

static void sigchld_closed (uv_handle_t *h) {
  free(h->data);
}

/* At loop teardown: SIGKILL every child still running (its whole group),
** close every handle, and reap -- nothing may outlive the script but a
** detached child, which is left running. */
void dt_process_shutdown (dt_loop *loop) {
  ProcState *st = (ProcState *)loop->proc;
  Process *p;
  int budget_ms = 2000;   /* SIGKILL is prompt; a child stuck in D state is not waited for */
  if (st == NULL) return;
  for (p = st->head; p; p = p->next) kill_running(p);
  for (p = st->head; p; p = p->next) {
    int i;
    stream_close(&p->in);
    for (i = 0; i < 2; i++) stream_close(&p->out[i]);
    while (!p->exited && p->pid > 0 && !p->detached) {   /* a daemon is init's */
      int status;
      pid_t r = waitpid(p->pid, &status, WNOHANG);
      if (r == p->pid || (r < 0 && errno == ECHILD)) {
        record_status(p, r == p->pid ? status : 0);
        break;
      }
      if (budget_ms-- <= 0) break;
      nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
  }
  loop->proc = NULL;
  if (st->sig_started) {
    uv_ref((uv_handle_t *)&st->sigchld);
    uv_close((uv_handle_t *)&st->sigchld, sigchld_closed);
  }
  else
    free(st);
}

void dt_open_process (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"spawn", l_spawn}, {"kill", l_kill}, {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"pid", proc_pid}, {"is_pty", proc_is_pty}, {"write", proc_write},
    {"pending", proc_pending}, {"close_stdin", proc_close_stdin},
    {"read", proc_read}, {"eof", proc_eof}, {"status", proc_status},
    {"kill", proc_kill}, {"resize", proc_resize}, {"close", proc_close},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", proc_gc}, {"__close", proc_close}, {"__tostring", proc_tostring},
    {NULL, NULL}
  };
  /* stack: table, loop */
  dt_newclass(L, PROCESS_TNAME, methods, meta);
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
  lua_pushinteger(L, OUT_BOUND);
  lua_setfield(L, -3, "OUT_BOUND");
  lua_pushinteger(L, IN_BOUND);
  lua_setfield(L, -3, "IN_BOUND");
}
