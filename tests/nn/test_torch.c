/* Every layer, loss and optimizer against PyTorch on the same weights and
 * inputs: the C side writes the inputs and its own results to safetensors
 * files, torch_check.py (run by /usr/bin/python3, which has torch) writes
 * PyTorch's, and each case then compares the two with the normalised
 * error |fedc - torch| / |torch| (L2 norms) below 1e-4.
 *
 * The PyTorch external trainer of examples/ is checked against fedc's own
 * training the same way.
 *
 * Exits with 77, which meson reports as SKIP, when torch cannot be
 * imported. Dropout is left out: its masks come from fedc's generator and
 * cannot match torch's. */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/external.h"
#include "nn/model.h"
#include "nn/net.h"
#include "nn/spec.h"
#include "nn_testutil.h"
#include "tensor/safetensors.h"
#include "util/error.h"

#define PYTHON "/usr/bin/python3"
#define TOLERANCE 1e-4
#define NORM_FLOOR 1e-9

typedef struct layer_case {
  const char *spec;
  uint32_t batch;
  bool train;
  uint32_t vocab;            /* > 0: the input is token ids below vocab */
} layer_case;

static const layer_case layer_cases[] = {
  { "input 7; dense 5", 3, true, 0 },
  { "input 4x6; dense 3 bias=0", 2, true, 0 },
  { "input 9; relu", 3, true, 0 },
  { "input 9; leaky_relu slope=0.2", 3, true, 0 },
  { "input 9; gelu", 3, true, 0 },
  { "input 9; sigmoid", 3, true, 0 },
  { "input 9; tanh", 3, true, 0 },
  { "input 3x7x6; conv 4 3 stride=2 pad=1", 2, true, 0 },
  { "input 3x5x5; conv 2 1", 2, true, 0 },
  { "input 2x9x8; conv 3 5 stride=3 pad=2 bias=0", 2, true, 0 },
  { "input 2x6x6; maxpool 2", 2, true, 0 },
  { "input 2x7x7; maxpool 3 stride=2 pad=1", 2, true, 0 },
  { "input 2x6x6; avgpool 2", 2, true, 0 },
  { "input 2x7x5; avgpool 3x2 stride=2 pad=1", 2, true, 0 },
  { "input 3x4x4; batchnorm", 4, true, 0 },
  { "input 3x4x4; batchnorm", 4, false, 0 },
  { "input 6; batchnorm momentum=0.3 eps=1e-3", 5, true, 0 },
  { "input 6; batchnorm", 5, false, 0 },
  { "input 4x5; batchnorm", 3, true, 0 },
  { "input 8; layernorm", 3, true, 0 },
  { "input 3x4x5; layernorm dims=2", 2, true, 0 },
  { "input 3x4x5; layernorm dims=3 eps=1e-3", 2, true, 0 },
  { "input 2x3x4; flatten; dense 5", 2, true, 0 },
  { "input 4x5x5; residual { conv 4 3 pad=1 bias=0; batchnorm; relu; "
    "conv 4 3 pad=1 }", 2, true, 0 },
  { "input 4x6x6; residual { conv 8 3 stride=2 pad=1; tanh } "
    "shortcut { conv 8 1 stride=2 }", 2, false, 0 },
  { "input 6; embedding 10 4", 3, true, 10 },
  { "input 6; embedding 10 4 padding=0", 3, true, 10 },
  { "input 7; embeddingbag 12 5", 3, true, 12 },
  { "input 7; embeddingbag 12 5 padding=0; dense 3", 4, true, 12 },
  { "cnn", 2, true, 0 },
  { "rescnn", 3, true, 0 },
  { "rescnn", 2, false, 0 },
  { "textbag:50:9:6:4", 3, true, 50 },
};

#define NUM_LAYER_CASES (sizeof(layer_cases) / sizeof(layer_cases[0]))

typedef struct train_case {
  const char *spec;
  uint32_t examples;
  uint32_t steps;
  uint32_t vocab;
  fedc_train_config config;
} train_case;

