/* A fixed pool of worker threads that run jobs submitted by one thread.
 *
 * The submitting thread waits for each job by name (fedc_pool_wait()), not
 * for "any" job, so it consumes results in an order it chooses and the
 * outcome never depends on which job a thread finished first. Jobs start in
 * submission order. A job still queued when it is waited for runs on the
 * waiting thread, which would otherwise sit idle: a pool of 0 workers runs
 * every job that way. Each thread has a slot number, which a job uses to
 * pick per-thread scratch state such as a model instance: workers are slots
 * 0 .. workers-1 and the waiting thread is slot `workers`. */
#ifndef FEDC_SIM_POOL_H
#define FEDC_SIM_POOL_H

#include <stdbool.h>

typedef void (*fedc_pool_fn)(void *arg, unsigned slot);

typedef struct fedc_pool_job {
  /* private */
  fedc_pool_fn run;
  void *arg;
  int state;
  struct fedc_pool_job *next;
} fedc_pool_job;

typedef struct fedc_pool fedc_pool;

/* Starts workers threads; 0 runs every job on the waiting thread. Returns
 * 0, FEDC_ENOMEM or FEDC_EIO when a thread cannot be started. */
int fedc_pool_new(unsigned workers, fedc_pool **out);

/* Stops the workers after their current jobs and clears *pool; accepts
 * NULL. Every submitted job must have been waited for. */
void fedc_pool_free(fedc_pool **pool);

/* Returns the number of slots: workers + 1. */
unsigned fedc_pool_slots(const fedc_pool *pool);

/* Queues run(arg, slot). job must stay valid until fedc_pool_wait(). */
void fedc_pool_submit(fedc_pool *pool, fedc_pool_job *job, fedc_pool_fn run,
                      void *arg);

/* Takes job off the queue when no thread has started it, and returns true:
 * it will not run, and fedc_pool_wait() on it returns at once. Returns
 * false for a job already running or done. */
bool fedc_pool_cancel(fedc_pool *pool, fedc_pool_job *job);

/* Returns when job has run, running it here if no worker has taken it. */
void fedc_pool_wait(fedc_pool *pool, fedc_pool_job *job);

/* Returns the number of online processors less one, for the waiting
 * thread, which trains too. */
unsigned fedc_pool_default_workers(void);

#endif
