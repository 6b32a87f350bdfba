/*
 * iothub.c — IoT Hub twins and direct methods at perch-hub (hub.h): the
 * $iothub/... topics of authenticated identities, answered on the
 * requesting connection and never routed.
 *
 *   $iothub/twin/GET/?$rid=r                      -> $iothub/twin/res/200/?$rid=r, the twin
 *   $iothub/twin/PATCH/properties/reported/?$rid=r -> $iothub/twin/res/204/?$rid=r&$version=v
 *   a desired change in the hub deployment         -> $iothub/twin/PATCH/properties/desired/?$version=v
 *   $iothub/methods/res/{status}/?$rid=r           -> the invoker of that call (method.c)
 *
 * Each identity ("d", "d/m", a leaf device) reads and patches only its own
 * twin: the topics name no identity, the connection's does. Twins live in
 * memory and in twins.db (twin_store.c); a change is on disk before it is
 * answered or sent. Everything the hub sends here is QoS 0 (see
 * docs/hub.md), only to a connection subscribed to the topic, and only
 * through hub_conn_send: the broker's router never sees it.
 *
 * The broker calls in for every $iothub publish, identity change and
 * closed connection, and calls hub_iothub_conn_seen after CONNECT and after
 * each SUBSCRIBE, which is how this file learns which connection each identity has (a
 * method's target, a desired patch's recipient). Loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iothub_int.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/log.h"
#include "twinsync.h"

#define LOG_MOD          "hub.twin"
#define EDGE_AGENT       "$edgeAgent"
#define TWIN_BURST       100 /* twin requests an identity may make at once */
#define TWIN_PER_S       20  /* and then per second (429 beyond) */
#define DESIRED_TOPIC    "$iothub/twin/PATCH/properties/desired/#"
#define TWIN_RES_TOPIC   "$iothub/twin/res/#"
#define MAX_SENT_TOPIC   1024 /* bytes of a topic the hub sends from here */
#define ERR_ARG_INVALID  400004u
#define ERR_THROTTLED    429001u
#define ERR_SERVER_ERROR 500001u
#define MAX_CHILD_TWINS  1000 /* twins a child edge hub's link may make here */

/* --- sending ------------------------------------------------------------------ */

perch_err hub_iothub_send(hub_conn *c, perch_slice topic, perch_slice payload, bool force)
{
	if (c->state == HUB_CONN_CLOSING)
		return PERCH_ECLOSED;
	if (topic.len > MAX_SENT_TOPIC)
		return PERCH_EINVAL;
	perch_mqtt_publish p = {.topic = topic, .payload = payload, .qos = 0};
	uint8_t hdr[16 + MAX_SENT_TOPIC];
	size_t hlen = 0;
	perch_err err = perch_mqtt_encode_publish_header(&p, hdr, sizeof hdr, &hlen);
	if (err == PERCH_OK)
		err = hub_conn_send(c, hdr, hlen, payload.ptr, payload.len, force);
	if (err == PERCH_OK)
		hub_metrics_msg_out(c->hub->metrics, 0);
	return err;
}

size_t hub_iothub_error_body(char *out, size_t cap, unsigned code, const char *message)
{
	json_t *o = json_pack("{s:I,s:s}", "errorCode", (json_int_t)code, "message",
	                      message != NULL ? message : "");
	size_t n = o != NULL ? json_dumpb(o, out, cap, JSON_COMPACT) : 0;
	json_decref(o);
	if (n == 0 || n > cap) /* cannot happen with our messages; say something */
		n = (size_t)snprintf(out, cap, "{\"errorCode\":%u,\"message\":\"\"}", code);
	return n < cap ? n : cap;
}

/* --- who is online ------------------------------------------------------------ */

hub_conn *hub_iothub_online(hub *h, const char *name)
{
	if (h->iothub == NULL)
		return NULL;
	hub_online *o = perch_map_get(&h->iothub->online, perch_slice_cstr(name));
	return o != NULL && o->conn->state == HUB_CONN_ACTIVE ? o->conn : NULL;
}

/* seen records c as its identity's connection (a new one replaces an older:
 * session takeover); NULL when out of memory. */
static hub_online *seen(hub_iothub *x, hub_conn *c, const char *name)
{
	hub_online *o = perch_map_get(&x->online, perch_slice_cstr(name));
	if (o != NULL && o->conn == c)
		return o;
	if (o == NULL) {
		o = perch_calloc(1, sizeof *o);
		if (o == NULL ||
		    perch_map_put(&x->online, perch_slice_cstr(name), o, NULL) != PERCH_OK) {
			perch_free(o);
			return NULL;
		}
	}
	o->conn = c;
	o->tokens = (int64_t)TWIN_BURST * 1000;
	o->refilled_ms = hub_now_ms();
	return o;
}

