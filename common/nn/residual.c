#include "nn/residual.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

typedef struct residual {
  float *dx_body;            /* input gradient through the body */
  size_t dx_cap;
} residual;

static int residual_forward(fedc_layer *layer, const float *x, float *y,
                            uint32_t batch, const fedc_pass *pass)
{
  const float *body_y, *short_y = x;
  size_t n = batch * layer->out_size;
  int rc = fedc_net_forward(layer->sub[0], x, batch, pass, &body_y);

  if (rc == 0 && layer->sub[1] != NULL)
    rc = fedc_net_forward(layer->sub[1], x, batch, pass, &short_y);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    y[i] = body_y[i] + short_y[i];
  return 0;
}

static int residual_backward(fedc_layer *layer, const float *x,
                             const float *y, const float *dy, float *dx,
                             uint32_t batch)
{
  residual *r = layer->priv;
  size_t n = batch * layer->in_size;
  int rc;

  /* The shortcut writes dx directly; the body goes through a buffer. */
  if (dx != NULL &&
      (rc = fedc_layer_reserve(&r->dx_body, &r->dx_cap, n)) != 0)
    return rc;
  rc = fedc_net_backward(layer->sub[0], x, dy, dx != NULL ? r->dx_body : NULL,
                         batch);
  if (rc != 0 || dx == NULL)
    return rc;
  if (layer->sub[1] != NULL)
    rc = fedc_net_backward(layer->sub[1], x, dy, dx, batch);
  else
    memcpy(dx, dy, n * sizeof(float));
  for (size_t i = 0; rc == 0 && i < n; i++)
    dx[i] += r->dx_body[i];
  return rc;
}

static size_t residual_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  return batch * layer->in_size * sizeof(float);
}

static void residual_destroy(fedc_layer *layer)
{
  residual *r = layer->priv;

  if (r != NULL)
    free(r->dx_body);
  free(r);
}

static const fedc_layer_ops residual_ops = {
  .kind = "residual",
  .forward = residual_forward,
  .backward = residual_backward,
  .scratch_bytes = residual_scratch_bytes,
  .destroy = residual_destroy,
};

static bool same_shape(const fedc_shape *a, const fedc_shape *b)
{
  return a->ndim == b->ndim &&
         memcmp(a->dim, b->dim, a->ndim * sizeof(a->dim[0])) == 0;
}

int fedc_residual_new(const char *name, const fedc_shape *in, fedc_net *body,
                      fedc_net *shortcut, fedc_layer **out)
{
  const fedc_shape *short_out = shortcut != NULL ? &shortcut->out : in;
  fedc_layer *layer = NULL;
  int rc = 0;

  *out = NULL;
  if (body == NULL || !same_shape(&body->in, in) || body->count == 0 ||
      (shortcut != NULL && !same_shape(&shortcut->in, in)) ||
      !same_shape(&body->out, short_out)) {
    rc = FEDC_EINVAL;
    goto fail;
  }
  layer = fedc_layer_alloc(&residual_ops, name, in);
  if (layer == NULL || (layer->priv = calloc(1, sizeof(residual))) == NULL) {
    rc = FEDC_ENOMEM;
    goto fail;
  }
  layer->sub[0] = body;
  layer->sub[1] = shortcut;
  fedc_layer_set_out(layer, &body->out);
  *out = layer;
  return 0;

fail:
  fedc_layer_free(&layer);
  fedc_net_free(&body);
  fedc_net_free(&shortcut);
  return rc;
}
