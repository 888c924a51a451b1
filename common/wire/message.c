#include "wire/message.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* Every string a message may own: ids, specs, reasons and metric names. */
#define MESSAGE_MAX_STRINGS (4 + FEDC_MESSAGE_MAX_METRICS)

/* Longest free text (error messages, goodbye reasons) sent, in bytes. */
#define MESSAGE_TEXT_MAX 1023

/* Bytes for short strings inside the message itself: a Hello's ids and a
 * FitResult's metric names fit, so most messages allocate no string, and
 * the message stays small enough for malloc's per-thread cache. */
#define MESSAGE_INLINE_TEXT 128

struct fedc_message {
  atomic_size_t refs;        /* the last fedc_message_free() frees */
  Fedc__Envelope envelope;
  union {
    Fedc__Hello hello;
    Fedc__Welcome welcome;
    Fedc__FitTask fit_task;
    Fedc__FitResult fit_result;
    Fedc__EvaluateTask evaluate_task;
    Fedc__EvaluateResult evaluate_result;
    Fedc__Error error;
    Fedc__Goodbye goodbye;
    Fedc__Cancel cancel;
  } body;
  Fedc__TrainConfig train_config;
  Fedc__Capabilities capabilities;
  Fedc__DeviceProfile device;
  char *trainers[1];
  Fedc__Metric metric_items[FEDC_MESSAGE_MAX_METRICS];
  Fedc__Metric *metrics[FEDC_MESSAGE_MAX_METRICS];

  char *strings[MESSAGE_MAX_STRINGS];  /* allocated; freed with it */
  size_t n_strings;
  char text[MESSAGE_INLINE_TEXT];      /* the other strings, end to end */
  size_t text_used;
  fedc_snapshot *hold;
};

static fedc_message *message_new(Fedc__Envelope__BodyCase body_case)
{
  fedc_message *m = calloc(1, sizeof(*m));

  if (!m)
    return NULL;
  atomic_init(&m->refs, 1);
  fedc__envelope__init(&m->envelope);
  m->envelope.protocol_version = FEDC_PROTOCOL_VERSION;
  m->envelope.body_case = body_case;
  return m;
}

void fedc_message_free(fedc_message **message)
{
  fedc_message *m;

  if (!message || !*message)
    return;
  m = *message;
  *message = NULL;
  if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < m->n_strings; i++)
    free(m->strings[i]);
  fedc_snapshot_unref(&m->hold);
  free(m);
}

fedc_message *fedc_message_ref(fedc_message *message)
{
  atomic_fetch_add_explicit(&message->refs, 1, memory_order_relaxed);
  return message;
}

const Fedc__Envelope *fedc_message_envelope(const fedc_message *message)
{
  return &message->envelope;
}

/* Copies src (NULL as "") into a string the message owns. */
static int copy_string(fedc_message *m, const char *src, size_t max,
                       char **dst)
{
  size_t len = src ? strnlen(src, max + 1) : 0;

  if (len > max)
    return FEDC_EINVAL;
  if (len < sizeof(m->text) - m->text_used) {
    *dst = m->text + m->text_used;
    m->text_used += len + 1;
  } else {
    if (m->n_strings == MESSAGE_MAX_STRINGS)
      return FEDC_EINVAL;
    *dst = malloc(len + 1);
    if (!*dst)
      return FEDC_ENOMEM;
    m->strings[m->n_strings++] = *dst;
  }
  memcpy(*dst, src ? src : "", len);
  (*dst)[len] = '\0';
  return 0;
}

static int copy_metrics(fedc_message *m, const fedc_message_metric *metrics,
                        size_t n)
{
  if (n > FEDC_MESSAGE_MAX_METRICS)
    return FEDC_EINVAL;
  for (size_t i = 0; i < n; i++) {
    Fedc__Metric *item = &m->metric_items[i];
    int rc;

    fedc__metric__init(item);
    rc = copy_string(m, metrics[i].name, FEDC_ID_MAX, &item->name);
    if (rc < 0)
      return rc;
    item->value = metrics[i].value;
    m->metrics[i] = item;
  }
  return 0;
}

/* Hands the finished message out, or frees it when a step failed. */
static int finish(fedc_message *m, int rc, fedc_message **out)
{
  if (rc < 0) {
    fedc_message_free(&m);
    return rc;
  }
  *out = m;
  return 0;
}

