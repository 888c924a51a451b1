#include <check.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_support.h"
#include "tensor/safetensors.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

#define PYTHON "/usr/bin/python3"

/* Builds the tensors and metadata that numpy_interop.py expects. */
static void expected_list(fedc_tensor_list *list, fedc_metadata *meta)
{
  const uint64_t weight_shape[2] = { 2, 3 }, bias_shape[1] = { 3 };
  const uint64_t ids_shape[1] = { 4 }, pixels_shape[3] = { 2, 2, 2 };
  const uint64_t empty_shape[2] = { 0, 4 };
  const double bias[3] = { 1e-300, -2.5, 3.0 };
  const int32_t ids[4] = { INT32_MIN, -1, 0, INT32_MAX };
  const int64_t step = -(INT64_C(1) << 40) - 3;
  float weight[6];
  uint8_t pixels[8];

  for (int i = 0; i < 6; i++)
    weight[i] = (float)i * 0.5f - 1.0f;
  for (int i = 0; i < 8; i++)
    pixels[i] = (uint8_t)(i * 31);

  fedc_tensor_list_init(list);
  ck_assert_int_eq(fedc_tensor_list_add(list, "weight", FEDC_DTYPE_F32, 2,
                                        weight_shape, weight), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "bias", FEDC_DTYPE_F64, 1,
                                        bias_shape, bias), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "ids", FEDC_DTYPE_I32, 1,
                                        ids_shape, ids), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "step", FEDC_DTYPE_I64, 0,
                                        NULL, &step), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "pixels", FEDC_DTYPE_U8, 3,
                                        pixels_shape, pixels), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "empty", FEDC_DTYPE_F32, 2,
                                        empty_shape, NULL), 0);

  fedc_metadata_init(meta);
  ck_assert_int_eq(fedc_metadata_set(meta, "num_classes", "10"), 0);
  ck_assert_int_eq(fedc_metadata_set(meta, "note",
                                     "quote \" backslash \\ newline \n "
                                     "e-acute \xc3\xa9 snowman \xe2\x98\x83 "
                                     "clef \xf0\x9d\x84\x9e"), 0);
}

/* Asserts that two lists hold the same tensors with the same bytes. */
static void assert_lists_equal(const fedc_tensor_list *a,
                               const fedc_tensor_list *b)
{
  ck_assert_int_eq(fedc_tensor_list_check_layout(a, b), 0);
  for (size_t i = 0; i < a->count; i++)
    ck_assert_mem_eq(a->items[i].data, b->items[i].data,
                     fedc_tensor_nbytes(&a->items[i]));
}

static void assert_metadata_equal(const fedc_metadata *a,
                                  const fedc_metadata *b)
{
  ck_assert_uint_eq(a->count, b->count);
  for (size_t i = 0; i < a->count; i++) {
    const char *value = fedc_metadata_get(b, a->keys[i]);

    ck_assert_ptr_nonnull(value);
    ck_assert_str_eq(value, a->values[i]);
  }
}

START_TEST(metadata_set_get_replace)
{
  fedc_metadata meta;

  fedc_metadata_init(&meta);
  ck_assert_ptr_null(fedc_metadata_get(&meta, "a"));
  ck_assert_int_eq(fedc_metadata_set(&meta, "a", "1"), 0);
  ck_assert_int_eq(fedc_metadata_set(&meta, "b", "2"), 0);
  ck_assert_int_eq(fedc_metadata_set(&meta, "a", "3"), 0);
  ck_assert_uint_eq(meta.count, 2);
  ck_assert_str_eq(fedc_metadata_get(&meta, "a"), "3");
  ck_assert_str_eq(fedc_metadata_get(&meta, "b"), "2");
  fedc_metadata_close(&meta);
  ck_assert_uint_eq(meta.count, 0);
}
END_TEST

