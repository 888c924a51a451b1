/* The synchronous round lifecycle of the server engine: start and sample,
 * close and cancel the stragglers, aggregate or abandon, evaluate,
 * checkpoint and report, and the task bookkeeping both modes share. */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/engine_impl.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

#define LOG_COMPONENT "engine"

void fedc_round_task_started(fedc_server_engine *e, fedc_peer *peer,
                             uint64_t now_ms)
{
  fedc_peers_set_state(&e->peers, peer, FEDC_PEER_TRAINING);
  peer->task_sent_ms = now_ms;
  peer->task_seq = ++e->next_task_seq;
  e->stats.tasks_sent++;
  e->stats.training_now++;
  if (e->stats.training_now > e->stats.training_max)
    e->stats.training_max = e->stats.training_now;
}

void fedc_round_task_ended(fedc_server_engine *e, fedc_peer *peer)
{
  assert(peer->state == FEDC_PEER_TRAINING ||
         peer->state == FEDC_PEER_UPLOADING);
  assert(e->stats.training_now > 0);
  fedc_assembler_free(&peer->upload);
  e->stats.training_now--;
}

/* Builds the FitTask of task id task for the global model. */
static int build_task(fedc_server_engine *e, uint64_t task,
                      fedc_message **out)
{
  fedc_train_config train = e->config.train;

  train.seed += task;
  return fedc_message_fit_task(task, &train, e->model_spec, e->global, out);
}

/* Sends peer task_message, the FitTask of task id task, taking a new
 * reference to it, then the global model stream. */
static int send_task(fedc_server_engine *e, fedc_peer *peer,
                     fedc_message *task_message, uint64_t task,
                     uint64_t now_ms, fedc_server_actions *out)
{
  fedc_server_action *a;
  int rc = fedc_server_actions_send(out, peer->id,
                                    fedc_message_ref(task_message));

  if (rc < 0)
    return rc;

  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_SEND_STREAM);
  if (!a)
    return FEDC_ENOMEM;
  a->stream.peer = peer->id;
  rc = fedc_chunker_new(e->global, task, FEDC__STREAM_KIND__GLOBAL_MODEL,
                        e->config.chunk_bytes, &a->stream.stream);
  if (rc < 0)
    return rc;

  peer->task_round = task;
  peer->task_version = e->round.id;
  fedc_round_task_started(e, peer, now_ms);
  e->round.sampled++;
  e->round.bytes_sent += fedc_chunker_total_bytes(a->stream.stream);
  e->stats.bytes_sent += fedc_chunker_total_bytes(a->stream.stream);
  return 0;
}

int fedc_round_send_task(fedc_server_engine *e, fedc_peer *peer,
                         uint64_t task, uint64_t now_ms,
                         fedc_server_actions *out)
{
  fedc_message *task_message = NULL;
  int rc = build_task(e, task, &task_message);

  if (rc == 0)
    rc = send_task(e, peer, task_message, task, now_ms, out);
  fedc_message_free(&task_message);
  return rc;
}

int fedc_round_cancel_task(fedc_server_engine *e, fedc_peer *peer,
                           uint64_t now_ms, const char *reason,
                           fedc_server_actions *out)
{
  fedc_message *cancel = NULL;
  int rc = fedc_message_cancel(peer->task_round, reason, &cancel);

  if (rc == 0)
    rc = fedc_server_actions_send(out, peer->id, cancel);
  if (rc < 0)
    return rc;
  if (peer->state == FEDC_PEER_UPLOADING)
    peer->discard_task = peer->task_round;
  else
    peer->cancelled_task = peer->task_round;
  fedc_sampler_straggled(e, peer, now_ms);
  fedc_round_task_ended(e, peer);
  fedc_peers_set_state(&e->peers, peer, FEDC_PEER_IDLE);
  e->round.cancelled++;
  e->stats.tasks_cancelled++;
  return 0;
}

static void begin_round_state(fedc_server_engine *e, uint64_t now_ms)
{
  memset(&e->round, 0, sizeof(e->round));
  e->round.id = e->last_round + 1;
  e->round.started_ms = now_ms;
  e->round.timer = e->next_timer++;
}

/* Keeps the connection ids of the picked peers in e->scratch[0..picked)
 * as the open round's cohort. */
