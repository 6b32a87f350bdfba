/*
 * upstream_test.c — the pure parts of the upstream link (upstream.c): the
 * hub.upstream.url grammar with every rejection, the jittered exponential
 * backoff (short first retry, cap, jitter range; the short cap while the
 * parent is unreachable, the long one after refusals), and the user name
 * the link logs in with.
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
	const hub_upstream_backoff b = {200, 10000, 60000};
	/* first retry: within [first/2, first] */
	for (uint32_t r = 0; r < 1000; r += 7) {
		int64_t d = hub_upstream_backoff_ms(&b, HUB_UP_UNREACHABLE, 0, r);
		assert_true(d >= 100 && d <= 200);
	}
	/* doubles per attempt */
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_UNREACHABLE, 3, 0),
	                 800); /* d/2 of 1600 */
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_UNREACHABLE, 3, 800), 1600); /* d */
	/* capped, however many attempts */
	for (uint32_t a = 0; a < 200; a++) {
		int64_t d = hub_upstream_backoff_ms(&b, HUB_UP_UNREACHABLE, a, 0xffffffffu - a);
		assert_true(d >= 100 && d <= 10000);
	}
	assert_true(hub_upstream_backoff_ms(&b, HUB_UP_UNREACHABLE, 1000000, 12345) >= 5000);
	/* degenerate settings stay sane */
	const hub_upstream_backoff zero = {0, 0, 0}, inverted = {500, 100, 50};
	assert_true(hub_upstream_backoff_ms(&zero, HUB_UP_UNREACHABLE, 5, 9) >= 0);
	assert_true(hub_upstream_backoff_ms(&zero, HUB_UP_REFUSED, 5, 9) >= 0);
	assert_true(hub_upstream_backoff_ms(&inverted, HUB_UP_UNREACHABLE, 5, 9) <= 500);
	assert_true(hub_upstream_backoff_ms(&inverted, HUB_UP_REFUSED, 5, 9) <= 500);
	const hub_upstream_backoff huge = {INT64_MAX / 2, INT64_MAX / 2, INT64_MAX};
	assert_true(hub_upstream_backoff_ms(&huge, HUB_UP_REFUSED, 100, 9) > 0);
}

/* The defaults: the parent unreachable, an attempt at least every 0.5 s
 * however long the outage; refused, from 1 s doubling to 60 s. */
static void test_backoff_kinds(void **state)
{
	(void)state;
	const hub_upstream_backoff b = {200, 500, 60000};
	for (uint32_t n = 0; n < 100; n++) {
		for (uint32_t r = 0; r < 2000; r += 13) {
			int64_t d =
			        hub_upstream_backoff_ms(&b, HUB_UP_UNREACHABLE, n, r * 2654435761u);
			assert_true(d >= 100 && d <= 500);
			if (n >= 2)
				assert_true(d >= 250); /* at the cap: [250, 500] */
		}
	}
	/* refused: twice backoff_max first, never sooner than backoff_max */
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, 0, 0), 500);
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, 0, 500), 1000);
	/* doubling per refusal */
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, 1, 1000), 2000);
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, 4, 8000), 16000);
	/* to refused_backoff_max, then jittered into [30 s, 60 s] */
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, 6, 30000), 60000);
	for (uint32_t n = 0; n < 200; n++) {
		for (uint32_t r = 0; r < 2000; r += 13) {
			int64_t d = hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, n, r * 2654435761u);
			assert_true(d >= 500 && d <= 60000);
			if (n >= 6)
				assert_true(d >= 30000);
		}
	}
	assert_int_equal(hub_upstream_backoff_ms(&b, HUB_UP_REFUSED, 0xffffffffu, 0), 30000);
	/* a refused_backoff_max below backoff_max: refusals wait backoff_max */
	const hub_upstream_backoff low = {200, 5000, 1000};
	for (uint32_t n = 0; n < 20; n++) {
		int64_t d = hub_upstream_backoff_ms(&low, HUB_UP_REFUSED, n, 2500);
		assert_int_equal(d, 5000);
	}
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
	        cmocka_unit_test(test_url_ok),   cmocka_unit_test(test_url_refused),
	        cmocka_unit_test(test_backoff),  cmocka_unit_test(test_backoff_kinds),
	        cmocka_unit_test(test_username),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
