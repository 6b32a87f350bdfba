/*
 * hub.h — perch-hub's private umbrella header: settings, the hub object,
 * connections and the seams between the network layer (listen.c, conn.c),
 * the broker (broker.c), the store (store.c) and metrics (metrics.c).
 *
 * Threading: everything here runs on the one libwebsockets loop thread,
 * except the store's writer thread, which reaches the loop only through the
 * store's completion queue and lws_cancel_service().
 */
#ifndef HUB_HUB_H
#define HUB_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "identity.h"
#include "perch/config.h"
#include "perch/device.h"
#include "perch/err.h"
#include "perch/mqtt.h"

/* --- settings (settings.c) ------------------------------------------------ */

typedef struct hub_settings {
	perch_strlist listen; /* URLs: ws:// wss:// mqtt:// mqtts:// */
	char *data_dir;       /* SQLite store lives here */
	bool allow_anonymous; /* accept CONNECTs without credentials */
	char *metrics;        /* HOST:PORT for /metrics, or NULL */
	char *log_level;      /* error warn notice info debug */
	char *tls_cert;       /* PEM server certificate (wss, mqtts) */
	char *tls_key;        /* PEM private key */
	char *tls_client_ca;  /* PEM CA for optional client certificates */
	uint64_t max_packet_size;
	uint64_t max_connect_size;
	int64_t max_inflight;             /* unacknowledged QoS 1 deliveries per client */
	int64_t max_queued_messages;      /* per persistent session */
	uint64_t max_queued_bytes;        /* per persistent session */
	uint64_t max_memory_queued_bytes; /* per clean session (in memory) */
	int64_t max_connections;
	int64_t max_subscriptions;     /* per client */
	uint64_t max_store_bytes;      /* the whole store */
	uint64_t max_tx_bytes;         /* unsent bytes buffered per connection */
	int64_t connect_timeout_ms;    /* a socket must send CONNECT within this */
	int64_t send_timeout_ms;       /* unsent bytes, none taken for this long: closed */
	int sync;                      /* 0 full, 1 normal, 2 off */
	int64_t commit_delay_us;       /* hub_store_config.commit_delay_us */
	int64_t auth_skew_ms;          /* tolerated clock difference for tokens */
	int64_t auth_lifetime_ms;      /* furthest token expiry accepted */
	char *leaf_devices;            /* JSON file of leaf device identities, or NULL */
	char *status_file;             /* the upstream link's status as JSON (status.c), or NULL */
	char *upstream_url;            /* the parent: mqtts:// or wss:// URL, or NULL */
	char *upstream_ca;             /* PEM CA that verifies the parent, or NULL: system CAs */
	char *upstream_hostname;       /* IoT hub host name for the parent; NULL: the URL's host */
	int64_t upstream_keepalive_ms; /* MQTT keepalive; a dead link is noticed within it */
	int64_t upstream_window;       /* unacknowledged publishes in flight */
	int64_t upstream_backoff_first_ms;  /* first retry after a loss */
	int64_t upstream_backoff_max_ms;    /* cap of the backoff: the parent unreachable */
	int64_t upstream_refused_max_ms;    /* cap of the backoff: the parent refused */
	int64_t upstream_token_lifetime_ms; /* SAS token lifetime; renewed at 80% */
	int upstream_full_policy;           /* 0 refuse, 1 drop_oldest */
	perch_device_settings device;
} hub_settings;

extern const perch_cfg_key hub_settings_table[];
extern const size_t hub_settings_count;
extern const char *const hub_foreign_sections[];

/* --- the hub ---------------------------------------------------------------- */

struct hub_broker;
struct hub_metrics;
struct hub_conn;

typedef struct hub {
	hub_settings cfg;
	struct lws_context *ctx;
	struct hub_broker *broker;
	struct hub_metrics *metrics;
	size_t nconns;                 /* live MQTT connections (any state) */
	volatile int stopping;         /* set by SIGTERM/SIGINT */
	volatile int reload;           /* set by SIGHUP: read the identity files again */
	hub_identities ids;            /* who may connect (auth.c) */
	struct hub_iothub *iothub;     /* twins and methods (iothub.c) */
	struct hub_router *router;     /* routes (router.c) */
	struct hub_upstream *upstream; /* the link to the parent (upstream.c), or NULL */
	struct hub_twinsync *twinsync; /* twins over that link (twinsync.c), or NULL */
	int64_t ids_poll_ms;           /* next look at the identity files' mtimes */
	int64_t key_mtime, deploy_mtime, leaves_mtime; /* ns; -1 missing */
} hub;

