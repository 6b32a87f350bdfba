/*
 * utf8.h — the UTF-8 rules of MQTT strings.
 *
 * MQTT 3.1.1 (section 1.5.3) requires every UTF-8 encoded string to be
 * well-formed UTF-8 as defined by RFC 3629: no overlong forms, no code points
 * above U+10FFFF, no UTF-16 surrogates U+D800..U+DFFF, and no U+0000. The
 * checker below enforces exactly those MUST rules (the SHOULD NOT rules about
 * control characters and non-characters are left to the application). Pure:
 * no allocation, no I/O, no state; safe from any thread.
 */
#ifndef PERCH_UTF8_H
#define PERCH_UTF8_H

#include <stddef.h>

/* What is wrong with a string, or PERCH_UTF8_OK. */
typedef enum perch_utf8_status {
	PERCH_UTF8_OK = 0,
	PERCH_UTF8_NUL,       /* contains U+0000 */
	PERCH_UTF8_BAD_BYTE,  /* a byte that cannot start a sequence, or a missing continuation */
	PERCH_UTF8_TRUNCATED, /* the input ends inside a multi-byte sequence */
	PERCH_UTF8_OVERLONG,  /* a code point encoded with more bytes than needed */
	PERCH_UTF8_SURROGATE, /* a UTF-16 surrogate, U+D800..U+DFFF */
	PERCH_UTF8_TOO_BIG,   /* a code point above U+10FFFF */
	PERCH_UTF8_STATUS_COUNT
} perch_utf8_status;

/*
 * perch_utf8_check tells whether the len bytes at s (which need not be
 * NUL-terminated; s may be NULL when len is 0) are a valid MQTT UTF-8 string,
 * and if not, what the first fault is. The caller keeps s.
 */
perch_utf8_status perch_utf8_check(const void *s, size_t len);

/* perch_utf8_status_str returns a short static text for st (never NULL). */
const char *perch_utf8_status_str(perch_utf8_status st);

#endif /* PERCH_UTF8_H */
