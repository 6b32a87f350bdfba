/*
 * c2d.c — cloud-to-device messages at perch-hub: a durable queue per
 * device ("c/<device>", in the broker's store) delivered at least once, in
 * order, on devices/{d}/messages/devicebound/{props} to the device's
 * connection once it subscribes there — the way IoT Hub delivers C2D over
 * MQTT. Leaf devices (and the edge device itself) receive them; modules do
 * not (IoT Hub has no C2D for modules).
 *
 * Senders: the hub's local REST endpoint (method_http.c: POST
 * /devices/{d}/messages/devicebound, authenticated as the edge device) and,
 * later, the upstream link (messages the cloud or a parent hub sends down).
 * The sender's answer goes out only when the message is durable.
 *
 * IoT Hub's rules: at most HUB_C2D_MAX_DEPTH messages wait per device
 * (403004 beyond), bodies up to 64 KiB (413), a TTL (default 1 hour, at most
 * 2 days) after which an undelivered message is dropped and counted. Loop
 * thread only.
 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "iothub_int.h"
#include "metrics.h"
#include "msg.h"
#include "perch/alloc.h"
#include "perch/log.h"
#include "store.h"

#define LOG_MOD "hub.c2d"

struct hub_c2d_req {
	hub_c2d_done_fn *done; /* NULL once cancelled */
	void *arg;
	char device[PERCH_DEVICE_ID_MAX + 1];
	char mid[128];
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void finish(hub_c2d_done_fn *done, void *arg, unsigned status, unsigned code,
                   const char *msg, const char *mid)
{
	char body[512];
	size_t n = code != 0 ? hub_iothub_error_body(body, sizeof body, code, msg) : 0;
	done(arg, status, body, n, mid);
}

/* new_mid writes a random message id (a UUID v4) into out. */
static void new_mid(char *out, size_t cap)
{
	uint8_t r[16] = {0};
	if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
		uint64_t t = (uint64_t)wall_ms();
		memcpy(r, &t, sizeof t);
	}
	r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
	r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
	snprintf(out, cap, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
	         r[13], r[14], r[15]);
}

static void durable(void *arg, perch_err err)
{
	hub_c2d_req *r = arg;
	if (r->done != NULL) {
		if (err == PERCH_OK)
			finish(r->done, r->arg, 204, 0, NULL, r->mid);
		else
			finish(r->done, r->arg, 503, 503000, "the hub's store did not commit it",
			       r->mid);
	}
	if (err != PERCH_OK)
		PERCH_WARN(LOG_MOD, "%s: message %s not committed: %s", r->device, r->mid,
		           perch_strerror(err));
	perch_free(r);
}

void hub_c2d_cancel(hub_c2d_req *r)
{
	if (r != NULL)
		r->done = NULL;
}

/* target_ok: is device one that receives C2D here (a leaf device, or the
 * edge device itself)? */
static bool target_ok(const hub *h, const char *device)
{
	hub_identity id;
	if (!hub_identities_knows(&h->ids, device, &id))
		return false;
	return id.kind == HUB_IDENT_LEAF || id.kind == HUB_IDENT_DEVICE;
}

