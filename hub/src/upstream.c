/*
 * upstream.c — perch-hub's link to its parent (upstream.h, docs/hub.md
 * "Upstream"): an lws client connection on the hub's own loop, MQTT 3.1.1
 * through the proto/ codec, logged in as this device (SAS token from the
 * device key, clean session 0), draining the durable $upstream queues
 * u/0 .. u/9 with a window of QoS 1 publishes in flight.
 *
 * States: BACKOFF (waiting to connect; the first attempt waits 0 ms) ->
 * RESOLVING (a host name being looked up in resolve.c's worker thread; an IP
 * address skips it) -> CONNECTING (TCP, TLS, WebSocket handshake) ->
 * WAIT_CONNACK -> UP. Any loss goes back to BACKOFF with one log line
 * naming the reason. Entries
 * are handed out by hub_queue_next and acked at the PUBACK; a loss rewinds
 * every queue, so what was in flight goes out again, in order, with DUP.
 * The wire topic is the message's own (the hub stamped $.cdid/$.cmid into
 * it when it arrived), so the parent sees each message's true origin.
 *
 * Downward, the link subscribes (QoS 1) to the cloud-to-device topics of
 * this device and of each of its leaf devices; what the parent sends there
 * goes into the local C2D queues (c2d.c) and is acknowledged to the parent
 * once it is durable here (or refused for good: unknown device, bad
 * message). A message the local queue cannot take now (full) is not
 * acknowledged: the parent keeps it and sends it again on the next link.
 */
#include "upstream.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/log.h"
#include "perch/props.h"
#include "perch/sas.h"
#include "resolve.h"
#include "store.h"
#include "twinsync.h"
#include "upstream_tls.h"

#define LOG_MOD            "hub.upstream"
#define API_VERSION        "2018-06-30"
#define WRITE_CHUNK        65536
#define TX_HIGH_WATER      (1u << 20) /* stop filling the window above this */
#define CONNECT_TIMEOUT_MS 15000      /* host name lookup + TCP + TLS + CONNACK */
#define RESOLVE_POLL_MS    10         /* RESOLVING: how often to look for the answer */
#define TIMER_MS           250        /* housekeeping period while configured */
#define RX_BUF             65536
#define SUB_PID            65535 /* SUBSCRIBE's packet id: publishes use 1 .. window <= 65532 */
#define LINK_SUB_PID       65534 /* the SUBSCRIBE to $edgehub/# (twins, methods) */
#define TWIN_PID           65533 /* the reported patch in flight (twinsync.c) */
#define SUB_BATCH          32    /* filters per SUBSCRIBE */
#define RENEW_DRAIN_MS     5000  /* token renewal: wait this long for PUBACKs at most */
#define LOG_EVERY_MS       60000 /* an outage's "still cannot connect" lines, at most */

/* --- pure parts ---------------------------------------------------------------- */

bool hub_upstream_tls(hub_upstream_scheme s)
{
	return s == HUB_UP_MQTTS || s == HUB_UP_WSS;
}

perch_err hub_upstream_parse_url(const char *url, hub_upstream_url *out, const char **why)
{
	static const struct {
		const char *prefix;
		hub_upstream_scheme scheme;
		int port;
	} schemes[] = {{"mqtts://", HUB_UP_MQTTS, 8883},
	               {"mqtt://", HUB_UP_MQTT, 1883},
	               {"wss://", HUB_UP_WSS, 443},
	               {"ws://", HUB_UP_WS, 80}};
	memset(out, 0, sizeof *out);
	*why = "expected mqtts://HOST[:PORT] or wss://HOST[:PORT][/PATH] (mqtt://, ws:// for "
	       "tests)";
	if (url == NULL)
		return PERCH_EINVAL;
	const char *rest = NULL;
	for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
		size_t n = strlen(schemes[i].prefix);
		if (strncmp(url, schemes[i].prefix, n) == 0) {
			out->scheme = schemes[i].scheme;
			out->port = schemes[i].port;
			rest = url + n;
			break;
		}
	}
	if (rest == NULL)
		return PERCH_EINVAL;
	const char *slash = strchr(rest, '/');
	size_t hp_len = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
	bool ws = out->scheme == HUB_UP_WS || out->scheme == HUB_UP_WSS;
	if (slash != NULL && !ws && slash[1] != '\0') {
		*why = "an mqtts:// URL has no path";
		return PERCH_EINVAL;
	}
	if (slash != NULL && ws) {
		if (strlen(slash) > HUB_UPSTREAM_MAX_PATH) {
			*why = "the path is too long";
			return PERCH_EINVAL;
		}
		snprintf(out->path, sizeof out->path, "%s", slash);
	} else {
		snprintf(out->path, sizeof out->path, "%s", "/$iothub/websocket");
	}
	const char *host = rest, *port = NULL;
	size_t host_len = hp_len;
	if (hp_len > 0 && rest[0] == '[') {
		const char *close = memchr(rest, ']', hp_len);
		if (close == NULL) {
			*why = "an IPv6 address needs a closing ]";
			return PERCH_EINVAL;
		}
		host = rest + 1;
		host_len = (size_t)(close - host);
		if (close + 1 < rest + hp_len) {
			if (close[1] != ':') {
				*why = "expected :PORT after the IPv6 address";
				return PERCH_EINVAL;
			}
			port = close + 2;
		}
	} else {
		const char *colon = memchr(rest, ':', hp_len);
		if (colon != NULL) {
			host_len = (size_t)(colon - rest);
			port = colon + 1;
		}
	}
	if (host_len == 0 || host_len > HUB_UPSTREAM_MAX_HOST) {
		*why = "the host is missing or too long";
		return PERCH_EINVAL;
	}
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	for (size_t i = 0; i < host_len; i++) {
		char ch = out->host[i];
		if (ch <= ' ' || ch == '@' || ch == '?' || ch == '#' || ch == '/' || ch == 0x7f) {
			*why = "the host has a character a host name cannot have";
			return PERCH_EINVAL;
		}
	}
	if (port != NULL) {
		const char *end = rest + hp_len;
		long p = 0;
		if (port == end) {
			*why = "the port is empty";
			return PERCH_EINVAL;
		}
		for (const char *c = port; c < end; c++) {
			if (*c < '0' || *c > '9' || p > 65535) {
				*why = "the port is not a number from 1 to 65535";
				return PERCH_EINVAL;
			}
			p = p * 10 + (*c - '0');
		}
		if (p < 1 || p > 65535) {
			*why = "the port is not a number from 1 to 65535";
			return PERCH_EINVAL;
		}
		out->port = (int)p;
	}
	*why = NULL;
	return PERCH_OK;
}

int64_t hub_upstream_backoff_ms(const hub_upstream_backoff *b, hub_upstream_failure kind,
                                uint32_t n, uint32_t r)
{
	int64_t first = b->first_ms < 1 ? 1 : b->first_ms;
	int64_t max = b->max_ms < first ? first : b->max_ms;
	int64_t cap = max;
	if (kind == HUB_UP_REFUSED) {
		cap = b->refused_max_ms < max ? max : b->refused_max_ms;
		first = max > cap / 2 ? cap : max * 2;
	}
	int64_t d = first;
	for (uint32_t i = 0; i < n && d < cap; i++)
		d = d > cap / 2 ? cap : d * 2;
	int64_t half = d / 2;
	return half + (int64_t)(r % (uint64_t)(d - half + 1));
}

