/*
 * hublink.c — the agent's MQTT link to perch-hub and the `$edgeAgent` twin
 * it keeps (hublink.h). One connection, driven by the poll loop:
 *
 *   IDLE --hub ready, backoff over--> TCP (non-blocking connect)
 *   TCP --writable--> CONNACK (CONNECT sent) --0--> SUBACK (subscribed to
 *   $iothub/twin/res/#) --> GET (twin GET sent) --200--> UP
 *   UP: a PATCH of the reported properties whenever the report differs from
 *   what the twin holds (one in flight, at most one per min_interval);
 *   PINGREQ when quiet; a clean reconnect before the token expires.
 *   Any error, EOF or missed answer --> IDLE, again after a backoff (1 s
 *   doubling to 30 s, reset once a link has stayed up 10 s) — or at once
 *   when the hub has just (re)started (the caller says when it is ready).
 *
 * What the twin holds is learnt from the GET at each connect, so a module
 * that left the deployment while the agent or the hub was down is still
 * deleted from the twin (a null in the merge patch). Answers: 204 -> the
 * twin now equals what was sent; 429 and 5xx -> the patch is sent again
 * after a backoff (2 s doubling to 60 s); 400 -> logged once, and that
 * report is not sent again (a changed one is).
 *
 * The SAS token and the derived key live on the stack only while CONNECT
 * is encoded, and are wiped; the output buffer is wiped as it drains.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>

#include "agent.h"
#include "hublink.h"
#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/log.h"
#include "perch/mqtt.h"
#include "perch/sas.h"

#define LOG_MOD         "agent.hublink"
#define RES_FILTER      "$iothub/twin/res/#"
#define KEEPALIVE_S     60
#define PING_AFTER_MS   (KEEPALIVE_S * 1000 / 2) /* of silence from our side */
#define RENEW_BEFORE_MS (5LL * 60 * 1000)        /* reconnect this long before expiry */
#define READ_CHUNK      16384
#define MAX_READS       16 /* per service call: the loop has other work */
#define ERR_MAX         200

static const agent_backoff link_backoff = {.base_ms = 1000, .max_ms = 30000, .healthy_ms = 10000};
static const agent_backoff patch_backoff = {.base_ms = 2000, .max_ms = 60000};

typedef enum link_state {
	L_IDLE = 0, /* not connected; next_ms: next attempt */
	L_TCP,      /* connect() in progress */
	L_CONNACK,  /* CONNECT sent */
	L_SUBACK,   /* SUBSCRIBE sent */
	L_GET,      /* twin GET sent */
	L_UP,       /* in sync or patching */
} link_state;

struct agent_hublink {
	char *host, *device_id, *hostname;
	char key[PERCH_SAS_MAX_KEY_B64 + 1]; /* device key, base64. Never logged */
	int port;
	int64_t lifetime_ms, interval_ms, timeout_ms;
	agent_hublink_report_fn report;
	void *ud;

	link_state state;
	int fd;                 /* -1 when IDLE */
	perch_mqtt_decoder dec; /* initialised at each connect */
	uint8_t *out;           /* queued bytes [out_off, out_len) */
	size_t out_len, out_off, out_cap;
	int64_t next_ms;     /* IDLE: next connect attempt */
	int64_t deadline_ms; /* TCP..GET, and a patch or ping in flight: give up then; 0 none */
	int64_t renew_ms;    /* UP: reconnect with a new token then */
	int64_t expiry_ms;   /* when the current token expires */
	int64_t last_tx_ms;  /* last bytes queued (keepalive) */
	bool ping_out;       /* a PINGREQ awaits its PINGRESP */
	bool hub_was_ready;  /* hub_ready at the last tick */
	int64_t up_ms;       /* when the link came up (0: not up since the last drop) */
	uint32_t failures;   /* connects in a row that did not last */
	uint16_t next_pid;   /* SUBSCRIBE packet ids */
	uint32_t rid_seq;
	char get_rid[16], patch_rid[16]; /* "" when none in flight */

