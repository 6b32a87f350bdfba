/*
 * workload_test.c — unit tests of workload_http.c: the request reader
 * (whole requests as the Azure IoT SDKs send them, every prefix of one,
 * each refusal with its status), and the sign computation checked against
 * proto's SAS token signer with the derived module key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "perch/sas.h"
#include "workload.h"

#define DEVICE_KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

/* The request the Node SDK's IotEdgeAuthenticationProvider sends. */
static const char SIGN_BODY[] =
        "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":"
        "\"cGVyY2gubG9jYWwlMkZkZXZpY2VzJTJGZDElMkZtb2R1bGVzJTJGZmlsdGVyCjE3MDAwMDAwMDA=\"}";

static size_t sign_request(char *buf, size_t cap, const char *path, const char *body)
{
	int n = snprintf(
	        buf, cap,
	        "POST %s HTTP/1.1\r\nContent-Type: application/json\r\n"
	        "Request-Id: 4f2e\r\nUser-Agent: azure-iot-device/1.18.0\r\n"
	        "Content-Length: %zu\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n%s",
	        path, strlen(body), body);
	assert_true(n > 0 && (size_t)n < cap);
	return (size_t)n;
}

static perch_err parse(const char *text, agent_wl_request *req, int *status)
{
	const char *why = NULL;
	perch_err err = agent_wl_parse(text, strlen(text), req, status, &why);
	if (err != PERCH_OK && err != PERCH_EAGAIN)
		assert_non_null(why);
	return err;
}

static void test_sign_request(void **state)
{
	(void)state;
	char buf[2048];
	size_t n = sign_request(buf, sizeof buf,
	                        "/modules/filter/genid/0123abcd/sign?api-version=2018-06-28",
	                        SIGN_BODY);
	agent_wl_request req;
	int status = 0;
	const char *why = NULL;
	assert_int_equal(agent_wl_parse(buf, n, &req, &status, &why), PERCH_OK);
	assert_int_equal(req.op, AGENT_WL_SIGN);
	assert_string_equal(req.module, "filter");
	assert_string_equal(req.genid, "0123abcd");
	assert_string_equal(req.api_version, "2018-06-28");
	assert_int_equal(req.body.len, strlen(SIGN_BODY));
	assert_memory_equal(req.body.ptr, SIGN_BODY, req.body.len);
	assert_int_equal(req.total, n);
	/* Every prefix is incomplete, never refused. */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(agent_wl_parse(buf, k, &req, &status, &why), PERCH_EAGAIN);
	/* Bytes after the request (a pipelined second one) are not part of it. */
	memcpy(buf + n, "GET /", 5);
	assert_int_equal(agent_wl_parse(buf, n + 5, &req, &status, &why), PERCH_OK);
	assert_int_equal(req.total, n);
}

static void test_trust_bundle_and_escapes(void **state)
{
	(void)state;
	agent_wl_request req;
	int status = 0;
	assert_int_equal(parse("GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n"
	                       "Host: localhost\r\n\r\n",
	                       &req, &status),
	                 PERCH_OK);
	assert_int_equal(req.op, AGENT_WL_TRUST_BUNDLE);
	assert_string_equal(req.api_version, "2019-01-30");
	assert_int_equal(req.body.len, 0);
	/* HTTP/1.0, no headers, other query parameters around api-version. */
	assert_int_equal(parse("GET /trust-bundle?x=1&api-version=2020-07-07&y HTTP/1.0\r\n\r\n",
	                       &req, &status),
	                 PERCH_OK);
	/* Percent-encoded path segments are decoded. */
	char buf[1024];
	size_t n = sign_request(buf, sizeof buf,
	                        "/modules/my%2Dmod%2e1/genid/g%41/sign?api-version=2019-01-30",
	                        SIGN_BODY);
	const char *why;
	assert_int_equal(agent_wl_parse(buf, n, &req, &status, &why), PERCH_OK);
	assert_string_equal(req.module, "my-mod.1");
	assert_string_equal(req.genid, "gA");
}

typedef struct refusal {
	const char *text;
	int status;
} refusal;

