/* Single-precision matrix multiply for the trainer: OpenBLAS's cblas_sgemm
 * and a plain-C reference with the same contract, which the tests compare
 * against each other. All matrices are row-major. */
#ifndef FEDC_NN_BLAS_H
#define FEDC_NN_BLAS_H

#include <stdbool.h>
#include <stddef.h>

enum fedc_blas_backend {
  FEDC_BLAS_OPENBLAS = 0,
  FEDC_BLAS_REFERENCE = 1,
};

/* Selects the backend of fedc_blas_sgemm for the whole process. Meant for
 * tests; do not switch while another thread trains. */
void fedc_blas_set_backend(enum fedc_blas_backend backend);
enum fedc_blas_backend fedc_blas_get_backend(void);

/* C = alpha * op(A) * op(B) + beta * C, where op(A) is m x k, op(B) is
 * k x n and C is m x n; lda, ldb and ldc are row strides in floats. With
 * beta == 0, C is overwritten and may hold garbage (even NaN) before.
 * Large products are split over the nn/parallel.h workers by rows or
 * columns of C, each part on a single-threaded OpenBLAS call. */
void fedc_blas_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                     float alpha, const float *a, size_t lda,
                     const float *b, size_t ldb, float beta,
                     float *c, size_t ldc);

/* The plain-C reference of fedc_blas_sgemm, accumulating in double. */
void fedc_blas_sgemm_ref(bool trans_a, bool trans_b, size_t m, size_t n,
                         size_t k, float alpha, const float *a, size_t lda,
                         const float *b, size_t ldb, float beta,
                         float *c, size_t ldc);

/* Returns the name of the kernels OpenBLAS picked for this CPU, such as
 * "SkylakeX", or "reference" for the plain-C backend. */
const char *fedc_blas_core_name(void);

/* Sets the OpenBLAS thread count (threads > 0), returns the current one.
 * fedc_nn_set_threads keeps it at 1 (see nn/parallel.h). */
void fedc_blas_set_threads(int threads);
int fedc_blas_get_threads(void);

#endif
