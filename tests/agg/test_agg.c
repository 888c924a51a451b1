/* Aggregation strategies checked against values worked out by hand.
 *
 * Every model here has two tensors, "w" of shape [2, 2] and "b" of shape
 * [2], so six parameters in the order w[0..3], b[0..1]. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agg/agg.h"
#include "agg/robust.h"
#include "tensor/tensor.h"
#include "util/error.h"

#define P 6

static const uint64_t w_shape[] = {2, 2};
static const uint64_t b_shape[] = {2};

/* Builds a model or update with the test layout and values v[0..5]. */
static void make_model(fedc_tensor_list *list, const float v[P])
{
  fedc_tensor_list_init(list);
  ck_assert_int_eq(fedc_tensor_list_add(list, "w", FEDC_DTYPE_F32, 2,
                                        w_shape, v), 0);
  ck_assert_int_eq(fedc_tensor_list_add(list, "b", FEDC_DTYPE_F32, 1,
                                        b_shape, v + 4), 0);
}

static float value_at(const fedc_tensor_list *list, int j)
{
  const float *w = list->items[0].data;
  const float *b = list->items[1].data;

  return j < 4 ? w[j] : b[j - 4];
}

static void assert_model(const fedc_tensor_list *list, const double want[P],
                         double tol)
{
  for (int j = 0; j < P; j++)
    ck_assert_double_eq_tol(value_at(list, j), want[j], tol);
}

/* Creates a strategy for the test layout, asserting success. */
static fedc_agg *make_agg(fedc_agg_config *config)
{
  static const float zero[P];
  fedc_tensor_list layout;
  fedc_agg *agg = NULL;

  make_model(&layout, zero);
  ck_assert_int_eq(fedc_agg_new(config, &layout, &agg), 0);
  fedc_tensor_list_close(&layout);
  return agg;
}

/* Adds update v with weight and asserts the result code. */
static void add_update(fedc_agg *agg, const float v[P], double weight,
                       int want_rc)
{
  fedc_tensor_list u;

  make_model(&u, v);
  ck_assert_int_eq(fedc_agg_add(agg, &u, weight), want_rc);
  fedc_tensor_list_close(&u);
}

START_TEST(fedavg_weighted_mean)
{
  static const float g0[P] = {1, 1, 1, 1, 1, 1};
  static const float u1[P] = {1, 2, 3, 4, 5, 6};
  static const float u2[P] = {-1, 0, 1, 0, 1, -2};
  fedc_agg_config config;
  fedc_tensor_list global;
  fedc_agg *agg;
  double want[P];

  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  config.server_lr = 0.5;
  agg = make_agg(&config);
  make_model(&global, g0);

  add_update(agg, u1, 1.0, 0);
  add_update(agg, u2, 3.0, 0);
  ck_assert_uint_eq(fedc_agg_count(agg), 2);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), 0);

  /* g + 0.5 * (1 * u1 + 3 * u2) / 4 */
  for (int j = 0; j < P; j++)
    want[j] = g0[j] + 0.5 * (u1[j] + 3.0 * u2[j]) / 4.0;
  assert_model(&global, want, 1e-6);
  ck_assert_uint_eq(fedc_agg_count(agg), 0);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
  ck_assert_ptr_null(agg);
}
END_TEST

