/* The server's round logic as a state machine without I/O.
 *
 * The engine takes events: peer connected, message received, peer lost,
 * timer fired, evaluation finished. For each it appends actions to a
 * fedc_server_actions list that the caller drains: send a message or a
 * chunk stream, close a peer, start or cancel a timer, evaluate,
 * checkpoint, round finished. It never touches a socket, a clock, a file or a thread,
 * so the daemon (libuv), the simulator (virtual clock) and the tests
 * (scripted events) drive the same code. Every event carries the driver's
 * time in milliseconds from any fixed origin; it must not go backwards.
 *
 * Rounds are synchronous: once enough clients are idle the engine samples a
 * cohort uniformly with a seeded generator, sends each a FitTask and the
 * global model, folds each complete and valid update into a streaming
 * aggregate (fedc_agg), and closes the round when every sampled client has
 * reported or been lost, at the quorum when close_at_quorum is set, as soon
 * as the quorum can no longer be reached, or at the deadline. A round that
 * closes with fewer results than the quorum is abandoned and leaves the
 * model unchanged. docs/protocol.md has the state tables.
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
 * lags behind a round. */
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

typedef struct fedc_server_engine_config {
  /* Cohort. A round starts once max(min_clients, min_fit_clients) clients
   * are registered and idle. The cohort is clients_per_round, or
   * ceil(fraction_fit x idle clients) when that is 0, then raised to
   * min_fit_clients, cut to max_fit_clients (0: no cap) and to the idle
   * clients. */
  uint32_t min_clients;
  double fraction_fit;       /* in (0, 1] */
  uint32_t clients_per_round;
  uint32_t min_fit_clients;
  uint32_t max_fit_clients;

  /* Quorum: results needed to aggregate, max(quorum_count,
   * ceil(quorum_fraction x cohort)), at least 1 and at most the cohort. */
  double quorum_fraction;    /* in [0, 1] */
  uint32_t quorum_count;
  bool close_at_quorum;      /* close once the quorum reported, dropping
                                the stragglers' results (over-selection) */
  uint64_t round_deadline_ms;

  uint64_t total_rounds;     /* round ids 1..total_rounds; 0: no end */
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
  uint64_t rounds_abandoned;
  uint64_t results_accepted;
  uint64_t clients_lost;          /* sampled clients that left their round
                                     before reporting: lost, closed or
                                     failed */
  uint64_t client_errors;         /* Error messages received from clients */
  uint64_t bytes_sent;            /* tensor data in streams sent */
  uint64_t bytes_received;        /* tensor data in chunks accepted */
  uint64_t rejected[FEDC_REJECT_COUNT];  /* peers closed, by offense */
} fedc_server_stats;

/* Fills config with defaults: min_clients 2, fraction_fit 1, quorum
 * fraction 1 and count 1, deadline 10 minutes, 10 rounds, evaluation every
 * round, seed 0, one local epoch of batch 32 at learning rate 0.01, model
 * spec "", server id "fedc-server", FedAvg, 1 MiB chunks and 4 MiB frames. */
void fedc_server_engine_config_default(fedc_server_engine_config *config);

/* Creates an engine that takes ownership of model (left empty), the global
 * model after completed_rounds rounds: 0 for a fresh start, or the
 * checkpoint's round to resume, in which case the next round is
 * completed_rounds + 1. agg_state, when not NULL, is the strategy state a
 * CHECKPOINT action carried. Returns 0, FEDC_EINVAL for an invalid config
 * or model, or another FEDC_E* code from fedc_agg. */
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

/* Stops: drops an open round, sends every peer a Goodbye and closes it,
 * cancels the deadline and ends with DONE. Later connections are closed
 * at once. */
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
