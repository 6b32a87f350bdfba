/*
 * route.c — route statements: [SELECT *] FROM source [WHERE cond] INTO sink.
 *
 * The source is kept as written and as the prefix message sources must start
 * with (case-insensitively, as IoT Edge matches them): trailing `*` and `/`
 * are dropped and one `/` added, so "/messages/\*" takes "/messages/..." and
 * "/messages/modules/m/outputs/o" takes exactly output o of module m. The
 * sink is $upstream or BrokeredEndpoint("/modules/{m}/inputs/{i}").
 */
#include <stdio.h>
#include <string.h>

#include "perch/alloc.h"
#include "route_int.h"

static perch_err expect_msg(rparse *p, const char *what)
{
	char d[40];
	if (p->cur.type == T_EOF) {
		snprintf(d, sizeof d, "the end");
	} else {
		int n = p->cur.len > 24 ? 24 : (int)p->cur.len;
		snprintf(d, sizeof d, "'%.*s%s'", n, p->text.ptr + p->cur.start,
		         p->cur.len > 24 ? "..." : "");
	}
	return RP_ERROR(p, PERCH_EINVAL, p->cur.start, "expected %s, found %s", what, d);
}

/* Errors that string tokens make wherever they are. */
static perch_err string_error(rparse *p)
{
	rtok t = p->cur;
	if (t.type == T_UNTERMINATED)
		return RP_ERROR(p, PERCH_EINVAL, t.start, "unterminated string");
	if (t.type == T_BADESC)
		return RP_ERROR(p, PERCH_EINVAL, t.start + t.len,
		                "unknown escape in a string (use \\\", \\', \\\\ or \\uXXXX)");
	return PERCH_OK;
}

/* The module and input of "/modules/{m}/inputs/{i}" (white space and one
 * leading and trailing slash tolerated, as IoT Edge does). */
