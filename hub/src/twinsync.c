/*
 * twinsync.c — the child side of twins and direct methods over the upstream
 * link (docs/hub.md "Twins over the link"). The parent hub holds the twins
 * of this device's identities (the device, its modules, its leaf devices)
 * too; one MQTT connection carries them all, so the topics name the
 * identity: $edgehub/{d}[/{m}]/twin/... and .../methods/...
 * (perch/iothub_topic.h).
 *
 *   link up            -> a GET of every identity's twin at the parent
 *   its answer         -> desired: the parent's document becomes the
 *                         twin's remote layer (iothub.c merges it over the
 *                         deployment's and tells the identity what
 *                         changed); reported: what the parent has, the
 *                         base of the next sync
 *   a reported change  -> the merge patch from what the parent has to what
 *                         the identity reported here, QoS 1, with $rid the
 *                         local reported $version (the parent adopts it);
 *                         one at a time, the next after the PUBACK
 *   desired/?$version  -> applied to the remote layer when it follows the
 *                         last one; a gap means a patch was missed: GET again
 *   methods/post/{n}   -> called here (method.c) with the parent's request;
 *                         the answer goes back as methods/res/{status}
 *
 * Offline, twins are served from twins.db and reported patches are applied
 * there at once; when the link returns the parent gets, per identity, one
 * patch with their combined effect: the same result as every patch in
 * order, and no queue that can overflow. Nothing here is stored: what the
 * parent has is asked again on every link. Loop thread only.
 */
#include "twinsync.h"

#include <stdio.h>
#include <string.h>

#include "iothub_int.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/log.h"
#include "upstream.h"

#define LOG_MOD "hub.twinsync"

typedef enum sync_state {
	SYNC_DOWN = 0, /* no link, or the GET was not sent */
	SYNC_GETTING,  /* GET sent, waiting for its answer */
	SYNC_IDLE,     /* parent's reported known (synced) */
	SYNC_SENDING,  /* a reported patch in flight */
	SYNC_FAILED,   /* the parent answered the GET with an error: not synced on this link */
} sync_state;

typedef struct sync_entry {
	sync_state state;
	char rid[24];        /* of the GET in flight */
	json_t *synced;      /* IDLE/SENDING: the parent's reported section */
	json_t *sending;     /* SENDING: the reported section the patch makes */
	uint64_t synced_for; /* the local reported $version synced equals; 0: unknown */
	uint64_t sending_version;
	bool refused;     /* SENDING: the parent answered the patch with an error */
	int64_t since_ms; /* when state was entered (retries, GET timeouts) */
} sync_entry;

/* A method call from the parent, running here. */
typedef struct relay {
	struct relay *next, *prev;
	hub_twinsync *s;
	hub_method_call *call;
	uint64_t link; /* the link it came on */
	char name[HUB_IDENT_NAME_MAX];
	char rid[PERCH_IOTHUB_MAX_RID + 1];
} relay;

struct hub_twinsync {
	hub *h;
	bool up;
	uint64_t link; /* counts links */
	uint64_t next_rid;
	perch_map entries; /* identity name -> sync_entry (owned) */
	perch_map by_rid;  /* GET rid -> identity name (owned copy) */
	sync_entry *inflight;
	char inflight_name[HUB_IDENT_NAME_MAX];
	relay *relays;
	uint64_t synced, patches_sent, methods;
	size_t scan; /* pump resumes here: every identity gets its turn */
	int64_t next_check_ms;
};

#define RETRY_MS       10000 /* a GET that failed or went unanswered is asked again */
#define GET_TIMEOUT_MS 30000

static hub_twinsync *sync_of(hub *h)
{
	return h->twinsync;
}

static void entry_reset(sync_entry *e)
{
	json_decref(e->synced);
	json_decref(e->sending);
	e->synced = e->sending = NULL;
	e->synced_for = e->sending_version = 0;
	e->state = SYNC_DOWN;
	e->rid[0] = '\0';
}

static sync_entry *entry_of(hub_twinsync *s, const char *name)
{
	sync_entry *e = perch_map_get(&s->entries, perch_slice_cstr(name));
	if (e != NULL)
		return e;
	e = perch_calloc(1, sizeof *e);
	if (e == NULL || perch_map_put(&s->entries, perch_slice_cstr(name), e, NULL) != PERCH_OK) {
		perch_free(e);
		return NULL;
	}
	return e;
}

static void clear_rids(hub_twinsync *s)
{
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&s->by_rid, &pos)) != NULL)
		perch_free(slot->value);
	perch_map_fini(&s->by_rid);
}

