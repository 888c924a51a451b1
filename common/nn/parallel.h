/* Worker threads that layers and fedc_blas_sgemm split their work over,
 * the trainer's own thread pool. With one thread (the default) everything
 * runs on the caller.
 *
 * fedc_nn_set_threads sets the count of this pool and keeps OpenBLAS on
 * one thread: OpenBLAS 0.3.21's idle threads spin in sched_yield after
 * each threaded call, which took about 40% of both cores from the
 * workers in a 2-thread CNN epoch. */
#ifndef FEDC_NN_PARALLEL_H
#define FEDC_NN_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>

/* Upper bound on the worker count, so that layers can keep per-worker
 * scratch in fixed arrays. */
#define FEDC_PARALLEL_MAX 16

/* Work on examples [begin, end) of a batch, as worker number worker. */
typedef void fedc_parallel_fn(void *ctx, unsigned worker, size_t begin,
                              size_t end);

/* Sets the worker count, clamped to [1, FEDC_PARALLEL_MAX]. Stops the
 * running helper threads; new ones start with the next run. Do not call
 * while a run is under way. */
void fedc_parallel_set_threads(unsigned threads);
unsigned fedc_parallel_get_threads(void);

/* Returns true on a thread that is running a range of fedc_parallel_run,
 * where a further run would nest. */
bool fedc_parallel_in_worker(void);

/* Splits [0, n) into min(n, threads) contiguous ranges of nearly equal
 * size and calls fn once per range, range w as worker w. Worker 0 is the
 * calling thread. Returns when every call has returned. Runs of different
 * threads are serialised, and runs must not nest. When helper threads
 * cannot be started, the caller runs every range itself. */
void fedc_parallel_run(size_t n, fedc_parallel_fn *fn, void *ctx);

#endif
