/*
 * modclient.h — the small MQTT client the sample modules share: who the
 * module is and where the hub is (from the environment), connect with
 * backoff, subscribe, publish module outputs at QoS 1, receive inputs.
 *
 * One connection over plain TCP, driven by one thread that calls
 * modclient_run in a loop; nothing here is thread-safe. The wire work is
 * proto/'s codec (perch/mqtt.h) and property bags (perch/props.h).
 *
 * Delivery is at least once in both directions:
 * - a published output is copied into an in-flight window (at most
 *   MODCLIENT_MAX_INFLIGHT messages) and kept until the hub's PUBACK; after a
 *   reconnect every unacknowledged message is sent again with DUP set;
 * - an incoming QoS 1 message is acknowledged after the message callback has
 *   returned PERCH_OK; when it fails, the client drops the connection instead
 *   of acknowledging, and the hub delivers the message again (the session is
 *   persistent: clean session 0, as the Azure IoT SDKs connect).
 *
 * Lost connections, and a hub that is not there yet, are retried with
 * exponential backoff (MODCLIENT_BACKOFF_MIN_MS doubling to
 * MODCLIENT_BACKOFF_MAX_MS, with jitter), forever: a module is started before
 * or after its hub and must not care.
 */
#ifndef PERCH_MODCLIENT_H
#define PERCH_MODCLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/mqtt.h"
#include "perch/props.h"
#include "perch/slice.h"

#define MODCLIENT_MAX_ID              128     /* bytes of a device or module id */
#define MODCLIENT_MAX_HOST            253     /* bytes of a host name */
#define MODCLIENT_MAX_PASSWORD        4096    /* bytes of a password (a SAS token) */
#define MODCLIENT_MAX_SUBS            8       /* topic filters subscribed on each connect */
#define MODCLIENT_MAX_FILTER          512     /* bytes of one topic filter */
#define MODCLIENT_MAX_INFLIGHT        64      /* published messages awaiting PUBACK */
#define MODCLIENT_MAX_PACKET          262144u /* largest packet sent or accepted (hub default) */
#define MODCLIENT_KEEPALIVE_S         60      /* MQTT keepalive sent in CONNECT */
#define MODCLIENT_ACK_TIMEOUT_MS      30000   /* CONNACK/SUBACK/PUBACK wait before reconnecting */
#define MODCLIENT_BACKOFF_MIN_MS      500     /* first retry delay */
#define MODCLIENT_BACKOFF_MAX_MS      30000   /* retry delay cap */
#define MODCLIENT_API_VERSION         "2018-06-30"
#define MODCLIENT_MAX_SOCK_PATH       107  /* bytes of a unix socket path */
#define MODCLIENT_TOKEN_LIFETIME_S    3600 /* SAS tokens from the workload API */
#define MODCLIENT_TOKEN_RENEW_S       300  /* reconnect this long before the token expires */
#define MODCLIENT_WORKLOAD_TIMEOUT_MS 5000 /* a sign request, end to end */

/*
 * Connection settings, read from the environment by modclient_config_from_env:
 *
 *   PERCH_HUB_HOST      hub host name or address (default: IOTEDGE_GATEWAYHOSTNAME,
 *                       else "perch-hub", which resolves to the host on the
 *                       `perch` network)
 *   PERCH_HUB_PORT      hub MQTT/TCP port (default 1883)
 *   IOTEDGE_DEVICEID    device id (default "perch-device")
 *   IOTEDGE_MODULEID    module id (default: the module's own default)
 *   IOTEDGE_IOTHUBHOSTNAME  host part of the MQTT user name (default: the hub host)
 *   PERCH_HUB_PASSWORD  MQTT password, e.g. a SAS token (wins over the workload
 *                       API when both are there)
 *   IOTEDGE_WORKLOADURI  unix:///PATH of the workload API (set by perch-agent):
 *                       at every connect the client asks it to sign a SAS
 *                       token for the module (valid MODCLIENT_TOKEN_LIFETIME_S,
 *                       reconnecting with a new one before it expires); needs
 *                       IOTEDGE_MODULEGENERATIONID, and IOTEDGE_APIVERSION
 *                       (default 2019-01-30)
 *   (neither)           no password: an anonymous login, for a hub run with
 *                       --allow-anonymous
 *
 * Client id `{device}/{module}`, user name `{iothubhost}/{device}/{module}/?api-version=...`,
 * as IoT Edge modules log in. The token's resource is
 * `{iothubhost}/devices/{device}/modules/{module}`.
 */
