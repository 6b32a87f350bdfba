/*
 * hublink_test.c — unit tests of hublink.c: the merge patch it computes
 * (RFC 7396, nulls for what left), the names twins refuse, and whole
 * sessions against a scripted fake hub on a loopback TCP socket: the
 * CONNECT it sends (client id, user name, a SAS token that verifies with
 * the derived $edgeAgent key), SUBSCRIBE, twin GET, the first patch
 * deleting a module the twin still had, coalescing (nothing sent before
 * the interval, nothing when nothing changed), 429 and 400 answers, a
 * dropped connection and the reconnect that finds the twin in sync, a
 * refused login, a missed answer, keepalive pings and the token renewal;
 * and the diff and the patching under failing allocations (no leak).
 * Time is the test's: the link is driven with a fake clock, and every wait
 * on the socket is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent.h"
#include "hublink.h"
#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/mqtt.h"
#include "perch/sas.h"

#define KEY  "bm90IGEgcmVhbCBrZXkgYnV0IDMyIGJ5dGVzIGxvbmch" /* 32 bytes */
#define HOST "perch.test"
#define DEV  "dev1"

/* --- merge patches ------------------------------------------------------------ */

static void assert_json(const json_t *got, const char *want_text)
{
	json_t *want = json_loads(want_text, 0, NULL);
	assert_non_null(want);
	if (!json_equal(got, want)) {
		char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
		fprintf(stderr, "got  %s\nwant %s\n", g, want_text);
		perch_free(g);
		fail();
	}
	json_decref(want);
}

static void check_diff(const char *from, const char *to, const char *want)
{
	json_t *f = json_loads(from, 0, NULL), *t = json_loads(to, 0, NULL);
	assert_non_null(f);
	assert_non_null(t);
	json_t *p = agent_hublink_diff(f, t);
	assert_non_null(p);
	assert_json(p, want);
	json_decref(p);
	json_decref(f);
	json_decref(t);
}

static void test_diff(void **state)
{
	(void)state;
	check_diff("{}", "{}", "{}");
	check_diff("{\"a\":1,\"b\":{\"c\":2}}", "{\"b\":{\"c\":2},\"a\":1}", "{}");
	check_diff("{}", "{\"a\":1,\"b\":{\"c\":2}}", "{\"a\":1,\"b\":{\"c\":2}}");
	check_diff("{\"a\":1,\"b\":2}", "{\"a\":1}", "{\"b\":null}");
	check_diff("{\"m\":{\"x\":{\"s\":\"running\",\"n\":0},\"y\":{\"s\":\"running\"}}}",
	           "{\"m\":{\"x\":{\"s\":\"failed\",\"n\":0}}}",
	           "{\"m\":{\"x\":{\"s\":\"failed\"},\"y\":null}}");
	check_diff("{\"a\":{\"b\":1}}", "{\"a\":5}", "{\"a\":5}");
	check_diff("{\"a\":5}", "{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}");
	check_diff("{\"a\":[1,2]}", "{\"a\":[1,3]}", "{\"a\":[1,3]}");
	check_diff("{\"a\":{\"b\":{\"c\":1,\"d\":2}}}", "{\"a\":{\"b\":{\"c\":1}}}",
	           "{\"a\":{\"b\":{\"d\":null}}}");
	/* from absent (NULL): everything is new */
	json_t *t = json_pack("{s:i}", "a", 1);
	json_t *p = agent_hublink_diff(NULL, t);
	assert_json(p, "{\"a\":1}");
	json_decref(p);
	json_decref(t);
}

static void test_fit(void **state)
{
	(void)state;
	json_t *r = json_loads("{\"modules\":{\"ok-1_x\":{},\"a.b\":{},\"c d\":{},\"e$\":{}}}", 0,
	                       NULL);
	char dropped[64];
	assert_int_equal(agent_hublink_fit(r, dropped, sizeof dropped), 3);
	assert_true(strcmp(dropped, "a.b") == 0 || strcmp(dropped, "c d") == 0 ||
	            strcmp(dropped, "e$") == 0);
	assert_json(r, "{\"modules\":{\"ok-1_x\":{}}}");
	assert_int_equal(agent_hublink_fit(r, dropped, sizeof dropped), 0);
	assert_string_equal(dropped, "");
	json_decref(r);
}

