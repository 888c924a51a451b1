/* The client session engine, driven by scripted server messages. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/engine.h"
#include "engine_testutil.h"
#include "util/error.h"
#include "wire/chunker.h"
#include "wire/message.h"

static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };

/* Weights after local training and the update they make: W - G0. */
static const float W[TEST_PARAMS] = { 1.5f, 1, 5, 4, 0.75f, 0.125f };
static const float D[TEST_PARAMS] = { 0.5f, -1, 2, 0, 0.25f, -0.125f };

typedef struct test_client {
  fedc_client_engine *engine;
  fedc_client_actions actions;   /* of the last event */
} test_client;

static void tc_start(test_client *t)
{
  fedc_client_config c;

  fedc_client_config_default(&c);
  c.hello.client_id = "c1";
  c.hello.num_examples = 10;
  c.hello.trainer = "builtin";
  memset(t, 0, sizeof(*t));
  fedc_client_actions_init(&t->actions);
  ck_assert_int_eq(fedc_client_engine_new(&c, &t->engine), 0);
}

static void tc_stop(test_client *t)
{
  fedc_client_actions_close(&t->actions);
  fedc_client_engine_free(&t->engine);
}

static void tc_receive(test_client *t, const Fedc__Envelope *m)
{
  fedc_client_actions_clear(&t->actions);
  ck_assert_int_eq(fedc_client_engine_received(t->engine, 0, m, &t->actions),
                   0);
}

static void tc_send(test_client *t, fedc_message *m)
{
  tc_receive(t, fedc_message_envelope(m));
  fedc_message_free(&m);
}

static enum fedc_client_state tc_state(const test_client *t)
{
  return fedc_client_engine_state(t->engine);
}

static Fedc__Envelope__BodyCase tc_body(const fedc_client_action *a)
{
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_SEND);
  return fedc_message_envelope(a->send.message)->body_case;
}

/* Connects, then replies to the Hello with a Welcome for round 3. */
static void tc_connect(test_client *t)
{
  const Fedc__Envelope *hello;
  fedc_message *welcome = NULL;

  fedc_client_actions_clear(&t->actions);
  ck_assert_int_eq(fedc_client_engine_connected(t->engine, 0, &t->actions),
                   0);
  ck_assert_uint_eq(t->actions.count, 1);
  hello = fedc_message_envelope(t->actions.items[0].send.message);
  ck_assert_int_eq(hello->body_case, FEDC__ENVELOPE__BODY_HELLO);
  ck_assert_str_eq(hello->hello->client_id, "c1");
  ck_assert_uint_eq(hello->hello->num_examples, 10);
  ck_assert_uint_eq(hello->hello->protocol_version, FEDC_PROTOCOL_VERSION);
  ck_assert_int_eq(tc_state(t), FEDC_CLIENT_HELLO_SENT);

  ck_assert_int_eq(fedc_message_welcome("srv", 3, 1 << 20, 8, &welcome), 0);
  tc_send(t, welcome);
  ck_assert_uint_eq(t->actions.count, 0);
  ck_assert_int_eq(tc_state(t), FEDC_CLIENT_IDLE);
  ck_assert_uint_eq(fedc_client_engine_server_round(t->engine), 3);
}

/* Sends a FitTask for round with model G0, then chunks up to but not
 * including the last when stop_before_last, or all of them. */
static void tc_task(test_client *t, uint64_t round, bool stop_before_last)
{
  fedc_train_config train = { .local_epochs = 2, .batch_size = 4,
                              .learning_rate = 0.5f, .seed = 77 };
  fedc_snapshot *model = test_snapshot(G0);
  fedc_chunker *chunks = NULL;
  fedc_message *task = NULL;
  const Fedc__Envelope *env;

  ck_assert_int_eq(fedc_message_fit_task(round, &train, "test:2:2", model,
                                         &task), 0);
  tc_send(t, task);
  ck_assert_uint_eq(t->actions.count, 0);
  ck_assert_int_eq(tc_state(t), FEDC_CLIENT_RECEIVING_TASK);
  ck_assert_int_eq(fedc_chunker_new(model, round,
                                    FEDC__STREAM_KIND__GLOBAL_MODEL, 12,
                                    &chunks), 0);
  while ((env = fedc_chunker_next(chunks)) != NULL) {
    if (env->chunk->last && stop_before_last)
      break;
    tc_receive(t, env);
  }
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&model);
}

