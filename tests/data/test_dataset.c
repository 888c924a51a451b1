#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "tensor/safetensors.h"
#include "test_support.h"
#include "util/error.h"

/* Fills an n x 12 dataset of 3 x 2 x 2 images; features are k/255 when
 * pixel_like is set, arbitrary floats otherwise. Labels are i mod 4. */
static void make_images(fedc_dataset *ds, uint64_t n, int pixel_like)
{
  ck_assert_int_eq(fedc_dataset_alloc(ds, n, 12, 4), 0);
  ds->image_shape[0] = 3;
  ds->image_shape[1] = 2;
  ds->image_shape[2] = 2;
  for (uint64_t i = 0; i < n * 12; i++)
    ds->x[i] = pixel_like ? (float)(i % 256) / 255.0f
                          : (float)i * 0.37f - 5.0f;
  for (uint64_t i = 0; i < n; i++)
    ds->y[i] = (int32_t)(i % 4);
}

/* Returns the dtype of the "features" tensor in the file at path. */
static enum fedc_dtype features_dtype(const char *path, int *ndim)
{
  fedc_tensor_list list;
  const fedc_tensor *t;
  enum fedc_dtype dtype;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_safetensors_read(path, &list, NULL), 0);
  t = fedc_tensor_list_find(&list, "features");
  ck_assert_ptr_nonnull(t);
  dtype = t->dtype;
  *ndim = t->ndim;
  fedc_tensor_list_close(&list);
  return dtype;
}

START_TEST(dataset_alloc_and_close)
{
  fedc_dataset ds;
  fedc_dataset_view all;

  ck_assert_int_eq(fedc_dataset_alloc(&ds, 5, 3, 2), 0);
  ck_assert_uint_eq(ds.n, 5);
  ck_assert_uint_eq(ds.dim, 3);
  ck_assert(ds.x[14] == 0.0f);
  ck_assert_int_eq(ds.y[4], 0);
  all = fedc_dataset_all(&ds);
  ck_assert_ptr_eq(all.base, &ds);
  ck_assert_ptr_null(all.rows);
  ck_assert_uint_eq(all.n, 5);
  ck_assert_uint_eq(fedc_view_row(&all, 3), 3);
  fedc_dataset_close(&ds);
  ck_assert_ptr_null(ds.x);

  ck_assert_int_eq(fedc_dataset_alloc(&ds, (uint64_t)UINT32_MAX + 1, 1, 2),
                   FEDC_ETOOBIG);
  ck_assert_int_eq(fedc_dataset_alloc(&ds, 0, 7, 2), 0);
  fedc_dataset_close(&ds);
}
END_TEST

START_TEST(dataset_label_counts)
{
  fedc_dataset ds;
  fedc_dataset_view view;
  const uint32_t rows[5] = { 0, 1, 1, 5, 6 };
  uint64_t counts[4];

  make_images(&ds, 8, 1);
  view.base = &ds;
  view.rows = rows;
  view.n = 5;
  ck_assert_int_eq(fedc_dataset_label_counts(&view, counts), 0);
  ck_assert_uint_eq(counts[0], 1);
  ck_assert_uint_eq(counts[1], 3);
  ck_assert_uint_eq(counts[2], 1);
  ck_assert_uint_eq(counts[3], 0);

  ds.y[5] = 4;
  ck_assert_int_eq(fedc_dataset_label_counts(&view, counts), FEDC_EINVAL);
  fedc_dataset_close(&ds);
}
END_TEST