static void test_refusals(void **state)
{
	(void)state;
	static const refusal cases[] = {
	        {"GET /trust-bundle HTTP/1.1\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=2017-11-08 HTTP/1.1\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=latest HTTP/1.1\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=2019-01-30&api-version=2019-01-30 HTTP/1.1\r\n\r\n",
	         400},
	        {"POST /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 405},
	        {"GET /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 405},
	        {"POST /modules/a/genid/b/encrypt?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 404},
	        {"POST /modules/a/genid/b/sign/x?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 404},
	        {"POST /modules//genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 400},
	        {"POST /modules/a%zz/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 400},
	        {"POST /modules/a%00/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 400},
	        {"POST /modules/a%2/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 400},
	        {"GET /identities?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 404},
	        {"GET /trust-bundle?api-version=2019-01-30 HTTP/2.0\r\n\r\n", 505},
	        {"GET /trust-bundle?api-version=2019-01-30 FTP/1.1\r\n\r\n", 400},
	        {"GET trust-bundle HTTP/1.1\r\n\r\n", 400},
	        {"get /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 400},
	        {"GET  /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\nNoColon\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n: empty\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n folded: x\r\n\r\n", 400},
	        {"GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\nX: a\x01"
	         "b\r\n\r\n",
	         400},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Transfer-Encoding: chunked\r\n\r\n",
	         501},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Content-Length: 12x\r\n\r\n",
	         400},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Content-Length: -1\r\n\r\n",
	         400},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Content-Length:\r\n\r\n",
	         400},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Content-Length: 2\r\ncontent-length: 3\r\n\r\n",
	         400},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Content-Length: 99999999999999999999999\r\n\r\n",
	         413},
	        {"POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	         "Content-Length: 8193\r\n\r\n",
	         413},
	        {"GET /trust\0-bundle HTTP/1.1\r\n", 400},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		agent_wl_request req;
		int status = 0;
		const char *why = NULL;
		size_t len = strlen(cases[i].text);
		if (i == sizeof cases / sizeof cases[0] - 1)
			len = 30; /* the NUL is part of it */
		perch_err err = agent_wl_parse(cases[i].text, len, &req, &status, &why);
		if (err == PERCH_OK || err == PERCH_EAGAIN || status != cases[i].status)
			fail_msg("case %zu (%s): err %d status %d (want %d)", i, cases[i].text,
			         (int)err, status, cases[i].status);
		assert_non_null(why);
		assert_true(why[0] != '\0');
	}
}

static void test_limits(void **state)
{
	(void)state;
	static char buf[AGENT_WL_MAX_HEAD + 4096];
	agent_wl_request req;
	int status = 0;
	const char *why = NULL;
	/* A head that never ends. */
	int n = snprintf(buf, sizeof buf, "GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\n");
	size_t len = (size_t)n;
	while (len + 16 < sizeof buf) {
		memcpy(buf + len, "X-Pad: aaaaaaa\r\n", 16);
		len += 16;
	}
	assert_int_equal(agent_wl_parse(buf, len, &req, &status, &why), PERCH_EINVAL);
	assert_int_equal(status, 431);
	/* Too many headers, within the size limit. */
	len = (size_t)n;
	for (int i = 0; i < AGENT_WL_MAX_HEADERS + 1; i++) {
		memcpy(buf + len, "X-Pad: aaaaaaa\r\n", 16);
		len += 16;
	}
	memcpy(buf + len, "\r\n", 2);
	assert_int_equal(agent_wl_parse(buf, len + 2, &req, &status, &why), PERCH_EINVAL);
	assert_int_equal(status, 431);
	/* As many as allowed. */
	len = (size_t)n + (size_t)16 * AGENT_WL_MAX_HEADERS;
	memcpy(buf + len, "\r\n", 2);
	assert_int_equal(agent_wl_parse(buf, len + 2, &req, &status, &why), PERCH_OK);
	/* A target over the limit. */
	len = (size_t)snprintf(buf, sizeof buf, "GET /trust-bundle?x=");
	memset(buf + len, 'a', AGENT_WL_MAX_TARGET);
	len += AGENT_WL_MAX_TARGET;
	len += (size_t)snprintf(buf + len, sizeof buf - len, " HTTP/1.1\r\n\r\n");
	assert_int_equal(agent_wl_parse(buf, len, &req, &status, &why), PERCH_EINVAL);
	assert_int_equal(status, 414);
	/* A body of the largest size is waited for, then read. */
	len = (size_t)snprintf(buf, sizeof buf,
	                       "POST /modules/a/genid/b/sign?api-version=2019-01-30 HTTP/1.1\r\n"
	                       "Content-Length: %d\r\n\r\n",
	                       AGENT_WL_MAX_BODY);
	memset(buf + len, '{', AGENT_WL_MAX_BODY - 1);
	assert_int_equal(agent_wl_parse(buf, len + AGENT_WL_MAX_BODY - 1, &req, &status, &why),
	                 PERCH_EAGAIN);
	assert_int_equal(agent_wl_parse(buf, len + AGENT_WL_MAX_BODY, &req, &status, &why),
	                 PERCH_OK);
	assert_int_equal(req.body.len, AGENT_WL_MAX_BODY);
}

/* url_decode_sig turns a token's sig field back into base64. */
static void url_decode_sig(const char *token, char *out, size_t cap)
{
	const char *s = strstr(token, "sig=");
	assert_non_null(s);
	s += 4;
	size_t k = 0;
	while (*s != '\0' && *s != '&' && k + 1 < cap) {
		if (*s == '%') {
			char hex[3] = {s[1], s[2], '\0'};
			char *end = NULL;
			unsigned long v = strtoul(hex, &end, 16);
			assert_true(end == hex + 2);
			out[k++] = (char)v;
			s += 3;
		} else {
			out[k++] = *s++;
		}
	}
	out[k] = '\0';
}

static void test_sign_matches_sas(void **state)
{
	(void)state;
	/* SIGN_BODY's data is base64 of "perch.local%2Fdevices%2Fd1%2Fmodules%2Ffilter\n1700000000":
	 * what the SDK signs for the token of filter on device d1. */
	char digest[AGENT_WL_DIGEST_B64_LEN + 1];
	int status = 0;
	const char *why = NULL;
	assert_int_equal(agent_wl_sign(PERCH_SLICE_LIT(DEVICE_KEY), "filter",
	                               perch_slice_cstr(SIGN_BODY), digest, sizeof digest, &status,
	                               &why),
	                 PERCH_OK);
	assert_int_equal(strlen(digest), AGENT_WL_DIGEST_B64_LEN);
	char key[PERCH_SAS_KEY_B64_LEN + 1];
	size_t klen = 0;
	assert_int_equal(perch_sas_derive_module_key(PERCH_SLICE_LIT(DEVICE_KEY),
	                                             PERCH_SLICE_LIT("filter"), key, sizeof key - 1,
	                                             &klen),
	                 PERCH_OK);
	char token[512];
	size_t tlen = 0;
	assert_int_equal(perch_sas_sign(PERCH_SLICE_LIT("perch.local/devices/d1/modules/filter"),
	                                PERCH_SLICE_LIT(""), (perch_slice){key, klen}, 1700000000,
	                                token, sizeof token - 1, &tlen),
	                 PERCH_OK);
	token[tlen] = '\0';
	char sig[128];
	url_decode_sig(token, sig, sizeof sig);
	assert_string_equal(digest, sig);
	/* Another module's key gives another digest. */
	char other[AGENT_WL_DIGEST_B64_LEN + 1];
	assert_int_equal(agent_wl_sign(PERCH_SLICE_LIT(DEVICE_KEY), "sensor",
	                               perch_slice_cstr(SIGN_BODY), other, sizeof other, &status,
	                               &why),
	                 PERCH_OK);
	assert_string_not_equal(digest, other);
	/* Empty data is signable (HMAC of nothing). */
	assert_int_equal(
	        agent_wl_sign(PERCH_SLICE_LIT(DEVICE_KEY), "filter",
	                      PERCH_SLICE_LIT("{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\","
	                                      "\"data\":\"\"}"),
	                      other, sizeof other, &status, &why),
	        PERCH_OK);
}

static void test_sign_refusals(void **state)
{
	(void)state;
	static const char *const bodies[] = {
	        "",
	        "[]",
	        "not json",
	        "{\"keyId\":\"secondary\",\"algo\":\"HMACSHA256\",\"data\":\"YQ==\"}",
	        "{\"algo\":\"HMACSHA256\",\"data\":\"YQ==\"}",
	        "{\"keyId\":\"primary\",\"algo\":\"HMACSHA1\",\"data\":\"YQ==\"}",
	        "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\"}",
	        "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":7}",
	        "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"!!!\"}",
	        "{\"keyId\":\"primary\",\"keyId\":\"primary\"}",
	};
	char digest[AGENT_WL_DIGEST_B64_LEN + 1];
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		int status = 0;
		const char *why = NULL;
		perch_err err =
		        agent_wl_sign(PERCH_SLICE_LIT(DEVICE_KEY), "m", perch_slice_cstr(bodies[i]),
		                      digest, sizeof digest, &status, &why);
		if (err != PERCH_EINVAL || status != 400)
			fail_msg("body %zu (%s): err %d status %d", i, bodies[i], (int)err, status);
		assert_non_null(why);
	}
	/* data longer than AGENT_WL_MAX_DATA bytes. */
	static char big[AGENT_WL_MAX_BODY];
	int n = snprintf(big, sizeof big,
	                 "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"");
	size_t len = (size_t)n;
	size_t chars = ((size_t)AGENT_WL_MAX_DATA / 3 + 1) * 4;
	memset(big + len, 'A', chars);
	len += chars;
	memcpy(big + len, "\"}", 3);
	int status = 0;
	const char *why = NULL;
	assert_int_equal(agent_wl_sign(PERCH_SLICE_LIT(DEVICE_KEY), "m", perch_slice_cstr(big),
	                               digest, sizeof digest, &status, &why),
	                 PERCH_EINVAL);
	assert_int_equal(status, 400);
	/* A device key that is not base64. */
	assert_int_equal(agent_wl_sign(PERCH_SLICE_LIT("not a key!"), "m",
	                               perch_slice_cstr(SIGN_BODY), digest, sizeof digest, &status,
	                               &why),
	                 PERCH_EINTERNAL);
	assert_int_equal(status, 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_sign_request),
	        cmocka_unit_test(test_trust_bundle_and_escapes),
	        cmocka_unit_test(test_refusals),
	        cmocka_unit_test(test_limits),
	        cmocka_unit_test(test_sign_matches_sas),
	        cmocka_unit_test(test_sign_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
