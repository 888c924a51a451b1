/* Server checkpoints: the global model and the state needed to resume.
 *
 * A checkpoint folder contains two safetensors files, each written atomically
 * (temporary file, fsync, rename):
 *
 *   model.safetensors   the global model after round "round", with metadata
 *                       round, model_spec, seed and strategy; it loads
 *                       into the equivalent PyTorch module unchanged
 *   server.safetensors  the aggregation strategy's optimizer state (may
 *                       hold no tensors), with metadata round
 *
 * The server state is written first and the model last, so the model file
 * decides which round a checkpoint is at. A state file whose round differs
 * from the model's belongs to a write that a crash interrupted, and
 * fedc_checkpoint_load() reports it as absent. */
#ifndef FEDC_SERVER_CHECKPOINT_H
#define FEDC_SERVER_CHECKPOINT_H

#include <stdint.h>

#include "tensor/tensor.h"

#define FEDC_CHECKPOINT_MODEL_FILE "model.safetensors"
#define FEDC_CHECKPOINT_STATE_FILE "server.safetensors"
#define FEDC_CHECKPOINT_TEXT_MAX 256  /* bytes of a spec or strategy name */

typedef struct fedc_checkpoint {
  uint64_t round;            /* rounds completed; training resumes at round + 1 */
  uint64_t seed;
  char model_spec[FEDC_CHECKPOINT_TEXT_MAX];
  char strategy[FEDC_CHECKPOINT_TEXT_MAX];
  fedc_tensor_list model;    /* global model parameters */
  fedc_tensor_list state;    /* optimizer state; empty when there is none */
  int has_state;             /* load: 1 when server.safetensors matched */
} fedc_checkpoint;

void fedc_checkpoint_init(fedc_checkpoint *ckpt);
void fedc_checkpoint_close(fedc_checkpoint *ckpt);

/* Writes ckpt into dir, creating dir (mode 0700) if it does not exist.
 * Returns 0 or a FEDC_E* code; the reason is logged. */
int fedc_checkpoint_save(const char *dir, const fedc_checkpoint *ckpt);

/* Reads the checkpoint in dir into ckpt (closed first). Returns 0,
 * FEDC_ENOENT when dir holds no model file, FEDC_EFORMAT when the model
 * file lacks the metadata or is malformed, or another FEDC_E* code. The
 * state file is optional: has_state says whether it was read. */
int fedc_checkpoint_load(const char *dir, fedc_checkpoint *ckpt);

#endif
