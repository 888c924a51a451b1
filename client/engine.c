#include "client/engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"
#include "wire/assembler.h"

/* Bytes a chunk envelope adds to its data, as in the server engine. */
#define CHUNK_OVERHEAD_BYTES 64

struct fedc_client_engine {
  fedc_client_config config;
  char client_id[FEDC_ID_MAX + 1];
  char trainer[FEDC_ID_MAX + 1];   /* copies of the Hello's optional */
  char platform[FEDC_ID_MAX + 1];  /* strings; config points at them */

  enum fedc_client_state state;
  uint32_t chunk_bytes;
  uint64_t server_round;

  /* A task rejected by check_task, whose model chunks are skipped; 0 when
   * none. */
  uint64_t refused_round;

  /* The task in progress; all empty when idle. */
  uint64_t task_round;
  fedc_assembler *incoming;
  fedc_snapshot *global;     /* held from the model's arrival to the result */
  fedc_train_config train;
  char *model_spec;
};

static const char *const state_names[] = {
  [FEDC_CLIENT_DISCONNECTED] = "disconnected",
  [FEDC_CLIENT_HELLO_SENT] = "hello_sent",
  [FEDC_CLIENT_IDLE] = "idle",
  [FEDC_CLIENT_RECEIVING_TASK] = "receiving_task",
  [FEDC_CLIENT_TRAINING] = "training",
  [FEDC_CLIENT_RECEIVING_EVAL] = "receiving_eval",
  [FEDC_CLIENT_EVALUATING] = "evaluating",
};

const char *fedc_client_state_name(enum fedc_client_state state)
{
  if ((size_t)state >= sizeof(state_names) / sizeof(state_names[0]))
    return "unknown";
  return state_names[state];
}

void fedc_client_config_default(fedc_client_config *config)
{
  memset(config, 0, sizeof(*config));
  config->max_model_bytes = FEDC_SPEC_MAX_BYTES;
  config->max_model_tensors = FEDC_SPEC_MAX_TENSORS;
  config->chunk_bytes = 1u << 20;
}

/* Copies the optional string s into buf and returns buf, or NULL for a
 * missing s. Longer strings are cut to FEDC_ID_MAX bytes. */
static const char *copy_optional(const char *s, char buf[FEDC_ID_MAX + 1])
{
  if (!s)
    return NULL;
  snprintf(buf, FEDC_ID_MAX + 1, "%s", s);
  return buf;
}

int fedc_client_engine_new(const fedc_client_config *config,
                           fedc_client_engine **out)
{
  const char *id = config->hello.client_id;
  fedc_client_engine *e;

  *out = NULL;
  if (!id || id[0] == '\0' || strlen(id) > FEDC_ID_MAX)
    return FEDC_EINVAL;
  if (config->max_model_bytes == 0 || config->max_model_tensors == 0 ||
      config->chunk_bytes == 0)
    return FEDC_EINVAL;
  e = calloc(1, sizeof(*e));
  if (!e)
    return FEDC_ENOMEM;

  e->config = *config;
  snprintf(e->client_id, sizeof(e->client_id), "%s", id);
  e->config.hello.client_id = e->client_id;
  e->config.hello.trainer = copy_optional(config->hello.trainer, e->trainer);
  e->config.hello.platform = copy_optional(config->hello.platform,
                                           e->platform);
  e->chunk_bytes = config->chunk_bytes;
  *out = e;
  return 0;
}

/* Drops the task in progress, if any. */
static void drop_task(fedc_client_engine *e)
{
  fedc_assembler_free(&e->incoming);
  fedc_snapshot_unref(&e->global);
  free(e->model_spec);
  e->model_spec = NULL;
}

void fedc_client_engine_free(fedc_client_engine **engine)
{
  if (!engine || !*engine)
    return;
  drop_task(*engine);
  free(*engine);
  *engine = NULL;
}

