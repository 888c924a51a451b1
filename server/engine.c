/* The server engine's configuration and events: peers, handshakes and
 * messages. The round lifecycle is in round.c, sampling in sampler.c and
 * the asynchronous modes in async.c. */
#include "server/engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/engine_impl.h"
#include "util/error.h"
#include "util/log.h"

#define LOG_COMPONENT "engine"

/* Bytes a chunk envelope adds to its data: tags, lengths and the other
 * fields. A generous bound, used to check that chunks fit in a frame. */
#define CHUNK_OVERHEAD_BYTES 64

void fedc_server_engine_config_default(fedc_server_engine_config *config)
{
  memset(config, 0, sizeof(*config));
  config->min_clients = 2;
  config->fraction_fit = 1.0;
  config->min_fit_clients = 1;
  config->quorum_fraction = 1.0;
  config->quorum_count = 1;
  config->round_deadline_ms = 10 * 60 * 1000;
  config->total_rounds = 10;
  config->retry_delay_ms = 1000;
  config->retry_delay_max_ms = 60 * 1000;
  config->max_abandoned_rounds = 10;
  config->max_update_norm = 1e4;
  config->evaluate_every = 1;
  config->train.local_epochs = 1;
  config->train.batch_size = 32;
  config->train.learning_rate = 0.01f;
  config->model_spec = "";
  config->server_id = "fedc-server";
  fedc_agg_config_default(&config->agg, FEDC_AGG_FEDAVG);
  config->chunk_bytes = 1u << 20;
  config->max_frame_bytes = 4u << 20;

  config->sampling = FEDC_SAMPLING_UNIFORM;
  config->poisson_q = 0.1;
  config->over_selection = 1.0;
  config->oort.exploration = 0.9;
  config->oort.exploration_min = 0.2;
  config->oort.alpha = 2.0;
  config->oort.pacer_window = 5;
  config->mode = FEDC_ROUNDS_SYNC;
  config->buffer_size = 10;
  config->async_alpha = 0.5;
  config->staleness_fn = FEDC_STALENESS_POLYNOMIAL;
  config->staleness_a = 0.5;
  config->staleness_b = 4;
}

