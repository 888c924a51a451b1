/* The asynchronous modes of the server engine, driven by scripted events.
 * Every expected model was computed by hand; the values are chosen so
 * that each step is exact in float. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_testutil.h"
#include "util/error.h"
#include "wire/message.h"

#define MAX_PEERS 16

static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };
static const float UA[TEST_PARAMS] = { 8, 16, 0, -8, 1, 2 };
static const float UB[TEST_PARAMS] = { 4, 0, 2, 4, 0.5f, 1 };
static const float UC[TEST_PARAMS] = { 0, 8, 4, 0, 1, -1 };
static const float UD[TEST_PARAMS] = { 2, 2, 2, 2, 2, 2 };

/* A scripted asynchronous server and the task each peer holds. */
typedef struct async_run {
  test_server s;
  uint64_t task[MAX_PEERS];      /* FitTask.round last sent; 0 for none */
  unsigned tasks_sent;
} async_run;

/* Records the FitTasks of the last event. */
static void track(async_run *r)
{
  for (size_t i = 0; i < r->s.actions.count; i++) {
    const fedc_server_action *a = &r->s.actions.items[i];

    if (a->kind != FEDC_SERVER_ACTION_SEND || a->send.peer >= MAX_PEERS ||
        ts_body(a) != FEDC__ENVELOPE__BODY_FIT_TASK)
      continue;
    r->task[a->send.peer] =
      fedc_message_envelope(a->send.message)->fit_task->round;
    r->tasks_sent++;
  }
}

static void async_config(fedc_server_engine_config *c, uint32_t clients,
                         enum fedc_rounds_mode mode)
{
  test_server_config(c, clients);
  c->mode = mode;
  c->evaluate_every = 0;
}

static void run_start(async_run *r, const fedc_server_engine_config *c,
                      uint64_t clients)
{
  char id[16];

  memset(r, 0, sizeof(*r));
  test_server_start(&r->s, c, G0, 0);
  for (uint64_t p = 1; p <= clients; p++) {
    snprintf(id, sizeof(id), "c%llu", (unsigned long long)p);
    ts_hello(&r->s, p, id);
    track(r);
  }
}

/* Peer reports update for the task it holds. */
static void report(async_run *r, uint64_t peer, const float u[TEST_PARAMS],
                   uint64_t examples)
{
  ck_assert_uint_ne(r->task[peer], 0);
  ts_result(&r->s, peer, r->task[peer], u, examples);
  track(r);
}

static const fedc_round_metrics *finished(const test_server *s)
{
  const fedc_server_action *a = ts_find(s, FEDC_SERVER_ACTION_ROUND_FINISHED,
                                        UINT64_MAX);

  ck_assert_ptr_nonnull(a);
  return &a->round_finished;
}

/* FedBuff with K = 2 and s(t) = 1 / (1 + t) (polynomial, a = 1).
 * Round 1: A (1 example) and B (3 examples), both fresh: G0 + (UA + 3 UB)
 * / 4 = G0 + (5, 4, 1.5, 1, 0.625, 1.25). A was given a new task before
 * the buffer was applied, so it and C are one round stale when they
 * report: round 2 adds (UC / 2 + UD / 2) / 2 = (0.5, 2.5, 1.5, 0.5, 0.75,
 * 0.25). */
START_TEST(fedbuff_staleness_by_hand)
{
  const float g1[TEST_PARAMS] = { 6, 6, 4.5f, 5, 1.125f, 1.5f };
  const float g2[TEST_PARAMS] = { 6.5f, 8.5f, 6, 5.5f, 1.875f, 1.75f };
  fedc_server_engine_config c;
  const fedc_round_metrics *m;
  const fedc_server_action *cancel;
  uint64_t a_first;
  async_run r;

  async_config(&c, 3, FEDC_ROUNDS_FEDBUFF);
  c.buffer_size = 2;
  c.staleness_a = 1.0;
  run_start(&r, &c, 3);
  ck_assert_uint_eq(r.tasks_sent, 3);
  ck_assert_int_eq(fedc_server_engine_phase(r.s.engine),
                   FEDC_SERVER_TRAINING);
  ck_assert_uint_eq(fedc_server_engine_round(r.s.engine), 1);

  a_first = r.task[1];
  report(&r, 1, UA, 1);
  ck_assert_uint_ne(r.task[1], a_first);        /* a new task at once */
  ts_assert_model(&r.s, G0);
  report(&r, 2, UB, 3);
  ts_assert_model(&r.s, g1);
  m = finished(&r.s);
  ck_assert_uint_eq(m->round, 1);
  ck_assert(m->aggregated);
  ck_assert_uint_eq(m->clients_reported, 2);
  ck_assert_uint_eq(ts_find(&r.s, FEDC_SERVER_ACTION_CHECKPOINT, UINT64_MAX)->
                    checkpoint.round, 1);

  report(&r, 3, UC, 1);
  ts_assert_model(&r.s, g1);
  report(&r, 1, UD, 1);
  ts_assert_model(&r.s, g2);

  /* total_rounds 2: the tasks still out are cancelled and the run ends.
   * The Cancel goes out before the Goodbye of the CLOSE_ALL. */
  ck_assert_uint_eq(ts_count(&r.s, FEDC_SERVER_ACTION_DONE), 1);
  cancel = ts_find(&r.s, FEDC_SERVER_ACTION_SEND, 2);
  ck_assert_ptr_nonnull(cancel);
  ck_assert_int_eq(ts_body(cancel), FEDC__ENVELOPE__BODY_CANCEL);
  ts_assert_closed_all(&r.s, "all rounds finished");
  ck_assert(cancel < ts_find(&r.s, FEDC_SERVER_ACTION_CLOSE_ALL, UINT64_MAX));
  ck_assert_int_eq(fedc_server_engine_phase(r.s.engine), FEDC_SERVER_DONE);
  test_server_stop(&r.s);
}
END_TEST

