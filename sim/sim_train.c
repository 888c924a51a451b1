/* Local training and the server's evaluation, run on the worker pool.
 *
 * A job is submitted when its virtual start comes and waited for when its
 * virtual end comes, so the pool works ahead while the event loop moves
 * on. The results enter the engines in virtual-time order, whatever order
 * the threads finish in. Each pool thread has its own model instance, and
 * the global model is shared read-only through its snapshot. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_impl.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

/* Floating-point operations per parameter and example of one SGD step:
 * forward (2), backward to activations (2) and to weights (2). An
 * estimate for dense layers, used only for the modelled time. */
#define TRAIN_FLOPS_PER_PARAM 6.0

/* Rows per evaluation job. Fixed, so that the order in which partial
 * results are summed does not depend on the number of workers. */
#define EVAL_CHUNK_ROWS 2500

/* Stream ids for the per-round draws, apart from the device draws. */
#define DROPOUT_STREAM UINT64_C(0x64726f706f7574)
#define SHUFFLE_STREAM UINT64_C(0x73687566666c65)

typedef struct sim_eval_chunk {
  fedc_pool_job pool_job;
  fedc_sim *sim;
  const struct sim_eval_batch *batch;
  fedc_dataset_view view;
  fedc_eval_stats stats;
  int status;
  double real_seconds;
} sim_eval_chunk;

typedef struct sim_eval_batch {
  uint64_t round;
  fedc_snapshot *model;       /* owned reference */
  size_t count;
  sim_eval_chunk chunks[];
} sim_eval_batch;

/* Returns the pool slot's model for spec, building it on first use. */
static fedc_model *slot_model(fedc_sim *sim, unsigned slot, const char *spec,
                              int *status)
{
  fedc_model **m = &sim->models[slot];

  if (*m != NULL && strcmp(fedc_model_spec(*m), spec) != 0)
    fedc_model_free(m);
  if (*m == NULL)
    *status = fedc_model_new(spec, 0, m);
  return *m;
}

static void run_train(void *arg, unsigned slot)
{
  sim_train_job *job = arg;
  double start = fedc_sim_real_now();
  int status = 0;
  fedc_model *model = slot_model(job->sim, slot, job->model_spec, &status);

  if (status == 0)
    status = fedc_model_set_params(model, fedc_snapshot_tensors(job->global));
  if (status == 0)
    status = fedc_model_train(model, &job->view, &job->config, &job->stats);
  if (status == 0)
    status = fedc_model_get_params(model, &job->weights);
  if (status == 0)
    status = fedc_attack_apply(&job->sim->opts.attack,
                               fedc_sim_conn_client(job->conn),
                               fedc_snapshot_tensors(job->global),
                               &job->weights);
  /* The update is taken here, where the weights are still in this core's
   * cache, rather than by the client engine on the event loop. */
  if (status == 0)
    status = fedc_snapshot_new_difference(&job->weights,
                                          fedc_snapshot_tensors(job->global),
                                          &job->update);
  job->status = status;
  job->real_seconds = fedc_sim_real_now() - start;
}

static uint64_t param_count(const fedc_snapshot *model)
{
  const fedc_tensor_list *list = fedc_snapshot_tensors(model);
  uint64_t n = 0;

  for (size_t i = 0; i < list->count; i++)
    n += fedc_tensor_numel(&list->items[i]);
  return n;
}

/* Returns the examples a training of rows rows will process. */
static uint64_t planned_examples(uint64_t rows, const fedc_train_config *c)
{
  uint64_t examples = rows * (c->local_epochs ? c->local_epochs : 1);
  uint64_t cap = (uint64_t)c->max_steps * c->batch_size;

  return c->max_steps > 0 && cap < examples ? cap : examples;
}

/* Draws whether client leaves during this round's task. */
static bool draws_dropout(const fedc_sim *sim, uint32_t client,
                          uint64_t round, double *when)
{
  fedc_rng rng;
  double u;

  fedc_rng_seed2(&rng, sim->opts.seed ^ DROPOUT_STREAM,
                 (round << 32) | client);
  u = fedc_rng_uniform(&rng);
  *when = fedc_rng_uniform(&rng);
  return u < sim->clients[client].device.dropout;
}

