/* Reassembly and validation of a tensor stream received from a peer.
 *
 * An assembler is created from the spec list that announced the stream
 * (FitTask, FitResult or EvaluateTask), validates the specs before it
 * allocates anything, then takes the chunks one by one and checks each
 * against the stream rules in wire/chunker.h: the announced round and
 * stream kind, the current tensor index, the next expected element offset,
 * a data length that is a positive whole number of elements within the
 * tensor, finite F32/F64 values, and the last flag on the final chunk only.
 * The first violation fails the stream for good. */
#ifndef FEDC_WIRE_ASSEMBLER_H
#define FEDC_WIRE_ASSEMBLER_H

#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"
#include "tensor/tensor.h"
#include "wire/snapshot.h"
#include "wire/spec.h"

#define FEDC_ASSEMBLER_REASON_MAX 160

typedef struct fedc_assembler fedc_assembler;

/* Validates specs with fedc_spec_check() and limits and, when layout is not
 * NULL, with fedc_spec_match_layout() against it, then lists the tensors;
 * their data is allocated as chunks arrive. Returns 0 and the assembler, or FEDC_EFORMAT, FEDC_ETOOBIG,
 * FEDC_EOVERFLOW, FEDC_ESHAPE or FEDC_ENOMEM with the failed check written
 * to reason (may be NULL, FEDC_ASSEMBLER_REASON_MAX bytes are enough). */
int fedc_assembler_new(uint64_t round, Fedc__StreamKind stream,
                       Fedc__TensorSpec *const *specs, size_t n,
                       const fedc_spec_limits *limits,
                       const fedc_tensor_list *layout,
                       fedc_assembler **out, char *reason, size_t reason_len);

void fedc_assembler_free(fedc_assembler **assembler);

/* Adds one chunk; a tensor's memory is allocated at its first chunk.
 * Returns 0 while more chunks are expected, 1 when this chunk completed the
 * stream, FEDC_ESTALE for a chunk of another round, FEDC_EFORMAT for any
 * other stream-rule violation, FEDC_ENONFINITE for a NaN or Inf value,
 * FEDC_ENOMEM, and FEDC_ESTATE after the stream has completed or failed.
 * fedc_assembler_reason() then says which rule failed. */
int fedc_assembler_add(fedc_assembler *assembler,
                       const Fedc__TensorChunk *chunk);

/* Checks a whole stream passed in memory in place of its chunks: the
 * tensors of snapshot as the chunks of a stream of round and kind stream
 * would carry them. The checks are those of fedc_assembler_add(): round,
 * stream kind, the announced names, dtypes and shapes, and finite F32/F64
 * values, found by fedc_snapshot_check_finite(), so that a snapshot sent
 * to many receivers is read once. Nothing is copied and nothing is left to
 * take, because the caller keeps the snapshot. Returns 1 when the stream
 * is accepted, or FEDC_ESTALE, FEDC_EFORMAT, FEDC_ENONFINITE, or
 * FEDC_ESTATE after a chunk or the end of the stream, with
 * fedc_assembler_reason() naming the failed check. */
int fedc_assembler_check_snapshot(fedc_assembler *assembler, uint64_t round,
                                  Fedc__StreamKind stream,
                                  fedc_snapshot *snapshot);

/* Moves the received tensors into out (closed first). Returns 0, or
 * FEDC_ESTATE unless the stream is complete and not yet taken. */
int fedc_assembler_take(fedc_assembler *assembler, fedc_tensor_list *out);

/* Returns the failure of the last call, or "" if there was none. */
const char *fedc_assembler_reason(const fedc_assembler *assembler);

/* Returns the tensor data bytes received so far and announced in total. */
uint64_t fedc_assembler_received_bytes(const fedc_assembler *assembler);
uint64_t fedc_assembler_total_bytes(const fedc_assembler *assembler);

#endif