START_TEST(encode_decode_round_trip)
{
  fedc_tensor_list list, back;
  fedc_metadata meta, meta_back;
  uint8_t *buf;
  size_t len;
  uint64_t header_len = 0;

  expected_list(&list, &meta);
  ck_assert_int_eq(fedc_safetensors_encode(&list, &meta, &buf, &len), 0);
  for (int i = 7; i >= 0; i--)
    header_len = (header_len << 8) | buf[i];
  ck_assert_uint_eq((8 + header_len) % 8, 0);
  ck_assert_uint_eq(len, 8 + header_len + fedc_tensor_list_nbytes(&list));

  fedc_tensor_list_init(&back);
  fedc_metadata_init(&meta_back);
  ck_assert_int_eq(fedc_safetensors_decode(buf, len, &back, &meta_back), 0);
  assert_lists_equal(&list, &back);
  assert_metadata_equal(&meta, &meta_back);

  /* Decoding again replaces what the list and metadata held. */
  ck_assert_int_eq(fedc_safetensors_decode(buf, len, &back, NULL), 0);
  ck_assert_uint_eq(back.count, list.count);

  free(buf);
  fedc_tensor_list_close(&list);
  fedc_tensor_list_close(&back);
  fedc_metadata_close(&meta);
  fedc_metadata_close(&meta_back);
}
END_TEST

/* Returns the number of entries in folder, "." and ".." excluded. */
static int count_entries(const char *folder)
{
  DIR *dir = opendir(folder);
  struct dirent *e;
  int count = 0;

  ck_assert_ptr_nonnull(dir);
  while ((e = readdir(dir)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      count++;
  closedir(dir);
  return count;
}

START_TEST(write_read_round_trip)
{
  fedc_tensor_list list, back;
  fedc_metadata meta, meta_back;
  char *dir = test_mkdtemp(), *path;
  struct stat st;

  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&path, "%s/model.safetensors", dir), 0);
  expected_list(&list, &meta);
  ck_assert_int_eq(fedc_safetensors_write(path, &list, &meta), 0);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 0777, 0600);

  /* Writing again replaces the file whole and leaves no temporary file. */
  ck_assert_int_eq(fedc_safetensors_write(path, &list, NULL), 0);
  ck_assert_int_eq(count_entries(dir), 1);
  fedc_tensor_list_init(&back);
  fedc_metadata_init(&meta_back);
  ck_assert_int_eq(fedc_safetensors_read(path, &back, &meta_back), 0);
  assert_lists_equal(&list, &back);
  ck_assert_uint_eq(meta_back.count, 0);

  free(path);
  ck_assert_int_ge(asprintf(&path, "%s/missing.safetensors", dir), 0);
  ck_assert_int_eq(fedc_safetensors_read(path, &back, NULL), FEDC_ENOENT);
  free(path);
  ck_assert_int_ge(asprintf(&path, "%s/no/such/folder.safetensors", dir), 0);
  ck_assert_int_eq(fedc_safetensors_write(path, &list, NULL), FEDC_ENOENT);

  free(path);
  test_rmtree(dir);
  free(dir);
  fedc_tensor_list_close(&list);
  fedc_tensor_list_close(&back);
  fedc_metadata_close(&meta);
  fedc_metadata_close(&meta_back);
}
END_TEST

START_TEST(numpy_reads_fedc_file)
{
  fedc_tensor_list list;
  fedc_metadata meta;
  char *dir = test_mkdtemp(), *path;
  const char *argv[] = { PYTHON, NUMPY_INTEROP_SCRIPT, "check", NULL, NULL };

  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&path, "%s/fedc.safetensors", dir), 0);
  expected_list(&list, &meta);
  ck_assert_int_eq(fedc_safetensors_write(path, &list, &meta), 0);
  argv[3] = path;
  ck_assert_int_eq(test_spawn(argv, NULL), 0);

  free(path);
  test_rmtree(dir);
  free(dir);
  fedc_tensor_list_close(&list);
  fedc_metadata_close(&meta);
}
END_TEST

START_TEST(fedc_reads_numpy_file)
{
  fedc_tensor_list want, got;
  fedc_metadata meta_want, meta_got;
  char *dir = test_mkdtemp(), *path;
  const char *argv[] = { PYTHON, NUMPY_INTEROP_SCRIPT, "write", NULL, NULL };

  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&path, "%s/numpy.safetensors", dir), 0);
  argv[3] = path;
  ck_assert_int_eq(test_spawn(argv, NULL), 0);

  expected_list(&want, &meta_want);
  fedc_tensor_list_init(&got);
  fedc_metadata_init(&meta_got);
  ck_assert_int_eq(fedc_safetensors_read(path, &got, &meta_got), 0);
  assert_lists_equal(&want, &got);
  assert_metadata_equal(&meta_want, &meta_got);

  free(path);
  test_rmtree(dir);
  free(dir);
  fedc_tensor_list_close(&want);
  fedc_tensor_list_close(&got);
  fedc_metadata_close(&meta_want);
  fedc_metadata_close(&meta_got);
}
END_TEST

