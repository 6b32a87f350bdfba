/*
 * twin.h — IoT Hub twins at perch-hub: the documents and their rules
 * (twin.c, pure: no I/O, no clock, no globals) and their SQLite store
 * (twin_store.c, twins.db under the hub's data dir).
 *
 * A twin belongs to one identity ("d", "d/m", or a leaf device's id) and
 * has two sections, each a JSON object with its own version:
 *
 *   desired   what the identity is told: the hub deployment's desired
 *             properties for it (modules) with the remote layer merged on
 *             top; a change bumps its version and is sent to the identity
 *             as a patch (the JSON merge patch from the old section to the
 *             new);
 *   reported  changed by the identity's own reported patches (RFC 7396 JSON
 *             merge patch: null deletes, objects merge, anything else
 *             replaces); every accepted patch bumps its version.
 *
 * The limits are IoT Hub's (docs/hub.md "Twins and direct methods"). The
 * versions start at 1. jansson values here are owned by the twin unless a
 * comment says "borrowed" or "new reference". One thread (the hub's loop).
 */
#ifndef HUB_TWIN_H
#define HUB_TWIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "perch/db.h"
#include "perch/err.h"

#define HUB_TWIN_MAX_SECTION 32768         /* bytes of a section as compact JSON */
#define HUB_TWIN_MAX_PATCH   65536         /* bytes of a reported patch as received */
#define HUB_TWIN_MAX_DEPTH   10            /* nested objects (and arrays) in a section */
#define HUB_TWIN_MAX_KEY     1024          /* bytes of a property name */
#define HUB_TWIN_MAX_STRING  4096          /* bytes of a string value */
#define HUB_TWIN_MAX_NAME    (2 * 128 + 1) /* bytes of an identity name "d/m" */

typedef struct hub_twin {
	json_t *desired;           /* object, no "$version"; never NULL after init */
	uint64_t desired_version;  /* >= 1; bumped by every change of desired */
	json_t *reported;          /* object, no "$version"; never NULL after init */
	uint64_t reported_version; /* >= 1; bumped by every accepted patch */
	/* The remote layer of desired: what the parent hub holds as this
	 * identity's desired properties (a child hub, docs/hub.md "Twins over
	 * the link"), or what was PATCHed at this hub's REST API. Merged over
	 * the deployment's (RFC 7396). Never NULL after init. */
	json_t *remote;
	uint64_t remote_version; /* the parent's desired $version; 0: none yet */
} hub_twin;

/* hub_twin_init: empty sections, versions 1. PERCH_ENOMEM (t then safe to
 * fini). */
PERCH_MUST_USE perch_err hub_twin_init(hub_twin *t);
/* hub_twin_fini releases t's documents; safe on a zeroed or half-built t. */
void hub_twin_fini(hub_twin *t);

/*
 * hub_twin_check tells whether doc (borrowed) may be a section (patch
 * false) or a patch of one (patch true: null values allowed): a JSON
 * object whose property names are 1..HUB_TWIN_MAX_KEY bytes without `.`,
 * `$`, space or control characters, nested at most HUB_TWIN_MAX_DEPTH deep,
 * with strings of at most HUB_TWIN_MAX_STRING bytes, and (a section) at
 * most HUB_TWIN_MAX_SECTION bytes as compact JSON. PERCH_EINVAL or
 * PERCH_ETOOBIG with why (cap bytes) saying what is wrong.
 */
PERCH_MUST_USE perch_err hub_twin_check(const json_t *doc, bool patch, char *why, size_t cap);

/* hub_twin_size: bytes of doc (borrowed) as compact JSON. */
size_t hub_twin_size(const json_t *doc);

/*
 * hub_twin_merge applies patch (borrowed) to the object target in place,
 * RFC 7396: a null value deletes its key, an object merges into an object
 * (and replaces anything else), any other value replaces. Values are deep
 * copies: target shares nothing with patch. PERCH_ENOMEM leaves target
 * partly patched (callers merge into a copy).
 */
PERCH_MUST_USE perch_err hub_twin_merge(json_t *target, const json_t *patch);

