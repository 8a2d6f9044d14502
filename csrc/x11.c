/*
** x11.c -- daytona.core.x11: an X display driven the way a person would,
** for Computer Use (the toolbox daemon's /computeruse routes): pointer
** and keys through XTest, screenshots through XGetImage + libpng/libjpeg,
** the cursor through XFixes, windows through EWMH.  A part of its own
** (daytona/core/x11.so, see dt.h), so only a program that uses it maps
** the X libraries.  Files: x11.c (the Display, errors, pointer, capture,
** windows), x11_keys.c (keyboard), x11_image.c (scale, cursor, encoders).
**
**   local x11 = require("daytona.core").x11
**   local d, msg, code = x11.open(display)  -- ":1"; nil: $DISPLAY
**   d:screen()            -> { width =, height = }
**   d:pointer()           -> x, y
**   d:move(x, y)
**   d:button(button, pressed)           -- 1 left, 2 middle, 3 right, 4..7 wheel
**   d:click(x, y, button, double)       -- button default 1
**   d:drag(x1, y1, x2, y2, button)
**   d:scroll(x, y, direction, amount)   -- "up"|"down"|"left"|"right", amount 1..100
**   d:key(name, pressed)                -- x11_keys.c: the names
**   d:press(key, modifiers)             -- modifiers: list of key names
**   d:hotkey("ctrl+shift+t")
**   d:type(text, delay_ms)              -- UTF-8; delay 0..1000 ms between characters
**   d:capture{ x =, y =, width =, height =, format = "png"|"jpeg",
**              quality = 1..100, scale = 0.1..1.0, cursor = bool }
**                         -> bytes, width, height    (of the encoded image)
**   d:windows()           -> { { id =, title =, x =, y =, width =, height =,
**                                pid =?, active = bool }, ... }
**   d:focus(id)           -> true
**   d:active_window()     -> id, or false when no window has the focus
**   d:window_manager()    -> the running EWMH window manager's name ("Xfwm4"), or false
**   d:close()             -- also __close and __gc; idempotent
**
** Every input method returns true, every method nil, msg, code on an
** operational failure: "EINVAL" (plus a fourth value { field = "x" } naming
** the input that is out of range: a coordinate off the screen, an unknown
** format or key name: the daemon answers 400 naming it), "ENOENT" (no such
** window), "EIO" (an X protocol error; the connection stays usable),
** "ECONNRESET" (the X server went away: the Display is dead, every later
** call fails the same way until it is closed).  Wrong argument types raise.
**
** Blocking: each call is a few X round trips on a local socket (well
** under a millisecond) except d:capture (the image crosses the socket and
** is encoded: milliseconds to tens of them, bench/x11_capture.lua), d:type
** (delay_ms per character) and keys bound to a spare keycode (X11_SETTLE_MS
** at the end, x11_keys.c).  The daemon calls them from its task; nothing
** here touches the event loop.  Xlib has no timeouts: an X server that is
** stopped (SIGSTOP), not dead, blocks the call until it runs again.
**
** Errors.  Xlib reports protocol errors to one process-wide handler and
** ends the process on a lost connection unless told otherwise.  The part
** installs, on first open, an error handler that records the first error
** of the Display it came from (x11_begin .. x11_end bracket each method,
** which XSyncs to collect them) and an IO error handler that only marks the
** Display dead; and for each Display an IO error *exit* handler
** (XSetIOErrorExitHandler, libX11 >= 1.7), which returns instead of
** exiting, so the call in progress comes back with nothing and reports
** ECONNRESET.  A dead Display is only ever closed.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <X11/Xlib.h>
#include <X11/Xatom.h>
#include <X11/Xutil.h>
#include <X11/extensions/XTest.h>
#include <X11/extensions/Xfixes.h>

#include "x11.h"

#define BOX_TNAME "daytona.core.x11.Scratch"
#define MAX_SCROLL 100

static X11 *opened;                  /* the open Displays, for the handlers */
static int handlers_set;

static X11 *find_display (Display *dpy) {
  X11 *x;
  for (x = opened; x != NULL && x->dpy != dpy; x = x->next) {}
  return x;
}

static int on_xerror (Display *dpy, XErrorEvent *e) {
  X11 *x = find_display(dpy);
  if (x != NULL && x->err_code == 0) {
    x->err_code = e->error_code;
    x->err_request = e->request_code;
    x->err_minor = e->minor_code;
  }
  return 0;
}

/* called first on a lost connection; Xlib's own prints a message */
static int on_ioerror (Display *dpy) {
  X11 *x = find_display(dpy);
  if (x != NULL) x->dead = 1;
  return 0;
}

/* called next; Xlib's own calls exit().  Returning leaves Xlib with the
** connection flagged broken: later requests do nothing, replies come back
** empty. */
static void on_ioexit (Display *dpy, void *ud) {
  (void)dpy;
  ((X11 *)ud)->dead = 1;
}

