/* Residual block: y = body(x) + shortcut(x), where the shortcut is the
 * identity when absent (a ResNet basic block puts its final ReLU after the
 * block). The body's layers are named "<name>.body.<i>" and the
 * shortcut's "<name>.shortcut.<i>". */
#ifndef FEDC_NN_RESIDUAL_H
#define FEDC_NN_RESIDUAL_H

#include "nn/net.h"

/* Creates the block, taking ownership of body and shortcut (which may be
 * NULL) also on failure. Both must take in and produce the same shape:
 * FEDC_EINVAL otherwise. */
int fedc_residual_new(const char *name, const fedc_shape *in, fedc_net *body,
                      fedc_net *shortcut, fedc_layer **out);

#endif