/* --- connections (conn.c) ------------------------------------------------- */

typedef enum hub_conn_state {
	HUB_CONN_NEW = 0, /* socket open, no CONNECT yet */
	HUB_CONN_ACTIVE,  /* CONNECT accepted */
	HUB_CONN_CLOSING, /* flushing what is queued, then closed */
} hub_conn_state;

typedef struct hub_conn {
	struct lws *wsi;
	hub *hub;
	bool ws; /* WebSocket (else raw TCP) */
	bool tls;
	bool counted; /* included in hub.nconns */
	bool paused;  /* not read until the store catches up */
	bool tx_full; /* not read until the peer reads what it was sent */
	hub_conn_state state;
	perch_mqtt_decoder dec;
	struct hub_session *session; /* set once CONNECT is accepted */
	uint16_t keepalive;          /* seconds, from CONNECT */
	int64_t last_rx_ms;
	char peer[64];       /* "ip:port" */
	char client_id[128]; /* for logs, truncated */
	hub_identity ident;  /* who authenticated (anonymous: no restrictions) */
	/* Outgoing bytes: [tx_head, tx_len) pending; LWS_PRE bytes of headroom are
	 * always before tx_head so WebSocket framing can be written in place. */
	uint8_t *tx;
	size_t tx_head, tx_len, tx_cap;
	int64_t tx_progress_ms;   /* when the peer last took bytes, or none were waiting */
	size_t tx_outq;           /* unacknowledged bytes in the kernel at the last look */
	bool tx_wrote;            /* bytes went to the kernel since the last look */
	const char *close_reason; /* static text, set once when we decide to close */
	char close_detail[160];
	struct hub_conn *next, *prev; /* hub-wide list */
} hub_conn;

/* hub_conn_opened initialises c for a new socket; returns -1 to refuse it. */
int hub_conn_opened(hub *h, hub_conn *c, struct lws *wsi, bool ws);
/* hub_conn_rx feeds received bytes; returns -1 when the connection must close. */
int hub_conn_rx(hub_conn *c, const uint8_t *in, size_t len);
/* hub_conn_writeable writes pending bytes; returns -1 to close. */
int hub_conn_writeable(hub_conn *c);
/* hub_conn_closed releases c (lws frees the memory after). */
void hub_conn_closed(hub_conn *c);

/* hub_conn_send appends bytes (one or more encoded packets, or parts of one)
 * and asks for a writeable callback. Returns PERCH_ENOMEM or PERCH_ENOSPC
 * (over max_tx_bytes unless force). */
PERCH_MUST_USE perch_err hub_conn_send(hub_conn *c, const void *a, size_t alen, const void *b,
                                       size_t blen, bool force);
/* hub_conn_send_packet encodes pkt and appends it (force: ignores max_tx_bytes). */
PERCH_MUST_USE perch_err hub_conn_send_packet(hub_conn *c, const perch_mqtt_packet *pkt);
/* hub_conn_pending returns the bytes waiting to be written. */
size_t hub_conn_pending(const hub_conn *c);
/* hub_conn_check_stalled closes c (with its reason) when bytes have waited
 * for it longer than hub.send_timeout without the peer taking any: a client
 * that never reads its socket. Loop thread; now from hub_now_ms(). */
void hub_conn_check_stalled(hub_conn *c, int64_t now);
/* hub_conn_close_soon logs why (once) and closes after what is queued is
 * written. reason is static text; detail may be NULL. */
void hub_conn_close_soon(hub_conn *c, const char *reason, const char *detail);

/* --- identities (auth.c) ------------------------------------------------------ */

/* hub_auth_open resolves the device id and reads the identity files (each
 * may be missing yet). PERCH_EINVAL for an unusable device id. */
PERCH_MUST_USE perch_err hub_auth_open(hub *h);
void hub_auth_close(hub *h);
/* hub_auth_tick reads the identity files again after SIGHUP or when one
 * changed (checked every second); returns true when identities changed. */
bool hub_auth_tick(hub *h);
/* hub_auth_connect checks c's CONNECT; 0 to accept (c->ident set), else
 * the CONNACK code (counted here) with *why a static text for the log. */