static perch_err parse_endpoint(rparse *p, rtok t, perch_route *r)
{
	char buf[PERCH_ROUTE_MAX_STRING];
	size_t n = route_unescape(p->text.ptr + t.start + 1, t.len - 2, buf, sizeof buf);
	if (n == (size_t)-1)
		return RP_ERROR(p, PERCH_ETOOBIG, t.start, "endpoint longer than %d bytes",
		                PERCH_ROUTE_MAX_STRING);
	size_t a = 0;
	while (a < n && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r' || buf[a] == '\n'))
		a++;
	while (n > a && (buf[n - 1] == ' ' || buf[n - 1] == '\t' || buf[n - 1] == '\r' ||
	                 buf[n - 1] == '\n'))
		n--;
	if (a < n && buf[a] == '/')
		a++;
	if (n > a && buf[n - 1] == '/')
		n--;
	perch_slice part[4];
	size_t parts = 0, s = a;
	for (size_t i = a; i <= n; i++) {
		if (i < n && buf[i] != '/')
			continue;
		if (parts == 4) {
			parts++;
			break;
		}
		part[parts++] = (perch_slice){buf + s, i - s};
		s = i + 1;
	}
	if (parts != 4 || !route_ieq_cstr(part[0].ptr, part[0].len, "modules") ||
	    !route_ieq_cstr(part[2].ptr, part[2].len, "inputs") || part[1].len == 0 ||
	    part[3].len == 0)
		return RP_ERROR(p, PERCH_EINVAL, t.start,
		                "expected BrokeredEndpoint(\"/modules/{module}/inputs/{input}\")");
	for (int k = 1; k <= 3; k += 2) {
		if (part[k].len > PERCH_ROUTE_MAX_ID)
			return RP_ERROR(p, PERCH_ETOOBIG, t.start, "%s longer than %d bytes",
			                k == 1 ? "module id" : "input name", PERCH_ROUTE_MAX_ID);
		for (size_t i = 0; i < part[k].len; i++) {
			unsigned char c = (unsigned char)part[k].ptr[i];
			if (c < 0x20 || c == '+' || c == '#')
				return RP_ERROR(p, PERCH_EINVAL, t.start,
				                "%s holds a character MQTT forbids ('+', '#' or a "
				                "control character)",
				                k == 1 ? "module id" : "input name");
		}
	}
	/* One block: "module\0input\0". */
	char *blk = perch_malloc(part[1].len + part[3].len + 2);
	if (blk == NULL)
		return RP_ERROR(p, PERCH_ENOMEM, t.start, "out of memory");
	memcpy(blk, part[1].ptr, part[1].len);
	blk[part[1].len] = '\0';
	memcpy(blk + part[1].len + 1, part[3].ptr, part[3].len);
	blk[part[1].len + 1 + part[3].len] = '\0';
	r->sink.kind = PERCH_ROUTE_SINK_MODULE;
	r->sink.module = blk;
	r->sink.input = blk + part[1].len + 1;
	return PERCH_OK;
}

static perch_err parse_sink(rparse *p, perch_route *r)
{
	rtok t = p->cur;
	const char *s = p->text.ptr + t.start;
	if (t.type == T_SYSPROP) {
		if (!route_ieq_cstr(s, t.len, "$upstream"))
			return RP_ERROR(p, PERCH_EINVAL, t.start,
			                "unknown sink %.*s (Perch knows $upstream and "
			                "BrokeredEndpoint(\"/modules/{m}/inputs/{i}\"))",
			                (int)(t.len > 40 ? 40 : t.len), s);
		r->sink.kind = PERCH_ROUTE_SINK_UPSTREAM;
		rp_advance(p);
		return PERCH_OK;
	}
	if (t.type != T_ID)
		return expect_msg(p, "a sink ($upstream or BrokeredEndpoint(...))");
	rp_advance(p);
	if (p->cur.type != T_LPAREN)
		return t.len == 8 && route_ieq(s, 8, "upstream", 8)
		               ? RP_ERROR(p, PERCH_EINVAL, t.start, "the sink is written $upstream")
		               : expect_msg(p, "'(' after the sink function");
	if (!route_ieq_cstr(s, t.len, "BrokeredEndpoint"))
		return RP_ERROR(p, PERCH_EINVAL, t.start,
		                "unknown sink function %.*s (Perch knows BrokeredEndpoint)",
		                (int)(t.len > 40 ? 40 : t.len), s);
	rp_advance(p);
	perch_err err = string_error(p);
	if (err != PERCH_OK)
		return err;
	if (p->cur.type != T_STRING)
		return expect_msg(p, "a string such as \"/modules/{module}/inputs/{input}\"");
	if ((err = parse_endpoint(p, p->cur, r)) != PERCH_OK)
		return err;
	rp_advance(p);
	if (p->cur.type != T_RPAREN)
		return expect_msg(p, "')'");
	rp_advance(p);
	return PERCH_OK;
}

/* The source: ('/' ( '*' | name ))+, kept without the spaces between tokens. */
static perch_err parse_source(rparse *p, perch_route *r)
{
	if (p->cur.type != T_SLASH)
		return expect_msg(p, "a source such as /messages/*");
	size_t cap = p->text.len + 2, n = 0;
	char *src = perch_malloc(cap);
	if (src == NULL)
		return RP_ERROR(p, PERCH_ENOMEM, p->cur.start, "out of memory");
	while (p->cur.type == T_SLASH) {
		src[n++] = '/';
		rp_advance(p);
		if (p->cur.type != T_STAR && p->cur.type != T_ID) {
			perch_free(src);
			return expect_msg(p, "a name or '*' after '/'");
		}
		memcpy(src + n, p->text.ptr + p->cur.start, p->cur.len);
		n += p->cur.len;
		rp_advance(p);
	}
	src[n] = '\0';
	r->source = src;

	/* The prefix, as IoT Edge derives it: trailing '*'s go, then (unless
	 * only "/" is left) trailing '/'s; then trailing '/'s again and one '/'. */
	char *pre = perch_malloc(n + 2);
	if (pre == NULL)
		return RP_ERROR(p, PERCH_ENOMEM, p->cur.start, "out of memory");
	memcpy(pre, src, n);
	size_t k = n;
	while (k > 0 && pre[k - 1] == '*')
		k--;
	if (k > 1)
		while (k > 0 && pre[k - 1] == '/')
			k--;
	while (k > 0 && pre[k - 1] == '/')
		k--;
	pre[k++] = '/';
	pre[k] = '\0';
	r->prefix = pre;
	r->prefix_len = k;
	return PERCH_OK;
}

static perch_err parse_statement(rparse *p, perch_route *r)
{
	perch_err err;
	if (p->cur.type == T_EOF)
		return RP_ERROR(p, PERCH_EINVAL, 0, "empty route");
	if (p->cur.type == T_SELECT) {
		rp_advance(p);
		if (p->cur.type != T_STAR)
			return expect_msg(p, "'*' after SELECT");
		rp_advance(p);
	}
	if (p->cur.type != T_FROM)
		return expect_msg(p, "FROM");
	rp_advance(p);
	if ((err = parse_source(p, r)) != PERCH_OK)
		return err;
	if (p->cur.type == T_WHERE) {
		rp_advance(p);
		if (p->cur.type == T_INTO || p->cur.type == T_EOF)
			return expect_msg(p, "a condition after WHERE");
		if ((err = route_cond_compile(p, &r->cond)) != PERCH_OK)
			return err;
		if ((err = string_error(p)) != PERCH_OK)
			return err;
		if (p->cur.type == T_UNKNOWN)
			return RP_ERROR(p, PERCH_EINVAL, p->cur.start, "unexpected character '%c'",
			                p->text.ptr[p->cur.start]);
		if (p->cur.type == T_RPAREN)
			return RP_ERROR(p, PERCH_EINVAL, p->cur.start, "unmatched ')'");
		if (p->cur.type != T_INTO)
			return expect_msg(p, "INTO");
	} else if (p->cur.type != T_INTO) {
		if ((err = string_error(p)) != PERCH_OK)
			return err;
		return expect_msg(p, "WHERE or INTO");
	}
	rp_advance(p);
	if ((err = string_error(p)) != PERCH_OK)
		return err;
	if ((err = parse_sink(p, r)) != PERCH_OK)
		return err;
	if (p->cur.type != T_EOF)
		return expect_msg(p, "the end of the route");
	return PERCH_OK;
}

perch_err perch_route_parse(perch_slice text, perch_route *out, perch_route_error *why)
{
	rfail f = {0};
	perch_err err;
	memset(out, 0, sizeof *out);
	if (text.ptr == NULL && text.len > 0)
		text.len = 0;
	if (text.len > PERCH_ROUTE_MAX_TEXT) {
		f.code = err = PERCH_ETOOBIG;
		snprintf(f.text, sizeof f.text, "route longer than %d bytes", PERCH_ROUTE_MAX_TEXT);
		goto fail;
	}
	size_t bad;
	const char *what;
	if (!route_check_text(text, &bad, &what)) {
		f.code = err = PERCH_EINVAL;
		f.offset = bad;
		f.has_column = true;
		snprintf(f.text, sizeof f.text, "%s", what);
		goto fail;
	}
	rparse p;
	rp_init(&p, text, &f);
	err = parse_statement(&p, out);
	if (err == PERCH_OK && (out->text = perch_memdup0(text.ptr, text.len)) == NULL) {
		f.code = err = PERCH_ENOMEM;
		snprintf(f.text, sizeof f.text, "out of memory");
	}
	if (err == PERCH_OK)
		return PERCH_OK;
fail:
	perch_route_clear(out);
	if (why != NULL)
		route_fail_fill(why, text, &f);
	return err;
}

void perch_route_clear(perch_route *r)
{
	if (r == NULL)
		return;
	perch_free(r->text);
	perch_free(r->source);
	perch_free(r->prefix);
	perch_free((char *)r->sink.module); /* the block holding module and input */
	route_cond_free(r->cond);
	memset(r, 0, sizeof *r);
}

/* --- matching ------------------------------------------------------------- */

void route_source_path(const perch_route_msg *m, srcpath *sp)
{
	sp->n = 0;
	if (m->origin == PERCH_ROUTE_TWIN_CHANGE) {
		sp->piece[sp->n++] = PERCH_SLICE_LIT("/twinChangeNotifications/");
		return;
	}
	sp->piece[sp->n++] = PERCH_SLICE_LIT("/messages/");
	if (m->module.len == 0)
		return;
	sp->piece[sp->n++] = PERCH_SLICE_LIT("modules/");
	sp->piece[sp->n++] = m->module;
	if (m->output.len == 0) {
		sp->piece[sp->n++] = PERCH_SLICE_LIT("/");
		return;
	}
	sp->piece[sp->n++] = PERCH_SLICE_LIT("/outputs/");
	sp->piece[sp->n++] = m->output;
	sp->piece[sp->n++] = PERCH_SLICE_LIT("/");
}

static unsigned char fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

bool route_prefix_matches(const perch_route *r, const srcpath *sp)
{
	if (r->prefix == NULL)
		return false;
	size_t k = 0;
	for (size_t i = 0; i < sp->n && k < r->prefix_len; i++) {
		perch_slice s = sp->piece[i];
		for (size_t j = 0; j < s.len && k < r->prefix_len; j++, k++)
			if (fold((unsigned char)s.ptr[j]) != fold((unsigned char)r->prefix[k]))
				return false;
	}
	return k == r->prefix_len;
}

bool perch_route_source_matches(const perch_route *r, const perch_route_msg *msg)
{
	srcpath sp;
	route_source_path(msg, &sp);
	return route_prefix_matches(r, &sp);
}

perch_route_truth perch_route_eval(const perch_route *r, const perch_route_msg *msg)
{
	if (r->cond == NULL)
		return PERCH_ROUTE_TRUE;
	rctx c;
	rctx_init(&c, msg);
	perch_route_truth t = route_cond_eval(r->cond, &c);
	rctx_fini(&c);
	return t;
}

bool perch_route_matches(const perch_route *r, const perch_route_msg *msg)
{
	return perch_route_source_matches(r, msg) && perch_route_eval(r, msg) == PERCH_ROUTE_TRUE;
}

const char *perch_route_truth_str(perch_route_truth t)
{
	switch (t) {
	case PERCH_ROUTE_FALSE: return "false";
	case PERCH_ROUTE_TRUE: return "true";
	case PERCH_ROUTE_UNDEFINED: return "undefined";
	default: return "?";
	}
}

const char *perch_route_body_str(perch_route_body b)
{
	switch (b) {
	case PERCH_ROUTE_BODY_UNUSED: return "not needed";
	case PERCH_ROUTE_BODY_JSON: return "JSON";
	case PERCH_ROUTE_BODY_NOT_JSON_TYPE: return "not marked application/json, utf-8";
	case PERCH_ROUTE_BODY_INVALID: return "not a JSON object";
	case PERCH_ROUTE_BODY_TOO_BIG: return "too large or too deep";
	case PERCH_ROUTE_BODY_NO_MEMORY: return "out of memory";
	default: return "?";
	}
}