/* --- a scripted hub ----------------------------------------------------------- */

typedef struct peer {
	int lfd, fd;
	int port;
	perch_mqtt_decoder dec;
	uint8_t buf[65536];
	size_t have, off;
} peer;

typedef struct fixture {
	peer p;
	agent_hublink *l;
	json_t *cur;       /* the report the link publishes */
	int64_t now;       /* the link's clock */
	size_t base_bytes; /* perch_alloc_bytes before the fixture */
} fixture;

static json_t *report_cb(void *ud)
{
	fixture *f = ud;
	return json_deep_copy(f->cur);
}

static void peer_listen(peer *p)
{
	memset(p, 0, sizeof *p);
	p->fd = -1;
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->lfd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(p->lfd, 4), 0);
	socklen_t sl = sizeof sa;
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&sa, &sl), 0);
	p->port = ntohs(sa.sin_port);
}

static void peer_close(peer *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	perch_mqtt_decoder_fini(&p->dec);
	p->have = p->off = 0;
}

/* pump lets the link read and write (poll at most ms), without a tick. */
static void pump_ms(fixture *f, int ms)
{
	struct pollfd pfd[1];
	size_t n = agent_hublink_pollfds(f->l, pfd, 1);
	if (n == 0)
		return;
	if (poll(pfd, n, ms) > 0)
		agent_hublink_service(f->l, pfd, n, f->now);
}

static void pump(fixture *f)
{
	pump_ms(f, 0);
}

/* peer_accept takes the link's connection (within 5 s, pumping the link). */
static void peer_accept(fixture *f)
{
	peer *p = &f->p;
	for (int i = 0; i < 250 && p->fd < 0; i++) {
		pump(f);
		struct pollfd pfd = {.fd = p->lfd, .events = POLLIN};
		if (poll(&pfd, 1, 20) > 0)
			p->fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
	}
	assert_true(p->fd >= 0);
	perch_mqtt_decoder_init(&p->dec, PERCH_MQTT_SERVER, 0, 0);
	p->have = p->off = 0;
}

/* peer_next: the next packet from the link, within 5 s (false: EOF). */
static bool peer_next(fixture *f, perch_mqtt_packet *pkt)
{
	peer *p = &f->p;
	memset(pkt, 0, sizeof *pkt);
	for (int i = 0; i < 250; i++) {
		if (p->off < p->have) {
			size_t used = 0;
			perch_err err = perch_mqtt_decode(&p->dec, p->buf + p->off,
			                                  p->have - p->off, &used, pkt);
			p->off += used;
			if (err == PERCH_OK)
				return true;
			assert_int_equal(err, PERCH_EAGAIN);
		}
		p->have = p->off = 0;
		pump(f);
		struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		ssize_t r = recv(p->fd, p->buf, sizeof p->buf, 0);
		if (r == 0)
			return false;
		assert_true(r > 0);
		p->have = (size_t)r;
	}
	fail_msg("no packet from the link within 5 s");
	return false;
}

static void peer_expect(fixture *f, perch_mqtt_type type, perch_mqtt_packet *pkt)
{
	assert_true(peer_next(f, pkt));
	if (pkt->type != type)
		fail_msg("expected %s, got %s", perch_mqtt_type_str(type),
		         perch_mqtt_type_str(pkt->type));
}

