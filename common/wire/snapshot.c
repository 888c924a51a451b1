#include "wire/snapshot.h"

#include <math.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* The bits of norm_bits before the norm is known: a NaN that
 * fedc_tensor_list_norm() does not return, because a float NaN widened to
 * double leaves the low 29 bits clear. */
#define NORM_UNKNOWN UINT64_MAX

struct fedc_snapshot {
  atomic_size_t refs;
  _Atomic uint64_t norm_bits;  /* the cached L2 norm, or NORM_UNKNOWN */
  fedc_tensor_list tensors;
  Fedc__TensorSpec *spec_items;
  Fedc__TensorSpec **specs;
};

/* Points each spec at its tensor's name and shape, so building the specs
 * costs no copy of either. */
static int build_specs(fedc_snapshot *s)
{
  size_t n = s->tensors.count;

  s->spec_items = calloc(n, sizeof(*s->spec_items));
  s->specs = calloc(n, sizeof(*s->specs));
  if (!s->spec_items || !s->specs)
    return FEDC_ENOMEM;

  for (size_t i = 0; i < n; i++) {
    fedc_tensor *t = &s->tensors.items[i];
    Fedc__TensorSpec *spec = &s->spec_items[i];

    fedc__tensor_spec__init(spec);
    spec->name = t->name;
    spec->n_shape = (size_t)t->ndim;
    spec->shape = t->shape;
    spec->dtype = (Fedc__DType)t->dtype;
    s->specs[i] = spec;
  }
  return 0;
}

static void destroy(fedc_snapshot *s)
{
  fedc_tensor_list_close(&s->tensors);
  free(s->spec_items);
  free(s->specs);
  free(s);
}

/* The wire has no way to send a tensor without elements, since every
 * chunk carries at least one. */
static int has_empty_tensor(const fedc_tensor_list *list)
{
  for (size_t i = 0; i < list->count; i++)
    if (fedc_tensor_numel(&list->items[i]) == 0)
      return 1;
  return 0;
}

int fedc_snapshot_new(fedc_tensor_list *list, fedc_snapshot **out)
{
  fedc_snapshot *s;

  *out = NULL;
  if (list->count == 0 || has_empty_tensor(list))
    return FEDC_EINVAL;
  s = calloc(1, sizeof(*s));
  if (!s)
    return FEDC_ENOMEM;

  atomic_init(&s->refs, 1);
  atomic_init(&s->norm_bits, NORM_UNKNOWN);
  s->tensors = *list;
  if (build_specs(s) < 0) {
    /* Give the tensors back before freeing the rest. */
    fedc_tensor_list_init(&s->tensors);
    destroy(s);
    return FEDC_ENOMEM;
  }
  fedc_tensor_list_init(list);
  *out = s;
  return 0;
}

int fedc_snapshot_new_difference(fedc_tensor_list *list,
                                 const fedc_tensor_list *base,
                                 fedc_snapshot **out)
{
  double norm;
  uint64_t bits;
  int rc;

  *out = NULL;
  rc = fedc_tensor_list_sub(list, base, &norm);
  if (rc == 0)
    rc = fedc_snapshot_new(list, out);
  if (rc < 0)
    return rc;
  memcpy(&bits, &norm, sizeof(bits));
  atomic_store_explicit(&(*out)->norm_bits, bits, memory_order_relaxed);
  return 0;
}

fedc_snapshot *fedc_snapshot_ref(fedc_snapshot *snapshot)
{
  atomic_fetch_add_explicit(&snapshot->refs, 1, memory_order_relaxed);
  return snapshot;
}

void fedc_snapshot_unref(fedc_snapshot **snapshot)
{
  fedc_snapshot *s;

  if (!snapshot || !*snapshot)
    return;
  s = *snapshot;
  *snapshot = NULL;
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
    destroy(s);
}

const fedc_tensor_list *fedc_snapshot_tensors(const fedc_snapshot *snapshot)
{
  return &snapshot->tensors;
}

fedc_tensor_list *fedc_snapshot_mutable(fedc_snapshot *snapshot)
{
  /* Acquire pairs with the release in unref: another holder's last reads
   * happen before our writes. */
  if (atomic_load_explicit(&snapshot->refs, memory_order_acquire) != 1)
    return NULL;
  atomic_store_explicit(&snapshot->norm_bits, NORM_UNKNOWN,
                        memory_order_relaxed);
  return &snapshot->tensors;
}

double fedc_snapshot_norm(fedc_snapshot *snapshot)
{
  uint64_t bits = atomic_load_explicit(&snapshot->norm_bits,
                                       memory_order_relaxed);
  double norm;

  if (bits != NORM_UNKNOWN) {
    memcpy(&norm, &bits, sizeof(norm));
    return norm;
  }
  /* Two threads may both compute it; they store the same value. */
  norm = fedc_tensor_list_norm(&snapshot->tensors);
  if (isnan(norm))
    norm = NAN;
  memcpy(&bits, &norm, sizeof(bits));
  atomic_store_explicit(&snapshot->norm_bits, bits, memory_order_relaxed);
  return norm;
}

Fedc__TensorSpec **fedc_snapshot_specs(const fedc_snapshot *snapshot)
{
  return snapshot->specs;
}

static bool has_f64(const fedc_tensor_list *list)
{
  for (size_t i = 0; i < list->count; i++)
    if (list->items[i].dtype == FEDC_DTYPE_F64)
      return true;
  return false;
}

int fedc_snapshot_check_finite(fedc_snapshot *snapshot)
{
  /* A float squared in double cannot overflow, so without F64 tensors the
   * norm is finite exactly when every value is. */
  if (!has_f64(&snapshot->tensors))
    return isfinite(fedc_snapshot_norm(snapshot)) ? 0 : FEDC_ENONFINITE;
  return fedc_tensor_list_check_finite(&snapshot->tensors);
}
