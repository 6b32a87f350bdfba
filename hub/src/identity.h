/*
 * identity.h — who may connect to perch-hub and what each may do
 * (docs/identity.md): the registry of identities the hub knows (the device,
 * its deployed modules, leaf devices), CONNECT authentication (SAS tokens,
 * X.509 client certificate common names) and per-identity authorization of
 * topics. The check functions are pure (no I/O, no clock: `now` is passed)
 * so identity_test.c pins every rule; loading reads the device key file,
 * the hub deployment file written by perch-agent and the leaf devices file.
 */
#ifndef HUB_IDENTITY_H
#define HUB_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "perch/device.h"
#include "perch/err.h"
#include "perch/map.h"
#include "perch/slice.h"

typedef enum hub_ident_kind {
	HUB_IDENT_ANONYMOUS = 0, /* --allow-anonymous, no credentials: no restrictions */
	HUB_IDENT_DEVICE,        /* the edge device itself */
	HUB_IDENT_MODULE,        /* {device}/{module} */
	HUB_IDENT_LEAF,          /* a leaf device */
} hub_ident_kind;

/* The authenticated identity of a connection. */
typedef struct hub_identity {
	hub_ident_kind kind;
	char device[PERCH_DEVICE_ID_MAX + 1];
	char module[PERCH_DEVICE_ID_MAX + 1]; /* "" unless MODULE */
	char keyfp[17]; /* the key's first characters: a changed key ends it */
	/* The registry that authenticated it (NULL for hand-made identities):
	 * a child edge hub's rights to speak for its modules and leaf devices
	 * are looked up there at each publish, so a reload takes effect. */
	const struct hub_identities *reg;
} hub_identity;

/* The identities the hub accepts. */
typedef struct hub_identities {
	char device_id[PERCH_DEVICE_ID_MAX + 1];
	char iothub_host[256];
	char device_key[PERCH_DEVICE_KEY_MAX + 1]; /* "" until the key file is read */
	perch_map modules;                         /* module id -> generation id (owned) */
	perch_map leaves;                          /* leaf id -> base64 key (owned) */
	perch_map edges;         /* leaf ids marked "edge": child hubs -> "" (owned) */
	perch_map parents;       /* leaf id -> the child hub it is under (owned) */
	uint64_t deployment;     /* the agent's deployment counter */
	json_t *edgehub;         /* $edgeHub desired (routes), or NULL */
	json_t *twins;           /* module -> desired properties, or NULL */
	uint64_t skew_s;         /* tolerated clock difference */
	uint64_t max_lifetime_s; /* furthest token expiry accepted */
} hub_identities;

/* Why a CONNECT was refused; hub_auth_reason_str names it (metric label). */
typedef enum hub_auth_reason {
	HUB_AUTH_OK = 0,
	HUB_AUTH_NO_CREDENTIALS,  /* no password, no certificate, anonymous not allowed */
	HUB_AUTH_BAD_CLIENT_ID,   /* not {d} or {d}/{m} */
	HUB_AUTH_BAD_USERNAME,    /* not {host}/{d}[/{m}]/?..., or another identity */
	HUB_AUTH_UNKNOWN,         /* an identity the hub does not know */
	HUB_AUTH_NO_KEY,          /* the device key is not there yet */
	HUB_AUTH_TOKEN_MALFORMED, /* not a SAS token */
	HUB_AUTH_TOKEN_RESOURCE,  /* the token is for another identity */
	HUB_AUTH_TOKEN_SIGNATURE, /* wrong signature */
	HUB_AUTH_TOKEN_EXPIRED,
	HUB_AUTH_TOKEN_LIFETIME, /* expiry further ahead than allowed */
	HUB_AUTH_CERT_MISMATCH,  /* a client certificate for another identity */
	HUB_AUTH_REASON_COUNT
} hub_auth_reason;

const char *hub_auth_reason_str(hub_auth_reason r);

