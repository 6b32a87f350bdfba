/*
 * fuzz_props.c — libFuzzer target for property bags: parse any bytes; when a
 * bag parses, encode it, parse that again and require the same pairs; and
 * URL-decode the input on its own.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perch/props.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static perch_props bag, again;
static char out[3 * PERCH_PROPS_MAX_ENCODED];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	perch_slice in = {(const char *)data, size};
	size_t n;
	perch_props_fail fail;
	if (perch_props_url_decode(in, out, sizeof out, &n, NULL) == PERCH_OK && n > size)
		abort();
	if (perch_props_parse(in, &bag, &fail) != PERCH_OK) {
		if (fail.reason == PERCH_PROPS_OK || perch_props_count(&bag) != 0)
			abort();
		return 0;
	}
	if (perch_props_encode(&bag, out, sizeof out, &n) != PERCH_OK)
		abort();
	if (perch_props_parse((perch_slice){out, n}, &again, &fail) != PERCH_OK)
		abort();
	if (perch_props_count(&again) != perch_props_count(&bag))
		abort();
	for (size_t i = 0; i < perch_props_count(&bag); i++) {
		perch_slice k1, v1, k2, v2;
		perch_props_at(&bag, i, &k1, &v1);
		perch_props_at(&again, i, &k2, &v2);
		if (!perch_slice_eq(k1, k2) || !perch_slice_eq(v1, v2))
			abort();
		(void)perch_props_system_kind(k1);
	}
	/* Set and remove keep the bag consistent. */
	if (perch_props_count(&bag) > 0) {
		perch_slice k;
		perch_props_at(&bag, 0, &k, NULL);
		char key[PERCH_PROPS_MAX_KEY];
		memcpy(key, k.ptr, k.len);
		if (perch_props_set(&bag, (perch_slice){key, k.len}, PERCH_SLICE_LIT("x"), NULL) !=
		            PERCH_OK ||
		    !perch_props_remove(&bag, (perch_slice){key, k.len}) ||
		    perch_props_get(&bag, (perch_slice){key, k.len}, NULL))
			abort();
	}
	return 0;
}