/* send_link sends a link topic for name on the upstream connection. */
static perch_err send_link(hub_twinsync *s, perch_iothub_kind kind, const char *name,
                           unsigned status, perch_slice rid, perch_slice body, bool qos1)
{
	char topic[1024];
	size_t tlen = 0;
	perch_err err = hub_iothub_link_topic(topic, sizeof topic, &tlen, kind, name,
	                                      (perch_slice){NULL, 0}, status, rid, false, 0);
	if (err == PERCH_OK)
		err = hub_upstream_link_send(s->h, (perch_slice){topic, tlen}, body, qos1);
	return err;
}

/* get asks the parent for name's twin. */
static void get(hub_twinsync *s, const char *name, sync_entry *e)
{
	e->since_ms = hub_now_ms();
	if (e->rid[0] != '\0')
		perch_free(perch_map_del(&s->by_rid, perch_slice_cstr(e->rid)));
	snprintf(e->rid, sizeof e->rid, "g%llx", (unsigned long long)s->next_rid++);
	char *copy = perch_strdup(name);
	if (copy == NULL ||
	    perch_map_put(&s->by_rid, perch_slice_cstr(e->rid), copy, NULL) != PERCH_OK) {
		perch_free(copy);
		e->rid[0] = '\0';
		e->state = SYNC_DOWN;
		return;
	}
	e->state = SYNC_GETTING;
	if (send_link(s, PERCH_IOTHUB_LINK_TWIN_GET, name, 0, perch_slice_cstr(e->rid),
	              (perch_slice){NULL, 0}, false) != PERCH_OK)
		e->state = SYNC_DOWN; /* the link went: the next one asks again */
}

/* mine: is name an identity this hub answers for upward (the device, a
 * module of it, a leaf device that is not a child hub's)? */
static bool mine(hub *h, const char *name)
{
	hub_identity id;
	if (!hub_identities_knows(&h->ids, name, &id))
		return false;
	if (id.kind == HUB_IDENT_LEAF)
		return perch_map_get(&h->ids.edges, perch_slice_cstr(id.device)) == NULL &&
		       perch_map_get(&h->ids.parents, perch_slice_cstr(id.device)) == NULL;
	return true;
}

/* pump sends the next reported change, if nothing is in flight. */
static void pump(hub_twinsync *s)
{
	if (!s->up || s->inflight != NULL)
		return;
	/* From where the last one was sent, around once: a busy identity does
	 * not keep the others waiting. */
	size_t pos = s->scan, wrapped = 0;
	const perch_map_slot *slot;
	for (;;) {
		slot = perch_map_next(&s->entries, &pos);
		if (slot == NULL) {
			if (wrapped++ > 0 || s->scan == 0)
				return;
			pos = 0;
			continue;
		}
		if (wrapped > 0 && pos > s->scan)
			return; /* around once */
		sync_entry *e = slot->value;
		if (e->state != SYNC_IDLE)
			continue;
		hub_twin *t = hub_iothub_twin(s->h, slot->key);
		if (t == NULL || e->synced_for == t->reported_version)
			continue;
		json_t *patch = NULL;
		if (hub_twin_diff(e->synced, t->reported, &patch) != PERCH_OK)
			return;
		if (json_object_size(patch) == 0) {
			json_decref(patch);
			e->synced_for = t->reported_version;
			continue;
		}
		size_t n = json_dumpb(patch, NULL, 0, JSON_COMPACT);
		char *body = perch_malloc(n > 0 ? n : 1);
		json_t *snap = json_deep_copy(t->reported);
		if (body != NULL)
			n = json_dumpb(patch, body, n, JSON_COMPACT);
		json_decref(patch);
		char rid[24];
		snprintf(rid, sizeof rid, "%llu", (unsigned long long)t->reported_version);
		perch_err err =
		        body != NULL && snap != NULL
		                ? send_link(s, PERCH_IOTHUB_LINK_TWIN_REPORTED, slot->key, 0,
		                            perch_slice_cstr(rid), (perch_slice){body, n}, true)
		                : PERCH_ENOMEM;
		perch_free(body);
		if (err != PERCH_OK) {
			json_decref(snap);
			return; /* tried again at the next change or link */
		}
		e->state = SYNC_SENDING;
		e->since_ms = hub_now_ms();
		e->refused = false;
		e->sending = snap;
		e->sending_version = t->reported_version;
		s->scan = pos;
		s->inflight = e;
		snprintf(s->inflight_name, sizeof s->inflight_name, "%s", slot->key);
		s->patches_sent++;
		hub_metrics_twin(s->h->metrics, "upstream_reported:sent");
		PERCH_DEBUG(LOG_MOD, "%s: reported version %llu sent to the parent", slot->key,
		            (unsigned long long)e->sending_version);
		return;
	}
}

