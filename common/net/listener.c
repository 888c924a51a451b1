#include "net/listener.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/conn_internal.h"
#include "util/error.h"
#include "util/log.h"

#define DEFAULT_BACKLOG 511
#define DEFAULT_MAX_HANDSHAKES 1024

/* At most LOG_BURST failed handshakes are logged per LOG_WINDOW_MS. */
#define LOG_BURST 20
#define LOG_WINDOW_MS 1000

struct fedc_listener {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  SSL_CTX *ctx;
  fedc_listener_options opts;
  fedc_conn_callbacks cbs;
  void *data;

  fedc_conn *pending;           /* connections in their handshake */
  uint32_t npending;
  fedc_listener_stats stats;

  uint64_t log_window_start_ms;
  uint32_t log_count;           /* failures logged in the current window */
  uint64_t log_skipped;         /* failures not logged in the window */

  uint16_t port;
  char addr[FEDC__PEER_SIZE];   /* "ADDR:PORT" once bound */
};

/* --- Calls from conn.c --------------------------------------------------- */

void fedc__listener_unlink(fedc_listener *l, fedc_conn *conn)
{
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    l->pending = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  conn->prev = NULL;
  conn->next = NULL;
  conn->listener = NULL;
  l->npending--;
}

void fedc__listener_handshake_done(fedc_listener *l, fedc_conn *conn)
{
  l->stats.established++;
  fedc__listener_unlink(l, conn);
}

void fedc__listener_handshake_failed(fedc_listener *l,
                                     enum fedc_conn_close_reason reason)
{
  switch (reason) {
  case FEDC_CONN_CLOSE_TLS:
    l->stats.failed_tls++;
    break;
  case FEDC_CONN_CLOSE_TIMEOUT:
    l->stats.failed_timeout++;
    break;
  default:
    l->stats.failed_other++;
    break;
  }
}

static void listener_log_skipped(fedc_listener *l)
{
  if (l->log_skipped > 0)
    fedc_warn("net", "%" PRIu64 " more failed handshakes on %s were not "
              "logged", l->log_skipped, l->addr);
  l->log_skipped = 0;
}

int fedc__listener_may_log(fedc_listener *l)
{
  uint64_t now = uv_now(l->loop);

  if (now - l->log_window_start_ms >= LOG_WINDOW_MS) {
    listener_log_skipped(l);
    l->log_window_start_ms = now;
    l->log_count = 0;
  }
  if (l->log_count < LOG_BURST) {
    l->log_count++;
    return 1;
  }
  l->log_skipped++;
  return 0;
}

/* --- Accepting ----------------------------------------------------------- */

static void listener_link(fedc_listener *l, fedc_conn *conn)
{
  conn->listener = l;
  conn->prev = NULL;
  conn->next = l->pending;
  if (l->pending != NULL)
    l->pending->prev = conn;
  l->pending = conn;
  l->npending++;
}

/* Closes an accepted socket because max_handshakes are already running. */
static void listener_reject(fedc_listener *l, fedc_conn *conn)
{
  l->stats.rejected_busy++;
  /* Logging every power of two bounds the log during a flood. */
  if ((l->stats.rejected_busy & (l->stats.rejected_busy - 1)) == 0)
    fedc_warn("net", "rejected connection peer=%s: %" PRIu32 " handshakes "
              "running, the maximum (%" PRIu64 " rejected so far)",
              fedc_conn_peer(conn), l->npending, l->stats.rejected_busy);
  fedc__conn_discard(conn);
}

static void listener_on_connection(uv_stream_t *server, int status)
{
  fedc_listener *l = server->data;
  fedc_conn *conn;

  if (status < 0) {
    fedc_warn("net", "accept failed on %s: %s", l->addr, uv_strerror(status));
    return;
  }
  conn = fedc__conn_new_server(l->loop, &l->opts.conn, &l->cbs, l->data);
  if (conn == NULL) {
    /* NOTE: libuv stops watching the listening socket until the next
     * uv_accept(), so after this the listener accepts nothing more. */
    fedc_error("net", "out of memory for a connection on %s", l->addr);
    return;
  }

  status = uv_accept(server, (uv_stream_t *)&conn->tcp);
  if (status < 0) {
    fedc_warn("net", "accept failed on %s: %s", l->addr, uv_strerror(status));
    fedc__conn_discard(conn);
    return;
  }
  l->stats.accepted++;
  fedc__conn_read_peer_address(conn);
  if (l->npending >= l->opts.max_handshakes) {
    listener_reject(l, conn);
    return;
  }
  listener_link(l, conn);
  fedc__conn_start_handshake(conn, l->ctx);
}

