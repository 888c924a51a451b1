/* Lazy splitting of a tensor list into TensorChunk envelopes.
 *
 * A chunker produces one chunk at a time, on request, so a driver that
 * sends chunks as its socket drains never holds more than one of them:
 * a model of any size streams in O(chunk) extra memory. The chunk data
 * points into the snapshot, so producing a chunk copies nothing.
 *
 * Stream rules (the receiving side is fedc_assembler): tensors go in list
 * order; each chunk carries data of one tensor only, a whole number of
 * elements and at most chunk_bytes bytes (at least one element); offset
 * counts elements from the start of the tensor; the last chunk of the
 * stream, and only it, has last set. */
#ifndef FEDC_WIRE_CHUNKER_H
#define FEDC_WIRE_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"
#include "wire/snapshot.h"

typedef struct fedc_chunker fedc_chunker;

/* Creates a chunker over snapshot's tensors, taking a new reference to it.
 * Every chunk carries round and stream. chunk_bytes is rounded down to a
 * whole number of elements of each tensor. Returns 0, FEDC_EINVAL for a
 * chunk_bytes of 0, or FEDC_ENOMEM. */
int fedc_chunker_new(fedc_snapshot *snapshot, uint64_t round,
                     Fedc__StreamKind stream, size_t chunk_bytes,
                     fedc_chunker **out);

/* Frees the chunker, drops its snapshot reference and clears *chunker;
 * accepts NULL and a pointer to NULL. A stream may be freed before its end,
 * for example when the peer is closed. */
void fedc_chunker_free(fedc_chunker **chunker);

/* Returns the envelope of the next chunk, or NULL when the stream is done.
 * The envelope belongs to the chunker and stays valid until the next call
 * or fedc_chunker_free(); pack it or hand it on before then. */
const Fedc__Envelope *fedc_chunker_next(fedc_chunker *chunker);

/* Returns the tensor data bytes of the whole stream. */
uint64_t fedc_chunker_total_bytes(const fedc_chunker *chunker);

/* Returns the tensor data bytes not yet produced by fedc_chunker_next(). */
uint64_t fedc_chunker_remaining_bytes(const fedc_chunker *chunker);

/* Returns the round and the stream kind the chunks carry. */
uint64_t fedc_chunker_round(const fedc_chunker *chunker);
Fedc__StreamKind fedc_chunker_stream(const fedc_chunker *chunker);

/* Returns the snapshot whose tensors the chunks carry, for an in-memory
 * driver that hands the whole stream over at once. The chunker keeps its
 * reference; a receiver that keeps the snapshot takes its own with
 * fedc_snapshot_ref(). */
fedc_snapshot *fedc_chunker_snapshot(const fedc_chunker *chunker);

#endif
