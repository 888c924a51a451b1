#include "agg/agg.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agg/robust.h"
#include "util/clones.h"
#include "util/error.h"
#include "util/log.h"

/* Names of the optimizer state tensors in fedc_agg_state_save(). */
#define STATE_M "server_m"
#define STATE_V "server_v"

struct fedc_agg {
  fedc_agg_config config;
  fedc_tensor_list layout;  /* names, dtypes and shapes; every data is NULL */
  size_t numel;             /* parameters in the model, all tensors */

  /* The round. For the streaming strategies sum is the weighted sum of
   * the updates; the robust ones write their aggregate to it in finish. */
  double *sum;
  double weight_sum;
  size_t count;

  /* The robust strategies need every update of the round at once, so they
   * keep each accepted update, norm-bounded, as numel floats: memory grows
   * as count * model size. rows is NULL for the streaming strategies. */
  float **rows;
  size_t rows_capacity;

  /* Server optimizer state carried across rounds, NULL when unused:
   * FedAvgM's velocity or the adaptive first moment m, and the adaptive
   * second moment v. */
  double *moment1;
  double *moment2;
};

static const char *const strategy_names[] = {
  [FEDC_AGG_FEDAVG] = "fedavg",
  [FEDC_AGG_FEDAVGM] = "fedavgm",
  [FEDC_AGG_FEDADAM] = "fedadam",
  [FEDC_AGG_FEDYOGI] = "fedyogi",
  [FEDC_AGG_FEDADAGRAD] = "fedadagrad",
  [FEDC_AGG_MEDIAN] = "median",
  [FEDC_AGG_TRIMMED_MEAN] = "trimmed_mean",
  [FEDC_AGG_KRUM] = "krum",
  [FEDC_AGG_MULTI_KRUM] = "multi_krum",
};

#define STRATEGY_COUNT (sizeof(strategy_names) / sizeof(strategy_names[0]))

static int is_adaptive(enum fedc_agg_strategy s)
{
  return s == FEDC_AGG_FEDADAM || s == FEDC_AGG_FEDYOGI ||
         s == FEDC_AGG_FEDADAGRAD;
}

void fedc_agg_config_default(fedc_agg_config *config,
                             enum fedc_agg_strategy strategy)
{
  memset(config, 0, sizeof(*config));
  config->strategy = strategy;
  config->server_lr = 1.0;
  config->server_momentum = 0.9;
  config->beta1 = 0.9;
  config->beta2 = 0.99;
  config->tau = 1e-3;
  config->trim_fraction = 0.1;
  config->krum_byzantine = 1;
  config->multi_krum_m = 0;
  config->clip_norm = 0.0;

  /* With momentum 0.9 the velocity settles at 10 times the update, so a
   * server_lr of 0.1 makes the steady-state step equal FedAvg's. */
  if (strategy == FEDC_AGG_FEDAVGM)
    config->server_lr = 0.1;

  /* The adaptive step is about server_lr per coordinate whatever the
   * update's size, so it needs a much smaller rate than FedAvg. */
  if (is_adaptive(strategy))
    config->server_lr = 1e-2;

  /* Adagrad proper has no momentum; Flower's FedAdagrad also fixes
   * beta1 at 0. */
  if (strategy == FEDC_AGG_FEDADAGRAD)
    config->beta1 = 0.0;
}

