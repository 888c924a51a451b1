/* The server round engine, driven by scripted events. Every expected model
 * below was computed by hand: FedAvg adds the mean of the updates weighted
 * by num_examples to the global model, and the values are chosen so that
 * every step is exact in float. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_testutil.h"
#include "util/error.h"
#include "wire/chunker.h"
#include "wire/message.h"

/* The global model before round 1 and three updates with weights 1, 2, 5
 * (sum 8). Their weighted mean is (2, 7, 3, 0, 0.875, -0.125). */
static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };
static const float U1[TEST_PARAMS] = { 8, 16, 0, -8, 1, 2 };
static const float U2[TEST_PARAMS] = { 4, 0, 2, 4, 0.5f, 1 };
static const float U3[TEST_PARAMS] = { 0, 8, 4, 0, 1, -1 };

/* G0 plus the mean once (after round 1) and twice (after round 2). */
static const float G1[TEST_PARAMS] = { 3, 9, 6, 4, 1.375f, 0.125f };
static const float G2[TEST_PARAMS] = { 5, 16, 9, 4, 2.25f, 0 };

/* Sends the three honest updates from peers 1, 2 and 3. */
static void report_honest(test_server *s, uint64_t round)
{
  ts_result(s, 1, round, U1, 1);
  ts_result(s, 2, round, U2, 2);
  ts_result(s, 3, round, U3, 5);
}

static const fedc_server_action *timer_action(const test_server *s)
{
  return ts_find(s, FEDC_SERVER_ACTION_START_TIMER, UINT64_MAX);
}

/* Asserts that the actions start round with the given sampled peers: a
 * FitTask and a model stream for each, then the deadline timer. */
static void assert_round_started(const test_server *s, size_t first,
                                 uint64_t round, size_t sampled)
{
  const fedc_server_action *a = s->actions.items + first;

  ck_assert_uint_eq(s->actions.count, first + 2 * sampled + 1);
  for (size_t k = 0; k < sampled; k++, a += 2) {
    const Fedc__Envelope *env = fedc_message_envelope(a[0].send.message);

    ck_assert_int_eq(a[0].kind, FEDC_SERVER_ACTION_SEND);
    ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_FIT_TASK);
    ck_assert_uint_eq(env->fit_task->round, round);
    ck_assert_int_eq(a[1].kind, FEDC_SERVER_ACTION_SEND_STREAM);
    ck_assert_uint_eq(a[1].stream.peer, a[0].send.peer);
    ck_assert_uint_eq(fedc_chunker_round(a[1].stream.stream), round);
  }
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_START_TIMER);
  ck_assert_uint_eq(a->timer.delay_ms, 1000);
  ck_assert_int_eq(fedc_server_engine_phase(s->engine),
                   FEDC_SERVER_TRAINING);
  ck_assert_uint_eq(fedc_server_engine_round(s->engine), round);
}

/* Checks the FitTask to one peer and that its stream carries model. */
static void assert_task(const test_server *s, uint64_t peer, uint64_t round,
                        const float model[TEST_PARAMS])
{
  const fedc_server_action *stream = ts_find(s, FEDC_SERVER_ACTION_SEND_STREAM,
                                             peer);
  const fedc_server_action *send = stream - 1;
  const Fedc__FitTask *task;
  fedc_tensor_list got;
  float values[TEST_PARAMS];

  ck_assert_ptr_nonnull(stream);
  ck_assert_int_eq(ts_body(send), FEDC__ENVELOPE__BODY_FIT_TASK);
  ck_assert_uint_eq(send->send.peer, peer);
  task = fedc_message_envelope(send->send.message)->fit_task;
  ck_assert_uint_eq(task->round, round);
  ck_assert_str_eq(task->config->model_spec, "test:2:2");
  ck_assert_uint_eq(task->config->seed, round);   /* train.seed 0 + round */
  ck_assert_uint_eq(task->config->local_epochs, 1);
  ck_assert_uint_eq(task->n_model, 2);
  ck_assert_str_eq(task->model[0]->name, "w");

  fedc_tensor_list_init(&got);
  test_drain(stream->stream.stream, task->model, task->n_model, &got);
  test_values(&got, values);
  ck_assert_mem_eq(values, model, sizeof(values));
  fedc_tensor_list_close(&got);
}

static void assert_metrics(const fedc_round_metrics *m, uint64_t round,
                           uint32_t sampled, uint32_t reported, uint32_t lost)
{
  ck_assert_uint_eq(m->round, round);
  ck_assert_uint_eq(m->clients_sampled, sampled);
  ck_assert_uint_eq(m->clients_reported, reported);
  ck_assert_uint_eq(m->clients_lost, lost);
}

