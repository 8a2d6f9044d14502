/*
** dtlua.c -- the dtlua interpreter: lua.c's command line, with the daytona
** module preloaded and every chunk run as a task of the scheduler.
**
**   dtlua [options] [script [args]]
**     -e stat   execute string 'stat'
**     -i        enter interactive mode after executing 'script'
**     -l mod    require library 'mod' into global 'mod'
**     -l g=mod  require library 'mod' into global 'g'
**     -v        show version information
**     -E        ignore environment variables (LUA_INIT, LUA_PATH, LUA_CPATH)
**     -W        turn warnings on
**     --        stop handling options
**     -         execute stdin and stop handling options
**
** The same binary is `dtlocal` (by the name it is run under): then it runs
** the local sandbox server's command line, lua/dtlocal/cli.lua.
**
** A chunk run as a task may call anything in the SDK straight-line: every
** wait yields to the scheduler.  The process exits when the chunk and every
** task it spawned have finished (a server it started keeps it running).  An
** uncaught error in the chunk is printed at once with its traceback, the
** tasks it left (servers, background work) are cancelled, their cleanup
** bounded by the scheduler's cleanup_timeout, and dtlua exits 1.  Ctrl-C
** cancels all tasks (closing their connections and processes) and exits
** 130; SIGTERM the same with 143, unless the script watches SIGTERM itself.
*/
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "dtlua.h"

/*
** Line editing and history for the REPL, as lua.c's LUA_USE_READLINE (the
** Makefile defines DTLUA_USE_READLINE when readline's headers are there).
** Without readline, lines are read with getline: any length, no editing.
*/
#if defined(DTLUA_USE_READLINE)
#include <readline/readline.h>
#include <readline/history.h>
#endif

#define LUA_VER "5.4"

static const char *progname = "dtlua";

static void l_message (const char *pname, const char *msg) {
  if (pname) fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

static int msghandler (lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int docall (lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return status;
}

/*
** The message a failed dotask leaves when it has printed the error itself
** (report then prints nothing more).
*/
static char reported;

/* Report a non-ok status with the message on top of the stack. */
static int report (lua_State *L, int status) {
  if (status != LUA_OK) {
    if (lua_touserdata(L, -1) == &reported) {
      lua_pop(L, 1);
      return status;
    }
    {
      const char *msg = lua_tostring(L, -1);
      if (msg == NULL) msg = luaL_typename(L, -1);
      l_message(progname, msg);
    }
    lua_pop(L, 1);
  }
  return status;
}

/* scheduler.shutdown(): cancel the tasks a failed chunk left (a server it
** started, background tasks) and wait, bounded by cleanup_timeout, for
** their cleanup. */
static void shutdown_tasks (lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "daytona.runtime.scheduler");
  if (docall(L, 1, 1) != LUA_OK) { report(L, LUA_ERRRUN); return; }
  lua_getfield(L, -1, "shutdown");
  lua_remove(L, -2);
  report(L, docall(L, 0, 0));
}

/*
** Run the function below its narg arguments on the stack as the scheduler's
** main task, driving the loop until every task is done.  Leaves nres results
** (or an error message) like docall.  A failure of the main task is printed
** at once, before the tasks it left are cancelled and their cleanup waited
** for (as lua exits at an error, not when its servers stop), and leaves
** &reported.  Ctrl-C (SIGINT) and SIGTERM set *interrupted to the exit
** status, 130 or 143.
*/
static int dotask (lua_State *L, int narg, int nres, int *interrupted) {
  int status, base, n;
  base = lua_gettop(L) - narg;   /* index of the function */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "daytona.runtime.scheduler");
  status = docall(L, 1, 1);
  if (status != LUA_OK) return status;
  lua_getfield(L, -1, "run");
  lua_remove(L, -2);
  lua_insert(L, base);           /* run, fn, args... */
  status = docall(L, narg + 1, LUA_MULTRET);
  if (status != LUA_OK) return status;
  n = lua_gettop(L) - base + 1;  /* ok, results... */
  if (!lua_toboolean(L, base)) {
    /* false, err, traceback | false, "interrupted", "INT"|"TERM" */
    if (n >= 2 && lua_type(L, base + 1) == LUA_TSTRING &&
        strcmp(lua_tostring(L, base + 1), "interrupted") == 0) {
      int term = n >= 3 && lua_type(L, base + 2) == LUA_TSTRING &&
                 strcmp(lua_tostring(L, base + 2), "TERM") == 0;
      *interrupted = term ? 128 + 15 : 128 + 2;
      lua_settop(L, base - 1);
      lua_pushliteral(L, "interrupted");
      return LUA_ERRRUN;
    }
    if (n >= 3 && lua_isstring(L, base + 2)) {
      lua_pushvalue(L, base + 2);          /* the task's traceback */
    } else {
      lua_pushvalue(L, base + 1);
      msghandler(L);
    }
    lua_replace(L, base);
    lua_settop(L, base);
    report(L, LUA_ERRRUN);
    shutdown_tasks(L);
    lua_pushlightuserdata(L, &reported);
    return LUA_ERRRUN;
  }
  lua_remove(L, base);
  n--;
  if (nres != LUA_MULTRET) lua_settop(L, base - 1 + nres);
  (void)n;
  return LUA_OK;
}