static int parse_name(const char *name, const char *const *names, size_t n,
                      int *out)
{
  for (size_t i = 0; name && i < n; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (int)i;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

int fedc_sampling_parse(const char *name, enum fedc_sampling *out)
{
  static const char *const names[] = { "uniform", "poisson", "oort" };
  int v;
  int rc = parse_name(name, names, 3, &v);

  if (rc == 0)
    *out = (enum fedc_sampling)v;
  return rc;
}

int fedc_rounds_mode_parse(const char *name, enum fedc_rounds_mode *out)
{
  static const char *const names[] = { "sync", "fedbuff", "fedasync" };
  int v;
  int rc = parse_name(name, names, 3, &v);

  if (rc == 0)
    *out = (enum fedc_rounds_mode)v;
  return rc;
}

int fedc_staleness_fn_parse(const char *name, enum fedc_staleness_fn *out)
{
  static const char *const names[] = { "constant", "polynomial", "hinge" };
  int v;
  int rc = parse_name(name, names, 3, &v);

  if (rc == 0)
    *out = (enum fedc_staleness_fn)v;
  return rc;
}

double fedc_staleness_weight(const fedc_server_engine_config *config,
                             uint64_t staleness)
{
  double t = (double)staleness;

  switch (config->staleness_fn) {
  case FEDC_STALENESS_POLYNOMIAL:
    return pow(1.0 + t, -config->staleness_a);
  case FEDC_STALENESS_HINGE:
    if (staleness <= config->staleness_b)
      return 1.0;
    return 1.0 / (config->staleness_a * (t - config->staleness_b) + 1.0);
  default:
    return 1.0;
  }
}

/* Reports an invalid setting: returns FEDC_EINVAL with the sentence in
 * reason. */
__attribute__((format(printf, 3, 4)))
static int invalid(char *reason, size_t size, const char *fmt, ...)
{
  va_list ap;

  if (reason && size > 0) {
    va_start(ap, fmt);
    vsnprintf(reason, size, fmt, ap);
    va_end(ap);
  }
  return FEDC_EINVAL;
}

static bool in_range(double x, double lo, double hi)
{
  return x >= lo && x <= hi;
}

static int check_cohort(const fedc_server_engine_config *c, char *reason,
                        size_t size)
{
  if (!(c->fraction_fit > 0.0 && c->fraction_fit <= 1.0))
    return invalid(reason, size, "fraction_fit %g is not in (0, 1]",
                   c->fraction_fit);
  if (!in_range(c->quorum_fraction, 0.0, 1.0))
    return invalid(reason, size, "quorum fraction %g is not in [0, 1]",
                   c->quorum_fraction);
  if (c->max_fit_clients > 0 && c->max_fit_clients < c->min_fit_clients)
    return invalid(reason, size, "max_fit_clients %u is below "
                   "min_fit_clients %u", c->max_fit_clients,
                   c->min_fit_clients);
  if ((unsigned)c->sampling > FEDC_SAMPLING_OORT)
    return invalid(reason, size, "unknown sampling mode %d", (int)c->sampling);
  if (!(c->poisson_q > 0.0 && c->poisson_q <= 1.0))
    return invalid(reason, size, "poisson_q %g is not in (0, 1]",
                   c->poisson_q);
  if (!in_range(c->over_selection, 1.0, 100.0))
    return invalid(reason, size, "over_selection %g is not in [1, 100]",
                   c->over_selection);
  if (!in_range(c->oort.exploration, 0.0, 1.0) ||
      !in_range(c->oort.exploration_min, 0.0, c->oort.exploration))
    return invalid(reason, size, "Oort exploration %g and its minimum %g "
                   "must satisfy 0 <= minimum <= exploration <= 1",
                   c->oort.exploration, c->oort.exploration_min);
  if (!in_range(c->oort.alpha, 0.0, 100.0))
    return invalid(reason, size, "Oort alpha %g is not in [0, 100]",
                   c->oort.alpha);
  return 0;
}

/* Returns the largest cohort a synchronous round can sample, or 0 when it
 * depends on how many clients are idle or on a Poisson draw. */
static uint32_t largest_cohort(const fedc_server_engine_config *c)
{
  uint32_t max_cohort;

  if (c->sampling == FEDC_SAMPLING_POISSON)
    return 0;
  if (c->clients_per_round > 0)
    max_cohort = c->clients_per_round > c->min_fit_clients
                   ? c->clients_per_round : c->min_fit_clients;
  else
    max_cohort = c->max_fit_clients;
  if (c->max_fit_clients > 0 && max_cohort > c->max_fit_clients)
    max_cohort = c->max_fit_clients;
  return max_cohort;
}

/* Krum needs 2f + 3 updates a round; a fixed cohort below that would
 * abandon every round. */
static int check_sync_krum(const fedc_server_engine_config *c, char *reason,
                           size_t size)
{
  enum fedc_agg_strategy s = c->agg.strategy;
  uint32_t need = 2 * c->agg.krum_byzantine + 3;
  uint32_t max_cohort = largest_cohort(c);

  if ((s != FEDC_AGG_KRUM && s != FEDC_AGG_MULTI_KRUM) || max_cohort == 0 ||
      max_cohort >= need)
    return 0;
  return invalid(reason, size, "Krum with f = %u needs %u updates a round, "
                 "but a round samples at most %u clients; raise "
                 "clients_per_round or lower krum_byzantine",
                 c->agg.krum_byzantine, need, max_cohort);
}

/* Robust strategies need a whole cohort, which FedAsync never has, and
 * Krum needs 2f + 3 updates in each FedBuff buffer. */
static int check_async(const fedc_server_engine_config *c, char *reason,
                       size_t size)
{
  enum fedc_agg_strategy s = c->agg.strategy;
  bool robust = s == FEDC_AGG_MEDIAN || s == FEDC_AGG_TRIMMED_MEAN ||
                s == FEDC_AGG_KRUM || s == FEDC_AGG_MULTI_KRUM;
  bool krum = s == FEDC_AGG_KRUM || s == FEDC_AGG_MULTI_KRUM;

  if ((unsigned)c->mode > FEDC_ROUNDS_FEDASYNC)
    return invalid(reason, size, "unknown rounds mode %d", (int)c->mode);
  if ((unsigned)c->staleness_fn > FEDC_STALENESS_HINGE ||
      !in_range(c->staleness_a, 0.0, 1e6))
    return invalid(reason, size, "invalid staleness function: a = %g must "
                   "be in [0, 1e6]", c->staleness_a);
  if (c->mode == FEDC_ROUNDS_SYNC)
    return check_sync_krum(c, reason, size);
  if (c->sampling != FEDC_SAMPLING_UNIFORM || c->over_selection > 1.0)
    return invalid(reason, size, "Poisson or Oort sampling and "
                   "over-selection apply to synchronous rounds only");
  if (c->mode == FEDC_ROUNDS_FEDBUFF && c->buffer_size == 0)
    return invalid(reason, size, "FedBuff buffer_size must be at least 1");
  if (c->mode == FEDC_ROUNDS_FEDASYNC &&
      !(c->async_alpha > 0.0 && c->async_alpha <= 1.0))
    return invalid(reason, size, "FedAsync alpha %g is not in (0, 1]",
                   c->async_alpha);
  if (c->mode == FEDC_ROUNDS_FEDASYNC && robust)
    return invalid(reason, size, "FedAsync applies one update at a time, so "
                   "strategy %s, which needs a cohort, cannot be used; use "
                   "fedbuff", fedc_agg_strategy_name(s));
  if (c->mode == FEDC_ROUNDS_FEDBUFF && krum &&
      c->buffer_size < 2 * c->agg.krum_byzantine + 3)
    return invalid(reason, size, "Krum with f = %u needs buffer_size of at "
                   "least %u", c->agg.krum_byzantine,
                   2 * c->agg.krum_byzantine + 3);
  return 0;
}

int fedc_server_engine_config_check(const fedc_server_engine_config *c,
                                    char *reason, size_t size)
{
  int rc = check_cohort(c, reason, size);

  if (rc == 0)
    rc = check_async(c, reason, size);
  if (rc < 0)
    return rc;
  if (c->round_deadline_ms == 0 || c->chunk_bytes == 0)
    return invalid(reason, size, "round deadline and chunk_bytes must be "
                   "above 0");
  if (!(c->max_update_norm >= 0.0))
    return invalid(reason, size, "max_update_norm %g is negative or NaN",
                   c->max_update_norm);
  if (c->retry_delay_max_ms < c->retry_delay_ms)
    return invalid(reason, size, "retry_delay_max_ms %llu is below "
                   "retry_delay_ms %llu",
                   (unsigned long long)c->retry_delay_max_ms,
                   (unsigned long long)c->retry_delay_ms);
  if (c->max_frame_bytes > 0 &&
      c->chunk_bytes > c->max_frame_bytes - CHUNK_OVERHEAD_BYTES)
    return invalid(reason, size, "chunk_bytes %u does not fit in frames of "
                   "%u bytes", c->chunk_bytes, c->max_frame_bytes);
  if (!c->model_spec || strlen(c->model_spec) > FEDC_MODEL_SPEC_MAX)
    return invalid(reason, size, "model spec missing or longer than %d "
                   "bytes", FEDC_MODEL_SPEC_MAX);
  if (!c->server_id || strlen(c->server_id) > FEDC_ID_MAX)
    return invalid(reason, size, "server id missing or longer than %d bytes",
                   FEDC_ID_MAX);
  return 0;
}

static int init_engine(fedc_server_engine *e,
                       const fedc_server_engine_config *config,
                       fedc_tensor_list *model, const fedc_tensor_list *state)
{
  int rc;

  e->config = *config;
  snprintf(e->model_spec, sizeof(e->model_spec), "%s", config->model_spec);
  snprintf(e->server_id, sizeof(e->server_id), "%s", config->server_id);
  e->config.model_spec = e->model_spec;
  e->config.server_id = e->server_id;
  fedc_peers_init(&e->peers);
  fedc_peers_init(&e->closed_peers);
  e->next_timer = 1;
  e->oort.exploration = config->oort.exploration;
  e->oort.preferred_ms = (double)config->oort.preferred_ms;
  e->oort.pacer_step_ms = (double)config->oort.pacer_step_ms;
  if (e->oort.pacer_step_ms == 0)
    e->oort.pacer_step_ms = e->oort.preferred_ms / 10;

  rc = fedc_agg_new(&config->agg, model, &e->agg);
  if (rc == 0 && state)
    rc = fedc_agg_state_load(e->agg, state);
  if (rc == 0)
    rc = fedc_snapshot_new(model, &e->global);
  return rc;
}

int fedc_server_engine_new(const fedc_server_engine_config *config,
                           fedc_tensor_list *model, uint64_t completed_rounds,
                           const fedc_tensor_list *agg_state,
                           fedc_server_engine **out)
{
  char reason[FEDC_REASON_MAX];
  fedc_server_engine *e;
  int rc;

  *out = NULL;
  rc = fedc_server_engine_config_check(config, reason, sizeof(reason));
  if (rc < 0) {
    fedc_error(LOG_COMPONENT, "invalid engine configuration: %s", reason);
    return rc;
  }
  e = calloc(1, sizeof(*e));
  if (!e)
    return FEDC_ENOMEM;

  rc = init_engine(e, config, model, agg_state);
  if (rc < 0) {
    fedc_server_engine_free(&e);
    return rc;
  }
  e->last_round = completed_rounds;
  e->round.id = completed_rounds;
  *out = e;
  return 0;
}

void fedc_server_engine_free(fedc_server_engine **engine)
{
  fedc_server_engine *e;

  if (!engine || !*engine)
    return;
  e = *engine;
  fedc_peers_close(&e->peers);
  fedc_peers_close(&e->closed_peers);
  fedc_async_close(e);
  fedc_agg_free(&e->agg);
  fedc_round_forget_previous(e);
  fedc_snapshot_unref(&e->global);
  free(e->scratch);
  free(e->cohort);
  free(e);
  *engine = NULL;
}

/* Copies a string from a peer for a log line or a reason: printable ASCII
 * only, at most size - 1 bytes. */
static void copy_printable(char *dst, size_t size, const char *src)
{
  size_t n = 0;

  for (; src && *src && n + 1 < size; src++)
    dst[n++] = (*src >= 0x20 && *src <= 0x7e) ? *src : '?';
  dst[n] = '\0';
}

static void remove_peer(fedc_server_engine *e, fedc_peer *peer)
{
  if (peer->client_id[0] != '\0')
    e->stats.clients--;
  e->stats.peers--;
  fedc_peers_remove(&e->peers, peer);
}

/* Takes peer out of the round, emits CLOSE and removes it. */
static int close_peer(fedc_server_engine *e, fedc_peer *peer,
                      enum fedc_server_reject reject, const char *reason,
                      fedc_server_actions *out)
{
  fedc_server_action *a = fedc_server_actions_push(out, FEDC_SERVER_ACTION_CLOSE);

  if (!a)
    return FEDC_ENOMEM;
  a->close.peer = peer->id;
  a->close.reject = reject;
  snprintf(a->close.client_id, sizeof(a->close.client_id), "%s",
           peer->client_id);
  snprintf(a->close.reason, sizeof(a->close.reason), "%s", reason);
  fedc_round_drop_member(e, peer);
  remove_peer(e, peer);
  return 0;
}

/* Closes peer for an offense: sends it an Error with code and the reason,
 * counts the rejection, and closes it. Peer pointers are invalid after. */
__attribute__((format(printf, 6, 7)))
static int reject_peer(fedc_server_engine *e, fedc_server_actions *out,
                       fedc_peer *peer, enum fedc_server_reject reject,
                       Fedc__ErrorCode code, const char *fmt, ...)
{
  char reason[FEDC_REASON_MAX];
  fedc_message *error = NULL;
  uint64_t round = e->phase == FEDC_SERVER_TRAINING ? e->round.id : 0;
  va_list ap;
  int rc;

  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);

  rc = fedc_message_error(code, reason, round, &error);
  if (rc == 0)
    rc = fedc_server_actions_send(out, peer->id, error);
  if (rc < 0)
    return rc;
  e->stats.rejected[reject]++;
  return close_peer(e, peer, reject, reason, out);
}

/* Client ids go into log lines and metric labels: 1 to FEDC_ID_MAX bytes of
 * printable ASCII without spaces. */
static bool client_id_is_valid(const char *id)
{
  size_t len = id ? strnlen(id, FEDC_ID_MAX + 1) : 0;

  if (len == 0 || len > FEDC_ID_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if (id[i] < 0x21 || id[i] > 0x7e)
      return false;
  return true;
}

/* Registers the peer under the Hello's client id. A second connection of a
 * registered client replaces the first: the usual cause is a client that
 * reconnected before the server noticed its old connection die, and with
 * mutual TLS only the holder of the client's key can do it. */
static int on_hello(fedc_server_engine *e, fedc_peer *peer,
                    const Fedc__Hello *hello, fedc_server_actions *out)
{
  uint64_t id = peer->id;
  fedc_message *welcome = NULL;
  fedc_peer *older;
  int rc;

  if (peer->state != FEDC_PEER_HANDSHAKE)
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "second Hello");
  if (hello->protocol_version != FEDC_PROTOCOL_VERSION)
    return reject_peer(e, out, peer, FEDC_REJECT_VERSION,
                       FEDC__ERROR_CODE__BAD_VERSION,
                       "Hello has protocol version %u, expected %u",
                       hello->protocol_version, FEDC_PROTOCOL_VERSION);
  if (!client_id_is_valid(hello->client_id))
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "invalid client id: "
                       "expected 1 to %d printable characters", FEDC_ID_MAX);
  /* A client without training data could be sampled but never report. */
  if (hello->num_examples == 0)
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "Hello with "
                       "num_examples 0: a client without training data "
                       "cannot train");
  if (peer->identity[0] != '\0' &&
      strcmp(peer->identity, hello->client_id) != 0)
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "client id %s does not "
                       "match the certificate identity %s", hello->client_id,
                       peer->identity);

  older = fedc_peers_find_client(&e->peers, hello->client_id);
  if (older) {
    rc = reject_peer(e, out, older, FEDC_REJECT_DUPLICATE_CLIENT,
                     FEDC__ERROR_CODE__DUPLICATE, "client %s connected again; "
                     "this older connection is replaced", hello->client_id);
    if (rc < 0)
      return rc;
    peer = fedc_peers_find(&e->peers, id);
  }

  rc = fedc_peers_set_client(&e->peers, peer, hello->client_id);
  if (rc < 0)
    return rc;
  fedc_peers_set_state(&e->peers, peer, FEDC_PEER_IDLE);
  peer->hello_examples = hello->num_examples;
  e->stats.clients++;
  rc = fedc_message_welcome(e->server_id, e->round.id,
                            e->config.max_frame_bytes, e->config.chunk_bytes,
                            &welcome);
  if (rc < 0)
    return rc;
  return fedc_server_actions_send(out, peer->id, welcome);
}

