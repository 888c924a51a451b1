/* The server engine's side of the simulation: events go in at the virtual
 * time, and its actions are carried out at once. Each call uses its own
 * action list, because carrying out an action can lead to another server
 * event (a client that closes its connection, for one). */
#include <math.h>

#include "sim_impl.h"
#include "util/error.h"
#include "util/log.h"

static void report_round(fedc_sim *sim, const fedc_round_metrics *m)
{
  double real_now = fedc_sim_real_now();
  fedc_sim_round round = {
    .metrics = *m,
    .clock = fedc_eventq_now(&sim->events),
    .real_seconds = real_now - sim->real_last_round,
    .real_wait_seconds = sim->stats.real_wait_seconds - sim->wait_last_round,
  };

  sim->real_last_round = real_now;
  sim->wait_last_round = sim->stats.real_wait_seconds;
  sim->last_round_clock = round.clock;
  sim->stats.rounds++;
  sim->stats.real_round_seconds += round.real_seconds;
  sim->stats.real_round_wait_seconds += round.real_wait_seconds;
  sim->stats.real_last_round_seconds = round.real_seconds;
  sim->stats.real_last_round_wait_seconds = round.real_wait_seconds;
  if (sim->hooks != NULL && sim->hooks->round_finished != NULL)
    sim->hooks->round_finished(sim->hooks->user, &round);
}

/* Queues a message or stream for conn, waking its parked engine; what
 * cannot be sent (the connection is gone) stays with the action. */
static void send_to_client(fedc_sim *sim, uint64_t conn,
                           fedc_message **message, fedc_chunker **stream)
{
  uint32_t client = fedc_sim_conn_client(conn);

  if (!fedc_sim_conn_open(sim, conn) ||
      fedc_sim_client_wake(sim, client) == NULL)
    return;
  fedc_sim_flight_send(sim, conn, true, message ? *message : NULL,
                       stream ? *stream : NULL);
  if (message)
    *message = NULL;
  if (stream)
    *stream = NULL;
}

static void note_task(fedc_sim *sim, uint64_t conn, const fedc_message *m)
{
  const Fedc__Envelope *env = fedc_message_envelope(m);

  if (env->body_case != FEDC__ENVELOPE__BODY_FIT_TASK)
    return;
  if (sim->hooks != NULL && sim->hooks->task_sent != NULL)
    sim->hooks->task_sent(sim->hooks->user, env->fit_task->round,
                          fedc_sim_conn_client(conn),
                          fedc_eventq_now(&sim->events));
}

static void close_peer(fedc_sim *sim, const fedc_server_action *a)
{
  uint32_t client = fedc_sim_conn_client(a->close.peer);

  if (!fedc_sim_conn_open(sim, a->close.peer))
    return;
  fedc_debug("sim", "server closed client=%u reason=\"%s\"", client,
             a->close.reason);
  fedc_sim_client_disconnect(sim, client, false);
  fedc_sim_client_schedule_reconnect(sim, client);
}

/* Ends every connection at the end of the run. The Goodbye is dropped,
 * as sent_before_close() drops one before a single CLOSE. The connections
 * close at once, and delivering it would rebuild every parked client
 * engine only to read it. */
static void close_all_peers(fedc_sim *sim, const fedc_server_action *a)
{
  fedc_info("sim", "server closed every connection reason=\"%s\"",
            a->close_all.reason);
  fedc_sim_client_disconnect_all(sim);
}

static void carry_out(fedc_sim *sim, fedc_server_action *a)
{
  double now = fedc_eventq_now(&sim->events);

  switch (a->kind) {
  case FEDC_SERVER_ACTION_SEND:
    note_task(sim, a->send.peer, a->send.message);
    send_to_client(sim, a->send.peer, &a->send.message, NULL);
    break;
  case FEDC_SERVER_ACTION_SEND_STREAM:
    send_to_client(sim, a->stream.peer, NULL, &a->stream.stream);
    break;
  case FEDC_SERVER_ACTION_CLOSE:
    close_peer(sim, a);
    break;
  case FEDC_SERVER_ACTION_CLOSE_ALL:
    close_all_peers(sim, a);
    break;
  case FEDC_SERVER_ACTION_START_TIMER:
    fedc_sim_push(sim, now + (double)a->timer.delay_ms / 1000.0,
                  SIM_EV_TIMER, UINT32_MAX, a->timer.id);
    break;
  case FEDC_SERVER_ACTION_EVALUATE:
    fedc_sim_eval_start(sim, a->evaluate.round, a->evaluate.model);
    a->evaluate.model = NULL;
    break;
  case FEDC_SERVER_ACTION_ROUND_FINISHED:
    report_round(sim, &a->round_finished);
    break;
  case FEDC_SERVER_ACTION_DONE:
    fedc_info("sim", "server done reason=\"%s\"", a->done.reason);
    sim->done = true;
    break;
  case FEDC_SERVER_ACTION_CANCEL_TIMER:
  case FEDC_SERVER_ACTION_CHECKPOINT:
    /* A cancelled timer that fires is ignored by the engine, and the
     * simulator keeps no checkpoints. */
    break;
  }
}

