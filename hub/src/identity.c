/*
 * identity.c — the hub's identity registry, CONNECT authentication and
 * topic authorization (identity.h, docs/identity.md).
 */
#include "identity.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/props.h"
#include "perch/sas.h"

static const char *const reason_names[HUB_AUTH_REASON_COUNT] = {
        [HUB_AUTH_OK] = "ok",
        [HUB_AUTH_NO_CREDENTIALS] = "no_credentials",
        [HUB_AUTH_BAD_CLIENT_ID] = "bad_client_id",
        [HUB_AUTH_BAD_USERNAME] = "bad_username",
        [HUB_AUTH_UNKNOWN] = "unknown_identity",
        [HUB_AUTH_NO_KEY] = "no_device_key",
        [HUB_AUTH_TOKEN_MALFORMED] = "token_malformed",
        [HUB_AUTH_TOKEN_RESOURCE] = "token_for_another_identity",
        [HUB_AUTH_TOKEN_SIGNATURE] = "token_signature",
        [HUB_AUTH_TOKEN_EXPIRED] = "token_expired",
        [HUB_AUTH_TOKEN_LIFETIME] = "token_lifetime_too_long",
        [HUB_AUTH_CERT_MISMATCH] = "certificate_mismatch",
};

const char *hub_auth_reason_str(hub_auth_reason r)
{
	return (unsigned)r < HUB_AUTH_REASON_COUNT ? reason_names[r] : "unknown";
}

#define EDGE_AGENT "$edgeAgent" /* perch-agent's own identity: always known */

/* copy_id copies s (len n) into out when it is a valid IoT Hub id. */
static bool copy_id(const char *s, size_t n, char *out)
{
	if (n == 0 || n > PERCH_DEVICE_ID_MAX)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return perch_device_valid_id(out);
}

/* split_client_id: "d" or "d/m". */
static bool split_client_id(perch_slice cid, char *dev, char *mod)
{
	mod[0] = '\0';
	if (cid.len == 0) /* and cid.ptr may be NULL: not for memchr */
		return false;
	const char *slash = memchr(cid.ptr, '/', cid.len);
	if (slash == NULL)
		return copy_id(cid.ptr, cid.len, dev);
	size_t dn = (size_t)(slash - cid.ptr);
	return copy_id(cid.ptr, dn, dev) && copy_id(slash + 1, cid.len - dn - 1, mod);
}

/* username_ok: "{host}/{d}[/{m}][/][?query]" naming host, dev and mod. */
static bool username_ok(const hub_identities *ids, perch_slice user, const char *dev,
                        const char *mod)
{
	if (user.len == 0) /* and user.ptr may be NULL: not for memchr */
		return false;
	const char *q = memchr(user.ptr, '?', user.len);
	size_t n = q != NULL ? (size_t)(q - user.ptr) : user.len;
	if (n > 0 && user.ptr[n - 1] == '/')
		n--;
	char path[256 + 2 * PERCH_DEVICE_ID_MAX + 4];
	if (n == 0 || n >= sizeof path)
		return false;
	memcpy(path, user.ptr, n);
	path[n] = '\0';
	char *host = path;
	char *d = strchr(host, '/');
	if (d == NULL)
		return false;
	*d++ = '\0';
	char *m = strchr(d, '/');
	if (m != NULL)
		*m++ = '\0';
	if (strcasecmp(host, ids->iothub_host) != 0 || strcmp(d, dev) != 0)
		return false;
	return m == NULL ? mod[0] == '\0' : strcmp(m, mod) == 0;
}

/* key_of writes the key of an identity into key (cap bytes); false when the
 * hub has none for it. */
