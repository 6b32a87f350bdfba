/*
 * fuzz_sas.c — libFuzzer target for SAS tokens. The input is parsed and
 * verified as a token; it is also split (at the first NUL) into a resource
 * and a key name, signed with a fixed key, and the token then must parse and
 * verify — sign, parse, verify round trip.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perch/sas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	perch_slice in = {(const char *)data, size};
	perch_sas_token t;
	perch_sas_reason why;
	perch_sas_check check = {PERCH_SLICE_LIT("hub/devices/d"), PERCH_SLICE_LIT(KEY), 1000, 300,
	                         3600};
	if (perch_sas_parse(in, &t, &why) == PERCH_OK && (t.sr.len == 0 || t.sig.len == 0))
		abort();
	perch_err err = perch_sas_verify(in, &check, NULL, &why);
	if ((err == PERCH_OK) != (why == PERCH_SAS_OK))
		abort();
	(void)perch_sas_reason_str(why);
	(void)perch_sas_key_valid(in);

	const char *nul = memchr(data, 0, size);
	perch_slice resource = in, key_name = {NULL, 0};
	if (nul != NULL) {
		resource.len = (size_t)(nul - (const char *)data);
		key_name = (perch_slice){nul + 1, size - resource.len - 1};
	}
	static char token[PERCH_SAS_MAX_TOKEN];
	size_t n;
	uint64_t expiry = 1000 + size;
	if (perch_sas_sign(resource, key_name, PERCH_SLICE_LIT(KEY), expiry, token, sizeof token,
	                   &n) != PERCH_OK)
		return 0;
	check.resource = resource;
	if (perch_sas_parse((perch_slice){token, n}, &t, &why) != PERCH_OK || t.expiry != expiry ||
	    perch_sas_verify((perch_slice){token, n}, &check, NULL, &why) != PERCH_OK)
		abort();
	char mod[PERCH_SAS_KEY_B64_LEN];
	if (resource.len > 0 && resource.len <= 128 &&
	    (perch_sas_derive_module_key(PERCH_SLICE_LIT(KEY), resource, mod, sizeof mod, &n) !=
	             PERCH_OK ||
	     !perch_sas_key_valid((perch_slice){mod, n})))
		abort();
	return 0;
}