	json_t *acked;    /* the twin's reported section as last known (no "$version") */
	json_t *inflight; /* the report a patch in flight makes it */
	json_t *refused;  /* the report the hub last refused with 400 */
	int64_t next_patch_ms;
	uint32_t patch_failures; /* 429/5xx in a row */
	bool in_sync;            /* acked equals the last report looked at */
	bool big_logged;         /* the over-the-limit error was said for this report */
	char dropped_logged[AGENT_MANIFEST_MAX_NAME + 1];

	uint64_t reported_version;
	uint64_t connects, patches, refused_n, throttled_n;
	char last_error[ERR_MAX];
};

/* --- merge patches and twin limits (pure) -------------------------------------- */

json_t *agent_hublink_diff(const json_t *from, const json_t *to)
{
	json_t *p = json_object();
	if (p == NULL)
		return NULL;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)to, k, v)
	{
		json_t *old = json_object_get(from, k);
		json_t *add = NULL;
		if (old != NULL && json_is_object(old) && json_is_object(v)) {
			add = agent_hublink_diff(old, v);
			if (add == NULL)
				goto oom;
			if (json_object_size(add) == 0) {
				json_decref(add);
				continue;
			}
		} else if (old == NULL || !json_equal(old, v)) {
			add = json_is_object(v) ? json_deep_copy(v) : json_incref(v);
			if (add == NULL)
				goto oom;
		} else {
			continue;
		}
		if (json_object_set_new(p, k, add) != 0)
			goto oom;
	}
	json_object_foreach((json_t *)from, k, v)
	{
		if (json_object_get(to, k) == NULL && json_object_set_new(p, k, json_null()) != 0)
			goto oom;
	}
	return p;
oom:
	json_decref(p);
	return NULL;
}

/* twin_name_ok: would the hub accept k as a property name? */
static bool twin_name_ok(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n > 1024)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c < 0x20 || c == 0x7f || c == '.' || c == '$' || c == ' ')
			return false;
	}
	return true;
}

size_t agent_hublink_fit(json_t *report, char *dropped, size_t cap)
{
	if (cap > 0)
		dropped[0] = '\0';
	json_t *mods = json_object_get(report, "modules");
	size_t n = 0;
	const char *k;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(mods, tmp, k, v)
	{
		if (twin_name_ok(k))
			continue;
		if (n++ == 0 && cap > 0)
			snprintf(dropped, cap, "%s", k);
		json_object_del(mods, k);
	}
	return n;
}

/* --- connection ---------------------------------------------------------------- */

static void set_error(agent_hublink *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(agent_hublink *l, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->last_error, sizeof l->last_error, fmt, ap);
	va_end(ap);
}

/* drop closes the connection and schedules the next attempt; why is logged
 * (at info when a link that was up goes down, else at debug, with a
 * warning on the fifth failure in a row). */
static void drop(agent_hublink *l, int64_t now, const char *why)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	bool was_up = l->state == L_UP;
	l->state = L_IDLE;
	perch_mqtt_decoder_fini(&l->dec);
	if (l->out != NULL)
		mbedtls_platform_zeroize(l->out, l->out_cap);
	l->out_len = l->out_off = 0;
	l->deadline_ms = 0;
	l->ping_out = false;
	l->get_rid[0] = l->patch_rid[0] = '\0';
	json_decref(l->inflight);
	l->inflight = NULL;
	l->in_sync = false;
	if (l->up_ms > 0 && agent_restart_reset(&link_backoff, now - l->up_ms))
		l->failures = 0;
	l->up_ms = 0;
	int64_t delay = agent_restart_delay_ms(&link_backoff, l->failures + 1);
	l->failures++;
	l->next_ms = now + delay;
	set_error(l, "%s", why);
	if (was_up)
		PERCH_INFO(LOG_MOD, "link to perch-hub down: %s; connecting again in %lld ms", why,
		           (long long)delay);
	else if (l->failures == 5)
		PERCH_WARN(LOG_MOD,
		           "cannot bring up the link to perch-hub at %s:%d (%s); the $edgeAgent "
		           "twin is not updated; trying again every %lld s at most",
		           l->host, l->port, why, (long long)link_backoff.max_ms / 1000);
	else
		PERCH_DEBUG(LOG_MOD, "link to perch-hub not up: %s; again in %lld ms", why,
		            (long long)delay);
}

