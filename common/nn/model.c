#include "nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/blas.h"
#include "nn/loss.h"
#include "nn/net.h"
#include "nn/optim.h"
#include "nn/parallel.h"
#include "nn/spec.h"
#include "util/error.h"
#include "util/log.h"

/* Rows per forward pass in evaluation. */
#define EVAL_BATCH 256

struct fedc_model {
  char *spec;
  fedc_net *net;
  enum fedc_loss loss;
  fedc_param **params;       /* trainable, in state_dict order */
  size_t num_params;
  fedc_param **buffers;      /* running statistics and other state */
  size_t num_buffers;
  float *values;             /* all trainable values, params[i] in order */
  float *grads;
  size_t total;              /* floats in values */
  float *buffer_values;
  size_t buffer_total;
  bool share_buffers;        /* get/set_params include the buffers */
  uint32_t input_dim;
  uint32_t output_dim;
};

/* --- Construction ---------------------------------------------------------- */

typedef struct collect_ctx {
  fedc_model *model;
  int rc;
} collect_ctx;

static int push_param(fedc_param ***list, size_t *count, fedc_param *p)
{
  fedc_param **grown = realloc(*list, (*count + 1) * sizeof(*grown));

  if (grown == NULL)
    return FEDC_ENOMEM;
  grown[(*count)++] = p;
  *list = grown;
  return 0;
}

static void collect_layer(fedc_layer *layer, void *opaque)
{
  collect_ctx *ctx = opaque;
  fedc_model *m = ctx->model;

  for (size_t i = 0; i < layer->num_params && ctx->rc == 0; i++) {
    ctx->rc = push_param(&m->params, &m->num_params, &layer->params[i]);
    m->total += layer->params[i].numel;
  }
  for (size_t i = 0; i < layer->num_buffers && ctx->rc == 0; i++) {
    ctx->rc = push_param(&m->buffers, &m->num_buffers, &layer->buffers[i]);
    m->buffer_total += layer->buffers[i].numel;
  }
}

/* Rejects two tensors with one name, such as two layers named "fc". */
static int check_unique_names(const fedc_model *m)
{
  size_t total = m->num_params + m->num_buffers;

  for (size_t i = 0; i < total; i++) {
    const fedc_param *a = i < m->num_params ? m->params[i]
                                            : m->buffers[i - m->num_params];

    for (size_t j = 0; j < i; j++) {
      const fedc_param *b = j < m->num_params ? m->params[j]
                                              : m->buffers[j - m->num_params];

      if (strcmp(a->name, b->name) == 0) {
        fedc_warn("nn", "invalid model spec: two tensors named %s", a->name);
        return FEDC_EINVAL;
      }
    }
  }
  return 0;
}

/* Points every parameter into the flat arrays. */
static int bind_params(fedc_model *m)
{
  collect_ctx ctx = { m, 0 };
  size_t off = 0;

  fedc_net_visit(m->net, collect_layer, &ctx);
  if (ctx.rc == 0)
    ctx.rc = check_unique_names(m);
  if (ctx.rc != 0)
    return ctx.rc;
  m->values = calloc(m->total + 1, sizeof(float));
  m->grads = calloc(m->total + 1, sizeof(float));
  m->buffer_values = calloc(m->buffer_total + 1, sizeof(float));
  if (m->values == NULL || m->grads == NULL || m->buffer_values == NULL)
    return FEDC_ENOMEM;
  for (size_t i = 0; i < m->num_params; i++) {
    m->params[i]->value = m->values + off;
    m->params[i]->grad = m->grads + off;
    off += m->params[i]->numel;
  }
  off = 0;
  for (size_t i = 0; i < m->num_buffers; i++) {
    m->buffers[i]->value = m->buffer_values + off;
    off += m->buffers[i]->numel;
  }
  return 0;
}

static void init_layer(fedc_layer *layer, void *rng)
{
  if (layer->ops->init != NULL)
    layer->ops->init(layer, rng);
}

int fedc_model_new(const char *spec, uint64_t seed, fedc_model **out)
{
  fedc_model *m = NULL;
  fedc_rng rng;
  int rc;

  *out = NULL;
  if (spec == NULL)
    return FEDC_EINVAL;
  m = calloc(1, sizeof(*m));
  if (m == NULL)
    return FEDC_ENOMEM;
  m->spec = strdup(spec);
  rc = m->spec == NULL ? FEDC_ENOMEM : fedc_spec_build(spec, &m->net, &m->loss);
  if (rc == 0)
    rc = bind_params(m);
  if (rc != 0) {
    fedc_model_free(&m);
    return rc;
  }
  m->input_dim = (uint32_t)fedc_layer_shape_size(&m->net->in);
  m->output_dim = (uint32_t)fedc_layer_shape_size(&m->net->out);
  fedc_rng_seed(&rng, seed);
  fedc_net_visit(m->net, init_layer, &rng);
  *out = m;
  return 0;
}

