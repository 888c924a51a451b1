/* fedc-sim --transport tls. It makes the test PKI with deploy/make-certs
 * and one client data file per client from the same partition the
 * in-memory mode uses. Then it starts one fedc-server and N fedc-client
 * processes on 127.0.0.1 and follows the server's own per-round metrics
 * as the server writes them. */
#include "tls_run.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/partition.h"
#include "plot.h"
#include "report.h"
#include "setup.h"
#include "sim.h"
#include "proc.h"
#include "util/error.h"
#include "util/log.h"

/* deploy/make-certs numbers client certificates with four digits. */
#define TLS_MAX_CLIENTS 9999
#define TLS_MAX_ARGS 64

/* Seconds the clients get to exit after the server's Goodbye. */
#define CLIENT_EXIT_SECONDS 30.0

typedef struct tls_run {
  const fedc_args *a;
  char dir[PATH_MAX];
  int own_dir;                 /* made here; removed after a clean run */
  char server_bin[PATH_MAX];
  char client_bin[PATH_MAX];
  pid_t server;                /* 0 once reaped */
  pid_t *clients;              /* 0 once reaped */
  uint32_t n;
  unsigned port;

  FILE *metrics;               /* the caller's copy of the server's lines */
  long metrics_offset;         /* bytes of the server's file consumed */
  fedc_progress progress;
  fedc_plot_point *points;
  size_t count, capacity;
  double real_total;
  double last_accuracy;
} tls_run;

/* A growing argv whose strings are owned copies. */
typedef struct arg_list {
  char *items[TLS_MAX_ARGS + 1];
  int count;
} arg_list;

__attribute__((format(printf, 2, 3)))
static void arg_add(arg_list *l, const char *fmt, ...)
{
  char buf[PATH_MAX + 64];
  va_list ap;

  if (l->count >= TLS_MAX_ARGS)
    return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  l->items[l->count++] = strdup(buf);
  l->items[l->count] = NULL;
}

static void arg_free(arg_list *l)
{
  for (int i = 0; i < l->count; i++)
    free(l->items[i]);
  l->count = 0;
}

static int arg_complete(const arg_list *l)
{
  for (int i = 0; i < l->count; i++)
    if (l->items[i] == NULL)
      return 0;
  return l->count < TLS_MAX_ARGS;
}

/* Picks the configured program, else NAME beside fedc-sim, else
 * ../FOLDER/NAME of a build tree, else NAME for a PATH lookup. */
static void find_program(const char *configured, const char *folder,
                         const char *name, char *out, size_t len)
{
  char self[PATH_MAX / 2];
  ssize_t n;
  char *slash;

  snprintf(out, len, "%s", configured != NULL ? configured : name);
  if (configured != NULL)
    return;
  n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return;
  self[n] = '\0';
  slash = strrchr(self, '/');
  if (slash == NULL)
    return;
  *slash = '\0';
  snprintf(out, len, "%s/%s", self, name);
  if (access(out, X_OK) == 0)
    return;
  snprintf(out, len, "%s/../%s/%s", self, folder, name);
  if (access(out, X_OK) == 0)
    return;
  snprintf(out, len, "%s", name);
}

