/* common/wire: chunk streams, their validation, spec checks, messages. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_testutil.h"
#include "util/error.h"
#include "wire/assembler.h"
#include "wire/chunker.h"
#include "wire/message.h"
#include "wire/spec.h"

static const fedc_spec_limits limits = { 64, 1 << 20 };

/* A model with awkward sizes: 15 floats, 7 doubles, 13 bytes and a
 * scalar int, filled with distinct values. */
static fedc_snapshot *odd_model(void)
{
  const uint64_t s_a[2] = { 3, 5 }, s_b[1] = { 7 }, s_c[1] = { 13 };
  float a[15];
  double b[7];
  uint8_t c[13];
  int32_t d = -7;
  fedc_tensor_list list;
  fedc_snapshot *snap = NULL;

  for (int i = 0; i < 15; i++)
    a[i] = (float)i * 0.5f - 3.0f;
  for (int i = 0; i < 7; i++)
    b[i] = 1e10 * i;
  for (int i = 0; i < 13; i++)
    c[i] = (uint8_t)(200 + i);
  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "a", FEDC_DTYPE_F32, 2, s_a, a),
                   0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "b", FEDC_DTYPE_F64, 1, s_b, b),
                   0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "c", FEDC_DTYPE_U8, 1, s_c, c),
                   0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "d", FEDC_DTYPE_I32, 0, NULL,
                                        &d), 0);
  ck_assert_int_eq(fedc_snapshot_new(&list, &snap), 0);
  return snap;
}

START_TEST(chunks_round_trip_odd_sizes)
{
  const size_t sizes[] = { 1, 3, 4, 5, 7, 9, 13, 64, 1000 };
  fedc_snapshot *snap = odd_model();
  const fedc_tensor_list *src = fedc_snapshot_tensors(snap);
  uint64_t total = fedc_tensor_list_nbytes(src);

  ck_assert_uint_eq(total, 15 * 4 + 7 * 8 + 13 + 4);
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    fedc_chunker *chunker = NULL;
    fedc_assembler *asm_ = NULL;
    fedc_tensor_list out;
    const Fedc__Envelope *env;
    uint64_t seen = 0;
    int rc = 0;

    ck_assert_int_eq(fedc_chunker_new(snap, 9, FEDC__STREAM_KIND__UPDATE,
                                      sizes[k], &chunker), 0);
    ck_assert_int_eq(fedc_assembler_new(9, FEDC__STREAM_KIND__UPDATE,
                                        fedc_snapshot_specs(snap), src->count,
                                        &limits, src, &asm_, NULL, 0), 0);
    while ((env = fedc_chunker_next(chunker)) != NULL) {
      const Fedc__TensorChunk *c = env->chunk;
      size_t elem = fedc_dtype_size(src->items[c->tensor_index].dtype);

      ck_assert_int_eq(env->body_case, FEDC__ENVELOPE__BODY_CHUNK);
      ck_assert_uint_eq(c->data.len % elem, 0);
      ck_assert(c->data.len <= sizes[k] || c->data.len == elem);
      ck_assert_int_eq(rc, 0);
      seen += c->data.len;
      ck_assert_uint_eq(fedc_chunker_remaining_bytes(chunker), total - seen);
      rc = fedc_assembler_add(asm_, c);
      ck_assert_int_eq(rc, c->last ? 1 : 0);
    }
    ck_assert_int_eq(rc, 1);
    ck_assert_uint_eq(seen, total);
    ck_assert_uint_eq(fedc_assembler_received_bytes(asm_), total);

    fedc_tensor_list_init(&out);
    ck_assert_int_eq(fedc_assembler_take(asm_, &out), 0);
    ck_assert_int_eq(fedc_tensor_list_check_layout(&out, src), 0);
    for (size_t t = 0; t < src->count; t++)
      ck_assert_mem_eq(out.items[t].data, src->items[t].data,
                       fedc_tensor_nbytes(&src->items[t]));
    fedc_tensor_list_close(&out);
    fedc_assembler_free(&asm_);
    fedc_chunker_free(&chunker);
  }
  fedc_snapshot_unref(&snap);
}
END_TEST

