/* fedc-client: parses the configuration, sets up logging and runs the
 * daemon, or describes a model spec and exits. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "client/client_options.h"
#include "client/daemon.h"
#include "daemon/cli.h"
#include "nn/model.h"
#include "util/error.h"

/* Prints the layer table, parameter count and training memory of spec.
 * Returns the exit status: 0, 2 for an invalid spec (the nn log line
 * before the message gives the reason), or 1 when out of memory. */
static int describe_model(const char *spec)
{
  fedc_model *model = NULL;
  char *text = NULL;
  int rc = fedc_model_new(spec, 1, &model);

  if (rc == 0)
    rc = fedc_model_describe(model, FEDC_CLIENT_DESCRIBE_BATCH, &text);
  fedc_model_free(&model);
  if (rc == FEDC_EINVAL) {
    fprintf(stderr, "fedc-client: invalid model spec '%s'; expected a "
            "built-in such as logreg:784:10, mlp:784:128:10 or cnn, or a "
            "layer list such as \"input 784; dense 10; loss ce\"\n", spec);
    return 2;
  }
  if (rc < 0) {
    fprintf(stderr, "fedc-client: cannot describe model '%s': %s\n", spec,
            fedc_strerror(rc));
    return 1;
  }
  fputs(text, stdout);
  free(text);
  return 0;
}

int main(int argc, char **argv)
{
  fedc_client_options options;
  int rc = fedc_client_options_parse(&options, argc, argv);
  int status;

  if (rc < 0)
    return 2;
  if (rc == 1) {
    fedc_client_options_close(&options);
    return 0;
  }
  if (options.describe_model != NULL) {
    status = describe_model(options.describe_model);
    fedc_client_options_close(&options);
    return status;
  }
  /* A server that vanishes mid-write must not kill the client. */
  signal(SIGPIPE, SIG_IGN);
  status = fedc_cli_setup_logging("fedc-client", options.log_level,
                                options.log_file) < 0
               ? 1
               : fedc_client_daemon_run(&options);
  fedc_client_options_close(&options);
  return status;
}