void x11_begin (X11 *x) {
  x->err_code = 0;
  /* events we never asked for still arrive (MappingNotify): drop them so
  ** the queue does not grow */
  while (!x->dead && XPending(x->dpy) > 0) {
    XEvent ev;
    XNextEvent(x->dpy, &ev);
  }
}

int x11_end (lua_State *L, X11 *x, const char *what) {
  if (!x->dead) XSync(x->dpy, False);
  if (x->dead) {
    dt_fail(L, lua_pushfstring(L, "%s: the connection to the X server was lost", what),
            "ECONNRESET");
    return 0;
  }
  if (x->err_code != 0) {
    char text[96];
    XGetErrorText(x->dpy, x->err_code, text, sizeof text);
    dt_fail(L, lua_pushfstring(L, "%s: X error %s (request %d.%d)", what, text,
                               (int)x->err_request, (int)x->err_minor), "EIO");
    x->err_code = 0;
    return 0;
  }
  return 1;
}

int x11_invalid (lua_State *L, const char *field, const char *fmt, ...) {
  va_list ap;
  luaL_pushfail(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushliteral(L, "EINVAL");
  lua_createtable(L, 0, 1);
  lua_pushstring(L, field);
  lua_setfield(L, -2, "field");
  return 4;
}

static X11 *check_any (lua_State *L) {
  return (X11 *)luaL_checkudata(L, 1, X11_TNAME);
}

X11 *x11_check (lua_State *L) {
  X11 *x = check_any(L);
  if (x->dpy == NULL) luaL_error(L, "attempt to use a closed X display");
  if (x->dead) {
    dt_fail(L, "the connection to the X server was lost", "ECONNRESET");
    return NULL;
  }
  return x;
}

/* Read the root's current size into x (the screen can be resized, RandR). */
static int refresh_size (X11 *x) {
  Window r;
  int gx, gy;
  unsigned w, h, bw, depth;
  if (!XGetGeometry(x->dpy, x->root, &r, &gx, &gy, &w, &h, &bw, &depth)) return -1;
  x->width = (int)w;
  x->height = (int)h;
  return 0;
}


/* ---------------------------------------------------------------------- */
/* open / close                                                            */
/* ---------------------------------------------------------------------- */

static void x11_unlink (X11 *x) {
  X11 **p;
  for (p = &opened; *p != NULL; p = &(*p)->next)
    if (*p == x) {
      *p = x->next;
      break;
    }
}

static void shut (X11 *x) {
  if (x->dpy != NULL) {
    if (!x->dead) x11_keys_release(x);
    /* on a dead connection XCloseDisplay only frees: Xlib sends nothing
    ** once the connection is flagged broken */
    XCloseDisplay(x->dpy);
    x->dpy = NULL;
    x11_unlink(x);
  }
}

static int x11_close (lua_State *L) {
  shut(check_any(L));
  return 0;
}

static int l_open (lua_State *L) {
  const char *name = luaL_optstring(L, 1, NULL);
  int ev, er, major = 2, minor = 2;
  Display *dpy;
  X11 *x;
  if (!handlers_set) {
    XSetErrorHandler(on_xerror);
    XSetIOErrorHandler(on_ioerror);
    handlers_set = 1;
  }
  x = (X11 *)lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  dt_obj_init(dt_loopup(L), &x->base);
  luaL_setmetatable(L, X11_TNAME);
  dpy = XOpenDisplay(name);
  if (dpy == NULL) {
    const char *shown = name ? name : getenv("DISPLAY");
    return dt_fail(L, lua_pushfstring(L, "cannot open X display %s", shown ? shown : "(DISPLAY unset)"),
                   "ECONNREFUSED");
  }
  x->dpy = dpy;
  x->next = opened;
  opened = x;
  XSetIOErrorExitHandler(dpy, on_ioexit, x);
  x->screen = DefaultScreen(dpy);
  x->root = RootWindow(dpy, x->screen);
  x->width = DisplayWidth(dpy, x->screen);
  x->height = DisplayHeight(dpy, x->screen);
  if (!XTestQueryExtension(dpy, &ev, &er, &major, &minor)) {
    const char *msg = lua_pushfstring(L, "the X display %s has no XTEST extension",
                                      DisplayString(dpy));
    shut(x);
    return dt_fail(L, msg, "ENOTSUP");
  }
  x->has_xfixes = XFixesQueryExtension(dpy, &ev, &er);
  if (x->has_xfixes) XFixesQueryVersion(dpy, &major, &minor);
  return 1;
}

static int x11_gc (lua_State *L) {
  return x11_close(L);
}

static int x11_tostring (lua_State *L) {
  X11 *x = check_any(L);
  if (x->dpy == NULL) lua_pushliteral(L, X11_TNAME " (closed)");
  else lua_pushfstring(L, X11_TNAME " %s%s", DisplayString(x->dpy), x->dead ? " (dead)" : "");
  return 1;
}


/* ---------------------------------------------------------------------- */
/* screen and pointer                                                      */
/* ---------------------------------------------------------------------- */

static int x11_screen (lua_State *L) {
  X11 *x = x11_check(L);
  if (x == NULL) return 3;
  x11_begin(x);
  refresh_size(x);
  if (!x11_end(L, x, "screen")) return 3;
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, x->width);
  lua_setfield(L, -2, "width");
  lua_pushinteger(L, x->height);
  lua_setfield(L, -2, "height");
  return 1;
}

