/*
 * iothub_topic.h — IoT Hub MQTT topic names: classify and take apart the ones
 * clients publish, and build the ones the hub sends.
 *
 * The parser is what the hub's authorization and router look at first: given
 * a topic name it says which IoT Hub topic it is and where its fields are, as
 * slices into the caller's topic (raw, as on the wire: device and module ids
 * may be percent-encoded by some SDKs — the Python SDK quotes them — so decode
 * with perch_props_url_decode before comparing with an identity; the property
 * bag is left encoded for perch_props_parse). It never allocates.
 *
 *   TELEMETRY        devices/{d}/messages/events/{props}
 *   MODULE_OUTPUT    devices/{d}/modules/{m}/messages/events/{props}
 *   MODULE_INPUT     devices/{d}/modules/{m}/inputs/{input}/{props}
 *   C2D              devices/{d}/messages/devicebound/{props}
 *   TWIN_GET         $iothub/twin/GET/?$rid={r}
 *   TWIN_REPORTED    $iothub/twin/PATCH/properties/reported/?$rid={r}
 *   TWIN_DESIRED     $iothub/twin/PATCH/properties/desired/?$version={v}
 *   TWIN_RESPONSE    $iothub/twin/res/{status}/?$rid={r}[&$version={v}]
 *   METHOD_REQUEST   $iothub/methods/POST/{name}/?$rid={r}
 *   METHOD_RESPONSE  $iothub/methods/res/{status}/?$rid={r}
 *
 * A child hub's one upstream connection carries the twins and methods of many
 * identities (its device, its modules, its leaf devices), and `$iothub/...`
 * names none, so that link uses a namespace modelled on Azure IoT Edge's
 * broker translation topics, with the identity in the name:
 *
 *   LINK_TWIN_GET         $edgehub/{d}[/{m}]/twin/get/?$rid={r}
 *   LINK_TWIN_REPORTED    $edgehub/{d}[/{m}]/twin/reported/?$rid={r}
 *   LINK_TWIN_DESIRED     $edgehub/{d}[/{m}]/twin/desired/?$version={v}
 *   LINK_TWIN_RESPONSE    $edgehub/{d}[/{m}]/twin/res/{status}/?$rid={r}[&$version={v}]
 *   LINK_METHOD_REQUEST   $edgehub/{d}[/{m}]/methods/post/{name}/?$rid={r}
 *   LINK_METHOD_RESPONSE  $edgehub/{d}[/{m}]/methods/res/{status}/?$rid={r}
 *
 * Without `{m}` the topic is the device's own. A module id may be any
 * segment, "twin" and "methods" included, so after `$edgehub/{d}/` the next
 * segment is read as the device-level form only when it is `twin` followed by
 * `get`, `reported`, `desired` or `res`, or `methods` followed by `post` or
 * `res`; otherwise it is `{m}` and `twin/...` or `methods/...` must follow
 * (`$edgehub/d/twin/twin/get/?$rid=1` is module "twin"'s twin GET). The two
 * forms never overlap, and what perch_iothub_build_link writes parses back.
 *
 * The `/` before `{props}` may be absent when the bag is empty, and the `/`
 * before `?` may be absent. Query parameters other than `$rid` and `$version`
 * are ignored. A topic that has none of these shapes is OTHER (not an error);
 * one that starts like an IoT Hub topic but breaks its rules (an empty id, a
 * missing `$rid`, a status that is not three digits) is refused with a reason;
 * a `$edgehub/` topic of none of the link shapes is OTHER too.
 *
 * Pure functions: no I/O, no globals, any thread.
 */
#ifndef PERCH_IOTHUB_TOPIC_H
#define PERCH_IOTHUB_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/props.h"
#include "perch/slice.h"

#define PERCH_IOTHUB_MAX_TOPIC   (PERCH_PROPS_MAX_ENCODED + 1024) /* bytes of a topic */
#define PERCH_IOTHUB_MAX_SEGMENT 384 /* bytes of a raw id, input or method name (128 encoded) */
#define PERCH_IOTHUB_MAX_RID     128 /* bytes of a $rid value */
#define PERCH_IOTHUB_MAX_QUERY   512 /* bytes of the `?...` part of a twin or method topic */

