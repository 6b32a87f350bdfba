/*
 * route_lex.c — the route language's lexer, and the parse state and error
 * reporting shared by the statement and condition parsers.
 *
 * The rules are IoT Edge's (its GrammarLexer.g4), read for their meaning:
 * names run over every character but ()<>@,;:\"/[]?={} and white space, so
 * `temp-1`, `a.b` and `x*2` are single names; `$` starts a system property or
 * body path that may also hold [ and ]; keywords and AND/OR/NOT are
 * case-insensitive, true/false/null/undefined are lower case only; strings
 * take "..." or '...' with the escapes \" \' \\ and \uXXXX; `/ * ... * /`
 * comments are skipped. At each position the longest match wins; of two
 * matches of the same length, the one of the earlier rule (rtok_type order).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "perch/utf8.h"
#include "route_int.h"

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A character of a name (ID): anything but the separators and white space.
 * Control characters never get here (the text is checked first) but are
 * refused all the same. */
static bool id_char(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if (c <= ' ' || c == 0x7f)
		return false;
	return strchr("()<>@,;:\\\"/[]?={}", c) == NULL;
}

/* A character of a $-path: a name character, or [ and ]. */
static bool path_char(unsigned char c)
{
	return id_char(c) || c == '[' || c == ']';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static size_t run(const char *s, size_t n, size_t i, bool (*pred)(unsigned char))
{
	size_t j = i;
	while (j < n && pred((unsigned char)s[j]))
		j++;
	return j - i;
}

/* [eE][+-]?[0-9]+ at i: its length, or 0. */
static size_t m_exp(const char *s, size_t n, size_t i)
{
	if (i >= n || (s[i] != 'e' && s[i] != 'E'))
		return 0;
	size_t j = i + 1;
	if (j < n && (s[j] == '+' || s[j] == '-'))
		j++;
	size_t d = run(s, n, j, is_digit);
	return d == 0 ? 0 : j + d - i;
}

static size_t m_int(const char *s, size_t n, size_t i)
{
	size_t j = i;
	if (j < n && s[j] == '-')
		j++;
	size_t d = run(s, n, j, is_digit);
	return d == 0 ? 0 : j + d - i;
}

static size_t m_hex(const char *s, size_t n, size_t i)
{
	if (n - i < 3 || s[i] != '0' || (s[i + 1] != 'x' && s[i + 1] != 'X'))
		return 0;
	size_t d = run(s, n, i + 2, is_hex);
	return d == 0 ? 0 : 2 + d;
}

/* -?[0-9]*.[0-9]+EXP? | -?[0-9]*EXP: the longer. */
static size_t m_real(const char *s, size_t n, size_t i)
{
	size_t j = i;
	if (j < n && s[j] == '-')
		j++;
	j += run(s, n, j, is_digit);
	size_t best = 0;
	size_t e = m_exp(s, n, j);
	if (e > 0)
		best = j + e - i;
	if (j < n && s[j] == '.') {
		size_t f = run(s, n, j + 1, is_digit);
		if (f > 0) {
			size_t k = j + 1 + f;
			k += m_exp(s, n, k);
			if (k - i > best)
				best = k - i;
		}
	}
	return best;
}

/* A string at i: T_STRING, T_UNTERMINATED or T_BADESC, with its length. */
static size_t m_string(const char *s, size_t n, size_t i, rtok_type *type)
{
	char q = s[i];
	size_t j = i + 1;
	while (j < n) {
		char c = s[j];
		if (c == q) {
			*type = T_STRING;
			return j + 1 - i;
		}
		if (c == '\\') {
			if (j + 1 < n &&
			    (s[j + 1] == '"' || s[j + 1] == '\'' || s[j + 1] == '\\')) {
				j += 2;
				continue;
			}
			if (n - j >= 6 && s[j + 1] == 'u' && is_hex((unsigned char)s[j + 2]) &&
			    is_hex((unsigned char)s[j + 3]) && is_hex((unsigned char)s[j + 4]) &&
			    is_hex((unsigned char)s[j + 5])) {
				j += 6;
				continue;
			}
			*type = T_BADESC;
			return j - i;
		}
		j++;
	}
	*type = T_UNTERMINATED;
	return j - i;
}

/* The literal word w (exact case, or any case) at i: its length, or 0. */
static size_t m_word(const char *s, size_t n, size_t i, const char *w, bool any_case)
{
	size_t len = strlen(w);
	if (n - i < len)
		return 0;
	if (any_case ? !route_ieq(s + i, len, w, len) : memcmp(s + i, w, len) != 0)
		return 0;
	return len;
}

/* Operators and punctuation at i. */
static size_t m_punct(const char *s, size_t n, size_t i, rtok_type *type)
{
	char c = s[i], d = '\0';
	if (i + 1 < n)
		d = s[i + 1];
	switch (c) {
	case '{': *type = T_LBRACE; return 1;
	case '}': *type = T_RBRACE; return 1;
	case '(': *type = T_LPAREN; return 1;
	case ')': *type = T_RPAREN; return 1;
	case ',': *type = T_COMMA; return 1;
	case '+': *type = T_PLUS; return 1;
	case '-': *type = T_MINUS; return 1;
	case '*': *type = T_STAR; return 1;
	case '/': *type = T_SLASH; return 1;
	case '%': *type = T_PERCENT; return 1;
	case '=': *type = T_EQ; return 1;
	case '!':
		if (d == '=') {
			*type = T_NE;
			return 2;
		}
		return 0;
	case '<':
		if (d == '>' || d == '=') {
			*type = d == '>' ? T_NE2 : T_LE;
			return 2;
		}
		*type = T_LT;
		return 1;
	case '>':
		if (d == '=') {
			*type = T_GE;
			return 2;
		}
		*type = T_GT;
		return 1;
	case '|':
		if (d == '|') {
			*type = T_CONCAT;
			return 2;
		}
		return 0;
	case '?':
		if (d == '?') {
			*type = T_COALESCE;
			return 2;
		}
		return 0;
	default: return 0;
	}
}

typedef struct best {
	rtok_type type;
	size_t len;
} best;

static void offer(best *b, rtok_type type, size_t len)
{
	if (len == 0)
		return;
	if (len > b->len || (len == b->len && type < b->type)) {
		b->type = type;
		b->len = len;
	}
}

rtok rlex_next(rlex *lx)
{
	const char *s = lx->s;
	size_t n = lx->n;
	for (;;) {
		while (lx->pos < n && is_ws((unsigned char)s[lx->pos]))
			lx->pos++;
		/* A comment is skipped only when it is closed; an open one is a '/'. */
		if (n - lx->pos >= 4 && s[lx->pos] == '/' && s[lx->pos + 1] == '*') {
			const char *end = memmem(s + lx->pos + 2, n - lx->pos - 2, "*/", 2);
			if (end != NULL) {
				lx->pos = (size_t)(end - s) + 2;
				continue;
			}
		}
		break;
	}
	size_t i = lx->pos;
	if (i >= n)
		return (rtok){T_EOF, (uint32_t)i, 0};

	best b = {T_UNKNOWN, 0};
	unsigned char c = (unsigned char)s[i];
	rtok_type t;
	size_t len;
	if ((len = m_punct(s, n, i, &t)) > 0)
		offer(&b, t, len);
	if (c == '"' || c == '\'') {
		len = m_string(s, n, i, &t);
		offer(&b, t, len > 0 ? len : 1);
	}
	offer(&b, T_SELECT, m_word(s, n, i, "select", true));
	offer(&b, T_FROM, m_word(s, n, i, "from", true));
	offer(&b, T_WHERE, m_word(s, n, i, "where", true));
	offer(&b, T_INTO, m_word(s, n, i, "into", true));
	offer(&b, T_AND, m_word(s, n, i, "and", true));
	offer(&b, T_OR, m_word(s, n, i, "or", true));
	offer(&b, T_NOT, m_word(s, n, i, "not", true));
	offer(&b, T_TRUE, m_word(s, n, i, "true", false));
	offer(&b, T_FALSE, m_word(s, n, i, "false", false));
	offer(&b, T_NULL, m_word(s, n, i, "null", false));
	offer(&b, T_UNDEFINED, m_word(s, n, i, "undefined", false));
	offer(&b, T_INT, m_int(s, n, i));
	offer(&b, T_HEX, m_hex(s, n, i));
	offer(&b, T_REAL, m_real(s, n, i));
	if (c == '$') {
		size_t k = run(s, n, i + 1, path_char);
		if (k > 0)
			offer(&b, T_SYSPROP, 1 + k);
	}
	offer(&b, T_ID, run(s, n, i, id_char));
	offer(&b, T_QPATH, run(s, n, i, path_char));
	if (b.len == 0)
		b.len = 1; /* T_UNKNOWN: one byte (multi-byte characters are name characters) */
	lx->pos = i + b.len;
	return (rtok){b.type, (uint32_t)i, (uint32_t)b.len};
}

/* --- parse state ---------------------------------------------------------- */

void rp_init(rparse *p, perch_slice text, rfail *fail)
{
	p->text = text;
	p->lx = (rlex){text.ptr, text.len, 0};
	p->fail = fail;
	p->cur = rlex_next(&p->lx);
}

void rp_advance(rparse *p)
{
	p->cur = rlex_next(&p->lx);
}

rtok rp_peek(const rparse *p)
{
	rlex copy = p->lx;
	return rlex_next(&copy);
}

perch_err rp_fail(rparse *p, perch_err code, size_t offset, const char *fmt, ...)
{
	rfail *f = p->fail;
	if (f->code != PERCH_OK)
		return f->code;
	if (code == PERCH_OK)
		code = PERCH_EINTERNAL; /* an error is never OK */
	f->code = code;
	f->offset = offset;
	f->has_column = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->text, sizeof f->text, fmt, ap);
	va_end(ap);
	return code;
}

