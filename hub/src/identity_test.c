/*
 * identity_test.c — the hub's CONNECT authentication and topic
 * authorization rules (identity.c), with tokens made by proto's SAS signer:
 * every kind of identity, every refusal with its CONNACK code, identities
 * that end when the deployment or a key changes, and the topic matrix.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "identity.h"
#include "perch/sas.h"

#define HOST    "perch.local"
#define DEV     "gw1"
#define DEVKEY  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define DEVKEY2 "HxwdHhscHRobGBkWFxQVEhMQEQ4PDA0KCwgJBgcEBQIDAAE="
#define LEAFKEY "bGVhZi1rZXktbGVhZi1rZXktbGVhZi1rZXk="
#define NOW     1800000000u

static const char deployment[] = "{\"version\": 1, \"deviceId\": \"gw1\", \"deployment\": 3,"
                                 " \"modules\": {\"filter\": {\"generationId\": \"g1\"},"
                                 " \"sensor\": {\"generationId\": \"g2\"}},"
                                 " \"edgeHub\": {\"routes\": {}}, \"twins\": {}}";

static void setup_ids(hub_identities *ids)
{
	char err[256];
	hub_identities_init(ids, DEV, HOST, 300, 86400);
	hub_identities_set_key(ids, DEVKEY);
	assert_int_equal(hub_identities_load_deployment(ids, deployment, strlen(deployment), err,
	                                                sizeof err),
	                 PERCH_OK);
	const char leaves[] = "{\"leaf1\": {\"primaryKey\": \"" LEAFKEY "\"}}";
	assert_int_equal(hub_identities_load_leaves(ids, leaves, strlen(leaves), err, sizeof err),
	                 PERCH_OK);
}

/* token signs resource with key (base64), valid until expiry. */
static void token(const char *resource, const char *key, uint64_t expiry, char *out, size_t cap)
{
	size_t n = 0;
	assert_int_equal(perch_sas_sign(perch_slice_cstr(resource), perch_slice_cstr(""),
	                                perch_slice_cstr(key), expiry, out, cap - 1, &n),
	                 PERCH_OK);
	out[n] = '\0';
}

static void module_key(const char *mod, char *out, size_t cap)
{
	size_t n = 0;
	assert_int_equal(perch_sas_derive_module_key(perch_slice_cstr(DEVKEY),
	                                             perch_slice_cstr(mod), out, cap - 1, &n),
	                 PERCH_OK);
	out[n] = '\0';
}

static hub_auth_reason try_connect(const hub_identities *ids, const char *cid, const char *user,
                                   const char *pw, uint8_t *code, hub_identity *id)
{
	hub_auth_request req = {.client_id = perch_slice_cstr(cid),
	                        .username = perch_slice_cstr(user != NULL ? user : ""),
	                        .has_password = pw != NULL,
	                        .password = perch_slice_cstr(pw != NULL ? pw : ""),
	                        .now = NOW};
	return hub_auth_check(ids, &req, id, code);
}