START_TEST(full_round_three_clients)
{
  fedc_server_engine_config c;
  const fedc_server_action *a;
  const fedc_round_metrics *m;
  test_server s;
  float values[TEST_PARAMS];

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  ck_assert_uint_eq(s.actions.count, 0);
  ts_hello(&s, 1, "c1");
  ck_assert_uint_eq(s.actions.count, 1);
  ts_hello(&s, 2, "c2");
  ck_assert_uint_eq(s.actions.count, 1);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_WAITING);

  /* The third client starts round 1: Welcome, then every client sampled. */
  ts_hello(&s, 3, "c3");
  ck_assert_int_eq(ts_body(&s.actions.items[0]), FEDC__ENVELOPE__BODY_WELCOME);
  assert_round_started(&s, 1, 1, 3);
  for (uint64_t p = 1; p <= 3; p++)
    assert_task(&s, p, 1, G0);
  a = timer_action(&s);
  uint64_t timer = a->timer.id;

  /* Two results close nothing; the third closes the round. */
  s.now += 2500;
  ts_result(&s, 1, 1, U1, 1);
  ck_assert_uint_eq(s.actions.count, 0);
  ts_result(&s, 2, 1, U2, 2);
  ck_assert_uint_eq(s.actions.count, 0);
  ts_result(&s, 3, 1, U3, 5);
  ck_assert_uint_eq(s.actions.count, 2);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CANCEL_TIMER);
  ck_assert_uint_eq(s.actions.items[0].timer.id, timer);
  a = &s.actions.items[1];
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_EVALUATE);
  ck_assert_uint_eq(a->evaluate.round, 1);
  test_values(fedc_snapshot_tensors(a->evaluate.model), values);
  ck_assert_mem_eq(values, G1, sizeof(values));
  ts_assert_model(&s, G1);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine),
                   FEDC_SERVER_EVALUATING);

  /* Evaluation finishes round 1 and starts round 2 from G1. */
  ts_evaluated(&s, 1, 0.7, 0.8);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CHECKPOINT);
  ck_assert_uint_eq(s.actions.items[0].checkpoint.round, 1);
  test_values(fedc_snapshot_tensors(s.actions.items[0].checkpoint.model),
              values);
  ck_assert_mem_eq(values, G1, sizeof(values));
  ck_assert_uint_eq(s.actions.items[0].checkpoint.state.count, 0);
  ck_assert_int_eq(s.actions.items[1].kind, FEDC_SERVER_ACTION_ROUND_FINISHED);
  m = &s.actions.items[1].round_finished;
  assert_metrics(m, 1, 3, 3, 0);
  ck_assert(m->aggregated);
  ck_assert_str_eq(m->reason, "");
  ck_assert(m->evaluated);
  ck_assert_double_eq(m->test_loss, 0.7);
  ck_assert_double_eq(m->test_accuracy, 0.8);
  ck_assert(m->has_train_metrics);
  ck_assert_double_eq(m->train_loss, 0.5);
  ck_assert_double_eq(m->train_accuracy, 0.75);
  ck_assert_double_eq(m->seconds, 2.5);
  ck_assert_uint_eq(m->bytes_sent, 3 * 24);
  ck_assert_uint_eq(m->bytes_received, 3 * 24);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->bytes_sent, 6 * 24);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->bytes_received,
                    3 * 24);
  assert_round_started(&s, 2, 2, 3);
  for (uint64_t p = 1; p <= 3; p++)
    assert_task(&s, p, 2, G1);

  /* Round 2 is the last: after it every client gets a Goodbye, through
   * one CLOSE_ALL rather than a SEND and a CLOSE each. */
  report_honest(&s, 2);
  ts_assert_model(&s, G2);
  ts_evaluated(&s, 2, 0.6, 0.9);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CHECKPOINT);
  ck_assert_int_eq(s.actions.items[1].kind, FEDC_SERVER_ACTION_ROUND_FINISHED);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_SEND), 0);
  ts_assert_closed_all(&s, "all rounds finished");
  ck_assert_int_eq(s.actions.items[s.actions.count - 1].kind,
                   FEDC_SERVER_ACTION_DONE);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_DONE);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->rounds_aggregated, 2);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->results_accepted, 6);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->peers, 0);

  /* The engine no longer has the peers that the CLOSE_ALL closed. */
  ts_lost(&s, 2);
  ck_assert_uint_eq(s.actions.count, 0);

  /* A client that connects now is turned away. */
  ts_connect(&s, 7, NULL);
  ck_assert_int_eq(ts_body(ts_find(&s, FEDC_SERVER_ACTION_SEND, 7)),
                   FEDC__ENVELOPE__BODY_GOODBYE);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_CLOSE, 7));
  test_server_stop(&s);
}
END_TEST

/* Round 1 with clients 1..4 all sampled and a quorum of 3. */
static void start_four(test_server *s)
{
  fedc_server_engine_config c;

  test_server_config(&c, 4);
  c.quorum_count = 3;
  test_server_start(s, &c, G0, 0);
  ts_hello_all(s, 4);
  assert_round_started(s, 1, 1, 4);
}

/* Sends a FitResult from peer announcing snap's tensors. */
static void send_fit_result(test_server *s, uint64_t peer, uint64_t round,
                            fedc_snapshot *snap, uint64_t examples)
{
  fedc_message *m = NULL;

  ck_assert_int_eq(fedc_message_fit_result(round, examples, NULL, 0, snap,
                                           &m), 0);
  ts_receive(s, peer, fedc_message_envelope(m));
  fedc_message_free(&m);
}

/* A snapshot like the test model with "w" of shape [w_rows, w_cols] and
 * "b" renamed or resized. */
static fedc_snapshot *other_layout(uint64_t w_rows, uint64_t w_cols,
                                   const char *b_name, uint64_t b_len)
{
  const float zeros[8] = { 0 };
  const uint64_t w_shape[2] = { w_rows, w_cols };
  fedc_tensor_list list;
  fedc_snapshot *snap = NULL;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "w", FEDC_DTYPE_F32, 2,
                                        w_shape, zeros), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, b_name, FEDC_DTYPE_F32, 1,
                                        &b_len, zeros), 0);
  ck_assert_int_eq(fedc_snapshot_new(&list, &snap), 0);
  return snap;
}

