/*
** x11_image.c -- the image side of daytona.core.x11's d:capture: the
** cursor drawn over a capture, scaling, and encoding as PNG (libpng) or
** JPEG (libjpeg, the turbo flavour on Debian).  Pure functions over
** 8-bit RGB buffers (x11.h): no X, no Lua, so each is easy to reason about
** and every buffer has one owner.
*/
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <jpeglib.h>

#include "x11.h"

/* zlib level of PNG screenshots.  Screen content (flat areas, text) packs
** well at any level: a 1024x768 screen of terminal text takes 16 ms and
** 70 KB at 1, 25 ms and 41 KB at zlib's default 6 (bench/x11_capture.lua,
** built with -DX11_PNG_LEVEL=6).  The 30 KB cost less than the 9 ms on
** any link a screenshot crosses to an agent. */
#ifndef X11_PNG_LEVEL
#define X11_PNG_LEVEL 1
#endif


/* ---------------------------------------------------------------------- */
/* cursor                                                                  */
/* ---------------------------------------------------------------------- */

void x11_rgb_blend (x11_rgb *img, const unsigned long *argb, int w, int h, int x, int y) {
  int row, col;
  for (row = 0; row < h; row++) {
    int ty = y + row;
    if (ty < 0 || ty >= img->height) continue;
    for (col = 0; col < w; col++) {
      int tx = x + col;
      /* XFixes hands 32-bit pixels in longs: only the low 32 bits count */
      unsigned long p = argb[(size_t)row * w + col] & 0xffffffffUL;
      unsigned a = (p >> 24) & 0xff, k;
      unsigned char *d;
      if (tx < 0 || tx >= img->width || a == 0) continue;
      d = img->px + ((size_t)ty * img->width + tx) * 3;
      /* premultiplied: out = src + dst * (1 - alpha) */
      for (k = 0; k < 3; k++) {
        unsigned s = (p >> (16 - 8 * k)) & 0xff;
        unsigned v = s + (d[k] * (255 - a) + 127) / 255;
        d[k] = (unsigned char)(v > 255 ? 255 : v);
      }
    }
  }
}


/* ---------------------------------------------------------------------- */
/* scaling                                                                 */
/* ---------------------------------------------------------------------- */

#define WBITS 12                     /* weights in units of 1/4096 */
#define WONE (1 << WBITS)

/* The contributions of src samples to each of dst outputs (dst <= src):
** output i covers [i*f, (i+1)*f) of the source, f = src/dst, and each
** source sample counts by the part of it inside, the weights of one
** output summing to exactly WONE.  start[i], count[i], w[i*maxn + k]. */
typedef struct contrib {
  int *start, *count, *w;
  int maxn;
} contrib;

static int contrib_make (contrib *c, int src, int dst) {
  double f = (double)src / dst;
  int i;
  c->maxn = (int)ceil(f) + 2;
  c->start = malloc(sizeof(int) * (size_t)dst);
  c->count = malloc(sizeof(int) * (size_t)dst);
  c->w = malloc(sizeof(int) * (size_t)dst * (size_t)c->maxn);
  if (c->start == NULL || c->count == NULL || c->w == NULL) return -1;
  for (i = 0; i < dst; i++) {
    double a = i * f, b = (i + 1) * f;
    int j0 = (int)floor(a), j1 = (int)ceil(b), n = 0, sum = 0, big = 0, j;
    int *w = c->w + (size_t)i * c->maxn;
    if (j1 > src) j1 = src;
    if (j1 <= j0) j1 = j0 + 1;
    for (j = j0; j < j1 && n < c->maxn; j++) {
      double lo = a > j ? a : j, hi = b < j + 1 ? b : j + 1;
      int wt = (int)lround((hi - lo) / f * WONE);
      if (wt < 0) wt = 0;
      w[n] = wt;
      sum += wt;
      if (wt > w[big]) big = n;
      n++;
    }
    w[big] += WONE - sum;            /* rounding: the largest absorbs it */
    c->start[i] = j0;
    c->count[i] = n;
  }
  return 0;
}

static void contrib_free (contrib *c) {
  free(c->start);
  free(c->count);
  free(c->w);
}

