#include "nn/conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/blas.h"
#include "nn/conv_simd.h"
#include "nn/parallel.h"
#include "util/error.h"

/* Output columns below which one sgemm takes several examples, so that
 * OpenBLAS gets products at least this wide. */
#define CONV_MIN_COLUMNS 256

/* One worker's scratch space. Its size depends on the layer only, not on
 * the batch, and it stays in the L2 cache for the usual image sizes. */
typedef struct conv_work {
  float *padded;             /* [C, Hp, Wp]: an input, zero borders */
  float *dpadded;            /* [C, Hp, Wp]: an input gradient, borders */
  float *cols;               /* [C*k*k, group*OH*OW]: unfolded examples */
  float *planes;             /* [out, group*OH*OW]: output or its gradient */
  float *grad_t;             /* [OH*OW][width]: dy transposed (conv_simd) */
  float *grad_padded;        /* [out][OH+2q][OW+2q]: dy, zero borders q */
} conv_work;

typedef struct conv {
  uint32_t in_c, in_h, in_w;
  uint32_t out_c, out_h, out_w;
  uint32_t kernel, stride, padding;
  uint32_t pad_h, pad_w;     /* input size with the padding */
  uint32_t group;            /* examples per sgemm */
  bool has_bias;
  conv_work work[FEDC_PARALLEL_MAX];
  unsigned workers;          /* entries of work allocated */
  fedc_conv_shape shape;     /* the geometry for conv_simd */
  size_t width;              /* out_c rounded up for conv_simd */
  float *weight_t;           /* [C*k*k][width]: W transposed (conv_simd) */
  /* The input gradient of a stride-1 layer as a convolution of dy with
   * the flipped weights and padding q = k - 1 - padding (conv_simd). */
  fedc_conv_shape grad_shape;
  float *weight_flip;        /* [out*k*k][width(C)] */
  float *partial;            /* per chunk: conv_partial_size floats */
  size_t partial_cap;
} conv;

/* What the workers of one pass read and write. */
typedef struct conv_job {
  fedc_layer *layer;
  const float *x;
  float *y;                  /* forward: the output */
  const float *out;          /* backward: the forward's output */
  const float *dy;           /* backward: the output gradient */
  float *dx;                 /* backward: the input gradient, or NULL */
  bool simd;                 /* run the conv_simd kernels */
  bool simd_dx;              /* and the one for dx */
  bool simd_rows;            /* forward: fedc_conv_simd_forward_rows */
} conv_job;

static size_t conv_col_rows(const conv *c)
{
  return (size_t)c->in_c * c->kernel * c->kernel;
}

static size_t conv_out_area(const conv *c)
{
  return (size_t)c->out_h * c->out_w;
}

static size_t conv_padded_size(const conv *c)
{
  return (size_t)c->in_c * c->pad_h * c->pad_w;
}

/* A 1x1 kernel with stride 1 and no padding: the input is its own
 * column matrix. */
static bool conv_is_pointwise(const conv *c)
{
  return c->kernel == 1 && c->stride == 1 && c->padding == 0;
}

/* --- Unfolding (im2col) and folding back (col2im) ------------------------ */

/* Copies x into the worker's padded image and returns it. The borders of
 * the copy, and the slack that conv_simd reads past its end, were zeroed
 * when it was allocated and are never written. */
static const float *copy_input(const conv *c, conv_work *w, const float *x)
{
  size_t plane = (size_t)c->pad_h * c->pad_w;

  if (c->padding == 0) {
    memcpy(w->padded, x, conv_padded_size(c) * sizeof(float));
    return w->padded;
  }
  for (uint32_t ch = 0; ch < c->in_c; ch++) {
    float *dst = w->padded + ch * plane + (size_t)c->padding * c->pad_w +
                 c->padding;
    const float *src = x + (size_t)ch * c->in_h * c->in_w;

    for (uint32_t h = 0; h < c->in_h; h++)
      memcpy(dst + (size_t)h * c->pad_w, src + (size_t)h * c->in_w,
             c->in_w * sizeof(float));
  }
  return w->padded;
}

/* Returns x with zero borders: the worker's padded copy, or x itself when
 * there is no padding. */
static const float *pad_input(const conv *c, conv_work *w, const float *x)
{
  return c->padding == 0 ? x : copy_input(c, w, x);
}

/* Copies n floats. Rows of convolution outputs are short (often 7 to 28
 * floats), so that a memcpy call per row costs more than the copy. The
 * fixed-size copies below compile to single vector moves, and the last one
 * overlaps the previous when n is not a multiple of 4. */
