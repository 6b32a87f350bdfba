/*
 * route_expr_test.c — unit tests for route conditions: the lexer's IoT Edge
 * rules, precedence and associativity, literals and escapes, every builtin
 * function, three-valued logic and undefined, type errors at compile time
 * and mismatches at run time, $body paths, and properties by every name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "perch/route.h"

static perch_props props; /* big: kept off the stack */
static perch_route_msg msg;
static const char *body;

/* The default message: a module's output with a JSON body. */
static void reset(void)
{
	perch_props_init(&props);
	assert_int_equal(perch_props_set(&props, PERCH_SLICE_LIT("$.ct"),
	                                 PERCH_SLICE_LIT("application/json"), NULL),
	                 PERCH_OK);
	assert_int_equal(
	        perch_props_set(&props, PERCH_SLICE_LIT("$.ce"), PERCH_SLICE_LIT("utf-8"), NULL),
	        PERCH_OK);
	assert_int_equal(
	        perch_props_set(&props, PERCH_SLICE_LIT("$.mid"), PERCH_SLICE_LIT("m-1"), NULL),
	        PERCH_OK);
	body = "{\"machine\":{\"temperature\":26.5,\"pressure\":1.25},"
	       "\"ambient\":{\"temperature\":21,\"humidity\":25},"
	       "\"timeCreated\":\"2024-05-01T10:00:00Z\",\"ok\":true,\"none\":null,"
	       "\"tags\":[\"a\",\"b\\u00e9\",{\"k\":[10,20]}],\"n\":-1.5e2,"
	       "\"esc\\\"key\":\"x\\ny\",\"dup\":1,\"dup\":2,\"big\":1e400,"
	       "\"int\":12345678901234567890}";
	msg = (perch_route_msg){PERCH_ROUTE_TELEMETRY,
	                        PERCH_SLICE_LIT("edge1"),
	                        PERCH_SLICE_LIT("tempSensor"),
	                        PERCH_SLICE_LIT("out1"),
	                        &props,
	                        perch_slice_cstr(body)};
}

static int setup(void **state)
{
	(void)state;
	reset();
	return 0;
}

static void set_prop(const char *k, const char *v)
{
	assert_int_equal(perch_props_set(&props, perch_slice_cstr(k), perch_slice_cstr(v), NULL),
	                 PERCH_OK);
}

static void set_body(const char *b)
{
	body = b;
	msg.body = perch_slice_cstr(b);
}

/* Evaluates a condition against msg. */
static perch_route_truth ev(const char *cond)
{
	char text[PERCH_ROUTE_MAX_TEXT + 64];
	snprintf(text, sizeof text, "FROM /* WHERE %s INTO $upstream", cond);
	perch_route r = {0};
	perch_route_error why;
	perch_err err = perch_route_parse(perch_slice_cstr(text), &r, &why);
	if (err != PERCH_OK)
		fail_msg("%s: %s", cond, why.text);
	perch_route_truth t = perch_route_eval(&r, &msg);
	perch_route_clear(&r);
	return t;
}

#define T(c) assert_int_equal(ev(c), PERCH_ROUTE_TRUE)
#define F(c) assert_int_equal(ev(c), PERCH_ROUTE_FALSE)
#define U(c) assert_int_equal(ev(c), PERCH_ROUTE_UNDEFINED)

/* A condition that does not compile: code, and the text (with its column,
 * counted from the condition's start) must contain want. */
static void bad(const char *cond, perch_err code, unsigned col, const char *want)
{
	char text[PERCH_ROUTE_MAX_TEXT + 64];
	snprintf(text, sizeof text, "FROM /* WHERE %s INTO $upstream", cond);
	perch_route r = {0};
	perch_route_error why;
	perch_err err = perch_route_parse(perch_slice_cstr(text), &r, &why);
	if (err != code || strstr(why.text, want) == NULL || (col != 0 && why.column != col + 14))
		fail_msg("%s: got %d '%s' (column %u), want %d '%s' (column %u)", cond, err,
		         why.text, why.column, code, want, col ? col + 14 : 0);
	assert_null(r.text);
	assert_null(r.cond);
}