/* Emits CLOSE and goes back to DISCONNECTED, dropping the task. */
__attribute__((format(printf, 5, 6)))
static int disconnect(fedc_client_engine *e, fedc_client_actions *out,
                      int error, Fedc__ErrorCode server_code,
                      const char *fmt, ...)
{
  fedc_client_action *a = fedc_client_actions_push(out,
                                                   FEDC_CLIENT_ACTION_CLOSE);
  va_list ap;

  drop_task(e);
  e->state = FEDC_CLIENT_DISCONNECTED;
  if (!a)
    return FEDC_ENOMEM;
  a->close.error = error;
  a->close.server_code = server_code;
  a->close.retry = server_code != FEDC__ERROR_CODE__BAD_VERSION &&
                   error != FEDC_EVERSION;
  va_start(ap, fmt);
  vsnprintf(a->close.reason, sizeof(a->close.reason), fmt, ap);
  va_end(ap);
  return 0;
}

/* Replies with an Error to a server that broke the protocol, then closes. */
__attribute__((format(printf, 4, 5)))
static int protocol_error(fedc_client_engine *e, fedc_client_actions *out,
                          int error, const char *fmt, ...)
{
  char reason[FEDC_CLIENT_REASON_MAX];
  Fedc__ErrorCode code = error == FEDC_EVERSION
                         ? FEDC__ERROR_CODE__BAD_VERSION
                         : FEDC__ERROR_CODE__BAD_MESSAGE;
  fedc_message *m = NULL;
  va_list ap;
  int rc;

  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  rc = fedc_message_error(code, reason, e->task_round, &m);
  if (rc == 0)
    rc = fedc_client_actions_send(out, m);
  if (rc < 0)
    return rc;
  return disconnect(e, out, error, 0, "%s", reason);
}

int fedc_client_engine_connected(fedc_client_engine *engine, uint64_t now_ms,
                                 fedc_client_actions *out)
{
  fedc_message *hello = NULL;
  int rc;

  if (engine->state != FEDC_CLIENT_DISCONNECTED)
    return FEDC_EINVAL;
  rc = fedc_message_hello(&engine->config.hello, &hello);
  if (rc == 0)
    rc = fedc_client_actions_send(out, hello);
  if (rc < 0)
    return rc;
  engine->chunk_bytes = engine->config.chunk_bytes;
  engine->refused_round = 0;
  engine->state = FEDC_CLIENT_HELLO_SENT;
  return 0;
}

static int on_welcome(fedc_client_engine *e, const Fedc__Welcome *w,
                      fedc_client_actions *out);

int fedc_client_engine_resume(fedc_client_engine *engine, uint64_t now_ms,
                              const Fedc__Welcome *welcome,
                              fedc_client_actions *out)
{
  (void)now_ms;
  if (engine->state != FEDC_CLIENT_DISCONNECTED || !welcome)
    return FEDC_EINVAL;
  engine->chunk_bytes = engine->config.chunk_bytes;
  engine->refused_round = 0;
  engine->state = FEDC_CLIENT_HELLO_SENT;
  return on_welcome(engine, welcome, out);
}

int fedc_client_engine_lost(fedc_client_engine *engine, uint64_t now_ms,
                            fedc_client_actions *out)
{
  if (engine->state == FEDC_CLIENT_DISCONNECTED)
    return 0;
  if (engine->state != FEDC_CLIENT_IDLE &&
      engine->state != FEDC_CLIENT_HELLO_SENT)
    fedc_info("client", "connection lost, task dropped round=%llu state=%s",
              (unsigned long long)engine->task_round,
              fedc_client_state_name(engine->state));
  drop_task(engine);
  engine->state = FEDC_CLIENT_DISCONNECTED;
  return 0;
}

