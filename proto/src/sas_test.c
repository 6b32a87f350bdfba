/*
 * sas_test.c — unit tests for SAS tokens. The fixed vectors below were made
 * once with Node and azure-iot-common 1.13.3 (SharedAccessSignature.create
 * with encodeUriComponentStrict(resource), as the device SDK calls it), so
 * these tests check interoperability even where Node is absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "perch/sas.h"

#define K1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "c2VjcmV0LWtleS1mb3ItcGVyY2gtdGVzdHMtMDAwMDA="

static const struct vector {
	const char *resource, *key_name, *key;
	uint64_t expiry;
	const char *token;
} VECTORS[] = {
        {"myhub.azure-devices.net/devices/dev1", "", K1, 1700000000,
         "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=i%2BYmMcSSZc4KzBi6"
         "ejz3l0iL%2B2sN0CE3q6vSm837h2g%3D&se=1700000000"},
        {"myhub.azure-devices.net/devices/dev 1", "", K2, 1893456000,
         "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%201&sig=sBog2SIbYeDfax"
         "KCG5bQrCokTYeBN7gpCLWE5%2BCdUkU%3D&se=1893456000"},
        {"myhub.azure-devices.net/devices/d*x!(y)'z/modules/m%2Fa", "", K1, 2000000000,
         "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fd%2ax%21%28y%29%27z%2Fmod"
         "ules%2Fm%252Fa&sig=H7hYoJWUy%2BMbdfUf3%2FsaMO2K9yyHcNTEQWa7oObbYug%3D&se=2000000000"},
        {"myhub.azure-devices.net", "iothubowner", K1, 1700000000,
         "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL%2FAx4z"
         "Tmy44X2G1VY%3D&skn=iothubowner&se=1700000000"},
};

static perch_slice sl(const char *s)
{
	return perch_slice_cstr(s);
}

static void test_sign_matches_sdk(void **state)
{
	(void)state;
	char out[PERCH_SAS_MAX_TOKEN];
	size_t n;
	for (size_t i = 0; i < sizeof VECTORS / sizeof VECTORS[0]; i++) {
		const struct vector *v = &VECTORS[i];
		assert_int_equal(perch_sas_sign(sl(v->resource), sl(v->key_name), sl(v->key),
		                                v->expiry, out, sizeof out, &n),
		                 PERCH_OK);
		assert_int_equal(n, strlen(v->token));
		assert_memory_equal(out, v->token, n);
		for (size_t cap = 0; cap < n; cap += 7)
			assert_int_equal(perch_sas_sign(sl(v->resource), sl(v->key_name),
			                                sl(v->key), v->expiry, out, cap, &n),
			                 PERCH_ETOOBIG);
	}
}

static perch_sas_reason verify(const char *token, const char *resource, const char *key,
                               uint64_t now, uint64_t skew, uint64_t lifetime, perch_err want)
{
	perch_sas_check c = {sl(resource), sl(key), now, skew, lifetime};
	perch_sas_reason why = PERCH_SAS_REASON_COUNT;
	perch_sas_token t;
	assert_int_equal(perch_sas_verify(sl(token), &c, &t, &why), want);
	assert_int_equal(perch_sas_verify(sl(token), &c, NULL, NULL), want);
	return why;
}

static void test_verify_sdk_tokens(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof VECTORS / sizeof VECTORS[0]; i++) {
		const struct vector *v = &VECTORS[i];
		assert_int_equal(
		        verify(v->token, v->resource, v->key, v->expiry - 10, 0, 3600, PERCH_OK),
		        PERCH_SAS_OK);
	}
	perch_sas_token t;
	perch_sas_check c = {sl(VECTORS[3].resource), sl(K1), 1700000000, 0, 0};
	assert_int_equal(perch_sas_verify(sl(VECTORS[3].token), &c, &t, NULL), PERCH_OK);
	assert_true(perch_slice_eq_cstr(t.skn, "iothubowner"));
	assert_true(t.expiry == 1700000000);
	/* Host names compare without case; the path does not. */
	const char *tok = VECTORS[0].token;
	assert_int_equal(
	        verify(tok, "MYHUB.azure-devices.net/devices/dev1", K1, 1700000000, 0, 0, PERCH_OK),
	        PERCH_SAS_OK);
	assert_int_equal(verify(tok, "myhub.azure-devices.net/devices/Dev1", K1, 1700000000, 0, 0,
	                        PERCH_EPERM),
	                 PERCH_SAS_RESOURCE_MISMATCH);
	assert_int_equal(verify(tok, "myhub.azure-devices.net/devices/dev", K1, 1700000000, 0, 0,
	                        PERCH_EPERM),
	                 PERCH_SAS_RESOURCE_MISMATCH);
	/* Fields in another order, and a raw (not URL-encoded) signature. */
	assert_int_equal(verify("SharedAccessSignature se=1700000000&sig=i+YmMcSSZc4KzBi6ejz3l0iL+2"
	                        "sN0CE3q6vSm837h2g=&sr=myhub.azure-devices.net%2Fdevices%2Fdev1",
	                        VECTORS[0].resource, K1, 1700000000, 0, 0, PERCH_OK),
	                 PERCH_SAS_OK);
}

