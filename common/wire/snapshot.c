#include "wire/snapshot.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "util/error.h"

struct fedc_snapshot {
  atomic_size_t refs;
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
  return &snapshot->tensors;
}

Fedc__TensorSpec **fedc_snapshot_specs(const fedc_snapshot *snapshot)
{
  return snapshot->specs;
}
