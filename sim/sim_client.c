/* The clients' side of the simulation: connections, availability, parked
 * engines and the client engines' actions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "sim_impl.h"
#include "util/error.h"
#include "util/log.h"

int fedc_sim_client_init(fedc_sim *sim, const fedc_device_model *devices)
{
  sim->clients = calloc(sim->client_count, sizeof(*sim->clients));
  if (sim->clients == NULL)
    return FEDC_ENOMEM;
  for (uint32_t i = 0; i < sim->client_count; i++) {
    sim_client *c = &sim->clients[i];

    fedc_device_draw(devices, sim->opts.seed, i, &c->device);
    c->slot = SIM_NO_SLOT;
  }
  sim->free_slot = SIM_NO_SLOT;
  return 0;
}

void fedc_sim_client_close(fedc_sim *sim)
{
  fedc_message_free(&sim->welcome);
  for (uint32_t i = 0; i < sim->slot_count; i++)
    fedc_client_engine_free(&sim->slots[i].engine);
  free(sim->slots);
  free(sim->clients);
  sim->slots = NULL;
  sim->clients = NULL;
  sim->slot_count = sim->slot_capacity = 0;
}

static uint32_t take_slot(fedc_sim *sim)
{
  uint32_t index;

  if (sim->free_slot != SIM_NO_SLOT) {
    index = sim->free_slot;
    sim->free_slot = sim->slots[index].next_free;
    return index;
  }
  if (sim->slot_count == sim->slot_capacity) {
    uint32_t capacity = sim->slot_capacity ? 2 * sim->slot_capacity : 256;
    sim_slot *grown = realloc(sim->slots, capacity * sizeof(*grown));

    if (grown == NULL)
      return SIM_NO_SLOT;
    sim->slots = grown;
    sim->slot_capacity = capacity;
  }
  return sim->slot_count++;
}

static void release_slot(fedc_sim *sim, uint32_t client)
{
  sim_client *c = &sim->clients[client];
  sim_slot *slot = &sim->slots[c->slot];

  fedc_client_engine_free(&slot->engine);
  *slot = (sim_slot){ .client = SIM_NO_SLOT, .next_free = sim->free_slot };
  sim->free_slot = c->slot;
  c->slot = SIM_NO_SLOT;
  sim->live_engines--;
}

/* Gives client a slot with a new engine in DISCONNECTED. */
static sim_slot *new_engine(fedc_sim *sim, uint32_t client)
{
  char id[24];
  fedc_client_config config;
  uint32_t index = take_slot(sim);
  sim_slot *slot;
  int rc;

  if (index == SIM_NO_SLOT) {
    fedc_sim_fail(sim, FEDC_ENOMEM, "allocate a client slot");
    return NULL;
  }
  slot = &sim->slots[index];
  *slot = (sim_slot){ .client = client, .next_free = SIM_NO_SLOT };

  snprintf(id, sizeof(id), "client-%u", client);
  fedc_client_config_default(&config);
  config.hello.client_id = id;
  config.hello.num_examples = fedc_partition_size(sim->partition, client);
  config.hello.trainer = "builtin";
  config.hello.platform = "fedc-sim";
  config.hello.relative_speed = sim->clients[client].device.speed;
  rc = fedc_client_engine_new(&config, &slot->engine);
  if (rc < 0) {
    *slot = (sim_slot){ .client = SIM_NO_SLOT, .next_free = sim->free_slot };
    sim->free_slot = index;
    fedc_sim_fail(sim, rc, "create a client engine");
    return NULL;
  }

  sim->clients[client].slot = index;
  sim->live_engines++;
  if (sim->live_engines > sim->stats.max_live_engines)
    sim->stats.max_live_engines = sim->live_engines;
  return slot;
}

static void carry_out(fedc_sim *sim, uint32_t client, fedc_client_action *a);

/* Takes job off the pool's queue when no thread has started it, because
 * its client no longer has the task: a Cancel, a later task or a lost
 * connection dropped it, so its result would be ignored. */
static void skip_training(fedc_sim *sim, sim_train_job *job)
{
  if (fedc_pool_cancel(sim->pool, &job->pool_job)) {
    job->status = FEDC_ESTALE;
    sim->stats.trainings_skipped++;
  }
}