static void test_verify_refusals(void **state)
{
	(void)state;
	const char *tok = VECTORS[0].token;
	const char *res = VECTORS[0].resource;
	/* Wrong key, tampered se, tampered sig. */
	assert_int_equal(verify(tok, res, K2, 1700000000, 0, 0, PERCH_EPERM),
	                 PERCH_SAS_WRONG_SIGNATURE);
	assert_int_equal(
	        verify("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&"
	               "sig=i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2g%3D&se=1700000001",
	               res, K1, 1700000000, 0, 0, PERCH_EPERM),
	        PERCH_SAS_WRONG_SIGNATURE);
	assert_int_equal(
	        verify("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&"
	               "sig=i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2A%3D&se=1700000000",
	               res, K1, 1700000000, 0, 0, PERCH_EPERM),
	        PERCH_SAS_WRONG_SIGNATURE);
	/* Expiry with skew, and lifetime. */
	assert_int_equal(verify(tok, res, K1, 1700000000, 0, 0, PERCH_OK), PERCH_SAS_OK);
	assert_int_equal(verify(tok, res, K1, 1700000001, 0, 0, PERCH_EEXPIRED), PERCH_SAS_EXPIRED);
	assert_int_equal(verify(tok, res, K1, 1700000300, 300, 0, PERCH_OK), PERCH_SAS_OK);
	assert_int_equal(verify(tok, res, K1, 1700000301, 300, 0, PERCH_EEXPIRED),
	                 PERCH_SAS_EXPIRED);
	assert_int_equal(verify(tok, res, K1, UINT64_MAX, UINT64_MAX, 0, PERCH_OK), PERCH_SAS_OK);
	assert_int_equal(verify(tok, res, K1, 1699996400, 0, 3600, PERCH_OK), PERCH_SAS_OK);
	assert_int_equal(verify(tok, res, K1, 1699996399, 0, 3600, PERCH_ERANGE),
	                 PERCH_SAS_LIFETIME_TOO_LONG);
	assert_int_equal(verify(tok, res, K1, 1699996399, 1, 3600, PERCH_OK), PERCH_SAS_OK);
	assert_int_equal(verify(tok, res, K1, 0, 0, 1, PERCH_ERANGE), PERCH_SAS_LIFETIME_TOO_LONG);
	assert_int_equal(verify(tok, res, K1, 0, 0, 0, PERCH_OK), PERCH_SAS_OK);
	/* Bad key given to check against; bad signature encodings. */
	assert_int_equal(verify(tok, res, "not base64!", 1700000000, 0, 0, PERCH_EINVAL),
	                 PERCH_SAS_BAD_KEY);
	const char *bad_sigs[] = {
	        "%GG",
	        "i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2g",       /* no padding */
	        "i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2h%3D",    /* leftover bits */
	        "i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2g%3D%3D", /* too long */
	        "i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h*g%3D",    /* bad char */
	        "AAAA",                                                  /* too short */
	        "i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2%3D%3D",  /* 31 bytes */
	};
	for (size_t i = 0; i < sizeof bad_sigs / sizeof bad_sigs[0]; i++) {
		char t[512];
		snprintf(t, sizeof t,
		         "SharedAccessSignature "
		         "sr=myhub.azure-devices.net%%2Fdevices%%2Fdev1&sig=%s&"
		         "se=1700000000",
		         bad_sigs[i]);
		assert_int_equal(verify(t, res, K1, 1700000000, 0, 0, PERCH_EINVAL),
		                 PERCH_SAS_BAD_BASE64);
	}
	/* A sr that does not decode, or decodes too long, cannot match. */
	assert_int_equal(
	        verify("SharedAccessSignature sr=%zz&sig=i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0C"
	               "E3q6vSm837h2g%3D&se=1",
	               res, K1, 0, 0, 0, PERCH_EPERM),
	        PERCH_SAS_RESOURCE_MISMATCH);
}