static void tc_trained(test_client *t, uint64_t round, int status,
                       const float weights[TEST_PARAMS])
{
  fedc_client_train_result r = { .num_examples = 10, .loss = 0.25,
                                 .accuracy = 0.5, .steps = 7 };
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  if (weights)
    test_model(&list, weights);
  fedc_client_actions_clear(&t->actions);
  ck_assert_int_eq(fedc_client_engine_trained(t->engine, 0, round, status,
                                              weights ? &list : NULL, &r,
                                              &t->actions),
                   0);
  fedc_tensor_list_close(&list);
}

START_TEST(task_trains_and_sends_update)
{
  const fedc_client_action *a;
  const Fedc__FitResult *result;
  fedc_tensor_list update;
  float values[TEST_PARAMS];
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  tc_task(&t, 4, false);

  /* The last chunk hands the model to the driver. */
  ck_assert_uint_eq(t.actions.count, 1);
  a = &t.actions.items[0];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_TRAIN);
  ck_assert_uint_eq(a->train.round, 4);
  ck_assert_str_eq(a->train.model_spec, "test:2:2");
  ck_assert_uint_eq(a->train.config.local_epochs, 2);
  ck_assert_uint_eq(a->train.config.batch_size, 4);
  ck_assert_float_eq(a->train.config.learning_rate, 0.5f);
  ck_assert_uint_eq(a->train.config.seed, 77);
  test_values(fedc_snapshot_tensors(a->train.model), values);
  ck_assert_mem_eq(values, G0, sizeof(values));
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);

  /* Training done: FitResult, then the update W - G0 as a stream. */
  tc_trained(&t, 4, 0, W);
  ck_assert_uint_eq(t.actions.count, 2);
  ck_assert_int_eq(tc_body(&t.actions.items[0]),
                   FEDC__ENVELOPE__BODY_FIT_RESULT);
  result = fedc_message_envelope(t.actions.items[0].send.message)->fit_result;
  ck_assert_uint_eq(result->round, 4);
  ck_assert_uint_eq(result->num_examples, 10);
  ck_assert_double_eq(fedc_message_find_metric(result->metrics,
                                               result->n_metrics,
                                               "train_loss", -1), 0.25);
  ck_assert_double_eq(fedc_message_find_metric(result->metrics,
                                               result->n_metrics, "steps",
                                               -1), 7);
  a = &t.actions.items[1];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_SEND_STREAM);
  ck_assert_int_eq(fedc_chunker_stream(a->stream.stream),
                   FEDC__STREAM_KIND__UPDATE);
  ck_assert_uint_eq(fedc_chunker_round(a->stream.stream), 4);

  fedc_tensor_list_init(&update);
  test_drain(a->stream.stream, result->update, result->n_update, &update);
  test_values(&update, values);
  for (int i = 0; i < TEST_PARAMS; i++)
    ck_assert_msg(values[i] == D[i], "update %d is %g, expected %g", i,
                  (double)values[i], (double)D[i]);
  fedc_tensor_list_close(&update);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  tc_stop(&t);
}
END_TEST

/* Returns weights - global as a snapshot, as a driver's training thread
 * builds the update. */
static fedc_snapshot *driver_update(const float weights[TEST_PARAMS],
                                    const fedc_snapshot *global)
{
  fedc_snapshot *update = NULL;
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  test_model(&list, weights);
  ck_assert_int_eq(fedc_snapshot_new_difference(
                     &list, fedc_snapshot_tensors(global), &update), 0);
  return update;
}

/* An update the driver computed is sent as it is, by reference. A
 * non-finite one, one of another layout and one for an old task are not. */
