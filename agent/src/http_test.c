/*
 * http_test.c — unit tests of the agent's HTTP/1.1 client (http.h): the
 * response parser fed real engine answers whole, a byte at a time and cut at
 * every boundary (Content-Length, chunked with extensions and trailers,
 * close-delimited, 1xx, 204), every rejection (oversize lines and header
 * blocks, bad status lines, bad chunk sizes, conflicting lengths, ...), the
 * request writer; and the client against a scripted fake engine on a unix
 * socket (http_fake_test.h): keep-alive reuse, Connection: close, a kept
 * connection the engine closed while idle (retried once, only when nothing
 * of the answer arrived), timeouts, refused and missing sockets, and an
 * async exchange driven by poll with its answer dribbled a byte at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_fake_test.h"
#include "perch/alloc.h"

/* ---- a sink that gathers ----------------------------------------------------------- */

typedef struct got {
	int heads;       /* head callbacks */
	int status;      /* status seen by head */
	char body[4096]; /* body gathered */
	size_t len;
	size_t calls;   /* body callbacks */
	perch_err fail; /* returned by body when not OK */
} got;

static perch_err got_head(void *ud, const perch_http_parser *p)
{
	got *g = ud;
	g->heads++;
	g->status = p->status;
	return PERCH_OK;
}

static perch_err got_body(void *ud, const char *data, size_t n)
{
	got *g = ud;
	g->calls++;
	if (g->fail != PERCH_OK)
		return g->fail;
	assert_true(g->len + n < sizeof g->body);
	memcpy(g->body + g->len, data, n);
	g->len += n;
	g->body[g->len] = '\0';
	return PERCH_OK;
}

/* parse_split feeds s cut at a and b (a <= b), then EOF if eof; returns the
 * first error. */
static perch_err parse_split(perch_http_parser *p, got *g, const char *s, size_t n, size_t a,
                             size_t b, bool eof)
{
	perch_http_sink sink = {got_head, got_body, g};
	size_t cuts[3] = {a, b, n}, at = 0;
	perch_http_parser_init(p);
	memset(g, 0, sizeof *g);
	for (size_t i = 0; i < 3; i++) {
		size_t used = 0, len = cuts[i] - at;
		perch_err err = perch_http_parse(p, s + at, len, &used, &sink);
		if (err != PERCH_OK)
			return err;
		at += used;
		if (used < len) /* stopped early: the answer is complete */
			break;
	}
	return eof ? perch_http_parse_eof(p) : PERCH_OK;
}

/* ---- real engine answers ---------------------------------------------------------- */

static const char ans_version[] = "HTTP/1.1 200 OK\r\n"
                                  "Api-Version: 1.41\r\n"
                                  "Content-Type: application/json\r\n"
                                  "Docker-Experimental: false\r\n"
                                  "Ostype: linux\r\n"
                                  "Server: Docker/20.10.24+dfsg1 (linux)\r\n"
                                  "Date: Fri, 27 Nov 2026 12:00:00 GMT\r\n"
                                  "Content-Length: 48\r\n"
                                  "\r\n"
                                  "{\"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\"}";

static const char ans_pull[] =
        "HTTP/1.1 200 OK\r\n"
        "Api-Version: 1.41\r\n"
        "Content-Type: application/json\r\n"
        "Server: Docker/20.10.24+dfsg1 (linux)\r\n"
        "Transfer-Encoding: chunked\r\n"
        "\r\n"
        "34\r\n"
        "{\"status\":\"Pulling from perch-test/dapi\",\"id\":\"1\"}\r\n\r\n"
        "3C;name=value;other\r\n"
        "{\"status\":\"Pulling fs layer\",\"progressDetail\":{},\"id\":\"a\"}\r\n\r\n"
        "0000000000000002 \r\n"
        "{}\r\n"
        "0\r\n"
        "X-Trailer: yes\r\n"
        "\r\n";

static const char pull_body[] =
        "{\"status\":\"Pulling from perch-test/dapi\",\"id\":\"1\"}\r\n"
        "{\"status\":\"Pulling fs layer\",\"progressDetail\":{},\"id\":\"a\"}\r\n"
        "{}";

