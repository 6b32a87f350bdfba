/*
 * method_http.c — IoT Edge hub's direct-method REST endpoint on perch-hub's
 * WebSocket listeners (ws:// and wss://), what ModuleClient.invokeMethod of
 * the Azure IoT SDKs calls:
 *
 *   POST /twins/{device}/modules/{module}/methods   (a module)
 *   POST /twins/{device}/methods                    (the device, a leaf device)
 *   Authorization: SharedAccessSignature sr=...&sig=...&se=...
 *   x-ms-edge-moduleId: {caller device}/{caller module}    (optional)
 *   {"methodName":"reboot","payload":{...},"responseTimeoutInSeconds":30}
 *
 * The token is checked with the rules of CONNECT (identity.h); the caller
 * is the identity it names (x-ms-edge-moduleId, when sent, must be that
 * identity). method.c does the rest and the answer comes back here, maybe
 * minutes later, while the connection waits. listen.c hands every HTTP
 * callback of its WebSocket protocol here. Loop thread only.
 *
 * The same listeners take cloud-to-device messages for leaf devices (and
 * the device itself) from the edge device's own identity (the operator's
 * tools; the cloud sends them down the upstream link), c2d.c:
 *
 *   POST /devices/{device}/messages/devicebound
 *   Authorization: SharedAccessSignature ... (the edge device's)
 *   Content-Type, Content-Encoding         -> $.ct, $.ce
 *   iothub-messageid, iothub-correlationid -> $.mid, $.cid
 *   x-perch-properties: a=1&b=x            application properties, URL-encoded
 *                                          as in MQTT topics' property bags
 *   x-perch-ttl: seconds                   default 3600, at most 172800
 *   the body: the message (up to 64 KiB)
 *
 * answered 204 with iothub-messageid once the message is durable.
 *
 * And twins, from the edge device's identity (IoT Hub's service API; the
 * `perch twin` command): the twin of any identity here or behind a child
 * edge hub (docs/hub.md "Twins over the link"):
 *
 *   GET   /twins/{device}[/modules/{module}]
 *   PATCH /twins/{device}[/modules/{module}]   {"properties":{"desired":{...}}}
 *
 * answered 200 with {"deviceId":...,["moduleId":...,]"properties":
 * {"desired":{...,"$version":n},"reported":{...,"$version":m}}}. A PATCH
 * changes the twin's remote layer of desired properties (merged over the
 * deployment's; null deletes), stored before the answer, and sent to the
 * identity at once (or down its child hub's link).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iothub_int.h"
#include "perch/alloc.h"
#include "perch/log.h"
#include "perch/props.h"

#define LOG_MOD          "hub.method"
#define MAX_BODY         (132ull * 1024)  /* bytes: a 128 KiB payload and its envelope */
#define MAX_DISCARD      (1024ull * 1024) /* bytes of a refused body read (and dropped) first */
#define MAX_AUTH         2048             /* bytes of the Authorization header */
#define WAIT_LIMIT_S     (300 + 300 + 30) /* longest a call may take, and some */
#define ERR_UNAUTHORIZED 401002u
#define MAX_HEADER       1024 /* bytes of a property header */

struct hub_method_http {
	struct lws *wsi;
	hub *h;
	hub_identity caller;
	char device[PERCH_DEVICE_ID_MAX + 1]; /* target */
	char module[PERCH_DEVICE_ID_MAX + 1]; /* "" for a device */
	bool c2d;                             /* a cloud-to-device message, not a call */
	bool twin;                            /* a twin GET or PATCH, not a call */
	hub_c2d_req *c2d_req;                 /* pending in c2d.c, or NULL */
	perch_props *props;                   /* the C2D message's properties */
	uint32_t ttl_s;
	char mid[128]; /* the C2D message's id, for the answer */
	char *body;    /* the request body, len of expect bytes */
	size_t len, expect;
	hub_method_call *call; /* pending in method.c, or NULL */
	unsigned status;       /* non-zero once the answer is known */
	char *answer;          /* its body (JSON) */
	size_t alen;
	bool headers_sent;
	bool deferred; /* answered already: send it once the body is read (dropped) */
	bool close;    /* close the connection after the answer (a body left unread) */
};

