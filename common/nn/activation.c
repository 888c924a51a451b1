#include "nn/activation.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

typedef struct activation {
  enum fedc_activation kind;
  float slope;
} activation;

static float gelu(float x)
{
  return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

/* d/dx of x * Phi(x) = Phi(x) + x * phi(x). */
static float gelu_grad(float x)
{
  float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
  float pdf = expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);

  return cdf + x * pdf;
}

static float sigmoid(float x)
{
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static int activation_forward(fedc_layer *layer, const float *x, float *y,
                              uint32_t batch, const fedc_pass *pass)
{
  const activation *a = layer->priv;
  size_t n = layer->in_size * batch;

  /* One loop per kind, so that each loop vectorizes. */
  switch (a->kind) {
  case FEDC_ACT_RELU:
    for (size_t i = 0; i < n; i++)
      y[i] = x[i] > 0 ? x[i] : 0.0f;
    break;
  case FEDC_ACT_LEAKY_RELU:
    for (size_t i = 0; i < n; i++)
      y[i] = x[i] > 0 ? x[i] : a->slope * x[i];
    break;
  case FEDC_ACT_GELU:
    for (size_t i = 0; i < n; i++)
      y[i] = gelu(x[i]);
    break;
  case FEDC_ACT_SIGMOID:
    for (size_t i = 0; i < n; i++)
      y[i] = sigmoid(x[i]);
    break;
  case FEDC_ACT_TANH:
    for (size_t i = 0; i < n; i++)
      y[i] = tanhf(x[i]);
    break;
  }
  return 0;
}

static int activation_backward(fedc_layer *layer, const float *x,
                               const float *y, const float *dy, float *dx,
                               uint32_t batch)
{
  const activation *a = layer->priv;
  size_t n = layer->in_size * batch;

  if (dx == NULL)
    return 0;
  switch (a->kind) {
  case FEDC_ACT_RELU:
    for (size_t i = 0; i < n; i++)
      dx[i] = x[i] > 0 ? dy[i] : 0.0f;
    break;
  case FEDC_ACT_LEAKY_RELU:
    for (size_t i = 0; i < n; i++)
      dx[i] = x[i] > 0 ? dy[i] : a->slope * dy[i];
    break;
  case FEDC_ACT_GELU:
    for (size_t i = 0; i < n; i++)
      dx[i] = dy[i] * gelu_grad(x[i]);
    break;
  case FEDC_ACT_SIGMOID:
    for (size_t i = 0; i < n; i++)
      dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    break;
  case FEDC_ACT_TANH:
    for (size_t i = 0; i < n; i++)
      dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    break;
  }
  return 0;
}

static void activation_destroy(fedc_layer *layer)
{
  free(layer->priv);
}

static const fedc_layer_ops activation_ops[] = {
  [FEDC_ACT_RELU] = { "relu", NULL, activation_forward, activation_backward,
                      NULL, activation_destroy },
  [FEDC_ACT_LEAKY_RELU] = { "leaky_relu", NULL, activation_forward,
                            activation_backward, NULL, activation_destroy },
  [FEDC_ACT_GELU] = { "gelu", NULL, activation_forward, activation_backward,
                      NULL, activation_destroy },
  [FEDC_ACT_SIGMOID] = { "sigmoid", NULL, activation_forward,
                         activation_backward, NULL, activation_destroy },
  [FEDC_ACT_TANH] = { "tanh", NULL, activation_forward, activation_backward,
                      NULL, activation_destroy },
};

int fedc_activation_new(const char *name, const fedc_shape *in,
                        enum fedc_activation kind, float slope,
                        fedc_layer **out)
{
  fedc_layer *layer;
  activation *a;

  *out = NULL;
  if ((unsigned)kind > FEDC_ACT_TANH)
    return FEDC_EINVAL;
  layer = fedc_layer_alloc(&activation_ops[kind], name, in);
  a = calloc(1, sizeof(*a));
  if (layer == NULL || a == NULL) {
    free(a);
    fedc_layer_free(&layer);
    return FEDC_ENOMEM;
  }
  a->kind = kind;
  a->slope = slope;
  layer->priv = a;
  fedc_layer_set_out(layer, in);
  *out = layer;
  return 0;
}