uint8_t hub_auth_connect(hub_conn *c, const perch_mqtt_connect *p, const char **why);
/* hub_auth_stamp: for a telemetry topic of an authenticated identity, writes
 * the topic with $.cdid/$.cmid set from the identity into out (cap bytes) and
 * returns true; false when the topic needs no stamp (anonymous, not
 * telemetry). *err is set when the topic cannot be stamped. */
bool hub_auth_stamp(const hub_identity *id, perch_slice topic, char *out, size_t cap,
                    size_t *out_len, perch_err *err);

/* --- IoT Hub twins and direct methods (iothub.c) ------------------------------
 * The broker hands every $iothub/... publish of an authenticated identity to
 * iothub.c, which answers on that connection (twin GET and reported patches,
 * method responses) instead of routing it. listen.c tells it which
 * connection each identity has (after every read) and hands it the HTTP
 * requests of WebSocket listeners (direct method calls, method_http.c). */

struct hub_iothub;
PERCH_MUST_USE perch_err hub_iothub_open(hub *h);
void hub_iothub_close(hub *h);
/* hub_iothub_publish takes a $iothub/... publish from c (authenticated).
 * Returns true when it handled it (the broker only acknowledges it). */
bool hub_iothub_publish(hub_conn *c, perch_slice topic, perch_slice payload);
/* hub_iothub_conn_seen: c (authenticated) was accepted, or subscribed: it
 * becomes its identity's connection for method calls and desired patches
 * (the broker calls it after CONNECT and after each SUBSCRIBE). */
void hub_iothub_conn_seen(hub_conn *c);
/* Direct method calls waiting for their answer (metrics). */
size_t hub_iothub_pending_calls(const hub *h);
/* hub_method_http_cb takes an HTTP callback of a WebSocket listener; *slot
 * is the connection's request state (NULL at first; freed here). For
 * LWS_CALLBACK_HTTP it returns 1 when the path is not a method call's (the
 * caller answers it); otherwise 0, or -1 to close the connection. */
typedef struct hub_method_http hub_method_http;
int hub_method_http_cb(struct lws *wsi, enum lws_callback_reasons reason, hub_method_http **slot,
                       void *in, size_t len);
/* The identities (hub deployment: modules, desired twins) changed. */
void hub_iothub_identities_changed(hub *h);
/* c is going away: forget what waits on it. */
void hub_iothub_conn_gone(hub_conn *c);
/* Once per loop iteration (timeouts). */
void hub_iothub_tick(hub *h);

/* --- cloud-to-device messages (c2d.c) -------------------------------------------
 * A durable queue "c/<device>" per device (a leaf device or the edge device
 * itself), delivered on devices/{d}/messages/devicebound/{props} by the
 * broker once the device subscribes there. */

#define HUB_C2D_MAX_DEPTH     50              /* messages waiting per device (IoT Hub's) */
#define HUB_C2D_MAX_BODY      ((size_t)65536) /* bytes of a message body */
#define HUB_C2D_DEFAULT_TTL_S 3600u           /* seconds, when the sender gives none */
#define HUB_C2D_MAX_TTL_S     172800u         /* seconds */

/* The sender's answer, called exactly once (maybe before hub_c2d_send
 * returns): status 204 once the message is durable, else an error status
 * with IoT Hub's {"errorCode":...,"message":...} (body, len; borrowed);
 * mid is the message id. */
typedef void hub_c2d_done_fn(void *arg, unsigned status, const char *body, size_t len,
                             const char *mid);
typedef struct hub_c2d_req hub_c2d_req;
/* hub_c2d_send queues body for device with the properties in props (may be
 * NULL; $.mid kept when given, $.to set by the hub) and a TTL in seconds.
 * *out: the pending request (until done is called) for hub_c2d_cancel. */
struct perch_props;
void hub_c2d_send(hub *h, const char *device, const struct perch_props *props, perch_slice body,
                  uint32_t ttl_s, hub_c2d_done_fn *done, void *arg, hub_c2d_req **out);
/* hub_c2d_cancel: the sender went away; done is not called. */
void hub_c2d_cancel(hub_c2d_req *r);

/* --- routes (router.c) ---------------------------------------------------------- */

struct hub_msg;
struct hub_queue;
struct hub_store;
PERCH_MUST_USE perch_err hub_router_open(hub *h);
void hub_router_close(hub *h);
/* hub_router_reload rebuilds the route table when the $edgeHub section of
 * the hub deployment changed (a table that does not build is refused). */
