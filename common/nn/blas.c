#include "nn/blas.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>

#include "nn/parallel.h"

/* Products of fewer multiply-adds run on one thread, because waking the
 * workers costs more than they save; OpenBLAS 0.3.21 uses the same bound
 * (65536 x GEMM_MULTITHREAD_THRESHOLD 4) for its own threads. */
#define SPLIT_MIN_WORK 262144.0

/* One product split over the workers by rows or by columns of C. */
typedef struct sgemm_job {
  bool trans_a, trans_b, by_rows;
  size_t m, n, k;
  float alpha, beta;
  const float *a, *b;
  float *c;
  size_t lda, ldb, ldc;
} sgemm_job;

static enum fedc_blas_backend backend = FEDC_BLAS_OPENBLAS;

void fedc_blas_set_backend(enum fedc_blas_backend b)
{
  backend = b;
}

enum fedc_blas_backend fedc_blas_get_backend(void)
{
  return backend;
}

void fedc_blas_sgemm_ref(bool trans_a, bool trans_b, size_t m, size_t n,
                         size_t k, float alpha, const float *a, size_t lda,
                         const float *b, size_t ldb, float beta,
                         float *c, size_t ldc)
{
  for (size_t i = 0; i < m; i++) {
    for (size_t j = 0; j < n; j++) {
      double sum = 0.0;

      for (size_t p = 0; p < k; p++) {
        float av = trans_a ? a[p * lda + i] : a[i * lda + p];
        float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];

        sum += (double)av * bv;
      }
      /* beta == 0 must not read C, which may be uninitialised. */
      c[i * ldc + j] = beta == 0.0f ? (float)(alpha * sum)
                                    : (float)(alpha * sum + beta * c[i * ldc + j]);
    }
  }
}

/* A product of at most NARROW_COLUMNS columns goes to OpenBLAS in blocks
 * of NARROW_BLOCK_ROWS rows. Each block is small enough for its
 * small-matrix kernels, which read A in place. One tall product would copy
 * all of A into packed panels for a few columns' use instead. Softmax
 * regression's forward pass over a 256-row batch ran a third faster. */
#define NARROW_COLUMNS 16
#define NARROW_BLOCK_ROWS 64

static void sgemm_cblas(bool trans_a, bool trans_b, size_t m, size_t n,
                        size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, float beta, float *c,
                        size_t ldc)
{
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* Runs one product, or part of one, on OpenBLAS in this thread. */
static void sgemm_openblas(bool trans_a, bool trans_b, size_t m, size_t n,
                           size_t k, float alpha, const float *a, size_t lda,
                           const float *b, size_t ldb, float beta, float *c,
                           size_t ldc)
{
  /* The strides must cover the rows they describe; cblas takes int sizes. */
  assert(lda >= (trans_a ? m : k));
  assert(ldb >= (trans_b ? k : n));
  assert(ldc >= n);
  assert(m <= INT_MAX);
  assert(n <= INT_MAX);
  assert(k <= INT_MAX);
  assert(lda <= INT_MAX);
  assert(ldb <= INT_MAX);
  assert(ldc <= INT_MAX);
  if (n > NARROW_COLUMNS) {
    sgemm_cblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
    return;
  }
  for (size_t i = 0; i < m; i += NARROW_BLOCK_ROWS) {
    size_t rows = m - i < NARROW_BLOCK_ROWS ? m - i : NARROW_BLOCK_ROWS;
    const float *block = trans_a ? a + i : a + i * lda;

    sgemm_cblas(trans_a, trans_b, rows, n, k, alpha, block, lda, b, ldb,
                beta, c + i * ldc, ldc);
  }
}

/* Rows [begin, end) of C, with the matching rows of op(A), or columns
 * with the matching columns of op(B). */
static void sgemm_range(void *ctx, unsigned worker, size_t chunk,
                        size_t begin, size_t end)
{
  const sgemm_job *j = ctx;

  if (j->by_rows) {
    const float *a = j->trans_a ? j->a + begin : j->a + begin * j->lda;

    sgemm_openblas(j->trans_a, j->trans_b, end - begin, j->n, j->k, j->alpha,
                   a, j->lda, j->b, j->ldb, j->beta, j->c + begin * j->ldc,
                   j->ldc);
    return;
  }
  sgemm_openblas(j->trans_a, j->trans_b, j->m, end - begin, j->k, j->alpha,
                 j->a, j->lda,
                 j->trans_b ? j->b + begin * j->ldb : j->b + begin, j->ldb,
                 j->beta, j->c + begin, j->ldc);
}

void fedc_blas_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                     float alpha, const float *a, size_t lda,
                     const float *b, size_t ldb, float beta,
                     float *c, size_t ldc)
{
  sgemm_job job = { trans_a, trans_b, m >= n, m, n, k, alpha, beta, a, b, c,
                    lda, ldb, ldc };

  if (m == 0 || n == 0)
    return;
  if (backend == FEDC_BLAS_REFERENCE || k == 0) {
    fedc_blas_sgemm_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                        beta, c, ldc);
    return;
  }
  if (fedc_parallel_get_threads() == 1 || fedc_parallel_in_worker() ||
      (double)m * n * k < SPLIT_MIN_WORK) {
    sgemm_openblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                   ldc);
    return;
  }
  fedc_parallel_run(job.by_rows ? m : n, sgemm_range, &job);
}

const char *fedc_blas_core_name(void)
{
  return backend == FEDC_BLAS_REFERENCE ? "reference"
                                        : openblas_get_corename();
}

void fedc_blas_set_threads(int threads)
{
  if (threads > 0)
    openblas_set_num_threads(threads);
}

int fedc_blas_get_threads(void)
{
  return openblas_get_num_threads();
}
