/* Every layer's backward pass against central finite differences, layer
 * shapes from specs, and the behaviour of layers that have modes (batch
 * norm, dropout) or reject input (embedding ids). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/embedding.h"
#include "nn/model.h"
#include "nn/net.h"
#include "nn/spec.h"
#include "nn_testutil.h"
#include "util/error.h"
#include "util/log.h"

typedef struct grad_case {
  const char *spec;
  uint32_t batch;
  uint32_t vocab;            /* > 0: the input is token ids below vocab */
  double tolerance;
  uint32_t first_id;         /* lowest id drawn */
} grad_case;

static const grad_case grad_cases[] = {
  { "input 3x7x6; conv 4 3 stride=2 pad=1", 2, 0, 3e-3, 0 },
  { "input 3x5x5; conv 2 1", 2, 0, 3e-3, 0 },
  { "input 2x6x6; conv 3 3 bias=0", 2, 0, 3e-3, 0 },
  { "input 2x9x8; conv 3 5 stride=3 pad=2", 2, 0, 3e-3, 0 },
  { "input 2x6x6; maxpool 2", 2, 0, 3e-3, 0 },
  { "input 2x7x7; maxpool 3 stride=2 pad=1", 2, 0, 3e-3, 0 },
  { "input 2x6x6; avgpool 2", 2, 0, 3e-3, 0 },
  { "input 2x7x5; avgpool 3x2 stride=2 pad=1", 2, 0, 3e-3, 0 },
  { "input 3x4x4; batchnorm", 4, 0, 5e-3, 0 },
  { "input 6; batchnorm momentum=0.3", 5, 0, 5e-3, 0 },
  { "input 4x5; batchnorm", 3, 0, 5e-3, 0 },
  { "input 8; layernorm", 3, 0, 5e-3, 0 },
  { "input 3x4x5; layernorm dims=2", 2, 0, 5e-3, 0 },
  { "input 3x4x5; layernorm dims=3 eps=1e-3", 2, 0, 5e-3, 0 },
  { "input 20; dropout 0.3", 3, 0, 3e-3, 0 },
  { "input 2x3x4; flatten; dense 5", 2, 0, 3e-3, 0 },
  { "input 4x5x5; residual { conv 4 3 pad=1; batchnorm; relu; "
    "conv 4 3 pad=1 }", 2, 0, 5e-3, 0 },
  { "input 4x6x6; residual { conv 8 3 stride=2 pad=1; tanh } "
    "shortcut { conv 8 1 stride=2 }", 2, 0, 3e-3, 0 },
  { "input 6; embedding 10 4", 3, 10, 3e-3, 0 },
  /* The padding vector takes part in the output but gets no gradient, as
   * in torch, so this input contains no padding id. */
  { "input 6; embedding 10 4 padding=0", 3, 10, 3e-3, 1 },
  { "input 7; embeddingbag 12 5", 3, 12, 3e-3, 0 },
  { "input 7; embeddingbag 12 5 padding=0; dense 3", 3, 12, 3e-3, 0 },
  { "input 4x6; dense 3; gelu; layernorm", 2, 0, 5e-3, 0 },
};

START_TEST(layer_gradient_matches_finite_differences)
{
  const grad_case *c = &grad_cases[_i];
  fedc_net *net;
  enum fedc_loss loss;
  fedc_rng rng;
  float *x;
  size_t n;
  double err;

  ck_assert_msg(fedc_spec_build(c->spec, &net, &loss) == 0, "spec %s",
                c->spec);
  n = fedc_layer_shape_size(&net->in) * c->batch;
  x = malloc(n * sizeof(float));
  fedc_rng_seed(&rng, 21);
  for (size_t i = 0; i < n; i++)
    x[i] = c->vocab > 0 ? (float)(c->first_id +
                                  fedc_rng_below(&rng, c->vocab - c->first_id))
                        : (float)(2.0 * fedc_rng_uniform(&rng) - 1.0);
  nn_test_bind(net, 17);
  err = nn_test_gradcheck(net, x, c->batch, c->vocab > 0 ? 1e-2f : 1e-3f, 48,
                          c->vocab > 0);
  ck_assert_msg(err < c->tolerance, "%s: error %g", c->spec, err);
  nn_test_unbind(net);
  fedc_net_free(&net);
  free(x);
}
END_TEST