/* flush writes what is queued; false after dropping the connection. */
static bool flush(agent_hublink *l, int64_t now)
{
	while (l->out_off < l->out_len) {
		ssize_t w = send(l->fd, l->out + l->out_off, l->out_len - l->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (w <= 0) {
			char why[120];
			snprintf(why, sizeof why, "send: %s", w < 0 ? strerror(errno) : "closed");
			drop(l, now, why);
			return false;
		}
		l->out_off += (size_t)w;
	}
	mbedtls_platform_zeroize(l->out, l->out_len);
	l->out_len = l->out_off = 0;
	return true;
}

/* queue encodes pkt behind what is queued and tries to send it. False after
 * dropping the connection. */
static bool queue(agent_hublink *l, const perch_mqtt_packet *pkt, int64_t now)
{
	size_t size = 0;
	perch_err err = perch_mqtt_encoded_size(pkt, &size);
	if (err != PERCH_OK || l->out_len + size > AGENT_HUBLINK_MAX_OUT) {
		drop(l, now,
		     err != PERCH_OK ? "a packet that cannot be encoded"
		                     : "the hub does not read what it is sent");
		return false;
	}
	if (l->out_len + size > l->out_cap) {
		size_t cap = l->out_cap > 0 ? l->out_cap : 4096;
		while (cap < l->out_len + size)
			cap *= 2;
		uint8_t *b = perch_malloc(cap);
		if (b == NULL) {
			drop(l, now, "out of memory");
			return false;
		}
		if (l->out != NULL) {
			memcpy(b, l->out, l->out_len);
			mbedtls_platform_zeroize(l->out, l->out_cap);
		}
		perch_free(l->out);
		l->out = b;
		l->out_cap = cap;
	}
	size_t len = 0;
	if (perch_mqtt_encode(pkt, l->out + l->out_len, l->out_cap - l->out_len, &len) !=
	    PERCH_OK) {
		drop(l, now, "a packet that cannot be encoded");
		return false;
	}
	l->out_len += len;
	l->last_tx_ms = now;
	return l->state == L_TCP || flush(l, now);
}

static bool publish(agent_hublink *l, const char *topic, const char *body, size_t len, int64_t now)
{
	perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH};
	p.publish.topic = perch_slice_cstr(topic);
	p.publish.payload = (perch_slice){body, len};
	return queue(l, &p, now);
}

/* send_connect queues CONNECT with a fresh token. */
static bool send_connect(agent_hublink *l, int64_t now)
{
	char mkey[PERCH_SAS_KEY_B64_LEN + 1], token[1024], resource[600], user[600], cid[300];
	size_t klen = 0, tlen = 0;
	uint64_t expiry = (uint64_t)((now + l->lifetime_ms) / 1000);
	snprintf(resource, sizeof resource, "%s/devices/%s/modules/%s", l->hostname, l->device_id,
	         AGENT_HUBLINK_MODULE);
	snprintf(user, sizeof user, "%s/%s/%s/?api-version=%s", l->hostname, l->device_id,
	         AGENT_HUBLINK_MODULE, AGENT_HUBLINK_API_VERSION);
	snprintf(cid, sizeof cid, "%s/%s", l->device_id, AGENT_HUBLINK_MODULE);
	perch_err err = perch_sas_derive_module_key(perch_slice_cstr(l->key),
	                                            PERCH_SLICE_LIT(AGENT_HUBLINK_MODULE), mkey,
	                                            sizeof mkey, &klen);
	if (err == PERCH_OK)
		err = perch_sas_sign(perch_slice_cstr(resource), (perch_slice){NULL, 0},
		                     (perch_slice){mkey, klen}, expiry, token, sizeof token, &tlen);
	mbedtls_platform_zeroize(mkey, sizeof mkey);
	if (err != PERCH_OK) {
		mbedtls_platform_zeroize(token, sizeof token);
		drop(l, now, "cannot sign a token for $edgeAgent");
		return false;
	}
	perch_mqtt_packet p = {.type = PERCH_MQTT_CONNECT};
	p.connect.client_id = perch_slice_cstr(cid);
	p.connect.username = perch_slice_cstr(user);
	p.connect.password = (perch_slice){token, tlen};
	p.connect.has_username = p.connect.has_password = true;
	p.connect.clean_session = true;
	p.connect.keep_alive = KEEPALIVE_S;
	l->state = L_CONNACK;
	l->deadline_ms = now + l->timeout_ms;
	int64_t before =
	        l->lifetime_ms > 4 * RENEW_BEFORE_MS ? RENEW_BEFORE_MS : l->lifetime_ms / 4;
	l->renew_ms = now + l->lifetime_ms - before;
	l->expiry_ms = (int64_t)expiry * 1000;
	bool ok = queue(l, &p, now);
	mbedtls_platform_zeroize(token, sizeof token);
	return ok;
}

