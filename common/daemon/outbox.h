/* A per-connection queue of outgoing protocol messages and chunk streams,
 * shared by the fedc-server and fedc-client daemons.
 *
 * The engines emit whole messages and lazy chunk streams; the outbox feeds
 * them to a fedc_conn in order and stops while the connection holds more
 * than high_water encrypted bytes, so a model streamed to a slow peer costs
 * O(chunk) memory rather than O(model). The daemon calls
 * fedc_outbox_pump() after queuing and again from the connection's
 * on_drain callback. */
#ifndef FEDC_DAEMON_OUTBOX_H
#define FEDC_DAEMON_OUTBOX_H

#include <stddef.h>

#include "net/conn.h"
#include "wire/chunker.h"
#include "wire/message.h"

/* Default bytes a connection may hold unsent before the outbox waits. */
#define FEDC_OUTBOX_HIGH_WATER (4u << 20)

struct fedc_outbox_item;

typedef struct fedc_outbox {
  struct fedc_outbox_item *head;
  struct fedc_outbox_item *tail;
  size_t count;              /* items queued, streams counted once */
  size_t high_water;         /* bytes */
} fedc_outbox;

/* Prepares an empty outbox; high_water 0 selects FEDC_OUTBOX_HIGH_WATER. */
void fedc_outbox_init(fedc_outbox *box, size_t high_water);

/* Frees every queued message and stream. */
void fedc_outbox_close(fedc_outbox *box);

/* Queues a message and takes ownership of it, also on failure, and clears
 * *message. Returns 0 or FEDC_ENOMEM. */
int fedc_outbox_push_message(fedc_outbox *box, fedc_message **message);

/* Queues a chunk stream and takes ownership of it, also on failure, and
 * clears *stream. Returns 0 or FEDC_ENOMEM. */
int fedc_outbox_push_stream(fedc_outbox *box, fedc_chunker **stream);

/* Sends queued items to conn until the outbox is empty or conn holds more
 * than high_water unsent bytes. Returns 0, or the fedc_conn_send() error
 * that stopped it; the item that failed is dropped. */
int fedc_outbox_pump(fedc_outbox *box, fedc_conn *conn);

/* Sends every queued message, regardless of high_water, and drops the
 * streams: what a connection about to close can still deliver, such as an
 * Error or a Goodbye. */
void fedc_outbox_flush_messages(fedc_outbox *box, fedc_conn *conn);

#endif