static void req_free(hub_method_http *r)
{
	if (r == NULL)
		return;
	if (r->call != NULL)
		hub_method_cancel(r->h, r->call);
	hub_c2d_cancel(r->c2d_req);
	perch_free(r->props);
	perch_free(r->body);
	perch_free(r->answer);
	perch_free(r);
}

/* answer_now sets r's answer (body borrowed, copied) and asks to write it. */
static void answer_now(hub_method_http *r, unsigned status, const char *body, size_t len)
{
	perch_free(r->answer);
	r->answer = perch_malloc(len > 0 ? len : 1);
	r->alen = r->answer != NULL ? len : 0;
	if (r->answer != NULL && len > 0)
		memcpy(r->answer, body, len);
	r->status = status;
	lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
	if (!r->deferred)
		lws_callback_on_writable(r->wsi);
}

static void answer_error(hub_method_http *r, unsigned status, unsigned code, const char *msg)
{
	char body[512];
	size_t n = hub_iothub_error_body(body, sizeof body, code, msg);
	answer_now(r, status, body, n);
}

/* call_done: method.c's answer. */
static void call_done(void *arg, unsigned status, const char *body, size_t len)
{
	hub_method_http *r = arg;
	r->call = NULL;
	answer_now(r, status, body, len);
}

/* c2d_done: c2d.c's answer. */
static void c2d_done(void *arg, unsigned status, const char *body, size_t len, const char *mid)
{
	hub_method_http *r = arg;
	r->c2d_req = NULL;
	snprintf(r->mid, sizeof r->mid, "%s", mid);
	answer_now(r, status, body, len);
}

/* segment copies the next path segment of *p (up to '/' or the end),
 * percent-decoded, into out; false when empty, too long or badly encoded. */
static bool segment(const char **p, char *out, size_t cap)
{
	const char *s = *p, *e = strchr(s, '/');
	size_t n = e != NULL ? (size_t)(e - s) : strlen(s);
	size_t dn = 0;
	if (n == 0 ||
	    perch_props_url_decode((perch_slice){s, n}, out, cap - 1, &dn, NULL) != PERCH_OK)
		return false;
	out[dn] = '\0';
	*p = s + n;
	return dn > 0 && memchr(out, '\0', dn) == NULL;
}

/* parse_path: "/twins/{d}/methods" or "/twins/{d}/modules/{m}/methods";
 * or (*c2d set) "/devices/{d}/messages/devicebound"; or (*twin set)
 * "/twins/{d}" or "/twins/{d}/modules/{m}". */
static bool parse_path(const char *path, char *device, size_t dcap, char *module, size_t mcap,
                       bool *c2d, bool *twin)
{
	module[0] = '\0';
	*twin = false;
	*c2d = strncmp(path, "/devices/", 9) == 0;
	if (*c2d) {
		const char *p = path + 9;
		return segment(&p, device, dcap) && (strcmp(p, "/messages/devicebound") == 0 ||
		                                     strcmp(p, "/messages/devicebound/") == 0);
	}
	if (strncmp(path, "/twins/", 7) != 0)
		return false;
	const char *p = path + 7;
	if (!segment(&p, device, dcap))
		return false;
	if (strncmp(p, "/modules/", 9) == 0) {
		p += 9;
		if (!segment(&p, module, mcap))
			return false;
	}
	*twin = strcmp(p, "") == 0 || strcmp(p, "/") == 0;
	return *twin || strcmp(p, "/methods") == 0 || strcmp(p, "/methods/") == 0;
}

/* token_identity: "d" or "d/m" from the sr= resource of a SAS token
 * ("{host}/devices/{d}[/modules/{m}]", URL-encoded). */
static bool token_identity(const char *token, char *out, size_t cap)
{
	const char *sr = strstr(token, "sr=");
	if (sr == NULL)
		return false;
	sr += 3;
	size_t n = strcspn(sr, "& ");
	char res[600];
	size_t rn = 0;
	if (perch_props_url_decode((perch_slice){sr, n}, res, sizeof res - 1, &rn, NULL) !=
	    PERCH_OK)
		return false;
	res[rn] = '\0';
	const char *d = strstr(res, "/devices/");
	if (d == NULL)
		return false;
	d += 9;
	const char *m = strstr(d, "/modules/");
	if (m == NULL)
		return (size_t)snprintf(out, cap, "%s", d) < cap;
	return (size_t)snprintf(out, cap, "%.*s/%s", (int)(m - d), d, m + 9) < cap;
}

