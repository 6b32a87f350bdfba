/*
 * docker.c — the Docker client's core: the blocking short calls on a private
 * libcurl easy handle, and the libcurl multi handle that runs the long calls
 * (pulls, the events stream, async requests) under the loop's control — the
 * socket and timer callbacks that keep the pollfd list, agent_docker_service,
 * and the completion of each async request. See docker.h for the contract.
 */
#include "docker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perch/alloc.h"
#include "perch/log.h"

long long agent_docker_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- transport ----------------------------------------------------------------- */

perch_err agent_docker_transport_err(const agent_docker *d, CURLcode rc, char *msg, size_t cap)
{
	switch (rc) {
	case CURLE_OK: snprintf(msg, cap, "%s", ""); return PERCH_OK;
	case CURLE_COULDNT_CONNECT:
		snprintf(msg, cap, "Docker daemon not answering at %s", d->path);
		return PERCH_ECLOSED;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		snprintf(msg, cap, "Docker daemon at %s closed the connection (%s)", d->path,
		         curl_easy_strerror(rc));
		return PERCH_ECLOSED;
	case CURLE_OPERATION_TIMEDOUT:
		snprintf(msg, cap, "Docker daemon at %s: request timed out", d->path);
		return PERCH_ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY: snprintf(msg, cap, "out of memory"); return PERCH_ENOMEM;
	case CURLE_WRITE_ERROR:
		snprintf(msg, cap, "Docker daemon at %s: answer too large or malformed", d->path);
		return PERCH_EPROTO;
	default:
		snprintf(msg, cap, "Docker daemon at %s: %s", d->path, curl_easy_strerror(rc));
		return PERCH_EIO;
	}
}

/* buf_append adds n bytes to a growable buffer, keeping a NUL after them.
 * false when the buffer would pass max or memory is refused. */
static bool buf_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n, size_t max)
{
	if (*len + n + 1 > max)
		return false;
	if (*len + n + 1 > *cap) {
		size_t ncap = *cap ? *cap : 1024;
		while (ncap < *len + n + 1)
			ncap *= 2;
		char *p = perch_realloc(*buf, ncap);
		if (p == NULL)
			return false;
		*buf = p;
		*cap = ncap;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
	return true;
}

static size_t easy_write(char *ptr, size_t sz, size_t nm, void *ud)
{
	agent_docker *d = ud;
	size_t n = sz * nm;
	return buf_append(&d->resp, &d->resp_len, &d->resp_cap, ptr, n, AGENT_DOCKER_BODY_MAX) ? n
	                                                                                       : 0;
}

/* set_common sets what every request has: the socket, the URL below the API
 * version, the method, the body, the timeouts. */
static CURLcode set_common(const agent_docker *d, CURL *e, const char *method, const char *path,
                           const char *body, long timeout_ms)
{
	char url[2048];
	int n = snprintf(url, sizeof url, "http://docker%s%s", AGENT_DOCKER_API, path);
	if (n < 0 || (size_t)n >= sizeof url)
		return CURLE_URL_MALFORMAT;
	CURLcode rc = CURLE_OK;
	rc |= curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, d->path);
	rc |= curl_easy_setopt(e, CURLOPT_URL, url);
	rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->connect_timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
	if (strcmp(method, "POST") == 0) {
		rc |= curl_easy_setopt(e, CURLOPT_POST, 1L);
		rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, body != NULL ? body : "");
		rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE,
		                       (long)(body != NULL ? strlen(body) : 0));
	} else if (strcmp(method, "GET") == 0) {
		rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else {
		rc |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	return rc != CURLE_OK ? CURLE_BAD_FUNCTION_ARGUMENT : CURLE_OK;
}

/* call runs one blocking request; the answer is in d->resp (d->resp_len),
 * its status in *http. Transport failures are translated here (message in
 * d->errmsg); HTTP statuses are the caller's to judge. */
static perch_err call(agent_docker *d, const char *method, const char *path, const json_t *body,
                      long timeout_ms, long *http)
{
	perch_err err = PERCH_OK;
	char *js = NULL;
	struct curl_slist *hdrs = NULL;
	*http = 0;
	d->errmsg[0] = '\0';
	d->resp_len = 0;
	if (d->resp != NULL)
		d->resp[0] = '\0';
	if (body != NULL) {
		js = json_dumps(body, JSON_COMPACT);
		if (js == NULL)
			return PERCH_ENOMEM;
		hdrs = curl_slist_append(NULL, "Content-Type: application/json");
		if (hdrs == NULL) {
			err = PERCH_ENOMEM;
			goto free_js;
		}
	}
	CURL *e = d->easy;
	curl_easy_reset(e);
	CURLcode rc =
	        set_common(d, e, method, path, js, timeout_ms ? timeout_ms : d->call_timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, easy_write);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, d);
	if (hdrs != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
	if (rc != CURLE_OK) {
		snprintf(d->errmsg, sizeof d->errmsg, "bad request %s %s", method, path);
		err = PERCH_EINVAL;
		goto free_hdrs;
	}
	rc = curl_easy_perform(e);
	if (rc != CURLE_OK) {
		err = agent_docker_transport_err(d, rc, d->errmsg, sizeof d->errmsg);
		PERCH_DEBUG(AGENT_DOCKER_LOG, "%s %s: %s", method, path, d->errmsg);
		goto free_hdrs;
	}
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, http);
free_hdrs:
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
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

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp);
static int timer_cb(CURLM *m, long timeout_ms, void *userp);

