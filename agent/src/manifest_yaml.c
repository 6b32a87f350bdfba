/*
 * manifest_yaml.c — YAML manifest text to a jansson value, so that a YAML
 * deployment goes through exactly the same checks as a JSON one.
 *
 * libyaml's event parser drives an explicit stack of open containers (no
 * recursion, so nesting costs no C stack). Scalar typing follows the YAML
 * 1.2 core schema, which is what a JSON user expects: only plain scalars
 * are typed, and only null/true/false and decimal numbers; quoted and block
 * scalars always stay strings. Anything that could make a small input big
 * (aliases), or whose meaning JSON cannot carry (tags, complex keys, NaN),
 * is refused with its line and column.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "manifest.h"
#include "perch/alloc.h"

struct yframe {
	json_t *node; /* borrowed: the parent (or the root reference) owns it */
	char *key;    /* mapping: the key waiting for its value (owned), or NULL */
};

struct yconv {
	yaml_parser_t parser;
	struct yframe stack[AGENT_MANIFEST_MAX_DEPTH];
	size_t depth;
	json_t *root; /* owned */
	size_t nodes;
	char *err;
	size_t cap;
};

__attribute__((format(printf, 3, 4))) static perch_err
yfail(struct yconv *c, const yaml_mark_t *mark, const char *fmt, ...)
{
	if (c->cap == 0)
		return PERCH_EINVAL;
	int n = snprintf(c->err, c->cap, "line %zu column %zu: ", mark->line + 1, mark->column + 1);
	if (n >= 0 && (size_t)n < c->cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->cap - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return PERCH_EINVAL;
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* [-+]?[0-9]+ */
static bool is_int_text(const char *s, size_t n)
{
	if (n > 0 && (s[0] == '-' || s[0] == '+')) {
		s++;
		n--;
	}
	return all_digits(s, n);
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? — the core schema float */
static bool is_float_text(const char *s, size_t n)
{
	size_t i = 0, digits = 0;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		i++;
	while (i < n && s[i] >= '0' && s[i] <= '9') {
		i++;
		digits++;
	}
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			i++;
			digits++;
		}
	}
	if (digits == 0)
		return false;
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '-' || s[i] == '+'))
			i++;
		size_t e = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == e)
			return false;
	}
	return i == n;
}

static bool text_in(const char *s, size_t n, const char *const *words)
{
	for (; *words != NULL; words++)
		if (strlen(*words) == n && memcmp(*words, s, n) == 0)
			return true;
	return false;
}

