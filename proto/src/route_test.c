/*
 * route_test.c — unit tests for route statements and tables: every source
 * and sink form, keywords in any case, white space and comments, errors with
 * their columns, the $edgeHub JSON (both route shapes, priorities, TTLs,
 * all-or-nothing refusal), matching with one sink per message, allocation
 * failure, and a throughput measurement of the quickstart condition.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "perch/alloc.h"
#include "perch/route.h"

static perch_props props; /* big: kept off the stack */

static perch_slice sl(const char *s)
{
	return perch_slice_cstr(s);
}

static void json_props(void)
{
	perch_props_init(&props);
	assert_int_equal(perch_props_set(&props, PERCH_SLICE_LIT("$.ct"),
	                                 PERCH_SLICE_LIT("application/json"), NULL),
	                 PERCH_OK);
	assert_int_equal(
	        perch_props_set(&props, PERCH_SLICE_LIT("$.ce"), PERCH_SLICE_LIT("utf-8"), NULL),
	        PERCH_OK);
}

/* Messages from a leaf device, a module without output, a module output, and
 * a twin change notification. */
static perch_route_msg from_device(const char *dev)
{
	return (perch_route_msg){
	        PERCH_ROUTE_TELEMETRY, sl(dev), {NULL, 0}, {NULL, 0}, &props, {NULL, 0}};
}

static perch_route_msg from_module(const char *mod, const char *out)
{
	return (perch_route_msg){PERCH_ROUTE_TELEMETRY,
	                         PERCH_SLICE_LIT("edge1"),
	                         sl(mod),
	                         out ? sl(out) : (perch_slice){NULL, 0},
	                         &props,
	                         {NULL, 0}};
}

static perch_route_msg twin_change(void)
{
	return (perch_route_msg){PERCH_ROUTE_TWIN_CHANGE,
	                         PERCH_SLICE_LIT("edge1"),
	                         PERCH_SLICE_LIT("m"),
	                         {NULL, 0},
	                         &props,
	                         {NULL, 0}};
}

static void parse_ok(const char *text, perch_route *r)
{
	perch_route_error why;
	perch_err err = perch_route_parse(sl(text), r, &why);
	if (err != PERCH_OK)
		fail_msg("%s: %s", text, why.text);
}

static void parse_bad(const char *text, perch_err code, unsigned col, const char *want)
{
	perch_route r = {0};
	perch_route_error why;
	perch_err err = perch_route_parse(sl(text), &r, &why);
	if (err != code || strstr(why.text, want) == NULL || why.column != col)
		fail_msg("%s: got %d '%s' (column %u), want %d '%s' (column %u)", text, err,
		         why.text, why.column, code, want, col);
	assert_string_equal(why.route, "");
	assert_null(r.text);
	assert_null(r.source);
	assert_null(r.cond);
}

