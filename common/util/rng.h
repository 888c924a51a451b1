/* Deterministic pseudo-random numbers: xoshiro256** seeded by splitmix64.
 *
 * Every random choice in fedc (weight init, shuffling, partitioning,
 * sampling, simulated devices) draws from a fedc_rng seeded from the
 * configuration, so the same seed reproduces a run exactly. Not for
 * secrets: cryptographic randomness comes from libsodium. */
#ifndef FEDC_UTIL_RNG_H
#define FEDC_UTIL_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct fedc_rng {
  uint64_t s[4];
} fedc_rng;

/* Seeds the generator; any seed, including 0, is valid. */
void fedc_rng_seed(fedc_rng *rng, uint64_t seed);

/* Derives an independent stream, e.g. one per client: seed mixed with id. */
void fedc_rng_seed2(fedc_rng *rng, uint64_t seed, uint64_t stream);

uint64_t fedc_rng_next(fedc_rng *rng);

/* Uniform double in [0, 1). */
double fedc_rng_uniform(fedc_rng *rng);

/* Uniform integer in [0, bound), without modulo bias; bound must be > 0. */
uint64_t fedc_rng_below(fedc_rng *rng, uint64_t bound);

/* Standard normal N(0, 1) by the Box-Muller transform. */
double fedc_rng_normal(fedc_rng *rng);

/* Gamma(shape, 1) by Marsaglia and Tsang's method; shape > 0. */
double fedc_rng_gamma(fedc_rng *rng, double shape);

/* Shuffles n 32-bit indices in place (Fisher-Yates). */
void fedc_rng_shuffle_u32(fedc_rng *rng, uint32_t *items, size_t n);

#endif
