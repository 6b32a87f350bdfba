/*
 * upstream.h — perch-hub's upstream link (docs/hub.md, "Upstream"): one MQTT
 * 3.1.1 client connection to the parent (another perch-hub, later
 * perch-cloud) over mqtts:// or wss:// (mqtt:// and ws:// for loopback and
 * tests), logged in as this device with a SAS token signed by the device
 * key, clean session 0. It drains the durable $upstream queues "u/0" (the
 * highest priority) .. "u/9" in priority order, FIFO within a priority, with
 * a window of unacknowledged QoS 1 publishes in flight; an entry leaves its
 * queue only at the parent's PUBACK, and whatever was in flight when the
 * link dropped is sent again (DUP) in order when it returns. Reconnects use
 * a short first retry and jittered exponential backoff with a short cap
 * while the parent is unreachable and a long one after it refused.
 *
 * The pure parts (URL parsing, backoff, user name) are exposed for
 * upstream_test.c. Everything else runs on the hub's loop thread.
 */
#ifndef HUB_UPSTREAM_H
#define HUB_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/slice.h"

struct hub;

#define HUB_UPSTREAM_PRIOS    10  /* u/0 .. u/9; 0 is the highest */
#define HUB_UPSTREAM_MAX_HOST 255 /* bytes of a host name in the URL */
#define HUB_UPSTREAM_MAX_PATH 255 /* bytes of a wss:// path */

typedef enum hub_upstream_scheme {
	HUB_UP_MQTT = 0, /* raw TCP, no TLS (insecure: loopback and tests) */
	HUB_UP_MQTTS,    /* raw TCP over TLS */
	HUB_UP_WS,       /* WebSocket, no TLS (insecure) */
	HUB_UP_WSS,      /* WebSocket over TLS */
} hub_upstream_scheme;

/* A parsed hub.upstream.url. */
typedef struct hub_upstream_url {
	hub_upstream_scheme scheme;
	char host[HUB_UPSTREAM_MAX_HOST + 1]; /* without brackets for IPv6 */
	int port;                             /* 1..65535; default 8883 (mqtts), 443 (wss) */
	char path[HUB_UPSTREAM_MAX_PATH + 1]; /* "/$iothub/websocket" unless given (ws) */
} hub_upstream_url;

/*
 * hub_upstream_parse_url parses mqtts://HOST[:PORT], wss://HOST[:PORT][/PATH]
 * and their insecure forms mqtt:// and ws:// into *out. Returns PERCH_OK, or
 * PERCH_EINVAL with why (a static text) set. Pure; any thread.
 */
PERCH_MUST_USE perch_err hub_upstream_parse_url(const char *url, hub_upstream_url *out,
                                                const char **why);

/* hub_upstream_tls: does the scheme use TLS? */
bool hub_upstream_tls(hub_upstream_scheme s);

/*
 * The two kinds of failed connection attempt (docs/hub.md "Outages",
 * "Refusals"). An unreachable parent costs nothing to try again soon; one
 * that answered and refused is not hammered.
 */
typedef enum hub_upstream_failure {
	HUB_UP_UNREACHABLE = 0, /* TCP refused, unreachable or timed out; closed or reset
	                           before CONNACK; a TLS handshake cut short (I/O) */
	HUB_UP_REFUSED,         /* CONNACK 1..5; the parent's TLS certificate does not
	                           verify or name the host, or another TLS failure it sent */
} hub_upstream_failure;

/* The reconnect delays: hub.upstream.backoff_first, backoff_max and
 * refused_backoff_max. */
typedef struct hub_upstream_backoff {
	int64_t first_ms;       /* the first retry after a loss */
	int64_t max_ms;         /* cap while the parent is unreachable */
	int64_t refused_max_ms; /* cap after refusals */
} hub_upstream_backoff;

/*
 * hub_upstream_backoff_ms is the wait before the next connection attempt
 * after a failure of the given kind. Unreachable (or the link lost): n is
 * the number of attempts since the link was last up (0: the first retry
 * after a loss), d is first_ms doubled n times, capped at max_ms. Refused:
 * n is the number of refusals before this one since the link was last up,
 * d is twice max_ms doubled n times, capped at refused_max_ms (a refusal
 * never waits less than an unreachable parent would). Then d is jittered
 * into [d/2, d] by r (any 32-bit random number). Pure; any thread.
 */
int64_t hub_upstream_backoff_ms(const hub_upstream_backoff *b, hub_upstream_failure kind,
                                uint32_t n, uint32_t r);

/* hub_upstream_username writes "{hostname}/{device}/?api-version=2018-06-30"
 * into out (cap bytes, NUL-terminated); PERCH_ETOOBIG when it does not fit. */
PERCH_MUST_USE perch_err hub_upstream_username(const char *hostname, const char *device, char *out,
                                               size_t cap);

/*
 * hub_upstream_link_send sends one PUBLISH on the link (twinsync.c): QoS 1
 * with the packet id kept for the one reported patch in flight (its PUBACK
 * calls hub_twinsync_acked), or QoS 0. PERCH_ECLOSED when the link is not
 * up; PERCH_ENOMEM; encoder errors.
 */
PERCH_MUST_USE perch_err hub_upstream_link_send(struct hub *h, perch_slice topic,
                                                perch_slice payload, bool qos1);

/* What /metrics shows of the link (metrics.c). */
typedef struct hub_upstream_stats {
	bool configured;          /* hub.upstream.url is set */
	bool up;                  /* CONNACK 0 received, link open */
	int64_t down_since_ms;    /* Unix ms the link was last lost (start: the start), 0 when up */
	int64_t up_at_ms;         /* Unix ms the link last came up, 0 when down */
	uint64_t connects;        /* connection attempts */
	uint64_t reconnects;      /* links that went down after being up */
	uint64_t refused[6];      /* CONNACKs refused, by return code 1..5 */
	uint64_t forwarded;       /* publishes acknowledged by the parent */
	uint64_t resent;          /* publishes sent again with DUP */
	uint64_t inflight;        /* unacknowledged publishes now */
	uint64_t expired;         /* entries of u/N dropped at their TTL */
	uint64_t dropped_too_big; /* messages that cannot be encoded as a PUBLISH */
	uint64_t depth[HUB_UPSTREAM_PRIOS];    /* messages queued per priority */
	uint64_t bytes[HUB_UPSTREAM_PRIOS];    /* their bytes */
	int64_t oldest_ms[HUB_UPSTREAM_PRIOS]; /* created_ms of the oldest, 0: unknown/empty */
	int64_t first_forward_ms; /* ms from the last link up to its first PUBACK, -1: none yet */
} hub_upstream_stats;

#endif /* HUB_UPSTREAM_H */
