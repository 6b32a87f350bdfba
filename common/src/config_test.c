/*
 * config_test.c — unit tests for the table-driven YAML loader: every type,
 * defaults, ranges, unknown and duplicate keys with line and column, foreign
 * sections, aliases, flags, and allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perch/alloc.h"
#include "perch/config.h"

struct settings {
	bool anon;
	int64_t port;
	uint64_t max_packet;
	int64_t keepalive_ms;
	char *data_dir;
	int policy;
	perch_strlist listen;
	char *device_id;
};

static const char *const policies[] = {"refuse", "drop-oldest", NULL};

#define F(x) offsetof(struct settings, x)
static const perch_cfg_key table[] = {
        {"hub.allow_anonymous", PERCH_CFG_BOOL, 0, 0, "false", F(anon), NULL, "anonymous"},
        {"hub.port", PERCH_CFG_INT, 1, 65535, "8883", F(port), NULL, "port"},
        {"hub.max_packet_size", PERCH_CFG_SIZE, 16, 268435455, "256KiB", F(max_packet), NULL, ""},
        {"hub.keepalive", PERCH_CFG_DURATION, 100, 3600000, "60s", F(keepalive_ms), NULL, ""},
        {"hub.data_dir", PERCH_CFG_STRING, 1, 1024, "/var/lib/perch", F(data_dir), NULL, ""},
        {"hub.store.full_policy", PERCH_CFG_ENUM, 0, 0, "refuse", F(policy), policies, ""},
        {"hub.listen", PERCH_CFG_STRLIST, 0, 4, NULL, F(listen), NULL, ""},
        {"device.id", PERCH_CFG_STRING, 0, 128, NULL, F(device_id), NULL, ""},
};
#define NKEYS (sizeof table / sizeof table[0])
static const char *const foreign[] = {"agent", "cloud", NULL};

static perch_err load(const char *yaml, struct settings *s, perch_cfg_errors *errs)
{
	memset(s, 0, sizeof *s);
	memset(errs, 0, sizeof *errs);
	assert_int_equal(perch_cfg_defaults(table, NKEYS, s), PERCH_OK);
	perch_err e = perch_cfg_load_buffer(table, NKEYS, foreign, "test.yaml", yaml, strlen(yaml),
	                                    s, errs);
	for (size_t i = 0; i < errs->n; i++)
		print_message("config error: %s\n", errs->msg[i]);
	return e;
}

static void done(struct settings *s, perch_cfg_errors *errs)
{
	perch_cfg_free(table, NKEYS, s);
	perch_cfg_errors_free(errs);
}

static bool has_error(const perch_cfg_errors *errs, const char *text)
{
	for (size_t i = 0; i < errs->n; i++)
		if (strstr(errs->msg[i], text) != NULL)
			return true;
	return false;
}

static void test_defaults(void **state)
{
	(void)state;
	struct settings s;
	perch_cfg_errors errs;
	assert_int_equal(load("", &s, &errs), PERCH_OK);
	assert_false(s.anon);
	assert_int_equal(s.port, 8883);
	assert_int_equal(s.max_packet, 256 * 1024);
	assert_int_equal(s.keepalive_ms, 60000);
	assert_string_equal(s.data_dir, "/var/lib/perch");
	assert_int_equal(s.policy, 0);
	assert_int_equal(s.listen.n, 0);
	assert_null(s.device_id);
	done(&s, &errs);
}

static void test_all_types(void **state)
{
	(void)state;
	struct settings s;
	perch_cfg_errors errs;
	const char *y = "# a comment\n"
	                "device:\n"
	                "  id: plant-7-gw\n"
	                "hub:\n"
	                "  allow_anonymous: yes\n"
	                "  port: 1883\n"
	                "  max_packet_size: 1MiB\n"
	                "  keepalive: 250ms\n"
	                "  data_dir: \"/tmp/perch data\"\n"
	                "  store:\n"
	                "    full_policy: drop-oldest\n"
	                "  listen:\n"
	                "    - ws://127.0.0.1:8080\n"
	                "    - mqtt://0.0.0.0:1883\n"
	                "agent:\n"
	                "  anything: [1, 2, {deep: true}]\n";
	assert_int_equal(load(y, &s, &errs), PERCH_OK);
	assert_int_equal(errs.n, 0);
	assert_true(s.anon);
	assert_int_equal(s.port, 1883);
	assert_int_equal(s.max_packet, 1024 * 1024);
	assert_int_equal(s.keepalive_ms, 250);
	assert_string_equal(s.data_dir, "/tmp/perch data");
	assert_int_equal(s.policy, 1);
	assert_int_equal(s.listen.n, 2);
	assert_string_equal(s.listen.items[1], "mqtt://0.0.0.0:1883");
	assert_string_equal(s.device_id, "plant-7-gw");
	done(&s, &errs);
}

static void test_every_error_reported_with_position(void **state)
{
	(void)state;
	struct settings s;
	perch_cfg_errors errs;
	const char *y = "hub:\n"
	                "  port: 70000\n"            /* line 2: range */
	                "  keepalive: soon\n"        /* line 3: type */
	                "  colour: blue\n"           /* line 4: unknown */
	                "  allow_anonymous: maybe\n" /* line 5: bool */
	                "  store:\n"
	                "    full_policy: panic\n" /* line 7: enum */
	                "  port: 1\n"              /* line 8: duplicate */
	                "  listen: {a: b}\n"       /* line 9: shape */
	                "extra: 1\n";              /* line 10: unknown top-level */
	assert_int_equal(load(y, &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "test.yaml:2:9: hub.port: out of range 1..65535"));
	assert_true(has_error(&errs, "test.yaml:3:14: hub.keepalive: expected a duration"));
	assert_true(has_error(&errs, "test.yaml:4:3: unknown key 'hub.colour'"));
	assert_true(
	        has_error(&errs, "test.yaml:5:20: hub.allow_anonymous: expected true or false"));
	assert_true(has_error(&errs, "test.yaml:7:18: hub.store.full_policy: expected one of: "
	                             "refuse drop-oldest"));
	assert_true(has_error(&errs, "test.yaml:8:3: duplicate key 'hub.port'"));
	assert_true(has_error(&errs, "test.yaml:9:11: hub.listen: expected a list of strings"));
	assert_true(has_error(&errs, "test.yaml:10:1: unknown key 'extra'"));
	assert_int_equal(errs.n, 8);
	/* Values that were fine, or absent, keep their defaults. */
	assert_int_equal(s.port, 8883);
	done(&s, &errs);
}

