/*
 * report.c — what perch-agent says about its modules, in the shape of IoT
 * Edge's $edgeAgent reported properties (so that the hub can publish it as
 * the agent's twin unchanged): per module runtimeStatus, exitCode,
 * statusDescription, lastStartTimeUtc, lastExitTimeUtc, restartCount,
 * lastRestartTimeUtc and settings.image / imageHash / imageDigest; for the
 * deployment lastDesiredVersion and lastDesiredStatus {code, description}.
 * Also the table `perch-agent status` prints, and the time helpers. The
 * same report, without its "twin" member (the link's own state), is what
 * hublink.c publishes as the $edgeAgent twin's reported properties.
 *
 * systemModules.edgeHub.upstream is the hub's upstream link as perch-hub
 * writes it into its status file (hub.status_file, hub/src/status.c); the
 * twin gets only its slow-changing fields, so that queue counters do not
 * cause a twin patch a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "hublink.h"
#include "perch/alloc.h"

int64_t agent_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void agent_rfc3339(int64_t ms, char *buf, size_t cap)
{
	if (ms <= 0) {
		snprintf(buf, cap, "0001-01-01T00:00:00Z");
		return;
	}
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	char day[32];
	strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, cap, "%s.%03dZ", day, (int)(ms % 1000));
}

int64_t agent_parse_rfc3339(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	if (s == NULL)
		return 0;
	const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (rest == NULL || tm.tm_year < 71)
		return 0;
	int64_t ms = (int64_t)timegm(&tm) * 1000;
	if (*rest == '.') {
		int64_t frac = 0;
		int digits = 0;
		for (rest++; *rest >= '0' && *rest <= '9'; rest++) {
			if (digits++ < 3)
				frac = frac * 10 + (*rest - '0');
		}
		for (; digits < 3; digits++)
			frac *= 10;
		ms += frac;
	}
	return ms;
}

const char *agent_runtime_name(agent_runtime r)
{
	switch (r) {
	case AGENT_RT_RUNNING: return "running";
	case AGENT_RT_STOPPED: return "stopped";
	case AGENT_RT_FAILED: return "failed";
	case AGENT_RT_BACKOFF: return "backoff";
	case AGENT_RT_UNHEALTHY: return "unhealthy";
	case AGENT_RT_UNKNOWN: break;
	}
	return "unknown";
}

static json_t *time_json(int64_t ms)
{
	char buf[40];
	agent_rfc3339(ms, buf, sizeof buf);
	return json_string(buf);
}

json_t *agent_report_module(const agent_mod *m)
{
	json_t *o = json_object();
	json_t *settings = json_object();
	if (o == NULL || settings == NULL) {
		json_decref(o);
		json_decref(settings);
		return NULL;
	}
	const agent_module *d = m->m;
	json_object_set_new(settings, "image", json_string(d != NULL ? d->image : ""));
	json_object_set_new(settings, "imageHash", json_string(m->image_id));
	json_object_set_new(settings, "imageDigest", json_string(m->digest));
	json_object_set_new(o, "type", json_string("docker"));
	json_object_set_new(o, "settings", settings);
	if (d != NULL) {
		json_object_set_new(o, "version", json_string(d->version));
		json_object_set_new(o, "status", json_string(agent_module_status_name(d->status)));
		json_object_set_new(o, "restartPolicy",
		                    json_string(agent_restart_policy_name(d->restart_policy)));
	}
	json_object_set_new(o, "runtimeStatus", json_string(agent_runtime_name(m->rt)));
	json_object_set_new(o, "exitCode", json_integer(m->exit_code));
	json_object_set_new(o, "statusDescription", json_string(m->desc));
	json_object_set_new(o, "lastStartTimeUtc", time_json(m->start_ms));
	json_object_set_new(o, "lastExitTimeUtc", time_json(m->exit_ms));
	json_object_set_new(o, "restartCount", json_integer(m->restart_count));
	json_object_set_new(o, "lastRestartTimeUtc", time_json(m->restart_ms));
	if (m->next_try_ms > 0)
		json_object_set_new(o, "nextRestartTimeUtc", time_json(m->next_try_ms));
	return o;
}

static json_t *upstream_unknown(void)
{
	return json_pack("{s:s}", "state", "unknown");
}

/* read_small reads all of path into buf (cap bytes, NUL-terminated); false
 * when it cannot be read or does not fit. */
static bool read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return false;
	size_t used = 0;
	bool ok = true;
	for (;;) {
		if (used == cap - 1) {
			ok = false; /* too big for a status file */
			break;
		}
		ssize_t r = read(fd, buf + used, cap - 1 - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ok = false;
			break;
		}
		if (r == 0)
			break;
		used += (size_t)r;
	}
	close(fd);
	buf[used] = '\0';
	return ok;
}

