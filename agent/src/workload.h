/*
 * workload.h — the IoT Edge workload API that perch-agent serves to each
 * module on a unix socket of its own: the pure parts (the HTTP/1.1 request
 * reader, the routes, the sign computation), which unit tests and a fuzzer
 * drive directly. The server around them (sockets, the caller check, the
 * loop) is workload.c's, declared in agent.h.
 *
 * What a module may ask, as iotedged answers it (docs/identity.md):
 *
 *   POST /modules/{m}/genid/{g}/sign?api-version=V
 *        {"keyId":"primary","algo":"HMACSHA256","data":"<base64>"}
 *     -> 200 {"digest":"<base64 HMAC-SHA256(module key, data)>"}
 *   GET /trust-bundle?api-version=V
 *     -> 200 {"certificate":"<PEM of the device CA>"}
 *
 * Errors are {"message":"..."} with the HTTP status. api-version must be a
 * date YYYY-MM-DD not before 2018-06-28 (the first workload API; the Node
 * SDK sends 2018-06-28, the Python SDK IOTEDGE_APIVERSION).
 *
 * The reader is strict and bounded: one request per connection, CRLF line
 * ends, at most AGENT_WL_MAX_HEAD bytes of request line and headers, at most
 * AGENT_WL_MAX_HEADERS headers, a body only with Content-Length (at most
 * AGENT_WL_MAX_BODY; no chunked encoding).
 *
 * Pure functions: no I/O, no globals, any thread.
 */
#ifndef AGENT_WORKLOAD_H
#define AGENT_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "perch/err.h"
#include "perch/slice.h"

#define AGENT_WL_MAX_HEAD       8192         /* request line and headers, bytes */
#define AGENT_WL_MAX_HEADERS    32           /* header lines */
#define AGENT_WL_MAX_TARGET     2048         /* request target (path and query), bytes */
#define AGENT_WL_MAX_BODY       8192         /* request body, bytes */
#define AGENT_WL_MAX_DATA       4096         /* decoded bytes a sign request may sign */
#define AGENT_WL_MAX_ID         128          /* a module id or generation id, decoded */
#define AGENT_WL_API_VERSION    "2019-01-30" /* IOTEDGE_APIVERSION given to modules */
#define AGENT_WL_API_MIN        "2018-06-28" /* oldest api-version accepted */
#define AGENT_WL_DIGEST_B64_LEN 44           /* base64 of a 32-byte HMAC */

typedef enum agent_wl_op {
	AGENT_WL_SIGN = 1,     /* POST /modules/{m}/genid/{g}/sign */
	AGENT_WL_TRUST_BUNDLE, /* GET /trust-bundle */
} agent_wl_op;

/* One request, as read. */
typedef struct agent_wl_request {
	agent_wl_op op;
	char module[AGENT_WL_MAX_ID + 1]; /* SIGN: the path's module id, decoded */
	char genid[AGENT_WL_MAX_ID + 1];  /* SIGN: the path's generation id, decoded */
	char api_version[16];             /* as given, YYYY-MM-DD */
	perch_slice body;                 /* into the caller's buffer; empty when none */
	size_t total;                     /* bytes of the request (head and body) */
} agent_wl_request;

/*
 * agent_wl_parse reads one request from the len bytes in buf (the caller
 * keeps them; out->body points into them). Returns:
 *   PERCH_OK      a whole request: *out filled;
 *   PERCH_EAGAIN  incomplete so far: read more and call again with all of it;
 *   anything else refused: *status is the HTTP status to answer (400, 404,
 *                 405, 413, 414, 431, 501, 505) and *why a static reason.
 */
PERCH_MUST_USE perch_err agent_wl_parse(const char *buf, size_t len, agent_wl_request *out,
                                        int *status, const char **why);

/*
 * agent_wl_sign reads a sign request's JSON body (keyId "primary", algo
 * "HMACSHA256", data: base64 of at most AGENT_WL_MAX_DATA bytes) and writes
 * base64(HMAC-SHA256(module key, data)) — AGENT_WL_DIGEST_B64_LEN characters
 * and a NUL — into digest (cap bytes), the module key being derived from
 * device_key (base64) as perch_sas_derive_module_key does. On refusal returns
 * PERCH_EINVAL with *status 400 (a body that is not such a request) or
 * PERCH_EINTERNAL with *status 500 (the device key is unusable), and *why.
 * Keys and MACs on the stack are wiped.
 */
PERCH_MUST_USE perch_err agent_wl_sign(perch_slice device_key, const char *module, perch_slice body,
                                       char *digest, size_t cap, int *status, const char **why);

/* agent_wl_status_text: the reason phrase of an HTTP status ("Forbidden"). */
const char *agent_wl_status_text(int status);

#endif /* AGENT_WORKLOAD_H */