static const train_case train_cases[] = {
  { "mlp:6:8:3", 20, 5, 0, { .learning_rate = 0.1f, .momentum = 0.9f,
                             .weight_decay = 1e-3f } },
  { "mlp:6:8:3", 20, 6, 0, { .learning_rate = 0.1f, .momentum = 0.8f,
                             .nesterov = 1, .lr_schedule = FEDC_LR_STEP,
                             .lr_step_size = 2, .lr_gamma = 0.5f,
                             .clip_norm = 0.3f } },
  { "mlp:6:8:3", 20, 5, 0, { .learning_rate = 0.05f, .proximal_mu = 0.5f } },
  { "mlp:6:8:3", 20, 5, 0, { .optimizer = FEDC_OPT_ADAM,
                             .learning_rate = 0.01f, .weight_decay = 0.01f,
                             .lr_schedule = FEDC_LR_COSINE,
                             .lr_min = 0.001f } },
  { "mlp:6:8:3", 20, 5, 0, { .optimizer = FEDC_OPT_ADAMW,
                             .learning_rate = 0.01f, .weight_decay = 0.1f,
                             .beta1 = 0.8f, .beta2 = 0.99f, .eps = 1e-6f } },
  { "input 2x6x6; conv 4 3 pad=1 bias=0; batchnorm; relu; maxpool 2; flatten; "
    "dense 3", 12, 4, 0, { .learning_rate = 0.05f, .momentum = 0.9f } },
  { "input 5; dense 4; tanh; dense 1; loss bce", 16, 5, 0,
    { .learning_rate = 0.2f, .momentum = 0.5f } },
  { "input 5; dense 3; loss mse", 16, 5, 0, { .learning_rate = 0.05f } },
  { "input 5; dense 1; loss mse", 16, 5, 0, { .learning_rate = 0.02f } },
  { "textbag:30:6:4:3", 16, 5, 30, { .optimizer = FEDC_OPT_ADAM,
                                     .learning_rate = 0.05f } },
};

#define NUM_TRAIN_CASES (sizeof(train_cases) / sizeof(train_cases[0]))

static char work_dir[] = "/tmp/fedc-torch-XXXXXX";
static const char *trainer_script;   /* examples/pytorch/train.py */

static void fatal(const char *step, int rc)
{
  fprintf(stderr, "test_torch: %s failed: %s\n", step, fedc_strerror(rc));
  exit(EXIT_FAILURE);
}

static void case_path(char *buf, size_t len, size_t index, const char *side)
{
  snprintf(buf, len, "%s/case%02zu.%s.safetensors", work_dir, index, side);
}

/* Appends a float tensor of [batch, shape...]. */
static void add_batch_tensor(fedc_tensor_list *list, const char *name,
                             uint32_t batch, const fedc_shape *shape,
                             const float *data)
{
  uint64_t dims[FEDC_TENSOR_MAX_DIMS] = { batch };
  int rc;

  for (uint32_t i = 0; i < shape->ndim; i++)
    dims[i + 1] = shape->dim[i];
  rc = fedc_tensor_list_add(list, name, FEDC_DTYPE_F32, (int)shape->ndim + 1,
                            dims, data);
  if (rc != 0)
    fatal(name, rc);
}

static void add_param(fedc_tensor_list *list, const char *prefix,
                      const fedc_param *p, const float *data)
{
  char name[FEDC_TENSOR_NAME_MAX + 16];
  int rc;

  snprintf(name, sizeof(name), "%s%s", prefix, p->name);
  rc = fedc_tensor_list_add(list, name, FEDC_DTYPE_F32, p->ndim, p->shape,
                            data);
  if (rc != 0)
    fatal(name, rc);
}

typedef struct layer_lists {
  fedc_tensor_list *in;      /* parameter values */
  fedc_tensor_list *out;     /* parameter gradients and buffers */
  fedc_rng *rng;
} layer_lists;

/* Gives every parameter and buffer random values (so that norm layers do
 * not start at the identity) and records them. */
