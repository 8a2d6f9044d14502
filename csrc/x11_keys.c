/*
** x11_keys.c -- the keyboard of daytona.core.x11: key names to keysyms,
** keysyms to keycodes, and XTest key events (d:key, d:press, d:hotkey,
** d:type; x11.c documents the API).
**
** A key name is, in this order: one UTF-8 character ("a", "A", "+", "é";
** its keysym is the character's), an alias of the names Daytona's
** keyboard routes take ("ctrl", "alt", "shift", "cmd"/"super", "enter",
** "esc", "backspace", "pageup", "f5", ..., case-insensitive; the table
** below), or an X keysym name as XStringToKeysym knows it ("Return",
** "Page_Up", "XF86AudioMute").
**
** The keyboard map is read from the server at the start of every call
** (XGetKeyboardMapping, one round trip) rather than through Xlib's cache,
** which goes stale when the map changes and we never read the
** MappingNotify events that would refresh it.  A keysym found at a
** keycode's first level is sent as that key; at the second level, with
** Shift held around it.  A keysym no keycode carries (a character outside
** the current layout, a media key Xvfb's map lacks) is bound for the
** call to a spare keycode, one the map leaves empty, as xdotool does; the
** binding is undone when the call ends, X11_SETTLE_MS after the last
** event, because a client resolves a key event against the map lazily and
** must not find the binding gone already.  A call binds each such keysym
** once, however often the text has it, and waits once.
*/
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ctype.h>

#include <X11/Xlib.h>
#include <X11/keysym.h>
#include <X11/Xutil.h>
#include <X11/extensions/XTest.h>

#include "x11.h"

/* how long a temporary keycode binding outlives the last key event: a
** client reads the map when it handles the event, which a busy machine
** may delay; only calls that bound a keycode wait it */
#define X11_SETTLE_MS 150
/* d:type's longest delay between characters, and its longest text */
#define X11_MAX_DELAY_MS 1000
#define X11_MAX_TEXT (64 * 1024)

static void sleep_ms (long ms) {
  struct timespec ts;
  if (ms <= 0) return;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0) {}
}


/* ---------------------------------------------------------------------- */
/* names                                                                   */
/* ---------------------------------------------------------------------- */

static const struct { const char *name; KeySym sym; } aliases[] = {
  {"ctrl", XK_Control_L}, {"control", XK_Control_L}, {"lctrl", XK_Control_L},
  {"rctrl", XK_Control_R},
  {"alt", XK_Alt_L}, {"lalt", XK_Alt_L}, {"option", XK_Alt_L}, {"ralt", XK_Alt_R},
  {"altgr", XK_ISO_Level3_Shift},
  {"shift", XK_Shift_L}, {"lshift", XK_Shift_L}, {"rshift", XK_Shift_R},
  {"cmd", XK_Super_L}, {"command", XK_Super_L}, {"super", XK_Super_L},
  {"win", XK_Super_L}, {"windows", XK_Super_L}, {"meta", XK_Super_L},
  {"lcmd", XK_Super_L}, {"rcmd", XK_Super_R},
  {"enter", XK_Return}, {"return", XK_Return},
  {"esc", XK_Escape}, {"escape", XK_Escape},
  {"tab", XK_Tab}, {"space", XK_space},
  {"backspace", XK_BackSpace}, {"delete", XK_Delete}, {"del", XK_Delete},
  {"insert", XK_Insert}, {"ins", XK_Insert},
  {"up", XK_Up}, {"down", XK_Down}, {"left", XK_Left}, {"right", XK_Right},
  {"home", XK_Home}, {"end", XK_End},
  {"pageup", XK_Prior}, {"page_up", XK_Prior}, {"pgup", XK_Prior},
  {"pagedown", XK_Next}, {"page_down", XK_Next}, {"pgdn", XK_Next},
  {"capslock", XK_Caps_Lock}, {"caps_lock", XK_Caps_Lock},
  {"numlock", XK_Num_Lock}, {"scrolllock", XK_Scroll_Lock},
  {"printscreen", XK_Print}, {"print", XK_Print}, {"prtsc", XK_Print},
  {"pause", XK_Pause}, {"menu", XK_Menu},
  /* the media keys under the names robotgo (Daytona's daemon) gives them */
  {"audio_mute", 0x1008FF12}, {"audio_vol_down", 0x1008FF11},
  {"audio_vol_up", 0x1008FF13}, {"audio_play", 0x1008FF14},
  {"audio_stop", 0x1008FF15}, {"audio_pause", 0x1008FF31},
  {"audio_prev", 0x1008FF16}, {"audio_next", 0x1008FF17},
  {NULL, 0}
};

