#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/json.h"
#include "util/error.h"

static void reader_for(fedc_json_reader *r, const char *text)
{
  fedc_json_init(r, text, strlen(text));
}

START_TEST(json_string_escapes)
{
  static const struct {
    const char *json;
    const char *decoded;
  } cases[] = {
    { "\"plain\"", "plain" },
    { "\"\"", "" },
    { "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t" },
    { "\"\\u0041\\u00e9\\u20AC\"", "A\xc3\xa9\xe2\x82\xac" },
    { "\"\\ud834\\udd1e\"", "\xf0\x9d\x84\x9e" },
    { "\"raw \xc3\xa9 \xf0\x9f\x98\x80\"", "raw \xc3\xa9 \xf0\x9f\x98\x80" },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fedc_json_reader r;
    char out[64];
    char *dup;

    reader_for(&r, cases[i].json);
    ck_assert_int_eq(fedc_json_string(&r, out, sizeof(out)), 0);
    ck_assert_str_eq(out, cases[i].decoded);
    ck_assert_int_eq(fedc_json_finish(&r), 0);

    reader_for(&r, cases[i].json);
    ck_assert_int_eq(fedc_json_string_dup(&r, &dup), 0);
    ck_assert_str_eq(dup, cases[i].decoded);
    free(dup);
  }
}
END_TEST

START_TEST(json_string_rejects)
{
  static const char *const cases[] = {
    "\"unterminated", "\"bad \\x escape\"", "\"short \\u12\"",
    "\"\\u0000\"", "\"\\udc00\"", "\"\\ud800\"", "\"\\ud800\\u0041\"",
    "\"tab\there\"", "\"\xe2\x82\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
    "\"\xe0\x80\xaf\"", "\"\x80\"", "'single'", "",
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fedc_json_reader r;
    char out[64];
    char *dup = NULL;

    reader_for(&r, cases[i]);
    ck_assert_msg(fedc_json_string(&r, out, sizeof(out)) == FEDC_EFORMAT,
                  "case %zu accepted", i);
    reader_for(&r, cases[i]);
    ck_assert_int_eq(fedc_json_string_dup(&r, &dup), FEDC_EFORMAT);
    ck_assert_ptr_null(dup);
  }
}
END_TEST

START_TEST(json_string_capacity)
{
  fedc_json_reader r;
  char out[4];

  reader_for(&r, "\"abc\"");
  ck_assert_int_eq(fedc_json_string(&r, out, sizeof(out)), 0);
  ck_assert_str_eq(out, "abc");
  reader_for(&r, "\"abcd\"");
  ck_assert_int_eq(fedc_json_string(&r, out, sizeof(out)), FEDC_EFORMAT);
  reader_for(&r, "\"ab\\u00e9\"");  /* 2 + 2 bytes do not fit with the NUL */
  ck_assert_int_eq(fedc_json_string(&r, out, sizeof(out)), FEDC_EFORMAT);
}
END_TEST

START_TEST(json_u64_values)
{
  static const struct {
    const char *json;
    int rc;
    uint64_t value;
  } cases[] = {
    { "0", 0, 0 },
    { "  42 ", 0, 42 },
    { "18446744073709551615", 0, UINT64_MAX },
    { "18446744073709551616", FEDC_EFORMAT, 0 },
    { "-1", FEDC_EFORMAT, 0 },
    { "1.0", FEDC_EFORMAT, 0 },
    { "1e3", FEDC_EFORMAT, 0 },
    { "01", 0, 0 },        /* reads "0"; finish then rejects the "1" */
    { "+1", FEDC_EFORMAT, 0 },
    { "1.", FEDC_EFORMAT, 0 },
    { "\"1\"", FEDC_EFORMAT, 0 },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fedc_json_reader r;
    uint64_t v = 0;

    reader_for(&r, cases[i].json);
    ck_assert_msg(fedc_json_u64(&r, &v) == cases[i].rc, "case %s",
                  cases[i].json);
    if (cases[i].rc == 0)
      ck_assert_uint_eq(v, cases[i].value);
  }
}
END_TEST

START_TEST(json_walk_object)
{
  const char *text = "{\"n\": 7, \"list\": [1, 2, 3], \"s\": \"x\", "
                     "\"skip\": {\"a\": [true, false, null, -1.5E-3]}}";
  fedc_json_reader r;
  char key[16];
  uint64_t sum = 0, n = 0;
  size_t members = 0;
  int rc;

  reader_for(&r, text);
  ck_assert_int_eq(fedc_json_peek(&r), FEDC_JSON_OBJECT);
  ck_assert_int_eq(fedc_json_object_begin(&r), 0);
  while ((rc = fedc_json_object_next(&r, members, key, sizeof(key))) == 1) {
    members++;
    if (strcmp(key, "n") == 0) {
      ck_assert_int_eq(fedc_json_u64(&r, &n), 0);
    } else if (strcmp(key, "list") == 0) {
      ck_assert_int_eq(fedc_json_array_begin(&r), 0);
      for (size_t i = 0; fedc_json_array_next(&r, i) == 1; i++) {
        uint64_t v;

        ck_assert_int_eq(fedc_json_u64(&r, &v), 0);
        sum += v;
      }
    } else {
      ck_assert_int_eq(fedc_json_skip(&r), 0);
    }
  }
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(members, 4);
  ck_assert_uint_eq(n, 7);
  ck_assert_uint_eq(sum, 6);
  ck_assert_int_eq(fedc_json_finish(&r), 0);
}
END_TEST

START_TEST(json_skip_rejects)
{
  static const char *const cases[] = {
    "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{1:2}", "[1 2]", "tru",
    "nul", "[", "{", "-", "1e", "[\"a\":1]", "{\"a\":1]", "[1}",
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fedc_json_reader r;

    reader_for(&r, cases[i]);
    ck_assert_msg(fedc_json_skip(&r) != 0 || fedc_json_finish(&r) != 0,
                  "case %s accepted", cases[i]);
  }
}
END_TEST

START_TEST(json_depth_limit)
{
  char deep[2 * FEDC_JSON_MAX_DEPTH + 3];
  fedc_json_reader r;
  int depth;

  /* FEDC_JSON_MAX_DEPTH levels are accepted, one more is not. */
  for (depth = FEDC_JSON_MAX_DEPTH; depth <= FEDC_JSON_MAX_DEPTH + 1;
       depth++) {
    memset(deep, '[', (size_t)depth);
    memset(deep + depth, ']', (size_t)depth);
    deep[2 * depth] = '\0';
    reader_for(&r, deep);
    ck_assert_int_eq(fedc_json_skip(&r),
                     depth <= FEDC_JSON_MAX_DEPTH ? 0 : FEDC_EFORMAT);
  }
}
END_TEST

static Suite *json_suite(void)
{
  Suite *s = suite_create("json");
  TCase *tc = tcase_create("core");

  tcase_add_test(tc, json_string_escapes);
  tcase_add_test(tc, json_string_rejects);
  tcase_add_test(tc, json_string_capacity);
  tcase_add_test(tc, json_u64_values);
  tcase_add_test(tc, json_walk_object);
  tcase_add_test(tc, json_skip_rejects);
  tcase_add_test(tc, json_depth_limit);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(json_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