static int keep_cohort(fedc_server_engine *e, uint32_t picked)
{
  if (e->cohort_capacity < picked) {
    uint64_t *ids = realloc(e->cohort, picked * sizeof(*ids));

    if (!ids)
      return FEDC_ENOMEM;
    e->cohort = ids;
    e->cohort_capacity = picked;
  }
  for (uint32_t i = 0; i < picked; i++)
    e->cohort[i] = e->peers.items[e->scratch[i]].id;
  e->cohort_count = picked;
  return 0;
}

/* Samples the cohort and sends each member its task. */
static int start_round(fedc_server_engine *e, uint64_t now_ms,
                       fedc_server_actions *out)
{
  size_t idle = fedc_peers_idle_count(&e->peers);
  uint32_t picked = 0, cohort = 0;
  fedc_message *task_message = NULL;
  fedc_server_action *timer;
  int rc;

  begin_round_state(e, now_ms);
  e->cohort_count = 0;
  rc = fedc_sampler_pick(e, &picked, &cohort);
  if (rc == 0)
    rc = keep_cohort(e, picked);

  /* Every member gets the same FitTask, so they share one message. */
  if (rc == 0)
    rc = build_task(e, e->round.id, &task_message);
  for (uint32_t i = 0; i < picked && rc == 0; i++) {
    fedc_peer *peer = &e->peers.items[e->scratch[i]];

    peer->last_picked = e->round.id;
    rc = send_task(e, peer, task_message, e->round.id, now_ms, out);
  }
  fedc_message_free(&task_message);
  if (rc < 0)
    return rc;
  e->round.required = fedc_sampler_quorum(&e->config, cohort);
  if (e->config.over_selection > 1.0 && picked > cohort)
    e->round.target = cohort;

  timer = fedc_server_actions_push(out, FEDC_SERVER_ACTION_START_TIMER);
  if (!timer)
    return FEDC_ENOMEM;
  timer->timer.id = e->round.timer;
  timer->timer.delay_ms = e->config.round_deadline_ms;
  e->phase = FEDC_SERVER_TRAINING;
  fedc_agg_begin(e->agg);
  fedc_info(LOG_COMPONENT, "round started round=%llu sampled=%u cohort=%u "
            "quorum=%u idle=%zu", (unsigned long long)e->round.id, picked,
            cohort, e->round.required, idle);
  return 0;
}

static int maybe_start(fedc_server_engine *e, uint64_t now_ms,
                       fedc_server_actions *out)
{
  uint64_t need = e->config.min_clients;

  if (e->config.min_fit_clients > need)
    need = e->config.min_fit_clients;
  if (need == 0)
    need = 1;
  if (!e->started || e->phase != FEDC_SERVER_WAITING || e->draining ||
      e->retry_timer != 0 || fedc_peers_idle_count(&e->peers) < need)
    return 0;
  return start_round(e, now_ms, out);
}

void fedc_round_drop_member(fedc_server_engine *e, fedc_peer *peer)
{
  if (peer->state != FEDC_PEER_TRAINING && peer->state != FEDC_PEER_UPLOADING)
    return;
  fedc_round_task_ended(e, peer);
  fedc_peers_set_state(&e->peers, peer, FEDC_PEER_IDLE);
  if (e->phase != FEDC_SERVER_TRAINING)
    return;
  if (!fedc_engine_is_async(e) && peer->task_round != e->round.id)
    return;
  e->round.lost++;
  e->stats.clients_lost++;
}

void fedc_round_scale_update(fedc_server_engine *e, const fedc_peer *peer,
                             fedc_tensor_list *update)
{
  double scale = fedc_async_update_scale(e, peer);

  for (size_t i = 0; i < update->count; i++) {
    fedc_tensor *t = &update->items[i];
    float *x = t->data;
    uint64_t n = fedc_tensor_numel(t);

    if (t->dtype != FEDC_DTYPE_F32)
      continue;
    for (uint64_t k = 0; k < n; k++)
      x[k] = (float)(x[k] * scale);
  }
}