static const char *const null_words[] = {"~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"true", "True", "TRUE", NULL};
static const char *const false_words[] = {"false", "False", "FALSE", NULL};
static const char *const special_floats[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                             "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                             ".NaN",  ".NAN",  NULL};

/* Types one scalar event; *v gets a new reference. */
static perch_err scalar_value(struct yconv *c, const yaml_event_t *ev, json_t **v)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	*v = NULL;
	if (memchr(s, '\0', n) != NULL)
		return yfail(c, &ev->start_mark, "NUL characters are not supported");
	if (tag != NULL) {
		if (strcmp(tag, YAML_STR_TAG) == 0 || strcmp(tag, "!") == 0)
			plain = false; /* an explicit string */
		else
			return yfail(c, &ev->start_mark, "YAML tag '%s' is not supported", tag);
	}
	if (plain) {
		if (n == 0 || text_in(s, n, null_words)) {
			*v = json_null();
			return PERCH_OK;
		}
		if (text_in(s, n, true_words) || text_in(s, n, false_words)) {
			*v = json_boolean(s[0] == 't' || s[0] == 'T');
			return PERCH_OK;
		}
		if (text_in(s, n, special_floats))
			return yfail(c, &ev->start_mark, "'%.*s' cannot be represented in JSON",
			             (int)n, s);
		if (is_int_text(s, n)) {
			errno = 0;
			long long i = strtoll(s, NULL, 10);
			if (errno == ERANGE)
				return yfail(c, &ev->start_mark,
				             "integer out of range (quote it to keep it as text)");
			*v = json_integer((json_int_t)i);
			return *v != NULL ? PERCH_OK : PERCH_ENOMEM;
		}
		if (is_float_text(s, n)) {
			errno = 0;
			double d = strtod(s, NULL);
			if (errno == ERANGE && (d > 1.0 || d < -1.0))
				return yfail(c, &ev->start_mark,
				             "number out of range (quote it to keep it as text)");
			*v = json_real(d);
			return *v != NULL ? PERCH_OK : PERCH_ENOMEM;
		}
	}
	/* libyaml has checked the UTF-8 of its input and of its escapes. */
	*v = json_stringn_nocheck(s, n);
	return *v != NULL ? PERCH_OK : PERCH_ENOMEM;
}

/* Attaches v (a new reference, always consumed) to the innermost container,
 * or makes it the root. */
static perch_err attach(struct yconv *c, const yaml_event_t *ev, json_t *v)
{
	if (c->depth == 0) {
		c->root = v;
		return PERCH_OK;
	}
	struct yframe *f = &c->stack[c->depth - 1];
	if (json_is_array(f->node))
		return json_array_append_new(f->node, v) == 0 ? PERCH_OK : PERCH_ENOMEM;
	char *key = f->key;
	f->key = NULL;
	perch_err e = PERCH_OK;
	if (json_object_get(f->node, key) != NULL) {
		json_decref(v);
		e = yfail(c, &ev->start_mark, "duplicate key '%s'", key);
	} else if (json_object_set_new_nocheck(f->node, key, v) != 0) {
		e = PERCH_ENOMEM;
	}
	perch_free(key);
	return e;
}

/* True when the innermost container is a mapping waiting for a key. */
static bool wants_key(const struct yconv *c)
{
	return c->depth > 0 && json_is_object(c->stack[c->depth - 1].node) &&
	       c->stack[c->depth - 1].key == NULL;
}

static perch_err on_scalar(struct yconv *c, const yaml_event_t *ev)
{
	if (wants_key(c)) {
		const char *s = (const char *)ev->data.scalar.value;
		size_t n = ev->data.scalar.length;
		if (memchr(s, '\0', n) != NULL)
			return yfail(c, &ev->start_mark, "NUL characters are not supported");
		char *key = perch_memdup0(s, n);
		if (key == NULL)
			return PERCH_ENOMEM;
		c->stack[c->depth - 1].key = key;
		return PERCH_OK;
	}
	json_t *v = NULL;
	perch_err e = scalar_value(c, ev, &v);
	if (e != PERCH_OK)
		return e;
	return attach(c, ev, v);
}

static perch_err on_start(struct yconv *c, const yaml_event_t *ev, bool mapping)
{
	const char *tag = mapping ? (const char *)ev->data.mapping_start.tag
	                          : (const char *)ev->data.sequence_start.tag;
	if (tag != NULL && strcmp(tag, mapping ? YAML_MAP_TAG : YAML_SEQ_TAG) != 0)
		return yfail(c, &ev->start_mark, "YAML tag '%s' is not supported", tag);
	if (wants_key(c))
		return yfail(c, &ev->start_mark, "keys must be scalars");
	if (c->depth == AGENT_MANIFEST_MAX_DEPTH)
		return yfail(c, &ev->start_mark, "nested deeper than %d levels",
		             AGENT_MANIFEST_MAX_DEPTH);
	json_t *node = mapping ? json_object() : json_array();
	if (node == NULL)
		return PERCH_ENOMEM;
	perch_err e = attach(c, ev, node);
	if (e != PERCH_OK)
		return e;
	c->stack[c->depth++] = (struct yframe){node, NULL};
	return PERCH_OK;
}

static perch_err on_event(struct yconv *c, const yaml_event_t *ev, int *docs)
{
	const char *anchor = NULL;
	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		if (++*docs > 1)
			return yfail(c, &ev->start_mark, "only one YAML document is allowed");
		return PERCH_OK;
	case YAML_ALIAS_EVENT: return yfail(c, &ev->start_mark, "YAML aliases are not supported");
	case YAML_SCALAR_EVENT: anchor = (const char *)ev->data.scalar.anchor; break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = (const char *)ev->data.sequence_start.anchor;
		break;
	case YAML_MAPPING_START_EVENT: anchor = (const char *)ev->data.mapping_start.anchor; break;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT: c->depth--; return PERCH_OK;
	default: return PERCH_OK;
	}
	if (anchor != NULL)
		return yfail(c, &ev->start_mark, "YAML anchors are not supported");
	if (++c->nodes > AGENT_MANIFEST_MAX_NODES)
		return yfail(c, &ev->start_mark, "more than %d YAML nodes",
		             AGENT_MANIFEST_MAX_NODES);
	if (ev->type == YAML_SCALAR_EVENT)
		return on_scalar(c, ev);
	return on_start(c, ev, ev->type == YAML_MAPPING_START_EVENT);
}

perch_err agent_manifest_yaml_to_json(const char *data, size_t len, json_t **out, char *err,
                                      size_t cap)
{
	*out = NULL;
	if (cap > 0)
		err[0] = '\0';
	if (len > AGENT_MANIFEST_MAX_BYTES) {
		snprintf(err, cap, "larger than %u bytes", AGENT_MANIFEST_MAX_BYTES);
		return PERCH_ETOOBIG;
	}
	struct yconv c = {.err = err, .cap = cap};
	if (!yaml_parser_initialize(&c.parser))
		return PERCH_ENOMEM;
	yaml_parser_set_input_string(&c.parser, (const unsigned char *)data, len);
	perch_err e = PERCH_OK;
	int docs = 0;
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&c.parser, &ev)) {
			if (c.parser.error == YAML_MEMORY_ERROR) {
				e = PERCH_ENOMEM;
			} else {
				e = yfail(&c, &c.parser.problem_mark, "%s",
				          c.parser.problem != NULL ? c.parser.problem
				                                   : "syntax error");
			}
			break;
		}
		bool end = ev.type == YAML_STREAM_END_EVENT;
		e = on_event(&c, &ev, &docs);
		yaml_event_delete(&ev);
		if (e != PERCH_OK || end)
			break;
	}
	for (size_t i = 0; i < AGENT_MANIFEST_MAX_DEPTH; i++)
		perch_free(c.stack[i].key);
	yaml_parser_delete(&c.parser);
	if (e != PERCH_OK) {
		json_decref(c.root);
		return e;
	}
	if (c.root == NULL) {
		snprintf(err, cap, "line 1 column 1: empty document");
		return PERCH_EINVAL;
	}
	*out = c.root;
	return PERCH_OK;
}
