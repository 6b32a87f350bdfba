/*
 * props.c — IoT Hub property bags and the URL encoding they use.
 *
 * Decoding is percent-decoding with `+` left alone; encoding escapes all but
 * the RFC 3986 unreserved set. A bag keeps its decoded keys and values packed
 * in its own buffer, addressed by offsets, so it can be copied by value and
 * needs no allocation. See props.h for the contract.
 */
#include "perch/props.h"

#include <string.h>

static const char HEX_UPPER[] = "0123456789ABCDEF";

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

perch_err perch_props_url_decode(perch_slice in, char *out, size_t cap, size_t *out_len,
                                 size_t *bad_at)
{
	size_t n = 0;
	for (size_t i = 0; i < in.len; i++) {
		char c = in.ptr[i];
		if (c == '%') {
			if (in.len - i < 3) {
				if (bad_at != NULL)
					*bad_at = i;
				return PERCH_EINVAL;
			}
			int hi = hex_value(in.ptr[i + 1]);
			int lo = hex_value(in.ptr[i + 2]);
			if (hi < 0 || lo < 0) {
				if (bad_at != NULL)
					*bad_at = i;
				return PERCH_EINVAL;
			}
			c = (char)(unsigned char)(hi * 16 + lo);
			i += 2;
		}
		if (n >= cap)
			return PERCH_ETOOBIG;
		out[n++] = c;
	}
	*out_len = n;
	return PERCH_OK;
}

/* Shared by both encoders: js_strict gives `! ' ( ) *` the lower-case escapes
 * of azure-iot-common's encodeUriComponentStrict. */
static perch_err url_encode(perch_slice in, char *out, size_t cap, size_t *out_len, bool js_strict)
{
	size_t n = 0;
	for (size_t i = 0; i < in.len; i++) {
		unsigned char c = (unsigned char)in.ptr[i];
		if (is_unreserved(c)) {
			if (n >= cap)
				return PERCH_ETOOBIG;
			out[n++] = (char)c;
			continue;
		}
		if (cap - n < 3)
			return PERCH_ETOOBIG;
		out[n++] = '%';
		if (js_strict && c == '*') {
			out[n++] = '2';
			out[n++] = 'a';
		} else {
			out[n++] = HEX_UPPER[c >> 4];
			out[n++] = HEX_UPPER[c & 15];
		}
	}
	*out_len = n;
	return PERCH_OK;
}

perch_err perch_props_url_encode(perch_slice in, char *out, size_t cap, size_t *out_len)
{
	return url_encode(in, out, cap, out_len, false);
}

perch_err perch_props_url_encode_js(perch_slice in, char *out, size_t cap, size_t *out_len)
{
	return url_encode(in, out, cap, out_len, true);
}

/* Returns the offset of the first byte that makes s not UTF-8 (overlong forms,
 * surrogates and values past U+10FFFF are refused), or s.len when it is. */
static size_t utf8_bad_at(perch_slice s)
{
	size_t i = 0;
	const unsigned char *p = (const unsigned char *)s.ptr;
	while (i < s.len) {
		unsigned char c = p[i];
		size_t need;
		unsigned min;
		unsigned cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xC2 && c <= 0xDF) {
			need = 1, min = 0x80, cp = c & 0x1Fu;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2, min = 0x800, cp = c & 0x0Fu;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3, min = 0x10000, cp = c & 0x07u;
		} else {
			return i;
		}
		if (s.len - i <= need)
			return i;
		for (size_t k = 1; k <= need; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return i;
			cp = (cp << 6) | (p[i + k] & 0x3Fu);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return i;
		i += need + 1;
	}
	return s.len;
}

/* Checks decoded text: no control characters, UTF-8. */
static perch_props_reason check_text(perch_slice s)
{
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		if (c < 0x20 || c == 0x7F)
			return PERCH_PROPS_BAD_CHAR;
	}
	if (utf8_bad_at(s) != s.len)
		return PERCH_PROPS_BAD_UTF8;
	return PERCH_PROPS_OK;
}

static perch_slice entry_key(const perch_props *props, size_t i)
{
	const perch_props_entry *e = &props->entries[i];
	return (perch_slice){props->buf + e->key_off, e->key_len};
}