int fedc_round_accept(fedc_server_engine *e, fedc_peer *peer,
                      const fedc_tensor_list *update, double norm,
                      uint64_t now_ms)
{
  double weight = (double)peer->result_examples;
  int rc;

  rc = norm >= 0.0 ? fedc_agg_add_norm(e->agg, update, weight, norm)
                   : fedc_agg_add(e->agg, update, weight);
  if (rc < 0)
    return rc;
  fedc_sampler_observe(e, peer, now_ms);
  fedc_round_task_ended(e, peer);
  fedc_peers_set_state(&e->peers, peer, fedc_engine_is_async(e)
                                        ? FEDC_PEER_IDLE
                                        : FEDC_PEER_REPORTED);
  e->round.reported++;
  e->stats.results_accepted++;
  if (isfinite(peer->result_loss) && isfinite(peer->result_accuracy)) {
    e->round.train_weight += weight;
    e->round.train_loss_sum += weight * peer->result_loss;
    e->round.train_accuracy_sum += weight * peer->result_accuracy;
  }
  return 0;
}

/* Returns the reason the open round should close now, or NULL. A round
 * that sampled no one (possible with Poisson sampling) waits for its
 * deadline, so that an empty draw takes a round's time, not none. */
static const char *close_reason(const fedc_server_engine *e)
{
  const fedc_round_state *r = &e->round;
  uint32_t outstanding = r->sampled - r->reported - r->lost;

  if (r->sampled == 0)
    return NULL;
  if (outstanding == 0)
    return "every sampled client reported or left";
  if (r->target > 0 && r->reported >= r->target)
    return "target count reported";
  if (e->config.close_at_quorum && r->reported >= r->required)
    return "quorum reached";
  if (e->draining && r->reported >= r->required)
    return "quorum reached while draining";
  if (r->reported + outstanding < r->required)
    return "quorum can no longer be reached";
  return NULL;
}

static int by_index(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

  return (x > y) - (x < y);
}

/* Writes to e->scratch the dense indices of the peers that still hold a
 * task of the open round, which are the cohort members still connected,
 * in ascending order: the order of a scan of every peer, which the Cancel
 * messages keep. Returns their number in *count. */
static int cohort_indices(fedc_server_engine *e, size_t *count)
{
  size_t n = 0;
  int rc = fedc_sampler_reserve(e, e->cohort_count);

  if (rc < 0)
    return rc;
  for (size_t i = 0; i < e->cohort_count; i++) {
    const fedc_peer *peer = fedc_peers_find(&e->peers, e->cohort[i]);

    if (peer && peer->task_round == e->round.id)
      e->scratch[n++] = (uint32_t)(peer - e->peers.items);
  }
  qsort(e->scratch, n, sizeof(*e->scratch), by_index);
  *count = n;
  return 0;
}

/* Makes the clients that reported idle again and cancels the stragglers,
 * which become idle too: a result of theirs that crossed the Cancel is
 * discarded and counted as late. */
static int release_cohort(fedc_server_engine *e, uint64_t now_ms,
                          fedc_server_actions *out)
{
  size_t count = 0;
  int rc = cohort_indices(e, &count);

  for (size_t i = 0; i < count && rc == 0; i++) {
    fedc_peer *peer = &e->peers.items[e->scratch[i]];

    if (peer->state == FEDC_PEER_REPORTED) {
      fedc_peers_set_state(&e->peers, peer, FEDC_PEER_IDLE);
    } else if (peer->state == FEDC_PEER_TRAINING ||
               peer->state == FEDC_PEER_UPLOADING) {
      rc = fedc_round_cancel_task(e, peer, now_ms, "round closed", out);
    }
  }
  return rc;
}

int fedc_round_cancel_timer(uint64_t *timer, fedc_server_actions *out)
{
  fedc_server_action *a;

  if (*timer == 0)
    return 0;
  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_CANCEL_TIMER);
  if (!a)
    return FEDC_ENOMEM;
  a->timer.id = *timer;
  *timer = 0;
  return 0;
}

/* Applies the aggregate to the global model in place, after copying the
 * model when a stream, an evaluation or a checkpoint still references it,
 * or when the model before it must be kept. On error the global model,
 * the round and the optimizer state are unchanged (fedc_agg_finish). */
