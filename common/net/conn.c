#include "net/conn.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "net/conn_internal.h"
#include "net/listener.h"
#include "util/error.h"
#include "util/log.h"

#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define DEFAULT_CLOSE_TIMEOUT_MS 5000

/* Size of each socket read; one buffer is allocated per read and freed
 * right after, so idle connections hold no read buffer. */
#define READ_SIZE (64 * 1024)

/* Plaintext is taken from OpenSSL in pieces of one maximal TLS record. */
#define RECORD_SIZE (16 * 1024)

/* Largest single uv_write, well below the unsigned int of uv_buf_t. */
#define MAX_WRITE_SIZE ((size_t)1 << 30)

#define KEEPALIVE_DELAY_S 60

/* One queued write: the request, then the encrypted bytes. */
struct conn_write {
  uv_write_t req;
  fedc_conn *conn;
  size_t len;
  uint8_t data[];
};

static void conn_begin_close(fedc_conn *conn);
static void conn_read_records(fedc_conn *conn);
static int conn_flush(fedc_conn *conn);
static void conn_on_timer(uv_timer_t *timer);
static void conn_on_alloc(uv_handle_t *handle, size_t suggested,
                          uv_buf_t *buf);
static void conn_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf);
static void conn_connect_failed(fedc_conn *conn, int status);

const char *fedc_conn_close_reason_name(enum fedc_conn_close_reason reason)
{
  switch (reason) {
  case FEDC_CONN_CLOSE_LOCAL:
    return "local";
  case FEDC_CONN_CLOSE_PEER:
    return "peer_closed";
  case FEDC_CONN_CLOSE_TLS:
    return "tls";
  case FEDC_CONN_CLOSE_TOO_BIG:
    return "too_big";
  case FEDC_CONN_CLOSE_PROTOCOL:
    return "protocol";
  case FEDC_CONN_CLOSE_TIMEOUT:
    return "timeout";
  case FEDC_CONN_CLOSE_IO:
    return "io";
  }
  return "unknown";
}

/* --- Lifetime ------------------------------------------------------------ */

static void conn_resolve_options(fedc_conn *conn, const fedc_conn_options *opts)
{
  conn->max_frame = opts != NULL ? opts->max_frame : 0;
  if (conn->max_frame == 0)
    conn->max_frame = FEDC_FRAME_DEFAULT_MAX;
  conn->initial_max_frame = opts != NULL ? opts->initial_max_frame : 0;
  if (conn->initial_max_frame == 0 ||
      conn->initial_max_frame > conn->max_frame)
    conn->initial_max_frame = conn->max_frame;
  conn->handshake_timeout_ms = opts != NULL ? opts->handshake_timeout_ms : 0;
  if (conn->handshake_timeout_ms == 0)
    conn->handshake_timeout_ms = DEFAULT_HANDSHAKE_TIMEOUT_MS;
  conn->close_timeout_ms = opts != NULL ? opts->close_timeout_ms : 0;
  if (conn->close_timeout_ms == 0)
    conn->close_timeout_ms = DEFAULT_CLOSE_TIMEOUT_MS;
}

/* Allocates a connection without libuv handles, so that it can still be
 * freed directly. */
static fedc_conn *conn_alloc(uv_loop_t *loop, const fedc_conn_options *opts,
                             const fedc_conn_callbacks *cbs, void *data)
{
  fedc_conn *conn = calloc(1, sizeof(*conn));

  if (conn == NULL)
    return NULL;
  conn->loop = loop;
  conn->cbs = *cbs;
  conn->data = data;
  conn_resolve_options(conn, opts);
  fedc_frame_decoder_init(&conn->decoder, conn->initial_max_frame);
  return conn;
}

static void conn_free(fedc_conn *conn)
{
  SSL_free(conn->ssl);
  fedc_frame_decoder_close(&conn->decoder);
  free(conn->stash);
  if (conn->addrs != NULL)
    uv_freeaddrinfo(conn->addrs);
  free(conn);
}

/* Initializes both handles. From here on the connection is freed only
 * through conn_release() once every handle is closed. */
