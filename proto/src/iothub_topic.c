/*
 * iothub_topic.c — classify IoT Hub topic names and build the ones the hub
 * sends. A cursor walks the topic left to right over the fixed words of each
 * shape; see iothub_topic.h for the shapes and the rules. The `$iothub/` and
 * the link's `$edgehub/` twin and method topics share one parser, told apart
 * by a table of their words and kinds.
 */
#include "outbuf.h"
#include "perch/iothub_topic.h"

#include <string.h>

/* A read position in a topic. */
typedef struct cursor {
	perch_slice s;
	size_t pos; /* <= s.len */
} cursor;

static perch_slice rest(const cursor *c)
{
	return (perch_slice){c->s.ptr + c->pos, c->s.len - c->pos};
}

/* Consumes lit when the topic continues with it. */
static bool eat(cursor *c, const char *lit)
{
	if (!perch_slice_starts(rest(c), lit))
		return false;
	c->pos += strlen(lit);
	return true;
}

/* Takes bytes up to (not including) the next `/` (or `?` when stop_at_query). */
static perch_slice segment(cursor *c, bool stop_at_query)
{
	size_t start = c->pos;
	while (c->pos < c->s.len && c->s.ptr[c->pos] != '/' &&
	       !(stop_at_query && c->s.ptr[c->pos] == '?'))
		c->pos++;
	return (perch_slice){c->s.ptr + start, c->pos - start};
}

static perch_iothub_reason check_segment(perch_slice seg)
{
	if (seg.len == 0)
		return PERCH_IOTHUB_EMPTY_SEGMENT;
	if (seg.len > PERCH_IOTHUB_MAX_SEGMENT)
		return PERCH_IOTHUB_SEGMENT_TOO_LONG;
	return PERCH_IOTHUB_OK;
}

