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

/* Work on chunk number chunk, examples [begin, end) of a batch, as worker
 * number worker (an index for per-worker scratch). */
typedef void fedc_parallel_fn(void *ctx, unsigned worker, size_t chunk,
                              size_t begin, size_t end);

/* Sets the worker count, clamped to [1, FEDC_PARALLEL_MAX]. Stops the
 * running helper threads; new ones start with the next run. Do not call
 * while a run is under way. */
void fedc_parallel_set_threads(unsigned threads);
unsigned fedc_parallel_get_threads(void);

/* Returns true on a thread that is running a range of fedc_parallel_run,
 * where a further run would nest. */
bool fedc_parallel_in_worker(void);

/* Returns the number of chunks fedc_parallel_run splits [0, n) into: 1
 * with one thread, else up to 4 per thread, at most n. */
size_t fedc_parallel_chunks(size_t n);

/* Splits [0, n) into fedc_parallel_chunks(n) contiguous chunks of nearly
 * equal size and calls fn once per chunk. Workers take the next chunk as
 * they become free, so that a worker that another process delays holds up
 * the run by one chunk at most. Which worker runs which chunk varies from
 * run to run, so a reduction that must not depend on it sums per chunk
 * and adds the chunks in order. Worker 0 is the calling thread. Returns when
 * every call has returned. Runs of different threads are serialised, and
 * runs must not nest. When helper threads cannot be started, the caller
 * runs every chunk itself. */
void fedc_parallel_run(size_t n, fedc_parallel_fn *fn, void *ctx);

#endif
