#include "nn/conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/blas.h"
#include "util/error.h"

typedef struct conv {
  uint32_t in_c, in_h, in_w;
  uint32_t out_c, out_h, out_w;
  uint32_t kernel, stride, padding;
  bool has_bias;
  float *cols;               /* [C*k*k, batch*OH*OW]: the unfolded batch */
  size_t cols_cap;
  float *planes;             /* [out, batch*OH*OW]: output or its gradient */
  size_t planes_cap;
} conv;

static size_t conv_col_rows(const conv *c)
{
  return (size_t)c->in_c * c->kernel * c->kernel;
}

static size_t conv_out_area(const conv *c)
{
  return (size_t)c->out_h * c->out_w;
}

/* The range [*lo, *hi) of output columns whose input column
 * ow * stride - padding + offset lies inside [0, width). */
static void valid_range(uint32_t out_w, uint32_t width, uint32_t stride,
                        uint32_t padding, uint32_t offset, uint32_t *lo,
                        uint32_t *hi)
{
  long first = (long)padding - offset;           /* needs ow*stride >= */
  long last = (long)width + padding - offset;    /* needs ow*stride < */

  *lo = first <= 0 ? 0 : (uint32_t)((first + stride - 1) / stride);
  *hi = last <= 0 ? 0 : (uint32_t)((last + stride - 1) / stride);
  if (*hi > out_w)
    *hi = out_w;
  if (*lo > *hi)
    *lo = *hi;
}

/* One row of col: input row ih of plane, sampled at kernel column kw. */
static void unfold_row(const float *plane, long ih, uint32_t height,
                       uint32_t width, uint32_t out_w, uint32_t stride,
                       uint32_t padding, uint32_t kw, float *dst)
{
  uint32_t lo, hi;
  const float *src;

  if (ih < 0 || ih >= height) {
    memset(dst, 0, out_w * sizeof(float));
    return;
  }
  valid_range(out_w, width, stride, padding, kw, &lo, &hi);
  if (lo > 0)
    memset(dst, 0, lo * sizeof(float));
  if (hi < out_w)
    memset(dst + hi, 0, (out_w - hi) * sizeof(float));
  if (lo == hi)
    return;
  src = plane + ih * width + ((long)lo * stride - padding + kw);
  if (stride == 1) {
    memcpy(dst + lo, src, (hi - lo) * sizeof(float));
  } else {
    for (uint32_t ow = lo; ow < hi; ow++, src += stride)
      dst[ow] = *src;
  }
}

void fedc_conv_im2col(const float *x, uint32_t channels, uint32_t height,
                      uint32_t width, uint32_t kernel, uint32_t stride,
                      uint32_t padding, float *col, size_t ld)
{
  uint32_t out_h = (height + 2 * padding - kernel) / stride + 1;
  uint32_t out_w = (width + 2 * padding - kernel) / stride + 1;

  for (uint32_t c = 0; c < channels; c++) {
    const float *plane = x + (size_t)c * height * width;

    for (uint32_t kh = 0; kh < kernel; kh++) {
      for (uint32_t kw = 0; kw < kernel; kw++, col += ld) {
        for (uint32_t oh = 0; oh < out_h; oh++)
          unfold_row(plane, (long)oh * stride - padding + kh, height, width,
                     out_w, stride, padding, kw, col + (size_t)oh * out_w);
      }
    }
  }
}

/* Adds col [C*k*k, OH*OW] (rows ld floats apart) back into the image
 * gradient dx: the adjoint of im2col. */
static void col2im(const conv *c, const float *col, size_t ld, float *dx)
{
  for (uint32_t ch = 0; ch < c->in_c; ch++) {
    float *plane = dx + (size_t)ch * c->in_h * c->in_w;

    for (uint32_t kh = 0; kh < c->kernel; kh++) {
      for (uint32_t kw = 0; kw < c->kernel; kw++, col += ld) {
        uint32_t lo, hi;

        valid_range(c->out_w, c->in_w, c->stride, c->padding, kw, &lo, &hi);
        for (uint32_t oh = 0; oh < c->out_h; oh++) {
          long ih = (long)oh * c->stride - c->padding + kh;
          const float *src = col + (size_t)oh * c->out_w;
          long base = ih * c->in_w - c->padding + kw;

          if (ih < 0 || ih >= c->in_h)
            continue;
          for (uint32_t ow = lo; ow < hi; ow++)
            plane[base + (long)ow * c->stride] += src[ow];
        }
      }
    }
  }
}

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

