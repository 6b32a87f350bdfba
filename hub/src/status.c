/*
 * status.c — perch-hub's status file (status.h, docs/hub.md
 * "hub.status_file"): the upstream link's state and numbers as JSON,
 * written atomically when the link goes up or down and otherwise at most
 * every 5 s when something changed. perch-agent reads it into its report.
 */
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "perch/log.h"
#include "store.h"

#define LOG_MOD "hub.status"

/* One hub per process: the writer's state is file-local. */
static struct {
	bool written;          /* at least one write succeeded or failed */
	bool up;               /* the state last written */
	bool failing;          /* the last write failed (said once) */
	int64_t last_write_ms; /* monotonic */
	int64_t last_check_ms; /* monotonic */
	/* What was last written, rendered at time 0: without the time and the
	 * ages derived from it, so it differs only when a number does. */
	char last[HUB_STATUS_MAX_BYTES];
} st;

/* put appends to out at *used; sets *used past cap on overflow. */
__attribute__((format(printf, 4, 5))) static void put(char *out, size_t cap, size_t *used,
                                                      const char *fmt, ...)
{
	if (*used >= cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out + *used, cap - *used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *used)
		*used = cap;
	else
		*used += (size_t)n;
}

/* iso writes Unix ms as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
static void iso(int64_t ms, char *buf, size_t cap)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	char day[32];
	strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, cap, "%s.%03dZ", day, (int)(ms % 1000));
}

static double age_s(int64_t now_ms, int64_t then_ms)
{
	return then_ms > 0 && now_ms > then_ms ? (double)(now_ms - then_ms) / 1000.0 : 0.0;
}

size_t hub_status_json(const hub_upstream_stats *u, uint64_t dropped_oldest, int64_t now_ms,
                       char *out, size_t cap)
{
	char t[40], since[40];
	size_t n = 0;
	iso(now_ms, t, sizeof t);
	put(out, cap, &n, "{\"time\":\"%s\",\"upstream\":{\"configured\":%s", t,
	    u->configured ? "true" : "false");
	if (u->configured) {
		int64_t since_ms = u->up ? u->up_at_ms : u->down_since_ms;
		iso(since_ms, since, sizeof since);
		uint64_t msgs = 0, bytes = 0, refused = 0;
		for (int c = 1; c <= 5; c++)
			refused += u->refused[c];
		int64_t oldest = 0;
		for (int p = 0; p < HUB_UPSTREAM_PRIOS; p++) {
			msgs += u->depth[p];
			bytes += u->bytes[p];
			if (u->oldest_ms[p] > 0 && (oldest == 0 || u->oldest_ms[p] < oldest))
				oldest = u->oldest_ms[p];
		}
		put(out, cap, &n, ",\"state\":\"%s\"", u->up ? "up" : "down");
		if (since_ms > 0)
			put(out, cap, &n, ",\"since\":\"%s\"", since);
		put(out, cap, &n,
		    ",\"offlineSeconds\":%.3f,\"reconnects\":%llu,"
		    "\"forwarded\":%llu,\"resent\":%llu,\"inflight\":%llu,"
		    "\"dropped\":{\"expired\":%llu,\"tooBig\":%llu,\"oldest\":%llu},"
		    "\"refused\":%llu,\"firstForwardSeconds\":%.3f,"
		    "\"queued\":{\"messages\":%llu,\"bytes\":%llu,\"oldestAgeSeconds\":%.3f},"
		    "\"queues\":{",
		    u->up ? 0.0 : age_s(now_ms, u->down_since_ms),
		    (unsigned long long)u->reconnects, (unsigned long long)u->forwarded,
		    (unsigned long long)u->resent, (unsigned long long)u->inflight,
		    (unsigned long long)u->expired, (unsigned long long)u->dropped_too_big,
		    (unsigned long long)dropped_oldest, (unsigned long long)refused,
		    u->first_forward_ms < 0 ? -1.0 : (double)u->first_forward_ms / 1000.0,
		    (unsigned long long)msgs, (unsigned long long)bytes, age_s(now_ms, oldest));
		const char *sep = "";
		for (int p = 0; p < HUB_UPSTREAM_PRIOS; p++) {
			if (u->depth[p] == 0)
				continue;
			put(out, cap, &n,
			    "%s\"%d\":{\"messages\":%llu,\"bytes\":%llu,\"oldestAgeSeconds\":%.3f}",
			    sep, p, (unsigned long long)u->depth[p],
			    (unsigned long long)u->bytes[p], age_s(now_ms, u->oldest_ms[p]));
			sep = ",";
		}
		put(out, cap, &n, "}");
	}
	put(out, cap, &n, "}}\n");
	return n < cap ? n : 0;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* write_file replaces path with doc: path.tmp, then rename. */
static perch_err write_file(const char *path, const char *doc, size_t len, const char **what)
{
	char tmp[1100];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		*what = "path too long";
		return PERCH_ETOOBIG;
	}
	*what = "open";
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return perch_err_from_errno(errno);
	(void)fchmod(fd, 0644);
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, doc + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			int e = errno;
			close(fd);
			unlink(tmp);
			*what = "write";
			return perch_err_from_errno(e);
		}
		off += (size_t)w;
	}
	if (close(fd) != 0) {
		int e = errno;
		unlink(tmp);
		*what = "close";
		return perch_err_from_errno(e);
	}
	if (rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		*what = "rename";
		return perch_err_from_errno(e);
	}
	return PERCH_OK;
}

void hub_status_tick(hub *h)
{
	const char *path = h->cfg.status_file;
	if (path == NULL || path[0] == '\0')
		return;
	int64_t now = hub_now_ms();
	/* The stats walk the ten queues: look ten times a second at most. */
	if (st.written && now - st.last_check_ms < 100)
		return;
	st.last_check_ms = now;
	hub_upstream_stats u;
	hub_upstream_get_stats(h, &u);
	hub_store_stats ss = {0};
	if (hub_broker_store(h) != NULL)
		hub_store_get_stats(hub_broker_store(h), &ss);
	char key[HUB_STATUS_MAX_BYTES];
	if (hub_status_json(&u, ss.drop_oldest, 0, key, sizeof key) == 0)
		return; /* cannot happen: ten queues fit */
	bool state_changed = !st.written || u.up != st.up;
	if (!state_changed && ((!st.failing && strcmp(key, st.last) == 0) ||
	                       now - st.last_write_ms < HUB_STATUS_MIN_INTERVAL_MS))
		return;
	char doc[HUB_STATUS_MAX_BYTES];
	size_t len = hub_status_json(&u, ss.drop_oldest, wall_ms(), doc, sizeof doc);
	st.written = true;
	st.up = u.up;
	memcpy(st.last, key, sizeof key);
	st.last_write_ms = now;
	if (len == 0)
		return;
	const char *what = "";
	perch_err err = write_file(path, doc, len, &what);
	if (err != PERCH_OK && !st.failing)
		PERCH_WARN(LOG_MOD, "cannot write the status file %s (%s): %s", path, what,
		           perch_strerror(err));
	else if (err == PERCH_OK && st.failing)
		PERCH_NOTICE(LOG_MOD, "status file %s written again", path);
	st.failing = err != PERCH_OK;
}