static int fill_hello(fedc_message *m, const fedc_hello_info *info)
{
  Fedc__Hello *h = &m->body.hello;
  int rc;

  fedc__hello__init(h);
  fedc__capabilities__init(&m->capabilities);
  fedc__device_profile__init(&m->device);
  m->envelope.hello = h;
  h->protocol_version = FEDC_PROTOCOL_VERSION;
  h->num_examples = info->num_examples;
  h->capabilities = &m->capabilities;
  h->device = &m->device;

  rc = copy_string(m, info->client_id, FEDC_ID_MAX, &h->client_id);
  if (rc == 0)
    rc = copy_string(m, info->platform, FEDC_ID_MAX, &m->device.platform);
  if (rc == 0 && info->trainer) {
    rc = copy_string(m, info->trainer, FEDC_ID_MAX, &m->trainers[0]);
    m->capabilities.n_trainers = 1;
    m->capabilities.trainers = m->trainers;
  }
  m->capabilities.secure_aggregation = info->secure_aggregation;
  m->device.cpu_cores = info->cpu_cores;
  m->device.memory_bytes = info->memory_bytes;
  m->device.relative_speed = info->relative_speed;
  return rc;
}

int fedc_message_hello(const fedc_hello_info *info, fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_HELLO);

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  return finish(m, fill_hello(m, info), out);
}

int fedc_message_welcome(const char *server_id, uint64_t round,
                         uint32_t max_frame_bytes, uint32_t chunk_bytes,
                         fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_WELCOME);
  Fedc__Welcome *w;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  w = &m->body.welcome;
  fedc__welcome__init(w);
  m->envelope.welcome = w;
  w->protocol_version = FEDC_PROTOCOL_VERSION;
  w->round = round;
  w->max_frame_bytes = max_frame_bytes;
  w->chunk_bytes = chunk_bytes;
  return finish(m, copy_string(m, server_id, FEDC_ID_MAX, &w->server_id),
                out);
}

static void fill_train_config(Fedc__TrainConfig *p,
                              const fedc_train_config *c)
{
  fedc__train_config__init(p);
  p->local_epochs = c->local_epochs;
  p->batch_size = c->batch_size;
  p->learning_rate = c->learning_rate;
  p->momentum = c->momentum;
  p->weight_decay = c->weight_decay;
  p->proximal_mu = c->proximal_mu;
  p->seed = c->seed;
  p->max_steps = c->max_steps;
  p->optimizer = (Fedc__Optimizer)c->optimizer;
  p->nesterov = c->nesterov != 0;
  p->beta1 = c->beta1;
  p->beta2 = c->beta2;
  p->eps = c->eps;
  p->lr_schedule = (Fedc__LrSchedule)c->lr_schedule;
  p->lr_step_size = c->lr_step_size;
  p->lr_gamma = c->lr_gamma;
  p->lr_min = c->lr_min;
  p->clip_norm = c->clip_norm;
}

int fedc_message_fit_task(uint64_t round, const fedc_train_config *config,
                          const char *model_spec, fedc_snapshot *model,
                          fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_FIT_TASK);
  Fedc__FitTask *t;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  t = &m->body.fit_task;
  fedc__fit_task__init(t);
  m->envelope.fit_task = t;
  t->round = round;
  fill_train_config(&m->train_config, config);
  t->config = &m->train_config;

  m->hold = fedc_snapshot_ref(model);
  t->n_model = fedc_snapshot_tensors(model)->count;
  t->model = fedc_snapshot_specs(model);
  return finish(m, copy_string(m, model_spec, FEDC_MODEL_SPEC_MAX,
                               &m->train_config.model_spec), out);
}

int fedc_message_fit_result(uint64_t round, uint64_t num_examples,
                            const fedc_message_metric *metrics,
                            size_t n_metrics, fedc_snapshot *update,
                            fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_FIT_RESULT);
  Fedc__FitResult *r;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  r = &m->body.fit_result;
  fedc__fit_result__init(r);
  m->envelope.fit_result = r;
  r->round = round;
  r->num_examples = num_examples;
  r->n_metrics = n_metrics;
  r->metrics = m->metrics;

  m->hold = fedc_snapshot_ref(update);
  r->n_update = fedc_snapshot_tensors(update)->count;
  r->update = fedc_snapshot_specs(update);
  return finish(m, copy_metrics(m, metrics, n_metrics), out);
}