static int on_welcome(fedc_client_engine *e, const Fedc__Welcome *w,
                      fedc_client_actions *out)
{
  if (e->state != FEDC_CLIENT_HELLO_SENT)
    return protocol_error(e, out, FEDC_ESTATE, "unexpected Welcome");
  if (w->protocol_version != FEDC_PROTOCOL_VERSION)
    return protocol_error(e, out, FEDC_EVERSION, "Welcome has protocol "
                          "version %u, expected %u", w->protocol_version,
                          FEDC_PROTOCOL_VERSION);

  /* The server's chunk size, but never more than fits in its frames. */
  if (w->chunk_bytes > 0)
    e->chunk_bytes = w->chunk_bytes;
  if (w->max_frame_bytes > CHUNK_OVERHEAD_BYTES &&
      e->chunk_bytes > w->max_frame_bytes - CHUNK_OVERHEAD_BYTES)
    e->chunk_bytes = w->max_frame_bytes - CHUNK_OVERHEAD_BYTES;
  e->server_round = w->round;
  e->state = FEDC_CLIENT_IDLE;
  return 0;
}

/* Whether a task for round may start now. A task that arrives while
 * another is in progress replaces it when it is for a later round: the
 * server has moved on, and the old result would be rejected as stale. */
static bool task_allowed(fedc_client_engine *e, uint64_t round)
{
  if (e->state == FEDC_CLIENT_IDLE)
    return true;
  if (e->state == FEDC_CLIENT_HELLO_SENT || round <= e->task_round)
    return false;
  fedc_info("client", "task replaced by a later one round=%llu new_round=%llu",
            (unsigned long long)e->task_round, (unsigned long long)round);
  drop_task(e);
  return true;
}

/* Runs check_task on a task's model spec. When the check fails, sends an
 * Error TRAINING_FAILED for the task, remembers the round so that its
 * model chunks are skipped, and returns 1. Returns 0 when the task may
 * start. */
static int refuse_unsuitable(fedc_client_engine *e, uint64_t round,
                             const char *model_spec, fedc_client_actions *out)
{
  char reason[FEDC_CLIENT_REASON_MAX];
  fedc_message *m = NULL;
  int rc;

  if (!e->config.check_task)
    return 0;
  reason[0] = '\0';
  rc = e->config.check_task(e->config.check_context, model_spec, reason,
                            sizeof(reason));
  if (rc == 0)
    return 0;
  if (reason[0] == '\0')
    snprintf(reason, sizeof(reason), "%s", fedc_strerror(rc));
  fedc_warn("client", "task rejected round=%llu reason=\"%s\"",
            (unsigned long long)round, reason);
  rc = fedc_message_error(FEDC__ERROR_CODE__TRAINING_FAILED, reason, round,
                          &m);
  if (rc == 0)
    rc = fedc_client_actions_send(out, m);
  if (rc < 0)
    return rc;
  drop_task(e);
  e->state = FEDC_CLIENT_IDLE;
  e->task_round = round;
  e->refused_round = round;
  return 1;
}

static int start_task(fedc_client_engine *e, uint64_t round,
                      Fedc__StreamKind stream, Fedc__TensorSpec **specs,
                      size_t n, const char *model_spec,
                      fedc_client_actions *out)
{
  fedc_spec_limits limits = { e->config.max_model_tensors,
                              e->config.max_model_bytes };
  char reason[FEDC_ASSEMBLER_REASON_MAX];
  int rc;

  if (!task_allowed(e, round))
    return protocol_error(e, out, FEDC_ESTATE, "task for round %llu in "
                          "state %s", (unsigned long long)round,
                          fedc_client_state_name(e->state));
  if (!model_spec || strlen(model_spec) > FEDC_MODEL_SPEC_MAX)
    return protocol_error(e, out, FEDC_EFORMAT, "model spec longer than %d "
                          "bytes", FEDC_MODEL_SPEC_MAX);
  rc = refuse_unsuitable(e, round, model_spec, out);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  rc = fedc_assembler_new(round, stream, specs, n, &limits, NULL,
                          &e->incoming, reason, sizeof(reason));
  if (rc == FEDC_ENOMEM)
    return rc;
  if (rc < 0)
    return protocol_error(e, out, rc, "model rejected: %s", reason);
  e->model_spec = strdup(model_spec);
  if (!e->model_spec)
    return FEDC_ENOMEM;

  e->task_round = round;
  e->state = stream == FEDC__STREAM_KIND__GLOBAL_MODEL
             ? FEDC_CLIENT_RECEIVING_TASK : FEDC_CLIENT_RECEIVING_EVAL;
  return 0;
}