START_TEST(fedavg_rejects_leave_round)
{
  static const float g0[P] = {0, 0, 0, 0, 0, 0};
  static const float good[P] = {2, 4, 6, 8, 10, 12};
  float bad[P] = {1, 1, 1, 1, 1, 1};
  static const uint64_t wrong_shape[] = {4};
  fedc_agg_config config;
  fedc_tensor_list global, u;
  fedc_agg *agg;
  double want[P];

  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  agg = make_agg(&config);
  make_model(&global, g0);
  add_update(agg, good, 2.0, 0);

  bad[3] = NAN;
  add_update(agg, bad, 1.0, FEDC_ENONFINITE);
  bad[3] = INFINITY;
  add_update(agg, bad, 1.0, FEDC_ENONFINITE);
  bad[3] = -INFINITY;
  add_update(agg, bad, 1.0, FEDC_ENONFINITE);
  bad[3] = 1;
  add_update(agg, bad, 0.0, FEDC_EINVAL);
  add_update(agg, bad, -1.0, FEDC_EINVAL);
  add_update(agg, bad, NAN, FEDC_EINVAL);
  add_update(agg, bad, INFINITY, FEDC_EINVAL);

  /* The same six values as one tensor of shape [4] and one of [2]. */
  fedc_tensor_list_init(&u);
  ck_assert_int_eq(fedc_tensor_list_add(&u, "w", FEDC_DTYPE_F32, 1,
                                        wrong_shape, bad), 0);
  ck_assert_int_eq(fedc_tensor_list_add(&u, "b", FEDC_DTYPE_F32, 1,
                                        b_shape, bad), 0);
  ck_assert_int_eq(fedc_agg_add(agg, &u, 1.0), FEDC_ESHAPE);
  fedc_tensor_list_close(&u);

  /* A missing tensor and a renamed one. */
  fedc_tensor_list_init(&u);
  ck_assert_int_eq(fedc_tensor_list_add(&u, "w", FEDC_DTYPE_F32, 2,
                                        w_shape, bad), 0);
  ck_assert_int_eq(fedc_agg_add(agg, &u, 1.0), FEDC_ESHAPE);
  ck_assert_int_eq(fedc_tensor_list_add(&u, "bias", FEDC_DTYPE_F32, 1,
                                        b_shape, bad), 0);
  ck_assert_int_eq(fedc_agg_add(agg, &u, 1.0), FEDC_ESHAPE);
  fedc_tensor_list_close(&u);

  ck_assert_uint_eq(fedc_agg_count(agg), 1);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), 0);
  for (int j = 0; j < P; j++)
    want[j] = good[j];
  assert_model(&global, want, 1e-6);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(finish_without_updates)
{
  static const float g0[P] = {1, 2, 3, 4, 5, 6};
  static const float u[P] = {1, 1, 1, 1, 1, 1};
  fedc_agg_config config;
  fedc_tensor_list global;
  fedc_agg *agg;
  double want[P];

  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  agg = make_agg(&config);
  make_model(&global, g0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), FEDC_ESTATE);

  /* begin drops an unfinished round, so finish again has nothing. */
  add_update(agg, u, 1.0, 0);
  fedc_agg_begin(agg);
  ck_assert_uint_eq(fedc_agg_count(agg), 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), FEDC_ESTATE);

  for (int j = 0; j < P; j++)
    want[j] = g0[j];
  assert_model(&global, want, 1e-12);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

/* Runs one round: adds the n updates with their weights, then finishes. */
static void run_round(fedc_agg *agg, fedc_tensor_list *global,
                      const float (*updates)[P], const double *weights,
                      size_t n)
{
  for (size_t i = 0; i < n; i++)
    add_update(agg, updates[i], weights[i], 0);
  ck_assert_uint_eq(fedc_agg_count(agg), n);
  ck_assert_int_eq(fedc_agg_finish(agg, global), 0);
}

static fedc_agg *make_strategy(enum fedc_agg_strategy strategy, double lr)
{
  fedc_agg_config config;

  fedc_agg_config_default(&config, strategy);
  config.server_lr = lr;
  return make_agg(&config);
}

