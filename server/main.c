/* fedc-server: parses the configuration, sets up logging and runs the
 * daemon. */
#include <signal.h>
#include <stdio.h>

#include "server/daemon.h"
#include "server/server_options.h"
#include "daemon/cli.h"

int main(int argc, char **argv)
{
  fedc_server_options options;
  int rc = fedc_server_options_parse(&options, argc, argv);
  int status;

  if (rc < 0)
    return 2;
  if (rc == 1) {
    fedc_server_options_close(&options);
    return 0;
  }
  /* A client that vanishes mid-write must not kill the server. */
  signal(SIGPIPE, SIG_IGN);
  status = fedc_cli_setup_logging("fedc-server", options.log_level,
                                options.log_file) < 0
               ? 1
               : fedc_server_daemon_run(&options);
  fedc_server_options_close(&options);
  return status;
}
