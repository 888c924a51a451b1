/* Scripted simulator runs on a small synthetic dataset, checked against
 * the values they must produce. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "report.h"
#include "sim.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

#define DIM 8
#define CLASSES 3

/* Three Gaussian blobs in 8 dimensions, one per class: separable enough
 * that logistic regression passes 90% accuracy within a few rounds. */
static void make_blobs(fedc_dataset *ds, uint64_t n, uint64_t seed)
{
  fedc_rng rng;

  ck_assert_int_eq(fedc_dataset_alloc(ds, n, DIM, CLASSES), 0);
  fedc_rng_seed(&rng, seed);
  for (uint64_t i = 0; i < n; i++) {
    int32_t label = (int32_t)(i % CLASSES);

    ds->y[i] = label;
    for (uint32_t j = 0; j < DIM; j++)
      ds->x[i * DIM + j] = (float)((j % CLASSES == (uint32_t)label ? 2.0
                                                                   : 0.0) +
                                   fedc_rng_normal(&rng));
  }
}

/* A simulation fixture: data, partition, devices and options. */
typedef struct fixture {
  fedc_dataset train, test;
  fedc_partition partition;
  fedc_device_model devices;
  fedc_device_class device_class;
  fedc_sim_options opts;
} fixture;

static void fixture_init(fixture *f, uint32_t clients)
{
  fedc_partition_options popts;

  make_blobs(&f->train, 3000, 1);
  make_blobs(&f->test, 600, 2);
  fedc_partition_init(&f->partition);
  fedc_partition_options_default(&popts);
  popts.clients = clients;
  popts.seed = 3;
  ck_assert_int_eq(fedc_sim_partition(&f->partition, &f->train, &popts, 1),
                   0);

  fedc_device_model_init(&f->devices);
  fedc_device_class_default(&f->device_class, "test");
  f->device_class.speed_sigma = 0.5;
  f->device_class.bandwidth_sigma = 0.5;

  fedc_sim_options_default(&f->opts);
  f->opts.seed = 7;
  f->opts.workers = 2;
  f->opts.server.model_spec = "logreg:8:3";
  f->opts.server.clients_per_round = 10;
  f->opts.server.min_clients = 10;
  f->opts.server.quorum_fraction = 0.0;
  f->opts.server.total_rounds = 5;
  f->opts.server.seed = 7;
  f->opts.server.train.learning_rate = 0.1f;
  f->opts.server.train.batch_size = 16;
}

static void fixture_close(fixture *f)
{
  fedc_device_model_close(&f->devices);
  fedc_partition_close(&f->partition);
  fedc_dataset_close(&f->test);
  fedc_dataset_close(&f->train);
}

/* What a run's hooks collect. */
typedef struct observed {
  char *records;             /* the JSON Lines a deterministic run writes */
  size_t records_len;
  FILE *out;
  const fixture *f;
  uint64_t rounds, tasks, dropouts;
  uint64_t cancelled;        /* clients_cancelled summed over the rounds */
  uint64_t tasks_offline;    /* tasks sent to a client outside its window */
  uint64_t offline_seen;     /* clients found offline at task times */
  uint32_t sampled[64], reported[64], dropped[64];
  double last_accuracy;
  double last_clock;
  int clock_backwards;
} observed;

static void on_round(void *user, const fedc_sim_round *r)
{
  observed *o = user;
  const fedc_round_metrics *m = &r->metrics;
  fedc_sim_record rec = {
    .metrics = *m, .real_seconds = r->real_seconds,
    .simulated_clock = r->clock,
  };

  ck_assert_int_eq(fedc_report_write_jsonl(o->out, &rec, 1), 0);
  o->rounds++;
  o->cancelled += m->clients_cancelled;
  if (m->round < 64) {
    o->sampled[m->round] = m->clients_sampled;
    o->reported[m->round] = m->clients_reported;
  }
  if (m->evaluated)
    o->last_accuracy = m->test_accuracy;
  if (r->clock < o->last_clock)
    o->clock_backwards = 1;
  o->last_clock = r->clock;
}

static void on_task(void *user, uint64_t round, uint32_t client, double t)
{
  observed *o = user;
  fedc_device d;

  o->tasks++;
  fedc_device_draw(&o->f->devices, o->f->opts.seed, client, &d);
  if (!fedc_device_online(&d, t))
    o->tasks_offline++;

  /* Count who else is offline now, to show the windows mattered. */
  for (uint32_t c = 0; c < o->f->partition.clients; c++) {
    fedc_device_draw(&o->f->devices, o->f->opts.seed, c, &d);
    o->offline_seen += !fedc_device_online(&d, t);
  }
}