static const char ans_404[] = "HTTP/1.1 404 Not Found\r\n"
                              "Api-Version: 1.41\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 38\r\n"
                              "\r\n"
                              "{\"message\":\"No such container: nope\"}\n";

static const char ans_204[] = "HTTP/1.1 204 No Content\r\n"
                              "Api-Version: 1.41\r\n"
                              "Server: Docker/20.10.24+dfsg1 (linux)\r\n"
                              "\r\n";

static void check_every_split(const char *s, int status, const char *body, bool keep)
{
	size_t n = strlen(s);
	perch_http_parser p;
	got g = {0};
	for (size_t a = 0; a <= n; a++) {
		size_t b = a + (n - a) / 2;
		assert_int_equal(parse_split(&p, &g, s, n, a, b, false), PERCH_OK);
		assert_int_equal(p.state, PERCH_HTTP_S_DONE);
		assert_int_equal(p.status, status);
		assert_int_equal(g.heads, 1);
		assert_int_equal(g.status, status);
		assert_string_equal(g.body, body);
		assert_int_equal(p.keep_alive, keep);
	}
	/* One byte at a time. */
	perch_http_sink sink = {got_head, got_body, &g};
	perch_http_parser_init(&p);
	memset(&g, 0, sizeof g);
	for (size_t i = 0; i < n; i++) {
		size_t used;
		assert_int_equal(perch_http_parse(&p, s + i, 1, &used, &sink), PERCH_OK);
		assert_int_equal(used, 1);
	}
	assert_int_equal(p.state, PERCH_HTTP_S_DONE);
	assert_string_equal(g.body, body);
	assert_int_equal(perch_http_parse_eof(&p), PERCH_OK);
}

static void test_parse_content_length(void **state)
{
	(void)state;
	check_every_split(ans_version, 200,
	                  "{\"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\"}", true);
	check_every_split(ans_404, 404, "{\"message\":\"No such container: nope\"}\n", true);
}

static void test_parse_chunked(void **state)
{
	(void)state;
	check_every_split(ans_pull, 200, pull_body, true);
}

