#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor.h"
#include "util/error.h"

START_TEST(dtype_table_round_trip)
{
  static const struct {
    enum fedc_dtype dtype;
    const char *name;
    size_t size;
  } cases[] = {
    { FEDC_DTYPE_F32, "F32", 4 }, { FEDC_DTYPE_F64, "F64", 8 },
    { FEDC_DTYPE_I32, "I32", 4 }, { FEDC_DTYPE_I64, "I64", 8 },
    { FEDC_DTYPE_U8, "U8", 1 },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    enum fedc_dtype parsed;

    ck_assert_uint_eq(fedc_dtype_size(cases[i].dtype), cases[i].size);
    ck_assert_str_eq(fedc_dtype_name(cases[i].dtype), cases[i].name);
    ck_assert_int_eq(fedc_dtype_parse(cases[i].name, &parsed), 0);
    ck_assert_int_eq(parsed, cases[i].dtype);
  }
}
END_TEST

START_TEST(dtype_unknown_rejected)
{
  enum fedc_dtype parsed;

  ck_assert_uint_eq(fedc_dtype_size((enum fedc_dtype)99), 0);
  ck_assert_ptr_null(fedc_dtype_name((enum fedc_dtype)0));
  ck_assert_int_eq(fedc_dtype_parse("BF16", &parsed), FEDC_EFORMAT);
  ck_assert_int_eq(fedc_dtype_parse("f32", &parsed), FEDC_EFORMAT);
  ck_assert_int_eq(fedc_dtype_parse("", &parsed), FEDC_EFORMAT);
}
END_TEST

START_TEST(list_add_and_find)
{
  fedc_tensor_list list;
  const uint64_t shape[2] = { 2, 3 };
  const float values[6] = { 1, 2, 3, 4, 5, 6 };
  const fedc_tensor *t;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "w", FEDC_DTYPE_F32, 2, shape,
                                        values), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "b", FEDC_DTYPE_F64, 1, shape,
                                        NULL), 0);
  ck_assert_uint_eq(list.count, 2);

  t = fedc_tensor_list_find(&list, "w");
  ck_assert_ptr_nonnull(t);
  ck_assert_ptr_eq(t, &list.items[0]);
  ck_assert_uint_eq(fedc_tensor_numel(t), 6);
  ck_assert_uint_eq(fedc_tensor_nbytes(t), 24);
  ck_assert_mem_eq(t->data, values, sizeof(values));

  t = fedc_tensor_list_find(&list, "b");
  ck_assert_ptr_nonnull(t);
  ck_assert_uint_eq(fedc_tensor_nbytes(t), 16);
  ck_assert(((const double *)t->data)[0] == 0.0);
  ck_assert(((const double *)t->data)[1] == 0.0);

  ck_assert_ptr_null(fedc_tensor_list_find(&list, "missing"));
  ck_assert_uint_eq(fedc_tensor_list_nbytes(&list), 40);
  fedc_tensor_list_close(&list);
  ck_assert_uint_eq(list.count, 0);
  ck_assert_ptr_null(list.items);
}
END_TEST

START_TEST(list_add_rejects_bad_input)
{
  fedc_tensor_list list;
  const uint64_t shape[FEDC_TENSOR_MAX_DIMS + 1] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
  char long_name[FEDC_TENSOR_NAME_MAX + 1];

  memset(long_name, 'a', sizeof(long_name) - 1);
  long_name[sizeof(long_name) - 1] = '\0';
  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "x", FEDC_DTYPE_U8, 1, shape,
                                        NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "x", FEDC_DTYPE_U8, 1, shape,
                                        NULL), FEDC_EINVAL);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "", FEDC_DTYPE_U8, 1, shape,
                                        NULL), FEDC_EINVAL);
  ck_assert_int_eq(fedc_tensor_list_add(&list, long_name, FEDC_DTYPE_U8, 1,
                                        shape, NULL), FEDC_EINVAL);
  long_name[FEDC_TENSOR_NAME_MAX - 1] = '\0';
  ck_assert_int_eq(fedc_tensor_list_add(&list, long_name, FEDC_DTYPE_U8, 1,
                                        shape, NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "y", FEDC_DTYPE_U8,
                                        FEDC_TENSOR_MAX_DIMS + 1, shape, NULL),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "y", FEDC_DTYPE_U8, -1, shape,
                                        NULL), FEDC_EINVAL);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "y", (enum fedc_dtype)42, 1,
                                        shape, NULL), FEDC_EINVAL);
  ck_assert_uint_eq(list.count, 2);
  fedc_tensor_list_close(&list);
}
END_TEST

