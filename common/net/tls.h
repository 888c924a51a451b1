/* TLS settings of fedc: TLS 1.3 only, mutual authentication against one
 * project CA, and ALPN "fedc/1" required on both sides.
 *
 * The server requires a client certificate signed by the configured CA with
 * extended key usage clientAuth, and the subject CN of that certificate is
 * the client id. The client verifies the server certificate against the same
 * CA and checks the server's DNS name or IP address against its
 * subjectAltName. deploy/make-certs makes matching development files.
 *
 * An SSL_CTX is reference-counted by OpenSSL and every SSL made from it holds
 * a reference, so replacing a context (fedc_tls_ctx_reload() on SIGHUP)
 * leaves established connections on the old one. */
#ifndef FEDC_NET_TLS_H
#define FEDC_NET_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* The one ALPN protocol id of this protocol version. */
#define FEDC_TLS_ALPN "fedc/1"

/* Buffer size for a peer identity: RFC 5280 caps a CN at 64 characters. */
#define FEDC_TLS_IDENTITY_SIZE 65

enum fedc_tls_role {
  FEDC_TLS_SERVER,
  FEDC_TLS_CLIENT,
};

/* PEM file paths. Both roles need all three, except that a client context
 * may leave cert_path and key_path NULL to connect without a certificate,
 * which a fedc server rejects. */
typedef struct fedc_tls_config {
  const char *cert_path;  /* this endpoint's certificate, then any chain */
  const char *key_path;   /* its private key */
  const char *ca_path;    /* CA certificate(s) that sign the peers */
} fedc_tls_config;

/* Builds a context for role from the files in cfg and stores it in *out.
 * Returns 0, FEDC_EINVAL for a missing path, or FEDC_ETLS when a file cannot
 * be loaded or the key does not match the certificate. Each failure is
 * logged with the file name and OpenSSL's reason. */
int fedc_tls_ctx_new(enum fedc_tls_role role, const fedc_tls_config *cfg,
                     SSL_CTX **out);

/* Builds a new context from cfg and, on success, releases *ctx and stores
 * the new one there; on failure *ctx is left unchanged. Connections that
 * already exist keep the context they were made with. Returns as
 * fedc_tls_ctx_new(). */
int fedc_tls_ctx_reload(enum fedc_tls_role role, const fedc_tls_config *cfg,
                        SSL_CTX **ctx);

/* Releases the caller's reference to *ctx and sets it to NULL. Accepts NULL
 * and a pointer to NULL. */
void fedc_tls_ctx_free(SSL_CTX **ctx);

/* Makes a connection object from ctx that reads and writes through two
 * memory BIOs (SSL_get_rbio() for bytes from the network, SSL_get_wbio() for
 * bytes to the network). For FEDC_TLS_CLIENT, peer_name is the server's DNS
 * name or IP literal that its certificate must match; a server passes NULL.
 * Returns 0, FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_tls_ssl_new(SSL_CTX *ctx, enum fedc_tls_role role,
                     const char *peer_name, SSL **out);

/* Returns 0 if the completed handshake negotiated ALPN FEDC_TLS_ALPN, or
 * FEDC_ETLS. A server checks this too, because OpenSSL skips ALPN
 * selection when a client offers no ALPN at all. */
int fedc_tls_check_alpn(const SSL *ssl);

/* Copies the subject CN of the peer certificate into buf; on the server
 * this is the client id. Returns 0, or FEDC_ENOENT when there is no peer
 * certificate or no CN. Returns FEDC_EFORMAT when the certificate has
 * several CNs, or a CN that is empty, does not fit in size bytes, or has a
 * character other than ASCII letters, digits and "._@:-". The identity goes
 * into log lines and file names, hence the short alphabet. */
int fedc_tls_peer_identity(const SSL *ssl, char *buf, size_t size);

/* Describes the failure of the last OpenSSL call on ssl in buf, including
 * the certificate verification error if there was one, and clears this
 * thread's OpenSSL error queue. ssl may be NULL. */
void fedc_tls_describe_error(const SSL *ssl, char *buf, size_t size);

#endif
