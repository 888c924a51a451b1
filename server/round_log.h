/* The per-round metrics file: JSON Lines, one object per finished round,
 * flushed after each line so that a reader can follow it while the server
 * runs (tail -f, the quickstart script, the integration tests).
 *
 * Fields: round, aggregated (false when the round was abandoned and the
 * model kept), test_accuracy and test_loss (null when not evaluated),
 * train_loss and train_accuracy (the clients' means weighted by example
 * count, null without reports), clients_sampled, clients_reported,
 * clients_lost, clients_cancelled (stragglers told to stop),
 * updates_too_stale (asynchronous updates discarded), seconds (wall time
 * of the round) and bytes_sent and
 * bytes_received (tensor data streamed to and from the clients, without
 * message and TLS overhead). */
#ifndef FEDC_SERVER_ROUND_LOG_H
#define FEDC_SERVER_ROUND_LOG_H

#include <stdio.h>

#include "server/actions.h"

typedef struct fedc_round_log {
  FILE *file;
} fedc_round_log;

/* Opens path for appending, so a resumed server continues the same file.
 * Returns 0 or FEDC_EIO (logged). */
int fedc_round_log_open(fedc_round_log *log, const char *path);

/* Appends one line. Returns 0 or FEDC_EIO; does nothing and returns 0 when
 * the log is not open. */
int fedc_round_log_write(fedc_round_log *log, const fedc_round_metrics *m);

void fedc_round_log_close(fedc_round_log *log);

#endif
