/* Internals shared by the server engine's files: engine.c handles peers
 * and messages, round.c the synchronous round lifecycle, sampler.c the
 * cohort sampling, async.c the asynchronous modes. Not for drivers. */
#ifndef FEDC_SERVER_ENGINE_IMPL_H
#define FEDC_SERVER_ENGINE_IMPL_H

#include "server/engine.h"
#include "server/peers.h"
#include "util/rng.h"
#include "wire/snapshot.h"

/* The open round, or the one waiting for its evaluation. */
typedef struct fedc_round_state {
  uint64_t id;
  uint64_t started_ms;
  uint64_t timer;            /* deadline timer id; 0 once cancelled/fired */
  uint32_t sampled;
  uint32_t required;         /* quorum */
  uint32_t target;           /* close once this many reported; 0: only
                                when no one is outstanding */
  uint32_t reported;
  uint32_t lost;             /* sampled, then lost, rejected or failed */
  uint32_t cancelled;        /* stragglers cancelled at the close */
  uint32_t too_stale;        /* asynchronous: updates discarded */
  double utility;            /* Oort: statistical utility of the cohort */
  uint64_t bytes_sent;
  uint64_t bytes_received;

  /* Sums for the weighted means of the clients' training metrics. */
  double train_weight;
  double train_loss_sum;
  double train_accuracy_sum;

  fedc_round_metrics metrics;  /* filled at close */
} fedc_round_state;

/* An asynchronous task's deadline. Every task gets the same delay, so the
 * queue is in deadline order when appended in send order. */
typedef struct fedc_task_deadline {
  uint64_t due_ms;
  uint64_t peer;
  uint64_t seq;
} fedc_task_deadline;

/* The asynchronous modes' state beside the open round (buffer). */
typedef struct fedc_async_state {
  uint64_t next_task;        /* task ids sent in FitTask.round */
  fedc_task_deadline *queue; /* ring buffer of deadlines */
  size_t head, count, capacity;
  uint64_t timer;            /* id of the timer for the queue's head; 0
                                when none is pending */

  /* At most one EVALUATE is outstanding, because the daemon runs one at a
   * time. Rounds that finish meanwhile wait here, in order, for theirs to
   * be reported first. */
  uint64_t eval_round;       /* 0: no evaluation outstanding */
  fedc_round_metrics eval_metrics;
  fedc_round_metrics *waiting;
  size_t waiting_count, waiting_capacity;
  bool final_closed;         /* total_rounds reached: no more tasks */
} fedc_async_state;

/* Oort's state across rounds. */
typedef struct fedc_oort_state {
  double exploration;        /* current share, decaying */
  double preferred_ms;       /* T; 0 until measured */
  double pacer_step_ms;
  double window_utility;     /* summed over the current pacer window */
  double last_window_utility;
  uint32_t window_rounds;
  bool has_last_window;
} fedc_oort_state;

struct fedc_server_engine {
  fedc_server_engine_config config;
  char model_spec[FEDC_MODEL_SPEC_MAX + 1];
  char server_id[FEDC_ID_MAX + 1];

  fedc_snapshot *global;
  fedc_agg *agg;
  fedc_peers peers;
  /* The peers of the ended run, freed only by fedc_server_engine_free().
   * Freeing 10^5 of them took 8 to 10 ms in `bench/sim/run.sh scale`,
   * which the event that ends the run would otherwise spend. */
  fedc_peers closed_peers;

  enum fedc_server_phase phase;
  bool started;
  uint64_t last_round;       /* id of the last round closed */
  fedc_round_state round;
  uint64_t next_timer;

  /* Sampling: dense indices of peers (the idle ones, then the picked
   * ones first), and at a close the cohort's. */
  uint32_t *scratch;
  size_t scratch_capacity;

  /* Synchronous rounds: the connection ids of the peers sampled for the
   * open round, so that closing it visits the cohort rather than every
   * peer. */
  uint64_t *cohort;
  size_t cohort_count, cohort_capacity;

