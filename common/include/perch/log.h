/*
 * log.h — leveled logging to stderr, in a form journald understands.
 *
 * Each line is "<P>module: message" when stderr is a journald stream (the
 * "<P>" syslog priority prefix sets the journal priority), and
 * "2026-11-27T10:00:00.123Z LEVEL module: message" otherwise. Lines are
 * written with one write(2), so lines from threads never interleave.
 *
 * Secrets never reach the log: whatever the caller formats, the values of
 * SAS signatures ("sig="), shared access keys ("SharedAccessKey=",
 * "SharedAccessSignature ..."), "password" and "X-Registry-Auth" fields are
 * replaced by "<redacted>" before the line is written. That is a safety net,
 * not a licence: never pass a key or token to these functions.
 */
#ifndef PERCH_LOG_H
#define PERCH_LOG_H

#include <stddef.h>

#include "perch/err.h"

typedef enum perch_log_level {
	PERCH_LOG_ERROR = 3, /* syslog priorities, so they map one to one */
	PERCH_LOG_WARN = 4,
	PERCH_LOG_NOTICE = 5,
	PERCH_LOG_INFO = 6,
	PERCH_LOG_DEBUG = 7,
} perch_log_level;

/* perch_log_set_level sets the most verbose level written (default INFO). */
void perch_log_set_level(perch_log_level level);
perch_log_level perch_log_get_level(void);

/* perch_log_parse_level reads "error", "warn", "notice", "info" or "debug".
 * Returns PERCH_EINVAL for anything else. */
PERCH_MUST_USE perch_err perch_log_parse_level(const char *name, perch_log_level *level);

/* perch_log writes one line at level for module (e.g. "hub.session"), if the
 * level is enabled. A trailing newline in fmt is not needed. Any thread. */
__attribute__((format(printf, 3, 4))) void perch_log(perch_log_level level, const char *module,
                                                     const char *fmt, ...);

/* perch_log_redact masks secrets in the NUL-terminated line in place (the
 * masked line is never longer). Exposed for tests and for callers that build
 * text for other sinks (status reports). */
void perch_log_redact(char *line, size_t cap);

#define PERCH_ERROR(mod, ...)  perch_log(PERCH_LOG_ERROR, mod, __VA_ARGS__)
#define PERCH_WARN(mod, ...)   perch_log(PERCH_LOG_WARN, mod, __VA_ARGS__)
#define PERCH_NOTICE(mod, ...) perch_log(PERCH_LOG_NOTICE, mod, __VA_ARGS__)
#define PERCH_INFO(mod, ...)   perch_log(PERCH_LOG_INFO, mod, __VA_ARGS__)
#define PERCH_DEBUG(mod, ...)  perch_log(PERCH_LOG_DEBUG, mod, __VA_ARGS__)

#endif /* PERCH_LOG_H */
