#include "nn/dense.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/blas.h"
#include "util/error.h"

typedef struct dense {
  uint32_t in_features;
  uint32_t out_features;
  bool has_bias;
} dense;

/* Rows per batch: the input's leading dimensions flatten into rows. */
static size_t dense_rows(const fedc_layer *layer, const dense *d,
                         uint32_t batch)
{
  return (layer->in_size / d->in_features) * batch;
}

/* PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives the bound
 * 1/sqrt(fan_in) for the weight, and the bias uses the same bound. */
static void dense_init(fedc_layer *layer, fedc_rng *rng)
{
  const dense *d = layer->priv;
  float bound = 1.0f / sqrtf((float)d->in_features);

  fedc_layer_init_uniform(layer->params[0].value, layer->params[0].numel,
                          bound, rng);
  if (d->has_bias)
    fedc_layer_init_uniform(layer->params[1].value, layer->params[1].numel,
                            bound, rng);
}

static int dense_forward(fedc_layer *layer, const float *x, float *y,
                         uint32_t batch, const fedc_pass *pass)
{
  const dense *d = layer->priv;
  size_t rows = dense_rows(layer, d, batch);
  size_t n = d->out_features;

  fedc_blas_sgemm(false, true, rows, n, d->in_features, 1.0f, x,
                  d->in_features, layer->params[0].value, d->in_features,
                  0.0f, y, n);
  if (d->has_bias) {
    const float *bias = layer->params[1].value;

    for (size_t r = 0; r < rows; r++)
      for (size_t j = 0; j < n; j++)
        y[r * n + j] += bias[j];
  }
  return 0;
}

static int dense_backward(fedc_layer *layer, const float *x, const float *y,
                          const float *dy, float *dx, uint32_t batch)
{
  const dense *d = layer->priv;
  size_t rows = dense_rows(layer, d, batch);
  size_t n = d->out_features;

  /* dW[out, in] += dy^T x */
  fedc_blas_sgemm(true, false, n, d->in_features, rows, 1.0f, dy, n, x,
                  d->in_features, 1.0f, layer->params[0].grad,
                  d->in_features);
  if (d->has_bias) {
    float *db = layer->params[1].grad;

    for (size_t r = 0; r < rows; r++)
      for (size_t j = 0; j < n; j++)
        db[j] += dy[r * n + j];
  }
  /* dx = dy W */
  if (dx != NULL)
    fedc_blas_sgemm(false, false, rows, d->in_features, n, 1.0f, dy, n,
                    layer->params[0].value, d->in_features, 0.0f, dx,
                    d->in_features);
  return 0;
}

static void dense_destroy(fedc_layer *layer)
{
  free(layer->priv);
}

static const fedc_layer_ops dense_ops = {
  .kind = "dense",
  .init = dense_init,
  .forward = dense_forward,
  .backward = dense_backward,
  .destroy = dense_destroy,
};

int fedc_dense_new(const char *name, const fedc_shape *in,
                   uint32_t out_features, bool bias, fedc_layer **out)
{
  fedc_layer *layer = NULL;
  dense *d = NULL;
  fedc_shape out_shape = *in;
  int rc;

  *out = NULL;
  if (in->ndim == 0 || out_features == 0)
    return FEDC_EINVAL;
  layer = fedc_layer_alloc(&dense_ops, name, in);
  d = calloc(1, sizeof(*d));
  if (layer == NULL || d == NULL) {
    free(d);
    rc = FEDC_ENOMEM;
    goto fail;
  }
  layer->priv = d;
  d->in_features = in->dim[in->ndim - 1];
  d->out_features = out_features;
  d->has_bias = bias;
  out_shape.dim[in->ndim - 1] = out_features;
  fedc_layer_set_out(layer, &out_shape);

  rc = fedc_layer_declare(layer, "weight", false, 2,
                          (uint64_t[]){ out_features, d->in_features });
  if (rc == 0 && bias)
    rc = fedc_layer_declare(layer, "bias", false, 1,
                            (uint64_t[]){ out_features });
  if (rc != 0)
    goto fail;
  *out = layer;
  return 0;

fail:
  fedc_layer_free(&layer);
  return rc;
}
