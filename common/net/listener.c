#include "net/listener.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/conn_internal.h"
#include "util/error.h"
#include "util/log.h"

#define DEFAULT_BACKLOG 511
#define DEFAULT_MAX_HANDSHAKES 1024
#define DEFAULT_MAX_HANDSHAKES_PER_IP 16

/* At most LOG_BURST failed handshakes are logged per LOG_WINDOW_MS. */
#define LOG_BURST 20
#define LOG_WINDOW_MS 1000

/* Connections accepted per readiness event, so that a flood on the
 * listening socket leaves the loop time for the other handles. */
#define ACCEPT_BATCH 64

/* Pause after accept(2) found no free file descriptor. */
#define ACCEPT_RETRY_MS 100

/* The listener accepts with its own accept4(2) on a uv_poll_t instead of
 * uv_listen(). On EMFILE, libuv's uv_listen() (uv__emfile_trick() in
 * src/unix/stream.c) accepts and closes every waiting connection without
 * calling the connection callback, so the server could neither log nor
 * count it. Here the failure is logged and counted, and waiting
 * connections stay in the backlog until descriptors free up. */
struct fedc_listener {
  uv_poll_t poll;               /* readable: connections to accept */
  uv_timer_t retry;             /* restarts polling after ACCEPT_RETRY_MS */
  int fd;                       /* the listening socket */
  int open_handles;             /* freed when both handles are closed */
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

  bool out_of_fds;              /* accepting paused for lack of descriptors */
  uint64_t out_of_fds_since_ms;
  uint64_t out_of_fds_failures; /* failed accepts in the current pause */

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
    l->stats.failed_io++;
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

/* Stores the key that max_handshakes_per_ip counts by. An IPv4-mapped IPv6
 * address (a dual-stack listener) counts as its IPv4 address. */
static void listener_source_key(const struct sockaddr_storage *addr,
                                uint8_t key[FEDC__SOURCE_SIZE])
{
  memset(key, 0, FEDC__SOURCE_SIZE);
  if (addr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;

    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      key[0] = 4;
      memcpy(key + 1, in6->sin6_addr.s6_addr + 12, 4);
    } else {
      key[0] = 6;
      memcpy(key + 1, in6->sin6_addr.s6_addr, 8);
    }
  } else if (addr->ss_family == AF_INET) {
    key[0] = 4;
    memcpy(key + 1, &((const struct sockaddr_in *)addr)->sin_addr, 4);
  }
}

/* Returns the number of handshakes running from the source of conn. The
 * scan is linear, at most max_handshakes short comparisons per accept. */
static uint32_t listener_count_source(const fedc_listener *l,
                                      const fedc_conn *conn)
{
  uint32_t n = 0;

  for (const fedc_conn *c = l->pending; c != NULL; c = c->next)
    n += memcmp(c->source, conn->source, FEDC__SOURCE_SIZE) == 0;
  return n;
}

/* Logging every power of two bounds the log during a flood. */
static int listener_should_log_reject(uint64_t count)
{
  return (count & (count - 1)) == 0;
}

/* Closes an accepted socket because max_handshakes are already running. */
static void listener_reject_busy(fedc_listener *l, fedc_conn *conn)
{
  l->stats.rejected_busy++;
  if (listener_should_log_reject(l->stats.rejected_busy))
    fedc_warn("net", "rejected connection peer=%s: %" PRIu32 " handshakes "
              "running, the maximum (%" PRIu64 " rejected so far)",
              fedc_conn_peer(conn), l->npending, l->stats.rejected_busy);
  fedc__conn_discard(conn);
}

/* Closes an accepted socket because its source has max_handshakes_per_ip
 * handshakes running. */