START_TEST(chunker_split_points)
{
  const float v[TEST_PARAMS] = { 1, 2, 3, 4, 5, 6 };
  fedc_snapshot *snap = test_snapshot(v);
  fedc_chunker *c = NULL;
  const Fedc__Envelope *env;

  /* 12-byte chunks: w splits into 3 + 1 elements, b fits in one chunk. */
  ck_assert_int_eq(fedc_chunker_new(snap, 3, FEDC__STREAM_KIND__GLOBAL_MODEL,
                                    12, &c), 0);
  env = fedc_chunker_next(c);
  ck_assert_uint_eq(env->chunk->round, 3);
  ck_assert_int_eq(env->chunk->stream, FEDC__STREAM_KIND__GLOBAL_MODEL);
  ck_assert_uint_eq(env->chunk->tensor_index, 0);
  ck_assert_uint_eq(env->chunk->offset, 0);
  ck_assert_uint_eq(env->chunk->data.len, 12);
  ck_assert(!env->chunk->last);
  env = fedc_chunker_next(c);
  ck_assert_uint_eq(env->chunk->tensor_index, 0);
  ck_assert_uint_eq(env->chunk->offset, 3);
  ck_assert_uint_eq(env->chunk->data.len, 4);
  ck_assert(!env->chunk->last);
  env = fedc_chunker_next(c);
  ck_assert_uint_eq(env->chunk->tensor_index, 1);
  ck_assert_uint_eq(env->chunk->offset, 0);
  ck_assert_uint_eq(env->chunk->data.len, 8);
  ck_assert(env->chunk->last);
  ck_assert_ptr_null(fedc_chunker_next(c));
  ck_assert_ptr_null(fedc_chunker_next(c));
  fedc_chunker_free(&c);
  fedc_snapshot_unref(&snap);
}
END_TEST

/* A valid first chunk of the test model's stream, 2 elements of "w". */
static float chunk_values[4] = { 1, 2, 3, 4 };

static Fedc__TensorChunk first_chunk(void)
{
  Fedc__TensorChunk c = FEDC__TENSOR_CHUNK__INIT;

  c.round = 5;
  c.stream = FEDC__STREAM_KIND__UPDATE;
  c.tensor_index = 0;
  c.offset = 0;
  c.data.data = (uint8_t *)chunk_values;
  c.data.len = 8;
  return c;
}

static fedc_assembler *test_assembler(fedc_snapshot **snap)
{
  const float v[TEST_PARAMS] = { 0 };
  fedc_assembler *a = NULL;

  *snap = test_snapshot(v);
  ck_assert_int_eq(fedc_assembler_new(5, FEDC__STREAM_KIND__UPDATE,
                                      fedc_snapshot_specs(*snap), 2, &limits,
                                      fedc_snapshot_tensors(*snap), &a, NULL,
                                      0), 0);
  return a;
}

/* Feeds one bad first chunk and expects err with text in the reason. */
static void expect_bad_first(Fedc__TensorChunk c, int err, const char *text)
{
  fedc_snapshot *snap = NULL;
  fedc_assembler *a = test_assembler(&snap);

  ck_assert_int_eq(fedc_assembler_add(a, &c), err);
  ck_assert_msg(strstr(fedc_assembler_reason(a), text) != NULL,
                "reason \"%s\" lacks \"%s\"", fedc_assembler_reason(a), text);
  /* A failed stream stays failed, even for a valid chunk. */
  c = first_chunk();
  ck_assert_int_eq(fedc_assembler_add(a, &c), FEDC_ESTATE);
  fedc_assembler_free(&a);
  fedc_snapshot_unref(&snap);
}

START_TEST(assembler_rejects_bad_position)
{
  Fedc__TensorChunk c;

  c = first_chunk();
  c.round = 4;
  expect_bad_first(c, FEDC_ESTALE, "round 4");
  c = first_chunk();
  c.stream = FEDC__STREAM_KIND__GLOBAL_MODEL;
  expect_bad_first(c, FEDC_EFORMAT, "stream kind");
  c = first_chunk();
  c.tensor_index = 1;
  expect_bad_first(c, FEDC_EFORMAT, "expected tensor 0");
  c = first_chunk();
  c.tensor_index = 7;
  expect_bad_first(c, FEDC_EFORMAT, "expected tensor 0");
  c = first_chunk();
  c.offset = 1;
  expect_bad_first(c, FEDC_EFORMAT, "expected offset 0");
}
END_TEST