static void conn_init_handles(fedc_conn *conn)
{
  /* Neither call can fail in libuv 1.x (src/unix/tcp.c, timer.c): without
   * an address family uv_tcp_init() opens no socket and only fills in the
   * struct, as uv_timer_init() does. */
  uv_tcp_init(conn->loop, &conn->tcp);
  uv_timer_init(conn->loop, &conn->timer);
  conn->tcp.data = conn;
  conn->timer.data = conn;
  conn->refs = 2;
}

/* Drops one reference; the last one calls on_close and frees. */
static void conn_release(fedc_conn *conn)
{
  if (--conn->refs > 0)
    return;
  if (conn->listener != NULL)
    fedc__listener_unlink(conn->listener, conn);
  if (conn->app_owned && conn->cbs.on_close != NULL)
    conn->cbs.on_close(conn, conn->reason, conn->err);
  conn_free(conn);
}

static void conn_on_handle_closed(uv_handle_t *handle)
{
  conn_release(handle->data);
}

static void conn_close_handles(fedc_conn *conn)
{
  if (conn->handles_closing)
    return;
  conn->handles_closing = true;
  /* The TCP handle may already be closing between two connect attempts;
   * its close callback then drops its reference. */
  if (!uv_is_closing((uv_handle_t *)&conn->tcp))
    uv_close((uv_handle_t *)&conn->tcp, conn_on_handle_closed);
  uv_close((uv_handle_t *)&conn->timer, conn_on_handle_closed);
}

/* --- Errors and closing -------------------------------------------------- */

static void conn_log_close(const fedc_conn *conn, const char *detail)
{
  const char *role = conn->is_server ? "client" : "server";
  const char *id = conn->identity[0] != '\0' ? conn->identity : "unknown";
  const char *reason = fedc_conn_close_reason_name(conn->reason);

  /* A flood of failed handshakes on a listener is logged in part. */
  if (conn->listener != NULL && !fedc__listener_may_log(conn->listener))
    return;
  if (conn->reason == FEDC_CONN_CLOSE_LOCAL)
    fedc_debug("net", "closing connection peer=%s %s=%s", conn->peer, role,
               id);
  else if (conn->reason == FEDC_CONN_CLOSE_PEER)
    fedc_info("net", "connection closed by peer peer=%s %s=%s: %s",
              conn->peer, role, id, detail);
  else
    fedc_warn("net", "connection dropped peer=%s %s=%s reason=%s: %s",
              conn->peer, role, id, reason, detail);
}

/* Records why the connection ends, logs it and starts closing. Only the
 * first reason counts. */
static void conn_fail(fedc_conn *conn, enum fedc_conn_close_reason reason,
                      int err, const char *detail)
{
  if (conn->state == CONN_CLOSING)
    return;
  conn->reason = reason;
  conn->err = err;
  if (conn->listener != NULL)
    fedc__listener_handshake_failed(conn->listener, reason);
  conn_log_close(conn, detail);
  conn_begin_close(conn);
}

/* Fails the connection with the pending OpenSSL error. */
static void conn_fail_tls(fedc_conn *conn, const char *what)
{
  char reason[256];
  char detail[320];

  fedc_tls_describe_error(conn->ssl, reason, sizeof(reason));
  snprintf(detail, sizeof(detail), "%s: %s", what, reason);
  conn_fail(conn, FEDC_CONN_CLOSE_TLS, FEDC_ETLS, detail);
}

static void conn_fail_uv(fedc_conn *conn, const char *what, int status)
{
  char detail[256];

  snprintf(detail, sizeof(detail), "%s: %s", what, uv_strerror(status));
  conn_fail(conn, FEDC_CONN_CLOSE_IO,
            status == UV_ENOMEM ? FEDC_ENOMEM : FEDC_EIO, detail);
}

/* Closes the handles when our TCP shutdown has finished, unless the
 * connection still drains what the peer sends. */
static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
  fedc_conn *conn = req->data;

  conn->shut_down = true;
  if (status < 0 || !conn->draining)
    conn_close_handles(conn);
}

/* Drops what a closing connection reads, until the peer's EOF or a read
 * error. Closing a socket with unread data makes the kernel send a TCP
 * reset. A peer still sending, such as a client uploading its update when
 * the server ends the run, then fails its next write and never reads the
 * last frame sent to it, the Goodbye. */