static inline void copy_row(float *restrict dst, const float *restrict src,
                            uint32_t n)
{
  uint32_t i;

  if (n < 4) {
    for (i = 0; i < n; i++)
      dst[i] = src[i];
    return;
  }
  for (i = 0; i + 4 <= n; i += 4)
    memcpy(dst + i, src + i, 4 * sizeof(float));
  if (i < n)
    memcpy(dst + n - 4, src + n - 4, 4 * sizeof(float));
}

/* Four floats as one vector, in GCC's and clang's vector extension; it
 * compiles to scalar code where the target has no vector unit. */
typedef float float4 __attribute__((vector_size(4 * sizeof(float))));

/* Adds n floats of src to dst, four at a time in vector additions. The
 * compiler's own vectorization of this loop splits it badly for rows as
 * short as convolution outputs. */
static inline void add_row(float *restrict dst, const float *restrict src,
                           uint32_t n)
{
  uint32_t i = 0;

  for (; i + 4 <= n; i += 4) {
    float4 a, b;

    memcpy(&a, dst + i, sizeof(a));
    memcpy(&b, src + i, sizeof(b));
    a += b;
    memcpy(dst + i, &a, sizeof(a));
  }
  for (; i < n; i++)
    dst[i] += src[i];
}

/* Unfolds the padded image p into col [C*k*k, OH*OW], rows ld floats
 * apart: row (ch, kh, kw) is p[ch][oh*s + kh][ow*s + kw]. The sizes are
 * copied into locals because the copies may alias *c for the compiler,
 * which would otherwise reload them for every row. */
static void unfold(const conv *c, const float *restrict p,
                   float *restrict col, size_t ld)
{
  const uint32_t channels = c->in_c, kernel = c->kernel;
  const uint32_t stride = c->stride, out_h = c->out_h, out_w = c->out_w;
  const size_t pad_w = c->pad_w, plane = (size_t)c->pad_h * c->pad_w;
  const size_t row_step = stride * pad_w;

  for (uint32_t ch = 0; ch < channels; ch++) {
    for (uint32_t kh = 0; kh < kernel; kh++) {
      for (uint32_t kw = 0; kw < kernel; kw++, col += ld) {
        const float *src = p + ch * plane + kh * pad_w + kw;
        float *dst = col;

        for (uint32_t oh = 0; oh < out_h; oh++, src += row_step,
             dst += out_w) {
          if (stride == 1) {
            copy_row(dst, src, out_w);
            continue;
          }
          for (uint32_t ow = 0; ow < out_w; ow++)
            dst[ow] = src[(size_t)ow * stride];
        }
      }
    }
  }
}

/* Adds col [C*k*k, OH*OW] (rows ld floats apart) into the padded gradient
 * p: the adjoint of unfold. */
static void fold(const conv *c, const float *restrict col, size_t ld,
                 float *restrict p)
{
  const uint32_t channels = c->in_c, kernel = c->kernel;
  const uint32_t stride = c->stride, out_h = c->out_h, out_w = c->out_w;
  const size_t pad_w = c->pad_w, plane = (size_t)c->pad_h * c->pad_w;
  const size_t row_step = stride * pad_w;

  for (uint32_t ch = 0; ch < channels; ch++) {
    for (uint32_t kh = 0; kh < kernel; kh++) {
      for (uint32_t kw = 0; kw < kernel; kw++, col += ld) {
        float *dst = p + ch * plane + kh * pad_w + kw;
        const float *src = col;

        for (uint32_t oh = 0; oh < out_h; oh++, dst += row_step,
             src += out_w) {
          if (stride == 1) {
            add_row(dst, src, out_w);
            continue;
          }
          for (uint32_t ow = 0; ow < out_w; ow++)
            dst[(size_t)ow * stride] += src[ow];
        }
      }
    }
  }
}

/* Writes one example's input gradient dx from col (rows ld apart). */
static void fold_example(const conv *c, conv_work *w, const float *col,
                         size_t ld, float *dx)
{
  float *p = c->padding == 0 ? dx : w->dpadded;
  size_t plane = (size_t)c->pad_h * c->pad_w;

  memset(p, 0, conv_padded_size(c) * sizeof(float));
  fold(c, col, ld, p);
  if (c->padding == 0)
    return;
  for (uint32_t ch = 0; ch < c->in_c; ch++) {
    const float *src = p + ch * plane + (size_t)c->padding * c->pad_w +
                       c->padding;
    float *dst = dx + (size_t)ch * c->in_h * c->in_w;

    for (uint32_t h = 0; h < c->in_h; h++)
      memcpy(dst + (size_t)h * c->in_w, src + (size_t)h * c->pad_w,
             c->in_w * sizeof(float));
  }
}

