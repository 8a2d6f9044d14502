/*
** x11.h -- shared declarations of the daytona.core.x11 part (x11.c,
** x11_keys.c, x11_image.c).  The part's API is described in x11.c.
*/
#ifndef DT_X11_H
#define DT_X11_H

#include <X11/Xlib.h>

#include "dt.h"

#pragma GCC visibility push(hidden)

#define X11_TNAME "daytona.core.x11.Display"

/* the most keycodes one Display keeps remapped at once (x11_keys.c): a
** key held down through d:key(name, true) whose keysym no key carries */
#define X11_MAXHELD 8

/* The Display userdata. */
typedef struct X11 {
  dt_obj base;               /* unused: a Display is not waited on */
  Display *dpy;              /* NULL once closed */
  Window root;
  int screen;
  int width, height;
  int dead;                  /* the connection is gone (IO error) */
  /* the first X protocol error since x11_begin (x11.c's handler) */
  int err_code;
  unsigned char err_request, err_minor;
  char err_text[128];
  struct X11 *next;          /* the list of open displays the handlers search */
  int has_xfixes;
  /* keycodes remapped for held keys: keysym -> keycode (x11_keys.c) */
  struct { unsigned long sym; int code; } held[X11_MAXHELD];
  int nheld;
} X11;

/* --- x11.c -------------------------------------------------------------- */

/* The Display at stack index 1, open and alive: raises on a closed one,
** returns NULL (pushing nil, msg, code: 3 values) on a dead connection. */
X11 *x11_check (lua_State *L);

/* Clear the recorded error before a group of requests. */
void x11_begin (X11 *x);

/* XSync and return whether no error (protocol or IO) happened since
** x11_begin; on failure pushes nil, "<what>: <X error>", code and
** returns 0 (the caller returns 3). */
int x11_end (lua_State *L, X11 *x, const char *what);

/* nil, msg, "EINVAL", { field = field }: an input out of range; returns 4 */
int x11_invalid (lua_State *L, const char *field, const char *fmt, ...);

/* --- x11_keys.c ----------------------------------------------------------- */

/* d:key, d:press, d:hotkey, d:type */
int x11_key (lua_State *L);
int x11_press (lua_State *L);
int x11_hotkey (lua_State *L);
int x11_type (lua_State *L);

/* Release every key d:key left down and restore the keycodes it remapped
** (before the connection closes). */
void x11_keys_release (X11 *x);

/* --- x11_image.c ---------------------------------------------------------- */

/* An 8-bit RGB image, rows top to bottom, 3 bytes a pixel. */
typedef struct x11_rgb {
  unsigned char *px;
  int width, height;
} x11_rgb;

/* Draw an ARGB (premultiplied, as XFixes gives it) image of w x h whose
** top-left corner is at (x, y) in img's coordinates, clipped. */
void x11_rgb_blend (x11_rgb *img, const unsigned long *argb, int w, int h, int x, int y);

/* A copy of src scaled to w x h by area averaging (a box filter: each
** output pixel the mean of the source area it covers), or NULL when out
** of memory. */
unsigned char *x11_rgb_scale (const x11_rgb *src, int w, int h);

/* Encode img as PNG or JPEG (quality 1..100) into out (a fresh buffer the
** caller frees, also on failure); 0 or -1 with a message in err. */
int x11_png (const x11_rgb *img, dt_buf *out, char *err, size_t errsize);
int x11_jpeg (const x11_rgb *img, int quality, dt_buf *out, char *err, size_t errsize);

#pragma GCC visibility pop

#endif
