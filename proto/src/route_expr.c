/*
 * route_expr.c — route conditions: parsed by precedence climbing into a flat
 * array of nodes, with the static type checks IoT Edge makes at compile time.
 *
 * Precedence, tightest first (all binary operators associate to the left):
 *
 *   primary   literal, (expr), name, $name, {$name}, FUNC(args)
 *   unary     -x  NOT x        (NOT binds tighter than comparisons, as in
 *                               IoT Edge: write NOT (a = b))
 *   7         *  /  %
 *   6         +  -  ||
 *   5         <  <=  >  >=
 *   4         =  !=  <>
 *   3         AND
 *   2         OR
 *   1         ??
 *
 * Static types: literals, application and system properties (strings) and
 * function results have a known type; a $body value is ANY. An operator given
 * operands whose known types it cannot take is a compile error at the
 * operator ("cannot compare a string with a number"), as IoT Edge refuses
 * such a route; ANY operands are checked when evaluated, where a mismatch is
 * undefined.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perch/alloc.h"
#include "route_int.h"

/* The builtin functions: name, arity, argument types (the last repeats for
 * CONCAT), result type. An argument type ST_ANY takes anything. */
typedef struct fnsig {
	const char *name;
	uint8_t min, max;
	uint8_t arg[3];
	uint8_t result;
} fnsig;

static const fnsig FNS[FN_COUNT] = {
        [FN_ABS] = {"ABS", 1, 1, {ST_NUM}, ST_NUM},
        [FN_EXP] = {"EXP", 1, 1, {ST_NUM}, ST_NUM},
        [FN_POWER] = {"POWER", 2, 2, {ST_NUM, ST_NUM}, ST_NUM},
        [FN_SQUARE] = {"SQUARE", 1, 1, {ST_NUM}, ST_NUM},
        [FN_CEILING] = {"CEILING", 1, 1, {ST_NUM}, ST_NUM},
        [FN_FLOOR] = {"FLOOR", 1, 1, {ST_NUM}, ST_NUM},
        [FN_SIGN] = {"SIGN", 1, 1, {ST_NUM}, ST_NUM},
        [FN_SQRT] = {"SQRT", 1, 1, {ST_NUM}, ST_NUM},
        [FN_AS_NUMBER] = {"AS_NUMBER", 1, 1, {ST_ANY}, ST_NUM},
        [FN_IS_ARRAY] = {"IS_ARRAY", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_BOOL] = {"IS_BOOL", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_DEFINED] = {"IS_DEFINED", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_NULL] = {"IS_NULL", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_NUMBER] = {"IS_NUMBER", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_OBJECT] = {"IS_OBJECT", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_PRIMITIVE] = {"IS_PRIMITIVE", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_IS_STRING] = {"IS_STRING", 1, 1, {ST_ANY}, ST_BOOL},
        [FN_CONCAT] = {"CONCAT", 2, PERCH_ROUTE_MAX_ARGS, {ST_STR, ST_STR, ST_STR}, ST_STR},
        [FN_LENGTH] = {"LENGTH", 1, 1, {ST_STR}, ST_NUM},
        [FN_LOWER] = {"LOWER", 1, 1, {ST_STR}, ST_STR},
        [FN_UPPER] = {"UPPER", 1, 1, {ST_STR}, ST_STR},
        [FN_SUBSTRING] = {"SUBSTRING", 2, 3, {ST_STR, ST_NUM, ST_NUM}, ST_STR},
        [FN_INDEX_OF] = {"INDEX_OF", 2, 2, {ST_STR, ST_STR}, ST_NUM},
        [FN_STARTS_WITH] = {"STARTS_WITH", 2, 2, {ST_STR, ST_STR}, ST_BOOL},
        [FN_ENDS_WITH] = {"ENDS_WITH", 2, 2, {ST_STR, ST_STR}, ST_BOOL},
        [FN_CONTAINS] = {"CONTAINS", 2, 2, {ST_STR, ST_STR}, ST_BOOL},
};

