/*
 * listen.c — perch-hub's listeners on one libwebsockets loop: MQTT over
 * WebSocket (subprotocol "mqtt", any path) and over raw TCP, each with or
 * without TLS, the direct-method REST endpoint on the WebSocket listeners
 * (method_http.c), plus the optional Prometheus /metrics endpoint.
 *
 * Each listener URL becomes one lws vhost. The callbacks here only adapt lws
 * events to conn.c (bytes in, writeable, closed); nothing else in the hub
 * knows about lws callbacks. Before creating a vhost the address is bound
 * once by hand, so that a busy port or a bad address is reported in one
 * clear line instead of lws's own log.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/log.h"
#include "status.h"

#define LOG_MOD      "hub.listen"
#define MAX_VHOSTS   34
#define RX_BUF_BYTES 65536

typedef enum listen_kind { LISTEN_WS, LISTEN_WSS, LISTEN_MQTT, LISTEN_MQTTS } listen_kind;

typedef struct listen_url {
	listen_kind kind;
	char host[128];
	int port;
} listen_url;

static hub *hub_of(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

/*
 * A client certificate that does not verify against --tls-client-ca fails the
 * handshake (lws asks the protocol; 0 would accept anything). Clients without
 * a certificate never get here: certificates are optional.
 */
static int verify_client_cert(size_t preverify_ok)
{
	return preverify_ok ? 0 : 1;
}

/* --- MQTT over WebSocket ---------------------------------------------------- */

/* A WebSocket listener's connection: an MQTT connection once upgraded, or
 * plain HTTP requests (direct method calls) instead. */
typedef struct ws_pss {
	hub_conn conn;         /* first; zeroed until upgraded */
	hub_method_http *http; /* method_http.c's request, or NULL */
} ws_pss;
_Static_assert(offsetof(ws_pss, conn) == 0, "cb_ws takes user as a hub_conn");

static int cb_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                 size_t len)
{
	ws_pss *pss = user;
	hub_conn *c = user; /* pss->conn, its first member (user is NULL for the context) */
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED: return hub_conn_opened(hub_of(wsi), c, wsi, true);
	case LWS_CALLBACK_RECEIVE:
		if (!lws_frame_is_binary(wsi)) {
			hub_metrics_protocol_error(c->hub->metrics, "websocket_text_frame");
			c->close_reason = "protocol error";
			snprintf(c->close_detail, sizeof c->close_detail,
			         "text WebSocket frame (MQTT needs binary frames)");
			return -1;
		}
		return hub_conn_rx(c, in, len);
	case LWS_CALLBACK_SERVER_WRITEABLE: return hub_conn_writeable(c);
	case LWS_CALLBACK_CLOSED: hub_conn_closed(c); return 0;
	case LWS_CALLBACK_HTTP: {
		int rc = pss != NULL ? hub_method_http_cb(wsi, reason, &pss->http, in, len) : 1;
		if (rc != 1)
			return rc;
		/* Any other plain HTTP request on a WebSocket listener: not found. */
		if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL))
			return -1;
		return lws_http_transaction_completed(wsi);
	}
	case LWS_CALLBACK_HTTP_BODY:
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		return pss != NULL ? hub_method_http_cb(wsi, reason, &pss->http, in, len) : 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED: hub_broker_wake(hub_of(wsi)); return 0;
	case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: return verify_client_cert(len);
	default: return 0;
	}
}

/* --- MQTT over raw TCP ------------------------------------------------------ */

static int cb_raw(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
	hub_conn *c = user;
	switch (reason) {
	case LWS_CALLBACK_RAW_ADOPT: return hub_conn_opened(hub_of(wsi), c, wsi, false);
	case LWS_CALLBACK_RAW_RX: return hub_conn_rx(c, in, len);
	case LWS_CALLBACK_RAW_WRITEABLE: return hub_conn_writeable(c);
	case LWS_CALLBACK_RAW_CLOSE: hub_conn_closed(c); return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED: hub_broker_wake(hub_of(wsi)); return 0;
	case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: return verify_client_cert(len);
	default: return 0;
	}
}

/* --- /metrics over HTTP ----------------------------------------------------- */

