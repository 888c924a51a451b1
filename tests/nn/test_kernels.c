/* The fast convolution and pooling kernels against their plain-C
 * references (fedc_layer_set_reference), at several thread counts, the
 * ReLU folded into a convolution against a separate ReLU, sgemm split
 * over workers, and the worker pool's split of a batch. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/blas.h"
#include "nn/conv_simd.h"
#include "nn/model.h"
#include "nn/net.h"
#include "nn/parallel.h"
#include "nn/spec.h"
#include "nn_testutil.h"
#include "util/log.h"

/* Output, input gradient and every parameter gradient of one pass. */
typedef struct pass_result {
  float *y, *dx, *grad;
  size_t ny, nx, ngrad;
} pass_result;

typedef struct grad_list {
  float *data;
  size_t count;
} grad_list;

static void count_grads(fedc_layer *layer, void *ctx)
{
  grad_list *list = ctx;

  for (size_t i = 0; i < layer->num_params; i++)
    list->count += layer->params[i].numel;
}

static void copy_grads(fedc_layer *layer, void *ctx)
{
  grad_list *list = ctx;

  for (size_t i = 0; i < layer->num_params; i++) {
    memcpy(list->data + list->count, layer->params[i].grad,
           layer->params[i].numel * sizeof(float));
    list->count += layer->params[i].numel;
  }
}

/* Parameter gradients start at 0.5, so that a kernel that overwrites
 * instead of adding fails. */
static void preset_grads(fedc_layer *layer, void *ctx)
{
  for (size_t i = 0; i < layer->num_params; i++)
    for (size_t j = 0; j < layer->params[i].numel; j++)
      layer->params[i].grad[j] = 0.5f;
}

/* Fills n inputs on [-1, 1); every 7th is NaN and every 11th -inf when
 * special is set. */
static void fill_input(float *x, size_t n, bool special)
{
  fedc_rng rng;

  fedc_rng_seed(&rng, 11);
  nn_test_fill(x, n, -1.0f, 1.0f, &rng);
  for (size_t i = 0; special && i < n; i++) {
    if (i % 7 == 3)
      x[i] = NAN;
    else if (i % 11 == 5)
      x[i] = -INFINITY;
  }
}

/* Runs one forward and backward pass of spec on batch examples. */
static void run_pass(const char *spec, uint32_t batch, unsigned threads,
                     bool reference, bool special, pass_result *out)
{
  fedc_net *net;
  enum fedc_loss loss;
  fedc_rng rng;
  fedc_pass pass = { .train = true, .rng = &rng };
  grad_list grads = { NULL, 0 };
  const float *y;
  float *x, *dy;

  ck_assert_msg(fedc_spec_build(spec, &net, &loss) == 0, "spec %s", spec);
  nn_test_bind(net, 5);
  fedc_net_visit(net, preset_grads, NULL);
  out->nx = fedc_layer_shape_size(&net->in) * batch;
  out->ny = fedc_layer_shape_size(&net->out) * batch;
  x = malloc(out->nx * sizeof(float));
  dy = malloc(out->ny * sizeof(float));
  out->y = malloc(out->ny * sizeof(float));
  out->dx = malloc(out->nx * sizeof(float));
  fill_input(x, out->nx, special);
  fedc_rng_seed(&rng, 12);
  nn_test_fill(dy, out->ny, -1.0f, 1.0f, &rng);

  fedc_nn_set_threads((int)threads);
  fedc_layer_set_reference(reference);
  ck_assert_int_eq(fedc_net_forward(net, x, batch, &pass, &y), 0);
  memcpy(out->y, y, out->ny * sizeof(float));
  ck_assert_int_eq(fedc_net_backward(net, x, dy, out->dx, batch), 0);
  fedc_layer_set_reference(false);
  fedc_nn_set_threads(1);

  fedc_net_visit(net, count_grads, &grads);
  out->ngrad = grads.count;
  out->grad = grads.data = malloc((grads.count + 1) * sizeof(float));
  grads.count = 0;
  fedc_net_visit(net, copy_grads, &grads);
  nn_test_unbind(net);
  fedc_net_free(&net);
  free(x);
  free(dy);
}

static void free_result(pass_result *r)
{
  free(r->y);
  free(r->dx);
  free(r->grad);
}

/* ||a - b|| / ||b|| over the finite entries; NaN and infinities must sit
 * at the same places with the same values. */