void hub_c2d_send(hub *h, const char *device, const perch_props *in, perch_slice body,
                  uint32_t ttl_s, hub_c2d_done_fn *done, void *arg, hub_c2d_req **out)
{
	*out = NULL;
	char mid[128] = "";
	perch_slice v;
	if (in != NULL && perch_props_get(in, perch_slice_cstr("$.mid"), &v) && v.len > 0 &&
	    v.len < sizeof mid)
		snprintf(mid, sizeof mid, "%.*s", (int)v.len, v.ptr);
	else
		new_mid(mid, sizeof mid);
	if (!target_ok(h, device)) {
		hub_metrics_c2d(h->metrics, "unknown_device");
		finish(done, arg, 404, 404001, "no such device (a leaf device or this device)",
		       mid);
		return;
	}
	if (body.len > HUB_C2D_MAX_BODY) {
		hub_metrics_c2d(h->metrics, "too_big");
		finish(done, arg, 413, 413000, "the message is over 64 KiB", mid);
		return;
	}
	if (ttl_s == 0 || ttl_s > HUB_C2D_MAX_TTL_S) {
		hub_metrics_c2d(h->metrics, "bad_request");
		finish(done, arg, 400, 400004, "the TTL must be 1 s to 2 days", mid);
		return;
	}
	/* The bag the device sees: the sender's, with the hub's $.to and $.mid,
	 * and without what only the hub sets. */
	perch_props p;
	perch_props_init(&p);
	size_t n = in != NULL ? perch_props_count(in) : 0;
	for (size_t i = 0; i < n; i++) {
		perch_slice k, val;
		perch_props_at(in, i, &k, &val);
		perch_props_sys kind = perch_props_system_kind(k);
		if (kind == PERCH_PROPS_SYS_CDID || kind == PERCH_PROPS_SYS_CMID ||
		    kind == PERCH_PROPS_SYS_TO || kind == PERCH_PROPS_SYS_MID ||
		    kind == PERCH_PROPS_SYS_ON)
			continue;
		if (perch_props_set(&p, k, val, NULL) != PERCH_OK)
			goto bad_props;
	}
	char to[PERCH_DEVICE_ID_MAX + 40];
	snprintf(to, sizeof to, "/devices/%s/messages/devicebound", device);
	if (perch_props_set(&p, perch_slice_cstr("$.mid"), perch_slice_cstr(mid), NULL) !=
	            PERCH_OK ||
	    perch_props_set(&p, perch_slice_cstr("$.to"), perch_slice_cstr(to), NULL) != PERCH_OK)
		goto bad_props;

	char topic[PERCH_IOTHUB_MAX_TOPIC + 1024];
	size_t tlen = 0;
	if (perch_iothub_build_c2d(topic, sizeof topic, &tlen, perch_slice_cstr(device), &p) !=
	    PERCH_OK)
		goto bad_props;

	char qname[PERCH_DEVICE_ID_MAX + 3];
	snprintf(qname, sizeof qname, "c/%s", device);
	hub_store *st = hub_broker_store(h);
	hub_queue *q = NULL;
	perch_err err = hub_store_queue(st, qname, 0, &q);
	if (err == PERCH_OK) {
		hub_queue_set_limits(q, HUB_C2D_MAX_DEPTH, 0);
		hub_queue_stats qs;
		hub_queue_get_stats(q, &qs);
		if (qs.depth >= HUB_C2D_MAX_DEPTH) {
			hub_metrics_c2d(h->metrics, "queue_full");
			PERCH_WARN(LOG_MOD, "%s: message %s refused: %d messages wait already",
			           device, mid, HUB_C2D_MAX_DEPTH);
			finish(done, arg, 403, 403004,
			       "the device's queue is full (50 messages wait for it)", mid);
			return;
		}
	}
	int64_t now = wall_ms();
	hub_msg *m = NULL;
	if (err == PERCH_OK)
		err = hub_msg_new((perch_slice){topic, tlen}, body, (perch_slice){NULL, 0}, 1,
		                  false, now, now + (int64_t)ttl_s * 1000, &m);
	if (err == PERCH_OK)
		err = hub_queue_push(q, m);
	hub_msg_unref(m);
	hub_c2d_req *r = NULL;
	if (err == PERCH_OK) {
		r = perch_calloc(1, sizeof *r);
		if (r == NULL)
			err = PERCH_ENOMEM;
	}
	if (err != PERCH_OK) {
		hub_metrics_c2d(h->metrics, err == PERCH_ENOSPC ? "store_full" : "error");
		PERCH_WARN(LOG_MOD, "%s: message %s not queued: %s", device, mid,
		           perch_strerror(err));
		finish(done, arg, 503, 503000,
		       err == PERCH_ENOSPC ? "the hub's store is full"
		                           : "the hub cannot queue it now",
		       mid);
		return;
	}
	*r = (hub_c2d_req){.done = done, .arg = arg};
	snprintf(r->device, sizeof r->device, "%s", device);
	snprintf(r->mid, sizeof r->mid, "%s", mid);
	if (hub_store_when_durable(st, durable, r) != PERCH_OK) {
		/* Queued, but when it is durable is unknown: do not say it is. */
		perch_free(r);
		hub_metrics_c2d(h->metrics, "error");
		finish(done, arg, 503, 503000, "the hub cannot confirm it now", mid);
		hub_broker_c2d_added(h, device, q);
		return;
	}
	*out = r;
	hub_metrics_c2d(h->metrics, "queued");
	PERCH_DEBUG(LOG_MOD, "%s: message %s queued (%zu bytes, TTL %u s)", device, mid, body.len,
	            (unsigned)ttl_s);
	hub_broker_c2d_added(h, device, q);
	return;

bad_props:
	hub_metrics_c2d(h->metrics, "bad_request");
	finish(done, arg, 400, 400004, "bad message properties", mid);
}
