/*
 * connstr_test.c — unit tests for connection strings: the shapes IoT Hub and
 * IoT Edge hand out, every refusal reason, and write/parse round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/connstr.h"

#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static perch_slice sl(const char *s)
{
	return perch_slice_cstr(s);
}

static void test_parse_good(void **state)
{
	(void)state;
	perch_connstr cs;
	perch_connstr_fail fail;
	assert_int_equal(
	        perch_connstr_parse(sl("HostName=hub.example;DeviceId=dev1;ModuleId=$edgeHub;"
	                               "SharedAccessKey=" KEY ";GatewayHostName=perch-hub;"),
	                            &cs, &fail),
	        PERCH_OK);
	assert_true(perch_slice_eq_cstr(cs.host_name, "hub.example"));
	assert_true(perch_slice_eq_cstr(cs.device_id, "dev1"));
	assert_true(perch_slice_eq_cstr(cs.module_id, "$edgeHub"));
	assert_true(perch_slice_eq_cstr(cs.shared_access_key, KEY));
	assert_true(perch_slice_eq_cstr(cs.gateway_host_name, "perch-hub"));
	assert_false(cs.x509);
	/* Any order; a SAS token value with `=` and `&`. */
	assert_int_equal(
	        perch_connstr_parse(sl("SharedAccessSignature=SharedAccessSignature sr=a&sig=b"
	                               "%3D&se=1;DeviceId=d;HostName=h"),
	                            &cs, &fail),
	        PERCH_OK);
	assert_true(perch_slice_eq_cstr(cs.shared_access_signature,
	                                "SharedAccessSignature sr=a&sig=b%3D&se=1"));
	assert_int_equal(perch_connstr_parse(sl("HostName=h;DeviceId=d;x509=True"), &cs, NULL),
	                 PERCH_OK);
	assert_true(cs.x509);
	/* A service (policy) connection string has no DeviceId. */
	assert_int_equal(perch_connstr_parse(sl("HostName=h;SharedAccessKeyName=iothubowner;"
	                                        "SharedAccessKey=" KEY),
	                                     &cs, NULL),
	                 PERCH_OK);
	assert_true(perch_slice_eq_cstr(cs.shared_access_key_name, "iothubowner"));
}

static void expect_fail(const char *s, perch_err err, perch_connstr_reason reason, size_t offset,
                        const char *key)
{
	perch_connstr cs;
	perch_connstr_fail fail;
	assert_int_equal(perch_connstr_parse(sl(s), &cs, &fail), err);
	if (fail.reason != reason)
		fail_msg("%s: %s, want %s", s, perch_connstr_reason_str(fail.reason),
		         perch_connstr_reason_str(reason));
	assert_int_equal(fail.offset, offset);
	if (!perch_slice_eq_cstr(fail.key, key))
		fail_msg("%s: key '%.*s', want '%s'", s, (int)fail.key.len,
		         fail.key.ptr ? fail.key.ptr : "", key);
	assert_int_equal(cs.host_name.len, 0);
	assert_int_equal(perch_connstr_parse(sl(s), &cs, NULL), err);
}

