/* fedc-sim experiments on rounds under heterogeneity: poisoned clients
 * against robust strategies, FedBuff against synchronous rounds on mixed
 * device speeds, and Oort against uniform sampling. Each runs logistic
 * regression on a synthetic task small enough for seconds per run, and
 * prints its figures to stderr for docs/benchmarks.md. */
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
#include "util/rng.h"

#define DIM 16
#define CLASSES 5
#define MAX_ROUNDS 256

/* Five Gaussian classes in 16 dimensions whose means are 1.2 standard
 * deviations apart per coordinate on average: hard enough that logistic
 * regression climbs for several rounds instead of in one. */
static void make_task(fedc_dataset *ds, uint64_t n, uint64_t seed)
{
  float means[CLASSES][DIM];
  fedc_rng rng;

  fedc_rng_seed(&rng, 99);
  for (int c = 0; c < CLASSES; c++)
    for (int j = 0; j < DIM; j++)
      means[c][j] = (float)(0.6 * fedc_rng_normal(&rng));
  ck_assert_int_eq(fedc_dataset_alloc(ds, n, DIM, CLASSES), 0);
  fedc_rng_seed(&rng, seed);
  for (uint64_t i = 0; i < n; i++) {
    int32_t label = (int32_t)(i % CLASSES);

    ds->y[i] = label;
    for (uint32_t j = 0; j < DIM; j++)
      ds->x[i * DIM + j] = means[label][j] + (float)fedc_rng_normal(&rng);
  }
}

typedef struct setup {
  fedc_dataset train, test;
  fedc_partition partition;
  fedc_device_model devices;
  fedc_sim_options opts;
} setup;

static void setup_init(setup *s, uint32_t clients)
{
  fedc_partition_options popts;

  make_task(&s->train, 150 * (uint64_t)clients, 1);
  make_task(&s->test, 2000, 2);
  fedc_partition_init(&s->partition);
  fedc_partition_options_default(&popts);
  popts.clients = clients;
  popts.seed = 3;
  ck_assert_int_eq(fedc_sim_partition(&s->partition, &s->train, &popts, 1),
                   0);
  fedc_device_model_init(&s->devices);

  fedc_sim_options_default(&s->opts);
  s->opts.seed = 7;
  s->opts.workers = 2;
  s->opts.reference_flops = 1e4;
  s->opts.server.model_spec = "logreg:16:5";
  s->opts.server.min_clients = clients;
  s->opts.server.quorum_fraction = 0.0;
  s->opts.server.seed = 7;
  s->opts.server.round_deadline_ms = 3600 * 1000;
  s->opts.server.train.learning_rate = 0.02f;
  s->opts.server.train.batch_size = 16;
}

