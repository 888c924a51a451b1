/* The simulator's lifecycle and event loop. */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim_impl.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

/* Stream id of the first connection times, apart from other draws. */
#define CONNECT_STREAM UINT64_C(0x636f6e6e656374)

void fedc_sim_options_default(fedc_sim_options *opts)
{
  memset(opts, 0, sizeof(*opts));
  opts->workers = fedc_pool_default_workers();
  opts->reference_flops = 1e9;
  opts->latency_seconds = 0.05;
  opts->reconnect_seconds = 60.0;
  opts->connect_window_seconds = 1.0;
  opts->stall_seconds = 7 * 86400.0;
  fedc_server_engine_config_default(&opts->server);
}

double fedc_sim_real_now(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t fedc_sim_now_ms(const fedc_sim *sim)
{
  return (uint64_t)llround(fedc_eventq_now(&sim->events) * 1000.0);
}

uint64_t fedc_sim_conn_id(uint32_t generation, uint32_t client)
{
  return ((uint64_t)generation << 32) | client;
}

uint32_t fedc_sim_conn_client(uint64_t conn)
{
  return (uint32_t)(conn & UINT32_MAX);
}

int fedc_sim_conn_open(const fedc_sim *sim, uint64_t conn)
{
  uint32_t client = fedc_sim_conn_client(conn);
  const sim_client *c;

  if (client >= sim->client_count)
    return 0;
  c = &sim->clients[client];
  return (c->flags & SIM_CONNECTED) && c->conn == (uint32_t)(conn >> 32);
}

void fedc_sim_push(fedc_sim *sim, double time, enum sim_event_kind kind,
                   uint32_t client, uint64_t arg)
{
  int rc = fedc_eventq_push(&sim->events, time, kind, client, arg);

  if (rc < 0)
    fedc_sim_fail(sim, rc, "schedule an event");
}

void fedc_sim_fail(fedc_sim *sim, int err, const char *what)
{
  if (sim->err != 0)
    return;
  sim->err = err;
  fedc_error("sim", "failed to %s at t=%.3f: %s", what,
             fedc_eventq_now(&sim->events), fedc_strerror(err));
}

static int check_options(const fedc_sim_options *opts,
                         const fedc_dataset *train,
                         const fedc_partition *partition)
{
  if (train == NULL || partition == NULL || partition->clients == 0)
    return FEDC_EINVAL;
  if (opts->server.model_spec == NULL || opts->server.model_spec[0] == '\0')
    return FEDC_EINVAL;
  if (!(opts->reference_flops > 0) || !isfinite(opts->reference_flops))
    return FEDC_EINVAL;
  if (!(opts->latency_seconds >= 0) || !(opts->reconnect_seconds > 0) ||
      !(opts->connect_window_seconds >= 0) || !(opts->stall_seconds >= 0) ||
      !(opts->max_simulated_seconds >= 0))
    return FEDC_EINVAL;
  if (partition->clients >= SIM_NO_SLOT)
    return FEDC_EINVAL;
  return fedc_attack_check(&opts->attack);
}

/* Builds the initial global model from the spec and the seed. */
static int initial_model(const fedc_sim_options *opts,
                         const fedc_dataset *train, fedc_tensor_list *out)
{
  fedc_model *model = NULL;
  int rc = fedc_model_new(opts->server.model_spec, opts->seed, &model);

  if (rc == 0 && fedc_model_input_dim(model) != train->dim) {
    fedc_error("sim", "model %s takes %u features, the data has %u",
               opts->server.model_spec, fedc_model_input_dim(model),
               train->dim);
    rc = FEDC_EINVAL;
  }
  if (rc == 0)
    rc = fedc_model_get_params(model, out);
  fedc_model_free(&model);
  return rc;
}

static int init_workers(fedc_sim *sim)
{
  int rc;

  /* Parallelism comes from the pool; one BLAS thread per job keeps the
   * threads from competing and the results independent of the pool size. */
  fedc_nn_set_threads(1);
  rc = fedc_pool_new(sim->opts.workers, &sim->pool);
  if (rc < 0)
    return rc;
  sim->models = calloc(fedc_pool_slots(sim->pool), sizeof(*sim->models));
  return sim->models != NULL ? 0 : FEDC_ENOMEM;
}

static int init_test_rows(fedc_sim *sim)
{
  if (sim->test == NULL)
    return 0;
  sim->test_rows = malloc((sim->test->n ? sim->test->n : 1) *
                          sizeof(*sim->test_rows));
  if (sim->test_rows == NULL)
    return FEDC_ENOMEM;
  for (uint64_t i = 0; i < sim->test->n; i++)
    sim->test_rows[i] = (uint32_t)i;
  return 0;
}

static int init_sim(fedc_sim *sim, const fedc_device_model *devices)
{
  fedc_tensor_list model;
  int rc;

  fedc_tensor_list_init(&model);
  rc = initial_model(&sim->opts, sim->train, &model);
  if (rc == 0)
    rc = fedc_server_engine_new(&sim->opts.server, &model, 0, NULL,
                                &sim->server);
  fedc_tensor_list_close(&model);
  if (rc == 0)
    rc = init_workers(sim);
  if (rc == 0)
    rc = init_test_rows(sim);
  if (rc == 0)
    rc = fedc_sim_client_init(sim, devices);
  return rc;
}

int fedc_sim_new(const fedc_sim_options *opts, const fedc_dataset *train,
                 const fedc_dataset *test, const fedc_partition *partition,
                 const fedc_device_model *devices, fedc_sim **out)
{
  fedc_sim *sim;
  int rc;

  *out = NULL;
  rc = check_options(opts, train, partition);
  if (rc < 0)
    return rc;
  sim = calloc(1, sizeof(*sim));
  if (sim == NULL)
    return FEDC_ENOMEM;
  sim->opts = *opts;
  snprintf(sim->model_spec, sizeof(sim->model_spec), "%s",
           opts->server.model_spec);
  snprintf(sim->server_id, sizeof(sim->server_id), "%s",
           opts->server.server_id ? opts->server.server_id : "");
  sim->opts.server.model_spec = sim->model_spec;
  sim->opts.server.server_id = sim->server_id;
  sim->train = train;
  sim->test = test;
  sim->partition = partition;
  sim->client_count = partition->clients;
  sim->next_conn = 1;
  sim->free_slot = SIM_NO_SLOT;
  sim->free_flight = SIM_NO_SLOT;
  sim->stats.client_record_bytes = sizeof(sim_client);
  fedc_eventq_init(&sim->events);

  rc = init_sim(sim, devices);
  if (rc < 0) {
    fedc_sim_free(&sim);
    return rc;
  }
  *out = sim;
  return 0;
}

/* Pops every event left and frees what it owns. */
static void drain_events(fedc_sim *sim)
{
  fedc_event ev;

  while (fedc_eventq_pop(&sim->events, &ev) == 1)
    fedc_sim_train_drain_event(sim, &ev);
}

void fedc_sim_free(fedc_sim **sim_ptr)
{
  fedc_sim *sim = sim_ptr != NULL ? *sim_ptr : NULL;

  if (sim == NULL)
    return;
  if (sim->pool != NULL)
    drain_events(sim);
  fedc_eventq_close(&sim->events);
  fedc_sim_flight_close(sim);
  fedc_sim_train_close(sim);
  if (sim->clients != NULL)
    fedc_sim_client_close(sim);
  fedc_server_engine_free(&sim->server);
  free(sim->test_rows);
  free(sim);
  *sim_ptr = NULL;
}

/* Returns client's first connection time, uniform over the connect
 * window, so that the clients' handshakes are spread out rather than all
 * holding an engine at the same instant. */
static double first_connect_time(const fedc_sim *sim, uint32_t client)
{
  fedc_rng rng;

  fedc_rng_seed2(&rng, sim->opts.seed ^ CONNECT_STREAM, client);
  return fedc_rng_uniform(&rng) * sim->opts.connect_window_seconds;
}

/* Puts every client in its availability state at time 0, schedules its
 * first connection and its first availability change, and the server's
 * start at the end of the connect window. */
static void schedule_clients(fedc_sim *sim)
{
  for (uint32_t i = 0; i < sim->client_count && sim->err == 0; i++) {
    sim_client *c = &sim->clients[i];
    double change = fedc_device_next_change(&c->device, 0.0);

    if (fedc_device_online(&c->device, 0.0))
      c->flags |= SIM_ONLINE;
    if (isfinite(change))
      fedc_sim_push(sim, change, SIM_EV_AVAILABILITY, i, 0);
    c->flags |= SIM_RECONNECT_DUE;
    fedc_sim_push(sim, first_connect_time(sim, i), SIM_EV_CONNECT, i, 0);
  }
  fedc_sim_push(sim, sim->opts.connect_window_seconds, SIM_EV_START,
                UINT32_MAX, 0);
}

/* Starts the server once every Hello of the first connections has
 * arrived, so that the first cohort is drawn from all of them rather than
 * from the earliest. Every first connection happened before the window's
 * end, so by then last_arrival covers all their Hellos. */
static void on_start(fedc_sim *sim)
{
  double now = fedc_eventq_now(&sim->events);

  if (sim->last_arrival > now)
    fedc_sim_push(sim, sim->last_arrival, SIM_EV_START, UINT32_MAX, 0);
  else
    fedc_sim_server_start(sim);
}

static void on_trained(fedc_sim *sim, const fedc_event *ev)
{
  sim_train_job *job = (sim_train_job *)(uintptr_t)ev->arg;

  fedc_sim_train_wait(sim, job);
  fedc_sim_client_trained(sim, job);
  fedc_sim_train_free(&job);
}

static void on_connect(fedc_sim *sim, uint32_t client)
{
  sim->clients[client].flags &= (uint8_t)~SIM_RECONNECT_DUE;
  fedc_sim_client_connect(sim, client);
}

static void dispatch(fedc_sim *sim, const fedc_event *ev)
{
  switch ((enum sim_event_kind)ev->kind) {
  case SIM_EV_START:
    on_start(sim);
    break;
  case SIM_EV_CONNECT:
    on_connect(sim, ev->client);
    break;
  case SIM_EV_AVAILABILITY:
    fedc_sim_client_availability(sim, ev->client);
    break;
  case SIM_EV_TO_SERVER:
    fedc_sim_flight_deliver(sim, (uint32_t)ev->arg, false);
    break;
  case SIM_EV_TO_CLIENT:
    fedc_sim_flight_deliver(sim, (uint32_t)ev->arg, true);
    break;
  case SIM_EV_TRAINED:
    on_trained(sim, ev);
    break;
  case SIM_EV_DROPOUT:
    fedc_sim_client_dropout(sim, ev->arg);
    break;
  case SIM_EV_TIMER:
    fedc_sim_server_timer(sim, ev->arg);
    break;
  case SIM_EV_EVALUATED:
    fedc_sim_eval_finish(sim, ev->arg, true);
    break;
  }
}

/* Fails the run when no round has finished for stall_seconds of virtual
 * time. Without this, a scenario in which too few clients are ever online
 * together would advance the clock through availability changes forever. */
static int stalled(fedc_sim *sim, double time)
{
  double stall = sim->opts.stall_seconds;

  if (stall <= 0 || time - sim->last_round_clock <= stall)
    return 0;
  fedc_error("sim", "no round finished in %.0f simulated seconds, since "
             "t=%.0f (%llu trainings, %llu dropouts so far); are enough "
             "clients online for min_clients, and can they finish a task "
             "within round_timeout? --stall-time sets this limit", stall,
             sim->last_round_clock, (unsigned long long)sim->stats.trainings,
             (unsigned long long)sim->stats.dropouts);
  sim->err = FEDC_ETIMEDOUT;
  return 1;
}

/* Fails the run when the event queue runs dry before the server is done.
 * No client can then connect, train or come online again, and no server
 * timer is pending, so no further round can ever finish: every client
 * offline for good, or fewer clients than min_clients, for example. */
static void check_ran_dry(fedc_sim *sim)
{
  if (sim->done || sim->err != 0)
    return;
  fedc_error("sim", "no event left at t=%.3f after %llu rounds, so no "
             "round can start again; are min_clients clients ever online?",
             fedc_sim_clock(sim), (unsigned long long)sim->stats.rounds);
  sim->err = FEDC_ETIMEDOUT;
}

int fedc_sim_run(fedc_sim *sim, const fedc_sim_hooks *hooks)
{
  double limit = sim->opts.max_simulated_seconds;
  fedc_event ev;

  sim->hooks = hooks;
  sim->real_start = fedc_sim_real_now();
  schedule_clients(sim);

  while (!sim->done && sim->err == 0) {
    if (fedc_eventq_pop(&sim->events, &ev) != 1) {
      check_ran_dry(sim);
      break;
    }
    if ((limit > 0 && ev.time > limit) || stalled(sim, ev.time)) {
      if (sim->err == 0)
        fedc_info("sim", "stopped at the time limit t=%.3f", limit);
      fedc_sim_train_drain_event(sim, &ev);
      break;
    }
    dispatch(sim, &ev);
    sim->stats.events++;
  }
  sim->stats.real_seconds = fedc_sim_real_now() - sim->real_start;
  sim->hooks = NULL;
  return sim->err;
}

const fedc_sim_stats *fedc_sim_get_stats(const fedc_sim *sim)
{
  return &sim->stats;
}

const fedc_server_engine *fedc_sim_server(const fedc_sim *sim)
{
  return sim->server;
}

double fedc_sim_clock(const fedc_sim *sim)
{
  return fedc_eventq_now(&sim->events);
}

/* Partitions copies x n virtual rows, then maps each back to its row of
 * train, so copy k of row r is virtual row k x n + r. */
int fedc_sim_partition(fedc_partition *p, const fedc_dataset *train,
                       const fedc_partition_options *opts, uint32_t copies)
{
  fedc_dataset virtual_rows = *train;
  uint64_t n = train->n;
  int32_t *labels;
  int rc;

  if (copies <= 1)
    return fedc_partition_dataset(p, train, opts);
  if (n == 0 || n > FEDC_DATASET_MAX_ROWS / copies)
    return FEDC_EINVAL;

  labels = malloc(n * copies * sizeof(*labels));
  if (labels == NULL)
    return FEDC_ENOMEM;
  for (uint64_t k = 0; k < copies; k++)
    memcpy(labels + k * n, train->y, n * sizeof(*labels));
  virtual_rows.n = n * copies;
  virtual_rows.y = labels;
  virtual_rows.x = NULL;

  rc = fedc_partition_dataset(p, &virtual_rows, opts);
  free(labels);
  if (rc < 0)
    return rc;
  for (uint64_t i = 0; i < n * copies; i++)
    p->rows[i] = (uint32_t)(p->rows[i] % n);
  return 0;
}