static void offend_stale(test_server *s)
{
  fedc_snapshot *snap = test_snapshot(U1);

  send_fit_result(s, 4, 7, snap, 1);
  fedc_snapshot_unref(&snap);
}

static void offend_shape(test_server *s)
{
  fedc_snapshot *snap = other_layout(1, 4, "b", 2);

  send_fit_result(s, 4, 1, snap, 1);
  fedc_snapshot_unref(&snap);
}

static void offend_too_big(test_server *s)
{
  fedc_snapshot *snap = other_layout(2, 2, "b", 3);

  send_fit_result(s, 4, 1, snap, 1);
  fedc_snapshot_unref(&snap);
}

static void offend_name(test_server *s)
{
  fedc_snapshot *snap = other_layout(2, 2, "bias", 2);

  send_fit_result(s, 4, 1, snap, 1);
  fedc_snapshot_unref(&snap);
}

/* A FitResult for the test model whose spec of "w" is changed to dtype,
 * or to shape when shape is not NULL. Only the specs are sent. */
static void send_changed_spec(test_server *s, Fedc__DType dtype,
                              uint64_t *shape, size_t ndim)
{
  fedc_snapshot *snap = test_snapshot(U1);
  fedc_message *m = NULL;
  Fedc__Envelope env;
  Fedc__FitResult result;
  Fedc__TensorSpec w;
  Fedc__TensorSpec *specs[2];

  ck_assert_int_eq(fedc_message_fit_result(1, 1, NULL, 0, snap, &m), 0);
  env = *fedc_message_envelope(m);
  result = *env.fit_result;
  ck_assert_uint_eq(result.n_update, 2);
  w = *result.update[0];
  w.dtype = dtype;
  if (shape) {
    w.shape = shape;
    w.n_shape = ndim;
  }
  specs[0] = &w;
  specs[1] = result.update[1];
  result.update = specs;
  env.fit_result = &result;
  ts_receive(s, 4, &env);
  fedc_message_free(&m);
  fedc_snapshot_unref(&snap);
}

static void offend_dtype(test_server *s)
{
  send_changed_spec(s, FEDC__DTYPE__F64, NULL, 0);
}

/* 2^60 elements, far past any size limit: the reason still names the
 * shape rather than the size. */
static void offend_huge_shape(test_server *s)
{
  uint64_t shape[2] = { UINT64_C(1) << 40, UINT64_C(1) << 20 };

  send_changed_spec(s, FEDC__DTYPE__F32, shape, 2);
}

/* A valid FitResult, then chunks of which the third contains a NaN. */
static void offend_nan(test_server *s)
{
  const float bad[TEST_PARAMS] = { 1, 2, 3, 4, NAN, 6 };

  ts_result(s, 4, 1, bad, 1);
}

/* A valid FitResult, then a first chunk that skips two elements. */
static void offend_order(test_server *s)
{
  fedc_snapshot *snap = test_snapshot(U1);
  fedc_chunker *chunks = NULL;
  Fedc__Envelope env;
  Fedc__TensorChunk chunk;

  send_fit_result(s, 4, 1, snap, 1);
  ck_assert_int_eq(fedc_chunker_new(snap, 1, FEDC__STREAM_KIND__UPDATE, 8,
                                    &chunks), 0);
  env = *fedc_chunker_next(chunks);
  chunk = *env.chunk;
  chunk.offset = 2;
  env.chunk = &chunk;
  ts_receive(s, 4, &env);
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&snap);
}

/* The first chunk of an update with no FitResult before it. */
static void offend_chunk_first(test_server *s)
{
  fedc_snapshot *snap = test_snapshot(U1);
  fedc_chunker *chunks = NULL;

  ck_assert_int_eq(fedc_chunker_new(snap, 1, FEDC__STREAM_KIND__UPDATE, 8,
                                    &chunks), 0);
  ts_receive(s, 4, fedc_chunker_next(chunks));
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&snap);
}

static void offend_zero_examples(test_server *s)
{
  fedc_snapshot *snap = test_snapshot(U1);

  send_fit_result(s, 4, 1, snap, 0);
  fedc_snapshot_unref(&snap);
}

static void offend_wrong_message(test_server *s)
{
  fedc_message *m = NULL;

  ck_assert_int_eq(fedc_message_welcome("me", 1, 0, 0, &m), 0);
  ts_receive(s, 4, fedc_message_envelope(m));
  fedc_message_free(&m);
}

static void offend_envelope_version(test_server *s)
{
  fedc_message *m = NULL;
  Fedc__Envelope env;

  ck_assert_int_eq(fedc_message_goodbye("bye", &m), 0);
  env = *fedc_message_envelope(m);
  env.protocol_version = 2;
  ts_receive(s, 4, &env);
  fedc_message_free(&m);
}

static void offend_second_hello(test_server *s)
{
  fedc_hello_info info = { .client_id = "c4", .num_examples = 1 };
  fedc_message *m = NULL;

  ck_assert_int_eq(fedc_message_hello(&info, &m), 0);
  ts_receive(s, 4, fedc_message_envelope(m));
  fedc_message_free(&m);
}

