/* Flattens each example to one dimension, PyTorch's nn.Flatten(): the
 * values keep their order, only the shape changes. */
#ifndef FEDC_NN_FLATTEN_H
#define FEDC_NN_FLATTEN_H

#include "nn/layer.h"

int fedc_flatten_new(const char *name, const fedc_shape *in,
                     fedc_layer **out);

#endif
