/* A registry of named counters and gauges, rendered in the Prometheus text
 * exposition format (version 0.0.4) for a /metrics endpoint.
 *
 * Metrics are registered once at startup and updated from the event loop
 * thread; the registry does no locking. */
#ifndef FEDC_UTIL_METRICS_H
#define FEDC_UTIL_METRICS_H

#include <stddef.h>

enum fedc_metric_kind {
  FEDC_METRIC_COUNTER,
  FEDC_METRIC_GAUGE,
};

typedef struct fedc_metric {
  char name[96];             /* e.g. fedc_server_rejected_total */
  char labels[96];           /* e.g. reason="nan"; may be empty */
  char help[160];
  enum fedc_metric_kind kind;
  double value;
} fedc_metric;

typedef struct fedc_metrics {
  fedc_metric *items;
  size_t count;
  size_t capacity;
} fedc_metrics;

void fedc_metrics_init(fedc_metrics *reg);
void fedc_metrics_close(fedc_metrics *reg);

/* Returns the metric with this name and label set, registering it (value 0)
 * on first use; NULL when out of memory or a name is too long. */
fedc_metric *fedc_metrics_get(fedc_metrics *reg, enum fedc_metric_kind kind,
                              const char *name, const char *labels,
                              const char *help);

/* Adds delta to a counter or gauge, registering it on first use. */
void fedc_metrics_add(fedc_metrics *reg, enum fedc_metric_kind kind,
                      const char *name, const char *labels, const char *help,
                      double delta);

/* Returns the value, or 0 when the metric is not registered. */
double fedc_metrics_value(const fedc_metrics *reg, const char *name,
                          const char *labels);

/* Renders every metric into a new malloc'ed string; HELP and TYPE lines
 * come once per name. Returns 0 or FEDC_ENOMEM. */
int fedc_metrics_render(const fedc_metrics *reg, char **out, size_t *len);

#endif
