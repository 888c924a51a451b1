/* rogue_client: a test-only fedc client that speaks the wire protocol over
 * real mutual TLS and misbehaves on command. With it the integration tests
 * check that fedc-server rejects each kind of bad input, drops only that
 * peer and keeps the round going with the honest clients.
 *
 * It uses blocking OpenSSL sockets rather than the daemon's libuv code, so
 * a bug in the daemon's TLS or framing cannot hide a bug in the server's
 * checks. Updates are all zeros, which keep the global model unchanged,
 * except in the poisoning modes (nan, inf, huge).
 *
 * Exit status: 0 when the server closed the connection after the
 * misbehaviour (or, in honest mode, after Goodbye), 2 when the connection
 * or TLS handshake failed, 3 when the server kept the connection open past
 * the timeout, 1 on any other failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "fedc.pb-c.h"

#define PROTOCOL_VERSION 1
#define IO_TIMEOUT_S 60

enum exit_code {
  EXIT_DROPPED = 0,
  EXIT_FAILED = 1,
  EXIT_CONNECT = 2,
  EXIT_NOT_DROPPED = 3,
};

struct options {
  const char *host;
  const char *port;
  const char *cert;
  const char *key;
  const char *ca;
  const char *id;
  const char *mode;
  const char *dump_model;    /* file for the first global model, or NULL */
  int timeout_s;
};

struct spec {
  char *name;
  uint64_t shape[8];
  size_t ndim;
  uint64_t numel;
};

struct session {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;                 /* NULL in plain-tcp mode */
  const struct options *opt;
  uint32_t chunk_bytes;
  uint32_t max_frame_bytes;
  uint64_t round;
  struct spec *specs;
  size_t nspecs;
  int misbehaved;
  FILE *dump;                /* open while the first model is received */
};

static void usage(void)
{
  fprintf(stderr,
          "usage: rogue_client --host H --port P --cert F --key F --ca F "
          "--id ID --mode MODE [--timeout SECONDS] [--dump-model FILE]\n"
          "modes: honest oversize garbage truncated wrong-name wrong-shape "
          "nan inf huge stale-round duplicate plain-tcp silent\n");
}

static int parse_options(int argc, char **argv, struct options *opt)
{
  memset(opt, 0, sizeof(*opt));
  opt->host = "127.0.0.1";
  opt->mode = "honest";
  opt->timeout_s = 60;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];

    if (strcmp(k, "--host") == 0) opt->host = v;
    else if (strcmp(k, "--port") == 0) opt->port = v;
    else if (strcmp(k, "--cert") == 0) opt->cert = v;
    else if (strcmp(k, "--key") == 0) opt->key = v;
    else if (strcmp(k, "--ca") == 0) opt->ca = v;
    else if (strcmp(k, "--id") == 0) opt->id = v;
    else if (strcmp(k, "--mode") == 0) opt->mode = v;
    else if (strcmp(k, "--timeout") == 0) opt->timeout_s = atoi(v);
    else if (strcmp(k, "--dump-model") == 0) opt->dump_model = v;
    else return -1;
  }
  if (argc % 2 == 0 || opt->port == NULL || opt->id == NULL)
    return -1;
  if (strcmp(opt->mode, "plain-tcp") != 0 &&
      (opt->cert == NULL || opt->key == NULL || opt->ca == NULL))
    return -1;
  return 0;
}

static int connect_tcp(const struct options *opt)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
  struct addrinfo *res = NULL;
  struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
  int fd = -1;

  if (getaddrinfo(opt->host, opt->port, &hints, &res) != 0)
    return -1;
  fd = socket(res->ai_family, SOCK_STREAM, 0);
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    tv.tv_sec = opt->timeout_s;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  return fd;
}

