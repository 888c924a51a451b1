#include "nn/external.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nn/spec.h"
#include "tensor/json.h"
#include "tensor/safetensors.h"
#include "util/error.h"
#include "util/log.h"

#define LOG_COMPONENT "trainer"

/* Slack over the model's bytes allowed for the update file's header. */
#define UPDATE_HEADER_SLACK (16u << 20)

/* How often the child is polled while it runs. */
#define POLL_INTERVAL_MS 10

extern char **environ;

static int path_in(char *buf, size_t len, const char *dir, const char *name)
{
  int n = snprintf(buf, len, "%s/%s", dir, name);

  return n < 0 || (size_t)n >= len ? FEDC_EINVAL : 0;
}

/* --- task.json ------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;

    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void json_key_string(FILE *f, const char *key, const char *value)
{
  fprintf(f, "  \"%s\": ", key);
  if (value != NULL)
    json_string(f, value);
  else
    fputs("null", f);
  fputs(",\n", f);
}

static void write_train_config(FILE *f, const fedc_train_config *c)
{
  static const char *const optimizers[] = { "sgd", "adam", "adamw" };
  static const char *const schedules[] = { "constant", "step", "cosine" };

  fprintf(f, "  \"local_epochs\": %u,\n  \"batch_size\": %u,\n",
          c->local_epochs, c->batch_size);
  fprintf(f, "  \"learning_rate\": %.9g,\n  \"momentum\": %.9g,\n",
          c->learning_rate, c->momentum);
  fprintf(f, "  \"weight_decay\": %.9g,\n  \"proximal_mu\": %.9g,\n",
          c->weight_decay, c->proximal_mu);
  fprintf(f, "  \"seed\": %llu,\n  \"max_steps\": %u,\n",
          (unsigned long long)c->seed, c->max_steps);
  fprintf(f, "  \"optimizer\": \"%s\",\n  \"nesterov\": %s,\n",
          optimizers[c->optimizer], c->nesterov ? "true" : "false");
  fprintf(f, "  \"beta1\": %.9g,\n  \"beta2\": %.9g,\n  \"eps\": %.9g,\n",
          c->beta1 != 0 ? c->beta1 : 0.9, c->beta2 != 0 ? c->beta2 : 0.999,
          c->eps != 0 ? c->eps : 1e-8);
  fprintf(f, "  \"lr_schedule\": \"%s\",\n  \"lr_step_size\": %u,\n",
          schedules[c->lr_schedule], c->lr_step_size);
  fprintf(f, "  \"lr_gamma\": %.9g,\n  \"lr_min\": %.9g,\n"
          "  \"clip_norm\": %.9g\n", c->lr_gamma, c->lr_min, c->clip_norm);
}

static int write_task(const char *dir, const fedc_external_task *task)
{
  char path[4096];
  char *text = NULL;
  FILE *f;
  int rc;

  if ((unsigned)task->train->optimizer > FEDC_OPT_ADAMW ||
      (unsigned)task->train->lr_schedule > FEDC_LR_COSINE)
    return FEDC_EINVAL;
  if ((rc = path_in(path, sizeof(path), dir, FEDC_EXTERNAL_TASK)) != 0 ||
      (rc = fedc_spec_expand(task->spec, &text)) != 0)
    return rc;
  if ((f = fopen(path, "w")) == NULL) {
    free(text);
    fedc_error(LOG_COMPONENT, "cannot write %s: %s", path, strerror(errno));
    return FEDC_EIO;
  }
  fputs("{\n", f);
  json_key_string(f, "spec", task->spec);
  json_key_string(f, "spec_text", text);
  fprintf(f, "  \"round\": %llu,\n", (unsigned long long)task->round);
  json_key_string(f, "data", task->data_path);
  json_key_string(f, "model", FEDC_EXTERNAL_MODEL);
  json_key_string(f, "update", FEDC_EXTERNAL_UPDATE);
  json_key_string(f, "metrics", FEDC_EXTERNAL_METRICS);
  write_train_config(f, task->train);
  fputs("}\n", f);
  free(text);
  if (ferror(f) | fclose(f)) {
    fedc_error(LOG_COMPONENT, "cannot write %s", path);
    return FEDC_EIO;
  }
  return 0;
}

/* --- Running the command --------------------------------------------------- */

/* Builds the child's environment: ours plus FEDC_WORK_DIR and FEDC_TASK. */
static char **child_environment(const char *dir, char *work_var,
                                char *task_var, size_t var_len)
{
  size_t n = 0;
  char **env;

  while (environ[n] != NULL)
    n++;
  env = calloc(n + 3, sizeof(char *));
  if (env == NULL)
    return NULL;
  memcpy(env, environ, n * sizeof(char *));
  snprintf(work_var, var_len, "FEDC_WORK_DIR=%s", dir);
  snprintf(task_var, var_len, "FEDC_TASK=%s/%s", dir, FEDC_EXTERNAL_TASK);
  env[n] = work_var;
  env[n + 1] = task_var;
  return env;
}

