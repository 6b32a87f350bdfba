/*
 * docker_test.c — unit tests of the pure half of the Docker client
 * (docker_wire.c): URL and query building, X-Registry-Auth encoding and
 * decoding back, HTTP status and pull message translation, the JSON stream
 * splitter fed the pull progress and /events streams cut at every byte
 * boundary, and the parsers of progress lines, events and container state.
 * Also the client's behaviour with no daemon (ECLOSED, no leak), and against
 * a scripted fake engine (http_fake_test.h): the events stream up, broken
 * and back, pulls (one cancelled from its own progress callback), an async
 * call, and blocking calls on one kept connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docker_int.h"
#include "http_fake_test.h"
#include "perch/alloc.h"

static void test_urlenc(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(agent_docker_urlenc("abc-._~XYZ09", out, sizeof out), PERCH_OK);
	assert_string_equal(out, "abc-._~XYZ09");
	assert_int_equal(agent_docker_urlenc("127.0.0.1:5000/a b&c=d", out, sizeof out), PERCH_OK);
	assert_string_equal(out, "127.0.0.1%3A5000%2Fa%20b%26c%3Dd");
	assert_int_equal(agent_docker_urlenc("{\"é\"}", out, sizeof out), PERCH_OK);
	assert_string_equal(out, "%7B%22%C3%A9%22%7D");
	assert_int_equal(agent_docker_urlenc("abcd", out, 4), PERCH_ETOOBIG);
	assert_int_equal(agent_docker_urlenc("abc", out, 4), PERCH_OK);
	assert_int_equal(agent_docker_urlenc("a/", out, 3), PERCH_ETOOBIG);
}

static void test_valid_ref(void **state)
{
	(void)state;
	assert_true(agent_docker_valid_ref("perch-hub"));
	assert_true(agent_docker_valid_ref("/perch_hub.1"));
	assert_true(agent_docker_valid_ref("0123456789abcdef"));
	assert_false(agent_docker_valid_ref(""));
	assert_false(agent_docker_valid_ref(NULL));
	assert_false(agent_docker_valid_ref("-x"));
	assert_false(agent_docker_valid_ref("a/b"));
	assert_false(agent_docker_valid_ref("a?b"));
	assert_false(agent_docker_valid_ref("a%2F"));
	assert_false(agent_docker_valid_ref("../x"));
	char big[AGENT_DOCKER_NAME_MAX + 1];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_false(agent_docker_valid_ref(big));
}

/* b64url_decode: a reference decoder for the tests (padding required). */
static size_t b64url_decode(const char *in, unsigned char *out)
{
	static const char tab[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = strlen(in), o = 0;
	assert_int_equal(n % 4, 0);
	for (size_t i = 0; i < n; i += 4) {
		unsigned v = 0;
		int pad = 0;
		for (size_t k = 0; k < 4; k++) {
			v <<= 6;
			if (in[i + k] == '=') {
				pad++;
				continue;
			}
			const char *p = strchr(tab, in[i + k]);
			assert_non_null(p);
			v |= (unsigned)(p - tab);
		}
		out[o++] = (unsigned char)(v >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(v >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)v;
	}
	return o;
}

static void test_b64url(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(agent_docker_b64url((const unsigned char *)"", 0, out, sizeof out),
	                 PERCH_OK);
	assert_string_equal(out, "");
	assert_int_equal(agent_docker_b64url((const unsigned char *)"f", 1, out, sizeof out),
	                 PERCH_OK);
	assert_string_equal(out, "Zg==");
	assert_int_equal(agent_docker_b64url((const unsigned char *)"fo", 2, out, sizeof out),
	                 PERCH_OK);
	assert_string_equal(out, "Zm8=");
	assert_int_equal(agent_docker_b64url((const unsigned char *)"foo", 3, out, sizeof out),
	                 PERCH_OK);
	assert_string_equal(out, "Zm9v");
	const unsigned char bin[] = {0xfb, 0xff, 0xbf};
	assert_int_equal(agent_docker_b64url(bin, 3, out, sizeof out), PERCH_OK);
	assert_string_equal(out, "-_-_"); /* "+/+/" in standard base64 */
	assert_int_equal(agent_docker_b64url((const unsigned char *)"foo", 3, out, 4),
	                 PERCH_ETOOBIG);
}

static void test_registry_auth(void **state)
{
	(void)state;
	agent_docker_auth a = {"perch", "p\"a/ss+w?rd", "127.0.0.1:5000"};
	char *v = NULL;
	assert_int_equal(agent_docker_registry_auth(&a, &v), PERCH_OK);
	assert_non_null(v);
	assert_null(strpbrk(v, "+/"));
	unsigned char dec[512];
	size_t n = b64url_decode(v, dec);
	json_t *o = json_loadb((const char *)dec, n, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "username")), "perch");
	assert_string_equal(json_string_value(json_object_get(o, "password")), "p\"a/ss+w?rd");
	assert_string_equal(json_string_value(json_object_get(o, "serveraddress")),
	                    "127.0.0.1:5000");
	assert_int_equal(json_object_size(o), 3);
	json_decref(o);
	perch_free(v);
	/* Allocation failure: no leak, an error. */
	size_t blocks = perch_alloc_blocks();
	perch_alloc_fail_after(0);
	assert_int_equal(agent_docker_registry_auth(&a, &v), PERCH_ENOMEM);
	assert_null(v);
	perch_alloc_fail_after(-1);
	assert_int_equal(perch_alloc_blocks(), blocks);
}