perch_err hub_upstream_username(const char *hostname, const char *device, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/%s/?api-version=%s", hostname, device, API_VERSION);
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

/* --- the link -------------------------------------------------------------------- */

_Static_assert(HUB_RESOLVE_MAX_HOST >= HUB_UPSTREAM_MAX_HOST, "a URL's host fits the resolver");

typedef enum up_state {
	UP_BACKOFF = 0,
	UP_RESOLVING,
	UP_CONNECTING,
	UP_WAIT_CONNACK,
	UP_UP
} up_state;

/* Where an mqtts:// connection is (upstream_tls.c). */
typedef enum tls_phase { TLS_TCP = 0, TLS_HANDSHAKE, TLS_DATA } tls_phase;

/* A C2D message from the parent, waiting to be durable in the local queue. */
typedef struct up_c2d {
	struct hub_upstream *u;
	uint64_t link; /* the connection it came on (hub_upstream.link_gen) */
	uint16_t pid;  /* its packet id; 0 for QoS 0 */
	hub_c2d_req *req;
	char device[PERCH_DEVICE_ID_MAX + 1];
	struct up_c2d *next, *prev;
} up_c2d;

/* One publish in flight; its packet id is its index + 1. */
typedef struct up_slot {
	hub_queue *q; /* NULL: free */
	uint64_t seq;
	int64_t created_ms;
} up_slot;

typedef struct hub_upstream {
	hub *h;
	hub_upstream_url url;
	char hostname[256]; /* in the user name and the token's sr */
	struct lws_vhost *vh;
	struct lws *wsi;       /* NULL unless CONNECTING, WAIT_CONNACK or UP */
	hub_resolver resolver; /* the host name's lookup; may outlive a timed-out attempt */
	char address[64];      /* lws: the numeric address in use (IPv6: with %scope) */
	hub_up_tls *tls;       /* mqtts:// only: our own TLS client */
	tls_phase phase;
	up_state state;
	perch_mqtt_decoder dec;
	/* Outgoing bytes [tx_head, tx_len), with LWS_PRE headroom before tx_head. */
	uint8_t *tx;
	size_t tx_head, tx_len, tx_cap;
	up_slot *slots; /* window of them */
	uint16_t *free_ids;
	size_t window, nfree;
	lws_sorted_usec_list_t sul;
	bool sul_armed;
	int64_t next_try_ms; /* BACKOFF: when to connect */
	uint32_t attempt;    /* connection attempts since the last success */
	int64_t started_ms;  /* the current attempt began */
	int64_t last_rx_ms, ping_sent_ms;
	int64_t renew_ms;    /* UP: reconnect with a new token at this time */
	int64_t up_since_ms; /* UP: when CONNACK came (monotonic) */
	bool first_acked;    /* a PUBACK arrived on this link */
	bool closing_for_renewal;
	const char *reason; /* why the current connection is ending (static) */
	char detail[320];
	bool was_up; /* the last connection reached UP */
	/* The kind of failure (backoff) and the outage's log lines (note_failure). */
	uint32_t refusals;                /* attempts since the last success the parent refused */
	bool refused;                     /* the current connection ends in a refusal */
	int64_t down_ms;                  /* the link was lost or the hub started (monotonic) */
	uint32_t failed;                  /* failed attempts since then */
	int64_t logged_ms;                /* the last "cannot connect" line */
	uint32_t unlogged;                /* failed attempts since that line */
	hub_upstream_failure logged_kind; /* what that line was about */
	char logged_detail[96];           /* and its detail (a refusal's, else "") */
	hub_upstream_stats st;
	uint64_t link_gen; /* counts connections: a late C2D answer is for the one it came on */
	up_c2d *c2d;       /* C2D messages from the parent not yet durable here */
} hub_upstream;

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static hub_upstream *up_of(struct lws *wsi)
{
	hub *h = lws_context_user(lws_get_context(wsi));
	return h != NULL ? h->upstream : NULL;
}

static hub_queue *queue_of(hub_upstream *u, unsigned prio)
{
	hub_store *s = hub_broker_store(u->h);
	char name[8];
	snprintf(name, sizeof name, "u/%u", prio);
	return s != NULL ? hub_store_queue_find(s, name) : NULL;
}

static void arm(hub_upstream *u, int64_t ms);

static size_t tx_pending(const hub_upstream *u)
{
	return u->tx_len - u->tx_head;
}

/* tx_append adds a and b (either may be empty) to the send buffer. */
static perch_err tx_append(hub_upstream *u, const void *a, size_t alen, const void *b, size_t blen)
{
	size_t need = u->tx_len + alen + blen;
	if (need > u->tx_cap) {
		/* Move pending bytes back to the front first. */
		size_t pend = tx_pending(u);
		if (u->tx_head > LWS_PRE) {
			memmove(u->tx + LWS_PRE, u->tx + u->tx_head, pend);
			u->tx_head = LWS_PRE;
			u->tx_len = LWS_PRE + pend;
			need = u->tx_len + alen + blen;
		}
		if (need > u->tx_cap) {
			size_t cap = u->tx_cap ? u->tx_cap : 65536;
			while (cap < need)
				cap *= 2;
			uint8_t *n = perch_realloc(u->tx, cap);
			if (n == NULL)
				return PERCH_ENOMEM;
			u->tx = n;
			u->tx_cap = cap;
		}
	}
	if (alen)
		memcpy(u->tx + u->tx_len, a, alen);
	if (blen)
		memcpy(u->tx + u->tx_len + alen, b, blen);
	u->tx_len += alen + blen;
	if (u->wsi != NULL)
		lws_callback_on_writable(u->wsi);
	return PERCH_OK;
}

static perch_err send_packet(hub_upstream *u, const perch_mqtt_packet *pkt)
{
	uint8_t small[512];
	size_t size = 0;
	perch_err err = perch_mqtt_encoded_size(pkt, &size);
	if (err != PERCH_OK)
		return err;
	uint8_t *buf = size <= sizeof small ? small : perch_malloc(size);
	if (buf == NULL)
		return PERCH_ENOMEM;
	size_t n = 0;
	err = perch_mqtt_encode(pkt, buf, size, &n);
	if (err == PERCH_OK)
		err = tx_append(u, buf, n, NULL, 0);
	if (buf != small) {
		memset(buf, 0, n);
		perch_free(buf);
	}
	return err;
}

/* release_inflight forgets what was in flight (the queues are rewound, so it
 * goes out again on the next link). */
static void release_inflight(hub_upstream *u)
{
	u->nfree = 0;
	for (size_t i = u->window; i-- > 0;) {
		u->slots[i].q = NULL;
		u->free_ids[u->nfree++] = (uint16_t)(i + 1);
	}
	u->st.inflight = 0;
	for (unsigned p = 0; p < HUB_UPSTREAM_PRIOS; p++) {
		hub_queue *q = queue_of(u, p);
		if (q != NULL)
			hub_queue_rewind(q);
	}
}

/* fmt_duration writes ms for a log line: "0.37 s", "42 s", "5m03s", "2h07m", "3d04h". */
static void fmt_duration(char *out, size_t cap, int64_t ms)
{
	long long s = (long long)((ms < 0 ? 0 : ms) + 500) / 1000;
	if (ms < 10000)
		snprintf(out, cap, "%.2f s", (double)(ms < 0 ? 0 : ms) / 1000.0);
	else if (s < 120)
		snprintf(out, cap, "%lld s", s);
	else if (s < 7200)
		snprintf(out, cap, "%lldm%02llds", s / 60, s % 60);
	else if (s < 172800)
		snprintf(out, cap, "%lldh%02lldm", s / 3600, s / 60 % 60);
	else
		snprintf(out, cap, "%lldd%02lldh", s / 86400, s / 3600 % 24);
}

/* backoff_of is the configured hub.upstream.backoff_* delays. */
static hub_upstream_backoff backoff_of(const hub *h)
{
	return (hub_upstream_backoff){.first_ms = h->cfg.upstream_backoff_first_ms,
	                              .max_ms = h->cfg.upstream_backoff_max_ms,
	                              .refused_max_ms = h->cfg.upstream_refused_max_ms};
}

/* note_failure counts a failed connection attempt and logs it without
 * flooding the journal while the parent stays away (an attempt every
 * 0.5 s): the first of an outage, and one of another kind than the last
 * line's, at once; the rest as one line a minute (LOG_EVERY_MS) with their
 * number. wait is the delay before the next attempt. */
static void note_failure(hub_upstream *u, hub_upstream_failure kind, const char *reason,
                         const char *detail, int64_t wait)
{
	int64_t now = hub_now_ms();
	u->failed++;
	u->unlogged++;
	/* A refusal's detail (CONNACK 4 -> 5) is news; an unreachable parent's
	 * (refused, reset, timed out) may change at every attempt. */
	const char *why = kind == HUB_UP_REFUSED && detail != NULL ? detail : "";
	bool at_once = u->failed == 1 || kind != u->logged_kind ||
	               strncmp(why, u->logged_detail, sizeof u->logged_detail - 1) != 0;
	if (!at_once && now - u->logged_ms < LOG_EVERY_MS)
		return;
	hub_upstream_backoff b = backoff_of(u->h);
	char next[32], cap[32], then[160];
	fmt_duration(next, sizeof next, wait);
	if (kind == HUB_UP_REFUSED) {
		fmt_duration(cap, sizeof cap,
		             b.refused_max_ms > b.max_ms ? b.refused_max_ms : b.max_ms);
		snprintf(then, sizeof then,
		         "the parent refused: next attempt in %s, backing off up to %s", next, cap);
	} else {
		fmt_duration(cap, sizeof cap, b.max_ms);
		snprintf(then, sizeof then, "next attempt in %s, then at least every %s%s", next,
		         cap, at_once ? "; a line a minute while it lasts" : "");
	}
	if (at_once) {
		PERCH_WARN(LOG_MOD, "cannot connect to %s:%d: %s%s%s (attempt %u; %s)", u->url.host,
		           u->url.port, reason, detail ? ": " : "", detail ? detail : "", u->failed,
		           then);
	} else {
		char span[32], down[32];
		fmt_duration(span, sizeof span, now - u->logged_ms);
		fmt_duration(down, sizeof down, now - u->down_ms);
		PERCH_WARN(LOG_MOD,
		           "still cannot connect to %s:%d after %u attempt%s in %s: %s%s%s "
		           "(down %s, %u attempts; %s)",
		           u->url.host, u->url.port, u->unlogged, u->unlogged == 1 ? "" : "s", span,
		           reason, detail ? ": " : "", detail ? detail : "", down, u->failed, then);
	}
	u->logged_ms = now;
	u->unlogged = 0;
	u->logged_kind = kind;
	snprintf(u->logged_detail, sizeof u->logged_detail, "%s", why);
}

/* go_down ends the current connection's bookkeeping and schedules the next
 * attempt. Called once per connection, when lws reports it closed (or
 * failed to open). */
static void go_down(hub_upstream *u, const char *reason, const char *detail)
{
	hub *h = u->h;
	bool renewal = u->closing_for_renewal;
	bool failed = u->state != UP_UP && u->state != UP_BACKOFF;
	hub_upstream_failure kind = failed && u->refused ? HUB_UP_REFUSED : HUB_UP_UNREACHABLE;
	if (u->reason != NULL) {
		reason = u->reason;
		detail = u->detail[0] ? u->detail : NULL;
	}
	int64_t wait = 0;
	if (!renewal) {
		uint32_t r = 0;
		if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
			r = (uint32_t)hub_now_ms();
		hub_upstream_backoff b = backoff_of(h);
		wait = hub_upstream_backoff_ms(
		        &b, kind, kind == HUB_UP_REFUSED ? u->refusals : u->attempt, r);
		u->attempt++;
		if (kind == HUB_UP_REFUSED)
			u->refusals++;
	}
	if (u->state == UP_UP) {
		u->st.up = false;
		u->st.reconnects++;
		u->st.down_since_ms = wall_ms();
		u->st.up_at_ms = 0;
		u->down_ms = hub_now_ms();
		u->failed = u->unlogged = 0;
		if (renewal)
			PERCH_INFO(LOG_MOD, "link to %s down: %s; reconnecting with a new token",
			           u->url.host, reason);
		else
			PERCH_NOTICE(LOG_MOD,
			             "link to %s:%d down: %s%s%s; %zu publishes in flight "
			             "go out again when it returns",
			             u->url.host, u->url.port, reason, detail ? ": " : "",
			             detail ? detail : "", (size_t)u->st.inflight);
	} else if (failed) {
		note_failure(u, kind, reason, detail, wait);
	}
	hub_twinsync_down(h);
	u->wsi = NULL;
	u->state = UP_BACKOFF;
	u->reason = NULL;
	u->detail[0] = '\0';
	u->refused = false;
	u->closing_for_renewal = false;
	perch_mqtt_decoder_fini(&u->dec);
	u->tx_head = u->tx_len = LWS_PRE;
	release_inflight(u);
	u->next_try_ms = hub_now_ms() + wait;
	if (!h->stopping)
		arm(u, wait);
}

/* fail closes the connection with a reason (static) and detail. */
static int fail(hub_upstream *u, const char *reason, const char *detail)
{
	if (u->reason == NULL) {
		u->reason = reason;
		snprintf(u->detail, sizeof u->detail, "%s", detail ? detail : "");
	}
	return -1;
}

/* fail_refused is fail for a connection the parent answered and refused:
 * the next attempt backs off towards hub.upstream.refused_backoff_max. */
static int fail_refused(hub_upstream *u, const char *reason, const char *detail)
{
	if (u->reason == NULL)
		u->refused = true;
	return fail(u, reason, detail);
}

static perch_err send_connect(hub_upstream *u)
{
	hub *h = u->h;
	const char *dev = h->ids.device_id;
	char user[512], token[PERCH_SAS_MAX_TOKEN], resource[512];
	size_t tlen = 0;
	if (h->ids.device_key[0] == '\0') {
		u->reason = "no device key yet";
		snprintf(u->detail, sizeof u->detail, "%s", h->cfg.device.key_file);
		return PERCH_ENOENT;
	}
	perch_err err = hub_upstream_username(u->hostname, dev, user, sizeof user);
	if (err != PERCH_OK)
		return err;
	snprintf(resource, sizeof resource, "%s/devices/%s", u->hostname, dev);
	int64_t life_s = h->cfg.upstream_token_lifetime_ms / 1000;
	uint64_t expiry = (uint64_t)time(NULL) + (uint64_t)life_s;
	err = perch_sas_sign(perch_slice_cstr(resource), (perch_slice){"", 0},
	                     perch_slice_cstr(h->ids.device_key), expiry, token, sizeof token,
	                     &tlen);
	if (err != PERCH_OK)
		return err;
	int64_t ka = h->cfg.upstream_keepalive_ms / 1000;
	perch_mqtt_packet pkt = {.type = PERCH_MQTT_CONNECT,
	                         .connect = {.client_id = perch_slice_cstr(dev),
	                                     .username = perch_slice_cstr(user),
	                                     .password = {token, tlen},
	                                     .keep_alive = (uint16_t)(ka > 65535 ? 65535 : ka),
	                                     .clean_session = false,
	                                     .has_username = true,
	                                     .has_password = true}};
	err = send_packet(u, &pkt);
	memset(token, 0, sizeof token);
	/* renew at 80% of the lifetime */
	u->renew_ms = hub_now_ms() + h->cfg.upstream_token_lifetime_ms * 4 / 5;
	return err;
}

/* pump fills the window from the queues, highest priority first. */
static void pump(hub_upstream *u)
{
	if (u->state != UP_UP || u->wsi == NULL || hub_now_ms() >= u->renew_ms)
		return;
	int64_t now = wall_ms();
	uint8_t hdr[PERCH_MQTT_PUBLISH_HEADER_MAX];
	while (u->nfree > 0 && tx_pending(u) < TX_HIGH_WATER) {
		hub_qentry e;
		hub_queue *q = NULL;
		bool got = false;
		for (unsigned p = 0; p < HUB_UPSTREAM_PRIOS && !got; p++) {
			q = queue_of(u, p);
			if (q == NULL)
				continue;
			perch_err err = hub_queue_next(q, now, &e);
			if (err == PERCH_OK)
				got = true;
			else if (err != PERCH_ENOENT)
				PERCH_WARN(LOG_MOD, "queue u/%u: %s", p, perch_strerror(err));
		}
		if (!got)
			return;
		uint16_t pid = u->free_ids[u->nfree - 1];
		perch_mqtt_publish pub = {.topic = e.msg->topic,
		                          .payload = e.msg->payload,
		                          .packet_id = pid,
		                          .qos = 1,
		                          .dup = e.dup};
		size_t hl = 0;
		perch_err err = perch_mqtt_encode_publish_header(&pub, hdr, sizeof hdr, &hl);
		if (err != PERCH_OK) {
			u->st.dropped_too_big++;
			PERCH_WARN(LOG_MOD,
			           "a message of %s cannot be sent as a PUBLISH (%s): dropped",
			           hub_queue_name(q), perch_strerror(err));
			if (hub_queue_ack(q, e.seq) != PERCH_OK)
				return;
			continue;
		}
		err = tx_append(u, hdr, hl, e.msg->payload.ptr, e.msg->payload.len);
		if (err != PERCH_OK) {
			hub_queue_rewind(q);
			(void)fail(u, "out of memory", NULL);
			lws_set_timeout(u->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
			                LWS_TO_KILL_ASYNC);
			return;
		}
		u->nfree--;
		up_slot *s = &u->slots[pid - 1];
		s->q = q;
		s->seq = e.seq;
		s->created_ms = e.msg->created_ms;
		u->st.inflight++;
		if (e.dup)
			u->st.resent++;
		hub_metrics_msg_out(u->h->metrics, 1);
	}
}

static int on_puback(hub_upstream *u, uint16_t pid)
{
	if (pid == TWIN_PID) {
		hub_twinsync_acked(u->h);
		return 0;
	}
	if (pid == 0 || pid > u->window || u->slots[pid - 1].q == NULL) {
		PERCH_DEBUG(LOG_MOD, "PUBACK %u for nothing in flight: ignored", pid);
		return 0;
	}
	up_slot *s = &u->slots[pid - 1];
	perch_err err = hub_queue_ack(s->q, s->seq);
	if (err != PERCH_OK && err != PERCH_ENOENT)
		return fail(u, "cannot record an acknowledgement", perch_strerror(err));
	s->q = NULL;
	u->free_ids[u->nfree++] = pid;
	u->st.inflight--;
	u->st.forwarded++;
	if (!u->first_acked) {
		u->first_acked = true;
		u->st.first_forward_ms = hub_now_ms() - u->up_since_ms;
	}
	return 0;
}

static const char *connack_text(uint8_t rc)
{
	switch (rc) {
	case 1: return "unacceptable protocol version";
	case 2: return "identifier rejected";
	case 3: return "server unavailable";
	case 4: return "bad user name or password (is the device key the one the parent has?)";
	case 5: return "not authorized (is this device registered at the parent?)";
	default: return "unknown code";
	}
}

/* --- downward: cloud-to-device messages from the parent ------------------------ */

static perch_err send_ack(hub_upstream *u, perch_mqtt_type type, uint16_t pid)
{
	perch_mqtt_packet ack = {.type = type, .ack = {.packet_id = pid}};
	return send_packet(u, &ack);
}

/* subscribe_c2d subscribes to the C2D topics of this device and of each of
 * its leaf devices (the parent refuses those not registered under it). */
static perch_err subscribe_c2d(hub_upstream *u)
{
	const hub_identities *ids = &u->h->ids;
	size_t n = 1 + ids->leaves.count, k = 0, pos = 0;
	char(*filters)[PERCH_DEVICE_ID_MAX + 40] = perch_calloc(n, sizeof *filters);
	perch_mqtt_filter *entries = perch_calloc(n, sizeof *entries);
	perch_err err = filters != NULL && entries != NULL ? PERCH_OK : PERCH_ENOMEM;
	const perch_map_slot *slot;
	const char *dev = ids->device_id;
	while (err == PERCH_OK && dev != NULL) {
		snprintf(filters[k], sizeof filters[k], "devices/%s/messages/devicebound/#", dev);
		entries[k] = (perch_mqtt_filter){perch_slice_cstr(filters[k]), 1};
		k++;
		slot = k < n ? perch_map_next(&ids->leaves, &pos) : NULL;
		dev = slot != NULL ? slot->key : NULL;
	}
	for (size_t i = 0; err == PERCH_OK && i < k; i += SUB_BATCH) {
		perch_mqtt_packet sub = {
		        .type = PERCH_MQTT_SUBSCRIBE,
		        .subscribe = {.packet_id = SUB_PID,
		                      .count = k - i < SUB_BATCH ? k - i : SUB_BATCH,
		                      .entries = entries + i}};
		err = send_packet(u, &sub);
	}
	perch_free(filters);
	perch_free(entries);
	return err;
}

/* subscribe_link takes the twin answers, desired patches and method calls
 * the parent has for this hub's identities (twinsync.c). */
static perch_err subscribe_link(hub_upstream *u)
{
	perch_mqtt_filter f = {perch_slice_cstr("$edgehub/#"), 1};
	perch_mqtt_packet sub = {
	        .type = PERCH_MQTT_SUBSCRIBE,
	        .subscribe = {.packet_id = LINK_SUB_PID, .count = 1, .entries = &f}};
	return send_packet(u, &sub);
}

perch_err hub_upstream_link_send(hub *h, perch_slice topic, perch_slice payload, bool qos1)
{
	hub_upstream *u = h->upstream;
	if (u == NULL || u->state != UP_UP || u->wsi == NULL || u->closing_for_renewal)
		return PERCH_ECLOSED;
	perch_mqtt_publish pub = {
	        .topic = topic, .payload = payload, .packet_id = qos1 ? TWIN_PID : 0, .qos = qos1};
	uint8_t hdr[PERCH_MQTT_PUBLISH_HEADER_MAX];
	size_t hl = 0;
	perch_err err = perch_mqtt_encode_publish_header(&pub, hdr, sizeof hdr, &hl);
	if (err == PERCH_OK)
		err = tx_append(u, hdr, hl, payload.ptr, payload.len);
	return err;
}

static void c2d_unlink(up_c2d *x)
{
	if (x->prev != NULL)
		x->prev->next = x->next;
	else if (x->u != NULL)
		x->u->c2d = x->next;
	if (x->next != NULL)
		x->next->prev = x->prev;
}

/* c2d_done: c2d.c's answer for a message from the parent. */
static void c2d_done(void *arg, unsigned status, const char *body, size_t len, const char *mid)
{
	up_c2d *x = arg;
	hub_upstream *u = x->u;
	/* Refused for good (no such device here, a bad message): acknowledged and
	 * dropped, or the parent would send it forever. Full: not acknowledged. */
	bool ack = status == 204 || status == 400 || status == 404 || status == 413;
	if (status != 204)
		PERCH_WARN(LOG_MOD, "C2D message %s for %s from the parent: %u %.*s: %s", mid,
		           x->device, status, (int)(len > 200 ? 200 : len), body,
		           ack ? "dropped"
		               : "not acknowledged (the parent sends it again on the next link)");
	c2d_unlink(x);
	if (u != NULL && ack && x->pid != 0 && x->link == u->link_gen && u->state == UP_UP &&
	    send_ack(u, PERCH_MQTT_PUBACK, x->pid) != PERCH_OK)
		PERCH_WARN(LOG_MOD, "out of memory: C2D message %s not acknowledged to the parent",
		           mid);
	perch_free(x);
}

/* on_publish takes a PUBLISH from the parent: a C2D message for this device
 * or one of its leaf devices; anything else is acknowledged and dropped. */
static int on_publish(hub_upstream *u, const perch_mqtt_publish *p)
{
	perch_iothub_topic t = {0};
	perch_props props;
	up_c2d *x = NULL;
	const char *why = NULL;
	if (p->qos <= 1 && perch_iothub_topic_parse(p->topic, &t, NULL) == PERCH_OK &&
	    perch_iothub_is_link(t.kind)) {
		/* Twins and methods: handled at once (what must be durable is in
		 * twins.db before this returns). */
		hub_twinsync_publish(u->h, &t, p->payload);
		if (p->qos == 0)
			return 0;
		return send_ack(u, PERCH_MQTT_PUBACK, p->packet_id) == PERCH_OK
		               ? 0
		               : fail(u, "out of memory", NULL);
	}
	if (p->qos > 1)
		why = "QoS 2 (the link subscribes with QoS 1)";
	else if (perch_iothub_topic_parse(p->topic, &t, NULL) != PERCH_OK ||
	         t.kind != PERCH_IOTHUB_C2D)
		why = "not a cloud-to-device topic";
	else if (perch_props_parse(t.props, &props, NULL) != PERCH_OK)
		why = "a bad property bag";
	else if ((x = perch_calloc(1, sizeof *x)) == NULL)
		return fail(u, "out of memory", NULL);
	size_t dn = 0;
	if (why == NULL && (perch_props_url_decode(t.device, x->device, sizeof x->device - 1, &dn,
	                                           NULL) != PERCH_OK ||
	                    memchr(x->device, '\0', dn) != NULL)) {
		why = "a bad device id";
	}
	if (why != NULL) {
		perch_free(x);
		PERCH_WARN(LOG_MOD, "a message from the parent on %.*s dropped: %s",
		           (int)(p->topic.len > 200 ? 200 : p->topic.len), p->topic.ptr, why);
		if (p->qos == 0)
			return 0;
		return send_ack(u, p->qos == 1 ? PERCH_MQTT_PUBACK : PERCH_MQTT_PUBREC,
		                p->packet_id) == PERCH_OK
		               ? 0
		               : fail(u, "out of memory", NULL);
	}
	x->device[dn] = '\0';
	x->u = u;
	x->link = u->link_gen;
	x->pid = p->qos == 1 ? p->packet_id : 0;
	x->next = u->c2d;
	if (u->c2d != NULL)
		u->c2d->prev = x;
	u->c2d = x;
	/* done may run at once (and free x): x is not touched after this. */
	hub_c2d_send(u->h, x->device, &props, p->payload, HUB_C2D_DEFAULT_TTL_S, c2d_done, x,
	             &x->req);
	return 0;
}

static int on_packet(hub_upstream *u, const perch_mqtt_packet *pkt)
{
	switch (pkt->type) {
	case PERCH_MQTT_CONNACK: {
		uint8_t rc = pkt->connack.return_code;
		if (u->state != UP_WAIT_CONNACK)
			return fail(u, "protocol error", "a second CONNACK");
		if (rc != 0) {
			if (rc <= 5)
				u->st.refused[rc]++;
			char d[160];
			snprintf(d, sizeof d, "CONNACK %u, %s", rc, connack_text(rc));
			return fail_refused(u, "refused by the parent", d);
		}
		u->state = UP_UP;
		u->attempt = 0;
		u->st.up = true;
		u->st.down_since_ms = 0;
		u->st.up_at_ms = wall_ms();
		u->up_since_ms = hub_now_ms();
		u->first_acked = false;
		u->was_up = true;
		char down[32];
		fmt_duration(down, sizeof down, u->up_since_ms - u->down_ms);
		PERCH_NOTICE(LOG_MOD,
		             "link to %s:%d up as %s (session %s, window %zu) after %s down, "
		             "%u attempt%s",
		             u->url.host, u->url.port, u->h->ids.device_id,
		             pkt->connack.session_present ? "resumed" : "new", u->window, down,
		             u->failed + 1, u->failed == 0 ? "" : "s");
		u->refusals = u->failed = u->unlogged = 0;
		if (subscribe_c2d(u) != PERCH_OK || subscribe_link(u) != PERCH_OK)
			return fail(u, "out of memory", NULL);
		pump(u);
		return 0;
	}
	case PERCH_MQTT_SUBACK: {
		if (pkt->suback.packet_id == LINK_SUB_PID) {
			/* Twins sync once the parent takes $edgehub/#; a parent that
			 * does not (an older hub) keeps the rest of the link. */
			if (pkt->suback.count > 0 && pkt->suback.codes[0] != 0x80)
				hub_twinsync_up(u->h);
			else
				PERCH_WARN(
				        LOG_MOD,
				        "the parent refused $edgehub/#: twins and direct methods "
				        "are not synced over this link (is this device registered "
				        "there with \"edge\": true?)");
			return 0;
		}
		size_t refused = 0;
		for (size_t i = 0; i < pkt->suback.count; i++)
			refused += pkt->suback.codes[i] == 0x80;
		if (refused > 0)
			PERCH_WARN(LOG_MOD,
			           "the parent refused cloud-to-device messages for %zu of %zu "
			           "devices "
			           "(a leaf device not registered there with \"parent\": \"%s\"?)",
			           refused, pkt->suback.count, u->h->ids.device_id);
		return 0;
	}
	case PERCH_MQTT_PUBACK: return on_puback(u, pkt->ack.packet_id);
	case PERCH_MQTT_PINGRESP: return 0;
	case PERCH_MQTT_PUBLISH: return on_publish(u, &pkt->publish);
	case PERCH_MQTT_PUBREL: {
		perch_mqtt_packet ack = {.type = PERCH_MQTT_PUBCOMP,
		                         .ack = {.packet_id = pkt->ack.packet_id}};
		return send_packet(u, &ack) == PERCH_OK ? 0 : fail(u, "out of memory", NULL);
	}
	default: return 0;
	}
}

static int on_rx(hub_upstream *u, const uint8_t *in, size_t len)
{
	u->last_rx_ms = hub_now_ms();
	u->ping_sent_ms = 0;
	while (len > 0) {
		size_t used = 0;
		perch_mqtt_packet pkt;
		perch_err err = perch_mqtt_decode(&u->dec, in, len, &used, &pkt);
		if (err == PERCH_EAGAIN)
			break;
		if (err != PERCH_OK)
			return fail(u, "protocol error from the parent",
			            perch_mqtt_reason_str(perch_mqtt_decoder_reason(&u->dec)));
		in += used;
		len -= used;
		if (on_packet(u, &pkt) != 0)
			return -1;
	}
	pump(u);
	return 0;
}

static int on_established(hub_upstream *u, struct lws *wsi)
{
	u->wsi = wsi;
	u->link_gen++;
	u->state = UP_WAIT_CONNACK;
	u->last_rx_ms = hub_now_ms();
	u->ping_sent_ms = 0;
	perch_mqtt_decoder_init(&u->dec, PERCH_MQTT_CLIENT, (size_t)u->h->cfg.max_packet_size, 0);
	u->tx_head = u->tx_len = LWS_PRE;
	if (send_connect(u) != PERCH_OK)
		return fail(u, u->reason ? u->reason : "cannot build CONNECT", NULL);
	return 0;
}

static int on_writeable(hub_upstream *u, bool ws)
{
	size_t pend = tx_pending(u);
	if (pend > 0) {
		size_t n = pend > WRITE_CHUNK ? WRITE_CHUNK : pend;
		if (u->tls != NULL) {
			long w = hub_up_tls_write(u->tls, u->tx + u->tx_head, n);
			if (w == HUB_UP_TLS_CLOSED)
				return fail(u, "connection lost", "TLS write failed");
			if (w == HUB_UP_TLS_AGAIN) {
				lws_callback_on_writable(u->wsi);
				return 0;
			}
			n = (size_t)w;
		} else if (lws_write(u->wsi, u->tx + u->tx_head, n,
		                     ws ? LWS_WRITE_BINARY : LWS_WRITE_RAW) < 0) {
			return fail(u, "write failed", NULL);
		}
		hub_metrics_tx_bytes(u->h->metrics, n);
		u->tx_head += n;
		if (u->tx_head == u->tx_len)
			u->tx_head = u->tx_len = LWS_PRE;
	}
	if (u->closing_for_renewal && tx_pending(u) == 0)
		return -1; /* DISCONNECT is out */
	pump(u);
	if (tx_pending(u) > 0)
		lws_callback_on_writable(u->wsi);
	return 0;
}

static int cb_link(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
	(void)user;
	hub_upstream *u = up_of(wsi);
	bool ws = false;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED: ws = true; /* fall through */
	case LWS_CALLBACK_RAW_CONNECTED:
		if (u == NULL || u->state != UP_CONNECTING)
			return -1;
		(void)ws;
		return on_established(u, wsi);
	case LWS_CALLBACK_CLIENT_RECEIVE:
	case LWS_CALLBACK_RAW_RX:
		if (u == NULL || u->wsi != wsi)
			return -1;
		return on_rx(u, in, len);
	case LWS_CALLBACK_CLIENT_WRITEABLE:
	case LWS_CALLBACK_RAW_WRITEABLE:
		if (u == NULL || u->wsi != wsi)
			return -1;
		return on_writeable(u, reason == LWS_CALLBACK_CLIENT_WRITEABLE);
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (u != NULL && (u->wsi == wsi || u->state == UP_CONNECTING)) {
			char d[640];
			const char *text = in != NULL ? (const char *)in : "";
			/* lws's TLS errors are terse: say what to check. */
			bool tls_err = strstr(text, "SSL") != NULL || strstr(text, "ssl") != NULL ||
			               strstr(text, "tls") != NULL;
			snprintf(d, sizeof d, "%.200s%s%s%s", text,
			         tls_err ? " (TLS: the parent's certificate must verify against "
			                   "hub.upstream.ca and name "
			                 : "",
			         tls_err ? u->url.host : "", tls_err ? ")" : "");
			/* SSL_ERROR_SSL (1) or a certificate lws rejected: the parent's TLS
			 * answered, and not as it must; anything else is I/O. */
			if (u->reason == NULL)
				u->refused = strstr(text, "SSL err 1:") != NULL ||
				             strstr(text, "cert didn't look good") != NULL;
			go_down(u, "connection failed", d[0] ? d : NULL);
		}
		return 0;
	case LWS_CALLBACK_CLIENT_CLOSED:
	case LWS_CALLBACK_RAW_CLOSE:
		if (u != NULL && (u->wsi == wsi || u->state == UP_CONNECTING))
			go_down(u, u->state == UP_UP ? "connection lost" : "closed by the parent",
			        NULL);
		return 0;
	default: return 0;
	}
}

