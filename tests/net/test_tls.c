/* TLS connections on real loopback sockets, with certificates made by
 * deploy/make-certs: one CA for the server and its clients, and a second,
 * independent CA whose certificates the server must reject.
 *
 * Each test runs the listener, the fedc clients and any raw TCP clients on
 * one libuv loop until every connection has closed. Then it checks that the
 * loop closes with no handle left. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "net/conn.h"
#include "net/frame.h"
#include "net/listener.h"
#include "net/tls.h"
#include "util/error.h"
#include "util/log.h"

#define MAX_PEERS 4
#define MIB (1024u * 1024u)

/* Set by main() before the tests fork. */
static char cert_root[256];  /* contains ca1/ and ca2/ from make-certs */
static char log_path[300];

/* Test record of one connection, used as its context pointer. */
struct peer {
  struct harness *h;
  fedc_conn *conn;
  int opened;
  int closed;
  enum fedc_conn_close_reason reason;
  int err;
  char identity[FEDC_TLS_IDENTITY_SIZE];
  size_t frames;
  size_t chunk_bytes;      /* data bytes of every chunk received */
  size_t bad_chunks;       /* chunks whose data differ from chunk_pattern() */
  size_t drains;
  size_t frames_while_paused;
  int paused;
  fedc_conn_stats stats;   /* copied in on_close */
};

/* A TCP client that speaks no TLS. */
struct raw_client {
  struct harness *h;
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  const char *payload;     /* written after connecting, or NULL */
  int connected;
  int ended;               /* EOF or reset seen */
  uint64_t ended_ms;
};

struct harness {
  uv_loop_t loop;
  uv_timer_t guard;
  fedc_listener *listener;
  uint16_t port;
  struct peer servers[MAX_PEERS];   /* server side, in accept order */
  int nservers;
  struct peer clients[MAX_PEERS];
  int nclients;
  int closes;
  int closes_expected;              /* the loop stops after this many */
  fedc_listener_stats stats;        /* listener counters at the last close */

  /* Scenario hooks; NULL does nothing. */
  void (*server_open)(struct peer *p);
  void (*server_frame)(struct peer *p, Fedc__Envelope *env);
  void (*client_open)(struct peer *p);
  void (*client_frame)(struct peer *p, Fedc__Envelope *env);
  void (*after_close)(struct harness *h);
};

/* --- Test data ----------------------------------------------------------- */

static uint8_t chunk_pattern(uint64_t round, size_t i)
{
  return (uint8_t)(i * 131u + round * 17u + (i >> 12));
}

/* Sends one TensorChunk of len pattern bytes. */
static int send_chunk(fedc_conn *conn, uint64_t round, size_t len)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;
  uint8_t *data = malloc(len);
  int rc;

  ck_assert_ptr_nonnull(data);
  for (size_t i = 0; i < len; i++)
    data[i] = chunk_pattern(round, i);
  chunk.round = round;
  chunk.data.data = data;
  chunk.data.len = len;
  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
  env.chunk = &chunk;
  rc = fedc_conn_send(conn, &env);
  free(data);
  return rc;
}

/* Returns the frame size (header and payload) of send_chunk(). */
static size_t chunk_frame_size(uint64_t round, size_t len)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;

  chunk.round = round;
  chunk.data.len = len;
  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
  env.chunk = &chunk;
  return FEDC_FRAME_HEADER_SIZE + fedc__envelope__get_packed_size(&env);
}

static void record_frame(struct peer *p, const Fedc__Envelope *env)
{
  p->frames++;
  if (p->paused)
    p->frames_while_paused++;
  if (env->body_case != FEDC__ENVELOPE__BODY_CHUNK)
    return;
  p->chunk_bytes += env->chunk->data.len;
  for (size_t i = 0; i < env->chunk->data.len; i++) {
    if (env->chunk->data.data[i] != chunk_pattern(env->chunk->round, i)) {
      p->bad_chunks++;
      break;
    }
  }
}

/* --- Harness ------------------------------------------------------------- */

static void harness_stop(struct harness *h)
{
  fedc_listener_free(&h->listener);
  if (!uv_is_closing((uv_handle_t *)&h->guard))
    uv_close((uv_handle_t *)&h->guard, NULL);
}

static void count_close(struct harness *h)
{
  h->closes++;
  if (h->listener != NULL)
    fedc_listener_get_stats(h->listener, &h->stats);
  if (h->after_close != NULL)
    h->after_close(h);
  if (h->closes == h->closes_expected)
    harness_stop(h);
}

static void on_guard(uv_timer_t *timer)
{
  ck_abort_msg("test did not finish within the guard time");
}

static void peer_on_close(fedc_conn *conn, enum fedc_conn_close_reason reason,
                          int err)
{
  struct peer *p = fedc_conn_data(conn);

  ck_assert_int_eq(p->closed, 0);
  p->closed = 1;
  p->reason = reason;
  p->err = err;
  fedc_conn_get_stats(conn, &p->stats);
  p->conn = NULL;
  count_close(p->h);
}

static void peer_on_drain(fedc_conn *conn)
{
  struct peer *p = fedc_conn_data(conn);

  ck_assert_uint_eq(fedc_conn_queued_bytes(conn), 0);
  p->drains++;
}

static void server_on_open(fedc_conn *conn)
{
  struct harness *h = fedc_conn_data(conn);
  struct peer *p;

  ck_assert_int_lt(h->nservers, MAX_PEERS);
  p = &h->servers[h->nservers++];
  p->h = h;
  p->conn = conn;
  p->opened = 1;
  snprintf(p->identity, sizeof(p->identity), "%s", fedc_conn_identity(conn));
  fedc_conn_set_data(conn, p);
  if (h->server_open != NULL)
    h->server_open(p);
}

static void server_on_frame(fedc_conn *conn, Fedc__Envelope *env)
{
  struct peer *p = fedc_conn_data(conn);

  record_frame(p, env);
  if (p->h->server_frame != NULL)
    p->h->server_frame(p, env);
  fedc_frame_envelope_free(&env);
}

static const fedc_conn_callbacks server_cbs = {
  .on_open = server_on_open,
  .on_frame = server_on_frame,
  .on_drain = peer_on_drain,
  .on_close = peer_on_close,
};

static void client_on_open(fedc_conn *conn)
{
  struct peer *p = fedc_conn_data(conn);

  p->opened = 1;
  snprintf(p->identity, sizeof(p->identity), "%s", fedc_conn_identity(conn));
  if (p->h->client_open != NULL)
    p->h->client_open(p);
}

static void client_on_frame(fedc_conn *conn, Fedc__Envelope *env)
{
  struct peer *p = fedc_conn_data(conn);

  record_frame(p, env);
  if (p->h->client_frame != NULL)
    p->h->client_frame(p, env);
  fedc_frame_envelope_free(&env);
}

static const fedc_conn_callbacks client_cbs = {
  .on_open = client_on_open,
  .on_frame = client_on_frame,
  .on_drain = peer_on_drain,
  .on_close = peer_on_close,
};

/* Builds a context from make-certs output: cert_dir/name.{pem,key} (no
 * certificate when name is NULL) and ca_dir/ca.pem. */