static void test_parse_malformed(void **state)
{
	(void)state;
	const char *bad[] = {
	        "",
	        "SharedAccessSignature",
	        "SharedAccessSignature ",
	        "sharedaccesssignature sr=a&sig=b&se=1",
	        "SharedAccessSignature  sr=a&sig=b&se=1",
	        "SharedAccessSignature sr=a&sig=b",
	        "SharedAccessSignature sr=a&se=1",
	        "SharedAccessSignature sig=b&se=1",
	        "SharedAccessSignature sr=a&sig=b&se=1&",
	        "SharedAccessSignature sr=a&sig=b&se=1&&skn=x",
	        "SharedAccessSignature sr=a&sig=b&se=1&x=y",
	        "SharedAccessSignature sr=a&sig=b&se=1&sr=a",
	        "SharedAccessSignature sr=a&sig=b&se=1&skn=x&skn=y",
	        "SharedAccessSignature sr=a&sig=b&se=1&skn=",
	        "SharedAccessSignature sr=&sig=b&se=1",
	        "SharedAccessSignature sr=a&sig=b&se=1x",
	        "SharedAccessSignature sr=a&sig=b&se=-1",
	        "SharedAccessSignature sr=a&sig=b&se=18446744073709551616",
	        "SharedAccessSignature sr=a&sig=b&se=000000000000000000001",
	        "SharedAccessSignature sr=a&sig=b&se",
	};
	perch_sas_token t;
	perch_sas_reason why;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why = PERCH_SAS_OK;
		if (perch_sas_parse(sl(bad[i]), &t, &why) != PERCH_EINVAL ||
		    why != PERCH_SAS_MALFORMED)
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(verify(bad[i], "a", K1, 0, 0, 0, PERCH_EINVAL),
		                 PERCH_SAS_MALFORMED);
	}
	assert_int_equal(
	        perch_sas_parse(sl("SharedAccessSignature sr=a&sig=b&se=18446744073709551615"), &t,
	                        NULL),
	        PERCH_OK);
	assert_true(t.expiry == UINT64_MAX);
	assert_int_equal(t.skn.len, 0);
	static char big[PERCH_SAS_MAX_TOKEN + 1];
	memset(big, 'a', sizeof big);
	memcpy(big, "SharedAccessSignature sr=", 25);
	assert_int_equal(perch_sas_parse((perch_slice){big, sizeof big}, &t, &why), PERCH_ETOOBIG);
	assert_int_equal(why, PERCH_SAS_MALFORMED);
}

