/*
 * log.c — leveled, journald-friendly logging with secret redaction.
 */
#include "perch/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 2048

static atomic_int cur_level = PERCH_LOG_INFO;

void perch_log_set_level(perch_log_level level)
{
	atomic_store(&cur_level, (int)level);
}

perch_log_level perch_log_get_level(void)
{
	return (perch_log_level)atomic_load(&cur_level);
}

static const struct {
	const char *name;
	perch_log_level level;
} level_names[] = {
        {"error", PERCH_LOG_ERROR},   {"warn", PERCH_LOG_WARN}, {"warning", PERCH_LOG_WARN},
        {"notice", PERCH_LOG_NOTICE}, {"info", PERCH_LOG_INFO}, {"debug", PERCH_LOG_DEBUG},
};

perch_err perch_log_parse_level(const char *name, perch_log_level *level)
{
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
		if (strcasecmp(name, level_names[i].name) == 0) {
			*level = level_names[i].level;
			return PERCH_OK;
		}
	}
	return PERCH_EINVAL;
}

static const char *level_tag(perch_log_level level)
{
	switch (level) {
	case PERCH_LOG_ERROR: return "ERROR";
	case PERCH_LOG_WARN: return "WARN";
	case PERCH_LOG_NOTICE: return "NOTICE";
	case PERCH_LOG_INFO: return "INFO";
	case PERCH_LOG_DEBUG: return "DEBUG";
	}
	return "?";
}

/*
 * Markers after which a secret value follows. The value runs to the next
 * delimiter: '&', ';', whitespace, quote, comma or end of line; for
 * "SharedAccessSignature " the rest of the token (up to whitespace or quote).
 */
static const struct {
	const char *marker;
	const char *stops; /* characters that end the value */
} secret_markers[] = {
        {"SharedAccessSignature ", " \t\"',"},
        {"sig=", "&; \t\"',"},
        {"SharedAccessKey=", "&; \t\"',"},
        {"password=", "&; \t\"',"},
        {"\"password\":", ",}"},
        {"\"password\": ", ",}"},
        {"X-Registry-Auth:", "\r\n"},
        {"Authorization:", "\r\n"},
};

static const char REDACTED[] = "<redacted>";

void perch_log_redact(char *line, size_t cap)
{
	(void)cap; /* the result is never longer than a value it replaces + 10 */
	for (size_t m = 0; m < sizeof secret_markers / sizeof secret_markers[0]; m++) {
		const char *marker = secret_markers[m].marker;
		size_t mlen = strlen(marker);
		char *p = line;
		while ((p = strcasestr(p, marker)) != NULL) {
			char *val = p + mlen;
			size_t vlen = strcspn(val, secret_markers[m].stops);
			if (vlen == 0 ||
			    (vlen == sizeof REDACTED - 1 && memcmp(val, REDACTED, vlen) == 0)) {
				p = val;
				continue;
			}
			size_t rest = strlen(val + vlen);
			if (vlen >= sizeof REDACTED - 1) {
				memcpy(val, REDACTED, sizeof REDACTED - 1);
				memmove(val + sizeof REDACTED - 1, val + vlen, rest + 1);
			} else {
				/* Shorter than the mask: overwrite with '*' to stay in place. */
				memset(val, '*', vlen);
			}
			p = val + (vlen >= sizeof REDACTED - 1 ? sizeof REDACTED - 1 : vlen);
		}
	}
}

void perch_log(perch_log_level level, const char *module, const char *fmt, ...)
{
	if ((int)level > atomic_load(&cur_level))
		return;
	char line[LINE_MAX_BYTES];
	size_t n = 0;
	/* journald sets JOURNAL_STREAM for the services whose stderr it reads. */
	bool journald = getenv("JOURNAL_STREAM") != NULL;
	int w;
	if (journald) {
		w = snprintf(line, sizeof line, "<%d>%s: ", (int)level, module ? module : "perch");
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		w = snprintf(line, sizeof line,
		             "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
		             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		             ts.tv_nsec / 1000000, level_tag(level), module ? module : "perch");
	}
	if (w < 0)
		return;
	n = (size_t)w < sizeof line ? (size_t)w : sizeof line - 1;
	va_list ap;
	va_start(ap, fmt);
	w = vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (w > 0)
		n += (size_t)w < sizeof line - n ? (size_t)w : sizeof line - n - 1;
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	/* One line per call: control characters (a newline in a peer's string)
	 * become '?', so nobody can forge a log line. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c < 0x20 && c != '\t')
			line[i] = '?';
	}
	line[n] = '\0';
	perch_log_redact(line, sizeof line);
	n = strlen(line);
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	ssize_t r = write(STDERR_FILENO, line, n);
	(void)r;
}
