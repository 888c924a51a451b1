#include "peers.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* The array's first capacity. It doubles from there, which keeps it a
 * power of two, as the idle tree's search needs. */
#define PEERS_MIN_SLOTS 16

/* The client id and identity of a peer that has none. */
static const char no_string[] = "";

static size_t lowbit(size_t i)
{
  return i & (~i + 1);
}

/* Adds delta (+1 or -1, as unsigned) at dense index k of the idle tree. */
static void idle_tree_add(fedc_peers *p, size_t k, uint32_t delta)
{
  for (size_t i = k + 1; i <= p->capacity; i += lowbit(i))
    p->idle_tree[i] += delta;
}

/* Builds the idle tree of a new capacity in O(capacity). */
static int idle_tree_build(fedc_peers *p, size_t capacity)
{
  uint32_t *tree = calloc(capacity + 1, sizeof(*tree));

  if (!tree)
    return FEDC_ENOMEM;
  for (size_t i = 1; i <= capacity; i++) {
    if (i <= p->count && p->items[i - 1].state == FEDC_PEER_IDLE)
      tree[i]++;
    if (i + lowbit(i) <= capacity)
      tree[i + lowbit(i)] += tree[i];
  }
  free(p->idle_tree);
  p->idle_tree = tree;
  return 0;
}

/* Returns a heap copy of the first FEDC_ID_MAX bytes of s, no_string for
 * "", or NULL without memory. */
static const char *copy_id(const char *s)
{
  size_t len = strnlen(s, FEDC_ID_MAX);
  char *copy;

  if (len == 0)
    return no_string;
  copy = malloc(len + 1);
  if (!copy)
    return NULL;
  memcpy(copy, s, len);
  copy[len] = '\0';
  return copy;
}

static void free_id(const char **s)
{
  if (*s != no_string)
    free((char *)*s);
  *s = no_string;
}

/* Frees what a peer owns: its strings and its upload. */
static void release_peer(fedc_peer *peer)
{
  free_id(&peer->client_id);
  free_id(&peer->identity);
  fedc_assembler_free(&peer->upload);
}

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
    if (idle_tree_build(p, cap) < 0)
      return FEDC_ENOMEM;
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
    release_peer(&peers->items[k]);
  free(peers->items);
  free(peers->by_id);
  free(peers->by_client);
  free(peers->idle_tree);
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
  peer->client_id = no_string;
  peer->identity = no_string;
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

int fedc_peers_set_client(fedc_peers *peers, fedc_peer *peer,
                          const char *client_id)
{
  const char *copy = copy_id(client_id);

  assert(peer->client_id[0] == '\0');
  if (!copy)
    return FEDC_ENOMEM;
  peer->client_id = copy;
  if (copy[0] != '\0')
    *probe_client(peers, peer->client_id) =
      (uint32_t)(peer - peers->items + 1);
  return 0;
}

int fedc_peers_set_identity(fedc_peer *peer, const char *identity)
{
  const char *copy = copy_id(identity);

  if (!copy)
    return FEDC_ENOMEM;
  free_id(&peer->identity);
  peer->identity = copy;
  return 0;
}

void fedc_peers_set_state(fedc_peers *peers, fedc_peer *peer,
                          enum fedc_peer_state state)
{
  size_t k = (size_t)(peer - peers->items);
  bool was_idle = peer->state == FEDC_PEER_IDLE;
  bool is_idle = state == FEDC_PEER_IDLE;

  peer->state = state;
  if (was_idle == is_idle)
    return;
  idle_tree_add(peers, k, is_idle ? 1 : UINT32_MAX);
  if (is_idle)
    peers->idle++;
  else
    peers->idle--;
}

size_t fedc_peers_idle_count(const fedc_peers *peers)
{
  return peers->idle;
}

size_t fedc_peers_idle_at(const fedc_peers *peers, size_t rank)
{
  size_t pos = 0;

  assert(rank < peers->idle);
  assert((peers->capacity & (peers->capacity - 1)) == 0);

  /* Descend from the largest power of two to find the longest prefix
   * with at most rank idle peers. The peer right after it is the one. */
  for (size_t step = peers->capacity; step > 0; step >>= 1) {
    if (pos + step <= peers->capacity && peers->idle_tree[pos + step] <= rank) {
      pos += step;
      rank -= peers->idle_tree[pos];
    }
  }
  return pos;
}

void fedc_peers_remove(fedc_peers *peers, fedc_peer *peer)
{
  size_t k = (size_t)(peer - peers->items);
  size_t last = peers->count - 1;

  fedc_peers_set_state(peers, peer, FEDC_PEER_HANDSHAKE);
  delete_slot(peers, peers->by_id, (size_t)(probe_id(peers, peer->id) -
                                            peers->by_id));
  if (peer->client_id[0] != '\0')
    delete_slot(peers, peers->by_client,
                (size_t)(probe_client(peers, peer->client_id) -
                         peers->by_client));
  release_peer(peer);

  /* Move the last peer into the hole and repoint its index entries. */
  if (k != last) {
    bool idle = peers->items[last].state == FEDC_PEER_IDLE;

    if (idle)
      idle_tree_add(peers, last, UINT32_MAX);
    peers->items[k] = peers->items[last];
    if (idle)
      idle_tree_add(peers, k, 1);
    *probe_id(peers, peers->items[k].id) = (uint32_t)(k + 1);
    if (peers->items[k].client_id[0] != '\0')
      *probe_client(peers, peers->items[k].client_id) = (uint32_t)(k + 1);
  }
  peers->count--;
}