/* ask GETs name's twin at the parent unless that is under way. */
static void ask(hub_twinsync *s, const char *name, size_t *asked)
{
	if (!mine(s->h, name))
		return;
	sync_entry *e = entry_of(s, name);
	if (e != NULL && e->state == SYNC_DOWN) {
		get(s, name, e);
		(*asked)++;
	}
}

/* ask_all asks for the twin of every identity of this hub not asked for
 * yet on this link: the device, $edgeAgent, each module, each leaf device,
 * and any other twin it keeps. */
static void ask_all(hub_twinsync *s)
{
	hub *h = s->h;
	const hub_identities *ids = &h->ids;
	char name[HUB_IDENT_NAME_MAX];
	size_t asked = 0, pos = 0;
	const perch_map_slot *slot;
	ask(s, ids->device_id, &asked);
	snprintf(name, sizeof name, "%s/$edgeAgent", ids->device_id);
	ask(s, name, &asked);
	while ((slot = perch_map_next(&ids->modules, &pos)) != NULL) {
		snprintf(name, sizeof name, "%s/%s", ids->device_id, slot->key);
		ask(s, name, &asked);
	}
	pos = 0;
	while ((slot = perch_map_next(&ids->leaves, &pos)) != NULL)
		ask(s, slot->key, &asked);
	pos = 0;
	while ((slot = perch_map_next(&h->iothub->twins, &pos)) != NULL)
		ask(s, slot->key, &asked);
	if (asked > 0)
		PERCH_INFO(LOG_MOD, "syncing %zu twins with the parent", asked);
}

void hub_twinsync_up(hub *h)
{
	hub_twinsync *s = sync_of(h);
	if (s == NULL)
		return;
	s->up = true;
	s->link++;
	s->inflight = NULL;
	s->next_check_ms = hub_now_ms() + RETRY_MS;
	ask_all(s);
}

void hub_twinsync_identities_changed(hub *h)
{
	hub_twinsync *s = sync_of(h);
	if (s != NULL && s->up)
		ask_all(s);
}

void hub_twinsync_tick(hub *h)
{
	hub_twinsync *s = sync_of(h);
	int64_t now = hub_now_ms();
	if (s == NULL || !s->up || now < s->next_check_ms)
		return;
	s->next_check_ms = now + 1000;
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&s->entries, &pos)) != NULL) {
		sync_entry *e = slot->value;
		bool again = ((e->state == SYNC_DOWN || e->state == SYNC_FAILED) &&
		              now - e->since_ms >= RETRY_MS) ||
		             (e->state == SYNC_GETTING && now - e->since_ms >= GET_TIMEOUT_MS);
		if (again) {
			PERCH_INFO(LOG_MOD, "%s: asking the parent for its twin again", slot->key);
			get(s, slot->key, e);
		}
	}
}

void hub_twinsync_down(hub *h)
{
	hub_twinsync *s = sync_of(h);
	if (s == NULL)
		return;
	s->up = false;
	s->inflight = NULL;
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&s->entries, &pos)) != NULL)
		entry_reset(slot->value);
	clear_rids(s);
}

void hub_twinsync_acked(hub *h)
{
	hub_twinsync *s = sync_of(h);
	if (s == NULL || s->inflight == NULL)
		return;
	sync_entry *e = s->inflight;
	s->inflight = NULL;
	if (e->refused) {
		/* The parent did not take it: what it has is asked again. */
		json_decref(e->sending);
		e->sending = NULL;
		get(s, s->inflight_name, e);
		pump(s);
		return;
	}
	json_decref(e->synced);
	e->synced = e->sending;
	e->sending = NULL;
	e->synced_for = e->sending_version;
	e->state = SYNC_IDLE;
	hub_metrics_twin(h->metrics, "upstream_reported:204");
	pump(s);
}

void hub_twinsync_reported(hub *h, const char *name)
{
	hub_twinsync *s = sync_of(h);
	if (s == NULL || !s->up)
		return;
	size_t asked = 0;
	ask(s, name, &asked); /* an identity new since the link came up */
	pump(s);
}

/* take_version removes "$version" from the object o and returns it (0 when
 * absent or not a positive integer). */
static uint64_t take_version(json_t *o)
{
	json_t *v = json_object_get(o, "$version");
	uint64_t n = json_is_integer(v) && json_integer_value(v) > 0
	                     ? (uint64_t)json_integer_value(v)
	                     : 0;
	(void)json_object_del(o, "$version");
	return n;
}