/* Output shape per example, as "CxHxW", for a spec. */
static void check_output_shape(const char *spec, const char *expect)
{
  fedc_net *net;
  enum fedc_loss loss;
  char dims[64];

  ck_assert_msg(fedc_spec_build(spec, &net, &loss) == 0, "spec %s", spec);
  fedc_layer_shape_format(&net->out, dims, sizeof(dims));
  ck_assert_str_eq(dims, expect);
  fedc_net_free(&net);
}

START_TEST(layer_output_shapes)
{
  check_output_shape("input 1x28x28; conv 16 5 pad=2", "16x28x28");
  check_output_shape("input 1x28x28; conv 8 3 stride=2", "8x13x13");
  check_output_shape("input 3x32x32; conv 8 3 stride=2 pad=1", "8x16x16");
  check_output_shape("input 4x7x7; maxpool 2", "4x3x3");
  check_output_shape("input 4x7x7; maxpool 3 stride=2 pad=1", "4x4x4");
  check_output_shape("input 4x6x9; avgpool 6x9", "4x1x1");
  check_output_shape("input 4x6x9; flatten", "216");
  check_output_shape("input 12; embedding 50 8", "12x8");
  check_output_shape("input 12; embeddingbag 50 8", "8");
  check_output_shape("input 12; embedding 50 8; dense 3", "12x3");
  check_output_shape("cnn", "10");
  check_output_shape("cnn:3:32:32:100", "100");
  check_output_shape("rescnn:3:32:32:10", "10");
  check_output_shape("textbag:1000:20:16:5", "5");
}
END_TEST

