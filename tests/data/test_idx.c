#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/dataset.h"
#include "test_support.h"
#include "util/error.h"
#include "util/log.h"

#define PYTHON "/usr/bin/python3"
#define FMNIST "/usr/share/datasets/fashion-mnist/"
#define TRAIN_IMAGES FMNIST "train-images-idx3-ubyte.gz"
#define TRAIN_LABELS FMNIST "train-labels-idx1-ubyte.gz"
#define TEST_IMAGES FMNIST "t10k-images-idx3-ubyte.gz"
#define TEST_LABELS FMNIST "t10k-labels-idx1-ubyte.gz"

/* The train split is loaded once and shared by the tests that read it. */
static fedc_dataset train;

static void load_train(void)
{
  ck_assert_int_eq(fedc_idx_load(TRAIN_IMAGES, TRAIN_LABELS, &train), 0);
}

static void free_train(void)
{
  fedc_dataset_close(&train);
}

START_TEST(fmnist_train_shape)
{
  ck_assert_uint_eq(train.n, 60000);
  ck_assert_uint_eq(train.dim, 784);
  ck_assert_uint_eq(train.num_classes, 10);
  ck_assert_uint_eq(train.image_shape[0], 1);
  ck_assert_uint_eq(train.image_shape[1], 28);
  ck_assert_uint_eq(train.image_shape[2], 28);
}
END_TEST

START_TEST(fmnist_train_class_counts)
{
  fedc_dataset_view all = fedc_dataset_all(&train);
  uint64_t counts[10];

  ck_assert_int_eq(fedc_dataset_label_counts(&all, counts), 0);
  for (int c = 0; c < 10; c++)
    ck_assert_uint_eq(counts[c], 6000);
}
END_TEST

START_TEST(fmnist_pixels_in_unit_range)
{
  float lo = 1, hi = 0;

  for (uint64_t i = 0; i < train.n * train.dim; i++) {
    if (train.x[i] < lo)
      lo = train.x[i];
    if (train.x[i] > hi)
      hi = train.x[i];
  }
  ck_assert(lo == 0.0f);
  ck_assert(hi == 1.0f);
}
END_TEST

/* Python's gzip module reads the same files independently: the first 20
 * labels and the bytes of the first and last images must match. */
START_TEST(fmnist_matches_python_gzip)
{
  const char *argv[] = { PYTHON, "-c",
    "import gzip\n"
    "l = gzip.open('" TRAIN_LABELS "').read()[8:]\n"
    "x = gzip.open('" TRAIN_IMAGES "').read()[16:]\n"
    "print(' '.join(map(str, l[:20])))\n"
    "print(' '.join(map(str, x[:784])))\n"
    "print(' '.join(map(str, x[-784:])))\n",
    NULL };
  char *out = NULL, *p, *end;

  ck_assert_int_eq(test_spawn(argv, &out), 0);
  ck_assert_ptr_nonnull(out);
  p = out;
  for (int i = 0; i < 20; i++) {
    long label = strtol(p, &end, 10);

    ck_assert_ptr_ne(end, p);
    ck_assert_int_eq(train.y[i], label);
    p = end;
  }
  for (int image = 0; image < 2; image++) {
    const float *x = train.x + (image == 0 ? 0 : (train.n - 1) * train.dim);

    for (int j = 0; j < 784; j++) {
      long byte = strtol(p, &end, 10);

      ck_assert_ptr_ne(end, p);
      ck_assert(x[j] == (float)byte / 255.0f);
      p = end;
    }
  }
  free(out);
}
END_TEST