static int spawn_command(const fedc_external_config *config, pid_t *pid)
{
  char work_var[4200], task_var[4200];
  char *argv[] = { "/bin/sh", "-c", (char *)config->command, NULL };
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  char **env = child_environment(config->work_dir, work_var, task_var,
                                 sizeof(work_var));
  int err;

  if (env == NULL)
    return FEDC_ENOMEM;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  /* Its own process group, so a timeout kills everything it started. */
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawn_file_actions_addchdir_np(&actions, config->work_dir);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, FEDC_EXTERNAL_LOG,
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  err = posix_spawn(pid, argv[0], &actions, &attr, argv, env);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  free(env);
  if (err != 0) {
    fedc_error(LOG_COMPONENT, "cannot start the trainer command: %s",
               strerror(err));
    return FEDC_ECHILD;
  }
  return 0;
}

static uint64_t now_ms(void)
{
  struct timespec t;

  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Waits for pid; after timeout_ms (0: never) kills its process group. */
static int wait_command(pid_t pid, uint32_t timeout_ms, int *status)
{
  struct timespec pause = { 0, POLL_INTERVAL_MS * 1000000L };
  uint64_t deadline = now_ms() + timeout_ms;

  for (;;) {
    pid_t done = waitpid(pid, status, WNOHANG);

    if (done == pid)
      return 0;
    if (done < 0 && errno != EINTR) {
      fedc_error(LOG_COMPONENT, "waitpid failed: %s", strerror(errno));
      return FEDC_ECHILD;
    }
    if (timeout_ms != 0 && now_ms() >= deadline) {
      kill(-pid, SIGKILL);
      while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        continue;
      return FEDC_ETIMEDOUT;
    }
    nanosleep(&pause, NULL);
  }
}

static int run_command(const fedc_external_config *config)
{
  pid_t pid;
  int status = 0;
  int rc = spawn_command(config, &pid);

  if (rc != 0)
    return rc;
  rc = wait_command(pid, config->timeout_ms, &status);
  if (rc == FEDC_ETIMEDOUT) {
    fedc_warn(LOG_COMPONENT, "trainer killed after %u ms; see %s/%s",
              config->timeout_ms, config->work_dir, FEDC_EXTERNAL_LOG);
    return rc;
  }
  if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    fedc_warn(LOG_COMPONENT, "trainer failed (%s %d); see %s/%s",
              WIFEXITED(status) ? "exit status" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
              config->work_dir, FEDC_EXTERNAL_LOG);
    rc = FEDC_ECHILD;
  }
  return rc;
}

/* --- Reading the results --------------------------------------------------- */

static bool same_layout(const fedc_tensor *a, const fedc_tensor *b)
{
  if (a->dtype != b->dtype || a->ndim != b->ndim)
    return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d])
      return false;
  return true;
}

/* Copies the tensors of update into out in global's order, checking that
 * both hold the same names, dtypes and shapes. */
static int match_update(const fedc_tensor_list *global,
                        const fedc_tensor_list *update, fedc_tensor_list *out)
{
  int rc = 0;

  if (update->count != global->count) {
    fedc_warn(LOG_COMPONENT, "rejected update: %zu tensors, model has %zu",
              update->count, global->count);
    return FEDC_ESHAPE;
  }
  for (size_t i = 0; i < global->count && rc == 0; i++) {
    const fedc_tensor *g = &global->items[i];
    const fedc_tensor *u = fedc_tensor_list_find(update, g->name);

    if (u == NULL || !same_layout(g, u)) {
      fedc_warn(LOG_COMPONENT, "rejected update: %s %s", g->name,
                u == NULL ? "missing" : "has another dtype or shape");
      return FEDC_ESHAPE;
    }
    rc = fedc_tensor_list_add(out, u->name, u->dtype, u->ndim, u->shape,
                              u->data);
  }
  return rc;
}

static int read_update(const char *dir, const fedc_tensor_list *global,
                       fedc_tensor_list *out)
{
  char path[4096];
  fedc_tensor_list update;
  struct stat st;
  int rc;

  if ((rc = path_in(path, sizeof(path), dir, FEDC_EXTERNAL_UPDATE)) != 0)
    return rc;
  if (stat(path, &st) != 0) {
    fedc_warn(LOG_COMPONENT, "trainer wrote no %s", path);
    return FEDC_EFORMAT;
  }
  if ((uint64_t)st.st_size > fedc_tensor_list_nbytes(global) +
                                 UPDATE_HEADER_SLACK) {
    fedc_warn(LOG_COMPONENT, "rejected update: %s has %lld bytes", path,
              (long long)st.st_size);
    return FEDC_ETOOBIG;
  }
  fedc_tensor_list_init(&update);
  rc = fedc_safetensors_read(path, &update, NULL);
  if (rc != 0)
    fedc_warn(LOG_COMPONENT, "rejected update: %s is not valid safetensors",
              path);
  if (rc == 0)
    rc = match_update(global, &update, out);
  if (rc == 0 && (rc = fedc_tensor_list_check_finite(out)) != 0)
    fedc_warn(LOG_COMPONENT, "rejected update: NaN or Inf values");
  fedc_tensor_list_close(&update);
  return rc;
}

