/*
 * fuzz_topic.c — libFuzzer target for the topic grammar and matcher.
 *
 * Input: byte 0 is where to cut the rest into a filter and a name. Checks:
 * validation never crashes; a valid name is also a valid filter and matches
 * itself; "#" matches every valid name not starting with '$'; and the
 * matcher agrees with a slow reference built from split levels.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perch/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

static size_t level_len(const char *s, size_t n)
{
	const char *slash = memchr(s, '/', n);
	return slash ? (size_t)(slash - s) : n;
}

/* ref_match: the matching rules of 4.7, one level per recursion step. */
static bool ref_match(const char *f, size_t fl, const char *n, size_t nl)
{
	size_t fe = level_len(f, fl), ne = level_len(n, nl);
	if (fe == 1 && f[0] == '#')
		return true;
	if (!((fe == 1 && f[0] == '+') || (fe == ne && memcmp(f, n, fe) == 0)))
		return false;
	bool flast = fe == fl, nlast = ne == nl;
	if (flast || nlast) {
		if (flast && nlast)
			return true;
		return nlast && fl - fe == 2 && f[fe + 1] == '#';
	}
	return ref_match(f + fe + 1, fl - fe - 1, n + ne + 1, nl - ne - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t cut = data[0];
	data++;
	size--;
	if (cut > size)
		cut = size;
	perch_slice filter = {(const char *)data, cut};
	perch_slice name = {(const char *)data + cut, size - cut};
	perch_slice all = {(const char *)data, size};

	perch_topic_status fs = perch_topic_check_filter(filter);
	perch_topic_status ns = perch_topic_check_name(name);
	(void)perch_topic_check_filter(all);
	(void)perch_topic_has_wildcard(filter);
	bool m = perch_topic_match(filter, name); /* memory-safe on any input */

	if (ns == PERCH_TOPIC_OK) {
		CHECK(perch_topic_check_filter(name) == PERCH_TOPIC_OK);
		CHECK(!perch_topic_has_wildcard(name));
		CHECK(perch_topic_match(name, name));
		CHECK(perch_topic_match(PERCH_SLICE_LIT("#"), name) == (name.ptr[0] != '$'));
	}
	if (fs == PERCH_TOPIC_OK && ns == PERCH_TOPIC_OK) {
		bool want = ref_match(filter.ptr, filter.len, name.ptr, name.len);
		if (name.ptr[0] == '$' && (filter.ptr[0] == '+' || filter.ptr[0] == '#'))
			want = false;
		CHECK(m == want);
		if (!perch_topic_has_wildcard(filter))
			CHECK(m == perch_slice_eq(filter, name));
	}
	return 0;
}
