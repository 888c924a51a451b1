#include "engine_testutil.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "wire/assembler.h"
#include "wire/chunker.h"
#include "wire/message.h"

void test_model(fedc_tensor_list *list, const float values[TEST_PARAMS])
{
  const uint64_t w_shape[2] = { 2, 2 };
  const uint64_t b_shape[1] = { 2 };

  ck_assert_int_eq(fedc_tensor_list_add(list, "w", FEDC_DTYPE_F32, 2, w_shape,
                                        values), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "b", FEDC_DTYPE_F32, 1, b_shape,
                                        values + 4), 0);
}

fedc_snapshot *test_snapshot(const float values[TEST_PARAMS])
{
  fedc_tensor_list list;
  fedc_snapshot *s = NULL;

  fedc_tensor_list_init(&list);
  test_model(&list, values);
  ck_assert_int_eq(fedc_snapshot_new(&list, &s), 0);
  return s;
}

void test_values(const fedc_tensor_list *list, float values[TEST_PARAMS])
{
  ck_assert_uint_eq(list->count, 2);
  memcpy(values, list->items[0].data, 4 * sizeof(float));
  memcpy(values + 4, list->items[1].data, 2 * sizeof(float));
}

void test_server_config(fedc_server_engine_config *config, uint32_t n)
{
  fedc_server_engine_config_default(config);
  config->min_clients = n;
  config->quorum_count = n;
  config->quorum_fraction = 0.0;
  config->round_deadline_ms = 1000;
  config->total_rounds = 2;
  config->seed = 42;
  config->model_spec = "test:2:2";
  config->chunk_bytes = 12;
  /* Rounds after an abandoned one start at once, as tests of other
   * features expect; the tests of the retry delay set it. */
  config->retry_delay_ms = 0;
  config->max_abandoned_rounds = 0;
}

void test_server_start(test_server *s, const fedc_server_engine_config *c,
                       const float values[TEST_PARAMS], uint64_t completed)
{
  fedc_tensor_list model;

  memset(s, 0, sizeof(*s));
  fedc_tensor_list_init(&model);
  test_model(&model, values);
  fedc_server_actions_init(&s->actions);
  ck_assert_int_eq(fedc_server_engine_new(c, &model, completed, NULL,
                                          &s->engine), 0);
  ck_assert_uint_eq(model.count, 0);
  s->now = 1000;
  ck_assert_int_eq(fedc_server_engine_start(s->engine, s->now, &s->actions),
                   0);
}

void test_server_stop(test_server *s)
{
  fedc_server_actions_close(&s->actions);
  fedc_server_engine_free(&s->engine);
  ck_assert_ptr_null(s->engine);
}

void ts_connect(test_server *s, uint64_t peer, const char *identity)
{
  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_connected(s->engine, s->now, peer,
                                                identity, &s->actions), 0);
}

void ts_receive(test_server *s, uint64_t peer, const Fedc__Envelope *m)
{
  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_received(s->engine, s->now, peer, m,
                                               &s->actions), 0);
}

void ts_lost(test_server *s, uint64_t peer)
{
  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_lost(s->engine, s->now, peer,
                                           &s->actions), 0);
}

void ts_timer(test_server *s, uint64_t timer)
{
  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_timer(s->engine, s->now, timer,
                                            &s->actions), 0);
}

void ts_evaluated(test_server *s, uint64_t round, double loss, double acc)
{
  fedc_server_eval result = { loss, acc };

  fedc_server_actions_clear(&s->actions);
  ck_assert_int_eq(fedc_server_engine_evaluated(s->engine, s->now, round,
                                                &result, &s->actions), 0);
}

void ts_hello(test_server *s, uint64_t peer, const char *client_id)
{
  fedc_hello_info info = { .client_id = client_id, .num_examples = 100 };
  fedc_message *hello = NULL;
  const fedc_server_action *welcome;

  ts_connect(s, peer, NULL);
  ck_assert_int_eq(fedc_message_hello(&info, &hello), 0);
  ts_receive(s, peer, fedc_message_envelope(hello));
  fedc_message_free(&hello);

  welcome = ts_find(s, FEDC_SERVER_ACTION_SEND, peer);
  ck_assert_ptr_nonnull(welcome);
  ck_assert_int_eq(ts_body(welcome), FEDC__ENVELOPE__BODY_WELCOME);
}

void ts_hello_all(test_server *s, uint64_t n)
{
  char id[16];

  for (uint64_t p = 1; p <= n; p++) {
    snprintf(id, sizeof(id), "c%llu", (unsigned long long)p);
    ts_hello(s, p, id);
  }
}

void ts_result(test_server *s, uint64_t peer, uint64_t round,
               const float update[TEST_PARAMS], uint64_t examples)
{
  ts_result_loss(s, peer, round, update, examples, 0.5);
}

