#include "tensor.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/clones.h"
#include "util/error.h"

#define LIST_MIN_CAPACITY 8

static const struct {
  enum fedc_dtype dtype;
  const char *name;
  size_t size;
} dtype_table[] = {
  { FEDC_DTYPE_F32, "F32", 4 },
  { FEDC_DTYPE_F64, "F64", 8 },
  { FEDC_DTYPE_I32, "I32", 4 },
  { FEDC_DTYPE_I64, "I64", 8 },
  { FEDC_DTYPE_U8, "U8", 1 },
};

#define DTYPE_COUNT (sizeof(dtype_table) / sizeof(dtype_table[0]))

size_t fedc_dtype_size(enum fedc_dtype dtype)
{
  for (size_t i = 0; i < DTYPE_COUNT; i++)
    if (dtype_table[i].dtype == dtype)
      return dtype_table[i].size;
  return 0;
}

const char *fedc_dtype_name(enum fedc_dtype dtype)
{
  for (size_t i = 0; i < DTYPE_COUNT; i++)
    if (dtype_table[i].dtype == dtype)
      return dtype_table[i].name;
  return NULL;
}

int fedc_dtype_parse(const char *name, enum fedc_dtype *out)
{
  for (size_t i = 0; i < DTYPE_COUNT; i++) {
    if (strcmp(dtype_table[i].name, name) == 0) {
      *out = dtype_table[i].dtype;
      return 0;
    }
  }
  return FEDC_EFORMAT;
}

int fedc_tensor_shape_nbytes(enum fedc_dtype dtype, int ndim,
                             const uint64_t *shape, uint64_t *out)
{
  uint64_t bytes = fedc_dtype_size(dtype);

  if (bytes == 0 || ndim < 0 || ndim > FEDC_TENSOR_MAX_DIMS)
    return FEDC_EINVAL;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] != 0 && bytes > UINT64_MAX / shape[i])
      return FEDC_EOVERFLOW;
    bytes *= shape[i];
  }

  /* The data must also be addressable in memory, which matters where
   * size_t is narrower than uint64_t. */
  if (bytes > SIZE_MAX)
    return FEDC_EOVERFLOW;
  *out = bytes;
  return 0;
}

uint64_t fedc_tensor_numel(const fedc_tensor *t)
{
  uint64_t count = 1;

  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] != 0 && count > UINT64_MAX / t->shape[i])
      return 0;
    count *= t->shape[i];
  }
  return count;
}

uint64_t fedc_tensor_nbytes(const fedc_tensor *t)
{
  uint64_t bytes;

  if (fedc_tensor_shape_nbytes(t->dtype, t->ndim, t->shape, &bytes) != 0)
    return 0;
  return bytes;
}

void fedc_tensor_list_init(fedc_tensor_list *list)
{
  list->items = NULL;
  list->count = 0;
  list->capacity = 0;
}

void fedc_tensor_list_close(fedc_tensor_list *list)
{
  for (size_t i = 0; i < list->count; i++)
    free(list->items[i].data);
  free(list->items);
  fedc_tensor_list_init(list);
}

int fedc_tensor_list_reserve(fedc_tensor_list *list, size_t count)
{
  size_t capacity = list->capacity;
  fedc_tensor *items;

  if (count <= capacity)
    return 0;
  /* An empty list gets exactly what is asked for: a model's two or three
   * tensors then fit in a block small enough for malloc's thread cache. */
  if (capacity == 0)
    capacity = count;
  else if (capacity < LIST_MIN_CAPACITY)
    capacity = LIST_MIN_CAPACITY;
  while (capacity < count) {
    if (capacity > SIZE_MAX / 2 / sizeof(*items))
      return FEDC_ENOMEM;
    capacity *= 2;
  }
  items = realloc(list->items, capacity * sizeof(*items));
  if (items == NULL)
    return FEDC_ENOMEM;
  list->items = items;
  list->capacity = capacity;
  return 0;
}

int fedc_tensor_list_add_owned(fedc_tensor_list *list, const char *name,
                               enum fedc_dtype dtype, int ndim,
                               const uint64_t *shape, void *data)
{
  size_t name_len = strlen(name);
  uint64_t bytes;
  fedc_tensor *t;
  int rc;

  if (name_len == 0 || name_len >= FEDC_TENSOR_NAME_MAX)
    return FEDC_EINVAL;
  rc = fedc_tensor_shape_nbytes(dtype, ndim, shape, &bytes);
  if (rc != 0)
    return rc;
  if (fedc_tensor_list_find(list, name) != NULL)
    return FEDC_EINVAL;
  rc = fedc_tensor_list_reserve(list, list->count + 1);
  if (rc != 0)
    return rc;

  t = &list->items[list->count++];
  memset(t, 0, sizeof(*t));
  memcpy(t->name, name, name_len + 1);
  t->dtype = dtype;
  t->ndim = ndim;
  if (ndim > 0)
    memcpy(t->shape, shape, (size_t)ndim * sizeof(shape[0]));
  t->data = data;
  return 0;
}

