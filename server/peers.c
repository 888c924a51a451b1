#include "peers.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

#define PEERS_MIN_SLOTS 16

/* The splitmix64 finalizer: connection ids are often sequential, and this
 * spreads them over the table. */
static size_t hash_id(uint64_t id)
{
  id ^= id >> 30;
  id *= UINT64_C(0xbf58476d1ce4e5b9);
  id ^= id >> 27;
  id *= UINT64_C(0x94d049bb133111eb);
  id ^= id >> 31;
  return (size_t)id;
}

/* FNV-1a, 64 bits. */
static size_t hash_client(const char *s)
{
  uint64_t h = UINT64_C(0xcbf29ce484222325);

  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= UINT64_C(0x100000001b3);
  }
  return (size_t)h;
}

static size_t slot_hash(const fedc_peers *p, const uint32_t *table,
                        uint32_t slot)
{
  const fedc_peer *peer = &p->items[slot - 1];

  if (table == p->by_id)
    return hash_id(peer->id);
  return hash_client(peer->client_id);
}

/* Returns the slot that holds id, or the empty slot where it would go. */
static uint32_t *probe_id(const fedc_peers *p, uint64_t id)
{
  size_t i = hash_id(id) & p->mask;

  while (p->by_id[i] != 0 && p->items[p->by_id[i] - 1].id != id)
    i = (i + 1) & p->mask;
  return &p->by_id[i];
}

static uint32_t *probe_client(const fedc_peers *p, const char *client_id)
{
  size_t i = hash_client(client_id) & p->mask;

  while (p->by_client[i] != 0 &&
         strcmp(p->items[p->by_client[i] - 1].client_id, client_id) != 0)
    i = (i + 1) & p->mask;
  return &p->by_client[i];
}

/* Empties slot i and moves later entries of its probe run back, so lookups
 * need no tombstones (Knuth's deletion for linear probing). */
static void delete_slot(const fedc_peers *p, uint32_t *table, size_t i)
{
  size_t j = i;

  for (;;) {
    size_t home;

    j = (j + 1) & p->mask;
    if (table[j] == 0)
      break;
    home = slot_hash(p, table, table[j]) & p->mask;
    /* Move the entry back unless its home lies cyclically in (i, j]. */
    if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
      table[i] = table[j];
      i = j;
    }
  }
  table[i] = 0;
}

static int rebuild(fedc_peers *p, size_t slots)
{
  uint32_t *by_id = calloc(slots, sizeof(*by_id));
  uint32_t *by_client = calloc(slots, sizeof(*by_client));

  if (!by_id || !by_client) {
    free(by_id);
    free(by_client);
    return FEDC_ENOMEM;
  }
  free(p->by_id);
  free(p->by_client);
  p->by_id = by_id;
  p->by_client = by_client;
  p->mask = slots - 1;

  for (size_t k = 0; k < p->count; k++) {
    *probe_id(p, p->items[k].id) = (uint32_t)(k + 1);
    if (p->items[k].client_id[0] != '\0')
      *probe_client(p, p->items[k].client_id) = (uint32_t)(k + 1);
  }
  return 0;
}

/* Keeps the array room for one more peer and the indexes at most half
 * full. */
static int grow(fedc_peers *p)
{
  if (p->count == UINT32_MAX - 1)
    return FEDC_ENOMEM;
  if (p->count == p->capacity) {
    size_t cap = p->capacity ? p->capacity * 2 : PEERS_MIN_SLOTS;
    fedc_peer *items = realloc(p->items, cap * sizeof(*items));

    if (!items)
      return FEDC_ENOMEM;
    p->items = items;
    p->capacity = cap;
  }
  if (p->by_id && 2 * (p->count + 1) <= p->mask + 1)
    return 0;
  return rebuild(p, p->by_id ? 2 * (p->mask + 1) : PEERS_MIN_SLOTS);
}

void fedc_peers_init(fedc_peers *peers)
{
  memset(peers, 0, sizeof(*peers));
}

void fedc_peers_close(fedc_peers *peers)
{
  for (size_t k = 0; k < peers->count; k++)
    fedc_assembler_free(&peers->items[k].upload);
  free(peers->items);
  free(peers->by_id);
  free(peers->by_client);
  fedc_peers_init(peers);
}

int fedc_peers_add(fedc_peers *peers, uint64_t id, fedc_peer **out)
{
  fedc_peer *peer;
  int rc;

  *out = NULL;
  if (fedc_peers_find(peers, id))
    return FEDC_EDUP;
  rc = grow(peers);
  if (rc < 0)
    return rc;

  peer = &peers->items[peers->count++];
  memset(peer, 0, sizeof(*peer));
  peer->id = id;
  peer->state = FEDC_PEER_HANDSHAKE;
  *probe_id(peers, id) = (uint32_t)peers->count;
  *out = peer;
  return 0;
}

fedc_peer *fedc_peers_find(const fedc_peers *peers, uint64_t id)
{
  uint32_t slot;

  if (!peers->by_id)
    return NULL;
  slot = *probe_id(peers, id);
  return slot ? &peers->items[slot - 1] : NULL;
}

fedc_peer *fedc_peers_find_client(const fedc_peers *peers,
                                  const char *client_id)
{
  uint32_t slot;

  if (!peers->by_client || client_id[0] == '\0')
    return NULL;
  slot = *probe_client(peers, client_id);
  return slot ? &peers->items[slot - 1] : NULL;
}

void fedc_peers_set_client(fedc_peers *peers, fedc_peer *peer,
                           const char *client_id)
{
  size_t len = strnlen(client_id, FEDC_ID_MAX);

  memcpy(peer->client_id, client_id, len);
  peer->client_id[len] = '\0';
  *probe_client(peers, peer->client_id) =
    (uint32_t)(peer - peers->items + 1);
}

void fedc_peers_remove(fedc_peers *peers, fedc_peer *peer)
{
  size_t k = (size_t)(peer - peers->items);
  size_t last = peers->count - 1;

  fedc_assembler_free(&peer->upload);
  delete_slot(peers, peers->by_id, (size_t)(probe_id(peers, peer->id) -
                                            peers->by_id));
  if (peer->client_id[0] != '\0')
    delete_slot(peers, peers->by_client,
                (size_t)(probe_client(peers, peer->client_id) -
                         peers->by_client));

  /* Move the last peer into the hole and repoint its index entries. */
  if (k != last) {
    peers->items[k] = peers->items[last];
    *probe_id(peers, peers->items[k].id) = (uint32_t)(k + 1);
    if (peers->items[k].client_id[0] != '\0')
      *probe_client(peers, peers->items[k].client_id) = (uint32_t)(k + 1);
  }
  peers->count--;
}