unsigned char *x11_rgb_scale (const x11_rgb *src, int dw, int dh) {
  contrib cx = {0}, cy = {0};
  unsigned short *tmp = NULL;
  unsigned *acc = NULL;
  unsigned char *out = NULL;
  size_t rowlen = (size_t)dw * 3;
  int x, y, n;
  if (contrib_make(&cx, src->width, dw) != 0 || contrib_make(&cy, src->height, dh) != 0)
    goto done;
  tmp = malloc(sizeof *tmp * rowlen * src->height);
  acc = malloc(sizeof *acc * rowlen);
  out = malloc(rowlen * dh);
  if (tmp == NULL || acc == NULL || out == NULL) {
    free(out);
    out = NULL;
    goto done;
  }
  /* horizontal pass into tmp, values scaled by 256 (8 bits of fraction) */
  for (y = 0; y < src->height; y++) {
    const unsigned char *row = src->px + (size_t)y * src->width * 3;
    unsigned short *t = tmp + (size_t)y * rowlen;
    for (x = 0; x < dw; x++) {
      const int *w = cx.w + (size_t)x * cx.maxn;
      const unsigned char *s = row + (size_t)cx.start[x] * 3;
      unsigned r = 0, g = 0, b = 0;
      for (n = 0; n < cx.count[x]; n++, s += 3) {
        r += (unsigned)w[n] * s[0];
        g += (unsigned)w[n] * s[1];
        b += (unsigned)w[n] * s[2];
      }
      t[x * 3] = (unsigned short)((r + (1u << (WBITS - 9))) >> (WBITS - 8));
      t[x * 3 + 1] = (unsigned short)((g + (1u << (WBITS - 9))) >> (WBITS - 8));
      t[x * 3 + 2] = (unsigned short)((b + (1u << (WBITS - 9))) >> (WBITS - 8));
    }
  }
  /* vertical pass, a whole row at a time (the inner loop runs along
  ** memory); 4096 * 65280, the weights summing to 4096, fits 32 bits */
  for (y = 0; y < dh; y++) {
    const int *w = cy.w + (size_t)y * cy.maxn;
    unsigned char *o = out + (size_t)y * rowlen;
    size_t i;
    memset(acc, 0, sizeof *acc * rowlen);
    for (n = 0; n < cy.count[y]; n++) {
      const unsigned short *t = tmp + (size_t)(cy.start[y] + n) * rowlen;
      unsigned wn = (unsigned)w[n];
      for (i = 0; i < rowlen; i++) acc[i] += wn * t[i];
    }
    for (i = 0; i < rowlen; i++) {
      unsigned v = (acc[i] + (1u << (WBITS + 7))) >> (WBITS + 8);
      o[i] = (unsigned char)(v > 255 ? 255 : v);
    }
  }
done:
  free(tmp);
  free(acc);
  contrib_free(&cx);
  contrib_free(&cy);
  return out;
}


/* ---------------------------------------------------------------------- */
/* PNG                                                                     */
/* ---------------------------------------------------------------------- */

typedef struct png_ctx {
  dt_buf *out;
  char *err;
  size_t errsize;
} png_ctx;

static void png_on_write (png_structp png, png_bytep data, png_size_t n) {
  png_ctx *c = png_get_io_ptr(png);
  if (dt_buf_add(c->out, data, n) != 0) png_error(png, "out of memory");
}

static void png_on_flush (png_structp png) {
  (void)png;
}

static void png_on_error (png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  snprintf(c->err, c->errsize, "PNG: %s", msg);
  png_longjmp(png, 1);
}

static void png_on_warning (png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

int x11_png (const x11_rgb *img, dt_buf *out, char *err, size_t errsize) {
  png_ctx ctx = {out, err, errsize};
  png_structp png;
  png_infop info = NULL;
  int y;
  png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
  if (png == NULL) {
    snprintf(err, errsize, "PNG: out of memory");
    return -1;
  }
  info = png_create_info_struct(png);
  if (info == NULL || setjmp(png_jmpbuf(png))) {
    if (info == NULL) snprintf(err, errsize, "PNG: out of memory");
    png_destroy_write_struct(&png, &info);
    return -1;
  }
  png_set_write_fn(png, &ctx, png_on_write, png_on_flush);
  png_set_compression_level(png, X11_PNG_LEVEL);
  png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (y = 0; y < img->height; y++)
    png_write_row(png, img->px + (size_t)y * img->width * 3);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return 0;
}


/* ---------------------------------------------------------------------- */
/* JPEG                                                                    */
/* ---------------------------------------------------------------------- */

typedef struct jpeg_err {
  struct jpeg_error_mgr mgr;
  jmp_buf jmp;
  char *err;
  size_t errsize;
} jpeg_err;

/* libjpeg's default error_exit calls exit(): ours jumps back instead */
static void jpeg_on_error (j_common_ptr cinfo) {
  jpeg_err *e = (jpeg_err *)cinfo->err;
  char msg[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, msg);
  snprintf(e->err, e->errsize, "JPEG: %s", msg);
  longjmp(e->jmp, 1);
}

static void jpeg_on_message (j_common_ptr cinfo) {
  (void)cinfo;                       /* warnings are not printed on stderr */
}

int x11_jpeg (const x11_rgb *img, int quality, dt_buf *out, char *err, size_t errsize) {
  struct jpeg_compress_struct cinfo;
  jpeg_err jerr;
  /* jpeg_mem_dest's buffer, grown by libjpeg with malloc; volatile since
  ** a longjmp may come back after libjpeg changed it */
  unsigned char *volatile mem = NULL;
  unsigned long volatile size = 0;
  int y;
  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jpeg_on_error;
  jerr.mgr.output_message = jpeg_on_message;
  jerr.err = err;
  jerr.errsize = errsize;
  if (setjmp(jerr.jmp)) {
    jpeg_destroy_compress(&cinfo);
    free(mem);
    return -1;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, (unsigned char **)&mem, (unsigned long *)&size);
  cinfo.image_width = (JDIMENSION)img->width;
  cinfo.image_height = (JDIMENSION)img->height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  for (y = 0; y < img->height; y++) {
    JSAMPROW row = img->px + (size_t)y * img->width * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  if (dt_buf_add(out, mem, size) != 0) {
    free(mem);
    snprintf(err, errsize, "JPEG: out of memory");
    return -1;
  }
  free(mem);
  return 0;
}