START_TEST(list_add_rejects_overflow)
{
  static const uint64_t shapes[][2] = {
    { UINT64_MAX, 2 },              /* numel overflows */
    { UINT64_C(1) << 32, UINT64_C(1) << 32 },
    { UINT64_C(1) << 62, 1 },       /* numel fits, bytes of F32 do not */
  };
  fedc_tensor_list list;
  uint64_t bytes;

  fedc_tensor_list_init(&list);
  for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
    ck_assert_int_eq(fedc_tensor_shape_nbytes(FEDC_DTYPE_F32, 2, shapes[i],
                                              &bytes), FEDC_EOVERFLOW);
    ck_assert_int_eq(fedc_tensor_list_add(&list, "big", FEDC_DTYPE_F32, 2,
                                          shapes[i], NULL), FEDC_EOVERFLOW);
  }
  ck_assert_uint_eq(list.count, 0);
  fedc_tensor_list_close(&list);
}
END_TEST

START_TEST(tensor_numel_overflow_is_zero)
{
  fedc_tensor t;

  memset(&t, 0, sizeof(t));
  t.dtype = FEDC_DTYPE_F32;
  t.ndim = 3;
  t.shape[0] = UINT64_C(1) << 40;
  t.shape[1] = UINT64_C(1) << 30;
  t.shape[2] = 1;
  ck_assert_uint_eq(fedc_tensor_numel(&t), 0);
  ck_assert_uint_eq(fedc_tensor_nbytes(&t), 0);

  t.shape[1] = 1 << 20;
  ck_assert_uint_eq(fedc_tensor_numel(&t), UINT64_C(1) << 60);
  ck_assert_uint_eq(fedc_tensor_nbytes(&t), UINT64_C(1) << 62);

  /* 2^62 elements fit in uint64_t, but their 2^64 bytes do not. */
  t.shape[0] = UINT64_C(1) << 42;
  ck_assert_uint_eq(fedc_tensor_numel(&t), UINT64_C(1) << 62);
  ck_assert_uint_eq(fedc_tensor_nbytes(&t), 0);
}
END_TEST

START_TEST(tensor_scalar_and_empty)
{
  fedc_tensor_list list;
  const uint64_t empty_shape[2] = { 0, 5 };
  const int64_t value = -7;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "scalar", FEDC_DTYPE_I64, 0,
                                        NULL, &value), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "empty", FEDC_DTYPE_F32, 2,
                                        empty_shape, NULL), 0);
  ck_assert_uint_eq(fedc_tensor_numel(&list.items[0]), 1);
  ck_assert_int_eq(*(const int64_t *)list.items[0].data, -7);
  ck_assert_uint_eq(fedc_tensor_numel(&list.items[1]), 0);
  ck_assert_ptr_nonnull(list.items[1].data);
  fedc_tensor_list_close(&list);
}
END_TEST

/* Fills list with n tensors "t0".."t{n-1}", tensor i holding i+1 floats. */
static void fill_list(fedc_tensor_list *list, int n)
{
  fedc_tensor_list_init(list);
  for (int i = 0; i < n; i++) {
    char name[16];
    uint64_t shape[1] = { (uint64_t)i + 1 };
    float values[64];

    for (int j = 0; j <= i; j++)
      values[j] = (float)(i * 100 + j);
    snprintf(name, sizeof(name), "t%d", i);
    ck_assert_int_eq(fedc_tensor_list_add(list, name, FEDC_DTYPE_F32, 1,
                                          shape, values), 0);
  }
}

START_TEST(list_copy_is_deep)
{
  fedc_tensor_list src, dst;

  fill_list(&src, 20);
  fill_list(&dst, 3);
  ck_assert_int_eq(fedc_tensor_list_copy(&dst, &src), 0);
  ck_assert_uint_eq(dst.count, 20);
  ck_assert_int_eq(fedc_tensor_list_check_layout(&src, &dst), 0);
  for (size_t i = 0; i < src.count; i++) {
    ck_assert_ptr_ne(dst.items[i].data, src.items[i].data);
    ck_assert_mem_eq(dst.items[i].data, src.items[i].data,
                     fedc_tensor_nbytes(&src.items[i]));
  }
  ((float *)src.items[5].data)[0] = -1.0f;
  ck_assert(((float *)dst.items[5].data)[0] == 500.0f);
  fedc_tensor_list_close(&src);
  fedc_tensor_list_close(&dst);
}
END_TEST