int fedc_round_apply(fedc_server_engine *e, bool keep_previous)
{
  fedc_tensor_list *global = keep_previous ? NULL
                                           : fedc_snapshot_mutable(e->global);
  fedc_tensor_list copy;
  fedc_snapshot *fresh = NULL;
  int rc;

  if (global)
    return fedc_agg_finish(e->agg, global);

  fedc_tensor_list_init(&copy);
  rc = fedc_tensor_list_copy(&copy, fedc_snapshot_tensors(e->global));
  if (rc == 0)
    rc = fedc_snapshot_new(&copy, &fresh);
  fedc_tensor_list_close(&copy);
  if (rc == 0 && keep_previous)
    rc = fedc_agg_state_save(e->agg, &e->previous_state);
  if (rc == 0)
    rc = fedc_agg_finish(e->agg, fedc_snapshot_mutable(fresh));
  if (rc < 0) {
    fedc_snapshot_unref(&fresh);
    fedc_tensor_list_close(&e->previous_state);
    return rc;
  }
  if (keep_previous)
    e->previous = e->global;
  else
    fedc_snapshot_unref(&e->global);
  e->global = fresh;
  return 0;
}

int fedc_round_roll_back(fedc_server_engine *e)
{
  int rc = fedc_agg_state_load(e->agg, &e->previous_state);

  fedc_snapshot_unref(&e->global);
  e->global = e->previous;
  e->previous = NULL;
  fedc_tensor_list_close(&e->previous_state);
  return rc;
}

void fedc_round_forget_previous(fedc_server_engine *e)
{
  fedc_snapshot_unref(&e->previous);
  fedc_tensor_list_close(&e->previous_state);
}

void fedc_round_fill_metrics(fedc_server_engine *e, bool aggregated,
                             const char *fmt, ...)
{
  fedc_round_state *r = &e->round;
  fedc_round_metrics *m = &r->metrics;
  va_list ap;

  memset(m, 0, sizeof(*m));
  m->round = r->id;
  m->aggregated = aggregated;
  va_start(ap, fmt);
  vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
  va_end(ap);
  m->clients_sampled = r->sampled;
  m->clients_reported = r->reported;
  m->clients_lost = r->lost;
  m->clients_cancelled = r->cancelled;
  m->updates_too_stale = r->too_stale;
  m->bytes_sent = r->bytes_sent;
  m->bytes_received = r->bytes_received;
  if (r->train_weight > 0) {
    m->has_train_metrics = true;
    m->train_loss = r->train_loss_sum / r->train_weight;
    m->train_accuracy = r->train_accuracy_sum / r->train_weight;
  }
}

int fedc_round_push_checkpoint(fedc_server_engine *e,
                               fedc_server_actions *out)
{
  fedc_server_action *a = fedc_server_actions_push(out,
                                                   FEDC_SERVER_ACTION_CHECKPOINT);

  if (!a)
    return FEDC_ENOMEM;
  a->checkpoint.round = e->round.id;
  a->checkpoint.model = fedc_snapshot_ref(e->global);
  fedc_tensor_list_init(&a->checkpoint.state);
  return fedc_agg_state_save(e->agg, &a->checkpoint.state);
}

int fedc_round_push_finished(const fedc_round_metrics *m,
                             fedc_server_actions *out)
{
  fedc_server_action *a = fedc_server_actions_push(
    out, FEDC_SERVER_ACTION_ROUND_FINISHED);

  if (!a)
    return FEDC_ENOMEM;
  a->round_finished = *m;
  return 0;
}

/* Returns the delay before the round after the nth abandoned one in a
 * row: retry_delay_ms doubled n - 1 times, capped at retry_delay_max_ms. */
static uint64_t retry_delay(const fedc_server_engine_config *c, uint32_t n)
{
  uint64_t delay = c->retry_delay_ms;

  for (uint32_t i = 1; i < n && delay < c->retry_delay_max_ms; i++)
    delay *= 2;
  return delay < c->retry_delay_max_ms ? delay : c->retry_delay_max_ms;
}

/* After an abandoned round: ends the run when too many were abandoned in
 * a row, otherwise holds the next round back for the retry delay. */
