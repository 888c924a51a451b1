#include "nn/loss.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "util/error.h"

static const char *const loss_names[] = {
  [FEDC_LOSS_CE] = "ce",
  [FEDC_LOSS_BCE] = "bce",
  [FEDC_LOSS_MSE] = "mse",
};

int fedc_loss_parse(const char *name, enum fedc_loss *out)
{
  for (size_t i = 0; i < sizeof(loss_names) / sizeof(loss_names[0]); i++) {
    if (strcmp(name, loss_names[i]) == 0) {
      *out = (enum fedc_loss)i;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

const char *fedc_loss_name(enum fedc_loss loss)
{
  return (unsigned)loss <= FEDC_LOSS_MSE ? loss_names[loss] : "unknown";
}

static int32_t argmax(const float *row, uint32_t width)
{
  uint32_t best = 0;

  for (uint32_t j = 1; j < width; j++)
    if (row[j] > row[best])
      best = j;
  return (int32_t)best;
}

/* log(1 + exp(z)) without overflow. */
static double softplus(double z)
{
  return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z));
}

static double ce_row(const float *z, uint32_t width, int32_t label,
                     float *grad, float scale)
{
  float max = z[0];
  double sum = 0.0;

  for (uint32_t j = 1; j < width; j++)
    if (z[j] > max)
      max = z[j];
  for (uint32_t j = 0; j < width; j++)
    sum += exp((double)z[j] - max);
  if (grad != NULL)
    for (uint32_t j = 0; j < width; j++)
      grad[j] = (float)(exp((double)z[j] - max) / sum) * scale -
                (j == (uint32_t)label ? scale : 0.0f);
  return log(sum) + max - z[label];
}

/* Elementwise losses against target t: one value, or one-hot for width > 1. */
static double elementwise_row(enum fedc_loss loss, const float *z,
                              uint32_t width, int32_t label, float *grad,
                              float scale)
{
  double total = 0.0;

  for (uint32_t j = 0; j < width; j++) {
    double t = width == 1 ? (double)label : (j == (uint32_t)label ? 1.0 : 0.0);
    double v = z[j];

    if (loss == FEDC_LOSS_BCE) {
      /* -t log s(v) - (1-t) log(1-s(v)) = softplus(v) - t v */
      total += softplus(v) - t * v;
      if (grad != NULL)
        grad[j] = (float)((1.0 / (1.0 + exp(-v)) - t) * scale / width);
    } else {
      total += (v - t) * (v - t);
      if (grad != NULL)
        grad[j] = (float)(2.0 * (v - t) * scale / width);
    }
  }
  return total / width;
}

static int32_t predict(enum fedc_loss loss, const float *z, uint32_t width)
{
  if (width > 1)
    return argmax(z, width);
  if (loss == FEDC_LOSS_BCE)
    return z[0] > 0 ? 1 : 0;
  return (int32_t)lrintf(z[0]);
}

static bool label_valid(enum fedc_loss loss, uint32_t width, int32_t label)
{
  if (width > 1 || loss == FEDC_LOSS_CE)
    return label >= 0 && (uint32_t)label < width;
  return loss == FEDC_LOSS_MSE || label == 0 || label == 1;
}

int fedc_loss_compute(enum fedc_loss loss, const float *out, uint32_t width,
                      const int32_t *labels, uint32_t batch, float *grad,
                      double *loss_sum, int32_t *pred)
{
  float scale = 1.0f / (float)batch;

  for (uint32_t i = 0; i < batch; i++) {
    const float *z = out + (size_t)i * width;
    float *g = grad != NULL ? grad + (size_t)i * width : NULL;

    if (!label_valid(loss, width, labels[i]))
      return FEDC_EINVAL;
    if (loss == FEDC_LOSS_CE)
      *loss_sum += ce_row(z, width, labels[i], g, scale);
    else
      *loss_sum += elementwise_row(loss, z, width, labels[i], g, scale);
    if (pred != NULL)
      pred[i] = predict(loss, z, width);
  }
  return 0;
}