static bool key_of(const hub_identities *ids, hub_ident_kind kind, const char *dev, const char *mod,
                   char *key, size_t cap)
{
	switch (kind) {
	case HUB_IDENT_DEVICE:
		if (ids->device_key[0] == '\0')
			return false;
		snprintf(key, cap, "%s", ids->device_key);
		return true;
	case HUB_IDENT_MODULE: {
		size_t n = 0;
		if (ids->device_key[0] == '\0' ||
		    perch_sas_derive_module_key(perch_slice_cstr(ids->device_key),
		                                perch_slice_cstr(mod), key, cap - 1,
		                                &n) != PERCH_OK)
			return false;
		key[n] = '\0';
		return true;
	}
	case HUB_IDENT_LEAF: {
		const char *k = perch_map_get(&ids->leaves, perch_slice_cstr(dev));
		if (k == NULL || k[0] == '\0')
			return false; /* unknown, or certificates only */
		snprintf(key, cap, "%s", k);
		return true;
	}
	case HUB_IDENT_ANONYMOUS: break;
	}
	return false;
}

/* kind_of says what kind of identity dev[/mod] is for ids, or ANONYMOUS when
 * the hub does not know it. */
static hub_ident_kind kind_of(const hub_identities *ids, const char *dev, const char *mod)
{
	if (mod[0] != '\0') {
		if (strcmp(dev, ids->device_id) != 0)
			return HUB_IDENT_ANONYMOUS;
		if (strcmp(mod, EDGE_AGENT) == 0 ||
		    perch_map_get(&ids->modules, perch_slice_cstr(mod)) != NULL)
			return HUB_IDENT_MODULE;
		return HUB_IDENT_ANONYMOUS;
	}
	if (strcmp(dev, ids->device_id) == 0)
		return HUB_IDENT_DEVICE;
	if (perch_map_get(&ids->leaves, perch_slice_cstr(dev)) != NULL)
		return HUB_IDENT_LEAF;
	return HUB_IDENT_ANONYMOUS;
}

static hub_auth_reason refuse(uint8_t *connack, uint8_t code, hub_auth_reason r)
{
	*connack = code;
	return r;
}

