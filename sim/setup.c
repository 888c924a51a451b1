#include "setup.h"

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

int fedc_setup_partition(const fedc_args *a, const fedc_dataset *train,
                         fedc_partition *p)
{
  fedc_partition_options opts;
  int rc;

  fedc_partition_options_default(&opts);
  fedc_partition_scheme_parse(a->partition, &opts.scheme);
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