/* A robust strategy works over each FedBuff buffer: with K = 3 fresh
 * updates the median per coordinate of UA, UB and UC is (4, 8, 2, 0, 1,
 * 1). */
START_TEST(fedbuff_with_median)
{
  const float g1[TEST_PARAMS] = { 5, 10, 5, 4, 1.5f, 1.25f };
  fedc_server_engine_config c;
  async_run r;

  async_config(&c, 3, FEDC_ROUNDS_FEDBUFF);
  c.buffer_size = 3;
  fedc_agg_config_default(&c.agg, FEDC_AGG_MEDIAN);
  c.total_rounds = 1;
  run_start(&r, &c, 3);
  report(&r, 1, UA, 1);
  report(&r, 2, UB, 50);
  ts_assert_model(&r.s, G0);
  report(&r, 3, UC, 1);
  ts_assert_model(&r.s, g1);
  ck_assert_uint_eq(ts_count(&r.s, FEDC_SERVER_ACTION_DONE), 1);
  test_server_stop(&r.s);
}
END_TEST

/* The default staleness weight is 1 / sqrt(1 + t); hinge and constant
 * follow their definitions. */
START_TEST(staleness_functions)
{
  fedc_server_engine_config c;

  fedc_server_engine_config_default(&c);
  ck_assert_double_eq_tol(fedc_staleness_weight(&c, 0), 1.0, 1e-15);
  ck_assert_double_eq_tol(fedc_staleness_weight(&c, 3), 0.5, 1e-15);
  ck_assert_double_eq_tol(fedc_staleness_weight(&c, 1), 1 / sqrt(2.0),
                          1e-15);
  c.staleness_fn = FEDC_STALENESS_HINGE;
  c.staleness_a = 10;
  c.staleness_b = 4;
  ck_assert_double_eq(fedc_staleness_weight(&c, 4), 1.0);
  ck_assert_double_eq_tol(fedc_staleness_weight(&c, 6), 1.0 / 21, 1e-15);
  c.staleness_fn = FEDC_STALENESS_CONSTANT;
  ck_assert_double_eq(fedc_staleness_weight(&c, 1000), 1.0);
}
END_TEST

/* With K = 1 and max_staleness 1, C's update from version 1 arrives after
 * two rounds: it is discarded and counted, the model does not move, and C
 * gets a new task without being closed. */
START_TEST(max_staleness_drops_update)
{
  const float g1[TEST_PARAMS] = { 9, 18, 3, -4, 1.5f, 2.25f };
  const float g2[TEST_PARAMS] = { 13, 18, 5, 0, 2, 3.25f };
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  uint64_t sent;
  async_run r;

  async_config(&c, 3, FEDC_ROUNDS_FEDBUFF);
  c.buffer_size = 1;
  c.staleness_fn = FEDC_STALENESS_CONSTANT;
  c.max_staleness = 1;
  c.total_rounds = 0;
  run_start(&r, &c, 3);
  st = fedc_server_engine_stats(r.s.engine);

  report(&r, 1, UA, 1);
  ts_assert_model(&r.s, g1);
  report(&r, 2, UB, 1);               /* staleness 1: applied */
  ts_assert_model(&r.s, g2);
  sent = st->tasks_sent;
  report(&r, 3, UC, 1);               /* staleness 2: discarded */
  ts_assert_model(&r.s, g2);
  ck_assert_ptr_null(ts_find(&r.s, FEDC_SERVER_ACTION_CLOSE, 3));
  ck_assert_uint_eq(st->tasks_sent, sent + 1);    /* C got a new task */
  ck_assert_uint_eq(st->training_now, 3);
  ck_assert_uint_eq(st->results_too_stale, 1);
  ck_assert_uint_eq(st->results_accepted, 2);
  ck_assert_uint_eq(fedc_server_engine_round(r.s.engine), 3);

  /* The next applied round reports the discarded update. */
  report(&r, 1, UD, 1);
  ck_assert_uint_eq(finished(&r.s)->updates_too_stale, 1);
  test_server_stop(&r.s);
}
END_TEST

