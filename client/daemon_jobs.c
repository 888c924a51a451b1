/* fedc-client's training and evaluation jobs on the libuv worker pool.
 *
 * Each job builds its own model from the task's spec, so two jobs never
 * share one: a job whose connection was lost may still be running when
 * the next task arrives. The dataset is shared and only read.
 *
 * With trainer = exec, training runs the external trainer (nn/external.h)
 * in the work folder instead, one at a time. Evaluation always uses the
 * built-in forward pass, because the external-trainer contract has no
 * evaluation mode. The server's spec is a fedc spec, so it always builds. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client/daemon_impl.h"
#include "nn/external.h"
#include "nn/model.h"
#include "nn/spec.h"
#include "util/error.h"
#include "util/log.h"

enum job_kind {
  JOB_TRAIN,
  JOB_EVALUATE,
};

struct client_job {
  uv_work_t req;
  fedc_client_daemon *daemon;
  enum job_kind kind;
  uint64_t round;
  fedc_snapshot *model;      /* the model received from the server */
  char model_spec[FEDC_MODEL_SPEC_MAX + 1];
  fedc_train_config config;

  /* Results, written by the worker. */
  int status;
  fedc_tensor_list weights;  /* after training, then emptied */
  fedc_snapshot *update;     /* weights - model, taken by the worker */
  fedc_client_train_result train;
  fedc_client_eval_result eval;
};

typedef struct client_job client_job;

static void job_free(client_job *job)
{
  fedc_snapshot_unref(&job->model);
  fedc_snapshot_unref(&job->update);
  fedc_tensor_list_close(&job->weights);
  free(job);
}

static int load_model(const client_job *job, fedc_model **model)
{
  int rc = fedc_model_new(job->model_spec, job->config.seed, model);

  if (rc == 0)
    rc = fedc_model_set_params(*model, fedc_snapshot_tensors(job->model));
  return rc;
}

/* Turns the trained weights into the update on the worker thread, so the
 * event loop never reads the model: a NaN or Inf in it fails the job. */
static int take_update(client_job *job)
{
  return fedc_snapshot_new_difference(&job->weights,
                                      fedc_snapshot_tensors(job->model),
                                      &job->update);
}

static void train_work(uv_work_t *req)
{
  client_job *job = req->data;
  const fedc_dataset *data = &job->daemon->data;
  fedc_dataset_view view = fedc_dataset_all(data);
  fedc_train_stats stats;
  fedc_model *model = NULL;
  int rc = load_model(job, &model);

  memset(&stats, 0, sizeof(stats));
  if (rc == 0)
    rc = fedc_model_train(model, &view, &job->config, &stats);
  if (rc == 0)
    rc = fedc_model_get_params(model, &job->weights);
  if (rc == 0)
    rc = take_update(job);
  job->status = rc;
  job->train.num_examples = data->n;
  job->train.loss = stats.loss;
  job->train.accuracy = stats.accuracy;
  job->train.steps = stats.steps;
  fedc_model_free(&model);
}

/* Runs trainer_command on the job's model. Reads only the daemon's
 * options, paths and dataset size, which stay fixed while jobs run. */
static void external_train_work(uv_work_t *req)
{
  client_job *job = req->data;
  const fedc_client_daemon *d = job->daemon;
  const fedc_client_options *o = d->options;
  fedc_external_config config = {
    .command = o->trainer_command,
    .work_dir = d->work_dir,
    .timeout_ms = (uint32_t)(o->trainer_timeout * 1000),
  };
  fedc_external_task task = {
    .spec = job->model_spec,
    .data_path = d->data_path,
    .round = job->round,
    .train = &job->config,
  };
  fedc_train_stats stats;

  memset(&stats, 0, sizeof(stats));
  job->status = fedc_external_train(&config, &task,
                                    fedc_snapshot_tensors(job->model),
                                    &job->weights, &stats);
  if (job->status == 0)
    job->status = take_update(job);
  /* The FedAvg weight is the local data size, as with the built-in
   * trainer, not the examples the command reports over all epochs. */
  job->train.num_examples = d->data.n;
  job->train.loss = stats.loss;
  job->train.accuracy = stats.accuracy;
  job->train.steps = stats.steps;
}

static void evaluate_work(uv_work_t *req)
{
  client_job *job = req->data;
  fedc_dataset_view view = fedc_dataset_all(&job->daemon->data);
  fedc_eval_stats stats;
  fedc_model *model = NULL;
  int rc = load_model(job, &model);

  if (rc == 0)
    rc = fedc_model_evaluate(model, &view, &stats);
  job->status = rc;
  if (rc == 0) {
    job->eval.num_examples = stats.examples;
    job->eval.loss = stats.loss;
    job->eval.accuracy = stats.accuracy;
  }
  fedc_model_free(&model);
}

