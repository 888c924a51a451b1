/* The actions the client engine requests from its driver.
 *
 * An event appends actions to a caller-owned fedc_client_actions list; the
 * driver carries them out in order and then clears the list. Pointers an
 * action owns (a message, a stream, a snapshot reference) are freed by
 * fedc_client_actions_clear() unless the driver took them by setting the
 * field to NULL. Messages and streams go out in action order, and a stream
 * is sent whole before the next message. A CLOSE may drop what is still
 * queued. */
#ifndef FEDC_CLIENT_ACTIONS_H
#define FEDC_CLIENT_ACTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"
#include "nn/model.h"
#include "wire/chunker.h"
#include "wire/message.h"
#include "wire/snapshot.h"

#define FEDC_CLIENT_REASON_MAX 192

/* Each kind names the union member that carries its fields. */
enum fedc_client_action_kind {
  FEDC_CLIENT_ACTION_SEND = 1,     /* send: message to the server */
  FEDC_CLIENT_ACTION_SEND_STREAM,  /* stream: every chunk of it */
  FEDC_CLIENT_ACTION_CLOSE,        /* close: close the connection */
  FEDC_CLIENT_ACTION_TRAIN,        /* train: train model, then call
                                      fedc_client_engine_trained() */
  FEDC_CLIENT_ACTION_EVALUATE,     /* evaluate: evaluate model, then call
                                      fedc_client_engine_evaluated() */
};

typedef struct fedc_client_action {
  enum fedc_client_action_kind kind;
  union {
    struct {
      fedc_message *message;     /* owned */
    } send;
    struct {
      fedc_chunker *stream;      /* owned */
    } stream;
    struct {
      int error;                 /* FEDC_E* cause on our side, or 0 */
      Fedc__ErrorCode server_code;  /* code of the server's Error, or 0 */
      bool goodbye;              /* the server sent Goodbye */
      bool retry;                /* false when reconnecting cannot help:
                                    the server speaks another version */
      char reason[FEDC_CLIENT_REASON_MAX];
    } close;
    struct {
      uint64_t round;
      fedc_snapshot *model;      /* owned reference; the global model */
      fedc_train_config config;
      char model_spec[FEDC_MODEL_SPEC_MAX + 1];
    } train;
    struct {
      uint64_t round;
      fedc_snapshot *model;      /* owned reference */
      char model_spec[FEDC_MODEL_SPEC_MAX + 1];
    } evaluate;
  };
} fedc_client_action;

typedef struct fedc_client_actions {
  fedc_client_action *items;
  size_t count;
  size_t capacity;
} fedc_client_actions;

void fedc_client_actions_init(fedc_client_actions *list);

/* Frees what each action still owns and empties the list for reuse. */
void fedc_client_actions_clear(fedc_client_actions *list);

/* Clears the list and frees its array. */
void fedc_client_actions_close(fedc_client_actions *list);

/* Appends a zeroed action of kind and returns it, or NULL without memory.
 * For the engine. */
fedc_client_action *fedc_client_actions_push(fedc_client_actions *list,
                                             enum fedc_client_action_kind kind);

/* Appends a SEND of message, taking ownership of it (freed on failure).
 * Returns 0 or FEDC_ENOMEM. */
int fedc_client_actions_send(fedc_client_actions *list,
                             fedc_message *message);

#endif
