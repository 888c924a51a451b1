/* Runs the fedc-data executable on the real Fashion-MNIST and on small
 * files, and checks the files it writes and what it prints. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "test_support.h"

#define MAX_ARGS 32

/* Runs fedc-data with the NULL-terminated arguments after the program
 * name and returns its exit status; *out gets stdout and stderr. */
static int run_tool(char **out, const char *first, ...)
{
  const char *argv[MAX_ARGS] = { FEDC_DATA_EXE, first };
  va_list ap;
  int argc = 2;

  va_start(ap, first);
  while (argc < MAX_ARGS - 1 && (argv[argc] = va_arg(ap, const char *)) != NULL)
    argc++;
  va_end(ap);
  argv[argc] = NULL;
  return test_spawn_merged(argv, out);
}

/* Returns the number in the "rows" column of the table line that starts
 * with name, or -1. */
static long table_rows(const char *out, const char *name)
{
  size_t len = strlen(name);

  for (const char *line = out; line != NULL && *line != '\0';) {
    if (strncmp(line, name, len) == 0 && line[len] == ' ')
      return strtol(line + len, NULL, 10);
    line = strchr(line, '\n');
    if (line != NULL)
      line++;
  }
  return -1;
}

START_TEST(partition_fashion_mnist_dirichlet)
{
  char *out = NULL, *path;
  uint64_t total = 0, class_totals[10] = { 0 };

  ck_assert_int_eq(run_tool(&out, "partition", "--dataset", "fashion-mnist",
                            "--clients", "10", "--scheme", "dirichlet",
                            "--alpha", "0.3", "--seed", "7", "--out",
                            test_scratch, NULL), 0);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(table_rows(out, "total"), 60000);

  for (uint32_t k = 1; k <= 10; k++) {
    fedc_dataset ds;
    fedc_dataset_view all;
    uint64_t counts[10];
    char name[32];

    snprintf(name, sizeof(name), "client-%04u.safetensors", k);
    path = test_scratch_path(name);
    ck_assert_int_eq(fedc_dataset_load(path, &ds), 0);
    ck_assert_uint_eq(ds.dim, 784);
    ck_assert_uint_eq(ds.num_classes, 10);
    ck_assert_uint_eq(ds.image_shape[1], 28);
    ck_assert_uint_ge(ds.n, 10);           /* the default --min-rows */

    /* The table shows the same size as the file holds. */
    name[strlen("client-0000")] = '\0';
    ck_assert_int_eq(table_rows(out, name), (long)ds.n);

    all = fedc_dataset_all(&ds);
    ck_assert_int_eq(fedc_dataset_label_counts(&all, counts), 0);
    for (int c = 0; c < 10; c++)
      class_totals[c] += counts[c];
    total += ds.n;
    fedc_dataset_close(&ds);
    free(path);
  }
  ck_assert_uint_eq(total, 60000);
  for (int c = 0; c < 10; c++)
    ck_assert_uint_eq(class_totals[c], 6000);

  path = test_scratch_path("client-0011.safetensors");
  ck_assert_int_ne(access(path, F_OK), 0);
  free(path);
  path = test_scratch_path("test.safetensors");
  ck_assert_int_eq(access(path, F_OK), 0);
  free(path);
  free(out);
}
END_TEST

START_TEST(partition_same_seed_same_files)
{
  char *out = NULL, *first_dir = test_scratch_path("a");
  char *second_dir = test_scratch_path("b");
  const char *cmp[] = { "/usr/bin/cmp", NULL, NULL, NULL };
  char *a, *b;

  for (int run = 0; run < 2; run++) {
    ck_assert_int_eq(run_tool(&out, "partition", "--dataset",
                              "fashion-mnist", "--clients", "4", "--scheme",
                              "shards", "--seed", "3", "--out",
                              run == 0 ? first_dir : second_dir, NULL), 0);
    free(out);
  }
  ck_assert_int_ge(asprintf(&a, "%s/client-0002.safetensors", first_dir), 0);
  ck_assert_int_ge(asprintf(&b, "%s/client-0002.safetensors", second_dir), 0);
  cmp[1] = a;
  cmp[2] = b;
  ck_assert_int_eq(test_spawn(cmp, NULL), 0);

  /* The nested folders are not removed by the fixture. */
  test_rmtree(first_dir);
  test_rmtree(second_dir);
  free(a);
  free(b);
  free(first_dir);
  free(second_dir);
}
END_TEST