static void test_queries(void **state)
{
	(void)state;
	char out[512];
	assert_int_equal(
	        agent_docker_pull_query("127.0.0.1:5000/perch/sensor", "1.0", out, sizeof out),
	        PERCH_OK);
	assert_string_equal(out,
	                    "/images/create?fromImage=127.0.0.1%3A5000%2Fperch%2Fsensor&tag=1.0");
	assert_int_equal(agent_docker_pull_query("busybox", NULL, out, sizeof out), PERCH_OK);
	assert_string_equal(out, "/images/create?fromImage=busybox");
	assert_int_equal(agent_docker_pull_query("x", "a&b=c", out, sizeof out), PERCH_OK);
	assert_string_equal(out, "/images/create?fromImage=x&tag=a%26b%3Dc");
	assert_int_equal(agent_docker_pull_query("", "1", out, sizeof out), PERCH_EINVAL);
	assert_int_equal(agent_docker_pull_query("x", "", out, sizeof out), PERCH_EINVAL);
	assert_int_equal(agent_docker_pull_query("abcdef", "1", out, 20), PERCH_ETOOBIG);

	assert_int_equal(agent_docker_list_query("perch.owner=dev1", true, out, sizeof out),
	                 PERCH_OK);
	assert_string_equal(out, "/containers/json?all=1&filters="
	                         "%7B%22label%22%3A%5B%22perch.owner%3Ddev1%22%5D%7D");
	assert_int_equal(agent_docker_list_query(NULL, false, out, sizeof out), PERCH_OK);
	assert_string_equal(out, "/containers/json?all=0");
	assert_int_equal(agent_docker_list_query("k=\"v\"", true, out, sizeof out), PERCH_OK);
	assert_non_null(strstr(out, "%5C%22v%5C%22")); /* the quote escaped in JSON, then encoded */
}

static void test_http_errors(void **state)
{
	(void)state;
	assert_int_equal(agent_docker_err_from_http(200, PERCH_EBUSY), PERCH_OK);
	assert_int_equal(agent_docker_err_from_http(201, PERCH_EBUSY), PERCH_OK);
	assert_int_equal(agent_docker_err_from_http(204, PERCH_EBUSY), PERCH_OK);
	assert_int_equal(agent_docker_err_from_http(304, PERCH_EBUSY), PERCH_OK);
	assert_int_equal(agent_docker_err_from_http(400, PERCH_EBUSY), PERCH_EINVAL);
	assert_int_equal(agent_docker_err_from_http(401, PERCH_EBUSY), PERCH_EPERM);
	assert_int_equal(agent_docker_err_from_http(403, PERCH_EBUSY), PERCH_EPERM);
	assert_int_equal(agent_docker_err_from_http(404, PERCH_EBUSY), PERCH_ENOENT);
	assert_int_equal(agent_docker_err_from_http(409, PERCH_EBUSY), PERCH_EBUSY);
	assert_int_equal(agent_docker_err_from_http(409, PERCH_EEXIST), PERCH_EEXIST);
	assert_int_equal(agent_docker_err_from_http(500, PERCH_EBUSY), PERCH_EIO);
	assert_int_equal(agent_docker_err_from_http(503, PERCH_EBUSY), PERCH_EIO);
	assert_int_equal(agent_docker_err_from_http(302, PERCH_EBUSY), PERCH_EPROTO);
	assert_int_equal(agent_docker_err_from_http(0, PERCH_EBUSY), PERCH_EPROTO);

	/* What the engine 20.10 says here, verbatim. */
	assert_int_equal(agent_docker_pull_classify(500, "unauthorized: authentication required"),
	                 PERCH_EPERM);
	assert_int_equal(agent_docker_pull_classify(500, "Head \"https://r/v2/x/manifests/1\": "
	                                                 "no basic auth credentials"),
	                 PERCH_EPERM);
	assert_int_equal(agent_docker_pull_classify(0, "pull access denied for x, repository does "
	                                               "not exist or may require 'docker login'"),
	                 PERCH_EPERM);
	assert_int_equal(agent_docker_pull_classify(404,
	                                            "manifest for 127.0.0.1:5000/x:1 not found: "
	                                            "manifest unknown: manifest unknown"),
	                 PERCH_ENOENT);
	assert_int_equal(agent_docker_pull_classify(500, "manifest unknown"), PERCH_ENOENT);
	assert_int_equal(agent_docker_pull_classify(500,
	                                            "Get \"http://127.0.0.1:1/v2/\": dial tcp "
	                                            "127.0.0.1:1: connect: connection refused"),
	                 PERCH_EIO);
	assert_int_equal(agent_docker_pull_classify(401, ""), PERCH_EPERM);
	assert_int_equal(agent_docker_pull_classify(400, "invalid reference format"), PERCH_EINVAL);
	assert_int_equal(agent_docker_pull_classify(500, NULL), PERCH_EIO);

	char m[32];
	const char body[] = "{\"message\":\"No such container: x\"}";
	agent_docker_message(body, strlen(body), m, sizeof m);
	assert_string_equal(m, "No such container: x");
	agent_docker_message("page not found\nmore", 19, m, sizeof m);
	assert_string_equal(m, "page not found");
	agent_docker_message(NULL, 0, m, sizeof m);
	assert_string_equal(m, "");
	agent_docker_message("{\"message\":\"a very long message that will not fit\"}", 51, m, 8);
	assert_string_equal(m, "a very ");
}

