#include "wire/assembler.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* Chunk data is little-endian and copied as is. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedc's wire code assumes a little-endian host"
#endif

enum assembler_state { RECEIVING, COMPLETE, TAKEN, FAILED };

struct fedc_assembler {
  uint64_t round;
  Fedc__StreamKind stream;
  fedc_tensor_list tensors;
  enum assembler_state state;

  /* Position of the next expected chunk: tensor index and element offset. */
  size_t tensor;
  uint64_t offset;

  uint64_t received_bytes;
  uint64_t total_bytes;
  char reason[FEDC_ASSEMBLER_REASON_MAX];
};

__attribute__((format(printf, 3, 4)))
static int reject(fedc_assembler *a, int err, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
  va_end(ap);
  a->state = FAILED;
  return err;
}

/* Lists the announced tensors without their data, which copy_data()
 * allocates at each tensor's first chunk: a stream passed whole to
 * fedc_assembler_check_snapshot() needs none. */
static int list_tensors(fedc_assembler *a, Fedc__TensorSpec *const *specs,
                        size_t n)
{
  int rc = fedc_tensor_list_reserve(&a->tensors, n);

  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = fedc_tensor_list_add_owned(&a->tensors, specs[i]->name,
                                    (enum fedc_dtype)specs[i]->dtype,
                                    (int)specs[i]->n_shape, specs[i]->shape,
                                    NULL);
  return rc;
}

int fedc_assembler_new(uint64_t round, Fedc__StreamKind stream,
                       Fedc__TensorSpec *const *specs, size_t n,
                       const fedc_spec_limits *limits,
                       const fedc_tensor_list *layout,
                       fedc_assembler **out, char *reason, size_t reason_len)
{
  fedc_assembler *a = NULL;
  uint64_t total = 0;
  int rc;

  *out = NULL;
  if (reason && reason_len > 0)
    reason[0] = '\0';
  rc = fedc_spec_check(specs, n, limits, &total, reason, reason_len);
  if (rc == 0 && layout)
    rc = fedc_spec_match_layout(specs, n, layout, reason, reason_len);
  if (rc < 0)
    return rc;

  a = calloc(1, sizeof(*a));
  if (!a)
    return FEDC_ENOMEM;
  a->round = round;
  a->stream = stream;
  a->total_bytes = total;
  fedc_tensor_list_init(&a->tensors);
  rc = list_tensors(a, specs, n);
  if (rc < 0) {
    fedc_assembler_free(&a);
    return rc;
  }
  *out = a;
  return 0;
}

void fedc_assembler_free(fedc_assembler **assembler)
{
  if (!assembler || !*assembler)
    return;
  fedc_tensor_list_close(&(*assembler)->tensors);
  free(*assembler);
  *assembler = NULL;
}

static int all_finite(enum fedc_dtype dtype, const void *data, size_t count)
{
  if (dtype == FEDC_DTYPE_F32) {
    const float *f = data;

    for (size_t i = 0; i < count; i++)
      if (!isfinite(f[i]))
        return 0;
  } else if (dtype == FEDC_DTYPE_F64) {
    const double *d = data;

    for (size_t i = 0; i < count; i++)
      if (!isfinite(d[i]))
        return 0;
  }
  return 1;
}

/* Checks where the chunk claims to go against where the stream is. */
static int check_position(fedc_assembler *a, const Fedc__TensorChunk *c)
{
  if (c->round != a->round)
    return reject(a, FEDC_ESTALE, "chunk for round %llu in a stream of "
                  "round %llu", (unsigned long long)c->round,
                  (unsigned long long)a->round);
  if (c->stream != a->stream)
    return reject(a, FEDC_EFORMAT, "chunk of stream kind %d in a stream of "
                  "kind %d", (int)c->stream, (int)a->stream);
  if (c->tensor_index != a->tensor)
    return reject(a, FEDC_EFORMAT, "chunk for tensor %u, expected tensor "
                  "%zu", c->tensor_index, a->tensor);
  if (c->offset != a->offset)
    return reject(a, FEDC_EFORMAT, "chunk at element offset %llu of tensor "
                  "%zu, expected offset %llu", (unsigned long long)c->offset,
                  a->tensor, (unsigned long long)a->offset);
  return 0;
}

/* Copies the chunk into place after checking its length and values, and
 * returns the number of elements it held. */