hub_auth_reason hub_auth_check(const hub_identities *ids, const hub_auth_request *req,
                               hub_identity *out, uint8_t *connack)
{
	memset(out, 0, sizeof *out);
	*connack = 0;
	char dev[PERCH_DEVICE_ID_MAX + 1], mod[PERCH_DEVICE_ID_MAX + 1];
	bool parsed = split_client_id(req->client_id, dev, mod);
	hub_ident_kind kind = parsed ? kind_of(ids, dev, mod) : HUB_IDENT_ANONYMOUS;
	if (!req->has_password && kind == HUB_IDENT_ANONYMOUS) {
		/* Anonymous when allowed (a client certificate changes nothing) —
		 * but never under a known identity's client id: that would take
		 * over its session. */
		if (req->allow_anonymous)
			return HUB_AUTH_OK;
		if (req->cert_cn == NULL)
			return refuse(connack, 5, HUB_AUTH_NO_CREDENTIALS);
	}
	if (!req->has_password && req->cert_cn == NULL)
		return refuse(connack, 5, HUB_AUTH_NO_CREDENTIALS);
	if (!parsed)
		return refuse(connack, 2, HUB_AUTH_BAD_CLIENT_ID);
	if (kind == HUB_IDENT_ANONYMOUS)
		return refuse(connack, 5, HUB_AUTH_UNKNOWN);
	if (!username_ok(ids, req->username, dev, mod))
		return refuse(connack, 5, HUB_AUTH_BAD_USERNAME);
	char key[PERCH_DEVICE_KEY_MAX + 1];
	bool have_key = key_of(ids, kind, dev, mod, key, sizeof key);
	if (!req->has_password) {
		char want[2 * PERCH_DEVICE_ID_MAX + 2];
		snprintf(want, sizeof want, "%s%s%s", dev, mod[0] != '\0' ? "/" : "", mod);
		if (strcmp(req->cert_cn, want) != 0)
			return refuse(connack, 5, HUB_AUTH_CERT_MISMATCH);
	} else {
		if (!have_key && kind == HUB_IDENT_LEAF)
			return refuse(connack, 4, HUB_AUTH_TOKEN_SIGNATURE); /* certificates only */
		if (!have_key)
			return refuse(connack, 3, HUB_AUTH_NO_KEY);
		char resource[sizeof ids->iothub_host + (size_t)2 * PERCH_DEVICE_ID_MAX + 32];
		if (mod[0] != '\0')
			snprintf(resource, sizeof resource, "%s/devices/%s/modules/%s",
			         ids->iothub_host, dev, mod);
		else
			snprintf(resource, sizeof resource, "%s/devices/%s", ids->iothub_host, dev);
		perch_sas_check check = {perch_slice_cstr(resource), perch_slice_cstr(key),
		                         req->now, ids->skew_s, ids->max_lifetime_s};
		perch_sas_reason why = PERCH_SAS_OK;
		perch_err err = perch_sas_verify(req->password, &check, NULL, &why);
		if (err != PERCH_OK) {
			memset(key, 0, sizeof key);
			switch (why) {
			case PERCH_SAS_RESOURCE_MISMATCH:
				return refuse(connack, 5, HUB_AUTH_TOKEN_RESOURCE);
			case PERCH_SAS_WRONG_SIGNATURE:
				return refuse(connack, 4, HUB_AUTH_TOKEN_SIGNATURE);
			case PERCH_SAS_EXPIRED: return refuse(connack, 4, HUB_AUTH_TOKEN_EXPIRED);
			case PERCH_SAS_LIFETIME_TOO_LONG:
				return refuse(connack, 4, HUB_AUTH_TOKEN_LIFETIME);
			default: return refuse(connack, 4, HUB_AUTH_TOKEN_MALFORMED);
			}
		}
	}
	out->kind = kind;
	out->reg = ids;
	snprintf(out->device, sizeof out->device, "%s", dev);
	snprintf(out->module, sizeof out->module, "%s", mod);
	if (have_key)
		snprintf(out->keyfp, sizeof out->keyfp, "%.16s", key);
	memset(key, 0, sizeof key);
	return HUB_AUTH_OK;
}

bool hub_identity_valid(const hub_identities *ids, const hub_identity *id)
{
	if (id->kind == HUB_IDENT_ANONYMOUS)
		return true;
	if (kind_of(ids, id->device, id->module) != id->kind)
		return false;
	if (id->keyfp[0] == '\0')
		return true; /* a certificate identity: no key to change */
	char key[PERCH_DEVICE_KEY_MAX + 1];
	bool ok = key_of(ids, id->kind, id->device, id->module, key, sizeof key) &&
	          strncmp(key, id->keyfp, strlen(id->keyfp)) == 0;
	memset(key, 0, sizeof key);
	return ok;
}

bool hub_identities_knows(const hub_identities *ids, const char *client_id, hub_identity *out)
{
	char dev[PERCH_DEVICE_ID_MAX + 1], mod[PERCH_DEVICE_ID_MAX + 1];
	if (!split_client_id(perch_slice_cstr(client_id), dev, mod))
		return false;
	hub_ident_kind kind = kind_of(ids, dev, mod);
	if (kind == HUB_IDENT_ANONYMOUS)
		return false;
	if (out != NULL) {
		memset(out, 0, sizeof *out);
		out->kind = kind;
		snprintf(out->device, sizeof out->device, "%s", dev);
		snprintf(out->module, sizeof out->module, "%s", mod);
	}
	return true;
}

void hub_identity_name(const hub_identity *id, char *out, size_t cap)
{
	if (id->kind == HUB_IDENT_ANONYMOUS)
		snprintf(out, cap, "anonymous");
	else if (id->module[0] != '\0')
		snprintf(out, cap, "%s/%s", id->device, id->module);
	else
		snprintf(out, cap, "%s", id->device);
}