  fedc_oort_state oort;
  fedc_async_state async;
  uint64_t next_task_seq;

  /* The model and optimizer state before the round being evaluated, kept
   * so that a NaN or Inf test loss can roll the round back. */
  fedc_snapshot *previous;
  fedc_tensor_list previous_state;

  uint32_t abandoned_in_row; /* rounds abandoned since the last aggregated */
  uint64_t retry_timer;      /* delay after an abandoned round; 0: none */
  bool draining;             /* fedc_server_engine_drain() was called */
  uint64_t drain_timer;      /* drain timeout; 0: none pending */

  fedc_server_stats stats;
};

static inline bool fedc_engine_is_async(const fedc_server_engine *e)
{
  return e->config.mode != FEDC_ROUNDS_SYNC;
}

/* Marks peer as having a task: state TRAINING, counted in training_now. */
void fedc_round_task_started(fedc_server_engine *e, fedc_peer *peer,
                             uint64_t now_ms);

/* Takes the task of peer (TRAINING or UPLOADING) away from the count of
 * clients training. Every path that ends a task calls it once. */
void fedc_round_task_ended(fedc_server_engine *e, fedc_peer *peer);

/* Sends peer a FitTask with task id task and the global model stream. */
int fedc_round_send_task(fedc_server_engine *e, fedc_peer *peer,
                         uint64_t task, uint64_t now_ms,
                         fedc_server_actions *out);

/* Sends peer a Cancel for its task, discards a partial upload, and makes
 * it idle; a result that crossed the Cancel is discarded later. */
int fedc_round_cancel_task(fedc_server_engine *e, fedc_peer *peer,
                           uint64_t now_ms, const char *reason,
                           fedc_server_actions *out);

/* Emits CANCEL_TIMER for *timer unless it is 0, and clears it. */
int fedc_round_cancel_timer(uint64_t *timer, fedc_server_actions *out);

/* Applies the aggregate to the global model. With keep_previous the model
 * and optimizer state before it are kept in e->previous and
 * e->previous_state for fedc_round_roll_back(). */
int fedc_round_apply(fedc_server_engine *e, bool keep_previous);

/* Restores the model and optimizer state kept by fedc_round_apply(). */
int fedc_round_roll_back(fedc_server_engine *e);

/* Drops what fedc_round_apply() kept. */
void fedc_round_forget_previous(fedc_server_engine *e);