static int copy_data(fedc_assembler *a, const Fedc__TensorChunk *c,
                     uint64_t *count)
{
  fedc_tensor *t = &a->tensors.items[a->tensor];
  size_t elem = fedc_dtype_size(t->dtype);
  uint64_t left = fedc_tensor_numel(t) - a->offset;
  char *dst;

  if (c->data.len == 0 || c->data.len % elem != 0)
    return reject(a, FEDC_EFORMAT, "chunk of %zu bytes for tensor %s, not a "
                  "positive multiple of %zu", c->data.len, t->name, elem);
  *count = c->data.len / elem;
  if (*count > left)
    return reject(a, FEDC_EFORMAT, "chunk of %llu elements runs past the "
                  "end of tensor %s", (unsigned long long)*count, t->name);

  /* Every byte of the tensor is written before the stream can complete,
   * so its data need not be zeroed. */
  if (!t->data) {
    t->data = malloc((size_t)fedc_tensor_nbytes(t));
    if (!t->data)
      return reject(a, FEDC_ENOMEM, "out of memory for tensor %s", t->name);
  }
  dst = (char *)t->data + a->offset * elem;

  /* The values are checked after the copy because the chunk's bytes need
   * not be aligned for float access; a failed stream is discarded whole. */
  memcpy(dst, c->data.data, c->data.len);
  if (!all_finite(t->dtype, dst, (size_t)*count))
    return reject(a, FEDC_ENONFINITE, "NaN or Inf in tensor %s", t->name);
  a->received_bytes += c->data.len;
  return 0;
}

int fedc_assembler_add(fedc_assembler *assembler,
                       const Fedc__TensorChunk *chunk)
{
  fedc_assembler *a = assembler;
  uint64_t count = 0;
  int done, rc;

  if (a->state != RECEIVING)
    return reject(a, FEDC_ESTATE, "chunk after the end of the stream");
  rc = check_position(a, chunk);
  if (rc == 0)
    rc = copy_data(a, chunk, &count);
  if (rc < 0)
    return rc;

  a->offset += count;
  if (a->offset == fedc_tensor_numel(&a->tensors.items[a->tensor])) {
    a->tensor++;
    a->offset = 0;
  }
  done = a->tensor == a->tensors.count;
  if (chunk->last && !done)
    return reject(a, FEDC_EFORMAT, "last flag before the end of the stream");
  if (!chunk->last && done)
    return reject(a, FEDC_EFORMAT, "stream complete without the last flag");

  a->reason[0] = '\0';
  if (!done)
    return 0;
  a->state = COMPLETE;
  return 1;
}

int fedc_assembler_check_snapshot(fedc_assembler *assembler, uint64_t round,
                                  Fedc__StreamKind stream,
                                  fedc_snapshot *snapshot)
{
  fedc_assembler *a = assembler;
  const fedc_tensor_list *tensors = fedc_snapshot_tensors(snapshot);

  if (a->state != RECEIVING || a->tensor != 0 || a->offset != 0)
    return reject(a, FEDC_ESTATE, "whole stream after chunks of it or "
                  "after its end");
  if (round != a->round)
    return reject(a, FEDC_ESTALE, "stream for round %llu, expected round "
                  "%llu", (unsigned long long)round,
                  (unsigned long long)a->round);
  if (stream != a->stream)
    return reject(a, FEDC_EFORMAT, "stream of kind %d, expected kind %d",
                  (int)stream, (int)a->stream);
  if (fedc_tensor_list_check_layout(&a->tensors, tensors) < 0)
    return reject(a, FEDC_EFORMAT, "stream tensors do not match the "
                  "announced names, dtypes and shapes");
  if (fedc_snapshot_check_finite(snapshot) < 0)
    return reject(a, FEDC_ENONFINITE, "NaN or Inf in the stream");

  a->received_bytes = a->total_bytes;
  a->reason[0] = '\0';
  a->state = TAKEN;
  return 1;
}

int fedc_assembler_take(fedc_assembler *assembler, fedc_tensor_list *out)
{
  if (assembler->state != COMPLETE)
    return FEDC_ESTATE;
  fedc_tensor_list_close(out);
  *out = assembler->tensors;
  fedc_tensor_list_init(&assembler->tensors);
  assembler->state = TAKEN;
  return 0;
}

const char *fedc_assembler_reason(const fedc_assembler *assembler)
{
  return assembler->reason;
}

uint64_t fedc_assembler_received_bytes(const fedc_assembler *assembler)
{
  return assembler->received_bytes;
}

uint64_t fedc_assembler_total_bytes(const fedc_assembler *assembler)
{
  return assembler->total_bytes;
}
