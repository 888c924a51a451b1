#include "nn/net.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

int fedc_net_new(const fedc_shape *in, fedc_net **out)
{
  fedc_net *net = calloc(1, sizeof(*net));

  *out = NULL;
  if (net == NULL)
    return FEDC_ENOMEM;
  net->in = *in;
  net->out = *in;
  *out = net;
  return 0;
}

static void net_release_buffers(fedc_net *net)
{
  if (net->acts != NULL) {
    for (size_t i = 0; i < net->count; i++)
      if (!net->layers[i]->folded)
        free(net->acts[i]);
    free(net->acts);
    net->acts = NULL;
  }
  free(net->grad[0]);
  free(net->grad[1]);
  net->grad[0] = net->grad[1] = NULL;
  net->batch_cap = 0;
}

void fedc_net_free(fedc_net **net)
{
  if (net == NULL || *net == NULL)
    return;
  net_release_buffers(*net);
  for (size_t i = 0; i < (*net)->count; i++)
    fedc_layer_free(&(*net)->layers[i]);
  free((*net)->layers);
  free(*net);
  *net = NULL;
}

static bool shape_equal(const fedc_shape *a, const fedc_shape *b)
{
  if (a->ndim != b->ndim)
    return false;
  for (uint32_t i = 0; i < a->ndim; i++)
    if (a->dim[i] != b->dim[i])
      return false;
  return true;
}

/* Folds a ReLU into the layer before it when that layer can apply it,
 * and hands the ReLU's derivative to the layer after it when that one can
 * apply it more cheaply. */
static void fold_relu(fedc_net *net, fedc_layer *layer)
{
  fedc_layer *prev = net->layers[net->count - 1];

  if (prev->fuses_relu && !prev->relu_out &&
      strcmp(layer->ops->kind, "relu") == 0) {
    prev->relu_out = true;
    layer->folded = true;
  } else if (prev->folded && layer->takes_relu_grad) {
    layer->relu_grad = true;
    net->layers[net->count - 2]->relu_grad_done = true;
  }
}

int fedc_net_append(fedc_net *net, fedc_layer *layer)
{
  if (!shape_equal(&layer->in, &net->out)) {
    fedc_layer_free(&layer);
    return FEDC_ESHAPE;
  }
  if (net->count == net->capacity) {
    size_t cap = net->capacity ? 2 * net->capacity : 8;
    fedc_layer **grown = realloc(net->layers, cap * sizeof(*grown));

    if (grown == NULL) {
      fedc_layer_free(&layer);
      return FEDC_ENOMEM;
    }
    net->layers = grown;
    net->capacity = cap;
  }
  /* Buffers were sized for the old layer list. */
  net_release_buffers(net);
  if (net->count > 0)
    fold_relu(net, layer);
  net->layers[net->count++] = layer;
  net->out = layer->out;
  if (layer->out_size > net->max_size)
    net->max_size = layer->out_size;
  if (layer->in_size > net->max_size)
    net->max_size = layer->in_size;
  return 0;
}

/* Sizes the activation and gradient buffers for batch examples. */
static int net_reserve(fedc_net *net, uint32_t batch)
{
  if (batch <= net->batch_cap)
    return 0;
  net_release_buffers(net);
  net->acts = calloc(net->count, sizeof(*net->acts));
  if (net->acts == NULL)
    return FEDC_ENOMEM;
  for (size_t i = 0; i < net->count; i++) {
    /* A folded ReLU runs in place, inside the layer before it. */
    if (net->layers[i]->folded) {
      net->acts[i] = net->acts[i - 1];
      continue;
    }
    net->acts[i] = malloc(net->layers[i]->out_size * batch * sizeof(float) + 1);
    if (net->acts[i] == NULL)
      goto fail;
  }
  for (int i = 0; i < 2; i++) {
    net->grad[i] = malloc(net->max_size * batch * sizeof(float) + 1);
    if (net->grad[i] == NULL)
      goto fail;
  }
  net->batch_cap = batch;
  return 0;

fail:
  net_release_buffers(net);
  return FEDC_ENOMEM;
}

int fedc_net_forward(fedc_net *net, const float *x, uint32_t batch,
                     const fedc_pass *pass, const float **y)
{
  const float *in = x;
  int rc = net_reserve(net, batch);

  if (rc != 0)
    return rc;
  for (size_t i = 0; i < net->count; i++) {
    fedc_layer *layer = net->layers[i];

    if (!layer->folded &&
        (rc = layer->ops->forward(layer, in, net->acts[i], batch, pass)) != 0)
      return rc;
    in = net->acts[i];
  }
  *y = in;
  return 0;
}

int fedc_net_backward(fedc_net *net, const float *x, const float *dy,
                      float *dx, uint32_t batch)
{
  const float *grad_out = dy;

  if (net->count == 0) {
    if (dx != NULL && dx != dy)
      memcpy(dx, dy, fedc_layer_shape_size(&net->in) * batch * sizeof(float));
    return 0;
  }
  for (size_t i = net->count; i-- > 0;) {
    fedc_layer *layer = net->layers[i];
    const float *in = i > 0 ? net->acts[i - 1] : x;
    /* Alternate between the two buffers; folded layers break parity. */
    float *grad_in = i == 0 ? dx
                     : grad_out == net->grad[0] ? net->grad[1] : net->grad[0];
    int rc;

    if (layer->folded)
      continue;
    rc = layer->ops->backward(layer, in, net->acts[i], grad_out, grad_in,
                              batch);
    if (rc != 0)
      return rc;
    grad_out = grad_in;
  }
  return 0;
}

void fedc_net_visit(fedc_net *net, void (*fn)(fedc_layer *layer, void *ctx),
                    void *ctx)
{
  for (size_t i = 0; i < net->count; i++) {
    fedc_layer *layer = net->layers[i];

    fn(layer, ctx);
    for (int s = 0; s < 2; s++)
      if (layer->sub[s] != NULL)
        fedc_net_visit(layer->sub[s], fn, ctx);
  }
}

size_t fedc_net_train_bytes(const fedc_net *net, uint32_t batch)
{
  size_t bytes = 2 * net->max_size * batch * sizeof(float);

  for (size_t i = 0; i < net->count; i++) {
    const fedc_layer *layer = net->layers[i];

    if (!layer->folded)
      bytes += layer->out_size * batch * sizeof(float);
    if (layer->ops->scratch_bytes != NULL)
      bytes += layer->ops->scratch_bytes(layer, batch);
    for (int s = 0; s < 2; s++)
      if (layer->sub[s] != NULL)
        bytes += fedc_net_train_bytes(layer->sub[s], batch);
  }
  return bytes;
}