/* authenticate checks the Authorization header like a CONNECT's password;
 * false (and an answer set) when it does not authenticate. */
static bool authenticate(hub_method_http *r)
{
	hub *h = r->h;
	char auth[MAX_AUTH];
	int n = lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_AUTHORIZATION) < (int)sizeof auth
	                ? lws_hdr_copy(r->wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION)
	                : -1;
	char claimed[HUB_IDENT_NAME_MAX] = "";
	const char *why = NULL;
	if (n <= 0)
		why = "no Authorization header (a SharedAccessSignature)";
	else if (lws_hdr_custom_length(r->wsi, "x-ms-edge-moduleid:", 19) > 0) {
		if (lws_hdr_custom_copy(r->wsi, claimed, sizeof claimed,
		                        "x-ms-edge-moduleid:", 19) <= 0)
			why = "x-ms-edge-moduleId is too long";
	} else if (!token_identity(auth, claimed, sizeof claimed)) {
		why = "the token names no identity";
	}
	if (why == NULL) {
		char user[sizeof h->ids.iothub_host + HUB_IDENT_NAME_MAX + 40];
		snprintf(user, sizeof user, "%s/%s/?api-version=2018-06-28", h->ids.iothub_host,
		         claimed);
		hub_auth_request req = {
		        .client_id = perch_slice_cstr(claimed),
		        .username = perch_slice_cstr(user),
		        .has_password = true,
		        .password = {auth, (size_t)n},
		        .cert_cn = NULL,
		        .allow_anonymous = false,
		        .now = (uint64_t)time(NULL),
		};
		uint8_t code = 0;
		hub_auth_reason reason = hub_auth_check(&h->ids, &req, &r->caller, &code);
		if (reason == HUB_AUTH_OK && r->caller.kind != HUB_IDENT_ANONYMOUS)
			return true;
		why = reason == HUB_AUTH_OK ? "no identity" : hub_auth_reason_str(reason);
	}
	memset(auth, 0, sizeof auth);
	PERCH_WARN(LOG_MOD, "%s %s%s%s refused (401): %s%s%s",
	           r->c2d ? "C2D message for" : "method call on", r->device,
	           r->module[0] ? "/" : "", r->module, why, claimed[0] ? " for " : "", claimed);
	char msg[200];
	snprintf(msg, sizeof msg, "not authorized: %s", why);
	answer_error(r, 401, ERR_UNAUTHORIZED, msg);
	return false;
}

/* refuse answers before the body is read: a body of up to MAX_DISCARD
 * bytes is read and dropped first (so the client reads the answer, and the
 * connection can serve another request); a larger one is not read: the
 * connection closes after the answer. */
static int refuse(hub_method_http *r, unsigned long long body, unsigned status, unsigned code,
                  const char *msg)
{
	r->deferred = body > 0 && body <= MAX_DISCARD;
	r->close = body > MAX_DISCARD;
	answer_error(r, status, code, msg);
	return 0;
}

/* c2d_headers reads a C2D request's properties and TTL from its headers;
 * false (and an answer set) when they are not acceptable. */