static void randomize_layer(fedc_layer *layer, void *opaque)
{
  layer_lists *lists = opaque;

  for (size_t i = 0; i < layer->num_params; i++) {
    fedc_param *p = &layer->params[i];

    for (size_t j = 0; j < p->numel; j++)
      p->value[j] += (float)(0.2 * fedc_rng_uniform(lists->rng) - 0.1);
    add_param(lists->in, "", p, p->value);
  }
  for (size_t i = 0; i < layer->num_buffers; i++) {
    fedc_param *p = &layer->buffers[i];
    bool var = strstr(p->name, "running_var") != NULL;

    for (size_t j = 0; j < p->numel; j++)
      p->value[j] = (float)(fedc_rng_uniform(lists->rng) - (var ? -0.5 : 0.5));
    add_param(lists->in, "", p, p->value);
  }
}

static void record_results(fedc_layer *layer, void *opaque)
{
  layer_lists *lists = opaque;

  for (size_t i = 0; i < layer->num_params; i++)
    add_param(lists->out, "grad.", &layer->params[i], layer->params[i].grad);
  for (size_t i = 0; i < layer->num_buffers; i++)
    add_param(lists->out, "buffer.", &layer->buffers[i],
              layer->buffers[i].value);
}

static void write_file(const char *path, const fedc_tensor_list *list,
                       const fedc_metadata *meta)
{
  int rc = fedc_safetensors_write(path, list, meta);

  if (rc != 0)
    fatal(path, rc);
}

static void fill_input(float *x, size_t n, uint32_t vocab, fedc_rng *rng)
{
  for (size_t i = 0; i < n; i++)
    x[i] = vocab > 0 ? (float)fedc_rng_below(rng, vocab)
                     : (float)(2.0 * fedc_rng_uniform(rng) - 1.0);
}

/* Runs one forward and backward pass of the case in fedc and writes the
 * torch input file and fedc's results. */
static void prepare_layer_case(size_t index, const layer_case *c)
{
  fedc_tensor_list in, out;
  fedc_metadata meta;
  fedc_net *net;
  enum fedc_loss loss;
  char *text, path[512];
  fedc_rng rng;
  fedc_pass pass = { .train = c->train, .rng = &rng };
  layer_lists lists = { &in, &out, &rng };
  const float *y;
  float *x, *dy, *dx;
  size_t in_n, out_n;
  int rc;

  if ((rc = fedc_spec_expand(c->spec, &text)) != 0 ||
      (rc = fedc_spec_build(text, &net, &loss)) != 0)
    fatal(c->spec, rc);
  fedc_tensor_list_init(&in);
  fedc_tensor_list_init(&out);
  fedc_metadata_init(&meta);
  nn_test_bind(net, 30 + index);
  fedc_rng_seed(&rng, 40 + index);
  fedc_net_visit(net, randomize_layer, &lists);

  in_n = fedc_layer_shape_size(&net->in) * c->batch;
  out_n = fedc_layer_shape_size(&net->out) * c->batch;
  x = malloc(in_n * sizeof(float));
  dx = malloc(in_n * sizeof(float));
  dy = malloc(out_n * sizeof(float));
  fill_input(x, in_n, c->vocab, &rng);
  fill_input(dy, out_n, 0, &rng);
  add_batch_tensor(&in, "input", c->batch, &net->in, x);
  add_batch_tensor(&in, "grad_output", c->batch, &net->out, dy);
  fedc_metadata_set(&meta, "kind", "layer");
  fedc_metadata_set(&meta, "spec", text);
  fedc_metadata_set(&meta, "train", c->train ? "1" : "0");
  fedc_metadata_set(&meta, "ids", c->vocab > 0 ? "1" : "0");
  case_path(path, sizeof(path), index, "in");
  write_file(path, &in, &meta);

  if ((rc = fedc_net_forward(net, x, c->batch, &pass, &y)) != 0)
    fatal("forward", rc);
  add_batch_tensor(&out, "output", c->batch, &net->out, y);
  if ((rc = fedc_net_backward(net, x, dy, dx, c->batch)) != 0)
    fatal("backward", rc);
  if (c->vocab == 0)
    add_batch_tensor(&out, "grad_input", c->batch, &net->in, dx);
  fedc_net_visit(net, record_results, &lists);
  case_path(path, sizeof(path), index, "fedc");
  write_file(path, &out, NULL);

  nn_test_unbind(net);
  fedc_net_free(&net);
  fedc_tensor_list_close(&in);
  fedc_tensor_list_close(&out);
  fedc_metadata_close(&meta);
  free(text);
  free(x);
  free(dx);
  free(dy);
}