static void peer_send(fixture *f, const perch_mqtt_packet *pkt)
{
	uint8_t buf[8192];
	size_t len = 0;
	assert_int_equal(perch_mqtt_encode(pkt, buf, sizeof buf, &len), PERCH_OK);
	assert_int_equal(send(f->p.fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
	/* let the link take it in */
	pump_ms(f, 20);
}

static void peer_publish(fixture *f, const char *topic, const char *body)
{
	perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH};
	p.publish.topic = perch_slice_cstr(topic);
	p.publish.payload = perch_slice_cstr(body);
	peer_send(f, &p);
}

/* twin_request: the next packet must be a publish of kind; its rid is
 * copied to rid, its payload parsed into *body (may be NULL). */
static void twin_request(fixture *f, perch_iothub_kind kind, char *rid, size_t cap, json_t **body)
{
	perch_mqtt_packet pkt;
	peer_expect(f, PERCH_MQTT_PUBLISH, &pkt);
	perch_iothub_topic t;
	assert_int_equal(perch_iothub_topic_parse(pkt.publish.topic, &t, NULL), PERCH_OK);
	assert_int_equal(t.kind, kind);
	assert_true(t.rid.len > 0 && t.rid.len < cap);
	memcpy(rid, t.rid.ptr, t.rid.len);
	rid[t.rid.len] = '\0';
	if (body != NULL) {
		*body = json_loadb(pkt.publish.payload.ptr, pkt.publish.payload.len, 0, NULL);
		assert_non_null(*body);
	}
}

static void answer(fixture *f, unsigned status, const char *rid, uint64_t version, const char *body)
{
	char topic[128];
	if (version > 0)
		snprintf(topic, sizeof topic, "$iothub/twin/res/%u/?$rid=%s&$version=%llu", status,
		         rid, (unsigned long long)version);
	else
		snprintf(topic, sizeof topic, "$iothub/twin/res/%u/?$rid=%s", status, rid);
	peer_publish(f, topic, body);
}

/* handshake accepts a connection and plays CONNECT..SUBACK; checks the
 * login. The twin GET is the caller's. */
static void handshake(fixture *f)
{
	peer_accept(f);
	perch_mqtt_packet pkt;
	peer_expect(f, PERCH_MQTT_CONNECT, &pkt);
	assert_true(perch_slice_eq_cstr(pkt.connect.client_id, DEV "/$edgeAgent"));
	assert_true(pkt.connect.has_username && pkt.connect.has_password);
	assert_true(perch_slice_eq_cstr(pkt.connect.username,
	                                HOST "/" DEV "/$edgeAgent/?api-version=2018-06-30"));
	assert_int_equal(pkt.connect.keep_alive, 60);
	char mkey[64];
	size_t klen = 0;
	assert_int_equal(perch_sas_derive_module_key(PERCH_SLICE_LIT(KEY),
	                                             PERCH_SLICE_LIT("$edgeAgent"), mkey,
	                                             sizeof mkey, &klen),
	                 PERCH_OK);
	perch_sas_check chk = {.resource =
	                               PERCH_SLICE_LIT(HOST "/devices/" DEV "/modules/$edgeAgent"),
	                       .key = {mkey, klen},
	                       .now = (uint64_t)(f->now / 1000),
	                       .max_lifetime = 3600};
	perch_sas_reason why = PERCH_SAS_OK;
	assert_int_equal(perch_sas_verify(pkt.connect.password, &chk, NULL, &why), PERCH_OK);
	/* the device key itself does not verify it: the key is the derived one */
	chk.key = PERCH_SLICE_LIT(KEY);
	assert_int_equal(perch_sas_verify(pkt.connect.password, &chk, NULL, &why), PERCH_EPERM);

	perch_mqtt_packet ack = {.type = PERCH_MQTT_CONNACK};
	peer_send(f, &ack);
	peer_expect(f, PERCH_MQTT_SUBSCRIBE, &pkt);
	perch_mqtt_filter_iter it;
	perch_mqtt_filter flt;
	perch_mqtt_filter_iter_init(&it, &pkt);
	assert_true(perch_mqtt_filter_next(&it, &flt));
	assert_true(perch_slice_eq_cstr(flt.filter, "$iothub/twin/res/#"));
	uint8_t code = 0;
	perch_mqtt_packet sa = {.type = PERCH_MQTT_SUBACK};
	sa.suback.packet_id = pkt.subscribe.packet_id;
	sa.suback.codes = &code;
	sa.suback.count = 1;
	peer_send(f, &sa);
}

static json_t *status_of(fixture *f)
{
	return agent_hublink_status(f->l);
}

static long long stat_int(fixture *f, const char *key)
{
	json_t *s = status_of(f);
	long long v = (long long)json_integer_value(json_object_get(s, key));
	json_decref(s);
	return v;
}

static bool stat_bool(fixture *f, const char *key)
{
	json_t *s = status_of(f);
	bool v = json_is_true(json_object_get(s, key));
	json_decref(s);
	return v;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	peer_listen(&f->p);
	f->base_bytes = perch_alloc_bytes();
	f->now = agent_now_ms();
	f->cur = json_loads(
	        "{\"schemaVersion\":\"1.1\",\"lastDesiredVersion\":1,"
	        "\"modules\":{\"a\":{\"runtimeStatus\":\"running\",\"restartCount\":0}}}",
	        0, NULL);
	agent_hublink_cfg cfg = {.host = "127.0.0.1",
	                         .port = f->p.port,
	                         .device_id = DEV,
	                         .iothub_hostname = HOST,
	                         .device_key = KEY,
	                         .token_lifetime_ms = 3600000,
	                         .min_interval_ms = 1000,
	                         .timeout_ms = 10000,
	                         .report = report_cb,
	                         .ud = f};
	assert_int_equal(agent_hublink_new(&cfg, &f->l), PERCH_OK);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	agent_hublink_free(f->l);
	peer_close(&f->p);
	close(f->p.lfd);
	json_decref(f->cur);
	assert_int_equal(perch_alloc_bytes(), f->base_bytes); /* nothing leaked */
	free(f);
	return 0;
}

/* up brings the link up against a twin whose reported section is reported
 * (version v); returns nothing: the caller looks at what follows. */
static void up(fixture *f, const char *reported, uint64_t v)
{
	assert_true(agent_hublink_tick(f->l, f->now, true) >= 0);
	handshake(f);
	char rid[64], doc[4096];
	twin_request(f, PERCH_IOTHUB_TWIN_GET, rid, sizeof rid, NULL);
	snprintf(doc, sizeof doc, "{\"desired\":{\"$version\":1},\"reported\":%s}", reported);
	json_t *r = json_loads(doc, 0, NULL);
	json_object_set_new(json_object_get(r, "reported"), "$version",
	                    json_integer((json_int_t)v));
	char *text = json_dumps(r, JSON_COMPACT);
	answer(f, 200, rid, 0, text);
	perch_free(text);
	json_decref(r);
	assert_true(stat_bool(f, "connected"));
}

static void set_restarts(fixture *f, int n)
{
	json_object_set_new(json_object_get(json_object_get(f->cur, "modules"), "a"),
	                    "restartCount", json_integer(n));
}

static void test_session(void **state)
{
	fixture *f = *state;
	char rid[64];
	json_t *body;
	/* the hub is not ready: nothing happens */
	assert_int_equal(agent_hublink_tick(f->l, f->now, false), -1);
	struct pollfd pfd[1];
	assert_int_equal(agent_hublink_pollfds(f->l, pfd, 1), 0);
	assert_false(stat_bool(f, "connected"));

	/* the twin still has module "old" from an earlier deployment */
	up(f, "{\"schemaVersion\":\"1.1\",\"modules\":{\"old\":{\"runtimeStatus\":\"running\"}}}",
	   4);
	assert_int_equal(stat_int(f, "reportedVersion"), 4);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, &body);
	assert_json(body, "{\"lastDesiredVersion\":1,\"modules\":{\"old\":null,"
	                  "\"a\":{\"runtimeStatus\":\"running\",\"restartCount\":0}}}");
	json_decref(body);
	assert_false(stat_bool(f, "inSync"));
	answer(f, 204, rid, 5, "");
	assert_true(stat_bool(f, "inSync"));
	assert_int_equal(stat_int(f, "reportedVersion"), 5);
	assert_int_equal(stat_int(f, "patches"), 1);

	/* unchanged: nothing is sent, however often it ticks */
	for (int i = 1; i <= 5; i++) {
		f->now += 1000;
		agent_hublink_tick(f->l, f->now, true);
	}
	assert_int_equal(stat_int(f, "patches"), 1);

	/* a change right after a patch waits for the interval */
	set_restarts(f, 1);
	int64_t last = f->now;
	f->now += 1;
	agent_hublink_tick(f->l, f->now, true);
	f->now = last + 999;
	int wait = agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(stat_int(f, "patches"), 1);
	assert_true(wait >= 0 && wait <= 1);
	f->now = last + 1000;
	agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(stat_int(f, "patches"), 2);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, &body);
	assert_json(body, "{\"modules\":{\"a\":{\"restartCount\":1}}}");
	json_decref(body);

	/* one in flight at a time: another change waits for the answer */
	set_restarts(f, 2);
	f->now += 5000;
	agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(stat_int(f, "patches"), 2);

	/* 429: the same change goes again after the backoff (2 s) */
	answer(f, 429, rid, 0, "{\"errorCode\":429001,\"message\":\"slow down\"}");
	assert_int_equal(stat_int(f, "throttled"), 1);
	f->now += 1999;
	agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(stat_int(f, "patches"), 2);
	f->now += 1;
	agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(stat_int(f, "patches"), 3);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, &body);
	assert_json(body, "{\"modules\":{\"a\":{\"restartCount\":2}}}"); /* from the 204'd state */
	json_decref(body);
	answer(f, 204, rid, 6, "");
	assert_int_equal(stat_int(f, "reportedVersion"), 6);

	/* 400: logged, that report is not sent again; a changed one is */
	json_object_set_new(f->cur, "bad", json_string("x"));
	f->now += 1000;
	agent_hublink_tick(f->l, f->now, true);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, &body);
	assert_json(body, "{\"bad\":\"x\"}");
	json_decref(body);
	answer(f, 400, rid, 0, "{\"errorCode\":400004,\"message\":\"no\"}");
	assert_int_equal(stat_int(f, "refused"), 1);
	for (int i = 0; i < 5; i++) {
		f->now += 1000;
		agent_hublink_tick(f->l, f->now, true);
	}
	assert_int_equal(stat_int(f, "patches"), 4);
	json_object_del(f->cur, "bad");
	set_restarts(f, 3);
	f->now += 1000;
	agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(stat_int(f, "patches"), 5);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, &body);
	assert_json(body, "{\"modules\":{\"a\":{\"restartCount\":3}}}");
	json_decref(body);
	answer(f, 204, rid, 7, "");

	/* the hub goes away: the link notices, waits 1 s, connects again, finds
	 * the twin as it left it and sends nothing */
	peer_close(&f->p);
	for (int i = 0; i < 250 && stat_bool(f, "connected"); i++)
		pump_ms(f, 20);
	assert_false(stat_bool(f, "connected"));
	int w = agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(w, 1000);
	f->now += 1000;
	up(f,
	   "{\"schemaVersion\":\"1.1\",\"lastDesiredVersion\":1,"
	   "\"modules\":{\"a\":{\"runtimeStatus\":\"running\",\"restartCount\":3}}}",
	   7);
	for (int i = 0; i < 3; i++) {
		f->now += 1000;
		agent_hublink_tick(f->l, f->now, true);
	}
	assert_int_equal(stat_int(f, "patches"), 5);
	assert_true(stat_bool(f, "inSync"));
	assert_int_equal(stat_int(f, "connects"), 2);
}

