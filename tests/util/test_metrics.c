#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/metrics.h"

START_TEST(metrics_counts_and_renders)
{
  fedc_metrics reg;
  char *text = NULL;
  size_t len = 0;

  fedc_metrics_init(&reg);
  fedc_metrics_add(&reg, FEDC_METRIC_COUNTER, "fedc_rejected_total",
                   "reason=\"nan\"", "Updates rejected.", 1);
  fedc_metrics_add(&reg, FEDC_METRIC_COUNTER, "fedc_rejected_total",
                   "reason=\"nan\"", "Updates rejected.", 2);
  fedc_metrics_add(&reg, FEDC_METRIC_COUNTER, "fedc_rejected_total",
                   "reason=\"shape\"", "Updates rejected.", 1);
  fedc_metrics_add(&reg, FEDC_METRIC_GAUGE, "fedc_round", NULL,
                   "Current round.", 7);

  ck_assert_double_eq(fedc_metrics_value(&reg, "fedc_rejected_total",
                                         "reason=\"nan\""), 3);
  ck_assert_double_eq(fedc_metrics_value(&reg, "fedc_round", ""), 7);
  ck_assert_double_eq(fedc_metrics_value(&reg, "fedc_missing", ""), 0);

  ck_assert_int_eq(fedc_metrics_render(&reg, &text, &len), 0);
  ck_assert_uint_eq(strlen(text), len);
  ck_assert_str_eq(text,
    "# HELP fedc_rejected_total Updates rejected.\n"
    "# TYPE fedc_rejected_total counter\n"
    "fedc_rejected_total{reason=\"nan\"} 3\n"
    "fedc_rejected_total{reason=\"shape\"} 1\n"
    "# HELP fedc_round Current round.\n"
    "# TYPE fedc_round gauge\n"
    "fedc_round 7\n");
  free(text);
  fedc_metrics_close(&reg);
}
END_TEST

START_TEST(metrics_groups_late_labels)
{
  fedc_metrics reg;
  char *text = NULL;
  size_t len = 0;

  fedc_metrics_init(&reg);
  fedc_metrics_add(&reg, FEDC_METRIC_COUNTER, "fedc_rejected_total",
                   "reason=\"shape\"", "Updates rejected.", 1);
  fedc_metrics_add(&reg, FEDC_METRIC_GAUGE, "fedc_round", NULL,
                   "Current round.", 2);
  fedc_metrics_add(&reg, FEDC_METRIC_COUNTER, "fedc_rejected_total",
                   "reason=\"nan\"", "Updates rejected.", 1);

  ck_assert_int_eq(fedc_metrics_render(&reg, &text, &len), 0);
  ck_assert_str_eq(text,
    "# HELP fedc_rejected_total Updates rejected.\n"
    "# TYPE fedc_rejected_total counter\n"
    "fedc_rejected_total{reason=\"shape\"} 1\n"
    "fedc_rejected_total{reason=\"nan\"} 1\n"
    "# HELP fedc_round Current round.\n"
    "# TYPE fedc_round gauge\n"
    "fedc_round 2\n");
  free(text);
  fedc_metrics_close(&reg);
}
END_TEST

START_TEST(metrics_render_grows_buffer)
{
  fedc_metrics reg;
  char *text = NULL;
  size_t len = 0;
  char labels[64];

  fedc_metrics_init(&reg);
  for (int i = 0; i < 500; i++) {
    snprintf(labels, sizeof(labels), "client=\"client-%04d\"", i);
    fedc_metrics_add(&reg, FEDC_METRIC_COUNTER, "fedc_updates_total", labels,
                     "Updates per client.", i);
  }
  ck_assert_uint_eq(reg.count, 500);
  ck_assert_int_eq(fedc_metrics_render(&reg, &text, &len), 0);
  ck_assert_ptr_nonnull(strstr(text,
                               "fedc_updates_total{client=\"client-0499\"} 499\n"));
  free(text);
  fedc_metrics_close(&reg);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, metrics_counts_and_renders);
  tcase_add_test(tc, metrics_groups_late_labels);
  tcase_add_test(tc, metrics_render_grows_buffer);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