/* Decode one UTF-8 character of s[0..len); its length, or 0 if invalid. */
static size_t utf8_next (const unsigned char *s, size_t len, unsigned long *cp) {
  unsigned long c;
  size_t n, i;
  if (len == 0) return 0;
  if (s[0] < 0x80) { *cp = s[0]; return 1; }
  if ((s[0] & 0xe0) == 0xc0) { n = 2; c = s[0] & 0x1f; }
  else if ((s[0] & 0xf0) == 0xe0) { n = 3; c = s[0] & 0x0f; }
  else if ((s[0] & 0xf8) == 0xf0) { n = 4; c = s[0] & 0x07; }
  else return 0;
  if (len < n) return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3f);
  }
  /* overlong forms, surrogates, beyond Unicode */
  if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
      (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
    return 0;
  *cp = c;
  return n;
}

/* The keysym of a character: Latin-1 ones are their own keysym, the rest
** 0x01000000 + the code point (X11's Unicode keysyms). */
static KeySym char_keysym (unsigned long cp) {
  if (cp == '\n' || cp == '\r') return XK_Return;
  if (cp == '\t') return XK_Tab;
  if (cp == '\b') return XK_BackSpace;
  if ((cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xff)) return (KeySym)cp;
  if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return NoSymbol;   /* control */
  return (KeySym)(0x01000000UL | cp);
}

static KeySym name_keysym (const char *name, size_t len) {
  unsigned long cp;
  char low[32];
  size_t i;
  KeySym sym;
  if (len == 0) return NoSymbol;
  if (utf8_next((const unsigned char *)name, len, &cp) == len) return char_keysym(cp);
  if (len < sizeof low) {
    for (i = 0; i < len; i++) low[i] = (char)tolower((unsigned char)name[i]);
    low[len] = '\0';
    for (i = 0; aliases[i].name != NULL; i++)
      if (strcmp(low, aliases[i].name) == 0) return aliases[i].sym;
    /* f1 .. f35 */
    if (low[0] == 'f' && len >= 2 && len <= 3 && isdigit((unsigned char)low[1]) &&
        (len == 2 || isdigit((unsigned char)low[2]))) {
      int n = atoi(low + 1);
      if (n >= 1 && n <= 35) return XK_F1 + (KeySym)(n - 1);
    }
  }
  if (memchr(name, '\0', len) != NULL) return NoSymbol;
  sym = XStringToKeysym(name);
  return sym;
}


/* ---------------------------------------------------------------------- */
/* the map of one call                                                     */
/* ---------------------------------------------------------------------- */

#define MAXBOUND 32

typedef struct kctx {
  X11 *x;
  int min, max, per;
  KeySym *syms;                 /* XGetKeyboardMapping's, XFree */
  int nbound;                   /* temporary bindings of this call */
  int bound[MAXBOUND];
} kctx;

static int kctx_open (kctx *k, X11 *x) {
  memset(k, 0, sizeof *k);
  k->x = x;
  XDisplayKeycodes(x->dpy, &k->min, &k->max);
  k->syms = XGetKeyboardMapping(x->dpy, (KeyCode)k->min, k->max - k->min + 1, &k->per);
  return k->syms != NULL && k->per > 0 ? 0 : -1;
}

static KeySym *kctx_at (kctx *k, int code) {
  return k->syms + (size_t)(code - k->min) * k->per;
}

/* Undo this call's bindings, after letting clients resolve the events
** sent with them. */
static void kctx_unbind (kctx *k) {
  int i;
  if (k->nbound == 0) return;
  XSync(k->x->dpy, False);
  sleep_ms(X11_SETTLE_MS);
  for (i = 0; i < k->nbound; i++) {
    KeySym none = NoSymbol;
    int j;
    XChangeKeyboardMapping(k->x->dpy, k->bound[i], 1, &none, 1);
    for (j = 0; j < k->per; j++) kctx_at(k, k->bound[i])[j] = NoSymbol;
  }
  k->nbound = 0;
  XSync(k->x->dpy, False);
}

static void kctx_close (kctx *k) {
  kctx_unbind(k);
  if (k->syms != NULL) XFree(k->syms);
  k->syms = NULL;
}

