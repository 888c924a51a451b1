/* Aggregation strategies: fold client updates into a new global model.
 *
 * An update is the client's weights after local training minus the round's
 * global weights, with the same tensor layout as the model. A fedc_agg lives
 * across rounds because server optimizers (FedAvgM, FedAdam, ...) keep
 * state between them. Per round: begin, add each accepted update, finish.
 * Streaming strategies (the FedAvg family) keep one running sum, so memory
 * is O(model) whatever the cohort; the robust ones (median, trimmed mean,
 * Krum) keep every update of the round and say so in fedc_agg_memory(). */
#ifndef FEDC_AGG_AGG_H
#define FEDC_AGG_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

enum fedc_agg_strategy {
  FEDC_AGG_FEDAVG = 0,
  FEDC_AGG_FEDAVGM,
  FEDC_AGG_FEDADAM,
  FEDC_AGG_FEDYOGI,
  FEDC_AGG_FEDADAGRAD,
  FEDC_AGG_MEDIAN,
  FEDC_AGG_TRIMMED_MEAN,
  FEDC_AGG_KRUM,
  FEDC_AGG_MULTI_KRUM,
};

typedef struct fedc_agg_config {
  enum fedc_agg_strategy strategy;
  double server_lr;          /* scales the aggregated update; 1.0 for FedAvg */
  double server_momentum;    /* FedAvgM beta */
  double beta1, beta2, tau;  /* FedAdam/FedYogi/FedAdagrad */
  double trim_fraction;      /* trimmed mean: share cut at each end */
  uint32_t krum_byzantine;   /* Krum f: assumed number of bad clients */
  uint32_t multi_krum_m;     /* Multi-Krum: updates averaged; 0 is n - f */
  double clip_norm;          /* norm bounding: 0 is off */
} fedc_agg_config;

typedef struct fedc_agg fedc_agg;

/* Fills config with the defaults of strategy (docs/aggregation.md lists
 * them): server_lr 1.0, or 0.1 for FedAvgM and 0.01 for the adaptive
 * optimizers; momentum 0.9; beta1 0.9 (0 for FedAdagrad); beta2 0.99;
 * tau 1e-3; trim_fraction 0.1; krum_byzantine 1; multi_krum_m 0;
 * clip_norm 0. */
void fedc_agg_config_default(fedc_agg_config *config,
                             enum fedc_agg_strategy strategy);

/* Parses "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "median",
 * "trimmed_mean", "krum", "multi_krum". Returns 0 or FEDC_EINVAL. */
int fedc_agg_strategy_parse(const char *name, enum fedc_agg_strategy *out);
const char *fedc_agg_strategy_name(enum fedc_agg_strategy strategy);

/* Creates a strategy for models with layout's names and shapes (F32 only).
 * Returns 0, FEDC_EINVAL for a parameter out of range or an empty layout,
 * FEDC_EUNSUPPORTED for a tensor that is not F32, FEDC_EOVERFLOW or
 * FEDC_ENOMEM. */
int fedc_agg_new(const fedc_agg_config *config, const fedc_tensor_list *layout,
                 fedc_agg **out);
void fedc_agg_free(fedc_agg **agg);

/* Starts a round; drops whatever an unfinished round had added. A new
 * strategy and a finished round are already empty, so begin is needed only
 * to drop an unfinished round. */
void fedc_agg_begin(fedc_agg *agg);

/* Adds one update with weight (normally the client's example count).
 * Rejects a wrong layout (FEDC_ESHAPE), NaN/Inf (FEDC_ENONFINITE) and a
 * weight that is not positive and finite (FEDC_EINVAL); a rejected update
 * leaves the round unchanged. The robust strategies can also fail with
 * FEDC_ENOMEM, leaving the round unchanged too. With clip_norm > 0 the
 * update is scaled down to that L2 norm first. Median, trimmed mean and
 * (Multi-)Krum check the weight but do not use it. Nothing is logged: the
 * caller knows the client and logs the rejection. */
int fedc_agg_add(fedc_agg *agg, const fedc_tensor_list *update, double weight);

/* fedc_agg_add() for a caller that has already computed the update's L2
 * norm with fedc_tensor_list_norm(), passed as norm: the FedAvg family
 * then reads the update once, to add it. A non-finite norm is rejected as
 * FEDC_ENONFINITE, as NaN/Inf in the update would be. */
int fedc_agg_add_norm(fedc_agg *agg, const fedc_tensor_list *update,
                      double weight, double norm);

/* Returns the number of updates accepted this round. */
size_t fedc_agg_count(const fedc_agg *agg);

/* Applies the round's aggregate to global in place and empties the round.
 * Returns 0, FEDC_ESHAPE if global's layout differs from the model's,
 * FEDC_ESTATE if no update or fewer than fedc_agg_min_updates() were added,
 * FEDC_ENONFINITE if the step would make a parameter NaN, Inf or too large
 * for a float, or FEDC_ENOMEM. On error global, the round and the optimizer
 * state are unchanged, so more updates can still be added. */
int fedc_agg_finish(fedc_agg *agg, fedc_tensor_list *global);

/* Returns the bytes the strategy holds for a round of n updates, including
 * what finish allocates. The FedAvg family's figure does not depend on n;
 * median, trimmed mean and Krum keep a float copy of every update of the
 * round, so theirs grows by about 4 bytes per parameter per update. */
uint64_t fedc_agg_memory(const fedc_agg *agg, size_t n);

/* Returns the fewest updates fedc_agg_finish() accepts: 2f + 3 for Krum
 * and Multi-Krum with f = krum_byzantine, 1 for the other strategies. */
size_t fedc_agg_min_updates(const fedc_agg *agg);

/* Copies the server optimizer state into out (closed first) so that a
 * checkpoint can carry it: F64 tensors of shape [parameters] named
 * "server_m" (FedAvgM's velocity or the first moment) and "server_v" (the
 * second moment of FedAdam, FedYogi and FedAdagrad). out is left empty for
 * strategies without state. Returns 0 or FEDC_ENOMEM. */
int fedc_agg_state_save(const fedc_agg *agg, fedc_tensor_list *out);

/* Restores state saved by fedc_agg_state_save() for the same strategy and
 * model. Rejects a missing, extra or wrong-shaped tensor (FEDC_ESHAPE),
 * NaN/Inf (FEDC_ENONFINITE) and a negative second moment (FEDC_EFORMAT);
 * on error the state is unchanged. */
int fedc_agg_state_load(fedc_agg *agg, const fedc_tensor_list *in);

#endif
