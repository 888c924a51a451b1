/* fedc-server's action driver: carries out the round engine's actions
 * (send, close, timers, evaluation on a worker thread, checkpoints, round
 * metrics) and keeps the Prometheus registry in step. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model.h"
#include "server/checkpoint.h"
#include "server/daemon_impl.h"
#include "util/error.h"
#include "util/log.h"

static void send_message(fedc_server_daemon *d, fedc_server_action *a)
{
  server_peer *peer = fedc_server_peer_find(d, a->send.peer);

  if (peer == NULL || peer->closed_by_engine)
    return;
  if (fedc_outbox_push_message(&peer->outbox, &a->send.message) < 0 ||
      fedc_outbox_pump(&peer->outbox, peer->conn) < 0)
    fedc_conn_close(peer->conn);
}

static void send_stream(fedc_server_daemon *d, fedc_server_action *a)
{
  server_peer *peer = fedc_server_peer_find(d, a->stream.peer);

  if (peer == NULL || peer->closed_by_engine)
    return;
  if (fedc_outbox_push_stream(&peer->outbox, &a->stream.stream) < 0 ||
      fedc_outbox_pump(&peer->outbox, peer->conn) < 0)
    fedc_conn_close(peer->conn);
}

void fedc_server_count_reject(fedc_server_daemon *d, const char *reason)
{
  char labels[96];

  snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
  fedc_metrics_add(&d->metrics, FEDC_METRIC_COUNTER,
                   "fedc_server_rejected_total", labels,
                   "Peers dropped for bad input, by reason.", 1);
}

/* Returns the client id for a log line: the engine's client_id, or when
 * that is "" the CN of the certificate that the TLS handshake verified. */
static const char *close_client_name(const char *client_id,
                                     const server_peer *peer)
{
  if (client_id[0] != '\0')
    return client_id;
  if (peer != NULL && fedc_conn_identity(peer->conn)[0] != '\0')
    return fedc_conn_identity(peer->conn);
  return "unknown";
}

/* Sends the Error or Goodbye queued before the CLOSE, then closes. */
static void close_peer(fedc_server_daemon *d, const fedc_server_action *a)
{
  server_peer *peer = fedc_server_peer_find(d, a->close.peer);
  const char *address = peer != NULL ? fedc_conn_peer(peer->conn) : "-";
  const char *client = close_client_name(a->close.client_id, peer);

  if (a->close.reject != FEDC_REJECT_NONE) {
    const char *name = fedc_server_reject_name(a->close.reject);

    fedc_warn(LOG_COMPONENT, "rejected client peer=%s client=%s reason=%s: %s",
              address, client, name, a->close.reason);
    fedc_server_count_reject(d, name);
  } else {
    fedc_info(LOG_COMPONENT, "closing peer=%s client=%s: %s", address, client,
              a->close.reason);
  }
  if (peer == NULL || peer->closed_by_engine)
    return;
  peer->closed_by_engine = true;
  fedc_outbox_flush_messages(&peer->outbox, peer->conn);
  fedc_conn_close(peer->conn);
}

/* Sends the Goodbye of a CLOSE_ALL to every connection that no CLOSE has
 * closed yet, which are the engine's peers, and closes each of them. Each
 * close is logged at debug level with the certificate CN, because the
 * engine no longer has the client ids. One info line sums them up, since
 * a line each at info would flood the log at 10^5 clients. */
static void close_all_peers(fedc_server_daemon *d, const fedc_server_action *a)
{
  size_t closed = 0;

  for (size_t i = 0; i < d->npeers; i++) {
    server_peer *peer = d->peers[i];
    fedc_message *bye;

    if (peer == NULL || peer->closed_by_engine)
      continue;
    fedc_debug(LOG_COMPONENT, "closing peer=%s client=%s: %s",
               fedc_conn_peer(peer->conn), close_client_name("", peer),
               a->close_all.reason);
    peer->closed_by_engine = true;
    bye = fedc_message_ref(a->close_all.message);
    fedc_outbox_push_message(&peer->outbox, &bye);
    fedc_outbox_flush_messages(&peer->outbox, peer->conn);
    fedc_conn_close(peer->conn);
    closed++;
  }
  fedc_info(LOG_COMPONENT, "closing every peer count=%zu: %s", closed,
            a->close_all.reason);
}