/* Checks a FitResult of the synchronous mode: it belongs to the open
 * round, comes from a member of its cohort and is that member's first.
 * Returns 1 when it does, or the result of rejecting the peer. */
static int admit_sync_result(fedc_server_engine *e, fedc_peer *peer,
                             const Fedc__FitResult *r,
                             fedc_server_actions *out)
{
  if (e->phase != FEDC_SERVER_TRAINING || r->round != e->round.id)
    return reject_peer(e, out, peer, FEDC_REJECT_STALE,
                       FEDC__ERROR_CODE__STALE_ROUND, "result for round %llu, "
                       "which is not open", (unsigned long long)r->round);
  if (peer->task_round != e->round.id)
    return reject_peer(e, out, peer, FEDC_REJECT_NOT_SAMPLED,
                       FEDC__ERROR_CODE__NOT_SAMPLED, "result for round %llu "
                       "from a client not sampled for it",
                       (unsigned long long)r->round);
  return 1;
}

/* The same for the asynchronous modes, where FitResult.round is the id of
 * the task, unique per engine. */
static int admit_async_result(fedc_server_engine *e, fedc_peer *peer,
                              const Fedc__FitResult *r,
                              fedc_server_actions *out)
{
  if (peer->task_round == 0)
    return reject_peer(e, out, peer, FEDC_REJECT_NOT_SAMPLED,
                       FEDC__ERROR_CODE__NOT_SAMPLED, "result for task %llu "
                       "from a client that was given no task",
                       (unsigned long long)r->round);
  if (r->round != peer->task_round)
    return reject_peer(e, out, peer, FEDC_REJECT_STALE,
                       FEDC__ERROR_CODE__STALE_ROUND, "result for task %llu, "
                       "but the client's task is %llu",
                       (unsigned long long)r->round,
                       (unsigned long long)peer->task_round);
  return 1;
}