/* --- authorization ---------------------------------------------------------- */

/* seg_is: does the raw (maybe percent-encoded) topic segment name id? */
static bool seg_is(perch_slice seg, const char *id)
{
	char dec[PERCH_IOTHUB_MAX_SEGMENT];
	size_t n = 0;
	if (perch_props_url_decode(seg, dec, sizeof dec, &n, NULL) != PERCH_OK)
		return false;
	return n == strlen(id) && memcmp(dec, id, n) == 0;
}

bool hub_identity_is_edge(const hub_identity *id)
{
	return id->kind == HUB_IDENT_LEAF && id->reg != NULL &&
	       perch_map_get(&id->reg->edges, perch_slice_cstr(id->device)) != NULL;
}

/* decode_id decodes a topic segment into out when it is a valid id. */
static bool decode_id(perch_slice seg, char *out)
{
	char dec[PERCH_IOTHUB_MAX_SEGMENT];
	size_t n = 0;
	if (perch_props_url_decode(seg, dec, sizeof dec, &n, NULL) != PERCH_OK)
		return false;
	return copy_id(dec, n, out);
}

/* child_leaf: is the device the segment names a leaf registered under the
 * child edge hub id? */
static bool child_leaf(const hub_identity *id, perch_slice seg)
{
	char dev[PERCH_DEVICE_ID_MAX + 1];
	if (!hub_identity_is_edge(id) || !decode_id(seg, dev))
		return false;
	const char *parent = perch_map_get(&id->reg->parents, perch_slice_cstr(dev));
	return parent != NULL && strcmp(parent, id->device) == 0;
}

/* link_target: may the child edge hub id speak for the identity a link
 * topic ($edgehub/{d}[/{m}]/...) names? Itself and any module of it, or a
 * leaf device registered under it. */
static bool link_target(const hub_identity *id, const perch_iothub_topic *t)
{
	if (!hub_identity_is_edge(id))
		return false;
	if (seg_is(t->device, id->device))
		return true;
	return t->module.len == 0 && child_leaf(id, t->device);
}

bool hub_authz_publish(const hub_identity *id, perch_slice topic)
{
	if (id->kind == HUB_IDENT_ANONYMOUS)
		return true;
	perch_iothub_topic t;
	if (perch_iothub_topic_parse(topic, &t, NULL) != PERCH_OK)
		return false;
	switch (t.kind) {
	case PERCH_IOTHUB_TWIN_GET:
	case PERCH_IOTHUB_TWIN_REPORTED:
	case PERCH_IOTHUB_METHOD_RESPONSE: return true; /* about the connection's own twin */
	case PERCH_IOTHUB_TELEMETRY:
		if (id->kind != HUB_IDENT_MODULE && seg_is(t.device, id->device))
			return true;
		return child_leaf(id, t.device);
	case PERCH_IOTHUB_MODULE_OUTPUT:
		if (id->kind == HUB_IDENT_MODULE)
			return seg_is(t.device, id->device) && seg_is(t.module, id->module);
		return hub_identity_is_edge(id) && seg_is(t.device, id->device);
	case PERCH_IOTHUB_LINK_TWIN_GET:
	case PERCH_IOTHUB_LINK_TWIN_REPORTED:
	case PERCH_IOTHUB_LINK_METHOD_RESPONSE: return link_target(id, &t);
	default: return false;
	}
}

bool hub_identities_edge_of(const hub_identities *ids, const char *name, char *out, size_t cap)
{
	char dev[PERCH_DEVICE_ID_MAX + 1], mod[PERCH_DEVICE_ID_MAX + 1];
	if (!split_client_id(perch_slice_cstr(name), dev, mod))
		return false;
	const char *edge = dev;
	if (perch_map_get(&ids->edges, perch_slice_cstr(dev)) == NULL) {
		edge = mod[0] == '\0' ? perch_map_get(&ids->parents, perch_slice_cstr(dev)) : NULL;
		if (edge == NULL || perch_map_get(&ids->edges, perch_slice_cstr(edge)) == NULL)
			return false;
	}
	return (size_t)snprintf(out, cap, "%s", edge) < cap;
}