START_TEST(assembler_rejects_bad_data)
{
  float bad[2] = { 1, NAN };
  Fedc__TensorChunk c;

  c = first_chunk();
  c.data.len = 6;
  expect_bad_first(c, FEDC_EFORMAT, "multiple of 4");
  c = first_chunk();
  c.data.len = 0;
  expect_bad_first(c, FEDC_EFORMAT, "multiple of 4");
  c = first_chunk();
  c.data.len = 20;
  c.data.data = (uint8_t *)(float[5]){ 0 };
  expect_bad_first(c, FEDC_EFORMAT, "past the end");
  c = first_chunk();
  c.data.data = (uint8_t *)bad;
  expect_bad_first(c, FEDC_ENONFINITE, "NaN or Inf");
  bad[1] = -INFINITY;
  expect_bad_first(c, FEDC_ENONFINITE, "NaN or Inf");
  c = first_chunk();
  c.last = 1;
  expect_bad_first(c, FEDC_EFORMAT, "last flag before the end");
}
END_TEST

/* A whole stream passed in memory: accepted when it is the announced one,
 * rejected for every mismatch, and once only, never after a chunk. */
START_TEST(assembler_checks_whole_stream)
{
  static const struct {
    uint64_t round;
    Fedc__StreamKind kind;
    int rc;
    const char *reason;
  } cases[] = {
    { 3, FEDC__STREAM_KIND__UPDATE, 1, "" },
    { 4, FEDC__STREAM_KIND__UPDATE, FEDC_ESTALE, "round 4" },
    { 3, FEDC__STREAM_KIND__GLOBAL_MODEL, FEDC_EFORMAT, "kind" },
  };
  fedc_snapshot *model = odd_model();
  fedc_snapshot *other = test_snapshot((const float[TEST_PARAMS]){ 0 });
  Fedc__TensorSpec **specs = fedc_snapshot_specs(model);
  fedc_chunker *chunks = NULL;
  fedc_assembler *a = NULL;

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ck_assert_int_eq(fedc_assembler_new(3, FEDC__STREAM_KIND__UPDATE, specs,
                                        4, &limits, NULL, &a, NULL, 0), 0);
    ck_assert_int_eq(fedc_assembler_check_snapshot(a, cases[i].round,
                                                   cases[i].kind, model),
                     cases[i].rc);
    ck_assert_msg(strstr(fedc_assembler_reason(a), cases[i].reason),
                  "reason \"%s\"", fedc_assembler_reason(a));
    if (cases[i].rc == 1)
      ck_assert_uint_eq(fedc_assembler_received_bytes(a),
                        fedc_assembler_total_bytes(a));
    ck_assert_int_eq(fedc_assembler_check_snapshot(a, 3,
                                                   FEDC__STREAM_KIND__UPDATE,
                                                   model), FEDC_ESTATE);
    fedc_assembler_free(&a);
  }

  /* Other tensors than the announced ones, and NaN in the right ones. */
  ck_assert_int_eq(fedc_assembler_new(3, FEDC__STREAM_KIND__UPDATE, specs, 4,
                                      &limits, NULL, &a, NULL, 0), 0);
  ck_assert_int_eq(fedc_assembler_check_snapshot(
                     a, 3, FEDC__STREAM_KIND__UPDATE, other), FEDC_EFORMAT);
  fedc_assembler_free(&a);
  ((float *)fedc_snapshot_mutable(model)->items[0].data)[14] = NAN;
  ck_assert_int_eq(fedc_assembler_new(3, FEDC__STREAM_KIND__UPDATE, specs, 4,
                                      &limits, NULL, &a, NULL, 0), 0);
  ck_assert_int_eq(fedc_assembler_check_snapshot(
                     a, 3, FEDC__STREAM_KIND__UPDATE, model),
                   FEDC_ENONFINITE);
  fedc_assembler_free(&a);
  ((float *)fedc_snapshot_mutable(model)->items[0].data)[14] = 1.0f;

  /* After a chunk, the stream can no longer come whole. */
  ck_assert_int_eq(fedc_assembler_new(3, FEDC__STREAM_KIND__UPDATE, specs, 4,
                                      &limits, NULL, &a, NULL, 0), 0);
  ck_assert_int_eq(fedc_chunker_new(model, 3, FEDC__STREAM_KIND__UPDATE, 8,
                                    &chunks), 0);
  ck_assert_int_eq(fedc_assembler_add(a, fedc_chunker_next(chunks)->chunk),
                   0);
  ck_assert_int_eq(fedc_assembler_check_snapshot(a, 3,
                                                 FEDC__STREAM_KIND__UPDATE,
                                                 model), FEDC_ESTATE);
  fedc_assembler_free(&a);
  fedc_chunker_free(&chunks);
  fedc_snapshot_unref(&other);
  fedc_snapshot_unref(&model);
}
END_TEST