static void start_connect(agent_hublink *l, int64_t now)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		char why[120];
		snprintf(why, sizeof why, "socket: %s", strerror(errno));
		drop(l, now, why);
		return;
	}
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)l->port);
	if (inet_pton(AF_INET, l->host, &sa.sin_addr) != 1) {
		close(fd);
		drop(l, now, "the hub's address is not an IPv4 address");
		return;
	}
	l->fd = fd;
	l->connects++;
	perch_mqtt_decoder_init(&l->dec, PERCH_MQTT_CLIENT, AGENT_HUBLINK_MAX_PACKET, 0);
	l->state = L_TCP;
	l->deadline_ms = now + l->timeout_ms;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		(void)send_connect(l, now);
		return;
	}
	if (errno != EINPROGRESS) {
		char why[120];
		snprintf(why, sizeof why, "connect to %s:%d: %s", l->host, l->port,
		         strerror(errno));
		drop(l, now, why);
	}
}

/* --- the twin -------------------------------------------------------------------- */

static void new_rid(agent_hublink *l, char *rid, size_t cap)
{
	snprintf(rid, cap, "%u", ++l->rid_seq);
}

static void send_get(agent_hublink *l, int64_t now)
{
	char topic[64];
	new_rid(l, l->get_rid, sizeof l->get_rid);
	snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=%s", l->get_rid);
	l->state = L_GET;
	l->deadline_ms = now + l->timeout_ms;
	(void)publish(l, topic, "", 0, now);
}

/* maybe_patch sends a patch when the report differs from the twin. */
static void maybe_patch(agent_hublink *l, int64_t now)
{
	if (l->state != L_UP || l->patch_rid[0] != '\0' || now < l->next_patch_ms)
		return;
	l->next_patch_ms = now + l->interval_ms;
	json_t *r = l->report(l->ud);
	if (r == NULL)
		return;
	char dropped[AGENT_MANIFEST_MAX_NAME + 1];
	size_t nd = agent_hublink_fit(r, dropped, sizeof dropped);
	if (nd > 0 && strcmp(dropped, l->dropped_logged) != 0)
		PERCH_WARN(LOG_MOD,
		           "module '%s'%s left out of the $edgeAgent twin: twin property names "
		           "cannot contain '.', '$' or a space",
		           dropped, nd > 1 ? " (and others)" : "");
	snprintf(l->dropped_logged, sizeof l->dropped_logged, "%s", nd > 0 ? dropped : "");
	l->in_sync = l->acked != NULL && json_equal(r, l->acked);
	if (l->in_sync || (l->refused != NULL && json_equal(r, l->refused))) {
		json_decref(r);
		return;
	}
	size_t full = json_dumpb(r, NULL, 0, JSON_COMPACT);
	json_t *patch = agent_hublink_diff(l->acked, r);
	char *body = NULL;
	size_t len = patch != NULL ? json_dumpb(patch, NULL, 0, JSON_COMPACT) : 0;
	if (patch == NULL || full > AGENT_HUBLINK_MAX_SECTION || len > AGENT_HUBLINK_MAX_PATCH) {
		if (patch != NULL && !l->big_logged)
			PERCH_ERROR(LOG_MOD,
			            "the report is %zu bytes as compact JSON (a patch of %zu): "
			            "over the "
			            "hub's twin limits (%u bytes a section, %u a patch); the "
			            "$edgeAgent "
			            "twin keeps reported version %llu until the report is smaller",
			            full, len, AGENT_HUBLINK_MAX_SECTION, AGENT_HUBLINK_MAX_PATCH,
			            (unsigned long long)l->reported_version);
		if (patch != NULL) {
			l->big_logged = true;
			set_error(l, "report over the twin size limits (%zu bytes)", full);
			json_decref(l->refused);
			l->refused = json_incref(r);
		}
		json_decref(patch);
		json_decref(r);
		return;
	}
	l->big_logged = false;
	/* json_dumpb allocates too: 0 is its out of memory (a patch is never
	 * empty: at least "{}"); the next interval tries again. */
	body = len > 0 ? perch_malloc(len) : NULL;
	size_t got = body != NULL ? json_dumpb(patch, body, len, JSON_COMPACT) : 0;
	json_decref(patch);
	if (got == 0 || got != len || full == 0) {
		perch_free(body);
		json_decref(r);
		return;
	}
	char topic[96];
	new_rid(l, l->patch_rid, sizeof l->patch_rid);
	snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/reported/?$rid=%s",
	         l->patch_rid);
	json_decref(l->inflight);
	l->inflight = r;
	l->patches++;
	l->deadline_ms = now + l->timeout_ms;
	PERCH_DEBUG(LOG_MOD, "reported patch $rid=%s: %zu bytes", l->patch_rid, len);
	(void)publish(l, topic, body, len, now);
	perch_free(body);
}

