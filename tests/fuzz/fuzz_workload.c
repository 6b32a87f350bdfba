/*
 * fuzz_workload.c — libFuzzer target for the workload API's request reader
 * (agent/src/workload_http.c): the bytes a module, or anything that can
 * reach its socket, sends to perch-agent. Checks the reader's contract —
 * a refusal has an HTTP status and a reason, an accepted request lies
 * within the input and its ids are NUL-terminated and non-empty, every
 * shorter prefix of an accepted request is incomplete — and feeds the body
 * of a sign request to the sign computation with a fixed device key, which
 * must answer 200 or 400. Nothing may leak (the counting allocator, which
 * jansson uses too, must be back where it started).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../agent/src/manifest.h"
#include "../../agent/src/workload.h"
#include "perch/alloc.h"

#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		agent_manifest_init(); /* jansson through perch_malloc */
		ready = true;
	}
	size_t before = perch_alloc_blocks();
	const char *buf = (const char *)data;
	agent_wl_request req;
	int status = 0;
	const char *why = NULL;
	perch_err err = agent_wl_parse(buf, size, &req, &status, &why);
	if (err == PERCH_EAGAIN)
		return 0;
	if (err != PERCH_OK) {
		if (status < 400 || status > 599 || why == NULL || why[0] == '\0')
			abort();
		return 0;
	}
	if (req.total == 0 || req.total > size || req.body.len > AGENT_WL_MAX_BODY ||
	    (req.body.len > 0 &&
	     (req.body.ptr < buf || req.body.ptr + req.body.len > buf + req.total)))
		abort();
	if (req.op != AGENT_WL_SIGN && req.op != AGENT_WL_TRUST_BUNDLE)
		abort();
	if (strnlen(req.api_version, sizeof req.api_version) != 10)
		abort();
	/* A prefix one byte shorter is incomplete or, once the head is whole,
	 * still incomplete (the body is short): never accepted. */
	agent_wl_request again;
	if (agent_wl_parse(buf, req.total - 1, &again, &status, &why) == PERCH_OK)
		abort();
	if (req.op == AGENT_WL_SIGN) {
		if (req.module[0] == '\0' || req.genid[0] == '\0' ||
		    strnlen(req.module, sizeof req.module) > AGENT_WL_MAX_ID ||
		    strnlen(req.genid, sizeof req.genid) > AGENT_WL_MAX_ID)
			abort();
		char digest[AGENT_WL_DIGEST_B64_LEN + 1];
		err = agent_wl_sign(PERCH_SLICE_LIT(KEY), req.module, req.body, digest,
		                    sizeof digest, &status, &why);
		if (err == PERCH_OK ? strlen(digest) != AGENT_WL_DIGEST_B64_LEN : status != 400)
			abort();
	}
	if (perch_alloc_blocks() != before)
		abort();
	return 0;
}
