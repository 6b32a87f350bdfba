/*
 * cli_test.c — unit tests for the pure parts of the `perch` command line:
 * hub URLs (--hub), the choice of a listener from hub.listen, and URL
 * encoding of path segments and property bags.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cli.h"

static void test_hub_from_url(void **state)
{
	(void)state;
	cli_hub h;
	assert_int_equal(cli_hub_from_url("ws://127.0.0.1:8080", "/ca.pem", &h), PERCH_OK);
	assert_false(h.tls);
	assert_string_equal(h.host, "127.0.0.1");
	assert_string_equal(h.port, "8080");
	assert_string_equal(h.ca, ""); /* no CA for ws:// */
	assert_int_equal(cli_hub_from_url("wss://0.0.0.0:443/$iothub/websocket", "/c/ca.pem", &h),
	                 PERCH_OK);
	assert_true(h.tls);
	assert_string_equal(h.host, "127.0.0.1");
	assert_string_equal(h.port, "443");
	assert_string_equal(h.tls_name, "localhost");
	assert_string_equal(h.ca, "/c/ca.pem");
	assert_int_equal(cli_hub_from_url("ws://[::]:80", NULL, &h), PERCH_OK);
	assert_string_equal(h.host, "::1");
	assert_int_equal(cli_hub_from_url("ws://[::1]:80/", NULL, &h), PERCH_OK);
	assert_string_equal(h.host, "::1");
	assert_int_equal(cli_hub_from_url("wss://perch-hub:8443", "x", &h), PERCH_OK);
	assert_string_equal(h.host, "perch-hub");
	assert_string_equal(h.tls_name, "perch-hub");
	assert_int_equal(cli_hub_from_url("ws://:81", NULL, &h), PERCH_OK);
	assert_string_equal(h.host, "127.0.0.1");
	static const char *const bad[] = {
	        "mqtt://127.0.0.1:1883",
	        "http://127.0.0.1:80",
	        "ws://127.0.0.1",
	        "ws://127.0.0.1:",
	        "ws://127.0.0.1:0",
	        "ws://127.0.0.1:65536",
	        "ws://127.0.0.1:8x",
	        "ws://[::1:80",
	        "ws://[::1]x:80",
	        "ws://127.0.0.1:123456",
	        "",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_not_equal(cli_hub_from_url(bad[i], NULL, &h), PERCH_OK);
	char big[400];
	memset(big, 'a', sizeof big);
	memcpy(big, "ws://", 5);
	memcpy(big + sizeof big - 4, ":80", 4);
	assert_int_equal(cli_hub_from_url(big, NULL, &h), PERCH_ETOOBIG);
}

/* mk: a list over string literals (cli_hub_pick only reads it). */
static perch_strlist mk(const char *const *items, size_t n)
{
	perch_strlist l = {NULL, n};
	memcpy(&l.items, &items, sizeof items);
	return l;
}

static void test_hub_pick(void **state)
{
	(void)state;
	cli_hub h;
	static const char *const l1[] = {"mqtt://0.0.0.0:1883", "ws://192.0.2.7:80",
	                                 "wss://0.0.0.0:443", "ws://0.0.0.0:8080",
	                                 "ws://127.0.0.1:9090"};
	perch_strlist list = mk(l1, 5);
	assert_int_equal(cli_hub_pick(&list, "/var/lib/perch/certs", &h), PERCH_OK);
	assert_false(h.tls); /* a ws:// on any address beats a wss:// before it */
	assert_string_equal(h.host, "127.0.0.1");
	assert_string_equal(h.port, "8080");
	static const char *const l2[] = {"ws://192.0.2.7:80", "mqtts://0.0.0.0:8883",
	                                 "wss://0.0.0.0:443", "wss://127.0.0.1:444"};
	list = mk(l2, 4);
	assert_int_equal(cli_hub_pick(&list, "/certs", &h), PERCH_OK);
	assert_true(h.tls);
	assert_string_equal(h.port, "443");
	assert_string_equal(h.ca, "/certs/ca.pem");
	assert_string_equal(h.tls_name, "localhost");
	static const char *const l3[] = {"ws://[::1]:81"};
	list = mk(l3, 1);
	assert_int_equal(cli_hub_pick(&list, "/certs", &h), PERCH_OK);
	assert_string_equal(h.host, "::1");
	static const char *const l4[] = {"mqtt://0.0.0.0:1883", "ws://10.1.2.3:80",
	                                 "ws://localhost:82"};
	list = mk(l4, 3);
	assert_int_equal(cli_hub_pick(&list, "/certs", &h), PERCH_OK);
	assert_string_equal(h.host, "localhost");
	list.n = 2;
	assert_int_equal(cli_hub_pick(&list, "/certs", &h), PERCH_ENOENT);
	list.n = 0;
	assert_int_equal(cli_hub_pick(&list, "/certs", &h), PERCH_ENOENT);
}

static void test_url_encode(void **state)
{
	(void)state;
	char out[16];
	size_t at = 0;
	assert_int_equal(cli_url_encode("a b&c", out, sizeof out, &at), PERCH_OK);
	assert_string_equal(out, "a%20b%26c");
	assert_int_equal(at, 9);
	/* what fits is written, NUL-terminated; then ETOOBIG */
	assert_int_equal(cli_url_encode("=\xc3\xa9", out, sizeof out, &at), PERCH_ETOOBIG);
	assert_string_equal(out, "a%20b%26c%3D%C3");
	at = 0;
	assert_int_equal(cli_url_encode("-._~Az09", out, sizeof out, &at), PERCH_OK);
	assert_string_equal(out, "-._~Az09");
	at = 0;
	assert_int_equal(cli_url_encode("0123456789abcdef", out, sizeof out, &at), PERCH_ETOOBIG);
	at = 0;
	assert_int_equal(cli_url_encode("/////", out, sizeof out, &at), PERCH_OK);
	assert_string_equal(out, "%2F%2F%2F%2F%2F");
	at = 0;
	assert_int_equal(cli_url_encode("//////", out, sizeof out, &at), PERCH_ETOOBIG);
	assert_true(at < sizeof out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_hub_from_url),
	        cmocka_unit_test(test_hub_pick),
	        cmocka_unit_test(test_url_encode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