/* Parses a decimal uint64 of 1..20 digits; false on anything else or overflow. */
static bool parse_u64(perch_slice s, uint64_t *out)
{
	if (s.len == 0 || s.len > 20)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		if (c < '0' || c > '9')
			return false;
		unsigned d = (unsigned)(c - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static perch_iothub_reason parse_status(perch_slice s, unsigned *status)
{
	uint64_t v;
	if (s.len != 3 || !parse_u64(s, &v) || v < 100)
		return PERCH_IOTHUB_BAD_STATUS;
	*status = (unsigned)v;
	return PERCH_IOTHUB_OK;
}

/*
 * Parses what follows the fixed part of a twin or method topic: an optional
 * `/`, then `?` and `&`-separated parameters to the end. Sets *other when the
 * topic continues in a way that makes it a different topic altogether.
 */
static perch_iothub_reason parse_query(cursor *c, perch_iothub_topic *out, bool *other)
{
	*other = false;
	perch_slice r = rest(c);
	if (r.len > 0 && r.ptr[0] != '/' && r.ptr[0] != '?') {
		*other = true;
		return PERCH_IOTHUB_OK;
	}
	(void)eat(c, "/");
	if (c->pos == c->s.len)
		return PERCH_IOTHUB_BAD_QUERY; /* no `?`: the caller names the missing field */
	if (!eat(c, "?"))
		return PERCH_IOTHUB_TRAILING;
	perch_slice q = rest(c);
	if (q.len > PERCH_IOTHUB_MAX_QUERY)
		return PERCH_IOTHUB_BAD_QUERY;
	bool has_rid = false;
	size_t pos = 0;
	while (pos < q.len) {
		size_t end = pos;
		while (end < q.len && q.ptr[end] != '&')
			end++;
		perch_slice kv = {q.ptr + pos, end - pos};
		pos = end + 1;
		if (kv.len == 0)
			continue;
		if (perch_slice_starts(kv, "$rid=")) {
			if (has_rid)
				return PERCH_IOTHUB_BAD_QUERY;
			has_rid = true;
			out->rid = (perch_slice){kv.ptr + 5, kv.len - 5};
			if (out->rid.len == 0 || out->rid.len > PERCH_IOTHUB_MAX_RID)
				return PERCH_IOTHUB_BAD_RID;
		} else if (perch_slice_starts(kv, "$version=")) {
			if (out->has_version)
				return PERCH_IOTHUB_BAD_QUERY;
			out->has_version = true;
			if (!parse_u64((perch_slice){kv.ptr + 9, kv.len - 9}, &out->version))
				return PERCH_IOTHUB_BAD_VERSION;
		}
	}
	c->pos = c->s.len;
	return PERCH_IOTHUB_OK;
}

/* devices/{d}/... */
static perch_iothub_reason parse_devices(cursor *c, perch_iothub_topic *out)
{
	perch_slice device = segment(c, false);
	perch_slice module = {NULL, 0};
	perch_slice input = {NULL, 0};
	perch_iothub_kind kind = PERCH_IOTHUB_OTHER;
	if (eat(c, "/messages/events")) {
		kind = PERCH_IOTHUB_TELEMETRY;
	} else if (eat(c, "/messages/devicebound")) {
		kind = PERCH_IOTHUB_C2D;
	} else if (eat(c, "/modules/")) {
		module = segment(c, false);
		if (eat(c, "/messages/events")) {
			kind = PERCH_IOTHUB_MODULE_OUTPUT;
		} else if (eat(c, "/inputs/")) {
			input = segment(c, false);
			kind = PERCH_IOTHUB_MODULE_INPUT;
			if (c->pos == c->s.len)
				goto shaped;
		}
	}
	if (kind == PERCH_IOTHUB_OTHER)
		return PERCH_IOTHUB_OK;
	/* After the fixed words: the end, or `/` and the bag. */
	if (c->pos < c->s.len && !eat(c, "/"))
		return PERCH_IOTHUB_OK; /* e.g. devices/d/messages/eventsX: not ours */
shaped:
	out->kind = kind;
	out->device = device;
	out->module = module;
	out->input = input;
	out->props = rest(c);
	perch_iothub_reason r = check_segment(device);
	if (r == PERCH_IOTHUB_OK && kind != PERCH_IOTHUB_TELEMETRY && kind != PERCH_IOTHUB_C2D)
		r = check_segment(module);
	if (r == PERCH_IOTHUB_OK && kind == PERCH_IOTHUB_MODULE_INPUT)
		r = check_segment(input);
	if (r == PERCH_IOTHUB_OK && out->props.len > PERCH_PROPS_MAX_ENCODED)
		r = PERCH_IOTHUB_TOO_LONG;
	return r;
}

/* The fixed part of a twin or method topic is consumed; now its query. */
static perch_iothub_reason finish_query(cursor *c, perch_iothub_topic *out, perch_iothub_kind kind)
{
	bool other;
	perch_iothub_reason r = parse_query(c, out, &other);
	if (other) {
		out->kind = PERCH_IOTHUB_OTHER;
		return PERCH_IOTHUB_OK;
	}
	out->kind = kind;
	bool want_version =
	        kind == PERCH_IOTHUB_TWIN_DESIRED || kind == PERCH_IOTHUB_LINK_TWIN_DESIRED;
	if (r == PERCH_IOTHUB_BAD_QUERY && c->pos == c->s.len)
		r = want_version ? PERCH_IOTHUB_MISSING_VERSION : PERCH_IOTHUB_MISSING_RID;
	if (r != PERCH_IOTHUB_OK)
		return r;
	if (want_version && !out->has_version)
		return PERCH_IOTHUB_MISSING_VERSION;
	if (!want_version && out->rid.len == 0)
		return PERCH_IOTHUB_MISSING_RID;
	return PERCH_IOTHUB_OK;
}

/* The fixed words and the kinds of one namespace's twin and method topics. */
typedef struct words {
	const char *get, *reported, *desired, *post; /* after `twin/` or `methods/` */
	perch_iothub_kind twin_get, twin_reported, twin_desired, twin_response;
	perch_iothub_kind method_request, method_response;
} words;

static const words IOTHUB_WORDS = {
        .get = "GET",
        .reported = "PATCH/properties/reported",
        .desired = "PATCH/properties/desired",
        .post = "POST/",
        .twin_get = PERCH_IOTHUB_TWIN_GET,
        .twin_reported = PERCH_IOTHUB_TWIN_REPORTED,
        .twin_desired = PERCH_IOTHUB_TWIN_DESIRED,
        .twin_response = PERCH_IOTHUB_TWIN_RESPONSE,
        .method_request = PERCH_IOTHUB_METHOD_REQUEST,
        .method_response = PERCH_IOTHUB_METHOD_RESPONSE,
};

static const words LINK_WORDS = {
        .get = "get",
        .reported = "reported",
        .desired = "desired",
        .post = "post/",
        .twin_get = PERCH_IOTHUB_LINK_TWIN_GET,
        .twin_reported = PERCH_IOTHUB_LINK_TWIN_REPORTED,
        .twin_desired = PERCH_IOTHUB_LINK_TWIN_DESIRED,
        .twin_response = PERCH_IOTHUB_LINK_TWIN_RESPONSE,
        .method_request = PERCH_IOTHUB_LINK_METHOD_REQUEST,
        .method_response = PERCH_IOTHUB_LINK_METHOD_RESPONSE,
};

/* After `twin/`. */
static perch_iothub_reason parse_twin(cursor *c, perch_iothub_topic *out, const words *w)
{
	if (eat(c, w->get))
		return finish_query(c, out, w->twin_get);
	if (eat(c, w->reported))
		return finish_query(c, out, w->twin_reported);
	if (eat(c, w->desired))
		return finish_query(c, out, w->twin_desired);
	if (eat(c, "res/")) {
		perch_slice status = segment(c, true);
		perch_iothub_reason r = finish_query(c, out, w->twin_response);
		if (out->kind == PERCH_IOTHUB_OTHER)
			return PERCH_IOTHUB_OK;
		perch_iothub_reason rs = parse_status(status, &out->status);
		return rs != PERCH_IOTHUB_OK ? rs : r;
	}
	return PERCH_IOTHUB_OK;
}

/* After `methods/`. */
static perch_iothub_reason parse_methods(cursor *c, perch_iothub_topic *out, const words *w)
{
	if (eat(c, w->post)) {
		perch_slice name = segment(c, true);
		perch_iothub_reason r = finish_query(c, out, w->method_request);
		if (out->kind == PERCH_IOTHUB_OTHER)
			return PERCH_IOTHUB_OK;
		out->method = name;
		perch_iothub_reason rn = check_segment(name);
		return rn != PERCH_IOTHUB_OK ? rn : r;
	}
	if (eat(c, "res/")) {
		perch_slice status = segment(c, true);
		perch_iothub_reason r = finish_query(c, out, w->method_response);
		if (out->kind == PERCH_IOTHUB_OTHER)
			return PERCH_IOTHUB_OK;
		perch_iothub_reason rs = parse_status(status, &out->status);
		return rs != PERCH_IOTHUB_OK ? rs : r;
	}
	return PERCH_IOTHUB_OK;
}

/*
 * Does the topic continue (after `$edgehub/{d}/`) with the device-level form:
 * `twin/` and one of its verbs, or `methods/` and one of its? Looks ahead
 * without moving c. A module form's `{m}` is always followed by `twin` or
 * `methods`, never by a verb, so the two cannot be confused.
 */
static bool link_device_level(const cursor *c)
{
	cursor k = *c;
	if (eat(&k, "twin/")) {
		perch_slice v = segment(&k, true);
		return perch_slice_eq_cstr(v, "get") || perch_slice_eq_cstr(v, "reported") ||
		       perch_slice_eq_cstr(v, "desired") || perch_slice_eq_cstr(v, "res");
	}
	if (eat(&k, "methods/")) {
		perch_slice v = segment(&k, true);
		return perch_slice_eq_cstr(v, "post") || perch_slice_eq_cstr(v, "res");
	}
	return false;
}

/* $edgehub/{d}[/{m}]/... */
static perch_iothub_reason parse_link(cursor *c, perch_iothub_topic *out)
{
	perch_slice device = segment(c, false);
	perch_slice module = {NULL, 0};
	if (!eat(c, "/"))
		return PERCH_IOTHUB_OK;
	bool has_module = !link_device_level(c);
	if (has_module) {
		module = segment(c, false);
		if (!eat(c, "/"))
			return PERCH_IOTHUB_OK;
	}
	perch_iothub_reason r = PERCH_IOTHUB_OK;
	if (eat(c, "twin/"))
		r = parse_twin(c, out, &LINK_WORDS);
	else if (eat(c, "methods/"))
		r = parse_methods(c, out, &LINK_WORDS);
	if (out->kind == PERCH_IOTHUB_OTHER)
		return PERCH_IOTHUB_OK;
	out->device = device;
	out->module = module;
	perch_iothub_reason ri = check_segment(device);
	if (ri == PERCH_IOTHUB_OK && has_module)
		ri = check_segment(module);
	return ri != PERCH_IOTHUB_OK ? ri : r;
}

static perch_err reason_err(perch_iothub_reason r)
{
	switch (r) {
	case PERCH_IOTHUB_OK: return PERCH_OK;
	case PERCH_IOTHUB_TOO_LONG:
	case PERCH_IOTHUB_SEGMENT_TOO_LONG:
	case PERCH_IOTHUB_NO_SPACE: return PERCH_ETOOBIG;
	default: return PERCH_EINVAL;
	}
}

perch_err perch_iothub_topic_parse(perch_slice topic, perch_iothub_topic *out,
                                   perch_iothub_reason *why)
{
	memset(out, 0, sizeof *out);
	perch_iothub_reason r = PERCH_IOTHUB_OK;
	if (topic.ptr == NULL) /* an empty slice may be {NULL, 0}: no arithmetic on NULL */
		topic = (perch_slice){"", 0};
	if (topic.len > PERCH_IOTHUB_MAX_TOPIC) {
		r = PERCH_IOTHUB_TOO_LONG;
		goto done;
	}
	for (size_t i = 0; i < topic.len; i++) {
		char ch = topic.ptr[i];
		if (ch == '\0' || ch == '+' || ch == '#') {
			r = PERCH_IOTHUB_BAD_CHAR;
			goto done;
		}
	}
	cursor c = {topic, 0};
	if (eat(&c, "devices/"))
		r = parse_devices(&c, out);
	else if (eat(&c, "$iothub/twin/"))
		r = parse_twin(&c, out, &IOTHUB_WORDS);
	else if (eat(&c, "$iothub/methods/"))
		r = parse_methods(&c, out, &IOTHUB_WORDS);
	else if (eat(&c, "$edgehub/"))
		r = parse_link(&c, out);
done:
	if (why != NULL)
		*why = r;
	return reason_err(r);
}

/* --- builders ------------------------------------------------------------ */

static void put_props(outbuf *w, const perch_props *props)
{
	if (props == NULL || w->overflow)
		return;
	size_t len;
	if (perch_props_encode(props, w->out + w->n, w->cap - w->n, &len) != PERCH_OK) {
		w->overflow = true;
		return;
	}
	w->n += len;
}

/* An id or name fit to write into a topic. */
static bool name_ok(perch_slice s, bool is_rid)
{
	if (s.len == 0 || s.len > (is_rid ? PERCH_IOTHUB_MAX_RID : PERCH_IOTHUB_MAX_SEGMENT))
		return false;
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		if (c == '/' || c == '+' || c == '#' || c == '\0' || (is_rid && c == '&'))
			return false;
		if (!is_rid && c == '?')
			return false;
	}
	return true;
}

static perch_err finish(const outbuf *w, size_t *out_len)
{
	if (w->overflow)
		return PERCH_ETOOBIG;
	*out_len = w->n;
	return PERCH_OK;
}

perch_err perch_iothub_build_input(char *out, size_t cap, size_t *out_len, perch_slice device,
                                   perch_slice module, perch_slice input, const perch_props *props)
{
	if (!name_ok(device, false) || !name_ok(module, false) || !name_ok(input, false))
		return PERCH_EINVAL;
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "devices/");
	outbuf_put(&w, device);
	outbuf_put_str(&w, "/modules/");
	outbuf_put(&w, module);
	outbuf_put_str(&w, "/inputs/");
	outbuf_put(&w, input);
	outbuf_put_str(&w, "/");
	put_props(&w, props);
	return finish(&w, out_len);
}