int fedc_agg_strategy_parse(const char *name, enum fedc_agg_strategy *out)
{
  for (size_t i = 0; i < STRATEGY_COUNT; i++) {
    if (strcmp(name, strategy_names[i]) == 0) {
      *out = (enum fedc_agg_strategy)i;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

const char *fedc_agg_strategy_name(enum fedc_agg_strategy strategy)
{
  if ((size_t)strategy >= STRATEGY_COUNT)
    return NULL;
  return strategy_names[strategy];
}

static int is_robust(enum fedc_agg_strategy s)
{
  return s == FEDC_AGG_MEDIAN || s == FEDC_AGG_TRIMMED_MEAN ||
         s == FEDC_AGG_KRUM || s == FEDC_AGG_MULTI_KRUM;
}

static int in_unit_interval(double x)
{
  return x >= 0.0 && x < 1.0;
}

/* Returns what is wrong with config, or NULL when it is valid. */
static const char *config_error(const fedc_agg_config *c)
{
  if ((size_t)c->strategy >= STRATEGY_COUNT)
    return "unknown strategy";
  if (!(c->server_lr > 0.0) || !isfinite(c->server_lr))
    return "server_lr must be positive and finite";
  if (!(c->clip_norm >= 0.0) || !isfinite(c->clip_norm))
    return "clip_norm must be 0 (off) or positive and finite";
  if (c->strategy == FEDC_AGG_FEDAVGM && !in_unit_interval(c->server_momentum))
    return "server_momentum must be in [0, 1)";
  if (is_adaptive(c->strategy)) {
    if (!in_unit_interval(c->beta1) || !in_unit_interval(c->beta2))
      return "beta1 and beta2 must be in [0, 1)";
    if (!(c->tau > 0.0) || !isfinite(c->tau))
      return "tau must be positive and finite";
  }
  if (c->strategy == FEDC_AGG_TRIMMED_MEAN &&
      !(c->trim_fraction >= 0.0 && c->trim_fraction < 0.5))
    return "trim_fraction must be in [0, 0.5)";
  return NULL;
}

/* Copies the names, dtypes and shapes of layout, without data, and counts
 * its parameters. */
static int copy_layout(fedc_agg *agg, const fedc_tensor_list *layout)
{
  size_t total = 0;

  if (layout->count == 0) {
    fedc_error("agg", "the model has no tensors");
    return FEDC_EINVAL;
  }
  agg->layout.items = calloc(layout->count, sizeof(fedc_tensor));
  if (!agg->layout.items)
    return FEDC_ENOMEM;
  agg->layout.count = layout->count;
  agg->layout.capacity = layout->count;

  for (size_t i = 0; i < layout->count; i++) {
    const fedc_tensor *t = &layout->items[i];
    uint64_t n = fedc_tensor_numel(t);

    if (t->dtype != FEDC_DTYPE_F32) {
      fedc_error("agg", "tensor %s is not F32, the only dtype aggregation "
                 "supports", t->name);
      return FEDC_EUNSUPPORTED;
    }
    if (n > SIZE_MAX / sizeof(double) - total)
      return FEDC_EOVERFLOW;
    agg->layout.items[i] = *t;
    agg->layout.items[i].data = NULL;
    total += (size_t)n;
  }
  if (total == 0) {
    fedc_error("agg", "the model has no parameters");
    return FEDC_EINVAL;
  }
  agg->numel = total;
  return 0;
}

static int alloc_state(fedc_agg *agg)
{
  enum fedc_agg_strategy s = agg->config.strategy;

  agg->sum = calloc(agg->numel, sizeof(double));
  if (!agg->sum)
    return FEDC_ENOMEM;
  if (s == FEDC_AGG_FEDAVGM || is_adaptive(s)) {
    agg->moment1 = calloc(agg->numel, sizeof(double));
    if (!agg->moment1)
      return FEDC_ENOMEM;
  }
  if (is_robust(s)) {
    agg->rows = calloc(16, sizeof(float *));
    if (!agg->rows)
      return FEDC_ENOMEM;
    agg->rows_capacity = 16;
  }
  if (is_adaptive(s)) {
    agg->moment2 = malloc(agg->numel * sizeof(double));
    if (!agg->moment2)
      return FEDC_ENOMEM;

    /* Reddi et al. require v to start at tau^2 or above; fedc starts it
     * at exactly tau^2. */
    for (size_t j = 0; j < agg->numel; j++)
      agg->moment2[j] = agg->config.tau * agg->config.tau;
  }
  return 0;
}

int fedc_agg_new(const fedc_agg_config *config, const fedc_tensor_list *layout,
                 fedc_agg **out)
{
  const char *problem = config_error(config);
  fedc_agg *agg = NULL;
  int rc;

  *out = NULL;
  if (problem) {
    fedc_error("agg", "invalid aggregation config: %s", problem);
    rc = FEDC_EINVAL;
    goto out;
  }
  agg = calloc(1, sizeof(*agg));
  if (!agg) {
    rc = FEDC_ENOMEM;
    goto out;
  }
  agg->config = *config;
  rc = copy_layout(agg, layout);
  if (rc < 0)
    goto out;
  rc = alloc_state(agg);
  if (rc < 0)
    goto out;
  *out = agg;
  agg = NULL;
out:
  fedc_agg_free(&agg);
  return rc;
}

static void drop_rows(fedc_agg *agg)
{
  for (size_t i = 0; agg->rows && i < agg->count; i++) {
    free(agg->rows[i]);
    agg->rows[i] = NULL;
  }
}

void fedc_agg_free(fedc_agg **agg)
{
  fedc_agg *a = *agg;

  if (!a)
    return;
  drop_rows(a);
  free(a->rows);
  free(a->layout.items);
  free(a->sum);
  free(a->moment1);
  free(a->moment2);
  free(a);
  *agg = NULL;
}

void fedc_agg_begin(fedc_agg *agg)
{
  drop_rows(agg);
  memset(agg->sum, 0, agg->numel * sizeof(double));
  agg->weight_sum = 0.0;
  agg->count = 0;
}

/* Returns the L2 norm of the whole update, in double. A float squared is
 * below 2^256, so the sum stays finite unless some value is NaN or Inf:
 * a non-finite norm is how the caller finds those. */
static double update_norm(const fedc_tensor_list *update)
{
  return fedc_tensor_list_norm(update);
}

/* Returns the factor that bounds an update of this norm to clip_norm. */
static double clip_scale(const fedc_agg *agg, double norm)
{
  double bound = agg->config.clip_norm;

  if (bound > 0.0 && norm > bound)
    return bound / norm;
  return 1.0;
}

/* sum[k] += factor * x[k]: the FedAvg family's whole per-update cost. */
FEDC_CLONES static void add_scaled(double *sum, const float *x, uint64_t n,
                                   double factor)
{
  for (uint64_t k = 0; k < n; k++)
    sum[k] += factor * (double)x[k];
}

static void accumulate(fedc_agg *agg, const fedc_tensor_list *update,
                       double factor)
{
  double *sum = agg->sum;

  for (size_t i = 0; i < update->count; i++) {
    const fedc_tensor *t = &update->items[i];
    uint64_t n = fedc_tensor_numel(t);

    add_scaled(sum, t->data, n, factor);
    sum += n;
  }
}

/* Keeps a copy of update, multiplied by scale, for a robust round. */
static int store_update(fedc_agg *agg, const fedc_tensor_list *update,
                        double scale)
{
  float *row;
  float *dst;

  if (agg->count == agg->rows_capacity) {
    size_t capacity = agg->rows_capacity ? 2 * agg->rows_capacity : 16;
    float **rows = realloc(agg->rows, capacity * sizeof(float *));

    if (!rows)
      return FEDC_ENOMEM;
    agg->rows = rows;
    agg->rows_capacity = capacity;
  }
  row = malloc(agg->numel * sizeof(float));
  if (!row)
    return FEDC_ENOMEM;

  dst = row;
  for (size_t i = 0; i < update->count; i++) {
    const fedc_tensor *t = &update->items[i];
    const float *x = t->data;
    uint64_t n = fedc_tensor_numel(t);

    for (uint64_t j = 0; j < n; j++)
      dst[j] = scale == 1.0 ? x[j] : (float)(scale * x[j]);
    dst += n;
  }
  agg->rows[agg->count] = row;
  return 0;
}

/* Returns FEDC_EINVAL for a weight that is not positive and finite,
 * FEDC_ESHAPE for an update of another layout, or 0. */
static int check_update(const fedc_agg *agg, const fedc_tensor_list *update,
                        double weight)
{
  if (!(weight > 0.0) || !isfinite(weight))
    return FEDC_EINVAL;
  if (fedc_tensor_list_check_layout(&agg->layout, update) < 0)
    return FEDC_ESHAPE;
  return 0;
}

/* Adds a checked update of L2 norm norm. */
static int add_checked(fedc_agg *agg, const fedc_tensor_list *update,
                       double weight, double norm)
{
  double scale;

  if (!isfinite(norm))
    return FEDC_ENONFINITE;
  scale = clip_scale(agg, norm);

  if (agg->rows) {
    int rc = store_update(agg, update, scale);

    if (rc < 0)
      return rc;
  } else {
    accumulate(agg, update, weight * scale);
  }
  agg->weight_sum += weight;
  agg->count++;
  return 0;
}

int fedc_agg_add(fedc_agg *agg, const fedc_tensor_list *update, double weight)
{
  int rc = check_update(agg, update, weight);

  return rc < 0 ? rc : add_checked(agg, update, weight, update_norm(update));
}

int fedc_agg_add_norm(fedc_agg *agg, const fedc_tensor_list *update,
                      double weight, double norm)
{
  int rc = check_update(agg, update, weight);

  return rc < 0 ? rc : add_checked(agg, update, weight, norm);
}

size_t fedc_agg_count(const fedc_agg *agg)
{
  return agg->count;
}

static double sign(double x)
{
  if (x > 0.0)
    return 1.0;
  if (x < 0.0)
    return -1.0;
  return 0.0;
}

/* Returns coordinate j of the round's aggregate. The streaming strategies
 * keep the weighted sum in agg->sum until the round is over, so a finish
 * that fails leaves their round intact; the robust ones have already
 * written their aggregate there. */
static double aggregate_at(const fedc_agg *agg, size_t j)
{
  if (agg->rows)
    return agg->sum[j];
  return agg->sum[j] / agg->weight_sum;
}

/* Returns the server step for one coordinate with aggregate g and advances
 * that coordinate's optimizer state in *m and *v. The adaptive formulas
 * follow Reddi et al., "Adaptive Federated Optimization" (ICLR 2021),
 * without bias correction. */
static double coordinate_step(const fedc_agg_config *c, double g, double *m,
                              double *v)
{
  switch (c->strategy) {
  case FEDC_AGG_FEDAVGM:
    *m = c->server_momentum * *m + g;
    return c->server_lr * *m;
  case FEDC_AGG_FEDADAM:
    *v = c->beta2 * *v + (1.0 - c->beta2) * g * g;
    break;
  case FEDC_AGG_FEDYOGI:
    *v -= (1.0 - c->beta2) * g * g * sign(*v - g * g);
    break;
  case FEDC_AGG_FEDADAGRAD:
    *v += g * g;
    break;
  default:
    return c->server_lr * g;
  }
  *m = c->beta1 * *m + (1.0 - c->beta1) * g;
  return c->server_lr * *m / (sqrt(*v) + c->tau);
}

/* Returns parameter j's value after the step, given its value x now, and
 * stores its advanced optimizer state in *m and *v. */
static double next_value(const fedc_agg *agg, size_t j, float x, double *m,
                         double *v)
{
  *m = agg->moment1 ? agg->moment1[j] : 0.0;
  *v = agg->moment2 ? agg->moment2[j] : 0.0;
  return (double)x + coordinate_step(&agg->config, aggregate_at(agg, j), m, v);
}

/* Checks that the step leaves every parameter a finite float, without
 * changing anything. Returns 0 or FEDC_ENONFINITE. */
static int check_step(const fedc_agg *agg, const fedc_tensor_list *global)
{
  size_t j = 0;
  double m, v;

  for (size_t i = 0; i < global->count; i++) {
    const fedc_tensor *t = &global->items[i];
    const float *x = t->data;
    uint64_t n = fedc_tensor_numel(t);

    for (uint64_t k = 0; k < n; k++, j++)
      if (!(fabs(next_value(agg, j, x[k], &m, &v)) <= FLT_MAX))
        return FEDC_ENONFINITE;
  }
  return 0;
}

static void apply_step(fedc_agg *agg, fedc_tensor_list *global)
{
  size_t j = 0;
  double m, v;

  for (size_t i = 0; i < global->count; i++) {
    fedc_tensor *t = &global->items[i];
    float *x = t->data;
    uint64_t n = fedc_tensor_numel(t);

    for (uint64_t k = 0; k < n; k++, j++) {
      x[k] = (float)next_value(agg, j, x[k], &m, &v);
      if (agg->moment1)
        agg->moment1[j] = m;
      if (agg->moment2)
        agg->moment2[j] = v;
    }
  }
}

size_t fedc_agg_min_updates(const fedc_agg *agg)
{
  enum fedc_agg_strategy s = agg->config.strategy;

  if (s == FEDC_AGG_KRUM || s == FEDC_AGG_MULTI_KRUM)
    return 2 * (size_t)agg->config.krum_byzantine + 3;
  return 1;
}

/* Returns how many updates Multi-Krum averages in a round of n. More than
 * n - f could take in every bad update, so a larger m, and the default 0,
 * mean n - f. */
static size_t multi_krum_count(const fedc_agg *agg, size_t n)
{
  size_t f = agg->config.krum_byzantine;
  size_t m = agg->config.multi_krum_m;

  if (agg->config.strategy == FEDC_AGG_KRUM)
    return 1;
  if (m == 0 || m > n - f)
    return n - f;
  return m;
}

/* Writes the robust aggregate of the stored updates to agg->sum. */
static int robust_aggregate(fedc_agg *agg)
{
  const float *const *rows = (const float *const *)agg->rows;
  size_t n = agg->count;
  double *scratch;
  size_t trim;

  if (agg->config.strategy == FEDC_AGG_KRUM ||
      agg->config.strategy == FEDC_AGG_MULTI_KRUM)
    return fedc_robust_krum(rows, n, agg->numel, agg->config.krum_byzantine,
                            multi_krum_count(agg, n), agg->sum, NULL);

  scratch = malloc(n * sizeof(double));
  if (!scratch)
    return FEDC_ENOMEM;
  if (agg->config.strategy == FEDC_AGG_MEDIAN) {
    fedc_robust_median(rows, n, agg->numel, scratch, agg->sum);
  } else {
    trim = fedc_robust_trim_count(agg->config.trim_fraction, n);
    fedc_robust_trimmed_mean(rows, n, agg->numel, trim, scratch, agg->sum);
  }
  free(scratch);
  return 0;
}

int fedc_agg_finish(fedc_agg *agg, fedc_tensor_list *global)
{
  int rc;

  if (fedc_tensor_list_check_layout(&agg->layout, global) < 0)
    return FEDC_ESHAPE;
  if (agg->count == 0)
    return FEDC_ESTATE;
  if (agg->count < fedc_agg_min_updates(agg)) {
    fedc_warn("agg", "%s with krum_byzantine=%" PRIu32 " needs at least "
              "%zu updates; round kept, updates=%zu",
              fedc_agg_strategy_name(agg->config.strategy),
              agg->config.krum_byzantine, fedc_agg_min_updates(agg),
              agg->count);
    return FEDC_ESTATE;
  }

  if (agg->rows) {
    rc = robust_aggregate(agg);
    if (rc < 0)
      return rc;
  }

  /* Check before writing, so a round whose step would overflow leaves
   * the model and the optimizer state as they were. */
  rc = check_step(agg, global);
  if (rc < 0) {
    fedc_warn("agg", "%s step would make the model NaN, Inf or beyond "
              "float range; round kept, updates=%zu",
              fedc_agg_strategy_name(agg->config.strategy), agg->count);
    return rc;
  }
  apply_step(agg, global);
  fedc_agg_begin(agg);
  return 0;
}

uint64_t fedc_agg_memory(const fedc_agg *agg, size_t n)
{
  uint64_t model = (uint64_t)agg->numel * sizeof(double);
  uint64_t bytes = model;

  if (agg->moment1)
    bytes += model;
  if (agg->moment2)
    bytes += model;
  if (!agg->rows)
    return bytes;

  /* The stored updates, then what finish allocates: one column of n
   * values to sort, or Krum's n x n distances, and per row a score, a
   * distance to sort and a (score, index) pair. */
  bytes += (uint64_t)n * (agg->numel * sizeof(float) + sizeof(float *));
  if (agg->config.strategy == FEDC_AGG_KRUM ||
      agg->config.strategy == FEDC_AGG_MULTI_KRUM)
    bytes += (uint64_t)n * n * sizeof(double) +
             (uint64_t)n * (3 * sizeof(double) + sizeof(size_t));
  else
    bytes += (uint64_t)n * sizeof(double);
  return bytes;
}

int fedc_agg_state_save(const fedc_agg *agg, fedc_tensor_list *out)
{
  uint64_t shape[1] = {agg->numel};
  int rc = 0;

  fedc_tensor_list_close(out);
  if (agg->moment1)
    rc = fedc_tensor_list_add(out, STATE_M, FEDC_DTYPE_F64, 1, shape,
                              agg->moment1);
  if (rc == 0 && agg->moment2)
    rc = fedc_tensor_list_add(out, STATE_V, FEDC_DTYPE_F64, 1, shape,
                              agg->moment2);
  if (rc < 0)
    fedc_tensor_list_close(out);
  return rc;
}

/* Checks that in has exactly the state tensors this strategy keeps. */
static int check_state(const fedc_agg *agg, const fedc_tensor_list *in)
{
  const char *names[2] = {STATE_M, STATE_V};
  const double *state[2] = {agg->moment1, agg->moment2};
  size_t expected = 0;

  for (int k = 0; k < 2; k++) {
    const fedc_tensor *t;

    if (!state[k])
      continue;
    expected++;
    t = fedc_tensor_list_find(in, names[k]);
    if (!t || t->dtype != FEDC_DTYPE_F64 || t->ndim != 1 ||
        t->shape[0] != agg->numel)
      return FEDC_ESHAPE;
  }
  if (in->count != expected)
    return FEDC_ESHAPE;
  if (fedc_tensor_list_check_finite(in) < 0)
    return FEDC_ENONFINITE;
  return 0;
}

int fedc_agg_state_load(fedc_agg *agg, const fedc_tensor_list *in)
{
  const fedc_tensor *m;
  const fedc_tensor *v;
  int rc;

  rc = check_state(agg, in);
  if (rc < 0)
    return rc;
  v = fedc_tensor_list_find(in, STATE_V);
  if (v) {
    const double *x = v->data;

    /* Every variant keeps v at or above zero, and a negative v would
     * make the step's square root NaN. */
    for (size_t j = 0; j < agg->numel; j++)
      if (x[j] < 0.0)
        return FEDC_EFORMAT;
    memcpy(agg->moment2, x, agg->numel * sizeof(double));
  }
  m = fedc_tensor_list_find(in, STATE_M);
  if (m)
    memcpy(agg->moment1, m->data, agg->numel * sizeof(double));
  return 0;
}
