/*
 * docker_wire.c — the pure half of the Docker client: URL and query
 * building, X-Registry-Auth encoding, translation of HTTP statuses and
 * engine messages into perch_err, the splitter that cuts a byte stream into
 * JSON objects whatever the chunking, and the parsers of pull progress,
 * /events objects and container state. No I/O here; docker_test.c covers it.
 */
#include "docker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "perch/alloc.h"

perch_err agent_docker_urlenc(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		             (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
		             *p == '~';
		size_t need = plain ? 1 : 3;
		if (o + need >= cap)
			return PERCH_ETOOBIG;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	if (cap == 0)
		return PERCH_ETOOBIG;
	out[o] = '\0';
	return PERCH_OK;
}

bool agent_docker_valid_ref(const char *ref)
{
	if (ref == NULL)
		return false;
	if (*ref == '/')
		ref++;
	size_t n = strlen(ref);
	if (n == 0 || n >= AGENT_DOCKER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = ref[i];
		bool alnum =
		        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			return false;
	}
	return true;
}

perch_err agent_docker_b64url(const unsigned char *in, size_t n, char *out, size_t cap)
{
	static const char tab[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t need = (n + 2) / 3 * 4 + 1;
	if (cap < need)
		return PERCH_ETOOBIG;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = (char)(i + 1 < n ? tab[(v >> 6) & 63] : '=');
		out[o++] = (char)(i + 2 < n ? tab[v & 63] : '=');
	}
	out[o] = '\0';
	return PERCH_OK;
}

perch_err agent_docker_registry_auth(const agent_docker_auth *auth, char **out)
{
	perch_err err = PERCH_ENOMEM;
	char *js = NULL, *b64 = NULL;
	json_t *o = json_pack("{s:s, s:s, s:s}", "username", auth->username ? auth->username : "",
	                      "password", auth->password ? auth->password : "", "serveraddress",
	                      auth->serveraddress ? auth->serveraddress : "");
	if (o == NULL)
		goto out;
	js = json_dumps(o, JSON_COMPACT);
	if (js == NULL)
		goto free_obj;
	size_t n = strlen(js);
	size_t cap = (n + 2) / 3 * 4 + 1;
	b64 = perch_malloc(cap);
	if (b64 == NULL)
		goto free_js;
	err = agent_docker_b64url((const unsigned char *)js, n, b64, cap);
	if (err != PERCH_OK) {
		perch_free(b64);
		b64 = NULL;
	}
free_js:
	/* jansson's buffer holds the password in clear: wipe it. */
	memset(js, 0, strlen(js));
	agent_docker_json_text_free(js);
free_obj:
	json_decref(o);
out:
	*out = b64;
	return err;
}

perch_err agent_docker_pull_query(const char *image, const char *tag, char *out, size_t cap)
{
	char img[512], tg[256];
	if (image == NULL || *image == '\0')
		return PERCH_EINVAL;
	if (agent_docker_urlenc(image, img, sizeof img) != PERCH_OK)
		return PERCH_ETOOBIG;
	int n;
	if (tag != NULL) {
		if (*tag == '\0' || agent_docker_urlenc(tag, tg, sizeof tg) != PERCH_OK)
			return PERCH_EINVAL;
		n = snprintf(out, cap, "/images/create?fromImage=%s&tag=%s", img, tg);
	} else {
		n = snprintf(out, cap, "/images/create?fromImage=%s", img);
	}
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

perch_err agent_docker_list_query(const char *label, bool all, char *out, size_t cap)
{
	int n;
	if (label == NULL) {
		n = snprintf(out, cap, "/containers/json?all=%d", all ? 1 : 0);
		return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
	}
	json_t *f = json_pack("{s:[s]}", "label", label);
	if (f == NULL)
		return PERCH_ENOMEM;
	char *js = json_dumps(f, JSON_COMPACT);
	json_decref(f);
	if (js == NULL)
		return PERCH_ENOMEM;
	char enc[1024];
	perch_err err = agent_docker_urlenc(js, enc, sizeof enc);
	agent_docker_json_text_free(js);
	if (err != PERCH_OK)
		return err;
	n = snprintf(out, cap, "/containers/json?all=%d&filters=%s", all ? 1 : 0, enc);
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

perch_err agent_docker_err_from_http(long http, perch_err conflict)
{
	if ((http >= 200 && http < 300) || http == 304)
		return PERCH_OK;
	switch (http) {
	case 400: return PERCH_EINVAL;
	case 401:
	case 403: return PERCH_EPERM;
	case 404: return PERCH_ENOENT;
	case 409: return conflict;
	default: break;
	}
	if (http >= 500 && http < 600)
		return PERCH_EIO;
	return PERCH_EPROTO;
}

/* contains_ci: does s contain needle, ignoring case? */
static bool contains_ci(const char *s, const char *needle)
{
	size_t n = strlen(needle);
	for (; *s != '\0'; s++)
		if (strncasecmp(s, needle, n) == 0)
			return true;
	return false;
}

perch_err agent_docker_pull_classify(long http, const char *msg)
{
	static const char *const perm[] = {"unauthorized",
	                                   "authentication required",
	                                   "no basic auth credentials",
	                                   "denied",
	                                   "forbidden",
	                                   "incorrect username or password"};
	static const char *const absent[] = {"manifest unknown", "not found", "name unknown",
	                                     "does not exist", "no such image"};
	static const char *const unreachable[] = {"connection refused",
	                                          "no such host",
	                                          "i/o timeout",
	                                          "dial tcp",
	                                          "connection reset",
	                                          "tls handshake",
	                                          "server gave http response"};
	if (msg == NULL)
		msg = "";
	if (http == 401 || http == 403)
		return PERCH_EPERM;
	for (size_t i = 0; i < sizeof perm / sizeof perm[0]; i++)
		if (contains_ci(msg, perm[i]))
			return PERCH_EPERM;
	if (http == 404)
		return PERCH_ENOENT;
	for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
		if (contains_ci(msg, absent[i]))
			return PERCH_ENOENT;
	for (size_t i = 0; i < sizeof unreachable / sizeof unreachable[0]; i++)
		if (contains_ci(msg, unreachable[i]))
			return PERCH_EIO;
	if (http == 400)
		return PERCH_EINVAL;
	return PERCH_EIO;
}

void agent_docker_message(const char *body, size_t len, char *out, size_t cap)
{
	if (cap == 0)
		return;
	out[0] = '\0';
	if (body == NULL || len == 0)
		return;
	json_t *o = json_loadb(body, len, 0, NULL);
	const char *m = o != NULL ? json_string_value(json_object_get(o, "message")) : NULL;
	if (m != NULL) {
		snprintf(out, cap, "%s", m);
	} else {
		size_t n = 0;
		while (n < len && body[n] != '\n' && body[n] != '\r' && n + 1 < cap)
			n++;
		memcpy(out, body, n);
		out[n] = '\0';
	}
	json_decref(o);
}

/* jsplit_put appends one byte to the object being gathered. */
static perch_err jsplit_put(agent_docker_jsplit *js, char c)
{
	size_t max = js->max ? js->max : AGENT_DOCKER_OBJ_MAX;
	if (js->len >= max)
		return PERCH_ETOOBIG;
	if (js->len == js->cap) {
		size_t ncap = js->cap ? js->cap * 2 : 512;
		char *p = perch_realloc(js->buf, ncap);
		if (p == NULL)
			return PERCH_ENOMEM;
		js->buf = p;
		js->cap = ncap;
	}
	js->buf[js->len++] = c;
	return PERCH_OK;
}

/* jsplit_reset forgets the object being gathered. */
static void jsplit_reset(agent_docker_jsplit *js)
{
	js->len = 0;
	js->depth = 0;
	js->in_str = false;
	js->esc = false;
}

perch_err agent_docker_jsplit_feed(agent_docker_jsplit *js, const char *data, size_t n,
                                   agent_docker_obj_fn fn, void *ud)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (js->depth == 0) {
			if (c == '{') {
				js->depth = 1;
				js->len = 0;
				perch_err err = jsplit_put(js, c);
				if (err != PERCH_OK) {
					jsplit_reset(js);
					return err;
				}
			} else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
				js->skipped++;
			}
			continue;
		}
		perch_err err = jsplit_put(js, c);
		if (err != PERCH_OK) {
			jsplit_reset(js);
			return err;
		}
		if (js->in_str) {
			if (js->esc)
				js->esc = false;
			else if (c == '\\')
				js->esc = true;
			else if (c == '"')
				js->in_str = false;
			continue;
		}
		if (c == '"') {
			js->in_str = true;
		} else if (c == '{' || c == '[') {
			js->depth++;
		} else if (c == '}' || c == ']') {
			if (--js->depth > 0)
				continue;
			json_t *o = json_loadb(js->buf, js->len, 0, NULL);
			jsplit_reset(js);
			if (o == NULL)
				return PERCH_EPROTO;
			err = fn(ud, o);
			json_decref(o);
			if (err != PERCH_OK)
				return err;
		}
	}
	return PERCH_OK;
}

