#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "eventq.h"
#include "util/error.h"
#include "util/rng.h"

START_TEST(eventq_pops_in_time_order)
{
  fedc_eventq q;
  fedc_event ev;
  fedc_rng rng;
  double last = 0.0;

  fedc_eventq_init(&q);
  fedc_rng_seed(&rng, 3);
  for (uint32_t i = 0; i < 1000; i++)
    ck_assert_int_eq(fedc_eventq_push(&q, fedc_rng_uniform(&rng) * 100.0,
                                      1, i, 0), 0);
  ck_assert_uint_eq(fedc_eventq_size(&q), 1000);

  for (int i = 0; i < 1000; i++) {
    ck_assert_int_eq(fedc_eventq_pop(&q, &ev), 1);
    ck_assert(ev.time >= last);
    ck_assert(fedc_eventq_now(&q) == ev.time);
    last = ev.time;
  }
  ck_assert_int_eq(fedc_eventq_pop(&q, &ev), 0);
  fedc_eventq_close(&q);
}
END_TEST

START_TEST(eventq_ties_keep_push_order)
{
  fedc_eventq q;
  fedc_event ev;

  fedc_eventq_init(&q);
  for (uint32_t i = 0; i < 50; i++)
    ck_assert_int_eq(fedc_eventq_push(&q, 5.0, 0, i, i * 10u), 0);
  ck_assert_int_eq(fedc_eventq_push(&q, 1.0, 7, 99, 0), 0);

  ck_assert_int_eq(fedc_eventq_pop(&q, &ev), 1);
  ck_assert_uint_eq(ev.client, 99);
  ck_assert_uint_eq(ev.kind, 7);
  for (uint32_t i = 0; i < 50; i++) {
    ck_assert_int_eq(fedc_eventq_pop(&q, &ev), 1);
    ck_assert_uint_eq(ev.client, i);
    ck_assert_uint_eq(ev.arg, i * 10u);
  }
  fedc_eventq_close(&q);
}
END_TEST

START_TEST(eventq_rejects_past_and_nan)
{
  fedc_eventq q;
  fedc_event ev;

  fedc_eventq_init(&q);
  ck_assert_int_eq(fedc_eventq_push(&q, 10.0, 0, 0, 0), 0);
  ck_assert_int_eq(fedc_eventq_pop(&q, &ev), 1);
  ck_assert_int_eq(fedc_eventq_push(&q, 9.5, 0, 0, 0), FEDC_EINVAL);
  ck_assert_int_eq(fedc_eventq_push(&q, NAN, 0, 0, 0), FEDC_EINVAL);
  ck_assert_int_eq(fedc_eventq_push(&q, INFINITY, 0, 0, 0), FEDC_EINVAL);
  ck_assert_int_eq(fedc_eventq_push(&q, 10.0, 0, 0, 0), 0);
  ck_assert_ptr_nonnull(fedc_eventq_peek(&q));
  ck_assert(fedc_eventq_peek(&q)->time == 10.0);
  fedc_eventq_close(&q);
  ck_assert_ptr_null(fedc_eventq_peek(&q));
}
END_TEST

START_TEST(eventq_interleaved_push_pop)
{
  fedc_eventq q;
  fedc_event ev;
  fedc_rng rng;
  double last = 0.0;
  int popped = 0;

  /* A simulation pushes events while it pops them, always in the future. */
  fedc_eventq_init(&q);
  fedc_rng_seed(&rng, 11);
  ck_assert_int_eq(fedc_eventq_push(&q, 0.0, 0, 0, 0), 0);
  while (fedc_eventq_pop(&q, &ev) == 1 && popped < 20000) {
    ck_assert(ev.time >= last);
    last = ev.time;
    popped++;
    for (int k = 0; k < 2 && fedc_eventq_size(&q) < 500; k++)
      ck_assert_int_eq(fedc_eventq_push(&q, ev.time +
                                        fedc_rng_uniform(&rng), 0, 0, 0), 0);
  }
  ck_assert_int_eq(popped, 20000);
  fedc_eventq_close(&q);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("sim_eventq");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, eventq_pops_in_time_order);
  tcase_add_test(tc, eventq_ties_keep_push_order);
  tcase_add_test(tc, eventq_rejects_past_and_nan);
  tcase_add_test(tc, eventq_interleaved_push_pop);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