static SSL_CTX *make_ctx(enum fedc_tls_role role, const char *cert_dir,
                         const char *name, const char *ca_dir)
{
  char cert[400], key[400], ca[400];
  fedc_tls_config cfg = { NULL, NULL, ca };
  SSL_CTX *ctx = NULL;

  snprintf(cert, sizeof(cert), "%s/%s/%s.pem", cert_root, cert_dir,
           name != NULL ? name : "");
  snprintf(key, sizeof(key), "%s/%s/%s.key", cert_root, cert_dir,
           name != NULL ? name : "");
  snprintf(ca, sizeof(ca), "%s/%s/ca.pem", cert_root, ca_dir);
  if (name != NULL) {
    cfg.cert_path = cert;
    cfg.key_path = key;
  }
  ck_assert_int_eq(fedc_tls_ctx_new(role, &cfg, &ctx), 0);
  return ctx;
}

/* Starts a loop with a listener on host, port 0, using ca1 files. */
static void harness_init(struct harness *h, const char *host,
                         const fedc_listener_options *opts)
{
  SSL_CTX *ctx = make_ctx(FEDC_TLS_SERVER, "ca1", "server", "ca1");
  FILE *log = fopen(log_path, "w");

  ck_assert_ptr_nonnull(log);
  fclose(log);
  ck_assert_int_eq(fedc_log_open(log_path), 0);

  memset(h, 0, sizeof(*h));
  ck_assert_int_eq(uv_loop_init(&h->loop), 0);
  ck_assert_int_eq(uv_timer_init(&h->loop, &h->guard), 0);
  ck_assert_int_eq(uv_timer_start(&h->guard, on_guard, 8000, 0), 0);
  ck_assert_int_eq(fedc_listener_new(&h->loop, ctx, host, 0, opts,
                                     &server_cbs, h, &h->listener),
                   0);
  /* The listener holds its own reference. */
  fedc_tls_ctx_free(&ctx);
  h->port = fedc_listener_port(h->listener);
  ck_assert_uint_ne(h->port, 0);
}

