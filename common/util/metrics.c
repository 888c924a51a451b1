#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

void fedc_metrics_init(fedc_metrics *reg)
{
  memset(reg, 0, sizeof(*reg));
}

void fedc_metrics_close(fedc_metrics *reg)
{
  free(reg->items);
  memset(reg, 0, sizeof(*reg));
}

static fedc_metric *find(const fedc_metrics *reg, const char *name,
                         const char *labels)
{
  for (size_t i = 0; i < reg->count; i++) {
    if (strcmp(reg->items[i].name, name) == 0 &&
        strcmp(reg->items[i].labels, labels) == 0)
      return &reg->items[i];
  }
  return NULL;
}

fedc_metric *fedc_metrics_get(fedc_metrics *reg, enum fedc_metric_kind kind,
                              const char *name, const char *labels,
                              const char *help)
{
  fedc_metric *m;

  if (labels == NULL)
    labels = "";
  m = find(reg, name, labels);
  if (m != NULL)
    return m;
  if (strlen(name) >= sizeof(m->name) || strlen(labels) >= sizeof(m->labels))
    return NULL;

  if (reg->count == reg->capacity) {
    size_t cap = reg->capacity != 0 ? reg->capacity * 2 : 32;
    fedc_metric *items = realloc(reg->items, cap * sizeof(*items));

    if (items == NULL)
      return NULL;
    reg->items = items;
    reg->capacity = cap;
  }
  m = &reg->items[reg->count++];
  memset(m, 0, sizeof(*m));
  snprintf(m->name, sizeof(m->name), "%s", name);
  snprintf(m->labels, sizeof(m->labels), "%s", labels);
  snprintf(m->help, sizeof(m->help), "%s", help != NULL ? help : "");
  m->kind = kind;
  return m;
}

void fedc_metrics_add(fedc_metrics *reg, enum fedc_metric_kind kind,
                      const char *name, const char *labels, const char *help,
                      double delta)
{
  fedc_metric *m = fedc_metrics_get(reg, kind, name, labels, help);

  if (m != NULL)
    m->value += delta;
}

double fedc_metrics_value(const fedc_metrics *reg, const char *name,
                          const char *labels)
{
  const fedc_metric *m = find(reg, name, labels != NULL ? labels : "");

  return m != NULL ? m->value : 0.0;
}

struct text {
  char *buf;
  size_t len;
  size_t cap;
  int failed;
};

static void append(struct text *t, const char *fmt, ...)
{
  va_list ap;
  int n;

  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = 1;
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    char *grown = realloc(t->buf, t->cap * 2 + (size_t)n);
    if (grown == NULL) {
      t->failed = 1;
      return;
    }
    t->buf = grown;
    t->cap = t->cap * 2 + (size_t)n;
  }
}

static int name_seen_before(const fedc_metrics *reg, size_t index)
{
  for (size_t i = 0; i < index; i++) {
    if (strcmp(reg->items[i].name, reg->items[index].name) == 0)
      return 1;
  }
  return 0;
}

static void append_sample(struct text *t, const fedc_metric *m)
{
  if (m->labels[0] != '\0')
    append(t, "%s{%s} %.17g\n", m->name, m->labels, m->value);
  else
    append(t, "%s %.17g\n", m->name, m->value);
}

int fedc_metrics_render(const fedc_metrics *reg, char **out, size_t *len)
{
  struct text t = { malloc(4096), 0, 4096, 0 };

  if (t.buf == NULL)
    return FEDC_ENOMEM;
  t.buf[0] = '\0';
  /* The text format requires all samples of one metric name in a single
   * group under its HELP and TYPE lines, but a labelled sample can be
   * registered long after the first one, so gather each group here. */
  for (size_t i = 0; i < reg->count && !t.failed; i++) {
    const fedc_metric *m = &reg->items[i];

    if (name_seen_before(reg, i))
      continue;
    append(&t, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
           m->kind == FEDC_METRIC_COUNTER ? "counter" : "gauge");
    for (size_t j = i; j < reg->count; j++) {
      if (strcmp(reg->items[j].name, m->name) == 0)
        append_sample(&t, &reg->items[j]);
    }
  }
  if (t.failed) {
    free(t.buf);
    return FEDC_ENOMEM;
  }
  *out = t.buf;
  *len = t.len;
  return 0;
}