/* A keycode the map leaves empty and nothing holds bound, from the top
** (where layouts leave room), or 0. */
static int kctx_spare (kctx *k) {
  int code, j;
  for (code = k->max; code >= k->min; code--) {
    KeySym *s = kctx_at(k, code);
    int used = 0, h;
    for (j = 0; j < k->per && !used; j++) used = s[j] != NoSymbol;
    for (h = 0; h < k->x->nheld && !used; h++) used = k->x->held[h].code == code;
    if (!used) return code;
  }
  return 0;
}

/* Bind sym to a spare keycode on the server (both levels, so Shift does
** not matter); the code or 0 when none is spare. */
static int kctx_bind (kctx *k, KeySym sym) {
  int code = kctx_spare(k), j;
  KeySym two[2];
  if (code == 0) return 0;
  two[0] = two[1] = sym;
  XChangeKeyboardMapping(k->x->dpy, code, 2, two, 1);
  XSync(k->x->dpy, False);
  for (j = 0; j < k->per; j++) kctx_at(k, code)[j] = j < 2 ? sym : NoSymbol;
  return code;
}

/* The keycode carrying sym in the map and whether it needs Shift
** (*shift), or 0. */
static int kctx_find (kctx *k, KeySym sym, int *shift) {
  KeySym lower, upper;
  int code, level;
  *shift = 0;
  for (level = 0; level < 2 && level < k->per; level++)
    for (code = k->min; code <= k->max; code++)
      if (kctx_at(k, code)[level] == sym) {
        *shift = level;
        return code;
      }
  /* an upper-case letter on a key that lists only the lower case */
  XConvertCase(sym, &lower, &upper);
  if (lower != sym)
    for (code = k->min; code <= k->max; code++) {
      KeySym *s = kctx_at(k, code);
      if (s[0] == lower && (k->per < 2 || s[1] == NoSymbol)) {
        *shift = 1;
        return code;
      }
    }
  return 0;
}

/* kctx_find, binding a spare keycode for the call when no key carries
** sym; 0 when none is spare. */
static int kctx_code (kctx *k, KeySym sym, int *shift) {
  int code = kctx_find(k, sym, shift);
  if (code != 0) return code;
  if (k->nbound == MAXBOUND) kctx_unbind(k);
  code = kctx_bind(k, sym);
  if (code == 0 && k->nbound > 0) {
    kctx_unbind(k);
    code = kctx_bind(k, sym);
  }
  if (code != 0) k->bound[k->nbound++] = code;
  return code;
}

static void send_code (X11 *x, int code, int pressed) {
  XTestFakeKeyEvent(x->dpy, (unsigned)code, pressed ? True : False, CurrentTime);
}

/* Press or release sym (with Shift when its level asks); 0 or -1 when no
** keycode can carry it. */
static int send_sym (kctx *k, KeySym sym, int pressed) {
  int shift, code = kctx_code(k, sym, &shift), scode = 0, sshift;
  if (code == 0) return -1;
  if (shift) {
    scode = kctx_code(k, XK_Shift_L, &sshift);
    if (scode == 0) return -1;
  }
  if (pressed) {
    if (scode) send_code(k->x, scode, 1);
    send_code(k->x, code, 1);
  } else {
    send_code(k->x, code, 0);
    if (scode) send_code(k->x, scode, 0);
  }
  return 0;
}

static int no_keycode (lua_State *L, const char *what) {
  return dt_fail(L, lua_pushfstring(L, "no keycode is free to bind %s to", what), "ENOSPC");
}


/* ---------------------------------------------------------------------- */
/* the methods                                                             */
/* ---------------------------------------------------------------------- */

/* Resolve the key name at idx; pushes the failure (4 values) when unknown. */
static int check_name (lua_State *L, int idx, const char *field, KeySym *sym) {
  size_t len;
  const char *name = luaL_checklstring(L, idx, &len);
  *sym = name_keysym(name, len);
  if (*sym == NoSymbol)
    return x11_invalid(L, field, "%s: unknown key name '%s'", field, name);
  return 0;
}

