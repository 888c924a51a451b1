/* The asynchronous modes of the server engine: FedBuff and FedAsync.
 *
 * Clients get a task whenever they are idle, up to max_concurrency at once.
 * The open round is a buffer: each complete update is scaled by its
 * staleness weight (and FedAsync's alpha) and folded into the aggregate,
 * and once it contains buffer_size updates (1 for FedAsync) the aggregate is
 * applied and the round closes. Staleness is the number of rounds closed
 * since the client's task was sent.
 *
 * FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous
 * Aggregation", AISTATS 2022) applies x += server_lr x sum_i n_i s(t_i)
 * d_i / sum_i n_i over the buffer; with equal example counts n_i that is
 * the paper's mean of the staleness-weighted updates. FedAsync (Xie et
 * al., "Asynchronous Federated Optimization", 2019) mixes the client's
 * model in with weight alpha s(t). fedc applies x += alpha s(t) d, where d
 * is the client's update against the model it was sent; this is the
 * paper's (1 - alpha_t) x + alpha_t x_new exactly when t = 0, and it keeps
 * no old model versions, so memory stays O(model). */
#include <stdlib.h>
#include <string.h>

#include "server/engine_impl.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

#define LOG_COMPONENT "engine"

/* Random stream of the asynchronous dispatch, apart from the rounds'. */
#define ASYNC_STREAM UINT64_C(0x6173796e63)

static void begin_buffer(fedc_server_engine *e, uint64_t now_ms)
{
  memset(&e->round, 0, sizeof(e->round));
  e->round.id = e->last_round + 1;
  e->round.started_ms = now_ms;
  fedc_agg_begin(e->agg);
}

static int queue_push(fedc_async_state *a, uint64_t due_ms, uint64_t peer,
                      uint64_t seq)
{
  if (a->count == a->capacity) {
    size_t capacity = a->capacity ? 2 * a->capacity : 16;
    fedc_task_deadline *q = malloc(capacity * sizeof(*q));

    if (!q)
      return FEDC_ENOMEM;
    for (size_t i = 0; i < a->count; i++)
      q[i] = a->queue[(a->head + i) % a->capacity];
    free(a->queue);
    a->queue = q;
    a->head = 0;
    a->capacity = capacity;
  }
  a->queue[(a->head + a->count) % a->capacity] =
    (fedc_task_deadline){ due_ms, peer, seq };
  a->count++;
  return 0;
}

/* Starts the timer for the earliest deadline unless one is pending. */
static int ensure_timer(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out)
{
  fedc_async_state *a = &e->async;
  const fedc_task_deadline *head;
  fedc_server_action *t;

  if (a->timer != 0 || a->count == 0)
    return 0;
  head = &a->queue[a->head];
  t = fedc_server_actions_push(out, FEDC_SERVER_ACTION_START_TIMER);
  if (!t)
    return FEDC_ENOMEM;
  a->timer = e->next_timer++;
  t->timer.id = a->timer;
  t->timer.delay_ms = head->due_ms > now_ms ? head->due_ms - now_ms : 0;
  return 0;
}

/* Sends tasks to idle clients, picked at random, while the concurrency
 * limit allows. */
static int dispatch(fedc_server_engine *e, uint64_t now_ms,
                    fedc_server_actions *out)
{
  uint32_t limit = e->config.max_concurrency;
  size_t n = fedc_peers_idle_count(&e->peers);
  fedc_rng rng;
  int rc;

  if (n == 0 || (limit > 0 && e->stats.training_now >= limit))
    return 0;
  if (limit > 0 && n > limit - e->stats.training_now)
    n = limit - e->stats.training_now;

  /* All picks are drawn before the first task changes the idle set. */
  fedc_rng_seed2(&rng, e->config.seed ^ ASYNC_STREAM, e->next_task_seq);
  rc = fedc_sampler_draw(e, &rng, n);
  for (size_t i = 0; i < n && rc == 0; i++) {
    fedc_peer *peer = &e->peers.items[e->scratch[i]];

    rc = fedc_round_send_task(e, peer, ++e->async.next_task, now_ms, out);
    if (rc == 0)
      rc = queue_push(&e->async, now_ms + e->config.round_deadline_ms,
                      peer->id, peer->task_seq);
  }
  return rc;
}

