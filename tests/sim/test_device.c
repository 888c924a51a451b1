#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device.h"
#include "profile.h"
#include "util/error.h"

static int compare_floats(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;

  return (x > y) - (x < y);
}

START_TEST(device_draw_reproducible_per_client)
{
  fedc_device_model m;
  fedc_device_class c;
  fedc_device a, b, other;

  fedc_device_model_init(&m);
  fedc_device_class_default(&c, "phone");
  c.speed_sigma = 0.5;
  c.bandwidth_sigma = 0.5;
  c.period = 3600;
  c.online = 0.5;
  ck_assert_int_eq(fedc_device_model_add_class(&m, &c), 0);

  fedc_device_draw(&m, 42, 1234, &a);
  fedc_device_draw(&m, 42, 7, &other);
  fedc_device_draw(&m, 42, 1234, &b);
  ck_assert_mem_eq(&a, &b, sizeof(a));
  ck_assert(a.speed != other.speed);
  ck_assert(a.phase >= 0.0f && a.phase < 3600.0f);

  fedc_device_draw(&m, 43, 1234, &b);
  ck_assert(a.speed != b.speed);
  fedc_device_model_close(&m);
}
END_TEST

START_TEST(device_speed_median_matches_class)
{
  enum { N = 20001 };
  fedc_device_model m;
  fedc_device_class c;
  static float speeds[N];

  fedc_device_model_init(&m);
  fedc_device_class_default(&c, "laptop");
  c.speed = 2.0;
  c.speed_sigma = 0.5;
  ck_assert_int_eq(fedc_device_model_add_class(&m, &c), 0);
  for (uint32_t i = 0; i < N; i++) {
    fedc_device d;

    fedc_device_draw(&m, 1, i, &d);
    speeds[i] = d.speed;
  }
  qsort(speeds, N, sizeof(float), compare_floats);

  /* The sample median of 20001 log-normal draws is within 2% of 2.0 with
   * probability far above 0.9999 (its ln has a standard error of 0.0044). */
  ck_assert_double_eq_tol(speeds[N / 2], 2.0, 0.04);
  fedc_device_model_close(&m);
}
END_TEST

START_TEST(device_class_weights)
{
  fedc_device_model m;
  fedc_device_class fast, slow;
  int fast_count = 0;

  fedc_device_model_init(&m);
  fedc_device_class_default(&fast, "fast");
  fast.speed = 4.0;
  fast.weight = 3.0;
  fedc_device_class_default(&slow, "slow");
  slow.speed = 0.5;
  ck_assert_int_eq(fedc_device_model_add_class(&m, &fast), 0);
  ck_assert_int_eq(fedc_device_model_add_class(&m, &slow), 0);

  for (uint32_t i = 0; i < 10000; i++) {
    fedc_device d;

    fedc_device_draw(&m, 5, i, &d);
    ck_assert(d.speed == 4.0f || d.speed == 0.5f);
    fast_count += d.speed == 4.0f;
  }
  /* Expected 7500; the standard deviation is about 43. */
  ck_assert_int_lt(abs(fast_count - 7500), 250);
  fedc_device_model_close(&m);
}
END_TEST

START_TEST(device_override_wins)
{
  fedc_device_model m;
  fedc_device exact = {
    .speed = 3, .down_bps = 100, .up_bps = 50, .dropout = 0.25f,
    .period = 10, .online = 0.5f, .phase = 2,
  };
  fedc_device d;

  fedc_device_model_init(&m);
  ck_assert_int_eq(fedc_device_model_set_client(&m, 9, &exact), 0);
  ck_assert_int_eq(fedc_device_model_set_client(&m, 3, &exact), 0);
  exact.speed = 5;
  ck_assert_int_eq(fedc_device_model_set_client(&m, 9, &exact), 0);
  ck_assert_uint_eq(m.override_count, 2);
  ck_assert_uint_eq(m.overrides[0].client, 3);

  fedc_device_draw(&m, 1, 9, &d);
  ck_assert_mem_eq(&d, &exact, sizeof(d));
  fedc_device_draw(&m, 1, 4, &d);
  ck_assert(d.speed == 1.0f);

  exact.dropout = 1.5f;
  ck_assert_int_eq(fedc_device_model_set_client(&m, 1, &exact), FEDC_EINVAL);
  fedc_device_model_close(&m);
}
END_TEST