/* A pull stream as the engine 20.10 sends it (lines end with \r\n). */
static const char pull_stream[] =
        "{\"status\":\"Pulling from perch-test/dapi\",\"id\":\"1\"}\r\n"
        "{\"status\":\"Pulling fs layer\",\"progressDetail\":{},\"id\":\"0a1b2c3d4e5f\"}\r\n"
        "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":32768,\"total\":771234},"
        "\"progress\":\"[=>   ] 32.77kB/771.2kB\",\"id\":\"0a1b2c3d4e5f\"}\r\n"
        "{\"status\":\"Download complete\",\"progressDetail\":{},\"id\":\"0a1b2c3d4e5f\"}\r\n"
        "{\"status\":\"Extracting\",\"progressDetail\":{\"current\":771234,\"total\":771234},"
        "\"progress\":\"[====] \\\"quoted\\\" {braces} in a string\",\"id\":\"0a1b2c3d4e5f\"}\r\n"
        "{\"status\":\"Pull complete\",\"progressDetail\":{},\"id\":\"0a1b2c3d4e5f\"}\r\n"
        "{\"status\":\"Digest: sha256:6de360f9e86ecd4ad6099c3e950dcedab7a71d53a7680249b32656d392ab"
        "9740\"}\r\n"
        "{\"status\":\"Status: Downloaded newer image for 127.0.0.1:5000/perch-test/dapi:1\"}\r\n";

struct collect {
	int objs, errors;
	char last_status[128];
	long long cur_sum;
	char error[256];
};

static perch_err collect_progress(void *ud, json_t *obj)
{
	struct collect *c = ud;
	agent_docker_progress p;
	const char *e;
	c->objs++;
	if (agent_docker_progress_parse(obj, &p, &e)) {
		c->errors++;
		snprintf(c->error, sizeof c->error, "%s", e);
		return PERCH_OK;
	}
	snprintf(c->last_status, sizeof c->last_status, "%s", p.status);
	if (p.current > 0)
		c->cur_sum += p.current;
	return PERCH_OK;
}

static void test_split_pull_every_boundary(void **state)
{
	(void)state;
	size_t n = strlen(pull_stream);
	for (size_t a = 0; a <= n; a++) {
		struct collect c = {0};
		agent_docker_jsplit js = {0};
		/* Two cuts: at a, and at a + a/3 + 1, so three chunks of varied sizes. */
		size_t b = a + a / 3 + 1 < n ? a + a / 3 + 1 : n;
		assert_int_equal(
		        agent_docker_jsplit_feed(&js, pull_stream, a, collect_progress, &c),
		        PERCH_OK);
		assert_int_equal(
		        agent_docker_jsplit_feed(&js, pull_stream + a, b - a, collect_progress, &c),
		        PERCH_OK);
		assert_int_equal(
		        agent_docker_jsplit_feed(&js, pull_stream + b, n - b, collect_progress, &c),
		        PERCH_OK);
		assert_int_equal(c.objs, 8);
		assert_int_equal(c.errors, 0);
		assert_int_equal(c.cur_sum, 32768 + 771234);
		assert_string_equal(
		        c.last_status,
		        "Status: Downloaded newer image for 127.0.0.1:5000/perch-test/dapi:1");
		assert_int_equal(js.skipped, 0);
		agent_docker_jsplit_fini(&js);
	}
	/* One byte at a time. */
	struct collect c = {0};
	agent_docker_jsplit js = {0};
	for (size_t i = 0; i < n; i++)
		assert_int_equal(
		        agent_docker_jsplit_feed(&js, pull_stream + i, 1, collect_progress, &c),
		        PERCH_OK);
	assert_int_equal(c.objs, 8);
	agent_docker_jsplit_fini(&js);
}

