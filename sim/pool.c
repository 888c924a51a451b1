#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/error.h"

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct fedc_pool {
  pthread_mutex_t lock;
  pthread_cond_t work;         /* a job was queued, or the pool stops */
  pthread_cond_t done;         /* a job finished */
  fedc_pool_job *head, *tail;  /* FIFO of queued jobs */
  int stopping;
  unsigned workers;
  unsigned started;
  pthread_t *threads;
};

typedef struct worker_start {
  fedc_pool *pool;
  unsigned slot;
} worker_start;

static fedc_pool_job *take_head(fedc_pool *pool)
{
  fedc_pool_job *job = pool->head;

  pool->head = job->next;
  if (pool->head == NULL)
    pool->tail = NULL;
  job->next = NULL;
  return job;
}

static void run_job(fedc_pool *pool, fedc_pool_job *job, unsigned slot)
{
  job->run(job->arg, slot);

  pthread_mutex_lock(&pool->lock);
  job->state = JOB_DONE;
  pthread_cond_broadcast(&pool->done);
  pthread_mutex_unlock(&pool->lock);
}

static void *worker_main(void *arg)
{
  worker_start start = *(worker_start *)arg;
  fedc_pool *pool = start.pool;

  free(arg);
  for (;;) {
    fedc_pool_job *job;

    pthread_mutex_lock(&pool->lock);
    while (pool->head == NULL && !pool->stopping)
      pthread_cond_wait(&pool->work, &pool->lock);
    if (pool->head == NULL) {
      pthread_mutex_unlock(&pool->lock);
      return NULL;
    }
    job = take_head(pool);
    job->state = JOB_RUNNING;
    pthread_mutex_unlock(&pool->lock);

    run_job(pool, job, start.slot);
  }
}

static int start_worker(fedc_pool *pool, unsigned slot)
{
  worker_start *start = malloc(sizeof(*start));

  if (start == NULL)
    return FEDC_ENOMEM;
  *start = (worker_start){ .pool = pool, .slot = slot };
  if (pthread_create(&pool->threads[slot], NULL, worker_main, start) != 0) {
    free(start);
    return FEDC_EIO;
  }
  return 0;
}

int fedc_pool_new(unsigned workers, fedc_pool **out)
{
  fedc_pool *pool = calloc(1, sizeof(*pool));
  int err = 0;

  *out = NULL;
  if (pool == NULL)
    return FEDC_ENOMEM;
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->work, NULL);
  pthread_cond_init(&pool->done, NULL);
  pool->workers = workers;
  pool->threads = calloc(workers != 0 ? workers : 1, sizeof(pthread_t));
  if (pool->threads == NULL) {
    err = FEDC_ENOMEM;
    goto out;
  }

  for (unsigned i = 0; i < workers && err == 0; i++) {
    err = start_worker(pool, i);
    if (err == 0)
      pool->started++;
  }

out:
  if (err != 0)
    fedc_pool_free(&pool);
  *out = pool;
  return err;
}

void fedc_pool_free(fedc_pool **pool_ptr)
{
  fedc_pool *pool = pool_ptr != NULL ? *pool_ptr : NULL;

  if (pool == NULL)
    return;
  pthread_mutex_lock(&pool->lock);
  pool->stopping = 1;
  pthread_cond_broadcast(&pool->work);
  pthread_mutex_unlock(&pool->lock);
  for (unsigned i = 0; i < pool->started; i++)
    pthread_join(pool->threads[i], NULL);

  pthread_cond_destroy(&pool->done);
  pthread_cond_destroy(&pool->work);
  pthread_mutex_destroy(&pool->lock);
  free(pool->threads);
  free(pool);
  *pool_ptr = NULL;
}

unsigned fedc_pool_slots(const fedc_pool *pool)
{
  return pool->workers + 1;
}

void fedc_pool_submit(fedc_pool *pool, fedc_pool_job *job, fedc_pool_fn run,
                      void *arg)
{
  *job = (fedc_pool_job){ .run = run, .arg = arg, .state = JOB_QUEUED };

  pthread_mutex_lock(&pool->lock);
  if (pool->tail != NULL)
    pool->tail->next = job;
  else
    pool->head = job;
  pool->tail = job;
  pthread_cond_signal(&pool->work);
  pthread_mutex_unlock(&pool->lock);
}

/* Unlinks job from the queue; the caller holds the lock. */
static void unlink_job(fedc_pool *pool, fedc_pool_job *job)
{
  fedc_pool_job *prev = NULL;

  for (fedc_pool_job *j = pool->head; j != NULL; prev = j, j = j->next) {
    if (j != job)
      continue;
    if (prev != NULL)
      prev->next = j->next;
    else
      pool->head = j->next;
    if (pool->tail == j)
      pool->tail = prev;
    j->next = NULL;
    return;
  }
}

bool fedc_pool_cancel(fedc_pool *pool, fedc_pool_job *job)
{
  bool cancelled = false;

  pthread_mutex_lock(&pool->lock);
  if (job->state == JOB_QUEUED) {
    unlink_job(pool, job);
    job->state = JOB_DONE;
    cancelled = true;
  }
  pthread_mutex_unlock(&pool->lock);
  return cancelled;
}

void fedc_pool_wait(fedc_pool *pool, fedc_pool_job *job)
{
  pthread_mutex_lock(&pool->lock);
  if (job->state == JOB_QUEUED) {
    unlink_job(pool, job);
    job->state = JOB_RUNNING;
    pthread_mutex_unlock(&pool->lock);
    run_job(pool, job, pool->workers);
    return;
  }
  while (job->state != JOB_DONE)
    pthread_cond_wait(&pool->done, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
}

unsigned fedc_pool_default_workers(void)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);

  return n > 1 ? (unsigned)(n - 1) : 0u;
}
