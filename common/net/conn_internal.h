/* Internals shared by conn.c and listener.c. No other module includes this.
 *
 * A server-side connection is on its listener's pending list from accept
 * until its handshake ends. listener.c owns the list and the counters, and
 * conn.c reports each outcome through the fedc__listener_* calls. */
#ifndef FEDC_NET_CONN_INTERNAL_H
#define FEDC_NET_CONN_INTERNAL_H

#include <stdbool.h>

#include "net/conn.h"
#include "net/frame.h"
#include "net/listener.h"
#include "net/tls.h"

/* Room for "[" INET6_ADDRSTRLEN "]:65535" or a host name and port. */
#define FEDC__PEER_SIZE 300
#define FEDC__HOST_SIZE 256

/* Source key of a server connection for max_handshakes_per_ip: a family
 * byte, then 4 bytes of IPv4 address or the first 8 bytes of IPv6. */
#define FEDC__SOURCE_SIZE 9

enum fedc__conn_state {
  CONN_RESOLVING,   /* client: waiting for getaddrinfo */
  CONN_CONNECTING,  /* client: waiting for the TCP connect */
  CONN_HANDSHAKE,   /* TLS handshake running */
  CONN_OPEN,        /* frames flow; the application has seen on_open */
  CONN_CLOSING,     /* flushing, shutting down or closing handles */
};

struct fedc_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;             /* handshake timeout, close timeout, resume */
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  uv_getaddrinfo_t resolve_req;
  uv_loop_t *loop;

  SSL *ssl;
  fedc_frame_decoder decoder;
  fedc_conn_callbacks cbs;
  void *data;

  enum fedc__conn_state state;
  bool is_server;
  bool app_owned;               /* on_close is due to the application */
  bool paused;
  bool handles_closing;
  bool draining;                /* closing: reads are dropped until EOF */
  bool shut_down;               /* closing: our TCP shutdown finished */
  int refs;                     /* open handles and running requests */
  enum fedc_conn_close_reason reason;
  int err;

  uint32_t max_frame;
  uint32_t initial_max_frame;
  uint64_t handshake_timeout_ms;
  uint64_t close_timeout_ms;

  /* Plaintext decrypted but not yet framed, kept while paused. */
  uint8_t *stash;
  size_t stash_len;
  size_t stash_off;

  size_t queued;
  fedc_conn_stats stats;

  /* Client: the host to resolve and the addresses left to try. */
  char host[FEDC__HOST_SIZE];
  uint16_t port;
  struct addrinfo *addrs;
  struct addrinfo *next_addr;

  /* Server: the listener while the handshake runs, its pending list, and
   * the source key. */
  fedc_listener *listener;
  fedc_conn *prev;
  fedc_conn *next;
  uint8_t source[FEDC__SOURCE_SIZE];

  char peer[FEDC__PEER_SIZE];
  char identity[FEDC_TLS_IDENTITY_SIZE];
};

/* Allocates a server-side connection with its handles initialized, ready
 * for uv_tcp_open() of an accepted socket on &conn->tcp. Returns NULL when
 * out of memory. */
fedc_conn *fedc__conn_new_server(uv_loop_t *loop, const fedc_conn_options *opts,
                                 const fedc_conn_callbacks *cbs, void *data);

/* Closes a connection that never started its handshake, without calling
 * on_close. */
void fedc__conn_discard(fedc_conn *conn);

/* Stores the socket's peer address in conn->peer. */
void fedc__conn_read_peer_address(fedc_conn *conn);

/* Starts the server side of the TLS handshake with ctx under the handshake
 * timeout. The listener links conn into its pending list first. */
void fedc__conn_start_handshake(fedc_conn *conn, SSL_CTX *ctx);

/* Closes a connection whose handshake is still running, after the
 * listener has unlinked it. */
void fedc__conn_abort(fedc_conn *conn);

/* Removes conn from the pending list of l and clears conn->listener. */
void fedc__listener_unlink(fedc_listener *l, fedc_conn *conn);

/* Counts a completed handshake and unlinks conn. */
void fedc__listener_handshake_done(fedc_listener *l, fedc_conn *conn);

/* Counts a handshake that ended for reason. */
void fedc__listener_handshake_failed(fedc_listener *l,
                                     enum fedc_conn_close_reason reason);

/* Returns 1 if one more failed handshake may be logged now, else 0 (the
 * failure is then counted in a later summary line). */
int fedc__listener_may_log(fedc_listener *l);

#endif
