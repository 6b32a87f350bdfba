/*
 * http.h — the agent's small HTTP/1.1 client over a unix socket, written for
 * the Docker Engine API (agent/src/docker*.c) so that perch-agent does not
 * carry libcurl and the thirty libraries it loads (see docs/agent-docker.md).
 *
 * Two halves:
 *
 *   common/src/http_wire.c  pure, no I/O, shared with the `perch` command
 *                line (perch/http_wire.h): the request writer, and the
 *                streaming parser of an answer that accepts any split of the
 *                byte stream. Unit-tested in http_test.c, fuzzed by
 *                tests/fuzz/fuzz_http_response.c.
 *
 *   http.c       one exchange (connect, send, receive) as a non-blocking
 *                state machine that the caller drives with poll
 *                (agent_http_xfer_*), and the blocking exchange on a
 *                kept-alive connection built on it (agent_http_call).
 *
 * Nothing here allocates except the request writer; nothing starts a thread.
 * Every function is for one thread at a time (the agent's loop).
 */
#ifndef AGENT_HTTP_H
#define AGENT_HTTP_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#include "perch/err.h"
#include "perch/http_wire.h"

#define AGENT_HTTP_PATH_MAX 108 /* a unix socket path, NUL included (sun_path) */

/* ---- one exchange on a connection (http.c) -------------------------------------- */

typedef enum agent_http_phase {
	AGENT_HTTP_IDLE,         /* not started */
	AGENT_HTTP_CONNECT_WAIT, /* the listener's backlog was full: connect again at retry_at */
	AGENT_HTTP_CONNECTING,   /* connect in progress: wait for POLLOUT */
	AGENT_HTTP_SENDING,      /* writing the request */
	AGENT_HTTP_RECEIVING,    /* reading the answer */
	AGENT_HTTP_DONE,         /* ended: err says how */
} agent_http_phase;

typedef struct agent_http_xfer {
	agent_http_phase phase;
	int fd;                   /* the connection; -1 when there is none */
	const char *path;         /* the socket path (borrowed) */
	const char *req;          /* the request (borrowed until DONE) */
	size_t req_len, req_off;  /* its length, and the bytes sent */
	perch_http_sink sink;     /* where the answer goes */
	long long connect_by;     /* monotonic ms by which the connect must be done */
	long long deadline;       /* monotonic ms by which the exchange must end; -1 none */
	long long retry_at;       /* CONNECT_WAIT: the next connect attempt */
	bool reused;              /* ran on a connection kept from an earlier exchange */
	bool connected;           /* the connection was (or is) up */
	bool answered;            /* at least one byte of the answer arrived */
	bool reusable;            /* DONE with OK, and the connection may be kept */
	perch_err err;            /* DONE: PERCH_OK, or why it failed (see agent_http_call) */
	int sys_errno;            /* the errno behind err; 0 when there is none */
	const char *why;          /* DONE with an error: what happened (static text) */
	perch_http_parser parser; /* the answer; parser.status once its head is in */
} agent_http_xfer;

/* agent_http_now_ms: monotonic milliseconds, the clock of every deadline here. */
long long agent_http_now_ms(void);

/*
 * agent_http_xfer_begin starts sending req (req_len bytes, borrowed until
 * DONE) on kept_fd when it is >= 0 (a connection kept from an earlier
 * exchange, now x's), otherwise on a new non-blocking connection to path
 * (borrowed). The connect must be done within connect_timeout_ms; the whole
 * exchange by deadline (monotonic ms, agent_http_now_ms; -1: none). It may
 * already do some I/O, and may even end (phase DONE) at once, e.g. when
 * nothing listens at path: the caller learns of it as of any other end.
 */
void agent_http_xfer_begin(agent_http_xfer *x, const char *path, int kept_fd, const char *req,
                           size_t req_len, const perch_http_sink *sink, long connect_timeout_ms,
                           long long deadline);

/* agent_http_xfer_pollfd: true, with *pfd filled (fd, events; revents 0),
 * when x waits on its socket; false when it waits only on time or is DONE. */
bool agent_http_xfer_pollfd(const agent_http_xfer *x, struct pollfd *pfd);

/* agent_http_xfer_deadline: the monotonic ms at which x must be stepped even
 * without socket events (a deadline, a connect retry; now when DONE), or -1. */
long long agent_http_xfer_deadline(const agent_http_xfer *x);

/*
 * agent_http_xfer_step moves x on: I/O as revents (of poll, for x's fd; 0
 * when only time passed) allows, then the deadlines. The sink's functions run
 * from here. Returns true when x is DONE. Spurious events are harmless.
 * Errors (x->err): PERCH_ECLOSED nothing listens at path (ENOENT,
 * ECONNREFUSED; connected false) or the peer closed before the answer was
 * complete (connected true); PERCH_EPERM no permission to connect;
 * PERCH_ETIMEDOUT the connect or the exchange ran out of time; PERCH_EPROTO
 * a malformed answer; PERCH_EIO another socket error (sys_errno); or the
 * sink's error.
 */
bool agent_http_xfer_step(agent_http_xfer *x, short revents);

/* agent_http_xfer_end finishes x: returns its connection when x ended well
 * and the answer allows another request on it (x->reusable), for the caller
 * to keep; otherwise closes it and returns -1. Safe on a zeroed x with fd -1
 * and on an x that is not DONE (the exchange is abandoned). */
int agent_http_xfer_end(agent_http_xfer *x);

/*
 * agent_http_call runs one exchange to its end, blocking (poll): on *kept
 * when it is >= 0 and still sound, else on a new connection to path. When a
 * kept connection turns out dead — the engine closed it while idle, and not
 * one byte of the answer arrived — it runs the request once more on a new
 * connection. Afterwards *kept holds the connection to keep for the next
 * call, or -1. The connect must be done within connect_timeout_ms, the whole
 * call by deadline (monotonic ms). Returns x->err (see agent_http_xfer_step;
 * also PERCH_EINVAL for a path that is empty or too long for a unix socket,
 * PERCH_EIO when poll fails); x tells the rest (parser.status, connected,
 * why). req is borrowed.
 */
PERCH_MUST_USE perch_err agent_http_call(agent_http_xfer *x, const char *path, int *kept,
                                         const char *req, size_t req_len,
                                         const perch_http_sink *sink, long connect_timeout_ms,
                                         long long deadline);

#endif /* AGENT_HTTP_H */
