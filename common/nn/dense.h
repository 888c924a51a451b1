/* Fully connected layer, PyTorch's nn.Linear: y = x W^T + b over the last
 * dimension of the input, with "weight" [out, in] and "bias" [out]. */
#ifndef FEDC_NN_DENSE_H
#define FEDC_NN_DENSE_H

#include <stdbool.h>

#include "nn/layer.h"

/* Creates a dense layer named name mapping the last dimension of in to
 * out_features. Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_dense_new(const char *name, const fedc_shape *in,
                   uint32_t out_features, bool bias, fedc_layer **out);

#endif
