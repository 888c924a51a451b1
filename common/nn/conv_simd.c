#include "nn/conv_simd.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define CONV_SIMD 1
#include <immintrin.h>
#define CONV_TARGET __attribute__((target("avx512f")))
#else
#define CONV_SIMD 0
#endif

/* Output positions per forward tile, along one output row: 14 of them
 * (7 positions x 2 vectors) keep enough independent FMAs in flight, and 7
 * divides the common row widths 7, 14 and 28. */
#define FORWARD_TILE 7
/* Rows of the weight gradient (C*k*k entries) per tile. */
#define WEIGHT_TILE 8

static bool simd_enabled = true;

bool fedc_conv_simd_available(const fedc_conv_shape *s)
{
#if CONV_SIMD
  /* With fewer than 3/4 of the lanes used, OpenBLAS is faster. */
  return simd_enabled && __builtin_cpu_supports("avx512f") &&
         (size_t)FORWARD_TILE * s->stride <= FEDC_CONV_SIMD_SLACK &&
         4 * (size_t)s->out_c >= 3 * fedc_conv_simd_width(s->out_c);
#else
  (void)s;
  return false;
#endif
}

void fedc_conv_simd_enable(bool enable)
{
  simd_enabled = enable;
}

size_t fedc_conv_simd_width(uint32_t out_c)
{
  return ((size_t)out_c + FEDC_CONV_SIMD_LANES - 1) / FEDC_CONV_SIMD_LANES *
         FEDC_CONV_SIMD_LANES;
}

void fedc_conv_simd_transpose(const fedc_conv_shape *s, const float *w,
                              float *wt)
{
  size_t rows = (size_t)s->in_c * s->kernel * s->kernel;
  size_t width = fedc_conv_simd_width(s->out_c);

  memset(wt, 0, rows * width * sizeof(float));
  for (uint32_t o = 0; o < s->out_c; o++)
    for (size_t r = 0; r < rows; r++)
      wt[r * width + o] = w[o * rows + r];
}

#if CONV_SIMD

/* tile[t][0..31] = sum over (c, kh, kw) of the input under output position
 * t of the row at x (already offset to the tile's first position) times
 * wt[(c, kh, kw)][0..31]. Positions past the row's end read the slack or
 * the next row; their sums are not stored. */