typedef struct http_pss {
	char *body; /* owned rendered metrics */
	size_t len;
} http_pss;

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
	http_pss *p = user;
	hub *h = hub_of(wsi);
	(void)len;
	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		if (strcmp((const char *)in, "/metrics") != 0) {
			if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL))
				return -1;
			return lws_http_transaction_completed(wsi);
		}
		perch_free(p->body);
		if (hub_metrics_render(h, &p->body, &p->len) != PERCH_OK)
			return -1;
		uint8_t hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *pos = start,
		                            *end = hdr + sizeof hdr - 1;
		if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK,
		                                "text/plain; version=0.0.4; charset=utf-8", p->len,
		                                &pos, end) ||
		    lws_finalize_write_http_header(wsi, start, &pos, end))
			return -1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	case LWS_CALLBACK_HTTP_WRITEABLE: {
		if (p->body == NULL)
			return 0;
		uint8_t *buf = perch_malloc(LWS_PRE + p->len);
		if (buf == NULL)
			return -1;
		memcpy(buf + LWS_PRE, p->body, p->len);
		int w = lws_write(wsi, buf + LWS_PRE, p->len, LWS_WRITE_HTTP_FINAL);
		perch_free(buf);
		perch_free(p->body);
		p->body = NULL;
		if (w < 0)
			return -1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	}
	case LWS_CALLBACK_CLOSED_HTTP:
		perch_free(p->body);
		p->body = NULL;
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED: hub_broker_wake(h); return 0;
	case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: return verify_client_cert(len);
	default: return 0;
	}
}