static bool tracked(const hub_conn *c)
{
	return c->hub->iothub != NULL && c->state == HUB_CONN_ACTIVE && c->session != NULL &&
	       c->ident.kind != HUB_IDENT_ANONYMOUS;
}

void hub_iothub_conn_seen(hub_conn *c)
{
	if (!tracked(c))
		return;
	char name[HUB_IDENT_NAME_MAX];
	hub_identity_name(&c->ident, name, sizeof name);
	(void)seen(c->hub->iothub, c, name);
	hub_method_target_seen(c->hub, name, c);
}

void hub_iothub_conn_gone(hub_conn *c)
{
	hub_iothub *x = c->hub != NULL ? c->hub->iothub : NULL;
	if (x == NULL)
		return;
	hub_method_conn_gone(c);
	if (c->ident.kind == HUB_IDENT_ANONYMOUS)
		return;
	char name[HUB_IDENT_NAME_MAX];
	hub_identity_name(&c->ident, name, sizeof name);
	hub_online *o = perch_map_get(&x->online, perch_slice_cstr(name));
	if (o != NULL && o->conn == c)
		perch_free(perch_map_del(&x->online, perch_slice_cstr(name)));
}

/* allow takes one twin request from o's allowance (a token bucket). */
static bool allow(hub_online *o)
{
	if (o == NULL)
		return true;
	int64_t now = hub_now_ms();
	int64_t cap = (int64_t)TWIN_BURST * 1000;
	o->tokens += (now - o->refilled_ms) * TWIN_PER_S;
	if (o->tokens > cap)
		o->tokens = cap;
	o->refilled_ms = now;
	if (o->tokens < 1000)
		return false;
	o->tokens -= 1000;
	return true;
}

/* --- twins ---------------------------------------------------------------------- */

/* twin_of: the twin of name, made (empty, in memory) when it has none yet. */
static hub_twin *twin_of(hub_iothub *x, const char *name)
{
	hub_twin *t = perch_map_get(&x->twins, perch_slice_cstr(name));
	if (t != NULL)
		return t;
	t = perch_calloc(1, sizeof *t);
	if (t == NULL || hub_twin_init(t) != PERCH_OK ||
	    perch_map_put(&x->twins, perch_slice_cstr(name), t, NULL) != PERCH_OK) {
		if (t != NULL)
			hub_twin_fini(t);
		perch_free(t);
		return NULL;
	}
	return t;
}

static void twin_answer(hub_conn *c, const char *op, unsigned status, perch_slice rid,
                        bool has_version, uint64_t version, const char *body, size_t len)
{
	char label[32];
	snprintf(label, sizeof label, "%s:%u", op, status);
	hub_metrics_twin(c->hub->metrics, label);
	char topic[MAX_SENT_TOPIC];
	size_t tlen = 0;
	if (perch_iothub_build_twin_response(topic, sizeof topic, &tlen, status, rid, has_version,
	                                     version) != PERCH_OK) {
		PERCH_WARN(LOG_MOD, "%s: twin %s answer not sent: its $rid cannot be echoed",
		           c->client_id, op);
		return;
	}
	perch_slice t = {topic, tlen};
	if (!hub_broker_subscribed(c, t, NULL)) {
		PERCH_DEBUG(LOG_MOD, "%s: twin %s answered %u but not sent: not subscribed to %s",
		            c->client_id, op, status, TWIN_RES_TOPIC);
		return;
	}
	if (hub_iothub_send(c, t, (perch_slice){body, len}, true) == PERCH_ENOMEM)
		hub_conn_close_soon(c, "out of memory", NULL);
}

static void twin_error(hub_conn *c, const char *op, unsigned status, unsigned code, perch_slice rid,
                       const char *message)
{
	char body[600];
	size_t n = hub_iothub_error_body(body, sizeof body, code, message);
	twin_answer(c, op, status, rid, false, 0, body, n);
}

