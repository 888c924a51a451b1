#include "actions.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

#define ACTIONS_MIN_CAPACITY 16

static const char *const reject_names[FEDC_REJECT_COUNT] = {
  [FEDC_REJECT_NONE] = "none",
  [FEDC_REJECT_VERSION] = "version",
  [FEDC_REJECT_MESSAGE] = "message",
  [FEDC_REJECT_DUPLICATE_CLIENT] = "duplicate_client",
  [FEDC_REJECT_STALE] = "stale",
  [FEDC_REJECT_NOT_SAMPLED] = "not_sampled",
  [FEDC_REJECT_DUPLICATE_RESULT] = "duplicate_result",
  [FEDC_REJECT_SHAPE] = "shape",
  [FEDC_REJECT_NONFINITE] = "nonfinite",
  [FEDC_REJECT_UPDATE_NORM] = "update_norm",
  [FEDC_REJECT_CHUNK] = "chunk",
  [FEDC_REJECT_INTERNAL] = "internal",
};

const char *fedc_server_reject_name(enum fedc_server_reject reject)
{
  if ((unsigned)reject >= FEDC_REJECT_COUNT)
    return "unknown";
  return reject_names[reject];
}

void fedc_server_actions_init(fedc_server_actions *list)
{
  memset(list, 0, sizeof(*list));
}

static void release(fedc_server_action *a)
{
  switch (a->kind) {
  case FEDC_SERVER_ACTION_SEND:
    fedc_message_free(&a->send.message);
    break;
  case FEDC_SERVER_ACTION_SEND_STREAM:
    fedc_chunker_free(&a->stream.stream);
    break;
  case FEDC_SERVER_ACTION_CLOSE_ALL:
    fedc_message_free(&a->close_all.message);
    break;
  case FEDC_SERVER_ACTION_EVALUATE:
    fedc_snapshot_unref(&a->evaluate.model);
    break;
  case FEDC_SERVER_ACTION_CHECKPOINT:
    fedc_snapshot_unref(&a->checkpoint.model);
    fedc_tensor_list_close(&a->checkpoint.state);
    break;
  default:
    break;
  }
}

void fedc_server_actions_clear(fedc_server_actions *list)
{
  for (size_t i = 0; i < list->count; i++)
    release(&list->items[i]);
  list->count = 0;
}

void fedc_server_actions_close(fedc_server_actions *list)
{
  fedc_server_actions_clear(list);
  free(list->items);
  fedc_server_actions_init(list);
}

fedc_server_action *fedc_server_actions_push(fedc_server_actions *list,
                                             enum fedc_server_action_kind kind)
{
  fedc_server_action *a;

  if (list->count == list->capacity) {
    size_t cap = list->capacity ? list->capacity * 2 : ACTIONS_MIN_CAPACITY;
    fedc_server_action *items = realloc(list->items, cap * sizeof(*items));

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

int fedc_server_actions_send(fedc_server_actions *list, uint64_t peer,
                             fedc_message *message)
{
  fedc_server_action *a = fedc_server_actions_push(list, FEDC_SERVER_ACTION_SEND);

  if (!a) {
    fedc_message_free(&message);
    return FEDC_ENOMEM;
  }
  a->send.peer = peer;
  a->send.message = message;
  return 0;
}
