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
  uint32_t multi_krum_m;     /* Multi-Krum: updates averaged */
  double clip_norm;          /* norm bounding: 0 is off */
} fedc_agg_config;

typedef struct fedc_agg fedc_agg;

/* Fills config with the defaults of strategy. */
void fedc_agg_config_default(fedc_agg_config *config,
                             enum fedc_agg_strategy strategy);

/* Parses "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "median",
 * "trimmed_mean", "krum", "multi_krum". Returns 0 or FEDC_EINVAL. */
int fedc_agg_strategy_parse(const char *name, enum fedc_agg_strategy *out);
const char *fedc_agg_strategy_name(enum fedc_agg_strategy strategy);

/* Creates a strategy for models with layout's names and shapes (F32 only). */
int fedc_agg_new(const fedc_agg_config *config, const fedc_tensor_list *layout,
                 fedc_agg **out);
void fedc_agg_free(fedc_agg **agg);

/* Starts a round; drops whatever an unfinished round had added. */
void fedc_agg_begin(fedc_agg *agg);

/* Adds one update with weight (normally the client's example count).
 * Rejects a wrong layout (FEDC_ESHAPE), NaN/Inf (FEDC_ENONFINITE) and a
 * weight that is not positive and finite (FEDC_EINVAL); a rejected update
 * leaves the round unchanged. */
int fedc_agg_add(fedc_agg *agg, const fedc_tensor_list *update, double weight);

/* Returns the number of updates accepted this round. */
size_t fedc_agg_count(const fedc_agg *agg);

/* Applies the round's aggregate to global in place. Returns FEDC_ESTATE if
 * no update was added (global unchanged). */
int fedc_agg_finish(fedc_agg *agg, fedc_tensor_list *global);

/* Returns the bytes the strategy holds for a round of n updates. */
uint64_t fedc_agg_memory(const fedc_agg *agg, size_t n);

#endif
