/*
 * router.c — perch-hub's routes (docs/routes.md): the route table built from
 * the $edgeHub desired properties of the hub deployment, and the routing of
 * every message an identity sends (device-to-cloud telemetry, module
 * outputs) into durable sink queues in the store:
 *
 *   BrokeredEndpoint("/modules/m/inputs/i")  ->  queue "r/m/i", delivered
 *       to module m's connection (broker.c) on devices/{d}/modules/m/inputs/i/
 *   $upstream                                ->  queue "u/<priority>", for
 *       the upstream link (store-and-forward)
 *
 * Each sink queue has its own checkpoint, a priority and the route's TTL (the
 * message's expiry). A message that arrives before the hub has ever had a
 * route table (the hub starts before the agent wrote the deployment) waits
 * in queue "p/unrouted" and is routed when the first table arrives. A table
 * that does not build is refused whole: every error is logged with its
 * route's name and column, and the previous table stays.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hub.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/log.h"
#include "perch/props.h"
#include "perch/route.h"
#include "store.h"

#define LOG_MOD        "hub.route"
#define UNROUTED_QUEUE "p/unrouted"

typedef struct hub_router {
	perch_route_table *table; /* NULL until a deployment brought one */
	json_t *edgehub;          /* the $edgeHub section last looked at (a reference) */
	perch_props props;        /* scratch: the bag of the message being routed */
	/* hub.upstream.full_policy drop_oldest: drops not yet logged (one line
	 * per second at most) and when the last line was written. */
	uint64_t unlogged_drops, logged_drops;
	int64_t drop_log_ms;
} hub_router;

/* Bounded work per message: entries dropped to make room for one. */
#define MAX_DROPS_PER_MSG 1024

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

perch_err hub_router_open(hub *h)
{
	h->router = perch_calloc(1, sizeof *h->router);
	if (h->router == NULL)
		return PERCH_ENOMEM;
	hub_router_reload(h);
	return PERCH_OK;
}

void hub_router_close(hub *h)
{
	if (h->router == NULL)
		return;
	perch_route_table_free(h->router->table);
	json_decref(h->router->edgehub);
	perch_free(h->router);
	h->router = NULL;
}

static hub_store *store_of(hub *h)
{
	return hub_broker_store(h);
}

/* routing context of one message */
typedef struct route_ctx {
	hub *h;
	hub_msg *m;
	const perch_props *props;
	perch_err result;
	bool durable;
	size_t sinks;
} route_ctx;

static uint8_t queue_prio(uint32_t priority)
{
	return priority > PERCH_ROUTE_MAX_PRIORITY ? PERCH_ROUTE_MAX_PRIORITY : (uint8_t)priority;
}

/* log_drops writes one line for the drops since the last (at most one per
 * second, unless force). */
static void log_drops(hub *h, bool force)
{
	hub_router *r = h->router;
	int64_t now = wall_ms();
	if (r->unlogged_drops == 0 || (!force && now - r->drop_log_ms < 1000))
		return;
	r->logged_drops += r->unlogged_drops;
	PERCH_WARN(LOG_MOD,
	           "store full (hub.max_store_bytes %llu, or an $upstream queue at "
	           "hub.max_queued_messages/bytes) while the upstream link is down or draining: "
	           "dropped the %llu oldest queued $upstream messages of the lowest priorities "
	           "(%llu in all; hub.upstream.full_policy drop_oldest)",
	           (unsigned long long)h->cfg.max_store_bytes,
	           (unsigned long long)r->unlogged_drops, (unsigned long long)r->logged_drops);
	r->unlogged_drops = 0;
	r->drop_log_ms = now;
}

/*
 * make_room (hub.upstream.full_policy drop_oldest) drops the oldest queued
 * $upstream messages of priority prio or lower (queues u/9 .. u/prio, the
 * lowest priority first; never what is in flight on the link) until a
 * message of size bytes fits the store. Returns whether it fits.
 */
