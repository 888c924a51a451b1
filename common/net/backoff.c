#include "net/backoff.h"

void fedc_backoff_init(fedc_backoff *b, uint64_t base_ms, uint64_t cap_ms,
                       uint64_t seed)
{
  b->base_ms = base_ms != 0 ? base_ms : 1;
  b->cap_ms = cap_ms >= b->base_ms ? cap_ms : b->base_ms;
  b->attempt = 0;
  fedc_rng_seed(&b->rng, seed);
}

uint64_t fedc_backoff_window(const fedc_backoff *b)
{
  uint64_t window = b->base_ms;

  /* A window above cap_ms / 2 jumps to the cap instead of doubling, so the
   * product stays at or below cap_ms. */
  for (uint32_t i = 0; i < b->attempt && window < b->cap_ms; i++)
    window = window > b->cap_ms / 2 ? b->cap_ms : window * 2;
  return window < b->cap_ms ? window : b->cap_ms;
}

uint64_t fedc_backoff_next(fedc_backoff *b)
{
  uint64_t window = fedc_backoff_window(b);

  if (b->attempt < UINT32_MAX)
    b->attempt++;

  /* The window is inclusive, and UINT64_MAX + 1 would wrap to 0. */
  if (window == UINT64_MAX)
    return fedc_rng_next(&b->rng);
  return fedc_rng_below(&b->rng, window + 1);
}

void fedc_backoff_reset(fedc_backoff *b)
{
  b->attempt = 0;
}