/*
 * hub_twin_diff sets *out (new reference) to the merge patch that turns
 * the object from into the object to (both borrowed): removed keys as
 * null, changed values (objects recursively), added keys. An empty object
 * when they are equal. PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err hub_twin_diff(const json_t *from, const json_t *to, json_t **out);

/*
 * hub_twin_report parses text (len bytes, the payload of a reported patch)
 * and merges it into a copy of t's reported section; when the patch and
 * the result pass hub_twin_check, the copy replaces the section and the
 * version is bumped. Otherwise t is unchanged: PERCH_EINVAL (not JSON, not
 * an object, a bad name or depth), PERCH_ETOOBIG (the patch or the result
 * too large), with why (cap bytes); or PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err hub_twin_report(hub_twin *t, const char *text, size_t len, char *why,
                                         size_t cap);

/*
 * hub_twin_set_desired makes desired (borrowed; null values are dropped)
 * t's desired section. When it differs from the present one the version is
 * bumped and *patch (may be NULL) gets a new reference to the merge patch
 * from the old section to the new, with "$version" set to the new version;
 * when it is the same, t is unchanged and *patch is NULL. PERCH_EINVAL or
 * PERCH_ETOOBIG (hub_twin_check, why), PERCH_ENOMEM: t unchanged.
 */
PERCH_MUST_USE perch_err hub_twin_set_desired(hub_twin *t, const json_t *desired, json_t **patch,
                                              char *why, size_t cap);

/*
 * hub_twin_document writes the twin as a GET answers it,
 * {"desired":{...,"$version":n},"reported":{...,"$version":m}}, into a new
 * buffer *out (perch_free; not NUL-terminated) of *len bytes. PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err hub_twin_document(const hub_twin *t, char **out, size_t *len);

/*
 * hub_twin_layer sets *out (new reference) to the desired section made of
 * base (borrowed, may be NULL: the deployment's desired properties) with
 * remote (borrowed) merged over it, null values dropped. PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err hub_twin_layer(const json_t *base, const json_t *remote, json_t **out);

/* hub_twin_copy makes dst (uninitialised) a deep copy of src. PERCH_ENOMEM
 * (dst then safe to fini). */
PERCH_MUST_USE perch_err hub_twin_copy(hub_twin *dst, const hub_twin *src);

/* --- twins.db (twin_store.c) ------------------------------------------------ */

typedef struct hub_twin_store hub_twin_store;

/*
 * hub_twin_store_open opens (creating, migrating) the twin database at
 * path. A file that is not a database, or is damaged, is moved aside
 * ("twins.db.corrupt-<time>", logged) and a new one made. *out is closed
 * with hub_twin_store_close. PERCH_ENOMEM, PERCH_EPERM, PERCH_EIO,
 * PERCH_EUNSUPPORTED (written by a newer Perch), PERCH_EDB; logged.
 */
PERCH_MUST_USE perch_err hub_twin_store_open(const char *path, perch_db_sync sync,
                                             hub_twin_store **out);
void hub_twin_store_close(hub_twin_store *s);

/*
 * hub_twin_store_load calls fn for every stored twin: name (borrowed for
 * the call) and t, which fn takes over (it finis it). A row that does not
 * parse is skipped with a warning. PERCH_EDB, PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err hub_twin_store_load(hub_twin_store *s,
                                             void (*fn)(void *arg, const char *name, hub_twin *t),
                                             void *arg);

/* hub_twin_store_save writes t as the twin of name (insert or replace);
 * durable when it returns outside a transaction. PERCH_ENOSPC, PERCH_EIO,
 * PERCH_EDB, PERCH_ENOMEM; logged. */
PERCH_MUST_USE perch_err hub_twin_store_save(hub_twin_store *s, const char *name,
                                             const hub_twin *t);
/* hub_twin_store_delete removes the twin of name (absent is fine). */
PERCH_MUST_USE perch_err hub_twin_store_delete(hub_twin_store *s, const char *name);
/* A transaction around several saves and deletes (rollback never fails). */
PERCH_MUST_USE perch_err hub_twin_store_begin(hub_twin_store *s);
PERCH_MUST_USE perch_err hub_twin_store_commit(hub_twin_store *s);
void hub_twin_store_rollback(hub_twin_store *s);

#endif /* HUB_TWIN_H */
