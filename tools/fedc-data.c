/* fedc-data: prepares client data files for fedc.
 *
 *   fedc-data partition --dataset fashion-mnist --clients 10
 *                       --scheme dirichlet --alpha 0.5 --seed 1 --out DIR
 *   fedc-data info DIR/client-0001.safetensors
 *
 * partition splits a data set among clients and writes one client data
 * file per client: DIR/client-0001.safetensors and so on, plus
 * DIR/test.safetensors when the data set has a test split. info describes
 * one such file. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/partition.h"
#include "util/config.h"
#include "util/error.h"
#include "util/log.h"

#define PROGRAM "fedc-data"
#define EXIT_USAGE 2

typedef struct partition_args {
  char *dataset;
  char *data_dir;
  char *images;
  char *labels;
  char *test_images;
  char *test_labels;
  char *csv;
  char *test_csv;
  long label_column;
  unsigned long clients;
  char *scheme;
  double alpha;
  unsigned long min_rows;
  unsigned long shards_per_client;
  unsigned long seed;
  char *out;
} partition_args;

#define OPT(name, type, def, unit, help) \
  { #name, type, offsetof(partition_args, name), def, unit, help }

static const fedc_option partition_options[] = {
  OPT(dataset, FEDC_OPT_STRING, NULL, "name",
      "Named data set to read from --data-dir: fashion-mnist."),
  OPT(data_dir, FEDC_OPT_STRING, "/usr/share/datasets/fashion-mnist", "path",
      "Folder with the train-* and t10k-* IDX files of --dataset."),
  OPT(images, FEDC_OPT_STRING, NULL, "path",
      "IDX image file (plain or gzipped) to split, with --labels."),
  OPT(labels, FEDC_OPT_STRING, NULL, "path", "IDX label file for --images."),
  OPT(test_images, FEDC_OPT_STRING, NULL, "path",
      "IDX image file of the test split, written to test.safetensors."),
  OPT(test_labels, FEDC_OPT_STRING, NULL, "path",
      "IDX label file for --test-images."),
  OPT(csv, FEDC_OPT_STRING, NULL, "path",
      "CSV file of numbers to split; a non-numeric first line is a header."),
  OPT(test_csv, FEDC_OPT_STRING, NULL, "path",
      "CSV file of the test split, written to test.safetensors."),
  OPT(label_column, FEDC_OPT_INT, "-1", "column index",
      "CSV column of the label, from 0; negative counts from the end."),
  OPT(clients, FEDC_OPT_UINT, "10", "files", "Number of client files."),
  OPT(scheme, FEDC_OPT_STRING, "iid", "name",
      "Partition scheme: iid, dirichlet (label skew) or shards."),
  OPT(alpha, FEDC_OPT_DOUBLE, "0.5", "dimensionless",
      "Dirichlet concentration: small gives few classes per client."),
  OPT(min_rows, FEDC_OPT_UINT, "10", "rows",
      "Dirichlet: minimum rows of every client."),
  OPT(shards_per_client, FEDC_OPT_UINT, "2", "shards",
      "Shards: label-sorted shards given to each client."),
  OPT(seed, FEDC_OPT_UINT, "0", "integer", "Seed of the partition."),
  OPT(out, FEDC_OPT_STRING, NULL, "path",
      "Output folder, created if missing (required)."),
};

#define OPTION_COUNT (sizeof(partition_options) / sizeof(partition_options[0]))

static const char partition_summary[] =
  "Splits a data set among clients and writes DIR/client-0001.safetensors,\n"
  "... and DIR/test.safetensors when the data set has a test split. Give\n"
  "exactly one source: --dataset, --images with --labels, or --csv. Prints\n"
  "each client's rows and label histogram.";

static void print_usage(FILE *out)
{
  fprintf(out,
          "Usage: " PROGRAM " partition [--OPTION VALUE]...\n"
          "       " PROGRAM " info FILE\n"
          "       " PROGRAM " --help\n\n"
          "info prints the rows, features, classes and label histogram of a\n"
          "client data file.\n\n");
}

/* ------------------------------------------------------------------------
 * Loading the source
 */

/* The rows to split, and the test split when the source has one. */
typedef struct source {
  fedc_dataset train;
  fedc_dataset test;
  int has_test;
} source;

static int load_idx_pair(const char *images, const char *labels,
                         fedc_dataset *ds)
{
  int rc = fedc_idx_load(images, labels, ds);

  if (rc != 0)
    fprintf(stderr, PROGRAM ": cannot load IDX files %s and %s: %s\n",
            images, labels, fedc_strerror(rc));
  return rc;
}