static void on_timer_closed(uv_handle_t *handle)
{
  free(handle->data);
}

/* Unlinks a timer and closes its handle; the close callback frees it. */
static void timer_release(fedc_server_daemon *d, server_timer *timer)
{
  for (server_timer **link = &d->timers; *link != NULL;
       link = &(*link)->next) {
    if (*link == timer) {
      *link = timer->next;
      break;
    }
  }
  uv_close((uv_handle_t *)&timer->handle, on_timer_closed);
}

void fedc_server_timers_close_all(fedc_server_daemon *d)
{
  while (d->timers != NULL)
    timer_release(d, d->timers);
}

static void on_timer(uv_timer_t *handle)
{
  server_timer *timer = handle->data;
  fedc_server_daemon *d = timer->daemon;
  uint64_t id = timer->id;
  int rc;

  timer_release(d, timer);
  rc = fedc_server_engine_timer(d->engine, uv_now(d->loop), id, &d->actions);
  fedc_server_daemon_drain(d, rc);
}

static void start_timer(fedc_server_daemon *d, const fedc_server_action *a)
{
  server_timer *timer = calloc(1, sizeof(*timer));

  if (timer == NULL) {
    /* Without the deadline the round still closes when every sampled
     * client has reported or been lost. */
    fedc_error(LOG_COMPONENT, "out of memory for the round deadline timer");
    return;
  }
  timer->id = a->timer.id;
  timer->daemon = d;
  timer->handle.data = timer;
  timer->next = d->timers;
  d->timers = timer;
  uv_timer_init(d->loop, &timer->handle);
  uv_timer_start(&timer->handle, on_timer, a->timer.delay_ms, 0);
}

static void cancel_timer(fedc_server_daemon *d, const fedc_server_action *a)
{
  for (server_timer *t = d->timers; t != NULL; t = t->next) {
    if (t->id == a->timer.id) {
      timer_release(d, t);
      return;
    }
  }
}

/* Runs on a worker thread: touches only the eval fields and the test set,
 * which the loop thread leaves alone while eval_running is set. */
static void evaluate_work(uv_work_t *req)
{
  fedc_server_daemon *d = req->data;
  fedc_model *model = NULL;
  fedc_dataset_view view = fedc_dataset_all(&d->test_set);
  fedc_eval_stats stats;
  int rc = fedc_model_new(d->options->model, d->options->seed, &model);

  if (rc == 0)
    rc = fedc_model_set_params(model, fedc_snapshot_tensors(d->eval_model));
  if (rc == 0)
    rc = fedc_model_evaluate(model, &view, &stats);
  if (rc == 0) {
    d->eval_result.loss = stats.loss;
    d->eval_result.accuracy = stats.accuracy;
  }
  d->eval_status = rc;
  fedc_model_free(&model);
}

static void evaluate_done(uv_work_t *req, int status)
{
  fedc_server_daemon *d = req->data;
  int ok = status == 0 && d->eval_status == 0;
  int rc = 0;

  d->eval_running = false;
  fedc_snapshot_unref(&d->eval_model);
  if (!ok)
    fedc_error(LOG_COMPONENT, "evaluation failed round=%" PRIu64 ": %s",
               d->eval_round, status < 0 ? uv_strerror(status)
                                         : fedc_strerror(d->eval_status));
  /* A shutdown while the worker ran has already closed the round. In the
   * asynchronous modes training goes on during the evaluation, so the
   * phase does not show whether one is running. */
  if (fedc_server_engine_phase(d->engine) != FEDC_SERVER_DONE)
    rc = fedc_server_engine_evaluated(d->engine, uv_now(d->loop),
                                      d->eval_round,
                                      ok ? &d->eval_result : NULL,
                                      &d->actions);
  fedc_server_daemon_drain(d, rc);
}

