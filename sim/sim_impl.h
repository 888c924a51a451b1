/* Internals shared by the simulator's files: sim.c runs the event loop,
 * sim_server.c carries out the server engine's actions, sim_client.c the
 * client engines' actions and connections, sim_train.c the training and
 * evaluation jobs, sim_flight.c the messages on their way. Not installed. */
#ifndef FEDC_SIM_SIM_IMPL_H
#define FEDC_SIM_SIM_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "client/engine.h"
#include "eventq.h"
#include "nn/model.h"
#include "pool.h"
#include "server/engine.h"
#include "sim.h"

#define SIM_NO_SLOT UINT32_MAX

enum sim_event_kind {
  SIM_EV_START = 1,          /* the server engine may begin rounds */
  SIM_EV_CONNECT,            /* client tries to connect */
  SIM_EV_AVAILABILITY,       /* client's device goes online or offline */
  SIM_EV_TO_SERVER,          /* arg: flight index; a message arrives */
  SIM_EV_TO_CLIENT,          /* arg: flight index */
  SIM_EV_TRAINED,            /* arg: the sim_train_job; training ends */
  SIM_EV_DROPOUT,            /* arg: connection id; client leaves */
  SIM_EV_TIMER,              /* arg: the server engine's timer id */
  SIM_EV_EVALUATED,          /* arg: the sim_eval_batch */
};

enum sim_client_flag {
  SIM_ONLINE = 1,            /* the device is in its availability window */
  SIM_CONNECTED = 2,         /* connection conn is open */
  SIM_RECONNECT_DUE = 4,     /* a SIM_EV_CONNECT is queued */
};

/* What the simulator keeps for every registered client: 40 bytes. */
typedef struct sim_client {
  fedc_device device;
  uint32_t conn;             /* generation of the current or last
                                connection; see fedc_sim_conn_id() */
  uint32_t slot;             /* live engine, or SIM_NO_SLOT when parked
                                or disconnected */
  uint8_t flags;             /* enum sim_client_flag */
} sim_client;

/* A client with a live engine: connecting, busy, or sending. */
typedef struct sim_slot {
  uint32_t client;           /* SIM_NO_SLOT when the slot is free */
  uint32_t next_free;
  fedc_client_engine *engine;
  double down_free;          /* virtual time the server-to-client link is
                                free again; messages queue behind it */
  double up_free;            /* the same for client to server */
  uint32_t in_flight;        /* messages of this connection on their way */
  uint32_t jobs;             /* trainings of this connection not finished */
  struct sim_train_job *job; /* the latest of them, NULL once it ended */
} sim_slot;

/* A message or a chunk stream on its way over one connection. */
typedef struct sim_flight {
  uint64_t conn;             /* connection id; 0 marks a free entry */
  fedc_message *message;     /* one of message and stream is set */
  fedc_chunker *stream;
  uint32_t next_free;
} sim_flight;

struct fedc_sim {
  fedc_sim_options opts;     /* its strings point at the copies below */
  char model_spec[FEDC_MODEL_SPEC_MAX + 1];
  char server_id[FEDC_ID_MAX + 1];
  const fedc_dataset *train;
  const fedc_dataset *test;
  const fedc_partition *partition;
  uint32_t client_count;
  sim_client *clients;

  fedc_server_engine *server;
  fedc_eventq events;
  fedc_pool *pool;
  fedc_model **models;        /* one per pool slot, built on first use */
  uint32_t *test_rows;        /* 0..test->n-1, for chunked evaluation */

  sim_slot *slots;
  uint32_t slot_count, slot_capacity, free_slot;
  size_t live_engines;
  fedc_message *welcome;      /* replayed to rebuilt engines */
  uint64_t welcome_round;     /* the server's round in welcome */

  sim_flight *flights;
  uint32_t flight_count, flight_capacity, free_flight;

  uint32_t next_conn;         /* generation of the next connection */
  double last_arrival;        /* latest arrival of any message so far */
  const fedc_sim_hooks *hooks;
  double real_start;
  double real_last_round;
  double wait_last_round;     /* stats.real_wait_seconds then */
  double last_round_clock;    /* virtual time of the last ROUND_FINISHED */
  bool done;
  int err;                    /* first fatal error; stops the loop */
  fedc_sim_stats stats;
};

/* Returns the virtual time in the engines' milliseconds. */
uint64_t fedc_sim_now_ms(const fedc_sim *sim);

/* Connection ids carry the generation in the high half and the client
 * index in the low half, so a message can be routed and checked for
 * staleness without a lookup table. */
uint64_t fedc_sim_conn_id(uint32_t generation, uint32_t client);
uint32_t fedc_sim_conn_client(uint64_t conn);

/* Returns 1 when conn is client's open connection. */
int fedc_sim_conn_open(const fedc_sim *sim, uint64_t conn);

/* Schedules an event; a failure is recorded in sim->err. */
void fedc_sim_push(fedc_sim *sim, double time, enum sim_event_kind kind,
                   uint32_t client, uint64_t arg);