typedef struct offense {
  void (*send)(test_server *s);
  enum fedc_server_reject reject;
  Fedc__ErrorCode code;
  const char *reason;
} offense;

static const offense offenses[] = {
  { offend_stale, FEDC_REJECT_STALE, FEDC__ERROR_CODE__STALE_ROUND,
    "round 7, which is not open" },
  { offend_shape, FEDC_REJECT_SHAPE, FEDC__ERROR_CODE__BAD_UPDATE,
    "update tensor w has shape [1, 4], expected [2, 2]" },
  { offend_name, FEDC_REJECT_SHAPE, FEDC__ERROR_CODE__BAD_UPDATE,
    "update tensor 1 is named \"bias\", expected b" },
  { offend_too_big, FEDC_REJECT_SHAPE, FEDC__ERROR_CODE__BAD_UPDATE,
    "update tensor b has shape [3], expected [2]" },
  { offend_dtype, FEDC_REJECT_SHAPE, FEDC__ERROR_CODE__BAD_UPDATE,
    "update tensor w has dtype F64, expected F32" },
  { offend_huge_shape, FEDC_REJECT_SHAPE, FEDC__ERROR_CODE__BAD_UPDATE,
    "update tensor w has shape [1099511627776, 1048576], expected [2, 2]" },
  { offend_nan, FEDC_REJECT_NONFINITE, FEDC__ERROR_CODE__BAD_UPDATE,
    "NaN or Inf in tensor b" },
  { offend_order, FEDC_REJECT_CHUNK, FEDC__ERROR_CODE__BAD_MESSAGE,
    "expected offset 0" },
  { offend_chunk_first, FEDC_REJECT_CHUNK, FEDC__ERROR_CODE__BAD_MESSAGE,
    "chunk without a FitResult" },
  { offend_zero_examples, FEDC_REJECT_MESSAGE, FEDC__ERROR_CODE__BAD_UPDATE,
    "num_examples 0" },
  { offend_wrong_message, FEDC_REJECT_MESSAGE, FEDC__ERROR_CODE__BAD_MESSAGE,
    "unexpected message" },
  { offend_envelope_version, FEDC_REJECT_VERSION,
    FEDC__ERROR_CODE__BAD_VERSION, "protocol version 2" },
  { offend_second_hello, FEDC_REJECT_MESSAGE, FEDC__ERROR_CODE__BAD_MESSAGE,
    "second Hello" },
};

/* Client 4 offends in round 1: it alone is closed with the reason and
 * counted, and the round aggregates the three honest clients exactly. */
START_TEST(offender_dropped_round_goes_on)
{
  const offense *o = &offenses[_i];
  const fedc_server_stats *st;
  test_server s;

  start_four(&s);
  o->send(&s);
  ts_assert_rejected(&s, 4, o->reject, o->code, o->reason);
  ck_assert_uint_eq(s.actions.count, 2);
  st = fedc_server_engine_stats(s.engine);
  ck_assert_uint_eq(st->rejected[o->reject], 1);
  ck_assert_uint_eq(st->peers, 3);
  ck_assert_uint_eq(st->clients, 3);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_TRAINING);

  report_honest(&s, 1);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));
  ts_assert_model(&s, G1);
  ts_evaluated(&s, 1, 1.0, 0.5);
  assert_metrics(&s.actions.items[1].round_finished, 1, 4, 3, 1);
  ck_assert(s.actions.items[1].round_finished.aggregated);
  ck_assert_uint_eq(st->results_accepted, 3);
  test_server_stop(&s);
}
END_TEST

static void send_hello(test_server *s, uint64_t peer, const char *client_id,
                       uint32_t version)
{
  fedc_hello_info info = { .client_id = client_id, .num_examples = 1 };
  fedc_message *m = NULL;
  Fedc__Envelope env;
  Fedc__Hello hello;

  ck_assert_int_eq(fedc_message_hello(&info, &m), 0);
  env = *fedc_message_envelope(m);
  hello = *env.hello;
  hello.protocol_version = version;
  env.hello = &hello;
  ts_receive(s, peer, &env);
  fedc_message_free(&m);
}