static void test_literals(void **state)
{
	(void)state;
	T("1 = 1");
	T("-5 = 0 - 5");
	T("1.5 = 3 / 2");
	T(".5 = 0.5");
	T("1e3 = 1000");
	T("2.5E-1 = 0.25");
	T("-1e2 = -100");
	T("0x1F = 31");
	T("0XfF = 255");
	T("0xFFFFFFFFFFFFFFFF = -1"); /* read as a signed 64-bit number, as IoT Edge does */
	T("'abc' = \"abc\"");
	T("'it\\'s' = \"it's\"");
	T("\"say \\\"hi\\\"\" = 'say \"hi\"'");
	T("'a\\\\b' = CONCAT('a', '\\\\', 'b')");
	T("LENGTH('a\\\\b') = 3");
	T("'\\u00e9' = 'é'");
	bad("'\\U00e9' = 'x'", PERCH_EINVAL, 2, "unknown escape"); /* \u only, lower case */
	T("LENGTH('\\ud83d\\ude00') = 1"); /* a surrogate pair is one character */
	T("'\\ud83d' = '\\ufffd'");        /* a lone surrogate becomes U+FFFD */
	T("true");
	F("false");
	T("true = true");
	T("null = null");
	U("undefined");
	U("null");
	T("'' = ''");
	T("LENGTH('') = 0");
	bad("1e999 = 1", PERCH_ERANGE, 1, "number out of range");
	bad("0x12345678901234567 = 1", PERCH_ERANGE, 1, "longer than 16 digits");
	bad("'abc", PERCH_EINVAL, 1, "unterminated string");
	bad("'a\\nb' = 'x'", PERCH_EINVAL, 3, "unknown escape");
	bad("'\\u12' = 'x'", PERCH_EINVAL, 2, "unknown escape");
}

static void test_lexer_rules(void **state)
{
	(void)state;
	set_prop("a-b", "dash");
	set_prop("-x", "minus");
	set_prop("True", "capital");
	set_prop("x*2", "star");
	set_prop("2-1", "digits");
	set_prop("'q'r", "quote");
	set_prop("a.b", "dot");
	set_prop("#tag!", "odd");
	/* Names run over - + * % . ! # ' and digits: `a-b` is one name. */
	T("a-b = 'dash'");
	T("-x = 'minus'");
	T("x*2 = 'star'");
	T("2-1 = 'digits'");
	T("'q'r = 'quote'");
	T("a.b = 'dot'");
	T("#tag! = 'odd'");
	/* true/false/null are lower case only; True is a property. */
	T("True = 'capital'");
	/* Keywords and AND/OR/NOT in any case. */
	T("true and NOT false And 1 = 1 oR false");
	/* Spaces make operators; comments vanish; tabs and newlines are space. */
	T("3 - 1 = 2");
	T("3\t-\n1\r\n= 2");
	T("1 <> 2 AND 1 != 2 AND 1 <= 1 AND 2 >= 1");
	T("'a' || 'b' = 'ab'");
	/* `3 -1` is two numbers in a row: a syntax error, as in IoT Edge. */
	bad("3 -1 = 2", PERCH_EINVAL, 3, "expected INTO, found '-1'");
	bad("1 = 1 @", PERCH_EINVAL, 7, "unexpected character '@'");
	bad("a[0] = 1", PERCH_EINVAL, 1, "only index $body paths");
	bad("1 = 1 ; 2", PERCH_EINVAL, 7, "unexpected character ';'");
	bad("(1 = 1", PERCH_EINVAL, 8, "expected ')'");
	bad("1 = 1)", PERCH_EINVAL, 6, "unmatched ')'");
	bad("", PERCH_EINVAL, 2, "expected a condition after WHERE");
	bad("AND 1", PERCH_EINVAL, 1, "expected an expression, found 'AND'");
	bad("1 =", PERCH_EINVAL, 5, "expected an expression, found 'INTO'");
	bad("{contentType} = 'x'", PERCH_EINVAL, 2, "expected a $property after '{'");
	bad("{$contentType = 'x'", PERCH_EINVAL, 15, "expected '}'");
}

