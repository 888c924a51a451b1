/* The external trainer protocol with shell commands as trainers: the
 * exchange files, the checks on what comes back (missing or extra
 * tensors, wrong shapes, NaN, malformed files), failures and timeouts.
 * test_torch.c runs the PyTorch trainer of examples/. */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nn/external.h"
#include "nn/model.h"
#include "tensor/safetensors.h"
#include "util/error.h"
#include "util/log.h"

static char base_dir[] = "/tmp/fedc-external-XXXXXX";
static char work_dir[512];
static fedc_tensor_list global;
static fedc_train_config train_config = { .local_epochs = 1, .batch_size = 8,
                                          .learning_rate = 0.125f,
                                          .seed = 9 };

static void setup(void)
{
  fedc_model *m;

  ck_assert_ptr_nonnull(mkdtemp(base_dir));
  snprintf(work_dir, sizeof(work_dir), "%s/work", base_dir);
  ck_assert_int_eq(mkdir(work_dir, 0700), 0);
  ck_assert_int_eq(fedc_model_new("mlp:6:5:3", 1, &m), 0);
  fedc_tensor_list_init(&global);
  ck_assert_int_eq(fedc_model_get_params(m, &global), 0);
  fedc_model_free(&m);
  fedc_log_set_level(FEDC_LOG_OFF);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
  return remove(path);
}

