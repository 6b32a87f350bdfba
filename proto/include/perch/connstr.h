/*
 * connstr.h — IoT Hub connection strings, parsed and written.
 *
 *   HostName=h;DeviceId=d[;ModuleId=m];SharedAccessKey=k[;GatewayHostName=g]
 *
 * Known keys (case-sensitive, any order, each at most once): HostName,
 * DeviceId, ModuleId, SharedAccessKey, SharedAccessKeyName,
 * SharedAccessSignature, GatewayHostName, x509 (value `true`). A value runs
 * from the first `=` of its field to the next `;`, so a SharedAccessKey's
 * base64 padding and a SharedAccessSignature's `=`/`&` need no quoting. One
 * trailing `;` is allowed.
 *
 * Rules: HostName is required; exactly one credential among SharedAccessKey,
 * SharedAccessSignature and x509=true; DeviceId is required unless
 * SharedAccessKeyName names a policy (a service connection string); ModuleId
 * needs DeviceId; SharedAccessKeyName goes with SharedAccessKey;
 * SharedAccessKey must be canonical base64 (perch_sas_key_valid).
 *
 * Pure functions: no I/O, no globals, any thread. Connection strings carry
 * keys: callers must not log them.
 */
#ifndef PERCH_CONNSTR_H
#define PERCH_CONNSTR_H

#include <stdbool.h>
#include <stddef.h>

#include "perch/err.h"
#include "perch/slice.h"

#define PERCH_CONNSTR_MAX       4096 /* bytes of a whole connection string */
#define PERCH_CONNSTR_MAX_VALUE 4096 /* bytes of one value (a SAS token fits) */
#define PERCH_CONNSTR_MAX_HOST  255  /* bytes of HostName and GatewayHostName */
#define PERCH_CONNSTR_MAX_ID    128  /* bytes of DeviceId, ModuleId, SharedAccessKeyName */

/* Why a connection string was refused. */
typedef enum perch_connstr_reason {
	PERCH_CONNSTR_OK = 0,
	PERCH_CONNSTR_TOO_LONG,           /* over PERCH_CONNSTR_MAX, or a value over its limit */
	PERCH_CONNSTR_EMPTY_FIELD,        /* `;;`, or `;` at the start */
	PERCH_CONNSTR_NO_EQUALS,          /* a field without `=` */
	PERCH_CONNSTR_UNKNOWN_KEY,        /* a key Perch does not know (fail.key names it) */
	PERCH_CONNSTR_DUPLICATE_KEY,      /* a key given twice (fail.key names it) */
	PERCH_CONNSTR_EMPTY_VALUE,        /* `Key=` */
	PERCH_CONNSTR_BAD_VALUE,          /* x509 not `true`, a key not base64, a control char */
	PERCH_CONNSTR_MISSING_HOST,       /* no HostName */
	PERCH_CONNSTR_MISSING_DEVICE,     /* no DeviceId (and no SharedAccessKeyName) */
	PERCH_CONNSTR_MISSING_CREDENTIAL, /* none of SharedAccessKey, SharedAccessSignature, x509 */
	PERCH_CONNSTR_CONFLICT, /* two credentials; ModuleId without DeviceId; a key name without a key */
	PERCH_CONNSTR_NO_SPACE,    /* writing: the output buffer is too small */
	PERCH_CONNSTR_REASON_COUNT /* not a reason: the number of reasons */
} perch_connstr_reason;

/* Where and why parsing stopped: offset into the input, and the key involved. */
typedef struct perch_connstr_fail {
	perch_connstr_reason reason;
	size_t offset;
	perch_slice key; /* a slice of the input; empty when no key is involved */
} perch_connstr_fail;

/* A connection string's fields; empty slices for absent ones. */
typedef struct perch_connstr {
	perch_slice host_name;
	perch_slice device_id;
	perch_slice module_id;
	perch_slice shared_access_key;       /* base64: a secret */
	perch_slice shared_access_key_name;  /* policy name */
	perch_slice shared_access_signature; /* a whole SAS token: a secret */
	perch_slice gateway_host_name;
	bool x509;
} perch_connstr;

/*
 * perch_connstr_parse fills *out with slices into s (which the caller keeps)
 * and checks the rules above. fail (may be NULL) says why and where.
 * Errors: PERCH_ETOOBIG (TOO_LONG), PERCH_EINVAL (all other reasons).
 */
PERCH_MUST_USE perch_err perch_connstr_parse(perch_slice s, perch_connstr *out,
                                             perch_connstr_fail *fail);

/*
 * perch_connstr_check applies the rules above to *cs (as perch_connstr_parse
 * does after reading the fields), and refuses values with `;` or control
 * characters. Errors: PERCH_EINVAL, PERCH_ETOOBIG, with *fail as above.
 */
PERCH_MUST_USE perch_err perch_connstr_check(const perch_connstr *cs, perch_connstr_fail *fail);

/*
 * perch_connstr_write checks *cs and writes it into out (cap bytes, no NUL)
 * in the order HostName, DeviceId, ModuleId, SharedAccessKeyName,
 * SharedAccessKey, SharedAccessSignature, x509, GatewayHostName, absent fields
 * left out. Errors: those of perch_connstr_check; PERCH_ETOOBIG (NO_SPACE).
 */
PERCH_MUST_USE perch_err perch_connstr_write(const perch_connstr *cs, char *out, size_t cap,
                                             size_t *out_len, perch_connstr_fail *fail);

/* perch_connstr_reason_str returns a static text for a reason (never NULL). */
const char *perch_connstr_reason_str(perch_connstr_reason reason);

#endif /* PERCH_CONNSTR_H */
