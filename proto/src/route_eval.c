/*
 * route_eval.c — evaluating compiled conditions against one message, and the
 * builtin functions.
 *
 * Values are undefined, null, booleans, numbers (doubles), strings, and the
 * objects and arrays a $body path can land on. The rules, which
 * docs/routes.md states for users:
 *   - anything involving undefined is undefined, except IS_* functions, ??,
 *     and AND/OR where the other side decides (false AND x is false, true OR x
 *     is true): three-valued logic;
 *   - comparing two values of different types is undefined; null = null is
 *     true; strings compare by bytes (code points), booleans false < true;
 *   - arithmetic takes numbers only; a result that is not finite (x / 0,
 *     SQRT(-1)) is undefined;
 *   - objects and arrays are only seen by IS_DEFINED, IS_OBJECT, IS_ARRAY,
 *     IS_PRIMITIVE and ??; to everything else they are undefined.
 * Numbers are read with strtod, which assumes the C locale's decimal point
 * (Perch never calls setlocale).
 * Strings made while evaluating (LOWER, CONCAT, decoded body strings) come
 * from a per-message scratch area bounded by PERCH_ROUTE_MAX_SCRATCH; when it
 * is exhausted the value is undefined.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "perch/alloc.h"
#include "route_int.h"

typedef enum vtype { V_UNDEF = 0, V_NULL, V_BOOL, V_NUM, V_STR, V_OBJ, V_ARR } vtype;

typedef struct rval {
	vtype t;
	bool b;
	double n;
	const char *s;
	size_t len;
} rval;

static const rval UNDEF = {V_UNDEF, false, 0, NULL, 0};

static rval vbool(bool b)
{
	return (rval){V_BOOL, b, 0, NULL, 0};
}

static rval vnum(double n)
{
	if (!isfinite(n))
		return UNDEF;
	return (rval){V_NUM, false, n, NULL, 0};
}

static rval vstr(const char *s, size_t len)
{
	return (rval){V_STR, false, 0, s, len};
}

void rctx_init(rctx *c, const perch_route_msg *msg)
{
	c->msg = msg;
	c->body.state = PERCH_ROUTE_BODY_UNUSED;
	c->body.toks = NULL;
	c->body.n = c->body.cap = 0;
	c->body_tried = false;
	c->scratch_used = 0;
	c->small_used = 0;
	c->n_blocks = 0;
}

void rctx_fini(rctx *c)
{
	for (size_t i = 0; i < c->n_blocks; i++)
		perch_free(c->blocks[i]);
	c->n_blocks = 0;
	route_body_fini(&c->body);
}

/* n bytes of scratch for this message, or NULL when the budget is spent. */
static char *scratch(rctx *c, size_t n)
{
	if (n == 0)
		n = 1;
	if (n > PERCH_ROUTE_MAX_SCRATCH - c->scratch_used)
		return NULL;
	char *p;
	if (n <= RSCRATCH_SMALL - c->small_used) {
		p = c->small + c->small_used;
		c->small_used += n;
	} else {
		if (c->n_blocks == RSCRATCH_BLOCKS || (p = perch_malloc(n)) == NULL)
			return NULL;
		c->blocks[c->n_blocks++] = p;
	}
	c->scratch_used += n;
	return p;
}

/* --- properties ----------------------------------------------------------- */

/* An application property by name, any case (keys starting `$.` are system
 * properties, not application ones). */
static rval app_prop(const rctx *c, const char *name, size_t len)
{
	const perch_props *props = c->msg->props;
	if (props == NULL)
		return UNDEF;
	for (size_t i = 0; i < props->count; i++) {
		perch_slice k, v;
		perch_props_at(props, i, &k, &v);
		if (k.len >= 2 && k.ptr[0] == '$' && k.ptr[1] == '.')
			continue;
		if (route_ieq(k.ptr, k.len, name, len))
			return vstr(v.ptr, v.len);
	}
	return UNDEF;
}