/* d:key(name, pressed): one key event.  A keysym no key carries is bound
** to a spare keycode while it is held (X11.held) and unbound on release. */
int x11_key (lua_State *L) {
  X11 *x = x11_check(L);
  KeySym sym;
  int pressed, r, h, code = 0, shift = 0;
  kctx k;
  if (x == NULL) return 3;
  if ((r = check_name(L, 2, "key", &sym)) != 0) return r;
  pressed = lua_toboolean(L, 3);
  x11_begin(x);
  if (kctx_open(&k, x) != 0) {
    kctx_close(&k);
    return x11_end(L, x, "key") ? dt_fail(L, "key: cannot read the keyboard map", "EIO") : 3;
  }
  for (h = 0; h < x->nheld && x->held[h].sym != sym; h++) {}
  if (h < x->nheld) {
    /* held through a binding of its own */
    send_code(x, x->held[h].code, pressed);
    if (!pressed) {
      KeySym none = NoSymbol;
      XSync(x->dpy, False);
      sleep_ms(X11_SETTLE_MS);
      XChangeKeyboardMapping(x->dpy, x->held[h].code, 1, &none, 1);
      x->held[h] = x->held[--x->nheld];
    }
  } else if (kctx_find(&k, sym, &shift) != 0) {
    if (send_sym(&k, sym, pressed) != 0) {
      kctx_close(&k);
      return no_keycode(L, "Shift");
    }
  } else if (pressed) {
    if (x->nheld == X11_MAXHELD || (code = kctx_bind(&k, sym)) == 0) {
      kctx_close(&k);
      return no_keycode(L, lua_tostring(L, 2));
    }
    x->held[x->nheld].sym = sym;
    x->held[x->nheld].code = code;
    x->nheld++;
    send_code(x, code, 1);
  }
  /* else releasing a key no keycode carries and none holds: nothing is down */
  kctx_close(&k);
  if (!x11_end(L, x, "key")) return 3;
  lua_pushboolean(L, 1);
  return 1;
}

void x11_keys_release (X11 *x) {
  int h;
  KeySym none = NoSymbol;
  if (x->nheld == 0) return;
  for (h = 0; h < x->nheld; h++) send_code(x, x->held[h].code, 0);
  XSync(x->dpy, False);
  sleep_ms(X11_SETTLE_MS);
  for (h = 0; h < x->nheld; h++) XChangeKeyboardMapping(x->dpy, x->held[h].code, 1, &none, 1);
  x->nheld = 0;
  XSync(x->dpy, False);
}

/* Press syms[0..n) in order, then release them in reverse. */
static int chord (lua_State *L, X11 *x, const KeySym *syms, int n, const char *what) {
  kctx k;
  int i, down = 0, failed = 0;
  x11_begin(x);
  if (kctx_open(&k, x) != 0) {
    kctx_close(&k);
    return x11_end(L, x, what) ? dt_fail(L, "cannot read the keyboard map", "EIO") : 3;
  }
  for (i = 0; i < n && !failed; i++) {
    if (send_sym(&k, syms[i], 1) != 0) failed = 1;
    else down++;
  }
  for (i = down - 1; i >= 0; i--) send_sym(&k, syms[i], 0);
  kctx_close(&k);
  if (!x11_end(L, x, what)) return 3;
  if (failed) return no_keycode(L, what);
  lua_pushboolean(L, 1);
  return 1;
}

#define MAXCHORD 16

/* d:press(key, modifiers): the modifiers (a list of key names) held
** around one press and release of key. */
int x11_press (lua_State *L) {
  X11 *x = x11_check(L);
  KeySym syms[MAXCHORD];
  int n = 0, r, i, nmods;
  if (x == NULL) return 3;
  luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  nmods = lua_isnoneornil(L, 3) ? 0 : (int)luaL_len(L, 3);
  if (nmods > MAXCHORD - 1)
    return x11_invalid(L, "modifiers", "modifiers: at most %d keys", MAXCHORD - 1);
  for (i = 1; i <= nmods; i++) {
    lua_geti(L, 3, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "bad argument #2 to 'press' (modifiers[%d] is not a string)", i);
    if ((r = check_name(L, lua_gettop(L), "modifiers", &syms[n++])) != 0) return r;
    lua_pop(L, 1);
  }
  if ((r = check_name(L, 2, "key", &syms[n++])) != 0) return r;
  return chord(L, x, syms, n, "press");
}

