/* The actions the server engine requests from its driver.
 *
 * An event appends actions to a caller-owned fedc_server_actions list; the
 * driver carries them out in order and then clears the list. Pointers an
 * action owns (a message, a stream, a snapshot reference, checkpoint
 * state) are freed by fedc_server_actions_clear() unless the driver took
 * them by setting the field to NULL.
 *
 * Ordering contract: messages and streams for one peer go out in action
 * order, and a stream is sent whole before the next message to that peer.
 * A CLOSE may drop whatever is still queued for its peer; the engine puts
 * an Error or Goodbye before it, which the driver sends if it can. A
 * CLOSE_ALL acts on the peers still open when the driver reaches it, after
 * the actions before it. It queues its Goodbye behind what each of them
 * already has and, as a CLOSE does, may drop their queued streams. Peers
 * that an earlier CLOSE closed are left alone. The engine drops every
 * peer when it emits a CLOSE_ALL and emits nothing for them afterwards. */
#ifndef FEDC_SERVER_ACTIONS_H
#define FEDC_SERVER_ACTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"
#include "wire/chunker.h"
#include "wire/message.h"
#include "wire/snapshot.h"

#define FEDC_REASON_MAX 192

/* The offense for which the engine closed a peer, also the index of
 * fedc_server_stats.rejected. */
enum fedc_server_reject {
  FEDC_REJECT_NONE = 0,          /* no offense: shutdown or training done */
  FEDC_REJECT_VERSION,           /* another protocol version */
  FEDC_REJECT_MESSAGE,           /* malformed or unexpected message */
  FEDC_REJECT_DUPLICATE_CLIENT,  /* same client id connected again; the
                                    older connection is the one closed */
  FEDC_REJECT_STALE,             /* result or chunk for a round not open */
  FEDC_REJECT_NOT_SAMPLED,       /* result from a client not in the cohort */
  FEDC_REJECT_DUPLICATE_RESULT,  /* second result in one round */
  FEDC_REJECT_SHAPE,             /* update names, dtypes or shapes wrong */
  FEDC_REJECT_NONFINITE,         /* NaN or Inf in an update */
  FEDC_REJECT_UPDATE_NORM,       /* update L2 norm above max_update_norm */
  FEDC_REJECT_CHUNK,             /* chunk stream out of order or malformed */
  FEDC_REJECT_INTERNAL,          /* the engine failed, e.g. out of memory */
  FEDC_REJECT_COUNT
};

/* Returns a short name for metric labels: "none", "version", "message",
 * "duplicate_client", "stale", "not_sampled", "duplicate_result", "shape",
 * "nonfinite", "update_norm", "chunk" or "internal". */
const char *fedc_server_reject_name(enum fedc_server_reject reject);

/* The JSON-Lines metrics of one round. */
typedef struct fedc_round_metrics {
  uint64_t round;
  bool aggregated;           /* false: abandoned, model unchanged */
  char reason[FEDC_REASON_MAX];  /* why it was abandoned; "" otherwise */
  bool evaluated;            /* test_* are set */
  double test_accuracy;
  double test_loss;
  bool has_train_metrics;    /* train_* are set */
  double train_loss;         /* mean of the clients' values weighted by */
  double train_accuracy;     /* their num_examples */
  uint32_t clients_sampled;
  uint32_t clients_reported; /* results folded into the aggregate */
  uint32_t clients_lost;     /* sampled, then lost or failed */
  uint32_t clients_cancelled;  /* still training at the close, or their
                                  asynchronous task expired */
  uint32_t updates_too_stale;  /* asynchronous updates discarded */
  double seconds;            /* round start to this action, event time */
  uint64_t bytes_sent;       /* tensor data; the driver may add framing */
  uint64_t bytes_received;
} fedc_round_metrics;

/* Each kind names the union member that carries its fields. */
enum fedc_server_action_kind {
  FEDC_SERVER_ACTION_SEND = 1,     /* send: message to peer */
  FEDC_SERVER_ACTION_SEND_STREAM,  /* stream: every chunk of it to peer */
  FEDC_SERVER_ACTION_CLOSE,        /* close: close peer, log the reason */
  FEDC_SERVER_ACTION_CLOSE_ALL,    /* close_all: send message to every open
                                      peer, then close each of them; one
                                      action ends the run for all peers */
  FEDC_SERVER_ACTION_START_TIMER,  /* timer: call fedc_server_engine_timer()
                                      with id after delay_ms */
  FEDC_SERVER_ACTION_CANCEL_TIMER, /* timer: id will not be needed */
  FEDC_SERVER_ACTION_EVALUATE,     /* evaluate: test model, then call
                                      fedc_server_engine_evaluated() */
  FEDC_SERVER_ACTION_CHECKPOINT,   /* checkpoint: save model and state as
                                      of round completed rounds */
  FEDC_SERVER_ACTION_ROUND_FINISHED,  /* round_finished: write metrics */
  FEDC_SERVER_ACTION_DONE,         /* done: no more rounds; reason and
                                      whether the run failed */
};

typedef struct fedc_server_action {
  enum fedc_server_action_kind kind;
  union {
    struct {
      uint64_t peer;
      fedc_message *message;     /* owned */
    } send;
    struct {
      uint64_t peer;
      fedc_chunker *stream;      /* owned */
    } stream;
    struct {
      uint64_t peer;
      enum fedc_server_reject reject;
      char client_id[FEDC_ID_MAX + 1];  /* "" before the Hello */
      char reason[FEDC_REASON_MAX];
    } close;
    struct {
      fedc_message *message;     /* owned; the Goodbye for every peer */
      char reason[FEDC_REASON_MAX];
    } close_all;
    struct {
      uint64_t id;
      uint64_t delay_ms;         /* START_TIMER only */
    } timer;
    struct {
      uint64_t round;
      fedc_snapshot *model;      /* owned reference */
    } evaluate;
    struct {
      uint64_t round;
      fedc_snapshot *model;      /* owned reference */
      fedc_tensor_list state;    /* owned; fedc_agg_state_save() output */
    } checkpoint;
    fedc_round_metrics round_finished;
    struct {
      char reason[FEDC_REASON_MAX];
      bool failed;               /* the run failed: the driver should exit
                                    with a non-zero status */
    } done;
  };
} fedc_server_action;

typedef struct fedc_server_actions {
  fedc_server_action *items;
  size_t count;
  size_t capacity;
} fedc_server_actions;

void fedc_server_actions_init(fedc_server_actions *list);

/* Frees what each action still owns and empties the list for reuse. */
void fedc_server_actions_clear(fedc_server_actions *list);

/* Clears the list and frees its array. */
void fedc_server_actions_close(fedc_server_actions *list);

/* Appends a zeroed action of kind and returns it, or NULL without memory.
 * For the engine; a driver has no need to add actions. */
fedc_server_action *fedc_server_actions_push(fedc_server_actions *list,
                                             enum fedc_server_action_kind kind);

/* Appends a SEND of message to peer and takes ownership of message, which
 * is freed on failure. Returns 0 or FEDC_ENOMEM. */
int fedc_server_actions_send(fedc_server_actions *list, uint64_t peer,
                             fedc_message *message);

#endif
