#include "dataset.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/safetensors.h"
#include "util/error.h"
#include "util/log.h"

#define LOG_COMPONENT "dataset"

int fedc_dataset_alloc(fedc_dataset *ds, uint64_t n, uint32_t dim,
                       uint32_t num_classes)
{
  memset(ds, 0, sizeof(*ds));
  if (n > FEDC_DATASET_MAX_ROWS)
    return FEDC_ETOOBIG;
  if (dim != 0 && n > SIZE_MAX / sizeof(float) / dim)
    return FEDC_EOVERFLOW;

  /* One element at least, so that x and y are never NULL. */
  ds->x = calloc(n * dim > 0 ? (size_t)(n * dim) : 1, sizeof(float));
  ds->y = calloc(n > 0 ? (size_t)n : 1, sizeof(int32_t));
  if (ds->x == NULL || ds->y == NULL) {
    fedc_dataset_close(ds);
    return FEDC_ENOMEM;
  }
  ds->n = n;
  ds->dim = dim;
  ds->num_classes = num_classes;
  return 0;
}

void fedc_dataset_close(fedc_dataset *ds)
{
  free(ds->x);
  free(ds->y);
  memset(ds, 0, sizeof(*ds));
}

fedc_dataset_view fedc_dataset_all(const fedc_dataset *ds)
{
  fedc_dataset_view view = { ds, NULL, ds->n };

  return view;
}