static int after_abandoned(fedc_server_engine *e, fedc_server_actions *out)
{
  const fedc_server_engine_config *c = &e->config;
  char reason[2 * FEDC_REASON_MAX];
  fedc_server_action *a;

  e->abandoned_in_row++;
  if (c->max_abandoned_rounds > 0 &&
      e->abandoned_in_row >= c->max_abandoned_rounds) {
    snprintf(reason, sizeof(reason), "%u rounds in a row were abandoned, "
             "the last because: %s", e->abandoned_in_row,
             e->round.metrics.reason);
    fedc_error(LOG_COMPONENT, "stopping: %s", reason);
    return fedc_round_done(e, reason, true, out);
  }
  if (c->retry_delay_ms == 0)
    return 0;
  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_START_TIMER);
  if (!a)
    return FEDC_ENOMEM;
  e->retry_timer = e->next_timer++;
  a->timer.id = e->retry_timer;
  a->timer.delay_ms = retry_delay(c, e->abandoned_in_row);
  fedc_info(LOG_COMPONENT, "next round waits after abandoned rounds "
            "abandoned_in_row=%u delay_ms=%llu", e->abandoned_in_row,
            (unsigned long long)a->timer.delay_ms);
  return 0;
}

/* Checkpoints an aggregated round, reports the round, then ends the run
 * after the last round or a drain, or waits after an abandoned round. */
static int finish_round(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out)
{
  bool aggregated = e->round.metrics.aggregated;
  int rc = 0;

  e->round.metrics.seconds = (double)(now_ms - e->round.started_ms) / 1000.0;
  fedc_round_forget_previous(e);
  if (aggregated) {
    e->stats.rounds_aggregated++;
    e->abandoned_in_row = 0;
    rc = fedc_round_push_checkpoint(e, out);
  } else {
    e->stats.rounds_abandoned++;
  }
  if (rc == 0)
    rc = fedc_round_push_finished(&e->round.metrics, out);
  if (rc < 0)
    return rc;
  e->phase = FEDC_SERVER_WAITING;

  if (e->config.total_rounds > 0 && e->round.id >= e->config.total_rounds)
    return fedc_round_done(e, "all rounds finished",
                           fedc_round_run_failed(e), out);
  if (e->draining)
    return fedc_round_done(e, "server shutting down", false, out);
  return aggregated ? 0 : after_abandoned(e, out);
}

bool fedc_round_run_failed(const fedc_server_engine *e)
{
  return e->stats.rounds_aggregated == 0 && e->stats.rounds_abandoned > 0;
}

bool fedc_round_evaluation_due(const fedc_server_engine *e, uint64_t round)
{
  uint64_t every = e->config.evaluate_every;

  if (every == 0)
    return false;
  return round % every == 0 || round == e->config.total_rounds;
}

static int abandon(fedc_server_engine *e, uint64_t now_ms, const char *cause,
                   fedc_server_actions *out)
{
  const fedc_round_state *r = &e->round;

  fedc_agg_begin(e->agg);
  fedc_round_fill_metrics(e, false, "%u of %u sampled clients reported, "
                          "quorum %u: %s", r->reported, r->sampled,
                          r->required, cause);
  fedc_warn(LOG_COMPONENT, "round abandoned, model unchanged round=%llu "
            "reason=\"%s\"", (unsigned long long)r->id, r->metrics.reason);
  return finish_round(e, now_ms, out);
}

/* Abandons a round whose aggregate was computed but not kept. */
static int roll_back(fedc_server_engine *e, uint64_t now_ms,
                     const char *cause, fedc_server_actions *out)
{
  const fedc_round_state *r = &e->round;

  fedc_agg_begin(e->agg);
  fedc_round_fill_metrics(e, false, "%s; the previous model is kept",
                          cause);
  e->stats.rounds_rolled_back++;
  fedc_error(LOG_COMPONENT, "round rolled back, model unchanged round=%llu "
             "reported=%u reason=\"%s\"", (unsigned long long)r->id,
             r->reported, r->metrics.reason);
  return finish_round(e, now_ms, out);
}