static void test_sources(void **state)
{
	(void)state;
	json_props();
	perch_route_msg dev = from_device("leaf1"), mod = from_module("tempSensor", NULL),
	                out = from_module("tempSensor", "temperatureOutput"),
	                other = from_module("filter", "alerts"),
	                similar = from_module("tempSensor2", "temperatureOutput"),
	                twin = twin_change();
	static const struct {
		const char *source, *prefix;
		bool dev, mod, out, other, similar, twin;
	} cases[] = {
	        {"/*", "/", 1, 1, 1, 1, 1, 1},
	        {"/messages/*", "/messages/", 1, 1, 1, 1, 1, 0},
	        {"/messages", "/messages/", 1, 1, 1, 1, 1, 0},
	        {"/messages/modules/*", "/messages/modules/", 0, 1, 1, 1, 1, 0},
	        {"/messages/modules/tempSensor/*", "/messages/modules/tempSensor/", 0, 1, 1, 0, 0,
	         0},
	        {"/messages/modules/tempSensor", "/messages/modules/tempSensor/", 0, 1, 1, 0, 0, 0},
	        {"/messages/modules/tempSensor/outputs/*", "/messages/modules/tempSensor/outputs/",
	         0, 0, 1, 0, 0, 0},
	        {"/messages/modules/tempSensor/outputs/temperatureOutput",
	         "/messages/modules/tempSensor/outputs/temperatureOutput/", 0, 0, 1, 0, 0, 0},
	        {"/messages/modules/TEMPSENSOR/outputs/TemperatureOutput",
	         "/messages/modules/TEMPSENSOR/outputs/TemperatureOutput/", 0, 0, 1, 0, 0, 0},
	        {"/messages/modules/tempSensor/outputs/other",
	         "/messages/modules/tempSensor/outputs/other/", 0, 0, 0, 0, 0, 0},
	        {"/twinChangeNotifications", "/twinChangeNotifications/", 0, 0, 0, 0, 0, 1},
	        {"/messages/events", "/messages/events/", 0, 0, 0, 0, 0, 0},
	        {"/messages/modules/tempSensor/outputs/**", "/messages/modules/tempSensor/outputs/",
	         0, 0, 1, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char text[256];
		snprintf(text, sizeof text, "FROM %s INTO $upstream", cases[i].source);
		perch_route r = {0};
		parse_ok(text, &r);
		assert_string_equal(r.source, cases[i].source);
		assert_string_equal(r.prefix, cases[i].prefix);
		assert_int_equal(r.prefix_len, strlen(cases[i].prefix));
		assert_null(r.cond);
		assert_int_equal(perch_route_matches(&r, &dev), cases[i].dev);
		assert_int_equal(perch_route_matches(&r, &mod), cases[i].mod);
		assert_int_equal(perch_route_matches(&r, &out), cases[i].out);
		assert_int_equal(perch_route_matches(&r, &other), cases[i].other);
		assert_int_equal(perch_route_matches(&r, &similar), cases[i].similar);
		assert_int_equal(perch_route_matches(&r, &twin), cases[i].twin);
		assert_int_equal(perch_route_eval(&r, &dev), PERCH_ROUTE_TRUE);
		perch_route_clear(&r);
	}
	/* Spaces between the tokens of a source do not count. */
	perch_route r = {0};
	parse_ok("FROM / messages / modules /tempSensor/ * INTO $upstream", &r);
	assert_string_equal(r.source, "/messages/modules/tempSensor/*");
	perch_route_clear(&r);
	perch_route_clear(&r); /* twice is fine */
	perch_route_clear(NULL);
}

static void test_sinks(void **state)
{
	(void)state;
	perch_route r = {0};
	static const struct {
		const char *text, *module, *input;
	} ok[] = {
	        {"FROM /* INTO $upstream", NULL, NULL},
	        {"FROM /* INTO $UpStream", NULL, NULL},
	        {"FROM /* INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")", "filter",
	         "input1"},
	        {"FROM /* INTO brokeredendpoint(\"/modules/filter/inputs/input1\")", "filter",
	         "input1"},
	        {"FROM /* INTO BrokeredEndpoint ( \" /modules/f-1.x/inputs/in_2/ \" )", "f-1.x",
	         "in_2"},
	        {"FROM /* INTO BrokeredEndpoint(\"modules/f/inputs/i\")", "f", "i"},
	        {"FROM /* INTO BrokeredEndpoint('/Modules/f/INPUTS/i')", "f", "i"},
	        {"FROM /* INTO BrokeredEndpoint(\"/modules/\\u00e9/inputs/a\\\"b\")", "\xc3\xa9",
	         "a\"b"},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		parse_ok(ok[i].text, &r);
		if (ok[i].module == NULL) {
			assert_int_equal(r.sink.kind, PERCH_ROUTE_SINK_UPSTREAM);
			assert_null(r.sink.module);
			assert_null(r.sink.input);
		} else {
			assert_int_equal(r.sink.kind, PERCH_ROUTE_SINK_MODULE);
			assert_string_equal(r.sink.module, ok[i].module);
			assert_string_equal(r.sink.input, ok[i].input);
		}
		perch_route_clear(&r);
	}
	const char *endpoint = "expected BrokeredEndpoint(\"/modules/{module}/inputs/{input}\")";
	parse_bad("FROM /* INTO $downstream", PERCH_EINVAL, 14, "unknown sink $downstream");
	parse_bad("FROM /* INTO upstream", PERCH_EINVAL, 14, "the sink is written $upstream");
	parse_bad("FROM /* INTO Endpoint(\"x\")", PERCH_EINVAL, 14,
	          "unknown sink function Endpoint");
	parse_bad("FROM /* INTO BrokeredEndpoint", PERCH_EINVAL, 30, "expected '(' after");
	parse_bad("FROM /* INTO BrokeredEndpoint(/modules/f/inputs/i)", PERCH_EINVAL, 31,
	          "expected a string");
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f/inputs/i\"", PERCH_EINVAL, 52,
	          "expected ')', found the end");
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f/inputs/i)", PERCH_EINVAL, 31,
	          "unterminated string");
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f/outputs/i\")", PERCH_EINVAL, 31,
	          endpoint);
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f/inputs\")", PERCH_EINVAL, 31,
	          endpoint);
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f/inputs/i/j\")", PERCH_EINVAL, 31,
	          endpoint);
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules//inputs/i\")", PERCH_EINVAL, 31,
	          endpoint);
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f+/inputs/i\")", PERCH_EINVAL, 31,
	          "module id holds a character MQTT forbids");
	parse_bad("FROM /* INTO BrokeredEndpoint(\"/modules/f/inputs/#\")", PERCH_EINVAL, 31,
	          "input name holds a character");
	parse_bad("FROM /* INTO $upstream $upstream", PERCH_EINVAL, 24,
	          "expected the end of the route, found '$upstream'");
	parse_bad("FROM /* INTO", PERCH_EINVAL, 13, "expected a sink");
}

