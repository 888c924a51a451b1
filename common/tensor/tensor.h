/* Named, densely stored tensors and ordered lists of them (a model).
 *
 * A fedc_tensor owns its data. A fedc_tensor_list owns its tensors; tensor
 * order is significant because it is the order of the wire stream and of
 * the checkpoint file. */
#ifndef FEDC_TENSOR_TENSOR_H
#define FEDC_TENSOR_TENSOR_H

#include <stddef.h>
#include <stdint.h>

/* Values match proto's DType so the wire code can cast between them. */
enum fedc_dtype {
  FEDC_DTYPE_F32 = 1,
  FEDC_DTYPE_F64 = 2,
  FEDC_DTYPE_I32 = 3,
  FEDC_DTYPE_I64 = 4,
  FEDC_DTYPE_U8 = 5,
};

#define FEDC_TENSOR_MAX_DIMS 8
#define FEDC_TENSOR_NAME_MAX 128  /* bytes, including the terminating NUL */

typedef struct fedc_tensor {
  char name[FEDC_TENSOR_NAME_MAX];
  enum fedc_dtype dtype;
  int ndim;
  uint64_t shape[FEDC_TENSOR_MAX_DIMS];
  void *data;                     /* numel * dtype size bytes, owned */
} fedc_tensor;

typedef struct fedc_tensor_list {
  fedc_tensor *items;
  size_t count;
  size_t capacity;
} fedc_tensor_list;

/* Returns the size in bytes of one element, or 0 for an unknown dtype. */
size_t fedc_dtype_size(enum fedc_dtype dtype);

/* Returns the safetensors name ("F32", "U8", ...) or NULL. */
const char *fedc_dtype_name(enum fedc_dtype dtype);

/* Parses a safetensors dtype name. Returns 0 or FEDC_EFORMAT. */
int fedc_dtype_parse(const char *name, enum fedc_dtype *out);

/* Returns the element count, or 0 if the shape overflows uint64_t. */
uint64_t fedc_tensor_numel(const fedc_tensor *t);

/* Returns numel * element size, or 0 on overflow. */
uint64_t fedc_tensor_nbytes(const fedc_tensor *t);

/* Computes the data size in bytes of a tensor of this dtype and shape into
 * out. Unlike fedc_tensor_nbytes(), a zero-element shape is told apart from
 * an error. Returns 0, FEDC_EINVAL for an unknown dtype or ndim outside
 * 0..FEDC_TENSOR_MAX_DIMS, or FEDC_EOVERFLOW when the size does not fit in
 * uint64_t or size_t. */
int fedc_tensor_shape_nbytes(enum fedc_dtype dtype, int ndim,
                             const uint64_t *shape, uint64_t *out);

void fedc_tensor_list_init(fedc_tensor_list *list);

/* Frees every tensor and the array; the list is left empty and reusable. */
void fedc_tensor_list_close(fedc_tensor_list *list);

/* Appends a tensor and copies data into it, or zero-fills it when data is
 * NULL. Rejects a duplicate or over-long name, ndim above the maximum, an
 * unknown dtype and sizes that overflow. Returns 0 or a FEDC_E* code. */
int fedc_tensor_list_add(fedc_tensor_list *list, const char *name,
                         enum fedc_dtype dtype, int ndim,
                         const uint64_t *shape, const void *data);

/* Like fedc_tensor_list_add(), but takes ownership of data, a malloc'ed
 * block of the tensor's size, on success only; the caller still owns data
 * when an error is returned. */
int fedc_tensor_list_add_owned(fedc_tensor_list *list, const char *name,
                               enum fedc_dtype dtype, int ndim,
                               const uint64_t *shape, void *data);

/* Grows the list's array to hold at least count tensors. */
int fedc_tensor_list_reserve(fedc_tensor_list *list, size_t count);

/* Returns the tensor with this name, or NULL. */
fedc_tensor *fedc_tensor_list_find(const fedc_tensor_list *list,
                                   const char *name);

/* Makes dst a deep copy of src (dst is closed first). */
int fedc_tensor_list_copy(fedc_tensor_list *dst, const fedc_tensor_list *src);

/* Returns 0 when both lists have the same names, dtypes and shapes in the
 * same order, FEDC_ESHAPE otherwise. */
int fedc_tensor_list_check_layout(const fedc_tensor_list *a,
                                  const fedc_tensor_list *b);

/* Returns 0 when every F32/F64 element is finite, FEDC_ENONFINITE otherwise. */
int fedc_tensor_list_check_finite(const fedc_tensor_list *list);

/* Returns the L2 norm of the list's F32 and F64 values, summed in double;
 * other dtypes do not count. The sum runs in 32 lanes so that it
 * vectorises, so its last bits may differ from a sum in index order. */
double fedc_tensor_list_norm(const fedc_tensor_list *list);

/* Subtracts b from a element by element, as a client turns its trained
 * weights into an update, in one pass that also gives the L2 norm of the
 * differences, exactly as fedc_tensor_list_norm() would compute it, in
 * *norm unless norm is NULL. Returns 0, FEDC_ESHAPE when the layouts
 * differ or FEDC_EUNSUPPORTED for a tensor that is not F32 or F64 (a
 * unchanged in both cases), or FEDC_ENONFINITE when a difference is NaN
 * or Inf (a then contains the differences). */
int fedc_tensor_list_sub(fedc_tensor_list *a, const fedc_tensor_list *b,
                         double *norm);

/* Returns the total number of bytes of tensor data in the list. */
uint64_t fedc_tensor_list_nbytes(const fedc_tensor_list *list);

#endif
