/* Times every aggregation strategy on one synthetic round and prints one
 * line per strategy: milliseconds per add, milliseconds for finish, and
 * fedc_agg_memory(). Not a test; run it on an optimised build without
 * sanitizers:
 *
 *   bench_agg [parameters [updates]]     (defaults 1000000 and 20) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "agg/agg.h"
#include "util/error.h"
#include "util/rng.h"

static double now_seconds(void)
{
  struct timespec t;

  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Runs one round of n updates, each the base update with one value
 * changed so that no two are equal. */
static int time_strategy(enum fedc_agg_strategy strategy,
                         fedc_tensor_list *global, fedc_tensor_list *update,
                         size_t n)
{
  fedc_agg_config config;
  fedc_agg *agg = NULL;
  float *x = update->items[0].data;
  uint64_t numel = update->items[0].shape[0];
  double start, added, finished;
  int rc;

  fedc_agg_config_default(&config, strategy);
  rc = fedc_agg_new(&config, global, &agg);
  if (rc < 0)
    return rc;

  start = now_seconds();
  for (size_t i = 0; i < n && rc == 0; i++) {
    x[i % numel] += 0.01f;
    rc = fedc_agg_add(agg, update, 1.0);
  }
  added = now_seconds();
  if (rc == 0)
    rc = fedc_agg_finish(agg, global);
  finished = now_seconds();

  printf("%-13s parameters=%llu updates=%zu add_ms=%.2f finish_ms=%.1f "
         "memory_mb=%.1f result=%s\n",
         fedc_agg_strategy_name(strategy), (unsigned long long)numel, n,
         (added - start) * 1e3 / (double)n, (finished - added) * 1e3,
         (double)fedc_agg_memory(agg, n) / 1e6, fedc_errname(rc));
  fedc_agg_free(&agg);
  return rc;
}

int main(int argc, char **argv)
{
  uint64_t shape[1] = {argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000};
  size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 20;
  fedc_tensor_list global, update;
  fedc_rng rng;
  float *x;
  int status = EXIT_SUCCESS;

  fedc_tensor_list_init(&global);
  fedc_tensor_list_init(&update);
  if (shape[0] == 0 || n == 0 ||
      fedc_tensor_list_add(&global, "w", FEDC_DTYPE_F32, 1, shape, NULL) ||
      fedc_tensor_list_add(&update, "w", FEDC_DTYPE_F32, 1, shape, NULL)) {
    fprintf(stderr, "usage: bench_agg [parameters [updates]], both > 0\n");
    fedc_tensor_list_close(&global);
    fedc_tensor_list_close(&update);
    return EXIT_FAILURE;
  }

  fedc_rng_seed(&rng, 1);
  x = update.items[0].data;
  for (uint64_t j = 0; j < shape[0]; j++)
    x[j] = (float)(fedc_rng_uniform(&rng) - 0.5);
  for (int s = FEDC_AGG_FEDAVG; s <= FEDC_AGG_MULTI_KRUM; s++)
    if (time_strategy((enum fedc_agg_strategy)s, &global, &update, n) < 0)
      status = EXIT_FAILURE;

  fedc_tensor_list_close(&global);
  fedc_tensor_list_close(&update);
  return status;
}
