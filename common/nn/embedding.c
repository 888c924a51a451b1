#include "nn/embedding.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"

typedef struct embedding {
  uint32_t vocab;
  uint32_t dim;
  uint32_t length;           /* ids per example */
  bool bag;
  int64_t padding;
} embedding;

static void embedding_init(fedc_layer *layer, fedc_rng *rng)
{
  const embedding *e = layer->priv;
  float *w = layer->params[0].value;

  for (size_t i = 0; i < layer->params[0].numel; i++)
    w[i] = (float)fedc_rng_normal(rng);
  if (e->padding >= 0)
    memset(w + (size_t)e->padding * e->dim, 0, e->dim * sizeof(float));
}

/* Converts id to an index, or returns -1 when it is not a valid id. */
static int64_t token_index(const embedding *e, float id)
{
  if (!(id >= 0.0f && id < (float)e->vocab) || id != floorf(id))
    return -1;
  return (int64_t)id;
}

static int check_ids(const embedding *e, const float *x, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (token_index(e, x[i]) < 0) {
      fedc_warn("nn", "token id %g is not an integer in [0, %u)",
                (double)x[i], e->vocab);
      return FEDC_EINVAL;
    }
  }
  return 0;
}

/* Returns the number of ids in one example that are not padding. */
static uint32_t bag_count(const embedding *e, const float *ids)
{
  uint32_t count = 0;

  for (uint32_t t = 0; t < e->length; t++)
    count += token_index(e, ids[t]) != e->padding;
  return count;
}

static int embedding_forward(fedc_layer *layer, const float *x, float *y,
                             uint32_t batch, const fedc_pass *pass)
{
  const embedding *e = layer->priv;
  const float *w = layer->params[0].value;
  int rc = check_ids(e, x, batch * layer->in_size);

  if (rc != 0)
    return rc;
  memset(y, 0, batch * layer->out_size * sizeof(float));
  for (uint32_t b = 0; b < batch; b++) {
    const float *ids = x + b * layer->in_size;
    float *out = y + b * layer->out_size;
    uint32_t count = e->bag ? bag_count(e, ids) : 1;

    for (uint32_t t = 0; t < e->length; t++) {
      int64_t id = token_index(e, ids[t]);
      const float *row = w + id * e->dim;
      float *dst = e->bag ? out : out + (size_t)t * e->dim;

      if (e->bag && id == e->padding)
        continue;
      for (uint32_t j = 0; j < e->dim; j++)
        dst[j] += row[j] / (float)count;
    }
  }
  return 0;
}

static int embedding_backward(fedc_layer *layer, const float *x,
                              const float *y, const float *dy, float *dx,
                              uint32_t batch)
{
  const embedding *e = layer->priv;
  float *dw = layer->params[0].grad;

  for (uint32_t b = 0; b < batch; b++) {
    const float *ids = x + b * layer->in_size;
    const float *d = dy + b * layer->out_size;
    uint32_t count = e->bag ? bag_count(e, ids) : 1;

    for (uint32_t t = 0; t < e->length; t++) {
      int64_t id = token_index(e, ids[t]);
      const float *src = e->bag ? d : d + (size_t)t * e->dim;

      if (id == e->padding)
        continue;
      for (uint32_t j = 0; j < e->dim; j++)
        dw[id * e->dim + j] += src[j] / (float)count;
    }
  }
  /* Ids are not differentiable. */
  if (dx != NULL)
    memset(dx, 0, batch * layer->in_size * sizeof(float));
  return 0;
}

static void embedding_destroy(fedc_layer *layer)
{
  free(layer->priv);
}

static const fedc_layer_ops embedding_ops[2] = {
  { "embedding", embedding_init, embedding_forward, embedding_backward, NULL,
    embedding_destroy },
  { "embeddingbag", embedding_init, embedding_forward, embedding_backward,
    NULL, embedding_destroy },
};

int fedc_embedding_new(const char *name, const fedc_shape *in, uint32_t vocab,
                       uint32_t dim, bool bag, int64_t padding,
                       fedc_layer **out)
{
  fedc_layer *layer;
  embedding *e;
  int rc;

  *out = NULL;
  if (in->ndim != 1 || vocab == 0 || vocab > (1u << 24) || dim == 0 ||
      padding < FEDC_EMBEDDING_NO_PADDING || padding >= (int64_t)vocab)
    return FEDC_EINVAL;
  layer = fedc_layer_alloc(&embedding_ops[bag], name, in);
  e = calloc(1, sizeof(*e));
  if (layer == NULL || e == NULL) {
    free(e);
    fedc_layer_free(&layer);
    return FEDC_ENOMEM;
  }
  *e = (embedding){ vocab, dim, in->dim[0], bag, padding };
  layer->priv = e;
  fedc_layer_set_out(layer, bag ? &(fedc_shape){ 1, { dim } }
                                : &(fedc_shape){ 2, { in->dim[0], dim } });
  rc = fedc_layer_declare(layer, "weight", false, 2,
                          (uint64_t[]){ vocab, dim });
  if (rc != 0) {
    fedc_layer_free(&layer);
    return rc;
  }
  *out = layer;
  return 0;
}
