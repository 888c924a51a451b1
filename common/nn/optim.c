#include "nn/optim.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

int fedc_optim_init(fedc_optim *opt, const fedc_train_config *config,
                    size_t n, uint64_t total_steps)
{
  fedc_train_config *c = &opt->config;

  memset(opt, 0, sizeof(*opt));
  if ((unsigned)config->optimizer > FEDC_OPT_ADAMW ||
      (unsigned)config->lr_schedule > FEDC_LR_COSINE ||
      (config->lr_schedule == FEDC_LR_STEP && config->lr_step_size == 0))
    return FEDC_EINVAL;
  *c = *config;
  if (c->beta1 == 0.0f)
    c->beta1 = 0.9f;
  if (c->beta2 == 0.0f)
    c->beta2 = 0.999f;
  if (c->eps == 0.0f)
    c->eps = 1e-8f;
  opt->n = n;
  opt->total_steps = total_steps;

  if (c->optimizer != FEDC_OPT_SGD || c->momentum != 0.0f) {
    opt->m = calloc(n ? n : 1, sizeof(float));
    if (opt->m == NULL)
      return FEDC_ENOMEM;
  }
  if (c->optimizer != FEDC_OPT_SGD) {
    opt->v = calloc(n ? n : 1, sizeof(float));
    if (opt->v == NULL) {
      fedc_optim_close(opt);
      return FEDC_ENOMEM;
    }
  }
  return 0;
}

void fedc_optim_close(fedc_optim *opt)
{
  free(opt->m);
  free(opt->v);
  opt->m = opt->v = NULL;
}

float fedc_optim_lr(const fedc_optim *opt)
{
  const fedc_train_config *c = &opt->config;

  switch (c->lr_schedule) {
  case FEDC_LR_STEP:
    return c->learning_rate *
           powf(c->lr_gamma, (float)(opt->t / c->lr_step_size));
  case FEDC_LR_COSINE: {
    /* torch's CosineAnnealingLR with T_max = the run's steps. */
    double progress = opt->total_steps > 0
                          ? (double)opt->t / (double)opt->total_steps : 1.0;

    if (progress > 1.0)
      progress = 1.0;
    return (float)(c->lr_min + 0.5 * (c->learning_rate - c->lr_min) *
                                   (1.0 + cos(M_PI * progress)));
  }
  default:
    return c->learning_rate;
  }
}

double fedc_optim_clip(float *grad, size_t n, float max_norm)
{
  double sum = 0.0;
  double norm;

  for (size_t i = 0; i < n; i++)
    sum += (double)grad[i] * grad[i];
  norm = sqrt(sum);
  /* torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6). */
  if (max_norm > 0.0f && norm > max_norm) {
    float scale = (float)(max_norm / (norm + 1e-6));

    for (size_t i = 0; i < n; i++)
      grad[i] *= scale;
  }
  return norm;
}

/* The settings are copied into locals: they are floats that the stores to
 * w and m may alias for the compiler, which would then reload them for
 * every element and could not vectorize the loop. */
static void sgd_step(fedc_optim *opt, float lr, float *w, float *g)
{
  const float decay = opt->config.weight_decay;
  const float momentum = opt->config.momentum;
  const bool nesterov = opt->config.nesterov;
  float *m = opt->m;
  size_t n = opt->n;

  if (m == NULL) {
    for (size_t i = 0; i < n; i++)
      w[i] -= lr * (g[i] + decay * w[i]);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float d = g[i] + decay * w[i];

    m[i] = momentum * m[i] + d;
    d = nesterov ? d + momentum * m[i] : m[i];
    w[i] -= lr * d;
  }
}

static void adam_step(fedc_optim *opt, float lr, float *w, float *g)
{
  const fedc_train_config *c = &opt->config;
  bool decoupled = c->optimizer == FEDC_OPT_ADAMW;
  double bias1 = 1.0 - pow(c->beta1, (double)opt->t);
  double bias2 = 1.0 - pow(c->beta2, (double)opt->t);
  float step = (float)(lr / bias1);
  float root2 = (float)sqrt(bias2);

  for (size_t i = 0; i < opt->n; i++) {
    float d = g[i];

    if (decoupled)
      w[i] *= 1.0f - lr * c->weight_decay;
    else
      d += c->weight_decay * w[i];
    opt->m[i] = c->beta1 * opt->m[i] + (1.0f - c->beta1) * d;
    opt->v[i] = c->beta2 * opt->v[i] + (1.0f - c->beta2) * d * d;
    w[i] -= step * opt->m[i] / (sqrtf(opt->v[i]) / root2 + c->eps);
  }
}

void fedc_optim_step(fedc_optim *opt, float *w, float *g)
{
  float lr = fedc_optim_lr(opt);

  opt->t++;
  if (opt->config.optimizer == FEDC_OPT_SGD)
    sgd_step(opt, lr, w, g);
  else
    adam_step(opt, lr, w, g);
}