static void test_parse_no_body(void **state)
{
	(void)state;
	check_every_split(ans_204, 204, "", true);
	check_every_split("HTTP/1.1 304 Not Modified\r\n\r\n", 304, "", true);
	check_every_split("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "", true);
	/* Bare LF line ends are tolerated. */
	check_every_split("HTTP/1.1 200 OK\nContent-Length: 2\n\nOK", 200, "OK", true);
	/* A status line without a reason. */
	check_every_split("HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n", 201, "", true);
}

static void test_parse_interim(void **state)
{
	(void)state;
	check_every_split("HTTP/1.1 100 Continue\r\n\r\n"
	                  "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
	                  "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
	                  200, "abc", true);
}

static void test_parse_close_delimited(void **state)
{
	(void)state;
	static const char s[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
	size_t n = strlen(s);
	perch_http_parser p;
	got g = {0};
	for (size_t a = 0; a <= n; a++) {
		assert_int_equal(parse_split(&p, &g, s, n, a, a, true), PERCH_OK);
		assert_int_equal(p.state, PERCH_HTTP_S_DONE);
		assert_string_equal(g.body, "until the end");
		assert_false(p.keep_alive);
	}
	/* A coding other than chunked: the body runs to the close too. */
	static const char gz[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxyz";
	assert_int_equal(parse_split(&p, &g, gz, strlen(gz), 5, 50, true), PERCH_OK);
	assert_string_equal(g.body, "xyz");
	assert_false(p.keep_alive);
}

static void test_parse_keep_alive_rules(void **state)
{
	(void)state;
	perch_http_parser p;
	got g = {0};
	const struct {
		const char *s;
		bool keep;
	} cases[] = {
	        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", true},
	        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", false},
	        {"HTTP/1.1 200 OK\r\nconnection: Upgrade, CLOSE\r\nContent-Length: 1\r\n\r\nx",
	         false},
	        {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	        {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", true},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", true},
	        /* Both framings: chunked wins, and the connection is not reused. */
	        {"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
	         "1\r\nx\r\n0\r\n\r\n",
	         false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t n = strlen(cases[i].s);
		assert_int_equal(parse_split(&p, &g, cases[i].s, n, n, n, false), PERCH_OK);
		assert_int_equal(p.state, PERCH_HTTP_S_DONE);
		assert_string_equal(g.body, "x");
		assert_int_equal(p.keep_alive, cases[i].keep);
	}
}

static void test_parse_leftover(void **state)
{
	(void)state;
	static const char s[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200";
	perch_http_parser p;
	perch_http_parser_init(&p);
	size_t used;
	assert_int_equal(perch_http_parse(&p, s, strlen(s), &used, NULL), PERCH_OK);
	assert_int_equal(p.state, PERCH_HTTP_S_DONE);
	assert_int_equal(used, strlen(s) - strlen("HTTP/1.1 200"));
	assert_int_equal(p.body, 2);
	/* Nothing more is taken once DONE. */
	assert_int_equal(perch_http_parse(&p, "x", 1, &used, NULL), PERCH_OK);
	assert_int_equal(used, 0);
}

static void test_parse_sink_error(void **state)
{
	(void)state;
	perch_http_parser p;
	got g = {.fail = PERCH_ETOOBIG};
	perch_http_sink sink = {got_head, got_body, &g};
	perch_http_parser_init(&p);
	assert_int_equal(perch_http_parse(&p, ans_pull, strlen(ans_pull), NULL, &sink),
	                 PERCH_ETOOBIG);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.heads, 1);
}

/* expect_bad parses s whole (then EOF) and expects err with why. */
static void expect_bad(const char *s, size_t n, perch_err want, const char *why)
{
	perch_http_parser p;
	got g = {0};
	perch_err err = parse_split(&p, &g, s, n, n, n, true);
	if (err != want || p.why == NULL || strcmp(p.why, why) != 0)
		fail_msg("'%.60s': got %d '%s', want %d '%s'", s, err, p.why ? p.why : "(null)",
		         want, why);
	if (want == PERCH_EPROTO) {
		assert_int_equal(p.state, PERCH_HTTP_S_ERROR);
		/* Stays in ERROR. */
		assert_int_equal(perch_http_parse(&p, "HTTP/1.1 200 OK\r\n", 17, NULL, NULL),
		                 PERCH_EPROTO);
	}
}

static void test_parse_rejections(void **state)
{
	(void)state;
	const struct {
		const char *s;
		const char *why;
	} bad[] = {
	        {"HTTP/2 200 OK\r\n\r\n", "malformed status line"},
	        {"HTTP/1.1 20 OK\r\n\r\n", "malformed status line"},
	        {"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"},
	        {"HTTP/1.1 099 OK\r\n\r\n", "malformed status line"},
	        {"HTTP/1.1 600 OK\r\n\r\n", "malformed status line"},
	        {"HTTP/1.1 2x0 OK\r\n\r\n", "malformed status line"},
	        {"http/1.1 200 OK\r\n\r\n", "malformed status line"},
	        {"HTTP/1.1  200 OK\r\n\r\n", "malformed status line"},
	        {"\r\nHTTP/1.1 200 OK\r\n\r\n", "malformed status line"},
	        {"SSH-2.0-OpenSSH_9.2\r\n", "malformed status line"},
	        {"HTTP/1.1 200 O\x01K\r\n\r\n", "control character in the status line"},
	        {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101 Switching Protocols"},
	        {"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "malformed header line"},
	        {"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", "malformed header line"},
	        {"HTTP/1.1 200 OK\r\n: v\r\n\r\n", "malformed header line"},
	        {"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", "folded header line"},
	        {"HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n", "control character in a header value"},
	        {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "bad Content-Length"},
	        {"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", "bad Content-Length"},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n", "bad Content-Length"},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n",
	         "bad Content-Length"},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	         "conflicting Content-Length headers"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", "bad chunk size"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\n", "bad chunk size"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",
	         "chunk size too large"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n",
	         "no line end after chunk data"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
	         "malformed header line"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		expect_bad(bad[i].s, strlen(bad[i].s), PERCH_EPROTO, bad[i].why);
	/* A NUL where a header name should be. */
	static const char nul[] = "HTTP/1.1 200 OK\r\n\0A: b\r\n\r\n";
	expect_bad(nul, sizeof nul - 1, PERCH_EPROTO, "malformed header line");

	/* Cut short: ECLOSED, with where. */
	expect_bad("", 0, PERCH_ECLOSED, "before answering");
	const struct {
		const char *s;
		const char *why;
	} cut[] = {
	        {"HTTP/1.1 200 OK\r\nContent-", "in the middle of the headers"},
	        {"HTTP/1.1 200", "in the middle of the headers"},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", "in the middle of the body"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
	         "before the last chunk"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
	         "before the last chunk"},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
	         "before the last chunk"},
	};
	for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++)
		expect_bad(cut[i].s, strlen(cut[i].s), PERCH_ECLOSED, cut[i].why);
}

static void test_parse_limits(void **state)
{
	(void)state;
	size_t cap = (size_t)PERCH_HTTP_HEAD_MAX * 2;
	char *s = malloc(cap);
	assert_non_null(s);
	/* A header line of PERCH_HTTP_LINE_MAX bytes. */
	int o = snprintf(s, cap, "HTTP/1.1 200 OK\r\nX-Long: ");
	memset(s + o, 'a', PERCH_HTTP_LINE_MAX);
	snprintf(s + o + PERCH_HTTP_LINE_MAX, cap - (size_t)o - PERCH_HTTP_LINE_MAX, "\r\n\r\n");
	expect_bad(s, strlen(s), PERCH_EPROTO, "header line too long");
	/* ... even if it never ends. */
	expect_bad(s, (size_t)o + PERCH_HTTP_LINE_MAX, PERCH_EPROTO, "header line too long");
	/* The longest line that fits is fine. */
	o = snprintf(s, cap, "HTTP/1.1 200 OK\r\nX-Long: ");
	/* The line and its '\r' fill the buffer but for the NUL. */
	size_t fill = PERCH_HTTP_LINE_MAX - 2 - strlen("X-Long: ");
	memset(s + o, 'a', fill);
	snprintf(s + o + fill, cap - (size_t)o - fill, "\r\nContent-Length: 0\r\n\r\n");
	perch_http_parser p;
	got g = {0};
	assert_int_equal(parse_split(&p, &g, s, strlen(s), 100, 5000, false), PERCH_OK);
	assert_int_equal(p.state, PERCH_HTTP_S_DONE);
	/* A status line that never ends. */
	memset(s, 'H', PERCH_HTTP_LINE_MAX + 1);
	expect_bad(s, PERCH_HTTP_LINE_MAX + 1, PERCH_EPROTO, "status line too long");
	/* A chunk-size line that never ends. */
	o = snprintf(s, cap, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
	memset(s + o, 'e', PERCH_HTTP_LINE_MAX);
	expect_bad(s, (size_t)o + PERCH_HTTP_LINE_MAX, PERCH_EPROTO, "chunk size line too long");
	/* Too many header lines. */
	o = snprintf(s, cap, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i <= PERCH_HTTP_FIELDS_MAX; i++)
		o += snprintf(s + o, cap - (size_t)o, "X-%d: v\r\n", i);
	expect_bad(s, (size_t)o, PERCH_EPROTO, "too many header lines");
	/* A header block too large, in lines that are each fine. */
	o = snprintf(s, cap, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < 10; i++) {
		o += snprintf(s + o, cap - (size_t)o, "X-%d: ", i);
		memset(s + o, 'v', 8000);
		o += 8000;
		o += snprintf(s + o, cap - (size_t)o, "\r\n");
	}
	expect_bad(s, (size_t)o, PERCH_EPROTO, "headers too large");
	/* 1xx answers count toward the same limit. */
	o = 0;
	for (int i = 0; i < 5000; i++)
		o += snprintf(s + o, cap - (size_t)o, "HTTP/1.1 100 Continue\r\n\r\n");
	expect_bad(s, (size_t)o, PERCH_EPROTO, "headers too large");
	free(s);
}

static void test_request(void **state)
{
	(void)state;
	char *r;
	size_t n;
	const char *hdrs[] = {"Content-Type: application/json", "X-Registry-Auth: eyJ1c2VyIjoi"};
	assert_int_equal(perch_http_request("POST", "/v1.41/containers/create?name=a", "docker",
	                                    hdrs, 2, "{\"Image\":\"x\"}", 13, &r, &n),
	                 PERCH_OK);
	assert_string_equal(r, "POST /v1.41/containers/create?name=a HTTP/1.1\r\n"
	                       "Host: docker\r\n"
	                       "Content-Type: application/json\r\n"
	                       "X-Registry-Auth: eyJ1c2VyIjoi\r\n"
	                       "Content-Length: 13\r\n"
	                       "\r\n"
	                       "{\"Image\":\"x\"}");
	assert_int_equal(n, strlen(r));
	perch_http_request_free(r, n);
	assert_int_equal(perch_http_request("GET", "/_ping", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_OK);
	assert_string_equal(r, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n");
	perch_http_request_free(r, n);
	assert_int_equal(perch_http_request("POST", "/x/start", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_OK);
	assert_string_equal(r,
	                    "POST /x/start HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n");
	perch_http_request_free(r, n);
	perch_http_request_free(NULL, 0);

	const char *crlf[] = {"X-A: b\r\nX-Evil: 1"};
	const char *nocolon[] = {"X-A b"};
	const char *space[] = {"X A: b"};
	assert_int_equal(perch_http_request("GET", "/a b", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("GET", "/a\r\n", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("GET", "a", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("G T", "/a", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("", "/a", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("GET", "/a", "dock er", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("GET", "/a", "docker", crlf, 1, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("GET", "/a", "docker", nocolon, 1, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_http_request("GET", "/a", "docker", space, 1, NULL, 0, &r, &n),
	                 PERCH_EINVAL);
	assert_null(r);
	char *big = malloc(PERCH_HTTP_LINE_MAX + 2);
	assert_non_null(big);
	memset(big, 'a', PERCH_HTTP_LINE_MAX + 1);
	big[0] = '/';
	big[PERCH_HTTP_LINE_MAX + 1] = '\0';
	assert_int_equal(perch_http_request("GET", big, "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_ETOOBIG);
	free(big);
	/* Allocation failure: an error, nothing left behind. */
	size_t blocks = perch_alloc_blocks();
	perch_alloc_fail_after(0);
	assert_int_equal(perch_http_request("GET", "/a", "docker", NULL, 0, NULL, 0, &r, &n),
	                 PERCH_ENOMEM);
	perch_alloc_fail_after(-1);
	assert_null(r);
	assert_int_equal(perch_alloc_blocks(), blocks);
}

/* ---- the client against a fake engine ------------------------------------------- */

#define OK_PING  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"
#define OK_CLOSE "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nOK"

static const char ping_req[] = "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";

/* call_fake makes one blocking call; its body goes to g. */
static perch_err call_fake(const char *path, int *kept, agent_http_xfer *x, got *g, long timeout_ms,
                           const char *req)
{
	perch_http_sink sink = {got_head, got_body, g};
	memset(g, 0, sizeof *g);
	if (req == NULL)
		req = ping_req;
	return agent_http_call(x, path, kept, req, strlen(req), &sink, 1000,
	                       agent_http_now_ms() + timeout_ms);
}

static void test_client_keep_alive(void **state)
{
	(void)state;
	static const fake_step steps[] = {
	        {FAKE_ANSWER, OK_PING},
	        {FAKE_ANSWER, ans_version},
	        {FAKE_ANSWER, OK_CLOSE},
	        {FAKE_ANSWER, ans_204},
	};
	fake *f = fake_start(steps, 4);
	assert_non_null(f);
	agent_http_xfer x;
	got g = {0};
	int kept = -1;
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_string_equal(g.body, "OK");
	assert_true(kept >= 0);
	assert_false(x.reused);
	/* The second call rides the same connection. */
	const char *post =
	        "POST /v1.41/x HTTP/1.1\r\nHost: docker\r\nContent-Length: 4\r\n\r\nbody";
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, post), PERCH_OK);
	assert_true(x.reused);
	assert_int_equal(g.status, 200);
	assert_int_equal(atomic_load(&f->conns), 1);
	char req[512];
	fake_last_request(f, req, sizeof req);
	assert_string_equal(req, post);
	/* Connection: close: the answer is whole, the connection not kept. */
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_true(x.reused);
	assert_int_equal(kept, -1);
	/* So the next call opens a new one. */
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_false(x.reused);
	assert_int_equal(g.status, 204);
	assert_int_equal(atomic_load(&f->conns), 2);
	assert_int_equal(atomic_load(&f->reqs), 4);
	close(kept);
	fake_stop(f);
}

static void test_client_idle_close(void **state)
{
	(void)state;
	/* The engine answers (keep-alive) and then closes the idle connection:
	 * the next call notices, by the poll before it or by the failed send,
	 * and runs on a new connection. */
	static const fake_step steps[] = {
	        {FAKE_ANSWER_CLOSE, OK_PING},
	        {FAKE_ANSWER, OK_PING},
	};
	fake *f = fake_start(steps, 2);
	assert_non_null(f);
	agent_http_xfer x;
	got g = {0};
	int kept = -1;
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_true(kept >= 0);
	fake_sleep_ms(20);
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_string_equal(g.body, "OK");
	assert_int_equal(atomic_load(&f->conns), 2);
	assert_int_equal(atomic_load(&f->reqs), 2);
	close(kept);
	fake_stop(f);
}

static void test_client_retry_once(void **state)
{
	(void)state;
	/* The kept connection dies after taking the request, before a byte of
	 * the answer: the call runs again, once, on a new connection. */
	static const fake_step steps[] = {
	        {FAKE_ANSWER, OK_PING},
	        {FAKE_CLOSE, NULL},
	        {FAKE_ANSWER, ans_version},
	};
	fake *f = fake_start(steps, 3);
	assert_non_null(f);
	agent_http_xfer x;
	got g = {0};
	int kept = -1;
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_false(x.reused); /* the second attempt's connection */
	assert_int_equal(g.status, 200);
	assert_int_equal(atomic_load(&f->conns), 2);
	assert_int_equal(atomic_load(&f->reqs), 3);
	close(kept);
	fake_stop(f);
}

static void test_client_no_retry(void **state)
{
	(void)state;
	/* A new connection closed without an answer: no second try. A kept one
	 * cut in the middle of the answer: no second try either. */
	static const fake_step steps[] = {
	        {FAKE_CLOSE, NULL},
	        {FAKE_ANSWER, OK_PING},
	        {FAKE_ANSWER_CLOSE, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"},
	        {FAKE_ANSWER, OK_PING},
	};
	fake *f = fake_start(steps, 4);
	assert_non_null(f);
	agent_http_xfer x;
	got g = {0};
	int kept = -1;
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_ECLOSED);
	assert_true(x.connected);
	assert_string_equal(x.why, "before answering");
	assert_int_equal(kept, -1);
	assert_int_equal(atomic_load(&f->reqs), 1);
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_OK);
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_ECLOSED);
	assert_true(x.reused);
	assert_true(x.answered);
	assert_string_equal(x.why, "in the middle of the body");
	assert_int_equal(kept, -1);
	assert_int_equal(atomic_load(&f->reqs), 3);
	fake_stop(f);
}

static void test_client_errors(void **state)
{
	(void)state;
	static const fake_step steps[] = {
	        {FAKE_HANG, NULL},
	        {FAKE_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"},
	};
	fake *f = fake_start(steps, 2);
	assert_non_null(f);
	agent_http_xfer x;
	got g = {0};
	int kept = -1;
	/* An engine that takes the request and says nothing. */
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 150, NULL), PERCH_ETIMEDOUT);
	assert_true(x.connected);
	assert_int_equal(kept, -1);
	/* A malformed answer. */
	assert_int_equal(call_fake(f->path, &kept, &x, &g, 2000, NULL), PERCH_EPROTO);
	assert_string_equal(x.why, "bad Content-Length");
	assert_int_equal(kept, -1);
	/* Nothing at the path; a socket file nobody listens on. */
	char path[160];
	snprintf(path, sizeof path, "%s/none.sock", f->dir);
	assert_int_equal(call_fake(path, &kept, &x, &g, 2000, NULL), PERCH_ECLOSED);
	assert_false(x.connected);
	assert_int_equal(x.sys_errno, ENOENT);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path));
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	close(s);
	assert_int_equal(call_fake(path, &kept, &x, &g, 2000, NULL), PERCH_ECLOSED);
	assert_false(x.connected);
	assert_int_equal(x.sys_errno, ECONNREFUSED);
	unlink(path);
	/* A path too long for a unix socket. */
	char longp[200];
	memset(longp, 'a', sizeof longp - 1);
	longp[sizeof longp - 1] = '\0';
	assert_int_equal(call_fake(longp, &kept, &x, &g, 2000, NULL), PERCH_EINVAL);
	fake_stop(f);
}

static void test_client_async(void **state)
{
	(void)state;
	/* A chunked answer written a byte at a time, read by an exchange that a
	 * poll loop drives; then one nobody answers, ended by its deadline. */
	static const fake_step steps[] = {
	        {FAKE_DRIBBLE, ans_pull},
	        {FAKE_HANG, NULL},
	};
	fake *f = fake_start(steps, 2);
	assert_non_null(f);
	agent_http_xfer x;
	got g = {0};
	perch_http_sink sink = {got_head, got_body, &g};
	agent_http_xfer_begin(&x, f->path, -1, ping_req, strlen(ping_req), &sink, 1000, -1);
	while (!agent_http_xfer_step(&x, 0)) {
		struct pollfd p;
		assert_true(agent_http_xfer_pollfd(&x, &p));
		assert_int_equal(agent_http_xfer_deadline(&x), -1);
		assert_true(poll(&p, 1, 5000) == 1);
		if (agent_http_xfer_step(&x, p.revents))
			break;
	}
	assert_int_equal(x.err, PERCH_OK);
	assert_string_equal(g.body, pull_body);
	assert_true(x.reusable);
	int fd = agent_http_xfer_end(&x);
	assert_true(fd >= 0);
	close(fd);

	agent_http_xfer_begin(&x, f->path, -1, ping_req, strlen(ping_req), &sink, 1000,
	                      agent_http_now_ms() + 100);
	while (!agent_http_xfer_step(&x, 0)) {
		struct pollfd p = {.fd = -1};
		bool w = agent_http_xfer_pollfd(&x, &p);
		long long dl = agent_http_xfer_deadline(&x);
		assert_true(dl > 0);
		long long left = dl - agent_http_now_ms();
		int r = poll(&p, w ? 1 : 0, left > 0 ? (int)left : 0);
		short rev = 0;
		if (r > 0)
			rev = p.revents;
		agent_http_xfer_step(&x, rev);
	}
	assert_int_equal(x.err, PERCH_ETIMEDOUT);
	assert_string_equal(x.why, "timed out");
	assert_int_equal(agent_http_xfer_deadline(&x), 0);
	assert_int_equal(agent_http_xfer_end(&x), -1);
	/* An exchange never begun ends quietly. */
	agent_http_xfer z;
	memset(&z, 0, sizeof z);
	assert_int_equal(agent_http_xfer_end(&z), -1);
	fake_stop(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse_content_length),
	        cmocka_unit_test(test_parse_chunked),
	        cmocka_unit_test(test_parse_no_body),
	        cmocka_unit_test(test_parse_interim),
	        cmocka_unit_test(test_parse_close_delimited),
	        cmocka_unit_test(test_parse_keep_alive_rules),
	        cmocka_unit_test(test_parse_leftover),
	        cmocka_unit_test(test_parse_sink_error),
	        cmocka_unit_test(test_parse_rejections),
	        cmocka_unit_test(test_parse_limits),
	        cmocka_unit_test(test_request),
	        cmocka_unit_test(test_client_keep_alive),
	        cmocka_unit_test(test_client_idle_close),
	        cmocka_unit_test(test_client_retry_once),
	        cmocka_unit_test(test_client_no_retry),
	        cmocka_unit_test(test_client_errors),
	        cmocka_unit_test(test_client_async),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
