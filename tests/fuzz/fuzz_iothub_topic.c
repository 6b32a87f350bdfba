/*
 * fuzz_iothub_topic.c — libFuzzer target for IoT Hub topic classification:
 * any bytes; every slice handed back must lie inside the input; a classified
 * input or C2D topic rebuilt with the builders must classify the same, and so
 * must a child hub link topic rebuilt with perch_iothub_build_link, fields and
 * all (device-level and module forms must never be confused).
 */
#include <stdint.h>
#include <stdlib.h>

#include "perch/iothub_topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(perch_slice s, const uint8_t *data, size_t size)
{
	if (s.len == 0)
		return;
	const char *p = (const char *)data;
	if (s.ptr < p || s.ptr + s.len > p + size)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	perch_iothub_topic t;
	perch_iothub_reason why;
	perch_err err = perch_iothub_topic_parse((perch_slice){(const char *)data, size}, &t, &why);
	if ((err == PERCH_OK) != (why == PERCH_IOTHUB_OK) || t.kind >= PERCH_IOTHUB_KIND_COUNT)
		abort();
	inside(t.device, data, size);
	inside(t.module, data, size);
	inside(t.input, data, size);
	inside(t.method, data, size);
	inside(t.props, data, size);
	inside(t.rid, data, size);
	(void)perch_iothub_kind_str(t.kind);
	(void)perch_iothub_reason_str(why);
	if (err != PERCH_OK)
		return 0;
	static char out[PERCH_IOTHUB_MAX_TOPIC];
	static perch_props props;
	size_t n;
	perch_iothub_topic back;
	if (t.kind == PERCH_IOTHUB_MODULE_INPUT &&
	    perch_props_parse(t.props, &props, NULL) == PERCH_OK &&
	    perch_iothub_build_input(out, sizeof out, &n, t.device, t.module, t.input, &props) ==
	            PERCH_OK) {
		if (perch_iothub_topic_parse((perch_slice){out, n}, &back, NULL) != PERCH_OK ||
		    back.kind != t.kind || !perch_slice_eq(back.device, t.device) ||
		    !perch_slice_eq(back.input, t.input))
			abort();
	}
	if (t.kind == PERCH_IOTHUB_METHOD_REQUEST &&
	    perch_iothub_build_method_request(out, sizeof out, &n, t.method, t.rid) == PERCH_OK) {
		if (perch_iothub_topic_parse((perch_slice){out, n}, &back, NULL) != PERCH_OK ||
		    back.kind != t.kind || !perch_slice_eq(back.rid, t.rid) ||
		    !perch_slice_eq(back.method, t.method))
			abort();
	}
	if (t.kind == PERCH_IOTHUB_TWIN_RESPONSE &&
	    perch_iothub_build_twin_response(out, sizeof out, &n, t.status, t.rid, t.has_version,
	                                     t.version) == PERCH_OK) {
		if (perch_iothub_topic_parse((perch_slice){out, n}, &back, NULL) != PERCH_OK ||
		    back.kind != t.kind || back.status != t.status || back.version != t.version)
			abort();
	}
	if (perch_iothub_is_link(t.kind) &&
	    perch_iothub_build_link(out, sizeof out, &n, t.kind, t.device, t.module, t.method,
	                            t.status, t.rid, t.has_version, t.version) == PERCH_OK) {
		bool desired = t.kind == PERCH_IOTHUB_LINK_TWIN_DESIRED;
		bool versioned =
		        desired || (t.kind == PERCH_IOTHUB_LINK_TWIN_RESPONSE && t.has_version);
		if (perch_iothub_topic_parse((perch_slice){out, n}, &back, NULL) != PERCH_OK ||
		    back.kind != t.kind || !perch_slice_eq(back.device, t.device) ||
		    !perch_slice_eq(back.module, t.module) ||
		    !perch_slice_eq(back.method, t.method) || back.status != t.status ||
		    (!desired && !perch_slice_eq(back.rid, t.rid)) ||
		    (versioned && (!back.has_version || back.version != t.version)))
			abort();
	}
	return 0;
}