const char *route_fn_name(rfn f)
{
	return (unsigned)f < FN_COUNT ? FNS[f].name : "?";
}

static const struct {
	const char *name;
	rsys sys;
} SYS_NAMES[] = {
        {"messageId", SYS_MESSAGE_ID},
        {"correlationId", SYS_CORRELATION_ID},
        {"userId", SYS_USER_ID},
        {"to", SYS_TO},
        {"contentType", SYS_CONTENT_TYPE},
        {"contentEncoding", SYS_CONTENT_ENCODING},
        {"connectionDeviceId", SYS_CONN_DEVICE_ID},
        {"connectionModuleId", SYS_CONN_MODULE_ID},
        {"outputName", SYS_OUTPUT_NAME},
        {"absolute-expiry-time", SYS_EXPIRY},
};

rsys route_sys_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof SYS_NAMES / sizeof SYS_NAMES[0]; i++)
		if (route_ieq_cstr(name, len, SYS_NAMES[i].name))
			return SYS_NAMES[i].sys;
	return SYS_UNKNOWN;
}

/* --- the builder ---------------------------------------------------------- */

typedef struct cbuild {
	rparse *p;
	rnode *nodes;
	uint16_t *height; /* beside nodes: the height of each node's subtree */
	size_t n_nodes, cap_nodes, cap_height;
	uint32_t *args;
	size_t n_args, cap_args;
	rstep *steps;
	size_t n_steps, cap_steps;
	char *pool;
	size_t pool_len, cap_pool;
} cbuild;

static perch_err oom(cbuild *b)
{
	return RP_ERROR(b->p, PERCH_ENOMEM, b->p->cur.start, "out of memory");
}

/* Appends n bytes to the pool; their offset in *off. */
static perch_err pool_add(cbuild *b, const char *s, size_t n, uint32_t *off)
{
	if (b->cap_pool - b->pool_len < n) {
		size_t cap = b->cap_pool ? b->cap_pool : 256;
		while (cap - b->pool_len < n)
			cap *= 2;
		char *np = perch_realloc(b->pool, cap);
		if (np == NULL)
			return oom(b);
		b->pool = np;
		b->cap_pool = cap;
	}
	if (n > 0)
		memcpy(b->pool + b->pool_len, s, n);
	*off = (uint32_t)b->pool_len;
	b->pool_len += n;
	return PERCH_OK;
}

/* Adds a node of height h (1 + its tallest child); its index in *idx. */
static perch_err node_add(cbuild *b, rnode n, unsigned h, size_t at, uint32_t *idx)
{
	if (b->n_nodes >= PERCH_ROUTE_MAX_NODES)
		return RP_ERROR(b->p, PERCH_ETOOBIG, at, "condition has more than %d parts",
		                PERCH_ROUTE_MAX_NODES);
	if (h > PERCH_ROUTE_MAX_DEPTH)
		return RP_ERROR(b->p, PERCH_ETOOBIG, at, "condition nested deeper than %d levels",
		                PERCH_ROUTE_MAX_DEPTH);
	rnode *nn = perch_grow(b->nodes, b->n_nodes, &b->cap_nodes, sizeof *b->nodes, 16);
	if (nn == NULL)
		return oom(b);
	b->nodes = nn;
	uint16_t *nh = perch_grow(b->height, b->n_nodes, &b->cap_height, sizeof *b->height, 16);
	if (nh == NULL)
		return oom(b);
	b->height = nh;
	b->nodes[b->n_nodes] = n;
	b->height[b->n_nodes] = (uint16_t)h;
	*idx = (uint32_t)b->n_nodes++;
	return PERCH_OK;
}

static unsigned hgt(const cbuild *b, uint32_t i)
{
	assert(b->height != NULL && i < b->n_nodes);
	return b->height[i];
}