int fedc_message_evaluate_task(uint64_t round, const char *model_spec,
                               fedc_snapshot *model, fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_EVALUATE_TASK);
  Fedc__EvaluateTask *t;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  t = &m->body.evaluate_task;
  fedc__evaluate_task__init(t);
  m->envelope.evaluate_task = t;
  t->round = round;

  m->hold = fedc_snapshot_ref(model);
  t->n_model = fedc_snapshot_tensors(model)->count;
  t->model = fedc_snapshot_specs(model);
  return finish(m, copy_string(m, model_spec, FEDC_MODEL_SPEC_MAX,
                               &t->model_spec), out);
}

int fedc_message_evaluate_result(uint64_t round, uint64_t num_examples,
                                 double loss, double accuracy,
                                 const fedc_message_metric *metrics,
                                 size_t n_metrics, fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_EVALUATE_RESULT);
  Fedc__EvaluateResult *r;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  r = &m->body.evaluate_result;
  fedc__evaluate_result__init(r);
  m->envelope.evaluate_result = r;
  r->round = round;
  r->num_examples = num_examples;
  r->loss = loss;
  r->accuracy = accuracy;
  r->n_metrics = n_metrics;
  r->metrics = m->metrics;
  return finish(m, copy_metrics(m, metrics, n_metrics), out);
}

int fedc_message_error(Fedc__ErrorCode code, const char *text,
                       uint64_t round, fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_ERROR);
  Fedc__Error *e;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  e = &m->body.error;
  fedc__error__init(e);
  m->envelope.error = e;
  e->code = code;
  e->round = round;
  return finish(m, copy_string(m, text, MESSAGE_TEXT_MAX, &e->message), out);
}

int fedc_message_goodbye(const char *reason, fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_GOODBYE);
  Fedc__Goodbye *g;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  g = &m->body.goodbye;
  fedc__goodbye__init(g);
  m->envelope.goodbye = g;
  return finish(m, copy_string(m, reason, MESSAGE_TEXT_MAX, &g->reason),
                out);
}

int fedc_message_cancel(uint64_t round, const char *reason,
                        fedc_message **out)
{
  fedc_message *m = message_new(FEDC__ENVELOPE__BODY_CANCEL);
  Fedc__Cancel *c;

  *out = NULL;
  if (!m)
    return FEDC_ENOMEM;
  c = &m->body.cancel;
  fedc__cancel__init(c);
  m->envelope.cancel = c;
  c->round = round;
  return finish(m, copy_string(m, reason, MESSAGE_TEXT_MAX, &c->reason),
                out);
}

void fedc_message_train_config(const Fedc__TrainConfig *proto,
                               fedc_train_config *out)
{
  memset(out, 0, sizeof(*out));
  if (!proto)
    return;
  out->local_epochs = proto->local_epochs;
  out->batch_size = proto->batch_size;
  out->learning_rate = proto->learning_rate;
  out->momentum = proto->momentum;
  out->weight_decay = proto->weight_decay;
  out->proximal_mu = proto->proximal_mu;
  out->seed = proto->seed;
  out->max_steps = proto->max_steps;

  /* An optimizer or schedule from a newer peer that this build does not
   * know falls back to the default rather than to an invalid enum value. */
  out->optimizer = proto->optimizer <= FEDC__OPTIMIZER__ADAMW
                       ? (enum fedc_optimizer)proto->optimizer
                       : FEDC_OPT_SGD;
  out->nesterov = proto->nesterov;
  out->beta1 = proto->beta1;
  out->beta2 = proto->beta2;
  out->eps = proto->eps;
  out->lr_schedule = proto->lr_schedule <= FEDC__LR_SCHEDULE__LR_COSINE
                         ? (enum fedc_lr_schedule)proto->lr_schedule
                         : FEDC_LR_CONSTANT;
  out->lr_step_size = proto->lr_step_size;
  out->lr_gamma = proto->lr_gamma;
  out->lr_min = proto->lr_min;
  out->clip_norm = proto->clip_norm;
}

double fedc_message_find_metric(Fedc__Metric *const *metrics, size_t n,
                                const char *name, double fallback)
{
  for (size_t i = 0; i < n; i++)
    if (metrics[i] && metrics[i]->name && strcmp(metrics[i]->name, name) == 0)
      return metrics[i]->value;
  return fallback;
}
