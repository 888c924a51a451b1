#include "nn/layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/net.h"
#include "util/error.h"

size_t fedc_layer_shape_size(const fedc_shape *shape)
{
  size_t size = 1;

  for (uint32_t i = 0; i < shape->ndim; i++)
    size *= shape->dim[i];
  return size;
}

void fedc_layer_shape_format(const fedc_shape *shape, char *buf, size_t len)
{
  size_t used = 0;

  if (len == 0)
    return;
  buf[0] = '\0';
  for (uint32_t i = 0; i < shape->ndim && used < len; i++) {
    int n = snprintf(buf + used, len - used, i == 0 ? "%u" : "x%u",
                     shape->dim[i]);

    if (n < 0)
      return;
    used += (size_t)n;
  }
}

fedc_layer *fedc_layer_alloc(const fedc_layer_ops *ops, const char *name,
                             const fedc_shape *in)
{
  fedc_layer *layer = calloc(1, sizeof(*layer));

  if (layer == NULL)
    return NULL;
  layer->ops = ops;
  snprintf(layer->name, sizeof(layer->name), "%s", name);
  layer->in = *in;
  layer->in_size = fedc_layer_shape_size(in);
  return layer;
}

void fedc_layer_set_out(fedc_layer *layer, const fedc_shape *out)
{
  layer->out = *out;
  layer->out_size = fedc_layer_shape_size(out);
}

int fedc_layer_declare(fedc_layer *layer, const char *suffix, bool is_buffer,
                       int ndim, const uint64_t *shape)
{
  fedc_param *list = is_buffer ? layer->buffers : layer->params;
  size_t *count = is_buffer ? &layer->num_buffers : &layer->num_params;
  size_t max = is_buffer ? FEDC_LAYER_MAX_BUFFERS : FEDC_LAYER_MAX_PARAMS;
  fedc_param *p;
  int n;

  if (*count >= max || ndim < 1 || ndim > FEDC_PARAM_MAX_DIMS)
    return FEDC_EINVAL;
  p = &list[*count];
  memset(p, 0, sizeof(*p));
  n = snprintf(p->name, sizeof(p->name), "%s%s%s", layer->name,
               layer->name[0] != '\0' ? "." : "", suffix);
  if (n < 0 || (size_t)n >= sizeof(p->name))
    return FEDC_EINVAL;
  p->ndim = ndim;
  p->numel = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == 0 || p->numel > SIZE_MAX / shape[i])
      return FEDC_EOVERFLOW;
    p->shape[i] = shape[i];
    p->numel *= shape[i];
  }
  (*count)++;
  return 0;
}

void fedc_layer_free(fedc_layer **layer)
{
  if (layer == NULL || *layer == NULL)
    return;
  if ((*layer)->ops->destroy != NULL)
    (*layer)->ops->destroy(*layer);
  fedc_net_free(&(*layer)->sub[0]);
  fedc_net_free(&(*layer)->sub[1]);
  free(*layer);
  *layer = NULL;
}

/* Grows *buf to count elements of elem bytes. */
static int reserve_bytes(void **buf, size_t *cap, size_t count, size_t elem)
{
  void *grown;

  if (count <= *cap && *buf != NULL)
    return 0;
  if (count > SIZE_MAX / elem)
    return FEDC_EOVERFLOW;
  grown = realloc(*buf, (count > 0 ? count : 1) * elem);
  if (grown == NULL)
    return FEDC_ENOMEM;
  *buf = grown;
  *cap = count;
  return 0;
}

int fedc_layer_reserve(float **buf, size_t *cap, size_t count)
{
  void *p = *buf;
  int rc = reserve_bytes(&p, cap, count, sizeof(float));

  *buf = p;
  return rc;
}

int fedc_layer_reserve_index(int32_t **buf, size_t *cap, size_t count)
{
  void *p = *buf;
  int rc = reserve_bytes(&p, cap, count, sizeof(int32_t));

  *buf = p;
  return rc;
}

static bool use_reference;

void fedc_layer_set_reference(bool reference)
{
  use_reference = reference;
}

bool fedc_layer_reference(void)
{
  return use_reference;
}

void fedc_layer_init_uniform(float *x, size_t n, float bound, fedc_rng *rng)
{
  for (size_t i = 0; i < n; i++)
    x[i] = (float)((2.0 * fedc_rng_uniform(rng) - 1.0) * bound);
}