static int dochunk (lua_State *L, int status, int *interrupted) {
  if (status == LUA_OK) status = dotask(L, 0, 0, interrupted);
  return report(L, status);
}

static int dostring (lua_State *L, const char *s, const char *name, int *intr) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name), intr);
}

static void print_version (void) {
  printf("dtlua %s (%s)\n", DTLUA_VERSION, LUA_RELEASE);
  fflush(stdout);
}

static void print_usage (const char *badoption) {
  fprintf(stderr, "%s: ", progname);
  if (badoption[1] == 'e' || badoption[1] == 'l')
    fprintf(stderr, "'%s' needs argument\n", badoption);
  else
    fprintf(stderr, "unrecognized option '%s'\n", badoption);
  fprintf(stderr,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n", progname);
}

/* arg table: script at index 0, options before it negative, args after it */
static void createargtable (lua_State *L, char **argv, int argc, int script) {
  int i, narg;
  if (script == argc) script = 0;
  narg = argc - (script + 1);
  lua_createtable(L, narg, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int pushargs (lua_State *L) {
  int i, n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE)
    luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -i);
  return n;
}

static int handle_script (lua_State *L, char **argv, int *intr) {
  int status;
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL;
  status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = pushargs(L);
    status = dotask(L, n, 0, intr);
  }
  return report(L, status);
}

#define has_error 1
#define has_i 2
#define has_v 4
#define has_e 8
#define has_E 16

static int collectargs (char **argv, int *first) {
  int args = 0, i;
  if (argv[0] != NULL) {
    if (argv[0][0]) progname = argv[0];
  } else {
    *first = -1;
    return 0;
  }
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args;
    switch (argv[i][1]) {
      case '-':
        if (argv[i][2] != '\0') return has_error;
        *first = i + 1;
        return args;
      case '\0':
        return args;
      case 'E':
        if (argv[i][2] != '\0') return has_error;
        args |= has_E;
        break;
      case 'W':
        if (argv[i][2] != '\0') return has_error;
        break;
      case 'i':
        args |= has_i;  /* -i implies -v */
        /* FALLTHROUGH */
      case 'v':
        if (argv[i][2] != '\0') return has_error;
        args |= has_v;
        break;
      case 'e':
        args |= has_e;
        /* FALLTHROUGH */
      case 'l':
        if (argv[i][2] == '\0') {
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return has_error;
        }
        break;
      default:
        return has_error;
    }
  }
  *first = 0;
  return args;
}

static int dolibrary (lua_State *L, char *globname, int *intr) {
  int status;
  char *modname = strchr(globname, '=');
  if (modname == NULL) modname = globname;
  else { *modname = '\0'; modname++; }
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  status = docall(L, 1, 1);
  (void)intr;
  if (status == LUA_OK) lua_setglobal(L, globname);
  return report(L, status);
}

