/*
 * err.h — the one error enum of Perch.
 *
 * Every fallible function of every Perch library returns a perch_err: PERCH_OK
 * (zero) on success, one of the codes below otherwise; results come back
 * through out-parameters. OS and library errors (errno, SQLite, mbedTLS,
 * libyaml) are translated once, at the boundary where they occur, and logged
 * there with their context.
 */
#ifndef PERCH_ERR_H
#define PERCH_ERR_H

/* Marks a function whose status must be looked at. */
#define PERCH_MUST_USE __attribute__((warn_unused_result))

typedef enum perch_err {
	PERCH_OK = 0,
	PERCH_ENOMEM,       /* allocation failed or a memory limit was reached */
	PERCH_EINVAL,       /* malformed input or a bad argument */
	PERCH_ERANGE,       /* a value outside its allowed range */
	PERCH_ETOOBIG,      /* input longer than the limit set for it */
	PERCH_EAGAIN,       /* not enough input yet: call again with more */
	PERCH_EPROTO,       /* a protocol violation (the detail is a reason code) */
	PERCH_ENOENT,       /* no such file, key or object */
	PERCH_EEXIST,       /* already exists */
	PERCH_EIO,          /* an I/O error */
	PERCH_ENOSPC,       /* no space left (disk, store or queue full) */
	PERCH_EPERM,        /* not authorised, or a signature that does not verify */
	PERCH_EEXPIRED,     /* a token or message past its expiry */
	PERCH_ECLOSED,      /* the peer or the object was closed */
	PERCH_ETIMEDOUT,    /* an operation ran out of time */
	PERCH_EBUSY,        /* a resource is in use (a busy port, a locked file) */
	PERCH_ECORRUPT,     /* stored data failed an integrity check */
	PERCH_EDB,          /* a database error not covered above */
	PERCH_ECONFIG,      /* a configuration file with errors */
	PERCH_EUNSUPPORTED, /* valid, but not something Perch supports */
	PERCH_EINTERNAL,    /* a broken invariant: a bug */
	PERCH_ERR_COUNT     /* not an error: the number of codes */
} perch_err;

/*
 * perch_strerror returns a short, static, human-readable text for err (never
 * NULL; "unknown error" for a value outside the enum). Any thread.
 */
const char *perch_strerror(perch_err err);

/*
 * perch_err_from_errno translates an errno value to the closest perch_err.
 * Any thread.
 */
perch_err perch_err_from_errno(int errnum);

#endif /* PERCH_ERR_H */
