/*
 * twin_test.c — twin documents (twin.c) and twins.db (twin_store.c): JSON
 * merge patch and its inverse, every limit on names, depth and size at its
 * boundary, the versions of both sections (bumped by a change, untouched by
 * a refusal), the GET document, and a store that keeps, deletes, reloads
 * and survives a damaged file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "perch/alloc.h"
#include "twin.h"

static json_t *json_of(const char *text)
{
	json_error_t je;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
	if (v == NULL)
		fail_msg("bad test JSON %s: %s", text, je.text);
	return v;
}

static void assert_json(const json_t *got, const char *want)
{
	json_t *w = json_of(want);
	if (!json_equal(got, w)) {
		char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
		fail_msg("got %s, want %s", g, want);
	}
	json_decref(w);
}

/* merged: target merged with patch. */
static void check_merge(const char *target, const char *patch, const char *want)
{
	json_t *t = json_of(target), *p = json_of(patch);
	assert_int_equal(hub_twin_merge(t, p), PERCH_OK);
	assert_json(t, want);
	json_decref(t);
	json_decref(p);
}

static void test_merge(void **state)
{
	(void)state;
	check_merge("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
	check_merge("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}");
	check_merge("{\"a\":\"b\"}", "{\"a\":null}", "{}");
	check_merge("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}");
	check_merge("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
	check_merge("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}");
	check_merge("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}",
	            "{\"a\":{\"b\":\"d\"}}");
	check_merge("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}");
	check_merge("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}");
	check_merge("{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}");
	check_merge("{\"a\":\"x\"}", "{\"a\":{\"b\":null,\"c\":1}}", "{\"a\":{\"c\":1}}");
	check_merge("{\"a\":1}", "{}", "{\"a\":1}");
	check_merge("{\"n\":{\"deep\":{\"x\":1,\"y\":2}}}", "{\"n\":{\"deep\":{\"x\":null}}}",
	            "{\"n\":{\"deep\":{\"y\":2}}}");
	/* the result shares nothing with the patch */
	json_t *t = json_of("{}"), *p = json_of("{\"o\":{\"k\":[1,2]}}");
	assert_int_equal(hub_twin_merge(t, p), PERCH_OK);
	json_array_append_new(json_object_get(json_object_get(p, "o"), "k"), json_integer(3));
	json_object_set_new(json_object_get(p, "o"), "z", json_true());
	assert_json(t, "{\"o\":{\"k\":[1,2]}}");
	json_decref(t);
	json_decref(p);
}

/* check_diff: diff(from, to) is want, and merging it into from gives to. */
static void check_diff(const char *from, const char *to, const char *want)
{
	json_t *f = json_of(from), *t = json_of(to), *d = NULL;
	assert_int_equal(hub_twin_diff(f, t, &d), PERCH_OK);
	assert_json(d, want);
	assert_int_equal(hub_twin_merge(f, d), PERCH_OK);
	assert_true(json_equal(f, t));
	json_decref(f);
	json_decref(t);
	json_decref(d);
}

static void test_diff(void **state)
{
	(void)state;
	check_diff("{}", "{}", "{}");
	check_diff("{\"a\":1,\"b\":{\"c\":2}}", "{\"a\":1,\"b\":{\"c\":2}}", "{}");
	check_diff("{\"a\":1}", "{\"a\":2}", "{\"a\":2}");
	check_diff("{\"a\":1,\"b\":2}", "{\"b\":2}", "{\"a\":null}");
	check_diff("{}", "{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}");
	check_diff("{\"a\":{\"b\":1,\"c\":2}}", "{\"a\":{\"c\":3,\"d\":4}}",
	           "{\"a\":{\"b\":null,\"c\":3,\"d\":4}}");
	check_diff("{\"a\":{\"b\":1}}", "{\"a\":[1]}", "{\"a\":[1]}");
	check_diff("{\"a\":[1]}", "{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}");
	check_diff("{\"a\":{\"b\":{\"c\":1,\"d\":1}},\"x\":true}",
	           "{\"a\":{\"b\":{\"c\":1,\"d\":2}},\"x\":true}", "{\"a\":{\"b\":{\"d\":2}}}");
	check_diff("{\"a\":[1,2]}", "{\"a\":[1,2,3]}", "{\"a\":[1,2,3]}");
	check_diff("{\"a\":{\"b\":1}}", "{}", "{\"a\":null}");
}

/* nest: an object with depth levels of {"d": ...} around {"x": 1}. */
static json_t *nest(int depth)
{
	json_t *v = json_pack("{s:i}", "x", 1);
	for (int i = 1; i < depth; i++)
		v = json_pack("{s:o}", "d", v);
	return v;
}

static perch_err check_text(const char *text, bool patch)
{
	char why[200];
	json_t *v = json_of(text);
	perch_err err = hub_twin_check(v, patch, why, sizeof why);
	if (err != PERCH_OK)
		assert_true(why[0] != '\0');
	json_decref(v);
	return err;
}

static void test_limits(void **state)
{
	(void)state;
	char why[200];
	assert_int_equal(
	        check_text("{\"ok_name-1\":1,\"Ünïcode\":\"ok\",\"a\":[1,[2,[3]]]}", false),
	        PERCH_OK);
	assert_int_equal(check_text("[1]", true), PERCH_EINVAL);
	assert_int_equal(check_text("\"s\"", false), PERCH_EINVAL);
	const char *bad_names[] = {"{\"$version\":1}",  "{\"a.b\":1}",       "{\"a b\":1}",
	                           "{\"\":1}",          "{\"a\\u0001\":1}",  "{\"a\\u007f\":1}",
	                           "{\"c1\\u0085\":1}", "{\"o\":{\"$x\":1}}"};
	for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++)
		assert_int_equal(check_text(bad_names[i], true), PERCH_EINVAL);
	/* names up to 1024 bytes */
	char *name = malloc(1025 + 16);
	memset(name, 'n', 1024);
	name[1024] = '\0';
	json_t *v = json_object();
	json_object_set_new(v, name, json_true());
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_OK);
	json_decref(v);
	name[1024] = 'n';
	name[1025] = '\0';
	v = json_object();
	json_object_set_new(v, name, json_true());
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_EINVAL);
	json_decref(v);
	free(name);
	/* depth: 10 levels of objects, not 11; arrays count */
	v = nest(10);
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_OK);
	json_decref(v);
	v = nest(11);
	assert_int_equal(hub_twin_check(v, true, why, sizeof why), PERCH_EINVAL);
	assert_non_null(strstr(why, "deeper"));
	json_decref(v);
	v = json_pack("{s:o}", "arr", json_pack("[o]", nest(9)));
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_EINVAL);
	json_decref(v);
	/* strings up to 4096 bytes */
	char *s = malloc(4098);
	memset(s, 's', 4097);
	s[4096] = '\0';
	v = json_pack("{s:s}", "s", s);
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_OK);
	json_decref(v);
	s[4096] = 's';
	s[4097] = '\0';
	v = json_pack("{s:s}", "s", s);
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_ETOOBIG);
	json_decref(v);
	free(s);
	/* a section of 32768 bytes as compact JSON, and one more */
	v = json_object();
	for (int i = 0; hub_twin_size(v) < HUB_TWIN_MAX_SECTION - 3000; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%04d", i);
		json_object_set_new(v, k, json_string("0123456789012345678901234567890123456789"));
	}
	size_t room = HUB_TWIN_MAX_SECTION - hub_twin_size(v) - strlen(",\"last\":\"\"");
	char *fill = calloc(1, room + 2);
	memset(fill, 'f', room);
	json_object_set_new(v, "last", json_string(fill));
	assert_int_equal(hub_twin_size(v), HUB_TWIN_MAX_SECTION);
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_OK);
	fill[room] = 'f';
	json_object_set_new(v, "last", json_string(fill));
	assert_int_equal(hub_twin_check(v, false, why, sizeof why), PERCH_ETOOBIG);
	assert_int_equal(hub_twin_check(v, true, why, sizeof why), PERCH_OK); /* patches: no */
	json_decref(v);
	free(fill);
	/* null values: in patches only */
	assert_int_equal(check_text("{\"a\":null,\"b\":{\"c\":null}}", true), PERCH_OK);
	assert_int_equal(check_text("{\"a\":null}", false), PERCH_EINVAL);
	assert_int_equal(check_text("{\"a\":[null]}", false), PERCH_OK);
}

