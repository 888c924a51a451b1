/* fedc-server's daemon: drives the round engine (server/engine.h) from a
 * libuv loop, over mutual-TLS connections, with the wall clock, a worker
 * thread for evaluation, checkpoints, a JSON Lines metrics file and an
 * optional Prometheus endpoint. */
#ifndef FEDC_SERVER_DAEMON_H
#define FEDC_SERVER_DAEMON_H

#include "server/server_options.h"

/* Runs the server until its rounds are done or a SIGTERM/SIGINT stops it.
 * Returns the process exit status: 0 after a normal end or a signal, 1
 * when startup or the engine failed (the reason is logged). */
int fedc_server_daemon_run(const fedc_server_options *options);

#endif
