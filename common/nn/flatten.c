#include "nn/flatten.h"

#include <string.h>

#include "util/error.h"

static int flatten_forward(fedc_layer *layer, const float *x, float *y,
                           uint32_t batch, const fedc_pass *pass)
{
  memcpy(y, x, batch * layer->in_size * sizeof(float));
  return 0;
}

static int flatten_backward(fedc_layer *layer, const float *x, const float *y,
                            const float *dy, float *dx, uint32_t batch)
{
  if (dx != NULL)
    memcpy(dx, dy, batch * layer->in_size * sizeof(float));
  return 0;
}

static const fedc_layer_ops flatten_ops = {
  .kind = "flatten",
  .forward = flatten_forward,
  .backward = flatten_backward,
};

int fedc_flatten_new(const char *name, const fedc_shape *in,
                     fedc_layer **out)
{
  fedc_layer *layer = fedc_layer_alloc(&flatten_ops, name, in);
  fedc_shape flat = { 1, { 0 } };

  *out = NULL;
  if (layer == NULL)
    return FEDC_ENOMEM;
  flat.dim[0] = (uint32_t)layer->in_size;
  fedc_layer_set_out(layer, &flat);
  *out = layer;
  return 0;
}
