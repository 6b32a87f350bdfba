/*
 * twin.c — the rules of IoT Hub twin documents (twin.h): JSON merge patch
 * (RFC 7396) in both directions, the limits on names, depth and size, and
 * the version of each section. Pure: no I/O, no clock, one thread at a time.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "perch/alloc.h"
#include "twin.h"

perch_err hub_twin_init(hub_twin *t)
{
	memset(t, 0, sizeof *t);
	t->desired = json_object();
	t->reported = json_object();
	t->remote = json_object();
	t->desired_version = 1;
	t->reported_version = 1;
	return t->desired != NULL && t->reported != NULL && t->remote != NULL ? PERCH_OK
	                                                                      : PERCH_ENOMEM;
}

void hub_twin_fini(hub_twin *t)
{
	json_decref(t->desired);
	json_decref(t->reported);
	json_decref(t->remote);
	memset(t, 0, sizeof *t);
}

perch_err hub_twin_copy(hub_twin *dst, const hub_twin *src)
{
	memset(dst, 0, sizeof *dst);
	dst->desired = json_deep_copy(src->desired);
	dst->reported = json_deep_copy(src->reported);
	dst->remote = src->remote != NULL ? json_deep_copy(src->remote) : json_object();
	dst->desired_version = src->desired_version;
	dst->reported_version = src->reported_version;
	dst->remote_version = src->remote_version;
	return dst->desired != NULL && dst->reported != NULL && dst->remote != NULL ? PERCH_OK
	                                                                            : PERCH_ENOMEM;
}

perch_err hub_twin_layer(const json_t *base, const json_t *remote, json_t **out)
{
	json_t *v = json_object();
	perch_err err = v != NULL ? PERCH_OK : PERCH_ENOMEM;
	if (err == PERCH_OK && json_is_object(base))
		err = hub_twin_merge(v, base);
	if (err == PERCH_OK && json_is_object(remote))
		err = hub_twin_merge(v, remote);
	if (err != PERCH_OK) {
		json_decref(v);
		v = NULL;
	}
	*out = v;
	return err;
}

size_t hub_twin_size(const json_t *doc)
{
	return json_dumpb(doc, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* --- limits ------------------------------------------------------------- */

/* bad_name: why the property name k (n bytes) is refused, or NULL. Names
 * are UTF-8 (jansson checked); C0 and C1 controls are refused, as are the
 * characters IoT Hub keeps for itself. */
static const char *bad_name(const char *k, size_t n)
{
	if (n == 0)
		return "an empty property name";
	if (n > HUB_TWIN_MAX_KEY)
		return "a property name longer than 1024 bytes";
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)k[i];
		if (ch < 0x20 || ch == 0x7f ||
		    (ch == 0xc2 && i + 1 < n && (unsigned char)k[i + 1] >= 0x80 &&
		     (unsigned char)k[i + 1] <= 0x9f))
			return "a control character in a property name";
		if (ch == '.' || ch == '$' || ch == ' ')
			return "'.', '$' or a space in a property name";
	}
	return NULL;
}

typedef struct check_ctx {
	bool patch;
	char *why;
	size_t cap;
	perch_err err;
} check_ctx;

__attribute__((format(printf, 3, 4))) static bool fail(check_ctx *x, perch_err err, const char *fmt,
                                                       ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (x->cap > 0)
		vsnprintf(x->why, x->cap, fmt, ap);
	va_end(ap);
	x->err = err;
	return false;
}

static bool check_value(check_ctx *x, const json_t *v, const char *name, int level);

/* check_object: the members of o sit at depth level (1 for a section's own). */
static bool check_object(check_ctx *x, const json_t *o, int level)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		const char *bad = bad_name(k, strlen(k));
		if (bad != NULL)
			return fail(x, PERCH_EINVAL, "%s (\"%.64s\")", bad, k);
		if (json_is_null(v) && !x->patch)
			return fail(x, PERCH_EINVAL, "a null value (\"%.64s\") outside a patch", k);
		if (!check_value(x, v, k, level))
			return false;
	}
	return true;
}

