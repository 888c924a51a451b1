/* Token embeddings, PyTorch's nn.Embedding and nn.EmbeddingBag(mode="mean"),
 * with "weight" [vocab, dim] initialised from N(0, 1).
 *
 * The input is one row of token ids stored as floats (exact up to 2^24).
 * An embedding maps [L] ids to [L, dim]; an embedding bag maps them to the
 * mean of their vectors, [dim]. With a padding id, that id's vector starts
 * at zero, receives no gradient and, in a bag, is left out of the mean (a
 * bag of padding only is all zeros), as torch's padding_idx does. */
#ifndef FEDC_NN_EMBEDDING_H
#define FEDC_NN_EMBEDDING_H

#include <stdbool.h>

#include "nn/layer.h"

#define FEDC_EMBEDDING_NO_PADDING (-1)

/* Creates an embedding (bag when bag is set) over in = [L]. padding is an
 * id below vocab or FEDC_EMBEDDING_NO_PADDING. Forward passes return
 * FEDC_EINVAL for an id that is not an integer in [0, vocab). */
int fedc_embedding_new(const char *name, const fedc_shape *in, uint32_t vocab,
                       uint32_t dim, bool bag, int64_t padding,
                       fedc_layer **out);

#endif