int fedc_tensor_list_add(fedc_tensor_list *list, const char *name,
                         enum fedc_dtype dtype, int ndim,
                         const uint64_t *shape, const void *data)
{
  uint64_t bytes;
  void *copy;
  int rc;

  rc = fedc_tensor_shape_nbytes(dtype, ndim, shape, &bytes);
  if (rc != 0)
    return rc;

  /* One byte at least, so that data is never NULL, even for no elements.
   * Zeroed only when there is nothing to copy in. */
  if (data != NULL && bytes > 0) {
    copy = malloc((size_t)bytes);
    if (copy != NULL)
      memcpy(copy, data, (size_t)bytes);
  } else {
    copy = calloc(bytes > 0 ? (size_t)bytes : 1, 1);
  }
  if (copy == NULL)
    return FEDC_ENOMEM;
  rc = fedc_tensor_list_add_owned(list, name, dtype, ndim, shape, copy);
  if (rc != 0)
    free(copy);
  return rc;
}

fedc_tensor *fedc_tensor_list_find(const fedc_tensor_list *list,
                                   const char *name)
{
  for (size_t i = 0; i < list->count; i++)
    if (strcmp(list->items[i].name, name) == 0)
      return &list->items[i];
  return NULL;
}

int fedc_tensor_list_copy(fedc_tensor_list *dst, const fedc_tensor_list *src)
{
  int rc;

  fedc_tensor_list_close(dst);
  rc = fedc_tensor_list_reserve(dst, src->count);
  for (size_t i = 0; rc == 0 && i < src->count; i++) {
    const fedc_tensor *t = &src->items[i];

    rc = fedc_tensor_list_add(dst, t->name, t->dtype, t->ndim, t->shape,
                              t->data);
  }
  if (rc != 0)
    fedc_tensor_list_close(dst);
  return rc;
}

static int same_layout(const fedc_tensor *a, const fedc_tensor *b)
{
  if (strcmp(a->name, b->name) != 0 || a->dtype != b->dtype ||
      a->ndim != b->ndim)
    return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i])
      return 0;
  return 1;
}

int fedc_tensor_list_check_layout(const fedc_tensor_list *a,
                                  const fedc_tensor_list *b)
{
  if (a->count != b->count)
    return FEDC_ESHAPE;
  for (size_t i = 0; i < a->count; i++)
    if (!same_layout(&a->items[i], &b->items[i]))
      return FEDC_ESHAPE;
  return 0;
}

/* Returns 1 when no float of v is NaN or Inf, which are the floats with
 * every exponent bit set. The largest magnitude, as bits without the sign,
 * is at least the exponent mask exactly for those. Sixteen independent
 * lanes and no branch let the maximum vectorise. */
FEDC_CLONES static int floats_are_finite(const float *v, uint64_t n)
{
  uint32_t lane[16] = { 0 };
  uint32_t top = 0;
  uint64_t i = 0;

  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) {
      uint32_t bits;

      memcpy(&bits, &v[i + j], sizeof(bits));
      bits &= UINT32_C(0x7fffffff);
      lane[j] = bits > lane[j] ? bits : lane[j];
    }
  for (; i < n; i++) {
    uint32_t bits;

    memcpy(&bits, &v[i], sizeof(bits));
    bits &= UINT32_C(0x7fffffff);
    top = bits > top ? bits : top;
  }
  for (int j = 0; j < 16; j++)
    top = lane[j] > top ? lane[j] : top;
  return top < UINT32_C(0x7f800000);
}

static int tensor_is_finite(const fedc_tensor *t)
{
  uint64_t n = fedc_tensor_numel(t);

  if (t->dtype == FEDC_DTYPE_F32) {
    if (!floats_are_finite(t->data, n))
      return 0;
  } else if (t->dtype == FEDC_DTYPE_F64) {
    const double *v = t->data;

    for (uint64_t i = 0; i < n; i++)
      if (!isfinite(v[i]))
        return 0;
  }
  return 1;
}

int fedc_tensor_list_check_finite(const fedc_tensor_list *list)
{
  for (size_t i = 0; i < list->count; i++)
    if (!tensor_is_finite(&list->items[i]))
      return FEDC_ENONFINITE;
  return 0;
}

/* Lanes of the sums of squares behind fedc_tensor_list_norm(): 32
 * doubles, four independent AVX-512 accumulators. */
#define NORM_LANES 32

/* Adds the squares of n floats to the lanes of part, in double.
 * Independent lanes break the chain of dependent additions that keeps a
 * single sum from vectorising. */
FEDC_CLONES static void add_squares_f32(const float *x, uint64_t n,
                                        double part[NORM_LANES])
{
  uint64_t k = 0;

  for (; k + NORM_LANES <= n; k += NORM_LANES)
    for (int j = 0; j < NORM_LANES; j++)
      part[j] += (double)x[k + j] * (double)x[k + j];
  for (; k < n; k++)
    part[0] += (double)x[k] * (double)x[k];
}