static int push_evaluate(fedc_server_engine *e, const fedc_round_metrics *m,
                         fedc_server_actions *out)
{
  fedc_server_action *a = fedc_server_actions_push(out,
                                                   FEDC_SERVER_ACTION_EVALUATE);

  if (!a)
    return FEDC_ENOMEM;
  a->evaluate.round = m->round;
  a->evaluate.model = fedc_snapshot_ref(e->global);
  e->async.eval_round = m->round;
  e->async.eval_metrics = *m;
  return 0;
}

static int wait_for_evaluation(fedc_async_state *a,
                               const fedc_round_metrics *m)
{
  if (a->waiting_count == a->waiting_capacity) {
    size_t capacity = a->waiting_capacity ? 2 * a->waiting_capacity : 8;
    fedc_round_metrics *w = realloc(a->waiting, capacity * sizeof(*w));

    if (!w)
      return FEDC_ENOMEM;
    a->waiting = w;
    a->waiting_capacity = capacity;
  }
  a->waiting[a->waiting_count++] = *m;
  return 0;
}

/* Reports a closed round: evaluates it when due and no evaluation is
 * outstanding, queues it behind an outstanding one, or reports it now.
 * While an evaluation runs, rounds that fall due are not evaluated, except
 * the last one, which is evaluated after it. */
static int report(fedc_server_engine *e, const fedc_round_metrics *m,
                  fedc_server_actions *out)
{
  fedc_async_state *a = &e->async;
  bool due = m->aggregated && fedc_round_evaluation_due(e, m->round);

  if (a->eval_round == 0 && due)
    return push_evaluate(e, m, out);
  if (a->eval_round != 0)
    return wait_for_evaluation(a, m);
  return fedc_round_push_finished(m, out);
}

/* The reason of the DONE that ends the run: the last round, or a drain. */
static const char *final_reason(const fedc_server_engine *e)
{
  return e->draining ? "server shutting down" : "all rounds finished";
}

/* Ends the run once no evaluation is outstanding. */
static int done_unless_evaluating(fedc_server_engine *e,
                                  fedc_server_actions *out)
{
  if (e->async.eval_round != 0) {
    e->phase = FEDC_SERVER_EVALUATING;
    return 0;
  }
  return fedc_round_done(e, final_reason(e),
                         !e->draining && fedc_round_run_failed(e), out);
}

/* After the last round or a drain: cancels the tasks still out and ends
 * the run, or waits for the outstanding evaluation. */
static int close_final(fedc_server_engine *e, uint64_t now_ms,
                       fedc_server_actions *out)
{
  const char *reason = e->draining ? "server shutting down"
                                   : "training finished";
  int rc = fedc_round_cancel_timer(&e->async.timer, out);

  e->async.final_closed = true;
  for (size_t k = 0; k < e->peers.count && rc == 0; k++) {
    fedc_peer *peer = &e->peers.items[k];

    if (peer->state == FEDC_PEER_TRAINING ||
        peer->state == FEDC_PEER_UPLOADING)
      rc = fedc_round_cancel_task(e, peer, now_ms, reason, out);
  }
  if (rc < 0)
    return rc;
  return done_unless_evaluating(e, out);
}

/* Applies the buffer, then checkpoints the round and reports it. A buffer
 * whose step would put NaN or Inf into the model is dropped, and the
 * round is reported as abandoned without a checkpoint. */