perch_err agent_docker_open(const agent_docker_opts *opts, agent_docker **out)
{
	static bool curl_ready;
	const char *path = opts != NULL && opts->socket_path != NULL ? opts->socket_path
	                                                             : AGENT_DOCKER_DEFAULT_SOCK;
	*out = NULL;
	if (strlen(path) >= sizeof((agent_docker *)0)->path || *path == '\0')
		return PERCH_EINVAL;
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return PERCH_EIO;
		curl_ready = true;
	}
	agent_docker *d = perch_calloc(1, sizeof *d);
	if (d == NULL)
		return PERCH_ENOMEM;
	snprintf(d->path, sizeof d->path, "%s", path);
	d->call_timeout_ms =
	        opts != NULL && opts->call_timeout_ms > 0 ? opts->call_timeout_ms : 30000;
	d->connect_timeout_ms =
	        opts != NULL && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 3000;
	d->curl_deadline = -1;
	d->ev_retry_at = -1;
	d->easy = curl_easy_init();
	d->multi = curl_multi_init();
	if (d->easy == NULL || d->multi == NULL) {
		agent_docker_close(d);
		return PERCH_EIO;
	}
	CURLMcode mc = curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	mc |= curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
	mc |= curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	mc |= curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
	if (mc != CURLM_OK) {
		agent_docker_close(d);
		return PERCH_EIO;
	}
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
		curl_multi_remove_handle(d->multi, op->easy);
		agent_docker_op_free(op);
	}
	if (d->multi != NULL)
		curl_multi_cleanup(d->multi);
	if (d->easy != NULL)
		curl_easy_cleanup(d->easy);
	perch_free(d->socks);
	perch_free(d->resp);
	perch_free(d);
}

const char *agent_docker_errmsg(const agent_docker *d)
{
	return d->errmsg;
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

/* ---- the multi handle: sockets and timers ------------------------------------------ */

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)e;
	(void)socketp;
	agent_docker *d = userp;
	size_t i = 0;
	while (i < d->nsocks && d->socks[i].fd != s)
		i++;
	if (what == CURL_POLL_REMOVE) {
		if (i < d->nsocks)
			d->socks[i] = d->socks[--d->nsocks];
		return 0;
	}
	if (i == d->nsocks) {
		agent_docker_sock *p =
		        perch_grow(d->socks, d->nsocks, &d->capsocks, sizeof *d->socks, 8);
		if (p == NULL)
			return -1; /* libcurl fails the transfer */
		d->socks = p;
		d->nsocks++;
	}
	d->socks[i] = (agent_docker_sock){.fd = s, .what = what};
	return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	agent_docker *d = userp;
	d->curl_deadline = timeout_ms < 0 ? -1 : agent_docker_now_ms() + timeout_ms;
	return 0;
}

