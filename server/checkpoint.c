#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tensor/safetensors.h"
#include "util/error.h"
#include "util/log.h"

#define LOG_COMPONENT "checkpoint"

void fedc_checkpoint_init(fedc_checkpoint *ckpt)
{
  memset(ckpt, 0, sizeof(*ckpt));
  fedc_tensor_list_init(&ckpt->model);
  fedc_tensor_list_init(&ckpt->state);
}

void fedc_checkpoint_close(fedc_checkpoint *ckpt)
{
  fedc_tensor_list_close(&ckpt->model);
  fedc_tensor_list_close(&ckpt->state);
  fedc_checkpoint_init(ckpt);
}

static int join_path(char *out, size_t size, const char *dir,
                     const char *file)
{
  int n = snprintf(out, size, "%s/%s", dir, file);

  return n < 0 || (size_t)n >= size ? FEDC_EINVAL : 0;
}

static int set_number(fedc_metadata *meta, const char *key, uint64_t value)
{
  char text[32];

  snprintf(text, sizeof(text), "%" PRIu64, value);
  return fedc_metadata_set(meta, key, text);
}

static int write_state(const char *dir, const fedc_checkpoint *ckpt)
{
  fedc_metadata meta;
  char path[PATH_MAX];
  int rc = join_path(path, sizeof(path), dir, FEDC_CHECKPOINT_STATE_FILE);

  fedc_metadata_init(&meta);
  if (rc == 0)
    rc = set_number(&meta, "round", ckpt->round);
  if (rc == 0)
    rc = fedc_metadata_set(&meta, "strategy", ckpt->strategy);
  if (rc == 0)
    rc = fedc_safetensors_write(path, &ckpt->state, &meta);
  fedc_metadata_close(&meta);
  return rc;
}

static int write_model(const char *dir, const fedc_checkpoint *ckpt)
{
  fedc_metadata meta;
  char path[PATH_MAX];
  int rc = join_path(path, sizeof(path), dir, FEDC_CHECKPOINT_MODEL_FILE);

  fedc_metadata_init(&meta);
  if (rc == 0)
    rc = set_number(&meta, "round", ckpt->round);
  if (rc == 0)
    rc = fedc_metadata_set(&meta, "model_spec", ckpt->model_spec);
  if (rc == 0)
    rc = set_number(&meta, "seed", ckpt->seed);
  if (rc == 0)
    rc = fedc_metadata_set(&meta, "strategy", ckpt->strategy);
  if (rc == 0)
    rc = fedc_safetensors_write(path, &ckpt->model, &meta);
  fedc_metadata_close(&meta);
  return rc;
}

int fedc_checkpoint_save(const char *dir, const fedc_checkpoint *ckpt)
{
  int rc;

  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    fedc_error(LOG_COMPONENT, "cannot create checkpoint folder dir=%s: %s",
               dir, strerror(errno));
    return FEDC_EIO;
  }
  /* The state goes first: the model file, written last, marks the round. */
  rc = write_state(dir, ckpt);
  if (rc == 0)
    rc = write_model(dir, ckpt);
  if (rc < 0)
    fedc_error(LOG_COMPONENT, "failed to write checkpoint dir=%s round=%" PRIu64
               ": %s", dir, ckpt->round, fedc_strerror(rc));
  return rc;
}

static int parse_number(const fedc_metadata *meta, const char *key,
                        uint64_t *out)
{
  const char *text = fedc_metadata_get(meta, key);
  char *end = NULL;

  if (text == NULL || text[0] < '0' || text[0] > '9')
    return FEDC_EFORMAT;
  errno = 0;
  *out = strtoull(text, &end, 10);
  return errno != 0 || *end != '\0' ? FEDC_EFORMAT : 0;
}

static int copy_text(const fedc_metadata *meta, const char *key, char *out)
{
  const char *text = fedc_metadata_get(meta, key);

  if (text == NULL || strlen(text) >= FEDC_CHECKPOINT_TEXT_MAX)
    return FEDC_EFORMAT;
  strcpy(out, text);
  return 0;
}

static int read_model(const char *path, fedc_checkpoint *ckpt)
{
  fedc_metadata meta;
  int rc;

  fedc_metadata_init(&meta);
  rc = fedc_safetensors_read(path, &ckpt->model, &meta);
  if (rc == 0)
    rc = parse_number(&meta, "round", &ckpt->round);
  if (rc == 0)
    rc = parse_number(&meta, "seed", &ckpt->seed);
  if (rc == 0)
    rc = copy_text(&meta, "model_spec", ckpt->model_spec);
  if (rc == 0)
    rc = copy_text(&meta, "strategy", ckpt->strategy);
  if (rc == FEDC_EFORMAT)
    fedc_error(LOG_COMPONENT, "invalid checkpoint file=%s: missing or bad "
               "metadata (round, seed, model_spec, strategy)", path);
  fedc_metadata_close(&meta);
  return rc;
}

/* Reads the optimizer state when its round matches the model's. */
static void read_state(const char *path, fedc_checkpoint *ckpt)
{
  fedc_metadata meta;
  uint64_t round = 0;
  int rc;

  fedc_metadata_init(&meta);
  rc = fedc_safetensors_read(path, &ckpt->state, &meta);
  if (rc == 0)
    rc = parse_number(&meta, "round", &round);
  if (rc == 0 && round == ckpt->round) {
    ckpt->has_state = 1;
  } else {
    if (rc != FEDC_ENOENT)
      fedc_warn(LOG_COMPONENT, "ignoring server state file=%s round=%" PRIu64
                " model_round=%" PRIu64 ": %s", path, round, ckpt->round,
                rc < 0 ? fedc_strerror(rc) : "round differs from the model");
    fedc_tensor_list_close(&ckpt->state);
  }
  fedc_metadata_close(&meta);
}

int fedc_checkpoint_load(const char *dir, fedc_checkpoint *ckpt)
{
  char path[PATH_MAX];
  int rc;

  fedc_checkpoint_close(ckpt);
  rc = join_path(path, sizeof(path), dir, FEDC_CHECKPOINT_MODEL_FILE);
  if (rc == 0)
    rc = read_model(path, ckpt);
  if (rc < 0) {
    fedc_checkpoint_close(ckpt);
    return rc;
  }
  if (join_path(path, sizeof(path), dir, FEDC_CHECKPOINT_STATE_FILE) == 0)
    read_state(path, ckpt);
  return 0;
}
