/* A sequence of layers with the activation and gradient buffers to run it:
 * the body of a model and of each residual block. */
#ifndef FEDC_NN_NET_H
#define FEDC_NN_NET_H

#include <stddef.h>
#include <stdint.h>

#include "nn/layer.h"

typedef struct fedc_net {
  fedc_layer **layers;
  size_t count;
  size_t capacity;
  fedc_shape in;
  fedc_shape out;            /* output shape of the last layer, or in */
  float **acts;              /* acts[i]: output of layer i, batch_cap rows
                                (acts[i - 1] itself for a folded ReLU) */
  float *grad[2];            /* alternating input-gradient buffers */
  size_t max_size;           /* largest per-example layer output, floats */
  uint32_t batch_cap;
} fedc_net;

/* Creates an empty net taking examples of shape in. */
int fedc_net_new(const fedc_shape *in, fedc_net **out);

/* Frees the net, its layers and buffers, and clears *net; accepts NULL. */
void fedc_net_free(fedc_net **net);

/* Appends layer, taking ownership of it, also on failure. The layer's
 * input shape must equal the net's current output shape (FEDC_ESHAPE). A
 * ReLU after a layer that can apply it (fuses_relu, a convolution)
 * is folded into that layer, and a max pool after such a ReLU applies the
 * ReLU's derivative (see fedc_layer.relu_out and relu_grad). */
int fedc_net_append(fedc_net *net, fedc_layer *layer);

/* Runs the layers on batch examples at x; *y is set to the output, which
 * stays valid until the next forward. An empty net returns x itself. */
int fedc_net_forward(fedc_net *net, const float *x, uint32_t batch,
                     const fedc_pass *pass, const float **y);

/* Back-propagates dy (the gradient of the net's output of the latest
 * forward on x) through every layer, adding the parameter gradients, and
 * writes the input gradient to dx unless dx is NULL. */
int fedc_net_backward(fedc_net *net, const float *x, const float *dy,
                      float *dx, uint32_t batch);

/* Calls fn on every layer, depth first, sub-network layers after their
 * owner: the order of parameters in the model. */
void fedc_net_visit(fedc_net *net, void (*fn)(fedc_layer *layer, void *ctx),
                    void *ctx);

/* Returns the bytes of activation, gradient and layer scratch buffers a
 * training step on a batch of batch examples needs. */
size_t fedc_net_train_bytes(const fedc_net *net, uint32_t batch);

#endif