/* d:hotkey("ctrl+shift+t"): the keys of a '+'-separated combination
** pressed in order and released in reverse.  Spaces around names are
** ignored; the '+' key itself is an empty name followed by another
** ("ctrl++", "ctrl + + shift", "+"). */
int x11_hotkey (lua_State *L) {
  X11 *x = x11_check(L);
  size_t len, i, b[2 * MAXCHORD + 2], e[2 * MAXCHORD + 2];
  const char *s;
  KeySym syms[MAXCHORD];
  int n = 0, ntok = 0, t;
  if (x == NULL) return 3;
  s = luaL_checklstring(L, 2, &len);
  /* the tokens between '+'s, trimmed */
  for (i = 0;; i++) {
    size_t start = i;
    while (i < len && s[i] != '+') i++;
    if (ntok == 2 * MAXCHORD + 2)
      return x11_invalid(L, "keys", "keys: at most %d keys", MAXCHORD);
    b[ntok] = start;
    e[ntok] = i;
    while (b[ntok] < e[ntok] && isspace((unsigned char)s[b[ntok]])) b[ntok]++;
    while (e[ntok] > b[ntok] && isspace((unsigned char)s[e[ntok] - 1])) e[ntok]--;
    ntok++;
    if (i >= len) break;
  }
  for (t = 0; t < ntok; t++) {
    char name[64];
    size_t nl = e[t] - b[t];
    if (nl == 0) {
      /* two empty names in a row: the '+' between them is the key */
      if (t + 1 >= ntok || e[t + 1] != b[t + 1])
        return x11_invalid(L, "keys", "keys: bad key combination '%s'", s);
      t++;
      name[0] = '+';
      nl = 1;
    } else {
      if (nl >= sizeof name) return x11_invalid(L, "keys", "keys: bad key combination '%s'", s);
      memcpy(name, s + b[t], nl);
    }
    name[nl] = '\0';
    if (n == MAXCHORD) return x11_invalid(L, "keys", "keys: at most %d keys", MAXCHORD);
    syms[n] = name_keysym(name, nl);
    if (syms[n] == NoSymbol) return x11_invalid(L, "keys", "keys: unknown key name '%s'", name);
    n++;
  }
  return chord(L, x, syms, n, "hotkey");
}

/* d:type(text, delay_ms): each character of UTF-8 text pressed and
** released, delay_ms (0..1000, default 0) apart; blocks for the whole
** text.  The text is checked before any key is sent. */
int x11_type (lua_State *L) {
  X11 *x = x11_check(L);
  size_t len, i, n;
  const char *s;
  lua_Integer delay;
  kctx k;
  int failed = 0;
  if (x == NULL) return 3;
  s = luaL_checklstring(L, 2, &len);
  delay = luaL_optinteger(L, 3, 0);
  if (delay < 0 || delay > X11_MAX_DELAY_MS)
    return x11_invalid(L, "delay", "delay: %d ms is outside 0..%d", (int)delay, X11_MAX_DELAY_MS);
  if (len > X11_MAX_TEXT)
    return x11_invalid(L, "text", "text: longer than %d bytes", X11_MAX_TEXT);
  for (i = 0; i < len; i += n) {
    unsigned long cp;
    n = utf8_next((const unsigned char *)s + i, len - i, &cp);
    if (n == 0) return x11_invalid(L, "text", "text: not UTF-8 (at byte %d)", (int)i + 1);
    if (char_keysym(cp) == NoSymbol) {
      char u[8];
      snprintf(u, sizeof u, "%04X", (unsigned)cp);
      return x11_invalid(L, "text", "text: control character U+%s at byte %d cannot be typed",
                         u, (int)i + 1);
    }
  }
  x11_begin(x);
  if (kctx_open(&k, x) != 0) {
    kctx_close(&k);
    return x11_end(L, x, "type") ? dt_fail(L, "cannot read the keyboard map", "EIO") : 3;
  }
  for (i = 0; i < len && !failed && !x->dead; i += n) {
    unsigned long cp;
    KeySym sym;
    n = utf8_next((const unsigned char *)s + i, len - i, &cp);
    if (cp == '\r' && i + 1 < len && s[i + 1] == '\n') continue;   /* CRLF: one Return */
    sym = char_keysym(cp);
    if (send_sym(&k, sym, 1) != 0 || send_sym(&k, sym, 0) != 0) failed = 1;
    if (delay > 0) {
      XFlush(x->dpy);
      sleep_ms((long)delay);
    }
  }
  kctx_close(&k);
  if (!x11_end(L, x, "type")) return 3;
  if (failed) return no_keycode(L, "a character of the text");
  lua_pushboolean(L, 1);
  return 1;
}