/* Returns the column matrix [C*k*k, n*OH*OW] of examples x .. x + n-1:
 * the worker's cols, or x itself for a pointwise kernel and n == 1. */
static const float *unfold_group(const fedc_layer *layer, conv_work *w,
                                 const float *x, size_t n)
{
  const conv *c = layer->priv;
  size_t area = conv_out_area(c);

  if (n == 1 && conv_is_pointwise(c))
    return x;
  for (size_t s = 0; s < n; s++)
    unfold(c, pad_input(c, w, x + s * layer->in_size), w->cols + s * area,
           n * area);
  return w->cols;
}

/* --- Fast path ----------------------------------------------------------- */

/* Writes n floats src + bias to dst, through a ReLU when relu is set;
 * dst may be src. The ReLU is written as the activation layer's, which
 * maps NaN to 0. */
static void add_bias(const float *src, float bias, bool relu, float *dst,
                     size_t n)
{
  if (!relu) {
    for (size_t i = 0; i < n; i++)
      dst[i] = src[i] + bias;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float v = src[i] + bias;

    dst[i] = v > 0 ? v : 0.0f;
  }
}

/* y of n examples from out [out_c, n*area] plus the bias, through the
 * folded ReLU if any; out is y itself when n == 1. */
static void store_output(const fedc_layer *layer, const float *out, float *y,
                         size_t n)
{
  const conv *c = layer->priv;
  size_t area = conv_out_area(c), width = n * area;

  for (size_t s = 0; s < n; s++) {
    for (uint32_t o = 0; o < c->out_c; o++) {
      float bias = c->has_bias ? layer->params[1].value[o] : 0.0f;

      add_bias(out + o * width + s * area, bias, layer->relu_out,
               y + s * layer->out_size + o * area, area);
    }
  }
}

static void forward_group(fedc_layer *layer, conv_work *w, const float *x,
                          float *y, size_t n)
{
  const conv *c = layer->priv;
  size_t rows = conv_col_rows(c), width = n * conv_out_area(c);
  const float *cols = unfold_group(layer, w, x, n);
  float *out = n == 1 ? y : w->planes;

  fedc_blas_sgemm(false, false, c->out_c, width, rows, 1.0f,
                  layer->params[0].value, rows, cols, width, 0.0f, out,
                  width);
  store_output(layer, out, y, n);
}

static void forward_range(void *ctx, unsigned worker, size_t chunk,
                          size_t begin, size_t end)
{
  const conv_job *job = ctx;
  fedc_layer *layer = job->layer;
  conv *c = layer->priv;

  for (size_t b = begin; b < end; b += c->group) {
    size_t n = end - b < c->group ? end - b : c->group;

    forward_group(layer, &c->work[worker], job->x + b * layer->in_size,
                  job->y + b * layer->out_size, n);
  }
}

/* Returns the sum of n floats. Eight partial sums break the chain of
 * dependent additions, which would otherwise bound the loop by the adder's
 * latency, and let the compiler use vector additions. */
static float sum_floats(const float *x, size_t n)
{
  float part[8] = { 0 };
  size_t i = 0;
  float sum = 0.0f;

  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; j++)
      part[j] += x[i + j];
  for (; i < n; i++)
    sum += x[i];
  for (size_t j = 0; j < 8; j++)
    sum += part[j];
  return sum;
}

/* Copies n floats of dy to dst where y > 0 and zeros elsewhere: the
 * folded ReLU's derivative. dy[i] is loaded unconditionally so that the
 * compiler can use a vector select instead of a branch per element. */
static void mask_grad(const float *restrict dy, const float *restrict y,
                      float *restrict dst, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float g = dy[i];

    dst[i] = y[i] > 0 ? g : 0.0f;
  }
}

/* Returns the output gradient of n examples as [out_c, n*area], after the
 * folded ReLU's derivative if any, and adds its row sums to db unless db
 * is NULL. That is dy itself for n == 1 without a ReLU, otherwise a copy
 * in the worker's planes. */