static void test_refused_login_and_timeouts(void **state)
{
	fixture *f = *state;
	perch_mqtt_packet pkt;
	assert_true(agent_hublink_tick(f->l, f->now, true) >= 0);
	peer_accept(f);
	peer_expect(f, PERCH_MQTT_CONNECT, &pkt);
	perch_mqtt_packet no = {.type = PERCH_MQTT_CONNACK};
	no.connack.return_code = PERCH_MQTT_CONNACK_BAD_LOGIN;
	peer_send(f, &no);
	assert_false(stat_bool(f, "connected"));
	json_t *s = status_of(f);
	assert_non_null(strstr(json_string_value(json_object_get(s, "lastError")), "CONNACK 4"));
	json_decref(s);
	assert_false(peer_next(f, &pkt)); /* it closed */
	peer_close(&f->p);

	/* backoff doubles: 1 s, then 2 s */
	int w = agent_hublink_tick(f->l, f->now, true);
	assert_int_equal(w, 1000);
	f->now += 1000;
	agent_hublink_tick(f->l, f->now, true);
	peer_accept(f);
	peer_expect(f, PERCH_MQTT_CONNECT, &pkt);
	/* no CONNACK within the timeout: it gives up */
	f->now += 10000;
	agent_hublink_tick(f->l, f->now, true);
	assert_false(peer_next(f, &pkt));
	peer_close(&f->p);
	json_t *s2 = status_of(f);
	assert_non_null(strstr(json_string_value(json_object_get(s2, "lastError")), "CONNACK"));
	json_decref(s2);
	assert_int_equal(agent_hublink_tick(f->l, f->now, true), 2000);

	/* up; a quiet link pings after 30 s; a PINGRESP keeps it */
	f->now += 2000;
	up(f, "{}", 1);
	char rid[64];
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, NULL);
	answer(f, 204, rid, 2, "");
	f->now += 30000;
	agent_hublink_tick(f->l, f->now, true);
	peer_expect(f, PERCH_MQTT_PINGREQ, &pkt);
	perch_mqtt_packet pong = {.type = PERCH_MQTT_PINGRESP};
	peer_send(f, &pong);
	f->now += 10000;
	agent_hublink_tick(f->l, f->now, true);
	assert_true(stat_bool(f, "connected"));

	/* a patch that is never answered: given up after the timeout */
	set_restarts(f, 9);
	f->now += 1000;
	agent_hublink_tick(f->l, f->now, true);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, NULL);
	f->now += 10000;
	agent_hublink_tick(f->l, f->now, true);
	assert_false(stat_bool(f, "connected"));
	assert_false(peer_next(f, &pkt));
	peer_close(&f->p);
}