void hub_router_reload(hub *h);
/* hub_router_route routes m (telemetry or a module output, stamped) from
 * identity id into the sink queues; *durable is set when a queue took it.
 * Returns PERCH_ENOSPC (or another error) when a sink did not take it. */
PERCH_MUST_USE perch_err hub_router_route(hub *h, const hub_identity *id, struct hub_msg *m,
                                          bool *durable);

/* --- the upstream link (upstream.c, upstream.h) --------------------------------- */

struct hub_upstream_stats;
/* hub_upstream_open sets up the link when hub.upstream.url is set (after
 * hub_listen_start: it needs the loop); it connects at once. Logs and
 * returns PERCH_EINVAL for an unusable URL or CA. Loop thread. */
PERCH_MUST_USE perch_err hub_upstream_open(hub *h);
void hub_upstream_close(hub *h);
/* Once per loop iteration: send what the $upstream queues hold. */
void hub_upstream_tick(hub *h);
/* hub_upstream_get_stats fills *out (zeroed when there is no link). */
void hub_upstream_get_stats(hub *h, struct hub_upstream_stats *out);

/* --- the broker (broker.c) -------------------------------------------------- */

/* hub_broker_input_added: q (a queue "r/<module>/<input>") took a message
 * for module: hand it to the module's session if it is there. */
void hub_broker_input_added(hub *h, const char *module, struct hub_queue *q);

/* hub_broker_c2d_added: q ("c/<device>") took a message for device. */
void hub_broker_c2d_added(hub *h, const char *device, struct hub_queue *q);

PERCH_MUST_USE perch_err hub_broker_open(hub *h);
void hub_broker_close(hub *h);
/* hub_broker_subscribed: does c's session have a subscription matching
 * topic? *qos (may be NULL) gets the granted QoS of the first match. */
bool hub_broker_subscribed(const hub_conn *c, perch_slice topic, uint8_t *qos);
/* Identities changed: end the connections and sessions of identities the
 * hub no longer accepts. */
void hub_broker_identities_changed(hub *h);
/* One decoded packet from c. Returns -1 to close c now. */
int hub_broker_packet(hub_conn *c, const perch_mqtt_packet *pkt);
/* c is gone (closed by either side); abnormal: publish the will. */
void hub_broker_disconnected(hub_conn *c, bool abnormal);
/* After c's input was processed: pause reading it if the store lags. */
void hub_broker_rx_done(hub_conn *c);
/* c is closing: drop every reference the broker keeps to it. */
void hub_broker_forget(hub_conn *c);
/* c's send buffer drained: deliver more from its session's queue. */
void hub_broker_drained(hub_conn *c);
/* Once per loop iteration: hand the batch to the store, run completions. */
void hub_broker_tick(hub *h);
/* The store's writer thread finished a batch (called on the loop thread). */
void hub_broker_wake(hub *h);

/* For metrics: counts and the store (borrowed). */
size_t hub_broker_sessions(const hub *h);
size_t hub_broker_retained(const hub *h);
size_t hub_broker_subscriptions(const hub *h);
struct hub_store *hub_broker_store(const hub *h);

/* --- listeners (listen.c) --------------------------------------------------- */

/* hub_listen_start creates the context and every listener; logs the
 * reason and returns an error if any listener cannot be opened. */
PERCH_MUST_USE perch_err hub_listen_start(hub *h);
void hub_listen_stop(hub *h);
/* hub_listen_wake makes the loop run an iteration; any thread. */
void hub_listen_wake(hub *h);
/* Runs the loop until h->stopping. */
void hub_listen_run(hub *h);
/* hub_listen_timer_us is the delay to give an lws timer (lws_sul_schedule)
 * so that the loop sleeps, without spinning, until at least due_us from now:
 * lws's poll() loop sleeps whole milliseconds rounded down, so a timer less
 * than 1 ms away makes it poll without sleeping until the timer fires. The
 * delay returned is due_us rounded up to whole ms (at least 1), plus 999 us:
 * the loop sleeps those ms; the caller must then act and cancel the timer
 * (or set it again) before its last 999 us would spin. */
int64_t hub_listen_timer_us(int64_t due_us);

int64_t hub_now_ms(void);

#endif /* HUB_HUB_H */
