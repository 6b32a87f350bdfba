/*
 * sas.h — IoT Hub shared access signature (SAS) tokens: sign, parse, verify,
 * and derive module keys.
 *
 * A token is `SharedAccessSignature sr={uri}&sig={sig}&se={expiry}[&skn={name}]`
 * (fields in any order when parsing). {uri} is the URL-encoded resource URI,
 * e.g. `myhub.example%2Fdevices%2Fdev1`; {sig} is the URL-encoded base64 of
 * HMAC-SHA256(base64decode(key), {uri} + "\n" + {expiry}), where {uri} and
 * {expiry} are exactly the bytes of the token; {expiry} is seconds since the
 * Unix epoch. Tokens made by perch_sas_sign are byte for byte those of
 * azure-iot-common's SharedAccessSignature.create as the device SDK calls it
 * (resource encoded with encodeUriComponentStrict, fields sr, sig, skn, se).
 *
 * Module keys are derived from the device key (DESIGN.md section 3):
 * base64(HMAC-SHA256(base64decode(device_key), module_id)).
 *
 * Pure functions: no clock (the time is a parameter), no I/O, no globals, any
 * thread. Decoded keys and MACs on the stack are wiped before returning.
 */
#ifndef PERCH_SAS_H
#define PERCH_SAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/slice.h"

#define PERCH_SAS_MAX_TOKEN         4096 /* bytes of a whole token */
#define PERCH_SAS_MAX_RESOURCE      1024 /* bytes of a decoded resource URI */
#define PERCH_SAS_MAX_KEY_NAME      128  /* bytes of a decoded key (policy) name */
#define PERCH_SAS_MAX_KEY_BYTES     64   /* bytes of a decoded key */
#define PERCH_SAS_MAX_KEY_B64       88   /* characters of a base64 key (64 bytes) */
#define PERCH_SAS_KEY_B64_LEN       44   /* characters of a derived module key */
#define PERCH_SAS_MAX_EXPIRY_DIGITS 20

/* Why a token was refused. */
typedef enum perch_sas_reason {
	PERCH_SAS_OK = 0,
	PERCH_SAS_MALFORMED,         /* not the token grammar: prefix, fields, se, length */
	PERCH_SAS_BAD_BASE64,        /* a sig that is not base64 of a 32-byte MAC */
	PERCH_SAS_BAD_KEY,           /* the key given to check against is not base64 */
	PERCH_SAS_RESOURCE_MISMATCH, /* sr is not the resource expected */
	PERCH_SAS_WRONG_SIGNATURE,   /* sig does not match the key */
	PERCH_SAS_EXPIRED,           /* se is past, beyond the allowed skew */
	PERCH_SAS_LIFETIME_TOO_LONG, /* se is further ahead than the allowed lifetime */
	PERCH_SAS_REASON_COUNT       /* not a reason: the number of reasons */
} perch_sas_reason;

/* A parsed token: slices into the token text, as they appear there. */
typedef struct perch_sas_token {
	perch_slice sr;  /* URL-encoded resource URI, non-empty */
	perch_slice sig; /* URL-encoded base64 signature, non-empty */
	perch_slice se;  /* decimal expiry, 1..PERCH_SAS_MAX_EXPIRY_DIGITS digits */
	perch_slice skn; /* URL-encoded key name; empty when absent */
	uint64_t expiry; /* se as a number */
} perch_sas_token;

/* What a token is checked against. */
typedef struct perch_sas_check {
	perch_slice resource;  /* decoded resource URI expected, e.g. "hub/devices/d1" */
	perch_slice key;       /* base64 key */
	uint64_t now;          /* seconds since the epoch */
	uint64_t skew;         /* seconds of clock difference tolerated either way */
	uint64_t max_lifetime; /* se may be at most now + max_lifetime + skew; 0: no limit */
} perch_sas_check;

/*
 * perch_sas_sign makes a token for resource (decoded, e.g.
 * "hub.example/devices/dev 1"), signed with key (base64), naming key_name
 * (decoded; empty for none), valid until expiry (> 0). Writes it into out (cap
 * bytes, no NUL). The caller keeps all inputs. Errors: PERCH_EINVAL for an empty
 * resource, expiry 0, or a key that is not base64 of 1..PERCH_SAS_MAX_KEY_BYTES
 * bytes; PERCH_ETOOBIG for inputs over their limits or out too small.
 */
PERCH_MUST_USE perch_err perch_sas_sign(perch_slice resource, perch_slice key_name, perch_slice key,
                                        uint64_t expiry, char *out, size_t cap, size_t *out_len);

/*
 * perch_sas_parse takes a token apart into *out (slices into token, which the
 * caller keeps). Refuses (PERCH_EINVAL, reason MALFORMED) a missing
 * `SharedAccessSignature ` prefix, a field without `=`, an unknown, duplicate,
 * missing or empty field, a se that is not a decimal number, a token over
 * PERCH_SAS_MAX_TOKEN (PERCH_ETOOBIG). why may be NULL.
 */
PERCH_MUST_USE perch_err perch_sas_parse(perch_slice token, perch_sas_token *out,
                                         perch_sas_reason *why);

/*
 * perch_sas_verify parses token and checks it against *check, in this order:
 * grammar, sig encoding, resource, signature (constant time), expiry,
 * lifetime. The resource matches when the decoded sr equals check->resource,
 * the host part (before the first `/`) compared without regard to case.
 * parsed, if not NULL, receives the parsed token (valid while token is).
 * Errors, with *why (may be NULL) saying which check failed:
 *   PERCH_EINVAL   MALFORMED, BAD_BASE64, BAD_KEY   (PERCH_ETOOBIG: too long)
 *   PERCH_EPERM    RESOURCE_MISMATCH, WRONG_SIGNATURE
 *   PERCH_EEXPIRED EXPIRED        (se + skew < now)
 *   PERCH_ERANGE   LIFETIME_TOO_LONG
 */
PERCH_MUST_USE perch_err perch_sas_verify(perch_slice token, const perch_sas_check *check,
                                          perch_sas_token *parsed, perch_sas_reason *why);

/*
 * perch_sas_derive_module_key writes base64(HMAC-SHA256(base64decode(device_key),
 * module_id)) — PERCH_SAS_KEY_B64_LEN characters, no NUL — into out (cap
 * bytes). Errors: PERCH_EINVAL for a device key that is not base64 of
 * 1..PERCH_SAS_MAX_KEY_BYTES bytes or an empty module id, PERCH_ETOOBIG when
 * the module id is over 128 bytes or out is too small.
 */
PERCH_MUST_USE perch_err perch_sas_derive_module_key(perch_slice device_key, perch_slice module_id,
                                                     char *out, size_t cap, size_t *out_len);

/*
 * perch_sas_key_valid says whether key is canonical base64 (padded, no
 * whitespace) of 1..PERCH_SAS_MAX_KEY_BYTES bytes.
 */
bool perch_sas_key_valid(perch_slice key);

/* perch_sas_reason_str returns a static text for a reason (never NULL). */
const char *perch_sas_reason_str(perch_sas_reason reason);

#endif /* PERCH_SAS_H */