static void test_grammar(void **state)
{
	(void)state;
	json_props();
	perch_route r = {0};
	perch_route_msg out = from_module("tempSensor", "temperatureOutput");
	out.body = sl("{\"machine\":{\"temperature\":26}}");
	/* Keywords in any case, SELECT * in front, any white space. */
	static const char commented[] =
	        "FROM /messages/modules/tempSensor/outputs/temperatureOutput /* why */ WHERE "
	        "$body.machine.temperature > 25 /* hot */ INTO $upstream";
	const char *ok[] = {
	        "FROM /messages/* WHERE $body.machine.temperature > 25 INTO $upstream",
	        "from /messages/* where $body.machine.temperature > 25 into $upstream",
	        "SELECT * FROM /messages/* WHERE $body.machine.temperature > 25 INTO $upstream",
	        "select * From /messages/* wHeRe $body.machine.temperature > 25 iNTo $upstream",
	        "  \tFROM\n/messages/*\r\nWHERE\t$body.machine.temperature>25\nINTO $upstream \n",
	        commented,
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		parse_ok(ok[i], &r);
		assert_string_equal(r.text, ok[i]);
		assert_non_null(r.cond);
		assert_true(perch_route_matches(&r, &out));
		perch_route_clear(&r);
	}
	/* A `/` followed by `*` opens a comment that runs to the next `* /` when
	 * there is one, as in IoT Edge: a wildcard source before a comment
	 * swallows the WHERE clause. */
	parse_ok("FROM /messages/* WHERE false /* c */ INTO $upstream", &r);
	assert_string_equal(r.source, "/messages");
	assert_null(r.cond);
	perch_route_clear(&r);
	/* Errors, with the column of the offending character. */
	parse_bad("", PERCH_EINVAL, 1, "empty route");
	parse_bad("   \n ", PERCH_EINVAL, 1, "empty route");
	parse_bad("INTO $upstream", PERCH_EINVAL, 1, "expected FROM, found 'INTO'");
	parse_bad("SELECT FROM /* INTO $upstream", PERCH_EINVAL, 8, "expected '*' after SELECT");
	parse_bad("FROM messages/* INTO $upstream", PERCH_EINVAL, 6, "expected a source");
	parse_bad("FROM /messages/ INTO $upstream", PERCH_EINVAL, 17,
	          "expected a name or '*' after '/'");
	parse_bad("FROM /messages/* $upstream", PERCH_EINVAL, 18,
	          "expected WHERE or INTO, found '$upstream'");
	parse_bad("FROM /messages/* WHERE $body.machine.temperature > 25 INT $upstream",
	          PERCH_EINVAL, 55, "expected INTO, found 'INT'");
	parse_bad("FROM /messages/* WHERE INTO $upstream", PERCH_EINVAL, 24,
	          "expected a condition after WHERE");
	parse_bad("FROM /messages/* WHERE a = 'x INTO $upstream", PERCH_EINVAL, 28,
	          "unterminated string");
	parse_bad("FROM /messages/* WHERE é = 1 INTO $upstream", PERCH_EINVAL, 26,
	          "cannot compare a string with a number");
	parse_bad("FROM /* WHERE\x01true INTO $upstream", PERCH_EINVAL, 14, "a control character");
	parse_bad("FROM /* WHERE \xff INTO $upstream", PERCH_EINVAL, 15, "not valid UTF-8");
	parse_bad("FROM /* WHERE 'a\xc3' INTO $upstream", PERCH_EINVAL, 17, "not valid UTF-8");
	perch_route_error why;
	assert_int_equal(perch_route_parse((perch_slice){"FROM /* INTO $up\0", 17}, &r, &why),
	                 PERCH_EINVAL);
	assert_int_equal(why.column, 17);
	/* The quickstart's route, with a NULL why. */
	assert_int_equal(perch_route_parse(sl("FROM /messages/* INTO BrokeredEndpoint(\"/modules/"
	                                      "filter/inputs/input1\") junk"),
	                                   &r, NULL),
	                 PERCH_EINVAL);
	/* Limits. */
	static char big[PERCH_ROUTE_MAX_TEXT + 2];
	memset(big, ' ', sizeof big - 1);
	memcpy(big, "FROM /* INTO $upstream", 22);
	big[PERCH_ROUTE_MAX_TEXT] = '\0';
	parse_ok(big, &r);
	perch_route_clear(&r);
	big[PERCH_ROUTE_MAX_TEXT] = ' ';
	assert_int_equal(perch_route_parse(sl(big), &r, &why), PERCH_ETOOBIG);
	assert_int_equal(why.column, 0);
	assert_string_equal(why.text, "route longer than 4096 bytes");
}