int fedc_dataset_label_counts(const fedc_dataset_view *view,
                              uint64_t *counts)
{
  const fedc_dataset *ds = view->base;

  memset(counts, 0, ds->num_classes * sizeof(*counts));
  for (uint64_t i = 0; i < view->n; i++) {
    int32_t label = ds->y[fedc_view_row(view, i)];

    if (label < 0 || (uint32_t)label >= ds->num_classes)
      return FEDC_EINVAL;
    counts[label]++;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Saving
 */

/* Returns 1 when every feature of the view is k/255 for an integer k in
 * 0..255, computed in float exactly as loading computes it back, so that
 * storing the features as U8 loses nothing. */
static int view_is_u8(const fedc_dataset_view *view)
{
  const fedc_dataset *ds = view->base;

  for (uint64_t i = 0; i < view->n; i++) {
    const float *row = ds->x + fedc_view_row(view, i) * ds->dim;

    for (uint32_t j = 0; j < ds->dim; j++) {
      float scaled = row[j] * 255.0f;

      if (!(scaled >= 0.0f && scaled <= 255.0f) ||
          (float)lrintf(scaled) / 255.0f != row[j])
        return 0;
    }
  }
  return 1;
}

/* Returns 1 when shape is a c, h, w image shape of dim features. */
static int image_shape_matches(const uint32_t shape[3], uint32_t dim)
{
  uint64_t hw = (uint64_t)shape[1] * shape[2];

  return shape[0] != 0 && hw != 0 && hw <= UINT32_MAX &&
         hw * shape[0] == dim;
}

/* Adds the "features" tensor: U8 when lossless, F32 otherwise, shaped
 * [n, c, h, w] for images and [n, dim] for the rest. */
static int add_features(fedc_tensor_list *list, const fedc_dataset_view *view)
{
  const fedc_dataset *ds = view->base;
  const uint32_t *img = ds->image_shape;
  int as_u8 = view_is_u8(view);
  int images = image_shape_matches(img, ds->dim);
  uint64_t shape[4] = { view->n, ds->dim, 0, 0 };
  size_t count = (size_t)(view->n * ds->dim);
  void *data = malloc(count > 0 ? count * (as_u8 ? 1 : sizeof(float)) : 1);
  int rc;

  if (data == NULL)
    return FEDC_ENOMEM;
  if (images) {
    shape[1] = img[0];
    shape[2] = img[1];
    shape[3] = img[2];
  }
  for (uint64_t i = 0; i < view->n; i++) {
    const float *row = ds->x + fedc_view_row(view, i) * ds->dim;

    if (as_u8) {
      uint8_t *out = (uint8_t *)data + i * ds->dim;

      for (uint32_t j = 0; j < ds->dim; j++)
        out[j] = (uint8_t)lrintf(row[j] * 255.0f);
    } else {
      memcpy((float *)data + i * ds->dim, row, ds->dim * sizeof(float));
    }
  }
  rc = fedc_tensor_list_add_owned(list, "features",
                                  as_u8 ? FEDC_DTYPE_U8 : FEDC_DTYPE_F32,
                                  images ? 4 : 2, shape, data);
  if (rc != 0)
    free(data);
  return rc;
}

static int add_labels(fedc_tensor_list *list, const fedc_dataset_view *view)
{
  uint64_t shape[1] = { view->n };
  int32_t *labels = malloc(view->n > 0 ? view->n * sizeof(*labels) : 1);
  int rc;

  if (labels == NULL)
    return FEDC_ENOMEM;
  for (uint64_t i = 0; i < view->n; i++)
    labels[i] = view->base->y[fedc_view_row(view, i)];
  rc = fedc_tensor_list_add_owned(list, "labels", FEDC_DTYPE_I32, 1, shape,
                                  labels);
  if (rc != 0)
    free(labels);
  return rc;
}

static int set_metadata(fedc_metadata *meta, const fedc_dataset *ds)
{
  char text[64];
  int rc;

  snprintf(text, sizeof(text), "%" PRIu32, ds->num_classes);
  rc = fedc_metadata_set(meta, "num_classes", text);
  if (rc == 0 && ds->image_shape[0] != 0) {
    snprintf(text, sizeof(text), "%" PRIu32 ",%" PRIu32 ",%" PRIu32,
             ds->image_shape[0], ds->image_shape[1], ds->image_shape[2]);
    rc = fedc_metadata_set(meta, "image_shape", text);
  }
  return rc;
}

int fedc_dataset_save(const char *path, const fedc_dataset_view *view)
{
  fedc_tensor_list list;
  fedc_metadata meta;
  int rc;

  fedc_tensor_list_init(&list);
  fedc_metadata_init(&meta);
  rc = add_features(&list, view);
  if (rc == 0)
    rc = add_labels(&list, view);
  if (rc == 0)
    rc = set_metadata(&meta, view->base);
  if (rc == 0)
    rc = fedc_safetensors_write(path, &list, &meta);
  if (rc != 0)
    fedc_warn(LOG_COMPONENT, "cannot write %s: %s", path, fedc_strerror(rc));
  fedc_tensor_list_close(&list);
  fedc_metadata_close(&meta);
  return rc;
}

/* ------------------------------------------------------------------------
 * Loading
 */

static int invalid(const char *path, const char *why)
{
  fedc_warn(LOG_COMPONENT, "invalid data file %s: %s", path, why);
  return FEDC_EFORMAT;
}

/* Parses a decimal integer in 1..max that fills the whole string. */
static int parse_count(const char *text, uint64_t max, uint32_t *out)
{
  char *end;
  unsigned long long v;

  if (text == NULL || text[0] < '0' || text[0] > '9')
    return FEDC_EFORMAT;
  errno = 0;
  v = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || v == 0 || v > max)
    return FEDC_EFORMAT;
  *out = (uint32_t)v;
  return 0;
}

/* Parses an image shape written as "c,h,w". */
static int parse_image_shape(const char *text, uint32_t shape[3])
{
  char part[3][24];

  if (text == NULL || sscanf(text, "%23[0-9],%23[0-9],%23[0-9]", part[0],
                             part[1], part[2]) != 3)
    return FEDC_EFORMAT;
  for (int i = 0; i < 3; i++)
    if (parse_count(part[i], UINT32_MAX, &shape[i]) != 0)
      return FEDC_EFORMAT;
  return 0;
}

/* Checks the dtypes and shapes of the two tensors and computes n and dim. */
static int check_tensors(const char *path, const fedc_tensor *x,
                         const fedc_tensor *y, uint64_t *n, uint32_t *dim)
{
  uint64_t features = 1;

  if (x == NULL || y == NULL)
    return invalid(path, "missing \"features\" or \"labels\" tensor");
  if ((x->dtype != FEDC_DTYPE_F32 && x->dtype != FEDC_DTYPE_U8) ||
      (x->ndim != 2 && x->ndim != 4))
    return invalid(path, "\"features\" must be F32 or U8 of 2 or 4 dims");
  if ((y->dtype != FEDC_DTYPE_I32 && y->dtype != FEDC_DTYPE_U8) ||
      y->ndim != 1 || y->shape[0] != x->shape[0])
    return invalid(path, "\"labels\" must be I32 or U8 with one per row");
  if (x->shape[0] > FEDC_DATASET_MAX_ROWS)
    return invalid(path, "too many rows");
  for (int d = 1; d < x->ndim; d++)
    features *= x->shape[d];  /* cannot overflow: the tensor was decoded */
  if (features == 0 || features > UINT32_MAX)
    return invalid(path, "features per row not in 1..2^32-1");
  *n = x->shape[0];
  *dim = (uint32_t)features;
  return 0;
}

/* Fills ds->y from the labels tensor and sets num_classes from the
 * metadata, or from the largest label when the metadata has none. */
static int load_labels(const char *path, const fedc_tensor *y,
                       const fedc_metadata *meta, fedc_dataset *ds)
{
  const char *classes = fedc_metadata_get(meta, "num_classes");
  int64_t max_label = -1;

  for (uint64_t i = 0; i < ds->n; i++) {
    int32_t label = y->dtype == FEDC_DTYPE_U8 ? ((const uint8_t *)y->data)[i]
                                              : ((const int32_t *)y->data)[i];

    if (label < 0)
      return invalid(path, "negative label");
    ds->y[i] = label;
    if (label > max_label)
      max_label = label;
  }
  if (classes != NULL) {
    if (parse_count(classes, INT32_MAX, &ds->num_classes) != 0)
      return invalid(path, "metadata num_classes is not a positive integer");
  } else {
    ds->num_classes = (uint32_t)(max_label + 1);
  }
  if (max_label >= (int64_t)ds->num_classes)
    return invalid(path, "label not below num_classes");
  return 0;
}

static int load_features(const char *path, const fedc_tensor *x,
                         const fedc_metadata *meta, fedc_dataset *ds)
{
  size_t count = (size_t)(ds->n * ds->dim);
  const char *shape_text = fedc_metadata_get(meta, "image_shape");

  if (x->dtype == FEDC_DTYPE_U8) {
    for (size_t i = 0; i < count; i++)
      ds->x[i] = ((const uint8_t *)x->data)[i] / 255.0f;
  } else {
    memcpy(ds->x, x->data, count * sizeof(float));
    for (size_t i = 0; i < count; i++)
      if (!isfinite(ds->x[i]))
        return invalid(path, "NaN or Inf feature");
  }

  if (x->ndim == 4) {
    for (int d = 0; d < 3; d++)
      ds->image_shape[d] = (uint32_t)x->shape[d + 1];
  } else if (shape_text != NULL) {
    uint32_t *img = ds->image_shape;

    if (parse_image_shape(shape_text, img) != 0 ||
        !image_shape_matches(img, ds->dim))
      return invalid(path, "metadata image_shape does not match the rows");
  }
  return 0;
}

int fedc_dataset_load(const char *path, fedc_dataset *ds)
{
  fedc_tensor_list list;
  fedc_metadata meta;
  const fedc_tensor *x, *y;
  uint64_t n;
  uint32_t dim;
  int rc;

  fedc_tensor_list_init(&list);
  fedc_metadata_init(&meta);
  memset(ds, 0, sizeof(*ds));
  rc = fedc_safetensors_read(path, &list, &meta);
  if (rc != 0) {
    fedc_warn(LOG_COMPONENT, "cannot read %s: %s", path, fedc_strerror(rc));
    goto out;
  }
  x = fedc_tensor_list_find(&list, "features");
  y = fedc_tensor_list_find(&list, "labels");
  rc = check_tensors(path, x, y, &n, &dim);
  if (rc != 0)
    goto out;
  rc = fedc_dataset_alloc(ds, n, dim, 0);
  if (rc == 0)
    rc = load_labels(path, y, &meta, ds);
  if (rc == 0)
    rc = load_features(path, x, &meta, ds);
out:
  if (rc != 0)
    fedc_dataset_close(ds);
  fedc_tensor_list_close(&list);
  fedc_metadata_close(&meta);
  return rc;
}