static double relative_error(const float *a, const float *b, size_t n)
{
  double diff = 0.0, norm = 0.0;

  for (size_t i = 0; i < n; i++) {
    if (!isfinite(b[i])) {
      ck_assert_msg(isnan(b[i]) ? isnan(a[i]) : a[i] == b[i],
                    "entry %zu: %g, reference %g", i, a[i], b[i]);
      continue;
    }
    diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    norm += (double)b[i] * b[i];
  }
  return norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
}

static void assert_close(const pass_result *fast, const pass_result *ref,
                         const char *spec, unsigned threads)
{
  double ey = relative_error(fast->y, ref->y, ref->ny);
  double ex = relative_error(fast->dx, ref->dx, ref->nx);
  double eg = relative_error(fast->grad, ref->grad, ref->ngrad);

  ck_assert_uint_eq(fast->ngrad, ref->ngrad);
  ck_assert_msg(ey < 1e-5, "%s, %u threads: output error %g", spec, threads,
                ey);
  ck_assert_msg(ex < 1e-5, "%s, %u threads: input gradient error %g", spec,
                threads, ex);
  ck_assert_msg(eg < 1e-5, "%s, %u threads: parameter gradient error %g",
                spec, threads, eg);
}

typedef struct kernel_case {
  const char *spec;
  uint32_t batch;
  bool special;              /* NaN and -inf in the input */
} kernel_case;

static const kernel_case kernel_cases[] = {
  /* The built-in CNN's stem: the 2x2 pool and groups of one example. */
  { "input 1x28x28; conv 16 5 pad=2; relu; maxpool 2; conv 32 5 pad=2; "
    "relu; maxpool 2", 5, false },
  /* Narrow outputs: several examples per sgemm, the last group partial. */
  { "input 3x7x6; conv 4 3 stride=2 pad=1", 30, false },
  { "input 2x9x8; conv 3 5 stride=3 pad=2; relu", 7, false },
  { "input 4x5x5; conv 6 1", 1, false },
  { "input 4x5x5; conv 6 1; relu", 13, false },
  { "input 2x6x6; conv 3 3 bias=0; relu", 4, false },
  { "input 3x16x16; conv 8 3 pad=1; relu; conv 8 3 stride=2", 3, false },
  /* Channel counts for the AVX-512 kernels: partial lanes, two chunks of
   * 32, a pointwise kernel and a stride of 2. */
  { "input 3x10x9; conv 48 3 stride=2 pad=1; relu", 5, false },
  { "input 4x9x9; conv 64 3; relu; maxpool 2", 3, false },
  { "input 2x7x7; conv 32 1", 4, false },
  { "input 5x6x6; conv 32 5 pad=2 bias=0", 2, false },
  /* 16 lanes, and the input gradient as a convolution (stride 1). */
  { "input 8x8x8; conv 16 3 pad=1; relu", 3, false },
  { "input 12x8x8; conv 32 3", 3, false },
  { "input 32x6x6; conv 32 3 pad=1; relu", 2, false },
  /* Output positions as lanes: rows wider than 32, and partial tiles of
   * channels. */
  { "input 2x6x40; conv 12 3 pad=1; relu", 3, false },
  { "input 1x9x9; conv 3 5 pad=2", 2, false },
  { "input 3x9x7; maxpool 2", 4, false },
  { "input 2x12x18; maxpool 2", 3, true },
  { "input 4x28x28; maxpool 2", 2, false },
  /* A max pool that applies the derivative of the ReLU before it. */
  { "input 2x9x9; conv 3 3; relu; maxpool 2", 3, false },
  { "input 2x9x9; conv 3 3; relu; maxpool 3 stride=2 pad=1", 3, false },
  { "input 2x8x8; maxpool 2", 3, true },
  { "input 2x7x7; maxpool 3 stride=2 pad=1", 3, true },
  { "input 3x6x5; avgpool 2", 2, false },
};

/* Both fast paths: the AVX-512 kernels where the CPU has them, and the
 * OpenBLAS one. */
START_TEST(fast_kernels_match_reference)
{
  const kernel_case *c = &kernel_cases[_i];
  pass_result ref;

  run_pass(c->spec, c->batch, 1, true, c->special, &ref);
  for (int simd = 0; simd < 2; simd++) {
    fedc_conv_simd_enable(simd == 1);
    for (unsigned threads = 1; threads <= 3; threads++) {
      pass_result fast;

      run_pass(c->spec, c->batch, threads, false, c->special, &fast);
      assert_close(&fast, &ref, c->spec, threads);
      free_result(&fast);
    }
  }
  fedc_conv_simd_enable(true);
  free_result(&ref);
}
END_TEST