static void twin_get(hub_iothub *x, hub_conn *c, const char *name, hub_online *o, perch_slice rid)
{
	if (!allow(o)) {
		twin_error(c, "get", 429, ERR_THROTTLED, rid, "too many twin requests: slow down");
		return;
	}
	hub_twin *t = twin_of(x, name);
	char *doc = NULL;
	size_t len = 0;
	if (t == NULL || hub_twin_document(t, &doc, &len) != PERCH_OK) {
		twin_error(c, "get", 500, ERR_SERVER_ERROR, rid, "out of memory");
		return;
	}
	PERCH_DEBUG(LOG_MOD, "%s: twin GET (desired %llu, reported %llu)", name,
	            (unsigned long long)t->desired_version,
	            (unsigned long long)t->reported_version);
	twin_answer(c, "get", 200, rid, false, 0, doc, len);
	perch_free(doc);
}

/*
 * apply_reported merges the reported patch payload into name's twin and
 * stores it; the version becomes version when that is higher (a child's
 * numbers), else goes up by one; *out gets it. PERCH_EINVAL/ETOOBIG (why:
 * the patch is refused), PERCH_ENOMEM, store errors: the twin is unchanged.
 */
static perch_err apply_reported(hub_iothub *x, const char *name, perch_slice payload,
                                uint64_t version, uint64_t *out, char *why, size_t cap)
{
	hub_twin *t = twin_of(x, name);
	if (t == NULL)
		return PERCH_ENOMEM;
	json_t *old = json_incref(t->reported);
	uint64_t old_version = t->reported_version;
	perch_err err = hub_twin_report(t, payload.ptr, payload.len, why, cap);
	if (err == PERCH_OK && version > t->reported_version)
		t->reported_version = version;
	if (err == PERCH_OK) {
		err = hub_twin_store_save(x->store, name, t);
		if (err != PERCH_OK) {
			json_decref(t->reported);
			t->reported = json_incref(old);
			t->reported_version = old_version;
		}
	}
	json_decref(old);
	*out = t->reported_version;
	return err;
}

static void twin_reported(hub_iothub *x, hub_conn *c, const char *name, hub_online *o,
                          perch_slice rid, perch_slice payload)
{
	if (!allow(o)) {
		twin_error(c, "reported", 429, ERR_THROTTLED, rid,
		           "too many twin requests: slow down");
		return;
	}
	char why[300];
	uint64_t v = 0;
	perch_err err = apply_reported(x, name, payload, 0, &v, why, sizeof why);
	if (err == PERCH_EINVAL || err == PERCH_ETOOBIG) {
		PERCH_WARN(LOG_MOD, "%s: reported patch refused (400): %s", name, why);
		char msg[360];
		snprintf(msg, sizeof msg, "reported patch refused: %s", why);
		twin_error(c, "reported", 400, ERR_ARG_INVALID, rid, msg);
		return;
	}
	if (err != PERCH_OK) {
		if (err != PERCH_ENOMEM)
			PERCH_ERROR(LOG_MOD, "%s: reported patch not stored (%s): answered 500",
			            name, perch_strerror(err));
		twin_error(c, "reported", 500, ERR_SERVER_ERROR, rid,
		           err == PERCH_ENOMEM ? "out of memory"
		                               : "the twin could not be stored; try again");
		return;
	}
	PERCH_DEBUG(LOG_MOD, "%s: reported version %llu", name, (unsigned long long)v);
	twin_answer(c, "reported", 204, rid, true, v, NULL, 0);
	hub_twinsync_reported(x->h, name);
}

/* --- a child edge hub's link ($edgehub/..., docs/hub.md "Twins over the link") -- */

void hub_iothub_split_name(const char *name, perch_slice *device, perch_slice *module)
{
	const char *slash = strchr(name, '/');
	*device = slash != NULL ? (perch_slice){name, (size_t)(slash - name)}
	                        : perch_slice_cstr(name);
	*module = slash != NULL ? perch_slice_cstr(slash + 1) : (perch_slice){NULL, 0};
}

bool hub_iothub_link_name(const perch_iothub_topic *t, char *out, size_t cap)
{
	char dev[PERCH_IOTHUB_MAX_SEGMENT], mod[PERCH_IOTHUB_MAX_SEGMENT];
	size_t dn = 0, mn = 0;
	if (perch_props_url_decode(t->device, dev, sizeof dev - 1, &dn, NULL) != PERCH_OK ||
	    perch_props_url_decode(t->module, mod, sizeof mod - 1, &mn, NULL) != PERCH_OK ||
	    dn == 0 || dn > PERCH_DEVICE_ID_MAX || mn > PERCH_DEVICE_ID_MAX ||
	    memchr(dev, '\0', dn) != NULL || memchr(dev, '/', dn) != NULL ||
	    memchr(mod, '\0', mn) != NULL || memchr(mod, '/', mn) != NULL)
		return false;
	int n = mn > 0 ? snprintf(out, cap, "%.*s/%.*s", (int)dn, dev, (int)mn, mod)
	               : snprintf(out, cap, "%.*s", (int)dn, dev);
	return n > 0 && (size_t)n < cap;
}