START_TEST(fmnist_test_split)
{
  fedc_dataset test;
  fedc_dataset_view all;
  uint64_t counts[10];

  ck_assert_int_eq(fedc_idx_load(TEST_IMAGES, TEST_LABELS, &test), 0);
  ck_assert_uint_eq(test.n, 10000);
  ck_assert_uint_eq(test.dim, 784);
  ck_assert_uint_eq(test.num_classes, 10);
  all = fedc_dataset_all(&test);
  ck_assert_int_eq(fedc_dataset_label_counts(&all, counts), 0);
  for (int c = 0; c < 10; c++)
    ck_assert_uint_eq(counts[c], 1000);
  fedc_dataset_close(&test);
}
END_TEST

/* Writes bytes to path, gzipped when gz is set. */
static void write_file(const char *path, const uint8_t *bytes, size_t len,
                       int gz)
{
  if (gz) {
    gzFile f = gzopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(gzwrite(f, bytes, (unsigned)len), (int)len);
    ck_assert_int_eq(gzclose(f), Z_OK);
  } else {
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
  }
}

/* A valid pair: 3 images of 2 x 2 pixels and their labels. */
static const uint8_t good_images[] = {
  0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2,
  0, 51, 102, 255, 1, 2, 3, 4, 255, 255, 0, 0,
};
static const uint8_t good_labels[] = { 0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 4 };

START_TEST(idx_small_plain_and_gzip)
{
  char *dir = test_mkdtemp(), *images, *labels;
  fedc_dataset ds;

  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&images, "%s/images", dir), 0);
  ck_assert_int_ge(asprintf(&labels, "%s/labels", dir), 0);
  for (int gz = 0; gz <= 1; gz++) {
    write_file(images, good_images, sizeof(good_images), gz);
    write_file(labels, good_labels, sizeof(good_labels), gz);
    ck_assert_int_eq(fedc_idx_load(images, labels, &ds), 0);
    ck_assert_uint_eq(ds.n, 3);
    ck_assert_uint_eq(ds.dim, 4);
    ck_assert_uint_eq(ds.num_classes, 5);
    ck_assert_int_eq(ds.y[0], 2);
    ck_assert_int_eq(ds.y[2], 4);
    ck_assert(ds.x[1] == 51.0f / 255.0f);
    ck_assert(ds.x[3] == 1.0f);
    ck_assert(ds.x[7] == 4.0f / 255.0f);
    fedc_dataset_close(&ds);
  }
  free(images);
  free(labels);
  test_rmtree(dir);
  free(dir);
}
END_TEST

static const struct bad_idx {
  const char *what;
  int images_len;           /* bytes of good_images to write; -1: all */
  int labels_len;
  int patch_file;           /* 0: images, 1: labels */
  int patch_at;             /* byte to overwrite, -1: none */
  uint8_t patch;
  int extra_byte;           /* append one byte to the patched file */
  int rc;
} bad_cases[] = {
  { "images magic type not u8", -1, -1, 0, 2, 0x0d, 0, FEDC_EFORMAT },
  { "images with 2 dims", -1, -1, 0, 3, 2, 0, FEDC_EFORMAT },
  { "images magic not zero", -1, -1, 0, 0, 1, 0, FEDC_EFORMAT },
  { "labels with 3 dims", -1, -1, 1, 3, 3, 0, FEDC_EFORMAT },
  { "count mismatch", -1, 10, 1, 7, 2, 0, FEDC_EFORMAT },
  { "images truncated", 27, -1, 0, -1, 0, 0, FEDC_EFORMAT },
  { "header truncated", 10, -1, 0, -1, 0, 0, FEDC_EFORMAT },
  { "labels truncated", -1, 10, 1, -1, 0, 0, FEDC_EFORMAT },
  { "empty labels file", -1, 0, 1, -1, 0, 0, FEDC_EFORMAT },
  { "data after images", -1, -1, 0, -1, 0, 1, FEDC_EFORMAT },
  { "zero rows per image", -1, -1, 0, 11, 0, 0, FEDC_EFORMAT },
  { "huge declared count", -1, -1, 0, 4, 0x7f, 0, FEDC_EFORMAT },
};