static void set_number(fedc_metadata *meta, const char *key, double value)
{
  char buf[64];

  snprintf(buf, sizeof(buf), "%.9g", value);
  fedc_metadata_set(meta, key, buf);
}

static void describe_config(fedc_metadata *meta, const train_case *c)
{
  static const char *const optimizers[] = { "sgd", "adam", "adamw" };
  static const char *const schedules[] = { "constant", "step", "cosine" };
  const fedc_train_config *k = &c->config;

  fedc_metadata_set(meta, "kind", "train");
  fedc_metadata_set(meta, "optimizer", optimizers[k->optimizer]);
  fedc_metadata_set(meta, "schedule", schedules[k->lr_schedule]);
  fedc_metadata_set(meta, "nesterov", k->nesterov ? "1" : "0");
  set_number(meta, "steps", c->steps);
  set_number(meta, "lr", k->learning_rate);
  set_number(meta, "momentum", k->momentum);
  set_number(meta, "weight_decay", k->weight_decay);
  set_number(meta, "beta1", k->beta1 != 0 ? k->beta1 : 0.9);
  set_number(meta, "beta2", k->beta2 != 0 ? k->beta2 : 0.999);
  set_number(meta, "eps", k->eps != 0 ? k->eps : 1e-8);
  set_number(meta, "step_size", k->lr_step_size);
  set_number(meta, "gamma", k->lr_gamma);
  set_number(meta, "lr_min", k->lr_min);
  set_number(meta, "clip", k->clip_norm);
  set_number(meta, "mu", k->proximal_mu);
}

static void make_train_data(fedc_dataset *ds, const train_case *c,
                            const fedc_model *m, fedc_rng *rng)
{
  uint32_t classes = fedc_model_output_dim(m);

  memset(ds, 0, sizeof(*ds));
  ds->n = c->examples;
  ds->dim = fedc_model_input_dim(m);
  ds->x = malloc(ds->n * ds->dim * sizeof(float));
  ds->y = malloc(ds->n * sizeof(int32_t));
  fill_input(ds->x, ds->n * ds->dim, c->vocab, rng);
  for (uint32_t i = 0; i < c->examples; i++)
    ds->y[i] = (int32_t)fedc_rng_below(rng, classes > 1 ? classes : 2);
}

/* Trains the case's model full-batch in fedc and writes the torch input
 * file (initial parameters, data, configuration) and fedc's final
 * parameters. */
static void prepare_train_case(size_t index, const train_case *c)
{
  fedc_tensor_list in, out;
  fedc_metadata meta;
  fedc_model *m;
  fedc_dataset ds;
  fedc_dataset_view view;
  fedc_train_config config = c->config;
  char *text, path[512];
  fedc_rng rng;
  int rc;

  fedc_rng_seed(&rng, 60 + index);
  if ((rc = fedc_spec_expand(c->spec, &text)) != 0 ||
      (rc = fedc_model_new(text, 70 + index, &m)) != 0)
    fatal(c->spec, rc);
  fedc_model_set_buffers_shared(m, true);
  make_train_data(&ds, c, m, &rng);
  fedc_tensor_list_init(&in);
  fedc_tensor_list_init(&out);
  fedc_metadata_init(&meta);
  if ((rc = fedc_model_get_params(m, &in)) != 0)
    fatal("get_params", rc);
  rc = fedc_tensor_list_add(&in, "x", FEDC_DTYPE_F32, 2,
                            (uint64_t[]){ ds.n, ds.dim }, ds.x);
  if (rc == 0)
    rc = fedc_tensor_list_add(&in, "y", FEDC_DTYPE_I32, 1,
                              (uint64_t[]){ ds.n }, ds.y);
  if (rc != 0)
    fatal("data tensors", rc);
  describe_config(&meta, c);
  fedc_metadata_set(&meta, "spec", text);
  case_path(path, sizeof(path), index + NUM_LAYER_CASES, "in");
  write_file(path, &in, &meta);

  /* One batch of every example per epoch makes the order irrelevant. */
  config.batch_size = c->examples;
  config.local_epochs = c->steps;
  view = (fedc_dataset_view){ &ds, NULL, ds.n };
  if ((rc = fedc_model_train(m, &view, &config, NULL)) != 0)
    fatal("train", rc);
  if ((rc = fedc_model_get_params(m, &out)) != 0)
    fatal("get_params", rc);
  case_path(path, sizeof(path), index + NUM_LAYER_CASES, "fedc");
  write_file(path, &out, NULL);

  fedc_model_free(&m);
  fedc_tensor_list_close(&in);
  fedc_tensor_list_close(&out);
  fedc_metadata_close(&meta);
  free(ds.x);
  free(ds.y);
  free(text);
}

