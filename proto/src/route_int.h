/*
 * route_int.h — the route language's private pieces, shared by route.c (the
 * statement), route_lex.c (the lexer), route_expr.c (conditions compiled to a
 * node array, with their static type checks), route_eval.c (evaluation and
 * the builtin functions), route_body.c (the JSON body, tokenized once) and
 * route_table.c (the $edgeHub table and matching).
 *
 * The lexer reproduces IoT Edge's ANTLR lexer: at each position the longest
 * match wins, and between matches of equal length the rule listed first in
 * rtok_type. That is what makes `a-b` one property name and `a - b` a
 * subtraction, exactly as IoT Edge reads them.
 */
#ifndef PROTO_ROUTE_INT_H
#define PROTO_ROUTE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/route.h"

/* --- lexer (route_lex.c) -------------------------------------------------- */

/* Token types, in IoT Edge's rule order (which breaks ties of equal length). */
typedef enum rtok_type {
	T_EOF = 0,
	T_LBRACE, /* '{' and '}': implicit literals, defined before the rules */
	T_RBRACE,
	T_SELECT, /* keywords, any case */
	T_FROM,
	T_WHERE,
	T_INTO,
	T_STRING,       /* "..." or '...' with \" \' \\ \uXXXX escapes */
	T_UNTERMINATED, /* a string without its closing quote (an error) */
	T_BADESC,       /* a string with an escape other than \" \' \\ \uXXXX (an error) */
	T_INT,          /* -?[0-9]+ */
	T_HEX,          /* 0x[0-9a-f]+ */
	T_REAL,         /* -?[0-9]*.[0-9]+(e..)? | -?[0-9]*e.. */
	T_TRUE,         /* literals, lower case only */
	T_FALSE,
	T_NULL,
	T_UNDEFINED,
	T_LPAREN,
	T_RPAREN,
	T_COMMA,
	T_PLUS,
	T_MINUS,
	T_STAR,
	T_SLASH,
	T_PERCENT,
	T_AND, /* any case */
	T_OR,
	T_NOT,
	T_EQ,       /* = */
	T_NE,       /* != */
	T_NE2,      /* <> */
	T_LE,       /* <= */
	T_GE,       /* >= */
	T_GT,       /* > */
	T_LT,       /* < */
	T_CONCAT,   /* || */
	T_COALESCE, /* ?? */
	T_SYSPROP,  /* $ followed by path characters: $contentType, $body.a[0] */
	T_ID,       /* a run of name characters: property, function or path names */
	T_QPATH,    /* a name run with [ or ] that is not a $...: never valid */
	T_UNKNOWN   /* any other character (an error) */
} rtok_type;

typedef struct rtok {
	rtok_type type;
	uint32_t start; /* byte offset in the text */
	uint32_t len;   /* bytes; for T_BADESC, the offset of the bad escape is start+len */
} rtok;

typedef struct rlex {
	const char *s;
	size_t n;
	size_t pos;
} rlex;

/* rlex_next returns the next token, skipping white space and comments. */
rtok rlex_next(rlex *lx);

/* --- parse state and errors (route_lex.c) --------------------------------- */

typedef struct rfail {
	perch_err code;  /* PERCH_OK until something fails */
	size_t offset;   /* byte offset in the text */
	bool has_column; /* the error is about a place in the text */
	char text[200];  /* without the column */
} rfail;

typedef struct rparse {
	perch_slice text;
	rlex lx;
	rtok cur; /* the current token */
	rfail *fail;
} rparse;

void rp_init(rparse *p, perch_slice text, rfail *fail);
void rp_advance(rparse *p);
rtok rp_peek(const rparse *p); /* the token after cur */

/* RP_ERROR records the first failure (later ones are ignored) and returns
 * its code, never PERCH_OK, so a parser can `return RP_ERROR(...)`. */
__attribute__((format(printf, 4, 5))) perch_err rp_fail(rparse *p, perch_err code, size_t offset,
                                                        const char *fmt, ...);

static inline perch_err route_nonzero(perch_err e)
{
	return e == PERCH_OK ? PERCH_EINTERNAL : e;
}

#define RP_ERROR(p, code, offset, ...) route_nonzero(rp_fail((p), (code), (offset), __VA_ARGS__))