/* Gives each client of a round its own shuffling seed: the server sends
 * one seed per round to the whole cohort. */
static uint64_t client_seed(uint64_t round_seed, uint32_t client)
{
  fedc_rng rng;

  fedc_rng_seed2(&rng, round_seed ^ SHUFFLE_STREAM, client);
  return fedc_rng_next(&rng);
}

static void start_dropout(fedc_sim *sim, uint32_t client, uint64_t conn,
                          double busy_seconds, double fraction)
{
  double now = fedc_eventq_now(&sim->events);

  fedc_sim_push(sim, now + fraction * busy_seconds, SIM_EV_DROPOUT, client,
                conn);
}

void fedc_sim_train_start(fedc_sim *sim, uint32_t client,
                          fedc_client_action *a)
{
  const sim_client *c = &sim->clients[client];
  uint64_t conn = fedc_sim_conn_id(c->conn, client);
  uint64_t params = param_count(a->train.model);
  fedc_dataset_view view = fedc_partition_view(sim->partition, sim->train,
                                               client);
  double flops = TRAIN_FLOPS_PER_PARAM * (double)params *
                 (double)planned_examples(view.n, &a->train.config);
  double seconds = fedc_device_compute_seconds(&c->device, flops,
                                               sim->opts.reference_flops);
  double upload = fedc_device_transfer_seconds(&c->device, params * 4, 1);
  double fraction;
  sim_train_job *job;

  if (draws_dropout(sim, client, a->train.round, &fraction)) {
    start_dropout(sim, client, conn, seconds + upload, fraction);
    return;
  }

  job = calloc(1, sizeof(*job));
  if (job == NULL) {
    fedc_sim_fail(sim, FEDC_ENOMEM, "allocate a training job");
    return;
  }
  job->sim = sim;
  job->conn = conn;
  job->round = a->train.round;
  job->global = a->train.model;
  a->train.model = NULL;
  job->view = view;
  job->config = a->train.config;
  job->config.seed = client_seed(job->config.seed, client);
  snprintf(job->model_spec, sizeof(job->model_spec), "%s",
           a->train.model_spec);
  fedc_tensor_list_init(&job->weights);

  sim->slots[c->slot].jobs++;
  sim->slots[c->slot].job = job;
  sim->stats.trainings++;
  fedc_pool_submit(sim->pool, &job->pool_job, run_train, job);
  fedc_sim_push(sim, fedc_eventq_now(&sim->events) + seconds, SIM_EV_TRAINED,
                client, (uint64_t)(uintptr_t)job);
}

void fedc_sim_train_wait(fedc_sim *sim, sim_train_job *job)
{
  double start = fedc_sim_real_now();

  fedc_pool_wait(sim->pool, &job->pool_job);
  sim->stats.real_wait_seconds += fedc_sim_real_now() - start;
  sim->stats.real_train_seconds += job->real_seconds;
  /* FEDC_ESTALE marks a job skipped because its task was dropped. */
  if (job->status < 0 && job->status != FEDC_ESTALE)
    fedc_warn("sim", "local training failed client=%u round=%llu: %s",
              fedc_sim_conn_client(job->conn),
              (unsigned long long)job->round, fedc_strerror(job->status));
}

void fedc_sim_train_free(sim_train_job **job)
{
  if (job == NULL || *job == NULL)
    return;
  fedc_snapshot_unref(&(*job)->global);
  fedc_snapshot_unref(&(*job)->update);
  fedc_tensor_list_close(&(*job)->weights);
  free(*job);
  *job = NULL;
}

static void run_eval(void *arg, unsigned slot)
{
  sim_eval_chunk *chunk = arg;
  const char *spec = chunk->sim->opts.server.model_spec;
  double start = fedc_sim_real_now();
  int status = 0;
  fedc_model *model = slot_model(chunk->sim, slot, spec, &status);

  if (status == 0)
    status = fedc_model_set_params(model,
                                   fedc_snapshot_tensors(chunk->batch->model));
  if (status == 0)
    status = fedc_model_evaluate(model, &chunk->view, &chunk->stats);
  chunk->status = status;
  chunk->real_seconds = fedc_sim_real_now() - start;
}

