/*
 * fuzz_hub_identity.c — libFuzzer target for who may connect to perch-hub
 * and what each may do (hub/src/identity.c): the client id, user name and
 * password of every CONNECT, and the topic of every PUBLISH and SUBSCRIBE,
 * come from clients; the hub deployment file and the leaf devices file are
 * read from disk. The first byte picks the input:
 *
 *   0       the rest is a hub deployment file (hub_identities_load_deployment)
 *   1       the rest is a leaf devices file (hub_identities_load_leaves)
 *   other   a CONNECT and a topic: client id, user name, password, client
 *           certificate CN and topic, separated by NUL bytes; bit 1 of the
 *           first byte allows anonymous clients, bit 2 says a password was
 *           sent, bit 3 that a certificate was
 *
 * against a registry with a device, two modules, a leaf device, a child edge
 * hub and a leaf device behind it. Checks: a load either succeeds or says
 * why and leaves the registry as it was; a CONNECT is accepted exactly when
 * the CONNACK code is 0, and an accepted identity is one the registry still
 * accepts; the topic rules and the origin of a topic answer for every
 * identity without reading past their input. Nothing may leak (the counting
 * allocator, which jansson uses here, must be back where it started).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../hub/src/identity.h"
#include "perch/alloc.h"

#define HOST    "perch.local"
#define DEV     "gw1"
#define DEVKEY  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define LEAFKEY "bGVhZi1rZXktbGVhZi1rZXktbGVhZi1rZXk="
#define NOW     1800000000u
#define FIELDS  5

static const char DEPLOYMENT[] = "{\"version\": 1, \"deviceId\": \"gw1\", \"deployment\": 3,"
                                 " \"modules\": {\"filter\": {\"generationId\": \"g1\"},"
                                 " \"sensor\": {\"generationId\": \"g2\"}},"
                                 " \"edgeHub\": {\"routes\": {}}, \"twins\": {}}";
static const char LEAVES[] =
        "{\"leaf1\": {\"primaryKey\": \"" LEAFKEY "\"},"
        " \"child1\": {\"primaryKey\": \"" LEAFKEY "\", \"edge\": true},"
        " \"leaf2\": {\"primaryKey\": \"" LEAFKEY "\", \"parent\": \"child1\"},"
        " \"cam\": {\"x509\": true}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void registry(hub_identities *ids)
{
	char err[256];
	hub_identities_init(ids, DEV, HOST, 300, 86400);
	hub_identities_set_key(ids, DEVKEY);
	if (hub_identities_load_deployment(ids, DEPLOYMENT, strlen(DEPLOYMENT), err, sizeof err) !=
	            PERCH_OK ||
	    hub_identities_load_leaves(ids, LEAVES, strlen(LEAVES), err, sizeof err) != PERCH_OK)
		abort();
}

/* shape: what a load may change, to check that a refused one changed none. */
struct shape {
	size_t modules, leaves, edges, parents;
	uint64_t deployment;
	const json_t *edgehub, *twins;
};

static struct shape shape_of(const hub_identities *ids)
{
	return (struct shape){ids->modules.count, ids->leaves.count, ids->edges.count,
	                      ids->parents.count, ids->deployment,   ids->edgehub,
	                      ids->twins};
}

static void load(hub_identities *ids, bool leaves, const char *text, size_t len)
{
	char err[256] = "";
	struct shape s0 = shape_of(ids);
	perch_err e = leaves ? hub_identities_load_leaves(ids, text, len, err, sizeof err)
	                     : hub_identities_load_deployment(ids, text, len, err, sizeof err);
	if (e != PERCH_OK) {
		struct shape s1 = shape_of(ids);
		if (e != PERCH_EINVAL || err[0] == '\0' || memcmp(&s0, &s1, sizeof s0) != 0)
			abort();
		return;
	}
	/* Whatever loaded, every registered name is one the registry knows. */
	size_t pos = 0;
	const perch_map_slot *slot;
	const perch_map *m = leaves ? &ids->leaves : &ids->modules;
	while ((slot = perch_map_next(m, &pos)) != NULL) {
		char name[2 * PERCH_DEVICE_ID_MAX + 2];
		if (leaves)
			snprintf(name, sizeof name, "%s", slot->key);
		else
			snprintf(name, sizeof name, "%s/%s", DEV, slot->key);
		hub_identity id;
		if (!perch_device_valid_id(slot->key) || !hub_identities_knows(ids, name, &id))
			abort();
	}
}

