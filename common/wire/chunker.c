#include "wire/chunker.h"

#include <stdlib.h>

#include "util/error.h"
#include "wire/message.h"

struct fedc_chunker {
  fedc_snapshot *snapshot;
  size_t chunk_bytes;
  uint64_t total_bytes;
  uint64_t sent_bytes;

  /* Position of the next chunk: tensor index and element offset. */
  size_t tensor;
  uint64_t offset;

  Fedc__Envelope envelope;
  Fedc__TensorChunk chunk;
};

int fedc_chunker_new(fedc_snapshot *snapshot, uint64_t round,
                     Fedc__StreamKind stream, size_t chunk_bytes,
                     fedc_chunker **out)
{
  fedc_chunker *c;

  *out = NULL;
  if (chunk_bytes == 0)
    return FEDC_EINVAL;
  c = calloc(1, sizeof(*c));
  if (!c)
    return FEDC_ENOMEM;

  c->snapshot = fedc_snapshot_ref(snapshot);
  c->chunk_bytes = chunk_bytes;
  c->total_bytes = fedc_tensor_list_nbytes(fedc_snapshot_tensors(snapshot));

  fedc__envelope__init(&c->envelope);
  fedc__tensor_chunk__init(&c->chunk);
  c->envelope.protocol_version = FEDC_PROTOCOL_VERSION;
  c->envelope.body_case = FEDC__ENVELOPE__BODY_CHUNK;
  c->envelope.chunk = &c->chunk;
  c->chunk.round = round;
  c->chunk.stream = stream;
  *out = c;
  return 0;
}

void fedc_chunker_free(fedc_chunker **chunker)
{
  if (!chunker || !*chunker)
    return;
  fedc_snapshot_unref(&(*chunker)->snapshot);
  free(*chunker);
  *chunker = NULL;
}

const Fedc__Envelope *fedc_chunker_next(fedc_chunker *chunker)
{
  const fedc_tensor_list *list = fedc_snapshot_tensors(chunker->snapshot);
  const fedc_tensor *t;
  size_t elem, per_chunk;
  uint64_t numel, count;

  if (chunker->tensor >= list->count)
    return NULL;
  t = &list->items[chunker->tensor];
  elem = fedc_dtype_size(t->dtype);
  numel = fedc_tensor_numel(t);

  per_chunk = chunker->chunk_bytes / elem;
  if (per_chunk == 0)
    per_chunk = 1;
  count = numel - chunker->offset;
  if (count > per_chunk)
    count = per_chunk;

  chunker->chunk.tensor_index = (uint32_t)chunker->tensor;
  chunker->chunk.offset = chunker->offset;
  chunker->chunk.data.data = (uint8_t *)t->data + chunker->offset * elem;
  chunker->chunk.data.len = (size_t)(count * elem);

  /* Advance to the next tensor when this one is done. Snapshots hold no
   * tensor without elements, so the next one has data to send. */
  chunker->offset += count;
  chunker->sent_bytes += count * elem;
  if (chunker->offset >= numel) {
    chunker->tensor++;
    chunker->offset = 0;
  }
  chunker->chunk.last = chunker->tensor >= list->count;
  return &chunker->envelope;
}

uint64_t fedc_chunker_total_bytes(const fedc_chunker *chunker)
{
  return chunker->total_bytes;
}

uint64_t fedc_chunker_remaining_bytes(const fedc_chunker *chunker)
{
  return chunker->total_bytes - chunker->sent_bytes;
}

uint64_t fedc_chunker_round(const fedc_chunker *chunker)
{
  return chunker->chunk.round;
}

Fedc__StreamKind fedc_chunker_stream(const fedc_chunker *chunker)
{
  return chunker->chunk.stream;
}

fedc_snapshot *fedc_chunker_snapshot(const fedc_chunker *chunker)
{
  return chunker->snapshot;
}
