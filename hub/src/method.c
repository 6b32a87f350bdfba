/*
 * method.c — direct methods at perch-hub: a call from an invoker (today an
 * HTTP request, method_http.c) goes to the target identity's connection as
 * $iothub/methods/POST/{name}/?$rid={rid} with a rid the hub chooses, and
 * the target's $iothub/methods/res/{status}/?$rid={rid} comes back to the
 * invoker as IoT Hub's REST API answers: {"status":...,"payload":...}.
 *
 * A call waits for its target to connect (and subscribe to
 * $iothub/methods/POST/#) for connectTimeoutInSeconds (default 0: the
 * target must be there: 404 otherwise), then for the answer for
 * responseTimeoutInSeconds (default 30; 504 when it does not come). A
 * target that disconnects before it answers ends the call at once (404);
 * an invoker that goes away cancels it. Calls are in one list, few (at most
 * MAX_PENDING) and short-lived; deadlines are looked at when the earliest
 * one is due. Loop thread only.
 */
#include <stdio.h>
#include <string.h>

#include "iothub_int.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define LOG_MOD            "hub.method"
#define MAX_PENDING        1000                 /* calls at a time, all invokers */
#define MAX_METHOD_NAME    128                  /* bytes of a method name */
#define MAX_PAYLOAD        ((size_t)128 * 1024) /* bytes of a request payload (IoT Hub's limit) */
#define DEFAULT_RESPONSE_S 30
#define MIN_RESPONSE_S     5
#define MAX_TIMEOUT_S      300
#define METHODS_TOPIC      "$iothub/methods/POST/#"
#define LINK_EXTRA_S       5 /* a call down a child's link waits this much longer */

/* IoT Hub's error codes for the answers it has them for. */
#define ERR_ARGUMENT_INVALID 400004u
#define ERR_DEVICE_NOT_FOUND 404001u
#define ERR_MODULE_NOT_FOUND 404010u
#define ERR_NOT_ONLINE       404103u
#define ERR_TIMEOUT          504101u

struct hub_method_call {
	struct hub_method_call *next, *prev;
	char rid[24];                    /* the hub's request id, hex */
	char target[HUB_IDENT_NAME_MAX]; /* "d" or "d/m" */
	char caller[HUB_IDENT_NAME_MAX]; /* for logs */
	char method[MAX_METHOD_NAME + 1];
	char *payload; /* JSON text of the request payload until it is sent */
	size_t len;
	hub_conn *conn; /* the target's connection once sent; NULL while waiting */
	/* The target is behind a child edge hub (docs/hub.md "Twins over the
	 * link"): the call goes down that hub's link as
	 * $edgehub/{target}/methods/post/{name}, with the whole request as its
	 * payload, and its answer is the child's answer as it stands. */
	char edge[PERCH_DEVICE_ID_MAX + 1]; /* "" unless so */
	int response_s;                     /* responseTimeoutInSeconds */
	int connect_s;                      /* connectTimeoutInSeconds */
	int64_t deadline_ms; /* end of the wait for the target, then for the answer */
	hub_method_done_fn done;
	void *arg;
};

typedef struct hub_methods {
	hub_method_call *head, *tail;
	size_t count;   /* calls in the list */
	size_t waiting; /* of them, not sent yet */
	uint64_t next_rid;
	perch_map by_rid;         /* rid -> call */
	int64_t next_deadline_ms; /* no call is due before this */
} hub_methods;

static hub_methods *methods_of(const hub *h)
{
	return h->iothub != NULL ? h->iothub->methods : NULL;
}

perch_err hub_method_open(hub *h)
{
	hub_methods *m = perch_calloc(1, sizeof *m);
	if (m == NULL)
		return PERCH_ENOMEM;
	m->next_rid = 1;
	m->next_deadline_ms = INT64_MAX;
	h->iothub->methods = m;
	return PERCH_OK;
}

static void unlink_call(hub_methods *m, hub_method_call *call)
{
	if (call->prev != NULL)
		call->prev->next = call->next;
	else
		m->head = call->next;
	if (call->next != NULL)
		call->next->prev = call->prev;
	else
		m->tail = call->prev;
	m->count--;
	if (call->conn == NULL)
		m->waiting--;
	(void)perch_map_del(&m->by_rid, perch_slice_cstr(call->rid));
}

static void free_call(hub_method_call *call)
{
	perch_free(call->payload);
	perch_free(call);
}