START_TEST(device_rejects_bad_class)
{
  fedc_device_model m;
  fedc_device_class c;

  fedc_device_model_init(&m);
  fedc_device_class_default(&c, "bad");
  c.online = 1.2;
  ck_assert_int_eq(fedc_device_model_add_class(&m, &c), FEDC_EINVAL);
  fedc_device_class_default(&c, "bad");
  c.speed = 0;
  ck_assert_int_eq(fedc_device_model_add_class(&m, &c), FEDC_EINVAL);
  fedc_device_class_default(&c, "bad");
  c.up_bps = NAN;
  ck_assert_int_eq(fedc_device_model_add_class(&m, &c), FEDC_EINVAL);
  ck_assert_uint_eq(m.class_count, 0);
  fedc_device_model_close(&m);
}
END_TEST

START_TEST(device_availability_window)
{
  /* Online for the first 25 s of each 100 s cycle, shifted by 10 s: online
   * on [90, 115), [190, 215), ... and on [0, 15). */
  fedc_device d = {
    .speed = 1, .down_bps = 1, .up_bps = 1, .period = 100, .online = 0.25f,
    .phase = 10,
  };

  ck_assert_int_eq(fedc_device_online(&d, 0.0), 1);
  ck_assert_int_eq(fedc_device_online(&d, 14.9), 1);
  ck_assert_int_eq(fedc_device_online(&d, 15.1), 0);
  ck_assert_int_eq(fedc_device_online(&d, 89.9), 0);
  ck_assert_int_eq(fedc_device_online(&d, 90.1), 1);
  ck_assert_double_eq_tol(fedc_device_next_change(&d, 0.0), 15.0, 1e-9);
  ck_assert_double_eq_tol(fedc_device_next_change(&d, 15.0), 90.0, 1e-9);
  ck_assert_double_eq_tol(fedc_device_next_change(&d, 90.0), 115.0, 1e-9);
  ck_assert_double_eq_tol(fedc_device_next_change(&d, 50.0), 90.0, 1e-9);

  d.online = 1.0f;
  ck_assert_int_eq(fedc_device_online(&d, 50.0), 1);
  ck_assert(isinf(fedc_device_next_change(&d, 50.0)));
  d.online = 0.0f;
  ck_assert_int_eq(fedc_device_online(&d, 50.0), 0);
  d.period = 0.0f;
  ck_assert_int_eq(fedc_device_online(&d, 50.0), 1);
}
END_TEST

START_TEST(device_next_change_alternates)
{
  fedc_device d = {
    .speed = 1, .down_bps = 1, .up_bps = 1, .period = 86400,
    .online = 0.3f, .phase = 12345,
  };
  double t = 0.0, online_time = 0.0;
  int online = fedc_device_online(&d, 0.0);

  /* Walking the changes over 30 days flips the status every time and
   * spends the online fraction of the time online. */
  while (t < 30 * 86400.0) {
    double next = fedc_device_next_change(&d, t);

    ck_assert(next > t);
    ck_assert_int_eq(fedc_device_online(&d, (t + next) / 2), online);
    if (online)
      online_time += fmin(next, 30 * 86400.0) - t;
    t = next;
    online = !online;
    ck_assert_int_eq(fedc_device_online(&d, t + 1e-3), online);
  }
  ck_assert_double_eq_tol(online_time / (30 * 86400.0), 0.3, 0.01);
}
END_TEST

START_TEST(device_transfer_and_compute_times)
{
  fedc_device d = { .speed = 2, .down_bps = 1e6, .up_bps = 2.5e5,
                    .online = 1 };

  ck_assert_double_eq_tol(fedc_device_transfer_seconds(&d, 3000000, 0), 3.0,
                          1e-9);
  ck_assert_double_eq_tol(fedc_device_transfer_seconds(&d, 500000, 1), 2.0,
                          1e-9);
  ck_assert_double_eq_tol(fedc_device_compute_seconds(&d, 4e9, 1e9), 2.0,
                          1e-9);
}
END_TEST

