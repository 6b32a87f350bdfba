/*
 * utf8_test.c — unit tests for the MQTT UTF-8 checker: a table of valid and
 * invalid sequences, each with the exact status it must produce.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/utf8.h"

struct utf8_case {
	const char *s;
	size_t len;
	perch_utf8_status want;
};

#define C(lit, st)                                                                                 \
	{                                                                                          \
		(lit), sizeof(lit) - 1, (st)                                                       \
	}

static const struct utf8_case cases[] = {
        C("", PERCH_UTF8_OK),
        C("devices/d1/messages/events/", PERCH_UTF8_OK),
        C("exactly8", PERCH_UTF8_OK),
        C("caf\xc3\xa9", PERCH_UTF8_OK),                     /* U+00E9 */
        C("\xc2\x80", PERCH_UTF8_OK),                        /* U+0080, smallest 2-byte */
        C("\xdf\xbf", PERCH_UTF8_OK),                        /* U+07FF */
        C("\xe0\xa0\x80", PERCH_UTF8_OK),                    /* U+0800, smallest 3-byte */
        C("\xe2\x82\xac", PERCH_UTF8_OK),                    /* U+20AC euro */
        C("\xed\x9f\xbf", PERCH_UTF8_OK),                    /* U+D7FF, below surrogates */
        C("\xee\x80\x80", PERCH_UTF8_OK),                    /* U+E000, above surrogates */
        C("\xef\xbf\xbf", PERCH_UTF8_OK),                    /* U+FFFF */
        C("\xf0\x90\x80\x80", PERCH_UTF8_OK),                /* U+10000 */
        C("\xf0\x9f\x90\xa6 perch", PERCH_UTF8_OK),          /* U+1F426 bird */
        C("\xf4\x8f\xbf\xbf", PERCH_UTF8_OK),                /* U+10FFFF */
        C("\x01\x1f\x7f", PERCH_UTF8_OK),                    /* controls: SHOULD NOT, allowed */
        C("abc\0def", PERCH_UTF8_NUL),                       /* U+0000 */
        C("abcdefgh\0", PERCH_UTF8_NUL),                     /* NUL after a fast 8-byte run */
        C("\xc0\x80", PERCH_UTF8_OVERLONG),                  /* overlong U+0000 */
        C("\xc1\xbf", PERCH_UTF8_OVERLONG),                  /* overlong U+007F */
        C("\xe0\x80\xaf", PERCH_UTF8_OVERLONG),              /* overlong '/' */
        C("\xe0\x9f\xbf", PERCH_UTF8_OVERLONG),              /* overlong U+07FF */
        C("\xf0\x80\x80\xaf", PERCH_UTF8_OVERLONG),          /* overlong '/' in 4 bytes */
        C("\xf0\x8f\xbf\xbf", PERCH_UTF8_OVERLONG),          /* overlong U+FFFF */
        C("\xed\xa0\x80", PERCH_UTF8_SURROGATE),             /* U+D800 */
        C("\xed\xbf\xbf", PERCH_UTF8_SURROGATE),             /* U+DFFF */
        C("\xed\xa0\xbd\xed\xb2\xa9", PERCH_UTF8_SURROGATE), /* CESU-8 pair */
        C("\xf4\x90\x80\x80", PERCH_UTF8_TOO_BIG),           /* U+110000 */
        C("\xf7\xbf\xbf\xbf", PERCH_UTF8_TOO_BIG),           /* U+1FFFFF */
        C("\xc3", PERCH_UTF8_TRUNCATED),
        C("ab\xe2\x82", PERCH_UTF8_TRUNCATED),
        C("\xf0\x9f\x90", PERCH_UTF8_TRUNCATED),
        C("\x80", PERCH_UTF8_BAD_BYTE), /* lone continuation */
        C("a\xbf", PERCH_UTF8_BAD_BYTE),
        C("\xc3\x28", PERCH_UTF8_BAD_BYTE), /* missing continuation */
        C("\xe2\x28\xa1", PERCH_UTF8_BAD_BYTE),
        C("\xf8\x88\x80\x80\x80", PERCH_UTF8_BAD_BYTE), /* 5-byte form */
        C("\xfe", PERCH_UTF8_BAD_BYTE),
        C("\xff", PERCH_UTF8_BAD_BYTE),
};

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		perch_utf8_status got = perch_utf8_check(cases[i].s, cases[i].len);
		if (got != cases[i].want)
			fail_msg("case %zu: got %s, want %s", i, perch_utf8_status_str(got),
			         perch_utf8_status_str(cases[i].want));
	}
}

/* Every position of a fault is found, whether inside or after an ASCII run. */
static void test_positions(void **state)
{
	(void)state;
	char buf[64];
	for (size_t pos = 0; pos < 40; pos++) {
		memset(buf, 'a', sizeof buf);
		assert_int_equal(perch_utf8_check(buf, sizeof buf), PERCH_UTF8_OK);
		buf[pos] = '\0';
		assert_int_equal(perch_utf8_check(buf, sizeof buf), PERCH_UTF8_NUL);
		buf[pos] = (char)0x80;
		assert_int_equal(perch_utf8_check(buf, sizeof buf), PERCH_UTF8_BAD_BYTE);
		memcpy(buf + pos, "\xed\xa0\x80", 3);
		assert_int_equal(perch_utf8_check(buf, sizeof buf), PERCH_UTF8_SURROGATE);
		memcpy(buf + pos, "\xe2\x82\xac", 3);
		assert_int_equal(perch_utf8_check(buf, sizeof buf), PERCH_UTF8_OK);
	}
	assert_int_equal(perch_utf8_check(NULL, 0), PERCH_UTF8_OK);
}

/* Every code point round-trips through a hand encoder: valid ones pass,
 * surrogates fail as surrogates. */
static void test_all_code_points(void **state)
{
	(void)state;
	for (uint32_t cp = 1; cp <= 0x10FFFF; cp++) {
		unsigned char b[4];
		size_t n;
		if (cp < 0x80) {
			b[0] = (unsigned char)cp, n = 1;
		} else if (cp < 0x800) {
			b[0] = (unsigned char)(0xC0 | cp >> 6);
			b[1] = (unsigned char)(0x80 | (cp & 0x3F)), n = 2;
		} else if (cp < 0x10000) {
			b[0] = (unsigned char)(0xE0 | cp >> 12);
			b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
			b[2] = (unsigned char)(0x80 | (cp & 0x3F)), n = 3;
		} else {
			b[0] = (unsigned char)(0xF0 | cp >> 18);
			b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
			b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
			b[3] = (unsigned char)(0x80 | (cp & 0x3F)), n = 4;
		}
		perch_utf8_status want =
		        cp >= 0xD800 && cp <= 0xDFFF ? PERCH_UTF8_SURROGATE : PERCH_UTF8_OK;
		if (perch_utf8_check(b, n) != want)
			fail_msg("U+%04X", (unsigned)cp);
	}
}

static void test_strings(void **state)
{
	(void)state;
	for (int i = 0; i < PERCH_UTF8_STATUS_COUNT; i++)
		assert_non_null(perch_utf8_status_str((perch_utf8_status)i));
	assert_string_equal(perch_utf8_status_str((perch_utf8_status)99), "unknown UTF-8 status");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table),
	        cmocka_unit_test(test_positions),
	        cmocka_unit_test(test_all_code_points),
	        cmocka_unit_test(test_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