START_TEST(hello_checks)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  st = fedc_server_engine_stats(s.engine);

  ts_connect(&s, 10, NULL);
  send_hello(&s, 10, "old", 2);
  ts_assert_rejected(&s, 10, FEDC_REJECT_VERSION,
                     FEDC__ERROR_CODE__BAD_VERSION, "protocol version 2");
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_VERSION], 1);

  ts_connect(&s, 11, "alice");
  send_hello(&s, 11, "mallory", FEDC_PROTOCOL_VERSION);
  ts_assert_rejected(&s, 11, FEDC_REJECT_MESSAGE,
                     FEDC__ERROR_CODE__BAD_MESSAGE,
                     "does not match the certificate identity alice");

  ts_connect(&s, 12, NULL);
  send_hello(&s, 12, "has space", FEDC_PROTOCOL_VERSION);
  ts_assert_rejected(&s, 12, FEDC_REJECT_MESSAGE,
                     FEDC__ERROR_CODE__BAD_MESSAGE, "invalid client id");

  /* Anything but a Hello first. */
  ts_connect(&s, 13, NULL);
  offend_zero_examples(&s);   /* addressed to peer 4, never connected */
  ck_assert_uint_eq(s.actions.count, 0);
  {
    fedc_snapshot *snap = test_snapshot(U1);

    send_fit_result(&s, 13, 1, snap, 1);
    fedc_snapshot_unref(&snap);
  }
  ts_assert_rejected(&s, 13, FEDC_REJECT_MESSAGE,
                     FEDC__ERROR_CODE__BAD_MESSAGE, "message before Hello");
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_MESSAGE], 3);

  /* A client without training data could be sampled but never report. */
  ts_connect(&s, 15, NULL);
  {
    fedc_hello_info info = { .client_id = "empty", .num_examples = 0 };
    fedc_message *m = NULL;

    ck_assert_int_eq(fedc_message_hello(&info, &m), 0);
    ts_receive(&s, 15, fedc_message_envelope(m));
    fedc_message_free(&m);
  }
  ts_assert_rejected(&s, 15, FEDC_REJECT_MESSAGE,
                     FEDC__ERROR_CODE__BAD_MESSAGE, "Hello with num_examples "
                     "0: a client without training data cannot train");
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_MESSAGE], 4);
  ck_assert_uint_eq(st->clients, 0);

  /* A matching certificate identity is accepted. */
  ts_connect(&s, 14, "alice");
  send_hello(&s, 14, "alice", FEDC_PROTOCOL_VERSION);
  ck_assert_int_eq(ts_body(ts_find(&s, FEDC_SERVER_ACTION_SEND, 14)),
                   FEDC__ENVELOPE__BODY_WELCOME);
  ck_assert_uint_eq(st->peers, 1);
  ck_assert_uint_eq(st->clients, 1);

  /* A reused connection id is a driver error. */
  ck_assert_int_eq(fedc_server_engine_connected(s.engine, s.now, 14, NULL,
                                                &s.actions), FEDC_EINVAL);
  test_server_stop(&s);
}
END_TEST

/* The same client connects twice: the older connection is closed and the
 * newer one takes part in the round. */
START_TEST(duplicate_client_replaces_older)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  st = fedc_server_engine_stats(s.engine);
  ts_hello(&s, 1, "c1");
  ts_hello(&s, 2, "c2");
  ts_hello(&s, 5, "c2");
  ts_assert_rejected(&s, 2, FEDC_REJECT_DUPLICATE_CLIENT,
                     FEDC__ERROR_CODE__DUPLICATE, "client c2 connected again");
  ck_assert_int_eq(ts_body(ts_find(&s, FEDC_SERVER_ACTION_SEND, 5)),
                   FEDC__ENVELOPE__BODY_WELCOME);
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_DUPLICATE_CLIENT], 1);
  ck_assert_uint_eq(st->clients, 2);

  /* Peer 2 is gone; a late message from it is ignored. */
  offend_wrong_message(&s);
  ts_hello(&s, 3, "c3");
  assert_round_started(&s, 1, 1, 3);
  ck_assert_ptr_null(ts_find(&s, FEDC_SERVER_ACTION_SEND, 2));
  ts_result(&s, 1, 1, U1, 1);
  ts_result(&s, 5, 1, U2, 2);
  ts_result(&s, 3, 1, U3, 5);
  ts_assert_model(&s, G1);
  test_server_stop(&s);
}
END_TEST

/* Three of four clients are sampled; the fourth sends a result anyway. */
START_TEST(result_from_unsampled_client)
{
  fedc_server_engine_config c;
  uint64_t outsider = 0, sampled[3];
  fedc_snapshot *snap = test_snapshot(U1);
  size_t n = 0;
  test_server s;

  test_server_config(&c, 4);
  c.clients_per_round = 3;
  c.quorum_count = 3;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 4);
  assert_round_started(&s, 1, 1, 3);
  for (uint64_t p = 1; p <= 4; p++) {
    if (ts_find(&s, FEDC_SERVER_ACTION_SEND_STREAM, p))
      sampled[n++] = p;
    else
      outsider = p;
  }
  ck_assert_uint_eq(n, 3);

  send_fit_result(&s, outsider, 1, snap, 1);
  fedc_snapshot_unref(&snap);
  ts_assert_rejected(&s, outsider, FEDC_REJECT_NOT_SAMPLED,
                     FEDC__ERROR_CODE__NOT_SAMPLED, "not sampled");
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->
                    rejected[FEDC_REJECT_NOT_SAMPLED], 1);

  ts_result(&s, sampled[0], 1, U1, 1);
  ts_result(&s, sampled[1], 1, U2, 2);
  ts_result(&s, sampled[2], 1, U3, 5);
  ts_assert_model(&s, G1);
  test_server_stop(&s);
}
END_TEST

/* A client reports twice: its first result counts, the second gets it
 * closed. */
START_TEST(second_result_rejected)
{
  fedc_server_engine_config c;
  fedc_snapshot *snap = test_snapshot(U1);
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 3);
  ts_result(&s, 1, 1, U1, 1);
  send_fit_result(&s, 1, 1, snap, 1);
  fedc_snapshot_unref(&snap);
  ts_assert_rejected(&s, 1, FEDC_REJECT_DUPLICATE_RESULT,
                     FEDC__ERROR_CODE__DUPLICATE, "second result");
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->
                    rejected[FEDC_REJECT_DUPLICATE_RESULT], 1);

  /* Client 1 has reported, so its leaving does not count as lost. */
  ts_result(&s, 2, 1, U2, 2);
  ts_result(&s, 3, 1, U3, 5);
  ts_assert_model(&s, G1);
  ts_evaluated(&s, 1, 1.0, 0.5);
  assert_metrics(&s.actions.items[1].round_finished, 1, 3, 3, 0);
  test_server_stop(&s);
}
END_TEST

