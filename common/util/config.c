#include "config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

/* Compares an option name with a flag or key, treating '-' as '_'. */
static int name_matches(const char *option, const char *key, size_t keylen)
{
  size_t i;

  for (i = 0; i < keylen && option[i] != '\0'; i++) {
    char k = key[i] == '-' ? '_' : key[i];

    if (option[i] != k)
      return 0;
  }
  return i == keylen && option[i] == '\0';
}

static const fedc_option *find_option(const fedc_config *cfg, const char *key,
                                      size_t keylen)
{
  for (size_t i = 0; i < cfg->count; i++) {
    if (name_matches(cfg->options[i].name, key, keylen))
      return &cfg->options[i];
  }
  return NULL;
}

static int parse_bool(const char *value, int *out)
{
  static const char *const yes[] = { "1", "true", "yes", "on" };
  static const char *const no[] = { "0", "false", "no", "off" };

  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(value, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
    if (strcasecmp(value, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

static int store_number(const fedc_option *opt, void *field, const char *value)
{
  char *end = NULL;
  long l = 0;
  unsigned long ul = 0;
  double d = 0;

  /* strtoul() accepts "-1" and wraps it, so reject the sign first. */
  if (opt->type == FEDC_OPT_UINT && strchr(value, '-') != NULL)
    return FEDC_EINVAL;

  errno = 0;
  if (opt->type == FEDC_OPT_INT)
    l = strtol(value, &end, 10);
  else if (opt->type == FEDC_OPT_UINT)
    ul = strtoul(value, &end, 10);
  else
    d = strtod(value, &end);
  if (errno != 0 || end == value || *end != '\0' || !isfinite(d))
    return FEDC_EINVAL;

  /* Store only a value that parsed completely. */
  if (opt->type == FEDC_OPT_INT)
    *(long *)field = l;
  else if (opt->type == FEDC_OPT_UINT)
    *(unsigned long *)field = ul;
  else
    *(double *)field = d;
  return 0;
}

static int store_value(const fedc_option *opt, void *field, const char *value)
{
  char *copy;

  switch (opt->type) {
  case FEDC_OPT_STRING:
    copy = strdup(value);
    if (copy == NULL)
      return FEDC_ENOMEM;
    free(*(char **)field);
    *(char **)field = copy;
    return 0;
  case FEDC_OPT_BOOL:
    return parse_bool(value, (int *)field);
  default:
    return store_number(opt, field, value);
  }
}

static int apply(fedc_config *cfg, const char *key, size_t keylen,
                 const char *value, char *errmsg, size_t errlen)
{
  const fedc_option *opt = find_option(cfg, key, keylen);
  int rc;

  if (opt == NULL) {
    snprintf(errmsg, errlen, "unknown option '%.*s'; see --help",
             (int)keylen, key);
    return FEDC_ENOENT;
  }
  rc = store_value(opt, (char *)cfg->target + opt->offset, value);
  if (rc == FEDC_EINVAL)
    snprintf(errmsg, errlen, "invalid value '%s' for option '%s'", value,
             opt->name);
  return rc;
}

int fedc_config_set(fedc_config *cfg, const char *name, const char *value,
                    char *errmsg, size_t errlen)
{
  return apply(cfg, name, strlen(name), value, errmsg, errlen);
}

int fedc_config_init(fedc_config *cfg, const char *program,
                     const fedc_option *options, size_t count, void *target)
{
  char msg[256];

  cfg->options = options;
  cfg->count = count;
  cfg->target = target;
  cfg->program = program;
  for (size_t i = 0; i < count; i++) {
    int rc;

    if (options[i].default_value == NULL)
      continue;
    rc = fedc_config_set(cfg, options[i].name, options[i].default_value, msg,
                         sizeof(msg));
    if (rc < 0)
      return rc;
  }
  return 0;
}

void fedc_config_close(fedc_config *cfg)
{
  for (size_t i = 0; i < cfg->count; i++) {
    if (cfg->options[i].type == FEDC_OPT_STRING) {
      char **field = (char **)((char *)cfg->target + cfg->options[i].offset);

      free(*field);
      *field = NULL;
    }
  }
}

struct ini_state {
  fedc_config *cfg;
  char *errmsg;
  size_t errlen;
  int rc;
};

static int on_ini_entry(void *user, const char *section, const char *name,
                        const char *value)
{
  struct ini_state *st = user;

  st->rc = fedc_config_set(st->cfg, name, value, st->errmsg, st->errlen);
  return st->rc == 0;
}

int fedc_config_load_file(fedc_config *cfg, const char *path, char *errmsg,
                          size_t errlen)
{
  struct ini_state st = { cfg, errmsg, errlen, 0 };
  int line = ini_parse(path, on_ini_entry, &st);

  if (line == -1) {
    snprintf(errmsg, errlen, "cannot open config file '%s'", path);
    return FEDC_ENOENT;
  }
  if (st.rc < 0) {
    size_t used = strlen(errmsg);

    snprintf(errmsg + used, errlen - used, " (%s line %d)", path, line);
    return st.rc;
  }
  if (line > 0) {
    snprintf(errmsg, errlen, "syntax error in '%s' at line %d", path, line);
    return FEDC_EFORMAT;
  }
  return 0;
}

/* Splits "--key=value" or "--key value"; advances *i past what it used. */
static int parse_flag(fedc_config *cfg, int argc, char **argv, int *i,
                      char *errmsg, size_t errlen)
{
  const char *arg = argv[*i] + 2;
  const char *eq = strchr(arg, '=');
  const fedc_option *opt;
  size_t keylen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);

  if (eq != NULL)
    return apply(cfg, arg, keylen, eq + 1, errmsg, errlen);

  opt = find_option(cfg, arg, keylen);
  /* A bare boolean flag means true. */
  if (opt != NULL && opt->type == FEDC_OPT_BOOL &&
      (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0))
    return apply(cfg, arg, keylen, "true", errmsg, errlen);
  if (*i + 1 >= argc) {
    snprintf(errmsg, errlen, "option '--%s' needs a value", arg);
    return FEDC_EINVAL;
  }
  (*i)++;
  return apply(cfg, arg, keylen, argv[*i], errmsg, errlen);
}

static int load_config_flag(fedc_config *cfg, int argc, char **argv,
                            char *errmsg, size_t errlen)
{
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--config=", 9) == 0)
      return fedc_config_load_file(cfg, argv[i] + 9, errmsg, errlen);
    if (strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc) {
        snprintf(errmsg, errlen, "option '--config' needs a file path");
        return FEDC_EINVAL;
      }
      return fedc_config_load_file(cfg, argv[i + 1], errmsg, errlen);
    }
  }
  return 0;
}

int fedc_config_parse_args(fedc_config *cfg, int argc, char **argv, int *help,
                           char *errmsg, size_t errlen)
{
  int rc = load_config_flag(cfg, argc, argv, errmsg, errlen);

  *help = 0;
  if (rc < 0)
    return rc;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      *help = 1;
      continue;
    }
    if (strcmp(argv[i], "--config") == 0) {
      i++;
      continue;
    }
    if (strncmp(argv[i], "--config=", 9) == 0)
      continue;
    if (strncmp(argv[i], "--", 2) != 0) {
      snprintf(errmsg, errlen, "unexpected argument '%s'; see --help",
               argv[i]);
      return FEDC_EINVAL;
    }
    rc = parse_flag(cfg, argc, argv, &i, errmsg, errlen);
    if (rc < 0)
      return rc;
  }
  return 0;
}

void fedc_config_print_help(const fedc_config *cfg, FILE *out,
                            const char *summary)
{
  fprintf(out, "Usage: %s [--config FILE] [--OPTION VALUE]...\n\n%s\n\n",
          cfg->program, summary);
  fprintf(out, "Every option is also an INI key (with '_' for '-') in the "
               "--config file; flags override the file.\n\n");
  fprintf(out, "  --config FILE\n      INI file to read before the flags.\n");
  fedc_config_print_options(cfg, out);
}

void fedc_config_print_options(const fedc_config *cfg, FILE *out)
{
  for (size_t i = 0; i < cfg->count; i++) {
    const fedc_option *opt = &cfg->options[i];
    char flag[128];

    snprintf(flag, sizeof(flag), "%s", opt->name);
    for (char *p = flag; *p != '\0'; p++)
      *p = *p == '_' ? '-' : *p;
    fprintf(out, "  --%s", flag);
    if (opt->unit != NULL && opt->unit[0] != '\0')
      fprintf(out, " (%s)", opt->unit);
    fprintf(out, "  [default: %s]\n      %s\n",
            opt->default_value != NULL ? opt->default_value : "none",
            opt->help);
  }
}