static void test_precedence(void **state)
{
	(void)state;
	T("2 + 3 * 4 = 14");
	T("(2 + 3) * 4 = 20");
	T("10 - 4 - 3 = 3"); /* left to right */
	T("64 / 4 / 2 = 8"); /* left to right */
	T("7 % 4 * 2 = 6");  /* same level, left to right */
	T("2 * 3 % 4 = 2");
	T("- 2 * 3 = -6");
	T("- (2 + 3) = -5");
	T("- - 2 = 2");
	T("1 + 1 < 3");    /* arithmetic binds tighter than comparison */
	T("1 < 2 = true"); /* comparison tighter than equality */
	T("true = 1 < 2");
	T("true OR false AND false"); /* AND tighter than OR */
	F("(true OR false) AND false");
	T("NOT false AND true");
	/* NOT binds tighter than = (IoT Edge's grammar): NOT true = false is
	 * (NOT true) = false. */
	T("NOT true = false");
	T("NOT (1 = 2)");
	bad("NOT 1 = 2", PERCH_EINVAL, 1, "NOT needs true or false, found a number");
	/* ?? is the loosest: undefined ?? (1 = 1). */
	T("undefined ?? 1 = 1");
	T("(undefined ?? 1) = 1");
	T("'a' || 'b' || 'c' = 'abc'");
	T("CONCAT('1', '2') || 'x' = '12x'");
}

static void test_comparisons(void **state)
{
	(void)state;
	T("'abc' < 'abd'");
	T("'ab' < 'abc'");
	T("'B' < 'a'"); /* by code points */
	T("'é' > 'z'");
	T("false < true");
	T("true >= true");
	T("1.0 = 1");
	T("-0 = 0");
	T("null = null AND null <= null AND null >= null");
	F("null != null");
	F("null < null");
	/* Mismatched known types do not compile. */
	bad("'1' = 1", PERCH_EINVAL, 5, "cannot compare a string with a number");
	bad("true = 'true'", PERCH_EINVAL, 6, "cannot compare true or false with a string");
	bad("$contentType = null", PERCH_EINVAL, 14, "cannot compare a string with null");
	bad("1 < null", PERCH_EINVAL, 3, "cannot compare a number with null");
	/* undefined compiles against anything, and is undefined. */
	U("1 = undefined");
	U("undefined = undefined");
	U("'a' != undefined");
	/* A body value of the wrong type is undefined when evaluated. */
	U("$body.machine.temperature = 'hot'");
	U("$body.timeCreated > 5");
	U("$body.ok = 1");
	U("$body.none = 0");
	T("$body.none = null");
	U("$body.machine = 1");    /* an object */
	U("$body.tags = 'a'");     /* an array */
	U("$body.missing != 'x'"); /* missing is undefined, not unequal */
}

static void test_logic(void **state)
{
	(void)state;
	/* Three-valued AND and OR. */
	T("true AND true");
	F("true AND false");
	F("false AND undefined");
	F("undefined AND false");
	U("true AND undefined");
	U("undefined AND undefined");
	T("true OR undefined");
	T("undefined OR true");
	U("false OR undefined");
	F("false OR false");
	U("NOT undefined");
	U("NOT null");
	T("NOT false");
	/* A missing property makes a comparison undefined, and NOT keeps it so. */
	U("missing = 'x'");
	U("NOT (missing = 'x')");
	T("NOT (missing = 'x') OR true");
	T("IS_DEFINED(missing) = false");
	/* Non-booleans do not compile under AND/OR/NOT. */
	bad("1 AND true", PERCH_EINVAL, 3, "AND needs true or false, found a number");
	bad("true or 'x'", PERCH_EINVAL, 6, "or needs true or false, found a string");
	bad("NOT 'x'", PERCH_EINVAL, 1, "NOT needs true or false");
	/* $body values that are not booleans are undefined under logic. */
	U("$body.n AND true");
	F("$body.n AND false");
	T("$body.ok AND true");
	T("$body.ok");
	F("NOT $body.ok");
	/* A condition that is a number or string does not compile. */
	bad("1 + 1", PERCH_EINVAL, 1, "the condition is a number, not true or false");
	bad("$contentType", PERCH_EINVAL, 1, "the condition is a string");
	/* ?? takes the first defined value. */
	T("(missing ?? 'd') = 'd'");
	T("($messageId ?? 'd') = 'm-1'");
	T("IS_NULL($body.none ?? 1)");
	T("($body.missing ?? $body.machine.pressure) = 1.25");
	bad("'a' ?? 1", PERCH_EINVAL, 5, "'?\?' needs two values of one type");
}

