/*
 * fuzz_manifest.c — libFuzzer target for the deployment manifest reader,
 * which takes text from the cloud or from a file an operator edits: JSON or
 * YAML, then createOptions JSON inside it, then the policy check. Parses the
 * input with a policy that allows some things (so both paths of the check
 * run), checks that a refusal always comes with a message and a success
 * with well-formed modules, and that nothing leaks (the counting allocator,
 * which jansson uses too, must be back where it started).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../agent/src/manifest.h"
#include "../../agent/src/policy.h"
#include "perch/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		agent_manifest_init();
		ready = true;
	}
	static char cap0[] = "NET_ADMIN", bind0[] = "/srv/perch";
	static char *caps[] = {cap0};
	static char *binds[] = {bind0};
	agent_policy pol = {.allow_host_network = true,
	                    .cap_add = caps,
	                    .n_cap_add = 1,
	                    .bind_sources = binds,
	                    .n_bind_sources = 1};
	size_t before = perch_alloc_bytes();
	agent_deployment d = {0};
	agent_manifest_issues errs = {0}, warns = {0};
	perch_err e = agent_manifest_parse((const char *)data, size, &pol, &d, &errs, &warns);
	if (e != PERCH_OK && e != PERCH_ECONFIG && e != PERCH_ETOOBIG && e != PERCH_ENOMEM)
		abort();
	if ((e == PERCH_ECONFIG) != (errs.n + errs.dropped > 0 && e != PERCH_OK))
		abort(); /* a refusal always says why, and a success has no errors */
	if (e == PERCH_OK) {
		for (size_t i = 0; i < d.n_modules; i++) {
			const agent_module *m = &d.modules[i];
			if (m->name == NULL || m->image == NULL || m->version == NULL ||
			    !json_is_object(m->create_options) || strlen(m->settings_hash) != 64)
				abort();
			if (i > 0 && d.modules[i - 1].startup_order > m->startup_order)
				abort();
		}
		json_t *j = agent_deployment_to_json(&d);
		json_decref(j);
	} else if (d.modules != NULL || d.twins != NULL) {
		abort(); /* a refused manifest hands nothing out */
	}
	agent_deployment_free(&d);
	agent_manifest_issues_free(&errs);
	agent_manifest_issues_free(&warns);
	if (perch_alloc_bytes() != before)
		abort();
	return 0;
}
