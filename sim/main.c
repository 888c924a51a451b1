/* fedc-sim: federated training of many simulated clients on one machine.
 * The options are in args.c, the simulation in sim.c, the TLS mode in
 * tls_run.c. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "args.h"
#include "data/dataset.h"
#include "data/partition.h"
#include "device.h"
#include "plot.h"
#include "profile.h"
#include "report.h"
#include "setup.h"
#include "sim.h"
#include "tls_run.h"
#include "util/error.h"
#include "util/log.h"

/* What the round hook writes to. */
typedef struct run_output {
  FILE *metrics;             /* NULL when no metrics file was asked for */
  int wall_clock;
  fedc_progress progress;
  fedc_plot_point *points;
  size_t count, capacity;
  double real_total;
  double last_accuracy;
  uint64_t aggregated;       /* rounds that changed the model */
  int err;
} run_output;

static int build_devices(const fedc_args *a, fedc_device_model *m)
{
  fedc_device_class c;
  char message[512];
  int rc;

  if (a->profile != NULL) {
    rc = fedc_profile_load(a->profile, m, message, sizeof(message));
    if (rc < 0)
      fprintf(stderr, "fedc-sim: %s\n", message);
    return rc;
  }
  fedc_device_class_default(&c, "default");
  c.speed = a->speed;
  c.speed_sigma = a->speed_sigma;
  c.down_bps = a->download_bps;
  c.up_bps = a->upload_bps;
  c.bandwidth_sigma = a->bandwidth_sigma;
  c.dropout = a->dropout;
  c.period = a->availability_period;
  c.online = a->availability_online;
  return fedc_device_model_add_class(m, &c);
}

static void fill_server_config(const fedc_args *a,
                               fedc_server_engine_config *s)
{
  fedc_server_engine_config_default(s);
  s->clients_per_round = (uint32_t)a->clients_per_round;
  s->fraction_fit = a->fraction_fit;
  s->min_clients = (uint32_t)(a->min_clients ? a->min_clients
                                             : a->clients_per_round);
  s->quorum_fraction = a->quorum;
  s->quorum_count = 1;
  s->close_at_quorum = a->close_at_quorum;
  s->round_deadline_ms = a->round_timeout;
  s->total_rounds = a->rounds;
  s->evaluate_every = (uint32_t)a->evaluate_every;
  s->seed = a->seed;
  s->model_spec = a->model;
  s->chunk_bytes = (uint32_t)a->chunk_bytes;
  s->max_frame_bytes = (uint32_t)a->chunk_bytes + (1u << 20);

  s->train.local_epochs = (uint32_t)a->local_epochs;
  s->train.batch_size = (uint32_t)a->batch_size;
  s->train.max_steps = (uint32_t)a->max_steps;
  s->train.learning_rate = (float)a->learning_rate;
  s->train.momentum = (float)a->momentum;
  s->train.weight_decay = (float)a->weight_decay;
  s->train.proximal_mu = (float)a->proximal_mu;
  s->train.seed = a->seed;

  s->poisson_q = a->poisson_q;
  s->over_selection = a->over_selection;
  s->max_concurrency = (uint32_t)a->max_concurrency;
  s->buffer_size = (uint32_t)a->buffer_size;
  s->async_alpha = a->async_alpha;
  s->staleness_a = a->staleness_a;
  s->max_staleness = (uint32_t)a->max_staleness;
  fedc_sampling_parse(a->sampling, &s->sampling);
  fedc_rounds_mode_parse(a->mode, &s->mode);
  fedc_staleness_fn_parse(a->staleness, &s->staleness_fn);

  fedc_agg_strategy_parse(a->strategy, &s->agg.strategy);
  fedc_agg_config_default(&s->agg, s->agg.strategy);
  if (a->server_lr > 0)
    s->agg.server_lr = a->server_lr;
  if (a->server_momentum > 0)
    s->agg.server_momentum = a->server_momentum;
}

static void fill_sim_options(const fedc_args *a, fedc_sim_options *o)
{
  fedc_sim_options_default(o);
  o->seed = a->seed;
  if (a->workers > 0)
    o->workers = (unsigned)a->workers;
  o->reference_flops = a->reference_flops;
  o->latency_seconds = a->latency / 1000.0;
  o->reconnect_seconds = a->reconnect_delay;
  o->connect_window_seconds = a->connect_window;
  o->max_simulated_seconds = a->max_time;
  o->stall_seconds = a->stall_time;
  fedc_attack_kind_parse(a->attack, &o->attack.kind);
  o->attack.fraction = a->attack_fraction;
  o->attack.scale = a->attack_factor;
  fill_server_config(a, &o->server);
}