CONV_TARGET static void forward_tile(const fedc_conv_shape *s,
                                     const float *x, const float *wt,
                                     size_t width, float *tile)
{
  const size_t plane = (size_t)s->pad_h * s->pad_w, stride = s->stride;
  const uint32_t kernel = s->kernel;
  __m512 acc[FORWARD_TILE][2];

#pragma GCC unroll 8
  for (int t = 0; t < FORWARD_TILE; t++)
    acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  for (uint32_t c = 0; c < s->in_c; c++) {
    for (uint32_t kh = 0; kh < kernel; kh++) {
      const float *src = x + c * plane + kh * (size_t)s->pad_w;

      for (uint32_t kw = 0; kw < kernel; kw++, wt += width) {
        __m512 w0 = _mm512_loadu_ps(wt), w1 = _mm512_loadu_ps(wt + 16);

#pragma GCC unroll 8
        for (int t = 0; t < FORWARD_TILE; t++) {
          __m512 v = _mm512_set1_ps(src[kw + t * stride]);

          acc[t][0] = _mm512_fmadd_ps(v, w0, acc[t][0]);
          acc[t][1] = _mm512_fmadd_ps(v, w1, acc[t][1]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < FORWARD_TILE; t++) {
    _mm512_storeu_ps(tile + t * FEDC_CONV_SIMD_LANES, acc[t][0]);
    _mm512_storeu_ps(tile + t * FEDC_CONV_SIMD_LANES + 16, acc[t][1]);
  }
}

/* Stores positions [0, n) of a tile into y (already offset to the first
 * position) for channels o0 .. o0 + 31 below out_c, adding the bias. */
static void store_tile(const fedc_conv_shape *s, const float *tile,
                       uint32_t n, uint32_t o0, const float *bias, bool relu,
                       float *y)
{
  size_t area = (size_t)s->out_h * s->out_w;
  uint32_t end = s->out_c - o0 < FEDC_CONV_SIMD_LANES
                     ? s->out_c - o0 : FEDC_CONV_SIMD_LANES;

  for (uint32_t o = 0; o < end; o++) {
    float b = bias != NULL ? bias[o0 + o] : 0.0f;
    float *dst = y + (o0 + o) * area;

    for (uint32_t t = 0; t < n; t++) {
      float v = tile[t * FEDC_CONV_SIMD_LANES + o] + b;

      dst[t] = relu && !(v > 0) ? 0.0f : v;
    }
  }
}

CONV_TARGET void fedc_conv_simd_forward(const fedc_conv_shape *s,
                                        const float *xpad, const float *wt,
                                        const float *bias, bool relu,
                                        float *y)
{
  size_t width = fedc_conv_simd_width(s->out_c);
  float tile[FORWARD_TILE * FEDC_CONV_SIMD_LANES];

  for (uint32_t o0 = 0; o0 < s->out_c; o0 += FEDC_CONV_SIMD_LANES) {
    for (uint32_t oh = 0; oh < s->out_h; oh++) {
      const float *row = xpad + (size_t)oh * s->stride * s->pad_w;

      for (uint32_t ow = 0; ow < s->out_w; ow += FORWARD_TILE) {
        uint32_t n = s->out_w - ow < FORWARD_TILE ? s->out_w - ow
                                                   : FORWARD_TILE;

        forward_tile(s, row + (size_t)ow * s->stride, wt + o0, width, tile);
        store_tile(s, tile, n, o0, bias, relu,
                   y + (size_t)oh * s->out_w + ow);
      }
    }
  }
}

/* dwt rows r < n (of WEIGHT_TILE, at offsets off[r] into the padded image)
 * += sum over output positions of the input each reads times gt. */
CONV_TARGET static void weight_tile(const fedc_conv_shape *s,
                                    const float *xpad, const size_t *off,
                                    uint32_t n, const float *gt,
                                    size_t width, float *dwt, size_t ld)
{
  const size_t stride = s->stride, row_step = stride * s->pad_w;
  __m512 acc[WEIGHT_TILE][2];

#pragma GCC unroll 8
  for (int r = 0; r < WEIGHT_TILE; r++) {
    acc[r][0] = _mm512_loadu_ps(dwt + (size_t)r * ld);
    acc[r][1] = _mm512_loadu_ps(dwt + (size_t)r * ld + 16);
  }
  for (uint32_t oh = 0; oh < s->out_h; oh++) {
    const float *x = xpad + oh * row_step;

    for (uint32_t ow = 0; ow < s->out_w; ow++, gt += width) {
      __m512 g0 = _mm512_loadu_ps(gt), g1 = _mm512_loadu_ps(gt + 16);
      const float *at = x + ow * stride;

#pragma GCC unroll 8
      for (int r = 0; r < WEIGHT_TILE; r++) {
        __m512 v = _mm512_set1_ps(at[off[r]]);

        acc[r][0] = _mm512_fmadd_ps(v, g0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(v, g1, acc[r][1]);
      }
    }
  }
  for (uint32_t r = 0; r < n; r++) {
    _mm512_storeu_ps(dwt + (size_t)r * ld, acc[r][0]);
    _mm512_storeu_ps(dwt + (size_t)r * ld + 16, acc[r][1]);
  }
}

CONV_TARGET void fedc_conv_simd_weight_grad(const fedc_conv_shape *s,
                                            const float *xpad,
                                            const float *gt, float *dwt)
{
  size_t rows = (size_t)s->in_c * s->kernel * s->kernel;
  size_t width = fedc_conv_simd_width(s->out_c);
  size_t kk = (size_t)s->kernel * s->kernel;
  float spare[WEIGHT_TILE * FEDC_CONV_SIMD_LANES];

  for (size_t o0 = 0; o0 < width; o0 += FEDC_CONV_SIMD_LANES) {
    for (size_t r0 = 0; r0 < rows; r0 += WEIGHT_TILE) {
      size_t off[WEIGHT_TILE];
      uint32_t n = rows - r0 < WEIGHT_TILE ? (uint32_t)(rows - r0)
                                           : WEIGHT_TILE;
      float *dst = dwt + r0 * width + o0;

      for (uint32_t r = 0; r < WEIGHT_TILE; r++) {
        size_t k = r < n ? r0 + r : r0;

        off[r] = k / kk * s->pad_h * s->pad_w +
                 k % kk / s->kernel * s->pad_w + k % s->kernel;
      }
      /* A partial last tile works on a copy, so that it reads and writes
       * no row past dwt's end. */
      if (n < WEIGHT_TILE) {
        memset(spare, 0, sizeof(spare));
        for (uint32_t r = 0; r < n; r++)
          memcpy(spare + r * FEDC_CONV_SIMD_LANES, dst + r * width,
                 FEDC_CONV_SIMD_LANES * sizeof(float));
        weight_tile(s, xpad, off, n, gt + o0, width, spare,
                    FEDC_CONV_SIMD_LANES);
        for (uint32_t r = 0; r < n; r++)
          memcpy(dst + r * width, spare + r * FEDC_CONV_SIMD_LANES,
                 FEDC_CONV_SIMD_LANES * sizeof(float));
        continue;
      }
      weight_tile(s, xpad, off, n, gt + o0, width, dst, width);
    }
  }
}

#else

void fedc_conv_simd_forward(const fedc_conv_shape *s, const float *xpad,
                            const float *wt, const float *bias, bool relu,
                            float *y)
{
  (void)s, (void)xpad, (void)wt, (void)bias, (void)relu, (void)y;
}

void fedc_conv_simd_weight_grad(const fedc_conv_shape *s, const float *xpad,
                                const float *gt, float *dwt)
{
  (void)s, (void)xpad, (void)gt, (void)dwt;
}

#endif
