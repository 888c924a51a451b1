/* Unit tests of the trainer's core: the sgemm paths, dense layers and
 * activations against finite differences, model specs, parameter exchange
 * and deterministic training. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/activation.h"
#include "nn/blas.h"
#include "nn/dense.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/net.h"
#include "nn_testutil.h"
#include "util/error.h"
#include "util/log.h"

/* A learnable synthetic task: the label is the argmax of a fixed linear map
 * of the features. */
static void make_dataset(fedc_dataset *ds, uint64_t n, uint32_t dim,
                         uint32_t classes, uint64_t seed)
{
  fedc_rng rng;
  float *w = malloc((size_t)dim * classes * sizeof(float));

  memset(ds, 0, sizeof(*ds));
  ds->n = n;
  ds->dim = dim;
  ds->num_classes = classes;
  ds->x = malloc(n * dim * sizeof(float));
  ds->y = malloc(n * sizeof(int32_t));
  fedc_rng_seed(&rng, seed);
  nn_test_fill(w, (size_t)dim * classes, -1.0f, 1.0f, &rng);
  nn_test_fill(ds->x, n * dim, -1.0f, 1.0f, &rng);
  for (uint64_t i = 0; i < n; i++) {
    float best = -INFINITY;

    for (uint32_t c = 0; c < classes; c++) {
      float s = 0;

      for (uint32_t j = 0; j < dim; j++)
        s += w[c * dim + j] * ds->x[i * dim + j];
      if (s > best) {
        best = s;
        ds->y[i] = (int32_t)c;
      }
    }
  }
  free(w);
}

static fedc_dataset_view all_rows(const fedc_dataset *ds)
{
  fedc_dataset_view view = { ds, NULL, ds->n };

  return view;
}

static void free_dataset(fedc_dataset *ds)
{
  free(ds->x);
  free(ds->y);
  memset(ds, 0, sizeof(*ds));
}

static fedc_train_config sgd_config(void)
{
  fedc_train_config c = { 0 };

  c.local_epochs = 2;
  c.batch_size = 16;
  c.learning_rate = 0.1f;
  c.momentum = 0.9f;
  c.seed = 11;
  return c;
}

/* --- sgemm ----------------------------------------------------------------- */

START_TEST(sgemm_openblas_matches_reference)
{
  const size_t m = 37, n = 29, k = 53;
  float *a = malloc(m * k * sizeof(float));
  float *b = malloc(k * n * sizeof(float));
  float *c1 = malloc(m * n * sizeof(float));
  float *c2 = malloc(m * n * sizeof(float));
  fedc_rng rng;
  int trans = _i;
  bool ta = trans & 1, tb = trans & 2;

  fedc_rng_seed(&rng, 1);
  nn_test_fill(a, m * k, -1, 1, &rng);
  nn_test_fill(b, k * n, -1, 1, &rng);
  nn_test_fill(c1, m * n, -1, 1, &rng);
  memcpy(c2, c1, m * n * sizeof(float));
  fedc_blas_sgemm(ta, tb, m, n, k, 0.5f, a, ta ? m : k, b, tb ? k : n, 0.25f,
                  c1, n);
  fedc_blas_sgemm_ref(ta, tb, m, n, k, 0.5f, a, ta ? m : k, b, tb ? k : n,
                      0.25f, c2, n);
  for (size_t i = 0; i < m * n; i++)
    ck_assert_float_le(fabsf(c1[i] - c2[i]), 1e-5f * fmaxf(1.0f, fabsf(c2[i])));
  free(a);
  free(b);
  free(c1);
  free(c2);
}
END_TEST

