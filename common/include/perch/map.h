/*
 * map.h — a hash map from byte-string keys to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion, FNV-1a
 * hashing, growth at 3/4 load. Keys are copied into the map (it owns them);
 * values are the caller's pointers (the map never frees them). Used for
 * client ids -> sessions, topics -> retained messages, names -> queues.
 * Not thread-safe; one owner thread.
 */
#ifndef PERCH_MAP_H
#define PERCH_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/slice.h"

typedef struct perch_map_slot {
	char *key; /* owned copy, NUL-terminated; NULL: empty slot */
	size_t klen;
	uint64_t hash;
	void *value;
} perch_map_slot;

typedef struct perch_map {
	perch_map_slot *slots; /* cap slots, cap a power of two (or 0) */
	size_t cap;
	size_t count;
} perch_map;

/* perch_map_get returns the value for key, or NULL. */
void *perch_map_get(const perch_map *m, perch_slice key);

/* perch_map_put sets key to value (replacing: *old gets the previous value,
 * or NULL; old may be NULL). Returns PERCH_OK or PERCH_ENOMEM (map unchanged). */
PERCH_MUST_USE perch_err perch_map_put(perch_map *m, perch_slice key, void *value, void **old);

/* perch_map_del removes key and returns its value, or NULL if absent. */
void *perch_map_del(perch_map *m, perch_slice key);

/* perch_map_next iterates: start with *pos = 0; returns the next occupied
 * slot or NULL at the end. Do not put or delete while iterating. */
const perch_map_slot *perch_map_next(const perch_map *m, size_t *pos);

/* perch_map_fini frees the keys and the table (not the values). */
void perch_map_fini(perch_map *m);

#endif /* PERCH_MAP_H */