size_t agent_docker_pollfds(agent_docker *d, struct pollfd *fds, size_t cap)
{
	for (size_t i = 0; i < d->nsocks && i < cap; i++) {
		short ev = 0;
		if (d->socks[i].what & CURL_POLL_IN)
			ev |= POLLIN;
		if (d->socks[i].what & CURL_POLL_OUT)
			ev |= POLLOUT;
		fds[i] = (struct pollfd){.fd = d->socks[i].fd, .events = ev};
	}
	return d->nsocks;
}

int agent_docker_timeout_ms(agent_docker *d)
{
	long long next = d->curl_deadline;
	if (d->ev_retry_at >= 0 && (next < 0 || d->ev_retry_at < next))
		next = d->ev_retry_at;
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
			d->nops--;
			return true;
		}
	}
	return false;
}

/* finish_op ends an async request that libcurl completed with rc. */
static void finish_op(agent_docker *d, agent_docker_op *op, CURLcode rc)
{
	curl_multi_remove_handle(d->multi, op->easy);
	unlink_op(d, op);
	if (op->cancelled) {
		agent_docker_op_free(op);
		return;
	}
	op->cancelled = true; /* a cancel from its own done callback is a no-op */
	char msg[AGENT_DOCKER_MSG_MAX];
	perch_err err = agent_docker_transport_err(d, rc, msg, sizeof msg);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &op->http);
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
	case AGENT_DOCKER_OP_PULL:
		agent_docker_pull_end(op, rc == CURLE_OK ? PERCH_OK : err, msg);
		break;
	case AGENT_DOCKER_OP_EVENTS: agent_docker_events_end(op, err, msg); break;
	}
	agent_docker_op_free(op);
}

/* reap frees the requests cancelled from callbacks. */
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
		d->nops--;
		curl_multi_remove_handle(d->multi, op->easy);
		agent_docker_op_free(op);
	}
}

void agent_docker_service(agent_docker *d, const struct pollfd *fds, size_t n)
{
	int running = 0;
	d->in_service++;
	for (size_t i = 0; i < n; i++) {
		if (fds[i].revents == 0)
			continue;
		bool ours = false;
		for (size_t k = 0; k < d->nsocks && !ours; k++)
			ours = d->socks[k].fd == fds[i].fd;
		if (!ours)
			continue;
		int mask = 0;
		if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
			mask |= CURL_CSELECT_IN;
		if (fds[i].revents & POLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (fds[i].revents & POLLERR)
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(d->multi, fds[i].fd, mask, &running);
	}
	if (d->curl_deadline >= 0 && agent_docker_now_ms() >= d->curl_deadline) {
		d->curl_deadline = -1;
		curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(d->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		agent_docker_op *op = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&op);
		if (op != NULL)
			finish_op(d, op, m->data.result);
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
	if (poll(fds, (nfds_t)n, t) < 0 && errno != EINTR)
		return PERCH_EIO;
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
	if (!found)
		return; /* finished, or already cancelled and reaped */
	if (op == d->ev_op)
		d->ev_op = NULL;
	if (d->in_service > 0) {
		op->cancelled = true; /* libcurl may be inside op: reap it later */
		return;
	}
	unlink_op(d, op);
	curl_multi_remove_handle(d->multi, op->easy);
	agent_docker_op_free(op);
}

/* ---- async requests ------------------------------------------------------------------ */

static size_t op_write(char *ptr, size_t sz, size_t nm, void *ud)
{
	agent_docker_op *op = ud;
	size_t n = sz * nm;
	if (op->cancelled)
		return n;
	if (op->http == 0)
		curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &op->http);
	if (op->kind == AGENT_DOCKER_OP_CALL || op->http != 200)
		return buf_append(&op->resp, &op->resp_len, &op->resp_cap, ptr, n,
		                  AGENT_DOCKER_BODY_MAX)
		               ? n
		               : 0;
	if (op->kind == AGENT_DOCKER_OP_PULL)
		return agent_docker_pull_write(op, ptr, n);
	return agent_docker_events_write(op, ptr, n);
}

static size_t op_header(char *ptr, size_t sz, size_t nm, void *ud)
{
	agent_docker_op *op = ud;
	size_t n = sz * nm;
	if (op->cancelled || n > 2 || (n == 2 && ptr[0] != '\r') || (n == 1 && ptr[0] != '\n'))
		return n;
	/* The blank line: the headers are complete. */
	curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &op->http);
	if (op->kind == AGENT_DOCKER_OP_EVENTS && op->http == 200)
		agent_docker_events_headers(op);
	return n;
}

