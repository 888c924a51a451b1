/* 2-D max and average pooling, PyTorch's nn.MaxPool2d and nn.AvgPool2d
 * (floor mode; average pooling counts the zero padding, as torch does by
 * default). */
#ifndef FEDC_NN_POOL_H
#define FEDC_NN_POOL_H

#include "nn/layer.h"

enum fedc_pool {
  FEDC_POOL_MAX,
  FEDC_POOL_AVG,
};

/* Creates a pooling layer over in = [C, H, W] with a kernel_h x kernel_w
 * window moved by stride_h, stride_w and padding on every side, which must
 * be at most half the kernel. Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_pool_new(const char *name, const fedc_shape *in, enum fedc_pool kind,
                  uint32_t kernel_h, uint32_t kernel_w, uint32_t stride_h,
                  uint32_t stride_w, uint32_t padding, fedc_layer **out);

#endif