static int parse_metrics(const char *text, size_t len, fedc_train_stats *stats)
{
  fedc_json_reader r;
  char key[64];
  int more, rc;

  fedc_json_init(&r, text, len);
  if ((rc = fedc_json_object_begin(&r)) != 0)
    return rc;
  for (size_t i = 0; (more = fedc_json_object_next(&r, i, key,
                                                   sizeof(key))) == 1; i++) {
    if (strcmp(key, "loss") == 0)
      rc = fedc_json_double(&r, &stats->loss);
    else if (strcmp(key, "accuracy") == 0)
      rc = fedc_json_double(&r, &stats->accuracy);
    else if (strcmp(key, "examples") == 0)
      rc = fedc_json_u64(&r, &stats->examples);
    else if (strcmp(key, "steps") == 0)
      rc = fedc_json_u64(&r, &stats->steps);
    else
      rc = fedc_json_skip(&r);
    if (rc != 0)
      return rc;
  }
  return more < 0 ? more : fedc_json_finish(&r);
}

static int read_metrics(const char *dir, fedc_train_stats *stats)
{
  char path[4096], *text;
  size_t len;
  FILE *f;
  int rc;

  if ((rc = path_in(path, sizeof(path), dir, FEDC_EXTERNAL_METRICS)) != 0)
    return rc;
  if ((f = fopen(path, "rb")) == NULL) {
    fedc_warn(LOG_COMPONENT, "trainer wrote no %s", path);
    return FEDC_EFORMAT;
  }
  text = malloc(FEDC_EXTERNAL_METRICS_MAX + 1);
  len = text != NULL ? fread(text, 1, FEDC_EXTERNAL_METRICS_MAX + 1, f) : 0;
  fclose(f);
  if (text == NULL)
    return FEDC_ENOMEM;
  rc = len > FEDC_EXTERNAL_METRICS_MAX ? FEDC_ETOOBIG
                                       : parse_metrics(text, len, stats);
  free(text);
  if (rc != 0)
    fedc_warn(LOG_COMPONENT, "rejected %s: %s", path, fedc_strerror(rc));
  return rc;
}

/* Removes the results of an earlier run, so that they are never taken for
 * this run's. */
static int clear_results(const char *dir)
{
  const char *names[] = { FEDC_EXTERNAL_UPDATE, FEDC_EXTERNAL_METRICS };
  char path[4096];

  for (size_t i = 0; i < 2; i++) {
    if (path_in(path, sizeof(path), dir, names[i]) != 0)
      return FEDC_EINVAL;
    if (unlink(path) != 0 && errno != ENOENT) {
      fedc_error(LOG_COMPONENT, "cannot remove %s: %s", path,
                 strerror(errno));
      return FEDC_EIO;
    }
  }
  return 0;
}

static int write_model(const char *dir, const fedc_tensor_list *global)
{
  char path[4096];
  int rc = path_in(path, sizeof(path), dir, FEDC_EXTERNAL_MODEL);

  if (rc == 0 && (rc = fedc_safetensors_write(path, global, NULL)) != 0)
    fedc_error(LOG_COMPONENT, "cannot write %s: %s", path, fedc_strerror(rc));
  return rc;
}

int fedc_external_train(const fedc_external_config *config,
                        const fedc_external_task *task,
                        const fedc_tensor_list *global,
                        fedc_tensor_list *updated, fedc_train_stats *stats)
{
  fedc_train_stats metrics = { 0 };
  uint64_t start = now_ms();
  int rc;

  fedc_tensor_list_close(updated);
  if (config->command == NULL || config->work_dir == NULL ||
      task->spec == NULL || task->train == NULL)
    return FEDC_EINVAL;
  if ((rc = clear_results(config->work_dir)) != 0 ||
      (rc = write_model(config->work_dir, global)) != 0 ||
      (rc = write_task(config->work_dir, task)) != 0 ||
      (rc = run_command(config)) != 0 ||
      (rc = read_update(config->work_dir, global, updated)) != 0 ||
      (rc = read_metrics(config->work_dir, &metrics)) != 0) {
    fedc_tensor_list_close(updated);
    return rc;
  }
  fedc_info(LOG_COMPONENT, "external training done round=%llu ms=%llu "
            "loss=%.4f examples=%llu", (unsigned long long)task->round,
            (unsigned long long)(now_ms() - start), metrics.loss,
            (unsigned long long)metrics.examples);
  if (stats != NULL)
    *stats = metrics;
  return 0;
}