START_TEST(assembler_rejects_bad_order)
{
  fedc_snapshot *snap = NULL;
  fedc_assembler *a = test_assembler(&snap);
  Fedc__TensorChunk c = first_chunk();

  /* The same chunk twice: the second is at the wrong offset. */
  ck_assert_int_eq(fedc_assembler_add(a, &c), 0);
  ck_assert_int_eq(fedc_assembler_add(a, &c), FEDC_EFORMAT);
  ck_assert_ptr_nonnull(strstr(fedc_assembler_reason(a), "expected offset 2"));
  fedc_assembler_free(&a);
  fedc_snapshot_unref(&snap);

  /* The whole stream without the last flag. */
  a = test_assembler(&snap);
  c.data.len = 16;
  ck_assert_int_eq(fedc_assembler_add(a, &c), 0);
  c.tensor_index = 1;
  c.data.len = 8;
  ck_assert_int_eq(fedc_assembler_add(a, &c), FEDC_EFORMAT);
  ck_assert_ptr_nonnull(strstr(fedc_assembler_reason(a), "without the last"));
  fedc_assembler_free(&a);
  fedc_snapshot_unref(&snap);

  /* A chunk after the end of a complete stream. */
  a = test_assembler(&snap);
  c = first_chunk();
  c.data.len = 16;
  ck_assert_int_eq(fedc_assembler_add(a, &c), 0);
  c.tensor_index = 1;
  c.data.len = 8;
  c.last = 1;
  ck_assert_int_eq(fedc_assembler_add(a, &c), 1);
  ck_assert_int_eq(fedc_assembler_add(a, &c), FEDC_ESTATE);
  fedc_assembler_free(&a);
  fedc_snapshot_unref(&snap);
}
END_TEST

/* One spec with name, dtype and shape, for the spec-check table. */
typedef struct spec_case {
  const char *name;
  Fedc__DType dtype;
  size_t ndim;
  uint64_t shape[10];
} spec_case;

static int check_specs(const spec_case *cases, size_t n, char *reason,
                       size_t len)
{
  Fedc__TensorSpec items[4];
  Fedc__TensorSpec *specs[4];

  for (size_t i = 0; i < n; i++) {
    fedc__tensor_spec__init(&items[i]);
    items[i].name = (char *)cases[i].name;
    items[i].dtype = cases[i].dtype;
    items[i].n_shape = cases[i].ndim;
    items[i].shape = (uint64_t *)cases[i].shape;
    specs[i] = &items[i];
  }
  return fedc_spec_check(specs, n, &limits, NULL, reason, len);
}

static void expect_spec(spec_case c, int err, const char *text)
{
  char reason[160] = "";
  spec_case list[2] = { { "ok", FEDC__DTYPE__F32, 1, { 2 } }, c };

  ck_assert_int_eq(check_specs(list, 2, reason, sizeof(reason)), err);
  ck_assert_msg(strstr(reason, text) != NULL, "reason \"%s\" lacks \"%s\"",
                reason, text);
}