static int apply_buffer(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out)
{
  fedc_round_state *r = &e->round;
  int rc = fedc_round_apply(e, false);

  if (rc < 0) {
    fedc_agg_begin(e->agg);
    fedc_round_fill_metrics(e, false, "update not applied: %s",
                            fedc_strerror(rc));
    e->stats.rounds_abandoned++;
    if (rc == FEDC_ENONFINITE)
      e->stats.rounds_rolled_back++;
    fedc_warn(LOG_COMPONENT, "round abandoned, model unchanged round=%llu "
              "reason=\"%s\"", (unsigned long long)r->id, r->metrics.reason);
  } else {
    fedc_round_fill_metrics(e, true, "%s", "");
    e->stats.rounds_aggregated++;
    fedc_debug(LOG_COMPONENT, "buffer applied round=%llu updates=%u",
               (unsigned long long)r->id, r->reported);
  }
  r->metrics.seconds = (double)(now_ms - r->started_ms) / 1000.0;
  e->last_round = r->id;

  rc = r->metrics.aggregated ? fedc_round_push_checkpoint(e, out) : 0;
  if (rc == 0)
    rc = report(e, &r->metrics, out);
  return rc;
}

/* Applies the full buffer and opens the next one, or ends the run after
 * the last round. */
static int flush(fedc_server_engine *e, uint64_t now_ms,
                 fedc_server_actions *out)
{
  int rc = apply_buffer(e, now_ms, out);

  if (rc < 0)
    return rc;
  if (e->config.total_rounds > 0 && e->round.id >= e->config.total_rounds)
    return close_final(e, now_ms, out);
  begin_buffer(e, now_ms);
  return 0;
}

/* Ends a drain: applies a partial buffer, if it holds any update, then
 * cancels the tasks still out and ends the run. */
static int finish_drain(fedc_server_engine *e, uint64_t now_ms,
                        fedc_server_actions *out)
{
  int rc = 0;

  if (e->phase == FEDC_SERVER_TRAINING && e->round.reported > 0)
    rc = apply_buffer(e, now_ms, out);
  if (rc < 0)
    return rc;
  return close_final(e, now_ms, out);
}

int fedc_async_drain(fedc_server_engine *e, uint64_t now_ms,
                     fedc_server_actions *out)
{
  if (e->async.final_closed || e->phase == FEDC_SERVER_DONE)
    return 0;
  if (e->stats.training_now == 0)
    return finish_drain(e, now_ms, out);
  return 0;
}

int fedc_async_drain_timeout(fedc_server_engine *e, uint64_t now_ms,
                             fedc_server_actions *out)
{
  e->drain_timer = 0;
  if (e->async.final_closed || e->phase == FEDC_SERVER_DONE)
    return 0;
  fedc_warn(LOG_COMPONENT, "drain timeout passed round=%llu tasks_out=%u",
            (unsigned long long)e->round.id, e->stats.training_now);
  return finish_drain(e, now_ms, out);
}

int fedc_async_settle(fedc_server_engine *e, uint64_t now_ms,
                      fedc_server_actions *out)
{
  uint32_t k = e->config.mode == FEDC_ROUNDS_FEDBUFF ? e->config.buffer_size
                                                     : 1;
  int rc;

  if (!e->started || e->phase == FEDC_SERVER_DONE || e->async.final_closed)
    return 0;
  if (e->draining) {
    if (e->round.reported >= k) {
      rc = flush(e, now_ms, out);
      if (rc < 0 || e->async.final_closed)
        return rc;
    }
    return fedc_async_drain(e, now_ms, out);
  }
  if (e->phase == FEDC_SERVER_WAITING) {
    uint64_t need = e->config.min_clients > 0 ? e->config.min_clients : 1;

    if (fedc_peers_idle_count(&e->peers) < need)
      return 0;
    begin_buffer(e, now_ms);
    e->phase = FEDC_SERVER_TRAINING;
    fedc_info(LOG_COMPONENT, "asynchronous training started round=%llu "
              "mode=%s idle=%zu", (unsigned long long)e->round.id,
              e->config.mode == FEDC_ROUNDS_FEDBUFF ? "fedbuff" : "fedasync",
              fedc_peers_idle_count(&e->peers));
  }
  if (e->round.reported >= k) {
    rc = flush(e, now_ms, out);
    if (rc < 0 || e->async.final_closed)
      return rc;
  }
  rc = dispatch(e, now_ms, out);
  if (rc == 0)
    rc = ensure_timer(e, now_ms, out);
  return rc;
}