perch_err agent_docker_op_new(agent_docker *d, agent_docker_op_kind kind, const char *method,
                              const char *path, const json_t *body, long timeout_ms,
                              agent_docker_op **out)
{
	*out = NULL;
	agent_docker_op *op = perch_calloc(1, sizeof *op);
	if (op == NULL)
		return PERCH_ENOMEM;
	op->d = d;
	op->kind = kind;
	op->easy = curl_easy_init();
	if (op->easy == NULL)
		goto nomem;
	if (body != NULL) {
		char *js = json_dumps(body, JSON_COMPACT);
		if (js == NULL)
			goto nomem;
		op->req_body = perch_strdup(js);
		agent_docker_json_text_free(js);
		if (op->req_body == NULL)
			goto nomem;
		op->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
		if (op->hdrs == NULL)
			goto nomem;
	}
	CURLcode rc = set_common(d, op->easy, method, path, op->req_body, timeout_ms);
	rc |= curl_easy_setopt(op->easy, CURLOPT_WRITEFUNCTION, op_write);
	rc |= curl_easy_setopt(op->easy, CURLOPT_WRITEDATA, op);
	rc |= curl_easy_setopt(op->easy, CURLOPT_HEADERFUNCTION, op_header);
	rc |= curl_easy_setopt(op->easy, CURLOPT_HEADERDATA, op);
	rc |= curl_easy_setopt(op->easy, CURLOPT_PRIVATE, op);
	if (rc != CURLE_OK) {
		agent_docker_op_free(op);
		return PERCH_EINVAL;
	}
	*out = op;
	return PERCH_OK;
nomem:
	agent_docker_op_free(op);
	return PERCH_ENOMEM;
}

perch_err agent_docker_op_add(agent_docker *d, agent_docker_op *op)
{
	if (op->hdrs != NULL &&
	    curl_easy_setopt(op->easy, CURLOPT_HTTPHEADER, op->hdrs) != CURLE_OK) {
		agent_docker_op_free(op);
		return PERCH_EIO;
	}
	if (curl_multi_add_handle(d->multi, op->easy) != CURLM_OK) {
		agent_docker_op_free(op);
		return PERCH_EIO;
	}
	op->next = d->ops;
	d->ops = op;
	d->nops++;
	return PERCH_OK;
}

void agent_docker_op_free(agent_docker_op *op)
{
	if (op == NULL)
		return;
	if (op->easy != NULL)
		curl_easy_cleanup(op->easy);
	/* Header copies may hold X-Registry-Auth: wipe them before freeing. */
	for (struct curl_slist *h = op->hdrs; h != NULL; h = h->next)
		memset(h->data, 0, strlen(h->data));
	curl_slist_free_all(op->hdrs);
	if (op->auth != NULL) {
		memset(op->auth, 0, strlen(op->auth));
		perch_free(op->auth);
	}
	perch_free(op->req_body);
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
	perch_err err = agent_docker_op_new(d, AGENT_DOCKER_OP_CALL, method, path, body,
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
