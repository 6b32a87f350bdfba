/*
 * metrics.h — perch-hub's counters and their Prometheus text rendering.
 *
 * Counters are plain integers updated on the loop thread; the store's own
 * counters (queue depth, store size, commit latency) are read from the store
 * when /metrics is rendered. Labels of dropped messages and protocol errors
 * are short snake_case words (e.g. "publish_topic_name_contains_a_wildcard").
 */
#ifndef HUB_METRICS_H
#define HUB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"

#define HUB_METRICS_MAX_LABELS 160

typedef struct hub_metrics_label {
	char name[72];
	uint64_t count;
} hub_metrics_label;

typedef struct hub_metrics {
	uint64_t clients_connected;
	uint64_t connections_total;
	uint64_t msgs_in[2]; /* by QoS */
	uint64_t msgs_out[2];
	uint64_t bytes_in, bytes_out;
	hub_metrics_label errors[HUB_METRICS_MAX_LABELS];
	size_t nerrors;
	hub_metrics_label drops[32];
	size_t ndrops;
	hub_metrics_label auth[16]; /* CONNECTs refused, by hub_auth_reason */
	size_t nauth;
	hub_metrics_label twin[40]; /* "op:status" of twin answers, "desired_patch:result" */
	size_t ntwin;
	hub_metrics_label methods[16]; /* direct method calls by the invoker's answer */
	size_t nmethods;
	hub_metrics_label denied[4]; /* publishes and subscriptions refused */
	size_t ndenied;
	hub_metrics_label routed[8]; /* messages routed, by sink kind */
	size_t nrouted;
	hub_metrics_label c2d[12]; /* cloud-to-device messages offered, by result */
	size_t nc2d;
} hub_metrics;

void hub_metrics_conn_opened(hub_metrics *m);
void hub_metrics_conn_closed(hub_metrics *m);
void hub_metrics_rx_bytes(hub_metrics *m, size_t n);
void hub_metrics_tx_bytes(hub_metrics *m, size_t n);
void hub_metrics_msg_in(hub_metrics *m, int qos);
void hub_metrics_msg_out(hub_metrics *m, int qos);
/* label: a static or short snake_case word. */
void hub_metrics_protocol_error(hub_metrics *m, const char *label);
void hub_metrics_dropped(hub_metrics *m, const char *label, uint64_t n);
void hub_metrics_auth_refused(hub_metrics *m, const char *label);
void hub_metrics_denied(hub_metrics *m, const char *label);
void hub_metrics_routed(hub_metrics *m, const char *label);
/* label "get:200", "reported:204", ..., "desired_patch:sent" (iothub.c). */
void hub_metrics_twin(hub_metrics *m, const char *label);
/* label: the HTTP status a method call was answered with, "cancelled" or
 * "unmatched_answer" (method.c). */
void hub_metrics_method(hub_metrics *m, const char *label);
void hub_metrics_c2d(hub_metrics *m, const char *label);
/* A snake_case label for a decoder reason (static storage, per reason). */
const char *hub_metrics_reason_label(perch_mqtt_reason r);

/* hub_metrics_render writes the Prometheus text for h into a new buffer
 * (*body, owned by the caller, freed with perch_free) of *len bytes. */
PERCH_MUST_USE perch_err hub_metrics_render(hub *h, char **body, size_t *len);

#endif /* HUB_METRICS_H */
