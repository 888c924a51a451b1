#include "daemon/cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"

int fedc_cli_parse(const char *program, const char *summary,
                   const fedc_option *options, size_t count, void *target,
                   int argc, char **argv)
{
  fedc_config cfg;
  char message[512] = "out of memory";
  int help = 0;
  int rc = fedc_config_init(&cfg, program, options, count, target);

  if (rc == 0)
    rc = fedc_config_parse_args(&cfg, argc, argv, &help, message,
                                sizeof(message));
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", program, message);
    fedc_config_close(&cfg);
    return rc;
  }
  if (help) {
    fedc_config_print_help(&cfg, stdout, summary);
    return 1;
  }
  return 0;
}

void fedc_cli_close(const char *program, const fedc_option *options,
                    size_t count, void *target)
{
  fedc_config cfg = { options, count, target, program };

  fedc_config_close(&cfg);
}

int fedc_cli_setup_logging(const char *program, const char *level,
                           const char *path)
{
  enum fedc_log_level parsed;

  if (fedc_log_parse_level(level, &parsed) < 0) {
    fprintf(stderr, "%s: invalid log_level '%s': expected debug, info, "
            "warn, error or off\n", program, level);
    return FEDC_EINVAL;
  }
  fedc_log_set_level(parsed);
  if (path != NULL && fedc_log_open(path) < 0) {
    /* fedc_log_open() fails only in fopen(), which sets errno. */
    fprintf(stderr, "%s: cannot open log_file %s: %s\n", program, path,
            strerror(errno));
    return FEDC_EIO;
  }
  return 0;
}
