/* The safetensors file format (https://github.com/huggingface/safetensors):
 * an 8-byte little-endian header length, a JSON header mapping each tensor
 * name to {dtype, shape, data_offsets} plus an optional "__metadata__"
 * string map, then the raw little-endian tensor bytes.
 *
 * fedc writes checkpoints, client data files and external-trainer exchange
 * files in this format, so numpy and PyTorch users load them directly. */
#ifndef FEDC_TENSOR_SAFETENSORS_H
#define FEDC_TENSOR_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* Limits on what decode accepts. The header limit is the one in the
 * huggingface/safetensors Rust reader. The others bound the work that a
 * hostile header can cause. */
#define FEDC_SAFETENSORS_MAX_HEADER 100000000
#define FEDC_SAFETENSORS_MAX_TENSORS 65536
#define FEDC_SAFETENSORS_MAX_METADATA 4096
#define FEDC_SAFETENSORS_METADATA_KEY_MAX 1024  /* bytes, with the NUL */

/* String pairs from the "__metadata__" object. */
typedef struct fedc_metadata {
  char **keys;
  char **values;
  size_t count;
} fedc_metadata;

void fedc_metadata_init(fedc_metadata *meta);
void fedc_metadata_close(fedc_metadata *meta);
int fedc_metadata_set(fedc_metadata *meta, const char *key, const char *value);
/* Returns the value for key, or NULL. */
const char *fedc_metadata_get(const fedc_metadata *meta, const char *key);

/* Serializes list (and meta, which may be NULL) into a new malloc'ed
 * buffer. Tensors keep list order. Returns 0 or a FEDC_E* code. */
int fedc_safetensors_encode(const fedc_tensor_list *list,
                            const fedc_metadata *meta,
                            uint8_t **out, size_t *out_len);

/* Parses a safetensors buffer into list (closed first) and meta (may be
 * NULL). Validates the header length, JSON, dtypes, shapes and that data
 * offsets are in bounds, contiguous and non-overlapping. Tensors come out in
 * data-offset order. Returns 0, FEDC_EFORMAT or FEDC_ENOMEM; on an error
 * list and meta are left empty and the reason is logged. */
int fedc_safetensors_decode(const uint8_t *buf, size_t len,
                            fedc_tensor_list *list, fedc_metadata *meta);

/* Writes atomically: a temporary file in the same folder, fsync, rename,
 * fsync of the folder. The file gets mode 0600. */
int fedc_safetensors_write(const char *path, const fedc_tensor_list *list,
                           const fedc_metadata *meta);

/* Reads and decodes the file at path. Returns what decode returns, or
 * FEDC_ENOENT or FEDC_EIO when the file cannot be opened or mapped. */
int fedc_safetensors_read(const char *path, fedc_tensor_list *list,
                          fedc_metadata *meta);

#endif
