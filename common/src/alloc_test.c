/*
 * alloc_test.c — unit tests for the counting allocator: counts, the peak,
 * limits and fault injection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/alloc.h"

static void test_counts(void **state)
{
	(void)state;
	size_t b0 = perch_alloc_bytes(), n0 = perch_alloc_blocks();
	char *p = perch_malloc(100);
	assert_non_null(p);
	assert_int_equal(perch_alloc_bytes(), b0 + 100);
	assert_int_equal(perch_alloc_blocks(), n0 + 1);
	p = perch_realloc(p, 1000);
	assert_non_null(p);
	assert_int_equal(perch_alloc_bytes(), b0 + 1000);
	p = perch_realloc(p, 10);
	assert_int_equal(perch_alloc_bytes(), b0 + 10);
	perch_free(p);
	assert_int_equal(perch_alloc_bytes(), b0);
	assert_int_equal(perch_alloc_blocks(), n0);
	perch_free(NULL);
}

static void test_strdup(void **state)
{
	(void)state;
	char *s = perch_strdup("perch");
	assert_string_equal(s, "perch");
	char *t = perch_strndup("perch-hub", 5);
	assert_string_equal(t, "perch");
	char *u = perch_memdup0("a\0b", 3);
	assert_memory_equal(u, "a\0b", 4);
	perch_free(s);
	perch_free(t);
	perch_free(u);
}

static void test_calloc_overflow(void **state)
{
	(void)state;
	assert_null(perch_calloc(SIZE_MAX / 2, 4));
	int *z = perch_calloc(8, sizeof(int));
	for (int i = 0; i < 8; i++)
		assert_int_equal(z[i], 0);
	perch_free(z);
	assert_null(perch_malloc(SIZE_MAX - 4));
}

static void test_limit(void **state)
{
	(void)state;
	perch_alloc_set_limit(perch_alloc_bytes() + 1000);
	void *a = perch_malloc(900);
	assert_non_null(a);
	assert_null(perch_malloc(200));
	void *b = perch_malloc(50);
	assert_non_null(b);
	assert_null(perch_realloc(b, 500)); /* b stays valid */
	perch_free(b);
	perch_free(a);
	perch_alloc_set_limit(0);
	a = perch_malloc(1 << 20);
	assert_non_null(a);
	perch_free(a);
}

static void test_fail_after(void **state)
{
	(void)state;
	size_t f0 = perch_alloc_failures();
	perch_alloc_fail_after(2);
	void *a = perch_malloc(1), *b = perch_malloc(1), *c = perch_malloc(1);
	void *d = perch_malloc(1);
	assert_non_null(a);
	assert_non_null(b);
	assert_null(c);
	assert_non_null(d); /* injection turns itself off after one failure */
	assert_int_equal(perch_alloc_failures(), f0 + 1);
	perch_free(a);
	perch_free(b);
	perch_free(d);
	perch_alloc_fail_after(0);
	assert_null(perch_strdup("x"));
	perch_alloc_fail_after(-1);
}

/* The peak remembers the most bytes live at once, after everything is
 * freed, until it is reset to what is live now. */
static void test_peak(void **state)
{
	(void)state;
	size_t b0 = perch_alloc_bytes();
	perch_alloc_reset_peak();
	assert_int_equal(perch_alloc_peak(), b0);
	char *a = perch_malloc(1000), *b = perch_malloc(24);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(perch_alloc_peak(), b0 + 1024);
	perch_free(a);
	perch_free(b);
	assert_int_equal(perch_alloc_bytes(), b0);
	assert_int_equal(perch_alloc_peak(), b0 + 1024);
	/* a realloc may hold old and new at once: counted so */
	a = perch_malloc(100);
	assert_non_null(a);
	perch_alloc_reset_peak();
	a = perch_realloc(a, 3000);
	assert_non_null(a);
	assert_int_equal(perch_alloc_peak(), b0 + 3100);
	perch_free(a);
	/* refused allocations do not count */
	perch_alloc_reset_peak();
	perch_alloc_set_limit(b0 + 100);
	assert_null(perch_malloc(1 << 20));
	perch_alloc_set_limit(0);
	assert_int_equal(perch_alloc_peak(), b0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_counts), cmocka_unit_test(test_peak),
	        cmocka_unit_test(test_strdup), cmocka_unit_test(test_calloc_overflow),
	        cmocka_unit_test(test_limit),  cmocka_unit_test(test_fail_after),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
