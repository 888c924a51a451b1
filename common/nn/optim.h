/* Optimizers over the model's flat parameter array, with PyTorch's update
 * rules (torch.optim.SGD, Adam and AdamW as of 1.13), the learning-rate
 * schedules and gradient clipping of fedc_train_config. */
#ifndef FEDC_NN_OPTIM_H
#define FEDC_NN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

typedef struct fedc_optim {
  fedc_train_config config;  /* with the Adam defaults filled in */
  size_t n;                  /* parameters */
  float *m;                  /* SGD momentum buffer or Adam first moment */
  float *v;                  /* Adam second moment */
  uint64_t t;                /* steps taken */
  uint64_t total_steps;      /* planned steps, for the cosine schedule */
} fedc_optim;

/* Prepares an optimizer for n parameters and a run of total_steps steps.
 * Returns 0, FEDC_EINVAL for an unknown optimizer or schedule, or
 * FEDC_ENOMEM. */
int fedc_optim_init(fedc_optim *opt, const fedc_train_config *config,
                    size_t n, uint64_t total_steps);
void fedc_optim_close(fedc_optim *opt);

/* Returns the learning rate of the next step under the schedule. */
float fedc_optim_lr(const fedc_optim *opt);

/* Scales grad so that its L2 norm is at most max_norm (no-op when
 * max_norm <= 0). Returns the norm before clipping. */
double fedc_optim_clip(float *grad, size_t n, float max_norm);

/* Applies one update to w with gradient g (which it may modify). */
void fedc_optim_step(fedc_optim *opt, float *w, float *g);

#endif