static int close_round(fedc_server_engine *e, uint64_t now_ms,
                       const char *cause, fedc_server_actions *out)
{
  fedc_round_state *r = &e->round;
  fedc_server_action *a;
  int rc = fedc_round_cancel_timer(&e->round.timer, out);

  fedc_sampler_round_closed(e);
  if (rc == 0)
    rc = release_cohort(e, now_ms, out);
  if (rc < 0)
    return rc;
  e->last_round = r->id;
  if (r->reported < r->required)
    return abandon(e, now_ms, cause, out);
  if (r->reported < fedc_agg_min_updates(e->agg)) {
    char need[FEDC_REASON_MAX];

    snprintf(need, sizeof(need), "%s needs at least %zu updates",
             fedc_agg_strategy_name(e->config.agg.strategy),
             fedc_agg_min_updates(e->agg));
    return abandon(e, now_ms, need, out);
  }
  rc = fedc_round_apply(e, fedc_round_evaluation_due(e, r->id));
  if (rc == FEDC_ENONFINITE)
    return roll_back(e, now_ms, "the aggregate would put NaN or Inf into "
                     "the model", out);
  if (rc < 0)
    return abandon(e, now_ms, fedc_strerror(rc), out);

  fedc_round_fill_metrics(e, true, "%s", "");
  fedc_info(LOG_COMPONENT, "round closed round=%llu reported=%u sampled=%u "
            "reason=\"%s\"", (unsigned long long)r->id, r->reported,
            r->sampled, cause);
  if (!fedc_round_evaluation_due(e, r->id))
    return finish_round(e, now_ms, out);

  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_EVALUATE);
  if (!a)
    return FEDC_ENOMEM;
  a->evaluate.round = r->id;
  a->evaluate.model = fedc_snapshot_ref(e->global);
  e->phase = FEDC_SERVER_EVALUATING;
  return 0;
}

int fedc_round_settle(fedc_server_engine *e, uint64_t now_ms,
                      fedc_server_actions *out)
{
  if (fedc_engine_is_async(e))
    return fedc_async_settle(e, now_ms, out);
  if (e->phase == FEDC_SERVER_TRAINING) {
    const char *cause = close_reason(e);
    int rc = cause ? close_round(e, now_ms, cause, out) : 0;

    if (rc < 0)
      return rc;
  }
  return maybe_start(e, now_ms, out);
}

int fedc_round_start_drain_timer(fedc_server_engine *e, uint64_t timeout_ms,
                                 fedc_server_actions *out)
{
  fedc_server_action *a = fedc_server_actions_push(
    out, FEDC_SERVER_ACTION_START_TIMER);

  if (!a)
    return FEDC_ENOMEM;
  e->drain_timer = e->next_timer++;
  a->timer.id = e->drain_timer;
  a->timer.delay_ms = timeout_ms;
  return 0;
}

/* The drain timeout of a synchronous round: a round in training closes
 * with the results it has, and one being evaluated finishes without test
 * metrics, so also without the test-loss check. */
int fedc_round_drain_timeout(fedc_server_engine *e, uint64_t now_ms,
                             fedc_server_actions *out)
{
  e->drain_timer = 0;
  fedc_warn(LOG_COMPONENT, "drain timeout passed round=%llu phase=%s",
            (unsigned long long)e->round.id,
            e->phase == FEDC_SERVER_TRAINING ? "training" : "evaluating");
  if (e->phase == FEDC_SERVER_TRAINING)
    return close_round(e, now_ms, "drain timeout passed", out);
  if (e->phase == FEDC_SERVER_EVALUATING)
    return fedc_round_evaluated(e, now_ms, NULL, out);
  return 0;
}

int fedc_round_deadline(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out)
{
  int rc;

  /* The timer has fired, so there is nothing to cancel. */
  e->round.timer = 0;
  rc = close_round(e, now_ms, "deadline passed", out);
  if (rc < 0)
    return rc;
  return maybe_start(e, now_ms, out);
}

int fedc_round_evaluated(fedc_server_engine *e, uint64_t now_ms,
                         const fedc_server_eval *result,
                         fedc_server_actions *out)
{
  fedc_round_metrics *m = &e->round.metrics;
  char cause[FEDC_REASON_MAX];
  int rc;

  if (result && e->previous && !isfinite(result->loss)) {
    snprintf(cause, sizeof(cause), "test loss of the aggregated model is "
             "%g", result->loss);
    rc = fedc_round_roll_back(e);
    if (rc < 0)
      return rc;
    return roll_back(e, now_ms, cause, out);
  }
  if (result) {
    m->evaluated = true;
    m->test_loss = result->loss;
    m->test_accuracy = result->accuracy;
  } else {
    fedc_warn(LOG_COMPONENT, "evaluation failed round=%llu",
              (unsigned long long)e->round.id);
  }
  return finish_round(e, now_ms, out);
}

