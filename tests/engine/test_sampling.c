/* Cohort sampling of synchronous rounds, driven by scripted events:
 * Poisson frequencies, cohort bounds, over-selection with cancellation,
 * the concurrency cap, and Oort's preference and exploration. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_testutil.h"
#include "util/error.h"
#include "wire/message.h"

#define MAX_PEERS 64

static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };
static const float U1[TEST_PARAMS] = { 8, 16, 0, -8, 1, 2 };

/* Counts the messages of body case sent in the last event and marks the
 * receiving peers in marks (may be NULL). */
static size_t count_sent(const test_server *s, Fedc__Envelope__BodyCase body,
                         bool marks[MAX_PEERS])
{
  size_t n = 0;

  if (marks)
    memset(marks, 0, MAX_PEERS * sizeof(bool));
  for (size_t i = 0; i < s->actions.count; i++) {
    const fedc_server_action *a = &s->actions.items[i];

    if (a->kind != FEDC_SERVER_ACTION_SEND || ts_body(a) != body)
      continue;
    n++;
    if (marks && a->send.peer < MAX_PEERS)
      marks[a->send.peer] = true;
  }
  return n;
}

static uint64_t started_timer(const test_server *s)
{
  const fedc_server_action *a = ts_find(s, FEDC_SERVER_ACTION_START_TIMER,
                                        UINT64_MAX);

  ck_assert_ptr_nonnull(a);
  return a->timer.id;
}

/* Each of 20 clients is sampled independently with probability 0.3: over
 * 400 rounds every client's frequency is within 0.08 of q (3.5 standard
 * deviations) and the mean within 0.02, and cohort sizes vary. */
START_TEST(poisson_frequencies)
{
  enum { CLIENTS = 20, ROUNDS = 400 };
  fedc_server_engine_config c;
  unsigned picks[MAX_PEERS] = { 0 };
  bool marks[MAX_PEERS];
  size_t min_size = CLIENTS, max_size = 0, total = 0;
  test_server s;

  test_server_config(&c, CLIENTS);
  c.sampling = FEDC_SAMPLING_POISSON;
  c.poisson_q = 0.3;
  c.total_rounds = 0;
  c.evaluate_every = 0;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, CLIENTS);

  for (int r = 1; r <= ROUNDS; r++) {
    size_t n = count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, marks);

    ck_assert_uint_eq(fedc_server_engine_round(s.engine), (uint64_t)r);
    for (int p = 1; p <= CLIENTS; p++)
      picks[p] += marks[p];
    total += n;
    min_size = n < min_size ? n : min_size;
    max_size = n > max_size ? n : max_size;
    s.now += 1000;
    ts_timer(&s, started_timer(&s));
  }
  for (int p = 1; p <= CLIENTS; p++)
    ck_assert_msg(fabs(picks[p] / (double)ROUNDS - 0.3) < 0.08,
                  "client %d sampled in %u of %d rounds", p, picks[p],
                  ROUNDS);
  ck_assert_double_le(fabs(total / (double)(ROUNDS * CLIENTS) - 0.3), 0.02);
  ck_assert_uint_lt(min_size, 4);
  ck_assert_uint_gt(max_size, 9);
  test_server_stop(&s);
}
END_TEST

/* An empty Poisson draw still takes a round: it waits for its deadline
 * and is abandoned with a reason, the model unchanged. */
START_TEST(poisson_empty_round_waits)
{
  fedc_server_engine_config c;
  const fedc_round_metrics *m = NULL;
  uint64_t timer;
  test_server s;

  test_server_config(&c, 2);
  c.sampling = FEDC_SAMPLING_POISSON;
  c.poisson_q = 1e-9;
  c.evaluate_every = 0;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 2);
  ck_assert_uint_eq(count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, NULL), 0);
  timer = started_timer(&s);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_TRAINING);

  /* Another event does not close it early. */
  ts_hello(&s, 3, "c3");
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_ROUND_FINISHED), 0);

  s.now += 1000;
  ts_timer(&s, timer);
  m = &ts_find(&s, FEDC_SERVER_ACTION_ROUND_FINISHED, UINT64_MAX)->
      round_finished;
  ck_assert(!m->aggregated);
  ck_assert_uint_eq(m->clients_sampled, 0);
  ck_assert_ptr_nonnull(strstr(m->reason, "0 of 0 sampled"));
  ts_assert_model(&s, G0);
  test_server_stop(&s);
}
END_TEST

/* fraction_fit 0.1 of 10 idle clients is 1, raised to min_fit_clients 3;
 * fraction 1 is cut to max_fit_clients 4; max_concurrency 2 cuts both. */
