/*
 * props_test.c — unit tests for property bags and URL encoding: SDK-shaped
 * bags, every refusal reason, set/remove bookkeeping, encode round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "perch/props.h"

static perch_props bag; /* big: kept off the stack */

static perch_slice sl(const char *s)
{
	return perch_slice_cstr(s);
}

static void assert_value(const perch_props *p, const char *key, const char *want)
{
	perch_slice v;
	assert_true(perch_props_get(p, sl(key), &v));
	assert_int_equal(v.len, strlen(want));
	assert_memory_equal(v.ptr, want, v.len);
}

static void test_decode_encode(void **state)
{
	(void)state;
	char out[64];
	size_t n, bad = 99;
	assert_int_equal(perch_props_url_decode(sl("a%20b+c%2Fd%2a"), out, sizeof out, &n, &bad),
	                 PERCH_OK);
	assert_int_equal(n, 8);
	assert_memory_equal(out, "a b+c/d*", 8);
	assert_int_equal(perch_props_url_decode(sl("ab%2"), out, sizeof out, &n, &bad),
	                 PERCH_EINVAL);
	assert_int_equal(bad, 2);
	assert_int_equal(perch_props_url_decode(sl("%zz"), out, sizeof out, &n, NULL),
	                 PERCH_EINVAL);
	assert_int_equal(perch_props_url_decode(sl("%4"), out, sizeof out, &n, &bad), PERCH_EINVAL);
	assert_int_equal(perch_props_url_decode(sl("abc"), out, 2, &n, NULL), PERCH_ETOOBIG);

	assert_int_equal(perch_props_url_encode(sl("$.ct a/b*~_-."), out, sizeof out, &n),
	                 PERCH_OK);
	assert_int_equal(n, strlen("%24.ct%20a%2Fb%2A~_-."));
	assert_memory_equal(out, "%24.ct%20a%2Fb%2A~_-.", n);
	assert_int_equal(perch_props_url_encode_js(sl("d*x!(y)'"), out, sizeof out, &n), PERCH_OK);
	assert_memory_equal(out, "d%2ax%21%28y%29%27", n);
	assert_int_equal(perch_props_url_encode(sl("\xc3\xa9"), out, sizeof out, &n), PERCH_OK);
	assert_memory_equal(out, "%C3%A9", n);
	assert_int_equal(perch_props_url_encode(sl("ab/"), out, 4, &n), PERCH_ETOOBIG);
	assert_int_equal(perch_props_url_encode(sl("abc"), out, 2, &n), PERCH_ETOOBIG);
}

static void test_parse_sdk_bags(void **state)
{
	(void)state;
	perch_props_fail fail;
	/* Node (querystring + encodeURIComponent) and IoT Hub's own C2D form. */
	const char *node =
	        "%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=true&x=1+1";
	assert_int_equal(perch_props_parse(sl(node), &bag, &fail), PERCH_OK);
	assert_int_equal(perch_props_count(&bag), 5);
	assert_value(&bag, "$.mid", "m1");
	assert_value(&bag, "$.ct", "application/json");
	assert_value(&bag, "temp alert", "true");
	assert_value(&bag, "x", "1+1");
	/* Raw `$.` keys (some clients do not encode `$`) are the same keys. */
	assert_int_equal(perch_props_parse(sl("$.on=out1&$.ct=application%2Fjson"), &bag, &fail),
	                 PERCH_OK);
	assert_value(&bag, "$.on", "out1");
	/* Empty segments, a key without a value, an empty bag. */
	assert_int_equal(perch_props_parse(sl("&a=1&&flag&b=&"), &bag, &fail), PERCH_OK);
	assert_int_equal(perch_props_count(&bag), 3);
	assert_value(&bag, "flag", "");
	assert_value(&bag, "b", "");
	assert_int_equal(perch_props_parse(sl(""), &bag, NULL), PERCH_OK);
	assert_int_equal(perch_props_count(&bag), 0);
	/* `=` inside a value. */
	assert_int_equal(perch_props_parse(sl("k=a=b"), &bag, NULL), PERCH_OK);
	assert_value(&bag, "k", "a=b");
	perch_slice k, v;
	perch_props_at(&bag, 0, &k, &v);
	assert_true(perch_slice_eq_cstr(k, "k"));
	perch_props_at(&bag, 0, NULL, NULL);
	assert_false(perch_props_get(&bag, sl("nope"), NULL));
}

static void expect_fail(const char *in, perch_err err, perch_props_reason reason, size_t offset)
{
	perch_props_fail fail;
	assert_int_equal(perch_props_parse(sl(in), &bag, &fail), err);
	assert_int_equal(fail.reason, reason);
	assert_int_equal(fail.offset, offset);
	assert_int_equal(perch_props_count(&bag), 0);
	assert_int_equal(perch_props_parse(sl(in), &bag, NULL), err);
}