static int runargs (lua_State *L, char **argv, int n, int *intr) {
  int i;
  for (i = 1; i < n; i++) {
    int option = argv[i][1];
    switch (option) {
      case 'e':
      case 'l': {
        int status;
        char *extra = argv[i] + 2;
        if (*extra == '\0') extra = argv[++i];
        status = (option == 'e') ? dostring(L, extra, "=(command line)", intr)
                                 : dolibrary(L, extra, intr);
        if (status != LUA_OK) return 0;
        break;
      }
      case 'W':
        lua_warning(L, "@on", 0);
        break;
    }
  }
  return 1;
}

static int handle_luainit (lua_State *L, int *intr) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dochunk(L, luaL_loadfile(L, init + 1), intr);
  return dostring(L, init, name, intr);
}

/* --- REPL: lua.c's, with readline on a terminal --------------------------- */

/* lines kept in the history file, as bash's default HISTFILESIZE */
#define HISTORY_MAX 500

struct repl {
  int edit;             /* reading with readline (stdin is a terminal) */
  char *histfile;       /* ~/.dtlua_history, or NULL: no history kept */
  char *buf;            /* getline's buffer, when not editing */
  size_t bufsize;
};

static struct repl repl;

static void repl_open (void) {
  repl.edit = 0;
  repl.histfile = NULL;
#if defined(DTLUA_USE_READLINE)
  if (isatty(0)) {
    const char *home = getenv("HOME");
    repl.edit = 1;
    rl_readline_name = "dtlua";      /* for $if dtlua in ~/.inputrc */
    if (home != NULL && home[0] != '\0') {
      size_t n = strlen(home) + sizeof "/.dtlua_history";
      if ((repl.histfile = malloc(n)) != NULL) {
        snprintf(repl.histfile, n, "%s/.dtlua_history", home);
        using_history();
        (void)read_history(repl.histfile);   /* none yet is fine */
      }
    }
  }
#endif
}

static void repl_close (void) {
  free(repl.histfile);
  repl.histfile = NULL;
  free(repl.buf);
  repl.buf = NULL;
  repl.bufsize = 0;
}

/* The prompt: _PROMPT / _PROMPT2 if set, as lua.c. */
static const char *get_prompt (lua_State *L, int firstline) {
  if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL)
    return firstline ? "> " : ">> ";
  return luaL_tolstring(L, -1, NULL);   /* leaves a string on the stack */
}

/* Keep a complete input in the history, appending it to the file at once
** so that a session ended by a signal loses nothing. */
static void saveline (const char *line) {
#if defined(DTLUA_USE_READLINE)
  if (!repl.edit || line[0] == '\0') return;
  add_history(line);
  if (repl.histfile != NULL) {
    FILE *f = fopen(repl.histfile, "a");   /* append_history needs it to exist */
    if (f != NULL) fclose(f);
    if (append_history(1, repl.histfile) == 0)
      (void)history_truncate_file(repl.histfile, HISTORY_MAX);
  }
#else
  (void)line;
#endif
}

/* Read a line into a buffer the caller frees; NULL at end of input. */
static char *readone (const char *prompt) {
  ssize_t n;
#if defined(DTLUA_USE_READLINE)
  if (repl.edit) return readline(prompt);
#endif
  fputs(prompt, stdout);
  fflush(stdout);
  n = getline(&repl.buf, &repl.bufsize, stdin);
  if (n < 0) return NULL;
  return strdup(repl.buf);
}

/* Push the next line (without its newline); 0 at end of input. */
static int pushline (lua_State *L, int firstline) {
  char *b;
  size_t l;
  int top = lua_gettop(L);
  b = readone(get_prompt(L, firstline));
  lua_settop(L, top);                       /* the prompt */
  if (b == NULL) return 0;
  l = strlen(b);
  if (l > 0 && b[l - 1] == '\n') b[--l] = '\0';
  if (firstline && b[0] == '=') lua_pushfstring(L, "return %s", b + 1);
  else lua_pushlstring(L, b, l);
  free(b);
  return 1;
}

