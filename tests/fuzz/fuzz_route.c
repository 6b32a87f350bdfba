/*
 * fuzz_route.c — libFuzzer target for the route language: a route statement
 * and a message derived from the input.
 *
 * Input: ROUTE [NUL BODY [NUL PROPS]]. The route text is compiled on its
 * own and inside an $edgeHub table, and both must agree; when it compiles it
 * is evaluated against the body as a module output, a leaf device's message
 * and a twin change notification, with PROPS (a property bag, `k=v&...`)
 * added to JSON content type and encoding. The body also goes through a
 * fixed table of $body conditions, and whenever jansson reads it as a JSON
 * object the route tokenizer must not call it invalid.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perch/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static perch_props bag;
static perch_route_table *body_table; /* built once, kept for the process */

static const char *BODY_TABLE =
        "{\"schemaVersion\": \"1.1\", \"routes\": {"
        " \"a\": \"FROM /* WHERE $body.a.b[0] = 'x' OR IS_OBJECT($body.a) INTO $upstream\","
        " \"b\": \"FROM /* WHERE LENGTH($body.s) > 3 AND $body.n * 2 > 1 INTO "
        "BrokeredEndpoint('/modules/m/inputs/i')\","
        " \"c\": {\"route\": \"FROM /messages/* WHERE IS_DEFINED($body.a[1].c) OR "
        "UPPER($body.s || $body.t) = 'AB' INTO $upstream\", \"priority\": 1},"
        " \"d\": \"FROM /* WHERE $body.machine.temperature > 25 INTO $upstream\""
        "}}";

static bool count_hit(void *arg, const perch_route_hit *h)
{
	size_t *n = arg;
	if (h->sink == NULL || h->name == NULL)
		abort();
	(*n)++;
	return true;
}

static void check_truth(perch_route_truth t)
{
	if (t != PERCH_ROUTE_TRUE && t != PERCH_ROUTE_FALSE && t != PERCH_ROUTE_UNDEFINED)
		abort();
}

static void eval_all(const perch_route *r, perch_route_msg *m)
{
	static const perch_route_origin origins[] = {PERCH_ROUTE_TELEMETRY, PERCH_ROUTE_TELEMETRY,
	                                             PERCH_ROUTE_TWIN_CHANGE};
	for (size_t i = 0; i < 3; i++) {
		m->origin = origins[i];
		m->module = i == 1 ? (perch_slice){NULL, 0} : PERCH_SLICE_LIT("mod");
		m->output = i == 0 ? PERCH_SLICE_LIT("out") : (perch_slice){NULL, 0};
		perch_route_truth t = perch_route_eval(r, m);
		check_truth(t);
		bool src = perch_route_source_matches(r, m);
		if (perch_route_matches(r, m) != (src && t == PERCH_ROUTE_TRUE))
			abort();
	}
}

/* The route text inside a table must compile exactly when it compiles alone. */
static void table_agrees(perch_slice text, bool alone_ok, perch_route_msg *m)
{
	json_t *s = json_stringn(text.ptr, text.len); /* NULL unless valid UTF-8 */
	if (s == NULL)
		return;
	json_t *d = json_pack("{s:s, s:{s:o, s:s}}", "schemaVersion", "1.1", "routes", "r", s, "s",
	                      "FROM /* WHERE $body.a = 1 INTO $upstream");
	if (d == NULL)
		return;
	perch_route_table *t = NULL;
	perch_route_errors errs = {0};
	perch_err err = perch_routes_from_edgehub(d, &t, &errs);
	json_decref(d);
	bool blank = true;
	for (size_t i = 0; i < text.len; i++)
		if (strchr(" \t\r\n", text.ptr[i]) == NULL)
			blank = false;
	if (err == PERCH_OK) {
		if (!alone_ok || t == NULL || perch_route_table_count(t) != 2)
			abort();
		size_t n = 0;
		perch_route_match_info info;
		size_t hits = perch_routes_match(t, m, count_hit, &n, &info);
		if (hits != n || hits > 2 || info.undefined > info.evaluated || info.evaluated > 2)
			abort();
		perch_route_table_free(t);
	} else {
		if ((alone_ok && !blank) || t != NULL || errs.count == 0 ||
		    strcmp(errs.item[0].route, "r") != 0)
			abort();
	}
}