START_TEST(spec_check_rejects_bad_specs)
{
  const uint64_t big = UINT64_C(1) << 40;
  char reason[160];

  expect_spec((spec_case){ "x", FEDC__DTYPE__F32, 9, { 1 } }, FEDC_EFORMAT,
              "9 dimensions");
  expect_spec((spec_case){ "x", FEDC__DTYPE__F32, 2, { 3, 0 } }, FEDC_EFORMAT,
              "size 0");
  expect_spec((spec_case){ "x", FEDC__DTYPE__F32, 2, { big, big } },
              FEDC_EOVERFLOW, "overflows");
  expect_spec((spec_case){ "x", FEDC__DTYPE__F32, 1, { 1 << 20 } },
              FEDC_ETOOBIG, "exceed");
  expect_spec((spec_case){ "x", (Fedc__DType)9, 1, { 1 } }, FEDC_EFORMAT,
              "unknown dtype");
  expect_spec((spec_case){ "x", FEDC__DTYPE__DTYPE_UNSPECIFIED, 1, { 1 } },
              FEDC_EFORMAT, "unknown dtype");
  expect_spec((spec_case){ "ok", FEDC__DTYPE__F32, 1, { 1 } }, FEDC_EFORMAT,
              "appears twice");
  expect_spec((spec_case){ "", FEDC__DTYPE__F32, 1, { 1 } }, FEDC_EFORMAT,
              "name");
  expect_spec((spec_case){ "a b", FEDC__DTYPE__F32, 1, { 1 } }, FEDC_EFORMAT,
              "non-printable");
  expect_spec((spec_case){ "a\nb", FEDC__DTYPE__F32, 1, { 1 } }, FEDC_EFORMAT,
              "non-printable");
  ck_assert_int_eq(check_specs(NULL, 0, reason, sizeof(reason)),
                   FEDC_EFORMAT);
}
END_TEST

START_TEST(spec_check_accepts_scalar_and_limits)
{
  spec_case ok[2] = { { "w.0", FEDC__DTYPE__F64, 3, { 2, 3, 4 } },
                      { "s", FEDC__DTYPE__U8, 0, { 0 } } };
  Fedc__TensorSpec a, *specs[1] = { &a };
  fedc_spec_limits one = { 1, 8 };
  uint64_t total = 0;

  ck_assert_int_eq(check_specs(ok, 2, NULL, 0), 0);
  fedc__tensor_spec__init(&a);
  a.name = "x";
  a.dtype = FEDC__DTYPE__F64;
  ck_assert_int_eq(fedc_spec_check(specs, 1, &one, &total, NULL, 0), 0);
  ck_assert_uint_eq(total, 8);
  one.max_bytes = 7;
  ck_assert_int_eq(fedc_spec_check(specs, 1, &one, NULL, NULL, 0),
                   FEDC_ETOOBIG);
  ck_assert_int_eq(check_specs(ok, 2, NULL, 0), 0);
  ck_assert_int_eq(fedc_spec_check((Fedc__TensorSpec *[2]){ &a, &a }, 2, &one,
                                   NULL, NULL, 0), FEDC_ETOOBIG);
}
END_TEST

/* Builds specs for the test model with one change made by edit. */
static int layout_with(void (*edit)(Fedc__TensorSpec *items, size_t *n))
{
  const float v[TEST_PARAMS] = { 0 };
  fedc_snapshot *snap = test_snapshot(v);
  uint64_t w_shape[2] = { 2, 2 }, b_shape[1] = { 2 };
  Fedc__TensorSpec items[3];
  Fedc__TensorSpec *specs[3] = { &items[0], &items[1], &items[2] };
  fedc_assembler *a = NULL;
  char reason[FEDC_ASSEMBLER_REASON_MAX];
  size_t n = 2;
  int rc;

  for (int i = 0; i < 3; i++)
    fedc__tensor_spec__init(&items[i]);
  items[0].name = "w";
  items[0].dtype = FEDC__DTYPE__F32;
  items[0].n_shape = 2;
  items[0].shape = w_shape;
  items[1].name = "b";
  items[1].dtype = FEDC__DTYPE__F32;
  items[1].n_shape = 1;
  items[1].shape = b_shape;
  items[2] = items[1];
  items[2].name = "extra";
  edit(items, &n);

  rc = fedc_assembler_new(1, FEDC__STREAM_KIND__UPDATE, specs, n, &limits,
                          fedc_snapshot_tensors(snap), &a, reason,
                          sizeof(reason));
  ck_assert(rc == 0 || reason[0] != '\0');
  fedc_assembler_free(&a);
  fedc_snapshot_unref(&snap);
  return rc;
}

