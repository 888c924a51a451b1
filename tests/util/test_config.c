#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/config.h"
#include "util/error.h"

struct settings {
  char *listen;
  unsigned long port;
  long offset;
  double fraction;
  int verbose;
};

static const fedc_option options[] = {
  { "listen", FEDC_OPT_STRING, offsetof(struct settings, listen), "127.0.0.1",
    "", "Address to bind." },
  { "port", FEDC_OPT_UINT, offsetof(struct settings, port), "7878", "",
    "TCP port." },
  { "offset", FEDC_OPT_INT, offsetof(struct settings, offset), "-3", "",
    "Signed value." },
  { "fraction_fit", FEDC_OPT_DOUBLE, offsetof(struct settings, fraction),
    "0.5", "", "Share of clients sampled per round." },
  { "verbose", FEDC_OPT_BOOL, offsetof(struct settings, verbose), "false", "",
    "More logging." },
};

#define NOPTS (sizeof(options) / sizeof(options[0]))

START_TEST(config_defaults_applied)
{
  struct settings s = { 0 };
  fedc_config cfg;

  ck_assert_int_eq(fedc_config_init(&cfg, "t", options, NOPTS, &s), 0);
  ck_assert_str_eq(s.listen, "127.0.0.1");
  ck_assert_uint_eq(s.port, 7878);
  ck_assert_int_eq(s.offset, -3);
  ck_assert_double_eq(s.fraction, 0.5);
  ck_assert_int_eq(s.verbose, 0);
  fedc_config_close(&cfg);
  ck_assert_ptr_null(s.listen);
}
END_TEST

START_TEST(config_file_then_flags)
{
  struct settings s = { 0 };
  fedc_config cfg;
  char path[] = "/tmp/fedc-config-XXXXXX";
  int fd = mkstemp(path);
  FILE *f = fdopen(fd, "w");
  char err[256];
  int help = -1;
  char *argv[] = { "t", "--port", "9000", "--config", path, "--verbose",
                   "--fraction-fit=0.25", NULL };

  fprintf(f, "[server]\nlisten = ::1\nport = 8000\nfraction_fit = 0.75\n");
  fclose(f);
  ck_assert_int_eq(fedc_config_init(&cfg, "t", options, NOPTS, &s), 0);
  ck_assert_int_eq(fedc_config_parse_args(&cfg, 7, argv, &help, err,
                                          sizeof(err)), 0);
  ck_assert_int_eq(help, 0);
  ck_assert_str_eq(s.listen, "::1");       /* from the file */
  ck_assert_uint_eq(s.port, 9000);         /* flag beats file */
  ck_assert_double_eq(s.fraction, 0.25);   /* --key=value form */
  ck_assert_int_eq(s.verbose, 1);          /* bare boolean flag */
  fedc_config_close(&cfg);
  unlink(path);
}
END_TEST

START_TEST(config_rejects_bad_values)
{
  struct settings s = { 0 };
  fedc_config cfg;
  char err[256];

  ck_assert_int_eq(fedc_config_init(&cfg, "t", options, NOPTS, &s), 0);
  ck_assert_int_eq(fedc_config_set(&cfg, "port", "-1", err, sizeof(err)),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_config_set(&cfg, "port", "12x", err, sizeof(err)),
                   FEDC_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "port"));
  ck_assert_int_eq(fedc_config_set(&cfg, "fraction_fit", "nan", err,
                                   sizeof(err)), FEDC_EINVAL);
  ck_assert_int_eq(fedc_config_set(&cfg, "verbose", "maybe", err,
                                   sizeof(err)), FEDC_EINVAL);
  ck_assert_int_eq(fedc_config_set(&cfg, "colour", "red", err, sizeof(err)),
                   FEDC_ENOENT);
  ck_assert_ptr_nonnull(strstr(err, "colour"));
  ck_assert_uint_eq(s.port, 7878);
  fedc_config_close(&cfg);
}
END_TEST

START_TEST(config_missing_file_and_help)
{
  struct settings s = { 0 };
  fedc_config cfg;
  char err[256];
  int help = 0;
  char *argv[] = { "t", "--config", "/nonexistent/fedc.ini", NULL };
  char *argv_help[] = { "t", "--help", NULL };

  ck_assert_int_eq(fedc_config_init(&cfg, "t", options, NOPTS, &s), 0);
  ck_assert_int_eq(fedc_config_parse_args(&cfg, 3, argv, &help, err,
                                          sizeof(err)), FEDC_ENOENT);
  ck_assert_ptr_nonnull(strstr(err, "/nonexistent/fedc.ini"));
  ck_assert_int_eq(fedc_config_parse_args(&cfg, 2, argv_help, &help, err,
                                          sizeof(err)), 0);
  ck_assert_int_eq(help, 1);
  fedc_config_close(&cfg);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, config_defaults_applied);
  tcase_add_test(tc, config_file_then_flags);
  tcase_add_test(tc, config_rejects_bad_values);
  tcase_add_test(tc, config_missing_file_and_help);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
