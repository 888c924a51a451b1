#include "net/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "util/error.h"
#include "util/log.h"

/* FEDC_TLS_ALPN in the wire format of ALPN: a length byte, then the id. */
static const unsigned char alpn_wire[] = "\x06" FEDC_TLS_ALPN;
#define ALPN_WIRE_LEN (sizeof(alpn_wire) - 1)

/* Longest accepted certificate chain below the CA. */
#define TLS_VERIFY_DEPTH 4

/* Logs why loading `what` from path failed and clears the error queue. */
static int tls_load_failed(const char *what, const char *path)
{
  char reason[256];

  fedc_tls_describe_error(NULL, reason, sizeof(reason));
  fedc_error("tls", "failed to load %s file=%s: %s", what, path, reason);
  return FEDC_ETLS;
}

/* Warns when a private key file is readable by group or others. */
static void tls_check_key_mode(const char *path)
{
  struct stat st;

  if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
    fedc_warn("tls", "private key file=%s is readable by other users "
              "(mode %03o); run chmod 600 on it", path,
              (unsigned)(st.st_mode & 0777));
}

/* Server side of ALPN: selects FEDC_TLS_ALPN from the client's list or
 * fails the handshake with a no_application_protocol alert. */
static int tls_select_alpn(SSL *ssl, const unsigned char **out,
                           unsigned char *outlen, const unsigned char *in,
                           unsigned int inlen, void *arg)
{
  unsigned int i = 0;

  while (i < inlen) {
    unsigned int len = in[i];

    if (len > inlen - i - 1)
      break;
    if (len == ALPN_WIRE_LEN - 1 &&
        memcmp(in + i + 1, alpn_wire + 1, len) == 0) {
      *out = in + i + 1;
      *outlen = (unsigned char)len;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Loads the endpoint's certificate chain and key, if configured. */
static int tls_load_identity(SSL_CTX *ctx, enum fedc_tls_role role,
                             const fedc_tls_config *cfg)
{
  if (cfg->cert_path == NULL && cfg->key_path == NULL &&
      role == FEDC_TLS_CLIENT)
    return 0;
  if (cfg->cert_path == NULL || cfg->key_path == NULL) {
    fedc_error("tls", "missing %s path: set both the certificate and the key",
               cfg->cert_path == NULL ? "certificate" : "private key");
    return FEDC_EINVAL;
  }

  if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_path) != 1)
    return tls_load_failed("certificate", cfg->cert_path);
  tls_check_key_mode(cfg->key_path);
  if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_path, SSL_FILETYPE_PEM) != 1)
    return tls_load_failed("private key", cfg->key_path);
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    fedc_error("tls", "private key file=%s does not match certificate file=%s",
               cfg->key_path, cfg->cert_path);
    return FEDC_ETLS;
  }
  return 0;
}

/* Loads the CA that signs peers and sets who must present a certificate. */
static int tls_load_ca(SSL_CTX *ctx, enum fedc_tls_role role,
                       const fedc_tls_config *cfg)
{
  STACK_OF(X509_NAME) *names;

  if (cfg->ca_path == NULL) {
    fedc_error("tls", "missing CA certificate path");
    return FEDC_EINVAL;
  }
  if (SSL_CTX_load_verify_locations(ctx, cfg->ca_path, NULL) != 1)
    return tls_load_failed("CA certificate", cfg->ca_path);
  SSL_CTX_set_verify_depth(ctx, TLS_VERIFY_DEPTH);

  if (role == FEDC_TLS_CLIENT) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return 0;
  }

  /* The CertificateRequest names the acceptable CAs. */
  names = SSL_load_client_CA_file(cfg->ca_path);
  if (names == NULL)
    return tls_load_failed("CA certificate", cfg->ca_path);
  SSL_CTX_set_client_CA_list(ctx, names);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     NULL);
  return 0;
}

/* Sets what both roles share: the protocol version, modes and ALPN. */
static int tls_set_protocol(SSL_CTX *ctx, enum fedc_tls_role role)
{
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
    return FEDC_ETLS;

  /* Idle connections give their 34 KiB record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  if (role == FEDC_TLS_CLIENT) {
    /* Unlike every other OpenSSL setter, this one returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(ctx, alpn_wire, ALPN_WIRE_LEN) != 0)
      return FEDC_ETLS;
    return 0;
  }

  /* fedc never resumes sessions, so the server sends no tickets. */
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, tls_select_alpn, NULL);
  return 0;
}

int fedc_tls_ctx_new(enum fedc_tls_role role, const fedc_tls_config *cfg,
                     SSL_CTX **out)
{
  SSL_CTX *ctx;
  int rc;

  *out = NULL;
  ctx = SSL_CTX_new(role == FEDC_TLS_SERVER ? TLS_server_method()
                                            : TLS_client_method());
  if (ctx == NULL) {
    ERR_clear_error();
    return FEDC_ENOMEM;
  }

  rc = tls_set_protocol(ctx, role);
  if (rc == 0)
    rc = tls_load_identity(ctx, role, cfg);
  if (rc == 0)
    rc = tls_load_ca(ctx, role, cfg);
  if (rc < 0) {
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return rc;
  }
  *out = ctx;
  return 0;
}