static void on_dropout(void *user, uint64_t round, uint32_t client, double t)
{
  observed *o = user;

  o->dropouts++;
  if (round < 64)
    o->dropped[round]++;
}

/* Runs the fixture's simulation, filling o. Returns fedc_sim_run()'s code. */
static int run_sim(fixture *f, observed *o, fedc_sim_stats *stats)
{
  fedc_sim_hooks hooks = {
    .user = o, .round_finished = on_round, .task_sent = on_task,
    .dropped_out = on_dropout,
  };
  fedc_sim *sim = NULL;
  int rc;

  memset(o, 0, sizeof(*o));
  o->f = f;
  o->out = open_memstream(&o->records, &o->records_len);
  ck_assert_ptr_nonnull(o->out);
  ck_assert_int_eq(fedc_device_model_add_class(&f->devices,
                                               &f->device_class), 0);
  ck_assert_int_eq(fedc_sim_new(&f->opts, &f->train, &f->test, &f->partition,
                                &f->devices, &sim), 0);
  rc = fedc_sim_run(sim, &hooks);
  if (stats != NULL)
    *stats = *fedc_sim_get_stats(sim);
  fedc_sim_free(&sim);
  ck_assert_ptr_null(sim);
  fclose(o->out);
  fedc_device_model_close(&f->devices);
  fedc_device_model_init(&f->devices);
  return rc;
}

START_TEST(sim_trains_and_reports_rounds)
{
  fixture f;
  observed o;
  fedc_sim_stats stats;

  fixture_init(&f, 50);
  ck_assert_int_eq(run_sim(&f, &o, &stats), 0);
  ck_assert_uint_eq(o.rounds, 5);
  ck_assert_uint_eq(stats.rounds, 5);
  ck_assert_uint_eq(o.tasks, 50);
  ck_assert_uint_eq(stats.trainings, 50);
  for (int r = 1; r <= 5; r++) {
    ck_assert_uint_eq(o.sampled[r], 10);
    ck_assert_uint_eq(o.reported[r], 10);
  }
  ck_assert_msg(o.last_accuracy > 0.9, "accuracy %f", o.last_accuracy);
  ck_assert(o.last_clock > 0.0);
  ck_assert_int_eq(o.clock_backwards, 0);
  ck_assert_ptr_nonnull(strstr(o.records, "\"round\": 5,"));
  free(o.records);
  fixture_close(&f);
}
END_TEST

START_TEST(sim_same_seed_identical_records)
{
  fixture f;
  observed first, second, inline_run, other_seed;

  fixture_init(&f, 40);
  f.device_class.dropout = 0.2;
  ck_assert_int_eq(run_sim(&f, &first, NULL), 0);
  ck_assert_int_eq(run_sim(&f, &second, NULL), 0);
  f.opts.workers = 0;
  ck_assert_int_eq(run_sim(&f, &inline_run, NULL), 0);
  f.opts.seed = 8;
  ck_assert_int_eq(run_sim(&f, &other_seed, NULL), 0);

  ck_assert_uint_gt(first.records_len, 0);
  ck_assert_uint_eq(first.records_len, second.records_len);
  ck_assert_mem_eq(first.records, second.records, first.records_len);

  /* Training on the event loop's thread changes nothing either. */
  ck_assert_uint_eq(first.records_len, inline_run.records_len);
  ck_assert_mem_eq(first.records, inline_run.records, first.records_len);

  ck_assert(first.records_len != other_seed.records_len ||
            memcmp(first.records, other_seed.records,
                   first.records_len) != 0);
  free(first.records);
  free(second.records);
  free(inline_run.records);
  free(other_seed.records);
  fixture_close(&f);
}
END_TEST

/* With over-selection the stragglers' tasks are cancelled. A straggler
 * whose Cancel arrives before its training ends has its job skipped when
 * no thread has started it, as on the event loop's thread alone, and
 * skipping changes no result. Slow reference devices with spread speeds
 * make the stragglers train for seconds. */