static bool make_room(hub *h, uint8_t prio, size_t size)
{
	hub_store *s = store_of(h);
	uint32_t left = MAX_DROPS_PER_MSG;
	for (int p = PERCH_ROUTE_MAX_PRIORITY; p >= prio && left > 0; p--) {
		if (hub_store_fits(s, size))
			break;
		char qname[16];
		snprintf(qname, sizeof qname, "u/%d", p);
		hub_queue *q = hub_store_queue_find(s, qname);
		if (q == NULL)
			continue;
		uint32_t n = 0;
		uint64_t bytes = 0;
		perch_err err = hub_queue_drop_oldest(q, left, size, &n, &bytes);
		if (err != PERCH_OK)
			PERCH_WARN(LOG_MOD, "queue %s: cannot drop to make room: %s", qname,
			           perch_strerror(err));
		left -= n;
		h->router->unlogged_drops += n;
	}
	log_drops(h, false);
	return hub_store_fits(s, size);
}

/*
 * room_in_queue (hub.upstream.full_policy drop_oldest) drops q's own oldest
 * entries (not in flight) while q is at its limits (hub.max_queued_messages,
 * hub.max_queued_bytes) for a message of size bytes. Returns whether it
 * then has room.
 */
static bool room_in_queue(hub *h, hub_queue *q, size_t size)
{
	uint64_t max_n = (uint64_t)h->cfg.max_queued_messages;
	uint64_t max_b = (uint64_t)h->cfg.max_queued_bytes;
	hub_queue_stats qs;
	hub_queue_get_stats(q, &qs);
	for (uint32_t i = 0;
	     i < MAX_DROPS_PER_MSG && (qs.depth >= max_n || qs.bytes + size > max_b); i++) {
		uint32_t n = 0;
		uint64_t bytes = 0;
		if (hub_queue_drop_oldest(q, 1, 0, &n, &bytes) != PERCH_OK || n == 0)
			break;
		h->router->unlogged_drops += n;
		hub_queue_get_stats(q, &qs);
	}
	log_drops(h, false);
	return qs.depth < max_n && qs.bytes + size <= max_b;
}

static perch_err push_to(route_ctx *x, const char *qname, uint8_t prio, hub_msg *m, hub_queue **out)
{
	hub *h = x->h;
	hub_queue *q = NULL;
	perch_err err = hub_store_queue(store_of(h), qname, prio, &q);
	if (err != PERCH_OK)
		return err;
	hub_queue_set_limits(q, (uint64_t)h->cfg.max_queued_messages, h->cfg.max_queued_bytes);
	err = hub_queue_push(q, m);
	if (err == PERCH_ENOSPC && qname[0] == 'u' && qname[1] == '/' &&
	    h->cfg.upstream_full_policy == 1 && room_in_queue(h, q, m->size) &&
	    (hub_store_fits(store_of(h), m->size) || make_room(h, prio, m->size)))
		err = hub_queue_push(q, m);
	if (err == PERCH_OK) {
		x->durable = true;
		*out = q;
	}
	return err;
}

