#include "nn/parallel.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>


/* One process-wide pool. Helpers wait on `start` for a new generation,
 * run their range and count down `pending`; the caller waits on `done`. */
typedef struct pool {
  pthread_mutex_t run_lock;          /* serialises callers of run */
  pthread_mutex_t lock;              /* guards everything below */
  pthread_cond_t start;
  pthread_cond_t done;
  unsigned threads;                  /* configured worker count */
  unsigned helpers;                  /* helper threads running */
  pthread_t tid[FEDC_PARALLEL_MAX];
  uint64_t born[FEDC_PARALLEL_MAX];  /* generation when each was created */
  uint64_t generation;
  unsigned pending;                  /* helpers still in this generation */
  bool stop;
  fedc_parallel_fn *fn;
  void *ctx;
  size_t n;
  size_t chunks;
  size_t next;                       /* next chunk to take, atomically */
} pool;

/* Set while this thread runs a range, so that nested work (an sgemm inside
 * a layer's worker) runs inline instead of waiting for the pool. */
static _Thread_local bool in_worker;

static pool the_pool = {
  .run_lock = PTHREAD_MUTEX_INITIALIZER,
  .lock = PTHREAD_MUTEX_INITIALIZER,
  .start = PTHREAD_COND_INITIALIZER,
  .done = PTHREAD_COND_INITIALIZER,
  .threads = 1,
};

/* Takes chunks until none is left. */
static void run_chunks(pool *p, unsigned worker)
{
  bool outer = in_worker;
  size_t chunk;

  in_worker = true;
  while ((chunk = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED)) <
         p->chunks) {
    size_t begin = p->n * chunk / p->chunks;
    size_t end = p->n * (chunk + 1) / p->chunks;

    p->fn(p->ctx, worker, chunk, begin, end);
  }
  in_worker = outer;
}

static void *helper_main(void *arg)
{
  pool *p = &the_pool;
  unsigned worker = (unsigned)(uintptr_t)arg;
  uint64_t seen;

  /* Not p->generation: a helper that starts late must still take part in
   * the run that created it. */
  pthread_mutex_lock(&p->lock);
  seen = p->born[worker];
  for (;;) {
    while (p->generation == seen && !p->stop)
      pthread_cond_wait(&p->start, &p->lock);
    if (p->stop)
      break;
    seen = p->generation;
    /* fn, ctx, n and chunks stay fixed until pending reaches zero. */
    pthread_mutex_unlock(&p->lock);
    run_chunks(p, worker);
    pthread_mutex_lock(&p->lock);
    if (--p->pending == 0)
      pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static void stop_helpers(pool *p)
{
  pthread_mutex_lock(&p->lock);
  p->stop = true;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->lock);
  for (unsigned i = 1; i <= p->helpers; i++)
    pthread_join(p->tid[i], NULL);
  p->helpers = 0;
  p->stop = false;
}

/* Starts helpers 1 .. threads - 1; on failure keeps the ones started. */
static void start_helpers(pool *p)
{
  while (p->helpers + 1 < p->threads) {
    unsigned worker = p->helpers + 1;

    p->born[worker] = p->generation;
    if (pthread_create(&p->tid[worker], NULL, helper_main,
                       (void *)(uintptr_t)worker) != 0)
      break;
    p->helpers++;
  }
}

void fedc_parallel_set_threads(unsigned threads)
{
  pool *p = &the_pool;

  if (threads < 1)
    threads = 1;
  if (threads > FEDC_PARALLEL_MAX)
    threads = FEDC_PARALLEL_MAX;
  pthread_mutex_lock(&p->run_lock);
  if (threads != p->threads) {
    stop_helpers(p);
    p->threads = threads;
  }
  pthread_mutex_unlock(&p->run_lock);
}

unsigned fedc_parallel_get_threads(void)
{
  return the_pool.threads;
}

bool fedc_parallel_in_worker(void)
{
  return in_worker;
}

size_t fedc_parallel_chunks(size_t n)
{
  size_t chunks = (size_t)the_pool.threads * 4;

  if (the_pool.threads == 1 || n <= 1)
    return 1;
  return n < chunks ? n : chunks;
}

/* Runs the chunks on the helpers and on this thread. */
static void run_on_helpers(pool *p)
{
  pthread_mutex_lock(&p->lock);
  p->pending = p->helpers;
  p->generation++;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->lock);

  run_chunks(p, 0);

  pthread_mutex_lock(&p->lock);
  while (p->pending > 0)
    pthread_cond_wait(&p->done, &p->lock);
  pthread_mutex_unlock(&p->lock);
}

void fedc_parallel_run(size_t n, fedc_parallel_fn *fn, void *ctx)
{
  pool *p = &the_pool;

  if (p->threads == 1 || n <= 1) {
    if (n > 0)
      fn(ctx, 0, 0, 0, n);
    return;
  }
  pthread_mutex_lock(&p->run_lock);
  start_helpers(p);
  p->fn = fn;
  p->ctx = ctx;
  p->n = n;
  p->chunks = fedc_parallel_chunks(n);
  p->next = 0;
  /* Without helpers (none could be started) this thread takes every
   * chunk. */
  if (p->helpers > 0)
    run_on_helpers(p);
  else
    run_chunks(p, 0);
  pthread_mutex_unlock(&p->run_lock);
}