unsigned route_column(perch_slice text, size_t offset)
{
	unsigned col = 1;
	if (offset > text.len)
		offset = text.len;
	for (size_t i = 0; i < offset; i++)
		if (((unsigned char)text.ptr[i] & 0xC0) != 0x80)
			col++;
	return col;
}

void route_fail_fill(perch_route_error *why, perch_slice text, const rfail *f)
{
	why->route[0] = '\0';
	why->column = f->has_column ? route_column(text, f->offset) : 0;
	if (f->has_column)
		snprintf(why->text, sizeof why->text, "column %u: %s", why->column, f->text);
	else
		snprintf(why->text, sizeof why->text, "%s", f->text);
}

/* --- strings -------------------------------------------------------------- */

static unsigned hex4(const char *s)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)s[i];
		unsigned d = is_digit(c) ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
		v = v * 16 + d;
	}
	return v;
}

/* Appends code point cp as UTF-8 to out at *k (cap bytes); false when full. */
static bool put_utf8(char *out, size_t cap, size_t *k, unsigned cp)
{
	char b[4];
	size_t n;
	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xC0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xE0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (char)(0xF0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	if (cap - *k < n)
		return false;
	memcpy(out + *k, b, n);
	*k += n;
	return true;
}

size_t route_unescape(const char *s, size_t n, char *out, size_t cap)
{
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		if (s[i] != '\\') {
			if (k >= cap)
				return (size_t)-1;
			out[k++] = s[i++];
			continue;
		}
		if (i + 1 < n && s[i + 1] != 'u') {
			if (k >= cap)
				return (size_t)-1;
			out[k++] = s[i + 1];
			i += 2;
			continue;
		}
		if (n - i < 6) /* the lexer lets no such string through */
			return (size_t)-1;
		unsigned cp = hex4(s + i + 2);
		i += 6;
		if (cp >= 0xD800 && cp <= 0xDBFF && n - i >= 6 && s[i] == '\\' && s[i + 1] == 'u') {
			unsigned lo = hex4(s + i + 2);
			if (lo >= 0xDC00 && lo <= 0xDFFF) {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 6;
			}
		}
		if (cp >= 0xD800 && cp <= 0xDFFF)
			cp = 0xFFFD; /* a lone surrogate */
		if (!put_utf8(out, cap, &k, cp))
			return (size_t)-1;
	}
	return k;
}

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

bool route_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return true;
}

bool route_ieq_cstr(const char *a, size_t alen, const char *b)
{
	return route_ieq(a, alen, b, strlen(b));
}

bool route_check_text(perch_slice text, size_t *bad, const char **why)
{
	const unsigned char *s = (const unsigned char *)text.ptr;
	for (size_t i = 0; i < text.len;) {
		unsigned char c = s[i];
		if (c < 0x80) {
			if ((c < 0x20 && !is_ws(c)) || c == 0x7f) {
				*bad = i;
				*why = "a control character";
				return false;
			}
			i++;
			continue;
		}
		size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
		if (len > text.len - i || perch_utf8_check(s + i, len) != PERCH_UTF8_OK) {
			*bad = i;
			*why = "not valid UTF-8";
			return false;
		}
		i += len;
	}
	return true;
}