static void test_parse_errors(void **state)
{
	(void)state;
	expect_fail("a=1&b=%G1", PERCH_EINVAL, PERCH_PROPS_BAD_ESCAPE, 6);
	expect_fail("a%=1", PERCH_EINVAL, PERCH_PROPS_BAD_ESCAPE, 1);
	expect_fail("a=%00", PERCH_EINVAL, PERCH_PROPS_BAD_CHAR, 2);
	expect_fail("a\tb=1", PERCH_EINVAL, PERCH_PROPS_BAD_CHAR, 0);
	expect_fail("a=%7F", PERCH_EINVAL, PERCH_PROPS_BAD_CHAR, 2);
	expect_fail("a=%C3%28", PERCH_EINVAL, PERCH_PROPS_BAD_UTF8, 2);
	expect_fail("a=%ED%A0%80", PERCH_EINVAL, PERCH_PROPS_BAD_UTF8, 2);    /* a surrogate */
	expect_fail("a=%C0%80", PERCH_EINVAL, PERCH_PROPS_BAD_UTF8, 2);       /* overlong */
	expect_fail("a=%F4%90%80%80", PERCH_EINVAL, PERCH_PROPS_BAD_UTF8, 2); /* > U+10FFFF */
	expect_fail("a=%E2%82", PERCH_EINVAL, PERCH_PROPS_BAD_UTF8, 2);       /* truncated */
	expect_fail("a=%FF", PERCH_EINVAL, PERCH_PROPS_BAD_UTF8, 2);
	expect_fail("a=1&=2", PERCH_EINVAL, PERCH_PROPS_EMPTY_KEY, 4);
	expect_fail("a=1&%24.mid=2&$.mid=3", PERCH_EEXIST, PERCH_PROPS_DUPLICATE, 14);

	static char big[PERCH_PROPS_MAX_ENCODED + 2];
	memset(big, 'k', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	expect_fail(big, PERCH_ETOOBIG, PERCH_PROPS_TOO_LONG, PERCH_PROPS_MAX_ENCODED);
	memset(big, 0, sizeof big);
	memset(big, 'k', PERCH_PROPS_MAX_KEY + 1);
	expect_fail(big, PERCH_ETOOBIG, PERCH_PROPS_KEY_TOO_LONG, 0);
	memset(big, 0, sizeof big);
	big[0] = 'k';
	big[1] = '=';
	memset(big + 2, 'v', PERCH_PROPS_MAX_VALUE + 1);
	expect_fail(big, PERCH_ETOOBIG, PERCH_PROPS_VALUE_TOO_LONG, 2);
	/* Exactly at the limits is fine. */
	big[2 + PERCH_PROPS_MAX_VALUE] = '\0';
	assert_int_equal(perch_props_parse(sl(big), &bag, NULL), PERCH_OK);
	memset(big, 0, sizeof big);
	size_t n = 0;
	for (int i = 0; i <= PERCH_PROPS_MAX_PAIRS; i++)
		n += (size_t)snprintf(big + n, sizeof big - n, "%sk%d=1", i ? "&" : "", i);
	expect_fail(big, PERCH_ETOOBIG, PERCH_PROPS_TOO_MANY, n - 5);
}

static void test_set_remove(void **state)
{
	(void)state;
	perch_props_fail fail;
	perch_props_init(&bag);
	assert_int_equal(perch_props_set(&bag, sl("$.mid"), sl("1"), &fail), PERCH_OK);
	assert_int_equal(perch_props_set(&bag, sl("$.cdid"), sl("spoofed"), &fail), PERCH_OK);
	assert_int_equal(perch_props_set(&bag, sl("app"), sl("x y"), &fail), PERCH_OK);
	/* The hub stamps $.cdid: replaced in place, others keep their bytes. */
	assert_int_equal(perch_props_set(&bag, sl("$.cdid"), sl("dev-1"), &fail), PERCH_OK);
	assert_int_equal(perch_props_count(&bag), 3);
	assert_value(&bag, "$.cdid", "dev-1");
	assert_value(&bag, "app", "x y");
	perch_slice k;
	perch_props_at(&bag, 1, &k, NULL);
	assert_true(perch_slice_eq_cstr(k, "$.cdid"));
	char out[256];
	size_t n;
	assert_int_equal(perch_props_encode(&bag, out, sizeof out, &n), PERCH_OK);
	assert_int_equal(n, strlen("%24.mid=1&%24.cdid=dev-1&app=x%20y"));
	assert_memory_equal(out, "%24.mid=1&%24.cdid=dev-1&app=x%20y", n);
	for (size_t cap = 0; cap < n; cap++)
		assert_int_equal(perch_props_encode(&bag, out, cap, &n), PERCH_ETOOBIG);
	/* A copy stays valid on its own (offsets, not pointers). */
	static perch_props copy;
	copy = bag;
	memset(&bag, 0xAA, sizeof bag);
	assert_value(&copy, "app", "x y");
	bag = copy;
	assert_true(perch_props_remove(&bag, sl("$.mid")));
	assert_false(perch_props_remove(&bag, sl("$.mid")));
	assert_value(&bag, "$.cdid", "dev-1");
	assert_value(&bag, "app", "x y");
	assert_int_equal(bag.used, strlen("$.cdiddev-1appx y"));

	/* Refusals leave the bag as it was. */
	assert_int_equal(perch_props_set(&bag, sl(""), sl("v"), &fail), PERCH_EINVAL);
	assert_int_equal(fail.reason, PERCH_PROPS_EMPTY_KEY);
	assert_int_equal(perch_props_set(&bag, sl("k"), sl("a\nb"), &fail), PERCH_EINVAL);
	assert_int_equal(fail.reason, PERCH_PROPS_BAD_CHAR);
	assert_int_equal(perch_props_set(&bag, sl("k"), sl("\xff"), &fail), PERCH_EINVAL);
	assert_int_equal(fail.reason, PERCH_PROPS_BAD_UTF8);
	static char big[PERCH_PROPS_MAX_VALUE + 1];
	memset(big, 'v', sizeof big);
	assert_int_equal(perch_props_set(&bag, sl("k"), (perch_slice){big, sizeof big}, &fail),
	                 PERCH_ETOOBIG);
	assert_int_equal(fail.reason, PERCH_PROPS_VALUE_TOO_LONG);
	assert_int_equal(
	        perch_props_set(&bag, (perch_slice){big, PERCH_PROPS_MAX_KEY + 1}, sl("v"), &fail),
	        PERCH_ETOOBIG);
	assert_int_equal(fail.reason, PERCH_PROPS_KEY_TOO_LONG);
	assert_int_equal(perch_props_count(&bag), 2);
	/* Buffer full, then pair count full. */
	char key[16];
	perch_props_init(&bag);
	perch_err err = PERCH_OK;
	int i;
	for (i = 0; err == PERCH_OK; i++) {
		snprintf(key, sizeof key, "k%d", i);
		err = perch_props_set(&bag, sl(key), (perch_slice){big, 4000}, &fail);
	}
	assert_int_equal(err, PERCH_ETOOBIG);
	assert_int_equal(fail.reason, PERCH_PROPS_TOO_LONG);
	perch_props_init(&bag);
	for (i = 0; i < PERCH_PROPS_MAX_PAIRS; i++) {
		snprintf(key, sizeof key, "k%d", i);
		assert_int_equal(perch_props_set(&bag, sl(key), sl("v"), NULL), PERCH_OK);
	}
	assert_int_equal(perch_props_set(&bag, sl("one-more"), sl("v"), &fail), PERCH_ETOOBIG);
	assert_int_equal(fail.reason, PERCH_PROPS_TOO_MANY);
	assert_int_equal(perch_props_set(&bag, sl("k3"), sl("replaced"), &fail), PERCH_OK);
	assert_value(&bag, "k3", "replaced");
}

/* Every IoT Hub system property and two application properties, set
 * decoded, come out encoded exactly so (what the Azure IoT SDKs send), and
 * that text parses back to the same pairs, each with its kind. */
static void test_every_system_property(void **state)
{
	(void)state;
	static const struct {
		const char *key, *value;
		perch_props_sys kind;
		const char *encoded;
	} pairs[] = {
	        {"$.mid", "m 1&2", PERCH_PROPS_SYS_MID, "%24.mid=m%201%262"},
	        {"$.cid", "c=1", PERCH_PROPS_SYS_CID, "%24.cid=c%3D1"},
	        {"$.on", "out/1", PERCH_PROPS_SYS_ON, "%24.on=out%2F1"},
	        {"$.ct", "application/json", PERCH_PROPS_SYS_CT, "%24.ct=application%2Fjson"},
	        {"$.ce", "utf-8", PERCH_PROPS_SYS_CE, "%24.ce=utf-8"},
	        {"$.cdid", "dev-1", PERCH_PROPS_SYS_CDID, "%24.cdid=dev-1"},
	        {"$.cmid", "$edgeHub", PERCH_PROPS_SYS_CMID, "%24.cmid=%24edgeHub"},
	        {"$.to", "/devices/d/messages/deviceBound", PERCH_PROPS_SYS_TO,
	         "%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound"},
	        {"$.uid", "user@x", PERCH_PROPS_SYS_UID, "%24.uid=user%40x"},
	        {"$.exp", "2030-01-01T00:00:00Z", PERCH_PROPS_SYS_EXP,
	         "%24.exp=2030-01-01T00%3A00%3A00Z"},
	        {"temp alert", "a+b", PERCH_PROPS_SYS_NONE, "temp%20alert=a%2Bb"},
	        {"caf\xc3\xa9", "?#%", PERCH_PROPS_SYS_NONE, "caf%C3%A9=%3F%23%25"},
	};
	const size_t n = sizeof pairs / sizeof pairs[0];
	char want[1024] = "", out[1024];
	size_t len;
	perch_props_init(&bag);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(perch_props_set(&bag, sl(pairs[i].key), sl(pairs[i].value), NULL),
		                 PERCH_OK);
		if (i > 0)
			strcat(want, "&");
		strcat(want, pairs[i].encoded);
	}
	assert_int_equal(perch_props_encode(&bag, out, sizeof out, &len), PERCH_OK);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(out, want, len);
	static perch_props again;
	assert_int_equal(perch_props_parse((perch_slice){out, len}, &again, NULL), PERCH_OK);
	assert_int_equal(perch_props_count(&again), n);
	for (size_t i = 0; i < n; i++) {
		perch_slice k, v;
		perch_props_at(&again, i, &k, &v);
		assert_true(perch_slice_eq_cstr(k, pairs[i].key));
		assert_true(perch_slice_eq_cstr(v, pairs[i].value));
		assert_int_equal(perch_props_system_kind(k), pairs[i].kind);
	}
}

