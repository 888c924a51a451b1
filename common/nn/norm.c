#include "nn/norm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

typedef struct norm {
  float eps;
  float momentum;            /* batch norm only */
  size_t groups;             /* batch norm: channels; layer norm: per example */
  size_t group_size;         /* features normalized together per example */
  bool trained;              /* the latest forward used batch statistics */
  float *mean;               /* per group of the latest forward */
  float *inv_std;
  size_t stats_cap;
} norm;

/* --- Shared --------------------------------------------------------------- */

static void norm_init(fedc_layer *layer, fedc_rng *rng)
{
  for (size_t i = 0; i < layer->params[0].numel; i++) {
    layer->params[0].value[i] = 1.0f;
    layer->params[1].value[i] = 0.0f;
  }
  if (layer->num_buffers == 2) {
    for (size_t i = 0; i < layer->buffers[0].numel; i++) {
      layer->buffers[0].value[i] = 0.0f;
      layer->buffers[1].value[i] = 1.0f;
    }
  }
}

static void norm_destroy(fedc_layer *layer)
{
  norm *n = layer->priv;

  if (n != NULL) {
    free(n->mean);
    free(n->inv_std);
  }
  free(n);
}

static int norm_reserve(norm *n, size_t count)
{
  size_t cap = n->stats_cap;
  int rc = fedc_layer_reserve(&n->mean, &cap, count);

  if (rc == 0)
    rc = fedc_layer_reserve(&n->inv_std, &n->stats_cap, count);
  return rc;
}

/* Given dxhat = dy * gamma of one group of count values, its normalized
 * inputs xhat and the group's 1/std, the input gradient is
 * inv_std / count * (count * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).
 * The caller passes those two sums. */
static float norm_input_grad(float dxhat, float xhat, double sum_dxhat,
                             double sum_dxhat_xhat, float inv_std, size_t count)
{
  return (float)(inv_std / (double)count *
                 ((double)count * dxhat - sum_dxhat - xhat * sum_dxhat_xhat));
}

static fedc_layer *norm_alloc(const fedc_layer_ops *ops, const char *name,
                              const fedc_shape *in, float eps)
{
  fedc_layer *layer = fedc_layer_alloc(ops, name, in);
  norm *n = calloc(1, sizeof(*n));

  if (layer == NULL || n == NULL) {
    free(n);
    fedc_layer_free(&layer);
    return NULL;
  }
  n->eps = eps;
  layer->priv = n;
  fedc_layer_set_out(layer, in);
  return layer;
}

/* --- Batch norm ------------------------------------------------------------ */

/* Computes the batch mean and variance of channel c and folds them into
 * the running statistics. */
static void batch_stats(fedc_layer *layer, const float *x, uint32_t batch,
                        size_t c)
{
  norm *n = layer->priv;
  size_t count = batch * n->group_size;
  double sum = 0.0, sum2 = 0.0, mean, var;

  for (uint32_t b = 0; b < batch; b++) {
    const float *v = x + b * layer->in_size + c * n->group_size;

    for (size_t i = 0; i < n->group_size; i++)
      sum += v[i];
  }
  mean = sum / (double)count;
  for (uint32_t b = 0; b < batch; b++) {
    const float *v = x + b * layer->in_size + c * n->group_size;

    for (size_t i = 0; i < n->group_size; i++)
      sum2 += (v[i] - mean) * (v[i] - mean);
  }
  var = sum2 / (double)count;
  n->mean[c] = (float)mean;
  n->inv_std[c] = (float)(1.0 / sqrt(var + n->eps));

  float *running_mean = layer->buffers[0].value;
  float *running_var = layer->buffers[1].value;
  double unbiased = count > 1 ? sum2 / (double)(count - 1) : var;

  running_mean[c] = (1.0f - n->momentum) * running_mean[c] +
                    n->momentum * (float)mean;
  running_var[c] = (1.0f - n->momentum) * running_var[c] +
                   n->momentum * (float)unbiased;
}

