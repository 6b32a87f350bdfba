/*
 * iothub_topic_test.c — unit tests for IoT Hub topic classification (every
 * kind, every refusal reason, the OTHER fall-through) and the topic builders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/iothub_topic.h"

static perch_slice sl(const char *s)
{
	return perch_slice_cstr(s);
}

static perch_iothub_topic parse_ok(const char *topic, perch_iothub_kind kind)
{
	perch_iothub_topic t;
	perch_iothub_reason why = PERCH_IOTHUB_REASON_COUNT;
	assert_int_equal(perch_iothub_topic_parse(sl(topic), &t, &why), PERCH_OK);
	assert_int_equal(why, PERCH_IOTHUB_OK);
	assert_int_equal(t.kind, kind);
	return t;
}

static void expect_eq(perch_slice s, const char *want)
{
	if (!perch_slice_eq_cstr(s, want))
		fail_msg("got '%.*s', want '%s'", (int)s.len, s.ptr ? s.ptr : "", want);
}

static void expect_refused(const char *topic, perch_err err, perch_iothub_reason reason,
                           perch_iothub_kind kind)
{
	perch_iothub_topic t;
	perch_iothub_reason why;
	assert_int_equal(perch_iothub_topic_parse(sl(topic), &t, &why), err);
	if (why != reason)
		fail_msg("%s: reason %s, want %s", topic, perch_iothub_reason_str(why),
		         perch_iothub_reason_str(reason));
	assert_int_equal(t.kind, kind);
	assert_int_equal(perch_iothub_topic_parse(sl(topic), &t, NULL), err);
}

static void test_device_topics(void **state)
{
	(void)state;
	perch_iothub_topic t =
	        parse_ok("devices/dev1/messages/events/%24.ct=application%2Fjson&a=1",
	                 PERCH_IOTHUB_TELEMETRY);
	expect_eq(t.device, "dev1");
	expect_eq(t.props, "%24.ct=application%2Fjson&a=1");
	t = parse_ok("devices/dev1/messages/events/", PERCH_IOTHUB_TELEMETRY);
	expect_eq(t.props, "");
	(void)parse_ok("devices/dev1/messages/events", PERCH_IOTHUB_TELEMETRY);
	t = parse_ok("devices/dev%201/messages/events/a=1/b", PERCH_IOTHUB_TELEMETRY);
	expect_eq(t.device, "dev%201");
	expect_eq(t.props, "a=1/b");
	t = parse_ok("devices/d/modules/m/messages/events/%24.on=out1", PERCH_IOTHUB_MODULE_OUTPUT);
	expect_eq(t.device, "d");
	expect_eq(t.module, "m");
	expect_eq(t.props, "%24.on=out1");
	t = parse_ok("devices/d/modules/$edgeHub/inputs/in1/%24.cdid=x", PERCH_IOTHUB_MODULE_INPUT);
	expect_eq(t.module, "$edgeHub");
	expect_eq(t.input, "in1");
	expect_eq(t.props, "%24.cdid=x");
	t = parse_ok("devices/d/modules/m/inputs/in1", PERCH_IOTHUB_MODULE_INPUT);
	expect_eq(t.input, "in1");
	expect_eq(t.props, "");
	(void)parse_ok("devices/d/modules/m/inputs/in1/", PERCH_IOTHUB_MODULE_INPUT);
	t = parse_ok("devices/d/messages/devicebound/%24.to=%2Fdevices%2Fd&iothub-ack=full",
	             PERCH_IOTHUB_C2D);
	expect_eq(t.props, "%24.to=%2Fdevices%2Fd&iothub-ack=full");
	(void)parse_ok("devices/d/messages/devicebound", PERCH_IOTHUB_C2D);
}

static void test_twin_method_topics(void **state)
{
	(void)state;
	perch_iothub_topic t = parse_ok("$iothub/twin/GET/?$rid=42", PERCH_IOTHUB_TWIN_GET);
	expect_eq(t.rid, "42");
	t = parse_ok("$iothub/twin/GET?$rid=a-b", PERCH_IOTHUB_TWIN_GET);
	expect_eq(t.rid, "a-b");
	t = parse_ok("$iothub/twin/PATCH/properties/reported/?$rid=7&$version=3&x=y",
	             PERCH_IOTHUB_TWIN_REPORTED);
	expect_eq(t.rid, "7");
	assert_true(t.has_version);
	assert_int_equal(t.version, 3);
	t = parse_ok("$iothub/twin/PATCH/properties/desired/?$version=18446744073709551615",
	             PERCH_IOTHUB_TWIN_DESIRED);
	assert_true(t.version == UINT64_MAX);
	t = parse_ok("$iothub/twin/res/204/?$rid=9&$version=12", PERCH_IOTHUB_TWIN_RESPONSE);
	assert_int_equal(t.status, 204);
	assert_int_equal(t.version, 12);
	t = parse_ok("$iothub/twin/res/200/?$rid=9", PERCH_IOTHUB_TWIN_RESPONSE);
	assert_false(t.has_version);
	t = parse_ok("$iothub/methods/POST/reboot/?$rid=1f", PERCH_IOTHUB_METHOD_REQUEST);
	expect_eq(t.method, "reboot");
	expect_eq(t.rid, "1f");
	t = parse_ok("$iothub/methods/POST/reboot?$rid=1f", PERCH_IOTHUB_METHOD_REQUEST);
	expect_eq(t.method, "reboot");
	t = parse_ok("$iothub/methods/res/500/?$rid=1f", PERCH_IOTHUB_METHOD_RESPONSE);
	assert_int_equal(t.status, 500);
}

static void test_other(void **state)
{
	(void)state;
	const char *other[] = {"",
	                       "a/b",
	                       "devices",
	                       "devices/d",
	                       "devices/d/messages",
	                       "devices/d/messages/eventsX",
	                       "devices/d/messages/devicebound2/x",
	                       "devices/d/modules/m",
	                       "devices/d/modules/m/outputs/o",
	                       "devices/d/modules/m/messages/eventsy",
	                       "$iothub/twin/GETX?$rid=1",
	                       "$iothub/twin/PATCH/properties/tags",
	                       "$iothub/twin/PATCH/properties/desiredX?$version=1",
	                       "$iothub/methods/PUT/x",
	                       "$iothub/other",
	                       "Devices/d/messages/events/"};
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
		perch_iothub_topic t;
		perch_iothub_reason why;
		if (perch_iothub_topic_parse(sl(other[i]), &t, &why) != PERCH_OK ||
		    t.kind != PERCH_IOTHUB_OTHER)
			fail_msg("%s: not OTHER (%s, %s)", other[i], perch_iothub_kind_str(t.kind),
			         perch_iothub_reason_str(why));
	}
}

static void test_refused(void **state)
{
	(void)state;
	expect_refused("devices//messages/events/", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_TELEMETRY);
	expect_refused("devices/d/modules//messages/events", PERCH_EINVAL,
	               PERCH_IOTHUB_EMPTY_SEGMENT, PERCH_IOTHUB_MODULE_OUTPUT);
	expect_refused("devices/d/modules/m/inputs//x", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_MODULE_INPUT);
	expect_refused("devices/d/modules/m/inputs/", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_MODULE_INPUT);
	expect_refused("$iothub/methods/POST//?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_METHOD_REQUEST);
	expect_refused("devices/d/messages/events/a+b", PERCH_EINVAL, PERCH_IOTHUB_BAD_CHAR,
	               PERCH_IOTHUB_OTHER);
	expect_refused("devices/#", PERCH_EINVAL, PERCH_IOTHUB_BAD_CHAR, PERCH_IOTHUB_OTHER);
	expect_refused("$iothub/twin/res/20/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_TWIN_RESPONSE);
	expect_refused("$iothub/twin/res/099/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_TWIN_RESPONSE);
	expect_refused("$iothub/methods/res/abc/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_METHOD_RESPONSE);
	expect_refused("$iothub/twin/GET/", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_TWIN_GET);
	expect_refused("$iothub/twin/GET", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_TWIN_GET);
	expect_refused("$iothub/twin/GET/?x=1", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_TWIN_GET);
	expect_refused("$iothub/twin/GET/?$rid=", PERCH_EINVAL, PERCH_IOTHUB_BAD_RID,
	               PERCH_IOTHUB_TWIN_GET);
	expect_refused("$iothub/twin/GET/?$rid=1&$rid=2", PERCH_EINVAL, PERCH_IOTHUB_BAD_QUERY,
	               PERCH_IOTHUB_TWIN_GET);
	expect_refused("$iothub/twin/GET/x?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_TRAILING,
	               PERCH_IOTHUB_TWIN_GET);
	expect_refused("$iothub/twin/PATCH/properties/desired/", PERCH_EINVAL,
	               PERCH_IOTHUB_MISSING_VERSION, PERCH_IOTHUB_TWIN_DESIRED);
	expect_refused("$iothub/twin/PATCH/properties/desired/?$rid=1", PERCH_EINVAL,
	               PERCH_IOTHUB_MISSING_VERSION, PERCH_IOTHUB_TWIN_DESIRED);
	expect_refused("$iothub/twin/PATCH/properties/desired/?$version=x", PERCH_EINVAL,
	               PERCH_IOTHUB_BAD_VERSION, PERCH_IOTHUB_TWIN_DESIRED);
	expect_refused("$iothub/twin/PATCH/properties/desired/?$version=18446744073709551616",
	               PERCH_EINVAL, PERCH_IOTHUB_BAD_VERSION, PERCH_IOTHUB_TWIN_DESIRED);
	expect_refused("$iothub/twin/PATCH/properties/desired/?$version=1&$version=2", PERCH_EINVAL,
	               PERCH_IOTHUB_BAD_QUERY, PERCH_IOTHUB_TWIN_DESIRED);
	expect_refused("$iothub/methods/POST/a/b", PERCH_EINVAL, PERCH_IOTHUB_TRAILING,
	               PERCH_IOTHUB_METHOD_REQUEST);
	expect_refused("$iothub/twin/res/200x", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_TWIN_RESPONSE);
	expect_refused("$iothub/methods/res/200x?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_METHOD_RESPONSE);
	expect_refused("$iothub/methods/res/200/", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_METHOD_RESPONSE);

	static char big[PERCH_IOTHUB_MAX_TOPIC + 2];
	memset(big, 'a', sizeof big - 1);
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_TOO_LONG, PERCH_IOTHUB_OTHER);
	memset(big, 0, sizeof big);
	strcpy(big, "devices/");
	memset(big + 8, 'd', PERCH_IOTHUB_MAX_SEGMENT + 1);
	strcat(big, "/messages/events/");
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_SEGMENT_TOO_LONG, PERCH_IOTHUB_TELEMETRY);
	memset(big, 0, sizeof big);
	strcpy(big, "devices/d/messages/events/");
	memset(big + strlen(big), 'p', PERCH_PROPS_MAX_ENCODED + 1);
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_TOO_LONG, PERCH_IOTHUB_TELEMETRY);
	memset(big, 0, sizeof big);
	strcpy(big, "$iothub/twin/GET/?$rid=");
	memset(big + strlen(big), '1', PERCH_IOTHUB_MAX_RID + 1);
	expect_refused(big, PERCH_EINVAL, PERCH_IOTHUB_BAD_RID, PERCH_IOTHUB_TWIN_GET);
	memset(big, 0, sizeof big);
	strcpy(big, "$iothub/twin/GET/?$rid=1&x=");
	memset(big + strlen(big), '1', PERCH_IOTHUB_MAX_QUERY);
	expect_refused(big, PERCH_EINVAL, PERCH_IOTHUB_BAD_QUERY, PERCH_IOTHUB_TWIN_GET);
	assert_int_equal(perch_iothub_topic_parse((perch_slice){"devices/\0/x", 11},
	                                          &(perch_iothub_topic){0}, NULL),
	                 PERCH_EINVAL);
}

static void expect_built(perch_err err, const char *out, const size_t *n, const char *want)
{
	assert_int_equal(err, PERCH_OK);
	assert_int_equal(*n, strlen(want));
	assert_memory_equal(out, want, *n);
}

static void test_builders(void **state)
{
	(void)state;
	static perch_props props;
	char out[256];
	size_t n = 0;
	perch_props_init(&props);
	assert_int_equal(perch_props_set(&props, sl("$.cdid"), sl("d"), NULL), PERCH_OK);
	assert_int_equal(perch_props_set(&props, sl("$.ct"), sl("application/json"), NULL),
	                 PERCH_OK);
	expect_built(
	        perch_iothub_build_input(out, sizeof out, &n, sl("d"), sl("m"), sl("in1"), &props),
	        out, &n, "devices/d/modules/m/inputs/in1/%24.cdid=d&%24.ct=application%2Fjson");
	expect_built(
	        perch_iothub_build_input(out, sizeof out, &n, sl("d"), sl("m"), sl("in1"), NULL),
	        out, &n, "devices/d/modules/m/inputs/in1/");
	expect_built(perch_iothub_build_c2d(out, sizeof out, &n, sl("d"), &props), out, &n,
	             "devices/d/messages/devicebound/%24.cdid=d&%24.ct=application%2Fjson");
	expect_built(perch_iothub_build_twin_response(out, sizeof out, &n, 200, sl("r1"), false, 0),
	             out, &n, "$iothub/twin/res/200/?$rid=r1");
	expect_built(perch_iothub_build_twin_response(out, sizeof out, &n, 204, sl("r1"), true, 5),
	             out, &n, "$iothub/twin/res/204/?$rid=r1&$version=5");
	expect_built(perch_iothub_build_desired(out, sizeof out, &n, 0), out, &n,
	             "$iothub/twin/PATCH/properties/desired/?$version=0");
	expect_built(perch_iothub_build_desired(out, sizeof out, &n, UINT64_MAX), out, &n,
	             "$iothub/twin/PATCH/properties/desired/?$version=18446744073709551615");
	expect_built(perch_iothub_build_method_request(out, sizeof out, &n, sl("reboot"), sl("7")),
	             out, &n, "$iothub/methods/POST/reboot/?$rid=7");
	expect_built(perch_iothub_build_method_response(out, sizeof out, &n, 404, sl("7")), out, &n,
	             "$iothub/methods/res/404/?$rid=7");

	/* What the builders write, the parser reads back. */
	perch_iothub_topic t;
	assert_int_equal(
	        perch_iothub_build_input(out, sizeof out, &n, sl("d"), sl("m"), sl("in1"), &props),
	        PERCH_OK);
	assert_int_equal(perch_iothub_topic_parse((perch_slice){out, n}, &t, NULL), PERCH_OK);
	assert_int_equal(t.kind, PERCH_IOTHUB_MODULE_INPUT);

	/* Refusals. */
	assert_int_equal(
	        perch_iothub_build_input(out, sizeof out, &n, sl(""), sl("m"), sl("i"), NULL),
	        PERCH_EINVAL);
	assert_int_equal(
	        perch_iothub_build_input(out, sizeof out, &n, sl("d"), sl("m/x"), sl("i"), NULL),
	        PERCH_EINVAL);
	assert_int_equal(
	        perch_iothub_build_input(out, sizeof out, &n, sl("d"), sl("m"), sl("i+"), NULL),
	        PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_c2d(out, sizeof out, &n, sl("d#"), NULL), PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_method_request(out, sizeof out, &n, sl("a?b"), sl("1")),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_method_request(out, sizeof out, &n, sl("a"), sl("1&2")),
	                 PERCH_EINVAL);
	assert_int_equal(
	        perch_iothub_build_twin_response(out, sizeof out, &n, 99, sl("1"), false, 0),
	        PERCH_EINVAL);
	assert_int_equal(
	        perch_iothub_build_twin_response(out, sizeof out, &n, 1000, sl("1"), false, 0),
	        PERCH_EINVAL);
	assert_int_equal(
	        perch_iothub_build_twin_response(out, sizeof out, &n, 200, sl(""), false, 0),
	        PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_method_response(out, sizeof out, &n, 42, sl("1")),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_method_response(out, sizeof out, &n, 200, sl("a/b")),
	                 PERCH_EINVAL);
	static char big[PERCH_IOTHUB_MAX_SEGMENT + 1];
	memset(big, 'x', sizeof big);
	assert_int_equal(
	        perch_iothub_build_c2d(out, sizeof out, &n, (perch_slice){big, sizeof big}, NULL),
	        PERCH_EINVAL);
	/* Every short buffer is refused, never overrun. */
	for (size_t cap = 0; cap < 67; cap++) {
		assert_int_equal(
		        perch_iothub_build_input(out, cap, &n, sl("d"), sl("m"), sl("in1"), &props),
		        PERCH_ETOOBIG);
		if (cap < 29)
			assert_int_equal(perch_iothub_build_twin_response(out, cap, &n, 200,
			                                                  sl("r1"), false, 0),
			                 PERCH_ETOOBIG);
		if (cap < 49)
			assert_int_equal(perch_iothub_build_desired(out, cap, &n, 10),
			                 PERCH_ETOOBIG);
		if (cap < 35) {
			assert_int_equal(perch_iothub_build_method_request(out, cap, &n,
			                                                   sl("reboot"), sl("7")),
			                 PERCH_ETOOBIG);
		}
		if (cap < 31)
			assert_int_equal(perch_iothub_build_c2d(out, cap, &n, sl("d"), NULL),
			                 PERCH_ETOOBIG);
		if (cap < 31)
			assert_int_equal(
			        perch_iothub_build_method_response(out, cap, &n, 200, sl("7")),
			        PERCH_ETOOBIG);
	}
}

static void test_strings(void **state)
{
	(void)state;
	for (int k = 0; k <= PERCH_IOTHUB_KIND_COUNT; k++)
		assert_non_null(perch_iothub_kind_str((perch_iothub_kind)k));
	for (int r = 0; r <= PERCH_IOTHUB_REASON_COUNT; r++)
		assert_non_null(perch_iothub_reason_str((perch_iothub_reason)r));
	assert_string_equal(perch_iothub_kind_str(PERCH_IOTHUB_C2D), "cloud-to-device");
	assert_string_equal(perch_iothub_reason_str(PERCH_IOTHUB_REASON_COUNT), "unknown reason");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_device_topics), cmocka_unit_test(test_twin_method_topics),
	        cmocka_unit_test(test_other),         cmocka_unit_test(test_refused),
	        cmocka_unit_test(test_builders),      cmocka_unit_test(test_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