bool hub_identity_origin(const hub_identity *id, perch_slice topic, hub_identity *out)
{
	perch_iothub_topic t;
	if (perch_iothub_topic_parse(topic, &t, NULL) != PERCH_OK ||
	    (t.kind != PERCH_IOTHUB_TELEMETRY && t.kind != PERCH_IOTHUB_MODULE_OUTPUT))
		return false;
	*out = *id;
	if (!hub_identity_is_edge(id))
		return true;
	out->module[0] = '\0';
	if (!decode_id(t.device, out->device))
		return false;
	if (t.kind == PERCH_IOTHUB_MODULE_OUTPUT) {
		out->kind = HUB_IDENT_MODULE;
		if (!decode_id(t.module, out->module))
			return false;
	}
	return true;
}

/* under: is every topic the filter matches inside prefix (a literal text
 * ending in '/')? True when the filter starts with it. */
static bool under(perch_slice filter, const char *prefix)
{
	size_t n = strlen(prefix);
	return filter.len > n && memcmp(filter.ptr, prefix, n) == 0;
}

bool hub_authz_subscribe(const hub_identity *id, perch_slice filter)
{
	/* $edgehub/ carries twin answers, desired patches and method calls to
	 * child edge hubs (the hub sends each only its identities'): only they
	 * may subscribe there, anonymous clients included. */
	if (filter.len >= 9 && memcmp(filter.ptr, "$edgehub/", 9) == 0)
		return hub_identity_is_edge(id) && filter.len == 10 &&
		       memcmp(filter.ptr, "$edgehub/#", 10) == 0;
	if (id->kind == HUB_IDENT_ANONYMOUS)
		return true;
	if (under(filter, "$iothub/twin/res/") ||
	    under(filter, "$iothub/twin/PATCH/properties/desired/") ||
	    under(filter, "$iothub/methods/POST/"))
		return true;
	char own[64 + 2 * PERCH_DEVICE_ID_MAX];
	if (id->kind == HUB_IDENT_MODULE)
		snprintf(own, sizeof own, "devices/%s/modules/%s/", id->device, id->module);
	else
		snprintf(own, sizeof own, "devices/%s/messages/devicebound/", id->device);
	if (under(filter, own))
		return true;
	/* A child edge hub also takes the C2D messages of its leaf devices. */
	if (!hub_identity_is_edge(id) || !under(filter, "devices/"))
		return false;
	const char *dev = filter.ptr + 8, *end = memchr(dev, '/', filter.len - 8);
	if (end == NULL)
		return false;
	char leaf[PERCH_DEVICE_ID_MAX + 1];
	if (!copy_id(dev, (size_t)(end - dev), leaf))
		return false;
	const char *parent = perch_map_get(&id->reg->parents, perch_slice_cstr(leaf));
	if (parent == NULL || strcmp(parent, id->device) != 0)
		return false;
	snprintf(own, sizeof own, "devices/%s/messages/devicebound/", leaf);
	return under(filter, own);
}

/* --- the registry ------------------------------------------------------------- */

void hub_identities_init(hub_identities *ids, const char *device_id, const char *iothub_host,
                         uint64_t skew_s, uint64_t max_lifetime_s)
{
	memset(ids, 0, sizeof *ids);
	snprintf(ids->device_id, sizeof ids->device_id, "%s", device_id);
	snprintf(ids->iothub_host, sizeof ids->iothub_host, "%s", iothub_host);
	ids->skew_s = skew_s;
	ids->max_lifetime_s = max_lifetime_s;
}

static void map_free_values(perch_map *m)
{
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(m, &pos)) != NULL)
		perch_free(slot->value);
	perch_map_fini(m);
}