static int x11_pointer (lua_State *L) {
  X11 *x = x11_check(L);
  Window r, child;
  int rx = 0, ry = 0, wx, wy;
  unsigned mask;
  if (x == NULL) return 3;
  x11_begin(x);
  XQueryPointer(x->dpy, x->root, &r, &child, &rx, &ry, &wx, &wy, &mask);
  if (!x11_end(L, x, "pointer")) return 3;
  lua_pushinteger(L, rx);
  lua_pushinteger(L, ry);
  return 2;
}

/* The point at stack idx, idx+1 checked against the screen's current
** size; pushes the failure (4 values) and returns it when off screen. */
static int check_point (lua_State *L, X11 *x, int idx, const char *fx, const char *fy,
                        int *px, int *py) {
  lua_Integer vx = luaL_checkinteger(L, idx), vy = luaL_checkinteger(L, idx + 1);
  refresh_size(x);
  if (vx < 0 || vx >= x->width)
    return x11_invalid(L, fx, "%s: %I is outside the screen (0..%d)", fx, vx, x->width - 1);
  if (vy < 0 || vy >= x->height)
    return x11_invalid(L, fy, "%s: %I is outside the screen (0..%d)", fy, vy, x->height - 1);
  *px = (int)vx;
  *py = (int)vy;
  return 0;
}

static int check_button (lua_State *L, int idx, int def) {
  lua_Integer b = luaL_optinteger(L, idx, def);
  luaL_argcheck(L, b >= 1 && b <= 7, idx, "button must be 1..7");
  return (int)b;
}

static void motion (X11 *x, int px, int py) {
  XTestFakeMotionEvent(x->dpy, x->screen, px, py, CurrentTime);
}

static void button (X11 *x, int b, int pressed) {
  XTestFakeButtonEvent(x->dpy, (unsigned)b, pressed ? True : False, CurrentTime);
}

static int done (lua_State *L, X11 *x, const char *what) {
  if (!x11_end(L, x, what)) return 3;
  lua_pushboolean(L, 1);
  return 1;
}

static int x11_move (lua_State *L) {
  X11 *x = x11_check(L);
  int px, py, r;
  if (x == NULL) return 3;
  x11_begin(x);
  if ((r = check_point(L, x, 2, "x", "y", &px, &py)) != 0) return r;
  motion(x, px, py);
  return done(L, x, "move");
}

static int x11_button (lua_State *L) {
  X11 *x = x11_check(L);
  int b;
  if (x == NULL) return 3;
  b = check_button(L, 2, 1);
  x11_begin(x);
  button(x, b, lua_toboolean(L, 3));
  return done(L, x, "button");
}

static int x11_click (lua_State *L) {
  X11 *x = x11_check(L);
  int px, py, r, b, dbl, i;
  if (x == NULL) return 3;
  b = check_button(L, 4, 1);
  dbl = lua_toboolean(L, 5);
  x11_begin(x);
  if ((r = check_point(L, x, 2, "x", "y", &px, &py)) != 0) return r;
  motion(x, px, py);
  for (i = 0; i < (dbl ? 2 : 1); i++) {
    button(x, b, 1);
    button(x, b, 0);
  }
  return done(L, x, "click");
}

/* the motion of a drag goes in steps: some clients (toolkits' drag and
** drop) start a drag only after seeing the pointer move with the button
** down, and a single jump can look like a click elsewhere */
#define DRAG_STEPS 10

static int x11_drag (lua_State *L) {
  X11 *x = x11_check(L);
  int x1, y1, x2, y2, r, b, i;
  if (x == NULL) return 3;
  b = check_button(L, 6, 1);
  x11_begin(x);
  if ((r = check_point(L, x, 2, "startX", "startY", &x1, &y1)) != 0) return r;
  if ((r = check_point(L, x, 4, "endX", "endY", &x2, &y2)) != 0) return r;
  motion(x, x1, y1);
  button(x, b, 1);
  XSync(x->dpy, False);
  for (i = 1; i <= DRAG_STEPS; i++) {
    motion(x, x1 + (x2 - x1) * i / DRAG_STEPS, y1 + (y2 - y1) * i / DRAG_STEPS);
    XSync(x->dpy, False);
  }
  button(x, b, 0);
  return done(L, x, "drag");
}

