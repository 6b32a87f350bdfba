/*
 * iothub_topic_test.c — unit tests for IoT Hub topic classification (every
 * kind, every refusal reason, the OTHER fall-through) and the topic builders,
 * for the `$iothub` topics and the child hub link's `$edgehub` ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
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

/* An empty topic may come as {NULL, 0} (slice.h allows it): classified
 * like "", with no arithmetic on the null pointer (UBSan, make asan). Found
 * by fuzz_hub_identity. */
static void test_null_slice(void **state)
{
	(void)state;
	perch_iothub_topic a, b;
	perch_iothub_reason ra, rb;
	perch_err ea = perch_iothub_topic_parse((perch_slice){NULL, 0}, &a, &ra);
	perch_err eb = perch_iothub_topic_parse(PERCH_SLICE_LIT(""), &b, &rb);
	assert_int_equal(ea, eb);
	assert_int_equal(ra, rb);
	assert_int_equal(a.kind, b.kind);
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

/* --- the link's $edgehub topics ------------------------------------------- */

/* Parses a link topic of kind, checking its device and module ("" for none). */
static perch_iothub_topic link_ok(const char *topic, perch_iothub_kind kind, const char *device,
                                  const char *module)
{
	perch_iothub_topic t = parse_ok(topic, kind);
	expect_eq(t.device, device);
	expect_eq(t.module, module);
	if (module[0] == '\0')
		assert_int_equal(t.module.len, 0);
	return t;
}

static void test_link_topics(void **state)
{
	(void)state;
	/* Every kind, device-level and module form. */
	static const char *const forms[][2] = {{"dev1", ""}, {"dev1/mod1", "mod1"}};
	for (size_t i = 0; i < 2; i++) {
		const char *dm = forms[i][0];
		const char *m = forms[i][1];
		char topic[256];
		snprintf(topic, sizeof topic, "$edgehub/%s/twin/get/?$rid=42", dm);
		perch_iothub_topic t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_GET, "dev1", m);
		expect_eq(t.rid, "42");
		assert_false(t.has_version);
		snprintf(topic, sizeof topic, "$edgehub/%s/twin/get?$rid=a-b", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_GET, "dev1", m);
		expect_eq(t.rid, "a-b");
		snprintf(topic, sizeof topic, "$edgehub/%s/twin/reported/?$rid=7&$version=3&x=y",
		         dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_REPORTED, "dev1", m);
		expect_eq(t.rid, "7");
		assert_true(t.has_version);
		assert_int_equal(t.version, 3);
		snprintf(topic, sizeof topic,
		         "$edgehub/%s/twin/desired/?$version=18446744073709551615", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_DESIRED, "dev1", m);
		assert_true(t.has_version);
		assert_true(t.version == UINT64_MAX);
		snprintf(topic, sizeof topic, "$edgehub/%s/twin/desired?x=1&$version=0", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_DESIRED, "dev1", m);
		assert_int_equal(t.version, 0);
		snprintf(topic, sizeof topic, "$edgehub/%s/twin/res/204/?$rid=9&$version=12", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_RESPONSE, "dev1", m);
		assert_int_equal(t.status, 204);
		expect_eq(t.rid, "9");
		assert_true(t.has_version);
		assert_int_equal(t.version, 12);
		snprintf(topic, sizeof topic, "$edgehub/%s/twin/res/200?$rid=9", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_TWIN_RESPONSE, "dev1", m);
		assert_int_equal(t.status, 200);
		assert_false(t.has_version);
		snprintf(topic, sizeof topic, "$edgehub/%s/methods/post/reboot/?$rid=1f", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_METHOD_REQUEST, "dev1", m);
		expect_eq(t.method, "reboot");
		expect_eq(t.rid, "1f");
		snprintf(topic, sizeof topic, "$edgehub/%s/methods/post/reboot?$rid=1f", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_METHOD_REQUEST, "dev1", m);
		expect_eq(t.method, "reboot");
		snprintf(topic, sizeof topic, "$edgehub/%s/methods/res/500/?$rid=1f", dm);
		t = link_ok(topic, PERCH_IOTHUB_LINK_METHOD_RESPONSE, "dev1", m);
		assert_int_equal(t.status, 500);
		expect_eq(t.rid, "1f");
	}
	/* Ids are raw, as on the wire. */
	(void)link_ok("$edgehub/dev%201/%24edgeAgent/twin/get/?$rid=1", PERCH_IOTHUB_LINK_TWIN_GET,
	              "dev%201", "%24edgeAgent");
	(void)link_ok("$edgehub/d/$edgeHub/methods/res/200/?$rid=1",
	              PERCH_IOTHUB_LINK_METHOD_RESPONSE, "d", "$edgeHub");
}