/* --- the table ------------------------------------------------------------ */

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (j == NULL)
		fail_msg("bad test JSON: %s", e.text);
	return j;
}

static const char *QUICKSTART =
        "{\"schemaVersion\": \"1.1\","
        " \"routes\": {"
        "  \"sensorToFilter\": {\"route\": \"FROM /messages/modules/tempSensor/outputs/"
        "temperatureOutput INTO BrokeredEndpoint(\\\"/modules/filter/inputs/input1\\\")\","
        "    \"priority\": 1, \"timeToLiveSecs\": 3600},"
        "  \"alertsUpstream\": {\"route\": \"FROM /messages/modules/filter/outputs/alerts WHERE "
        "$body.machine.temperature > 30 INTO $upstream\", \"priority\": 0,"
        "    \"timeToLiveSecs\": 86400},"
        "  \"leafTelemetry\": \"FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO "
        "$upstream\""
        " },"
        " \"storeAndForwardConfiguration\": {\"timeToLiveSecs\": 7200},"
        " \"$version\": 4}";

typedef struct hits {
	size_t n;
	perch_route_hit h[8];
	char sink[8][64];
	size_t stop_after; /* 0: never */
} hits;

static bool collect(void *arg, const perch_route_hit *h)
{
	hits *hs = arg;
	if (hs->n < 8) {
		hs->h[hs->n] = *h;
		if (h->sink->kind == PERCH_ROUTE_SINK_UPSTREAM)
			snprintf(hs->sink[hs->n], 64, "$upstream");
		else
			snprintf(hs->sink[hs->n], 64, "%s/%s", h->sink->module, h->sink->input);
	}
	hs->n++;
	return hs->stop_after == 0 || hs->n < hs->stop_after;
}

static perch_route_table *table(const char *text)
{
	json_t *j = load(text);
	perch_route_table *t = NULL;
	perch_route_errors errs = {0};
	perch_err err = perch_routes_from_edgehub(j, &t, &errs);
	json_decref(j);
	if (err != PERCH_OK)
		fail_msg("table refused: %s: %s", errs.count ? errs.item[0].route : "",
		         errs.count ? errs.item[0].text : "");
	assert_int_equal(errs.count, 0);
	return t;
}