static int x11_scroll (lua_State *L) {
  static const char *const dirs[] = {"up", "down", "left", "right", NULL};
  X11 *x = x11_check(L);
  int px, py, r, b, i;
  size_t d;
  const char *dir;
  lua_Integer amount;
  if (x == NULL) return 3;
  dir = luaL_checkstring(L, 4);
  amount = luaL_optinteger(L, 5, 1);
  for (d = 0; dirs[d] != NULL && strcmp(dirs[d], dir) != 0; d++) {}
  if (dirs[d] == NULL)
    return x11_invalid(L, "direction", "direction: '%s' is not up, down, left or right", dir);
  if (amount < 1 || amount > MAX_SCROLL)
    return x11_invalid(L, "amount", "amount: %I is outside 1..%d", amount, MAX_SCROLL);
  x11_begin(x);
  if ((r = check_point(L, x, 2, "x", "y", &px, &py)) != 0) return r;
  b = 4 + (int)d;                    /* X's wheel buttons: 4 up, 5 down, 6 left, 7 right */
  motion(x, px, py);
  for (i = 0; i < amount; i++) {
    button(x, b, 1);
    button(x, b, 0);
  }
  return done(L, x, "scroll");
}


/* ---------------------------------------------------------------------- */
/* capture                                                                 */
/* ---------------------------------------------------------------------- */

/* The buffers of one capture, in a userdata on the stack so that they are
** freed by its __gc if a Lua error (out of memory) unwinds the call. */
typedef struct scratch {
  XImage *ximg;
  unsigned char *rgb, *scaled;
  dt_buf out;
} scratch;

static void scratch_free (scratch *s) {
  if (s->ximg != NULL) XDestroyImage(s->ximg);
  s->ximg = NULL;
  free(s->rgb);
  s->rgb = NULL;
  free(s->scaled);
  s->scaled = NULL;
  dt_buf_free(&s->out);
}

static int scratch_gc (lua_State *L) {
  scratch_free((scratch *)luaL_checkudata(L, 1, BOX_TNAME));
  return 0;
}

static int mask_shift (unsigned long m) {
  int s = 0;
  if (m == 0) return 0;
  while (!(m & 1)) { m >>= 1; s++; }
  return s;
}

static int mask_bits (unsigned long m) {
  int n = 0;
  while (m) { n += (int)(m & 1); m >>= 1; }
  return n;
}

/* XImage (TrueColor ZPixmap) to 8-bit RGB */
static void to_rgb (XImage *im, unsigned char *out) {
  int w = im->width, h = im->height, x, y;
  if (im->bits_per_pixel == 32 && im->red_mask == 0xff0000 && im->green_mask == 0xff00 &&
      im->blue_mask == 0xff && im->byte_order == LSBFirst) {
    /* the common case (Xvfb's 24-bit depth): BGRX bytes */
    for (y = 0; y < h; y++) {
      const unsigned char *s = (const unsigned char *)im->data + (size_t)y * im->bytes_per_line;
      unsigned char *d = out + (size_t)y * w * 3;
      for (x = 0; x < w; x++, s += 4, d += 3) {
        d[0] = s[2];
        d[1] = s[1];
        d[2] = s[0];
      }
    }
    return;
  }
  {
    unsigned long masks[3] = {im->red_mask, im->green_mask, im->blue_mask};
    int shifts[3], bits[3], k;
    for (k = 0; k < 3; k++) {
      shifts[k] = mask_shift(masks[k]);
      bits[k] = mask_bits(masks[k]);
    }
    for (y = 0; y < h; y++)
      for (x = 0; x < w; x++) {
        unsigned long p = XGetPixel(im, x, y);
        unsigned char *d = out + ((size_t)y * w + x) * 3;
        for (k = 0; k < 3; k++) {
          unsigned long v = (p & masks[k]) >> shifts[k];
          unsigned long max = bits[k] > 0 ? (1UL << bits[k]) - 1 : 1;
          d[k] = (unsigned char)(bits[k] > 0 ? (v * 255 + max / 2) / max : 0);
        }
      }
  }
}

/* an integer option of the capture table at idx */
static int opt_int (lua_State *L, int idx, const char *key, lua_Integer def, lua_Integer *v) {
  int t = lua_getfield(L, idx, key);
  int isint;
  if (t == LUA_TNIL) {
    *v = def;
  } else {
    *v = lua_tointegerx(L, -1, &isint);
    if (!isint) return luaL_error(L, "bad argument #1 to 'capture' (%s must be an integer)", key);
  }
  lua_pop(L, 1);
  return 0;
}