static void conn_drop_read(fedc_conn *conn, ssize_t nread)
{
  if (nread > 0) {
    conn->stats.wire_bytes_received += (uint64_t)nread;
    return;
  }
  if (nread == 0)
    return;
  conn->draining = false;
  if (conn->shut_down)
    conn_close_handles(conn);
}

/* Keeps reading while a local close of an open connection shuts down,
 * until the peer closes its side too or the close timeout expires. */
static void conn_start_draining(fedc_conn *conn)
{
  conn->draining = uv_read_start((uv_stream_t *)&conn->tcp, conn_on_alloc,
                                 conn_on_read) == 0;
}

/* Moves a connection to CONN_CLOSING. A connected socket first receives
 * what OpenSSL has buffered (a close_notify after a local close, or the
 * alert after a handshake failure) and then a TCP shutdown, both bounded by
 * the close timeout. After a local close of an open connection, the
 * handles also wait for the peer's EOF within that timeout. Anything else
 * closes its handles at once. */
static void conn_begin_close(fedc_conn *conn)
{
  enum fedc__conn_state prev = conn->state;

  conn->state = CONN_CLOSING;
  if (prev == CONN_RESOLVING)
    uv_cancel((uv_req_t *)&conn->resolve_req);
  if (prev == CONN_RESOLVING || prev == CONN_CONNECTING) {
    conn_close_handles(conn);
    return;
  }

  uv_read_stop((uv_stream_t *)&conn->tcp);
  if (prev == CONN_OPEN && conn->reason == FEDC_CONN_CLOSE_LOCAL) {
    ERR_clear_error();
    SSL_shutdown(conn->ssl);
    ERR_clear_error();
    conn_start_draining(conn);
  }
  conn_flush(conn);

  conn->shutdown_req.data = conn;
  if (uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp,
                  conn_on_shutdown) < 0) {
    conn_close_handles(conn);
    return;
  }
  uv_timer_start(&conn->timer, conn_on_timer, conn->close_timeout_ms, 0);
}

/* --- Writing ------------------------------------------------------------- */

static void conn_on_write(uv_write_t *req, int status)
{
  struct conn_write *w = (struct conn_write *)req;
  fedc_conn *conn = w->conn;

  conn->queued -= w->len;
  if (status == 0)
    conn->stats.wire_bytes_sent += w->len;
  free(w);

  if (status < 0 && status != UV_ECANCELED)
    conn_fail_uv(conn, "write failed", status);
  else if (status == 0 && conn->queued == 0 && conn->state == CONN_OPEN &&
           conn->cbs.on_drain != NULL)
    conn->cbs.on_drain(conn);
}

/* Hands everything OpenSSL has written to its memory BIO to the socket. */
static int conn_flush(fedc_conn *conn)
{
  BIO *wbio = conn->ssl != NULL ? SSL_get_wbio(conn->ssl) : NULL;
  size_t pending;
  struct conn_write *w;
  uv_buf_t buf;
  int rc;

  while (wbio != NULL && (pending = BIO_ctrl_pending(wbio)) > 0) {
    if (pending > MAX_WRITE_SIZE)
      pending = MAX_WRITE_SIZE;
    w = malloc(sizeof(*w) + pending);
    if (w == NULL) {
      conn_fail(conn, FEDC_CONN_CLOSE_IO, FEDC_ENOMEM, "out of memory");
      return FEDC_ENOMEM;
    }
    /* A memory BIO always returns what BIO_ctrl_pending() reported. */
    BIO_read_ex(wbio, w->data, pending, &w->len);
    w->conn = conn;
    buf = uv_buf_init((char *)w->data, (unsigned int)w->len);

    rc = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, conn_on_write);
    if (rc < 0) {
      free(w);
      conn_fail_uv(conn, "write failed", rc);
      return FEDC_EIO;
    }
    conn->queued += w->len;
  }
  return 0;
}