static int admit_result(fedc_server_engine *e, fedc_peer *peer,
                        const Fedc__FitResult *r, fedc_server_actions *out)
{
  int rc = fedc_engine_is_async(e) ? admit_async_result(e, peer, r, out)
                                   : admit_sync_result(e, peer, r, out);

  if (rc <= 0)
    return rc;
  if (peer->state != FEDC_PEER_TRAINING)
    return reject_peer(e, out, peer, FEDC_REJECT_DUPLICATE_RESULT,
                       FEDC__ERROR_CODE__DUPLICATE, "second result for round "
                       "%llu", (unsigned long long)r->round);
  if (r->num_examples == 0)
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_UPDATE, "result with "
                       "num_examples 0");
  return 1;
}

/* A result of a cancelled task that crossed the Cancel: it and its update
 * chunks are discarded, and the client stays connected. */
static void discard_late(fedc_server_engine *e, fedc_peer *peer,
                         const Fedc__FitResult *r)
{
  e->stats.results_late++;
  peer->cancelled_task = 0;
  peer->discard_task = r->n_update > 0 ? r->round : 0;
  fedc_info(LOG_COMPONENT, "late result discarded client=%s round=%llu",
            peer->client_id, (unsigned long long)r->round);
}

/* Ends an asynchronous task whose update is too stale to apply; its
 * remaining chunks, if any, are discarded. */
static void discard_too_stale(fedc_server_engine *e, fedc_peer *peer,
                              bool chunks_follow)
{
  e->stats.results_too_stale++;
  e->round.too_stale++;
  if (chunks_follow)
    peer->discard_task = peer->task_round;
  fedc_info(LOG_COMPONENT, "update too stale, discarded client=%s task=%llu "
            "staleness=%llu", peer->client_id,
            (unsigned long long)peer->task_round,
            (unsigned long long)(e->round.id - peer->task_version));
  fedc_round_task_ended(e, peer);
  fedc_peers_set_state(&e->peers, peer, FEDC_PEER_IDLE);
}

/* Formats a shape from a peer as "[2, 3]", at most FEDC_TENSOR_MAX_DIMS
 * dimensions, then "...". */