static rstype stype_of(const cbuild *b, uint32_t i)
{
	assert(b->nodes != NULL && i < b->n_nodes);
	return (rstype)b->nodes[i].stype;
}

static const char *type_name(rstype t)
{
	switch (t) {
	case ST_BOOL: return "true or false";
	case ST_NUM: return "a number";
	case ST_STR: return "a string";
	case ST_NULL: return "null";
	case ST_UNDEF: return "undefined";
	default: return "a $body value";
	}
}

/* A type that is fixed when compiling (not a $body value, not undefined). */
static bool known(rstype t)
{
	return t != ST_ANY && t != ST_UNDEF;
}

/* Whether an operand of type t may stand where want is expected. */
static bool fits(rstype t, rstype want)
{
	return want == ST_ANY || t == want || t == ST_ANY || t == ST_UNDEF;
}

/* A short, quoted view of a token for messages. */
static void tok_desc(const rparse *p, rtok t, char *out, size_t cap)
{
	if (t.type == T_EOF) {
		snprintf(out, cap, "the end");
		return;
	}
	int n = t.len > 24 ? 24 : (int)t.len;
	snprintf(out, cap, "'%.*s%s'", n, p->text.ptr + t.start, t.len > 24 ? "..." : "");
}

static perch_err expected(cbuild *b, const char *what)
{
	char d[40];
	tok_desc(b->p, b->p->cur, d, sizeof d);
	return RP_ERROR(b->p, PERCH_EINVAL, b->p->cur.start, "expected %s, found %s", what, d);
}

/* Errors a token makes on its own wherever it appears. */
static perch_err bad_token(cbuild *b, rtok t)
{
	rparse *p = b->p;
	switch (t.type) {
	case T_UNTERMINATED: return RP_ERROR(p, PERCH_EINVAL, t.start, "unterminated string");
	case T_BADESC:
		return RP_ERROR(p, PERCH_EINVAL, t.start + t.len,
		                "unknown escape in a string (use \\\", \\', \\\\ or \\uXXXX)");
	case T_UNKNOWN:
		return RP_ERROR(p, PERCH_EINVAL, t.start, "unexpected character '%c'",
		                p->text.ptr[t.start]);
	case T_QPATH:
		return RP_ERROR(p, PERCH_EINVAL, t.start, "'[' and ']' only index $body paths");
	default: return expected(b, "an expression");
	}
}

/* --- $body paths ---------------------------------------------------------- */

/*
 * Compiles a $body path: names separated by dots, each name optionally
 * followed by [index]es: machine.temperature, readings[0].value. A name is
 * any run of characters but . [ ] (the token already excludes the rest).
 * at is the path's offset in the text, for errors.
 */
static perch_err path_compile(cbuild *b, const char *s, size_t n, size_t at, uint32_t *first,
                              uint32_t *count)
{
	size_t start_steps = b->n_steps;
	size_t i = 0;
	if (n == 0)
		return RP_ERROR(b->p, PERCH_EINVAL, at, "empty $body path");
	for (;;) {
		size_t j = i;
		while (j < n && s[j] != '.' && s[j] != '[' && s[j] != ']')
			j++;
		if (j == i)
			return RP_ERROR(b->p, PERCH_EINVAL, at + i,
			                "bad $body path: expected a name");
		rstep st = {0, (uint32_t)(j - i), -1};
		perch_err err = pool_add(b, s + i, j - i, &st.off);
		if (err != PERCH_OK)
			return err;
		for (;;) {
			if (b->n_steps - start_steps >= PERCH_ROUTE_MAX_PATH)
				return RP_ERROR(b->p, PERCH_ETOOBIG, at,
				                "$body path longer than %d steps",
				                PERCH_ROUTE_MAX_PATH);
			rstep *ns = perch_grow(b->steps, b->n_steps, &b->cap_steps,
			                       sizeof *b->steps, 8);
			if (ns == NULL)
				return oom(b);
			b->steps = ns;
			b->steps[b->n_steps++] = st;
			if (j >= n || s[j] != '[')
				break;
			size_t k = j + 1;
			long idx = 0;
			while (k < n && s[k] >= '0' && s[k] <= '9' && k - j <= 9)
				idx = idx * 10 + (s[k++] - '0');
			if (k == j + 1 || k >= n || s[k] != ']')
				return RP_ERROR(b->p, PERCH_EINVAL, at + j,
				                "bad $body path: expected [index] with a number");
			st = (rstep){0, 0, (int32_t)idx};
			j = k + 1;
		}
		if (j >= n)
			break;
		if (s[j] != '.')
			return RP_ERROR(b->p, PERCH_EINVAL, at + j,
			                "bad $body path: expected '.' or the end");
		i = j + 1;
		if (i >= n)
			return RP_ERROR(b->p, PERCH_EINVAL, at + i,
			                "bad $body path: expected a name after '.'");
	}
	*first = (uint32_t)start_steps;
	*count = (uint32_t)(b->n_steps - start_steps);
	return PERCH_OK;
}

