#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "data/partition.h"
#include "util/error.h"

#define CLASSES 10

/* Returns n labels, row i labelled i mod CLASSES. */
static int32_t *make_labels(uint64_t n)
{
  int32_t *labels = malloc(n * sizeof(*labels));

  ck_assert_ptr_nonnull(labels);
  for (uint64_t i = 0; i < n; i++)
    labels[i] = (int32_t)(i % CLASSES);
  return labels;
}

/* Asserts that every row 0..n-1 belongs to exactly one client and that
 * each client's rows ascend. */
static void assert_each_row_once(const fedc_partition *p, uint64_t n)
{
  uint8_t *seen = calloc(n, 1);

  ck_assert_ptr_nonnull(seen);
  ck_assert_uint_eq(p->offsets[0], 0);
  ck_assert_uint_eq(p->offsets[p->clients], n);
  for (uint32_t k = 0; k < p->clients; k++) {
    ck_assert_uint_le(p->offsets[k], p->offsets[k + 1]);
    for (uint64_t i = p->offsets[k]; i < p->offsets[k + 1]; i++) {
      ck_assert_uint_lt(p->rows[i], n);
      ck_assert_uint_eq(seen[p->rows[i]], 0);
      seen[p->rows[i]] = 1;
      if (i > p->offsets[k])
        ck_assert_uint_lt(p->rows[i - 1], p->rows[i]);
    }
  }
  free(seen);
}

/* Returns the mean over clients of the largest class's share of a
 * client's rows: 1/CLASSES for a perfect split, 1 when each client has
 * one class. */
static double mean_max_share(const fedc_partition *p, const int32_t *labels)
{
  double total = 0;

  for (uint32_t k = 0; k < p->clients; k++) {
    uint64_t counts[CLASSES] = { 0 }, max = 0, size = fedc_partition_size(p, k);

    for (uint64_t i = p->offsets[k]; i < p->offsets[k + 1]; i++)
      counts[labels[p->rows[i]]]++;
    for (int c = 0; c < CLASSES; c++)
      if (counts[c] > max)
        max = counts[c];
    total += size > 0 ? (double)max / (double)size : 1.0;
  }
  return total / p->clients;
}

/* Runs one scheme with fixed parameters over labels. */
static int run_scheme(fedc_partition *p, enum fedc_partition_scheme scheme,
                      const int32_t *labels, uint64_t n, uint32_t clients,
                      uint64_t seed)
{
  switch (scheme) {
  case FEDC_PARTITION_IID:
    return fedc_partition_iid(p, n, clients, seed);
  case FEDC_PARTITION_DIRICHLET:
    return fedc_partition_dirichlet(p, labels, n, CLASSES, clients, 0.3, 5,
                                    seed);
  case FEDC_PARTITION_SHARDS:
    return fedc_partition_shards(p, labels, n, CLASSES, clients, 2, seed);
  }
  return FEDC_EINVAL;
}

START_TEST(iid_sizes_differ_by_one)
{
  fedc_partition p;
  const uint64_t n = 10007;

  fedc_partition_init(&p);
  ck_assert_int_eq(fedc_partition_iid(&p, n, 10, 1), 0);
  ck_assert_uint_eq(p.clients, 10);
  for (uint32_t k = 0; k < 10; k++) {
    ck_assert_uint_ge(fedc_partition_size(&p, k), n / 10);
    ck_assert_uint_le(fedc_partition_size(&p, k), n / 10 + 1);
  }
  assert_each_row_once(&p, n);
  fedc_partition_close(&p);
}
END_TEST

START_TEST(every_scheme_covers_rows_once)
{
  static const struct {
    uint64_t n;
    uint32_t clients;
  } sizes[] = { { 20, 10 }, { 1000, 7 }, { 6000, 100 }, { 60000, 10 } };
  fedc_partition p;

  fedc_partition_init(&p);
  for (int scheme = 0; scheme < 3; scheme++) {
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
      int32_t *labels = make_labels(sizes[s].n);
      int rc = run_scheme(&p, (enum fedc_partition_scheme)scheme, labels,
                          sizes[s].n, sizes[s].clients, 42);

      /* Dirichlet needs 5 rows for each of 10 clients: 20 rows fall short. */
      if (scheme == FEDC_PARTITION_DIRICHLET && sizes[s].n < 50) {
        ck_assert_int_eq(rc, FEDC_EINVAL);
      } else {
        ck_assert_msg(rc == 0, "scheme %d n %llu", scheme,
                      (unsigned long long)sizes[s].n);
        ck_assert_uint_eq(p.clients, sizes[s].clients);
        assert_each_row_once(&p, sizes[s].n);
      }
      free(labels);
    }
  }
  fedc_partition_close(&p);
}
END_TEST

