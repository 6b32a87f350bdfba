/*
 * utf8.c — validation of MQTT UTF-8 strings (RFC 3629 plus "no U+0000").
 *
 * ASCII runs, by far the most common content of topics and client ids, are
 * skipped eight bytes at a time; multi-byte sequences are decoded one by one
 * and their code point checked against the minimum for their length (no
 * overlongs), the surrogate range and U+10FFFF.
 */
#include "perch/utf8.h"

#include <stdint.h>
#include <string.h>

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* ascii_run returns how many leading bytes of p[0..len) are ASCII other than
 * NUL, looking eight bytes at a time; it may stop early, never late. */
static size_t ascii_run(const unsigned char *p, size_t len)
{
	size_t i = 0;
	while (len - i >= 8) {
		uint64_t w;
		memcpy(&w, p + i, sizeof w);
		/* any byte >= 0x80, or any zero byte */
		if (((w | ((w - ONES) & ~w)) & HIGHS) != 0)
			break;
		i += 8;
	}
	return i;
}

perch_utf8_status perch_utf8_check(const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t i = 0;
	while (i < len) {
		i += ascii_run(p + i, len - i);
		if (i == len)
			break;
		unsigned char b = p[i];
		if (b < 0x80) {
			if (b == 0)
				return PERCH_UTF8_NUL;
			i++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if (b < 0xC0) {
			return PERCH_UTF8_BAD_BYTE; /* a continuation byte with no lead */
		} else if (b < 0xE0) {
			n = 2, cp = b & 0x1Fu, min = 0x80;
		} else if (b < 0xF0) {
			n = 3, cp = b & 0x0Fu, min = 0x800;
		} else if (b < 0xF8) {
			n = 4, cp = b & 0x07u, min = 0x10000;
		} else {
			return PERCH_UTF8_BAD_BYTE;
		}
		for (size_t k = 1; k < n; k++) {
			if (i + k >= len)
				return PERCH_UTF8_TRUNCATED;
			unsigned char c = p[i + k];
			if ((c & 0xC0) != 0x80)
				return PERCH_UTF8_BAD_BYTE;
			cp = (cp << 6) | (c & 0x3Fu);
		}
		if (cp < min)
			return PERCH_UTF8_OVERLONG;
		if (cp >= 0xD800 && cp <= 0xDFFF)
			return PERCH_UTF8_SURROGATE;
		if (cp > 0x10FFFF)
			return PERCH_UTF8_TOO_BIG;
		i += n;
	}
	return PERCH_UTF8_OK;
}

const char *perch_utf8_status_str(perch_utf8_status st)
{
	static const char *const text[PERCH_UTF8_STATUS_COUNT] = {
	        [PERCH_UTF8_OK] = "valid UTF-8",
	        [PERCH_UTF8_NUL] = "contains U+0000",
	        [PERCH_UTF8_BAD_BYTE] = "invalid UTF-8 byte",
	        [PERCH_UTF8_TRUNCATED] = "truncated UTF-8 sequence",
	        [PERCH_UTF8_OVERLONG] = "overlong UTF-8 encoding",
	        [PERCH_UTF8_SURROGATE] = "UTF-16 surrogate in UTF-8",
	        [PERCH_UTF8_TOO_BIG] = "code point above U+10FFFF",
	};
	if ((unsigned)st >= PERCH_UTF8_STATUS_COUNT)
		return "unknown UTF-8 status";
	return text[st];
}