/* route_column turns a byte offset of text into a 1-based character column. */
unsigned route_column(perch_slice text, size_t offset);

/* route_fail_fill formats a failure into a public error. */
void route_fail_fill(perch_route_error *why, perch_slice text, const rfail *f);

/* route_unescape decodes the body of a string token (without quotes) into
 * out (cap bytes); returns the length, or (size_t)-1 when it does not fit. */
size_t route_unescape(const char *s, size_t n, char *out, size_t cap);

/* route_check_text refuses control characters (but tab, CR, LF) and
 * invalid UTF-8: false with *bad the offset and *why a short text. */
bool route_check_text(perch_slice text, size_t *bad, const char **why);

/* ASCII case-insensitive comparisons. */
bool route_ieq(const char *a, size_t alen, const char *b, size_t blen);
bool route_ieq_cstr(const char *a, size_t alen, const char *b);

/* --- message sources (route.c) ------------------------------------------ */

/* A message's source path as pieces, walked without building it:
 * "/messages/" ["modules/" m "/" ["outputs/" o "/"]], or
 * "/twinChangeNotifications/". */
typedef struct srcpath {
	perch_slice piece[6];
	size_t n;
} srcpath;

void route_source_path(const perch_route_msg *m, srcpath *sp);

/* Whether the path starts with r's prefix, ignoring ASCII case. */
bool route_prefix_matches(const perch_route *r, const srcpath *sp);

/* --- compiled conditions (route_expr.c) ---------------------------------- */

/* Static types, checked when compiling. ANY is a $body value. */
typedef enum rstype { ST_ANY = 0, ST_BOOL, ST_NUM, ST_STR, ST_NULL, ST_UNDEF } rstype;

typedef enum rnode_op {
	N_NUM = 0, /* num */
	N_STR,     /* pool[a .. a+b) */
	N_TRUE,
	N_FALSE,
	N_NULL,
	N_UNDEF,
	N_APP,    /* application property named pool[a .. a+b) */
	N_DOLLAR, /* $name: application property "$name" first (unless NO_APP), then
	             the body path steps[c .. c+d) (BODY) or system property sub */
	N_NEG,    /* -a */
	N_NOT,    /* NOT a */
	N_BIN,    /* a <sub> b, sub an rbin */
	N_CALL    /* function sub over args[a .. a+b) */
} rnode_op;

typedef enum rbin {
	B_MUL = 0,
	B_DIV,
	B_MOD,
	B_ADD,
	B_SUB,
	B_CONCAT,
	B_LT,
	B_LE,
	B_GT,
	B_GE,
	B_EQ,
	B_NE,
	B_AND,
	B_OR,
	B_COALESCE
} rbin;

/* System properties by their query names, mapped onto the `$.` keys. */
typedef enum rsys {
	SYS_UNKNOWN = 0,      /* always undefined */
	SYS_MESSAGE_ID,       /* $messageId          $.mid */
	SYS_CORRELATION_ID,   /* $correlationId   $.cid */
	SYS_USER_ID,          /* $userId          $.uid */
	SYS_TO,               /* $to              $.to */
	SYS_CONTENT_TYPE,     /* $contentType     $.ct */
	SYS_CONTENT_ENCODING, /* $contentEncoding $.ce */
	SYS_CONN_DEVICE_ID,   /* $connectionDeviceId: msg->device, else $.cdid */
	SYS_CONN_MODULE_ID,   /* $connectionModuleId: msg->module, else $.cmid */
	SYS_OUTPUT_NAME,      /* $outputName: msg->output, else $.on */
	SYS_EXPIRY            /* $absolute-expiry-time $.exp */
} rsys;

typedef enum rfn {
	FN_ABS = 0,
	FN_EXP,
	FN_POWER,
	FN_SQUARE,
	FN_CEILING,
	FN_FLOOR,
	FN_SIGN,
	FN_SQRT,
	FN_AS_NUMBER,
	FN_IS_ARRAY,
	FN_IS_BOOL,
	FN_IS_DEFINED,
	FN_IS_NULL,
	FN_IS_NUMBER,
	FN_IS_OBJECT,
	FN_IS_PRIMITIVE,
	FN_IS_STRING,
	FN_CONCAT,
	FN_LENGTH,
	FN_LOWER,
	FN_UPPER,
	FN_SUBSTRING,
	FN_INDEX_OF,
	FN_STARTS_WITH,
	FN_ENDS_WITH,
	FN_CONTAINS,
	FN_COUNT
} rfn;