/* on_twin_doc takes the parent's answer to a GET: its desired section
 * becomes the remote layer, its reported section the sync's base. */
static void on_twin_doc(hub_twinsync *s, const char *name, sync_entry *e, perch_slice payload)
{
	json_t *doc = json_loadb(payload.ptr, payload.len, JSON_REJECT_DUPLICATES, NULL);
	json_t *desired = json_object_get(doc, "desired");
	json_t *reported = json_object_get(doc, "reported");
	if (!json_is_object(desired) || !json_is_object(reported)) {
		PERCH_WARN(LOG_MOD, "%s: the parent's twin is not a twin document: not synced",
		           name);
		json_decref(doc);
		e->state = SYNC_FAILED;
		return;
	}
	uint64_t v = take_version(desired);
	(void)take_version(reported);
	char why[300];
	hub_twin *t = hub_iothub_twin(s->h, name);
	if (t != NULL && (v != t->remote_version || !json_equal(desired, t->remote))) {
		perch_err err =
		        hub_iothub_set_remote(s->h, name, desired, true, v, why, sizeof why);
		if (err != PERCH_OK)
			PERCH_WARN(LOG_MOD,
			           "%s: the parent's desired properties (version %llu) not taken: "
			           "%s",
			           name, (unsigned long long)v, why);
	}
	json_decref(e->synced);
	e->synced = json_incref(reported);
	e->synced_for = 0;
	e->state = SYNC_IDLE;
	s->synced++;
	hub_metrics_twin(s->h->metrics, "upstream_get:200");
	json_decref(doc);
}

static void on_desired(hub_twinsync *s, const char *name, const perch_iothub_topic *t,
                       perch_slice payload)
{
	sync_entry *e = entry_of(s, name);
	hub_twin *tw = hub_iothub_twin(s->h, name);
	if (e == NULL || tw == NULL)
		return;
	if (t->version <= tw->remote_version)
		return; /* already have it */
	if (t->version != tw->remote_version + 1 || e->state == SYNC_GETTING ||
	    e->state == SYNC_DOWN) {
		/* A patch was missed (or the GET's answer is still to come): the
		 * whole document settles it. */
		if (e->state != SYNC_GETTING)
			get(s, name, e);
		return;
	}
	json_t *patch = json_loadb(payload.ptr, payload.len, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(patch))
		(void)json_object_del(patch, "$version");
	char why[300] = "not a JSON object";
	perch_err err = json_is_object(patch) ? hub_iothub_set_remote(s->h, name, patch, false,
	                                                              t->version, why, sizeof why)
	                                      : PERCH_EINVAL;
	json_decref(patch);
	if (err != PERCH_OK) {
		PERCH_WARN(LOG_MOD, "%s: desired patch %llu from the parent not taken: %s", name,
		           (unsigned long long)t->version, why);
		get(s, name, e);
	}
}

static void relay_unlink(relay *r)
{
	if (r->prev != NULL)
		r->prev->next = r->next;
	else if (r->s != NULL)
		r->s->relays = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
}

/* relay_done: the answer of a call from the parent goes back up. */
static void relay_done(void *arg, unsigned status, const char *body, size_t len)
{
	relay *r = arg;
	hub_twinsync *s = r->s;
	relay_unlink(r);
	if (s->up && s->link == r->link) {
		if (send_link(s, PERCH_IOTHUB_LINK_METHOD_RESPONSE, r->name, status,
		              perch_slice_cstr(r->rid), (perch_slice){body, len},
		              false) != PERCH_OK)
			PERCH_WARN(LOG_MOD,
			           "%s: the answer (%u) of a method call from the parent "
			           "could not be sent",
			           r->name, status);
	} else {
		PERCH_INFO(LOG_MOD,
		           "%s: a method call from the parent ended (%u) after its link "
		           "went down: the answer is dropped",
		           r->name, status);
	}
	perch_free(r);
}