/* an unknown key in the capture table is misuse (a typo would otherwise
** be silently ignored) */
static void check_keys (lua_State *L, int idx) {
  static const char *const known[] = {"x", "y", "width", "height", "format", "quality",
                                      "scale", "cursor", NULL};
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int i;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    for (i = 0; k != NULL && known[i] != NULL && strcmp(known[i], k) != 0; i++) {}
    if (k == NULL || known[i] == NULL)
      luaL_error(L, "bad argument #1 to 'capture' (unknown option '%s')",
                 k ? k : luaL_typename(L, -2));
    lua_pop(L, 1);
  }
}

static int x11_capture (lua_State *L) {
  X11 *x = x11_check(L);
  lua_Integer rx, ry, rw, rh, quality;
  lua_Number scale = 1.0;
  int jpeg = 0, cursor, dw, dh, ok;
  scratch *s;
  x11_rgb img;
  char err[256];
  if (x == NULL) return 3;
  if (lua_isnoneornil(L, 2)) lua_newtable(L);
  else luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  check_keys(L, 2);
  x11_begin(x);
  refresh_size(x);
  if (!x11_end(L, x, "capture")) return 3;
  /* the options, checked before anything is captured */
  opt_int(L, 2, "x", 0, &rx);
  opt_int(L, 2, "y", 0, &ry);
  opt_int(L, 2, "width", x->width - (rx > 0 ? rx : 0), &rw);
  opt_int(L, 2, "height", x->height - (ry > 0 ? ry : 0), &rh);
  opt_int(L, 2, "quality", 85, &quality);
  if (lua_getfield(L, 2, "format") != LUA_TNIL) {
    const char *f = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "bad argument #1 to 'capture' (format must be a string)");
    if (strcmp(f, "jpeg") == 0 || strcmp(f, "jpg") == 0) jpeg = 1;
    else if (strcmp(f, "png") != 0)
      return x11_invalid(L, "format", "format: '%s' is not png or jpeg", f);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "scale") != LUA_TNIL) {
    int isnum;
    scale = lua_tonumberx(L, -1, &isnum);
    if (!isnum) return luaL_error(L, "bad argument #1 to 'capture' (scale must be a number)");
  }
  lua_pop(L, 1);
  lua_getfield(L, 2, "cursor");
  cursor = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (rx < 0 || rx >= x->width)
    return x11_invalid(L, "x", "x: %I is outside the screen (0..%d)", rx, x->width - 1);
  if (ry < 0 || ry >= x->height)
    return x11_invalid(L, "y", "y: %I is outside the screen (0..%d)", ry, x->height - 1);
  if (rw <= 0) return x11_invalid(L, "width", "width: %I is not positive", rw);
  if (rh <= 0) return x11_invalid(L, "height", "height: %I is not positive", rh);
  if (rw > x->width - rx)
    return x11_invalid(L, "width", "width: x %I + width %I is beyond the screen's width %d",
                       rx, rw, x->width);
  if (rh > x->height - ry)
    return x11_invalid(L, "height", "height: y %I + height %I is beyond the screen's height %d",
                       ry, rh, x->height);
  if (quality < 1 || quality > 100)
    return x11_invalid(L, "quality", "quality: %I is outside 1..100", quality);
  if (!(scale >= 0.1 && scale <= 1.0))
    return x11_invalid(L, "scale", "scale: %f is outside 0.1..1.0", scale);
  if (cursor && !x->has_xfixes)
    return dt_fail(L, "capture: the X display has no XFIXES extension to read the cursor from",
                   "ENOTSUP");
  dw = (int)lround((double)rw * scale);
  dh = (int)lround((double)rh * scale);
  if (dw < 1) dw = 1;
  if (dh < 1) dh = 1;

  s = (scratch *)lua_newuserdatauv(L, sizeof *s, 0);      /* 3 */
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, BOX_TNAME);
  x11_begin(x);
  s->ximg = XGetImage(x->dpy, x->root, (int)rx, (int)ry, (unsigned)rw, (unsigned)rh,
                      AllPlanes, ZPixmap);
  if (!x11_end(L, x, "capture")) {
    scratch_free(s);
    return 3;
  }
  if (s->ximg == NULL) return dt_fail(L, "capture: XGetImage failed", "EIO");
  s->rgb = malloc((size_t)rw * rh * 3);
  if (s->rgb == NULL) {
    scratch_free(s);
    return dt_fail(L, "capture: out of memory", "ENOMEM");
  }
  to_rgb(s->ximg, s->rgb);
  XDestroyImage(s->ximg);
  s->ximg = NULL;
  img.px = s->rgb;
  img.width = (int)rw;
  img.height = (int)rh;
  if (cursor) {
    XFixesCursorImage *ci;
    x11_begin(x);
    ci = XFixesGetCursorImage(x->dpy);
    if (ci != NULL) {
      x11_rgb_blend(&img, ci->pixels, ci->width, ci->height,
                    ci->x - ci->xhot - (int)rx, ci->y - ci->yhot - (int)ry);
      XFree(ci);
    }
    if (!x11_end(L, x, "capture")) {
      scratch_free(s);
      return 3;
    }
  }
  if (dw != img.width || dh != img.height) {
    s->scaled = x11_rgb_scale(&img, dw, dh);
    if (s->scaled == NULL) {
      scratch_free(s);
      return dt_fail(L, "capture: out of memory", "ENOMEM");
    }
    img.px = s->scaled;
    img.width = dw;
    img.height = dh;
  }
  ok = jpeg ? x11_jpeg(&img, (int)quality, &s->out, err, sizeof err)
            : x11_png(&img, &s->out, err, sizeof err);
  if (ok != 0) {
    scratch_free(s);
    return dt_fail(L, lua_pushfstring(L, "capture: %s", err), "EIO");
  }
  lua_pushlstring(L, s->out.data, s->out.len);
  scratch_free(s);
  lua_pushinteger(L, img.width);
  lua_pushinteger(L, img.height);
  return 3;
}


