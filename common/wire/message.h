/* Outgoing protocol messages: one heap object per Envelope, built from
 * plain C values.
 *
 * A fedc_message owns its envelope, the body, every string in it, and a
 * reference to the snapshot whose wire specs a FitTask, FitResult or
 * EvaluateTask points at, so a message stays valid after the engine that
 * built it has moved on: a driver may queue it, pack it later with
 * fedc__envelope__pack(), or, in the simulator, hand the envelope to the
 * receiving engine without packing it. TensorChunk envelopes come from
 * wire/chunker.h instead. */
#ifndef FEDC_WIRE_MESSAGE_H
#define FEDC_WIRE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"
#include "nn/model.h"
#include "wire/snapshot.h"

/* The protocol version this code speaks, carried in every envelope and in
 * Hello and Welcome. */
#define FEDC_PROTOCOL_VERSION 1

/* Metrics carried by FitResult and EvaluateResult. */
#define FEDC_MESSAGE_MAX_METRICS 8

/* Maximum accepted length of a client id, server id or model spec, in
 * bytes without the terminating NUL. */
#define FEDC_ID_MAX 127
#define FEDC_MODEL_SPEC_MAX 1023

typedef struct fedc_message fedc_message;

typedef struct fedc_message_metric {
  const char *name;
  double value;
} fedc_message_metric;

/* What a client announces in its Hello. Strings are copied. */
typedef struct fedc_hello_info {
  const char *client_id;
  uint64_t num_examples;     /* size of the local training set */
  const char *trainer;       /* "builtin" or "exec"; NULL announces none */
  bool secure_aggregation;
  const char *platform;      /* may be NULL */
  uint32_t cpu_cores;
  uint64_t memory_bytes;
  double relative_speed;     /* 1.0 is the reference device */
} fedc_hello_info;

/* Drops the caller's reference and frees the message with the last one;
 * clears *message and accepts NULL and a pointer to NULL. */
void fedc_message_free(fedc_message **message);

/* Adds a reference and returns message. A message is not changed after it
 * is built, so one message can be queued for many peers, for example the
 * same Goodbye for every client; each holder frees its own reference. */
fedc_message *fedc_message_ref(fedc_message *message);

/* Returns the envelope, valid until fedc_message_free(). */
const Fedc__Envelope *fedc_message_envelope(const fedc_message *message);

/* Builders. Each returns 0 and a new message, FEDC_EINVAL for a string
 * longer than its FEDC_*_MAX or more than FEDC_MESSAGE_MAX_METRICS metrics,
 * or FEDC_ENOMEM. The ones that take a snapshot add a reference to it and
 * announce its tensors; NULL strings are sent as empty strings. */
int fedc_message_hello(const fedc_hello_info *info, fedc_message **out);
int fedc_message_welcome(const char *server_id, uint64_t round,
                         uint32_t max_frame_bytes, uint32_t chunk_bytes,
                         fedc_message **out);
int fedc_message_fit_task(uint64_t round, const fedc_train_config *config,
                          const char *model_spec, fedc_snapshot *model,
                          fedc_message **out);
int fedc_message_fit_result(uint64_t round, uint64_t num_examples,
                            const fedc_message_metric *metrics,
                            size_t n_metrics, fedc_snapshot *update,
                            fedc_message **out);
int fedc_message_evaluate_task(uint64_t round, const char *model_spec,
                               fedc_snapshot *model, fedc_message **out);
int fedc_message_evaluate_result(uint64_t round, uint64_t num_examples,
                                 double loss, double accuracy,
                                 const fedc_message_metric *metrics,
                                 size_t n_metrics, fedc_message **out);
int fedc_message_error(Fedc__ErrorCode code, const char *text,
                       uint64_t round, fedc_message **out);
int fedc_message_goodbye(const char *reason, fedc_message **out);

/* Builds a Cancel that withdraws the task of round; reason may be NULL. */
int fedc_message_cancel(uint64_t round, const char *reason,
                        fedc_message **out);

/* Converts a received TrainConfig into the trainer's configuration. A NULL
 * config gives all zeros. */
void fedc_message_train_config(const Fedc__TrainConfig *proto,
                               fedc_train_config *out);

/* Returns the value of the metric called name, or fallback when the list
 * has none. */
double fedc_message_find_metric(Fedc__Metric *const *metrics, size_t n,
                                const char *name, double fallback);

#endif
