#include "nn/conv_simd.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define CONV_SIMD 1
#include <immintrin.h>
#define CONV_TARGET __attribute__((target("avx512f")))
#else
#define CONV_SIMD 0
#endif

/* The widest forward tile: 14 output positions with one vector of 16
 * channels, or 7 with two. Either keeps 14 independent FMA chains in
 * flight, and 7 and 14 divide the common row widths 7, 14 and 28. */
#define TILE_POSITIONS 14
/* Rows of the weight gradient per tile: 16 with one vector, 8 with two. */
#define TILE_ROWS 16
/* The minimum number of products per output (C*k*k) for the kernels. The
 * first layer of the built-in CNN (25) ran faster with OpenBLAS and its
 * second (400) with the kernels, measured on one AVX-512 machine. */
#define MIN_DEPTH 64

static bool simd_enabled = true;

bool fedc_conv_simd_supported(void)
{
#if CONV_SIMD
  return simd_enabled && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool fedc_conv_simd_rows_available(const fedc_conv_shape *s)
{
  /* Rows of at least 8 positions fill half a vector or more. */
  return fedc_conv_simd_supported() && s->stride == 1 && s->out_w >= 8;
}

bool fedc_conv_simd_available(const fedc_conv_shape *s)
{
#if CONV_SIMD
  /* With fewer than 3/4 of the lanes used, or fewer than MIN_DEPTH
   * products per output, OpenBLAS is faster: storing a tile then costs
   * more than its FMAs. */
  return fedc_conv_simd_supported() &&
         (size_t)TILE_POSITIONS * s->stride <= FEDC_CONV_SIMD_SLACK &&
         4 * (size_t)s->out_c >= 3 * fedc_conv_simd_width(s->out_c) &&
         (size_t)s->in_c * s->kernel * s->kernel >= MIN_DEPTH;
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
  if (out_c <= 16)
    return 16;
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

void fedc_conv_simd_transpose_flipped(const fedc_conv_shape *s,
                                      const float *w, float *wt)
{
  size_t kk = (size_t)s->kernel * s->kernel;
  size_t width = fedc_conv_simd_width(s->in_c);

  memset(wt, 0, s->out_c * kk * width * sizeof(float));
  for (uint32_t o = 0; o < s->out_c; o++)
    for (uint32_t c = 0; c < s->in_c; c++)
      for (size_t k = 0; k < kk; k++)
        wt[(o * kk + k) * width + c] = w[(o * s->in_c + c) * kk + kk - 1 - k];
}

#if CONV_SIMD

/* Computes tile[t][0 .. 16*vecs) for output positions t < positions of
 * the row at x (already offset to the tile's first position): the sum over
 * (c, kh, kw) of the input under position t times wt[(c, kh, kw)]. Tiles
 * past the row's end read the slack or the next row, and their sums are
 * not stored. Always inlined with constant vecs and positions, so that
 * the accumulators stay in registers. */
CONV_TARGET static inline __attribute__((always_inline)) void
forward_tile(const fedc_conv_shape *s, const float *x, const float *wt,
             size_t width, float *tile, const int vecs, const int positions)
{
  const size_t plane = (size_t)s->pad_h * s->pad_w, stride = s->stride;
  const uint32_t kernel = s->kernel;
  __m512 acc[TILE_POSITIONS][2];

#pragma GCC unroll 14
  for (int t = 0; t < positions; t++)
    acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  for (uint32_t c = 0; c < s->in_c; c++) {
    for (uint32_t kh = 0; kh < kernel; kh++) {
      const float *src = x + c * plane + kh * (size_t)s->pad_w;

      for (uint32_t kw = 0; kw < kernel; kw++, wt += width) {
        __m512 w0 = _mm512_loadu_ps(wt);
        __m512 w1 = vecs == 2 ? _mm512_loadu_ps(wt + 16) : w0;

#pragma GCC unroll 14
        for (int t = 0; t < positions; t++) {
          __m512 v = _mm512_set1_ps(src[kw + t * stride]);

          acc[t][0] = _mm512_fmadd_ps(v, w0, acc[t][0]);
          if (vecs == 2)
            acc[t][1] = _mm512_fmadd_ps(v, w1, acc[t][1]);
        }
      }
    }
  }
#pragma GCC unroll 14
  for (int t = 0; t < positions; t++) {
    _mm512_storeu_ps(tile + t * FEDC_CONV_SIMD_LANES, acc[t][0]);
    if (vecs == 2)
      _mm512_storeu_ps(tile + t * FEDC_CONV_SIMD_LANES + 16, acc[t][1]);
  }
}

CONV_TARGET static void forward_tile_wide(const fedc_conv_shape *s,
                                          const float *x, const float *wt,
                                          size_t width, float *tile)
{
  forward_tile(s, x, wt, width, tile, 2, TILE_POSITIONS / 2);
}

CONV_TARGET static void forward_tile_narrow(const fedc_conv_shape *s,
                                            const float *x, const float *wt,
                                            size_t width, float *tile)
{
  forward_tile(s, x, wt, width, tile, 1, TILE_POSITIONS);
}

/* Stores positions [0, n) of a tile into y (already offset to the first
 * position) for channels o0 .. o0 + lanes - 1 below out_c. The bias and
 * the ReLU are applied in vectors, and each position's channels are one
 * scatter to y's channel planes. max(v, 0) returns its second operand for
 * NaN and for -0, so it maps both to +0 as the activation layer does. */
CONV_TARGET static void store_tile(const fedc_conv_shape *s,
                                   const float *tile, uint32_t n,
                                   uint32_t o0, uint32_t lanes,
                                   const float *bias, bool relu, float *y)
{
  size_t area = (size_t)s->out_h * s->out_w;
  uint32_t end = s->out_c - o0 < lanes ? s->out_c - o0 : lanes;
  __m512i index = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32((int)area));
  float *base = y + (size_t)o0 * area;

  for (uint32_t v = 0; v * 16 < end; v++) {
    uint32_t count = end - v * 16 < 16 ? end - v * 16 : 16;
    __mmask16 mask = (__mmask16)((1u << count) - 1);
    __m512 b = bias != NULL
                   ? _mm512_maskz_loadu_ps(mask, bias + o0 + v * 16)
                   : _mm512_setzero_ps();
    float *dst = base + (size_t)v * 16 * area;

    for (uint32_t t = 0; t < n; t++) {
      __m512 value = _mm512_add_ps(
          _mm512_loadu_ps(tile + t * FEDC_CONV_SIMD_LANES + v * 16), b);

      if (relu)
        value = _mm512_max_ps(value, _mm512_setzero_ps());
      _mm512_mask_i32scatter_ps(dst + t, mask, index, value, 4);
    }
  }
}

CONV_TARGET void fedc_conv_simd_forward(const fedc_conv_shape *s,
                                        const float *xpad, const float *wt,
                                        const float *bias, bool relu,
                                        float *y)
{
  size_t width = fedc_conv_simd_width(s->out_c);
  uint32_t lanes = width == 16 ? 16 : FEDC_CONV_SIMD_LANES;
  uint32_t positions = lanes == 16 ? TILE_POSITIONS : TILE_POSITIONS / 2;
  float tile[TILE_POSITIONS * FEDC_CONV_SIMD_LANES];

  for (uint32_t o0 = 0; o0 < s->out_c; o0 += lanes) {
    for (uint32_t oh = 0; oh < s->out_h; oh++) {
      const float *row = xpad + (size_t)oh * s->stride * s->pad_w;

      for (uint32_t ow = 0; ow < s->out_w; ow += positions) {
        uint32_t n = s->out_w - ow < positions ? s->out_w - ow : positions;
        const float *x = row + (size_t)ow * s->stride;

        if (lanes == 16)
          forward_tile_narrow(s, x, wt + o0, width, tile);
        else
          forward_tile_wide(s, x, wt + o0, width, tile);
        store_tile(s, tile, n, o0, lanes, bias, relu,
                   y + (size_t)oh * s->out_w + ow);
      }
    }
  }
}

/* Output channels per tile of the row kernel. */
#define ROW_CHANNELS 8

/* Computes output row oh, positions [ow, ow + n) with n <= 32, for
 * channels [o0, o0 + ROW_CHANNELS) below out_c, of a stride-1 layer with
 * output positions as vector lanes: each weight of wt [C*k*k][width] is
 * broadcast against a contiguous run of the padded input. Masked loads
 * keep the reads inside [ow, ow + n) of each input row. Lanes of wt past
 * out_c are zero and their sums are not stored. */
CONV_TARGET static void row_tile(const fedc_conv_shape *s, const float *xpad,
                                 const float *wt, size_t width,
                                 const float *bias, bool relu, uint32_t oh,
                                 uint32_t ow, uint32_t n, uint32_t o0,
                                 float *y)
{
  const size_t plane = (size_t)s->pad_h * s->pad_w;
  const size_t area = (size_t)s->out_h * s->out_w;
  uint32_t channels = s->out_c - o0 < ROW_CHANNELS ? s->out_c - o0
                                                   : ROW_CHANNELS;
  __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
  __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1
                                                         : 0);
  __m512 acc[ROW_CHANNELS][2];

  wt += o0;
#pragma GCC unroll 8
  for (int r = 0; r < ROW_CHANNELS; r++)
    acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (uint32_t c = 0; c < s->in_c; c++) {
    for (uint32_t kh = 0; kh < s->kernel; kh++) {
      const float *src = xpad + c * plane + (size_t)(oh + kh) * s->pad_w + ow;

      for (uint32_t kw = 0; kw < s->kernel; kw++, wt += width) {
        __m512 x0 = _mm512_maskz_loadu_ps(m0, src + kw);
        __m512 x1 = _mm512_maskz_loadu_ps(m1, src + kw + 16);

#pragma GCC unroll 8
        for (int r = 0; r < ROW_CHANNELS; r++) {
          __m512 v = _mm512_set1_ps(wt[r]);

          acc[r][0] = _mm512_fmadd_ps(v, x0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(v, x1, acc[r][1]);
        }
      }
    }
  }
  /* A constant bound keeps acc in registers; a loop to channels would
   * make the compiler keep it in memory. */
#pragma GCC unroll 8
  for (int r = 0; r < ROW_CHANNELS; r++) {
    __m512 b, v0, v1;
    float *dst = y + (o0 + r) * area + (size_t)oh * s->out_w + ow;

    if ((uint32_t)r >= channels)
      break;
    b = _mm512_set1_ps(bias != NULL ? bias[o0 + r] : 0.0f);
    v0 = _mm512_add_ps(acc[r][0], b);
    v1 = _mm512_add_ps(acc[r][1], b);

    if (relu) {
      v0 = _mm512_max_ps(v0, _mm512_setzero_ps());
      v1 = _mm512_max_ps(v1, _mm512_setzero_ps());
    }
    _mm512_mask_storeu_ps(dst, m0, v0);
    _mm512_mask_storeu_ps(dst + 16, m1, v1);
  }
}

CONV_TARGET void fedc_conv_simd_forward_rows(const fedc_conv_shape *s,
                                             const float *xpad,
                                             const float *wt,
                                             const float *bias, bool relu,
                                             float *y)
{
  size_t width = fedc_conv_simd_width(s->out_c);

  for (uint32_t oh = 0; oh < s->out_h; oh++)
    for (uint32_t ow = 0; ow < s->out_w; ow += 32)
      for (uint32_t o0 = 0; o0 < s->out_c; o0 += ROW_CHANNELS)
        row_tile(s, xpad, wt, width, bias, relu, oh, ow,
                 s->out_w - ow < 32 ? s->out_w - ow : 32, o0, y);
}

/* Adds to dwt rows r < n (rows ld floats apart) the sum over output
 * positions of gt[position][0 .. 16*vecs) times the input that row r reads
 * there, at offset off[r] into the padded image. Always inlined with
 * constant vecs and rows. */
CONV_TARGET static inline __attribute__((always_inline)) void
weight_tile(const fedc_conv_shape *s, const float *xpad, const size_t *off,
            uint32_t n, const float *gt, size_t width, float *dwt, size_t ld,
            const int vecs, const int rows)
{
  const size_t stride = s->stride, row_step = stride * s->pad_w;
  __m512 acc[TILE_ROWS][2];

#pragma GCC unroll 16
  for (int r = 0; r < rows; r++) {
    acc[r][0] = _mm512_loadu_ps(dwt + (size_t)r * ld);
    acc[r][1] = vecs == 2 ? _mm512_loadu_ps(dwt + (size_t)r * ld + 16)
                          : acc[r][0];
  }
  for (uint32_t oh = 0; oh < s->out_h; oh++) {
    const float *x = xpad + oh * row_step;

    for (uint32_t ow = 0; ow < s->out_w; ow++, gt += width) {
      __m512 g0 = _mm512_loadu_ps(gt);
      __m512 g1 = vecs == 2 ? _mm512_loadu_ps(gt + 16) : g0;
      const float *at = x + ow * stride;

#pragma GCC unroll 16
      for (int r = 0; r < rows; r++) {
        __m512 v = _mm512_set1_ps(at[off[r]]);

        acc[r][0] = _mm512_fmadd_ps(v, g0, acc[r][0]);
        if (vecs == 2)
          acc[r][1] = _mm512_fmadd_ps(v, g1, acc[r][1]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < rows; r++) {
    if ((uint32_t)r >= n)
      break;
    _mm512_storeu_ps(dwt + (size_t)r * ld, acc[r][0]);
    if (vecs == 2)
      _mm512_storeu_ps(dwt + (size_t)r * ld + 16, acc[r][1]);
  }
}

CONV_TARGET static void weight_tile_wide(const fedc_conv_shape *s,
                                         const float *xpad,
                                         const size_t *off, uint32_t n,
                                         const float *gt, size_t width,
                                         float *dwt, size_t ld)
{
  weight_tile(s, xpad, off, n, gt, width, dwt, ld, 2, TILE_ROWS / 2);
}

CONV_TARGET static void weight_tile_narrow(const fedc_conv_shape *s,
                                           const float *xpad,
                                           const size_t *off, uint32_t n,
                                           const float *gt, size_t width,
                                           float *dwt, size_t ld)
{
  weight_tile(s, xpad, off, n, gt, width, dwt, ld, 1, TILE_ROWS);
}

/* Runs the tile of rows [r0, r0 + n) and lanes o0 .. o0 + lanes - 1. A
 * partial tile works on a copy, so that it reads and writes no row past
 * dwt's end. */
static void weight_rows(const fedc_conv_shape *s, const float *xpad,
                        size_t r0, uint32_t n, uint32_t tile_rows,
                        size_t o0, uint32_t lanes, const float *gt,
                        float *dwt)
{
  size_t width = fedc_conv_simd_width(s->out_c);
  size_t kk = (size_t)s->kernel * s->kernel;
  size_t off[TILE_ROWS];
  float spare[TILE_ROWS * FEDC_CONV_SIMD_LANES];
  float *dst = dwt + r0 * width + o0;
  float *target = dst;
  size_t ld = width;

  for (uint32_t r = 0; r < tile_rows; r++) {
    size_t k = r < n ? r0 + r : r0;

    off[r] = k / kk * s->pad_h * s->pad_w +
             k % kk / s->kernel * s->pad_w + k % s->kernel;
  }
  if (n < tile_rows) {
    memset(spare, 0, sizeof(spare));
    for (uint32_t r = 0; r < n; r++)
      memcpy(spare + r * FEDC_CONV_SIMD_LANES, dst + r * width,
             lanes * sizeof(float));
    target = spare;
    ld = FEDC_CONV_SIMD_LANES;
  }
  if (lanes == 16)
    weight_tile_narrow(s, xpad, off, n, gt + o0, width, target, ld);
  else
    weight_tile_wide(s, xpad, off, n, gt + o0, width, target, ld);
  for (uint32_t r = 0; target == spare && r < n; r++)
    memcpy(dst + r * width, spare + r * FEDC_CONV_SIMD_LANES,
           lanes * sizeof(float));
}

void fedc_conv_simd_weight_grad(const fedc_conv_shape *s, const float *xpad,
                                const float *gt, float *dwt)
{
  size_t rows = (size_t)s->in_c * s->kernel * s->kernel;
  size_t width = fedc_conv_simd_width(s->out_c);
  uint32_t lanes = width == 16 ? 16 : FEDC_CONV_SIMD_LANES;
  uint32_t tile_rows = lanes == 16 ? TILE_ROWS : TILE_ROWS / 2;

  for (size_t o0 = 0; o0 < width; o0 += lanes) {
    for (size_t r0 = 0; r0 < rows; r0 += tile_rows) {
      uint32_t n = rows - r0 < tile_rows ? (uint32_t)(rows - r0) : tile_rows;

      weight_rows(s, xpad, r0, n, tile_rows, o0, lanes, gt, dwt);
    }
  }
}

#else

void fedc_conv_simd_forward_rows(const fedc_conv_shape *s, const float *xpad,
                                 const float *wt, const float *bias,
                                 bool relu, float *y)
{
  (void)s, (void)xpad, (void)wt, (void)bias, (void)relu, (void)y;
}

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