/* $name or {$name} (no_app). */
static perch_err compile_dollar(cbuild *b, rtok t, bool no_app, uint32_t *idx)
{
	const char *s = b->p->text.ptr + t.start;
	size_t n = t.len;
	bool brackets = memchr(s, '[', n) != NULL || memchr(s, ']', n) != NULL;
	rnode node = {.op = N_DOLLAR, .stype = ST_STR};
	perch_err err;
	if (n >= 6 && route_ieq(s, 6, "$body.", 6)) {
		node.flags = RN_BODY | (no_app || brackets ? RN_NO_APP : 0);
		node.stype = ST_ANY;
		err = path_compile(b, s + 6, n - 6, t.start + 6, &node.c, &node.d);
	} else if (brackets) {
		/* Not a body path, and no property name holds brackets. */
		return node_add(b, (rnode){.op = N_UNDEF, .stype = ST_UNDEF}, 1, t.start, idx);
	} else {
		node.flags = no_app ? RN_NO_APP : 0;
		node.sub = (uint8_t)route_sys_lookup(s + 1, n - 1);
		err = PERCH_OK;
	}
	if (err == PERCH_OK)
		err = pool_add(b, s, n, &node.a);
	if (err != PERCH_OK)
		return err;
	node.b = (uint32_t)n;
	return node_add(b, node, 1, t.start, idx);
}

/* --- literals ------------------------------------------------------------- */

static perch_err compile_number(cbuild *b, rtok t, uint32_t *idx)
{
	const char *s = b->p->text.ptr + t.start;
	double v;
	if (t.type == T_HEX) {
		if (t.len - 2 > 16)
			return RP_ERROR(b->p, PERCH_ERANGE, t.start,
			                "hexadecimal number longer than 16 digits");
		uint64_t u = 0;
		for (size_t i = 2; i < t.len; i++) {
			char c = s[i];
			unsigned d =
			        c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
			u = u * 16 + d;
		}
		v = (double)(int64_t)u; /* IoT Edge reads it as a signed 64-bit number */
	} else {
		char buf[128];
		if (t.len >= sizeof buf)
			return RP_ERROR(b->p, PERCH_ETOOBIG, t.start,
			                "number longer than %zu characters", sizeof buf - 1);
		memcpy(buf, s, t.len);
		buf[t.len] = '\0';
		v = strtod(buf, NULL);
		if (!isfinite(v))
			return RP_ERROR(b->p, PERCH_ERANGE, t.start, "number out of range");
	}
	return node_add(b, (rnode){.op = N_NUM, .stype = ST_NUM, .num = v}, 1, t.start, idx);
}