/* ---------------------------------------------------------------------- */
/* windows                                                                 */
/* ---------------------------------------------------------------------- */

enum { A_CLIENT_LIST, A_ACTIVE, A_NAME, A_UTF8, A_PID, A_CHECK, A_NATOMS };

static void atoms (X11 *x, Atom *a) {
  static char *names[] = {"_NET_CLIENT_LIST", "_NET_ACTIVE_WINDOW", "_NET_WM_NAME",
                          "UTF8_STRING", "_NET_WM_PID", "_NET_SUPPORTING_WM_CHECK"};
  XInternAtoms(x->dpy, names, A_NATOMS, False, a);
}

/* A property of w as an XFree'd buffer of n items, or NULL (also when the
** window is gone: the error is dropped). */
static unsigned char *prop (X11 *x, Window w, Atom name, Atom type, unsigned long *n,
                            Atom *got_type) {
  Atom t;
  int fmt;
  unsigned long after;
  unsigned char *data = NULL;
  *n = 0;
  if (XGetWindowProperty(x->dpy, w, name, 0, 1 << 16, False, type, &t, &fmt, n, &after,
                         &data) != Success || t == None) {
    if (data != NULL) XFree(data);
    *n = 0;
    return NULL;
  }
  if (got_type != NULL) *got_type = t;
  return data;
}

/* The window manager's client list (1) or the root's mapped children (0). */
static Window *top_windows (X11 *x, Atom *a, unsigned long *n, int *ewmh) {
  unsigned char *d = prop(x, x->root, a[A_CLIENT_LIST], XA_WINDOW, n, NULL);
  Window r, p, *kids = NULL, *out;
  unsigned nk = 0, i;
  *ewmh = 0;
  if (d != NULL && *n > 0) {
    out = malloc(sizeof *out * *n);
    if (out != NULL)
      for (i = 0; i < *n; i++) out[i] = (Window)((unsigned long *)d)[i];
    XFree(d);
    *ewmh = 1;
    return out;
  }
  if (d != NULL) XFree(d);
  *n = 0;
  if (!XQueryTree(x->dpy, x->root, &r, &p, &kids, &nk)) return NULL;
  out = malloc(sizeof *out * (nk ? nk : 1));
  if (out != NULL)
    for (i = 0; i < nk; i++) {
      XWindowAttributes wa;
      x11_begin(x);
      if (XGetWindowAttributes(x->dpy, kids[i], &wa) && wa.map_state == IsViewable &&
          !wa.override_redirect && wa.class == InputOutput)
        out[(*n)++] = kids[i];
    }
  if (kids != NULL) XFree(kids);
  return out;
}

/* The top-level window holding the focus (no window manager), or 0. */
static Window focus_top (X11 *x) {
  Window f, r, p, *kids;
  unsigned nk;
  int revert;
  XGetInputFocus(x->dpy, &f, &revert);
  if (f == None || f == PointerRoot || f == x->root) return 0;
  for (;;) {
    kids = NULL;
    if (!XQueryTree(x->dpy, f, &r, &p, &kids, &nk)) return 0;
    if (kids != NULL) XFree(kids);
    if (p == x->root || p == None) return f;
    f = p;
  }
}

static Window active (X11 *x, Atom *a, int ewmh) {
  unsigned long n;
  unsigned char *d;
  Window w = 0;
  if (!ewmh) return focus_top(x);
  d = prop(x, x->root, a[A_ACTIVE], XA_WINDOW, &n, NULL);
  if (d != NULL && n > 0) w = (Window)((unsigned long *)d)[0];
  if (d != NULL) XFree(d);
  return w;
}

