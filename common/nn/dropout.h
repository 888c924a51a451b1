/* Inverted dropout, PyTorch's nn.Dropout. In training each value is zeroed
 * with probability p and the others are scaled by 1 / (1 - p). Evaluation
 * passes values through. Masks come from the pass's generator, so a seed
 * reproduces them, but they differ from torch's. */
#ifndef FEDC_NN_DROPOUT_H
#define FEDC_NN_DROPOUT_H

#include "nn/layer.h"

/* p must be in [0, 1). Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_dropout_new(const char *name, const fedc_shape *in, float p,
                     fedc_layer **out);

#endif