void fedc_model_free(fedc_model **model)
{
  fedc_model *m;

  if (model == NULL || *model == NULL)
    return;
  m = *model;
  fedc_net_free(&m->net);
  free(m->params);
  free(m->buffers);
  free(m->values);
  free(m->grads);
  free(m->buffer_values);
  free(m->spec);
  free(m);
  *model = NULL;
}

const char *fedc_model_spec(const fedc_model *model)
{
  return model->spec;
}

uint32_t fedc_model_input_dim(const fedc_model *model)
{
  return model->input_dim;
}

uint32_t fedc_model_output_dim(const fedc_model *model)
{
  return model->output_dim;
}

uint64_t fedc_model_param_count(const fedc_model *model)
{
  return model->total;
}

void fedc_model_set_buffers_shared(fedc_model *model, bool shared)
{
  model->share_buffers = shared;
}

/* --- Parameters ------------------------------------------------------------ */

static int add_param(fedc_tensor_list *out, const fedc_param *p)
{
  return fedc_tensor_list_add(out, p->name, FEDC_DTYPE_F32, p->ndim, p->shape,
                              p->value);
}

int fedc_model_get_params(const fedc_model *model, fedc_tensor_list *out)
{
  int rc = 0;

  fedc_tensor_list_close(out);
  for (size_t i = 0; i < model->num_params && rc == 0; i++)
    rc = add_param(out, model->params[i]);
  for (size_t i = 0; model->share_buffers && i < model->num_buffers && rc == 0;
       i++)
    rc = add_param(out, model->buffers[i]);
  if (rc != 0)
    fedc_tensor_list_close(out);
  return rc;
}

/* Returns the tensor of in that matches p's name, dtype and shape, or NULL. */
static const fedc_tensor *match_param(const fedc_tensor_list *in,
                                      const fedc_param *p)
{
  const fedc_tensor *t = fedc_tensor_list_find(in, p->name);

  if (t == NULL || t->dtype != FEDC_DTYPE_F32 || t->ndim != p->ndim)
    return NULL;
  for (int d = 0; d < p->ndim; d++)
    if (t->shape[d] != p->shape[d])
      return NULL;
  return t;
}

/* Checks every tensor before anything is copied, so a bad list leaves the
 * model unchanged. */
static int check_params(const fedc_model *model, const fedc_tensor_list *in)
{
  size_t expected = model->num_params +
                    (model->share_buffers ? model->num_buffers : 0);

  if (in->count != expected) {
    fedc_warn("nn", "rejected parameters: %zu tensors, model has %zu",
              in->count, expected);
    return FEDC_ESHAPE;
  }
  for (size_t i = 0; i < expected; i++) {
    const fedc_param *p = i < model->num_params
                              ? model->params[i]
                              : model->buffers[i - model->num_params];

    if (match_param(in, p) == NULL) {
      fedc_warn("nn", "rejected parameters: %s missing or of another "
                "dtype or shape", p->name);
      return FEDC_ESHAPE;
    }
  }
  return 0;
}

int fedc_model_set_params(fedc_model *model, const fedc_tensor_list *in)
{
  size_t expected = model->num_params +
                    (model->share_buffers ? model->num_buffers : 0);
  int rc = check_params(model, in);

  if (rc != 0)
    return rc;
  if (fedc_tensor_list_check_finite(in) != 0) {
    fedc_warn("nn", "rejected parameters: NaN or Inf values");
    return FEDC_ENONFINITE;
  }
  for (size_t i = 0; i < expected; i++) {
    fedc_param *p = i < model->num_params
                        ? model->params[i]
                        : model->buffers[i - model->num_params];

    memcpy(p->value, match_param(in, p)->data, p->numel * sizeof(float));
  }
  return 0;
}

/* --- Training and evaluation ----------------------------------------------- */

/* Buffers for one mini-batch. */
typedef struct batch {
  float *x;                  /* count * input_dim */
  int32_t *y;
  int32_t *pred;
  float *dout;               /* gradient of the loss at the output */
  uint32_t cap;
} batch;