/* Encrypts len bytes and queues them. */
static int conn_write_plain(fedc_conn *conn, const uint8_t *data, size_t len)
{
  size_t written;

  ERR_clear_error();
  if (SSL_write_ex(conn->ssl, data, len, &written) != 1) {
    conn_fail_tls(conn, "encrypt failed");
    return FEDC_ETLS;
  }
  return conn_flush(conn);
}

int fedc_conn_send(fedc_conn *conn, const Fedc__Envelope *env)
{
  uint8_t *frame = NULL;
  size_t len = 0;
  int rc;

  if (conn->state != CONN_OPEN)
    return FEDC_ECLOSED;
  rc = fedc_frame_pack(env, conn->max_frame, &frame, &len);
  if (rc < 0)
    return rc;

  rc = conn_write_plain(conn, frame, len);
  free(frame);
  if (rc < 0)
    return rc;
  conn->stats.frames_sent++;
  conn->stats.frame_bytes_sent += len;
  return 0;
}

int fedc_conn_send_payload(fedc_conn *conn, const uint8_t *payload,
                           size_t len)
{
  uint8_t header[FEDC_FRAME_HEADER_SIZE];
  int rc;

  if (conn->state != CONN_OPEN)
    return FEDC_ECLOSED;
  if (len == 0)
    return FEDC_EINVAL;
  if (len > conn->max_frame)
    return FEDC_ETOOBIG;

  header[0] = (uint8_t)(len >> 24);
  header[1] = (uint8_t)(len >> 16);
  header[2] = (uint8_t)(len >> 8);
  header[3] = (uint8_t)len;
  rc = conn_write_plain(conn, header, sizeof(header));
  if (rc == 0)
    rc = conn_write_plain(conn, payload, len);
  if (rc < 0)
    return rc;
  conn->stats.frames_sent++;
  conn->stats.frame_bytes_sent += sizeof(header) + len;
  return 0;
}

size_t fedc_conn_queued_bytes(const fedc_conn *conn)
{
  return conn->queued;
}

/* --- Reading ------------------------------------------------------------- */

/* Unpacks the frame the decoder completed and hands it to on_frame. */
static void conn_deliver(fedc_conn *conn)
{
  Fedc__Envelope *env = NULL;
  const uint8_t *payload;
  size_t len;
  char detail[128];
  int rc;

  payload = fedc_frame_decoder_payload(&conn->decoder, &len);
  rc = fedc_frame_unpack(payload, len, &env);
  if (rc == FEDC_ETOOBIG) {
    snprintf(detail, sizeof(detail), "frame of %zu bytes needs more than "
             "%zu bytes of memory to decode", len,
             fedc_frame_unpack_budget(len));
    conn_fail(conn, FEDC_CONN_CLOSE_TOO_BIG, rc, detail);
    return;
  }
  if (rc == FEDC_ENOMEM) {
    conn_fail(conn, FEDC_CONN_CLOSE_IO, rc, "out of memory for a frame");
    return;
  }
  if (rc < 0) {
    snprintf(detail, sizeof(detail), "invalid frame of %zu bytes: %s", len,
             fedc_strerror(rc));
    conn_fail(conn, FEDC_CONN_CLOSE_PROTOCOL, rc, detail);
    return;
  }
  conn->stats.frames_received++;
  conn->stats.frame_bytes_received += FEDC_FRAME_HEADER_SIZE + len;
  if (conn->cbs.on_frame != NULL)
    conn->cbs.on_frame(conn, env);
  else
    fedc_frame_envelope_free(&env);
}

static void conn_fail_frame(fedc_conn *conn, int rc)
{
  char detail[128];

  if (rc == FEDC_ETOOBIG) {
    snprintf(detail, sizeof(detail),
             "frame length %" PRIu32 " above the maximum %" PRIu32,
             conn->decoder.payload_len, conn->decoder.max_len);
    conn_fail(conn, FEDC_CONN_CLOSE_TOO_BIG, rc, detail);
  } else if (rc == FEDC_ENOMEM) {
    conn_fail(conn, FEDC_CONN_CLOSE_IO, rc, "out of memory for a frame");
  } else {
    conn_fail(conn, FEDC_CONN_CLOSE_PROTOCOL, rc, "frame length 0");
  }
}