START_TEST(fedavgm_two_rounds)
{
  static const float zero[P];
  static const float round1[2][P] = {{1, 2, 3, 4, 5, 6},
                                     {3, 2, 1, 0, -1, -2}};
  static const float round2[1][P] = {{1, 0, -1, 2, 0, 10}};
  static const double weights[] = {1.0, 1.0};
  /* lr 0.5, momentum 0.9. Round 1: d = 2 everywhere, m = 2, x = 1.
   * Round 2: d = round2, m = 0.9 * 2 + d, x = 1 + 0.5 * m. */
  static const double want1[P] = {1, 1, 1, 1, 1, 1};
  static const double want2[P] = {2.4, 1.9, 1.4, 2.9, 1.9, 6.9};
  fedc_tensor_list global;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDAVGM, 0.5);

  make_model(&global, zero);
  run_round(agg, &global, round1, weights, 2);
  assert_model(&global, want1, 1e-6);
  run_round(agg, &global, round2, weights, 1);
  assert_model(&global, want2, 1e-6);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(fedadam_two_rounds)
{
  static const float zero[P];
  static const float round1[2][P] = {{4, -4, 0, 8, 1, 2},
                                     {0, 0, 0, 0, 1, 2}};
  static const double weights1[] = {1.0, 3.0};
  static const float round2[1][P] = {{-1, -1, 2, 2, 0, 0}};
  static const double weights2[] = {7.0};
  /* lr 0.1, beta1 0.9, beta2 0.99, tau 1e-3, so v starts at 1e-6.
   * Round 1: d = (1, -1, 0, 2, 1, 2), m = 0.1 d,
   * v = 0.99e-6 + 0.01 d^2. */
  static const double m1[P] = {0.1, -0.1, 0, 0.2, 0.1, 0.2};
  static const double v1[P] = {0.01000099, 0.01000099, 0.00000099,
                               0.04000099, 0.01000099, 0.04000099};
  /* Round 2: d = (-1, -1, 2, 2, 0, 0), m = 0.9 m1 + 0.1 d,
   * v = 0.99 v1 + 0.01 d^2. */
  static const double m2[P] = {-0.01, -0.19, 0.2, 0.38, 0.09, 0.18};
  static const double v2[P] = {0.0199009801, 0.0199009801, 0.0400009801,
                               0.0796009801, 0.0099009801, 0.0396009801};
  double want[P];
  fedc_tensor_list global, state;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDADAM, 0.1);
  const double *saved_m, *saved_v;

  make_model(&global, zero);
  run_round(agg, &global, round1, weights1, 2);
  for (int j = 0; j < P; j++)
    want[j] = 0.1 * m1[j] / (sqrt(v1[j]) + 1e-3);
  ck_assert_double_eq_tol(want[0], 0.0990050, 1e-6);
  assert_model(&global, want, 1e-6);

  run_round(agg, &global, round2, weights2, 1);
  for (int j = 0; j < P; j++)
    want[j] += 0.1 * m2[j] / (sqrt(v2[j]) + 1e-3);
  assert_model(&global, want, 1e-6);

  fedc_tensor_list_init(&state);
  ck_assert_int_eq(fedc_agg_state_save(agg, &state), 0);
  ck_assert_uint_eq(state.count, 2);
  saved_m = fedc_tensor_list_find(&state, "server_m")->data;
  saved_v = fedc_tensor_list_find(&state, "server_v")->data;
  for (int j = 0; j < P; j++) {
    ck_assert_double_eq_tol(saved_m[j], m2[j], 1e-12);
    ck_assert_double_eq_tol(saved_v[j], v2[j], 1e-12);
  }

  fedc_tensor_list_close(&state);
  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(fedyogi_two_rounds)
{
  static const float zero[P];
  static const float round1[1][P] = {{1, -1, 0, 2, 0.5f, 0.25f}};
  static const float round2[1][P] = {{0.0625f, 0, 1, -0.5f, 0.5f, 0.25f}};
  static const double weights[] = {2.0};
  /* lr 0.1, beta1 0.9, beta2 0.99, v starts at 1e-6 and moves by
   * 0.01 d^2 towards d^2: v - 0.01 d^2 sign(v - d^2).
   * Round 1: only coordinate 2 (d = 0) has v > d^2, and there v stays. */
  static const double m1[P] = {0.1, -0.1, 0, 0.2, 0.05, 0.025};
  static const double v1[P] = {0.010001, 0.010001, 0.000001,
                               0.040001, 0.002501, 0.000626};
  /* Round 2: coordinate 0 has v1 > d^2 = 0.00390625, so v falls by
   * 0.0000390625; coordinate 1 has d = 0; the rest grow by 0.01 d^2. */
  static const double m2[P] = {0.09625, -0.09, 0.1, 0.13, 0.095, 0.0475};
  static const double v2[P] = {0.0099619375, 0.010001, 0.010001,
                               0.042501, 0.005001, 0.001251};
  double want[P];
  fedc_tensor_list global;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDYOGI, 0.1);

  make_model(&global, zero);
  run_round(agg, &global, round1, weights, 1);
  for (int j = 0; j < P; j++)
    want[j] = 0.1 * m1[j] / (sqrt(v1[j]) + 1e-3);
  assert_model(&global, want, 1e-6);

  run_round(agg, &global, round2, weights, 1);
  for (int j = 0; j < P; j++)
    want[j] += 0.1 * m2[j] / (sqrt(v2[j]) + 1e-3);
  assert_model(&global, want, 1e-6);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(fedadagrad_two_rounds)
{
  static const float zero[P];
  static const float d[1][P] = {{1, -1, 0, 2, 0.5f, 0.25f}};
  static const double weights[] = {1.0};
  double want[P];
  fedc_tensor_list global;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDADAGRAD, 0.1);

  /* The same d twice with the default beta1 = 0, so m = d each round,
   * then v = 1e-6 + d^2 and v = 1e-6 + 2 d^2. */
  make_model(&global, zero);
  run_round(agg, &global, d, weights, 1);
  run_round(agg, &global, d, weights, 1);
  for (int j = 0; j < P; j++) {
    double x = d[0][j];

    want[j] = 0.1 * x / (sqrt(1e-6 + x * x) + 1e-3) +
              0.1 * x / (sqrt(1e-6 + 2 * x * x) + 1e-3);
  }

  /* Coordinate 3 (d = 2): 0.2 / 2.00100025 + 0.2 / 2.8294273. */
  ck_assert_double_eq_tol(want[3], 0.0999500 + 0.0706857, 1e-6);
  assert_model(&global, want, 1e-6);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(optimizer_state_roundtrip)
{
  static const float zero[P];
  static const float round1[1][P] = {{1, -1, 0, 2, 0.5f, 0.25f}};
  static const float round2[1][P] = {{-3, 1, 1, 0, 0.5f, 2}};
  static const double weights[] = {1.0};
  static const uint64_t shape[] = {P};
  double bad[P] = {0};
  fedc_tensor_list a_global, b_global, state, wrong;
  fedc_agg *a = make_strategy(FEDC_AGG_FEDADAM, 0.1);
  fedc_agg *b = make_strategy(FEDC_AGG_FEDADAM, 0.1);
  fedc_tensor *v;

  make_model(&a_global, zero);
  run_round(a, &a_global, round1, weights, 1);
  fedc_tensor_list_init(&state);
  ck_assert_int_eq(fedc_agg_state_save(a, &state), 0);

  /* b resumes from a's state and global, so round 2 matches exactly. */
  fedc_tensor_list_init(&b_global);
  ck_assert_int_eq(fedc_tensor_list_copy(&b_global, &a_global), 0);
  ck_assert_int_eq(fedc_agg_state_load(b, &state), 0);
  run_round(a, &a_global, round2, weights, 1);
  run_round(b, &b_global, round2, weights, 1);
  for (int j = 0; j < P; j++)
    ck_assert_float_eq(value_at(&b_global, j), value_at(&a_global, j));

  /* A negative second moment, a NaN and a missing tensor are rejected. */
  v = fedc_tensor_list_find(&state, "server_v");
  ((double *)v->data)[2] = -1.0;
  ck_assert_int_eq(fedc_agg_state_load(b, &state), FEDC_EFORMAT);
  ((double *)v->data)[2] = NAN;
  ck_assert_int_eq(fedc_agg_state_load(b, &state), FEDC_ENONFINITE);
  fedc_tensor_list_init(&wrong);
  ck_assert_int_eq(fedc_tensor_list_add(&wrong, "server_m", FEDC_DTYPE_F64,
                                        1, shape, bad), 0);
  ck_assert_int_eq(fedc_agg_state_load(b, &wrong), FEDC_ESHAPE);

  fedc_tensor_list_close(&wrong);
  fedc_tensor_list_close(&state);
  fedc_tensor_list_close(&a_global);
  fedc_tensor_list_close(&b_global);
  fedc_agg_free(&a);
  fedc_agg_free(&b);
}
END_TEST

