/* fedc-sim's core: the server engine and many client engines in one
 * process, messages passed in memory, on a virtual clock.
 *
 * The engines are the ones the daemons run (server/engine.h,
 * client/engine.h). Each client is a row view of one shared training set
 * (a fedc_partition), and a device (sim/device.h) that sets how long its
 * transfers and its training take, when it is online and how likely it is
 * to drop out mid-round. The virtual clock advances by those modelled
 * times. Actual training runs on a worker pool, and its results are
 * consumed in virtual-time order, so a run depends on its inputs and seed
 * only, never on thread timing.
 *
 * Memory stays bounded by the cohort, not by the registered clients: an
 * idle client keeps no engine object and no model copy, only a 40-byte
 * record here and the server engine's peer entry. Its engine is parked
 * when it goes idle and rebuilt, by replaying the connect and Welcome
 * events, when a message arrives for it. An idle client engine carries no
 * state from one task to the next, so the rebuilt engine behaves as the
 * parked one would. */
#ifndef FEDC_SIM_SIM_H
#define FEDC_SIM_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "attack.h"
#include "data/dataset.h"
#include "data/partition.h"
#include "device.h"
#include "server/engine.h"

typedef struct fedc_sim fedc_sim;

typedef struct fedc_sim_options {
  uint64_t seed;                 /* devices, dropouts and the initial model */
  unsigned workers;              /* training threads; 0 trains on the
                                    event loop's thread */
  double reference_flops;        /* FLOP/s of a device of speed 1 */
  double latency_seconds;        /* one-way network latency */
  double reconnect_seconds;      /* delay before a client that dropped out
                                    or was closed connects again */
  double connect_window_seconds; /* clients first connect at times spread
                                    uniformly over [0, this) */
  double max_simulated_seconds;  /* stop at this virtual time; 0: no limit */
  double stall_seconds;          /* fail when no round finishes for this
                                    long in virtual time; 0: no limit */
  fedc_server_engine_config server;  /* cohort, rounds, deadline, local
                                        training, aggregation, model spec */
  fedc_attack attack;            /* poisoning clients; none by default */
} fedc_sim_options;

/* One finished round as the simulator reports it. */
typedef struct fedc_sim_round {
  fedc_round_metrics metrics;    /* the server engine's; its seconds are
                                    simulated, from the virtual clock */
  double clock;                  /* virtual time at the round's end */
  double real_seconds;           /* real time since the previous round ended
                                    (or the server engine started) */
  double real_wait_seconds;      /* of which the event loop spent blocked on
                                    training and evaluation results */
} fedc_sim_round;

/* Observers for the caller; any may be NULL. */
typedef struct fedc_sim_hooks {
  void *user;
  void (*round_finished)(void *user, const fedc_sim_round *round);
  /* The server sent client a FitTask for round at virtual time. */
  void (*task_sent)(void *user, uint64_t round, uint32_t client,
                    double time);
  /* client left mid-round (its device's dropout draw). */
  void (*dropped_out)(void *user, uint64_t round, uint32_t client,
                      double time);
} fedc_sim_hooks;

/* Counters of a run, for benchmarks and tests. Real times are seconds. */
typedef struct fedc_sim_stats {
  uint64_t events;               /* virtual-clock events processed */
  uint64_t rounds;               /* ROUND_FINISHED actions */
  uint64_t tasks;                /* FitTasks delivered to clients */
  uint64_t trainings;            /* local trainings started */
  uint64_t trainings_skipped;    /* of which the client dropped the task
                                    before a thread took the job, so it
                                    never ran */
  uint64_t dropouts;             /* mid-round dropouts drawn */
  uint64_t connects;             /* connections opened, reconnects too */
  uint64_t engines_rebuilt;      /* parked client engines rebuilt */
  size_t max_live_engines;       /* client engines alive at once, at most */
  double real_seconds;           /* the whole run */
  double real_startup_seconds;   /* until the server engine started, the
                                    first connections included */
  double real_round_seconds;     /* from the server's start to the last
                                    round's end: the rounds' real time */
  double real_round_wait_seconds;  /* of which the event loop was blocked
                                      on training and evaluation */
  /* The last round's part of the two above. Its real time also contains
   * the server engine's end of the run, a Goodbye to every client. */
  double real_last_round_seconds;
  double real_last_round_wait_seconds;
  double real_wait_seconds;      /* the event loop blocked on training
                                    or evaluation results */
  double real_eval_wait_seconds;  /* the part of real_wait_seconds spent
                                     on the test-set evaluations */
  double real_train_seconds;     /* summed over the threads that trained */
  double real_eval_seconds;      /* summed over the evaluation jobs */
  size_t client_record_bytes;    /* the simulator's state per client */
} fedc_sim_stats;

/* Fills opts with defaults: seed 0, one worker per core, 1 GFLOP/s, 50 ms
 * latency, 60 s reconnect delay, a 1 s connect window, no time limit, a
 * stall limit of 7 days, and the server engine's defaults
 * (fedc_server_engine_config_default()). */
void fedc_sim_options_default(fedc_sim_options *opts);

/* Creates a simulation of partition->clients clients over train, with
 * devices drawn from devices, and test (may be NULL) for the server's
 * evaluation. train, test, partition and devices must outlive the
 * simulation; nothing of them is copied. The initial model is built from
 * opts->server.model_spec with opts->seed. Returns 0, FEDC_EINVAL for an
 * invalid option or a model whose input size differs from train's, or
 * another FEDC_E* code. */
int fedc_sim_new(const fedc_sim_options *opts, const fedc_dataset *train,
                 const fedc_dataset *test, const fedc_partition *partition,
                 const fedc_device_model *devices, fedc_sim **out);

void fedc_sim_free(fedc_sim **sim);

/* Runs until the server engine is done (total_rounds), no event is left or
 * the time limit passes. Returns 0 when the server is done or the time
 * limit passed. Returns FEDC_ETIMEDOUT when no round finished within the
 * stall limit (too few clients online to start one, for example) or no
 * event is left before the server is done (no client ever online again).
 * Returns the first FEDC_E* error of an engine or the trainer's setup
 * otherwise. */
int fedc_sim_run(fedc_sim *sim, const fedc_sim_hooks *hooks);

const fedc_sim_stats *fedc_sim_get_stats(const fedc_sim *sim);

/* Returns a monotonic real time in seconds. */
double fedc_sim_real_now(void);

/* Returns the virtual time in seconds. */
double fedc_sim_clock(const fedc_sim *sim);

/* Returns the server engine, for reading its stats and model. */
const fedc_server_engine *fedc_sim_server(const fedc_sim *sim);

/* Builds the partition of train the simulator's clients use. copies > 1
 * partitions that many copies of the rows, so that more clients than rows
 * each get some: every copy of a row is the same row of train, so views
 * still refer to one loaded dataset, and each row appears in exactly
 * copies views. Returns 0 or the FEDC_E* code of the partitioner. */
int fedc_sim_partition(fedc_partition *p, const fedc_dataset *train,
                       const fedc_partition_options *opts, uint32_t copies);

#endif
