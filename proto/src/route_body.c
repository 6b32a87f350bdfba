/*
 * route_body.c — a message body read as JSON for $body conditions: checked
 * and tokenized once into a flat array, then looked up by path as often as
 * the conditions ask.
 *
 * The tokenizer is strict RFC 8259 JSON with UTF-8 text; the root must be an
 * object (IoT Edge parses bodies as a JSON object). A token records where its
 * text is and, for objects and arrays, where the tokens of its members end,
 * so a lookup skips whole members. Strings are not decoded here: keys are
 * compared raw when they hold no escapes, and values are decoded only when a
 * condition uses them. Bodies over PERCH_ROUTE_MAX_BODY, _DEPTH or _TOKENS
 * are refused (TOO_BIG): routing then treats $body as undefined.
 */
#include <string.h>

#include "perch/alloc.h"
#include "perch/utf8.h"
#include "route_int.h"

typedef struct jparse {
	const unsigned char *s;
	size_t n, pos;
	rbody *b;
	unsigned depth;
	perch_route_body fail; /* UNUSED while all is well */
} jparse;

static bool jfail(jparse *jp, perch_route_body why)
{
	if (jp->fail == PERCH_ROUTE_BODY_UNUSED)
		jp->fail = why;
	return false;
}

static void skip_ws(jparse *jp)
{
	while (jp->pos < jp->n) {
		unsigned char c = jp->s[jp->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		jp->pos++;
	}
}

/* Appends a token; its index in *idx. */
static bool push(jparse *jp, jtok t, size_t *idx)
{
	rbody *b = jp->b;
	if (b->n == b->cap) {
		if (b->cap >= PERCH_ROUTE_MAX_BODY_TOKENS)
			return jfail(jp, PERCH_ROUTE_BODY_TOO_BIG);
		size_t cap = b->cap * 4;
		if (cap > PERCH_ROUTE_MAX_BODY_TOKENS)
			cap = PERCH_ROUTE_MAX_BODY_TOKENS;
		jtok *nt;
		if (b->toks == b->small) {
			nt = perch_malloc(cap * sizeof *nt);
			if (nt != NULL)
				memcpy(nt, b->small, b->n * sizeof *nt);
		} else {
			nt = perch_realloc(b->toks, cap * sizeof *nt);
		}
		if (nt == NULL)
			return jfail(jp, PERCH_ROUTE_BODY_NO_MEMORY);
		b->toks = nt;
		b->cap = cap;
	}
	b->toks[b->n] = t;
	*idx = b->n++;
	return true;
}

static bool is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Bytes a string scan stops at: the quote, the backslash, control
 * characters and the first bytes of multi-byte characters. */
static bool stops(unsigned char c)
{
	return c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
}

/* A string at pos (the opening quote). */
static bool parse_string(jparse *jp)
{
	size_t i = jp->pos + 1;
	bool esc = false, wide = false;
	for (;;) {
		while (i < jp->n && !stops(jp->s[i]))
			i++;
		if (i >= jp->n)
			return jfail(jp, PERCH_ROUTE_BODY_INVALID);
		unsigned char c = jp->s[i];
		if (c == '"')
			break;
		if (c < 0x20)
			return jfail(jp, PERCH_ROUTE_BODY_INVALID);
		if (c == '\\') {
			esc = true;
			if (i + 1 >= jp->n)
				return jfail(jp, PERCH_ROUTE_BODY_INVALID);
			unsigned char e = jp->s[i + 1];
			if (e == 'u') {
				if (jp->n - i < 6 || !is_hex(jp->s[i + 2]) ||
				    !is_hex(jp->s[i + 3]) || !is_hex(jp->s[i + 4]) ||
				    !is_hex(jp->s[i + 5]))
					return jfail(jp, PERCH_ROUTE_BODY_INVALID);
				i += 6;
				continue;
			}
			if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
				return jfail(jp, PERCH_ROUTE_BODY_INVALID);
			i += 2;
			continue;
		}
		if (c >= 0x80)
			wide = true;
		i++;
	}
	size_t start = jp->pos + 1, len = i - start;
	if (wide && perch_utf8_check(jp->s + start, len) != PERCH_UTF8_OK)
		return jfail(jp, PERCH_ROUTE_BODY_INVALID);
	size_t idx;
	jtok t = {J_STR, esc, (uint32_t)start, (uint32_t)len, 0};
	if (!push(jp, t, &idx))
		return false;
	jp->b->toks[idx].end = (uint32_t)(idx + 1);
	jp->pos = i + 1;
	return true;
}

static bool parse_number(jparse *jp)
{
	const unsigned char *s = jp->s;
	size_t i = jp->pos, n = jp->n;
	if (i < n && s[i] == '-')
		i++;
	if (i >= n || !is_digit(s[i]))
		return jfail(jp, PERCH_ROUTE_BODY_INVALID);
	if (s[i] == '0')
		i++;
	else
		while (i < n && is_digit(s[i]))
			i++;
	if (i < n && s[i] == '.') {
		i++;
		if (i >= n || !is_digit(s[i]))
			return jfail(jp, PERCH_ROUTE_BODY_INVALID);
		while (i < n && is_digit(s[i]))
			i++;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= n || !is_digit(s[i]))
			return jfail(jp, PERCH_ROUTE_BODY_INVALID);
		while (i < n && is_digit(s[i]))
			i++;
	}
	size_t idx;
	jtok t = {J_NUM, 0, (uint32_t)jp->pos, (uint32_t)(i - jp->pos), 0};
	if (!push(jp, t, &idx))
		return false;
	jp->b->toks[idx].end = (uint32_t)(idx + 1);
	jp->pos = i;
	return true;
}