static perch_err compile_string(cbuild *b, rtok t, uint32_t *idx)
{
	char buf[PERCH_ROUTE_MAX_STRING];
	size_t n = route_unescape(b->p->text.ptr + t.start + 1, t.len - 2, buf, sizeof buf);
	if (n == (size_t)-1)
		return RP_ERROR(b->p, PERCH_ETOOBIG, t.start, "string longer than %d bytes",
		                PERCH_ROUTE_MAX_STRING);
	rnode node = {.op = N_STR, .stype = ST_STR, .b = (uint32_t)n};
	perch_err err = pool_add(b, buf, n, &node.a);
	if (err != PERCH_OK)
		return err;
	return node_add(b, node, 1, t.start, idx);
}

/* --- expressions ---------------------------------------------------------- */

static perch_err parse_expr(cbuild *b, int min_prec, unsigned depth, uint32_t *out);

static perch_err parse_call(cbuild *b, unsigned depth, uint32_t *out)
{
	rparse *p = b->p;
	rtok name = p->cur;
	const char *s = p->text.ptr + name.start;
	int fn = -1;
	for (int i = 0; i < FN_COUNT; i++)
		if (route_ieq_cstr(s, name.len, FNS[i].name))
			fn = i;
	if (fn < 0) {
		if (route_ieq_cstr(s, name.len, "TWIN_CHANGE_INCLUDES"))
			return RP_ERROR(p, PERCH_EUNSUPPORTED, name.start,
			                "TWIN_CHANGE_INCLUDES is not supported");
		return RP_ERROR(p, PERCH_EINVAL, name.start, "unknown function %.*s",
		                (int)(name.len > 40 ? 40 : name.len), s);
	}
	const fnsig *sig = &FNS[fn];
	rp_advance(p); /* the name */
	rp_advance(p); /* ( */
	uint32_t args[PERCH_ROUTE_MAX_ARGS] = {0};
	size_t argc = 0;
	unsigned h = 0;
	perch_err err;
	if (p->cur.type != T_RPAREN) {
		for (;;) {
			if (argc == PERCH_ROUTE_MAX_ARGS)
				return RP_ERROR(p, PERCH_ETOOBIG, p->cur.start,
				                "more than %d arguments", PERCH_ROUTE_MAX_ARGS);
			size_t at = p->cur.start;
			if ((err = parse_expr(b, 0, depth + 1, &args[argc])) != PERCH_OK)
				return err;
			rstype want = sig->arg[argc < 3 ? argc : 2];
			rstype got = stype_of(b, args[argc]);
			if (!fits(got, want))
				return RP_ERROR(p, PERCH_EINVAL, at, "%s needs %s here, found %s",
				                sig->name, type_name(want), type_name(got));
			if (hgt(b, args[argc]) > h)
				h = hgt(b, args[argc]);
			argc++;
			if (p->cur.type != T_COMMA)
				break;
			rp_advance(p);
		}
	}
	if (p->cur.type != T_RPAREN)
		return argc == 0 || p->cur.type == T_EOF || p->cur.type == T_INTO
		               ? expected(b, "')'")
		               : expected(b, "',' or ')'");
	if (argc < sig->min || argc > sig->max) {
		if (sig->min == sig->max)
			return RP_ERROR(p, PERCH_EINVAL, name.start,
			                "%s takes %u argument%s, not %zu", sig->name, sig->min,
			                sig->min == 1 ? "" : "s", argc);
		if (sig->max == PERCH_ROUTE_MAX_ARGS)
			return RP_ERROR(p, PERCH_EINVAL, name.start,
			                "%s takes at least %u arguments, not %zu", sig->name,
			                sig->min, argc);
		return RP_ERROR(p, PERCH_EINVAL, name.start, "%s takes %u or %u arguments, not %zu",
		                sig->name, sig->min, sig->max, argc);
	}
	rp_advance(p); /* ) */
	rnode node = {.op = N_CALL,
	              .sub = (uint8_t)fn,
	              .stype = sig->result,
	              .a = (uint32_t)b->n_args,
	              .b = (uint32_t)argc};
	for (size_t i = 0; i < argc; i++) {
		uint32_t *na = perch_grow(b->args, b->n_args, &b->cap_args, sizeof *b->args, 8);
		if (na == NULL)
			return oom(b);
		b->args = na;
		b->args[b->n_args++] = args[i];
	}
	return node_add(b, node, h + 1, name.start, out);
}

