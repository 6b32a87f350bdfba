/*
 * props.h — IoT Hub property bags: the `{props}` part of a topic, and URL
 * encoding both ways.
 *
 * A property bag is what follows the fixed part of a telemetry, module output,
 * input or cloud-to-device topic: `key=value` pairs joined by `&`, each key and
 * value percent-encoded. System properties have keys starting with `$.`
 * (`$.mid $.cid $.on $.ct $.ce $.cdid $.cmid $.to $.uid $.exp`, which the SDKs
 * send encoded as `%24.mid`...); all other keys are application properties.
 *
 * The encoding follows what the Azure IoT SDKs do: `%XX` is decoded, `+` is a
 * literal plus (never a space: the Python SDK calls form decoding invalid for
 * MQTT, and Node uses decodeURIComponent), and when encoding, everything but the
 * RFC 3986 unreserved characters `A-Z a-z 0-9 - . _ ~` becomes `%XX` (upper-case
 * hex), which is what IoT Hub itself sends (`%24.to=%2Fdevices%2F...`).
 *
 * A perch_props holds decoded keys and values in a buffer of its own (no
 * allocation, fixed limits below); it may be copied by value. Pure functions:
 * no I/O, no globals, callable from any thread on objects the caller owns.
 */
#ifndef PERCH_PROPS_H
#define PERCH_PROPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/slice.h"

#define PERCH_PROPS_MAX_PAIRS   64   /* pairs in one bag */
#define PERCH_PROPS_MAX_KEY     256  /* bytes of one decoded key */
#define PERCH_PROPS_MAX_VALUE   4096 /* bytes of one decoded value */
#define PERCH_PROPS_MAX_ENCODED 8192 /* bytes of an encoded bag, and of decoded keys + values */

/* Why a bag or a pair was refused: the detail behind the perch_err. */
typedef enum perch_props_reason {
	PERCH_PROPS_OK = 0,
	PERCH_PROPS_BAD_ESCAPE,     /* `%` not followed by two hex digits */
	PERCH_PROPS_BAD_CHAR,       /* a control character (raw or decoded) */
	PERCH_PROPS_BAD_UTF8,       /* a decoded key or value that is not UTF-8 */
	PERCH_PROPS_EMPTY_KEY,      /* `=value` with no key */
	PERCH_PROPS_KEY_TOO_LONG,   /* a decoded key over PERCH_PROPS_MAX_KEY */
	PERCH_PROPS_VALUE_TOO_LONG, /* a decoded value over PERCH_PROPS_MAX_VALUE */
	PERCH_PROPS_TOO_MANY,       /* more than PERCH_PROPS_MAX_PAIRS pairs */
	PERCH_PROPS_TOO_LONG,       /* the bag over PERCH_PROPS_MAX_ENCODED */
	PERCH_PROPS_DUPLICATE,      /* the same decoded key twice */
	PERCH_PROPS_NO_SPACE,       /* the caller's output buffer is too small */
	PERCH_PROPS_REASON_COUNT    /* not a reason: the number of reasons */
} perch_props_reason;

/* Where and why parsing stopped. offset counts bytes of the input. */
typedef struct perch_props_fail {
	perch_props_reason reason;
	size_t offset;
} perch_props_fail;

/* The system properties Perch knows by name. */
typedef enum perch_props_sys {
	PERCH_PROPS_SYS_NONE = 0, /* an application property (no `$.` prefix) */
	PERCH_PROPS_SYS_MID,      /* $.mid  message id */
	PERCH_PROPS_SYS_CID,      /* $.cid  correlation id */
	PERCH_PROPS_SYS_ON,       /* $.on   output name */
	PERCH_PROPS_SYS_CT,       /* $.ct   content type */
	PERCH_PROPS_SYS_CE,       /* $.ce   content encoding */
	PERCH_PROPS_SYS_CDID,     /* $.cdid connection device id (stamped by the hub) */
	PERCH_PROPS_SYS_CMID,     /* $.cmid connection module id (stamped by the hub) */
	PERCH_PROPS_SYS_TO,       /* $.to   destination */
	PERCH_PROPS_SYS_UID,      /* $.uid  user id */
	PERCH_PROPS_SYS_EXP,      /* $.exp  absolute expiry time */
	PERCH_PROPS_SYS_OTHER     /* another `$.` key ($.ifid, $.sub, ...) */
} perch_props_sys;

/* One pair: offsets and lengths into perch_props.buf (so copies stay valid). */
typedef struct perch_props_entry {
	uint16_t key_off;
	uint16_t key_len; /* > 0 */
	uint16_t val_off;
	uint16_t val_len; /* may be 0 */
} perch_props_entry;