static void test_module_tokens(void **state)
{
	(void)state;
	hub_identities ids;
	setup_ids(&ids);
	char key[128], tok[1024], other[1024];
	module_key("filter", key, sizeof key);
	token(HOST "/devices/gw1/modules/filter", key, NOW + 3600, tok, sizeof tok);
	uint8_t code = 0xff;
	hub_identity id;
	const char *user = HOST "/gw1/filter/?api-version=2019-01-30&DeviceClientType=x";
	assert_int_equal(try_connect(&ids, "gw1/filter", user, tok, &code, &id), HUB_AUTH_OK);
	assert_int_equal(code, 0);
	assert_int_equal(id.kind, HUB_IDENT_MODULE);
	assert_string_equal(id.device, "gw1");
	assert_string_equal(id.module, "filter");
	assert_true(hub_identity_valid(&ids, &id));
	char name[300];
	hub_identity_name(&id, name, sizeof name);
	assert_string_equal(name, "gw1/filter");
	/* the user name's host without regard to case; no trailing slash */
	assert_int_equal(try_connect(&ids, "gw1/filter", "PERCH.local/gw1/filter?api-version=1",
	                             tok, &code, &id),
	                 HUB_AUTH_OK);

	/* client id, user name and token must name the same identity */
	assert_int_equal(
	        try_connect(&ids, "gw1/sensor", HOST "/gw1/sensor/?api-version=1", tok, &code, &id),
	        HUB_AUTH_TOKEN_RESOURCE);
	assert_int_equal(code, 5);
	assert_int_equal(
	        try_connect(&ids, "gw1/filter", HOST "/gw1/sensor/?api-version=1", tok, &code, &id),
	        HUB_AUTH_BAD_USERNAME);
	assert_int_equal(code, 5);
	assert_int_equal(try_connect(&ids, "gw1/filter", "other.host/gw1/filter/?api-version=1",
	                             tok, &code, &id),
	                 HUB_AUTH_BAD_USERNAME);
	assert_int_equal(try_connect(&ids, "gw1/filter", "", tok, &code, &id),
	                 HUB_AUTH_BAD_USERNAME);
	/* signed with the device key, not the module's */
	token(HOST "/devices/gw1/modules/filter", DEVKEY, NOW + 3600, other, sizeof other);
	assert_int_equal(try_connect(&ids, "gw1/filter", user, other, &code, &id),
	                 HUB_AUTH_TOKEN_SIGNATURE);
	assert_int_equal(code, 4);
	/* expired beyond the skew; within it */
	token(HOST "/devices/gw1/modules/filter", key, NOW - 301, other, sizeof other);
	assert_int_equal(try_connect(&ids, "gw1/filter", user, other, &code, &id),
	                 HUB_AUTH_TOKEN_EXPIRED);
	assert_int_equal(code, 4);
	token(HOST "/devices/gw1/modules/filter", key, NOW - 299, other, sizeof other);
	assert_int_equal(try_connect(&ids, "gw1/filter", user, other, &code, &id), HUB_AUTH_OK);
	/* too far in the future */
	token(HOST "/devices/gw1/modules/filter", key, NOW + 86400 + 301, other, sizeof other);
	assert_int_equal(try_connect(&ids, "gw1/filter", user, other, &code, &id),
	                 HUB_AUTH_TOKEN_LIFETIME);
	assert_int_equal(code, 4);
	/* not a token */
	assert_int_equal(try_connect(&ids, "gw1/filter", user, "hunter2", &code, &id),
	                 HUB_AUTH_TOKEN_MALFORMED);
	assert_int_equal(code, 4);
	/* a module that is not deployed; another device's module */
	module_key("ghost", key, sizeof key);
	token(HOST "/devices/gw1/modules/ghost", key, NOW + 60, other, sizeof other);
	assert_int_equal(
	        try_connect(&ids, "gw1/ghost", HOST "/gw1/ghost/?api-version=1", other, &code, &id),
	        HUB_AUTH_UNKNOWN);
	assert_int_equal(code, 5);
	assert_int_equal(
	        try_connect(&ids, "gw2/filter", HOST "/gw2/filter/?api-version=1", tok, &code, &id),
	        HUB_AUTH_UNKNOWN);
	/* client ids that are no identity */
	assert_int_equal(try_connect(&ids, "gw1/filter/x", user, tok, &code, &id),
	                 HUB_AUTH_BAD_CLIENT_ID);
	assert_int_equal(code, 2);
	assert_int_equal(try_connect(&ids, "gw1/", user, tok, &code, &id), HUB_AUTH_BAD_CLIENT_ID);
	assert_int_equal(try_connect(&ids, "", user, tok, &code, &id), HUB_AUTH_BAD_CLIENT_ID);
	/* $edgeAgent is always known */
	module_key("$edgeAgent", key, sizeof key);
	token(HOST "/devices/gw1/modules/$edgeAgent", key, NOW + 60, other, sizeof other);
	assert_int_equal(try_connect(&ids, "gw1/$edgeAgent", HOST "/gw1/$edgeAgent/?api-version=1",
	                             other, &code, &id),
	                 HUB_AUTH_OK);
	hub_identities_fini(&ids);
}