perch_err hub_iothub_link_topic(char *out, size_t cap, size_t *out_len, perch_iothub_kind kind,
                                const char *name, perch_slice method, unsigned status,
                                perch_slice rid, bool has_version, uint64_t version)
{
	perch_slice dev, mod;
	hub_iothub_split_name(name, &dev, &mod);
	return perch_iothub_build_link(out, cap, out_len, kind, dev, mod, method, status, rid,
	                               has_version, version);
}

perch_err hub_iothub_link_send(hub_conn *c, perch_iothub_kind kind, const char *name,
                               perch_slice method, unsigned status, perch_slice rid,
                               bool has_version, uint64_t version, perch_slice body)
{
	char topic[MAX_SENT_TOPIC];
	size_t tlen = 0;
	perch_err err = hub_iothub_link_topic(topic, sizeof topic, &tlen, kind, name, method,
	                                      status, rid, has_version, version);
	if (err != PERCH_OK)
		return err;
	perch_slice t = {topic, tlen};
	if (!hub_broker_subscribed(c, t, NULL))
		return PERCH_ENOENT;
	return hub_iothub_send(c, t, body, true);
}

/* link_error answers a child's twin request on the link with an error. */
static void link_error(hub_conn *c, const char *name, unsigned status, unsigned code,
                       perch_slice rid, const char *message)
{
	char body[600];
	size_t n = hub_iothub_error_body(body, sizeof body, code, message);
	if (hub_iothub_link_send(c, PERCH_IOTHUB_LINK_TWIN_RESPONSE, name, (perch_slice){NULL, 0},
	                         status, rid, false, 0, (perch_slice){body, n}) == PERCH_ENOMEM)
		hub_conn_close_soon(c, "out of memory", NULL);
}

/*
 * link_reported applies a reported patch a child sends for one of its
 * identities. The child owns that section: the version becomes the child's
 * ($rid is its reported $version) when that is higher. Stored before the
 * broker's PUBACK; when storing fails the child's link is closed, and the
 * child, which asks for every twin again on its next link, sends what the
 * parent does not have.
 */
static void link_reported(hub_iothub *x, hub_conn *c, const char *name, perch_slice rid,
                          perch_slice payload)
{
	char num[24], why[300];
	char *end = NULL;
	snprintf(num, sizeof num, "%.*s", (int)(rid.len < 23 ? rid.len : 23), rid.ptr);
	unsigned long long want = strtoull(num, &end, 10);
	uint64_t v = 0;
	perch_err err = apply_reported(x, name, payload, end != num && *end == '\0' ? want : 0, &v,
	                               why, sizeof why);
	if (err == PERCH_EINVAL || err == PERCH_ETOOBIG) {
		PERCH_WARN(LOG_MOD, "%s: reported patch from %s over the link refused (400): %s",
		           name, c->client_id, why);
		char msg[360];
		snprintf(msg, sizeof msg, "reported patch refused: %s", why);
		link_error(c, name, 400, ERR_ARG_INVALID, rid, msg);
		return;
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD,
		            "%s: reported patch from %s not stored (%s): the link is closed; the "
		            "child syncs this twin again on its next link",
		            name, c->client_id, perch_strerror(err));
		hub_conn_close_soon(c, "twin store failed", perch_strerror(err));
		return;
	}
	hub_metrics_twin(x->h->metrics, "link_reported:204");
	PERCH_DEBUG(LOG_MOD, "%s: reported version %llu from %s", name, (unsigned long long)v,
	            c->client_id);
}

/* too_many: would a new twin for name put the child c over its share? A
 * child may name any module of its own: the twins it makes here are
 * bounded (counted when one is new, which is rare). */
static bool too_many(hub_iothub *x, hub_conn *c, const char *name)
{
	if (perch_map_get(&x->twins, perch_slice_cstr(name)) != NULL)
		return false;
	size_t n = 0, pos = 0;
	const perch_map_slot *slot;
	char edge[PERCH_DEVICE_ID_MAX + 1];
	while ((slot = perch_map_next(&x->twins, &pos)) != NULL)
		n += hub_identities_edge_of(&x->h->ids, slot->key, edge, sizeof edge) &&
		     strcmp(edge, c->ident.device) == 0;
	if (n < MAX_CHILD_TWINS)
		return false;
	PERCH_WARN(LOG_MOD, "%s: no twin for %s: the child has %zu twins here already (at most %d)",
	           c->client_id, name, n, MAX_CHILD_TWINS);
	return true;
}

