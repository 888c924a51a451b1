/* The round lifecycle of the server engine: start and sample, close,
 * aggregate or abandon, evaluate, checkpoint and report. */
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

/* ceil(fraction x n), with a margin so that 0.1 x 30 gives 3, not the 4
 * that the rounding error of 0.1 would give. */
static uint64_t ceil_share(double fraction, uint64_t n)
{
  double x = ceil(fraction * (double)n - 1e-9);

  return x <= 0 ? 0 : (uint64_t)x;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
  return a > b ? a : b;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

static uint64_t cohort_size(const fedc_server_engine_config *c, uint64_t idle)
{
  uint64_t n = c->clients_per_round;

  if (n == 0)
    n = ceil_share(c->fraction_fit, idle);
  n = max_u64(n, c->min_fit_clients);
  if (c->max_fit_clients > 0)
    n = min_u64(n, c->max_fit_clients);
  return max_u64(min_u64(n, idle), 1);
}

static uint32_t quorum(const fedc_server_engine_config *c, uint32_t sampled)
{
  uint64_t q = max_u64(c->quorum_count, ceil_share(c->quorum_fraction,
                                                   sampled));

  return (uint32_t)max_u64(min_u64(q, sampled), 1);
}

/* Collects the idle peers' indices into the scratch array. */
static int collect_idle(fedc_server_engine *e, size_t *count)
{
  size_t n = 0;

  if (e->scratch_capacity < e->peers.count) {
    uint32_t *s = realloc(e->scratch, e->peers.count * sizeof(*s));

    if (!s)
      return FEDC_ENOMEM;
    e->scratch = s;
    e->scratch_capacity = e->peers.count;
  }
  for (size_t k = 0; k < e->peers.count; k++)
    if (e->peers.items[k].state == FEDC_PEER_IDLE)
      e->scratch[n++] = (uint32_t)k;
  assert(n == e->idle_peers);
  *count = n;
  return 0;
}

/* Sends one sampled peer its FitTask and the global model stream. */
static int send_task(fedc_server_engine *e, fedc_peer *peer,
                     fedc_server_actions *out)
{
  fedc_train_config train = e->config.train;
  fedc_message *task = NULL;
  fedc_server_action *a;
  int rc;

  train.seed += e->round.id;
  rc = fedc_message_fit_task(e->round.id, &train, e->model_spec, e->global,
                             &task);
  if (rc == 0)
    rc = fedc_server_actions_send(out, peer->id, task);
  if (rc < 0)
    return rc;

  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_SEND_STREAM);
  if (!a)
    return FEDC_ENOMEM;
  a->stream.peer = peer->id;
  rc = fedc_chunker_new(e->global, e->round.id, FEDC__STREAM_KIND__GLOBAL_MODEL,
                        e->config.chunk_bytes, &a->stream.stream);
  if (rc < 0)
    return rc;

  peer->state = FEDC_PEER_TRAINING;
  peer->task_round = e->round.id;
  e->idle_peers--;
  e->round.bytes_sent += fedc_chunker_total_bytes(a->stream.stream);
  e->stats.bytes_sent += fedc_chunker_total_bytes(a->stream.stream);
  return 0;
}

static void begin_round_state(fedc_server_engine *e, uint64_t now_ms,
                              uint32_t sampled)
{
  memset(&e->round, 0, sizeof(e->round));
  e->round.id = e->last_round + 1;
  e->round.started_ms = now_ms;
  e->round.sampled = sampled;
  e->round.required = quorum(&e->config, sampled);
  e->round.timer = e->next_timer++;
}

/* Samples the cohort uniformly without replacement (partial Fisher-Yates
 * over the idle peers) and sends each member its task. */
static int start_round(fedc_server_engine *e, uint64_t now_ms, size_t idle,
                       fedc_server_actions *out)
{
  uint32_t n = (uint32_t)cohort_size(&e->config, idle);
  fedc_server_action *timer;
  fedc_rng rng;
  int rc = 0;

  begin_round_state(e, now_ms, n);
  fedc_rng_seed2(&rng, e->config.seed, e->round.id);
  for (uint32_t i = 0; i < n && rc == 0; i++) {
    size_t j = i + (size_t)fedc_rng_below(&rng, idle - i);
    uint32_t pick = e->scratch[j];

    e->scratch[j] = e->scratch[i];
    e->scratch[i] = pick;
    rc = send_task(e, &e->peers.items[pick], out);
  }
  if (rc < 0)
    return rc;

  timer = fedc_server_actions_push(out, FEDC_SERVER_ACTION_START_TIMER);
  if (!timer)
    return FEDC_ENOMEM;
  timer->timer.id = e->round.timer;
  timer->timer.delay_ms = e->config.round_deadline_ms;
  e->phase = FEDC_SERVER_TRAINING;
  fedc_agg_begin(e->agg);
  fedc_info(LOG_COMPONENT, "round started round=%llu sampled=%u quorum=%u "
            "idle=%zu", (unsigned long long)e->round.id, n, e->round.required,
            idle);
  return 0;
}