/* Fills the open round's metrics. */
void fedc_round_fill_metrics(fedc_server_engine *e, bool aggregated,
                             const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

int fedc_round_push_checkpoint(fedc_server_engine *e,
                               fedc_server_actions *out);
int fedc_round_push_finished(const fedc_round_metrics *m,
                             fedc_server_actions *out);
bool fedc_round_evaluation_due(const fedc_server_engine *e, uint64_t round);

/* sampler.c: makes e->scratch hold at least n indices. Returns 0 or
 * FEDC_ENOMEM. */
int fedc_sampler_reserve(fedc_server_engine *e, size_t n);

/* Draws n distinct idle peers uniformly with rng and writes their dense
 * indices to e->scratch[0..n), n at most the idle count. The draw is a
 * partial Fisher-Yates shuffle of the idle peers listed in dense-array
 * order, done sparsely: O(n log peers), not O(peers). */
int fedc_sampler_draw(fedc_server_engine *e, fedc_rng *rng, size_t n);

/* Picks a synchronous cohort from the idle peers: writes the dense indices
 * of the picked peers to e->scratch and their number to *picked, and to
 * *cohort the cohort size before over-selection, which the quorum and the
 * early close use. */
int fedc_sampler_pick(fedc_server_engine *e, uint32_t *picked,
                      uint32_t *cohort);

/* Returns the quorum of a cohort: max(quorum_count, ceil(quorum_fraction
 * x cohort)), at least 1 and at most the cohort (1 for an empty one). */
uint32_t fedc_sampler_quorum(const fedc_server_engine_config *c,
                             uint32_t cohort);

/* Records a peer's accepted result for Oort. */
void fedc_sampler_observe(fedc_server_engine *e, fedc_peer *peer,
                          uint64_t now_ms);

/* Records the elapsed time of a task being cancelled as the client's
 * duration when it is longer than the last one measured. */
void fedc_sampler_straggled(fedc_server_engine *e, fedc_peer *peer,
                            uint64_t now_ms);

/* Updates Oort's exploration share and pacer after a round closed. */
void fedc_sampler_round_closed(fedc_server_engine *e);

/* async.c: the asynchronous modes. */
int fedc_async_settle(fedc_server_engine *e, uint64_t now_ms,
                      fedc_server_actions *out);
int fedc_async_timer(fedc_server_engine *e, uint64_t now_ms, uint64_t timer,
                     fedc_server_actions *out);
int fedc_async_evaluated(fedc_server_engine *e, uint64_t now_ms,
                         uint64_t round, const fedc_server_eval *result,
                         fedc_server_actions *out);

/* Returns the weight an update of peer gets at this moment: its staleness
 * weight (and FedAsync's alpha), or 0 when it is too stale. */
double fedc_async_update_scale(fedc_server_engine *e, const fedc_peer *peer);

/* Drops an open buffer for a shutdown. */
int fedc_async_stop(fedc_server_engine *e, fedc_server_actions *out);
void fedc_async_close(fedc_server_engine *e);

/* Ends the task of a peer that leaves before reporting (connection lost,
 * closed, or training failed): frees its staged update, makes it idle and
 * counts it as lost to the open round. Peers without a task are left
 * alone. */
void fedc_round_drop_member(fedc_server_engine *e, fedc_peer *peer);

/* Closes the round when its closing conditions hold, then starts the next
 * one if enough clients are idle. Every event ends with this call. */
int fedc_round_settle(fedc_server_engine *e, uint64_t now_ms,
                      fedc_server_actions *out);

/* Closes the open synchronous round, or finishes the one being evaluated,
 * when the drain timeout fires. */
int fedc_round_drain_timeout(fedc_server_engine *e, uint64_t now_ms,
                             fedc_server_actions *out);

/* Closes the open round at its deadline. */
int fedc_round_deadline(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out);

/* Multiplies every F32 value of update by the weight an update of peer
 * gets now in the asynchronous modes (fedc_async_update_scale()). */
void fedc_round_scale_update(fedc_server_engine *e, const fedc_peer *peer,
                             fedc_tensor_list *update);

/* Folds a complete update of peer into the aggregate. In the asynchronous
 * modes the caller has scaled it with fedc_round_scale_update(). norm is
 * the update's L2 norm as fedc_tensor_list_norm() gives it, or negative
 * when the caller does not have it (a scaled update). */
int fedc_round_accept(fedc_server_engine *e, fedc_peer *peer,
                      const fedc_tensor_list *update, double norm,
                      uint64_t now_ms);

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

/* Cancels the engine's own timers, emits one CLOSE_ALL with a Goodbye
 * for reason when any peer is left, empties the peer table, then emits
 * DONE with failed set as given. */
int fedc_round_done(fedc_server_engine *e, const char *reason, bool failed,
                    fedc_server_actions *out);

/* Returns whether the run that ends now has failed: it closed rounds but
 * aggregated none of them. */
bool fedc_round_run_failed(const fedc_server_engine *e);

/* Starts the drain timeout of timeout_ms. */
int fedc_round_start_drain_timer(fedc_server_engine *e, uint64_t timeout_ms,
                                 fedc_server_actions *out);

/* Drain in the asynchronous modes: ends the run once no task is out. */
int fedc_async_drain(fedc_server_engine *e, uint64_t now_ms,
                     fedc_server_actions *out);

/* The drain timeout in the asynchronous modes: cancels the tasks still
 * out and applies the partial buffer. */
int fedc_async_drain_timeout(fedc_server_engine *e, uint64_t now_ms,
                             fedc_server_actions *out);

#endif