static int batchnorm_forward(fedc_layer *layer, const float *x, float *y,
                             uint32_t batch, const fedc_pass *pass)
{
  norm *n = layer->priv;
  const float *gamma = layer->params[0].value, *beta = layer->params[1].value;
  int rc = norm_reserve(n, n->groups);

  if (rc != 0)
    return rc;
  n->trained = pass->train;
  for (size_t c = 0; c < n->groups; c++) {
    if (pass->train) {
      batch_stats(layer, x, batch, c);
    } else {
      n->mean[c] = layer->buffers[0].value[c];
      n->inv_std[c] = 1.0f / sqrtf(layer->buffers[1].value[c] + n->eps);
    }
    for (uint32_t b = 0; b < batch; b++) {
      size_t off = b * layer->in_size + c * n->group_size;

      for (size_t i = 0; i < n->group_size; i++)
        y[off + i] = gamma[c] * (x[off + i] - n->mean[c]) * n->inv_std[c] +
                     beta[c];
    }
  }
  return 0;
}

static int batchnorm_backward(fedc_layer *layer, const float *x,
                              const float *y, const float *dy, float *dx,
                              uint32_t batch)
{
  const norm *n = layer->priv;
  const float *gamma = layer->params[0].value;
  size_t count = batch * n->group_size;

  for (size_t c = 0; c < n->groups; c++) {
    double sum_dy = 0.0, sum_dy_xhat = 0.0;

    for (uint32_t b = 0; b < batch; b++) {
      size_t off = b * layer->in_size + c * n->group_size;

      for (size_t i = 0; i < n->group_size; i++) {
        sum_dy += dy[off + i];
        sum_dy_xhat += dy[off + i] * (x[off + i] - n->mean[c]) * n->inv_std[c];
      }
    }
    layer->params[0].grad[c] += (float)sum_dy_xhat;
    layer->params[1].grad[c] += (float)sum_dy;
    for (uint32_t b = 0; dx != NULL && b < batch; b++) {
      size_t off = b * layer->in_size + c * n->group_size;

      for (size_t i = 0; i < n->group_size; i++) {
        float xhat = (x[off + i] - n->mean[c]) * n->inv_std[c];

        /* In eval mode the statistics are constants. */
        dx[off + i] = n->trained
            ? norm_input_grad(dy[off + i] * gamma[c], xhat, sum_dy * gamma[c],
                              sum_dy_xhat * gamma[c], n->inv_std[c], count)
            : dy[off + i] * gamma[c] * n->inv_std[c];
      }
    }
  }
  return 0;
}

static const fedc_layer_ops batchnorm_ops = {
  .kind = "batchnorm",
  .init = norm_init,
  .forward = batchnorm_forward,
  .backward = batchnorm_backward,
  .destroy = norm_destroy,
};

int fedc_norm_batch_new(const char *name, const fedc_shape *in, float eps,
                        float momentum, fedc_layer **out)
{
  fedc_layer *layer;
  norm *n;
  uint64_t channels[1];
  int rc = 0;

  *out = NULL;
  if (in->ndim == 0 || !(eps > 0.0f) || !(momentum >= 0.0f && momentum <= 1.0f))
    return FEDC_EINVAL;
  if ((layer = norm_alloc(&batchnorm_ops, name, in, eps)) == NULL)
    return FEDC_ENOMEM;
  n = layer->priv;
  n->momentum = momentum;
  n->groups = in->dim[0];
  n->group_size = layer->in_size / in->dim[0];
  channels[0] = in->dim[0];
  const char *names[] = { "weight", "bias", "running_mean", "running_var" };

  for (int i = 0; i < 4 && rc == 0; i++)
    rc = fedc_layer_declare(layer, names[i], i >= 2, 1, channels);
  if (rc != 0) {
    fedc_layer_free(&layer);
    return rc;
  }
  *out = layer;
  return 0;
}

/* --- Layer norm ------------------------------------------------------------ */