static int on_fit_task(fedc_client_engine *e, const Fedc__FitTask *t,
                       fedc_client_actions *out)
{
  int rc = start_task(e, t->round, FEDC__STREAM_KIND__GLOBAL_MODEL, t->model,
                      t->n_model, t->config ? t->config->model_spec : "",
                      out);

  if (rc == 0 && e->state == FEDC_CLIENT_RECEIVING_TASK)
    fedc_message_train_config(t->config, &e->train);
  return rc;
}

static int on_evaluate_task(fedc_client_engine *e,
                            const Fedc__EvaluateTask *t,
                            fedc_client_actions *out)
{
  return start_task(e, t->round, FEDC__STREAM_KIND__EVAL_MODEL, t->model,
                    t->n_model, t->model_spec, out);
}

/* Hands the complete model in e->global to the driver: TRAIN keeps a
 * reference here to compute the update later, EVALUATE does not need one. */
static int hand_over_model(fedc_client_engine *e, fedc_client_actions *out)
{
  bool train = e->state == FEDC_CLIENT_RECEIVING_TASK;
  fedc_client_action *a;

  a = fedc_client_actions_push(out, train ? FEDC_CLIENT_ACTION_TRAIN
                                          : FEDC_CLIENT_ACTION_EVALUATE);
  if (!a)
    return FEDC_ENOMEM;
  if (train) {
    a->train.round = e->task_round;
    a->train.model = fedc_snapshot_ref(e->global);
    a->train.config = e->train;
    snprintf(a->train.model_spec, sizeof(a->train.model_spec), "%s",
             e->model_spec);
    e->state = FEDC_CLIENT_TRAINING;
    return 0;
  }
  a->evaluate.round = e->task_round;
  a->evaluate.model = e->global;
  e->global = NULL;
  snprintf(a->evaluate.model_spec, sizeof(a->evaluate.model_spec), "%s",
           e->model_spec);
  e->state = FEDC_CLIENT_EVALUATING;
  return 0;
}

/* Makes the reassembled model the task's global model. */
static int model_arrived(fedc_client_engine *e, fedc_client_actions *out)
{
  fedc_tensor_list model;
  int rc;

  fedc_tensor_list_init(&model);
  rc = fedc_assembler_take(e->incoming, &model);
  fedc_assembler_free(&e->incoming);
  if (rc == 0)
    rc = fedc_snapshot_new(&model, &e->global);
  fedc_tensor_list_close(&model);
  if (rc < 0)
    return rc;
  return hand_over_model(e, out);
}

static int on_chunk(fedc_client_engine *e, const Fedc__TensorChunk *chunk,
                    fedc_client_actions *out)
{
  int rc;

  if (e->refused_round != 0 && chunk->round == e->refused_round) {
    if (chunk->last)
      e->refused_round = 0;
    return 0;
  }

  if (e->state != FEDC_CLIENT_RECEIVING_TASK &&
      e->state != FEDC_CLIENT_RECEIVING_EVAL)
    return protocol_error(e, out, FEDC_ESTATE, "chunk in state %s",
                          fedc_client_state_name(e->state));
  rc = fedc_assembler_add(e->incoming, chunk);
  if (rc == FEDC_ENOMEM)
    return rc;
  if (rc < 0)
    return protocol_error(e, out, rc, "model stream rejected: %s",
                          fedc_assembler_reason(e->incoming));
  return rc == 1 ? model_arrived(e, out) : 0;
}

