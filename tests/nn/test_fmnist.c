/* Centralized training on the real Fashion-MNIST: every one of the 60000
 * training images, accuracy on the 10000 test images. These thresholds are
 * what the federated runs are compared against. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/model.h"
#include "nn_testutil.h"

static fedc_dataset train_set, test_set;

static void load_data(void)
{
  ck_assert_msg(nn_test_load_fmnist("train", &train_set) == 0,
                "cannot read Fashion-MNIST from " NN_TEST_FMNIST_DIR);
  ck_assert_msg(nn_test_load_fmnist("t10k", &test_set) == 0,
                "cannot read Fashion-MNIST from " NN_TEST_FMNIST_DIR);
  ck_assert_uint_eq(train_set.n, 60000);
  ck_assert_uint_eq(test_set.n, 10000);
}

static void free_data(void)
{
  fedc_dataset_close(&train_set);
  fedc_dataset_close(&test_set);
}

static double seconds_since(const struct timespec *start)
{
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) +
         (double)(now.tv_nsec - start->tv_nsec) * 1e-9;
}

/* Trains spec on the whole training set and returns the test accuracy. */
static double train_and_test(const char *spec, const fedc_train_config *config)
{
  fedc_dataset_view train = { &train_set, NULL, train_set.n };
  fedc_dataset_view test = { &test_set, NULL, test_set.n };
  fedc_train_stats stats;
  fedc_eval_stats eval;
  struct timespec start;
  fedc_model *m;

  ck_assert_int_eq(fedc_model_new(spec, 1, &m), 0);
  clock_gettime(CLOCK_MONOTONIC, &start);
  ck_assert_int_eq(fedc_model_train(m, &train, config, &stats), 0);
  ck_assert_int_eq(fedc_model_evaluate(m, &test, &eval), 0);
  printf("%s: %u epochs in %.1f s, train loss %.4f, test loss %.4f, "
         "test accuracy %.4f\n", spec, config->local_epochs,
         seconds_since(&start), stats.loss, eval.loss, eval.accuracy);
  fflush(stdout);
  ck_assert_uint_eq(stats.examples, 60000ull * config->local_epochs);
  fedc_model_free(&m);
  return eval.accuracy;
}

START_TEST(logreg_reaches_083)
{
  fedc_train_config config = { 0 };

  config.local_epochs = 3;
  config.batch_size = 64;
  config.learning_rate = 0.02f;
  config.momentum = 0.9f;
  config.lr_schedule = FEDC_LR_COSINE;
  config.seed = 1;
  ck_assert_double_ge(train_and_test("logreg:784:10", &config), 0.83);
}
END_TEST

START_TEST(mlp_reaches_088)
{
  fedc_train_config config = { 0 };

  config.local_epochs = 5;
  config.batch_size = 64;
  config.learning_rate = 0.05f;
  config.momentum = 0.9f;
  config.lr_schedule = FEDC_LR_COSINE;
  config.seed = 1;
  ck_assert_double_ge(train_and_test("mlp:784:256:128:10", &config), 0.88);
}
END_TEST

START_TEST(cnn_reaches_090)
{
  fedc_train_config config = { 0 };

  config.local_epochs = 3;
  config.batch_size = 64;
  config.learning_rate = 0.05f;
  config.momentum = 0.9f;
  config.lr_schedule = FEDC_LR_COSINE;
  config.seed = 1;
  ck_assert_double_ge(train_and_test("cnn", &config), 0.90);
}
END_TEST

/* "dense" runs the logistic regression and MLP cases (about a minute under
 * ASan), "cnn" the CNN case (several minutes, in the slow suite). */
int main(int argc, char **argv)
{
  const char *group = argc > 1 ? argv[1] : "dense";
  Suite *s = suite_create("nn_fmnist");
  TCase *tc = tcase_create(group);
  SRunner *sr;
  int failed;

  fedc_nn_set_threads(2);
  tcase_add_unchecked_fixture(tc, load_data, free_data);
  tcase_set_timeout(tc, 3000);
  if (strcmp(group, "cnn") == 0) {
    tcase_add_test(tc, cnn_reaches_090);
  } else {
    tcase_add_test(tc, logreg_reaches_083);
    tcase_add_test(tc, mlp_reaches_088);
  }
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
