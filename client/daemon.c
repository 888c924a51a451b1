/* fedc-client's daemon: the connection to the server, reconnects, signals
 * and the engine's send and close actions. Training and evaluation jobs
 * are in daemon_jobs.c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "client/daemon_impl.h"
#include "net/frame.h"
#include "net/tls.h"
#include "nn/model.h"
#include "util/error.h"
#include "util/log.h"

static void connect_to_server(fedc_client_daemon *d);

static void on_reconnect_timer(uv_timer_t *timer)
{
  connect_to_server(timer->data);
}

static void schedule_reconnect(fedc_client_daemon *d, const char *reason)
{
  uint64_t delay = fedc_backoff_next(&d->backoff);

  fedc_info(LOG_COMPONENT, "reconnecting in %" PRIu64 " ms attempt=%" PRIu32
            " server=%s:%lu: %s", delay, d->backoff.attempt,
            d->options->server, d->options->port, reason);
  uv_timer_start(&d->reconnect, on_reconnect_timer, delay, 0);
}

static void close_handle(uv_handle_t *handle)
{
  if (handle->loop != NULL && !uv_is_closing(handle))
    uv_close(handle, NULL);
}

/* Ends the run: the loop stops once the connection and the jobs are done. */
static void stop(fedc_client_daemon *d, int status)
{
  if (!d->stopping)
    d->exit_status = status;
  d->stopping = true;
  close_handle((uv_handle_t *)&d->reconnect);
  close_handle((uv_handle_t *)&d->sigterm);
  close_handle((uv_handle_t *)&d->sigint);
  close_handle((uv_handle_t *)&d->sighup);
  if (d->conn != NULL) {
    fedc_outbox_flush_messages(&d->outbox, d->conn);
    fedc_conn_close(d->conn);
  }
}

static void on_open(fedc_conn *conn)
{
  fedc_client_daemon *d = fedc_conn_data(conn);
  int rc;

  fedc_info(LOG_COMPONENT, "connected server=%s peer=%s",
            fedc_conn_identity(conn), fedc_conn_peer(conn));
  rc = fedc_client_engine_connected(d->engine, uv_now(d->loop), &d->actions);
  fedc_client_daemon_drain(d, rc);
}

static void on_frame(fedc_conn *conn, Fedc__Envelope *env)
{
  fedc_client_daemon *d = fedc_conn_data(conn);
  enum fedc_client_state before = fedc_client_engine_state(d->engine);
  int rc = fedc_client_engine_received(d->engine, uv_now(d->loop), env,
                                       &d->actions);

  fedc_frame_envelope_free(&env);
  /* The backoff restarts at the Welcome, not at the TLS handshake. With
   * TLS 1.3 a server rejects the client certificate after the client's
   * handshake is done, and such a server must see growing retry delays. */
  if (before == FEDC_CLIENT_HELLO_SENT &&
      fedc_client_engine_state(d->engine) == FEDC_CLIENT_IDLE)
    fedc_backoff_reset(&d->backoff);
  fedc_client_daemon_drain(d, rc);
}

static void on_drain(fedc_conn *conn)
{
  fedc_client_daemon *d = fedc_conn_data(conn);

  if (fedc_outbox_pump(&d->outbox, conn) < 0)
    fedc_conn_close(conn);
}

static void on_close(fedc_conn *conn, enum fedc_conn_close_reason reason,
                     int err)
{
  fedc_client_daemon *d = fedc_conn_data(conn);
  char reason_text[96];
  int rc;

  d->conn = NULL;
  fedc_outbox_close(&d->outbox);
  rc = fedc_client_engine_lost(d->engine, uv_now(d->loop), &d->actions);
  fedc_client_daemon_drain(d, rc);
  if (d->stopping)
    return;
  snprintf(reason_text, sizeof(reason_text), "connection closed reason=%s",
           fedc_conn_close_reason_name(reason));
  schedule_reconnect(d, reason_text);
}

static const fedc_conn_callbacks callbacks = {
  .on_open = on_open,
  .on_frame = on_frame,
  .on_drain = on_drain,
  .on_close = on_close,
};

static void connect_to_server(fedc_client_daemon *d)
{
  const fedc_client_options *o = d->options;
  fedc_conn_options co;
  int rc;

  if (d->stopping || d->conn != NULL)
    return;
  memset(&co, 0, sizeof(co));
  co.max_frame = (uint32_t)o->max_frame_bytes;
  rc = fedc_conn_connect(d->loop, d->tls, o->server, (uint16_t)o->port, &co,
                         &callbacks, d, &d->conn);
  if (rc < 0) {
    d->conn = NULL;
    schedule_reconnect(d, fedc_strerror(rc));
  }
}

