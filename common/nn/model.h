/* The local trainer's public interface: build a model from a text spec,
 * move its parameters in and out as named tensors, train and evaluate it on
 * a dataset view. Used by fedc-client, fedc-server (evaluation) and fedc-sim.
 *
 * Parameter names and layouts follow PyTorch's state_dict for the same
 * architecture ("fc1.weight" is [out, in]), so a checkpoint loads into an
 * equivalent torch module unchanged. */
#ifndef FEDC_NN_MODEL_H
#define FEDC_NN_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "data/dataset.h"
#include "tensor/tensor.h"

typedef struct fedc_model fedc_model;

enum fedc_optimizer {
  FEDC_OPT_SGD = 0,          /* torch.optim.SGD */
  FEDC_OPT_ADAM,             /* torch.optim.Adam: weight decay as L2 */
  FEDC_OPT_ADAMW,            /* torch.optim.AdamW: decoupled weight decay */
};

enum fedc_lr_schedule {
  FEDC_LR_CONSTANT = 0,
  FEDC_LR_STEP,              /* lr * lr_gamma^(floor(step / lr_step_size)) */
  FEDC_LR_COSINE,            /* from lr down to lr_min over the run's steps */
};

/* A zero-filled config with epochs, batch size and learning rate set is
 * plain SGD: every field added after max_steps defaults to off at 0. */
typedef struct fedc_train_config {
  uint32_t local_epochs;     /* passes over the view */
  uint32_t batch_size;
  float learning_rate;
  float momentum;            /* SGD momentum; 0 turns it off */
  float weight_decay;        /* L2 coefficient added to the gradient */
  float proximal_mu;         /* FedProx: mu/2 * ||w - w_start||^2; 0 is off */
  uint64_t seed;             /* shuffling and dropout */
  uint32_t max_steps;        /* 0: no limit besides local_epochs */

  enum fedc_optimizer optimizer;
  int nesterov;              /* SGD: Nesterov momentum when non-zero */
  float beta1;               /* Adam(W) moment decay; 0 means 0.9 */
  float beta2;               /* 0 means 0.999 */
  float eps;                 /* Adam(W) denominator term; 0 means 1e-8 */
  enum fedc_lr_schedule lr_schedule;
  uint32_t lr_step_size;     /* step schedule: optimizer steps per decay */
  float lr_gamma;            /* step schedule: decay factor */
  float lr_min;              /* cosine schedule: final learning rate */
  float clip_norm;           /* clip the global gradient L2 norm; 0 is off */
} fedc_train_config;

typedef struct fedc_train_stats {
  double loss;               /* mean training loss over the last epoch */
  double accuracy;           /* training accuracy over the last epoch */
  uint64_t examples;         /* examples seen, all epochs */
  uint64_t steps;            /* optimizer steps taken */
} fedc_train_stats;

typedef struct fedc_eval_stats {
  double loss;               /* mean loss */
  double accuracy;
  uint64_t examples;
} fedc_eval_stats;

/* Builds a model from spec ("logreg:784:10", "mlp:784:256:128:10", ...) with
 * weights initialised from seed. Returns 0, FEDC_EINVAL for a bad spec, or
 * FEDC_ENOMEM. */
int fedc_model_new(const char *spec, uint64_t seed, fedc_model **out);

/* Frees the model and clears *model; accepts NULL. */
void fedc_model_free(fedc_model **model);

/* Returns the spec the model was built from. */
const char *fedc_model_spec(const fedc_model *model);

/* Returns the number of input features the model expects per example. */
uint32_t fedc_model_input_dim(const fedc_model *model);

/* Returns the number of outputs per example (classes for a classifier). */
uint32_t fedc_model_output_dim(const fedc_model *model);

/* Returns the number of trainable parameters (floats). */
uint64_t fedc_model_param_count(const fedc_model *model);

/* Makes get_params and set_params also carry the buffers (batch norm's
 * running_mean and running_var), after the trainable parameters. Off by
 * default: the buffers are local state that federated averaging skips. */
void fedc_model_set_buffers_shared(fedc_model *model, bool shared);

/* Copies the trainable parameters into out (closed first), in a fixed order. */
int fedc_model_get_params(const fedc_model *model, fedc_tensor_list *out);

/* Replaces the parameters with in, which must match get_params' names and
 * shapes exactly (FEDC_ESHAPE otherwise; the model is then unchanged).
 * Tensors are matched by name, so their order in `in` does not matter.
 * Also returns FEDC_ENONFINITE, leaving the model unchanged, when a value
 * is NaN or Inf. */
int fedc_model_set_params(fedc_model *model, const fedc_tensor_list *in);

/* Trains on view with SGD as configured. Returns 0 or a FEDC_E* code;
 * FEDC_ENONFINITE if the loss diverges, and then the parameters are put
 * back to their values at the start of the call. Each call starts a fresh
 * optimizer state (momentum, Adam moments); shuffling and dropout draw
 * from config->seed only, so a fixed seed and OpenBLAS thread count
 * reproduce the same parameters. */
int fedc_model_train(fedc_model *model, const fedc_dataset_view *view,
                     const fedc_train_config *config, fedc_train_stats *stats);

/* Computes the mean loss and the accuracy on view, in eval mode. The loss
 * is the one the spec names, softmax cross-entropy by default. */
int fedc_model_evaluate(fedc_model *model, const fedc_dataset_view *view,
                        fedc_eval_stats *stats);

/* Like fedc_model_evaluate, and also counts, for each label below
 * num_classes, its examples (class_total) and the correctly predicted ones
 * (class_correct); both arrays have num_classes entries. */
int fedc_model_evaluate_classes(fedc_model *model,
                                const fedc_dataset_view *view,
                                fedc_eval_stats *stats, uint32_t num_classes,
                                uint64_t *class_correct,
                                uint64_t *class_total);

/* Writes a description of the model into a new malloc'ed string: a table
 * of its layers (name, kind, output shape per example, parameter count),
 * the total parameter count, and an estimate of the memory a training step
 * at batch_size takes. The estimate covers parameters, gradients,
 * optimizer state, activations and layer scratch space, but not allocator
 * overhead. Returns 0, FEDC_EINVAL for a zero batch size, or FEDC_ENOMEM. */
int fedc_model_describe(const fedc_model *model, uint32_t batch_size,
                        char **out);

/* Sets the number of worker threads (nn/parallel.h) that layers and
 * matrix products split a batch over, for this process, and keeps
 * OpenBLAS itself on one thread; 0 leaves both as they are. With more
 * than one thread, train one model at a time in the process. */
void fedc_nn_set_threads(int threads);

#endif