START_TEST(sim_skips_cancelled_trainings)
{
  fixture f;
  observed pool_run, inline_run;
  fedc_sim_stats pool_stats, inline_stats;

  fixture_init(&f, 40);
  f.opts.server.over_selection = 1.5;
  f.opts.reference_flops = 1e5;
  f.device_class.speed_sigma = 1.0;
  ck_assert_int_eq(run_sim(&f, &pool_run, &pool_stats), 0);
  f.opts.workers = 0;
  ck_assert_int_eq(run_sim(&f, &inline_run, &inline_stats), 0);

  ck_assert_uint_eq(inline_run.cancelled, 25);
  ck_assert_uint_eq(inline_stats.trainings, 75);
  ck_assert_uint_gt(inline_stats.trainings_skipped, 0);
  ck_assert_uint_le(inline_stats.trainings_skipped, inline_run.cancelled);
  ck_assert_uint_le(pool_stats.trainings_skipped, pool_run.cancelled);
  ck_assert_uint_eq(pool_run.records_len, inline_run.records_len);
  ck_assert_mem_eq(pool_run.records, inline_run.records,
                   pool_run.records_len);
  free(pool_run.records);
  free(inline_run.records);
  fixture_close(&f);
}
END_TEST

START_TEST(sim_dropout_removes_share_of_cohort)
{
  fixture f;
  observed o;
  uint64_t sampled = 0;

  fixture_init(&f, 200);
  f.device_class.dropout = 0.25;
  f.opts.server.clients_per_round = 40;
  f.opts.server.min_clients = 40;
  f.opts.server.total_rounds = 15;
  ck_assert_int_eq(run_sim(&f, &o, NULL), 0);
  ck_assert_uint_eq(o.rounds, 15);

  for (int r = 1; r <= 15; r++) {
    sampled += o.sampled[r];
    /* A client that drops out is the only way to miss a report here. */
    ck_assert_uint_eq(o.reported[r] + o.dropped[r], o.sampled[r]);
  }
  ck_assert_uint_eq(sampled, 600);

  /* 600 draws at p = 0.25: the standard deviation of the count is 10.6,
   * so the count is within 150 +- 45 with probability above 0.9999. */
  ck_assert_uint_ge(o.dropouts, 105);
  ck_assert_uint_le(o.dropouts, 195);
  free(o.records);
  fixture_close(&f);
}
END_TEST

START_TEST(sim_no_dropout_at_zero)
{
  fixture f;
  observed o;

  fixture_init(&f, 30);
  ck_assert_int_eq(run_sim(&f, &o, NULL), 0);
  ck_assert_uint_eq(o.dropouts, 0);
  free(o.records);
  fixture_close(&f);
}
END_TEST

START_TEST(sim_offline_client_never_sampled)
{
  fixture f;
  observed o;

  /* Online for 40% of every 300 s; slow devices make each round take
   * tens of simulated seconds, so the run crosses many windows. */
  fixture_init(&f, 60);
  f.device_class.period = 300.0;
  f.device_class.online = 0.4;
  f.opts.reference_flops = 400.0;
  f.opts.server.clients_per_round = 8;
  f.opts.server.min_clients = 8;
  f.opts.server.total_rounds = 20;
  ck_assert_int_eq(run_sim(&f, &o, NULL), 0);

  ck_assert_uint_eq(o.rounds, 20);
  ck_assert_uint_eq(o.tasks, 160);
  ck_assert_uint_eq(o.tasks_offline, 0);
  ck_assert_msg(o.last_clock > 300.0, "run lasted only %.1f s", o.last_clock);

  /* About 60% of the clients are outside their window at any time. */
  ck_assert_uint_gt(o.offline_seen, o.tasks * 60 / 4);
  free(o.records);
  fixture_close(&f);
}
END_TEST

START_TEST(sim_idle_clients_hold_no_engine)
{
  fixture f;
  observed o;
  fedc_sim_stats stats;

  fixture_init(&f, 1500);
  f.opts.server.total_rounds = 3;
  f.opts.connect_window_seconds = 30.0;
  ck_assert_int_eq(run_sim(&f, &o, &stats), 0);
  ck_assert_uint_eq(o.rounds, 3);
  ck_assert_uint_eq(stats.client_record_bytes, 40);
  ck_assert_uint_eq(stats.connects, 1500);

  /* Handshakes overlap a little within the connect window; cohorts hold
   * 10 engines. Nowhere near one engine per client. */
  ck_assert_uint_lt(stats.max_live_engines, 100);
  ck_assert_uint_ge(stats.engines_rebuilt, 30);
  free(o.records);
  fixture_close(&f);
}
END_TEST