/* Carries out a CLOSE: a Goodbye ends the run, so does a server that
 * speaks another protocol version; anything else reconnects. */
static void close_connection(fedc_client_daemon *d, const fedc_client_action *a)
{
  if (a->close.goodbye) {
    fedc_info(LOG_COMPONENT, "%s", a->close.reason);
    stop(d, 0);
    return;
  }
  if (!a->close.retry) {
    fedc_error(LOG_COMPONENT, "giving up: %s", a->close.reason);
    stop(d, 1);
    return;
  }
  fedc_warn(LOG_COMPONENT, "closing the connection: %s", a->close.reason);
  if (d->conn != NULL) {
    fedc_outbox_flush_messages(&d->outbox, d->conn);
    fedc_conn_close(d->conn);
  }
}

static void queue_and_pump(fedc_client_daemon *d, fedc_client_action *a)
{
  int rc;

  if (d->conn == NULL)
    return;
  if (a->kind == FEDC_CLIENT_ACTION_SEND)
    rc = fedc_outbox_push_message(&d->outbox, &a->send.message);
  else
    rc = fedc_outbox_push_stream(&d->outbox, &a->stream.stream);
  if (rc == 0)
    rc = fedc_outbox_pump(&d->outbox, d->conn);
  if (rc < 0)
    fedc_conn_close(d->conn);
}

static void carry_out(fedc_client_daemon *d, fedc_client_action *a)
{
  switch (a->kind) {
  case FEDC_CLIENT_ACTION_SEND:
  case FEDC_CLIENT_ACTION_SEND_STREAM:
    queue_and_pump(d, a);
    break;
  case FEDC_CLIENT_ACTION_CLOSE:
    close_connection(d, a);
    break;
  case FEDC_CLIENT_ACTION_TRAIN:
    fedc_client_start_training(d, a);
    break;
  case FEDC_CLIENT_ACTION_EVALUATE:
    fedc_client_start_evaluation(d, a);
    break;
  }
}

void fedc_client_daemon_drain(fedc_client_daemon *d, int rc)
{
  fedc_client_actions batch;

  /* A job that cannot start reports to the engine at once, which appends
   * to d->actions: take the list out first. */
  while (d->actions.count > 0) {
    batch = d->actions;
    fedc_client_actions_init(&d->actions);
    for (size_t i = 0; i < batch.count; i++)
      carry_out(d, &batch.items[i]);
    fedc_client_actions_close(&batch);
  }
  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "session engine failed, stopping: %s",
               fedc_strerror(rc));
    stop(d, 1);
  }
}

static void on_signal(uv_signal_t *handle, int signum)
{
  fedc_client_daemon *d = handle->data;

  fedc_info(LOG_COMPONENT, "received %s, stopping", strsignal(signum));
  stop(d, 0);
}

/* Checks that the subject CN of tls's certificate is the configured id,
 * because the server rejects a Hello whose client id differs from it. */
static int check_identity(const fedc_client_options *o, SSL_CTX *tls)
{
  X509 *cert = SSL_CTX_get0_certificate(tls);
  char cn[FEDC_TLS_IDENTITY_SIZE] = "";

  if (cert == NULL ||
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                cn, sizeof(cn)) <= 0) {
    fedc_error(LOG_COMPONENT, "certificate %s has no subject CN; the CN must "
               "be the client id %s", o->cert, o->id);
    return FEDC_EINVAL;
  }
  if (strcmp(cn, o->id) != 0) {
    fedc_error(LOG_COMPONENT, "id %s does not match the CN %s of certificate "
               "%s; set id to the certificate's CN", o->id, cn, o->cert);
    return FEDC_EINVAL;
  }
  return 0;
}

/* Reloads the certificate, key and CA for the next connection, while an
 * open connection keeps the ones it started with. Files that do not load,
 * or a certificate whose CN is not the id, leave the previous ones in use. */
static void on_reload_signal(uv_signal_t *handle, int signum)
{
  fedc_client_daemon *d = handle->data;
  const fedc_client_options *o = d->options;
  fedc_tls_config files = { o->cert, o->key, o->ca };
  SSL_CTX *fresh = NULL;
  int rc = fedc_tls_ctx_new(FEDC_TLS_CLIENT, &files, &fresh);

  if (rc == 0)
    rc = check_identity(o, fresh);
  if (rc < 0) {
    fedc_warn(LOG_COMPONENT, "%s: certificate reload failed, keeping the "
              "previous certificates: %s", strsignal(signum),
              fedc_strerror(rc));
    fedc_tls_ctx_free(&fresh);
    return;
  }
  /* The open connection's SSL holds its own reference to the old one. */
  fedc_tls_ctx_free(&d->tls);
  d->tls = fresh;
  fedc_info(LOG_COMPONENT, "reloaded certificates cert=%s ca=%s for the "
            "next connection", o->cert, o->ca);
}