static bool check_value(check_ctx *x, const json_t *v, const char *name, int level)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		if (level + 1 > HUB_TWIN_MAX_DEPTH)
			return fail(x, PERCH_EINVAL, "nested deeper than %d levels (at \"%.64s\")",
			            HUB_TWIN_MAX_DEPTH, name);
		return check_object(x, v, level + 1);
	case JSON_ARRAY: {
		if (level + 1 > HUB_TWIN_MAX_DEPTH)
			return fail(x, PERCH_EINVAL, "nested deeper than %d levels (at \"%.64s\")",
			            HUB_TWIN_MAX_DEPTH, name);
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
		{
			if (!check_value(x, e, name, level + 1))
				return false;
		}
		return true;
	}
	case JSON_STRING:
		if (json_string_length(v) > HUB_TWIN_MAX_STRING)
			return fail(x, PERCH_ETOOBIG,
			            "a string value longer than %d bytes (\"%.64s\")",
			            HUB_TWIN_MAX_STRING, name);
		return true;
	default: return true;
	}
}

perch_err hub_twin_check(const json_t *doc, bool patch, char *why, size_t cap)
{
	check_ctx x = {.patch = patch, .why = why, .cap = cap, .err = PERCH_OK};
	if (cap > 0)
		why[0] = '\0';
	if (!json_is_object(doc)) {
		fail(&x, PERCH_EINVAL, "not a JSON object");
		return x.err;
	}
	if (!check_object(&x, doc, 1))
		return x.err;
	if (!patch) {
		size_t n = hub_twin_size(doc);
		if (n > HUB_TWIN_MAX_SECTION) {
			fail(&x, PERCH_ETOOBIG, "%zu bytes; a section may have at most %d", n,
			     HUB_TWIN_MAX_SECTION);
			return x.err;
		}
	}
	return PERCH_OK;
}

/* --- merge patch ---------------------------------------------------------- */

perch_err hub_twin_merge(json_t *target, const json_t *patch)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)patch, k, v)
	{
		if (json_is_null(v)) {
			(void)json_object_del(target, k); /* absent is fine */
			continue;
		}
		if (json_is_object(v)) {
			json_t *cur = json_object_get(target, k);
			if (!json_is_object(cur)) {
				cur = json_object();
				if (cur == NULL || json_object_set_new(target, k, cur) != 0)
					return PERCH_ENOMEM;
			}
			perch_err err = hub_twin_merge(cur, v);
			if (err != PERCH_OK)
				return err;
			continue;
		}
		json_t *c = json_deep_copy(v);
		if (c == NULL || json_object_set_new(target, k, c) != 0)
			return PERCH_ENOMEM;
	}
	return PERCH_OK;
}

perch_err hub_twin_diff(const json_t *from, const json_t *to, json_t **out)
{
	*out = NULL;
	json_t *d = json_object();
	if (d == NULL)
		return PERCH_ENOMEM;
	const char *k;
	json_t *fv, *tv;
	json_object_foreach((json_t *)from, k, fv)
	{
		if (json_object_get(to, k) == NULL && json_object_set_new(d, k, json_null()) != 0)
			goto nomem;
	}
	json_object_foreach((json_t *)to, k, tv)
	{
		fv = json_object_get(from, k);
		json_t *add = NULL;
		if (json_is_object(fv) && json_is_object(tv)) {
			if (hub_twin_diff(fv, tv, &add) != PERCH_OK)
				goto nomem;
			if (json_object_size(add) == 0) {
				json_decref(add);
				continue;
			}
		} else if (fv == NULL || !json_equal(fv, tv)) {
			add = json_deep_copy(tv);
			if (add == NULL)
				goto nomem;
		} else {
			continue;
		}
		if (json_object_set_new(d, k, add) != 0)
			goto nomem;
	}
	*out = d;
	return PERCH_OK;
nomem:
	json_decref(d);
	return PERCH_ENOMEM;
}

/* --- sections ------------------------------------------------------------ */