static void test_progress_parse(void **state)
{
	(void)state;
	agent_docker_progress p;
	const char *e;
	json_t *o = json_loads("{\"status\":\"Downloading\",\"progressDetail\":{\"current\":5,"
	                       "\"total\":10},\"id\":\"abc\"}",
	                       0, NULL);
	assert_false(agent_docker_progress_parse(o, &p, &e));
	assert_string_equal(p.layer, "abc");
	assert_string_equal(p.status, "Downloading");
	assert_int_equal(p.current, 5);
	assert_int_equal(p.total, 10);
	json_decref(o);
	o = json_loads("{\"status\":\"Pulling fs layer\",\"progressDetail\":{}}", 0, NULL);
	assert_false(agent_docker_progress_parse(o, &p, &e));
	assert_string_equal(p.layer, "");
	assert_int_equal(p.current, -1);
	assert_int_equal(p.total, -1);
	json_decref(o);
	o = json_loads("{\"errorDetail\":{\"message\":\"unauthorized: authentication required\"},"
	               "\"error\":\"unauthorized: authentication required\"}",
	               0, NULL);
	assert_true(agent_docker_progress_parse(o, &p, &e));
	assert_string_equal(e, "unauthorized: authentication required");
	assert_int_equal(agent_docker_pull_classify(0, e), PERCH_EPERM);
	json_decref(o);
	o = json_loads("{\"error\":null}", 0, NULL);
	assert_true(agent_docker_progress_parse(o, &p, &e));
	assert_string_equal(e, "pull failed");
	json_decref(o);
}

/* /events lines as the engine 20.10 sends them. */
static const char events_stream[] =
        "{\"status\":\"start\",\"id\":\"c0ffee\",\"from\":\"127.0.0.1:5000/perch-test/dapi:1\","
        "\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{\"ID\":\"c0ffee\",\"Attributes\":"
        "{\"image\":\"127.0.0.1:5000/perch-test/dapi:1\",\"name\":\"perch-test-exit3\","
        "\"perch.owner\":\"test\"}},\"scope\":\"local\",\"time\":1795777200,"
        "\"timeNano\":1795777200123456789}\n"
        "{\"Type\":\"network\",\"Action\":\"connect\",\"Actor\":{\"ID\":\"n1\",\"Attributes\":"
        "{\"container\":\"c0ffee\",\"name\":\"perch\",\"type\":\"bridge\"}},\"scope\":\"local\","
        "\"time\":1795777200,\"timeNano\":1795777200100000000}\n"
        "{\"status\":\"health_status: unhealthy\",\"id\":\"c0ffee\",\"Type\":\"container\","
        "\"Action\":\"health_status: unhealthy\",\"Actor\":{\"ID\":\"c0ffee\",\"Attributes\":"
        "{\"name\":\"perch-test-exit3\",\"perch.owner\":\"test\"}},\"time\":1795777201}\n"
        "{\"status\":\"kill\",\"id\":\"c0ffee\",\"Type\":\"container\",\"Action\":\"kill\","
        "\"Actor\":{\"ID\":\"c0ffee\",\"Attributes\":{\"name\":\"perch-test-exit3\","
        "\"signal\":\"9\"}},\"time\":1795777202}\n"
        "{\"status\":\"die\",\"id\":\"c0ffee\",\"Type\":\"container\",\"Action\":\"die\","
        "\"Actor\":{\"ID\":\"c0ffee\",\"Attributes\":{\"exitCode\":\"3\",\"name\":"
        "\"perch-test-exit3\",\"perch.owner\":\"test\",\"note\":\"a } and a \\\" inside\"}},"
        "\"time\":1795777203,\"timeNano\":1795777203000000001}\n"
        "{\"status\":\"oom\",\"id\":\"c0ffee\",\"Type\":\"container\",\"Action\":\"oom\","
        "\"Actor\":{\"ID\":\"c0ffee\",\"Attributes\":{\"name\":\"perch-test-exit3\"}},"
        "\"time\":1795777204}\n"
        "{\"status\":\"destroy\",\"id\":\"c0ffee\",\"Type\":\"container\",\"Action\":\"destroy\","
        "\"Actor\":{\"ID\":\"c0ffee\",\"Attributes\":{\"name\":\"perch-test-exit3\"}},"
        "\"time\":1795777205}\n";

struct evs {
	int n, ignored;
	agent_docker_action acts[8];
	int exit_code;
	char health[16], signal[8], owner[16], name[32], note[32];
	long long die_ns;
};

static perch_err collect_event(void *ud, json_t *obj)
{
	struct evs *e = ud;
	agent_docker_event ev;
	if (agent_docker_event_parse(obj, &ev) != PERCH_OK) {
		e->ignored++;
		return PERCH_OK;
	}
	assert_true(e->n < 8);
	assert_string_equal(ev.id, "c0ffee");
	e->acts[e->n++] = ev.action;
	snprintf(e->name, sizeof e->name, "%s", ev.name);
	if (ev.action == AGENT_DOCKER_ACT_DIE) {
		e->exit_code = ev.exit_code;
		e->die_ns = ev.time_ns;
		snprintf(e->owner, sizeof e->owner, "%s",
		         json_string_value(json_object_get(ev.attrs, "perch.owner")));
		snprintf(e->note, sizeof e->note, "%s",
		         json_string_value(json_object_get(ev.attrs, "note")));
	} else {
		assert_int_equal(ev.exit_code, -1);
	}
	if (ev.action == AGENT_DOCKER_ACT_HEALTH)
		snprintf(e->health, sizeof e->health, "%s", ev.health);
	if (ev.action == AGENT_DOCKER_ACT_KILL)
		snprintf(e->signal, sizeof e->signal, "%s", ev.signal);
	return PERCH_OK;
}