/* Module ids may be any word, the verbs and "twin" and "methods" among them. */
static void test_link_corners(void **state)
{
	(void)state;
	perch_iothub_topic t;
	(void)link_ok("$edgehub/d/twin/get/?$rid=1", PERCH_IOTHUB_LINK_TWIN_GET, "d", "");
	(void)link_ok("$edgehub/d/twin/twin/get/?$rid=1", PERCH_IOTHUB_LINK_TWIN_GET, "d", "twin");
	(void)link_ok("$edgehub/d/twin/twin/reported?$rid=1", PERCH_IOTHUB_LINK_TWIN_REPORTED, "d",
	              "twin");
	(void)link_ok("$edgehub/d/twin/twin/desired/?$version=1", PERCH_IOTHUB_LINK_TWIN_DESIRED,
	              "d", "twin");
	(void)link_ok("$edgehub/d/twin/twin/res/200/?$rid=1", PERCH_IOTHUB_LINK_TWIN_RESPONSE, "d",
	              "twin");
	t = link_ok("$edgehub/d/twin/methods/post/m/?$rid=1", PERCH_IOTHUB_LINK_METHOD_REQUEST, "d",
	            "twin");
	expect_eq(t.method, "m");
	t = link_ok("$edgehub/d/methods/post/twin/?$rid=1", PERCH_IOTHUB_LINK_METHOD_REQUEST, "d",
	            "");
	expect_eq(t.method, "twin");
	t = link_ok("$edgehub/d/methods/methods/post/get/?$rid=1", PERCH_IOTHUB_LINK_METHOD_REQUEST,
	            "d", "methods");
	expect_eq(t.method, "get");
	(void)link_ok("$edgehub/d/methods/methods/res/200/?$rid=1",
	              PERCH_IOTHUB_LINK_METHOD_RESPONSE, "d", "methods");
	(void)link_ok("$edgehub/d/methods/twin/get/?$rid=1", PERCH_IOTHUB_LINK_TWIN_GET, "d",
	              "methods");
	(void)link_ok("$edgehub/d/methods/res/200/?$rid=1", PERCH_IOTHUB_LINK_METHOD_RESPONSE, "d",
	              "");
	(void)link_ok("$edgehub/d/get/twin/get/?$rid=1", PERCH_IOTHUB_LINK_TWIN_GET, "d", "get");
	(void)link_ok("$edgehub/d/res/twin/res/200/?$rid=1", PERCH_IOTHUB_LINK_TWIN_RESPONSE, "d",
	              "res");
	(void)link_ok("$edgehub/d/res/methods/res/200/?$rid=1", PERCH_IOTHUB_LINK_METHOD_RESPONSE,
	              "d", "res");
	(void)link_ok("$edgehub/d/post/methods/post/x/?$rid=1", PERCH_IOTHUB_LINK_METHOD_REQUEST,
	              "d", "post");
	(void)link_ok("$edgehub/d/desired/twin/desired/?$version=2", PERCH_IOTHUB_LINK_TWIN_DESIRED,
	              "d", "desired");
	/* A device may be called that too. */
	(void)link_ok("$edgehub/twin/twin/get/?$rid=1", PERCH_IOTHUB_LINK_TWIN_GET, "twin", "");
	(void)link_ok("$edgehub/methods/methods/methods/res/200?$rid=1",
	              PERCH_IOTHUB_LINK_METHOD_RESPONSE, "methods", "methods");
	/* A verb-like module followed by no namespace word: not a link topic. */
	const char *other[] = {"$edgehub",
	                       "$edgehub/",
	                       "$edgehub/d",
	                       "$edgehub/d/",
	                       "$edgehub/d/twin",
	                       "$edgehub/d/twin/",
	                       "$edgehub/d/twin/getx/?$rid=1",
	                       "$edgehub/d/twin/GET/?$rid=1",
	                       "$edgehub/d/twin/twin/GET/?$rid=1",
	                       "$edgehub/d/twin/patch/?$rid=1",
	                       "$edgehub/d/twin/twin/twin/get/?$rid=1",
	                       "$edgehub/d/m/get/?$rid=1",
	                       "$edgehub/d/m/twin/x",
	                       "$edgehub/d/m/methods/POST/x/?$rid=1",
	                       "$edgehub/d/m/messages/events",
	                       "$edgehub/d/m/inputs/in1",
	                       "$edgehub/d/methods/put/x",
	                       "$edgehub/d/twin/res",
	                       "$edgehub/d/methods/post",
	                       "$edgehub/d/twin/getX?$rid=1",
	                       "$edgehub/d/twin/desiredX?$version=1",
	                       "$edgehub/d/m/x/twin/get/?$rid=1",
	                       "$EdgeHub/d/twin/get/?$rid=1",
	                       "$edgehubx/d/twin/get/?$rid=1"};
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
		perch_iothub_reason why;
		if (perch_iothub_topic_parse(sl(other[i]), &t, &why) != PERCH_OK ||
		    t.kind != PERCH_IOTHUB_OTHER || t.device.len != 0 || t.module.len != 0)
			fail_msg("%s: not OTHER (%s, %s)", other[i], perch_iothub_kind_str(t.kind),
			         perch_iothub_reason_str(why));
	}
}

