/* Splitting a labelled dataset's rows among simulated clients.
 *
 * Every scheme gives every row to exactly one client and is deterministic
 * for a given seed. A partition stores row indices, never copies of rows,
 * and fedc_partition_view() turns one client's share into a dataset view.
 *
 *   iid        shuffle the rows and deal them out: client sizes differ by
 *              at most one, and each client's class mix is close to the
 *              dataset's.
 *   dirichlet  label skew: for each class, the clients' shares of that
 *              class are drawn from Dirichlet(alpha, ..., alpha). A small
 *              alpha (0.1) gives each client few classes; a large one
 *              (100) is close to iid.
 *   shards     pathological skew: sort the rows by label, cut them into
 *              clients * shards_per_client equal shards, and give each
 *              client shards_per_client shards at random, so with 2 shards
 *              a client sees about two classes. */
#ifndef FEDC_DATA_PARTITION_H
#define FEDC_DATA_PARTITION_H

#include <stdint.h>

#include "dataset.h"

enum fedc_partition_scheme {
  FEDC_PARTITION_IID = 0,
  FEDC_PARTITION_DIRICHLET,
  FEDC_PARTITION_SHARDS,
};

typedef struct fedc_partition_options {
  enum fedc_partition_scheme scheme;
  uint32_t clients;
  uint64_t seed;
  double alpha;                 /* dirichlet concentration, > 0 */
  uint64_t min_rows;            /* dirichlet: rows every client gets */
  uint32_t shards_per_client;   /* shards: at least 1 */
} fedc_partition_options;

typedef struct fedc_partition {
  uint32_t clients;
  uint32_t *rows;       /* every row index once, grouped by client */
  uint64_t *offsets;    /* clients + 1 entries: client k owns rows
                         * offsets[k] .. offsets[k+1]-1, in ascending order */
} fedc_partition;

/* Defaults: iid, 10 clients, seed 0, alpha 0.5, min_rows 10,
 * shards_per_client 2. */
void fedc_partition_options_default(fedc_partition_options *opts);

/* Parses "iid", "dirichlet" or "shards". Returns 0 or FEDC_EINVAL. */
int fedc_partition_scheme_parse(const char *name,
                                enum fedc_partition_scheme *out);
const char *fedc_partition_scheme_name(enum fedc_partition_scheme scheme);

void fedc_partition_init(fedc_partition *p);
void fedc_partition_close(fedc_partition *p);

/* Shuffles rows 0..n-1 and deals them out to clients. Needs n >= clients
 * and n <= FEDC_DATASET_MAX_ROWS. Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_partition_iid(fedc_partition *p, uint64_t n, uint32_t clients,
                       uint64_t seed);

/* Dirichlet label skew over labels[0..n-1], each in 0..num_classes-1.
 *
 * For each class, the class's rows are shuffled and cut into consecutive
 * runs whose lengths follow one Dirichlet(alpha) draw over the clients.
 * Then every client with fewer than min_rows rows, in client order, takes
 * the rows it lacks from the client that has the most rows at that moment,
 * out of that client's largest class, so the small clients stay skewed. A
 * donor gives at most its rows above min_rows and the rows of that class.
 * When that is not enough, the receiver repeats with the next largest
 * client. Needs clients * min_rows <= n.
 * Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_partition_dirichlet(fedc_partition *p, const int32_t *labels,
                             uint64_t n, uint32_t num_classes,
                             uint32_t clients, double alpha,
                             uint64_t min_rows, uint64_t seed);

/* Shard skew over labels[0..n-1]: shard j of the label-sorted rows is rows
 * floor(j*n/S) .. floor((j+1)*n/S)-1 with S = clients * shards_per_client,
 * so shard sizes differ by at most one. Needs n >= S. */
int fedc_partition_shards(fedc_partition *p, const int32_t *labels,
                          uint64_t n, uint32_t num_classes, uint32_t clients,
                          uint32_t shards_per_client, uint64_t seed);

/* Runs the scheme of opts over the labels of ds. */
int fedc_partition_dataset(fedc_partition *p, const fedc_dataset *ds,
                           const fedc_partition_options *opts);

/* Returns the number of rows of client k. */
uint64_t fedc_partition_size(const fedc_partition *p, uint32_t k);

/* Returns a view of client k's rows of ds, valid while p and ds are. */
fedc_dataset_view fedc_partition_view(const fedc_partition *p,
                                      const fedc_dataset *ds, uint32_t k);

#endif
