/*
 * map_test.c — unit tests for the hash map: put/get/replace/delete against
 * a reference array through many random operations, iteration, and
 * allocation failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "perch/alloc.h"
#include "perch/map.h"

#define N 2000

static void test_random_ops(void **state)
{
	(void)state;
	perch_map m = {0};
	static intptr_t ref[N]; /* 0: absent, else the value */
	char key[32];
	srand(7);
	for (int op = 0; op < 50000; op++) {
		int k = rand() % N;
		snprintf(key, sizeof key, "client-%d", k);
		perch_slice ks = perch_slice_cstr(key);
		switch (rand() % 3) {
		case 0: {
			void *old;
			intptr_t v = op + 1;
			assert_int_equal(perch_map_put(&m, ks, (void *)v, &old), PERCH_OK);
			assert_int_equal((intptr_t)old, ref[k]);
			ref[k] = v;
			break;
		}
		case 1:
			assert_int_equal((intptr_t)perch_map_del(&m, ks), ref[k]);
			ref[k] = 0;
			break;
		default: assert_int_equal((intptr_t)perch_map_get(&m, ks), ref[k]); break;
		}
	}
	size_t live = 0;
	for (int k = 0; k < N; k++)
		live += ref[k] != 0;
	assert_int_equal(m.count, live);
	size_t pos = 0, seen = 0;
	while (perch_map_next(&m, &pos) != NULL)
		seen++;
	assert_int_equal(seen, live);
	for (int k = 0; k < N; k++) {
		snprintf(key, sizeof key, "client-%d", k);
		assert_int_equal((intptr_t)perch_map_get(&m, perch_slice_cstr(key)), ref[k]);
	}
	perch_map_fini(&m);
}

static void test_binary_keys_and_nomem(void **state)
{
	(void)state;
	perch_map m = {0};
	size_t base = perch_alloc_bytes();
	assert_int_equal(perch_map_put(&m, (perch_slice){"a\0b", 3}, (void *)1, NULL), PERCH_OK);
	assert_null(perch_map_get(&m, (perch_slice){"a\0c", 3}));
	assert_int_equal((intptr_t)perch_map_get(&m, (perch_slice){"a\0b", 3}), 1);
	assert_null(perch_map_get(&m, (perch_slice){"", 0}));
	perch_alloc_fail_after(0);
	assert_int_equal(perch_map_put(&m, PERCH_SLICE_LIT("x"), (void *)2, NULL), PERCH_ENOMEM);
	perch_alloc_fail_after(-1);
	assert_int_equal(m.count, 1);
	perch_map_fini(&m);
	assert_int_equal(perch_alloc_bytes(), base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_random_ops),
	        cmocka_unit_test(test_binary_keys_and_nomem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