static void format_shape(char *out, size_t size, const uint64_t *shape,
                         size_t ndim)
{
  size_t n = 0;

  n += (size_t)snprintf(out, size, "[");
  for (size_t d = 0; d < ndim && n < size; d++) {
    if (d == FEDC_TENSOR_MAX_DIMS) {
      n += (size_t)snprintf(out + n, size - n, ", ...");
      break;
    }
    n += (size_t)snprintf(out + n, size - n, "%s%llu", d > 0 ? ", " : "",
                          (unsigned long long)shape[d]);
  }
  if (n < size)
    snprintf(out + n, size - n, "]");
}

static bool same_shape(const Fedc__TensorSpec *spec, const fedc_tensor *t)
{
  if (spec->n_shape != (size_t)t->ndim)
    return false;
  for (size_t d = 0; d < spec->n_shape; d++)
    if (spec->shape[d] != t->shape[d])
      return false;
  return true;
}

__attribute__((format(printf, 3, 4)))
static void format_reason(char *reason, size_t size, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(reason, size, fmt, ap);
  va_end(ap);
}

/* Compares the tensors a FitResult announces with the model's, in order,
 * before the size limits of the assembler apply, so that a wrong dtype or
 * shape is reported as such. Writes the first difference to reason and
 * returns false, or returns true when the layouts match. */
static bool specs_match_model(Fedc__TensorSpec *const *specs, size_t n,
                              const fedc_tensor_list *model, char *reason,
                              size_t size)
{
  char name[FEDC_TENSOR_NAME_MAX], got[128], want[128];

  if (n != model->count) {
    format_reason(reason, size, "update announces %zu tensors, the model has %zu",
             n, model->count);
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    const Fedc__TensorSpec *spec = specs[i];
    const fedc_tensor *t = &model->items[i];

    copy_printable(name, sizeof(name), spec->name);
    if (!spec->name || strcmp(spec->name, t->name) != 0) {
      format_reason(reason, size, "update tensor %zu is named \"%s\", expected "
               "%s", i, name, t->name);
      return false;
    }
    if ((int)spec->dtype != (int)t->dtype) {
      const char *dtype = fedc_dtype_name((enum fedc_dtype)spec->dtype);

      format_reason(reason, size, "update tensor %s has dtype %s, expected %s",
               t->name, dtype ? dtype : "(unknown)",
               fedc_dtype_name(t->dtype));
      return false;
    }
    if (!same_shape(spec, t)) {
      format_shape(got, sizeof(got), spec->shape, spec->n_shape);
      format_shape(want, sizeof(want), t->shape, (size_t)t->ndim);
      format_reason(reason, size, "update tensor %s has shape %s, expected %s",
               t->name, got, want);
      return false;
    }
  }
  return true;
}

static int on_fit_result(fedc_server_engine *e, fedc_peer *peer,
                         const Fedc__FitResult *r, fedc_server_actions *out)
{
  const fedc_tensor_list *model = fedc_snapshot_tensors(e->global);
  fedc_spec_limits limits = { model->count, fedc_tensor_list_nbytes(model) };
  char reason[FEDC_ASSEMBLER_REASON_MAX];
  int rc;

  if (peer->cancelled_task != 0 && r->round == peer->cancelled_task) {
    discard_late(e, peer, r);
    return 0;
  }
  rc = admit_result(e, peer, r, out);
  if (rc <= 0)
    return rc;
  if (fedc_engine_is_async(e) && fedc_async_update_scale(e, peer) == 0) {
    discard_too_stale(e, peer, r->n_update > 0);
    return 0;
  }
  if (!specs_match_model(r->update, r->n_update, model, reason,
                         sizeof(reason)))
    return reject_peer(e, out, peer, FEDC_REJECT_SHAPE,
                       FEDC__ERROR_CODE__BAD_UPDATE, "update does not match "
                       "the model: %s", reason);
  rc = fedc_assembler_new(peer->task_round, FEDC__STREAM_KIND__UPDATE,
                          r->update, r->n_update, &limits, model,
                          &peer->upload, reason, sizeof(reason));
  if (rc == FEDC_ENOMEM)
    return reject_peer(e, out, peer, FEDC_REJECT_INTERNAL,
                       FEDC__ERROR_CODE__INTERNAL, "out of memory for the "
                       "update");
  if (rc < 0)
    return reject_peer(e, out, peer, FEDC_REJECT_SHAPE,
                       FEDC__ERROR_CODE__BAD_UPDATE, "update does not match "
                       "the model: %s", reason);

  fedc_peers_set_state(&e->peers, peer, FEDC_PEER_UPLOADING);
  peer->result_examples = r->num_examples;
  peer->result_loss = fedc_message_find_metric(r->metrics, r->n_metrics,
                                               "train_loss", NAN);
  peer->result_accuracy = fedc_message_find_metric(r->metrics, r->n_metrics,
                                                   "train_accuracy", NAN);
  return 0;
}

/* Returns 1 when norm, the L2 norm of an update as the client sent it and
 * before any staleness scaling, is within max_update_norm. Otherwise
 * rejects the peer and returns the result. */
static int within_norm_bound(fedc_server_engine *e, fedc_peer *peer,
                             double norm, fedc_server_actions *out)
{
  double limit = e->config.max_update_norm;

  if (limit > 0.0 && !(norm <= limit))
    return reject_peer(e, out, peer, FEDC_REJECT_UPDATE_NORM,
                       FEDC__ERROR_CODE__BAD_UPDATE, "update L2 norm %.4g "
                       "exceeds max_update_norm %.4g", norm, limit);
  return 1;
}

/* Folds a complete update of peer of L2 norm norm, which passed the
 * stream's checks and the norm bound, into the aggregate, or rejects the
 * peer when fedc_agg refuses it: fedc_agg repeats the layout check. In
 * the asynchronous modes update has been scaled since its norm was taken,
 * so fedc_agg takes the norm again. */
