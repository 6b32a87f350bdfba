/*
 * route.h — the IoT Edge route language: route statements, their conditions,
 * and the route table of the `$edgeHub` desired properties.
 *
 * A route says which messages go where:
 *
 *   [SELECT * ] FROM <source> [WHERE <condition>] INTO <sink>
 *
 *   source     /messages/\*                      every device-to-cloud message
 *              /messages/modules/{m}/\*          every message of module m
 *              /messages/modules/{m}/outputs/\*  m's messages sent on some output
 *              /messages/modules/{m}/outputs/{o} m's messages on output o
 *              /twinChangeNotifications          twin change notifications
 *              /\*                               everything
 *   sink       $upstream                         the parent (cloud or parent hub)
 *              BrokeredEndpoint("/modules/{m}/inputs/{i}")   input i of module m
 *   condition  the IoT Hub message routing query language: literals, system
 *              properties ($contentType, $connectionModuleId, ...), application
 *              properties by bare name, $body.a.b[0] on JSON bodies, arithmetic,
 *              comparison, AND/OR/NOT, ?? and the builtin functions. A message
 *              takes a route when its source matches and the condition is
 *              exactly true (not false, not undefined).
 *
 * The lexical rules, operator precedence and most semantics follow Azure IoT
 * Edge's own grammar, so that deployment manifests written for IoT Edge route
 * the same way; docs/routes.md lists the language, the limits and every place
 * where Perch differs.
 *
 * A table is built from the `$edgeHub` desired properties, all or nothing:
 * one bad route refuses the whole table, so the caller keeps the old one.
 * Matching a message against a table evaluates each route whose source fits,
 * parses a JSON body at most once (and only when a condition needs it), and
 * yields each matching sink once, with the best priority of the routes that
 * chose it, as IoT Edge does.
 *
 * Pure code: no I/O, no globals. Tables and compiled routes are immutable
 * once built, so any number of threads may match against one at a time;
 * building and freeing are the owner's business. Allocation goes through
 * perch_malloc.
 */
#ifndef PERCH_ROUTE_H
#define PERCH_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/props.h"
#include "perch/slice.h"

struct json_t; /* jansson's json_t */

/* Limits on every input. Anything above them is refused with PERCH_ETOOBIG
 * when compiling; at evaluation a body over the body limits has an
 * undefined $body (never an error). */
#define PERCH_ROUTE_MAX_TEXT        4096    /* bytes of one route statement */
#define PERCH_ROUTE_MAX_NAME        256     /* bytes of a route's name */
#define PERCH_ROUTE_MAX_ROUTES      1024    /* routes in one table */
#define PERCH_ROUTE_MAX_NODES       1024    /* syntax tree nodes of one condition */
#define PERCH_ROUTE_MAX_DEPTH       128     /* height of a condition's syntax tree */
#define PERCH_ROUTE_MAX_STRING      1024    /* bytes of one decoded string literal */
#define PERCH_ROUTE_MAX_ID          256     /* bytes of a sink's module id or input name */
#define PERCH_ROUTE_MAX_ARGS        16      /* arguments of one function call */
#define PERCH_ROUTE_MAX_PATH        32      /* steps of one $body path (a.b[2] is 3) */
#define PERCH_ROUTE_MAX_BODY        1048576 /* bytes (1 MiB) of a body read as JSON */
#define PERCH_ROUTE_MAX_BODY_DEPTH  64      /* nesting of a JSON body */
#define PERCH_ROUTE_MAX_BODY_TOKENS 65536   /* values, keys included, in a JSON body */
#define PERCH_ROUTE_MAX_SCRATCH     65536   /* bytes of strings made evaluating one message */
#define PERCH_ROUTE_MAX_ERRORS      8       /* errors kept by perch_routes_from_edgehub */

/* Priorities: 0 is the highest, 9 the lowest a route can ask for; a route
 * without one has IoT Edge's default, below all of them. */
#define PERCH_ROUTE_MAX_PRIORITY     9u
#define PERCH_ROUTE_DEFAULT_PRIORITY 2000000000u

/* Time to live: the storeAndForwardConfiguration default when the $edgeHub
 * properties give none, and the value meaning "never expires" (what a
 * negative timeToLiveSecs asks for). */
#define PERCH_ROUTE_DEFAULT_TTL 7200u
#define PERCH_ROUTE_TTL_FOREVER UINT32_MAX

/* Why a route, a condition or a table was refused. */
typedef struct perch_route_error {
	char route[PERCH_ROUTE_MAX_NAME + 1]; /* the route's name; "" outside a route */
	unsigned column; /* 1-based column (in characters) of the route text; 0: not in the text */
	char text[224];  /* "column 17: expected INTO", "priority: expected 0 to 9", ... */
} perch_route_error;

