/* fedc-server's configuration: the option table behind its INI file, its
 * flags and its --help, and the checks that run before the daemon starts. */
#ifndef FEDC_SERVER_SERVER_OPTIONS_H
#define FEDC_SERVER_SERVER_OPTIONS_H

#include <stddef.h>

#include "util/config.h"

typedef struct fedc_server_options {
  /* network and TLS */
  char *listen;
  unsigned long port;
  char *cert;
  char *key;
  char *ca;
  unsigned long max_frame_bytes;
  unsigned long chunk_bytes;
  unsigned long handshake_timeout;   /* ms */

  /* rounds */
  char *model;
  unsigned long rounds;
  unsigned long min_clients;
  double fraction_fit;
  double quorum;
  int close_at_quorum;
  unsigned long round_timeout;       /* ms */
  char *strategy;
  unsigned long seed;

  /* the training configuration sent to clients */
  unsigned long local_epochs;
  unsigned long batch_size;
  double learning_rate;
  double momentum;
  double weight_decay;
  double proximal_mu;

  /* evaluation, state and observability */
  char *test_data;
  char *checkpoint_dir;
  char *metrics;
  char *metrics_listen;
  char *log_level;
  char *log_file;
} fedc_server_options;

/* Fills options from defaults, the --config file and the flags, in that
 * order. Returns 0 to run, 1 when --help was printed, or a negative FEDC_E*
 * code after printing the reason to stderr. On 0 and 1 the caller releases
 * options with fedc_server_options_close(). */
int fedc_server_options_parse(fedc_server_options *options, int argc,
                              char **argv);

void fedc_server_options_close(fedc_server_options *options);

#endif
