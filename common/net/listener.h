/* Accepting fedc connections: a TCP listener that runs the server side of
 * the TLS handshake on each accepted socket, under the handshake timeout,
 * and hands only verified connections to the application through on_open.
 *
 * A connection that fails before on_open (not TLS, no or a wrong client
 * certificate, no ALPN, timeout, the peer left) is closed, logged with its
 * peer address and counted in fedc_listener_stats, and on_open is never
 * called for it. When many fail at once, the log keeps the first few per
 * second and a summary line of how many it left out. A source address with
 * max_handshakes_per_ip handshakes running gets its next connection closed
 * at once, so that one host cannot take every handshake slot.
 *
 * Every function here must be called on the thread that runs the loop. */
#ifndef FEDC_NET_LISTENER_H
#define FEDC_NET_LISTENER_H

#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "net/conn.h"

typedef struct fedc_listener fedc_listener;

/* Listener settings; a zero field selects its default. */
typedef struct fedc_listener_options {
  fedc_conn_options conn;     /* for every accepted connection */
  int backlog;                /* listen(2) backlog; default 511 */
  uint32_t max_handshakes;    /* concurrent handshakes; default 1024 */

  /* Concurrent handshakes from one source, default 16: an IPv4 address,
   * or the /64 prefix of an IPv6 address since one host often has a whole
   * /64. UINT32_MAX turns the limit off. */
  uint32_t max_handshakes_per_ip;
} fedc_listener_options;

/* Listener counters. Each accepted connection ends in exactly one of
 * established, rejected_busy, rejected_per_ip and the failed_* fields, or
 * is still in its handshake. */
typedef struct fedc_listener_stats {
  uint64_t accepted;          /* TCP connections accepted */
  uint64_t established;       /* handshakes completed and passed to on_open */
  uint64_t rejected_busy;     /* closed because max_handshakes were running */
  uint64_t rejected_per_ip;   /* closed because its source had
                                 max_handshakes_per_ip running */
  uint64_t failed_tls;        /* handshake failed: bad certificate, not TLS */
  uint64_t failed_timeout;    /* handshake did not finish in time */
  uint64_t failed_io;         /* peer closed or reset, or a socket error,
                                 during the handshake */

  /* accept(2) failures. With no file descriptor left (EMFILE, ENFILE) the
   * listener stops accepting for a moment and retries, and new connections
   * wait in the kernel's backlog meanwhile. */
  uint64_t accept_no_fd;      /* accept(2) failed with EMFILE or ENFILE */
  uint64_t accept_failed;     /* any other accept(2) or setup failure */
} fedc_listener_stats;

/* Binds host (an IPv4 or IPv6 literal, such as "127.0.0.1", "::" or
 * "0.0.0.0") and port (0 picks a free port; see fedc_listener_port()), and
 * starts accepting. ctx is a FEDC_TLS_SERVER context; the listener takes
 * its own reference. opts may be NULL. Each established connection gets a
 * copy of cbs and data as its context pointer, and cbs->on_open is called;
 * on_open may replace the context with fedc_conn_set_data(). Returns 0,
 * FEDC_EINVAL for a host that is not an IP literal, FEDC_EIO when bind or
 * listen fails (logged with the address and reason), or FEDC_ENOMEM. */
int fedc_listener_new(uv_loop_t *loop, SSL_CTX *ctx, const char *host,
                      uint16_t port, const fedc_listener_options *opts,
                      const fedc_conn_callbacks *cbs, void *data,
                      fedc_listener **out);

/* Returns the bound TCP port. */
uint16_t fedc_listener_port(const fedc_listener *listener);

/* Makes new connections use ctx (for example after fedc_tls_ctx_reload()
 * on SIGHUP). The listener takes a reference to ctx and drops its reference
 * to the previous context; connections already accepted keep theirs. */
void fedc_listener_set_tls_ctx(fedc_listener *listener, SSL_CTX *ctx);

/* Copies the listener's counters to *out. */
void fedc_listener_get_stats(const fedc_listener *listener,
                             fedc_listener_stats *out);

/* Stops accepting, closes the connections still in their handshake and sets
 * *listener to NULL. Established connections stay open. The memory is
 * freed from the loop, so the loop must run afterwards. Accepts NULL and a
 * pointer to NULL. */
void fedc_listener_free(fedc_listener **listener);

#endif
