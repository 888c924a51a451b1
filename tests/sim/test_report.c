#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plot.h"
#include "report.h"
#include "util/error.h"

/* Returns the text written to a memory stream by write(rec). */
static char *record_text(const fedc_sim_record *rec, int deterministic)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);

  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fedc_report_write_jsonl(f, rec, deterministic), 0);
  fclose(f);
  return text;
}

START_TEST(report_jsonl_fields)
{
  fedc_sim_record rec = {
    .metrics = {
      .round = 12, .aggregated = true, .evaluated = true,
      .test_accuracy = 0.8125, .test_loss = 0.5, .has_train_metrics = true,
      .train_accuracy = 0.75, .train_loss = 0.625, .clients_sampled = 10,
      .clients_reported = 9, .clients_lost = 1, .clients_cancelled = 2,
      .updates_too_stale = 3, .seconds = 60.25,
      .bytes_sent = 1000, .bytes_received = 900,
    },
    .real_seconds = 1.25, .simulated_clock = 3600.5,
  };
  char *full = record_text(&rec, 0);
  char *fixed = record_text(&rec, 1);

  ck_assert_str_eq(full,
                   "{\"round\": 12, \"aggregated\": true, "
                   "\"test_accuracy\": 0.812500, \"test_loss\": 0.500000, "
                   "\"train_accuracy\": 0.750000, \"train_loss\": 0.625000, "
                   "\"clients_sampled\": 10, \"clients_reported\": 9, "
                   "\"clients_lost\": 1, \"clients_cancelled\": 2, "
                   "\"updates_too_stale\": 3, \"seconds\": 1.250, "
                   "\"bytes_sent\": 1000, \"bytes_received\": 900, "
                   "\"simulated_seconds\": 60.250, "
                   "\"simulated_clock\": 3600.500}\n");
  ck_assert_ptr_null(strstr(fixed, "\"seconds\""));
  ck_assert_ptr_nonnull(strstr(fixed, "\"updates_too_stale\": 3, "
                                      "\"bytes_sent\""));
  ck_assert_ptr_nonnull(strstr(fixed, "\"simulated_seconds\": 60.250"));
  free(full);
  free(fixed);
}
END_TEST

START_TEST(report_jsonl_unmeasured_is_null)
{
  fedc_sim_record rec = { .metrics = { .round = 1, .aggregated = false } };
  char *text = record_text(&rec, 1);

  ck_assert_ptr_nonnull(strstr(text, "\"aggregated\": false,"));
  ck_assert_ptr_nonnull(strstr(text, "\"test_accuracy\": null,"));
  ck_assert_ptr_nonnull(strstr(text, "\"test_loss\": null,"));
  ck_assert_ptr_nonnull(strstr(text, "\"train_accuracy\": null,"));
  ck_assert_ptr_nonnull(strstr(text, "\"train_loss\": null,"));
  free(text);
}
END_TEST

START_TEST(report_durations)
{
  char buf[32];

  fedc_format_duration(12.34, buf, sizeof(buf));
  ck_assert_str_eq(buf, "12.3s");
  fedc_format_duration(247, buf, sizeof(buf));
  ck_assert_str_eq(buf, "4m07s");
  fedc_format_duration(7500, buf, sizeof(buf));
  ck_assert_str_eq(buf, "2h05m");
  fedc_format_duration(3 * 86400 + 4 * 3600, buf, sizeof(buf));
  ck_assert_str_eq(buf, "3d04h");
}
END_TEST

START_TEST(progress_off_when_not_terminal)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  fedc_progress p;
  fedc_sim_record rec = { .metrics = { .round = 1 } };

  fedc_progress_init(&p, f, 10);
  ck_assert_ptr_null(p.out);
  fedc_progress_update(&p, &rec, 1.0);
  fedc_progress_finish(&p);
  fclose(f);
  ck_assert_uint_eq(len, 0);
  free(text);
}
END_TEST