static void test_table_quickstart(void **state)
{
	(void)state;
	json_props();
	perch_route_table *t = table(QUICKSTART);
	assert_int_equal(perch_route_table_count(t), 3);
	assert_int_equal(perch_route_table_default_ttl(t), 7200);
	/* In name order. */
	perch_route_entry e = perch_route_table_at(t, 0);
	assert_string_equal(e.name, "alertsUpstream");
	assert_int_equal(e.priority, 0);
	assert_int_equal(e.ttl_secs, 86400);
	e = perch_route_table_at(t, 1);
	assert_string_equal(e.name, "leafTelemetry");
	assert_int_equal(e.priority, PERCH_ROUTE_DEFAULT_PRIORITY);
	assert_int_equal(e.ttl_secs, 0);
	e = perch_route_table_at(t, 2);
	assert_string_equal(e.name, "sensorToFilter");
	assert_string_equal(e.route->sink.module, "filter");

	/* The sensor's output goes to the filter. */
	hits hs = {0};
	perch_route_match_info info;
	perch_route_msg m = from_module("tempSensor", "temperatureOutput");
	m.body = sl("{\"machine\":{\"temperature\":35}}");
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, &info), 1);
	assert_string_equal(hs.sink[0], "filter/input1");
	assert_string_equal(hs.h[0].name, "sensorToFilter");
	assert_int_equal(hs.h[0].priority, 1);
	assert_int_equal(hs.h[0].ttl_secs, 3600);
	assert_int_equal(info.evaluated, 2); /* leafTelemetry's source matched too */
	assert_int_equal(info.undefined, 0);
	assert_int_equal(info.body, PERCH_ROUTE_BODY_UNUSED);

	/* The filter's hot alert goes upstream; a cool one nowhere. */
	memset(&hs, 0, sizeof hs);
	m = from_module("filter", "alerts");
	m.body = sl("{\"machine\":{\"temperature\":35}}");
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, &info), 1);
	assert_string_equal(hs.sink[0], "$upstream");
	assert_string_equal(hs.h[0].name, "alertsUpstream");
	assert_int_equal(hs.h[0].priority, 0);
	assert_int_equal(info.body, PERCH_ROUTE_BODY_JSON);
	m.body = sl("{\"machine\":{\"temperature\":25}}");
	assert_int_equal(perch_routes_match(t, &m, NULL, NULL, &info), 0);
	/* A body that is not JSON: the alert route is undefined, nothing matches. */
	m.body = sl("machine temperature 35");
	assert_int_equal(perch_routes_match(t, &m, NULL, NULL, &info), 0);
	assert_int_equal(info.evaluated, 2);
	assert_int_equal(info.undefined, 1);
	assert_int_equal(info.body, PERCH_ROUTE_BODY_INVALID);
	assert_string_equal(perch_route_body_str(info.body), "not a JSON object");

	/* A leaf device's telemetry goes upstream with the default TTL. */
	memset(&hs, 0, sizeof hs);
	m = from_device("leaf1");
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, NULL), 1);
	assert_string_equal(hs.sink[0], "$upstream");
	assert_string_equal(hs.h[0].name, "leafTelemetry");
	assert_int_equal(hs.h[0].ttl_secs, 7200);
	assert_int_equal(hs.h[0].priority, PERCH_ROUTE_DEFAULT_PRIORITY);
	perch_route_table_free(t);
	perch_route_table_free(NULL);
}

static void test_table_dedup(void **state)
{
	(void)state;
	json_props();
	/* Three routes to $upstream and two to one module input: each sink once,
	 * at the best priority of the routes that matched, in the order of the
	 * first route (by name) naming it. */
	perch_route_table *t =
	        table("{\"schemaVersion\": \"1.1\", \"routes\": {"
	              " \"b\": {\"route\": \"FROM /messages/* INTO $upstream\", \"priority\": 5},"
	              " \"a\": {\"route\": \"FROM /messages/* INTO "
	              "BrokeredEndpoint('/modules/m/inputs/i')\","
	              "         \"priority\": 3, \"timeToLiveSecs\": 10},"
	              " \"c\": {\"route\": \"FROM /messages/* WHERE $body.x = 1 INTO $upstream\","
	              "         \"priority\": 2, \"timeToLiveSecs\": 20},"
	              " \"d\": {\"route\": \"FROM /messages/* INTO "
	              "BrokeredEndpoint('/modules/m/inputs/i')\","
	              "         \"priority\": 9},"
	              " \"e\": \"FROM /messages/* WHERE $body.x = 1 INTO $upstream\","
	              " \"f\": {\"route\": \"FROM /messages/* INTO "
	              "BrokeredEndpoint('/modules/m/inputs/j')\"}"
	              "}, \"storeAndForwardConfiguration\": {\"timeToLiveSecs\": -1}}");
	assert_int_equal(perch_route_table_default_ttl(t), PERCH_ROUTE_TTL_FOREVER);
	hits hs = {0};
	perch_route_msg m = from_device("leaf");
	m.body = sl("{\"x\": 1}");
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, NULL), 3);
	assert_string_equal(hs.sink[0], "m/i");
	assert_string_equal(hs.h[0].name, "a");
	assert_int_equal(hs.h[0].priority, 3);
	assert_int_equal(hs.h[0].ttl_secs, 10);
	assert_string_equal(hs.sink[1], "$upstream");
	assert_string_equal(hs.h[1].name, "c");
	assert_int_equal(hs.h[1].priority, 2);
	assert_int_equal(hs.h[1].ttl_secs, 20);
	assert_string_equal(hs.sink[2], "m/j");
	assert_int_equal(hs.h[2].ttl_secs, PERCH_ROUTE_TTL_FOREVER);
	/* When c does not match, b carries $upstream. */
	memset(&hs, 0, sizeof hs);
	m.body = sl("{\"x\": 2}");
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, NULL), 3);
	assert_string_equal(hs.h[1].name, "b");
	assert_int_equal(hs.h[1].priority, 5);
	/* The callback can stop early. */
	memset(&hs, 0, sizeof hs);
	hs.stop_after = 1;
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, NULL), 1);
	assert_int_equal(hs.n, 1);
	perch_route_table_free(t);

	/* An empty table, and one without routes. */
	t = table("{\"schemaVersion\": \"1.0\"}");
	assert_int_equal(perch_route_table_count(t), 0);
	assert_int_equal(perch_routes_match(t, &m, collect, &hs, NULL), 0);
	perch_route_table_free(t);
	t = table("{\"schemaVersion\": \"1.3\", \"routes\": {}, \"storeAndForwardConfiguration\":"
	          " {\"timeToLiveSecs\": 0}}");
	assert_int_equal(perch_route_table_default_ttl(t), 0);
	perch_route_table_free(t);
	/* 1.0 skips a blank route, as IoT Edge does. */
	t = table("{\"schemaVersion\": \"1.0\", \"routes\": {\"r\": \"  \", \"s\": \"FROM /* INTO "
	          "$upstream\"}, \"storeAndForwardConfiguration\": null}");
	assert_int_equal(perch_route_table_count(t), 1);
	assert_string_equal(perch_route_table_at(t, 0).name, "s");
	perch_route_table_free(t);
	/* An explicit default priority is accepted. */
	t = table("{\"schemaVersion\": \"1.1\", \"routes\": {\"r\": {\"route\": \"FROM /* INTO "
	          "$upstream\", \"priority\": 2000000000, \"other\": 1}}}");
	assert_int_equal(perch_route_table_at(t, 0).priority, PERCH_ROUTE_DEFAULT_PRIORITY);
	perch_route_table_free(t);
}