static void test_syntax_error(void **state)
{
	(void)state;
	struct settings s;
	perch_cfg_errors errs;
	assert_int_equal(load("hub:\n  port: [1, 2\n", &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "test.yaml:3:1: did not find expected ','"));
	done(&s, &errs);
	assert_int_equal(load("- a\n- b\n", &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "top level must be a mapping"));
	done(&s, &errs);
	assert_int_equal(load("hub: {}\n---\nhub: {}\n", &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "only one YAML document"));
	done(&s, &errs);
	assert_int_equal(load("hub: 5\n", &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "hub: expected a section"));
	done(&s, &errs);
	assert_int_equal(load("hub:\n  port:\n", &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "hub.port: missing value"));
	done(&s, &errs);
}

static void test_aliases_refused(void **state)
{
	(void)state;
	struct settings s;
	perch_cfg_errors errs;
	const char *y = "hub:\n  data_dir: &d /x\n"
	                "device:\n  id: *d\n";
	assert_int_equal(load(y, &s, &errs), PERCH_ECONFIG);
	assert_true(has_error(&errs, "test.yaml:4:7: YAML aliases are not supported"));
	done(&s, &errs);
}

static void test_deep_and_many_errors(void **state)
{
	(void)state;
	struct settings s;
	perch_cfg_errors errs;
	char y[8192] = "";
	for (int i = 0; i < 100; i++) {
		char line[64];
		snprintf(line, sizeof line, "k%d: 1\n", i);
		strcat(y, line);
	}
	assert_int_equal(load(y, &s, &errs), PERCH_ECONFIG);
	assert_int_equal(errs.n, PERCH_CFG_MAX_ERRORS);
	assert_int_equal(errs.dropped, 100 - PERCH_CFG_MAX_ERRORS);
	done(&s, &errs);
	/* Unknown deep nesting inside a foreign section is skipped whole. */
	assert_int_equal(
	        load("agent: {a: {b: {c: {d: {e: {f: {g: {h: {i: {j: 1}}}}}}}}}}\n", &s, &errs),
	        PERCH_OK);
	done(&s, &errs);
}

static void test_set_flags(void **state)
{
	(void)state;
	struct settings s = {0};
	char err[256];
	assert_int_equal(perch_cfg_defaults(table, NKEYS, &s), PERCH_OK);
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.port", "1884", &s, err, sizeof err),
	                 PERCH_OK);
	assert_int_equal(s.port, 1884);
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.listen", "ws://a:1", &s, err, sizeof err),
	                 PERCH_OK);
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.listen", "ws://b:2", &s, err, sizeof err),
	                 PERCH_OK);
	assert_int_equal(s.listen.n, 2);
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.port", "0", &s, err, sizeof err),
	                 PERCH_ERANGE);
	assert_string_equal(err, "hub.port: out of range 1..65535");
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.nope", "1", &s, err, sizeof err),
	                 PERCH_ENOENT);
	assert_string_equal(err, "unknown setting 'hub.nope'");
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.data_dir", "", &s, err, sizeof err),
	                 PERCH_ERANGE);
	for (int i = 0; i < 2; i++)
		assert_int_equal(
		        perch_cfg_set(table, NKEYS, "hub.listen", "x", &s, err, sizeof err),
		        PERCH_OK);
	assert_int_equal(perch_cfg_set(table, NKEYS, "hub.listen", "x", &s, err, sizeof err),
	                 PERCH_ERANGE);
	perch_cfg_free(table, NKEYS, &s);
	assert_null(s.data_dir);
}

