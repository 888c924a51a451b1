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
  unsigned long reconnect_min;       /* ms */
  unsigned long reconnect_max;       /* ms */
  unsigned long max_frame_bytes;
  char *log_level;
  char *log_file;
} fedc_client_options;

/* Fills options from defaults, the --config file and the flags, in that
 * order. Returns 0 to run, 1 when --help was printed, or a negative FEDC_E*
 * code after printing the reason to stderr. On 0 and 1 the caller releases
 * options with fedc_client_options_close(). */
int fedc_client_options_parse(fedc_client_options *options, int argc,
                              char **argv);

void fedc_client_options_close(fedc_client_options *options);

#endif
