#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"

START_TEST(error_names_and_messages)
{
  ck_assert_str_eq(fedc_errname(FEDC_EINVAL), "FEDC_EINVAL");
  ck_assert_str_eq(fedc_strerror(FEDC_ETOOBIG),
                   "size above the configured maximum");
  ck_assert_str_eq(fedc_strerror(FEDC_OK), "success");
  ck_assert_str_eq(fedc_strerror(-9999), "unknown error");
  ck_assert_str_eq(fedc_errname(-9999), "FEDC_EUNKNOWN");
}
END_TEST

START_TEST(error_codes_distinct)
{
  static const int codes[] = {
#define CODE(name, value, msg) name,
    FEDC_ERROR_TABLE(CODE)
#undef CODE
  };
  size_t n = sizeof(codes) / sizeof(codes[0]);

  for (size_t i = 0; i < n; i++) {
    ck_assert_int_lt(codes[i], 0);
    for (size_t j = i + 1; j < n; j++)
      ck_assert_int_ne(codes[i], codes[j]);
  }
}
END_TEST

START_TEST(log_level_parse)
{
  enum fedc_log_level level;

  ck_assert_int_eq(fedc_log_parse_level("warn", &level), 0);
  ck_assert_int_eq(level, FEDC_LOG_WARN);
  ck_assert_int_eq(fedc_log_parse_level("loud", &level), FEDC_EINVAL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("util");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, error_names_and_messages);
  tcase_add_test(tc, error_codes_distinct);
  tcase_add_test(tc, log_level_parse);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
