/* Whole tensor streams passed to the engines in memory, as the simulator
 * passes them: the same results and the same checks as chunked streams,
 * without the copy. Expected models were computed by hand, as in
 * test_server_engine.c and test_async.c. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/engine.h"
#include "engine_testutil.h"
#include "util/error.h"
#include "wire/chunker.h"
#include "wire/message.h"

#define MAX_PEERS 8

/* The global model and three updates with weights 1, 2, 5 (sum 8); G1 is
 * G0 plus their weighted mean. */
static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };
static const float U1[TEST_PARAMS] = { 8, 16, 0, -8, 1, 2 };
static const float U2[TEST_PARAMS] = { 4, 0, 2, 4, 0.5f, 1 };
static const float U3[TEST_PARAMS] = { 0, 8, 4, 0, 1, -1 };
static const float G1[TEST_PARAMS] = { 3, 9, 6, 4, 1.375f, 0.125f };

/* Sends a FitResult for round that announces the test model's layout. */
static void send_fit_result(test_server *s, uint64_t peer, uint64_t round,
                            uint64_t examples)
{
  const fedc_message_metric metrics[] = {
    { "train_loss", 0.5 }, { "train_accuracy", 0.75 },
  };
  fedc_snapshot *layout = test_snapshot(G0);
  fedc_message *result = NULL;

  ck_assert_int_eq(fedc_message_fit_result(round, examples, metrics, 2,
                                           layout, &result), 0);
  ts_receive(s, peer, fedc_message_envelope(result));
  fedc_message_free(&result);
  fedc_snapshot_unref(&layout);
}

/* Passes snapshot to the server as a whole stream of round and kind. */
static void send_snapshot(test_server *s, uint64_t peer, uint64_t round,
                          Fedc__StreamKind kind, fedc_snapshot *snapshot)
{
  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_received_tensors(s->engine, s->now,
                                                       peer, round, kind,
                                                       snapshot,
                                                       &s->actions), 0);
}

/* Passes a snapshot of a copy of t, dropped after the call as a sender
 * would drop it. */
static void send_tensors(test_server *s, uint64_t peer, uint64_t round,
                         Fedc__StreamKind kind, const fedc_tensor_list *t)
{
  fedc_snapshot *snapshot = NULL;
  fedc_tensor_list copy;

  fedc_tensor_list_init(&copy);
  ck_assert_int_eq(fedc_tensor_list_copy(&copy, t), 0);
  ck_assert_int_eq(fedc_snapshot_new(&copy, &snapshot), 0);
  send_snapshot(s, peer, round, kind, snapshot);
  fedc_snapshot_unref(&snapshot);
}

/* A FitResult, then the update in memory. */
static void report(test_server *s, uint64_t peer, uint64_t round,
                   const float update[TEST_PARAMS], uint64_t examples)
{
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  test_model(&list, update);
  send_fit_result(s, peer, round, examples);
  send_tensors(s, peer, round, FEDC__STREAM_KIND__UPDATE, &list);
  fedc_tensor_list_close(&list);
}

START_TEST(server_aggregates_update)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);
  st = fedc_server_engine_stats(s.engine);
  report(&s, 1, 1, U1, 1);
  report(&s, 2, 1, U2, 2);
  ck_assert_uint_eq(s.actions.count, 0);
  report(&s, 3, 1, U3, 5);

  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));
  ts_assert_model(&s, G1);
  ck_assert_uint_eq(st->results_accepted, 3);
  ck_assert_uint_eq(st->bytes_received, 3 * 24);
  ts_evaluated(&s, 1, 0.7, 0.8);
  ck_assert_uint_eq(ts_find(&s, FEDC_SERVER_ACTION_ROUND_FINISHED,
                            UINT64_MAX)->round_finished.bytes_received,
                    3 * 24);
  test_server_stop(&s);
}
END_TEST

/* Each case makes peer 1 send a stream it may not send, and the engine
 * closes it with the same offense as for the chunked stream. */
enum bad_stream { NAN_VALUE, WRONG_SHAPE, WRONG_ROUND, WRONG_KIND,
                  NO_FIT_RESULT };

static const struct {
  enum bad_stream bad;
  enum fedc_server_reject reject;
  Fedc__ErrorCode code;
  const char *text;
} bad_streams[] = {
  { NAN_VALUE, FEDC_REJECT_NONFINITE, FEDC__ERROR_CODE__BAD_UPDATE,
    "NaN or Inf" },
  { WRONG_SHAPE, FEDC_REJECT_CHUNK, FEDC__ERROR_CODE__BAD_MESSAGE,
    "do not match the announced" },
  { WRONG_ROUND, FEDC_REJECT_CHUNK, FEDC__ERROR_CODE__BAD_MESSAGE,
    "expected round 1" },
  { WRONG_KIND, FEDC_REJECT_CHUNK, FEDC__ERROR_CODE__BAD_MESSAGE,
    "expected kind" },
  { NO_FIT_RESULT, FEDC_REJECT_CHUNK, FEDC__ERROR_CODE__BAD_MESSAGE,
    "without a FitResult" },
};