static void check_events(const struct evs *e)
{
	static const agent_docker_action want[] = {
	        AGENT_DOCKER_ACT_START, AGENT_DOCKER_ACT_HEALTH, AGENT_DOCKER_ACT_KILL,
	        AGENT_DOCKER_ACT_DIE,   AGENT_DOCKER_ACT_OOM,    AGENT_DOCKER_ACT_DESTROY};
	assert_int_equal(e->n, 6);
	assert_int_equal(e->ignored, 1); /* the network event */
	for (int i = 0; i < 6; i++)
		assert_int_equal(e->acts[i], want[i]);
	assert_int_equal(e->exit_code, 3);
	assert_int_equal(e->die_ns, 1795777203000000001LL);
	assert_string_equal(e->health, "unhealthy");
	assert_string_equal(e->signal, "9");
	assert_string_equal(e->owner, "test");
	assert_string_equal(e->note, "a } and a \" inside");
	assert_string_equal(e->name, "perch-test-exit3");
}

static void test_split_events_every_boundary(void **state)
{
	(void)state;
	size_t n = strlen(events_stream);
	for (size_t a = 0; a <= n; a++) {
		struct evs e = {0};
		agent_docker_jsplit js = {0};
		assert_int_equal(agent_docker_jsplit_feed(&js, events_stream, a, collect_event, &e),
		                 PERCH_OK);
		assert_int_equal(
		        agent_docker_jsplit_feed(&js, events_stream + a, n - a, collect_event, &e),
		        PERCH_OK);
		check_events(&e);
		agent_docker_jsplit_fini(&js);
	}
	/* Random chunk sizes, many times. */
	srand(11);
	for (int round = 0; round < 300; round++) {
		struct evs e = {0};
		agent_docker_jsplit js = {0};
		for (size_t i = 0; i < n;) {
			size_t k = 1 + (size_t)rand() % 40;
			if (k > n - i)
				k = n - i;
			assert_int_equal(agent_docker_jsplit_feed(&js, events_stream + i, k,
			                                          collect_event, &e),
			                 PERCH_OK);
			i += k;
		}
		check_events(&e);
		agent_docker_jsplit_fini(&js);
	}
}

static void test_event_parse_edges(void **state)
{
	(void)state;
	agent_docker_event ev;
	const char *bad[] = {
	        "{}",
	        "{\"Type\":\"image\",\"Action\":\"pull\",\"Actor\":{\"ID\":\"x\"}}",
	        "{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"Attributes\":{}}}",
	        "{\"Type\":\"container\",\"Actor\":{\"ID\":\"x\",\"Attributes\":{}}}",
	        "{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"x\"}}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *o = json_loads(bad[i], 0, NULL);
		assert_non_null(o);
		assert_int_equal(agent_docker_event_parse(o, &ev), PERCH_EINVAL);
		json_decref(o);
	}
	const struct {
		const char *attr;
		int code;
	} dies[] = {{"\"exitCode\":\"137\"", 137},
	            {"\"exitCode\":\"x\"", -1},
	            {"\"exitCode\":\"300\"", -1},
	            {"\"exitCode\":3", -1},
	            {"\"other\":\"1\"", -1}};
	for (size_t i = 0; i < sizeof dies / sizeof dies[0]; i++) {
		char js[256];
		snprintf(js, sizeof js,
		         "{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"x\","
		         "\"Attributes\":{%s}},\"time\":5}",
		         dies[i].attr);
		json_t *o = json_loads(js, 0, NULL);
		assert_int_equal(agent_docker_event_parse(o, &ev), PERCH_OK);
		assert_int_equal(ev.exit_code, dies[i].code);
		assert_int_equal(ev.time_ns, 5000000000LL);
		assert_string_equal(ev.name, "");
		json_decref(o);
	}
	json_t *o = json_loads("{\"Type\":\"container\",\"Action\":\"exec_start: sh -c x\","
	                       "\"Actor\":{\"ID\":\"x\",\"Attributes\":{}}}",
	                       0, NULL);
	assert_int_equal(agent_docker_event_parse(o, &ev), PERCH_OK);
	assert_int_equal(ev.action, AGENT_DOCKER_ACT_OTHER);
	assert_string_equal(ev.action_text, "exec_start: sh -c x");
	json_decref(o);
}

static perch_err count_obj(void *ud, json_t *obj)
{
	(void)obj;
	(*(int *)ud)++;
	return PERCH_OK;
}

static perch_err stop_obj(void *ud, json_t *obj)
{
	(void)obj;
	(*(int *)ud)++;
	return PERCH_ECLOSED;
}