static int layernorm_forward(fedc_layer *layer, const float *x, float *y,
                             uint32_t batch, const fedc_pass *pass)
{
  norm *n = layer->priv;
  const float *gamma = layer->params[0].value, *beta = layer->params[1].value;
  size_t groups = batch * n->groups;
  int rc = norm_reserve(n, groups);

  for (size_t g = 0; rc == 0 && g < groups; g++) {
    const float *v = x + g * n->group_size;
    float *out = y + g * n->group_size;
    double sum = 0.0, sum2 = 0.0;

    for (size_t i = 0; i < n->group_size; i++)
      sum += v[i];
    n->mean[g] = (float)(sum / (double)n->group_size);
    for (size_t i = 0; i < n->group_size; i++)
      sum2 += (v[i] - n->mean[g]) * (v[i] - n->mean[g]);
    n->inv_std[g] = (float)(1.0 / sqrt(sum2 / (double)n->group_size + n->eps));
    for (size_t i = 0; i < n->group_size; i++)
      out[i] = gamma[i] * (v[i] - n->mean[g]) * n->inv_std[g] + beta[i];
  }
  return rc;
}

static int layernorm_backward(fedc_layer *layer, const float *x,
                              const float *y, const float *dy, float *dx,
                              uint32_t batch)
{
  const norm *n = layer->priv;
  const float *gamma = layer->params[0].value;
  size_t groups = batch * n->groups;

  for (size_t g = 0; g < groups; g++) {
    const float *v = x + g * n->group_size, *d = dy + g * n->group_size;
    double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;

    for (size_t i = 0; i < n->group_size; i++) {
      float xhat = (v[i] - n->mean[g]) * n->inv_std[g];

      layer->params[0].grad[i] += d[i] * xhat;
      layer->params[1].grad[i] += d[i];
      sum_dxhat += d[i] * gamma[i];
      sum_dxhat_xhat += d[i] * gamma[i] * xhat;
    }
    for (size_t i = 0; dx != NULL && i < n->group_size; i++) {
      float xhat = (v[i] - n->mean[g]) * n->inv_std[g];

      dx[g * n->group_size + i] =
          norm_input_grad(d[i] * gamma[i], xhat, sum_dxhat, sum_dxhat_xhat,
                          n->inv_std[g], n->group_size);
    }
  }
  return 0;
}

static size_t layernorm_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  const norm *n = layer->priv;

  return 2 * batch * n->groups * sizeof(float);
}

static const fedc_layer_ops layernorm_ops = {
  .kind = "layernorm",
  .init = norm_init,
  .forward = layernorm_forward,
  .backward = layernorm_backward,
  .scratch_bytes = layernorm_scratch_bytes,
  .destroy = norm_destroy,
};

int fedc_norm_layer_new(const char *name, const fedc_shape *in,
                        uint32_t norm_dims, float eps, fedc_layer **out)
{
  fedc_layer *layer;
  norm *n;
  uint64_t shape[FEDC_SHAPE_MAX_DIMS];
  int rc;

  *out = NULL;
  if (norm_dims == 0 || norm_dims > in->ndim || !(eps > 0.0f))
    return FEDC_EINVAL;
  if ((layer = norm_alloc(&layernorm_ops, name, in, eps)) == NULL)
    return FEDC_ENOMEM;
  n = layer->priv;
  n->group_size = 1;
  for (uint32_t i = 0; i < norm_dims; i++) {
    shape[i] = in->dim[in->ndim - norm_dims + i];
    n->group_size *= shape[i];
  }
  n->groups = layer->in_size / n->group_size;
  rc = fedc_layer_declare(layer, "weight", false, (int)norm_dims, shape);
  if (rc == 0)
    rc = fedc_layer_declare(layer, "bias", false, (int)norm_dims, shape);
  if (rc != 0) {
    fedc_layer_free(&layer);
    return rc;
  }
  *out = layer;
  return 0;
}