static perch_err parse_primary(cbuild *b, unsigned depth, uint32_t *out)
{
	rparse *p = b->p;
	rtok t = p->cur;
	perch_err err;
	switch (t.type) {
	case T_LPAREN:
		rp_advance(p);
		if ((err = parse_expr(b, 0, depth + 1, out)) != PERCH_OK)
			return err;
		if (p->cur.type != T_RPAREN)
			return expected(b, "')'");
		rp_advance(p);
		return PERCH_OK;
	case T_INT:
	case T_HEX:
	case T_REAL: rp_advance(p); return compile_number(b, t, out);
	case T_STRING: rp_advance(p); return compile_string(b, t, out);
	case T_TRUE:
	case T_FALSE:
	case T_NULL:
	case T_UNDEFINED: {
		static const uint8_t ops[] = {N_TRUE, N_FALSE, N_NULL, N_UNDEF};
		static const uint8_t types[] = {ST_BOOL, ST_BOOL, ST_NULL, ST_UNDEF};
		int k = (int)(t.type - T_TRUE);
		rp_advance(p);
		return node_add(b, (rnode){.op = ops[k], .stype = types[k]}, 1, t.start, out);
	}
	case T_SYSPROP: rp_advance(p); return compile_dollar(b, t, false, out);
	case T_LBRACE:
		rp_advance(p);
		if (p->cur.type != T_SYSPROP)
			return expected(b, "a $property after '{'");
		t = p->cur;
		rp_advance(p);
		if (p->cur.type != T_RBRACE)
			return expected(b, "'}'");
		rp_advance(p);
		return compile_dollar(b, t, true, out);
	case T_ID: {
		if (rp_peek(p).type == T_LPAREN)
			return parse_call(b, depth, out);
		rnode node = {.op = N_APP, .stype = ST_STR, .b = t.len};
		if ((err = pool_add(b, p->text.ptr + t.start, t.len, &node.a)) != PERCH_OK)
			return err;
		rp_advance(p);
		return node_add(b, node, 1, t.start, out);
	}
	default: return bad_token(b, t);
	}
}

static perch_err parse_unary(cbuild *b, unsigned depth, uint32_t *out)
{
	rparse *p = b->p;
	if (depth > PERCH_ROUTE_MAX_DEPTH)
		return RP_ERROR(p, PERCH_ETOOBIG, p->cur.start,
		                "condition nested deeper than %d levels", PERCH_ROUTE_MAX_DEPTH);
	rtok t = p->cur;
	if (t.type != T_MINUS && t.type != T_NOT)
		return parse_primary(b, depth, out);
	rp_advance(p);
	uint32_t x = 0;
	perch_err err = parse_unary(b, depth + 1, &x);
	if (err != PERCH_OK)
		return err;
	rstype xt = stype_of(b, x);
	rnode node = {.a = x};
	if (t.type == T_MINUS) {
		if (!fits(xt, ST_NUM))
			return RP_ERROR(p, PERCH_EINVAL, t.start, "'-' needs a number, found %s",
			                type_name(xt));
		node.op = N_NEG;
		node.stype = ST_NUM;
	} else {
		if (xt != ST_BOOL && xt != ST_NULL && xt != ST_ANY && xt != ST_UNDEF)
			return RP_ERROR(p, PERCH_EINVAL, t.start,
			                "NOT needs true or false, found %s (NOT binds tighter than "
			                "comparisons: write NOT (a = b))",
			                type_name(xt));
		node.op = N_NOT;
		node.stype = ST_BOOL;
	}
	return node_add(b, node, hgt(b, x) + 1, t.start, out);
}

