#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "net/frame.h"
#include "util/error.h"
#include "util/rng.h"

/* Chunk payload sizes of the test stream: tiny, about the decoder's first
 * buffer of 4 KiB, and large enough to make it grow several times. */
static const size_t chunk_sizes[] = { 1, 1000, 4096, 64 * 1024, 300 * 1000 };
#define NUM_CHUNKS (sizeof(chunk_sizes) / sizeof(chunk_sizes[0]))
#define NUM_FRAMES (NUM_CHUNKS + 2)

struct stream {
  uint8_t *bytes;
  size_t len;
};

static uint8_t chunk_byte(size_t chunk, size_t i)
{
  return (uint8_t)(i * 31u + chunk * 7u + 3u);
}

/* Appends one framed envelope to s. */
static void stream_append(struct stream *s, const Fedc__Envelope *env)
{
  uint8_t *frame;
  size_t len;

  ck_assert_int_eq(fedc_frame_pack(env, 0, &frame, &len), 0);
  s->bytes = realloc(s->bytes, s->len + len);
  ck_assert_ptr_nonnull(s->bytes);
  memcpy(s->bytes + s->len, frame, len);
  s->len += len;
  free(frame);
}

/* Builds a Hello, one TensorChunk per entry of chunk_sizes, and a Goodbye. */
static struct stream make_stream(void)
{
  struct stream s = { NULL, 0 };
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__Hello hello = FEDC__HELLO__INIT;
  Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;
  Fedc__Goodbye bye = FEDC__GOODBYE__INIT;

  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  hello.protocol_version = 1;
  hello.client_id = "client-0007";
  hello.num_examples = 6000;
  env.body_case = FEDC__ENVELOPE__BODY_HELLO;
  env.hello = &hello;
  stream_append(&s, &env);

  for (size_t c = 0; c < NUM_CHUNKS; c++) {
    uint8_t *data = malloc(chunk_sizes[c]);

    for (size_t i = 0; i < chunk_sizes[c]; i++)
      data[i] = chunk_byte(c, i);
    chunk.round = 40 + c;
    chunk.tensor_index = (uint32_t)c;
    chunk.data.data = data;
    chunk.data.len = chunk_sizes[c];
    env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
    env.chunk = &chunk;
    stream_append(&s, &env);
    free(data);
  }

  bye.reason = "done";
  env.body_case = FEDC__ENVELOPE__BODY_GOODBYE;
  env.goodbye = &bye;
  stream_append(&s, &env);
  return s;
}

/* Checks the index-th decoded frame against what make_stream() packed. */
static void check_frame(const fedc_frame_decoder *dec, size_t index)
{
  Fedc__Envelope *env = NULL;
  const uint8_t *payload;
  size_t len;

  payload = fedc_frame_decoder_payload(dec, &len);
  ck_assert_ptr_nonnull(payload);
  ck_assert_int_eq(fedc_frame_unpack(payload, len, &env), 0);

  if (index == 0) {
    ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_HELLO);
    ck_assert_str_eq(env->hello->client_id, "client-0007");
    ck_assert_uint_eq(env->hello->num_examples, 6000);
  } else if (index <= NUM_CHUNKS) {
    size_t c = index - 1;
    size_t mismatches = 0;

    ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_CHUNK);
    ck_assert_uint_eq(env->chunk->round, 40 + c);
    ck_assert_uint_eq(env->chunk->data.len, chunk_sizes[c]);
    for (size_t i = 0; i < chunk_sizes[c]; i++)
      mismatches += env->chunk->data.data[i] != chunk_byte(c, i);
    ck_assert_uint_eq(mismatches, 0);
  } else {
    ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_GOODBYE);
    ck_assert_str_eq(env->goodbye->reason, "done");
  }
  fedc_frame_envelope_free(&env);
  ck_assert_ptr_null(env);
}

/* Feeds the stream in slices of 1..max_slice bytes (exactly 1 when
 * max_slice is 1) and returns the number of frames decoded. */