START_TEST(fedavg_state_is_empty)
{
  fedc_tensor_list state;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDAVG, 1.0);

  fedc_tensor_list_init(&state);
  ck_assert_int_eq(fedc_agg_state_save(agg, &state), 0);
  ck_assert_uint_eq(state.count, 0);
  ck_assert_int_eq(fedc_agg_state_load(agg, &state), 0);
  fedc_tensor_list_close(&state);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(median_odd_and_even)
{
  static const float ones[P] = {1, 1, 1, 1, 1, 1};
  static const float u[4][P] = {{1, 5, -3, 0, 2, 7},
                                {2, -1, -2, 0, 9, 7},
                                {100, 0, -1, 1, -4, 7},
                                {3, 3, 3, 3, 3, 3}};
  /* Weights differ, but the median ignores them. */
  static const double weights[] = {1.0, 50.0, 2.0, 1000.0};
  /* Three updates: middle values (2, 0, -2, 0, 2, 7), added to 1. */
  static const double want_odd[P] = {3, 1, -1, 1, 3, 8};
  /* Four: mean of the two middle values (2.5, 1.5, -1.5, 0.5, 2.5, 7). */
  static const double want_even[P] = {3.5, 2.5, -0.5, 1.5, 3.5, 8};
  fedc_tensor_list global;
  fedc_agg *agg = make_strategy(FEDC_AGG_MEDIAN, 1.0);

  make_model(&global, ones);
  run_round(agg, &global, u, weights, 3);
  assert_model(&global, want_odd, 1e-6);

  fedc_tensor_list_close(&global);
  make_model(&global, ones);
  run_round(agg, &global, u, weights, 4);
  assert_model(&global, want_even, 1e-6);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(trimmed_mean_drops_ends)
{
  static const float zero[P];
  static const float u[5][P] = {{1, -50, 5, 10, 0.5f, 7},
                                {2, 0, 5, -10, 1.5f, 1},
                                {3, 0, 5, 1, 2.5f, 4},
                                {4, 3, 5, 2, -1e6f, 1},
                                {100, 3, 5, 3, 1e6f, 7}};
  static const double weights[] = {1, 1, 1, 1, 1};
  /* trim 0.2 of 5 cuts one value at each end and averages three:
   * (2+3+4)/3, (0+0+3)/3, 5, (1+2+3)/3, (0.5+1.5+2.5)/3, (1+4+7)/3. */
  static const double want[P] = {3, 1, 5, 2, 1.5, 4};
  fedc_agg_config config;
  fedc_tensor_list global;
  fedc_agg *agg;

  fedc_agg_config_default(&config, FEDC_AGG_TRIMMED_MEAN);
  config.trim_fraction = 0.2;
  agg = make_agg(&config);
  make_model(&global, zero);
  run_round(agg, &global, u, weights, 5);
  assert_model(&global, want, 1e-6);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(trim_count_rounding)
{
  ck_assert_uint_eq(fedc_robust_trim_count(0.2, 5), 1);
  ck_assert_uint_eq(fedc_robust_trim_count(0.29, 100), 29);
  ck_assert_uint_eq(fedc_robust_trim_count(0.1, 5), 0);
  ck_assert_uint_eq(fedc_robust_trim_count(0.0, 7), 0);
  ck_assert_uint_eq(fedc_robust_trim_count(0.49, 2), 0);
  ck_assert_uint_eq(fedc_robust_trim_count(0.4, 5), 2);
}
END_TEST

/* Four honest updates a..d at 0, 1, 2 and 3.5 on the first coordinate
 * and a huge one, e. With n = 5 and f = 1 each score sums the squared
 * distances to the n - f - 2 = 2 nearest others: a 1+4 = 5, b 1+1 = 2,
 * c 1+2.25 = 3.25, d 2.25+6.25 = 8.5, and e, nearest to d and c,
 * 996.5^2 + 998^2 + 2 * 5 * 1000^2. */
static const float krum_updates[5][P] = {{0, 0, 0, 0, 0, 0},
                                         {1, 0, 0, 0, 0, 0},
                                         {2, 0, 0, 0, 0, 0},
                                         {3.5f, 0, 0, 0, 0, 0},
                                         {1000, 1000, 1000, 1000, 1000,
                                          1000}};
static const double krum_weights[] = {1, 1, 1, 1, 1000};

/* Runs a Krum round with f = 1 and returns the first coordinate. */
static double krum_round(enum fedc_agg_strategy strategy, uint32_t m)
{
  static const float zero[P];
  fedc_agg_config config;
  fedc_tensor_list global;
  fedc_agg *agg;
  double first;

  fedc_agg_config_default(&config, strategy);
  config.krum_byzantine = 1;
  config.multi_krum_m = m;
  agg = make_agg(&config);
  make_model(&global, zero);
  run_round(agg, &global, krum_updates, krum_weights, 5);
  for (int j = 1; j < P; j++)
    ck_assert_float_eq(value_at(&global, j), 0.0f);
  first = value_at(&global, 0);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
  return first;
}

START_TEST(krum_picks_honest)
{
  const float *rows[5];
  double scores[5];
  size_t chosen[3];
  double out[P];

  /* Krum takes b; Multi-Krum averages b, c (1.5), then b, c, a (1). */
  ck_assert_double_eq_tol(krum_round(FEDC_AGG_KRUM, 0), 1.0, 1e-6);
  ck_assert_double_eq_tol(krum_round(FEDC_AGG_MULTI_KRUM, 2), 1.5, 1e-6);
  ck_assert_double_eq_tol(krum_round(FEDC_AGG_MULTI_KRUM, 3), 1.0, 1e-6);

  /* m = 0, and any m above n - f = 4, average the four honest updates. */
  ck_assert_double_eq_tol(krum_round(FEDC_AGG_MULTI_KRUM, 0), 1.625, 1e-6);
  ck_assert_double_eq_tol(krum_round(FEDC_AGG_MULTI_KRUM, 9), 1.625, 1e-6);

  for (int i = 0; i < 5; i++)
    rows[i] = krum_updates[i];
  ck_assert_int_eq(fedc_robust_krum_scores(rows, 5, P, 1, scores), 0);
  ck_assert_double_eq_tol(scores[0], 5.0, 1e-9);
  ck_assert_double_eq_tol(scores[1], 2.0, 1e-9);
  ck_assert_double_eq_tol(scores[2], 3.25, 1e-9);
  ck_assert_double_eq_tol(scores[3], 8.5, 1e-9);
  ck_assert_double_eq_tol(scores[4],
                          996.5 * 996.5 + 998.0 * 998.0 + 1e7, 1e-6);
  ck_assert_int_eq(fedc_robust_krum(rows, 5, P, 1, 3, out, chosen), 0);
  ck_assert_uint_eq(chosen[0], 1);
  ck_assert_uint_eq(chosen[1], 2);
  ck_assert_uint_eq(chosen[2], 0);
}
END_TEST

START_TEST(krum_too_few_updates)
{
  static const float zero[P];
  fedc_agg_config config;
  fedc_tensor_list global;
  fedc_agg *agg;
  const float *rows[4];
  double scores[4];
  double out[P];

  fedc_agg_config_default(&config, FEDC_AGG_KRUM);
  config.krum_byzantine = 1;
  agg = make_agg(&config);
  ck_assert_uint_eq(fedc_agg_min_updates(agg), 5);
  make_model(&global, zero);

  /* n = 4 is not above 2f + 2 = 4: finish fails and keeps the round. */
  for (int i = 0; i < 4; i++)
    add_update(agg, krum_updates[i], 1.0, 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), FEDC_ESTATE);
  ck_assert_uint_eq(fedc_agg_count(agg), 4);
  for (int j = 0; j < P; j++)
    ck_assert_float_eq(value_at(&global, j), 0.0f);

  add_update(agg, krum_updates[4], 1.0, 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), 0);
  ck_assert_double_eq_tol(value_at(&global, 0), 1.0, 1e-6);

  for (int i = 0; i < 4; i++)
    rows[i] = krum_updates[i];
  ck_assert_int_eq(fedc_robust_krum_scores(rows, 4, P, 1, scores),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_robust_krum(rows, 4, P, 1, 1, out, NULL),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_robust_krum(rows, 4, P, 0, 0, out, NULL),
                   FEDC_EINVAL);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(norm_bounding_scales)
{
  static const float zero[P];
  /* Norms 5, 0.5 and 13 against clip_norm 1: the first becomes
   * (0.6, 0.8, 0...), the second stays, the third becomes
   * (12/13, 0, 0, 0, 0, -5/13). */
  static const float u[3][P] = {{3, 4, 0, 0, 0, 0},
                                {0, 0, 0, 0, 0, 0.5f},
                                {12, 0, 0, 0, 0, -5}};
  static const double weights[] = {1, 1, 2};
  /* FedAvg with weights 1, 1, 2: (0.6 + 24/13) / 4, 0.8 / 4, ...,
   * (0.5 - 10/13) / 4. */
  const double want_avg[P] = {(0.6 + 24.0 / 13.0) / 4.0, 0.2, 0, 0, 0,
                              (0.5 - 10.0 / 13.0) / 4.0};
  /* Median of the clipped values: (0.6, 0, 0, 0, 0, 0). */
  static const double want_median[P] = {0.6, 0, 0, 0, 0, 0};
  fedc_agg_config config;
  fedc_tensor_list global;
  fedc_agg *agg;

  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  config.clip_norm = 1.0;
  agg = make_agg(&config);
  make_model(&global, zero);
  run_round(agg, &global, u, weights, 3);
  assert_model(&global, want_avg, 1e-6);
  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);

  fedc_agg_config_default(&config, FEDC_AGG_MEDIAN);
  config.clip_norm = 1.0;
  agg = make_agg(&config);
  make_model(&global, zero);
  run_round(agg, &global, u, weights, 3);
  assert_model(&global, want_median, 1e-6);
  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

/* An update passed with its norm counts as fedc_agg_add() would count it:
 * the same clipped FedAvg as norm_bounding_scales, and a non-finite norm
 * rejected with the round unchanged. */
START_TEST(add_with_known_norm)
{
  static const float zero[P];
  static const float u[3][P] = {{3, 4, 0, 0, 0, 0},
                                {0, 0, 0, 0, 0, 0.5f},
                                {12, 0, 0, 0, 0, -5}};
  static const double norms[] = {5, 0.5, 13};
  static const double weights[] = {1, 1, 2};
  const double want[P] = {(0.6 + 24.0 / 13.0) / 4.0, 0.2, 0, 0, 0,
                          (0.5 - 10.0 / 13.0) / 4.0};
  fedc_agg_config config;
  fedc_tensor_list global, update;
  fedc_agg *agg;

  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  config.clip_norm = 1.0;
  agg = make_agg(&config);
  make_model(&update, u[0]);
  ck_assert_int_eq(fedc_agg_add_norm(agg, &update, 1.0, NAN),
                   FEDC_ENONFINITE);
  ck_assert_int_eq(fedc_agg_add_norm(agg, &update, 1.0, INFINITY),
                   FEDC_ENONFINITE);
  ck_assert_uint_eq(fedc_agg_count(agg), 0);
  fedc_tensor_list_close(&update);
  for (int k = 0; k < 3; k++) {
    make_model(&update, u[k]);
    ck_assert_int_eq(fedc_agg_add_norm(agg, &update, weights[k], norms[k]),
                     0);
    fedc_tensor_list_close(&update);
  }
  make_model(&global, zero);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), 0);
  assert_model(&global, want, 1e-6);
  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(robust_rejects_leave_round)
{
  static const float zero[P];
  static const float good[2][P] = {{1, 2, 3, 4, 5, 6}, {3, 4, 5, 6, 7, 8}};
  float bad[P] = {1, 1, 1, 1, 1, 1};
  static const double want[P] = {2, 3, 4, 5, 6, 7};
  fedc_tensor_list global;
  fedc_agg *agg = make_strategy(FEDC_AGG_MEDIAN, 1.0);

  make_model(&global, zero);
  add_update(agg, good[0], 1.0, 0);
  bad[5] = NAN;
  add_update(agg, bad, 1.0, FEDC_ENONFINITE);
  bad[5] = 1;
  add_update(agg, bad, 0.0, FEDC_EINVAL);
  add_update(agg, good[1], 1.0, 0);
  ck_assert_uint_eq(fedc_agg_count(agg), 2);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), 0);
  assert_model(&global, want, 1e-6);

  /* An unfinished robust round is dropped by begin and by free. */
  add_update(agg, good[0], 1.0, 0);
  fedc_agg_begin(agg);
  ck_assert_uint_eq(fedc_agg_count(agg), 0);
  add_update(agg, good[1], 1.0, 0);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(finish_rejects_overflow)
{
  static const float ones[P] = {1, 1, 1, 1, 1, 1};
  static const float huge[P] = {3e38f, 0, 0, 0, 0, 0};
  static const float tens[P] = {10, 10, 10, 10, 10, 10};
  /* lr 10, momentum 0.9: round 1 sets m = 1 and x = 1 + 10 * 1 = 11. */
  static const double want[P] = {11, 11, 11, 11, 11, 11};
  fedc_tensor_list global, state;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDAVGM, 10.0);
  const double *m;

  make_model(&global, ones);
  add_update(agg, ones, 1.0, 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), 0);
  assert_model(&global, want, 1e-6);

  /* 11 + 10 * (0.9 + 3e38) is beyond float: nothing may change. */
  add_update(agg, huge, 1.0, 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), FEDC_ENONFINITE);
  ck_assert_uint_eq(fedc_agg_count(agg), 1);
  assert_model(&global, want, 1e-6);
  fedc_tensor_list_init(&state);
  ck_assert_int_eq(fedc_agg_state_save(agg, &state), 0);
  m = state.items[0].data;
  for (int j = 0; j < P; j++)
    ck_assert_double_eq_tol(m[j], 1.0, 1e-12);

  /* Weights of 1e308 overflow the weight sum to Inf, and the mean to NaN. */
  fedc_agg_begin(agg);
  add_update(agg, tens, 1e308, 0);
  add_update(agg, tens, 1e308, 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), FEDC_ENONFINITE);
  assert_model(&global, want, 1e-6);

  fedc_tensor_list_close(&state);
  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(finish_wrong_global_layout)
{
  static const float u[P] = {1, 1, 1, 1, 1, 1};
  static const uint64_t shape[] = {6};
  fedc_tensor_list global;
  fedc_agg *agg = make_strategy(FEDC_AGG_FEDADAM, 0.1);

  add_update(agg, u, 1.0, 0);
  fedc_tensor_list_init(&global);
  ck_assert_int_eq(fedc_tensor_list_add(&global, "w", FEDC_DTYPE_F32, 1,
                                        shape, NULL), 0);
  ck_assert_int_eq(fedc_agg_finish(agg, &global), FEDC_ESHAPE);
  ck_assert_uint_eq(fedc_agg_count(agg), 1);

  fedc_tensor_list_close(&global);
  fedc_agg_free(&agg);
}
END_TEST

