/*
 * topic.c — validation of MQTT topic names and filters, and matching.
 *
 * Matching walks filter and name level by level, once, without allocating:
 * the router calls it for every (subscription, message) pair it cannot rule
 * out by other means, so it stays a tight loop over bytes.
 */
#include "perch/topic.h"

#include <string.h>

#include "perch/utf8.h"

/* check_common applies the rules shared by names and filters. */
static perch_topic_status check_common(perch_slice s)
{
	if (s.len == 0)
		return PERCH_TOPIC_EMPTY;
	if (s.len > PERCH_TOPIC_MAX_LEN)
		return PERCH_TOPIC_TOO_LONG;
	if (perch_utf8_check(s.ptr, s.len) != PERCH_UTF8_OK)
		return PERCH_TOPIC_BAD_UTF8;
	return PERCH_TOPIC_OK;
}

perch_topic_status perch_topic_check_name(perch_slice name)
{
	perch_topic_status st = check_common(name);
	if (st != PERCH_TOPIC_OK)
		return st;
	if (memchr(name.ptr, '+', name.len) != NULL || memchr(name.ptr, '#', name.len) != NULL)
		return PERCH_TOPIC_WILDCARD;
	return PERCH_TOPIC_OK;
}

perch_topic_status perch_topic_check_filter(perch_slice filter)
{
	perch_topic_status st = check_common(filter);
	if (st != PERCH_TOPIC_OK)
		return st;
	const char *p = filter.ptr;
	size_t n = filter.len;
	for (size_t i = 0; i < n; i++) {
		bool level_start = i == 0 || p[i - 1] == '/';
		bool level_end = i + 1 == n || p[i + 1] == '/';
		if (p[i] == '+') {
			if (!level_start || !level_end)
				return PERCH_TOPIC_BAD_PLUS;
		} else if (p[i] == '#') {
			if (!level_start || i + 1 != n)
				return PERCH_TOPIC_BAD_HASH;
		}
	}
	return PERCH_TOPIC_OK;
}

bool perch_topic_has_wildcard(perch_slice filter)
{
	return filter.len > 0 && (memchr(filter.ptr, '+', filter.len) != NULL ||
	                          memchr(filter.ptr, '#', filter.len) != NULL);
}

bool perch_topic_match(perch_slice filter, perch_slice name)
{
	const char *f = filter.ptr, *n = name.ptr;
	size_t fl = filter.len, nl = name.len, i = 0, j = 0;
	if (fl == 0)
		return false;
	if (nl > 0 && n[0] == '$' && (f[0] == '+' || f[0] == '#'))
		return false;
	for (;;) {
		/* i and j are at the start of a level of filter and name */
		if (i < fl && f[i] == '#')
			return true;
		if (i < fl && f[i] == '+') {
			i++;
			while (j < nl && n[j] != '/')
				j++;
		} else {
			while (i < fl && f[i] != '/') {
				if (j >= nl || n[j] != f[i])
					return false;
				i++;
				j++;
			}
			if (j < nl && n[j] != '/')
				return false;
		}
		if (i == fl || j == nl) {
			if (i == fl && j == nl)
				return true;
			/* the name has ended: only a trailing "/#" still matches */
			return j == nl && fl - i == 2 && f[i] == '/' && f[i + 1] == '#';
		}
		i++; /* both at '/' */
		j++;
	}
}

const char *perch_topic_status_str(perch_topic_status st)
{
	static const char *const text[PERCH_TOPIC_STATUS_COUNT] = {
	        [PERCH_TOPIC_OK] = "valid topic",
	        [PERCH_TOPIC_EMPTY] = "empty topic",
	        [PERCH_TOPIC_TOO_LONG] = "topic longer than 65535 bytes",
	        [PERCH_TOPIC_BAD_UTF8] = "topic is not valid UTF-8",
	        [PERCH_TOPIC_WILDCARD] = "topic name contains a wildcard",
	        [PERCH_TOPIC_BAD_PLUS] = "'+' does not occupy a whole level",
	        [PERCH_TOPIC_BAD_HASH] = "'#' is not the whole last level",
	};
	if ((unsigned)st >= PERCH_TOPIC_STATUS_COUNT)
		return "unknown topic status";
	return text[st];
}