START_TEST(list_layout_mismatches)
{
  fedc_tensor_list a, b;

  fill_list(&a, 4);
  fill_list(&b, 4);
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), 0);

  b.items[2].shape[0]++;
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), FEDC_ESHAPE);
  b.items[2].shape[0]--;

  b.items[1].dtype = FEDC_DTYPE_I32;
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), FEDC_ESHAPE);
  b.items[1].dtype = FEDC_DTYPE_F32;

  strcpy(b.items[3].name, "other");
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), FEDC_ESHAPE);
  strcpy(b.items[3].name, "t3");

  b.items[0].ndim = 2;
  b.items[0].shape[1] = 1;
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), FEDC_ESHAPE);
  b.items[0].ndim = 1;
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), 0);

  fedc_tensor_list_close(&b);
  fill_list(&b, 3);
  ck_assert_int_eq(fedc_tensor_list_check_layout(&a, &b), FEDC_ESHAPE);
  fedc_tensor_list_close(&a);
  fedc_tensor_list_close(&b);
}
END_TEST

START_TEST(list_finite_check)
{
  fedc_tensor_list list;
  const uint64_t shape[1] = { 3 };
  const int32_t ints[3] = { 1, 2, 3 };
  float *f;
  double *d;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "f", FEDC_DTYPE_F32, 1, shape,
                                        NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "d", FEDC_DTYPE_F64, 1, shape,
                                        NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "i", FEDC_DTYPE_I32, 1, shape,
                                        ints), 0);
  f = list.items[0].data;
  d = list.items[1].data;
  ck_assert_int_eq(fedc_tensor_list_check_finite(&list), 0);

  f[2] = NAN;
  ck_assert_int_eq(fedc_tensor_list_check_finite(&list), FEDC_ENONFINITE);
  f[2] = 1e38f;
  ck_assert_int_eq(fedc_tensor_list_check_finite(&list), 0);
  d[1] = -INFINITY;
  ck_assert_int_eq(fedc_tensor_list_check_finite(&list), FEDC_ENONFINITE);
  d[1] = 1e300;
  ck_assert_int_eq(fedc_tensor_list_check_finite(&list), 0);
  fedc_tensor_list_close(&list);
}
END_TEST

/* Every non-finite float is found wherever it sits in a long tensor, and
 * the largest finite values and subnormals pass. */
START_TEST(list_finite_check_long_f32)
{
  const float bad[] = { NAN, -NAN, INFINITY, -INFINITY };
  const float good[] = { 3.4028235e38f, -3.4028235e38f, 1e-45f, -0.0f };
  const uint64_t shape[1] = { 1001 };
  const size_t at[] = { 0, 7, 500, 1000 };
  fedc_tensor_list list;
  float *f;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "f", FEDC_DTYPE_F32, 1, shape,
                                        NULL), 0);
  f = list.items[0].data;
  for (size_t i = 0; i < 4; i++) {
    for (size_t k = 0; k < 4; k++) {
      f[at[k]] = bad[i];
      ck_assert_int_eq(fedc_tensor_list_check_finite(&list), FEDC_ENONFINITE);
      f[at[k]] = good[i];
      ck_assert_int_eq(fedc_tensor_list_check_finite(&list), 0);
    }
  }
  fedc_tensor_list_close(&list);
}
END_TEST

/* a - b element by element, with a difference that overflows to Inf or
 * is NaN found wherever it sits, and lists it cannot subtract refused. */
