/*
 * metrics.c — perch-hub's counters and their Prometheus text rendering
 * (served at /metrics by listen.c).
 */
#include "metrics.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "perch/alloc.h"
#include "store.h"
#include "upstream.h"

void hub_metrics_conn_opened(hub_metrics *m)
{
	m->clients_connected++;
	m->connections_total++;
}

void hub_metrics_conn_closed(hub_metrics *m)
{
	if (m->clients_connected > 0)
		m->clients_connected--;
}

void hub_metrics_rx_bytes(hub_metrics *m, size_t n)
{
	m->bytes_in += n;
}

void hub_metrics_tx_bytes(hub_metrics *m, size_t n)
{
	m->bytes_out += n;
}

void hub_metrics_msg_in(hub_metrics *m, int qos)
{
	m->msgs_in[qos ? 1 : 0]++;
}

void hub_metrics_msg_out(hub_metrics *m, int qos)
{
	m->msgs_out[qos ? 1 : 0]++;
}

static void bump(hub_metrics_label *labels, size_t *n, size_t cap, const char *label, uint64_t by)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(labels[i].name, label) == 0) {
			labels[i].count += by;
			return;
		}
	}
	if (*n == cap)
		label = "other";
	if (*n == cap) {
		for (size_t i = 0; i < *n; i++)
			if (strcmp(labels[i].name, "other") == 0) {
				labels[i].count += by;
				return;
			}
		(*n)--; /* make room for "other" in the last slot */
	}
	snprintf(labels[*n].name, sizeof labels[*n].name, "%s", label);
	labels[*n].count = by;
	(*n)++;
}

void hub_metrics_protocol_error(hub_metrics *m, const char *label)
{
	bump(m->errors, &m->nerrors, HUB_METRICS_MAX_LABELS, label, 1);
}

void hub_metrics_dropped(hub_metrics *m, const char *label, uint64_t n)
{
	bump(m->drops, &m->ndrops, sizeof m->drops / sizeof m->drops[0], label, n);
}

void hub_metrics_auth_refused(hub_metrics *m, const char *label)
{
	bump(m->auth, &m->nauth, sizeof m->auth / sizeof m->auth[0], label, 1);
}

void hub_metrics_routed(hub_metrics *m, const char *label)
{
	bump(m->routed, &m->nrouted, sizeof m->routed / sizeof m->routed[0], label, 1);
}

void hub_metrics_denied(hub_metrics *m, const char *label)
{
	bump(m->denied, &m->ndenied, sizeof m->denied / sizeof m->denied[0], label, 1);
}

void hub_metrics_twin(hub_metrics *m, const char *label)
{
	bump(m->twin, &m->ntwin, sizeof m->twin / sizeof m->twin[0], label, 1);
}

void hub_metrics_method(hub_metrics *m, const char *label)
{
	bump(m->methods, &m->nmethods, sizeof m->methods / sizeof m->methods[0], label, 1);
}

void hub_metrics_c2d(hub_metrics *m, const char *label)
{
	bump(m->c2d, &m->nc2d, sizeof m->c2d / sizeof m->c2d[0], label, 1);
}

const char *hub_metrics_reason_label(perch_mqtt_reason r)
{
	/* Built once per reason from its text: "PUBLISH topic name contains a
	 * wildcard" -> "publish_topic_name_contains_a_wildcard". */
	static char labels[PERCH_MQTT_R_COUNT][72];
	if ((unsigned)r >= PERCH_MQTT_R_COUNT)
		return "other";
	if (labels[r][0] == '\0') {
		const char *t = perch_mqtt_reason_str(r);
		size_t j = 0;
		for (size_t i = 0; t[i] && j < sizeof labels[r] - 1; i++) {
			unsigned char ch = (unsigned char)t[i];
			if (isalnum(ch))
				labels[r][j++] = (char)tolower(ch);
			else if (j > 0 && labels[r][j - 1] != '_')
				labels[r][j++] = '_';
		}
		while (j > 0 && labels[r][j - 1] == '_')
			j--;
		labels[r][j] = '\0';
	}
	return labels[r];
}

/* A growing text buffer. */
typedef struct text {
	char *p;
	size_t len, cap;
	bool failed;
} text;

__attribute__((format(printf, 2, 3))) static void put(text *t, const char *fmt, ...)
{
	if (t->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap * 2 + (size_t)n;
		char *np = perch_realloc(t->p, cap);
		if (np == NULL) {
			t->failed = true;
			return;
		}
		t->p = np;
		t->cap = cap;
	}
}