/* age_forward adds late seconds to o's key when it is a positive number. */
static void age_forward(json_t *o, const char *key, double late)
{
	json_t *v = json_object_get(o, key);
	if (json_is_number(v) && json_number_value(v) > 0)
		json_object_set_new(o, key, json_real(json_number_value(v) + late));
}

json_t *agent_hub_upstream(const char *path, int64_t now_ms)
{
	if (path == NULL || path[0] == '\0')
		return upstream_unknown();
	char *buf = perch_malloc(AGENT_HUB_STATUS_MAX);
	if (buf == NULL)
		return NULL;
	json_t *doc = NULL;
	if (read_small(path, buf, AGENT_HUB_STATUS_MAX))
		doc = json_loads(buf, JSON_REJECT_DUPLICATES, NULL);
	perch_free(buf);
	json_t *up = json_object_get(doc, "upstream");
	int64_t written = agent_parse_rfc3339(json_string_value(json_object_get(doc, "time")));
	if (!json_is_object(up) || !json_is_boolean(json_object_get(up, "configured")) ||
	    written <= 0) {
		json_decref(doc);
		return upstream_unknown();
	}
	json_incref(up);
	json_decref(doc);
	if (json_is_false(json_object_get(up, "configured"))) {
		json_decref(up);
		return json_pack("{s:b, s:s}", "configured", 0, "state", "not configured");
	}
	const char *state = json_string_value(json_object_get(up, "state"));
	if (state == NULL) {
		json_decref(up);
		return upstream_unknown();
	}
	/* The hub writes only when something changes: bring the ages to now. */
	double late = now_ms > written ? (double)(now_ms - written) / 1000.0 : 0.0;
	int64_t since = agent_parse_rfc3339(json_string_value(json_object_get(up, "since")));
	if (strcmp(state, "up") != 0 && since > 0 && now_ms > since)
		json_object_set_new(up, "offlineSeconds",
		                    json_real((double)(now_ms - since) / 1000.0));
	age_forward(json_object_get(up, "queued"), "oldestAgeSeconds", late);
	const char *prio;
	json_t *q;
	json_object_foreach(json_object_get(up, "queues"), prio, q)
	{
		age_forward(q, "oldestAgeSeconds", late);
	}
	json_object_set_new(up, "statusTimeUtc", time_json(written));
	return up;
}

static json_t *hub_report(const agent *a)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	const char *rt = "stopped", *desc = "not started by this agent (--no-hub)";
	if (a->cfg.hub_enabled) {
		rt = a->hub.pid > 0 ? (a->hub.ready ? "running" : "unknown") : "backoff";
		desc = a->hub.pid > 0 ? (a->hub.ready ? "accepting connections" : "starting")
		                      : "restarting";
	}
	json_object_set_new(o, "type", json_string("perch-hub"));
	json_object_set_new(o, "runtimeStatus", json_string(rt));
	json_object_set_new(o, "statusDescription", json_string(desc));
	json_object_set_new(o, "lastStartTimeUtc", time_json(a->hub.start_ms));
	json_object_set_new(o, "restartCount", json_integer(a->hub.deaths));
	/* A hub that is not running says nothing now: its file is old news. */
	json_object_set_new(o, "upstream",
	                    a->hub.pid > 0 ? agent_hub_upstream(a->hub.status_path, agent_now_ms())
	                                   : upstream_unknown());
	return o;
}

json_t *agent_report(const agent *a)
{
	json_t *r = json_object(), *mods = json_object(), *sys = json_object(), *st = json_object();
	if (r == NULL || mods == NULL || sys == NULL || st == NULL) {
		json_decref(r);
		json_decref(mods);
		json_decref(sys);
		json_decref(st);
		return NULL;
	}
	json_object_set_new(st, "code", json_integer(a->desired_code));
	json_object_set_new(st, "description", json_string(a->desired_desc));
	json_object_set_new(r, "schemaVersion", json_string("1.1"));
	json_object_set_new(r, "lastDesiredVersion", json_integer(a->desired_version));
	json_object_set_new(r, "lastDesiredStatus", st);
	json_object_set_new(r, "dockerConnected", json_boolean(a->docker_up));
	json_object_set_new(sys, "edgeHub", hub_report(a));
	json_object_set_new(r, "systemModules", sys);
	for (size_t i = 0; i < a->n_mods; i++)
		json_object_set_new(mods, a->mods[i].name, agent_report_module(&a->mods[i]));
	json_object_set_new(r, "modules", mods);
	json_object_set_new(r, "workload", agent_workload_report(a));  /* a Perch extra */
	json_object_set_new(r, "twin", agent_hublink_status(a->link)); /* not published */
	return r;
}

