/*
 * alloc.c — counting allocation wrappers with a limit and fault injection.
 *
 * Each block carries a 16-byte header holding its size, so that free and
 * realloc can keep the byte count exact; the header keeps max_align_t
 * alignment for the caller's data.
 */
#include "perch/alloc.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16 /* >= sizeof(size_t), and a multiple of alignof(max_align_t) */
_Static_assert(HDR % alignof(max_align_t) == 0, "header breaks alignment");

static atomic_size_t live_bytes;
static atomic_size_t live_blocks;
static atomic_size_t limit_bytes;       /* 0: none */
static atomic_long fail_countdown = -1; /* <0: off */
static atomic_size_t failures;
static atomic_size_t peak_bytes; /* most live_bytes seen since the last reset */

/* grew records that live bytes reached now (after an allocation). */
static void grew(size_t now)
{
	size_t peak = atomic_load(&peak_bytes);
	while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now))
		;
}

/* should_fail decides whether the allocation of size more bytes fails. */
static int should_fail(size_t more)
{
	long n = atomic_load(&fail_countdown);
	while (n >= 0) {
		if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1)) {
			if (n == 0) {
				atomic_store(&fail_countdown, -1);
				atomic_fetch_add(&failures, 1);
				return 1;
			}
			break;
		}
	}
	size_t lim = atomic_load(&limit_bytes);
	if (lim != 0 && atomic_load(&live_bytes) + more > lim) {
		atomic_fetch_add(&failures, 1);
		return 1;
	}
	return 0;
}

void *perch_malloc(size_t size)
{
	if (size > SIZE_MAX - HDR || should_fail(size))
		return NULL;
	unsigned char *p = malloc(HDR + size);
	if (p == NULL) {
		atomic_fetch_add(&failures, 1);
		return NULL;
	}
	memcpy(p, &size, sizeof size);
	grew(atomic_fetch_add(&live_bytes, size) + size);
	atomic_fetch_add(&live_blocks, 1);
	return p + HDR;
}

void *perch_calloc(size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > SIZE_MAX / size)
		return NULL;
	void *p = perch_malloc(nmemb * size);
	if (p != NULL)
		memset(p, 0, nmemb * size);
	return p;
}

void perch_free(void *ptr)
{
	if (ptr == NULL)
		return;
	unsigned char *p = (unsigned char *)ptr - HDR;
	size_t size;
	memcpy(&size, p, sizeof size);
	atomic_fetch_sub(&live_bytes, size);
	atomic_fetch_sub(&live_blocks, 1);
	free(p);
}

void *perch_realloc(void *ptr, size_t size)
{
	if (ptr == NULL)
		return perch_malloc(size);
	unsigned char *p = (unsigned char *)ptr - HDR;
	size_t old;
	memcpy(&old, p, sizeof old);
	if (size > SIZE_MAX - HDR || should_fail(size > old ? size - old : 0))
		return NULL;
	unsigned char *q = realloc(p, HDR + size);
	if (q == NULL) {
		atomic_fetch_add(&failures, 1);
		return NULL;
	}
	memcpy(q, &size, sizeof size);
	grew(atomic_fetch_add(&live_bytes, size) + size);
	atomic_fetch_sub(&live_bytes, old);
	return q + HDR;
}

void *perch_grow(void *arr, size_t n, size_t *cap, size_t elem, size_t first)
{
	if (n < *cap)
		return arr;
	size_t c = *cap ? *cap * 2 : first;
	if (c < n + 1 || (elem != 0 && c > SIZE_MAX / elem))
		return NULL;
	void *p = perch_realloc(arr, c * elem);
	if (p != NULL)
		*cap = c;
	return p;
}

char *perch_memdup0(const void *src, size_t n)
{
	if (n == SIZE_MAX)
		return NULL;
	char *p = perch_malloc(n + 1);
	if (p == NULL)
		return NULL;
	if (n > 0)
		memcpy(p, src, n);
	p[n] = '\0';
	return p;
}

char *perch_strdup(const char *s)
{
	return perch_memdup0(s, strlen(s));
}

char *perch_strndup(const char *s, size_t n)
{
	return perch_memdup0(s, strnlen(s, n));
}

size_t perch_alloc_bytes(void)
{
	return atomic_load(&live_bytes);
}
size_t perch_alloc_blocks(void)
{
	return atomic_load(&live_blocks);
}
void perch_alloc_set_limit(size_t bytes)
{
	atomic_store(&limit_bytes, bytes);
}
void perch_alloc_fail_after(long n)
{
	atomic_store(&fail_countdown, n < 0 ? -1 : n);
}
size_t perch_alloc_failures(void)
{
	return atomic_load(&failures);
}
size_t perch_alloc_peak(void)
{
	return atomic_load(&peak_bytes);
}
void perch_alloc_reset_peak(void)
{
	atomic_store(&peak_bytes, atomic_load(&live_bytes));
}