static bool c2d_headers(hub_method_http *r)
{
	static const struct {
		const char *header; /* lws custom header name, with its ':' */
		const char *key;
	} named[] = {{"iothub-messageid:", "$.mid"}, {"iothub-correlationid:", "$.cid"}};
	static const struct {
		enum lws_token_indexes token; /* headers libwebsockets parses itself */
		const char *key;
		const char *bad; /* the answer when it is not acceptable */
	} known[] = {{WSI_TOKEN_HTTP_CONTENT_TYPE, "$.ct", "Content-Type is too long or not text"},
	             {WSI_TOKEN_HTTP_CONTENT_ENCODING, "$.ce",
	              "Content-Encoding is too long or not text"}};
	char v[MAX_HEADER];
	const char *why = NULL;
	r->props = perch_malloc(sizeof *r->props);
	if (r->props == NULL)
		return false;
	perch_props_init(r->props);
	int n = lws_hdr_custom_length(r->wsi, "x-perch-properties:", 19);
	if (n >= (int)sizeof v)
		why = "x-perch-properties is over 1 KiB";
	else if (n > 0 &&
	         (lws_hdr_custom_copy(r->wsi, v, sizeof v, "x-perch-properties:", 19) < 0 ||
	          perch_props_parse(perch_slice_cstr(v), r->props, NULL) != PERCH_OK))
		why = "x-perch-properties is not a URL-encoded property bag (k=v&k2=v2)";
	for (size_t i = 0; why == NULL && i < sizeof named / sizeof named[0]; i++) {
		int len = (int)strlen(named[i].header);
		n = lws_hdr_custom_length(r->wsi, named[i].header, len);
		if (n <= 0)
			continue;
		if (n >= (int)sizeof v ||
		    lws_hdr_custom_copy(r->wsi, v, sizeof v, named[i].header, len) < 0 ||
		    perch_props_set(r->props, perch_slice_cstr(named[i].key), perch_slice_cstr(v),
		                    NULL) != PERCH_OK)
			why = "a message property header is too long or not text";
	}
	for (size_t i = 0; why == NULL && i < sizeof known / sizeof known[0]; i++) {
		n = lws_hdr_total_length(r->wsi, known[i].token);
		if (n <= 0)
			continue;
		if (n >= (int)sizeof v || lws_hdr_copy(r->wsi, v, sizeof v, known[i].token) < 0 ||
		    perch_props_set(r->props, perch_slice_cstr(known[i].key), perch_slice_cstr(v),
		                    NULL) != PERCH_OK)
			why = known[i].bad;
	}
	r->ttl_s = HUB_C2D_DEFAULT_TTL_S;
	n = lws_hdr_custom_length(r->wsi, "x-perch-ttl:", 12);
	if (why == NULL && n > 0) {
		char *end = NULL;
		unsigned long t = 0;
		if (n < 16 && lws_hdr_custom_copy(r->wsi, v, sizeof v, "x-perch-ttl:", 12) > 0)
			t = strtoul(v, &end, 10);
		if (end == NULL || end == v || *end != '\0' || t == 0 || t > HUB_C2D_MAX_TTL_S)
			why = "x-perch-ttl must be 1 to 172800 seconds";
		else
			r->ttl_s = (uint32_t)t;
	}
	if (why == NULL)
		return true;
	answer_error(r, 400, 400004, why);
	return false;
}

/* device_only: is the caller the edge device itself? Otherwise the answer
 * is 403 (what: the request, for the log; does: what only it does here). */
static bool device_only(hub_method_http *r, const char *what, const char *does)
{
	if (r->caller.kind == HUB_IDENT_DEVICE)
		return true;
	PERCH_WARN(LOG_MOD, "%s for %s refused (403): %s%s%s is not the edge device", what,
	           r->device, r->caller.device, r->caller.module[0] ? "/" : "", r->caller.module);
	char msg[160];
	snprintf(msg, sizeof msg, "only the edge device's identity %s here", does);
	answer_error(r, 403, 403000, msg);
	return false;
}

/* twin_name: the identity a twin request names, when it is one this hub
 * keeps a twin for (here, or behind a child edge hub). */
static bool twin_name(hub_method_http *r, char *name, size_t cap)
{
	if (r->module[0] != '\0')
		snprintf(name, cap, "%s/%s", r->device, r->module);
	else
		snprintf(name, cap, "%s", r->device);
	char edge[PERCH_DEVICE_ID_MAX + 1];
	return hub_identities_knows(&r->h->ids, name, NULL) ||
	       hub_identities_edge_of(&r->h->ids, name, edge, sizeof edge);
}

/* twin_answer answers with name's twin as IoT Hub's service API shows it. */
static void twin_answer(hub_method_http *r, const char *name)
{
	hub_twin *t = hub_iothub_twin(r->h, name);
	char *doc = NULL;
	size_t len = 0;
	json_t *props = NULL, *o = NULL;
	if (t != NULL && hub_twin_document(t, &doc, &len) == PERCH_OK)
		props = json_loadb(doc, len, 0, NULL);
	perch_free(doc);
	if (props != NULL)
		o = json_pack("{s:s,s:o}", "deviceId", r->device, "properties", props);
	if (o != NULL && r->module[0] != '\0' &&
	    json_object_set_new(o, "moduleId", json_string(r->module)) != 0) {
		json_decref(o);
		o = NULL;
	}
	char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (text == NULL) {
		answer_error(r, 500, 500000, "out of memory");
		return;
	}
	answer_now(r, 200, text, strlen(text));
	free(text);
}