static size_t decode_in_slices(const struct stream *s, size_t max_slice,
                               uint64_t seed)
{
  fedc_frame_decoder dec;
  fedc_rng rng;
  size_t off = 0, frames = 0;

  fedc_rng_seed(&rng, seed);
  fedc_frame_decoder_init(&dec, 0);
  while (off < s->len) {
    size_t slice = 1 + (size_t)fedc_rng_below(&rng, max_slice);
    size_t end = off + slice < s->len ? off + slice : s->len;

    while (off < end) {
      size_t used;
      int rc = fedc_frame_decoder_feed(&dec, s->bytes + off, end - off, &used);

      ck_assert_int_ge(rc, 0);
      off += used;
      if (rc == 1)
        check_frame(&dec, frames++);
    }
  }
  fedc_frame_decoder_close(&dec);
  return frames;
}

START_TEST(frame_roundtrip_byte_by_byte)
{
  struct stream s = make_stream();

  ck_assert_uint_eq(decode_in_slices(&s, 1, 1), NUM_FRAMES);
  free(s.bytes);
}
END_TEST

START_TEST(frame_roundtrip_random_slices)
{
  struct stream s = make_stream();

  for (uint64_t seed = 1; seed <= 20; seed++)
    ck_assert_uint_eq(decode_in_slices(&s, 1 + seed * 997, seed), NUM_FRAMES);
  free(s.bytes);
}
END_TEST

START_TEST(frame_roundtrip_whole_stream)
{
  struct stream s = make_stream();

  ck_assert_uint_eq(decode_in_slices(&s, s.len, 3), NUM_FRAMES);
  free(s.bytes);
}
END_TEST

START_TEST(frame_oversized_rejected_before_alloc)
{
  static const uint8_t four_gib[] = { 0xff, 0xff, 0xff, 0xff, 0x0a, 0x00 };
  fedc_frame_decoder dec;
  size_t used;

  fedc_frame_decoder_init(&dec, 1024);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, four_gib, sizeof(four_gib),
                                           &used),
                   FEDC_ETOOBIG);
  ck_assert_uint_eq(dec.payload_len, 0xffffffffu);
  ck_assert_ptr_null(dec.payload);
  ck_assert_uint_eq(dec.capacity, 0);

  /* The stream is out of sync: later bytes are rejected too. */
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, four_gib + 4, 2, &used),
                   FEDC_ETOOBIG);
  ck_assert_uint_eq(used, 0);
  fedc_frame_decoder_close(&dec);
}
END_TEST

START_TEST(frame_limit_is_inclusive)
{
  static const uint8_t len_1024[] = { 0x00, 0x00, 0x04, 0x00 };
  static const uint8_t len_1025[] = { 0x00, 0x00, 0x04, 0x01 };
  fedc_frame_decoder dec;
  size_t used;

  fedc_frame_decoder_init(&dec, 1024);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, len_1024, 4, &used), 0);
  ck_assert_uint_eq(used, 4);
  fedc_frame_decoder_close(&dec);

  fedc_frame_decoder_init(&dec, 1024);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, len_1025, 4, &used),
                   FEDC_ETOOBIG);
  fedc_frame_decoder_close(&dec);
}
END_TEST

START_TEST(frame_buffer_grows_with_bytes)
{
  /* A 1 MiB frame announced, then only 100 payload bytes. */
  uint8_t bytes[4 + 100] = { 0x00, 0x10, 0x00, 0x00 };
  fedc_frame_decoder dec;
  size_t used;

  fedc_frame_decoder_init(&dec, 0);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, bytes, sizeof(bytes), &used),
                   0);
  ck_assert_uint_eq(used, sizeof(bytes));
  ck_assert_uint_le(dec.capacity, 4096);
  ck_assert_uint_eq(dec.payload_have, 100);
  fedc_frame_decoder_close(&dec);
}
END_TEST