/* FedAsync with alpha 0.5: A's fresh update moves the model by 0.5 UA,
 * then B's, one round stale, by 0.5 s(1) UB, where s(1) is 1 (constant),
 * 1 / 2 (polynomial, a = 1) or 1 / (3 x 1 + 1) = 1 / 4 (hinge, a = 3,
 * b = 0). */
START_TEST(fedasync_mixing_by_hand)
{
  static const struct {
    enum fedc_staleness_fn fn;
    double a;
    float s1;
  } cases[] = {
    { FEDC_STALENESS_CONSTANT, 0, 1.0f },
    { FEDC_STALENESS_POLYNOMIAL, 1, 0.5f },
    { FEDC_STALENESS_HINGE, 3, 0.25f },
  };
  float g1[TEST_PARAMS], g2[TEST_PARAMS];
  fedc_server_engine_config c;
  async_run r;
  int i = _i;

  for (int k = 0; k < TEST_PARAMS; k++) {
    g1[k] = G0[k] + 0.5f * UA[k];
    g2[k] = g1[k] + 0.5f * cases[i].s1 * UB[k];
  }
  async_config(&c, 2, FEDC_ROUNDS_FEDASYNC);
  c.async_alpha = 0.5;
  c.staleness_fn = cases[i].fn;
  c.staleness_a = cases[i].a;
  c.staleness_b = 0;
  c.total_rounds = 0;
  run_start(&r, &c, 2);
  report(&r, 1, UA, 7);
  ts_assert_model(&r.s, g1);
  ck_assert_uint_eq(finished(&r.s)->round, 1);
  report(&r, 2, UB, 3);
  ts_assert_model(&r.s, g2);
  ck_assert_uint_eq(finished(&r.s)->round, 2);
  test_server_stop(&r.s);
}
END_TEST

/* Ten clients, at most three training: every event keeps the count at or
 * below three, and the run reaches three at once. */
START_TEST(concurrency_limit_holds)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  uint64_t next = 1;
  async_run r;

  async_config(&c, 10, FEDC_ROUNDS_FEDBUFF);
  c.min_clients = 1;
  c.buffer_size = 2;
  c.max_concurrency = 3;
  c.total_rounds = 10;
  run_start(&r, &c, 10);
  st = fedc_server_engine_stats(r.s.engine);
  ck_assert_uint_eq(r.tasks_sent, 3);

  while (fedc_server_engine_phase(r.s.engine) != FEDC_SERVER_DONE) {
    uint64_t peer = 0, held;

    /* The next peer, in turn, that holds a task reports. */
    for (int k = 0; k < 10 && peer == 0; k++, next = next % 10 + 1)
      if (r.task[next] != 0)
        peer = next;
    ck_assert_uint_ne(peer, 0);
    held = r.task[peer];
    report(&r, peer, UD, 1);
    if (r.task[peer] == held)
      r.task[peer] = 0;
    ck_assert_uint_le(st->training_now, 3);
  }
  ck_assert_uint_eq(st->training_max, 3);
  ck_assert_uint_eq(st->rounds_aggregated, 10);
  ck_assert_uint_eq(st->results_accepted, 20);
  test_server_stop(&r.s);
}
END_TEST

/* A task that does not report within the deadline is cancelled, its slot
 * goes to another client, and its result that arrives later is discarded
 * and counted as late. */
