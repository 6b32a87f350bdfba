/*
 * http_wire.c — the pure half of an HTTP/1.1 client (perch-agent's for the
 * Docker socket, the `perch` command line's for perch-hub): the request
 * writer, and the streaming parser of an answer, fed bytes split anywhere
 * (one at a time, or all at once). A state machine over whole lines (status,
 * headers, chunk sizes, trailers), each gathered in a bounded buffer, and
 * bodies passed through to the sink without copying: by Content-Length, by
 * chunks, or until the peer closes. Interim 1xx answers are skipped. The
 * engine on the other end is semi-trusted: anything malformed or over a
 * limit ends in PERCH_EPROTO with a reason, and the parser stays in ERROR.
 * No I/O here; agent/src/http_test.c and tests/fuzz/fuzz_http_response.c
 * cover it.
 */
#include "perch/http_wire.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "perch/alloc.h"

#define LENGTH_DIGITS_MAX 18           /* a Content-Length below 10^18: no overflow */
#define CHUNK_SIZE_MAX    (1ull << 60) /* a chunk size below 16^15, leading zeros aside */
#define METHOD_MAX        32

void perch_http_parser_init(perch_http_parser *p)
{
	/* Everything but the line buffer, which is scratch. */
	p->state = PERCH_HTTP_S_STATUS;
	p->status = 0;
	p->minor = 0;
	p->keep_alive = false;
	p->chunked = false;
	p->has_length = false;
	p->conn_close = false;
	p->conn_keep = false;
	p->te_other = false;
	p->length = 0;
	p->left = 0;
	p->body = 0;
	p->fields = 0;
	p->head_bytes = 0;
	p->line_len = 0;
	p->why = NULL;
}

/* fail puts p in ERROR with why. */
static perch_err fail(perch_http_parser *p, const char *why)
{
	p->state = PERCH_HTTP_S_ERROR;
	p->why = why;
	return PERCH_EPROTO;
}

/* is_tchar: a character of an HTTP token (RFC 9110 5.6.2). */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* is_ows: optional white space. */
static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* token_is: do the n bytes at s equal the token t, ignoring case? */
static bool token_is(const char *s, size_t n, const char *t)
{
	return strlen(t) == n && strncasecmp(s, t, n) == 0;
}

/* ---- header lines ---------------------------------------------------------------- */

/* parse_length reads a Content-Length value. */
static perch_err parse_length(perch_http_parser *p, const char *v, size_t n)
{
	if (n == 0 || n > LENGTH_DIGITS_MAX)
		return fail(p, "bad Content-Length");
	unsigned long long len = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return fail(p, "bad Content-Length");
		len = len * 10 + (unsigned)(v[i] - '0');
	}
	if (p->has_length && p->length != len)
		return fail(p, "conflicting Content-Length headers");
	p->has_length = true;
	p->length = len;
	return PERCH_OK;
}

/* next_token finds the next non-empty element of a comma-separated list
 * (white space around it trimmed) at or after *pos; false when none is left. */
static bool next_token(const char *v, size_t n, size_t *pos, const char **t, size_t *tn)
{
	while (*pos < n) {
		size_t s = *pos;
		size_t i = s;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		*pos = i < n ? i + 1 : n;
		while (s < e && is_ows(v[s]))
			s++;
		while (e > s && is_ows(v[e - 1]))
			e--;
		if (e > s) {
			*t = v + s;
			*tn = e - s;
			return true;
		}
	}
	return false;
}

/* field_line checks one header or trailer line ("Name: value") and, for a
 * header (interpret true), takes what framing needs from it. */
