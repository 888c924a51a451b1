#include "client_options.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "daemon/cli.h"
#include "util/error.h"
#include "util/log.h"

#define STRINGIFY(x) #x
#define TO_TEXT(x) STRINGIFY(x)

#define OPT(field, type, def, unit, help) \
  { #field, type, offsetof(fedc_client_options, field), def, unit, help }

static const fedc_option option_table[] = {
  OPT(server, FEDC_OPT_STRING, "localhost", "host",
      "Server host name or IP address; its certificate must name it."),
  OPT(port, FEDC_OPT_UINT, "7443", "port", "Server TCP port."),
  OPT(id, FEDC_OPT_STRING, NULL, "id",
      "Client id sent in Hello; must equal the CN of the certificate."),
  OPT(cert, FEDC_OPT_STRING, NULL, "path", "Client certificate (PEM)."),
  OPT(key, FEDC_OPT_STRING, NULL, "path", "Private key of the certificate (PEM)."),
  OPT(ca, FEDC_OPT_STRING, NULL, "path",
      "CA certificate (PEM) that the server certificate must be signed by."),
  OPT(data, FEDC_OPT_STRING, NULL, "path",
      "Local data file (safetensors from fedc-data) to train and evaluate on."),
  OPT(threads, FEDC_OPT_UINT, "1", "threads",
      "OpenBLAS threads for local training; 0 keeps the OpenBLAS default."),
  OPT(trainer, FEDC_OPT_STRING, "builtin", "name",
      "builtin trains with fedc's own trainer; exec runs trainer_command instead."),
  OPT(trainer_command, FEDC_OPT_STRING, NULL, "command",
      "With trainer = exec: shell command run in work_dir for each training task."),
  OPT(trainer_timeout, FEDC_OPT_UINT, "600", "s",
      "With trainer = exec: the command is killed after this; 0 never kills it."),
  OPT(work_dir, FEDC_OPT_STRING, NULL, "path",
      "With trainer = exec: folder for the exchange files, created if missing."),
  OPT(describe_model, FEDC_OPT_STRING, NULL, "spec",
      "Print this model's layers, parameter count and training memory at "
      "batch " TO_TEXT(FEDC_CLIENT_DESCRIBE_BATCH) ", then exit."),
  OPT(reconnect_min, FEDC_OPT_UINT, "500", "ms",
      "First reconnect window after a lost connection; each retry doubles it."),
  OPT(reconnect_max, FEDC_OPT_UINT, "30000", "ms",
      "Largest reconnect window; each delay is drawn uniformly below it."),
  OPT(max_frame_bytes, FEDC_OPT_UINT, "16777216", "bytes",
      "Largest frame accepted from the server; a larger one closes the connection."),
  OPT(log_level, FEDC_OPT_STRING, "info", "level", "debug, info, warn, error or off."),
  OPT(log_file, FEDC_OPT_STRING, NULL, "path",
      "File to append log lines to; unset logs to stderr."),
};

#define OPTION_COUNT (sizeof(option_table) / sizeof(option_table[0]))

static const char summary[] =
    "fedc-client: a federated learning client. It connects to fedc-server "
    "over mutual TLS,\ntrains the global model on its local data file and "
    "sends back only the update.";

static int fail(const char *message)
{
  fprintf(stderr, "fedc-client: %s\n", message);
  return FEDC_EINVAL;
}

/* The largest trainer_timeout whose milliseconds fit the trainer's uint32. */
#define TRAINER_TIMEOUT_MAX (UINT32_MAX / 1000)

static int validate_trainer(const fedc_client_options *c)
{
  if (strcmp(c->trainer, "builtin") == 0)
    return 0;
  if (strcmp(c->trainer, "exec") != 0)
    return fail("invalid trainer: expected builtin or exec");
  if (c->trainer_command == NULL || c->trainer_command[0] == '\0')
    return fail("missing trainer_command: trainer = exec needs the command to run");
  if (c->work_dir == NULL || c->work_dir[0] == '\0')
    return fail("missing work_dir: trainer = exec needs a folder for its files");
  if (c->trainer_timeout > TRAINER_TIMEOUT_MAX)
    return fail("invalid trainer_timeout: expected 0 to 4294967 seconds");
  return 0;
}

static int validate(const fedc_client_options *c)
{
  enum fedc_log_level level;

  if (c->id == NULL || c->id[0] == '\0')
    return fail("missing id: set it to the CN of the client certificate");
  if (c->cert == NULL || c->key == NULL || c->ca == NULL)
    return fail("missing cert, key or ca: mutual TLS needs all three; see --help");
  if (c->data == NULL)
    return fail("missing data: the local data file to train on; see --help");
  if (c->port == 0 || c->port > 65535)
    return fail("invalid port: expected 1 to 65535");
  if (c->reconnect_min == 0 || c->reconnect_max < c->reconnect_min)
    return fail("invalid reconnect window: need 0 < reconnect_min <= reconnect_max");
  if (c->max_frame_bytes < 4096 || c->max_frame_bytes > UINT32_MAX)
    return fail("invalid max_frame_bytes: expected 4096 to 4294967295");
  if (fedc_log_parse_level(c->log_level, &level) < 0)
    return fail("invalid log_level: expected debug, info, warn, error or off");
  return validate_trainer(c);
}

int fedc_client_options_parse(fedc_client_options *options, int argc,
                              char **argv)
{
  int rc;

  memset(options, 0, sizeof(*options));
  rc = fedc_cli_parse("fedc-client", summary, option_table, OPTION_COUNT,
                      options, argc, argv);
  if (rc == 0 && options->describe_model == NULL)
    rc = validate(options);
  if (rc < 0)
    fedc_cli_close("fedc-client", option_table, OPTION_COUNT, options);
  return rc;
}

void fedc_client_options_close(fedc_client_options *options)
{
  fedc_cli_close("fedc-client", option_table, OPTION_COUNT, options);
}