/* A table that must be refused, with these errors (route, text) in order. */
static void refused(const char *text, perch_err code, size_t count, ...)
{
	json_t *j = load(text);
	perch_route_table *t = (perch_route_table *)&t; /* not NULL: must be reset */
	perch_route_errors errs = {0};
	perch_err err = perch_routes_from_edgehub(j, &t, &errs);
	json_decref(j);
	assert_null(t);
	if (err != code || errs.count != count) {
		for (size_t i = 0; i < errs.count && i < PERCH_ROUTE_MAX_ERRORS; i++)
			print_message("  %s: %s\n", errs.item[i].route, errs.item[i].text);
		fail_msg("%s: got %d with %zu errors, want %d with %zu", text, err, errs.count,
		         code, count);
	}
	va_list ap;
	va_start(ap, count);
	for (size_t i = 0; i < count && i < PERCH_ROUTE_MAX_ERRORS; i++) {
		const char *route = va_arg(ap, const char *);
		const char *want = va_arg(ap, const char *);
		unsigned column = va_arg(ap, unsigned);
		if (strcmp(errs.item[i].route, route) != 0 ||
		    strstr(errs.item[i].text, want) == NULL || errs.item[i].column != column)
			fail_msg("error %zu: got %s: '%s' (column %u), want %s: '%s' (column %u)",
			         i, errs.item[i].route, errs.item[i].text, errs.item[i].column,
			         route, want, column);
	}
	va_end(ap);
}