static int make_dir(tls_run *r)
{
  const char *given = r->a->work_dir;

  if (given != NULL) {
    snprintf(r->dir, sizeof(r->dir), "%s", given);
    if (mkdir(r->dir, 0700) != 0 && errno != EEXIST)
      goto fail;
  } else {
    snprintf(r->dir, sizeof(r->dir), "%s/fedc-sim-tls.XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(r->dir) == NULL)
      goto fail;
    r->own_dir = 1;
  }
  return 0;

fail:
  fprintf(stderr, "fedc-sim: cannot create the folder %s: %s\n", r->dir,
          strerror(errno));
  return FEDC_EIO;
}

/* Runs a program to its end, with a timeout in seconds. */
static int run_to_end(arg_list *args, const char *log, double timeout,
                      const char *what)
{
  pid_t pid;
  int status = 0;
  int rc = arg_complete(args) ? fedc_proc_spawn(args->items, log, &pid)
                              : FEDC_ENOMEM;

  if (rc == 0 && !fedc_proc_wait(pid, timeout, &status)) {
    fedc_proc_kill(pid);
    status = -1;
  }
  if (rc < 0 || status != 0) {
    fprintf(stderr, "fedc-sim: %s failed (see %s)\n", what, log);
    return FEDC_ECHILD;
  }
  return 0;
}

static int make_pki(tls_run *r)
{
  arg_list args = { .count = 0 };
  char log[PATH_MAX + 32];
  int rc;

  snprintf(log, sizeof(log), "%s/make-certs.log", r->dir);
  arg_add(&args, "%s", r->a->make_certs != NULL ? r->a->make_certs
                                                : FEDC_MAKE_CERTS);
  arg_add(&args, "--out");
  arg_add(&args, "%s/pki", r->dir);
  arg_add(&args, "--clients");
  arg_add(&args, "%u", r->n);
  rc = run_to_end(&args, log, 600.0, "deploy/make-certs");
  arg_free(&args);
  return rc;
}

/* Writes client k's rows to DIR/data/client-NNNN.safetensors, the name
 * deploy/make-certs gives client k's certificate. */
static int write_clients(tls_run *r, const fedc_dataset *train,
                         const fedc_partition *p)
{
  char path[PATH_MAX + 64];

  for (uint32_t k = 0; k < r->n; k++) {
    fedc_dataset_view view = fedc_partition_view(p, train, k);
    int rc;

    snprintf(path, sizeof(path), "%s/data/client-%04u.safetensors", r->dir,
             k + 1);
    rc = fedc_dataset_save(path, &view);
    if (rc < 0) {
      fprintf(stderr, "fedc-sim: cannot write %s: %s\n", path,
              fedc_strerror(rc));
      return rc;
    }
  }
  return 0;
}

static int write_data(tls_run *r)
{
  char path[PATH_MAX + 64];
  fedc_dataset train, test;
  fedc_partition p;
  fedc_dataset_view all;
  int rc;

  memset(&train, 0, sizeof(train));
  memset(&test, 0, sizeof(test));
  fedc_partition_init(&p);
  snprintf(path, sizeof(path), "%s/data", r->dir);
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return FEDC_EIO;

  rc = fedc_setup_load_data(r->a, &train, &test);
  if (rc == 0)
    rc = fedc_setup_partition(r->a, &train, &p);
  if (rc == 0)
    rc = write_clients(r, &train, &p);
  if (rc == 0 && test.n > 0) {
    all = fedc_dataset_all(&test);
    snprintf(path, sizeof(path), "%s/data/test.safetensors", r->dir);
    rc = fedc_dataset_save(path, &all);
  }
  fedc_partition_close(&p);
  fedc_dataset_close(&test);
  fedc_dataset_close(&train);
  return rc;
}

/* The server's share of idle clients that matches clients_per_round. */
static double cohort_fraction(const fedc_args *a)
{
  if (a->clients_per_round == 0)
    return a->fraction_fit;
  return (double)a->clients_per_round / (double)a->clients;
}

static void server_args(const tls_run *r, arg_list *l)
{
  const fedc_args *a = r->a;

  arg_add(l, "%s", r->server_bin);
  arg_add(l, "--listen");         arg_add(l, "127.0.0.1");
  arg_add(l, "--port");           arg_add(l, "0");
  arg_add(l, "--cert");           arg_add(l, "%s/pki/server.pem", r->dir);
  arg_add(l, "--key");            arg_add(l, "%s/pki/server.key", r->dir);
  arg_add(l, "--ca");             arg_add(l, "%s/pki/ca.pem", r->dir);
  arg_add(l, "--model");          arg_add(l, "%s", a->model);
  arg_add(l, "--rounds");         arg_add(l, "%lu", a->rounds);
  arg_add(l, "--min-clients");
  arg_add(l, "%lu", a->min_clients ? a->min_clients : a->clients);
  arg_add(l, "--fraction-fit");   arg_add(l, "%.17g", cohort_fraction(a));
  /* The server takes a quorum in (0, 1]; a tiny one means one result. */
  arg_add(l, "--quorum");         arg_add(l, "%.17g", fmax(a->quorum, 1e-9));
  arg_add(l, "--close-at-quorum");
  arg_add(l, "%s", a->close_at_quorum ? "true" : "false");
  arg_add(l, "--round-timeout");  arg_add(l, "%lu", a->round_timeout);
  arg_add(l, "--local-epochs");   arg_add(l, "%lu", a->local_epochs);
  arg_add(l, "--batch-size");     arg_add(l, "%lu", a->batch_size);
  arg_add(l, "--learning-rate");  arg_add(l, "%.17g", a->learning_rate);
  arg_add(l, "--momentum");       arg_add(l, "%.17g", a->momentum);
  arg_add(l, "--weight-decay");   arg_add(l, "%.17g", a->weight_decay);
  arg_add(l, "--proximal-mu");    arg_add(l, "%.17g", a->proximal_mu);
  arg_add(l, "--seed");           arg_add(l, "%lu", a->seed);
  arg_add(l, "--strategy");       arg_add(l, "%s", a->strategy);
  arg_add(l, "--metrics");        arg_add(l, "%s/metrics.jsonl", r->dir);
  arg_add(l, "--chunk-bytes");    arg_add(l, "%lu", a->chunk_bytes);
  arg_add(l, "--max-frame-bytes");
  arg_add(l, "%lu", a->chunk_bytes + (1ul << 20));
  /* Every client connects from 127.0.0.1 at once, so the per-address
   * handshake limit would only delay them. */
  arg_add(l, "--max-handshakes-per-ip"); arg_add(l, "0");
  arg_add(l, "--log-level");      arg_add(l, "info");
}

/* Reads the port from the server's "listening ... port=N" log line. */
static int read_port(const char *log, unsigned *port)
{
  char line[1024];
  FILE *f = fopen(log, "r");
  int found = 0;

  while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
    const char *at = strstr(line, "listening ");

    at = at != NULL ? strstr(at, " port=") : NULL;
    found = at != NULL && sscanf(at, " port=%u", port) == 1;
  }
  if (f != NULL)
    fclose(f);
  return found;
}