/* twin_patch applies a PATCH's desired properties to name's remote layer. */
static void twin_patch(hub_method_http *r, const char *name)
{
	json_error_t je;
	json_t *req = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &je);
	json_t *desired = json_object_get(json_object_get(req, "properties"), "desired");
	char why[300] = "";
	perch_err err = PERCH_EINVAL;
	if (!json_is_object(desired))
		snprintf(why, sizeof why,
		         "expected {\"properties\":{\"desired\":{...}}} (only desired properties "
		         "can be patched)");
	else
		err = hub_iothub_set_remote(r->h, name, desired, false, 0, why, sizeof why);
	json_decref(req);
	if (err == PERCH_EINVAL || err == PERCH_ETOOBIG || err == PERCH_ERANGE) {
		PERCH_INFO(LOG_MOD, "twin PATCH of %s refused (400): %s", name, why);
		answer_error(r, 400, 400004, why);
		return;
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "twin PATCH of %s failed: %s", name, why);
		answer_error(r, 500, 500000, "the twin could not be stored; try again");
		return;
	}
	twin_answer(r, name);
}

/* begin_twin takes the headers of a twin GET or PATCH (authenticated). */
static int begin_twin(hub_method_http *r, unsigned long long want, bool get)
{
	char name[HUB_IDENT_NAME_MAX];
	if (!device_only(r, "twin request", "reads and patches twins"))
		return 0;
	if (!twin_name(r, name, sizeof name)) {
		answer_error(r, 404, r->module[0] ? 404010 : 404001,
		             "no such identity here (this device, its modules and leaf devices, "
		             "and those of its child edge hubs)");
		return 0;
	}
	r->deferred = false;
	if (get) {
		twin_answer(r, name);
		return 0;
	}
	r->expect = (size_t)want;
	r->body = perch_malloc(r->expect > 0 ? r->expect : 1);
	if (r->body == NULL)
		return -1;
	if (r->expect == 0)
		answer_error(r, 400, 400004, "the request has no body");
	return 0;
}

/* begin takes the headers of a request to a method or C2D path. */
static int begin(struct lws *wsi, hub_method_http **slot, const char *device, const char *module,
                 bool c2d, bool twin)
{
	hub_method_http *r = perch_calloc(1, sizeof *r);
	if (r == NULL)
		return -1;
	*slot = r;
	r->wsi = wsi;
	r->h = lws_context_user(lws_get_context(wsi));
	snprintf(r->device, sizeof r->device, "%s", device);
	snprintf(r->module, sizeof r->module, "%s", module);
	r->c2d = c2d;
	r->twin = twin;
	char cl[32] = "";
	unsigned long long want = 0;
	bool has_length = lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
	char *end = NULL;
	if (has_length) {
		want = strtoull(cl, &end, 10);
		if (end == cl || *end != '\0')
			return refuse(r, ULLONG_MAX, 400, 400004, "a bad Content-Length");
	}
	if (twin) {
		bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
		if (!get && lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI) <= 0)
			return refuse(r, want, 405, 405000,
			              "twins are read with GET, patched with PATCH");
		if (!get && !has_length)
			return refuse(r, ULLONG_MAX, 411, 411000, "a Content-Length is needed");
		if (want > MAX_BODY)
			return refuse(r, want, 413, 413000, "the request body is over 132 KiB");
		r->deferred = want > 0;
		if (!authenticate(r))
			return 0;
		return begin_twin(r, want, get);
	}
	if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) <= 0)
		return refuse(r, want, 405, 405000,
		              c2d ? "cloud-to-device messages are sent with POST"
		                  : "direct methods are invoked with POST");
	if (!has_length)
		return refuse(r, ULLONG_MAX, 411, 411000, "a Content-Length is needed");
	if (want > (c2d ? HUB_C2D_MAX_BODY : MAX_BODY))
		return refuse(r, want, 413, 413000,
		              c2d ? "the message is over 64 KiB"
		                  : "the request body is over 132 KiB");
	r->deferred = want > 0; /* for a refusal: after the body */
	if (!authenticate(r))
		return 0;
	if (c2d && !device_only(r, "C2D message", "sends cloud-to-device messages"))
		return 0;
	if (c2d && !c2d_headers(r))
		return r->props == NULL ? -1 : 0;
	r->deferred = false;
	r->expect = (size_t)want;
	r->body = perch_malloc(r->expect > 0 ? r->expect : 1);
	if (r->body == NULL)
		return -1;
	/* The answer may take up to connect + response timeouts. */
	lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, WAIT_LIMIT_S);
	if (r->expect == 0 && c2d)
		hub_c2d_send(r->h, r->device, r->props, (perch_slice){"", 0}, r->ttl_s, c2d_done, r,
		             &r->c2d_req);
	else if (r->expect == 0)
		answer_error(r, 400, 400004, "the request has no body");
	return 0;
}

