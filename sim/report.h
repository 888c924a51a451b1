/* What fedc-sim reports per round: a JSON Lines record and a progress bar.
 *
 * The record has the fields of fedc-server's per-round metrics, in its
 * format (round, test_accuracy, test_loss, clients_sampled,
 * clients_reported, seconds, bytes_sent, bytes_received), plus
 * simulated_seconds, the round's length in simulated time, and
 * simulated_clock, the simulated time at its end. "seconds" is real time,
 * which differs from run to run, so a deterministic record leaves it out;
 * every other field depends only on the inputs, the seed and the options. */
#ifndef FEDC_SIM_REPORT_H
#define FEDC_SIM_REPORT_H

#include <stdint.h>
#include <stdio.h>

typedef struct fedc_sim_record {
  uint64_t round;
  double test_accuracy;        /* on the held-out test set; NAN if not run */
  double test_loss;
  uint32_t clients_sampled;    /* the cohort the server sent tasks to */
  uint32_t clients_reported;   /* updates the server accepted */
  double seconds;              /* real time the round took */
  uint64_t bytes_sent;         /* tensor data the server sent */
  uint64_t bytes_received;     /* tensor data the server accepted */
  double simulated_seconds;    /* the round's length in simulated time */
  double simulated_clock;      /* simulated time when the round closed */
} fedc_sim_record;

/* Writes rec as one JSON object and a newline. deterministic leaves out
 * "seconds". Returns 0 or FEDC_EIO. */
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
