/* Framed TLS connections on a libuv loop.
 *
 * Each connection is one uv_tcp_t whose bytes pass through an OpenSSL object
 * with two memory BIOs, so no socket ever blocks and no thread is spent per
 * connection. A client connection (fedc_conn_connect()) resolves a host,
 * connects and runs the TLS handshake under one timeout; the server side
 * comes from a listener (net/listener.h).
 *
 * Threading: every function here must be called on the thread that runs the
 * connection's loop.
 *
 * Lifecycle: the library owns every fedc_conn and frees it after calling
 * on_close. The application receives a connection from fedc_conn_connect() or
 * from a listener's on_open. From then on on_close is called exactly once
 * for it, and the pointer is invalid after on_close returns. A server-side connection
 * that fails before its handshake completes is logged and counted in the
 * listener's statistics, and the application never sees it.
 *
 * Bad input from a peer (bytes that are not TLS, a certificate from another
 * CA, a TLS alert, a frame above the maximum, a payload that is not an
 * Envelope) closes only that connection, with a log line naming the peer
 * address, the identity if known and the reason. */
#ifndef FEDC_NET_CONN_H
#define FEDC_NET_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "fedc.pb-c.h"

typedef struct fedc_conn fedc_conn;

/* Reason a connection closed. */
enum fedc_conn_close_reason {
  FEDC_CONN_CLOSE_LOCAL,     /* fedc_conn_close() or fedc_listener_free() */
  FEDC_CONN_CLOSE_PEER,      /* the peer closed: TCP EOF or TLS close_notify */
  FEDC_CONN_CLOSE_TLS,       /* handshake or record error, or a TLS alert */
  FEDC_CONN_CLOSE_TOO_BIG,   /* a frame above the limit, or one that needs more
                             * memory to decode than its size allows */
  FEDC_CONN_CLOSE_PROTOCOL,  /* a zero-length frame or an invalid Envelope */
  FEDC_CONN_CLOSE_TIMEOUT,   /* connect and handshake exceeded the timeout */
  FEDC_CONN_CLOSE_IO,        /* resolve, connect or socket error, or no memory */
};

/* Returns a short lower-case name for reason, e.g. "too_big". */
const char *fedc_conn_close_reason_name(enum fedc_conn_close_reason reason);

/* Application callbacks. Each receives the connection; the context pointer
 * set with fedc_conn_set_data() is available through fedc_conn_data(). Any
 * callback may call fedc_conn_send() or fedc_conn_close() on its own
 * connection, or on another one. A listener passes the same table to every
 * connection it accepts. */
typedef struct fedc_conn_callbacks {
  /* The handshake completed and the peer identity is known. */
  void (*on_open)(fedc_conn *conn);

  /* One frame arrived. The callee takes ownership of env and releases it
   * with fedc_frame_envelope_free(). No further frames are delivered after
   * fedc_conn_close() or fedc_conn_pause(). */
  void (*on_frame)(fedc_conn *conn, Fedc__Envelope *env);

  /* Optional: the send queue became empty (see fedc_conn_queued_bytes()). */
  void (*on_drain)(fedc_conn *conn);

  /* The connection is gone. err is 0 for FEDC_CONN_CLOSE_LOCAL and
   * otherwise the FEDC_E* code behind reason. conn is freed after this
   * returns. */
  void (*on_close)(fedc_conn *conn, enum fedc_conn_close_reason reason,
                   int err);
} fedc_conn_callbacks;

/* Per-connection settings; a zero field selects its default. */
typedef struct fedc_conn_options {
  /* Largest frame payload accepted from the peer and sent to it, in bytes;
   * default FEDC_FRAME_DEFAULT_MAX. */
  uint32_t max_frame;

  /* Largest frame payload accepted from the peer until the application
   * calls fedc_conn_raise_frame_limit(), in bytes; default (and at most)
   * max_frame. A server keeps it small until the peer has identified
   * itself, so that an unknown peer cannot make it buffer and decode a
   * large frame. */
  uint32_t initial_max_frame;

  /* Time allowed from the start of the connection to the end of the TLS
   * handshake, in milliseconds (default 10000). The start is the TCP accept
   * on a server and the start of name resolution on a client. */
  uint64_t handshake_timeout_ms;

  /* Time in milliseconds allowed after a close for queued bytes to reach
   * the peer. After fedc_conn_close() of an open connection it also bounds
   * the wait for the peer to close its side. Default 5000. */
  uint64_t close_timeout_ms;

  /* Client only: the DNS name or IP literal that the server certificate
   * must match; default the host passed to fedc_conn_connect(). */
  const char *server_name;
} fedc_conn_options;

