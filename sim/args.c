#include "args.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "agg/agg.h"
#include "attack.h"
#include "data/partition.h"
#include "plot.h"
#include "server/engine.h"
#include "util/error.h"
#include "util/log.h"

#define OPT(field, type, def, unit, help) \
  { #field, type, offsetof(fedc_args, field), def, unit, help }

static const fedc_option option_table[] = {
  OPT(data, FEDC_OPT_STRING, "/usr/share/datasets/fashion-mnist", "path",
      "Folder with the IDX files train-images-idx3-ubyte, "
      "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
      "t10k-labels-idx1-ubyte, each plain or .gz."),
  OPT(train_data, FEDC_OPT_STRING, NULL, "path",
      "Client data file (fedc-data) to partition instead of the IDX "
      "training set."),
  OPT(test_data, FEDC_OPT_STRING, NULL, "path",
      "Client data file to evaluate on instead of the IDX test set."),
  OPT(clients, FEDC_OPT_UINT, "100", "clients",
      "Simulated clients; each gets a share of the training rows."),
  OPT(partition, FEDC_OPT_STRING, "iid", "name",
      "How rows are split among clients: iid, dirichlet or shards."),
  OPT(alpha, FEDC_OPT_DOUBLE, "0.5", "",
      "Dirichlet concentration; small values give each client few classes."),
  OPT(min_rows, FEDC_OPT_UINT, "10", "rows",
      "Dirichlet: rows every client gets at least."),
  OPT(shards_per_client, FEDC_OPT_UINT, "2", "shards",
      "Shards: label-sorted shards each client gets."),
  OPT(data_copies, FEDC_OPT_UINT, "1", "copies",
      "Partition this many copies of the training rows, so that more "
      "clients than rows each get some; a copy refers to the same loaded row."),
  OPT(model, FEDC_OPT_STRING, "logreg:784:10", "spec",
      "Model to train, e.g. logreg:784:10 or mlp:784:200:10."),
  OPT(rounds, FEDC_OPT_UINT, "10", "rounds", "Training rounds to run."),
  OPT(clients_per_round, FEDC_OPT_UINT, "10", "clients",
      "Cohort sampled per round; 0 samples fraction_fit of the idle clients."),
  OPT(fraction_fit, FEDC_OPT_DOUBLE, "1.0", "fraction",
      "Share of the idle clients sampled when clients_per_round is 0."),
  OPT(min_clients, FEDC_OPT_UINT, "0", "clients",
      "Idle clients needed before a round starts; 0 means clients_per_round."),
  OPT(quorum, FEDC_OPT_DOUBLE, "0", "fraction",
      "Share of the cohort whose results a round needs, in [0, 1]; 0 means "
      "one. A round with fewer leaves the model unchanged."),
  OPT(close_at_quorum, FEDC_OPT_BOOL, "false", "",
      "Close a round once the quorum reported, dropping the stragglers."),
  OPT(round_timeout, FEDC_OPT_UINT, "600000", "ms",
      "Deadline of a round in simulated time."),
  OPT(evaluate_every, FEDC_OPT_UINT, "1", "rounds",
      "Evaluate the global model on the test set every this many rounds "
      "and after the last; 0 never."),
  OPT(sampling, FEDC_OPT_STRING, "uniform", "name",
      "Cohort sampling: uniform, poisson or oort."),
  OPT(poisson_q, FEDC_OPT_DOUBLE, "0.1", "probability",
      "Poisson sampling: chance that each idle client is sampled."),
  OPT(over_selection, FEDC_OPT_DOUBLE, "1", "factor",
      "Sample this many times the cohort and close once the cohort size "
      "has reported; 1 is off."),
  OPT(max_concurrency, FEDC_OPT_UINT, "0", "clients",
      "Clients training at once, in every mode; 0 is no limit."),
  OPT(mode, FEDC_OPT_STRING, "sync", "name",
      "Rounds: sync (sampled cohorts), fedbuff or fedasync."),
  OPT(buffer_size, FEDC_OPT_UINT, "10", "updates",
      "FedBuff: updates buffered per model step."),
  OPT(async_alpha, FEDC_OPT_DOUBLE, "0.5", "",
      "FedAsync: mixing weight of each update, in (0, 1]."),
  OPT(staleness, FEDC_OPT_STRING, "polynomial", "name",
      "Asynchronous staleness weight: constant, polynomial or hinge."),
  OPT(staleness_a, FEDC_OPT_DOUBLE, "0.5", "",
      "Polynomial exponent or hinge slope of the staleness weight."),
  OPT(max_staleness, FEDC_OPT_UINT, "0", "versions",
      "Asynchronous updates staler than this are discarded; 0 is no limit."),
  OPT(strategy, FEDC_OPT_STRING, "fedavg", "name",
      "Aggregation: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, "
      "trimmed_mean, krum or multi_krum."),
  OPT(server_lr, FEDC_OPT_DOUBLE, "0", "",
      "Server learning rate; 0 keeps the strategy's default."),
  OPT(server_momentum, FEDC_OPT_DOUBLE, "0", "",
      "FedAvgM momentum; 0 keeps the strategy's default."),
  OPT(seed, FEDC_OPT_UINT, "1", "",
      "Seed of the partition, devices, initial weights, sampling, dropouts "
      "and shuffling."),
  OPT(local_epochs, FEDC_OPT_UINT, "1", "epochs",
      "Passes over its rows that each client makes per round."),
  OPT(batch_size, FEDC_OPT_UINT, "32", "examples", "Mini-batch size."),
  OPT(max_steps, FEDC_OPT_UINT, "0", "steps",
      "Cap on optimizer steps per round and client; 0 is no cap."),
  OPT(learning_rate, FEDC_OPT_DOUBLE, "0.05", "", "SGD learning rate."),
  OPT(momentum, FEDC_OPT_DOUBLE, "0", "", "SGD momentum; 0 turns it off."),
  OPT(weight_decay, FEDC_OPT_DOUBLE, "0", "", "L2 weight decay."),
  OPT(proximal_mu, FEDC_OPT_DOUBLE, "0", "",
      "FedProx proximal term mu; 0 turns it off."),
  OPT(attack, FEDC_OPT_STRING, "none", "name",
      "Model poisoning by a share of the clients: none, scale (send "
      "factor x update) or sign_flip (send -factor x update), where the "
      "update is the trained weights minus the global model."),
  OPT(attack_fraction, FEDC_OPT_DOUBLE, "0.2", "fraction",
      "Share of the clients that attack, in [0, 1], spread evenly over "
      "the client indices."),
  OPT(attack_factor, FEDC_OPT_DOUBLE, "10", "factor",
      "Factor, > 0, by which attackers multiply their update."),
  OPT(profile, FEDC_OPT_STRING, NULL, "path",
      "Device profile (INI: [class NAME] and [client INDEX] sections); "
      "replaces the device options below. docs/simulator.md has the keys."),
  OPT(speed, FEDC_OPT_DOUBLE, "1", "",
      "Median compute speed relative to the reference device."),
  OPT(speed_sigma, FEDC_OPT_DOUBLE, "0.5", "",
      "Spread of ln(speed) across clients (log-normal)."),
  OPT(download_bps, FEDC_OPT_DOUBLE, "10000000", "bytes/s",
      "Median download bandwidth."),
  OPT(upload_bps, FEDC_OPT_DOUBLE, "2000000", "bytes/s",
      "Median upload bandwidth."),
  OPT(bandwidth_sigma, FEDC_OPT_DOUBLE, "0.5", "",
      "Spread of ln(bandwidth) across clients (log-normal)."),
  OPT(dropout, FEDC_OPT_DOUBLE, "0", "probability",
      "Chance that a sampled client leaves in the middle of its round."),
  OPT(availability_period, FEDC_OPT_DOUBLE, "0", "s",
      "Length of each client's availability cycle; 0 is always online."),
  OPT(availability_online, FEDC_OPT_DOUBLE, "1", "fraction",
      "Share of each cycle a client is online; phases are random."),
  OPT(reference_flops, FEDC_OPT_DOUBLE, "1e9", "FLOP/s",
      "Training throughput of a device of speed 1."),
  OPT(latency, FEDC_OPT_DOUBLE, "50", "ms", "One-way network latency."),
  OPT(reconnect_delay, FEDC_OPT_DOUBLE, "60", "s",
      "Delay before a client that dropped out connects again."),
  OPT(connect_window, FEDC_OPT_DOUBLE, "1", "s",
      "Clients first connect at times spread uniformly over this window; "
      "the first round starts after it."),
  OPT(max_time, FEDC_OPT_DOUBLE, "0", "s",
      "Stop at this simulated time; 0 is no limit."),
  OPT(stall_time, FEDC_OPT_DOUBLE, "604800", "s",
      "Fail when no round finishes for this long in simulated time, for "
      "example because too few clients are online together; 0 is no limit."),
  OPT(chunk_bytes, FEDC_OPT_UINT, "1048576", "bytes",
      "Tensor data per chunk message."),
  OPT(transport, FEDC_OPT_STRING, "memory", "name",
      "memory: engines in this process on a virtual clock; tls: real "
      "fedc-server and fedc-client processes on loopback."),
  OPT(workers, FEDC_OPT_UINT, "0", "threads",
      "Training threads besides the event loop, which trains the job it "
      "waits for; 0 is one per core less one."),
  OPT(metrics, FEDC_OPT_STRING, NULL, "path",
      "JSON Lines file with one line per round; - writes to stdout."),
  OPT(plot, FEDC_OPT_STRING, NULL, "path",
      "Plot of test accuracy against round and simulated time: .svg, or "
      ".png drawn by gnuplot."),
  OPT(wall_clock, FEDC_OPT_BOOL, "false", "",
      "Add each round's real seconds (\"seconds\") to the metrics; the "
      "file is then no longer the same from run to run."),
  OPT(progress, FEDC_OPT_BOOL, "true", "",
      "Show a progress bar when stdout is a terminal."),
  OPT(log_level, FEDC_OPT_STRING, "warn", "level",
      "debug, info, warn, error or off."),
  OPT(log_file, FEDC_OPT_STRING, NULL, "path",
      "File to append log lines to; unset logs to stderr."),
  OPT(server_bin, FEDC_OPT_STRING, NULL, "path",
      "--transport tls: the fedc-server program; unset looks beside "
      "fedc-sim, in the build tree, then in PATH."),
  OPT(client_bin, FEDC_OPT_STRING, NULL, "path",
      "--transport tls: the fedc-client program, found like server_bin."),
  OPT(make_certs, FEDC_OPT_STRING, NULL, "path",
      "--transport tls: the deploy/make-certs script that makes the test "
      "PKI; unset uses the one of the source tree fedc-sim was built from."),
  OPT(work_dir, FEDC_OPT_STRING, NULL, "path",
      "--transport tls: folder for certificates, client data and logs; "
      "unset makes a temporary one."),
  OPT(tls_timeout, FEDC_OPT_UINT, "600", "s",
      "--transport tls: real time the run may take before it is stopped."),
};

static const char summary[] =
    "fedc-sim: simulates federated training of many clients on one "
    "machine. The server\nand client engines of fedc-server and fedc-client "
    "run in this process on a virtual\nclock that models each device's "
    "speed, bandwidth, availability and dropout.";

static int fail(const char *message)
{
  fprintf(stderr, "fedc-sim: %s\n", message);
  return FEDC_EINVAL;
}

static int validate_rounds(const fedc_args *a)
{
  enum fedc_agg_strategy strategy;

  if (a->rounds == 0 || a->clients == 0 || a->batch_size == 0 ||
      a->local_epochs == 0)
    return fail("rounds, clients, local_epochs and batch_size must be at "
                "least 1");
  if (a->clients >= UINT32_MAX || a->clients_per_round > a->clients)
    return fail("clients_per_round must be at most clients, and clients "
                "below 2^32 - 1");
  if (!(a->fraction_fit > 0 && a->fraction_fit <= 1) ||
      !(a->quorum >= 0 && a->quorum <= 1))
    return fail("fraction_fit must be in (0, 1] and quorum in [0, 1]");
  if (!(a->learning_rate > 0) || a->momentum < 0 || a->momentum >= 1 ||
      a->weight_decay < 0 || a->proximal_mu < 0 || a->server_lr < 0 ||
      a->server_momentum < 0)
    return fail("invalid training settings: learning_rate must be > 0, "
                "momentum in [0, 1), the others >= 0");
  if (a->round_timeout == 0 || a->data_copies == 0 || a->chunk_bytes < 1024)
    return fail("round_timeout and data_copies must be at least 1 and "
                "chunk_bytes at least 1024");
  if (fedc_agg_strategy_parse(a->strategy, &strategy) < 0)
    return fail("unknown strategy; see --help for the list");
  if (a->min_clients > a->clients) {
    fprintf(stderr, "fedc-sim: min_clients %lu is above clients %lu, so "
            "no round could ever start\n", a->min_clients, a->clients);
    return FEDC_EINVAL;
  }
  return 0;
}

/* Rejects availability settings under which no client is ever online,
 * or which have no effect, before any data is loaded. */
static int validate_availability(const fedc_args *a)
{
  if (!(a->availability_online >= 0 && a->availability_online <= 1) ||
      !(a->availability_period >= 0))
    return fail("availability_online must be in [0, 1] and "
                "availability_period >= 0");
  if (a->availability_period > 0 && a->availability_online == 0) {
    fprintf(stderr, "fedc-sim: availability_online is 0 with "
            "availability_period %g s, so no client would ever be online; "
            "set availability_online in (0, 1]\n", a->availability_period);
    return FEDC_EINVAL;
  }
  if (a->availability_period == 0 && a->availability_online < 1) {
    fprintf(stderr, "fedc-sim: availability_online %g has no effect "
            "without availability_period, which is 0 (always online); set "
            "availability_period in seconds\n", a->availability_online);
    return FEDC_EINVAL;
  }
  return 0;
}

static int validate_devices(const fedc_args *a)
{
  if (!(a->speed > 0) || !(a->download_bps > 0) || !(a->upload_bps > 0) ||
      a->speed_sigma < 0 || a->bandwidth_sigma < 0)
    return fail("speed and bandwidths must be > 0 and their sigmas >= 0");
  if (!(a->dropout >= 0 && a->dropout < 1))
    return fail("dropout must be in [0, 1): at 1 every sampled client "
                "leaves its round, so no round could aggregate");
  if (!(a->reference_flops > 0) || a->latency < 0 ||
      !(a->reconnect_delay > 0) || a->max_time < 0 ||
      a->connect_window < 0 || a->stall_time < 0)
    return fail("reference_flops and reconnect_delay must be > 0, latency, "
                "connect_window, max_time and stall_time >= 0");
  return validate_availability(a);
}

static int validate_attack(const fedc_args *a)
{
  enum fedc_attack_kind kind;

  if (fedc_attack_kind_parse(a->attack, &kind) < 0)
    return fail("unknown attack; expected none, scale or sign_flip");
  if (!(a->attack_fraction >= 0 && a->attack_fraction <= 1))
    return fail("attack_fraction must be in [0, 1]");
  if (!(a->attack_factor > 0) || !isfinite(a->attack_factor))
    return fail("attack_factor must be a finite number > 0");
  if (kind != FEDC_ATTACK_NONE && strcmp(a->transport, "memory") != 0)
    return fail("attack works only with transport memory, in which the "
                "simulator trains the clients");
  return 0;
}

/* Checks the plot path before the run, so that a run of hours does not
 * end without its plot. */
static int validate_plot(const fedc_args *a)
{
  enum fedc_plot_format format;
  int rc;

  if (a->plot == NULL)
    return 0;
  rc = fedc_plot_check_path(a->plot, &format);
  if (rc == FEDC_EINVAL)
    fprintf(stderr, "fedc-sim: invalid plot path %s: the name must end in "
            ".svg, or in .png to have gnuplot draw it\n", a->plot);
  else if (rc == FEDC_ENOENT)
    fprintf(stderr, "fedc-sim: plot %s: gnuplot, which draws .png plots, "
            "is not on PATH; install gnuplot or write an .svg plot\n",
            a->plot);
  return rc < 0 ? FEDC_EINVAL : 0;
}

static int validate(const fedc_args *a)
{
  enum fedc_partition_scheme scheme;
  enum fedc_sampling sampling;
  enum fedc_rounds_mode mode;
  enum fedc_staleness_fn staleness;
  enum fedc_log_level level;
  int rc = validate_rounds(a);

  if (rc == 0)
    rc = validate_devices(a);
  if (rc < 0)
    return rc;
  if (fedc_partition_scheme_parse(a->partition, &scheme) < 0)
    return fail("unknown partition; expected iid, dirichlet or shards");
  if (!(a->alpha > 0) || a->shards_per_client == 0)
    return fail("alpha must be > 0 and shards_per_client at least 1");
  if (fedc_sampling_parse(a->sampling, &sampling) < 0 ||
      fedc_rounds_mode_parse(a->mode, &mode) < 0 ||
      fedc_staleness_fn_parse(a->staleness, &staleness) < 0)
    return fail("unknown sampling, mode or staleness; see --help for the "
                "names");
  if (strcmp(a->transport, "memory") != 0 && strcmp(a->transport, "tls") != 0)
    return fail("unknown transport; expected memory or tls");
  if (fedc_log_parse_level(a->log_level, &level) < 0)
    return fail("invalid log_level: expected debug, info, warn, error or off");
  rc = validate_attack(a);
  if (rc == 0)
    rc = validate_plot(a);
  return rc;
}

int fedc_args_parse(fedc_args *args, int argc, char **argv)
{
  fedc_config cfg;
  char message[512] = "out of memory";
  int help = 0;
  int rc;

  memset(args, 0, sizeof(*args));
  rc = fedc_config_init(&cfg, "fedc-sim", option_table,
                        sizeof(option_table) / sizeof(option_table[0]), args);
  if (rc == 0)
    rc = fedc_config_parse_args(&cfg, argc, argv, &help, message,
                                sizeof(message));
  if (rc < 0) {
    fprintf(stderr, "fedc-sim: %s\n", message);
  } else if (help) {
    fedc_config_print_help(&cfg, stdout, summary);
    return 1;
  } else {
    rc = validate(args);
  }
  if (rc < 0)
    fedc_config_close(&cfg);
  return rc;
}

void fedc_args_close(fedc_args *args)
{
  fedc_config cfg = { option_table,
                      sizeof(option_table) / sizeof(option_table[0]),
                      args, "fedc-sim" };

  fedc_config_close(&cfg);
}