START_TEST(config_rejects_bad_values)
{
  static const float zero[P];
  static const uint64_t shape[] = {3};
  fedc_agg_config config;
  fedc_tensor_list layout;
  fedc_agg *agg = NULL;

  make_model(&layout, zero);
  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  config.server_lr = 0.0;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  config.server_lr = NAN;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  config.clip_norm = -1.0;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  fedc_agg_config_default(&config, FEDC_AGG_FEDAVGM);
  config.server_momentum = 1.0;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  fedc_agg_config_default(&config, FEDC_AGG_FEDADAM);
  config.beta2 = 1.0;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  fedc_agg_config_default(&config, FEDC_AGG_FEDYOGI);
  config.tau = 0.0;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  fedc_agg_config_default(&config, FEDC_AGG_TRIMMED_MEAN);
  config.trim_fraction = 0.5;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  config.strategy = (enum fedc_agg_strategy)99;
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  ck_assert_ptr_null(agg);
  fedc_tensor_list_close(&layout);

  /* Only F32 models, and not an empty one. */
  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  ck_assert_int_eq(fedc_tensor_list_add(&layout, "x", FEDC_DTYPE_F64, 1,
                                        shape, NULL), 0);
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EUNSUPPORTED);
  fedc_tensor_list_close(&layout);
  ck_assert_int_eq(fedc_agg_new(&config, &layout, &agg), FEDC_EINVAL);
  ck_assert_ptr_null(agg);
}
END_TEST

