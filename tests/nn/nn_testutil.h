/* Helpers shared by the trainer tests: random fills, parameter binding for
 * stand-alone nets, finite-difference gradient checks and a Fashion-MNIST
 * loader. */
#ifndef FEDC_TESTS_NN_TESTUTIL_H
#define FEDC_TESTS_NN_TESTUTIL_H

#include <stdint.h>

#include "data/dataset.h"
#include "nn/net.h"
#include "util/rng.h"

/* Fills n floats uniformly on [lo, hi). */
void nn_test_fill(float *x, size_t n, float lo, float hi, fedc_rng *rng);

/* Allocates storage for every parameter and buffer of net and initialises
 * them from seed. Free with nn_test_unbind. */
void nn_test_bind(fedc_net *net, uint64_t seed);
void nn_test_unbind(fedc_net *net);

/* Compares the analytic gradients of L = sum(y * r), for a random r, with
 * central finite differences, on the input x (batch examples) and on up to
 * max_checks elements of each parameter. Returns the largest error
 * |fd - analytic| / max(1, |fd|). Inputs that are token ids are not
 * perturbed when ids_input is set. */
double nn_test_gradcheck(fedc_net *net, const float *x, uint32_t batch,
                         float eps, int max_checks, int ids_input);

/* Directory of the Fashion-MNIST IDX files. */
#define NN_TEST_FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Loads Fashion-MNIST's "train" or "t10k" split into ds with
 * fedc_idx_load (pixels scaled to [0, 1]). Returns 0 or a FEDC_E* code. */
int nn_test_load_fmnist(const char *split, fedc_dataset *ds);

#endif