static void listener_reject_source(fedc_listener *l, fedc_conn *conn)
{
  l->stats.rejected_per_ip++;
  if (listener_should_log_reject(l->stats.rejected_per_ip))
    fedc_warn("net", "rejected connection peer=%s: %" PRIu32 " handshakes "
              "running from its address, the maximum per address "
              "(%" PRIu64 " rejected so far)", fedc_conn_peer(conn),
              l->opts.max_handshakes_per_ip, l->stats.rejected_per_ip);
  fedc__conn_discard(conn);
}

/* Takes ownership of fd, a socket accept4() returned with the peer address
 * addr, and starts its TLS handshake unless a limit rejects it. */
static void listener_start_conn(fedc_listener *l, int fd,
                                const struct sockaddr_storage *addr)
{
  fedc_conn *conn = fedc__conn_new_server(l->loop, &l->opts.conn, &l->cbs,
                                          l->data);
  int rc;

  if (conn == NULL) {
    l->stats.accept_failed++;
    fedc_error("net", "out of memory for a connection on %s", l->addr);
    close(fd);
    return;
  }
  rc = uv_tcp_open(&conn->tcp, fd);
  if (rc < 0) {
    l->stats.accept_failed++;
    fedc_warn("net", "failed to set up an accepted socket on %s: %s",
              l->addr, uv_strerror(rc));
    close(fd);
    fedc__conn_discard(conn);
    return;
  }

  l->stats.accepted++;
  fedc__conn_read_peer_address(conn);
  listener_source_key(addr, conn->source);
  if (l->npending >= l->opts.max_handshakes) {
    listener_reject_busy(l, conn);
    return;
  }
  if (listener_count_source(l, conn) >= l->opts.max_handshakes_per_ip) {
    listener_reject_source(l, conn);
    return;
  }
  listener_link(l, conn);
  fedc__conn_start_handshake(conn, l->ctx);
}

static void listener_on_poll(uv_poll_t *handle, int status, int events);

static void listener_on_retry(uv_timer_t *timer)
{
  fedc_listener *l = timer->data;

  uv_poll_start(&l->poll, UV_READABLE, listener_on_poll);
}

/* Stops accepting for ACCEPT_RETRY_MS after accept(2) found no free file
 * descriptor. The first failure of a pause is logged as an error. */
static void listener_pause_no_fd(fedc_listener *l, int err)
{
  struct rlimit limit;

  l->stats.accept_no_fd++;
  if (!l->out_of_fds) {
    l->out_of_fds = true;
    l->out_of_fds_since_ms = uv_now(l->loop);
    l->out_of_fds_failures = 0;
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0)
      limit.rlim_cur = 0;
    fedc_error("net", "cannot accept connections on %s: %s (open file "
               "limit %llu); new connections wait in the backlog and "
               "accepting is retried every %d ms. Raise the limit (ulimit "
               "-n, LimitNOFILE=) or lower max_handshakes", l->addr,
               strerror(err), (unsigned long long)limit.rlim_cur,
               ACCEPT_RETRY_MS);
  }
  l->out_of_fds_failures++;
  uv_poll_stop(&l->poll);
  uv_timer_start(&l->retry, listener_on_retry, ACCEPT_RETRY_MS, 0);
}

/* Logs the end of a pause for lack of file descriptors. */
static void listener_resume_logged(fedc_listener *l)
{
  if (!l->out_of_fds)
    return;
  l->out_of_fds = false;
  fedc_info("net", "accepting connections on %s again after %" PRIu64
            " ms without free file descriptors (%" PRIu64 " failed "
            "accepts)", l->addr, uv_now(l->loop) - l->out_of_fds_since_ms,
            l->out_of_fds_failures);
}

/* Accepts one connection. Returns 1 to go on, 0 when none is waiting or
 * accepting is paused. */