perch_err perch_iothub_build_c2d(char *out, size_t cap, size_t *out_len, perch_slice device,
                                 const perch_props *props)
{
	if (!name_ok(device, false))
		return PERCH_EINVAL;
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "devices/");
	outbuf_put(&w, device);
	outbuf_put_str(&w, "/messages/devicebound/");
	put_props(&w, props);
	return finish(&w, out_len);
}

perch_err perch_iothub_build_twin_response(char *out, size_t cap, size_t *out_len, unsigned status,
                                           perch_slice rid, bool has_version, uint64_t version)
{
	if (status < 100 || status > 999 || !name_ok(rid, true))
		return PERCH_EINVAL;
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "$iothub/twin/res/");
	outbuf_put_u64(&w, status);
	outbuf_put_str(&w, "/?$rid=");
	outbuf_put(&w, rid);
	if (has_version) {
		outbuf_put_str(&w, "&$version=");
		outbuf_put_u64(&w, version);
	}
	return finish(&w, out_len);
}

perch_err perch_iothub_build_desired(char *out, size_t cap, size_t *out_len, uint64_t version)
{
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "$iothub/twin/PATCH/properties/desired/?$version=");
	outbuf_put_u64(&w, version);
	return finish(&w, out_len);
}

perch_err perch_iothub_build_method_request(char *out, size_t cap, size_t *out_len,
                                            perch_slice name, perch_slice rid)
{
	if (!name_ok(name, false) || !name_ok(rid, true))
		return PERCH_EINVAL;
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "$iothub/methods/POST/");
	outbuf_put(&w, name);
	outbuf_put_str(&w, "/?$rid=");
	outbuf_put(&w, rid);
	return finish(&w, out_len);
}