START_TEST(sgemm_beta_zero_ignores_nan_output)
{
  float a[4] = { 1, 2, 3, 4 }, b[4] = { 1, 0, 0, 1 };
  float c[4] = { NAN, NAN, NAN, NAN };

  fedc_blas_sgemm(false, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  ck_assert_float_eq(c[0], 1);
  ck_assert_float_eq(c[3], 4);
  c[0] = c[1] = c[2] = c[3] = NAN;
  fedc_blas_sgemm_ref(false, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  ck_assert_float_eq(c[1], 2);
}
END_TEST

/* --- Layers against finite differences ------------------------------------ */

static fedc_net *single_dense_net(uint32_t in, uint32_t out_units, bool bias)
{
  fedc_shape shape = { 1, { in } };
  fedc_net *net;
  fedc_layer *layer;

  ck_assert_int_eq(fedc_net_new(&shape, &net), 0);
  ck_assert_int_eq(fedc_dense_new("fc", &shape, out_units, bias, &layer), 0);
  ck_assert_int_eq(fedc_net_append(net, layer), 0);
  return net;
}

static double check_net(fedc_net *net, uint32_t batch, float lo, float hi)
{
  size_t n = fedc_layer_shape_size(&net->in) * batch;
  float *x = malloc(n * sizeof(float));
  fedc_rng rng;
  double err;

  fedc_rng_seed(&rng, 3);
  nn_test_fill(x, n, lo, hi, &rng);
  /* Keep inputs off ReLU's kink at 0 by more than the difference step. */
  for (size_t i = 0; i < n; i++)
    if (x[i] > -0.1f && x[i] < 0.1f)
      x[i] += x[i] < 0 ? -0.2f : 0.2f;
  nn_test_bind(net, 4);
  err = nn_test_gradcheck(net, x, batch, 1e-2f, 64, 0);
  nn_test_unbind(net);
  free(x);
  return err;
}

START_TEST(dense_backward_matches_finite_differences)
{
  fedc_net *net = single_dense_net(7, 5, _i == 0);

  ck_assert_double_lt(check_net(net, 3, -1, 1), 2e-3);
  fedc_net_free(&net);
}
END_TEST

START_TEST(dense_on_last_dimension_of_sequence)
{
  fedc_shape in = { 2, { 4, 6 } };
  fedc_net *net;
  fedc_layer *layer;

  ck_assert_int_eq(fedc_net_new(&in, &net), 0);
  ck_assert_int_eq(fedc_dense_new("proj", &in, 3, true, &layer), 0);
  ck_assert_uint_eq(layer->out.ndim, 2);
  ck_assert_uint_eq(layer->out.dim[0], 4);
  ck_assert_uint_eq(layer->out.dim[1], 3);
  ck_assert_int_eq(fedc_net_append(net, layer), 0);
  ck_assert_double_lt(check_net(net, 2, -1, 1), 2e-3);
  fedc_net_free(&net);
}
END_TEST

START_TEST(activation_backward_matches_finite_differences)
{
  fedc_shape shape = { 1, { 9 } };
  fedc_net *net;
  fedc_layer *layer;

  ck_assert_int_eq(fedc_net_new(&shape, &net), 0);
  ck_assert_int_eq(fedc_activation_new("act", &shape, (enum fedc_activation)_i,
                                       0.05f, &layer), 0);
  ck_assert_int_eq(fedc_net_append(net, layer), 0);
  ck_assert_double_lt(check_net(net, 4, -2, 2), 3e-3);
  fedc_net_free(&net);
}
END_TEST

START_TEST(activation_values_match_definitions)
{
  fedc_shape shape = { 1, { 3 } };
  float x[3] = { -1.0f, 0.0f, 2.0f };
  float y[3];
  fedc_layer *layer;
  fedc_pass pass = { 0 };
  const struct { enum fedc_activation kind; float expect[3]; } cases[] = {
    { FEDC_ACT_RELU, { 0.0f, 0.0f, 2.0f } },
    { FEDC_ACT_LEAKY_RELU, { -0.05f, 0.0f, 2.0f } },
    { FEDC_ACT_GELU, { -0.15865525f, 0.0f, 1.9544997f } },
    { FEDC_ACT_SIGMOID, { 0.26894142f, 0.5f, 0.8807971f } },
    { FEDC_ACT_TANH, { -0.7615942f, 0.0f, 0.9640276f } },
  };

  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    ck_assert_int_eq(fedc_activation_new("a", &shape, cases[c].kind, 0.05f,
                                         &layer), 0);
    ck_assert_int_eq(layer->ops->forward(layer, x, y, 1, &pass), 0);
    for (int i = 0; i < 3; i++)
      ck_assert_float_eq_tol(y[i], cases[c].expect[i], 1e-6f);
    fedc_layer_free(&layer);
  }
}
END_TEST

/* --- Losses ---------------------------------------------------------------- */

START_TEST(loss_gradient_matches_finite_differences)
{
  const enum fedc_loss kinds[] = { FEDC_LOSS_CE, FEDC_LOSS_BCE, FEDC_LOSS_MSE,
                                   FEDC_LOSS_BCE, FEDC_LOSS_MSE };
  const uint32_t widths[] = { 5, 5, 5, 1, 1 };
  enum fedc_loss kind = kinds[_i];
  uint32_t width = widths[_i];
  int32_t labels[3] = { 0, width > 1 ? 4 : 1, width > 1 ? 2 : 0 };
  float z[15], grad[15];
  fedc_rng rng;
  double base = 0.0;

  fedc_rng_seed(&rng, 8);
  nn_test_fill(z, 3 * width, -2, 2, &rng);
  ck_assert_int_eq(fedc_loss_compute(kind, z, width, labels, 3, grad, &base,
                                     NULL), 0);
  for (uint32_t i = 0; i < 3 * width; i++) {
    double plus = 0.0, minus = 0.0;
    float saved = z[i];

    z[i] = saved + 1e-2f;
    fedc_loss_compute(kind, z, width, labels, 3, NULL, &plus, NULL);
    z[i] = saved - 1e-2f;
    fedc_loss_compute(kind, z, width, labels, 3, NULL, &minus, NULL);
    z[i] = saved;
    /* The gradient is of the mean, the sums are over 3 rows. */
    ck_assert_double_lt(fabs((plus - minus) / (2e-2 * 3) - grad[i]), 1e-3);
  }
}
END_TEST

START_TEST(loss_rejects_out_of_range_label)
{
  float z[4] = { 0, 1, 2, 3 };
  int32_t bad[1] = { 4 }, negative[1] = { -1 }, two[1] = { 2 };
  double sum = 0;

  ck_assert_int_eq(fedc_loss_compute(FEDC_LOSS_CE, z, 4, bad, 1, NULL, &sum,
                                     NULL), FEDC_EINVAL);
  ck_assert_int_eq(fedc_loss_compute(FEDC_LOSS_CE, z, 4, negative, 1, NULL,
                                     &sum, NULL), FEDC_EINVAL);
  ck_assert_int_eq(fedc_loss_compute(FEDC_LOSS_BCE, z, 1, two, 1, NULL, &sum,
                                     NULL), FEDC_EINVAL);
}
END_TEST

START_TEST(cross_entropy_value_is_exact)
{
  float z[3] = { 1.0f, 2.0f, 3.0f };
  int32_t label[1] = { 0 };
  double sum = 0;

  ck_assert_int_eq(fedc_loss_compute(FEDC_LOSS_CE, z, 3, label, 1, NULL, &sum,
                                     NULL), 0);
  /* log(e^1 + e^2 + e^3) - 1 */
  ck_assert_double_eq_tol(sum, 2.4076059644443806, 1e-9);
}
END_TEST

/* --- Model specs and parameters ------------------------------------------- */

START_TEST(logreg_names_and_shapes_follow_pytorch)
{
  fedc_model *m;
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_model_new("logreg:784:10", 1, &m), 0);
  ck_assert_uint_eq(fedc_model_input_dim(m), 784);
  ck_assert_uint_eq(fedc_model_output_dim(m), 10);
  ck_assert_str_eq(fedc_model_spec(m), "logreg:784:10");
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_uint_eq(list.count, 2);
  ck_assert_str_eq(list.items[0].name, "fc.weight");
  ck_assert_int_eq(list.items[0].ndim, 2);
  ck_assert_uint_eq(list.items[0].shape[0], 10);
  ck_assert_uint_eq(list.items[0].shape[1], 784);
  ck_assert_str_eq(list.items[1].name, "fc.bias");
  ck_assert_uint_eq(list.items[1].shape[0], 10);
  fedc_tensor_list_close(&list);
  fedc_model_free(&m);
  ck_assert_ptr_null(m);
}
END_TEST