/* A `$.` key of the bag. */
static rval wire_prop(const rctx *c, const char *key)
{
	perch_slice v;
	if (c->msg->props != NULL && perch_props_get(c->msg->props, perch_slice_cstr(key), &v))
		return vstr(v.ptr, v.len);
	return UNDEF;
}

static rval sys_prop(const rctx *c, rsys sys)
{
	const perch_route_msg *m = c->msg;
	switch (sys) {
	case SYS_MESSAGE_ID: return wire_prop(c, "$.mid");
	case SYS_CORRELATION_ID: return wire_prop(c, "$.cid");
	case SYS_USER_ID: return wire_prop(c, "$.uid");
	case SYS_TO: return wire_prop(c, "$.to");
	case SYS_CONTENT_TYPE: return wire_prop(c, "$.ct");
	case SYS_CONTENT_ENCODING: return wire_prop(c, "$.ce");
	case SYS_EXPIRY: return wire_prop(c, "$.exp");
	case SYS_CONN_DEVICE_ID:
		return m->device.len > 0 ? vstr(m->device.ptr, m->device.len)
		                         : wire_prop(c, "$.cdid");
	case SYS_CONN_MODULE_ID:
		return m->module.len > 0 ? vstr(m->module.ptr, m->module.len)
		                         : wire_prop(c, "$.cmid");
	case SYS_OUTPUT_NAME:
		return m->output.len > 0 ? vstr(m->output.ptr, m->output.len)
		                         : wire_prop(c, "$.on");
	default: return UNDEF;
	}
}

/* --- the body ------------------------------------------------------------- */

/* Whether the body may be read as JSON: a twin change notification always;
 * another message when $.ct is application/json and $.ce utf-8 (any case),
 * as IoT Edge requires. */
static bool body_is_json(const rctx *c)
{
	if (c->msg->origin == PERCH_ROUTE_TWIN_CHANGE)
		return true;
	rval ct = wire_prop(c, "$.ct"), ce = wire_prop(c, "$.ce");
	return ct.t == V_STR && route_ieq_cstr(ct.s, ct.len, "application/json") && ce.t == V_STR &&
	       route_ieq_cstr(ce.s, ce.len, "utf-8");
}

static rval body_value(rctx *c, const struct perch_route_cond *cond, const rnode *n)
{
	if (!c->body_tried) {
		c->body_tried = true;
		if (body_is_json(c))
			route_body_parse(&c->body, c->msg->body);
		else
			c->body.state = PERCH_ROUTE_BODY_NOT_JSON_TYPE;
	}
	long i = route_body_find(&c->body, c->msg->body, cond->steps + n->c, n->d, cond->pool);
	if (i < 0)
		return UNDEF;
	const jtok *t = &c->body.toks[i];
	const char *raw = c->msg->body.ptr + t->start;
	switch (t->type) {
	case J_STR: {
		if (!t->esc)
			return vstr(raw, t->len);
		char *out = scratch(c, t->len);
		if (out == NULL)
			return UNDEF;
		return vstr(out, route_json_unescape(raw, t->len, out));
	}
	case J_NUM: {
		char buf[64];
		char *p = buf;
		if (t->len >= sizeof buf && (p = scratch(c, t->len + 1)) == NULL)
			return UNDEF;
		memcpy(p, raw, t->len);
		p[t->len] = '\0';
		return vnum(strtod(p, NULL));
	}
	case J_TRUE: return vbool(true);
	case J_FALSE: return vbool(false);
	case J_NULL: return (rval){V_NULL, false, 0, NULL, 0};
	case J_OBJ: return (rval){V_OBJ, false, 0, NULL, 0};
	default: return (rval){V_ARR, false, 0, NULL, 0};
	}
}

/* --- operators ------------------------------------------------------------ */

