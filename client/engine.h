/* The client's session logic as a state machine without I/O.
 *
 * Events go in: connected, message received, lost, training or evaluation
 * finished. Actions come out in a fedc_client_actions list that the caller
 * drains: send a message or a chunk stream, close, train, evaluate.
 * The engine never touches a socket, a clock, a file or a thread, and an
 * idle engine holds no tensors, so the simulator can keep 10^5 of them.
 *
 *   DISCONNECTED --connected--> HELLO_SENT --Welcome--> IDLE
 *   IDLE --FitTask--> RECEIVING_TASK --last chunk--> TRAINING (TRAIN action)
 *   IDLE --FitTask failing check_task--> IDLE (Error sent, chunks skipped)
 *   TRAINING --trained--> IDLE (FitResult and the update stream sent)
 *   IDLE --EvaluateTask--> RECEIVING_EVAL --last chunk--> EVALUATING
 *   EVALUATING --evaluated--> IDLE (EvaluateResult sent)
 *   any state --lost, Error, Goodbye or a protocol error--> DISCONNECTED
 *
 * Sending the result is the driver's stream: the engine is idle again as
 * soon as it has emitted the FitResult and its stream. On a disconnect the
 * task in progress is dropped and a later training result for it is
 * ignored; the driver reconnects with backoff and the engine starts over
 * with a new Hello. docs/protocol.md has the full table. */
#ifndef FEDC_CLIENT_ENGINE_H
#define FEDC_CLIENT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/actions.h"
#include "fedc.pb-c.h"
#include "tensor/tensor.h"
#include "wire/message.h"
#include "wire/snapshot.h"

typedef struct fedc_client_engine fedc_client_engine;

/* Checks that the local data suits a task's model spec. Returns 0, or a
 * negative FEDC_E* code with a sentence in reason such as "data has 3
 * features, model expects 784". */
typedef int (*fedc_client_task_check)(void *context, const char *model_spec,
                                      char *reason, size_t size);

typedef struct fedc_client_config {
  fedc_hello_info hello;     /* client id, dataset size, device; copied */
  uint64_t max_model_bytes;  /* largest model accepted from the server */
  size_t max_model_tensors;
  uint32_t chunk_bytes;      /* update chunk size until a Welcome sets it */

  /* Runs on each FitTask and EvaluateTask before its model is received.
   * A task that fails it is answered with Error TRAINING_FAILED carrying
   * the reason, its model chunks are skipped and the engine stays idle.
   * NULL: no check. */
  fedc_client_task_check check_task;
  void *check_context;
} fedc_client_config;

/* The driver's report of a finished local training. */
typedef struct fedc_client_train_result {
  uint64_t num_examples;     /* FedAvg weight: the local training set size */
  double loss;               /* training loss and accuracy over the last */
  double accuracy;           /* epoch, sent as metrics */
  uint64_t steps;            /* optimizer steps taken */
} fedc_client_train_result;

/* The driver's report of a finished local evaluation. */
typedef struct fedc_client_eval_result {
  uint64_t num_examples;
  double loss;
  double accuracy;
} fedc_client_eval_result;

enum fedc_client_state {
  FEDC_CLIENT_DISCONNECTED = 0,
  FEDC_CLIENT_HELLO_SENT,
  FEDC_CLIENT_IDLE,
  FEDC_CLIENT_RECEIVING_TASK,
  FEDC_CLIENT_TRAINING,
  FEDC_CLIENT_RECEIVING_EVAL,
  FEDC_CLIENT_EVALUATING,
};

/* Fills config with hello zeroed, a 4 GiB and FEDC_SPEC_MAX_TENSORS model
 * bound and 1 MiB chunks; the caller sets at least hello.client_id. */
void fedc_client_config_default(fedc_client_config *config);

/* Creates an engine in DISCONNECTED. Returns 0, FEDC_EINVAL for a missing
 * or invalid client id or a zero bound, or FEDC_ENOMEM. */
int fedc_client_engine_new(const fedc_client_config *config,
                           fedc_client_engine **out);
void fedc_client_engine_free(fedc_client_engine **engine);