json_t *agent_report_twin(void *ud)
{
	json_t *r = agent_report(ud);
	if (r == NULL)
		return NULL;
	json_object_del(r, "twin");
	/* Of the upstream link only what changes seldom: a counter that moves
	 * with every message would make a twin patch a second. */
	json_t *up = json_object_get(
	        json_object_get(json_object_get(r, "systemModules"), "edgeHub"), "upstream");
	const char *key;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(up, tmp, key, v)
	{
		if (strcmp(key, "configured") != 0 && strcmp(key, "state") != 0 &&
		    strcmp(key, "since") != 0 && strcmp(key, "reconnects") != 0)
			json_object_del(up, key);
	}
	return r;
}

static const char *str_of(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s != NULL ? s : "";
}

/* duration writes s seconds as "45s", "5m", "2h3m" or "3d4h". */
static void duration(double s, char *buf, size_t cap)
{
	/* Clamped before the conversion: a damaged file's 1e300 must not be
	 * undefined behaviour (~31 million years is "forever" enough). */
	long long n = s > 0 ? (s < 1e15 ? (long long)s : 999999999999999LL) : 0;
	if (n < 60)
		snprintf(buf, cap, "%llds", n);
	else if (n < 3600)
		snprintf(buf, cap, "%lldm", n / 60);
	else if (n < 86400)
		snprintf(buf, cap, "%lldh%lldm", n / 3600, n % 3600 / 60);
	else
		snprintf(buf, cap, "%lldd%lldh", n / 86400, n % 86400 / 3600);
}

/* upstream_line prints the report's upstream object (borrowed) as one line;
 * nothing when the report has none. */
static void upstream_line(const json_t *up, FILE *out)
{
	if (up == NULL)
		return;
	const char *state = str_of(up, "state");
	if (json_is_false(json_object_get(up, "configured"))) {
		fprintf(out, "upstream:   not configured\n");
		return;
	}
	if (strcmp(state, "up") != 0 && strcmp(state, "down") != 0) {
		fprintf(out, "upstream:   unknown (no status from the hub)\n");
		return;
	}
	const json_t *q = json_object_get(up, "queued");
	long long n = (long long)json_integer_value(json_object_get(q, "messages"));
	char offline[48] = "", oldest[48] = "";
	if (strcmp(state, "down") == 0) {
		char d[24];
		duration(json_number_value(json_object_get(up, "offlineSeconds")), d, sizeof d);
		snprintf(offline, sizeof offline, " (offline %s)", d);
	}
	if (n > 0) {
		char d[24];
		duration(json_number_value(json_object_get(q, "oldestAgeSeconds")), d, sizeof d);
		snprintf(oldest, sizeof oldest, " (oldest %s)", d);
	}
	const char *since = str_of(up, "since");
	fprintf(out, "upstream:   %s%s%s%s, %lld queued%s\n", state, since[0] ? " since " : "",
	        since, offline, n, oldest);
}

void agent_report_table(const json_t *report, FILE *out)
{
	const json_t *st = json_object_get(report, "lastDesiredStatus");
	fprintf(out, "deployment: version %lld, status %lld %s\n",
	        (long long)json_integer_value(json_object_get(report, "lastDesiredVersion")),
	        (long long)json_integer_value(json_object_get(st, "code")),
	        str_of(st, "description"));
	const json_t *hub = json_object_get(json_object_get(report, "systemModules"), "edgeHub");
	fprintf(out, "hub:        %s (%s)\n", str_of(hub, "runtimeStatus"),
	        str_of(hub, "statusDescription"));
	upstream_line(json_object_get(hub, "upstream"), out);
	const json_t *twin = json_object_get(report, "twin");
	if (twin != NULL) {
		const char *err = str_of(twin, "lastError");
		if (json_is_true(json_object_get(twin, "inSync")))
			fprintf(out, "twin:       in sync (reported version %lld)\n",
			        (long long)json_integer_value(
			                json_object_get(twin, "reportedVersion")));
		else if (json_is_true(json_object_get(twin, "connected")))
			fprintf(out, "twin:       updating (reported version %lld)%s%s\n",
			        (long long)json_integer_value(
			                json_object_get(twin, "reportedVersion")),
			        err[0] != '\0' ? ": " : "", err);
		else
			fprintf(out, "twin:       not connected%s%s\n", err[0] != '\0' ? ": " : "",
			        err);
	}
	fprintf(out, "%-20s %-10s %5s %8s  %-24s %s\n", "MODULE", "STATUS", "EXIT", "RESTARTS",
	        "LAST START (UTC)", "DESCRIPTION");
	const char *name;
	const json_t *m;
	json_object_foreach((json_t *)json_object_get(report, "modules"), name, m)
	{
		fprintf(out, "%-20s %-10s %5lld %8lld  %-24s %s\n", name,
		        str_of(m, "runtimeStatus"),
		        (long long)json_integer_value(json_object_get(m, "exitCode")),
		        (long long)json_integer_value(json_object_get(m, "restartCount")),
		        str_of(m, "lastStartTimeUtc"), str_of(m, "statusDescription"));
	}
}