/* Counts how often each training row appears in the clients' views. */
static void count_rows(const fedc_partition *p, const fedc_dataset *ds,
                       uint32_t *counts)
{
  memset(counts, 0, ds->n * sizeof(*counts));
  for (uint32_t k = 0; k < p->clients; k++) {
    fedc_dataset_view v = fedc_partition_view(p, ds, k);

    ck_assert_ptr_eq(v.base, ds);
    for (uint64_t i = 0; i < v.n; i++) {
      uint64_t row = fedc_view_row(&v, i);

      ck_assert_uint_lt(row, ds->n);
      counts[row]++;
    }
  }
}

START_TEST(sim_partition_views_cover_rows)
{
  static const enum fedc_partition_scheme schemes[] = {
    FEDC_PARTITION_IID, FEDC_PARTITION_DIRICHLET, FEDC_PARTITION_SHARDS,
  };
  fedc_dataset ds;
  uint32_t *counts;

  make_blobs(&ds, 3000, 5);
  counts = malloc(ds.n * sizeof(*counts));
  ck_assert_ptr_nonnull(counts);
  for (size_t s = 0; s < 3; s++) {
    for (uint32_t copies = 1; copies <= 3; copies += 2) {
      fedc_partition p;
      fedc_partition_options opts;

      fedc_partition_init(&p);
      fedc_partition_options_default(&opts);
      opts.scheme = schemes[s];
      opts.clients = 100 * copies;
      opts.seed = 11;
      ck_assert_int_eq(fedc_sim_partition(&p, &ds, &opts, copies), 0);
      count_rows(&p, &ds, counts);
      for (uint64_t r = 0; r < ds.n; r++)
        ck_assert_msg(counts[r] == copies, "scheme %zu copies %u: row %llu "
                      "in %u views", s, copies, (unsigned long long)r,
                      counts[r]);
      fedc_partition_close(&p);
    }
  }
  free(counts);
  fedc_dataset_close(&ds);
}
END_TEST

START_TEST(sim_stall_fails_run)
{
  fixture f;
  observed o;

  /* All 10 clients are needed per round, but each is online a fifth of
   * the time with a random phase. Ten such windows overlap with
   * probability 10 x 0.2^9 = 5e-6, so no round can start. */
  fixture_init(&f, 10);
  f.device_class.period = 100.0;
  f.device_class.online = 0.2;
  f.opts.stall_seconds = 3600.0;
  ck_assert_int_eq(run_sim(&f, &o, NULL), FEDC_ETIMEDOUT);
  ck_assert_uint_eq(o.rounds, 0);
  free(o.records);
  fixture_close(&f);
}
END_TEST

/* Clients that are never online never connect, so the event queue runs
 * dry before any round; the run must fail rather than end as if done. */
START_TEST(sim_never_online_fails_run)
{
  fixture f;
  observed o;

  fixture_init(&f, 10);
  f.device_class.period = 100.0;
  f.device_class.online = 0.0;
  ck_assert_int_eq(run_sim(&f, &o, NULL), FEDC_ETIMEDOUT);
  ck_assert_uint_eq(o.rounds, 0);
  ck_assert_uint_eq(o.tasks, 0);
  free(o.records);
  fixture_close(&f);
}
END_TEST

START_TEST(sim_rejects_bad_options)
{
  fixture f;
  fedc_sim *sim = NULL;

  fixture_init(&f, 10);
  f.opts.server.model_spec = "logreg:9:3";
  ck_assert_int_eq(fedc_sim_new(&f.opts, &f.train, &f.test, &f.partition,
                                &f.devices, &sim), FEDC_EINVAL);
  ck_assert_ptr_null(sim);
  f.opts.server.model_spec = "logreg:8:3";
  f.opts.reference_flops = 0;
  ck_assert_int_eq(fedc_sim_new(&f.opts, &f.train, &f.test, &f.partition,
                                &f.devices, &sim), FEDC_EINVAL);
  fixture_close(&f);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("sim");
  TCase *tc = tcase_create("runs");
  SRunner *sr;
  int failed;

  fedc_log_set_level(FEDC_LOG_ERROR);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, sim_trains_and_reports_rounds);
  tcase_add_test(tc, sim_same_seed_identical_records);
  tcase_add_test(tc, sim_skips_cancelled_trainings);
  tcase_add_test(tc, sim_dropout_removes_share_of_cohort);
  tcase_add_test(tc, sim_no_dropout_at_zero);
  tcase_add_test(tc, sim_offline_client_never_sampled);
  tcase_add_test(tc, sim_idle_clients_hold_no_engine);
  tcase_add_test(tc, sim_partition_views_cover_rows);
  tcase_add_test(tc, sim_stall_fails_run);
  tcase_add_test(tc, sim_never_online_fails_run);
  tcase_add_test(tc, sim_rejects_bad_options);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