/* A sampled client is lost mid-upload; the round closes when the others
 * have reported. */
START_TEST(client_lost_mid_round)
{
  const fedc_server_stats *st;
  fedc_snapshot *snap = test_snapshot(U1);
  test_server s;

  start_four(&s);
  st = fedc_server_engine_stats(s.engine);
  send_fit_result(&s, 4, 1, snap, 1);
  fedc_snapshot_unref(&snap);
  ts_lost(&s, 4);
  ck_assert_uint_eq(s.actions.count, 0);
  ck_assert_uint_eq(st->peers, 3);
  ck_assert_uint_eq(st->clients_lost, 1);

  /* Losing it twice, or a peer never seen, changes nothing. */
  ts_lost(&s, 4);
  ts_lost(&s, 99);
  ck_assert_uint_eq(s.actions.count, 0);

  report_honest(&s, 1);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CANCEL_TIMER);
  ts_assert_model(&s, G1);
  ts_evaluated(&s, 1, 1.0, 0.5);
  assert_metrics(&s.actions.items[1].round_finished, 1, 4, 3, 1);
  test_server_stop(&s);
}
END_TEST

/* Asserts that the action at index is a Cancel of round sent to peer. */
static void assert_cancel(const test_server *s, size_t index, uint64_t peer,
                          uint64_t round)
{
  const fedc_server_action *a = &s->actions.items[index];
  const Fedc__Envelope *env;

  ck_assert_uint_lt(index, s->actions.count);
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_SEND);
  ck_assert_uint_eq(a->send.peer, peer);
  env = fedc_message_envelope(a->send.message);
  ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_CANCEL);
  ck_assert_uint_eq(env->cancel->round, round);
}

/* Two of four sampled clients are lost before reporting and the quorum of
 * 3 can no longer be reached: the round is abandoned at once instead of
 * waiting for the deadline, the straggler is cancelled, and the next round
 * starts when enough clients are idle. */
START_TEST(lost_clients_abandon_round)
{
  const fedc_round_metrics *m;
  test_server s;

  start_four(&s);
  ts_result(&s, 1, 1, U1, 1);
  ts_lost(&s, 2);
  ck_assert_uint_eq(s.actions.count, 0);
  ts_lost(&s, 3);
  ck_assert_uint_eq(s.actions.count, 3);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CANCEL_TIMER);
  assert_cancel(&s, 1, 4, 1);
  /* An abandoned round writes no checkpoint. */
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
  ck_assert_int_eq(s.actions.items[2].kind,
                   FEDC_SERVER_ACTION_ROUND_FINISHED);
  m = &s.actions.items[2].round_finished;
  ck_assert(!m->aggregated);
  ck_assert(!m->evaluated);
  ck_assert_ptr_nonnull(strstr(m->reason, "quorum can no longer be reached"));
  assert_metrics(m, 1, 4, 1, 2);
  ck_assert_uint_eq(m->clients_cancelled, 1);
  ts_assert_model(&s, G0);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_WAITING);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->rounds_abandoned, 1);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->tasks_cancelled, 1);

  /* Clients 1 and 4 are idle; round 2 needs two more. */
  ts_hello(&s, 5, "c5");
  ck_assert_uint_eq(s.actions.count, 1);
  ts_hello(&s, 6, "c6");
  assert_round_started(&s, 1, 2, 4);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_SEND, 4));
  test_server_stop(&s);
}
END_TEST

/* At the deadline three of four have reported, enough to aggregate; the
 * straggler is cancelled, and its result that crossed the Cancel is
 * discarded and counted as late without closing the client. */
START_TEST(deadline_with_quorum_aggregates)
{
  const fedc_server_action *timer;
  const fedc_server_stats *st;
  fedc_snapshot *snap;
  uint64_t id;
  test_server s;

  start_four(&s);
  st = fedc_server_engine_stats(s.engine);
  timer = timer_action(&s);
  id = timer->timer.id;
  report_honest(&s, 1);
  ck_assert_uint_eq(s.actions.count, 0);

  /* A stale timer id is ignored. */
  ts_timer(&s, id + 100);
  ck_assert_uint_eq(s.actions.count, 0);
  s.now += 1000;
  ts_timer(&s, id);
  ck_assert_uint_eq(s.actions.count, 2);
  assert_cancel(&s, 0, 4, 1);
  ck_assert_int_eq(s.actions.items[1].kind, FEDC_SERVER_ACTION_EVALUATE);
  ts_assert_model(&s, G1);
  ts_evaluated(&s, 1, 1.0, 0.5);
  assert_metrics(&s.actions.items[1].round_finished, 1, 4, 3, 0);
  ck_assert_uint_eq(s.actions.items[1].round_finished.clients_cancelled, 1);
  ck_assert_double_eq(s.actions.items[1].round_finished.seconds, 1.0);

  /* Client 4 is idle again, so round 2 starts with all four. */
  assert_round_started(&s, 2, 2, 4);

  /* Its round 1 result arrives late: discarded, counted, not closed. */
  ts_result(&s, 4, 1, U1, 1);
  ck_assert_uint_eq(s.actions.count, 0);
  ck_assert_uint_eq(st->results_late, 1);
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_STALE], 0);
  ck_assert_uint_eq(st->results_accepted, 3);

  /* A second result for round 1 is no longer late: it is stale. */
  snap = test_snapshot(U1);
  send_fit_result(&s, 4, 1, snap, 1);
  fedc_snapshot_unref(&snap);
  ts_assert_rejected(&s, 4, FEDC_REJECT_STALE, FEDC__ERROR_CODE__STALE_ROUND,
                     "round 1, which is not open");
  test_server_stop(&s);
}
END_TEST