int fedc_async_timer(fedc_server_engine *e, uint64_t now_ms, uint64_t timer,
                     fedc_server_actions *out)
{
  fedc_async_state *a = &e->async;
  int rc = 0;

  if (timer == 0 || timer != a->timer)
    return 0;
  a->timer = 0;
  while (a->count > 0 && a->queue[a->head].due_ms <= now_ms && rc == 0) {
    fedc_task_deadline d = a->queue[a->head];
    fedc_peer *peer = fedc_peers_find(&e->peers, d.peer);

    a->head = (a->head + 1) % a->capacity;
    a->count--;
    if (peer && peer->task_seq == d.seq &&
        (peer->state == FEDC_PEER_TRAINING ||
         peer->state == FEDC_PEER_UPLOADING)) {
      fedc_info(LOG_COMPONENT, "task deadline passed, cancelled client=%s "
                "task=%llu", peer->client_id,
                (unsigned long long)peer->task_round);
      rc = fedc_round_cancel_task(e, peer, now_ms, "task deadline passed",
                                  out);
    }
  }
  if (rc < 0)
    return rc;
  return fedc_async_settle(e, now_ms, out);
}

int fedc_async_evaluated(fedc_server_engine *e, uint64_t now_ms,
                         uint64_t round, const fedc_server_eval *result,
                         fedc_server_actions *out)
{
  fedc_async_state *a = &e->async;
  fedc_round_metrics m = a->eval_metrics;
  size_t i = 0;
  int rc;

  if (a->eval_round == 0 || round != a->eval_round)
    return FEDC_EINVAL;
  if (result) {
    m.evaluated = true;
    m.test_loss = result->loss;
    m.test_accuracy = result->accuracy;
  } else {
    fedc_warn(LOG_COMPONENT, "evaluation failed round=%llu",
              (unsigned long long)round);
  }
  a->eval_round = 0;
  rc = fedc_round_push_finished(&m, out);

  /* Only the last round, which closes the run, is still evaluated. */
  for (; i < a->waiting_count && rc == 0; i++) {
    const fedc_round_metrics *w = &a->waiting[i];

    if (a->final_closed && w->round == e->last_round && w->aggregated &&
        fedc_round_evaluation_due(e, w->round))
      rc = push_evaluate(e, w, out);
    else
      rc = fedc_round_push_finished(w, out);
  }
  a->waiting_count = 0;
  if (rc < 0)
    return rc;
  if (a->final_closed && a->eval_round == 0)
    return done_unless_evaluating(e, out);
  return fedc_async_settle(e, now_ms, out);
}

double fedc_async_update_scale(fedc_server_engine *e, const fedc_peer *peer)
{
  uint64_t staleness = e->round.id - peer->task_version;
  double w;

  if (e->config.max_staleness > 0 && staleness > e->config.max_staleness)
    return 0.0;
  w = fedc_staleness_weight(&e->config, staleness);
  if (e->config.mode == FEDC_ROUNDS_FEDASYNC)
    w *= e->config.async_alpha;
  return w;
}

int fedc_async_stop(fedc_server_engine *e, fedc_server_actions *out)
{
  fedc_async_state *a = &e->async;
  int rc = fedc_round_cancel_timer(&e->async.timer, out);

  /* An evaluation still running, and the rounds behind it, are reported
   * without test metrics. The open buffer is dropped: a resumed server
   * starts again after the last round closed. */
  if (rc == 0 && a->eval_round != 0)
    rc = fedc_round_push_finished(&a->eval_metrics, out);
  for (size_t i = 0; i < a->waiting_count && rc == 0; i++)
    rc = fedc_round_push_finished(&a->waiting[i], out);
  a->eval_round = 0;
  a->waiting_count = 0;
  fedc_agg_begin(e->agg);
  if (e->phase == FEDC_SERVER_TRAINING)
    fedc_info(LOG_COMPONENT, "buffer dropped for shutdown round=%llu "
              "updates=%u", (unsigned long long)e->round.id,
              e->round.reported);
  e->phase = FEDC_SERVER_WAITING;
  return rc;
}

void fedc_async_close(fedc_server_engine *e)
{
  free(e->async.queue);
  free(e->async.waiting);
  memset(&e->async, 0, sizeof(e->async));
}