static void test_devices_and_anonymous(void **state)
{
	(void)state;
	hub_identities ids;
	setup_ids(&ids);
	char tok[1024];
	uint8_t code;
	hub_identity id;
	token(HOST "/devices/gw1", DEVKEY, NOW + 60, tok, sizeof tok);
	assert_int_equal(try_connect(&ids, "gw1", HOST "/gw1/?api-version=1", tok, &code, &id),
	                 HUB_AUTH_OK);
	assert_int_equal(id.kind, HUB_IDENT_DEVICE);
	token(HOST "/devices/leaf1", LEAFKEY, NOW + 60, tok, sizeof tok);
	assert_int_equal(try_connect(&ids, "leaf1", HOST "/leaf1/?api-version=1", tok, &code, &id),
	                 HUB_AUTH_OK);
	assert_int_equal(id.kind, HUB_IDENT_LEAF);
	assert_int_equal(try_connect(&ids, "leaf2", HOST "/leaf2/?api-version=1", tok, &code, &id),
	                 HUB_AUTH_UNKNOWN);
	/* no credentials */
	assert_int_equal(try_connect(&ids, "anything", NULL, NULL, &code, &id),
	                 HUB_AUTH_NO_CREDENTIALS);
	assert_int_equal(code, 5);
	hub_auth_request req = {
	        .client_id = perch_slice_cstr("anything"), .allow_anonymous = true, .now = NOW};
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_OK);
	assert_int_equal(id.kind, HUB_IDENT_ANONYMOUS);
	/* anonymous, but under a known identity's client id: refused */
	req.client_id = perch_slice_cstr("gw1/filter");
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_NO_CREDENTIALS);
	assert_int_equal(code, 5);
	req.client_id = perch_slice_cstr("leaf1");
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_NO_CREDENTIALS);
	/* with anonymous allowed, a password is still checked */
	req.has_password = true;
	req.password = perch_slice_cstr("nope");
	req.username = perch_slice_cstr(HOST "/leaf1/?api-version=1");
	req.client_id = perch_slice_cstr("leaf1");
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_TOKEN_MALFORMED);
	/* a client certificate names the identity */
	req = (hub_auth_request){.client_id = perch_slice_cstr("leaf1"),
	                         .username = perch_slice_cstr(HOST "/leaf1/?api-version=1"),
	                         .cert_cn = "leaf1",
	                         .now = NOW};
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_OK);
	assert_int_equal(id.kind, HUB_IDENT_LEAF);
	req.cert_cn = "leaf9";
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_CERT_MISMATCH);
	assert_int_equal(code, 5);
	/* no device key yet: modules and the device wait (server unavailable) */
	hub_identities_set_key(&ids, "");
	token(HOST "/devices/gw1", DEVKEY, NOW + 60, tok, sizeof tok);
	assert_int_equal(try_connect(&ids, "gw1", HOST "/gw1/?api-version=1", tok, &code, &id),
	                 HUB_AUTH_NO_KEY);
	assert_int_equal(code, 3);
	hub_identities_fini(&ids);
}

