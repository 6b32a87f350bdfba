/*
 * map.c — open-addressing hash map from byte strings to pointers (map.h).
 */
#include "perch/map.h"

#include <string.h>

#include "perch/alloc.h"

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static perch_map_slot *find(const perch_map *m, perch_slice key, uint64_t h)
{
	if (m->cap == 0)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		perch_map_slot *s = &m->slots[i];
		if (s->key == NULL)
			return NULL;
		if (s->hash == h && s->klen == key.len && memcmp(s->key, key.ptr, key.len) == 0)
			return s;
	}
}

void *perch_map_get(const perch_map *m, perch_slice key)
{
	perch_map_slot *s = find(m, key, hash_bytes(key.ptr, key.len));
	return s ? s->value : NULL;
}

static void insert_slot(perch_map_slot *slots, size_t cap, perch_map_slot in)
{
	size_t mask = cap - 1;
	size_t i = (size_t)in.hash & mask;
	while (slots[i].key != NULL)
		i = (i + 1) & mask;
	slots[i] = in;
}

static perch_err grow(perch_map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 16;
	perch_map_slot *slots = perch_calloc(cap, sizeof *slots);
	if (slots == NULL)
		return PERCH_ENOMEM;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key != NULL)
			insert_slot(slots, cap, m->slots[i]);
	perch_free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return PERCH_OK;
}

perch_err perch_map_put(perch_map *m, perch_slice key, void *value, void **old)
{
	uint64_t h = hash_bytes(key.ptr, key.len);
	perch_map_slot *s = find(m, key, h);
	if (s != NULL) {
		if (old != NULL)
			*old = s->value;
		s->value = value;
		return PERCH_OK;
	}
	if ((m->count + 1) * 4 > m->cap * 3) {
		perch_err err = grow(m);
		if (err != PERCH_OK)
			return err;
	}
	char *k = perch_memdup0(key.ptr, key.len);
	if (k == NULL)
		return PERCH_ENOMEM;
	insert_slot(m->slots, m->cap, (perch_map_slot){k, key.len, h, value});
	m->count++;
	if (old != NULL)
		*old = NULL;
	return PERCH_OK;
}

void *perch_map_del(perch_map *m, perch_slice key)
{
	perch_map_slot *s = find(m, key, hash_bytes(key.ptr, key.len));
	if (s == NULL)
		return NULL;
	void *value = s->value;
	perch_free(s->key);
	size_t mask = m->cap - 1;
	size_t hole = (size_t)(s - m->slots);
	/* Backward-shift: move later entries of the probe run into the hole. */
	for (size_t i = (hole + 1) & mask; m->slots[i].key != NULL; i = (i + 1) & mask) {
		size_t home = (size_t)m->slots[i].hash & mask;
		if (((i - home) & mask) >= ((i - hole) & mask)) {
			m->slots[hole] = m->slots[i];
			hole = i;
		}
	}
	m->slots[hole] = (perch_map_slot){0};
	m->count--;
	return value;
}

const perch_map_slot *perch_map_next(const perch_map *m, size_t *pos)
{
	while (*pos < m->cap) {
		const perch_map_slot *s = &m->slots[(*pos)++];
		if (s->key != NULL)
			return s;
	}
	return NULL;
}

void perch_map_fini(perch_map *m)
{
	for (size_t i = 0; i < m->cap; i++)
		perch_free(m->slots[i].key);
	perch_free(m->slots);
	*m = (perch_map){0};
}