START_TEST(server_rejects_bad_stream)
{
  const uint64_t flat_shape[1] = { 4 };
  const uint64_t bias_shape[1] = { 2 };
  enum bad_stream bad = bad_streams[_i].bad;
  fedc_server_engine_config c;
  fedc_tensor_list list;
  float values[TEST_PARAMS];
  test_server s;
  uint64_t round = 1;
  Fedc__StreamKind kind = FEDC__STREAM_KIND__UPDATE;

  test_server_config(&c, 3);
  c.quorum_count = 2;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);
  memcpy(values, U1, sizeof(values));
  if (bad == NAN_VALUE)
    values[2] = NAN;
  fedc_tensor_list_init(&list);
  if (bad == WRONG_SHAPE) {
    ck_assert_int_eq(fedc_tensor_list_add(&list, "w", FEDC_DTYPE_F32, 1,
                                          flat_shape, values), 0);
    ck_assert_int_eq(fedc_tensor_list_add(&list, "b", FEDC_DTYPE_F32, 1,
                                          bias_shape, values + 4), 0);
  } else {
    test_model(&list, values);
  }
  if (bad == WRONG_ROUND)
    round = 7;
  if (bad == WRONG_KIND)
    kind = FEDC__STREAM_KIND__GLOBAL_MODEL;

  if (bad != NO_FIT_RESULT)
    send_fit_result(&s, 1, 1, 1);
  send_tensors(&s, 1, round, kind, &list);
  ts_assert_rejected(&s, 1, bad_streams[_i].reject, bad_streams[_i].code,
                     bad_streams[_i].text);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->peers, 2);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->bytes_received, 0);

  /* The round goes on with the others. */
  report(&s, 2, 1, U2, 2);
  report(&s, 3, 1, U3, 5);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));
  fedc_tensor_list_close(&list);
  test_server_stop(&s);
}
END_TEST

START_TEST(server_stream_before_hello)
{
  fedc_server_engine_config c;
  fedc_tensor_list list;
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  ts_connect(&s, 9, NULL);
  fedc_tensor_list_init(&list);
  test_model(&list, U1);
  send_tensors(&s, 9, 1, FEDC__STREAM_KIND__UPDATE, &list);
  ts_assert_rejected(&s, 9, FEDC_REJECT_MESSAGE,
                     FEDC__ERROR_CODE__BAD_MESSAGE, "before Hello");
  fedc_tensor_list_close(&list);
  test_server_stop(&s);
}
END_TEST

/* A straggler cancelled at the deadline reports late: its result and its
 * stream are discarded, and it stays connected. */
START_TEST(server_discards_late_stream)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  const fedc_server_action *timer;
  test_server s;

  test_server_config(&c, 3);
  c.quorum_count = 2;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);
  timer = ts_find(&s, FEDC_SERVER_ACTION_START_TIMER, UINT64_MAX);
  ck_assert_ptr_nonnull(timer);
  uint64_t deadline = timer->timer.id;

  report(&s, 1, 1, U1, 1);
  report(&s, 2, 1, U2, 2);
  s.now += 1000;
  ts_timer(&s, deadline);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));

  st = fedc_server_engine_stats(s.engine);
  report(&s, 3, 1, U3, 5);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CLOSE), 0);
  ck_assert_uint_eq(st->results_late, 1);
  ck_assert_uint_eq(st->results_accepted, 2);
  ck_assert_uint_eq(st->peers, 3);
  test_server_stop(&s);
}
END_TEST

/* FedAsync with alpha 0.5 and s(t) = 1 / (1 + t): the first update is
 * fresh, the second one round stale, so G0 + 0.5 U1 and then + 0.25 U2.
 * The sender's tensors stay as they were: the engine scales a copy. */