static bool on_hit(void *arg, const perch_route_hit *hit)
{
	route_ctx *x = arg;
	hub *h = x->h;
	const perch_route_sink *sink = hit->sink;
	int64_t expiry = hit->ttl_secs == PERCH_ROUTE_TTL_FOREVER
	                         ? 0
	                         : x->m->created_ms + (int64_t)hit->ttl_secs * 1000;
	char qname[16 + 2 * PERCH_ROUTE_MAX_ID];
	hub_queue *q = NULL;
	perch_err err;
	const char *label;
	if (sink->kind == PERCH_ROUTE_SINK_MODULE) {
		char topic[PERCH_IOTHUB_MAX_TOPIC + 1024];
		size_t tlen = 0;
		err = perch_iothub_build_input(
		        topic, sizeof topic, &tlen, perch_slice_cstr(h->ids.device_id),
		        perch_slice_cstr(sink->module), perch_slice_cstr(sink->input), x->props);
		hub_msg *in = NULL;
		if (err == PERCH_OK)
			err = hub_msg_new((perch_slice){topic, tlen}, x->m->payload,
			                  (perch_slice){NULL, 0}, 1, false, x->m->created_ms,
			                  expiry, &in);
		snprintf(qname, sizeof qname, "r/%s/%s", sink->module, sink->input);
		if (err == PERCH_OK)
			err = push_to(x, qname, queue_prio(hit->priority), in, &q);
		hub_msg_unref(in);
		if (err == PERCH_OK)
			hub_broker_input_added(h, sink->module, q);
		label = "module_input";
	} else {
		snprintf(qname, sizeof qname, "u/%u", (unsigned)queue_prio(hit->priority));
		hub_msg *up = NULL;
		err = hub_msg_new(x->m->topic, x->m->payload, x->m->props, 1, false,
		                  x->m->created_ms, expiry, &up);
		if (err == PERCH_OK)
			err = push_to(x, qname, queue_prio(hit->priority), up, &q);
		hub_msg_unref(up);
		label = "upstream";
	}
	if (err != PERCH_OK) {
		hub_metrics_dropped(h->metrics,
		                    err == PERCH_ENOSPC ? "route_sink_full" : "route_error", 1);
		if (err == PERCH_ENOSPC && sink->kind != PERCH_ROUTE_SINK_MODULE &&
		    !hub_store_fits(store_of(h), x->m->size))
			PERCH_WARN(LOG_MOD,
			           "route %s: store full (hub.max_store_bytes %llu) while the "
			           "upstream "
			           "link is down or draining: queue %s refused a message; the "
			           "publisher is not acknowledged (hub.upstream.full_policy %s)",
			           hit->name, (unsigned long long)h->cfg.max_store_bytes, qname,
			           h->cfg.upstream_full_policy == 1
			                   ? "drop_oldest: nothing of this priority or lower left "
			                     "to drop"
			                   : "refuse");
		else if (err == PERCH_ENOSPC && sink->kind != PERCH_ROUTE_SINK_MODULE)
			PERCH_WARN(
			        LOG_MOD,
			        "route %s: queue %s is at hub.max_queued_messages or "
			        "hub.max_queued_bytes while the upstream link is down or draining: "
			        "a message refused; the publisher is not acknowledged "
			        "(hub.upstream.full_policy %s)",
			        hit->name, qname,
			        h->cfg.upstream_full_policy == 1
			                ? "drop_oldest: nothing left to drop that is not in flight"
			                : "refuse");
		else
			PERCH_WARN(LOG_MOD, "route %s: queue %s did not take a message: %s",
			           hit->name, qname, perch_strerror(err));
		if (x->result == PERCH_OK)
			x->result = err;
		return true;
	}
	hub_metrics_routed(h->metrics, label);
	x->sinks++;
	return true;
}

/* route_msg routes m, which came from device/module (output: $.on). */
static perch_err route_msg(hub *h, hub_msg *m, perch_slice device, perch_slice module,
                           bool *durable)
{
	hub_router *r = h->router;
	perch_iothub_topic t;
	if (perch_iothub_topic_parse(m->topic, &t, NULL) != PERCH_OK ||
	    (t.kind != PERCH_IOTHUB_TELEMETRY && t.kind != PERCH_IOTHUB_MODULE_OUTPUT))
		return PERCH_OK;
	if (perch_props_parse(t.props, &r->props, NULL) != PERCH_OK)
		perch_props_init(&r->props); /* stamped by the hub: cannot happen */
	perch_slice output = {"", 0};
	(void)perch_props_get(&r->props, perch_slice_cstr("$.on"), &output);
	perch_route_msg msg = {.origin = PERCH_ROUTE_TELEMETRY,
	                       .device = device,
	                       .module = module,
	                       .output = output,
	                       .props = &r->props,
	                       .body = m->payload};
	route_ctx x = {.h = h, .m = m, .props = &r->props};
	perch_route_match_info info = {0};
	(void)perch_routes_match(r->table, &msg, on_hit, &x, &info);
	if (x.sinks == 0 && x.result == PERCH_OK)
		hub_metrics_routed(h->metrics, "no_route");
	if (info.body == PERCH_ROUTE_BODY_INVALID || info.body == PERCH_ROUTE_BODY_TOO_BIG)
		PERCH_DEBUG(LOG_MOD, "a message from %.*s%s%.*s: $body is undefined (%s)",
		            (int)device.len, device.ptr, module.len ? "/" : "", (int)module.len,
		            module.ptr, perch_route_body_str(info.body));
	*durable |= x.durable;
	return x.result;
}

