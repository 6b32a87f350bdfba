/*
 * topic_test.c — unit tests for topic names, topic filters and matching:
 * the examples of MQTT 3.1.1 section 4.7, the '$' rule, and the edge cases
 * of empty levels.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/alloc.h"
#include "perch/topic.h"

#define S(lit) perch_slice_cstr(lit)

static void test_names(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		perch_topic_status want;
	} cases[] = {
	        {"sport/tennis/player1", PERCH_TOPIC_OK},
	        {"/", PERCH_TOPIC_OK},
	        {"//", PERCH_TOPIC_OK},
	        {"/finance", PERCH_TOPIC_OK},
	        {"$SYS/broker/load", PERCH_TOPIC_OK},
	        {"a b", PERCH_TOPIC_OK},
	        {"devices/d1/messages/events/%24.ct=application%2Fjson", PERCH_TOPIC_OK},
	        {"", PERCH_TOPIC_EMPTY},
	        {"sport/+", PERCH_TOPIC_WILDCARD},
	        {"sport/#", PERCH_TOPIC_WILDCARD},
	        {"a+b", PERCH_TOPIC_WILDCARD},
	        {"#", PERCH_TOPIC_WILDCARD},
	        {"bad\xc0\x80", PERCH_TOPIC_BAD_UTF8},
	        {"bad\xed\xa0\x80", PERCH_TOPIC_BAD_UTF8},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (perch_topic_check_name(S(cases[i].s)) != cases[i].want)
			fail_msg("name '%s': got %s", cases[i].s,
			         perch_topic_status_str(perch_topic_check_name(S(cases[i].s))));
	assert_int_equal(perch_topic_check_name((perch_slice){"a\0b", 3}), PERCH_TOPIC_BAD_UTF8);
}

static void test_long(void **state)
{
	(void)state;
	char *big = perch_malloc(PERCH_TOPIC_MAX_LEN + 1);
	assert_non_null(big);
	memset(big, 'a', PERCH_TOPIC_MAX_LEN + 1);
	assert_int_equal(perch_topic_check_name((perch_slice){big, PERCH_TOPIC_MAX_LEN}),
	                 PERCH_TOPIC_OK);
	assert_int_equal(perch_topic_check_name((perch_slice){big, PERCH_TOPIC_MAX_LEN + 1}),
	                 PERCH_TOPIC_TOO_LONG);
	assert_int_equal(perch_topic_check_filter((perch_slice){big, PERCH_TOPIC_MAX_LEN + 1}),
	                 PERCH_TOPIC_TOO_LONG);
	perch_free(big);
}

static void test_filters(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		perch_topic_status want;
	} cases[] = {
	        {"sport/tennis/player1/#", PERCH_TOPIC_OK},
	        {"sport/#", PERCH_TOPIC_OK},
	        {"#", PERCH_TOPIC_OK},
	        {"+", PERCH_TOPIC_OK},
	        {"+/tennis/#", PERCH_TOPIC_OK},
	        {"sport/+/player1", PERCH_TOPIC_OK},
	        {"+/+", PERCH_TOPIC_OK},
	        {"/+", PERCH_TOPIC_OK},
	        {"+/", PERCH_TOPIC_OK},
	        {"/#", PERCH_TOPIC_OK},
	        {"$SYS/#", PERCH_TOPIC_OK},
	        {"", PERCH_TOPIC_EMPTY},
	        {"sport/tennis#", PERCH_TOPIC_BAD_HASH},
	        {"sport/tennis/#/ranking", PERCH_TOPIC_BAD_HASH},
	        {"#/", PERCH_TOPIC_BAD_HASH},
	        {"##", PERCH_TOPIC_BAD_HASH},
	        {"sport+", PERCH_TOPIC_BAD_PLUS},
	        {"+sport", PERCH_TOPIC_BAD_PLUS},
	        {"sport/+x/a", PERCH_TOPIC_BAD_PLUS},
	        {"++", PERCH_TOPIC_BAD_PLUS},
	        {"a/\xff", PERCH_TOPIC_BAD_UTF8},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (perch_topic_check_filter(S(cases[i].s)) != cases[i].want)
			fail_msg("filter '%s': got %s", cases[i].s,
			         perch_topic_status_str(perch_topic_check_filter(S(cases[i].s))));
	assert_true(perch_topic_has_wildcard(S("a/+/b")));
	assert_true(perch_topic_has_wildcard(S("#")));
	assert_false(perch_topic_has_wildcard(S("a/b")));
	assert_false(perch_topic_has_wildcard(S("")));
}

static void test_match(void **state)
{
	(void)state;
	static const struct {
		const char *filter, *name;
		bool want;
	} cases[] = {
	        /* 4.7.1.2 multi-level wildcard */
	        {"sport/tennis/player1/#", "sport/tennis/player1", true},
	        {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	        {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	        {"sport/#", "sport", true},
	        {"sport/#", "sport/", true},
	        {"sport/#", "sports", false},
	        {"#", "sport/tennis", true},
	        {"#", "/", true},
	        /* 4.7.1.3 single-level wildcard */
	        {"sport/tennis/+", "sport/tennis/player1", true},
	        {"sport/tennis/+", "sport/tennis/player2", true},
	        {"sport/tennis/+", "sport/tennis/player1/ranking", false},
	        {"sport/+", "sport", false},
	        {"sport/+", "sport/", true},
	        {"+/+", "/finance", true},
	        {"/+", "/finance", true},
	        {"+", "/finance", false},
	        {"+/tennis/#", "sport/tennis/player1", true},
	        {"+/tennis/#", "sport/tennis", true},
	        {"+/tennis/#", "sport/golf", false},
	        {"sport/+/player1", "sport/tennis/player1", true},
	        {"sport/+/player1", "sport//player1", true},
	        {"sport/+/player1", "sport/tennis/player2", false},
	        /* 4.7.2 topics beginning with $ */
	        {"#", "$SYS/broker/load", false},
	        {"+/monitor/Clients", "$SYS/monitor/Clients", false},
	        {"+", "$SYS", false},
	        {"$SYS/#", "$SYS/monitor/Clients", true},
	        {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	        {"$SYS/#", "$SYS", true},
	        {"$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1", true},
	        {"a/$x/#", "a/$x/y", true},
	        {"+/$x", "a/$x", true},
	        /* 4.7.3 case and spaces */
	        {"ACCOUNTS", "Accounts", false},
	        {"Accounts payable", "Accounts payable", true},
	        /* literal levels and empty levels */
	        {"/", "/", true},
	        {"a/", "a", false},
	        {"a", "a/", false},
	        {"a/b", "a/b", true},
	        {"a/b", "a/bc", false},
	        {"a/bc", "a/b", false},
	        {"a//b", "a//b", true},
	        {"a/+/b", "a//b", true},
	        {"+/+/+", "a/b", false},
	        {"a/#", "a//", true},
	        {"devices/d1/modules/m1/#", "devices/d1/modules/m1/inputs/in1/%24.ct=x", true},
	        {"devices/d1/modules/m1/#", "devices/d1/modules/m10/inputs/in1", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(perch_topic_check_filter(S(cases[i].filter)), PERCH_TOPIC_OK);
		assert_int_equal(perch_topic_check_name(S(cases[i].name)), PERCH_TOPIC_OK);
		if (perch_topic_match(S(cases[i].filter), S(cases[i].name)) != cases[i].want)
			fail_msg("'%s' against '%s': want %d", cases[i].filter, cases[i].name,
			         cases[i].want);
	}
	assert_false(perch_topic_match(S(""), S("a")));
}

static void test_strings(void **state)
{
	(void)state;
	for (int i = 0; i < PERCH_TOPIC_STATUS_COUNT; i++)
		assert_non_null(perch_topic_status_str((perch_topic_status)i));
	assert_string_equal(perch_topic_status_str((perch_topic_status)77), "unknown topic status");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_names),   cmocka_unit_test(test_long),
	        cmocka_unit_test(test_filters), cmocka_unit_test(test_match),
	        cmocka_unit_test(test_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