START_TEST(dirichlet_small_alpha_is_skewed)
{
  const uint64_t n = 60000;
  int32_t *labels = make_labels(n);
  fedc_partition iid, skewed;
  double iid_share, skewed_share;

  fedc_partition_init(&iid);
  fedc_partition_init(&skewed);
  ck_assert_int_eq(fedc_partition_iid(&iid, n, 20, 3), 0);
  ck_assert_int_eq(fedc_partition_dirichlet(&skewed, labels, n, CLASSES, 20,
                                            0.1, 10, 3), 0);
  iid_share = mean_max_share(&iid, labels);
  skewed_share = mean_max_share(&skewed, labels);

  /* IID clients of 3000 rows have a largest class near 10%. With alpha
   * 0.1, most of a client's rows come from one or two classes. */
  ck_assert_double_lt(iid_share, 0.13);
  ck_assert_double_gt(skewed_share, 0.5);
  fedc_partition_close(&iid);
  fedc_partition_close(&skewed);
  free(labels);
}
END_TEST

START_TEST(dirichlet_large_alpha_near_uniform)
{
  const uint64_t n = 60000;
  int32_t *labels = make_labels(n);
  fedc_partition p;

  fedc_partition_init(&p);
  ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, CLASSES, 20,
                                            1000.0, 10, 4), 0);
  ck_assert_double_lt(mean_max_share(&p, labels), 0.15);
  for (uint32_t k = 0; k < 20; k++) {
    ck_assert_uint_gt(fedc_partition_size(&p, k), 2700);
    ck_assert_uint_lt(fedc_partition_size(&p, k), 3300);
  }
  fedc_partition_close(&p);
  free(labels);
}
END_TEST

START_TEST(dirichlet_minimum_rows_respected)
{
  static const double alphas[] = { 0.01, 0.1, 1e-4 };
  const uint64_t n = 6000;
  int32_t *labels = make_labels(n);
  fedc_partition p;

  fedc_partition_init(&p);
  for (size_t a = 0; a < sizeof(alphas) / sizeof(alphas[0]); a++) {
    ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, CLASSES, 100,
                                              alphas[a], 30, 5), 0);
    for (uint32_t k = 0; k < 100; k++)
      ck_assert_uint_ge(fedc_partition_size(&p, k), 30);
    assert_each_row_once(&p, n);

    /* Rows moved to small clients come from one class of the donor, so
     * the clients stay skewed: IID clients of 60 rows are near 0.2. */
    ck_assert_double_gt(mean_max_share(&p, labels), 0.5);
  }

  /* The minimum can be exactly n / clients: every client gets 60. */
  ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, CLASSES, 100,
                                            0.1, 60, 5), 0);
  for (uint32_t k = 0; k < 100; k++)
    ck_assert_uint_eq(fedc_partition_size(&p, k), 60);
  fedc_partition_close(&p);
  free(labels);
}
END_TEST

START_TEST(same_seed_same_partition)
{
  const uint64_t n = 5000;
  int32_t *labels = make_labels(n);
  fedc_partition a, b;

  fedc_partition_init(&a);
  fedc_partition_init(&b);
  for (int scheme = 0; scheme < 3; scheme++) {
    ck_assert_int_eq(run_scheme(&a, (enum fedc_partition_scheme)scheme,
                                labels, n, 17, 99), 0);
    ck_assert_int_eq(run_scheme(&b, (enum fedc_partition_scheme)scheme,
                                labels, n, 17, 99), 0);
    ck_assert_mem_eq(a.offsets, b.offsets, 18 * sizeof(uint64_t));
    ck_assert_mem_eq(a.rows, b.rows, n * sizeof(uint32_t));

    ck_assert_int_eq(run_scheme(&b, (enum fedc_partition_scheme)scheme,
                                labels, n, 17, 100), 0);
    ck_assert(memcmp(a.rows, b.rows, n * sizeof(uint32_t)) != 0 ||
              memcmp(a.offsets, b.offsets, 18 * sizeof(uint64_t)) != 0);
  }
  fedc_partition_close(&a);
  fedc_partition_close(&b);
  free(labels);
}
END_TEST

