/*
 * certs.h — the device CA and perch-hub's TLS server certificate, made by
 * perch-agent with mbedTLS (EC P-256, SHA-256) in device.certs_dir:
 *
 *   ca.pem  ca.key   the device CA (key mode 0600): the trust bundle that
 *                    modules get from the workload API and leaf devices are
 *                    given; valid AGENT_CERT_CA_DAYS
 *   hub.pem hub.key  the hub's server certificate (key mode 0600), issued by
 *                    the CA, valid AGENT_CERT_SERVER_DAYS, for the gateway
 *                    host name (subject CN and a SAN), the device id (when
 *                    it is a host name), localhost and 127.0.0.1
 *
 * agent_certs_ensure makes what is missing, unusable or due: the CA when it
 * would expire before a fresh server certificate (so the chain is always
 * whole; modules read the trust bundle again when they restart), the server
 * certificate when a third of its lifetime is left, when its names are not
 * the configured ones, or when the CA was made again. Files are replaced
 * atomically (temporary file, fsync, rename), key before certificate; a key
 * that does not match its certificate counts as missing.
 *
 * The clock is a parameter (tests inject it). Not thread-safe per directory;
 * the agent calls it from its loop.
 */
#ifndef AGENT_CERTS_H
#define AGENT_CERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"

#define AGENT_CERT_CA_DAYS     365
#define AGENT_CERT_SERVER_DAYS 30
#define AGENT_CERT_BACKDATE_S  3600 /* not-before this far in the past: clock skew */
#define AGENT_CERT_MAX_NAMES   8    /* subject alternative names */

typedef struct agent_certs_cfg {
	const char *dir;           /* device.certs_dir (made 0755 when absent) */
	const char *device_id;     /* in the CA's name; a SAN when it is a host name */
	const char *gateway;       /* device.gateway_hostname: CN and SAN (or an IP SAN) */
	int64_t ca_lifetime_s;     /* 0: AGENT_CERT_CA_DAYS */
	int64_t server_lifetime_s; /* 0: AGENT_CERT_SERVER_DAYS */
} agent_certs_cfg;

typedef struct agent_certs_result {
	bool ca_made;             /* a new CA (and so a new trust bundle) */
	bool server_made;         /* a new server certificate: tell the hub */
	int64_t server_not_after; /* Unix seconds */
	int64_t server_renew_at;  /* when it falls due (Unix seconds) */
	char why[160];            /* why something was made ("" nothing) */
} agent_certs_result;

/*
 * agent_certs_ensure brings c->dir up to date at time now (Unix seconds).
 * *res says what was made. Errors: PERCH_EIO / PERCH_EPERM (a file or the
 * directory cannot be written), PERCH_EINTERNAL (mbedTLS refused), with a
 * line in err (cap bytes).
 */
PERCH_MUST_USE perch_err agent_certs_ensure(const agent_certs_cfg *c, int64_t now,
                                            agent_certs_result *res, char *err, size_t cap);

/* agent_certs_due: is a certificate valid from not_before to not_after due
 * for renewal at now (a third or less of its lifetime left, or outside it)? */
bool agent_certs_due(int64_t not_before, int64_t not_after, int64_t now);

#endif /* AGENT_CERTS_H */