/* Skips the latest training of client when its engine dropped that task. */
static void skip_dropped_training(fedc_sim *sim, uint32_t client)
{
  const sim_client *c = &sim->clients[client];
  sim_slot *slot;

  if (c->slot == SIM_NO_SLOT || sim->slots[c->slot].job == NULL)
    return;
  slot = &sim->slots[c->slot];
  if (fedc_client_engine_state(slot->engine) == FEDC_CLIENT_TRAINING &&
      fedc_client_engine_task_round(slot->engine) == slot->job->round)
    return;
  skip_training(sim, slot->job);
  slot->job = NULL;
}

/* Carries out the actions of one client event, then parks the engine if
 * it has nothing left to do. */
static void finish_call(fedc_sim *sim, uint32_t client, int rc,
                        fedc_client_actions *acts, const char *what)
{
  if (rc < 0)
    fedc_sim_fail(sim, rc, what);
  for (size_t i = 0; i < acts->count && sim->err == 0; i++)
    carry_out(sim, client, &acts->items[i]);
  fedc_client_actions_close(acts);
  skip_dropped_training(sim, client);
  fedc_sim_client_park_if_idle(sim, client);
}

void fedc_sim_client_connect(fedc_sim *sim, uint32_t client)
{
  sim_client *c = &sim->clients[client];
  fedc_client_actions acts;
  sim_slot *slot;
  int rc;

  if ((c->flags & SIM_CONNECTED) || !(c->flags & SIM_ONLINE))
    return;
  slot = new_engine(sim, client);
  if (slot == NULL)
    return;
  c->conn = sim->next_conn++;
  c->flags |= SIM_CONNECTED;
  sim->stats.connects++;

  fedc_sim_server_connected(sim, fedc_sim_conn_id(c->conn, client));
  if (sim->err != 0 || c->slot == SIM_NO_SLOT)
    return;
  fedc_client_actions_init(&acts);
  rc = fedc_client_engine_connected(sim->slots[c->slot].engine,
                                    fedc_sim_now_ms(sim), &acts);
  finish_call(sim, client, rc, &acts, "connect a client engine");
}

void fedc_sim_client_disconnect(fedc_sim *sim, uint32_t client,
                                bool tell_server)
{
  sim_client *c = &sim->clients[client];
  uint64_t conn = fedc_sim_conn_id(c->conn, client);

  if (!(c->flags & SIM_CONNECTED))
    return;
  c->flags &= (uint8_t)~SIM_CONNECTED;

  /* Whatever is on its way over this connection is dropped on arrival,
   * because the connection is no longer open. */
  if (c->slot != SIM_NO_SLOT) {
    if (sim->slots[c->slot].job != NULL)
      skip_training(sim, sim->slots[c->slot].job);
    release_slot(sim, client);
  }
  if (tell_server)
    fedc_sim_server_lost(sim, conn);
}

void fedc_sim_client_disconnect_all(fedc_sim *sim)
{
  for (uint32_t i = 0; i < sim->client_count; i++) {
    sim_client *c = &sim->clients[i];

    if (!(c->flags & SIM_CONNECTED))
      continue;
    c->flags &= (uint8_t)~SIM_CONNECTED;
    if (c->slot != SIM_NO_SLOT)
      release_slot(sim, i);
  }
}

void fedc_sim_client_schedule_reconnect(fedc_sim *sim, uint32_t client)
{
  sim_client *c = &sim->clients[client];

  if (c->flags & SIM_RECONNECT_DUE)
    return;
  c->flags |= SIM_RECONNECT_DUE;
  fedc_sim_push(sim, fedc_eventq_now(&sim->events) +
                sim->opts.reconnect_seconds, SIM_EV_CONNECT, client, 0);
}

/* Flips the availability of a client at a boundary of its window and
 * schedules the next one. Stepping by the window lengths, rather than
 * asking fedc_device_online() at the boundary, keeps rounding from
 * flipping a client twice. */