START_TEST(uniform_min_max_counts)
{
  static const struct {
    double fraction;
    uint32_t min_fit, max_fit, concurrency;
    size_t expected;
  } cases[] = {
    { 0.1, 3, 0, 0, 3 }, { 1.0, 1, 4, 0, 4 }, { 0.5, 1, 0, 0, 5 },
    { 1.0, 1, 0, 2, 2 }, { 0.1, 3, 0, 2, 2 },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fedc_server_engine_config c;
    test_server s;

    test_server_config(&c, 10);
    c.quorum_count = 1;
    c.fraction_fit = cases[i].fraction;
    c.min_fit_clients = cases[i].min_fit;
    c.max_fit_clients = cases[i].max_fit;
    c.max_concurrency = cases[i].concurrency;
    test_server_start(&s, &c, G0, 0);
    ts_hello_all(&s, 10);
    ck_assert_msg(count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, NULL) ==
                  cases[i].expected, "case %zu sampled %zu, expected %zu", i,
                  count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, NULL),
                  cases[i].expected);
    ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->training_now,
                      cases[i].expected);
    test_server_stop(&s);
  }
}
END_TEST

/* Over-selection 1.5 of a cohort of 4 asks 6 clients; the round closes at
 * the fourth result with the mean of the four, and the other two get a
 * Cancel and are idle again. A result that crossed its Cancel is
 * discarded and counted. */
START_TEST(over_selection_closes_at_target)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  const fedc_round_metrics *m;
  bool sampled[MAX_PEERS], cancelled[MAX_PEERS];
  uint64_t reporters[4], rest[2];
  size_t nr = 0, nrest = 0;
  const float expected[TEST_PARAMS] = { 9, 18, 3, -4, 1.5f, 2.25f };
  test_server s;

  test_server_config(&c, 8);
  c.clients_per_round = 4;
  c.over_selection = 1.5;
  c.quorum_count = 3;
  c.evaluate_every = 0;
  test_server_start(&s, &c, G0, 0);
  st = fedc_server_engine_stats(s.engine);
  ts_hello_all(&s, 8);
  ck_assert_uint_eq(count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, sampled),
                    6);
  for (uint64_t p = 1; p <= 8; p++) {
    if (sampled[p] && nr < 4)
      reporters[nr++] = p;
    else if (sampled[p])
      rest[nrest++] = p;
  }

  for (size_t i = 0; i < 4; i++)
    ts_result(&s, reporters[i], 1, U1, 1);
  ck_assert_uint_eq(count_sent(&s, FEDC__ENVELOPE__BODY_CANCEL, cancelled),
                    2);
  ck_assert(cancelled[rest[0]] && cancelled[rest[1]]);
  m = &ts_find(&s, FEDC_SERVER_ACTION_ROUND_FINISHED, UINT64_MAX)->
      round_finished;
  ck_assert(m->aggregated);
  ck_assert_uint_eq(m->clients_sampled, 6);
  ck_assert_uint_eq(m->clients_reported, 4);
  ck_assert_uint_eq(m->clients_cancelled, 2);
  ts_assert_model(&s, expected);
  ck_assert_uint_eq(st->tasks_cancelled, 2);

  /* Round 2 started with every client idle again. */
  ck_assert_uint_eq(fedc_server_engine_round(s.engine), 2);
  ck_assert_uint_eq(count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, NULL), 6);

  /* The first straggler's round 1 result crossed the Cancel. */
  ts_result(&s, rest[0], 1, U1, 1);
  ck_assert_ptr_null(ts_find(&s, FEDC_SERVER_ACTION_CLOSE, rest[0]));
  ck_assert_uint_eq(st->results_late, 1);
  ck_assert_uint_eq(st->results_accepted, 4);
  test_server_stop(&s);
}
END_TEST

/* The three groups of the Oort test, by peer id. */
enum group { FAST_HIGH, SLOW_HIGH, FAST_LOW };

static enum group group_of(uint64_t peer)
{
  if (peer <= 5)
    return FAST_HIGH;
  if (peer <= 10)
    return SLOW_HIGH;
  return FAST_LOW;
}

/* Reports every sampled peer: fast ones 50 ms after the round start, slow
 * ones 1000 ms after, with loss 2 (high) or 0.1 (low). The clock stays at
 * the last report, where the next round starts. */
static void oort_report(test_server *s, uint64_t round,
                        const bool sampled[MAX_PEERS])
{
  uint64_t start = s->now;

  for (int pass = 0; pass < 2; pass++) {
    for (uint64_t p = 1; p <= 20; p++) {
      enum group g = group_of(p);

      if (!sampled[p] || (pass == 0) != (g != SLOW_HIGH))
        continue;
      s->now = start + (pass == 0 ? 50 : 1000);
      ts_result_loss(s, p, round, U1, 100, g == FAST_LOW ? 0.1 : 2.0);
    }
  }
}

/* Oort with T = 100 ms and a constant exploration share of 0.3: every
 * round explores 3 clients never heard from while any remain. Among the
 * explored, utility is 200 for fast high-loss clients, 10 for fast
 * low-loss ones and 200 x (100 / 1000)^2 = 2 for slow ones: the draw by
 * utility picks fast high-loss clients far more often than fast low-loss
 * ones, and the 95% cut-off leaves slow ones out while fast ones can fill
 * the exploit share. */