perch_err perch_iothub_build_method_response(char *out, size_t cap, size_t *out_len,
                                             unsigned status, perch_slice rid)
{
	if (status < 100 || status > 999 || !name_ok(rid, true))
		return PERCH_EINVAL;
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "$iothub/methods/res/");
	outbuf_put_u64(&w, status);
	outbuf_put_str(&w, "/?$rid=");
	outbuf_put(&w, rid);
	return finish(&w, out_len);
}

bool perch_iothub_is_link(perch_iothub_kind kind)
{
	return kind >= PERCH_IOTHUB_LINK_TWIN_GET && kind <= PERCH_IOTHUB_LINK_METHOD_RESPONSE;
}

/* The words of a link topic after `{d}[/{m}]/`, up to its variable part. */
static const char *link_words(perch_iothub_kind kind)
{
	switch (kind) {
	case PERCH_IOTHUB_LINK_TWIN_GET: return "/twin/get/?$rid=";
	case PERCH_IOTHUB_LINK_TWIN_REPORTED: return "/twin/reported/?$rid=";
	case PERCH_IOTHUB_LINK_TWIN_DESIRED: return "/twin/desired/?$version=";
	case PERCH_IOTHUB_LINK_TWIN_RESPONSE: return "/twin/res/";
	case PERCH_IOTHUB_LINK_METHOD_REQUEST: return "/methods/post/";
	case PERCH_IOTHUB_LINK_METHOD_RESPONSE: return "/methods/res/";
	default: return NULL;
	}
}

