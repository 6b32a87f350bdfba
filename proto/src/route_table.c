/*
 * route_table.c — the route table of the $edgeHub desired properties, and
 * matching a message against it.
 *
 * Building is all or nothing: every route is compiled, every error is
 * collected (the first PERCH_ROUTE_MAX_ERRORS kept, in name order), and one
 * error refuses the table. Routes are kept sorted by name; sinks are
 * numbered in that order, and a message that several routes send to one
 * sink goes there once, with the best priority among them (IoT Edge's
 * Evaluator does the same).
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perch/alloc.h"
#include "route_int.h"

typedef struct troute {
	char *name;          /* the key in "routes" */
	const json_t *value; /* while building: the JSON value (borrowed) */
	perch_route route;   /* compiled */
	uint32_t priority;   /* 0..9 or PERCH_ROUTE_DEFAULT_PRIORITY */
	uint32_t ttl;        /* 0: the table's default */
	uint32_t sink;       /* index of this route's sink among the distinct sinks */
} troute;

struct perch_route_table {
	troute *r;      /* sorted by name */
	size_t n;       /* <= PERCH_ROUTE_MAX_ROUTES */
	size_t n_sinks; /* distinct sinks, numbered in route order */
	uint32_t default_ttl;
};

typedef struct tbuild {
	perch_route_errors *errs;
	perch_err first; /* the code of the first error */
} tbuild;

__attribute__((format(printf, 5, 6))) static void
add_error(tbuild *b, perch_err code, const char *route, unsigned column, const char *fmt, ...)
{
	if (b->first == PERCH_OK)
		b->first = code;
	if (b->errs == NULL)
		return;
	if (b->errs->count < PERCH_ROUTE_MAX_ERRORS) {
		perch_route_error *e = &b->errs->item[b->errs->count];
		snprintf(e->route, sizeof e->route, "%s", route);
		e->column = column;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->text, sizeof e->text, fmt, ap);
		va_end(ap);
	}
	b->errs->count++;
}

/* "1.x" or "1.x.y...": major and minor; false for anything else. */
static bool parse_version(const char *s, unsigned *major, unsigned *minor)
{
	unsigned v[2] = {0, 0};
	for (int k = 0; k < 2; k++) {
		if (*s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9') {
			if (v[k] > 1000)
				return false;
			v[k] = v[k] * 10 + (unsigned)(*s++ - '0');
		}
		if (k == 0 && *s++ != '.')
			return false;
	}
	while (*s == '.' && s[1] >= '0' && s[1] <= '9') {
		s++;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s != '\0')
		return false;
	*major = v[0];
	*minor = v[1];
	return true;
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return false;
	return true;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const troute *)a)->name, ((const troute *)b)->name);
}

static bool same_sink(const perch_route_sink *a, const perch_route_sink *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind != PERCH_ROUTE_SINK_MODULE)
		return true;
	return strcmp(a->module, b->module) == 0 && strcmp(a->input, b->input) == 0;
}

/* Reads one route: its text, priority and TTL. false when it is skipped (a
 * blank 1.0 route, which IoT Edge ignores) or wrong (error added). */
