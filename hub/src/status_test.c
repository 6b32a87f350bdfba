/*
 * status_test.c — unit tests of status.c's document: a link that is not
 * configured says only that; a down link says since when and for how long,
 * with the queued totals and only the non-empty priorities; an up link says
 * since when it is up; the result is one line of valid JSON that fits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "status.h"

#define NOW 1795000000000 /* 2026-11-18T11:06:40Z */

static json_t *parse(const hub_upstream_stats *u)
{
	char doc[HUB_STATUS_MAX_BYTES];
	size_t n = hub_status_json(u, 7, NOW, doc, sizeof doc);
	assert_true(n > 0);
	assert_int_equal(strlen(doc), n);
	assert_int_equal(doc[n - 1], '\n');
	json_error_t e;
	json_t *o = json_loads(doc, 0, &e);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "time")),
	                    "2026-11-18T11:06:40.000Z");
	return o;
}

static void test_not_configured(void **state)
{
	(void)state;
	hub_upstream_stats u;
	memset(&u, 0, sizeof u);
	json_t *o = parse(&u);
	json_t *up = json_object_get(o, "upstream");
	assert_true(json_is_false(json_object_get(up, "configured")));
	assert_int_equal(json_object_size(up), 1);
	json_decref(o);
}

static void test_down_with_queue(void **state)
{
	(void)state;
	hub_upstream_stats u;
	memset(&u, 0, sizeof u);
	u.configured = true;
	u.down_since_ms = NOW - 300000; /* 5 minutes */
	u.reconnects = 2;
	u.forwarded = 10;
	u.expired = 3;
	u.dropped_too_big = 1;
	u.first_forward_ms = -1;
	u.depth[0] = 4;
	u.bytes[0] = 400;
	u.oldest_ms[0] = NOW - 60000;
	u.depth[7] = 1;
	u.bytes[7] = 10;
	u.oldest_ms[7] = NOW - 240000;
	json_t *o = parse(&u);
	json_t *up = json_object_get(o, "upstream");
	assert_true(json_is_true(json_object_get(up, "configured")));
	assert_string_equal(json_string_value(json_object_get(up, "state")), "down");
	assert_string_equal(json_string_value(json_object_get(up, "since")),
	                    "2026-11-18T11:01:40.000Z");
	assert_true(json_real_value(json_object_get(up, "offlineSeconds")) == 300.0);
	assert_int_equal(json_integer_value(json_object_get(up, "reconnects")), 2);
	assert_int_equal(json_integer_value(json_object_get(up, "forwarded")), 10);
	json_t *d = json_object_get(up, "dropped");
	assert_int_equal(json_integer_value(json_object_get(d, "expired")), 3);
	assert_int_equal(json_integer_value(json_object_get(d, "tooBig")), 1);
	assert_int_equal(json_integer_value(json_object_get(d, "oldest")), 7);
	assert_true(json_real_value(json_object_get(up, "firstForwardSeconds")) == -1.0);
	json_t *q = json_object_get(up, "queued");
	assert_int_equal(json_integer_value(json_object_get(q, "messages")), 5);
	assert_int_equal(json_integer_value(json_object_get(q, "bytes")), 410);
	assert_true(json_real_value(json_object_get(q, "oldestAgeSeconds")) == 240.0);
	json_t *qs = json_object_get(up, "queues");
	assert_int_equal(json_object_size(qs), 2);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(qs, "0"), "messages")),
	                 4);
	assert_true(json_real_value(json_object_get(json_object_get(qs, "7"),
	                                            "oldestAgeSeconds")) == 240.0);
	json_decref(o);
}

static void test_up(void **state)
{
	(void)state;
	hub_upstream_stats u;
	memset(&u, 0, sizeof u);
	u.configured = true;
	u.up = true;
	u.up_at_ms = NOW - 1500;
	u.first_forward_ms = 20;
	json_t *o = parse(&u);
	json_t *up = json_object_get(o, "upstream");
	assert_string_equal(json_string_value(json_object_get(up, "state")), "up");
	assert_string_equal(json_string_value(json_object_get(up, "since")),
	                    "2026-11-18T11:06:38.500Z");
	assert_true(json_real_value(json_object_get(up, "offlineSeconds")) == 0.0);
	assert_int_equal(json_object_size(json_object_get(up, "queues")), 0);
	json_decref(o);
}

static void test_full_document_fits(void **state)
{
	(void)state;
	hub_upstream_stats u;
	memset(&u, 0xff, sizeof u); /* every counter at its widest */
	u.configured = true;
	u.up = false;
	u.down_since_ms = NOW - 1;
	u.first_forward_ms = INT64_MAX;
	for (int p = 0; p < HUB_UPSTREAM_PRIOS; p++)
		u.oldest_ms[p] = 1;
	char doc[HUB_STATUS_MAX_BYTES];
	assert_true(hub_status_json(&u, UINT64_MAX, NOW, doc, sizeof doc) > 0);
	/* Too small a buffer: 0, never a cut document. */
	assert_int_equal(hub_status_json(&u, UINT64_MAX, NOW, doc, 100), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_not_configured),
	        cmocka_unit_test(test_down_with_queue),
	        cmocka_unit_test(test_up),
	        cmocka_unit_test(test_full_document_fits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