static void on_method(hub_twinsync *s, const char *name, const perch_iothub_topic *t,
                      perch_slice payload)
{
	relay *r = perch_calloc(1, sizeof *r);
	if (r == NULL)
		return;
	r->s = s;
	r->link = s->link;
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->rid, sizeof r->rid, "%.*s", (int)t->rid.len, t->rid.ptr);
	r->next = s->relays;
	if (s->relays != NULL)
		s->relays->prev = r;
	s->relays = r;
	s->methods++;
	hub_identity self;
	memset(&self, 0, sizeof self);
	self.kind = HUB_IDENT_DEVICE;
	snprintf(self.device, sizeof self.device, "%s", s->h->ids.device_id);
	perch_slice dev, mod;
	hub_iothub_split_name(name, &dev, &mod);
	char d[PERCH_DEVICE_ID_MAX + 1], m[PERCH_DEVICE_ID_MAX + 1];
	snprintf(d, sizeof d, "%.*s", (int)dev.len, dev.ptr);
	snprintf(m, sizeof m, "%.*s", (int)mod.len, mod.ptr != NULL ? mod.ptr : "");
	/* relay_done may run at once (and free r). */
	hub_method_call *call = NULL;
	hub_method_invoke(s->h, &self, d, m, payload.ptr, payload.len, relay_done, r, &call);
	if (call != NULL)
		r->call = call;
}

void hub_twinsync_publish(hub *h, const perch_iothub_topic *t, perch_slice payload)
{
	hub_twinsync *s = sync_of(h);
	char name[HUB_IDENT_NAME_MAX];
	if (s == NULL || !s->up)
		return;
	if (!hub_iothub_link_name(t, name, sizeof name)) {
		PERCH_WARN(LOG_MOD, "a link message from the parent names no identity: dropped");
		return;
	}
	if (t->kind == PERCH_IOTHUB_LINK_METHOD_REQUEST) {
		on_method(s, name, t, payload); /* method.c answers 404 for a stranger */
		return;
	}
	if (!mine(h, name)) {
		PERCH_WARN(LOG_MOD,
		           "%s: a %s from the parent for an identity that is not this "
		           "hub's: dropped",
		           name, perch_iothub_kind_str(t->kind));
		return;
	}
	switch (t->kind) {
	case PERCH_IOTHUB_LINK_TWIN_RESPONSE: {
		char rid[PERCH_IOTHUB_MAX_RID + 1];
		snprintf(rid, sizeof rid, "%.*s", (int)t->rid.len, t->rid.ptr);
		char *who = perch_map_del(&s->by_rid, perch_slice_cstr(rid));
		sync_entry *e = who != NULL && strcmp(who, name) == 0 ? entry_of(s, name) : NULL;
		perch_free(who);
		if (e == NULL) {
			if (t->status < 300)
				return;
			PERCH_WARN(LOG_MOD, "%s: the parent refused a reported patch (%u): %.*s",
			           name, t->status, (int)(payload.len > 300 ? 300 : payload.len),
			           payload.ptr);
			char sent[24];
			snprintf(sent, sizeof sent, "%llu",
			         s->inflight != NULL
			                 ? (unsigned long long)s->inflight->sending_version
			                 : 0ull);
			if (s->inflight != NULL && strcmp(s->inflight_name, name) == 0 &&
			    strcmp(sent, rid) == 0)
				s->inflight->refused = true; /* its PUBACK comes next */
			return;
		}
		e->rid[0] = '\0';
		if (t->status != 200) {
			PERCH_WARN(LOG_MOD,
			           "%s: the parent answered its twin GET with %u: not synced "
			           "on this link: %.*s",
			           name, t->status, (int)(payload.len > 300 ? 300 : payload.len),
			           payload.ptr);
			e->state = SYNC_FAILED;
			char label[32];
			snprintf(label, sizeof label, "upstream_get:%u", t->status);
			hub_metrics_twin(h->metrics, label);
			return;
		}
		on_twin_doc(s, name, e, payload);
		pump(s);
		return;
	}
	case PERCH_IOTHUB_LINK_TWIN_DESIRED: on_desired(s, name, t, payload); return;
	default:
		PERCH_DEBUG(LOG_MOD, "%s: a %s from the parent: ignored", name,
		            perch_iothub_kind_str(t->kind));
		return;
	}
}

perch_err hub_twinsync_open(hub *h)
{
	hub_twinsync *s = perch_calloc(1, sizeof *s);
	if (s == NULL)
		return PERCH_ENOMEM;
	s->h = h;
	s->next_rid = 1;
	h->twinsync = s;
	return PERCH_OK;
}

void hub_twinsync_close(hub *h)
{
	hub_twinsync *s = sync_of(h);
	if (s == NULL)
		return;
	while (s->relays != NULL) {
		relay *r = s->relays;
		relay_unlink(r);
		if (r->call != NULL)
			hub_method_cancel(h, r->call);
		perch_free(r);
	}
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&s->entries, &pos)) != NULL) {
		entry_reset(slot->value);
		perch_free(slot->value);
	}
	perch_map_fini(&s->entries);
	clear_rids(s);
	perch_free(s);
	h->twinsync = NULL;
}
