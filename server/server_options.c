#include "server_options.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agg/agg.h"
#include "daemon/cli.h"
#include "util/error.h"
#include "util/log.h"

#define OPT(field, type, def, unit, help) \
  { #field, type, offsetof(fedc_server_options, field), def, unit, help }

static const fedc_option option_table[] = {
  OPT(listen, FEDC_OPT_STRING, "0.0.0.0", "address",
      "Address to accept client connections on (IPv4 or IPv6)."),
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
  OPT(test_data, FEDC_OPT_STRING, NULL, "path",
      "Held-out test set (client data file from fedc-data) that the global "
      "model is evaluated on after each round; unset skips evaluation."),
  OPT(checkpoint_dir, FEDC_OPT_STRING, NULL, "path",
      "Folder for the checkpoint written after every round and resumed from "
      "at start; unset turns checkpoints off."),
  OPT(metrics, FEDC_OPT_STRING, NULL, "path",
      "JSON Lines file that gets one line of metrics per finished round."),
  OPT(metrics_listen, FEDC_OPT_STRING, NULL, "host:port",
      "Address to serve Prometheus metrics on at GET /metrics; unset is off."),
  OPT(max_frame_bytes, FEDC_OPT_UINT, "16777216", "bytes",
      "Largest frame accepted from a client; a larger one drops the client."),
  OPT(chunk_bytes, FEDC_OPT_UINT, "1048576", "bytes",
      "Tensor data per chunk message when streaming a model."),
  OPT(handshake_timeout, FEDC_OPT_UINT, "10000", "ms",
      "Time a new connection has to finish TLS and send Hello."),
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
  if (fedc_agg_strategy_parse(c->strategy, &strategy) < 0)
    return fail("unknown strategy; see --help for the list");
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
