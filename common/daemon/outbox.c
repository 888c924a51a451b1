#include "daemon/outbox.h"

#include <stdlib.h>

#include "util/error.h"

struct fedc_outbox_item {
  struct fedc_outbox_item *next;
  fedc_message *message;     /* exactly one of message and stream is set */
  fedc_chunker *stream;
};

void fedc_outbox_init(fedc_outbox *box, size_t high_water)
{
  box->head = NULL;
  box->tail = NULL;
  box->count = 0;
  box->high_water = high_water != 0 ? high_water : FEDC_OUTBOX_HIGH_WATER;
}

static void free_item(struct fedc_outbox_item *item)
{
  fedc_message_free(&item->message);
  fedc_chunker_free(&item->stream);
  free(item);
}

static struct fedc_outbox_item *pop(fedc_outbox *box)
{
  struct fedc_outbox_item *item = box->head;

  box->head = item->next;
  if (box->head == NULL)
    box->tail = NULL;
  box->count--;
  return item;
}

void fedc_outbox_close(fedc_outbox *box)
{
  while (box->head != NULL)
    free_item(pop(box));
}

static int push(fedc_outbox *box, fedc_message *message, fedc_chunker *stream)
{
  struct fedc_outbox_item *item = calloc(1, sizeof(*item));

  if (item == NULL) {
    fedc_message_free(&message);
    fedc_chunker_free(&stream);
    return FEDC_ENOMEM;
  }
  item->message = message;
  item->stream = stream;
  if (box->tail != NULL)
    box->tail->next = item;
  else
    box->head = item;
  box->tail = item;
  box->count++;
  return 0;
}

int fedc_outbox_push_message(fedc_outbox *box, fedc_message **message)
{
  fedc_message *m = *message;

  *message = NULL;
  return push(box, m, NULL);
}

int fedc_outbox_push_stream(fedc_outbox *box, fedc_chunker **stream)
{
  fedc_chunker *s = *stream;

  *stream = NULL;
  return push(box, NULL, s);
}

/* Sends the next frame of the head item and drops the item once it is
 * done. Returns 0 or the send error. */
static int send_next(fedc_outbox *box, fedc_conn *conn)
{
  struct fedc_outbox_item *item = box->head;
  const Fedc__Envelope *env;
  int rc;

  if (item->message != NULL) {
    rc = fedc_conn_send(conn, fedc_message_envelope(item->message));
    free_item(pop(box));
    return rc;
  }
  env = fedc_chunker_next(item->stream);
  if (env == NULL) {
    free_item(pop(box));
    return 0;
  }
  rc = fedc_conn_send(conn, env);
  if (rc < 0)
    free_item(pop(box));
  return rc;
}

int fedc_outbox_pump(fedc_outbox *box, fedc_conn *conn)
{
  while (box->head != NULL &&
         fedc_conn_queued_bytes(conn) <= box->high_water) {
    int rc = send_next(box, conn);

    if (rc < 0)
      return rc;
  }
  return 0;
}

void fedc_outbox_flush_messages(fedc_outbox *box, fedc_conn *conn)
{
  while (box->head != NULL) {
    struct fedc_outbox_item *item = pop(box);

    if (item->message != NULL && fedc_conn_is_open(conn))
      fedc_conn_send(conn, fedc_message_envelope(item->message));
    free_item(item);
  }
}