START_TEST(partition_csv_and_info)
{
  char *out = NULL, *csv = test_scratch_path("data.csv");
  char *test_csv = test_scratch_path("test.csv");
  char *client = test_scratch_path("client-0002.safetensors");
  FILE *f = fopen(csv, "w");

  ck_assert_ptr_nonnull(f);
  fprintf(f, "x,y,label\n");
  for (int i = 0; i < 30; i++)
    fprintf(f, "%d.25,%d,%d\n", i, -i, i % 3);
  ck_assert_int_eq(fclose(f), 0);
  f = fopen(test_csv, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f, "1,2,0\n3,4,2\n");
  ck_assert_int_eq(fclose(f), 0);

  ck_assert_int_eq(run_tool(&out, "partition", "--csv", csv, "--test-csv",
                            test_csv, "--clients", "3", "--seed", "1",
                            "--out", test_scratch, NULL), 0);
  ck_assert_int_eq(table_rows(out, "client-0001"), 10);
  ck_assert_int_eq(table_rows(out, "total"), 30);
  free(out);

  ck_assert_int_eq(run_tool(&out, "info", client, NULL), 0);
  ck_assert_ptr_nonnull(strstr(out, "rows      10\n"));
  ck_assert_ptr_nonnull(strstr(out, "features  2\n"));
  ck_assert_ptr_nonnull(strstr(out, "classes   3\n"));
  ck_assert_int_eq(table_rows(out, "all"), 10);
  free(out);

  free(client);
  client = test_scratch_path("test.safetensors");
  ck_assert_int_eq(run_tool(&out, "info", client, NULL), 0);
  ck_assert_ptr_nonnull(strstr(out, "rows      2\n"));
  free(out);
  free(client);
  free(csv);
  free(test_csv);
}
END_TEST

START_TEST(help_lists_every_option)
{
  static const char *const expected[] = {
    "--dataset", "--data-dir", "--images", "--labels", "--test-images",
    "--test-labels", "--csv", "--test-csv",
    "--label-column (column index)  [default: -1]",
    "--clients (files)  [default: 10]", "--scheme (name)  [default: iid]",
    "--alpha (dimensionless)  [default: 0.5]",
    "--min-rows (rows)  [default: 10]",
    "--shards-per-client (shards)  [default: 2]",
    "--seed (integer)  [default: 0]", "--out (path)",
    "info FILE",
  };
  char *out = NULL;

  ck_assert_int_eq(run_tool(&out, "--help", NULL), 0);
  for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
    ck_assert_msg(strstr(out, expected[i]) != NULL, "--help lacks %s",
                  expected[i]);
  free(out);
}
END_TEST

START_TEST(errors_name_the_value)
{
  static const struct {
    const char *flag;
    const char *value;
    const char *message;
  } cases[] = {
    { "--clients", "0", "invalid --clients 0" },
    { "--clients", "4294967297", "invalid --clients 4294967297" },
    { "--shards-per-client", "0", "invalid --shards-per-client 0" },
    { "--alpha", "0", "invalid --alpha 0" },
  };
  char *out = NULL;

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int status = run_tool(&out, "partition", "--dataset", "fashion-mnist",
                          cases[i].flag, cases[i].value, "--out",
                          test_scratch, NULL);

    ck_assert_int_ne(status, 0);
    ck_assert_msg(strstr(out, cases[i].message) != NULL,
                  "%s %s: output lacks '%s': %s", cases[i].flag,
                  cases[i].value, cases[i].message, out);
    free(out);
  }
}
END_TEST

START_TEST(errors_name_the_file)
{
  char *out = NULL, *bad = test_scratch_path("bad.safetensors");
  FILE *f = fopen(bad, "w");

  ck_assert_ptr_nonnull(f);
  fputs("not a safetensors file", f);
  ck_assert_int_eq(fclose(f), 0);

  ck_assert_int_eq(run_tool(&out, "info", bad, NULL), 1);
  ck_assert_ptr_nonnull(strstr(out, bad));
  free(out);

  ck_assert_int_eq(run_tool(&out, "partition", "--images", "/nonexistent/i",
                            "--labels", "/nonexistent/l", "--out",
                            test_scratch, NULL), 1);
  ck_assert_ptr_nonnull(strstr(out, "/nonexistent/l"));
  free(out);

  ck_assert_int_eq(run_tool(&out, "partition", "--csv", bad, "--out",
                            test_scratch, NULL), 1);
  ck_assert_ptr_nonnull(strstr(out, bad));
  free(out);

  ck_assert_int_eq(run_tool(&out, "partition", "--dataset", "fashion-mnist",
                            "--out", test_scratch, "--scheme", "random",
                            NULL), 2);
  ck_assert_ptr_nonnull(strstr(out, "random"));
  free(out);

  ck_assert_int_eq(run_tool(&out, "partition", "--dataset", "fashion-mnist",
                            NULL), 2);
  ck_assert_ptr_nonnull(strstr(out, "--out"));
  free(out);
  free(bad);
}
END_TEST

static Suite *fedc_data_suite(void)
{
  Suite *s = suite_create("fedc-data");
  TCase *tc = tcase_create("tool");

  tcase_add_checked_fixture(tc, test_scratch_make, test_scratch_remove);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, partition_fashion_mnist_dirichlet);
  tcase_add_test(tc, partition_same_seed_same_files);
  tcase_add_test(tc, partition_csv_and_info);
  tcase_add_test(tc, help_lists_every_option);
  tcase_add_test(tc, errors_name_the_value);
  tcase_add_test(tc, errors_name_the_file);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(fedc_data_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
