/* The server's round logic as a state machine without I/O.
 *
 * The engine takes events: peer connected, message received, peer lost,
 * timer fired, evaluation finished. For each it appends actions to a
 * fedc_server_actions list that the caller drains: send a message or a
 * chunk stream, close a peer or every peer, start or cancel a timer,
 * evaluate, checkpoint, round finished. It never touches a socket, a
 * clock, a file or a thread, so the daemon (libuv), the simulator (virtual
 * clock) and the tests (scripted events) drive the same code. Every event
 * carries the driver's time in milliseconds from any fixed origin; it must
 * not go backwards.
 *
 * Synchronous rounds (the default): once enough clients are idle the
 * engine samples a cohort with a seeded generator (uniformly, by Poisson
 * sampling, or guided by utility as in Oort), sends each a FitTask and the
 * global model, folds each complete and valid update into a streaming
 * aggregate (fedc_agg), and closes the round when every sampled client has
 * reported or been lost, at the target count when over-selecting, at the
 * quorum when close_at_quorum is set, as soon as the quorum can no longer
 * be reached, or at the deadline. Clients still training at the close get
 * a Cancel and are idle again; their late results are discarded and
 * counted. A round that closes with fewer results than the quorum is
 * abandoned and leaves the model unchanged. So is a round whose aggregate
 * would put NaN or Inf into the model, or whose new model has a NaN or
 * Inf test loss: the engine rolls back to the previous model and optimizer
 * state before the round is checkpointed. Abandoned rounds write no
 * checkpoint, and the next round waits a growing delay.
 *
 * Asynchronous modes: clients train whenever they are idle, up to
 * max_concurrency at once. FedBuff applies every buffer of K updates,
 * FedAsync every single update, each scaled by a function of its
 * staleness (server steps since the client's model was sent); updates
 * staler than max_staleness are discarded. Each application is one
 * "round" for the metrics, the checkpoint and total_rounds.
 * docs/protocol.md has the state tables.
 *
 * Bad input from a peer never fails an event: it is rejected, counted in
 * fedc_server_stats, and that peer alone is closed, with the reason in the
 * CLOSE action, while the round goes on with the others.
 *
 * Memory, for a model of M bytes: the global model (M), the aggregate (2M
 * for FedAvg, which sums in double precision; more for stateful and robust
 * strategies), one staging copy (M) per update in flight, because each
 * update is held whole until it is complete and valid so that a bad last
 * chunk cannot poison the sum, and one copy (M) of an older global model
 * while a stream of it is still being sent after the model changed. With
 * FedAvg the peak is M x (3 + updates in flight), plus M while a stream
 * lags behind a round. While a synchronous round is evaluated the model
 * before it (M) and the strategy's optimizer state before it are kept too,
 * for the rollback. */
#ifndef FEDC_SERVER_ENGINE_H
#define FEDC_SERVER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg/agg.h"
#include "fedc.pb-c.h"
#include "nn/model.h"
#include "server/actions.h"
#include "tensor/tensor.h"

typedef struct fedc_server_engine fedc_server_engine;

/* How a synchronous round picks its cohort from the idle clients. */
enum fedc_sampling {
  FEDC_SAMPLING_UNIFORM = 0, /* the cohort size, uniformly without
                                replacement */
  FEDC_SAMPLING_POISSON,     /* each idle client independently with
                                probability poisson_q */
  FEDC_SAMPLING_OORT,        /* by statistical and system utility, with
                                an exploration share (Lai et al., OSDI
                                2021) */
};

enum fedc_rounds_mode {
  FEDC_ROUNDS_SYNC = 0,      /* sampled cohorts, closed rounds */
  FEDC_ROUNDS_FEDBUFF,       /* buffer of K updates (Nguyen et al.,
                                AISTATS 2022) */
  FEDC_ROUNDS_FEDASYNC,      /* every update mixed in at once (Xie et
                                al., 2019) */
};

/* The weight s(t) of an update t server steps stale (FedAsync's
 * functions): constant 1; polynomial (1 + t)^-a; hinge 1 for t <= b,
 * else 1 / (a (t - b) + 1). */
enum fedc_staleness_fn {
  FEDC_STALENESS_CONSTANT = 0,
  FEDC_STALENESS_POLYNOMIAL,
  FEDC_STALENESS_HINGE,
};

