/*
 * device_test.c — the shared device settings: ids, the key file (created
 * once, mode 0600, reloaded the same; refused when others can read it or
 * when it is not a key).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "perch/device.h"

static void test_ids(void **state)
{
	(void)state;
	assert_true(perch_device_valid_id("gateway-1"));
	assert_true(perch_device_valid_id("$edgeAgent"));
	assert_true(perch_device_valid_id("a.b:c=d@e"));
	assert_false(perch_device_valid_id(""));
	assert_false(perch_device_valid_id("with space"));
	assert_false(perch_device_valid_id("slash/no"));
	char long_id[200];
	memset(long_id, 'a', sizeof long_id - 1);
	long_id[sizeof long_id - 1] = '\0';
	assert_false(perch_device_valid_id(long_id));
	char good[] = "dev-7", bad[] = "bad id";
	perch_device_settings s = {.id = good};
	char out[PERCH_DEVICE_ID_MAX + 1];
	assert_int_equal(perch_device_id(&s, out, sizeof out), PERCH_OK);
	assert_string_equal(out, "dev-7");
	s.id = bad;
	assert_int_equal(perch_device_id(&s, out, sizeof out), PERCH_EINVAL);
	s.id = NULL; /* the host name */
	assert_int_equal(perch_device_id(&s, out, sizeof out), PERCH_OK);
	assert_true(strlen(out) > 0);
}

static void test_key_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/perch-device-test.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof path, "%s/sub/device.key", dir);
	char k1[PERCH_DEVICE_KEY_MAX + 1], k2[PERCH_DEVICE_KEY_MAX + 1];
	assert_int_equal(perch_device_key_load(path, k1, sizeof k1), PERCH_ENOENT);
	bool created = false;
	assert_int_equal(perch_device_key_ensure(path, k1, sizeof k1, &created), PERCH_OK);
	assert_true(created);
	assert_int_equal(strlen(k1), 44); /* base64 of 32 bytes */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(perch_device_key_ensure(path, k2, sizeof k2, &created), PERCH_OK);
	assert_false(created);
	assert_string_equal(k1, k2);
	char small[8];
	assert_int_equal(perch_device_key_load(path, small, sizeof small), PERCH_ETOOBIG);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(perch_device_key_load(path, k2, sizeof k2), PERCH_EPERM);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("not a key!\n", f);
	fclose(f);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(perch_device_key_load(path, k2, sizeof k2), PERCH_EINVAL);
	f = fopen(path, "w");
	fputs("  AAECAwQFBgcICQoLDA0ODw==\n", f); /* 16 bytes, with whitespace */
	fclose(f);
	assert_int_equal(perch_device_key_load(path, k2, sizeof k2), PERCH_OK);
	assert_string_equal(k2, "AAECAwQFBgcICQoLDA0ODw==");
	unlink(path);
	snprintf(path, sizeof path, "%s/sub", dir);
	rmdir(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_ids),
	        cmocka_unit_test(test_key_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
