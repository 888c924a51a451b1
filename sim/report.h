/* The per-round output of fedc-sim: a JSON Lines record and a progress
 * bar.
 *
 * The record has the fields of fedc-server's metrics file, in its order and
 * format (server/round_log.h), plus simulated_seconds, the round's length
 * in simulated time, and simulated_clock, the simulated time at its end.
 * The server's "seconds" is real time, which differs from run to run, so a
 * deterministic record leaves it out. Every other field depends only on
 * the inputs, the seed and the options. */
#ifndef FEDC_SIM_REPORT_H
#define FEDC_SIM_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server/actions.h"

typedef struct fedc_sim_record {
  fedc_round_metrics metrics;  /* the server engine's; in the simulator its
                                  seconds are simulated */
  double real_seconds;         /* real time the round took */
  double simulated_clock;      /* simulated time when the round closed */
} fedc_sim_record;

/* Writes rec as one JSON object and a newline and flushes out.
 * deterministic leaves out "seconds". Returns 0 or FEDC_EIO. */
int fedc_report_write_jsonl(FILE *out, const fedc_sim_record *rec,
                            int deterministic);

/* A one-line progress bar redrawn in place with '\r'. */
typedef struct fedc_progress {
  FILE *out;                   /* NULL turns the bar off */
  uint64_t total_rounds;
  int width;                   /* characters between the brackets */
} fedc_progress;

/* Turns the bar on only when out is a terminal. */
void fedc_progress_init(fedc_progress *p, FILE *out, uint64_t total_rounds);

/* Redraws the bar after rec; real_total is the real seconds since start. */
void fedc_progress_update(fedc_progress *p, const fedc_sim_record *rec,
                          double real_total);

/* Ends the bar's line so later output starts on a new one. */
void fedc_progress_finish(fedc_progress *p);

/* Formats seconds as "3d04h", "2h05m", "4m07s" or "12.3s" into buf. */
void fedc_format_duration(double seconds, char *buf, size_t len);

#endif
