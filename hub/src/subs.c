/*
 * subs.c — the subscription tree (see subs.h).
 */
#include "subs.h"

#include <string.h>

#include "perch/alloc.h"

/* next_level splits the first level off *rest; returns false at the end. */
static bool next_level(perch_slice *rest, perch_slice *level, bool *more)
{
	if (rest->ptr == NULL)
		return false;
	const char *slash = memchr(rest->ptr, '/', rest->len);
	if (slash == NULL) {
		*level = *rest;
		rest->ptr = NULL;
		rest->len = 0;
		*more = false;
	} else {
		level->ptr = rest->ptr;
		level->len = (size_t)(slash - rest->ptr);
		rest->len -= level->len + 1;
		rest->ptr = slash + 1;
		*more = true;
	}
	return true;
}

static hub_subs_node *child_get(hub_subs_node *n, perch_slice level)
{
	if (level.len == 1 && level.ptr[0] == '+')
		return n->plus;
	if (level.len == 1 && level.ptr[0] == '#')
		return n->hash;
	return perch_map_get(&n->children, level);
}

static hub_subs_node *child_make(hub_subs_node *n, perch_slice level)
{
	hub_subs_node *c = child_get(n, level);
	if (c != NULL)
		return c;
	c = perch_calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->level = perch_memdup0(level.ptr, level.len);
	if (c->level == NULL) {
		perch_free(c);
		return NULL;
	}
	c->parent = n;
	if (level.len == 1 && level.ptr[0] == '+') {
		n->plus = c;
	} else if (level.len == 1 && level.ptr[0] == '#') {
		n->hash = c;
	} else if (perch_map_put(&n->children, level, c, NULL) != PERCH_OK) {
		perch_free(c->level);
		perch_free(c);
		return NULL;
	}
	return c;
}

static bool node_empty(const hub_subs_node *n)
{
	return n->nsubs == 0 && n->children.count == 0 && n->plus == NULL && n->hash == NULL;
}

/* prune frees n and its empty ancestors (never the root). */
static void prune(hub_subs_node *n)
{
	while (n->parent != NULL && node_empty(n)) {
		hub_subs_node *p = n->parent;
		if (p->plus == n)
			p->plus = NULL;
		else if (p->hash == n)
			p->hash = NULL;
		else
			perch_map_del(&p->children, perch_slice_cstr(n->level));
		perch_map_fini(&n->children);
		perch_free(n->subs);
		perch_free(n->level);
		perch_free(n);
		n = p;
	}
}

perch_err hub_subs_add(hub_subs *t, perch_slice filter, void *who, uint8_t qos, bool *added)
{
	hub_subs_node *n = &t->root;
	perch_slice rest = filter, level;
	bool more;
	while (next_level(&rest, &level, &more)) {
		hub_subs_node *c = child_make(n, level);
		if (c == NULL) {
			prune(n);
			return PERCH_ENOMEM;
		}
		n = c;
		if (!more)
			break;
	}
	for (size_t i = 0; i < n->nsubs; i++) {
		if (n->subs[i].who == who) {
			n->subs[i].qos = qos;
			if (added)
				*added = false;
			return PERCH_OK;
		}
	}
	hub_subs_entry *s = perch_grow(n->subs, n->nsubs, &n->capsubs, sizeof *s, 2);
	if (s == NULL) {
		prune(n);
		return PERCH_ENOMEM;
	}
	n->subs = s;
	n->subs[n->nsubs++] = (hub_subs_entry){who, qos};
	t->count++;
	if (added)
		*added = true;
	return PERCH_OK;
}

bool hub_subs_remove(hub_subs *t, perch_slice filter, void *who)
{
	hub_subs_node *n = &t->root;
	perch_slice rest = filter, level;
	bool more;
	while (next_level(&rest, &level, &more)) {
		n = child_get(n, level);
		if (n == NULL)
			return false;
		if (!more)
			break;
	}
	for (size_t i = 0; i < n->nsubs; i++) {
		if (n->subs[i].who == who) {
			n->subs[i] = n->subs[--n->nsubs];
			t->count--;
			prune(n);
			return true;
		}
	}
	return false;
}

static void report(const hub_subs_node *n, void (*fn)(void *, uint8_t, void *), void *arg)
{
	for (size_t i = 0; i < n->nsubs; i++)
		fn(n->subs[i].who, n->subs[i].qos, arg);
}

static void match(const hub_subs_node *n, perch_slice rest, bool first,
                  void (*fn)(void *, uint8_t, void *), void *arg)
{
	perch_slice level;
	bool more;
	if (!next_level(&rest, &level, &more)) {
		report(n, fn, arg);
		/* "a/#" also matches "a" */
		if (n->hash != NULL)
			report(n->hash, fn, arg);
		return;
	}
	bool dollar = first && level.len > 0 && level.ptr[0] == '$';
	if (n->hash != NULL && !dollar)
		report(n->hash, fn, arg);
	perch_slice after = more ? rest : (perch_slice){NULL, 0};
	if (n->plus != NULL && !dollar)
		match(n->plus, after, false, fn, arg);
	const hub_subs_node *c = perch_map_get(&n->children, level);
	if (c != NULL)
		match(c, after, false, fn, arg);
}

void hub_subs_match(const hub_subs *t, perch_slice topic,
                    void (*fn)(void *who, uint8_t qos, void *arg), void *arg)
{
	match(&t->root, topic, true, fn, arg);
}

static void free_node(hub_subs_node *n)
{
	size_t pos = 0;
	const perch_map_slot *s;
	while ((s = perch_map_next(&n->children, &pos)) != NULL)
		free_node(s->value);
	if (n->plus)
		free_node(n->plus);
	if (n->hash)
		free_node(n->hash);
	perch_map_fini(&n->children);
	perch_free(n->subs);
	perch_free(n->level);
	if (n->parent != NULL)
		perch_free(n);
}

void hub_subs_fini(hub_subs *t)
{
	free_node(&t->root);
	memset(t, 0, sizeof *t);
}