static rval compare(rbin op, rval l, rval r)
{
	int cmp;
	if (l.t == V_NULL && r.t == V_NULL) {
		cmp = 0;
	} else if (l.t != r.t) {
		return UNDEF;
	} else if (l.t == V_NUM) {
		cmp = l.n < r.n ? -1 : l.n > r.n ? 1 : 0;
	} else if (l.t == V_STR) {
		size_t m = l.len < r.len ? l.len : r.len;
		cmp = m > 0 ? memcmp(l.s, r.s, m) : 0;
		if (cmp == 0)
			cmp = l.len < r.len ? -1 : l.len > r.len ? 1 : 0;
	} else if (l.t == V_BOOL) {
		cmp = (int)l.b - (int)r.b;
	} else {
		return UNDEF;
	}
	switch (op) {
	case B_LT: return vbool(cmp < 0);
	case B_LE: return vbool(cmp <= 0);
	case B_GT: return vbool(cmp > 0);
	case B_GE: return vbool(cmp >= 0);
	case B_EQ: return vbool(cmp == 0);
	default: return vbool(cmp != 0);
	}
}

static rval concat(rctx *c, const rval *v, size_t n)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i].t != V_STR)
			return UNDEF;
		total += v[i].len;
	}
	char *out = scratch(c, total);
	if (out == NULL)
		return UNDEF;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i].len > 0)
			memcpy(out + k, v[i].s, v[i].len);
		k += v[i].len;
	}
	return vstr(out, total);
}

/* --- strings by characters ------------------------------------------------ */

static size_t cp_count(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

/* The byte offset of character k (<= the character count). */
static size_t cp_offset(const char *s, size_t len, size_t k)
{
	size_t i = 0;
	while (i < len && k > 0) {
		i++;
		while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
			i++;
		k--;
	}
	return i;
}

/* AS_NUMBER of a string: optional white space, sign, digits with optional
 * thousands commas, fraction and exponent; anything else is undefined. */
static rval as_number(const char *s, size_t len)
{
	char buf[128];
	size_t i = 0, k = 0;
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	while (len > i && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
	                   s[len - 1] == '\r'))
		len--;
	if (len - i >= sizeof buf)
		return UNDEF;
	if (i < len && (s[i] == '+' || s[i] == '-'))
		buf[k++] = s[i++];
	size_t digits = 0;
	while (i < len && ((s[i] >= '0' && s[i] <= '9') || (s[i] == ',' && digits > 0))) {
		if (s[i] != ',') {
			buf[k++] = s[i];
			digits++;
		}
		i++;
	}
	if (i < len && s[i] == '.') {
		buf[k++] = s[i++];
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			buf[k++] = s[i++];
			digits++;
		}
	}
	if (digits == 0)
		return UNDEF;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		buf[k++] = s[i++];
		if (i < len && (s[i] == '+' || s[i] == '-'))
			buf[k++] = s[i++];
		size_t e = 0;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			buf[k++] = s[i++];
			e++;
		}
		if (e == 0)
			return UNDEF;
	}
	if (i != len)
		return UNDEF;
	buf[k] = '\0';
	return vnum(strtod(buf, NULL));
}

static rval map_case(rctx *c, rval v, bool upper)
{
	char *out = scratch(c, v.len);
	if (out == NULL)
		return UNDEF;
	for (size_t i = 0; i < v.len; i++) {
		char ch = v.s[i];
		if (upper && ch >= 'a' && ch <= 'z')
			ch = (char)(ch - 32);
		else if (!upper && ch >= 'A' && ch <= 'Z')
			ch = (char)(ch + 32);
		out[i] = ch;
	}
	return vstr(out, v.len);
}

static rval substring(rval s, rval start, const rval *length)
{
	if (s.t != V_STR || start.t != V_NUM || (length != NULL && length->t != V_NUM))
		return UNDEF;
	double chars = (double)cp_count(s.s, s.len);
	double st = start.n;
	size_t from, to;
	if (length == NULL) {
		if (st < 0 || st > chars)
			return UNDEF;
		from = cp_offset(s.s, s.len, (size_t)st);
		to = s.len;
	} else {
		double ln = length->n;
		if (st < 0 || st >= chars || ln < 0 || ln > chars - st)
			return UNDEF;
		from = cp_offset(s.s, s.len, (size_t)st);
		to = from + cp_offset(s.s + from, s.len - from, (size_t)ln);
	}
	return vstr(s.s + from, to - from);
}

