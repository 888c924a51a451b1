/* External trainers ("trainer = exec"): training delegated to any program,
 * such as a PyTorch script, through files in a work folder.
 *
 * For each task fedc writes the global model and a task description,
 *   model.safetensors   the global model's tensors
 *   task.json           spec, spec_text (the layer list), round, data path,
 *                       file names and every fedc_train_config field,
 * runs the configured command with /bin/sh -c in the work folder (with
 * FEDC_WORK_DIR and FEDC_TASK set, output to trainer.log), and reads back
 *   update.safetensors  the trained tensors: the same names, dtypes and
 *                       shapes as model.safetensors, in any order
 *   metrics.json        {"loss": x, "accuracy": x, "examples": n,
 *                        "steps": n}; other keys are ignored.
 * examples/pytorch/train.py is a working trainer. */
#ifndef FEDC_NN_EXTERNAL_H
#define FEDC_NN_EXTERNAL_H

#include <stdint.h>

#include "nn/model.h"
#include "tensor/tensor.h"

#define FEDC_EXTERNAL_MODEL "model.safetensors"
#define FEDC_EXTERNAL_TASK "task.json"
#define FEDC_EXTERNAL_UPDATE "update.safetensors"
#define FEDC_EXTERNAL_METRICS "metrics.json"
#define FEDC_EXTERNAL_LOG "trainer.log"

/* The largest metrics.json read, in bytes. */
#define FEDC_EXTERNAL_METRICS_MAX 65536

typedef struct fedc_external_config {
  const char *command;       /* shell command line */
  const char *work_dir;      /* existing folder for the exchange files */
  uint32_t timeout_ms;       /* the command is killed after this; 0: none */
} fedc_external_config;

typedef struct fedc_external_task {
  const char *spec;          /* model spec as the server sent it */
  const char *data_path;     /* the client's data file, or NULL */
  uint64_t round;
  const fedc_train_config *train;
} fedc_external_task;

/* Runs one external training of global and stores the trained tensors in
 * updated (closed first), in global's order, and the trainer's metrics in
 * stats. Each failure is logged with its reason. Returns 0 or
 *   FEDC_EINVAL      a bad spec or config,
 *   FEDC_EIO         an exchange file that could not be written,
 *   FEDC_ECHILD      a command that could not start or exited with failure,
 *   FEDC_ETIMEDOUT   a command killed at the timeout (its process group),
 *   FEDC_EFORMAT     a missing or malformed update or metrics file,
 *   FEDC_ETOOBIG     an update file much larger than the model,
 *   FEDC_ESHAPE      a tensor missing, extra, or of another dtype or shape,
 *   FEDC_ENONFINITE  NaN or Inf in the update. */
int fedc_external_train(const fedc_external_config *config,
                        const fedc_external_task *task,
                        const fedc_tensor_list *global,
                        fedc_tensor_list *updated, fedc_train_stats *stats);

#endif