START_TEST(driver_update_sent_by_reference)
{
  fedc_client_train_result r = { .num_examples = 10, .loss = 0.25 };
  fedc_snapshot *global = test_snapshot(G0);
  fedc_snapshot *update = driver_update(W, global);
  fedc_snapshot *other = NULL;
  const fedc_client_action *a;
  fedc_tensor_list wrong;
  const uint64_t shape[1] = { 6 };
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  tc_task(&t, 4, false);
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_trained_update(t.engine, 0, 3, update,
                                                     &r, &t.actions), 0);
  ck_assert_uint_eq(t.actions.count, 0);
  ck_assert_int_eq(fedc_client_engine_trained_update(t.engine, 0, 4, update,
                                                     &r, &t.actions), 0);
  ck_assert_uint_eq(t.actions.count, 2);
  ck_assert_int_eq(tc_body(&t.actions.items[0]),
                   FEDC__ENVELOPE__BODY_FIT_RESULT);
  a = &t.actions.items[1];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_SEND_STREAM);
  ck_assert_ptr_eq(fedc_chunker_snapshot(a->stream.stream), update);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);

  /* NaN in the update: an Error, no stream. */
  tc_task(&t, 5, false);
  fedc_snapshot_unref(&update);
  update = driver_update(W, global);
  ((float *)fedc_snapshot_mutable(update)->items[1].data)[0] = NAN;
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_trained_update(t.engine, 0, 5, update,
                                                     &r, &t.actions), 0);
  ck_assert_uint_eq(t.actions.count, 1);
  ck_assert_int_eq(fedc_message_envelope(t.actions.items[0].send.message)
                     ->error->code, FEDC__ERROR_CODE__TRAINING_FAILED);

  /* Another layout. */
  tc_task(&t, 6, false);
  fedc_tensor_list_init(&wrong);
  ck_assert_int_eq(fedc_tensor_list_add(&wrong, "w", FEDC_DTYPE_F32, 1, shape,
                                        W), 0);
  ck_assert_int_eq(fedc_snapshot_new(&wrong, &other), 0);
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_trained_update(t.engine, 0, 6, other,
                                                     &r, &t.actions),
                   FEDC_ESHAPE);
  ck_assert_int_eq(fedc_message_envelope(t.actions.items[0].send.message)
                     ->error->code, FEDC__ERROR_CODE__TRAINING_FAILED);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  fedc_snapshot_unref(&other);
  fedc_snapshot_unref(&update);
  fedc_snapshot_unref(&global);
  tc_stop(&t);
}
END_TEST

/* A rebuilt engine resumes IDLE from a Welcome without building a Hello,
 * then takes a task; a Welcome of another protocol version closes it. */
START_TEST(resume_skips_hello)
{
  fedc_message *welcome = NULL;
  Fedc__Welcome bad;
  test_client t;

  tc_start(&t);
  ck_assert_int_eq(fedc_message_welcome("srv", 3, 1 << 20, 8, &welcome), 0);
  ck_assert_int_eq(fedc_client_engine_resume(
                     t.engine, 0, fedc_message_envelope(welcome)->welcome,
                     &t.actions), 0);
  ck_assert_uint_eq(t.actions.count, 0);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  ck_assert_uint_eq(fedc_client_engine_server_round(t.engine), 3);
  ck_assert_int_eq(fedc_client_engine_resume(
                     t.engine, 0, fedc_message_envelope(welcome)->welcome,
                     &t.actions), FEDC_EINVAL);
  tc_task(&t, 4, false);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);
  tc_stop(&t);

  tc_start(&t);
  bad = *fedc_message_envelope(welcome)->welcome;
  bad.protocol_version = FEDC_PROTOCOL_VERSION + 1;
  ck_assert_int_eq(fedc_client_engine_resume(t.engine, 0, &bad, &t.actions),
                   0);
  ck_assert_int_eq(t.actions.items[t.actions.count - 1].kind,
                   FEDC_CLIENT_ACTION_CLOSE);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_DISCONNECTED);
  fedc_message_free(&welcome);
  tc_stop(&t);
}
END_TEST

START_TEST(disconnect_mid_task_drops_it)
{
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  tc_task(&t, 4, true);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_RECEIVING_TASK);
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_lost(t.engine, 0, &t.actions), 0);
  ck_assert_uint_eq(t.actions.count, 0);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_DISCONNECTED);

  /* Reconnected: a new task, lost while training; the late training
   * result is dropped without a message. */
  tc_connect(&t);
  tc_task(&t, 5, false);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);
  ck_assert_int_eq(fedc_client_engine_lost(t.engine, 0, &t.actions), 0);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_DISCONNECTED);
  tc_trained(&t, 5, 0, W);
  ck_assert_uint_eq(t.actions.count, 0);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_DISCONNECTED);
  tc_stop(&t);
}
END_TEST