/* What a client presented. */
typedef struct hub_auth_request {
	perch_slice client_id;
	perch_slice username; /* empty when absent */
	bool has_password;
	perch_slice password;
	const char *cert_cn; /* CN of a verified client certificate, or NULL */
	bool allow_anonymous;
	uint64_t now; /* seconds since the epoch */
} hub_auth_request;

/*
 * hub_auth_check decides a CONNECT. On success *out is the identity and
 * *connack 0; otherwise *connack is the CONNACK return code (2 identifier
 * rejected, 3 server unavailable, 4 bad user name or password, 5 not
 * authorized) and the reason is returned.
 */
hub_auth_reason hub_auth_check(const hub_identities *ids, const hub_auth_request *req,
                               hub_identity *out, uint8_t *connack);

/* hub_identity_is_edge: is id a child edge hub (a leaf device registered
 * with "edge": true), which may publish for its modules and leaf devices? */
bool hub_identity_is_edge(const hub_identity *id);

/* hub_identity_origin: for a telemetry or module output topic that id may
 * publish (hub_authz_publish), the identity the message comes from: id
 * itself, or for a child edge hub the module or leaf device the topic
 * names (device and module decoded from the topic). False when topic is
 * not telemetry or cannot be decoded. */
bool hub_identity_origin(const hub_identity *id, perch_slice topic, hub_identity *out);

/* hub_identities_edge_of: is identity name ("d" or "d/m") spoken for by a
 * child edge hub (an "edge": true leaf entry) — d itself when it is one
 * (with any module), or the "parent" of leaf device d? Its id goes into
 * out (cap bytes). */
bool hub_identities_edge_of(const hub_identities *ids, const char *name, char *out, size_t cap);

/* hub_authz_publish: may id publish to topic? A child edge hub may also
 * publish devices/{itself}/modules/{any}/messages/events/... and
 * devices/{leaf}/messages/events/... for leaf devices registered with
 * "parent": "{itself}". */
bool hub_authz_publish(const hub_identity *id, perch_slice topic);

/* hub_authz_subscribe: may id subscribe to filter? */
bool hub_authz_subscribe(const hub_identity *id, perch_slice filter);

/* hub_identity_valid: is id still accepted by ids (still known, same key)? */
bool hub_identity_valid(const hub_identities *ids, const hub_identity *id);

/* hub_identities_knows: does client_id name an identity ids accepts? On
 * true, *out (may be NULL) describes it (no key fingerprint). */
bool hub_identities_knows(const hub_identities *ids, const char *client_id, hub_identity *out);

/* hub_identity_name writes "d" or "d/m" (or "anonymous") for logs. */
void hub_identity_name(const hub_identity *id, char *out, size_t cap);

/* --- loading --------------------------------------------------------------- */

/* hub_identities_init: an empty registry for device_id and iothub_host. */
void hub_identities_init(hub_identities *ids, const char *device_id, const char *iothub_host,
                         uint64_t skew_s, uint64_t max_lifetime_s);
void hub_identities_fini(hub_identities *ids);

/* hub_identities_set_key sets the device key (base64), "" for none. */
void hub_identities_set_key(hub_identities *ids, const char *key);

/*
 * hub_identities_load_deployment replaces the modules, routes and twins from
 * the JSON text of the hub deployment file. On error (err names what, cap
 * bytes) nothing changes: PERCH_EINVAL for a file that is not the format,
 * PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err hub_identities_load_deployment(hub_identities *ids, const char *text,
                                                        size_t len, char *err, size_t cap);

/*
 * hub_identities_load_leaves replaces the leaf devices from JSON text
 * {"leaf-id": {"primaryKey": "<base64>"}, ...}; same error contract. An
 * entry may carry "edge": true (a child edge hub, docs/identity.md) or
 * "parent": "<id of an edge entry of the same file>" (a leaf device that
 * speaks through that child hub).
 */
PERCH_MUST_USE perch_err hub_identities_load_leaves(hub_identities *ids, const char *text,
                                                    size_t len, char *err, size_t cap);

#endif /* HUB_IDENTITY_H */