static void test_split_limits_and_garbage(void **state)
{
	(void)state;
	int n = 0;
	agent_docker_jsplit js = {.max = 64};
	/* Too big: refused, and the splitter resynchronises on the next object. */
	char big[200];
	memset(big, ' ', sizeof big);
	big[0] = '{';
	memcpy(big + 1, "\"k\":\"", 5);
	memset(big + 6, 'x', 150);
	memcpy(big + 156, "\"}", 2);
	assert_int_equal(agent_docker_jsplit_feed(&js, big, 158, count_obj, &n), PERCH_ETOOBIG);
	assert_int_equal(n, 0);
	assert_int_equal(agent_docker_jsplit_feed(&js, "{\"a\":1}", 7, count_obj, &n), PERCH_OK);
	assert_int_equal(n, 1);
	/* Malformed inside braces: EPROTO, then usable again. */
	assert_int_equal(agent_docker_jsplit_feed(&js, "{\"a\":,}", 7, count_obj, &n),
	                 PERCH_EPROTO);
	assert_int_equal(
	        agent_docker_jsplit_feed(&js, "junk {\"b\":[1,{\"c\":2}]}\n", 23, count_obj, &n),
	        PERCH_OK);
	assert_int_equal(n, 2);
	assert_int_equal(js.skipped, 4);
	/* Objects back to back with no separator; a callback that stops the feed. */
	assert_int_equal(agent_docker_jsplit_feed(&js, "{}{}{}", 6, count_obj, &n), PERCH_OK);
	assert_int_equal(n, 5);
	assert_int_equal(agent_docker_jsplit_feed(&js, "{}{}", 4, stop_obj, &n), PERCH_ECLOSED);
	assert_int_equal(n, 6);
	agent_docker_jsplit_fini(&js);
	agent_docker_jsplit_fini(&js); /* twice is harmless */
	/* Allocation failure while gathering. */
	agent_docker_jsplit js2 = {0};
	perch_alloc_fail_after(0);
	assert_int_equal(agent_docker_jsplit_feed(&js2, "{\"a\":1}", 7, count_obj, &n),
	                 PERCH_ENOMEM);
	perch_alloc_fail_after(-1);
	assert_int_equal(agent_docker_jsplit_feed(&js2, "{\"a\":1}", 7, count_obj, &n), PERCH_OK);
	agent_docker_jsplit_fini(&js2);
}

static void test_state_parse(void **state)
{
	(void)state;
	agent_docker_state st;
	json_t *o = json_loads(
	        "{\"Id\":\"abc123\",\"Name\":\"/perch-hub\",\"Image\":\"sha256:feed\","
	        "\"RestartCount\":2,\"State\":{\"Status\":\"exited\",\"Running\":false,"
	        "\"OOMKilled\":true,\"Pid\":0,\"ExitCode\":137,\"StartedAt\":\"2026-01-01T00:00:"
	        "00Z\","
	        "\"FinishedAt\":\"2026-01-01T00:00:01.5Z\",\"Health\":{\"Status\":\"unhealthy\"}}}",
	        0, NULL);
	assert_int_equal(agent_docker_state_parse(o, &st), PERCH_OK);
	assert_string_equal(st.id, "abc123");
	assert_string_equal(st.name, "perch-hub");
	assert_string_equal(st.image_id, "sha256:feed");
	assert_string_equal(st.status, "exited");
	assert_string_equal(st.health, "unhealthy");
	assert_string_equal(st.finished_at, "2026-01-01T00:00:01.5Z");
	assert_false(st.running);
	assert_true(st.oom_killed);
	assert_int_equal(st.exit_code, 137);
	assert_int_equal(st.restart_count, 2);
	json_decref(o);
	o = json_loads("{\"Id\":\"x\"}", 0, NULL);
	assert_int_equal(agent_docker_state_parse(o, &st), PERCH_EPROTO);
	json_decref(o);
}

static void on_ev(void *ud, const agent_docker_event *ev)
{
	int *counts = ud;
	counts[ev->kind]++;
	if (ev->kind == AGENT_DOCKER_EV_DISCONNECTED)
		assert_int_equal(ev->err, PERCH_ECLOSED);
}

static void on_pull(void *ud, perch_err err, const char *msg)
{
	perch_err *out = ud;
	*out = err;
	assert_non_null(strstr(msg, "not answering"));
}

/* With no daemon: every call says ECLOSED, async ones through their callback,
 * the events stream reports one DISCONNECTED and keeps retrying; no leak. */