/* Runs the loop until harness_stop() and checks that nothing is left. */
static void harness_run(struct harness *h)
{
  ck_assert_int_eq(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
  ck_assert_ptr_null(h->listener);
  ck_assert_int_eq(uv_loop_close(&h->loop), 0);
}

/* Connects a fedc client with cert_dir/name and trusting ca_dir/ca.pem. */
static struct peer *client_connect(struct harness *h, const char *host,
                                   const char *cert_dir, const char *name,
                                   const char *ca_dir,
                                   const fedc_conn_options *opts)
{
  SSL_CTX *ctx = make_ctx(FEDC_TLS_CLIENT, cert_dir, name, ca_dir);
  struct peer *p;

  ck_assert_int_lt(h->nclients, MAX_PEERS);
  p = &h->clients[h->nclients++];
  p->h = h;
  ck_assert_int_eq(fedc_conn_connect(&h->loop, ctx, host, h->port, opts,
                                     &client_cbs, p, &p->conn),
                   0);
  /* The connection holds its own reference. */
  fedc_tls_ctx_free(&ctx);
  return p;
}

static struct peer *good_client(struct harness *h, const char *name)
{
  return client_connect(h, "127.0.0.1", "ca1", name, "ca1", NULL);
}

/* Returns 1 if the log written so far contains text. */
static int log_contains(const char *text)
{
  static char buf[64 * 1024];
  FILE *f = fopen(log_path, "r");
  size_t n;

  ck_assert_ptr_nonnull(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strstr(buf, text) != NULL;
}

/* --- Raw TCP clients ----------------------------------------------------- */

static void raw_on_closed(uv_handle_t *handle)
{
  struct raw_client *r = handle->data;

  count_close(r->h);
}

static void raw_on_alloc(uv_handle_t *handle, size_t size, uv_buf_t *buf)
{
  static char scratch[4096];

  buf->base = scratch;
  buf->len = sizeof(scratch);
}

static void raw_on_read(uv_stream_t *stream, ssize_t nread,
                        const uv_buf_t *buf)
{
  struct raw_client *r = stream->data;

  if (nread >= 0)
    return;
  r->ended = 1;
  r->ended_ms = uv_now(&r->h->loop);
  uv_close((uv_handle_t *)&r->tcp, raw_on_closed);
}

static void raw_on_write(uv_write_t *req, int status)
{
}

static void raw_on_connect(uv_connect_t *req, int status)
{
  struct raw_client *r = req->data;
  uv_buf_t buf;

  ck_assert_int_eq(status, 0);
  r->connected = 1;
  if (r->payload != NULL) {
    buf = uv_buf_init((char *)r->payload, (unsigned)strlen(r->payload));
    ck_assert_int_eq(uv_write(&r->write_req, (uv_stream_t *)&r->tcp, &buf, 1,
                              raw_on_write),
                     0);
  }
  ck_assert_int_eq(uv_read_start((uv_stream_t *)&r->tcp, raw_on_alloc,
                                 raw_on_read),
                   0);
}

/* Connects from source, an IPv4 loopback address such as 127.0.0.2, or
 * from the address the kernel picks when source is NULL. */
static void raw_connect_from(struct harness *h, struct raw_client *r,
                             const char *payload, const char *source)
{
  struct sockaddr_in addr, from;

  memset(r, 0, sizeof(*r));
  r->h = h;
  r->payload = payload;
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", h->port, &addr), 0);
  ck_assert_int_eq(uv_tcp_init(&h->loop, &r->tcp), 0);
  r->tcp.data = r;
  if (source != NULL) {
    ck_assert_int_eq(uv_ip4_addr(source, 0, &from), 0);
    ck_assert_int_eq(uv_tcp_bind(&r->tcp, (const struct sockaddr *)&from, 0),
                     0);
  }
  r->connect_req.data = r;
  ck_assert_int_eq(uv_tcp_connect(&r->connect_req, &r->tcp,
                                  (const struct sockaddr *)&addr,
                                  raw_on_connect),
                   0);
}

static void raw_connect(struct harness *h, struct raw_client *r,
                        const char *payload)
{
  raw_connect_from(h, r, payload, NULL);
}

/* --- Raw TLS clients ----------------------------------------------------- */

/* A blocking OpenSSL client on its own thread, for bytes that a fedc_conn
 * never sends: several frames in one TLS record, a bad frame header, or a
 * handshake without ALPN. It connects with ca1/client-0001, writes bytes in
 * one SSL_write, reads until the server closes and then wakes the loop. */
struct tls_raw {
  struct harness *h;
  uv_async_t done;
  pthread_t thread;
  int offer_alpn;
  int max_version;         /* highest TLS version offered, 0 for 1.3 */
  const uint8_t *bytes;
  size_t len;
  int handshake_ok;
  int read_timed_out;
};

static SSL_CTX *tls_raw_ctx(int offer_alpn, int max_version)
{
  static const unsigned char alpn[] = "\x06" "fedc/1";
  char cert[400], key[400], ca[400];
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

  snprintf(cert, sizeof(cert), "%s/ca1/client-0001.pem", cert_root);
  snprintf(key, sizeof(key), "%s/ca1/client-0001.key", cert_root);
  snprintf(ca, sizeof(ca), "%s/ca1/ca.pem", cert_root);
  SSL_CTX_use_certificate_chain_file(ctx, cert);
  SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
  SSL_CTX_load_verify_locations(ctx, ca, NULL);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (max_version != 0)
    SSL_CTX_set_max_proto_version(ctx, max_version);
  else
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (offer_alpn)
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
  return ctx;
}

static void *tls_raw_main(void *arg)
{
  struct tls_raw *r = arg;
  SSL_CTX *ctx = tls_raw_ctx(r->offer_alpn, r->max_version);
  struct sockaddr_in addr = { .sin_family = AF_INET };
  struct timeval timeout = { .tv_sec = 5 };
  char buf[4096];
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  SSL *ssl = SSL_new(ctx);
  int n;

  addr.sin_port = htons(r->h->port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
    SSL_set_fd(ssl, fd);
    r->handshake_ok = SSL_connect(ssl) == 1;
    if (r->handshake_ok && r->len > 0)
      SSL_write(ssl, r->bytes, (int)r->len);
    do {
      n = SSL_read(ssl, buf, sizeof(buf));
    } while (n > 0);
    r->read_timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  uv_async_send(&r->done);
  return NULL;
}

static void tls_raw_on_done(uv_async_t *async)
{
  struct tls_raw *r = async->data;

  uv_close((uv_handle_t *)async, NULL);
  count_close(r->h);
}

static void tls_raw_start(struct harness *h, struct tls_raw *r, int offer_alpn,
                          int max_version, const uint8_t *bytes, size_t len)
{
  memset(r, 0, sizeof(*r));
  r->h = h;
  r->offer_alpn = offer_alpn;
  r->max_version = max_version;
  r->bytes = bytes;
  r->len = len;
  ck_assert_int_eq(uv_async_init(&h->loop, &r->done, tls_raw_on_done), 0);
  r->done.data = r;
  ck_assert_int_eq(pthread_create(&r->thread, NULL, tls_raw_main, r), 0);
}

/* --- Scenario hooks ------------------------------------------------------ */

static void close_peer(struct peer *p)
{
  fedc_conn_close(p->conn);
}

/* Closes the client side once the server side has opened. */
static void close_client_when_server_opens(struct peer *p)
{
  struct harness *h = p->h;

  fedc_conn_close(h->clients[h->nservers - 1].conn);
}

/* --- Tests --------------------------------------------------------------- */

START_TEST(tls_mutual_handshake)
{
  struct harness h;
  struct peer *c;

  harness_init(&h, "127.0.0.1", NULL);
  h.server_open = close_client_when_server_opens;
  h.closes_expected = 2;
  c = good_client(&h, "client-0001");
  harness_run(&h);

  ck_assert_int_eq(c->opened, 1);
  ck_assert_str_eq(c->identity, "fedc-server");
  ck_assert_int_eq(c->reason, FEDC_CONN_CLOSE_LOCAL);
  ck_assert_int_eq(c->err, 0);
  ck_assert_int_eq(h.nservers, 1);
  ck_assert_str_eq(h.servers[0].identity, "client-0001");
  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_PEER);
  ck_assert_int_eq(h.servers[0].err, FEDC_ECLOSED);
  ck_assert(log_contains("client=client-0001"));
}
END_TEST

/* Chunk payload sizes: odd sizes that straddle TLS records. */
static const size_t big_sizes[] = { 3 * MIB, MIB + 7, 5 * MIB - 3 };
#define NUM_BIG (sizeof(big_sizes) / sizeof(big_sizes[0]))

static void send_big_chunks(struct peer *p)
{
  for (size_t i = 0; i < NUM_BIG; i++)
    ck_assert_int_eq(send_chunk(p->conn, i, big_sizes[i]), 0);
  /* Megabytes cannot all reach the socket inside this callback. */
  ck_assert_uint_gt(fedc_conn_queued_bytes(p->conn), 0);
}

/* The server sends each chunk back. */
static void echo_chunk(struct peer *p, Fedc__Envelope *env)
{
  ck_assert_int_eq(fedc_conn_send(p->conn, env), 0);
}

static void close_after_all_echoes(struct peer *p, Fedc__Envelope *env)
{
  if (p->frames == NUM_BIG)
    fedc_conn_close(p->conn);
}

START_TEST(tls_large_frames_both_ways)
{
  fedc_listener_options opts = { .conn.max_frame = 8 * MIB };
  fedc_conn_options copts = { .max_frame = 8 * MIB };
  size_t payload = 0, framed = 0;
  struct harness h;
  struct peer *c, *s;

  for (size_t i = 0; i < NUM_BIG; i++) {
    payload += big_sizes[i];
    framed += chunk_frame_size(i, big_sizes[i]);
  }
  harness_init(&h, "127.0.0.1", &opts);
  h.client_open = send_big_chunks;
  h.server_frame = echo_chunk;
  h.client_frame = close_after_all_echoes;
  h.closes_expected = 2;
  c = client_connect(&h, "127.0.0.1", "ca1", "client-0001", "ca1", &copts);
  harness_run(&h);
  s = &h.servers[0];

  ck_assert_uint_eq(s->frames, NUM_BIG);
  ck_assert_uint_eq(c->frames, NUM_BIG);
  ck_assert_uint_eq(s->chunk_bytes, payload);
  ck_assert_uint_eq(c->chunk_bytes, payload);
  ck_assert_uint_eq(s->bad_chunks, 0);
  ck_assert_uint_eq(c->bad_chunks, 0);
  ck_assert_uint_ge(c->drains, 1);

  ck_assert_uint_eq(c->stats.frames_sent, NUM_BIG);
  ck_assert_uint_eq(c->stats.frame_bytes_sent, framed);
  ck_assert_uint_eq(s->stats.frame_bytes_received, framed);
  ck_assert_uint_eq(s->stats.frame_bytes_sent, framed);
  ck_assert_uint_eq(c->stats.frame_bytes_received, framed);

  /* Every TLS byte one side wrote, the other read; TLS adds a handshake of
   * a few KiB and 22 bytes per 16 KiB record. */
  ck_assert_uint_eq(c->stats.wire_bytes_sent, s->stats.wire_bytes_received);
  ck_assert_uint_eq(s->stats.wire_bytes_sent, c->stats.wire_bytes_received);
  ck_assert_uint_gt(c->stats.wire_bytes_sent, framed);
  ck_assert_uint_lt(c->stats.wire_bytes_sent, framed + framed / 100 + 8192);
  ck_assert_uint_gt(s->stats.wire_bytes_sent, framed);
  ck_assert_uint_lt(s->stats.wire_bytes_sent, framed + framed / 100 + 8192);
}
END_TEST

/* Connects a good client once the previous client has closed. */
static void then_good_client(struct harness *h)
{
  if (h->closes == 1)
    good_client(h, "client-0002");
}

START_TEST(tls_other_ca_rejected)
{
  struct harness h;
  struct peer *bad, *good;

  harness_init(&h, "127.0.0.1", NULL);
  h.server_open = close_peer;
  h.after_close = then_good_client;
  h.closes_expected = 3;
  /* Trusts the real server, but its own certificate is from ca2. */
  bad = client_connect(&h, "127.0.0.1", "ca2", "client-0001", "ca1", NULL);
  harness_run(&h);
  good = &h.clients[1];

  ck_assert_int_eq(bad->reason, FEDC_CONN_CLOSE_TLS);
  ck_assert_int_eq(bad->err, FEDC_ETLS);
  ck_assert_int_eq(good->opened, 1);
  ck_assert_int_eq(h.nservers, 1);
  ck_assert_str_eq(h.servers[0].identity, "client-0002");
  ck_assert_uint_eq(h.stats.failed_tls, 1);
  ck_assert(log_contains("peer=127.0.0.1:"));
  ck_assert(log_contains("reason=tls"));
  ck_assert(log_contains("certificate verify failed"));
}
END_TEST

/* Connects a good client once the raw client has ended. */
static void after_raw_client(struct harness *h)
{
  if (h->closes == 1)
    good_client(h, "client-0003");
}

START_TEST(tls_garbage_client_dropped)
{
  struct raw_client raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.server_open = close_peer;
  h.after_close = after_raw_client;
  h.closes_expected = 3;
  raw_connect(&h, &raw, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  harness_run(&h);

  ck_assert_int_eq(raw.connected, 1);
  ck_assert_int_eq(raw.ended, 1);
  ck_assert_uint_eq(h.stats.accepted, 2);
  ck_assert_uint_eq(h.stats.failed_tls, 1);
  ck_assert_uint_eq(h.stats.established, 1);
  ck_assert_int_eq(h.clients[0].opened, 1);
  ck_assert_str_eq(h.servers[0].identity, "client-0003");
  ck_assert(log_contains("TLS handshake failed"));
}
END_TEST

START_TEST(tls_client_without_cert_rejected)
{
  struct harness h;
  struct peer *bad;

  harness_init(&h, "127.0.0.1", NULL);
  h.server_open = close_peer;
  h.after_close = then_good_client;
  h.closes_expected = 3;
  bad = client_connect(&h, "127.0.0.1", "ca1", NULL, "ca1", NULL);
  harness_run(&h);

  ck_assert_int_eq(bad->reason, FEDC_CONN_CLOSE_TLS);
  ck_assert_int_eq(h.nservers, 1);
  ck_assert_str_eq(h.servers[0].identity, "client-0002");
  ck_assert(log_contains("peer did not return a certificate") ||
            log_contains("certificate required"));
}
END_TEST

static void send_oversized_chunk(struct peer *p)
{
  /* Within the client's own maximum, above the server's 1 KiB. */
  ck_assert_int_eq(send_chunk(p->conn, 9, 4000), 0);
}

START_TEST(tls_oversized_frame_dropped)
{
  fedc_listener_options opts = { .conn.max_frame = 1024 };
  struct harness h;
  struct peer *c;

  harness_init(&h, "127.0.0.1", &opts);
  h.client_open = send_oversized_chunk;
  h.closes_expected = 2;
  c = good_client(&h, "client-0001");
  harness_run(&h);

  ck_assert_int_eq(h.nservers, 1);
  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_TOO_BIG);
  ck_assert_int_eq(h.servers[0].err, FEDC_ETOOBIG);
  ck_assert_uint_eq(h.servers[0].frames, 0);
  ck_assert_int_eq(c->reason, FEDC_CONN_CLOSE_PEER);
  ck_assert(log_contains("reason=too_big"));
  ck_assert(log_contains("client=client-0001"));
}
END_TEST

START_TEST(tls_initial_frame_limit_enforced)
{
  fedc_listener_options opts = { .conn.max_frame = 8 * MIB,
                                 .conn.initial_max_frame = 1024 };
  struct harness h;

  harness_init(&h, "127.0.0.1", &opts);
  h.client_open = send_oversized_chunk;
  h.closes_expected = 2;
  good_client(&h, "client-0001");
  harness_run(&h);

  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_TOO_BIG);
  ck_assert_uint_eq(h.servers[0].frames, 0);
  ck_assert(log_contains("above the maximum 1024"));
}
END_TEST

/* A small first frame and a large one right behind it, so that both may
 * arrive in one read. */
static void send_small_then_large(struct peer *p)
{
  ck_assert_int_eq(send_chunk(p->conn, 1, 100), 0);
  ck_assert_int_eq(send_chunk(p->conn, 2, 3 * MIB), 0);
}

/* Raises the limit inside on_frame of the first frame, and closes after the
 * second. */
static void raise_limit_on_first_frame(struct peer *p, Fedc__Envelope *env)
{
  if (p->frames == 1)
    fedc_conn_raise_frame_limit(p->conn);
  else
    fedc_conn_close(p->conn);
}

START_TEST(tls_frame_limit_raised_in_on_frame)
{
  fedc_listener_options opts = { .conn.max_frame = 8 * MIB,
                                 .conn.initial_max_frame = 1024 };
  fedc_conn_options copts = { .max_frame = 8 * MIB };
  struct harness h;

  harness_init(&h, "127.0.0.1", &opts);
  h.client_open = send_small_then_large;
  h.server_frame = raise_limit_on_first_frame;
  h.closes_expected = 2;
  client_connect(&h, "127.0.0.1", "ca1", "client-0001", "ca1", &copts);
  harness_run(&h);

  ck_assert_uint_eq(h.servers[0].frames, 2);
  ck_assert_uint_eq(h.servers[0].chunk_bytes, 100 + 3 * MIB);
  ck_assert_uint_eq(h.servers[0].bad_chunks, 0);
  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_LOCAL);
}
END_TEST