static void evaluate(fedc_server_daemon *d, fedc_server_action *a)
{
  int rc;

  if (!d->has_test_set || d->eval_running) {
    rc = fedc_server_engine_evaluated(d->engine, uv_now(d->loop),
                                      a->evaluate.round, NULL, &d->actions);
    if (rc < 0) {
      fedc_error(LOG_COMPONENT, "round engine failed after a skipped "
                 "evaluation round=%" PRIu64 ": %s", a->evaluate.round,
                 fedc_strerror(rc));
      fedc_server_daemon_fail(d, "the round engine failed");
    }
    return;
  }
  d->eval_round = a->evaluate.round;
  d->eval_model = a->evaluate.model;
  a->evaluate.model = NULL;
  d->eval_work.data = d;
  d->eval_running = true;
  rc = uv_queue_work(d->loop, &d->eval_work, evaluate_work, evaluate_done);
  if (rc < 0) {
    d->eval_status = FEDC_EIO;
    d->eval_running = false;
    evaluate_done(&d->eval_work, rc);
  }
}

/* Writes the checkpoint on the loop thread. */
static void checkpoint(fedc_server_daemon *d, const fedc_server_action *a)
{
  fedc_checkpoint ckpt;
  const fedc_server_options *o = d->options;
  char reason[PATH_MAX + 128];

  if (o->checkpoint_dir == NULL)
    return;
  /* NOTE: a model of hundreds of MiB stalls the loop while it is written;
   * a worker thread would need the writes of consecutive rounds ordered. */
  memset(&ckpt, 0, sizeof(ckpt));
  ckpt.round = a->checkpoint.round;
  ckpt.seed = o->seed;
  snprintf(ckpt.model_spec, sizeof(ckpt.model_spec), "%s", o->model);
  snprintf(ckpt.strategy, sizeof(ckpt.strategy), "%s", o->strategy);
  /* Shallow copies: the checkpoint only reads the lists, never frees them. */
  ckpt.model = *fedc_snapshot_tensors(a->checkpoint.model);
  ckpt.state = a->checkpoint.state;
  if (fedc_checkpoint_save(o->checkpoint_dir, &ckpt) == 0) {
    d->checkpoint_written = true;
    d->checkpoint_round = ckpt.round;
    fedc_info(LOG_COMPONENT, "checkpoint written round=%" PRIu64 " dir=%s",
              ckpt.round, o->checkpoint_dir);
    return;
  }
  /* fedc_checkpoint_save() gives no system error, so the startup check
   * runs again to find one. Training goes on, since a later write may
   * succeed, and the exit status reports the failure. */
  d->checkpoint_failures++;
  if (fedc_server_check_checkpoint_dir(o->checkpoint_dir, reason,
                                       sizeof(reason)) == 0)
    snprintf(reason, sizeof(reason), "writing the files failed");
  fedc_error(LOG_COMPONENT, "checkpoint of round=%" PRIu64 " not written: %s "
             "(%" PRIu64 " failed so far); training goes on and the server "
             "will exit with status 1", ckpt.round, reason,
             d->checkpoint_failures);
}

static void set_gauge(fedc_server_daemon *d, const char *name,
                      const char *help, double value)
{
  fedc_metric *m = fedc_metrics_get(&d->metrics, FEDC_METRIC_GAUGE, name,
                                    NULL, help);

  if (m != NULL)
    m->value = value;
}