static void test_table_errors(void **state)
{
	(void)state;
	refused("[]", PERCH_EINVAL, 1, "", "expected the $edgeHub desired properties", 0u);
	refused("{\"routes\": {}}", PERCH_EINVAL, 1, "", "schemaVersion: missing", 0u);
	refused("{\"schemaVersion\": 1.1}", PERCH_EINVAL, 1, "", "expected a version", 0u);
	refused("{\"schemaVersion\": \"1.x\"}", PERCH_EINVAL, 1, "", "expected a version", 0u);
	refused("{\"schemaVersion\": \"2.0\"}", PERCH_EUNSUPPORTED, 1, "",
	        "2.0 is not one Perch reads", 0u);
	refused("{\"schemaVersion\": \"1.4\"}", PERCH_EUNSUPPORTED, 1, "", "(1.0 to 1.3)", 0u);
	refused("{\"schemaVersion\": \"1.1\", \"routes\": []}", PERCH_EINVAL, 1, "",
	        "routes: expected an object", 0u);
	refused("{\"schemaVersion\": \"1.1\", \"storeAndForwardConfiguration\": 5}", PERCH_EINVAL,
	        1, "", "storeAndForwardConfiguration: expected an object", 0u);
	refused("{\"schemaVersion\": \"1.1\", \"storeAndForwardConfiguration\": "
	        "{\"timeToLiveSecs\": \"7200\"}}",
	        PERCH_EINVAL, 1, "", "timeToLiveSecs: expected an integer", 0u);
	/* Every bad route is reported, by name and in name order, with the
	 * column of route text errors; the good routes do not save the table. */
	refused("{\"schemaVersion\": \"1.1\", \"routes\": {"
	        " \"good\": \"FROM /* INTO $upstream\","
	        " \"z-syntax\": \"FROM /messages/* WHERE $body.t > 25 $upstream\","
	        " \"a-prio\": {\"route\": \"FROM /* INTO $upstream\", \"priority\": 10},"
	        " \"b-ttl\": {\"route\": \"FROM /* INTO $upstream\", \"timeToLiveSecs\": -5},"
	        " \"c-type\": 5,"
	        " \"d-noroute\": {\"priority\": 1},"
	        " \"e-empty\": \"\","
	        " \"f-func\": \"FROM /* WHERE NOPE(1) INTO $upstream\","
	        " \"g-routetype\": {\"route\": 7}"
	        "}}",
	        PERCH_EINVAL, 8, "a-prio", "priority: expected an integer from 0 to 9", 0u, "b-ttl",
	        "timeToLiveSecs: expected an integer", 0u, "c-type",
	        "expected a route string or object", 0u, "d-noroute", "route: missing", 0u,
	        "e-empty", "empty route", 0u, "f-func", "column 15: unknown function NOPE", 15u,
	        "g-routetype", "route: expected a string", 0u, "z-syntax",
	        "column 37: expected INTO, found '$upstream'", 37u);
	/* Route objects need 1.1. */
	refused("{\"schemaVersion\": \"1.0\", \"routes\": {\"r\": {\"route\": \"FROM /* INTO "
	        "$upstream\"}}}",
	        PERCH_EINVAL, 1, "r", "need schemaVersion 1.1", 0u);
	refused("{\"schemaVersion\": \"1.1\", \"routes\": {\" \": \"FROM /* INTO $upstream\"}}",
	        PERCH_EINVAL, 1, " ", "empty route name", 0u);
	/* More errors than are kept: all counted. */
	char text[4096];
	size_t k = (size_t)sprintf(text, "{\"schemaVersion\": \"1.1\", \"routes\": {");
	for (int i = 0; i < 12; i++)
		k += (size_t)sprintf(text + k, "%s\"r%02d\": \"FROM\"", i ? "," : "", i);
	sprintf(text + k, "}}");
	json_t *j = load(text);
	perch_route_table *t;
	perch_route_errors errs = {0};
	assert_int_equal(perch_routes_from_edgehub(j, &t, &errs), PERCH_EINVAL);
	assert_int_equal(errs.count, 12);
	assert_string_equal(errs.item[7].route, "r07");
	assert_int_equal(perch_routes_from_edgehub(j, &t, NULL), PERCH_EINVAL); /* errs optional */
	json_decref(j);
	/* Limits: the number of routes and the length of a name. */
	json_t *d = json_pack("{s:s, s:{}}", "schemaVersion", "1.1", "routes");
	json_t *routes = json_object_get(d, "routes");
	for (int i = 0; i <= PERCH_ROUTE_MAX_ROUTES; i++) {
		char name[16];
		snprintf(name, sizeof name, "r%d", i);
		json_object_set_new(routes, name, json_string("FROM /* INTO $upstream"));
	}
	assert_int_equal(perch_routes_from_edgehub(d, &t, &errs), PERCH_ETOOBIG);
	assert_string_equal(errs.item[0].text, "routes: more than 1024 routes");
	json_object_del(routes, "r0");
	assert_int_equal(perch_routes_from_edgehub(d, &t, &errs), PERCH_OK);
	assert_int_equal(perch_route_table_count(t), PERCH_ROUTE_MAX_ROUTES);
	perch_route_table_free(t);
	json_object_clear(routes);
	char name[PERCH_ROUTE_MAX_NAME + 2];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	json_object_set_new(routes, name, json_string("FROM /* INTO $upstream"));
	assert_int_equal(perch_routes_from_edgehub(d, &t, &errs), PERCH_ETOOBIG);
	assert_string_equal(errs.item[0].text, "a route name longer than 256 bytes");
	json_decref(d);
}