static void edit_none(Fedc__TensorSpec *s, size_t *n) { (void)s; (void)n; }
static void edit_rename(Fedc__TensorSpec *s, size_t *n) { s[1].name = "c"; }
static void edit_missing(Fedc__TensorSpec *s, size_t *n) { *n = 1; }
static void edit_extra(Fedc__TensorSpec *s, size_t *n) { *n = 3; }
static void edit_dtype(Fedc__TensorSpec *s, size_t *n)
{
  s[1].dtype = FEDC__DTYPE__F64;
}
static void edit_shape(Fedc__TensorSpec *s, size_t *n) { s[0].n_shape = 1; }
static void edit_swap(Fedc__TensorSpec *s, size_t *n)
{
  Fedc__TensorSpec t = s[0];

  s[0] = s[1];
  s[1] = t;
}

START_TEST(layout_mismatch_is_eshape)
{
  ck_assert_int_eq(layout_with(edit_none), 0);
  ck_assert_int_eq(layout_with(edit_rename), FEDC_ESHAPE);
  ck_assert_int_eq(layout_with(edit_missing), FEDC_ESHAPE);
  ck_assert_int_eq(layout_with(edit_extra), FEDC_ESHAPE);
  ck_assert_int_eq(layout_with(edit_dtype), FEDC_ESHAPE);
  ck_assert_int_eq(layout_with(edit_shape), FEDC_ESHAPE);
  ck_assert_int_eq(layout_with(edit_swap), FEDC_ESHAPE);
}
END_TEST

/* Packs and unpacks an envelope, as the daemons do on the wire. */
static Fedc__Envelope *wire_copy(const Fedc__Envelope *env)
{
  size_t len = fedc__envelope__get_packed_size(env);
  uint8_t *buf = malloc(len);
  Fedc__Envelope *back;

  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fedc__envelope__pack(env, buf), len);
  back = fedc__envelope__unpack(NULL, len, buf);
  free(buf);
  ck_assert_ptr_nonnull(back);
  return back;
}

START_TEST(messages_survive_packing)
{
  const float v[TEST_PARAMS] = { 0 };
  fedc_snapshot *snap = test_snapshot(v);
  fedc_train_config train = { .local_epochs = 2, .batch_size = 16,
                              .learning_rate = 0.5f, .seed = 9,
                              .optimizer = FEDC_OPT_ADAMW, .beta2 = 0.98f,
                              .lr_schedule = FEDC_LR_COSINE,
                              .lr_min = 0.01f, .clip_norm = 5.0f };
  fedc_train_config received;
  fedc_hello_info info = { .client_id = "c-1", .num_examples = 600,
                           .trainer = "builtin", .platform = "linux",
                           .cpu_cores = 4, .relative_speed = 0.5 };
  fedc_message *m = NULL;
  Fedc__Envelope *back;

  ck_assert_int_eq(fedc_message_fit_task(3, &train, "mlp:4:2", snap, &m), 0);
  fedc_snapshot_unref(&snap);   /* the message keeps its own reference */
  back = wire_copy(fedc_message_envelope(m));
  ck_assert_uint_eq(back->protocol_version, FEDC_PROTOCOL_VERSION);
  ck_assert_int_eq(back->body_case, FEDC__ENVELOPE__BODY_FIT_TASK);
  ck_assert_uint_eq(back->fit_task->round, 3);
  ck_assert_str_eq(back->fit_task->config->model_spec, "mlp:4:2");
  ck_assert_uint_eq(back->fit_task->config->batch_size, 16);
  ck_assert_float_eq(back->fit_task->config->learning_rate, 0.5f);
  ck_assert_uint_eq(back->fit_task->n_model, 2);
  ck_assert_str_eq(back->fit_task->model[1]->name, "b");
  ck_assert_uint_eq(back->fit_task->model[0]->shape[1], 2);
  fedc_message_train_config(back->fit_task->config, &received);
  ck_assert_uint_eq(received.local_epochs, 2);
  ck_assert_int_eq(received.optimizer, FEDC_OPT_ADAMW);
  ck_assert_float_eq(received.beta2, 0.98f);
  ck_assert_int_eq(received.lr_schedule, FEDC_LR_COSINE);
  ck_assert_float_eq(received.lr_min, 0.01f);
  ck_assert_float_eq(received.clip_norm, 5.0f);
  fedc__envelope__free_unpacked(back, NULL);
  fedc_message_free(&m);
  ck_assert_ptr_null(m);

  ck_assert_int_eq(fedc_message_hello(&info, &m), 0);
  back = wire_copy(fedc_message_envelope(m));
  ck_assert_str_eq(back->hello->client_id, "c-1");
  ck_assert_uint_eq(back->hello->num_examples, 600);
  ck_assert_str_eq(back->hello->capabilities->trainers[0], "builtin");
  ck_assert_uint_eq(back->hello->device->cpu_cores, 4);
  fedc__envelope__free_unpacked(back, NULL);
  fedc_message_free(&m);

  ck_assert_int_eq(fedc_message_error(FEDC__ERROR_CODE__STALE_ROUND, "late",
                                      4, &m), 0);
  back = wire_copy(fedc_message_envelope(m));
  ck_assert_int_eq(back->error->code, FEDC__ERROR_CODE__STALE_ROUND);
  ck_assert_str_eq(back->error->message, "late");
  ck_assert_uint_eq(back->error->round, 4);
  fedc__envelope__free_unpacked(back, NULL);
  fedc_message_free(&m);
}
END_TEST

