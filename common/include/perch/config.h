/*
 * config.h — a YAML configuration loader driven by a table of keys.
 *
 * Each daemon describes its settings as a table: one row per key with its
 * dotted name ("hub.max_packet_size"), type, range, default and the offset of
 * the field it fills in the daemon's settings struct (Redis-style). The
 * loader reads /etc/perch/config.yaml (libyaml), fills the struct, and
 * reports EVERY error — unknown keys, wrong types, values out of range,
 * duplicates, YAML syntax — each with the file, line and column, so one run
 * tells the operator everything that is wrong. Command-line flags go through
 * perch_cfg_set() with the same table, so flags and file share one parser.
 *
 * Field types: BOOL -> bool; INT -> int64_t; SIZE -> uint64_t bytes (with
 * suffixes k, M, G, KiB, MiB, GiB); DURATION -> int64_t milliseconds (with
 * suffixes ms, s, m, h, d; a bare number is seconds); STRING -> char *
 * (owned by the struct, freed by perch_cfg_free); ENUM -> int (index in
 * choices); STRLIST -> perch_strlist (a YAML sequence of strings, or one
 * string; flags append to it).
 *
 * YAML aliases and anchors are refused (they can multiply input size). The
 * file may be at most PERCH_CFG_MAX_FILE bytes. Top-level sections named in
 * the `foreign` list (other daemons' sections) are skipped without checks.
 *
 * Not thread-safe per settings struct; call from the daemon's main thread.
 */
#ifndef PERCH_CONFIG_H
#define PERCH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"

#define PERCH_CFG_MAX_FILE   (1u << 20) /* bytes */
#define PERCH_CFG_MAX_ERRORS 64
#define PERCH_CFG_MAX_DEPTH  8
#define PERCH_CFG_MAX_STRING 4096 /* bytes, default length limit of a string */
#define PERCH_CFG_MAX_LIST   256  /* items in a STRLIST, default */

typedef enum perch_cfg_type {
	PERCH_CFG_BOOL,
	PERCH_CFG_INT,
	PERCH_CFG_SIZE,
	PERCH_CFG_DURATION,
	PERCH_CFG_STRING,
	PERCH_CFG_ENUM,
	PERCH_CFG_STRLIST,
} perch_cfg_type;

typedef struct perch_strlist {
	char **items; /* n owned strings */
	size_t n;
} perch_strlist;

typedef struct perch_cfg_key {
	const char *name; /* dotted path, e.g. "hub.data_dir" */
	perch_cfg_type type;
	int64_t min, max;           /* INT/SIZE/DURATION(ms): value range; STRING: length
				       range; STRLIST: item count range. 0,0: the defaults */
	const char *def;            /* default, in the file's syntax; NULL: zero/NULL */
	size_t offset;              /* offsetof(settings struct, field) */
	const char *const *choices; /* ENUM: NULL-terminated list of accepted names */
	const char *help;           /* one line for --help and docs */
} perch_cfg_key;

typedef struct perch_cfg_errors {
	char *msg[PERCH_CFG_MAX_ERRORS]; /* "file:line:col: text", owned */
	size_t n;                        /* messages kept (<= PERCH_CFG_MAX_ERRORS) */
	size_t dropped;                  /* errors beyond the cap, counted only */
} perch_cfg_errors;

/*
 * perch_cfg_defaults fills every field of out from the table's defaults.
 * out must be zeroed or previously filled by these functions (old strings are
 * freed). Returns PERCH_ENOMEM, or PERCH_EINTERNAL if a default does not
 * parse (a bug in the table).
 */
PERCH_MUST_USE perch_err perch_cfg_defaults(const perch_cfg_key *tbl, size_t n, void *out);

/*
 * perch_cfg_load_file parses the YAML file at path into out (on top of what
 * is there: call perch_cfg_defaults first). foreign: NULL-terminated list of
 * top-level section names to skip, or NULL. Every error is appended to errs
 * (which the caller zero-initialises and frees with perch_cfg_errors_free).
 * Returns PERCH_OK, PERCH_ECONFIG when the file had errors (fields that did
 * parse are set), PERCH_ENOENT / PERCH_EPERM / PERCH_EIO / PERCH_ETOOBIG for
 * a file that cannot be read (also in errs), or PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err perch_cfg_load_file(const perch_cfg_key *tbl, size_t n,
                                             const char *const *foreign, const char *path,
                                             void *out, perch_cfg_errors *errs);

/* perch_cfg_load_buffer is perch_cfg_load_file for len bytes of YAML in data;
 * name is used in error messages in place of a file name. */
PERCH_MUST_USE perch_err perch_cfg_load_buffer(const perch_cfg_key *tbl, size_t n,
                                               const char *const *foreign, const char *name,
                                               const char *data, size_t len, void *out,
                                               perch_cfg_errors *errs);

/*
 * perch_cfg_set sets the key named name from the text value (a command-line
 * flag). STRLIST values are appended. On error, writes a one-line reason to
 * err (cap bytes) and returns PERCH_ENOENT (no such key), PERCH_EINVAL or
 * PERCH_ERANGE (bad value) or PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err perch_cfg_set(const perch_cfg_key *tbl, size_t n, const char *name,
                                       const char *value, void *out, char *err, size_t cap);

/* perch_cfg_find returns the row for name, or NULL. */
const perch_cfg_key *perch_cfg_find(const perch_cfg_key *tbl, size_t n, const char *name);

/* perch_cfg_free frees the strings and lists the table's fields own in out and
 * zeroes them. Safe on a zeroed or half-filled struct. */
void perch_cfg_free(const perch_cfg_key *tbl, size_t n, void *out);

/* perch_cfg_errors_free frees the messages and zeroes errs. */
void perch_cfg_errors_free(perch_cfg_errors *errs);

/* Value parsers, shared with flag handling; each returns PERCH_EINVAL for
 * text that is not a value of the type and PERCH_ERANGE on overflow. */
PERCH_MUST_USE perch_err perch_parse_bool(const char *text, bool *out);
PERCH_MUST_USE perch_err perch_parse_int(const char *text, int64_t *out);
PERCH_MUST_USE perch_err perch_parse_size(const char *text, uint64_t *out);
PERCH_MUST_USE perch_err perch_parse_duration_ms(const char *text, int64_t *out);

#endif /* PERCH_CONFIG_H */
