/*
 * topic.h — the MQTT 3.1.1 topic grammar: topic names, topic filters, and
 * matching a filter against a name (section 4.7).
 *
 * A topic name (what a PUBLISH carries) is 1..65535 bytes of valid MQTT UTF-8
 * with no wildcard. A topic filter (what a SUBSCRIBE carries) may use '+' as
 * a whole level and '#' as the whole last level. All functions are pure: no
 * allocation, no I/O, no state; safe from any thread.
 */
#ifndef PERCH_TOPIC_H
#define PERCH_TOPIC_H

#include <stdbool.h>

#include "perch/slice.h"

#define PERCH_TOPIC_MAX_LEN 65535 /* bytes; the MQTT string length limit */

/* What is wrong with a topic name or filter, or PERCH_TOPIC_OK. */
typedef enum perch_topic_status {
	PERCH_TOPIC_OK = 0,
	PERCH_TOPIC_EMPTY,    /* zero length */
	PERCH_TOPIC_TOO_LONG, /* longer than PERCH_TOPIC_MAX_LEN */
	PERCH_TOPIC_BAD_UTF8, /* not valid MQTT UTF-8 (see utf8.h) */
	PERCH_TOPIC_WILDCARD, /* a topic name containing '+' or '#' */
	PERCH_TOPIC_BAD_PLUS, /* a filter with '+' not alone in its level */
	PERCH_TOPIC_BAD_HASH, /* a filter with '#' not alone in its last level */
	PERCH_TOPIC_STATUS_COUNT
} perch_topic_status;

/* perch_topic_check_name validates a topic name. The caller keeps name. */
perch_topic_status perch_topic_check_name(perch_slice name);

/* perch_topic_check_filter validates a topic filter. The caller keeps filter. */
perch_topic_status perch_topic_check_filter(perch_slice filter);

/* perch_topic_has_wildcard tells whether a (valid) filter contains '+' or
 * '#', i.e. whether it can match more than one name. */
bool perch_topic_has_wildcard(perch_slice filter);

/*
 * perch_topic_match tells whether the topic filter matches the topic name,
 * both assumed valid (check them first; on invalid input the answer is
 * unspecified but the call is memory-safe). '+' matches exactly one level
 * (possibly empty), '#' any number of trailing levels including none, so that
 * "sport/#" matches "sport". A filter starting with '+' or '#' does not match
 * a name starting with '$' (MQTT-4.7.2-1). The caller keeps both slices.
 */
bool perch_topic_match(perch_slice filter, perch_slice name);

/* perch_topic_status_str returns a short static text for st (never NULL). */
const char *perch_topic_status_str(perch_topic_status st);

#endif /* PERCH_TOPIC_H */
