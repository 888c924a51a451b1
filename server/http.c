#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"

struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  fedc_http *owner;
  struct http_conn *prev, *next;
  char request[FEDC_HTTP_MAX_REQUEST];
  size_t len;
  char *response;
  int open_handles;          /* tcp and timer, until their close callbacks */
  int closing;
};

struct fedc_http {
  uv_tcp_t server;
  const fedc_metrics *metrics;
  fedc_http_refresh_fn refresh;
  void *refresh_data;
  struct http_conn *conns;
  int port;
  int open_handles;          /* server plus every connection not yet freed */
  int closing;
};

static void release_if_done(fedc_http *http)
{
  if (http->closing && http->open_handles == 0)
    free(http);
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
  struct http_conn *conn = handle->data;
  fedc_http *http = conn->owner;

  if (--conn->open_handles > 0)
    return;
  free(conn->response);
  free(conn);
  http->open_handles--;
  release_if_done(http);
}

static void conn_close(struct http_conn *conn)
{
  fedc_http *http = conn->owner;

  if (conn->closing)
    return;
  conn->closing = 1;
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    http->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  uv_close((uv_handle_t *)&conn->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&conn->timer, on_conn_handle_closed);
}

static void on_written(uv_write_t *req, int status)
{
  conn_close(req->data);
}

static int build_response(struct http_conn *conn, int status,
                          const char *reason, const char *body, size_t len)
{
  static const char head[] =
      "HTTP/1.0 %d %s\r\n"
      "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
      "Content-Length: %zu\r\n"
      "Connection: close\r\n\r\n";
  int n = snprintf(NULL, 0, head, status, reason, len);

  conn->response = malloc((size_t)n + len + 1);
  if (conn->response == NULL)
    return FEDC_ENOMEM;
  snprintf(conn->response, (size_t)n + 1, head, status, reason, len);
  memcpy(conn->response + n, body, len);
  return n + (int)len;
}

static int refresh_and_render(fedc_http *http, char **body, size_t *len)
{
  if (http->refresh != NULL)
    http->refresh(http->refresh_data);
  return fedc_metrics_render(http->metrics, body, len);
}

