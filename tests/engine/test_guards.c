/* The server engine's guards, driven by scripted events. They are the
 * bound on an update's L2 norm and the rollback of a round whose new model
 * has NaN or Inf values or test loss. They also cover the growing delay
 * after abandoned rounds, the stop after too many in a row, and the drain
 * for a graceful stop. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_testutil.h"
#include "util/error.h"
#include "wire/message.h"

/* The global model and three updates with weights 1, 2, 5: their mean
 * moves G0 to G1, as in the server engine tests. */
static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };
static const float G1[TEST_PARAMS] = { 3, 9, 6, 4, 1.375f, 0.125f };
static const float U1[TEST_PARAMS] = { 8, 16, 0, -8, 1, 2 };
static const float U2[TEST_PARAMS] = { 4, 0, 2, 4, 0.5f, 1 };
static const float U3[TEST_PARAMS] = { 0, 8, 4, 0, 1, -1 };

/* Every value 3.0e38: finite, but its norm is absurd for any model. */
static const float HUGE_UPDATE[TEST_PARAMS] = { 3.0e38f, 3.0e38f, 3.0e38f,
                                                3.0e38f, 3.0e38f, 3.0e38f };

static void report_honest(test_server *s, uint64_t round)
{
  ts_result(s, 1, round, U1, 1);
  ts_result(s, 2, round, U2, 2);
  ts_result(s, 3, round, U3, 5);
}

/* Sends an Error TRAINING_FAILED for round from peer. */
static void report_failure(test_server *s, uint64_t peer, uint64_t round)
{
  fedc_message *m = NULL;

  ck_assert_int_eq(fedc_message_error(FEDC__ERROR_CODE__TRAINING_FAILED,
                                      "training failed: data has 3 features, "
                                      "model expects 784", round, &m), 0);
  ts_receive(s, peer, fedc_message_envelope(m));
  fedc_message_free(&m);
}

static const fedc_round_metrics *finished(const test_server *s)
{
  const fedc_server_action *a = ts_find(s, FEDC_SERVER_ACTION_ROUND_FINISHED,
                                        UINT64_MAX);

  ck_assert_ptr_nonnull(a);
  return &a->round_finished;
}

static const fedc_server_action *last_action(const test_server *s)
{
  ck_assert_uint_gt(s->actions.count, 0);
  return &s->actions.items[s->actions.count - 1];
}

/* Returns the number of FitTasks among the actions of the last event. */
static size_t tasks_sent(const test_server *s)
{
  size_t n = 0;

  for (size_t i = 0; i < s->actions.count; i++) {
    const fedc_server_action *a = &s->actions.items[i];

    n += a->kind == FEDC_SERVER_ACTION_SEND &&
         ts_body(a) == FEDC__ENVELOPE__BODY_FIT_TASK;
  }
  return n;
}

/* Four clients, all sampled, quorum 3, three rounds. */
static void start_four(test_server *s, fedc_server_engine_config *c)
{
  test_server_config(c, 4);
  c->quorum_count = 3;
  c->total_rounds = 3;
  test_server_start(s, c, G0, 0);
  ts_hello_all(s, 4);
  ck_assert_int_eq(fedc_server_engine_phase(s->engine), FEDC_SERVER_TRAINING);
}

/* --- max_update_norm ---------------------------------------------------- */

/* The default bound rejects an update of finite but absurd values, and
 * the round aggregates the three honest clients exactly. */
START_TEST(huge_update_rejected_by_norm)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  test_server s;

  start_four(&s, &c);
  ck_assert_double_eq(c.max_update_norm, 1e4);
  st = fedc_server_engine_stats(s.engine);
  ts_result(&s, 4, 1, HUGE_UPDATE, 1);
  ts_assert_rejected(&s, 4, FEDC_REJECT_UPDATE_NORM,
                     FEDC__ERROR_CODE__BAD_UPDATE,
                     "exceeds max_update_norm 1e+04");
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_UPDATE_NORM], 1);
  ck_assert_str_eq(fedc_server_reject_name(FEDC_REJECT_UPDATE_NORM),
                   "update_norm");

  report_honest(&s, 1);
  ts_assert_model(&s, G1);
  ts_evaluated(&s, 1, 0.7, 0.8);
  ck_assert(finished(&s)->aggregated);
  ck_assert_uint_eq(st->results_accepted, 3);
  test_server_stop(&s);
}
END_TEST