/* link_publish takes a child edge hub's $edgehub/... publish (authorized:
 * the identity it names is the child's). */
static void link_publish(hub_iothub *x, hub_conn *c, const perch_iothub_topic *t,
                         perch_slice payload)
{
	char name[HUB_IDENT_NAME_MAX];
	if (!hub_iothub_link_name(t, name, sizeof name)) {
		PERCH_WARN(LOG_MOD, "%s: a link topic with a bad identity: dropped", c->client_id);
		return;
	}
	if (t->kind != PERCH_IOTHUB_LINK_METHOD_RESPONSE && too_many(x, c, name)) {
		link_error(c, name, 403, 403002, t->rid, "too many twins for this child edge hub");
		return;
	}
	switch (t->kind) {
	case PERCH_IOTHUB_LINK_TWIN_GET: {
		hub_twin *tw = twin_of(x, name);
		char *doc = NULL;
		size_t len = 0;
		if (tw == NULL || hub_twin_document(tw, &doc, &len) != PERCH_OK) {
			link_error(c, name, 500, ERR_SERVER_ERROR, t->rid, "out of memory");
			return;
		}
		hub_metrics_twin(x->h->metrics, "link_get:200");
		perch_err err = hub_iothub_link_send(c, PERCH_IOTHUB_LINK_TWIN_RESPONSE, name,
		                                     (perch_slice){NULL, 0}, 200, t->rid, false, 0,
		                                     (perch_slice){doc, len});
		perch_free(doc);
		if (err == PERCH_ENOMEM)
			hub_conn_close_soon(c, "out of memory", NULL);
		break;
	}
	case PERCH_IOTHUB_LINK_TWIN_REPORTED: link_reported(x, c, name, t->rid, payload); break;
	case PERCH_IOTHUB_LINK_METHOD_RESPONSE: hub_method_response(c, t, payload); break;
	default: break;
	}
}

bool hub_iothub_publish(hub_conn *c, perch_slice topic, perch_slice payload)
{
	hub_iothub *x = c->hub->iothub;
	perch_iothub_topic t;
	if (x == NULL || !tracked(c) || perch_iothub_topic_parse(topic, &t, NULL) != PERCH_OK)
		return true; /* $iothub topics are never routed */
	char name[HUB_IDENT_NAME_MAX];
	hub_identity_name(&c->ident, name, sizeof name);
	hub_online *o = seen(x, c, name);
	if (perch_iothub_is_link(t.kind)) {
		link_publish(x, c, &t, payload);
		return true;
	}
	switch (t.kind) {
	case PERCH_IOTHUB_TWIN_GET: twin_get(x, c, name, o, t.rid); break;
	case PERCH_IOTHUB_TWIN_REPORTED: twin_reported(x, c, name, o, t.rid, payload); break;
	case PERCH_IOTHUB_METHOD_RESPONSE: hub_method_response(c, &t, payload); break;
	default: break;
	}
	return true;
}

/* --- desired properties from the deployment --------------------------------------- */

typedef struct change {
	char name[HUB_IDENT_NAME_MAX];
	hub_twin next; /* the twin after the change (owned) */
	json_t *patch; /* desired patch to send (new reference), or NULL */
	bool drop;     /* the identity is gone: delete its twin */
} change;

typedef struct changes {
	change *v;
	size_t n, cap;
	bool failed; /* out of memory */
} changes;

static change *add_change(changes *cs, const char *name)
{
	change *v = perch_grow(cs->v, cs->n, &cs->cap, sizeof *v, 8);
	if (v == NULL) {
		cs->failed = true;
		return NULL;
	}
	cs->v = v;
	change *ch = &v[cs->n++];
	memset(ch, 0, sizeof *ch);
	snprintf(ch->name, sizeof ch->name, "%s", name);
	return ch;
}

static void free_changes(changes *cs)
{
	for (size_t i = 0; i < cs->n; i++) {
		hub_twin_fini(&cs->v[i].next);
		json_decref(cs->v[i].patch);
	}
	perch_free(cs->v);
	memset(cs, 0, sizeof *cs);
}