START_TEST(frame_zero_length_rejected)
{
  static const uint8_t zero[] = { 0, 0, 0, 0, 0x08, 0x01 };
  fedc_frame_decoder dec;
  size_t used;

  fedc_frame_decoder_init(&dec, 0);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, zero, sizeof(zero), &used),
                   FEDC_EFORMAT);
  ck_assert_ptr_null(dec.payload);
  fedc_frame_decoder_close(&dec);
}
END_TEST

START_TEST(frame_garbage_payload_rejected)
{
  /* Field 31 with wire type 7, which does not exist. */
  uint8_t garbage[64];
  Fedc__Envelope *env = (Fedc__Envelope *)1;

  memset(garbage, 0xff, sizeof(garbage));
  ck_assert_int_eq(fedc_frame_unpack(garbage, sizeof(garbage), &env),
                   FEDC_EFORMAT);
  ck_assert_ptr_null(env);
}
END_TEST

/* Packs env without fedc_frame_pack(), which rejects a missing body. */
static int unpack_raw(const Fedc__Envelope *env, Fedc__Envelope **out)
{
  uint8_t buf[256];
  size_t len = fedc__envelope__pack(env, buf);

  return fedc_frame_unpack(buf, len, out);
}

START_TEST(frame_wrong_version_rejected)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__Goodbye bye = FEDC__GOODBYE__INIT;
  Fedc__Envelope *out = NULL;

  env.body_case = FEDC__ENVELOPE__BODY_GOODBYE;
  env.goodbye = &bye;

  env.protocol_version = 2;
  ck_assert_int_eq(unpack_raw(&env, &out), FEDC_EVERSION);
  ck_assert_ptr_null(out);
  env.protocol_version = 0;
  ck_assert_int_eq(unpack_raw(&env, &out), FEDC_EVERSION);

  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  ck_assert_int_eq(unpack_raw(&env, &out), 0);
  ck_assert_int_eq(out->body_case, FEDC__ENVELOPE__BODY_GOODBYE);
  fedc_frame_envelope_free(&out);
}
END_TEST

START_TEST(frame_missing_body_rejected)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__Envelope *out = NULL;
  uint8_t *frame = NULL;
  size_t len;

  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  ck_assert_int_eq(unpack_raw(&env, &out), FEDC_EVERSION);
  ck_assert_ptr_null(out);
  ck_assert_int_eq(fedc_frame_pack(&env, 0, &frame, &len), FEDC_EINVAL);
  ck_assert_ptr_null(frame);
}
END_TEST

START_TEST(frame_pack_respects_max)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;
  uint8_t data[2000] = { 0 };
  uint8_t *frame = NULL;
  size_t len;

  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
  env.chunk = &chunk;
  chunk.data.data = data;
  chunk.data.len = sizeof(data);

  ck_assert_int_eq(fedc_frame_pack(&env, 1024, &frame, &len), FEDC_ETOOBIG);
  ck_assert_ptr_null(frame);

  ck_assert_int_eq(fedc_frame_pack(&env, 4096, &frame, &len), 0);
  ck_assert_uint_gt(len, sizeof(data) + FEDC_FRAME_HEADER_SIZE);
  ck_assert_uint_eq(((size_t)frame[2] << 8 | frame[3]),
                    len - FEDC_FRAME_HEADER_SIZE);
  ck_assert_uint_eq(frame[0], 0);
  ck_assert_uint_eq(frame[1], 0);
  free(frame);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("net_frame");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, frame_roundtrip_byte_by_byte);
  tcase_add_test(tc, frame_roundtrip_random_slices);
  tcase_add_test(tc, frame_roundtrip_whole_stream);
  tcase_add_test(tc, frame_oversized_rejected_before_alloc);
  tcase_add_test(tc, frame_limit_is_inclusive);
  tcase_add_test(tc, frame_buffer_grows_with_bytes);
  tcase_add_test(tc, frame_zero_length_rejected);
  tcase_add_test(tc, frame_garbage_payload_rejected);
  tcase_add_test(tc, frame_wrong_version_rejected);
  tcase_add_test(tc, frame_missing_body_rejected);
  tcase_add_test(tc, frame_pack_respects_max);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
