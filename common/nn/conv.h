/* 2-D convolution, PyTorch's nn.Conv2d with a square kernel, one stride
 * and one zero padding for both axes: "weight" [out, in, k, k] and "bias"
 * [out]. Computed as im2col of the whole batch followed by one sgemm. */
#ifndef FEDC_NN_CONV_H
#define FEDC_NN_CONV_H

#include <stdbool.h>

#include "nn/layer.h"

/* Creates a convolution over in = [C, H, W] with out_channels filters of
 * kernel x kernel. Returns 0, FEDC_EINVAL (not an image, padding not below
 * the kernel size, or a kernel larger than the padded input) or
 * FEDC_ENOMEM. */
int fedc_conv_new(const char *name, const fedc_shape *in,
                  uint32_t out_channels, uint32_t kernel, uint32_t stride,
                  uint32_t padding, bool bias, fedc_layer **out);

/* Unfolds one [C, H, W] image into col [C*k*k, OH*OW], whose rows are ld
 * floats apart (ld >= OH*OW), with zeros for the padding. */
void fedc_conv_im2col(const float *x, uint32_t channels, uint32_t height,
                      uint32_t width, uint32_t kernel, uint32_t stride,
                      uint32_t padding, float *col, size_t ld);

#endif