/* desired_change notes the change the deployment makes to module's twin. */
static void desired_change(hub_iothub *x, changes *cs, const char *module)
{
	hub *h = x->h;
	char name[HUB_IDENT_NAME_MAX];
	snprintf(name, sizeof name, "%s/%s", h->ids.device_id, module);
	json_t *base = json_object_get(h->ids.twins, module); /* borrowed */
	hub_twin *t = perch_map_get(&x->twins, perch_slice_cstr(name));
	if (t == NULL && (base == NULL || (json_is_object(base) && json_object_size(base) == 0)))
		return; /* nothing now, nothing wanted */
	/* What the identity is told: the deployment's, the remote layer over it
	 * (a non-object is passed on for hub_twin_set_desired to refuse). */
	json_t *want = NULL;
	perch_err err = PERCH_OK;
	if (base != NULL && !json_is_object(base))
		want = json_incref(base);
	else
		err = hub_twin_layer(base, t != NULL ? t->remote : NULL, &want);
	hub_twin next;
	memset(&next, 0, sizeof next);
	if (err == PERCH_OK)
		err = t != NULL ? hub_twin_copy(&next, t) : hub_twin_init(&next);
	json_t *patch = NULL;
	char why[300] = "";
	if (err == PERCH_OK)
		err = hub_twin_set_desired(&next, want, &patch, why, sizeof why);
	json_decref(want);
	if (err != PERCH_OK || patch == NULL) {
		if (err == PERCH_ENOMEM)
			cs->failed = true;
		else if (err != PERCH_OK)
			PERCH_ERROR(
			        LOG_MOD,
			        "%s: desired properties of deployment %llu refused: %s; the twin "
			        "keeps desired version %llu",
			        name, (unsigned long long)h->ids.deployment, why,
			        t != NULL ? (unsigned long long)t->desired_version : 1ull);
		hub_twin_fini(&next);
		json_decref(patch);
		return;
	}
	change *ch = add_change(cs, name);
	if (ch == NULL) {
		hub_twin_fini(&next);
		json_decref(patch);
		return;
	}
	ch->next = next;
	ch->patch = patch;
}

/* send_patch sends patch (borrowed; desired version v) to identity name if
 * it is connected and subscribed to desired updates. */
static void send_patch(hub_iothub *x, const char *name, uint64_t v, const json_t *patch)
{
	char edge[PERCH_DEVICE_ID_MAX + 1];
	bool link = hub_identities_edge_of(&x->h->ids, name, edge, sizeof edge);
	hub_conn *c = hub_iothub_online(x->h, link ? edge : name);
	if (c == NULL)
		return;
	char topic[MAX_SENT_TOPIC];
	size_t tlen = 0;
	perch_err berr = link ? hub_iothub_link_topic(topic, sizeof topic, &tlen,
	                                              PERCH_IOTHUB_LINK_TWIN_DESIRED, name,
	                                              (perch_slice){NULL, 0}, 0,
	                                              (perch_slice){NULL, 0}, true, v)
	                      : perch_iothub_build_desired(topic, sizeof topic, &tlen, v);
	if (berr != PERCH_OK)
		return;
	perch_slice t = {topic, tlen};
	if (!hub_broker_subscribed(c, t, NULL)) {
		hub_metrics_twin(x->h->metrics, "desired_patch:not_subscribed");
		return;
	}
	size_t n = json_dumpb(patch, NULL, 0, JSON_COMPACT);
	char *body = perch_malloc(n > 0 ? n : 1);
	perch_err err = PERCH_ENOMEM;
	if (body != NULL) {
		n = json_dumpb(patch, body, n, JSON_COMPACT);
		err = hub_iothub_send(c, t, (perch_slice){body, n}, false);
	}
	perch_free(body);
	if (err != PERCH_OK) {
		hub_metrics_twin(x->h->metrics, "desired_patch:not_sent");
		hub_metrics_dropped(x->h->metrics, "twin_patch_not_sent", 1);
		PERCH_WARN(LOG_MOD,
		           "%s: desired patch (version %llu) not sent: %s; it gets it "
		           "with its next twin GET",
		           name, (unsigned long long)v,
		           err == PERCH_ENOSPC ? "it does not read what it is sent"
		                               : perch_strerror(err));
		return;
	}
	hub_metrics_twin(x->h->metrics, "desired_patch:sent");
}

/*
 * sync_twins brings the twins in line with the identities: each module's
 * desired section becomes what the deployment says (push: and connected
 * modules get the patch), and (prune) twins of identities the hub no
 * longer knows are deleted. All of it is stored in one transaction first;
 * if that fails nothing changes (logged) until the next try.
 */
