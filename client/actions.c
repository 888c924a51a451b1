#include "client/actions.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

#define ACTIONS_MIN_CAPACITY 8

void fedc_client_actions_init(fedc_client_actions *list)
{
  memset(list, 0, sizeof(*list));
}

static void release(fedc_client_action *a)
{
  switch (a->kind) {
  case FEDC_CLIENT_ACTION_SEND:
    fedc_message_free(&a->send.message);
    break;
  case FEDC_CLIENT_ACTION_SEND_STREAM:
    fedc_chunker_free(&a->stream.stream);
    break;
  case FEDC_CLIENT_ACTION_TRAIN:
    fedc_snapshot_unref(&a->train.model);
    break;
  case FEDC_CLIENT_ACTION_EVALUATE:
    fedc_snapshot_unref(&a->evaluate.model);
    break;
  default:
    break;
  }
}

void fedc_client_actions_clear(fedc_client_actions *list)
{
  for (size_t i = 0; i < list->count; i++)
    release(&list->items[i]);
  list->count = 0;
}

void fedc_client_actions_close(fedc_client_actions *list)
{
  fedc_client_actions_clear(list);
  free(list->items);
  fedc_client_actions_init(list);
}

fedc_client_action *fedc_client_actions_push(fedc_client_actions *list,
                                             enum fedc_client_action_kind kind)
{
  fedc_client_action *a;

  if (list->count == list->capacity) {
    size_t cap = list->capacity ? list->capacity * 2 : ACTIONS_MIN_CAPACITY;
    fedc_client_action *items = realloc(list->items, cap * sizeof(*items));

    if (!items)
      return NULL;
    list->items = items;
    list->capacity = cap;
  }
  a = &list->items[list->count++];
  memset(a, 0, sizeof(*a));
  a->kind = kind;
  return a;
}

int fedc_client_actions_send(fedc_client_actions *list,
                             fedc_message *message)
{
  fedc_client_action *a = fedc_client_actions_push(list,
                                                   FEDC_CLIENT_ACTION_SEND);

  if (!a) {
    fedc_message_free(&message);
    return FEDC_ENOMEM;
  }
  a->send.message = message;
  return 0;
}