static bool parse_word(jparse *jp, const char *w, jtype type)
{
	size_t len = strlen(w);
	if (jp->n - jp->pos < len || memcmp(jp->s + jp->pos, w, len) != 0)
		return jfail(jp, PERCH_ROUTE_BODY_INVALID);
	size_t idx;
	if (!push(jp, (jtok){(uint8_t)type, 0, (uint32_t)jp->pos, (uint32_t)len, 0}, &idx))
		return false;
	jp->b->toks[idx].end = (uint32_t)(idx + 1);
	jp->pos += len;
	return true;
}

static bool parse_value(jparse *jp);

/* An object or array at pos; members parsed recursively (depth bounded). */
static bool parse_container(jparse *jp, bool object)
{
	if (++jp->depth > PERCH_ROUTE_MAX_BODY_DEPTH)
		return jfail(jp, PERCH_ROUTE_BODY_TOO_BIG);
	size_t idx;
	jtok t = {(uint8_t)(object ? J_OBJ : J_ARR), 0, (uint32_t)jp->pos, 0, 0};
	if (!push(jp, t, &idx))
		return false;
	unsigned char close = object ? (unsigned char)'}' : (unsigned char)']';
	jp->pos++;
	skip_ws(jp);
	if (jp->pos < jp->n && jp->s[jp->pos] == close) {
		jp->pos++;
	} else {
		for (;;) {
			if (object) {
				skip_ws(jp);
				if (jp->pos >= jp->n || jp->s[jp->pos] != '"')
					return jfail(jp, PERCH_ROUTE_BODY_INVALID);
				if (!parse_string(jp))
					return false;
				skip_ws(jp);
				if (jp->pos >= jp->n || jp->s[jp->pos] != ':')
					return jfail(jp, PERCH_ROUTE_BODY_INVALID);
				jp->pos++;
			}
			if (!parse_value(jp))
				return false;
			skip_ws(jp);
			if (jp->pos >= jp->n)
				return jfail(jp, PERCH_ROUTE_BODY_INVALID);
			unsigned char c = jp->s[jp->pos++];
			if (c == close)
				break;
			if (c != ',')
				return jfail(jp, PERCH_ROUTE_BODY_INVALID);
		}
	}
	jp->b->toks[idx].end = (uint32_t)jp->b->n;
	jp->depth--;
	return true;
}

static bool parse_value(jparse *jp)
{
	skip_ws(jp);
	if (jp->pos >= jp->n)
		return jfail(jp, PERCH_ROUTE_BODY_INVALID);
	switch (jp->s[jp->pos]) {
	case '{': return parse_container(jp, true);
	case '[': return parse_container(jp, false);
	case '"': return parse_string(jp);
	case 't': return parse_word(jp, "true", J_TRUE);
	case 'f': return parse_word(jp, "false", J_FALSE);
	case 'n': return parse_word(jp, "null", J_NULL);
	default: return parse_number(jp);
	}
}

