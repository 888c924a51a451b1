/* One server engine and three client engines joined in memory: a minimal
 * driver of both, as the simulator runs them, for two full rounds. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/engine.h"
#include "engine_testutil.h"
#include "util/error.h"
#include "wire/chunker.h"
#include "wire/message.h"

#define CLIENTS 3

/* Client k (0-based) adds shift[k] to every parameter and reports
 * examples[k]: the weighted mean shift is (1 + 2 + 8) / 4 = 2.75. */
static const float shift[CLIENTS] = { 1, 2, 4 };
static const uint64_t examples[CLIENTS] = { 1, 1, 2 };

static const float G0[TEST_PARAMS] = { 1, 2, 3, 4, 0.5f, 0.25f };

typedef struct world {
  fedc_server_engine *server;
  fedc_client_engine *clients[CLIENTS];
  fedc_server_actions server_actions;
  fedc_client_actions client_actions;
  uint64_t finished_rounds;
  uint64_t close_alls;         /* CLOSE_ALL actions carried out */
  uint64_t goodbyes;           /* clients that closed after a Goodbye */
  bool done;
} world;

static void run_client_actions(world *w, size_t k);

static void to_client(world *w, size_t k, const Fedc__Envelope *env)
{
  fedc_client_actions_clear(&w->client_actions);
  ck_assert_int_eq(fedc_client_engine_received(w->clients[k], 0, env,
                                               &w->client_actions), 0);
  run_client_actions(w, k);
}

static void run_server_actions(world *w);

static void to_server(world *w, size_t k, const Fedc__Envelope *env)
{
  fedc_server_actions_clear(&w->server_actions);
  ck_assert_int_eq(fedc_server_engine_received(w->server, 0, k + 1, env,
                                               &w->server_actions), 0);
  run_server_actions(w);
}

/* Trains by adding the client's shift to every parameter. */
static void train(world *w, size_t k, fedc_client_action *a)
{
  fedc_client_train_result r = { .num_examples = examples[k], .loss = 1 };
  fedc_tensor_list weights;

  fedc_tensor_list_init(&weights);
  ck_assert_int_eq(fedc_tensor_list_copy(&weights,
                                         fedc_snapshot_tensors(a->train.model)),
                   0);
  for (size_t t = 0; t < weights.count; t++) {
    float *x = weights.items[t].data;

    for (uint64_t i = 0; i < fedc_tensor_numel(&weights.items[t]); i++)
      x[i] += shift[k];
  }
  fedc_client_actions_clear(&w->client_actions);
  ck_assert_int_eq(fedc_client_engine_trained(w->clients[k], 0,
                                              a->train.round, 0, &weights, &r,
                                              &w->client_actions), 0);
}

/* Carries out one client's actions. Each step may trigger events on the
 * other side, which reuse the shared lists, so the actions are moved out
 * first. */
static void run_client_actions(world *w, size_t k)
{
  fedc_client_actions mine = w->client_actions;

  fedc_client_actions_init(&w->client_actions);
  for (size_t i = 0; i < mine.count; i++) {
    fedc_client_action *a = &mine.items[i];
    const Fedc__Envelope *env;

    if (a->kind == FEDC_CLIENT_ACTION_SEND) {
      to_server(w, k, fedc_message_envelope(a->send.message));
    } else if (a->kind == FEDC_CLIENT_ACTION_SEND_STREAM) {
      while ((env = fedc_chunker_next(a->stream.stream)) != NULL)
        to_server(w, k, env);
    } else if (a->kind == FEDC_CLIENT_ACTION_TRAIN) {
      train(w, k, a);
      run_client_actions(w, k);
    } else if (a->kind == FEDC_CLIENT_ACTION_CLOSE) {
      ck_assert(a->close.goodbye);
      w->goodbyes++;
      fedc_server_actions_clear(&w->server_actions);
      ck_assert_int_eq(fedc_server_engine_lost(w->server, 0, k + 1,
                                               &w->server_actions), 0);
      ck_assert_uint_eq(w->server_actions.count, 0);
    } else {
      ck_abort_msg("unexpected client action %d", (int)a->kind);
    }
  }
  fedc_client_actions_close(&mine);
}

/* Delivers the Goodbye of a CLOSE_ALL to every client still connected,
 * then closes each connection, as a driver does. */