static const float *gather_grad(const fedc_layer *layer, conv_work *w,
                                const float *y, const float *dy, size_t n,
                                float *db)
{
  const conv *c = layer->priv;
  size_t area = conv_out_area(c), width = n * area;
  bool mask = layer->relu_out && !layer->relu_grad_done;
  bool copy = n > 1 || mask;

  for (uint32_t o = 0; o < c->out_c; o++) {
    float sum = 0.0f;

    for (size_t s = 0; s < n; s++) {
      size_t at = s * layer->out_size + o * area;
      float *dst = w->planes + o * width + s * area;

      if (mask) {
        mask_grad(dy + at, y + at, dst, area);
        sum += sum_floats(dst, area);
        continue;
      }
      sum += sum_floats(dy + at, area);
      if (copy)
        memcpy(dst, dy + at, area * sizeof(float));
    }
    if (db != NULL)
      db[o] += sum;
  }
  return copy ? w->planes : dy;
}

/* Adds this group's dW to dw and db to db (NULL without a bias), and
 * writes dx unless it is NULL. */
static void backward_group(const fedc_layer *layer, conv_work *w,
                           const conv_job *job, size_t b, size_t n,
                           float *dw, float *db)
{
  const conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  size_t width = n * area;
  const float *g = gather_grad(layer, w, job->out + b * layer->out_size,
                               job->dy + b * layer->out_size, n, db);
  const float *cols = unfold_group(layer, w, job->x + b * layer->in_size, n);

  fedc_blas_sgemm(false, true, c->out_c, rows, width, 1.0f, g, width, cols,
                  width, 1.0f, dw, rows);
  if (job->dx == NULL)
    return;
  fedc_blas_sgemm(true, false, rows, width, c->out_c, 1.0f,
                  layer->params[0].value, rows, g, width, 0.0f, w->cols,
                  width);
  for (size_t s = 0; s < n; s++)
    fold_example(c, w, w->cols + s * area, width,
                 job->dx + (b + s) * layer->in_size);
}

/* --- conv_simd path ------------------------------------------------------- */

static void forward_range_simd(void *ctx, unsigned worker, size_t chunk,
                               size_t begin, size_t end)
{
  const conv_job *job = ctx;
  const fedc_layer *layer = job->layer;
  conv *c = layer->priv;
  conv_work *w = &c->work[worker];
  const float *bias = c->has_bias ? layer->params[1].value : NULL;

  for (size_t b = begin; b < end; b++)
    fedc_conv_simd_forward(&c->shape,
                           copy_input(c, w, job->x + b * layer->in_size),
                           c->weight_t, bias, layer->relu_out,
                           job->y + b * layer->out_size);
}

static void forward_range_rows(void *ctx, unsigned worker, size_t chunk,
                               size_t begin, size_t end)
{
  const conv_job *job = ctx;
  const fedc_layer *layer = job->layer;
  conv *c = layer->priv;
  conv_work *w = &c->work[worker];
  const float *bias = c->has_bias ? layer->params[1].value : NULL;

  for (size_t b = begin; b < end; b++)
    fedc_conv_simd_forward_rows(&c->shape,
                                copy_input(c, w, job->x + b * layer->in_size),
                                c->weight_t, bias, layer->relu_out,
                                job->y + b * layer->out_size);
}

/* Writes g [out_c][OH*OW] transposed into gt [OH*OW][width]. The extra
 * lanes of gt stay zero from its allocation. */
static void transpose_grad(const conv *c, const float *g, float *gt)
{
  size_t area = conv_out_area(c);

  for (uint32_t o = 0; o < c->out_c; o++)
    for (size_t i = 0; i < area; i++)
      gt[i * c->width + o] = g[o * area + i];
}

/* Copies one example's output gradient g [out][OH*OW] into the worker's
 * grad_padded, whose borders stay zero from its allocation. */
static const float *pad_grad(const conv *c, conv_work *w, const float *g)
{
  const fedc_conv_shape *s = &c->grad_shape;
  size_t border = (s->pad_w - c->out_w) / 2;

  for (uint32_t o = 0; o < c->out_c; o++) {
    float *dst = w->grad_padded + (o * (size_t)s->pad_h + border) * s->pad_w +
                 border;

    for (uint32_t h = 0; h < c->out_h; h++)
      memcpy(dst + (size_t)h * s->pad_w, g + (o * c->out_h + h) *
             (size_t)c->out_w, c->out_w * sizeof(float));
  }
  return w->grad_padded;
}

/* Adds example b's dW to dw_t [C*k*k][width] and its db to db, and writes
 * its dx unless the job has none: with conv_simd for stride 1, else with
 * OpenBLAS and fold. */