int fedc_round_stop(fedc_server_engine *e, uint64_t now_ms,
                    fedc_server_actions *out)
{
  int rc;

  rc = fedc_round_cancel_timer(&e->retry_timer, out);
  if (rc == 0)
    rc = fedc_round_cancel_timer(&e->drain_timer, out);
  if (rc < 0)
    return rc;
  if (fedc_engine_is_async(e))
    return fedc_async_stop(e, out);
  if (e->phase == FEDC_SERVER_EVALUATING)
    return fedc_round_evaluated(e, now_ms, NULL, out);
  if (e->phase != FEDC_SERVER_TRAINING)
    return 0;

  /* The open round is dropped without a checkpoint or metrics: a resumed
   * server runs it again under the same id. */
  rc = fedc_round_cancel_timer(&e->round.timer, out);
  fedc_agg_begin(e->agg);
  fedc_info(LOG_COMPONENT, "round dropped for shutdown round=%llu",
            (unsigned long long)e->round.id);
  e->phase = FEDC_SERVER_WAITING;
  return rc;
}

/* Sends peer the Goodbye bye, taking a new reference to it, and closes
 * the peer with reason. */
static int send_goodbye(uint64_t peer, const char *client_id,
                        const char *reason, fedc_message *bye,
                        fedc_server_actions *out)
{
  fedc_server_action *a;
  int rc = fedc_server_actions_send(out, peer, fedc_message_ref(bye));

  if (rc < 0)
    return rc;
  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_CLOSE);
  if (!a)
    return FEDC_ENOMEM;
  a->close.peer = peer;
  a->close.reject = FEDC_REJECT_NONE;
  snprintf(a->close.client_id, sizeof(a->close.client_id), "%s", client_id);
  snprintf(a->close.reason, sizeof(a->close.reason), "%s", reason);
  return 0;
}

int fedc_round_goodbye(uint64_t peer, const char *client_id,
                       const char *reason, fedc_server_actions *out)
{
  fedc_message *bye = NULL;
  int rc = fedc_message_goodbye(reason, &bye);

  if (rc == 0)
    rc = send_goodbye(peer, client_id, reason, bye, out);
  fedc_message_free(&bye);
  return rc;
}

/* Appends one CLOSE_ALL with a Goodbye for reason. A SEND and a CLOSE
 * for each peer would take two 344-byte actions per peer, about 70 MB at
 * 10^5 peers, where this costs the same at any number of peers. */
static int push_close_all(const char *reason, fedc_server_actions *out)
{
  fedc_message *bye = NULL;
  fedc_server_action *a;
  int rc = fedc_message_goodbye(reason, &bye);

  if (rc < 0)
    return rc;
  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_CLOSE_ALL);
  if (!a) {
    fedc_message_free(&bye);
    return FEDC_ENOMEM;
  }
  a->close_all.message = bye;
  snprintf(a->close_all.reason, sizeof(a->close_all.reason), "%s", reason);
  return 0;
}

int fedc_round_done(fedc_server_engine *e, const char *reason, bool failed,
                    fedc_server_actions *out)
{
  fedc_server_action *a;
  int rc = fedc_round_cancel_timer(&e->retry_timer, out);

  if (rc == 0)
    rc = fedc_round_cancel_timer(&e->drain_timer, out);
  if (rc == 0 && e->peers.count > 0)
    rc = push_close_all(reason, out);

  /* The table moves aside whole, so that ending a run costs the same at
   * any number of peers. */
  fedc_peers_close(&e->closed_peers);
  e->closed_peers = e->peers;
  fedc_peers_init(&e->peers);
  e->cohort_count = 0;
  e->stats.training_now = 0;
  e->stats.peers = 0;
  e->stats.clients = 0;
  e->phase = FEDC_SERVER_DONE;
  if (rc < 0)
    return rc;

  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_DONE);
  if (!a)
    return FEDC_ENOMEM;
  snprintf(a->done.reason, sizeof(a->done.reason), "%s", reason);
  a->done.failed = failed;
  if (failed)
    fedc_error(LOG_COMPONENT, "training failed round=%llu aggregated=%llu "
               "abandoned=%llu reason=\"%s\"",
               (unsigned long long)e->last_round,
               (unsigned long long)e->stats.rounds_aggregated,
               (unsigned long long)e->stats.rounds_abandoned, reason);
  else
    fedc_info(LOG_COMPONENT, "training done round=%llu reason=\"%s\"",
              (unsigned long long)e->last_round, reason);
  return 0;
}