static int start_server(tls_run *r)
{
  arg_list args = { .count = 0 };
  char log[PATH_MAX + 32], test[PATH_MAX + 32];
  int status, rc;

  snprintf(log, sizeof(log), "%s/server.log", r->dir);
  snprintf(test, sizeof(test), "%s/data/test.safetensors", r->dir);
  server_args(r, &args);
  if (access(test, R_OK) == 0) {
    arg_add(&args, "--test-data");
    arg_add(&args, "%s", test);
  }
  rc = arg_complete(&args) ? fedc_proc_spawn(args.items, log, &r->server)
                           : FEDC_ENOMEM;
  arg_free(&args);
  if (rc < 0) {
    fprintf(stderr, "fedc-sim: cannot start %s\n", r->server_bin);
    return rc;
  }

  /* The server logs its port once it listens; 60 s covers a slow start. */
  for (int i = 0; i < 3000; i++) {
    if (read_port(log, &r->port))
      return 0;
    if (fedc_proc_wait(r->server, 0.02, &status)) {
      r->server = 0;
      break;
    }
  }
  fprintf(stderr, "fedc-sim: fedc-server did not start (see %s)\n", log);
  return FEDC_ECHILD;
}

static int start_client(tls_run *r, uint32_t k)
{
  arg_list args = { .count = 0 };
  char log[PATH_MAX + 32];
  int rc;

  snprintf(log, sizeof(log), "%s/client-%04u.log", r->dir, k + 1);
  arg_add(&args, "%s", r->client_bin);
  arg_add(&args, "--server");      arg_add(&args, "127.0.0.1");
  arg_add(&args, "--port");        arg_add(&args, "%u", r->port);
  arg_add(&args, "--id");          arg_add(&args, "client-%04u", k + 1);
  arg_add(&args, "--cert");
  arg_add(&args, "%s/pki/client-%04u.pem", r->dir, k + 1);
  arg_add(&args, "--key");
  arg_add(&args, "%s/pki/client-%04u.key", r->dir, k + 1);
  arg_add(&args, "--ca");          arg_add(&args, "%s/pki/ca.pem", r->dir);
  arg_add(&args, "--data");
  arg_add(&args, "%s/data/client-%04u.safetensors", r->dir, k + 1);
  arg_add(&args, "--threads");     arg_add(&args, "1");
  arg_add(&args, "--reconnect-min"); arg_add(&args, "200");
  arg_add(&args, "--reconnect-max"); arg_add(&args, "5000");
  arg_add(&args, "--log-level");   arg_add(&args, "warn");
  rc = arg_complete(&args) ? fedc_proc_spawn(args.items, log, &r->clients[k])
                           : FEDC_ENOMEM;
  arg_free(&args);
  if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot start %s\n", r->client_bin);
  return rc;
}

