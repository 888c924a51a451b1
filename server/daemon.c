/* fedc-server's daemon: setup, signals and teardown around the libuv loop.
 * Connections are in daemon_conn.c and the engine's actions in
 * daemon_actions.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agg/agg.h"
#include "net/tls.h"
#include "nn/model.h"
#include "server/checkpoint.h"
#include "server/daemon_impl.h"
#include "util/error.h"
#include "util/log.h"

static fedc_tls_config tls_files(const fedc_server_options *o)
{
  fedc_tls_config files = { o->cert, o->key, o->ca };

  return files;
}

/* Checks a checkpoint against the configuration before resuming from it. */
static int check_checkpoint(const fedc_server_options *o,
                            const fedc_checkpoint *ckpt,
                            const fedc_tensor_list *fresh)
{
  if (strcmp(ckpt->model_spec, o->model) != 0) {
    fedc_error(LOG_COMPONENT, "checkpoint in %s is for model %s but the "
               "configured model is %s; set model to match or move the "
               "checkpoint away to start over", o->checkpoint_dir,
               ckpt->model_spec, o->model);
    return FEDC_EINVAL;
  }
  if (fedc_tensor_list_check_layout(&ckpt->model, fresh) < 0) {
    fedc_error(LOG_COMPONENT, "checkpoint in %s does not match the tensors "
               "of model %s; move it away to start over", o->checkpoint_dir,
               o->model);
    return FEDC_ESHAPE;
  }
  return 0;
}

/* Fills model with the checkpoint's weights when checkpoint_dir contains one,
 * and sets *completed to its round; otherwise leaves the fresh model. */
static int resume(const fedc_server_options *o, fedc_tensor_list *model,
                  fedc_tensor_list *state, uint64_t *completed)
{
  fedc_checkpoint ckpt;
  int rc;

  fedc_checkpoint_init(&ckpt);
  rc = fedc_checkpoint_load(o->checkpoint_dir, &ckpt);
  if (rc == FEDC_ENOENT) {
    fedc_info(LOG_COMPONENT, "no checkpoint in %s, starting at round 1",
              o->checkpoint_dir);
    return 0;
  }
  if (rc < 0)
    fedc_error(LOG_COMPONENT, "cannot read the checkpoint in %s: %s; fix "
               "the files or move them away to start over",
               o->checkpoint_dir, fedc_strerror(rc));
  if (rc == 0)
    rc = check_checkpoint(o, &ckpt, model);
  if (rc < 0) {
    fedc_checkpoint_close(&ckpt);
    return rc;
  }
  if (strcmp(ckpt.strategy, o->strategy) != 0 || !ckpt.has_state)
    fedc_warn(LOG_COMPONENT, "checkpoint has no server state for strategy %s; "
              "its optimizer starts afresh", o->strategy);
  else
    fedc_tensor_list_copy(state, &ckpt.state);
  fedc_tensor_list_close(model);
  *model = ckpt.model;
  fedc_tensor_list_init(&ckpt.model);
  *completed = ckpt.round;
  fedc_info(LOG_COMPONENT, "resuming at round %" PRIu64 " from %s/%s",
            ckpt.round + 1, o->checkpoint_dir, FEDC_CHECKPOINT_MODEL_FILE);
  fedc_checkpoint_close(&ckpt);
  return 0;
}

/* Writes and removes a probe file in dir. Returns 0 or an errno value. */
static int probe_write(const char *dir)
{
  char path[PATH_MAX];
  int fd, err = 0;

  if (snprintf(path, sizeof(path), "%s/.fedc-write-probe", dir) >=
      (int)sizeof(path))
    return ENAMETOOLONG;
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return errno;
  if (write(fd, "probe\n", 6) != 6 || fsync(fd) < 0)
    err = errno != 0 ? errno : EIO;
  if (close(fd) < 0 && err == 0)
    err = errno;
  if (unlink(path) < 0 && err == 0)
    err = errno;
  return err;
}

int fedc_server_check_checkpoint_dir(const char *dir, char *reason,
                                     size_t size)
{
  struct stat st;
  int err = 0;

  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    err = errno;
  else if (stat(dir, &st) < 0)
    err = errno;
  else if (!S_ISDIR(st.st_mode))
    err = ENOTDIR;
  if (err != 0) {
    snprintf(reason, size, "cannot use checkpoint_dir=%s: %s", dir,
             strerror(err));
    return FEDC_EIO;
  }
  err = probe_write(dir);
  if (err != 0) {
    snprintf(reason, size, "cannot write in checkpoint_dir=%s: %s", dir,
             strerror(err));
    return FEDC_EIO;
  }
  return 0;
}