/* An update exactly at the bound passes; just above it does not. */
START_TEST(norm_bound_is_inclusive)
{
  /* The norm of U2 is sqrt(16 + 4 + 16 + 0.25 + 1) = 6.1033... */
  fedc_server_engine_config c;
  test_server s;

  start_four(&s, &c);
  fedc_server_engine_free(&s.engine);
  fedc_server_actions_close(&s.actions);
  c.max_update_norm = 6.1034;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 4);
  ts_result(&s, 1, 1, U2, 1);
  ck_assert_ptr_null(ts_find(&s, FEDC_SERVER_ACTION_CLOSE, 1));
  ts_result(&s, 2, 1, U1, 1);
  ts_assert_rejected(&s, 2, FEDC_REJECT_UPDATE_NORM,
                     FEDC__ERROR_CODE__BAD_UPDATE, "update L2 norm 19.72 exceeds");
  test_server_stop(&s);
}
END_TEST

/* --- rollback ----------------------------------------------------------- */

/* With the norm bound off, a huge update makes a finite model whose test
 * loss is Inf: the engine rolls back, writes no checkpoint, reports the
 * round as abandoned and the next round starts from G0. */
START_TEST(nonfinite_test_loss_rolls_back)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  const fedc_round_metrics *m;
  const float *w;
  test_server s;

  test_server_config(&c, 4);
  c.quorum_count = 4;
  c.total_rounds = 3;
  c.max_update_norm = 0;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 4);
  st = fedc_server_engine_stats(s.engine);

  report_honest(&s, 1);
  ts_result(&s, 4, 1, HUGE_UPDATE, 1);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));
  w = fedc_server_engine_model(s.engine)->items[0].data;
  ck_assert_float_gt(w[0], 1e36f);

  ts_evaluated(&s, 1, INFINITY, 0.1);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
  m = finished(&s);
  ck_assert(!m->aggregated);
  ck_assert_msg(strstr(m->reason, "test loss of the aggregated model is inf; "
                       "the previous model is kept") != NULL,
                "reason \"%s\"", m->reason);
  ts_assert_model(&s, G0);
  ck_assert_uint_eq(st->rounds_rolled_back, 1);
  ck_assert_uint_eq(st->rounds_abandoned, 1);
  ck_assert_uint_eq(st->rounds_aggregated, 0);

  /* Round 2 starts at once (no retry delay here) from G0. */
  ck_assert_uint_eq(fedc_server_engine_round(s.engine), 2);
  ck_assert_uint_eq(tasks_sent(&s), 4);

  /* A NaN loss rolls back too; a finite one is kept and checkpointed. */
  report_honest(&s, 2);
  ts_result(&s, 4, 2, U1, 1);
  ts_evaluated(&s, 2, NAN, 0.1);
  ck_assert(!finished(&s)->aggregated);
  ts_assert_model(&s, G0);
  ck_assert_uint_eq(st->rounds_rolled_back, 2);

  report_honest(&s, 3);
  ts_result(&s, 4, 3, U1, 1);
  ts_evaluated(&s, 3, 0.5, 0.9);
  ck_assert(finished(&s)->aggregated);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 1);
  ck_assert_int_eq(last_action(&s)->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert(!last_action(&s)->done.failed);
  test_server_stop(&s);
}
END_TEST

/* The aggregate would overflow a float: the model stays, there is no
 * evaluation or checkpoint, and the round counts as rolled back. */
START_TEST(nonfinite_aggregate_rolls_back)
{
  const float big[TEST_PARAMS] = { 3e38f, 3e38f, 3e38f, 3e38f, 3e38f, 3e38f };
  fedc_server_engine_config c;
  const fedc_round_metrics *m;
  test_server s;

  test_server_config(&c, 3);
  c.max_update_norm = 0;
  test_server_start(&s, &c, big, 0);
  ts_hello_all(&s, 3);
  ts_result(&s, 1, 1, HUGE_UPDATE, 1);
  ts_result(&s, 2, 1, HUGE_UPDATE, 1);
  ts_result(&s, 3, 1, HUGE_UPDATE, 1);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_EVALUATE), 0);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
  m = finished(&s);
  ck_assert(!m->aggregated);
  ck_assert_ptr_nonnull(strstr(m->reason, "would put NaN or Inf into the "
                               "model"));
  ts_assert_model(&s, big);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->rounds_rolled_back, 1);
  test_server_stop(&s);
}
END_TEST

