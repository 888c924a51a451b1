#include "eventq.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

void fedc_eventq_init(fedc_eventq *q)
{
  q->heap = NULL;
  q->count = 0;
  q->capacity = 0;
  q->next_seq = 0;
  q->now = 0.0;
}

void fedc_eventq_close(fedc_eventq *q)
{
  free(q->heap);
  fedc_eventq_init(q);
}

static int event_before(const fedc_event *a, const fedc_event *b)
{
  if (a->time != b->time)
    return a->time < b->time;
  return a->seq < b->seq;
}

static void swap_events(fedc_event *a, fedc_event *b)
{
  fedc_event t = *a;

  *a = *b;
  *b = t;
}

static void sift_up(fedc_event *heap, size_t i)
{
  while (i > 0) {
    size_t parent = (i - 1) / 2;

    if (!event_before(&heap[i], &heap[parent]))
      break;
    swap_events(&heap[i], &heap[parent]);
    i = parent;
  }
}

static void sift_down(fedc_event *heap, size_t count, size_t i)
{
  for (;;) {
    size_t left = 2 * i + 1;
    size_t right = left + 1;
    size_t least = i;

    if (left < count && event_before(&heap[left], &heap[least]))
      least = left;
    if (right < count && event_before(&heap[right], &heap[least]))
      least = right;
    if (least == i)
      return;
    swap_events(&heap[i], &heap[least]);
    i = least;
  }
}

int fedc_eventq_push(fedc_eventq *q, double time, uint32_t kind,
                     uint32_t client, uint64_t arg)
{
  if (!isfinite(time) || time < q->now)
    return FEDC_EINVAL;

  if (q->count == q->capacity) {
    size_t capacity = q->capacity != 0 ? 2 * q->capacity : 64;
    fedc_event *heap = realloc(q->heap, capacity * sizeof(*heap));

    if (heap == NULL)
      return FEDC_ENOMEM;
    q->heap = heap;
    q->capacity = capacity;
  }

  q->heap[q->count] = (fedc_event){
    .time = time, .seq = q->next_seq++, .kind = kind,
    .client = client, .arg = arg,
  };
  sift_up(q->heap, q->count);
  q->count++;
  return 0;
}

int fedc_eventq_pop(fedc_eventq *q, fedc_event *out)
{
  if (q->count == 0)
    return 0;

  *out = q->heap[0];
  q->count--;
  if (q->count > 0) {
    q->heap[0] = q->heap[q->count];
    sift_down(q->heap, q->count, 0);
  }
  q->now = out->time;
  return 1;
}

const fedc_event *fedc_eventq_peek(const fedc_eventq *q)
{
  return q->count > 0 ? &q->heap[0] : NULL;
}

double fedc_eventq_now(const fedc_eventq *q)
{
  return q->now;
}

size_t fedc_eventq_size(const fedc_eventq *q)
{
  return q->count;
}