static void setup_close(setup *s)
{
  fedc_device_model_close(&s->devices);
  fedc_partition_close(&s->partition);
  fedc_dataset_close(&s->test);
  fedc_dataset_close(&s->train);
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
  ck_assert_int_eq(fedc_sim_new(&s->opts, &s->train, &s->test, &s->partition,
                                &s->devices, &sim), 0);
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

/* 20 clients, all in every round, 20 rounds; 4 of them (20%) attack.
 * Trimmed mean cuts 20% at each end and Krum assumes f = 4. */
static double poisoned_accuracy(enum fedc_agg_strategy strategy,
                                enum fedc_attack_kind attack, double scale)
{
  setup s;
  curve c;
  double acc;

  setup_init(&s, 20);
  s.opts.server.clients_per_round = 20;
  s.opts.server.total_rounds = 20;
  s.opts.server.evaluate_every = 20;
  s.opts.server.train.learning_rate = 0.05f;
  fedc_agg_config_default(&s.opts.server.agg, strategy);
  s.opts.server.agg.trim_fraction = 0.2;
  s.opts.server.agg.krum_byzantine = 4;
  s.opts.attack.kind = attack;
  s.opts.attack.fraction = 0.2;
  s.opts.attack.scale = scale;
  run(&s, &c);
  acc = final_accuracy(&c);
  setup_close(&s);
  return acc;
}

static const char *const attack_names[] = { "none", "scale", "sign_flip" };

/* Robust strategies stay within 2 points of the clean FedAvg run under
 * both attacks, while FedAvg loses accuracy: a little under the scaling
 * attack, whose updates still point the honest way, and nearly all of it
 * under the sign flip. */
START_TEST(poisoned_clients_robust_strategies)
{
  static const struct {
    enum fedc_attack_kind kind;
    double scale;
    double fedavg_loss;      /* accuracy FedAvg must lose, at least */
  } attacks[] = { { FEDC_ATTACK_SCALE, 1000.0, 0.03 },
                  { FEDC_ATTACK_SIGN_FLIP, 10.0, 0.30 } };
  static const enum fedc_agg_strategy robust[] = {
    FEDC_AGG_MEDIAN, FEDC_AGG_TRIMMED_MEAN, FEDC_AGG_KRUM,
  };
  double clean = poisoned_accuracy(FEDC_AGG_FEDAVG, FEDC_ATTACK_NONE, 1.0);

  fprintf(stderr, "poisoning: clean fedavg accuracy %.4f\n", clean);
  ck_assert_double_gt(clean, 0.8);
  for (size_t a = 0; a < 2; a++) {
    const char *name = attack_names[attacks[a].kind];
    double plain = poisoned_accuracy(FEDC_AGG_FEDAVG, attacks[a].kind,
                                     attacks[a].scale);

    fprintf(stderr, "poisoning: %s x%g fedavg %.4f\n", name,
            attacks[a].scale, plain);
    ck_assert_msg(plain < clean - attacks[a].fedavg_loss, "fedavg under %s: "
                  "%.4f vs clean %.4f", name, plain, clean);
    for (size_t r = 0; r < 3; r++) {
      double acc = poisoned_accuracy(robust[r], attacks[a].kind,
                                     attacks[a].scale);

      fprintf(stderr, "poisoning: %s x%g %s %.4f\n", name, attacks[a].scale,
              fedc_agg_strategy_name(robust[r]), acc);
      ck_assert_msg(acc > clean - 0.02, "%s under %s: %.4f vs clean %.4f",
                    fedc_agg_strategy_name(robust[r]), name, acc, clean);
    }
  }
}
END_TEST

/* --- FedBuff on mixed device speeds ------------------------------------ */

/* 30 clients, a third each at relative speed 20, 5 and 1, 10 at a time. */
static void speed_setup(setup *s)
{
  setup_init(s, 30);
  add_speed(s, "1x", 1.0);
  add_speed(s, "5x", 5.0);
  add_speed(s, "20x", 20.0);
  s->opts.server.min_clients = 30;
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

  speed_setup(&s);
  s.opts.server.clients_per_round = 10;
  s.opts.server.total_rounds = 20;
  run(&s, &sync);
  setup_close(&s);

  speed_setup(&s);
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

/* Oort picks fast clients with high loss. On the 1x/5x/20x profile with
 * 10 of 30 clients per round, it reaches 95% of the uniform run's final
 * accuracy sooner, because its rounds avoid the slowest devices. */
START_TEST(oort_faster_than_uniform)
{
  setup s;
  curve uniform, oort;
  double target, t_uniform, t_oort;

  speed_setup(&s);
  s.opts.server.clients_per_round = 10;
  s.opts.server.total_rounds = 30;
  run(&s, &uniform);
  setup_close(&s);

  speed_setup(&s);
  s.opts.server.clients_per_round = 10;
  s.opts.server.total_rounds = 30;
  s.opts.server.sampling = FEDC_SAMPLING_OORT;
  run(&s, &oort);
  setup_close(&s);

  target = 0.95 * final_accuracy(&uniform);
  t_uniform = time_to(&uniform, target);
  t_oort = time_to(&oort, target);
  fprintf(stderr, "oort: target %.4f, uniform at %.1f s (final %.4f), oort "
          "at %.1f s (final %.4f), ratio %.2f\n", target, t_uniform,
          final_accuracy(&uniform), t_oort, final_accuracy(&oort),
          t_oort / t_uniform);
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
  tcase_add_test(tc, oort_faster_than_uniform);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(sched_suite());
  int failed;

  fedc_log_set_level(FEDC_LOG_WARN);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
