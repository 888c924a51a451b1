/* fedc-client's configuration: the option table behind its INI file, its
 * flags and its --help, and the checks that run before the daemon starts. */
#ifndef FEDC_CLIENT_CLIENT_OPTIONS_H
#define FEDC_CLIENT_CLIENT_OPTIONS_H

#include "util/config.h"

typedef struct fedc_client_options {
  char *server;
  unsigned long port;
  char *id;
  char *cert;
  char *key;
  char *ca;
  char *data;
  unsigned long threads;
  char *trainer;                     /* "builtin" or "exec" */
  char *trainer_command;             /* shell command line, exec only */
  unsigned long trainer_timeout;     /* s; 0: no limit */
  char *work_dir;                    /* exchange folder, exec only */
  char *describe_model;              /* a spec to describe, then exit */
  unsigned long reconnect_min;       /* ms */
  unsigned long reconnect_max;       /* ms */
  unsigned long max_frame_bytes;
  char *log_level;
  char *log_file;
} fedc_client_options;

/* The batch size at which --describe-model estimates training memory, the
 * fedc-server default. */
#define FEDC_CLIENT_DESCRIBE_BATCH 32

/* Fills options from defaults, the --config file and the flags, in that
 * order. Returns 0 to run (or, when describe_model is set, to describe that
 * model: the daemon's options are then not checked), 1 when --help was
 * printed, or a negative FEDC_E* code after printing the reason to stderr.
 * On 0 and 1 the caller releases options with fedc_client_options_close(). */
int fedc_client_options_parse(fedc_client_options *options, int argc,
                              char **argv);

void fedc_client_options_close(fedc_client_options *options);

#endif