static bool read_route(tbuild *b, troute *t, unsigned minor, bool *skip)
{
	const json_t *v = t->value, *text = v;
	*skip = false;
	t->priority = PERCH_ROUTE_DEFAULT_PRIORITY;
	t->ttl = 0;
	if (json_is_object(v)) {
		if (minor < 1) {
			add_error(b, PERCH_EINVAL, t->name, 0,
			          "route objects (with priority and timeToLiveSecs) need "
			          "schemaVersion 1.1");
			return false;
		}
		text = json_object_get(v, "route");
		if (text == NULL) {
			add_error(b, PERCH_EINVAL, t->name, 0, "route: missing");
			return false;
		}
		const json_t *pr = json_object_get(v, "priority");
		if (pr != NULL) {
			json_int_t x = json_is_integer(pr) ? json_integer_value(pr) : -1;
			if (x >= 0 && x <= (json_int_t)PERCH_ROUTE_MAX_PRIORITY) {
				t->priority = (uint32_t)x;
			} else if (x != (json_int_t)PERCH_ROUTE_DEFAULT_PRIORITY) {
				add_error(b, PERCH_EINVAL, t->name, 0,
				          "priority: expected an integer from 0 to 9");
				return false;
			}
		}
		const json_t *ttl = json_object_get(v, "timeToLiveSecs");
		if (ttl != NULL) {
			json_int_t x = json_is_integer(ttl) ? json_integer_value(ttl) : -1;
			if (x < 0 || x > (json_int_t)UINT32_MAX) {
				add_error(
				        b, PERCH_EINVAL, t->name, 0,
				        "timeToLiveSecs: expected an integer from 0 to 4294967295");
				return false;
			}
			t->ttl = (uint32_t)x;
		}
	} else if (!json_is_string(v)) {
		add_error(b, PERCH_EINVAL, t->name, 0, "expected a route string or object");
		return false;
	}
	if (!json_is_string(text)) {
		add_error(b, PERCH_EINVAL, t->name, 0, "route: expected a string");
		return false;
	}
	perch_slice s = {json_string_value(text), json_string_length(text)};
	if (blank(s.ptr, s.len)) {
		if (minor == 0 && text == v) {
			*skip = true;
			return false;
		}
		add_error(b, PERCH_EINVAL, t->name, 0, "empty route");
		return false;
	}
	perch_route_error why;
	perch_err err = perch_route_parse(s, &t->route, &why);
	if (err != PERCH_OK) {
		add_error(b, err, t->name, why.column, "%s", why.text);
		return false;
	}
	return true;
}

/* The default TTL from storeAndForwardConfiguration (7200 s when absent). */
static void read_store_and_forward(tbuild *b, const json_t *desired, uint32_t *ttl)
{
	*ttl = PERCH_ROUTE_DEFAULT_TTL;
	const json_t *sf = json_object_get(desired, "storeAndForwardConfiguration");
	if (sf == NULL || json_is_null(sf))
		return;
	if (!json_is_object(sf)) {
		add_error(b, PERCH_EINVAL, "", 0,
		          "storeAndForwardConfiguration: expected an object");
		return;
	}
	const json_t *v = json_object_get(sf, "timeToLiveSecs");
	if (v == NULL)
		return;
	if (!json_is_integer(v) || json_integer_value(v) > (json_int_t)UINT32_MAX) {
		add_error(b, PERCH_EINVAL, "", 0,
		          "storeAndForwardConfiguration.timeToLiveSecs: expected an integer up to "
		          "4294967295");
		return;
	}
	json_int_t x = json_integer_value(v);
	*ttl = x < 0 || x >= (json_int_t)UINT32_MAX ? PERCH_ROUTE_TTL_FOREVER : (uint32_t)x;
}

void perch_route_table_free(perch_route_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		perch_free(t->r[i].name);
		perch_route_clear(&t->r[i].route);
	}
	perch_free(t->r);
	perch_free(t);
}