#define RN_NO_APP 0x01 /* N_DOLLAR: `{$x}` or a name with brackets: no app property */
#define RN_BODY   0x02 /* N_DOLLAR: a $body path */

typedef struct rnode {
	uint8_t op;    /* rnode_op */
	uint8_t sub;   /* rbin, rfn or rsys */
	uint8_t stype; /* rstype */
	uint8_t flags; /* RN_* */
	uint32_t a, b; /* children, or a pool/args range */
	uint32_t c, d; /* a steps range */
	double num;    /* N_NUM */
} rnode;

/* One step of a $body path: a key (index < 0, name pool[off .. off+len)) or
 * an array index. */
typedef struct rstep {
	uint32_t off;
	uint32_t len;
	int32_t index;
} rstep;

struct perch_route_cond {
	rnode *nodes;
	uint32_t n_nodes;
	uint32_t root;
	uint32_t *args; /* call arguments: node indexes */
	uint32_t n_args;
	rstep *steps;
	uint32_t n_steps;
	char *pool; /* names and string literals */
	uint32_t pool_len;
};

/*
 * route_cond_compile parses a condition starting at p->cur and stops at the
 * first token that cannot continue it (the caller then expects INTO). On
 * error p->fail says why and *out is NULL.
 */
PERCH_MUST_USE perch_err route_cond_compile(rparse *p, struct perch_route_cond **out);
void route_cond_free(struct perch_route_cond *c);

/* route_fn_name returns a function's canonical name. */
const char *route_fn_name(rfn f);

/* route_sys_lookup maps a query name (without `$`, any case) to a system
 * property. */
rsys route_sys_lookup(const char *name, size_t len);

/* --- the JSON body (route_body.c) ---------------------------------------- */

typedef enum jtype { J_OBJ = 0, J_ARR, J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL } jtype;

typedef struct jtok {
	uint8_t type;   /* jtype */
	uint8_t esc;    /* J_STR: contains backslash escapes */
	uint32_t start; /* J_STR: after the opening quote; else the first byte */
	uint32_t len;   /* J_STR: raw bytes between the quotes; J_NUM: its text */
	uint32_t end;   /* index of the token after this value's last token */
} jtok;

#define RBODY_SMALL 64

typedef struct rbody {
	perch_route_body state; /* UNUSED until parsed */
	jtok *toks;             /* small, or a perch_malloc'd array */
	size_t n, cap;
	jtok small[RBODY_SMALL];
} rbody;

/* route_body_parse tokenizes body (when state is UNUSED) and sets state. */
void route_body_parse(rbody *b, perch_slice body);
void route_body_fini(rbody *b);

/* route_body_find follows steps from the root object; returns the index of
 * the token found, or -1. */
long route_body_find(const rbody *b, perch_slice body, const rstep *steps, size_t n,
                     const char *pool);

/* route_json_str_eq compares a raw JSON string (escapes undecoded) with a
 * plain name. */
bool route_json_str_eq(const char *raw, size_t rawlen, const char *name, size_t len);

/* route_json_unescape decodes a raw JSON string into out (at least rawlen
 * bytes); returns the length. */
size_t route_json_unescape(const char *raw, size_t rawlen, char *out);

/* --- evaluation (route_eval.c) -------------------------------------------- */

#define RSCRATCH_SMALL  2048
#define RSCRATCH_BLOCKS 32

typedef struct rctx {
	const perch_route_msg *msg;
	rbody body;
	bool body_tried;
	size_t scratch_used; /* bytes handed out, all blocks */
	size_t small_used;
	char *blocks[RSCRATCH_BLOCKS];
	size_t n_blocks;
	char small[RSCRATCH_SMALL];
} rctx;

void rctx_init(rctx *c, const perch_route_msg *msg);
void rctx_fini(rctx *c);
perch_route_truth route_cond_eval(const struct perch_route_cond *cond, rctx *c);

#endif /* PROTO_ROUTE_INT_H */
