/* Internals shared by fedc-client's daemon files: daemon.c handles the
 * connection and the engine's messages, daemon_jobs.c runs training and
 * evaluation on the worker pool. Not for other modules. */
#ifndef FEDC_CLIENT_DAEMON_IMPL_H
#define FEDC_CLIENT_DAEMON_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "client/daemon.h"
#include "client/engine.h"
#include "daemon/outbox.h"
#include "data/dataset.h"
#include "net/backoff.h"
#include "net/conn.h"

#define LOG_COMPONENT "client"

struct client_job;

typedef struct fedc_client_daemon {
  const fedc_client_options *options;
  uv_loop_t *loop;
  SSL_CTX *tls;
  fedc_conn *conn;           /* NULL while disconnected */
  fedc_outbox outbox;
  fedc_client_engine *engine;
  fedc_client_actions actions;
  fedc_dataset data;
  bool has_data;

  fedc_backoff backoff;
  uv_timer_t reconnect;
  uv_signal_t sigterm, sigint, sighup;

  unsigned jobs;             /* training or evaluation jobs in flight */

  /* trainer = exec. The external trainers share the work folder, so one
   * runs at a time; the newest task waits and replaces an older waiter. */
  bool external;
  char *work_dir;            /* absolute, so the trainer's cwd is no issue */
  char *data_path;           /* absolute, for the same reason */
  bool external_running;
  struct client_job *external_waiting;

  bool stopping;             /* Goodbye, a fatal close or a signal */
  int exit_status;
} fedc_client_daemon;

/* daemon.c */

/* Carries out and clears d->actions; an engine error rc stops the daemon
 * with exit status 1. */
void fedc_client_daemon_drain(fedc_client_daemon *d, int rc);

/* daemon_jobs.c: sets up trainer = exec (the work folder, absolute paths)
 * and logs the trainer in use. Returns 0, or a FEDC_E* code after logging
 * the reason. */
int fedc_client_jobs_init(fedc_client_daemon *d);

/* Frees what fedc_client_jobs_init() and a waiting job hold. */
void fedc_client_jobs_close(fedc_client_daemon *d);

/* daemon_jobs.c: checks that the model spec of a task takes as many input
 * features as the local data has, for the engine's check_task. Builds the
 * layers only, so it costs no parameter memory. */
int fedc_client_check_task(void *context, const char *model_spec,
                           char *reason, size_t size);

/* daemon_jobs.c: each takes the action's snapshot reference, runs the job
 * on the worker pool and reports to the engine when it is done. */
void fedc_client_start_training(fedc_client_daemon *d,
                                fedc_client_action *action);
void fedc_client_start_evaluation(fedc_client_daemon *d,
                                  fedc_client_action *action);

#endif