static void round_finished(fedc_server_daemon *d,
                           const fedc_round_metrics *m)
{
  fedc_info(LOG_COMPONENT, "round finished round=%" PRIu64 " aggregated=%s "
            "test_accuracy=%.4f test_loss=%.4f clients_sampled=%" PRIu32
            " clients_reported=%" PRIu32 " seconds=%.2f", m->round,
            m->aggregated ? "yes" : "no",
            m->evaluated ? m->test_accuracy : NAN,
            m->evaluated ? m->test_loss : NAN, m->clients_sampled,
            m->clients_reported, m->seconds);
  fedc_round_log_write(&d->round_log, m);
  fedc_metrics_add(&d->metrics, FEDC_METRIC_COUNTER, "fedc_server_rounds_total",
                   m->aggregated ? "result=\"aggregated\""
                                 : "result=\"abandoned\"",
                   "Rounds finished, by result.", 1);
  set_gauge(d, "fedc_server_last_round", "Id of the last finished round.",
            (double)m->round);
  if (m->evaluated) {
    set_gauge(d, "fedc_server_test_accuracy",
              "Test accuracy of the global model after the last round.",
              m->test_accuracy);
    set_gauge(d, "fedc_server_test_loss",
              "Test loss of the global model after the last round.",
              m->test_loss);
  }
}

static void carry_out(fedc_server_daemon *d, fedc_server_action *a)
{
  switch (a->kind) {
  case FEDC_SERVER_ACTION_SEND:
    send_message(d, a);
    break;
  case FEDC_SERVER_ACTION_SEND_STREAM:
    send_stream(d, a);
    break;
  case FEDC_SERVER_ACTION_CLOSE:
    close_peer(d, a);
    break;
  case FEDC_SERVER_ACTION_CLOSE_ALL:
    close_all_peers(d, a);
    break;
  case FEDC_SERVER_ACTION_START_TIMER:
    start_timer(d, a);
    break;
  case FEDC_SERVER_ACTION_CANCEL_TIMER:
    cancel_timer(d, a);
    break;
  case FEDC_SERVER_ACTION_EVALUATE:
    evaluate(d, a);
    break;
  case FEDC_SERVER_ACTION_CHECKPOINT:
    checkpoint(d, a);
    break;
  case FEDC_SERVER_ACTION_ROUND_FINISHED:
    round_finished(d, &a->round_finished);
    break;
  case FEDC_SERVER_ACTION_DONE:
    if (a->done.failed) {
      fedc_error(LOG_COMPONENT, "stopping, training failed: %s",
                 a->done.reason);
      fedc_server_daemon_fail(d, "training failed (see the error above)");
    } else {
      fedc_info(LOG_COMPONENT, "stopping: %s", a->done.reason);
    }
    fedc_server_daemon_stop(d);
    break;
  }
}

void fedc_server_daemon_drain(fedc_server_daemon *d, int rc)
{
  fedc_server_actions batch;

  /* An action may feed the engine another event (an evaluation that
   * cannot run), which appends to d->actions: take the list out first. */
  while (d->actions.count > 0) {
    batch = d->actions;
    fedc_server_actions_init(&d->actions);
    for (size_t i = 0; i < batch.count; i++)
      carry_out(d, &batch.items[i]);
    fedc_server_actions_close(&batch);
  }
  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "round engine failed, stopping: %s",
               fedc_strerror(rc));
    fedc_server_daemon_fail(d, "the round engine failed");
    fedc_server_daemon_stop(d);
  }
}

static void set_counter(fedc_server_daemon *d, const char *name,
                        const char *labels, const char *help, double value)
{
  fedc_metric *m = fedc_metrics_get(&d->metrics, FEDC_METRIC_COUNTER, name,
                                    labels, help);

  if (m != NULL)
    m->value = value;
}