START_TEST(server_async_scales_copy)
{
  fedc_server_engine_config c;
  uint64_t task[MAX_PEERS] = { 0 };
  float g1[TEST_PARAMS], g2[TEST_PARAMS], sent[TEST_PARAMS];
  fedc_snapshot *update = NULL;
  fedc_tensor_list list;
  test_server s;

  for (int k = 0; k < TEST_PARAMS; k++) {
    g1[k] = G0[k] + 0.5f * U1[k];
    g2[k] = g1[k] + 0.25f * U2[k];
  }
  test_server_config(&c, 2);
  c.mode = FEDC_ROUNDS_FEDASYNC;
  c.async_alpha = 0.5;
  c.staleness_fn = FEDC_STALENESS_POLYNOMIAL;
  c.staleness_a = 1;
  c.evaluate_every = 0;
  c.total_rounds = 0;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 2);
  for (size_t i = 0; i < s.actions.count; i++) {
    const fedc_server_action *a = &s.actions.items[i];

    if (a->kind == FEDC_SERVER_ACTION_SEND &&
        ts_body(a) == FEDC__ENVELOPE__BODY_FIT_TASK)
      task[a->send.peer] =
        fedc_message_envelope(a->send.message)->fit_task->round;
  }
  ck_assert_uint_ne(task[1], 0);
  ck_assert_uint_ne(task[2], 0);

  fedc_tensor_list_init(&list);
  test_model(&list, U1);
  ck_assert_int_eq(fedc_snapshot_new(&list, &update), 0);
  send_fit_result(&s, 1, task[1], 7);
  send_snapshot(&s, 1, task[1], FEDC__STREAM_KIND__UPDATE, update);
  ts_assert_model(&s, g1);
  test_values(fedc_snapshot_tensors(update), sent);
  ck_assert_mem_eq(sent, U1, sizeof(sent));
  fedc_snapshot_unref(&update);

  report(&s, 2, task[2], U2, 3);
  ts_assert_model(&s, g2);
  test_server_stop(&s);
}
END_TEST

typedef struct test_client {
  fedc_client_engine *engine;
  fedc_client_actions actions;   /* of the last event */
} test_client;

/* A client engine connected and welcomed, then given the FitTask of round
 * 4 that announces model, without the stream. */
static void tc_start_task(test_client *t, fedc_snapshot *model)
{
  fedc_train_config train = { .local_epochs = 1, .batch_size = 4,
                              .learning_rate = 0.5f, .seed = 77 };
  fedc_message *welcome = NULL, *task = NULL;
  fedc_client_config c;

  fedc_client_config_default(&c);
  c.hello.client_id = "c1";
  c.hello.num_examples = 10;
  memset(t, 0, sizeof(*t));
  fedc_client_actions_init(&t->actions);
  ck_assert_int_eq(fedc_client_engine_new(&c, &t->engine), 0);
  ck_assert_int_eq(fedc_client_engine_connected(t->engine, 0, &t->actions),
                   0);
  ck_assert_int_eq(fedc_message_welcome("srv", 3, 1 << 20, 8, &welcome), 0);
  ck_assert_int_eq(fedc_client_engine_received(
                     t->engine, 0, fedc_message_envelope(welcome),
                     &t->actions), 0);
  ck_assert_int_eq(fedc_message_fit_task(4, &train, "test:2:2", model,
                                         &task), 0);
  ck_assert_int_eq(fedc_client_engine_received(
                     t->engine, 0, fedc_message_envelope(task),
                     &t->actions), 0);
  fedc_message_free(&welcome);
  fedc_message_free(&task);
  ck_assert_int_eq(fedc_client_engine_state(t->engine),
                   FEDC_CLIENT_RECEIVING_TASK);
}

static void tc_stop(test_client *t)
{
  fedc_client_actions_close(&t->actions);
  fedc_client_engine_free(&t->engine);
}

static void tc_tensors(test_client *t, uint64_t round, Fedc__StreamKind kind,
                       fedc_snapshot *tensors)
{
  fedc_client_actions_clear(&t->actions);
  ck_assert_int_eq(fedc_client_engine_received_tensors(t->engine, 0, round,
                                                       kind, tensors,
                                                       &t->actions), 0);
}

/* The TRAIN action carries the sender's own snapshot, and the update is
 * computed against it. */
START_TEST(client_keeps_model_by_reference)
{
  static const float W[TEST_PARAMS] = { 1.5f, 1, 5, 4, 0.75f, 0.125f };
  static const float D[TEST_PARAMS] = { 0.5f, -1, 2, 0, 0.25f, -0.125f };
  fedc_client_train_result r = { .num_examples = 10, .loss = 0.25,
                                 .accuracy = 0.5, .steps = 7 };
  fedc_snapshot *model = test_snapshot(G0);
  const fedc_client_action *a;
  fedc_tensor_list weights, update;
  float values[TEST_PARAMS];
  test_client t;

  tc_start_task(&t, model);
  tc_tensors(&t, 4, FEDC__STREAM_KIND__GLOBAL_MODEL, model);
  ck_assert_uint_eq(t.actions.count, 1);
  a = &t.actions.items[0];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_TRAIN);
  ck_assert_uint_eq(a->train.round, 4);
  ck_assert_ptr_eq(a->train.model, model);
  ck_assert_int_eq(fedc_client_engine_state(t.engine), FEDC_CLIENT_TRAINING);

  fedc_tensor_list_init(&weights);
  test_model(&weights, W);
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_trained(t.engine, 0, 4, 0, &weights,
                                              &r, &t.actions), 0);
  fedc_tensor_list_close(&weights);
  ck_assert_uint_eq(t.actions.count, 2);
  a = &t.actions.items[1];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_SEND_STREAM);
  fedc_tensor_list_init(&update);
  test_drain(a->stream.stream,
             fedc_message_envelope(t.actions.items[0].send.message)
               ->fit_result->update, 2, &update);
  test_values(&update, values);
  ck_assert_mem_eq(values, D, sizeof(values));
  fedc_tensor_list_close(&update);

  /* The sender's model is unchanged. */
  test_values(fedc_snapshot_tensors(model), values);
  ck_assert_mem_eq(values, G0, sizeof(values));
  tc_stop(&t);
  fedc_snapshot_unref(&model);
}
END_TEST

