/* Model-poisoning clients for fedc-sim: a chosen share of the clients
 * tampers with its update before sending it, so that robust aggregation
 * strategies can be measured against plain averaging.
 *
 * The update is the trained weights minus the global model the client was
 * sent. A scaling attacker sends scale x update; a sign-flipping attacker
 * sends -scale x update. The attackers are spread evenly over the client
 * indices: client i attacks when floor((i + 1) f) > floor(i f) for the
 * share f, so exactly floor(n f) of n clients attack, whatever the seed. */
#ifndef FEDC_SIM_ATTACK_H
#define FEDC_SIM_ATTACK_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/tensor.h"

enum fedc_attack_kind {
  FEDC_ATTACK_NONE = 0,
  FEDC_ATTACK_SCALE,         /* update x scale */
  FEDC_ATTACK_SIGN_FLIP,     /* update x -scale */
};

typedef struct fedc_attack {
  enum fedc_attack_kind kind;
  double fraction;           /* share of clients that attack, in [0, 1] */
  double scale;              /* > 0 */
} fedc_attack;

/* Parses "none", "scale" or "sign_flip". Returns 0 or FEDC_EINVAL. */
int fedc_attack_kind_parse(const char *name, enum fedc_attack_kind *out);

/* Checks the settings. Returns 0 or FEDC_EINVAL. */
int fedc_attack_check(const fedc_attack *attack);

/* Returns whether client attacks. */
bool fedc_attack_client(const fedc_attack *attack, uint32_t client);

/* Replaces the trained weights of an attacking client by global +
 * factor x (weights - global), where factor is scale, or -scale for the
 * sign flip. Other clients' weights are left alone. Returns 0, or
 * FEDC_ESHAPE when the layouts of global and weights differ. */
int fedc_attack_apply(const fedc_attack *attack, uint32_t client,
                      const fedc_tensor_list *global,
                      fedc_tensor_list *weights);

#endif