static void test_parse_errors(void **state)
{
	(void)state;
	expect_fail("HostName=h;;DeviceId=d", PERCH_EINVAL, PERCH_CONNSTR_EMPTY_FIELD, 11, "");
	expect_fail(";HostName=h", PERCH_EINVAL, PERCH_CONNSTR_EMPTY_FIELD, 0, "");
	expect_fail(";", PERCH_EINVAL, PERCH_CONNSTR_EMPTY_FIELD, 0, "");
	expect_fail("HostName=h;DeviceId=d;;", PERCH_EINVAL, PERCH_CONNSTR_EMPTY_FIELD, 22, "");
	expect_fail("HostName=h;DeviceId", PERCH_EINVAL, PERCH_CONNSTR_NO_EQUALS, 11, "DeviceId");
	expect_fail("HostName=h;Hostname=h", PERCH_EINVAL, PERCH_CONNSTR_UNKNOWN_KEY, 11,
	            "Hostname");
	expect_fail("HostName=h;=x", PERCH_EINVAL, PERCH_CONNSTR_UNKNOWN_KEY, 11, "");
	expect_fail("HostName=h;HostName=g", PERCH_EINVAL, PERCH_CONNSTR_DUPLICATE_KEY, 11,
	            "HostName");
	expect_fail("HostName=;DeviceId=d", PERCH_EINVAL, PERCH_CONNSTR_EMPTY_VALUE, 0, "HostName");
	expect_fail("HostName=h;x509=false", PERCH_EINVAL, PERCH_CONNSTR_BAD_VALUE, 11, "x509");
	expect_fail("HostName=h;x509=truex", PERCH_EINVAL, PERCH_CONNSTR_BAD_VALUE, 11, "x509");
	expect_fail("HostName=h\x01;DeviceId=d", PERCH_EINVAL, PERCH_CONNSTR_BAD_VALUE, 0,
	            "HostName");
	expect_fail("HostName=h;DeviceId=d;SharedAccessKey=notbase64", PERCH_EINVAL,
	            PERCH_CONNSTR_BAD_VALUE, 0, "SharedAccessKey");
	expect_fail("DeviceId=d;SharedAccessKey=" KEY, PERCH_EINVAL, PERCH_CONNSTR_MISSING_HOST, 0,
	            "");
	expect_fail("HostName=h;SharedAccessKey=" KEY, PERCH_EINVAL, PERCH_CONNSTR_MISSING_DEVICE,
	            0, "");
	expect_fail("HostName=h;DeviceId=d", PERCH_EINVAL, PERCH_CONNSTR_MISSING_CREDENTIAL, 0, "");
	expect_fail("HostName=h;DeviceId=d;x509=true;SharedAccessKey=" KEY, PERCH_EINVAL,
	            PERCH_CONNSTR_CONFLICT, 0, "");
	expect_fail("HostName=h;SharedAccessKeyName=p;ModuleId=m;SharedAccessKey=" KEY,
	            PERCH_EINVAL, PERCH_CONNSTR_CONFLICT, 0, "ModuleId");
	expect_fail("HostName=h;DeviceId=d;SharedAccessKeyName=p;x509=true", PERCH_EINVAL,
	            PERCH_CONNSTR_CONFLICT, 0, "SharedAccessKeyName");

	static char big[PERCH_CONNSTR_MAX + 2];
	memset(big, 'a', PERCH_CONNSTR_MAX + 1);
	expect_fail(big, PERCH_ETOOBIG, PERCH_CONNSTR_TOO_LONG, PERCH_CONNSTR_MAX, "");
	memset(big, 0, sizeof big);
	strcpy(big, "HostName=");
	memset(big + 9, 'h', PERCH_CONNSTR_MAX_HOST + 1);
	expect_fail(big, PERCH_ETOOBIG, PERCH_CONNSTR_TOO_LONG, 0, "HostName");
}

static void test_write(void **state)
{
	(void)state;
	char out[512];
	size_t n;
	perch_connstr cs;
	perch_connstr_fail fail;
	const char *in = "GatewayHostName=perch-hub;SharedAccessKey=" KEY
	                 ";ModuleId=filter;DeviceId=dev1;HostName=hub.example";
	const char *want = "HostName=hub.example;DeviceId=dev1;ModuleId=filter;SharedAccessKey=" KEY
	                   ";GatewayHostName=perch-hub";
	assert_int_equal(perch_connstr_parse(sl(in), &cs, NULL), PERCH_OK);
	assert_int_equal(perch_connstr_write(&cs, out, sizeof out, &n, &fail), PERCH_OK);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(out, want, n);
	for (size_t cap = 0; cap < n; cap++) {
		assert_int_equal(perch_connstr_write(&cs, out, cap, &n, &fail), PERCH_ETOOBIG);
		assert_int_equal(fail.reason, PERCH_CONNSTR_NO_SPACE);
	}
	perch_connstr x = {.host_name = sl("h"), .device_id = sl("d"), .x509 = true};
	assert_int_equal(perch_connstr_write(&x, out, sizeof out, &n, NULL), PERCH_OK);
	assert_memory_equal(out, "HostName=h;DeviceId=d;x509=true", n);
	/* The writer refuses what the parser would. */
	x.device_id = sl("a;b");
	assert_int_equal(perch_connstr_write(&x, out, sizeof out, &n, &fail), PERCH_EINVAL);
	assert_int_equal(fail.reason, PERCH_CONNSTR_BAD_VALUE);
	assert_true(perch_slice_eq_cstr(fail.key, "DeviceId"));
	x.device_id = sl("d");
	x.shared_access_signature = sl("SharedAccessSignature sr=a&sig=b&se=1");
	assert_int_equal(perch_connstr_write(&x, out, sizeof out, &n, &fail), PERCH_EINVAL);
	assert_int_equal(fail.reason, PERCH_CONNSTR_CONFLICT);
	static char big[PERCH_CONNSTR_MAX_ID + 1];
	memset(big, 'm', sizeof big);
	perch_connstr y = {.host_name = sl("h"), .device_id = {big, sizeof big}, .x509 = true};
	assert_int_equal(perch_connstr_write(&y, out, sizeof out, &n, &fail), PERCH_ETOOBIG);
	assert_int_equal(fail.reason, PERCH_CONNSTR_TOO_LONG);
	assert_int_equal(perch_connstr_check(&cs, NULL), PERCH_OK);
	for (int r = 0; r <= PERCH_CONNSTR_REASON_COUNT; r++)
		assert_non_null(perch_connstr_reason_str((perch_connstr_reason)r));
	assert_string_equal(perch_connstr_reason_str(PERCH_CONNSTR_REASON_COUNT), "unknown reason");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse_good),
	        cmocka_unit_test(test_parse_errors),
	        cmocka_unit_test(test_write),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