/* At the deadline only two of four have reported, so the round is
 * abandoned and the model is unchanged. An upload cut by the deadline is
 * dropped and the rest of its chunks are discarded. */
START_TEST(deadline_without_quorum_abandons)
{
  const fedc_server_action *a;
  const fedc_round_metrics *m;
  fedc_snapshot *snap = test_snapshot(U3);
  fedc_chunker *chunks = NULL;
  const Fedc__Envelope *chunk;
  uint64_t timer;
  test_server s;

  start_four(&s);
  timer = timer_action(&s)->timer.id;
  ts_result(&s, 1, 1, U1, 1);
  ts_result(&s, 2, 1, U2, 2);
  send_fit_result(&s, 3, 1, snap, 5);
  ck_assert_int_eq(fedc_chunker_new(snap, 1, FEDC__STREAM_KIND__UPDATE, 8,
                                    &chunks), 0);
  ts_receive(&s, 3, fedc_chunker_next(chunks));

  ts_timer(&s, timer);
  assert_cancel(&s, 0, 3, 1);
  assert_cancel(&s, 1, 4, 1);
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
  m = &s.actions.items[2].round_finished;
  ck_assert(!m->aggregated);
  ck_assert_ptr_nonnull(strstr(m->reason, "2 of 4 sampled clients reported, "
                               "quorum 3: deadline passed"));
  assert_metrics(m, 1, 4, 2, 0);
  ck_assert_uint_eq(m->clients_cancelled, 2);
  ts_assert_model(&s, G0);

  /* Every client is idle again, so round 2 starts at once. */
  assert_round_started(&s, 3, 2, 4);

  /* The rest of client 3's upload belongs to a cancelled task. */
  while ((chunk = fedc_chunker_next(chunks)) != NULL) {
    ts_receive(&s, 3, chunk);
    ck_assert_uint_eq(s.actions.count, 0);
  }
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->rejected[
                      FEDC_REJECT_STALE], 0);

  /* Client 3 then reports round 2 normally. */
  ts_result(&s, 3, 2, U3, 5);
  a = ts_find(&s, FEDC_SERVER_ACTION_CLOSE, 3);
  ck_assert_ptr_null(a);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->results_accepted, 3);
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&snap);
  test_server_stop(&s);
}
END_TEST

/* An engine built from a checkpoint of round 5 runs round 6 next. */
START_TEST(resume_starts_next_round)
{
  fedc_server_engine_config c;
  const Fedc__Envelope *welcome;
  test_server s;

  test_server_config(&c, 3);
  c.total_rounds = 7;
  test_server_start(&s, &c, G1, 5);
  ck_assert_uint_eq(fedc_server_engine_round(s.engine), 5);
  ts_hello(&s, 1, "c1");
  welcome = fedc_message_envelope(s.actions.items[0].send.message);
  ck_assert_uint_eq(welcome->welcome->round, 5);
  ck_assert_str_eq(welcome->welcome->server_id, "fedc-server");
  ck_assert_uint_eq(welcome->welcome->chunk_bytes, 12);
  ts_hello(&s, 2, "c2");
  ts_hello(&s, 3, "c3");
  assert_round_started(&s, 1, 6, 3);
  assert_task(&s, 2, 6, G1);
  report_honest(&s, 6);
  ts_evaluated(&s, 6, 1.0, 0.5);
  ck_assert_uint_eq(s.actions.items[0].checkpoint.round, 6);
  ts_assert_model(&s, G2);
  test_server_stop(&s);

  /* A checkpoint at the last round: nothing left to do. */
  test_server_start(&s, &c, G1, 7);
  ck_assert_uint_eq(s.actions.count, 1);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_DONE);
  ck_assert_int_eq(fedc_server_engine_phase(s.engine), FEDC_SERVER_DONE);
  test_server_stop(&s);
}
END_TEST

/* With close_at_quorum the round closes at three results of four, the
 * fourth is cancelled, and the evaluation only runs every second round. */
START_TEST(close_at_quorum_and_evaluate_every)
{
  fedc_server_engine_config c;
  test_server s;

  test_server_config(&c, 4);
  c.quorum_count = 3;
  c.close_at_quorum = true;
  c.evaluate_every = 2;
  c.total_rounds = 3;
  test_server_start(&s, &c, G0, 0);
  ts_hello_all(&s, 4);
  report_honest(&s, 1);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CANCEL_TIMER);
  assert_cancel(&s, 1, 4, 1);
  ck_assert_int_eq(s.actions.items[2].kind, FEDC_SERVER_ACTION_CHECKPOINT);
  ck_assert_int_eq(s.actions.items[3].kind, FEDC_SERVER_ACTION_ROUND_FINISHED);
  ck_assert(!s.actions.items[3].round_finished.evaluated);
  ts_assert_model(&s, G1);

  /* Client 4 was cancelled and is idle: round 2 starts with all four. */
  assert_round_started(&s, 4, 2, 4);
  report_honest(&s, 2);
  ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_EVALUATE, UINT64_MAX));
  ts_assert_model(&s, G2);
  test_server_stop(&s);
}
END_TEST