/* Stops the server at startup when checkpoints cannot be written, instead
 * of losing every round's checkpoint. */
static int check_checkpoint_dir(const char *dir)
{
  char reason[PATH_MAX + 128];

  if (fedc_server_check_checkpoint_dir(dir, reason, sizeof(reason)) == 0)
    return 0;
  fedc_error(LOG_COMPONENT, "%s; point it at a folder whose parent exists "
             "and that the server may write", reason);
  return FEDC_EIO;
}

static void engine_config(const fedc_server_daemon *d,
                          fedc_server_engine_config *c)
{
  const fedc_server_options *o = d->options;
  enum fedc_agg_strategy strategy = FEDC_AGG_FEDAVG;

  fedc_server_engine_config_default(c);
  c->min_clients = (uint32_t)o->min_clients;
  c->fraction_fit = o->fraction_fit;
  c->quorum_fraction = o->quorum;
  c->quorum_count = 1;
  c->close_at_quorum = o->close_at_quorum;
  c->round_deadline_ms = o->round_timeout;
  c->total_rounds = o->rounds;
  c->evaluate_every = d->has_test_set ? 1 : 0;
  c->seed = o->seed;
  c->train.local_epochs = (uint32_t)o->local_epochs;
  c->train.batch_size = (uint32_t)o->batch_size;
  c->train.learning_rate = (float)o->learning_rate;
  c->train.momentum = (float)o->momentum;
  c->train.weight_decay = (float)o->weight_decay;
  c->train.proximal_mu = (float)o->proximal_mu;
  c->train.seed = o->seed;
  c->model_spec = o->model;
  /* The strategy name was checked when the options were parsed. */
  fedc_agg_strategy_parse(o->strategy, &strategy);
  fedc_agg_config_default(&c->agg, strategy);
  /* Sampling, asynchronous rounds and strategy parameters; their names
   * were checked with the options too. */
  fedc_server_options_schedule(o, c);
  c->chunk_bytes = (uint32_t)o->chunk_bytes;
  c->max_frame_bytes = (uint32_t)o->max_frame_bytes;
}

static int create_engine(fedc_server_daemon *d)
{
  const fedc_server_options *o = d->options;
  fedc_server_engine_config config;
  fedc_tensor_list model, state;
  fedc_model *init = NULL;
  uint64_t completed = 0;
  int rc;

  fedc_tensor_list_init(&model);
  fedc_tensor_list_init(&state);
  rc = fedc_model_new(o->model, o->seed, &init);
  if (rc < 0)
    fedc_error(LOG_COMPONENT, "invalid model spec %s: %s", o->model,
               fedc_strerror(rc));
  if (rc == 0)
    rc = fedc_model_get_params(init, &model);
  if (rc == 0 && d->has_test_set &&
      fedc_model_input_dim(init) != d->test_set.dim) {
    fedc_error(LOG_COMPONENT, "test set %s has %u features but model %s "
               "expects %u", o->test_data, d->test_set.dim, o->model,
               fedc_model_input_dim(init));
    rc = FEDC_ESHAPE;
  }
  if (rc == 0 && o->checkpoint_dir != NULL)
    rc = resume(o, &model, &state, &completed);
  if (rc == 0) {
    engine_config(d, &config);
    rc = fedc_server_engine_new(&config, &model, completed,
                                state.count > 0 ? &state : NULL, &d->engine);
    if (rc < 0)
      fedc_error(LOG_COMPONENT, "cannot create the round engine: %s",
                 fedc_strerror(rc));
  }
  fedc_model_free(&init);
  fedc_tensor_list_close(&model);
  fedc_tensor_list_close(&state);
  return rc;
}

static void on_stop_signal(uv_signal_t *handle, int signum)
{
  fedc_server_daemon *d = handle->data;
  int rc;

  if (d->stopping) {
    fedc_warn(LOG_COMPONENT, "received %s again, closing every connection now",
              strsignal(signum));
    fedc_server_peers_close_all(d);
    return;
  }
  /* The first signal drains: the open round may still close and be
   * checkpointed. A second one drops it and stops at once. */
  if (d->draining) {
    fedc_warn(LOG_COMPONENT, "received %s again, dropping the open round "
              "and stopping now", strsignal(signum));
    rc = fedc_server_engine_shutdown(d->engine, uv_now(d->loop),
                                     "server shutting down", &d->actions);
    fedc_server_daemon_drain(d, rc);
    return;
  }
  fedc_info(LOG_COMPONENT, "received %s, draining: no new clients or rounds, "
            "the open round may close within %lu ms", strsignal(signum),
            d->options->drain_timeout);
  d->draining = true;
  fedc_listener_free(&d->listener);
  rc = fedc_server_engine_drain(d->engine, uv_now(d->loop),
                                d->options->drain_timeout, &d->actions);
  fedc_server_daemon_drain(d, rc);
}