/* jansson reading an object means the route tokenizer must not say
 * INVALID (it may say TOO_BIG: its limits are tighter). */
static void body_oracle(perch_slice body, perch_route_msg *m)
{
	m->origin = PERCH_ROUTE_TELEMETRY;
	m->module = PERCH_SLICE_LIT("mod");
	m->output = PERCH_SLICE_LIT("out");
	size_t n = 0;
	perch_route_match_info info;
	size_t hits = perch_routes_match(body_table, m, count_hit, &n, &info);
	if (hits != n || hits > 2)
		abort();
	if (info.body == PERCH_ROUTE_BODY_UNUSED || info.body == PERCH_ROUTE_BODY_NOT_JSON_TYPE)
		abort(); /* route a always needs the body, and the type says JSON */
	json_t *j = json_loadb(body.ptr, body.len, JSON_ALLOW_NUL, NULL);
	if (j != NULL && json_is_object(j) && info.body == PERCH_ROUTE_BODY_INVALID)
		abort();
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (body_table == NULL) {
		json_t *d = json_loads(BODY_TABLE, 0, NULL);
		if (d == NULL || perch_routes_from_edgehub(d, &body_table, NULL) != PERCH_OK)
			abort();
		json_decref(d);
	}
	const char *in = (const char *)data;
	const char *nul = memchr(in, '\0', size);
	perch_slice text = {in, nul ? (size_t)(nul - in) : size};
	perch_slice body = PERCH_SLICE_LIT("{\"a\":{\"b\":[\"x\"]},\"s\":\"abcd\",\"n\":1}");
	perch_slice props = {NULL, 0};
	if (nul != NULL) {
		const char *b = nul + 1;
		size_t rest = size - text.len - 1;
		const char *nul2 = memchr(b, '\0', rest);
		body = (perch_slice){b, nul2 ? (size_t)(nul2 - b) : rest};
		if (nul2 != NULL)
			props = (perch_slice){nul2 + 1, rest - body.len - 1};
	}
	if (perch_props_parse(props, &bag, NULL) != PERCH_OK)
		perch_props_init(&bag);
	if (perch_props_set(&bag, PERCH_SLICE_LIT("$.ct"), PERCH_SLICE_LIT("application/json"),
	                    NULL) != PERCH_OK ||
	    perch_props_set(&bag, PERCH_SLICE_LIT("$.ce"), PERCH_SLICE_LIT("utf-8"), NULL) !=
	            PERCH_OK) {
		perch_props_init(&bag); /* a full bag: start from an empty one */
		if (perch_props_set(&bag, PERCH_SLICE_LIT("$.ct"),
		                    PERCH_SLICE_LIT("application/json"), NULL) != PERCH_OK ||
		    perch_props_set(&bag, PERCH_SLICE_LIT("$.ce"), PERCH_SLICE_LIT("utf-8"),
		                    NULL) != PERCH_OK)
			abort();
	}
	perch_route_msg m = {PERCH_ROUTE_TELEMETRY,
	                     PERCH_SLICE_LIT("dev"),
	                     PERCH_SLICE_LIT("mod"),
	                     PERCH_SLICE_LIT("out"),
	                     &bag,
	                     body};

	perch_route r = {0};
	perch_route_error why;
	perch_err err = perch_route_parse(text, &r, &why);
	if (err == PERCH_OK) {
		if (r.text == NULL || r.source == NULL || r.prefix == NULL || r.prefix_len == 0 ||
		    r.prefix[r.prefix_len - 1] != '/' || r.sink.kind == PERCH_ROUTE_SINK_NONE)
			abort();
		if (r.sink.kind == PERCH_ROUTE_SINK_MODULE &&
		    (r.sink.module[0] == '\0' || r.sink.input[0] == '\0'))
			abort();
		eval_all(&r, &m);
		perch_route_clear(&r);
	} else {
		if (r.text != NULL || r.cond != NULL || why.text[0] == '\0' ||
		    why.column > text.len + 1)
			abort();
	}
	table_agrees(text, err == PERCH_OK, &m);
	body_oracle(body, &m);
	return 0;
}