static void test_reported_versions(void **state)
{
	(void)state;
	hub_twin t;
	char why[200];
	assert_int_equal(hub_twin_init(&t), PERCH_OK);
	assert_int_equal(t.reported_version, 1);
	assert_int_equal(t.desired_version, 1);
	const char p1[] = "{\"temp\":20,\"cfg\":{\"a\":1,\"b\":2}}";
	assert_int_equal(hub_twin_report(&t, p1, strlen(p1), why, sizeof why), PERCH_OK);
	assert_int_equal(t.reported_version, 2);
	const char p2[] = "{\"temp\":null,\"cfg\":{\"a\":null,\"c\":[3]}}";
	assert_int_equal(hub_twin_report(&t, p2, strlen(p2), why, sizeof why), PERCH_OK);
	assert_int_equal(t.reported_version, 3);
	assert_json(t.reported, "{\"cfg\":{\"b\":2,\"c\":[3]}}");
	/* an empty patch still counts as a patch */
	assert_int_equal(hub_twin_report(&t, "{}", 2, why, sizeof why), PERCH_OK);
	assert_int_equal(t.reported_version, 4);
	/* refusals change nothing */
	const char *bad[] = {
	        "", "{", "[1]", "42", "{\"a\":1,\"a\":2}", "{\"$version\":9}", "{\"x.y\":1}"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		why[0] = '\0';
		assert_int_equal(hub_twin_report(&t, bad[i], strlen(bad[i]), why, sizeof why),
		                 PERCH_EINVAL);
		assert_true(why[0] != '\0');
	}
	char *big = malloc(HUB_TWIN_MAX_PATCH + 64);
	int n = snprintf(big, 16, "{\"b\":\"");
	memset(big + n, 'b', HUB_TWIN_MAX_PATCH);
	memcpy(big + n + HUB_TWIN_MAX_PATCH, "\"}", 3);
	assert_int_equal(hub_twin_report(&t, big, strlen(big), why, sizeof why), PERCH_ETOOBIG);
	/* 10 patches of ~3 KB fit in 32 KiB; the 11th would not */
	for (int i = 0; i < 11; i++) {
		n = snprintf(big, 32, "{\"p%d\":\"", i);
		memset(big + n, 'p', 3000);
		memcpy(big + n + 3000, "\"}", 3);
		perch_err want = i < 10 ? PERCH_OK : PERCH_ETOOBIG;
		assert_int_equal(hub_twin_report(&t, big, strlen(big), why, sizeof why), want);
	}
	free(big);
	assert_int_equal(t.reported_version, 14);
	assert_null(json_object_get(t.reported, "p10"));
	assert_json(t.desired, "{}");
	assert_int_equal(t.desired_version, 1);
	hub_twin_fini(&t);
	hub_twin_fini(&t); /* twice is fine */
}