static int accept_update(fedc_server_engine *e, fedc_peer *peer,
                         const fedc_tensor_list *update, double norm,
                         uint64_t now_ms, fedc_server_actions *out)
{
  int rc = fedc_round_accept(e, peer, update,
                             fedc_engine_is_async(e) ? -1.0 : norm, now_ms);

  if (rc == 0) {
    fedc_debug(LOG_COMPONENT, "update accepted client=%s round=%llu "
               "norm=%.4g examples=%llu", peer->client_id,
               (unsigned long long)e->round.id, norm,
               (unsigned long long)peer->result_examples);
    return 0;
  }
  if (rc == FEDC_ESHAPE)
    return reject_peer(e, out, peer, FEDC_REJECT_SHAPE,
                       FEDC__ERROR_CODE__BAD_UPDATE, "update layout rejected");
  if (rc == FEDC_ENONFINITE)
    return reject_peer(e, out, peer, FEDC_REJECT_NONFINITE,
                       FEDC__ERROR_CODE__BAD_UPDATE, "NaN or Inf in update");
  return reject_peer(e, out, peer, FEDC_REJECT_INTERNAL,
                     FEDC__ERROR_CODE__INTERNAL, "update not aggregated: %s",
                     fedc_strerror(rc));
}

/* Returns whether server steps applied while the update streamed in made
 * it too stale, after discarding it if so. */
static bool became_too_stale(fedc_server_engine *e, fedc_peer *peer)
{
  if (!fedc_engine_is_async(e) || fedc_async_update_scale(e, peer) != 0)
    return false;
  discard_too_stale(e, peer, false);
  return true;
}

/* Folds the peer's complete chunked update into the aggregate; the
 * asynchronous modes scale it in place, since the engine owns it. */
static int finish_upload(fedc_server_engine *e, fedc_peer *peer,
                         uint64_t now_ms, fedc_server_actions *out)
{
  fedc_tensor_list update;
  double norm = 0.0;
  int rc;

  if (became_too_stale(e, peer))
    return 0;
  fedc_tensor_list_init(&update);
  rc = fedc_assembler_take(peer->upload, &update);
  fedc_assembler_free(&peer->upload);
  if (rc < 0)
    rc = reject_peer(e, out, peer, FEDC_REJECT_INTERNAL,
                     FEDC__ERROR_CODE__INTERNAL, "update not aggregated: %s",
                     fedc_strerror(rc));
  else {
    norm = fedc_tensor_list_norm(&update);
    rc = within_norm_bound(e, peer, norm, out);
  }
  if (rc == 1) {
    if (fedc_engine_is_async(e))
      fedc_round_scale_update(e, peer, &update);
    rc = accept_update(e, peer, &update, norm, now_ms, out);
  }
  fedc_tensor_list_close(&update);
  return rc;
}

/* Rejects a chunk, or a whole stream, of round and stream kind that the
 * peer may not send now, and returns 1 for one it may send. The rest of a
 * stream the engine no longer wants is dropped (returns 0). */
static int admit_stream(fedc_server_engine *e, fedc_peer *peer,
                        uint64_t round, Fedc__StreamKind stream, bool last,
                        fedc_server_actions *out)
{
  bool open = e->phase == FEDC_SERVER_TRAINING &&
              round == (fedc_engine_is_async(e) ? peer->task_round
                                                : e->round.id);

  if (peer->discard_task != 0 && round == peer->discard_task &&
      stream == FEDC__STREAM_KIND__UPDATE) {
    if (last)
      peer->discard_task = 0;
    return 0;
  }
  if (peer->state != FEDC_PEER_UPLOADING && !open)
    return reject_peer(e, out, peer, FEDC_REJECT_STALE,
                       FEDC__ERROR_CODE__STALE_ROUND, "chunk for round %llu, "
                       "which is not open", (unsigned long long)round);
  if (peer->state != FEDC_PEER_UPLOADING)
    return reject_peer(e, out, peer, FEDC_REJECT_CHUNK,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "chunk without a "
                       "FitResult");
  return 1;
}

/* Rejects peer for a chunk, or a whole stream, that its assembler
 * refused with rc. */
static int reject_stream(fedc_server_engine *e, fedc_peer *peer, int rc,
                         fedc_server_actions *out)
{
  if (rc == FEDC_ENONFINITE)
    return reject_peer(e, out, peer, FEDC_REJECT_NONFINITE,
                       FEDC__ERROR_CODE__BAD_UPDATE, "%s",
                       fedc_assembler_reason(peer->upload));
  if (rc == FEDC_ENOMEM)
    return reject_peer(e, out, peer, FEDC_REJECT_INTERNAL,
                       FEDC__ERROR_CODE__INTERNAL, "out of memory for the "
                       "update");
  return reject_peer(e, out, peer, FEDC_REJECT_CHUNK,
                     FEDC__ERROR_CODE__BAD_MESSAGE, "%s",
                     fedc_assembler_reason(peer->upload));
}

static int on_chunk(fedc_server_engine *e, fedc_peer *peer,
                    const Fedc__TensorChunk *chunk, uint64_t now_ms,
                    fedc_server_actions *out)
{
  int rc = admit_stream(e, peer, chunk->round, chunk->stream, chunk->last,
                        out);

  if (rc <= 0)
    return rc;
  rc = fedc_assembler_add(peer->upload, chunk);
  if (rc < 0)
    return reject_stream(e, peer, rc, out);

  e->round.bytes_received += chunk->data.len;
  e->stats.bytes_received += chunk->data.len;
  return rc == 1 ? finish_upload(e, peer, now_ms, out) : 0;
}

/* A whole update stream passed in memory: the assembler's checks without
 * its copy, then the same fold as finish_upload(). The tensors belong to
 * the sender, so the asynchronous modes scale a copy. The finiteness
 * check leaves the norm in the snapshot for the norm bound, so the update
 * is read once for both, or not at all when the sender cached the norm,
 * and once more to aggregate it. */
