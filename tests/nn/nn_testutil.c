#include "nn_testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nn_test_fill(float *x, size_t n, float lo, float hi, fedc_rng *rng)
{
  for (size_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * (float)fedc_rng_uniform(rng);
}

typedef struct param_list {
  fedc_param *items[256];
  size_t count;
} param_list;

static void collect(fedc_layer *layer, void *opaque)
{
  param_list *list = opaque;

  for (size_t i = 0; i < layer->num_params && list->count < 256; i++)
    list->items[list->count++] = &layer->params[i];
  for (size_t i = 0; i < layer->num_buffers && list->count < 256; i++)
    list->items[list->count++] = &layer->buffers[i];
}

static void init_layer(fedc_layer *layer, void *rng)
{
  if (layer->ops->init != NULL)
    layer->ops->init(layer, rng);
}

void nn_test_bind(fedc_net *net, uint64_t seed)
{
  param_list list = { .count = 0 };
  fedc_rng rng;

  fedc_net_visit(net, collect, &list);
  for (size_t i = 0; i < list.count; i++) {
    fedc_param *p = list.items[i];

    p->value = calloc(p->numel, sizeof(float));
    p->grad = calloc(p->numel, sizeof(float));
  }
  fedc_rng_seed(&rng, seed);
  fedc_net_visit(net, init_layer, &rng);
}

void nn_test_unbind(fedc_net *net)
{
  param_list list = { .count = 0 };

  fedc_net_visit(net, collect, &list);
  for (size_t i = 0; i < list.count; i++) {
    free(list.items[i]->value);
    free(list.items[i]->grad);
    list.items[i]->value = list.items[i]->grad = NULL;
  }
}

/* L = sum(y * r), with the same dropout masks on every call. */
static double objective(fedc_net *net, const float *x, uint32_t batch,
                        const float *r)
{
  fedc_rng rng;
  fedc_pass pass = { .train = true, .rng = &rng };
  size_t n = fedc_layer_shape_size(&net->out) * batch;
  const float *y;
  double sum = 0.0;

  fedc_rng_seed(&rng, 99);
  if (fedc_net_forward(net, x, batch, &pass, &y) != 0)
    return NAN;
  for (size_t i = 0; i < n; i++)
    sum += (double)y[i] * r[i];
  return sum;
}

static double rel_error(double fd, double analytic)
{
  return fabs(fd - analytic) / fmax(1.0, fabs(fd));
}

/* Central difference of the objective in *v. */
static double numeric(fedc_net *net, const float *x, uint32_t batch,
                      const float *r, float *v, float eps)
{
  float saved = *v;
  double plus, minus;

  *v = saved + eps;
  plus = objective(net, x, batch, r);
  *v = saved - eps;
  minus = objective(net, x, batch, r);
  *v = saved;
  return (plus - minus) / (2.0 * eps);
}

static size_t pick(size_t n, int max_checks, int k, fedc_rng *rng)
{
  return n <= (size_t)max_checks ? (size_t)k : fedc_rng_below(rng, n);
}

double nn_test_gradcheck(fedc_net *net, const float *x_in, uint32_t batch,
                         float eps, int max_checks, int ids_input)
{
  size_t in_n = fedc_layer_shape_size(&net->in) * batch;
  size_t out_n = fedc_layer_shape_size(&net->out) * batch;
  float *x = malloc(in_n * sizeof(float));
  float *r = malloc(out_n * sizeof(float));
  float *dx = calloc(in_n, sizeof(float));
  param_list list = { .count = 0 };
  fedc_rng rng;
  double worst = 0.0;

  memcpy(x, x_in, in_n * sizeof(float));
  fedc_rng_seed(&rng, 5);
  nn_test_fill(r, out_n, -1.0f, 1.0f, &rng);
  fedc_net_visit(net, collect, &list);
  for (size_t i = 0; i < list.count; i++)
    if (list.items[i]->grad != NULL)
      memset(list.items[i]->grad, 0, list.items[i]->numel * sizeof(float));
  objective(net, x, batch, r);
  if (fedc_net_backward(net, x, r, dx, batch) != 0) {
    worst = INFINITY;
    goto out;
  }

  for (int k = 0; !ids_input && k < max_checks && (size_t)k < in_n; k++) {
    size_t i = pick(in_n, max_checks, k, &rng);

    worst = fmax(worst, rel_error(numeric(net, x, batch, r, &x[i], eps), dx[i]));
  }
  for (size_t p = 0; p < list.count; p++) {
    fedc_param *param = list.items[p];

    /* Buffers (running statistics) have no gradient. */
    if (strstr(param->name, "running_") != NULL)
      continue;
    for (int k = 0; k < max_checks && (size_t)k < param->numel; k++) {
      size_t i = pick(param->numel, max_checks, k, &rng);
      double fd = numeric(net, x, batch, r, &param->value[i], eps);

      worst = fmax(worst, rel_error(fd, param->grad[i]));
    }
  }

out:
  free(x);
  free(r);
  free(dx);
  return worst;
}

/* --- Fashion-MNIST --------------------------------------------------------- */

int nn_test_load_fmnist(const char *split, fedc_dataset *ds)
{
  char images[256], labels[256];

  snprintf(images, sizeof(images), "%s/%s-images-idx3-ubyte.gz",
           NN_TEST_FMNIST_DIR, split);
  snprintf(labels, sizeof(labels), "%s/%s-labels-idx1-ubyte.gz",
           NN_TEST_FMNIST_DIR, split);
  return fedc_idx_load(images, labels, ds);
}
