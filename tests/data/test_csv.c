#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "test_support.h"
#include "util/error.h"

/* Writes text to a file in the scratch folder and loads it. */
static int load_text(const char *text, int label_column, fedc_dataset *ds)
{
  char *path;
  FILE *f;
  int rc;

  path = test_scratch_path("data.csv");
  f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
  ck_assert_int_eq(fclose(f), 0);
  rc = fedc_csv_load(path, label_column, ds);
  free(path);
  return rc;
}

START_TEST(csv_without_header)
{
  fedc_dataset ds;

  ck_assert_int_eq(load_text("1.5,2,0\n-3e2,4.25,2\n0,0,1\n", -1, &ds), 0);
  ck_assert_uint_eq(ds.n, 3);
  ck_assert_uint_eq(ds.dim, 2);
  ck_assert_uint_eq(ds.num_classes, 3);
  ck_assert(ds.x[0] == 1.5f);
  ck_assert(ds.x[1] == 2.0f);
  ck_assert(ds.x[2] == -300.0f);
  ck_assert(ds.x[3] == 4.25f);
  ck_assert_int_eq(ds.y[0], 0);
  ck_assert_int_eq(ds.y[1], 2);
  ck_assert_int_eq(ds.y[2], 1);
  ck_assert_uint_eq(ds.image_shape[0], 0);
  fedc_dataset_close(&ds);
}
END_TEST

START_TEST(csv_with_header_and_label_first)
{
  fedc_dataset ds;
  const char *text = "label,\"width, cm\",height\r\n"
                     "1,0.5,7\r\n"
                     "\r\n"
                     "4, \"8\" ,9\r\n";

  ck_assert_int_eq(load_text(text, 0, &ds), 0);
  ck_assert_uint_eq(ds.n, 2);
  ck_assert_uint_eq(ds.dim, 2);
  ck_assert_uint_eq(ds.num_classes, 5);
  ck_assert_int_eq(ds.y[0], 1);
  ck_assert_int_eq(ds.y[1], 4);
  ck_assert(ds.x[0] == 0.5f);
  ck_assert(ds.x[1] == 7.0f);
  ck_assert(ds.x[2] == 8.0f);
  ck_assert(ds.x[3] == 9.0f);
  fedc_dataset_close(&ds);
}
END_TEST

START_TEST(csv_label_in_middle_no_final_newline)
{
  fedc_dataset ds;

  ck_assert_int_eq(load_text("a,b,c,d\n1,2,3,4\n5,6,7,8", 1, &ds), 0);
  ck_assert_uint_eq(ds.n, 2);
  ck_assert_uint_eq(ds.dim, 3);
  ck_assert_int_eq(ds.y[0], 2);
  ck_assert_int_eq(ds.y[1], 6);
  ck_assert(ds.x[3] == 5.0f);
  ck_assert(ds.x[4] == 7.0f);
  ck_assert(ds.x[5] == 8.0f);
  ck_assert_uint_eq(ds.num_classes, 7);
  fedc_dataset_close(&ds);
}
END_TEST

START_TEST(csv_many_rows)
{
  size_t cap = 3000 * 24, len = 0;
  char *text = malloc(cap);
  fedc_dataset ds;

  ck_assert_ptr_nonnull(text);
  for (int i = 0; i < 3000; i++)
    len += (size_t)snprintf(text + len, cap - len, "%d,%d.5,%d\n", i, -i,
                            i % 10);
  ck_assert_int_eq(load_text(text, -1, &ds), 0);
  ck_assert_uint_eq(ds.n, 3000);
  ck_assert(ds.x[2 * 2999] == 2999.0f);
  ck_assert(ds.x[2 * 2999 + 1] == -2999.5f);
  ck_assert_int_eq(ds.y[2999], 9);
  ck_assert_uint_eq(ds.num_classes, 10);
  fedc_dataset_close(&ds);
  free(text);
}
END_TEST

static const struct bad_csv {
  const char *what;
  const char *text;
  int label_column;
} bad_cases[] = {
  { "empty file", "", -1 },
  { "header only", "a,b\n", -1 },
  { "one column", "1\n2\n", 0 },
  { "label column past end", "1,2\n", 2 },
  { "negative label column past start", "1,2\n", -3 },
  { "short row", "1,2,3\n4,5\n", -1 },
  { "long row", "1,2\n3,4,5\n", -1 },
  { "text in a data row", "1,2\nx,3\n", -1 },
  { "second header", "a,b\n1,2\nc,d\n", -1 },
  { "empty field", "1,,2\n", -1 },
  { "negative label", "1,-1\n", -1 },
  { "fractional label", "1,1.5\n", -1 },
  { "NaN feature", "nan,1\n", -1 },
  { "Inf feature", "inf,1\n", -1 },
  { "feature beyond float", "1e39,1\n", -1 },
  { "unterminated quote", "\"1,2\n", -1 },
  { "number too long", "1,2\n1,0.000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000001\n", 0 },
};

START_TEST(csv_rejects_malformed)
{
  const struct bad_csv *c = &bad_cases[_i];
  fedc_dataset ds;
  int rc = load_text(c->text, c->label_column, &ds);

  ck_assert_msg(rc != 0, "case \"%s\" accepted", c->what);
  ck_assert_ptr_null(ds.x);
}
END_TEST

START_TEST(csv_missing_file)
{
  fedc_dataset ds;

  ck_assert_int_eq(fedc_csv_load("/nonexistent/data.csv", -1, &ds),
                   FEDC_ENOENT);
}
END_TEST

START_TEST(csv_nul_byte_rejected)
{
  char *path;
  FILE *f;
  fedc_dataset ds;

  path = test_scratch_path("nul.csv");
  f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite("1,2\n3\0,4\n", 1, 9, f), 9);
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_int_eq(fedc_csv_load(path, -1, &ds), FEDC_EFORMAT);
  free(path);
}
END_TEST

static Suite *csv_suite(void)
{
  Suite *s = suite_create("csv");
  TCase *tc = tcase_create("core");

  tcase_add_checked_fixture(tc, test_scratch_make, test_scratch_remove);
  tcase_add_test(tc, csv_without_header);
  tcase_add_test(tc, csv_with_header_and_label_first);
  tcase_add_test(tc, csv_label_in_middle_no_final_newline);
  tcase_add_test(tc, csv_many_rows);
  tcase_add_loop_test(tc, csv_rejects_malformed, 0,
                      sizeof(bad_cases) / sizeof(bad_cases[0]));
  tcase_add_test(tc, csv_missing_file);
  tcase_add_test(tc, csv_nul_byte_rejected);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(csv_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