static void test_round_trip(void **state)
{
	(void)state;
	static perch_props again;
	static char out[3 * PERCH_PROPS_MAX_ENCODED];
	size_t n;
	assert_int_equal(perch_props_parse(sl("%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&"
	                                      "iothub-ack=full&%24.exp=2024-01-01T00%3A00%3A00Z&"
	                                      "caf%C3%A9=%E2%82%AC%F0%9F%98%80"),
	                                   &bag, NULL),
	                 PERCH_OK);
	assert_value(&bag, "café", "€😀");
	assert_int_equal(perch_props_encode(&bag, out, sizeof out, &n), PERCH_OK);
	assert_int_equal(perch_props_parse((perch_slice){out, n}, &again, NULL), PERCH_OK);
	assert_int_equal(perch_props_count(&again), perch_props_count(&bag));
	for (size_t i = 0; i < perch_props_count(&bag); i++) {
		perch_slice k1, v1, k2, v2;
		perch_props_at(&bag, i, &k1, &v1);
		perch_props_at(&again, i, &k2, &v2);
		assert_true(perch_slice_eq(k1, k2));
		assert_true(perch_slice_eq(v1, v2));
	}
}

static void test_system_kind(void **state)
{
	(void)state;
	assert_int_equal(perch_props_system_kind(sl("$.mid")), PERCH_PROPS_SYS_MID);
	assert_int_equal(perch_props_system_kind(sl("$.cid")), PERCH_PROPS_SYS_CID);
	assert_int_equal(perch_props_system_kind(sl("$.on")), PERCH_PROPS_SYS_ON);
	assert_int_equal(perch_props_system_kind(sl("$.ct")), PERCH_PROPS_SYS_CT);
	assert_int_equal(perch_props_system_kind(sl("$.ce")), PERCH_PROPS_SYS_CE);
	assert_int_equal(perch_props_system_kind(sl("$.cdid")), PERCH_PROPS_SYS_CDID);
	assert_int_equal(perch_props_system_kind(sl("$.cmid")), PERCH_PROPS_SYS_CMID);
	assert_int_equal(perch_props_system_kind(sl("$.to")), PERCH_PROPS_SYS_TO);
	assert_int_equal(perch_props_system_kind(sl("$.uid")), PERCH_PROPS_SYS_UID);
	assert_int_equal(perch_props_system_kind(sl("$.exp")), PERCH_PROPS_SYS_EXP);
	assert_int_equal(perch_props_system_kind(sl("$.ifid")), PERCH_PROPS_SYS_OTHER);
	assert_int_equal(perch_props_system_kind(sl("mid")), PERCH_PROPS_SYS_NONE);
	assert_int_equal(perch_props_system_kind(sl("$mid")), PERCH_PROPS_SYS_NONE);
	for (int r = 0; r <= PERCH_PROPS_REASON_COUNT; r++)
		assert_non_null(perch_props_reason_str((perch_props_reason)r));
	assert_string_equal(perch_props_reason_str(PERCH_PROPS_DUPLICATE), "duplicate key");
	assert_string_equal(perch_props_reason_str(PERCH_PROPS_REASON_COUNT), "unknown reason");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_decode_encode), cmocka_unit_test(test_parse_sdk_bags),
	        cmocka_unit_test(test_parse_errors),  cmocka_unit_test(test_set_remove),
	        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_every_system_property),
	        cmocka_unit_test(test_system_kind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
