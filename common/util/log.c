#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "error.h"

static enum fedc_log_level log_level = FEDC_LOG_INFO;
static FILE *log_file;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

void fedc_log_set_level(enum fedc_log_level level)
{
  log_level = level;
}

enum fedc_log_level fedc_log_get_level(void)
{
  return log_level;
}

int fedc_log_parse_level(const char *name, enum fedc_log_level *out)
{
  static const char *const names[] = { "debug", "info", "warn", "error", "off" };

  for (int i = 0; i <= FEDC_LOG_OFF; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (enum fedc_log_level)i;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

int fedc_log_open(const char *path)
{
  FILE *f = fopen(path, "a");

  if (f == NULL)
    return FEDC_EIO;
  setvbuf(f, NULL, _IOLBF, 0);
  if (log_file != NULL)
    fclose(log_file);
  log_file = f;
  return 0;
}

void fedc_log(enum fedc_log_level level, const char *component,
              const char *fmt, ...)
{
  struct timespec now;
  struct tm tm;
  char stamp[32];
  char line[2048];
  va_list ap;
  int n;

  if (level < log_level || level >= FEDC_LOG_OFF)
    return;

  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

  n = snprintf(line, sizeof(line), "%s.%03ldZ %-5s %s: ", stamp,
               now.tv_nsec / 1000000, level_names[level], component);
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof(line))
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  va_end(ap);

  /* One fputs per line keeps lines from different threads whole. */
  fprintf(log_file != NULL ? log_file : stderr, "%s\n", line);
}
