#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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

START_TEST(frame_limit_raised_between_frames)
{
  static const uint8_t small[] = { 0x00, 0x00, 0x00, 0x02, 0x08, 0x01 };
  static const uint8_t len_2000[] = { 0x00, 0x00, 0x07, 0xd0 };
  fedc_frame_decoder dec;
  size_t used;

  fedc_frame_decoder_init(&dec, 16);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, small, sizeof(small), &used),
                   1);
  fedc_frame_decoder_set_max(&dec, 4096);
  ck_assert_uint_eq(dec.max_len, 4096);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, len_2000, 4, &used), 0);
  ck_assert_uint_eq(dec.payload_len, 2000);
  fedc_frame_decoder_close(&dec);

  /* Without the raise the same header is rejected. */
  fedc_frame_decoder_init(&dec, 16);
  ck_assert_int_eq(fedc_frame_decoder_feed(&dec, len_2000, 4, &used),
                   FEDC_ETOOBIG);
  fedc_frame_decoder_close(&dec);
}
END_TEST

/* Writes an Envelope with a FitResult of count empty tensor specs by hand:
 * two bytes on the wire each, over a hundred bytes each once decoded. */
static uint8_t *empty_specs_payload(size_t count, size_t *len)
{
  size_t body = 2 * count;
  uint8_t *p = malloc(16 + body);
  size_t n = 0;

  ck_assert_ptr_nonnull(p);
  p[n++] = 0x08;                   /* protocol_version, varint */
  p[n++] = 0x01;
  p[n++] = 0x2a;                   /* fit_result, length-delimited */
  for (size_t v = body; ; v >>= 7) {
    p[n++] = (uint8_t)(v & 0x7f) | (v >= 0x80 ? 0x80 : 0);
    if (v < 0x80)
      break;
  }
  for (size_t i = 0; i < count; i++) {
    p[n++] = 0x22;                 /* update, length-delimited */
    p[n++] = 0x00;                 /* an empty TensorSpec */
  }
  *len = n;
  return p;
}

/* Returns the peak resident size of this process in bytes. */
static size_t peak_rss(void)
{
  struct rusage usage;

  ck_assert_int_eq(getrusage(RUSAGE_SELF, &usage), 0);
  return (size_t)usage.ru_maxrss * 1024;
}

START_TEST(frame_amplifying_payload_rejected)
{
  /* 16 MB of empty specs decoded to 838 MB before the budget. */
  size_t len, before, grown;
  uint8_t *payload = empty_specs_payload(8000000, &len);
  Fedc__Envelope *env = (Fedc__Envelope *)1;

  ck_assert_uint_gt(len, 15 * 1000 * 1000);
  before = peak_rss();
  ck_assert_int_eq(fedc_frame_unpack(payload, len, &env), FEDC_ETOOBIG);
  grown = peak_rss() - before;
  ck_assert_ptr_null(env);
  /* The budget is 8 times the payload plus 1 MiB; the sanitizers' shadow
   * memory and redzones may add up to the payload size again. */
  ck_assert_uint_le(grown, fedc_frame_unpack_budget(len) + len);
  free(payload);

  /* The same kind of message at a size that real models have decodes. */
  payload = empty_specs_payload(100, &len);
  ck_assert_int_eq(fedc_frame_unpack(payload, len, &env), 0);
  ck_assert_uint_eq(env->fit_result->n_update, 100);
  fedc_frame_envelope_free(&env);
  free(payload);
}
END_TEST

/* Packs env into a fresh buffer and unpacks it with fedc_frame_unpack(). */
static int pack_and_unpack(const Fedc__Envelope *env, Fedc__Envelope **out)
{
  size_t len = fedc__envelope__get_packed_size(env);
  uint8_t *buf = malloc(len);
  int rc;

  ck_assert_ptr_nonnull(buf);
  fedc__envelope__pack(env, buf);
  rc = fedc_frame_unpack(buf, len, out);
  free(buf);
  return rc;
}

START_TEST(frame_large_chunk_within_budget)
{
  const size_t size = 12 * 1024 * 1024;
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;
  Fedc__Envelope *out = NULL;
  uint8_t *data = malloc(size);

  ck_assert_ptr_nonnull(data);
  for (size_t i = 0; i < size; i++)
    data[i] = chunk_byte(3, i);
  chunk.round = 4;
  chunk.offset = 123456;
  chunk.data.data = data;
  chunk.data.len = size;
  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
  env.chunk = &chunk;

  ck_assert_int_eq(pack_and_unpack(&env, &out), 0);
  ck_assert_uint_eq(out->chunk->data.len, size);
  ck_assert_int_eq(memcmp(out->chunk->data.data, data, size), 0);
  fedc_frame_envelope_free(&out);
  free(data);
}
END_TEST

/* Packs and unpacks a FitResult that announces count tensors named
 * prefix0, prefix1 and so on. Each is 256 x 784 for rank 2, or a scalar
 * for rank 0. */
static int unpack_spec_list(size_t count, const char *prefix, size_t rank)
{
  static const uint64_t shape[2] = { 256, 784 };
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__FitResult result = FEDC__FIT_RESULT__INIT;
  Fedc__TensorSpec *specs = calloc(count, sizeof(*specs));
  Fedc__TensorSpec **list = calloc(count, sizeof(*list));
  char (*names)[64] = calloc(count, 64);
  Fedc__Envelope *out = NULL;
  int rc;

  ck_assert(specs != NULL && list != NULL && names != NULL);
  for (size_t i = 0; i < count; i++) {
    fedc__tensor_spec__init(&specs[i]);
    snprintf(names[i], 64, "%s%zu", prefix, i);
    specs[i].name = names[i];
    specs[i].n_shape = rank;
    specs[i].shape = (uint64_t *)shape;
    list[i] = &specs[i];
  }
  result.round = 3;
  result.num_examples = 600;
  result.n_update = count;
  result.update = list;
  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_FIT_RESULT;
  env.fit_result = &result;

  rc = pack_and_unpack(&env, &out);
  if (rc == 0) {
    ck_assert_uint_eq(out->fit_result->n_update, count);
    ck_assert_str_eq(out->fit_result->update[count - 1]->name,
                     names[count - 1]);
  }
  fedc_frame_envelope_free(&out);
  free(names);
  free(list);
  free(specs);
  return rc;
}

START_TEST(frame_spec_lists_within_budget)
{
  /* ResNet-152 has about 900 tensors; these lists are larger. */
  ck_assert_int_eq(unpack_spec_list(5000, "layer4.1.bn2.running_mean.", 2),
                   0);
  ck_assert_int_eq(unpack_spec_list(5000, "fc.", 2), 0);
  /* Scalars with short names need the most memory per wire byte. */
  ck_assert_int_eq(unpack_spec_list(5000, "w", 0), 0);
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
  tcase_add_test(tc, frame_limit_raised_between_frames);
  tcase_add_test(tc, frame_amplifying_payload_rejected);
  tcase_add_test(tc, frame_large_chunk_within_budget);
  tcase_add_test(tc, frame_spec_lists_within_budget);
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