perch_err hub_twin_report(hub_twin *t, const char *text, size_t len, char *why, size_t cap)
{
	if (cap > 0)
		why[0] = '\0';
	if (len > HUB_TWIN_MAX_PATCH) {
		snprintf(why, cap, "the patch is %zu bytes; at most %d are accepted", len,
		         HUB_TWIN_MAX_PATCH);
		return PERCH_ETOOBIG;
	}
	json_error_t je;
	json_t *p = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (p == NULL) {
		snprintf(why, cap, "not JSON: %s (column %d)", je.text, je.column);
		return PERCH_EINVAL;
	}
	perch_err err = hub_twin_check(p, true, why, cap);
	json_t *next = NULL;
	if (err == PERCH_OK) {
		next = json_deep_copy(t->reported);
		err = next != NULL ? hub_twin_merge(next, p) : PERCH_ENOMEM;
	}
	if (err == PERCH_OK)
		err = hub_twin_check(next, false, why, cap);
	if (err == PERCH_OK && t->reported_version == UINT64_MAX) {
		snprintf(why, cap, "the reported version is at its maximum");
		err = PERCH_ERANGE;
	}
	json_decref(p);
	if (err != PERCH_OK) {
		json_decref(next);
		return err;
	}
	json_decref(t->reported);
	t->reported = next;
	t->reported_version++;
	return PERCH_OK;
}

perch_err hub_twin_set_desired(hub_twin *t, const json_t *desired, json_t **patch, char *why,
                               size_t cap)
{
	if (patch != NULL)
		*patch = NULL;
	if (cap > 0)
		why[0] = '\0';
	if (!json_is_object(desired)) {
		snprintf(why, cap, "desired properties must be a JSON object");
		return PERCH_EINVAL;
	}
	/* Merging into an empty object copies and drops null values. */
	json_t *next = json_object();
	perch_err err = next != NULL ? hub_twin_merge(next, desired) : PERCH_ENOMEM;
	if (err == PERCH_OK)
		err = hub_twin_check(next, false, why, cap);
	if (err == PERCH_OK && json_equal(next, t->desired)) {
		json_decref(next);
		return PERCH_OK;
	}
	if (err == PERCH_OK && t->desired_version == UINT64_MAX) {
		snprintf(why, cap, "the desired version is at its maximum");
		err = PERCH_ERANGE;
	}
	json_t *d = NULL;
	if (err == PERCH_OK && patch != NULL) {
		err = hub_twin_diff(t->desired, next, &d);
		if (err == PERCH_OK &&
		    json_object_set_new(d, "$version",
		                        json_integer((json_int_t)t->desired_version + 1)) != 0)
			err = PERCH_ENOMEM;
	}
	if (err != PERCH_OK) {
		json_decref(d);
		json_decref(next);
		return err;
	}
	json_decref(t->desired);
	t->desired = next;
	t->desired_version++;
	if (patch != NULL)
		*patch = d;
	return PERCH_OK;
}

/* with_version: a new reference to a copy of section with "$version" set. */
static json_t *with_version(const json_t *section, uint64_t version)
{
	json_t *c = json_deep_copy(section);
	if (c != NULL &&
	    json_object_set_new(c, "$version", json_integer((json_int_t)version)) != 0) {
		json_decref(c);
		c = NULL;
	}
	return c;
}

perch_err hub_twin_document(const hub_twin *t, char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	json_t *d = with_version(t->desired, t->desired_version);
	json_t *r = with_version(t->reported, t->reported_version);
	json_t *doc = json_object();
	perch_err err = PERCH_ENOMEM;
	if (d == NULL || r == NULL || doc == NULL)
		goto out;
	if (json_object_set(doc, "desired", d) != 0 || json_object_set(doc, "reported", r) != 0)
		goto out;
	size_t n = json_dumpb(doc, NULL, 0, JSON_COMPACT);
	char *buf = n > 0 ? perch_malloc(n) : NULL;
	if (buf == NULL)
		goto out;
	*len = json_dumpb(doc, buf, n, JSON_COMPACT);
	*out = buf;
	err = PERCH_OK;
out:
	json_decref(d);
	json_decref(r);
	json_decref(doc);
	return err;
}