/* error_message: the "message" of an error answer, or "". */
static void error_message(perch_slice payload, char *out, size_t cap)
{
	out[0] = '\0';
	json_t *o = json_loadb(payload.ptr, payload.len, 0, NULL);
	const char *m = json_string_value(json_object_get(o, "message"));
	snprintf(out, cap, "%s", m != NULL ? m : "");
	json_decref(o);
}

static void on_get_answer(agent_hublink *l, const perch_iothub_topic *t, perch_slice payload,
                          int64_t now)
{
	l->get_rid[0] = '\0';
	if (t->status != 200) {
		char msg[200], why[300];
		error_message(payload, msg, sizeof msg);
		snprintf(why, sizeof why, "twin GET answered %u %s", t->status, msg);
		drop(l, now, why);
		return;
	}
	json_t *doc = json_loadb(payload.ptr, payload.len, 0, NULL);
	json_t *rep = json_object_get(doc, "reported");
	json_t *acked = json_is_object(rep) ? json_deep_copy(rep) : NULL;
	json_decref(doc);
	if (acked == NULL) {
		drop(l, now, "the twin GET answer is not a twin");
		return;
	}
	l->reported_version = (uint64_t)json_integer_value(json_object_get(acked, "$version"));
	const char *k;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(acked, tmp, k, v)
	{
		if (k[0] == '$')
			json_object_del(acked, k);
	}
	json_decref(l->acked);
	l->acked = acked;
	json_decref(l->refused); /* the twin may have changed: try again */
	l->refused = NULL;
	l->state = L_UP;
	l->up_ms = now;
	l->deadline_ms = 0;
	l->next_patch_ms = now;
	l->last_error[0] = '\0';
	PERCH_INFO(LOG_MOD,
	           "link to perch-hub up (%s:%d, as %s/%s); the twin has reported version %llu",
	           l->host, l->port, l->device_id, AGENT_HUBLINK_MODULE,
	           (unsigned long long)l->reported_version);
	maybe_patch(l, now);
}