/* Frames plaintext and delivers each complete frame. Returns the number of
 * bytes used, which is less than len only when the connection was paused
 * or closed on the way. */
static size_t conn_feed(fedc_conn *conn, const uint8_t *data, size_t len)
{
  size_t off = 0;
  size_t used;
  int rc;

  while (off < len && conn->state == CONN_OPEN && !conn->paused) {
    rc = fedc_frame_decoder_feed(&conn->decoder, data + off, len - off, &used);
    off += used;
    if (rc < 0) {
      conn_fail_frame(conn, rc);
      break;
    }
    if (rc == 1)
      conn_deliver(conn);
  }
  return off;
}

/* Keeps plaintext that a pause left unframed. */
static void conn_stash(fedc_conn *conn, const uint8_t *data, size_t len)
{
  size_t keep = conn->stash_len - conn->stash_off;
  uint8_t *grown = malloc(keep + len);

  if (grown == NULL) {
    conn_fail(conn, FEDC_CONN_CLOSE_IO, FEDC_ENOMEM, "out of memory");
    return;
  }
  if (keep > 0)
    memcpy(grown, conn->stash + conn->stash_off, keep);
  memcpy(grown + keep, data, len);
  free(conn->stash);
  conn->stash = grown;
  conn->stash_len = keep + len;
  conn->stash_off = 0;
}

/* Feeds stashed plaintext first. Returns true when the stash is empty. */
static bool conn_feed_stash(fedc_conn *conn)
{
  if (conn->stash == NULL)
    return true;
  conn->stash_off += conn_feed(conn, conn->stash + conn->stash_off,
                               conn->stash_len - conn->stash_off);
  if (conn->stash_off < conn->stash_len)
    return false;
  free(conn->stash);
  conn->stash = NULL;
  conn->stash_len = 0;
  conn->stash_off = 0;
  return true;
}

/* Decrypts every complete TLS record and frames the plaintext. */
static void conn_read_records(fedc_conn *conn)
{
  uint8_t plain[RECORD_SIZE];
  size_t n, used;
  int err;

  if (!conn_feed_stash(conn))
    return;
  while (conn->state == CONN_OPEN && !conn->paused) {
    ERR_clear_error();
    if (SSL_read_ex(conn->ssl, plain, sizeof(plain), &n) != 1) {
      err = SSL_get_error(conn->ssl, 0);
      if (err == SSL_ERROR_ZERO_RETURN)
        conn_fail(conn, FEDC_CONN_CLOSE_PEER, FEDC_ECLOSED,
                  "TLS close_notify received");
      else if (err != SSL_ERROR_WANT_READ)
        conn_fail_tls(conn, "TLS record error");
      break;
    }
    used = conn_feed(conn, plain, n);
    if (used < n && conn->state == CONN_OPEN)
      conn_stash(conn, plain + used, n - used);
  }
  /* Reading may have produced output, such as a KeyUpdate reply. */
  if (conn->state == CONN_OPEN)
    conn_flush(conn);
}

/* --- Handshake and socket events ----------------------------------------- */

static void conn_established(fedc_conn *conn)
{
  fedc_listener *l = conn->listener;

  uv_timer_stop(&conn->timer);
  conn->state = CONN_OPEN;
  conn->app_owned = true;
  if (l != NULL) {
    fedc__listener_handshake_done(l, conn);
    fedc_info("net", "connection established peer=%s client=%s", conn->peer,
              conn->identity);
  } else {
    fedc_info("net", "connected peer=%s server=%s", conn->peer,
              conn->identity[0] != '\0' ? conn->identity : "unknown");
  }
  if (conn->cbs.on_open != NULL)
    conn->cbs.on_open(conn);
}