void hub_identities_fini(hub_identities *ids)
{
	map_free_values(&ids->modules);
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&ids->leaves, &pos)) != NULL) {
		char *k = slot->value;
		memset(k, 0, strlen(k));
		perch_free(k);
	}
	perch_map_fini(&ids->leaves);
	map_free_values(&ids->edges);
	map_free_values(&ids->parents);
	json_decref(ids->edgehub);
	json_decref(ids->twins);
	memset(ids->device_key, 0, sizeof ids->device_key);
	memset(ids, 0, sizeof *ids);
}

void hub_identities_set_key(hub_identities *ids, const char *key)
{
	snprintf(ids->device_key, sizeof ids->device_key, "%s", key);
}

__attribute__((format(printf, 3, 4))) static perch_err bad(char *err, size_t cap, const char *fmt,
                                                           ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
	return PERCH_EINVAL;
}

static json_t *parse_object(const char *text, size_t len, char *err, size_t cap)
{
	json_error_t je;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		snprintf(err, cap, "line %d column %d: %s", je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		snprintf(err, cap, "not a JSON object");
		json_decref(root);
		return NULL;
	}
	return root;
}

perch_err hub_identities_load_deployment(hub_identities *ids, const char *text, size_t len,
                                         char *err, size_t cap)
{
	json_t *root = parse_object(text, len, err, cap);
	if (root == NULL)
		return PERCH_EINVAL;
	perch_err e = PERCH_OK;
	perch_map mods = {0};
	json_t *version = json_object_get(root, "version");
	json_t *dev = json_object_get(root, "deviceId");
	json_t *modules = json_object_get(root, "modules");
	json_t *edgehub = json_object_get(root, "edgeHub");
	json_t *twins = json_object_get(root, "twins");
	json_t *dep = json_object_get(root, "deployment");
	if (!json_is_integer(version) || json_integer_value(version) != 1) {
		e = bad(err, cap, "version: expected 1");
		goto out;
	}
	if (dev != NULL &&
	    (!json_is_string(dev) || strcmp(json_string_value(dev), ids->device_id) != 0)) {
		e = bad(err, cap, "deviceId: %.128s is not this hub's device (%s)",
		        json_is_string(dev) ? json_string_value(dev) : "(not a string)",
		        ids->device_id);
		goto out;
	}
	if (!json_is_object(modules)) {
		e = bad(err, cap, "modules: expected an object");
		goto out;
	}
	if ((edgehub != NULL && !json_is_object(edgehub)) ||
	    (twins != NULL && !json_is_object(twins))) {
		e = bad(err, cap, "edgeHub and twins: expected objects");
		goto out;
	}
	if (dep != NULL && (!json_is_integer(dep) || json_integer_value(dep) < 0)) {
		e = bad(err, cap, "deployment: expected a number");
		goto out;
	}
	const char *name;
	json_t *m;
	json_object_foreach(modules, name, m)
	{
		if (!perch_device_valid_id(name) || strcmp(name, EDGE_AGENT) == 0) {
			e = bad(err, cap, "modules.%.128s: not a module id", name);
			goto out;
		}
		json_t *gen = json_object_get(m, "generationId");
		if (!json_is_object(m) || (gen != NULL && !json_is_string(gen))) {
			e = bad(err, cap, "modules.%.128s: expected {\"generationId\": \"...\"}",
			        name);
			goto out;
		}
		char *g = perch_strdup(gen != NULL ? json_string_value(gen) : "");
		if (g == NULL ||
		    perch_map_put(&mods, perch_slice_cstr(name), g, NULL) != PERCH_OK) {
			perch_free(g);
			e = PERCH_ENOMEM;
			snprintf(err, cap, "out of memory");
			goto out;
		}
	}
	map_free_values(&ids->modules);
	ids->modules = mods;
	memset(&mods, 0, sizeof mods);
	json_decref(ids->edgehub);
	json_decref(ids->twins);
	ids->edgehub = json_incref(edgehub);
	ids->twins = json_incref(twins);
	ids->deployment = dep != NULL ? (uint64_t)json_integer_value(dep) : 0;
out:
	map_free_values(&mods);
	json_decref(root);
	return e;
}

