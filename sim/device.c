#include "device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/rng.h"

void fedc_device_class_default(fedc_device_class *c, const char *name)
{
  memset(c, 0, sizeof(*c));
  snprintf(c->name, sizeof(c->name), "%s", name);
  c->weight = 1.0;
  c->speed = 1.0;
  c->down_bps = 10e6;
  c->up_bps = 2e6;
  c->online = 1.0;
}

void fedc_device_model_init(fedc_device_model *m)
{
  memset(m, 0, sizeof(*m));
}

void fedc_device_model_close(fedc_device_model *m)
{
  free(m->classes);
  free(m->overrides);
  fedc_device_model_init(m);
}

static int nonnegative(double x)
{
  return isfinite(x) && x >= 0.0;
}

static int fraction(double x)
{
  return nonnegative(x) && x <= 1.0;
}

static int class_valid(const fedc_device_class *c)
{
  return nonnegative(c->weight) && nonnegative(c->speed) && c->speed > 0 &&
         nonnegative(c->speed_sigma) && nonnegative(c->down_bps) &&
         c->down_bps > 0 && nonnegative(c->up_bps) && c->up_bps > 0 &&
         nonnegative(c->bandwidth_sigma) && fraction(c->dropout) &&
         nonnegative(c->period) && fraction(c->online);
}

int fedc_device_check(const fedc_device *d)
{
  int ok = nonnegative(d->speed) && d->speed > 0 &&
           nonnegative(d->down_bps) && d->down_bps > 0 &&
           nonnegative(d->up_bps) && d->up_bps > 0 &&
           fraction(d->dropout) && nonnegative(d->period) &&
           fraction(d->online) && nonnegative(d->phase);

  return ok ? 0 : FEDC_EINVAL;
}

int fedc_device_model_add_class(fedc_device_model *m,
                                const fedc_device_class *c)
{
  fedc_device_class *classes;

  if (!class_valid(c))
    return FEDC_EINVAL;
  classes = realloc(m->classes, (m->class_count + 1) * sizeof(*classes));
  if (classes == NULL)
    return FEDC_ENOMEM;
  classes[m->class_count++] = *c;
  m->classes = classes;
  return 0;
}

/* Returns the index of the first override whose client is >= client. */
static size_t override_lower_bound(const fedc_device_model *m,
                                   uint32_t client)
{
  size_t lo = 0, hi = m->override_count;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (m->overrides[mid].client < client)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int fedc_device_model_set_client(fedc_device_model *m, uint32_t client,
                                 const fedc_device *d)
{
  size_t at = override_lower_bound(m, client);
  fedc_device_override *grown;

  if (fedc_device_check(d) != 0)
    return FEDC_EINVAL;
  if (at < m->override_count && m->overrides[at].client == client) {
    m->overrides[at].device = *d;
    return 0;
  }

  grown = realloc(m->overrides, (m->override_count + 1) * sizeof(*grown));
  if (grown == NULL)
    return FEDC_ENOMEM;
  m->overrides = grown;

  /* Files usually list clients in ascending order, which appends. */
  memmove(&grown[at + 1], &grown[at],
          (m->override_count - at) * sizeof(*grown));
  grown[at] = (fedc_device_override){ .client = client, .device = *d };
  m->override_count++;
  return 0;
}

static const fedc_device_class *pick_class(const fedc_device_model *m,
                                           fedc_rng *rng)
{
  double total = 0.0, x;

  for (size_t i = 0; i < m->class_count; i++)
    total += m->classes[i].weight;
  if (total <= 0.0)
    return &m->classes[0];

  x = fedc_rng_uniform(rng) * total;
  for (size_t i = 0; i < m->class_count; i++) {
    if (x < m->classes[i].weight)
      return &m->classes[i];
    x -= m->classes[i].weight;
  }
  return &m->classes[m->class_count - 1];
}

static float lognormal(fedc_rng *rng, double median, double sigma)
{
  return (float)(median * exp(sigma * fedc_rng_normal(rng)));
}

/* Every draw is taken, even with a zero sigma, so that changing one
 * class's spread does not shift the values drawn for later fields. */
static void draw_from_class(const fedc_device_class *c, fedc_rng *rng,
                            fedc_device *out)
{
  out->speed = lognormal(rng, c->speed, c->speed_sigma);
  out->down_bps = lognormal(rng, c->down_bps, c->bandwidth_sigma);
  out->up_bps = lognormal(rng, c->up_bps, c->bandwidth_sigma);
  out->dropout = (float)c->dropout;
  out->period = (float)c->period;
  out->online = (float)c->online;
  out->phase = (float)(fedc_rng_uniform(rng) * c->period);
}

void fedc_device_draw(const fedc_device_model *m, uint64_t seed,
                      uint32_t client, fedc_device *out)
{
  size_t at = override_lower_bound(m, client);
  fedc_device_class reference;
  fedc_rng rng;

  if (at < m->override_count && m->overrides[at].client == client) {
    *out = m->overrides[at].device;
    return;
  }

  fedc_rng_seed2(&rng, seed, client);
  if (m->class_count == 0) {
    fedc_device_class_default(&reference, "reference");
    draw_from_class(&reference, &rng, out);
    return;
  }
  draw_from_class(pick_class(m, &rng), &rng, out);
}

static int always_same(const fedc_device *d)
{
  return d->period <= 0.0f || d->online >= 1.0f || d->online <= 0.0f;
}

/* Returns the start of the availability cycle that contains t. */
static double cycle_start(const fedc_device *d, double t)
{
  double period = d->period;

  return floor((t + d->phase) / period) * period - d->phase;
}

int fedc_device_online(const fedc_device *d, double t)
{
  if (always_same(d))
    return d->online > 0.0f || d->period <= 0.0f;
  return t < cycle_start(d, t) + (double)d->online * d->period;
}

double fedc_device_next_change(const fedc_device *d, double t)
{
  double start, off, next;

  if (always_same(d))
    return INFINITY;

  start = cycle_start(d, t);
  off = start + (double)d->online * d->period;
  next = t < off ? off : start + d->period;

  /* Rounding can land a boundary on or before t; then take the next one. */
  if (next <= t)
    next = t < off ? start + d->period : start + 2.0 * d->period;
  return next;
}

double fedc_device_transfer_seconds(const fedc_device *d, uint64_t bytes,
                                    int upload)
{
  double bps = upload ? d->up_bps : d->down_bps;

  return (double)bytes / bps;
}

double fedc_device_compute_seconds(const fedc_device *d, double flops,
                                   double reference_flops)
{
  return flops / (reference_flops * d->speed);
}