static void test_identities_end(void **state)
{
	(void)state;
	hub_identities ids;
	setup_ids(&ids);
	char key[128], tok[1024], err[256];
	uint8_t code;
	hub_identity filter, sensor;
	module_key("filter", key, sizeof key);
	token(HOST "/devices/gw1/modules/filter", key, NOW + 60, tok, sizeof tok);
	assert_int_equal(
	        try_connect(&ids, "gw1/filter", HOST "/gw1/filter/?a=1", tok, &code, &filter),
	        HUB_AUTH_OK);
	module_key("sensor", key, sizeof key);
	token(HOST "/devices/gw1/modules/sensor", key, NOW + 60, tok, sizeof tok);
	assert_int_equal(
	        try_connect(&ids, "gw1/sensor", HOST "/gw1/sensor/?a=1", tok, &code, &sensor),
	        HUB_AUTH_OK);
	/* filter leaves the deployment */
	const char d2[] = "{\"version\": 1, \"modules\": {\"sensor\": {\"generationId\": \"g2\"}}}";
	assert_int_equal(hub_identities_load_deployment(&ids, d2, strlen(d2), err, sizeof err),
	                 PERCH_OK);
	assert_false(hub_identity_valid(&ids, &filter));
	assert_true(hub_identity_valid(&ids, &sensor));
	/* a refused file changes nothing */
	const char *bad[] = {
	        "{\"version\": 2, \"modules\": {}}",
	        "{\"version\": 1, \"deviceId\": \"gw9\", \"modules\": {}}",
	        "{\"version\": 1, \"modules\": {\"bad id\": {}}}",
	        "{\"version\": 1, \"modules\": {\"$edgeAgent\": {}}}",
	        "{\"version\": 1, \"modules\": {\"m\": {\"generationId\": 5}}}",
	        "{\"version\": 1, \"modules\": []}",
	        "{\"version\": 1, \"modules\": {}, \"modules\": {}}",
	        "[1]",
	        "{\"version\": 1,",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(hub_identities_load_deployment(&ids, bad[i], strlen(bad[i]), err,
		                                                sizeof err),
		                 PERCH_EINVAL);
		assert_true(strlen(err) > 0);
		assert_true(hub_identity_valid(&ids, &sensor));
	}
	/* the device key changes: module identities end */
	hub_identities_set_key(&ids, DEVKEY2);
	assert_false(hub_identity_valid(&ids, &sensor));
	/* leaf file errors */
	const char *badleaf[] = {"{\"gw1\": {\"primaryKey\": \"" LEAFKEY "\"}}",
	                         "{\"l\": {\"primaryKey\": \"not base64!\"}}", "{\"l\": {}}"};
	for (size_t i = 0; i < sizeof badleaf / sizeof badleaf[0]; i++)
		assert_int_equal(hub_identities_load_leaves(&ids, badleaf[i], strlen(badleaf[i]),
		                                            err, sizeof err),
		                 PERCH_EINVAL);
	assert_non_null(perch_map_get(&ids.leaves, perch_slice_cstr("leaf1")));
	hub_identities_fini(&ids);
}

static void test_authorization(void **state)
{
	(void)state;
	hub_identity mod = {.kind = HUB_IDENT_MODULE, .device = "gw1", .module = "filter"};
	hub_identity leaf = {.kind = HUB_IDENT_LEAF, .device = "leaf1"};
	hub_identity anon = {.kind = HUB_IDENT_ANONYMOUS};
#define PUB(id, t) hub_authz_publish(&(id), perch_slice_cstr(t))
#define SUB(id, f) hub_authz_subscribe(&(id), perch_slice_cstr(f))
	assert_true(PUB(mod, "devices/gw1/modules/filter/messages/events/$.on=out1"));
	assert_true(PUB(mod, "devices/gw1/modules/filter/messages/events/"));
	assert_false(PUB(mod, "devices/gw1/modules/sensor/messages/events/"));
	assert_false(PUB(mod, "devices/gw1/messages/events/"));
	assert_false(PUB(mod, "devices/gw1/modules/filter/inputs/in1/"));
	assert_false(PUB(mod, "devices/gw1/messages/devicebound/"));
	assert_false(PUB(mod, "some/generic/topic"));
	assert_true(PUB(mod, "$iothub/twin/GET/?$rid=1"));
	assert_true(PUB(mod, "$iothub/twin/PATCH/properties/reported/?$rid=2"));
	assert_true(PUB(mod, "$iothub/methods/res/200/?$rid=3"));
	assert_false(PUB(mod, "$iothub/methods/POST/reboot/?$rid=3"));
	assert_false(PUB(mod, "$iothub/twin/PATCH/properties/desired/?$version=3"));
	assert_true(PUB(leaf, "devices/leaf1/messages/events/a=b"));
	assert_true(PUB(leaf, "devices/leaf%31/messages/events/a=b")); /* encoded id */
	assert_false(PUB(leaf, "devices/leaf2/messages/events/a=b"));
	assert_false(PUB(leaf, "devices/leaf1/modules/x/messages/events/"));
	assert_true(PUB(anon, "anything/at/all"));

	assert_true(SUB(mod, "devices/gw1/modules/filter/#"));
	assert_true(SUB(mod, "devices/gw1/modules/filter/inputs/in1/#"));
	assert_false(SUB(mod, "devices/gw1/modules/sensor/#"));
	assert_false(SUB(mod, "devices/gw1/modules/+/#"));
	assert_false(SUB(mod, "devices/gw1/#"));
	assert_false(SUB(mod, "#"));
	assert_false(SUB(mod, "devices/gw1/modules/filter/"));
	assert_true(SUB(mod, "$iothub/twin/res/#"));
	assert_true(SUB(mod, "$iothub/twin/PATCH/properties/desired/#"));
	assert_true(SUB(mod, "$iothub/methods/POST/#"));
	assert_false(SUB(mod, "$iothub/#"));
	assert_false(SUB(mod, "$iothub/twin/#"));
	assert_true(SUB(leaf, "devices/leaf1/messages/devicebound/#"));
	assert_false(SUB(leaf, "devices/leaf2/messages/devicebound/#"));
	assert_false(SUB(leaf, "devices/+/messages/devicebound/#"));
	assert_true(SUB(anon, "#"));
#undef PUB
#undef SUB
}