/* Oort's parameters. The utility of an explored client i is
 * |B_i| x loss_i (its examples times the mean training loss it reported,
 * standing in for |B_i| sqrt(mean of squared losses), which the clients do
 * not report), plus sqrt(0.1 ln(round) / last round i was picked), times
 * (T / t_i)^alpha when its measured duration t_i exceeds the preferred
 * duration T. */
typedef struct fedc_oort_config {
  double exploration;        /* share of the cohort drawn from clients
                                never heard from, in [0, 1]; decays by
                                0.98 a round down to exploration_min */
  double exploration_min;
  double alpha;              /* exponent of the straggler penalty, >= 0 */
  uint64_t preferred_ms;     /* T; 0: the median duration measured in the
                                first round with results */
  uint32_t pacer_window;     /* rounds; when the utility picked over the
                                last window falls below the window before,
                                T grows by pacer_step_ms; 0: no pacer */
  uint64_t pacer_step_ms;    /* 0: a tenth of T when T is set */
} fedc_oort_config;

typedef struct fedc_server_engine_config {
  /* Cohort. A round starts once max(min_clients, min_fit_clients) clients
   * are registered and idle. The cohort is clients_per_round, or
   * ceil(fraction_fit x idle clients) when that is 0, then raised to
   * min_fit_clients, cut to max_fit_clients (0: no cap) and to the idle
   * clients. Poisson sampling ignores these sizes: capping the draw would
   * break the independence that privacy accounting relies on. */
  uint32_t min_clients;
  double fraction_fit;       /* in (0, 1] */
  uint32_t clients_per_round;
  uint32_t min_fit_clients;
  uint32_t max_fit_clients;

  enum fedc_sampling sampling;
  double poisson_q;          /* in (0, 1] */
  fedc_oort_config oort;

  /* Over-selection: with a factor above 1 the engine samples
   * ceil(cohort x factor) clients (cut to the idle ones), closes the round
   * once the cohort size has reported and cancels the rest. */
  double over_selection;     /* >= 1; 1 is off */

  /* Clients training at once, in every mode; 0: no limit. A synchronous
   * cohort is cut to it. */
  uint32_t max_concurrency;

  /* Asynchronous modes. A task that has not reported after
   * round_deadline_ms is cancelled. */
  enum fedc_rounds_mode mode;
  uint32_t buffer_size;      /* FedBuff K, >= 1 */
  double async_alpha;        /* FedAsync mixing weight, in (0, 1] */
  enum fedc_staleness_fn staleness_fn;
  double staleness_a;        /* polynomial exponent, or hinge slope */
  uint32_t staleness_b;      /* hinge: steps without a penalty */
  uint32_t max_staleness;    /* older updates are discarded; 0: no limit */

  /* Quorum: results needed to aggregate, max(quorum_count,
   * ceil(quorum_fraction x cohort)), at least 1 and at most the cohort. */
  double quorum_fraction;    /* in [0, 1] */
  uint32_t quorum_count;
  bool close_at_quorum;      /* close once the quorum reported, dropping
                                the stragglers' results (over-selection) */
  uint64_t round_deadline_ms;

  /* Abandoned rounds. After one, the next round waits retry_delay_ms,
   * doubled for each further abandoned round in a row and capped at
   * retry_delay_max_ms, so that clients that fail at once cannot spin the
   * server. After max_abandoned_rounds in a row the run stops and fails
   * (DONE with failed set); 0: no limit. */
  uint64_t retry_delay_ms;
  uint64_t retry_delay_max_ms;
  uint32_t max_abandoned_rounds;

  /* Updates whose L2 norm exceeds this are rejected (FEDC_REJECT_UPDATE_NORM)
   * before they reach the aggregate; 0: no bound. The norm is of the
   * update as the client sent it, before any staleness scaling. */
  double max_update_norm;

  uint64_t total_rounds;     /* round ids 1..total_rounds; 0: no end.
                                Abandoned rounds count too */
  uint32_t evaluate_every;   /* evaluate after every Nth aggregated round
                                and after the last one; 0: never */
  uint64_t seed;             /* cohort sampling; round r uses stream r */

  /* Shipped in every FitTask. train.seed goes out plus the round id, so
   * local shuffling differs between rounds. */
  fedc_train_config train;
  const char *model_spec;    /* copied; at most FEDC_MODEL_SPEC_MAX bytes */
  const char *server_id;     /* copied; at most FEDC_ID_MAX bytes */

  fedc_agg_config agg;
  uint32_t chunk_bytes;      /* tensor data per chunk the server sends */
  uint32_t max_frame_bytes;  /* announced in Welcome; the driver enforces */
} fedc_server_engine_config;