static perch_err field_line(perch_http_parser *p, bool interpret)
{
	const char *l = p->line;
	size_t n = p->line_len;
	if (++p->fields > PERCH_HTTP_FIELDS_MAX)
		return fail(p, "too many header lines");
	if (is_ows(l[0]))
		return fail(p, "folded header line");
	size_t c = 0;
	while (c < n && is_tchar((unsigned char)l[c]))
		c++;
	if (c == 0 || c == n || l[c] != ':')
		return fail(p, "malformed header line");
	for (size_t i = c + 1; i < n; i++) {
		unsigned char ch = (unsigned char)l[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return fail(p, "control character in a header value");
	}
	if (!interpret)
		return PERCH_OK;
	size_t vs = c + 1, ve = n;
	while (vs < ve && is_ows(l[vs]))
		vs++;
	while (ve > vs && is_ows(l[ve - 1]))
		ve--;
	const char *v = l + vs;
	size_t vn = ve - vs;
	if (token_is(l, c, "Content-Length"))
		return parse_length(p, v, vn);
	size_t pos = 0, tn = 0;
	const char *t = NULL;
	if (token_is(l, c, "Transfer-Encoding")) {
		/* Only the last coding of the last such line decides; "some coding"
		 * (te_other) is cleared in head_done when that one is chunked. */
		p->te_other = true;
		bool any = false;
		while (next_token(v, vn, &pos, &t, &tn))
			any = true;
		p->chunked = any && token_is(t, tn, "chunked");
	} else if (token_is(l, c, "Connection")) {
		while (next_token(v, vn, &pos, &t, &tn)) {
			if (token_is(t, tn, "close"))
				p->conn_close = true;
			else if (token_is(t, tn, "keep-alive"))
				p->conn_keep = true;
		}
	}
	return PERCH_OK;
}

/* status_line reads "HTTP/1.x SSS reason". */
static perch_err status_line(perch_http_parser *p)
{
	const char *l = p->line;
	size_t n = p->line_len;
	if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || l[7] < '0' || l[7] > '9' || l[8] != ' ')
		return fail(p, "malformed status line");
	int code = 0;
	for (size_t i = 9; i < 12; i++) {
		if (l[i] < '0' || l[i] > '9')
			return fail(p, "malformed status line");
		code = code * 10 + (l[i] - '0');
	}
	if (code < 100 || code > 599 || (n > 12 && l[12] != ' '))
		return fail(p, "malformed status line");
	for (size_t i = 13; i < n; i++) {
		unsigned char ch = (unsigned char)l[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return fail(p, "control character in the status line");
	}
	if (code == 101)
		return fail(p, "unexpected 101 Switching Protocols");
	p->minor = l[7] - '0';
	p->status = code;
	p->state = PERCH_HTTP_S_HEADER;
	return PERCH_OK;
}

/* head_done decides how the body is framed once the header block ended. */
static perch_err head_done(perch_http_parser *p, const perch_http_sink *sink)
{
	if (p->status < 200) {
		/* An interim answer (100 Continue, 102, 103): the real one follows. */
		p->status = 0;
		p->has_length = p->chunked = p->te_other = p->conn_close = p->conn_keep = false;
		p->length = 0;
		p->state = PERCH_HTTP_S_STATUS;
		return PERCH_OK;
	}
	if (p->chunked)
		p->te_other = false;
	p->keep_alive = !p->conn_close && (p->minor >= 1 || p->conn_keep);
	if (p->status == 204 || p->status == 304) {
		p->state = PERCH_HTTP_S_DONE;
	} else if (p->chunked) {
		if (p->has_length)
			p->keep_alive = false; /* both framings given: trust neither afterwards */
		p->state = PERCH_HTTP_S_CHUNK_SIZE;
	} else if (p->te_other || !p->has_length) {
		p->keep_alive = false;
		p->state = PERCH_HTTP_S_CLOSE;
	} else if (p->length == 0) {
		p->state = PERCH_HTTP_S_DONE;
	} else {
		p->left = p->length;
		p->state = PERCH_HTTP_S_BODY_LEN;
	}
	if (sink != NULL && sink->head != NULL)
		return sink->head(sink->ud, p);
	return PERCH_OK;
}

/* chunk_size reads "HEX[ ][;ext...]". */
static perch_err chunk_size(perch_http_parser *p)
{
	const char *l = p->line;
	size_t n = p->line_len, i = 0;
	unsigned long long size = 0;
	for (; i < n; i++) {
		char c = l[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			break;
		if (size >= CHUNK_SIZE_MAX / 16)
			return fail(p, "chunk size too large");
		size = size * 16 + d;
	}
	if (i == 0)
		return fail(p, "bad chunk size");
	while (i < n && is_ows(l[i]))
		i++;
	if (i < n && l[i] != ';')
		return fail(p, "bad chunk size");
	if (size == 0) {
		p->state = PERCH_HTTP_S_TRAILER;
	} else {
		p->left = size;
		p->state = PERCH_HTTP_S_CHUNK_DATA;
	}
	return PERCH_OK;
}

/* on_line handles the complete line in p->line. */
static perch_err on_line(perch_http_parser *p, const perch_http_sink *sink)
{
	switch (p->state) {
	case PERCH_HTTP_S_STATUS: return status_line(p);
	case PERCH_HTTP_S_HEADER:
		return p->line_len == 0 ? head_done(p, sink) : field_line(p, true);
	case PERCH_HTTP_S_CHUNK_SIZE: return chunk_size(p);
	case PERCH_HTTP_S_CHUNK_END:
		if (p->line_len != 0)
			return fail(p, "no line end after chunk data");
		p->state = PERCH_HTTP_S_CHUNK_SIZE;
		return PERCH_OK;
	case PERCH_HTTP_S_TRAILER:
		if (p->line_len == 0) {
			p->state = PERCH_HTTP_S_DONE;
			return PERCH_OK;
		}
		return field_line(p, false);
	default: return fail(p, "internal: line in a body state");
	}
}

/* line_too_long names the line that passed PERCH_HTTP_LINE_MAX. */
static const char *line_too_long(perch_http_state st)
{
	switch (st) {
	case PERCH_HTTP_S_STATUS: return "status line too long";
	case PERCH_HTTP_S_CHUNK_SIZE:
	case PERCH_HTTP_S_CHUNK_END: return "chunk size line too long";
	default: return "header line too long";
	}
}

/* deliver hands n body bytes to the sink. */
static perch_err deliver(perch_http_parser *p, const perch_http_sink *sink, const char *data,
                         size_t n)
{
	p->body += n;
	if (n == 0 || sink == NULL || sink->body == NULL)
		return PERCH_OK;
	return sink->body(sink->ud, data, n);
}

perch_err perch_http_parse(perch_http_parser *p, const char *data, size_t n, size_t *used,
                           const perch_http_sink *sink)
{
	size_t i = 0;
	perch_err err = PERCH_OK;
	if (p->state == PERCH_HTTP_S_ERROR)
		err = PERCH_EPROTO;
	while (err == PERCH_OK && i < n && p->state != PERCH_HTTP_S_DONE) {
		perch_http_state st = p->state;
		if (st == PERCH_HTTP_S_BODY_LEN || st == PERCH_HTTP_S_CHUNK_DATA ||
		    st == PERCH_HTTP_S_CLOSE) {
			size_t k = n - i;
			if (st != PERCH_HTTP_S_CLOSE && k > p->left)
				k = (size_t)p->left;
			if (st != PERCH_HTTP_S_CLOSE) {
				p->left -= k;
				if (p->left == 0)
					p->state = st == PERCH_HTTP_S_BODY_LEN
					                   ? PERCH_HTTP_S_DONE
					                   : PERCH_HTTP_S_CHUNK_END;
			}
			err = deliver(p, sink, data + i, k);
			i += k;
			continue;
		}
		/* A line: gather up to its '\n'. */
		const char *nl = memchr(data + i, '\n', n - i);
		size_t k = nl != NULL ? (size_t)(nl - (data + i)) : n - i;
		bool head = st == PERCH_HTTP_S_STATUS || st == PERCH_HTTP_S_HEADER ||
		            st == PERCH_HTTP_S_TRAILER;
		if (p->line_len + k >= PERCH_HTTP_LINE_MAX) {
			err = fail(p, line_too_long(st));
			break;
		}
		if (head && p->head_bytes + k + 1 > PERCH_HTTP_HEAD_MAX) {
			err = fail(p, "headers too large");
			break;
		}
		memcpy(p->line + p->line_len, data + i, k);
		p->line_len += k;
		i += k;
		if (head)
			p->head_bytes += k;
		if (nl == NULL)
			break;
		i++; /* the '\n' */
		if (head)
			p->head_bytes++;
		if (p->line_len > 0 && p->line[p->line_len - 1] == '\r')
			p->line_len--;
		p->line[p->line_len] = '\0';
		err = on_line(p, sink);
		p->line_len = 0;
	}
	if (used != NULL)
		*used = i;
	return err;
}

perch_err perch_http_parse_eof(perch_http_parser *p)
{
	switch (p->state) {
	case PERCH_HTTP_S_DONE: return PERCH_OK;
	case PERCH_HTTP_S_CLOSE:
		p->state = PERCH_HTTP_S_DONE;
		p->keep_alive = false;
		return PERCH_OK;
	case PERCH_HTTP_S_ERROR: return PERCH_EPROTO;
	case PERCH_HTTP_S_STATUS:
		p->why = p->head_bytes == 0 ? "before answering" : "in the middle of the headers";
		break;
	case PERCH_HTTP_S_HEADER: p->why = "in the middle of the headers"; break;
	case PERCH_HTTP_S_BODY_LEN: p->why = "in the middle of the body"; break;
	default: p->why = "before the last chunk"; break;
	}
	return PERCH_ECLOSED;
}

/* ---- the request writer ------------------------------------------------------------- */

/* plain_text: only visible ASCII (no space, no control, no DEL), non-empty. */
static bool plain_text(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* header_ok: "Name: value" with a token name and no control character. */
static bool header_ok(const char *h)
{
	size_t c = 0;
	while (is_tchar((unsigned char)h[c]))
		c++;
	if (c == 0 || h[c] != ':')
		return false;
	for (const char *s = h + c; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || (unsigned char)*s == 0x7f)
			return false;
	return true;
}

perch_err perch_http_request(const char *method, const char *target, const char *host,
                             const char *const *hdrs, size_t nh, const char *body, size_t body_len,
                             char **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	size_t ml = method != NULL ? strlen(method) : 0;
	if (ml == 0 || ml > METHOD_MAX || target == NULL || *target != '/' || host == NULL)
		return PERCH_EINVAL;
	for (size_t i = 0; i < ml; i++)
		if (!is_tchar((unsigned char)method[i]))
			return PERCH_EINVAL;
	if (!plain_text(target) || !plain_text(host))
		return PERCH_EINVAL;
	size_t tl = strlen(target), need = ml + tl + strlen(host) + 64;
	if (tl >= PERCH_HTTP_LINE_MAX - 16)
		return PERCH_ETOOBIG;
	for (size_t i = 0; i < nh; i++) {
		size_t hl = strlen(hdrs[i]);
		if (hl >= PERCH_HTTP_LINE_MAX)
			return PERCH_ETOOBIG;
		if (!header_ok(hdrs[i]))
			return PERCH_EINVAL;
		need += hl + 2;
	}
	bool with_length =
	        body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
	if (body == NULL)
		body_len = 0;
	need += 64 + body_len; /* "Content-Length: N\r\n", the blank line, the NUL */
	char *buf = perch_malloc(need);
	if (buf == NULL)
		return PERCH_ENOMEM;
	int w = snprintf(buf, need, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host);
	size_t o = (size_t)w;
	for (size_t i = 0; i < nh; i++)
		o += (size_t)snprintf(buf + o, need - o, "%s\r\n", hdrs[i]);
	if (with_length)
		o += (size_t)snprintf(buf + o, need - o, "Content-Length: %zu\r\n", body_len);
	o += (size_t)snprintf(buf + o, need - o, "\r\n");
	if (body_len > 0)
		memcpy(buf + o, body, body_len);
	o += body_len;
	buf[o] = '\0';
	*out = buf;
	*out_len = o;
	return PERCH_OK;
}

void perch_http_request_free(char *req, size_t len)
{
	if (req == NULL)
		return;
	/* volatile: the wipe of a buffer about to be freed must not be elided. */
	volatile char *v = req;
	for (size_t i = 0; i < len; i++)
		v[i] = 0;
	perch_free(req);
}
