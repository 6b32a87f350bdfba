/*
 * report_test.c — unit tests of report.c: the module report carries exactly
 * IoT Edge's reported-property keys, times in RFC 3339 UTC (the zero time
 * when never), and the deployment report has lastDesiredVersion and
 * lastDesiredStatus {code, description}. The hub's status file (fixtures
 * written to a temporary directory): absent, garbage, partial or oversized
 * files say "unknown"; ages are brought up to now; the twin gets only the
 * slow-changing fields; `perch-agent status` prints one upstream line.
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

#include "agent.h"

static void test_module_keys(void **state)
{
	(void)state;
	char name[] = "filter", version[] = "1.0", image[] = "r/filter:1.0";
	agent_module def = {.name = name,
	                    .version = version,
	                    .image = image,
	                    .restart_policy = AGENT_RESTART_ALWAYS};
	agent_mod m = {.m = &def,
	               .rt = AGENT_RT_BACKOFF,
	               .exit_code = 137,
	               .start_ms = 1795000000123,
	               .restart_count = 3,
	               .next_try_ms = 1795000004000};
	strcpy(m.name, "filter");
	strcpy(m.desc, "exited with 137; restarting in 4s");
	strcpy(m.image_id, "sha256:abc");
	json_t *o = agent_report_module(&m);
	assert_non_null(o);
	static const char *const keys[] = {"runtimeStatus",
	                                   "exitCode",
	                                   "statusDescription",
	                                   "lastStartTimeUtc",
	                                   "lastExitTimeUtc",
	                                   "restartCount",
	                                   "lastRestartTimeUtc",
	                                   "settings",
	                                   "type",
	                                   "version",
	                                   "status",
	                                   "restartPolicy",
	                                   "nextRestartTimeUtc"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		assert_non_null(json_object_get(o, keys[i]));
	assert_int_equal(json_object_size(o), sizeof keys / sizeof keys[0]);
	assert_string_equal(json_string_value(json_object_get(o, "runtimeStatus")), "backoff");
	assert_int_equal(json_integer_value(json_object_get(o, "exitCode")), 137);
	assert_int_equal(json_integer_value(json_object_get(o, "restartCount")), 3);
	assert_string_equal(json_string_value(json_object_get(o, "lastStartTimeUtc")),
	                    "2026-11-18T11:06:40.123Z");
	assert_string_equal(json_string_value(json_object_get(o, "lastExitTimeUtc")),
	                    "0001-01-01T00:00:00Z");
	assert_string_equal(json_string_value(json_object_get(o, "restartPolicy")), "always");
	json_t *s = json_object_get(o, "settings");
	assert_string_equal(json_string_value(json_object_get(s, "image")), "r/filter:1.0");
	assert_string_equal(json_string_value(json_object_get(s, "imageHash")), "sha256:abc");
	assert_non_null(json_object_get(s, "imageDigest"));
	json_decref(o);
}

static void test_deployment_keys(void **state)
{
	(void)state;
	agent a;
	memset(&a, 0, sizeof a);
	agent_mod mods[1];
	memset(mods, 0, sizeof mods);
	strcpy(mods[0].name, "sensor");
	mods[0].rt = AGENT_RT_RUNNING;
	a.mods = mods;
	a.n_mods = 1;
	a.desired_version = 4;
	a.desired_code = 400;
	strcpy(a.desired_desc, "x.y: missing");
	json_t *r = agent_report(&a);
	assert_non_null(r);
	assert_int_equal(json_integer_value(json_object_get(r, "lastDesiredVersion")), 4);
	json_t *st = json_object_get(r, "lastDesiredStatus");
	assert_int_equal(json_object_size(st), 2);
	assert_int_equal(json_integer_value(json_object_get(st, "code")), 400);
	assert_string_equal(json_string_value(json_object_get(st, "description")), "x.y: missing");
	json_t *m = json_object_get(json_object_get(r, "modules"), "sensor");
	assert_string_equal(json_string_value(json_object_get(m, "runtimeStatus")), "running");
	assert_null(json_object_get(m, "nextRestartTimeUtc"));
	assert_non_null(json_object_get(json_object_get(r, "systemModules"), "edgeHub"));
	json_decref(r);
}

static void test_times(void **state)
{
	(void)state;
	assert_int_equal(agent_parse_rfc3339("2026-11-18T11:06:40.123456789Z"), 1795000000123);
	assert_int_equal(agent_parse_rfc3339("2026-11-18T11:06:40Z"), 1795000000000);
	assert_int_equal(agent_parse_rfc3339("0001-01-01T00:00:00Z"), 0);
	assert_int_equal(agent_parse_rfc3339("junk"), 0);
	char buf[40];
	agent_rfc3339(1795000000005, buf, sizeof buf);
	assert_string_equal(buf, "2026-11-18T11:06:40.005Z");
}

#define T0 1795000000000 /* 2026-11-18T11:06:40Z, when the fixtures were "written" */