static int report_training(fedc_client_daemon *d, client_job *job, int status)
{
  uint64_t now = uv_now(d->loop);

  if (status < 0) {
    fedc_warn(LOG_COMPONENT, "local training failed round=%" PRIu64 ": %s",
              job->round, fedc_strerror(status));
    return fedc_client_engine_trained(d->engine, now, job->round, status,
                                      NULL, NULL, &d->actions);
  }
  fedc_info(LOG_COMPONENT, "local training done round=%" PRIu64
            " examples=%" PRIu64 " steps=%" PRIu64 " loss=%.4f accuracy=%.4f",
            job->round, job->train.num_examples, job->train.steps,
            job->train.loss, job->train.accuracy);
  return fedc_client_engine_trained_update(d->engine, now, job->round,
                                           job->update, &job->train,
                                           &d->actions);
}

static int report_evaluation(fedc_client_daemon *d, client_job *job,
                             int status)
{
  if (status < 0)
    fedc_warn(LOG_COMPONENT, "local evaluation failed round=%" PRIu64 ": %s",
              job->round, fedc_strerror(status));
  else
    fedc_info(LOG_COMPONENT, "local evaluation done round=%" PRIu64
              " examples=%" PRIu64 " loss=%.4f accuracy=%.4f", job->round,
              job->eval.num_examples, job->eval.loss, job->eval.accuracy);
  return fedc_client_engine_evaluated(d->engine, uv_now(d->loop), job->round,
                                      status < 0 ? NULL : &job->eval,
                                      &d->actions);
}

static void start_job(fedc_client_daemon *d, client_job *job,
                      uv_work_cb work);

/* Starts the training that waited for the external trainer, unless the
 * daemon is stopping or the engine has moved past its task (a Cancel or a
 * lost connection), in which case its result would be dropped anyway. */
static void start_waiting(fedc_client_daemon *d)
{
  client_job *job = d->external_waiting;

  d->external_waiting = NULL;
  if (job == NULL)
    return;
  if (d->stopping ||
      fedc_client_engine_state(d->engine) != FEDC_CLIENT_TRAINING ||
      fedc_client_engine_task_round(d->engine) != job->round) {
    fedc_info(LOG_COMPONENT, "skipping the waiting training round=%" PRIu64
              ": its task is no longer current", job->round);
    job_free(job);
    return;
  }
  d->external_running = true;
  start_job(d, job, external_train_work);
}

static void job_done(uv_work_t *req, int status)
{
  client_job *job = req->data;
  fedc_client_daemon *d = job->daemon;
  int result = status < 0 ? FEDC_EIO : job->status;
  bool external = d->external && job->kind == JOB_TRAIN;
  int rc = 0;

  d->jobs--;
  if (external)
    d->external_running = false;
  /* After a Goodbye or a signal nobody waits for the result. */
  if (!d->stopping) {
    if (job->kind == JOB_TRAIN)
      rc = report_training(d, job, result);
    else
      rc = report_evaluation(d, job, result);
  }
  job_free(job);
  fedc_client_daemon_drain(d, rc);
  if (external && !d->external_running)
    start_waiting(d);
}

static void start_job(fedc_client_daemon *d, client_job *job,
                      uv_work_cb work)
{
  int rc;

  job->daemon = d;
  job->req.data = job;
  d->jobs++;
  rc = uv_queue_work(d->loop, &job->req, work, job_done);
  if (rc < 0) {
    job->status = FEDC_EIO;
    job_done(&job->req, rc);
  }
}

/* Runs the external trainer now, or makes job wait for the one running.
 * Only the newest task can still be current, so it replaces a waiter. */
static void start_external(fedc_client_daemon *d, client_job *job)
{
  job->daemon = d;
  if (!d->external_running) {
    d->external_running = true;
    start_job(d, job, external_train_work);
    return;
  }
  if (d->external_waiting != NULL) {
    fedc_info(LOG_COMPONENT, "dropping the waiting training round=%" PRIu64
              ": round=%" PRIu64 " replaces it",
              d->external_waiting->round, job->round);
    job_free(d->external_waiting);
  }
  fedc_info(LOG_COMPONENT, "training round=%" PRIu64 " waits for the "
            "external trainer of an earlier task", job->round);
  d->external_waiting = job;
}