/* The client's own maximum is 1 KiB: a larger chunk is refused without
 * closing, and a small one follows. */
static void send_too_big_then_small(struct peer *p)
{
  ck_assert_int_eq(send_chunk(p->conn, 1, 4000), FEDC_ETOOBIG);
  ck_assert_int_eq(fedc_conn_is_open(p->conn), 1);
  ck_assert_int_eq(send_chunk(p->conn, 2, 100), 0);
}

static void close_on_frame(struct peer *p, Fedc__Envelope *env)
{
  fedc_conn_close(p->conn);
}

START_TEST(tls_send_above_own_max_refused)
{
  fedc_conn_options copts = { .max_frame = 1024 };
  struct harness h;
  struct peer *c;

  harness_init(&h, "127.0.0.1", NULL);
  h.client_open = send_too_big_then_small;
  h.server_frame = close_on_frame;
  h.closes_expected = 2;
  c = client_connect(&h, "127.0.0.1", "ca1", "client-0001", "ca1", &copts);
  ck_assert_int_eq(send_chunk(c->conn, 1, 10), FEDC_ECLOSED);
  harness_run(&h);

  ck_assert_int_eq(c->opened, 1);
  ck_assert_uint_eq(c->stats.frames_sent, 1);
  ck_assert_uint_eq(h.servers[0].frames, 1);
  ck_assert_uint_eq(h.servers[0].chunk_bytes, 100);
}
END_TEST

static uint64_t silent_start_ms;