static int load_csv(const char *path, long column, fedc_dataset *ds)
{
  int rc = fedc_csv_load(path, (int)column, ds);

  if (rc != 0)
    fprintf(stderr, PROGRAM ": cannot load CSV file %s: %s\n", path,
            fedc_strerror(rc));
  return rc;
}

static int load_named(const partition_args *a, source *src)
{
  char *paths[4] = { NULL };
  static const char *const names[4] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
  };
  int rc = FEDC_ENOMEM;

  if (strcmp(a->dataset, "fashion-mnist") != 0) {
    fprintf(stderr, PROGRAM ": unknown --dataset '%s'; the known data set "
            "is fashion-mnist\n", a->dataset);
    return FEDC_EINVAL;
  }
  for (int i = 0; i < 4; i++)
    if (asprintf(&paths[i], "%s/%s", a->data_dir, names[i]) < 0)
      goto out;
  rc = load_idx_pair(paths[0], paths[1], &src->train);
  if (rc == 0)
    rc = load_idx_pair(paths[2], paths[3], &src->test);
  src->has_test = rc == 0;
out:
  for (int i = 0; i < 4; i++)
    free(paths[i]);
  return rc;
}

/* Loads the one source that the arguments name. */
static int load_source(const partition_args *a, source *src)
{
  int sources = (a->dataset != NULL) + (a->images != NULL || a->labels != NULL) +
                (a->csv != NULL);
  int rc;

  if (sources != 1) {
    fprintf(stderr, PROGRAM ": give exactly one of --dataset, --images with "
            "--labels, or --csv; see --help\n");
    return FEDC_EINVAL;
  }
  if (a->dataset != NULL)
    return load_named(a, src);
  if (a->csv != NULL) {
    rc = load_csv(a->csv, a->label_column, &src->train);
    if (rc == 0 && a->test_csv != NULL) {
      rc = load_csv(a->test_csv, a->label_column, &src->test);
      src->has_test = rc == 0;
    }
    return rc;
  }
  if (a->images == NULL || a->labels == NULL ||
      (a->test_images == NULL) != (a->test_labels == NULL)) {
    fprintf(stderr, PROGRAM ": --images needs --labels, and --test-images "
            "needs --test-labels\n");
    return FEDC_EINVAL;
  }
  rc = load_idx_pair(a->images, a->labels, &src->train);
  if (rc == 0 && a->test_images != NULL) {
    rc = load_idx_pair(a->test_images, a->test_labels, &src->test);
    src->has_test = rc == 0;
  }
  return rc;
}

/* ------------------------------------------------------------------------
 * Partitioning and writing
 */

/* Checks the numeric arguments and fills the partition options. */
static int make_options(const partition_args *a, fedc_partition_options *o)
{
  fedc_partition_options_default(o);
  if (fedc_partition_scheme_parse(a->scheme, &o->scheme) != 0) {
    fprintf(stderr, PROGRAM ": invalid --scheme '%s'; use iid, dirichlet or "
            "shards\n", a->scheme);
    return FEDC_EINVAL;
  }
  if (a->clients == 0 || a->clients > UINT32_MAX) {
    fprintf(stderr, PROGRAM ": invalid --clients %lu; use 1 to %lu\n",
            a->clients, (unsigned long)UINT32_MAX);
    return FEDC_EINVAL;
  }
  if (a->shards_per_client == 0 || a->shards_per_client > UINT32_MAX) {
    fprintf(stderr, PROGRAM ": invalid --shards-per-client %lu; use 1 to "
            "%lu\n", a->shards_per_client, (unsigned long)UINT32_MAX);
    return FEDC_EINVAL;
  }
  if (!(a->alpha > 0)) {
    fprintf(stderr, PROGRAM ": invalid --alpha %g; the Dirichlet "
            "concentration must be above 0\n", a->alpha);
    return FEDC_EINVAL;
  }
  o->clients = (uint32_t)a->clients;
  o->seed = a->seed;
  o->alpha = a->alpha;
  o->min_rows = a->min_rows;
  o->shards_per_client = (uint32_t)a->shards_per_client;
  return 0;
}

/* Creates path and its missing parents, like mkdir -p. */
static int make_folder(const char *path)
{
  char *copy = strdup(path);
  int rc = 0;

  if (copy == NULL)
    return FEDC_ENOMEM;
  for (char *p = copy + 1; rc == 0; p++) {
    char saved = *p;

    if (saved != '/' && saved != '\0')
      continue;
    *p = '\0';
    if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
      fprintf(stderr, PROGRAM ": cannot create folder %s: %s\n", copy,
              strerror(errno));
      rc = FEDC_EIO;
    }
    *p = saved;
    if (saved == '\0')
      break;
  }
  free(copy);
  return rc;
}