/* do_handshake advances the TLS handshake of an mqtts:// connection. */
static int do_handshake(hub_upstream *u, struct lws *wsi)
{
	char why[300];
	switch (hub_up_tls_handshake(u->tls, why, sizeof why)) {
	case HUB_UP_TLS_WANT_READ: return 0;
	case HUB_UP_TLS_WANT_WRITE: lws_callback_on_writable(wsi); return 0;
	case HUB_UP_TLS_ERROR: return fail(u, "connection failed", why);
	case HUB_UP_TLS_REFUSED: return fail_refused(u, "connection failed", why);
	case HUB_UP_TLS_OK: break;
	}
	u->phase = TLS_DATA;
	return on_established(u, wsi);
}

static int cb_tls(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
	(void)user;
	(void)in;
	(void)len;
	hub_upstream *u = up_of(wsi);
	char why[200];
	switch (reason) {
	case LWS_CALLBACK_RAW_ADOPT_FILE: return 0;
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		if (u == NULL || u->wsi != wsi)
			return -1;
		if (u->phase == TLS_TCP) {
			if (hub_up_tls_connected(u->tls, why, sizeof why) != 0)
				return fail(u, "connection failed", why);
			u->phase = TLS_HANDSHAKE;
		}
		if (u->phase == TLS_HANDSHAKE)
			return do_handshake(u, wsi);
		return on_writeable(u, false);
	case LWS_CALLBACK_RAW_RX_FILE: {
		if (u == NULL || u->wsi != wsi)
			return -1;
		if (u->phase == TLS_TCP) {
			if (hub_up_tls_connected(u->tls, why, sizeof why) != 0)
				return fail(u, "connection failed", why);
			u->phase = TLS_HANDSHAKE;
		}
		if (u->phase == TLS_HANDSHAKE)
			return do_handshake(u, wsi);
		uint8_t buf[16384];
		for (;;) {
			long n = hub_up_tls_read(u->tls, buf, sizeof buf);
			if (n == HUB_UP_TLS_AGAIN)
				return 0;
			if (n == HUB_UP_TLS_CLOSED)
				return fail(u,
				            u->state == UP_UP ? "connection lost"
				                              : "closed by the parent",
				            NULL);
			if (on_rx(u, buf, (size_t)n) != 0)
				return -1;
		}
	}
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		if (u != NULL && u->wsi == wsi) {
			hub_up_tls_reset(u->tls);
			go_down(u, u->state == UP_UP ? "connection lost" : "closed by the parent",
			        NULL);
		}
		return 0;
	default: return 0;
	}
}

