/* Logging: one line per event, "TIME LEVEL component: message key=value...".
 *
 * Lines go to stderr unless fedc_log_open() names a file. Callers never pass
 * keys, seeds, shares or tensor values. */
#ifndef FEDC_UTIL_LOG_H
#define FEDC_UTIL_LOG_H

enum fedc_log_level {
  FEDC_LOG_DEBUG = 0,
  FEDC_LOG_INFO,
  FEDC_LOG_WARN,
  FEDC_LOG_ERROR,
  FEDC_LOG_OFF,
};

void fedc_log_set_level(enum fedc_log_level level);
enum fedc_log_level fedc_log_get_level(void);

/* Parses "debug", "info", "warn", "error" or "off". Returns 0 or FEDC_EINVAL. */
int fedc_log_parse_level(const char *name, enum fedc_log_level *out);

/* Redirects log lines to the file at path (appending). Returns 0 or FEDC_EIO. */
int fedc_log_open(const char *path);

void fedc_log(enum fedc_log_level level, const char *component,
              const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define fedc_debug(comp, ...) fedc_log(FEDC_LOG_DEBUG, comp, __VA_ARGS__)
#define fedc_info(comp, ...)  fedc_log(FEDC_LOG_INFO, comp, __VA_ARGS__)
#define fedc_warn(comp, ...)  fedc_log(FEDC_LOG_WARN, comp, __VA_ARGS__)
#define fedc_error(comp, ...) fedc_log(FEDC_LOG_ERROR, comp, __VA_ARGS__)

#endif