static void test_arithmetic(void **state)
{
	(void)state;
	T("$body.machine.temperature * 2 = 53");
	T("$body.machine.temperature + $body.ambient.temperature = 47.5");
	T("7 % 3 = 1");
	T("-7 % 3 = -1");
	T("7.5 % 2 = 1.5");
	U("1 / 0 = 1"); /* not finite: undefined */
	U("0 / 0 = 0");
	U("1 % 0 = 0");
	U("$body.timeCreated + 1 = 1");
	U("AS_NUMBER(missing) + 1 = 1");
	U("- $body.timeCreated = 1");
	T("- $body.n = 150");
	bad("'a' + 1 = 1", PERCH_EINVAL, 5, "'+' needs numbers, found a string");
	bad("1 * true = 1", PERCH_EINVAL, 3, "'*' needs numbers, found true or false");
	bad("- 'a' = 1", PERCH_EINVAL, 1, "'-' needs a number, found a string");
	bad("1 || 'a' = 'a'", PERCH_EINVAL, 3, "'||' needs strings, found a number");
	bad("temp > 25", PERCH_EINVAL, 6, "AS_NUMBER converts");
	bad("2-1 > 0", PERCH_EINVAL, 5, "'2-1' is one property name");
}

static void test_functions(void **state)
{
	(void)state;
	set_prop("count", "  1,024.5 ");
	set_prop("bad", "12abc");
	/* Math. */
	T("ABS(-3) = 3");
	T("EXP(0) = 1");
	T("POWER(2, 10) = 1024");
	U("POWER(10, 400) = 1"); /* overflows: not finite */
	T("SQUARE(-3) = 9");
	T("CEILING(1.2) = 2 AND CEILING(-1.2) = -1");
	T("FLOOR(1.8) = 1 AND FLOOR(-1.2) = -2");
	T("SIGN(-2) = -1 AND SIGN(0) = 0 AND SIGN(0.5) = 1");
	T("SQRT(16) = 4");
	U("SQRT(-1) = 0");
	U("ABS($body.timeCreated) = 0");
	/* Types. */
	T("AS_NUMBER('42') = 42");
	T("AS_NUMBER(' -1.5e1 ') = -15");
	T("AS_NUMBER(count) = 1024.5");
	T("AS_NUMBER($body.n) = -150");
	U("AS_NUMBER(bad) = 12");
	U("AS_NUMBER('') = 0");
	U("AS_NUMBER('0x10') = 16");
	U("AS_NUMBER($body.ok) = 1");
	T("IS_BOOL($body.ok) AND NOT IS_BOOL($body.n)");
	T("IS_NUMBER($body.n) AND NOT IS_NUMBER('1')");
	T("IS_STRING($body.timeCreated) AND IS_STRING($contentType) AND NOT IS_STRING(1)");
	T("IS_NULL($body.none) AND NOT IS_NULL(missing) AND NOT IS_NULL(0)");
	T("IS_DEFINED($body.none) AND IS_DEFINED($body.machine) AND NOT IS_DEFINED(missing)");
	T("IS_OBJECT($body.machine) AND NOT IS_OBJECT($body.tags)");
	T("IS_ARRAY($body.tags) AND NOT IS_ARRAY($body.machine)");
	T("IS_PRIMITIVE($body.n) AND IS_PRIMITIVE($body.none) AND NOT IS_PRIMITIVE($body.tags) "
	  "AND NOT IS_PRIMITIVE(missing)");
	F("IS_DEFINED(undefined)");
	/* Strings: by characters, not bytes. */
	T("CONCAT('a', 'b') = 'ab'");
	T("CONCAT('a', 'b', 'c', 'd') = 'abcd'");
	U("CONCAT('a', missing) = 'a'");
	T("LENGTH('héllo') = 5");
	T("LOWER('AbC-É') = 'abc-É'"); /* ASCII letters only */
	T("UPPER('abc-é') = 'ABC-é'");
	T("SUBSTRING('héllo', 1) = 'éllo'");
	T("SUBSTRING('héllo', 1, 2) = 'él'");
	T("SUBSTRING('abc', 3) = ''");
	U("SUBSTRING('abc', 4) = ''");
	U("SUBSTRING('abc', -1) = ''");
	U("SUBSTRING('abc', 3, 0) = ''"); /* IoT Edge: start must be inside the string */
	U("SUBSTRING('abc', 1, 3) = 'bc'");
	T("SUBSTRING('abcdef', 1.9, 2.9) = 'bc'"); /* truncated toward zero */
	T("INDEX_OF('héllo', 'l') = 2");
	T("INDEX_OF('abc', 'x') = -1");
	T("INDEX_OF('abc', '') = 0");
	T("STARTS_WITH($body.timeCreated, '2024-') AND NOT STARTS_WITH('a', 'ab')");
	T("ENDS_WITH('file.json', '.json') AND NOT ENDS_WITH('a', 'ba')");
	T("CONTAINS('temperature', 'per') AND NOT CONTAINS('temp', 'x')");
	T("STARTS_WITH('a', '') AND ENDS_WITH('a', '') AND CONTAINS('', '')");
	U("CONTAINS($body.n, '1')");
	T("upper('x') = 'X' AND Lower('X') = 'x'"); /* function names in any case */
	/* Arity and static argument types. */
	bad("FOO(1) = 1", PERCH_EINVAL, 1, "unknown function FOO");
	bad("ABS(1, 2) = 1", PERCH_EINVAL, 1, "ABS takes 1 argument, not 2");
	bad("ABS() = 1", PERCH_EINVAL, 1, "ABS takes 1 argument, not 0");
	bad("CONCAT('a') = 'a'", PERCH_EINVAL, 1, "CONCAT takes at least 2 arguments");
	bad("SUBSTRING('a') = 'a'", PERCH_EINVAL, 1, "SUBSTRING takes 2 or 3 arguments");
	bad("LENGTH(5) = 1", PERCH_EINVAL, 8, "LENGTH needs a string here, found a number");
	bad("ABS('1') = 1", PERCH_EINVAL, 5, "ABS needs a number here, found a string");
	bad("STARTS_WITH('a' 'b')", PERCH_EINVAL, 17, "expected ',' or ')'");
	bad("TWIN_CHANGE_INCLUDES(properties.reported.x)", PERCH_EUNSUPPORTED, 1, "not supported");
}