perch_err hub_identities_load_leaves(hub_identities *ids, const char *text, size_t len, char *err,
                                     size_t cap)
{
	json_t *root = parse_object(text, len, err, cap);
	if (root == NULL)
		return PERCH_EINVAL;
	perch_err e = PERCH_OK;
	perch_map leaves = {0}, edges = {0}, parents = {0};
	const char *name;
	json_t *v;
	json_object_foreach(root, name, v)
	{
		const char *key = json_string_value(json_object_get(v, "primaryKey"));
		bool x509 = json_is_true(json_object_get(v, "x509"));
		json_t *edge = json_object_get(v, "edge");
		json_t *parent = json_object_get(v, "parent");
		if (!perch_device_valid_id(name) || strcmp(name, ids->device_id) == 0) {
			e = bad(err, cap, "%.128s: not a leaf device id", name);
			break;
		}
		if (key == NULL && x509) {
			key = ""; /* certificates only */
		} else if (key == NULL || !perch_sas_key_valid(perch_slice_cstr(key))) {
			e = bad(err, cap,
			        "%.128s.primaryKey: expected a base64 key (or \"x509\": true)",
			        name);
			break;
		}
		if (edge != NULL && !json_is_boolean(edge)) {
			e = bad(err, cap, "%.128s.edge: expected true or false", name);
			break;
		}
		if (parent != NULL &&
		    (!json_is_string(parent) || !perch_device_valid_id(json_string_value(parent)) ||
		     strcmp(json_string_value(parent), name) == 0)) {
			e = bad(err, cap, "%.128s.parent: expected the id of a child edge hub",
			        name);
			break;
		}
		char *k = perch_strdup(key);
		if (k == NULL ||
		    perch_map_put(&leaves, perch_slice_cstr(name), k, NULL) != PERCH_OK) {
			perch_free(k);
			e = PERCH_ENOMEM;
			snprintf(err, cap, "out of memory");
			break;
		}
		char *m = NULL;
		if ((json_is_true(edge) &&
		     ((m = perch_strdup("")) == NULL ||
		      perch_map_put(&edges, perch_slice_cstr(name), m, NULL) != PERCH_OK)) ||
		    (parent != NULL &&
		     ((m = perch_strdup(json_string_value(parent))) == NULL ||
		      perch_map_put(&parents, perch_slice_cstr(name), m, NULL) != PERCH_OK))) {
			perch_free(m);
			e = PERCH_ENOMEM;
			snprintf(err, cap, "out of memory");
			break;
		}
	}
	/* every parent names an edge entry of the same file */
	size_t pos = 0;
	const perch_map_slot *slot;
	while (e == PERCH_OK && (slot = perch_map_next(&parents, &pos)) != NULL) {
		const char *p = slot->value;
		if (perch_map_get(&edges, perch_slice_cstr(p)) == NULL)
			e = bad(err, cap,
			        "%.128s.parent: %.128s is not an entry with \"edge\": true",
			        slot->key, p);
	}
	if (e == PERCH_OK) {
		perch_map old = ids->leaves;
		ids->leaves = leaves;
		leaves = old;
		old = ids->edges;
		ids->edges = edges;
		edges = old;
		old = ids->parents;
		ids->parents = parents;
		parents = old;
	}
	pos = 0;
	while ((slot = perch_map_next(&leaves, &pos)) != NULL) {
		char *k = slot->value;
		memset(k, 0, strlen(k));
		perch_free(k);
	}
	perch_map_fini(&leaves);
	map_free_values(&edges);
	map_free_values(&parents);
	json_decref(root);
	return e;
}