void fedc_sim_eval_start(fedc_sim *sim, uint64_t round, fedc_snapshot *model)
{
  uint64_t rows = sim->test != NULL ? sim->test->n : 0;
  size_t count = (size_t)((rows + EVAL_CHUNK_ROWS - 1) / EVAL_CHUNK_ROWS);
  sim_eval_batch *batch = calloc(1, sizeof(*batch) +
                                 count * sizeof(batch->chunks[0]));

  if (batch == NULL) {
    fedc_snapshot_unref(&model);
    fedc_sim_fail(sim, FEDC_ENOMEM, "allocate an evaluation");
    return;
  }
  batch->round = round;
  batch->model = model;
  batch->count = count;
  for (size_t i = 0; i < count; i++) {
    sim_eval_chunk *chunk = &batch->chunks[i];
    uint64_t first = (uint64_t)i * EVAL_CHUNK_ROWS;

    chunk->sim = sim;
    chunk->batch = batch;
    chunk->view = (fedc_dataset_view){
      .base = sim->test, .rows = sim->test_rows + first,
      .n = rows - first < EVAL_CHUNK_ROWS ? rows - first : EVAL_CHUNK_ROWS,
    };
    fedc_pool_submit(sim->pool, &chunk->pool_job, run_eval, chunk);
  }
  fedc_sim_push(sim, fedc_eventq_now(&sim->events), SIM_EV_EVALUATED,
                UINT32_MAX, (uint64_t)(uintptr_t)batch);
}

/* Waits for every chunk and combines them, in chunk order, into result.
 * Returns 0, or the first chunk's error. */
static int combine_chunks(fedc_sim *sim, sim_eval_batch *batch,
                          fedc_server_eval *result)
{
  double loss = 0.0, correct = 0.0, examples = 0.0;
  double start = fedc_sim_real_now();
  int status = 0;

  for (size_t i = 0; i < batch->count; i++) {
    const sim_eval_chunk *chunk = &batch->chunks[i];
    double n;

    fedc_pool_wait(sim->pool, &batch->chunks[i].pool_job);
    sim->stats.real_eval_seconds += chunk->real_seconds;
    if (chunk->status < 0 && status == 0)
      status = chunk->status;
    n = (double)chunk->stats.examples;
    loss += chunk->stats.loss * n;
    correct += chunk->stats.accuracy * n;
    examples += n;
  }
  sim->stats.real_wait_seconds += fedc_sim_real_now() - start;
  sim->stats.real_eval_wait_seconds += fedc_sim_real_now() - start;
  if (status == 0 && examples == 0.0)
    status = FEDC_EINVAL;
  result->loss = examples > 0.0 ? loss / examples : NAN;
  result->accuracy = examples > 0.0 ? correct / examples : NAN;
  return status;
}

void fedc_sim_eval_finish(fedc_sim *sim, uint64_t arg, bool deliver)
{
  sim_eval_batch *batch = (sim_eval_batch *)(uintptr_t)arg;
  fedc_server_eval result;
  int status = combine_chunks(sim, batch, &result);

  if (status < 0 && batch->count > 0)
    fedc_warn("sim", "evaluation failed round=%llu: %s",
              (unsigned long long)batch->round, fedc_strerror(status));
  if (deliver)
    fedc_sim_server_evaluated(sim, batch->round, status == 0 ? &result
                                                             : NULL);
  fedc_snapshot_unref(&batch->model);
  free(batch);
}

void fedc_sim_train_drain_event(fedc_sim *sim, const fedc_event *ev)
{
  if (ev->kind == SIM_EV_TRAINED) {
    sim_train_job *job = (sim_train_job *)(uintptr_t)ev->arg;

    fedc_pool_wait(sim->pool, &job->pool_job);
    fedc_sim_train_free(&job);
  } else if (ev->kind == SIM_EV_EVALUATED) {
    fedc_sim_eval_finish(sim, ev->arg, false);
  }
}

void fedc_sim_train_close(fedc_sim *sim)
{
  unsigned slots = sim->pool != NULL ? fedc_pool_slots(sim->pool) : 0;

  fedc_pool_free(&sim->pool);
  for (unsigned i = 0; i < slots; i++)
    fedc_model_free(&sim->models[i]);
  free(sim->models);
  sim->models = NULL;
}