static void on_patch_answer(agent_hublink *l, const perch_iothub_topic *t, perch_slice payload,
                            int64_t now)
{
	l->patch_rid[0] = '\0';
	if (!l->ping_out)
		l->deadline_ms = 0;
	json_t *sent = l->inflight;
	l->inflight = NULL;
	if (t->status == 204 || t->status == 200) {
		json_decref(l->acked);
		l->acked = sent;
		if (t->has_version)
			l->reported_version = t->version;
		l->patch_failures = 0;
		l->in_sync = true;
		PERCH_DEBUG(LOG_MOD, "the twin has reported version %llu",
		            (unsigned long long)l->reported_version);
		return;
	}
	char msg[200];
	error_message(payload, msg, sizeof msg);
	if (t->status == 400) {
		l->refused_n++;
		PERCH_ERROR(
		        LOG_MOD,
		        "perch-hub refused the reported patch (400): %s; this report is not sent "
		        "again (a changed one is)",
		        msg);
		set_error(l, "patch refused (400): %s", msg);
		json_decref(l->refused);
		l->refused = sent;
		return;
	}
	json_decref(sent);
	int64_t delay = agent_restart_delay_ms(&patch_backoff, l->patch_failures + 1);
	l->patch_failures++;
	l->next_patch_ms = now + delay;
	if (t->status == 429) {
		l->throttled_n++;
		if (l->patch_failures == 1)
			PERCH_WARN(LOG_MOD,
			           "perch-hub throttles twin requests (429): next patch in %lld ms",
			           (long long)delay);
		set_error(l, "throttled (429)");
	} else {
		PERCH_WARN(LOG_MOD, "reported patch answered %u %s: sent again in %lld ms",
		           t->status, msg, (long long)delay);
		set_error(l, "patch answered %u", t->status);
	}
}

static void on_publish(agent_hublink *l, const perch_mqtt_publish *p, int64_t now)
{
	if (p->qos > 0) {
		perch_mqtt_packet ack = {.type = PERCH_MQTT_PUBACK};
		ack.ack.packet_id = p->packet_id;
		if (!queue(l, &ack, now))
			return;
	}
	perch_iothub_topic t;
	if (perch_iothub_topic_parse(p->topic, &t, NULL) != PERCH_OK ||
	    t.kind != PERCH_IOTHUB_TWIN_RESPONSE)
		return;
	if (l->get_rid[0] != '\0' && perch_slice_eq_cstr(t.rid, l->get_rid))
		on_get_answer(l, &t, p->payload, now);
	else if (l->patch_rid[0] != '\0' && perch_slice_eq_cstr(t.rid, l->patch_rid))
		on_patch_answer(l, &t, p->payload, now);
}

/* handle one packet from the hub; the link may be dropped on return. */
static void handle(agent_hublink *l, const perch_mqtt_packet *pkt, int64_t now)
{
	switch (pkt->type) {
	case PERCH_MQTT_CONNACK:
		if (l->state != L_CONNACK)
			break;
		if (pkt->connack.return_code != PERCH_MQTT_CONNACK_ACCEPTED) {
			char why[160];
			snprintf(why, sizeof why,
			         "perch-hub refused the $edgeAgent login (CONNACK %u%s)",
			         pkt->connack.return_code,
			         pkt->connack.return_code == PERCH_MQTT_CONNACK_BAD_LOGIN
			                 ? ": is device.key_file the hub's device key?"
			                 : "");
			PERCH_WARN(LOG_MOD, "%s", why);
			drop(l, now, why);
			return;
		}
		{
			perch_mqtt_filter f = {PERCH_SLICE_LIT(RES_FILTER), 0};
			perch_mqtt_packet sub = {.type = PERCH_MQTT_SUBSCRIBE};
			if (++l->next_pid == 0)
				l->next_pid = 1;
			sub.subscribe.packet_id = l->next_pid;
			sub.subscribe.count = 1;
			sub.subscribe.entries = &f;
			l->state = L_SUBACK;
			l->deadline_ms = now + l->timeout_ms;
			(void)queue(l, &sub, now);
		}
		break;
	case PERCH_MQTT_SUBACK:
		if (l->state != L_SUBACK)
			break;
		if (pkt->suback.count < 1 || pkt->suback.codes[0] == PERCH_MQTT_SUBACK_FAILURE) {
			PERCH_WARN(LOG_MOD, "perch-hub refused $edgeAgent's subscription to %s",
			           RES_FILTER);
			drop(l, now, "subscription to " RES_FILTER " refused");
			return;
		}
		send_get(l, now);
		break;
	case PERCH_MQTT_PUBLISH: on_publish(l, &pkt->publish, now); break;
	case PERCH_MQTT_PINGRESP:
		l->ping_out = false;
		if (l->patch_rid[0] == '\0')
			l->deadline_ms = 0;
		break;
	default: break;
	}
}