static int write_answer(hub_method_http *r, hub_method_http **slot)
{
	struct lws *wsi = r->wsi;
	if (!r->headers_sent) {
		uint8_t buf[LWS_PRE + 512], *start = buf + LWS_PRE, *p = start,
		                            *end = buf + sizeof buf - 1;
		if (lws_add_http_common_headers(wsi, r->status, "application/json; charset=utf-8",
		                                r->alen, &p, end) ||
		    (r->c2d && r->mid[0] != '\0' &&
		     lws_add_http_header_by_name(wsi, (const unsigned char *)"iothub-messageid:",
		                                 (const unsigned char *)r->mid, (int)strlen(r->mid),
		                                 &p, end)) ||
		    (r->close &&
		     lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
		                                  (const unsigned char *)"close", 5, &p, end)) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
		r->headers_sent = true;
		lws_callback_on_writable(wsi);
		return 0;
	}
	uint8_t *buf = perch_malloc(LWS_PRE + r->alen + 1);
	if (buf == NULL)
		return -1;
	memcpy(buf + LWS_PRE, r->answer, r->alen);
	int w = lws_write(wsi, buf + LWS_PRE, r->alen, LWS_WRITE_HTTP_FINAL);
	perch_free(buf);
	bool close = r->close;
	req_free(r);
	*slot = NULL;
	if (w < 0 || close)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int hub_method_http_cb(struct lws *wsi, enum lws_callback_reasons reason, hub_method_http **slot,
                       void *in, size_t len)
{
	hub_method_http *r = *slot;
	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		char device[PERCH_DEVICE_ID_MAX + 1], module[PERCH_DEVICE_ID_MAX + 1];
		bool c2d = false, twin = false;
		if (!parse_path((const char *)in, device, sizeof device, module, sizeof module,
		                &c2d, &twin))
			return 1; /* not a method, twin or C2D path: the caller answers */
		req_free(r);
		*slot = NULL;
		return begin(wsi, slot, device, module, c2d, twin);
	}
	case LWS_CALLBACK_HTTP_BODY:
		if (r == NULL || r->status != 0)
			return 0; /* answered already: what still comes is dropped */
		if (len > r->expect - r->len) {
			r->close = true;
			answer_error(r, 400, 400004, "more body than Content-Length said");
			return 0;
		}
		memcpy(r->body + r->len, in, len);
		r->len += len;
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (r != NULL && r->deferred) {
			r->deferred = false;
			lws_callback_on_writable(wsi);
			return 0;
		}
		if (r == NULL || r->status != 0)
			return 0;
		if (r->len != r->expect) {
			r->close = true;
			answer_error(r, 400, 400004, "less body than Content-Length said");
			return 0;
		}
		if (r->twin) {
			char name[HUB_IDENT_NAME_MAX];
			if (twin_name(r, name, sizeof name))
				twin_patch(r, name);
			else
				answer_error(r, 404, 404001, "no such identity here");
		} else if (r->c2d)
			hub_c2d_send(r->h, r->device, r->props, (perch_slice){r->body, r->len},
			             r->ttl_s, c2d_done, r, &r->c2d_req);
		else
			hub_method_invoke(r->h, &r->caller, r->device, r->module, r->body, r->len,
			                  call_done, r, &r->call);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (r == NULL || r->status == 0)
			return 0;
		return write_answer(r, slot);
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		req_free(r);
		*slot = NULL;
		return 0;
	default: return 0;
	}
}
