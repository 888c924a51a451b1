#include "setup.h"

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "sim.h"
#include "util/error.h"

/* Finds DIR/NAME or DIR/NAME.gz. */
static int find_idx_file(const char *dir, const char *name, char *path,
                         size_t len)
{
  snprintf(path, len, "%s/%s", dir, name);
  if (access(path, R_OK) == 0)
    return 0;
  snprintf(path, len, "%s/%s.gz", dir, name);
  if (access(path, R_OK) == 0)
    return 0;
  fprintf(stderr, "fedc-sim: %s/%s not found (plain or .gz); set --data\n",
          dir, name);
  return FEDC_ENOENT;
}

static int load_idx_pair(const char *dir, const char *images,
                         const char *labels, fedc_dataset *ds)
{
  char image_path[4096], label_path[4096];
  int rc = find_idx_file(dir, images, image_path, sizeof(image_path));

  if (rc == 0)
    rc = find_idx_file(dir, labels, label_path, sizeof(label_path));
  if (rc == 0)
    rc = fedc_idx_load(image_path, label_path, ds);
  if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot load %s/%s: %s\n", dir, images,
            fedc_strerror(rc));
  return rc;
}

static int load_file(const char *path, fedc_dataset *ds)
{
  int rc = fedc_dataset_load(path, ds);

  if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot load %s: %s\n", path,
            fedc_strerror(rc));
  return rc;
}

int fedc_setup_load_data(const fedc_args *a, fedc_dataset *train,
                          fedc_dataset *test)
{
  int rc;

  if (a->train_data != NULL)
    rc = load_file(a->train_data, train);
  else
    rc = load_idx_pair(a->data, "train-images-idx3-ubyte",
                       "train-labels-idx1-ubyte", train);
  if (rc < 0)
    return rc;
  if (a->test_data != NULL)
    return load_file(a->test_data, test);
  if (a->train_data != NULL)
    return 0;
  return load_idx_pair(a->data, "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte", test);
}

/* Returns the rows the scheme gives each client at least: one for iid,
 * min_rows for dirichlet, and shards_per_client shards of at least one
 * row for shards. */
static uint64_t min_rows_per_client(const fedc_args *a,
                                    enum fedc_partition_scheme scheme)
{
  switch (scheme) {
  case FEDC_PARTITION_IID:
    return 1;
  case FEDC_PARTITION_DIRICHLET:
    return a->min_rows;
  case FEDC_PARTITION_SHARDS:
    return a->shards_per_client;
  }
  return 1;
}

/* Checks that the rows, with their copies, cover every client's minimum,
 * and says how to fix it when they do not. */
static int check_row_count(const fedc_args *a, const fedc_dataset *train,
                           enum fedc_partition_scheme scheme)
{
  uint64_t n = train->n, copies = a->data_copies;
  uint64_t per_client = min_rows_per_client(a, scheme);
  uint64_t needed, fix;

  if (n == 0 || copies > FEDC_DATASET_MAX_ROWS / n) {
    fprintf(stderr, "fedc-sim: %llu training rows x %llu copies is above "
            "the %llu rows a partition can index; lower --data-copies\n",
            (unsigned long long)n, (unsigned long long)copies,
            (unsigned long long)FEDC_DATASET_MAX_ROWS);
    return FEDC_EINVAL;
  }
  if (per_client <= n * copies / a->clients)
    return 0;

  needed = per_client <= UINT64_MAX / a->clients ? per_client * a->clients
                                                 : UINT64_MAX;
  fprintf(stderr, "fedc-sim: too few training rows: the %s partition "
          "needs %llu per client, so %llu for %lu clients, but there are "
          "%llu (%llu rows x %llu copies)\n", a->partition,
          (unsigned long long)per_client, (unsigned long long)needed,
          a->clients, (unsigned long long)(n * copies),
          (unsigned long long)n, (unsigned long long)copies);
  fix = needed / n + (needed % n != 0);
  if (fix <= FEDC_DATASET_MAX_ROWS / n)
    fprintf(stderr, "fedc-sim: set --data-copies %llu to partition that "
            "many copies of the rows, or run fewer clients\n",
            (unsigned long long)fix);
  else
    fprintf(stderr, "fedc-sim: run fewer clients\n");
  return FEDC_EINVAL;
}

int fedc_setup_partition(const fedc_args *a, const fedc_dataset *train,
                         fedc_partition *p)
{
  fedc_partition_options opts;
  int rc;

  fedc_partition_options_default(&opts);
  fedc_partition_scheme_parse(a->partition, &opts.scheme);
  rc = check_row_count(a, train, opts.scheme);
  if (rc < 0)
    return rc;

  opts.clients = (uint32_t)a->clients;
  opts.seed = a->seed;
  opts.alpha = a->alpha;
  opts.min_rows = a->min_rows;
  opts.shards_per_client = (uint32_t)a->shards_per_client;
  rc = fedc_sim_partition(p, train, &opts, (uint32_t)a->data_copies);
  if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot partition %llu rows (x%lu copies) "
            "among %lu clients with %s: %s\n",
            (unsigned long long)train->n, a->data_copies, a->clients,
            a->partition, fedc_strerror(rc));
  return rc;
}
