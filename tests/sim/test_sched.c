/* fedc-sim experiments on rounds under heterogeneity, on Fashion-MNIST:
 * poisoned clients against robust strategies, FedBuff against synchronous
 * rounds on mixed device speeds, and Oort against uniform sampling on IID
 * and Dirichlet data. Each trains logistic regression (logreg:784:10) with
 * SGD on the first rows of the training set, evaluates on the whole test
 * set, and prints its figures to stderr for docs/benchmarks.md. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attack.h"
#include "device.h"
#include "sim.h"
#include "util/error.h"
#include "util/log.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#define TRAIN_ROWS 20000       /* rows loaded; each experiment uses a prefix */
#define MAX_ROUNDS 512

/* Loaded once in main(), before Check forks each test. */
static fedc_dataset train_rows, test_rows;

/* Copies the first n rows of src into out. */
static int take_rows(const fedc_dataset *src, uint64_t n, fedc_dataset *out)
{
  int rc = fedc_dataset_alloc(out, n, src->dim, src->num_classes);

  if (rc < 0)
    return rc;
  memcpy(out->x, src->x, n * src->dim * sizeof(*out->x));
  memcpy(out->y, src->y, n * sizeof(*out->y));
  return 0;
}

/* Loads the first TRAIN_ROWS training rows and the whole test set.
 * Returns 0 or the FEDC_E* code of fedc_idx_load(). */
