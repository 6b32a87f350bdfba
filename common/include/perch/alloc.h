/*
 * alloc.h — counting allocation wrappers.
 *
 * Every Perch allocation goes through these functions. They count the bytes
 * and blocks live at any moment (for metrics and for leak checks in tests),
 * enforce an optional process-wide limit, and can be told to fail on demand,
 * so that unit tests can make the Nth allocation fail and check that nothing
 * leaks and nothing is corrupted (SQLite-style fault injection).
 *
 * All functions are safe from any thread (the counters are atomic).
 */
#ifndef PERCH_ALLOC_H
#define PERCH_ALLOC_H

#include <stddef.h>

/* Like malloc/calloc/realloc/free/strdup/strndup, but counted and limited.
 * perch_free(NULL) does nothing. They return NULL on failure (never abort). */
void *perch_malloc(size_t size);
void *perch_calloc(size_t nmemb, size_t size);
void *perch_realloc(void *ptr, size_t size);
void perch_free(void *ptr);
char *perch_strdup(const char *s);
char *perch_strndup(const char *s, size_t n);
/* Copies n bytes of src into a new block and adds a terminating NUL. */
char *perch_memdup0(const void *src, size_t n);

/*
 * perch_grow makes room for one more element in a growable array: arr holds
 * n elements of elem bytes in *cap slots. When n < *cap it returns arr;
 * otherwise it reallocates to twice the slots (first when *cap is 0), updates
 * *cap and returns the new array. Returns NULL when memory is refused (arr
 * and *cap unchanged). Usage: p = perch_grow(a, n, &cap, sizeof *a, 16);
 * if (p == NULL) fail; a = p; a[n++] = x;
 */
void *perch_grow(void *arr, size_t n, size_t *cap, size_t elem, size_t first);

/* perch_alloc_bytes returns the bytes currently allocated through these
 * wrappers; perch_alloc_blocks the number of live blocks. */
size_t perch_alloc_bytes(void);
size_t perch_alloc_blocks(void);

/* perch_alloc_set_limit sets the most bytes that may be live at once
 * (0: no limit). An allocation that would pass the limit fails. */
void perch_alloc_set_limit(size_t bytes);

/* perch_alloc_fail_after makes the allocation after the next n succeed-ones
 * fail: n = 0 fails the very next allocation, n < 0 turns injection off.
 * Once one allocation has failed, injection turns itself off. For tests. */
void perch_alloc_fail_after(long n);

/* perch_alloc_failures returns how many allocations have failed so far. */
size_t perch_alloc_failures(void);

/* perch_alloc_peak returns the most bytes live at once since the last
 * perch_alloc_reset_peak (or since start), which sets it to the bytes live
 * now. Tests use the pair to bound what an operation allocates at its
 * worst, even when it frees everything before returning. (A realloc counts
 * its new size on top of the old for a moment, as it may hold both.) */
size_t perch_alloc_peak(void);
void perch_alloc_reset_peak(void);

#endif /* PERCH_ALLOC_H */
