/* Training losses over a batch of output rows and integer labels, with
 * PyTorch's mean reduction:
 *   ce   softmax cross-entropy (nn.CrossEntropyLoss), predicts the argmax;
 *   bce  binary cross-entropy on logits (nn.BCEWithLogitsLoss) against the
 *        label itself for one output (predicts logit > 0), or against the
 *        one-hot label for several (predicts the argmax);
 *   mse  mean squared error (nn.MSELoss) against the label as a number for
 *        one output (predicts the nearest integer), or against the one-hot
 *        label for several (predicts the argmax). */
#ifndef FEDC_NN_LOSS_H
#define FEDC_NN_LOSS_H

#include <stdint.h>

enum fedc_loss {
  FEDC_LOSS_CE = 0,
  FEDC_LOSS_BCE,
  FEDC_LOSS_MSE,
};

/* Parses "ce", "bce" or "mse". Returns 0 or FEDC_EINVAL. */
int fedc_loss_parse(const char *name, enum fedc_loss *out);
const char *fedc_loss_name(enum fedc_loss loss);

/* Computes the loss of batch rows of width outputs against labels. Adds
 * the per-example losses to *loss_sum (so the mean is *loss_sum / batch),
 * writes the gradient of the mean loss into grad unless it is NULL, and
 * writes each row's predicted class into pred unless it is NULL. Returns 0,
 * or FEDC_EINVAL for a label the loss cannot take (a class outside
 * 0..width-1, or not 0/1 for single-output bce). */
int fedc_loss_compute(enum fedc_loss loss, const float *out, uint32_t width,
                      const int32_t *labels, uint32_t batch, float *grad,
                      double *loss_sum, int32_t *pred);

#endif
