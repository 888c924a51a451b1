/* fedc-sim --transport tls: the same scenario run by real fedc-server and
 * fedc-client processes over mutual TLS on loopback, for end-to-end runs
 * of up to a few hundred clients. Time is real time there: devices,
 * availability and dropout are not modelled. */
#ifndef FEDC_SIM_TLS_RUN_H
#define FEDC_SIM_TLS_RUN_H

#include "args.h"

/* Runs the scenario of args. Returns 0 when the server finished its rounds,
 * or a FEDC_E* code after printing the reason to stderr. */
int fedc_tls_run(const fedc_args *args);

#endif
