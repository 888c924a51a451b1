/* fedc-server's configuration: the option table behind its INI file, its
 * flags and its --help, and the checks that run before the daemon starts. */
#ifndef FEDC_SERVER_SERVER_OPTIONS_H
#define FEDC_SERVER_SERVER_OPTIONS_H

#include <stddef.h>

#include "server/engine.h"
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
  unsigned long max_handshakes;
  unsigned long max_handshakes_per_ip;   /* 0: no limit */

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
  unsigned long retry_delay;         /* ms */
  unsigned long retry_delay_max;     /* ms */
  unsigned long max_abandoned_rounds;
  double max_update_norm;
  unsigned long drain_timeout;       /* ms */

  /* strategy parameters (common/agg/agg.h) */
  double server_lr;                  /* 0: the strategy's default */
  double server_momentum;
  double beta1;                      /* < 0: the strategy's default */
  double beta2;
  double tau;
  double trim_fraction;
  unsigned long krum_byzantine;
  unsigned long multi_krum_m;
  double clip_norm;

  /* sampling and asynchronous rounds (server/engine.h) */
  char *sampling;
  unsigned long min_fit_clients;
  unsigned long max_fit_clients;
  double poisson_q;
  double over_selection;
  unsigned long max_concurrency;
  double oort_exploration;
  double oort_exploration_min;
  double oort_alpha;
  unsigned long oort_preferred_duration;   /* ms */
  unsigned long oort_pacer_window;
  unsigned long oort_pacer_step;           /* ms */
  char *rounds_mode;
  unsigned long buffer_size;
  double async_alpha;
  char *staleness;
  double staleness_a;
  unsigned long staleness_b;
  unsigned long max_staleness;

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

/* Sets the strategy, its parameters, the sampling and asynchronous
 * settings and the guards against abandoned rounds and absurd updates of
 * c from the options; the other fields are left alone.
 * Returns 0, or FEDC_EINVAL for an unknown strategy, sampling, rounds_mode
 * or staleness name. */
int fedc_server_options_schedule(const fedc_server_options *options,
                                 fedc_server_engine_config *c);

#endif
