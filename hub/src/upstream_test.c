/*
 * upstream_test.c — the pure parts of the upstream link (upstream.c): the
 * hub.upstream.url grammar with every rejection, the jittered exponential
 * backoff (short first retry, cap, jitter range), and the user name the
 * link logs in with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upstream.h"

static void test_url_ok(void **state)
{
	(void)state;
	hub_upstream_url u;
	const char *why = NULL;
	assert_int_equal(hub_upstream_parse_url("mqtts://parent.example", &u, &why), PERCH_OK);
	assert_int_equal(u.scheme, HUB_UP_MQTTS);
	assert_string_equal(u.host, "parent.example");
	assert_int_equal(u.port, 8883);
	assert_true(hub_upstream_tls(u.scheme));
	assert_int_equal(hub_upstream_parse_url("wss://p:8443", &u, &why), PERCH_OK);
	assert_int_equal(u.scheme, HUB_UP_WSS);
	assert_int_equal(u.port, 8443);
	assert_string_equal(u.path, "/$iothub/websocket");
	assert_int_equal(hub_upstream_parse_url("wss://p/custom/path", &u, &why), PERCH_OK);
	assert_int_equal(u.port, 443);
	assert_string_equal(u.path, "/custom/path");
	assert_int_equal(hub_upstream_parse_url("mqtt://127.0.0.1:1883", &u, &why), PERCH_OK);
	assert_int_equal(u.scheme, HUB_UP_MQTT);
	assert_false(hub_upstream_tls(u.scheme));
	assert_int_equal(hub_upstream_parse_url("ws://[::1]:8080/mqtt", &u, &why), PERCH_OK);
	assert_int_equal(u.scheme, HUB_UP_WS);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 8080);
	assert_string_equal(u.path, "/mqtt");
	assert_int_equal(hub_upstream_parse_url("mqtts://h:1/", &u, &why), PERCH_OK);
}

static void test_url_refused(void **state)
{
	(void)state;
	static const char *bad[] = {
	        "",
	        "http://p:80",
	        "mqtts://",
	        "mqtts://:8883",
	        "mqtts://p:",
	        "mqtts://p:0",
	        "mqtts://p:65536",
	        "mqtts://p:12x",
	        "mqtts://p/path",
	        "wss://[::1",
	        "wss://[::1]x",
	        "mqtts://us er@p",
	        "MQTTS://p",
	        "mqtts://p:99999999999999999999",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		hub_upstream_url u;
		const char *why = NULL;
		assert_int_equal(hub_upstream_parse_url(bad[i], &u, &why), PERCH_EINVAL);
		assert_non_null(why);
	}
	hub_upstream_url u;
	const char *why = NULL;
	assert_int_equal(hub_upstream_parse_url(NULL, &u, &why), PERCH_EINVAL);
}

static void test_backoff(void **state)
{
	(void)state;
	/* first retry: within [first/2, first] */
	for (uint32_t r = 0; r < 1000; r += 7) {
		int64_t d = hub_upstream_backoff_ms(0, 200, 10000, r);
		assert_true(d >= 100 && d <= 200);
	}
	/* doubles per attempt */
	assert_int_equal(hub_upstream_backoff_ms(3, 200, 10000, 0), 800);    /* d/2 of 1600 */
	assert_int_equal(hub_upstream_backoff_ms(3, 200, 10000, 800), 1600); /* d */
	/* capped, however many attempts */
	for (uint32_t a = 0; a < 200; a++) {
		int64_t d = hub_upstream_backoff_ms(a, 200, 10000, 0xffffffffu - a);
		assert_true(d >= 100 && d <= 10000);
	}
	assert_true(hub_upstream_backoff_ms(1000000, 200, 10000, 12345) >= 5000);
	/* degenerate settings stay sane */
	assert_true(hub_upstream_backoff_ms(5, 0, 0, 9) >= 0);
	assert_true(hub_upstream_backoff_ms(5, 500, 100, 9) <= 500);
}

static void test_username(void **state)
{
	(void)state;
	char out[128];
	assert_int_equal(hub_upstream_username("site.example", "gw1", out, sizeof out), PERCH_OK);
	assert_string_equal(out, "site.example/gw1/?api-version=2018-06-30");
	char small[10];
	assert_int_equal(hub_upstream_username("site.example", "gw1", small, sizeof small),
	                 PERCH_ETOOBIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_url_ok),
	        cmocka_unit_test(test_url_refused),
	        cmocka_unit_test(test_backoff),
	        cmocka_unit_test(test_username),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
