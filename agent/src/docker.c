/*
 * docker.c — the Docker client's core: the blocking short calls, one at a
 * time on a kept-alive connection, and the async calls (pulls, the events
 * stream, agent_docker_call_async), each on a connection of its own, which
 * the loop drives — the pollfd list and the deadline it asks for,
 * agent_docker_service, and the completion of each async request. The HTTP
 * is agent/src/http.c's. See docker.h for the contract.
 */
#include "docker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perch/alloc.h"
#include "perch/log.h"

#define HOST "docker" /* what the engine expects in Host: (it ignores it) */

long long agent_docker_now_ms(void)
{
	return agent_http_now_ms();
}

/* ---- transport ----------------------------------------------------------------- */

perch_err agent_docker_transport_err(const agent_docker *d, const agent_http_xfer *x, char *msg,
                                     size_t cap)
{
	const char *why = x->why != NULL ? x->why : "";
	switch (x->err) {
	case PERCH_OK: snprintf(msg, cap, "%s", ""); return PERCH_OK;
	case PERCH_ECLOSED:
		if (!x->connected) {
			snprintf(msg, cap, "Docker daemon not answering at %s", d->path);
			return PERCH_ECLOSED;
		}
		snprintf(msg, cap, "Docker daemon at %s closed the connection (%s)", d->path, why);
		return PERCH_ECLOSED;
	case PERCH_ETIMEDOUT:
		snprintf(msg, cap, "Docker daemon at %s: %s", d->path,
		         x->connected ? "request timed out" : "connect timed out");
		return PERCH_ETIMEDOUT;
	case PERCH_EPERM:
		snprintf(msg, cap, "no permission to connect to the Docker daemon at %s", d->path);
		return PERCH_EPERM;
	case PERCH_ENOMEM: snprintf(msg, cap, "out of memory"); return PERCH_ENOMEM;
	case PERCH_ETOOBIG:
		snprintf(msg, cap, "Docker daemon at %s: answer too large", d->path);
		return PERCH_EPROTO;
	case PERCH_EPROTO:
		snprintf(msg, cap, "Docker daemon at %s: malformed answer: %s", d->path, why);
		return PERCH_EPROTO;
	default:
		if (x->sys_errno != 0)
			snprintf(msg, cap, "Docker daemon at %s: %s: %s", d->path, why,
			         strerror(x->sys_errno));
		else
			snprintf(msg, cap, "Docker daemon at %s: %s", d->path, why);
		return PERCH_EIO;
	}
}

/* buf_append adds n bytes to a growable buffer, keeping a NUL after them.
 * PERCH_ETOOBIG when the buffer would pass max, PERCH_ENOMEM. */