static char fixture_dir[64];

/* fixture writes text into a file of fixture_dir and returns its path
 * (a static buffer). */
static const char *fixture(const char *name, const char *text)
{
	static char path[128];
	snprintf(path, sizeof path, "%s/%s", fixture_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static const char down_doc[] =
        "{\"time\":\"2026-11-18T11:06:40.000Z\",\"upstream\":{\"configured\":true,"
        "\"state\":\"down\",\"since\":\"2026-11-18T11:01:40.000Z\",\"offlineSeconds\":300.000,"
        "\"reconnects\":2,\"forwarded\":10,\"resent\":1,\"inflight\":0,"
        "\"dropped\":{\"expired\":3,\"tooBig\":0},\"refused\":0,\"firstForwardSeconds\":-1.000,"
        "\"queued\":{\"messages\":5,\"bytes\":410,\"oldestAgeSeconds\":240.000},"
        "\"queues\":{\"0\":{\"messages\":5,\"bytes\":410,\"oldestAgeSeconds\":240.000}}}}\n";

static const char *state_of(const json_t *up)
{
	return json_string_value(json_object_get(up, "state"));
}

/* table_line: the upstream line `perch-agent status` prints for up. */
static char *table_line(json_t *up)
{
	json_t *r = json_pack("{s:{s:{s:s,s:s,s:O}}}", "systemModules", "edgeHub", "runtimeStatus",
	                      "running", "statusDescription", "x", "upstream", up);
	assert_non_null(r);
	static char buf[4096];
	FILE *f = fmemopen(buf, sizeof buf, "w");
	assert_non_null(f);
	agent_report_table(r, f);
	fclose(f);
	json_decref(r);
	char *line = strstr(buf, "upstream:");
	assert_non_null(line);
	*strchr(line, '\n') = '\0';
	return line;
}

static void test_upstream_unreadable(void **state)
{
	(void)state;
	char big[AGENT_HUB_STATUS_MAX + 10];
	memset(big, ' ', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	memcpy(big, down_doc, strlen(down_doc)); /* valid JSON, then too much */
	const char *bad[] = {
	        "",
	        "garbage",
	        "{\"time\":\"2026-11-18T11:06:40.000Z\",\"upstream\":{\"configured\":true,\"st",
	        "{\"time\":\"2026-11-18T11:06:40.000Z\",\"upstream\":[]}",
	        "{\"upstream\":{\"configured\":false}}",
	        "{\"time\":\"2026-11-18T11:06:40.000Z\",\"upstream\":{\"configured\":true}}",
	        big,
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *up = agent_hub_upstream(fixture("bad.json", bad[i]), T0);
		assert_non_null(up);
		assert_string_equal(state_of(up), "unknown");
		assert_string_equal(table_line(up), "upstream:   unknown (no status from the hub)");
		json_decref(up);
	}
	json_t *up = agent_hub_upstream("/nonexistent/perch/hub-status.json", T0);
	assert_string_equal(state_of(up), "unknown");
	json_decref(up);
	up = agent_hub_upstream("", T0);
	assert_string_equal(state_of(up), "unknown");
	json_decref(up);
}

static void test_upstream_not_configured(void **state)
{
	(void)state;
	json_t *up =
	        agent_hub_upstream(fixture("nc.json", "{\"time\":\"2026-11-18T11:06:40.000Z\","
	                                              "\"upstream\":{\"configured\":false}}\n"),
	                           T0);
	assert_true(json_is_false(json_object_get(up, "configured")));
	assert_string_equal(table_line(up), "upstream:   not configured");
	json_decref(up);
}

static void test_upstream_down_aged(void **state)
{
	(void)state;
	/* Read a minute after the hub wrote it: the ages move on. */
	json_t *up = agent_hub_upstream(fixture("down.json", down_doc), T0 + 60000);
	assert_string_equal(state_of(up), "down");
	assert_true(json_number_value(json_object_get(up, "offlineSeconds")) == 360.0);
	json_t *q = json_object_get(up, "queued");
	assert_int_equal(json_integer_value(json_object_get(q, "messages")), 5);
	assert_true(json_number_value(json_object_get(q, "oldestAgeSeconds")) == 300.0);
	assert_true(json_number_value(
	                    json_object_get(json_object_get(json_object_get(up, "queues"), "0"),
	                                    "oldestAgeSeconds")) == 300.0);
	assert_string_equal(json_string_value(json_object_get(up, "statusTimeUtc")),
	                    "2026-11-18T11:06:40.000Z");
	assert_int_equal(json_integer_value(json_object_get(up, "forwarded")), 10);
	assert_string_equal(table_line(up), "upstream:   down since 2026-11-18T11:01:40.000Z "
	                                    "(offline 6m), 5 queued (oldest 5m)");
	json_decref(up);
}

/* Ages far out of range (a damaged status file) print, without undefined
 * behaviour (the sanitizer build checks float-to-integer conversions). */
static void test_upstream_huge_ages(void **state)
{
	(void)state;
	json_t *up = json_pack("{s:b,s:s,s:s,s:f,s:{s:i,s:f}}", "configured", 1, "state", "down",
	                       "since", "2026-11-18T11:01:40.000Z", "offlineSeconds", 1e300,
	                       "queued", "messages", 1, "oldestAgeSeconds", -1e300);
	assert_non_null(up);
	assert_string_equal(table_line(up), "upstream:   down since 2026-11-18T11:01:40.000Z "
	                                    "(offline 11574074074d1h), 1 queued (oldest 0s)");
	json_decref(up);
}

static void test_upstream_up(void **state)
{
	(void)state;
	json_t *up = agent_hub_upstream(
	        fixture("up.json",
	                "{\"time\":\"2026-11-18T11:06:40.000Z\",\"upstream\":{\"configured\":true,"
	                "\"state\":\"up\",\"since\":\"2026-11-18T09:00:00.000Z\","
	                "\"offlineSeconds\":0.000,\"reconnects\":0,\"queued\":{\"messages\":0,"
	                "\"bytes\":0,\"oldestAgeSeconds\":0.000},\"queues\":{}}}\n"),
	        T0 + 5000);
	assert_string_equal(state_of(up), "up");
	assert_true(json_number_value(json_object_get(up, "offlineSeconds")) == 0.0);
	assert_string_equal(table_line(up),
	                    "upstream:   up since 2026-11-18T09:00:00.000Z, 0 queued");
	json_decref(up);
}

static void test_upstream_in_twin(void **state)
{
	(void)state;
	agent a;
	memset(&a, 0, sizeof a);
	a.hub.pid = 1; /* "running": the report reads its file */
	snprintf(a.hub.status_path, sizeof a.hub.status_path, "%s", fixture("twin.json", down_doc));
	json_t *full = agent_report(&a);
	json_t *up = json_object_get(
	        json_object_get(json_object_get(full, "systemModules"), "edgeHub"), "upstream");
	assert_non_null(json_object_get(up, "queued"));
	assert_non_null(json_object_get(full, "twin"));
	json_decref(full);
	json_t *twin = agent_report_twin(&a);
	up = json_object_get(json_object_get(json_object_get(twin, "systemModules"), "edgeHub"),
	                     "upstream");
	assert_int_equal(json_object_size(up), 4);
	assert_true(json_is_true(json_object_get(up, "configured")));
	assert_string_equal(state_of(up), "down");
	assert_string_equal(json_string_value(json_object_get(up, "since")),
	                    "2026-11-18T11:01:40.000Z");
	assert_int_equal(json_integer_value(json_object_get(up, "reconnects")), 2);
	assert_null(json_object_get(twin, "twin"));
	json_decref(twin);
	/* A hub that is not running: its file is not read. */
	a.hub.pid = 0;
	full = agent_report(&a);
	up = json_object_get(json_object_get(json_object_get(full, "systemModules"), "edgeHub"),
	                     "upstream");
	assert_string_equal(state_of(up), "unknown");
	json_decref(full);
}

static int make_fixture_dir(void **state)
{
	(void)state;
	snprintf(fixture_dir, sizeof fixture_dir, "/tmp/perch-report-test.XXXXXX");
	return mkdtemp(fixture_dir) == NULL ? -1 : 0;
}

static int remove_fixture_dir(void **state)
{
	(void)state;
	static const char *const names[] = {"bad.json", "nc.json", "down.json", "up.json",
	                                    "twin.json"};
	char path[128];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", fixture_dir, names[i]);
		unlink(path);
	}
	return rmdir(fixture_dir);
}

int main(void)
{
	agent_manifest_init();
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_module_keys),
	        cmocka_unit_test(test_deployment_keys),
	        cmocka_unit_test(test_times),
	        cmocka_unit_test(test_upstream_unreadable),
	        cmocka_unit_test(test_upstream_not_configured),
	        cmocka_unit_test(test_upstream_down_aged),
	        cmocka_unit_test(test_upstream_up),
	        cmocka_unit_test(test_upstream_huge_ages),
	        cmocka_unit_test(test_upstream_in_twin),
	};
	return cmocka_run_group_tests(tests, make_fixture_dir, remove_fixture_dir);
}
