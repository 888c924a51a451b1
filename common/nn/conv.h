/* 2-D convolution, PyTorch's nn.Conv2d with a square kernel, one stride
 * and one zero padding for both axes: "weight" [out, in, k, k] and "bias"
 * [out].
 *
 * The fast path splits the batch over the fedc_parallel workers. Where
 * the CPU has AVX-512F, each worker runs the nn/conv_simd.h kernels on one
 * example at a time: all of them for large enough layers, the forward
 * pass with positions as lanes for smaller stride-1 ones. Otherwise it
 * unfolds a group of examples (im2col, into scratch that stays in cache)
 * and runs one sgemm per group and product: forward W x cols, weight gradient
 * dy x cols^T, input gradient W^T x dy folded back (col2im). The backward
 * pass reads the input again instead of keeping the forward's columns, and
 * skips the input gradient where the caller passes no dx (the model's
 * first layer). With fedc_layer_set_reference(true), direct loops
 * accumulating in double compute the same values instead. */
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

#endif