START_TEST(tls_silent_client_times_out)
{
  fedc_listener_options opts = { .conn.handshake_timeout_ms = 300 };
  struct raw_client raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", &opts);
  h.after_close = after_raw_client;
  h.server_open = close_peer;
  h.closes_expected = 3;
  uv_update_time(&h.loop);
  silent_start_ms = uv_now(&h.loop);
  raw_connect(&h, &raw, NULL);
  harness_run(&h);

  ck_assert_int_eq(raw.ended, 1);
  ck_assert_uint_ge(raw.ended_ms - silent_start_ms, 290);
  ck_assert_uint_lt(raw.ended_ms - silent_start_ms, 3000);
  ck_assert_uint_eq(h.stats.failed_timeout, 1);
  ck_assert_uint_eq(h.stats.failed_tls, 0);
  ck_assert_uint_eq(h.stats.established, 1);
  ck_assert_int_eq(h.nservers, 1);
  ck_assert(log_contains("reason=timeout"));
}
END_TEST

START_TEST(tls_server_name_checked)
{
  fedc_conn_options wrong = { .server_name = "wrong.example" };
  fedc_conn_options right = { .server_name = "localhost" };
  struct harness h;
  struct peer *bad, *good;

  harness_init(&h, "127.0.0.1", NULL);
  h.server_open = close_peer;
  h.closes_expected = 3;
  bad = client_connect(&h, "127.0.0.1", "ca1", "client-0001", "ca1", &wrong);
  good = client_connect(&h, "127.0.0.1", "ca1", "client-0002", "ca1", &right);
  harness_run(&h);

  ck_assert_int_eq(bad->opened, 0);
  ck_assert_int_eq(bad->reason, FEDC_CONN_CLOSE_TLS);
  ck_assert_int_eq(good->opened, 1);
  ck_assert_int_eq(h.nservers, 1);
  ck_assert(log_contains("Hostname mismatch") ||
            log_contains("hostname mismatch"));
}
END_TEST

START_TEST(tls_ipv6_and_dns_name)
{
  struct harness h;
  struct peer *v6;

  harness_init(&h, "::1", NULL);
  h.server_open = close_client_when_server_opens;
  h.closes_expected = 2;
  v6 = client_connect(&h, "::1", "ca1", "client-0001", "ca1", NULL);
  harness_run(&h);
  ck_assert_int_eq(v6->opened, 1);
  ck_assert_str_eq(h.servers[0].identity, "client-0001");
  ck_assert(log_contains("peer=[::1]:"));

  /* "localhost" goes through the resolver. */
  harness_init(&h, "127.0.0.1", NULL);
  h.server_open = close_client_when_server_opens;
  h.closes_expected = 2;
  v6 = client_connect(&h, "localhost", "ca1", "client-0002", "ca1", NULL);
  harness_run(&h);
  ck_assert_int_eq(v6->opened, 1);
  ck_assert_str_eq(v6->identity, "fedc-server");
}
END_TEST

START_TEST(tls_connect_refused)
{
  struct harness h;
  struct peer *c;
  uint16_t port;

  harness_init(&h, "127.0.0.1", NULL);
  port = h.port;
  fedc_listener_free(&h.listener);
  h.closes_expected = 1;
  /* The port was just released, so nothing listens there. */
  h.port = port;
  c = good_client(&h, "client-0001");
  harness_run(&h);
  ck_assert_int_eq(c->opened, 0);
  ck_assert_int_eq(c->reason, FEDC_CONN_CLOSE_IO);
  ck_assert_int_eq(c->err, FEDC_EIO);
  ck_assert(log_contains("connection refused"));
}
END_TEST

static void send_three_chunks(struct peer *p)
{
  for (uint64_t i = 0; i < 3; i++)
    ck_assert_int_eq(send_chunk(p->conn, i, 1000), 0);
}

/* Closes on the first frame, with two more already decrypted behind it. */
static void close_on_first_frame(struct peer *p, Fedc__Envelope *env)
{
  fedc_conn_close(p->conn);
  fedc_conn_close(p->conn);
  ck_assert_int_eq(fedc_conn_is_open(p->conn), 0);
  ck_assert_int_eq(send_chunk(p->conn, 5, 10), FEDC_ECLOSED);
}

START_TEST(tls_close_inside_on_frame)
{
  struct harness h;
  struct peer *c;

  harness_init(&h, "127.0.0.1", NULL);
  h.client_open = send_three_chunks;
  h.server_frame = close_on_first_frame;
  h.closes_expected = 2;
  c = good_client(&h, "client-0001");
  harness_run(&h);

  ck_assert_uint_eq(h.servers[0].frames, 1);
  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_LOCAL);
  ck_assert_int_eq(c->reason, FEDC_CONN_CLOSE_PEER);
  ck_assert_int_eq(c->err, FEDC_ECLOSED);
}
END_TEST

static uv_timer_t upload_timer;

static void on_upload_timer(uv_timer_t *timer)
{
  struct peer *p = timer->data;

  if (p->conn != NULL)
    fedc_conn_resume(p->conn);
  uv_close((uv_handle_t *)timer, NULL);
}

/* Queues 32 MiB of chunks at once, still being written when the server
 * receives the first of them and closes. Reads nothing for 300 ms, as a
 * busy client would, so that its writes reach the closed server before it
 * reads the last frame. */
static void send_long_upload(struct peer *p)
{
  for (uint64_t i = 0; i < 128; i++)
    ck_assert_int_eq(send_chunk(p->conn, i, 256 * 1024), 0);
  fedc_conn_pause(p->conn);
  uv_timer_init(&p->h->loop, &upload_timer);
  upload_timer.data = p;
  uv_timer_start(&upload_timer, on_upload_timer, 300, 0);
}

/* Says goodbye, one last small frame, and closes, as fedc-server ends a
 * run while a client is uploading. */
static void goodbye_on_first_frame(struct peer *p, Fedc__Envelope *env)
{
  if (p->frames != 1)
    return;
  ck_assert_int_eq(send_chunk(p->conn, 999, 10), 0);
  fedc_conn_close(p->conn);
}

static void close_on_goodbye(struct peer *p, Fedc__Envelope *env)
{
  if (env->body_case == FEDC__ENVELOPE__BODY_CHUNK && env->chunk->round == 999)
    fedc_conn_close(p->conn);
}

/* A connection closed locally reads and drops what the peer still sends
 * until the peer closes too. Closing the socket on unread data would send
 * a TCP reset, and the peer would fail its next write and lose the last
 * frame sent to it. */
