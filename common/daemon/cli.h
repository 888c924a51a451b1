/* Command-line start-up shared by the fedc daemons: the options from
 * defaults, the --config file and the flags, --help, and logging. */
#ifndef FEDC_DAEMON_CLI_H
#define FEDC_DAEMON_CLI_H

#include <stddef.h>

#include "util/config.h"

/* Fills target from the option table: defaults, then the --config file,
 * then the flags. Prints --help to stdout and errors to stderr, prefixed
 * with program. Returns 0 to run, 1 after printing --help, or a negative
 * FEDC_E* code; on 0 and 1 the caller frees target's strings with
 * fedc_cli_close(). */
int fedc_cli_parse(const char *program, const char *summary,
                   const fedc_option *options, size_t count, void *target,
                   int argc, char **argv);

/* Frees the strings that fedc_cli_parse() stored in target. */
void fedc_cli_close(const char *program, const fedc_option *options,
                    size_t count, void *target);

/* Sets the log level from its name ("info", ...) and, when path is not
 * NULL, sends log lines to that file. Returns 0, or FEDC_EINVAL or
 * FEDC_EIO after printing the reason to stderr. */
int fedc_cli_setup_logging(const char *program, const char *level,
                           const char *path);

#endif