/* A server-side evaluation of the global model, done by the driver. */
typedef struct fedc_server_eval {
  double loss;
  double accuracy;
} fedc_server_eval;

typedef struct fedc_server_stats {
  uint64_t peers;                 /* connected now, registered or not */
  uint64_t clients;               /* registered by a Hello now */
  uint64_t rounds_aggregated;
  uint64_t rounds_abandoned;      /* rolled-back rounds included */
  uint64_t rounds_rolled_back;    /* aggregated, then the new model was
                                     discarded: NaN or Inf in it or in its
                                     test loss */
  uint64_t results_accepted;
  uint64_t clients_lost;          /* sampled clients that left their round
                                     before reporting: lost, closed or
                                     failed */
  uint64_t client_errors;         /* Error messages received from clients */
  uint64_t tasks_sent;            /* FitTasks sent */
  uint64_t tasks_cancelled;       /* Cancels sent: stragglers of a closed
                                     round, expired asynchronous tasks */
  uint64_t results_late;          /* results of cancelled tasks, discarded */
  uint64_t results_too_stale;     /* asynchronous updates discarded for
                                     exceeding max_staleness */
  uint32_t training_now;          /* clients with a task now */
  uint32_t training_max;          /* maximum training at once so far */
  uint64_t bytes_sent;            /* tensor data in streams sent */
  uint64_t bytes_received;        /* tensor data in chunks accepted */
  uint64_t rejected[FEDC_REJECT_COUNT];  /* peers closed, by offense */
} fedc_server_stats;

/* Fills config with defaults: min_clients 2, fraction_fit 1, quorum
 * fraction 1 and count 1, deadline 10 minutes, 10 rounds, evaluation every
 * round, seed 0, one local epoch of batch 32 at learning rate 0.01, model
 * spec "", server id "fedc-server", FedAvg, 1 MiB chunks and 4 MiB frames;
 * synchronous uniform sampling, no over-selection, no concurrency limit,
 * Poisson q 0.1; Oort exploration 0.9 down to 0.2, alpha 2, T measured,
 * pacer window 5 rounds; FedBuff K 10, FedAsync alpha 0.5, polynomial
 * staleness with a = 0.5 (1 / sqrt(1 + t)), hinge b 4, no maximum
 * staleness; retry delay 1 s doubling up to 60 s, at most 10 abandoned
 * rounds in a row, max_update_norm 1e4. */
void fedc_server_engine_config_default(fedc_server_engine_config *config);

/* Checks a config without building an engine. Returns 0, or FEDC_EINVAL
 * and a sentence naming the invalid setting in reason (may be NULL). */
int fedc_server_engine_config_check(const fedc_server_engine_config *config,
                                    char *reason, size_t size);

/* Parses the names used in configuration files: "uniform", "poisson",
 * "oort"; "sync", "fedbuff", "fedasync"; "constant", "polynomial",
 * "hinge". Each returns 0 or FEDC_EINVAL. */
int fedc_sampling_parse(const char *name, enum fedc_sampling *out);
int fedc_rounds_mode_parse(const char *name, enum fedc_rounds_mode *out);
int fedc_staleness_fn_parse(const char *name, enum fedc_staleness_fn *out);

/* Returns s(staleness) for the config's staleness function. */
double fedc_staleness_weight(const fedc_server_engine_config *config,
                             uint64_t staleness);

/* Creates an engine that takes ownership of model (left empty), the global
 * model after completed_rounds rounds: 0 for a fresh start, or the
 * checkpoint's round to resume, in which case the next round is
 * completed_rounds + 1. agg_state, when not NULL, is the strategy state a
 * CHECKPOINT action carried. Returns 0, FEDC_EINVAL for an invalid config
 * (logged with the reason) or model, or another FEDC_E* code from
 * fedc_agg. */
int fedc_server_engine_new(const fedc_server_engine_config *config,
                           fedc_tensor_list *model, uint64_t completed_rounds,
                           const fedc_tensor_list *agg_state,
                           fedc_server_engine **out);

void fedc_server_engine_free(fedc_server_engine **engine);

/* Events. Each appends its actions to out and returns 0, FEDC_EINVAL for a
 * driver error (a reused connection id, an evaluation result for another
 * round, NULL arguments), or FEDC_ENOMEM. After FEDC_ENOMEM some actions
 * may be missing, so the driver should stop and resume from the last
 * checkpoint. */