START_TEST(server_error_and_goodbye_close)
{
  fedc_message *m = NULL;
  const fedc_client_action *a;
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  ck_assert_int_eq(fedc_message_error(FEDC__ERROR_CODE__STALE_ROUND,
                                      "round 2 closed", 2, &m), 0);
  tc_send(&t, m);
  ck_assert_uint_eq(t.actions.count, 1);
  a = &t.actions.items[0];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_CLOSE);
  ck_assert_int_eq(a->close.server_code, FEDC__ERROR_CODE__STALE_ROUND);
  ck_assert(a->close.retry);
  ck_assert(!a->close.goodbye);
  ck_assert_ptr_nonnull(strstr(a->close.reason, "round 2 closed"));
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_DISCONNECTED);

  tc_connect(&t);
  ck_assert_int_eq(fedc_message_error(FEDC__ERROR_CODE__BAD_VERSION, "v9",
                                      0, &m), 0);
  tc_send(&t, m);
  ck_assert(!t.actions.items[0].close.retry);

  tc_connect(&t);
  ck_assert_int_eq(fedc_message_goodbye("training finished", &m), 0);
  tc_send(&t, m);
  a = &t.actions.items[0];
  ck_assert_int_eq(a->kind, FEDC_CLIENT_ACTION_CLOSE);
  ck_assert(a->close.goodbye);
  ck_assert_str_eq(a->close.reason, "server said goodbye: training finished");
  tc_stop(&t);
}
END_TEST

/* Asserts an Error with code to the server, then CLOSE. */
static void assert_protocol_error(const test_client *t, const char *text)
{
  const Fedc__Envelope *env;

  ck_assert_uint_eq(t->actions.count, 2);
  ck_assert_int_eq(tc_body(&t->actions.items[0]),
                   FEDC__ENVELOPE__BODY_ERROR);
  env = fedc_message_envelope(t->actions.items[0].send.message);
  ck_assert_int_eq(env->error->code, FEDC__ERROR_CODE__BAD_MESSAGE);
  ck_assert_int_eq(t->actions.items[1].kind, FEDC_CLIENT_ACTION_CLOSE);
  ck_assert_msg(strstr(t->actions.items[1].close.reason, text) != NULL,
                "reason \"%s\" lacks \"%s\"",
                t->actions.items[1].close.reason, text);
  ck_assert_int_eq(tc_state(t), FEDC_CLIENT_DISCONNECTED);
}

START_TEST(bad_server_input_closes)
{
  fedc_snapshot *model = test_snapshot(G0);
  fedc_train_config train = { .local_epochs = 1 };
  fedc_chunker *chunks = NULL;
  fedc_message *m = NULL;
  Fedc__Envelope env;
  Fedc__TensorChunk chunk;
  test_client t;

  tc_start(&t);

  /* A task before the Welcome. */
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_connected(t.engine, 0, &t.actions), 0);
  ck_assert_int_eq(fedc_message_fit_task(1, &train, "x", model, &m), 0);
  tc_send(&t, m);
  assert_protocol_error(&t, "task for round 1 in state hello_sent");

  /* A chunk out of order. */
  tc_connect(&t);
  ck_assert_int_eq(fedc_message_fit_task(1, &train, "x", model, &m), 0);
  tc_send(&t, m);
  ck_assert_int_eq(fedc_chunker_new(model, 1, FEDC__STREAM_KIND__GLOBAL_MODEL,
                                    8, &chunks), 0);
  env = *fedc_chunker_next(chunks);
  chunk = *env.chunk;
  chunk.offset = 1;
  env.chunk = &chunk;
  tc_receive(&t, &env);
  assert_protocol_error(&t, "expected offset 0");

  /* A chunk while idle, and a message only clients send. */
  tc_connect(&t);
  tc_receive(&t, fedc_chunker_next(chunks));
  assert_protocol_error(&t, "chunk in state idle");
  tc_connect(&t);
  ck_assert_int_eq(fedc_message_fit_result(1, 1, NULL, 0, model, &m), 0);
  tc_send(&t, m);
  assert_protocol_error(&t, "unexpected message");

  /* Messages after the close are ignored. */
  tc_receive(&t, fedc_chunker_next(chunks));
  ck_assert_uint_eq(t.actions.count, 0);
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&model);
  tc_stop(&t);
}
END_TEST

