/*
 * hublink.h — perch-agent's MQTT link to its perch-hub, over which it
 * publishes its report as the reported properties of the `$edgeAgent`
 * module twin (docs/agent.md, "The $edgeAgent twin").
 *
 * A small non-blocking MQTT 3.1.1 client driven by the agent's poll loop:
 * it connects to HOST:PORT (the hub's plain TCP listener on loopback) as
 * `{device}/$edgeAgent`, with a SAS token it signs with the module key it
 * derives from the device key, subscribes to `$iothub/twin/res/#`, reads
 * the twin once (to learn what the twin holds), and then sends JSON merge
 * patches that make the twin's reported section equal to the report: at
 * most one in flight, at most one per min_interval, nothing when nothing
 * changed. It reconnects with backoff when the link drops (the hub
 * restarted, the session was taken over) and before its token expires.
 * It never blocks, and never logs the token or a key.
 *
 * Everything here runs on the agent's loop thread; time is a parameter
 * (wall-clock Unix milliseconds) so that tests drive it.
 */
#ifndef AGENT_HUBLINK_H
#define AGENT_HUBLINK_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "perch/err.h"

#define AGENT_HUBLINK_MODULE      "$edgeAgent"
#define AGENT_HUBLINK_API_VERSION "2018-06-30"
#define AGENT_HUBLINK_MAX_SECTION 32768  /* the hub's limit on a twin section (compact JSON) */
#define AGENT_HUBLINK_MAX_PATCH   65536  /* the hub's limit on a reported patch */
#define AGENT_HUBLINK_MAX_PACKET  262144 /* largest packet accepted from the hub */
#define AGENT_HUBLINK_MAX_OUT     262144 /* bytes queued to the hub before giving up on it */

typedef struct agent_hublink agent_hublink;

/* The report to publish: a new reference (a JSON object), or NULL when it
 * cannot be made now (out of memory). */
typedef json_t *(*agent_hublink_report_fn)(void *ud);

typedef struct agent_hublink_cfg {
	const char *host;            /* IPv4 address of the hub, e.g. "127.0.0.1" */
	int port;                    /* its plain MQTT (TCP) port */
	const char *device_id;       /* the device's id */
	const char *iothub_hostname; /* host name in the user name and the token */
	const char *device_key;      /* base64 device key: copied, wiped on free */
	int64_t token_lifetime_ms;   /* SAS token lifetime; 0: 1 hour */
	int64_t min_interval_ms;     /* between two patches; 0: 1 second */
	int64_t timeout_ms;          /* for CONNACK, SUBACK and each twin answer; 0: 10 s */
	agent_hublink_report_fn report;
	void *ud; /* passed to report */
} agent_hublink_cfg;

/* agent_hublink_new makes a link (not connected: the first tick with the
 * hub ready connects). The strings of cfg are copied. PERCH_EINVAL for a
 * missing field or a key that is not base64, PERCH_ENOMEM. */
PERCH_MUST_USE perch_err agent_hublink_new(const agent_hublink_cfg *cfg, agent_hublink **out);

/* agent_hublink_free closes the connection (DISCONNECT when it is up),
 * wipes the key and frees l. NULL is fine. */
void agent_hublink_free(agent_hublink *l);

/* agent_hublink_tick connects when the hub is ready and it is time, sends
 * a patch when the report changed, pings, renews the token, and gives up on
 * answers that do not come. Returns the ms until it wants to run again (-1:
 * no deadline). */
int agent_hublink_tick(agent_hublink *l, int64_t now_ms, bool hub_ready);

/* agent_hublink_pollfds fills at most cap (0 or 1) pollfds; returns how many. */
size_t agent_hublink_pollfds(const agent_hublink *l, struct pollfd *fds, size_t cap);

/* agent_hublink_service reads, writes and handles what poll reported on
 * the fds agent_hublink_pollfds gave (n of them). */
void agent_hublink_service(agent_hublink *l, const struct pollfd *fds, size_t n, int64_t now_ms);

/* agent_hublink_status returns a new reference: {connected, inSync,
 * reportedVersion, connects, patches, refused, throttled, lastError}. l may
 * be NULL (the link is off). */
json_t *agent_hublink_status(const agent_hublink *l);

/* agent_hublink_diff returns a new reference: the JSON merge patch (RFC
 * 7396) that turns object from into object to (both borrowed): members of
 * to that are new or different, objects compared member by member, and
 * null for members of from that to lacks. An empty object when they are
 * equal; NULL when out of memory. */
json_t *agent_hublink_diff(const json_t *from, const json_t *to);

/* agent_hublink_fit makes report (borrowed, changed in place) acceptable as
 * a twin section: modules whose names twins refuse (`.`, `$`, a space) are
 * dropped; the name of the first dropped one goes to dropped (cap bytes,
 * "" when none). Returns how many were dropped. */
size_t agent_hublink_fit(json_t *report, char *dropped, size_t cap);

#endif /* AGENT_HUBLINK_H */