static int batch_init(batch *b, const fedc_model *m, uint32_t cap)
{
  memset(b, 0, sizeof(*b));
  b->x = malloc((size_t)cap * m->input_dim * sizeof(float));
  b->y = malloc((size_t)cap * sizeof(int32_t));
  b->pred = malloc((size_t)cap * sizeof(int32_t));
  b->dout = malloc((size_t)cap * m->output_dim * sizeof(float));
  b->cap = cap;
  if (b->x == NULL || b->y == NULL || b->pred == NULL || b->dout == NULL)
    return FEDC_ENOMEM;
  return 0;
}

static void batch_close(batch *b)
{
  free(b->x);
  free(b->y);
  free(b->pred);
  free(b->dout);
  memset(b, 0, sizeof(*b));
}

/* Copies count rows of view, at positions order[start..] (or start.. when
 * order is NULL), into b. */
static void batch_gather(batch *b, const fedc_dataset_view *view,
                         const uint32_t *order, uint64_t start,
                         uint32_t count)
{
  const fedc_dataset *ds = view->base;

  for (uint32_t i = 0; i < count; i++) {
    uint64_t pos = order != NULL ? order[start + i] : start + i;
    uint64_t row = fedc_view_row(view, pos);

    memcpy(b->x + (size_t)i * ds->dim, ds->x + row * ds->dim,
           ds->dim * sizeof(float));
    b->y[i] = ds->y[row];
  }
}

/* Returns the features of view's positions start .. start + count - 1,
 * in place when they are consecutive rows of the dataset, as in a test
 * set, with only their labels copied into b. Other rows are gathered into
 * b, and the copy is returned. */
static const float *batch_view(batch *b, const fedc_dataset_view *view,
                               uint64_t start, uint32_t count)
{
  const fedc_dataset *ds = view->base;
  uint64_t first = fedc_view_row(view, start);

  for (uint32_t i = 1; view->rows != NULL && i < count; i++)
    if (view->rows[start + i] != first + i) {
      batch_gather(b, view, NULL, start, count);
      return b->x;
    }
  memcpy(b->y, ds->y + first, count * sizeof(*b->y));
  return ds->x + first * ds->dim;
}

static int check_view(const fedc_model *m, const fedc_dataset_view *view)
{
  if (view == NULL || view->base == NULL || view->n == 0 ||
      view->n > UINT32_MAX)
    return FEDC_EINVAL;
  if (view->base->dim != m->input_dim) {
    fedc_warn("nn", "dataset has %u features per row, model %s expects %u",
              view->base->dim, m->spec, m->input_dim);
    return FEDC_ESHAPE;
  }
  for (uint64_t i = 0; view->rows != NULL && i < view->n; i++)
    if (view->rows[i] >= view->base->n)
      return FEDC_EINVAL;
  return 0;
}

/* The state of one call to fedc_model_train. */
typedef struct train_run {
  const fedc_train_config *config;
  batch b;
  uint32_t *order;
  float *start;              /* parameters at the start of training */
  fedc_optim opt;
  fedc_rng shuffle_rng;
  fedc_rng dropout_rng;
  double loss_sum;           /* over the current epoch */
  uint64_t correct;
  uint64_t seen;
} train_run;

static int train_step(fedc_model *m, train_run *run, uint32_t count)
{
  fedc_pass pass = { .train = true, .rng = &run->dropout_rng };
  const float *out;
  double loss = 0.0;
  float mu = run->config->proximal_mu;
  int rc;

  memset(m->grads, 0, m->total * sizeof(float));
  if ((rc = fedc_net_forward(m->net, run->b.x, count, &pass, &out)) != 0 ||
      (rc = fedc_loss_compute(m->loss, out, m->output_dim, run->b.y, count,
                              run->b.dout, &loss, run->b.pred)) != 0)
    return rc;
  if (!isfinite(loss))
    return FEDC_ENONFINITE;
  if ((rc = fedc_net_backward(m->net, run->b.x, run->b.dout, NULL,
                              count)) != 0)
    return rc;

  /* FedProx: the gradient of mu/2 ||w - w_start||^2. */
  if (mu != 0.0f)
    for (size_t i = 0; i < m->total; i++)
      m->grads[i] += mu * (m->values[i] - run->start[i]);
  /* Without clipping the norm is not needed: skip the pass over it. */
  if (run->config->clip_norm > 0.0f)
    fedc_optim_clip(m->grads, m->total, run->config->clip_norm);
  fedc_optim_step(&run->opt, m->values, m->grads);

  run->loss_sum += loss;
  run->seen += count;
  for (uint32_t i = 0; i < count; i++)
    run->correct += run->b.pred[i] == run->b.y[i];
  return 0;
}