static void read_some(agent_hublink *l, int64_t now)
{
	uint8_t buf[READ_CHUNK];
	for (int i = 0; i < MAX_READS && l->fd >= 0; i++) {
		ssize_t r = recv(l->fd, buf, sizeof buf, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			char why[120];
			snprintf(why, sizeof why, "%s",
			         r == 0 ? "the hub closed the connection" : strerror(errno));
			drop(l, now, why);
			return;
		}
		const uint8_t *p = buf;
		size_t left = (size_t)r;
		while (left > 0 && l->fd >= 0) {
			perch_mqtt_packet pkt;
			size_t used = 0;
			perch_err err = perch_mqtt_decode(&l->dec, p, left, &used, &pkt);
			p += used;
			left -= used;
			if (err == PERCH_EAGAIN)
				break;
			if (err != PERCH_OK) {
				char why[160];
				snprintf(why, sizeof why, "bad packet from the hub: %s",
				         perch_mqtt_reason_str(perch_mqtt_decoder_reason(&l->dec)));
				drop(l, now, why);
				return;
			}
			handle(l, &pkt, now);
		}
	}
}

/* --- the loop's interface -------------------------------------------------------- */

perch_err agent_hublink_new(const agent_hublink_cfg *cfg, agent_hublink **out)
{
	*out = NULL;
	if (cfg->host == NULL || cfg->device_id == NULL || cfg->iothub_hostname == NULL ||
	    cfg->device_key == NULL || cfg->report == NULL || cfg->port <= 0 || cfg->port > 65535 ||
	    !perch_sas_key_valid(perch_slice_cstr(cfg->device_key)) ||
	    strlen(cfg->device_key) > PERCH_SAS_MAX_KEY_B64)
		return PERCH_EINVAL;
	agent_hublink *l = perch_calloc(1, sizeof *l);
	if (l == NULL)
		return PERCH_ENOMEM;
	l->fd = -1;
	l->host = perch_strdup(cfg->host);
	l->device_id = perch_strdup(cfg->device_id);
	l->hostname = perch_strdup(cfg->iothub_hostname);
	if (l->host == NULL || l->device_id == NULL || l->hostname == NULL) {
		agent_hublink_free(l);
		return PERCH_ENOMEM;
	}
	snprintf(l->key, sizeof l->key, "%s", cfg->device_key);
	l->port = cfg->port;
	l->lifetime_ms = cfg->token_lifetime_ms > 0 ? cfg->token_lifetime_ms : 3600000;
	l->interval_ms = cfg->min_interval_ms > 0 ? cfg->min_interval_ms : 1000;
	l->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
	l->report = cfg->report;
	l->ud = cfg->ud;
	*out = l;
	return PERCH_OK;
}

void agent_hublink_free(agent_hublink *l)
{
	if (l == NULL)
		return;
	if (l->state == L_UP) {
		perch_mqtt_packet bye = {.type = PERCH_MQTT_DISCONNECT};
		if (queue(l, &bye, agent_now_ms()))
			(void)flush(l, agent_now_ms());
	}
	if (l->fd >= 0)
		close(l->fd);
	perch_mqtt_decoder_fini(&l->dec);
	if (l->out != NULL)
		mbedtls_platform_zeroize(l->out, l->out_cap);
	perch_free(l->out);
	mbedtls_platform_zeroize(l->key, sizeof l->key);
	json_decref(l->acked);
	json_decref(l->inflight);
	json_decref(l->refused);
	perch_free(l->host);
	perch_free(l->device_id);
	perch_free(l->hostname);
	perch_free(l);
}

static int64_t until(int64_t t, int64_t now, int64_t best)
{
	if (t <= 0)
		return best;
	int64_t d = t > now ? t - now : 0;
	return best < 0 || d < best ? d : best;
}