perch_err perch_iothub_build_link(char *out, size_t cap, size_t *out_len, perch_iothub_kind kind,
                                  perch_slice device, perch_slice module, perch_slice method,
                                  unsigned status, perch_slice rid, bool has_version,
                                  uint64_t version)
{
	const char *fixed = link_words(kind);
	bool has_module = module.ptr != NULL && module.len > 0;
	bool is_request = kind == PERCH_IOTHUB_LINK_METHOD_REQUEST;
	bool is_response = kind == PERCH_IOTHUB_LINK_TWIN_RESPONSE ||
	                   kind == PERCH_IOTHUB_LINK_METHOD_RESPONSE;
	bool is_desired = kind == PERCH_IOTHUB_LINK_TWIN_DESIRED;
	if (fixed == NULL || !name_ok(device, false) || (has_module && !name_ok(module, false)) ||
	    (is_request && !name_ok(method, false)) ||
	    (is_response && (status < 100 || status > 999)) || (!is_desired && !name_ok(rid, true)))
		return PERCH_EINVAL;
	outbuf w = {out, cap, 0, false};
	outbuf_put_str(&w, "$edgehub/");
	outbuf_put(&w, device);
	if (has_module) {
		outbuf_put_str(&w, "/");
		outbuf_put(&w, module);
	}
	outbuf_put_str(&w, fixed);
	if (is_request) {
		outbuf_put(&w, method);
		outbuf_put_str(&w, "/?$rid=");
	} else if (is_response) {
		outbuf_put_u64(&w, status);
		outbuf_put_str(&w, "/?$rid=");
	}
	if (is_desired) {
		outbuf_put_u64(&w, version);
	} else {
		outbuf_put(&w, rid);
		if (kind == PERCH_IOTHUB_LINK_TWIN_RESPONSE && has_version) {
			outbuf_put_str(&w, "&$version=");
			outbuf_put_u64(&w, version);
		}
	}
	return finish(&w, out_len);
}

