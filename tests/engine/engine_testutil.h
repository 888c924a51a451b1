/* Helpers for the engine tests: a tiny model, updates with chosen values,
 * and a scripted server driver that feeds events and keeps the actions of
 * the last event for the test to check. */
#ifndef FEDC_TESTS_ENGINE_TESTUTIL_H
#define FEDC_TESTS_ENGINE_TESTUTIL_H

#include <stdint.h>

#include "server/engine.h"
#include "tensor/tensor.h"
#include "wire/snapshot.h"

/* The test model: "w" of shape [2, 2] and "b" of shape [2], F32, six
 * parameters in all, in that order. */
#define TEST_PARAMS 6

/* Fills list (initialised) with the test model holding values. */
void test_model(fedc_tensor_list *list, const float values[TEST_PARAMS]);

/* Returns a snapshot of the test model holding values. */
fedc_snapshot *test_snapshot(const float values[TEST_PARAMS]);

/* Copies the six parameters of a test-model list into values. */
void test_values(const fedc_tensor_list *list, float values[TEST_PARAMS]);

typedef struct test_server {
  fedc_server_engine *engine;
  fedc_server_actions actions;   /* of the last event */
  uint64_t now;
} test_server;

/* Server config for the tests: min_clients n, every idle client sampled,
 * quorum count n, deadline 1000 ms, 2 rounds, evaluation every round,
 * 12-byte chunks so that "w" splits into 3 + 1 elements, no retry delay
 * and no limit on abandoned rounds in a row. */
void test_server_config(fedc_server_engine_config *config, uint32_t n);

/* Creates the engine with the model holding values after completed rounds
 * and starts it. */
void test_server_start(test_server *s, const fedc_server_engine_config *c,
                       const float values[TEST_PARAMS], uint64_t completed);
void test_server_stop(test_server *s);

/* Events; each clears the previous actions first and asserts rc 0. */
void ts_connect(test_server *s, uint64_t peer, const char *identity);
void ts_receive(test_server *s, uint64_t peer, const Fedc__Envelope *m);
void ts_lost(test_server *s, uint64_t peer);
void ts_timer(test_server *s, uint64_t timer);
void ts_evaluated(test_server *s, uint64_t round, double loss, double acc);

/* Connects peer and sends a Hello with client_id; asserts the Welcome. */
void ts_hello(test_server *s, uint64_t peer, const char *client_id);

/* Registers peers 1..n as clients "c1".."cn". */
void ts_hello_all(test_server *s, uint64_t n);

/* Sends a FitResult for round announcing the test model's layout and
 * then its chunks with the update values, 8 bytes per chunk. The actions
 * left are those of the last chunk. */
void ts_result(test_server *s, uint64_t peer, uint64_t round,
               const float update[TEST_PARAMS], uint64_t examples);

/* The same with the train_loss metric set to loss. */
void ts_result_loss(test_server *s, uint64_t peer, uint64_t round,
                    const float update[TEST_PARAMS], uint64_t examples,
                    double loss);

/* Queries on the actions of the last event. */
size_t ts_count(const test_server *s, enum fedc_server_action_kind kind);
const fedc_server_action *ts_find(const test_server *s,
                                  enum fedc_server_action_kind kind,
                                  uint64_t peer);

/* Returns the body case of a SEND action's envelope. */
Fedc__Envelope__BodyCase ts_body(const fedc_server_action *a);

/* Asserts that the last event rejected peer: an Error with code, then a
 * CLOSE with reject and a reason containing text. */
void ts_assert_rejected(const test_server *s, uint64_t peer,
                        enum fedc_server_reject reject, Fedc__ErrorCode code,
                        const char *text);

/* Asserts that the last event ended the run for every peer: no CLOSE,
 * one CLOSE_ALL carrying a Goodbye with reason, and DONE after it. */
void ts_assert_closed_all(const test_server *s, const char *reason);

/* Reassembles every chunk of stream, announced by specs, into out
 * (initialised), asserting that each chunk is valid. */
void test_drain(fedc_chunker *stream, Fedc__TensorSpec **specs, size_t n,
                fedc_tensor_list *out);

/* Asserts that the global model is exactly values. */
void ts_assert_model(const test_server *s, const float values[TEST_PARAMS]);

#endif