static void test_link_refused(void **state)
{
	(void)state;
	expect_refused("$edgehub//twin/get/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub/d//twin/get/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub//m/methods/res/200/?$rid=1", PERCH_EINVAL,
	               PERCH_IOTHUB_EMPTY_SEGMENT, PERCH_IOTHUB_LINK_METHOD_RESPONSE);
	expect_refused("$edgehub/d/methods/post//?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_EMPTY_SEGMENT,
	               PERCH_IOTHUB_LINK_METHOD_REQUEST);
	expect_refused("$edgehub/d/m/methods/post/?$rid=1", PERCH_EINVAL,
	               PERCH_IOTHUB_EMPTY_SEGMENT, PERCH_IOTHUB_LINK_METHOD_REQUEST);
	expect_refused("$edgehub/d/twin/get/?$rid=1&x=+", PERCH_EINVAL, PERCH_IOTHUB_BAD_CHAR,
	               PERCH_IOTHUB_OTHER);
	expect_refused("$edgehub/#", PERCH_EINVAL, PERCH_IOTHUB_BAD_CHAR, PERCH_IOTHUB_OTHER);
	expect_refused("$edgehub/d/twin/res/20/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_LINK_TWIN_RESPONSE);
	expect_refused("$edgehub/d/m/twin/res/099/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_LINK_TWIN_RESPONSE);
	expect_refused("$edgehub/d/twin/res/200x", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_LINK_TWIN_RESPONSE);
	expect_refused("$edgehub/d/methods/res/abc/?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_BAD_STATUS,
	               PERCH_IOTHUB_LINK_METHOD_RESPONSE);
	expect_refused("$edgehub/d/m/methods/res/1000/?$rid=1", PERCH_EINVAL,
	               PERCH_IOTHUB_BAD_STATUS, PERCH_IOTHUB_LINK_METHOD_RESPONSE);
	expect_refused("$edgehub/d/twin/get", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub/d/m/twin/get/", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub/d/twin/reported/?$version=1", PERCH_EINVAL,
	               PERCH_IOTHUB_MISSING_RID, PERCH_IOTHUB_LINK_TWIN_REPORTED);
	expect_refused("$edgehub/d/twin/res/200/?x=1", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_LINK_TWIN_RESPONSE);
	expect_refused("$edgehub/d/methods/post/m/", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_LINK_METHOD_REQUEST);
	expect_refused("$edgehub/d/m/methods/res/200", PERCH_EINVAL, PERCH_IOTHUB_MISSING_RID,
	               PERCH_IOTHUB_LINK_METHOD_RESPONSE);
	expect_refused("$edgehub/d/twin/get/?$rid=", PERCH_EINVAL, PERCH_IOTHUB_BAD_RID,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub/d/twin/get/?$rid=1&$rid=2", PERCH_EINVAL, PERCH_IOTHUB_BAD_QUERY,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub/d/twin/get/x?$rid=1", PERCH_EINVAL, PERCH_IOTHUB_TRAILING,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	expect_refused("$edgehub/d/m/methods/post/a/b", PERCH_EINVAL, PERCH_IOTHUB_TRAILING,
	               PERCH_IOTHUB_LINK_METHOD_REQUEST);
	expect_refused("$edgehub/d/twin/desired/", PERCH_EINVAL, PERCH_IOTHUB_MISSING_VERSION,
	               PERCH_IOTHUB_LINK_TWIN_DESIRED);
	expect_refused("$edgehub/d/m/twin/desired/?$rid=1", PERCH_EINVAL,
	               PERCH_IOTHUB_MISSING_VERSION, PERCH_IOTHUB_LINK_TWIN_DESIRED);
	expect_refused("$edgehub/d/twin/desired/?$version=x", PERCH_EINVAL,
	               PERCH_IOTHUB_BAD_VERSION, PERCH_IOTHUB_LINK_TWIN_DESIRED);
	expect_refused("$edgehub/d/twin/desired/?$version=18446744073709551616", PERCH_EINVAL,
	               PERCH_IOTHUB_BAD_VERSION, PERCH_IOTHUB_LINK_TWIN_DESIRED);
	expect_refused("$edgehub/d/twin/res/200/?$rid=1&$version=-1", PERCH_EINVAL,
	               PERCH_IOTHUB_BAD_VERSION, PERCH_IOTHUB_LINK_TWIN_RESPONSE);

	static char big[PERCH_IOTHUB_MAX_TOPIC + 2];
	strcpy(big, "$edgehub/");
	memset(big + strlen(big), 'd', PERCH_IOTHUB_MAX_SEGMENT + 1);
	strcat(big, "/twin/get/?$rid=1");
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_SEGMENT_TOO_LONG,
	               PERCH_IOTHUB_LINK_TWIN_GET);
	memset(big, 0, sizeof big);
	strcpy(big, "$edgehub/d/");
	memset(big + strlen(big), 'm', PERCH_IOTHUB_MAX_SEGMENT + 1);
	strcat(big, "/methods/res/200/?$rid=1");
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_SEGMENT_TOO_LONG,
	               PERCH_IOTHUB_LINK_METHOD_RESPONSE);
	memset(big, 0, sizeof big);
	strcpy(big, "$edgehub/d/methods/post/");
	memset(big + strlen(big), 'n', PERCH_IOTHUB_MAX_SEGMENT + 1);
	strcat(big, "/?$rid=1");
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_SEGMENT_TOO_LONG,
	               PERCH_IOTHUB_LINK_METHOD_REQUEST);
	memset(big, 0, sizeof big);
	strcpy(big, "$edgehub/d/m/twin/reported/?$rid=");
	memset(big + strlen(big), '1', PERCH_IOTHUB_MAX_RID + 1);
	expect_refused(big, PERCH_EINVAL, PERCH_IOTHUB_BAD_RID, PERCH_IOTHUB_LINK_TWIN_REPORTED);
	memset(big, 0, sizeof big);
	strcpy(big, "$edgehub/d/twin/get/?$rid=1&x=");
	memset(big + strlen(big), '1', PERCH_IOTHUB_MAX_QUERY);
	expect_refused(big, PERCH_EINVAL, PERCH_IOTHUB_BAD_QUERY, PERCH_IOTHUB_LINK_TWIN_GET);
	memset(big, 'a', sizeof big - 1);
	memcpy(big, "$edgehub/", 9);
	big[sizeof big - 1] = '\0';
	expect_refused(big, PERCH_ETOOBIG, PERCH_IOTHUB_TOO_LONG, PERCH_IOTHUB_OTHER);
}