static void test_token_renewal(void **state)
{
	fixture *f = *state;
	up(f, "{}", 1);
	char rid[64];
	perch_mqtt_packet pkt;
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, NULL);
	answer(f, 204, rid, 2, "");
	/* the token lasts an hour; renewed 5 min before; pings meanwhile */
	for (int i = 0; i < 3300 / 30 - 1; i++) {
		f->now += 30000;
		agent_hublink_tick(f->l, f->now, true);
		peer_expect(f, PERCH_MQTT_PINGREQ, &pkt);
		perch_mqtt_packet pong = {.type = PERCH_MQTT_PINGRESP};
		peer_send(f, &pong);
	}
	assert_true(stat_bool(f, "connected"));
	f->now += 30000; /* 55 min after the connect */
	assert_int_equal(agent_hublink_tick(f->l, f->now, true), 0);
	peer_expect(f, PERCH_MQTT_DISCONNECT, &pkt);
	assert_false(peer_next(f, &pkt));
	peer_close(&f->p);
	/* at once, with a token valid an hour from now (handshake checks it) */
	up(f,
	   "{\"schemaVersion\":\"1.1\",\"lastDesiredVersion\":1,"
	   "\"modules\":{\"a\":{\"runtimeStatus\":\"running\",\"restartCount\":0}}}",
	   2);
	assert_int_equal(stat_int(f, "connects"), 2);
	f->now += 1000;
	agent_hublink_tick(f->l, f->now, true);
	assert_true(stat_bool(f, "inSync"));
}