static char *client_path(const char *folder, uint32_t k)
{
  char *path;

  if (asprintf(&path, "%s/client-%04u.safetensors", folder, k + 1) < 0)
    return NULL;
  return path;
}

static int save_view(const char *path, const fedc_dataset_view *view)
{
  int rc = fedc_dataset_save(path, view);

  if (rc != 0)
    fprintf(stderr, PROGRAM ": cannot write %s: %s\n", path,
            fedc_strerror(rc));
  return rc;
}

static int write_clients(const char *folder, const fedc_partition *p,
                         const fedc_dataset *ds)
{
  char *path;
  int rc = 0;

  for (uint32_t k = 0; rc == 0 && k < p->clients; k++) {
    fedc_dataset_view view = fedc_partition_view(p, ds, k);

    path = client_path(folder, k);
    rc = path != NULL ? save_view(path, &view) : FEDC_ENOMEM;
    free(path);
  }

  /* A file past the last client is left from an earlier, larger split and
   * would be taken for part of this one. */
  path = client_path(folder, p->clients);
  if (rc == 0 && path != NULL && access(path, F_OK) == 0)
    fprintf(stderr, PROGRAM ": warning: %s is from an earlier run; remove "
            "the old client files or use an empty --out folder\n", path);
  free(path);
  return rc;
}

static int write_test(const char *folder, const fedc_dataset *test)
{
  fedc_dataset_view all = fedc_dataset_all(test);
  char *path;
  int rc;

  if (asprintf(&path, "%s/test.safetensors", folder) < 0)
    return FEDC_ENOMEM;
  rc = save_view(path, &all);
  free(path);
  return rc;
}

/* ------------------------------------------------------------------------
 * Tables
 */

static void print_table_header(const char *first, uint32_t num_classes)
{
  printf("%-12s %8s", first, "rows");
  for (uint32_t c = 0; c < num_classes; c++)
    printf(" %6u", c);
  printf("\n");
}

/* Prints one table row: a name, the row count and the label histogram. */
static int print_table_row(const char *name, const fedc_dataset_view *view)
{
  uint32_t classes = view->base->num_classes;
  uint64_t *counts = calloc(classes > 0 ? classes : 1, sizeof(*counts));
  int rc;

  if (counts == NULL)
    return FEDC_ENOMEM;
  rc = fedc_dataset_label_counts(view, counts);
  if (rc == 0) {
    printf("%-12s %8llu", name, (unsigned long long)view->n);
    for (uint32_t c = 0; c < classes; c++)
      printf(" %6llu", (unsigned long long)counts[c]);
    printf("\n");
  }
  free(counts);
  return rc;
}

static int print_partition(const fedc_partition *p, const fedc_dataset *ds)
{
  int rc = 0;

  print_table_header("client", ds->num_classes);
  for (uint32_t k = 0; rc == 0 && k < p->clients; k++) {
    fedc_dataset_view view = fedc_partition_view(p, ds, k);
    char name[32];

    snprintf(name, sizeof(name), "client-%04u", k + 1);
    rc = print_table_row(name, &view);
  }
  if (rc == 0) {
    fedc_dataset_view all = fedc_dataset_all(ds);

    rc = print_table_row("total", &all);
  }
  return rc;
}

/* ------------------------------------------------------------------------
 * Commands
 */

static void report_split_error(const fedc_partition_options *o, uint64_t n,
                               int rc)
{
  fprintf(stderr, PROGRAM ": cannot split %llu rows among %u clients: %s\n",
          (unsigned long long)n, o->clients, fedc_strerror(rc));
  if (rc != FEDC_EINVAL)
    return;
  if (o->scheme == FEDC_PARTITION_DIRICHLET)
    fprintf(stderr, PROGRAM ": dirichlet needs at least --clients x "
            "--min-rows = %llu rows; lower either\n",
            (unsigned long long)o->clients * o->min_rows);
  else if (o->scheme == FEDC_PARTITION_SHARDS)
    fprintf(stderr, PROGRAM ": shards needs at least --clients x "
            "--shards-per-client = %llu rows; lower either\n",
            (unsigned long long)o->clients * o->shards_per_client);
  else
    fprintf(stderr, PROGRAM ": iid needs at least one row per client; "
            "lower --clients\n");
}

