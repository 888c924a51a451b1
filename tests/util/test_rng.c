#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "util/rng.h"

START_TEST(rng_same_seed_same_stream)
{
  fedc_rng a, b;

  fedc_rng_seed(&a, 42);
  fedc_rng_seed(&b, 42);
  for (int i = 0; i < 1000; i++)
    ck_assert_uint_eq(fedc_rng_next(&a), fedc_rng_next(&b));
}
END_TEST

START_TEST(rng_streams_differ)
{
  fedc_rng a, b;

  fedc_rng_seed2(&a, 42, 1);
  fedc_rng_seed2(&b, 42, 2);
  ck_assert_uint_ne(fedc_rng_next(&a), fedc_rng_next(&b));
}
END_TEST

START_TEST(rng_below_in_range_and_uniform)
{
  fedc_rng rng;
  int counts[7] = { 0 };

  fedc_rng_seed(&rng, 7);
  for (int i = 0; i < 70000; i++) {
    uint64_t x = fedc_rng_below(&rng, 7);

    ck_assert_uint_lt(x, 7);
    counts[x]++;
  }
  /* Each bin expects 10000; 5 sigma is about 460. */
  for (int i = 0; i < 7; i++)
    ck_assert_int_lt(abs(counts[i] - 10000), 460);
}
END_TEST

START_TEST(rng_normal_moments)
{
  fedc_rng rng;
  double sum = 0, sum2 = 0;
  const int n = 200000;

  fedc_rng_seed(&rng, 3);
  for (int i = 0; i < n; i++) {
    double x = fedc_rng_normal(&rng);

    sum += x;
    sum2 += x * x;
  }
  ck_assert_double_lt(fabs(sum / n), 0.01);
  ck_assert_double_lt(fabs(sum2 / n - 1.0), 0.02);
}
END_TEST

START_TEST(rng_gamma_mean)
{
  static const double shapes[] = { 0.1, 0.5, 1.0, 3.0 };
  fedc_rng rng;
  const int n = 100000;

  fedc_rng_seed(&rng, 11);
  for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
    double sum = 0;

    for (int i = 0; i < n; i++) {
      double x = fedc_rng_gamma(&rng, shapes[k]);

      ck_assert(x >= 0.0 && isfinite(x));
      sum += x;
    }
    /* Gamma(a, 1) has mean a and variance a. */
    ck_assert_double_lt(fabs(sum / n - shapes[k]),
                        5.0 * sqrt(shapes[k] / n) + 1e-3);
  }
}
END_TEST

START_TEST(rng_shuffle_is_permutation)
{
  fedc_rng rng;
  uint32_t items[100];
  int seen[100] = { 0 };

  for (uint32_t i = 0; i < 100; i++)
    items[i] = i;
  fedc_rng_seed(&rng, 5);
  fedc_rng_shuffle_u32(&rng, items, 100);
  for (int i = 0; i < 100; i++)
    seen[items[i]]++;
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(seen[i], 1);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("rng");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, rng_same_seed_same_stream);
  tcase_add_test(tc, rng_streams_differ);
  tcase_add_test(tc, rng_below_in_range_and_uniform);
  tcase_add_test(tc, rng_normal_moments);
  tcase_add_test(tc, rng_gamma_mean);
  tcase_add_test(tc, rng_shuffle_is_permutation);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