START_TEST(tls_peer_sending_gets_last_frame)
{
  struct harness h;
  struct peer *c;

  /* As the daemons do: a write to a reset socket fails with EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  harness_init(&h, "127.0.0.1", NULL);
  h.client_open = send_long_upload;
  h.server_frame = goodbye_on_first_frame;
  h.client_frame = close_on_goodbye;
  h.closes_expected = 2;
  c = good_client(&h, "client-0001");
  harness_run(&h);

  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_LOCAL);
  ck_assert_uint_eq(c->frames, 1);
  ck_assert_int_eq(c->reason, FEDC_CONN_CLOSE_LOCAL);
}
END_TEST

static uv_timer_t resume_timer;

static void on_resume_timer(uv_timer_t *timer)
{
  struct peer *p = timer->data;

  p->paused = 0;
  fedc_conn_resume(p->conn);
  uv_close((uv_handle_t *)timer, NULL);
}

/* Pauses after the first frame and resumes 50 ms later; closes after the
 * third. */
static void pause_on_first_frame(struct peer *p, Fedc__Envelope *env)
{
  if (p->frames == 1) {
    fedc_conn_pause(p->conn);
    p->paused = 1;
    uv_timer_init(&p->h->loop, &resume_timer);
    resume_timer.data = p;
    uv_timer_start(&resume_timer, on_resume_timer, 50, 0);
  } else if (p->frames == 3) {
    fedc_conn_close(p->conn);
  }
}

START_TEST(tls_pause_and_resume)
{
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.client_open = send_three_chunks;
  h.server_frame = pause_on_first_frame;
  h.closes_expected = 2;
  good_client(&h, "client-0001");
  harness_run(&h);

  ck_assert_uint_eq(h.servers[0].frames, 3);
  ck_assert_uint_eq(h.servers[0].frames_while_paused, 0);
  ck_assert_uint_eq(h.servers[0].bad_chunks, 0);
  ck_assert_int_eq(h.servers[0].reason, FEDC_CONN_CLOSE_LOCAL);
}
END_TEST

static SSL_CTX *reloaded_ctx;

/* After the first client opens, the server switches to the ca2 files and
 * two new clients try: one from ca1 (now rejected) and one from ca2. */
static void reload_on_open(struct peer *p)
{
  struct harness *h = p->h;
  fedc_tls_config cfg;
  char cert[400], key[400], ca[400];

  if (h->nservers != 1)
    return;
  snprintf(cert, sizeof(cert), "%s/ca2/server.pem", cert_root);
  snprintf(key, sizeof(key), "%s/ca2/server.key", cert_root);
  snprintf(ca, sizeof(ca), "%s/ca2/ca.pem", cert_root);
  cfg = (fedc_tls_config){ cert, key, ca };
  reloaded_ctx = make_ctx(FEDC_TLS_SERVER, "ca1", "server", "ca1");
  ck_assert_int_eq(fedc_tls_ctx_reload(FEDC_TLS_SERVER, &cfg, &reloaded_ctx),
                   0);
  fedc_listener_set_tls_ctx(h->listener, reloaded_ctx);
  fedc_tls_ctx_free(&reloaded_ctx);

  /* The connection made with the old context still carries frames. */
  ck_assert_int_eq(send_chunk(p->conn, 77, 5000), 0);
  good_client(h, "client-0002");
  client_connect(h, "127.0.0.1", "ca2", "client-0001", "ca2", NULL);
}

/* The server closes the ca2 client's connection at once. */
static void close_second_server(struct peer *p)
{
  if (p->h->nservers == 2)
    fedc_conn_close(p->conn);
  else
    reload_on_open(p);
}

/* Packs three small chunks back to back, for one SSL_write. */
static size_t pack_three_frames(uint8_t *out, size_t size)
{
  Fedc__Envelope env = FEDC__ENVELOPE__INIT;
  Fedc__TensorChunk chunk = FEDC__TENSOR_CHUNK__INIT;
  uint8_t data[300];
  size_t total = 0;

  env.protocol_version = FEDC_FRAME_PROTOCOL_VERSION;
  env.body_case = FEDC__ENVELOPE__BODY_CHUNK;
  env.chunk = &chunk;
  for (uint64_t round = 0; round < 3; round++) {
    uint8_t *frame;
    size_t len;

    for (size_t i = 0; i < sizeof(data); i++)
      data[i] = chunk_pattern(round, i);
    chunk.round = round;
    chunk.data.data = data;
    chunk.data.len = sizeof(data);
    ck_assert_int_eq(fedc_frame_pack(&env, 0, &frame, &len), 0);
    ck_assert_uint_le(total + len, size);
    memcpy(out + total, frame, len);
    total += len;
    free(frame);
  }
  return total;
}

START_TEST(tls_pause_inside_one_record)
{
  uint8_t frames[2048];
  size_t len = pack_three_frames(frames, sizeof(frames));
  struct tls_raw raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.server_frame = pause_on_first_frame;
  h.closes_expected = 2;
  tls_raw_start(&h, &raw, 1, 0, frames, len);
  harness_run(&h);
  pthread_join(raw.thread, NULL);

  ck_assert_int_eq(raw.handshake_ok, 1);
  ck_assert_int_eq(raw.read_timed_out, 0);
  ck_assert_uint_eq(h.servers[0].frames, 3);
  ck_assert_uint_eq(h.servers[0].frames_while_paused, 0);
  ck_assert_uint_eq(h.servers[0].bad_chunks, 0);
  ck_assert_uint_eq(h.servers[0].chunk_bytes, 900);
}
END_TEST

START_TEST(tls_alpn_required)
{
  struct tls_raw raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.closes_expected = 1;
  tls_raw_start(&h, &raw, 0, 0, NULL, 0);
  harness_run(&h);
  pthread_join(raw.thread, NULL);

  ck_assert_int_eq(raw.read_timed_out, 0);
  ck_assert_int_eq(h.nservers, 0);
  ck_assert_uint_eq(h.stats.failed_tls, 1);
  ck_assert_uint_eq(h.stats.established, 0);
  ck_assert(log_contains("ALPN"));
}
END_TEST

START_TEST(tls_version_below_1_3_rejected)
{
  struct tls_raw raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.closes_expected = 1;
  tls_raw_start(&h, &raw, 1, TLS1_2_VERSION, NULL, 0);
  harness_run(&h);
  pthread_join(raw.thread, NULL);

  ck_assert_int_eq(raw.handshake_ok, 0);
  ck_assert_int_eq(h.nservers, 0);
  ck_assert_uint_eq(h.stats.failed_tls, 1);
  ck_assert(log_contains("unsupported protocol"));
}
END_TEST

/* Frames that a fedc_conn would never send, each in its own connection. */
static const struct bad_frame {
  uint8_t bytes[12];
  size_t len;
  enum fedc_conn_close_reason reason;
  int err;
} bad_frames[] = {
  { { 0xff, 0xff, 0xff, 0xff }, 4, FEDC_CONN_CLOSE_TOO_BIG, FEDC_ETOOBIG },
  { { 0x00, 0x00, 0x00, 0x00 }, 4, FEDC_CONN_CLOSE_PROTOCOL, FEDC_EFORMAT },
  { { 0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff }, 8,
    FEDC_CONN_CLOSE_PROTOCOL, FEDC_EFORMAT },
  /* protocol_version 2, Goodbye {} */
  { { 0x00, 0x00, 0x00, 0x04, 0x08, 0x02, 0x52, 0x00 }, 8,
    FEDC_CONN_CLOSE_PROTOCOL, FEDC_EVERSION },
};

START_TEST(tls_bad_frames_dropped)
{
  const struct bad_frame *bad = &bad_frames[_i];
  struct tls_raw raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.closes_expected = 2;
  tls_raw_start(&h, &raw, 1, 0, bad->bytes, bad->len);
  harness_run(&h);
  pthread_join(raw.thread, NULL);

  ck_assert_int_eq(raw.handshake_ok, 1);
  ck_assert_int_eq(raw.read_timed_out, 0);
  ck_assert_int_eq(h.nservers, 1);
  ck_assert_uint_eq(h.servers[0].frames, 0);
  ck_assert_int_eq(h.servers[0].reason, bad->reason);
  ck_assert_int_eq(h.servers[0].err, bad->err);
  ck_assert(log_contains("client=client-0001"));
}
END_TEST

START_TEST(tls_reload_keeps_connections)
{
  fedc_tls_config missing = { "/nonexistent/server.pem",
                              "/nonexistent/server.key",
                              "/nonexistent/ca.pem" };
  SSL_CTX *ctx = make_ctx(FEDC_TLS_SERVER, "ca1", "server", "ca1");
  SSL_CTX *before = ctx;
  struct harness h;
  struct peer *first, *old_ca, *new_ca;

  harness_init(&h, "127.0.0.1", NULL);

  /* A failed reload keeps the old context. */
  ck_assert_int_eq(fedc_tls_ctx_reload(FEDC_TLS_SERVER, &missing, &ctx),
                   FEDC_ETLS);
  ck_assert_ptr_eq(ctx, before);
  fedc_tls_ctx_free(&ctx);
  ck_assert_ptr_null(ctx);
  ck_assert(log_contains("failed to load certificate "
                         "file=/nonexistent/server.pem"));
  ck_assert(log_contains("keeping the previous certificates"));
  h.server_open = close_second_server;
  h.client_frame = close_on_frame;
  h.closes_expected = 5;
  first = good_client(&h, "client-0001");
  harness_run(&h);
  old_ca = &h.clients[1];
  new_ca = &h.clients[2];

  ck_assert_uint_eq(first->frames, 1);
  ck_assert_uint_eq(first->bad_chunks, 0);
  ck_assert_int_eq(old_ca->opened, 0);
  ck_assert_int_eq(old_ca->reason, FEDC_CONN_CLOSE_TLS);
  ck_assert_int_eq(new_ca->opened, 1);
  ck_assert_int_eq(h.nservers, 2);
  ck_assert_str_eq(h.servers[1].identity, "client-0001");
}
END_TEST

START_TEST(tls_listener_free_drops_handshakes)
{
  struct raw_client raw;
  struct harness h;

  harness_init(&h, "127.0.0.1", NULL);
  h.closes_expected = 1;
  raw_connect(&h, &raw, NULL);
  /* Run until the server has accepted the raw client. */
  for (;;) {
    fedc_listener_stats stats;

    uv_run(&h.loop, UV_RUN_ONCE);
    fedc_listener_get_stats(h.listener, &stats);
    if (stats.accepted == 1)
      break;
  }
  fedc_listener_free(&h.listener);
  harness_run(&h);
  ck_assert_int_eq(raw.ended, 1);
}
END_TEST

/* Counts the lines of the log that contain text. */
static int log_count(const char *text)
{
  static char line[4096];
  FILE *f = fopen(log_path, "r");
  int n = 0;

  ck_assert_ptr_nonnull(f);
  while (fgets(line, sizeof(line), f) != NULL)
    n += strstr(line, text) != NULL;
  fclose(f);
  return n;
}

#define FLOOD 30

START_TEST(tls_failed_handshake_log_limited)
{
  fedc_listener_options opts = { .max_handshakes_per_ip = UINT32_MAX };
  static struct raw_client raws[FLOOD];
  struct harness h;

  harness_init(&h, "127.0.0.1", &opts);
  h.closes_expected = FLOOD;
  for (int i = 0; i < FLOOD; i++)
    raw_connect(&h, &raws[i], "not TLS, just text\r\n");
  harness_run(&h);

  /* All within one second, so 20 lines and one summary of the other 10. */
  ck_assert_uint_eq(h.stats.failed_tls, FLOOD);
  ck_assert_int_eq(log_count("TLS handshake failed"), 20);
  ck_assert_int_eq(log_count("10 more failed handshakes"), 1);
}
END_TEST

/* The second client arrives while the first is still in its handshake. */
static void connect_second_raw(uv_timer_t *timer)
{
  struct raw_client *second = timer->data;
  struct harness *h = second->h;

  raw_connect(h, second, NULL);
  uv_close((uv_handle_t *)timer, NULL);
}

START_TEST(tls_max_handshakes_enforced)
{
  fedc_listener_options opts = { .max_handshakes = 1,
                                 .conn.handshake_timeout_ms = 500 };
  struct raw_client first, second;
  uv_timer_t later;
  struct harness h;

  harness_init(&h, "127.0.0.1", &opts);
  h.closes_expected = 2;
  raw_connect(&h, &first, NULL);
  second.h = &h;
  uv_timer_init(&h.loop, &later);
  later.data = &second;
  uv_timer_start(&later, connect_second_raw, 100, 0);
  harness_run(&h);

  ck_assert_int_eq(first.ended, 1);
  ck_assert_int_eq(second.ended, 1);
  /* The rejected one is closed at once, the silent one at its timeout. */
  ck_assert_uint_lt(second.ended_ms, first.ended_ms);
  ck_assert_uint_eq(h.stats.accepted, 2);
  ck_assert_uint_eq(h.stats.rejected_busy, 1);
  ck_assert_uint_eq(h.stats.failed_timeout, 1);
  ck_assert(log_contains("handshakes running, the maximum"));
}
END_TEST

#define IDLE_FROM_ONE_IP 5

/* Connects the honest client while the idle ones hold their slots. */
static void connect_honest_client(uv_timer_t *timer)
{
  struct harness *h = timer->data;

  good_client(h, "client-0001");
  uv_close((uv_handle_t *)timer, NULL);
}

START_TEST(tls_per_ip_limit_spares_others)
{
  fedc_listener_options opts = { .max_handshakes_per_ip = 3,
                                 .conn.handshake_timeout_ms = 1000 };
  struct raw_client idle[IDLE_FROM_ONE_IP];
  uint64_t start_ms;
  uv_timer_t later;
  struct harness h;
  int early = 0;

  harness_init(&h, "127.0.0.1", &opts);
  h.server_open = close_peer;
  h.closes_expected = IDLE_FROM_ONE_IP + 2;
  uv_update_time(&h.loop);
  start_ms = uv_now(&h.loop);
  /* 127.0.0.2 is loopback too, and a different source than the client's
   * 127.0.0.1. */
  for (int i = 0; i < IDLE_FROM_ONE_IP; i++)
    raw_connect_from(&h, &idle[i], NULL, "127.0.0.2");
  uv_timer_init(&h.loop, &later);
  later.data = &h;
  uv_timer_start(&later, connect_honest_client, 200, 0);
  harness_run(&h);

  ck_assert_int_eq(h.clients[0].opened, 1);
  ck_assert_str_eq(h.servers[0].identity, "client-0001");
  ck_assert_uint_eq(h.stats.accepted, IDLE_FROM_ONE_IP + 1);
  ck_assert_uint_eq(h.stats.rejected_per_ip, IDLE_FROM_ONE_IP - 3);
  ck_assert_uint_eq(h.stats.failed_timeout, 3);
  ck_assert_uint_eq(h.stats.established, 1);
  /* The rejected ones are closed at once, the others at the timeout. */
  for (int i = 0; i < IDLE_FROM_ONE_IP; i++) {
    ck_assert_int_eq(idle[i].ended, 1);
    early += idle[i].ended_ms - start_ms < 500;
  }
  ck_assert_int_eq(early, IDLE_FROM_ONE_IP - 3);
  ck_assert(log_contains("handshakes running from its address"));
}
END_TEST

/* Opens a blocking TCP connection to the listener without libuv; the
 * kernel completes it in the listen backlog. */
static int plain_connect(uint16_t port)
{
  struct sockaddr_in addr = { .sin_family = AF_INET };
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  ck_assert_int_ge(fd, 0);
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  return fd;
}

/* Runs the loop until the listener's counter at offset reaches target. */
static void run_until_stat(struct harness *h, size_t offset, uint64_t target)
{
  fedc_listener_stats stats;

  for (;;) {
    fedc_listener_get_stats(h->listener, &stats);
    if (*(const uint64_t *)((const char *)&stats + offset) >= target)
      return;
    uv_run(&h->loop, UV_RUN_ONCE);
  }
}

#define FILLER_MAX 4096

START_TEST(tls_accept_resumes_after_emfile)
{
  fedc_listener_options opts = { .conn.handshake_timeout_ms = 5000 };
  static int fillers[FILLER_MAX];
  struct rlimit saved, low;
  struct harness h;
  int nfillers = 0, client, null_fd;

  harness_init(&h, "127.0.0.1", &opts);
  h.server_open = close_peer;
  h.closes_expected = 2;
  client = plain_connect(h.port);
  null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ck_assert_int_ge(null_fd, 0);

  /* Leave the process without a free descriptor. */
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
  low = saved;
  low.rlim_cur = (rlim_t)null_fd + 64;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  for (;;) {
    int fd = dup(null_fd);

    if (fd < 0)
      break;
    ck_assert_int_lt(nfillers, FILLER_MAX);
    fillers[nfillers++] = fd;
  }
  ck_assert_int_eq(errno, EMFILE);

  run_until_stat(&h, offsetof(fedc_listener_stats, accept_no_fd), 1);

  /* Descriptors free up: the waiting connection is accepted. */
  for (int i = 0; i < 16; i++)
    close(fillers[--nfillers]);
  ck_assert(log_contains("cannot accept connections on 127.0.0.1:"));
  ck_assert(log_contains("Too many open files"));
  run_until_stat(&h, offsetof(fedc_listener_stats, accepted), 1);
  ck_assert(log_contains("accepting connections on 127.0.0.1:"));

  /* It leaves during its handshake, and an honest client is served. */
  close(client);
  run_until_stat(&h, offsetof(fedc_listener_stats, failed_io), 1);
  good_client(&h, "client-0001");
  harness_run(&h);
  ck_assert_int_eq(h.clients[0].opened, 1);
  ck_assert_uint_eq(h.stats.established, 1);
  ck_assert_uint_ge(h.stats.accept_no_fd, 1);
  ck_assert_uint_eq(h.stats.accept_failed, 0);

  while (nfillers > 0)
    close(fillers[--nfillers]);
  close(null_fd);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
}
END_TEST

START_TEST(tls_bad_files_named)
{
  fedc_tls_config cfg = { NULL, NULL, NULL };
  char cert[400], key[400], ca[400];
  fedc_listener *listener = NULL;
  SSL_CTX *ctx = NULL;

  ck_assert_int_eq(fedc_log_open(log_path), 0);
  snprintf(cert, sizeof(cert), "%s/ca1/server.pem", cert_root);
  snprintf(key, sizeof(key), "%s/ca1/client-0001.key", cert_root);
  snprintf(ca, sizeof(ca), "%s/ca1/missing-ca.pem", cert_root);

  cfg = (fedc_tls_config){ cert, key, ca };
  ck_assert_int_eq(fedc_tls_ctx_new(FEDC_TLS_SERVER, &cfg, &ctx), FEDC_ETLS);
  ck_assert_ptr_null(ctx);
  ck_assert(log_contains("failed to load private key file="));
  ck_assert(log_contains("key values mismatch"));

  snprintf(key, sizeof(key), "%s/ca1/server.key", cert_root);
  ck_assert_int_eq(fedc_tls_ctx_new(FEDC_TLS_SERVER, &cfg, &ctx), FEDC_ETLS);
  ck_assert(log_contains("failed to load CA certificate file="));
  ck_assert(log_contains("missing-ca.pem"));

  cfg = (fedc_tls_config){ NULL, NULL, ca };
  ck_assert_int_eq(fedc_tls_ctx_new(FEDC_TLS_SERVER, &cfg, &ctx),
                   FEDC_EINVAL);
  ck_assert_int_eq(fedc_listener_new(uv_default_loop(), NULL, "localhost", 0,
                                     NULL, &server_cbs, NULL, &listener),
                   FEDC_EINVAL);
  ck_assert_ptr_null(listener);
}
END_TEST

int main(void)
{
  char dir[] = "/tmp/fedc-net-test-XXXXXX";
  char cmd[1024];
  Suite *s = suite_create("net_tls");
  TCase *tc = tcase_create("loopback");
  SRunner *sr;
  int failed;

  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return EXIT_FAILURE;
  }
  snprintf(cert_root, sizeof(cert_root), "%s", dir);
  snprintf(log_path, sizeof(log_path), "%s/net.log", dir);
  snprintf(cmd, sizeof(cmd),
           "'%s/deploy/make-certs' --out '%s/ca1' --clients 3 >/dev/null && "
           "'%s/deploy/make-certs' --out '%s/ca2' --clients 1 >/dev/null",
           FEDC_SOURCE_ROOT, dir, FEDC_SOURCE_ROOT, dir);
  if (system(cmd) != 0) {
    fprintf(stderr, "failed to make certificates: %s\n", cmd);
    return EXIT_FAILURE;
  }

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, tls_mutual_handshake);
  tcase_add_test(tc, tls_large_frames_both_ways);
  tcase_add_test(tc, tls_other_ca_rejected);
  tcase_add_test(tc, tls_garbage_client_dropped);
  tcase_add_test(tc, tls_client_without_cert_rejected);
  tcase_add_test(tc, tls_oversized_frame_dropped);
  tcase_add_test(tc, tls_initial_frame_limit_enforced);
  tcase_add_test(tc, tls_frame_limit_raised_in_on_frame);
  tcase_add_test(tc, tls_send_above_own_max_refused);
  tcase_add_test(tc, tls_silent_client_times_out);
  tcase_add_test(tc, tls_server_name_checked);
  tcase_add_test(tc, tls_ipv6_and_dns_name);
  tcase_add_test(tc, tls_connect_refused);
  tcase_add_test(tc, tls_close_inside_on_frame);
  tcase_add_test(tc, tls_peer_sending_gets_last_frame);
  tcase_add_test(tc, tls_pause_and_resume);
  tcase_add_test(tc, tls_pause_inside_one_record);
  tcase_add_test(tc, tls_alpn_required);
  tcase_add_test(tc, tls_version_below_1_3_rejected);
  tcase_add_loop_test(tc, tls_bad_frames_dropped, 0,
                      sizeof(bad_frames) / sizeof(bad_frames[0]));
  tcase_add_test(tc, tls_reload_keeps_connections);
  tcase_add_test(tc, tls_listener_free_drops_handshakes);
  tcase_add_test(tc, tls_failed_handshake_log_limited);
  tcase_add_test(tc, tls_max_handshakes_enforced);
  tcase_add_test(tc, tls_per_ip_limit_spares_others);
  tcase_add_test(tc, tls_accept_resumes_after_emfile);
  tcase_add_test(tc, tls_bad_files_named);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);

  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "failed to remove %s\n", dir);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