static void test_desired_versions(void **state)
{
	(void)state;
	hub_twin t;
	char why[200];
	json_t *patch = NULL;
	assert_int_equal(hub_twin_init(&t), PERCH_OK);
	json_t *d = json_of("{\"threshold\":25,\"nested\":{\"a\":1,\"keep\":\"x\"},\"gone\":null}");
	assert_int_equal(hub_twin_set_desired(&t, d, &patch, why, sizeof why), PERCH_OK);
	assert_int_equal(t.desired_version, 2);
	assert_json(patch, "{\"threshold\":25,\"nested\":{\"a\":1,\"keep\":\"x\"},\"$version\":2}");
	assert_json(t.desired, "{\"threshold\":25,\"nested\":{\"a\":1,\"keep\":\"x\"}}");
	json_decref(patch);
	/* the same again: no change, no version, no patch */
	assert_int_equal(hub_twin_set_desired(&t, d, &patch, why, sizeof why), PERCH_OK);
	assert_null(patch);
	assert_int_equal(t.desired_version, 2);
	json_decref(d);
	d = json_of("{\"threshold\":30,\"nested\":{\"a\":1,\"b\":2}}");
	assert_int_equal(hub_twin_set_desired(&t, d, &patch, why, sizeof why), PERCH_OK);
	assert_json(patch, "{\"threshold\":30,\"nested\":{\"keep\":null,\"b\":2},\"$version\":3}");
	json_decref(patch);
	json_decref(d);
	/* refused: t unchanged */
	const char *bad[] = {"[1]", "{\"$x\":1}", "{\"a\":{\"b.c\":1}}"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		d = json_of(bad[i]);
		assert_int_equal(hub_twin_set_desired(&t, d, &patch, why, sizeof why),
		                 PERCH_EINVAL);
		assert_null(patch);
		json_decref(d);
	}
	char *s = malloc(4001);
	memset(s, 'z', 4000);
	s[4000] = '\0';
	d = json_object();
	for (int i = 0; i < 9; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		json_object_set_new(d, k, json_string(s));
	}
	assert_int_equal(hub_twin_set_desired(&t, d, &patch, why, sizeof why), PERCH_ETOOBIG);
	json_decref(d);
	free(s);
	assert_int_equal(t.desired_version, 3);
	assert_json(t.desired, "{\"threshold\":30,\"nested\":{\"a\":1,\"b\":2}}");
	/* to empty: every key deleted */
	d = json_of("{}");
	assert_int_equal(hub_twin_set_desired(&t, d, &patch, why, sizeof why), PERCH_OK);
	assert_json(patch, "{\"threshold\":null,\"nested\":null,\"$version\":4}");
	json_decref(patch);
	json_decref(d);
	assert_int_equal(t.reported_version, 1);
	hub_twin_fini(&t);
}

