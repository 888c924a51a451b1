/* Reconnect delays: exponential backoff with full jitter.
 *
 * The n-th delay (counting from 0) is drawn uniformly from
 * [0, min(cap_ms, base_ms * 2^n)] milliseconds. Because the whole window is
 * used, many clients that lost the server at the same moment spread their
 * reconnects out instead of arriving in waves. */
#ifndef FEDC_NET_BACKOFF_H
#define FEDC_NET_BACKOFF_H

#include <stdint.h>

#include "util/rng.h"

typedef struct fedc_backoff {
  /* read-only after fedc_backoff_init() */
  uint64_t base_ms;
  uint64_t cap_ms;
  uint32_t attempt;   /* delays drawn since the last reset */

  /* private */
  fedc_rng rng;
} fedc_backoff;

/* Prepares a backoff with the first window base_ms and the largest window
 * cap_ms. A base_ms of 0 is raised to 1 and a cap_ms below base_ms is raised
 * to base_ms. Clients should pass different seeds (for example one derived
 * from the client id) so that their jitter differs. */
void fedc_backoff_init(fedc_backoff *b, uint64_t base_ms, uint64_t cap_ms,
                       uint64_t seed);

/* Returns the upper end of the window for the next delay, in milliseconds,
 * without drawing. */
uint64_t fedc_backoff_window(const fedc_backoff *b);

/* Draws the next delay in milliseconds and counts one attempt. */
uint64_t fedc_backoff_next(fedc_backoff *b);

/* Restarts from the first window, after a successful connection. */
void fedc_backoff_reset(fedc_backoff *b);

#endif
