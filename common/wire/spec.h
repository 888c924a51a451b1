/* Validation of tensor spec lists announced by a peer.
 *
 * A FitTask, FitResult or EvaluateTask announces the tensors that follow as
 * chunks. The specs come from the network, so they are checked before
 * anything is allocated for them. */
#ifndef FEDC_WIRE_SPEC_H
#define FEDC_WIRE_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"
#include "tensor/tensor.h"

/* Bounds on what a peer may announce. */
typedef struct fedc_spec_limits {
  size_t max_tensors;        /* tensors in one list */
  uint64_t max_bytes;        /* tensor data of the whole list, in bytes */
} fedc_spec_limits;

/* Default bounds: FEDC_SPEC_MAX_TENSORS tensors and FEDC_SPEC_MAX_BYTES. */
#define FEDC_SPEC_MAX_TENSORS 16384
#define FEDC_SPEC_MAX_BYTES (UINT64_C(4) << 30)

/* Checks a spec list from a peer: 1 to max_tensors specs; each name
 * non-empty, printable ASCII without spaces, shorter than
 * FEDC_TENSOR_NAME_MAX and unique; a known dtype; at most
 * FEDC_TENSOR_MAX_DIMS dimensions, none of them 0; sizes that do not
 * overflow; a total of at most max_bytes. Stores the total data size in
 * *total_bytes when it is not NULL. Returns 0, FEDC_EFORMAT,
 * FEDC_EOVERFLOW, FEDC_ETOOBIG or FEDC_ENOMEM; on a failed check it writes
 * the reason to reason (may be NULL). */
int fedc_spec_check(Fedc__TensorSpec *const *specs, size_t n,
                    const fedc_spec_limits *limits, uint64_t *total_bytes,
                    char *reason, size_t reason_len);

/* Returns 0 when the specs name exactly the tensors of layout, in the same
 * order and with the same dtypes and shapes, and FEDC_ESHAPE otherwise,
 * with the first difference written to reason (may be NULL). */
int fedc_spec_match_layout(Fedc__TensorSpec *const *specs, size_t n,
                           const fedc_tensor_list *layout,
                           char *reason, size_t reason_len);

#endif