START_TEST(list_sub)
{
  const uint64_t shape[1] = { 1001 }, one[1] = { 1 };
  const size_t at[] = { 0, 7, 500, 1000 };
  const int32_t ints[1] = { 5 };
  fedc_tensor_list a, b, c;
  double norm = -1.0;
  float *x, *y;
  double *d;

  fedc_tensor_list_init(&a);
  fedc_tensor_list_init(&b);
  fedc_tensor_list_init(&c);
  ck_assert_int_eq(fedc_tensor_list_add(&a, "x", FEDC_DTYPE_F32, 1, shape,
                                        NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&a, "d", FEDC_DTYPE_F64, 1, one,
                                        NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_copy(&b, &a), 0);
  x = a.items[0].data;
  y = b.items[0].data;
  d = a.items[1].data;
  for (int k = 0; k < 1001; k++) {
    x[k] = (float)k;
    y[k] = 0.25f * (float)k;
  }
  d[0] = 1.5;
  ((double *)b.items[1].data)[0] = 0.5;
  ck_assert_int_eq(fedc_tensor_list_sub(&a, &b, &norm), 0);
  for (int k = 0; k < 1001; k++)
    ck_assert_float_eq(x[k], 0.75f * (float)k);
  ck_assert_double_eq(d[0], 1.0);
  /* The same bits as the norm taken afterwards, not merely close. */
  ck_assert_double_eq(norm, fedc_tensor_list_norm(&a));
  ck_assert_double_gt(norm, 0.0);

  for (size_t k = 0; k < 4; k++) {
    x[at[k]] = 3e38f;
    y[at[k]] = -3e38f;
    ck_assert_int_eq(fedc_tensor_list_sub(&a, &b, NULL), FEDC_ENONFINITE);
    ck_assert(isinf(x[at[k]]));
    x[at[k]] = 1.0f;
    y[at[k]] = NAN;
    ck_assert_int_eq(fedc_tensor_list_sub(&a, &b, NULL), FEDC_ENONFINITE);
    y[at[k]] = 0.0f;
    x[at[k]] = 1.0f;
    ck_assert_int_eq(fedc_tensor_list_sub(&a, &b, NULL), 0);
  }

  ck_assert_int_eq(fedc_tensor_list_add(&c, "x", FEDC_DTYPE_F32, 1, one,
                                        NULL), 0);
  ck_assert_int_eq(fedc_tensor_list_sub(&a, &c, NULL), FEDC_ESHAPE);
  fedc_tensor_list_close(&c);
  ck_assert_int_eq(fedc_tensor_list_add(&c, "i", FEDC_DTYPE_I32, 1, one,
                                        ints), 0);
  ck_assert_int_eq(fedc_tensor_list_sub(&c, &c, NULL), FEDC_EUNSUPPORTED);
  ck_assert_int_eq(((const int32_t *)c.items[0].data)[0], 5);
  fedc_tensor_list_close(&c);
  fedc_tensor_list_close(&b);
  fedc_tensor_list_close(&a);
}
END_TEST

/* The norm counts F32 and F64 values and skips the others; on a long
 * tensor its lanes agree with a plain sum to rounding. */
START_TEST(list_norm)
{
  const float f[2] = { 3, 4 };
  const double d[1] = { 12 };
  const int32_t ints[1] = { 1000 };
  const uint64_t two[1] = { 2 }, one[1] = { 1 }, long_shape[1] = { 1003 };
  fedc_tensor_list list;
  long double reference = 0;
  float *x;

  fedc_tensor_list_init(&list);
  ck_assert_double_eq(fedc_tensor_list_norm(&list), 0.0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "f", FEDC_DTYPE_F32, 1, two, f),
                   0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "d", FEDC_DTYPE_F64, 1, one, d),
                   0);
  ck_assert_int_eq(fedc_tensor_list_add(&list, "i", FEDC_DTYPE_I32, 1, one,
                                        ints), 0);
  ck_assert_double_eq(fedc_tensor_list_norm(&list), 13.0);
  fedc_tensor_list_close(&list);

  ck_assert_int_eq(fedc_tensor_list_add(&list, "x", FEDC_DTYPE_F32, 1,
                                        long_shape, NULL), 0);
  x = list.items[0].data;
  for (int k = 0; k < 1003; k++) {
    x[k] = (float)(k % 17) * 0.37f - 2.5f;
    reference += (long double)x[k] * x[k];
  }
  ck_assert_double_eq_tol(fedc_tensor_list_norm(&list),
                          (double)sqrtl(reference), 1e-12 * sqrtl(reference));
  x[1002] = NAN;
  ck_assert(isnan(fedc_tensor_list_norm(&list)));
  fedc_tensor_list_close(&list);
}
END_TEST

START_TEST(list_add_owned_takes_data)
{
  fedc_tensor_list list;
  const uint64_t shape[1] = { 4 };
  uint8_t *data = malloc(4);

  ck_assert_ptr_nonnull(data);
  memcpy(data, "\x01\x02\x03\x04", 4);
  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_tensor_list_add_owned(&list, "u", FEDC_DTYPE_U8, 1,
                                              shape, data), 0);
  ck_assert_ptr_eq(list.items[0].data, data);

  /* On error the caller keeps the block. */
  data = malloc(4);
  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(fedc_tensor_list_add_owned(&list, "u", FEDC_DTYPE_U8, 1,
                                              shape, data), FEDC_EINVAL);
  free(data);
  fedc_tensor_list_close(&list);
}
END_TEST

static Suite *tensor_suite(void)
{
  Suite *s = suite_create("tensor");
  TCase *tc = tcase_create("core");

  tcase_add_test(tc, dtype_table_round_trip);
  tcase_add_test(tc, dtype_unknown_rejected);
  tcase_add_test(tc, list_add_and_find);
  tcase_add_test(tc, list_add_rejects_bad_input);
  tcase_add_test(tc, list_add_rejects_overflow);
  tcase_add_test(tc, tensor_numel_overflow_is_zero);
  tcase_add_test(tc, tensor_scalar_and_empty);
  tcase_add_test(tc, list_copy_is_deep);
  tcase_add_test(tc, list_layout_mismatches);
  tcase_add_test(tc, list_finite_check);
  tcase_add_test(tc, list_finite_check_long_f32);
  tcase_add_test(tc, list_norm);
  tcase_add_test(tc, list_sub);
  tcase_add_test(tc, list_add_owned_takes_data);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(tensor_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