static int maybe_start(fedc_server_engine *e, uint64_t now_ms,
                       fedc_server_actions *out)
{
  uint64_t need = max_u64(max_u64(e->config.min_clients,
                                  e->config.min_fit_clients), 1);
  size_t idle = 0;
  int rc;

  if (!e->started || e->phase != FEDC_SERVER_WAITING || e->idle_peers < need)
    return 0;
  rc = collect_idle(e, &idle);
  if (rc < 0 || idle < need)
    return rc;
  return start_round(e, now_ms, idle, out);
}

void fedc_round_drop_member(fedc_server_engine *e, fedc_peer *peer)
{
  if (e->phase != FEDC_SERVER_TRAINING || peer->task_round != e->round.id)
    return;
  if (peer->state != FEDC_PEER_TRAINING && peer->state != FEDC_PEER_UPLOADING)
    return;
  fedc_assembler_free(&peer->upload);
  e->round.lost++;
  e->stats.clients_lost++;
}

int fedc_round_accept(fedc_server_engine *e, fedc_peer *peer,
                      const fedc_tensor_list *update)
{
  double weight = (double)peer->result_examples;
  int rc = fedc_agg_add(e->agg, update, weight);

  if (rc < 0)
    return rc;
  peer->state = FEDC_PEER_REPORTED;
  e->round.reported++;
  e->stats.results_accepted++;
  if (isfinite(peer->result_loss) && isfinite(peer->result_accuracy)) {
    e->round.train_weight += weight;
    e->round.train_loss_sum += weight * peer->result_loss;
    e->round.train_accuracy_sum += weight * peer->result_accuracy;
  }
  return 0;
}

/* Returns the reason the open round should close now, or NULL. */
static const char *close_reason(const fedc_server_engine *e)
{
  const fedc_round_state *r = &e->round;
  uint32_t outstanding = r->sampled - r->reported - r->lost;

  if (outstanding == 0)
    return "every sampled client reported or left";
  if (e->config.close_at_quorum && r->reported >= r->required)
    return "quorum reached";
  if (r->reported + outstanding < r->required)
    return "quorum can no longer be reached";
  return NULL;
}

/* Makes the clients that reported idle again. Stragglers keep their state
 * and task_round, so a late FitResult or chunk is rejected as stale, and
 * they are not sampled again while they may still be training. */
static void release_cohort(fedc_server_engine *e)
{
  for (size_t k = 0; k < e->peers.count; k++) {
    fedc_peer *peer = &e->peers.items[k];

    if (peer->task_round != e->round.id)
      continue;
    if (peer->state == FEDC_PEER_REPORTED) {
      peer->state = FEDC_PEER_IDLE;
      e->idle_peers++;
    }
    if (peer->state == FEDC_PEER_UPLOADING) {
      fedc_assembler_free(&peer->upload);
      peer->state = FEDC_PEER_TRAINING;
    }
  }
}

static int cancel_timer(fedc_server_engine *e, fedc_server_actions *out)
{
  fedc_server_action *a;

  if (e->round.timer == 0)
    return 0;
  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_CANCEL_TIMER);
  if (!a)
    return FEDC_ENOMEM;
  a->timer.id = e->round.timer;
  e->round.timer = 0;
  return 0;
}

/* Applies the aggregate to the global model in place, after copying the
 * model when a stream, an evaluation or a checkpoint still references it. */
static int aggregate(fedc_server_engine *e)
{
  fedc_tensor_list *global = fedc_snapshot_mutable(e->global);
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
  if (rc < 0)
    return rc;
  fedc_snapshot_unref(&e->global);
  e->global = fresh;
  return fedc_agg_finish(e->agg, fedc_snapshot_mutable(e->global));
}

__attribute__((format(printf, 3, 4)))
static void fill_metrics(fedc_server_engine *e, bool aggregated,
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
  m->bytes_sent = r->bytes_sent;
  m->bytes_received = r->bytes_received;
  if (r->train_weight > 0) {
    m->has_train_metrics = true;
    m->train_loss = r->train_loss_sum / r->train_weight;
    m->train_accuracy = r->train_accuracy_sum / r->train_weight;
  }
}

static int push_checkpoint(fedc_server_engine *e, fedc_server_actions *out)
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