START_TEST(strategy_names_roundtrip)
{
  enum fedc_agg_strategy s;

  for (int i = FEDC_AGG_FEDAVG; i <= FEDC_AGG_MULTI_KRUM; i++) {
    const char *name = fedc_agg_strategy_name((enum fedc_agg_strategy)i);

    ck_assert_ptr_nonnull(name);
    ck_assert_int_eq(fedc_agg_strategy_parse(name, &s), 0);
    ck_assert_int_eq(s, i);
  }
  ck_assert_int_eq(fedc_agg_strategy_parse("trimmed_mean", &s), 0);
  ck_assert_int_eq(s, FEDC_AGG_TRIMMED_MEAN);
  ck_assert_int_eq(fedc_agg_strategy_parse("FedAvg", &s), FEDC_EINVAL);
  ck_assert_int_eq(fedc_agg_strategy_parse("", &s), FEDC_EINVAL);
  ck_assert_ptr_null(fedc_agg_strategy_name((enum fedc_agg_strategy)42));
}
END_TEST

START_TEST(memory_by_strategy)
{
  /* Six parameters: 48 bytes per double vector, 24 per float row. */
  fedc_agg *avg = make_strategy(FEDC_AGG_FEDAVG, 1.0);
  fedc_agg *adam = make_strategy(FEDC_AGG_FEDADAM, 0.1);
  fedc_agg *avgm = make_strategy(FEDC_AGG_FEDAVGM, 0.1);
  fedc_agg *median = make_strategy(FEDC_AGG_MEDIAN, 1.0);
  fedc_agg *krum = make_strategy(FEDC_AGG_KRUM, 1.0);

  ck_assert_uint_eq(fedc_agg_memory(avg, 1), 48);
  ck_assert_uint_eq(fedc_agg_memory(avg, 100000), 48);
  ck_assert_uint_eq(fedc_agg_memory(avgm, 10), 96);
  ck_assert_uint_eq(fedc_agg_memory(adam, 10), 144);
  /* 48 + 10 rows of (24 + pointer) + a column of 10 doubles. */
  ck_assert_uint_eq(fedc_agg_memory(median, 10),
                    48 + 10 * (24 + sizeof(float *)) + 80);
  /* 48 + 5 rows + 5 x 5 distances + 5 x (3 doubles + a size_t). */
  ck_assert_uint_eq(fedc_agg_memory(krum, 5),
                    48 + 5 * (24 + sizeof(float *)) + 200 +
                    5 * (24 + sizeof(size_t)));
  ck_assert_uint_eq(fedc_agg_min_updates(avg), 1);
  ck_assert_uint_eq(fedc_agg_min_updates(krum), 5);

  fedc_agg_free(&avg);
  fedc_agg_free(&adam);
  fedc_agg_free(&avgm);
  fedc_agg_free(&median);
  fedc_agg_free(&krum);
}
END_TEST

