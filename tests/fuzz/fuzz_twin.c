/*
 * fuzz_twin.c — libFuzzer target for twin documents at perch-hub
 * (hub/src/twin.c): the reported patches any module or leaf device
 * publishes to $iothub/twin/PATCH/properties/reported/, the desired
 * properties PATCHed at the hub's REST API, and the desired documents and
 * patches a parent hub sends down the link. The input is cut at each
 * "\n--\n" into up to eight documents, applied in turn to one twin, each
 * both as a reported patch and as a desired section. Checks the contract:
 * a refusal has a reason and leaves the twin as it was; an accepted
 * reported patch is the RFC 7396 merge of the old section with the patch,
 * within the limits, one version up; a desired change comes with the patch
 * that turns the old section into the new one; the GET document parses
 * back. Nothing may leak (jansson allocates through the counting
 * allocator, which must be back where it started).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../hub/src/twin.h"
#include "perch/alloc.h"

#define SEP      "\n--\n"
#define MAX_DOCS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* same: are a and b (borrowed) equal, where either may be NULL? */
static bool same(const json_t *a, const json_t *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && json_equal(a, b));
}

static void reported(hub_twin *t, const char *text, size_t len)
{
	char why[256];
	json_t *before = json_deep_copy(t->reported);
	uint64_t v0 = t->reported_version;
	if (before == NULL)
		abort();
	perch_err err = hub_twin_report(t, text, len, why, sizeof why);
	if (err != PERCH_OK) {
		if (why[0] == '\0' || t->reported_version != v0 || !json_equal(before, t->reported))
			abort(); /* a refusal says why and changes nothing */
		json_decref(before);
		return;
	}
	if (t->reported_version != v0 + 1 ||
	    hub_twin_check(t->reported, false, why, sizeof why) != PERCH_OK)
		abort();
	/* The section is the old one with the patch merged in. */
	json_t *patch = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (patch == NULL || hub_twin_merge(before, patch) != PERCH_OK ||
	    !json_equal(before, t->reported))
		abort();
	json_decref(patch);
	json_decref(before);
}

static void desired(hub_twin *t, const char *text, size_t len)
{
	char why[256];
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (doc == NULL)
		return;
	json_t *before = json_deep_copy(t->desired), *patch = NULL;
	uint64_t v0 = t->desired_version;
	if (before == NULL)
		abort();
	perch_err err = hub_twin_set_desired(t, doc, &patch, why, sizeof why);
	if (err != PERCH_OK) {
		if (why[0] == '\0' || patch != NULL || t->desired_version != v0 ||
		    !json_equal(before, t->desired))
			abort();
	} else if (patch == NULL) {
		if (t->desired_version != v0 || !json_equal(before, t->desired))
			abort(); /* no change: no patch, same version */
	} else {
		/* The patch carries the new version and turns old into new. */
		json_t *ver = json_object_get(patch, "$version");
		if (t->desired_version != v0 + 1 || !json_is_integer(ver) ||
		    (uint64_t)json_integer_value(ver) != t->desired_version)
			abort();
		(void)json_object_del(patch, "$version");
		if (hub_twin_merge(before, patch) != PERCH_OK || !json_equal(before, t->desired))
			abort();
		if (hub_twin_check(t->desired, false, why, sizeof why) != PERCH_OK)
			abort();
	}
	json_decref(patch);
	/* The desired section as a remote layer over the deployment's. */
	json_t *layer = NULL;
	if (hub_twin_layer(t->desired, doc, &layer) != PERCH_OK || !json_is_object(layer))
		abort();
	json_decref(layer);
	json_decref(before);
	json_decref(doc);
}

static void document(const hub_twin *t)
{
	char *out;
	size_t len;
	if (hub_twin_document(t, &out, &len) != PERCH_OK)
		abort();
	json_t *doc = json_loadb(out, len, 0, NULL);
	json_t *d = json_object_get(doc, "desired"), *r = json_object_get(doc, "reported");
	if (!json_is_object(d) || !json_is_object(r) ||
	    (uint64_t)json_integer_value(json_object_get(d, "$version")) != t->desired_version ||
	    (uint64_t)json_integer_value(json_object_get(r, "$version")) != t->reported_version)
		abort();
	(void)json_object_del(r, "$version");
	if (!same(r, t->reported))
		abort();
	json_decref(doc);
	perch_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		json_set_alloc_funcs(perch_malloc, perch_free);
		ready = true;
	}
	size_t before = perch_alloc_blocks();
	hub_twin t;
	if (hub_twin_init(&t) != PERCH_OK)
		abort();
	const char *p = (const char *)data, *end = p + size;
	for (int n = 0; n < MAX_DOCS && p <= end; n++) {
		const char *cut = memmem(p, (size_t)(end - p), SEP, strlen(SEP));
		size_t len = cut != NULL ? (size_t)(cut - p) : (size_t)(end - p);
		reported(&t, p, len);
		desired(&t, p, len);
		if (cut == NULL)
			break;
		p = cut + strlen(SEP);
	}
	document(&t);
	hub_twin copy;
	if (hub_twin_copy(&copy, &t) != PERCH_OK || !json_equal(copy.reported, t.reported) ||
	    !json_equal(copy.desired, t.desired))
		abort();
	hub_twin_fini(&copy);
	hub_twin_fini(&t);
	if (perch_alloc_blocks() != before)
		abort(); /* a leak */
	return 0;
}