static void backward_example_simd(const fedc_layer *layer, conv_work *w,
                                  const conv_job *job, size_t b,
                                  float *dw_t, float *db)
{
  const conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  const float *g = gather_grad(layer, w, job->out + b * layer->out_size,
                               job->dy + b * layer->out_size, 1, db);

  transpose_grad(c, g, w->grad_t);
  fedc_conv_simd_weight_grad(&c->shape,
                             copy_input(c, w, job->x + b * layer->in_size),
                             w->grad_t, dw_t);
  if (job->dx == NULL)
    return;
  if (job->simd_dx) {
    fedc_conv_simd_forward(&c->grad_shape, pad_grad(c, w, g), c->weight_flip,
                           NULL, false, job->dx + b * layer->in_size);
    return;
  }
  fedc_blas_sgemm(true, false, rows, area, c->out_c, 1.0f,
                  layer->params[0].value, rows, g, area, 0.0f, w->cols, area);
  fold_example(c, w, w->cols, area, job->dx + b * layer->in_size);
}

/* Floats of one chunk's gradient sums: dW (as [out][C*k*k], or transposed
 * [C*k*k][width] on the conv_simd path), then db. */
static size_t conv_partial_size(const conv *c)
{
  size_t weights = (size_t)c->out_c * conv_col_rows(c);
  size_t weights_t = conv_col_rows(c) * c->width;

  return (weights > weights_t ? weights : weights_t) + c->out_c;
}

/* Sums the gradients of examples [begin, end) into this chunk's partial
 * sums, which conv_backward adds in chunk order, so that the result does
 * not depend on which worker took which chunk. */
static void backward_range(void *ctx, unsigned worker, size_t chunk,
                           size_t begin, size_t end)
{
  const conv_job *job = ctx;
  const fedc_layer *layer = job->layer;
  conv *c = layer->priv;
  conv_work *w = &c->work[worker];
  size_t size = conv_partial_size(c);
  float *dw = c->partial + chunk * size;
  float *db = c->has_bias ? dw + size - c->out_c : NULL;

  memset(dw, 0, size * sizeof(float));
  if (job->simd) {
    for (size_t b = begin; b < end; b++)
      backward_example_simd(layer, w, job, b, dw, db);
    return;
  }
  for (size_t b = begin; b < end; b += c->group) {
    size_t n = end - b < c->group ? end - b : c->group;

    backward_group(layer, w, job, b, n, dw, db);
  }
}

/* Adds the partial sums of chunks [0, chunks) to the parameter gradients,
 * in chunk order. */
static void add_partials(const fedc_layer *layer, size_t chunks, bool simd)
{
  const conv *c = layer->priv;
  size_t rows = conv_col_rows(c), size = conv_partial_size(c);
  float *dw = layer->params[0].grad;

  for (size_t k = 0; k < chunks; k++) {
    const float *part = c->partial + k * size;

    for (uint32_t o = 0; o < c->out_c; o++) {
      for (size_t r = 0; r < rows; r++)
        dw[o * rows + r] += simd ? part[r * c->width + o] : part[o * rows + r];
      if (c->has_bias)
        layer->params[1].grad[o] += part[size - c->out_c + o];
    }
  }
}

/* --- Reference path ------------------------------------------------------ */

/* The input row or column read by output position pos at kernel offset k,
 * or -1 inside the padding. */
static long conv_source(const conv *c, uint32_t pos, uint32_t k,
                        uint32_t size)
{
  long i = (long)pos * c->stride - c->padding + k;

  return i >= 0 && i < (long)size ? i : -1;
}

static double reference_dot(const conv *c, const float *x, const float *wo,
                            uint32_t oh, uint32_t ow)
{
  double sum = 0.0;

  for (uint32_t ch = 0; ch < c->in_c; ch++) {
    for (uint32_t kh = 0; kh < c->kernel; kh++) {
      long ih = conv_source(c, oh, kh, c->in_h);

      for (uint32_t kw = 0; kw < c->kernel && ih >= 0; kw++) {
        long iw = conv_source(c, ow, kw, c->in_w);

        if (iw >= 0)
          sum += (double)wo[(ch * c->kernel + kh) * c->kernel + kw] *
                 x[((size_t)ch * c->in_h + ih) * c->in_w + iw];
      }
    }
  }
  return sum;
}

static void reference_forward(const fedc_layer *layer, const float *x,
                              float *y, uint32_t batch)
{
  const conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);

  for (uint32_t b = 0; b < batch; b++) {
    for (uint32_t o = 0; o < c->out_c; o++) {
      const float *wo = layer->params[0].value + o * rows;
      double bias = c->has_bias ? layer->params[1].value[o] : 0.0;

      for (uint32_t i = 0; i < area; i++) {
        float v = (float)(bias + reference_dot(c, x + b * layer->in_size, wo,
                                               i / c->out_w, i % c->out_w));

        y[b * layer->out_size + o * area + i] =
            layer->relu_out && !(v > 0) ? 0.0f : v;
      }
    }
  }
}