/* The binary operator of a token and its precedence; false if none. */
static bool binop(rtok_type t, rbin *op, int *prec)
{
	switch (t) {
	case T_STAR: *op = B_MUL, *prec = 7; return true;
	case T_SLASH: *op = B_DIV, *prec = 7; return true;
	case T_PERCENT: *op = B_MOD, *prec = 7; return true;
	case T_PLUS: *op = B_ADD, *prec = 6; return true;
	case T_MINUS: *op = B_SUB, *prec = 6; return true;
	case T_CONCAT: *op = B_CONCAT, *prec = 6; return true;
	case T_LT: *op = B_LT, *prec = 5; return true;
	case T_LE: *op = B_LE, *prec = 5; return true;
	case T_GT: *op = B_GT, *prec = 5; return true;
	case T_GE: *op = B_GE, *prec = 5; return true;
	case T_EQ: *op = B_EQ, *prec = 4; return true;
	case T_NE:
	case T_NE2: *op = B_NE, *prec = 4; return true;
	case T_AND: *op = B_AND, *prec = 3; return true;
	case T_OR: *op = B_OR, *prec = 2; return true;
	case T_COALESCE: *op = B_COALESCE, *prec = 1; return true;
	default: return false;
	}
}

/* When node i is a property whose name holds an operator character (`2-1`,
 * `a*b`), a hint that it was read as one name; else "". */
static void name_hint(const cbuild *b, uint32_t i, char *out, size_t cap)
{
	const rnode *n = &b->nodes[i];
	out[0] = '\0';
	if (n->op != N_APP)
		return;
	const char *s = b->pool + n->a;
	for (uint32_t k = 0; k < n->b; k++) {
		if (strchr("+-*%", s[k]) != NULL) {
			int len = n->b > 24 ? 24 : (int)n->b;
			snprintf(out, cap,
			         "; '%.*s' is one property name: put spaces around operators", len,
			         s);
			return;
		}
	}
}

/* The static checks of a binary operator over nodes li and ri; the result
 * type in *res. */
static perch_err check_bin(cbuild *b, rbin op, rtok at, uint32_t li, uint32_t ri, rstype *res)
{
	rparse *p = b->p;
	rstype l = stype_of(b, li), r = stype_of(b, ri);
	char hint[96];
	name_hint(b, li, hint, sizeof hint);
	if (hint[0] == '\0')
		name_hint(b, ri, hint, sizeof hint);
	const char *sym = p->text.ptr + at.start;
	int symlen = (int)at.len;
	switch (op) {
	case B_MUL:
	case B_DIV:
	case B_MOD:
	case B_ADD:
	case B_SUB:
		if (!fits(l, ST_NUM) || !fits(r, ST_NUM))
			return RP_ERROR(
			        p, PERCH_EINVAL, at.start, "'%.*s' needs numbers, found %s%s%s",
			        symlen, sym, type_name(fits(l, ST_NUM) ? r : l),
			        (l == ST_STR || r == ST_STR) ? " (AS_NUMBER converts a string)"
			                                     : "",
			        hint);
		*res = ST_NUM;
		return PERCH_OK;
	case B_CONCAT:
		if (!fits(l, ST_STR) || !fits(r, ST_STR))
			return RP_ERROR(p, PERCH_EINVAL, at.start, "'||' needs strings, found %s",
			                type_name(fits(l, ST_STR) ? r : l));
		*res = ST_STR;
		return PERCH_OK;
	case B_AND:
	case B_OR: {
		rstype bad = ST_BOOL;
		if (l == ST_NUM || l == ST_STR)
			bad = l;
		else if (r == ST_NUM || r == ST_STR)
			bad = r;
		if (bad != ST_BOOL)
			return RP_ERROR(p, PERCH_EINVAL, at.start,
			                "%.*s needs true or false, found %s", symlen, sym,
			                type_name(bad));
		*res = ST_BOOL;
		return PERCH_OK;
	}
	case B_COALESCE:
		if (known(l) && known(r) && l != r)
			return RP_ERROR(p, PERCH_EINVAL, at.start,
			                "'?\?' needs two values of one type, found %s and %s",
			                type_name(l), type_name(r));
		*res = l == ST_UNDEF ? r : l;
		return PERCH_OK;
	default: /* comparisons */
		if (known(l) && known(r) && l != r)
			return RP_ERROR(p, PERCH_EINVAL, at.start, "cannot compare %s with %s%s%s",
			                type_name(l), type_name(r),
			                (l == ST_STR && r == ST_NUM) || (l == ST_NUM && r == ST_STR)
			                        ? " (application properties are strings: "
			                          "AS_NUMBER converts)"
			                        : "",
			                hint);
		*res = ST_BOOL;
		return PERCH_OK;
	}
}