void agent_docker_jsplit_fini(agent_docker_jsplit *js)
{
	perch_free(js->buf);
	*js = (agent_docker_jsplit){.max = js->max};
}

/* str_or: the string value of o[key], or dflt. */
static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s != NULL ? s : dflt;
}

/* int_or: the integer value of o[key], or dflt. */
static long long int_or(const json_t *o, const char *key, long long dflt)
{
	const json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? json_integer_value(v) : dflt;
}

bool agent_docker_progress_parse(const json_t *obj, agent_docker_progress *p, const char **error)
{
	*error = NULL;
	const json_t *ed = json_object_get(obj, "errorDetail");
	const char *e = json_string_value(json_object_get(ed, "message"));
	if (e == NULL)
		e = json_string_value(json_object_get(obj, "error"));
	if (e != NULL || json_object_get(obj, "error") != NULL) {
		*error = e != NULL ? e : "pull failed";
		return true;
	}
	const json_t *pd = json_object_get(obj, "progressDetail");
	p->layer = str_or(obj, "id", "");
	p->status = str_or(obj, "status", "");
	p->current = int_or(pd, "current", -1);
	p->total = int_or(pd, "total", -1);
	return false;
}

/* parse_action maps the engine's Action text to the enum. */
static agent_docker_action parse_action(const char *a, const char **health)
{
	static const struct {
		const char *name;
		agent_docker_action act;
	} tab[] = {
	        {"start", AGENT_DOCKER_ACT_START}, {"die", AGENT_DOCKER_ACT_DIE},
	        {"kill", AGENT_DOCKER_ACT_KILL},   {"oom", AGENT_DOCKER_ACT_OOM},
	        {"stop", AGENT_DOCKER_ACT_STOP},   {"destroy", AGENT_DOCKER_ACT_DESTROY},
	};
	*health = "";
	static const char hs[] = "health_status";
	if (strncmp(a, hs, sizeof hs - 1) == 0) {
		const char *h = a + sizeof hs - 1;
		while (*h == ':' || *h == ' ')
			h++;
		*health = h;
		return AGENT_DOCKER_ACT_HEALTH;
	}
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
		if (strcmp(a, tab[i].name) == 0)
			return tab[i].act;
	return AGENT_DOCKER_ACT_OTHER;
}