static void start_signals(fedc_client_daemon *d)
{
  uv_signal_t *handles[] = { &d->sigterm, &d->sigint, &d->sighup };
  int signums[] = { SIGTERM, SIGINT, SIGHUP };

  for (size_t i = 0; i < 3; i++) {
    uv_signal_init(d->loop, handles[i]);
    handles[i]->data = d;
    uv_signal_start(handles[i],
                    signums[i] == SIGHUP ? on_reload_signal : on_signal,
                    signums[i]);
  }
}

static int create_engine(fedc_client_daemon *d)
{
  fedc_client_config config;
  int rc;

  fedc_client_config_default(&config);
  config.hello.client_id = d->options->id;
  config.hello.num_examples = d->data.n;
  config.hello.trainer = d->options->trainer;
  config.hello.platform = "linux";
  config.hello.cpu_cores = uv_available_parallelism();
  config.hello.memory_bytes = uv_get_total_memory();
  config.hello.relative_speed = 1.0;
  config.check_task = fedc_client_check_task;
  config.check_context = d;
  rc = fedc_client_engine_new(&config, &d->engine);
  if (rc < 0)
    fedc_error(LOG_COMPONENT, "cannot create the session engine: %s",
               fedc_strerror(rc));
  return rc;
}

static int load_data(fedc_client_daemon *d)
{
  int rc = fedc_dataset_load(d->options->data, &d->data);

  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "cannot load data %s: %s", d->options->data,
               fedc_strerror(rc));
    return rc;
  }
  d->has_data = true;
  fedc_info(LOG_COMPONENT, "data loaded path=%s examples=%" PRIu64
            " features=%" PRIu32 " classes=%" PRIu32, d->options->data,
            d->data.n, d->data.dim, d->data.num_classes);
  return 0;
}

static int setup(fedc_client_daemon *d)
{
  const fedc_client_options *o = d->options;
  fedc_tls_config files = { o->cert, o->key, o->ca };
  int rc = fedc_tls_ctx_new(FEDC_TLS_CLIENT, &files, &d->tls);

  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "cannot load TLS files cert=%s key=%s ca=%s: %s",
               o->cert, o->key, o->ca, fedc_strerror(rc));
    return rc;
  }
  rc = check_identity(o, d->tls);
  if (rc == 0)
    rc = load_data(d);
  if (rc == 0)
    rc = fedc_client_jobs_init(d);
  if (rc == 0)
    rc = create_engine(d);
  if (rc < 0)
    return rc;

  fedc_nn_set_threads((int)o->threads);
  /* Different clients draw different reconnect delays. */
  fedc_backoff_init(&d->backoff, o->reconnect_min, o->reconnect_max,
                    uv_hrtime() ^ (uint64_t)uv_os_getpid());
  uv_timer_init(d->loop, &d->reconnect);
  d->reconnect.data = d;
  start_signals(d);
  fedc_info(LOG_COMPONENT, "starting client=%s server=%s:%lu", o->id,
            o->server, o->port);
  connect_to_server(d);
  return 0;
}

int fedc_client_daemon_run(const fedc_client_options *options)
{
  fedc_client_daemon d;
  uv_loop_t loop;

  memset(&d, 0, sizeof(d));
  d.options = options;
  d.loop = &loop;
  fedc_outbox_init(&d.outbox, 0);
  fedc_client_actions_init(&d.actions);
  if (uv_loop_init(&loop) < 0) {
    fedc_error(LOG_COMPONENT, "cannot create the event loop");
    return 1;
  }
  if (setup(&d) < 0)
    stop(&d, 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_run(&loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop) < 0)
    fedc_warn(LOG_COMPONENT, "event loop closed with handles still open");

  fedc_client_engine_free(&d.engine);
  fedc_client_actions_close(&d.actions);
  fedc_outbox_close(&d.outbox);
  fedc_tls_ctx_free(&d.tls);
  fedc_client_jobs_close(&d);
  if (d.has_data)
    fedc_dataset_close(&d.data);
  fedc_info(LOG_COMPONENT, "exiting status=%d", d.exit_status);
  return d.exit_status;
}