/* The errors of one table: count says how many were found, the first
 * PERCH_ROUTE_MAX_ERRORS of them are kept: errors of the table itself and of
 * route names first, then those of the routes in name order. */
typedef struct perch_route_errors {
	size_t count;
	perch_route_error item[PERCH_ROUTE_MAX_ERRORS];
} perch_route_errors;

typedef enum perch_route_sink_kind {
	PERCH_ROUTE_SINK_NONE = 0, /* a zeroed route */
	PERCH_ROUTE_SINK_UPSTREAM, /* $upstream */
	PERCH_ROUTE_SINK_MODULE    /* BrokeredEndpoint("/modules/{module}/inputs/{input}") */
} perch_route_sink_kind;

typedef struct perch_route_sink {
	perch_route_sink_kind kind;
	const char *module; /* MODULE: the module id, NUL-terminated; else NULL */
	const char *input;  /* MODULE: the input name, NUL-terminated; else NULL */
} perch_route_sink;

struct perch_route_cond; /* a compiled condition (route_int.h) */

/*
 * A compiled route statement. Zeroed = empty; perch_route_clear frees what it
 * holds. The strings belong to the route.
 */
typedef struct perch_route {
	char *text;                    /* the statement as given, NUL-terminated */
	char *source;                  /* the source as written, without spaces: "/messages/\*" */
	char *prefix;                  /* what message sources must start with: "/messages/" */
	size_t prefix_len;             /* strlen(prefix), >= 1 */
	perch_route_sink sink;         /* where matching messages go */
	struct perch_route_cond *cond; /* the WHERE condition; NULL: none (always true) */
} perch_route;

/* Where a message came from, which decides the sources it matches. */
typedef enum perch_route_origin {
	PERCH_ROUTE_TELEMETRY = 0, /* device-to-cloud: from a leaf device, or a module */
	PERCH_ROUTE_TWIN_CHANGE    /* a twin change notification (its body is JSON) */
} perch_route_origin;

/*
 * The message as routing sees it; the caller fills it in and keeps
 * everything it points to for the duration of one call.
 *
 * Message sources: a TELEMETRY message with no module is a leaf device's
 * (`/messages/`), with a module and no output `/messages/modules/{m}/`, with
 * both `/messages/modules/{m}/outputs/{o}/`; TWIN_CHANGE is
 * `/twinChangeNotifications/`.
 */
typedef struct perch_route_msg {
	perch_route_origin origin;
	perch_slice device;       /* authenticated device id: $connectionDeviceId */
	perch_slice module;       /* authenticated module id: $connectionModuleId; empty: none */
	perch_slice output;       /* the module output ($.on): $outputName; empty: none */
	const perch_props *props; /* `$.`-keys are system properties, the rest
	                             application properties; NULL: none */
	perch_slice body;         /* the payload */
} perch_route_msg;

/* The three truth values of a condition. */
typedef enum perch_route_truth {
	PERCH_ROUTE_FALSE = 0,
	PERCH_ROUTE_TRUE,
	PERCH_ROUTE_UNDEFINED /* not a boolean: a missing property, a type mismatch, ... */
} perch_route_truth;

/*
 * perch_route_parse compiles one route statement (text: UTF-8, at most
 * PERCH_ROUTE_MAX_TEXT bytes; the caller keeps it) into *out, which must be
 * zeroed or cleared; on failure *out is left empty and why (if not NULL) gets
 * the column and a message ("column 17: expected INTO"; why->route is "").
 * Errors: PERCH_EINVAL (syntax, unknown function or sink, type errors that
 * show in the text), PERCH_ETOOBIG (a limit above), PERCH_ENOMEM.
 * Any thread.
 */
PERCH_MUST_USE perch_err perch_route_parse(perch_slice text, perch_route *out,
                                           perch_route_error *why);

/* perch_route_clear frees what a route holds and zeroes it; safe on a zeroed
 * route and on NULL. */
void perch_route_clear(perch_route *r);

/* perch_route_source_matches tells whether msg comes from r's source. */
bool perch_route_source_matches(const perch_route *r, const perch_route_msg *msg);

/*
 * perch_route_eval evaluates r's condition for msg (TRUE when there is
 * none), without looking at the source. The body is parsed for this call
 * only; perch_routes_match shares one parse between routes. Never fails: what
 * cannot be evaluated is UNDEFINED. Any thread.
 */
perch_route_truth perch_route_eval(const perch_route *r, const perch_route_msg *msg);

/* perch_route_matches: the source matches and the condition is TRUE. */
bool perch_route_matches(const perch_route *r, const perch_route_msg *msg);