int agent_hublink_tick(agent_hublink *l, int64_t now, bool hub_ready)
{
	/* A hub that (re)starts is a new peer: no reason to wait for it. */
	if (hub_ready && !l->hub_was_ready && l->state == L_IDLE)
		l->next_ms = now;
	l->hub_was_ready = hub_ready;
	if (l->state == L_IDLE) {
		if (!hub_ready)
			return -1;
		if (now < l->next_ms)
			return (int)(l->next_ms - now);
		start_connect(l, now);
	}
	if (l->state != L_IDLE && l->deadline_ms > 0 && now >= l->deadline_ms) {
		static const char *const what[] = {"",       "the TCP connection",  "CONNACK",
		                                   "SUBACK", "the twin GET answer", ""};
		char why[120];
		snprintf(why, sizeof why, "no %s within %lld ms",
		         l->state == L_UP
		                 ? (l->ping_out ? "PINGRESP" : "answer to the reported patch")
		                 : what[l->state],
		         (long long)l->timeout_ms);
		drop(l, now, why);
	}
	if (l->state == L_UP && now >= l->renew_ms) {
		PERCH_INFO(LOG_MOD,
		           "reconnecting to perch-hub with a new token (the old one expires in "
		           "%lld s)",
		           (long long)(l->expiry_ms - now) / 1000);
		perch_mqtt_packet bye = {.type = PERCH_MQTT_DISCONNECT};
		if (queue(l, &bye, now) && flush(l, now)) {
			l->state = L_IDLE; /* no "down" line: planned */
			drop(l, now, "token renewal");
			l->failures = 0;
			l->next_ms = now;
		}
		return 0;
	}
	if (l->state == L_UP) {
		maybe_patch(l, now);
		if (l->state == L_UP && !l->ping_out && now - l->last_tx_ms >= PING_AFTER_MS) {
			perch_mqtt_packet ping = {.type = PERCH_MQTT_PINGREQ};
			if (queue(l, &ping, now)) {
				l->ping_out = true;
				if (l->deadline_ms == 0)
					l->deadline_ms = now + l->timeout_ms;
			}
		}
	}
	if (l->state == L_IDLE)
		return hub_ready ? (int)(l->next_ms > now ? l->next_ms - now : 0) : -1;
	int64_t best = until(l->deadline_ms, now, -1);
	if (l->state == L_UP) {
		best = until(l->renew_ms, now, best);
		best = until(l->last_tx_ms + PING_AFTER_MS, now, best);
		if (l->patch_rid[0] == '\0')
			best = until(l->next_patch_ms, now, best);
	}
	return (int)(best > 60000 ? 60000 : best);
}

size_t agent_hublink_pollfds(const agent_hublink *l, struct pollfd *fds, size_t cap)
{
	if (l == NULL || l->fd < 0 || cap == 0)
		return 0;
	short ev = POLLIN;
	if (l->state == L_TCP || l->out_off < l->out_len)
		ev |= POLLOUT;
	fds[0] = (struct pollfd){.fd = l->fd, .events = ev};
	return 1;
}

void agent_hublink_service(agent_hublink *l, const struct pollfd *fds, size_t n, int64_t now)
{
	if (l == NULL || n == 0 || l->fd < 0 || fds[0].fd != l->fd || fds[0].revents == 0)
		return;
	short re = fds[0].revents;
	if (l->state == L_TCP) {
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
			soerr = errno;
		if (soerr != 0) {
			char why[160];
			snprintf(why, sizeof why, "connect to %s:%d: %s", l->host, l->port,
			         strerror(soerr));
			drop(l, now, why);
			return;
		}
		if (!(re & POLLOUT))
			return;
		if (!send_connect(l, now))
			return;
	}
	if ((re & POLLOUT) && l->fd >= 0 && !flush(l, now))
		return;
	if ((re & (POLLIN | POLLHUP | POLLERR)) && l->fd >= 0)
		read_some(l, now);
}

json_t *agent_hublink_status(const agent_hublink *l)
{
	if (l == NULL)
		return json_pack("{s:b,s:b,s:s}", "connected", 0, "inSync", 0, "lastError",
		                 "the link to perch-hub is off");
	return json_pack("{s:b,s:b,s:I,s:I,s:I,s:I,s:I,s:s}", "connected", l->state == L_UP,
	                 "inSync", l->state == L_UP && l->in_sync, "reportedVersion",
	                 (json_int_t)l->reported_version, "connects", (json_int_t)l->connects,
	                 "patches", (json_int_t)l->patches, "refused", (json_int_t)l->refused_n,
	                 "throttled", (json_int_t)l->throttled_n, "lastError", l->last_error);
}
