/* Reference-counted tensor lists shared by an engine and the messages,
 * chunk streams and driver actions that point into them.
 *
 * A snapshot lets an engine hand the same model to many outgoing streams,
 * an evaluation and a checkpoint without copying it, and lets each of them
 * outlive the engine's own interest in that model: the tensors are freed
 * when the last reference goes. Holders other than the creator treat the
 * tensors as read-only. The creator may change tensor data in place only
 * while it holds the sole reference (fedc_snapshot_mutable()); otherwise it
 * copies first, so a stream still sending an older model never sees the
 * newer one. The reference count is atomic, so a driver may drop its
 * reference on a worker thread. */
#ifndef FEDC_WIRE_SNAPSHOT_H
#define FEDC_WIRE_SNAPSHOT_H

#include <stddef.h>

#include "fedc.pb-c.h"
#include "tensor/tensor.h"

typedef struct fedc_snapshot fedc_snapshot;

/* Creates a snapshot with one reference that takes ownership of list's
 * tensors; list is left empty. It also builds the wire specs of the
 * tensors. Returns 0, FEDC_EINVAL for an empty list or a tensor without
 * elements, or FEDC_ENOMEM; list is unchanged on error. */
int fedc_snapshot_new(fedc_tensor_list *list, fedc_snapshot **out);

/* Subtracts base from list with fedc_tensor_list_sub() and creates a
 * snapshot of the differences as fedc_snapshot_new() does, their norm
 * already known to fedc_snapshot_norm(): a client's update, read once.
 * Returns fedc_tensor_list_sub()'s errors, list still the caller's, or
 * fedc_snapshot_new()'s. */
int fedc_snapshot_new_difference(fedc_tensor_list *list,
                                 const fedc_tensor_list *base,
                                 fedc_snapshot **out);

/* Adds a reference and returns snapshot. */
fedc_snapshot *fedc_snapshot_ref(fedc_snapshot *snapshot);

/* Drops the caller's reference, frees the snapshot with the last one and
 * clears *snapshot; accepts NULL and a pointer to NULL. */
void fedc_snapshot_unref(fedc_snapshot **snapshot);

const fedc_tensor_list *fedc_snapshot_tensors(const fedc_snapshot *snapshot);

/* Returns the tensors for writing their data when the caller holds the only
 * reference, and NULL otherwise. Names, dtypes and shapes must not change,
 * because the wire specs point into them. It clears the norm cached by
 * fedc_snapshot_norm(), so a caller calls it again before each change. */
fedc_tensor_list *fedc_snapshot_mutable(fedc_snapshot *snapshot);

/* Returns the L2 norm of the tensors as fedc_tensor_list_norm() computes
 * it, NaN or Inf when some value is. The first call computes it and later
 * ones return it at no cost, until fedc_snapshot_mutable() is called: a
 * model sent to a hundred clients is checked once. */
double fedc_snapshot_norm(fedc_snapshot *snapshot);

/* Returns 0 when every F32 and F64 value is finite, else FEDC_ENONFINITE,
 * as fedc_tensor_list_check_finite() does. Without F64 tensors it uses
 * fedc_snapshot_norm(), so the result is cached with the norm. */
int fedc_snapshot_check_finite(fedc_snapshot *snapshot);

/* Returns the wire specs of the tensors, in tensor order; the array has
 * fedc_snapshot_tensors()->count entries and lives as long as the snapshot.
 * Message builders point at it rather than copying it. */
Fedc__TensorSpec **fedc_snapshot_specs(const fedc_snapshot *snapshot);

#endif