static perch_slice entry_value(const perch_props *props, size_t i)
{
	const perch_props_entry *e = &props->entries[i];
	return (perch_slice){props->buf + e->val_off, e->val_len};
}

/* Index of key in props, or props->count. */
static size_t find_key(const perch_props *props, perch_slice key)
{
	size_t i;
	for (i = 0; i < props->count; i++) {
		if (perch_slice_eq(entry_key(props, i), key))
			break;
	}
	return i;
}

void perch_props_init(perch_props *props)
{
	props->count = 0;
	props->used = 0;
}

static void set_fail(perch_props_fail *fail, perch_props_reason reason, size_t offset)
{
	if (fail != NULL) {
		fail->reason = reason;
		fail->offset = offset;
	}
}

static perch_err reason_err(perch_props_reason reason)
{
	switch (reason) {
	case PERCH_PROPS_OK: return PERCH_OK;
	case PERCH_PROPS_KEY_TOO_LONG:
	case PERCH_PROPS_VALUE_TOO_LONG:
	case PERCH_PROPS_TOO_MANY:
	case PERCH_PROPS_TOO_LONG:
	case PERCH_PROPS_NO_SPACE: return PERCH_ETOOBIG;
	case PERCH_PROPS_DUPLICATE: return PERCH_EEXIST;
	default: return PERCH_EINVAL;
	}
}

/* Decodes one key or value of a bag being parsed into props->buf. raw_off is
 * the offset of raw in the whole input, for error offsets. */
static perch_props_reason decode_part(perch_props *props, perch_slice raw, size_t raw_off,
                                      size_t max, perch_props_reason too_long, size_t *off,
                                      size_t *len, size_t *where)
{
	size_t bad = 0;
	size_t room = sizeof props->buf - props->used;
	*off = props->used;
	perch_err err = perch_props_url_decode(raw, props->buf + props->used, room, len, &bad);
	if (err == PERCH_EINVAL) {
		*where = raw_off + bad;
		return PERCH_PROPS_BAD_ESCAPE;
	}
	if (err != PERCH_OK) { /* cannot happen: decoded <= raw <= buffer */
		*where = raw_off;
		return PERCH_PROPS_TOO_LONG;
	}
	if (*len > max) {
		*where = raw_off;
		return too_long;
	}
	perch_slice dec = {props->buf + *off, *len};
	perch_props_reason r = check_text(dec);
	if (r != PERCH_PROPS_OK) {
		*where = raw_off;
		return r;
	}
	props->used += *len;
	return PERCH_PROPS_OK;
}

perch_err perch_props_parse(perch_slice encoded, perch_props *out, perch_props_fail *fail)
{
	perch_props_init(out);
	set_fail(fail, PERCH_PROPS_OK, 0);
	if (encoded.len > PERCH_PROPS_MAX_ENCODED) {
		set_fail(fail, PERCH_PROPS_TOO_LONG, PERCH_PROPS_MAX_ENCODED);
		return PERCH_ETOOBIG;
	}
	perch_props_reason r = PERCH_PROPS_OK;
	size_t where = 0;
	size_t pos = 0;
	while (pos < encoded.len) {
		size_t end = pos;
		size_t eq = SIZE_MAX;
		while (end < encoded.len && encoded.ptr[end] != '&') {
			if (encoded.ptr[end] == '=' && eq == SIZE_MAX)
				eq = end;
			end++;
		}
		if (end == pos) { /* an empty segment */
			pos++;
			continue;
		}
		if (eq == pos) {
			r = PERCH_PROPS_EMPTY_KEY;
			where = pos;
			goto fail;
		}
		if (out->count == PERCH_PROPS_MAX_PAIRS) {
			r = PERCH_PROPS_TOO_MANY;
			where = pos;
			goto fail;
		}
		size_t key_end = eq == SIZE_MAX ? end : eq;
		perch_slice raw_key = {encoded.ptr + pos, key_end - pos};
		perch_slice raw_val = {encoded.ptr + key_end, 0};
		if (eq != SIZE_MAX)
			raw_val = (perch_slice){encoded.ptr + eq + 1, end - eq - 1};
		size_t koff, klen, voff, vlen;
		r = decode_part(out, raw_key, pos, PERCH_PROPS_MAX_KEY, PERCH_PROPS_KEY_TOO_LONG,
		                &koff, &klen, &where);
		if (r != PERCH_PROPS_OK)
			goto fail;
		if (klen == 0) { /* cannot happen: a non-empty raw key decodes to >= 1 byte */
			r = PERCH_PROPS_EMPTY_KEY;
			where = pos;
			goto fail;
		}
		if (find_key(out, (perch_slice){out->buf + koff, klen}) != out->count) {
			r = PERCH_PROPS_DUPLICATE;
			where = pos;
			goto fail;
		}
		r = decode_part(out, raw_val, (size_t)(raw_val.ptr - encoded.ptr),
		                PERCH_PROPS_MAX_VALUE, PERCH_PROPS_VALUE_TOO_LONG, &voff, &vlen,
		                &where);
		if (r != PERCH_PROPS_OK)
			goto fail;
		out->entries[out->count++] = (perch_props_entry){(uint16_t)koff, (uint16_t)klen,
		                                                 (uint16_t)voff, (uint16_t)vlen};
		pos = end;
	}
	return PERCH_OK;
fail:
	perch_props_init(out);
	set_fail(fail, r, where);
	return reason_err(r);
}