perch_err perch_routes_from_edgehub(const struct json_t *desired, perch_route_table **out,
                                    perch_route_errors *errs)
{
	tbuild b = {errs, PERCH_OK};
	perch_route_table *t = NULL;
	unsigned major = 0, minor = 0;
	*out = NULL;
	if (errs != NULL)
		errs->count = 0;
	if (!json_is_object(desired)) {
		add_error(&b, PERCH_EINVAL, "", 0,
		          "expected the $edgeHub desired properties object");
		return b.first;
	}
	const json_t *sv = json_object_get(desired, "schemaVersion");
	if (sv == NULL) {
		add_error(&b, PERCH_EINVAL, "", 0, "schemaVersion: missing");
		return b.first;
	}
	if (!json_is_string(sv) || !parse_version(json_string_value(sv), &major, &minor)) {
		add_error(&b, PERCH_EINVAL, "", 0,
		          "schemaVersion: expected a version such as \"1.1\"");
		return b.first;
	}
	if (major != 1 || minor > 3) {
		add_error(&b, PERCH_EUNSUPPORTED, "", 0,
		          "schemaVersion: %.16s is not one Perch reads (1.0 to 1.3)",
		          json_string_value(sv));
		return b.first;
	}
	if ((t = perch_calloc(1, sizeof *t)) == NULL)
		return PERCH_ENOMEM;
	read_store_and_forward(&b, desired, &t->default_ttl);

	const json_t *routes = json_object_get(desired, "routes");
	size_t count = 0;
	if (routes != NULL && !json_is_null(routes)) {
		if (!json_is_object(routes)) {
			add_error(&b, PERCH_EINVAL, "", 0, "routes: expected an object");
			goto refuse;
		}
		count = json_object_size(routes);
	}
	if (count > PERCH_ROUTE_MAX_ROUTES) {
		add_error(&b, PERCH_ETOOBIG, "", 0, "routes: more than %d routes",
		          PERCH_ROUTE_MAX_ROUTES);
		goto refuse;
	}
	if (count > 0 && (t->r = perch_calloc(count, sizeof *t->r)) == NULL)
		goto nomem;
	const char *key;
	const json_t *value;
	if (count > 0)
		json_object_foreach((json_t *)routes, key, value)
		{
			size_t klen = strlen(key);
			if (klen > PERCH_ROUTE_MAX_NAME) {
				add_error(&b, PERCH_ETOOBIG, "", 0,
				          "a route name longer than %d bytes",
				          PERCH_ROUTE_MAX_NAME);
				continue;
			}
			if (blank(key, klen)) {
				add_error(&b, PERCH_EINVAL, key, 0, "empty route name");
				continue;
			}
			if ((t->r[t->n].name = perch_strdup(key)) == NULL)
				goto nomem;
			t->r[t->n++].value = value;
		}
	if (t->n > 1)
		qsort(t->r, t->n, sizeof *t->r, by_name);

	size_t kept = 0;
	for (size_t i = 0; i < t->n; i++) {
		bool skip;
		troute r = t->r[i];
		if (read_route(&b, &r, minor, &skip)) {
			t->r[kept++] = r;
			continue;
		}
		perch_free(r.name);
		perch_route_clear(&r.route);
	}
	t->n = kept;
	if (b.first != PERCH_OK)
		goto refuse;

	for (size_t i = 0; i < t->n; i++) {
		t->r[i].value = NULL;
		size_t j = 0;
		while (j < i && !same_sink(&t->r[j].route.sink, &t->r[i].route.sink))
			j++;
		t->r[i].sink = j < i ? t->r[j].sink : (uint32_t)t->n_sinks++;
	}
	*out = t;
	return PERCH_OK;

nomem:
	add_error(&b, PERCH_ENOMEM, "", 0, "out of memory");
refuse:
	perch_route_table_free(t);
	return b.first;
}

size_t perch_route_table_count(const perch_route_table *t)
{
	return t != NULL ? t->n : 0;
}

perch_route_entry perch_route_table_at(const perch_route_table *t, size_t i)
{
	const troute *r = &t->r[i];
	return (perch_route_entry){r->name, &r->route, r->priority, r->ttl};
}

uint32_t perch_route_table_default_ttl(const perch_route_table *t)
{
	return t->default_ttl;
}

size_t perch_routes_match(const perch_route_table *t, const perch_route_msg *msg,
                          perch_route_hit_fn fn, void *arg, perch_route_match_info *info)
{
	perch_route_match_info local = {0};
	int32_t best[PERCH_ROUTE_MAX_ROUTES]; /* per sink: the route chosen, or -1 */
	for (size_t s = 0; s < t->n_sinks; s++)
		best[s] = -1;
	srcpath sp;
	route_source_path(msg, &sp);
	rctx c;
	rctx_init(&c, msg);
	for (size_t i = 0; i < t->n; i++) {
		const troute *r = &t->r[i];
		if (!route_prefix_matches(&r->route, &sp))
			continue;
		local.evaluated++;
		perch_route_truth v = r->route.cond != NULL ? route_cond_eval(r->route.cond, &c)
		                                            : PERCH_ROUTE_TRUE;
		if (v == PERCH_ROUTE_UNDEFINED)
			local.undefined++;
		if (v != PERCH_ROUTE_TRUE)
			continue;
		int32_t *b = &best[r->sink];
		if (*b < 0 || r->priority < t->r[*b].priority)
			*b = (int32_t)i;
	}
	local.body = c.body.state;
	rctx_fini(&c);

	size_t hits = 0;
	for (size_t s = 0; s < t->n_sinks; s++) {
		if (best[s] < 0)
			continue;
		const troute *r = &t->r[best[s]];
		perch_route_hit h = {r->name, &r->route.sink, r->priority,
		                     r->ttl != 0 ? r->ttl : t->default_ttl};
		hits++;
		if (fn != NULL && !fn(arg, &h))
			break;
	}
	if (info != NULL)
		*info = local;
	return hits;
}