/* Workers take chunks in a varying order; the sums must not depend on it. */
START_TEST(threaded_pass_is_reproducible)
{
  const char *spec = kernel_cases[0].spec;

  for (int simd = 0; simd < 2; simd++) {
    pass_result first, second;

    fedc_conv_simd_enable(simd == 1);
    run_pass(spec, 13, 3, false, false, &first);
    run_pass(spec, 13, 3, false, false, &second);
    ck_assert_mem_eq(first.y, second.y, first.ny * sizeof(float));
    ck_assert_mem_eq(first.dx, second.dx, first.nx * sizeof(float));
    ck_assert_mem_eq(first.grad, second.grad, first.ngrad * sizeof(float));
    free_result(&first);
    free_result(&second);
  }
  fedc_conv_simd_enable(true);
}
END_TEST

/* A flatten between the convolution and the ReLU keeps the ReLU a layer of
 * its own without changing any value. */
START_TEST(folded_relu_matches_separate_relu)
{
  static const char *const pairs[][2] = {
    { "input 2x6x6; conv 3 3 pad=1; relu",
      "input 2x6x6; conv 3 3 pad=1; flatten; relu" },
    { "input 2x8x8; conv 3 3 pad=1; relu; maxpool 2",
      "input 2x8x8; conv 3 3 pad=1; avgpool 1; relu; maxpool 2" },
    { "input 3x5x5; conv 4 3 stride=2; relu",
      "input 3x5x5; conv 4 3 stride=2; flatten; relu" },
  };

  for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
    pass_result folded, separate;

    run_pass(pairs[i][0], 6, 2, false, false, &folded);
    run_pass(pairs[i][1], 6, 2, false, false, &separate);
    assert_close(&folded, &separate, pairs[i][0], 2);
    free_result(&folded);
    free_result(&separate);
  }
}
END_TEST

START_TEST(folded_relu_gradient_matches_finite_differences)
{
  const char *spec = "input 2x6x6; conv 3 3 pad=1; relu; maxpool 2; "
                     "conv 2 3; relu";
  fedc_net *net;
  enum fedc_loss loss;
  fedc_rng rng;
  float x[2 * 72];
  double err;

  ck_assert_int_eq(fedc_spec_build(spec, &net, &loss), 0);
  ck_assert(net->layers[0]->relu_out);
  ck_assert(net->layers[0]->relu_grad_done);
  ck_assert(net->layers[1]->folded);
  ck_assert(net->layers[2]->relu_grad);
  ck_assert(net->layers[4]->folded);
  ck_assert(!net->layers[3]->relu_grad_done);
  fedc_rng_seed(&rng, 21);
  nn_test_fill(x, 2 * 72, -1.0f, 1.0f, &rng);
  nn_test_bind(net, 17);
  err = nn_test_gradcheck(net, x, 2, 1e-3f, 48, 0);
  ck_assert_msg(err < 3e-3, "error %g", err);
  nn_test_unbind(net);
  fedc_net_free(&net);
}
END_TEST

/* Products large enough to be split over the workers, by rows (m >= n)
 * and by columns, in every transpose combination. */
START_TEST(sgemm_split_matches_reference)
{
  static const size_t sizes[][3] = { { 70, 50, 90 }, { 40, 90, 80 } };
  const size_t *mnk = sizes[_i / 4];
  size_t m = mnk[0], n = mnk[1], k = mnk[2];
  bool ta = _i % 2, tb = _i / 2 % 2;
  float *a = malloc(m * k * sizeof(float)), *b = malloc(k * n * sizeof(float));
  float *c = malloc(m * n * sizeof(float)), *ref = malloc(m * n * sizeof(float));
  fedc_rng rng;

  fedc_rng_seed(&rng, 31);
  nn_test_fill(a, m * k, -1.0f, 1.0f, &rng);
  nn_test_fill(b, k * n, -1.0f, 1.0f, &rng);
  nn_test_fill(c, m * n, -1.0f, 1.0f, &rng);
  memcpy(ref, c, m * n * sizeof(float));
  fedc_blas_sgemm_ref(ta, tb, m, n, k, 0.5f, a, ta ? m : k, b, tb ? k : n,
                      0.25f, ref, n);
  fedc_nn_set_threads(3);
  fedc_blas_sgemm(ta, tb, m, n, k, 0.5f, a, ta ? m : k, b, tb ? k : n,
                  0.25f, c, n);
  fedc_nn_set_threads(1);
  ck_assert_msg(relative_error(c, ref, m * n) < 1e-5,
                "m=%zu n=%zu k=%zu trans %d %d", m, n, k, ta, tb);
  free(a);
  free(b);
  free(c);
  free(ref);
}
END_TEST

/* Products of at most 16 columns, which go to OpenBLAS in blocks of 64
 * rows, across the block edges and in every transpose combination, with
 * padded strides; 17 columns take the one-call path. */