/* Adds dW[o][ch][kh][kw] and db[o] over the batch. */
static void reference_params(const fedc_layer *layer, const float *x,
                             const float *dy, uint32_t batch)
{
  const conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);

  for (uint32_t o = 0; o < c->out_c; o++) {
    for (size_t r = 0; r < rows; r++) {
      uint32_t ch = (uint32_t)(r / (c->kernel * c->kernel));
      uint32_t kh = (uint32_t)(r / c->kernel % c->kernel);
      uint32_t kw = (uint32_t)(r % c->kernel);
      double sum = 0.0;

      for (uint32_t b = 0; b < batch; b++) {
        for (uint32_t i = 0; i < area; i++) {
          long ih = conv_source(c, i / c->out_w, kh, c->in_h);
          long iw = conv_source(c, i % c->out_w, kw, c->in_w);

          if (ih >= 0 && iw >= 0)
            sum += (double)dy[b * layer->out_size + o * area + i] *
                   x[b * layer->in_size + ((size_t)ch * c->in_h + ih) *
                     c->in_w + iw];
        }
      }
      layer->params[0].grad[o * rows + r] += (float)sum;
    }
  }
  for (uint32_t o = 0; o < c->out_c && c->has_bias; o++) {
    double sum = 0.0;

    for (uint32_t b = 0; b < batch; b++)
      for (size_t i = 0; i < area; i++)
        sum += dy[b * layer->out_size + o * area + i];
    layer->params[1].grad[o] += (float)sum;
  }
}

/* dx[ch][ih][iw] sums dy[o][oh][ow] * W[o][ch][kh][kw] over the outputs
 * that read it: ih = oh * stride - padding + kh, the same for columns. */
static double reference_input_grad(const conv *c, const float *dy,
                                   const float *w, uint32_t ch, uint32_t ih,
                                   uint32_t iw)
{
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  double sum = 0.0;

  for (uint32_t kh = 0; kh < c->kernel; kh++) {
    long th = (long)ih + c->padding - kh;

    if (th < 0 || th % c->stride != 0 || th / c->stride >= c->out_h)
      continue;
    for (uint32_t kw = 0; kw < c->kernel; kw++) {
      long tw = (long)iw + c->padding - kw;
      size_t i = (size_t)(th / c->stride) * c->out_w;

      if (tw < 0 || tw % c->stride != 0 || tw / c->stride >= c->out_w)
        continue;
      i += (size_t)(tw / c->stride);
      for (uint32_t o = 0; o < c->out_c; o++)
        sum += (double)dy[o * area + i] *
               w[o * rows + (ch * c->kernel + kh) * c->kernel + kw];
    }
  }
  return sum;
}

/* Returns dy after the folded ReLU's derivative: dy itself without one,
 * else a copy to free, or NULL when out of memory. */
static float *reference_relu_grad(const fedc_layer *layer, const float *y,
                                  const float *dy, uint32_t batch)
{
  size_t n = batch * layer->out_size;
  float *g;

  if (!layer->relu_out || layer->relu_grad_done)
    return (float *)dy;
  if ((g = malloc(n * sizeof(float) + 1)) == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++)
    g[i] = y[i] > 0 ? dy[i] : 0.0f;
  return g;
}

static int reference_backward(const fedc_layer *layer, const float *x,
                              const float *y, const float *dy_out, float *dx,
                              uint32_t batch)
{
  const conv *c = layer->priv;
  float *dy = reference_relu_grad(layer, y, dy_out, batch);

  if (dy == NULL)
    return FEDC_ENOMEM;
  reference_params(layer, x, dy, batch);
  for (uint32_t b = 0; b < batch && dx != NULL; b++)
    for (uint32_t ch = 0; ch < c->in_c; ch++)
      for (uint32_t ih = 0; ih < c->in_h; ih++)
        for (uint32_t iw = 0; iw < c->in_w; iw++)
          dx[b * layer->in_size + ((size_t)ch * c->in_h + ih) * c->in_w +
             iw] = (float)reference_input_grad(
              c, dy + b * layer->out_size, layer->params[0].value, ch, ih,
              iw);
  if (dy != dy_out)
    free(dy);
  return 0;
}

/* --- Layer operations ---------------------------------------------------- */

/* Same bound as nn.Linear, with fan_in = C * k * k. */
static void conv_init(fedc_layer *layer, fedc_rng *rng)
{
  const conv *c = layer->priv;
  float bound = 1.0f / sqrtf((float)conv_col_rows(c));

  fedc_layer_init_uniform(layer->params[0].value, layer->params[0].numel,
                          bound, rng);
  if (c->has_bias)
    fedc_layer_init_uniform(layer->params[1].value, layer->params[1].numel,
                            bound, rng);
}