typedef struct modclient_config {
	char host[MODCLIENT_MAX_HOST + 1];               /* hub host, NUL-terminated */
	uint16_t port;                                   /* hub port, > 0 */
	char device_id[MODCLIENT_MAX_ID + 1];            /* NUL-terminated, no `/ + #` */
	char module_id[MODCLIENT_MAX_ID + 1];            /* NUL-terminated, no `/ + #` */
	char iothub_host[MODCLIENT_MAX_HOST + 1];        /* for the user name */
	char password[MODCLIENT_MAX_PASSWORD + 1];       /* empty: none. Never logged */
	char workload_path[MODCLIENT_MAX_SOCK_PATH + 1]; /* "": no workload API */
	char generation_id[MODCLIENT_MAX_ID + 1];        /* with workload_path */
	char workload_api[16];                           /* api-version of the workload API */
} modclient_config;

/*
 * modclient_config_from_env fills *cfg from the variables above;
 * default_module is the module id when IOTEDGE_MODULEID is not set. Logs and
 * returns PERCH_EINVAL for a value it cannot use (a bad port, an id with a
 * `/`), PERCH_ETOOBIG for one over its limit.
 */
PERCH_MUST_USE perch_err modclient_config_from_env(modclient_config *cfg,
                                                   const char *default_module);

/*
 * modclient_env_double reads environment variable name as a number into *out;
 * *out keeps def when the variable is unset or empty. Logs and returns
 * PERCH_EINVAL when it is not a finite number.
 */
PERCH_MUST_USE perch_err modclient_env_double(const char *name, double def, double *out);

/* One message received. Slices are valid during the callback only. */
typedef struct modclient_message {
	perch_slice topic; /* the whole topic */
	perch_slice input; /* the input name for `.../inputs/{input}/...`, else empty */
	perch_slice props; /* the encoded property bag of an IoT Hub topic, may be empty */
	perch_slice body;  /* the payload */
} modclient_message;

/*
 * Called for each PUBLISH received. Return PERCH_OK to acknowledge it;
 * anything else makes the client reconnect without acknowledging, so that
 * the hub delivers the message again. May call modclient_publish_output.
 */
typedef perch_err (*modclient_on_message)(void *arg, const modclient_message *msg);

/* One published message kept until its PUBACK. */
typedef struct modclient_inflight {
	uint8_t *packet;    /* owned: the encoded PUBLISH (NULL: free slot) */
	size_t len;         /* bytes of packet */
	uint16_t packet_id; /* its id, non-zero while the slot is used */
	bool sent;          /* written on the current connection */
	int64_t sent_ms;    /* when it was last written (monotonic ms) */
} modclient_inflight;

/* The client. Zero it, then modclient_init. Fields are private. */
typedef struct modclient {
	modclient_config cfg;
	const volatile sig_atomic_t *stop; /* set by a signal handler: leave run */
	modclient_on_message on_message;   /* may be NULL */
	void *on_message_arg;
	char subs[MODCLIENT_MAX_SUBS][MODCLIENT_MAX_FILTER + 1];
	size_t nsubs;           /* <= MODCLIENT_MAX_SUBS */
	int fd;                 /* -1 when not connected */
	bool ready;             /* CONNACK and SUBACK received */
	uint16_t sub_packet_id; /* the SUBSCRIBE awaiting SUBACK, or 0 */
	int64_t connect_ms;     /* when the current CONNECT was sent */
	int64_t last_send_ms;   /* last write (for PINGREQ) */
	int64_t last_recv_ms;   /* last packet read (for liveness) */
	int64_t retry_at_ms;    /* next connect attempt */
	int backoff_ms;         /* current retry delay */
	unsigned attempts;      /* failed attempts since last success */
	uint16_t next_id;       /* next packet id to try, non-zero */
	perch_mqtt_decoder dec; /* reads the hub's packets */
	modclient_inflight inflight[MODCLIENT_MAX_INFLIGHT];
	size_t ninflight;     /* used slots */
	uint64_t published;   /* messages acknowledged by the hub */
	uint64_t received;    /* messages received and acknowledged */
	uint64_t rng;         /* jitter state */
	int64_t token_expiry; /* Unix seconds of the token in use (workload API), 0 none */
} modclient;