void hub_method_close(hub *h)
{
	hub_methods *m = methods_of(h);
	if (m == NULL)
		return;
	while (m->head != NULL) {
		hub_method_call *call = m->head;
		unlink_call(m, call);
		free_call(call);
	}
	perch_map_fini(&m->by_rid);
	perch_free(m);
	h->iothub->methods = NULL;
}

size_t hub_method_waiting(const hub *h)
{
	const hub_methods *m = methods_of(h);
	return m != NULL ? m->waiting : 0;
}

size_t hub_method_pending(const hub *h)
{
	const hub_methods *m = methods_of(h);
	return m != NULL ? m->count : 0;
}

/* answer gives the invoker an error answer (static message) and counts it. */
static void answer_error(hub *h, hub_method_done_fn done, void *arg, unsigned status, unsigned code,
                         const char *message)
{
	char body[512];
	size_t n = hub_iothub_error_body(body, sizeof body, code, message);
	char label[8];
	snprintf(label, sizeof label, "%u", status);
	hub_metrics_method(h->metrics, label);
	done(arg, status, body, n);
}

/* finish ends a pending call with an error answer and frees it. */
static void finish_error(hub *h, hub_method_call *call, unsigned status, unsigned code,
                         const char *message)
{
	unlink_call(methods_of(h), call);
	answer_error(h, call->done, call->arg, status, code, message);
	free_call(call);
}

/* valid_method_name: 1-128 printable ASCII characters that are safe in a
 * topic segment and in SDKs' parsers of it. */
static bool valid_method_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_METHOD_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch <= 0x20 || ch >= 0x7f || strchr("/+#?&%", ch) != NULL)
			return false;
	}
	return true;
}

/* timeout_arg reads an optional whole number of seconds; false when v is
 * there and not a whole number in [lo, hi]. */
static bool timeout_arg(const json_t *v, int def, int lo, int hi, int *out)
{
	*out = def;
	if (v == NULL || json_is_null(v))
		return true;
	double d;
	if (json_is_integer(v))
		d = (double)json_integer_value(v);
	else if (json_is_real(v))
		d = json_real_value(v);
	else
		return false;
	if (d < lo || d > hi || d != (double)(int)d) /* the range first: (int)1e300 is undefined */
		return false;
	*out = (int)d;
	return true;
}

static void schedule(hub_methods *m, int64_t deadline_ms)
{
	if (deadline_ms < m->next_deadline_ms)
		m->next_deadline_ms = deadline_ms;
}

/*
 * try_send sends call to c when c subscribed to method requests: true when
 * it is on its way (or ended: *ended), false when the target does not take
 * method requests yet.
 */
static bool try_send(hub *h, hub_method_call *call, hub_conn *c, bool *ended)
{
	hub_methods *m = methods_of(h);
	*ended = false;
	/* $iothub/methods/POST/{name}/?$rid=, or behind a child hub
	 * $edgehub/{d}[/{m}]/methods/post/{name}/?$rid= (two ids of up to 128
	 * characters, percent-encoded at worst, besides the name and rid). */
	char topic[1024];
	size_t tlen = 0;
	bool link = call->edge[0] != '\0';
	perch_err err = link ? hub_iothub_link_topic(topic, sizeof topic, &tlen,
	                                             PERCH_IOTHUB_LINK_METHOD_REQUEST, call->target,
	                                             perch_slice_cstr(call->method), 0,
	                                             perch_slice_cstr(call->rid), false, 0)
	                     : perch_iothub_build_method_request(topic, sizeof topic, &tlen,
	                                                         perch_slice_cstr(call->method),
	                                                         perch_slice_cstr(call->rid));
	if (err != PERCH_OK) {
		*ended = true;
		finish_error(h, call, 400, ERR_ARGUMENT_INVALID,
		             link ? "the target's name cannot be sent down the link"
		                  : "the method name cannot be sent");
		return true;
	}
	perch_slice t = {topic, tlen};
	if (c == NULL || c->state != HUB_CONN_ACTIVE || !hub_broker_subscribed(c, t, NULL))
		return false;
	err = hub_iothub_send(c, t, (perch_slice){call->payload, call->len}, false);
	if (err != PERCH_OK) {
		*ended = true;
		PERCH_WARN(LOG_MOD, "%s: method %s for %s not sent: %s", call->target, call->method,
		           call->caller,
		           err == PERCH_ENOSPC ? "it does not read what it is sent"
		                               : perch_strerror(err));
		finish_error(h, call, 503, 503000,
		             err == PERCH_ENOSPC ? "the target does not read what it is sent"
		                                 : "the request could not be sent to the target");
		return true;
	}
	if (call->conn == NULL)
		m->waiting--;
	call->conn = c;
	perch_free(call->payload);
	call->payload = NULL;
	call->len = 0;
	/* Behind a child hub, the child's own call times out first: its 504 is
	 * the answer. */
	int wait_s =
	        call->response_s + (call->edge[0] != '\0' ? call->connect_s + LINK_EXTRA_S : 0);
	call->deadline_ms = hub_now_ms() + (int64_t)wait_s * 1000;
	schedule(m, call->deadline_ms);
	PERCH_INFO(LOG_MOD, "%s: method %s from %s sent%s%s (rid %s, %d s to answer)", call->target,
	           call->method, call->caller, call->edge[0] ? " down the link of " : "",
	           call->edge, call->rid, call->response_s);
	return true;
}