static uint64_t planned_steps(const fedc_train_config *c, uint64_t n)
{
  uint64_t per_epoch = (n + c->batch_size - 1) / c->batch_size;
  uint64_t total = per_epoch * c->local_epochs;

  return c->max_steps != 0 && c->max_steps < total ? c->max_steps : total;
}

static int train_setup(fedc_model *m, const fedc_dataset_view *view,
                       train_run *run)
{
  const fedc_train_config *c = run->config;
  uint32_t cap = c->batch_size < view->n ? c->batch_size : (uint32_t)view->n;
  int rc;

  if ((rc = batch_init(&run->b, m, cap)) != 0)
    return rc;
  run->order = malloc(view->n * sizeof(uint32_t));
  run->start = malloc((m->total + 1) * sizeof(float));
  if (run->order == NULL || run->start == NULL)
    return FEDC_ENOMEM;
  for (uint64_t i = 0; i < view->n; i++)
    run->order[i] = (uint32_t)i;
  memcpy(run->start, m->values, m->total * sizeof(float));
  fedc_rng_seed2(&run->shuffle_rng, c->seed, 1);
  fedc_rng_seed2(&run->dropout_rng, c->seed, 2);
  return fedc_optim_init(&run->opt, c, m->total, planned_steps(c, view->n));
}

static bool config_valid(const fedc_train_config *c)
{
  return c != NULL && c->batch_size > 0 && c->local_epochs > 0 &&
         isfinite(c->learning_rate) && c->learning_rate >= 0.0f &&
         isfinite(c->momentum) && isfinite(c->weight_decay) &&
         isfinite(c->proximal_mu) && isfinite(c->clip_norm);
}

/* Runs the epochs; stops early at max_steps. */
static int train_epochs(fedc_model *m, const fedc_dataset_view *view,
                        train_run *run, fedc_train_stats *stats)
{
  const fedc_train_config *c = run->config;
  int rc = 0;

  for (uint32_t epoch = 0; epoch < c->local_epochs && rc == 0; epoch++) {
    run->loss_sum = 0.0;
    run->correct = run->seen = 0;
    fedc_rng_shuffle_u32(&run->shuffle_rng, run->order, view->n);
    for (uint64_t start = 0; start < view->n && rc == 0;
         start += c->batch_size) {
      uint64_t left = view->n - start;
      uint32_t count = left < run->b.cap ? (uint32_t)left : run->b.cap;

      if (c->max_steps != 0 && stats->steps >= c->max_steps)
        return 0;
      batch_gather(&run->b, view, run->order, start, count);
      rc = train_step(m, run, count);
      stats->steps++;
      stats->examples += count;
      stats->loss = run->loss_sum / (double)run->seen;
      stats->accuracy = (double)run->correct / (double)run->seen;
    }
  }
  return rc;
}

int fedc_model_train(fedc_model *model, const fedc_dataset_view *view,
                     const fedc_train_config *config, fedc_train_stats *stats)
{
  train_run run = { .config = config };
  fedc_train_stats local = { 0 };
  int rc;

  if (!config_valid(config))
    return FEDC_EINVAL;
  if ((rc = check_view(model, view)) != 0)
    return rc;
  if ((rc = train_setup(model, view, &run)) != 0)
    goto out;
  rc = train_epochs(model, view, &run, &local);
  if (rc == FEDC_ENONFINITE) {
    /* Leave the model as it was rather than half-diverged. */
    memcpy(model->values, run.start, model->total * sizeof(float));
    fedc_warn("nn", "training diverged (NaN or Inf loss) after %llu steps; "
              "parameters restored", (unsigned long long)local.steps);
  }

out:
  if (stats != NULL)
    *stats = local;
  fedc_optim_close(&run.opt);
  batch_close(&run.b);
  free(run.order);
  free(run.start);
  return rc;
}

/* Returns the batch's correct predictions and adds them, and the examples,
 * to the per-class counts of labels below num_classes. */
static uint64_t count_correct(const batch *b, uint32_t count,
                              uint32_t num_classes, uint64_t *class_correct,
                              uint64_t *class_total)
{
  uint64_t correct = 0;

  for (uint32_t i = 0; i < count; i++) {
    int32_t label = b->y[i];

    correct += b->pred[i] == label;
    if (label >= 0 && (uint32_t)label < num_classes) {
      class_total[label]++;
      class_correct[label] += b->pred[i] == label;
    }
  }
  return correct;
}