static void on_reload_signal(uv_signal_t *handle, int signum)
{
  fedc_server_daemon *d = handle->data;
  fedc_tls_config files = tls_files(d->options);

  if (d->listener == NULL)
    return;
  if (fedc_tls_ctx_reload(FEDC_TLS_SERVER, &files, &d->tls) < 0)
    return;
  fedc_listener_set_tls_ctx(d->listener, d->tls);
  fedc_info(LOG_COMPONENT, "reloaded certificates cert=%s ca=%s for new "
            "connections", d->options->cert, d->options->ca);
}

static void on_sweep(uv_timer_t *handle)
{
  fedc_server_daemon *d = handle->data;

  fedc_server_peers_sweep(d, uv_now(d->loop));
  fedc_server_refresh_metrics(d);
}

/* The HTTP responder renders the registry; bring it up to date first. */
static void before_scrape(void *data)
{
  fedc_server_refresh_metrics(data);
}

static int start_listener(fedc_server_daemon *d)
{
  const fedc_server_options *o = d->options;
  fedc_tls_config files = tls_files(o);
  fedc_listener_options lo;
  int rc;

  memset(&lo, 0, sizeof(lo));
  lo.conn.max_frame = (uint32_t)o->max_frame_bytes;
  lo.conn.initial_max_frame = FEDC_SERVER_HELLO_MAX_FRAME;
  lo.conn.handshake_timeout_ms = o->handshake_timeout;
  lo.max_handshakes = (uint32_t)o->max_handshakes;
  lo.max_handshakes_per_ip = o->max_handshakes_per_ip != 0
                                 ? (uint32_t)o->max_handshakes_per_ip
                                 : UINT32_MAX;
  rc = fedc_tls_ctx_new(FEDC_TLS_SERVER, &files, &d->tls);
  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "cannot load TLS files cert=%s key=%s ca=%s: %s",
               o->cert, o->key, o->ca, fedc_strerror(rc));
    return rc;
  }
  rc = fedc_listener_new(d->loop, d->tls, o->listen, (uint16_t)o->port, &lo,
                         &fedc_server_conn_callbacks, d, &d->listener);
  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "cannot listen on %s port %lu: %s", o->listen,
               o->port, fedc_strerror(rc));
    return rc;
  }
  fedc_info(LOG_COMPONENT, "listening address=%s port=%u rounds=%lu model=%s",
            o->listen, (unsigned)fedc_listener_port(d->listener), o->rounds,
            o->model);
  return 0;
}

static void start_signals(fedc_server_daemon *d)
{
  uv_signal_t *handles[] = { &d->sigterm, &d->sigint, &d->sighup };
  int signums[] = { SIGTERM, SIGINT, SIGHUP };

  for (size_t i = 0; i < 3; i++) {
    uv_signal_init(d->loop, handles[i]);
    handles[i]->data = d;
    uv_signal_start(handles[i],
                    signums[i] == SIGHUP ? on_reload_signal : on_stop_signal,
                    signums[i]);
  }
  uv_timer_init(d->loop, &d->sweep);
  d->sweep.data = d;
  uv_timer_start(&d->sweep, on_sweep, FEDC_SWEEP_MS, FEDC_SWEEP_MS);
}

static int load_inputs(fedc_server_daemon *d)
{
  const fedc_server_options *o = d->options;
  int rc;

  if (o->metrics != NULL && fedc_round_log_open(&d->round_log, o->metrics) < 0)
    return FEDC_EIO;
  if (o->test_data == NULL) {
    fedc_warn(LOG_COMPONENT, "no test_data set: rounds are not evaluated");
    return 0;
  }
  rc = fedc_dataset_load(o->test_data, &d->test_set);
  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "cannot load test_data %s: %s", o->test_data,
               fedc_strerror(rc));
    return rc;
  }
  d->has_test_set = true;
  fedc_info(LOG_COMPONENT, "test set loaded path=%s examples=%" PRIu64,
            o->test_data, d->test_set.n);
  return 0;
}