START_TEST(training_failure_reports_error)
{
  const float bad[TEST_PARAMS] = { 1, 2, 3, 4, 5, 6 };
  fedc_tensor_list wrong;
  const uint64_t shape[1] = { 6 };
  fedc_client_train_result r = { .num_examples = 1 };
  const Fedc__Envelope *env;
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  tc_task(&t, 4, false);
  tc_trained(&t, 4, FEDC_ENONFINITE, NULL);
  ck_assert_uint_eq(t.actions.count, 1);
  env = fedc_message_envelope(t.actions.items[0].send.message);
  ck_assert_int_eq(env->error->code, FEDC__ERROR_CODE__TRAINING_FAILED);
  ck_assert_uint_eq(env->error->round, 4);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);

  /* Weights of another layout: the driver's error, reported too. */
  tc_task(&t, 5, false);
  fedc_tensor_list_init(&wrong);
  ck_assert_int_eq(fedc_tensor_list_add(&wrong, "w", FEDC_DTYPE_F32, 1, shape,
                                        bad), 0);
  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_trained(t.engine, 0, 5, 0, &wrong, &r,
                                              &t.actions), FEDC_ESHAPE);
  ck_assert_uint_eq(wrong.count, 0);
  env = fedc_message_envelope(t.actions.items[0].send.message);
  ck_assert_int_eq(env->error->code, FEDC__ERROR_CODE__TRAINING_FAILED);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  tc_stop(&t);
}
END_TEST

/* Accepts the spec "test:2:2" only, as a client with 2 features would. */
static int check_features(void *context, const char *model_spec,
                          char *reason, size_t size)
{
  int *calls = context;

  (*calls)++;
  if (strcmp(model_spec, "test:2:2") == 0)
    return 0;
  snprintf(reason, size, "data has 2 features, model expects 784");
  return FEDC_ESHAPE;
}

/* A task whose model does not suit the local data is answered with an
 * Error that names both feature counts, its model chunks are skipped, and
 * a later suitable task trains as usual. */
START_TEST(unsuitable_task_rejected_early)
{
  fedc_train_config train = { .local_epochs = 1, .batch_size = 4,
                              .learning_rate = 0.5f };
  fedc_snapshot *model = test_snapshot(G0);
  fedc_chunker *chunks = NULL;
  fedc_message *task = NULL;
  const Fedc__Envelope *env;
  fedc_client_config c;
  test_client t;
  int calls = 0;

  fedc_client_config_default(&c);
  c.hello.client_id = "c1";
  c.hello.num_examples = 10;
  c.check_task = check_features;
  c.check_context = &calls;
  memset(&t, 0, sizeof(t));
  ck_assert_int_eq(fedc_client_engine_new(&c, &t.engine), 0);
  tc_connect(&t);

  ck_assert_int_eq(fedc_message_fit_task(5, &train, "logreg:784:10", model,
                                         &task), 0);
  tc_send(&t, task);
  ck_assert_int_eq(calls, 1);
  ck_assert_uint_eq(t.actions.count, 1);
  ck_assert_int_eq(tc_body(&t.actions.items[0]), FEDC__ENVELOPE__BODY_ERROR);
  env = fedc_message_envelope(t.actions.items[0].send.message);
  ck_assert_int_eq(env->error->code, FEDC__ERROR_CODE__TRAINING_FAILED);
  ck_assert_uint_eq(env->error->round, 5);
  ck_assert_str_eq(env->error->message,
                   "data has 2 features, model expects 784");
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);

  /* The server's stream of that model is already on its way. */
  ck_assert_int_eq(fedc_chunker_new(model, 5, FEDC__STREAM_KIND__GLOBAL_MODEL,
                                    12, &chunks), 0);
  while ((env = fedc_chunker_next(chunks)) != NULL) {
    tc_receive(&t, env);
    ck_assert_uint_eq(t.actions.count, 0);
    ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  }
  fedc_chunker_free(&chunks);

  tc_task(&t, 6, false);
  ck_assert_int_eq(calls, 2);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);
  fedc_snapshot_unref(&model);
  tc_stop(&t);
}
END_TEST

START_TEST(later_task_replaces_current)
{
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  tc_task(&t, 4, false);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);
  tc_task(&t, 6, false);
  ck_assert_int_eq(t.actions.items[0].kind, FEDC_CLIENT_ACTION_TRAIN);
  ck_assert_uint_eq(t.actions.items[0].train.round, 6);

  /* Round 4's result is dropped; round 6's goes out. */
  tc_trained(&t, 4, 0, W);
  ck_assert_uint_eq(t.actions.count, 0);
  tc_trained(&t, 6, 0, W);
  ck_assert_uint_eq(t.actions.count, 2);
  ck_assert_uint_eq(fedc_client_engine_task_round(t.engine), 6);
  tc_stop(&t);
}
END_TEST