/* Each case sends a stream the task did not announce; the client closes
 * the connection with an Error, as for a bad chunk. */
START_TEST(client_rejects_bad_stream)
{
  const uint64_t flat_shape[1] = { 6 };
  float values[TEST_PARAMS];
  fedc_snapshot *model = test_snapshot(G0);
  fedc_snapshot *sent = NULL;
  fedc_tensor_list list;
  uint64_t round = 4;
  Fedc__StreamKind kind = FEDC__STREAM_KIND__GLOBAL_MODEL;
  test_client t;

  memcpy(values, G0, sizeof(values));
  fedc_tensor_list_init(&list);
  if (_i == 0)
    values[5] = INFINITY;
  if (_i == 1)
    ck_assert_int_eq(fedc_tensor_list_add(&list, "w", FEDC_DTYPE_F32, 1,
                                          flat_shape, values), 0);
  else
    test_model(&list, values);
  if (_i == 2)
    round = 5;
  if (_i == 3)
    kind = FEDC__STREAM_KIND__UPDATE;
  ck_assert_int_eq(fedc_snapshot_new(&list, &sent), 0);

  tc_start_task(&t, model);
  tc_tensors(&t, round, kind, sent);
  ck_assert_uint_eq(t.actions.count, 2);
  ck_assert_int_eq(t.actions.items[0].kind, FEDC_CLIENT_ACTION_SEND);
  ck_assert_int_eq(fedc_message_envelope(t.actions.items[0].send.message)
                     ->body_case, FEDC__ENVELOPE__BODY_ERROR);
  ck_assert_int_eq(t.actions.items[1].kind, FEDC_CLIENT_ACTION_CLOSE);
  ck_assert_msg(strstr(t.actions.items[1].close.reason, "model stream "
                       "rejected") != NULL, "reason \"%s\"",
                t.actions.items[1].close.reason);
  ck_assert_int_eq(fedc_client_engine_state(t.engine),
                   FEDC_CLIENT_DISCONNECTED);

  /* A disconnected engine ignores a stream still on its way. */
  tc_tensors(&t, 4, FEDC__STREAM_KIND__GLOBAL_MODEL, model);
  ck_assert_uint_eq(t.actions.count, 0);
  tc_stop(&t);
  fedc_snapshot_unref(&sent);
  fedc_snapshot_unref(&model);
}
END_TEST

START_TEST(client_stream_while_idle)
{
  fedc_snapshot *model = test_snapshot(G0);
  test_client t;

  tc_start_task(&t, model);
  tc_tensors(&t, 4, FEDC__STREAM_KIND__GLOBAL_MODEL, model);
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_trained(t.engine, 0, 4, -1, NULL, NULL,
                                              &t.actions), 0);
  ck_assert_int_eq(fedc_client_engine_state(t.engine), FEDC_CLIENT_IDLE);

  tc_tensors(&t, 4, FEDC__STREAM_KIND__GLOBAL_MODEL, model);
  ck_assert_int_eq(t.actions.items[t.actions.count - 1].kind,
                   FEDC_CLIENT_ACTION_CLOSE);
  ck_assert_msg(strstr(t.actions.items[t.actions.count - 1].close.reason,
                       "stream in state idle") != NULL, "reason \"%s\"",
                t.actions.items[t.actions.count - 1].close.reason);
  tc_stop(&t);
  fedc_snapshot_unref(&model);
}
END_TEST

static Suite *in_memory_suite(void)
{
  Suite *s = suite_create("in_memory_streams");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, server_aggregates_update);
  tcase_add_loop_test(tc, server_rejects_bad_stream, 0,
                      sizeof(bad_streams) / sizeof(bad_streams[0]));
  tcase_add_test(tc, server_stream_before_hello);
  tcase_add_test(tc, server_discards_late_stream);
  tcase_add_test(tc, server_async_scales_copy);
  tcase_add_test(tc, client_keeps_model_by_reference);
  tcase_add_loop_test(tc, client_rejects_bad_stream, 0, 4);
  tcase_add_test(tc, client_stream_while_idle);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(in_memory_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
