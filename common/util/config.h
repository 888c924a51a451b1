/* Daemon configuration: one table of options per program, filled from
 * defaults, then an INI file, then command-line flags (flags win).
 *
 * An option "min_clients" is the INI key min_clients in any section and the
 * flag --min-clients VALUE or --min-clients=VALUE. --help prints every
 * option with its unit and default from the same table. */
#ifndef FEDC_UTIL_CONFIG_H
#define FEDC_UTIL_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum fedc_opt_type {
  FEDC_OPT_STRING,   /* char * (heap copy owned by the config; free with fedc_config_close) */
  FEDC_OPT_INT,      /* long */
  FEDC_OPT_UINT,     /* unsigned long */
  FEDC_OPT_DOUBLE,   /* double */
  FEDC_OPT_BOOL,     /* int: 0/1, from true/false/yes/no/on/off/1/0 */
};

typedef struct fedc_option {
  const char *name;          /* snake_case key */
  enum fedc_opt_type type;
  size_t offset;             /* offsetof() the field in the caller's struct */
  const char *default_value; /* as text; NULL means unset (strings only) */
  const char *unit;          /* e.g. "ms", "bytes", "" */
  const char *help;          /* one sentence */
} fedc_option;

typedef struct fedc_config {
  const fedc_option *options;
  size_t count;
  void *target;              /* the struct the offsets point into */
  const char *program;       /* for messages and --help */
} fedc_config;

/* Binds the option table to target and applies every default. */
int fedc_config_init(fedc_config *cfg, const char *program,
                     const fedc_option *options, size_t count, void *target);

/* Frees the string values held in target. */
void fedc_config_close(fedc_config *cfg);

/* Applies name=value. Returns 0, FEDC_ENOENT for an unknown name or
 * FEDC_EINVAL for a value that does not parse; errmsg gets a sentence. */
int fedc_config_set(fedc_config *cfg, const char *name, const char *value,
                    char *errmsg, size_t errlen);

/* Reads an INI file; section names are ignored, keys are option names. */
int fedc_config_load_file(fedc_config *cfg, const char *path,
                          char *errmsg, size_t errlen);

/* Parses argv: "--config FILE" is loaded first wherever it appears, then
 * every other --flag in order. Sets *help when --help or -h is given.
 * Returns 0 or a FEDC_E* code with errmsg filled. */
int fedc_config_parse_args(fedc_config *cfg, int argc, char **argv,
                           int *help, char *errmsg, size_t errlen);

/* Prints usage and every option with its unit and default. */
void fedc_config_print_help(const fedc_config *cfg, FILE *out,
                            const char *summary);

/* Prints only the option list of --help: each flag, unit and default. */
void fedc_config_print_options(const fedc_config *cfg, FILE *out);

#endif