START_TEST(task_deadline_cancels)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  const fedc_server_action *timer;
  uint64_t slow = 0, old_task;
  async_run r;

  async_config(&c, 3, FEDC_ROUNDS_FEDBUFF);
  c.buffer_size = 1;
  c.max_concurrency = 2;
  c.total_rounds = 0;
  run_start(&r, &c, 3);
  st = fedc_server_engine_stats(r.s.engine);
  timer = ts_find(&r.s, FEDC_SERVER_ACTION_START_TIMER, UINT64_MAX);
  ck_assert_ptr_nonnull(timer);
  ck_assert_uint_eq(timer->timer.delay_ms, 1000);

  for (uint64_t p = 1; p <= 3 && slow == 0; p++)
    if (r.task[p] != 0)
      slow = p;
  old_task = r.task[slow];
  r.s.now += 1000;
  ts_timer(&r.s, timer->timer.id);
  track(&r);
  ck_assert_uint_eq(st->tasks_cancelled, 2);
  ck_assert_uint_eq(st->training_now, 2);
  ck_assert_ptr_nonnull(ts_find(&r.s, FEDC_SERVER_ACTION_START_TIMER,
                                UINT64_MAX));

  /* The slow client's old result crossed its Cancel. */
  ts_result(&r.s, slow, old_task, UA, 1);
  ck_assert_ptr_null(ts_find(&r.s, FEDC_SERVER_ACTION_CLOSE, slow));
  ck_assert_uint_eq(st->results_late, 1);
  ts_assert_model(&r.s, G0);
  test_server_stop(&r.s);
}
END_TEST

/* Evaluation in the asynchronous modes: round 1's evaluation is still
 * running when round 2, the last, closes; round 2 waits, is reported
 * after round 1 and then evaluated, and the run ends. */
START_TEST(evaluation_in_order)
{
  fedc_server_engine_config c;
  const fedc_server_action *a;
  async_run r;

  async_config(&c, 2, FEDC_ROUNDS_FEDBUFF);
  c.buffer_size = 1;
  c.evaluate_every = 1;
  c.total_rounds = 2;
  run_start(&r, &c, 2);
  report(&r, 1, UA, 1);
  a = ts_find(&r.s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX);
  ck_assert_ptr_nonnull(a);
  ck_assert_uint_eq(a->evaluate.round, 1);
  ck_assert_uint_eq(ts_count(&r.s, FEDC_SERVER_ACTION_ROUND_FINISHED), 0);

  report(&r, 2, UB, 1);
  ck_assert_uint_eq(ts_count(&r.s, FEDC_SERVER_ACTION_EVALUATE), 0);
  ck_assert_uint_eq(ts_count(&r.s, FEDC_SERVER_ACTION_ROUND_FINISHED), 0);
  ck_assert_int_eq(fedc_server_engine_phase(r.s.engine),
                   FEDC_SERVER_EVALUATING);

  ts_evaluated(&r.s, 1, 1.0, 0.5);
  ck_assert_uint_eq(finished(&r.s)->round, 1);
  ck_assert(finished(&r.s)->evaluated);
  a = ts_find(&r.s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX);
  ck_assert_ptr_nonnull(a);
  ck_assert_uint_eq(a->evaluate.round, 2);

  ts_evaluated(&r.s, 2, 0.5, 0.75);
  ck_assert_uint_eq(finished(&r.s)->round, 2);
  ck_assert_double_eq(finished(&r.s)->test_accuracy, 0.75);
  ck_assert_uint_eq(ts_count(&r.s, FEDC_SERVER_ACTION_DONE), 1);
  test_server_stop(&r.s);
}
END_TEST

/* What may not be combined is rejected with a reason. */
START_TEST(async_config_checked)
{
  fedc_server_engine_config c;
  char reason[FEDC_REASON_MAX];

  async_config(&c, 2, FEDC_ROUNDS_FEDASYNC);
  fedc_agg_config_default(&c.agg, FEDC_AGG_MEDIAN);
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);
  ck_assert_ptr_nonnull(strstr(reason, "median"));

  async_config(&c, 2, FEDC_ROUNDS_FEDBUFF);
  fedc_agg_config_default(&c.agg, FEDC_AGG_KRUM);
  c.buffer_size = 4;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);
  ck_assert_ptr_nonnull(strstr(reason, "at least 5"));
  c.buffer_size = 5;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, NULL, 0), 0);

  async_config(&c, 2, FEDC_ROUNDS_FEDBUFF);
  c.sampling = FEDC_SAMPLING_OORT;
  ck_assert_int_eq(fedc_server_engine_config_check(&c, reason,
                                                   sizeof(reason)),
                   FEDC_EINVAL);
}
END_TEST

static Suite *async_suite(void)
{
  Suite *s = suite_create("async");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, fedbuff_staleness_by_hand);
  tcase_add_test(tc, fedbuff_with_median);
  tcase_add_test(tc, staleness_functions);
  tcase_add_test(tc, max_staleness_drops_update);
  tcase_add_loop_test(tc, fedasync_mixing_by_hand, 0, 3);
  tcase_add_test(tc, concurrency_limit_holds);
  tcase_add_test(tc, task_deadline_cancels);
  tcase_add_test(tc, evaluation_in_order);
  tcase_add_test(tc, async_config_checked);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(async_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