/* A decoded property bag. Zeroed or perch_props_init'ed = empty. */
typedef struct perch_props {
	size_t count;                                     /* <= PERCH_PROPS_MAX_PAIRS */
	size_t used;                                      /* bytes of buf in use */
	perch_props_entry entries[PERCH_PROPS_MAX_PAIRS]; /* in insertion order */
	char buf[PERCH_PROPS_MAX_ENCODED];                /* decoded keys and values */
} perch_props;

/*
 * perch_props_url_decode percent-decodes in into out (cap bytes; no NUL is
 * added). `+` stays `+`. Any byte value may result; callers that need text
 * check it. On success *out_len is the decoded length (<= in.len).
 * Errors: PERCH_EINVAL for a bad escape (*bad_at, if not NULL, is its offset),
 * PERCH_ETOOBIG when out is too small.
 */
PERCH_MUST_USE perch_err perch_props_url_decode(perch_slice in, char *out, size_t cap,
                                                size_t *out_len, size_t *bad_at);

/*
 * perch_props_url_encode percent-encodes in into out (cap bytes; no NUL):
 * everything but `A-Z a-z 0-9 - . _ ~` becomes `%XX`, upper-case hex.
 * Errors: PERCH_ETOOBIG when out is too small (at most 3 * in.len is needed).
 */
PERCH_MUST_USE perch_err perch_props_url_encode(perch_slice in, char *out, size_t cap,
                                                size_t *out_len);

/*
 * perch_props_url_encode_js is byte for byte the azure-iot-common function
 * encodeUriComponentStrict (encodeURIComponent, then `! ' ( ) *` escaped with
 * JavaScript's lower-case toString(16): `*` becomes `%2a`), used for SAS token
 * resource URIs. Same contract as perch_props_url_encode.
 */
PERCH_MUST_USE perch_err perch_props_url_encode_js(perch_slice in, char *out, size_t cap,
                                                   size_t *out_len);

/* perch_props_init empties a bag. */
void perch_props_init(perch_props *props);

/*
 * perch_props_parse decodes an encoded bag (`k=v&k2=v2`, possibly empty) into
 * *out, replacing what it held. Empty segments (`a=1&&b=2`, a trailing `&`)
 * are skipped; a segment without `=` is a key with an empty value. Keys and
 * values are decoded, must be UTF-8 without control characters, and a key may
 * appear once. The caller keeps encoded; out keeps nothing pointing into it.
 * Errors (fail, if not NULL, says why and where):
 *   PERCH_EINVAL  BAD_ESCAPE, BAD_CHAR, BAD_UTF8, EMPTY_KEY
 *   PERCH_ETOOBIG TOO_LONG, KEY_TOO_LONG, VALUE_TOO_LONG, TOO_MANY
 *   PERCH_EEXIST  DUPLICATE
 * On error *out is left empty.
 */
PERCH_MUST_USE perch_err perch_props_parse(perch_slice encoded, perch_props *out,
                                           perch_props_fail *fail);

/*
 * perch_props_encode writes the bag, encoded, into out (cap bytes, no NUL):
 * pairs in order, `key=value` joined by `&`; an empty bag writes nothing.
 * Errors: PERCH_ETOOBIG when out is too small (*out_len then undefined).
 */
PERCH_MUST_USE perch_err perch_props_encode(const perch_props *props, char *out, size_t cap,
                                            size_t *out_len);

/* perch_props_count returns the number of pairs. */
size_t perch_props_count(const perch_props *props);

/*
 * perch_props_at gives pair i (< count) as slices into props, valid until
 * props changes or goes away. key or value may be NULL.
 */
void perch_props_at(const perch_props *props, size_t i, perch_slice *key, perch_slice *value);

/*
 * perch_props_get looks up a decoded key; true and *value (a slice into props,
 * valid until props changes; value may be NULL) when present.
 */
bool perch_props_get(const perch_props *props, perch_slice key, perch_slice *value);

/*
 * perch_props_set sets key to value (both decoded), replacing an existing
 * value in place of order, else appending. Copies both; the caller keeps them.
 * Errors: PERCH_EINVAL (EMPTY_KEY, BAD_CHAR, BAD_UTF8), PERCH_ETOOBIG
 * (KEY_TOO_LONG, VALUE_TOO_LONG, TOO_MANY, TOO_LONG); props is unchanged then.
 */
PERCH_MUST_USE perch_err perch_props_set(perch_props *props, perch_slice key, perch_slice value,
                                         perch_props_fail *fail);

/* perch_props_remove removes key; true when it was there. */
bool perch_props_remove(perch_props *props, perch_slice key);

/* perch_props_system_kind classifies a decoded key. */
perch_props_sys perch_props_system_kind(perch_slice key);

/* perch_props_reason_str returns a static text for a reason (never NULL). */
const char *perch_props_reason_str(perch_props_reason reason);

#endif /* PERCH_PROPS_H */
