#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state)
{
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

void fedc_rng_seed(fedc_rng *rng, uint64_t seed)
{
  uint64_t state = seed;

  for (int i = 0; i < 4; i++)
    rng->s[i] = splitmix64(&state);
}

void fedc_rng_seed2(fedc_rng *rng, uint64_t seed, uint64_t stream)
{
  uint64_t mixed = seed;

  /* Run the stream id through splitmix64 so nearby ids give unrelated seeds. */
  mixed ^= splitmix64(&stream);
  fedc_rng_seed(rng, mixed);
}

uint64_t fedc_rng_next(fedc_rng *rng)
{
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;

  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double fedc_rng_uniform(fedc_rng *rng)
{
  /* The top 53 bits fill a double's mantissa exactly. */
  return (double)(fedc_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t fedc_rng_below(fedc_rng *rng, uint64_t bound)
{
  /* Reject the top partial range so every value is equally likely. */
  uint64_t limit = -bound % bound;
  uint64_t x;

  do {
    x = fedc_rng_next(rng);
  } while (x < limit);
  return x % bound;
}

double fedc_rng_normal(fedc_rng *rng)
{
  double u1 = 1.0 - fedc_rng_uniform(rng);  /* (0, 1], so log() is finite */
  double u2 = fedc_rng_uniform(rng);

  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double fedc_rng_gamma(fedc_rng *rng, double shape)
{
  double d, c, x, v, u;

  /* For shape < 1, Gamma(a) = Gamma(a + 1) * U^(1/a). */
  if (shape < 1.0) {
    double u0 = 1.0 - fedc_rng_uniform(rng);

    return fedc_rng_gamma(rng, shape + 1.0) * pow(u0, 1.0 / shape);
  }

  d = shape - 1.0 / 3.0;
  c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    do {
      x = fedc_rng_normal(rng);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    u = fedc_rng_uniform(rng);
    if (u < 1.0 - 0.0331 * x * x * x * x)
      return d * v;
    if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
      return d * v;
  }
}

void fedc_rng_shuffle_u32(fedc_rng *rng, uint32_t *items, size_t n)
{
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)fedc_rng_below(rng, i);
    uint32_t tmp = items[i - 1];

    items[i - 1] = items[j];
    items[j] = tmp;
  }
}
