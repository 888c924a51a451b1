/* The server engine's table of connected peers.
 *
 * Peers live in one dense array, found in O(1) by the driver's connection
 * id and, once registered by a Hello, by client id, so the engine scales to
 * the simulator's 10^5 clients. Adding a peer may move every peer and
 * removing one moves the last peer into its place: callers must not keep a
 * fedc_peer pointer across fedc_peers_add() or fedc_peers_remove().
 *
 * The table also counts the idle peers and finds the idle peer of a given
 * rank (in dense-array order) in O(log n), with a Fenwick tree over the
 * array. Sampling k idle peers then costs O(k log n) rather than a scan of
 * every peer. Peer states are therefore changed only through
 * fedc_peers_set_state(). */
#ifndef FEDC_SERVER_PEERS_H
#define FEDC_SERVER_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire/assembler.h"
#include "wire/message.h"

enum fedc_peer_state {
  FEDC_PEER_HANDSHAKE = 0,   /* connected, no Hello yet */
  FEDC_PEER_IDLE,            /* registered and free to be sampled */
  FEDC_PEER_TRAINING,        /* FitTask of task_round sent, no FitResult */
  FEDC_PEER_UPLOADING,       /* FitResult received, update chunks arriving */
  FEDC_PEER_REPORTED,        /* update of task_round accepted */
};

typedef struct fedc_peer {
  uint64_t id;               /* the driver's connection id */
  enum fedc_peer_state state;  /* set with fedc_peers_set_state() */
  bool explored;             /* Oort: a result was accepted from it */

  /* Strings owned by the table, sized to fit: 10^5 idle peers should not
   * each carry two buffers of FEDC_ID_MAX bytes. */
  const char *client_id;     /* "" until the Hello */
  const char *identity;      /* TLS identity; "" when there is none */
  uint64_t hello_examples;   /* dataset size announced in the Hello */

  /* The id of the last task sent to this peer, 0 for none: the round id in
   * synchronous rounds, a task counter in the asynchronous modes. */
  uint64_t task_round;
  uint64_t task_version;     /* asynchronous: the open round (model
                                version) when the task was sent */
  uint64_t task_sent_ms;
  uint64_t task_seq;         /* engine-wide task counter, matches the
                                asynchronous deadline queue */

  /* A cancelled task whose result may still arrive (0: none), and the
   * task whose update chunks are being discarded (0: none). */
  uint64_t cancelled_task;
  uint64_t discard_task;

  /* Oort's record of this client, with explored above; reset when it
   * reconnects. */
  double utility;            /* statistical utility of its last result */
  double duration_ms;        /* task sent to update complete, last time */
  uint64_t last_picked;      /* round it was last sampled for */

  /* The result being received, valid while UPLOADING. */
  uint64_t result_examples;
  double result_loss;        /* NaN when the client reported none */
  double result_accuracy;
  fedc_assembler *upload;
} fedc_peer;

typedef struct fedc_peers {
  fedc_peer *items;
  size_t count;
  size_t capacity;

  /* Open-addressing indexes with linear probing; a slot holds a dense
   * index plus one, 0 is empty. Both have mask + 1 slots. */
  uint32_t *by_id;
  uint32_t *by_client;
  size_t mask;

  /* Fenwick tree of the idle peers over the dense array: entry i (1 to
   * capacity) counts the idle peers among dense indices (i - lowbit(i),
   * i - 1]. capacity is a power of two. */
  uint32_t *idle_tree;
  size_t idle;               /* peers in state IDLE */
} fedc_peers;

void fedc_peers_init(fedc_peers *peers);

/* Frees every peer's upload and the table. */
void fedc_peers_close(fedc_peers *peers);

/* Adds a peer in state HANDSHAKE with connection id id, without client id
 * or identity. Returns 0 and the peer, FEDC_EDUP if id is already present,
 * or FEDC_ENOMEM. */
int fedc_peers_add(fedc_peers *peers, uint64_t id, fedc_peer **out);

fedc_peer *fedc_peers_find(const fedc_peers *peers, uint64_t id);
fedc_peer *fedc_peers_find_client(const fedc_peers *peers,
                                  const char *client_id);

/* Sets the peer's client id (at most FEDC_ID_MAX bytes) and indexes it.
 * The peer must not have one yet and no other peer may hold client_id.
 * Returns 0, or FEDC_ENOMEM with the peer unchanged. */
int fedc_peers_set_client(fedc_peers *peers, fedc_peer *peer,
                          const char *client_id);

/* Sets the peer's TLS identity (at most FEDC_ID_MAX bytes; longer ones are
 * cut). Returns 0, or FEDC_ENOMEM with the peer unchanged. */
int fedc_peers_set_identity(fedc_peer *peer, const char *identity);

/* Moves the peer to state, keeping the idle count and index current. */
void fedc_peers_set_state(fedc_peers *peers, fedc_peer *peer,
                          enum fedc_peer_state state);

/* Returns the number of peers in state IDLE. */
size_t fedc_peers_idle_count(const fedc_peers *peers);

/* Returns the dense index of the idle peer of rank rank, counting idle
 * peers from 0 in dense-array order. rank must be below the idle count.
 * O(log capacity). */
size_t fedc_peers_idle_at(const fedc_peers *peers, size_t rank);

/* Frees the peer's upload and removes it. */
void fedc_peers_remove(fedc_peers *peers, fedc_peer *peer);

#endif