START_TEST(dataset_round_trip_u8)
{
  fedc_dataset ds, back;
  fedc_dataset_view all;
  char *path = test_scratch_path("u8.safetensors");
  int ndim;

  make_images(&ds, 50, 1);
  all = fedc_dataset_all(&ds);
  ck_assert_int_eq(fedc_dataset_save(path, &all), 0);
  ck_assert_int_eq(features_dtype(path, &ndim), FEDC_DTYPE_U8);
  ck_assert_int_eq(ndim, 4);

  ck_assert_int_eq(fedc_dataset_load(path, &back), 0);
  ck_assert_uint_eq(back.n, 50);
  ck_assert_uint_eq(back.dim, 12);
  ck_assert_uint_eq(back.num_classes, 4);
  ck_assert_uint_eq(back.image_shape[0], 3);
  ck_assert_uint_eq(back.image_shape[1], 2);
  ck_assert_uint_eq(back.image_shape[2], 2);
  ck_assert_mem_eq(back.x, ds.x, 50 * 12 * sizeof(float));
  ck_assert_mem_eq(back.y, ds.y, 50 * sizeof(int32_t));
  fedc_dataset_close(&ds);
  fedc_dataset_close(&back);
  free(path);
}
END_TEST

START_TEST(dataset_round_trip_f32_view)
{
  fedc_dataset ds, back;
  fedc_dataset_view view;
  const uint32_t rows[3] = { 7, 2, 7 };
  char *path = test_scratch_path("f32.safetensors");
  int ndim;

  make_images(&ds, 10, 0);
  ds.image_shape[0] = 0;          /* not images: saved as [n, dim] */
  ds.num_classes = 9;
  view.base = &ds;
  view.rows = rows;
  view.n = 3;
  ck_assert_int_eq(fedc_dataset_save(path, &view), 0);
  ck_assert_int_eq(features_dtype(path, &ndim), FEDC_DTYPE_F32);
  ck_assert_int_eq(ndim, 2);

  ck_assert_int_eq(fedc_dataset_load(path, &back), 0);
  ck_assert_uint_eq(back.n, 3);
  ck_assert_uint_eq(back.num_classes, 9);
  ck_assert_uint_eq(back.image_shape[0], 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_mem_eq(back.x + i * 12, ds.x + rows[i] * 12, 12 * sizeof(float));
    ck_assert_int_eq(back.y[i], ds.y[rows[i]]);
  }
  fedc_dataset_close(&ds);
  fedc_dataset_close(&back);
  free(path);
}
END_TEST

/* One value that is not k/255 makes the whole file F32. */
START_TEST(dataset_u8_needs_every_value)
{
  fedc_dataset ds, back;
  fedc_dataset_view all;
  char *path = test_scratch_path("mixed.safetensors");
  int ndim;

  make_images(&ds, 4, 1);
  ds.x[17] = 0.5f;
  all = fedc_dataset_all(&ds);
  ck_assert_int_eq(fedc_dataset_save(path, &all), 0);
  ck_assert_int_eq(features_dtype(path, &ndim), FEDC_DTYPE_F32);
  ck_assert_int_eq(fedc_dataset_load(path, &back), 0);
  ck_assert_mem_eq(back.x, ds.x, 4 * 12 * sizeof(float));
  fedc_dataset_close(&ds);
  fedc_dataset_close(&back);
  free(path);
}
END_TEST

/* Writes a file of the given tensors and metadata (NULL for none). */
static char *write_raw(const char *name, enum fedc_dtype x_dtype,
                       int x_ndim, const uint64_t *x_shape, const void *x,
                       enum fedc_dtype y_dtype, uint64_t y_n, const void *y,
                       const char *meta_key, const char *meta_value)
{
  char *path = test_scratch_path(name);
  fedc_tensor_list list;
  fedc_metadata meta;

  fedc_tensor_list_init(&list);
  fedc_metadata_init(&meta);
  if (x_ndim > 0)
    ck_assert_int_eq(fedc_tensor_list_add(&list, "features", x_dtype, x_ndim,
                                          x_shape, x), 0);
  if (y_n > 0)
    ck_assert_int_eq(fedc_tensor_list_add(&list, "labels", y_dtype, 1, &y_n,
                                          y), 0);
  if (meta_key != NULL)
    ck_assert_int_eq(fedc_metadata_set(&meta, meta_key, meta_value), 0);
  ck_assert_int_eq(fedc_safetensors_write(path, &list, &meta), 0);
  fedc_tensor_list_close(&list);
  fedc_metadata_close(&meta);
  return path;
}