/* target_ok: is target ("d" or "d/m") an identity here? Sets *code and
 * *message when not. */
static bool target_ok(const hub_identities *ids, const char *target, const char *device,
                      const char *module, unsigned *code, const char **message)
{
	char edge[PERCH_DEVICE_ID_MAX + 1];
	if (hub_identities_knows(ids, target, NULL) ||
	    hub_identities_edge_of(ids, target, edge, sizeof edge))
		return true;
	if (module[0] != '\0' && strcmp(device, ids->device_id) == 0) {
		*code = ERR_MODULE_NOT_FOUND;
		*message = "no such module in the deployment";
	} else {
		*code = ERR_DEVICE_NOT_FOUND;
		*message = module[0] != '\0'
		                   ? "modules of other devices cannot be called here"
		                   : "no such device here (not this device nor a leaf device)";
	}
	return false;
}

void hub_method_invoke(hub *h, const hub_identity *caller, const char *device, const char *module,
                       const char *body, size_t len, hub_method_done_fn done, void *arg,
                       hub_method_call **out)
{
	*out = NULL;
	hub_methods *m = methods_of(h);
	if (module == NULL)
		module = "";
	char cname[HUB_IDENT_NAME_MAX];
	hub_identity_name(caller, cname, sizeof cname);
	if (m == NULL) {
		answer_error(h, done, arg, 503, 503000, "direct methods are not available");
		return;
	}
	if ((caller->kind != HUB_IDENT_DEVICE && caller->kind != HUB_IDENT_MODULE) ||
	    strcmp(caller->device, h->ids.device_id) != 0) {
		PERCH_WARN(LOG_MOD, "%s may not invoke methods (only this device and its modules)",
		           cname);
		answer_error(h, done, arg, 403, 403000,
		             "only this device and its modules may invoke methods here");
		return;
	}
	char target[HUB_IDENT_NAME_MAX];
	if (module[0] != '\0')
		snprintf(target, sizeof target, "%s/%s", device, module);
	else
		snprintf(target, sizeof target, "%s", device);
	unsigned code = 0;
	const char *message = NULL;
	if (!target_ok(&h->ids, target, device, module, &code, &message)) {
		PERCH_INFO(LOG_MOD, "%s: method call on %s refused: %s", cname, target, message);
		answer_error(h, done, arg, 404, code, message);
		return;
	}
	json_error_t je;
	json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	const char *name = json_string_value(json_object_get(req, "methodName"));
	json_t *payload = json_object_get(req, "payload");
	int response_s = 0, connect_s = 0;
	const char *bad = NULL;
	if (!json_is_object(req))
		bad = "the request is not a JSON object";
	else if (name == NULL || !valid_method_name(name))
		bad = "methodName: expected 1-128 printable ASCII characters other than / + # ? & "
		      "%";
	else if (!timeout_arg(json_object_get(req, "responseTimeoutInSeconds"), DEFAULT_RESPONSE_S,
	                      MIN_RESPONSE_S, MAX_TIMEOUT_S, &response_s))
		bad = "responseTimeoutInSeconds: expected a whole number from 5 to 300";
	else if (!timeout_arg(json_object_get(req, "connectTimeoutInSeconds"), 0, 0, MAX_TIMEOUT_S,
	                      &connect_s))
		bad = "connectTimeoutInSeconds: expected a whole number from 0 to 300";
	char *text = NULL;
	size_t tlen = 0;
	char edge[PERCH_DEVICE_ID_MAX + 1] = "";
	if (!hub_identities_edge_of(&h->ids, target, edge, sizeof edge))
		edge[0] = '\0'; /* here, not behind a child hub */
	if (bad == NULL) {
		/* Down a child's link goes the whole request (the child calls with
		 * the same timeouts); to a connection here, the payload. */
		json_t *p = payload != NULL ? payload : json_null();
		json_t *relay = NULL;
		if (edge[0] != '\0') {
			relay = json_pack("{s:s,s:O,s:i,s:i}", "methodName", name, "payload", p,
			                  "responseTimeoutInSeconds", response_s,
			                  "connectTimeoutInSeconds", connect_s);
			p = relay != NULL ? relay : json_null();
		}
		tlen = json_dumpb(p, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
		if (tlen > MAX_PAYLOAD)
			bad = "payload: more than 128 KiB";
		else if ((text = perch_malloc(tlen > 0 ? tlen : 1)) != NULL)
			tlen = json_dumpb(p, text, tlen, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(relay);
	}
	if (bad != NULL) {
		PERCH_INFO(LOG_MOD, "%s: method call on %s%s%s refused: %s", cname, device,
		           module[0] ? "/" : "", module, bad);
		json_decref(req);
		answer_error(h, done, arg, 400, ERR_ARGUMENT_INVALID, bad);
		return;
	}
	if (m->count >= MAX_PENDING) {
		PERCH_WARN(LOG_MOD, "%s: method call refused: %d calls are pending already", cname,
		           MAX_PENDING);
		perch_free(text);
		json_decref(req);
		answer_error(h, done, arg, 429, 429000, "too many calls pending");
		return;
	}
	hub_method_call *call = text != NULL ? perch_calloc(1, sizeof *call) : NULL;
	if (call == NULL) {
		perch_free(text);
		json_decref(req);
		answer_error(h, done, arg, 500, 500000, "out of memory");
		return;
	}
	snprintf(call->method, sizeof call->method, "%s", name);
	json_decref(req);
	snprintf(call->rid, sizeof call->rid, "%llx", (unsigned long long)m->next_rid++);
	snprintf(call->target, sizeof call->target, "%s", target);
	snprintf(call->caller, sizeof call->caller, "%s", cname);
	snprintf(call->edge, sizeof call->edge, "%s", edge);
	call->payload = text;
	call->len = tlen;
	call->response_s = response_s;
	call->connect_s = connect_s;
	call->done = done;
	call->arg = arg;
	if (perch_map_put(&m->by_rid, perch_slice_cstr(call->rid), call, NULL) != PERCH_OK) {
		free_call(call);
		answer_error(h, done, arg, 500, 500000, "out of memory");
		return;
	}
	call->prev = m->tail;
	if (m->tail != NULL)
		m->tail->next = call;
	else
		m->head = call;
	m->tail = call;
	m->count++;
	m->waiting++;
	bool ended = false;
	if (try_send(h, call, hub_iothub_online(h, call->edge[0] ? call->edge : call->target),
	             &ended)) {
		if (!ended)
			*out = call;
		return;
	}
	if (connect_s == 0) {
		PERCH_INFO(LOG_MOD,
		           "%s: method %s from %s: not connected (or not subscribed to %s)",
		           call->target, call->method, cname, METHODS_TOPIC);
		finish_error(h, call, 404, ERR_NOT_ONLINE,
		             "the target is not connected or not subscribed to " METHODS_TOPIC);
		return;
	}
	call->deadline_ms = hub_now_ms() + (int64_t)connect_s * 1000;
	schedule(m, call->deadline_ms);
	PERCH_INFO(LOG_MOD, "%s: method %s from %s waits up to %d s for it to connect",
	           call->target, call->method, cname, connect_s);
	*out = call;
}

void hub_method_cancel(hub *h, hub_method_call *call)
{
	hub_methods *m = methods_of(h);
	if (m == NULL || call == NULL)
		return;
	PERCH_INFO(LOG_MOD, "%s: method %s from %s cancelled: the invoker went away", call->target,
	           call->method, call->caller);
	hub_metrics_method(h->metrics, "cancelled");
	unlink_call(m, call);
	free_call(call);
}

/* payload_json: a new reference to the answer's payload: its JSON, null
 * when empty, a string when it is not JSON (NULL: out of memory). */
static json_t *payload_json(perch_slice p)
{
	if (p.len == 0)
		return json_null();
	json_t *v = json_loadb(p.ptr, p.len, JSON_DECODE_ANY, NULL);
	if (v == NULL)
		v = json_stringn(p.ptr, p.len);
	return v != NULL ? v : json_null();
}

void hub_method_response(hub_conn *c, const perch_iothub_topic *t, perch_slice payload)
{
	hub *h = c->hub;
	hub_methods *m = methods_of(h);
	char rid[PERCH_IOTHUB_MAX_RID + 1];
	snprintf(rid, sizeof rid, "%.*s", (int)t->rid.len, t->rid.ptr);
	hub_method_call *call = m != NULL ? perch_map_get(&m->by_rid, perch_slice_cstr(rid)) : NULL;
	if (call == NULL || call->conn != c) {
		/* Late (timed out, invoker gone) or not for this connection. */
		PERCH_INFO(LOG_MOD, "%s: method answer with rid %s matches no call of it: dropped",
		           c->client_id, rid);
		hub_metrics_method(h->metrics, "unmatched_answer");
		return;
	}
	unlink_call(m, call);
	if (perch_iothub_is_link(t->kind)) {
		/* A child hub's answer is already the REST answer: status and body. */
		PERCH_INFO(LOG_MOD, "%s: method %s from %s answered %u by %s (rid %s)",
		           call->target, call->method, call->caller, t->status, call->edge,
		           call->rid);
		char label[8];
		snprintf(label, sizeof label, "%u", t->status);
		hub_metrics_method(h->metrics, label);
		call->done(call->arg, t->status, payload.len > 0 ? payload.ptr : "{}",
		           payload.len > 0 ? payload.len : 2);
		free_call(call);
		return;
	}
	json_t *ans = json_object();
	json_t *pv = payload_json(payload);
	char *body = NULL;
	size_t n = 0;
	if (ans != NULL && pv != NULL &&
	    json_object_set_new(ans, "status", json_integer((json_int_t)t->status)) == 0 &&
	    json_object_set(ans, "payload", pv) == 0) {
		n = json_dumpb(ans, NULL, 0, JSON_COMPACT);
		body = perch_malloc(n > 0 ? n : 1);
		if (body != NULL)
			n = json_dumpb(ans, body, n, JSON_COMPACT);
	}
	json_decref(pv);
	json_decref(ans);
	if (body == NULL) {
		answer_error(h, call->done, call->arg, 500, 500000, "out of memory");
	} else {
		PERCH_INFO(LOG_MOD, "%s: method %s from %s answered %u (rid %s)", call->target,
		           call->method, call->caller, t->status, call->rid);
		hub_metrics_method(h->metrics, "200");
		call->done(call->arg, 200, body, n);
	}
	perch_free(body);
	free_call(call);
}

void hub_method_target_seen(hub *h, const char *name, hub_conn *c)
{
	hub_methods *m = methods_of(h);
	if (m == NULL || m->waiting == 0)
		return;
	hub_method_call *next;
	for (hub_method_call *call = m->head; call != NULL; call = next) {
		next = call->next;
		if (call->conn != NULL ||
		    strcmp(call->edge[0] != '\0' ? call->edge : call->target, name) != 0)
			continue;
		bool ended;
		(void)try_send(h, call, c, &ended);
		/* A call that ended was freed: next was taken before. */
	}
}

void hub_method_conn_gone(hub_conn *c)
{
	hub *h = c->hub;
	hub_methods *m = methods_of(h);
	if (m == NULL)
		return;
	hub_method_call *next;
	for (hub_method_call *call = m->head; call != NULL; call = next) {
		next = call->next;
		if (call->conn != c)
			continue;
		PERCH_INFO(LOG_MOD,
		           "%s: method %s from %s: the target disconnected before it "
		           "answered (rid %s)",
		           call->target, call->method, call->caller, call->rid);
		finish_error(h, call, 404, ERR_NOT_ONLINE,
		             "the target disconnected before it answered");
	}
}

void hub_method_tick(hub *h)
{
	hub_methods *m = methods_of(h);
	if (m == NULL || m->count == 0)
		return;
	int64_t now = hub_now_ms();
	if (now < m->next_deadline_ms)
		return;
	m->next_deadline_ms = INT64_MAX;
	hub_method_call *next;
	for (hub_method_call *call = m->head; call != NULL; call = next) {
		next = call->next;
		if (call->deadline_ms > now) {
			schedule(m, call->deadline_ms);
			continue;
		}
		if (call->conn == NULL) {
			PERCH_INFO(LOG_MOD, "%s: method %s from %s: it did not connect in time",
			           call->target, call->method, call->caller);
			finish_error(h, call, 404, ERR_NOT_ONLINE,
			             "the target did not connect (and subscribe to " METHODS_TOPIC
			             ") within connectTimeoutInSeconds");
		} else {
			PERCH_INFO(LOG_MOD, "%s: method %s from %s: no answer within %d s (rid %s)",
			           call->target, call->method, call->caller, call->response_s,
			           call->rid);
			finish_error(h, call, 504, ERR_TIMEOUT,
			             "Timed out waiting for the response from the target.");
		}
	}
}