/* A Cancel drops the task being trained or received and keeps the
 * connection; a Cancel for another round, or while idle, changes nothing. */
START_TEST(cancel_drops_task)
{
  fedc_message *cancel = NULL;
  test_client t;

  tc_start(&t);
  tc_connect(&t);
  tc_task(&t, 4, false);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);

  ck_assert_int_eq(fedc_message_cancel(3, "round closed", &cancel), 0);
  tc_send(&t, cancel);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_TRAINING);

  ck_assert_int_eq(fedc_message_cancel(4, "round closed", &cancel), 0);
  tc_send(&t, cancel);
  ck_assert_uint_eq(t.actions.count, 0);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);

  /* The cancelled training's result is ignored. */
  tc_trained(&t, 4, 0, W);
  ck_assert_uint_eq(t.actions.count, 0);

  /* Idle, or mid-download, a Cancel is harmless or drops the download. */
  ck_assert_int_eq(fedc_message_cancel(4, NULL, &cancel), 0);
  tc_send(&t, cancel);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  tc_task(&t, 5, true);
  ck_assert_int_eq(fedc_message_cancel(5, NULL, &cancel), 0);
  tc_send(&t, cancel);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);

  /* The next task runs as usual. */
  tc_task(&t, 6, false);
  tc_trained(&t, 6, 0, W);
  ck_assert_uint_eq(t.actions.count, 2);
  tc_stop(&t);
}
END_TEST

START_TEST(evaluate_task_round_trip)
{
  fedc_snapshot *model = test_snapshot(G0);
  fedc_client_eval_result r = { .num_examples = 50, .loss = 0.125,
                                .accuracy = 0.875 };
  fedc_chunker *chunks = NULL;
  fedc_message *m = NULL;
  const Fedc__Envelope *env;
  test_client t;
  float values[TEST_PARAMS];

  tc_start(&t);
  tc_connect(&t);
  ck_assert_int_eq(fedc_message_evaluate_task(9, "test:2:2", model, &m), 0);
  tc_send(&t, m);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_RECEIVING_EVAL);
  ck_assert_int_eq(fedc_chunker_new(model, 9, FEDC__STREAM_KIND__EVAL_MODEL,
                                    1000, &chunks), 0);
  while ((env = fedc_chunker_next(chunks)) != NULL)
    tc_receive(&t, env);
  ck_assert_uint_eq(t.actions.count, 1);
  ck_assert_int_eq(t.actions.items[0].kind, FEDC_CLIENT_ACTION_EVALUATE);
  ck_assert_uint_eq(t.actions.items[0].evaluate.round, 9);
  test_values(fedc_snapshot_tensors(t.actions.items[0].evaluate.model),
              values);
  ck_assert_mem_eq(values, G0, sizeof(values));
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_EVALUATING);

  fedc_client_actions_clear(&t.actions);
  ck_assert_int_eq(fedc_client_engine_evaluated(t.engine, 0, 9, &r,
                                                &t.actions), 0);
  env = fedc_message_envelope(t.actions.items[0].send.message);
  ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_EVALUATE_RESULT);
  ck_assert_uint_eq(env->evaluate_result->num_examples, 50);
  ck_assert_double_eq(env->evaluate_result->accuracy, 0.875);
  ck_assert_int_eq(tc_state(&t), FEDC_CLIENT_IDLE);
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&model);
  tc_stop(&t);
}
END_TEST

static Suite *client_suite(void)
{
  Suite *s = suite_create("client_engine");
  TCase *tc = tcase_create("core");

  tcase_add_test(tc, task_trains_and_sends_update);
  tcase_add_test(tc, driver_update_sent_by_reference);
  tcase_add_test(tc, resume_skips_hello);
  tcase_add_test(tc, disconnect_mid_task_drops_it);
  tcase_add_test(tc, server_error_and_goodbye_close);
  tcase_add_test(tc, bad_server_input_closes);
  tcase_add_test(tc, training_failure_reports_error);
  tcase_add_test(tc, unsuitable_task_rejected_early);
  tcase_add_test(tc, later_task_replaces_current);
  tcase_add_test(tc, cancel_drops_task);
  tcase_add_test(tc, evaluate_task_round_trip);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(client_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