/* The diff under every failing allocation: NULL or right, never a leak. */
static void test_diff_alloc_failures(void **state)
{
	(void)state;
	json_t *from =
	        json_loads("{\"a\":1,\"m\":{\"x\":{\"s\":1},\"y\":{\"s\":2}},\"z\":[1]}", 0, NULL);
	json_t *to = json_loads("{\"a\":2,\"m\":{\"x\":{\"s\":3},\"w\":{\"s\":4}},\"n\":{\"k\":1}}",
	                        0, NULL);
	size_t before = perch_alloc_bytes();
	bool done = false;
	for (long n = 0; n < 1000 && !done; n++) {
		perch_alloc_fail_after(n);
		json_t *p = agent_hublink_diff(from, to);
		perch_alloc_fail_after(-1);
		if (p != NULL) {
			assert_json(p,
			            "{\"a\":2,\"m\":{\"x\":{\"s\":3},\"y\":null,\"w\":{\"s\":4}},"
			            "\"n\":{\"k\":1},\"z\":null}");
			json_decref(p);
			done = true;
		}
		assert_int_equal(perch_alloc_bytes(), before);
	}
	assert_true(done);
	json_decref(from);
	json_decref(to);
}

/* Patches made while allocations fail: no patch or a right one, the link
 * stays up, and (teardown) nothing leaks. */