/* Returns a malloc'ed buffer: the 8-byte length of json (or declared_len
 * when it is not UINT64_MAX), json, then data_len bytes of 0xab. */
static uint8_t *make_buffer(const char *json, uint64_t declared_len,
                            size_t data_len, size_t *len)
{
  size_t json_len = strlen(json);
  uint64_t header_len = declared_len != UINT64_MAX ? declared_len : json_len;
  uint8_t *buf = malloc(8 + json_len + data_len + 1);

  ck_assert_ptr_nonnull(buf);
  for (int i = 0; i < 8; i++)
    buf[i] = (uint8_t)(header_len >> (8 * i));
  memcpy(buf + 8, json, json_len);
  memset(buf + 8 + json_len, 0xab, data_len);
  *len = 8 + json_len + data_len;
  return buf;
}

#define U8_ONE "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}"
#define F32_AT(b, e) "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" \
                     #b "," #e "]}"

static const struct malformed_case {
  const char *what;
  const char *json;
  uint64_t declared_len;    /* UINT64_MAX: the JSON's own length */
  size_t data_len;
} malformed_cases[] = {
  { "header length beyond buffer", "{}", 1000, 0 },
  { "header length 2^64-2", "{}", UINT64_MAX - 1, 0 },
  { "header length zero", "{}", 0, 0 },
  { "truncated header", "{\"a\":" U8_ONE, 20, 1 },
  { "header not an object", "[]", UINT64_MAX, 0 },
  { "trailing comma", "{\"a\":" U8_ONE ",}", UINT64_MAX, 1 },
  { "missing colon", "{\"a\"" U8_ONE "}", UINT64_MAX, 1 },
  { "unquoted key", "{a:" U8_ONE "}", UINT64_MAX, 1 },
  { "text after object", "{} x", UINT64_MAX, 0 },
  { "unterminated string", "{\"a", UINT64_MAX, 0 },
  { "unknown dtype", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[1],"
    "\"data_offsets\":[0,2]}}", UINT64_MAX, 2 },
  { "dtype not a string", "{\"a\":{\"dtype\":5,\"shape\":[1],"
    "\"data_offsets\":[0,1]}}", UINT64_MAX, 1 },
  { "missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}",
    UINT64_MAX, 1 },
  { "missing shape", "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}",
    UINT64_MAX, 1 },
  { "repeated field", "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\","
    "\"shape\":[1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1 },
  { "shape larger than span", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
    "\"data_offsets\":[0,4]}}", UINT64_MAX, 4 },
  { "shape smaller than span", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
    "\"data_offsets\":[0,8]}}", UINT64_MAX, 8 },
  { "negative dimension", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],"
    "\"data_offsets\":[0,1]}}", UINT64_MAX, 1 },
  { "fractional dimension", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],"
    "\"data_offsets\":[0,1]}}", UINT64_MAX, 1 },
  { "leading zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[01],"
    "\"data_offsets\":[0,1]}}", UINT64_MAX, 1 },
  { "nine dimensions", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,"
    "1,1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1 },
  { "shape product overflows", "{\"a\":{\"dtype\":\"F32\",\"shape\":"
    "[4294967296,4294967296],\"data_offsets\":[0,0]}}", UINT64_MAX, 0 },
  { "offset above 2^64", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
    "\"data_offsets\":[18446744073709551616,1]}}", UINT64_MAX, 1 },
  { "three offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
    "\"data_offsets\":[0,1,2]}}", UINT64_MAX, 1 },
  { "one offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
    "\"data_offsets\":[0]}}", UINT64_MAX, 1 },
  { "end before begin", "{\"a\":" F32_AT(4, 0) "}", UINT64_MAX, 4 },
  { "offsets beyond data", "{\"a\":" F32_AT(0, 4) "}", UINT64_MAX, 2 },
  { "overlapping offsets", "{\"a\":" F32_AT(0, 4) ",\"b\":{\"dtype\":"
    "\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", UINT64_MAX, 8 },
  { "same offsets twice", "{\"a\":" F32_AT(0, 4) ",\"b\":" F32_AT(0, 4) "}",
    UINT64_MAX, 4 },
  { "gap between tensors", "{\"a\":" F32_AT(0, 4) ",\"b\":" F32_AT(8, 12) "}",
    UINT64_MAX, 12 },
  { "gap before first", "{\"a\":" F32_AT(4, 8) "}", UINT64_MAX, 8 },
  { "data after last", "{\"a\":" F32_AT(0, 4) "}", UINT64_MAX, 5 },
  { "repeated tensor name", "{\"a\":" F32_AT(0, 4) ",\"a\":" F32_AT(4, 8) "}",
    UINT64_MAX, 8 },
  { "empty tensor name", "{\"\":" U8_ONE "}", UINT64_MAX, 1 },
  { "name of 128 bytes", "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaa\":" U8_ONE "}", UINT64_MAX, 1 },
  { "invalid UTF-8 name", "{\"\xff\":" U8_ONE "}", UINT64_MAX, 1 },
  { "overlong UTF-8 name", "{\"\xc0\xaf\":" U8_ONE "}", UINT64_MAX, 1 },
  { "lone surrogate escape", "{\"\\ud800\":" U8_ONE "}", UINT64_MAX, 1 },
  { "NUL escape", "{\"a\\u0000b\":" U8_ONE "}", UINT64_MAX, 1 },
  { "bad escape", "{\"a\\q\":" U8_ONE "}", UINT64_MAX, 1 },
  { "raw control character", "{\"a\x01\":" U8_ONE "}", UINT64_MAX, 1 },
  { "tensor info not an object", "{\"a\":[0,1]}", UINT64_MAX, 1 },
  { "metadata value a number", "{\"__metadata__\":{\"k\":1}}", UINT64_MAX, 0 },
  { "metadata not an object", "{\"__metadata__\":\"x\"}", UINT64_MAX, 0 },
  { "metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}",
    UINT64_MAX, 0 },
  { "metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}",
    UINT64_MAX, 0 },
  { "unknown member too deep", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
    "\"data_offsets\":[0,1],\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}", UINT64_MAX, 1 },
  { "bad literal in unknown member", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
    "\"data_offsets\":[0,1],\"x\":nul}}", UINT64_MAX, 1 },
};

