#include "partition.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/rng.h"

static const char *const scheme_names[] = {
  [FEDC_PARTITION_IID] = "iid",
  [FEDC_PARTITION_DIRICHLET] = "dirichlet",
  [FEDC_PARTITION_SHARDS] = "shards",
};

#define SCHEME_COUNT (sizeof(scheme_names) / sizeof(scheme_names[0]))

void fedc_partition_options_default(fedc_partition_options *opts)
{
  memset(opts, 0, sizeof(*opts));
  opts->scheme = FEDC_PARTITION_IID;
  opts->clients = 10;
  opts->alpha = 0.5;
  opts->min_rows = 10;
  opts->shards_per_client = 2;
}

int fedc_partition_scheme_parse(const char *name,
                                enum fedc_partition_scheme *out)
{
  for (size_t i = 0; i < SCHEME_COUNT; i++) {
    if (strcmp(name, scheme_names[i]) == 0) {
      *out = (enum fedc_partition_scheme)i;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

const char *fedc_partition_scheme_name(enum fedc_partition_scheme scheme)
{
  return (size_t)scheme < SCHEME_COUNT ? scheme_names[scheme] : NULL;
}

void fedc_partition_init(fedc_partition *p)
{
  memset(p, 0, sizeof(*p));
}

void fedc_partition_close(fedc_partition *p)
{
  free(p->rows);
  free(p->offsets);
  fedc_partition_init(p);
}

uint64_t fedc_partition_size(const fedc_partition *p, uint32_t k)
{
  return p->offsets[k + 1] - p->offsets[k];
}

fedc_dataset_view fedc_partition_view(const fedc_partition *p,
                                      const fedc_dataset *ds, uint32_t k)
{
  fedc_dataset_view view = { ds, p->rows + p->offsets[k],
                             fedc_partition_size(p, k) };

  return view;
}

/* Returns a malloc'ed array of count uint32_t (one at least), or NULL. */
static uint32_t *alloc_u32(uint64_t count)
{
  if (count > SIZE_MAX / sizeof(uint32_t))
    return NULL;
  return malloc(count > 0 ? (size_t)count * sizeof(uint32_t) : 1);
}

/* Fills p from owner[i], the client of row i, by a counting sort, so each
 * client's rows come out in ascending order. */
static int build_from_owner(fedc_partition *p, const uint32_t *owner,
                            uint64_t n, uint32_t clients)
{
  uint64_t *offsets = calloc((size_t)clients + 1, sizeof(*offsets));
  uint32_t *rows = alloc_u32(n);

  if (offsets == NULL || rows == NULL) {
    free(offsets);
    free(rows);
    return FEDC_ENOMEM;
  }
  for (uint64_t i = 0; i < n; i++)
    offsets[owner[i] + 1]++;
  for (uint32_t k = 0; k < clients; k++)
    offsets[k + 1] += offsets[k];

  /* offsets[k] serves as client k's write cursor, which leaves it at the
   * start of client k+1; one shift restores the starts. */
  for (uint64_t i = 0; i < n; i++)
    rows[offsets[owner[i]]++] = (uint32_t)i;
  memmove(offsets + 1, offsets, clients * sizeof(*offsets));
  offsets[0] = 0;

  fedc_partition_close(p);
  p->clients = clients;
  p->rows = rows;
  p->offsets = offsets;
  return 0;
}

static int check_labels(const int32_t *labels, uint64_t n,
                        uint32_t num_classes)
{
  if (n > FEDC_DATASET_MAX_ROWS || num_classes == 0)
    return FEDC_EINVAL;
  for (uint64_t i = 0; i < n; i++)
    if (labels[i] < 0 || (uint32_t)labels[i] >= num_classes)
      return FEDC_EINVAL;
  return 0;
}

/* Rows grouped by class: class c owns rows[offsets[c] .. offsets[c+1]-1]. */
typedef struct class_index {
  uint32_t *rows;
  uint64_t *offsets;
} class_index;

static void class_index_close(class_index *ci)
{
  free(ci->rows);
  free(ci->offsets);
}

/* Groups the rows by label and shuffles the rows within each class, so a
 * class's rows are taken in random order rather than file order. */
static int class_index_build(class_index *ci, const int32_t *labels,
                             uint64_t n, uint32_t num_classes, fedc_rng *rng)
{
  ci->offsets = calloc((size_t)num_classes + 1, sizeof(*ci->offsets));
  ci->rows = alloc_u32(n);
  if (ci->offsets == NULL || ci->rows == NULL)
    return FEDC_ENOMEM;
  for (uint64_t i = 0; i < n; i++)
    ci->offsets[labels[i] + 1]++;
  for (uint32_t c = 0; c < num_classes; c++)
    ci->offsets[c + 1] += ci->offsets[c];
  for (uint64_t i = 0; i < n; i++)
    ci->rows[ci->offsets[labels[i]]++] = (uint32_t)i;
  memmove(ci->offsets + 1, ci->offsets, num_classes * sizeof(*ci->offsets));
  ci->offsets[0] = 0;

  for (uint32_t c = 0; c < num_classes; c++)
    fedc_rng_shuffle_u32(rng, ci->rows + ci->offsets[c],
                         (size_t)(ci->offsets[c + 1] - ci->offsets[c]));
  return 0;
}

/* ------------------------------------------------------------------------
 * IID
 */

int fedc_partition_iid(fedc_partition *p, uint64_t n, uint32_t clients,
                       uint64_t seed)
{
  uint32_t *perm = NULL, *owner = NULL;
  fedc_rng rng;
  int rc = FEDC_EINVAL;

  if (clients == 0 || n < clients || n > FEDC_DATASET_MAX_ROWS)
    goto out;
  rc = FEDC_ENOMEM;
  perm = alloc_u32(n);
  owner = alloc_u32(n);
  if (perm == NULL || owner == NULL)
    goto out;

  for (uint64_t i = 0; i < n; i++)
    perm[i] = (uint32_t)i;
  fedc_rng_seed(&rng, seed);
  fedc_rng_shuffle_u32(&rng, perm, (size_t)n);
  for (uint32_t k = 0; k < clients; k++) {
    uint64_t begin = k * n / clients, end = (k + 1) * n / clients;

    for (uint64_t j = begin; j < end; j++)
      owner[perm[j]] = k;
  }
  rc = build_from_owner(p, owner, n, clients);
out:
  free(perm);
  free(owner);
  return rc;
}

/* ------------------------------------------------------------------------
 * Dirichlet
 */

/* Each class's shuffled rows are cut into one run per client: client k's
 * run of class c is positions begin[c*K+k] .. end[c*K+k]-1 of that class's
 * rows. The minimum-size fix shortens donors' runs from the end. */
typedef struct dirichlet_state {
  class_index classes;
  uint32_t clients;
  uint32_t *begin, *end;
  uint64_t *sizes;       /* rows per client */
  double *weights;       /* one Dirichlet draw, per client */
} dirichlet_state;

static void dirichlet_close(dirichlet_state *st)
{
  class_index_close(&st->classes);
  free(st->begin);
  free(st->end);
  free(st->sizes);
  free(st->weights);
}

static int dirichlet_alloc(dirichlet_state *st, uint32_t num_classes,
                           uint32_t clients)
{
  uint64_t cells = (uint64_t)num_classes * clients;

  st->clients = clients;
  st->begin = alloc_u32(cells);
  st->end = alloc_u32(cells);
  st->sizes = calloc(clients, sizeof(*st->sizes));
  st->weights = calloc(clients, sizeof(*st->weights));
  if (st->begin == NULL || st->end == NULL || st->sizes == NULL ||
      st->weights == NULL)
    return FEDC_ENOMEM;
  return 0;
}

/* Cuts class c's rows into runs whose lengths follow one draw from
 * Dirichlet(alpha): normalized independent Gamma(alpha, 1) variables. */
static void cut_class(dirichlet_state *st, uint32_t c, double alpha,
                      fedc_rng *rng)
{
  uint32_t clients = st->clients;
  uint64_t count = st->classes.offsets[c + 1] - st->classes.offsets[c];
  uint64_t prev = 0;
  double sum = 0, cumulative = 0;

  for (uint32_t k = 0; k < clients; k++) {
    st->weights[k] = fedc_rng_gamma(rng, alpha);
    sum += st->weights[k];
  }

  /* With a tiny alpha every Gamma draw can underflow to 0. The limit of
   * Dirichlet(alpha) as alpha goes to 0 puts all mass on one client, so
   * that is what the class gets. */
  if (!(sum > 0) || !isfinite(sum)) {
    memset(st->weights, 0, clients * sizeof(*st->weights));
    st->weights[fedc_rng_below(rng, clients)] = 1;
    sum = 1;
  }
  for (uint32_t k = 0; k < clients; k++) {
    uint64_t cut = count;

    cumulative += st->weights[k];
    if (k + 1 < clients && cumulative < sum)
      cut = (uint64_t)floor((double)count * (cumulative / sum));
    if (cut < prev)
      cut = prev;
    st->begin[(uint64_t)c * clients + k] = (uint32_t)prev;
    st->end[(uint64_t)c * clients + k] = (uint32_t)cut;
    st->sizes[k] += cut - prev;
    prev = cut;
  }
}

/* Orders donors in a max-heap by size, ties to the lower client id. */
static int donor_before(const dirichlet_state *st, uint32_t a, uint32_t b)
{
  return st->sizes[a] > st->sizes[b] ||
         (st->sizes[a] == st->sizes[b] && a < b);
}

static void heap_sift_down(const dirichlet_state *st, uint32_t *heap,
                           size_t count, size_t i)
{
  for (;;) {
    size_t left = 2 * i + 1, right = left + 1, top = i;
    uint32_t swap;

    if (left < count && donor_before(st, heap[left], heap[top]))
      top = left;
    if (right < count && donor_before(st, heap[right], heap[top]))
      top = right;
    if (top == i)
      return;
    swap = heap[i];
    heap[i] = heap[top];
    heap[top] = swap;
    i = top;
  }
}

/* Returns the class with the most rows in client d's runs. */
static uint32_t largest_class(const dirichlet_state *st, uint32_t d,
                              uint32_t num_classes)
{
  uint32_t best = 0;
  uint64_t best_len = 0;

  for (uint32_t c = 0; c < num_classes; c++) {
    uint64_t cell = (uint64_t)c * st->clients + d;
    uint64_t len = st->end[cell] - st->begin[cell];

    if (len > best_len) {
      best = c;
      best_len = len;
    }
  }
  return best;
}

/* Moves up to want rows from donor d, out of its largest class, to client
 * k, leaving d at min_rows at least. Taking a run from one class keeps the
 * receiver skewed. */
static void move_rows(dirichlet_state *st, uint32_t d, uint32_t k,
                      uint64_t want, uint64_t min_rows, uint32_t num_classes,
                      uint32_t *owner)
{
  uint32_t c = largest_class(st, d, num_classes);
  uint64_t cell = (uint64_t)c * st->clients + d;
  uint64_t take = st->end[cell] - st->begin[cell];

  if (take > want)
    take = want;
  if (take > st->sizes[d] - min_rows)
    take = st->sizes[d] - min_rows;
  for (uint64_t i = 0; i < take; i++) {
    uint64_t pos = --st->end[cell];

    owner[st->classes.rows[st->classes.offsets[c] + pos]] = k;
  }
  st->sizes[d] -= take;
  st->sizes[k] += take;
}

/* Raises every client to min_rows by the rule in partition.h. The heap
 * holds the clients above min_rows, and a donor leaves it when it falls to
 * min_rows. Receivers never exceed min_rows, so they are never donors. */
static int fix_min_rows(dirichlet_state *st, uint32_t num_classes,
                        uint64_t min_rows, uint32_t *owner)
{
  uint32_t *heap = alloc_u32(st->clients);
  size_t count = 0;

  if (heap == NULL)
    return FEDC_ENOMEM;
  for (uint32_t k = 0; k < st->clients; k++)
    if (st->sizes[k] > min_rows)
      heap[count++] = k;
  for (size_t i = count / 2; i-- > 0;)
    heap_sift_down(st, heap, count, i);

  for (uint32_t k = 0; k < st->clients; k++) {
    while (st->sizes[k] < min_rows && count > 0) {
      uint32_t d = heap[0];

      move_rows(st, d, k, min_rows - st->sizes[k], min_rows, num_classes,
                owner);
      if (st->sizes[d] == min_rows)
        heap[0] = heap[--count];
      heap_sift_down(st, heap, count, 0);
    }
  }
  free(heap);
  return 0;
}

/* Writes the owner of every row still in a client's runs. */
static void assign_runs(const dirichlet_state *st, uint32_t num_classes,
                        uint32_t *owner)
{
  for (uint32_t c = 0; c < num_classes; c++) {
    const uint32_t *rows = st->classes.rows + st->classes.offsets[c];

    for (uint32_t k = 0; k < st->clients; k++) {
      uint64_t cell = (uint64_t)c * st->clients + k;

      for (uint64_t i = st->begin[cell]; i < st->end[cell]; i++)
        owner[rows[i]] = k;
    }
  }
}

int fedc_partition_dirichlet(fedc_partition *p, const int32_t *labels,
                             uint64_t n, uint32_t num_classes,
                             uint32_t clients, double alpha,
                             uint64_t min_rows, uint64_t seed)
{
  dirichlet_state st = { 0 };
  uint32_t *owner = NULL;
  fedc_rng rng;
  int rc = FEDC_EINVAL;

  if (clients == 0 || !(alpha > 0) || !isfinite(alpha) ||
      (min_rows > 0 && clients > n / min_rows) ||
      check_labels(labels, n, num_classes) != 0)
    goto out;
  fedc_rng_seed(&rng, seed);
  rc = class_index_build(&st.classes, labels, n, num_classes, &rng);
  if (rc == 0)
    rc = dirichlet_alloc(&st, num_classes, clients);
  owner = alloc_u32(n);
  if (rc != 0 || owner == NULL) {
    rc = FEDC_ENOMEM;
    goto out;
  }

  for (uint32_t c = 0; c < num_classes; c++)
    cut_class(&st, c, alpha, &rng);
  rc = fix_min_rows(&st, num_classes, min_rows, owner);
  if (rc != 0)
    goto out;
  assign_runs(&st, num_classes, owner);
  rc = build_from_owner(p, owner, n, clients);
out:
  dirichlet_close(&st);
  free(owner);
  return rc;
}

/* ------------------------------------------------------------------------
 * Shards
 */

int fedc_partition_shards(fedc_partition *p, const int32_t *labels,
                          uint64_t n, uint32_t num_classes, uint32_t clients,
                          uint32_t shards_per_client, uint64_t seed)
{
  uint64_t shards = (uint64_t)clients * shards_per_client;
  class_index sorted = { 0 };
  uint32_t *ids = NULL, *owner = NULL;
  fedc_rng rng;
  int rc = FEDC_EINVAL;

  if (clients == 0 || shards_per_client == 0 || shards > n ||
      check_labels(labels, n, num_classes) != 0)
    goto out;
  fedc_rng_seed(&rng, seed);
  rc = class_index_build(&sorted, labels, n, num_classes, &rng);
  ids = alloc_u32(shards);
  owner = alloc_u32(n);
  if (rc != 0 || ids == NULL || owner == NULL) {
    rc = FEDC_ENOMEM;
    goto out;
  }

  for (uint64_t j = 0; j < shards; j++)
    ids[j] = (uint32_t)j;
  fedc_rng_shuffle_u32(&rng, ids, (size_t)shards);
  for (uint64_t s = 0; s < shards; s++) {
    uint64_t j = ids[s], begin = j * n / shards, end = (j + 1) * n / shards;

    for (uint64_t i = begin; i < end; i++)
      owner[sorted.rows[i]] = (uint32_t)(s / shards_per_client);
  }
  rc = build_from_owner(p, owner, n, clients);
out:
  class_index_close(&sorted);
  free(ids);
  free(owner);
  return rc;
}

int fedc_partition_dataset(fedc_partition *p, const fedc_dataset *ds,
                           const fedc_partition_options *opts)
{
  switch (opts->scheme) {
  case FEDC_PARTITION_IID:
    return fedc_partition_iid(p, ds->n, opts->clients, opts->seed);
  case FEDC_PARTITION_DIRICHLET:
    return fedc_partition_dirichlet(p, ds->y, ds->n, ds->num_classes,
                                    opts->clients, opts->alpha,
                                    opts->min_rows, opts->seed);
  case FEDC_PARTITION_SHARDS:
    return fedc_partition_shards(p, ds->y, ds->n, ds->num_classes,
                                 opts->clients, opts->shards_per_client,
                                 opts->seed);
  }
  return FEDC_EINVAL;
}