/* Floats of grad_padded, with the slack conv_simd may read. */
static size_t conv_grad_padded_size(const conv *c)
{
  return (size_t)c->out_c * c->grad_shape.pad_h * c->grad_shape.pad_w +
         FEDC_CONV_SIMD_SLACK;
}

static size_t conv_work_floats(const conv *c)
{
  size_t width = (size_t)c->group * conv_out_area(c);

  return 2 * conv_padded_size(c) + FEDC_CONV_SIMD_SLACK +
         conv_col_rows(c) * width + c->out_c * width +
         conv_out_area(c) * c->width + conv_grad_padded_size(c);
}

static void conv_work_free(conv_work *w)
{
  free(w->padded);
  free(w->dpadded);
  free(w->cols);
  free(w->planes);
  free(w->grad_t);
  free(w->grad_padded);
  *w = (conv_work){ 0 };
}

static int conv_work_alloc(const conv *c, conv_work *w)
{
  size_t width = (size_t)c->group * conv_out_area(c);

  w->padded = calloc(conv_padded_size(c) + FEDC_CONV_SIMD_SLACK,
                     sizeof(float));
  w->grad_t = calloc(conv_out_area(c) * c->width, sizeof(float));
  w->grad_padded = calloc(conv_grad_padded_size(c), sizeof(float));
  w->dpadded = malloc(conv_padded_size(c) * sizeof(float));
  w->cols = malloc(conv_col_rows(c) * width * sizeof(float));
  w->planes = malloc(c->out_c * width * sizeof(float));
  if (w->padded == NULL || w->dpadded == NULL || w->cols == NULL ||
      w->planes == NULL || w->grad_t == NULL || w->grad_padded == NULL) {
    conv_work_free(w);
    return FEDC_ENOMEM;
  }
  return 0;
}

/* Allocates scratch for every worker of the current thread count. */
static int conv_reserve(conv *c)
{
  unsigned workers = fedc_parallel_get_threads();

  if (c->weight_t == NULL &&
      (c->weight_t = malloc(conv_col_rows(c) * c->width *
                            sizeof(float))) == NULL)
    return FEDC_ENOMEM;
  if (c->weight_flip == NULL &&
      (c->weight_flip = malloc((size_t)c->out_c * c->kernel * c->kernel *
                               fedc_conv_simd_width(c->in_c) *
                               sizeof(float))) == NULL)
    return FEDC_ENOMEM;

  while (c->workers < workers) {
    int rc = conv_work_alloc(c, &c->work[c->workers]);

    if (rc != 0)
      return rc;
    c->workers++;
  }
  return 0;
}

static int conv_forward(fedc_layer *layer, const float *x, float *y,
                        uint32_t batch, const fedc_pass *pass)
{
  conv *c = layer->priv;
  conv_job job = { .layer = layer, .x = x, .y = y,
                   .simd = fedc_conv_simd_available(&c->shape) };
  int rc;

  if (fedc_layer_reference()) {
    reference_forward(layer, x, y, batch);
    return 0;
  }
  if ((rc = conv_reserve(c)) != 0)
    return rc;
  if (job.simd) {
    fedc_conv_simd_transpose(&c->shape, layer->params[0].value, c->weight_t);
    fedc_parallel_run(batch, forward_range_simd, &job);
    return 0;
  }
  if (fedc_conv_simd_rows_available(&c->shape)) {
    fedc_conv_simd_transpose(&c->shape, layer->params[0].value, c->weight_t);
    fedc_parallel_run(batch, forward_range_rows, &job);
    return 0;
  }
  fedc_parallel_run(batch, forward_range, &job);
  return 0;
}

static int conv_backward(fedc_layer *layer, const float *x, const float *y,
                         const float *dy, float *dx, uint32_t batch)
{
  conv *c = layer->priv;
  conv_job job = { .layer = layer, .x = x, .out = y, .dy = dy, .dx = dx,
                   .simd = fedc_conv_simd_available(&c->shape) };
  size_t chunks = fedc_parallel_chunks(batch);
  int rc;

  if (fedc_layer_reference())
    return reference_backward(layer, x, y, dy, dx, batch);
  /* Only stride 1 makes the input gradient a plain convolution. */
  job.simd_dx = job.simd && dx != NULL && c->stride == 1 &&
                fedc_conv_simd_available(&c->grad_shape);
  if ((rc = conv_reserve(c)) != 0 ||
      (rc = fedc_layer_reserve(&c->partial, &c->partial_cap,
                               chunks * conv_partial_size(c))) != 0)
    return rc;
  if (job.simd_dx)
    fedc_conv_simd_transpose_flipped(&c->shape, layer->params[0].value,
                                     c->weight_flip);
  fedc_parallel_run(batch, backward_range, &job);
  add_partials(layer, chunks, job.simd);
  return 0;
}