START_TEST(message_limits)
{
  char long_id[FEDC_ID_MAX + 2];
  fedc_message_metric metrics[FEDC_MESSAGE_MAX_METRICS + 1] = { { "m", 1 } };
  fedc_hello_info info = { .client_id = long_id };
  const float v[TEST_PARAMS] = { 0 };
  fedc_snapshot *snap = test_snapshot(v);
  fedc_message *m = NULL;

  memset(long_id, 'x', sizeof(long_id) - 1);
  long_id[sizeof(long_id) - 1] = '\0';
  ck_assert_int_eq(fedc_message_hello(&info, &m), FEDC_EINVAL);
  ck_assert_ptr_null(m);
  ck_assert_int_eq(fedc_message_fit_result(1, 1, metrics,
                                           FEDC_MESSAGE_MAX_METRICS + 1, snap,
                                           &m), FEDC_EINVAL);
  ck_assert_ptr_null(m);
  fedc_snapshot_unref(&snap);
}
END_TEST

/* Every holder of a shared message frees its own reference, and the
 * message stays readable until the last one goes (ASan checks the rest). */
START_TEST(message_shared_by_reference)
{
  fedc_message *bye = NULL, *second, *third;

  ck_assert_int_eq(fedc_message_goodbye("done", &bye), 0);
  second = fedc_message_ref(bye);
  third = fedc_message_ref(bye);
  ck_assert_ptr_eq(second, bye);
  fedc_message_free(&bye);
  ck_assert_ptr_null(bye);
  fedc_message_free(&second);
  ck_assert_str_eq(fedc_message_envelope(third)->goodbye->reason, "done");
  fedc_message_free(&third);
  ck_assert_ptr_null(third);
}
END_TEST

START_TEST(snapshot_is_mutable_only_alone)
{
  const float v[TEST_PARAMS] = { 1, 2, 3, 4, 5, 6 };
  fedc_snapshot *snap = test_snapshot(v);
  fedc_snapshot *other = fedc_snapshot_ref(snap);
  fedc_tensor_list empty;

  ck_assert_ptr_null(fedc_snapshot_mutable(snap));
  fedc_snapshot_unref(&other);
  ck_assert_ptr_null(other);
  ck_assert_ptr_nonnull(fedc_snapshot_mutable(snap));
  ck_assert_str_eq(fedc_snapshot_specs(snap)[0]->name, "w");
  ck_assert_uint_eq(fedc_snapshot_specs(snap)[1]->n_shape, 1);
  fedc_snapshot_unref(&snap);
  fedc_snapshot_unref(&snap);

  fedc_tensor_list_init(&empty);
  ck_assert_int_eq(fedc_snapshot_new(&empty, &snap), FEDC_EINVAL);
  ck_assert_ptr_null(snap);
}
END_TEST

/* The cached norm is the list's until the tensors are requested for
 * writing. Finiteness follows the norm for F32 tensors, and an F64 value
 * too large to square is still finite. */