/* Writes text to a new temporary file whose name goes to path. */
static void write_temp(char *path, const char *text)
{
  int fd;
  FILE *f;

  strcpy(path, "/tmp/fedc-profile-XXXXXX");
  fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  f = fdopen(fd, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

START_TEST(profile_loads_classes_and_clients)
{
  const char *text =
    "; two classes and one exact client\n"
    "[class phone]\nweight = 3\nspeed = 0.4\nspeed_sigma = 0.5\n"
    "download_bps = 2e6\nupload_bps = 5e5\nbandwidth_sigma = 0.7\n"
    "dropout = 0.1\nperiod = 86400\nonline = 0.3\n"
    "[class server]\nspeed = 8\n"
    "[client 17]\nspeed = 2\nperiod = 3600\nonline = 0.5\nphase = 900\n";
  char path[64], err[256];
  fedc_device_model m;
  fedc_device d;

  write_temp(path, text);
  fedc_device_model_init(&m);
  ck_assert_int_eq(fedc_profile_load(path, &m, err, sizeof(err)), 0);
  ck_assert_uint_eq(m.class_count, 2);
  ck_assert_str_eq(m.classes[0].name, "phone");
  ck_assert_double_eq(m.classes[0].weight, 3);
  ck_assert_double_eq(m.classes[0].down_bps, 2e6);
  ck_assert_double_eq(m.classes[0].dropout, 0.1);
  ck_assert_double_eq(m.classes[0].online, 0.3);
  ck_assert_str_eq(m.classes[1].name, "server");
  ck_assert_double_eq(m.classes[1].speed, 8);
  ck_assert_double_eq(m.classes[1].weight, 1);

  fedc_device_draw(&m, 0, 17, &d);
  ck_assert(d.speed == 2.0f);
  ck_assert(d.period == 3600.0f);
  ck_assert(d.phase == 900.0f);
  ck_assert(d.dropout == 0.0f);
  fedc_device_model_close(&m);
  unlink(path);
}
END_TEST

START_TEST(profile_reports_line_of_error)
{
  static const struct {
    const char *text;
    const char *expected;
  } cases[] = {
    { "[class a]\nspeed = 1\nspeeed = 2\n", ":3: unknown key \"speeed\"" },
    { "[class a]\nspeed = fast\n", ":2: invalid number \"fast\"" },
    { "[phone]\nspeed = 1\n", ":2: unknown section [phone]" },
    { "[client -1]\nspeed = 1\n", "unknown section [client -1]" },
    { "[client 3]\nweight = 1\n", "unknown key \"weight\"" },
    { "[class a]\nonline = 2\n", "out of range" },
  };
  char path[64], err[256];

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fedc_device_model m;

    write_temp(path, cases[i].text);
    fedc_device_model_init(&m);
    ck_assert_int_eq(fedc_profile_load(path, &m, err, sizeof(err)),
                     FEDC_EINVAL);
    ck_assert_msg(strstr(err, cases[i].expected) != NULL,
                  "case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].expected);
    fedc_device_model_close(&m);
    unlink(path);
  }
}
END_TEST

START_TEST(profile_missing_file)
{
  char err[256];
  fedc_device_model m;

  fedc_device_model_init(&m);
  ck_assert_int_eq(fedc_profile_load("/nonexistent/devices.ini", &m, err,
                                     sizeof(err)), FEDC_ENOENT);
  ck_assert_ptr_nonnull(strstr(err, "/nonexistent/devices.ini"));
  fedc_device_model_close(&m);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("sim_device");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, device_draw_reproducible_per_client);
  tcase_add_test(tc, device_speed_median_matches_class);
  tcase_add_test(tc, device_class_weights);
  tcase_add_test(tc, device_override_wins);
  tcase_add_test(tc, device_rejects_bad_class);
  tcase_add_test(tc, device_availability_window);
  tcase_add_test(tc, device_next_change_alternates);
  tcase_add_test(tc, device_transfer_and_compute_times);
  tcase_add_test(tc, profile_loads_classes_and_clients);
  tcase_add_test(tc, profile_reports_line_of_error);
  tcase_add_test(tc, profile_missing_file);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