typedef enum perch_iothub_kind {
	PERCH_IOTHUB_OTHER = 0,
	PERCH_IOTHUB_TELEMETRY,
	PERCH_IOTHUB_MODULE_OUTPUT,
	PERCH_IOTHUB_MODULE_INPUT,
	PERCH_IOTHUB_C2D,
	PERCH_IOTHUB_TWIN_GET,
	PERCH_IOTHUB_TWIN_REPORTED,
	PERCH_IOTHUB_TWIN_DESIRED,
	PERCH_IOTHUB_TWIN_RESPONSE,
	PERCH_IOTHUB_METHOD_REQUEST,
	PERCH_IOTHUB_METHOD_RESPONSE,
	PERCH_IOTHUB_LINK_TWIN_GET, /* the LINK_ kinds stay together: see perch_iothub_is_link */
	PERCH_IOTHUB_LINK_TWIN_REPORTED,
	PERCH_IOTHUB_LINK_TWIN_DESIRED,
	PERCH_IOTHUB_LINK_TWIN_RESPONSE,
	PERCH_IOTHUB_LINK_METHOD_REQUEST,
	PERCH_IOTHUB_LINK_METHOD_RESPONSE,
	PERCH_IOTHUB_KIND_COUNT /* not a kind: the number of kinds */
} perch_iothub_kind;

/* Why a topic was refused. */
typedef enum perch_iothub_reason {
	PERCH_IOTHUB_OK = 0,
	PERCH_IOTHUB_TOO_LONG,         /* topic over PERCH_IOTHUB_MAX_TOPIC */
	PERCH_IOTHUB_EMPTY_SEGMENT,    /* an empty device, module, input or method name */
	PERCH_IOTHUB_SEGMENT_TOO_LONG, /* one over PERCH_IOTHUB_MAX_SEGMENT */
	PERCH_IOTHUB_BAD_CHAR,         /* NUL, `+` or `#` in a topic name */
	PERCH_IOTHUB_BAD_STATUS,       /* a status that is not three digits */
	PERCH_IOTHUB_MISSING_RID,      /* a twin or method topic without `$rid` */
	PERCH_IOTHUB_BAD_RID,          /* an empty or too long `$rid` */
	PERCH_IOTHUB_MISSING_VERSION,  /* a desired-patch topic without `$version` */
	PERCH_IOTHUB_BAD_VERSION,      /* `$version` not a decimal 64-bit number */
	PERCH_IOTHUB_BAD_QUERY,        /* a missing `?`, a duplicate or too long parameter */
	PERCH_IOTHUB_TRAILING,         /* more path after the last field */
	PERCH_IOTHUB_NO_SPACE,         /* builders: the output buffer is too small */
	PERCH_IOTHUB_REASON_COUNT      /* not a reason: the number of reasons */
} perch_iothub_reason;

/* A classified topic. Slices point into the parsed topic; empty when absent. */
typedef struct perch_iothub_topic {
	perch_iothub_kind kind;
	perch_slice device; /* telemetry, output, input, C2D, LINK_: raw device id */
	perch_slice module; /* output, input, LINK_ with `{m}`: raw module id */
	perch_slice input;  /* input: raw input name */
	perch_slice method; /* method requests (both namespaces): raw method name */
	perch_slice props;  /* telemetry, output, input, C2D: encoded bag, may be empty */
	perch_slice rid;    /* twin and method topics: `$rid`, raw */
	bool has_version;   /* a `$version` was present */
	uint64_t version;   /* its value when has_version */
	unsigned status;    /* responses: 100..999 */
} perch_iothub_topic;

/*
 * perch_iothub_topic_parse classifies topic into *out (zeroed first; slices
 * into topic, which the caller keeps). PERCH_OK with kind OTHER for a topic
 * of no IoT Hub shape. Errors: PERCH_ETOOBIG (TOO_LONG, SEGMENT_TOO_LONG),
 * PERCH_EINVAL (the other reasons); out->kind then says what the topic looked
 * like (OTHER for TOO_LONG and BAD_CHAR). why may be NULL.
 */
