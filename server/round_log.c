#include "server/round_log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"

int fedc_round_log_open(fedc_round_log *log, const char *path)
{
  log->file = fopen(path, "a");
  if (log->file == NULL) {
    fedc_error("server", "cannot open metrics file path=%s: %s", path,
               strerror(errno));
    return FEDC_EIO;
  }
  return 0;
}

/* Formats a value for JSON, which has no NaN or Inf: null stands for a
 * value that is missing or not finite. */
static void format_number(char *out, size_t size, bool present, double value)
{
  if (present && isfinite(value))
    snprintf(out, size, "%.6f", value);
  else
    snprintf(out, size, "null");
}

int fedc_round_log_write(fedc_round_log *log, const fedc_round_metrics *m)
{
  char test_acc[32], test_loss[32], train_acc[32], train_loss[32];
  int n;

  if (log->file == NULL)
    return 0;
  format_number(test_acc, sizeof(test_acc), m->evaluated, m->test_accuracy);
  format_number(test_loss, sizeof(test_loss), m->evaluated, m->test_loss);
  format_number(train_acc, sizeof(train_acc), m->has_train_metrics,
                m->train_accuracy);
  format_number(train_loss, sizeof(train_loss), m->has_train_metrics,
                m->train_loss);
  n = fprintf(log->file,
              "{\"round\": %" PRIu64 ", \"aggregated\": %s, "
              "\"test_accuracy\": %s, \"test_loss\": %s, "
              "\"train_accuracy\": %s, \"train_loss\": %s, "
              "\"clients_sampled\": %" PRIu32 ", "
              "\"clients_reported\": %" PRIu32 ", "
              "\"clients_lost\": %" PRIu32 ", "
              "\"clients_cancelled\": %" PRIu32 ", "
              "\"updates_too_stale\": %" PRIu32 ", \"seconds\": %.3f, "
              "\"bytes_sent\": %" PRIu64 ", \"bytes_received\": %" PRIu64
              "}\n",
              m->round, m->aggregated ? "true" : "false", test_acc, test_loss,
              train_acc, train_loss, m->clients_sampled, m->clients_reported,
              m->clients_lost, m->clients_cancelled, m->updates_too_stale,
              m->seconds, m->bytes_sent, m->bytes_received);
  if (n < 0 || fflush(log->file) != 0) {
    fedc_error("server", "failed to write the metrics file: %s",
               strerror(errno));
    return FEDC_EIO;
  }
  return 0;
}

void fedc_round_log_close(fedc_round_log *log)
{
  if (log->file != NULL)
    fclose(log->file);
  log->file = NULL;
}
