/*
 * fuzz_config.c — libFuzzer target for the YAML configuration loader, the
 * first thing a daemon parses and one an attacker with write access to a
 * drop-in directory could shape. Loads the input against a table with every
 * field type, then checks that the errors are well-formed and that nothing
 * leaks (the counting allocator must be back where it started).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perch/alloc.h"
#include "perch/config.h"

struct fz {
	bool b;
	int64_t i, d;
	uint64_t z;
	char *s;
	int e;
	perch_strlist l;
};

static const char *const choices[] = {"a", "b", NULL};
#define F(x) offsetof(struct fz, x)
static const perch_cfg_key table[] = {
        {"hub.b", PERCH_CFG_BOOL, 0, 0, "true", F(b), NULL, ""},
        {"hub.i", PERCH_CFG_INT, -5, 5, "1", F(i), NULL, ""},
        {"hub.d", PERCH_CFG_DURATION, 0, 0, "1s", F(d), NULL, ""},
        {"hub.z", PERCH_CFG_SIZE, 0, 0, "1k", F(z), NULL, ""},
        {"hub.deep.s", PERCH_CFG_STRING, 0, 64, "x", F(s), NULL, ""},
        {"e", PERCH_CFG_ENUM, 0, 0, "a", F(e), choices, ""},
        {"hub.l", PERCH_CFG_STRLIST, 0, 8, NULL, F(l), NULL, ""},
};
static const char *const foreign[] = {"agent", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t before = perch_alloc_bytes();
	struct fz s = {0};
	perch_cfg_errors errs = {0};
	size_t n = sizeof table / sizeof table[0];
	if (perch_cfg_defaults(table, n, &s) != PERCH_OK)
		abort();
	perch_err e = perch_cfg_load_buffer(table, n, foreign, "fuzz", (const char *)data, size, &s,
	                                    &errs);
	if (e != PERCH_OK && e != PERCH_ECONFIG && e != PERCH_ETOOBIG && e != PERCH_ENOMEM)
		abort();
	if ((e == PERCH_ECONFIG) != (errs.n > 0 && e != PERCH_OK))
		abort(); /* an error status always comes with a message, and back */
	for (size_t k = 0; k < errs.n; k++)
		if (strncmp(errs.msg[k], "fuzz", 4) != 0)
			abort();
	if (s.i < -5 || s.i > 5 || (s.s != NULL && strlen(s.s) > 64) || s.l.n > 8)
		abort(); /* ranges hold whatever the input */
	perch_cfg_free(table, n, &s);
	perch_cfg_errors_free(&errs);
	if (perch_alloc_bytes() != before)
		abort();
	return 0;
}