static bool str2(const rval *v)
{
	return v[0].t == V_STR && v[1].t == V_STR;
}

static rval call(rctx *c, rfn fn, const rval *v, size_t n)
{
	switch (fn) {
	case FN_ABS: return v[0].t == V_NUM ? vnum(fabs(v[0].n)) : UNDEF;
	case FN_EXP: return v[0].t == V_NUM ? vnum(exp(v[0].n)) : UNDEF;
	case FN_POWER:
		return v[0].t == V_NUM && v[1].t == V_NUM ? vnum(pow(v[0].n, v[1].n)) : UNDEF;
	case FN_SQUARE: return v[0].t == V_NUM ? vnum(v[0].n * v[0].n) : UNDEF;
	case FN_CEILING: return v[0].t == V_NUM ? vnum(ceil(v[0].n)) : UNDEF;
	case FN_FLOOR: return v[0].t == V_NUM ? vnum(floor(v[0].n)) : UNDEF;
	case FN_SIGN: return v[0].t == V_NUM ? vnum(v[0].n > 0 ? 1 : v[0].n < 0 ? -1 : 0) : UNDEF;
	case FN_SQRT: return v[0].t == V_NUM ? vnum(sqrt(v[0].n)) : UNDEF;
	case FN_AS_NUMBER:
		if (v[0].t == V_NUM)
			return v[0];
		return v[0].t == V_STR ? as_number(v[0].s, v[0].len) : UNDEF;
	case FN_IS_ARRAY: return vbool(v[0].t == V_ARR);
	case FN_IS_BOOL: return vbool(v[0].t == V_BOOL);
	case FN_IS_DEFINED: return vbool(v[0].t != V_UNDEF);
	case FN_IS_NULL: return vbool(v[0].t == V_NULL);
	case FN_IS_NUMBER: return vbool(v[0].t == V_NUM);
	case FN_IS_OBJECT: return vbool(v[0].t == V_OBJ);
	case FN_IS_PRIMITIVE:
		return vbool(v[0].t == V_NULL || v[0].t == V_BOOL || v[0].t == V_NUM ||
		             v[0].t == V_STR);
	case FN_IS_STRING: return vbool(v[0].t == V_STR);
	case FN_CONCAT: return concat(c, v, n);
	case FN_LENGTH: return v[0].t == V_STR ? vnum((double)cp_count(v[0].s, v[0].len)) : UNDEF;
	case FN_LOWER: return v[0].t == V_STR ? map_case(c, v[0], false) : UNDEF;
	case FN_UPPER: return v[0].t == V_STR ? map_case(c, v[0], true) : UNDEF;
	case FN_SUBSTRING: return substring(v[0], v[1], n == 3 ? &v[2] : NULL);
	case FN_INDEX_OF: {
		if (!str2(v))
			return UNDEF;
		if (v[1].len == 0)
			return vnum(0);
		const char *at =
		        v[0].len >= v[1].len ? memmem(v[0].s, v[0].len, v[1].s, v[1].len) : NULL;
		return vnum(at == NULL ? -1 : (double)cp_count(v[0].s, (size_t)(at - v[0].s)));
	}
	case FN_STARTS_WITH:
		return str2(v) ? vbool(v[0].len >= v[1].len &&
		                       (v[1].len == 0 || memcmp(v[0].s, v[1].s, v[1].len) == 0))
		               : UNDEF;
	case FN_ENDS_WITH:
		return str2(v) ? vbool(v[0].len >= v[1].len &&
		                       (v[1].len == 0 || memcmp(v[0].s + v[0].len - v[1].len,
		                                                v[1].s, v[1].len) == 0))
		               : UNDEF;
	case FN_CONTAINS:
		return str2(v) ? vbool(v[1].len == 0 ||
		                       (v[0].len >= v[1].len &&
		                        memmem(v[0].s, v[0].len, v[1].s, v[1].len) != NULL))
		               : UNDEF;
	default: return UNDEF;
	}
}

/* --- the walk ------------------------------------------------------------- */

static rval eval(rctx *c, const struct perch_route_cond *cond, uint32_t i);

