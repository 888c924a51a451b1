/* A minimal HTTP/1.0 responder that serves the metrics registry as
 * Prometheus text on GET /metrics, on the daemon's libuv loop.
 *
 * Each connection gets one response and is then closed. A request larger
 * than FEDC_HTTP_MAX_REQUEST bytes or idle for FEDC_HTTP_IDLE_MS is
 * dropped, so a slow or hostile scraper cannot hold memory or sockets. */
#ifndef FEDC_SERVER_HTTP_H
#define FEDC_SERVER_HTTP_H

#include <uv.h>

#include "util/metrics.h"

#define FEDC_HTTP_MAX_REQUEST 8192 /* bytes, request line plus headers */
#define FEDC_HTTP_IDLE_MS 5000     /* per connection, until the request ends */

typedef struct fedc_http fedc_http;

/* Called on the loop thread before each rendering, so that the owner can
 * bring gauges that mirror other state up to date. */
typedef void (*fedc_http_refresh_fn)(void *data);

/* Listens on address, "host:port" or "[v6host]:port" (port 0 picks a free
 * one), and serves metrics, which must outlive the responder. refresh may
 * be NULL. Returns 0, FEDC_EINVAL for an address that does not parse or
 * FEDC_EIO when the socket cannot be bound. */
int fedc_http_new(uv_loop_t *loop, const char *address,
                  const fedc_metrics *metrics, fedc_http_refresh_fn refresh,
                  void *data, fedc_http **out);

/* Returns the port the responder listens on. */
int fedc_http_port(const fedc_http *http);

/* Stops listening and closes every open connection. The memory is released
 * from libuv close callbacks, so the loop must run once more afterwards.
 * Clears *http; accepts NULL. */
void fedc_http_free(fedc_http **http);

/* Splits "host:port" or "[host]:port" into host (without brackets) and
 * port. Returns 0 or FEDC_EINVAL. */
int fedc_http_parse_address(const char *address, char *host, size_t hostlen,
                            int *port);

#endif