/* Advances the handshake with the bytes in the read BIO. */
static void conn_handshake(fedc_conn *conn)
{
  int rc;

  ERR_clear_error();
  rc = SSL_do_handshake(conn->ssl);
  if (rc != 1) {
    if (SSL_get_error(conn->ssl, rc) == SSL_ERROR_WANT_READ)
      conn_flush(conn);
    else
      conn_fail_tls(conn, "TLS handshake failed");
    return;
  }
  if (conn_flush(conn) < 0)
    return;

  if (fedc_tls_check_alpn(conn->ssl) < 0) {
    conn_fail(conn, FEDC_CONN_CLOSE_TLS, FEDC_ETLS,
              "peer did not negotiate ALPN " FEDC_TLS_ALPN);
    return;
  }
  rc = fedc_tls_peer_identity(conn->ssl, conn->identity,
                              sizeof(conn->identity));
  if (rc < 0 && conn->is_server) {
    conn_fail(conn, FEDC_CONN_CLOSE_TLS, FEDC_ETLS,
              "client certificate has no usable subject CN");
    return;
  }
  conn_established(conn);
}

static void conn_on_alloc(uv_handle_t *handle, size_t suggested,
                          uv_buf_t *buf)
{
  buf->base = malloc(READ_SIZE);
  buf->len = buf->base != NULL ? READ_SIZE : 0;
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf)
{
  fedc_conn *conn = stream->data;
  size_t written = 0;
  int ok = 1;

  if (conn->state == CONN_CLOSING) {
    free(buf->base);
    conn_drop_read(conn, nread);
    return;
  }
  if (nread > 0) {
    conn->stats.wire_bytes_received += (uint64_t)nread;
    ok = BIO_write_ex(SSL_get_rbio(conn->ssl), buf->base, (size_t)nread,
                      &written);
  }
  free(buf->base);

  if (nread == UV_EOF)
    conn_fail(conn, FEDC_CONN_CLOSE_PEER, FEDC_ECLOSED,
              conn->state == CONN_OPEN
                  ? "peer closed the connection"
                  : "peer closed the connection during the TLS handshake");
  else if (nread < 0)
    conn_fail_uv(conn, "read failed", (int)nread);
  else if (!ok)
    conn_fail(conn, FEDC_CONN_CLOSE_IO, FEDC_ENOMEM, "out of memory");
  if (nread <= 0 || conn->state == CONN_CLOSING)
    return;

  if (conn->state == CONN_HANDSHAKE)
    conn_handshake(conn);
  if (conn->state == CONN_OPEN)
    conn_read_records(conn);
}

static void conn_start_reading(fedc_conn *conn)
{
  int rc;

  /* Frames are written whole, so Nagle's delay would only add latency. */
  uv_tcp_nodelay(&conn->tcp, 1);
  uv_tcp_keepalive(&conn->tcp, 1, KEEPALIVE_DELAY_S);
  rc = uv_read_start((uv_stream_t *)&conn->tcp, conn_on_alloc, conn_on_read);
  if (rc < 0)
    conn_fail_uv(conn, "failed to start reading", rc);
}

/* One timer serves three purposes, and the state selects which: the handshake
 * timeout, the close timeout, and the deferred delivery after a resume. */
static void conn_on_timer(uv_timer_t *timer)
{
  fedc_conn *conn = timer->data;
  char detail[96];

  switch (conn->state) {
  case CONN_CLOSING:
    conn_close_handles(conn);
    break;
  case CONN_OPEN:
    conn_read_records(conn);
    break;
  default:
    snprintf(detail, sizeof(detail),
             "connect and TLS handshake not done within %" PRIu64 " ms",
             conn->handshake_timeout_ms);
    conn_fail(conn, FEDC_CONN_CLOSE_TIMEOUT, FEDC_ETIMEDOUT, detail);
    break;
  }
}

/* --- Application calls on a connection ----------------------------------- */

void fedc_conn_pause(fedc_conn *conn)
{
  if (conn->state != CONN_OPEN || conn->paused)
    return;
  conn->paused = true;
  uv_read_stop((uv_stream_t *)&conn->tcp);
}

void fedc_conn_resume(fedc_conn *conn)
{
  int rc;

  if (conn->state != CONN_OPEN || !conn->paused)
    return;
  conn->paused = false;
  rc = uv_read_start((uv_stream_t *)&conn->tcp, conn_on_alloc, conn_on_read);
  if (rc < 0) {
    conn_fail_uv(conn, "failed to resume reading", rc);
    return;
  }
  /* Frames already decrypted go out from the loop, never from inside the
   * caller, which may be another connection's callback. */
  uv_timer_start(&conn->timer, conn_on_timer, 0, 0);
}

