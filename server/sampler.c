/* Cohort sampling for synchronous rounds: uniform, Poisson and Oort's
 * utility-guided selection, with over-selection and the concurrency cap.
 *
 * Oort follows Lai et al., "Oort: Efficient Federated Learning via Guided
 * Participant Selection" (OSDI 2021), Algorithm 1: explored clients are
 * ranked by statistical utility plus a bonus for not being picked
 * recently, penalised when slower than the preferred round duration T; the
 * cohort takes the clients above 95% of the cut-off utility, sampled by
 * utility, plus an exploration share of clients never heard from; a pacer
 * relaxes T when the utility collected stalls. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/engine_impl.h"
#include "util/error.h"
#include "util/log.h"
#include "util/rng.h"

#define LOG_COMPONENT "engine"

/* Oort's exploration decay per round and its cut-off: clients within this
 * share of the last admitted utility are kept as candidates. */
#define OORT_EXPLORATION_DECAY 0.98
#define OORT_CUTOFF 0.95

/* The weight of the bonus for clients not picked recently. */
#define OORT_STALENESS_WEIGHT 0.1

/* Random streams apart from the uniform cohort's, which keeps the stream
 * of the round id alone so that its cohorts do not change. */
#define POISSON_STREAM UINT64_C(0x706f6973736f6e)
#define OORT_STREAM UINT64_C(0x6f6f7274)

typedef struct scored {
  double utility;
  uint32_t index;            /* into the peer array */
} scored;

/* ceil(fraction x n), with a margin so that 0.1 x 30 gives 3, not the 4
 * that the rounding error of 0.1 would give. */
