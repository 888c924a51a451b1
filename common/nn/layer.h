/* The trainer's internal layer interface, shared by the layer files, the
 * sequence container (net.c) and the model (model.c). Not installed.
 *
 * Activations are float32, batch-major: a batch of B examples of shape
 * [C, H, W] is B*C*H*W floats in PyTorch's NCHW order. A layer's shapes are
 * per example, without the batch dimension.
 *
 * Parameters live in the model's two flat arrays (values and gradients):
 * a layer declares each parameter's name and shape when it is created, the
 * model binds fedc_param.value and .grad into the flat arrays, and only
 * then calls the layer's init. Optimizers, weight decay, the proximal term
 * and gradient clipping work on the flat arrays. */
#ifndef FEDC_NN_LAYER_H
#define FEDC_NN_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"
#include "util/rng.h"

#define FEDC_SHAPE_MAX_DIMS 3
#define FEDC_PARAM_MAX_DIMS 4

/* The shape of one example: [F], [L, D] or [C, H, W]. */
typedef struct fedc_shape {
  uint32_t ndim;
  uint32_t dim[FEDC_SHAPE_MAX_DIMS];
} fedc_shape;

/* One named tensor of a layer: a trainable parameter or a buffer (state
 * such as batch norm's running mean, which the optimizer never touches). */
typedef struct fedc_param {
  char name[FEDC_TENSOR_NAME_MAX];   /* full state_dict name, "fc1.weight" */
  int ndim;
  uint64_t shape[FEDC_PARAM_MAX_DIMS];
  size_t numel;
  float *value;                      /* bound by the model */
  float *grad;                       /* bound by the model; NULL for buffers */
} fedc_param;

/* What a forward pass may depend on besides its input. */
typedef struct fedc_pass {
  bool train;                        /* batch statistics, dropout on */
  fedc_rng *rng;                     /* dropout masks; NULL in eval */
} fedc_pass;

typedef struct fedc_layer fedc_layer;
struct fedc_net;

typedef struct fedc_layer_ops {
  const char *kind;                  /* spec keyword, e.g. "dense" */

  /* Initialises parameters and buffers, drawing from rng in a fixed order. */
  void (*init)(fedc_layer *layer, fedc_rng *rng);

  /* Computes y (batch * out_size floats) from x. Returns 0, FEDC_ENOMEM
   * (scratch space) or FEDC_EINVAL (an input the layer rejects, such as a
   * token id outside the vocabulary). */
  int (*forward)(fedc_layer *layer, const float *x, float *y,
                 uint32_t batch, const fedc_pass *pass);

  /* Adds the parameter gradients of this batch into param->grad and, when
   * dx is not NULL, writes the input gradient into dx. x and y are the
   * values of the latest forward pass, which was run with pass->train. */
  int (*backward)(fedc_layer *layer, const float *x, const float *y,
                  const float *dy, float *dx, uint32_t batch);

  /* Bytes of scratch space the layer holds for a batch (0 if NULL). */
  size_t (*scratch_bytes)(const fedc_layer *layer, uint32_t batch);

  /* Frees priv and any scratch space (may be NULL). */
  void (*destroy)(fedc_layer *layer);
} fedc_layer_ops;

#define FEDC_LAYER_MAX_PARAMS 4
#define FEDC_LAYER_MAX_BUFFERS 3
#define FEDC_LAYER_NAME_MAX 96

struct fedc_layer {
  const fedc_layer_ops *ops;
  char name[FEDC_LAYER_NAME_MAX];    /* state_dict prefix, "fc1" or "3.body.0" */
  fedc_shape in;
  fedc_shape out;
  size_t in_size;                    /* floats per example */
  size_t out_size;
  fedc_param params[FEDC_LAYER_MAX_PARAMS];
  size_t num_params;
  fedc_param buffers[FEDC_LAYER_MAX_BUFFERS];
  size_t num_buffers;
  struct fedc_net *sub[2];           /* residual body and shortcut, or NULL */
  void *priv;

  /* Set by layers that can take over a ReLU that follows them. */
  bool fuses_relu;
  /* Set by the net when a ReLU follows a layer with fuses_relu. Forward
   * then applies the ReLU to y, and backward receives the gradient of the
   * ReLU's output and multiplies it by ReLU's derivative (y > 0) itself,
   * unless relu_grad_done is set. This saves the ReLU's passes over the
   * batch. */
  bool relu_out;
  /* Set by the net on that ReLU: the net skips its forward and backward,
   * and its output is the previous layer's. */
  bool folded;
  /* Set by layers whose backward can apply the derivative of a ReLU that
   * feeds them (max pooling). */
  bool takes_relu_grad;
  /* Set by the net on such a layer after a folded ReLU: its backward
   * applies that ReLU's derivative to dx, and the net sets relu_grad_done
   * on the layer that the ReLU is folded into, so that it skips the
   * multiplication by y > 0. */
  bool relu_grad;
  bool relu_grad_done;
};

/* Returns the number of floats in one example of shape. */
size_t fedc_layer_shape_size(const fedc_shape *shape);

/* Formats shape as "1x28x28" into buf. */
void fedc_layer_shape_format(const fedc_shape *shape, char *buf, size_t len);

/* Allocates a layer with the given ops and input shape; out is set by the
 * caller. Returns NULL when out of memory. */
fedc_layer *fedc_layer_alloc(const fedc_layer_ops *ops, const char *name,
                             const fedc_shape *in);

/* Sets the output shape and the cached sizes. */
void fedc_layer_set_out(fedc_layer *layer, const fedc_shape *out);

/* Declares a parameter (buffer when is_buffer) named "<layer>.<suffix>".
 * Returns 0, FEDC_EINVAL (too many, or a name too long) or FEDC_EOVERFLOW. */
int fedc_layer_declare(fedc_layer *layer, const char *suffix, bool is_buffer,
                       int ndim, const uint64_t *shape);

/* Calls destroy and frees the layer and its sub-networks; accepts NULL. */
void fedc_layer_free(fedc_layer **layer);

/* Grows *buf to at least count floats (or indices); *cap counts elements.
 * Returns 0, FEDC_EOVERFLOW or FEDC_ENOMEM. */
int fedc_layer_reserve(float **buf, size_t *cap, size_t count);
int fedc_layer_reserve_index(int32_t **buf, size_t *cap, size_t count);

/* Makes the conv and pool layers run their plain-C reference kernels
 * (reference == true) or their fast ones (the default), for the whole
 * process. Meant for tests that compare the two; do not switch while
 * another thread trains. */
void fedc_layer_set_reference(bool reference);
bool fedc_layer_reference(void);

/* Fills n floats with the uniform distribution on [-bound, bound). */
void fedc_layer_init_uniform(float *x, size_t n, float bound, fedc_rng *rng);

#endif