START_TEST(spec_rejects_bad_layers)
{
  const char *bad[] = {
    "input 784; conv 4 3",                 /* not an image */
    "input 1x4x4; conv 4 5",               /* kernel larger than the input */
    "input 1x8x8; conv 4 3 pad=3",         /* padding not below the kernel */
    "input 1x8x8; conv 4 3 stride=0",
    "input 1x8x8; conv 4",
    "input 1x8x8; maxpool 2 pad=2",        /* padding above half the kernel */
    "input 1x8x8; maxpool 9",
    "input 1x8x8; maxpool 2x2x2",
    "input 1x8x8; avgpool",
    "input 8; dropout 1",
    "input 8; dropout -0.1",
    "input 8; dropout",
    "input 8; batchnorm eps=0",
    "input 8; batchnorm momentum=2",
    "input 8; layernorm dims=2",
    "input 8x2; embedding 10 4",           /* ids must be one row */
    "input 8; embedding 10 4 padding=10",
    "input 8; embeddingbag 0 4",
    "input 8; residual { dense 4 }",       /* body changes the shape */
    "input 8; residual { }",
    "input 8; residual { dense 8",
    "input 8; residual dense 8",
    "input 8; residual { dense 8 } shortcut { dense 4 }",
    "input 8; residual { loss mse; dense 8 }",
    "input 8; residual { residual { residual { residual { residual "
    "{ dense 8 } } } } }",
    "input 8; dense 4 name=a.b",
    "input 8; dense 8 name=fc; relu; dense 8 name=fc",
    "rescnn:1:2:2:10",
    "textbag:10:5:4",
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

START_TEST(builtin_parameter_names)
{
  fedc_model *m;
  fedc_tensor_list list;

  fedc_tensor_list_init(&list);
  ck_assert_int_eq(fedc_model_new("cnn", 1, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_uint_eq(list.count, 8);
  ck_assert_str_eq(list.items[0].name, "conv1.weight");
  ck_assert_uint_eq(list.items[0].shape[0], 16);
  ck_assert_uint_eq(list.items[0].shape[1], 1);
  ck_assert_uint_eq(list.items[0].shape[2], 5);
  ck_assert_str_eq(list.items[2].name, "conv2.weight");
  ck_assert_str_eq(list.items[4].name, "fc1.weight");
  ck_assert_uint_eq(list.items[4].shape[1], 32 * 7 * 7);
  ck_assert_str_eq(list.items[7].name, "fc2.bias");
  fedc_model_free(&m);

  ck_assert_int_eq(fedc_model_new("rescnn", 1, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_ptr_nonnull(fedc_tensor_list_find(&list, "block2.shortcut.0.weight"));
  ck_assert_ptr_nonnull(fedc_tensor_list_find(&list, "block1.body.4.bias"));
  ck_assert_ptr_null(fedc_tensor_list_find(&list, "bn1.running_mean"));
  fedc_model_set_buffers_shared(m, true);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_ptr_nonnull(fedc_tensor_list_find(&list, "bn1.running_mean"));
  ck_assert_ptr_nonnull(fedc_tensor_list_find(&list, "block2.shortcut.1.running_var"));
  ck_assert_int_eq(fedc_model_set_params(m, &list), 0);
  fedc_model_free(&m);

  ck_assert_int_eq(fedc_model_new("textbag:100:8:4:3", 1, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &list), 0);
  ck_assert_str_eq(list.items[0].name, "embedding.weight");
  ck_assert_uint_eq(list.items[0].shape[0], 100);
  /* The padding row starts at zero. */
  for (int j = 0; j < 4; j++)
    ck_assert_float_eq(((float *)list.items[0].data)[j], 0.0f);
  fedc_tensor_list_close(&list);
  fedc_model_free(&m);
}
END_TEST

START_TEST(batchnorm_eval_uses_running_stats)
{
  fedc_net *net;
  enum fedc_loss loss;
  fedc_pass train = { .train = true }, eval = { .train = false };
  float x[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };   /* 4 examples, 2 channels */
  const float *y;
  fedc_layer *bn;

  ck_assert_int_eq(fedc_spec_build("input 2; batchnorm momentum=0.5", &net,
                                   &loss), 0);
  nn_test_bind(net, 1);
  bn = net->layers[0];
  ck_assert_int_eq(fedc_net_forward(net, x, 4, &train, &y), 0);
  /* Channel 0 is 1, 3, 5, 7: mean 4, biased variance 5. */
  ck_assert_float_eq_tol(y[0], (float)(-3.0 / sqrt(5.0 + 1e-5)), 1e-5f);
  ck_assert_float_eq_tol(bn->buffers[0].value[0], 2.0f, 1e-6f);
  /* The running variance takes the unbiased 20/3. */
  ck_assert_float_eq_tol(bn->buffers[1].value[0],
                         0.5f + 0.5f * 20.0f / 3.0f, 1e-5f);
  ck_assert_int_eq(fedc_net_forward(net, x, 4, &eval, &y), 0);
  ck_assert_float_eq_tol(y[0], (float)((1.0 - 2.0) /
                                       sqrt(0.5 + 10.0 / 3.0 + 1e-5)), 1e-5f);
  nn_test_unbind(net);
  fedc_net_free(&net);
}
END_TEST

START_TEST(dropout_drops_and_rescales)
{
  fedc_net *net;
  enum fedc_loss loss;
  fedc_rng rng;
  fedc_pass train = { .train = true, .rng = &rng }, eval = { .train = false };
  float *x = malloc(10000 * sizeof(float));
  const float *y;
  int zeros = 0;

  for (int i = 0; i < 10000; i++)
    x[i] = 1.0f;
  fedc_rng_seed(&rng, 4);
  ck_assert_int_eq(fedc_spec_build("input 1000; dropout 0.25", &net, &loss),
                   0);
  ck_assert_int_eq(fedc_net_forward(net, x, 10, &train, &y), 0);
  for (int i = 0; i < 10000; i++) {
    if (y[i] == 0.0f)
      zeros++;
    else
      ck_assert_float_eq_tol(y[i], 1.0f / 0.75f, 1e-6f);
  }
  /* 2500 expected; 5 sigma is about 217. */
  ck_assert_int_lt(abs(zeros - 2500), 217);
  ck_assert_int_eq(fedc_net_forward(net, x, 10, &eval, &y), 0);
  for (int i = 0; i < 10000; i++)
    ck_assert_float_eq(y[i], 1.0f);
  fedc_net_free(&net);
  free(x);
}
END_TEST

START_TEST(embedding_rejects_invalid_ids)
{
  const float bad_ids[] = { 10.0f, -1.0f, 2.5f, NAN, INFINITY };
  fedc_net *net;
  enum fedc_loss loss;
  fedc_pass pass = { .train = false };
  const float *y;

  fedc_log_set_level(FEDC_LOG_OFF);
  ck_assert_int_eq(fedc_spec_build("input 3; embeddingbag 10 4", &net, &loss),
                   0);
  nn_test_bind(net, 1);
  for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
    float x[3] = { 1.0f, bad_ids[i], 3.0f };

    ck_assert_int_eq(fedc_net_forward(net, x, 1, &pass, &y), FEDC_EINVAL);
  }
  nn_test_unbind(net);
  fedc_net_free(&net);
  fedc_log_set_level(FEDC_LOG_INFO);
}
END_TEST

START_TEST(embeddingbag_mean_skips_padding)
{
  fedc_net *net;
  enum fedc_loss loss;
  fedc_pass pass = { .train = false };
  float x[8] = { 1, 0, 2, 0, 0, 0, 0, 0 };   /* two bags of 4 */
  const float *y;
  const float *w;

  ck_assert_int_eq(fedc_spec_build("input 4; embeddingbag 5 3 padding=0",
                                   &net, &loss), 0);
  nn_test_bind(net, 2);
  w = net->layers[0]->params[0].value;
  ck_assert_int_eq(fedc_net_forward(net, x, 2, &pass, &y), 0);
  for (int j = 0; j < 3; j++) {
    ck_assert_float_eq_tol(y[j], (w[3 + j] + w[6 + j]) / 2.0f, 1e-6f);
    ck_assert_float_eq(y[3 + j], 0.0f);
  }
  nn_test_unbind(net);
  fedc_net_free(&net);
}
END_TEST

START_TEST(describe_lists_layers_and_memory)
{
  fedc_model *m;
  char *text;

  ck_assert_int_eq(fedc_model_new("rescnn", 1, &m), 0);
  ck_assert_int_eq(fedc_model_describe(m, 32, &text), 0);
  ck_assert_ptr_nonnull(strstr(text, "block2.shortcut.0"));
  ck_assert_ptr_nonnull(strstr(text, "32x14x14"));
  ck_assert_ptr_nonnull(strstr(text, "parameters: 19706"));
  ck_assert_ptr_nonnull(strstr(text, "training memory at batch 32"));
  free(text);
  ck_assert_int_eq(fedc_model_describe(m, 0, &text), FEDC_EINVAL);
  fedc_model_free(&m);
}
END_TEST

static Suite *layers_suite(void)
{
  Suite *s = suite_create("nn_layers");
  TCase *tc = tcase_create("layers");

  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, layer_gradient_matches_finite_differences, 0,
                      sizeof(grad_cases) / sizeof(grad_cases[0]));
  tcase_add_test(tc, layer_output_shapes);
  tcase_add_test(tc, spec_rejects_bad_layers);
  tcase_add_test(tc, builtin_parameter_names);
  tcase_add_test(tc, batchnorm_eval_uses_running_stats);
  tcase_add_test(tc, dropout_drops_and_rescales);
  tcase_add_test(tc, embedding_rejects_invalid_ids);
  tcase_add_test(tc, embeddingbag_mean_skips_padding);
  tcase_add_test(tc, describe_lists_layers_and_memory);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(layers_suite());
  int failed;

  fedc_nn_set_threads(1);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