START_TEST(snapshot_keeps_norm)
{
  const float values[TEST_PARAMS] = { 3, 4, 0, 0, 12, 0 };
  fedc_snapshot *floats = test_snapshot(values);
  fedc_snapshot *mixed = odd_model();
  fedc_tensor_list *w;

  ck_assert_double_eq(fedc_snapshot_norm(floats), 13.0);
  ck_assert_int_eq(fedc_snapshot_check_finite(floats), 0);
  w = fedc_snapshot_mutable(floats);
  ((float *)w->items[0].data)[1] = INFINITY;
  ck_assert(isinf(fedc_snapshot_norm(floats)));
  ck_assert_int_eq(fedc_snapshot_check_finite(floats), FEDC_ENONFINITE);
  w = fedc_snapshot_mutable(floats);
  ((float *)w->items[0].data)[1] = 4.0f;
  ck_assert_double_eq(fedc_snapshot_norm(floats), 13.0);

  ck_assert_double_eq(fedc_snapshot_norm(mixed),
                      fedc_tensor_list_norm(fedc_snapshot_tensors(mixed)));
  w = fedc_snapshot_mutable(mixed);
  ((double *)w->items[1].data)[3] = 1e300;
  ck_assert_int_eq(fedc_snapshot_check_finite(mixed), 0);
  ck_assert(isinf(fedc_snapshot_norm(mixed)));
  w = fedc_snapshot_mutable(mixed);
  ((double *)w->items[1].data)[3] = NAN;
  ck_assert_int_eq(fedc_snapshot_check_finite(mixed), FEDC_ENONFINITE);
  fedc_snapshot_unref(&mixed);
  fedc_snapshot_unref(&floats);
}
END_TEST

/* A snapshot of weights - base contains the differences and caches their
 * norm. A NaN difference leaves the weights with the caller. */
START_TEST(snapshot_of_difference)
{
  const float weights[TEST_PARAMS] = { 4, 6, 1, 1, 13, 1 };
  const float base[TEST_PARAMS] = { 1, 2, 1, 1, 1, 1 };
  fedc_tensor_list w, b;
  fedc_snapshot *update = NULL;
  const float *x;

  fedc_tensor_list_init(&w);
  fedc_tensor_list_init(&b);
  test_model(&w, weights);
  test_model(&b, base);
  ck_assert_int_eq(fedc_snapshot_new_difference(&w, &b, &update), 0);
  ck_assert_uint_eq(w.count, 0);
  x = fedc_snapshot_tensors(update)->items[0].data;
  ck_assert_float_eq(x[0], 3.0f);
  ck_assert_float_eq(x[1], 4.0f);
  ck_assert_double_eq(fedc_snapshot_norm(update), 13.0);
  ck_assert_double_eq(fedc_snapshot_norm(update),
                      fedc_tensor_list_norm(fedc_snapshot_tensors(update)));
  fedc_snapshot_unref(&update);

  fedc_tensor_list_init(&w);
  test_model(&w, weights);
  ((float *)b.items[1].data)[0] = NAN;
  ck_assert_int_eq(fedc_snapshot_new_difference(&w, &b, &update),
                   FEDC_ENONFINITE);
  ck_assert_ptr_null(update);
  ck_assert_uint_eq(w.count, 2);
  fedc_tensor_list_close(&w);
  fedc_tensor_list_close(&b);
}
END_TEST

static Suite *wire_suite(void)
{
  Suite *s = suite_create("wire");
  TCase *tc = tcase_create("core");

  tcase_add_test(tc, chunks_round_trip_odd_sizes);
  tcase_add_test(tc, chunker_split_points);
  tcase_add_test(tc, assembler_rejects_bad_position);
  tcase_add_test(tc, assembler_rejects_bad_data);
  tcase_add_test(tc, assembler_rejects_bad_order);
  tcase_add_test(tc, assembler_checks_whole_stream);
  tcase_add_test(tc, spec_check_rejects_bad_specs);
  tcase_add_test(tc, spec_check_accepts_scalar_and_limits);
  tcase_add_test(tc, layout_mismatch_is_eshape);
  tcase_add_test(tc, messages_survive_packing);
  tcase_add_test(tc, message_limits);
  tcase_add_test(tc, message_shared_by_reference);
  tcase_add_test(tc, snapshot_is_mutable_only_alone);
  tcase_add_test(tc, snapshot_keeps_norm);
  tcase_add_test(tc, snapshot_of_difference);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(wire_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