/* Runs rounds with FedAvgM, whose velocity persists across rounds, and
 * returns the final model and velocity. With bad_round set, a rolled-back
 * round with a huge update sits between the two honest rounds. */
static void run_fedavgm(bool bad_round, float model[TEST_PARAMS],
                        fedc_tensor_list *state)
{
  fedc_server_engine_config c;
  uint64_t round = 1;
  test_server s;

  test_server_config(&c, 3);
  c.total_rounds = bad_round ? 3 : 2;
  c.max_update_norm = 0;
  fedc_agg_config_default(&c.agg, FEDC_AGG_FEDAVGM);
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);

  report_honest(&s, round);
  ts_evaluated(&s, round++, 0.7, 0.8);
  if (bad_round) {
    ts_result(&s, 1, round, U1, 1);
    ts_result(&s, 2, round, U2, 2);
    ts_result(&s, 3, round, HUGE_UPDATE, 5);
    ts_evaluated(&s, round++, INFINITY, 0.1);
    ck_assert(!finished(&s)->aggregated);
  }
  report_honest(&s, round);
  ts_evaluated(&s, round, 0.6, 0.8);
  ck_assert(finished(&s)->aggregated);
  ck_assert_int_eq(last_action(&s)->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert_int_eq(fedc_tensor_list_copy(
                     state, &ts_find(&s, FEDC_SERVER_ACTION_CHECKPOINT,
                                     UINT64_MAX)->checkpoint.state), 0);
  test_values(fedc_server_engine_model(s.engine), model);
  test_server_stop(&s);
}

/* A rolled-back round leaves the server optimizer's velocity as it was:
 * the run ends exactly where one without the bad round ends. */
START_TEST(rollback_restores_optimizer_state)
{
  float want[TEST_PARAMS], got[TEST_PARAMS];
  fedc_tensor_list want_state, got_state;

  fedc_tensor_list_init(&want_state);
  fedc_tensor_list_init(&got_state);
  run_fedavgm(false, want, &want_state);
  run_fedavgm(true, got, &got_state);
  ck_assert_mem_eq(got, want, sizeof(got));
  ck_assert_uint_eq(want_state.count, 1);
  ck_assert_uint_eq(got_state.count, 1);
  ck_assert_mem_eq(got_state.items[0].data, want_state.items[0].data,
                   TEST_PARAMS * sizeof(double));
  fedc_tensor_list_close(&want_state);
  fedc_tensor_list_close(&got_state);
}
END_TEST

/* --- abandoned rounds --------------------------------------------------- */

/* Both clients fail every round at once. The retry delay doubles from
 * 1000 ms and is capped at 3000 ms. No round starts before its timer, and
 * the fourth abandoned round in a row ends the run as failed. */
START_TEST(abandoned_rounds_back_off_then_stop)
{
  const uint64_t delays[] = { 1000, 2000, 3000 };
  fedc_server_engine_config c;
  const fedc_server_action *a;
  test_server s;

  test_server_config(&c, 2);
  c.total_rounds = 20;
  c.retry_delay_ms = 1000;
  c.retry_delay_max_ms = 3000;
  c.max_abandoned_rounds = 4;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 2);

  for (uint64_t round = 1; round <= 3; round++) {
    ck_assert_uint_eq(fedc_server_engine_round(s.engine), round);
    /* The first failure already makes the quorum of 2 unreachable. */
    report_failure(&s, 1, round);
    ck_assert(!finished(&s)->aggregated);
    ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
    ck_assert_uint_eq(tasks_sent(&s), 0);
    a = last_action(&s);
    ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_START_TIMER);
    ck_assert_uint_eq(a->timer.delay_ms, delays[round - 1]);
    ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_WAITING);
    report_failure(&s, 2, round);
    ck_assert_uint_eq(s.actions.count, 0);

    /* A client that reconnects meanwhile does not start a round. */
    ts_lost(&s, 2);
    ts_hello(&s, 2, "c2");
    ck_assert_uint_eq(tasks_sent(&s), 0);

    s.now += a->timer.delay_ms;
    ts_timer(&s, a->timer.id);
    ck_assert_uint_eq(tasks_sent(&s), 2);
  }

  report_failure(&s, 1, 4);
  a = last_action(&s);
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert(a->done.failed);
  ck_assert_msg(strstr(a->done.reason, "4 rounds in a row were abandoned")
                != NULL, "reason \"%s\"", a->done.reason);
  ts_assert_closed_all(&s, a->done.reason);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_DONE);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->rounds_abandoned, 4);
  test_server_stop(&s);
}
END_TEST