void fedc_conn_close(fedc_conn *conn)
{
  conn_fail(conn, FEDC_CONN_CLOSE_LOCAL, 0, "closed by the application");
}

void fedc_conn_raise_frame_limit(fedc_conn *conn)
{
  fedc_frame_decoder_set_max(&conn->decoder, conn->max_frame);
}

void fedc_conn_set_data(fedc_conn *conn, void *data)
{
  conn->data = data;
}

void *fedc_conn_data(const fedc_conn *conn)
{
  return conn->data;
}

int fedc_conn_is_open(const fedc_conn *conn)
{
  return conn->state == CONN_OPEN;
}

const char *fedc_conn_peer(const fedc_conn *conn)
{
  return conn->peer;
}

const char *fedc_conn_identity(const fedc_conn *conn)
{
  return conn->identity;
}

void fedc_conn_get_stats(const fedc_conn *conn, fedc_conn_stats *out)
{
  *out = conn->stats;
}

/* --- Client connections -------------------------------------------------- */

static void conn_format_peer(fedc_conn *conn, const struct sockaddr *addr)
{
  char ip[INET6_ADDRSTRLEN] = "?";

  if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;

    uv_ip6_name(in6, ip, sizeof(ip));
    snprintf(conn->peer, sizeof(conn->peer), "[%s]:%u", ip,
             (unsigned)ntohs(in6->sin6_port));
  } else {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;

    uv_ip4_name(in4, ip, sizeof(ip));
    snprintf(conn->peer, sizeof(conn->peer), "%s:%u", ip,
             (unsigned)ntohs(in4->sin_port));
  }
}

static void conn_connect_next(fedc_conn *conn);

static void conn_on_connected(uv_connect_t *req, int status)
{
  fedc_conn *conn = req->data;

  if (conn->state == CONN_CLOSING)
    return;
  if (status < 0) {
    conn_connect_failed(conn, status);
    return;
  }
  conn->state = CONN_HANDSHAKE;
  conn_start_reading(conn);
  if (conn->state == CONN_HANDSHAKE)
    conn_handshake(conn);
}

/* A failed TCP handle cannot connect again, so the next address gets a
 * fresh handle once the old one is closed. */
static void conn_on_retry_closed(uv_handle_t *handle)
{
  fedc_conn *conn = handle->data;

  if (conn->state == CONN_CLOSING) {
    conn_release(conn);
    return;
  }
  /* As in conn_init_handles(), this returns 0 in libuv 1.x. */
  uv_tcp_init(conn->loop, &conn->tcp);
  conn->tcp.data = conn;
  conn_connect_next(conn);
}

static void conn_connect_failed(fedc_conn *conn, int status)
{
  if (conn->next_addr != NULL) {
    fedc_debug("net", "connect failed peer=%s: %s; trying the next address",
               conn->peer, uv_strerror(status));
    uv_close((uv_handle_t *)&conn->tcp, conn_on_retry_closed);
    return;
  }
  conn_fail_uv(conn, "connect failed", status);
}

static void conn_connect_addr(fedc_conn *conn, const struct sockaddr *addr)
{
  int rc;

  conn->state = CONN_CONNECTING;
  conn_format_peer(conn, addr);
  conn->connect_req.data = conn;
  rc = uv_tcp_connect(&conn->connect_req, &conn->tcp, addr, conn_on_connected);
  if (rc < 0)
    conn_connect_failed(conn, rc);
}

static void conn_connect_next(fedc_conn *conn)
{
  const struct addrinfo *ai = conn->next_addr;

  conn->next_addr = ai->ai_next;
  conn_connect_addr(conn, ai->ai_addr);
}

static void conn_on_resolved(uv_getaddrinfo_t *req, int status,
                             struct addrinfo *res)
{
  fedc_conn *conn = req->data;

  if (conn->state == CONN_CLOSING) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    conn_release(conn);
    return;
  }

  conn->state = CONN_CONNECTING;
  if (status < 0 || res == NULL) {
    conn_fail_uv(conn, "failed to resolve host",
                 status < 0 ? status : UV_EAI_NONAME);
  } else {
    conn->addrs = res;
    conn->next_addr = res;
    conn_connect_next(conn);
  }
  conn_release(conn);
}