static void refresh_listener(fedc_server_daemon *d)
{
  static const char rejected_help[] = "Peers dropped for bad input, by reason.";
  static const char accept_help[] =
      "Failed accept(2) calls on the client port, by reason.";
  fedc_listener_stats ls;

  if (d->listener == NULL)
    return;
  fedc_listener_get_stats(d->listener, &ls);
  set_counter(d, "fedc_server_connections_total", NULL,
              "TCP connections accepted.", (double)ls.accepted);
  set_counter(d, "fedc_server_rejected_total", "reason=\"tls_handshake\"",
              rejected_help, (double)ls.failed_tls);
  set_counter(d, "fedc_server_rejected_total", "reason=\"handshake_timeout\"",
              rejected_help, (double)ls.failed_timeout);
  set_counter(d, "fedc_server_rejected_total", "reason=\"handshake_io\"",
              rejected_help, (double)ls.failed_io);
  set_counter(d, "fedc_server_rejected_total", "reason=\"handshake_busy\"",
              rejected_help, (double)ls.rejected_busy);
  set_counter(d, "fedc_server_rejected_total",
              "reason=\"handshake_ip_limit\"", rejected_help,
              (double)ls.rejected_per_ip);
  set_counter(d, "fedc_server_accept_errors_total", "reason=\"no_fd\"",
              accept_help, (double)ls.accept_no_fd);
  set_counter(d, "fedc_server_accept_errors_total", "reason=\"other\"",
              accept_help, (double)ls.accept_failed);
}

void fedc_server_refresh_metrics(fedc_server_daemon *d)
{
  const fedc_server_stats *s = fedc_server_engine_stats(d->engine);
  uint64_t sent = d->closed_bytes_sent;
  uint64_t received = d->closed_bytes_received;

  for (size_t i = 0; i < d->npeers; i++) {
    fedc_conn_stats cs;

    if (d->peers[i] == NULL)
      continue;
    fedc_conn_get_stats(d->peers[i]->conn, &cs);
    sent += cs.wire_bytes_sent;
    received += cs.wire_bytes_received;
  }
  refresh_listener(d);
  if (d->options->checkpoint_dir != NULL)
    set_counter(d, "fedc_server_checkpoint_failures_total", NULL,
                "Checkpoint writes that failed.",
                (double)d->checkpoint_failures);
  set_counter(d, "fedc_server_bytes_sent_total", NULL,
              "TLS bytes sent to clients.", (double)sent);
  set_counter(d, "fedc_server_bytes_received_total", NULL,
              "TLS bytes received from clients.", (double)received);
  set_counter(d, "fedc_server_results_accepted_total", NULL,
              "Client updates folded into an aggregate.",
              (double)s->results_accepted);
  set_counter(d, "fedc_server_clients_lost_total", NULL,
              "Sampled clients lost before they reported.",
              (double)s->clients_lost);
  set_counter(d, "fedc_server_client_errors_total", NULL,
              "Error messages from clients, such as a failed local training.",
              (double)s->client_errors);
  set_counter(d, "fedc_server_tasks_sent_total", NULL,
              "FitTasks sent to clients.", (double)s->tasks_sent);
  set_counter(d, "fedc_server_tasks_cancelled_total", NULL,
              "Tasks withdrawn by a Cancel: stragglers of a closed round and "
              "expired asynchronous tasks.", (double)s->tasks_cancelled);
  set_counter(d, "fedc_server_results_late_total", NULL,
              "Results of cancelled tasks, discarded.",
              (double)s->results_late);
  set_counter(d, "fedc_server_rounds_rolled_back_total", NULL,
              "Rounds whose new model was discarded for NaN or Inf in it or "
              "in its test loss; also counted as abandoned.",
              (double)s->rounds_rolled_back);
  set_counter(d, "fedc_server_results_too_stale_total", NULL,
              "Asynchronous updates discarded for exceeding max_staleness.",
              (double)s->results_too_stale);
  set_gauge(d, "fedc_server_clients_training", "Clients with a task now.",
            (double)s->training_now);
  set_gauge(d, "fedc_server_clients", "Clients registered by a Hello.",
            (double)s->clients);
  set_gauge(d, "fedc_server_round", "Id of the open or last closed round.",
            (double)fedc_server_engine_round(d->engine));
}