/* Lets rounds begin. Until then peers may connect and register. */
int fedc_server_engine_start(fedc_server_engine *engine, uint64_t now_ms,
                             fedc_server_actions *out);

/* A connection with id peer was accepted; identity is the client id from
 * its TLS certificate, or NULL without one. The Hello must carry the same
 * client id as the certificate. */
int fedc_server_engine_connected(fedc_server_engine *engine, uint64_t now_ms,
                                 uint64_t peer, const char *identity,
                                 fedc_server_actions *out);

/* The connection closed or failed. A peer the engine already closed, or
 * an unknown one, is ignored. */
int fedc_server_engine_lost(fedc_server_engine *engine, uint64_t now_ms,
                            uint64_t peer, fedc_server_actions *out);

/* A message arrived from peer. The engine reads message only during the
 * call and copies what it keeps. */
int fedc_server_engine_received(fedc_server_engine *engine, uint64_t now_ms,
                                uint64_t peer, const Fedc__Envelope *message,
                                fedc_server_actions *out);

/* A whole tensor stream arrived from peer in memory, in place of its
 * chunks: the tensors of snapshot tensors as the chunks of a stream of
 * round and kind stream would carry them. For drivers that hold the
 * sender's tensors, such as the simulator, which would otherwise cut them
 * into chunks only for the engine to copy them back together. The engine
 * makes the checks it makes on chunks (an update expected from peer for
 * that round, the layout its FitResult announced, finite values) and reads
 * tensors only during the call, apart from the norm it leaves in the
 * snapshot. Tensor data counts in bytes_received once the stream passed
 * these checks, where chunks count one by one. */
int fedc_server_engine_received_tensors(fedc_server_engine *engine,
                                        uint64_t now_ms, uint64_t peer,
                                        uint64_t round,
                                        Fedc__StreamKind stream,
                                        fedc_snapshot *tensors,
                                        fedc_server_actions *out);

/* A timer from a START_TIMER action fired. Stale and cancelled timer ids
 * are ignored. */
int fedc_server_engine_timer(fedc_server_engine *engine, uint64_t now_ms,
                             uint64_t timer, fedc_server_actions *out);

/* The EVALUATE action of round finished; result is NULL when evaluation
 * failed, and the round then finishes without test metrics. */
int fedc_server_engine_evaluated(fedc_server_engine *engine, uint64_t now_ms,
                                 uint64_t round,
                                 const fedc_server_eval *result,
                                 fedc_server_actions *out);

/* Drains for a graceful stop: no new round starts and new connections get
 * a Goodbye at once, but the open round still closes, as soon as its
 * quorum has reported, at its deadline or after timeout_ms, whichever
 * comes first. It is then aggregated (or abandoned), evaluated when due and
 * checkpointed, and the engine ends with a CLOSE_ALL and DONE (not failed).
 * In the asynchronous modes no new task is sent; once the tasks out have
 * reported, or at the timeout, the partial buffer is applied. Without an
 * open round it ends at once. */
int fedc_server_engine_drain(fedc_server_engine *engine, uint64_t now_ms,
                             uint64_t timeout_ms, fedc_server_actions *out);

/* Stops: drops an open round, sends every peer a Goodbye and closes it
 * with one CLOSE_ALL, cancels the deadline and ends with DONE. Later
 * connections get a Goodbye and a CLOSE at once. */
int fedc_server_engine_shutdown(fedc_server_engine *engine, uint64_t now_ms,
                                const char *reason, fedc_server_actions *out);

enum fedc_server_phase {
  FEDC_SERVER_WAITING = 0,   /* between rounds: too few idle clients, or
                                not started */
  FEDC_SERVER_TRAINING,      /* a round is open */
  FEDC_SERVER_EVALUATING,    /* waiting for fedc_server_engine_evaluated() */
  FEDC_SERVER_DONE,          /* total_rounds finished, or shut down */
};

enum fedc_server_phase fedc_server_engine_phase(const fedc_server_engine *e);

/* Returns the open round's id, or the id of the last round closed (0
 * before the first). */
uint64_t fedc_server_engine_round(const fedc_server_engine *engine);

/* Returns the current global model. */
const fedc_tensor_list *fedc_server_engine_model(
  const fedc_server_engine *engine);

const fedc_server_stats *fedc_server_engine_stats(
  const fedc_server_engine *engine);

#endif
