/* The local trainer's public interface: build a model from a text spec,
 * move its parameters in and out as named tensors, train and evaluate it on
 * a dataset view. Used by fedc-client, fedc-server (evaluation) and fedc-sim.
 *
 * Parameter names and layouts follow PyTorch's state_dict for the same
 * architecture ("fc1.weight" is [out, in]), so a checkpoint loads into an
 * equivalent torch module unchanged. */
#ifndef FEDC_NN_MODEL_H
#define FEDC_NN_MODEL_H

#include <stdint.h>

#include "data/dataset.h"
#include "tensor/tensor.h"

typedef struct fedc_model fedc_model;

typedef struct fedc_train_config {
  uint32_t local_epochs;     /* passes over the view */
  uint32_t batch_size;
  float learning_rate;
  float momentum;            /* SGD momentum; 0 turns it off */
  float weight_decay;        /* L2 coefficient added to the gradient */
  float proximal_mu;         /* FedProx: mu/2 * ||w - w_start||^2; 0 is off */
  uint64_t seed;             /* shuffling and dropout */
  uint32_t max_steps;        /* 0: no limit besides local_epochs */
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

/* Copies the trainable parameters into out (closed first), in a fixed order. */
int fedc_model_get_params(const fedc_model *model, fedc_tensor_list *out);

/* Replaces the parameters with in, which must match get_params' names and
 * shapes exactly (FEDC_ESHAPE otherwise; the model is then unchanged). */
int fedc_model_set_params(fedc_model *model, const fedc_tensor_list *in);

/* Trains on view with SGD as configured. Returns 0 or a FEDC_E* code;
 * FEDC_ENONFINITE if the loss diverges. */
int fedc_model_train(fedc_model *model, const fedc_dataset_view *view,
                     const fedc_train_config *config, fedc_train_stats *stats);

/* Computes mean softmax cross-entropy loss and accuracy on view. */
int fedc_model_evaluate(fedc_model *model, const fedc_dataset_view *view,
                        fedc_eval_stats *stats);

/* Sets the OpenBLAS thread count for this process (0 leaves it as is). */
void fedc_nn_set_threads(int threads);

#endif