/* --- Lifetime ------------------------------------------------------------ */

static void listener_set_options(fedc_listener *l,
                                 const fedc_listener_options *opts)
{
  if (opts != NULL)
    l->opts = *opts;
  if (l->opts.backlog <= 0)
    l->opts.backlog = DEFAULT_BACKLOG;
  if (l->opts.max_handshakes == 0)
    l->opts.max_handshakes = DEFAULT_MAX_HANDSHAKES;
  l->opts.conn.server_name = NULL;
}

static void listener_on_closed(uv_handle_t *handle)
{
  free(handle->data);
}

/* Binds and listens, then stores the bound port and address. */
static int listener_bind(fedc_listener *l, const char *host,
                         const struct sockaddr *addr)
{
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  int rc;

  rc = uv_tcp_bind(&l->tcp, addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&l->tcp, l->opts.backlog,
                   listener_on_connection);
  if (rc == 0)
    rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len);
  if (rc < 0) {
    fedc_error("net", "failed to listen on %s: %s", l->addr, uv_strerror(rc));
    return FEDC_EIO;
  }

  l->port = bound.ss_family == AF_INET6
                ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  snprintf(l->addr, sizeof(l->addr),
           bound.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
           (unsigned)l->port);
  return 0;
}

int fedc_listener_new(uv_loop_t *loop, SSL_CTX *ctx, const char *host,
                      uint16_t port, const fedc_listener_options *opts,
                      const fedc_conn_callbacks *cbs, void *data,
                      fedc_listener **out)
{
  struct sockaddr_storage addr;
  fedc_listener *l;
  int rc;

  *out = NULL;
  if (host == NULL ||
      (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
       uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)) {
    fedc_error("net", "invalid listen address host=%s: expected an IPv4 or "
               "IPv6 literal such as 0.0.0.0 or ::", host != NULL ? host : "");
    return FEDC_EINVAL;
  }
  l = calloc(1, sizeof(*l));
  if (l == NULL)
    return FEDC_ENOMEM;
  l->loop = loop;
  l->cbs = *cbs;
  l->data = data;
  listener_set_options(l, opts);
  snprintf(l->addr, sizeof(l->addr),
           strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host,
           (unsigned)port);

  uv_tcp_init(loop, &l->tcp);
  l->tcp.data = l;
  rc = listener_bind(l, host, (const struct sockaddr *)&addr);
  if (rc < 0) {
    uv_close((uv_handle_t *)&l->tcp, listener_on_closed);
    return rc;
  }
  SSL_CTX_up_ref(ctx);
  l->ctx = ctx;
  fedc_info("net", "listening on %s", l->addr);
  *out = l;
  return 0;
}

uint16_t fedc_listener_port(const fedc_listener *listener)
{
  return listener->port;
}

void fedc_listener_set_tls_ctx(fedc_listener *listener, SSL_CTX *ctx)
{
  SSL_CTX_up_ref(ctx);
  SSL_CTX_free(listener->ctx);
  listener->ctx = ctx;
}

void fedc_listener_get_stats(const fedc_listener *listener,
                             fedc_listener_stats *out)
{
  *out = listener->stats;
}

void fedc_listener_free(fedc_listener **listener)
{
  fedc_listener *l;
  fedc_conn *conn;

  if (listener == NULL || *listener == NULL)
    return;
  l = *listener;
  *listener = NULL;

  while (l->pending != NULL) {
    conn = l->pending;
    fedc__listener_unlink(l, conn);
    fedc__conn_abort(conn);
  }
  listener_log_skipped(l);
  fedc_tls_ctx_free(&l->ctx);
  fedc_info("net", "stopped listening on %s", l->addr);
  uv_close((uv_handle_t *)&l->tcp, listener_on_closed);
}
