/*
 * outbuf.h — proto's private bounded output writer: appends into a caller's
 * buffer, and remembers an overflow instead of failing each call, so that a
 * builder appends its pieces and checks once at the end.
 */
#ifndef PROTO_OUTBUF_H
#define PROTO_OUTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "perch/slice.h"

typedef struct outbuf {
	char *out;     /* the caller's buffer */
	size_t cap;    /* its size */
	size_t n;      /* bytes written */
	bool overflow; /* something did not fit: the contents are incomplete */
} outbuf;

static inline void outbuf_put(outbuf *w, perch_slice s)
{
	if (w->overflow || w->cap - w->n < s.len) {
		w->overflow = true;
		return;
	}
	if (s.len > 0)
		memcpy(w->out + w->n, s.ptr, s.len);
	w->n += s.len;
}

static inline void outbuf_put_str(outbuf *w, const char *s)
{
	outbuf_put(w, perch_slice_cstr(s));
}

static inline void outbuf_put_u64(outbuf *w, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	outbuf_put(w, (perch_slice){tmp + sizeof tmp - n, n});
}

#endif /* PROTO_OUTBUF_H */
