/* Messages on their way between the server engine and a client engine.
 *
 * Each connection has two links, one per direction, and each link is a
 * queue in front of the client's bandwidth. A message starts sending when
 * the previous one on its link has gone, takes its size divided by the
 * bandwidth, and arrives one latency later. The server's own link is
 * taken to be fast enough never to be the bottleneck. */
#include <assert.h>
#include <stdlib.h>

#include "sim_impl.h"
#include "util/error.h"

/* Framing and fields a chunk stream adds to its tensor data, an estimate
 * for the transfer time only. */
#define STREAM_OVERHEAD_BYTES 64

static uint32_t take_flight(fedc_sim *sim)
{
  uint32_t index;

  if (sim->free_flight != SIM_NO_SLOT) {
    index = sim->free_flight;
    sim->free_flight = sim->flights[index].next_free;
    return index;
  }
  if (sim->flight_count == sim->flight_capacity) {
    uint32_t capacity = sim->flight_capacity ? 2 * sim->flight_capacity : 256;
    sim_flight *grown = realloc(sim->flights, capacity * sizeof(*grown));

    if (grown == NULL)
      return SIM_NO_SLOT;
    sim->flights = grown;
    sim->flight_capacity = capacity;
  }
  return sim->flight_count++;
}

static void release_flight(fedc_sim *sim, uint32_t index)
{
  sim->flights[index] = (sim_flight){ .next_free = sim->free_flight };
  sim->free_flight = index;
}

static uint64_t flight_bytes(const fedc_message *message,
                             const fedc_chunker *stream)
{
  if (stream != NULL)
    return fedc_chunker_total_bytes(stream) + STREAM_OVERHEAD_BYTES;
  return fedc__envelope__get_packed_size(fedc_message_envelope(message)) + 4;
}

void fedc_sim_flight_send(fedc_sim *sim, uint64_t conn, bool to_client,
                          fedc_message *message, fedc_chunker *stream)
{
  uint32_t client = fedc_sim_conn_client(conn);
  const sim_client *c = &sim->clients[client];
  double now = fedc_eventq_now(&sim->events);
  sim_slot *slot;
  double *link_free, start, arrival;
  uint32_t index;

  if (!fedc_sim_conn_open(sim, conn) || c->slot == SIM_NO_SLOT)
    goto drop;
  index = take_flight(sim);
  if (index == SIM_NO_SLOT) {
    fedc_sim_fail(sim, FEDC_ENOMEM, "queue a message");
    goto drop;
  }

  slot = &sim->slots[c->slot];
  link_free = to_client ? &slot->down_free : &slot->up_free;
  start = *link_free > now ? *link_free : now;
  *link_free = start + fedc_device_transfer_seconds(
    &c->device, flight_bytes(message, stream), !to_client);
  arrival = *link_free + sim->opts.latency_seconds;

  sim->flights[index] = (sim_flight){
    .conn = conn, .message = message, .stream = stream,
    .next_free = SIM_NO_SLOT,
  };
  slot->in_flight++;
  if (arrival > sim->last_arrival)
    sim->last_arrival = arrival;
  fedc_sim_push(sim, arrival, to_client ? SIM_EV_TO_CLIENT : SIM_EV_TO_SERVER,
                client, index);
  return;

drop:
  fedc_message_free(&message);
  fedc_chunker_free(&stream);
}

static void deliver(fedc_sim *sim, uint64_t conn, bool to_client,
                    const Fedc__Envelope *envelope)
{
  if (to_client)
    fedc_sim_client_received(sim, fedc_sim_conn_client(conn), envelope);
  else
    fedc_sim_server_received(sim, conn, envelope);
}

/* Hands a stream to its receiver whole, as the sender's tensors: the
 * engines check them as they check chunks, but skip the copy that would
 * join again chunks cut only to be sent in memory. A flight's stream is
 * whole, since no chunk of it was taken before. */
static void deliver_stream(fedc_sim *sim, uint64_t conn, bool to_client,
                           const fedc_chunker *stream)
{
  assert(fedc_chunker_remaining_bytes(stream) ==
         fedc_chunker_total_bytes(stream));
  if (to_client)
    fedc_sim_client_received_stream(sim, fedc_sim_conn_client(conn), stream);
  else
    fedc_sim_server_received_stream(sim, conn, stream);
}

void fedc_sim_flight_deliver(fedc_sim *sim, uint32_t index, bool to_client)
{
  sim_flight f = sim->flights[index];
  uint32_t client = fedc_sim_conn_client(f.conn);

  release_flight(sim, index);
  if (!fedc_sim_conn_open(sim, f.conn))
    goto out;
  if (sim->clients[client].slot != SIM_NO_SLOT)
    sim->slots[sim->clients[client].slot].in_flight--;

  if (f.message != NULL)
    deliver(sim, f.conn, to_client, fedc_message_envelope(f.message));
  else
    deliver_stream(sim, f.conn, to_client, f.stream);
  if (fedc_sim_conn_open(sim, f.conn))
    fedc_sim_client_park_if_idle(sim, client);

out:
  fedc_message_free(&f.message);
  fedc_chunker_free(&f.stream);
}

void fedc_sim_flight_close(fedc_sim *sim)
{
  for (uint32_t i = 0; i < sim->flight_count; i++) {
    fedc_message_free(&sim->flights[i].message);
    fedc_chunker_free(&sim->flights[i].stream);
  }
  free(sim->flights);
  sim->flights = NULL;
  sim->flight_count = sim->flight_capacity = 0;
  sim->free_flight = SIM_NO_SLOT;
}