/* Returns the number after "KEY": in a JSON line, or NAN. */
static double json_number(const char *line, const char *key)
{
  char pattern[64];
  const char *at;

  snprintf(pattern, sizeof(pattern), "\"%s\":", key);
  at = strstr(line, pattern);
  if (at == NULL)
    return NAN;
  at += strlen(pattern);
  return strncmp(at, " null", 5) == 0 ? NAN : strtod(at, NULL);
}

static void add_point(tls_run *r, const fedc_plot_point *p)
{
  if (r->count == r->capacity) {
    size_t capacity = r->capacity ? 2 * r->capacity : 64;
    fedc_plot_point *grown = realloc(r->points, capacity * sizeof(*grown));

    if (grown == NULL)
      return;
    r->points = grown;
    r->capacity = capacity;
  }
  r->points[r->count++] = *p;
}

/* Copies one server line to the caller's metrics and records its round. */
static void take_line(tls_run *r, const char *line)
{
  double accuracy = json_number(line, "test_accuracy");
  double seconds = json_number(line, "seconds");
  fedc_sim_record rec = {
    .metrics = {
      .round = (uint64_t)json_number(line, "round"),
      .evaluated = isfinite(accuracy), .test_accuracy = accuracy,
      .clients_sampled = (uint32_t)json_number(line, "clients_sampled"),
      .clients_reported = (uint32_t)json_number(line, "clients_reported"),
    },
  };

  if (r->metrics != NULL) {
    fputs(line, r->metrics);
    fflush(r->metrics);
  }
  if (isfinite(seconds))
    r->real_total += seconds;
  rec.simulated_clock = r->real_total;
  if (isfinite(accuracy))
    r->last_accuracy = accuracy;
  add_point(r, &(fedc_plot_point){ .round = rec.metrics.round,
                                   .seconds = r->real_total,
                                   .accuracy = accuracy });
  fedc_progress_update(&r->progress, &rec, r->real_total);
}

/* Takes the complete lines the server appended since the last call. */
static void read_new_lines(tls_run *r)
{
  char path[PATH_MAX + 32], line[4096];
  FILE *f;

  snprintf(path, sizeof(path), "%s/metrics.jsonl", r->dir);
  f = fopen(path, "r");
  if (f == NULL)
    return;
  fseek(f, r->metrics_offset, SEEK_SET);
  while (fgets(line, sizeof(line), f) != NULL) {
    size_t len = strlen(line);

    if (len == 0 || line[len - 1] != '\n')
      break;
    r->metrics_offset += (long)len;
    take_line(r, line);
  }
  fclose(f);
}

/* Follows the server's metrics until it exits or the timeout passes.
 * Returns the server's exit status, or -1 on the timeout. */
static int follow_rounds(tls_run *r, double started)
{
  int status = -1;

  while (r->server != 0) {
    if (fedc_proc_wait(r->server, 0.1, &status))
      r->server = 0;
    read_new_lines(r);
    if (r->server != 0 &&
        fedc_sim_real_now() - started > (double)r->a->tls_timeout) {
      fprintf(stderr, "fedc-sim: the TLS run timed out after %lu s\n",
              r->a->tls_timeout);
      fedc_proc_kill(r->server);
      r->server = 0;
      status = -1;
    }
  }
  return status;
}

/* Gives the clients CLIENT_EXIT_SECONDS to exit after the server's
 * Goodbye, then kills the rest. Returns how many exited with status 0. */