void fedc_sim_client_availability(fedc_sim *sim, uint32_t client)
{
  sim_client *c = &sim->clients[client];
  const fedc_device *d = &c->device;
  double now = fedc_eventq_now(&sim->events);
  double on = (double)d->online * d->period;

  c->flags ^= SIM_ONLINE;
  fedc_sim_push(sim, now + ((c->flags & SIM_ONLINE) ? on : d->period - on),
                SIM_EV_AVAILABILITY, client, 0);
  if (c->flags & SIM_ONLINE)
    fedc_sim_client_connect(sim, client);
  else
    fedc_sim_client_disconnect(sim, client, true);
}

/* Returns a Welcome like the one the server engine would send now, kept
 * for replays until the server's round changes; NULL without memory. */
static const fedc_message *replay_welcome(fedc_sim *sim)
{
  const fedc_server_engine_config *s = &sim->opts.server;
  uint64_t round = fedc_server_engine_round(sim->server);

  if (sim->welcome != NULL && sim->welcome_round == round)
    return sim->welcome;
  fedc_message_free(&sim->welcome);
  if (fedc_message_welcome(s->server_id, round, s->max_frame_bytes,
                           s->chunk_bytes, &sim->welcome) < 0)
    return NULL;
  sim->welcome_round = round;
  return sim->welcome;
}

/* Brings the rebuilt engine back to IDLE with a Welcome like the one the
 * server sent. Its Hello is not built again, because the server has it. */
static int replay_handshake(fedc_sim *sim, sim_slot *slot)
{
  const fedc_message *welcome = replay_welcome(sim);
  fedc_client_actions acts;
  int rc = welcome != NULL ? 0 : FEDC_ENOMEM;

  fedc_client_actions_init(&acts);
  if (rc == 0)
    rc = fedc_client_engine_resume(slot->engine, fedc_sim_now_ms(sim),
                                   fedc_message_envelope(welcome)->welcome,
                                   &acts);
  fedc_client_actions_close(&acts);
  if (rc == 0 && fedc_client_engine_state(slot->engine) != FEDC_CLIENT_IDLE)
    rc = FEDC_ESTATE;
  return rc;
}

sim_slot *fedc_sim_client_wake(fedc_sim *sim, uint32_t client)
{
  sim_client *c = &sim->clients[client];
  sim_slot *slot;
  int rc;

  if (!(c->flags & SIM_CONNECTED))
    return NULL;
  if (c->slot != SIM_NO_SLOT)
    return &sim->slots[c->slot];

  slot = new_engine(sim, client);
  if (slot == NULL)
    return NULL;
  rc = replay_handshake(sim, slot);
  if (rc < 0) {
    fedc_sim_fail(sim, rc, "rebuild a parked client engine");
    release_slot(sim, client);
    return NULL;
  }
  sim->stats.engines_rebuilt++;
  return slot;
}

void fedc_sim_client_park_if_idle(fedc_sim *sim, uint32_t client)
{
  sim_client *c = &sim->clients[client];
  const sim_slot *slot;

  if (c->slot == SIM_NO_SLOT)
    return;
  slot = &sim->slots[c->slot];
  if (slot->in_flight == 0 && slot->jobs == 0 &&
      fedc_client_engine_state(slot->engine) == FEDC_CLIENT_IDLE)
    release_slot(sim, client);
}

void fedc_sim_client_received(fedc_sim *sim, uint32_t client,
                              const Fedc__Envelope *message)
{
  sim_slot *slot = fedc_sim_client_wake(sim, client);
  fedc_client_actions acts;
  int rc;

  if (slot == NULL)
    return;
  if (message->body_case == FEDC__ENVELOPE__BODY_FIT_TASK)
    sim->stats.tasks++;
  fedc_client_actions_init(&acts);
  rc = fedc_client_engine_received(slot->engine, fedc_sim_now_ms(sim),
                                   message, &acts);
  finish_call(sim, client, rc, &acts, "deliver a message to a client");
}

void fedc_sim_client_received_stream(fedc_sim *sim, uint32_t client,
                                     const fedc_chunker *stream)
{
  sim_slot *slot = fedc_sim_client_wake(sim, client);
  fedc_client_actions acts;
  int rc;

  if (slot == NULL)
    return;
  fedc_client_actions_init(&acts);
  rc = fedc_client_engine_received_tensors(
    slot->engine, fedc_sim_now_ms(sim), fedc_chunker_round(stream),
    fedc_chunker_stream(stream), fedc_chunker_snapshot(stream), &acts);
  finish_call(sim, client, rc, &acts, "deliver a stream to a client");
}