/* Copies text from the server for a reason: printable ASCII only. */
static void copy_printable(char *dst, size_t size, const char *src)
{
  size_t n = 0;

  for (; src && *src && n + 1 < size; src++)
    dst[n++] = (*src >= 0x20 && *src <= 0x7e) ? *src : '?';
  dst[n] = '\0';
}

static int on_error(fedc_client_engine *e, const Fedc__Error *error,
                    fedc_client_actions *out)
{
  char text[FEDC_CLIENT_REASON_MAX / 2];

  copy_printable(text, sizeof(text), error->message);
  return disconnect(e, out, FEDC_ECLOSED, error->code, "server error %d: %s",
                    (int)error->code, text);
}

static int on_goodbye(fedc_client_engine *e, const Fedc__Goodbye *bye,
                      fedc_client_actions *out)
{
  char text[FEDC_CLIENT_REASON_MAX / 2];
  int rc;

  copy_printable(text, sizeof(text), bye->reason);
  rc = disconnect(e, out, FEDC_ECLOSED, 0, "server said goodbye: %s", text);
  if (rc == 0)
    out->items[out->count - 1].close.goodbye = true;
  return rc;
}

/* The server withdrew a task: the round closed without this client's
 * result, or the task expired. The task is dropped if it is still being
 * received or trained, and a later training result for it is ignored.
 * A Cancel for another round, or one that crossed our result on the wire,
 * changes nothing. */
static int on_cancel(fedc_client_engine *e, const Fedc__Cancel *cancel,
                     fedc_client_actions *out)
{
  char text[FEDC_CLIENT_REASON_MAX / 2];

  if (e->state == FEDC_CLIENT_HELLO_SENT)
    return protocol_error(e, out, FEDC_ESTATE, "Cancel before Welcome");
  if (cancel->round != e->task_round ||
      (e->state != FEDC_CLIENT_RECEIVING_TASK &&
       e->state != FEDC_CLIENT_TRAINING))
    return 0;
  copy_printable(text, sizeof(text), cancel->reason);
  fedc_info("client", "task cancelled by the server round=%llu state=%s "
            "reason=\"%s\"", (unsigned long long)cancel->round,
            fedc_client_state_name(e->state), text);
  drop_task(e);
  e->state = FEDC_CLIENT_IDLE;
  return 0;
}

static int dispatch(fedc_client_engine *e, const Fedc__Envelope *m,
                    fedc_client_actions *out)
{
  switch (m->body_case) {
  case FEDC__ENVELOPE__BODY_WELCOME:
    return on_welcome(e, m->welcome, out);
  case FEDC__ENVELOPE__BODY_FIT_TASK:
    return on_fit_task(e, m->fit_task, out);
  case FEDC__ENVELOPE__BODY_EVALUATE_TASK:
    return on_evaluate_task(e, m->evaluate_task, out);
  case FEDC__ENVELOPE__BODY_CHUNK:
    return on_chunk(e, m->chunk, out);
  case FEDC__ENVELOPE__BODY_ERROR:
    return on_error(e, m->error, out);
  case FEDC__ENVELOPE__BODY_GOODBYE:
    return on_goodbye(e, m->goodbye, out);
  case FEDC__ENVELOPE__BODY_CANCEL:
    return on_cancel(e, m->cancel, out);
  default:
    return protocol_error(e, out, FEDC_EFORMAT, "unexpected message (body "
                          "case %d) from the server", (int)m->body_case);
  }
}

/* Whether the body pointer of the message's case is set; only an envelope
 * built in memory can lack it. */
static bool has_body(const Fedc__Envelope *m)
{
  return m->body_case == FEDC__ENVELOPE__BODY__NOT_SET || m->hello != NULL;
}