static size_t conv_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  const conv *c = layer->priv;

  return (fedc_parallel_get_threads() * conv_work_floats(c) +
          fedc_parallel_chunks(batch) * conv_partial_size(c)) *
         sizeof(float);
}

static void conv_destroy(fedc_layer *layer)
{
  conv *c = layer->priv;

  if (c != NULL)
    for (unsigned w = 0; w < c->workers; w++)
      conv_work_free(&c->work[w]);
  if (c != NULL) {
    free(c->weight_t);
    free(c->weight_flip);
    free(c->partial);
  }
  free(c);
}

static const fedc_layer_ops conv_ops = {
  .kind = "conv",
  .init = conv_init,
  .forward = conv_forward,
  .backward = conv_backward,
  .scratch_bytes = conv_scratch_bytes,
  .destroy = conv_destroy,
};

static int conv_declare(fedc_layer *layer, const conv *c)
{
  int rc = fedc_layer_declare(layer, "weight", false, 4,
                              (uint64_t[]){ c->out_c, c->in_c, c->kernel,
                                            c->kernel });

  if (rc == 0 && c->has_bias)
    rc = fedc_layer_declare(layer, "bias", false, 1, (uint64_t[]){ c->out_c });
  return rc;
}

/* Fills in the sizes that follow from the input, kernel and padding. */
static void conv_set_geometry(conv *c)
{
  size_t area;
  uint32_t border;

  c->out_h = (c->in_h + 2 * c->padding - c->kernel) / c->stride + 1;
  c->out_w = (c->in_w + 2 * c->padding - c->kernel) / c->stride + 1;
  c->pad_h = c->in_h + 2 * c->padding;
  c->pad_w = c->in_w + 2 * c->padding;
  area = conv_out_area(c);
  c->group = area >= CONV_MIN_COLUMNS
                 ? 1 : (uint32_t)((CONV_MIN_COLUMNS + area - 1) / area);
  c->width = fedc_conv_simd_width(c->out_c);
  c->shape = (fedc_conv_shape){ .in_c = c->in_c, .pad_h = c->pad_h,
                                .pad_w = c->pad_w, .out_c = c->out_c,
                                .out_h = c->out_h, .out_w = c->out_w,
                                .kernel = c->kernel, .stride = c->stride };
  border = c->kernel - 1 - c->padding;
  c->grad_shape = (fedc_conv_shape){
    .in_c = c->out_c, .pad_h = c->out_h + 2 * border,
    .pad_w = c->out_w + 2 * border, .out_c = c->in_c, .out_h = c->in_h,
    .out_w = c->in_w, .kernel = c->kernel, .stride = 1 };
}

int fedc_conv_new(const char *name, const fedc_shape *in,
                  uint32_t out_channels, uint32_t kernel, uint32_t stride,
                  uint32_t padding, bool bias, fedc_layer **out)
{
  fedc_layer *layer;
  conv *c;
  int rc;

  *out = NULL;
  if (in->ndim != 3 || out_channels == 0 || kernel == 0 || stride == 0 ||
      padding >= kernel || (uint64_t)in->dim[1] + 2 * padding < kernel ||
      (uint64_t)in->dim[2] + 2 * padding < kernel)
    return FEDC_EINVAL;
  layer = fedc_layer_alloc(&conv_ops, name, in);
  c = calloc(1, sizeof(*c));
  if (layer == NULL || c == NULL) {
    free(c);
    fedc_layer_free(&layer);
    return FEDC_ENOMEM;
  }
  layer->priv = c;
  layer->fuses_relu = true;
  *c = (conv){ .in_c = in->dim[0], .in_h = in->dim[1], .in_w = in->dim[2],
               .out_c = out_channels, .kernel = kernel, .stride = stride,
               .padding = padding, .has_bias = bias };
  conv_set_geometry(c);
  fedc_layer_set_out(layer, &(fedc_shape){ 3, { out_channels, c->out_h,
                                                c->out_w } });
  if ((rc = conv_declare(layer, c)) != 0) {
    fedc_layer_free(&layer);
    return rc;
  }
  *out = layer;
  return 0;
}