START_TEST(mlp_names_shapes_and_init_bounds)
{
  const char *names[] = { "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                          "fc3.weight", "fc3.bias" };
  const uint64_t rows[] = { 256, 256, 128, 128, 10, 10 };
  const double fan_in[] = { 784, 784, 256, 256, 128, 128 };
  fedc_model *m;
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_model_new("mlp:784:256:128:10", 1, &m), 0);
  ck_assert_uint_eq(fedc_model_param_count(m),
                    784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_uint_eq(list.count, 6);
  for (size_t t = 0; t < 6; t++) {
    const float *v = list.items[t].data;
    uint64_t n = fedc_tensor_numel(&list.items[t]);
    double bound = 1.0 / sqrt(fan_in[t]), sum2 = 0.0;

    ck_assert_str_eq(list.items[t].name, names[t]);
    ck_assert_uint_eq(list.items[t].shape[0], rows[t]);
    for (uint64_t i = 0; i < n; i++) {
      ck_assert_double_le(fabs(v[i]), bound);
      sum2 += (double)v[i] * v[i];
    }
    /* U(-b, b) has standard deviation b / sqrt(3). */
    if (n > 1000)
      ck_assert_double_eq_tol(sqrt(sum2 / n), bound / sqrt(3.0), 0.05 * bound);
  }
  fedc_tensor_list_close(&list);
  fedc_model_free(&m);
}
END_TEST

START_TEST(spec_rejects_invalid_text)
{
  const char *bad[] = {
    "", "logreg", "logreg:784", "logreg:0:10", "logreg:784:10:3",
    "mlp:784", "mlp:784:x:10", "unknown:3:4", "mlp:784:-5:10",
    "input 784; dense", "input 784; dense 0", "input 784; dense 10 bias=2",
    "input 784; dense 10 colour=red", "input 784; warp 10",
    "dense 10", "input 0; dense 10", "input 784; dense 10; input 3",
    "input 784; dense 10; loss hinge", "input 784; dense 10; loss ce; loss ce",
    "input 784; dense 10 }", "input 784",
    "input 65536x65536; dense 10",
    "input 100000; dense 100000",
  };
  fedc_model *m = NULL;

  fedc_log_set_level(FEDC_LOG_OFF);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ck_assert_msg(fedc_model_new(bad[i], 1, &m) == FEDC_EINVAL,
                  "spec \"%s\" was accepted", bad[i]);
    ck_assert_ptr_null(m);
  }
  fedc_log_set_level(FEDC_LOG_INFO);
}
END_TEST

