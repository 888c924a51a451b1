#include "server_options.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agg/agg.h"
#include "server/engine.h"
#include "daemon/cli.h"
#include "tensor/tensor.h"
#include "util/error.h"
#include "util/log.h"

#define OPT(field, type, def, unit, help) \
  { #field, type, offsetof(fedc_server_options, field), def, unit, help }

static const fedc_option option_table[] = {
  OPT(listen, FEDC_OPT_STRING, "0.0.0.0", "address",
      "IP address to accept client connections on: an IPv4 or IPv6 literal "
      "such as 0.0.0.0 or ::, not a host name."),
  OPT(port, FEDC_OPT_UINT, "7443", "port",
      "TCP port for client connections; 0 picks a free port and logs it."),
  OPT(cert, FEDC_OPT_STRING, NULL, "path",
      "Server certificate (PEM), followed by any intermediate certificates."),
  OPT(key, FEDC_OPT_STRING, NULL, "path", "Private key of the certificate (PEM)."),
  OPT(ca, FEDC_OPT_STRING, NULL, "path",
      "CA certificate (PEM) that client certificates must be signed by."),
  OPT(model, FEDC_OPT_STRING, "logreg:784:10", "spec",
      "Model to train, e.g. logreg:784:10 or mlp:784:256:128:10."),
  OPT(rounds, FEDC_OPT_UINT, "20", "rounds",
      "Training rounds to run before saying Goodbye to the clients and exiting."),
  OPT(min_clients, FEDC_OPT_UINT, "2", "clients",
      "Connected clients needed before a round starts."),
  OPT(fraction_fit, FEDC_OPT_DOUBLE, "1.0", "fraction",
      "Share of the connected clients sampled for each round, in (0, 1]."),
  OPT(quorum, FEDC_OPT_DOUBLE, "0.5", "fraction",
      "Share of the sampled clients whose results a round needs, in (0, 1]; "
      "a round that ends with fewer leaves the model unchanged."),
  OPT(close_at_quorum, FEDC_OPT_BOOL, "false", "",
      "Close a round as soon as the quorum has reported, dropping the "
      "stragglers' results, instead of waiting for every sampled client."),
  OPT(round_timeout, FEDC_OPT_UINT, "120000", "ms",
      "Deadline of a round; it then closes with the results received so far."),
  OPT(retry_delay, FEDC_OPT_UINT, "1000", "ms",
      "Wait after an abandoned round before the next one starts; it doubles "
      "with each further abandoned round in a row, up to retry_delay_max."),
  OPT(retry_delay_max, FEDC_OPT_UINT, "60000", "ms",
      "Longest wait between abandoned rounds."),
  OPT(max_abandoned_rounds, FEDC_OPT_UINT, "10", "rounds",
      "Stop with exit status 1 after this many abandoned rounds in a row; "
      "0 is no limit."),
  OPT(max_update_norm, FEDC_OPT_DOUBLE, "10000", "",
      "Reject a client update whose L2 norm exceeds this, counted as "
      "reason update_norm; 0 turns the check off."),
  OPT(drain_timeout, FEDC_OPT_UINT, "30000", "ms",
      "On SIGTERM or SIGINT, the longest wait for the open round to close "
      "before it closes with the results it has; a second signal stops at "
      "once."),
  OPT(local_epochs, FEDC_OPT_UINT, "2", "epochs",
      "Passes over its local data that each client makes per round."),
  OPT(batch_size, FEDC_OPT_UINT, "32", "examples", "Mini-batch size of local training."),
  OPT(learning_rate, FEDC_OPT_DOUBLE, "0.05", "", "SGD learning rate of local training."),
  OPT(momentum, FEDC_OPT_DOUBLE, "0.5", "", "SGD momentum of local training; 0 turns it off."),
  OPT(weight_decay, FEDC_OPT_DOUBLE, "0", "", "L2 weight decay of local training."),
  OPT(proximal_mu, FEDC_OPT_DOUBLE, "0", "",
      "FedProx proximal term mu of local training; 0 turns it off."),
  OPT(seed, FEDC_OPT_UINT, "1", "",
      "Seed of the initial weights, client sampling and local shuffling."),
  OPT(strategy, FEDC_OPT_STRING, "fedavg", "name",
      "Aggregation: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, "
      "trimmed_mean, krum or multi_krum."),
  OPT(server_lr, FEDC_OPT_DOUBLE, "0", "",
      "Server learning rate that scales the aggregated update; 0 keeps the "
      "strategy's default (1 for fedavg and the robust ones, 0.1 for "
      "fedavgm, 0.01 for fedadam, fedyogi and fedadagrad)."),
  OPT(server_momentum, FEDC_OPT_DOUBLE, "0.9", "", "FedAvgM server momentum, in [0, 1)."),
  OPT(beta1, FEDC_OPT_DOUBLE, "-1", "",
      "First-moment decay of fedadam and fedyogi, in [0, 1); -1 keeps the "
      "strategy's default (0.9, or 0 for fedadagrad)."),
  OPT(beta2, FEDC_OPT_DOUBLE, "0.99", "",
      "Second-moment decay of fedadam and fedyogi, in [0, 1)."),
  OPT(tau, FEDC_OPT_DOUBLE, "0.001", "",
      "Adaptivity of fedadam, fedyogi and fedadagrad: added to the root of "
      "the second moment, > 0."),
  OPT(trim_fraction, FEDC_OPT_DOUBLE, "0.1", "fraction",
      "trimmed_mean: share of the values cut at each end, in [0, 0.5)."),
  OPT(krum_byzantine, FEDC_OPT_UINT, "1", "clients",
      "krum and multi_krum: assumed number of malicious clients f; a round "
      "needs 2f + 3 results."),
  OPT(multi_krum_m, FEDC_OPT_UINT, "0", "updates",
      "multi_krum: updates averaged; 0 means n - f."),
  OPT(clip_norm, FEDC_OPT_DOUBLE, "0", "",
      "Norm bounding: each update is scaled down to this L2 norm before "
      "aggregation; 0 turns it off."),
  OPT(sampling, FEDC_OPT_STRING, "uniform", "name",
      "How a synchronous round picks its cohort: uniform (fraction_fit, "
      "min_fit_clients, max_fit_clients), poisson (each client with "
      "probability poisson_q) or oort (by loss and speed, with exploration)."),
  OPT(min_fit_clients, FEDC_OPT_UINT, "1", "clients",
      "Smallest cohort of a uniform or oort round."),
  OPT(max_fit_clients, FEDC_OPT_UINT, "0", "clients",
      "Largest cohort of a uniform or oort round; 0 is no cap."),
  OPT(poisson_q, FEDC_OPT_DOUBLE, "0.1", "probability",
      "Poisson sampling: chance that each idle client joins a round, in (0, 1]."),
  OPT(over_selection, FEDC_OPT_DOUBLE, "1", "factor",
      "Ask this many times the cohort, close the round once the cohort has "
      "reported and cancel the rest; 1 turns it off."),
  OPT(max_concurrency, FEDC_OPT_UINT, "0", "clients",
      "Most clients training at once, in every mode; 0 is no limit."),
  OPT(oort_exploration, FEDC_OPT_DOUBLE, "0.9", "fraction",
      "Oort: share of the cohort taken from clients never heard from; it "
      "decays by 0.98 a round down to oort_exploration_min."),
  OPT(oort_exploration_min, FEDC_OPT_DOUBLE, "0.2", "fraction",
      "Oort: floor of the exploration share."),
  OPT(oort_alpha, FEDC_OPT_DOUBLE, "2", "",
      "Oort: exponent of the penalty (T / duration)^alpha on clients slower "
      "than the preferred round duration T."),
  OPT(oort_preferred_duration, FEDC_OPT_UINT, "0", "ms",
      "Oort: preferred round duration T; 0 measures it in the first round."),
  OPT(oort_pacer_window, FEDC_OPT_UINT, "5", "rounds",
      "Oort: when the utility of the last window falls below the window "
      "before, T grows by oort_pacer_step; 0 turns the pacer off."),
  OPT(oort_pacer_step, FEDC_OPT_UINT, "0", "ms",
      "Oort: growth of T per pacer step; 0 is a tenth of T."),
  OPT(rounds_mode, FEDC_OPT_STRING, "sync", "name",
      "sync (sampled rounds), fedbuff (apply every buffer_size updates) or "
      "fedasync (apply each update); the asynchronous modes count each "
      "application as a round."),
  OPT(buffer_size, FEDC_OPT_UINT, "10", "updates", "FedBuff: updates per application K."),
  OPT(async_alpha, FEDC_OPT_DOUBLE, "0.5", "",
      "FedAsync: mixing weight of each update, in (0, 1]."),
  OPT(staleness, FEDC_OPT_STRING, "polynomial", "name",
      "Weight of an update t rounds stale: constant (1), polynomial "
      "((1 + t)^-a) or hinge (1 up to b, then 1 / (a (t - b) + 1))."),
  OPT(staleness_a, FEDC_OPT_DOUBLE, "0.5", "",
      "Exponent of the polynomial staleness weight, or slope of the hinge."),
  OPT(staleness_b, FEDC_OPT_UINT, "4", "rounds", "Hinge: staleness without a penalty."),
  OPT(max_staleness, FEDC_OPT_UINT, "0", "rounds",
      "Asynchronous updates staler than this are discarded; 0 is no limit."),
  OPT(test_data, FEDC_OPT_STRING, NULL, "path",
      "Held-out test set (client data file from fedc-data) that the global "
      "model is evaluated on after each round; unset skips evaluation."),
  OPT(checkpoint_dir, FEDC_OPT_STRING, NULL, "path",
      "Folder for the checkpoint written after every round and resumed from "
      "at start; unset turns checkpoints off."),
  OPT(metrics, FEDC_OPT_STRING, NULL, "path",
      "JSON Lines file that gets one line of metrics per finished round."),
  OPT(metrics_listen, FEDC_OPT_STRING, NULL, "ip:port",
      "Address to serve Prometheus metrics on at GET /metrics, such as "
      "127.0.0.1:9464 or [::1]:9464; unset is off."),
  OPT(max_frame_bytes, FEDC_OPT_UINT, "16777216", "bytes",
      "Largest frame accepted from a client; a larger one drops the client."),
  OPT(chunk_bytes, FEDC_OPT_UINT, "1048576", "bytes",
      "Tensor data per chunk message when streaming a model."),
  OPT(handshake_timeout, FEDC_OPT_UINT, "5000", "ms",
      "Time a new connection has to finish TLS, and then again to send Hello."),
  OPT(max_handshakes, FEDC_OPT_UINT, "1024", "connections",
      "TLS handshakes running at once; a connection beyond it is closed at "
      "once. Each one holds a file descriptor."),
  OPT(max_handshakes_per_ip, FEDC_OPT_UINT, "16", "connections",
      "TLS handshakes running at once from one IPv4 address or IPv6 /64, so "
      "that one host cannot take every handshake slot; 0 is no limit."),
  OPT(log_level, FEDC_OPT_STRING, "info", "level", "debug, info, warn, error or off."),
  OPT(log_file, FEDC_OPT_STRING, NULL, "path",
      "File to append log lines to; unset logs to stderr."),
};

#define OPTION_COUNT (sizeof(option_table) / sizeof(option_table[0]))

static const char summary[] =
    "fedc-server: the federated learning aggregation server. It accepts "
    "clients over mutual TLS,\nruns the configured training rounds and "
    "writes metrics and checkpoints.";

static int fail(const char *message)
{
  fprintf(stderr, "fedc-server: %s\n", message);
  return FEDC_EINVAL;
}

int fedc_server_options_schedule(const fedc_server_options *o,
                                 fedc_server_engine_config *c)
{
  enum fedc_agg_strategy strategy = FEDC_AGG_FEDAVG;
  int rc = fedc_agg_strategy_parse(o->strategy, &strategy);

  if (rc == 0)
    rc = fedc_sampling_parse(o->sampling, &c->sampling);
  if (rc == 0)
    rc = fedc_rounds_mode_parse(o->rounds_mode, &c->mode);
  if (rc == 0)
    rc = fedc_staleness_fn_parse(o->staleness, &c->staleness_fn);
  if (rc < 0)
    return rc;
  fedc_agg_config_default(&c->agg, strategy);
  if (o->server_lr > 0)
    c->agg.server_lr = o->server_lr;
  if (o->beta1 >= 0)
    c->agg.beta1 = o->beta1;
  c->agg.server_momentum = o->server_momentum;
  c->agg.beta2 = o->beta2;
  c->agg.tau = o->tau;
  c->agg.trim_fraction = o->trim_fraction;
  c->agg.krum_byzantine = (uint32_t)o->krum_byzantine;
  c->agg.multi_krum_m = (uint32_t)o->multi_krum_m;
  c->agg.clip_norm = o->clip_norm;

  c->min_fit_clients = (uint32_t)o->min_fit_clients;
  c->max_fit_clients = (uint32_t)o->max_fit_clients;
  c->poisson_q = o->poisson_q;
  c->over_selection = o->over_selection;
  c->max_concurrency = (uint32_t)o->max_concurrency;
  c->oort.exploration = o->oort_exploration;
  c->oort.exploration_min = o->oort_exploration_min;
  c->oort.alpha = o->oort_alpha;
  c->oort.preferred_ms = o->oort_preferred_duration;
  c->oort.pacer_window = (uint32_t)o->oort_pacer_window;
  c->oort.pacer_step_ms = o->oort_pacer_step;
  c->buffer_size = (uint32_t)o->buffer_size;
  c->async_alpha = o->async_alpha;
  c->staleness_a = o->staleness_a;
  c->staleness_b = (uint32_t)o->staleness_b;
  c->max_staleness = (uint32_t)o->max_staleness;
  c->retry_delay_ms = o->retry_delay;
  c->retry_delay_max_ms = o->retry_delay_max;
  c->max_abandoned_rounds = (uint32_t)o->max_abandoned_rounds;
  c->max_update_norm = o->max_update_norm;
  return 0;
}

/* Checks the sampling, asynchronous and strategy options together, as the
 * engine and the strategy will. */
static int check_schedule(const fedc_server_options *o)
{
  fedc_server_engine_config c;
  fedc_tensor_list layout;
  fedc_agg *agg = NULL;
  char reason[FEDC_REASON_MAX];
  const uint64_t shape[1] = { 1 };
  int rc;

  fedc_server_engine_config_default(&c);
  if (fedc_server_options_schedule(o, &c) < 0)
    return fail("invalid sampling, rounds_mode or staleness name; see --help");
  rc = fedc_server_engine_config_check(&c, reason, sizeof(reason));
  if (rc < 0) {
    fprintf(stderr, "fedc-server: %s\n", reason);
    return rc;
  }

  /* The strategy checks its own parameters against a one-value model. */
  fedc_tensor_list_init(&layout);
  rc = fedc_tensor_list_add(&layout, "x", FEDC_DTYPE_F32, 1, shape, NULL);
  if (rc == 0)
    rc = fedc_agg_new(&c.agg, &layout, &agg);
  fedc_agg_free(&agg);
  fedc_tensor_list_close(&layout);
  if (rc < 0)
    return fail("invalid strategy parameters (server_lr, server_momentum, "
                "beta1, beta2, tau, trim_fraction, krum_byzantine, "
                "multi_krum_m, clip_norm); the log line above names the one");
  return 0;
}

/* Checks the values that no single option parser can, before any socket
 * or file is opened. */
static int validate(const fedc_server_options *c)
{
  enum fedc_agg_strategy strategy;
  enum fedc_log_level level;

  if (c->cert == NULL || c->key == NULL || c->ca == NULL)
    return fail("missing cert, key or ca: mutual TLS needs all three; see --help");
  if (c->port > 65535)
    return fail("invalid port: expected 0 to 65535");
  if (c->rounds == 0 || c->min_clients == 0 || c->batch_size == 0 ||
      c->local_epochs == 0)
    return fail("rounds, min_clients, local_epochs and batch_size must be at least 1");
  if (!(c->fraction_fit > 0 && c->fraction_fit <= 1) ||
      !(c->quorum > 0 && c->quorum <= 1))
    return fail("fraction_fit and quorum must be in (0, 1]");
  if (!(c->learning_rate > 0) || c->momentum < 0 || c->momentum >= 1 ||
      c->weight_decay < 0 || c->proximal_mu < 0)
    return fail("invalid training settings: learning_rate must be > 0, "
                "momentum in [0, 1), weight_decay and proximal_mu >= 0");
  if (c->chunk_bytes < 1024 || c->max_frame_bytes > UINT32_MAX ||
      c->max_frame_bytes < c->chunk_bytes + 1024)
    return fail("invalid frame sizes: chunk_bytes must be at least 1024 and "
                "max_frame_bytes at least chunk_bytes + 1024 and below 4 GiB");
  if (c->handshake_timeout == 0 || c->max_handshakes == 0)
    return fail("handshake_timeout and max_handshakes must be at least 1");
  if (c->max_handshakes > UINT32_MAX || c->max_handshakes_per_ip > UINT32_MAX)
    return fail("max_handshakes and max_handshakes_per_ip must be below "
                "4294967296");
  if (fedc_agg_strategy_parse(c->strategy, &strategy) < 0)
    return fail("unknown strategy; see --help for the list");

  if (check_schedule(c) < 0)
    return FEDC_EINVAL;
  if (fedc_log_parse_level(c->log_level, &level) < 0)
    return fail("invalid log_level: expected debug, info, warn, error or off");
  return 0;
}

int fedc_server_options_parse(fedc_server_options *options, int argc,
                              char **argv)
{
  int rc;

  memset(options, 0, sizeof(*options));
  rc = fedc_cli_parse("fedc-server", summary, option_table, OPTION_COUNT,
                      options, argc, argv);
  if (rc == 0)
    rc = validate(options);
  if (rc < 0)
    fedc_cli_close("fedc-server", option_table, OPTION_COUNT, options);
  return rc;
}

void fedc_server_options_close(fedc_server_options *options)
{
  fedc_cli_close("fedc-server", option_table, OPTION_COUNT, options);
}