/* Byte and frame counters of one connection. */
typedef struct fedc_conn_stats {
  uint64_t wire_bytes_sent;       /* TLS bytes the socket accepted */
  uint64_t wire_bytes_received;   /* TLS bytes read from the socket */
  uint64_t frames_sent;
  uint64_t frames_received;
  uint64_t frame_bytes_sent;      /* headers and payloads of frames sent */
  uint64_t frame_bytes_received;  /* headers and payloads of frames received */
} fedc_conn_stats;

/* Starts a client connection to host (a DNS name or an IP literal) and
 * port. The server is verified against ctx, a FEDC_TLS_CLIENT context of
 * which the connection takes its own reference. opts may be NULL, cbs is
 * copied, and data becomes the connection's context pointer.
 *
 * Returns 0 and stores the connection in *out, which fedc_conn_close() may
 * close at any time. Later either on_open and then on_close are called, or
 * on_close alone if resolve, connect or the handshake fails. Returns
 * FEDC_EINVAL or FEDC_ENOMEM, and calls nothing, if the connection cannot
 * be started. */
int fedc_conn_connect(uv_loop_t *loop, SSL_CTX *ctx, const char *host,
                      uint16_t port, const fedc_conn_options *opts,
                      const fedc_conn_callbacks *cbs, void *data,
                      fedc_conn **out);

/* Serializes env into one frame and queues it for sending. Returns 0,
 * FEDC_ECLOSED if the connection is not open, FEDC_ETOOBIG if the payload
 * is above max_frame, FEDC_EINVAL for an Envelope without a body, or
 * FEDC_ENOMEM. A failure to encrypt or queue closes the connection and
 * returns FEDC_ETLS or FEDC_EIO. */
int fedc_conn_send(fedc_conn *conn, const Fedc__Envelope *env);

/* Queues an already serialized Envelope of len bytes as one frame, so that
 * one message can be packed once for many connections. Returns as
 * fedc_conn_send(), with FEDC_EINVAL for len 0. */
int fedc_conn_send_payload(fedc_conn *conn, const uint8_t *payload,
                           size_t len);

/* Returns the number of encrypted bytes handed to the socket and not yet
 * written. A sender that streams large data keeps this under its own limit
 * and continues from on_drain. */
size_t fedc_conn_queued_bytes(const fedc_conn *conn);

/* Stops delivering frames and reading from the socket. Frames already
 * decrypted wait in the connection. Safe inside on_frame: no further frame
 * is delivered after it returns. */
void fedc_conn_pause(fedc_conn *conn);

/* Resumes reading after fedc_conn_pause(). Waiting frames are delivered from
 * the loop, not from inside this call. */
void fedc_conn_resume(fedc_conn *conn);

/* Starts closing: sends TLS close_notify after the queued frames, waits up
 * to close_timeout_ms for them to reach the peer and for the peer to close
 * its side, reading and dropping what it still sends, then calls on_close
 * with FEDC_CONN_CLOSE_LOCAL. Calling it again, or on a connection that is
 * already closing, does nothing. */
void fedc_conn_close(fedc_conn *conn);

/* Raises the limit on frames received from initial_max_frame to
 * max_frame. It applies from the next frame on, also inside on_frame. */
void fedc_conn_raise_frame_limit(fedc_conn *conn);

/* Sets the application's context pointer for this connection. */
void fedc_conn_set_data(fedc_conn *conn, void *data);

/* Returns the application's context pointer. */
void *fedc_conn_data(const fedc_conn *conn);

/* Returns 1 between on_open and the start of closing, else 0. */
int fedc_conn_is_open(const fedc_conn *conn);

/* Returns the peer address as "ADDR:PORT" or "[ADDR]:PORT" for IPv6, or
 * "HOST:PORT" from fedc_conn_connect() before the host is resolved. */
const char *fedc_conn_peer(const fedc_conn *conn);

/* Returns the subject CN of the peer certificate (the client id on the
 * server side), or "" before on_open or when the server certificate has no
 * CN. */
const char *fedc_conn_identity(const fedc_conn *conn);

/* Copies the connection's counters to *out. */
void fedc_conn_get_stats(const fedc_conn *conn, fedc_conn_stats *out);

#endif