START_TEST(decode_rejects_malformed)
{
  const struct malformed_case *c = &malformed_cases[_i];
  fedc_tensor_list list;
  fedc_metadata meta;
  uint8_t *buf;
  size_t len;
  int rc;

  buf = make_buffer(c->json, c->declared_len, c->data_len, &len);
  fedc_tensor_list_init(&list);
  fedc_metadata_init(&meta);
  fedc_metadata_set(&meta, "stale", "value");
  rc = fedc_safetensors_decode(buf, len, &list, &meta);
  ck_assert_msg(rc == FEDC_EFORMAT, "case \"%s\" returned %s", c->what,
                fedc_errname(rc));
  ck_assert_uint_eq(list.count, 0);
  ck_assert_uint_eq(meta.count, 0);
  free(buf);
  fedc_tensor_list_close(&list);
  fedc_metadata_close(&meta);
}
END_TEST

START_TEST(decode_rejects_short_buffers)
{
  static const uint8_t bytes[8] = { 2, 0, 0, 0, 0, 0, 0, 0 };
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  for (size_t len = 0; len <= sizeof(bytes); len++)
    ck_assert_int_eq(fedc_safetensors_decode(bytes, len, &list, NULL),
                     FEDC_EFORMAT);
}
END_TEST

static const struct accepted_case {
  const char *what;
  const char *json;
  size_t data_len;
  size_t tensors;
} accepted_cases[] = {
  { "empty object", "{}", 0, 0 },
  { "space padding", "{}      ", 0, 0 },
  { "whitespace everywhere", " { \"a\" :\n" U8_ONE " } ", 1, 1 },
  { "unknown member skipped", "{\"a\":{\"x\":{\"y\":[1,-2.5e3,true,null,"
    "\"s\"]},\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1 },
  { "zero-size tensor", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0,3],"
    "\"data_offsets\":[0,0]}}", 0, 1 },
  { "scalar", "{\"a\":{\"dtype\":\"I64\",\"shape\":[],"
    "\"data_offsets\":[0,8]}}", 8, 1 },
  { "metadata only", "{\"__metadata__\":{\"k\":\"v\\u00e9\\ud834\\udd1e\"}}",
    0, 0 },
  { "keys out of data order", "{\"b\":" F32_AT(4, 8) ",\"a\":" F32_AT(0, 4)
    "}", 8, 2 },
};