static void test_document(void **state)
{
	(void)state;
	hub_twin t;
	char why[100];
	assert_int_equal(hub_twin_init(&t), PERCH_OK);
	char *doc = NULL;
	size_t len = 0;
	assert_int_equal(hub_twin_document(&t, &doc, &len), PERCH_OK);
	assert_int_equal(len,
	                 strlen("{\"desired\":{\"$version\":1},\"reported\":{\"$version\":1}}"));
	assert_memory_equal(doc, "{\"desired\":{\"$version\":1},\"reported\":{\"$version\":1}}",
	                    len);
	perch_free(doc);
	assert_int_equal(hub_twin_report(&t, "{\"r\":true}", 10, why, sizeof why), PERCH_OK);
	json_t *d = json_of("{\"d\":[1]}");
	assert_int_equal(hub_twin_set_desired(&t, d, NULL, why, sizeof why), PERCH_OK);
	json_decref(d);
	assert_int_equal(hub_twin_document(&t, &doc, &len), PERCH_OK);
	const char want[] = "{\"desired\":{\"d\":[1],\"$version\":2},\"reported\":{\"r\":true,"
	                    "\"$version\":2}}";
	assert_int_equal(len, strlen(want));
	assert_memory_equal(doc, want, len);
	perch_free(doc);
	/* out of memory: an error, nothing leaked (the sanitizer build checks) */
	perch_alloc_fail_after(0);
	assert_int_equal(hub_twin_document(&t, &doc, &len), PERCH_ENOMEM);
	perch_alloc_fail_after(-1);
	assert_null(doc);
	/* the twin is unchanged by its copy's changes */
	hub_twin c;
	assert_int_equal(hub_twin_copy(&c, &t), PERCH_OK);
	assert_int_equal(hub_twin_report(&c, "{\"r\":null}", 10, why, sizeof why), PERCH_OK);
	assert_json(t.reported, "{\"r\":true}");
	assert_int_equal(t.reported_version, 2);
	hub_twin_fini(&c);
	hub_twin_fini(&t);
}

typedef struct loaded {
	int n;
	char names[4][32];
	hub_twin twins[4];
} loaded;

static void load_cb(void *arg, const char *name, hub_twin *t)
{
	loaded *l = arg;
	assert_true(l->n < 4);
	snprintf(l->names[l->n], sizeof l->names[l->n], "%s", name);
	l->twins[l->n++] = *t;
}

static void free_loaded(loaded *l)
{
	for (int i = 0; i < l->n; i++)
		hub_twin_fini(&l->twins[i]);
	memset(l, 0, sizeof *l);
}

/* The desired section is the deployment's with the remote layer over it. */
static void test_layer(void **state)
{
	(void)state;
	json_t *base = json_of("{\"a\":1,\"n\":{\"x\":1,\"y\":2}}");
	json_t *remote = json_of("{\"a\":2,\"n\":{\"y\":null,\"z\":3},\"b\":null,\"c\":4}");
	json_t *out = NULL;
	assert_int_equal(hub_twin_layer(base, remote, &out), PERCH_OK);
	assert_json(out, "{\"a\":2,\"n\":{\"x\":1,\"z\":3},\"c\":4}");
	json_decref(out);
	assert_int_equal(hub_twin_layer(NULL, remote, &out), PERCH_OK); /* no deployment */
	assert_json(out, "{\"a\":2,\"n\":{\"z\":3},\"c\":4}");
	json_decref(out);
	assert_int_equal(hub_twin_layer(base, NULL, &out), PERCH_OK);
	assert_json(out, "{\"a\":1,\"n\":{\"x\":1,\"y\":2}}");
	json_decref(out);
	/* a copy carries the layer */
	hub_twin t, c;
	assert_int_equal(hub_twin_init(&t), PERCH_OK);
	assert_int_equal(hub_twin_merge(t.remote, remote), PERCH_OK);
	t.remote_version = 3;
	assert_int_equal(hub_twin_copy(&c, &t), PERCH_OK);
	assert_true(json_equal(c.remote, t.remote) && c.remote != t.remote);
	assert_int_equal(c.remote_version, 3);
	hub_twin_fini(&t);
	hub_twin_fini(&c);
	json_decref(base);
	json_decref(remote);
}