/* An identity's fields are NUL-terminated ids within their arrays. */
static void check_identity(const hub_identity *id)
{
	if (id->kind > HUB_IDENT_LEAF || memchr(id->device, 0, sizeof id->device) == NULL ||
	    memchr(id->module, 0, sizeof id->module) == NULL ||
	    (id->kind != HUB_IDENT_ANONYMOUS && id->device[0] == '\0') ||
	    (id->kind == HUB_IDENT_MODULE) != (id->module[0] != '\0'))
		abort();
	char name[2 * PERCH_DEVICE_ID_MAX + 2];
	hub_identity_name(id, name, sizeof name);
}

static void topic_rules(const hub_identity *id, perch_slice topic)
{
	(void)hub_authz_publish(id, topic);
	(void)hub_authz_subscribe(id, topic);
	hub_identity origin;
	memset(&origin, 0xa5, sizeof origin);
	if (hub_identity_origin(id, topic, &origin))
		check_identity(&origin);
}

static void try_connect(const hub_identities *ids, uint8_t flags, const uint8_t *data, size_t size)
{
	perch_slice f[FIELDS] = {{0}};
	const char *p = (const char *)data, *end = p + size;
	for (int i = 0; i < FIELDS && p <= end; i++) {
		const char *nul = memchr(p, 0, (size_t)(end - p));
		size_t len = nul != NULL ? (size_t)(nul - p) : (size_t)(end - p);
		f[i] = (perch_slice){p, len};
		if (nul == NULL)
			break;
		p = nul + 1;
	}
	char cn[PERCH_DEVICE_ID_MAX * 2 + 2];
	snprintf(cn, sizeof cn, "%.*s", (int)f[3].len, f[3].ptr != NULL ? f[3].ptr : "");
	hub_auth_request req = {.client_id = f[0],
	                        .username = f[1],
	                        .has_password = (flags & 4) != 0,
	                        .password = f[2],
	                        .cert_cn = (flags & 8) != 0 ? cn : NULL,
	                        .allow_anonymous = (flags & 2) != 0,
	                        .now = NOW};
	hub_identity id;
	uint8_t connack = 0xff;
	hub_auth_reason r = hub_auth_check(ids, &req, &id, &connack);
	if (r >= HUB_AUTH_REASON_COUNT || hub_auth_reason_str(r) == NULL ||
	    (r == HUB_AUTH_OK) != (connack == 0) || connack > 5)
		abort();
	if (r == HUB_AUTH_OK) {
		check_identity(&id);
		if (id.kind != HUB_IDENT_ANONYMOUS && !hub_identity_valid(ids, &id))
			abort(); /* accepted now, so still valid now */
		topic_rules(&id, f[4]);
	}
	/* The topic rules for every kind of identity the registry has. */
	static const char *const names[] = {
	        DEV, DEV "/filter", DEV "/$edgeHub", "leaf1", "child1", "leaf2", "cam"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		hub_identity known;
		if (hub_identities_knows(ids, names[i], &known)) {
			known.reg = ids;
			check_identity(&known);
			topic_rules(&known, f[4]);
		}
	}
	/* The client id as a name the registry may know. */
	char cid[2 * PERCH_DEVICE_ID_MAX + 2];
	snprintf(cid, sizeof cid, "%.*s", (int)f[0].len, f[0].ptr != NULL ? f[0].ptr : "");
	hub_identity k;
	if (hub_identities_knows(ids, cid, &k))
		check_identity(&k);
	char edge[PERCH_DEVICE_ID_MAX + 1];
	if (hub_identities_edge_of(ids, cid, edge, sizeof edge) &&
	    memchr(edge, 0, sizeof edge) == NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		json_set_alloc_funcs(perch_malloc, perch_free);
		ready = true;
	}
	if (size == 0)
		return 0;
	size_t before = perch_alloc_blocks();
	hub_identities ids;
	registry(&ids);
	uint8_t mode = data[0];
	if (mode <= 1)
		load(&ids, mode == 1, (const char *)data + 1, size - 1);
	else
		try_connect(&ids, mode, data + 1, size - 1);
	hub_identities_fini(&ids);
	if (perch_alloc_blocks() != before)
		abort(); /* a leak */
	return 0;
}