const char *perch_iothub_kind_str(perch_iothub_kind kind)
{
	switch (kind) {
	case PERCH_IOTHUB_OTHER: return "other";
	case PERCH_IOTHUB_TELEMETRY: return "telemetry";
	case PERCH_IOTHUB_MODULE_OUTPUT: return "module output";
	case PERCH_IOTHUB_MODULE_INPUT: return "module input";
	case PERCH_IOTHUB_C2D: return "cloud-to-device";
	case PERCH_IOTHUB_TWIN_GET: return "twin get";
	case PERCH_IOTHUB_TWIN_REPORTED: return "twin reported patch";
	case PERCH_IOTHUB_TWIN_DESIRED: return "twin desired patch";
	case PERCH_IOTHUB_TWIN_RESPONSE: return "twin response";
	case PERCH_IOTHUB_METHOD_REQUEST: return "method request";
	case PERCH_IOTHUB_METHOD_RESPONSE: return "method response";
	case PERCH_IOTHUB_LINK_TWIN_GET: return "link twin get";
	case PERCH_IOTHUB_LINK_TWIN_REPORTED: return "link twin reported patch";
	case PERCH_IOTHUB_LINK_TWIN_DESIRED: return "link twin desired patch";
	case PERCH_IOTHUB_LINK_TWIN_RESPONSE: return "link twin response";
	case PERCH_IOTHUB_LINK_METHOD_REQUEST: return "link method request";
	case PERCH_IOTHUB_LINK_METHOD_RESPONSE: return "link method response";
	case PERCH_IOTHUB_KIND_COUNT: break;
	}
	return "unknown kind";
}

const char *perch_iothub_reason_str(perch_iothub_reason reason)
{
	switch (reason) {
	case PERCH_IOTHUB_OK: return "ok";
	case PERCH_IOTHUB_TOO_LONG: return "topic too long";
	case PERCH_IOTHUB_EMPTY_SEGMENT: return "empty id or name";
	case PERCH_IOTHUB_SEGMENT_TOO_LONG: return "id or name too long";
	case PERCH_IOTHUB_BAD_CHAR: return "NUL or wildcard in topic name";
	case PERCH_IOTHUB_BAD_STATUS: return "status is not three digits";
	case PERCH_IOTHUB_MISSING_RID: return "missing $rid";
	case PERCH_IOTHUB_BAD_RID: return "empty or too long $rid";
	case PERCH_IOTHUB_MISSING_VERSION: return "missing $version";
	case PERCH_IOTHUB_BAD_VERSION: return "$version is not a number";
	case PERCH_IOTHUB_BAD_QUERY: return "malformed query";
	case PERCH_IOTHUB_TRAILING: return "unexpected path after the last field";
	case PERCH_IOTHUB_NO_SPACE: return "output buffer too small";
	case PERCH_IOTHUB_REASON_COUNT: break;
	}
	return "unknown reason";
}