/* An aggregated round resets the count: the delay starts over at 1000 ms. */
START_TEST(aggregated_round_resets_backoff)
{
  fedc_server_engine_config c;
  const fedc_server_action *a;
  test_server s;

  test_server_config(&c, 3);
  c.total_rounds = 10;
  c.evaluate_every = 0;
  c.retry_delay_ms = 1000;
  c.max_abandoned_rounds = 2;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);

  report_failure(&s, 1, 1);
  ck_assert(!finished(&s)->aggregated);
  a = last_action(&s);
  ck_assert_uint_eq(a->timer.delay_ms, 1000);
  ts_timer(&s, a->timer.id);

  report_honest(&s, 2);
  ck_assert(finished(&s)->aggregated);
  ck_assert_uint_eq(tasks_sent(&s), 3);

  report_failure(&s, 3, 3);
  a = last_action(&s);
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_START_TIMER);
  ck_assert_uint_eq(a->timer.delay_ms, 1000);
  test_server_stop(&s);
}
END_TEST

/* Every round of a run is abandoned, with no limit on abandoned rounds in
 * a row: the DONE after the last round reports that the run failed. */
START_TEST(run_without_aggregated_round_fails)
{
  fedc_server_engine_config c;
  test_server s;

  test_server_config(&c, 2);
  c.total_rounds = 2;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 2);
  for (uint64_t round = 1; round <= 2; round++)
    report_failure(&s, 1, round);
  ck_assert_int_eq(last_action(&s)->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert(last_action(&s)->done.failed);
  ck_assert_str_eq(last_action(&s)->done.reason, "all rounds finished");
  ts_assert_closed_all(&s, "all rounds finished");
  test_server_stop(&s);
}
END_TEST

/* --- drain -------------------------------------------------------------- */

static void drain(test_server *s, uint64_t timeout_ms)
{
  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_drain(s->engine, s->now, timeout_ms,
                                            &s->actions), 0);
}

/* A drain mid-round: new connections are turned away, the round closes
 * once its quorum has reported, is evaluated and checkpointed, and only
 * then does every client get a Goodbye. */
START_TEST(drain_finishes_open_round)
{
  fedc_server_engine_config c;
  const fedc_server_action *a;
  test_server s;

  start_four(&s, &c);
  ts_result(&s, 1, 1, U1, 1);
  drain(&s, 5000);
  ck_assert_uint_eq(s.actions.count, 1);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_START_TIMER);
  ck_assert_uint_eq(s.actions.items[0].timer.delay_ms, 5000);

  ts_connect(&s, 9, NULL);
  ck_assert_int_eq(ts_body(ts_find(&s, FEDC_SERVER_ACTION_SEND, 9)),
                   FEDC__ENVELOPE__BODY_GOODBYE);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_CLOSE, 9));

  ts_result(&s, 2, 1, U2, 2);
  ck_assert_uint_eq(s.actions.count, 0);
  ts_result(&s, 3, 1, U3, 5);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));
  ck_assert_int_eq(ts_body(ts_find(&s, FEDC_SERVER_ACTION_SEND, 4)),
                   FEDC__ENVELOPE__BODY_CANCEL);
  ts_assert_model(&s, G1);

  ts_evaluated(&s, 1, 0.7, 0.8);
  a = ts_find(&s, FEDC_SERVER_ACTION_CHECKPOINT, UINT64_MAX);
  ck_assert_ptr_nonnull(a);
  ck_assert_uint_eq(a->checkpoint.round, 1);
  ck_assert(finished(&s)->aggregated);
  ck_assert_uint_eq(tasks_sent(&s), 0);
  ts_assert_closed_all(&s, "server shutting down");
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CANCEL_TIMER), 1);
  a = last_action(&s);
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert(!a->done.failed);
  ck_assert_str_eq(a->done.reason, "server shutting down");
  test_server_stop(&s);
}
END_TEST

/* The drain timeout closes the round with what it has: here below the
 * quorum, so it is abandoned, and the run still ends without failure. */