perch_err hub_router_route(hub *h, const hub_identity *id, hub_msg *m, bool *durable)
{
	hub_router *r = h->router;
	if (r == NULL)
		return PERCH_OK;
	if (r->table == NULL) {
		/* No routes yet: keep it until the first table arrives. */
		route_ctx x = {.h = h, .m = m};
		hub_queue *q = NULL;
		perch_err err = push_to(&x, UNROUTED_QUEUE, PERCH_ROUTE_MAX_PRIORITY, m, &q);
		if (err == PERCH_OK) {
			*durable = true;
			hub_metrics_routed(h->metrics, "waiting_for_routes");
		} else {
			hub_metrics_dropped(h->metrics, "route_sink_full", 1);
		}
		return err;
	}
	/* A child edge hub speaks for its modules and leaf devices: route as
	 * the message's origin, so a source naming module m (FROM
	 * /messages/modules/m/...) and $connectionDeviceId mean the child's
	 * module or leaf device. */
	hub_identity origin;
	if (hub_identity_is_edge(id) && hub_identity_origin(id, m->topic, &origin))
		id = &origin;
	return route_msg(h, m, perch_slice_cstr(id->device), perch_slice_cstr(id->module), durable);
}

/* drain_unrouted routes what waited for the first table. The sender is
 * read back from the stamps ($.cdid, $.cmid) the hub put on each message. */
static void drain_unrouted(hub *h)
{
	hub_queue *q = hub_store_queue_find(store_of(h), UNROUTED_QUEUE);
	if (q == NULL || h->router->table == NULL)
		return;
	size_t n = 0;
	hub_qentry e;
	hub_queue_rewind(q);
	while (hub_queue_next(q, wall_ms(), &e) == PERCH_OK) {
		perch_iothub_topic t;
		perch_props *p = &h->router->props;
		perch_slice dev = {"", 0}, mod = {"", 0};
		char devbuf[PERCH_DEVICE_ID_MAX + 1] = "", modbuf[PERCH_DEVICE_ID_MAX + 1] = "";
		if (perch_iothub_topic_parse(e.msg->topic, &t, NULL) == PERCH_OK &&
		    perch_props_parse(t.props, p, NULL) == PERCH_OK) {
			if (perch_props_get(p, perch_slice_cstr("$.cdid"), &dev))
				snprintf(devbuf, sizeof devbuf, "%.*s", (int)dev.len, dev.ptr);
			if (perch_props_get(p, perch_slice_cstr("$.cmid"), &mod))
				snprintf(modbuf, sizeof modbuf, "%.*s", (int)mod.len, mod.ptr);
		}
		bool durable = false;
		hub_msg *m = hub_msg_ref(e.msg);
		perch_err err = route_msg(h, m, perch_slice_cstr(devbuf), perch_slice_cstr(modbuf),
		                          &durable);
		hub_msg_unref(m);
		if (err != PERCH_OK) {
			hub_queue_rewind(q); /* try again at the next reload */
			break;
		}
		if (hub_queue_ack(q, e.seq) != PERCH_OK)
			break;
		n++;
	}
	if (n > 0)
		PERCH_NOTICE(LOG_MOD, "%zu messages that arrived before the routes were routed", n);
}

void hub_router_reload(hub *h)
{
	hub_router *r = h->router;
	if (r == NULL)
		return;
	json_t *eh = h->ids.edgehub;
	if (eh == NULL || r->edgehub == eh)
		return; /* holding a reference, the address cannot be reused */
	json_decref(r->edgehub);
	r->edgehub = json_incref(eh);
	perch_route_table *t = NULL;
	perch_route_errors errs;
	memset(&errs, 0, sizeof errs);
	perch_err err = perch_routes_from_edgehub(eh, &t, &errs);
	if (err != PERCH_OK) {
		for (size_t i = 0; i < errs.count && i < PERCH_ROUTE_MAX_ERRORS; i++)
			PERCH_ERROR(LOG_MOD, "route %s: %s",
			            errs.item[i].route[0] ? errs.item[i].route : "(table)",
			            errs.item[i].text);
		PERCH_ERROR(LOG_MOD, "routes refused (%s, %zu errors): %s", perch_strerror(err),
		            errs.count,
		            r->table != NULL ? "the previous routes stay" : "no routes yet");
		return;
	}
	perch_route_table_free(r->table);
	r->table = t;
	PERCH_NOTICE(LOG_MOD, "%zu routes (default TTL %u s)", perch_route_table_count(t),
	             (unsigned)perch_route_table_default_ttl(t));
	for (size_t i = 0; i < perch_route_table_count(t); i++) {
		perch_route_entry en = perch_route_table_at(t, i);
		PERCH_INFO(LOG_MOD, "route %s: %s", en.name, en.route->text);
	}
	drain_unrouted(h);
}