void fedc_client_start_training(fedc_client_daemon *d,
                                fedc_client_action *action)
{
  client_job *job = calloc(1, sizeof(*job));
  int rc;

  if (job == NULL) {
    rc = fedc_client_engine_trained(d->engine, uv_now(d->loop),
                                    action->train.round, FEDC_ENOMEM, NULL,
                                    NULL, &d->actions);
    d->exit_status = rc < 0 ? 1 : d->exit_status;
    return;
  }
  job->kind = JOB_TRAIN;
  job->round = action->train.round;
  job->model = action->train.model;
  action->train.model = NULL;
  job->config = action->train.config;
  memcpy(job->model_spec, action->train.model_spec, sizeof(job->model_spec));
  fedc_tensor_list_init(&job->weights);
  fedc_info(LOG_COMPONENT, "training round=%" PRIu64 " model=%s trainer=%s "
            "epochs=%" PRIu32 " batch_size=%" PRIu32 " learning_rate=%g",
            job->round, job->model_spec, d->options->trainer,
            job->config.local_epochs, job->config.batch_size,
            (double)job->config.learning_rate);
  if (d->external)
    start_external(d, job);
  else
    start_job(d, job, train_work);
}

void fedc_client_start_evaluation(fedc_client_daemon *d,
                                  fedc_client_action *action)
{
  client_job *job = calloc(1, sizeof(*job));
  int rc;

  if (job == NULL) {
    rc = fedc_client_engine_evaluated(d->engine, uv_now(d->loop),
                                      action->evaluate.round, NULL,
                                      &d->actions);
    d->exit_status = rc < 0 ? 1 : d->exit_status;
    return;
  }
  job->kind = JOB_EVALUATE;
  job->round = action->evaluate.round;
  job->model = action->evaluate.model;
  action->evaluate.model = NULL;
  memcpy(job->model_spec, action->evaluate.model_spec,
         sizeof(job->model_spec));
  fedc_tensor_list_init(&job->weights);
  start_job(d, job, evaluate_work);
}

int fedc_client_check_task(void *context, const char *model_spec,
                           char *reason, size_t size)
{
  const fedc_client_daemon *d = context;
  enum fedc_loss loss;
  fedc_net *net = NULL;
  size_t expected;
  int rc = fedc_spec_build(model_spec, &net, &loss);

  if (rc < 0) {
    snprintf(reason, size, "invalid model spec from the server: %s",
             fedc_strerror(rc));
    return rc;
  }
  expected = fedc_layer_shape_size(&net->in);
  fedc_net_free(&net);
  if (expected != d->data.dim) {
    snprintf(reason, size, "data has %" PRIu32 " features, model expects "
             "%zu", d->data.dim, expected);
    return FEDC_ESHAPE;
  }
  return 0;
}

/* --- trainer = exec setup -------------------------------------------------- */

/* Stores the absolute form of the option's path in *out (malloc'ed). */
static int absolute_path(const char *option, const char *path, char **out)
{
  *out = realpath(path, NULL);
  if (*out == NULL) {
    fedc_error(LOG_COMPONENT, "cannot resolve %s %s: %s", option, path,
               strerror(errno));
    return errno == ENOMEM ? FEDC_ENOMEM : FEDC_EIO;
  }
  return 0;
}

/* Creates the work folder (one level, mode 0700) unless it exists. */
static int make_work_dir(const char *path)
{
  struct stat st;

  if (mkdir(path, 0700) == 0) {
    fedc_info(LOG_COMPONENT, "created work_dir %s", path);
    return 0;
  }
  if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return 0;
  fedc_error(LOG_COMPONENT, "cannot create work_dir %s: %s", path,
             errno == EEXIST ? "a file of that name exists" : strerror(errno));
  return FEDC_EIO;
}

int fedc_client_jobs_init(fedc_client_daemon *d)
{
  const fedc_client_options *o = d->options;
  int rc;

  d->external = strcmp(o->trainer, "exec") == 0;
  if (!d->external) {
    fedc_info(LOG_COMPONENT, "trainer=builtin");
    return 0;
  }
  rc = make_work_dir(o->work_dir);
  if (rc == 0)
    rc = absolute_path("work_dir", o->work_dir, &d->work_dir);
  if (rc == 0)
    rc = absolute_path("data", o->data, &d->data_path);
  if (rc < 0)
    return rc;
  fedc_info(LOG_COMPONENT, "trainer=exec work_dir=%s timeout=%lus "
            "command=\"%s\"", d->work_dir, o->trainer_timeout,
            o->trainer_command);
  return 0;
}

void fedc_client_jobs_close(fedc_client_daemon *d)
{
  if (d->external_waiting != NULL)
    job_free(d->external_waiting);
  d->external_waiting = NULL;
  free(d->work_dir);
  free(d->data_path);
  d->work_dir = NULL;
  d->data_path = NULL;
}