/* Each allocation failing in turn: building and matching say ENOMEM (or
 * match without the body) and leak nothing. */
static void test_alloc_failure(void **state)
{
	(void)state;
	json_props();
	json_t *j = load(QUICKSTART);
	/* A body of more than the in-context tokens, so matching allocates. */
	static char body[4096];
	size_t k = (size_t)sprintf(body, "{\"machine\":{\"temperature\":35},\"pad\":[");
	for (int i = 0; i < 200; i++)
		k += (size_t)sprintf(body + k, "%s%d", i ? "," : "", i);
	sprintf(body + k, "]}");
	perch_route_msg m = from_module("filter", "alerts");
	m.body = sl(body);
	size_t b0 = perch_alloc_bytes(), n0 = perch_alloc_blocks();
	int failed = 0;
	for (long n = 0;; n++) {
		perch_route_table *t = NULL;
		perch_alloc_fail_after(n);
		size_t f0 = perch_alloc_failures();
		perch_err err = perch_routes_from_edgehub(j, &t, NULL);
		bool injected = perch_alloc_failures() != f0;
		perch_alloc_fail_after(-1);
		if (injected) {
			assert_int_equal(err, PERCH_ENOMEM);
			assert_null(t);
			assert_int_equal(perch_alloc_bytes(), b0);
			assert_int_equal(perch_alloc_blocks(), n0);
			failed++;
			continue;
		}
		assert_int_equal(err, PERCH_OK);
		/* Matching: the only allocation is the body's token array; when it
		 * fails, $body is undefined. */
		perch_route_match_info info;
		perch_alloc_fail_after(0);
		size_t got = perch_routes_match(t, &m, NULL, NULL, &info);
		perch_alloc_fail_after(-1);
		assert_int_equal(got, 0);
		assert_int_equal(info.body, PERCH_ROUTE_BODY_NO_MEMORY);
		assert_int_equal(perch_routes_match(t, &m, NULL, NULL, &info), 1);
		assert_int_equal(info.body, PERCH_ROUTE_BODY_JSON);
		perch_route_table_free(t);
		assert_int_equal(perch_alloc_bytes(), b0);
		assert_int_equal(perch_alloc_blocks(), n0);
		break;
	}
	assert_true(failed >= 10);
	json_decref(j);
}

/* Routing throughput for the quickstart condition, measured in CPU time
 * (the machine is shared) and never asserted: the numbers go to
 * docs/routes.md. */
static void test_throughput(void **state)
{
	(void)state;
	json_props();
	perch_route r = {0};
	parse_ok("FROM /messages/* WHERE $body.machine.temperature > 25 INTO $upstream", &r);
	perch_route_table *t = table(QUICKSTART);
	/* The simulated temperature sensor's message. */
	const char *body = "{\"machine\":{\"temperature\":28.51,\"pressure\":1.84},"
	                   "\"ambient\":{\"temperature\":21.03,\"humidity\":25},"
	                   "\"timeCreated\":\"2024-05-01T10:00:00.0000000Z\"}";
	perch_route_msg m = from_module("filter", "alerts");
	m.body = sl(body);
	const long n = 200000;
	struct timespec a, b;
	long matched = 0;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	for (long i = 0; i < n; i++)
		matched += perch_route_matches(&r, &m);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	double s1 = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	assert_int_equal(matched, n);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	for (long i = 0; i < n; i++)
		matched += (long)perch_routes_match(t, &m, NULL, NULL, NULL);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	double s2 = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	print_message("throughput: %s: %.0f msgs/s of CPU (%.0f ns each, %zu-byte body)\n",
	              "FROM /messages/* WHERE $body.machine.temperature > 25", (double)n / s1,
	              s1 / (double)n * 1e9, strlen(body));
	print_message("throughput: the quickstart table (3 routes): %.0f msgs/s of CPU\n",
	              (double)n / s2);
	perch_route_table_free(t);
	perch_route_clear(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_sources),       cmocka_unit_test(test_sinks),
	        cmocka_unit_test(test_grammar),       cmocka_unit_test(test_table_quickstart),
	        cmocka_unit_test(test_table_dedup),   cmocka_unit_test(test_table_errors),
	        cmocka_unit_test(test_alloc_failure), cmocka_unit_test(test_throughput),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