/* Returns whether action i sends a message to the peer that action i + 1
 * closes, as the engine's Goodbye or Error before a CLOSE does. The
 * connection closes at once, so the message would be dropped on arrival,
 * and sending it would wake a parked client engine for nothing. */
static bool sent_before_close(const fedc_server_actions *acts, size_t i)
{
  const fedc_server_action *a = &acts->items[i];

  return a->kind == FEDC_SERVER_ACTION_SEND && i + 1 < acts->count &&
         a[1].kind == FEDC_SERVER_ACTION_CLOSE &&
         a[1].close.peer == a->send.peer;
}

/* Carries out the actions of one server event, or records its error. */
static void finish_call(fedc_sim *sim, int rc, fedc_server_actions *acts,
                        const char *what)
{
  if (rc < 0)
    fedc_sim_fail(sim, rc, what);
  for (size_t i = 0; i < acts->count && sim->err == 0; i++)
    if (!sent_before_close(acts, i))
      carry_out(sim, &acts->items[i]);
  fedc_server_actions_close(acts);
}

void fedc_sim_server_start(fedc_sim *sim)
{
  fedc_server_actions acts;

  sim->real_last_round = fedc_sim_real_now();
  sim->wait_last_round = sim->stats.real_wait_seconds;
  sim->stats.real_startup_seconds = sim->real_last_round - sim->real_start;

  fedc_server_actions_init(&acts);
  finish_call(sim, fedc_server_engine_start(sim->server, fedc_sim_now_ms(sim),
                                            &acts), &acts, "start the server");
}

void fedc_sim_server_connected(fedc_sim *sim, uint64_t conn)
{
  fedc_server_actions acts;
  int rc;

  fedc_server_actions_init(&acts);
  rc = fedc_server_engine_connected(sim->server, fedc_sim_now_ms(sim), conn,
                                    NULL, &acts);
  finish_call(sim, rc, &acts, "connect a client");
}

void fedc_sim_server_lost(fedc_sim *sim, uint64_t conn)
{
  fedc_server_actions acts;
  int rc;

  fedc_server_actions_init(&acts);
  rc = fedc_server_engine_lost(sim->server, fedc_sim_now_ms(sim), conn,
                               &acts);
  finish_call(sim, rc, &acts, "report a lost client");
}

void fedc_sim_server_received(fedc_sim *sim, uint64_t conn,
                              const Fedc__Envelope *message)
{
  fedc_server_actions acts;
  int rc;

  fedc_server_actions_init(&acts);
  rc = fedc_server_engine_received(sim->server, fedc_sim_now_ms(sim), conn,
                                   message, &acts);
  finish_call(sim, rc, &acts, "deliver a message to the server");
}

void fedc_sim_server_received_stream(fedc_sim *sim, uint64_t conn,
                                     const fedc_chunker *stream)
{
  fedc_server_actions acts;
  int rc;

  fedc_server_actions_init(&acts);
  rc = fedc_server_engine_received_tensors(
    sim->server, fedc_sim_now_ms(sim), conn, fedc_chunker_round(stream),
    fedc_chunker_stream(stream),
    fedc_chunker_snapshot(stream), &acts);
  finish_call(sim, rc, &acts, "deliver a stream to the server");
}

void fedc_sim_server_timer(fedc_sim *sim, uint64_t timer)
{
  fedc_server_actions acts;
  int rc;

  fedc_server_actions_init(&acts);
  rc = fedc_server_engine_timer(sim->server, fedc_sim_now_ms(sim), timer,
                                &acts);
  finish_call(sim, rc, &acts, "fire a server timer");
}

void fedc_sim_server_evaluated(fedc_sim *sim, uint64_t round,
                               const fedc_server_eval *result)
{
  fedc_server_actions acts;
  int rc;

  fedc_server_actions_init(&acts);
  rc = fedc_server_engine_evaluated(sim->server, fedc_sim_now_ms(sim), round,
                                    result, &acts);
  finish_call(sim, rc, &acts, "report an evaluation");
}