static void test_store(void **state)
{
	(void)state;
	char dir[] = "/tmp/twin_test.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof path, "%s/twins.db", dir);
	hub_twin_store *s = NULL;
	assert_int_equal(hub_twin_store_open(path, PERCH_DB_SYNC_OFF, &s), PERCH_OK);
	hub_twin a, b;
	char why[100];
	assert_int_equal(hub_twin_init(&a), PERCH_OK);
	assert_int_equal(hub_twin_init(&b), PERCH_OK);
	assert_int_equal(hub_twin_report(&a, "{\"x\":{\"y\":[1,2]}}", 17, why, sizeof why),
	                 PERCH_OK);
	json_t *d = json_of("{\"t\":25}");
	assert_int_equal(hub_twin_set_desired(&a, d, NULL, why, sizeof why), PERCH_OK);
	json_decref(d);
	json_t *r = json_of("{\"r\":true}");
	assert_int_equal(hub_twin_merge(a.remote, r), PERCH_OK);
	json_decref(r);
	a.remote_version = 7;
	assert_int_equal(hub_twin_store_save(s, "gw1/filter", &a), PERCH_OK);
	assert_int_equal(hub_twin_store_save(s, "gw1", &b), PERCH_OK);
	assert_int_equal(hub_twin_report(&a, "{\"z\":1}", 7, why, sizeof why), PERCH_OK);
	assert_int_equal(hub_twin_store_save(s, "gw1/filter", &a), PERCH_OK); /* replaces */
	assert_int_equal(hub_twin_store_begin(s), PERCH_OK);
	assert_int_equal(hub_twin_store_save(s, "leaf1", &b), PERCH_OK);
	assert_int_equal(hub_twin_store_delete(s, "gw1"), PERCH_OK);
	assert_int_equal(hub_twin_store_delete(s, "nobody"), PERCH_OK);
	assert_int_equal(hub_twin_store_commit(s), PERCH_OK);
	assert_int_equal(hub_twin_store_begin(s), PERCH_OK);
	assert_int_equal(hub_twin_store_delete(s, "leaf1"), PERCH_OK);
	hub_twin_store_rollback(s); /* undone */
	hub_twin_store_close(s);

	assert_int_equal(hub_twin_store_open(path, PERCH_DB_SYNC_OFF, &s), PERCH_OK);
	loaded l = {0};
	assert_int_equal(hub_twin_store_load(s, load_cb, &l), PERCH_OK);
	assert_int_equal(l.n, 2);
	int fi = strcmp(l.names[0], "gw1/filter") == 0 ? 0 : 1;
	assert_string_equal(l.names[fi], "gw1/filter");
	assert_string_equal(l.names[1 - fi], "leaf1");
	assert_json(l.twins[fi].reported, "{\"x\":{\"y\":[1,2]},\"z\":1}");
	assert_json(l.twins[fi].desired, "{\"t\":25}");
	assert_int_equal(l.twins[fi].reported_version, 3);
	assert_int_equal(l.twins[fi].desired_version, 2);
	assert_json(l.twins[fi].remote,
	            "{\"r\":true}"); /* the remote layer, version 2 of the schema */
	assert_int_equal(l.twins[fi].remote_version, 7);
	assert_json(l.twins[1 - fi].remote, "{}");
	assert_int_equal(l.twins[1 - fi].remote_version, 0);
	free_loaded(&l);
	hub_twin_store_close(s);

	/* a damaged file is moved aside; the store starts empty */
	FILE *f = fopen(path, "r+");
	assert_non_null(f);
	fwrite("garbage garbage garbage garbage", 1, 31, f);
	fclose(f);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -f %s-wal %s-shm", path, path);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(hub_twin_store_open(path, PERCH_DB_SYNC_OFF, &s), PERCH_OK);
	assert_int_equal(hub_twin_store_load(s, load_cb, &l), PERCH_OK);
	assert_int_equal(l.n, 0);
	hub_twin_store_close(s);
	hub_twin_fini(&a);
	hub_twin_fini(&b);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_merge),
	        cmocka_unit_test(test_diff),
	        cmocka_unit_test(test_limits),
	        cmocka_unit_test(test_reported_versions),
	        cmocka_unit_test(test_desired_versions),
	        cmocka_unit_test(test_document),
	        cmocka_unit_test(test_layer),
	        cmocka_unit_test(test_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
