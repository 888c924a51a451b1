/* Internals shared by fedc-server's daemon files: daemon.c sets up and
 * tears down, daemon_conn.c handles connections, daemon_actions.c carries
 * out the engine's actions. Not for other modules. */
#ifndef FEDC_SERVER_DAEMON_IMPL_H
#define FEDC_SERVER_DAEMON_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "daemon/outbox.h"
#include "data/dataset.h"
#include "net/conn.h"
#include "net/listener.h"
#include "server/daemon.h"
#include "server/engine.h"
#include "server/http.h"
#include "server/round_log.h"
#include "util/metrics.h"

#define LOG_COMPONENT "server"

/* Interval of the housekeeping timer: Hello deadlines and metric gauges. */
#define FEDC_SWEEP_MS 1000

/* Largest frame accepted on a connection until its Hello is accepted. A
 * Hello takes a few hundred bytes, and any other message before it is
 * rejected, so a peer that has not identified itself cannot make the
 * server buffer and decode a large frame. */
#define FEDC_SERVER_HELLO_MAX_FRAME (16u * 1024u)

/* One established client connection. */
typedef struct server_peer {
  struct fedc_server_daemon *daemon;
  uint64_t id;               /* the engine's peer id, never reused */
  fedc_conn *conn;
  fedc_outbox outbox;
  uint64_t opened_ms;
  bool hello_seen;           /* any message counts: the engine checks it */
  bool closed_by_engine;     /* a CLOSE action was carried out */
} server_peer;

/* One engine timer. */
typedef struct server_timer {
  uv_timer_t handle;
  uint64_t id;
  struct fedc_server_daemon *daemon;
  struct server_timer *next;
} server_timer;

typedef struct fedc_server_daemon {
  const fedc_server_options *options;
  uv_loop_t *loop;
  SSL_CTX *tls;
  fedc_listener *listener;
  fedc_http *http;
  fedc_metrics metrics;
  fedc_round_log round_log;
  fedc_server_engine *engine;
  fedc_server_actions actions;

  /* Established connections, sorted by id: ids only grow, so a new peer
   * is appended and lookup is a binary search over peer_ids. A closed
   * peer leaves a NULL entry, so closing a peer moves no other entry.
   * The holes are dropped when a peer is appended while they are half the
   * entries or more. Loops skip NULL entries. */
  server_peer **peers;
  uint64_t *peer_ids;
  size_t npeers;             /* entries, holes included */
  size_t peers_removed;      /* holes */
  size_t peers_capacity;
  uint64_t next_peer_id;

  server_timer *timers;
  uv_timer_t sweep;
  uv_signal_t sigterm, sigint, sighup;

  /* Server-side evaluation of the global model on the test set. */
  fedc_dataset test_set;
  bool has_test_set;
  uv_work_t eval_work;
  bool eval_running;
  uint64_t eval_round;
  fedc_snapshot *eval_model;
  int eval_status;
  fedc_server_eval eval_result;

  /* TLS bytes of the connections already closed, for the counters. */
  uint64_t closed_bytes_sent;
  uint64_t closed_bytes_received;

  /* Checkpoints: failed writes, and the round of the last one written. */
  uint64_t checkpoint_failures;
  uint64_t checkpoint_round;
  bool checkpoint_written;

  bool draining;             /* a first SIGTERM or SIGINT was received */
  bool stopping;             /* shutdown or DONE seen; no new work */
  int exit_status;
  char exit_reason[256];     /* why exit_status is 1; the first reason wins */
} fedc_server_daemon;

/* daemon_conn.c */
extern const fedc_conn_callbacks fedc_server_conn_callbacks;
server_peer *fedc_server_peer_find(const fedc_server_daemon *d, uint64_t id);
void fedc_server_peers_sweep(fedc_server_daemon *d, uint64_t now_ms);
void fedc_server_peers_close_all(fedc_server_daemon *d);

/* daemon_actions.c */

/* Carries out and clears d->actions; an engine error rc stops the daemon
 * with exit status 1. */
void fedc_server_daemon_drain(fedc_server_daemon *d, int rc);

/* Closes every engine timer without firing it. */
void fedc_server_timers_close_all(fedc_server_daemon *d);

/* Counts one rejected peer in fedc_server_rejected_total{reason}. */
void fedc_server_count_reject(fedc_server_daemon *d, const char *reason);

/* Refreshes the gauges and counters that mirror engine, listener and
 * connection statistics. */
void fedc_server_refresh_metrics(fedc_server_daemon *d);

/* daemon.c */

/* Stops accepting connections and closes the daemon's own handles, so the
 * loop ends once the connections and the evaluation are done. */
void fedc_server_daemon_stop(fedc_server_daemon *d);

/* Sets exit status 1 and, unless one is already stored, the reason that
 * the last log line gives for it. */
void fedc_server_daemon_fail(fedc_server_daemon *d, const char *reason);

/* Checks that dir is a folder the server can write: creates it (mode 0700)
 * if it is missing, then writes and removes a probe file in it. Returns 0,
 * or FEDC_EIO after storing the failed step, the path and the system's
 * reason in reason. */
int fedc_server_check_checkpoint_dir(const char *dir, char *reason,
                                     size_t size);

#endif