START_TEST(oort_prefers_fast_high_loss_and_explores)
{
  fedc_server_engine_config c;
  bool explored[MAX_PEERS] = { false };
  bool sampled[MAX_PEERS];
  unsigned chances[3] = { 0 }, picks[3] = { 0 };
  test_server s;

  test_server_config(&c, 20);
  c.sampling = FEDC_SAMPLING_OORT;
  c.clients_per_round = 10;
  c.quorum_count = 1;
  c.round_deadline_ms = 5000;
  c.total_rounds = 6;
  c.evaluate_every = 0;
  c.oort.exploration = 0.3;
  c.oort.exploration_min = 0.3;
  c.oort.preferred_ms = 100;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 20);

  for (uint64_t r = 1; r <= 6; r++) {
    size_t unexplored = 0, new_picks = 0, fast_explored = 0;

    ck_assert_uint_eq(count_sent(&s, FEDC__ENVELOPE__BODY_FIT_TASK, sampled),
                      10);
    for (uint64_t p = 1; p <= 20; p++) {
      unexplored += !explored[p];
      new_picks += sampled[p] && !explored[p];
      fast_explored += explored[p] && group_of(p) != SLOW_HIGH;
    }
    ck_assert_uint_eq(new_picks, r == 1 ? 10 : (unexplored < 3 ? unexplored
                                                             : 3));
    for (uint64_t p = 1; p <= 20 && r > 1; p++) {
      if (explored[p] && group_of(p) != SLOW_HIGH) {
        chances[group_of(p)]++;
        picks[group_of(p)] += sampled[p];
      }
      if (explored[p] && group_of(p) == SLOW_HIGH && fast_explored >= 7)
        ck_assert_msg(!sampled[p], "round %llu picked slow client %llu",
                      (unsigned long long)r, (unsigned long long)p);
    }
    oort_report(&s, r, sampled);
    for (uint64_t p = 1; p <= 20; p++)
      explored[p] = explored[p] || sampled[p];
  }
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_DONE);
  ck_assert_uint_gt(chances[FAST_HIGH], 10);
  ck_assert_uint_gt(chances[FAST_LOW], 10);
  ck_assert_msg(picks[FAST_HIGH] >= 0.9 * chances[FAST_HIGH],
                "fast high-loss picked %u of %u times", picks[FAST_HIGH],
                chances[FAST_HIGH]);
  ck_assert_msg(picks[FAST_LOW] <= 0.8 * chances[FAST_LOW],
                "fast low-loss picked %u of %u times", picks[FAST_LOW],
                chances[FAST_LOW]);
  test_server_stop(&s);
}
END_TEST

/* A fixed cohort too small for Krum's 2f + 3 updates is rejected. A
 * cohort that grows with the idle clients cannot be checked, so it passes. */
START_TEST(sync_krum_cohort_checked)
{
  fedc_server_engine_config c;
  char reason[FEDC_REASON_MAX];

  test_server_config(&c, 2);
  fedc_agg_config_default(&c.agg, FEDC_AGG_KRUM);
  c.agg.krum_byzantine = 1;
  c.clients_per_round = 4;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);
  ck_assert_ptr_nonnull(strstr(reason, "needs 5 updates"));
  ck_assert_ptr_nonnull(strstr(reason, "at most 4 clients"));

  c.clients_per_round = 5;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, NULL, 0), 0);
  c.clients_per_round = 8;
  c.max_fit_clients = 4;
  c.min_fit_clients = 1;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, NULL, 0),
                   FEDC_EINVAL);
  c.clients_per_round = 0;
  c.max_fit_clients = 0;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, NULL, 0), 0);
}
END_TEST

/* Invalid sampling settings are rejected with a reason. */
START_TEST(sampling_config_checked)
{
  fedc_server_engine_config c;
  char reason[FEDC_REASON_MAX];

  test_server_config(&c, 2);
  c.poisson_q = 0;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);
  ck_assert_ptr_nonnull(strstr(reason, "poisson_q"));

  test_server_config(&c, 2);
  c.over_selection = 0.5;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);
  ck_assert_ptr_nonnull(strstr(reason, "over_selection"));

  test_server_config(&c, 2);
  c.oort.exploration_min = 0.95;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);

  test_server_config(&c, 2);
  ck_assert_int_eq(fedc_server_engine_config_check(&c, NULL, 0), 0);
}
END_TEST

static Suite *sampling_suite(void)
{
  Suite *s = suite_create("sampling");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, poisson_frequencies);
  tcase_add_test(tc, poisson_empty_round_waits);
  tcase_add_test(tc, uniform_min_max_counts);
  tcase_add_test(tc, over_selection_closes_at_target);
  tcase_add_test(tc, oort_prefers_fast_high_loss_and_explores);
  tcase_add_test(tc, sampling_config_checked);
  tcase_add_test(tc, sync_krum_cohort_checked);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(sampling_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