static void test_body(void **state)
{
	(void)state;
	T("$body.machine.temperature > 25");
	T("$body.machine.temperature = 26.5");
	T("$body.ambient.humidity = 25");
	T("$BODY.machine.temperature > 25"); /* `$body.` in any case */
	U("$body.Machine.temperature > 25"); /* JSON keys are case-sensitive */
	T("$body.tags[0] = 'a'");
	T("$body.tags[1] = 'bé'");
	T("$body.tags[2].k[1] = 20");
	U("$body.tags[3] = 'a'");
	U("$body.machine[0] = 1");
	U("$body.tags.x = 1");
	T("$body.n = -150");
	T("$body.dup = 2"); /* the last of duplicate keys */
	U("$body.big = 1"); /* 1e400 is not finite */
	T("$body.int > 1e19");
	T("{$body.machine.temperature} > 25");
	bad("$body. = 1", PERCH_EINVAL, 7, "empty $body path");
	bad("$body.a..b = 1", PERCH_EINVAL, 9, "expected a name");
	bad("$body.a[x] = 1", PERCH_EINVAL, 8, "expected [index]");
	bad("$body.a[0]b = 1", PERCH_EINVAL, 11, "expected '.' or the end");
	bad("$body.a. = 1", PERCH_EINVAL, 9, "expected a name after '.'");
	/* An escaped key in the body matches the plain name. */
	set_body("{\"t\\u0065mp\":5,\"s\":\"a\\u00e9\\\"\"}");
	T("$body.temp = 5");
	T("$body.s = 'aé\"'");
	/* Not JSON: undefined, never an error. */
	const char *not_json[] = {"hello",
	                          "",
	                          "{",
	                          "{\"a\":1,}",
	                          "{\"a\":01}",
	                          "[1,2]",
	                          "\"s\"",
	                          "{\"a\":1} x",
	                          "{\"a\":\"\x01\"}",
	                          "{\"a\":\"\xff\"}",
	                          "{'a':1}",
	                          "{\"a\":tru}",
	                          "{\"a\":1.}",
	                          "{\"a\":\"\\x\"}"};
	for (size_t i = 0; i < sizeof not_json / sizeof not_json[0]; i++) {
		set_body(not_json[i]);
		U("$body.a = 1");
		F("IS_DEFINED($body.a)");
		T("IS_DEFINED($body.a) OR true");
	}
	/* The content type and encoding must say JSON. */
	set_body("{\"a\":1}");
	T("$body.a = 1");
	set_prop("$.ct", "Application/JSON");
	set_prop("$.ce", "UTF-8");
	T("$body.a = 1");
	set_prop("$.ce", "utf-16");
	U("$body.a = 1");
	assert_true(perch_props_remove(&props, PERCH_SLICE_LIT("$.ce")));
	U("$body.a = 1");
	set_prop("$.ce", "utf-8");
	set_prop("$.ct", "text/plain");
	U("$body.a = 1");
	set_prop("$.ct", "application/json; charset=utf-8");
	U("$body.a = 1");
	/* A twin change notification is JSON whatever its properties say. */
	msg.origin = PERCH_ROUTE_TWIN_CHANGE;
	T("$body.a = 1");
	msg.origin = PERCH_ROUTE_TELEMETRY;
	/* Too deep. */
	static char deep[7 * PERCH_ROUTE_MAX_BODY_DEPTH + 32];
	reset();
	size_t k = 0;
	for (int i = 0; i < PERCH_ROUTE_MAX_BODY_DEPTH + 1; i++)
		k += (size_t)sprintf(deep + k, "{\"a\":");
	deep[k++] = '1';
	for (int i = 0; i < PERCH_ROUTE_MAX_BODY_DEPTH + 1; i++)
		deep[k++] = '}';
	deep[k] = '\0';
	set_body(deep);
	U("$body.a.a = 1");
	F("IS_DEFINED($body.a)");
	/* One level less is fine. */
	deep[k - 1] = '\0';
	set_body(deep + 5);
	T("IS_OBJECT($body.a)");
}