static perch_err parse_expr(cbuild *b, int min_prec, unsigned depth, uint32_t *out)
{
	rparse *p = b->p;
	if (depth > PERCH_ROUTE_MAX_DEPTH)
		return RP_ERROR(p, PERCH_ETOOBIG, p->cur.start,
		                "condition nested deeper than %d levels", PERCH_ROUTE_MAX_DEPTH);
	uint32_t left = 0;
	perch_err err = parse_unary(b, depth + 1, &left);
	if (err != PERCH_OK)
		return err;
	rbin op;
	int prec;
	while (binop(p->cur.type, &op, &prec) && prec >= min_prec) {
		rtok at = p->cur;
		rp_advance(p);
		uint32_t right = 0;
		if ((err = parse_expr(b, prec + 1, depth + 1, &right)) != PERCH_OK)
			return err;
		rstype res = ST_ANY;
		if ((err = check_bin(b, op, at, left, right, &res)) != PERCH_OK)
			return err;
		unsigned h = hgt(b, left) > hgt(b, right) ? hgt(b, left) : hgt(b, right);
		rnode node = {.op = N_BIN,
		              .sub = (uint8_t)op,
		              .stype = (uint8_t)res,
		              .a = left,
		              .b = right};
		if ((err = node_add(b, node, h + 1, at.start, &left)) != PERCH_OK)
			return err;
	}
	*out = left;
	return PERCH_OK;
}

static void build_free(cbuild *b)
{
	perch_free(b->nodes);
	perch_free(b->height);
	perch_free(b->args);
	perch_free(b->steps);
	perch_free(b->pool);
}

perch_err route_cond_compile(rparse *p, struct perch_route_cond **out)
{
	*out = NULL;
	cbuild b = {.p = p};
	size_t at = p->cur.start;
	uint32_t root = 0;
	perch_err err = parse_expr(&b, 0, 0, &root);
	/* Whether the condition is a boolean matters once it is complete: a
	 * syntax error after it comes first. */
	if (err == PERCH_OK && p->cur.type == T_INTO) {
		rstype t = stype_of(&b, root);
		if (t == ST_NUM || t == ST_STR)
			err = RP_ERROR(p, PERCH_EINVAL, at,
			               "the condition is %s, not true or false", type_name(t));
	}
	struct perch_route_cond *c = NULL;
	if (err == PERCH_OK && (c = perch_calloc(1, sizeof *c)) == NULL)
		err = oom(&b);
	if (err != PERCH_OK) {
		build_free(&b);
		return err;
	}
	perch_free(b.height);
	c->nodes = b.nodes;
	c->n_nodes = (uint32_t)b.n_nodes;
	c->root = root;
	c->args = b.args;
	c->n_args = (uint32_t)b.n_args;
	c->steps = b.steps;
	c->n_steps = (uint32_t)b.n_steps;
	c->pool = b.pool;
	c->pool_len = (uint32_t)b.pool_len;
	*out = c;
	return PERCH_OK;
}

void route_cond_free(struct perch_route_cond *c)
{
	if (c == NULL)
		return;
	perch_free(c->nodes);
	perch_free(c->args);
	perch_free(c->steps);
	perch_free(c->pool);
	perch_free(c);
}