static void close_all(world *w, const fedc_server_action *a)
{
  w->close_alls++;
  for (size_t k = 0; k < CLIENTS; k++) {
    if (fedc_client_engine_state(w->clients[k]) == FEDC_CLIENT_DISCONNECTED)
      continue;
    to_client(w, k, fedc_message_envelope(a->close_all.message));
    fedc_client_actions_clear(&w->client_actions);
    ck_assert_int_eq(fedc_client_engine_lost(w->clients[k], 0,
                                             &w->client_actions), 0);
  }
}

static void run_server_actions(world *w)
{
  fedc_server_actions mine = w->server_actions;

  fedc_server_actions_init(&w->server_actions);
  for (size_t i = 0; i < mine.count; i++) {
    fedc_server_action *a = &mine.items[i];
    const Fedc__Envelope *env;

    switch (a->kind) {
    case FEDC_SERVER_ACTION_SEND:
      to_client(w, a->send.peer - 1, fedc_message_envelope(a->send.message));
      break;
    case FEDC_SERVER_ACTION_SEND_STREAM:
      while ((env = fedc_chunker_next(a->stream.stream)) != NULL)
        to_client(w, a->stream.peer - 1, env);
      break;
    case FEDC_SERVER_ACTION_CLOSE:
      fedc_client_actions_clear(&w->client_actions);
      ck_assert_int_eq(fedc_client_engine_lost(w->clients[a->close.peer - 1],
                                               0, &w->client_actions), 0);
      break;
    case FEDC_SERVER_ACTION_CLOSE_ALL:
      close_all(w, a);
      break;
    case FEDC_SERVER_ACTION_ROUND_FINISHED:
      ck_assert(a->round_finished.aggregated);
      ck_assert_uint_eq(a->round_finished.clients_reported, CLIENTS);
      w->finished_rounds++;
      break;
    case FEDC_SERVER_ACTION_DONE:
      w->done = true;
      break;
    default:
      break;
    }
  }
  fedc_server_actions_close(&mine);
}

START_TEST(two_rounds_in_memory)
{
  fedc_server_engine_config sc;
  fedc_client_config cc;
  fedc_tensor_list model;
  char id[8];
  world w;
  float want[TEST_PARAMS], got[TEST_PARAMS];

  memset(&w, 0, sizeof(w));
  test_server_config(&sc, CLIENTS);
  sc.evaluate_every = 0;
  fedc_tensor_list_init(&model);
  test_model(&model, G0);
  ck_assert_int_eq(fedc_server_engine_new(&sc, &model, 0, NULL, &w.server), 0);
  ck_assert_int_eq(fedc_server_engine_start(w.server, 0, &w.server_actions),
                   0);

  fedc_client_config_default(&cc);
  for (size_t k = 0; k < CLIENTS; k++) {
    snprintf(id, sizeof(id), "c%zu", k);
    cc.hello.client_id = id;
    cc.hello.num_examples = examples[k];
    ck_assert_int_eq(fedc_client_engine_new(&cc, &w.clients[k]), 0);
    ck_assert_int_eq(fedc_server_engine_connected(w.server, 0, k + 1, NULL,
                                                  &w.server_actions), 0);
    ck_assert_int_eq(fedc_client_engine_connected(w.clients[k], 0,
                                                  &w.client_actions), 0);
    run_client_actions(&w, k);
  }

  ck_assert(w.done);
  ck_assert_uint_eq(w.finished_rounds, 2);
  ck_assert_uint_eq(w.close_alls, 1);
  ck_assert_uint_eq(w.goodbyes, CLIENTS);
  for (int i = 0; i < TEST_PARAMS; i++)
    want[i] = G0[i] + 2 * 2.75f;
  test_values(fedc_server_engine_model(w.server), got);
  ck_assert_mem_eq(got, want, sizeof(got));
  for (size_t k = 0; k < CLIENTS; k++) {
    ck_assert_int_eq(fedc_client_engine_state(w.clients[k]),
                     FEDC_CLIENT_DISCONNECTED);
    fedc_client_engine_free(&w.clients[k]);
  }
  fedc_server_actions_close(&w.server_actions);
  fedc_client_actions_close(&w.client_actions);
  fedc_server_engine_free(&w.server);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("session");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, two_rounds_in_memory);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
