/* The server engine's peer table: its index of idle peers against a plain
 * scan, its heap strings, and the sparse draw of idle peers against the
 * partial Fisher-Yates shuffle of the full list that it replaces. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_testutil.h"
#include "server/engine_impl.h"
#include "server/peers.h"
#include "util/error.h"
#include "util/rng.h"

static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };

/* Writes the dense indices of the idle peers, in array order, to out and
 * returns their number: the list the idle index must agree with. */
static size_t scan_idle(const fedc_peers *peers, uint32_t *out)
{
  size_t n = 0;

  for (size_t k = 0; k < peers->count; k++)
    if (peers->items[k].state == FEDC_PEER_IDLE)
      out[n++] = (uint32_t)k;
  return n;
}

static void assert_index_matches_scan(const fedc_peers *peers)
{
  uint32_t *idle = malloc((peers->count + 1) * sizeof(*idle));
  size_t n;

  ck_assert_ptr_nonnull(idle);
  n = scan_idle(peers, idle);
  ck_assert_uint_eq(fedc_peers_idle_count(peers), n);
  for (size_t rank = 0; rank < n; rank++)
    ck_assert_uint_eq(fedc_peers_idle_at(peers, rank), idle[rank]);
  free(idle);
}

/* Random adds, state changes and removals, across several doublings of
 * the array; after each batch the index agrees with a scan. */
START_TEST(idle_index_matches_scan)
{
  static const enum fedc_peer_state states[] = {
    FEDC_PEER_HANDSHAKE, FEDC_PEER_IDLE, FEDC_PEER_TRAINING,
    FEDC_PEER_UPLOADING, FEDC_PEER_REPORTED,
  };
  fedc_peers peers;
  fedc_rng rng;
  uint64_t next_id = 1;

  fedc_peers_init(&peers);
  fedc_rng_seed(&rng, 7);
  for (int batch = 0; batch < 40; batch++) {
    for (int op = 0; op < 200; op++) {
      uint64_t r = fedc_rng_below(&rng, 10);
      fedc_peer *peer = NULL;

      if (r < 4 || peers.count == 0) {
        ck_assert_int_eq(fedc_peers_add(&peers, next_id++, &peer), 0);
        fedc_peers_set_state(&peers, peer, FEDC_PEER_IDLE);
      } else if (r < 8) {
        peer = &peers.items[fedc_rng_below(&rng, peers.count)];
        fedc_peers_set_state(&peers, peer, states[fedc_rng_below(&rng, 5)]);
      } else {
        peer = &peers.items[fedc_rng_below(&rng, peers.count)];
        fedc_peers_remove(&peers, peer);
      }
    }
    assert_index_matches_scan(&peers);
  }
  ck_assert_uint_gt(peers.capacity, 1024);
  fedc_peers_close(&peers);
  ck_assert_uint_eq(fedc_peers_idle_count(&peers), 0);
}
END_TEST

START_TEST(strings_owned_and_found)
{
  char long_id[FEDC_ID_MAX + 20];
  fedc_peers peers;
  fedc_peer *a = NULL, *b = NULL;

  memset(long_id, 'x', sizeof(long_id) - 1);
  long_id[sizeof(long_id) - 1] = '\0';
  fedc_peers_init(&peers);
  ck_assert_int_eq(fedc_peers_add(&peers, 1, &a), 0);
  ck_assert_str_eq(a->client_id, "");
  ck_assert_str_eq(a->identity, "");
  ck_assert_ptr_null(fedc_peers_find_client(&peers, ""));

  ck_assert_int_eq(fedc_peers_set_identity(a, "alice"), 0);
  ck_assert_int_eq(fedc_peers_set_client(&peers, a, "alice"), 0);
  ck_assert_int_eq(fedc_peers_add(&peers, 2, &b), 0);
  ck_assert_int_eq(fedc_peers_set_client(&peers, b, long_id), 0);
  ck_assert_uint_eq(strlen(b->client_id), FEDC_ID_MAX);

  /* Removing peer 1 moves peer 2 into its place; both indexes follow. */
  fedc_peers_remove(&peers, fedc_peers_find(&peers, 1));
  ck_assert_ptr_null(fedc_peers_find_client(&peers, "alice"));
  b = fedc_peers_find(&peers, 2);
  ck_assert_ptr_eq(b, &peers.items[0]);
  long_id[FEDC_ID_MAX] = '\0';
  ck_assert_ptr_eq(fedc_peers_find_client(&peers, long_id), b);
  fedc_peers_close(&peers);
}
END_TEST