void ts_result_loss(test_server *s, uint64_t peer, uint64_t round,
                    const float update[TEST_PARAMS], uint64_t examples,
                    double loss)
{
  const fedc_message_metric metrics[] = {
    { "train_loss", loss }, { "train_accuracy", 0.75 },
  };
  fedc_snapshot *snap = test_snapshot(update);
  fedc_message *result = NULL;
  fedc_chunker *chunks = NULL;
  const Fedc__Envelope *chunk;

  ck_assert_int_eq(fedc_message_fit_result(round, examples, metrics, 2, snap,
                                           &result), 0);
  ts_receive(s, peer, fedc_message_envelope(result));
  fedc_message_free(&result);

  ck_assert_int_eq(fedc_chunker_new(snap, round, FEDC__STREAM_KIND__UPDATE, 8,
                                    &chunks), 0);
  while ((chunk = fedc_chunker_next(chunks)) != NULL)
    ts_receive(s, peer, chunk);
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&snap);
}

size_t ts_count(const test_server *s, enum fedc_server_action_kind kind)
{
  size_t n = 0;

  for (size_t i = 0; i < s->actions.count; i++)
    n += s->actions.items[i].kind == kind;
  return n;
}

/* Returns the peer an action is addressed to, or UINT64_MAX. */
static uint64_t action_peer(const fedc_server_action *a)
{
  switch (a->kind) {
  case FEDC_SERVER_ACTION_SEND: return a->send.peer;
  case FEDC_SERVER_ACTION_SEND_STREAM: return a->stream.peer;
  case FEDC_SERVER_ACTION_CLOSE: return a->close.peer;
  default: return UINT64_MAX;
  }
}

const fedc_server_action *ts_find(const test_server *s,
                                  enum fedc_server_action_kind kind,
                                  uint64_t peer)
{
  for (size_t i = 0; i < s->actions.count; i++) {
    const fedc_server_action *a = &s->actions.items[i];

    if (a->kind == kind && (peer == UINT64_MAX || action_peer(a) == peer))
      return a;
  }
  return NULL;
}

Fedc__Envelope__BodyCase ts_body(const fedc_server_action *a)
{
  ck_assert_int_eq(a->kind, FEDC_SERVER_ACTION_SEND);
  return fedc_message_envelope(a->send.message)->body_case;
}

void ts_assert_rejected(const test_server *s, uint64_t peer,
                        enum fedc_server_reject reject, Fedc__ErrorCode code,
                        const char *text)
{
  const fedc_server_action *error = ts_find(s, FEDC_SERVER_ACTION_SEND, peer);
  const fedc_server_action *close = ts_find(s, FEDC_SERVER_ACTION_CLOSE, peer);
  const Fedc__Envelope *env;

  ck_assert_ptr_nonnull(error);
  ck_assert_ptr_nonnull(close);
  ck_assert(error < close);
  env = fedc_message_envelope(error->send.message);
  ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_ERROR);
  ck_assert_int_eq(env->error->code, code);
  ck_assert_int_eq(close->close.reject, reject);
  ck_assert_msg(strstr(close->close.reason, text) != NULL,
                "reason \"%s\" lacks \"%s\"", close->close.reason, text);
}

void ts_assert_closed_all(const test_server *s, const char *reason)
{
  const fedc_server_action *all = ts_find(s, FEDC_SERVER_ACTION_CLOSE_ALL,
                                          UINT64_MAX);
  const fedc_server_action *done = ts_find(s, FEDC_SERVER_ACTION_DONE,
                                           UINT64_MAX);
  const Fedc__Envelope *env;

  ck_assert_uint_eq(ts_count(s, FEDC_SERVER_ACTION_CLOSE), 0);
  ck_assert_uint_eq(ts_count(s, FEDC_SERVER_ACTION_CLOSE_ALL), 1);
  ck_assert_ptr_nonnull(done);
  ck_assert(all < done);
  ck_assert_str_eq(all->close_all.reason, reason);
  ck_assert_ptr_nonnull(all->close_all.message);
  env = fedc_message_envelope(all->close_all.message);
  ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_GOODBYE);
  ck_assert_str_eq(env->goodbye->reason, reason);
}

void test_drain(fedc_chunker *stream, Fedc__TensorSpec **specs, size_t n,
                fedc_tensor_list *out)
{
  fedc_spec_limits limits = { FEDC_SPEC_MAX_TENSORS, FEDC_SPEC_MAX_BYTES };
  fedc_assembler *a = NULL;
  const Fedc__Envelope *env;
  int rc = 0;

  ck_assert_int_eq(fedc_assembler_new(fedc_chunker_round(stream),
                                      fedc_chunker_stream(stream), specs, n,
                                      &limits, NULL, &a, NULL, 0), 0);
  while ((env = fedc_chunker_next(stream)) != NULL) {
    ck_assert_int_eq(rc, 0);
    rc = fedc_assembler_add(a, env->chunk);
    ck_assert_int_ge(rc, 0);
  }
  ck_assert_int_eq(rc, 1);
  ck_assert_int_eq(fedc_assembler_take(a, out), 0);
  fedc_assembler_free(&a);
}

void ts_assert_model(const test_server *s, const float values[TEST_PARAMS])
{
  float got[TEST_PARAMS];

  test_values(fedc_server_engine_model(s->engine), got);
  for (int i = 0; i < TEST_PARAMS; i++)
    ck_assert_msg(got[i] == values[i], "parameter %d is %.9g, expected %.9g",
                  i, (double)got[i], (double)values[i]);
}