FEDC_CLONES static void add_squares_f64(const double *x, uint64_t n,
                                        double part[NORM_LANES])
{
  uint64_t k = 0;

  for (; k + NORM_LANES <= n; k += NORM_LANES)
    for (int j = 0; j < NORM_LANES; j++)
      part[j] += x[k + j] * x[k + j];
  for (; k < n; k++)
    part[0] += x[k] * x[k];
}

/* The norm from the lanes of sums of squares, added pairwise. */
static double lanes_norm(const double part[NORM_LANES])
{
  double sum[NORM_LANES];

  memcpy(sum, part, sizeof(sum));
  for (int width = NORM_LANES / 2; width > 0; width /= 2)
    for (int j = 0; j < width; j++)
      sum[j] += sum[j + width];
  return sqrt(sum[0]);
}

double fedc_tensor_list_norm(const fedc_tensor_list *list)
{
  double part[NORM_LANES] = { 0.0 };

  for (size_t i = 0; i < list->count; i++) {
    const fedc_tensor *t = &list->items[i];

    if (t->dtype == FEDC_DTYPE_F32)
      add_squares_f32(t->data, fedc_tensor_numel(t), part);
    else if (t->dtype == FEDC_DTYPE_F64)
      add_squares_f64(t->data, fedc_tensor_numel(t), part);
  }
  return lanes_norm(part);
}

/* Floats per block of subtract_f32(): small enough that a block is still
 * in the L1 cache when its squares are added, and a multiple of NORM_LANES,
 * so that the blocks add the squares in add_squares_f32()'s order. */
#define SUB_BLOCK 2048

FEDC_CLONES static void sub_floats(float *x, const float *y, uint64_t n)
{
  for (uint64_t k = 0; k < n; k++)
    x[k] -= y[k];
}

static bool lanes_finite(const double part[NORM_LANES])
{
  bool finite = true;

  for (int j = 0; j < NORM_LANES; j++)
    finite &= isfinite(part[j]) != 0;
  return finite;
}

/* x -= y, adding the squares of the differences to part as
 * add_squares_f32() would, and returning whether every difference is
 * finite. Block by block, so x is read from memory once: for a client,
 * those are the trained weights, which another thread wrote. A float
 * squared in double cannot overflow, so the lanes turn non-finite exactly
 * when a difference is. Lanes already non-finite, from an F64 tensor,
 * leave the floats to be checked one by one. */
static bool subtract_f32(float *x, const float *y, uint64_t n,
                         double part[NORM_LANES])
{
  bool clean = lanes_finite(part);

  for (uint64_t k = 0; k < n; k += SUB_BLOCK) {
    uint64_t m = n - k < SUB_BLOCK ? n - k : SUB_BLOCK;

    sub_floats(x + k, y + k, m);
    add_squares_f32(x + k, m, part);
  }
  return clean ? lanes_finite(part) : floats_are_finite(x, n) != 0;
}

/* subtract_f32() for doubles, the squares as add_squares_f64() adds them. */
FEDC_CLONES static bool subtract_f64(double *x, const double *y, uint64_t n,
                                     double part[NORM_LANES])
{
  bool finite = true;
  uint64_t k = 0;

  for (; k + NORM_LANES <= n; k += NORM_LANES)
    for (int j = 0; j < NORM_LANES; j++) {
      double d = x[k + j] - y[k + j];

      x[k + j] = d;
      part[j] += d * d;
      finite &= isfinite(d) != 0;
    }
  for (; k < n; k++) {
    double d = x[k] - y[k];

    x[k] = d;
    part[0] += d * d;
    finite &= isfinite(d) != 0;
  }
  return finite;
}

int fedc_tensor_list_sub(fedc_tensor_list *a, const fedc_tensor_list *b,
                         double *norm)
{
  double part[NORM_LANES] = { 0.0 };
  bool finite = true;

  if (fedc_tensor_list_check_layout(a, b) < 0)
    return FEDC_ESHAPE;
  for (size_t i = 0; i < a->count; i++)
    if (a->items[i].dtype != FEDC_DTYPE_F32 &&
        a->items[i].dtype != FEDC_DTYPE_F64)
      return FEDC_EUNSUPPORTED;
  for (size_t i = 0; i < a->count; i++) {
    fedc_tensor *x = &a->items[i];
    uint64_t n = fedc_tensor_numel(x);

    if (x->dtype == FEDC_DTYPE_F32)
      finite &= subtract_f32(x->data, b->items[i].data, n, part);
    else
      finite &= subtract_f64(x->data, b->items[i].data, n, part);
  }
  if (norm != NULL)
    *norm = lanes_norm(part);
  return finite ? 0 : FEDC_ENONFINITE;
}

uint64_t fedc_tensor_list_nbytes(const fedc_tensor_list *list)
{
  uint64_t total = 0;

  for (size_t i = 0; i < list->count; i++)
    total += fedc_tensor_nbytes(&list->items[i]);
  return total;
}
