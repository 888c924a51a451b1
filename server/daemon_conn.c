/* fedc-server's connections: the peer table, the fedc_conn callbacks that
 * turn connection events into engine events, and the Hello deadline. */
#include <stdlib.h>
#include <string.h>

#include "net/frame.h"
#include "server/daemon_impl.h"
#include "util/error.h"
#include "util/log.h"

/* Returns the index of the entry for id, or npeers when there is none. */
static size_t peer_index(const fedc_server_daemon *d, uint64_t id)
{
  size_t lo = 0, hi = d->npeers;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (d->peer_ids[mid] == id)
      return mid;
    if (d->peer_ids[mid] < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return d->npeers;
}

server_peer *fedc_server_peer_find(const fedc_server_daemon *d, uint64_t id)
{
  size_t i = peer_index(d, id);

  return i < d->npeers ? d->peers[i] : NULL;
}

/* Drops the holes that closed peers left, keeping the order. */
static void peers_compact(fedc_server_daemon *d)
{
  size_t live = 0;

  for (size_t i = 0; i < d->npeers; i++) {
    if (d->peers[i] == NULL)
      continue;
    d->peers[live] = d->peers[i];
    d->peer_ids[live] = d->peer_ids[i];
    live++;
  }
  d->npeers = live;
  d->peers_removed = 0;
}

static int peers_grow(fedc_server_daemon *d)
{
  size_t cap = d->peers_capacity != 0 ? d->peers_capacity * 2 : 64;
  server_peer **peers = realloc(d->peers, cap * sizeof(*peers));
  uint64_t *ids;

  if (peers == NULL)
    return FEDC_ENOMEM;
  d->peers = peers;
  ids = realloc(d->peer_ids, cap * sizeof(*ids));
  if (ids == NULL)
    return FEDC_ENOMEM;
  d->peer_ids = ids;
  d->peers_capacity = cap;
  return 0;
}

/* Appends peer, whose id is above every id in the table. Called only from
 * on_open, never while a loop walks the table, so it may compact it. */
static int peers_append(fedc_server_daemon *d, server_peer *peer)
{
  if (d->peers_removed * 2 >= d->npeers && d->peers_removed > 0)
    peers_compact(d);
  if (d->npeers == d->peers_capacity && peers_grow(d) < 0)
    return FEDC_ENOMEM;
  d->peers[d->npeers] = peer;
  d->peer_ids[d->npeers] = peer->id;
  d->npeers++;
  return 0;
}

static void peers_remove(fedc_server_daemon *d, const server_peer *peer)
{
  size_t i = peer_index(d, peer->id);

  if (i < d->npeers && d->peers[i] == peer) {
    d->peers[i] = NULL;
    d->peers_removed++;
  }
}

static uint64_t now_ms(const fedc_server_daemon *d)
{
  return uv_now(d->loop);
}

static void on_open(fedc_conn *conn)
{
  fedc_server_daemon *d = fedc_conn_data(conn);
  server_peer *peer = calloc(1, sizeof(*peer));
  const char *identity = fedc_conn_identity(conn);
  int rc;

  /* The id first: the table keeps its entries sorted by it. */
  if (peer != NULL)
    peer->id = ++d->next_peer_id;
  if (peer == NULL || peers_append(d, peer) < 0) {
    fedc_error(LOG_COMPONENT, "out of memory, closing peer=%s client=%s",
               fedc_conn_peer(conn), identity);
    free(peer);
    fedc_conn_set_data(conn, NULL);
    fedc_conn_close(conn);
    return;
  }
  peer->daemon = d;
  peer->conn = conn;
  peer->opened_ms = now_ms(d);
  fedc_outbox_init(&peer->outbox, 0);
  fedc_conn_set_data(conn, peer);
  fedc_info(LOG_COMPONENT, "client connected peer=%s client=%s",
            fedc_conn_peer(conn), identity);

  rc = fedc_server_engine_connected(d->engine, now_ms(d), peer->id,
                                    identity[0] != '\0' ? identity : NULL,
                                    &d->actions);
  fedc_server_daemon_drain(d, rc);
}

static void on_frame(fedc_conn *conn, Fedc__Envelope *env)
{
  server_peer *peer = fedc_conn_data(conn);
  bool is_hello = env->body_case == FEDC__ENVELOPE__BODY_HELLO;
  fedc_server_daemon *d;
  int rc;

  if (peer == NULL) {
    fedc_frame_envelope_free(&env);
    return;
  }
  d = peer->daemon;
  peer->hello_seen = true;
  rc = fedc_server_engine_received(d->engine, now_ms(d), peer->id, env,
                                   &d->actions);
  fedc_frame_envelope_free(&env);
  fedc_server_daemon_drain(d, rc);

  /* A Hello that the engine did not reject lifts the frame limit from
   * FEDC_SERVER_HELLO_MAX_FRAME to max_frame_bytes. The connection stays
   * valid here: a close calls on_close only from a later loop turn. */
  if (is_hello && !peer->closed_by_engine)
    fedc_conn_raise_frame_limit(conn);
}

static void on_drain(fedc_conn *conn)
{
  server_peer *peer = fedc_conn_data(conn);

  if (peer != NULL && fedc_outbox_pump(&peer->outbox, conn) < 0)
    fedc_conn_close(conn);
}

/* Counts the closes that a peer's bad input caused at the connection
 * layer; the net module has already logged them with peer= and client=. */
static void count_conn_reject(fedc_server_daemon *d,
                              enum fedc_conn_close_reason reason)
{
  switch (reason) {
  case FEDC_CONN_CLOSE_TLS:
  case FEDC_CONN_CLOSE_TOO_BIG:
  case FEDC_CONN_CLOSE_PROTOCOL:
    fedc_server_count_reject(d, fedc_conn_close_reason_name(reason));
    break;
  default:
    break;
  }
}

static void on_close(fedc_conn *conn, enum fedc_conn_close_reason reason,
                     int err)
{
  server_peer *peer = fedc_conn_data(conn);
  fedc_server_daemon *d;
  fedc_conn_stats stats;
  int rc;

  if (peer == NULL)
    return;
  d = peer->daemon;
  fedc_conn_get_stats(conn, &stats);
  d->closed_bytes_sent += stats.wire_bytes_sent;
  d->closed_bytes_received += stats.wire_bytes_received;
  if (!peer->closed_by_engine)
    count_conn_reject(d, reason);
  peers_remove(d, peer);
  fedc_outbox_close(&peer->outbox);

  rc = fedc_server_engine_lost(d->engine, now_ms(d), peer->id, &d->actions);
  free(peer);
  fedc_server_daemon_drain(d, rc);
}

const fedc_conn_callbacks fedc_server_conn_callbacks = {
  .on_open = on_open,
  .on_frame = on_frame,
  .on_drain = on_drain,
  .on_close = on_close,
};

/* Closes the connections that sent nothing within handshake_timeout of
 * their TLS handshake: an idle connection holds a socket and a TLS state. */
void fedc_server_peers_sweep(fedc_server_daemon *d, uint64_t now)
{
  uint64_t timeout = d->options->handshake_timeout;

  for (size_t i = 0; i < d->npeers; i++) {
    server_peer *peer = d->peers[i];

    if (peer == NULL || peer->hello_seen || peer->closed_by_engine ||
        now - peer->opened_ms < timeout)
      continue;
    fedc_warn(LOG_COMPONENT, "rejected client peer=%s client=%s "
              "reason=hello_timeout: no Hello within %llu ms",
              fedc_conn_peer(peer->conn), fedc_conn_identity(peer->conn),
              (unsigned long long)timeout);
    fedc_server_count_reject(d, "hello_timeout");
    peer->closed_by_engine = true;
    fedc_conn_close(peer->conn);
  }
}

/* Closes every connection at shutdown; on_close frees the peers. */
void fedc_server_peers_close_all(fedc_server_daemon *d)
{
  for (size_t i = 0; i < d->npeers; i++)
    if (d->peers[i] != NULL)
      fedc_conn_close(d->peers[i]->conn);
}