START_TEST(drain_timeout_closes_round)
{
  fedc_server_engine_config c;
  uint64_t timer;
  test_server s;

  start_four(&s, &c);
  ts_result(&s, 1, 1, U1, 1);
  drain(&s, 5000);
  timer = s.actions.items[0].timer.id;
  s.now += 5000;
  ts_timer(&s, timer);
  ck_assert(!finished(&s)->aggregated);
  ck_assert_ptr_nonnull(strstr(finished(&s)->reason, "drain timeout passed"));
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
  ck_assert_int_eq(last_action(&s)->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert(!last_action(&s)->done.failed);
  ts_assert_model(&s, G0);
  test_server_stop(&s);
}
END_TEST

/* Between rounds there is nothing to wait for; a second drain or a
 * shutdown after the end changes nothing. */
START_TEST(drain_between_rounds_ends_at_once)
{
  fedc_server_engine_config c;
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 2);
  drain(&s, 5000);
  ts_assert_closed_all(&s, "server shutting down");
  ck_assert_int_eq(last_action(&s)->kind, FEDC_SERVER_ACTION_DONE);
  drain(&s, 5000);
  ck_assert_uint_eq(s.actions.count, 0);
  test_server_stop(&s);
}
END_TEST

/* FedBuff with a buffer of 10: a drain sends no new task, and once the
 * three tasks out have reported the partial buffer is applied and
 * checkpointed before the run ends. */
START_TEST(drain_applies_partial_buffer)
{
  fedc_server_engine_config c;
  const fedc_server_action *a;
  uint64_t task[4] = { 0 };
  test_server s;

  test_server_config(&c, 3);
  c.mode = FEDC_ROUNDS_FEDBUFF;
  c.buffer_size = 10;
  c.evaluate_every = 0;
  c.staleness_fn = FEDC_STALENESS_CONSTANT;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);

  /* The third Hello dispatched a task to each client. */
  ck_assert_uint_eq(tasks_sent(&s), 3);
  for (size_t i = 0; i < s.actions.count; i++) {
    a = &s.actions.items[i];
    if (a->kind == FEDC_SERVER_ACTION_SEND &&
        ts_body(a) == FEDC__ENVELOPE__BODY_FIT_TASK)
      task[a->send.peer] =
        fedc_message_envelope(a->send.message)->fit_task->round;
  }

  drain(&s, 5000);
  ck_assert_uint_eq(s.actions.count, 1);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_START_TIMER);
  ts_result(&s, 1, task[1], U1, 1);
  ck_assert_uint_eq(tasks_sent(&s), 0);
  ts_result(&s, 2, task[2], U2, 2);
  ck_assert_uint_eq(tasks_sent(&s), 0);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_DONE), 0);
  ts_result(&s, 3, task[3], U3, 5);

  ts_assert_model(&s, G1);
  a = ts_find(&s, FEDC_SERVER_ACTION_CHECKPOINT, UINT64_MAX);
  ck_assert_ptr_nonnull(a);
  ck_assert_uint_eq(a->checkpoint.round, 1);
  ck_assert(finished(&s)->aggregated);
  ck_assert_uint_eq(finished(&s)->clients_reported, 3);
  ck_assert_int_eq(last_action(&s)->kind, FEDC_SERVER_ACTION_DONE);
  ck_assert(!last_action(&s)->done.failed);
  test_server_stop(&s);
}
END_TEST

static Suite *guards_suite(void)
{
  Suite *s = suite_create("engine_guards");
  TCase *tc = tcase_create("core");

  tcase_add_test(tc, huge_update_rejected_by_norm);
  tcase_add_test(tc, norm_bound_is_inclusive);
  tcase_add_test(tc, nonfinite_test_loss_rolls_back);
  tcase_add_test(tc, nonfinite_aggregate_rolls_back);
  tcase_add_test(tc, rollback_restores_optimizer_state);
  tcase_add_test(tc, abandoned_rounds_back_off_then_stop);
  tcase_add_test(tc, aggregated_round_resets_backoff);
  tcase_add_test(tc, run_without_aggregated_round_fails);
  tcase_add_test(tc, drain_finishes_open_round);
  tcase_add_test(tc, drain_timeout_closes_round);
  tcase_add_test(tc, drain_between_rounds_ends_at_once);
  tcase_add_test(tc, drain_applies_partial_buffer);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(guards_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