/* Records the first fatal error. */
void fedc_sim_fail(fedc_sim *sim, int err, const char *what);

/* sim_server.c: events into the server engine; each carries out the
 * actions it returns. */
void fedc_sim_server_start(fedc_sim *sim);
void fedc_sim_server_connected(fedc_sim *sim, uint64_t conn);
void fedc_sim_server_lost(fedc_sim *sim, uint64_t conn);
void fedc_sim_server_received(fedc_sim *sim, uint64_t conn,
                              const Fedc__Envelope *message);
/* A whole chunk stream from conn, handed to the server engine at once. */
void fedc_sim_server_received_stream(fedc_sim *sim, uint64_t conn,
                                     const fedc_chunker *stream);
void fedc_sim_server_timer(fedc_sim *sim, uint64_t timer);
void fedc_sim_server_evaluated(fedc_sim *sim, uint64_t round,
                               const fedc_server_eval *result);

/* sim_client.c: connections, parked engines and client actions. */
int fedc_sim_client_init(fedc_sim *sim, const fedc_device_model *devices);
void fedc_sim_client_close(fedc_sim *sim);
void fedc_sim_client_connect(fedc_sim *sim, uint32_t client);
void fedc_sim_client_availability(fedc_sim *sim, uint32_t client);
void fedc_sim_client_schedule_reconnect(fedc_sim *sim, uint32_t client);

/* Ends client's open connection: the client engine, and the server engine
 * when tell_server is set, learn it at once. */
void fedc_sim_client_disconnect(fedc_sim *sim, uint32_t client,
                                bool tell_server);

/* Ends every open connection for the server's CLOSE_ALL at the end of a
 * run. Sends neither engine an event, wakes no parked engine and
 * schedules no reconnect, because the run is over. Frees the live client
 * engines. */
void fedc_sim_client_disconnect_all(fedc_sim *sim);

/* Returns the live slot of an open connection, rebuilding a parked engine
 * first; NULL when it cannot be rebuilt (sim->err is set). */
sim_slot *fedc_sim_client_wake(fedc_sim *sim, uint32_t client);

/* Frees the engine of an idle client with nothing on its way. */
void fedc_sim_client_park_if_idle(fedc_sim *sim, uint32_t client);

void fedc_sim_client_received(fedc_sim *sim, uint32_t client,
                              const Fedc__Envelope *message);

/* A whole chunk stream for client, handed to its engine at once. */
void fedc_sim_client_received_stream(fedc_sim *sim, uint32_t client,
                                     const fedc_chunker *stream);
void fedc_sim_client_dropout(fedc_sim *sim, uint64_t conn);

/* Hands the finished training of job's client to its engine. */
struct sim_train_job;
void fedc_sim_client_trained(fedc_sim *sim, struct sim_train_job *job);

/* sim_flight.c: queues a message (or stream) from one side to the other
 * behind the link's earlier messages and schedules its arrival. Takes
 * ownership of message or stream. to_client picks the direction. */
void fedc_sim_flight_send(fedc_sim *sim, uint64_t conn, bool to_client,
                          fedc_message *message, fedc_chunker *stream);

/* Delivers a flight at its arrival, if its connection is still open. */
void fedc_sim_flight_deliver(fedc_sim *sim, uint32_t index, bool to_client);

void fedc_sim_flight_close(fedc_sim *sim);

/* sim_train.c: local training and server evaluation on the pool. */
typedef struct sim_train_job {
  fedc_pool_job pool_job;
  fedc_sim *sim;
  uint64_t conn;
  uint64_t round;
  fedc_snapshot *global;      /* owned reference */
  fedc_dataset_view view;
  fedc_train_config config;
  char model_spec[FEDC_MODEL_SPEC_MAX + 1];
  fedc_tensor_list weights;   /* the trained model, then emptied */
  fedc_snapshot *update;      /* the result: weights - global */
  fedc_train_stats stats;
  int status;
  double real_seconds;        /* spent in the trainer */
} sim_train_job;

/* Starts client's local training for the TRAIN action a (taking its model
 * reference), or draws a dropout, and schedules the matching event. */
void fedc_sim_train_start(fedc_sim *sim, uint32_t client,
                          fedc_client_action *a);

/* Waits for job's result; frees nothing. */
void fedc_sim_train_wait(fedc_sim *sim, sim_train_job *job);
void fedc_sim_train_free(sim_train_job **job);

/* Starts evaluating model (taking the reference) for the server. */
void fedc_sim_eval_start(fedc_sim *sim, uint64_t round,
                         fedc_snapshot *model);

/* Finishes the evaluation batch arg of a SIM_EV_EVALUATED event. */
void fedc_sim_eval_finish(fedc_sim *sim, uint64_t arg, bool deliver);

/* Waits for and frees whatever the queued events still own. */
void fedc_sim_train_drain_event(fedc_sim *sim, const fedc_event *ev);

void fedc_sim_train_close(fedc_sim *sim);

#endif