perch_err perch_props_encode(const perch_props *props, char *out, size_t cap, size_t *out_len)
{
	size_t n = 0;
	for (size_t i = 0; i < props->count; i++) {
		size_t w;
		if (i > 0) {
			if (n >= cap)
				return PERCH_ETOOBIG;
			out[n++] = '&';
		}
		if (perch_props_url_encode(entry_key(props, i), out + n, cap - n, &w) != PERCH_OK)
			return PERCH_ETOOBIG;
		n += w;
		if (n >= cap)
			return PERCH_ETOOBIG;
		out[n++] = '=';
		if (perch_props_url_encode(entry_value(props, i), out + n, cap - n, &w) != PERCH_OK)
			return PERCH_ETOOBIG;
		n += w;
	}
	*out_len = n;
	return PERCH_OK;
}

size_t perch_props_count(const perch_props *props)
{
	return props->count;
}

void perch_props_at(const perch_props *props, size_t i, perch_slice *key, perch_slice *value)
{
	if (key != NULL)
		*key = entry_key(props, i);
	if (value != NULL)
		*value = entry_value(props, i);
}

bool perch_props_get(const perch_props *props, perch_slice key, perch_slice *value)
{
	size_t i = find_key(props, key);
	if (i == props->count)
		return false;
	if (value != NULL)
		*value = entry_value(props, i);
	return true;
}

/* Removes pair i and closes the gap its bytes left in buf. */
static void remove_at(perch_props *props, size_t i)
{
	perch_props_entry gone = props->entries[i];
	/* A pair's key and value are stored back to back, key first. */
	size_t start = gone.key_off;
	size_t len = (size_t)gone.key_len + gone.val_len;
	memmove(props->buf + start, props->buf + start + len, props->used - start - len);
	props->used -= len;
	memmove(&props->entries[i], &props->entries[i + 1],
	        (props->count - i - 1) * sizeof props->entries[0]);
	props->count--;
	for (size_t k = 0; k < props->count; k++) {
		perch_props_entry *e = &props->entries[k];
		if (e->key_off > start) {
			e->key_off = (uint16_t)(e->key_off - len);
			e->val_off = (uint16_t)(e->val_off - len);
		}
	}
}

bool perch_props_remove(perch_props *props, perch_slice key)
{
	size_t i = find_key(props, key);
	if (i == props->count)
		return false;
	remove_at(props, i);
	return true;
}