static uint64_t ceil_share(double fraction, uint64_t n)
{
  double x = ceil(fraction * (double)n - 1e-9);

  return x <= 0 ? 0 : (uint64_t)x;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

static uint64_t cohort_size(const fedc_server_engine_config *c, uint64_t idle)
{
  uint64_t n = c->clients_per_round;

  if (n == 0)
    n = ceil_share(c->fraction_fit, idle);
  if (n < c->min_fit_clients)
    n = c->min_fit_clients;
  if (c->max_fit_clients > 0)
    n = min_u64(n, c->max_fit_clients);
  n = min_u64(n, idle);
  return n > 0 ? n : 1;
}

/* Clients asked to train: the cohort, over-selected, cut to the idle
 * clients and the concurrency limit. */
static uint64_t selection_size(const fedc_server_engine_config *c,
                               uint64_t cohort, uint64_t idle)
{
  uint64_t n = cohort;

  if (c->over_selection > 1.0)
    n = ceil_share(c->over_selection, cohort);
  n = min_u64(n, idle);
  if (c->max_concurrency > 0)
    n = min_u64(n, c->max_concurrency);
  return n;
}

static void swap_u32(uint32_t *items, size_t i, size_t j)
{
  uint32_t t = items[i];

  items[i] = items[j];
  items[j] = t;
}

int fedc_sampler_reserve(fedc_server_engine *e, size_t n)
{
  uint32_t *s;

  if (e->scratch_capacity >= n)
    return 0;
  s = realloc(e->scratch, n * sizeof(*s));
  if (!s)
    return FEDC_ENOMEM;
  e->scratch = s;
  e->scratch_capacity = n;
  return 0;
}

/* Writes the dense indices of all idle peers to e->scratch in ascending
 * order and returns their number in *count. O(peers): Poisson and Oort
 * look at every idle peer anyway. */
static int collect_idle(fedc_server_engine *e, size_t *count)
{
  size_t n = 0;
  int rc = fedc_sampler_reserve(e, fedc_peers_idle_count(&e->peers));

  if (rc < 0)
    return rc;
  for (size_t k = 0; k < e->peers.count; k++)
    if (e->peers.items[k].state == FEDC_PEER_IDLE)
      e->scratch[n++] = (uint32_t)k;
  assert(n == fedc_peers_idle_count(&e->peers));
  *count = n;
  return 0;
}

/* Positions of the sparse shuffle whose entry is not the idle peer of that
 * rank: an open-addressing map from position to dense index. A key is
 * stored plus one, so 0 marks an empty slot. */
typedef struct moved_map {
  uint64_t *slots;           /* key + 1 in the high half, value low */
  size_t mask;
} moved_map;

static size_t moved_slot(const moved_map *m, uint32_t key)
{
  size_t i = (size_t)((key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & m->mask;

  while (m->slots[i] != 0 && (uint32_t)(m->slots[i] >> 32) != key + 1)
    i = (i + 1) & m->mask;
  return i;
}

/* Returns the entry at position pos of the virtual array of idle peers. */
static uint32_t moved_get(const moved_map *m, const fedc_peers *peers,
                          uint32_t pos)
{
  uint64_t slot = m->slots[moved_slot(m, pos)];

  if (slot != 0)
    return (uint32_t)slot;
  return (uint32_t)fedc_peers_idle_at(peers, pos);
}

static void moved_put(moved_map *m, uint32_t pos, uint32_t value)
{
  m->slots[moved_slot(m, pos)] = ((uint64_t)(pos + 1) << 32) | value;
}

int fedc_sampler_draw(fedc_server_engine *e, fedc_rng *rng, size_t n)
{
  size_t idle = fedc_peers_idle_count(&e->peers);
  size_t slots = 16;
  moved_map moved;
  int rc = fedc_sampler_reserve(e, n);

  assert(n <= idle);
  if (rc < 0)
    return rc;

  /* Each step moves at most one entry past the front, so 2n slots keep the
   * map at most half full. */
  while (slots < 2 * n)
    slots *= 2;
  moved.slots = calloc(slots, sizeof(*moved.slots));
  if (!moved.slots)
    return FEDC_ENOMEM;
  moved.mask = slots - 1;

  /* Step i swaps position i with a uniform position j in [i, idle), as
   * pick_uniform() does on a full array. Position i is final after it. */
  for (size_t i = 0; i < n; i++) {
    uint32_t j = (uint32_t)(i + fedc_rng_below(rng, idle - i));
    uint32_t at_i = moved_get(&moved, &e->peers, (uint32_t)i);

    e->scratch[i] = moved_get(&moved, &e->peers, j);
    if (j != i)
      moved_put(&moved, j, at_i);
  }
  free(moved.slots);
  return 0;
}

/* Moves n indices drawn uniformly without replacement from items[from..
 * from + count) to items[from..from + n) (partial Fisher-Yates). */
static void pick_uniform(fedc_rng *rng, uint32_t *items, size_t from,
                         size_t count, size_t n)
{
  for (size_t i = 0; i < n; i++)
    swap_u32(items, from + i,
             from + i + (size_t)fedc_rng_below(rng, count - i));
}

static int pick_poisson(fedc_server_engine *e, uint32_t *picked)
{
  size_t idle = 0;
  fedc_rng rng;
  uint32_t n = 0;
  int rc = collect_idle(e, &idle);

  if (rc < 0)
    return rc;
  fedc_rng_seed2(&rng, e->config.seed ^ POISSON_STREAM, e->round.id);
  for (size_t k = 0; k < idle; k++)
    if (fedc_rng_uniform(&rng) < e->config.poisson_q)
      swap_u32(e->scratch, n++, k);
  *picked = n;
  return 0;
}

/* Returns Oort's utility of an explored peer in round. */
static double oort_utility(const fedc_server_engine *e, const fedc_peer *p,
                           uint64_t round)
{
  double u = p->utility;
  double t = e->oort.preferred_ms;

  if (p->last_picked > 0 && round > 1)
    u += sqrt(OORT_STALENESS_WEIGHT * log((double)round) /
              (double)p->last_picked);
  if (t > 0 && p->duration_ms > t)
    u *= pow(t / p->duration_ms, e->config.oort.alpha);
  return u;
}

static int by_utility_desc(const void *a, const void *b)
{
  const scored *x = a, *y = b;

  if (x->utility != y->utility)
    return x->utility < y->utility ? 1 : -1;
  return x->index < y->index ? -1 : (x->index > y->index);
}

/* Draws n of the candidates without replacement, each draw with
 * probability proportional to utility; writes their peer indices to out. */
static void draw_by_utility(fedc_rng *rng, scored *cand, size_t count,
                            size_t n, uint32_t *out)
{
  for (size_t i = 0; i < n; i++) {
    double total = 0.0, x;
    size_t k = i;

    for (size_t j = i; j < count; j++)
      total += cand[j].utility;
    x = fedc_rng_uniform(rng) * total;
    for (size_t j = i; j < count && total > 0; j++) {
      k = j;
      x -= cand[j].utility;
      if (x < 0)
        break;
    }
    if (!(total > 0))
      k = i + (size_t)fedc_rng_below(rng, count - i);
    out[i] = cand[k].index;
    cand[k] = cand[i];
  }
}

/* Picks exploit clients among the explored ones in items[0..count) by
 * utility, into items[0..exploit). */
static int pick_exploit(fedc_server_engine *e, fedc_rng *rng, uint32_t *items,
                        size_t count, size_t exploit)
{
  scored *cand;
  size_t admitted = 0;
  double cutoff;

  if (exploit == 0)
    return 0;
  cand = malloc(count * sizeof(*cand));
  if (!cand)
    return FEDC_ENOMEM;
  for (size_t k = 0; k < count; k++) {
    cand[k].index = items[k];
    cand[k].utility = oort_utility(e, &e->peers.items[items[k]], e->round.id);
  }
  qsort(cand, count, sizeof(*cand), by_utility_desc);

  cutoff = OORT_CUTOFF * cand[exploit - 1].utility;
  while (admitted < count && cand[admitted].utility >= cutoff)
    admitted++;
  draw_by_utility(rng, cand, admitted, exploit, items);
  free(cand);
  return 0;
}

/* Oort: splits the idle peers into explored (front) and unexplored, then
 * takes n - explore by utility and explore at random from the unexplored,
 * filling either side from the other when it runs short. */
static int pick_oort(fedc_server_engine *e, size_t n)
{
  size_t idle = 0, explored = 0, unexplored, explore, exploit;
  uint32_t *items;
  fedc_rng rng;
  int rc = collect_idle(e, &idle);

  if (rc < 0)
    return rc;
  items = e->scratch;
  for (size_t k = 0; k < idle; k++)
    if (e->peers.items[items[k]].explored)
      swap_u32(items, explored++, k);
  unexplored = idle - explored;

  explore = (size_t)min_u64(unexplored, (uint64_t)llround(
                              e->oort.exploration * (double)n));
  exploit = (size_t)min_u64(explored, n - explore);
  explore = (size_t)min_u64(unexplored, n - exploit);

  fedc_rng_seed2(&rng, e->config.seed ^ OORT_STREAM, e->round.id);
  rc = pick_exploit(e, &rng, items, explored, exploit);
  if (rc < 0)
    return rc;

  /* Bring explore random unexplored peers right after the exploited. */
  pick_uniform(&rng, items, explored, unexplored, explore);
  for (size_t i = 0; i < explore; i++)
    swap_u32(items, exploit + i, explored + i);
  return 0;
}

uint32_t fedc_sampler_quorum(const fedc_server_engine_config *c,
                             uint32_t cohort)
{
  uint64_t q = ceil_share(c->quorum_fraction, cohort);

  if (q < c->quorum_count)
    q = c->quorum_count;
  q = min_u64(q, cohort);
  return (uint32_t)(q > 0 ? q : 1);
}

int fedc_sampler_pick(fedc_server_engine *e, uint32_t *picked,
                      uint32_t *cohort)
{
  const fedc_server_engine_config *c = &e->config;
  size_t idle = fedc_peers_idle_count(&e->peers);
  uint64_t n, m;
  fedc_rng rng;
  int rc = 0;

  if (c->sampling == FEDC_SAMPLING_POISSON) {
    rc = pick_poisson(e, picked);
    if (c->max_concurrency > 0 && *picked > c->max_concurrency)
      *picked = c->max_concurrency;
    *cohort = *picked;
    return rc;
  }

  n = cohort_size(c, idle);
  m = selection_size(c, n, idle);
  if (c->sampling == FEDC_SAMPLING_OORT) {
    rc = pick_oort(e, (size_t)m);
  } else {
    fedc_rng_seed2(&rng, c->seed, e->round.id);
    rc = fedc_sampler_draw(e, &rng, (size_t)m);
  }
  *picked = (uint32_t)m;
  *cohort = (uint32_t)min_u64(n, m);
  return rc;
}

void fedc_sampler_observe(fedc_server_engine *e, fedc_peer *peer,
                          uint64_t now_ms)
{
  double loss = peer->result_loss;

  peer->duration_ms = (double)(now_ms - peer->task_sent_ms);
  if (!isfinite(loss) || loss < 0)
    loss = 0;
  peer->utility = (double)peer->result_examples * loss;
  peer->explored = true;
  e->round.utility += peer->utility;
}

void fedc_sampler_straggled(fedc_server_engine *e, fedc_peer *peer,
                            uint64_t now_ms)
{
  double elapsed = (double)(now_ms - peer->task_sent_ms);

  (void)e;
  if (elapsed > peer->duration_ms)
    peer->duration_ms = elapsed;
}

static int by_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

/* Sets T to the median duration of the round's reporters, the first time
 * a round has any. */
static void measure_preferred(fedc_server_engine *e)
{
  double *d = malloc(e->round.reported * sizeof(*d));
  size_t n = 0;

  if (!d)
    return;
  for (size_t i = 0; i < e->cohort_count && n < e->round.reported; i++) {
    const fedc_peer *p = fedc_peers_find(&e->peers, e->cohort[i]);

    if (p && p->task_round == e->round.id && p->state == FEDC_PEER_REPORTED)
      d[n++] = p->duration_ms;
  }
  if (n > 0) {
    qsort(d, n, sizeof(*d), by_double);
    e->oort.preferred_ms = d[n / 2] > 1 ? d[n / 2] : 1;
    if (e->oort.pacer_step_ms == 0)
      e->oort.pacer_step_ms = e->oort.preferred_ms / 10;
    fedc_info(LOG_COMPONENT, "oort preferred round duration set round=%llu "
              "preferred_ms=%.0f", (unsigned long long)e->round.id,
              e->oort.preferred_ms);
  }
  free(d);
}

static void run_pacer(fedc_server_engine *e)
{
  fedc_oort_state *o = &e->oort;
  uint32_t window = e->config.oort.pacer_window;

  if (window == 0)
    return;
  o->window_utility += e->round.utility;
  if (++o->window_rounds < window)
    return;
  if (o->has_last_window && o->window_utility < o->last_window_utility &&
      o->preferred_ms > 0) {
    o->preferred_ms += o->pacer_step_ms;
    fedc_info(LOG_COMPONENT, "oort pacer relaxed the preferred duration "
              "round=%llu preferred_ms=%.0f", (unsigned long long)e->round.id,
              o->preferred_ms);
  }
  o->last_window_utility = o->window_utility;
  o->has_last_window = true;
  o->window_utility = 0;
  o->window_rounds = 0;
}

void fedc_sampler_round_closed(fedc_server_engine *e)
{
  fedc_oort_state *o = &e->oort;

  if (e->config.sampling != FEDC_SAMPLING_OORT)
    return;
  if (o->preferred_ms == 0 && e->round.reported > 0)
    measure_preferred(e);
  run_pacer(e);
  o->exploration *= OORT_EXPLORATION_DECAY;
  if (o->exploration < e->config.oort.exploration_min)
    o->exploration = e->config.oort.exploration_min;
}