/* Builds a link topic, checks its text, and that it parses back the same. */
static void link_round_trip(perch_iothub_kind kind, const char *device, const char *module,
                            const char *method, unsigned status, const char *rid, bool has_version,
                            uint64_t version, const char *want)
{
	char out[256];
	size_t n = 0;
	perch_slice mod = module != NULL ? sl(module) : (perch_slice){NULL, 0};
	expect_built(perch_iothub_build_link(out, sizeof out, &n, kind, sl(device), mod, sl(method),
	                                     status, sl(rid), has_version, version),
	             out, &n, want);
	perch_iothub_topic t;
	perch_iothub_reason why;
	assert_int_equal(perch_iothub_topic_parse((perch_slice){out, n}, &t, &why), PERCH_OK);
	if (t.kind != kind)
		fail_msg("%s: parsed as %s", want, perch_iothub_kind_str(t.kind));
	expect_eq(t.device, device);
	expect_eq(t.module, module != NULL ? module : "");
	if (kind == PERCH_IOTHUB_LINK_METHOD_REQUEST)
		expect_eq(t.method, method);
	else
		assert_int_equal(t.method.len, 0);
	if (kind == PERCH_IOTHUB_LINK_TWIN_DESIRED) {
		assert_int_equal(t.rid.len, 0);
		assert_true(t.has_version);
		assert_true(t.version == version);
	} else {
		expect_eq(t.rid, rid);
	}
	if (kind == PERCH_IOTHUB_LINK_TWIN_RESPONSE) {
		assert_int_equal(t.has_version, has_version);
		if (has_version)
			assert_true(t.version == version);
	}
	if (kind == PERCH_IOTHUB_LINK_TWIN_RESPONSE || kind == PERCH_IOTHUB_LINK_METHOD_RESPONSE)
		assert_int_equal(t.status, status);
	else
		assert_int_equal(t.status, 0);
}