static int on_tensors(fedc_server_engine *e, fedc_peer *peer, uint64_t round,
                      Fedc__StreamKind stream, fedc_snapshot *snapshot,
                      uint64_t now_ms, fedc_server_actions *out)
{
  const fedc_tensor_list *tensors = fedc_snapshot_tensors(snapshot);
  fedc_tensor_list copy;
  double norm;
  int rc = admit_stream(e, peer, round, stream, true, out);

  if (rc <= 0)
    return rc;
  rc = fedc_assembler_check_snapshot(peer->upload, round, stream, snapshot);
  if (rc < 0)
    return reject_stream(e, peer, rc, out);
  fedc_assembler_free(&peer->upload);

  e->round.bytes_received += fedc_tensor_list_nbytes(tensors);
  e->stats.bytes_received += fedc_tensor_list_nbytes(tensors);
  if (became_too_stale(e, peer))
    return 0;
  norm = fedc_snapshot_norm(snapshot);
  rc = within_norm_bound(e, peer, norm, out);
  if (rc != 1)
    return rc;
  if (!fedc_engine_is_async(e))
    return accept_update(e, peer, tensors, norm, now_ms, out);

  fedc_tensor_list_init(&copy);
  rc = fedc_tensor_list_copy(&copy, tensors);
  if (rc < 0)
    return rc;
  fedc_round_scale_update(e, peer, &copy);
  rc = accept_update(e, peer, &copy, norm, now_ms, out);
  fedc_tensor_list_close(&copy);
  return rc;
}

/* A client that cannot finish its task (training failed) sends an Error.
 * It leaves the round but stays connected and becomes idle. */
static int on_client_error(fedc_server_engine *e, fedc_peer *peer,
                           const Fedc__Error *error)
{
  char text[FEDC_REASON_MAX];

  copy_printable(text, sizeof(text), error->message);
  e->stats.client_errors++;
  fedc_info(LOG_COMPONENT, "client reported an error client=%s round=%llu "
            "code=%d message=\"%s\"", peer->client_id,
            (unsigned long long)error->round, (int)error->code, text);
  if (error->round != 0 && error->round == peer->task_round)
    fedc_round_drop_member(e, peer);
  return 0;
}

static int on_goodbye(fedc_server_engine *e, fedc_peer *peer,
                      const Fedc__Goodbye *bye, fedc_server_actions *out)
{
  char text[FEDC_REASON_MAX / 2];
  char reason[FEDC_REASON_MAX];

  copy_printable(text, sizeof(text), bye->reason);
  snprintf(reason, sizeof(reason), "client said goodbye: %s", text);
  return close_peer(e, peer, FEDC_REJECT_NONE, reason, out);
}

/* Returns the body of a message, NULL when its case is set but its pointer
 * is not (possible only in an envelope built in memory). */
static const void *body_of(const Fedc__Envelope *m)
{
  switch (m->body_case) {
  case FEDC__ENVELOPE__BODY_HELLO: return m->hello;
  case FEDC__ENVELOPE__BODY_FIT_RESULT: return m->fit_result;
  case FEDC__ENVELOPE__BODY_CHUNK: return m->chunk;
  case FEDC__ENVELOPE__BODY_ERROR: return m->error;
  case FEDC__ENVELOPE__BODY_GOODBYE: return m->goodbye;
  default: return NULL;
  }
}

static int dispatch(fedc_server_engine *e, fedc_peer *peer,
                    const Fedc__Envelope *m, uint64_t now_ms,
                    fedc_server_actions *out)
{
  if (m->protocol_version != FEDC_PROTOCOL_VERSION)
    return reject_peer(e, out, peer, FEDC_REJECT_VERSION,
                       FEDC__ERROR_CODE__BAD_VERSION, "protocol version %u, "
                       "expected %u", m->protocol_version,
                       FEDC_PROTOCOL_VERSION);
  if (!body_of(m))
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "unexpected message "
                       "(body case %d) from a client", (int)m->body_case);
  if (m->body_case == FEDC__ENVELOPE__BODY_HELLO)
    return on_hello(e, peer, m->hello, out);
  if (peer->state == FEDC_PEER_HANDSHAKE)
    return reject_peer(e, out, peer, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "message before Hello");

  switch (m->body_case) {
  case FEDC__ENVELOPE__BODY_FIT_RESULT:
    return on_fit_result(e, peer, m->fit_result, out);
  case FEDC__ENVELOPE__BODY_CHUNK:
    return on_chunk(e, peer, m->chunk, now_ms, out);
  case FEDC__ENVELOPE__BODY_ERROR:
    return on_client_error(e, peer, m->error);
  default:
    return on_goodbye(e, peer, m->goodbye, out);
  }
}

int fedc_server_engine_start(fedc_server_engine *engine, uint64_t now_ms,
                             fedc_server_actions *out)
{
  fedc_server_engine *e = engine;

  if (e->phase == FEDC_SERVER_DONE || e->started)
    return 0;
  e->started = true;
  if (e->config.total_rounds > 0 && e->last_round >= e->config.total_rounds)
    return fedc_round_done(e, "all rounds finished", false, out);
  return fedc_round_settle(e, now_ms, out);
}

int fedc_server_engine_connected(fedc_server_engine *engine, uint64_t now_ms,
                                 uint64_t peer, const char *identity,
                                 fedc_server_actions *out)
{
  fedc_server_engine *e = engine;
  fedc_peer *p = NULL;
  int rc;

  if (fedc_peers_find(&e->peers, peer))
    return FEDC_EINVAL;
  if (e->phase == FEDC_SERVER_DONE)
    return fedc_round_goodbye(peer, "", "training finished", out);
  if (e->draining)
    return fedc_round_goodbye(peer, "", "server shutting down", out);
  rc = fedc_peers_add(&e->peers, peer, &p);
  if (rc < 0)
    return rc;
  e->stats.peers++;

  if (identity && strlen(identity) > FEDC_ID_MAX)
    return reject_peer(e, out, p, FEDC_REJECT_MESSAGE,
                       FEDC__ERROR_CODE__BAD_MESSAGE, "certificate identity "
                       "longer than %d bytes", FEDC_ID_MAX);
  if (identity)
    return fedc_peers_set_identity(p, identity);
  return 0;
}