static void sync_twins(hub_iothub *x, bool push, bool prune)
{
	hub *h = x->h;
	changes cs = {0};
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&h->ids.modules, &pos)) != NULL)
		desired_change(x, &cs, slot->key);
	desired_change(x, &cs, EDGE_AGENT);
	if (prune) {
		pos = 0;
		while ((slot = perch_map_next(&x->twins, &pos)) != NULL) {
			char edge[PERCH_DEVICE_ID_MAX + 1];
			if (hub_identities_knows(&h->ids, slot->key, NULL) ||
			    hub_identities_edge_of(&h->ids, slot->key, edge, sizeof edge))
				continue;
			change *ch = add_change(&cs, slot->key);
			if (ch != NULL)
				ch->drop = true;
		}
	}
	if (cs.failed) {
		PERCH_ERROR(LOG_MOD, "out of memory: twins not updated from deployment %llu",
		            (unsigned long long)h->ids.deployment);
		free_changes(&cs);
		return;
	}
	if (cs.n == 0)
		return;
	perch_err err = hub_twin_store_begin(x->store);
	for (size_t i = 0; i < cs.n && err == PERCH_OK; i++)
		err = cs.v[i].drop ? hub_twin_store_delete(x->store, cs.v[i].name)
		                   : hub_twin_store_save(x->store, cs.v[i].name, &cs.v[i].next);
	if (err == PERCH_OK)
		err = hub_twin_store_commit(x->store);
	if (err != PERCH_OK) {
		hub_twin_store_rollback(x->store);
		PERCH_ERROR(LOG_MOD,
		            "twins of deployment %llu not stored (%s): unchanged until the next "
		            "deployment or restart",
		            (unsigned long long)h->ids.deployment, perch_strerror(err));
		free_changes(&cs);
		return;
	}
	for (change *ch = cs.v; ch != NULL && ch < cs.v + cs.n; ch++) {
		hub_twin *t = perch_map_get(&x->twins, perch_slice_cstr(ch->name));
		if (ch->drop) {
			PERCH_NOTICE(LOG_MOD, "%s: left the identities: its twin is deleted",
			             ch->name);
			(void)perch_map_del(&x->twins, perch_slice_cstr(ch->name));
			hub_twin_fini(t);
			perch_free(t);
			continue;
		}
		if (t == NULL) {
			t = perch_calloc(1, sizeof *t);
			if (t == NULL || perch_map_put(&x->twins, perch_slice_cstr(ch->name), t,
			                               NULL) != PERCH_OK) {
				perch_free(t);
				PERCH_ERROR(LOG_MOD, "%s: out of memory: twin kept on disk only",
				            ch->name);
				continue;
			}
		} else {
			hub_twin_fini(t);
		}
		*t = ch->next;
		memset(&ch->next, 0, sizeof ch->next);
		PERCH_NOTICE(LOG_MOD, "%s: desired version %llu (deployment %llu)", ch->name,
		             (unsigned long long)t->desired_version,
		             (unsigned long long)h->ids.deployment);
		if (push)
			send_patch(x, ch->name, t->desired_version, ch->patch);
	}
	free_changes(&cs);
}

hub_twin *hub_iothub_twin(hub *h, const char *name)
{
	return h->iothub != NULL ? twin_of(h->iothub, name) : NULL;
}

