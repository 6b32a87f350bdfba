/*
 * report_test.c — unit tests of report.c: the module report carries exactly
 * IoT Edge's reported-property keys, times in RFC 3339 UTC (the zero time
 * when never), and the deployment report has lastDesiredVersion and
 * lastDesiredStatus {code, description}.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

int main(void)
{
	agent_manifest_init();
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_module_keys),
	        cmocka_unit_test(test_deployment_keys),
	        cmocka_unit_test(test_times),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