/* A call's arguments live in its own frame, so that the frames of other
 * nodes stay small: recursion is PERCH_ROUTE_MAX_DEPTH deep at most. */
__attribute__((noinline)) static rval eval_call(rctx *c, const struct perch_route_cond *cond,
                                                const rnode *n)
{
	rval v[PERCH_ROUTE_MAX_ARGS];
	for (uint32_t k = 0; k < n->b; k++)
		v[k] = eval(c, cond, cond->args[n->a + k]);
	return call(c, (rfn)n->sub, v, n->b);
}

/* Recursion is bounded by PERCH_ROUTE_MAX_DEPTH, the tree's height. */
static rval eval(rctx *c, const struct perch_route_cond *cond, uint32_t i)
{
	const rnode *n = &cond->nodes[i];
	switch ((rnode_op)n->op) {
	case N_NUM: return vnum(n->num);
	case N_STR: return vstr(cond->pool + n->a, n->b);
	case N_TRUE: return vbool(true);
	case N_FALSE: return vbool(false);
	case N_NULL: return (rval){V_NULL, false, 0, NULL, 0};
	case N_UNDEF: return UNDEF;
	case N_APP: return app_prop(c, cond->pool + n->a, n->b);
	case N_DOLLAR: {
		if (!(n->flags & RN_NO_APP)) {
			rval v = app_prop(c, cond->pool + n->a, n->b);
			if (v.t != V_UNDEF)
				return v;
		}
		if (n->flags & RN_BODY)
			return body_value(c, cond, n);
		return sys_prop(c, (rsys)n->sub);
	}
	case N_NEG: {
		rval v = eval(c, cond, n->a);
		return v.t == V_NUM ? vnum(-v.n) : UNDEF;
	}
	case N_NOT: {
		rval v = eval(c, cond, n->a);
		return v.t == V_BOOL ? vbool(!v.b) : UNDEF;
	}
	case N_CALL: return eval_call(c, cond, n);
	case N_BIN: break;
	}
	rbin op = (rbin)n->sub;
	rval l = eval(c, cond, n->a);
	switch (op) {
	case B_AND: {
		if (l.t == V_BOOL && !l.b)
			return vbool(false);
		rval r = eval(c, cond, n->b);
		if (r.t == V_BOOL && !r.b)
			return vbool(false);
		return l.t == V_BOOL && r.t == V_BOOL ? vbool(true) : UNDEF;
	}
	case B_OR: {
		if (l.t == V_BOOL && l.b)
			return vbool(true);
		rval r = eval(c, cond, n->b);
		if (r.t == V_BOOL && r.b)
			return vbool(true);
		return l.t == V_BOOL && r.t == V_BOOL ? vbool(false) : UNDEF;
	}
	case B_COALESCE: return l.t != V_UNDEF ? l : eval(c, cond, n->b);
	default: break;
	}
	rval r = eval(c, cond, n->b);
	switch (op) {
	case B_MUL: return l.t == V_NUM && r.t == V_NUM ? vnum(l.n * r.n) : UNDEF;
	case B_DIV: return l.t == V_NUM && r.t == V_NUM ? vnum(l.n / r.n) : UNDEF;
	case B_MOD: return l.t == V_NUM && r.t == V_NUM ? vnum(fmod(l.n, r.n)) : UNDEF;
	case B_ADD: return l.t == V_NUM && r.t == V_NUM ? vnum(l.n + r.n) : UNDEF;
	case B_SUB: return l.t == V_NUM && r.t == V_NUM ? vnum(l.n - r.n) : UNDEF;
	case B_CONCAT: {
		rval v[2] = {l, r};
		return concat(c, v, 2);
	}
	default: return compare(op, l, r);
	}
}

perch_route_truth route_cond_eval(const struct perch_route_cond *cond, rctx *c)
{
	rval v = eval(c, cond, cond->root);
	if (v.t != V_BOOL)
		return PERCH_ROUTE_UNDEFINED;
	return v.b ? PERCH_ROUTE_TRUE : PERCH_ROUTE_FALSE;
}