/* Picks the response for a complete request head and starts writing it. */
static void respond(struct http_conn *conn)
{
  char *body = NULL;
  size_t len = 0;
  int total;
  uv_buf_t buf;

  if (strncmp(conn->request, "GET ", 4) != 0) {
    total = build_response(conn, 405, "Method Not Allowed",
                           "only GET is supported\n", 22);
  } else if (strncmp(conn->request + 4, "/metrics ", 9) != 0 &&
             strncmp(conn->request + 4, "/metrics\r", 9) != 0) {
    total = build_response(conn, 404, "Not Found", "try /metrics\n", 13);
  } else if (refresh_and_render(conn->owner, &body, &len) < 0) {
    total = build_response(conn, 500, "Internal Server Error",
                           "out of memory\n", 14);
  } else {
    total = build_response(conn, 200, "OK", body, len);
  }
  free(body);
  if (total < 0) {
    conn_close(conn);
    return;
  }

  uv_read_stop((uv_stream_t *)&conn->tcp);
  uv_timer_stop(&conn->timer);
  buf = uv_buf_init(conn->response, (unsigned int)total);
  conn->write.data = conn;
  if (uv_write(&conn->write, (uv_stream_t *)&conn->tcp, &buf, 1,
               on_written) < 0)
    conn_close(conn);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  struct http_conn *conn = handle->data;

  /* One byte stays free for the terminating NUL. */
  *buf = uv_buf_init(conn->request + conn->len,
                     (unsigned int)(sizeof(conn->request) - 1 - conn->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct http_conn *conn = stream->data;

  if (nread < 0) {
    conn_close(conn);
    return;
  }
  conn->len += (size_t)nread;
  conn->request[conn->len] = '\0';
  if (strstr(conn->request, "\r\n\r\n") != NULL ||
      strstr(conn->request, "\n\n") != NULL) {
    respond(conn);
    return;
  }
  if (conn->len == sizeof(conn->request) - 1) {
    fedc_warn("http", "request head above %d bytes, dropping connection",
              FEDC_HTTP_MAX_REQUEST);
    conn_close(conn);
  }
}

static void on_idle_timeout(uv_timer_t *timer)
{
  conn_close(timer->data);
}

static void on_connection(uv_stream_t *server, int status)
{
  fedc_http *http = server->data;
  struct http_conn *conn;

  if (status < 0 || http->closing)
    return;
  conn = calloc(1, sizeof(*conn));
  if (conn == NULL)
    return;
  conn->owner = http;
  conn->tcp.data = conn;
  conn->timer.data = conn;
  uv_tcp_init(server->loop, &conn->tcp);
  uv_timer_init(server->loop, &conn->timer);
  conn->open_handles = 2;
  conn->next = http->conns;
  if (http->conns != NULL)
    http->conns->prev = conn;
  http->conns = conn;
  http->open_handles++;

  if (uv_accept(server, (uv_stream_t *)&conn->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) < 0) {
    conn_close(conn);
    return;
  }
  uv_timer_start(&conn->timer, on_idle_timeout, FEDC_HTTP_IDLE_MS, 0);
}

int fedc_http_parse_address(const char *address, char *host, size_t hostlen,
                            int *port)
{
  const char *colon = strrchr(address, ':');
  const char *start = address;
  size_t len;
  char *end = NULL;
  long value;

  if (colon == NULL)
    return FEDC_EINVAL;
  len = (size_t)(colon - address);
  if (address[0] == '[') {
    if (len < 2 || address[len - 1] != ']')
      return FEDC_EINVAL;
    start++;
    len -= 2;
  }
  if (len == 0 || len >= hostlen)
    return FEDC_EINVAL;
  value = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end != '\0' || value < 0 || value > 65535)
    return FEDC_EINVAL;
  memcpy(host, start, len);
  host[len] = '\0';
  *port = (int)value;
  return 0;
}

static int bind_listener(fedc_http *http, const char *host, int port)
{
  struct sockaddr_storage addr;
  int namelen = sizeof(addr);

  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) < 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) < 0)
    return FEDC_EINVAL;
  if (uv_tcp_bind(&http->server, (struct sockaddr *)&addr, 0) < 0 ||
      uv_listen((uv_stream_t *)&http->server, 16, on_connection) < 0 ||
      uv_tcp_getsockname(&http->server, (struct sockaddr *)&addr,
                         &namelen) < 0)
    return FEDC_EIO;
  if (addr.ss_family == AF_INET6)
    http->port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
  else
    http->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
  return 0;
}

static void on_server_closed(uv_handle_t *handle)
{
  fedc_http *http = handle->data;

  http->open_handles--;
  release_if_done(http);
}

int fedc_http_new(uv_loop_t *loop, const char *address,
                  const fedc_metrics *metrics, fedc_http_refresh_fn refresh,
                  void *data, fedc_http **out)
{
  fedc_http *http;
  char host[256];
  int port = 0;
  int rc;

  *out = NULL;
  if (fedc_http_parse_address(address, host, sizeof(host), &port) < 0)
    return FEDC_EINVAL;
  http = calloc(1, sizeof(*http));
  if (http == NULL)
    return FEDC_ENOMEM;
  http->metrics = metrics;
  http->refresh = refresh;
  http->refresh_data = data;
  http->server.data = http;
  uv_tcp_init(loop, &http->server);
  http->open_handles = 1;

  rc = bind_listener(http, host, port);
  if (rc < 0) {
    fedc_http_free(&http);
    return rc;
  }
  fedc_info("http", "serving metrics address=%s:%d path=/metrics", host,
            http->port);
  *out = http;
  return 0;
}

int fedc_http_port(const fedc_http *http)
{
  return http->port;
}

void fedc_http_free(fedc_http **http)
{
  fedc_http *h = *http;

  if (h == NULL)
    return;
  *http = NULL;
  h->closing = 1;
  while (h->conns != NULL)
    conn_close(h->conns);
  uv_close((uv_handle_t *)&h->server, on_server_closed);
}