void route_body_parse(rbody *b, perch_slice body)
{
	if (b->state != PERCH_ROUTE_BODY_UNUSED)
		return;
	b->toks = b->small;
	b->cap = RBODY_SMALL;
	b->n = 0;
	if (body.len > PERCH_ROUTE_MAX_BODY) {
		b->state = PERCH_ROUTE_BODY_TOO_BIG;
		return;
	}
	jparse jp = {(const unsigned char *)body.ptr, body.len, 0, b, 0, PERCH_ROUTE_BODY_UNUSED};
	if (body.len == 0 || body.ptr == NULL) {
		b->state = PERCH_ROUTE_BODY_INVALID;
		return;
	}
	skip_ws(&jp);
	if (jp.pos >= jp.n || jp.s[jp.pos] != '{') {
		b->state = PERCH_ROUTE_BODY_INVALID; /* the root must be an object */
		return;
	}
	if (parse_value(&jp)) {
		skip_ws(&jp);
		if (jp.pos != jp.n)
			jfail(&jp, PERCH_ROUTE_BODY_INVALID);
	}
	b->state = jp.fail == PERCH_ROUTE_BODY_UNUSED ? PERCH_ROUTE_BODY_JSON : jp.fail;
}

void route_body_fini(rbody *b)
{
	if (b->toks != NULL && b->toks != b->small)
		perch_free(b->toks);
	b->toks = NULL;
	b->n = b->cap = 0;
}

/* --- strings -------------------------------------------------------------- */

static unsigned hex4(const char *s)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)s[i];
		v = v * 16 + (c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10));
	}
	return v;
}

/* Decodes one character of a raw JSON string at *i into out (up to 4
 * bytes); returns the byte count. The string was validated by the tokenizer. */
static size_t decode_one(const char *raw, size_t rawlen, size_t *i, char out[4])
{
	char c = raw[*i];
	if (c != '\\') {
		out[0] = c;
		(*i)++;
		return 1;
	}
	char e = raw[*i + 1];
	if (e != 'u') {
		*i += 2;
		switch (e) {
		case 'b': out[0] = '\b'; break;
		case 'f': out[0] = '\f'; break;
		case 'n': out[0] = '\n'; break;
		case 'r': out[0] = '\r'; break;
		case 't': out[0] = '\t'; break;
		default: out[0] = e; break; /* " \ / */
		}
		return 1;
	}
	unsigned cp = hex4(raw + *i + 2);
	*i += 6;
	if (cp >= 0xD800 && cp <= 0xDBFF && rawlen - *i >= 6 && raw[*i] == '\\' &&
	    raw[*i + 1] == 'u') {
		unsigned lo = hex4(raw + *i + 2);
		if (lo >= 0xDC00 && lo <= 0xDFFF) {
			cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			*i += 6;
		}
	}
	if (cp >= 0xD800 && cp <= 0xDFFF)
		cp = 0xFFFD;
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

bool route_json_str_eq(const char *raw, size_t rawlen, const char *name, size_t len)
{
	size_t i = 0, k = 0;
	while (i < rawlen) {
		char buf[4];
		size_t n = decode_one(raw, rawlen, &i, buf);
		if (len - k < n || memcmp(name + k, buf, n) != 0)
			return false;
		k += n;
	}
	return k == len;
}

size_t route_json_unescape(const char *raw, size_t rawlen, char *out)
{
	size_t i = 0, k = 0;
	while (i < rawlen)
		k += decode_one(raw, rawlen, &i, out + k);
	return k;
}

/* --- lookups -------------------------------------------------------------- */

long route_body_find(const rbody *b, perch_slice body, const rstep *steps, size_t n,
                     const char *pool)
{
	if (b->state != PERCH_ROUTE_BODY_JSON || b->n == 0)
		return -1;
	const jtok *t = b->toks;
	size_t cur = 0;
	for (size_t s = 0; s < n; s++) {
		const rstep *st = &steps[s];
		size_t i = cur + 1, end = t[cur].end;
		long found = -1;
		if (st->index < 0) {
			if (t[cur].type != J_OBJ)
				return -1;
			const char *name = pool + st->off;
			/* The last of duplicate keys wins, as in IoT Edge's parser. */
			while (i < end) {
				const jtok *k = &t[i];
				const char *raw = body.ptr + k->start;
				if (k->esc ? route_json_str_eq(raw, k->len, name, st->len)
				           : k->len == st->len && memcmp(raw, name, k->len) == 0)
					found = (long)(i + 1);
				i = t[i + 1].end;
			}
		} else {
			if (t[cur].type != J_ARR)
				return -1;
			for (int32_t k = 0; i < end; k++) {
				if (k == st->index) {
					found = (long)i;
					break;
				}
				i = t[i].end;
			}
		}
		if (found < 0)
			return -1;
		cur = (size_t)found;
	}
	return (long)cur;
}