static uint32_t stop_clients(tls_run *r)
{
  double deadline = fedc_sim_real_now() + CLIENT_EXIT_SECONDS;
  uint32_t clean = 0;

  for (uint32_t k = 0; k < r->n; k++) {
    double left = deadline - fedc_sim_real_now();
    int status;

    if (r->clients[k] == 0)
      continue;
    if (fedc_proc_wait(r->clients[k], left > 0 ? left : 0, &status)) {
      clean += status == 0;
    } else {
      fedc_proc_kill(r->clients[k]);
    }
    r->clients[k] = 0;
  }
  return clean;
}

static int remove_entry(const char *path, const struct stat *st, int type,
                        struct FTW *ftw)
{
  return remove(path);
}

static void close_run(tls_run *r, int failed)
{
  if (r->server != 0)
    fedc_proc_kill(r->server);
  if (r->clients != NULL)
    stop_clients(r);
  free(r->clients);
  free(r->points);
  if (r->metrics != NULL && r->metrics != stdout)
    fclose(r->metrics);
  if (r->own_dir && !failed)
    nftw(r->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  else if (r->dir[0] != '\0')
    fprintf(stderr, "fedc-sim: TLS run files are in %s\n", r->dir);
}

static int prepare(tls_run *r)
{
  const fedc_args *a = r->a;
  int rc;

  if (a->clients > TLS_MAX_CLIENTS) {
    fprintf(stderr, "fedc-sim: --transport tls runs at most %d clients "
            "(deploy/make-certs numbers them with four digits)\n",
            TLS_MAX_CLIENTS);
    return FEDC_EINVAL;
  }
  r->clients = calloc(r->n, sizeof(*r->clients));
  if (r->clients == NULL)
    return FEDC_ENOMEM;
  find_program(a->server_bin, "server", "fedc-server", r->server_bin,
               sizeof(r->server_bin));
  find_program(a->client_bin, "client", "fedc-client", r->client_bin,
               sizeof(r->client_bin));
  if (a->metrics != NULL) {
    r->metrics = strcmp(a->metrics, "-") == 0 ? stdout
                                              : fopen(a->metrics, "w");
    if (r->metrics == NULL) {
      fprintf(stderr, "fedc-sim: cannot write %s: %s\n", a->metrics,
              strerror(errno));
      return FEDC_EIO;
    }
  }
  rc = make_dir(r);
  if (rc == 0)
    rc = make_pki(r);
  if (rc == 0)
    rc = write_data(r);
  return rc;
}

static void write_tls_plot(const tls_run *r)
{
  char title[256];
  int rc;

  if (r->a->plot == NULL)
    return;
  snprintf(title, sizeof(title), "%s, %lu fedc-client processes over TLS",
           r->a->model, r->a->clients);
  rc = fedc_plot_write(r->a->plot, r->points, r->count, title, "real time");
  if (rc < 0)
    fprintf(stderr, "fedc-sim: cannot write plot %s: %s\n", r->a->plot,
            fedc_strerror(rc));
}

int fedc_tls_run(const fedc_args *a)
{
  tls_run r = { .a = a, .n = (uint32_t)a->clients, .last_accuracy = NAN };
  double started = fedc_sim_real_now();
  int status = -1, rc = prepare(&r);
  uint32_t clean = 0;

  if (rc == 0)
    rc = start_server(&r);
  for (uint32_t k = 0; k < r.n && rc == 0; k++)
    rc = start_client(&r, k);
  if (rc == 0) {
    fedc_progress_init(&r.progress, a->progress && r.metrics != stdout
                                    ? stdout : NULL, a->rounds);
    status = follow_rounds(&r, started);
    fedc_progress_finish(&r.progress);
    clean = stop_clients(&r);
    write_tls_plot(&r);
  }

  fprintf(stderr, "fedc-sim: done transport=tls rounds=%zu accuracy=%.4f "
          "real_seconds=%.3f clients=%u clients_exited_cleanly=%u "
          "server_status=%d\n", r.count, r.last_accuracy,
          fedc_sim_real_now() - started, r.n, clean, status);
  if (rc == 0 && (status != 0 || r.count != a->rounds)) {
    fprintf(stderr, "fedc-sim: the server ran %zu of %lu rounds and exited "
            "with status %d (see %s/server.log)\n", r.count, a->rounds,
            status, r.dir);
    rc = FEDC_ECHILD;
  }
  close_run(&r, rc != 0);
  return rc;
}
