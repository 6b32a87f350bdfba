/*
 * restart_test.c — unit tests of restart.c: first restart at once, doubling,
 * cap, reset after a healthy run, giving up only when asked, and which exits
 * each restart policy restarts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "agent.h"

static void test_first_immediate_then_doubling(void **state)
{
	(void)state;
	agent_backoff b = {.base_ms = 1000, .max_ms = 60000, .healthy_ms = 60000};
	assert_int_equal(agent_restart_delay_ms(&b, 0), 0);
	assert_int_equal(agent_restart_delay_ms(&b, 1), 1000);
	assert_int_equal(agent_restart_delay_ms(&b, 2), 2000);
	assert_int_equal(agent_restart_delay_ms(&b, 3), 4000);
	assert_int_equal(agent_restart_delay_ms(&b, 6), 32000);
}

static void test_cap(void **state)
{
	(void)state;
	agent_backoff b = {.base_ms = 1000, .max_ms = 60000, .healthy_ms = 60000};
	assert_int_equal(agent_restart_delay_ms(&b, 7), 60000);
	assert_int_equal(agent_restart_delay_ms(&b, 100), 60000);
	assert_int_equal(agent_restart_delay_ms(&b, UINT32_MAX), 60000);
	agent_backoff iot = {.base_ms = 10000, .max_ms = 300000, .healthy_ms = 600000};
	assert_int_equal(agent_restart_delay_ms(&iot, 5), 160000);
	assert_int_equal(agent_restart_delay_ms(&iot, 6), 300000);
	agent_backoff odd = {.base_ms = 700, .max_ms = 1000};
	assert_int_equal(agent_restart_delay_ms(&odd, 2), 1000);
}

static void test_reset_after_healthy(void **state)
{
	(void)state;
	agent_backoff b = {.base_ms = 1000, .max_ms = 60000, .healthy_ms = 60000};
	assert_false(agent_restart_reset(&b, 59999));
	assert_true(agent_restart_reset(&b, 60000));
	assert_true(agent_restart_reset(&b, 3600000));
}

static void test_never_give_up_by_default(void **state)
{
	(void)state;
	agent_backoff b = {.base_ms = 1000, .max_ms = 60000, .healthy_ms = 60000};
	assert_false(agent_restart_gave_up(&b, 1000000));
	b.max_tries = 20;
	assert_false(agent_restart_gave_up(&b, 19));
	assert_true(agent_restart_gave_up(&b, 20));
}

static void test_policies(void **state)
{
	(void)state;
	assert_false(agent_restart_wanted(AGENT_RESTART_NEVER, true, 1, false));
	assert_false(agent_restart_wanted(AGENT_RESTART_NEVER, false, 0, true));
	assert_true(agent_restart_wanted(AGENT_RESTART_ON_FAILURE, true, 137, false));
	assert_false(agent_restart_wanted(AGENT_RESTART_ON_FAILURE, true, 0, false));
	assert_false(agent_restart_wanted(AGENT_RESTART_ON_FAILURE, false, 0, true));
	assert_true(agent_restart_wanted(AGENT_RESTART_ON_UNHEALTHY, false, 0, true));
	assert_true(agent_restart_wanted(AGENT_RESTART_ON_UNHEALTHY, true, 2, false));
	assert_false(agent_restart_wanted(AGENT_RESTART_ON_UNHEALTHY, true, 0, false));
	assert_true(agent_restart_wanted(AGENT_RESTART_ALWAYS, true, 0, false));
	assert_true(agent_restart_wanted(AGENT_RESTART_ALWAYS, false, 0, true));
	assert_false(agent_restart_wanted(AGENT_RESTART_ALWAYS, false, 0, false));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_first_immediate_then_doubling),
	        cmocka_unit_test(test_cap),
	        cmocka_unit_test(test_reset_after_healthy),
	        cmocka_unit_test(test_never_give_up_by_default),
	        cmocka_unit_test(test_policies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