int fedc_client_engine_received(fedc_client_engine *engine, uint64_t now_ms,
                                const Fedc__Envelope *message,
                                fedc_client_actions *out)
{
  if (!message)
    return FEDC_EINVAL;

  /* A message the driver read before it carried out our CLOSE. */
  if (engine->state == FEDC_CLIENT_DISCONNECTED)
    return 0;
  if (message->protocol_version != FEDC_PROTOCOL_VERSION)
    return protocol_error(engine, out, FEDC_EVERSION, "protocol version %u, "
                          "expected %u", message->protocol_version,
                          FEDC_PROTOCOL_VERSION);
  if (!has_body(message))
    return protocol_error(engine, out, FEDC_EFORMAT, "message without body");
  return dispatch(engine, message, out);
}

int fedc_client_engine_received_tensors(fedc_client_engine *engine,
                                        uint64_t now_ms, uint64_t round,
                                        Fedc__StreamKind stream,
                                        fedc_snapshot *tensors,
                                        fedc_client_actions *out)
{
  fedc_client_engine *e = engine;
  int rc;

  if (!tensors)
    return FEDC_EINVAL;
  if (e->state == FEDC_CLIENT_DISCONNECTED)
    return 0;
  if (e->state != FEDC_CLIENT_RECEIVING_TASK &&
      e->state != FEDC_CLIENT_RECEIVING_EVAL)
    return protocol_error(e, out, FEDC_ESTATE, "stream in state %s",
                          fedc_client_state_name(e->state));
  rc = fedc_assembler_check_snapshot(e->incoming, round, stream, tensors);
  if (rc < 0)
    return protocol_error(e, out, rc, "model stream rejected: %s",
                          fedc_assembler_reason(e->incoming));
  fedc_assembler_free(&e->incoming);
  e->global = fedc_snapshot_ref(tensors);
  return hand_over_model(e, out);
}

/* Sends Error TRAINING_FAILED for the task and goes idle. */
static int task_failed(fedc_client_engine *e, const char *what, int cause,
                       fedc_client_actions *out)
{
  char text[FEDC_CLIENT_REASON_MAX];
  fedc_message *m = NULL;
  int rc;

  snprintf(text, sizeof(text), "%s: %s", what, fedc_strerror(cause));
  fedc_warn("client", "task failed round=%llu reason=\"%s\"",
            (unsigned long long)e->task_round, text);
  rc = fedc_message_error(FEDC__ERROR_CODE__TRAINING_FAILED, text,
                          e->task_round, &m);
  drop_task(e);
  e->state = FEDC_CLIENT_IDLE;
  if (rc == 0)
    rc = fedc_client_actions_send(out, m);
  return rc;
}

/* Sends FitResult and the update stream for the finished task. */
static int send_update(fedc_client_engine *e, fedc_snapshot *update,
                       const fedc_client_train_result *r,
                       fedc_client_actions *out)
{
  const fedc_message_metric metrics[] = {
    { "train_loss", r->loss },
    { "train_accuracy", r->accuracy },
    { "steps", (double)r->steps },
  };
  fedc_message *m = NULL;
  fedc_client_action *a;
  int rc;

  rc = fedc_message_fit_result(e->task_round, r->num_examples, metrics,
                               sizeof(metrics) / sizeof(metrics[0]), update,
                               &m);
  if (rc == 0)
    rc = fedc_client_actions_send(out, m);
  if (rc < 0)
    return rc;
  a = fedc_client_actions_push(out, FEDC_CLIENT_ACTION_SEND_STREAM);
  if (!a)
    return FEDC_ENOMEM;
  return fedc_chunker_new(update, e->task_round, FEDC__STREAM_KIND__UPDATE,
                          e->chunk_bytes, &a->stream.stream);
}

/* Fails the task, returning FEDC_ESHAPE after the Error, unless what
 * (trained weights or an update) has the global model's layout. */
static int check_result_layout(fedc_client_engine *e,
                               const fedc_tensor_list *what,
                               fedc_client_actions *out)
{
  int rc;

  if (fedc_tensor_list_check_layout(fedc_snapshot_tensors(e->global),
                                    what) == 0)
    return 0;
  rc = task_failed(e, "trained weights do not match the model", FEDC_ESHAPE,
                   out);
  return rc < 0 ? rc : FEDC_ESHAPE;
}

