#include "tls_run.h"

#include <stdio.h>

#include "util/error.h"

int fedc_tls_run(const fedc_args *args)
{
  (void)args;
  fprintf(stderr, "fedc-sim: --transport tls is not available in this "
          "build yet\n");
  return FEDC_EUNSUPPORTED;
}