START_TEST(shards_give_few_classes)
{
  const uint64_t n = 6000;
  int32_t *labels = make_labels(n);
  fedc_partition p;

  fedc_partition_init(&p);

  /* 60 shards of 100 rows; each class has 600 rows, so each shard contains
   * one class and each client at most two. */
  ck_assert_int_eq(fedc_partition_shards(&p, labels, n, CLASSES, 30, 2, 8),
                   0);
  for (uint32_t k = 0; k < 30; k++) {
    int seen[CLASSES] = { 0 }, classes = 0;

    ck_assert_uint_eq(fedc_partition_size(&p, k), 200);
    for (uint64_t i = p.offsets[k]; i < p.offsets[k + 1]; i++) {
      if (!seen[labels[p.rows[i]]])
        classes++;
      seen[labels[p.rows[i]]] = 1;
    }
    ck_assert_int_ge(classes, 1);
    ck_assert_int_le(classes, 2);
  }
  fedc_partition_close(&p);
  free(labels);
}
END_TEST

START_TEST(partition_rejects_bad_arguments)
{
  const uint64_t n = 100;
  int32_t *labels = make_labels(n);
  fedc_partition p;

  fedc_partition_init(&p);
  ck_assert_int_eq(fedc_partition_iid(&p, n, 0, 1), FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_iid(&p, n, 101, 1), FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, CLASSES, 10, 0.0,
                                            1, 1), FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, CLASSES, 10, -1.0,
                                            1, 1), FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, CLASSES, 10, 0.5,
                                            11, 1), FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_dirichlet(&p, labels, n, 5, 10, 0.5, 1, 1),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_shards(&p, labels, n, CLASSES, 51, 2, 1),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_partition_shards(&p, labels, n, CLASSES, 5, 0, 1),
                   FEDC_EINVAL);
  labels[50] = -1;
  ck_assert_int_eq(fedc_partition_shards(&p, labels, n, CLASSES, 5, 2, 1),
                   FEDC_EINVAL);
  ck_assert_ptr_null(p.rows);
  fedc_partition_close(&p);
  free(labels);
}
END_TEST

START_TEST(partition_view_and_options)
{
  fedc_dataset ds;
  fedc_partition p;
  fedc_partition_options opts;
  enum fedc_partition_scheme scheme;
  fedc_dataset_view view;

  ck_assert_int_eq(fedc_dataset_alloc(&ds, 300, 2, CLASSES), 0);
  for (uint32_t i = 0; i < 300; i++)
    ds.y[i] = (int32_t)(i % CLASSES);

  fedc_partition_options_default(&opts);
  ck_assert_int_eq(opts.scheme, FEDC_PARTITION_IID);
  ck_assert_uint_eq(opts.shards_per_client, 2);
  ck_assert_int_eq(fedc_partition_scheme_parse("shards", &scheme), 0);
  ck_assert_int_eq(scheme, FEDC_PARTITION_SHARDS);
  ck_assert_str_eq(fedc_partition_scheme_name(FEDC_PARTITION_DIRICHLET),
                   "dirichlet");
  ck_assert_int_eq(fedc_partition_scheme_parse("IID", &scheme), FEDC_EINVAL);

  fedc_partition_init(&p);
  opts.scheme = FEDC_PARTITION_DIRICHLET;
  opts.clients = 6;
  ck_assert_int_eq(fedc_partition_dataset(&p, &ds, &opts), 0);
  view = fedc_partition_view(&p, &ds, 3);
  ck_assert_ptr_eq(view.base, &ds);
  ck_assert_uint_eq(view.n, fedc_partition_size(&p, 3));
  ck_assert_uint_ge(view.n, 10);
  ck_assert_uint_eq(fedc_view_row(&view, 0), p.rows[p.offsets[3]]);
  fedc_partition_close(&p);
  fedc_dataset_close(&ds);
}
END_TEST

static Suite *partition_suite(void)
{
  Suite *s = suite_create("partition");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, iid_sizes_differ_by_one);
  tcase_add_test(tc, every_scheme_covers_rows_once);
  tcase_add_test(tc, dirichlet_small_alpha_is_skewed);
  tcase_add_test(tc, dirichlet_large_alpha_near_uniform);
  tcase_add_test(tc, dirichlet_minimum_rows_respected);
  tcase_add_test(tc, same_seed_same_partition);
  tcase_add_test(tc, shards_give_few_classes);
  tcase_add_test(tc, partition_rejects_bad_arguments);
  tcase_add_test(tc, partition_view_and_options);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(partition_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
