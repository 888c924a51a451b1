/* fedc-client's training and evaluation jobs on the libuv worker pool.
 *
 * Each job builds its own model from the task's spec, so two jobs never
 * share one: a job whose connection was lost may still be running when
 * the next task arrives. The dataset is shared and only read. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/daemon_impl.h"
#include "nn/model.h"
#include "util/error.h"
#include "util/log.h"

enum job_kind {
  JOB_TRAIN,
  JOB_EVALUATE,
};

typedef struct client_job {
  uv_work_t req;
  fedc_client_daemon *daemon;
  enum job_kind kind;
  uint64_t round;
  fedc_snapshot *model;      /* the model received from the server */
  char model_spec[FEDC_MODEL_SPEC_MAX + 1];
  fedc_train_config config;

  /* Results, written by the worker. */
  int status;
  fedc_tensor_list weights;  /* after training */
  fedc_client_train_result train;
  fedc_client_eval_result eval;
} client_job;

static void job_free(client_job *job)
{
  fedc_snapshot_unref(&job->model);
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
  job->status = rc;
  job->train.num_examples = data->n;
  job->train.loss = stats.loss;
  job->train.accuracy = stats.accuracy;
  job->train.steps = stats.steps;
  fedc_model_free(&model);
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
  return fedc_client_engine_trained(d->engine, now, job->round, 0,
                                    &job->weights, &job->train, &d->actions);
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

static void job_done(uv_work_t *req, int status)
{
  client_job *job = req->data;
  fedc_client_daemon *d = job->daemon;
  int result = status < 0 ? FEDC_EIO : job->status;
  int rc = 0;

  d->jobs--;
  /* After a Goodbye or a signal nobody waits for the result. */
  if (!d->stopping) {
    if (job->kind == JOB_TRAIN)
      rc = report_training(d, job, result);
    else
      rc = report_evaluation(d, job, result);
  }
  job_free(job);
  fedc_client_daemon_drain(d, rc);
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
  fedc_info(LOG_COMPONENT, "training round=%" PRIu64 " model=%s epochs=%"
            PRIu32 " batch_size=%" PRIu32 " learning_rate=%g", job->round,
            job->model_spec, job->config.local_epochs, job->config.batch_size,
            (double)job->config.learning_rate);
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