/*
 * modclient_init prepares c with a copy of cfg; nothing is connected until
 * modclient_run. stop (may be NULL) is polled: when it becomes non-zero,
 * modclient_run returns PERCH_ECLOSED. Cannot fail.
 */
void modclient_init(modclient *c, const modclient_config *cfg, const volatile sig_atomic_t *stop);

/* modclient_set_handler sets the callback for received messages. */
void modclient_set_handler(modclient *c, modclient_on_message cb, void *arg);

/*
 * modclient_subscribe adds a topic filter, subscribed at QoS 1 on every
 * connect. PERCH_ENOSPC past MODCLIENT_MAX_SUBS, PERCH_ETOOBIG past
 * MODCLIENT_MAX_FILTER, PERCH_EINVAL for an empty filter.
 */
PERCH_MUST_USE perch_err modclient_subscribe(modclient *c, const char *filter);

/* modclient_inputs_filter writes `devices/{d}/modules/{m}/#` (the
 * module's inputs) into out (cap bytes, NUL-terminated); PERCH_ETOOBIG. */
PERCH_MUST_USE perch_err modclient_inputs_filter(const modclient *c, char *out, size_t cap);

/*
 * modclient_publish_output publishes body at QoS 1 on the module output
 * `devices/{d}/modules/{m}/messages/events/{props}` with `$.on` set to output
 * and `$.ct`/`$.ce` to JSON/UTF-8 (the IoT Hub conditions for routing on
 * $body), plus the pairs of props (may be NULL; the caller keeps it). The
 * message is copied: it is sent now when connected, else after the next
 * connect, and kept until acknowledged. Errors: PERCH_ENOSPC when
 * MODCLIENT_MAX_INFLIGHT messages await their PUBACK (call modclient_run and
 * try again), PERCH_ETOOBIG for a message over MODCLIENT_MAX_PACKET,
 * PERCH_EINVAL for a bad output name, PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err modclient_publish_output(modclient *c, const char *output,
                                                  const perch_props *props, perch_slice body);

/*
 * modclient_run does the client's work for up to timeout_ms (0: one pass
 * without waiting): connects when due, reads and answers packets, calls the
 * message callback, resends and pings, and returns early once something was
 * received. Connection failures are logged and retried, not returned.
 * Returns PERCH_OK, or PERCH_ECLOSED when the stop flag is set.
 */
PERCH_MUST_USE perch_err modclient_run(modclient *c, int timeout_ms);

/* modclient_connected: CONNACK and SUBACK received on the current connection. */
bool modclient_connected(const modclient *c);

/* modclient_pending returns the published messages not yet acknowledged. */
size_t modclient_pending(const modclient *c);

/* modclient_fini sends DISCONNECT when connected, closes, frees what c holds.
 * Safe on a zeroed or initialised client, and twice. */
void modclient_fini(modclient *c);

/*
 * modclient_workload_token asks the workload API of cfg (workload_path set)
 * to sign a SAS token for cfg's module, valid until expiry (Unix seconds),
 * and writes it into out (cap bytes, NUL-terminated). On failure returns
 * PERCH_EIO (cannot reach the socket, no answer in time), PERCH_EPERM (the
 * API refused: its message is in why), PERCH_EPROTO (an answer that is not
 * one) or PERCH_ETOOBIG, with a reason in why (wcap bytes).
 */
PERCH_MUST_USE perch_err modclient_workload_token(const modclient_config *cfg, uint64_t expiry,
                                                  char *out, size_t cap, char *why, size_t wcap);

/* modclient_now_ms returns a monotonic clock in milliseconds. */
int64_t modclient_now_ms(void);

#endif /* PERCH_MODCLIENT_H */
