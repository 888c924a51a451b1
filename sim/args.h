/* fedc-sim's command line: the option table behind its INI file, flags
 * and --help, and the checks that run before anything is loaded. */
#ifndef FEDC_SIM_ARGS_H
#define FEDC_SIM_ARGS_H

#include "util/config.h"

typedef struct fedc_args {
  /* data and clients */
  char *data;                    /* IDX folder (MNIST family) */
  char *train_data;              /* or a client data file from fedc-data */
  char *test_data;
  unsigned long clients;
  char *partition;
  double alpha;
  unsigned long min_rows;
  unsigned long shards_per_client;
  unsigned long data_copies;

  /* rounds */
  char *model;
  unsigned long rounds;
  unsigned long clients_per_round;
  double fraction_fit;
  unsigned long min_clients;
  double quorum;
  int close_at_quorum;
  unsigned long round_timeout;   /* ms of simulated time */
  unsigned long evaluate_every;
  char *sampling;
  double poisson_q;
  double over_selection;
  unsigned long max_concurrency;
  char *mode;
  unsigned long buffer_size;
  double async_alpha;
  char *staleness;
  double staleness_a;
  unsigned long max_staleness;
  char *strategy;
  double server_lr;
  double server_momentum;
  unsigned long seed;

  /* local training */
  unsigned long local_epochs;
  unsigned long batch_size;
  unsigned long max_steps;
  double learning_rate;
  double momentum;
  double weight_decay;
  double proximal_mu;

  /* poisoning clients */
  char *attack;
  double attack_fraction;
  double attack_factor;

  /* devices and network */
  char *profile;
  double speed;
  double speed_sigma;
  double download_bps;
  double upload_bps;
  double bandwidth_sigma;
  double dropout;
  double availability_period;    /* s */
  double availability_online;
  double reference_flops;
  double latency;                /* ms */
  double reconnect_delay;        /* s */
  double connect_window;         /* s */
  double max_time;               /* s of simulated time */
  double stall_time;             /* s of simulated time */
  unsigned long chunk_bytes;

  /* run and output */
  char *transport;
  unsigned long workers;
  char *metrics;
  char *plot;
  int wall_clock;
  int progress;
  char *log_level;
  char *log_file;

  /* --transport tls */
  char *server_bin;
  char *client_bin;
  char *make_certs;
  char *work_dir;
  unsigned long tls_timeout;     /* s */
} fedc_args;

/* Fills args from defaults, the --config file and the flags, in that
 * order. Returns 0 to run, 1 when --help was printed, or a negative FEDC_E*
 * code after printing the reason to stderr. On 0 and 1 the caller releases
 * args with fedc_args_close(). */
int fedc_args_parse(fedc_args *args, int argc, char **argv);

void fedc_args_close(fedc_args *args);

#endif