/* An idle client costs the engine this entry plus its two index slots and
 * its client id; docs/simulator.md gives the figure. */
START_TEST(peer_entry_size)
{
  ck_assert_uint_le(sizeof(fedc_peer), 144);
}
END_TEST

/* The reference: moves n indices drawn with rng to the front of items by a
 * partial Fisher-Yates shuffle, as the sampler did over a full list. */
static void shuffle_front(fedc_rng *rng, uint32_t *items, size_t count,
                          size_t n)
{
  for (size_t i = 0; i < n; i++) {
    size_t j = i + (size_t)fedc_rng_below(rng, count - i);
    uint32_t t = items[i];

    items[i] = items[j];
    items[j] = t;
  }
}

/* Registers 500 clients, leaves holes and busy peers, then compares draws
 * of several sizes with the reference shuffle of the scanned list. */
START_TEST(sparse_draw_equals_full_shuffle)
{
  static const size_t sizes[] = { 1, 7, 100, 250, 0 };
  fedc_server_engine_config c;
  test_server s;
  uint32_t *idle;
  char id[16];

  test_server_config(&c, 100000);
  test_server_start(&s, &c, G0, 0);
  for (uint64_t p = 1; p <= 500; p++) {
    snprintf(id, sizeof(id), "c%llu", (unsigned long long)p);
    ts_hello(&s, p, id);
  }
  for (uint64_t p = 3; p <= 500; p += 7)
    ts_lost(&s, p);
  for (size_t k = 0; k < s.engine->peers.count; k += 5)
    fedc_peers_set_state(&s.engine->peers, &s.engine->peers.items[k],
                         FEDC_PEER_TRAINING);
  idle = malloc(s.engine->peers.count * sizeof(*idle));
  ck_assert_ptr_nonnull(idle);

  for (size_t t = 0; sizes[t] != 0; t++) {
    size_t count = scan_idle(&s.engine->peers, idle);
    fedc_rng drawn, reference;

    ck_assert_uint_ge(count, sizes[t]);
    fedc_rng_seed2(&drawn, 42, t);
    fedc_rng_seed2(&reference, 42, t);
    ck_assert_int_eq(fedc_sampler_draw(s.engine, &drawn, sizes[t]), 0);
    shuffle_front(&reference, idle, count, sizes[t]);
    for (size_t i = 0; i < sizes[t]; i++)
      ck_assert_uint_eq(s.engine->scratch[i], idle[i]);
  }

  /* Drawing every idle peer gives each exactly once. */
  {
    size_t count = scan_idle(&s.engine->peers, idle);
    fedc_rng rng;
    char *seen = calloc(s.engine->peers.count, 1);

    ck_assert_ptr_nonnull(seen);
    fedc_rng_seed2(&rng, 42, 99);
    ck_assert_int_eq(fedc_sampler_draw(s.engine, &rng, count), 0);
    for (size_t i = 0; i < count; i++) {
      uint32_t k = s.engine->scratch[i];

      ck_assert_int_eq(s.engine->peers.items[k].state, FEDC_PEER_IDLE);
      ck_assert_int_eq(seen[k], 0);
      seen[k] = 1;
    }
    free(seen);
  }
  free(idle);
  test_server_stop(&s);
}
END_TEST

static Suite *peers_suite(void)
{
  Suite *s = suite_create("server_peers");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, idle_index_matches_scan);
  tcase_add_test(tc, strings_owned_and_found);
  tcase_add_test(tc, peer_entry_size);
  tcase_add_test(tc, sparse_draw_equals_full_shuffle);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(peers_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