/* Checkpoints, reports the round and ends the run after the last round. */
static int finish_round(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out)
{
  fedc_server_action *a;
  int rc;

  e->round.metrics.seconds = (double)(now_ms - e->round.started_ms) / 1000.0;
  rc = push_checkpoint(e, out);
  if (rc < 0)
    return rc;
  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_ROUND_FINISHED);
  if (!a)
    return FEDC_ENOMEM;
  a->round_finished = e->round.metrics;
  e->phase = FEDC_SERVER_WAITING;

  if (e->config.total_rounds > 0 && e->round.id >= e->config.total_rounds)
    return fedc_round_done(e, "all rounds finished", out);
  return 0;
}

static bool evaluation_due(const fedc_server_engine *e)
{
  uint64_t every = e->config.evaluate_every;

  if (every == 0)
    return false;
  return e->round.id % every == 0 || e->round.id == e->config.total_rounds;
}

static int abandon(fedc_server_engine *e, uint64_t now_ms, const char *cause,
                   fedc_server_actions *out)
{
  const fedc_round_state *r = &e->round;

  fedc_agg_begin(e->agg);
  fill_metrics(e, false, "%u of %u sampled clients reported, quorum %u: %s",
               r->reported, r->sampled, r->required, cause);
  e->stats.rounds_abandoned++;
  fedc_warn(LOG_COMPONENT, "round abandoned, model unchanged round=%llu "
            "reason=\"%s\"", (unsigned long long)r->id, r->metrics.reason);
  return finish_round(e, now_ms, out);
}

static int close_round(fedc_server_engine *e, uint64_t now_ms,
                       const char *cause, fedc_server_actions *out)
{
  fedc_round_state *r = &e->round;
  fedc_server_action *a;
  int rc = cancel_timer(e, out);

  if (rc < 0)
    return rc;
  release_cohort(e);
  e->last_round = r->id;
  if (r->reported < r->required || r->reported < fedc_agg_min_updates(e->agg))
    return abandon(e, now_ms, cause, out);
  rc = aggregate(e);
  if (rc < 0)
    return abandon(e, now_ms, fedc_strerror(rc), out);

  fill_metrics(e, true, "%s", "");
  e->stats.rounds_aggregated++;
  fedc_info(LOG_COMPONENT, "round closed round=%llu reported=%u sampled=%u "
            "reason=\"%s\"", (unsigned long long)r->id, r->reported,
            r->sampled, cause);
  if (!evaluation_due(e))
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
  if (e->phase == FEDC_SERVER_TRAINING) {
    const char *cause = close_reason(e);
    int rc = cause ? close_round(e, now_ms, cause, out) : 0;

    if (rc < 0)
      return rc;
  }
  return maybe_start(e, now_ms, out);
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

  if (e->phase == FEDC_SERVER_EVALUATING)
    return fedc_round_evaluated(e, now_ms, NULL, out);
  if (e->phase != FEDC_SERVER_TRAINING)
    return 0;

  /* The open round is dropped without a checkpoint or metrics: a resumed
   * server runs it again under the same id. */
  rc = cancel_timer(e, out);
  fedc_agg_begin(e->agg);
  fedc_info(LOG_COMPONENT, "round dropped for shutdown round=%llu",
            (unsigned long long)e->round.id);
  e->phase = FEDC_SERVER_WAITING;
  return rc;
}

int fedc_round_goodbye(uint64_t peer, const char *client_id,
                       const char *reason, fedc_server_actions *out)
{
  fedc_message *bye = NULL;
  fedc_server_action *a;
  int rc = fedc_message_goodbye(reason, &bye);

  if (rc == 0)
    rc = fedc_server_actions_send(out, peer, bye);
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

int fedc_round_done(fedc_server_engine *e, const char *reason,
                    fedc_server_actions *out)
{
  fedc_server_action *a;
  int rc = 0;

  for (size_t k = 0; k < e->peers.count && rc == 0; k++)
    rc = fedc_round_goodbye(e->peers.items[k].id, e->peers.items[k].client_id,
                            reason, out);
  fedc_peers_close(&e->peers);
  e->idle_peers = 0;
  e->stats.peers = 0;
  e->stats.clients = 0;
  e->phase = FEDC_SERVER_DONE;
  if (rc < 0)
    return rc;

  a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_DONE);
  if (!a)
    return FEDC_ENOMEM;
  snprintf(a->done.reason, sizeof(a->done.reason), "%s", reason);
  fedc_info(LOG_COMPONENT, "training done round=%llu reason=\"%s\"",
            (unsigned long long)e->last_round, reason);
  return 0;
}
