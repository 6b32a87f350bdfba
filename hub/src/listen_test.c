/*
 * listen_test.c — unit tests of hub_listen_timer_us (listen.c), the delay
 * the hub gives an lws timer for a wake-up in under a few milliseconds (the
 * commit of a held-back store batch, hub.commit_delay_us): it is never
 * earlier than asked, sleeps whole milliseconds, and — run on a real lws
 * context — wakes the loop without spinning: the loop iterates about once
 * until the due time, where a timer set to the due time itself makes lws
 * poll without sleeping until it fires (counted, not asserted: that is
 * lws's behaviour, the reason for the function).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <libwebsockets.h>

#include "hub.h"

static void test_values(void **state)
{
	(void)state;
	static const int64_t dues[] = {0, 1, 400, 999, 1000, 1001, 1999, 2000, 2500, 100000};
	for (size_t i = 0; i < sizeof dues / sizeof dues[0]; i++) {
		int64_t t = hub_listen_timer_us(dues[i]);
		int64_t sleep_ms = t / 1000; /* what lws's poll() waits */
		assert_true(sleep_ms >= 1);
		assert_true(sleep_ms * 1000 >= dues[i]);                        /* never early */
		assert_true(sleep_ms == 1 || sleep_ms * 1000 < dues[i] + 1000); /* <= 1 ms late */
		assert_int_equal(t % 1000, 999);
	}
}

static void on_timer(lws_sorted_usec_list_t *sul)
{
	(void)sul;
}

/* iterations runs lws_service until due_us have passed, with a timer set to
 * timer_us, and returns how many times the loop went round. */
static unsigned iterations(struct lws_context *ctx, int64_t due_us, int64_t timer_us)
{
	lws_sorted_usec_list_t sul;
	memset(&sul, 0, sizeof sul);
	lws_usec_t end = lws_now_usecs() + (lws_usec_t)due_us;
	lws_sul_schedule(ctx, 0, &sul, on_timer, (lws_usec_t)timer_us);
	unsigned n = 0;
	while (lws_now_usecs() < end && n < 1000000) {
		assert_true(lws_service(ctx, 0) >= 0);
		n++;
	}
	lws_sul_cancel(&sul);
	return n;
}

static void test_loop_sleeps(void **state)
{
	(void)state;
	lws_set_log_level(LLL_ERR, NULL);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	struct lws_context *ctx = lws_create_context(&info);
	assert_non_null(ctx);
	(void)iterations(ctx, 2000, 2000); /* the first rounds set lws up */
	unsigned spun = iterations(ctx, 600, 600);
	unsigned most = 0;
	for (int round = 0; round < 5; round++) {
		unsigned n = iterations(ctx, 600, hub_listen_timer_us(600));
		most = n > most ? n : most;
	}
	print_message("loop rounds until a wake-up 600 us ahead: at most %u in 5 tries "
	              "(with the timer at the due time itself: %u)\n",
	              most, spun);
	assert_true(most <= 3);
	lws_context_destroy(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_values),
	        cmocka_unit_test(test_loop_sleeps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
