/* The simulator's virtual clock: a priority queue of timed events.
 *
 * Events come out in order of virtual time, and events scheduled for the
 * same time come out in the order they were pushed. That order depends only
 * on the calls made, never on heap layout or on threads, which is what makes
 * a simulated run reproducible. The clock reads the time of the last event
 * popped and never moves backwards. */
#ifndef FEDC_SIM_EVENTQ_H
#define FEDC_SIM_EVENTQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct fedc_event {
  double time;         /* virtual seconds since the start of the run */
  uint64_t seq;        /* push order; breaks ties between equal times */
  uint32_t kind;       /* defined by the caller */
  uint32_t client;     /* client index, or UINT32_MAX for none */
  uint64_t arg;        /* defined by the caller */
} fedc_event;

typedef struct fedc_eventq {
  /* private */
  fedc_event *heap;
  size_t count;
  size_t capacity;
  uint64_t next_seq;
  double now;
} fedc_eventq;

void fedc_eventq_init(fedc_eventq *q);
void fedc_eventq_close(fedc_eventq *q);

/* Schedules an event at virtual time `time` (seconds). Returns 0,
 * FEDC_EINVAL for a time before now or not finite, or FEDC_ENOMEM. */
int fedc_eventq_push(fedc_eventq *q, double time, uint32_t kind,
                     uint32_t client, uint64_t arg);

/* Removes the earliest event into out and advances the clock to its time.
 * Returns 1, or 0 when the queue is empty. */
int fedc_eventq_pop(fedc_eventq *q, fedc_event *out);

/* Returns the earliest event without removing it, or NULL when empty. */
const fedc_event *fedc_eventq_peek(const fedc_eventq *q);

/* Returns the virtual time in seconds: that of the last event popped. */
double fedc_eventq_now(const fedc_eventq *q);

/* Returns the number of events waiting. */
size_t fedc_eventq_size(const fedc_eventq *q);

#endif
