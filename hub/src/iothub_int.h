/*
 * iothub_int.h — what iothub.c (twins, the identities online), method.c
 * (direct method calls) and method_http.c (their HTTP invokers) share.
 * The rest of the hub sees only hub.h's iothub section. Loop thread only.
 */
#ifndef HUB_IOTHUB_INT_H
#define HUB_IOTHUB_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub.h"
#include "perch/iothub_topic.h"
#include "perch/map.h"
#include "twin.h"

#define HUB_IDENT_NAME_MAX (2 * PERCH_DEVICE_ID_MAX + 2) /* "d/m" and its NUL */

struct hub_methods;

typedef struct hub_iothub {
	hub *h;
	hub_twin_store *store;       /* twins.db */
	perch_map twins;             /* identity name -> hub_twin (owned) */
	perch_map online;            /* identity name -> hub_online (owned) */
	struct hub_methods *methods; /* method.c */
} hub_iothub;

/* An identity's current connection, as iothub.c last saw it. */
typedef struct hub_online {
	hub_conn *conn;      /* active, authenticated; removed when it closes */
	int64_t tokens;      /* twin requests allowed now, in thousandths */
	int64_t refilled_ms; /* when tokens was last topped up */
} hub_online;

/* hub_iothub_online: the connection of identity name ("d" or "d/m") if it
 * is connected (borrowed; valid until hub_iothub_conn_gone), else NULL. */
hub_conn *hub_iothub_online(hub *h, const char *name);

/*
 * hub_iothub_send sends topic and payload to c as one QoS 0 PUBLISH. force:
 * past max_tx_bytes too (answers to c's own requests); otherwise
 * PERCH_ENOSPC when c does not read what it is sent. PERCH_ECLOSED when c
 * is closing, PERCH_ENOMEM, PERCH_EINVAL (a topic over 1 KiB).
 */
PERCH_MUST_USE perch_err hub_iothub_send(hub_conn *c, perch_slice topic, perch_slice payload,
                                         bool force);

/* hub_iothub_error_body writes IoT Hub's error answer,
 * {"errorCode":code,"message":"..."}, into out (cap bytes); its length. */
size_t hub_iothub_error_body(char *out, size_t cap, unsigned code, const char *message);

/* hub_iothub_twin: identity name's twin, made (empty) when it has none yet
 * (borrowed; NULL when out of memory). */
hub_twin *hub_iothub_twin(hub *h, const char *name);

/*
 * hub_iothub_set_remote changes the remote layer of name's desired
 * properties (twin.h): replaced by doc (replace: the parent's whole desired
 * document, without "$version") or patched with it (RFC 7396), version the
 * parent's desired $version (0: a patch made at this hub). The desired
 * section becomes the deployment's with the layer over it; a change is
 * stored, then sent to the identity (here, or down the link of the child
 * edge hub that speaks for it). PERCH_EINVAL/ETOOBIG (why), PERCH_ENOMEM,
 * store errors: nothing changed.
 */
PERCH_MUST_USE perch_err hub_iothub_set_remote(hub *h, const char *name, const json_t *doc,
                                               bool replace, uint64_t version, char *why,
                                               size_t cap);

/* hub_iothub_split_name: the device and module (empty) parts of "d[/m]". */
void hub_iothub_split_name(const char *name, perch_slice *device, perch_slice *module);

/* hub_iothub_link_name: "d" or "d/m" from a link topic's (decoded) ids. */
bool hub_iothub_link_name(const perch_iothub_topic *t, char *out, size_t cap);

/* hub_iothub_link_topic writes the link topic ($edgehub/{name}/...) of kind
 * for identity name ("d" or "d/m") into out: perch_iothub_build_link with
 * the name split, the same arguments and errors. */
PERCH_MUST_USE perch_err hub_iothub_link_topic(char *out, size_t cap, size_t *out_len,
                                               perch_iothub_kind kind, const char *name,
                                               perch_slice method, unsigned status, perch_slice rid,
                                               bool has_version, uint64_t version);

/*
 * hub_iothub_link_send sends a link topic ($edgehub/{name}/..., built by
 * perch_iothub_build_link from the other arguments) with body to a child
 * edge hub's connection c, QoS 0, when c subscribed to it. PERCH_ENOENT:
 * not subscribed; otherwise hub_iothub_send's errors.
 */
PERCH_MUST_USE perch_err hub_iothub_link_send(hub_conn *c, perch_iothub_kind kind, const char *name,
                                              perch_slice method, unsigned status, perch_slice rid,
                                              bool has_version, uint64_t version, perch_slice body);

/* --- direct methods (method.c) ---------------------------------------------- */

/*
 * A call's answer for its invoker: the HTTP status and body (JSON, borrowed
 * for the call), as IoT Hub's REST API gives them: 200 with
 * {"status":...,"payload":...} when the target answered; otherwise an
 * error status with {"errorCode":...,"message":"..."}. Called exactly once
 * per call that was not cancelled, possibly before hub_method_invoke
 * returns; the call is freed right after it.
 */
typedef void (*hub_method_done_fn)(void *arg, unsigned status, const char *body, size_t len);

typedef struct hub_method_call hub_method_call;

PERCH_MUST_USE perch_err hub_method_open(hub *h);
/* hub_method_close frees every pending call without answering it (their
 * invokers are gone: the listeners close first). */
void hub_method_close(hub *h);

/*
 * hub_method_invoke starts a call from caller (an authenticated identity,
 * borrowed) on the target device (and module, NULL or "" for a device)
 * with body, the JSON request of IoT Hub's REST API (len bytes, borrowed):
 * {"methodName":..., "payload":..., "responseTimeoutInSeconds":...,
 * "connectTimeoutInSeconds":...}. It checks that caller may call target,
 * and the request; done(arg, ...) gets the answer, at once for a refusal.
 * *out is the pending call (for hub_method_cancel) or NULL when done was
 * already called. Never fails otherwise.
 */
void hub_method_invoke(hub *h, const hub_identity *caller, const char *device, const char *module,
                       const char *body, size_t len, hub_method_done_fn done, void *arg,
                       hub_method_call **out);

/* hub_method_cancel forgets call (its invoker went away): done is not called. */
void hub_method_cancel(hub *h, hub_method_call *call);

/* A $iothub/methods/res/... publish from c (t parsed from its topic). */
void hub_method_response(hub_conn *c, const perch_iothub_topic *t, perch_slice payload);

/* Identity name is connected on c (maybe subscribed by now): calls waiting
 * for it are sent. Cheap when none wait. */
void hub_method_target_seen(hub *h, const char *name, hub_conn *c);

/* c closes: calls sent to it are answered (404: it went away). */
void hub_method_conn_gone(hub_conn *c);

/* Timeouts; cheap until the next deadline. */
void hub_method_tick(hub *h);

/* Calls waiting for their target to connect, and all pending calls. */
size_t hub_method_waiting(const hub *h);
size_t hub_method_pending(const hub *h);

#endif /* HUB_IOTHUB_INT_H */