static perch_err buf_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n,
                            size_t max)
{
	if (*len + n + 1 > max)
		return PERCH_ETOOBIG;
	if (*len + n + 1 > *cap) {
		size_t ncap = *cap ? *cap : 1024;
		while (ncap < *len + n + 1)
			ncap *= 2;
		char *p = perch_realloc(*buf, ncap);
		if (p == NULL)
			return PERCH_ENOMEM;
		*buf = p;
		*cap = ncap;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
	return PERCH_OK;
}

/* gather is the blocking calls' body sink: the answer into d->resp. */
static perch_err gather(void *ud, const char *data, size_t n)
{
	agent_docker *d = ud;
	return buf_append(&d->resp, &d->resp_len, &d->resp_cap, data, n, AGENT_DOCKER_BODY_MAX);
}

/* make_request writes method API+path with the JSON text body (may be NULL)
 * and one extra header line hdr (may be NULL). */
static perch_err make_request(const char *method, const char *path, const char *body,
                              const char *hdr, char **req, size_t *len)
{
	char target[2048];
	const char *hdrs[2];
	size_t nh = 0;
	int n = snprintf(target, sizeof target, "%s%s", AGENT_DOCKER_API, path);
	if (n < 0 || (size_t)n >= sizeof target)
		return PERCH_EINVAL;
	if (body != NULL)
		hdrs[nh++] = "Content-Type: application/json";
	if (hdr != NULL)
		hdrs[nh++] = hdr;
	perch_err err = perch_http_request(method, target, HOST, hdrs, nh, body,
	                                   body != NULL ? strlen(body) : 0, req, len);
	return err == PERCH_ETOOBIG ? PERCH_EINVAL : err;
}

/* call runs one blocking request; the answer is in d->resp (d->resp_len),
 * its status in *http. Transport failures are translated here (message in
 * d->errmsg); HTTP statuses are the caller's to judge. */
static perch_err call(agent_docker *d, const char *method, const char *path, const json_t *body,
                      long timeout_ms, long *http)
{
	perch_err err;
	char *js = NULL, *req = NULL;
	size_t req_len = 0;
	*http = 0;
	d->errmsg[0] = '\0';
	d->resp_len = 0;
	if (d->resp != NULL)
		d->resp[0] = '\0';
	if (body != NULL) {
		js = json_dumps(body, JSON_COMPACT);
		if (js == NULL)
			return PERCH_ENOMEM;
	}
	err = make_request(method, path, js, NULL, &req, &req_len);
	if (err != PERCH_OK) {
		snprintf(d->errmsg, sizeof d->errmsg, "bad request %s %.200s", method, path);
		goto free_js;
	}
	perch_http_sink sink = {.body = gather, .ud = d};
	long long deadline = agent_http_now_ms() + (timeout_ms ? timeout_ms : d->call_timeout_ms);
	err = agent_http_call(&d->call, d->path, &d->fd, req, req_len, &sink, d->connect_timeout_ms,
	                      deadline);
	if (err != PERCH_OK) {
		err = agent_docker_transport_err(d, &d->call, d->errmsg, sizeof d->errmsg);
		PERCH_DEBUG(AGENT_DOCKER_LOG, "%s %s: %s", method, path, d->errmsg);
		goto free_req;
	}
	*http = d->call.parser.status;
free_req:
	perch_http_request_free(req, req_len);
free_js:
	agent_docker_json_text_free(js);
	return err;
}

/* judge translates the status of the last blocking call; on failure the
 * engine's message goes to d->errmsg. */
static perch_err judge(agent_docker *d, long http, perch_err conflict)
{
	perch_err err = agent_docker_err_from_http(http, conflict);
	if (err != PERCH_OK) {
		agent_docker_message(d->resp, d->resp_len, d->errmsg, sizeof d->errmsg);
		if (d->errmsg[0] == '\0')
			snprintf(d->errmsg, sizeof d->errmsg, "HTTP %ld", http);
	}
	return err;
}

/* call_json runs a blocking request and, on success, parses the answer into
 * *out (new reference) when out is not NULL. */
static perch_err call_json(agent_docker *d, const char *method, const char *path,
                           const json_t *body, perch_err conflict, long timeout_ms, json_t **out)
{
	long http;
	if (out != NULL)
		*out = NULL;
	perch_err err = call(d, method, path, body, timeout_ms, &http);
	if (err == PERCH_OK)
		err = judge(d, http, conflict);
	if (err != PERCH_OK || out == NULL)
		return err;
	json_error_t jerr;
	*out = json_loadb(d->resp != NULL ? d->resp : "", d->resp_len, JSON_DECODE_ANY, &jerr);
	if (*out == NULL) {
		snprintf(d->errmsg, sizeof d->errmsg, "%s %s: answer is not JSON: %s", method, path,
		         jerr.text);
		return PERCH_EPROTO;
	}
	return PERCH_OK;
}

/* ref_path builds pre + ref + post, after checking that ref is an id or name. */
static perch_err ref_path(agent_docker *d, char *out, size_t cap, const char *pre, const char *ref,
                          const char *post)
{
	if (!agent_docker_valid_ref(ref)) {
		snprintf(d->errmsg, sizeof d->errmsg, "not a container id or name: '%.64s'",
		         ref ? ref : "(null)");
		return PERCH_EINVAL;
	}
	if (*ref == '/')
		ref++;
	int n = snprintf(out, cap, "%s%s%s", pre, ref, post);
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

/* ---- open / close ---------------------------------------------------------------- */

perch_err agent_docker_open(const agent_docker_opts *opts, agent_docker **out)
{
	const char *path = opts != NULL && opts->socket_path != NULL ? opts->socket_path
	                                                             : AGENT_DOCKER_DEFAULT_SOCK;
	*out = NULL;
	if (strlen(path) >= sizeof((agent_docker *)0)->path || *path == '\0')
		return PERCH_EINVAL;
	agent_docker *d = perch_calloc(1, sizeof *d);
	if (d == NULL)
		return PERCH_ENOMEM;
	snprintf(d->path, sizeof d->path, "%s", path);
	d->call_timeout_ms =
	        opts != NULL && opts->call_timeout_ms > 0 ? opts->call_timeout_ms : 30000;
	d->connect_timeout_ms =
	        opts != NULL && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 3000;
	d->fd = -1;
	d->ev_retry_at = -1;
	*out = d;
	return PERCH_OK;
}

void agent_docker_close(agent_docker *d)
{
	if (d == NULL)
		return;
	d->ev_on = false;
	while (d->ops != NULL) {
		agent_docker_op *op = d->ops;
		d->ops = op->next;
		agent_docker_op_free(op);
	}
	if (d->fd >= 0)
		close(d->fd);
	perch_free(d->resp);
	perch_free(d);
}

const char *agent_docker_errmsg(const agent_docker *d)
{
	return d->errmsg;
}

bool agent_docker_stale_task(const char *m)
{
	if (m == NULL)
		return false;
	if (strncmp(m, "task ", 5) == 0 && strstr(m, ": already exists") != NULL)
		return true;
	const char *shim = strstr(m, "failed to start shim: ");
	return shim != NULL && strstr(shim, "file exists") != NULL;
}

const char *agent_docker_socket(const agent_docker *d)
{
	return d->path;
}

/* ---- short calls ------------------------------------------------------------------ */

perch_err agent_docker_ping(agent_docker *d)
{
	return call_json(d, "GET", "/_ping", NULL, PERCH_EBUSY, 0, NULL);
}

perch_err agent_docker_version(agent_docker *d, json_t **out)
{
	return call_json(d, "GET", "/version", NULL, PERCH_EBUSY, 0, out);
}

perch_err agent_docker_list(agent_docker *d, const char *label, bool all, json_t **out)
{
	char path[1200];
	*out = NULL;
	perch_err err = agent_docker_list_query(label, all, path, sizeof path);
	if (err != PERCH_OK)
		return err;
	err = call_json(d, "GET", path, NULL, PERCH_EBUSY, 0, out);
	if (err == PERCH_OK && !json_is_array(*out)) {
		json_decref(*out);
		*out = NULL;
		snprintf(d->errmsg, sizeof d->errmsg, "container list is not an array");
		return PERCH_EPROTO;
	}
	return err;
}

perch_err agent_docker_inspect(agent_docker *d, const char *ref, agent_docker_state *st,
                               json_t **raw)
{
	char path[256];
	json_t *o = NULL;
	if (raw != NULL)
		*raw = NULL;
	perch_err err = ref_path(d, path, sizeof path, "/containers/", ref, "/json");
	if (err == PERCH_OK)
		err = call_json(d, "GET", path, NULL, PERCH_EBUSY, 0, &o);
	if (err != PERCH_OK)
		return err;
	err = agent_docker_state_parse(o, st);
	if (err != PERCH_OK)
		snprintf(d->errmsg, sizeof d->errmsg, "inspect of %s: no State or Id", ref);
	if (err == PERCH_OK && raw != NULL)
		*raw = json_incref(o);
	json_decref(o);
	return err;
}

perch_err agent_docker_create(agent_docker *d, const char *name, const json_t *body,
                              char id[AGENT_DOCKER_ID_MAX])
{
	char path[256];
	json_t *o = NULL;
	id[0] = '\0';
	perch_err err = ref_path(d, path, sizeof path, "/containers/create?name=", name, "");
	if (err == PERCH_OK)
		err = call_json(d, "POST", path, body, PERCH_EEXIST, 0, &o);
	if (err != PERCH_OK)
		return err;
	const char *s = json_string_value(json_object_get(o, "Id"));
	if (s == NULL || strlen(s) >= AGENT_DOCKER_ID_MAX) {
		snprintf(d->errmsg, sizeof d->errmsg, "create of %s: no Id in the answer", name);
		err = PERCH_EPROTO;
	} else {
		snprintf(id, AGENT_DOCKER_ID_MAX, "%s", s);
	}
	json_decref(o);
	return err;
}

perch_err agent_docker_start(agent_docker *d, const char *ref)
{
	char path[256];
	perch_err err = ref_path(d, path, sizeof path, "/containers/", ref, "/start");
	return err != PERCH_OK ? err : call_json(d, "POST", path, NULL, PERCH_EBUSY, 0, NULL);
}

perch_err agent_docker_stop(agent_docker *d, const char *ref, int grace_s)
{
	char post[32], path[256];
	if (grace_s < 0)
		grace_s = 0;
	snprintf(post, sizeof post, "/stop?t=%d", grace_s);
	perch_err err = ref_path(d, path, sizeof path, "/containers/", ref, post);
	long timeout = d->call_timeout_ms + (long)grace_s * 1000;
	return err != PERCH_OK ? err : call_json(d, "POST", path, NULL, PERCH_EBUSY, timeout, NULL);
}

perch_err agent_docker_kill(agent_docker *d, const char *ref, const char *sig)
{
	char post[96], enc[48], path[256];
	if (sig == NULL)
		sig = "KILL";
	if (agent_docker_urlenc(sig, enc, sizeof enc) != PERCH_OK)
		return PERCH_EINVAL;
	snprintf(post, sizeof post, "/kill?signal=%s", enc);
	perch_err err = ref_path(d, path, sizeof path, "/containers/", ref, post);
	return err != PERCH_OK ? err : call_json(d, "POST", path, NULL, PERCH_EBUSY, 0, NULL);
}

perch_err agent_docker_remove(agent_docker *d, const char *ref, bool force)
{
	char path[256];
	perch_err err = ref_path(d, path, sizeof path, "/containers/", ref,
	                         force ? "?force=1&v=1" : "?v=1");
	return err != PERCH_OK ? err : call_json(d, "DELETE", path, NULL, PERCH_EBUSY, 0, NULL);
}

/* copy_id copies o.Id into id. */
static perch_err copy_id(agent_docker *d, const json_t *o, char id[AGENT_DOCKER_ID_MAX])
{
	const char *s = json_string_value(json_object_get(o, "Id"));
	if (s == NULL || strlen(s) >= AGENT_DOCKER_ID_MAX) {
		snprintf(d->errmsg, sizeof d->errmsg, "no Id in the engine's answer");
		return PERCH_EPROTO;
	}
	snprintf(id, AGENT_DOCKER_ID_MAX, "%s", s);
	return PERCH_OK;
}

perch_err agent_docker_network_ensure(agent_docker *d, const char *name, const json_t *labels,
                                      char id[AGENT_DOCKER_ID_MAX], bool *created)
{
	char path[256];
	json_t *o = NULL, *body = NULL;
	id[0] = '\0';
	if (created != NULL)
		*created = false;
	perch_err err = ref_path(d, path, sizeof path, "/networks/", name, "");
	if (err != PERCH_OK)
		return err;
	for (int attempt = 0; attempt < 2; attempt++) {
		err = call_json(d, "GET", path, NULL, PERCH_EBUSY, 0, &o);
		if (err != PERCH_ENOENT)
			break;
		body = json_pack("{s:s, s:s, s:b, s:O?}", "Name", name, "Driver", "bridge",
		                 "CheckDuplicate", 1, "Labels", labels);
		if (body == NULL)
			return PERCH_ENOMEM;
		err = call_json(d, "POST", "/networks/create", body, PERCH_EEXIST, 0, &o);
		json_decref(body);
		if (err == PERCH_OK) {
			if (created != NULL)
				*created = true;
			PERCH_INFO(AGENT_DOCKER_LOG, "created network %s", name);
			break;
		}
		if (err != PERCH_EEXIST) /* EEXIST: someone made it meanwhile: inspect */
			return err;
	}
	if (err == PERCH_OK)
		err = copy_id(d, o, id);
	json_decref(o);
	return err;
}

perch_err agent_docker_network_remove(agent_docker *d, const char *name)
{
	char path[256];
	perch_err err = ref_path(d, path, sizeof path, "/networks/", name, "");
	return err != PERCH_OK ? err : call_json(d, "DELETE", path, NULL, PERCH_EBUSY, 0, NULL);
}

/* image_path builds "/images/" + the encoded image reference + post. */
static perch_err image_path(agent_docker *d, char *out, size_t cap, const char *ref,
                            const char *post)
{
	char enc[768];
	if (ref == NULL || *ref == '\0' || agent_docker_urlenc(ref, enc, sizeof enc) != PERCH_OK) {
		snprintf(d->errmsg, sizeof d->errmsg, "not an image reference");
		return PERCH_EINVAL;
	}
	int n = snprintf(out, cap, "/images/%s%s", enc, post);
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

perch_err agent_docker_image_inspect(agent_docker *d, const char *ref, agent_docker_image *img)
{
	char path[1024];
	json_t *o = NULL;
	*img = (agent_docker_image){0};
	perch_err err = image_path(d, path, sizeof path, ref, "/json");
	if (err == PERCH_OK)
		err = call_json(d, "GET", path, NULL, PERCH_EBUSY, 0, &o);
	if (err != PERCH_OK)
		return err;
	err = copy_id(d, o, img->id);
	const char *dg = json_string_value(json_array_get(json_object_get(o, "RepoDigests"), 0));
	snprintf(img->digest, sizeof img->digest, "%s", dg != NULL ? dg : "");
	const json_t *sz = json_object_get(o, "Size");
	img->size = json_is_integer(sz) ? json_integer_value(sz) : 0;
	json_decref(o);
	return err;
}

perch_err agent_docker_image_remove(agent_docker *d, const char *ref, bool force)
{
	char path[1024];
	perch_err err = image_path(d, path, sizeof path, ref, force ? "?force=1" : "");
	return err != PERCH_OK ? err : call_json(d, "DELETE", path, NULL, PERCH_EBUSY, 0, NULL);
}

/* ---- async calls: what the loop polls, and service ------------------------------- */

size_t agent_docker_pollfds(agent_docker *d, struct pollfd *fds, size_t cap)
{
	size_t n = 0;
	for (const agent_docker_op *op = d->ops; op != NULL; op = op->next) {
		struct pollfd p;
		if (op->cancelled || !agent_http_xfer_pollfd(&op->x, &p))
			continue;
		if (n < cap)
			fds[n] = p;
		n++;
	}
	return n;
}

int agent_docker_timeout_ms(agent_docker *d)
{
	long long next = d->ev_retry_at;
	for (const agent_docker_op *op = d->ops; op != NULL; op = op->next) {
		long long t = op->cancelled ? -1 : agent_http_xfer_deadline(&op->x);
		if (t >= 0 && (next < 0 || t < next))
			next = t;
	}
	if (next < 0)
		return -1;
	long long left = next - agent_docker_now_ms();
	if (left <= 0)
		return 0;
	return left > 60000 ? 60000 : (int)left;
}

/* unlink_op takes op off d->ops; false when it is not there. */
static bool unlink_op(agent_docker *d, agent_docker_op *op)
{
	for (agent_docker_op **pp = &d->ops; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			return true;
		}
	}
	return false;
}

/* finish_op ends an async request whose exchange is DONE: the verdict goes
 * to its callback. op stays on the list, marked, and is reaped after the
 * service (a callback may still hold it: a cancel of it is then a no-op). */
static void finish_op(agent_docker *d, agent_docker_op *op)
{
	op->cancelled = true;
	d->nops--;
	char msg[AGENT_DOCKER_MSG_MAX];
	perch_err err = agent_docker_transport_err(d, &op->x, msg, sizeof msg);
	bool answered = op->x.err == PERCH_OK;
	if (answered) {
		op->http = op->x.parser.status;
		err = agent_docker_err_from_http(op->http, PERCH_EBUSY);
		if (err != PERCH_OK) {
			agent_docker_message(op->resp, op->resp_len, msg, sizeof msg);
			if (msg[0] == '\0')
				snprintf(msg, sizeof msg, "HTTP %ld", op->http);
		}
	}
	switch (op->kind) {
	case AGENT_DOCKER_OP_CALL: {
		json_t *o = NULL;
		if (op->resp_len > 0)
			o = json_loadb(op->resp, op->resp_len, JSON_DECODE_ANY, NULL);
		op->done(op->ud, err, op->http, o, msg);
		json_decref(o);
		break;
	}
	case AGENT_DOCKER_OP_PULL: agent_docker_pull_end(op, answered ? PERCH_OK : err, msg); break;
	case AGENT_DOCKER_OP_EVENTS: agent_docker_events_end(op, err, msg); break;
	}
}

/* reap frees the requests that ended or were cancelled inside service. */
static void reap(agent_docker *d)
{
	agent_docker_op **pp = &d->ops;
	while (*pp != NULL) {
		agent_docker_op *op = *pp;
		if (!op->cancelled) {
			pp = &op->next;
			continue;
		}
		*pp = op->next;
		agent_docker_op_free(op);
	}
}

void agent_docker_service(agent_docker *d, const struct pollfd *fds, size_t n)
{
	d->in_service++;
	/* What poll said, noted on each op before any callback runs: a callback
	 * may end an op, and a new one may get its descriptor's number. */
	for (agent_docker_op *op = d->ops; op != NULL; op = op->next) {
		op->revents = 0;
		for (size_t i = 0; i < n && op->x.fd >= 0; i++)
			if (fds[i].fd == op->x.fd)
				op->revents = (short)(op->revents | fds[i].revents);
	}
	/* Ops started by callbacks go to the head of the list, before op: they
	 * wait for the next service. A cancelled next stays on the list until
	 * reap, so next is always valid. */
	agent_docker_op *next;
	for (agent_docker_op *op = d->ops; op != NULL; op = next) {
		next = op->next;
		if (op->cancelled)
			continue;
		short rev = op->revents;
		op->revents = 0;
		if (agent_http_xfer_step(&op->x, rev) && !op->cancelled)
			finish_op(d, op);
	}
	agent_docker_events_tick(d);
	if (--d->in_service == 0)
		reap(d);
}

perch_err agent_docker_run(agent_docker *d, int timeout_ms)
{
	struct pollfd fds[64];
	size_t n = agent_docker_pollfds(d, fds, 64);
	if (n > 64)
		n = 64;
	int t = agent_docker_timeout_ms(d);
	if (t < 0 || (timeout_ms >= 0 && timeout_ms < t))
		t = timeout_ms;
	int r = poll(fds, (nfds_t)n, t);
	if (r < 0 && errno != EINTR)
		return PERCH_EIO;
	if (r <= 0)
		for (size_t i = 0; i < n; i++)
			fds[i].revents = 0;
	agent_docker_service(d, fds, n);
	return PERCH_OK;
}

size_t agent_docker_pending(const agent_docker *d)
{
	return d->nops + (d->ev_on && d->ev_op == NULL ? 1 : 0);
}

void agent_docker_cancel(agent_docker *d, agent_docker_op *op)
{
	bool found = false;
	for (agent_docker_op *p = d->ops; p != NULL && !found; p = p->next)
		found = p == op;
	if (!found || op->cancelled)
		return; /* finished, or already cancelled */
	if (op == d->ev_op)
		d->ev_op = NULL;
	d->nops--;
	if (d->in_service > 0) {
		op->cancelled = true; /* service may be inside op: reap it later */
		return;
	}
	unlink_op(d, op);
	agent_docker_op_free(op);
}

/* ---- async requests ------------------------------------------------------------------ */

static perch_err op_head(void *ud, const perch_http_parser *p)
{
	agent_docker_op *op = ud;
	if (op->cancelled)
		return PERCH_ECLOSED;
	op->http = p->status;
	if (op->kind == AGENT_DOCKER_OP_EVENTS && op->http == 200)
		agent_docker_events_headers(op);
	return PERCH_OK;
}

static perch_err op_body(void *ud, const char *data, size_t n)
{
	agent_docker_op *op = ud;
	if (op->cancelled)
		return PERCH_ECLOSED; /* cancelled from a callback: stop reading */
	if (op->kind == AGENT_DOCKER_OP_CALL || op->http != 200)
		return buf_append(&op->resp, &op->resp_len, &op->resp_cap, data, n,
		                  AGENT_DOCKER_BODY_MAX);
	if (op->kind == AGENT_DOCKER_OP_PULL)
		return agent_docker_pull_write(op, data, n);
	return agent_docker_events_write(op, data, n);
}

perch_err agent_docker_op_new(agent_docker *d, agent_docker_op_kind kind, const char *method,
                              const char *path, const json_t *body, const char *hdr,
                              long timeout_ms, agent_docker_op **out)
{
	perch_err err = PERCH_ENOMEM;
	char *js = NULL;
	*out = NULL;
	agent_docker_op *op = perch_calloc(1, sizeof *op);
	if (op == NULL)
		return PERCH_ENOMEM;
	op->d = d;
	op->kind = kind;
	op->x.fd = -1;
	op->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	if (body != NULL) {
		js = json_dumps(body, JSON_COMPACT);
		if (js == NULL)
			goto fail;
	}
	err = make_request(method, path, js, hdr, &op->req, &op->req_len);
	agent_docker_json_text_free(js);
	if (err != PERCH_OK)
		goto fail;
	*out = op;
	return PERCH_OK;
fail:
	agent_docker_op_free(op);
	return err;
}

perch_err agent_docker_op_add(agent_docker *d, agent_docker_op *op)
{
	long long deadline = op->timeout_ms > 0 ? agent_http_now_ms() + op->timeout_ms : -1;
	perch_http_sink sink = {.head = op_head, .body = op_body, .ud = op};
	op->next = d->ops;
	d->ops = op;
	d->nops++;
	agent_http_xfer_begin(&op->x, d->path, -1, op->req, op->req_len, &sink,
	                      d->connect_timeout_ms, deadline);
	return PERCH_OK;
}

void agent_docker_op_free(agent_docker_op *op)
{
	if (op == NULL)
		return;
	(void)agent_http_xfer_end(&op->x); /* an async op never keeps its connection */
	perch_http_request_free(op->req, op->req_len);
	perch_free(op->resp);
	agent_docker_jsplit_fini(&op->js);
	perch_free(op);
}

perch_err agent_docker_call_async(agent_docker *d, const char *method, const char *path,
                                  const json_t *body, long timeout_ms, agent_docker_done_fn done,
                                  void *ud, agent_docker_op **opp)
{
	agent_docker_op *op;
	if (opp != NULL)
		*opp = NULL;
	if (done == NULL || path == NULL || *path != '/')
		return PERCH_EINVAL;
	perch_err err = agent_docker_op_new(d, AGENT_DOCKER_OP_CALL, method, path, body, NULL,
	                                    timeout_ms ? timeout_ms : d->call_timeout_ms, &op);
	if (err != PERCH_OK)
		return err;
	op->done = done;
	op->ud = ud;
	err = agent_docker_op_add(d, op);
	if (err == PERCH_OK && opp != NULL)
		*opp = op;
	return err;
}