static int conv_reserve(conv *c, uint32_t batch)
{
  size_t width = (size_t)batch * conv_out_area(c);
  int rc = fedc_layer_reserve(&c->cols, &c->cols_cap,
                              conv_col_rows(c) * width);

  if (rc == 0)
    rc = fedc_layer_reserve(&c->planes, &c->planes_cap, c->out_c * width);
  return rc;
}

/* The whole batch is one sgemm, W [out, C*k*k] x cols [C*k*k, batch*area],
 * because per-example products are too narrow for OpenBLAS to run fast.
 * The columns stay for the backward pass. */
static int conv_forward(fedc_layer *layer, const float *x, float *y,
                        uint32_t batch, const fedc_pass *pass)
{
  conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  size_t width = (size_t)batch * area;
  int rc = conv_reserve(c, batch);

  if (rc != 0)
    return rc;
  for (uint32_t b = 0; b < batch; b++)
    fedc_conv_im2col(x + b * layer->in_size, c->in_c, c->in_h, c->in_w,
                     c->kernel, c->stride, c->padding, c->cols + b * area,
                     width);
  fedc_blas_sgemm(false, false, c->out_c, width, rows, 1.0f,
                  layer->params[0].value, rows, c->cols, width, 0.0f,
                  c->planes, width);

  /* [out, batch, area] to [batch, out, area], adding the bias. */
  for (uint32_t b = 0; b < batch; b++) {
    for (uint32_t o = 0; o < c->out_c; o++) {
      const float *src = c->planes + o * width + b * area;
      float *dst = y + b * layer->out_size + o * area;
      float bias = c->has_bias ? layer->params[1].value[o] : 0.0f;

      for (size_t i = 0; i < area; i++)
        dst[i] = src[i] + bias;
    }
  }
  return 0;
}

static int conv_backward(fedc_layer *layer, const float *x, const float *y,
                         const float *dy, float *dx, uint32_t batch)
{
  conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  size_t width = (size_t)batch * area;

  /* dy [batch, out, area] to [out, batch, area], summing the bias grad. */
  for (uint32_t b = 0; b < batch; b++) {
    for (uint32_t o = 0; o < c->out_c; o++) {
      const float *src = dy + b * layer->out_size + o * area;
      float *dst = c->planes + o * width + b * area;
      float sum = 0.0f;

      for (size_t i = 0; i < area; i++) {
        dst[i] = src[i];
        sum += src[i];
      }
      if (c->has_bias)
        layer->params[1].grad[o] += sum;
    }
  }

  /* dW [out, C*k*k] += dy [out, width] cols^T, with the forward's cols. */
  fedc_blas_sgemm(false, true, c->out_c, rows, width, 1.0f, c->planes, width,
                  c->cols, width, 1.0f, layer->params[0].grad, rows);
  if (dx == NULL)
    return 0;

  /* dcols = W^T dy overwrites cols, then folds back into each image. */
  fedc_blas_sgemm(true, false, rows, width, c->out_c, 1.0f,
                  layer->params[0].value, rows, c->planes, width, 0.0f,
                  c->cols, width);
  memset(dx, 0, batch * layer->in_size * sizeof(float));
  for (uint32_t b = 0; b < batch; b++)
    col2im(c, c->cols + b * area, width, dx + b * layer->in_size);
  return 0;
}

static size_t conv_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  const conv *c = layer->priv;

  return (conv_col_rows(c) + c->out_c) * batch * conv_out_area(c) *
         sizeof(float);
}

static void conv_destroy(fedc_layer *layer)
{
  conv *c = layer->priv;

  if (c != NULL) {
    free(c->cols);
    free(c->planes);
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
  *c = (conv){ .in_c = in->dim[0], .in_h = in->dim[1], .in_w = in->dim[2],
               .out_c = out_channels, .kernel = kernel, .stride = stride,
               .padding = padding, .has_bias = bias };
  c->out_h = (c->in_h + 2 * padding - kernel) / stride + 1;
  c->out_w = (c->in_w + 2 * padding - kernel) / stride + 1;
  fedc_layer_set_out(layer, &(fedc_shape){ 3, { out_channels, c->out_h,
                                                c->out_w } });
  if ((rc = conv_declare(layer, c)) != 0) {
    fedc_layer_free(&layer);
    return rc;
  }
  *out = layer;
  return 0;
}