/* Connects at once to an IP literal, or resolves a name first. */
static void conn_start_connect(fedc_conn *conn)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_ADDRCONFIG };
  struct sockaddr_storage addr;
  char service[8];
  int rc;

  if (uv_ip4_addr(conn->host, conn->port, (struct sockaddr_in *)&addr) == 0 ||
      uv_ip6_addr(conn->host, conn->port, (struct sockaddr_in6 *)&addr) == 0) {
    conn_connect_addr(conn, (const struct sockaddr *)&addr);
    return;
  }

  snprintf(service, sizeof(service), "%u", (unsigned)conn->port);
  conn->state = CONN_RESOLVING;
  conn->resolve_req.data = conn;
  rc = uv_getaddrinfo(conn->loop, &conn->resolve_req, conn_on_resolved,
                      conn->host, service, &hints);
  if (rc < 0) {
    conn->state = CONN_CONNECTING;
    conn_fail_uv(conn, "failed to resolve host", rc);
    return;
  }
  conn->refs++;
}

int fedc_conn_connect(uv_loop_t *loop, SSL_CTX *ctx, const char *host,
                      uint16_t port, const fedc_conn_options *opts,
                      const fedc_conn_callbacks *cbs, void *data,
                      fedc_conn **out)
{
  const char *name;
  fedc_conn *conn;
  int rc;

  *out = NULL;
  if (host == NULL || host[0] == '\0' || strlen(host) >= FEDC__HOST_SIZE ||
      port == 0)
    return FEDC_EINVAL;
  conn = conn_alloc(loop, opts, cbs, data);
  if (conn == NULL)
    return FEDC_ENOMEM;
  snprintf(conn->host, sizeof(conn->host), "%s", host);
  conn->port = port;
  snprintf(conn->peer, sizeof(conn->peer),
           strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host,
           (unsigned)port);

  name = opts != NULL && opts->server_name != NULL ? opts->server_name : host;
  rc = fedc_tls_ssl_new(ctx, FEDC_TLS_CLIENT, name, &conn->ssl);
  if (rc < 0) {
    conn_free(conn);
    return rc;
  }

  conn_init_handles(conn);
  conn->app_owned = true;
  uv_timer_start(&conn->timer, conn_on_timer, conn->handshake_timeout_ms, 0);
  conn_start_connect(conn);
  *out = conn;
  return 0;
}

/* --- Server side, for the listener -------------------------------------- */

fedc_conn *fedc__conn_new_server(uv_loop_t *loop, const fedc_conn_options *opts,
                                 const fedc_conn_callbacks *cbs, void *data)
{
  fedc_conn *conn = conn_alloc(loop, opts, cbs, data);

  if (conn == NULL)
    return NULL;
  conn->is_server = true;
  conn_init_handles(conn);
  return conn;
}

void fedc__conn_discard(fedc_conn *conn)
{
  conn->state = CONN_CLOSING;
  conn_close_handles(conn);
}

void fedc__conn_read_peer_address(fedc_conn *conn)
{
  struct sockaddr_storage addr;
  int len = sizeof(addr);

  if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&addr, &len) == 0)
    conn_format_peer(conn, (const struct sockaddr *)&addr);
  else
    snprintf(conn->peer, sizeof(conn->peer), "unknown");
}

void fedc__conn_start_handshake(fedc_conn *conn, SSL_CTX *ctx)
{
  int rc;

  conn->state = CONN_HANDSHAKE;
  rc = fedc_tls_ssl_new(ctx, FEDC_TLS_SERVER, NULL, &conn->ssl);
  if (rc < 0) {
    conn_fail(conn, FEDC_CONN_CLOSE_IO, rc, fedc_strerror(rc));
    return;
  }
  uv_timer_start(&conn->timer, conn_on_timer, conn->handshake_timeout_ms, 0);
  conn_start_reading(conn);
}

void fedc__conn_abort(fedc_conn *conn)
{
  conn_fail(conn, FEDC_CONN_CLOSE_LOCAL, 0, "listener closed");
}
