#include <check.h>
#include <stdlib.h>

#include "net/backoff.h"

START_TEST(backoff_windows_double_then_cap)
{
  static const uint64_t expected[] = { 100, 200, 400, 800, 1600, 3200, 5000,
                                       5000, 5000 };
  fedc_backoff b;

  fedc_backoff_init(&b, 100, 5000, 1);
  for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
    ck_assert_uint_eq(fedc_backoff_window(&b), expected[i]);
    ck_assert_uint_le(fedc_backoff_next(&b), expected[i]);
    ck_assert_uint_eq(b.attempt, i + 1);
  }
}
END_TEST

START_TEST(backoff_jitter_spans_window)
{
  fedc_backoff b;
  uint64_t min = UINT64_MAX, max = 0, sum = 0;
  const int draws = 20000;

  /* With the cap equal to the base, every draw uses the window [0, 1000]. */
  fedc_backoff_init(&b, 1000, 1000, 42);
  for (int i = 0; i < draws; i++) {
    uint64_t d = fedc_backoff_next(&b);

    ck_assert_uint_le(d, 1000);
    min = d < min ? d : min;
    max = d > max ? d : max;
    sum += d;
  }
  /* Full jitter reaches both ends and averages half the window: the mean
   * of 20000 uniform draws has a standard deviation of about 2. */
  ck_assert_uint_lt(min, 10);
  ck_assert_uint_gt(max, 990);
  ck_assert_uint_gt(sum / draws, 490);
  ck_assert_uint_lt(sum / draws, 510);
}
END_TEST

START_TEST(backoff_delays_grow)
{
  fedc_backoff b;
  uint64_t early = 0, late = 0;

  /* Mean of the first two windows (100, 200) against attempts 6-7 (6400,
   * 10000 capped), summed over many restarts. */
  fedc_backoff_init(&b, 100, 10000, 7);
  for (int run = 0; run < 500; run++) {
    fedc_backoff_reset(&b);
    for (int i = 0; i < 8; i++) {
      uint64_t d = fedc_backoff_next(&b);

      if (i < 2)
        early += d;
      else if (i >= 6)
        late += d;
    }
  }
  ck_assert_uint_gt(late, 20 * early);
}
END_TEST

START_TEST(backoff_reset_restarts)
{
  fedc_backoff b;

  fedc_backoff_init(&b, 250, 60000, 3);
  for (int i = 0; i < 10; i++)
    fedc_backoff_next(&b);
  ck_assert_uint_eq(fedc_backoff_window(&b), 60000);
  fedc_backoff_reset(&b);
  ck_assert_uint_eq(b.attempt, 0);
  ck_assert_uint_eq(fedc_backoff_window(&b), 250);
  ck_assert_uint_le(fedc_backoff_next(&b), 250);
}
END_TEST

START_TEST(backoff_no_overflow)
{
  fedc_backoff b;

  fedc_backoff_init(&b, UINT64_MAX / 3, UINT64_MAX, 5);
  for (int i = 0; i < 200; i++)
    fedc_backoff_next(&b);
  ck_assert_uint_eq(fedc_backoff_window(&b), UINT64_MAX);

  fedc_backoff_init(&b, 1, 1000, 5);
  b.attempt = UINT32_MAX - 1;
  ck_assert_uint_eq(fedc_backoff_window(&b), 1000);
  fedc_backoff_next(&b);
  fedc_backoff_next(&b);
  ck_assert_uint_eq(b.attempt, UINT32_MAX);
}
END_TEST

START_TEST(backoff_bad_bounds_raised)
{
  fedc_backoff b;

  fedc_backoff_init(&b, 0, 0, 1);
  ck_assert_uint_eq(b.base_ms, 1);
  ck_assert_uint_eq(b.cap_ms, 1);
  fedc_backoff_init(&b, 500, 100, 1);
  ck_assert_uint_eq(b.cap_ms, 500);
  ck_assert_uint_le(fedc_backoff_next(&b), 500);
}
END_TEST

START_TEST(backoff_seeds_differ)
{
  fedc_backoff a, b;
  int same = 0;

  fedc_backoff_init(&a, 1000, 1000, 1);
  fedc_backoff_init(&b, 1000, 1000, 2);
  for (int i = 0; i < 100; i++)
    same += fedc_backoff_next(&a) == fedc_backoff_next(&b);
  ck_assert_int_lt(same, 10);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("net_backoff");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, backoff_windows_double_then_cap);
  tcase_add_test(tc, backoff_jitter_spans_window);
  tcase_add_test(tc, backoff_delays_grow);
  tcase_add_test(tc, backoff_reset_restarts);
  tcase_add_test(tc, backoff_no_overflow);
  tcase_add_test(tc, backoff_bad_bounds_raised);
  tcase_add_test(tc, backoff_seeds_differ);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