static int incomplete (lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    if (lmsg >= 5 && strcmp(msg + lmsg - 5, "<eof>") == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

static int loadline (lua_State *L) {
  int status;
  size_t len;
  const char *line;
  lua_settop(L, 0);
  if (!pushline(L, 1)) return -1;
  line = lua_tolstring(L, 1, &len);
  {
    const char *retline = lua_pushfstring(L, "return %s;", line);
    status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
      lua_remove(L, -2);
      saveline(line);
      lua_remove(L, 1);
      return status;
    }
    lua_pop(L, 2);
  }
  /* an incomplete chunk asks for more lines (">>") until it loads or fails;
  ** the whole of it goes into the history as one entry, as in lua.c */
  for (;;) {
    line = lua_tolstring(L, 1, &len);
    status = luaL_loadbuffer(L, line, len, "=stdin");
    if (!incomplete(L, status) || !pushline(L, 0)) {
      saveline(line);
      break;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
  lua_remove(L, 1);
  return status;
}

static void l_print (lua_State *L) {
  int n = lua_gettop(L);
  if (n > 0) {
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, 1);
    if (lua_pcall(L, n, 0, 0) != LUA_OK)
      l_message(progname, lua_pushfstring(L, "error calling 'print' (%s)",
                                           lua_tostring(L, -1)));
  }
}

static void doREPL (lua_State *L) {
  int status;
  const char *oldprogname = progname;
  progname = NULL;
  repl_open();
  while ((status = loadline(L)) != -1) {
    int intr = 0;
    if (status == LUA_OK) status = dotask(L, 0, LUA_MULTRET, &intr);
    if (status == LUA_OK) l_print(L);
    else report(L, status);
  }
  lua_settop(L, 0);
  repl_close();
  fputs("\n", stdout);
  fflush(stdout);
  progname = oldprogname;
}

/* --- paths ---------------------------------------------------------------- */

/* Put <prefix>/share/lua/5.4 and <prefix>/lib/lua/5.4 first on the search
** paths, where <prefix> is the directory above the one holding this binary:
** the same layout in the build tree and after `make install`.
** A toolbox daemon in a sandbox whose root is a container image runs from
** the host's runtime bound at another path, started through the host's
** dynamic loader (so /proc/self/exe is the loader): dtlocal then gives the
** prefix and the Lua directory in DTLUA_PREFIX and DTLUA_LUA_DIR, and where
** the host's /usr is (DTLUA_SYSTEM_ROOT: the default /usr/... entries of the
** search paths move beneath it), which are taken out of the environment at
** once, so nothing the daemon starts in the sandbox inherits them. */
static void set_paths (lua_State *L) {
  char exe[PATH_MAX], luadir[PATH_MAX];
  const char *given = getenv("DTLUA_PREFIX"), *given_lua = getenv("DTLUA_LUA_DIR");
  const char *sysroot = getenv("DTLUA_SYSTEM_ROOT");
  char *slash;
  luadir[0] = '\0';
  if (sysroot != NULL && sysroot[0] == '/') {
    const char *const which[] = { "path", "cpath" };
    int k;
    lua_getglobal(L, "package");
    for (k = 0; k < 2; k++) {
      lua_getfield(L, -1, which[k]);
      lua_pushfstring(L, ";%s", lua_tostring(L, -1));
      lua_pushfstring(L, ";%s/usr/", sysroot);
      luaL_gsub(L, lua_tostring(L, -2), ";/usr/", lua_tostring(L, -1));
      lua_pushstring(L, lua_tostring(L, -1) + 1);      /* without the leading ';' */
      lua_setfield(L, -6, which[k]);
      lua_pop(L, 4);
    }
    lua_pop(L, 1);
  }
  unsetenv("DTLUA_SYSTEM_ROOT");
  if (given_lua != NULL && given_lua[0] == '/' && strlen(given_lua) < sizeof luadir)
    strcpy(luadir, given_lua);
  unsetenv("DTLUA_LUA_DIR");
  if (given != NULL && given[0] == '/' && strlen(given) < sizeof exe) {
    strcpy(exe, given);
    unsetenv("DTLUA_PREFIX");
  }
  else {
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    unsetenv("DTLUA_PREFIX");
    if (n <= 0) return;
    exe[n] = '\0';
    if ((slash = strrchr(exe, '/')) == NULL) return;
    *slash = '\0';                                   /* .../bin */
    if ((slash = strrchr(exe, '/')) == NULL) return;
    *slash = '\0';                                   /* prefix */
  }
  /* a prefix too long for PATH_MAX: keep the default package.path */
  if (luadir[0] == '\0' &&
      snprintf(luadir, sizeof luadir, "%s/share/lua/" LUA_VER, exe) >= (int)sizeof luadir)
    return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", luadir, luadir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/lib/lua/" LUA_VER "/?.so;%s", exe, lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 1);
  /* where the sandbox launcher lives, for the local server */
  lua_pushfstring(L, "%s/libexec/dtlua", exe);
  lua_setfield(L, -2, "dtlua_libexec");
  lua_pushstring(L, exe);
  lua_setfield(L, -2, "dtlua_prefix");
  lua_pop(L, 1);
}

static int is_dtlocal (const char *argv0) {
  const char *base = strrchr(argv0, '/');
  base = base ? base + 1 : argv0;
  return strcmp(base, "dtlocal") == 0;
}

/* --- main ----------------------------------------------------------------- */

struct smain {
  int argc;
  char **argv;
  int status;       /* process exit status */
};

static int pmain (lua_State *L) {
  struct smain *sm = (struct smain *)lua_touserdata(L, 1);
  int argc = sm->argc;
  char **argv = sm->argv;
  int script = 0, args, intr = 0;
  sm->status = EXIT_FAILURE;
  luaL_checkversion(L);
  luaL_openlibs(L);
  /* the core's base is linked in: no dlopen at start-up; its parts
  ** (core.http, core.ws, core.server) load on first use from the cpath
  ** entry set_paths puts first, <prefix>/lib/lua/5.4 */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_daytona_core);
  lua_setfield(L, -2, "daytona.core");
  lua_pop(L, 1);

  if (is_dtlocal(argv[0])) {
    set_paths(L);
    createargtable(L, argv, argc, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "dtlocal.cli");
    if (report(L, docall(L, 1, 1)) != LUA_OK) return 0;
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_getglobal(L, "arg");
    if (report(L, dotask(L, 1, 1, &intr)) != LUA_OK) {
      sm->status = intr ? intr : EXIT_FAILURE;
      return 0;
    }
    sm->status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_SUCCESS;
    return 0;
  }

  args = collectargs(argv, &script);
  if (args == has_error) {
    print_usage(argv[script]);
    return 0;
  }
  if (args & has_v) print_version();
  if (args & has_E) {
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  set_paths(L);
  createargtable(L, argv, argc, script);
  lua_gc(L, LUA_GCGEN, 0, 0);
  /* daytona preloaded as a global, like the standard libraries */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "daytona");
  if (report(L, docall(L, 1, 1)) != LUA_OK) return 0;
  lua_setglobal(L, "daytona");
  if (!(args & has_E)) {
    if (handle_luainit(L, &intr) != LUA_OK) goto failed;
  }
  if (!runargs(L, argv, script > 0 ? script : argc, &intr)) goto failed;
  if (script > 0 && argv[script] != NULL) {
    if (handle_script(L, argv + script, &intr) != LUA_OK) goto failed;
  }
  if (args & has_i) doREPL(L);
  else if (script < 1 && !(args & (has_e | has_v))) {
    if (isatty(0)) {
      print_version();
      doREPL(L);
    } else {
      if (dochunk(L, luaL_loadfile(L, NULL), &intr) != LUA_OK) goto failed;
    }
  }
  sm->status = EXIT_SUCCESS;
  return 0;
failed:
  sm->status = intr ? intr : EXIT_FAILURE;
  return 0;
}

int main (int argc, char **argv) {
  int status;
  struct smain sm = {argc, argv, EXIT_FAILURE};
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    l_message(argv[0], "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_pushcfunction(L, &pmain);
  lua_pushlightuserdata(L, &sm);
  status = lua_pcall(L, 1, 1, 0);
  if (status != LUA_OK) {
    report(L, status);
    sm.status = EXIT_FAILURE;
  }
  lua_close(L);
  return sm.status;
}