static void test_value_parsers(void **state)
{
	(void)state;
	uint64_t sz;
	int64_t ms, i;
	assert_int_equal(perch_parse_size("2G", &sz), PERCH_OK);
	assert_int_equal(sz, 2ull << 30);
	assert_int_equal(perch_parse_size("64k", &sz), PERCH_OK);
	assert_int_equal(sz, 64000);
	assert_int_equal(perch_parse_size("-1", &sz), PERCH_ERANGE);
	assert_int_equal(perch_parse_size("1TB", &sz), PERCH_EINVAL);
	assert_int_equal(perch_parse_size("99999999999999G", &sz), PERCH_ERANGE);
	assert_int_equal(perch_parse_duration_ms("1d", &ms), PERCH_OK);
	assert_int_equal(ms, 86400000);
	assert_int_equal(perch_parse_duration_ms("30", &ms), PERCH_OK);
	assert_int_equal(ms, 30000);
	assert_int_equal(perch_parse_duration_ms("5 m", &ms), PERCH_OK);
	assert_int_equal(ms, 300000);
	assert_int_equal(perch_parse_int("12x", &i), PERCH_EINVAL);
	assert_int_equal(perch_parse_int("+1", &i), PERCH_EINVAL);
	assert_int_equal(perch_parse_int("99999999999999999999", &i), PERCH_ERANGE);
	assert_int_equal(perch_parse_int("-5", &i), PERCH_OK);
	assert_int_equal(i, -5);
}

static void test_file(void **state)
{
	(void)state;
	char path[] = "/tmp/perch-config-test-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *y = "hub:\n  port: 99999\n";
	assert_int_equal(write(fd, y, strlen(y)), (ssize_t)strlen(y));
	close(fd);
	struct settings s = {0};
	perch_cfg_errors errs = {0};
	assert_int_equal(perch_cfg_defaults(table, NKEYS, &s), PERCH_OK);
	assert_int_equal(perch_cfg_load_file(table, NKEYS, foreign, path, &s, &errs),
	                 PERCH_ECONFIG);
	char want[128];
	snprintf(want, sizeof want, "%s:2:9: hub.port: out of range", path);
	assert_true(has_error(&errs, want));
	perch_cfg_errors_free(&errs);
	unlink(path);
	assert_int_equal(perch_cfg_load_file(table, NKEYS, foreign, path, &s, &errs), PERCH_ENOENT);
	assert_true(has_error(&errs, "cannot open"));
	perch_cfg_errors_free(&errs);
	assert_int_equal(perch_cfg_load_file(table, NKEYS, foreign, "/tmp", &s, &errs), PERCH_EIO);
	perch_cfg_errors_free(&errs);
	perch_cfg_free(table, NKEYS, &s);
}

/* Every allocation of a full load fails in turn: no crash, no leak. */
static void test_alloc_failures(void **state)
{
	(void)state;
	const char *y = "hub:\n  data_dir: /d\n  listen: [a, b, c]\n  colour: x\n";
	size_t base = perch_alloc_bytes();
	for (long n = 0; n < 60; n++) {
		struct settings s = {0};
		perch_cfg_errors errs = {0};
		perch_alloc_fail_after(n);
		perch_err e = perch_cfg_defaults(table, NKEYS, &s);
		if (e == PERCH_OK)
			e = perch_cfg_load_buffer(table, NKEYS, foreign, "t", y, strlen(y), &s,
			                          &errs);
		perch_alloc_fail_after(-1);
		assert_true(e == PERCH_OK || e == PERCH_ENOMEM || e == PERCH_ECONFIG);
		perch_cfg_free(table, NKEYS, &s);
		perch_cfg_errors_free(&errs);
		assert_int_equal(perch_alloc_bytes(), base);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_defaults),
	        cmocka_unit_test(test_all_types),
	        cmocka_unit_test(test_every_error_reported_with_position),
	        cmocka_unit_test(test_syntax_error),
	        cmocka_unit_test(test_aliases_refused),
	        cmocka_unit_test(test_deep_and_many_errors),
	        cmocka_unit_test(test_set_flags),
	        cmocka_unit_test(test_value_parsers),
	        cmocka_unit_test(test_file),
	        cmocka_unit_test(test_alloc_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