int fedc_server_engine_lost(fedc_server_engine *engine, uint64_t now_ms,
                            uint64_t peer, fedc_server_actions *out)
{
  fedc_peer *p = fedc_peers_find(&engine->peers, peer);

  if (!p)
    return 0;
  fedc_round_drop_member(engine, p);
  remove_peer(engine, p);
  return fedc_round_settle(engine, now_ms, out);
}

int fedc_server_engine_received(fedc_server_engine *engine, uint64_t now_ms,
                                uint64_t peer, const Fedc__Envelope *message,
                                fedc_server_actions *out)
{
  fedc_peer *p;
  int rc;

  if (!message)
    return FEDC_EINVAL;

  /* A message the driver read before it carried out our CLOSE. */
  p = fedc_peers_find(&engine->peers, peer);
  if (!p)
    return 0;
  rc = dispatch(engine, p, message, now_ms, out);
  if (rc < 0)
    return rc;
  return fedc_round_settle(engine, now_ms, out);
}

int fedc_server_engine_received_tensors(fedc_server_engine *engine,
                                        uint64_t now_ms, uint64_t peer,
                                        uint64_t round,
                                        Fedc__StreamKind stream,
                                        fedc_snapshot *tensors,
                                        fedc_server_actions *out)
{
  fedc_peer *p;
  int rc;

  if (!tensors)
    return FEDC_EINVAL;
  p = fedc_peers_find(&engine->peers, peer);
  if (!p)
    return 0;
  if (p->state == FEDC_PEER_HANDSHAKE)
    rc = reject_peer(engine, out, p, FEDC_REJECT_MESSAGE,
                     FEDC__ERROR_CODE__BAD_MESSAGE, "message before Hello");
  else
    rc = on_tensors(engine, p, round, stream, tensors, now_ms, out);
  if (rc < 0)
    return rc;
  return fedc_round_settle(engine, now_ms, out);
}

int fedc_server_engine_timer(fedc_server_engine *engine, uint64_t now_ms,
                             uint64_t timer, fedc_server_actions *out)
{
  int rc;

  if (timer != 0 && timer == engine->retry_timer) {
    engine->retry_timer = 0;
    return fedc_round_settle(engine, now_ms, out);
  }
  if (timer != 0 && timer == engine->drain_timer) {
    rc = fedc_engine_is_async(engine)
         ? fedc_async_drain_timeout(engine, now_ms, out)
         : fedc_round_drain_timeout(engine, now_ms, out);
    return rc;
  }
  if (fedc_engine_is_async(engine))
    return fedc_async_timer(engine, now_ms, timer, out);
  if (engine->phase != FEDC_SERVER_TRAINING || timer == 0 ||
      timer != engine->round.timer)
    return 0;
  return fedc_round_deadline(engine, now_ms, out);
}

int fedc_server_engine_evaluated(fedc_server_engine *engine, uint64_t now_ms,
                                 uint64_t round,
                                 const fedc_server_eval *result,
                                 fedc_server_actions *out)
{
  int rc;

  if (fedc_engine_is_async(engine))
    return fedc_async_evaluated(engine, now_ms, round, result, out);
  if (engine->phase != FEDC_SERVER_EVALUATING || round != engine->round.id)
    return FEDC_EINVAL;
  rc = fedc_round_evaluated(engine, now_ms, result, out);
  if (rc < 0)
    return rc;
  return fedc_round_settle(engine, now_ms, out);
}

int fedc_server_engine_shutdown(fedc_server_engine *engine, uint64_t now_ms,
                                const char *reason, fedc_server_actions *out)
{
  int rc;

  if (engine->phase == FEDC_SERVER_DONE)
    return 0;
  rc = fedc_round_stop(engine, now_ms, out);
  if (rc < 0 || engine->phase == FEDC_SERVER_DONE)
    return rc;
  return fedc_round_done(engine, reason ? reason : "server shutting down",
                         false, out);
}

int fedc_server_engine_drain(fedc_server_engine *engine, uint64_t now_ms,
                             uint64_t timeout_ms, fedc_server_actions *out)
{
  fedc_server_engine *e = engine;
  bool open = e->phase == FEDC_SERVER_TRAINING ||
              e->phase == FEDC_SERVER_EVALUATING;
  int rc;

  if (e->phase == FEDC_SERVER_DONE || e->draining)
    return 0;
  e->draining = true;
  rc = fedc_round_cancel_timer(&e->retry_timer, out);
  if (rc < 0)
    return rc;
  fedc_info(LOG_COMPONENT, "draining round=%llu phase=%s timeout_ms=%llu",
            (unsigned long long)e->round.id, open ? "open" : "between rounds",
            (unsigned long long)timeout_ms);
  if (fedc_engine_is_async(e)) {
    rc = fedc_round_start_drain_timer(e, timeout_ms, out);
    return rc < 0 ? rc : fedc_async_settle(e, now_ms, out);
  }
  if (!open)
    return fedc_round_done(e, "server shutting down", false, out);
  rc = fedc_round_start_drain_timer(e, timeout_ms, out);
  return rc < 0 ? rc : fedc_round_settle(e, now_ms, out);
}

enum fedc_server_phase fedc_server_engine_phase(const fedc_server_engine *e)
{
  return e->phase;
}

uint64_t fedc_server_engine_round(const fedc_server_engine *engine)
{
  return engine->round.id;
}

const fedc_tensor_list *fedc_server_engine_model(
  const fedc_server_engine *engine)
{
  return fedc_snapshot_tensors(engine->global);
}

const fedc_server_stats *fedc_server_engine_stats(
  const fedc_server_engine *engine)
{
  return &engine->stats;
}