/* Push the title of w: _NET_WM_NAME (UTF-8), else WM_NAME (Latin-1 as
** STRING is: converted to UTF-8), else "". */
static void push_title (lua_State *L, X11 *x, Window w, Atom *a) {
  unsigned long n, i;
  Atom t = None;
  unsigned char *d = prop(x, w, a[A_NAME], a[A_UTF8], &n, NULL);
  luaL_Buffer b;
  if (d != NULL) {
    lua_pushlstring(L, (const char *)d, n);
    XFree(d);
    return;
  }
  d = prop(x, w, XA_WM_NAME, AnyPropertyType, &n, &t);
  if (d == NULL) {
    lua_pushliteral(L, "");
    return;
  }
  if (t != XA_STRING) {
    lua_pushlstring(L, (const char *)d, n);
    XFree(d);
    return;
  }
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    if (d[i] < 0x80) luaL_addchar(&b, (char)d[i]);
    else {
      luaL_addchar(&b, (char)(0xc0 | (d[i] >> 6)));
      luaL_addchar(&b, (char)(0x80 | (d[i] & 0x3f)));
    }
  }
  XFree(d);
  luaL_pushresult(&b);
}

/* The buffers of d:windows, freed by __gc when a Lua error unwinds it. */
typedef struct winlist {
  Window *w;
} winlist;

static int winlist_gc (lua_State *L) {
  winlist *l = (winlist *)lua_touserdata(L, 1);
  free(l->w);
  l->w = NULL;
  return 0;
}

#define WINLIST_TNAME "daytona.core.x11.WindowList"

static int x11_windows (lua_State *L) {
  X11 *x = x11_check(L);
  Atom a[A_NATOMS];
  unsigned long n, i;
  int ewmh, k = 0;
  Window act;
  winlist *l;
  if (x == NULL) return 3;
  lua_settop(L, 1);
  l = (winlist *)lua_newuserdatauv(L, sizeof *l, 0);       /* 2 */
  l->w = NULL;
  luaL_setmetatable(L, WINLIST_TNAME);
  x11_begin(x);
  atoms(x, a);
  l->w = top_windows(x, a, &n, &ewmh);
  if (x->dead) {
    x11_end(L, x, "windows");
    return 3;
  }
  if (l->w == NULL && n > 0) return dt_fail(L, "windows: out of memory", "ENOMEM");
  x11_begin(x);
  act = active(x, a, ewmh);
  lua_createtable(L, (int)n, 0);                           /* 3 */
  for (i = 0; i < n; i++) {
    Window w = l->w[i], child;
    XWindowAttributes wa;
    int ax, ay;
    unsigned long np;
    unsigned char *pd;
    /* a window may be gone by now: its errors are dropped, it is skipped */
    x11_begin(x);
    if (!XGetWindowAttributes(x->dpy, w, &wa) ||
        !XTranslateCoordinates(x->dpy, w, x->root, 0, 0, &ax, &ay, &child))
      continue;
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, (lua_Integer)w);
    lua_setfield(L, -2, "id");
    push_title(L, x, w, a);
    lua_setfield(L, -2, "title");
    /* the outer corner, as the window was placed: its border included */
    lua_pushinteger(L, ax - wa.border_width);
    lua_setfield(L, -2, "x");
    lua_pushinteger(L, ay - wa.border_width);
    lua_setfield(L, -2, "y");
    lua_pushinteger(L, wa.width);
    lua_setfield(L, -2, "width");
    lua_pushinteger(L, wa.height);
    lua_setfield(L, -2, "height");
    pd = prop(x, w, a[A_PID], XA_CARDINAL, &np, NULL);
    if (pd != NULL) {
      if (np > 0) {
        lua_pushinteger(L, (lua_Integer)((unsigned long *)pd)[0]);
        lua_setfield(L, -2, "pid");
      }
      XFree(pd);
    }
    lua_pushboolean(L, act != 0 && act == w);
    lua_setfield(L, -2, "active");
    lua_rawseti(L, 3, ++k);
  }
  free(l->w);
  l->w = NULL;
  x11_begin(x);                      /* the errors of vanished windows */
  if (!x11_end(L, x, "windows")) return 3;
  lua_settop(L, 3);
  return 1;
}

static Window check_window (lua_State *L, int idx) {
  lua_Integer id = luaL_checkinteger(L, idx);
  luaL_argcheck(L, id > 0 && id <= 0x1fffffff, idx, "not a window id");
  return (Window)id;
}