static void test_properties(void **state)
{
	(void)state;
	set_prop("Severity", "high");
	set_prop("$body.machine.temperature", "app wins");
	set_prop("$custom", "dollar");
	set_prop("processing path", "has space");
	set_prop("temp\xc3\xa9", "accent");
	/* Application properties by bare name, any case. */
	T("severity = 'high'");
	T("SEVERITY = 'high'");
	U("nothing = 'x'");
	T("tempé = 'accent'");
	/* An application property named like $x takes precedence over the body
	 * or system property; {$x} skips it. */
	T("$body.machine.temperature = 'app wins'");
	T("{$body.machine.temperature} = 26.5");
	T("$custom = 'dollar'");
	U("{$custom} = 'dollar'");
	/* `$.` keys are system properties, never application ones. */
	set_prop("$.to", "/devices/x");
	T("$to = '/devices/x'");
	U("to = '/devices/x'");
	/* System properties by query name, any case. */
	set_prop("$.cid", "c-9");
	set_prop("$.uid", "user");
	set_prop("$.exp", "2030-01-01T00:00:00Z");
	T("$messageId = 'm-1'");
	T("$MessageID = 'm-1'");
	T("$correlationId = 'c-9'");
	T("$userId = 'user'");
	T("$contentType = 'application/json'");
	T("$contentEncoding = 'utf-8'");
	T("$absolute-expiry-time = '2030-01-01T00:00:00Z'");
	T("$connectionDeviceId = 'edge1'");
	T("$connectionModuleId = 'tempSensor'");
	T("$outputName = 'out1'");
	U("$enqueuedTime = 'x'");
	F("IS_DEFINED($componentName)");
	U("$body = 'x'");
	U("$x[0] = 'x'");
	/* A leaf device's message has no module; the bag's stamps are a fallback. */
	msg.module = (perch_slice){NULL, 0};
	msg.output = (perch_slice){NULL, 0};
	F("IS_DEFINED($connectionModuleId)");
	T("NOT IS_DEFINED($connectionModuleId)");
	set_prop("$.cmid", "stamped");
	set_prop("$.on", "o2");
	T("$connectionModuleId = 'stamped' AND $outputName = 'o2'");
	msg.props = NULL;
	U("severity = 'high'");
	U("$messageId = 'm-1'");
	U("$body.machine.temperature > 25");
}

