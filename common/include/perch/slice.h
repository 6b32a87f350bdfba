/*
 * slice.h — strings and byte runs as {pointer, length}, never NUL-terminated.
 *
 * A perch_slice borrows memory it does not own: whoever hands one out says
 * how long it stays valid. Decoders return slices into the caller's buffer.
 */
#ifndef PERCH_SLICE_H
#define PERCH_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct perch_slice {
	const char *ptr; /* may be NULL when len == 0 */
	size_t len;
} perch_slice;

#define PERCH_SLICE_LIT(s) ((perch_slice){(s), sizeof(s) - 1})

static inline perch_slice perch_slice_cstr(const char *s)
{
	return (perch_slice){s, s ? strlen(s) : 0};
}

static inline bool perch_slice_eq(perch_slice a, perch_slice b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline bool perch_slice_eq_cstr(perch_slice a, const char *s)
{
	return perch_slice_eq(a, perch_slice_cstr(s));
}

static inline bool perch_slice_starts(perch_slice a, const char *prefix)
{
	size_t n = strlen(prefix);
	return a.len >= n && memcmp(a.ptr, prefix, n) == 0;
}

#endif /* PERCH_SLICE_H */