START_TEST(dataset_load_u8_labels_and_metadata_shape)
{
  const uint64_t shape[2] = { 2, 4 };
  const float x[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
  const uint8_t y[2] = { 3, 1 };
  char *path = write_raw("ok.safetensors", FEDC_DTYPE_F32, 2, shape, x,
                         FEDC_DTYPE_U8, 2, y, "image_shape", "1,2,2");
  fedc_dataset ds;

  ck_assert_int_eq(fedc_dataset_load(path, &ds), 0);
  ck_assert_uint_eq(ds.num_classes, 4);   /* largest label + 1 */
  ck_assert_int_eq(ds.y[0], 3);
  ck_assert_uint_eq(ds.image_shape[0], 1);
  ck_assert_uint_eq(ds.image_shape[2], 2);
  ck_assert(ds.x[7] == 7.0f);
  fedc_dataset_close(&ds);
  free(path);
}
END_TEST

START_TEST(dataset_load_rejects_bad_files)
{
  const uint64_t shape[2] = { 2, 2 }, shape3[3] = { 2, 2, 1 };
  const float x[4] = { 0, 1, 2, 3 }, bad_x[4] = { 0, NAN, 2, 3 };
  const double wide_x[4] = { 0, 1, 2, 3 };
  const int32_t y[2] = { 0, 5 }, neg_y[2] = { 0, -1 };
  const int64_t wide_y[2] = { 0, 1 };
  char *paths[10];
  fedc_dataset ds;
  int count = 0;

  paths[count++] = write_raw("no-labels", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I32, 0, NULL, NULL, NULL);
  paths[count++] = write_raw("label-range", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I32, 2, y, "num_classes", "5");
  paths[count++] = write_raw("neg-label", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I32, 2, neg_y, NULL, NULL);
  paths[count++] = write_raw("nan", FEDC_DTYPE_F32, 2, shape, bad_x,
                             FEDC_DTYPE_I32, 2, y, NULL, NULL);
  paths[count++] = write_raw("three-dims", FEDC_DTYPE_F32, 3, shape3, x,
                             FEDC_DTYPE_I32, 2, y, NULL, NULL);
  paths[count++] = write_raw("i64-labels", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I64, 2, wide_y, NULL, NULL);
  paths[count++] = write_raw("f64-features", FEDC_DTYPE_F64, 2, shape, wide_x,
                             FEDC_DTYPE_I32, 2, y, NULL, NULL);
  paths[count++] = write_raw("row-mismatch", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I32, 1, y, NULL, NULL);
  paths[count++] = write_raw("bad-classes", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I32, 2, y, "num_classes", "six");
  paths[count++] = write_raw("bad-image", FEDC_DTYPE_F32, 2, shape, x,
                             FEDC_DTYPE_I32, 2, y, "image_shape", "1,3,3");

  for (int i = 0; i < count; i++) {
    int rc = fedc_dataset_load(paths[i], &ds);

    ck_assert_msg(rc == FEDC_EFORMAT, "%s returned %s", paths[i],
                  fedc_errname(rc));
    ck_assert_ptr_null(ds.x);
    free(paths[i]);
  }
}
END_TEST

START_TEST(dataset_load_missing_file)
{
  fedc_dataset ds;
  char *path = test_scratch_path("missing.safetensors");

  ck_assert_int_eq(fedc_dataset_load(path, &ds), FEDC_ENOENT);
  free(path);
}
END_TEST

static Suite *dataset_suite(void)
{
  Suite *s = suite_create("dataset");
  TCase *tc = tcase_create("core");

  tcase_add_checked_fixture(tc, test_scratch_make, test_scratch_remove);
  tcase_add_test(tc, dataset_alloc_and_close);
  tcase_add_test(tc, dataset_label_counts);
  tcase_add_test(tc, dataset_round_trip_u8);
  tcase_add_test(tc, dataset_round_trip_f32_view);
  tcase_add_test(tc, dataset_u8_needs_every_value);
  tcase_add_test(tc, dataset_load_u8_labels_and_metadata_shape);
  tcase_add_test(tc, dataset_load_rejects_bad_files);
  tcase_add_test(tc, dataset_load_missing_file);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(dataset_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