START_TEST(decode_accepts_valid)
{
  const struct accepted_case *c = &accepted_cases[_i];
  fedc_tensor_list list;
  uint8_t *buf;
  size_t len;
  int rc;

  buf = make_buffer(c->json, UINT64_MAX, c->data_len, &len);
  fedc_tensor_list_init(&list);
  rc = fedc_safetensors_decode(buf, len, &list, NULL);
  ck_assert_msg(rc == 0, "case \"%s\" returned %s", c->what,
                fedc_errname(rc));
  ck_assert_uint_eq(list.count, c->tensors);
  free(buf);
  fedc_tensor_list_close(&list);
}
END_TEST

START_TEST(decode_sorts_by_offset)
{
  const char *json = "{\"b\":" F32_AT(4, 8) ",\"a\":" F32_AT(0, 4) "}";
  fedc_tensor_list list;
  fedc_metadata meta;
  uint8_t *buf;
  size_t len;

  buf = make_buffer(json, UINT64_MAX, 8, &len);
  fedc_tensor_list_init(&list);
  fedc_metadata_init(&meta);
  ck_assert_int_eq(fedc_safetensors_decode(buf, len, &list, &meta), 0);
  ck_assert_str_eq(list.items[0].name, "a");
  ck_assert_str_eq(list.items[1].name, "b");
  ck_assert_uint_eq(meta.count, 0);
  free(buf);
  fedc_tensor_list_close(&list);
  fedc_metadata_close(&meta);
}
END_TEST

/* Flips random bytes of a valid file, and cuts it short, many times: every
 * result must be a clean accept or FEDC_EFORMAT, with no sanitizer report. */
START_TEST(decode_survives_mutations)
{
  fedc_tensor_list list, out;
  fedc_metadata meta;
  fedc_rng rng;
  uint8_t *valid, *buf;
  size_t len;
  int accepted = 0;

  expected_list(&list, &meta);
  ck_assert_int_eq(fedc_safetensors_encode(&list, &meta, &valid, &len), 0);
  buf = malloc(len);
  ck_assert_ptr_nonnull(buf);
  fedc_tensor_list_init(&out);
  fedc_rng_seed(&rng, 2024);
  fedc_log_set_level(FEDC_LOG_OFF);

  for (int iter = 0; iter < 20000; iter++) {
    size_t cut = len, flips = 1 + fedc_rng_below(&rng, 4);
    int rc;

    memcpy(buf, valid, len);
    for (size_t f = 0; f < flips; f++)
      buf[fedc_rng_below(&rng, len)] = (uint8_t)fedc_rng_below(&rng, 256);
    if (fedc_rng_below(&rng, 8) == 0)
      cut = fedc_rng_below(&rng, len);
    rc = fedc_safetensors_decode(buf, cut, &out, NULL);
    ck_assert(rc == 0 || rc == FEDC_EFORMAT);
    if (rc == 0) {
      accepted++;
      ck_assert_uint_le(fedc_tensor_list_nbytes(&out), cut);
    }
  }
  fedc_log_set_level(FEDC_LOG_INFO);

  /* Flips in tensor data keep the file valid, so some must be accepted. */
  ck_assert_int_gt(accepted, 0);
  free(valid);
  free(buf);
  fedc_tensor_list_close(&list);
  fedc_tensor_list_close(&out);
  fedc_metadata_close(&meta);
}
END_TEST

static Suite *safetensors_suite(void)
{
  Suite *s = suite_create("safetensors");
  TCase *core = tcase_create("core");
  TCase *interop = tcase_create("numpy");
  TCase *hostile = tcase_create("hostile");

  tcase_add_test(core, metadata_set_get_replace);
  tcase_add_test(core, encode_decode_round_trip);
  tcase_add_test(core, write_read_round_trip);
  tcase_add_loop_test(core, decode_accepts_valid, 0,
                      sizeof(accepted_cases) / sizeof(accepted_cases[0]));
  tcase_add_test(core, decode_sorts_by_offset);
  suite_add_tcase(s, core);

  tcase_set_timeout(interop, 60);
  tcase_add_test(interop, numpy_reads_fedc_file);
  tcase_add_test(interop, fedc_reads_numpy_file);
  suite_add_tcase(s, interop);

  tcase_set_timeout(hostile, 60);
  tcase_add_loop_test(hostile, decode_rejects_malformed, 0,
                      sizeof(malformed_cases) / sizeof(malformed_cases[0]));
  tcase_add_test(hostile, decode_rejects_short_buffers);
  tcase_add_test(hostile, decode_survives_mutations);
  suite_add_tcase(s, hostile);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(safetensors_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
