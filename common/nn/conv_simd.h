/* AVX-512 kernels for the convolution's forward pass, weight gradient and
 * (as a convolution with flipped weights) input gradient. conv.c uses them
 * when the CPU has AVX-512F, which is checked at run time, so the library
 * itself stays built for baseline x86-64 or any other target.
 *
 * They read the zero-padded input directly instead of an unfolded copy (an
 * implicit im2col), so that neither the unfold nor OpenBLAS's packing of
 * it is needed. Output channels are the vector lanes. Weights and output
 * gradients are therefore used transposed, [C*k*k][width] and
 * [OH*OW][width], where width is the channel count rounded up to 16 or to
 * a multiple of FEDC_CONV_SIMD_LANES and the extra lanes are zero. */
#ifndef FEDC_NN_CONV_SIMD_H
#define FEDC_NN_CONV_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Output channels per tile for more than 16 channels: two vectors of 16
 * floats. */
#define FEDC_CONV_SIMD_LANES 32

/* Floats past the end of a padded image that the kernels may read (never
 * use) when a tile runs past the last output column. */
#define FEDC_CONV_SIMD_SLACK 256

typedef struct fedc_conv_shape {
  uint32_t in_c;             /* input channels */
  uint32_t pad_h, pad_w;     /* input size with the padding */
  uint32_t out_c;            /* output channels */
  uint32_t out_h, out_w;
  uint32_t kernel, stride;
} fedc_conv_shape;

/* Returns true when the CPU runs the kernels below (AVX-512F), unless
 * fedc_conv_simd_enable(false) turned them off. */
bool fedc_conv_simd_supported(void);

/* Returns true when the CPU runs the kernels below (AVX-512F) and they
 * pay off for shape s: the stride is small enough for
 * FEDC_CONV_SIMD_SLACK, at least 3/4 of the lanes hold channels and each
 * output sums enough products. fedc_conv_simd_enable(false) turns them
 * off. */
bool fedc_conv_simd_available(const fedc_conv_shape *s);

/* Turns the kernels off (or back on where available), for tests of the
 * OpenBLAS path. Do not switch while another thread trains. */
void fedc_conv_simd_enable(bool enable);

/* Returns out_c rounded up to 16, or above 16 to a multiple of
 * FEDC_CONV_SIMD_LANES. */
size_t fedc_conv_simd_width(uint32_t out_c);

/* Writes wt [C*k*k][width] = W^T, zero in the extra lanes, from the
 * weights w [out_c][C*k*k]. */
void fedc_conv_simd_transpose(const fedc_conv_shape *s, const float *w,
                              float *wt);

/* Writes wt [out_c*k*k][width(in_c)]: the weights of the convolution that
 * computes the input gradient of a stride-1 layer of shape s, flipped in
 * both kernel axes, with the roles of in_c and out_c swapped:
 * wt[(o, kh, kw)][c] = w[o][c][k-1-kh][k-1-kw]. */
void fedc_conv_simd_transpose_flipped(const fedc_conv_shape *s,
                                      const float *w, float *wt);

/* Computes one example's output y [out_c][OH*OW] = W x unfold(xpad) +
 * bias (bias may be NULL), through a ReLU when relu is set (NaN maps to
 * 0, as in the activation layer). xpad is [C][pad_h][pad_w] followed by
 * FEDC_CONV_SIMD_SLACK readable floats. */
void fedc_conv_simd_forward(const fedc_conv_shape *s, const float *xpad,
                            const float *wt, const float *bias, bool relu,
                            float *y);

/* Returns true when fedc_conv_simd_forward_rows runs for shape s: AVX-512F
 * as above, stride 1 and output rows of at least 8 positions. */
bool fedc_conv_simd_rows_available(const fedc_conv_shape *s);

/* Computes the same output as fedc_conv_simd_forward, from the same wt,
 * with output positions instead of channels as vector lanes. Suits layers
 * whose outputs sum too few products for the channel kernels, such as a
 * first layer on one input channel. Stride 1 only; xpad needs no slack. */
void fedc_conv_simd_forward_rows(const fedc_conv_shape *s, const float *xpad,
                                 const float *wt, const float *bias,
                                 bool relu, float *y);

/* Adds one example's weight gradient to dwt [C*k*k][width]: dwt +=
 * unfold(xpad) x gt, where gt [OH*OW][width] is the output gradient
 * transposed, zero in the extra lanes. */
void fedc_conv_simd_weight_grad(const fedc_conv_shape *s, const float *xpad,
                                const float *gt, float *dwt);

#endif