static const struct lws_protocols link_protocols[] = {
        {"mqtt", cb_link, 0, RX_BUF, 0, NULL, 0},
        {"perch-upstream-raw", cb_link, 0, RX_BUF, 0, NULL, 0},
        {"perch-upstream-tls", cb_tls, 0, RX_BUF, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* connect_tls starts an mqtts:// connection to to: our socket, lws's poll. */
static void connect_tls(hub_upstream *u, const hub_resolved *to)
{
	char why[200];
	u->state = UP_CONNECTING;
	u->phase = TLS_TCP;
	int fd = hub_up_tls_connect(u->tls, (const struct sockaddr *)&to->addr, to->len, why,
	                            sizeof why);
	if (fd < 0) {
		go_down(u, "connection failed", why);
		return;
	}
	lws_sock_file_fd_type d;
	d.filefd = fd;
	struct lws *wsi = lws_adopt_descriptor_vhost(u->vh, LWS_ADOPT_RAW_FILE_DESC, d,
	                                             "perch-upstream-tls", NULL);
	if (wsi == NULL) {
		close(fd);
		go_down(u, "connection failed", "the event loop did not take the socket");
		return;
	}
	u->wsi = wsi;
	lws_callback_on_writable(wsi); /* the connect completes */
}

/* connect_to starts the connection to the parent's address to. An lws
 * client gets it as a numeric address (so lws does not look the name up
 * again on the loop thread) and the URL's host as ci.host, which lws uses
 * for the Host header, the TLS SNI and the certificate's host-name check. */
static void connect_to(hub_upstream *u, const hub_resolved *to)
{
	if (u->tls != NULL) {
		connect_tls(u, to);
		return;
	}
	u->state = UP_CONNECTING;
	int rc = getnameinfo((const struct sockaddr *)&to->addr, to->len, u->address,
	                     sizeof u->address, NULL, 0, NI_NUMERICHOST);
	if (rc != 0) {
		go_down(u, "connection failed", gai_strerror(rc));
		return;
	}
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = u->h->ctx;
	ci.vhost = u->vh;
	ci.address = u->address;
	ci.port = u->url.port;
	ci.host = u->url.host;
	ci.origin = u->url.host;
	ci.path = u->url.path;
	if (hub_upstream_tls(u->url.scheme))
		ci.ssl_connection = LCCSCF_USE_SSL;
	bool ws = u->url.scheme == HUB_UP_WS || u->url.scheme == HUB_UP_WSS;
	if (ws) {
		ci.protocol = "mqtt";
		ci.local_protocol_name = "mqtt";
	} else {
		ci.method = "RAW";
		ci.local_protocol_name = "perch-upstream-raw";
	}
	struct lws *wsi = NULL;
	ci.pwsi = &wsi;
	if (lws_client_connect_via_info(&ci) == NULL && u->state == UP_CONNECTING) {
		/* lws may already have reported the failure through the callback */
		go_down(u, "connection failed", "cannot start a connection");
		return;
	}
	if (u->state == UP_CONNECTING)
		u->wsi = wsi;
}

/* try_connect begins an attempt: an IP address is connected to at once; a
 * host name is looked up in resolve.c's worker thread, and on_timer polls
 * for the answer (RESOLVING). */
static void try_connect(hub_upstream *u)
{
	u->started_ms = hub_now_ms();
	u->st.connects++;
	u->state = UP_RESOLVING;
	hub_resolved to;
	if (hub_resolve_numeric(u->url.host, u->url.port, &to)) {
		connect_to(u, &to);
		return;
	}
	/* An earlier attempt that timed out may have left its lookup running:
	 * this attempt waits for that one (its answer is as good as a new one)
	 * rather than start a second. */
	if (u->resolver.started)
		return;
	perch_err err = hub_resolve_start(&u->resolver, u->url.host, u->url.port);
	if (err != PERCH_OK) {
		char why[HUB_UPSTREAM_MAX_HOST + 64];
		snprintf(why, sizeof why, "cannot start looking %s up: %s", u->url.host,
		         perch_strerror(err));
		go_down(u, "connection failed", why);
	}
}

/* poll_resolve is RESOLVING's timer: connect once the lookup has answered,
 * give the attempt up when it fails or outlasts the connect timeout. */
static void poll_resolve(hub_upstream *u, int64_t now)
{
	hub_resolved to;
	switch (hub_resolve_poll(&u->resolver, &to)) {
	case HUB_RESOLVE_DONE:
		if (to.len == 0)
			go_down(u, "connection failed", to.why);
		else
			connect_to(u, &to);
		return;
	case HUB_RESOLVE_RUNNING:
		if (now - u->started_ms > CONNECT_TIMEOUT_MS) {
			/* The lookup goes on; the next attempt takes its answer. */
			char why[HUB_UPSTREAM_MAX_HOST + 64];
			snprintf(why, sizeof why, "cannot resolve %s: no answer within 15 s",
			         u->url.host);
			go_down(u, "connect timeout", why);
		}
		return;
	case HUB_RESOLVE_IDLE: go_down(u, "connection failed", "no host name lookup"); return;
	}
}

/* timer: connection attempts, keepalive, dead links, token renewal. */
static void on_timer(lws_sorted_usec_list_t *sul)
{
	hub_upstream *u = lws_container_of(sul, hub_upstream, sul);
	u->sul_armed = false;
	hub *h = u->h;
	if (h->stopping)
		return;
	int64_t now = hub_now_ms();
	int64_t ka = h->cfg.upstream_keepalive_ms;
	switch (u->state) {
	case UP_BACKOFF:
		if (now >= u->next_try_ms) {
			try_connect(u);
		} else {
			arm(u, u->next_try_ms - now);
			return;
		}
		break;
	case UP_RESOLVING: poll_resolve(u, now); break;
	case UP_CONNECTING:
	case UP_WAIT_CONNACK:
		if (now - u->started_ms > CONNECT_TIMEOUT_MS && u->wsi != NULL) {
			(void)fail(u, "connect timeout", "no CONNACK within 15 s");
			lws_set_timeout(u->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
			                LWS_TO_KILL_ASYNC);
		}
		break;
	case UP_UP:
		if (now - u->last_rx_ms >= ka && u->wsi != NULL) {
			(void)fail(u, "keepalive timeout", "the parent did not answer PINGREQ");
			lws_set_timeout(u->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
			                LWS_TO_KILL_ASYNC);
		} else if (now - u->last_rx_ms >= ka / 2 && u->ping_sent_ms == 0) {
			perch_mqtt_packet ping = {.type = PERCH_MQTT_PINGREQ};
			if (send_packet(u, &ping) == PERCH_OK)
				u->ping_sent_ms = now;
		}
		/* Token renewal: stop sending (pump checks renew_ms), let what is in
		 * flight be acknowledged (at most RENEW_DRAIN_MS), then a clean
		 * DISCONNECT, which keeps the session at the parent. */
		if (now >= u->renew_ms && u->wsi != NULL && !u->closing_for_renewal &&
		    (u->st.inflight == 0 || now - u->renew_ms >= RENEW_DRAIN_MS)) {
			perch_mqtt_packet d = {.type = PERCH_MQTT_DISCONNECT};
			if (send_packet(u, &d) == PERCH_OK) {
				u->closing_for_renewal = true;
				(void)fail(u, "token renewal", NULL);
				lws_set_timeout(u->wsi, PENDING_TIMEOUT_CLOSE_SEND, 1);
			}
		}
		break;
	}
	if (u->state == UP_RESOLVING)
		arm(u, RESOLVE_POLL_MS);
	else if (u->state != UP_BACKOFF)
		arm(u, ka / 4 < TIMER_MS ? ka / 4 : TIMER_MS);
}

static void arm(hub_upstream *u, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	lws_sul_schedule(u->h->ctx, 0, &u->sul, on_timer, (lws_usec_t)ms * LWS_US_PER_MS);
	u->sul_armed = true;
}

perch_err hub_upstream_open(hub *h)
{
	if (h->cfg.upstream_url == NULL || h->cfg.upstream_url[0] == '\0')
		return PERCH_OK;
	hub_upstream *u = perch_calloc(1, sizeof *u);
	if (u == NULL)
		return PERCH_ENOMEM;
	u->h = h;
	const char *why = NULL;
	if (hub_upstream_parse_url(h->cfg.upstream_url, &u->url, &why) != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "bad hub.upstream.url '%s': %s", h->cfg.upstream_url, why);
		perch_free(u);
		return PERCH_EINVAL;
	}
	snprintf(u->hostname, sizeof u->hostname, "%s",
	         h->cfg.upstream_hostname ? h->cfg.upstream_hostname : u->url.host);
	u->window = (size_t)h->cfg.upstream_window;
	if (u->window >= TWIN_PID)
		u->window = TWIN_PID - 1; /* the ids above are the SUBSCRIBEs' and twinsync's */
	u->slots = perch_calloc(u->window, sizeof *u->slots);
	u->free_ids = perch_calloc(u->window, sizeof *u->free_ids);
	if (u->slots == NULL || u->free_ids == NULL) {
		perch_free(u->slots);
		perch_free(u->free_ids);
		perch_free(u);
		return PERCH_ENOMEM;
	}
	bool tls = hub_upstream_tls(u->url.scheme);
	if (u->url.scheme == HUB_UP_MQTTS) {
		char why2[300];
		perch_err err =
		        hub_up_tls_new(h->cfg.upstream_ca, u->url.host, &u->tls, why2, sizeof why2);
		if (err != PERCH_OK) {
			PERCH_ERROR(LOG_MOD, "upstream %s: %s", h->cfg.upstream_url, why2);
			perch_free(u->slots);
			perch_free(u->free_ids);
			perch_free(u);
			return err;
		}
	}
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.vhost_name = "upstream";
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = link_protocols;
	if (u->url.scheme == HUB_UP_WSS) {
		info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.client_ssl_ca_filepath = h->cfg.upstream_ca;
	}
	u->vh = lws_create_vhost(h->ctx, &info);
	if (u->vh == NULL) {
		PERCH_ERROR(LOG_MOD, "cannot set up the upstream link%s",
		            tls ? ": TLS setup failed (check hub.upstream.ca)" : "");
		hub_up_tls_free(u->tls);
		perch_free(u->slots);
		perch_free(u->free_ids);
		perch_free(u);
		return PERCH_EIO;
	}
	if (hub_twinsync_open(h) != PERCH_OK) {
		hub_up_tls_free(u->tls);
		perch_free(u->slots);
		perch_free(u->free_ids);
		perch_free(u);
		return PERCH_ENOMEM;
	}
	h->upstream = u;
	u->st.configured = true;
	u->st.first_forward_ms = -1;
	u->st.down_since_ms = wall_ms();
	u->down_ms = hub_now_ms();
	u->tx_head = u->tx_len = LWS_PRE;
	release_inflight(u);
	if (!tls)
		PERCH_WARN(LOG_MOD,
		           "upstream %s is not encrypted (%s): for loopback and tests only",
		           h->cfg.upstream_url, u->url.scheme == HUB_UP_WS ? "ws://" : "mqtt://");
	PERCH_NOTICE(LOG_MOD, "upstream: %s as %s (host name %s, window %zu, keepalive %llds)",
	             h->cfg.upstream_url, h->ids.device_id, u->hostname, u->window,
	             (long long)(h->cfg.upstream_keepalive_ms / 1000));
	u->next_try_ms = hub_now_ms();
	arm(u, 0);
	return PERCH_OK;
}

void hub_upstream_close(hub *h)
{
	hub_upstream *u = h->upstream;
	if (u == NULL)
		return;
	if (h->ctx != NULL)
		lws_sul_cancel(&u->sul);
	hub_twinsync_close(h);
	h->upstream = NULL;
	/* Waits for a lookup still running: if DNS hangs, the shutdown waits for
	 * the system resolver to give up (its timeout and attempts, resolv.conf). */
	hub_resolve_fini(&u->resolver);
	while (u->c2d != NULL) {
		up_c2d *x = u->c2d;
		u->c2d = x->next;
		hub_c2d_cancel(x->req); /* its done is not called: x is ours to free */
		perch_free(x);
	}
	perch_mqtt_decoder_fini(&u->dec);
	hub_up_tls_free(u->tls);
	perch_free(u->tx);
	perch_free(u->slots);
	perch_free(u->free_ids);
	perch_free(u);
}

void hub_upstream_tick(hub *h)
{
	hub_upstream *u = h->upstream;
	if (u != NULL && u->state == UP_UP) {
		pump(u);
		hub_twinsync_tick(h);
	}
}

void hub_upstream_get_stats(hub *h, hub_upstream_stats *out)
{
	hub_upstream *u = h->upstream;
	memset(out, 0, sizeof *out);
	out->first_forward_ms = -1;
	if (u == NULL)
		return;
	*out = u->st;
	for (unsigned p = 0; p < HUB_UPSTREAM_PRIOS; p++) {
		hub_queue *q = queue_of(u, p);
		if (q == NULL)
			continue;
		hub_queue_stats qs;
		hub_queue_get_stats(q, &qs);
		out->depth[p] = qs.depth;
		out->bytes[p] = qs.bytes;
		out->expired += qs.expired;
		int64_t oldest = hub_queue_oldest_ms(q);
		out->oldest_ms[p] = oldest;
	}
}