perch_err perch_props_set(perch_props *props, perch_slice key, perch_slice value,
                          perch_props_fail *fail)
{
	perch_props_reason r = PERCH_PROPS_OK;
	set_fail(fail, PERCH_PROPS_OK, 0);
	if (key.len == 0)
		r = PERCH_PROPS_EMPTY_KEY;
	else if (key.len > PERCH_PROPS_MAX_KEY)
		r = PERCH_PROPS_KEY_TOO_LONG;
	else if (value.len > PERCH_PROPS_MAX_VALUE)
		r = PERCH_PROPS_VALUE_TOO_LONG;
	if (r == PERCH_PROPS_OK)
		r = check_text(key);
	if (r == PERCH_PROPS_OK)
		r = check_text(value);
	size_t i = find_key(props, key);
	size_t freed = 0;
	if (i < props->count)
		freed = (size_t)props->entries[i].key_len + props->entries[i].val_len;
	if (r == PERCH_PROPS_OK && i == props->count && props->count == PERCH_PROPS_MAX_PAIRS)
		r = PERCH_PROPS_TOO_MANY;
	if (r == PERCH_PROPS_OK && props->used - freed + key.len + value.len > sizeof props->buf)
		r = PERCH_PROPS_TOO_LONG;
	if (r != PERCH_PROPS_OK) {
		set_fail(fail, r, 0);
		return reason_err(r);
	}
	/* Replace in place of order: drop the old pair, append, move it back. */
	size_t at = i;
	if (i < props->count)
		remove_at(props, i);
	perch_props_entry e = {(uint16_t)props->used, (uint16_t)key.len,
	                       (uint16_t)(props->used + key.len), (uint16_t)value.len};
	memcpy(props->buf + props->used, key.ptr, key.len);
	if (value.len > 0)
		memcpy(props->buf + props->used + key.len, value.ptr, value.len);
	props->used += key.len + value.len;
	memmove(&props->entries[at + 1], &props->entries[at],
	        (props->count - at) * sizeof props->entries[0]);
	props->entries[at] = e;
	props->count++;
	return PERCH_OK;
}

/* The known system properties, by decoded key. */
static const struct {
	const char *key;
	perch_props_sys kind;
} SYSTEM_KEYS[] = {
        {"$.mid", PERCH_PROPS_SYS_MID},   {"$.cid", PERCH_PROPS_SYS_CID},
        {"$.on", PERCH_PROPS_SYS_ON},     {"$.ct", PERCH_PROPS_SYS_CT},
        {"$.ce", PERCH_PROPS_SYS_CE},     {"$.cdid", PERCH_PROPS_SYS_CDID},
        {"$.cmid", PERCH_PROPS_SYS_CMID}, {"$.to", PERCH_PROPS_SYS_TO},
        {"$.uid", PERCH_PROPS_SYS_UID},   {"$.exp", PERCH_PROPS_SYS_EXP},
};

perch_props_sys perch_props_system_kind(perch_slice key)
{
	if (!perch_slice_starts(key, "$."))
		return PERCH_PROPS_SYS_NONE;
	for (size_t i = 0; i < sizeof SYSTEM_KEYS / sizeof SYSTEM_KEYS[0]; i++) {
		if (perch_slice_eq_cstr(key, SYSTEM_KEYS[i].key))
			return SYSTEM_KEYS[i].kind;
	}
	return PERCH_PROPS_SYS_OTHER;
}

const char *perch_props_reason_str(perch_props_reason reason)
{
	switch (reason) {
	case PERCH_PROPS_OK: return "ok";
	case PERCH_PROPS_BAD_ESCAPE: return "bad percent escape";
	case PERCH_PROPS_BAD_CHAR: return "control character";
	case PERCH_PROPS_BAD_UTF8: return "not UTF-8";
	case PERCH_PROPS_EMPTY_KEY: return "empty key";
	case PERCH_PROPS_KEY_TOO_LONG: return "key too long";
	case PERCH_PROPS_VALUE_TOO_LONG: return "value too long";
	case PERCH_PROPS_TOO_MANY: return "too many properties";
	case PERCH_PROPS_TOO_LONG: return "property bag too long";
	case PERCH_PROPS_DUPLICATE: return "duplicate key";
	case PERCH_PROPS_NO_SPACE: return "output buffer too small";
	case PERCH_PROPS_REASON_COUNT: break;
	}
	return "unknown reason";
}