static void test_sign_refusals(void **state)
{
	(void)state;
	char out[PERCH_SAS_MAX_TOKEN];
	size_t n;
	assert_int_equal(perch_sas_sign(sl(""), sl(""), sl(K1), 1, out, sizeof out, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_sas_sign(sl("r"), sl(""), sl(K1), 0, out, sizeof out, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_sas_sign(sl("r"), sl(""), sl("bad key"), 1, out, sizeof out, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_sas_sign(sl("r"), sl(""), sl(""), 1, out, sizeof out, &n),
	                 PERCH_EINVAL);
	static char big[PERCH_SAS_MAX_RESOURCE + 1];
	memset(big, 'r', sizeof big);
	assert_int_equal(perch_sas_sign((perch_slice){big, sizeof big}, sl(""), sl(K1), 1, out,
	                                sizeof out, &n),
	                 PERCH_ETOOBIG);
	assert_int_equal(perch_sas_sign(sl("r"), (perch_slice){big, PERCH_SAS_MAX_KEY_NAME + 1},
	                                sl(K1), 1, out, sizeof out, &n),
	                 PERCH_ETOOBIG);
	assert_int_equal(perch_sas_sign(sl("r"), sl(""),
	                                (perch_slice){big, PERCH_SAS_MAX_KEY_B64 + 4}, 1, out,
	                                sizeof out, &n),
	                 PERCH_ETOOBIG);
	/* The largest resource, all escaped, still fits a token. */
	memset(big, ' ', PERCH_SAS_MAX_RESOURCE);
	assert_int_equal(perch_sas_sign((perch_slice){big, PERCH_SAS_MAX_RESOURCE}, sl("name"),
	                                sl(K1), UINT64_MAX, out, sizeof out, &n),
	                 PERCH_OK);
	perch_sas_check c = {{big, PERCH_SAS_MAX_RESOURCE}, sl(K1), 0, 0, 0};
	assert_int_equal(perch_sas_verify((perch_slice){out, n}, &c, NULL, NULL), PERCH_OK);
}

static void test_keys(void **state)
{
	(void)state;
	char out[PERCH_SAS_KEY_B64_LEN];
	size_t n;
	/* Vectors from Node: crypto.createHmac('sha256', Buffer.from(key, 'base64')). */
	assert_int_equal(perch_sas_derive_module_key(sl(K1), sl("$edgeHub"), out, sizeof out, &n),
	                 PERCH_OK);
	assert_int_equal(n, PERCH_SAS_KEY_B64_LEN);
	assert_memory_equal(out, "irDe88xaCjchv3Ljq/+bK9ZNfc0di5MguLZo2o3D1f4=", n);
	assert_int_equal(perch_sas_derive_module_key(sl(K1), sl("filter"), out, sizeof out, &n),
	                 PERCH_OK);
	assert_memory_equal(out, "S94One8vIUylHrPjhXyPtFI7pzv5JECq7lnkfBQJqy0=", n);
	assert_true(perch_sas_key_valid((perch_slice){out, n}));
	assert_int_equal(perch_sas_derive_module_key(sl(K1), sl("m"), out, sizeof out - 1, &n),
	                 PERCH_ETOOBIG);
	assert_int_equal(perch_sas_derive_module_key(sl(K1), sl(""), out, sizeof out, &n),
	                 PERCH_EINVAL);
	assert_int_equal(perch_sas_derive_module_key(sl("A"), sl("m"), out, sizeof out, &n),
	                 PERCH_EINVAL);
	static char big[200];
	memset(big, 'A', sizeof big);
	assert_int_equal(
	        perch_sas_derive_module_key(sl(K1), (perch_slice){big, 129}, out, sizeof out, &n),
	        PERCH_ETOOBIG);
	assert_int_equal(
	        perch_sas_derive_module_key((perch_slice){big, 92}, sl("m"), out, sizeof out, &n),
	        PERCH_EINVAL);

	assert_true(perch_sas_key_valid(sl(K1)));
	assert_true(perch_sas_key_valid(sl("QQ==")));
	assert_true(perch_sas_key_valid(sl("QUI=")));
	assert_false(perch_sas_key_valid(sl("QR=="))); /* leftover bits */
	assert_false(perch_sas_key_valid(sl("QUJ="))); /* leftover bits */
	assert_false(perch_sas_key_valid(sl("QQ")));   /* no padding */
	assert_false(perch_sas_key_valid(sl("====")));
	assert_false(perch_sas_key_valid(sl("Q===")));
	assert_false(perch_sas_key_valid(sl("QQ=A")));
	assert_false(perch_sas_key_valid(sl("QQ ==")));
	assert_false(perch_sas_key_valid(sl("")));
	assert_false(perch_sas_key_valid((perch_slice){big, 88})); /* 66 bytes */
	assert_true(perch_sas_key_valid((perch_slice){big, 84}));  /* 63 bytes */
	for (int r = 0; r <= PERCH_SAS_REASON_COUNT; r++)
		assert_non_null(perch_sas_reason_str((perch_sas_reason)r));
	assert_string_equal(perch_sas_reason_str(PERCH_SAS_EXPIRED), "expired");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_sign_matches_sdk), cmocka_unit_test(test_verify_sdk_tokens),
	        cmocka_unit_test(test_verify_refusals),  cmocka_unit_test(test_parse_malformed),
	        cmocka_unit_test(test_sign_refusals),    cmocka_unit_test(test_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
