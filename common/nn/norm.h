/* Normalization layers with PyTorch's definitions.
 *
 * Batch norm (nn.BatchNorm1d/2d) normalizes each channel (the first
 * dimension of an example) over the batch and the remaining dimensions.
 * It has "weight" and "bias" [C] and the buffers "running_mean" and
 * "running_var" [C], which training updates with the given momentum (the
 * variance with Bessel's correction) and evaluation uses. torch's
 * "num_batches_tracked" counter is not kept: fedc never needs it because
 * the momentum is always a number.
 *
 * Layer norm (nn.LayerNorm) normalizes each example over its last
 * norm_dims dimensions, with "weight" and "bias" of that shape. */
#ifndef FEDC_NN_NORM_H
#define FEDC_NN_NORM_H

#include "nn/layer.h"

int fedc_norm_batch_new(const char *name, const fedc_shape *in, float eps,
                        float momentum, fedc_layer **out);

/* norm_dims is 1 .. in->ndim. Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_norm_layer_new(const char *name, const fedc_shape *in,
                        uint32_t norm_dims, float eps, fedc_layer **out);

#endif