static void add_point(run_output *out, const fedc_sim_round *r)
{
  if (out->count == out->capacity) {
    size_t capacity = out->capacity ? 2 * out->capacity : 64;
    fedc_plot_point *grown = realloc(out->points,
                                     capacity * sizeof(*grown));

    if (grown == NULL) {
      out->err = FEDC_ENOMEM;
      return;
    }
    out->points = grown;
    out->capacity = capacity;
  }
  out->points[out->count++] = (fedc_plot_point){
    .round = r->metrics.round, .seconds = r->clock,
    .accuracy = r->metrics.evaluated ? r->metrics.test_accuracy : NAN,
  };
}

static void on_round(void *user, const fedc_sim_round *r)
{
  run_output *out = user;
  fedc_sim_record rec = {
    .metrics = r->metrics, .real_seconds = r->real_seconds,
    .simulated_clock = r->clock,
  };

  out->real_total += r->real_seconds;
  if (r->metrics.aggregated)
    out->aggregated++;
  if (r->metrics.evaluated)
    out->last_accuracy = r->metrics.test_accuracy;
  if (out->metrics != NULL && out->err == 0)
    out->err = fedc_report_write_jsonl(out->metrics, &rec, !out->wall_clock);
  add_point(out, r);
  fedc_progress_update(&out->progress, &rec, out->real_total);
}

static long peak_rss_kib(void)
{
  struct rusage usage;

  return getrusage(RUSAGE_SELF, &usage) == 0 ? usage.ru_maxrss : -1;
}

/* Prints the run's totals on one key=value line for scripts. */
static void print_summary(const fedc_sim *sim, const run_output *out)
{
  const fedc_sim_stats *st = fedc_sim_get_stats(sim);

  fprintf(stderr, "fedc-sim: done rounds=%llu accuracy=%.4f "
          "simulated_seconds=%.1f real_seconds=%.3f startup_seconds=%.3f "
          "round_seconds=%.3f round_wait_seconds=%.3f "
          "last_round_seconds=%.3f last_round_wait_seconds=%.3f "
          "wait_seconds=%.3f eval_wait_seconds=%.3f train_seconds=%.3f "
          "eval_seconds=%.3f "
          "trainings=%llu trainings_skipped=%llu dropouts=%llu events=%llu "
          "max_live_engines=%zu "
          "client_record_bytes=%zu peak_rss_kib=%ld\n",
          (unsigned long long)st->rounds, out->last_accuracy,
          fedc_sim_clock(sim), st->real_seconds, st->real_startup_seconds,
          st->real_round_seconds, st->real_round_wait_seconds,
          st->real_last_round_seconds, st->real_last_round_wait_seconds,
          st->real_wait_seconds, st->real_eval_wait_seconds,
          st->real_train_seconds, st->real_eval_seconds,
          (unsigned long long)st->trainings,
          (unsigned long long)st->trainings_skipped,
          (unsigned long long)st->dropouts, (unsigned long long)st->events,
          st->max_live_engines, st->client_record_bytes, peak_rss_kib());
}

/* Fails a run that ended without finishing a round, which a time limit
 * below the first round's end can cause, or in which every round was
 * abandoned, and notes a run cut short. */
static int check_rounds(const fedc_args *a, const fedc_sim *sim,
                        const run_output *out)
{
  uint64_t rounds = fedc_sim_get_stats(sim)->rounds;

  if (rounds == 0) {
    fprintf(stderr, "fedc-sim: no round finished in %.1f simulated "
            "seconds; raise max_time or check that enough clients are "
            "online for min_clients\n", fedc_sim_clock(sim));
    return FEDC_ETIMEDOUT;
  }
  if (out->aggregated == 0) {
    fprintf(stderr, "fedc-sim: all %llu rounds were abandoned without "
            "changing the model (the warnings above give the reasons); "
            "check dropout, quorum and round_timeout\n",
            (unsigned long long)rounds);
    return FEDC_ESTATE;
  }
  if (rounds < a->rounds && a->max_time > 0)
    fprintf(stderr, "fedc-sim: warning: %llu of %lu rounds finished "
            "before the max_time of %g simulated seconds\n",
            (unsigned long long)rounds, a->rounds, a->max_time);
  return 0;
}