int fedc_tls_ctx_reload(enum fedc_tls_role role, const fedc_tls_config *cfg,
                        SSL_CTX **ctx)
{
  SSL_CTX *fresh;
  int rc = fedc_tls_ctx_new(role, cfg, &fresh);

  if (rc < 0) {
    fedc_warn("tls", "reload failed, keeping the previous certificates: %s",
              fedc_strerror(rc));
    return rc;
  }
  SSL_CTX_free(*ctx);
  *ctx = fresh;
  fedc_info("tls", "reloaded certificates cert=%s ca=%s",
            cfg->cert_path != NULL ? cfg->cert_path : "(none)", cfg->ca_path);
  return 0;
}

void fedc_tls_ctx_free(SSL_CTX **ctx)
{
  if (ctx == NULL || *ctx == NULL)
    return;
  SSL_CTX_free(*ctx);
  *ctx = NULL;
}

/* Sets the name or address that the server certificate must match. */
static int tls_set_peer_name(SSL *ssl, const char *name)
{
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  unsigned char addr[sizeof(struct in6_addr)];

  if (inet_pton(AF_INET, name, addr) == 1 ||
      inet_pton(AF_INET6, name, addr) == 1)
    return X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1 ? 0 : FEDC_EINVAL;

  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, name) != 1 ||
      SSL_set_tlsext_host_name(ssl, name) != 1)
    return FEDC_EINVAL;
  return 0;
}

int fedc_tls_ssl_new(SSL_CTX *ctx, enum fedc_tls_role role,
                     const char *peer_name, SSL **out)
{
  SSL *ssl = NULL;
  BIO *rbio = NULL;
  BIO *wbio = NULL;
  int rc = FEDC_ENOMEM;

  *out = NULL;
  if (role == FEDC_TLS_CLIENT && (peer_name == NULL || *peer_name == '\0'))
    return FEDC_EINVAL;
  ssl = SSL_new(ctx);
  rbio = BIO_new(BIO_s_mem());
  wbio = BIO_new(BIO_s_mem());
  if (ssl == NULL || rbio == NULL || wbio == NULL)
    goto out;

  SSL_set_bio(ssl, rbio, wbio);
  rbio = NULL;
  wbio = NULL;
  if (role == FEDC_TLS_SERVER) {
    SSL_set_accept_state(ssl);
  } else {
    rc = tls_set_peer_name(ssl, peer_name);
    if (rc < 0)
      goto out;
    SSL_set_connect_state(ssl);
  }
  *out = ssl;
  ssl = NULL;
  rc = 0;

out:
  BIO_free(rbio);
  BIO_free(wbio);
  SSL_free(ssl);
  ERR_clear_error();
  return rc;
}

int fedc_tls_check_alpn(const SSL *ssl)
{
  const unsigned char *proto = NULL;
  unsigned int len = 0;

  SSL_get0_alpn_selected(ssl, &proto, &len);
  if (proto == NULL || len != ALPN_WIRE_LEN - 1 ||
      memcmp(proto, alpn_wire + 1, len) != 0)
    return FEDC_ETLS;
  return 0;
}

/* Accepts the characters that may appear in an identity. */
static int tls_identity_char_ok(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || strchr("._@:-", c) != NULL;
}

/* Copies a CN value to buf after checking its length and characters. */
static int tls_copy_identity(const unsigned char *cn, int len, char *buf,
                             size_t size)
{
  if (len <= 0 || (size_t)len >= size)
    return FEDC_EFORMAT;
  for (int i = 0; i < len; i++) {
    if (cn[i] == '\0' || !tls_identity_char_ok(cn[i]))
      return FEDC_EFORMAT;
  }
  memcpy(buf, cn, (size_t)len);
  buf[len] = '\0';
  return 0;
}

/* Returns a new reference to the peer certificate, or NULL. */
static X509 *tls_peer_certificate(const SSL *ssl)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  return SSL_get1_peer_certificate(ssl);
#else
  return SSL_get_peer_certificate(ssl);
#endif
}

int fedc_tls_peer_identity(const SSL *ssl, char *buf, size_t size)
{
  X509 *cert = tls_peer_certificate(ssl);
  X509_NAME *subject;
  unsigned char *utf8 = NULL;
  int index, len;
  int rc = FEDC_ENOENT;

  if (size > 0)
    buf[0] = '\0';
  if (cert == NULL)
    goto out;
  subject = X509_get_subject_name(cert);
  index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0)
    goto out;
  rc = FEDC_EFORMAT;
  if (X509_NAME_get_index_by_NID(subject, NID_commonName, index) >= 0)
    goto out;

  len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(
                                       X509_NAME_get_entry(subject, index)));
  if (len >= 0)
    rc = tls_copy_identity(utf8, len, buf, size);

out:
  OPENSSL_free(utf8);
  X509_free(cert);
  ERR_clear_error();
  return rc;
}

/* Returns OpenSSL's reason for err; system errors carry an errno. */
static const char *tls_reason(unsigned long err, char *buf, size_t size)
{
  const char *reason;

  if (err == 0)
    return "no OpenSSL error recorded";
#ifdef ERR_SYSTEM_ERROR
  if (ERR_SYSTEM_ERROR(err))
    return strerror_r(ERR_GET_REASON(err), buf, size);
#endif
  reason = ERR_reason_error_string(err);
  return reason != NULL ? reason : "unknown OpenSSL error";
}

void fedc_tls_describe_error(const SSL *ssl, char *buf, size_t size)
{
  char sysbuf[128];
  const char *reason = tls_reason(ERR_peek_error(), sysbuf, sizeof(sysbuf));
  long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

  if (verify != X509_V_OK)
    snprintf(buf, size, "%s (%s)", reason,
             X509_verify_cert_error_string(verify));
  else
    snprintf(buf, size, "%s", reason);
  ERR_clear_error();
}