static int setup(fedc_server_daemon *d)
{
  int rc = 0;

  if (d->options->checkpoint_dir != NULL)
    rc = check_checkpoint_dir(d->options->checkpoint_dir);
  if (rc == 0)
    rc = load_inputs(d);

  if (rc == 0)
    rc = create_engine(d);
  if (rc == 0)
    rc = start_listener(d);
  if (rc == 0 && d->options->metrics_listen != NULL) {
    rc = fedc_http_new(d->loop, d->options->metrics_listen, &d->metrics,
                       before_scrape, d, &d->http);
    if (rc < 0)
      fedc_error(LOG_COMPONENT, "cannot serve metrics on %s: %s",
                 d->options->metrics_listen, fedc_strerror(rc));
  }
  if (rc < 0)
    return rc;
  start_signals(d);
  rc = fedc_server_engine_start(d->engine, uv_now(d->loop), &d->actions);
  fedc_server_daemon_drain(d, rc);
  return 0;
}

static void close_handle(uv_handle_t *handle)
{
  if (handle->loop != NULL && !uv_is_closing(handle))
    uv_close(handle, NULL);
}

void fedc_server_daemon_stop(fedc_server_daemon *d)
{
  if (d->stopping && d->listener == NULL && d->http == NULL)
    return;
  d->stopping = true;
  if (d->engine != NULL)
    fedc_server_refresh_metrics(d);
  fedc_listener_free(&d->listener);
  fedc_http_free(&d->http);
  close_handle((uv_handle_t *)&d->sigterm);
  close_handle((uv_handle_t *)&d->sigint);
  close_handle((uv_handle_t *)&d->sighup);
  close_handle((uv_handle_t *)&d->sweep);
  fedc_server_timers_close_all(d);
  fedc_server_peers_close_all(d);
}

void fedc_server_daemon_fail(fedc_server_daemon *d, const char *reason)
{
  d->exit_status = 1;
  if (d->exit_reason[0] == '\0')
    snprintf(d->exit_reason, sizeof(d->exit_reason), "%s", reason);
}

/* A checkpoint that failed to write leaves the run without its progress
 * on disk, so the exit status reports it even after a finished run. */
static void check_checkpoints_written(fedc_server_daemon *d)
{
  char reason[sizeof(d->exit_reason)];

  if (d->checkpoint_failures == 0)
    return;
  if (d->checkpoint_written)
    snprintf(reason, sizeof(reason), "%" PRIu64 " checkpoint writes failed; "
             "the last checkpoint in %s is of round %" PRIu64,
             d->checkpoint_failures, d->options->checkpoint_dir,
             d->checkpoint_round);
  else
    snprintf(reason, sizeof(reason), "%" PRIu64 " checkpoint writes failed "
             "and none was written to %s", d->checkpoint_failures,
             d->options->checkpoint_dir);
  fedc_server_daemon_fail(d, reason);
}

static void teardown(fedc_server_daemon *d)
{
  fedc_server_engine_free(&d->engine);
  fedc_server_actions_close(&d->actions);
  fedc_tls_ctx_free(&d->tls);
  fedc_round_log_close(&d->round_log);
  fedc_metrics_close(&d->metrics);
  if (d->has_test_set)
    fedc_dataset_close(&d->test_set);
  free(d->peers);
  free(d->peer_ids);
}

int fedc_server_daemon_run(const fedc_server_options *options)
{
  fedc_server_daemon d;
  uv_loop_t loop;

  memset(&d, 0, sizeof(d));
  d.options = options;
  d.loop = &loop;
  fedc_metrics_init(&d.metrics);
  fedc_server_actions_init(&d.actions);
  if (uv_loop_init(&loop) < 0) {
    fedc_error(LOG_COMPONENT, "cannot create the event loop");
    return 1;
  }
  if (setup(&d) < 0) {
    fedc_server_daemon_fail(&d, "startup failed (see the error above)");
    fedc_server_daemon_stop(&d);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  /* Run once more for close callbacks that the last iteration queued. */
  uv_run(&loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop) < 0)
    fedc_warn(LOG_COMPONENT, "event loop closed with handles still open");
  teardown(&d);
  check_checkpoints_written(&d);
  if (d.exit_status == 0)
    fedc_info(LOG_COMPONENT, "exiting status=0");
  else
    fedc_error(LOG_COMPONENT, "exiting status=%d: %s", d.exit_status,
               d.exit_reason[0] != '\0' ? d.exit_reason
                                         : "see the errors above");
  return d.exit_status;
}