START_TEST(defaults_by_strategy)
{
  fedc_agg_config config;

  fedc_agg_config_default(&config, FEDC_AGG_FEDAVG);
  ck_assert_double_eq(config.server_lr, 1.0);
  ck_assert_double_eq(config.clip_norm, 0.0);
  fedc_agg_config_default(&config, FEDC_AGG_FEDAVGM);
  ck_assert_double_eq(config.server_lr, 0.1);
  ck_assert_double_eq(config.server_momentum, 0.9);
  fedc_agg_config_default(&config, FEDC_AGG_FEDADAM);
  ck_assert_int_eq(config.strategy, FEDC_AGG_FEDADAM);
  ck_assert_double_eq(config.server_lr, 1e-2);
  ck_assert_double_eq(config.beta1, 0.9);
  ck_assert_double_eq(config.beta2, 0.99);
  ck_assert_double_eq(config.tau, 1e-3);
  fedc_agg_config_default(&config, FEDC_AGG_FEDADAGRAD);
  ck_assert_double_eq(config.beta1, 0.0);
  ck_assert_double_eq(config.tau, 1e-3);
  fedc_agg_config_default(&config, FEDC_AGG_MULTI_KRUM);
  ck_assert_uint_eq(config.krum_byzantine, 1);
  ck_assert_uint_eq(config.multi_krum_m, 0);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("agg");
  TCase *streaming = tcase_create("streaming");
  TCase *robust = tcase_create("robust");
  TCase *api = tcase_create("api");
  SRunner *sr;
  int failed;

  tcase_add_test(streaming, fedavg_weighted_mean);
  tcase_add_test(streaming, fedavg_rejects_leave_round);
  tcase_add_test(streaming, finish_without_updates);
  tcase_add_test(streaming, fedavgm_two_rounds);
  tcase_add_test(streaming, fedadam_two_rounds);
  tcase_add_test(streaming, fedyogi_two_rounds);
  tcase_add_test(streaming, fedadagrad_two_rounds);
  tcase_add_test(streaming, optimizer_state_roundtrip);
  tcase_add_test(streaming, fedavg_state_is_empty);
  tcase_add_test(robust, median_odd_and_even);
  tcase_add_test(robust, trimmed_mean_drops_ends);
  tcase_add_test(robust, trim_count_rounding);
  tcase_add_test(robust, krum_picks_honest);
  tcase_add_test(robust, krum_too_few_updates);
  tcase_add_test(robust, norm_bounding_scales);
  tcase_add_test(robust, add_with_known_norm);
  tcase_add_test(robust, robust_rejects_leave_round);
  tcase_add_test(api, finish_wrong_global_layout);
  tcase_add_test(api, finish_rejects_overflow);
  tcase_add_test(api, config_rejects_bad_values);
  tcase_add_test(api, strategy_names_roundtrip);
  tcase_add_test(api, memory_by_strategy);
  tcase_add_test(api, defaults_by_strategy);
  suite_add_tcase(s, streaming);
  suite_add_tcase(s, robust);
  suite_add_tcase(s, api);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