static void test_no_daemon(void **state)
{
	(void)state;
	size_t blocks = perch_alloc_blocks();
	agent_docker *d;
	agent_docker_opts opts = {.socket_path = "/nonexistent/perch-test/docker.sock"};
	assert_int_equal(agent_docker_open(&opts, &d), PERCH_OK);
	assert_int_equal(agent_docker_ping(d), PERCH_ECLOSED);
	assert_string_equal(agent_docker_errmsg(d),
	                    "Docker daemon not answering at /nonexistent/perch-test/docker.sock");
	agent_docker_state st;
	assert_int_equal(agent_docker_inspect(d, "x", &st, NULL), PERCH_ECLOSED);
	assert_int_equal(agent_docker_inspect(d, "x/../y", &st, NULL), PERCH_EINVAL);
	perch_err pulled = PERCH_EINTERNAL;
	assert_int_equal(
	        agent_docker_pull_start(d, "img", "1", NULL, 0, NULL, on_pull, &pulled, NULL),
	        PERCH_OK);
	int counts[3] = {0};
	assert_int_equal(agent_docker_events_start(d, on_ev, counts), PERCH_OK);
	assert_int_equal(agent_docker_events_start(d, on_ev, counts), PERCH_EBUSY);
	for (int i = 0; i < 40 && (pulled == PERCH_EINTERNAL || agent_docker_pending(d) > 1); i++)
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	assert_int_equal(pulled, PERCH_ECLOSED);
	for (int i = 0; i < 20; i++) /* ~1 s: several reconnects, one report */
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	assert_int_equal(counts[AGENT_DOCKER_EV_DISCONNECTED], 1);
	assert_int_equal(counts[AGENT_DOCKER_EV_CONNECTED], 0);
	assert_false(agent_docker_events_connected(d));
	assert_true(agent_docker_timeout_ms(d) >= 0); /* a reconnect is scheduled */
	agent_docker_events_stop(d);
	assert_int_equal(agent_docker_pending(d), 0);
	agent_docker_close(d);
	agent_docker_close(NULL);
	assert_int_equal(perch_alloc_blocks(), blocks);
}

/* ---- against a fake engine ------------------------------------------------------- */

struct fake_run {
	int counts[3];      /* events by kind */
	int containers;     /* container events */
	char disc_msg[256]; /* the DISCONNECTED message */
	perch_err disc_err;
	int progress;        /* progress lines of the current pull */
	bool cancel_in_cb;   /* cancel the pull from its first progress line */
	agent_docker_op *op; /* the pull */
	agent_docker *d;
	bool pulled;
	perch_err pull_err;
	bool called;
	perch_err call_err;
	long call_http;
};

static void fr_event(void *ud, const agent_docker_event *ev)
{
	struct fake_run *r = ud;
	r->counts[ev->kind]++;
	if (ev->kind == AGENT_DOCKER_EV_CONTAINER)
		r->containers++;
	if (ev->kind == AGENT_DOCKER_EV_DISCONNECTED) {
		r->disc_err = ev->err;
		snprintf(r->disc_msg, sizeof r->disc_msg, "%s", ev->msg);
	}
}

static void fr_progress(void *ud, const agent_docker_progress *p)
{
	struct fake_run *r = ud;
	(void)p;
	r->progress++;
	if (r->cancel_in_cb) {
		agent_docker_cancel(r->d, r->op);
		agent_docker_cancel(r->d, r->op); /* twice is harmless */
	}
}

static void fr_pulled(void *ud, perch_err err, const char *msg)
{
	struct fake_run *r = ud;
	(void)msg;
	r->pulled = true;
	r->pull_err = err;
}

static void fr_called(void *ud, perch_err err, long http, const json_t *resp, const char *msg)
{
	struct fake_run *r = ud;
	r->called = true;
	r->call_err = err;
	r->call_http = http;
	assert_null(resp);
	assert_string_equal(msg, "");
}

