/* fedc-client's daemon: drives the session engine (client/engine.h) from a
 * libuv loop over a mutual-TLS connection, trains and evaluates on a
 * worker thread with the built-in trainer or an external command
 * (trainer = exec), and reconnects with exponential backoff and jitter
 * after the connection is lost. */
#ifndef FEDC_CLIENT_DAEMON_H
#define FEDC_CLIENT_DAEMON_H

#include "client/client_options.h"

/* Runs the client until the server says Goodbye or a SIGTERM/SIGINT stops
 * it; a SIGHUP reloads the certificates for the next connection. Returns the process exit status: 0 after Goodbye or a signal, 1 when
 * startup failed or the server speaks another protocol version (the reason
 * is logged). */
int fedc_client_daemon_run(const fedc_client_options *options);

#endif
