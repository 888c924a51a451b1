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
  bool direct;               /* 1x1, stride 1, no padding: col is x itself */
  float *col;                /* [C*k*k, OH*OW] scratch for one example */
  size_t col_cap;
} conv;

static size_t conv_col_rows(const conv *c)
{
  return (size_t)c->in_c * c->kernel * c->kernel;
}

static size_t conv_out_area(const conv *c)
{
  return (size_t)c->out_h * c->out_w;
}

void fedc_conv_im2col(const float *x, uint32_t channels, uint32_t height,
                      uint32_t width, uint32_t kernel, uint32_t stride,
                      uint32_t padding, float *col)
{
  uint32_t out_h = (height + 2 * padding - kernel) / stride + 1;
  uint32_t out_w = (width + 2 * padding - kernel) / stride + 1;

  for (uint32_t c = 0; c < channels; c++) {
    for (uint32_t kh = 0; kh < kernel; kh++) {
      for (uint32_t kw = 0; kw < kernel; kw++) {
        const float *plane = x + (size_t)c * height * width;

        for (uint32_t oh = 0; oh < out_h; oh++) {
          long ih = (long)oh * stride - padding + kh;

          for (uint32_t ow = 0; ow < out_w; ow++) {
            long iw = (long)ow * stride - padding + kw;
            bool inside = ih >= 0 && ih < height && iw >= 0 && iw < width;

            *col++ = inside ? plane[ih * width + iw] : 0.0f;
          }
        }
      }
    }
  }
}

/* Adds col [C*k*k, OH*OW] back into the image gradient dx (the adjoint of
 * im2col). */
static void col2im(const conv *c, const float *col, float *dx)
{
  for (uint32_t ch = 0; ch < c->in_c; ch++) {
    for (uint32_t kh = 0; kh < c->kernel; kh++) {
      for (uint32_t kw = 0; kw < c->kernel; kw++) {
        float *plane = dx + (size_t)ch * c->in_h * c->in_w;

        for (uint32_t oh = 0; oh < c->out_h; oh++) {
          long ih = (long)oh * c->stride - c->padding + kh;

          for (uint32_t ow = 0; ow < c->out_w; ow++, col++) {
            long iw = (long)ow * c->stride - c->padding + kw;

            if (ih >= 0 && ih < c->in_h && iw >= 0 && iw < c->in_w)
              plane[ih * c->in_w + iw] += *col;
          }
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

/* Returns the unfolded input of one example: x itself for a direct
 * convolution, the scratch buffer otherwise. */
static const float *conv_unfold(conv *c, const float *x)
{
  if (c->direct)
    return x;
  fedc_conv_im2col(x, c->in_c, c->in_h, c->in_w, c->kernel, c->stride,
                   c->padding, c->col);
  return c->col;
}

static int conv_forward(fedc_layer *layer, const float *x, float *y,
                        uint32_t batch, const fedc_pass *pass)
{
  conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  int rc = fedc_layer_reserve(&c->col, &c->col_cap, rows * area);

  if (rc != 0)
    return rc;
  for (uint32_t b = 0; b < batch; b++) {
    const float *col = conv_unfold(c, x + b * layer->in_size);
    float *yb = y + b * layer->out_size;

    fedc_blas_sgemm(false, false, c->out_c, area, rows, 1.0f,
                    layer->params[0].value, rows, col, area, 0.0f, yb, area);
    for (uint32_t o = 0; c->has_bias && o < c->out_c; o++) {
      float bias = layer->params[1].value[o];

      for (size_t i = 0; i < area; i++)
        yb[o * area + i] += bias;
    }
  }
  return 0;
}

static int conv_backward(fedc_layer *layer, const float *x, const float *y,
                         const float *dy, float *dx, uint32_t batch)
{
  conv *c = layer->priv;
  size_t rows = conv_col_rows(c), area = conv_out_area(c);
  int rc = fedc_layer_reserve(&c->col, &c->col_cap, rows * area);

  if (rc != 0)
    return rc;
  for (uint32_t b = 0; b < batch; b++) {
    const float *dyb = dy + b * layer->out_size;
    const float *col = conv_unfold(c, x + b * layer->in_size);

    /* dW [out, C*k*k] += dy_b [out, area] col^T */
    fedc_blas_sgemm(false, true, c->out_c, rows, area, 1.0f, dyb, area, col,
                    area, 1.0f, layer->params[0].grad, rows);
    for (uint32_t o = 0; c->has_bias && o < c->out_c; o++)
      for (size_t i = 0; i < area; i++)
        layer->params[1].grad[o] += dyb[o * area + i];
    if (dx == NULL)
      continue;

    /* dcol = W^T dy_b, then folded back into the image. */
    float *dxb = dx + b * layer->in_size;
    float *dcol = c->direct ? dxb : c->col;

    fedc_blas_sgemm(true, false, rows, area, c->out_c, 1.0f,
                    layer->params[0].value, rows, dyb, area, 0.0f, dcol, area);
    if (!c->direct) {
      memset(dxb, 0, layer->in_size * sizeof(float));
      col2im(c, dcol, dxb);
    }
  }
  return 0;
}

static size_t conv_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  const conv *c = layer->priv;

  return c->direct ? 0 : conv_col_rows(c) * conv_out_area(c) * sizeof(float);
}

static void conv_destroy(fedc_layer *layer)
{
  conv *c = layer->priv;

  if (c != NULL)
    free(c->col);
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
  c->direct = kernel == 1 && stride == 1 && padding == 0;
  fedc_layer_set_out(layer, &(fedc_shape){ 3, { out_channels, c->out_h,
                                                c->out_w } });
  if ((rc = conv_declare(layer, c)) != 0) {
    fedc_layer_free(&layer);
    return rc;
  }
  *out = layer;
  return 0;
}