static void family(text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void labelled(text *t, const char *name, const char *help, const hub_metrics_label *labels,
                     size_t n)
{
	family(t, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		put(t, "%s{reason=\"%s\"} %llu\n", name, labels[i].name,
		    (unsigned long long)labels[i].count);
}

/* twin_families renders the twin counters: labels "op:status" are twin
 * answers, "desired_patch:result" desired patches. */
static void twin_families(text *t, const hub_metrics *m)
{
	family(t, "perch_hub_twin_requests_total", "counter",
	       "Twin requests answered, by operation (get, reported) and status.");
	for (size_t i = 0; i < m->ntwin; i++) {
		const char *colon = strchr(m->twin[i].name, ':');
		if (colon != NULL && strncmp(m->twin[i].name, "desired_patch:", 14) != 0)
			put(t, "perch_hub_twin_requests_total{op=\"%.*s\",status=\"%s\"} %llu\n",
			    (int)(colon - m->twin[i].name), m->twin[i].name, colon + 1,
			    (unsigned long long)m->twin[i].count);
	}
	family(t, "perch_hub_twin_desired_patches_total", "counter",
	       "Desired changes for connected identities: sent, not_subscribed, not_sent.");
	for (size_t i = 0; i < m->ntwin; i++) {
		if (strncmp(m->twin[i].name, "desired_patch:", 14) == 0)
			put(t, "perch_hub_twin_desired_patches_total{result=\"%s\"} %llu\n",
			    m->twin[i].name + 14, (unsigned long long)m->twin[i].count);
	}
}

typedef struct queue_sum {
	uint64_t depth, bytes;
} queue_sum;

static void sum_queue(void *arg, hub_queue *q)
{
	queue_sum *s = arg;
	hub_queue_stats qs;
	hub_queue_get_stats(q, &qs);
	s->depth += qs.depth;
	s->bytes += qs.bytes;
}

/* upstream_families renders the upstream link (upstream.c); nothing when
 * hub.upstream.url is not set. */
static void upstream_families(text *t, hub *h)
{
	hub_upstream_stats u;
	hub_upstream_get_stats(h, &u);
	if (!u.configured)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	family(t, "perch_hub_upstream_connected", "gauge", "1 while the link to the parent is up.");
	put(t, "perch_hub_upstream_connected %d\n", u.up ? 1 : 0);
	family(t, "perch_hub_upstream_offline_seconds", "gauge",
	       "Seconds since the link went down (since the start if it never came up); 0 when "
	       "up.");
	put(t, "perch_hub_upstream_offline_seconds %.3f\n",
	    u.up || u.down_since_ms == 0 ? 0.0 : (double)(now - u.down_since_ms) / 1000.0);
	family(t, "perch_hub_upstream_offline_since_seconds", "gauge",
	       "Unix time the link went down; 0 when up.");
	put(t, "perch_hub_upstream_offline_since_seconds %.3f\n",
	    u.up ? 0.0 : (double)u.down_since_ms / 1000.0);
	family(t, "perch_hub_upstream_connects_total", "counter", "Connection attempts.");
	put(t, "perch_hub_upstream_connects_total %llu\n", (unsigned long long)u.connects);
	family(t, "perch_hub_upstream_reconnects_total", "counter",
	       "Times the link went down after being up.");
	put(t, "perch_hub_upstream_reconnects_total %llu\n", (unsigned long long)u.reconnects);
	family(t, "perch_hub_upstream_refused_total", "counter",
	       "CONNACKs refusing the link, by return code (4: bad key, 5: not authorized).");
	for (int c = 1; c <= 5; c++)
		put(t, "perch_hub_upstream_refused_total{code=\"%d\"} %llu\n", c,
		    (unsigned long long)u.refused[c]);
	family(t, "perch_hub_upstream_forwarded_total", "counter",
	       "Messages acknowledged by the parent (and removed from the queues).");
	put(t, "perch_hub_upstream_forwarded_total %llu\n", (unsigned long long)u.forwarded);
	family(t, "perch_hub_upstream_resent_total", "counter",
	       "Publishes sent again (DUP) after the link came back.");
	put(t, "perch_hub_upstream_resent_total %llu\n", (unsigned long long)u.resent);
	family(t, "perch_hub_upstream_inflight", "gauge", "Publishes waiting for PUBACK.");
	put(t, "perch_hub_upstream_inflight %llu\n", (unsigned long long)u.inflight);
	family(t, "perch_hub_upstream_dropped_total", "counter",
	       "Queued messages never sent, by reason.");
	put(t, "perch_hub_upstream_dropped_total{reason=\"expired\"} %llu\n",
	    (unsigned long long)u.expired);
	put(t, "perch_hub_upstream_dropped_total{reason=\"too_big\"} %llu\n",
	    (unsigned long long)u.dropped_too_big);
	family(t, "perch_hub_upstream_first_forward_seconds", "gauge",
	       "From the last link up to its first PUBACK; -1 before the first.");
	put(t, "perch_hub_upstream_first_forward_seconds %.3f\n",
	    u.first_forward_ms < 0 ? -1.0 : (double)u.first_forward_ms / 1000.0);
	family(t, "perch_hub_upstream_queue_messages", "gauge",
	       "Messages waiting in $upstream, by priority (0 highest).");
	for (int p = 0; p < HUB_UPSTREAM_PRIOS; p++)
		put(t, "perch_hub_upstream_queue_messages{priority=\"%d\"} %llu\n", p,
		    (unsigned long long)u.depth[p]);
	family(t, "perch_hub_upstream_queue_bytes", "gauge",
	       "Bytes waiting in $upstream, by priority.");
	for (int p = 0; p < HUB_UPSTREAM_PRIOS; p++)
		put(t, "perch_hub_upstream_queue_bytes{priority=\"%d\"} %llu\n", p,
		    (unsigned long long)u.bytes[p]);
	family(t, "perch_hub_upstream_oldest_message_age_seconds", "gauge",
	       "Age of the oldest queued message, by priority (0: empty or not known now).");
	for (int p = 0; p < HUB_UPSTREAM_PRIOS; p++)
		put(t, "perch_hub_upstream_oldest_message_age_seconds{priority=\"%d\"} %.3f\n", p,
		    u.oldest_ms[p] > 0 ? (double)(now - u.oldest_ms[p]) / 1000.0 : 0.0);
}

perch_err hub_metrics_render(hub *h, char **body, size_t *len)
{
	hub_metrics *m = h->metrics;
	text t = {.p = perch_malloc(8192), .cap = 8192};
	if (t.p == NULL)
		return PERCH_ENOMEM;
	t.p[0] = '\0';
	family(&t, "perch_hub_clients_connected", "gauge", "Client connections open now.");
	put(&t, "perch_hub_clients_connected %llu\n", (unsigned long long)m->clients_connected);
	family(&t, "perch_hub_connections_total", "counter", "Client connections accepted.");
	put(&t, "perch_hub_connections_total %llu\n", (unsigned long long)m->connections_total);
	family(&t, "perch_hub_sessions", "gauge",
	       "Sessions known (persistent ones survive restarts).");
	put(&t, "perch_hub_sessions %zu\n", hub_broker_sessions(h));
	family(&t, "perch_hub_subscriptions", "gauge", "Subscriptions of all sessions.");
	put(&t, "perch_hub_subscriptions %zu\n", hub_broker_subscriptions(h));
	family(&t, "perch_hub_retained_messages", "gauge", "Retained messages.");
	put(&t, "perch_hub_retained_messages %zu\n", hub_broker_retained(h));
	family(&t, "perch_hub_messages_received_total", "counter", "PUBLISH packets received.");
	for (int q = 0; q < 2; q++)
		put(&t, "perch_hub_messages_received_total{qos=\"%d\"} %llu\n", q,
		    (unsigned long long)m->msgs_in[q]);
	family(&t, "perch_hub_messages_sent_total", "counter", "PUBLISH packets sent.");
	for (int q = 0; q < 2; q++)
		put(&t, "perch_hub_messages_sent_total{qos=\"%d\"} %llu\n", q,
		    (unsigned long long)m->msgs_out[q]);
	family(&t, "perch_hub_bytes_received_total", "counter", "Bytes read from clients.");
	put(&t, "perch_hub_bytes_received_total %llu\n", (unsigned long long)m->bytes_in);
	family(&t, "perch_hub_bytes_sent_total", "counter", "Bytes written to clients.");
	put(&t, "perch_hub_bytes_sent_total %llu\n", (unsigned long long)m->bytes_out);

	hub_store *st = hub_broker_store(h);
	hub_store_stats ss = {0};
	queue_sum qs = {0};
	if (st != NULL) {
		hub_store_get_stats(st, &ss);
		hub_store_queue_each(st, sum_queue, &qs);
	}
	family(&t, "perch_hub_queue_messages", "gauge", "Messages queued in all store queues.");
	put(&t, "perch_hub_queue_messages %llu\n", (unsigned long long)qs.depth);
	family(&t, "perch_hub_queue_bytes", "gauge", "Bytes of the messages queued.");
	put(&t, "perch_hub_queue_bytes %llu\n", (unsigned long long)qs.bytes);
	family(&t, "perch_hub_store_bytes", "gauge", "Bytes of messages in the store.");
	put(&t, "perch_hub_store_bytes %llu\n", (unsigned long long)ss.bytes);
	family(&t, "perch_hub_store_max_bytes", "gauge", "The store's size limit.");
	put(&t, "perch_hub_store_max_bytes %llu\n", (unsigned long long)ss.max_bytes);
	family(&t, "perch_hub_store_commits_total", "counter", "Store transactions committed.");
	put(&t, "perch_hub_store_commits_total %llu\n", (unsigned long long)ss.commits);
	family(&t, "perch_hub_store_commit_failures_total", "counter",
	       "Store commits that failed.");
	put(&t, "perch_hub_store_commit_failures_total %llu\n",
	    (unsigned long long)ss.commit_failures);
	family(&t, "perch_hub_store_rows_written_total", "counter", "Rows written by commits.");
	put(&t, "perch_hub_store_rows_written_total %llu\n", (unsigned long long)ss.rows_written);
	family(&t, "perch_hub_store_elided_total", "counter",
	       "Writes cancelled in memory (acknowledged before they reached the disk).");
	put(&t, "perch_hub_store_elided_total %llu\n", (unsigned long long)ss.elided);
	family(&t, "perch_hub_store_disk_full", "gauge",
	       "1 while the last commit hit a full disk.");
	put(&t, "perch_hub_store_disk_full %d\n", ss.disk_full ? 1 : 0);

	family(&t, "perch_hub_commit_seconds", "histogram", "Store commit latency.");
	uint64_t cum = 0;
	for (size_t i = 0; i < HUB_STORE_LAT_BUCKETS; i++) {
		cum += ss.lat_hist[i];
		if (i + 1 < HUB_STORE_LAT_BUCKETS)
			put(&t, "perch_hub_commit_seconds_bucket{le=\"%g\"} %llu\n",
			    hub_store_lat_bounds_ms[i] / 1000.0, (unsigned long long)cum);
		else
			put(&t, "perch_hub_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
			    (unsigned long long)cum);
	}
	put(&t, "perch_hub_commit_seconds_sum %.6f\n", ss.lat_sum_ms / 1000.0);
	put(&t, "perch_hub_commit_seconds_count %llu\n", (unsigned long long)cum);

	hub_metrics_label drops[48];
	size_t nd = 0;
	memcpy(drops, m->drops, m->ndrops * sizeof drops[0]);
	nd = m->ndrops;
	const struct {
		const char *name;
		uint64_t n;
	} store_drops[] = {{"expired", ss.drop_expired},
	                   {"store_full_refused", ss.drop_store_full},
	                   {"disk_full_refused", ss.drop_disk_full},
	                   {"queue_full_refused", ss.drop_queue_full},
	                   {"upstream_dropped_oldest", ss.drop_oldest}};
	for (size_t i = 0; i < sizeof store_drops / sizeof store_drops[0]; i++)
		bump(drops, &nd, sizeof drops / sizeof drops[0], store_drops[i].name,
		     store_drops[i].n);
	labelled(&t, "perch_hub_dropped_total",
	         "Messages not delivered or not accepted, by reason.", drops, nd);
	labelled(&t, "perch_hub_protocol_errors_total",
	         "Connections closed or refused for a protocol violation, by reason.", m->errors,
	         m->nerrors);
	labelled(&t, "perch_hub_auth_refused_total",
	         "CONNECTs refused by authentication, by reason.", m->auth, m->nauth);
	labelled(&t, "perch_hub_routed_total",
	         "Messages of identities by where routes sent them: module_input, upstream, "
	         "no_route, waiting_for_routes.",
	         m->routed, m->nrouted);
	labelled(&t, "perch_hub_denied_total",
	         "Publishes and subscriptions an identity was not allowed, by kind.", m->denied,
	         m->ndenied);
	twin_families(&t, m);
	family(&t, "perch_hub_method_calls_total", "counter",
	       "Direct method calls by the HTTP status of their answer (200: the target "
	       "answered), cancelled (the invoker went away), unmatched_answer.");
	for (size_t i = 0; i < m->nmethods; i++)
		put(&t, "perch_hub_method_calls_total{status=\"%s\"} %llu\n", m->methods[i].name,
		    (unsigned long long)m->methods[i].count);
	family(&t, "perch_hub_c2d_messages_total", "counter",
	       "Cloud-to-device messages offered to the hub, by result: queued, queue_full, "
	       "too_big, unknown_device, bad_request, store_full, error.");
	for (size_t i = 0; i < m->nc2d; i++)
		put(&t, "perch_hub_c2d_messages_total{result=\"%s\"} %llu\n", m->c2d[i].name,
		    (unsigned long long)m->c2d[i].count);
	family(&t, "perch_hub_method_calls_pending", "gauge",
	       "Direct method calls waiting for their target or its answer.");
	put(&t, "perch_hub_method_calls_pending %zu\n", hub_iothub_pending_calls(h));
	upstream_families(&t, h);
	if (t.failed) {
		perch_free(t.p);
		return PERCH_ENOMEM;
	}
	*body = t.p;
	*len = t.len;
	return PERCH_OK;
}