/* A child edge hub ("edge": true) speaks for its modules and for the leaf
 * devices registered under it ("parent"); nothing else. */
/* Empty client ids and user names may come as {NULL, 0} (slice.h): refused
 * for what they are, without handing NULL to memchr (UBSan; found by
 * fuzz_hub_identity). */
static void test_null_slices(void **state)
{
	(void)state;
	hub_identities ids;
	setup_ids(&ids);
	char tok[1024];
	token(HOST "/devices/" DEV, DEVKEY, NOW + 60, tok, sizeof tok);
	hub_auth_request req = {.client_id = {NULL, 0},
	                        .username = {NULL, 0},
	                        .has_password = true,
	                        .password = perch_slice_cstr(tok),
	                        .now = NOW};
	hub_identity id;
	uint8_t code = 0;
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_BAD_CLIENT_ID);
	assert_int_equal(code, 2);
	req.client_id = perch_slice_cstr(DEV);
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_BAD_USERNAME);
	assert_int_equal(code, 5);
	req.username = perch_slice_cstr(HOST "/" DEV "/?api-version=2021-04-12");
	assert_int_equal(hub_auth_check(&ids, &req, &id, &code), HUB_AUTH_OK);
	hub_identities_fini(&ids);
}

static void test_child_edge_hub(void **state)
{
	(void)state;
	hub_identities ids;
	char err[256];
	setup_ids(&ids);
	const char leaves[] =
	        "{\"child\": {\"primaryKey\": \"" LEAFKEY "\", \"edge\": true},"
	        " \"under\": {\"primaryKey\": \"" LEAFKEY "\", \"parent\": \"child\"},"
	        " \"plain\": {\"primaryKey\": \"" LEAFKEY "\"}}";
	assert_int_equal(hub_identities_load_leaves(&ids, leaves, strlen(leaves), err, sizeof err),
	                 PERCH_OK);
	char tok[600];
	token(HOST "/devices/child", LEAFKEY, NOW + 600, tok, sizeof tok);
	hub_auth_request req = {.client_id = perch_slice_cstr("child"),
	                        .username = perch_slice_cstr(HOST "/child/?api-version=2018-06-30"),
	                        .has_password = true,
	                        .password = perch_slice_cstr(tok),
	                        .now = NOW};
	hub_identity child;
	uint8_t code = 9;
	assert_int_equal(hub_auth_check(&ids, &req, &child, &code), HUB_AUTH_OK);
	assert_int_equal(child.kind, HUB_IDENT_LEAF);
	assert_true(hub_identity_is_edge(&child));
	hub_identity plain = child;
	snprintf(plain.device, sizeof plain.device, "plain");
	assert_false(hub_identity_is_edge(&plain));
#define PUB(id, t) hub_authz_publish(&(id), perch_slice_cstr(t))
	assert_true(PUB(child, "devices/child/messages/events/a=b"));
	assert_true(PUB(child, "devices/child/modules/any/messages/events/%24.on=o"));
	assert_true(PUB(child, "devices/under/messages/events/a=b"));
	assert_true(PUB(child, "devices/und%65r/messages/events/")); /* encoded id */
	assert_false(PUB(child, "devices/plain/messages/events/"));
	assert_false(PUB(child, "devices/gw1/messages/events/"));
	assert_false(PUB(child, "devices/under/modules/m/messages/events/"));
	assert_false(PUB(child, "devices/plain/modules/m/messages/events/"));
	assert_false(PUB(child, "devices/gw1/modules/filter/messages/events/"));
	assert_false(PUB(plain, "devices/under/messages/events/"));
	assert_false(PUB(plain, "devices/plain/modules/m/messages/events/"));
#undef PUB
#define SUB(id, f) hub_authz_subscribe(&(id), perch_slice_cstr(f))
	/* C2D: its own, and its leaf devices' (not another's, no wildcards) */
	assert_true(SUB(child, "devices/child/messages/devicebound/#"));
	assert_true(SUB(child, "devices/under/messages/devicebound/#"));
	assert_false(SUB(child, "devices/plain/messages/devicebound/#"));
	assert_false(SUB(child, "devices/+/messages/devicebound/#"));
	assert_false(SUB(child, "devices/under/messages/events/#"));
	assert_false(SUB(child, "devices/"));
	assert_false(SUB(child, "devices/under"));
	assert_false(SUB(plain, "devices/under/messages/devicebound/#"));
#undef SUB
	/* the origin comes from the topic */
	hub_identity o;
	assert_true(hub_identity_origin(
	        &child, perch_slice_cstr("devices/child/modules/m1/messages/events/"), &o));
	assert_int_equal(o.kind, HUB_IDENT_MODULE);
	assert_string_equal(o.device, "child");
	assert_string_equal(o.module, "m1");
	assert_true(hub_identity_origin(&child,
	                                perch_slice_cstr("devices/under/messages/events/x=1"), &o));
	assert_string_equal(o.device, "under");
	assert_string_equal(o.module, "");
	assert_true(hub_identity_origin(&plain, perch_slice_cstr("devices/plain/messages/events/"),
	                                &o));
	assert_string_equal(o.device, "plain");
	assert_false(hub_identity_origin(&child, perch_slice_cstr("$iothub/twin/GET/?$rid=1"), &o));
	/* a parent that is not an edge entry, a bad edge value, a parent naming itself */
	const char *bad[] = {"{\"a\": {\"primaryKey\": \"" LEAFKEY "\", \"parent\": \"b\"},"
	                     " \"b\": {\"primaryKey\": \"" LEAFKEY "\"}}",
	                     "{\"a\": {\"primaryKey\": \"" LEAFKEY "\", \"edge\": \"yes\"}}",
	                     "{\"a\": {\"primaryKey\": \"" LEAFKEY "\", \"parent\": \"a\"}}",
	                     "{\"a\": {\"primaryKey\": \"" LEAFKEY "\", \"parent\": 3}}"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(
		        hub_identities_load_leaves(&ids, bad[i], strlen(bad[i]), err, sizeof err),
		        PERCH_EINVAL);
	assert_true(hub_identity_is_edge(&child)); /* the previous list stays */
	/* a reload without the edge mark takes the rights away */
	const char demoted[] = "{\"child\": {\"primaryKey\": \"" LEAFKEY "\"}}";
	assert_int_equal(
	        hub_identities_load_leaves(&ids, demoted, strlen(demoted), err, sizeof err),
	        PERCH_OK);
	assert_false(hub_identity_is_edge(&child));
	assert_false(hub_authz_publish(
	        &child, perch_slice_cstr("devices/child/modules/m/messages/events/")));
	hub_identities_fini(&ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_child_edge_hub),        cmocka_unit_test(test_module_tokens),
	        cmocka_unit_test(test_devices_and_anonymous), cmocka_unit_test(test_identities_end),
	        cmocka_unit_test(test_authorization),         cmocka_unit_test(test_null_slices),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