static int run_partition(const partition_args *a)
{
  source src = { 0 };
  fedc_partition_options opts;
  fedc_partition p;
  int rc;

  fedc_partition_init(&p);
  if (a->out == NULL) {
    fprintf(stderr, PROGRAM ": missing --out DIR; see --help\n");
    return FEDC_EINVAL;
  }
  rc = make_options(a, &opts);
  if (rc == 0)
    rc = load_source(a, &src);
  if (rc == 0) {
    rc = fedc_partition_dataset(&p, &src.train, &opts);
    if (rc != 0)
      report_split_error(&opts, src.train.n, rc);
  }
  if (rc == 0)
    rc = make_folder(a->out);
  if (rc == 0)
    rc = write_clients(a->out, &p, &src.train);
  if (rc == 0 && src.has_test)
    rc = write_test(a->out, &src.test);
  if (rc == 0) {
    printf("%llu rows, %u features, %u classes, scheme %s, seed %lu, "
           "written to %s\n\n", (unsigned long long)src.train.n,
           src.train.dim, src.train.num_classes, a->scheme, a->seed, a->out);
    rc = print_partition(&p, &src.train);
  }
  fedc_partition_close(&p);
  fedc_dataset_close(&src.train);
  fedc_dataset_close(&src.test);
  return rc;
}

static int cmd_partition(int argc, char **argv)
{
  partition_args args;
  fedc_config cfg;
  char errmsg[256];
  int help = 0, rc;

  memset(&args, 0, sizeof(args));
  rc = fedc_config_init(&cfg, PROGRAM " partition", partition_options,
                        OPTION_COUNT, &args);
  if (rc == 0)
    rc = fedc_config_parse_args(&cfg, argc, argv, &help, errmsg,
                                sizeof(errmsg));
  if (rc != 0) {
    fprintf(stderr, PROGRAM ": %s\n", errmsg);
    fedc_config_close(&cfg);
    return EXIT_USAGE;
  }
  if (help) {
    fedc_config_print_help(&cfg, stdout, partition_summary);
    fedc_config_close(&cfg);
    return EXIT_SUCCESS;
  }
  rc = run_partition(&args);
  fedc_config_close(&cfg);
  if (rc == FEDC_EINVAL)
    return EXIT_USAGE;
  return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int cmd_info(int argc, char **argv)
{
  fedc_dataset ds;
  fedc_dataset_view all;
  int rc;

  if (argc != 2 || argv[1][0] == '-') {
    fprintf(stderr, "Usage: " PROGRAM " info FILE\n");
    return EXIT_USAGE;
  }
  rc = fedc_dataset_load(argv[1], &ds);
  if (rc != 0) {
    fprintf(stderr, PROGRAM ": cannot read client data file %s: %s\n",
            argv[1], fedc_strerror(rc));
    return EXIT_FAILURE;
  }
  printf("file      %s\nrows      %llu\nfeatures  %u\nclasses   %u\n",
         argv[1], (unsigned long long)ds.n, ds.dim, ds.num_classes);
  if (ds.image_shape[0] != 0)
    printf("image     %u x %u x %u\n", ds.image_shape[0], ds.image_shape[1],
           ds.image_shape[2]);
  printf("\n");
  all = fedc_dataset_all(&ds);
  print_table_header("file", ds.num_classes);
  rc = print_table_row("all", &all);
  fedc_dataset_close(&ds);
  return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static void print_help(void)
{
  partition_args args;
  fedc_config cfg;

  print_usage(stdout);
  memset(&args, 0, sizeof(args));
  if (fedc_config_init(&cfg, PROGRAM " partition", partition_options,
                       OPTION_COUNT, &args) == 0) {
    printf("partition: %s\n\nOptions of partition:\n\n", partition_summary);
    fedc_config_print_options(&cfg, stdout);
  }
  fedc_config_close(&cfg);
}

int main(int argc, char **argv)
{
  fedc_log_set_level(FEDC_LOG_WARN);
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
                    strcmp(argv[1], "-h") == 0 ||
                    strcmp(argv[1], "help") == 0)) {
    print_help();
    return EXIT_SUCCESS;
  }
  if (argc >= 2 && strcmp(argv[1], "partition") == 0)
    return cmd_partition(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "info") == 0)
    return cmd_info(argc - 1, argv + 1);
  if (argc >= 2)
    fprintf(stderr, PROGRAM ": unknown command '%s'\n", argv[1]);
  print_usage(stderr);
  return EXIT_USAGE;
}
