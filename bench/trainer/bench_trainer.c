/* Times fedc's local trainer: one or more epochs of a model on the whole
 * Fashion-MNIST training set, then the test accuracy and the process's peak
 * resident memory. run.sh puts it beside the same run in PyTorch.
 *
 *   fedc-bench-trainer SPEC [--threads N] [--epochs N] [--batch N] [--lr X]
 *   fedc-bench-trainer --print-spec SPEC    prints the expanded layer list
 *
 * Output is one line of key=value pairs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "data/dataset.h"
#include "nn/blas.h"
#include "nn/conv_simd.h"
#include "nn/model.h"
#include "nn/spec.h"
#include "util/error.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"

typedef struct options {
  const char *spec;
  int threads;
  uint32_t epochs;
  uint32_t batch;
  float lr;
} options;

/* Seconds on clock: CLOCK_MONOTONIC for wall time, or
 * CLOCK_PROCESS_CPUTIME_ID for the CPU time of all threads, which other
 * jobs on a shared machine disturb less. */
static double seconds(clockid_t clock)
{
  struct timespec t;

  clock_gettime(clock, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double peak_rss_mib(void)
{
  struct rusage usage;

  getrusage(RUSAGE_SELF, &usage);
  return (double)usage.ru_maxrss / 1024.0;
}

static int parse_options(int argc, char **argv, options *o)
{
  *o = (options){ NULL, 1, 1, 64, 0.05f };
  for (int i = 1; i < argc; i++) {
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(argv[i], "--threads") == 0 && value != NULL)
      o->threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--epochs") == 0 && value != NULL)
      o->epochs = (uint32_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--batch") == 0 && value != NULL)
      o->batch = (uint32_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--lr") == 0 && value != NULL)
      o->lr = strtof(argv[++i], NULL);
    else if (argv[i][0] != '-' && o->spec == NULL)
      o->spec = argv[i];
    else
      return FEDC_EINVAL;
  }
  return o->spec != NULL && o->threads > 0 && o->epochs > 0 && o->batch > 0
             ? 0 : FEDC_EINVAL;
}

static int print_spec(const char *spec)
{
  char *text;
  int rc = fedc_spec_expand(spec, &text);

  if (rc != 0)
    return EXIT_FAILURE;
  puts(text);
  free(text);
  return EXIT_SUCCESS;
}

static int run(const options *o, const fedc_dataset *train,
               const fedc_dataset *test)
{
  fedc_train_config config = { .local_epochs = o->epochs,
                               .batch_size = o->batch,
                               .learning_rate = o->lr, .momentum = 0.9f,
                               .seed = 1 };
  fedc_dataset_view train_view = fedc_dataset_all(train);
  fedc_dataset_view test_view = fedc_dataset_all(test);
  fedc_train_stats stats;
  fedc_eval_stats eval;
  fedc_model *m;
  double start, cpu_start, elapsed, cpu;
  int rc;

  if ((rc = fedc_model_new(o->spec, 1, &m)) != 0)
    return rc;
  start = seconds(CLOCK_MONOTONIC);
  cpu_start = seconds(CLOCK_PROCESS_CPUTIME_ID);
  rc = fedc_model_train(m, &train_view, &config, &stats);
  elapsed = seconds(CLOCK_MONOTONIC) - start;
  cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
  if (rc == 0)
    rc = fedc_model_evaluate(m, &test_view, &eval);
  if (rc == 0)
    printf("impl=fedc spec=%s threads=%d batch=%u epochs=%u "
           "epoch_seconds=%.2f epoch_cpu_seconds=%.2f train_loss=%.4f "
           "test_accuracy=%.4f peak_rss_mib=%.1f blas=openblas-%s "
           "conv_kernels=%s\n", o->spec, o->threads, o->batch, o->epochs,
           elapsed / o->epochs, cpu / o->epochs, stats.loss, eval.accuracy,
           peak_rss_mib(), fedc_blas_core_name(),
           fedc_conv_simd_supported() ? "avx512" : "openblas");
  fedc_model_free(&m);
  return rc;
}

int main(int argc, char **argv)
{
  fedc_dataset train, test;
  options o;
  int rc;

  if (argc == 3 && strcmp(argv[1], "--print-spec") == 0)
    return print_spec(argv[2]);
  if (parse_options(argc, argv, &o) != 0) {
    fprintf(stderr, "usage: %s SPEC [--threads N] [--epochs N] [--batch N] "
            "[--lr X]\n       %s --print-spec SPEC\n", argv[0], argv[0]);
    return 2;
  }
  fedc_nn_set_threads(o.threads);
  rc = fedc_idx_load(FMNIST "train-images-idx3-ubyte.gz",
                     FMNIST "train-labels-idx1-ubyte.gz", &train);
  if (rc == 0)
    rc = fedc_idx_load(FMNIST "t10k-images-idx3-ubyte.gz",
                       FMNIST "t10k-labels-idx1-ubyte.gz", &test);
  if (rc == 0)
    rc = run(&o, &train, &test);
  fedc_dataset_close(&train);
  fedc_dataset_close(&test);
  if (rc != 0)
    fprintf(stderr, "fedc-bench-trainer: %s\n", fedc_strerror(rc));
  return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