/* --- the table of the $edgeHub desired properties ------------------------- */

typedef struct perch_route_table perch_route_table; /* opaque, immutable */

/* One route of a table, as perch_route_table_at shows it. */
typedef struct perch_route_entry {
	const char *name;         /* the key in "routes" */
	const perch_route *route; /* its statement */
	uint32_t priority;        /* 0..9, or PERCH_ROUTE_DEFAULT_PRIORITY */
	uint32_t ttl_secs;        /* its own timeToLiveSecs; 0: the table's default */
} perch_route_entry;

/*
 * perch_routes_from_edgehub builds a table from the `properties.desired` of
 * the $edgeHub twin (borrowed; the caller keeps it):
 *
 *   {"schemaVersion": "1.1",
 *    "routes": {"name": "FROM ...",
 *               "name2": {"route": "FROM ...", "priority": 0, "timeToLiveSecs": 60}},
 *    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}
 *
 * schemaVersion "1.0" takes route strings only, "1.1" to "1.3" strings or
 * objects; keys starting with `$` ($version, $metadata) and keys Perch does
 * not use are ignored. Routes are kept in name order. On success *out is a
 * new table the caller frees with perch_route_table_free. On failure *out is
 * NULL, nothing is built, and errs (if not NULL) lists what was wrong, each
 * error naming its route and, for the route text, the column.
 * Errors: PERCH_EINVAL (a bad field or route), PERCH_ETOOBIG (a limit),
 * PERCH_EUNSUPPORTED (a schemaVersion Perch does not read), PERCH_ENOMEM.
 * Any thread.
 */
PERCH_MUST_USE perch_err perch_routes_from_edgehub(const struct json_t *desired,
                                                   perch_route_table **out,
                                                   perch_route_errors *errs);

/* perch_route_table_free frees a table (NULL is fine). */
void perch_route_table_free(perch_route_table *t);

/* The number of routes, route i (< count) in name order, and the default
 * time to live (storeAndForwardConfiguration.timeToLiveSecs). Pointers stay
 * valid as long as the table. */
size_t perch_route_table_count(const perch_route_table *t);
perch_route_entry perch_route_table_at(const perch_route_table *t, size_t i);
uint32_t perch_route_table_default_ttl(const perch_route_table *t);

/* What perch_routes_match did with a message's body. */
typedef enum perch_route_body {
	PERCH_ROUTE_BODY_UNUSED = 0,    /* no condition evaluated needed $body */
	PERCH_ROUTE_BODY_JSON,          /* parsed as a JSON object */
	PERCH_ROUTE_BODY_NOT_JSON_TYPE, /* $.ct is not application/json or $.ce not utf-8 */
	PERCH_ROUTE_BODY_INVALID,       /* not a JSON object (or not UTF-8) */
	PERCH_ROUTE_BODY_TOO_BIG,       /* over PERCH_ROUTE_MAX_BODY, _DEPTH or _TOKENS */
	PERCH_ROUTE_BODY_NO_MEMORY      /* the token array could not be allocated */
} perch_route_body;

/* One sink a message goes to. */
typedef struct perch_route_hit {
	const char *name;             /* the route that chose it (the first by name at
	                                  the best priority) */
	const perch_route_sink *sink; /* owned by the table */
	uint32_t priority;            /* the best (lowest) of the routes to this sink */
	uint32_t ttl_secs;            /* that route's TTL, else the table's default;
	                                  PERCH_ROUTE_TTL_FOREVER: never expires */
} perch_route_hit;

/* Called once per sink; return false to stop early. */
typedef bool (*perch_route_hit_fn)(void *arg, const perch_route_hit *hit);

/* Optional account of one perch_routes_match call (for logs and metrics). */
typedef struct perch_route_match_info {
	size_t evaluated;      /* routes whose source matched */
	size_t undefined;      /* of those, conditions that were neither true nor false */
	perch_route_body body; /* what became of the body */
} perch_route_match_info;

/*
 * perch_routes_match evaluates msg against every route of t and calls fn for
 * each sink it goes to, once per sink, in the order of the first route (by
 * name) naming that sink. Returns the number of sinks reported. fn may be
 * NULL (the sinks are only counted), and so may info. Never fails: a
 * condition that cannot be evaluated does not match. The body is parsed at
 * most once, and only if a condition needs it. Any thread; t is only read.
 */
size_t perch_routes_match(const perch_route_table *t, const perch_route_msg *msg,
                          perch_route_hit_fn fn, void *arg, perch_route_match_info *info);

/* Static texts (never NULL). */
const char *perch_route_body_str(perch_route_body b);
const char *perch_route_truth_str(perch_route_truth t);

#endif /* PERCH_ROUTE_H */