static void teardown(void)
{
  fedc_tensor_list_close(&global);
  nftw(base_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Writes list to base_dir/name and returns the path. */
static const char *fixture(const char *name, const fedc_tensor_list *list)
{
  static char path[600];

  snprintf(path, sizeof(path), "%s/%s", base_dir, name);
  ck_assert_int_eq(fedc_safetensors_write(path, list, NULL), 0);
  return path;
}

static int run(const char *command, uint32_t timeout_ms,
               fedc_tensor_list *updated, fedc_train_stats *stats)
{
  fedc_external_config config = { command, work_dir, timeout_ms };
  fedc_external_task task = { "mlp:6:5:3", "/data/client.safetensors", 4,
                              &train_config };

  return fedc_external_train(&config, &task, &global, updated, stats);
}

#define GOOD_METRICS                                                      \
  "printf '{\"loss\": 0.5, \"accuracy\": 0.75, \"examples\": 80, "        \
  "\"steps\": 10, \"note\": [1, 2]}' > metrics.json"

START_TEST(external_copy_round_trip)
{
  fedc_tensor_list updated;
  fedc_train_stats stats;

  fedc_tensor_list_init(&updated);
  ck_assert_int_eq(run("cp model.safetensors update.safetensors && "
                       GOOD_METRICS, 10000, &updated, &stats), 0);
  ck_assert_int_eq(fedc_tensor_list_check_layout(&global, &updated), 0);
  for (size_t t = 0; t < global.count; t++)
    ck_assert_mem_eq(global.items[t].data, updated.items[t].data,
                     fedc_tensor_nbytes(&global.items[t]));
  ck_assert_double_eq(stats.loss, 0.5);
  ck_assert_double_eq(stats.accuracy, 0.75);
  ck_assert_uint_eq(stats.examples, 80);
  ck_assert_uint_eq(stats.steps, 10);
  fedc_tensor_list_close(&updated);
}
END_TEST

START_TEST(external_reordered_update_accepted)
{
  fedc_tensor_list reversed, updated;
  char command[1024];

  fedc_tensor_list_init(&reversed);
  fedc_tensor_list_init(&updated);
  for (size_t t = global.count; t-- > 0;) {
    const fedc_tensor *s = &global.items[t];

    ck_assert_int_eq(fedc_tensor_list_add(&reversed, s->name, s->dtype,
                                          s->ndim, s->shape, s->data), 0);
  }
  snprintf(command, sizeof(command), "cp %s update.safetensors && %s",
           fixture("reversed.safetensors", &reversed), GOOD_METRICS);
  ck_assert_int_eq(run(command, 10000, &updated, NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_check_layout(&global, &updated), 0);
  fedc_tensor_list_close(&reversed);
  fedc_tensor_list_close(&updated);
}
END_TEST

/* Copies global into out with one defect: 0 wrong shape, 1 missing
 * tensor, 2 extra tensor, 3 NaN, 4 another dtype. */
static void bad_update(fedc_tensor_list *out, int defect)
{
  fedc_tensor_list_init(out);
  for (size_t t = 0; t < global.count; t++) {
    const fedc_tensor *s = &global.items[t];
    uint64_t shape[FEDC_TENSOR_MAX_DIMS];
    enum fedc_dtype dtype = s->dtype;

    memcpy(shape, s->shape, sizeof(shape));
    if (t == 1 && defect == 0)
      shape[0]++;
    if (t == 1 && defect == 1)
      continue;
    if (t == 1 && defect == 4)
      dtype = FEDC_DTYPE_F64;
    ck_assert_int_eq(fedc_tensor_list_add(out, s->name, dtype, s->ndim, shape,
                                          NULL), 0);
  }
  if (defect == 2)
    ck_assert_int_eq(fedc_tensor_list_add(out, "fc9.bias", FEDC_DTYPE_F32, 1,
                                          (uint64_t[]){ 2 }, NULL), 0);
  if (defect == 3)
    ((float *)out->items[0].data)[3] = NAN;
}

START_TEST(external_bad_update_rejected)
{
  const int expect[] = { FEDC_ESHAPE, FEDC_ESHAPE, FEDC_ESHAPE,
                         FEDC_ENONFINITE, FEDC_ESHAPE };
  fedc_tensor_list bad, updated;
  char command[1024];

  bad_update(&bad, _i);
  fedc_tensor_list_init(&updated);
  snprintf(command, sizeof(command), "cp %s update.safetensors && %s",
           fixture("bad.safetensors", &bad), GOOD_METRICS);
  ck_assert_int_eq(run(command, 10000, &updated, NULL), expect[_i]);
  ck_assert_uint_eq(updated.count, 0);
  fedc_tensor_list_close(&bad);
}
END_TEST

START_TEST(external_malformed_files_rejected)
{
  const struct { const char *command; int expect; } cases[] = {
    { "echo garbage > update.safetensors && " GOOD_METRICS, FEDC_EFORMAT },
    { GOOD_METRICS, FEDC_EFORMAT },                       /* no update */
    { "cp model.safetensors update.safetensors", FEDC_EFORMAT },
    { "cp model.safetensors update.safetensors && "
      "echo '{\"loss\": }' > metrics.json", FEDC_EFORMAT },
    { "cp model.safetensors update.safetensors && "
      "echo '{\"loss\": \"low\"}' > metrics.json", FEDC_EFORMAT },
    { "cp model.safetensors update.safetensors && "
      "head -c 70000 /dev/zero > metrics.json", FEDC_ETOOBIG },
    { "head -c 20000000 /dev/zero > update.safetensors && " GOOD_METRICS,
      FEDC_ETOOBIG },
  };
  fedc_tensor_list updated;

  fedc_tensor_list_init(&updated);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    ck_assert_msg(run(cases[i].command, 10000, &updated, NULL) ==
                  cases[i].expect, "case %zu", i);
}
END_TEST

START_TEST(external_failure_exit_status)
{
  fedc_tensor_list updated;

  fedc_tensor_list_init(&updated);
  ck_assert_int_eq(run("cp model.safetensors update.safetensors && "
                       GOOD_METRICS " && exit 3", 10000, &updated, NULL),
                   FEDC_ECHILD);
  ck_assert_int_eq(run("kill -9 $$", 10000, &updated, NULL), FEDC_ECHILD);
  ck_assert_int_eq(run("/no/such/trainer", 10000, &updated, NULL),
                   FEDC_ECHILD);
}
END_TEST

START_TEST(external_timeout_kills_group)
{
  fedc_tensor_list updated;
  struct timespec start, end;
  double elapsed;
  char marker[600];

  fedc_tensor_list_init(&updated);
  snprintf(marker, sizeof(marker), "%s/late", work_dir);
  clock_gettime(CLOCK_MONOTONIC, &start);
  /* The background child would create "late" after 2 s if it survived. */
  ck_assert_int_eq(run("(sleep 2; touch late) & sleep 30", 300, &updated,
                       NULL), FEDC_ETIMEDOUT);
  clock_gettime(CLOCK_MONOTONIC, &end);
  elapsed = (double)(end.tv_sec - start.tv_sec) +
            (double)(end.tv_nsec - start.tv_nsec) * 1e-9;
  ck_assert_double_lt(elapsed, 2.0);
  sleep(3);
  ck_assert_int_ne(access(marker, F_OK), 0);
}
END_TEST

START_TEST(external_stale_results_removed)
{
  fedc_tensor_list updated;

  fedc_tensor_list_init(&updated);
  ck_assert_int_eq(run("cp model.safetensors update.safetensors && "
                       GOOD_METRICS, 10000, &updated, NULL), 0);
  ck_assert_int_eq(run("true", 10000, &updated, NULL), FEDC_EFORMAT);
  fedc_tensor_list_close(&updated);
}
END_TEST

static char *read_text(const char *name)
{
  char path[600];
  static char buf[8192];
  FILE *f;
  size_t len;

  snprintf(path, sizeof(path), "%s/%s", work_dir, name);
  f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  len = fread(buf, 1, sizeof(buf) - 1, f);
  buf[len] = '\0';
  fclose(f);
  return buf;
}

START_TEST(external_task_and_environment)
{
  fedc_tensor_list updated;
  char expect[600];
  const char *text;

  fedc_tensor_list_init(&updated);
  ck_assert_int_eq(run("cp \"$FEDC_TASK\" task.copy && "
                       "echo \"$FEDC_WORK_DIR\" > env.txt && pwd > pwd.txt && "
                       "cp model.safetensors update.safetensors && "
                       GOOD_METRICS, 10000, &updated, NULL), 0);
  text = read_text("task.copy");
  ck_assert_ptr_nonnull(strstr(text, "\"spec\": \"mlp:6:5:3\""));
  ck_assert_ptr_nonnull(strstr(text, "\"spec_text\": \"input 6; dense 5 "
                                     "name=fc1; relu; dense 3 name=fc2\""));
  ck_assert_ptr_nonnull(strstr(text, "\"round\": 4,"));
  ck_assert_ptr_nonnull(strstr(text, "\"data\": \"/data/client.safetensors\""));
  ck_assert_ptr_nonnull(strstr(text, "\"learning_rate\": 0.125,"));
  ck_assert_ptr_nonnull(strstr(text, "\"optimizer\": \"sgd\""));
  snprintf(expect, sizeof(expect), "%s\n", work_dir);
  ck_assert_str_eq(read_text("env.txt"), expect);
  ck_assert_str_eq(read_text("pwd.txt"), expect);
  fedc_tensor_list_close(&updated);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("nn_external");
  TCase *tc = tcase_create("exec");
  SRunner *sr;
  int failed;

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, external_copy_round_trip);
  tcase_add_test(tc, external_reordered_update_accepted);
  tcase_add_loop_test(tc, external_bad_update_rejected, 0, 5);
  tcase_add_test(tc, external_malformed_files_rejected);
  tcase_add_test(tc, external_failure_exit_status);
  tcase_add_test(tc, external_timeout_kills_group);
  tcase_add_test(tc, external_stale_results_removed);
  tcase_add_test(tc, external_task_and_environment);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
