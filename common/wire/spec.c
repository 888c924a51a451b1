#include "wire/spec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

__attribute__((format(printf, 3, 4)))
static void fail(char *reason, size_t len, const char *fmt, ...)
{
  va_list ap;

  if (!reason || len == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(reason, len, fmt, ap);
  va_end(ap);
}

/* Names go into log lines, so they are limited to printable ASCII without
 * spaces, which covers PyTorch state_dict keys. */
static int name_is_valid(const char *name)
{
  size_t len = name ? strnlen(name, FEDC_TENSOR_NAME_MAX) : 0;

  if (len == 0 || len >= FEDC_TENSOR_NAME_MAX)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (name[i] < 0x21 || name[i] > 0x7e)
      return 0;
  return 1;
}

static int check_one(const Fedc__TensorSpec *spec, size_t index,
                     uint64_t *bytes, char *reason, size_t len)
{
  int rc;

  if (!name_is_valid(spec->name)) {
    fail(reason, len, "tensor %zu has an empty, over-long or non-printable "
         "name", index);
    return FEDC_EFORMAT;
  }
  if (spec->n_shape > FEDC_TENSOR_MAX_DIMS) {
    fail(reason, len, "tensor %s has %zu dimensions, above the maximum %d",
         spec->name, spec->n_shape, FEDC_TENSOR_MAX_DIMS);
    return FEDC_EFORMAT;
  }
  for (size_t d = 0; d < spec->n_shape; d++) {
    if (spec->shape[d] == 0) {
      fail(reason, len, "tensor %s has a dimension of size 0", spec->name);
      return FEDC_EFORMAT;
    }
  }

  rc = fedc_tensor_shape_nbytes((enum fedc_dtype)spec->dtype,
                                (int)spec->n_shape, spec->shape, bytes);
  if (rc == FEDC_EINVAL) {
    fail(reason, len, "tensor %s has unknown dtype %d", spec->name,
         (int)spec->dtype);
    return FEDC_EFORMAT;
  }
  if (rc < 0) {
    fail(reason, len, "tensor %s size overflows", spec->name);
    return FEDC_EOVERFLOW;
  }
  return 0;
}

static int compare_names(const void *a, const void *b)
{
  const Fedc__TensorSpec *const *x = a;
  const Fedc__TensorSpec *const *y = b;

  return strcmp((*x)->name, (*y)->name);
}

/* Specs up to which check_unique() compares every pair rather than sort:
 * a model's few tensors then cost no allocation. */
#define PAIRWISE_MAX 32

/* Sorts a copy of the pointers beyond PAIRWISE_MAX specs, so the check
 * costs O(n log n) even for a peer that announces the maximum number of
 * tensors. */
static int check_unique(Fedc__TensorSpec *const *specs, size_t n,
                        char *reason, size_t len)
{
  const Fedc__TensorSpec **sorted;
  int rc = 0;

  if (n <= PAIRWISE_MAX) {
    for (size_t i = 1; i < n; i++)
      for (size_t j = 0; j < i; j++)
        if (strcmp(specs[j]->name, specs[i]->name) == 0) {
          fail(reason, len, "tensor name %s appears twice", specs[i]->name);
          return FEDC_EFORMAT;
        }
    return 0;
  }
  sorted = malloc(n * sizeof(*sorted));
  if (!sorted)
    return FEDC_ENOMEM;
  memcpy(sorted, specs, n * sizeof(*sorted));
  qsort(sorted, n, sizeof(*sorted), compare_names);
  for (size_t i = 1; i < n; i++) {
    if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
      fail(reason, len, "tensor name %s appears twice", sorted[i]->name);
      rc = FEDC_EFORMAT;
      break;
    }
  }
  free(sorted);
  return rc;
}

int fedc_spec_check(Fedc__TensorSpec *const *specs, size_t n,
                    const fedc_spec_limits *limits, uint64_t *total_bytes,
                    char *reason, size_t reason_len)
{
  uint64_t total = 0;

  if (n == 0 || n > limits->max_tensors) {
    fail(reason, reason_len, "%zu tensors announced, expected 1 to %zu", n,
         limits->max_tensors);
    return n == 0 ? FEDC_EFORMAT : FEDC_ETOOBIG;
  }

  for (size_t i = 0; i < n; i++) {
    uint64_t bytes = 0;
    int rc = check_one(specs[i], i, &bytes, reason, reason_len);

    if (rc < 0)
      return rc;
    if (bytes > limits->max_bytes - total) {
      fail(reason, reason_len, "announced tensors exceed %llu bytes",
           (unsigned long long)limits->max_bytes);
      return FEDC_ETOOBIG;
    }
    total += bytes;
  }

  if (total_bytes)
    *total_bytes = total;
  return check_unique(specs, n, reason, reason_len);
}

static int same_shape(const Fedc__TensorSpec *spec, const fedc_tensor *t)
{
  if (spec->n_shape != (size_t)t->ndim)
    return 0;
  for (size_t d = 0; d < spec->n_shape; d++)
    if (spec->shape[d] != t->shape[d])
      return 0;
  return 1;
}

int fedc_spec_match_layout(Fedc__TensorSpec *const *specs, size_t n,
                           const fedc_tensor_list *layout,
                           char *reason, size_t reason_len)
{
  if (n != layout->count) {
    fail(reason, reason_len, "%zu tensors announced, the model has %zu", n,
         layout->count);
    return FEDC_ESHAPE;
  }
  for (size_t i = 0; i < n; i++) {
    const fedc_tensor *t = &layout->items[i];

    if (!specs[i]->name || strcmp(specs[i]->name, t->name) != 0) {
      fail(reason, reason_len, "tensor %zu is named %.64s, expected %s", i,
           specs[i]->name ? specs[i]->name : "(none)", t->name);
      return FEDC_ESHAPE;
    }
    if ((int)specs[i]->dtype != (int)t->dtype || !same_shape(specs[i], t)) {
      fail(reason, reason_len, "tensor %s has the wrong dtype or shape",
           t->name);
      return FEDC_ESHAPE;
    }
  }
  return 0;
}