/* Events. Each appends its actions to out and returns 0, FEDC_EINVAL when
 * called in a state where the event cannot happen (connected while
 * connected, NULL arguments), or FEDC_ENOMEM. Problems of the server's
 * making never fail an event: they close the connection with a reason. */

/* The connection (TLS handshake included) is up: sends Hello. */
int fedc_client_engine_connected(fedc_client_engine *engine, uint64_t now_ms,
                                 fedc_client_actions *out);

/* Puts a new engine, still DISCONNECTED, straight into IDLE, as
 * fedc_client_engine_connected() and then welcome would, but builds no
 * Hello. For a driver that frees idle engines and rebuilds them for a
 * server that already has their Hello, as the simulator does. A Welcome
 * the engine cannot accept gives the same Error and CLOSE as received()
 * would. Returns FEDC_EINVAL for an engine that is not new. */
int fedc_client_engine_resume(fedc_client_engine *engine, uint64_t now_ms,
                              const Fedc__Welcome *welcome,
                              fedc_client_actions *out);

/* The connection closed or failed; drops any task in progress. Ignored
 * when already disconnected. */
int fedc_client_engine_lost(fedc_client_engine *engine, uint64_t now_ms,
                            fedc_client_actions *out);

/* A message arrived. The engine reads message only during the call. */
int fedc_client_engine_received(fedc_client_engine *engine, uint64_t now_ms,
                                const Fedc__Envelope *message,
                                fedc_client_actions *out);

/* A whole model stream arrived in memory in place of its chunks: tensors
 * as the chunks of a stream of round and kind stream would carry them.
 * For drivers that hold the sender's snapshot, such as the simulator. The
 * engine makes the checks it makes on chunks: a stream announced by the
 * task in progress, its round, kind, names, dtypes and shapes, and finite
 * values. It keeps a reference to tensors in place of a copy, which is
 * safe because a snapshot's creator writes to it only while it holds the
 * sole reference. */
int fedc_client_engine_received_tensors(fedc_client_engine *engine,
                                        uint64_t now_ms, uint64_t round,
                                        Fedc__StreamKind stream,
                                        fedc_snapshot *tensors,
                                        fedc_client_actions *out);

/* The TRAIN action of round finished. On success status is 0 and weights
 * is the model after local training; the engine takes ownership of it and
 * leaves it empty. When training failed status is a negative FEDC_E* code
 * and weights may be NULL. The engine sends FitResult and the update,
 * weights - global, or an Error TRAINING_FAILED. A result for a task no
 * longer current is dropped.
 * Returns FEDC_ESHAPE (after sending the Error) when weights do not match
 * the global model's layout. */
int fedc_client_engine_trained(fedc_client_engine *engine, uint64_t now_ms,
                               uint64_t round, int status,
                               fedc_tensor_list *weights,
                               const fedc_client_train_result *result,
                               fedc_client_actions *out);

/* Reports a finished TRAIN action as fedc_client_engine_trained() does,
 * for a driver whose training thread has already computed the update,
 * weights - global of the TRAIN action's model, with
 * fedc_snapshot_new_difference(). The event loop then does not read the
 * model again. The engine checks the layout, and the values through the
 * norm the snapshot caches, then sends the update. The caller keeps its
 * reference to update. A failed training goes through
 * fedc_client_engine_trained(). */
int fedc_client_engine_trained_update(fedc_client_engine *engine,
                                      uint64_t now_ms, uint64_t round,
                                      fedc_snapshot *update,
                                      const fedc_client_train_result *result,
                                      fedc_client_actions *out);

/* The EVALUATE action of round finished; result is NULL when evaluation
 * failed. */
int fedc_client_engine_evaluated(fedc_client_engine *engine, uint64_t now_ms,
                                 uint64_t round,
                                 const fedc_client_eval_result *result,
                                 fedc_client_actions *out);

enum fedc_client_state fedc_client_engine_state(
  const fedc_client_engine *engine);

/* Returns the state's name, e.g. "idle", for logs. */
const char *fedc_client_state_name(enum fedc_client_state state);

/* Returns the round of the task in progress or last received, 0 before
 * any, and the round the server announced in its Welcome. */
uint64_t fedc_client_engine_task_round(const fedc_client_engine *engine);
uint64_t fedc_client_engine_server_round(const fedc_client_engine *engine);

#endif