/* d:focus(id): through the window manager when one runs (EWMH's
** _NET_ACTIVE_WINDOW request: it raises and focuses, asynchronously);
** without one, raise it and set the input focus directly. */
static int x11_focus (lua_State *L) {
  X11 *x = x11_check(L);
  Window w;
  XWindowAttributes wa;
  Atom a[A_NATOMS];
  unsigned long n;
  unsigned char *d;
  if (x == NULL) return 3;
  w = check_window(L, 2);
  x11_begin(x);
  if (!XGetWindowAttributes(x->dpy, w, &wa) || x->err_code != 0) {
    XSync(x->dpy, False);
    x->err_code = 0;
    if (x->dead) return x11_end(L, x, "focus") ? 0 : 3;
    return dt_fail(L, lua_pushfstring(L, "focus: no window %I", (lua_Integer)w), "ENOENT");
  }
  atoms(x, a);
  d = prop(x, x->root, a[A_CLIENT_LIST], XA_WINDOW, &n, NULL);
  if (d != NULL) {
    XEvent ev;
    XFree(d);
    memset(&ev, 0, sizeof ev);
    ev.xclient.type = ClientMessage;
    ev.xclient.window = w;
    ev.xclient.message_type = a[A_ACTIVE];
    ev.xclient.format = 32;
    ev.xclient.data.l[0] = 2;        /* source: a pager, which WMs obey */
    ev.xclient.data.l[1] = CurrentTime;
    XSendEvent(x->dpy, x->root, False, SubstructureRedirectMask | SubstructureNotifyMask, &ev);
  } else {
    XRaiseWindow(x->dpy, w);
    if (wa.map_state == IsViewable) XSetInputFocus(x->dpy, w, RevertToPointerRoot, CurrentTime);
  }
  return done(L, x, "focus");
}

/* d:window_manager(): the name an EWMH window manager gives itself
** (_NET_SUPPORTING_WM_CHECK's window, which must point at itself: a
** dead manager's stale property points elsewhere or nowhere), or false. */
static int x11_window_manager (lua_State *L) {
  X11 *x = x11_check(L);
  Atom a[A_NATOMS];
  unsigned long n;
  unsigned char *d;
  Window w = 0, self = 0;
  if (x == NULL) return 3;
  x11_begin(x);
  atoms(x, a);
  d = prop(x, x->root, a[A_CHECK], XA_WINDOW, &n, NULL);
  if (d != NULL && n > 0) w = (Window)((unsigned long *)d)[0];
  if (d != NULL) XFree(d);
  if (w != 0) {
    d = prop(x, w, a[A_CHECK], XA_WINDOW, &n, NULL);
    if (d != NULL && n > 0) self = (Window)((unsigned long *)d)[0];
    if (d != NULL) XFree(d);
  }
  if (w == 0 || self != w) {
    x11_begin(x);                    /* a stale window's errors */
    if (!x11_end(L, x, "window_manager")) return 3;
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 1);
  push_title(L, x, w, a);
  x11_begin(x);
  if (!x11_end(L, x, "window_manager")) return 3;
  lua_settop(L, 2);
  return 1;
}

static int x11_active_window (lua_State *L) {
  X11 *x = x11_check(L);
  Atom a[A_NATOMS];
  unsigned long n;
  unsigned char *d;
  Window w;
  if (x == NULL) return 3;
  x11_begin(x);
  atoms(x, a);
  d = prop(x, x->root, a[A_CLIENT_LIST], XA_WINDOW, &n, NULL);
  if (d != NULL) XFree(d);
  w = active(x, a, d != NULL);
  if (!x11_end(L, x, "active_window")) return 3;
  if (w == 0) lua_pushboolean(L, 0);
  else lua_pushinteger(L, (lua_Integer)w);
  return 1;
}


/* ---------------------------------------------------------------------- */
/* registration                                                            */
/* ---------------------------------------------------------------------- */

static void dt_open_x11 (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"open", l_open},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", x11_close}, {"screen", x11_screen}, {"pointer", x11_pointer},
    {"move", x11_move}, {"button", x11_button}, {"click", x11_click},
    {"drag", x11_drag}, {"scroll", x11_scroll},
    {"key", x11_key}, {"press", x11_press}, {"hotkey", x11_hotkey}, {"type", x11_type},
    {"capture", x11_capture}, {"windows", x11_windows}, {"focus", x11_focus},
    {"active_window", x11_active_window}, {"window_manager", x11_window_manager},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", x11_gc}, {"__close", x11_close}, {"__tostring", x11_tostring},
    {NULL, NULL}
  };
  /* stack: table, loop */
  dt_newclass(L, X11_TNAME, methods, meta);
  lua_pop(L, 1);
  luaL_newmetatable(L, BOX_TNAME);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, WINLIST_TNAME);
  lua_pushcfunction(L, winlist_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  dt_setfuncs(L, funcs);
}

/* daytona.core.x11: its own shared object, so that only a program that
** drives a display maps libX11, libXtst, libXfixes, libpng and libjpeg. */
LUAMOD_API int luaopen_daytona_core_x11 (lua_State *L) {
  return dt_open_part(L, "x11", dt_open_x11, NULL);
}
