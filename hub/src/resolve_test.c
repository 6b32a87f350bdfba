/*
 * resolve_test.c — unit tests of resolve.c: an IP literal is taken without a
 * lookup (and a name is not); "localhost" resolves in the worker thread to
 * 127.0.0.1 (IPv4 first) with the port; a name under .invalid (refused
 * locally, RFC 6761) ends with "cannot resolve NAME: ..."; a second lookup
 * cannot start while one runs; the resolver is idle again after each answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>

#include <cmocka.h>

#include "resolve.h"

/* wait_answer polls r until its lookup answers (at most ~20 s). */
static hub_resolve_state wait_answer(hub_resolver *r, hub_resolved *out)
{
	for (int i = 0; i < 20000; i++) {
		hub_resolve_state st = hub_resolve_poll(r, out);
		if (st != HUB_RESOLVE_RUNNING)
			return st;
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
	return HUB_RESOLVE_RUNNING;
}

static void test_numeric(void **state)
{
	(void)state;
	hub_resolved r;
	assert_true(hub_resolve_numeric("10.1.2.3", 8883, &r));
	assert_int_equal(r.len, sizeof(struct sockaddr_in));
	const struct sockaddr_in *in = (const struct sockaddr_in *)&r.addr;
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(ntohs(in->sin_port), 8883);
	assert_int_equal(ntohl(in->sin_addr.s_addr), 0x0a010203);

	assert_true(hub_resolve_numeric("::1", 443, &r));
	assert_int_equal(r.len, sizeof(struct sockaddr_in6));
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&r.addr;
	assert_int_equal(in6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(in6->sin6_port), 443);
	assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));

	/* a name is never looked up here */
	assert_false(hub_resolve_numeric("localhost", 1883, &r));
	assert_int_equal(r.len, 0);
}

static void test_localhost(void **state)
{
	(void)state;
	hub_resolver r;
	memset(&r, 0, sizeof r);
	hub_resolved out;
	assert_int_equal(hub_resolve_poll(&r, &out), HUB_RESOLVE_IDLE);
	assert_int_equal(hub_resolve_start(&r, "localhost", 1883), PERCH_OK);
	assert_int_equal(wait_answer(&r, &out), HUB_RESOLVE_DONE);
	assert_int_equal(out.len, sizeof(struct sockaddr_in)); /* IPv4 first */
	const struct sockaddr_in *in = (const struct sockaddr_in *)&out.addr;
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(ntohs(in->sin_port), 1883);
	assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
	/* answered once, then idle: a new lookup may start */
	assert_int_equal(hub_resolve_poll(&r, &out), HUB_RESOLVE_IDLE);
	assert_int_equal(hub_resolve_start(&r, "localhost", 8883), PERCH_OK);
	assert_int_equal(wait_answer(&r, &out), HUB_RESOLVE_DONE);
	assert_int_equal(ntohs(((const struct sockaddr_in *)&out.addr)->sin_port), 8883);
	hub_resolve_fini(&r);
}

static void test_no_such_name(void **state)
{
	(void)state;
	hub_resolver r;
	memset(&r, 0, sizeof r);
	hub_resolved out;
	assert_int_equal(hub_resolve_start(&r, "nonexistent.invalid", 8883), PERCH_OK);
	assert_int_equal(wait_answer(&r, &out), HUB_RESOLVE_DONE);
	assert_int_equal(out.len, 0);
	assert_true(strncmp(out.why, "cannot resolve nonexistent.invalid: ", 36) == 0);
	assert_true(strlen(out.why) > 36);
	hub_resolve_fini(&r);
}

static void test_one_at_a_time(void **state)
{
	(void)state;
	hub_resolver r;
	memset(&r, 0, sizeof r);
	assert_int_equal(hub_resolve_start(&r, "localhost", 1), PERCH_OK);
	/* until its answer is taken, the resolver is busy (done or not) */
	assert_int_equal(hub_resolve_start(&r, "localhost", 2), PERCH_EBUSY);
	hub_resolve_fini(&r); /* joins the running lookup; its answer is dropped */
	hub_resolved out;
	assert_int_equal(hub_resolve_poll(&r, &out), HUB_RESOLVE_IDLE);
	hub_resolve_fini(&r); /* idle: nothing to do */
	char longname[HUB_RESOLVE_MAX_HOST + 2];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_int_equal(hub_resolve_start(&r, longname, 1), PERCH_ETOOBIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_numeric),
	        cmocka_unit_test(test_localhost),
	        cmocka_unit_test(test_no_such_name),
	        cmocka_unit_test(test_one_at_a_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