START_TEST(sgemm_narrow_matches_reference)
{
  static const size_t sizes[][3] = {
    { 200, 10, 784 }, { 65, 16, 30 }, { 64, 1, 7 }, { 130, 17, 20 },
  };
  const size_t *mnk = sizes[_i / 4];
  size_t m = mnk[0], n = mnk[1], k = mnk[2];
  bool ta = _i % 2, tb = _i / 2 % 2;
  size_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
  float *a = malloc((ta ? k : m) * lda * sizeof(float));
  float *b = malloc((tb ? n : k) * ldb * sizeof(float));
  float *c = malloc(m * ldc * sizeof(float));
  float *ref = malloc(m * ldc * sizeof(float));
  fedc_rng rng;

  fedc_rng_seed(&rng, 37);
  nn_test_fill(a, (ta ? k : m) * lda, -1.0f, 1.0f, &rng);
  nn_test_fill(b, (tb ? n : k) * ldb, -1.0f, 1.0f, &rng);
  nn_test_fill(c, m * ldc, -1.0f, 1.0f, &rng);
  memcpy(ref, c, m * ldc * sizeof(float));
  fedc_blas_sgemm_ref(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 0.25f, ref,
                      ldc);
  fedc_blas_sgemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 0.25f, c, ldc);
  ck_assert_msg(relative_error(c, ref, m * ldc) < 1e-5,
                "m=%zu n=%zu k=%zu trans %d %d", m, n, k, ta, tb);
  free(a);
  free(b);
  free(c);
  free(ref);
}
END_TEST

typedef struct split_log {
  unsigned visits[40];
  unsigned worker_of[40];
  unsigned chunk_of[40];
  unsigned calls;
} split_log;

static void record_range(void *ctx, unsigned worker, size_t chunk,
                         size_t begin, size_t end)
{
  split_log *log = ctx;

  __atomic_add_fetch(&log->calls, 1, __ATOMIC_RELAXED);
  for (size_t i = begin; i < end; i++) {
    log->visits[i]++;
    log->worker_of[i] = worker;
    log->chunk_of[i] = (unsigned)chunk;
  }
}

START_TEST(parallel_run_covers_range_once)
{
  static const size_t sizes[] = { 1, 2, 3, 17, 40 };

  for (unsigned threads = 1; threads <= 4; threads++) {
    fedc_parallel_set_threads(threads);
    ck_assert_uint_eq(fedc_parallel_get_threads(), threads);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
      split_log log = { { 0 }, { 0 }, { 0 }, 0 };
      size_t n = sizes[s];
      size_t chunks = fedc_parallel_chunks(n);

      ck_assert_uint_le(chunks, threads == 1 ? 1 : 4 * threads);
      ck_assert_uint_le(chunks, n);
      fedc_parallel_run(n, record_range, &log);
      ck_assert_uint_eq(log.calls, chunks);
      for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(log.visits[i], 1);
        ck_assert_uint_lt(log.worker_of[i], threads);
        /* Contiguous chunks in order, none empty. */
        if (i > 0)
          ck_assert_uint_le(log.chunk_of[i] - log.chunk_of[i - 1], 1);
      }
      if (n > 0) {
        ck_assert_uint_eq(log.chunk_of[0], 0);
        ck_assert_uint_eq(log.chunk_of[n - 1], chunks - 1);
      }
    }
  }
  fedc_parallel_set_threads(1);
}
END_TEST

START_TEST(parallel_threads_are_clamped)
{
  fedc_parallel_set_threads(0);
  ck_assert_uint_eq(fedc_parallel_get_threads(), 1);
  fedc_parallel_set_threads(1000);
  ck_assert_uint_eq(fedc_parallel_get_threads(), FEDC_PARALLEL_MAX);
  fedc_parallel_set_threads(1);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("nn_kernels");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  fedc_log_set_level(FEDC_LOG_ERROR);
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, fast_kernels_match_reference, 0,
                      sizeof(kernel_cases) / sizeof(kernel_cases[0]));
  tcase_add_test(tc, threaded_pass_is_reproducible);
  tcase_add_test(tc, folded_relu_matches_separate_relu);
  tcase_add_test(tc, folded_relu_gradient_matches_finite_differences);
  tcase_add_loop_test(tc, sgemm_split_matches_reference, 0, 8);
  tcase_add_loop_test(tc, sgemm_narrow_matches_reference, 0, 16);
  tcase_add_test(tc, parallel_run_covers_range_once);
  tcase_add_test(tc, parallel_threads_are_clamped);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