static const struct lws_protocols ws_protocols[] = {
        {"mqtt", cb_ws, sizeof(ws_pss), RX_BUF_BYTES, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
};
static const struct lws_protocols raw_protocols[] = {
        {"mqtt-raw", cb_raw, sizeof(hub_conn), RX_BUF_BYTES, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
};
static const struct lws_protocols http_protocols[] = {
        {"http", cb_http, sizeof(http_pss), 0, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* --- setup ------------------------------------------------------------------ */

static perch_err parse_hostport(const char *s, char *host, size_t cap, int *port)
{
	const char *colon = strrchr(s, ':');
	if (colon == NULL || colon == s)
		return PERCH_EINVAL;
	size_t hl = (size_t)(colon - s);
	if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl >= cap)
		return PERCH_EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return PERCH_EINVAL;
	*port = (int)p;
	return PERCH_OK;
}

static perch_err parse_url(const char *url, listen_url *out)
{
	static const struct {
		const char *scheme;
		listen_kind kind;
	} schemes[] = {{"ws://", LISTEN_WS},
	               {"wss://", LISTEN_WSS},
	               {"mqtt://", LISTEN_MQTT},
	               {"mqtts://", LISTEN_MQTTS},
	               {"tcp://", LISTEN_MQTT}};
	for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
		size_t n = strlen(schemes[i].scheme);
		if (strncmp(url, schemes[i].scheme, n) == 0) {
			out->kind = schemes[i].kind;
			const char *rest = url + n;
			char hp[200];
			snprintf(hp, sizeof hp, "%s", rest);
			char *slash = strchr(hp, '/');
			if (slash != NULL)
				*slash = '\0'; /* a path is fine: any path is served */
			return parse_hostport(hp, out->host, sizeof out->host, &out->port);
		}
	}
	return PERCH_EINVAL;
}

/* probe_bind binds host:port once to turn a busy port or a bad address into
 * one clear line; lws then binds for real. */
static perch_err probe_bind(const char *url, const char *host, int port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char ps[8];
	snprintf(ps, sizeof ps, "%d", port);
	int rc = getaddrinfo(host[0] ? host : NULL, ps, &hints, &res);
	if (rc != 0) {
		PERCH_ERROR(LOG_MOD, "cannot listen on %s: bad address: %s", url, gai_strerror(rc));
		return PERCH_EINVAL;
	}
	perch_err err = PERCH_OK;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
		int e = errno;
		PERCH_ERROR(LOG_MOD, "cannot listen on %s: %s%s", url, strerror(e),
		            e == EADDRINUSE ? " (port busy: another program listens there)" : "");
		err = e == EADDRINUSE ? PERCH_EBUSY : perch_err_from_errno(e);
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return err;
}

/*
 * ipv6_option keeps lws's IPv6 support for IPv6 hosts only. With it on, lws
 * could not match an IPv4 address such as 127.0.0.1 to an interface here
 * and silently bound the port on every interface: a loopback-only listener
 * was reachable from the network.
 */
static uint64_t ipv6_option(const char *host)
{
	return strchr(host, ':') != NULL ? 0 : LWS_SERVER_OPTION_DISABLE_IPV6;
}

static perch_err create_vhost(hub *h, const char *url, const listen_url *lu, int idx)
{
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	/* lws keeps the name pointer: it must outlive the vhost. */
	static char names[MAX_VHOSTS][16];
	snprintf(names[idx], sizeof names[idx], "listen%d", idx);
	info.vhost_name = names[idx];
	info.port = lu->port;
	/* lws takes an interface name or an IP address; "" or 0.0.0.0 = all. */
	info.iface = (lu->host[0] && strcmp(lu->host, "0.0.0.0") != 0) ? lu->host : NULL;
	info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | ipv6_option(lu->host);
	bool tls = lu->kind == LISTEN_WSS || lu->kind == LISTEN_MQTTS;
	if (lu->kind == LISTEN_MQTT || lu->kind == LISTEN_MQTTS) {
		info.protocols = raw_protocols;
		info.options |= LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
		info.listen_accept_role = "raw-skt";
		info.listen_accept_protocol = "mqtt-raw";
	} else {
		info.protocols = ws_protocols;
	}
	if (tls) {
		if (h->cfg.tls_cert == NULL || h->cfg.tls_key == NULL) {
			PERCH_ERROR(LOG_MOD,
			            "cannot listen on %s: TLS needs --tls-cert and --tls-key", url);
			return PERCH_EINVAL;
		}
		/* lws enables TLS on a vhost only with this option in its own info. */
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = h->cfg.tls_cert;
		info.ssl_private_key_filepath = h->cfg.tls_key;
		if (h->cfg.tls_client_ca != NULL) {
			info.ssl_ca_filepath = h->cfg.tls_client_ca;
			info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT |
			                LWS_SERVER_OPTION_PEER_CERT_NOT_REQUIRED;
		}
	}
	perch_err err = probe_bind(url, lu->host, lu->port);
	if (err != PERCH_OK)
		return err;
	if (lws_create_vhost(h->ctx, &info) == NULL) {
		PERCH_ERROR(LOG_MOD, "cannot listen on %s%s", url,
		            tls ? ": TLS setup failed (check the certificate and key files)" : "");
		return PERCH_EIO;
	}
	return PERCH_OK;
}

static perch_err create_metrics_vhost(hub *h)
{
	char host[128];
	int port = 0;
	if (parse_hostport(h->cfg.metrics, host, sizeof host, &port) != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "bad metrics address '%s': expected HOST:PORT",
		            h->cfg.metrics);
		return PERCH_EINVAL;
	}
	char url[200];
	snprintf(url, sizeof url, "http://%s/metrics", h->cfg.metrics);
	perch_err err = probe_bind(url, host, port);
	if (err != PERCH_OK)
		return err;
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.vhost_name = "metrics";
	info.port = port;
	info.iface = (host[0] && strcmp(host, "0.0.0.0") != 0) ? host : NULL;
	info.protocols = http_protocols;
	info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | ipv6_option(host);
	if (lws_create_vhost(h->ctx, &info) == NULL) {
		PERCH_ERROR(LOG_MOD, "cannot serve metrics on %s", h->cfg.metrics);
		return PERCH_EIO;
	}
	return PERCH_OK;
}

static void lws_log_to_perch(int level, const char *line)
{
	size_t n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	perch_log(level == LLL_ERR ? PERCH_LOG_ERROR : PERCH_LOG_WARN, "hub.lws", "%.*s", (int)n,
	          line);
}

perch_err hub_listen_start(hub *h)
{
	if (h->cfg.listen.n == 0) {
		PERCH_ERROR(LOG_MOD,
		            "no listener: give --listen URL (or hub.listen in the config)");
		return PERCH_EINVAL;
	}
	if (h->cfg.listen.n > MAX_VHOSTS - 2) {
		PERCH_ERROR(LOG_MOD, "too many listeners (%zu; at most %d)", h->cfg.listen.n,
		            MAX_VHOSTS - 2);
		return PERCH_EINVAL;
	}
	listen_url urls[MAX_VHOSTS];
	memset(urls, 0, sizeof urls);
	bool any_tls = false;
	for (size_t i = 0; i < h->cfg.listen.n; i++) {
		if (parse_url(h->cfg.listen.items[i], &urls[i]) != PERCH_OK) {
			PERCH_ERROR(LOG_MOD,
			            "bad listener '%s': expected ws://, wss://, mqtt:// or "
			            "mqtts://HOST:PORT",
			            h->cfg.listen.items[i]);
			return PERCH_EINVAL;
		}
		any_tls |= urls[i].kind == LISTEN_WSS || urls[i].kind == LISTEN_MQTTS;
	}
	/* PERCH_LWS_LOG=<lws level bits> shows libwebsockets' own log (debugging). */
	const char *lws_log = getenv("PERCH_LWS_LOG");
	lws_set_log_level(lws_log ? (int)strtol(lws_log, NULL, 0) : LLL_ERR, lws_log_to_perch);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	/* lws's own poll() loop: lws_service() returns after each round of
	 * events, so hub_listen_run can flush the store once per iteration.
	 * (With an event library, lws_service runs that library's loop forever.) */
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	if (any_tls)
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.user = h;
	info.pt_serv_buf_size = RX_BUF_BYTES;
	/* lws stops accepting while its pool of HTTP header structs is in use
	 * (and raw sockets take one until they are adopted); the small default
	 * made bursts of new clients wait 5 s per 64. Headers are allocated on
	 * demand, so a pool as large as the connection limit costs nothing idle. */
	info.max_http_header_pool2 = (unsigned int)(h->cfg.max_connections + 16);
	h->ctx = lws_create_context(&info);
	if (h->ctx == NULL) {
		PERCH_ERROR(LOG_MOD, "cannot create the event loop (libwebsockets)");
		return PERCH_EIO;
	}
	char ready[1024] = "";
	size_t used = 0;
	for (size_t i = 0; i < h->cfg.listen.n; i++) {
		perch_err err = create_vhost(h, h->cfg.listen.items[i], &urls[i], (int)i);
		if (err != PERCH_OK)
			return err;
		used += (size_t)snprintf(ready + used,
		                         used < sizeof ready ? sizeof ready - used : 0, "%s%s",
		                         i ? ", " : "", h->cfg.listen.items[i]);
		if (used >= sizeof ready)
			used = sizeof ready - 1;
	}
	if (h->cfg.metrics != NULL) {
		perch_err err = create_metrics_vhost(h);
		if (err != PERCH_OK)
			return err;
		snprintf(ready + used, sizeof ready - used, "; metrics at http://%s/metrics",
		         h->cfg.metrics);
	}
	PERCH_NOTICE("hub", "perch-hub ready: listening on %s", ready);
	return PERCH_OK;
}

int64_t hub_listen_timer_us(int64_t due_us)
{
	int64_t ms = due_us > 1000 ? (due_us + 999) / 1000 : 1;
	return ms * 1000 + 999;
}

/* A wake-up at least once a second, so the loop never sleeps long even if a
 * wake-up was missed (the store's writer can finish before the loop exists).
 * Its timer is moved a second ahead whenever less than 2 ms of it are left,
 * so it never fires and is never under 1 ms away when lws polls: it would
 * spin up to 1 ms a second (hub_listen_timer_us). */
static lws_sorted_usec_list_t housekeeping;

static void on_housekeeping(lws_sorted_usec_list_t *sul)
{
	(void)sul; /* waking the loop is all (hub_listen_run moves it ahead first) */
}

void hub_listen_run(hub *h)
{
	lws_usec_t due = 0;
	while (!h->stopping) {
		lws_usec_t now = lws_now_usecs();
		if (due - now < 2000) {
			lws_usec_t in = (lws_usec_t)hub_listen_timer_us(LWS_US_PER_SEC);
			lws_sul_cancel(&housekeeping);
			lws_sul_schedule(h->ctx, 0, &housekeeping, on_housekeeping, in);
			due = now + in;
		}
		if (lws_service(h->ctx, 0) < 0)
			break;
		hub_broker_tick(h);
		hub_upstream_tick(h);
		hub_status_tick(h);
	}
	lws_sul_cancel(&housekeeping);
}

/* The store's writer thread wakes the loop; ctx_lock keeps it from doing so
 * while (or after) the context is destroyed. */
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;

void hub_listen_wake(hub *h)
{
	pthread_mutex_lock(&ctx_lock);
	if (h->ctx != NULL)
		lws_cancel_service(h->ctx);
	pthread_mutex_unlock(&ctx_lock);
}

void hub_listen_stop(hub *h)
{
	pthread_mutex_lock(&ctx_lock);
	struct lws_context *ctx = h->ctx;
	h->ctx = NULL;
	pthread_mutex_unlock(&ctx_lock);
	if (ctx != NULL)
		lws_context_destroy(ctx);
}