static int start_tls(struct session *s)
{
  static const unsigned char alpn[] = { 6, 'f', 'e', 'd', 'c', '/', '1' };
  const struct options *opt = s->opt;

  s->ctx = SSL_CTX_new(TLS_client_method());
  if (s->ctx == NULL ||
      SSL_CTX_set_min_proto_version(s->ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_use_certificate_chain_file(s->ctx, opt->cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(s->ctx, opt->key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(s->ctx, opt->ca, NULL) != 1 ||
      SSL_CTX_set_alpn_protos(s->ctx, alpn, sizeof(alpn)) != 0)
    return -1;
  SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
  s->ssl = SSL_new(s->ctx);
  if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1 ||
      SSL_connect(s->ssl) != 1)
    return -1;
  return 0;
}

static int write_all(struct session *s, const uint8_t *buf, size_t len)
{
  while (len > 0) {
    int n;

    if (s->ssl != NULL)
      n = SSL_write(s->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
    else
      n = (int)write(s->fd, buf, len);
    if (n <= 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Returns 1 on success, 0 when the peer closed, -1 on error or timeout. */
static int read_all(struct session *s, uint8_t *buf, size_t len)
{
  while (len > 0) {
    int n;

    if (s->ssl != NULL)
      n = SSL_read(s->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
    else
      n = (int)read(s->fd, buf, len);
    if (n == 0)
      return 0;
    if (n < 0) {
      if (s->ssl == NULL)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : 0;
      /* A TLS alert or a reset from the server counts as a close. */
      return SSL_get_error(s->ssl, n) == SSL_ERROR_SYSCALL &&
                     (errno == EAGAIN || errno == EWOULDBLOCK)
                 ? -1
                 : 0;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 1;
}

static int send_raw_frame(struct session *s, uint32_t declared,
                          const uint8_t *body, size_t len)
{
  uint8_t head[4] = { (uint8_t)(declared >> 24), (uint8_t)(declared >> 16),
                      (uint8_t)(declared >> 8), (uint8_t)declared };

  if (write_all(s, head, sizeof(head)) < 0)
    return -1;
  return write_all(s, body, len);
}

static int send_envelope(struct session *s, Fedc__Envelope *env)
{
  size_t len;
  uint8_t *buf;
  int rc;

  env->protocol_version = PROTOCOL_VERSION;
  len = fedc__envelope__get_packed_size(env);
  buf = malloc(len + 1);
  if (buf == NULL)
    return -1;
  fedc__envelope__pack(env, buf);
  rc = send_raw_frame(s, (uint32_t)len, buf, len);
  free(buf);
  return rc;
}

/* Returns an envelope, or NULL when the server closed the connection
 * (*closed set) or on a timeout or error. */
static Fedc__Envelope *recv_envelope(struct session *s, int *closed)
{
  uint8_t head[4];
  uint8_t *buf;
  uint32_t len;
  Fedc__Envelope *env;
  int rc = read_all(s, head, sizeof(head));

  *closed = rc == 0;
  if (rc <= 0)
    return NULL;
  len = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
        (uint32_t)head[2] << 8 | head[3];
  if (len > 256u << 20)
    return NULL;
  buf = malloc(len + 1);
  if (buf == NULL)
    return NULL;
  rc = read_all(s, buf, len);
  *closed = rc == 0;
  env = rc > 0 ? fedc__envelope__unpack(NULL, len, buf) : NULL;
  free(buf);
  return env;
}

static int send_hello(struct session *s)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__Hello hello = FEDC__HELLO__INIT;
  Fedc__Capabilities caps = FEDC__CAPABILITIES__INIT;
  char *trainers[] = { "builtin" };

  hello.protocol_version = PROTOCOL_VERSION;
  hello.client_id = (char *)s->opt->id;
  hello.num_examples = 100;
  caps.n_trainers = 1;
  caps.trainers = trainers;
  hello.capabilities = &caps;
  env.body_case = FEDC__ENVELOPE__BODY_HELLO;
  env.hello = &hello;
  return send_envelope(s, &env);
}

static void free_specs(struct session *s)
{
  for (size_t i = 0; i < s->nspecs; i++)
    free(s->specs[i].name);
  free(s->specs);
  s->specs = NULL;
  s->nspecs = 0;
}

static int keep_specs(struct session *s, Fedc__TensorSpec **specs, size_t n)
{
  free_specs(s);
  s->specs = calloc(n, sizeof(*s->specs));
  if (s->specs == NULL)
    return -1;
  s->nspecs = n;
  for (size_t i = 0; i < n; i++) {
    struct spec *sp = &s->specs[i];

    sp->name = strdup(specs[i]->name);
    sp->ndim = specs[i]->n_shape < 8 ? specs[i]->n_shape : 8;
    sp->numel = 1;
    for (size_t d = 0; d < sp->ndim; d++) {
      sp->shape[d] = specs[i]->shape[d];
      sp->numel *= sp->shape[d];
    }
    if (sp->name == NULL || sp->numel > (64u << 20))
      return -1;
  }
  return 0;
}

/* Reads the chunks of one announced stream, up to the chunk marked last,
 * and appends their data to s->dump when it is open. */
static int drain_stream(struct session *s)
{
  int closed;

  for (;;) {
    Fedc__Envelope *env = recv_envelope(s, &closed);
    int last;

    if (env == NULL)
      return -1;
    if (env->body_case != FEDC__ENVELOPE__BODY_CHUNK) {
      fedc__envelope__free_unpacked(env, NULL);
      return -1;
    }
    if (s->dump != NULL)
      fwrite(env->chunk->data.data, 1, env->chunk->data.len, s->dump);
    last = env->chunk->last;
    fedc__envelope__free_unpacked(env, NULL);
    if (last)
      return 0;
  }
}

static int send_fit_result(struct session *s, uint64_t round)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__FitResult result = FEDC__FIT_RESULT__INIT;
  Fedc__TensorSpec *specs = calloc(s->nspecs, sizeof(*specs));
  Fedc__TensorSpec **ptrs = calloc(s->nspecs, sizeof(*ptrs));
  uint64_t shapes[8 * 64];
  int wrong_name = strcmp(s->opt->mode, "wrong-name") == 0;
  int wrong_shape = strcmp(s->opt->mode, "wrong-shape") == 0;
  char names[64][64];
  int rc = -1;

  if (specs == NULL || ptrs == NULL || s->nspecs > 64)
    goto out;
  for (size_t i = 0; i < s->nspecs; i++) {
    fedc__tensor_spec__init(&specs[i]);
    snprintf(names[i], sizeof(names[i]), "bogus.%zu", i);
    specs[i].name = wrong_name ? names[i] : s->specs[i].name;
    memcpy(&shapes[8 * i], s->specs[i].shape, sizeof(s->specs[i].shape));
    if (wrong_shape && i == 0)
      shapes[8 * i] += 1;
    specs[i].shape = &shapes[8 * i];
    specs[i].n_shape = s->specs[i].ndim;
    specs[i].dtype = FEDC__DTYPE__F32;
    ptrs[i] = &specs[i];
  }
  result.round = round;
  result.num_examples = 100;
  result.n_update = s->nspecs;
  result.update = ptrs;
  env.body_case = FEDC__ENVELOPE__BODY_FIT_RESULT;
  env.fit_result = &result;
  rc = send_envelope(s, &env);
out:
  free(specs);
  free(ptrs);
  return rc;
}

static float fill_value(const struct session *s)
{
  if (strcmp(s->opt->mode, "nan") == 0)
    return NAN;
  if (strcmp(s->opt->mode, "inf") == 0)
    return INFINITY;
  if (strcmp(s->opt->mode, "huge") == 0)
    return 3.0e38f;
  return 0.0f;
}

/* Streams one tensor's elements in chunks of at most chunk_bytes. */
static int send_tensor(struct session *s, uint64_t round, uint32_t index,
                       uint64_t numel, int final_tensor)
{
  uint64_t per_chunk = s->chunk_bytes / sizeof(float);
  float *data = malloc(per_chunk * sizeof(float));
  float value = fill_value(s);
  int rc = 0;

  if (data == NULL)
    return -1;
  /* One poisoned element per tensor is enough for the finiteness check;
   * the huge mode sets every element to the finite value 3.0e38. */
  for (uint64_t i = 0; i < per_chunk; i++)
    data[i] = strcmp(s->opt->mode, "huge") == 0 ? value : 0.0f;
  data[0] = value;
  for (uint64_t off = 0; off < numel && rc == 0; off += per_chunk) {
    Fedc__Envelope env = FEDC__ENVELOPE__INIT;
    Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;
    uint64_t n = numel - off < per_chunk ? numel - off : per_chunk;

    chunk.round = round;
    chunk.stream = FEDC__STREAM_KIND__UPDATE;
    chunk.tensor_index = index;
    chunk.offset = off;
    chunk.data.data = (uint8_t *)data;
    chunk.data.len = n * sizeof(float);
    chunk.last = final_tensor && off + n == numel;
    env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
    env.chunk = &chunk;
    rc = send_envelope(s, &env);
  }
  free(data);
  return rc;
}

static int send_update(struct session *s, uint64_t round)
{
  int wrong_shape = strcmp(s->opt->mode, "wrong-shape") == 0;

  if (send_fit_result(s, round) < 0)
    return -1;
  for (size_t i = 0; i < s->nspecs; i++) {
    uint64_t numel = s->specs[i].numel;

    if (wrong_shape && i == 0)
      numel += numel / s->specs[i].shape[0];
    if (send_tensor(s, round, (uint32_t)i, numel, i + 1 == s->nspecs) < 0)
      return -1;
  }
  return 0;
}

static int send_truncated(struct session *s)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__FitResult result = FEDC__FIT_RESULT__INIT;
  uint8_t buf[256];
  size_t len;

  result.round = s->round;
  result.num_examples = 100;
  env.protocol_version = PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_FIT_RESULT;
  env.fit_result = &result;
  len = fedc__envelope__get_packed_size(&env);
  if (len > sizeof(buf))
    return -1;
  fedc__envelope__pack(&env, buf);
  /* The frame header gives the true length of a body that ends mid-field. */
  return send_raw_frame(s, (uint32_t)(len - 1), buf, len - 1);
}

/* Runs the configured misbehaviour in place of an honest FitResult. */
static int misbehave(struct session *s)
{
  const char *mode = s->opt->mode;
  uint8_t junk[64];

  s->misbehaved = 1;
  fprintf(stderr, "rogue: round=%llu mode=%s\n", (unsigned long long)s->round,
          mode);
  if (strcmp(mode, "oversize") == 0) {
    memset(junk, 0x41, sizeof(junk));
    return send_raw_frame(s, s->max_frame_bytes + 1, junk, sizeof(junk));
  }
  if (strcmp(mode, "garbage") == 0) {
    memset(junk, 0xff, sizeof(junk));
    return send_raw_frame(s, sizeof(junk), junk, sizeof(junk));
  }
  if (strcmp(mode, "truncated") == 0)
    return send_truncated(s);
  if (strcmp(mode, "stale-round") == 0)
    return send_update(s, s->round + 7);
  if (strcmp(mode, "duplicate") == 0 && send_update(s, s->round) < 0)
    return -1;
  /* wrong-name, wrong-shape, nan, inf and the second duplicate. */
  return send_update(s, s->round);
}

/* Writes the tensor data of the first global model, in stream order, to
 * the --dump-model file, so a test can compare it with a checkpoint. */
static int receive_model(struct session *s)
{
  static int dumped;
  int rc;

  if (s->opt->dump_model != NULL && !dumped) {
    s->dump = fopen(s->opt->dump_model, "wb");
    if (s->dump == NULL)
      return -1;
  }
  rc = drain_stream(s);
  if (s->dump != NULL) {
    dumped = 1;
    if (fclose(s->dump) != 0)
      rc = -1;
    s->dump = NULL;
  }
  return rc;
}

static int on_fit_task(struct session *s, const Fedc__FitTask *task)
{
  s->round = task->round;
  if (keep_specs(s, task->model, task->n_model) < 0 || receive_model(s) < 0)
    return -1;
  if (strcmp(s->opt->mode, "honest") == 0)
    return send_update(s, s->round);
  return misbehave(s);
}

static int on_evaluate_task(struct session *s, const Fedc__EvaluateTask *task)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__EvaluateResult result = FEDC__EVALUATE_RESULT__INIT;

  if (drain_stream(s) < 0)
    return -1;
  result.round = task->round;
  result.num_examples = 100;
  result.accuracy = 0.1;
  result.loss = 2.3;
  env.body_case = FEDC__ENVELOPE__BODY_EVALUATE_RESULT;
  env.evaluate_result = &result;
  return send_envelope(s, &env);
}

/* Handles one server message; returns 1 to stop (Goodbye), 0 to go on. */
static int on_message(struct session *s, const Fedc__Envelope *env)
{
  switch (env->body_case) {
  case FEDC__ENVELOPE__BODY_WELCOME:
    s->max_frame_bytes = env->welcome->max_frame_bytes;
    s->chunk_bytes = env->welcome->chunk_bytes;
    if (s->chunk_bytes < 64)
      s->chunk_bytes = 1 << 20;
    return 0;
  case FEDC__ENVELOPE__BODY_FIT_TASK:
    return on_fit_task(s, env->fit_task) < 0 ? -1 : 0;
  case FEDC__ENVELOPE__BODY_EVALUATE_TASK:
    return on_evaluate_task(s, env->evaluate_task) < 0 ? -1 : 0;
  case FEDC__ENVELOPE__BODY_ERROR:
    fprintf(stderr, "rogue: server error code=%d message=%s\n",
            env->error->code, env->error->message);
    return 0;
  case FEDC__ENVELOPE__BODY_GOODBYE:
    fprintf(stderr, "rogue: goodbye reason=%s\n", env->goodbye->reason);
    return 1;
  default:
    return 0;
  }
}

static int run_session(struct session *s)
{
  int closed = 0;

  if (send_hello(s) < 0)
    return EXIT_CONNECT;
  for (;;) {
    Fedc__Envelope *env = recv_envelope(s, &closed);
    int rc;

    if (env == NULL)
      break;
    rc = on_message(s, env);
    fedc__envelope__free_unpacked(env, NULL);
    /* A send that fails after the misbehaviour usually means the server
     * has already closed the connection, which the next read shows. */
    if (rc < 0 && s->misbehaved)
      continue;
    if (rc != 0)
      return rc > 0 && !s->misbehaved ? EXIT_DROPPED : EXIT_FAILED;
  }
  if (!closed)
    return s->misbehaved ? EXIT_NOT_DROPPED : EXIT_FAILED;
  fprintf(stderr, "rogue: connection closed by server\n");
  if (s->misbehaved)
    return EXIT_DROPPED;
  /* Before Welcome the close means the TLS peer check failed. */
  return s->max_frame_bytes == 0 ? EXIT_CONNECT : EXIT_FAILED;
}

/* Completes the TLS handshake, sends nothing and waits for the server to
 * hang up. */
static int run_silent(struct session *s)
{
  uint8_t buf[256];

  s->misbehaved = 1;
  return read_all(s, buf, sizeof(buf)) == 0 ? EXIT_DROPPED : EXIT_NOT_DROPPED;
}

/* Sends a valid Hello frame without TLS and waits for the server to hang up. */
static int run_plain_tcp(struct session *s)
{
  uint8_t buf[256];
  int closed;

  s->misbehaved = 1;
  if (send_hello(s) < 0)
    return EXIT_DROPPED;
  closed = read_all(s, buf, sizeof(buf));
  return closed == 0 ? EXIT_DROPPED : EXIT_NOT_DROPPED;
}

int main(int argc, char **argv)
{
  struct options opt;
  struct session s;
  int rc;

  if (parse_options(argc, argv, &opt) < 0) {
    usage();
    return EXIT_FAILED;
  }
  /* Writes to a connection the server closed must fail, not kill us. */
  signal(SIGPIPE, SIG_IGN);
  memset(&s, 0, sizeof(s));
  s.opt = &opt;
  s.chunk_bytes = 1 << 20;
  s.max_frame_bytes = 0;
  alarm((unsigned int)opt.timeout_s + 5);

  s.fd = connect_tcp(&opt);
  if (s.fd < 0) {
    fprintf(stderr, "rogue: cannot connect to %s:%s\n", opt.host, opt.port);
    return EXIT_CONNECT;
  }
  if (strcmp(opt.mode, "plain-tcp") == 0) {
    rc = run_plain_tcp(&s);
  } else if (start_tls(&s) < 0) {
    fprintf(stderr, "rogue: TLS handshake failed\n");
    ERR_print_errors_fp(stderr);
    rc = EXIT_CONNECT;
  } else if (strcmp(opt.mode, "silent") == 0) {
    rc = run_silent(&s);
  } else {
    rc = run_session(&s);
  }
  fprintf(stderr, "rogue: exit status %d\n", rc);
  free_specs(&s);
  SSL_free(s.ssl);
  SSL_CTX_free(s.ctx);
  close(s.fd);
  return rc;
}