static void test_fake_engine(void **state)
{
	(void)state;
	static char ev_answer[4096], pull_answer[4096], pull_open[4096];
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	                           "Transfer-Encoding: chunked\r\n\r\n";
	snprintf(ev_answer, sizeof ev_answer, "%s%zx\r\n%s\r\n", head, strlen(events_stream),
	         events_stream);
	snprintf(pull_answer, sizeof pull_answer, "%s%zx\r\n%s\r\n0\r\n\r\n", head,
	         strlen(pull_stream), pull_stream);
	snprintf(pull_open, sizeof pull_open, "%s%zx\r\n%s\r\n", head, strlen(pull_stream),
	         pull_stream);
	const fake_step steps[] = {
	        {FAKE_ANSWER, ev_answer},
	        {FAKE_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"},
	        {FAKE_ANSWER, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
	                      "Content-Length: 38\r\n\r\n{\"message\":\"No such container: "
	                      "nope\"}\n"},
	        {FAKE_ANSWER, pull_answer},
	        {FAKE_ANSWER, pull_open},
	        {FAKE_ANSWER, "HTTP/1.1 204 No Content\r\n\r\n"},
	        {FAKE_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"},
	        {FAKE_ANSWER, ev_answer},
	};
	fake *f = fake_start(steps, sizeof steps / sizeof steps[0]);
	assert_non_null(f);
	size_t blocks = perch_alloc_blocks();
	agent_docker *d;
	agent_docker_opts opts = {.socket_path = f->path};
	assert_int_equal(agent_docker_open(&opts, &d), PERCH_OK);
	struct fake_run r = {.d = d};

	/* The events stream: CONNECTED, then the six container events. */
	assert_int_equal(agent_docker_events_start(d, fr_event, &r), PERCH_OK);
	for (int i = 0; i < 200 && r.containers < 6; i++)
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	assert_int_equal(r.counts[AGENT_DOCKER_EV_CONNECTED], 1);
	assert_int_equal(r.containers, 6);
	assert_true(agent_docker_events_connected(d));

	/* Blocking calls, on one kept connection, while the stream is open. */
	assert_int_equal(agent_docker_ping(d), PERCH_OK);
	agent_docker_state st;
	assert_int_equal(agent_docker_inspect(d, "nope", &st, NULL), PERCH_ENOENT);
	assert_string_equal(agent_docker_errmsg(d), "No such container: nope");
	char req[512];
	fake_last_request(f, req, sizeof req);
	assert_string_equal(req,
	                    "GET /v1.41/containers/nope/json HTTP/1.1\r\nHost: docker\r\n\r\n");

	/* A pull to its end. */
	agent_docker_auth auth = {"perch", "secret", "127.0.0.1:5000"};
	assert_int_equal(
	        agent_docker_pull_start(d, "img", "1", &auth, 0, fr_progress, fr_pulled, &r, &r.op),
	        PERCH_OK);
	for (int i = 0; i < 200 && !r.pulled; i++)
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	assert_true(r.pulled);
	assert_int_equal(r.pull_err, PERCH_OK);
	assert_int_equal(r.progress, 8);
	fake_last_request(f, req, sizeof req);
	assert_non_null(strstr(req, "POST /v1.41/images/create?fromImage=img&tag=1 HTTP/1.1\r\n"));
	assert_non_null(strstr(req, "\r\nX-Registry-Auth: "));
	assert_non_null(strstr(req, "\r\nContent-Length: 0\r\n"));

	/* A pull cancelled from its own progress callback: no more progress, no
	 * done, nothing pending but the stream. */
	r.pulled = false;
	r.progress = 0;
	r.cancel_in_cb = true;
	assert_int_equal(
	        agent_docker_pull_start(d, "img", "2", NULL, 0, fr_progress, fr_pulled, &r, &r.op),
	        PERCH_OK);
	assert_int_equal(agent_docker_pending(d), 2);
	for (int i = 0; i < 200 && r.progress == 0; i++)
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	for (int i = 0; i < 5; i++)
		assert_int_equal(agent_docker_run(d, 10), PERCH_OK);
	assert_int_equal(r.progress, 1);
	assert_false(r.pulled);
	assert_int_equal(agent_docker_pending(d), 1);

	/* An async call. */
	assert_int_equal(agent_docker_call_async(d, "POST", "/containers/x/stop?t=1", NULL, 0,
	                                         fr_called, &r, NULL),
	                 PERCH_OK);
	for (int i = 0; i < 200 && !r.called; i++)
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	assert_int_equal(r.call_err, PERCH_OK);
	assert_int_equal(r.call_http, 204);

	/* A malformed answer. */
	assert_int_equal(agent_docker_ping(d), PERCH_EPROTO);
	char want[256];
	snprintf(want, sizeof want, "Docker daemon at %s: malformed answer: bad Content-Length",
	         f->path);
	assert_string_equal(agent_docker_errmsg(d), want);

	/* The engine drops every connection: DISCONNECTED, then back. */
	fake_kick(f);
	for (int i = 0; i < 200 && r.counts[AGENT_DOCKER_EV_CONNECTED] < 2; i++)
		assert_int_equal(agent_docker_run(d, 50), PERCH_OK);
	assert_int_equal(r.counts[AGENT_DOCKER_EV_DISCONNECTED], 1);
	assert_int_equal(r.disc_err, PERCH_ECLOSED);
	snprintf(want, sizeof want,
	         "Docker daemon at %s closed the connection (before the last chunk)", f->path);
	assert_string_equal(r.disc_msg, want);
	assert_int_equal(r.counts[AGENT_DOCKER_EV_CONNECTED], 2);
	agent_docker_events_stop(d);
	assert_int_equal(agent_docker_pending(d), 0);
	agent_docker_close(d);
	assert_int_equal(perch_alloc_blocks(), blocks);
	fake_stop(f);
}

static void test_stale_task(void **state)
{
	(void)state;
	assert_true(agent_docker_stale_task("task 4f1e...: already exists"));
	assert_true(agent_docker_stale_task(
	        "failed to start shim: mkdir /var/lib/docker/exec/containerd/daemon/"
	        "io.containerd.runtime.v2.task/moby/e04c7ed1: file exists: unknown"));
	assert_false(agent_docker_stale_task("endpoint with name x already exists in network n"));
	assert_false(agent_docker_stale_task("failed to start shim: exec: no such file"));
	assert_false(agent_docker_stale_task("transport is closing: unavailable"));
	assert_false(agent_docker_stale_task(""));
	assert_false(agent_docker_stale_task(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_urlenc),
	        cmocka_unit_test(test_valid_ref),
	        cmocka_unit_test(test_b64url),
	        cmocka_unit_test(test_registry_auth),
	        cmocka_unit_test(test_queries),
	        cmocka_unit_test(test_http_errors),
	        cmocka_unit_test(test_split_pull_every_boundary),
	        cmocka_unit_test(test_progress_parse),
	        cmocka_unit_test(test_split_events_every_boundary),
	        cmocka_unit_test(test_event_parse_edges),
	        cmocka_unit_test(test_split_limits_and_garbage),
	        cmocka_unit_test(test_state_parse),
	        cmocka_unit_test(test_no_daemon),
	        cmocka_unit_test(test_fake_engine),
	        cmocka_unit_test(test_stale_task),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
