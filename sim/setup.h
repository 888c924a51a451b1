/* The data fedc-sim runs on, shared by the in-memory and the TLS modes:
 * the training and test sets and their partition among the clients. */
#ifndef FEDC_SIM_SETUP_H
#define FEDC_SIM_SETUP_H

#include "args.h"
#include "data/dataset.h"
#include "data/partition.h"

/* Loads the training set and the test set that args name: a client data
 * file each, or the IDX files of args->data. test stays empty when only a
 * training file was named. Returns 0 or a FEDC_E* code after printing the
 * reason to stderr. */
int fedc_setup_load_data(const fedc_args *args, fedc_dataset *train,
                         fedc_dataset *test);

/* Splits train among args->clients clients as args set, over
 * args->data_copies copies of the rows. Returns 0 or a FEDC_E* code after
 * printing the reason to stderr. */
int fedc_setup_partition(const fedc_args *args, const fedc_dataset *train,
                         fedc_partition *p);

#endif