static int listener_accept_one(fedc_listener *l)
{
  struct sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  int fd = accept4(l->fd, (struct sockaddr *)&addr, &len,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);

  if (fd >= 0) {
    listener_resume_logged(l);
    listener_start_conn(l, fd, &addr);
    return 1;
  }
  switch (errno) {
  case EAGAIN:
#if EWOULDBLOCK != EAGAIN
  case EWOULDBLOCK:
#endif
    return 0;
  case EINTR:
  case ECONNABORTED:
    return 1;
  case EMFILE:
  case ENFILE:
    listener_pause_no_fd(l, errno);
    return 0;
  default:
    l->stats.accept_failed++;
    fedc_warn("net", "accept failed on %s: %s", l->addr, strerror(errno));
    return 0;
  }
}

static void listener_on_poll(uv_poll_t *handle, int status, int events)
{
  fedc_listener *l = handle->data;

  if (status < 0) {
    l->stats.accept_failed++;
    fedc_error("net", "polling the listening socket %s failed: %s", l->addr,
               uv_strerror(status));
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->retry, listener_on_retry, ACCEPT_RETRY_MS, 0);
    return;
  }
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    if (!listener_accept_one(l))
      break;
  }
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
  if (l->opts.max_handshakes_per_ip == 0)
    l->opts.max_handshakes_per_ip = DEFAULT_MAX_HANDSHAKES_PER_IP;
  l->opts.conn.server_name = NULL;
}

static void listener_on_closed(uv_handle_t *handle)
{
  fedc_listener *l = handle->data;

  if (--l->open_handles == 0)
    free(l);
}

/* Closes the socket at once, as uv_close() does for a uv_tcp_t, so that
 * the port is free when this returns. uv_close() has stopped the poll
 * handle's watcher by then. */
static void listener_close_handles(fedc_listener *l)
{
  if (l->open_handles == 2)
    uv_close((uv_handle_t *)&l->poll, listener_on_closed);
  if (l->fd >= 0)
    close(l->fd);
  l->fd = -1;
  uv_close((uv_handle_t *)&l->retry, listener_on_closed);
}

/* Opens, binds and listens on a socket in l->fd. Returns 0 or the errno
 * value of the failed call. */
static int listener_open_socket(fedc_listener *l, const struct sockaddr *addr)
{
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
  int on = 1;

  l->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 0);
  if (l->fd < 0)
    return errno;
  /* As uv_tcp_bind() does: a restarted server can bind at once although
   * connections of the old one linger in TIME_WAIT. */
  if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
      bind(l->fd, addr, len) < 0 || listen(l->fd, l->opts.backlog) < 0)
    return errno;
  return 0;
}

/* Binds and listens, starts polling, then stores the bound port and
 * address. */
static int listener_bind(fedc_listener *l, const char *host,
                         const struct sockaddr *addr)
{
  struct sockaddr_storage bound;
  socklen_t len = sizeof(bound);
  int err = listener_open_socket(l, addr);
  int rc = 0;

  if (err == 0 && getsockname(l->fd, (struct sockaddr *)&bound, &len) < 0)
    err = errno;
  if (err != 0) {
    fedc_error("net", "failed to listen on %s: %s", l->addr, strerror(err));
    return FEDC_EIO;
  }
  rc = uv_poll_init_socket(l->loop, &l->poll, l->fd);
  if (rc < 0) {
    fedc_error("net", "failed to watch %s: %s", l->addr, uv_strerror(rc));
    return FEDC_EIO;
  }
  l->poll.data = l;
  l->open_handles++;
  uv_poll_start(&l->poll, UV_READABLE, listener_on_poll);

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
  l->fd = -1;
  l->loop = loop;
  l->cbs = *cbs;
  l->data = data;
  listener_set_options(l, opts);
  snprintf(l->addr, sizeof(l->addr),
           strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host,
           (unsigned)port);

  uv_timer_init(loop, &l->retry);
  l->retry.data = l;
  l->open_handles = 1;
  rc = listener_bind(l, host, (const struct sockaddr *)&addr);
  if (rc < 0) {
    listener_close_handles(l);
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
  listener_close_handles(l);
}