START_TEST(spec_layer_list_with_names)
{
  fedc_model *m;
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_model_new("input 12\n dense 8 name=hidden; gelu;"
                                  " dense 3 bias=0; loss mse", 2, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_uint_eq(list.count, 3);
  ck_assert_str_eq(list.items[0].name, "hidden.weight");
  ck_assert_str_eq(list.items[1].name, "hidden.bias");
  ck_assert_str_eq(list.items[2].name, "2.weight");
  fedc_tensor_list_close(&list);
  fedc_model_free(&m);
}
END_TEST

START_TEST(same_seed_same_init_other_seed_differs)
{
  fedc_model *a, *b, *c;
  fedc_tensor_list la, lb, lc;

  fedc_tensor_list_init(&la);
  fedc_tensor_list_init(&lb);
  fedc_tensor_list_init(&lc);
  ck_assert_int_eq(fedc_model_new("mlp:20:16:4", 5, &a), 0);
  ck_assert_int_eq(fedc_model_new("mlp:20:16:4", 5, &b), 0);
  ck_assert_int_eq(fedc_model_new("mlp:20:16:4", 6, &c), 0);
  fedc_model_get_params(a, &la);
  fedc_model_get_params(b, &lb);
  fedc_model_get_params(c, &lc);
  ck_assert_mem_eq(la.items[0].data, lb.items[0].data, 320 * sizeof(float));
  ck_assert(memcmp(la.items[0].data, lc.items[0].data, 320 * sizeof(float)) != 0);
  fedc_tensor_list_close(&la);
  fedc_tensor_list_close(&lb);
  fedc_tensor_list_close(&lc);
  fedc_model_free(&a);
  fedc_model_free(&b);
  fedc_model_free(&c);
}
END_TEST

START_TEST(params_round_trip)
{
  fedc_model *m;
  fedc_tensor_list list, back;

  fedc_tensor_list_init(&list);
  fedc_tensor_list_init(&back);
  ck_assert_int_eq(fedc_model_new("mlp:6:5:3", 1, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  for (size_t t = 0; t < list.count; t++) {
    float *v = list.items[t].data;

    for (uint64_t i = 0; i < fedc_tensor_numel(&list.items[t]); i++)
      v[i] = (float)(t * 100 + i) * 0.01f;
  }
  ck_assert_int_eq(fedc_model_set_params(m, &list), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &back), 0);
  ck_assert_int_eq(fedc_tensor_list_check_layout(&list, &back), 0);
  for (size_t t = 0; t < list.count; t++)
    ck_assert_mem_eq(list.items[t].data, back.items[t].data,
                     fedc_tensor_nbytes(&list.items[t]));
  fedc_tensor_list_close(&list);
  fedc_tensor_list_close(&back);
  fedc_model_free(&m);
}
END_TEST

START_TEST(params_set_accepts_any_order)
{
  fedc_model *m;
  fedc_tensor_list list, reversed, back;

  fedc_tensor_list_init(&list);
  fedc_tensor_list_init(&reversed);
  fedc_tensor_list_init(&back);
  ck_assert_int_eq(fedc_model_new("mlp:6:5:3", 1, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  for (size_t t = list.count; t-- > 0;) {
    fedc_tensor *src = &list.items[t];

    ck_assert_int_eq(fedc_tensor_list_add(&reversed, src->name, src->dtype,
                                          src->ndim, src->shape, src->data), 0);
  }
  ck_assert_int_eq(fedc_model_set_params(m, &reversed), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &back), 0);
  ck_assert_mem_eq(list.items[0].data, back.items[0].data,
                   fedc_tensor_nbytes(&list.items[0]));
  fedc_tensor_list_close(&list);
  fedc_tensor_list_close(&reversed);
  fedc_tensor_list_close(&back);
  fedc_model_free(&m);
}
END_TEST

/* Copies src into dst with tensor `which` altered in the way `how` selects. */
static void mutate_list(const fedc_tensor_list *src, fedc_tensor_list *dst,
                        size_t which, int how)
{
  fedc_tensor_list_init(dst);
  for (size_t t = 0; t < src->count; t++) {
    const fedc_tensor *s = &src->items[t];
    uint64_t shape[FEDC_TENSOR_MAX_DIMS];
    const char *name = s->name;
    int ndim = s->ndim;

    memcpy(shape, s->shape, sizeof(shape));
    if (t == which && how == 0)
      shape[0] += 1;                 /* wrong shape */
    if (t == which && how == 1)
      name = "fc9.weight";           /* unknown name */
    if (t == which && how == 2)
      continue;                      /* missing tensor */
    if (t == which && how == 3) {
      shape[ndim] = 1;               /* extra dimension */
      ndim++;
    }
    ck_assert_int_eq(fedc_tensor_list_add(dst, name, s->dtype, ndim, shape,
                                          NULL), 0);
    if (t == which && how == 4)
      ((float *)dst->items[dst->count - 1].data)[0] = NAN;
  }
  if (how == 5)                      /* extra tensor */
    ck_assert_int_eq(fedc_tensor_list_add(dst, "extra", FEDC_DTYPE_F32, 1,
                                          (uint64_t[]){ 3 }, NULL), 0);
}

START_TEST(params_set_rejects_bad_list_unchanged)
{
  fedc_model *m;
  fedc_tensor_list list, bad, after;
  int expect = _i == 4 ? FEDC_ENONFINITE : FEDC_ESHAPE;

  fedc_tensor_list_init(&list);
  fedc_tensor_list_init(&after);
  fedc_log_set_level(FEDC_LOG_OFF);
  ck_assert_int_eq(fedc_model_new("mlp:6:5:3", 1, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  mutate_list(&list, &bad, 2, _i);
  ck_assert_int_eq(fedc_model_set_params(m, &bad), expect);
  ck_assert_int_eq(fedc_model_get_params(m, &after), 0);
  for (size_t t = 0; t < list.count; t++)
    ck_assert_mem_eq(list.items[t].data, after.items[t].data,
                     fedc_tensor_nbytes(&list.items[t]));
  fedc_log_set_level(FEDC_LOG_INFO);
  fedc_tensor_list_close(&list);
  fedc_tensor_list_close(&bad);
  fedc_tensor_list_close(&after);
  fedc_model_free(&m);
}
END_TEST

/* --- Training -------------------------------------------------------------- */

static void train_params(const char *spec, const fedc_train_config *config,
                         const fedc_dataset *ds, fedc_tensor_list *out,
                         fedc_train_stats *stats)
{
  fedc_model *m;
  fedc_dataset_view view = { ds, NULL, ds->n };

  ck_assert_int_eq(fedc_model_new(spec, 3, &m), 0);
  ck_assert_int_eq(fedc_model_train(m, &view, config, stats), 0);
  fedc_tensor_list_init(out);
  ck_assert_int_eq(fedc_model_get_params(m, out), 0);
  fedc_model_free(&m);
}

static double list_distance(const fedc_tensor_list *a, const fedc_tensor_list *b)
{
  double sum = 0.0;

  for (size_t t = 0; t < a->count; t++) {
    const float *x = a->items[t].data, *y = b->items[t].data;

    for (uint64_t i = 0; i < fedc_tensor_numel(&a->items[t]); i++)
      sum += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
  }
  return sqrt(sum);
}

START_TEST(training_is_deterministic_under_seed)
{
  fedc_dataset ds;
  fedc_train_config config = sgd_config();
  fedc_tensor_list a, b, c;
  fedc_train_stats sa, sb, sc;

  make_dataset(&ds, 300, 20, 4, 1);
  train_params("mlp:20:16:4", &config, &ds, &a, &sa);
  train_params("mlp:20:16:4", &config, &ds, &b, &sb);
  config.seed = 12;
  train_params("mlp:20:16:4", &config, &ds, &c, &sc);
  for (size_t t = 0; t < a.count; t++)
    ck_assert_mem_eq(a.items[t].data, b.items[t].data,
                     fedc_tensor_nbytes(&a.items[t]));
  ck_assert_double_eq(sa.loss, sb.loss);
  ck_assert_double_gt(list_distance(&a, &c), 0.0);
  ck_assert_uint_eq(sa.examples, 600);
  ck_assert_uint_eq(sa.steps, 2 * 19);
  fedc_tensor_list_close(&a);
  fedc_tensor_list_close(&b);
  fedc_tensor_list_close(&c);
  free_dataset(&ds);
}
END_TEST

START_TEST(training_learns_synthetic_task)
{
  fedc_dataset ds;
  fedc_dataset_view view;
  fedc_train_config config = sgd_config();
  fedc_train_stats stats;
  fedc_eval_stats before, after;
  fedc_model *m;

  make_dataset(&ds, 2000, 20, 4, 2);
  view = all_rows(&ds);
  ck_assert_int_eq(fedc_model_new("mlp:20:32:4", 3, &m), 0);
  ck_assert_int_eq(fedc_model_evaluate(m, &view, &before), 0);
  config.local_epochs = 5;
  config.learning_rate = 0.05f;
  ck_assert_int_eq(fedc_model_train(m, &view, &config, &stats), 0);
  ck_assert_int_eq(fedc_model_evaluate(m, &view, &after), 0);
  ck_assert_uint_eq(after.examples, 2000);
  ck_assert_double_lt(before.accuracy, 0.5);
  ck_assert_double_gt(after.accuracy, 0.9);
  ck_assert_double_lt(after.loss, before.loss);
  ck_assert_double_gt(stats.accuracy, 0.85);
  fedc_model_free(&m);
  free_dataset(&ds);
}
END_TEST

START_TEST(evaluation_counts_per_class)
{
  fedc_dataset ds;
  fedc_dataset_view view;
  fedc_eval_stats stats;
  fedc_model *m;
  uint64_t correct[4], total[4], sum_correct = 0, sum_total = 0;

  make_dataset(&ds, 500, 20, 4, 6);
  view = all_rows(&ds);
  ck_assert_int_eq(fedc_model_new("mlp:20:16:4", 3, &m), 0);
  ck_assert_int_eq(fedc_model_evaluate_classes(m, &view, &stats, 4, correct,
                                               total), 0);
  for (int c = 0; c < 4; c++) {
    uint64_t expect = 0;

    for (uint64_t i = 0; i < ds.n; i++)
      expect += ds.y[i] == c;
    ck_assert_uint_eq(total[c], expect);
    ck_assert_uint_le(correct[c], total[c]);
    sum_correct += correct[c];
    sum_total += total[c];
  }
  ck_assert_uint_eq(sum_total, 500);
  ck_assert_double_eq_tol(stats.accuracy, (double)sum_correct / 500.0, 1e-12);
  ck_assert_uint_eq(stats.examples, 500);
  fedc_model_free(&m);
  free_dataset(&ds);
}
END_TEST

START_TEST(training_openblas_matches_reference)
{
  fedc_dataset ds;
  fedc_train_config config = sgd_config();
  fedc_tensor_list fast, ref;
  fedc_train_stats s1, s2;

  make_dataset(&ds, 64, 20, 4, 3);
  config.local_epochs = 1;
  train_params("mlp:20:16:8:4", &config, &ds, &fast, &s1);
  fedc_blas_set_backend(FEDC_BLAS_REFERENCE);
  train_params("mlp:20:16:8:4", &config, &ds, &ref, &s2);
  fedc_blas_set_backend(FEDC_BLAS_OPENBLAS);
  for (size_t t = 0; t < fast.count; t++) {
    const float *a = fast.items[t].data, *b = ref.items[t].data;
    double diff = 0.0, norm = 0.0;

    for (uint64_t i = 0; i < fedc_tensor_numel(&fast.items[t]); i++) {
      diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
      norm += (double)b[i] * b[i];
    }
    ck_assert_double_lt(sqrt(diff / norm), 1e-5);
  }
  ck_assert_double_eq_tol(s1.loss, s2.loss, 1e-5);
  fedc_tensor_list_close(&fast);
  fedc_tensor_list_close(&ref);
  free_dataset(&ds);
}
END_TEST

START_TEST(training_stops_at_max_steps)
{
  fedc_dataset ds;
  fedc_train_config config = sgd_config();
  fedc_tensor_list out;
  fedc_train_stats stats;

  make_dataset(&ds, 300, 20, 4, 1);
  config.max_steps = 5;
  train_params("logreg:20:4", &config, &ds, &out, &stats);
  ck_assert_uint_eq(stats.steps, 5);
  ck_assert_uint_eq(stats.examples, 5 * 16);
  fedc_tensor_list_close(&out);
  free_dataset(&ds);
}
END_TEST

START_TEST(proximal_term_keeps_weights_near_start)
{
  fedc_dataset ds;
  fedc_train_config config = sgd_config();
  fedc_tensor_list start, free_run, prox_run;
  fedc_train_stats stats;
  fedc_model *m;

  make_dataset(&ds, 300, 20, 4, 1);
  ck_assert_int_eq(fedc_model_new("mlp:20:16:4", 3, &m), 0);
  fedc_tensor_list_init(&start);
  ck_assert_int_eq(fedc_model_get_params(m, &start), 0);
  fedc_model_free(&m);
  config.momentum = 0.0f;
  train_params("mlp:20:16:4", &config, &ds, &free_run, &stats);
  config.proximal_mu = 5.0f;
  train_params("mlp:20:16:4", &config, &ds, &prox_run, &stats);
  ck_assert_double_lt(list_distance(&prox_run, &start),
                      0.5 * list_distance(&free_run, &start));
  fedc_tensor_list_close(&start);
  fedc_tensor_list_close(&free_run);
  fedc_tensor_list_close(&prox_run);
  free_dataset(&ds);
}
END_TEST

START_TEST(training_rejects_bad_input)
{
  fedc_dataset ds;
  fedc_dataset_view view;
  fedc_train_config config = sgd_config();
  fedc_model *m;
  uint32_t rows[2] = { 0, 300 };

  fedc_log_set_level(FEDC_LOG_OFF);
  make_dataset(&ds, 300, 20, 4, 1);
  view = all_rows(&ds);
  ck_assert_int_eq(fedc_model_new("logreg:21:4", 3, &m), 0);
  ck_assert_int_eq(fedc_model_train(m, &view, &config, NULL), FEDC_ESHAPE);
  fedc_model_free(&m);
  ck_assert_int_eq(fedc_model_new("logreg:20:3", 3, &m), 0);
  ck_assert_int_eq(fedc_model_train(m, &view, &config, NULL), FEDC_EINVAL);
  fedc_model_free(&m);
  ck_assert_int_eq(fedc_model_new("logreg:20:4", 3, &m), 0);
  view.rows = rows;
  view.n = 2;
  ck_assert_int_eq(fedc_model_train(m, &view, &config, NULL), FEDC_EINVAL);
  view = all_rows(&ds);
  config.batch_size = 0;
  ck_assert_int_eq(fedc_model_train(m, &view, &config, NULL), FEDC_EINVAL);
  fedc_model_free(&m);
  free_dataset(&ds);
  fedc_log_set_level(FEDC_LOG_INFO);
}
END_TEST

START_TEST(divergence_restores_parameters)
{
  fedc_dataset ds;
  fedc_dataset_view view;
  fedc_train_config config = sgd_config();
  fedc_tensor_list before, after;
  fedc_model *m;

  fedc_log_set_level(FEDC_LOG_OFF);
  make_dataset(&ds, 300, 20, 4, 1);
  for (uint64_t i = 0; i < ds.n * ds.dim; i++)
    ds.x[i] *= 1e18f;
  view = all_rows(&ds);
  config.learning_rate = 1e10f;
  ck_assert_int_eq(fedc_model_new("mlp:20:16:4", 3, &m), 0);
  fedc_tensor_list_init(&before);
  fedc_tensor_list_init(&after);
  fedc_model_get_params(m, &before);
  ck_assert_int_eq(fedc_model_train(m, &view, &config, NULL), FEDC_ENONFINITE);
  fedc_model_get_params(m, &after);
  for (size_t t = 0; t < before.count; t++)
    ck_assert_mem_eq(before.items[t].data, after.items[t].data,
                     fedc_tensor_nbytes(&before.items[t]));
  fedc_tensor_list_close(&before);
  fedc_tensor_list_close(&after);
  fedc_model_free(&m);
  free_dataset(&ds);
  fedc_log_set_level(FEDC_LOG_INFO);
}
END_TEST

static Suite *model_suite(void)
{
  Suite *s = suite_create("nn_model");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, sgemm_openblas_matches_reference, 0, 4);
  tcase_add_test(tc, sgemm_beta_zero_ignores_nan_output);
  tcase_add_loop_test(tc, dense_backward_matches_finite_differences, 0, 2);
  tcase_add_test(tc, dense_on_last_dimension_of_sequence);
  tcase_add_loop_test(tc, activation_backward_matches_finite_differences, 0, 5);
  tcase_add_test(tc, activation_values_match_definitions);
  tcase_add_loop_test(tc, loss_gradient_matches_finite_differences, 0, 5);
  tcase_add_test(tc, loss_rejects_out_of_range_label);
  tcase_add_test(tc, cross_entropy_value_is_exact);
  tcase_add_test(tc, logreg_names_and_shapes_follow_pytorch);
  tcase_add_test(tc, mlp_names_shapes_and_init_bounds);
  tcase_add_test(tc, spec_rejects_invalid_text);
  tcase_add_test(tc, spec_layer_list_with_names);
  tcase_add_test(tc, same_seed_same_init_other_seed_differs);
  tcase_add_test(tc, params_round_trip);
  tcase_add_test(tc, params_set_accepts_any_order);
  tcase_add_loop_test(tc, params_set_rejects_bad_list_unchanged, 0, 6);
  tcase_add_test(tc, training_is_deterministic_under_seed);
  tcase_add_test(tc, training_learns_synthetic_task);
  tcase_add_test(tc, evaluation_counts_per_class);
  tcase_add_test(tc, training_openblas_matches_reference);
  tcase_add_test(tc, training_stops_at_max_steps);
  tcase_add_test(tc, proximal_term_keeps_weights_near_start);
  tcase_add_test(tc, training_rejects_bad_input);
  tcase_add_test(tc, divergence_restores_parameters);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(model_suite());
  int failed;

  fedc_nn_set_threads(1);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