START_TEST(plot_svg_has_both_panels)
{
  fedc_plot_point points[20];
  char path[] = "/tmp/fedc-plot-test-XXXXXX.svg";
  char text[65536];
  size_t len;
  FILE *f;
  int fd = mkstemps(path, 4);

  ck_assert_int_ge(fd, 0);
  close(fd);
  for (int i = 0; i < 20; i++)
    points[i] = (fedc_plot_point){ .round = (uint64_t)i + 1,
                                   .seconds = 600.0 * (i + 1),
                                   .accuracy = 0.5 + 0.02 * i };
  points[3].accuracy = NAN;

  ck_assert_int_eq(fedc_plot_write(path, points, 20, "a < b & c",
                                   "simulated time"), 0);
  f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  len = fread(text, 1, sizeof(text) - 1, f);
  text[len] = '\0';
  fclose(f);
  unlink(path);

  ck_assert_ptr_nonnull(strstr(text, "<svg "));
  ck_assert_ptr_nonnull(strstr(text, "</svg>"));
  ck_assert_ptr_nonnull(strstr(text, "a &lt; b &amp; c"));
  ck_assert_ptr_nonnull(strstr(text, ">round</text>"));
  ck_assert_ptr_nonnull(strstr(text, ">simulated time (hours)</text>"));
  ck_assert_ptr_null(strstr(text, "nan"));
}
END_TEST

START_TEST(plot_unwritable_path)
{
  fedc_plot_point p = { .round = 1, .seconds = 1, .accuracy = 1 };

  ck_assert_int_eq(fedc_plot_write("/nonexistent/dir/plot.svg", &p, 1, "t",
                                   "real time"), FEDC_EIO);
}
END_TEST

/* Any extension but .svg and .png is rejected, and no file is written,
 * rather than SVG text going into a file named .jpg. */
START_TEST(plot_rejects_other_extensions)
{
  static const char *const paths[] = {
    "/tmp/fedc-plot-test.jpg", "/tmp/fedc-plot-test.svg.txt",
    "/tmp/fedc-plot-test", "/tmp/fedc-plot-testsvg",
  };
  fedc_plot_point p = { .round = 1, .seconds = 1, .accuracy = 1 };
  enum fedc_plot_format format;

  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    unlink(paths[i]);
    ck_assert_int_eq(fedc_plot_check_path(paths[i], &format), FEDC_EINVAL);
    ck_assert_int_eq(fedc_plot_write(paths[i], &p, 1, "t", "real time"),
                     FEDC_EINVAL);
    ck_assert_int_ne(access(paths[i], F_OK), 0);
  }
  ck_assert_int_eq(fedc_plot_check_path(".svg", &format), FEDC_EINVAL);
}
END_TEST

START_TEST(plot_format_from_extension)
{
  enum fedc_plot_format format = FEDC_PLOT_PNG;

  ck_assert_int_eq(fedc_plot_check_path("run.svg", &format), 0);
  ck_assert_int_eq(format, FEDC_PLOT_SVG);
  ck_assert_int_eq(fedc_plot_check_path("/tmp/RUN.SVG", &format), 0);
  ck_assert_int_eq(format, FEDC_PLOT_SVG);
}
END_TEST

/* A .png needs gnuplot on PATH; without it the check says so up front. */
START_TEST(plot_png_needs_gnuplot)
{
  enum fedc_plot_format format = FEDC_PLOT_SVG;
  char *saved = strdup(getenv("PATH") != NULL ? getenv("PATH") : "");

  ck_assert_ptr_nonnull(saved);
  ck_assert_int_eq(setenv("PATH", "/nonexistent", 1), 0);
  ck_assert_int_eq(fedc_plot_check_path("run.png", &format), FEDC_ENOENT);
  ck_assert_int_eq(format, FEDC_PLOT_PNG);
  ck_assert_int_eq(setenv("PATH", saved, 1), 0);
  free(saved);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("sim_report");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, report_jsonl_fields);
  tcase_add_test(tc, report_jsonl_unmeasured_is_null);
  tcase_add_test(tc, report_durations);
  tcase_add_test(tc, progress_off_when_not_terminal);
  tcase_add_test(tc, plot_svg_has_both_panels);
  tcase_add_test(tc, plot_unwritable_path);
  tcase_add_test(tc, plot_rejects_other_extensions);
  tcase_add_test(tc, plot_format_from_extension);
  tcase_add_test(tc, plot_png_needs_gnuplot);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
