/*
 * err.c — texts for the perch_err codes, and the errno translation.
 */
#include "perch/err.h"

#include <errno.h>
#include <stddef.h>

static const char *const err_text[PERCH_ERR_COUNT] = {
        [PERCH_OK] = "success",
        [PERCH_ENOMEM] = "out of memory",
        [PERCH_EINVAL] = "invalid argument or malformed input",
        [PERCH_ERANGE] = "value out of range",
        [PERCH_ETOOBIG] = "input too large",
        [PERCH_EAGAIN] = "more input needed",
        [PERCH_EPROTO] = "protocol violation",
        [PERCH_ENOENT] = "not found",
        [PERCH_EEXIST] = "already exists",
        [PERCH_EIO] = "input/output error",
        [PERCH_ENOSPC] = "no space left",
        [PERCH_EPERM] = "not authorized",
        [PERCH_EEXPIRED] = "expired",
        [PERCH_ECLOSED] = "closed",
        [PERCH_ETIMEDOUT] = "timed out",
        [PERCH_EBUSY] = "resource busy",
        [PERCH_ECORRUPT] = "data corrupted",
        [PERCH_EDB] = "database error",
        [PERCH_ECONFIG] = "configuration error",
        [PERCH_EUNSUPPORTED] = "not supported",
        [PERCH_EINTERNAL] = "internal error",
};

const char *perch_strerror(perch_err err)
{
	if ((unsigned)err >= PERCH_ERR_COUNT || err_text[err] == NULL)
		return "unknown error";
	return err_text[err];
}

perch_err perch_err_from_errno(int errnum)
{
	switch (errnum) {
	case 0: return PERCH_OK;
	case ENOMEM: return PERCH_ENOMEM;
	case EINVAL: return PERCH_EINVAL;
	case ERANGE: return PERCH_ERANGE;
	case E2BIG:
	case EMSGSIZE:
	case ENAMETOOLONG:
	case EFBIG: return PERCH_ETOOBIG;
	case EAGAIN: return PERCH_EAGAIN;
	case EPROTO: return PERCH_EPROTO;
	case ENOENT: return PERCH_ENOENT;
	case EEXIST: return PERCH_EEXIST;
	case ENOSPC:
	case EDQUOT: return PERCH_ENOSPC;
	case EPERM:
	case EACCES: return PERCH_EPERM;
	case EPIPE:
	case ECONNRESET:
	case ENOTCONN: return PERCH_ECLOSED;
	case ETIMEDOUT: return PERCH_ETIMEDOUT;
	case EBUSY:
	case EADDRINUSE: return PERCH_EBUSY;
	case ENOTSUP: return PERCH_EUNSUPPORTED;
	default: return PERCH_EIO;
	}
}
