/*
 * subs.h — the subscription tree: topic filters of every session, matched
 * against a topic name level by level.
 *
 * Each node is one topic level; a node's children are kept in a hash map by
 * level text, with the `+` and `#` children apart. Matching walks the name's
 * levels once, following exact, `+` and `#` branches, so its cost depends on
 * the topic's depth and the filters that can match, not on the number of
 * subscriptions. Names starting with `$` are not matched by a `+` or `#` in
 * the first level (MQTT-4.7.2-1).
 *
 * Subscribers are opaque pointers with a granted QoS; a subscriber that has
 * several matching filters is reported once per filter (the caller keeps
 * the highest QoS, see hub_subs_match). Loop thread only.
 */
#ifndef HUB_SUBS_H
#define HUB_SUBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/map.h"
#include "perch/slice.h"

typedef struct hub_subs_entry {
	void *who;   /* the subscriber (a session) */
	uint8_t qos; /* granted */
} hub_subs_entry;

typedef struct hub_subs_node {
	perch_map children;         /* level text -> hub_subs_node* */
	struct hub_subs_node *plus; /* "+" child */
	struct hub_subs_node *hash; /* "#" child */
	struct hub_subs_node *parent;
	char *level;          /* this node's level text (owned); NULL at root */
	hub_subs_entry *subs; /* nsubs entries, unordered */
	size_t nsubs, capsubs;
} hub_subs_node;

typedef struct hub_subs {
	hub_subs_node root;
	size_t count; /* (filter, subscriber) pairs */
} hub_subs;

/* hub_subs_add subscribes who to filter (a valid filter) with qos; if who
 * already has filter, only its QoS changes. *added (optional) says which.
 * Returns PERCH_OK or PERCH_ENOMEM (tree unchanged). */
PERCH_MUST_USE perch_err hub_subs_add(hub_subs *t, perch_slice filter, void *who, uint8_t qos,
                                      bool *added);

/* hub_subs_remove removes who's filter; returns true if it was there. */
bool hub_subs_remove(hub_subs *t, perch_slice filter, void *who);

/* hub_subs_match calls fn(who, qos, arg) for each (filter, subscriber) pair
 * whose filter matches the topic name. fn must not change the tree. */
void hub_subs_match(const hub_subs *t, perch_slice topic,
                    void (*fn)(void *who, uint8_t qos, void *arg), void *arg);

/* hub_subs_fini frees the tree (not the subscribers). */
void hub_subs_fini(hub_subs *t);

#endif /* HUB_SUBS_H */