int fedc_model_evaluate_classes(fedc_model *model,
                                const fedc_dataset_view *view,
                                fedc_eval_stats *stats, uint32_t num_classes,
                                uint64_t *class_correct,
                                uint64_t *class_total)
{
  fedc_pass pass = { .train = false };
  batch b;
  double loss = 0.0;
  uint64_t correct = 0;
  int rc;

  if ((rc = check_view(model, view)) != 0)
    return rc;
  if (num_classes > 0) {
    memset(class_correct, 0, num_classes * sizeof(uint64_t));
    memset(class_total, 0, num_classes * sizeof(uint64_t));
  }
  if ((rc = batch_init(&b, model, EVAL_BATCH)) != 0)
    goto out;
  for (uint64_t start = 0; start < view->n && rc == 0; start += EVAL_BATCH) {
    uint64_t left = view->n - start;
    uint32_t count = left < EVAL_BATCH ? (uint32_t)left : EVAL_BATCH;
    const float *x = batch_view(&b, view, start, count);
    const float *y;

    rc = fedc_net_forward(model->net, x, count, &pass, &y);
    if (rc == 0)
      rc = fedc_loss_compute(model->loss, y, model->output_dim, b.y, count,
                             NULL, &loss, b.pred);
    if (rc == 0)
      correct += count_correct(&b, count, num_classes, class_correct,
                               class_total);
  }
  if (rc == 0) {
    stats->loss = loss / (double)view->n;
    stats->accuracy = (double)correct / (double)view->n;
    stats->examples = view->n;
  }

out:
  batch_close(&b);
  return rc;
}

int fedc_model_evaluate(fedc_model *model, const fedc_dataset_view *view,
                        fedc_eval_stats *stats)
{
  return fedc_model_evaluate_classes(model, view, stats, 0, NULL, NULL);
}

void fedc_nn_set_threads(int threads)
{
  /* OpenBLAS stays on one thread: fedc's workers split the products. */
  if (threads > 0) {
    fedc_blas_set_threads(1);
    fedc_parallel_set_threads((unsigned)threads);
  }
}

/* --- Description ----------------------------------------------------------- */

static size_t layer_param_count(const fedc_layer *layer)
{
  size_t count = 0;

  for (size_t i = 0; i < layer->num_params; i++)
    count += layer->params[i].numel;
  return count;
}

static void describe_net(FILE *f, const fedc_net *net, int depth)
{
  for (size_t i = 0; i < net->count; i++) {
    const fedc_layer *layer = net->layers[i];
    char dims[64];

    fedc_layer_shape_format(&layer->out, dims, sizeof(dims));
    fprintf(f, "  %*s%-*s %-13s %-14s %zu\n", 2 * depth, "", 24 - 2 * depth,
            layer->name, layer->ops->kind, dims, layer_param_count(layer));
    for (int s = 0; s < 2; s++)
      if (layer->sub[s] != NULL)
        describe_net(f, layer->sub[s], depth + 1);
  }
}

static double mib(size_t bytes)
{
  return (double)bytes / (1024.0 * 1024.0);
}

int fedc_model_describe(const fedc_model *model, uint32_t batch_size,
                        char **out)
{
  size_t len = 0, param_bytes = model->total * sizeof(float);
  size_t batch_bytes, fixed;
  char dims[64];
  FILE *f;

  *out = NULL;
  if (batch_size == 0)
    return FEDC_EINVAL;
  f = open_memstream(out, &len);
  if (f == NULL)
    return FEDC_ENOMEM;
  batch_bytes = fedc_net_train_bytes(model->net, batch_size) +
                (size_t)batch_size * (model->input_dim + model->output_dim) *
                    sizeof(float);
  fixed = 2 * param_bytes + model->buffer_total * sizeof(float);
  fedc_layer_shape_format(&model->net->in, dims, sizeof(dims));
  fprintf(f, "model %s (loss %s)\n", model->spec, fedc_loss_name(model->loss));
  fprintf(f, "  %-24s %-13s %-14s %s\n", "layer", "kind", "output", "params");
  fprintf(f, "  %-24s %-13s %-14s %s\n", "", "input", dims, "");
  describe_net(f, model->net, 0);
  fprintf(f, "parameters: %zu (%.2f MiB), buffers: %zu floats\n",
          model->total, mib(param_bytes), model->buffer_total);
  fprintf(f, "training memory at batch %u: %.2f MiB with plain SGD, "
          "%.2f MiB with momentum, %.2f MiB with Adam\n", batch_size,
          mib(fixed + batch_bytes), mib(fixed + param_bytes + batch_bytes),
          mib(fixed + 2 * param_bytes + batch_bytes));
  if (fclose(f) != 0 || *out == NULL) {
    free(*out);
    *out = NULL;
    return FEDC_ENOMEM;
  }
  return 0;
}