/* Sends update (finite, the global model's layout) and goes idle. */
static int finish_task(fedc_client_engine *e, fedc_snapshot *update,
                       const fedc_client_train_result *result,
                       fedc_client_actions *out)
{
  int rc = send_update(e, update, result, out);

  drop_task(e);
  e->state = FEDC_CLIENT_IDLE;
  return rc;
}

static int build_update(fedc_client_engine *e, fedc_tensor_list *weights,
                        const fedc_client_train_result *result,
                        fedc_client_actions *out)
{
  fedc_snapshot *update = NULL;
  int rc = check_result_layout(e, weights, out);

  if (rc != 0)
    return rc;
  if (result->num_examples == 0)
    return task_failed(e, "training reported 0 examples", FEDC_EINVAL, out);
  rc = fedc_snapshot_new_difference(weights, fedc_snapshot_tensors(e->global),
                                    &update);
  if (rc < 0)
    return task_failed(e, "update not sent", rc, out);
  rc = finish_task(e, update, result, out);
  fedc_snapshot_unref(&update);
  return rc;
}

int fedc_client_engine_trained(fedc_client_engine *engine, uint64_t now_ms,
                               uint64_t round, int status,
                               fedc_tensor_list *weights,
                               const fedc_client_train_result *result,
                               fedc_client_actions *out)
{
  int rc;

  if (engine->state != FEDC_CLIENT_TRAINING || round != engine->task_round) {
    if (weights)
      fedc_tensor_list_close(weights);
    return 0;
  }
  if (status < 0 || !weights || !result) {
    rc = task_failed(engine, "training failed", status < 0 ? status
                     : FEDC_EINVAL, out);
  } else {
    rc = build_update(engine, weights, result, out);
  }
  if (weights)
    fedc_tensor_list_close(weights);
  return rc;
}

int fedc_client_engine_trained_update(fedc_client_engine *engine,
                                      uint64_t now_ms, uint64_t round,
                                      fedc_snapshot *update,
                                      const fedc_client_train_result *result,
                                      fedc_client_actions *out)
{
  fedc_client_engine *e = engine;
  int rc;

  (void)now_ms;
  if (!update || !result)
    return FEDC_EINVAL;
  if (e->state != FEDC_CLIENT_TRAINING || round != e->task_round)
    return 0;
  rc = check_result_layout(e, fedc_snapshot_tensors(update), out);
  if (rc != 0)
    return rc;
  if (result->num_examples == 0)
    return task_failed(e, "training reported 0 examples", FEDC_EINVAL, out);
  rc = fedc_snapshot_check_finite(update);
  if (rc < 0)
    return task_failed(e, "update not sent", rc, out);
  return finish_task(e, update, result, out);
}

int fedc_client_engine_evaluated(fedc_client_engine *engine, uint64_t now_ms,
                                 uint64_t round,
                                 const fedc_client_eval_result *result,
                                 fedc_client_actions *out)
{
  fedc_message *m = NULL;
  int rc;

  if (engine->state != FEDC_CLIENT_EVALUATING ||
      round != engine->task_round)
    return 0;
  if (!result)
    return task_failed(engine, "evaluation failed", FEDC_EIO, out);

  rc = fedc_message_evaluate_result(round, result->num_examples, result->loss,
                                    result->accuracy, NULL, 0, &m);
  drop_task(engine);
  engine->state = FEDC_CLIENT_IDLE;
  if (rc == 0)
    rc = fedc_client_actions_send(out, m);
  return rc;
}

enum fedc_client_state fedc_client_engine_state(
  const fedc_client_engine *engine)
{
  return engine->state;
}

uint64_t fedc_client_engine_task_round(const fedc_client_engine *engine)
{
  return engine->task_round;
}

uint64_t fedc_client_engine_server_round(const fedc_client_engine *engine)
{
  return engine->server_round;
}