static int open_metrics(const fedc_args *a, run_output *out)
{
  if (a->metrics == NULL)
    return 0;
  if (strcmp(a->metrics, "-") == 0) {
    out->metrics = stdout;
    return 0;
  }
  out->metrics = fopen(a->metrics, "w");
  if (out->metrics == NULL) {
    fprintf(stderr, "fedc-sim: cannot write %s: %s\n", a->metrics,
            strerror(errno));
    return FEDC_EIO;
  }
  return 0;
}

static int write_plot(const fedc_args *a, const run_output *out)
{
  char title[256];
  int rc;

  if (a->plot == NULL)
    return 0;
  snprintf(title, sizeof(title), "%s, %lu clients, %lu per round, %s",
           a->model, a->clients, a->clients_per_round, a->partition);
  rc = fedc_plot_write(a->plot, out->points, out->count, title,
                       "simulated time");
  if (rc == FEDC_ENOENT)
    fprintf(stderr, "fedc-sim: gnuplot not found; write an .svg plot or "
            "install gnuplot\n");
  else if (rc == FEDC_EINVAL)
    fprintf(stderr, "fedc-sim: cannot write plot %s: the name must end in "
            ".svg or .png\n", a->plot);
  else if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot write plot %s: %s\n", a->plot,
            fedc_strerror(rc));
  return rc;
}

static int simulate(const fedc_args *a, const fedc_dataset *train,
                    const fedc_dataset *test, const fedc_partition *part,
                    const fedc_device_model *devices)
{
  fedc_sim_options opts;
  char reason[256];
  run_output out = { .wall_clock = a->wall_clock, .last_accuracy = NAN };
  fedc_sim_hooks hooks = { .user = &out, .round_finished = on_round };
  fedc_sim *sim = NULL;
  int rc;

  fill_sim_options(a, &opts);
  if (fedc_server_engine_config_check(&opts.server, reason,
                                      sizeof(reason)) < 0) {
    fprintf(stderr, "fedc-sim: invalid server settings: %s\n", reason);
    return FEDC_EINVAL;
  }
  rc = fedc_sim_new(&opts, train, test->n > 0 ? test : NULL, part, devices,
                    &sim);
  if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot set up the simulation: %s\n",
            fedc_strerror(rc));
  if (rc == 0)
    rc = open_metrics(a, &out);
  if (rc == 0) {
    fedc_progress_init(&out.progress, a->progress && out.metrics != stdout
                                      ? stdout : NULL, a->rounds);
    rc = fedc_sim_run(sim, &hooks);
    fedc_progress_finish(&out.progress);
    if (rc == 0)
      rc = out.err;
  }
  if (sim != NULL)
    print_summary(sim, &out);
  if (rc == 0)
    rc = check_rounds(a, sim, &out);
  if (rc == 0)
    rc = write_plot(a, &out);

  if (out.metrics != NULL && out.metrics != stdout)
    fclose(out.metrics);
  free(out.points);
  fedc_sim_free(&sim);
  return rc;
}

static int run_memory(const fedc_args *a)
{
  fedc_dataset train, test;
  fedc_partition part;
  fedc_device_model devices;
  int rc;

  memset(&train, 0, sizeof(train));
  memset(&test, 0, sizeof(test));
  fedc_partition_init(&part);
  fedc_device_model_init(&devices);

  rc = fedc_setup_load_data(a, &train, &test);
  if (rc == 0)
    rc = fedc_setup_partition(a, &train, &part);
  if (rc == 0)
    rc = build_devices(a, &devices);
  if (rc == 0)
    rc = simulate(a, &train, &test, &part, &devices);

  fedc_device_model_close(&devices);
  fedc_partition_close(&part);
  fedc_dataset_close(&test);
  fedc_dataset_close(&train);
  return rc;
}

int main(int argc, char **argv)
{
  fedc_args args;
  enum fedc_log_level level = FEDC_LOG_WARN;
  int rc = fedc_args_parse(&args, argc, argv);

  if (rc < 0)
    return 2;
  if (rc == 1) {
    fedc_args_close(&args);
    return 0;
  }
  fedc_log_parse_level(args.log_level, &level);
  fedc_log_set_level(level);
  if (args.log_file != NULL && fedc_log_open(args.log_file) < 0) {
    fprintf(stderr, "fedc-sim: cannot open log file %s\n", args.log_file);
    fedc_args_close(&args);
    return 2;
  }

  if (strcmp(args.transport, "tls") == 0)
    rc = fedc_tls_run(&args);
  else
    rc = run_memory(&args);
  fedc_args_close(&args);
  return rc == 0 ? 0 : 1;
}