/* Shutdown during a round: no aggregation, Goodbye to all, DONE. */
START_TEST(shutdown_mid_round)
{
  test_server s;

  start_four(&s);
  ts_result(&s, 1, 1, U1, 1);
  fedc_server_actions_clear(&s.actions);
  ck_assert_int_eq(fedc_server_engine_shutdown(s.engine, s.now, NULL,
                                               &s.actions), 0);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_CANCEL_TIMER);
  ts_assert_closed_all(&s, "server shutting down");
  ck_assert_uint_eq(ts_count(&s, FEDC_SERVER_ACTION_CHECKPOINT), 0);
  ck_assert_int_eq(s.actions.items[s.actions.count - 1].kind,
                   FEDC_SERVER_ACTION_DONE);
  ck_assert_str_eq(s.actions.items[s.actions.count - 1].done.reason,
                   "server shutting down");
  ts_assert_model(&s, G0);
  test_server_stop(&s);
}
END_TEST

/* Ending the run takes the same two actions at any number of peers. */
START_TEST(shutdown_many_peers_one_action)
{
  fedc_server_engine_config c;
  char id[16];
  test_server s;

  test_server_config(&c, 100000);
  test_server_start(&s, &c, G0, 0);
  for (uint64_t p = 1; p <= 1000; p++) {
    snprintf(id, sizeof(id), "c%llu", (unsigned long long)p);
    ts_hello(&s, p, id);
  }
  fedc_server_actions_clear(&s.actions);
  ck_assert_int_eq(fedc_server_engine_shutdown(s.engine, s.now, NULL,
                                               &s.actions), 0);
  ck_assert_uint_eq(s.actions.count, 2);
  ts_assert_closed_all(&s, "server shutting down");
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->peers, 0);
  ck_assert_uint_eq(fedc_server_engine_stats(s.engine)->clients, 0);
  test_server_stop(&s);
}
END_TEST

/* Without a peer there is nothing to close: DONE alone. */
START_TEST(shutdown_without_peers)
{
  fedc_server_engine_config c;
  test_server s;

  test_server_config(&c, 3);
  test_server_start(&s, &c, G0, 0);
  fedc_server_actions_clear(&s.actions);
  ck_assert_int_eq(fedc_server_engine_shutdown(s.engine, s.now, "stop",
                                               &s.actions), 0);
  ck_assert_uint_eq(s.actions.count, 1);
  ck_assert_int_eq(s.actions.items[0].kind, FEDC_SERVER_ACTION_DONE);
  ck_assert_str_eq(s.actions.items[0].done.reason, "stop");
  test_server_stop(&s);
}
END_TEST

/* The peer table under many adds and removes stays consistent. */
START_TEST(many_peers_connect_and_leave)
{
  fedc_server_engine_config c;
  const fedc_server_stats *st;
  char id[16];
  test_server s;

  test_server_config(&c, 100000);
  test_server_start(&s, &c, G0, 0);
  st = fedc_server_engine_stats(s.engine);
  for (uint64_t p = 1; p <= 3000; p++) {
    snprintf(id, sizeof(id), "c%llu", (unsigned long long)p);
    ts_hello(&s, p * 7919, id);
  }
  for (uint64_t p = 1; p <= 3000; p += 2)
    ts_lost(&s, p * 7919);
  ck_assert_uint_eq(st->peers, 1500);
  ck_assert_uint_eq(st->clients, 1500);

  /* Every remaining client id is still found: a reconnect replaces it. */
  for (uint64_t p = 2; p <= 3000; p += 2) {
    snprintf(id, sizeof(id), "c%llu", (unsigned long long)p);
    ts_hello(&s, 1000000 + p, id);
    ck_assert_ptr_nonnull(ts_find(&s, FEDC_SERVER_ACTION_CLOSE, p * 7919));
  }
  ck_assert_uint_eq(st->rejected[FEDC_REJECT_DUPLICATE_CLIENT], 1500);
  ck_assert_uint_eq(st->peers, 1500);
  test_server_stop(&s);
}
END_TEST

static Suite *server_suite(void)
{
  Suite *s = suite_create("server_engine");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, full_round_three_clients);
  tcase_add_loop_test(tc, offender_dropped_round_goes_on, 0,
                      sizeof(offenses) / sizeof(offenses[0]));
  tcase_add_test(tc, hello_checks);
  tcase_add_test(tc, duplicate_client_replaces_older);
  tcase_add_test(tc, result_from_unsampled_client);
  tcase_add_test(tc, second_result_rejected);
  tcase_add_test(tc, client_lost_mid_round);
  tcase_add_test(tc, lost_clients_abandon_round);
  tcase_add_test(tc, deadline_with_quorum_aggregates);
  tcase_add_test(tc, deadline_without_quorum_abandons);
  tcase_add_test(tc, resume_starts_next_round);
  tcase_add_test(tc, close_at_quorum_and_evaluate_every);
  tcase_add_test(tc, shutdown_mid_round);
  tcase_add_test(tc, shutdown_many_peers_one_action);
  tcase_add_test(tc, shutdown_without_peers);
  tcase_add_test(tc, many_peers_connect_and_leave);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(server_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