START_TEST(idx_rejects_malformed)
{
  const struct bad_idx *c = &bad_cases[_i];
  char *dir = test_mkdtemp(), *images, *labels;
  uint8_t img[sizeof(good_images) + 1], lab[sizeof(good_labels) + 1];
  size_t img_len = c->images_len < 0 ? sizeof(good_images)
                                     : (size_t)c->images_len;
  size_t lab_len = c->labels_len < 0 ? sizeof(good_labels)
                                     : (size_t)c->labels_len;
  fedc_dataset ds;
  int rc;

  memcpy(img, good_images, sizeof(good_images));
  memcpy(lab, good_labels, sizeof(good_labels));
  if (c->patch_at >= 0)
    (c->patch_file == 0 ? img : lab)[c->patch_at] = c->patch;
  if (c->extra_byte) {
    if (c->patch_file == 0)
      img[img_len++] = 7;
    else
      lab[lab_len++] = 7;
  }
  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&images, "%s/images.gz", dir), 0);
  ck_assert_int_ge(asprintf(&labels, "%s/labels.gz", dir), 0);
  write_file(images, img, img_len, 1);
  write_file(labels, lab, lab_len, 1);

  rc = fedc_idx_load(images, labels, &ds);
  ck_assert_msg(rc == c->rc, "case \"%s\" returned %s", c->what,
                fedc_errname(rc));
  ck_assert_ptr_null(ds.x);
  ck_assert_uint_eq(ds.n, 0);
  free(images);
  free(labels);
  test_rmtree(dir);
  free(dir);
}
END_TEST

START_TEST(idx_missing_and_corrupt_files)
{
  char *dir = test_mkdtemp(), *images, *labels;
  uint8_t gz[64];
  fedc_dataset ds;

  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&images, "%s/images.gz", dir), 0);
  ck_assert_int_ge(asprintf(&labels, "%s/labels.gz", dir), 0);
  write_file(labels, good_labels, sizeof(good_labels), 1);
  ck_assert_int_eq(fedc_idx_load(images, labels, &ds), FEDC_ENOENT);
  ck_assert_int_eq(fedc_idx_load(labels, images, &ds), FEDC_ENOENT);

  /* Images and labels passed the wrong way round. */
  write_file(images, good_images, sizeof(good_images), 1);
  ck_assert_int_eq(fedc_idx_load(labels, images, &ds), FEDC_EFORMAT);

  /* A gzip magic followed by garbage is a read error, not a crash. */
  memset(gz, 0x5a, sizeof(gz));
  gz[0] = 0x1f;
  gz[1] = 0x8b;
  gz[2] = 8;
  gz[3] = 0;
  write_file(images, gz, sizeof(gz), 0);
  ck_assert_int_ne(fedc_idx_load(images, labels, &ds), 0);
  ck_assert_ptr_null(ds.x);

  free(images);
  free(labels);
  test_rmtree(dir);
  free(dir);
}
END_TEST

static Suite *idx_suite(void)
{
  Suite *s = suite_create("idx");
  TCase *real = tcase_create("fashion-mnist");
  TCase *small = tcase_create("small");

  tcase_add_unchecked_fixture(real, load_train, free_train);
  tcase_set_timeout(real, 120);
  tcase_add_test(real, fmnist_train_shape);
  tcase_add_test(real, fmnist_train_class_counts);
  tcase_add_test(real, fmnist_pixels_in_unit_range);
  tcase_add_test(real, fmnist_matches_python_gzip);
  tcase_add_test(real, fmnist_test_split);
  suite_add_tcase(s, real);

  tcase_add_test(small, idx_small_plain_and_gzip);
  tcase_add_loop_test(small, idx_rejects_malformed, 0,
                      sizeof(bad_cases) / sizeof(bad_cases[0]));
  tcase_add_test(small, idx_missing_and_corrupt_files);
  suite_add_tcase(s, small);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(idx_suite());
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