static int load_fmnist(void)
{
  fedc_dataset all;
  int rc;

  memset(&all, 0, sizeof(all));
  rc = fedc_idx_load(FMNIST_DIR "/train-images-idx3-ubyte.gz",
                     FMNIST_DIR "/train-labels-idx1-ubyte.gz", &all);
  if (rc == 0)
    rc = take_rows(&all, TRAIN_ROWS, &train_rows);
  fedc_dataset_close(&all);
  if (rc == 0)
    rc = fedc_idx_load(FMNIST_DIR "/t10k-images-idx3-ubyte.gz",
                       FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", &test_rows);
  return rc;
}

typedef struct setup {
  fedc_dataset train;          /* the first rows of train_rows, not owned */
  fedc_partition partition;
  fedc_device_model devices;
  fedc_sim_options opts;
} setup;

static void setup_init(setup *s, uint32_t clients, uint64_t rows,
                       enum fedc_partition_scheme scheme)
{
  fedc_partition_options popts;

  ck_assert_uint_le(rows, train_rows.n);
  s->train = train_rows;
  s->train.n = rows;
  fedc_partition_init(&s->partition);
  fedc_partition_options_default(&popts);
  popts.scheme = scheme;
  popts.clients = clients;
  popts.seed = 3;
  popts.alpha = 0.5;
  popts.min_rows = 20;
  ck_assert_int_eq(fedc_sim_partition(&s->partition, &s->train, &popts, 1),
                   0);
  fedc_device_model_init(&s->devices);

  fedc_sim_options_default(&s->opts);
  s->opts.seed = 7;
  s->opts.workers = 2;
  s->opts.server.model_spec = "logreg:784:10";
  s->opts.server.min_clients = clients;
  s->opts.server.quorum_fraction = 0.0;
  s->opts.server.seed = 7;
  s->opts.server.round_deadline_ms = 3600 * 1000;
  s->opts.server.train.learning_rate = 0.05f;
  s->opts.server.train.batch_size = 32;
}

static void setup_close(setup *s)
{
  fedc_device_model_close(&s->devices);
  fedc_partition_close(&s->partition);
}

/* Adds a device class of the given relative speed, without spread. */
static void add_speed(setup *s, const char *name, double speed)
{
  fedc_device_class c;

  fedc_device_class_default(&c, name);
  c.speed = speed;
  ck_assert_int_eq(fedc_device_model_add_class(&s->devices, &c), 0);
}

/* The evaluated rounds of a run: accuracy against simulated time. */
typedef struct curve {
  size_t n;
  double clock[MAX_ROUNDS];
  double accuracy[MAX_ROUNDS];
} curve;

static void on_round(void *user, const fedc_sim_round *r)
{
  curve *c = user;

  if (r->metrics.evaluated && c->n < MAX_ROUNDS) {
    c->clock[c->n] = r->clock;
    c->accuracy[c->n] = r->metrics.test_accuracy;
    c->n++;
  }
}

static void run(setup *s, curve *c)
{
  fedc_sim_hooks hooks = { .user = c, .round_finished = on_round };
  fedc_sim *sim = NULL;

  memset(c, 0, sizeof(*c));
  if (s->devices.class_count == 0)
    add_speed(s, "reference", 1.0);
  ck_assert_int_eq(fedc_sim_new(&s->opts, &s->train, &test_rows,
                                &s->partition, &s->devices, &sim), 0);
  ck_assert_int_eq(fedc_sim_run(sim, &hooks), 0);
  fedc_sim_free(&sim);
  ck_assert_uint_gt(c->n, 0);
}

static double final_accuracy(const curve *c)
{
  return c->accuracy[c->n - 1];
}

/* Returns the simulated time at which the run first reached target, or
 * INFINITY. */
static double time_to(const curve *c, double target)
{
  for (size_t i = 0; i < c->n; i++)
    if (c->accuracy[i] >= target)
      return c->clock[i];
  return INFINITY;
}

/* --- Poisoned clients --------------------------------------------------- */

#define POISON_CLIENTS 20
#define POISON_ROWS 20000
#define POISON_ROUNDS 50

/* 20 clients of 1000 IID rows, all in every round, 50 rounds; 4 of them
 * (20%) attack. Trimmed mean cuts 20% at each end and Krum assumes f = 4.
 * Krum steps by one client's update, so it needs this many rounds to come
 * within 2 points of the mean of 20: after 30 it trailed by 1 to 1.9. */
static double poisoned_accuracy(enum fedc_agg_strategy strategy,
                                enum fedc_attack_kind attack, double factor)
{
  setup s;
  curve c;
  double acc;

  setup_init(&s, POISON_CLIENTS, POISON_ROWS, FEDC_PARTITION_IID);
  s.opts.server.clients_per_round = POISON_CLIENTS;
  s.opts.server.total_rounds = POISON_ROUNDS;
  s.opts.server.evaluate_every = POISON_ROUNDS;
  fedc_agg_config_default(&s.opts.server.agg, strategy);
  s.opts.server.agg.trim_fraction = 0.2;
  s.opts.server.agg.krum_byzantine = 4;
  s.opts.attack.kind = attack;
  s.opts.attack.fraction = 0.2;
  s.opts.attack.scale = factor;
  run(&s, &c);
  acc = final_accuracy(&c);
  setup_close(&s);
  return acc;
}

static const char *const attack_names[] = { "none", "scale", "sign_flip" };

/* Robust strategies stay within 2 points of the clean FedAvg run under
 * both attacks, while FedAvg loses at least 5 points to each. With 4 of 20
 * clients flipping x f, FedAvg's step is about (16 - 4f) / 20 of the
 * honest mean, so f = 10 reverses it. Scaling x 100 makes FedAvg's step
 * about 20 times too long, and it overshoots. */
START_TEST(poisoned_clients_robust_strategies)
{
  static const struct {
    enum fedc_attack_kind kind;
    double factor;
  } attacks[] = { { FEDC_ATTACK_SCALE, 100.0 },
                  { FEDC_ATTACK_SIGN_FLIP, 10.0 } };
  static const enum fedc_agg_strategy robust[] = {
    FEDC_AGG_MEDIAN, FEDC_AGG_TRIMMED_MEAN, FEDC_AGG_KRUM,
  };
  double clean = poisoned_accuracy(FEDC_AGG_FEDAVG, FEDC_ATTACK_NONE, 1.0);

  fprintf(stderr, "poisoning: clean fedavg accuracy %.4f\n", clean);
  ck_assert_double_gt(clean, 0.75);
  for (size_t a = 0; a < 2; a++) {
    const char *name = attack_names[attacks[a].kind];
    double plain = poisoned_accuracy(FEDC_AGG_FEDAVG, attacks[a].kind,
                                     attacks[a].factor);

    fprintf(stderr, "poisoning: %s x%g fedavg %.4f\n", name,
            attacks[a].factor, plain);
    ck_assert_msg(plain < clean - 0.05, "fedavg under %s: %.4f vs clean "
                  "%.4f", name, plain, clean);
    for (size_t r = 0; r < 3; r++) {
      double acc = poisoned_accuracy(robust[r], attacks[a].kind,
                                     attacks[a].factor);

      fprintf(stderr, "poisoning: %s x%g %s %.4f\n", name, attacks[a].factor,
              fedc_agg_strategy_name(robust[r]), acc);
      ck_assert_msg(acc > clean - 0.02, "%s under %s: %.4f vs clean %.4f",
                    fedc_agg_strategy_name(robust[r]), name, acc, clean);
    }
  }
}
END_TEST

/* --- FedBuff on mixed device speeds ------------------------------------ */

#define SPEED_CLIENTS 30
#define SPEED_ROWS 12000

/* 30 clients of 400 rows, their devices drawn with equal weight from
 * classes of relative speed 1, 5 and 20. The reference device does
 * 2 x 10^6 FLOP/s, so that local training (about 9.4 s at speed 1)
 * outweighs the network (about 0.1 s). */
static void speed_setup(setup *s, enum fedc_partition_scheme scheme)
{
  setup_init(s, SPEED_CLIENTS, SPEED_ROWS, scheme);
  add_speed(s, "1x", 1.0);
  add_speed(s, "5x", 5.0);
  add_speed(s, "20x", 20.0);
  s->opts.reference_flops = 2e6;
  s->opts.server.evaluate_every = 1;
}

/* FedBuff reaches the final accuracy of 20 synchronous rounds of 10
 * clients in less simulated time, because fast clients do not wait for
 * slow ones. */
START_TEST(fedbuff_faster_than_sync)
{
  setup s;
  curve sync, buff;
  double target, t_sync, t_buff;

  speed_setup(&s, FEDC_PARTITION_IID);
  s.opts.server.clients_per_round = 10;
  s.opts.server.total_rounds = 20;
  run(&s, &sync);
  setup_close(&s);

  speed_setup(&s, FEDC_PARTITION_IID);
  s.opts.server.mode = FEDC_ROUNDS_FEDBUFF;
  s.opts.server.max_concurrency = 10;
  s.opts.server.buffer_size = 10;
  s.opts.server.total_rounds = 100;
  run(&s, &buff);
  setup_close(&s);

  target = final_accuracy(&sync);
  t_sync = time_to(&sync, target);
  t_buff = time_to(&buff, target);
  fprintf(stderr, "speeds 1x/5x/20x: sync reaches %.4f at %.1f s, fedbuff "
          "at %.1f s (ratio %.2f), fedbuff final %.4f\n", target, t_sync,
          t_buff, t_buff / t_sync, final_accuracy(&buff));
  ck_assert_msg(t_buff < t_sync, "fedbuff %.1f s, sync %.1f s", t_buff,
                t_sync);
}
END_TEST

/* --- Oort against uniform sampling -------------------------------------- */

/* Runs uniform and Oort sampling, 10 of the 30 clients per round for 30
 * rounds, and returns the simulated time each takes to reach 95% of the
 * uniform run's final accuracy. */
static void oort_against_uniform(enum fedc_partition_scheme scheme,
                                 double *t_uniform, double *t_oort)
{
  static const char *const scheme_names[] = { "iid", "dirichlet", "shards" };
  setup s;
  curve uniform, oort;
  double target;

  speed_setup(&s, scheme);
  s.opts.server.clients_per_round = 10;
  s.opts.server.total_rounds = 30;
  run(&s, &uniform);
  setup_close(&s);

  speed_setup(&s, scheme);
  s.opts.server.clients_per_round = 10;
  s.opts.server.total_rounds = 30;
  s.opts.server.sampling = FEDC_SAMPLING_OORT;
  run(&s, &oort);
  setup_close(&s);

  target = 0.95 * final_accuracy(&uniform);
  *t_uniform = time_to(&uniform, target);
  *t_oort = time_to(&oort, target);
  fprintf(stderr, "oort %s: target %.4f, uniform at %.1f s (final %.4f, "
          "%.1f s), oort at %.1f s (final %.4f, %.1f s), ratio %.2f\n",
          scheme_names[scheme], target, *t_uniform, final_accuracy(&uniform),
          uniform.clock[uniform.n - 1], *t_oort, final_accuracy(&oort),
          oort.clock[oort.n - 1], *t_oort / *t_uniform);
}

/* Oort picks fast clients with high loss. On the 1x/5x/20x profile it
 * reaches the target sooner, because its rounds avoid the slowest
 * devices, on IID data and on Dirichlet(0.5) label skew alike. */
START_TEST(oort_faster_than_uniform_iid)
{
  double t_uniform, t_oort;

  oort_against_uniform(FEDC_PARTITION_IID, &t_uniform, &t_oort);
  ck_assert_msg(t_oort < t_uniform, "oort %.1f s, uniform %.1f s", t_oort,
                t_uniform);
}
END_TEST

START_TEST(oort_faster_than_uniform_dirichlet)
{
  double t_uniform, t_oort;

  oort_against_uniform(FEDC_PARTITION_DIRICHLET, &t_uniform, &t_oort);
  ck_assert_msg(t_oort < t_uniform, "oort %.1f s, uniform %.1f s", t_oort,
                t_uniform);
}
END_TEST

static Suite *sched_suite(void)
{
  Suite *s = suite_create("sim_sched");
  TCase *tc = tcase_create("core");

  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, poisoned_clients_robust_strategies);
  tcase_add_test(tc, fedbuff_faster_than_sync);
  tcase_add_test(tc, oort_faster_than_uniform_iid);
  tcase_add_test(tc, oort_faster_than_uniform_dirichlet);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr;
  int failed, rc;

  fedc_log_set_level(FEDC_LOG_WARN);
  rc = load_fmnist();
  if (rc < 0) {
    printf("SKIP: cannot load Fashion-MNIST from %s: %s\n", FMNIST_DIR,
           fedc_strerror(rc));
    return 77;
  }
  sr = srunner_create(sched_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  fedc_dataset_close(&test_rows);
  fedc_dataset_close(&train_rows);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