static void test_limits(void **state)
{
	(void)state;
	static char text[2 * PERCH_ROUTE_MAX_TEXT];
	/* Nesting. */
	size_t k = 0;
	for (int i = 0; i < PERCH_ROUTE_MAX_DEPTH + 2; i++)
		text[k++] = '(';
	text[k++] = 't', text[k++] = 'r', text[k++] = 'u', text[k++] = 'e';
	for (int i = 0; i < PERCH_ROUTE_MAX_DEPTH + 2; i++)
		text[k++] = ')';
	text[k] = '\0';
	bad(text, PERCH_ETOOBIG, 0, "nested deeper than");
	k = 0;
	for (int i = 0; i < PERCH_ROUTE_MAX_DEPTH + 2; i++)
		k += (size_t)sprintf(text + k, "NOT ");
	sprintf(text + k, "true");
	bad(text, PERCH_ETOOBIG, 0, "nested deeper than");
	/* A long chain is as deep as it is long: 60 ORs are fine, 130 too deep. */
	k = 0;
	for (int i = 0; i < 60; i++)
		k += (size_t)sprintf(text + k, "%sp = 'v%d'", i ? " OR " : "", i);
	U(text);
	k = 0;
	for (int i = 0; i < 130; i++)
		k += (size_t)sprintf(text + k, "%strue", i ? " OR " : "");
	bad(text, PERCH_ETOOBIG, 0, "nested deeper than");
	/* Too many parts, in a shallow tree: CONCAT of 4 CONCATs of 16 CONCATs
	 * of 16 strings is 1093 nodes in 3.6 kB. */
	char inner[64], mid[1024];
	k = (size_t)sprintf(inner, "CONCAT(");
	for (int i = 0; i < 16; i++)
		k += (size_t)sprintf(inner + k, "%s''", i ? "," : "");
	sprintf(inner + k, ")");
	k = (size_t)sprintf(mid, "CONCAT(");
	for (int i = 0; i < 16; i++)
		k += (size_t)sprintf(mid + k, "%s%s", i ? "," : "", inner);
	sprintf(mid + k, ")");
	k = (size_t)sprintf(text, "CONCAT(");
	for (int i = 0; i < 4; i++)
		k += (size_t)sprintf(text + k, "%s%s", i ? "," : "", mid);
	sprintf(text + k, ") = ''");
	bad(text, PERCH_ETOOBIG, 0, "more than 1024 parts");
	sprintf(text + strlen("CONCAT(") + 3 * strlen(mid) + 2, ") = ''"); /* 3 of them */
	T(text);
	/* Strings: 1024 bytes are fine, 1025 too many. */
	memset(text, 'a', sizeof text);
	text[0] = '\'';
	text[PERCH_ROUTE_MAX_STRING + 2] = '\'';
	sprintf(text + PERCH_ROUTE_MAX_STRING + 3, " = 'a'");
	bad(text, PERCH_ETOOBIG, 1, "string longer than");
	text[PERCH_ROUTE_MAX_STRING + 1] = '\'';
	sprintf(text + PERCH_ROUTE_MAX_STRING + 2, " = 'a'");
	F(text);
	/* Arguments. */
	k = (size_t)sprintf(text, "CONCAT(");
	for (int i = 0; i < PERCH_ROUTE_MAX_ARGS + 1; i++)
		k += (size_t)sprintf(text + k, "%s'x'", i ? ", " : "");
	sprintf(text + k, ") = 'x'");
	bad(text, PERCH_ETOOBIG, 0, "more than 16 arguments");
	/* Body paths. */
	k = (size_t)sprintf(text, "$body");
	for (int i = 0; i < PERCH_ROUTE_MAX_PATH + 1; i++)
		k += (size_t)sprintf(text + k, ".a");
	sprintf(text + k, " = 1");
	bad(text, PERCH_ETOOBIG, 0, "$body path longer than");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup(test_literals, setup),
	        cmocka_unit_test_setup(test_lexer_rules, setup),
	        cmocka_unit_test_setup(test_precedence, setup),
	        cmocka_unit_test_setup(test_comparisons, setup),
	        cmocka_unit_test_setup(test_logic, setup),
	        cmocka_unit_test_setup(test_arithmetic, setup),
	        cmocka_unit_test_setup(test_functions, setup),
	        cmocka_unit_test_setup(test_body, setup),
	        cmocka_unit_test_setup(test_properties, setup),
	        cmocka_unit_test_setup(test_limits, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
