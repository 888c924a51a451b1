/* Element-wise activation layers with PyTorch's definitions: ReLU,
 * LeakyReLU, GELU (the exact erf form), sigmoid and tanh. */
#ifndef FEDC_NN_ACTIVATION_H
#define FEDC_NN_ACTIVATION_H

#include "nn/layer.h"

enum fedc_activation {
  FEDC_ACT_RELU,
  FEDC_ACT_LEAKY_RELU,
  FEDC_ACT_GELU,
  FEDC_ACT_SIGMOID,
  FEDC_ACT_TANH,
};

/* Creates an activation layer; slope is LeakyReLU's negative slope and is
 * ignored by the others. Returns 0 or FEDC_ENOMEM. */
int fedc_activation_new(const char *name, const fedc_shape *in,
                        enum fedc_activation kind, float slope,
                        fedc_layer **out);

#endif