/* --- Comparison ------------------------------------------------------------ */

static double norm_of(const float *a, const float *b, uint64_t n)
{
  double sum = 0.0;

  for (uint64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (b != NULL ? b[i] : 0.0f);

    sum += d * d;
  }
  return sqrt(sum);
}

/* Normalised error of fedc's tensor against torch's; for parameters after
 * training, of the updates (final minus initial values). */
static double tensor_error(const fedc_tensor *fedc, const fedc_tensor *torch,
                           const fedc_tensor *initial)
{
  uint64_t n = fedc_tensor_numel(torch);
  const float *a = fedc->data, *b = torch->data;
  double diff, scale;

  diff = norm_of(a, b, n);
  if (initial == NULL) {
    scale = norm_of(b, NULL, n);
  } else {
    const float *s = initial->data;
    float *update = malloc(n * sizeof(float));

    for (uint64_t i = 0; i < n; i++)
      update[i] = b[i] - s[i];
    scale = norm_of(update, NULL, n);
    free(update);
  }
  /* The floor only guards against dividing by zero: the cases avoid
   * tensors whose exact value is zero, such as the gradient of a conv bias
   * in front of batch norm, because both sides then hold rounding noise. */
  return diff / fmax(scale, NORM_FLOOR);
}

static void compare_case(size_t index, bool trained)
{
  fedc_tensor_list fedc, torch, in;
  char path[512];

  fedc_tensor_list_init(&fedc);
  fedc_tensor_list_init(&torch);
  fedc_tensor_list_init(&in);
  case_path(path, sizeof(path), index, "fedc");
  ck_assert_int_eq(fedc_safetensors_read(path, &fedc, NULL), 0);
  case_path(path, sizeof(path), index, "torch");
  ck_assert_msg(fedc_safetensors_read(path, &torch, NULL) == 0,
                "no PyTorch result %s", path);
  case_path(path, sizeof(path), index, "in");
  ck_assert_int_eq(fedc_safetensors_read(path, &in, NULL), 0);
  ck_assert_uint_eq(fedc.count, torch.count);
  for (size_t t = 0; t < torch.count; t++) {
    const fedc_tensor *b = &torch.items[t];
    const fedc_tensor *a = fedc_tensor_list_find(&fedc, b->name);
    const fedc_tensor *start = trained ? fedc_tensor_list_find(&in, b->name)
                                       : NULL;
    double err;

    ck_assert_msg(a != NULL, "fedc has no %s", b->name);
    ck_assert_uint_eq(fedc_tensor_numel(a), fedc_tensor_numel(b));
    err = tensor_error(a, b, start);
    ck_assert_msg(err < TOLERANCE, "case %zu %s: error %g (norm %g)", index,
                  b->name, err, norm_of(b->data, NULL, fedc_tensor_numel(b)));
  }
  fedc_tensor_list_close(&fedc);
  fedc_tensor_list_close(&torch);
  fedc_tensor_list_close(&in);
}

START_TEST(layer_matches_pytorch)
{
  compare_case((size_t)_i, false);
}
END_TEST

START_TEST(training_matches_pytorch)
{
  compare_case((size_t)_i + NUM_LAYER_CASES, true);
}
END_TEST

/* Trains the same model on the same data full-batch (so that shuffling
 * does not matter) with fedc and with examples/pytorch/train.py as an
 * external trainer, and compares the updates. */
