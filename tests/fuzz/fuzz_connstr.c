/*
 * fuzz_connstr.c — libFuzzer target for connection strings: parse any bytes;
 * what parses must write, and the written form must parse to the same fields.
 */
#include <stdint.h>
#include <stdlib.h>

#include "perch/connstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	perch_connstr cs, back;
	perch_connstr_fail fail;
	if (perch_connstr_parse((perch_slice){(const char *)data, size}, &cs, &fail) != PERCH_OK) {
		if (fail.reason == PERCH_CONNSTR_OK)
			abort();
		(void)perch_connstr_reason_str(fail.reason);
		return 0;
	}
	static char out[PERCH_CONNSTR_MAX + 64];
	size_t n;
	if (perch_connstr_write(&cs, out, sizeof out, &n, &fail) != PERCH_OK)
		abort();
	if (perch_connstr_parse((perch_slice){out, n}, &back, &fail) != PERCH_OK ||
	    !perch_slice_eq(cs.host_name, back.host_name) ||
	    !perch_slice_eq(cs.device_id, back.device_id) ||
	    !perch_slice_eq(cs.module_id, back.module_id) ||
	    !perch_slice_eq(cs.shared_access_key, back.shared_access_key) ||
	    !perch_slice_eq(cs.shared_access_key_name, back.shared_access_key_name) ||
	    !perch_slice_eq(cs.shared_access_signature, back.shared_access_signature) ||
	    !perch_slice_eq(cs.gateway_host_name, back.gateway_host_name) || cs.x509 != back.x509)
		abort();
	return 0;
}