void fedc_sim_client_dropout(fedc_sim *sim, uint64_t conn)
{
  uint32_t client = fedc_sim_conn_client(conn);
  const sim_client *c = &sim->clients[client];
  uint64_t round = 0;

  if (!fedc_sim_conn_open(sim, conn))
    return;
  if (c->slot != SIM_NO_SLOT)
    round = fedc_client_engine_task_round(sim->slots[c->slot].engine);
  sim->stats.dropouts++;
  if (sim->hooks != NULL && sim->hooks->dropped_out != NULL)
    sim->hooks->dropped_out(sim->hooks->user, round, client,
                            fedc_eventq_now(&sim->events));
  fedc_sim_client_disconnect(sim, client, true);
  fedc_sim_client_schedule_reconnect(sim, client);
}

void fedc_sim_client_trained(fedc_sim *sim, sim_train_job *job)
{
  uint32_t client = fedc_sim_conn_client(job->conn);
  fedc_client_train_result result = {
    .num_examples = job->view.n, .loss = job->stats.loss,
    .accuracy = job->stats.accuracy, .steps = job->stats.steps,
  };
  fedc_client_actions acts;
  sim_slot *slot;
  int rc;

  if (!fedc_sim_conn_open(sim, job->conn) ||
      sim->clients[client].slot == SIM_NO_SLOT)
    return;
  slot = &sim->slots[sim->clients[client].slot];
  slot->jobs--;
  if (slot->job == job)
    slot->job = NULL;
  fedc_client_actions_init(&acts);
  if (job->status == 0)
    rc = fedc_client_engine_trained_update(slot->engine, fedc_sim_now_ms(sim),
                                           job->round, job->update, &result,
                                           &acts);
  else
    rc = fedc_client_engine_trained(slot->engine, fedc_sim_now_ms(sim),
                                    job->round, job->status, NULL, &result,
                                    &acts);
  finish_call(sim, client, rc, &acts, "report a training");
}

static void close_from_client(fedc_sim *sim, uint32_t client,
                              const fedc_client_action *a)
{
  fedc_debug("sim", "client closed client=%u reason=\"%s\"", client,
             a->close.reason);
  fedc_sim_client_disconnect(sim, client, true);
  if (a->close.retry)
    fedc_sim_client_schedule_reconnect(sim, client);
}

/* The server engine sends no EvaluateTask today. Should one come, the
 * client reports a failed evaluation rather than hang the round. */
static void refuse_evaluation(fedc_sim *sim, uint32_t client,
                              fedc_client_action *a)
{
  sim_slot *slot = &sim->slots[sim->clients[client].slot];
  fedc_client_actions acts;
  int rc;

  fedc_client_actions_init(&acts);
  rc = fedc_client_engine_evaluated(slot->engine, fedc_sim_now_ms(sim),
                                    a->evaluate.round, NULL, &acts);
  for (size_t i = 0; i < acts.count && rc == 0 && sim->err == 0; i++)
    carry_out(sim, client, &acts.items[i]);
  fedc_client_actions_close(&acts);
  if (rc < 0)
    fedc_sim_fail(sim, rc, "refuse a client evaluation");
}

static void carry_out(fedc_sim *sim, uint32_t client, fedc_client_action *a)
{
  uint64_t conn = fedc_sim_conn_id(sim->clients[client].conn, client);

  if (!fedc_sim_conn_open(sim, conn))
    return;
  switch (a->kind) {
  case FEDC_CLIENT_ACTION_SEND:
    fedc_sim_flight_send(sim, conn, false, a->send.message, NULL);
    a->send.message = NULL;
    break;
  case FEDC_CLIENT_ACTION_SEND_STREAM:
    fedc_sim_flight_send(sim, conn, false, NULL, a->stream.stream);
    a->stream.stream = NULL;
    break;
  case FEDC_CLIENT_ACTION_CLOSE:
    close_from_client(sim, client, a);
    break;
  case FEDC_CLIENT_ACTION_TRAIN:
    fedc_sim_train_start(sim, client, a);
    break;
  case FEDC_CLIENT_ACTION_EVALUATE:
    refuse_evaluation(sim, client, a);
    break;
  }
}