START_TEST(external_pytorch_trainer_matches_fedc)
{
  fedc_train_config config = { .local_epochs = 4, .batch_size = 40,
                               .learning_rate = 0.1f, .momentum = 0.9f,
                               .weight_decay = 1e-3f, .seed = 3 };
  fedc_tensor_list start, ours, theirs;
  fedc_external_config ext = { NULL, NULL, 120000 };
  fedc_external_task task = { "mlp:6:8:3", NULL, 1, &config };
  fedc_train_stats stats;
  fedc_dataset ds;
  fedc_dataset_view view;
  fedc_model *m;
  fedc_rng rng;
  char dir[600], data[600], command[1200];

  snprintf(dir, sizeof(dir), "%s/external", work_dir);
  snprintf(data, sizeof(data), "%s/data.safetensors", work_dir);
  snprintf(command, sizeof(command), PYTHON " '%s'", trainer_script);
  ck_assert_int_eq(mkdir(dir, 0700), 0);
  ext.command = command;
  ext.work_dir = dir;
  task.data_path = data;

  ck_assert_int_eq(fedc_dataset_alloc(&ds, 40, 6, 3), 0);
  fedc_rng_seed(&rng, 5);
  fill_input(ds.x, 240, 0, &rng);
  for (int i = 0; i < 40; i++)
    ds.y[i] = (int32_t)fedc_rng_below(&rng, 3);
  view = fedc_dataset_all(&ds);
  ck_assert_int_eq(fedc_dataset_save(data, &view), 0);

  fedc_tensor_list_init(&start);
  fedc_tensor_list_init(&ours);
  fedc_tensor_list_init(&theirs);
  ck_assert_int_eq(fedc_model_new(task.spec, 8, &m), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &start), 0);
  ck_assert_int_eq(fedc_external_train(&ext, &task, &start, &theirs, &stats),
                   0);
  ck_assert_uint_eq(stats.steps, 4);
  ck_assert_uint_eq(stats.examples, 160);
  ck_assert_int_eq(fedc_model_train(m, &view, &config, NULL), 0);
  ck_assert_int_eq(fedc_model_get_params(m, &ours), 0);
  for (size_t t = 0; t < start.count; t++) {
    double err = tensor_error(&ours.items[t], &theirs.items[t],
                              &start.items[t]);

    ck_assert_msg(err < TOLERANCE, "%s: error %g", start.items[t].name, err);
  }
  fedc_model_free(&m);
  fedc_dataset_close(&ds);
  fedc_tensor_list_close(&start);
  fedc_tensor_list_close(&ours);
  fedc_tensor_list_close(&theirs);
}
END_TEST

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
  return remove(path);
}

int main(int argc, char **argv)
{
  char command[1024];
  Suite *s;
  TCase *tc;
  SRunner *sr;
  int failed;

  if (argc < 3)
    fatal("usage: test_nn_torch torch_check.py train.py", FEDC_EINVAL);
  trainer_script = argv[2];
  if (system(PYTHON " -c 'import torch' >/dev/null 2>&1") != 0) {
    printf("SKIP: %s cannot import torch; fedc is not compared with "
           "PyTorch\n", PYTHON);
    return 77;
  }
  if (mkdtemp(work_dir) == NULL)
    fatal("mkdtemp", FEDC_EIO);
  fedc_nn_set_threads(1);
  for (size_t i = 0; i < NUM_LAYER_CASES; i++)
    prepare_layer_case(i, &layer_cases[i]);
  for (size_t i = 0; i < NUM_TRAIN_CASES; i++)
    prepare_train_case(i, &train_cases[i]);
  snprintf(command, sizeof(command), PYTHON " '%s' '%s'", argv[1], work_dir);
  if (system(command) != 0)
    fatal(command, FEDC_ECHILD);

  s = suite_create("nn_torch");
  tc = tcase_create("pytorch");
  tcase_add_loop_test(tc, layer_matches_pytorch, 0, NUM_LAYER_CASES);
  tcase_add_loop_test(tc, training_matches_pytorch, 0, NUM_TRAIN_CASES);
  tcase_add_test(tc, external_pytorch_trainer_matches_fedc);
  tcase_set_timeout(tc, 150);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  nftw(work_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
