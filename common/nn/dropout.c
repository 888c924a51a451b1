#include "nn/dropout.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

typedef struct dropout {
  float p;
  bool trained;              /* the latest forward applied a mask */
  float *scale;              /* per value: 0 or 1 / (1 - p) */
  size_t scale_cap;
} dropout;

static int dropout_forward(fedc_layer *layer, const float *x, float *y,
                           uint32_t batch, const fedc_pass *pass)
{
  dropout *d = layer->priv;
  size_t n = batch * layer->in_size;
  float keep_scale = 1.0f / (1.0f - d->p);
  int rc;

  d->trained = pass->train && d->p > 0.0f && pass->rng != NULL;
  if (!d->trained) {
    memcpy(y, x, n * sizeof(float));
    return 0;
  }
  if ((rc = fedc_layer_reserve(&d->scale, &d->scale_cap, n)) != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    d->scale[i] = fedc_rng_uniform(pass->rng) < d->p ? 0.0f : keep_scale;
    y[i] = x[i] * d->scale[i];
  }
  return 0;
}

static int dropout_backward(fedc_layer *layer, const float *x, const float *y,
                            const float *dy, float *dx, uint32_t batch)
{
  const dropout *d = layer->priv;
  size_t n = batch * layer->in_size;

  if (dx == NULL)
    return 0;
  if (!d->trained) {
    memcpy(dx, dy, n * sizeof(float));
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    dx[i] = dy[i] * d->scale[i];
  return 0;
}

static size_t dropout_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  return batch * layer->in_size * sizeof(float);
}

static void dropout_destroy(fedc_layer *layer)
{
  dropout *d = layer->priv;

  if (d != NULL)
    free(d->scale);
  free(d);
}

static const fedc_layer_ops dropout_ops = {
  .kind = "dropout",
  .forward = dropout_forward,
  .backward = dropout_backward,
  .scratch_bytes = dropout_scratch_bytes,
  .destroy = dropout_destroy,
};

int fedc_dropout_new(const char *name, const fedc_shape *in, float p,
                     fedc_layer **out)
{
  fedc_layer *layer;
  dropout *d;

  *out = NULL;
  if (!(p >= 0.0f && p < 1.0f))
    return FEDC_EINVAL;
  layer = fedc_layer_alloc(&dropout_ops, name, in);
  d = calloc(1, sizeof(*d));
  if (layer == NULL || d == NULL) {
    free(d);
    fedc_layer_free(&layer);
    return FEDC_ENOMEM;
  }
  d->p = p;
  layer->priv = d;
  fedc_layer_set_out(layer, in);
  *out = layer;
  return 0;
}