PERCH_MUST_USE perch_err perch_iothub_topic_parse(perch_slice topic, perch_iothub_topic *out,
                                                  perch_iothub_reason *why);

/*
 * Builders for the topics the hub sends. Each writes the topic into out (cap
 * bytes, no NUL) and its length into *out_len. Ids and names are written as
 * given (the caller passes the form the client uses); props may be NULL or
 * empty; rid is echoed raw. They refuse (PERCH_EINVAL) an empty id or name, or
 * one containing `/`, `+`, `#` or NUL, a rid containing `&` or those, or a
 * status outside 100..999; PERCH_ETOOBIG when out is too small.
 *
 *   input            devices/{d}/modules/{m}/inputs/{input}/{props}
 *   c2d              devices/{d}/messages/devicebound/{props}
 *   twin_response    $iothub/twin/res/{status}/?$rid={r}[&$version={v}]
 *   desired          $iothub/twin/PATCH/properties/desired/?$version={v}
 *   method_request   $iothub/methods/POST/{name}/?$rid={r}
 *   method_response  $iothub/methods/res/{status}/?$rid={r}
 */
PERCH_MUST_USE perch_err perch_iothub_build_input(char *out, size_t cap, size_t *out_len,
                                                  perch_slice device, perch_slice module,
                                                  perch_slice input, const perch_props *props);
PERCH_MUST_USE perch_err perch_iothub_build_c2d(char *out, size_t cap, size_t *out_len,
                                                perch_slice device, const perch_props *props);
PERCH_MUST_USE perch_err perch_iothub_build_twin_response(char *out, size_t cap, size_t *out_len,
                                                          unsigned status, perch_slice rid,
                                                          bool has_version, uint64_t version);
PERCH_MUST_USE perch_err perch_iothub_build_desired(char *out, size_t cap, size_t *out_len,
                                                    uint64_t version);
PERCH_MUST_USE perch_err perch_iothub_build_method_request(char *out, size_t cap, size_t *out_len,
                                                           perch_slice name, perch_slice rid);
PERCH_MUST_USE perch_err perch_iothub_build_method_response(char *out, size_t cap, size_t *out_len,
                                                            unsigned status, perch_slice rid);

/*
 * perch_iothub_build_link writes a link topic of kind (one of the LINK_ kinds)
 * for device and module (empty or NULL ptr: the device-level form): method is
 * used by METHOD_REQUEST, status by the two RESPONSE kinds, rid by all but
 * TWIN_DESIRED, version by TWIN_DESIRED (always) and TWIN_RESPONSE (when
 * has_version). Same refusals as the other builders (PERCH_EINVAL for an empty
 * device, ids/names containing '/', '+', '#', '?' or NUL or longer than
 * PERCH_IOTHUB_MAX_SEGMENT, an empty rid, one with '&' or longer than
 * PERCH_IOTHUB_MAX_RID, a status outside 100..999, a non-LINK kind;
 * PERCH_ETOOBIG when out is too small). Arguments a kind does not use are not
 * looked at. What it writes parses back to the same kind and fields.
 */
PERCH_MUST_USE perch_err perch_iothub_build_link(char *out, size_t cap, size_t *out_len,
                                                 perch_iothub_kind kind, perch_slice device,
                                                 perch_slice module, perch_slice method,
                                                 unsigned status, perch_slice rid, bool has_version,
                                                 uint64_t version);

/* perch_iothub_is_link: is kind one of the LINK_ kinds? */
bool perch_iothub_is_link(perch_iothub_kind kind);

/* Static texts (never NULL) for a kind and a reason. */
const char *perch_iothub_kind_str(perch_iothub_kind kind);
const char *perch_iothub_reason_str(perch_iothub_reason reason);

#endif /* PERCH_IOTHUB_TOPIC_H */
