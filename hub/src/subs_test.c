/*
 * subs_test.c — the subscription tree against the reference matcher
 * (perch_topic_match) over a grid of filters and names, plus add/remove
 * bookkeeping and pruning.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/alloc.h"
#include "perch/topic.h"
#include "subs.h"

static const char *const filters[] = {
        "#",    "+",       "a",     "a/#",     "a/+",    "a/b",   "a/b/c", "+/b",
        "+/+",  "a/+/c",   "+/#",   "$SYS/#",  "$SYS/+", "/",     "/+",    "+/",
        "a//c", "a/+/+/d", "sport", "sport/#", "$share", "a/b/#", "+/+/+", "$SYS",
};
static const char *const names[] = {
        "a",      "a/b", "a/b/c", "a/b/c/d", "b",       "b/b",   "/",
        "/a",     "a/",  "a//c",  "sport",   "sport/x", "$SYS",  "$SYS/load",
        "$share", "x/b", "a/x/c", "a/x/y/d", "",        "c/d/e",
};
#define NF (sizeof filters / sizeof filters[0])
#define NN (sizeof names / sizeof names[0])

static int hits[NF];

static void count(void *who, uint8_t qos, void *arg)
{
	(void)arg;
	hits[(intptr_t)who - 1] += 1;
	assert_int_equal(qos, ((intptr_t)who) % 2);
}

static void test_against_reference(void **state)
{
	(void)state;
	hub_subs t = {0};
	for (size_t i = 0; i < NF; i++) {
		bool added;
		assert_int_equal(hub_subs_add(&t, perch_slice_cstr(filters[i]),
		                              (void *)(intptr_t)(i + 1), (uint8_t)((i + 1) % 2),
		                              &added),
		                 PERCH_OK);
		assert_true(added);
	}
	assert_int_equal(t.count, NF);
	for (size_t n = 0; n < NN; n++) {
		if (names[n][0] == '\0')
			continue;
		memset(hits, 0, sizeof hits);
		hub_subs_match(&t, perch_slice_cstr(names[n]), count, NULL);
		for (size_t f = 0; f < NF; f++) {
			bool want = perch_topic_match(perch_slice_cstr(filters[f]),
			                              perch_slice_cstr(names[n]));
			if (hits[f] != (want ? 1 : 0))
				fail_msg("filter '%s' name '%s': tree %d, reference %d", filters[f],
				         names[n], hits[f], want);
		}
	}
	hub_subs_fini(&t);
}

static void test_add_remove_prunes(void **state)
{
	(void)state;
	size_t base = perch_alloc_bytes();
	hub_subs t = {0};
	void *a = (void *)1, *b = (void *)2;
	bool added;
	assert_int_equal(hub_subs_add(&t, PERCH_SLICE_LIT("x/y/z"), a, 1, &added), PERCH_OK);
	assert_int_equal(hub_subs_add(&t, PERCH_SLICE_LIT("x/y/z"), a, 0, &added), PERCH_OK);
	assert_false(added);
	assert_int_equal(hub_subs_add(&t, PERCH_SLICE_LIT("x/+/z"), b, 1, &added), PERCH_OK);
	assert_int_equal(t.count, 2);
	assert_false(hub_subs_remove(&t, PERCH_SLICE_LIT("x/y/z"), b));
	assert_false(hub_subs_remove(&t, PERCH_SLICE_LIT("x/q"), a));
	assert_true(hub_subs_remove(&t, PERCH_SLICE_LIT("x/y/z"), a));
	assert_true(hub_subs_remove(&t, PERCH_SLICE_LIT("x/+/z"), b));
	assert_int_equal(t.count, 0);
	assert_int_equal(t.root.children.count, 0);
	hub_subs_fini(&t);
	assert_int_equal(perch_alloc_bytes(), base);
	/* Allocation failures while adding leave a consistent tree. */
	for (long n = 0; n < 12; n++) {
		perch_alloc_fail_after(n);
		perch_err e = hub_subs_add(&t, PERCH_SLICE_LIT("p/q/r/s"), a, 1, NULL);
		perch_alloc_fail_after(-1);
		assert_true(e == PERCH_OK || e == PERCH_ENOMEM);
		if (e == PERCH_OK)
			assert_true(hub_subs_remove(&t, PERCH_SLICE_LIT("p/q/r/s"), a));
		assert_int_equal(t.count, 0);
	}
	hub_subs_fini(&t);
	assert_int_equal(perch_alloc_bytes(), base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_against_reference),
	        cmocka_unit_test(test_add_remove_prunes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
