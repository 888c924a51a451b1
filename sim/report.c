#include "report.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "util/error.h"

/* JSON has no NaN, so a metric that was not measured is written as null. */
static void format_number(char *buf, size_t len, int digits, double x)
{
  if (isfinite(x))
    snprintf(buf, len, "%.*f", digits, x);
  else
    snprintf(buf, len, "null");
}

static const char *boolean(bool value)
{
  return value ? "true" : "false";
}

int fedc_report_write_jsonl(FILE *out, const fedc_sim_record *rec,
                            int deterministic)
{
  const fedc_round_metrics *m = &rec->metrics;
  char test_acc[32], test_loss[32], train_acc[32], train_loss[32];
  char seconds[48] = "", simulated[32], clock[32];
  int n;

  format_number(test_acc, sizeof(test_acc), 6,
                m->evaluated ? m->test_accuracy : NAN);
  format_number(test_loss, sizeof(test_loss), 6,
                m->evaluated ? m->test_loss : NAN);
  format_number(train_acc, sizeof(train_acc), 6,
                m->has_train_metrics ? m->train_accuracy : NAN);
  format_number(train_loss, sizeof(train_loss), 6,
                m->has_train_metrics ? m->train_loss : NAN);
  format_number(simulated, sizeof(simulated), 3, m->seconds);
  format_number(clock, sizeof(clock), 3, rec->simulated_clock);
  if (!deterministic)
    snprintf(seconds, sizeof(seconds), "\"seconds\": %.3f, ",
             rec->real_seconds);

  n = fprintf(out,
              "{\"round\": %llu, \"aggregated\": %s, "
              "\"test_accuracy\": %s, \"test_loss\": %s, "
              "\"train_accuracy\": %s, \"train_loss\": %s, "
              "\"clients_sampled\": %u, \"clients_reported\": %u, "
              "\"clients_lost\": %u, \"clients_cancelled\": %u, "
              "\"updates_too_stale\": %u, %s"
              "\"bytes_sent\": %llu, \"bytes_received\": %llu, "
              "\"simulated_seconds\": %s, \"simulated_clock\": %s}\n",
              (unsigned long long)m->round, boolean(m->aggregated), test_acc,
              test_loss, train_acc, train_loss, m->clients_sampled,
              m->clients_reported, m->clients_lost, m->clients_cancelled,
              m->updates_too_stale, seconds,
              (unsigned long long)m->bytes_sent,
              (unsigned long long)m->bytes_received, simulated, clock);
  if (n < 0 || fflush(out) != 0)
    return FEDC_EIO;
  return 0;
}

void fedc_progress_init(fedc_progress *p, FILE *out, uint64_t total_rounds)
{
  p->out = out != NULL && isatty(fileno(out)) ? out : NULL;
  p->total_rounds = total_rounds;
  p->width = 30;
}

void fedc_format_duration(double seconds, char *buf, size_t len)
{
  unsigned long long s = (unsigned long long)(seconds + 0.5);

  if (!isfinite(seconds) || seconds < 0)
    snprintf(buf, len, "?");
  else if (seconds < 60)
    snprintf(buf, len, "%.1fs", seconds);
  else if (s < 3600)
    snprintf(buf, len, "%llum%02llus", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, len, "%lluh%02llum", s / 3600, s % 3600 / 60);
  else
    snprintf(buf, len, "%llud%02lluh", s / 86400, s % 86400 / 3600);
}

void fedc_progress_update(fedc_progress *p, const fedc_sim_record *rec,
                          double real_total)
{
  char bar[128], simulated[32], real[32];
  const fedc_round_metrics *m = &rec->metrics;
  uint64_t total = p->total_rounds != 0 ? p->total_rounds : 1;
  int filled = (int)(m->round * (uint64_t)p->width / total);

  if (p->out == NULL)
    return;
  if (filled > p->width)
    filled = p->width;
  memset(bar, '#', (size_t)filled);
  memset(bar + filled, '.', (size_t)(p->width - filled));
  bar[p->width] = '\0';

  fedc_format_duration(rec->simulated_clock, simulated, sizeof(simulated));
  fedc_format_duration(real_total, real, sizeof(real));
  fprintf(p->out, "\r[%s] round %llu/%llu  acc %.4f  %u/%u clients  "
          "sim %s  real %s ", bar, (unsigned long long)m->round,
          (unsigned long long)p->total_rounds,
          m->evaluated ? m->test_accuracy : 0.0, m->clients_reported,
          m->clients_sampled, simulated, real);
  fflush(p->out);
}

void fedc_progress_finish(fedc_progress *p)
{
  if (p->out == NULL)
    return;
  fputc('\n', p->out);
  fflush(p->out);
}
