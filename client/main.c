/* fedc-client: parses the configuration, sets up logging and runs the
 * daemon. */
#include <signal.h>
#include <stdio.h>

#include "client/client_options.h"
#include "daemon/cli.h"
#include "client/daemon.h"

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
  /* A server that vanishes mid-write must not kill the client. */
  signal(SIGPIPE, SIG_IGN);
  status = fedc_cli_setup_logging("fedc-client", options.log_level,
                                options.log_file) < 0
               ? 1
               : fedc_client_daemon_run(&options);
  fedc_client_options_close(&options);
  return status;
}