perch_err hub_iothub_set_remote(hub *h, const char *name, const json_t *doc, bool replace,
                                uint64_t version, char *why, size_t cap)
{
	hub_iothub *x = h->iothub;
	if (cap > 0)
		why[0] = '\0';
	hub_twin *t = x != NULL ? twin_of(x, name) : NULL;
	if (t == NULL)
		return PERCH_ENOMEM;
	if (!json_is_object(doc)) {
		snprintf(why, cap, "desired properties must be a JSON object");
		return PERCH_EINVAL;
	}
	perch_err err = hub_twin_check(doc, !replace, why, cap);
	if (err != PERCH_OK)
		return err;
	hub_twin next;
	err = hub_twin_copy(&next, t);
	if (err == PERCH_OK && replace) {
		json_decref(next.remote);
		next.remote = json_object();
		err = next.remote != NULL ? PERCH_OK : PERCH_ENOMEM;
	}
	if (err == PERCH_OK)
		err = hub_twin_merge(next.remote, doc);
	if (err == PERCH_OK)
		next.remote_version = version != 0 ? version : next.remote_version;
	/* The deployment's desired properties of a module of this device, under
	 * the remote layer. */
	const json_t *base = NULL;
	size_t dn = strlen(h->ids.device_id);
	if (strncmp(name, h->ids.device_id, dn) == 0 && name[dn] == '/')
		base = json_object_get(h->ids.twins, name + dn + 1);
	json_t *want = NULL, *patch = NULL;
	if (err == PERCH_OK)
		err = hub_twin_layer(base, next.remote, &want);
	if (err == PERCH_OK)
		err = hub_twin_set_desired(&next, want, &patch, why, cap);
	json_decref(want);
	if (err == PERCH_OK && version != 0 && patch != NULL && next.desired_version < version) {
		/* Versions follow the parent's where it can (they only grow). */
		next.desired_version = version;
		err = json_object_set_new(patch, "$version", json_integer((json_int_t)version)) == 0
		              ? PERCH_OK
		              : PERCH_ENOMEM;
	}
	bool same = err == PERCH_OK && patch == NULL && next.remote_version == t->remote_version &&
	            json_equal(next.remote, t->remote);
	if (err == PERCH_OK && !same)
		err = hub_twin_store_save(x->store, name, &next);
	if (err != PERCH_OK || same) {
		if (err != PERCH_OK && why[0] == '\0')
			snprintf(why, cap, "%s", perch_strerror(err));
		hub_twin_fini(&next);
		json_decref(patch);
		return err;
	}
	hub_twin_fini(t);
	*t = next;
	if (patch != NULL) {
		PERCH_NOTICE(LOG_MOD, "%s: desired version %llu (%s)", name,
		             (unsigned long long)t->desired_version,
		             version != 0 ? "from the parent" : "patched here");
		send_patch(x, name, t->desired_version, patch);
	}
	json_decref(patch);
	return PERCH_OK;
}

void hub_iothub_identities_changed(hub *h)
{
	if (h->iothub != NULL)
		sync_twins(h->iothub, true, true);
	hub_twinsync_identities_changed(h);
}

/* --- life ------------------------------------------------------------------------ */

static void load_one(void *arg, const char *name, hub_twin *t)
{
	hub_iothub *x = arg;
	hub_twin *p = perch_malloc(sizeof *p);
	if (p == NULL || perch_map_put(&x->twins, perch_slice_cstr(name), p, NULL) != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "out of memory loading the twin of %s", name);
		hub_twin_fini(t);
		perch_free(p);
		return;
	}
	*p = *t;
}

perch_err hub_iothub_open(hub *h)
{
	h->iothub = NULL;
	hub_iothub *x = perch_calloc(1, sizeof *x);
	if (x == NULL)
		return PERCH_ENOMEM;
	x->h = h;
	h->iothub = x;
	char path[1100];
	if ((size_t)snprintf(path, sizeof path, "%s/twins.db", h->cfg.data_dir) >= sizeof path) {
		PERCH_ERROR(LOG_MOD, "data dir path too long for twins.db");
		hub_iothub_close(h);
		return PERCH_ETOOBIG;
	}
	static const perch_db_sync syncs[] = {PERCH_DB_SYNC_FULL, PERCH_DB_SYNC_NORMAL,
	                                      PERCH_DB_SYNC_OFF};
	perch_err err = hub_twin_store_open(path, syncs[h->cfg.sync], &x->store);
	if (err == PERCH_OK)
		err = hub_twin_store_load(x->store, load_one, x);
	if (err == PERCH_OK)
		err = hub_method_open(h);
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot open the twins in %s: %s", path, perch_strerror(err));
		hub_iothub_close(h);
		return err;
	}
	size_t n = x->twins.count;
	/* Desired properties from the deployment read at start; nobody is
	 * connected yet, and the deployment may not be there yet: no prune. */
	sync_twins(x, false, false);
	PERCH_INFO(LOG_MOD, "twins %s: %zu twins", path, n);
	return PERCH_OK;
}

void hub_iothub_close(hub *h)
{
	hub_iothub *x = h->iothub;
	if (x == NULL)
		return;
	hub_method_close(h);
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&x->twins, &pos)) != NULL) {
		hub_twin_fini(slot->value);
		perch_free(slot->value);
	}
	perch_map_fini(&x->twins);
	pos = 0;
	while ((slot = perch_map_next(&x->online, &pos)) != NULL)
		perch_free(slot->value);
	perch_map_fini(&x->online);
	hub_twin_store_close(x->store);
	perch_free(x);
	h->iothub = NULL;
}

void hub_iothub_tick(hub *h)
{
	hub_method_tick(h);
}

size_t hub_iothub_pending_calls(const hub *h)
{
	return hub_method_pending(h);
}
