/* Internals shared by the server engine's files: engine.c handles peers
 * and messages, round.c the round lifecycle. Not for drivers. */
#ifndef FEDC_SERVER_ENGINE_IMPL_H
#define FEDC_SERVER_ENGINE_IMPL_H

#include "server/engine.h"
#include "server/peers.h"
#include "wire/snapshot.h"

/* The open round, or the one waiting for its evaluation. */
typedef struct fedc_round_state {
  uint64_t id;
  uint64_t started_ms;
  uint64_t timer;            /* deadline timer id; 0 once cancelled/fired */
  uint32_t sampled;
  uint32_t required;         /* quorum */
  uint32_t reported;
  uint32_t lost;             /* sampled, then lost, rejected or failed */
  uint64_t bytes_sent;
  uint64_t bytes_received;

  /* Sums for the weighted means of the clients' training metrics. */
  double train_weight;
  double train_loss_sum;
  double train_accuracy_sum;

  fedc_round_metrics metrics;  /* filled at close */
} fedc_round_state;

struct fedc_server_engine {
  fedc_server_engine_config config;
  char model_spec[FEDC_MODEL_SPEC_MAX + 1];
  char server_id[FEDC_ID_MAX + 1];

  fedc_snapshot *global;
  fedc_agg *agg;
  fedc_peers peers;

  enum fedc_server_phase phase;
  bool started;
  uint64_t last_round;       /* id of the last round closed */
  fedc_round_state round;
  uint64_t next_timer;

  /* Peers in state IDLE, kept so that an event while waiting for clients
   * costs O(1) rather than a scan of every peer. */
  size_t idle_peers;
  uint32_t *scratch;         /* sampling: indices of idle peers */
  size_t scratch_capacity;

  fedc_server_stats stats;
};

/* Counts peer as lost to the open round when it leaves the cohort before
 * reporting (connection lost, closed, or training failed), and frees its
 * staged update. */
void fedc_round_drop_member(fedc_server_engine *e, fedc_peer *peer);

/* Closes the round when its closing conditions hold, then starts the next
 * one if enough clients are idle. Every event ends with this call. */
int fedc_round_settle(fedc_server_engine *e, uint64_t now_ms,
                      fedc_server_actions *out);

/* Closes the open round at its deadline. */
int fedc_round_deadline(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out);

/* Folds a complete update of peer into the aggregate. */
int fedc_round_accept(fedc_server_engine *e, fedc_peer *peer,
                      const fedc_tensor_list *update);

/* Finishes the round waiting for evaluation, with result or without. */
int fedc_round_evaluated(fedc_server_engine *e, uint64_t now_ms,
                         const fedc_server_eval *result,
                         fedc_server_actions *out);

/* Abandons an open round or finishes one waiting for evaluation, for a
 * shutdown. */
int fedc_round_stop(fedc_server_engine *e, uint64_t now_ms,
                    fedc_server_actions *out);

/* Sends peer a Goodbye with reason and closes it, without an offense. */
int fedc_round_goodbye(uint64_t peer, const char *client_id,
                       const char *reason, fedc_server_actions *out);

/* Says Goodbye to and closes every peer, then emits DONE. */
int fedc_round_done(fedc_server_engine *e, const char *reason,
                    fedc_server_actions *out);

#endif