static void test_patch_alloc_failures(void **state)
{
	fixture *f = *state;
	char rid[64];
	up(f, "{}", 1);
	twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, NULL);
	answer(f, 204, rid, 2, "");
	bool clean = false;
	for (long n = 0; n < 1000 && !clean; n++) {
		set_restarts(f, (int)n + 10);
		f->now += 1000;
		long long sent = stat_int(f, "patches");
		size_t failures = perch_alloc_failures();
		perch_alloc_fail_after(n);
		agent_hublink_tick(f->l, f->now, true);
		perch_alloc_fail_after(-1);
		clean = perch_alloc_failures() == failures;
		assert_true(stat_bool(f, "connected"));
		if (stat_int(f, "patches") == sent) {
			/* quiet for 30 s: a ping (on loopback, already here) */
			struct pollfd pfd = {.fd = f->p.fd, .events = POLLIN};
			if (poll(&pfd, 1, 0) > 0) {
				perch_mqtt_packet pkt;
				peer_expect(f, PERCH_MQTT_PINGREQ, &pkt);
				perch_mqtt_packet pong = {.type = PERCH_MQTT_PINGRESP};
				peer_send(f, &pong);
			}
			continue;
		}
		json_t *body = NULL;
		twin_request(f, PERCH_IOTHUB_TWIN_REPORTED, rid, sizeof rid, &body);
		assert_int_equal(json_integer_value(json_object_get(
		                         json_object_get(json_object_get(body, "modules"), "a"),
		                         "restartCount")),
		                 n + 10);
		json_decref(body);
		answer(f, 204, rid, (uint64_t)n + 3, "");
	}
	assert_true(clean);
	assert_true(stat_bool(f, "inSync"));
}

static void test_bad_config(void **state)
{
	(void)state;
	agent_hublink *l = NULL;
	agent_hublink_cfg cfg = {.host = "127.0.0.1",
	                         .port = 1883,
	                         .device_id = DEV,
	                         .iothub_hostname = HOST,
	                         .device_key = "not base64!",
	                         .report = report_cb};
	assert_int_equal(agent_hublink_new(&cfg, &l), PERCH_EINVAL);
	assert_null(l);
	cfg.device_key = KEY;
	cfg.port = 0;
	assert_int_equal(agent_hublink_new(&cfg, &l), PERCH_EINVAL);
	json_t *s = agent_hublink_status(NULL);
	assert_false(json_is_true(json_object_get(s, "connected")));
	json_decref(s);
}

int main(void)
{
	agent_manifest_init(); /* jansson allocates through perch_malloc: counted, failable */
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_diff),
	        cmocka_unit_test(test_fit),
	        cmocka_unit_test(test_bad_config),
	        cmocka_unit_test(test_diff_alloc_failures),
	        cmocka_unit_test_setup_teardown(test_patch_alloc_failures, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_session, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_refused_login_and_timeouts, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_token_renewal, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
