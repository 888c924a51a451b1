/* Model specs: the text that describes a network, so that a server can
 * ship the architecture with a task and every daemon builds the same model.
 *
 * A spec is either a built-in name with sizes separated by colons:
 *
 *   logreg:IN:CLASSES          one dense layer "fc"
 *   mlp:IN:H1:...:CLASSES      dense "fc1", "fc2", ... with ReLU between
 *   cnn[:C:H:W:CLASSES]        Fashion-MNIST CNN, default 1:28:28:10
 *   rescnn[:C:H:W:CLASSES]     small residual CNN, default 1:28:28:10
 *   textbag:VOCAB:LEN:DIM:CLASSES  mean embedding bag of LEN token ids
 *                              (id 0 is padding) and a dense classifier
 *
 * or a layer list: statements separated by ";" or newlines,
 *
 *   input 1x28x28; conv 16 5 pad=2 name=conv1; relu; maxpool 2;
 *   flatten; dense 10 name=fc; loss ce
 *
 * "input DIMS" comes first; "loss ce|bce|mse" may appear once (default
 * ce). Each layer is a keyword, positional sizes, then key=value options:
 *
 *   dense OUT [bias=1]            conv OUT KERNEL [stride=1 pad=0 bias=1]
 *   maxpool K [stride=K pad=0]    avgpool K [stride=K pad=0]
 *   batchnorm [eps=1e-5 momentum=0.1]   layernorm [eps=1e-5]
 *   dropout P                     flatten
 *   relu  gelu  sigmoid  tanh     leaky_relu [slope=0.01]
 *   embedding VOCAB DIM           embeddingbag VOCAB DIM [padding=0]
 *   residual [name=N] { LAYERS } [shortcut { LAYERS }]
 *
 * A layer's parameters are named "<name>.weight" and so on, where the name
 * is its name= option or else its index in its list, as in PyTorch's
 * nn.Sequential; layers of a residual block are "<block>.body.<i>" and
 * "<block>.shortcut.<i>". */
#ifndef FEDC_NN_SPEC_H
#define FEDC_NN_SPEC_H

#include "nn/loss.h"
#include "nn/net.h"

/* Upper bounds that keep a spec from a peer from exhausting memory. */
#define FEDC_SPEC_MAX_LEN 65536           /* bytes of spec text */
#define FEDC_SPEC_MAX_PARAMS (1u << 28)   /* floats of parameters */
#define FEDC_SPEC_MAX_ACTIVATION (1u << 24) /* floats per example and layer */
#define FEDC_SPEC_MAX_DEPTH 4             /* nesting of residual blocks */

/* Expands a built-in name into its layer list (a layer list is copied).
 * Stores a malloc'ed string in *text. Returns 0, FEDC_EINVAL or
 * FEDC_ENOMEM. */
int fedc_spec_expand(const char *spec, char **text);

/* Builds the layers of spec (built-in or layer list) into a new net and
 * reads its loss. Parameters are declared but not yet bound or
 * initialised. Logs the reason and returns FEDC_EINVAL for an invalid
 * spec, or FEDC_ENOMEM. */
int fedc_spec_build(const char *spec, fedc_net **net, enum fedc_loss *loss);

#endif