perch_err agent_docker_event_parse(const json_t *obj, agent_docker_event *ev)
{
	*ev = (agent_docker_event){.kind = AGENT_DOCKER_EV_CONTAINER, .exit_code = -1, .msg = ""};
	const char *type = str_or(obj, "Type", NULL);
	if (type == NULL || strcmp(type, "container") != 0)
		return PERCH_EINVAL;
	const json_t *actor = json_object_get(obj, "Actor");
	const json_t *attrs = json_object_get(actor, "Attributes");
	ev->id = str_or(actor, "ID", str_or(obj, "id", NULL));
	ev->action_text = str_or(obj, "Action", str_or(obj, "status", NULL));
	if (ev->id == NULL || ev->action_text == NULL || !json_is_object(attrs))
		return PERCH_EINVAL;
	ev->attrs = attrs;
	ev->action = parse_action(ev->action_text, &ev->health);
	ev->name = str_or(attrs, "name", "");
	ev->image = str_or(attrs, "image", "");
	ev->signal = ev->action == AGENT_DOCKER_ACT_KILL ? str_or(attrs, "signal", "") : "";
	if (ev->action == AGENT_DOCKER_ACT_DIE) {
		const char *ec = str_or(attrs, "exitCode", NULL);
		if (ec != NULL) {
			char *end;
			long v = strtol(ec, &end, 10);
			if (end != ec && *end == '\0' && v >= -1 && v <= 255)
				ev->exit_code = (int)v;
		}
	}
	ev->time_ns = int_or(obj, "timeNano", int_or(obj, "time", 0) * 1000000000LL);
	return PERCH_OK;
}

/* copy_str copies o[key] (a string) into out, or "" when absent. */
static void copy_str(const json_t *o, const char *key, char *out, size_t cap)
{
	snprintf(out, cap, "%s", str_or(o, key, ""));
}

perch_err agent_docker_state_parse(const json_t *obj, agent_docker_state *st)
{
	*st = (agent_docker_state){0};
	const json_t *s = json_object_get(obj, "State");
	const char *id = str_or(obj, "Id", NULL);
	if (!json_is_object(s) || id == NULL)
		return PERCH_EPROTO;
	snprintf(st->id, sizeof st->id, "%s", id);
	const char *name = str_or(obj, "Name", "");
	snprintf(st->name, sizeof st->name, "%s", *name == '/' ? name + 1 : name);
	copy_str(obj, "Image", st->image_id, sizeof st->image_id);
	copy_str(s, "Status", st->status, sizeof st->status);
	copy_str(json_object_get(s, "Health"), "Status", st->health, sizeof st->health);
	copy_str(s, "StartedAt", st->started_at, sizeof st->started_at);
	copy_str(s, "FinishedAt", st->finished_at, sizeof st->finished_at);
	st->running = json_is_true(json_object_get(s, "Running"));
	st->restarting = json_is_true(json_object_get(s, "Restarting"));
	st->oom_killed = json_is_true(json_object_get(s, "OOMKilled"));
	st->exit_code = (int)int_or(s, "ExitCode", 0);
	st->pid = (long)int_or(s, "Pid", 0);
	st->restart_count = (int)int_or(obj, "RestartCount", 0);
	return PERCH_OK;
}

void agent_docker_json_text_free(char *text)
{
	json_malloc_t m;
	json_free_t f;
	json_get_alloc_funcs(&m, &f);
	(void)m;
	f(text);
}