static void test_link_builders(void **state)
{
	(void)state;
	/* Every kind, device-level (empty and NULL module) and module form; the
	 * arguments a kind does not use are ignored, whatever they hold. */
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_GET, "d", NULL, "x/y", 0, "r1", true, 9,
	                "$edgehub/d/twin/get/?$rid=r1");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_GET, "d", "", "", 1, "r1", false, 0,
	                "$edgehub/d/twin/get/?$rid=r1");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_GET, "d", "m", "", 0, "r1", false, 0,
	                "$edgehub/d/m/twin/get/?$rid=r1");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_REPORTED, "d", NULL, "", 0, "r2", true, 9,
	                "$edgehub/d/twin/reported/?$rid=r2");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_REPORTED, "d", "m", "", 0, "r2", false, 0,
	                "$edgehub/d/m/twin/reported/?$rid=r2");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_DESIRED, "d", NULL, "", 0, "", false, 0,
	                "$edgehub/d/twin/desired/?$version=0");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_DESIRED, "d", "m", "", 0, "x&y", false, UINT64_MAX,
	                "$edgehub/d/m/twin/desired/?$version=18446744073709551615");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_RESPONSE, "d", NULL, "", 200, "r3", false, 7,
	                "$edgehub/d/twin/res/200/?$rid=r3");
	link_round_trip(PERCH_IOTHUB_LINK_TWIN_RESPONSE, "d", "m", "", 204, "r3", true, 7,
	                "$edgehub/d/m/twin/res/204/?$rid=r3&$version=7");
	link_round_trip(PERCH_IOTHUB_LINK_METHOD_REQUEST, "d", NULL, "reboot", 0, "r4", false, 0,
	                "$edgehub/d/methods/post/reboot/?$rid=r4");
	link_round_trip(PERCH_IOTHUB_LINK_METHOD_REQUEST, "d", "m", "reboot", 0, "r4", false, 0,
	                "$edgehub/d/m/methods/post/reboot/?$rid=r4");
	link_round_trip(PERCH_IOTHUB_LINK_METHOD_RESPONSE, "d", NULL, "", 404, "r5", false, 0,
	                "$edgehub/d/methods/res/404/?$rid=r5");
	link_round_trip(PERCH_IOTHUB_LINK_METHOD_RESPONSE, "d", "m", "", 999, "r5", false, 0,
	                "$edgehub/d/m/methods/res/999/?$rid=r5");
	/* Modules named like the words of the namespace come back as modules. */
	static const char *const words[] = {"twin",    "methods", "get", "reported",
	                                    "desired", "post",    "res", "$edgeHub"};
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
		char want[128];
		snprintf(want, sizeof want, "$edgehub/twin/%s/twin/get/?$rid=1", words[i]);
		link_round_trip(PERCH_IOTHUB_LINK_TWIN_GET, "twin", words[i], "", 0, "1", false, 0,
		                want);
		snprintf(want, sizeof want, "$edgehub/methods/%s/methods/post/%s/?$rid=1", words[i],
		         words[i]);
		link_round_trip(PERCH_IOTHUB_LINK_METHOD_REQUEST, "methods", words[i], words[i], 0,
		                "1", false, 0, want);
		snprintf(want, sizeof want, "$edgehub/d/%s/methods/res/200/?$rid=1", words[i]);
		link_round_trip(PERCH_IOTHUB_LINK_METHOD_RESPONSE, "d", words[i], "", 200, "1",
		                false, 0, want);
	}

	/* Refusals. */
	char out[256];
	size_t n = 0;
	const perch_slice none = {NULL, 0};
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_TWIN_GET,
	                                         sl("d"), none, none, 0, sl("1"), false, 0),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_OTHER, sl("d"),
	                                         none, none, 0, sl("1"), false, 0),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_KIND_COUNT,
	                                         sl("d"), none, none, 0, sl("1"), false, 0),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_LINK_TWIN_GET,
	                                         sl(""), none, none, 0, sl("1"), false, 0),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_LINK_TWIN_GET,
	                                         none, sl("m"), none, 0, sl("1"), false, 0),
	                 PERCH_EINVAL);
	static const char *const bad_ids[] = {"a/b", "a+", "#", "a?b"};
	for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
		perch_slice b = sl(bad_ids[i]);
		assert_int_equal(perch_iothub_build_link(out, sizeof out, &n,
		                                         PERCH_IOTHUB_LINK_TWIN_GET, b, none, none,
		                                         0, sl("1"), false, 0),
		                 PERCH_EINVAL);
		assert_int_equal(perch_iothub_build_link(out, sizeof out, &n,
		                                         PERCH_IOTHUB_LINK_TWIN_DESIRED, sl("d"), b,
		                                         none, 0, none, false, 0),
		                 PERCH_EINVAL);
		assert_int_equal(perch_iothub_build_link(out, sizeof out, &n,
		                                         PERCH_IOTHUB_LINK_METHOD_REQUEST, sl("d"),
		                                         none, b, 0, sl("1"), false, 0),
		                 PERCH_EINVAL);
	}
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_LINK_TWIN_GET,
	                                         (perch_slice){"d\0", 2}, none, none, 0, sl("1"),
	                                         false, 0),
	                 PERCH_EINVAL);
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n,
	                                         PERCH_IOTHUB_LINK_METHOD_REQUEST, sl("d"), none,
	                                         sl(""), 0, sl("1"), false, 0),
	                 PERCH_EINVAL);
	static const char *const bad_rids[] = {"", "1&2", "a/b", "+", "#"};
	for (size_t i = 0; i < sizeof bad_rids / sizeof bad_rids[0]; i++) {
		for (int k = PERCH_IOTHUB_LINK_TWIN_GET; k <= PERCH_IOTHUB_LINK_METHOD_RESPONSE;
		     k++) {
			if (k == PERCH_IOTHUB_LINK_TWIN_DESIRED)
				continue;
			assert_int_equal(perch_iothub_build_link(
			                         out, sizeof out, &n, (perch_iothub_kind)k, sl("d"),
			                         sl("m"), sl("x"), 200, sl(bad_rids[i]), false, 0),
			                 PERCH_EINVAL);
		}
	}
	static const unsigned bad_status[] = {0, 99, 1000};
	for (size_t i = 0; i < sizeof bad_status / sizeof bad_status[0]; i++) {
		assert_int_equal(perch_iothub_build_link(
		                         out, sizeof out, &n, PERCH_IOTHUB_LINK_TWIN_RESPONSE,
		                         sl("d"), none, none, bad_status[i], sl("1"), false, 0),
		                 PERCH_EINVAL);
		assert_int_equal(perch_iothub_build_link(
		                         out, sizeof out, &n, PERCH_IOTHUB_LINK_METHOD_RESPONSE,
		                         sl("d"), sl("m"), none, bad_status[i], sl("1"), false, 0),
		                 PERCH_EINVAL);
	}
	static char big[PERCH_IOTHUB_MAX_SEGMENT + 1];
	memset(big, 'x', sizeof big);
	assert_int_equal(perch_iothub_build_link(out, sizeof out, &n, PERCH_IOTHUB_LINK_TWIN_GET,
	                                         sl("d"), (perch_slice){big, sizeof big}, none, 0,
	                                         sl("1"), false, 0),
	                 PERCH_EINVAL);
	/* Every short buffer is refused, never overrun. */
	const char *want = "$edgehub/d/m/twin/res/204/?$rid=r3&$version=7";
	for (size_t cap = 0; cap < strlen(want); cap++) {
		memset(out, '.', sizeof out);
		assert_int_equal(perch_iothub_build_link(out, cap, &n,
		                                         PERCH_IOTHUB_LINK_TWIN_RESPONSE, sl("d"),
		                                         sl("m"), none, 204, sl("r3"), true, 7),
		                 PERCH_ETOOBIG);
		assert_int_equal(out[cap], '.');
	}
	want = "$edgehub/d/m/methods/post/reboot/?$rid=r4";
	for (size_t cap = 0; cap < strlen(want); cap++)
		assert_int_equal(perch_iothub_build_link(
		                         out, cap, &n, PERCH_IOTHUB_LINK_METHOD_REQUEST, sl("d"),
		                         sl("m"), sl("reboot"), 0, sl("r4"), false, 0),
		                 PERCH_ETOOBIG);
	want = "$edgehub/d/twin/desired/?$version=10";
	for (size_t cap = 0; cap < strlen(want); cap++)
		assert_int_equal(perch_iothub_build_link(out, cap, &n,
		                                         PERCH_IOTHUB_LINK_TWIN_DESIRED, sl("d"),
		                                         none, none, 0, none, false, 10),
		                 PERCH_ETOOBIG);
	assert_int_equal(perch_iothub_build_link(out, strlen(want), &n,
	                                         PERCH_IOTHUB_LINK_TWIN_DESIRED, sl("d"), none,
	                                         none, 0, none, false, 10),
	                 PERCH_OK);
	assert_int_equal(n, strlen(want));
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
	assert_string_equal(perch_iothub_kind_str(PERCH_IOTHUB_LINK_TWIN_GET), "link twin get");
	assert_string_equal(perch_iothub_kind_str(PERCH_IOTHUB_LINK_METHOD_RESPONSE),
	                    "link method response");
	assert_string_equal(perch_iothub_kind_str(PERCH_IOTHUB_KIND_COUNT), "unknown kind");
	for (int k = 0; k <= PERCH_IOTHUB_KIND_COUNT; k++) {
		bool link =
		        k >= PERCH_IOTHUB_LINK_TWIN_GET && k <= PERCH_IOTHUB_LINK_METHOD_RESPONSE;
		assert_int_equal(perch_iothub_is_link((perch_iothub_kind)k), link);
		if (k < PERCH_IOTHUB_KIND_COUNT)
			assert_string_not_equal(perch_iothub_kind_str((perch_iothub_kind)k),
			                        "unknown kind");
	}
	/* The existing kinds keep their values. */
	assert_int_equal(PERCH_IOTHUB_METHOD_RESPONSE, 10);
	assert_int_equal(PERCH_IOTHUB_LINK_TWIN_GET, 11);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_device_topics), cmocka_unit_test(test_twin_method_topics),
	        cmocka_unit_test(test_other),         cmocka_unit_test(test_refused),
	        cmocka_unit_test(test_null_slice),    cmocka_unit_test(test_builders),
	        cmocka_unit_test(test_link_topics),   cmocka_unit_test(test_link_corners),
	        cmocka_unit_test(test_link_refused),  cmocka_unit_test(test_link_builders),
	        cmocka_unit_test(test_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
